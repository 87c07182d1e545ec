//! Who may trigger a flow: bearer JWT validation against OIDC issuers, tenant and
//! principal rules, and signed URLs for `who = "anyone"`.
//!
//! # Layout
//! - `identity`: the `[identity.NAME]` settings, their compile step into [`Identity`], and
//!   [`KeyStores::start_refresh`], which keeps the compiled identities' keys fresh;
//! - `lookup`: the hash sets the rules' long lists (principals, tenants, roles, scopes)
//!   compile into, so a check does not grow with a list;
//! - `rules`: `who` and the trigger rules, compiled into [`TriggerAccess`] (from a
//!   [`TriggerAccessInput`] the policy builds) and evaluated against verified claims;
//! - `bearer`: the request path's entry, [`KeyStores::authenticate_identified`]
//!   ([`KeyStores::authenticate`] without the refused caller), and
//!   [`KeyStores::authorize_bearer`] for the admin API;
//! - `error`: [`AuthError`] (its status is decided by the refusal table, `refusal.rs`);
//! - `caller`: the [`Caller`] an admitted call carries;
//! - [`token`]: header judgement, signature check and strict claim decoding, pure (keys
//!   in, verdict out); [`key_set`]: the parsed signing keys it checks against;
//! - [`keys`]: JWKS fetching, refresh, the verified-token cache ([`KeyStores`]);
//! - `provider`: a browser sign-in's discovery, code exchange and ID token check;
//! - [`signed`]: signed URLs; [`forward`]: identity headers and query-token detection;
//! - [`dev_issuer`]: the demo's development issuer.
//!
//! Order of checks in [`KeyStores::authenticate_identified`]: token in the query (refused,
//! never logged) → for `who = "anyone"`, the signed URL and nothing else → credential
//! present (one `Authorization: Bearer` header) → size → header (alg, embedded keys, b64,
//! crit) → keys (503 if none) → verified-token cache → signature → claims (types, time,
//! iss, aud, tenant in iss) → an immutable id (`oid` or `sub`, else 401) → trigger rules
//! (tenant, principal, claims → 403; roles, scopes → 403 `insufficient_scope`).
//!
//! # Policy example
//! ```toml
//! [identity.contoso]
//! discovery = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
//! discovery_tenant = "organizations"
//! issuers = ["https://login.microsoftonline.com/{tenant}/v2.0", "https://sts.windows.net/{tenant}/"]
//! audiences = ["api://flowgate"]
//! tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
//!
//! [signed_urls]
//! keys = { k2025 = "env:FLOWGATE_URL_KEY", k2024 = "file:secrets/url-2024.key" }
//! primary = "k2025"
//!
//! [[trigger]]                       # anyone holding a signed URL
//! name = "webhook"
//! path = "/triggers/webhook"
//! upstream = "https://flows.example.com/hook"
//! who = "anyone"
//!
//! [[trigger]]                       # any user or app of the tenant holding a role
//! name = "report"
//! path = "/triggers/report"
//! upstream = "https://flows.example.com/report"
//! who = "tenant_users"
//! identity = "contoso"
//! roles = { any_of = ["Flows.Invoke"] }
//! forward_identity = true
//!
//! [[trigger]]                       # listed principals only; [] would mean nobody
//! name = "invoice"
//! path = "/triggers/invoice"
//! upstream = "https://flows.example.com/invoice"
//! who = "specific_users"
//! identity = "contoso"
//! principals = ["oid:5e1f3c2a-0000-4000-8000-00000000aa01", "upn:alice@contoso.com", "users_of_app:6a7b8c9d-0000-4000-8000-00000000bb02"]
//! scopes = { all_of = ["Invoices.Write"] }
//! claims = { idtyp = "user" }
//! ```

mod admin_role;
mod bearer;
mod budget_key;
mod caller;
pub mod certificate;
mod compare;
pub mod dev_issuer;
mod error;
pub mod forward;
mod identity;
pub mod key_set;
pub mod keys;
mod lookup;
mod provider;
mod rules;
pub mod signed;
mod strict_json;
#[cfg(feature = "fuzzing")]
pub use strict_json::parse_object;
pub mod token;

pub use admin_role::{AdminRole, UnknownRole};
pub use bearer::bearer_credential;
pub use budget_key::BudgetKey;
pub use caller::Caller;
pub(crate) use compare::same_bytes;
pub use error::AuthError;
pub use forward::{ALWAYS_STRIPPED_HEADERS, identity_headers, query_has_token};
pub use identity::{Identity, RawIdentity, compile_identities};
pub use keys::{KeySourceId, KeyStores};
pub use provider::{CodeExchange, ProviderEndpoints, ProviderError};
pub use rules::{RawRequirement, TriggerAccess, TriggerAccessInput, Who, compile_access};
pub(crate) use rules::{canonical_principal, compile_admin_access};
pub(crate) use signed::compile_signed_urls;
pub use signed::{RawSignedUrls, SignedUrlError, SignedUrlKeys, SignedUrlParams, sign_url, strip_signature_params};
pub use token::{Claims, TokenError};

#[cfg(test)]
mod tests;
