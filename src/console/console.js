// The flowgate console's only script (served from the binary, same origin, no inline
// code): auto-refresh of the runs table, and the policy reload button. Everything it puts
// on the page is either HTML rendered (and escaped) by the server or set as textContent.
'use strict';

(function () {
  // Runs page: while "auto-refresh" is ticked, fetch this same URL every 5 s and swap in
  // the server-rendered table.
  const auto = document.getElementById('auto-refresh');
  if (auto) {
    const stamp = document.getElementById('refreshed');
    setInterval(async function () {
      if (!auto.checked) return;
      try {
        // Marked as the page's own request: it keeps no sign-in session from timing out.
        const response = await fetch(location.href, {
          cache: 'no-store',
          credentials: 'same-origin',
          headers: { 'X-Flowgate-Background': '1' },
        });
        if (!response.ok) return;
        const fresh = new DOMParser().parseFromString(await response.text(), 'text/html').getElementById('runs');
        const current = document.getElementById('runs');
        if (fresh && current) {
          current.replaceWith(document.importNode(fresh, true));
          if (stamp) stamp.textContent = 'refreshed ' + new Date().toLocaleTimeString();
        }
      } catch (error) {
        if (stamp) stamp.textContent = 'refresh failed';
      }
    }, 5000);
  }

  // Policy page: POST /reload exactly as the admin API expects it (JSON content type, so
  // no other site could send it without a preflight).
  const button = document.getElementById('reload');
  if (button) {
    const result = document.getElementById('reload-result');
    const version = document.getElementById('policy-version');
    button.addEventListener('click', async function () {
      button.disabled = true;
      result.textContent = 'Reloading…';
      try {
        // Signed in with a browser: the session's CSRF token goes back as a header.
        const csrf = document.querySelector('meta[name="flowgate-csrf"]');
        const headers = { 'Content-Type': 'application/json' };
        if (csrf) headers['X-Flowgate-Csrf'] = csrf.content;
        const response = await fetch('/reload', {
          method: 'POST',
          headers: headers,
          body: '{}',
          credentials: 'same-origin',
        });
        const body = await response.json();
        if (body.result === 'swapped' || body.result === 'unchanged') {
          result.textContent = 'Policy ' + body.result + ': version ' + body.version;
          if (version) version.textContent = body.version;
        } else if (body.result === 'refused') {
          result.textContent = 'Reload refused, version ' + body.version + ' keeps running:\n' + body.errors.join('\n');
        } else {
          result.textContent = 'Reload failed (' + response.status + '): ' + (body.error || 'unknown error');
        }
      } catch (error) {
        result.textContent = 'Reload failed: ' + error;
      } finally {
        button.disabled = false;
      }
    });
  }
})();
