#!/usr/bin/env python3
"""Browser journeys through the operators' console at /console, in headless Chromium.

Run by tests/api/console.rs, as wallet.py is run by browser.rs:
    python3 tests/browser/console.py JOURNEY
with OMAMORI_BASE, OMAMORI_FIXTURE (JSON: the sandbox operators with their TOTP secrets, a viewer
made with `omamori admin operator create`, and logged-in shoppers whose declined card links make
the card-testing flood) and OMAMORI_TEST_SCREENSHOTS in the environment.
"""

import re
import time
import urllib.parse

from playwright.sync_api import expect

from wallet import BASE, CSP_WORDS, FIXTURE, SHOTS, run_journeys, shopper_api, totp

OPERATORS = FIXTURE["operators"]
VIEWER = FIXTURE.get("viewer")
TESTERS = FIXTURE.get("card_testers", [])
RAW_CODES = re.compile(r"invalid_credentials|code_invalid|second_operator_required|switch_engaged|forbidden|csrf")
LAPTOP = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}



def card_testing_flood():
    """Stolen numbers tried from several wallets, as card testers do: every link is refused."""
    per_wallet = -(-FIXTURE["card_declines_per_minute"] // len(TESTERS))
    for who in TESTERS:
        for _ in range(per_wallet):
            status, body = shopper_api(who, "POST", "/v1/cards",
                                       {"number": "4242424242424241", "exp_month": 12, "exp_year": 2031, "cvc": "123"})
            assert status == 422 and body["code"] == "invalid_card", (status, body)


class Console:
    """One operator's browser: a laptop-sized context with a page on /console."""

    def __init__(self, browser, locale="en-US", viewport=None):
        self.context = browser.new_context(viewport=viewport or LAPTOP, locale=locale, device_scale_factor=1)
        self.page = self.context.new_page()
        self.csp_missing = []
        self.dialogs = []
        self.page.on("response", self._check_headers)
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _check_headers(self, response):
        path = urllib.parse.urlparse(response.url).path
        if response.url.startswith(BASE) and (path == "/console" or path.startswith("/console/")):
            h = response.headers
            csp = h.get("content-security-policy", "")
            if not (all(w in csp for w in CSP_WORDS) and h.get("x-content-type-options") == "nosniff"
                    and h.get("referrer-policy") == "no-referrer"):
                self.csp_missing.append(path)

    def open(self, hash_=""):
        self.page.goto(BASE + "/console" + hash_)
        self.page.wait_for_load_state("networkidle")

    def shot(self, name):
        if SHOTS:
            self.page.evaluate("window.scrollTo(0, 0)")
            self.page.wait_for_timeout(300)
            self.page.screenshot(path=f"{SHOTS}/{name}.png")

    def status(self):
        return self.page.locator("#status")

    def alert(self):
        return self.page.locator("#alert")

    def log_in(self, op, names=None, step_offset=0):
        n = names or {}
        p = self.page
        p.get_by_label(n.get("email", "E-mail")).fill(op["email"])
        p.get_by_label(n.get("password", "Password"), exact=True).fill(op["password"])
        p.get_by_label(n.get("code", "Authenticator code")).fill(totp(op["totp_secret"], time.time() + step_offset))
        p.get_by_role("button", name=n.get("login", "Log in"), exact=True).click()
        expect(p.get_by_role("link", name=n.get("alerts", "Alerts"), exact=True)).to_be_visible()

    def go(self, link):
        self.page.get_by_role("link", name=link, exact=True).click()

    def no_secret_readable(self):
        readable = self.page.evaluate("""() => JSON.stringify({
            local: Object.entries(localStorage), session: Object.entries(sessionStorage), cookie: document.cookie })""")
        assert "omamori_operator" not in readable and "session_token" not in readable, readable

    def fits(self):
        width = self.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways: {width}"

    def finish(self):
        assert not self.csp_missing, f"pages without the security headers: {self.csp_missing}"
        assert not self.dialogs, f"a script opened a browser dialog: {self.dialogs}"
        for region in [self.status(), self.alert()]:
            text = region.text_content() or ""
            assert not RAW_CODES.search(text), f"a raw code is shown: {text}"


def release(c, name, reason):
    """Opens the Release dialog of the engaged switch `name` and confirms it with `reason`."""
    item = c.page.locator(f"li.switch-item[data-name='{name}']")
    item.get_by_role("button", name="Release", exact=True).click()
    dialog = c.page.get_by_role("dialog")
    dialog.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name="Release", exact=True).click()
    expect(dialog).to_have_count(0)
    return item


def j_switchboard(browser):
    """An operator sees a card-testing alert arrive, stops top-ups from it in one click, asks for the
    release; a second operator releases it; a viewer sees everything and can change nothing."""
    first = Console(browser)
    first.open()
    # A wrong password is said in words.
    first.page.get_by_label("E-mail").fill(OPERATORS[0]["email"])
    first.page.get_by_label("Password", exact=True).fill("not the password at all")
    first.page.get_by_label("Authenticator code").fill("000000")
    first.page.get_by_role("button", name="Log in", exact=True).click()
    expect(first.alert()).to_have_text(re.compile("password or the authenticator code is wrong"))
    first.finish()
    first.log_in(OPERATORS[0])
    first.no_secret_readable()
    expect(first.page.locator("li.alert-item")).to_have_count(0)

    # The flood starts while the operator watches: the alert is on screen within 5 s.
    card_testing_flood()
    started = time.monotonic()
    card_alert = first.page.locator("li.alert-item[data-kind='card_declines']")
    expect(card_alert).to_be_visible(timeout=5000)
    print(f"the card-testing alert was on screen {time.monotonic() - started:.1f} s after the flood")
    expect(card_alert).to_contain_text("Failed card checks")
    expect(card_alert.locator(".figure")).to_have_text(re.compile(r"^\d+$"))
    expect(first.page.locator("#news")).to_contain_text("New alert")
    first.shot("console-alerts")

    # One click from the alert to the switch form, filled in; then Engage.
    card_alert.get_by_role("button", name="Stop top-ups").click()
    expect(first.page.get_by_label("Switch", exact=True)).to_have_value("topups")
    expect(first.page.get_by_label("Reason")).to_have_value(re.compile("card checks"))
    first.page.get_by_role("button", name="Engage", exact=True).click()
    expect(first.status()).to_have_text("Switch engaged: top-ups are stopped everywhere.")
    topups = first.page.locator("li.switch-item[data-name='topups']")
    expect(topups).to_contain_text(OPERATORS[0]["email"])
    # Containment stopped card linking by itself; the board says so.
    expect(first.page.locator("li.switch-item[data-name='card_linking']")).to_contain_text("automatic containment")

    # The first operator asks for the release: it waits for a second operator.
    release(first, "topups", "false alarm: a partner's load test")
    expect(first.status()).to_contain_text("second operator")
    expect(topups).to_contain_text("waiting for a second operator")
    expect(topups.get_by_role("button", name="Release")).to_have_count(0)
    first.shot("console-switches")
    first.finish()

    # A second operator, in another browser, confirms it.
    second = Console(browser)
    second.open()
    second.log_in(OPERATORS[1])
    second.go("Switches")
    theirs = second.page.locator("li.switch-item[data-name='topups']")
    expect(theirs).to_contain_text(f"Release asked by {OPERATORS[0]['email']}: waiting for a second operator")
    release(second, "topups", "confirmed with the partner")
    expect(second.status()).to_have_text("Released: top-ups are running again everywhere.")
    expect(theirs).to_have_count(0)
    # The first operator's board follows within seconds.
    expect(topups).to_have_count(0, timeout=6000)
    second.finish()

    # A viewer sees the alert and the board, with no button it cannot use.
    viewer = Console(browser)
    viewer.open()
    viewer.log_in(VIEWER)
    expect(viewer.page.locator("li.alert-item[data-kind='card_declines']")).to_be_visible(timeout=5000)
    expect(viewer.page.get_by_role("button", name=re.compile("^Stop "))).to_have_count(0)
    expect(viewer.page.get_by_role("link", name="Users", exact=True)).to_have_count(0)
    viewer.go("Switches")
    expect(viewer.page.locator("li.switch-item[data-name='card_linking']")).to_be_visible()
    expect(viewer.page.get_by_text("Your role is read only")).to_be_visible()
    expect(viewer.page.get_by_role("button", name="Engage")).to_have_count(0)
    expect(viewer.page.get_by_label("Switch", exact=True)).to_have_count(0)
    expect(viewer.page.get_by_role("button", name="Release")).to_have_count(0)
    viewer.go("Reviews")
    expect(viewer.page.get_by_role("button", name="Propose")).to_have_count(0)
    viewer.go("Audit")
    expect(viewer.page.locator(".verdict")).to_have_text(re.compile("The audit chain is intact"))
    expect(viewer.page.locator("table.audit")).to_contain_text("switch.released")
    viewer.go("Rules")
    expect(viewer.page.get_by_role("button", name=re.compile("^(Enable|Disable|Edit)"))).to_have_count(0)
    viewer.page.get_by_role("button", name="Log out").click()
    expect(viewer.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    viewer.finish()


def j_operations(browser):
    """Reviews (a held top-up approved), a correction proposed by one operator and approved by
    another, a shopper looked up, frozen and unfrozen with four eyes, rules changed by an admin."""
    shopper = FIXTURE["shopper"]
    first = Console(browser)
    first.open()
    # The fixture logged this operator in with this 30 s step's code: the next step's is accepted too.
    first.log_in(OPERATORS[0], step_offset=30)
    first.go("Reviews")
    case = first.page.locator("li.case.state-open")
    expect(case).to_contain_text("Top-up of ¥40,000")
    case.get_by_role("button", name="Approve").click()
    expect(first.status()).to_have_text("Approved.")
    expect(first.page.locator("li.case.state-open")).to_have_count(0)
    first.page.get_by_label("What to undo").select_option("payment")
    first.page.get_by_label("Payment or top-up id").fill(FIXTURE["payment_id"])
    first.page.get_by_label("Reason").fill("the shopper reported the phone stolen")
    first.page.get_by_role("button", name="Propose").click()
    expect(first.status()).to_have_text(re.compile("a second operator must approve it"))
    proposed = first.page.locator("li.case.state-proposed")
    expect(proposed).to_contain_text("waiting for a second operator")
    expect(proposed.get_by_role("button", name="Approve")).to_have_count(0)

    first.go("Users")
    first.page.get_by_label("Phone or e-mail").fill(shopper["phone"])
    first.page.get_by_role("button", name="Look up").click()
    expect(first.page.get_by_text("Balance ¥41,300")).to_be_visible()
    expect(first.page.locator("main")).to_contain_text(shopper["email"])
    expect(first.page.locator("main")).to_contain_text(shopper["device_id"])
    first.page.get_by_role("button", name="Freeze").click()
    dialog = first.page.get_by_role("dialog")
    dialog.get_by_label("Reason").fill("phone stolen, owner called")
    dialog.get_by_role("button", name="Freeze").click()
    expect(first.status()).to_have_text("The account is frozen and every session is signed out.")
    expect(first.page.get_by_text("Frozen: every money action is refused.")).to_be_visible()
    first.page.get_by_role("button", name="Unfreeze").click()
    dialog.get_by_label("Reason").fill("owner has the phone back")
    dialog.get_by_role("button", name="Unfreeze").click()
    expect(first.status()).to_have_text("Unfreeze asked: waiting for a second operator.")
    expect(first.page.get_by_role("button", name="Unfreeze")).to_have_count(0)

    first.go("Rules")
    first.page.get_by_role("button", name="Disable hold-large-topups").click()
    expect(first.status()).to_have_text("Rule hold-large-topups saved; it applies from the next request.")
    first.page.get_by_role("button", name="Enable hold-large-topups").click()
    first.page.get_by_role("button", name="Edit hold-large-topups").click()
    dialog.get_by_label("Outcome").select_option("decline")
    dialog.get_by_label("Conditions (JSON)").fill('{"amount_at_least": 45000}')
    dialog.get_by_role("button", name="Save rule").click()
    expect(first.page.locator("table.rules")).to_contain_text("45000")
    first.go("Notifications")
    expect(first.page.get_by_label("Show")).to_have_value("failed")
    first.go("Account")
    expect(first.page.get_by_text("No passkey yet.")).to_be_visible()
    first.finish()

    second = Console(browser)
    second.open()
    second.log_in(OPERATORS[1])
    second.go("Reviews")
    second.page.locator("li.case.state-proposed").get_by_role("button", name="Approve").click()
    expect(second.status()).to_have_text("Correction applied.")
    second.go("Users")
    second.page.get_by_label("Phone or e-mail").fill(shopper["email"])
    second.page.get_by_role("button", name="Look up").click()
    expect(second.page.get_by_text(f"Release asked by {OPERATORS[0]['email']}")).to_be_visible()
    second.page.get_by_role("button", name="Unfreeze").click()
    dialog = second.page.get_by_role("dialog")
    dialog.get_by_label("Reason").fill("confirmed with the owner")
    dialog.get_by_role("button", name="Unfreeze").click()
    expect(second.status()).to_have_text("The account is unfrozen.")
    expect(second.page.get_by_text("Not frozen.")).to_be_visible()
    # The correction gave the ¥700 back.
    expect(second.page.get_by_text("Balance ¥42,000")).to_be_visible()
    second.finish()


def j_passkey(browser):
    """An operator adds a passkey in Account, logs out, and logs in with the passkey alone."""
    from wallet import virtual_authenticator
    c = Console(browser)
    c.open()
    virtual_authenticator(c)
    c.log_in(OPERATORS[0])
    c.go("Account")
    expect(c.page.get_by_text("No passkey yet.")).to_be_visible()
    c.page.get_by_role("button", name="Add a passkey").click()
    expect(c.status()).to_have_text("Your passkey is added: next time, log in with it.")
    expect(c.page.locator("main ul.list")).to_contain_text("Console")
    c.page.get_by_role("button", name="Log out").click()
    expect(c.status()).to_have_text("You are logged out.")
    c.page.get_by_role("button", name="Log in with a passkey").click()
    expect(c.page.get_by_role("link", name="Alerts", exact=True)).to_be_visible()
    expect(c.status()).to_have_text(re.compile(f"Logged in as {re.escape(OPERATORS[0]['email'])}"))
    c.no_secret_readable()
    c.finish()


def j_japanese(browser):
    """The console in Japanese (names, `<html lang="ja">`), back to English; usable at tablet width."""
    names = {"email": "メールアドレス", "password": "パスワード", "code": "認証コード", "login": "ログイン", "alerts": "アラート"}
    c = Console(browser, locale="ja-JP", viewport=TABLET)
    c.open()
    assert c.page.evaluate("document.documentElement.lang") == "ja"
    expect(c.page.get_by_role("button", name="パスキーでログイン")).to_be_visible()
    c.log_in(OPERATORS[0], names)
    c.fits()
    c.go("スイッチ")
    expect(c.page.get_by_label("スイッチ", exact=True)).to_be_visible()
    expect(c.page.get_by_role("button", name="停止する")).to_be_visible()
    c.fits()
    c.shot("console-switches-ja-tablet")
    c.go("ユーザー")
    expect(c.page.get_by_label("電話番号またはメールアドレス")).to_be_visible()
    c.page.get_by_label("電話番号またはメールアドレス").fill("nobody@example.jp")
    c.page.get_by_role("button", name="検索").click()
    expect(c.alert()).to_have_text("この電話番号またはメールアドレスの利用者はいません。")
    c.page.get_by_role("button", name="English").click()
    assert c.page.evaluate("document.documentElement.lang") == "en"
    expect(c.page.get_by_role("link", name="Switches", exact=True)).to_be_visible()
    for link in ["Alerts", "Switches", "Reviews", "Users", "Audit", "Notifications", "Rules"]:
        c.go(link)
        c.page.wait_for_load_state("networkidle")
        c.fits()
    c.page.set_viewport_size(LAPTOP)
    c.go("Switches")
    c.fits()
    c.finish()


if __name__ == "__main__":
    run_journeys(globals())
