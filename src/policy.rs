//! The compiled, immutable policy: everything a request needs, built once from the
//! admins' TOML and swapped in atomically by [`crate::gateway::Gateway`].
//!
//! `compile()` assembles the domains: it reads the document (`raw`: the sections no
//! single domain owns, put together with each domain's own `Raw*` types), hands each
//! domain its part (a domain's own rules live in its compile step), checks the rules that
//! span domains (a trigger naming an identity or vault that exists, admin settings), and
//! reports all problems at once, each located in the file. `diff` compares two policy
//! texts and prints the schema. Nothing here is recomputed per request.

pub mod diff;
mod path;
mod raw;
mod routes;
pub mod summary;
pub mod tls_options;
mod trigger;
mod upstream;
mod view;

use crate::auth::AdminRole;
pub use path::{NormalPath, PathRefusal, normalize as normalize_path};
pub use raw::{
    ClientAuth, PathMatch, RawAdmin, RawHsts, RawLimits, RawPolicy, RawServer, RawTls, RawTrigger, TlsVersion,
    load_file, load_str,
};
pub use routes::{RouteMatch, RouteMiss, Routes};
pub use trigger::Trigger;
pub use upstream::{Upstream, UpstreamTlsError, UpstreamUriError, upstream_tls};
pub use view::{is_secret_reference, policy_view, policy_view_table};

use crate::config::{ConfigError, Diagnostics, KeyPath, SourceFile};
use crate::ratelimit::{LimitSource, RateLimitRule, RawRateLimitSetting};
use crate::tls::{CertFiles, ClientCertPolicy};
use http::Method;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One compiled policy. Cheap to share (`Arc`); never mutated after `compile`.
pub struct Policy {
    /// A short hash of the policy text: the same text always has the same version.
    pub version: String,
    /// The file it came from (for messages).
    pub source_name: String,
    /// Listeners and TLS.
    pub server: ServerSettings,
    /// Size and time limits.
    pub limits: Limits,
    /// Guards of the network edge from `[server]`: per-address connections, body pace,
    /// body buffering.
    pub edge: Edge,
    /// The admin listener's address, if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Who may use the admin API.
    pub admin: AdminAccess,
    /// Trigger lookup by host, path and method.
    pub routes: Routes,
    /// Where run records go.
    pub audit: crate::audit::AuditConfig,
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: crate::firewall::TrustedProxies,
    /// Global IP rules, checked before any trigger's own.
    pub firewall: crate::firewall::IpRules,
    /// The pre-authentication shield.
    pub shield: crate::ratelimit::ShieldSettings,
    /// Budget sharing between replicas.
    pub cluster: crate::ratelimit::ClusterSettings,
    /// Span export, when `[traces] otlp_endpoint` is set (restart-only).
    pub traces: Option<crate::trace::ExportSettings>,
    /// Token issuers by name.
    pub identities: BTreeMap<String, Arc<crate::auth::Identity>>,
    /// Secret stores (with the cache settings).
    pub vaults: Arc<crate::secrets::Vaults>,
    /// Keys of signed trigger URLs (for `flowgate sign-url`).
    pub signed_urls: Option<crate::auth::SignedUrlKeys>,
    /// The policy text, for the admin API's redacted view (never shown unredacted).
    pub text: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("triggers", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// Listener settings.
pub struct ServerSettings {
    /// HTTPS listen address (when TLS is configured).
    pub listen: SocketAddr,
    /// TLS material, loaded and checked at compile time.
    pub tls: Option<TlsSettings>,
    /// Plain-HTTP listen address, only when asked for.
    pub plain_http_listen: Option<SocketAddr>,
    /// The forwarding header believed from trusted proxies.
    pub trusted_header: crate::firewall::TrustedHeader,
    /// The header a trusted proxy names the caller's client certificate in.
    pub forwarded_client_cert: Option<crate::tls::forwarded::ForwardedCert>,
    /// The `Strict-Transport-Security` value sent on HTTPS answers, when asked for.
    pub hsts: Option<http::HeaderValue>,
}

/// The HTTPS listener's certificate and client-certificate policy.
pub struct TlsSettings {
    /// Where the certificate came from (watched for changes).
    pub files: CertFiles,
    /// The loaded certificate and key.
    pub certified_key: Arc<CertifiedKey>,
    /// Client certificates, when mutual TLS is on.
    pub client_certs: Option<ClientCertPolicy>,
    /// TLS 1.3 only (`min_version = "1.3"`).
    pub tls13_only: bool,
}

/// Limits, with defaults from [`RawLimits`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for the request head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Largest request body (per trigger overridable).
    pub max_body_bytes: u64,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Upstream response-head timeout (per trigger overridable).
    pub upstream_response_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Drain deadline on shutdown.
    pub shutdown_grace: Duration,
    /// Longest wait for the caller to take more of a response.
    pub send_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Calls in flight per authenticated caller.
    pub max_calls_per_principal: usize,
}

/// The network edge's guards, from `[server]` (see [`RawServer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Open connections per client address at most (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Leading bits of an IPv6 address that make one unit of per-address accounting.
    pub ipv6_prefix: u8,
    /// Longest pause, and base allowance, while waiting for a request body.
    pub body_read_timeout: Duration,
    /// Slowest average body rate in bytes per second (0: no rate rule).
    pub body_min_rate: u64,
    /// Bodies up to this many bytes are read whole before the upstream sees the request.
    pub buffer_request_body: u64,
}

fn compile_edge(raw: &RawServer, path: &KeyPath, diags: &mut Diagnostics) -> Edge {
    if raw.max_connections_per_ip == 0 {
        diags.error_with_hint(
            &path.key("max_connections_per_ip"),
            "must be greater than zero",
            "to lift the cap, set it to [limits] max_connections",
        );
    }
    if !(16..=128).contains(&raw.ipv6_prefix) {
        diags.error_with_hint(
            &path.key("ipv6_prefix"),
            format!("{} is not a prefix length between 16 and 128", raw.ipv6_prefix),
            "64 (the default) counts one IPv6 subnet as one address; 128 counts single addresses",
        );
    }
    if raw.body_read_timeout.0.is_zero() {
        diags.error(&path.key("body_read_timeout"), "must be greater than zero");
    }
    Edge {
        max_connections_per_ip: raw.max_connections_per_ip.max(1),
        ipv6_prefix: raw.ipv6_prefix.clamp(16, 128),
        body_read_timeout: raw.body_read_timeout.0,
        body_min_rate: raw.body_min_rate,
        buffer_request_body: raw.buffer_request_body,
    }
}

/// Compiles raw policy text into a [`Policy`].
///
/// # Errors
/// Every problem found, located as `FILE:LINE:COL`.
pub fn compile(raw: &RawPolicy, source: &SourceFile) -> Result<Policy, Vec<ConfigError>> {
    let mut diags = Diagnostics::default();
    let root = KeyPath::root();
    let limits = compile_limits(&raw.limits, &root.key("limits"), &mut diags);
    let server = compile_server(raw, source, &root.key("server"), &mut diags);
    let edge = compile_edge(&raw.server, &root.key("server"), &mut diags);
    let audit = crate::audit::AuditConfig::compile(&raw.audit, &source.base_dir, &root.key("audit"), &mut diags);
    let admin_listen = compile_admin(&raw.admin.listen, &root.key("admin").key("listen"), &mut diags);
    let trusted_proxies = crate::firewall::TrustedProxies::compile(
        &raw.server.trusted_proxies,
        &root.key("server").key("trusted_proxies"),
        &mut diags,
    );
    let firewall = crate::firewall::IpRules::compile(&raw.firewall, &root.key("firewall"), source, &mut diags);
    let shield = crate::ratelimit::ShieldSettings::compile(&raw.shield, &root.key("shield"), &mut diags);
    let cluster = crate::ratelimit::ClusterSettings::compile(&raw.cluster, &root.key("cluster"), &mut diags);
    let traces = crate::trace::ExportSettings::compile(&raw.traces, &root.key("traces"), &mut diags);
    let identities = crate::auth::compile_identities(&raw.identity, &root.key("identity"), source, &mut diags);
    let mut admin = compile_admin_access(&raw.admin, raw, &identities, &root.key("admin"), &mut diags);
    let signed_urls = raw
        .signed_urls
        .as_ref()
        .and_then(|s| crate::auth::compile_signed_urls(s, &root.key("signed_urls"), source, &mut diags));
    let cache = crate::secrets::compile_cache(&raw.secrets, &root.key("secrets"), &mut diags);
    let vaults = crate::secrets::compile_vaults(&raw.vault, &root.key("vault"), source, &mut diags).with_cache(cache);
    admin.sign_in = compile_admin_sign_in(&raw.admin, &admin, &identities, &vaults, &root.key("admin"), &mut diags);
    let shared = Shared {
        limits: &limits,
        audit: &audit,
        identities: &identities,
        signed_urls: signed_urls.as_ref(),
        vaults: &vaults,
        default_rate_limit: raw.rate_limit.as_ref().filter(|default| match default {
            RawRateLimitSetting::Off(_) => true,
            RawRateLimitSetting::Rule(rule) => {
                RateLimitRule::compile(rule, "", &root.key("rate_limit"), &mut diags).is_some()
            }
        }),
        source,
    };
    let mut triggers = Vec::with_capacity(raw.trigger.len());
    let mut names: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, raw_trigger) in raw.trigger.iter().enumerate() {
        let path = root.key("trigger").index(index);
        if let Some(first) = names.insert(&raw_trigger.name, index) {
            diags.error(&path.key("name"), format!("{:?} is also the name of trigger[{first}]", raw_trigger.name));
        }
        if let Some(trigger) = compile_trigger(raw_trigger, &shared, &path, &mut diags) {
            let can_receive = server.as_ref().is_none_or(|server| {
                server.tls.as_ref().is_some_and(|tls| tls.client_certs.is_some())
                    || server.forwarded_client_cert.is_some()
            });
            tls_options::check_certificate_source(&trigger.access.certificate, can_receive, &path, &mut diags);
            triggers.push(Arc::new(trigger));
        }
    }
    let routes = Routes::build(triggers, &root.key("trigger"), &mut diags);
    if raw.trigger.is_empty() {
        diags.error_with_hint(&root, "the policy has no [[trigger]]", "add at least one [[trigger]] section");
    }
    if !diags.is_empty() {
        return Err(source.locate(diags.into_vec()));
    }
    let Some(server) = server else {
        return Err(source.locate(diags.into_vec()));
    };
    Ok(Policy {
        version: hex::encode(&Sha256::digest(source.text.as_bytes())[..6]),
        source_name: source.name.clone(),
        server,
        limits,
        edge,
        admin_listen,
        admin,
        routes,
        audit,
        trusted_proxies,
        firewall,
        shield,
        cluster,
        traces,
        identities,
        vaults: Arc::new(vaults),
        signed_urls,
        text: source.text.clone(),
    })
}

/// Loads and compiles a policy file.
///
/// # Errors
/// Every problem found, located as `FILE:LINE:COL`.
pub fn load(path: &Path) -> Result<Policy, Vec<ConfigError>> {
    let (raw, source) = load_file(path)?;
    compile(&raw, &source)
}

/// Open connections at most, whatever the policy says (file descriptors run out long before).
const MAX_CONNECTIONS_CAP: usize = 1_000_000;

fn compile_limits(raw: &RawLimits, path: &KeyPath, diags: &mut Diagnostics) -> Limits {
    let positive = |diags: &mut Diagnostics, key: &str, zero: bool| {
        if zero {
            diags.error(&path.key(key), "must be greater than zero");
        }
    };
    positive(diags, "header_read_timeout", raw.header_read_timeout.0.is_zero());
    positive(diags, "max_header_bytes", raw.max_header_bytes == 0);
    positive(diags, "max_body_bytes", raw.max_body_bytes == 0);
    positive(diags, "upstream_connect_timeout", raw.upstream_connect_timeout.0.is_zero());
    positive(diags, "upstream_response_timeout", raw.upstream_response_timeout.0.is_zero());
    positive(diags, "max_connections", raw.max_connections == 0);
    if raw.max_connections > MAX_CONNECTIONS_CAP {
        diags.error_with_hint(
            &path.key("max_connections"),
            format!("{} is more than flowgate supports", raw.max_connections),
            format!("use at most {MAX_CONNECTIONS_CAP}"),
        );
    }
    positive(diags, "idle_timeout", raw.idle_timeout.0.is_zero());
    positive(diags, "send_timeout", raw.send_timeout.0.is_zero());
    positive(diags, "max_streams_per_connection", raw.max_streams_per_connection == 0);
    positive(diags, "max_calls_per_principal", raw.max_calls_per_principal == 0);
    if raw.max_header_bytes < 1024 {
        diags.error_with_hint(&path.key("max_header_bytes"), "is too small for real requests", "use 8192 or more");
    }
    Limits {
        header_read_timeout: raw.header_read_timeout.0,
        max_header_bytes: raw.max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        upstream_connect_timeout: raw.upstream_connect_timeout.0,
        upstream_response_timeout: raw.upstream_response_timeout.0,
        max_connections: raw.max_connections.clamp(1, MAX_CONNECTIONS_CAP),
        idle_timeout: raw.idle_timeout.0,
        shutdown_grace: raw.shutdown_grace.0,
        send_timeout: raw.send_timeout.0,
        max_streams_per_connection: raw.max_streams_per_connection.max(1),
        max_calls_per_principal: raw.max_calls_per_principal.max(1),
    }
}

fn parse_addr(text: &str, path: &KeyPath, diags: &mut Diagnostics) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        Some(addr)
    } else {
        diags.error_with_hint(
            path,
            format!("{text:?} is not a socket address"),
            "write IP:PORT, such as \"0.0.0.0:8443\" or \"[::]:8443\"",
        );
        None
    }
}

fn compile_admin(listen: &str, path: &KeyPath, diags: &mut Diagnostics) -> Option<SocketAddr> {
    if listen == "off" {
        return None;
    }
    parse_addr(listen, path, diags)
}

/// Who may use the admin API; see [`crate::admin`].
#[derive(Debug, Clone)]
pub struct AdminAccess {
    /// The role of loopback callers when no identity is configured.
    pub loopback_role: AdminRole,
    /// The identity whose tokens admin callers present.
    pub identity: Option<String>,
    /// The tenant and principal rules those tokens must pass (with `identity`).
    pub rules: Option<crate::auth::TriggerAccess>,
    /// Token role value → admin role, strongest role wins.
    pub token_roles: Vec<(String, AdminRole)>,
    /// Lower-case host names and addresses the admin listener answers to besides
    /// loopback and its own address.
    pub allowed_hosts: Vec<String>,
    /// Open admin connections at most.
    pub max_connections: usize,
    /// Browser sign-in to the console (`[admin.sign_in]`), with `identity`.
    pub sign_in: Option<Arc<crate::signin::SignIn>>,
}

/// Compiles `[admin.sign_in]` against the admin access already compiled.
fn compile_admin_sign_in(
    raw: &RawAdmin,
    admin: &AdminAccess,
    identities: &BTreeMap<String, Arc<crate::auth::Identity>>,
    vaults: &crate::secrets::Vaults,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<Arc<crate::signin::SignIn>> {
    let sign_in = raw.sign_in.as_ref()?;
    // Who may sign in with which role: a change to any of it ends every session.
    let rules_text = format!("{:?}\n{:?}\n{:?}\n{:?}", raw.identity, raw.tenants, raw.principals, admin.token_roles);
    let context = crate::signin::SignInContext {
        identity: raw.identity.as_ref().and_then(|name| identities.get(name)).map(AsRef::as_ref),
        identity_set: raw.identity.is_some(),
        allowed_hosts: &admin.allowed_hosts,
        vaults,
        rules_text: &rules_text,
    };
    crate::signin::compile_sign_in(sign_in, context, &path.key("sign_in"), diags).map(Arc::new)
}

fn compile_admin_access(
    raw: &RawAdmin,
    policy: &RawPolicy,
    identities: &std::collections::BTreeMap<String, Arc<crate::auth::Identity>>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> AdminAccess {
    let parse_role = |diags: &mut Diagnostics, at: &KeyPath, name: &str| {
        if let Ok(role) = name.parse::<AdminRole>() {
            Some(role)
        } else {
            diags.error_with_hint(at, format!("unknown admin role {name:?}"), "use viewer, owner or administrator");
            None
        }
    };
    let loopback_role = parse_role(diags, &path.key("loopback_role"), &raw.loopback_role).unwrap_or(AdminRole::Viewer);
    if let Some(identity) = &raw.identity
        && !policy.identity.contains_key(identity)
    {
        let hint = crate::config::did_you_mean(identity, policy.identity.keys().map(String::as_str))
            .map_or_else(|| "define it as [identity.NAME]".to_owned(), |s| format!("did you mean {s:?}?"));
        diags.error_with_hint(&path.key("identity"), format!("no identity named {identity:?}"), hint);
    }
    let mut token_roles = Vec::new();
    for (role_name, claims) in &raw.token_roles {
        if let Some(role) = parse_role(diags, &path.key("token_roles").key(role_name), role_name) {
            token_roles.extend(claims.iter().map(|c| (c.clone(), role)));
        }
    }
    if raw.identity.is_some() && token_roles.is_empty() {
        diags.error_with_hint(
            &path.key("token_roles"),
            "no token role grants any admin role, so nobody could use the admin API",
            "map at least one roles-claim value: token_roles = { viewer = [\"Flowgate.Viewer\"] }",
        );
    }
    let rules = raw.identity.as_ref().and_then(|identity| {
        crate::auth::compile_admin_access(identity, &raw.tenants, &raw.principals, identities, path, diags)
    });
    if raw.identity.is_none() {
        for (key, set) in [("tenants", !raw.tenants.is_empty()), ("principals", !raw.principals.is_empty())] {
            if set {
                diags.error_with_hint(
                    &path.key(key),
                    format!("{key} apply to admin tokens, and no admin identity is set"),
                    "set identity = \"NAME\" in [admin], or remove it",
                );
            }
        }
    }
    let mut allowed_hosts = Vec::new();
    for (i, host) in raw.allowed_hosts.iter().enumerate() {
        let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(&name).to_owned();
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        if name.is_empty() || (!is_ip && name.contains([':', '/', '@', ' ', '*'])) {
            diags.error_with_hint(
                &path.key("allowed_hosts").index(i),
                format!("{host:?} is not a host name or address"),
                "write the name alone, without scheme, port or wildcard: \"flowgate-admin.internal\"",
            );
        } else {
            allowed_hosts.push(name);
        }
    }
    if raw.max_connections == 0 {
        diags.error(&path.key("max_connections"), "must be greater than zero");
    }
    AdminAccess {
        loopback_role,
        identity: raw.identity.clone(),
        rules,
        token_roles,
        allowed_hosts,
        max_connections: raw.max_connections.max(1),
        sign_in: None,
    }
}

fn compile_server(
    raw: &RawPolicy,
    source: &SourceFile,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<ServerSettings> {
    let listen = parse_addr(&raw.server.listen, &path.key("listen"), diags);
    let plain_http_listen =
        raw.server.plain_http_listen.as_deref().and_then(|a| parse_addr(a, &path.key("plain_http_listen"), diags));
    let tls = raw.server.tls.as_ref().and_then(|tls| {
        let tls_path = path.key("tls");
        let files = CertFiles {
            cert: source.resolve(&tls.cert),
            key: source.resolve(&tls.key),
            ocsp: tls.ocsp.as_deref().map(|ocsp| source.resolve(ocsp)),
        };
        let certified_key = match crate::tls::load_certified_key(&files) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                diags.error_with_hint(&tls_path.key("cert"), e.to_string(), "give PEM files readable by flowgate");
                None
            }
        };
        let client_certs = match &tls.client_ca {
            None => {
                if tls.client_auth.is_some() {
                    diags.error(&tls_path.key("client_auth"), "needs client_ca");
                }
                None
            }
            Some(_) if tls.client_auth.is_none() => {
                tls_options::refuse_unstated_client_auth(&tls_path, diags);
                None
            }
            Some(ca) => match crate::tls::read_roots(&source.resolve(ca))
                .and_then(|roots| ClientCertPolicy::new(roots, tls.client_auth == Some(ClientAuth::Required)))
            {
                Ok(policy) => Some(policy),
                Err(e) => {
                    diags.error(&tls_path.key("client_ca"), e.to_string());
                    None
                }
            },
        };
        let tls13_only = tls.min_version == Some(TlsVersion::V1_3);
        certified_key.map(|certified_key| TlsSettings { files, certified_key, client_certs, tls13_only })
    });
    if raw.server.tls.is_none() && raw.server.plain_http_listen.is_none() {
        diags.error_with_hint(
            path,
            "no listener: [server] has neither tls nor plain_http_listen",
            "add tls = { cert = \"certs/server.crt\", key = \"certs/server.key\" }",
        );
    }
    let forwarded_client_cert = tls_options::compile_forwarded_cert(raw, path, diags);
    let hsts = raw.server.hsts.as_ref().and_then(|h| tls_options::compile_hsts(h, &path.key("hsts"), diags));
    Some(ServerSettings {
        listen: listen?,
        tls,
        plain_http_listen,
        trusted_header: raw.server.trusted_header,
        forwarded_client_cert,
        hsts,
    })
}

/// Query names the gateway owns on a trigger's upstream request, lower-cased.
fn reserved_query(
    injection: &crate::secrets::Injection,
    access: &crate::auth::TriggerAccess,
) -> std::collections::HashSet<String> {
    let signed = access.signed_params().map(|p| [p.sig.clone(), p.exp.clone(), p.kid.clone()]);
    injection
        .names_to_strip()
        .query
        .into_iter()
        .chain(signed.into_iter().flatten())
        .map(|n| n.to_ascii_lowercase())
        .collect()
}

/// What every trigger's compile step reads from the rest of the policy.
struct Shared<'a> {
    limits: &'a Limits,
    audit: &'a crate::audit::AuditConfig,
    identities: &'a BTreeMap<String, Arc<crate::auth::Identity>>,
    signed_urls: Option<&'a crate::auth::SignedUrlKeys>,
    vaults: &'a crate::secrets::Vaults,
    default_rate_limit: Option<&'a RawRateLimitSetting>,
    source: &'a SourceFile,
}

fn compile_trigger(raw: &RawTrigger, shared: &Shared<'_>, path: &KeyPath, diags: &mut Diagnostics) -> Option<Trigger> {
    let (limits, source) = (shared.limits, shared.source);
    if raw.name.trim().is_empty() {
        diags.error(&path.key("name"), "must not be empty");
    }
    if !raw.path.starts_with('/') {
        diags.error_with_hint(
            &path.key("path"),
            format!("{:?} does not start with '/'", raw.path),
            "write \"/triggers/x\"",
        );
    }
    if raw.path.contains(['?', '#']) {
        diags.error(&path.key("path"), "must not contain a query or fragment");
    }
    // Judged by the request-path rules: routing compares route keys of normalised paths.
    let (trigger_path, route_key) = match path::normalize(&raw.path) {
        Ok(normalized) => (normalized.as_str().to_owned(), normalized.route_key().to_owned()),
        Err(refusal) => {
            diags.error_with_hint(
                &path.key("path"),
                format!("{:?} holds a {refusal}: every request for it would be refused", raw.path),
                "write the path plainly: no ';', no '.', '..' or empty segments, no encoded separators, \
                 no segment ending with '.' or whitespace, UTF-8 escapes only",
            );
            (raw.path.clone(), raw.path.clone())
        }
    };
    let mut methods = Vec::new();
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    for (i, m) in raw.methods.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) if KNOWN.contains(&upper.as_str()) && !methods.contains(&method) => methods.push(method),
            Ok(_) if KNOWN.contains(&upper.as_str()) => {
                diags.error(&path.key("methods").index(i), format!("{m} is listed twice"));
            }
            _ => {
                let hint = crate::config::did_you_mean(&upper, KNOWN.iter().copied())
                    .map_or_else(|| format!("use one of {}", KNOWN.join(", ")), |s| format!("did you mean {s}?"));
                diags.error_with_hint(&path.key("methods").index(i), format!("{m:?} is not a trigger method"), hint);
            }
        }
    }
    if raw.methods.is_empty() {
        diags.error_with_hint(&path.key("methods"), "is empty, so nothing could call it", "write [\"POST\"]");
    }
    let host = raw.host.as_ref().map(|h| h.trim().to_ascii_lowercase());
    if host.as_deref().is_some_and(str::is_empty) {
        diags.error(&path.key("host"), "must not be empty when set");
    }
    let mut upstream = Upstream::compile(raw, source, path, diags);
    let webhook = crate::webhook::WebhookRule::compile(
        raw.webhook.as_ref(),
        raw.who == crate::auth::Who::Webhook,
        path,
        shared.vaults,
        diags,
    );
    // A webhook's body is held whole while it is verified: its own, smaller default.
    let default_body = if webhook.is_some() { crate::webhook::DEFAULT_MAX_BODY_BYTES } else { limits.max_body_bytes };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(default_body);
    let capture = crate::audit::CaptureRules::compile(raw.capture_parts(), shared.audit.capture_max_bytes, path, diags);
    let access = crate::auth::compile_access(raw, path, shared.identities, shared.signed_urls, diags);
    let ip_rules = crate::firewall::IpRules::compile_parts("trigger", raw.ip_rule_parts(), path, source, diags);
    let pins = crate::firewall::PrincipalPins::compile(&raw.principal_ips, &path.key("principal_ips"), diags);
    // Every trigger is limited unless the policy says "off": the trigger's own rule, else
    // the global one, else the built-in default.
    let (rate_limit, rate_limit_source) = match (&raw.rate_limit, shared.default_rate_limit) {
        (Some(RawRateLimitSetting::Rule(own)), _) => {
            (RateLimitRule::compile(own, &raw.name, &path.key("rate_limit"), diags), LimitSource::Trigger)
        }
        (Some(RawRateLimitSetting::Off(_)), _) => (None, LimitSource::Trigger),
        // The global default was validated once in `compile`; each trigger gets its own rule
        // (and budget) built from it.
        (None, Some(RawRateLimitSetting::Rule(d))) => {
            (Some(RateLimitRule::new(&raw.name, d.calls, d.period.0, d.key, d.shadow)), LimitSource::Global)
        }
        (None, Some(RawRateLimitSetting::Off(_))) => (None, LimitSource::Global),
        (None, None) => (Some(RateLimitRule::builtin_default(&raw.name)), LimitSource::BuiltIn),
    };
    let mut injection = crate::secrets::compile_injection(&raw.inject, &path.key("inject"), shared.vaults, diags);
    if let Some(template) = upstream.as_mut().and_then(|u| u.path_template.take()) {
        injection.set_upstream_path(template, &path.key("upstream"), shared.vaults, diags);
    }
    let reserved_query = reserved_query(&injection, &access);
    let injected_names = injection.names_to_strip();
    let scrub_responses = raw.scrub_responses.unwrap_or_else(|| injection.injects());
    let contract = raw
        .contract
        .as_ref()
        .and_then(|c| crate::contract::Contract::compile(c, max_body_bytes, source, &path.key("contract"), diags));
    if raw.contract.is_some() && contract.is_none() {
        return None;
    }
    Some(Trigger {
        name: raw.name.clone(),
        name_label: Arc::from(raw.name.as_str()),
        host,
        path: trigger_path,
        route_key,
        path_match: raw.path_match,
        methods,
        upstream: upstream?,
        max_body_bytes,
        response_timeout: raw.upstream_response_timeout.map_or(limits.upstream_response_timeout, |d| d.0),
        capture,
        access,
        ip_rules,
        pins,
        summary: summary::TriggerSummary::new(raw, rate_limit.as_ref(), rate_limit_source, &injection)
            .with_webhook(webhook.as_ref().map(crate::webhook::WebhookRule::describe)),
        rate_limit,
        rate_limit_source,
        reserved_query,
        injected_names,
        injection,
        scrub_responses,
        webhook,
        contract,
    })
}
