//! What the auth module tells the header-hygiene step: the identity headers sent upstream,
//! the inbound header names that are always removed so a caller cannot forge them, and
//! whether a query string carries a token (such a query is never logged).

use super::Caller;
use http::{HeaderName, HeaderValue, Uri};

/// `X-Flowgate-Tenant`: the caller's tenant id.
pub(crate) const TENANT_HEADER: HeaderName = HeaderName::from_static("x-flowgate-tenant");
/// `X-Flowgate-Principal`: the caller's display principal (`oid:…`, `app:…`).
pub(crate) const PRINCIPAL_HEADER: HeaderName = HeaderName::from_static("x-flowgate-principal");
/// `X-Flowgate-App-Id`: the calling application.
pub(crate) const APP_ID_HEADER: HeaderName = HeaderName::from_static("x-flowgate-app-id");
/// `X-Flowgate-Roles`: the caller's roles, comma-separated.
pub(crate) const ROLES_HEADER: HeaderName = HeaderName::from_static("x-flowgate-roles");

/// Inbound headers removed from every request before forwarding, whatever the trigger
/// says: a caller must never be able to pose as a verified identity.
pub const ALWAYS_STRIPPED_HEADERS: [HeaderName; 4] = [TENANT_HEADER, PRINCIPAL_HEADER, APP_ID_HEADER, ROLES_HEADER];

/// Query parameter names that carry tokens in other products; refused here.
const TOKEN_PARAMS: [&str; 8] =
    ["access_token", "id_token", "token", "refresh_token", "jwt", "bearer", "auth_token", "authorization"];

/// The identity headers for an admitted caller (only for triggers with
/// `forward_identity = true`). Values that are not valid header text are left out.
pub fn identity_headers(caller: &Caller) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    let mut push = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.push((name, value));
        }
    };
    if let Some(tenant) = &caller.tenant {
        push(TENANT_HEADER, tenant);
    }
    push(PRINCIPAL_HEADER, &caller.principal);
    if let Some(app) = &caller.app_id {
        push(APP_ID_HEADER, app);
    }
    if !caller.roles.is_empty() {
        push(ROLES_HEADER, &caller.roles.join(","));
    }
    headers
}

/// True when a value looks like a compact JWT (`eyJ….….…`).
fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ") && value.bytes().filter(|b| *b == b'.').count() == 2 && value.len() > 20
}

/// True when the query carries a token: a parameter named like one (`access_token`,
/// `id_token`, `token`…, any casing) or a JWT-shaped value. Such requests are refused and
/// their query must not be logged.
pub fn query_has_token(uri: &Uri) -> bool {
    let Some(query) = uri.query() else { return false };
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        TOKEN_PARAMS.iter().any(|t| name.eq_ignore_ascii_case(t)) || looks_like_jwt(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_detected() {
        assert!(query_has_token(&"/t?access_token=abc".parse().unwrap()));
        assert!(query_has_token(&"/t?a=1&ID_TOKEN=x".parse().unwrap()));
        assert!(query_has_token(&"/t?x=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln".parse().unwrap()));
        assert!(!query_has_token(&"/t?a=1&b=2".parse().unwrap()));
        assert!(!query_has_token(&"/t".parse().unwrap()));
    }

    #[test]
    fn identity_headers_cover_the_stripped_names() {
        let caller = Caller {
            tenant: Some("t".into()),
            principal: "oid:o".into(),
            app_id: Some("a".into()),
            roles: vec!["R1".into(), "R2".into()],
            scopes: vec![],
            principal_ids: vec![],
            budget_key: "t/oid:o".into(),
        };
        let headers = identity_headers(&caller);
        assert_eq!(headers.len(), 4);
        assert!(headers.iter().all(|(n, _)| ALWAYS_STRIPPED_HEADERS.contains(n)));
        assert!(headers.contains(&(ROLES_HEADER, HeaderValue::from_static("R1,R2"))));
    }
}
