//! [`RateKey`]: the budget a call spends within a rule, one constructor per key kind.

pub use crate::auth::BudgetKey;
use crate::firewall::ClientIp;
use std::net::IpAddr;

/// The budget a call spends, within a rule. Build it with the constructor that matches the
/// rule's [`LimitKey`](super::LimitKey). Its text (Redis key names, audit reasons) is the
/// kind's prefix and the key: `p:TENANT/oid:…`, `i:ADDRESS`, `t`, `c:INSTANCE-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    prefix: &'static str,
    /// Shared, not copied: a caller's budget key is built (and hashed) once per caller (a
    /// cached token's calls share it), and every call's principal key is a clone of it.
    key: BudgetKey,
}

impl RateKey {
    /// `principal`: a scope (tenant or issuer) and an immutable id within it.
    pub fn principal(scope: &str, id: &str) -> Self {
        Self { prefix: "p:", key: format!("{scope}/{id}").into() }
    }

    /// `principal` for an authenticated caller: its budget key (`TENANT/oid:…`,
    /// `ISSUER/sub:…`, or one signed URL), see [`crate::auth::Caller::budget_key`].
    pub fn subject(budget_key: &BudgetKey) -> Self {
        Self { prefix: "p:", key: budget_key.clone() }
    }

    /// `ip`: the client address (IPv4-mapped addresses normalised).
    pub fn ip(ip: IpAddr) -> Self {
        Self::client(ClientIp::new(ip))
    }

    /// `ip` for the client address the request path resolved (already normalised).
    pub fn client(ip: ClientIp) -> Self {
        Self { prefix: "i:", key: ip.to_string().into() }
    }

    /// `trigger`: everyone together.
    pub fn trigger() -> Self {
        Self { prefix: "t", key: "".into() }
    }

    /// `tcp_connection`: one connection of one gateway process. Build it with
    /// [`Limiters::connection_key`](super::Limiters::connection_key), which adds the process's random instance id: connection
    /// ids count from 1 in every process, and replicas sharing Redis (or a restarted
    /// process) must never share a connection's budget.
    pub(super) fn connection(instance: u64, id: u64) -> Self {
        Self { prefix: "c:", key: format!("{instance:016x}-{id}").into() }
    }

    /// The key's keyed hash. Its kind's prefix does not enter it: one rule's keys are all
    /// of one kind, and tables are per rule.
    pub fn hash(&self) -> u64 {
        self.key.hash()
    }
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.prefix, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis key names hold these texts: a change of form would reset every shared budget
    /// at the upgrade. A caller's shared budget key is the same key as one built from parts.
    #[test]
    fn key_texts_keep_their_form() {
        let shared = BudgetKey::new("tenant/oid:a");
        assert_eq!(RateKey::subject(&shared), RateKey::principal("tenant", "oid:a"));
        assert_eq!(RateKey::subject(&shared).to_string(), "p:tenant/oid:a");
        assert_eq!(RateKey::ip("::ffff:10.0.0.1".parse().unwrap()).to_string(), "i:10.0.0.1");
        assert_eq!(RateKey::ip("2001:db8::1".parse().unwrap()).to_string(), "i:2001:db8::1");
        assert_eq!(RateKey::trigger().to_string(), "t");
        assert_eq!(RateKey::connection(0xab, 7).to_string(), "c:00000000000000ab-7");
        assert_ne!(RateKey::principal("t", "x"), RateKey::ip("127.0.0.1".parse().unwrap()));
    }
}
