#!/usr/bin/env python3
"""Browser journeys through the merchants' dashboard at /merchant, in headless Chromium.

Run by tests/api/merchant_page.rs, as wallet.py is run by browser.rs:
    python3 tests/browser/merchant.py JOURNEY
with OMAMORI_BASE, OMAMORI_FIXTURE (JSON: the demo owner and a staff member of the second store with
their TOTP secrets, yesterday's date, which was closed, and what its statement must show) and
OMAMORI_TEST_SCREENSHOTS in the environment.
"""

import csv
import io
import re
import time
import urllib.parse

from playwright.sync_api import expect

from wallet import BASE, CSP_WORDS, FIXTURE, SHOTS, axe_violations, run_journeys, totp

RAW_CODES = re.compile(r"invalid_credentials|forbidden|not_found|csrf|unauthenticated|null|undefined|NaN")
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}


def yen(n):
    return f"¥{n:,}"


class Dashboard:
    """One person's browser on /merchant."""

    def __init__(self, browser, locale="en-US", viewport=None):
        self.context = browser.new_context(viewport=viewport or LAPTOP, locale=locale, device_scale_factor=1,
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.bad_headers = []
        self.errors = []
        self.axe = []
        self.page.on("response", self._check_headers)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _check_headers(self, response):
        path = urllib.parse.urlparse(response.url).path
        if response.url.startswith(BASE) and (path == "/merchant" or path.startswith("/merchant/")):
            h = response.headers
            csp = h.get("content-security-policy", "")
            if not (all(w in csp for w in CSP_WORDS) and h.get("x-content-type-options") == "nosniff"):
                self.bad_headers.append(path)

    def shot(self, name):
        if SHOTS:
            self.page.evaluate("window.scrollTo(0, 0)")
            self.page.wait_for_timeout(300)
            self.page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)

    def log_in(self, who, names):
        p = self.page
        p.goto(BASE + "/merchant")
        p.get_by_label(names["email"]).fill(who["email"])
        p.get_by_label(names["password"], exact=True).fill(who["password"])
        # The fixture logged in with this 30-second step's code; a code is accepted once.
        p.get_by_label(names["code"]).fill(totp(who["totp_secret"], time.time() + 30))
        p.get_by_role("button", name=names["login"], exact=True).click()

    def check_axe(self, where):
        """Records axe-core's serious and critical findings on the screen shown now."""
        self.axe += axe_violations(self.page, where)

    def main_text(self):
        return self.page.locator("main").inner_text()

    def finish(self):
        assert not self.bad_headers, f"pages without the security headers: {self.bad_headers}"
        assert not self.errors, f"script errors: {self.errors}"
        assert not self.axe, "axe-core found serious or critical problems:\n" + "\n".join(self.axe)
        self.context.close()


EN = {"email": "E-mail", "password": "Password", "code": "Authenticator code", "login": "Log in"}
JA = {"email": "メールアドレス", "password": "パスワード", "code": "認証コード", "login": "ログイン"}


def j_owner(browser):
    d = Dashboard(browser)
    p = d.page
    owner = FIXTURE["owner"]
    p.goto(BASE + "/merchant")
    expect(p.get_by_label("E-mail")).to_be_visible()
    d.check_axe("login")
    d.log_in(owner, EN)
    expect(p.get_by_role("status")).to_contain_text("Logged in to Omamori Demo Mart")
    # Sales: today's chart, drawn in the page as SVG, with today's two payments.
    expect(p.get_by_role("link", name="Sales")).to_be_visible()
    chart = p.locator("main figure.chart svg").first
    expect(chart).to_be_visible()
    assert chart.get_attribute("role") == "img" and chart.get_attribute("aria-label"), "the chart has no text"
    p.wait_for_timeout(300)
    assert not RAW_CODES.search(d.main_text()), d.main_text()
    d.check_axe("sales")
    d.shot("merchant-sales")
    # Payments: the table, and the CSV of the same list.
    p.get_by_role("link", name="Payments").click()
    table = p.get_by_role("table").first
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(9)
    with p.expect_download() as info:
        p.get_by_role("link", name="Download CSV").click()
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 9, text
    assert all(r["customer_ref"].startswith("cus_") for r in rows), text
    assert sum(int(r["amount"]) for r in rows) == FIXTURE["gross"] + 2 * 140, text
    d.check_axe("payments")
    d.shot("merchant-payments")
    # Settlements: yesterday's, closed, and its statement with every line.
    p.get_by_role("link", name="Settlements").click()
    day = FIXTURE["yesterday"]
    p.get_by_role("button", name=f"Statement of {day}").click()
    heading = p.get_by_role("heading", name=f"Statement of {day}")
    expect(heading).to_be_visible()
    statement = p.locator("section.statement")
    expect(statement).to_contain_text(f"Sales {yen(FIXTURE['gross'])} − refunds {yen(FIXTURE['refunds'])}")
    expect(statement.locator("tbody tr")).to_have_count(8)
    d.check_axe("statement")
    d.shot("merchant-statement")
    # The owner's screens are there; logging out ends the session.
    expect(p.get_by_role("link", name="Staff")).to_be_visible()
    p.get_by_role("button", name="Log out").click()
    expect(p.get_by_label("E-mail")).to_be_visible()
    d.finish()


def j_staff(browser):
    d = Dashboard(browser, locale="ja-JP", viewport=PHONE)
    p = d.page
    d.log_in(FIXTURE["staff"], JA)
    expect(p.get_by_role("status")).to_contain_text("ログインしました")
    assert p.locator("html").get_attribute("lang") == "ja"
    expect(p.get_by_role("link", name="売上")).to_be_visible()
    # A staff member has no staff list, no settlements (they hold every store's lines) and no bank account.
    expect(p.get_by_role("link", name="スタッフ")).to_have_count(0)
    expect(p.get_by_role("link", name="精算")).to_have_count(0)
    expect(p.get_by_role("link", name="振込口座")).to_have_count(0)
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide on a 360px phone"
    d.check_axe("sales (ja, phone)")
    d.shot("merchant-staff-ja")
    # Only the second store, which sold nothing: no payment of the first store shows.
    p.get_by_role("link", name="決済").click()
    expect(p.get_by_role("heading", level=1)).to_be_visible()
    p.wait_for_timeout(500)
    text = d.main_text()
    assert "pay_" not in text and ("0 件" in text or "まだありません" in text), text
    assert "Demo Mart Shibuya" not in d.main_text(), d.main_text()
    assert not RAW_CODES.search(d.main_text()), d.main_text()
    d.finish()


if __name__ == "__main__":
    run_journeys(globals())
