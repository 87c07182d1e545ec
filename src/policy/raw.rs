//! The policy file as written by admins: the `Raw*` serde structs of its sections that
//! no single domain owns (server, limits, admin, triggers), the whole document
//! ([`RawPolicy`]), and reading a file into it. Each domain owns its own sections' types
//! (`[identity]` in `auth`, `[vault]` in `secrets`, `[audit]` in `audit`, ...); this file
//! only puts them together. Nothing here decides what a setting *means*: the compile
//! steps do, in [`crate::policy`] and in each domain.

use crate::audit::CaptureParts;
use crate::config::{ConfigError, Document, HumanDuration, SourceFile};
use crate::firewall::{IpRuleParts, RawIpRules, TrustedHeader};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

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
    pub audit: crate::audit::RawAudit,
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
    /// How many leading bits of an IPv6 client address make one "address" for every
    /// per-address budget: `max_connections_per_ip`, the pre-authentication shield and
    /// `rate_limit` rules with `key = "ip"`. One host is usually given a whole /64 and could
    /// otherwise rotate through it to multiply each budget. IPv4 addresses count one by one.
    /// 128 counts single IPv6 addresses. IP allow/deny rules always see the full address.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
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
    /// Behind a TLS-terminating proxy: the header in which a proxy of `trusted_proxies`
    /// names the caller's client certificate, and its format, for example
    /// `{ header = "x-forwarded-client-cert", format = "xfcc" }`. Believed only from
    /// `trusted_proxies` (from anyone else it is ignored), and removed from every request
    /// before forwarding. The proxy must verify the certificate; flowgate reads the identity.
    pub forwarded_client_cert: Option<crate::tls::forwarded::RawForwardedCert>,
    /// Send `Strict-Transport-Security` on every answer of the HTTPS listener, for example
    /// `{ max_age = "365days", include_subdomains = true }`. Off unless set.
    pub hsts: Option<RawHsts>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            plain_http_listen: None,
            trusted_proxies: Vec::new(),
            max_connections_per_ip: default_max_connections_per_ip(),
            ipv6_prefix: default_ipv6_prefix(),
            body_read_timeout: d30s(),
            body_min_rate: default_body_min_rate(),
            buffer_request_body: default_buffer_request_body(),
            trusted_header: TrustedHeader::default(),
            forwarded_client_cert: None,
            hsts: None,
        }
    }
}

fn default_max_connections_per_ip() -> usize {
    1_000
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_body_min_rate() -> u64 {
    1_024
}
fn default_buffer_request_body() -> u64 {
    64 * 1024
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
    /// `"optional"` (ask for a certificate; triggers with a certificate rule refuse calls
    /// without one) or `"required"` (refuse the handshake without one). Must be given
    /// whenever `client_ca` is: an unstated choice admitted callers without certificates.
    pub client_auth: Option<ClientAuth>,
    /// Lowest TLS version: `"1.2"` (default) or `"1.3"` (Mozilla's "modern" profile).
    pub min_version: Option<TlsVersion>,
    /// A DER OCSP response for the certificate, stapled to handshakes. The operator
    /// refreshes the file (before the response's `nextUpdate`); it is re-read with the
    /// certificate (file change, SIGHUP, reload).
    pub ocsp: Option<String>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// `[server] hsts`: the `Strict-Transport-Security` header.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    /// How long browsers keep to HTTPS, for example `"365days"`.
    pub max_age: HumanDuration,
    /// Also for every subdomain.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Ask to be preloaded into browsers (needs `include_subdomains` and a year or more).
    #[serde(default)]
    pub preload: bool,
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
    /// Longest time a response may wait for the caller to take more of it (a caller that
    /// stops reading, a zero HTTP/2 window); past it the connection is dropped, with its
    /// calls and their upstream connections. Judged by the gateway, not the caller.
    #[serde(default = "d30s")]
    pub send_timeout: HumanDuration,
    /// Calls in flight on one HTTP/2 connection at most (its `SETTINGS_MAX_CONCURRENT_STREAMS`);
    /// an HTTP/1.1 connection carries one at a time.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// Calls in flight at once for one authenticated caller (its rate-limit budget key:
    /// tenant and object id, issuer and subject, or one signed URL), over all connections;
    /// more → 429 `too_many_in_flight` with `Retry-After: 1`. Default 1024: automation
    /// callers are often one service principal calling with high concurrency (the default
    /// rate limit of 2000 per 60 s with slow flows can keep about a thousand calls open).
    #[serde(default = "default_max_calls_per_principal")]
    pub max_calls_per_principal: usize,
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
            send_timeout: d30s(),
            max_streams_per_connection: default_max_streams_per_connection(),
            max_calls_per_principal: default_max_calls_per_principal(),
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
fn default_max_streams_per_connection() -> u32 {
    100
}
fn default_max_calls_per_principal() -> usize {
    1_024
}
fn default_admin_max_connections() -> usize {
    64
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
    /// Open admin connections at most; more wait in the accept queue. The admin listener
    /// shares `[limits]`' header, idle and send timeouts with the main listener.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// Browser sign-in to the console through the admin identity's provider (OIDC
    /// authorization code flow with PKCE) and a short-lived session cookie. Needs
    /// `identity`.
    pub sign_in: Option<crate::signin::RawSignIn>,
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
            max_connections: default_admin_max_connections(),
            sign_in: None,
        }
    }
}

fn default_loopback_role() -> String {
    "administrator".to_owned()
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_owned()
}

/// `[[trigger]]`: one guarded trigger URL.
#[expect(clippy::struct_excessive_bools, reason = "the policy file's switches are booleans by design")]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// A unique name, used in logs, metrics and the run history.
    pub name: String,
    /// Only requests for this host (the `Host` header or `:authority`) match. Any host when unset.
    pub host: Option<String>,
    /// The path this trigger answers, for example `"/triggers/invoice"`. Paths compare
    /// ignoring case (Unicode-wide), percent-escapes and one trailing `/`; a segment ending
    /// with `.` or whitespace is refused (README, "Paths mean one thing").
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

    /// Who may call: `"anyone"` (signed URL), `"tenant_users"`, `"specific_users"` (bearer
    /// tokens), `"certificate"` (a verified client certificate alone; see `principals`) or
    /// `"webhook"` (deliveries signed by a `SaaS` sender, verified as `webhook` says).
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
    ///
    /// Certificate principals, with any `who`: `cert:sha256:HEX` (the SHA-256 thumbprint of
    /// the certificate's DER), `cert:subject:CN=billing,O=Contoso` (the subject in RFC 4514
    /// order), `cert:san-uri:spiffe://contoso/billing`, `cert:san-dns:NAME`. When any is
    /// listed the caller's client certificate must match one of them, in addition to what
    /// the token rules require (both, never either).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Require a verified client certificate (any the client CA signed, unless `cert:`
    /// principals narrow it) in addition to the token. Implied by `who = "certificate"`,
    /// `cert:` principals and `require_bound_token`.
    #[serde(default)]
    pub require_certificate: bool,
    /// Require certificate-bound access tokens (RFC 8705): the token must carry
    /// `cnf.x5t#S256` naming the client certificate of the call. A token that carries one
    /// must match the certificate whatever this says.
    #[serde(default)]
    pub require_bound_token: bool,
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
    /// when the trigger injects a secret, off otherwise. Response headers and trailers of a
    /// trigger that injects are scrubbed whatever this says.
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

    /// With `who = "webhook"`: how deliveries are verified, for example
    /// `{ scheme = "github", secret = "secret://kv/github#hook" }`. A webhook trigger's
    /// `max_body_bytes` defaults to 1 MiB: its body is read whole and verified before
    /// anything is sent upstream.
    pub webhook: Option<crate::webhook::RawWebhook>,
    /// What the trigger accepts from a caller beyond who it is: a JSON Schema for the
    /// body, media types, a body size, query and header rules (README, "Payload
    /// contracts"). Checked after authentication and the rate limit, before any secret is
    /// fetched or the upstream contacted.
    pub contract: Option<crate::contract::RawContract>,
}

impl RawTrigger {
    /// The trigger's IP fields, for the firewall's compile step.
    pub fn ip_rule_parts(&self) -> IpRuleParts<'_> {
        IpRuleParts {
            allow: &self.allow_ips,
            deny: &self.deny_ips,
            allow_files: &self.allow_ip_files,
            deny_files: &self.deny_ip_files,
            peer_allow: &self.peer_allow_ips,
            peer_deny: &self.peer_deny_ips,
        }
    }

    /// The trigger's capture options, for the audit's compile step.
    pub fn capture_parts(&self) -> CaptureParts<'_> {
        CaptureParts {
            capture: self.capture,
            secure_inputs: self.secure_inputs,
            secure_outputs: self.secure_outputs,
            private_parameters: &self.private_parameters,
            private_fields: &self.private_fields,
        }
    }
}

/// A trigger's auth fields, for [`crate::auth::compile_access`].
impl<'a> From<&'a RawTrigger> for crate::auth::TriggerAccessInput<'a> {
    fn from(trigger: &'a RawTrigger) -> Self {
        Self {
            name: &trigger.name,
            who: trigger.who,
            identity: trigger.identity.as_deref(),
            tenants: &trigger.tenants,
            principals: &trigger.principals,
            roles: trigger.roles.as_ref(),
            scopes: trigger.scopes.as_ref(),
            claims: &trigger.claims,
            forward_authorization: trigger.forward_authorization,
            forward_identity: trigger.forward_identity,
            certificate: crate::auth::certificate::CertificateFlags {
                require_certificate: trigger.require_certificate,
                require_bound_token: trigger.require_bound_token,
            },
        }
    }
}

fn default_methods() -> Vec<String> {
    vec!["POST".to_owned()]
}

/// How a trigger's `path` matches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// The request path must be `path` (ignoring case, escapes and a trailing `/`).
    #[default]
    Exact,
    /// The request path must start with `path` at a segment boundary (ignoring case and
    /// escapes).
    Prefix,
}

/// Reads and parses a policy file.
///
/// # Errors
/// Every problem found, each located as `FILE:LINE:COL`.
pub fn load_file(path: &Path) -> Result<(RawPolicy, SourceFile), Vec<ConfigError>> {
    load_str(crate::config::read_source(path)?)
}

/// Parses policy text: each top-level section, each `[[trigger]]`, each `[identity.X]`
/// and `[vault.X]` on its own, so one broken entry does not hide the errors of the others.
///
/// # Errors
/// Every syntax and shape problem found, each located.
pub fn load_str(source: SourceFile) -> Result<(RawPolicy, SourceFile), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut raw = RawPolicy::default();
    let document = Document::parse(&source)?;
    for section in document.sections() {
        match section.name() {
            "server" => section.read(&mut errors, |v| raw.server = v),
            "limits" => section.read(&mut errors, |v| raw.limits = v),
            "admin" => section.read(&mut errors, |v| raw.admin = v),
            "firewall" => section.read(&mut errors, |v| raw.firewall = v),
            "shield" => section.read(&mut errors, |v| raw.shield = v),
            "cluster" => section.read(&mut errors, |v| raw.cluster = v),
            "rate_limit" => section.read(&mut errors, |v| raw.rate_limit = Some(v)),
            "signed_urls" => section.read(&mut errors, |v| raw.signed_urls = Some(v)),
            "secrets" => section.read(&mut errors, |v| raw.secrets = v),
            "audit" => section.read(&mut errors, |v| raw.audit = v),
            "traces" => section.read(&mut errors, |v| raw.traces = v),
            "identity" => raw.identity = section.read_named(&mut errors),
            "vault" => raw.vault = section.read_named(&mut errors),
            "trigger" => raw.trigger = section.read_each::<RawTrigger>(&mut errors),
            _ => errors.push(section.unknown(TOP_LEVEL_KEYS)),
        }
    }
    drop(document);
    if errors.is_empty() { Ok((raw, source)) } else { Err(errors) }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "limits",
    "admin",
    "firewall",
    "shield",
    "cluster",
    "rate_limit",
    "identity",
    "signed_urls",
    "vault",
    "secrets",
    "audit",
    "traces",
    "trigger",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn load(text: &str) -> Result<RawPolicy, Vec<ConfigError>> {
        load_str(SourceFile { name: "p.toml".into(), base_dir: PathBuf::new(), text: text.into() }).map(|(raw, _)| raw)
    }

    #[test]
    fn unknown_key_is_located_with_a_suggestion() {
        let errors = load("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!((e.line, e.file.as_str()), (3, "p.toml"));
        assert!(e.hint.as_deref().unwrap().contains("`listen`"), "{e}");
    }

    #[test]
    fn errors_in_two_triggers_are_both_reported() {
        let text = "[[trigger]]\nname='a'\npaht='/a'\nupstream='http://x'\nwho='anyone'\n\n\
                    [[trigger]]\nname='b'\npath='/b'\nupstream='http://x'\nwho='anyone'\nmethdos=['GET']\n";
        let errors = load(text).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, 3);
        assert_eq!(errors[1].line, 12);
    }

    #[test]
    fn syntax_errors_are_located() {
        let errors = load("[server\nlisten = 1").unwrap_err();
        assert!(errors[0].line == 1, "{errors:?}");
    }

    #[test]
    fn unknown_section_suggests() {
        let errors = load("[triger]\n").unwrap_err();
        assert!(errors[0].hint.as_deref().unwrap().contains("trigger"));
    }
}
