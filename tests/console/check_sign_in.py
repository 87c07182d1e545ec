"""Drives the console's browser sign-in ([admin.sign_in]) in headless Chromium.

Started by tests/gateway/console_sign_in.rs, which runs a real OIDC provider with an
interactive login page (npm oidc-provider, scripts/oidc-login/) and two gateways that sign
in there: SIGN_IN_ADMIN_URL (sessions of a minute) and SIGN_IN_SHORT_URL (sessions of two
seconds). Prints "CHECK <name> ok" for each check that passed (the Rust test requires every
one) and exits non-zero at the first failure. Requests a browser adds nothing to go over
plain HTTP (http.client), carrying the cookies the browser was given.

Uses Debian's Chromium (CONSOLE_CHROMIUM); `playwright install` is never needed.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse

from playwright.sync_api import sync_playwright

ADMIN = os.environ["SIGN_IN_ADMIN_URL"]
SHORT = os.environ["SIGN_IN_SHORT_URL"]
PROVIDER = os.environ["SIGN_IN_PROVIDER"]
POLICY_FILE = os.environ["SIGN_IN_POLICY_FILE"]
SECRET = os.environ["SIGN_IN_CLIENT_SECRET"]
CHROMIUM = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 20_000
SESSION = "__Host-flowgate-session"
LOGIN = "__Host-flowgate-login"

pages_seen = []


def check(name):
    print(f"CHECK {name} ok", flush=True)


def request(method, url, headers=None, body=None):
    """One HTTP request, no redirects followed: (status, headers, body text)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.request(method, target, body=body, headers=headers or {})
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    connection.close()
    return response.status, response.headers, text


def cookie_header(context, url, *names):
    jar = {c["name"]: c["value"] for c in context.cookies(url)}
    return "; ".join(f"{n}={jar[n]}" for n in names if n in jar)


def session_cookie(context, url):
    return next((c for c in context.cookies(url) if c["name"] == SESSION), None)


def new_context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # The provider's pages import a web font; nothing here reaches the internet.
    context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    return context


def remember(page):
    pages_seen.append(page.content())


def log_in(page, user):
    """Fills the provider's interactive login form (any password) and submits it."""
    page.wait_for_selector('input[name="login"]', timeout=WAIT_MS)
    assert page.url.startswith(PROVIDER), page.url
    remember(page)
    page.fill('input[name="login"]', user)
    page.fill('input[name="password"]', "any password")
    page.click('button[type="submit"]')


def sign_in(page, base, user, path="/ui"):
    page.goto(f"{base}{path}")
    log_in(page, user)
    page.wait_for_url(f"{base}/ui**", timeout=WAIT_MS)
    page.wait_for_load_state()
    remember(page)


def admin_flow(browser):
    context = new_context(browser)
    page = context.new_page()
    callbacks = []
    page.on("request", lambda r: callbacks.append(r.url) if "/ui/callback" in r.url else None)

    # /ui → the provider's login page → back on the runs page with the role.
    sign_in(page, ADMIN, "admin")
    assert page.title().startswith("Runs"), page.inner_text("main")
    assert page.inner_text("#role") == "administrator", page.inner_text("#role")
    assert page.inner_text("#signed-in") == "admin", page.inner_text("#signed-in")
    assert page.locator("#sign-out").count() == 1
    assert callbacks, "no callback seen"
    check("admin_signs_in_and_lands_on_runs")

    cookie = session_cookie(context, ADMIN)
    assert cookie is not None, context.cookies(ADMIN)
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/", cookie
    assert not any(c["name"] == LOGIN for c in context.cookies(ADMIN)), "the login cookie outlived the sign-in"
    session = f"{SESSION}={cookie['value']}"
    check("session_cookie_attributes")

    # The reload button sends the session's CSRF token.
    page.goto(f"{ADMIN}/ui/policy")
    remember(page)
    csrf = page.get_attribute('meta[name="flowgate-csrf"]', "content")
    assert csrf and len(csrf) == 43, csrf
    page.click("#reload")
    page.locator("#reload-result", has_text="Policy ").wait_for(timeout=WAIT_MS)
    result = page.inner_text("#reload-result")
    assert result.startswith("Policy swapped") or result.startswith("Policy unchanged"), result
    check("reload_with_csrf_token")

    # The cookie alone changes nothing: without the token, or with another token, 403.
    json_post = {"Cookie": session, "Content-Type": "application/json"}
    status, _, body = request("POST", f"{ADMIN}/reload", json_post, "{}")
    assert status == 403, (status, body)
    status, _, body = request("POST", f"{ADMIN}/reload", {**json_post, "X-Flowgate-Csrf": "A" * 43}, "{}")
    assert status == 403, (status, body)
    status, _, body = request("POST", f"{ADMIN}/ui/sign-out", {"Cookie": session}, "")
    assert status == 403, (status, body)
    status, _, body = request("POST", f"{ADMIN}/reload", {**json_post, "X-Flowgate-Csrf": csrf}, "{}")
    assert status == 200 and json.loads(body)["result"] in ("swapped", "unchanged"), (status, body)
    check("post_without_csrf_token_refused")

    # What a page of another site can send: a form post, with its Origin.
    form = {"Cookie": session, "Content-Type": "application/x-www-form-urlencoded", "Origin": "http://attacker.example"}
    status, _, body = request("POST", f"{ADMIN}/reload", form, "x=1")
    assert status == 403, (status, body)
    status, _, body = request("POST", f"{ADMIN}/ui/sign-out", form, "x=1")
    assert status == 403, (status, body)
    # Reloading the same policy kept the session; the refused posts did not end it either.
    status, _, _ = request("GET", f"{ADMIN}/policy", {"Cookie": session})
    assert status == 200, "a reload of the same policy or a refused cross-site post ended the session"
    check("cross_site_form_post_refused")

    for forged in ["A" * 43, cookie["value"][:-1] + ("B" if cookie["value"][-1] != "B" else "C"), "garbage", ""]:
        status, headers, _ = request("GET", f"{ADMIN}/ui/runs", {"Cookie": f"{SESSION}={forged}"})
        assert status == 303 and headers["Location"].startswith(PROVIDER), (forged, status)
        status, _, _ = request("GET", f"{ADMIN}/policy", {"Cookie": f"{SESSION}={forged}"})
        assert status == 401, (forged, status)
    # A planted second cookie beside the real one makes neither count.
    status, _, _ = request("GET", f"{ADMIN}/policy", {"Cookie": f"{session}; {SESSION}={'A' * 43}"})
    assert status == 401, status
    check("forged_cookie_refused")

    response = page.goto(f"{ADMIN}/ui/callback?code=abc&state={'A' * 43}")
    assert response.status == 400, response.status
    assert "unknown" in page.inner_text("#refusal"), page.inner_text("#refusal")
    check("wrong_state_refused")

    # The callback URL the browser followed, replayed: its state is used up...
    used = callbacks[0]
    status, _, _ = request("GET", used, {"Cookie": cookie_header(context, ADMIN, LOGIN)})
    assert status == 400, status
    # ...and its code, sent with a fresh state and login cookie, is refused by the provider.
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(used).query)["code"][0]
    status, headers, _ = request("GET", f"{ADMIN}/ui")
    assert status == 303, status
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["state"][0]
    login_cookie = headers["Set-Cookie"].split(";")[0]
    replay = f"{ADMIN}/ui/callback?" + urllib.parse.urlencode({"code": code, "state": state})
    status, headers, body = request("GET", replay, {"Cookie": login_cookie})
    assert status == 401, (status, body)
    assert headers.get("Set-Cookie") is None or SESSION not in headers.get("Set-Cookie"), headers
    check("replayed_code_refused")

    # Sign out: the session ends here, then at the provider, then the signed-out page.
    page.goto(f"{ADMIN}/ui/runs")
    page.click("#sign-out")
    page.wait_for_selector('button[name="logout"]', timeout=WAIT_MS)
    assert page.url.startswith(PROVIDER), page.url
    page.click('button[name="logout"]')
    page.wait_for_url(f"{ADMIN}/ui/signed-out", timeout=WAIT_MS)
    remember(page)
    assert session_cookie(context, ADMIN) is None, "the session cookie was not cleared"
    check("admin_signs_out_at_the_provider")

    status, _, _ = request("GET", f"{ADMIN}/policy", {"Cookie": session})
    assert status == 401, status
    status, headers, _ = request("GET", f"{ADMIN}/ui/runs", {"Cookie": session})
    assert status == 303 and headers["Location"].startswith(PROVIDER), status
    check("signed_out_cookie_refused")

    # Signed out at the provider too: the next visit shows its login form again.
    page.click("#sign-in-again")
    page.wait_for_selector('input[name="login"]', timeout=WAIT_MS)
    assert page.url.startswith(PROVIDER), page.url
    check("sent_to_log_in_again")
    context.close()


def viewer_flow(browser):
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, ADMIN, "viewer", "/ui/policy")
    assert page.url == f"{ADMIN}/ui/policy", page.url
    assert page.inner_text("#role") == "viewer"
    assert page.locator("#reload").count() == 0, "a viewer sees the reload button"
    assert page.locator("#no-reload").count() == 1
    assert "private_parameters" not in page.inner_text("#policy-view")
    session = f"{SESSION}={session_cookie(context, ADMIN)['value']}"
    csrf = page.get_attribute('meta[name="flowgate-csrf"]', "content")
    headers = {"Cookie": session, "Content-Type": "application/json", "X-Flowgate-Csrf": csrf}
    status, _, _ = request("POST", f"{ADMIN}/reload", headers, "{}")
    assert status == 403, status
    check("viewer_sees_what_a_viewer_sees")
    context.close()


def refused_flow(browser, user, status_wanted, check_name):
    context = new_context(browser)
    page = context.new_page()
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/ui/callback" in r.url else None)
    page.goto(f"{ADMIN}/ui")
    log_in(page, user)
    page.wait_for_url(f"{ADMIN}/ui/callback**", timeout=WAIT_MS)
    page.wait_for_selector("#refusal", timeout=WAIT_MS)
    remember(page)
    assert statuses == [status_wanted], statuses
    assert session_cookie(context, ADMIN) is None, "a refused user got a session"
    check(check_name)
    context.close()


def expiry_flow(browser):
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, SHORT, "admin")
    assert page.inner_text("#role") == "administrator"
    session = f"{SESSION}={session_cookie(context, SHORT)['value']}"
    # Past both the idle and the absolute expiry (2 s), whatever the browser's cookie says.
    time.sleep(3)
    status, _, _ = request("GET", f"{SHORT}/policy", {"Cookie": session})
    assert status == 401, status
    check("expired_cookie_refused")
    context.close()


def reload_flow(browser):
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, ADMIN, "admin", "/ui/policy")
    session = f"{SESSION}={session_cookie(context, ADMIN)['value']}"
    with open(POLICY_FILE, encoding="utf-8") as f:
        text = f.read()
    assert 'idle_timeout = "60s"' in text
    with open(POLICY_FILE, "w", encoding="utf-8") as f:
        f.write(text.replace('idle_timeout = "60s"', 'idle_timeout = "61s"'))
    page.click("#reload")
    page.locator("#reload-result", has_text="Policy ").wait_for(timeout=WAIT_MS)
    assert page.inner_text("#reload-result").startswith("Policy swapped"), page.inner_text("#reload-result")
    status, _, _ = request("GET", f"{ADMIN}/policy", {"Cookie": session})
    assert status == 401, status
    check("reload_changing_sign_in_ends_sessions")
    context.close()


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            admin_flow(browser)
            viewer_flow(browser)
            refused_flow(browser, "foreign", 403, "foreign_tenant_refused")
            refused_flow(browser, "norole", 403, "user_without_role_refused")
            expiry_flow(browser)
            reload_flow(browser)
        finally:
            browser.close()
    assert len(pages_seen) >= 10, len(pages_seen)
    assert not any(SECRET in html for html in pages_seen), "the client secret reached a page"
    check("secret_never_shown")
    print("ALL CHECKS PASSED", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
