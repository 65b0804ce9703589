#!/usr/bin/env python3
"""The screenshots of docs/console.md, taken from a fresh server with a few people in it.
Run through scripts/test-console.sh (it starts the server and creates the administrator):

    CONSOLE_DBS=sqlite CONSOLE_DOCS_SHOTS=docs/console scripts/test-console.sh target/debug/rampart

Seeds users, sessions and a role through the public API, adds two passkeys through
Chromium's virtual authenticator, then saves each main page at 1280 px wide (light, and one
dark), each checked with axe-core like the browser tests.
"""

import argparse
import os
import re
import sys

import requests
from playwright.sync_api import expect, sync_playwright

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the browser tests' Console helper and Chromium flags)

PASSWORD = "correct horse battery staple 42"
PEOPLE = [
    ("Ada Lovelace", "ada@example.org"),
    ("Grace Hopper", "grace@example.org"),
    ("Alan Turing", "alan@example.org"),
    ("Katherine Johnson", "katherine@example.org"),
    ("Edsger Dijkstra", "edsger@example.org"),
    ("Barbara Liskov", "barbara@example.org"),
    ("Donald Knuth", "donald@example.org"),
]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
]
VIEWPORT = {"width": 1280, "height": 860}
MAX_HEIGHT = 1200  # a long page is cut here (the audit log), to keep each file small


def seed(base, outbox, admin_email, admin_password):
    for name, addr in PEOPLE:
        r = requests.post(f"{base}/api/v1/auth/register", timeout=10,
                          json={"email": addr, "password": PASSWORD, "displayName": name})
        assert r.status_code == 201, r.text
    # Ada opened her verification link.
    token = run.wait_for_link(outbox, "ada@example.org", "verify-email").rsplit("token=", 1)[1]
    r = requests.post(f"{base}/api/v1/auth/email/verify/confirm", timeout=10, json={"token": token})
    assert r.status_code == 204, r.text
    # Ada is also signed in on two other devices.
    for agent in AGENTS:
        r = requests.post(f"{base}/api/v1/auth/login", timeout=10, headers={"User-Agent": agent},
                          json={"email": "ada@example.org", "password": PASSWORD})
        assert r.status_code == 200, r.text
    admin = requests.post(f"{base}/api/v1/auth/login", timeout=10,
                          json={"email": admin_email, "password": admin_password})
    assert admin.status_code == 200, admin.text
    auth = {"Authorization": f"Bearer {admin.json()['accessToken']}"}
    r = requests.post(f"{base}/api/v1/rbac/roles", timeout=10, headers=auth, json={
        "name": "support", "description": "Helps people with their accounts",
        "permissions": ["users:read", "users:update", "audit:read"]})
    assert r.status_code == 201, r.text
    users = requests.get(f"{base}/api/v1/users?email=grace", timeout=10, headers=auth).json()["items"]
    r = requests.put(f"{base}/api/v1/users/{users[0]['id']}/roles", timeout=10, headers=auth,
                     json={"roles": ["user", "support"]})
    assert r.status_code in (200, 204), r.text
    users = requests.get(f"{base}/api/v1/users?email=edsger", timeout=10, headers=auth).json()["items"]
    r = requests.patch(f"{base}/api/v1/users/{users[0]['id']}", timeout=10, headers=auth,
                       json={"status": "disabled"})
    assert r.status_code == 200, r.text


def shoot(c, out, name):
    c.check(f"docs-{name}")
    c.page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
    height = min(c.page.evaluate("() => document.documentElement.scrollHeight"), MAX_HEIGHT)
    c.page.screenshot(path=os.path.join(out, f"{name}.png"), full_page=True,
                      clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})


def add_passkey(c, cdp, label):
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
    }})["authenticatorId"]
    page = c.page
    page.get_by_label("Name for this passkey").fill(label)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("ul.rows li strong").filter(has_text=label)).to_be_visible()
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--shots", required=True, help="where the checked pages are saved too")
    parser.add_argument("--out", required=True, help="docs/console")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    seed(args.base, args.outbox, args.admin_email, args.admin_password)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=run.CHROMIUM_ARGS)
        try:
            c = run.Console(browser, args, "docs", viewport=VIEWPORT, color_scheme="light")
            c.open("/sign-in")
            shoot(c, args.out, "sign-in")
            c.open("/sign-up")
            shoot(c, args.out, "sign-up")
            c.open("/forgot-password")
            c.page.get_by_label("Email").fill("katherine@example.org")
            c.page.get_by_role("button", name="Send reset link").click()
            expect(c.page.get_by_role("status").first).to_contain_text("on its way")
            shoot(c, args.out, "forgot-password")
            link = run.wait_for_link(args.outbox, "katherine@example.org", "reset-password")
            c.page.goto(re.sub(r"^https?://[^/]+", args.base, link))
            c.ready()
            expect(c.page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
            shoot(c, args.out, "reset-password")
            # Donald opens the link of his verification mail.
            link = run.wait_for_link(args.outbox, "donald@example.org", "verify-email")
            c.page.goto(re.sub(r"^https?://[^/]+", args.base, link))
            c.ready()
            expect(c.page.locator(".success")).to_contain_text("verified")
            shoot(c, args.out, "verify-email")

            c.sign_in("ada@example.org", PASSWORD)
            shoot(c, args.out, "account-profile")
            c.go("/account/security")
            c.page.get_by_role("button", name="Set up an authenticator app").click()
            expect(c.page.locator("svg.qr")).to_be_visible()
            shoot(c, args.out, "mfa-setup")

            c.go("/account/passkeys")
            cdp = c.context.new_cdp_session(c.page)
            cdp.send("WebAuthn.enable")
            add_passkey(c, cdp, "MacBook Touch ID")
            add_passkey(c, cdp, "YubiKey 5C")
            c.page.wait_for_timeout(5200)  # the toast fades
            shoot(c, args.out, "passkeys")
            c.go("/account/sessions")
            shoot(c, args.out, "sessions")
            c.go("/account/data")
            expect(c.page.get_by_role("button", name="Delete my account")).to_be_visible()
            shoot(c, args.out, "your-data")
            c.sign_out()

            c.sign_in(args.admin_email, args.admin_password)
            c.go("/admin/users")
            expect(c.page.locator("tbody tr")).to_have_count(len(PEOPLE) + 1)
            shoot(c, args.out, "admin-users")
            c.page.get_by_role("link", name="grace@example.org").click()
            c.page.wait_for_load_state("networkidle")
            expect(c.page.get_by_role("heading", name="grace@example.org")).to_be_visible()
            shoot(c, args.out, "admin-user")
            c.go("/admin/roles")
            expect(c.page.get_by_text("support", exact=True)).to_be_visible()
            shoot(c, args.out, "admin-roles")
            c.go("/admin/audit")
            expect(c.page.locator(".chain")).to_contain_text("intact", timeout=10000)
            shoot(c, args.out, "admin-audit")
            c.close()

            d = run.Console(browser, args, "docs-dark", viewport=VIEWPORT, color_scheme="dark")
            d.sign_in(args.admin_email, args.admin_password)
            d.go("/admin/users")
            expect(d.page.locator("tbody tr")).to_have_count(len(PEOPLE) + 1)
            shoot(d, args.out, "admin-users-dark")
            d.close()
        finally:
            browser.close()
    print(f"documentation screenshots in {args.out}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
