//! Headless Chromium for the console's browser tests: where it is, a check that it and
//! Playwright are installed, and a turn to run it. Two browsers (and the npm provider's
//! login pages) on two cores at once slowed each other past their page waits, so the
//! browser tests of one binary take turns.

use std::path::PathBuf;
use tokio::sync::{Mutex, MutexGuard};

static TURN: Mutex<()> = Mutex::const_new(());

/// Where Chromium is: `FLOWGATE_CHROMIUM`, else Debian's `/usr/bin/chromium`.
#[allow(clippy::disallowed_methods, reason = "the test environment names the browser, as CI images do")]
pub(crate) fn chromium() -> PathBuf {
    std::env::var_os("FLOWGATE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Fails (never skips) when the browser or Playwright is missing, saying how to install
/// them; then waits for this test's turn with the browser, held until the guard drops.
pub(crate) async fn take_turn() -> MutexGuard<'static, ()> {
    const HOW: &str = "the console's browser test needs Debian's chromium and Playwright for Python: \
        run `bash scripts/deps/console.sh` (apt-get install -y chromium; pip install playwright)";
    assert!(chromium().exists(), "{} not found; {HOW}", chromium().display());
    let playwright = std::process::Command::new("python3").args(["-c", "import playwright.sync_api"]).output();
    assert!(playwright.is_ok_and(|o| o.status.success()), "python3 cannot import playwright; {HOW}");
    TURN.lock().await
}
