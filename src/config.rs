//! The policy file as written by admins: `Raw*` serde structs and the loader that
//! turns TOML text into them, reporting every problem as `FILE:LINE:COL: message`.
//!
//! Nothing here decides what a setting *means*; cross-field rules live in
//! [`crate::policy::compile`]. Each section is deserialized on its own so that one
//! broken trigger does not hide the errors of the next.

mod diagnostics;
pub mod diff;
mod duration;
mod load;

pub use diagnostics::{ConfigError, Diagnostics, KeyPath, did_you_mean};
pub use duration::HumanDuration;
pub use load::{SourceFile, load_file, load_str};

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole policy file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Listeners, TLS material and trusted proxies.
    #[serde(default)]
    pub server: RawServer,
    /// Size and time limits; every one has a sane default.
    #[serde(default)]
    pub limits: RawLimits,
    /// The admin listener (health, readiness, metrics, policy, runs).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Global IP rules, checked before any trigger's own rules.
    #[serde(default)]
    pub firewall: RawIpRules,
    /// The pre-authentication flood shield (refused credentials per client address).
    #[serde(default)]
    pub shield: crate::ratelimit::RawShield,
    /// Sharing rate-limit budgets between replicas.
    #[serde(default)]
    pub cluster: crate::ratelimit::RawCluster,
    /// The rate limit of triggers that do not set their own, or `"off"`. Unset: the
    /// built-in default, `{ calls = 2000, period = "60s", key = "principal" }`.
    #[serde(default)]
    pub rate_limit: Option<crate::ratelimit::RawRateLimitSetting>,
    /// Token issuers (issuer families), by name.
    #[serde(default)]
    pub identity: BTreeMap<String, crate::auth::RawIdentity>,
    /// Keys for signed trigger URLs (`who = "anyone"`).
    #[serde(default)]
    pub signed_urls: Option<crate::auth::RawSignedUrls>,
    /// Secret stores, by name; referenced as `secret://NAME/...`.
    #[serde(default)]
    pub vault: BTreeMap<String, crate::secrets::RawVault>,
    /// Secret cache tuning.
    #[serde(default)]
    pub secrets: crate::secrets::RawSecretCache,
    /// Run history (audit records).
    #[serde(default)]
    pub audit: RawAudit,
    /// OpenTelemetry span export (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub traces: crate::trace::RawTraces,
    /// The guarded trigger URLs.
    #[serde(default)]
    pub trigger: Vec<RawTrigger>,
}

/// `[server]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// HTTPS listen address, for example `"0.0.0.0:8443"`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Certificate and key for the HTTPS listener.
    pub tls: Option<RawTls>,
    /// A plain-HTTP listen address: only for deployments behind a TLS-terminating load
    /// balancer. Off unless set.
    pub plain_http_listen: Option<String>,
    /// Proxies whose forwarding header (`trusted_header`) is believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Open connections from one client address (the TCP peer) at most, so that one address
    /// cannot take every slot of `[limits] max_connections`. Further connections from that
    /// address are closed at once, before TLS, and counted in
    /// `flowgate_connections_refused_total{reason="per_ip"}`. Peers in `trusted_proxies`
    /// (load balancers speaking for many clients) are exempt. Applies to new connections
    /// after a reload.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// How long a request body may keep flowgate waiting: a pause longer than this, or a body
    /// that falls behind `body_min_rate` once this allowance is spent, is answered with 408
    /// and the connection closed. Only time spent waiting for the caller counts (not time the
    /// upstream takes to accept the bytes).
    #[serde(default = "d30s")]
    pub body_read_timeout: HumanDuration,
    /// Slowest average rate, in bytes per second, a request body may arrive at: every byte
    /// received adds `1/body_min_rate` seconds to the body's `body_read_timeout` allowance.
    /// 0 leaves only the pause rule of `body_read_timeout`.
    #[serde(default = "default_body_min_rate")]
    pub body_min_rate: u64,
    /// Request bodies up to this many bytes are read whole before the upstream sees the
    /// request, so a body that turns out malformed, too slow or too large never reaches it.
    /// Larger bodies stream; if one then turns out malformed the upstream request is aborted
    /// and that upstream connection is not reused. 0 streams every body.
    #[serde(default = "default_buffer_request_body")]
    pub buffer_request_body: u64,
    /// The one header that names the client behind `trusted_proxies`:
    /// `"x-forwarded-for"` (default) or `"forwarded"` (RFC 7239). The other header is
    /// ignored for the client address (most load balancers pass a caller's copy through
    /// untouched) and, like every forwarding header, never reaches the upstream.
    #[serde(default)]
    pub trusted_header: TrustedHeader,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            plain_http_listen: None,
            trusted_proxies: Vec::new(),
            max_connections_per_ip: default_max_connections_per_ip(),
            body_read_timeout: d30s(),
            body_min_rate: default_body_min_rate(),
            buffer_request_body: default_buffer_request_body(),
            trusted_header: TrustedHeader::default(),
        }
    }
}

fn default_max_connections_per_ip() -> usize {
    1_000
}
fn default_body_min_rate() -> u64 {
    1_024
}
fn default_buffer_request_body() -> u64 {
    64 * 1024
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TrustedHeader {
    /// `X-Forwarded-For`: what most load balancers append to.
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=...`).
    #[serde(rename = "forwarded")]
    Forwarded,
}

fn default_listen() -> String {
    "127.0.0.1:8443".to_owned()
}

/// `[server.tls]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first. Relative paths are relative to the policy file.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// PEM CA bundle for client certificates; enables mutual TLS.
    pub client_ca: Option<String>,
    /// `"optional"` (default when `client_ca` is set) or `"required"`.
    pub client_auth: Option<ClientAuth>,
}

/// Whether a client certificate is asked for or demanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Ask for a certificate; accept callers without one.
    Optional,
    /// Refuse the handshake without a valid certificate.
    Required,
}

/// `[limits]`: every limit has a default sized for trigger traffic.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Time allowed to send the request head; slower clients are disconnected.
    #[serde(default = "d10s")]
    pub header_read_timeout: HumanDuration,
    /// Largest request head, in bytes; larger → 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes, counted while streaming; larger → 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time to connect to an upstream; exceeded → 502.
    #[serde(default = "d5s")]
    pub upstream_connect_timeout: HumanDuration,
    /// Time for the upstream's response head to arrive; exceeded → 504.
    #[serde(default = "d30s")]
    pub upstream_response_timeout: HumanDuration,
    /// Open client connections at most; more wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default = "d60s")]
    pub idle_timeout: HumanDuration,
    /// On SIGTERM, in-flight calls get this long to finish.
    #[serde(default = "d30s")]
    pub shutdown_grace: HumanDuration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: d10s(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            upstream_connect_timeout: d5s(),
            upstream_response_timeout: d30s(),
            max_connections: default_max_connections(),
            idle_timeout: d60s(),
            shutdown_grace: d30s(),
        }
    }
}

fn d5s() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn d10s() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn d30s() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn d60s() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_max_connections() -> usize {
    10_000
}

/// `[admin]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address (plain HTTP). Loopback by default; `"off"` disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Without `identity`: the role of loopback callers (`viewer`, `owner` or
    /// `administrator`, default `administrator`). Other callers are refused.
    #[serde(default = "default_loopback_role")]
    pub loopback_role: String,
    /// An `[identity.NAME]` whose bearer tokens admin callers must present; enables
    /// role mapping and non-loopback callers.
    pub identity: Option<String>,
    /// Token `roles` claim values granting each admin role, for example
    /// `{ viewer = ["Flowgate.Viewer"], owner = ["Flowgate.Owner"], administrator = ["Flowgate.Admin"] }`.
    #[serde(default)]
    pub token_roles: BTreeMap<String, Vec<String>>,
    /// Tenants (GUIDs) whose tokens may use the admin API. Defaults to the identity's
    /// tenants; required when the identity accepts every tenant (a `{tenant}` issuer).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// When set, only these principals may use the admin API (same forms as a trigger's
    /// `principals`), and still need a mapped role. Empty (default): any principal of the
    /// tenants holding a mapped role.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Host names or addresses (no port) the admin listener also answers to, for example
    /// `["flowgate-admin.internal"]`. It always answers to `localhost`, loopback addresses
    /// and the address a connection reached it on; any other `Host` is refused (421), so a
    /// web page whose name was rebound to this address (DNS rebinding) cannot read it.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            loopback_role: default_loopback_role(),
            identity: None,
            token_roles: BTreeMap::new(),
            tenants: Vec::new(),
            principals: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn default_loopback_role() -> String {
    "administrator".to_owned()
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_owned()
}

/// CIDR allow/deny lists, used globally (`[firewall]`) and per trigger.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIpRules {
    /// Client addresses admitted (CIDRs or bare addresses). Empty means any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses refused; deny wins over allow.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Files with one CIDR per line (`#` comments) added to `allow_ips`.
    #[serde(default)]
    pub allow_ip_files: Vec<String>,
    /// Files with one CIDR per line added to `deny_ips`.
    #[serde(default)]
    pub deny_ip_files: Vec<String>,
    /// Direct peers (the TCP connection's address) admitted. Empty means any.
    #[serde(default)]
    pub peer_allow_ips: Vec<String>,
    /// Direct peers refused.
    #[serde(default)]
    pub peer_deny_ips: Vec<String>,
}

/// `[audit]`: where run records go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// JSON-lines file for run records (relative to the policy file). Unset: no file.
    pub file: Option<String>,
    /// Rotate the file when it reaches this many bytes.
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_audit_keep")]
    pub keep: usize,
    /// Also write run records to stdout.
    #[serde(default)]
    pub stdout: bool,
    /// Records kept in memory for the admin API (`/runs`); 0 keeps none.
    #[serde(default = "default_audit_ring")]
    pub ring: usize,
    /// Bytes the in-memory records may take at most (each record is kept as its JSON
    /// text); the oldest are evicted first and counted in
    /// `flowgate_audit_ring_evictions_total`. Default 64 MiB.
    #[serde(default = "default_audit_ring_max_bytes")]
    pub ring_max_bytes: usize,
    /// Body bytes captured at most per message (triggers with `capture = true`); longer
    /// bodies are stored as a hash and length.
    #[serde(default = "default_audit_capture_max_bytes")]
    pub capture_max_bytes: usize,
    /// Records waiting for the writer at most; more are dropped and counted
    /// (`flowgate_audit_dropped_total`) rather than slowing calls down.
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
    /// A failing sink (disk full) is logged at most once per this interval; every failure
    /// is counted in `flowgate_audit_write_errors_total`.
    #[serde(default = "d60s")]
    pub error_log_interval: HumanDuration,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            file: None,
            max_bytes: default_audit_max_bytes(),
            keep: default_audit_keep(),
            stdout: false,
            ring: default_audit_ring(),
            ring_max_bytes: default_audit_ring_max_bytes(),
            capture_max_bytes: default_audit_capture_max_bytes(),
            queue: default_audit_queue(),
            error_log_interval: d60s(),
        }
    }
}

fn default_audit_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_audit_keep() -> usize {
    5
}
fn default_audit_ring() -> usize {
    10_000
}
fn default_audit_ring_max_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_audit_capture_max_bytes() -> usize {
    64 * 1024
}
fn default_audit_queue() -> usize {
    8192
}

/// `[[trigger]]`: one guarded trigger URL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// A unique name, used in logs, metrics and the run history.
    pub name: String,
    /// Only requests for this host (the `Host` header or `:authority`) match. Any host when unset.
    pub host: Option<String>,
    /// The path this trigger answers, for example `"/triggers/invoice"`.
    pub path: String,
    /// `"exact"` (default) or `"prefix"`: with `prefix`, the rest of the path is appended
    /// to the upstream URL's path.
    #[serde(default)]
    pub path_match: PathMatch,
    /// Methods accepted; others get 405 with `Allow`. Default `["POST"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Where admitted calls go. May carry its own path and query; the caller cannot
    /// override a query parameter set here. A credential carried in the path (Slack,
    /// Teams or Discord webhook URLs) is taken from a vault with a `{{secret://…}}` part,
    /// for example `"https://hooks.slack.com/services/{{secret://kv/slack#path}}"`: the
    /// value must be made of path characters (no empty, `.` or `..` segment), and only the
    /// reference is ever shown (logs, `/policy`, run records).
    pub upstream: String,
    /// Extra PEM CA bundle trusted for this upstream, beside the system roots.
    pub upstream_ca: Option<String>,
    /// Overrides `[limits] max_body_bytes` for this trigger.
    pub max_body_bytes: Option<u64>,
    /// Overrides `[limits] upstream_response_timeout` for this trigger.
    pub upstream_response_timeout: Option<HumanDuration>,

    /// Who may call: `"anyone"` (signed URL), `"tenant_users"` or `"specific_users"`.
    pub who: crate::auth::Who,
    /// The `[identity.NAME]` whose tokens are accepted.
    pub identity: Option<String>,
    /// Tenants (GUIDs) whose principals are accepted. Defaults to the identity's tenants.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Principals accepted with `who = "specific_users"`: `oid:GUID`; `sub:SUBJECT` (or
    /// `sub:ISSUER#SUBJECT` when the identity has several issuers); `upn:NAME`
    /// (case-insensitive, matches only the `upn` claim, needs tenants); `app:CLIENT-ID` (the
    /// application calling as itself: an app-only token); `users_of_app:CLIENT-ID` (users
    /// signed in through that application). Empty means nobody.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Required app roles (`roles` claim).
    pub roles: Option<crate::auth::RawRequirement>,
    /// Required delegated scopes (`scp` claim, space-separated).
    pub scopes: Option<crate::auth::RawRequirement>,
    /// Claims that must equal the given value exactly, for example `{ idtyp = "app" }`.
    /// Rules on `email`, `preferred_username` or `unique_name` are refused: those claims are
    /// mutable and not verified, so anyone could meet them.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Forward the caller's `Authorization` header upstream. Off by default.
    #[serde(default)]
    pub forward_authorization: bool,
    /// Send the verified identity upstream as `X-Flowgate-Tenant`, `-Principal`,
    /// `-App-Id` and `-Roles` headers.
    #[serde(default)]
    pub forward_identity: bool,

    /// Client address rules for this trigger.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses refused for this trigger; deny wins.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Files of CIDRs added to `allow_ips`.
    #[serde(default)]
    pub allow_ip_files: Vec<String>,
    /// Files of CIDRs added to `deny_ips`.
    #[serde(default)]
    pub deny_ip_files: Vec<String>,
    /// Direct peers admitted for this trigger.
    #[serde(default)]
    pub peer_allow_ips: Vec<String>,
    /// Direct peers refused for this trigger; deny wins.
    #[serde(default)]
    pub peer_deny_ips: Vec<String>,
    /// Per-principal pinning: a principal (as in `principals`) accepted only from these CIDRs.
    #[serde(default)]
    pub principal_ips: BTreeMap<String, Vec<String>>,

    /// Rate limit for this trigger, or `"off"` (no limit; shown by `flowgate check`).
    /// Unset: the global `rate_limit`, else the built-in default
    /// `{ calls = 2000, period = "60s", key = "principal" }`.
    pub rate_limit: Option<crate::ratelimit::RawRateLimitSetting>,

    /// Values written into the upstream request.
    #[serde(default)]
    pub inject: crate::secrets::RawInject,
    /// Replace injected secret values echoed by the upstream in its response body (raw,
    /// percent-, JSON- or HTML-escaped; a compressed body is decoded first). Default: on
    /// when the trigger injects a secret, off otherwise. Response headers of a trigger that
    /// injects are scrubbed whatever this says.
    pub scrub_responses: Option<bool>,

    /// Record request and response headers and bodies in the run history.
    #[serde(default)]
    pub capture: bool,
    /// Replace the captured request with a marker.
    #[serde(default)]
    pub secure_inputs: bool,
    /// Replace the captured response with a marker.
    #[serde(default)]
    pub secure_outputs: bool,
    /// JSON field names dropped at any depth from captured bodies (case-insensitive), and
    /// hidden from viewers on the admin API's `/policy`.
    #[serde(default)]
    pub private_parameters: Vec<String>,
    /// Options of this trigger hidden from viewers on the admin API's `/policy` (owners and
    /// administrators see them), for example `["upstream", "inject.headers"]`.
    #[serde(default)]
    pub private_fields: Vec<String>,
}

fn default_methods() -> Vec<String> {
    vec!["POST".to_owned()]
}

/// How a trigger's `path` matches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// The request path must equal `path`.
    #[default]
    Exact,
    /// The request path must start with `path` at a segment boundary.
    Prefix,
}
