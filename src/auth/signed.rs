//! Signed trigger URLs for `who = "anyone"`: like a SAS URL, the URL itself carries an
//! expiry, a key id and an HMAC-SHA256 signature.
//!
//! The signed text (UTF-8, lines joined by `\n`, no trailing newline) is, in version 2
//!
//! ```text
//! flowgate-url-v2
//! <trigger name>
//! <METHOD, upper case>
//! <path exactly as sent, percent-encoding kept>
//! <expiry, decimal seconds since the Unix epoch>
//! <key id>
//! ```
//!
//! and the signature is the unpadded base64url of HMAC-SHA256 over it. Other query
//! parameters are not signed (the trigger's upstream sets the parameters that matter).
//! Several key ids verify at once, so a primary and a secondary key overlap during rollover.
//!
//! The trigger name binds a URL to the trigger it was issued for: the same path on another
//! virtual host (or a host-less trigger shadowed by a host-specific one) is another
//! trigger, and the URL does not open it. The name rather than the `Host` header, because a
//! host-less trigger answers any `Host` a caller sends, and one trigger may be reached under
//! several names (a load balancer's, an IP address).
//!
//! Version 1 (`flowgate-url-v1\nMETHOD\npath\nexp\nkid`) bound no trigger. While
//! `accept_v1` is on (the default, so URLs issued before the upgrade keep working) a
//! signature is checked as version 2 and then as version 1; each version-1 acceptance is
//! counted in `flowgate_signed_url_v1_accepted_total`. New URLs are always version 2.

use crate::config::{Diagnostics, HumanDuration, KeyPath, SourceFile, did_you_mean};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted, in bytes.
const MIN_KEY_BYTES: usize = 32;

/// `[signed_urls]`: HMAC keys for signed trigger URLs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignedUrls {
    /// Key id → key source: `"env:VAR"`, `"file:PATH"` or `"secret://VAULT/PATH#FIELD"`.
    /// Keys are at least 32 bytes. All listed keys verify; only `primary` signs.
    pub keys: BTreeMap<String, String>,
    /// The key id new URLs are signed with.
    pub primary: String,
    /// Query parameter carrying the signature. Default `fg_sig`.
    #[serde(default = "default_sig_param")]
    pub sig_param: String,
    /// Query parameter carrying the expiry (seconds since the epoch). Default `fg_exp`.
    #[serde(default = "default_exp_param")]
    pub exp_param: String,
    /// Query parameter carrying the key id. Default `fg_kid`.
    #[serde(default = "default_kid_param")]
    pub kid_param: String,
    /// Longest validity accepted for a URL (expiry this far in the future at most).
    /// Default 365 days.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: HumanDuration,
    /// Also accept version-1 URLs, signed before URLs were bound to their trigger (their
    /// signature covers method, path and expiry only, so one could open another trigger
    /// with the same path). Default `true`, so URLs issued before the upgrade keep working;
    /// set `false` once the last of them has expired (at most `max_lifetime` after the
    /// upgrade; `flowgate_signed_url_v1_accepted_total` shows whether any are still used).
    #[serde(default = "default_accept_v1")]
    pub accept_v1: bool,
}

fn default_accept_v1() -> bool {
    true
}

fn default_sig_param() -> String {
    "fg_sig".into()
}
fn default_exp_param() -> String {
    "fg_exp".into()
}
fn default_kid_param() -> String {
    "fg_kid".into()
}
fn default_max_lifetime() -> HumanDuration {
    HumanDuration::from_secs(365 * 24 * 3600)
}

/// A signing key, zeroized on drop; `Debug` never prints it.
#[derive(Clone)]
struct KeySlot(Arc<Zeroizing<Vec<u8>>>);

impl KeySlot {
    fn new(key: Vec<u8>) -> Self {
        Self(Arc::new(Zeroizing::new(key)))
    }
}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Names of the three signed-URL query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrlParams {
    /// Signature parameter.
    pub sig: String,
    /// Expiry parameter.
    pub exp: String,
    /// Key id parameter.
    pub kid: String,
}

impl Default for SignedUrlParams {
    fn default() -> Self {
        Self { sig: default_sig_param(), exp: default_exp_param(), kid: default_kid_param() }
    }
}

/// The compiled `[signed_urls]`: keys by id, the primary id and parameter names.
#[derive(Debug, Clone)]
pub struct SignedUrlKeys {
    keys: BTreeMap<String, KeySlot>,
    primary: String,
    params: SignedUrlParams,
    max_lifetime_secs: u64,
    accept_v1: bool,
}

/// Why a signed URL was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedUrlError {
    /// No signature parameters at all.
    #[error("no URL signature")]
    Missing,
    /// A parameter is missing, repeated or malformed.
    #[error("malformed URL signature parameter {0}")]
    Malformed(&'static str),
    /// The key id is not configured.
    #[error("unknown signing key id")]
    UnknownKey,
    /// Past its expiry.
    #[error("signed URL expired")]
    Expired,
    /// Expiry further away than `max_lifetime`.
    #[error("signed URL lifetime exceeds max_lifetime")]
    TooLong,
    /// The signature does not match.
    #[error("bad URL signature")]
    BadSignature,
}

/// Why a signing key could not be read.
#[derive(Debug, thiserror::Error)]
enum KeySourceError {
    #[error("environment variable {0} is not set")]
    UnsetVariable(String),
    #[error("reading {}: {source}", path.display())]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("signed-URL keys come from env:VAR or file:PATH (secret:// references are not supported here yet)")]
    VaultReference,
    #[error("a key source must be env:VAR, file:PATH or secret://VAULT/PATH#FIELD (never the key itself)")]
    Unknown,
}

/// Reads an `env:`/`file:` key.
fn read_key(reference: &str, source: &SourceFile) -> Result<Vec<u8>, KeySourceError> {
    if let Some(var) = reference.strip_prefix("env:") {
        #[expect(clippy::disallowed_methods, reason = "the policy names this variable as the key's source")]
        let value = std::env::var(var);
        return value.map(String::into_bytes).map_err(|_| KeySourceError::UnsetVariable(var.to_owned()));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let path = source.resolve(path);
        let mut bytes = std::fs::read(&path).map_err(|source| KeySourceError::File { path, source })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok(bytes);
    }
    if reference.starts_with("secret://") {
        // Policies are compiled offline and a vault answer could change under a running
        // policy; until vault-held URL keys get their own rotation story they are refused
        // here rather than failing every call later.
        return Err(KeySourceError::VaultReference);
    }
    Err(KeySourceError::Unknown)
}

fn valid_param(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Compiles `[signed_urls]`, reading `env:` and `file:` keys now. `secret://` keys stay
/// pending until [`SignedUrlKeys::resolve`] supplies them.
pub(crate) fn compile_signed_urls(
    raw: &RawSignedUrls,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<SignedUrlKeys> {
    let mark = diags.mark();
    let mut keys = BTreeMap::new();
    if raw.keys.is_empty() {
        diags.error_with_hint(&path.key("keys"), "no signing keys", "add keys = { k1 = \"env:FLOWGATE_URL_KEY\" }");
    }
    for (kid, reference) in &raw.keys {
        let key_path = path.key("keys").key(kid.as_str());
        if !valid_param(kid) {
            diags.error(&key_path, "key ids use letters, digits, '_', '-' and '.' only");
        }
        match read_key(reference, source) {
            Ok(bytes) if bytes.len() < MIN_KEY_BYTES => {
                diags.error_with_hint(
                    &key_path,
                    format!("signing key {reference} is shorter than {MIN_KEY_BYTES} bytes"),
                    "generate one with `openssl rand -base64 48`",
                );
            }
            Ok(bytes) => {
                keys.insert(kid.clone(), KeySlot::new(bytes));
            }
            Err(error) => diags.error(&key_path, error.to_string()),
        }
    }
    if !raw.keys.contains_key(&raw.primary) {
        let hint = did_you_mean(&raw.primary, raw.keys.keys().map(String::as_str))
            .map_or_else(|| "name one of the ids under keys".to_owned(), |s| format!("did you mean {s:?}?"));
        diags.error_with_hint(&path.key("primary"), format!("primary key id {:?} is not in keys", raw.primary), hint);
    }
    let params = SignedUrlParams { sig: raw.sig_param.clone(), exp: raw.exp_param.clone(), kid: raw.kid_param.clone() };
    for (name, value) in [("sig_param", &params.sig), ("exp_param", &params.exp), ("kid_param", &params.kid)] {
        if !valid_param(value) {
            diags.error(&path.key(name), "parameter names use letters, digits, '_', '-' and '.' only");
        }
    }
    if params.sig == params.exp || params.sig == params.kid || params.exp == params.kid {
        diags.error(&path.key("sig_param"), "sig_param, exp_param and kid_param must differ");
    }
    diags.ok_since(mark).then(|| SignedUrlKeys {
        keys,
        primary: raw.primary.clone(),
        params,
        max_lifetime_secs: raw.max_lifetime.0.as_secs(),
        accept_v1: raw.accept_v1,
    })
}

/// The canonical text that is signed, version 2 (see the module documentation).
pub(crate) fn canonical_string(trigger: &str, method: &str, path: &str, expires_at: u64, kid: &str) -> String {
    format!("flowgate-url-v2\n{trigger}\n{}\n{path}\n{expires_at}\n{kid}", method.to_ascii_uppercase())
}

/// The version-1 text, checked only while `accept_v1` is on; nothing signs it any more.
fn canonical_string_v1(method: &str, path: &str, expires_at: u64, kid: &str) -> String {
    format!("flowgate-url-v1\n{}\n{path}\n{expires_at}\n{kid}", method.to_ascii_uppercase())
}

fn mac(key: &[u8], text: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(text.as_bytes());
    mac
}

/// Signs a URL (version 2) for `trigger` and `method` until `expires_at`, appending the
/// three parameters (with default or given names) to `url`'s query. `url` is a path with
/// optional query, or an absolute URL.
///
/// # Errors
/// [`SignedUrlError::Malformed`] when the URL has no path or the trigger name holds a
/// control character.
pub fn sign_url(
    key: &[u8],
    kid: &str,
    params: &SignedUrlParams,
    trigger: &str,
    method: &str,
    url: &str,
    expires_at: u64,
) -> Result<String, SignedUrlError> {
    if trigger.chars().any(char::is_control) {
        return Err(SignedUrlError::Malformed("trigger"));
    }
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let path = match before_query.find("://") {
        Some(scheme_end) => {
            let after = &before_query[scheme_end + 3..];
            after.find('/').map_or("/", |i| &after[i..])
        }
        None => before_query,
    };
    if !path.starts_with('/') {
        return Err(SignedUrlError::Malformed("path"));
    }
    let signature = URL_SAFE_NO_PAD
        .encode(mac(key, &canonical_string(trigger, method, path, expires_at, kid)).finalize().into_bytes());
    let mut query = query.map(str::to_owned).unwrap_or_default();
    for (name, value) in
        [(&params.exp, expires_at.to_string()), (&params.kid, kid.to_owned()), (&params.sig, signature)]
    {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(&value);
    }
    Ok(format!("{before_query}?{query}"))
}

/// The query with the signature, expiry and key id parameters removed (for logs and the
/// upstream). `None` when nothing is left.
pub fn strip_signature_params(query: Option<&str>, params: &SignedUrlParams) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && name != params.sig && name != params.exp && name != params.kid
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

impl SignedUrlKeys {
    /// Keys read by the caller (for example from the secrets layer), by id.
    pub fn from_resolved(keys: BTreeMap<String, Vec<u8>>, primary: &str, params: SignedUrlParams) -> Self {
        Self {
            keys: keys.into_iter().map(|(kid, key)| (kid, KeySlot::new(key))).collect(),
            primary: primary.to_owned(),
            params,
            max_lifetime_secs: default_max_lifetime().0.as_secs(),
            accept_v1: default_accept_v1(),
        }
    }

    /// The same keys with version-1 URLs accepted or not (`accept_v1`).
    #[must_use]
    pub fn with_accept_v1(mut self, accept_v1: bool) -> Self {
        self.accept_v1 = accept_v1;
        self
    }

    /// The parameter names.
    pub fn params(&self) -> &SignedUrlParams {
        &self.params
    }

    /// The primary key id.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    fn key(&self, kid: &str) -> Result<&[u8], SignedUrlError> {
        match self.keys.get(kid) {
            Some(KeySlot(key)) => Ok(key.as_slice()),
            None => Err(SignedUrlError::UnknownKey),
        }
    }

    /// Signs for `trigger` with the primary key (for `flowgate sign-url`), version 2.
    ///
    /// # Errors
    /// When the URL has no path or the trigger name holds a control character.
    pub fn sign(&self, trigger: &str, method: &str, url: &str, expires_at: u64) -> Result<String, SignedUrlError> {
        sign_url(self.key(&self.primary)?, &self.primary, &self.params, trigger, method, url, expires_at)
    }

    /// Verifies the request's signature for `trigger` at `now` (seconds since the epoch);
    /// returns the key id that verified it. Version 1 is tried only when version 2 fails
    /// and `accept_v1` is on.
    ///
    /// # Errors
    /// [`SignedUrlError`] naming what failed.
    pub fn verify(
        &self,
        trigger: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        now: u64,
    ) -> Result<String, SignedUrlError> {
        let (mut sig, mut exp, mut kid) = (None, None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, label) = if name == self.params.sig {
                (&mut sig, "sig")
            } else if name == self.params.exp {
                (&mut exp, "exp")
            } else if name == self.params.kid {
                (&mut kid, "kid")
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(SignedUrlError::Malformed(label));
            }
        }
        let (sig, exp, kid) = match (sig, exp, kid) {
            (None, None, None) => return Err(SignedUrlError::Missing),
            (Some(sig), Some(exp), Some(kid)) => (sig, exp, kid),
            (None, ..) => return Err(SignedUrlError::Malformed("sig")),
            (_, None, _) => return Err(SignedUrlError::Malformed("exp")),
            (.., None) => return Err(SignedUrlError::Malformed("kid")),
        };
        if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignedUrlError::Malformed("exp"));
        }
        let expires_at: u64 = exp.parse().map_err(|_| SignedUrlError::Malformed("exp"))?;
        let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| SignedUrlError::Malformed("sig"))?;
        let key = self.key(kid)?;
        // Check the signature before the expiry, so a forged URL never learns about time.
        let v2 = mac(key, &canonical_string(trigger, method, path, expires_at, kid)).verify_slice(&signature).is_ok();
        if !v2 {
            let v1 = self.accept_v1
                && mac(key, &canonical_string_v1(method, path, expires_at, kid)).verify_slice(&signature).is_ok();
            if !v1 {
                return Err(SignedUrlError::BadSignature);
            }
        }
        if expires_at <= now {
            return Err(SignedUrlError::Expired);
        }
        if expires_at - now > self.max_lifetime_secs {
            return Err(SignedUrlError::TooLong);
        }
        if !v2 {
            metrics::counter!("flowgate_signed_url_v1_accepted_total").increment(1);
        }
        Ok(kid.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SignedUrlKeys {
        let mut map = BTreeMap::new();
        map.insert("k1".to_owned(), vec![1u8; 32]);
        map.insert("k2".to_owned(), vec![2u8; 32]);
        SignedUrlKeys::from_resolved(map, "k2", SignedUrlParams::default())
    }

    fn split(url: &str) -> (&str, Option<&str>) {
        match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        }
    }

    #[test]
    fn round_trip_and_rollover() {
        let keys = keys();
        let url = keys.sign("x", "post", "/triggers/x?a=1", 2000).unwrap();
        let (path, query) = split(&url);
        assert_eq!(keys.verify("x", "POST", path, query, 1000), Ok("k2".into()));
        let old = sign_url(&[1u8; 32], "k1", &SignedUrlParams::default(), "x", "POST", "/triggers/x", 2000).unwrap();
        let (path, query) = split(&old);
        assert_eq!(keys.verify("x", "POST", path, query, 1000), Ok("k1".into()));
        assert_eq!(strip_signature_params(split(&url).1, keys.params()), Some("a=1".into()));
    }

    /// A version-1 signature, computed from the documented text (what older releases signed).
    fn sign_v1(key: &[u8], kid: &str, method: &str, path: &str, exp: u64) -> String {
        let text = format!("flowgate-url-v1\n{method}\n{path}\n{exp}\n{kid}");
        let sig = URL_SAFE_NO_PAD.encode(mac(key, &text).finalize().into_bytes());
        format!("fg_exp={exp}&fg_kid={kid}&fg_sig={sig}")
    }

    #[test]
    fn the_trigger_is_signed_and_version_1_is_accepted_only_during_rollover() {
        let keys = keys();
        let url = keys.sign("hook-a", "POST", "https://a.example/hook", 2000).unwrap();
        let (_, query) = split(&url);
        assert_eq!(keys.verify("hook-a", "POST", "/hook", query, 1000), Ok("k2".into()));
        assert_eq!(keys.verify("hook-b", "POST", "/hook", query, 1000), Err(SignedUrlError::BadSignature));
        // A version-1 URL verifies on any trigger with its path while accept_v1 is on...
        let old = sign_v1(&[1u8; 32], "k1", "POST", "/hook", 2000);
        assert_eq!(keys.verify("hook-a", "POST", "/hook", Some(&old), 1000), Ok("k1".into()));
        assert_eq!(keys.verify("hook-a", "GET", "/hook", Some(&old), 1000), Err(SignedUrlError::BadSignature));
        assert_eq!(keys.verify("hook-a", "POST", "/hook", Some(&old), 2000), Err(SignedUrlError::Expired));
        // ...and nowhere once it is off; version 2 is unaffected.
        let strict = keys.with_accept_v1(false);
        assert_eq!(strict.verify("hook-a", "POST", "/hook", Some(&old), 1000), Err(SignedUrlError::BadSignature));
        assert_eq!(strict.verify("hook-a", "POST", "/hook", query, 1000), Ok("k2".into()));
        assert_eq!(strict.sign("bad\nname", "POST", "/hook", 2000), Err(SignedUrlError::Malformed("trigger")));
    }

    fn compile(text: &str, dir: &std::path::Path) -> (Option<SignedUrlKeys>, Vec<String>) {
        let raw: RawSignedUrls = toml::from_str(text).unwrap();
        let source = SourceFile { name: "p.toml".into(), base_dir: dir.to_path_buf(), text: String::new() };
        let mut diags = Diagnostics::default();
        let keys = compile_signed_urls(&raw, &KeyPath::root().key("signed_urls"), &source, &mut diags);
        (keys, diags.into_vec().into_iter().map(|d| format!("{}: {} {:?}", d.path, d.message, d.hint)).collect())
    }

    #[test]
    fn compile_reads_files_and_refuses_vault_references() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("url.key"), format!("{}\n", "k".repeat(40))).unwrap();
        let (keys, errors) = compile("keys = { a = \"file:url.key\" }\nprimary = \"a\"\n", dir.path());
        assert!(errors.is_empty(), "{errors:?}");
        let keys = keys.unwrap();
        assert!(keys.accept_v1, "version-1 URLs are accepted by default (rollover)");
        let signed = keys.sign("t", "POST", "/t", 10).unwrap();
        assert_eq!(keys.verify("t", "POST", "/t", signed.split_once('?').map(|(_, q)| q), 5), Ok("a".into()));
        let (_, errors) = compile(
            "keys = { a = \"file:url.key\", b = \"secret://kv/flowgate/url#key\" }\nprimary = \"a\"\n",
            dir.path(),
        );
        assert!(errors.iter().any(|e| e.contains("secret://")), "{errors:?}");
    }

    #[test]
    fn compile_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.key"), "short").unwrap();
        let (keys, errors) = compile(
            "keys = { a = \"file:short.key\", b = \"hunter2-literal\", c = \"env:FLOWGATE_AUTH_TEST_UNSET_VAR\" }\nprimary = \"aa\"\nsig_param = \"x\"\nexp_param = \"x\"\n",
            dir.path(),
        );
        assert!(keys.is_none());
        let all = errors.join("\n");
        for needle in [
            "signed_urls.keys.a: signing key file:short.key is shorter",
            "signed_urls.keys.b: a key source must be",
            "signed_urls.keys.c: environment variable FLOWGATE_AUTH_TEST_UNSET_VAR is not set",
            "signed_urls.primary",
            "must differ",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
        assert!(!all.contains("hunter2"), "a literal key must not be echoed: {all}");
    }

    #[test]
    fn refusals() {
        let keys = keys();
        let url = keys.sign("x", "POST", "https://gw.example/triggers/x", 2000).unwrap();
        let (_, query) = split(&url);
        let verify =
            |method: &str, path: &str, query: Option<&str>, now: u64| keys.verify("x", method, path, query, now);
        assert_eq!(verify("POST", "/triggers/x", query, 2000), Err(SignedUrlError::Expired));
        assert_eq!(verify("GET", "/triggers/x", query, 1000), Err(SignedUrlError::BadSignature));
        assert_eq!(verify("POST", "/triggers/y", query, 1000), Err(SignedUrlError::BadSignature));
        assert_eq!(verify("POST", "/triggers/x", None, 1000), Err(SignedUrlError::Missing));
        let tampered = query.unwrap().replace("fg_exp=2000", "fg_exp=3000");
        assert_eq!(verify("POST", "/triggers/x", Some(&tampered), 1000), Err(SignedUrlError::BadSignature));
        let doubled = format!("{}&fg_sig=AAAA", query.unwrap());
        assert_eq!(verify("POST", "/triggers/x", Some(&doubled), 1000), Err(SignedUrlError::Malformed("sig")));
        let other = query.unwrap().replace("fg_kid=k2", "fg_kid=k9");
        assert_eq!(verify("POST", "/triggers/x", Some(&other), 1000), Err(SignedUrlError::UnknownKey));
    }
}
