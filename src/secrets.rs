//! Secret references, vault backends, the rotating cache, injection templates and
//! response scrubbing, and the one per-call [`Redactor`] that response shaping and the
//! run record's capture share.
//!
//! The policy holds references (`secret://<vault>/<path>[#field][@version]`), never
//! values. Compile time builds the vault clients ([`compile_vaults`]) and the per-trigger
//! templates ([`compile_injection`]); at request time [`Injection::render`] (which takes a
//! [`Permit`](crate::proxy::Permit), so only admitted calls reach a vault) resolves the
//! references through the [`SecretStore`], a cache that survives policy reloads.
//!
//! Values live in [`SecretValue`] (zeroized on drop, redacted `Debug`/`Display`) from the
//! moment they leave the vault; errors ([`SecretError`]) name references, never values.
//!
//! # Layout
//! | file | concern |
//! |---|---|
//! | `secrets/value.rs` | [`SecretValue`], the leak-proof value type |
//! | `secrets/reference.rs` | [`SecretRef`] parsing and [`Template`]s |
//! | `secrets/vault.rs` | [`Vault`]: one `[vault.NAME]` compiled, dispatch to its backend, throttle |
//! | `secrets/backend.rs` | [`RawVault`], credentials, tokens, HTTP client: what the backends share |
//! | `secrets/backend/{file,env,openbao,akv}.rs` | the backends, one per kind |
//! | `secrets/store.rs` | [`SecretStore`]: TTL, refresh ahead, single flight, stale serving; [`Vaults`] |
//! | `secrets/inject.rs` | [`RawInject`], [`compile_injection`], [`Injection`], [`Rendered`] |
//! | `secrets/scrub.rs` | [`Scrubber`], [`ScrubBody`] |
//! | `secrets/redact.rs` | [`Redactor`]: one call's containment, for the caller's response and the run record alike |
//! | `secrets/report.rs` | [`usage_report`] for `flowgate secrets` |

mod backend;
mod error;
mod inject;
mod redact;
mod reference;
mod report;
mod scrub;
mod store;
mod value;
mod vault;

pub use backend::{AuthMethod, RawVault, RawVaultAuth, VaultKind};
pub use error::SecretError;
pub use inject::{Injection, NamesToStrip, RawBasicAuth, RawInject, Rendered, compile_injection, is_credential_like};
pub use redact::{Redactor, redact_url};
pub use reference::{Part, RefParseError, SecretRef, Template};
pub use report::usage_report;
pub use scrub::{REDACTED_MARKER, ScrubBody, Scrubber};
pub use store::{
    CachePhase, CacheSettings, CacheState, RawSecretCache, SecretStore, Vaults, compile_cache, compile_vaults,
};
pub use value::SecretValue;
pub use vault::Vault;
