//! [`RateKey`]: the budget a call spends within a rule, one constructor per key kind.

use crate::firewall::ClientIp;
use std::net::IpAddr;
use std::sync::Arc;

/// The budget a call spends, within a rule. Build it with the constructor that matches the
/// rule's [`LimitKey`](super::LimitKey).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey(Arc<str>);

impl RateKey {
    /// `principal`: a scope (tenant or issuer) and an immutable id within it.
    pub fn principal(scope: &str, id: &str) -> Self {
        Self(format!("p:{scope}/{id}").into())
    }

    /// `principal` for an authenticated caller: its budget key (`TENANT/oid:…`,
    /// `ISSUER/sub:…`, or one signed URL), see [`crate::auth::Caller::budget_key`], which
    /// holds the result.
    pub fn subject(budget_key: &str) -> Self {
        let mut key = String::with_capacity(budget_key.len() + 2);
        key.push_str("p:");
        key.push_str(budget_key);
        Self(key.into())
    }

    /// `ip`: the client address (IPv4-mapped addresses normalised).
    pub fn ip(ip: IpAddr) -> Self {
        Self::client(ClientIp::new(ip))
    }

    /// `ip` for the client address the request path resolved (already normalised).
    pub fn client(ip: ClientIp) -> Self {
        Self(format!("i:{ip}").into())
    }

    /// `trigger`: everyone together.
    pub fn trigger() -> Self {
        Self("t".into())
    }

    /// `tcp_connection`: one connection of one gateway process. Build it with
    /// [`Limiters::connection_key`](super::Limiters::connection_key), which adds the process's random instance id: connection
    /// ids count from 1 in every process, and replicas sharing Redis (or a restarted
    /// process) must never share a connection's budget.
    pub(super) fn connection(instance: u64, id: u64) -> Self {
        Self(format!("c:{instance:016x}-{id}").into())
    }

    /// The key text (used in Redis key names and audit reasons).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
