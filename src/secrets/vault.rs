//! The dispatcher: `[vault.NAME]` compiled into a [`Vault`] holding its backend's client (built
//! by `backend/`), its client-side throttle and its config fingerprint (the cache key part that
//! makes a changed vault refetch while an unchanged one keeps its cache on reload). The
//! cross-field rules of a vault (fields and auth methods that do not fit its kind) live here;
//! each backend checks only its own fields.

use super::backend::{AuthMethod, RawVault, RawVaultAuth, VaultKind, akv, env, file, http_client, openbao};
use super::error::SecretError;
use super::reference::SecretRef;
use super::value::SecretValue;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;

/// The client of one backend.
pub(crate) enum Backend {
    File(file::FileBackend),
    Env {
        prefix: String,
    },
    OpenBao(openbao::OpenBao),
    Akv(akv::Akv),
    #[cfg(test)]
    Test(std::sync::Arc<test_backend::TestBackend>),
}

/// One compiled vault.
pub struct Vault {
    name: String,
    kind: VaultKind,
    fingerprint: String,
    backend: Backend,
    throttle: Option<DefaultDirectRateLimiter>,
    calls_per_minute: Option<u32>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("name", &self.name).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Vault {
    /// The `[vault.NAME]` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend kind.
    pub fn kind(&self) -> VaultKind {
        self.kind
    }

    /// The client-side cap on calls per minute, if any.
    pub fn calls_per_minute(&self) -> Option<u32> {
        self.calls_per_minute
    }

    /// A digest of the vault's configuration: cached values are keyed by it.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Fetches one secret from the backend (no cache), waiting for the throttle first.
    ///
    /// # Errors
    /// [`SecretError`] naming the reference.
    pub async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        if let Some(throttle) = &self.throttle {
            throttle.until_ready().await;
        }
        metrics::counter!("flowgate_vault_calls_total", "vault" => self.name.clone()).increment(1);
        let result = match &self.backend {
            Backend::File(b) => b.fetch(reference),
            Backend::Env { prefix } => env::fetch(prefix, reference),
            Backend::OpenBao(b) => b.fetch(reference).await,
            Backend::Akv(b) => b.fetch(reference).await,
            #[cfg(test)]
            Backend::Test(b) => b.fetch(reference).await,
        };
        if let Err(e) = &result {
            metrics::counter!("flowgate_vault_errors_total", "vault" => self.name.clone(), "kind" => e.kind())
                .increment(1);
            tracing::warn!(vault = %self.name, reference = %reference, error = %e, "vault fetch failed");
        }
        result
    }

    /// Compile-time check that a reference suits this vault's kind: an Azure Key Vault name
    /// has no `/`, an OpenBao version is a number, `file` and `env` have no versions.
    /// Returns `(message, hint)` on failure.
    pub(crate) fn check_ref(&self, reference: &SecretRef) -> Result<(), (String, String)> {
        let vault = self;
        if vault.kind == VaultKind::AzureKeyVault && reference.path.contains('/') {
            return Err((
                format!("{reference}: an Azure Key Vault secret name has no '/'"),
                "write secret://VAULT/SECRET-NAME[@VERSION-ID]".into(),
            ));
        }
        if let Some(version) = &reference.version {
            match vault.kind {
                VaultKind::Openbao | VaultKind::Hashicorp if !version.chars().all(|c| c.is_ascii_digit()) => {
                    return Err((
                        format!("{reference}: an OpenBao version is a number"),
                        "write @3 for version 3".into(),
                    ));
                }
                VaultKind::File | VaultKind::Env => {
                    return Err((
                        format!("{reference}: {} vaults have no versions", vault.kind.as_str()),
                        "remove the @version".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Vault {
    /// An `env` vault built directly, for tests and benches (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn env_for_tests(name: &str, prefix: &str) -> Self {
        Self {
            name: name.into(),
            kind: VaultKind::Env,
            fingerprint: format!("env:{prefix}"),
            backend: Backend::Env { prefix: prefix.into() },
            throttle: None,
            calls_per_minute: None,
        }
    }
}

/// Fields that only some kinds accept: reports those set on a kind that ignores them.
fn refuse_foreign_fields(raw: &RawVault, path: &KeyPath, diags: &mut Diagnostics) {
    let set: [(&str, bool, &[VaultKind]); 11] = [
        ("path", raw.path.is_some(), &[VaultKind::File]),
        ("prefix", raw.prefix.is_some(), &[VaultKind::Env]),
        ("address", raw.address.is_some(), &[VaultKind::Openbao, VaultKind::Hashicorp]),
        ("mount", raw.mount.is_some(), &[VaultKind::Openbao, VaultKind::Hashicorp]),
        ("namespace", raw.namespace.is_some(), &[VaultKind::Openbao, VaultKind::Hashicorp]),
        ("ca_file", raw.ca_file.is_some(), &[VaultKind::Openbao, VaultKind::Hashicorp, VaultKind::AzureKeyVault]),
        ("auth", raw.auth.is_some(), &[VaultKind::Openbao, VaultKind::Hashicorp, VaultKind::AzureKeyVault]),
        ("vault_url", raw.vault_url.is_some(), &[VaultKind::AzureKeyVault]),
        ("authority_host", raw.authority_host.is_some(), &[VaultKind::AzureKeyVault]),
        ("resource", raw.resource.is_some(), &[VaultKind::AzureKeyVault]),
        ("imds_endpoint", raw.imds_endpoint.is_some(), &[VaultKind::AzureKeyVault]),
    ];
    for (field, is_set, kinds) in set {
        if is_set && !kinds.contains(&raw.kind) {
            diags.error_with_hint(
                &path.key(field),
                format!("`{field}` does not apply to kind = \"{}\"", raw.kind.as_str()),
                format!("remove it; it applies to {}", kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")),
            );
        }
    }
}

/// Refuses `auth` fields the chosen method does not read: they would be accepted silently,
/// literal credentials included, and shown in the admin API's policy view.
fn refuse_foreign_auth_fields(auth: &RawVaultAuth, path: &KeyPath, diags: &mut Diagnostics) {
    use AuthMethod::{AppService, Approle, ClientCertificate, ClientSecret, ManagedIdentity, Token};
    let set: [(&str, bool, &[AuthMethod]); 10] = [
        ("token", auth.token.is_some(), &[Token]),
        ("role_id", auth.role_id.is_some(), &[Approle]),
        ("secret_id", auth.secret_id.is_some(), &[Approle]),
        ("approle_mount", auth.approle_mount.is_some(), &[Approle]),
        ("tenant", auth.tenant.is_some(), &[ClientSecret, ClientCertificate]),
        ("client_id", auth.client_id.is_some(), &[ClientSecret, ClientCertificate, ManagedIdentity, AppService]),
        ("client_secret", auth.client_secret.is_some(), &[ClientSecret]),
        ("certificate", auth.certificate.is_some(), &[ClientCertificate]),
        ("identity_endpoint", auth.identity_endpoint.is_some(), &[AppService]),
        ("identity_header", auth.identity_header.is_some(), &[AppService]),
    ];
    for (field, is_set, methods) in set {
        if is_set && !methods.contains(&auth.method) {
            diags.error_with_hint(
                &path.key(field),
                format!("`{field}` is not used by method = {:?}", auth.method),
                "remove it (it would be ignored)",
            );
        }
    }
}

/// Compiles one `[vault.NAME]`: its backend's client (through `backend/`), throttle and
/// fingerprint, and the rules across its fields (kind, auth method). Every problem is
/// reported with its key path; `None` when any stops the vault from being built.
pub(crate) fn compile(
    name: &str,
    rv: &RawVault,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<Vault> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        diags.error_with_hint(path, "invalid vault name", "use letters, digits, '-', '_' and '.'");
        return None;
    }
    refuse_foreign_fields(rv, path, diags);
    let backend = match rv.kind {
        VaultKind::File => file::compile(rv, path, source, diags).map(Backend::File),
        VaultKind::Env => Some(Backend::Env { prefix: rv.prefix.clone().unwrap_or_default() }),
        VaultKind::Openbao | VaultKind::Hashicorp => http_client(rv, path, source, diags)
            .and_then(|client| openbao::compile(name, rv, client, path, source, diags))
            .map(Backend::OpenBao),
        VaultKind::AzureKeyVault => http_client(rv, path, source, diags)
            .and_then(|client| akv::compile(name, rv, client, path, source, diags))
            .map(Backend::Akv),
    };
    let default_cpm = (rv.kind == VaultKind::AzureKeyVault).then_some(2000);
    let calls_per_minute = rv.calls_per_minute.or(default_cpm);
    let throttle = match calls_per_minute {
        None => None,
        Some(n) => {
            if let Some(n) = NonZeroU32::new(n) {
                Some(RateLimiter::direct(Quota::per_minute(n)))
            } else {
                diags.error(&path.key("calls_per_minute"), "must be at least 1");
                None
            }
        }
    };
    if let Some(auth) = &rv.auth {
        refuse_foreign_auth_fields(auth, &path.key("auth"), diags);
        let ok = match rv.kind {
            VaultKind::Openbao | VaultKind::Hashicorp => {
                matches!(auth.method, AuthMethod::Token | AuthMethod::Approle)
            }
            VaultKind::AzureKeyVault => !matches!(auth.method, AuthMethod::Token | AuthMethod::Approle),
            VaultKind::File | VaultKind::Env => true,
        };
        if !ok {
            diags.error(
                &path.key("auth").key("method"),
                format!("method not supported by kind = \"{}\"", rv.kind.as_str()),
            );
        }
    }
    let fingerprint = hex::encode(&Sha256::digest(format!("{name}\u{0}{rv:?}").as_bytes())[..8]);
    Some(Vault { name: name.to_owned(), kind: rv.kind, fingerprint, backend: backend?, throttle, calls_per_minute })
}

#[cfg(test)]
pub(crate) use test_backend::TestBackend;

/// A counting, switchable backend for unit tests.
#[cfg(test)]
mod test_backend {
    use super::{Backend, Vault};
    use crate::secrets::backend::VaultKind;
    use crate::secrets::error::SecretError;
    use crate::secrets::reference::SecretRef;
    use crate::secrets::store::{CacheSettings, Vaults};
    use crate::secrets::value::SecretValue;
    use std::sync::Arc;

    pub(crate) struct TestBackend {
        pub(crate) calls: std::sync::atomic::AtomicUsize,
        value: std::sync::Mutex<String>,
        failing: std::sync::atomic::AtomicBool,
        delay: std::time::Duration,
    }

    impl TestBackend {
        pub(crate) fn vaults(name: &str, cache: CacheSettings, delay: std::time::Duration) -> (Arc<Vaults>, Arc<Self>) {
            let backend = Arc::new(Self {
                calls: std::sync::atomic::AtomicUsize::default(),
                value: std::sync::Mutex::new("v1".into()),
                failing: std::sync::atomic::AtomicBool::default(),
                delay,
            });
            let vault = Vault {
                name: name.into(),
                kind: VaultKind::Openbao,
                fingerprint: "test".into(),
                backend: Backend::Test(backend.clone()),
                throttle: None,
                calls_per_minute: None,
            };
            (Arc::new(Vaults::from_parts(vec![vault], cache)), backend)
        }

        pub(crate) fn set(&self, value: &str) {
            *self.value.lock().unwrap() = value.into();
        }

        pub(crate) fn fail(&self, failing: bool) {
            self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
        }

        pub(super) async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(SecretError::Sealed { reference: reference.to_string() });
            }
            let value = self.value.lock().unwrap().clone();
            Ok(SecretValue::new(match &reference.field {
                Some(f) => format!("{value}-{f}"),
                None => value,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::store::{Vaults, compile_vaults};
    use std::collections::BTreeMap;

    fn compile(text: &str) -> (Vaults, Vec<(String, String, Option<String>)>) {
        let raw: BTreeMap<String, RawVault> = toml::from_str(text).unwrap();
        let source = SourceFile { name: "p.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
        let mut diags = Diagnostics::default();
        let vaults = compile_vaults(&raw, &KeyPath::root().key("vault"), &source, &mut diags);
        (vaults, diags.into_vec().into_iter().map(|d| (d.path.to_string(), d.message, d.hint)).collect())
    }

    #[test]
    fn literal_credentials_are_refused() {
        let (vaults, diags) = compile(
            r#"
            [kv]
            kind = "openbao"
            address = "http://127.0.0.1:8200"
            auth = { method = "approle", role_id = "env:ROLE", secret_id = "abcd-literal" }
            [akv]
            kind = "azure_key_vault"
            vault_url = "https://v.vault.azure.net"
            auth = { method = "client_secret", tenant = "t", client_id = "c", client_secret = "literal~secret" }
            "#,
        );
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert_eq!(diags[0].0, "vault.akv.auth.client_secret");
        assert_eq!(diags[1].0, "vault.kv.auth.secret_id");
        assert!(
            diags.iter().all(|d| d.1.contains("literal credential") && d.2.as_deref().unwrap_or("").contains("env:"))
        );
        assert!(diags.iter().all(|d| !d.1.contains("literal~secret") && !d.1.contains("abcd-literal")));
        assert!(vaults.get("kv").is_none());
    }

    #[test]
    fn fields_of_other_kinds_and_wrong_methods_are_refused() {
        let (_, diags) = compile(
            r#"
            [e]
            kind = "env"
            address = "http://x"
            [kv]
            kind = "openbao"
            address = "not a url"
            auth = { method = "managed_identity" }
            "#,
        );
        let paths: Vec<&str> = diags.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(paths, ["vault.e.address", "vault.kv.address", "vault.kv.auth.method"], "{diags:?}");
    }

    #[test]
    fn auth_fields_the_method_does_not_read_are_refused() {
        let (_, diags) = compile(
            r#"
            [kv]
            kind = "openbao"
            address = "https://127.0.0.1:8200"
            auth = { method = "token", token = "env:T", role_id = "literal-role" }
            "#,
        );
        let paths: Vec<&str> = diags.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(paths, ["vault.kv.auth.role_id"], "{diags:?}");
    }

    #[test]
    fn compiles_every_kind_and_checks_references() {
        let (vaults, diags) = compile(
            r#"
            [e]
            kind = "env"
            prefix = "CARGO_PKG_"
            [kv]
            kind = "hashicorp"
            address = "https://127.0.0.1:8200/"
            namespace = "team"
            auth = { method = "token", token = "file:token" }
            [akv]
            kind = "azure_key_vault"
            vault_url = "https://v.vault.azure.net"
            auth = { method = "managed_identity" }
            "#,
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(vaults.names().collect::<Vec<_>>(), ["akv", "e", "kv"]);
        let check = |r: &str| vaults.check_ref(&SecretRef::parse(r).unwrap());
        assert!(check("secret://kv/flows/a#f@3").is_ok());
        assert!(check("secret://kv/flows/a@x").is_err());
        assert!(check("secret://akv/name@0123abcd").is_ok());
        assert!(check("secret://akv/a/b").is_err());
        assert!(check("secret://e/x@1").is_err());
        assert!(check("secret://nope/x").unwrap_err().1.contains("akv, e, kv"));
        assert_ne!(vaults.get("kv").unwrap().fingerprint(), vaults.get("akv").unwrap().fingerprint());
        // Azure Key Vault's service limit is the default client-side cap.
        assert_eq!(vaults.get("akv").unwrap().calls_per_minute(), Some(2000));
        assert_eq!(vaults.get("kv").unwrap().calls_per_minute(), None);
    }

    #[tokio::test]
    async fn env_vault_maps_paths_to_variables() {
        assert_eq!(env::env_var_name("APP_", "flows/invoice-key.v2"), "APP_FLOWS_INVOICE_KEY_V2");
        let (vaults, _) = compile("[e]\nkind = \"env\"\nprefix = \"CARGO_PKG_\"");
        let vault = vaults.get("e").unwrap();
        let v = vault.fetch(&SecretRef::parse("secret://e/name").unwrap()).await.unwrap();
        assert_eq!(v.expose_secret(), "flowgate");
        let e = vault.fetch(&SecretRef::parse("secret://e/no/such/var").unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), "not_found");
    }
}
