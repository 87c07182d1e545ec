//! Per-trigger injection: templates compiled from `inject`, rendered per admitted call into
//! header values (marked sensitive), query parameters, JSON body fields and basic auth.

use super::error::SecretError;
use super::reference::{Part, SecretRef, Template};
use super::scrub::Scrubber;
use super::store::{SecretStore, Vaults};
use super::value::{SecretValue, zeroize_tree};
use crate::config::{Diagnostics, KeyPath};
// The one deliberate upward arrow (secrets → proxy): rendering takes the proxy-issued
// `Permit`, so only calls that `admit` let through ever reach a vault.
use crate::proxy::Permit;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// `inject`: values written into the upstream request. Each value is a template: a bare
/// reference (`"secret://kv/flows/token"`), literal text, or both mixed
/// (`"Bearer {{secret://kv/flows/token}}"`). Credential-like names refuse literal-only values.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// Header name → template. The caller's headers of the same name are removed first.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → template. The caller's parameters of the same name are removed first.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer (`"/auth/key"`) → template, for `application/json` bodies only.
    #[serde(default)]
    pub json: BTreeMap<String, String>,
    /// Largest JSON body rewritten, in bytes; larger → the call fails. Default 1 MiB.
    pub json_max_bytes: Option<usize>,
    /// HTTP basic authentication sent upstream as `Authorization: Basic ...`.
    pub basic_auth: Option<RawBasicAuth>,
}

/// `inject.basic_auth`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The user name (template; may be literal).
    pub username: String,
    /// The password (template; must contain a `secret://` reference).
    pub password: String,
}

/// Default `json_max_bytes`: 1 MiB.
const DEFAULT_JSON_MAX_BYTES: usize = 1024 * 1024;

/// Words that make a header, parameter or JSON field name a credential: a literal-only value
/// is refused there.
const CREDENTIAL_WORDS: &[&str] = &[
    "authorization",
    "auth",
    "apikey",
    "api-key",
    "token",
    "secret",
    "password",
    "passwd",
    "pass",
    "pwd",
    "sig",
    "signature",
    "key",
    "code",
    "credential",
    "credentials",
    "cookie",
    "sas",
    "sv",
    "se",
    "sp",
];

/// True when `name` looks like it carries a credential (`Authorization`, `x-api-key`,
/// `x-functions-key`, `sig`, `client_secret`, `code`...).
pub fn is_credential_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let squashed: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    ["authorization", "apikey", "token", "secret", "password", "passwd", "signature", "credential"]
        .iter()
        .any(|w| squashed.contains(w))
        || lower.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| CREDENTIAL_WORDS.contains(&word))
}

/// A compiled `inject` table.
#[derive(Debug, Default)]
pub struct Injection {
    headers: Vec<(HeaderName, Template)>,
    query: Vec<(String, Template)>,
    json: Vec<(String, Template)>,
    json_max_bytes: usize,
    basic_auth: Option<(Template, Template)>,
    /// The upstream URL's path when it takes parts from the vault.
    upstream_path: Option<Template>,
}

fn compile_template(
    text: &str,
    name: &str,
    credential: bool,
    path: &KeyPath,
    vaults: &Vaults,
    diags: &mut Diagnostics,
) -> Option<Template> {
    let template = match Template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            diags.error_with_hint(
                path,
                e.to_string(),
                "write secret://VAULT/PATH[#field][@version], or {{secret://...}} inside text",
            );
            return None;
        }
    };
    if credential && template.is_literal_only() {
        diags.error_with_hint(
            path,
            format!("{name:?} carries a credential: a literal value is not allowed in the policy"),
            "use a secret:// reference",
        );
        return None;
    }
    let mark = diags.mark();
    check_references(&template, path, vaults, diags);
    diags.ok_since(mark).then_some(template)
}

/// Records a problem for each reference of `template` that no vault can answer.
fn check_references(template: &Template, path: &KeyPath, vaults: &Vaults, diags: &mut Diagnostics) {
    for reference in template.references() {
        if let Err((message, hint)) = vaults.check_ref(reference) {
            diags.error_with_hint(path, message, hint);
        }
    }
}

fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    let rest = pointer.strip_prefix('/')?;
    let tokens: Vec<String> = rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    tokens.iter().all(|t| !t.is_empty()).then_some(tokens)
}

/// Compiles a trigger's `inject` table: parses every template, refuses literal-only values
/// under credential-like names, checks every reference against the vaults.
pub fn compile_injection(raw: &RawInject, path: &KeyPath, vaults: &Vaults, diags: &mut Diagnostics) -> Injection {
    let mut injection =
        Injection { json_max_bytes: raw.json_max_bytes.unwrap_or(DEFAULT_JSON_MAX_BYTES), ..Default::default() };
    for (name, text) in &raw.headers {
        let p = path.key("headers").key(name.as_str());
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            diags.error(&p, format!("{name:?} is not a valid header name"));
            continue;
        };
        if raw.basic_auth.is_some() && header == http::header::AUTHORIZATION {
            diags.error_with_hint(&p, "authorization is also set by basic_auth", "keep one of them");
        }
        if let Some(t) = compile_template(text, name, is_credential_like(name), &p, vaults, diags) {
            injection.headers.push((header, t));
        }
    }
    for (name, text) in &raw.query {
        let p = path.key("query").key(name.as_str());
        if name.is_empty() {
            diags.error(&p, "empty parameter name");
            continue;
        }
        if let Some(t) = compile_template(text, name, is_credential_like(name), &p, vaults, diags) {
            injection.query.push((name.clone(), t));
        }
    }
    for (pointer, text) in &raw.json {
        let p = path.key("json").key(pointer.as_str());
        let Some(tokens) = pointer_tokens(pointer) else {
            diags.error_with_hint(&p, format!("{pointer:?} is not a JSON pointer"), "write it like \"/auth/api_key\"");
            continue;
        };
        let last = tokens.last().map_or("", String::as_str);
        if let Some(t) = compile_template(text, last, is_credential_like(last), &p, vaults, diags) {
            injection.json.push((pointer.clone(), t));
        }
    }
    if let Some(RawBasicAuth { username, password }) = &raw.basic_auth {
        let p = path.key("basic_auth");
        let user = compile_template(username, "username", false, &p.key("username"), vaults, diags);
        let pass = compile_template(password, "password", true, &p.key("password"), vaults, diags);
        if let (Some(user), Some(pass)) = (user, pass) {
            if user.parts().iter().any(|part| matches!(part, Part::Literal(l) if l.contains(':'))) {
                diags.error(&p.key("username"), "a basic-auth user name cannot contain ':'");
            }
            injection.basic_auth = Some((user, pass));
        }
    }
    if raw.json_max_bytes == Some(0) {
        diags.error(&path.key("json_max_bytes"), "must be positive");
    }
    injection
}

/// Names an [`Injection`] writes: whatever the caller sent under them is removed first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamesToStrip {
    /// Request headers to remove.
    pub headers: Vec<HeaderName>,
    /// Query parameters to remove.
    pub query: Vec<String>,
}

impl Injection {
    /// The largest JSON body this injection rewrites.
    pub fn json_max_bytes(&self) -> usize {
        self.json_max_bytes
    }

    /// True when this injects anything (responses are then scrubbed by default).
    pub fn injects(&self) -> bool {
        !(self.headers.is_empty()
            && self.query.is_empty()
            && self.json.is_empty()
            && self.basic_auth.is_none()
            && self.upstream_path.is_none())
    }

    /// Takes the upstream URL's path from `template` (webhook URLs whose path carries the
    /// credential), after checking its references against the vaults; `path` names the
    /// trigger's `upstream` option.
    pub fn set_upstream_path(&mut self, template: Template, path: &KeyPath, vaults: &Vaults, diags: &mut Diagnostics) {
        let mark = diags.mark();
        check_references(&template, path, vaults, diags);
        if diags.ok_since(mark) {
            self.upstream_path = Some(template);
        }
    }

    /// True when the trigger injects JSON body fields.
    pub fn has_json(&self) -> bool {
        !self.json.is_empty()
    }

    /// Every reference used, sorted and deduplicated (for `flowgate secrets`).
    pub fn references(&self) -> Vec<&SecretRef> {
        let templates = self
            .headers
            .iter()
            .map(|(_, t)| t)
            .chain(self.query.iter().map(|(_, t)| t))
            .chain(self.json.iter().map(|(_, t)| t))
            .chain(self.upstream_path.iter());
        let basic = self.basic_auth.iter().flat_map(|(u, p)| [u, p]);
        let mut refs: Vec<&SecretRef> = templates.chain(basic).flat_map(Template::references).collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// Header and query names the caller must not set (injected names; `authorization` with
    /// basic auth).
    pub fn names_to_strip(&self) -> NamesToStrip {
        let mut headers: Vec<HeaderName> = self.headers.iter().map(|(n, _)| n.clone()).collect();
        if self.basic_auth.is_some() {
            headers.push(http::header::AUTHORIZATION);
        }
        NamesToStrip { headers, query: self.query.iter().map(|(n, _)| n.clone()).collect() }
    }

    /// Resolves every reference and renders the values. Requires the call's [`Permit`]: only
    /// admitted calls reach a vault.
    ///
    /// # Errors
    /// The first [`SecretError`] (the call must fail with 503; nothing partial is sent).
    pub async fn render(
        &self,
        _permit: &Permit,
        store: &SecretStore,
        vaults: &Vaults,
    ) -> Result<Rendered, SecretError> {
        let mut rendered = Rendered { json_max_bytes: self.json_max_bytes, ..Default::default() };
        for (name, template) in &self.headers {
            let value = render_template(template, store, vaults, &mut rendered.secrets).await?;
            rendered.headers.push((name.clone(), header_value(name, &value)?));
        }
        for (name, template) in &self.query {
            rendered.query.push((name.clone(), render_template(template, store, vaults, &mut rendered.secrets).await?));
        }
        for (pointer, template) in &self.json {
            rendered
                .json
                .push((pointer.clone(), render_template(template, store, vaults, &mut rendered.secrets).await?));
        }
        if let Some((user, pass)) = &self.basic_auth {
            let user = render_template(user, store, vaults, &mut rendered.secrets).await?;
            let pass = render_template(pass, store, vaults, &mut rendered.secrets).await?;
            let mut pair = Zeroizing::new(String::with_capacity(user.len() + pass.len() + 1));
            pair.push_str(user.expose_secret());
            pair.push(':');
            pair.push_str(pass.expose_secret());
            let mut header = Zeroizing::new(String::with_capacity(6 + pair.len().div_ceil(3) * 4));
            header.push_str("Basic ");
            base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut header);
            let name = http::header::AUTHORIZATION;
            let basic = SecretValue::new(std::mem::take(&mut *header));
            let value = header_value(&name, &basic)?;
            // An upstream may echo the credentials without the `Basic ` scheme word.
            if let Some(credentials) = basic.expose_secret().strip_prefix("Basic ") {
                rendered.secrets.push(SecretValue::new(credentials.to_owned()));
            }
            rendered.secrets.push(basic);
            rendered.headers.push((name, value));
        }
        if let Some(template) = &self.upstream_path {
            let mut parts = Vec::new();
            let path = render_template(template, store, vaults, &mut parts).await?;
            for (reference, value) in template.references().zip(&parts) {
                if let Some(what) = unusable_in_path(value.expose_secret()) {
                    return Err(SecretError::Malformed { reference: reference.to_string(), what: what.to_owned() });
                }
            }
            rendered.secrets.extend(parts);
            rendered.upstream_path = Some(path);
        }
        Ok(rendered)
    }
}

/// The encodings of `value` an upstream may echo besides the raw text, when they differ from
/// it: form-urlencoded (as sent in the query string) and JSON-escaped (as sent in a JSON body).
fn echo_forms(value: &SecretValue) -> Vec<SecretValue> {
    let raw = value.expose_secret();
    let mut forms = Vec::new();
    let mut encoded = Zeroizing::new(String::with_capacity(raw.len() * 3));
    for piece in url::form_urlencoded::byte_serialize(raw.as_bytes()) {
        encoded.push_str(piece);
    }
    if *encoded != raw {
        forms.push(SecretValue::new(std::mem::take(&mut *encoded)));
    }
    let mut json = Zeroizing::new(Vec::with_capacity(raw.len() * 6 + 2));
    if serde_json::to_writer(&mut *json, raw).is_ok()
        && let Some(inner) = json.get(1..json.len().saturating_sub(1))
        && inner != raw.as_bytes()
        && let Ok(text) = std::str::from_utf8(inner)
    {
        forms.push(SecretValue::new(text.to_owned()));
    }
    forms
}

/// Why a vault value cannot stand in an upstream URL's path, if it cannot: only path
/// characters (RFC 3986 `pchar` and `/`), no empty, `.` or `..` segment (the value must not
/// move the call elsewhere on the upstream).
fn unusable_in_path(value: &str) -> Option<&'static str> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
    if value.is_empty() {
        return Some("the value for the upstream path is empty");
    }
    if !value.bytes().all(allowed) {
        return Some("the value holds characters that cannot stand in a URL path");
    }
    let segments = value.strip_prefix('/').unwrap_or(value).strip_suffix('/').unwrap_or(value);
    if segments.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Some("the value holds an empty, `.` or `..` path segment");
    }
    None
}

fn header_value(name: &HeaderName, value: &SecretValue) -> Result<HeaderValue, SecretError> {
    super::value::sensitive_header(value.expose_secret())
        .ok_or_else(|| SecretError::InvalidHeaderValue { name: name.as_str().to_owned() })
}

#[cfg(any(test, feature = "test-util"))]
impl Template {
    /// Renders this template alone through the cache, without a `Permit`: for benches only
    /// (feature `test-util`). The request path uses [`Injection::render`] (permit required).
    ///
    /// # Errors
    /// The first [`SecretError`].
    pub async fn render(&self, store: &SecretStore, vaults: &Vaults) -> Result<SecretValue, SecretError> {
        render_template(self, store, vaults, &mut Vec::new()).await
    }
}

async fn render_template(
    template: &Template,
    store: &SecretStore,
    vaults: &Vaults,
    secrets: &mut Vec<SecretValue>,
) -> Result<SecretValue, SecretError> {
    let mut values = Vec::with_capacity(template.parts().len());
    for part in template.parts() {
        if let Part::Secret(reference) = part {
            let value = store.lookup(reference, vaults).await?;
            secrets.push(value.clone());
            values.push(value);
        }
    }
    if let [Part::Secret(_)] = template.parts() {
        return values
            .pop()
            .ok_or_else(|| SecretError::Malformed { reference: String::new(), what: "empty template".into() });
    }
    // Size the buffer first so that no reallocation leaves partial copies behind.
    let len = template.parts().iter().map(|p| if let Part::Literal(l) = p { l.len() } else { 0 }).sum::<usize>()
        + values.iter().map(SecretValue::len).sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut values = values.iter();
    for part in template.parts() {
        match part {
            Part::Literal(l) => out.push_str(l),
            Part::Secret(_) => out.push_str(values.next().map_or("", SecretValue::expose_secret)),
        }
    }
    Ok(SecretValue::new(std::mem::take(&mut *out)))
}

/// The values of one call, ready to write into the upstream request. Header values are
/// marked sensitive; the rest stay in [`SecretValue`]s until written. `HeaderValue`s cannot
/// be zeroized (they are shared `Bytes`); everything else is, when the `Rendered` drops.
#[derive(Debug, Default)]
pub struct Rendered {
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, SecretValue)>,
    json: Vec<(String, SecretValue)>,
    json_max_bytes: usize,
    /// The values as injected (their echo forms are made only for a capture).
    secrets: Vec<SecretValue>,
    upstream_path: Option<SecretValue>,
}

#[cfg(test)]
impl Rendered {
    /// A rendering that injected `values`, for tests of what reads them.
    pub(crate) fn injecting(values: impl IntoIterator<Item = SecretValue>) -> Self {
        Self { secrets: values.into_iter().collect(), ..Self::default() }
    }
}

impl Rendered {
    /// Header pairs (including basic auth's `authorization`), values marked sensitive.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Query pairs.
    pub fn query(&self) -> &[(String, SecretValue)] {
        &self.query
    }

    /// The upstream URL's path, when it takes parts from the vault.
    pub fn upstream_path(&self) -> Option<&SecretValue> {
        self.upstream_path.as_ref()
    }

    /// Removes the caller's headers of injected names, then inserts the injected ones.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        for (name, _) in &self.headers {
            headers.remove(name);
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Writes the JSON fields into a JSON request body (creating missing objects on the way).
    ///
    /// # Errors
    /// [`SecretError::JsonBody`] when the body is larger than `json_max_bytes`, is not JSON,
    /// or a pointer crosses a non-object.
    pub fn apply_json(&self, body: Bytes) -> Result<Bytes, SecretError> {
        if self.json.is_empty() {
            return Ok(body);
        }
        let fail = |problem: &str| SecretError::JsonBody { problem: problem.to_owned() };
        if body.len() > self.json_max_bytes {
            return Err(fail("body larger than json_max_bytes"));
        }
        let mut root: serde_json::Value = if body.is_empty() {
            serde_json::Value::Object(serde_json::Map::default())
        } else {
            serde_json::from_slice(&body).map_err(|_| fail("body is not JSON"))?
        };
        for (pointer, value) in &self.json {
            let tokens = pointer_tokens(pointer).ok_or_else(|| fail("invalid pointer"))?;
            if !set_pointer(&mut root, &tokens, value) {
                zeroize_tree(&mut root);
                return Err(fail("a JSON pointer crosses a value that is not an object"));
            }
        }
        let out = serde_json::to_vec(&root).map_err(|_| fail("cannot serialize"));
        zeroize_tree(&mut root);
        out.map(Bytes::from)
    }

    /// Every secret value used in this call and the forms an upstream may echo it in (the
    /// run history redacts them wherever they appear). Upstreams echo values the way they
    /// received them: a query value form-encoded (an echoed request URL), a JSON field
    /// escaped; the redaction matches plain substrings, so it needs those forms too. Made
    /// on demand: only a capturing trigger's calls need them.
    pub fn secret_values(&self) -> Vec<SecretValue> {
        let echoed = self.secrets.iter().flat_map(echo_forms);
        self.secrets.iter().cloned().chain(echoed).collect()
    }

    /// A scrubber for every secret value used in this call (for `scrub_responses`); it
    /// decodes escapes itself, so it needs only the values as injected.
    pub fn scrubber(&self) -> Scrubber {
        Scrubber::new(self.secrets.iter().cloned())
    }
}

fn set_pointer(root: &mut serde_json::Value, tokens: &[String], value: &SecretValue) -> bool {
    let Some((last, parents)) = tokens.split_last() else { return false };
    let mut node = root;
    for token in parents {
        let Some(map) = node.as_object_mut() else { return false };
        node = map.entry(token.clone()).or_insert_with(|| serde_json::Value::Object(serde_json::Map::default()));
    }
    match node.as_object_mut() {
        Some(map) => {
            map.insert(last.clone(), serde_json::Value::String(value.expose_secret().to_owned()));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::store::CacheSettings;
    use crate::secrets::vault::TestBackend;
    use std::time::Duration;

    fn compile(toml_text: &str, vaults: &Vaults) -> (Injection, Vec<(String, String, Option<String>)>) {
        let raw: RawInject = toml::from_str(toml_text).unwrap();
        let mut diags = Diagnostics::default();
        let inj = compile_injection(&raw, &KeyPath::root().key("inject"), vaults, &mut diags);
        (inj, diags.into_vec().into_iter().map(|d| (d.path.to_string(), d.message, d.hint)).collect())
    }

    #[test]
    fn credential_like_names() {
        for name in [
            "Authorization",
            "x-api-key",
            "apikey",
            "X-Functions-Key",
            "sig",
            "code",
            "client_secret",
            "password",
            "access_token",
            "key",
        ] {
            assert!(is_credential_like(name), "{name}");
        }
        for name in ["x-request-source", "content-type", "tenant", "api-version", "monkey-business"] {
            assert!(!is_credential_like(name), "{name}");
        }
    }

    #[test]
    fn refuses_literal_credentials_with_a_hint() {
        let (vaults, _) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        let (_, diags) = compile(
            "headers.\"x-api-key\" = \"abc123\"\nheaders.\"x-source\" = \"flowgate\"\nquery.sig = \"literal\"\nbasic_auth = { username = \"u\", password = \"p\" }",
            &vaults,
        );
        let paths: Vec<&str> = diags.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(paths, ["inject.headers.x-api-key", "inject.query.sig", "inject.basic_auth.password"]);
        assert!(diags.iter().all(|d| d.2.as_deref() == Some("use a secret:// reference")));
        assert!(diags.iter().all(|d| !d.1.contains("abc123")));
    }

    #[test]
    fn refuses_unknown_vaults_and_bad_versions() {
        let (vaults, _) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        let (_, diags) =
            compile("headers.\"x-api-key\" = \"secret://nope/a\"\nquery.sig = \"secret://kv/a@latest\"", &vaults);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags[0].1.contains("no [vault.nope]"));
        assert!(diags[1].1.contains("version is a number"));
    }

    #[tokio::test]
    async fn renders_headers_query_json_and_basic_auth() {
        let (vaults, _) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        let (inj, diags) = compile(
            r#"
            headers.authorization = "Bearer {{secret://kv/flows#token}}"
            headers."x-source" = "flowgate"
            query.sig = "secret://kv/flows#sig"
            json."/auth/key" = "secret://kv/flows#json"
            "#,
            &vaults,
        );
        assert!(diags.is_empty(), "{diags:?}");
        let store = SecretStore::new();
        let r = inj.render(&Permit::for_tests(), &store, &vaults).await.unwrap();
        let auth = &r.headers()[0];
        assert_eq!(auth.0, "authorization");
        assert_eq!(auth.1, "Bearer v1-token");
        assert!(auth.1.is_sensitive());
        assert_eq!(r.headers()[1].1, "flowgate");

        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer caller"));
        headers.insert("x-source", HeaderValue::from_static("evil"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        r.apply_headers(&mut headers);
        assert_eq!(headers.get_all("authorization").iter().count(), 1);
        assert_eq!(headers["authorization"], "Bearer v1-token");
        assert_eq!(headers["x-source"], "flowgate");
        assert_eq!(headers["accept"], "*/*");

        // The request path appends these after dropping the caller's `sig` (`Upstream::uri_for`).
        let query: Vec<(&str, &str)> = r.query().iter().map(|(n, v)| (n.as_str(), v.expose_secret())).collect();
        assert_eq!(query, [("sig", "v1-sig")]);

        let body = r.apply_json(Bytes::from_static(br#"{"auth":{"key":"caller"},"n":1}"#)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"auth": {"key": "v1-json"}, "n": 1}));
        assert_eq!(r.apply_json(Bytes::from_static(b"[1]")).unwrap_err().kind(), "json_body");
        assert_eq!(r.apply_json(Bytes::from_static(b"not json")).unwrap_err().kind(), "json_body");

        let names = inj.names_to_strip();
        assert_eq!(names.headers, ["authorization", "x-source"]);
        assert_eq!(names.query, ["sig"]);
        assert_eq!(inj.references().len(), 3);
        assert!(!format!("{r:?}").contains("v1-"));
    }

    #[tokio::test]
    async fn basic_auth_and_json_size_limit() {
        let (vaults, _) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        let (inj, diags) = compile(
            "basic_auth = { username = \"svc\", password = \"secret://kv/pw\" }\njson_max_bytes = 8\njson.\"/k\" = \"secret://kv/j\"",
            &vaults,
        );
        assert!(diags.is_empty(), "{diags:?}");
        let r = inj.render(&Permit::for_tests(), &SecretStore::new(), &vaults).await.unwrap();
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("svc:v1"));
        assert_eq!(r.headers()[0].1, expected.as_str());
        assert!(r.headers()[0].1.is_sensitive());
        assert_eq!(inj.names_to_strip().headers, [http::header::AUTHORIZATION]);
        let err = r.apply_json(Bytes::from_static(br#"{"aaaaaaaaaa":1}"#)).unwrap_err();
        assert!(err.to_string().contains("json_max_bytes"));
    }

    #[tokio::test]
    async fn scrubbing_covers_the_forms_an_upstream_echoes() {
        let (vaults, backend) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        backend.set("a&b \"c\\");
        let (inj, diags) = compile(
            "query.code = \"secret://kv/q\"\nbasic_auth = { username = \"svc\", password = \"secret://kv/pw\" }",
            &vaults,
        );
        assert!(diags.is_empty(), "{diags:?}");
        let r = inj.render(&Permit::for_tests(), &SecretStore::new(), &vaults).await.unwrap();
        let credentials = base64::engine::general_purpose::STANDARD.encode("svc:a&b \"c\\");
        let echoed =
            format!("target=/x?code=a%26b+%22c%5C json={{\"v\":\"a&b \\\"c\\\\\"}} raw=a&b \"c\\ creds={credentials}");
        let text = String::from_utf8(r.scrubber().scrub_bytes(echoed.as_bytes())).unwrap();
        assert_eq!(text, "target=/x?code=[redacted] json={\"v\":\"[redacted]\"} raw=[redacted] creds=[redacted]");
    }

    #[tokio::test]
    async fn upstream_path_parts_come_from_the_vault_and_must_stay_in_the_path() {
        let (vaults, backend) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        let mut inj = Injection::default();
        let mut diags = Diagnostics::default();
        let template = Template::parse("/services/{{secret://kv/hook}}").unwrap();
        inj.set_upstream_path(template, &KeyPath::root().key("upstream"), &vaults, &mut diags);
        assert!(diags.is_empty() && inj.injects());
        assert_eq!(inj.references().len(), 1);
        backend.set("T1/B2/c3");
        let r = inj.render(&Permit::for_tests(), &SecretStore::new(), &vaults).await.unwrap();
        assert_eq!(r.upstream_path().unwrap().expose_secret(), "/services/T1/B2/c3");
        assert!(r.scrubber().scrub_bytes(b"T1/B2/c3") == b"[redacted]");
        for bad in ["../admin", "a//b", "a?b=1", "a#b", "a b", ""] {
            backend.set(bad);
            let err = inj.render(&Permit::for_tests(), &SecretStore::new(), &vaults).await.unwrap_err();
            assert!(err.to_string().starts_with("secret://kv/hook: "), "{err}");
            assert!(bad.is_empty() || !err.to_string().contains(bad), "{err}");
        }
        let mut diags = Diagnostics::default();
        let unknown = Template::parse("/x/{{secret://nope/hook}}").unwrap();
        Injection::default().set_upstream_path(unknown, &KeyPath::root().key("upstream"), &vaults, &mut diags);
        assert_eq!(diags.into_vec().len(), 1);
    }

    #[tokio::test]
    async fn a_failing_vault_fails_the_render() {
        let (vaults, backend) = TestBackend::vaults("kv", CacheSettings::default(), Duration::ZERO);
        backend.fail(true);
        let (inj, _) = compile("headers.\"x-api-key\" = \"secret://kv/a\"", &vaults);
        let err = inj.render(&Permit::for_tests(), &SecretStore::new(), &vaults).await.unwrap_err();
        assert_eq!(err.to_string(), "secret://kv/a: vault is sealed");
    }
}
