"""Drives flowgate's console (/ui on the admin listener) in headless Chromium.

Started by tests/gateway/console.rs after it made real calls through a real gateway; everything
comes in through CONSOLE_* environment variables. Prints "CHECK <name> ok" for each check
that passed (the Rust test requires every one) and exits non-zero at the first failure.
With CONSOLE_SCREENSHOTS set to a directory, also saves a PNG of each page there.

Uses Debian's Chromium (CONSOLE_CHROMIUM); `playwright install` is never needed.
"""

import json
import os
import re
import ssl
import sys
import urllib.request

from playwright.sync_api import sync_playwright

ADMIN = os.environ["CONSOLE_ADMIN_URL"]
VIEWER = os.environ["CONSOLE_VIEWER_URL"]
CALL_URL = os.environ["CONSOLE_CALL_URL"]
CA_FILE = os.environ["CONSOLE_CA_FILE"]
TOKEN = os.environ["CONSOLE_TOKEN"]
INVOICE_RUN = os.environ["CONSOLE_INVOICE_RUN"]
SECURE_RUN = os.environ["CONSOLE_SECURE_RUN"]
NEVER_SHOWN = [v for v in os.environ["CONSOLE_NEVER_SHOWN"].split("\n") if v]
CHROMIUM = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 20_000

pages_checked = []
csp_violations = []


def check(name):
    print(f"CHECK {name} ok", flush=True)


def visit(page, url):
    """Opens url, requires a 200, and checks its HTML holds no secret or token."""
    response = page.goto(url)
    assert response is not None and response.status == 200, f"{url}: status {response and response.status}"
    no_secret(page, url)
    return response


def navigate(page, selector):
    """Clicks what leads to another page and waits for that page (not the current one)."""
    with page.expect_navigation():
        page.click(selector)
    page.wait_for_load_state()
    no_secret(page, page.url)


def no_secret(page, where):
    html = page.content()
    for index, value in enumerate(NEVER_SHOWN):
        # The message names which value by position, never the value itself.
        assert value not in html, f"{where}: never-shown value #{index} is in the page's HTML"
    pages_checked.append(where)


def shot(page, name):
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def watch_console(page):
    def on_message(message):
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            csp_violations.append(message.text)
    page.on("console", on_message)


def column(page, label):
    return [t.strip() for t in page.locator(f'#runs tr.run td[data-label="{label}"]').all_inner_texts()]


def call_invoice():
    """One more call through the gateway, as a flow's caller would make it."""
    context = ssl.create_default_context(cafile=CA_FILE)
    request = urllib.request.Request(
        CALL_URL,
        data=json.dumps({"customer": "Fabrikam", "amount": 7}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        assert response.status == 200, response.status
        response.read()
        return response.headers["x-request-id"]


def admin_checks(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_console(page)

    # Runs, newest first.
    visit(page, f"{ADMIN}/ui/runs")
    times = column(page, "Time")
    assert len(times) == 3, times
    assert times == sorted(times, reverse=True), times
    assert set(column(page, "Trigger")) == {"invoice", "secure"}, column(page, "Trigger")
    shot(page, "runs")
    check("runs_newest_first")

    # Filter by trigger with the form.
    page.select_option("#f-trigger", "invoice")
    navigate(page, "#apply")
    assert "trigger=invoice" in page.url, page.url
    triggers = column(page, "Trigger")
    assert triggers == ["invoice", "invoice"], triggers
    no_secret(page, page.url)
    check("filter_by_trigger")

    page.select_option("#f-trigger", "")
    page.fill("#f-decision", "unauthenticated")
    navigate(page, "#apply")
    decisions = column(page, "Decision")
    assert decisions == ["unauthenticated"], decisions
    check("filter_by_decision")

    page.fill("#f-decision", "")
    page.fill("#f-principal", "oid:nobody")
    navigate(page, "#apply")
    assert column(page, "Time") == [], "a principal nobody used matched runs"
    callers = None
    visit(page, f"{ADMIN}/ui/runs?since=1h&decision=allowed")
    callers = set(column(page, "Caller"))
    assert len(callers) == 1 and next(iter(callers)).startswith("oid:"), callers
    principal = next(iter(callers))
    page.fill("#f-principal", principal)
    navigate(page, "#apply")
    assert len(column(page, "Time")) == 2, column(page, "Time")
    visit(page, f"{ADMIN}/ui/runs?until=2000-01-01T00:00:00Z")
    assert column(page, "Time") == [], "runs before 2000 were listed"
    check("filter_by_caller_and_time")

    # Auto-refresh: a call made while the page is open appears without navigating.
    visit(page, f"{ADMIN}/ui/runs")
    assert page.is_checked("#auto-refresh")
    new_id = call_invoice()
    page.wait_for_selector(f'#runs tr.run[data-id="{new_id}"]', timeout=WAIT_MS)
    check("auto_refresh")

    # One run: the private parameter and the _private field are shown as hidden.
    visit(page, f"{ADMIN}/ui/runs?trigger=invoice")
    navigate(page, f'tr.run[data-id="{INVOICE_RUN}"] a.run-link')
    assert page.url.endswith(f"/ui/runs/{INVOICE_RUN}"), page.url
    no_secret(page, page.url)
    assert page.inner_text("#run-decision").strip() == "allowed"
    request_body = page.inner_text("#capture-request pre.body")
    assert '"customer": "Contoso"' in request_body, request_body
    assert '"password"' not in request_body and "_private_note" not in request_body, request_body
    hidden = page.inner_text("#capture-request .hidden-fields")
    assert "password" in page.locator("#capture-request code.private-parameter").all_inner_texts(), hidden
    assert "_private" in hidden, hidden
    response_body = page.inner_text("#capture-response pre.body")
    assert "[redacted]" in response_body, response_body
    assert "Latency" in page.inner_text("#run-fields")
    shot(page, "run")
    check("run_private_parameter_hidden")

    visit(page, f"{ADMIN}/ui/runs/{SECURE_RUN}")
    assert "secure_inputs = true" in page.inner_text("#capture-request .secured")
    assert "secure_outputs = true" in page.inner_text("#capture-response .secured")
    check("run_secure_inputs_hidden")

    # Triggers: rules in words, injected references, counts.
    visit(page, f"{ADMIN}/ui/triggers")
    invoice = page.locator('section.trigger[data-trigger="invoice"]')
    assert "secret://files/flows#api_key" in invoice.locator(".rule-secrets").inner_text()
    assert "tenant_users of identity test" in invoice.locator(".rule-who").inner_text()
    assert "per 60s" in invoice.locator(".rule-rate_limit").inner_text()
    assert invoice.locator(".today").inner_text().startswith("2 allowed · 1 refused"), invoice.locator(".today").inner_text()
    assert "call" in invoice.locator(".metrics").inner_text()
    shot(page, "triggers")
    check("triggers_rules_and_counts")

    # Secrets: reference → triggers, last fetch, cache state; never a value.
    visit(page, f"{ADMIN}/ui/secrets")
    row = page.locator("#secrets tr.secret", has_text="secret://files/flows#api_key")
    assert "invoice" in row.inner_text(), row.inner_text()
    assert row.locator(".cache").inner_text().startswith("fresh"), row.locator(".cache").inner_text()
    hr = page.locator("#secrets tr.secret", has_text="secret://files/flows#hr_key")
    assert "not fetched yet" in hr.inner_text(), hr.inner_text()
    assert "invoice" in page.inner_text("#usage-report")
    shot(page, "secrets")
    check("secrets_usage")

    # Policy: version and the reload button, which posts to /reload.
    visit(page, f"{ADMIN}/ui/policy")
    version = page.inner_text("#policy-version")
    shot(page, "policy")
    page.click("#reload")
    # A hang guard, not a timing check: a reload compiles the policy on a blocking thread,
    # the slowest step of this script on a loaded machine.
    # An outcome, not the "Reloading…" shown while waiting: Playwright trims a plain
    # `has_text` string, so "Reload " would match that too.
    page.locator("#reload-result", has_text=re.compile(r"^(Policy |Reload (refused|failed))")).wait_for(
        timeout=3 * WAIT_MS
    )
    result = page.inner_text("#reload-result")
    outcome, _, new_version = result.removeprefix("Policy ").partition(": version ")
    assert outcome in ("swapped", "unchanged") and new_version, result
    assert page.inner_text("#policy-version") == new_version, (version, result)
    no_secret(page, "policy after reload")
    check("reload_button")

    # Phone width: no page scrolls sideways.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    small = phone.new_page()
    watch_console(small)
    for path in ["/ui/runs", f"/ui/runs/{INVOICE_RUN}", "/ui/triggers", "/ui/secrets", "/ui/policy"]:
        visit(small, f"{ADMIN}{path}")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width}px wide at phone width"
        if path == "/ui/runs":
            shot(small, "runs-phone")
    check("phone_width")
    phone.close()
    context.close()


def viewer_checks(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_console(page)
    visit(page, f"{VIEWER}/ui/policy")
    assert page.inner_text("#role") == "viewer"
    assert page.locator("#reload").count() == 0, "a viewer sees the reload button"
    assert page.locator("#no-reload").count() == 1
    assert "private_parameters" not in page.inner_text("#policy-view")
    check("viewer_has_no_reload_button")
    visit(page, f"{VIEWER}/ui/secrets")
    assert "hr_key" not in page.content()
    assert page.locator("#secrets-hidden").count() == 1
    check("viewer_private_injection_hidden")
    context.close()


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            admin_checks(browser)
            viewer_checks(browser)
        finally:
            browser.close()
    assert len(pages_checked) >= 15, pages_checked
    check("no_secret_in_any_page")
    assert not csp_violations, csp_violations
    check("no_csp_violation")
    print("ALL CHECKS PASSED", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
