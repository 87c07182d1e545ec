//! The integration tests that can share one process, as one test binary: each module is
//! one concern (its `//!` header says which), against the real gateway on loopback, the
//! real binary, or real counterparts (Redis, OpenBao, HAProxy, an OIDC provider). One
//! binary links the crate once instead of once per file, which is most of the suite's
//! build time.
//!
//! Tests that need the process to themselves stay separate binaries in `tests/`:
//! `faults.rs` compares values of the process-wide Prometheus recorder (open connections,
//! failed reloads, Redis fallbacks) that any other test would move, `streaming.rs` bounds
//! the process's RSS while a 1 GiB body streams through, and `gateway_oauth.rs`,
//! `secrets_echo.rs` and `secrets_leak.rs` each install the process's global tracing
//! subscriber and scan every log line for secrets. So no test here installs a global
//! subscriber (a scoped `set_default` on the test's own thread is fine), sets an
//! environment variable or measures the process's memory, and a metric is asserted
//! exactly only under a label no other test uses.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod admin_edge;
mod admission;
mod audit_capture;
mod audit_policy;
mod audit_ring;
mod audit_sinks;
mod auth_dev_issuer;
mod auth_identity_edges;
mod auth_oidc;
mod auth_refusals;
mod bounds;
mod cli;
mod client_certs;
mod console;
mod console_sign_in;
mod contract;
mod contract_suite;
mod deploy;
mod dev_certs;
mod firewall_rules;
mod foundation;
mod gateway_cluster;
mod gateway_firewall;
mod gateway_limits;
mod gateway_paths;
mod gateway_signed_urls;
mod gateway_wire;
mod logging;
mod module_map;
mod ratelimit_local;
mod ratelimit_redis;
mod reload_scale;
mod scaleout;
mod scrub_property;
mod secrets_akv_double;
mod secrets_gateway;
mod secrets_openbao;
mod soak;
mod tls_options;
mod trace_context;
mod trace_export;
mod upstream_pool;
mod webhook;
mod workers;
