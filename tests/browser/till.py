#!/usr/bin/env python3
"""Browser journeys through the cashier's till at /pos, in headless Chromium.

Run by tests/api/browser_till.rs, as wallet.py is run by browser.rs:
    python3 tests/browser/till.py JOURNEY
with OMAMORI_BASE, OMAMORI_FIXTURE (JSON: the sandbox terminal's key, a funded shopper's session
token, device id and address) and OMAMORI_TEST_SCREENSHOTS in the environment. The shopper's payment
codes are made through the API, as the phone would make them.
"""

import os
import re
import urllib.parse

from playwright.sync_api import expect

from wallet import BASE, CSP_WORDS, FIXTURE, SHOTS, advance_clock, run_journeys
from wallet import shopper_api as wallet_api

KEY = FIXTURE["terminal_key"]
SHOPPER = FIXTURE["shopper"]
RAW_CODES = re.compile(r"code_expired|code_invalid|insufficient_funds|switch_engaged|refund_exceeds")


def shopper_api(method, path, body=None):
    return wallet_api(SHOPPER, method, path, body)


def new_code():
    status, body = shopper_api("POST", "/v1/payment-codes")
    assert status == 201, (status, body)
    return body["code"]


def balance():
    status, body = shopper_api("GET", "/v1/wallet")
    assert status == 200, (status, body)
    return body["balance"]


class Till:
    """One till: a tablet-sized browser context with a page on /pos."""

    def __init__(self, browser, locale="en-US", viewport=None):
        self.context = browser.new_context(viewport=viewport or {"width": 1024, "height": 768}, locale=locale,
                                           device_scale_factor=1)
        self.page = self.context.new_page()
        self.urls = []
        self.csp_missing = []
        self.console_errors = []
        self.dialogs = []
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.on("response", self._check_headers)
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _check_headers(self, response):
        path = urllib.parse.urlparse(response.url).path
        if response.url.startswith(BASE) and (path == "/pos" or path.startswith("/pos/")):
            h = response.headers
            csp = h.get("content-security-policy", "")
            if not (all(w in csp for w in CSP_WORDS) and h.get("x-content-type-options") == "nosniff"
                    and h.get("referrer-policy") == "no-referrer"):
                self.csp_missing.append(path)

    def open(self):
        self.page.goto(BASE + "/pos")
        self.page.wait_for_load_state("networkidle")

    def shot(self, name):
        if SHOTS:
            self.page.wait_for_timeout(200)
            self.page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))

    def pair(self, names=None):
        n = names or {}
        p = self.page
        p.get_by_label(n.get("key", "Terminal key")).fill(KEY)
        p.get_by_role("button", name=n.get("pair", "Pair"), exact=True).click()
        expect(p.get_by_role("button", name=n.get("charge", "Charge"), exact=True)).to_be_visible()

    def charge(self, amount, code, names=None):
        """The amount typed, then the code as a keyboard-wedge scanner sends it: digits and Enter."""
        n = names or {}
        p = self.page
        p.get_by_role("textbox", name=n.get("amount", "Amount"), exact=True).fill(str(amount))
        p.get_by_role("textbox", name=n.get("code", "Payment code"), exact=True).click()
        p.keyboard.type(code, delay=5)
        p.keyboard.press("Enter")

    def status(self):
        return self.page.locator("#status")

    def alert(self):
        return self.page.locator("#alert")

    def key_is_hidden(self):
        readable = self.page.evaluate("""() => JSON.stringify({
            local: Object.entries(localStorage), session: Object.entries(sessionStorage),
            cookie: document.cookie, url: location.href })""")
        assert KEY not in readable, "the terminal key is readable by page script"
        assert not [u for u in self.urls if KEY in u], "the terminal key is in a URL"

    def finish(self):
        assert not self.csp_missing, f"pages without the security headers: {self.csp_missing}"
        assert not self.dialogs, f"a script opened a browser dialog: {self.dialogs}"
        csp = [e for e in self.console_errors if "Content Security Policy" in e]
        assert not csp, f"the page broke its own policy: {csp}"
        self.context.close()


def row_of(till, amount_text):
    return till.page.locator("table.payments tbody tr").filter(has_text=amount_text).first


def refund(till, amount_text, amount=None, names=None):
    n = names or {}
    p = till.page
    row_of(till, amount_text).get_by_role("button", name=n.get("refund", "Refund")).click()
    dialog = p.get_by_role("dialog")
    expect(dialog).to_be_visible()
    field = dialog.get_by_role("textbox", name=n.get("amount", "Amount"), exact=True)
    if amount is not None:
        field.fill(str(amount))
    dialog.get_by_role("button", name=n.get("refund", "Refund"), exact=True).click()
    expect(dialog).to_be_hidden()


def j_till(browser):
    """Pair with the key (kept only in an HttpOnly cookie), charge, declines in words, full and
    partial refunds, today's total, a cross-origin post refused, unpair."""
    start = balance()
    w = Till(browser)
    w.open()
    expect(w.page.get_by_role("button", name="Pair")).to_be_visible()
    w.shot("till-pair")
    w.pair()
    expect(w.status()).to_have_text(re.compile("Paired with"))
    cookies = {c["name"]: c for c in w.context.cookies()}
    c = cookies["omamori_terminal"]
    assert c["httpOnly"] and c["sameSite"] == "Strict" and c["path"] == "/v1/pos", c
    assert w.page.get_by_label("Terminal key").count() == 0
    w.key_is_hidden()

    w.charge(1200, new_code())
    expect(w.status()).to_have_text("Paid ¥1,200")
    assert balance() == start - 1200

    expired = new_code()
    advance_clock(61)
    w.charge(300, expired)
    expect(w.alert()).to_have_text(re.compile("expired: ask for a new one"))
    w.charge(300, "4649" + "0" * 16)
    expect(w.alert()).to_have_text(re.compile("not a valid payment code"))
    assert not RAW_CODES.search(w.page.locator("body").inner_text()), "a raw code is shown"
    assert balance() == start - 1200

    refund(w, "¥1,200")
    expect(w.status()).to_have_text("Refunded ¥1,200")
    assert balance() == start
    w.charge(500, new_code())
    expect(w.status()).to_have_text("Paid ¥500")
    refund(w, "¥500", 200)
    expect(w.status()).to_have_text("Refunded ¥200")
    assert balance() == start - 300
    expect(w.page.get_by_role("group", name="Today's total")).to_contain_text("¥300")
    expect(row_of(w, "¥500")).to_contain_text("¥200")
    # More than is left: the dialog says so in words.
    row_of(w, "¥500").get_by_role("button", name="Refund").click()
    dialog = w.page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Amount").fill("400")
    dialog.get_by_role("button", name="Refund", exact=True).click()
    expect(dialog.get_by_role("alert")).to_have_text(re.compile("more than is left"))
    dialog.get_by_role("button", name="Cancel").click()
    w.charge(800, new_code())
    expect(w.status()).to_have_text("Paid ¥800")
    w.shot("till")
    w.key_is_hidden()

    # Another origin of the same site posts a charge with the till's cookie.
    evil = "http://localhost:9/"
    action = BASE + "/v1/pos/payments"
    w.page.route(evil, lambda route: route.fulfill(content_type="text/html", body=(
        f"<form id=f method=post action='{action}'><input name=code value=1></form>"
        "<script>document.getElementById('f').submit()</script>")))
    with w.page.expect_navigation(url=action):
        w.page.goto(evil)
    assert "csrf_rejected" in w.page.content(), w.page.content()
    w.page.unroute(evil)
    w.open()
    expect(w.page.get_by_role("button", name="Charge", exact=True)).to_be_visible()

    w.page.get_by_role("button", name="Unpair").click()
    expect(w.page.get_by_label("Terminal key")).to_be_visible()
    assert "omamori_terminal" not in {c["name"] for c in w.context.cookies()}
    w.open()
    expect(w.page.get_by_label("Terminal key")).to_be_visible()
    w.finish()


def j_retry(browser):
    """A charge whose answer is lost is repeated with the same key and charges once; a charge
    that never gets an answer is reversed, and the shopper keeps the money."""
    start = balance()
    w = Till(browser, viewport={"width": 1280, "height": 800})
    w.open()
    w.pair()
    seen = []

    def drop_first(route):
        req = route.request
        if req.method != "POST":
            return route.continue_()
        seen.append(req.headers.get("idempotency-key"))
        if len(seen) == 1:
            route.fetch()  # the server charges...
            return route.abort("connectionreset")  # ...and the answer is lost on the way.
        return route.continue_()

    w.page.route("**/v1/pos/payments", drop_first)
    w.charge(700, new_code())
    expect(w.status()).to_have_text("Paid ¥700", timeout=15000)
    assert len(seen) == 2 and seen[0] and seen[0] == seen[1], seen
    assert balance() == start - 700, "charged more than once"
    w.page.unroute("**/v1/pos/payments")

    lost, reversals = [], []

    def drop_all(route):
        if route.request.method == "POST":
            lost.append(route.request.headers.get("idempotency-key"))
            route.fetch()
            return route.abort("connectionreset")
        return route.continue_()

    w.page.on("request", lambda r: r.url.endswith("/v1/pos/reversals") and reversals.append(r.post_data_json))
    w.page.route("**/v1/pos/payments", drop_all)
    w.charge(900, new_code())
    expect(w.alert()).to_have_text(re.compile("charge was cancelled"), timeout=20000)
    assert len(lost) == 4 and len(set(lost)) == 1, lost
    assert reversals and reversals[0]["idempotency_key"] == lost[0], reversals
    assert balance() == start - 700, "a charge with no answer was not reversed"
    w.page.unroute("**/v1/pos/payments")
    expect(w.page.locator("table.payments tbody")).to_contain_text("Cancelled")
    assert not w.page.evaluate("localStorage.getItem('omamori.till.pending')")
    w.finish()


def j_japanese(browser):
    """The till in Japanese: Japanese names, `<html lang="ja">`, declines in Japanese words."""
    names = {"key": "端末キー", "pair": "ペアリング", "charge": "決済", "amount": "金額", "code": "支払いコード",
             "refund": "返金"}
    w = Till(browser, locale="ja-JP")
    w.open()
    assert w.page.evaluate("document.documentElement.lang") == "ja"
    w.pair(names)
    w.charge(1000, new_code(), names)
    expect(w.status()).to_have_text("支払い完了 ¥1,000")
    expired = new_code()
    advance_clock(61)
    w.charge(300, expired, names)
    expect(w.alert()).to_have_text(re.compile("有効期限が切れています"))
    refund(w, "¥1,000", 400, names)
    expect(w.status()).to_have_text("返金しました ¥400")
    expect(w.page.get_by_role("group", name="本日の合計")).to_contain_text("¥600")
    w.shot("till-ja")
    w.page.get_by_role("button", name="English").click()
    assert w.page.evaluate("document.documentElement.lang") == "en"
    expect(w.page.get_by_role("button", name="Charge", exact=True)).to_be_visible()
    w.finish()


if __name__ == "__main__":
    run_journeys(globals())
