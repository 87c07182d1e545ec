//! flowgate: a TLS reverse-proxy gateway that guards the public URLs of
//! HTTP-triggered automation flows.
//!
//! # Layout
//! One module per concern; the request path reads top to bottom in
//! [`proxy::handle`]:
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the policy file loader: sections read one by one, `FILE:LINE:COL` diagnostics, durations |
//! | [`policy`] | the policy document (`Raw*`), `compile()` → one immutable [`policy::Policy`] (routes, CIDR sets, rules), diff, schema |
//! | [`gateway`] | the [`gateway::Gateway`] value: the policy behind an atomic pointer plus state that survives reloads |
//! | [`server`] | listeners, TLS accept, connection cap, graceful shutdown |
//! | [`connection`] | serving one connection (main and admin listener): TLS, hyper, idle and send-progress watchdog |
//! | [`tls`] | rustls configuration, certificate reload, development certificates |
//! | [`proxy`] | `handle` → `admit` → `forward`; header hygiene; refused-body settling |
//! | [`web`] | plain HTTP pieces: body types, local answers, the request id, the upstream client and pools |
//! | [`clock`] | the one injectable clock (monotonic and wall-clock readings) and its manual test clock |
//! | [`contract`] | payload contracts per trigger: JSON Schema, strict JSON, media types, body size, query and header rules |
//! | [`denial`] | the closed set of refusals and failures, each mapped to one HTTP response |
//! | [`refusal`] | the refusal table: each domain's typed error → its one `Denial` or `Failure` |
//! | [`firewall`] | CIDR allow/deny tables, client address resolution |
//! | [`auth`] | bearer JWT validation, JWKS, tenant/principal rules, signed URLs |
//! | [`webhook`] | signed webhook deliveries: schemes, freshness, the replay guard, handshakes |
//! | [`ratelimit`] | exact sliding-window limiter (local and Redis), pre-auth shield |
//! | [`secrets`] | secret references, vault backends, rotating cache, templates |
//! | [`audit`] | one run record per call, sinks |
//! | [`trace`] | W3C trace context: continue or start a trace, pass it upstream |
//! | [`admin`] | the admin listener: health, readiness, metrics, policy, runs |
//! | [`console`] | the admin listener's HTML console under `/ui`: runs, triggers, secrets, policy |
//! | [`signin`] | browser sign-in to the console: OIDC settings, session cookies, server-side sessions |
//! | [`telemetry`] | logging and metrics setup |
//! | [`reload`] | policy file watch and SIGHUP |
//! | [`demo`] | the `flowgate demo` echo upstream and development issuer |
//! | [`cli`] | the `flowgate` command line |
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod console;
pub mod contract;
pub mod demo;
pub mod denial;
pub mod firewall;
pub mod gateway;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod refusal;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod signin;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod web;
pub mod webhook;
