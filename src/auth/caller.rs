//! [`Caller`]: who an admitted call came from, as the rest of the request path sees it
//! (run records, rate-limit budgets, forwarded identity headers, principal IP pins).

use super::token::Claims;

/// The authenticated caller of an admitted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant (`tid`, lower case), if any.
    pub tenant: Option<String>,
    /// Display id: `oid:…`, `app:…`, `sub:…`, or `signed-url:KID` for signed URLs.
    pub principal: String,
    /// The calling application (`appid`/`azp`).
    pub app_id: Option<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// Scopes from `scp`.
    pub scopes: Vec<String>,
    /// Every identifier `principal_ips` pins compare (`oid:…`, `sub:…`, `sub:ISS#…`,
    /// `upn:…`, `app:…`, `users_of_app:…`; names and ids lower case). Broader than what
    /// `principals` admits on purpose: every name claim appears as `upn:` and every token's
    /// client as `app:`, because a pin only ever refuses, so matching more is stricter.
    pub principal_ids: Vec<String>,
    /// Whose `key = "principal"` rate-limit budget a call spends, from immutable ids only:
    /// `TENANT/oid:OID` (the issuer instead of the tenant when there is no `tid`), else
    /// `ISSUER/sub:SUB` (`sub` is unique only per issuer); for a signed URL, its key id
    /// and a hash of its signature (each URL its own budget). A token with neither `oid`
    /// nor `sub` is refused (401). Shared: a cached token's caller serves all its calls,
    /// and each call's rate key holds this text without copying it.
    pub budget_key: super::BudgetKey,
}

impl Caller {
    /// The caller a verified token names.
    pub(super) fn from_claims(claims: &Claims) -> Self {
        let mut ids = Vec::new();
        if let Some(oid) = &claims.oid {
            ids.push(format!("oid:{}", oid.to_lowercase()));
        }
        if let Some(sub) = &claims.sub {
            ids.push(format!("sub:{sub}"));
            ids.push(format!("sub:{}#{sub}", claims.iss));
        }
        for name in &claims.user_names {
            ids.push(format!("upn:{}", name.to_lowercase()));
        }
        if let Some(app) = &claims.app_id {
            ids.push(format!("app:{}", app.to_lowercase()));
            if claims.delegated {
                ids.push(format!("users_of_app:{}", app.to_lowercase()));
            }
        }
        let principal = claims
            .oid
            .as_ref()
            .map(|oid| format!("oid:{}", oid.to_lowercase()))
            .or_else(|| {
                claims
                    .app_id
                    .as_ref()
                    .filter(|_| claims.user_names.is_empty())
                    .map(|a| format!("app:{}", a.to_lowercase()))
            })
            .or_else(|| claims.sub.as_ref().map(|sub| format!("sub:{sub}")))
            .or_else(|| claims.app_id.as_ref().map(|a| format!("app:{}", a.to_lowercase())))
            .unwrap_or_else(|| "unknown".into());
        let tenant = claims.tid.as_ref().map(|t| t.to_ascii_lowercase());
        let budget_key = match (&claims.oid, &claims.sub) {
            (Some(oid), _) => format!("{}/oid:{}", tenant.as_deref().unwrap_or(&claims.iss), oid.to_lowercase()),
            (None, Some(sub)) => format!("{}/sub:{sub}", claims.iss),
            // Refused before a caller is built (`AuthError::NoSubject`).
            (None, None) => String::new(),
        };
        Self {
            tenant,
            principal,
            app_id: claims.app_id.clone(),
            roles: claims.roles.clone(),
            scopes: claims.scopes.clone(),
            principal_ids: ids,
            budget_key: budget_key.into(),
        }
    }

    /// A signed-URL caller: every URL (key id + signature) has its own budget. The
    /// signature is hashed so that no budget key (in Redis, say) holds a usable URL.
    pub(super) fn signed_url(kid: &str, signature: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(kid).chain_update([0]).chain_update(signature).finalize();
        Self {
            tenant: None,
            principal: format!("signed-url:{kid}"),
            app_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            principal_ids: Vec::new(),
            budget_key: format!("signed-url/{kid}:{}", hex::encode(&digest[..16])).into(),
        }
    }
}
