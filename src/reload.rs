//! Policy hot reload: a debounced watch on the policy file's directory (editors replace
//! files rather than write them, so the file itself cannot be watched) and SIGHUP. Both
//! call [`Gateway::reload`], which swaps only on complete success; SIGHUP also reloads
//! the TLS certificate, and a change to the certificate files reloads it alone.

use crate::gateway::Gateway;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long file events settle before a reload: editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Something worth reloading changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Policy,
    Certificate,
}

/// Watches the policy file and the certificate files; keep the returned watcher alive.
///
/// # Errors
/// The OS refuses the watch.
pub fn watch_files(gateway: Arc<Gateway>, policy_path: &Path) -> notify::Result<notify::RecommendedWatcher> {
    let policy_path = absolute(policy_path);
    let cert_paths: Vec<PathBuf> = gateway
        .policy()
        .server
        .tls
        .as_ref()
        .map(|tls| {
            // The stapled OCSP response is refreshed like the certificate.
            let mut files = vec![absolute(&tls.files.cert), absolute(&tls.files.key)];
            files.extend(tls.files.ocsp.as_deref().map(absolute));
            files
        })
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::iter::once(&policy_path)
        .chain(cert_paths.iter())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let watched_policy = policy_path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            if *path == watched_policy {
                let _ = tx.send(Trigger::Policy);
            } else if cert_paths.contains(path) {
                let _ = tx.send(Trigger::Certificate);
            } else if is_atomic_swap(path) {
                // A Kubernetes ConfigMap or Secret volume changes every file at once by
                // swapping its `..data` link: the files' own paths see no event.
                let dir = path.parent();
                if dir == watched_policy.parent() {
                    let _ = tx.send(Trigger::Policy);
                }
                if cert_paths.iter().any(|cert| cert.parent() == dir) {
                    let _ = tx.send(Trigger::Certificate);
                }
            }
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut policy = first == Trigger::Policy;
            let mut certificate = first == Trigger::Certificate;
            // Debounce: collect everything that arrives while the writes settle.
            let deadline = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    next = rx.recv() => match next {
                        Some(Trigger::Policy) => policy = true,
                        Some(Trigger::Certificate) => certificate = true,
                        None => return,
                    },
                }
            }
            if policy {
                tracing::info!("policy file changed; reloading");
                // Failures are logged and counted by the reload itself.
                let _ = reload_blocking(&gateway).await;
            }
            if certificate && let Err(error) = gateway.reload_certificate() {
                tracing::error!(%error, "certificate reload failed; the old certificate stays");
            }
        }
    });
    Ok(watcher)
}

/// Reloads policy and certificate on every SIGHUP.
///
/// # Errors
/// The signal handler cannot be installed.
pub(crate) fn reload_on_sighup(gateway: Arc<Gateway>) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading policy and certificate");
            let _ = reload_blocking(&gateway).await;
            if let Err(error) = gateway.reload_certificate() {
                tracing::error!(%error, "certificate reload failed; the old certificate stays");
            }
        }
    });
    Ok(())
}

/// Runs a reload off the async workers, on the gateway's low-priority backstage thread
/// ([`Gateway::reload_backstage`]).
///
/// # Errors
/// The new policy's problems, each located; the running policy stays in place.
pub async fn reload_blocking(gateway: &Arc<Gateway>) -> crate::gateway::ReloadResult {
    gateway.reload_backstage().await
}

/// The link Kubernetes' atomic writer (`ConfigMap`, Secret and projected volumes) renames
/// into place, `..data`, which the visible files point through.
fn is_atomic_swap(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "..data")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
