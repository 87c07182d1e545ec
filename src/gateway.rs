//! The [`Gateway`] value: the running policy behind one atomic pointer, plus the state
//! that must outlive a policy swap (TLS certificate, the per-feature stores, the upstream
//! connection pools). No globals: everything a request needs hangs off this value.

mod backstage;
mod retired;

use crate::config::ConfigError;
use crate::policy::{self, Policy};
use crate::tls::ServerTls;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything one flowgate instance runs on.
pub struct Gateway {
    policy: ArcSwap<Policy>,
    /// The policy file, when the policy came from one (reload re-reads it).
    policy_path: Option<PathBuf>,
    /// The HTTPS listener's TLS (certificate and client-certificate settings), set once
    /// the listener exists.
    tls: OnceLock<Arc<ServerTls>>,
    /// Serializes reloads (file watch, SIGHUP and the admin API may race).
    reload_lock: Mutex<()>,
    /// Reload requests waiting for the next backstage compile (they share its result).
    reload_waiters: Mutex<Vec<tokio::sync::oneshot::Sender<ReloadResult>>>,
    /// The low-priority thread that compiles reloads and frees replaced policies.
    backstage: backstage::Backstage,
    /// Replaced policies, freed off the serving threads once no call holds them.
    retired: retired::Retired<Policy>,
    ready: AtomicBool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The one clock: the limiters, the shield, token checks and run records read it.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The run history.
    pub audit: crate::audit::AuditLog,
    /// Signing keys of every identity, and the verified-token cache.
    pub key_stores: crate::auth::KeyStores,
    /// Rate-limit budgets (local, or shared through Redis).
    pub limiters: crate::ratelimit::Limiters,
    /// The pre-authentication flood shield.
    pub shield: crate::ratelimit::Shield,
    /// Calls in flight per authenticated caller (`[limits] max_calls_per_principal`).
    pub in_flight: Arc<crate::ratelimit::InFlight>,
    /// Cached secret values.
    pub secrets: crate::secrets::SecretStore,
    /// Span export, when `[traces]` asks for it (built at start).
    pub spans: Option<crate::trace::SpanExport>,
    /// The per-call request metrics' handles.
    pub request_metrics: crate::telemetry::RequestMetrics,
    /// The upstream connection pools; the shared one takes the first policy's limits.
    pub upstreams: crate::web::Upstreams,
    /// The console's sign-ins in progress and signed-in sessions.
    pub sessions: crate::signin::Sessions,
    /// Webhook deliveries already forwarded (in memory, or shared through Redis).
    pub replay_guard: crate::webhook::ReplayGuard,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new policy is running.
    Swapped {
        /// Its version.
        version: String,
    },
    /// The file compiled to the policy already running.
    Unchanged {
        /// The running version.
        version: String,
    },
}

/// What a reload answers: what it did, or every problem of the new file.
pub type ReloadResult = Result<ReloadOutcome, Vec<ConfigError>>;

/// Why a gateway could not start on a compiled policy.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The run history's file cannot be opened.
    #[error("cannot open the run history: {0}")]
    RunHistory(#[source] std::io::Error),
    /// The Redis settings of the shared rate limiter are unusable.
    #[error("cannot set up the rate limiter: {0}")]
    RateLimiter(#[source] crate::ratelimit::RedisLimiterError),
    /// The span exporter cannot start (its reason, as the exporter words it).
    #[error("{0}")]
    Traces(#[source] crate::trace::ExportStartError),
    /// The upstream client cannot be built.
    #[error("cannot build the upstream client: {0}")]
    Upstream(#[source] crate::policy::UpstreamTlsError),
}

impl Gateway {
    /// A gateway running `policy`. `policy_path` is re-read on reload. Must run inside
    /// the tokio runtime: it starts the key refresh and housekeeping tasks.
    ///
    /// # Errors
    /// The run history cannot be opened, the Redis settings are unusable, the span
    /// exporter cannot start, or the upstream client cannot be built.
    pub fn new(policy: Policy, policy_path: Option<PathBuf>) -> Result<Arc<Self>, StartError> {
        let upstreams = crate::web::Upstreams::new(&policy).map_err(StartError::Upstream)?;
        let metrics = crate::telemetry::metrics_handle();
        let audit = crate::audit::AuditLog::new(&policy.audit).map_err(StartError::RunHistory)?;
        publish_version(None, &policy.version);
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock::default());
        let limiters =
            crate::ratelimit::Limiters::new(&policy.cluster, clock.clone()).map_err(StartError::RateLimiter)?;
        let shield = crate::ratelimit::Shield::with_clock(policy.shield, clock.clone());
        let replay_guard =
            crate::webhook::ReplayGuard::new(&policy.cluster, crate::webhook::replay::DEFAULT_MEMORY_BYTES)
                .map_err(|e| StartError::RateLimiter(e.into()))?;
        let key_stores = crate::auth::KeyStores::with_clock(clock.clone());
        key_stores.start_refresh(policy.identities.values());
        let spans =
            policy.traces.as_ref().map(crate::trace::SpanExport::start).transpose().map_err(StartError::Traces)?;
        let gateway = Arc::new(Self {
            policy: ArcSwap::from_pointee(policy),
            policy_path,
            tls: OnceLock::new(),
            reload_lock: Mutex::new(()),
            reload_waiters: Mutex::default(),
            backstage: backstage::Backstage::default(),
            retired: retired::Retired::default(),
            ready: AtomicBool::new(false),
            metrics,
            clock,
            audit,
            key_stores,
            limiters,
            shield,
            in_flight: Arc::default(),
            secrets: crate::secrets::SecretStore::new(),
            spans,
            request_metrics: crate::telemetry::RequestMetrics::new(),
            upstreams,
            sessions: crate::signin::Sessions::default(),
            replay_guard,
        });
        start_housekeeping(&gateway);
        Ok(gateway)
    }

    /// The running policy. A call loads it once and keeps it to the end, so a reload
    /// never changes the rules under a call in flight.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Remembers the HTTPS listener's TLS so reloads can replace its certificate and
    /// client-certificate settings.
    pub fn attach_tls(&self, tls: Arc<ServerTls>) {
        let _ = self.tls.set(tls);
    }

    /// Marks the gateway ready (policy compiled and listeners bound) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// True once listeners are bound and until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Re-reads and compiles the policy file (and every file it names); swaps it in only on
    /// complete success. Blocking (file reads, compiling): async callers use
    /// [`Gateway::reload_backstage`]. On
    /// failure the running policy stays, the errors are returned (and logged by callers),
    /// and `flowgate_policy_reloads_total{result="failed"}` counts it.
    ///
    /// # Errors
    /// Every problem of the new file, located.
    pub fn reload(&self) -> ReloadResult {
        let _guard = self.reload_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(path) = &self.policy_path else {
            return Ok(ReloadOutcome::Unchanged { version: self.policy().version.clone() });
        };
        let compiled = policy::load(path);
        let new = match compiled {
            Ok(new) => new,
            Err(errors) => {
                metrics::counter!("flowgate_policy_reloads_total", "result" => "failed").increment(1);
                for error in &errors {
                    tracing::error!(%error, "policy reload refused; the running policy stays");
                }
                return Err(errors);
            }
        };
        Ok(self.swap(new))
    }

    /// Reloads on the backstage thread, below the serving threads' CPU priority, so a large
    /// policy's compile does not take their time. Requests that arrive while a reload waits
    /// to start join it and share its answer: a burst of file events or signals costs one
    /// compile more, not one each, and every request is answered by a compile that began
    /// after it was made.
    ///
    /// # Errors
    /// Every problem of the new file, located; the running policy stays.
    pub async fn reload_backstage(self: &Arc<Self>) -> ReloadResult {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let first_waiter = {
            let mut waiters = self.reload_waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            waiters.push(answer);
            waiters.len() == 1
        };
        if first_waiter {
            let gateway = self.clone();
            self.backstage.run(move || {
                let waiters = std::mem::take(
                    &mut *gateway.reload_waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                let result = gateway.reload();
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            });
        }
        answered.await.unwrap_or_else(|_| {
            tracing::error!("the reload stopped before answering; the running policy stays");
            Ok(ReloadOutcome::Unchanged { version: self.policy().version.clone() })
        })
    }

    /// Swaps in a compiled policy (and its certificate). An identical policy text is swapped
    /// in too: files it names (IP lists, keys, CA bundles) may have changed, and every
    /// piece of state that must survive is keyed outside the policy.
    pub fn swap(&self, new: Policy) -> ReloadOutcome {
        let old = self.policy();
        if let (Some(serving), Some(tls)) = (self.tls.get(), &new.server.tls) {
            // New handshakes get the new certificate and client-certificate settings; open
            // connections keep what they negotiated, unless the new rules are stricter
            // (`ServerTls::apply` closes them then).
            if let Err(error) = serving.apply((*tls.certified_key).clone(), tls.client_certs.as_ref(), tls.tls13_only) {
                tracing::error!(%error, "the TLS settings could not be applied; the old ones stay");
            }
        }
        if old.server.listen != new.server.listen
            || old.server.plain_http_listen != new.server.plain_http_listen
            || old.admin_listen != new.admin_listen
            || old.server.tls.is_some() != new.server.tls.is_some()
        {
            tracing::warn!("listen addresses or TLS on/off changed; they take effect at the next restart");
        }
        if old.limits.max_connections != new.limits.max_connections {
            tracing::warn!("[limits] max_connections changes take effect at the next restart");
        }
        if old.admin.max_connections != new.admin.max_connections {
            tracing::warn!("[admin] max_connections changes take effect at the next restart");
        }
        if old.audit != new.audit {
            self.audit.reconfigure(&new.audit);
        }
        if old.cluster != new.cluster || old.shield != new.shield {
            // Budgets live in these; rebuilding them would forget who spent what.
            tracing::warn!("[cluster] and [shield] changes take effect at the next restart");
        }
        if old.traces != new.traces {
            tracing::warn!("[traces] changes take effect at the next restart");
        }
        self.key_stores.start_refresh(new.identities.values());
        self.secrets.retain_vaults(&new.vaults);
        let version = new.version.clone();
        publish_version(Some(&old.version), &version);
        self.policy.store(Arc::new(new));
        // Calls in flight keep the old policy; whichever ends last must not free it on a
        // serving thread (a large policy takes milliseconds to free).
        self.retired.hold(old);
        self.retired.release_unused();
        metrics::counter!("flowgate_policy_reloads_total", "result" => "ok").increment(1);
        tracing::info!(version = %version, "policy reloaded");
        ReloadOutcome::Swapped { version }
    }

    /// Reloads only the TLS certificate from the running policy's files (certificate
    /// rotation without a policy change).
    ///
    /// # Errors
    /// The files cannot be loaded; the old certificate stays.
    pub fn reload_certificate(&self) -> Result<(), crate::tls::TlsError> {
        let policy = self.policy();
        if let (Some(serving), Some(tls)) = (self.tls.get(), &policy.server.tls) {
            serving.cert().replace(crate::tls::load_certified_key(&tls.files)?);
            tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded");
        }
        Ok(())
    }
}

/// Periodic upkeep that keeps per-key state bounded: idle rate-limit keys and shield
/// entries are dropped, and replaced policies no call uses are freed (on the backstage
/// thread). Stops when the gateway is dropped.
fn start_housekeeping(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let Some(gateway) = weak.upgrade() else { return };
            gateway.limiters.sweep();
            gateway.shield.retain_recent();
            if !gateway.retired.is_empty() {
                let backstage_gateway = gateway.clone();
                gateway.backstage.run(move || {
                    backstage_gateway.retired.release_unused();
                });
            }
        }
    });
}

fn publish_version(old: Option<&str>, new: &str) {
    if let Some(old) = old {
        metrics::gauge!("flowgate_policy_info", "version" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("flowgate_policy_info", "version" => new.to_owned()).set(1.0);
}
