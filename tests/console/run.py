#!/usr/bin/env python3
"""Browser tests of the web console (contract §13) in the system Chromium, driven by
Playwright for Python. Run by scripts/test-console.sh against a running server:

    run.py --base URL --outbox DIR --admin-email E --admin-password P --shots DIR

Each flow is a function `flow_*`; every page visited is checked with axe-core (WCAG 2.2 A
and AA: zero violations), for CSP violations reported by the browser, and for tokens in
web storage, and is saved as a screenshot. Exits non-zero at the first failure.
"""

import argparse
import email
import email.policy
import glob
import json
import os
import re
import sys
import time
import urllib.request
import uuid

import pyotp
from playwright.sync_api import expect, sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
AXE = open(os.path.join(HERE, "vendor", "axe-core-4.10.2.min.js"), encoding="utf-8").read()
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "quiet lighthouse orchard 77"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


class Console:
    """One browser context (one person) on the console."""

    def __init__(self, browser, args, name, **context_options):
        self.args = args
        self.name = name
        self.context = browser.new_context(base_url=args.base, **context_options)
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: d.accept())
        OPEN.append(self)

    def _console(self, msg):
        text = msg.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")
        elif msg.type == "error" and "401" not in text and "Failed to load resource" not in text:
            self.problems.append(f"console error: {text}")

    def open(self, route):
        self.page.goto(f"/console/#{route}")
        self.ready()

    def ready(self):
        self.page.wait_for_selector("body[data-ready=true]")
        self.page.wait_for_load_state("networkidle")

    def go(self, route):
        self.page.evaluate("r => { location.hash = r; }", route)
        self.page.wait_for_load_state("networkidle")
        self.page.wait_for_timeout(150)

    def check(self, shot):
        """axe-core, CSP, storage, screenshot."""
        page = self.page
        page.wait_for_load_state("networkidle")
        assert not self.problems, f"{self.name} {shot}: {self.problems}"
        # Evaluated through the DevTools protocol, which the page's CSP does not govern.
        page.evaluate(AXE + "\n;undefined")
        result = page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
            AXE_TAGS,
        )
        violations = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
        ]
        assert not violations, f"{shot}: axe violations: {violations}"
        storage = page.evaluate("() => [localStorage.length, sessionStorage.length]")
        assert storage == [0, 0], f"{shot}: web storage used: {storage}"
        path = os.path.join(self.args.shots, f"{shot}.png")
        page.screenshot(path=path, full_page=True)
        SHOTS.append(path)

    def sign_in(self, email_addr, password, code=None):
        self.open("/sign-in")
        page = self.page
        page.get_by_label("Email").fill(email_addr)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        if code is not None:
            page.get_by_label("Authentication code").fill(code() if callable(code) else code)
            page.get_by_role("button", name="Verify").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Profile")

    def sign_up(self, name, email_addr, password):
        self.open("/sign-up")
        page = self.page
        page.get_by_label("Name").fill(name)
        page.get_by_label("Email").fill(email_addr)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Profile")

    def sign_out(self):
        self.page.get_by_role("button", name="Sign out").click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text("Sign in")

    def close(self):
        assert not self.problems, f"{self.name}: {self.problems}"
        self.context.close()


SHOTS = []
OPEN = []


IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")


def api_login(base, email_addr, password, user_agent):
    """A sign-in through the API alone, as another device would make it."""
    req = urllib.request.Request(
        f"{base}/api/v1/auth/login", method="POST",
        data=json.dumps({"email": email_addr, "password": password}).encode(),
        headers={"Content-Type": "application/json", "User-Agent": user_agent})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.status


def fresh_email(tag):
    return f"{tag}.{uuid.uuid4().hex[:10]}@example.org"


def mails_to(outbox, address):
    found = []
    for path in sorted(glob.glob(os.path.join(outbox, "*.eml")), key=os.path.getmtime):
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        if address.lower() in str(msg["To"]).lower():
            body = msg.get_body(preferencelist=("plain", "html"))
            found.append(body.get_content() if body else "")
    return found


def wait_for_link(outbox, address, path):
    deadline = time.time() + 15
    while time.time() < deadline:
        for text in reversed(mails_to(outbox, address)):
            m = re.search(r"(https?://[^\s]+/" + re.escape(path) + r"\?token=[A-Za-z0-9_-]+)", text)
            if m:
                return m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no {path} link mailed to {address} in {outbox}")


def flow_public_pages(browser, args):
    c = Console(browser, args, "visitor")
    c.open("/sign-in")
    c.check("01-sign-in")
    c.open("/sign-up")
    c.check("02-sign-up")
    c.open("/forgot-password")
    c.check("03-forgot-password")
    c.open("/reset-password")
    c.check("04-reset-password-without-token")
    # Errors as people read them: a field error next to its field.
    c.open("/sign-up")
    page = c.page
    page.get_by_label("Name").fill("Weak")
    page.get_by_label("Email").fill(fresh_email("weak"))
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".field-error:not([hidden])").first).to_be_visible()
    expect(page.get_by_role("alert").first).to_contain_text("correct the highlighted")
    c.check("05-sign-up-field-error")
    # A wrong password is one sentence, not a code.
    c.open("/sign-in")
    page.get_by_label("Email").fill(fresh_email("nobody"))
    page.get_by_label("Password", exact=True).fill("not the password at all")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert").first).to_contain_text("email or password is not right")
    c.check("06-sign-in-wrong-password")
    # Small screen and dark scheme.
    m = Console(browser, args, "mobile", viewport={"width": 360, "height": 740}, color_scheme="dark")
    m.open("/sign-in")
    m.check("07-sign-in-360px-dark")
    m.close()
    c.close()


def flow_sign_up_totp_reset(browser, args):
    """Sign up → account pages → TOTP on (secret read from the page) → sign out → sign in
    with a code → forgot password → mailed link → reset → sign in with a recovery code."""
    c = Console(browser, args, "member")
    page = c.page
    addr = fresh_email("member")
    c.open("/sign-up")
    page.get_by_label("Name").fill("Mira Member")
    page.get_by_label("Email").fill(addr)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Profile")
    expect(page.locator("dl.facts")).to_contain_text(addr)
    c.check("10-account-profile")

    page.get_by_label("Display name").fill("Mira M.")
    page.get_by_role("button", name="Save name").click()
    expect(page.locator("#toast")).to_contain_text("saved")

    # A reload keeps the session through the HttpOnly cookie alone.
    page.reload()
    c.ready()
    expect(page.get_by_role("heading", level=1)).to_have_text("Profile")
    cookies = c.context.cookies()
    refresh = [k for k in cookies if k["name"].endswith("rampart_refresh")]
    assert refresh and refresh[0]["httpOnly"] and refresh[0]["path"] == "/api/v1/auth", cookies

    # A second session, from a phone: the list names each device as a person would.
    api_login(args.base, addr, PASSWORD, IPHONE_UA)
    c.go("/account/sessions")
    expect(page.get_by_text("this device")).to_be_visible()
    expect(page.locator("ul.rows li")).to_have_count(2)
    expect(page.locator("ul.rows li").filter(has_text="this device")).to_contain_text("Chrome on Linux")
    expect(page.locator("ul.rows li").filter(has_text="Safari on iOS")).to_have_count(1)
    c.check("11-account-sessions")
    c.go("/account/passkeys")
    expect(page.get_by_role("heading", name="Your passkeys")).to_be_visible()
    c.check("12-account-passkeys")
    c.go("/account/data")
    c.check("13-account-data")

    c.go("/account/security")
    c.check("14-account-security")
    page.get_by_role("button", name="Set up an authenticator app").click()
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    expect(page.locator("svg.qr")).to_be_visible()
    c.check("15-mfa-setup-qr")
    totp = pyotp.TOTP(secret)
    enabled_at = time.time()
    page.get_by_label("Code from the app").fill(totp.at(enabled_at))
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Turn on two-factor").click()
    expect(page.get_by_test_id("recovery-codes").locator("code")).to_have_count(10)
    codes = page.get_by_test_id("recovery-codes").locator("code").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-7]{5}-[a-z2-7]{5}", x) for x in codes), codes
    c.check("16-mfa-recovery-codes")
    page.get_by_role("button", name="I have saved them").click()
    expect(page.get_by_role("button", name="Turn off two-factor")).to_be_visible()

    # The step used to enable is spent; the next step's code is within the ±1 window.
    c.sign_out()
    c.sign_in(addr, PASSWORD, code=lambda: totp.at(enabled_at + 30))
    c.sign_out()

    # Forgot password → the mailed link → the reset page (token removed from the bar).
    c.open("/forgot-password")
    page.get_by_label("Email").fill(addr)
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("status").first).to_contain_text("on its way")
    c.check("17-forgot-password-sent")
    link = wait_for_link(args.outbox, addr, "reset-password")
    local = re.sub(r"^https?://[^/]+", args.base, link)
    page.goto(local)
    c.ready()
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    assert "token" not in page.url, f"the token stayed in the address bar: {page.url}"
    c.check("18-reset-password")
    page.locator("input[name=newPassword]").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("status").first).to_contain_text("password has been changed")
    # The link works once.
    page.goto(local)
    c.ready()
    page.locator("input[name=newPassword]").fill(NEW_PASSWORD + " again")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("alert").first).to_contain_text("expired or was already used")

    # The reset kept MFA: a recovery code completes the sign-in.
    c.sign_in(addr, NEW_PASSWORD, code=codes[0])
    c.sign_out()
    c.close()


def flow_admin(browser, args):
    """An administrator disables a signed-in user, whose console is signed out on its next
    call; users, user, roles and audit pages; the audit chain is intact."""
    victim = Console(browser, args, "victim")
    addr = fresh_email("victim")
    victim.open("/sign-up")
    vp = victim.page
    vp.get_by_label("Name").fill("Victor Victim")
    vp.get_by_label("Email").fill(addr)
    vp.get_by_label("Password").fill(PASSWORD)
    vp.get_by_role("button", name="Create account").click()
    expect(vp.get_by_role("heading", level=1)).to_have_text("Profile")
    # A plain member sees no administration.
    expect(vp.get_by_role("list", name="Administration")).to_have_count(0)

    admin = Console(browser, args, "admin")
    ap = admin.page
    admin.sign_in(args.admin_email, args.admin_password)
    expect(ap.get_by_role("list", name="Administration")).to_be_visible()
    admin.go("/admin/users")
    expect(ap.get_by_role("heading", level=1)).to_have_text("Users")
    admin.check("20-admin-users")
    ap.get_by_label("Search by email").fill(addr.split("@")[0])
    ap.get_by_role("button", name="Search").click()
    ap.wait_for_load_state("networkidle")
    expect(ap.locator("tbody tr")).to_have_count(1)
    ap.get_by_role("link", name=addr).click()
    ap.wait_for_load_state("networkidle")
    expect(ap.get_by_role("heading", name=addr)).to_be_visible()
    admin.check("21-admin-user")
    ap.get_by_role("button", name="Disable").click()
    expect(ap.locator("#toast")).to_contain_text("disabled")
    ap.wait_for_load_state("networkidle")
    expect(ap.get_by_role("button", name="Enable")).to_be_visible()

    # The victim's open console: its next call fails and it is signed out.
    victim.go("/account/sessions")
    expect(vp.get_by_role("heading", level=1)).to_have_text("Sign in", timeout=10000)
    expect(vp.locator("#toast")).to_contain_text("session has ended")
    victim.check("22-signed-out-after-disable")
    vp.reload()
    victim.ready()
    expect(vp.get_by_role("heading", level=1)).to_have_text("Sign in")

    admin.go("/admin/roles")
    expect(ap.get_by_role("heading", level=1)).to_have_text("Roles")
    role = f"support{uuid.uuid4().hex[:6]}"
    ap.get_by_label("Name", exact=True).fill(role)
    ap.get_by_label("Description").fill("Reads users")
    ap.get_by_label("users:read").last.check()
    ap.get_by_role("button", name="Create role").click()
    expect(ap.locator("#toast")).to_contain_text("created")
    ap.wait_for_load_state("networkidle")
    expect(ap.get_by_text(role, exact=True)).to_be_visible()
    admin.check("23-admin-roles")

    admin.go("/admin/audit")
    expect(ap.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(ap.locator(".chain")).to_contain_text("intact", timeout=10000)
    expect(ap.locator("tbody tr").first).to_be_visible()
    first_action = ap.locator("tbody tr").first.locator("td").nth(1).inner_text()
    assert first_action in ("role.created",), f"newest event is {first_action}"
    expect(ap.locator("tbody")).to_contain_text("user.updated")
    admin.check("24-admin-audit")
    ap.get_by_label("Action").fill("auth.register")
    ap.get_by_role("button", name="Filter").click()
    expect(ap).to_have_url(re.compile(r"action=auth\.register"))
    expect(ap.locator("tbody tr").filter(has_not_text="auth.register")).to_have_count(0)
    expect(ap.locator("tbody tr").first).to_contain_text("auth.register")
    actions = set(ap.locator("tbody tr td:nth-child(2)").all_inner_texts())
    assert actions == {"auth.register"}, actions
    admin.check("25-admin-audit-filtered")
    victim.close()
    admin.close()


def flow_passkeys(browser, args):
    """A passkey added through Chromium's virtual authenticator (CDP WebAuthn domain) →
    sign out → sign in with it from the sign-in page's passkey button."""
    c = Console(browser, args, "passkey")
    page = c.page
    cdp = c.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
    }})["authenticatorId"]
    addr = fresh_email("passkey")
    c.sign_up("Pia Passkey", addr, PASSWORD)
    c.go("/account/passkeys")
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    page.get_by_label("Name for this passkey").fill("Test laptop")
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#toast")).to_contain_text("Passkey added")
    expect(page.locator("ul.rows li strong")).to_have_text(["Test laptop"])
    creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(creds) == 1 and creds[0]["isResidentCredential"], creds
    c.check("30-passkey-added")

    c.sign_out()
    # The passkey button alone: no email, no password.
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Profile")
    expect(page.locator("dl.facts")).to_contain_text(addr)
    after = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert after[0]["signCount"] > creds[0]["signCount"], (creds, after)
    c.go("/account/passkeys")
    expect(page.locator("ul.rows li .meta")).not_to_contain_text("last used never")
    c.check("31-passkey-signed-in")

    # An authenticator that cannot verify the user: the browser refuses, the page says so.
    c.sign_out()
    cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False})
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert").filter(has_text="cancelled")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    c.check("32-passkey-cancelled")
    cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": True})

    # Removed on the server (the session it opened ends with it), kept by the authenticator:
    # the server refuses it and the page says why in a sentence.
    c.sign_in(addr, PASSWORD)
    c.go("/account/passkeys")
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    c.sign_out()
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    c.check("33-passkey-removed-refused")
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator})
    c.close()


def flow_email_export_delete(browser, args):
    """Verify the address from the mailed link → change it (link from the .eml to the new
    address) → export (a JSON download with the user's email and no secret) → delete the
    account (password asked) → signed out, and sign-in refused."""
    c = Console(browser, args, "lifecycle")
    page = c.page
    addr = fresh_email("life")
    c.sign_up("Lea Lifecycle", addr, PASSWORD)
    expect(page.locator("dl.facts")).to_contain_text("not verified")

    link = wait_for_link(args.outbox, addr, "verify-email")
    page.goto(re.sub(r"^https?://[^/]+", args.base, link))
    c.ready()
    expect(page.get_by_role("heading", level=1)).to_have_text("Verify your email")
    expect(page.locator(".success")).to_contain_text("verified")
    assert "token" not in page.url, f"the token stayed in the address bar: {page.url}"
    c.check("40-email-verified")
    c.go("/account")
    expect(page.locator("dl.facts .badge")).to_have_text("verified")

    new_addr = fresh_email("moved")
    page.get_by_label("New email").fill(new_addr)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Change email").click()
    expect(page.get_by_role("status").filter(has_text="Check the new address")).to_be_visible()
    c.check("41-email-change-sent")
    link = wait_for_link(args.outbox, new_addr, "confirm-email")
    page.goto(re.sub(r"^https?://[^/]+", args.base, link))
    c.ready()
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your new email")
    expect(page.locator(".success")).to_contain_text("has been changed")
    assert "token" not in page.url, f"the token stayed in the address bar: {page.url}"
    c.check("42-email-changed")
    c.go("/account")
    expect(page.locator("dl.facts")).to_contain_text(new_addr)
    expect(page.locator("dl.facts")).not_to_contain_text(addr)
    expect(page.locator("dl.facts .badge")).to_have_text("verified")
    # The old address no longer signs in; the new one does.
    c.sign_out()
    page.get_by_label("Email").fill(addr)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert").first).to_contain_text("email or password is not right")
    c.sign_in(new_addr, PASSWORD)

    c.go("/account/data")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download my data").click()
    download = info.value
    assert download.suggested_filename == "rampart-export.json", download.suggested_filename
    with open(download.path(), encoding="utf-8") as f:
        raw = f.read()
    exported = json.loads(raw)
    assert exported["user"]["email"] == new_addr, exported["user"]
    assert {"exportedAt", "sessions", "passkeys", "notes", "auditEvents"} <= exported.keys(), exported.keys()
    assert exported["sessions"], "the export lists no session"
    actions = {e.get("action") for e in exported["auditEvents"]}
    assert {"auth.register", "auth.email_verified", "user.email_changed"} <= actions, actions
    for secret in ("password_hash", "passwordHash", "$argon2", "refreshToken", "accessToken", "tokenHash", "token_hash"):
        assert secret not in raw, f"the export contains {secret}"
    assert PASSWORD not in raw, "the export contains the password"
    expect(page.locator("#toast")).to_contain_text("downloaded")
    c.check("43-export-downloaded")

    # Deletion asks for the password: a wrong one is refused and nothing happens.
    delete_password = page.locator("form:has(button:text('Delete my account')) input[name=password]")
    delete_password.fill("not my password at all")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("alert").filter(has_text="not right")).to_be_visible()
    c.check("44-delete-wrong-password")
    delete_password.fill(PASSWORD)
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.locator("#toast")).to_contain_text("deleted")
    c.check("45-account-deleted")
    page.reload()
    c.ready()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("Email").fill(new_addr)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert").first).to_contain_text("email or password is not right")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    c.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--shots", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    flows = [flow_public_pages, flow_sign_up_totp_reset, flow_passkeys, flow_email_export_delete, flow_admin]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            for flow in flows:
                started = time.time()
                try:
                    flow(browser, args)
                except Exception:
                    for c in OPEN:
                        try:
                            c.page.screenshot(path=os.path.join(args.shots, f"FAILED-{flow.__name__}-{c.name}.png"), full_page=True)
                        except Exception:
                            pass
                    raise
                OPEN.clear()
                print(f"ok   {flow.__name__} ({time.time() - started:.1f} s)", flush=True)
        finally:
            browser.close()
    print(f"{len(flows)} flows passed; {len(SHOTS)} screenshots in {args.shots}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
