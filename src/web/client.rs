//! The upstream HTTP client: the body types sent upstream, the pooled HTTP/1.1 client
//! (rustls) and [`Upstreams`], the pools one gateway keeps.
//!
//! The settings of an upstream (URL, timeouts, TLS roots as a compiled rustls
//! configuration) are compiled with the policy (`policy/upstream.rs`); the pools live here,
//! because they are running state, not part of the policy. The `Gateway` owns one
//! `Upstreams`, built from its first policy: the shared pool (upstreams without their own
//! CA) lasts for the process; a trigger with its own CA gets its pool the first time the
//! policy it belongs to sends a call there, so each policy generation has its own, as when
//! the policy itself owned them.

use crate::policy::{Limits, Policy, Trigger};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Errors a forwarded body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A pooled client for upstream calls.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>;

/// The error of an upstream exchange.
pub type UpstreamError = hyper_util::client::legacy::Error;

/// Builds a pooled upstream client speaking TLS with `tls` (see
/// [`crate::policy::upstream_tls`]).
pub fn build_client(limits: &Limits, tls: &rustls::ClientConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(limits.upstream_connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(limits.idle_timeout)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// The upstream pools of one gateway.
pub struct Upstreams {
    /// The pooled client for upstreams without their own CA, built from the first
    /// policy's limits.
    shared: UpstreamClient,
    /// Pools of triggers with their own CA, for one policy generation.
    own: ArcSwap<OwnPools>,
}

/// Pools of triggers with their own CA, by trigger name, for the policy they belong to.
#[derive(Default)]
struct OwnPools {
    policy: Weak<Policy>,
    clients: HashMap<String, UpstreamClient>,
}

impl Upstreams {
    /// The pools for a gateway starting with `policy`.
    ///
    /// # Errors
    /// The TLS client configuration cannot be built.
    pub fn new(policy: &Policy) -> Result<Self, crate::policy::UpstreamTlsError> {
        let tls = crate::policy::upstream_tls(None)?;
        Ok(Self { shared: build_client(&policy.limits, &tls), own: ArcSwap::default() })
    }

    /// Sends `request` to `trigger`'s upstream, through the pool that trusts its CA.
    pub fn send(&self, policy: &Arc<Policy>, trigger: &Trigger, request: Request<UpstreamBody>) -> ResponseFuture {
        let Some(tls) = &trigger.upstream.tls else {
            return self.shared.request(request);
        };
        let own = self.own.load();
        let current = own.policy.as_ptr() == Arc::as_ptr(policy);
        if let Some(client) = own.clients.get(&trigger.name).filter(|_| current) {
            return client.request(request);
        }
        // First call of this trigger under this policy: its pool is built now (no I/O; the
        // TLS roots were read when the policy compiled). A pool of an older policy goes
        // once no call of that policy uses it.
        let client = build_client(&policy.limits, tls);
        let mut clients = if current { own.clients.clone() } else { HashMap::new() };
        clients.insert(trigger.name.clone(), client.clone());
        self.own.store(Arc::new(OwnPools { policy: Arc::downgrade(policy), clients }));
        client.request(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    /// A compiled policy with trigger `own` (its own CA) and trigger `shared`.
    fn policy(dir: &std::path::Path) -> Arc<Policy> {
        let pki = crate::tls::dev::DevPki::generate().unwrap();
        std::fs::write(dir.join("ca.crt"), pki.ca_cert_pem).unwrap();
        let text = "[server]\nplain_http_listen = \"127.0.0.1:0\"\n\n\
            [signed_urls]\nkeys = { k1 = \"file:url.key\" }\nprimary = \"k1\"\n\n\
            [[trigger]]\nname = \"own\"\npath = \"/own\"\nupstream = \"https://127.0.0.1:1\"\n\
            upstream_ca = \"ca.crt\"\nwho = \"anyone\"\n\n\
            [[trigger]]\nname = \"shared\"\npath = \"/shared\"\nupstream = \"http://127.0.0.1:1\"\nwho = \"anyone\"\n";
        std::fs::write(dir.join("url.key"), "k".repeat(48)).unwrap();
        let source = SourceFile { name: "p.toml".into(), base_dir: dir.to_path_buf(), text: text.into() };
        let (raw, source) = crate::policy::load_str(source).unwrap();
        Arc::new(crate::policy::compile(&raw, &source).unwrap())
    }

    fn trigger(policy: &Policy, path: &str) -> Arc<Trigger> {
        let path = crate::policy::normalize_path(path).unwrap();
        policy.routes.find(None, &path, &http::Method::POST).unwrap().trigger.clone()
    }

    fn request() -> Request<UpstreamBody> {
        Request::new(crate::web::full_body(Bytes::new()))
    }

    #[tokio::test]
    async fn a_trigger_with_its_own_ca_gets_one_pool_per_policy() {
        let dir = tempfile::tempdir().unwrap();
        let first = policy(dir.path());
        let upstreams = Upstreams::new(&first).unwrap();
        // Futures are lazy: nothing connects; only the pools are looked at.
        drop(upstreams.send(&first, &trigger(&first, "/shared"), request()));
        assert!(upstreams.own.load().clients.is_empty(), "the shared pool serves upstreams without a CA");
        drop(upstreams.send(&first, &trigger(&first, "/own"), request()));
        drop(upstreams.send(&first, &trigger(&first, "/own"), request()));
        let own = upstreams.own.load();
        assert_eq!(own.clients.len(), 1);
        assert_eq!(own.policy.as_ptr(), Arc::as_ptr(&first));

        // A reload compiles a new policy: its CA trigger gets a pool of its own.
        let second = policy(dir.path());
        drop(upstreams.send(&second, &trigger(&second, "/own"), request()));
        let own = upstreams.own.load();
        assert_eq!(own.clients.len(), 1);
        assert_eq!(own.policy.as_ptr(), Arc::as_ptr(&second));
    }
}
