//! A trigger's upstream settings: its URL taken apart once at compile time, and the TLS
//! client configuration (system roots plus an optional CA) that reaches it. The pooled
//! client that uses them lives in `web/client.rs`.

use super::RawTrigger;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use rustls::RootCertStore;
use std::collections::HashSet;
use std::sync::Arc;

/// The TLS client configuration for upstreams: the system roots plus `extra_roots`
/// (a trigger's `upstream_ca`). Loading the system roots reads files: this runs when a
/// policy compiles or a gateway starts, never per call.
///
/// # Errors
/// The TLS versions cannot be configured.
pub fn upstream_tls(extra_roots: Option<&RootCertStore>) -> Result<Arc<rustls::ClientConfig>, UpstreamTlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system store may hold certificates rustls cannot parse; skipping them is what
        // every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(extra) = extra_roots {
        roots.roots.extend(extra.roots.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(UpstreamTlsError)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The TLS client configuration for upstreams could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamTlsError(#[source] rustls::Error);

/// The upstream URI of a call cannot be built (an unparsable caller path).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the upstream URI: {0}")]
pub struct UpstreamUriError(#[from] http::Error);

/// An upstream URL, taken apart.
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: Authority,
    /// The `Host` header value sent upstream.
    pub host_header: HeaderValue,
    /// The URL's path (no trailing slash unless it is `/`).
    pub base_path: String,
    /// The URL's own query, raw (`a=1&b=2`), possibly empty.
    pub base_query: String,
    /// Decoded, lower-cased names of the URL's query parameters: a caller cannot override these.
    pub fixed_params: HashSet<String>,
    /// Values of the URL's credential-like query parameters (`sig`, `code`, ...): the run
    /// history redacts them wherever an upstream echoes them.
    pub credential_values: Vec<String>,
    /// The URL without its query, for logs (trigger URLs carry signatures in the query).
    /// A path credential taken from the vault shows as its `{{secret://…}}` reference.
    pub display: String,
    /// The path as a template when it takes a part from the vault (webhook URLs carrying
    /// their credential in the path); moved into the trigger's injection at compile time.
    pub path_template: Option<crate::secrets::Template>,
    /// The TLS client configuration trusting this upstream's own CA (`upstream_ca`) besides
    /// the system roots, when it has one; otherwise the gateway's shared pool is used
    /// (`web::Upstreams`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Upstream {
    pub(super) fn compile(
        raw: &RawTrigger,
        source: &SourceFile,
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let key = path.key("upstream");
        // `{{secret://…}}` parts are cut out before parsing: their `#field` would read as
        // a fragment. They may stand in the path only.
        let (url_text, templates) = match cut_templates(&raw.upstream) {
            Ok(cut) => cut,
            Err(problem) => {
                diags.error(&key, problem.to_string());
                return None;
            }
        };
        let url = match url::Url::parse(&url_text) {
            Ok(url) => url,
            Err(e) => {
                diags.error_with_hint(&key, format!("not a URL: {e}"), "write https://host/path?query");
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            diags.error(&key, format!("scheme {:?} is not http or https", url.scheme()));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            diags.error_with_hint(
                &key,
                "carries credentials in the URL",
                "inject them from a vault with inject.basic_auth or inject.headers instead",
            );
            return None;
        }
        if url.fragment().is_some() {
            diags.error(&key, "must not carry a #fragment");
        }
        let Some(host) = url.host_str() else {
            diags.error(&key, "has no host");
            return None;
        };
        let authority_text = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority: Authority = match authority_text.parse() {
            Ok(a) => a,
            Err(e) => {
                diags.error(&key, format!("bad host: {e}"));
                return None;
            }
        };
        let scheme = if url.scheme() == "https" { Scheme::HTTPS } else { Scheme::HTTP };
        let base_path = match url.path().trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let base_query = url.query().unwrap_or("").to_owned();
        let mut path_template = None;
        let mut shown_path = base_path.clone();
        if !templates.is_empty() {
            let elsewhere = [Some(host), url.query(), url.fragment()]
                .into_iter()
                .flatten()
                .any(|part| part.to_ascii_lowercase().contains(PLACEHOLDER));
            if elsewhere {
                diags.error_with_hint(
                    &key,
                    "a {{secret://…}} part may only stand in the URL's path",
                    "inject query parameters with inject.query",
                );
                return None;
            }
            shown_path = restore_templates(&base_path, &templates);
            match crate::secrets::Template::parse(&shown_path) {
                Ok(template) => path_template = Some(template),
                Err(e) => {
                    diags.error_with_hint(&key, e.to_string(), "write {{secret://VAULT/PATH[#field]}} in the path");
                    return None;
                }
            }
        }
        let fixed_params = url.query_pairs().map(|(name, _)| name.to_ascii_lowercase()).collect();
        let credential_values = url
            .query_pairs()
            // Short values (`sv=1.0`, `sp=/triggers`) are not secrets and would shred records.
            .filter(|(name, value)| crate::secrets::is_credential_like(name) && value.len() >= 8)
            .map(|(_, value)| value.into_owned())
            .collect();
        let tls = raw.upstream_ca.as_ref().and_then(|ca| {
            let roots = match crate::tls::read_roots(&source.resolve(ca)) {
                Ok(roots) => roots,
                Err(e) => {
                    diags.error(&path.key("upstream_ca"), e.to_string());
                    return None;
                }
            };
            match upstream_tls(Some(&roots)) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    diags.error(&path.key("upstream_ca"), e.to_string());
                    None
                }
            }
        });
        let host_header = HeaderValue::from_str(authority.as_str()).ok()?;
        let display = format!("{scheme}://{authority}{shown_path}");
        Some(Self {
            scheme,
            authority,
            host_header,
            base_path,
            base_query,
            fixed_params,
            credential_values,
            display,
            path_template,
            tls,
        })
    }

    /// [`Upstream::uri_for`] with the path rendered from the vault (`base_path`) when the
    /// upstream takes part of its path from there.
    ///
    /// # Errors
    /// The resulting URI is invalid.
    pub fn uri_for_path(
        &self,
        base_path: Option<&str>,
        rest: &str,
        caller_query: Option<&str>,
        reserved: &HashSet<String>,
        appended: &[(&str, &str)],
    ) -> Result<Uri, UpstreamUriError> {
        let base = base_path.map(|p| match p.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        });
        Ok(self.build_uri(base.unwrap_or(&self.base_path), rest, caller_query, reserved, appended)?)
    }

    /// The upstream URI for a call: the base path plus the rest of a prefix match, and the
    /// upstream's own query followed by the caller's parameters that do not collide with it
    /// or with `reserved` (lower-case names: injected and signature parameters), then
    /// `appended` (injected parameters, form-encoded). Names compare case-insensitively:
    /// many upstreams (ASP.NET among them) read them that way. Names holding `;` are
    /// dropped and a `;` in a caller's value is sent as `%3B`, so an upstream that splits
    /// on `;` sees no parameter the caller smuggled in.
    ///
    /// # Errors
    /// The resulting URI is invalid (an unparsable caller path).
    pub fn uri_for(
        &self,
        rest: &str,
        caller_query: Option<&str>,
        reserved: &HashSet<String>,
        appended: &[(&str, &str)],
    ) -> Result<Uri, http::Error> {
        self.build_uri(&self.base_path, rest, caller_query, reserved, appended)
    }

    fn build_uri(
        &self,
        base_path: &str,
        rest: &str,
        caller_query: Option<&str>,
        reserved: &HashSet<String>,
        appended: &[(&str, &str)],
    ) -> Result<Uri, http::Error> {
        let mut path_and_query = String::with_capacity(base_path.len() + rest.len() + 64);
        path_and_query.push_str(base_path);
        if !rest.is_empty() {
            if path_and_query.ends_with('/') {
                path_and_query.push_str(rest.trim_start_matches('/'));
            } else {
                if !rest.starts_with('/') {
                    path_and_query.push('/');
                }
                path_and_query.push_str(rest);
            }
        }
        let mut query = self.base_query.clone();
        for pair in caller_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let raw_name = pair.split('=').next().unwrap_or("");
            let name: String = url::form_urlencoded::parse(raw_name.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            // Case-insensitive, and no `;` tricks: some servers split pairs on `;` too.
            let lower = name.to_ascii_lowercase();
            if self.fixed_params.contains(&lower) || reserved.contains(&lower) || name.contains(';') {
                continue;
            }
            if !query.is_empty() {
                query.push('&');
            }
            // A raw `;` in a value means a literal `;` to form decoding, but upstreams that
            // split pairs on `;` too (classic ASP, some CGI and Java stacks) would read the
            // rest as another parameter, perhaps a reserved one: send it encoded.
            query.push_str(&pair.replace(';', "%3B"));
        }
        if !appended.is_empty() {
            let mut extra = url::form_urlencoded::Serializer::new(String::new());
            extra.extend_pairs(appended.iter().copied());
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&extra.finish());
        }
        if !query.is_empty() {
            path_and_query.push('?');
            path_and_query.push_str(&query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Stands for the n-th `{{…}}` part of an upstream URL while the URL is parsed.
const PLACEHOLDER: &str = "flowgate-vault-part-";

/// An upstream URL whose `{{` part is never closed.
#[derive(Debug, thiserror::Error)]
#[error("{{{{ without }}}}")]
struct UnclosedTemplate;

/// The URL text with each `{{…}}` part replaced by a placeholder, and the parts.
fn cut_templates(text: &str) -> Result<(String, Vec<String>), UnclosedTemplate> {
    let mut out = String::with_capacity(text.len());
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { return Err(UnclosedTemplate) };
        out.push_str(&rest[..start]);
        out.push_str(&format!("{PLACEHOLDER}{}", parts.len()));
        parts.push(rest[start..start + end + 2].to_owned());
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok((out, parts))
}

/// `path` with the placeholders put back as the `{{…}}` parts they stand for.
fn restore_templates(path: &str, parts: &[String]) -> String {
    // Highest index first, so that `…-1` does not match inside `…-10`.
    parts
        .iter()
        .enumerate()
        .rev()
        .fold(path.to_owned(), |text, (i, part)| text.replace(&format!("{PLACEHOLDER}{i}"), part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let raw: RawTrigger = toml::from_str(&format!("name='t'\npath='/t'\nupstream='{url}'\nwho='anyone'")).unwrap();
        let source = SourceFile { name: "p".into(), base_dir: std::path::PathBuf::default(), text: String::new() };
        let mut diags = Diagnostics::default();
        Upstream::compile(&raw, &source, &KeyPath::root(), &mut diags).unwrap()
    }

    #[test]
    fn caller_cannot_override_upstream_query() {
        let u = upstream("https://flows.example/wf/abc/invoke?api-version=2016-06-01&sig=S");
        let uri = u.uri_for("", Some("sig=evil&x=1&api-version=1"), &HashSet::new(), &[]).unwrap();
        assert_eq!(uri.to_string(), "https://flows.example/wf/abc/invoke?api-version=2016-06-01&sig=S&x=1");
    }

    #[test]
    fn prefix_rest_is_appended_once() {
        let u = upstream("http://127.0.0.1:9/base/");
        assert_eq!(u.uri_for("/a/b", None, &HashSet::new(), &[]).unwrap().to_string(), "http://127.0.0.1:9/base/a/b");
        let root = upstream("http://127.0.0.1:9");
        assert_eq!(root.uri_for("/a", None, &HashSet::new(), &[]).unwrap().to_string(), "http://127.0.0.1:9/a");
    }

    fn refused(url: &str) -> String {
        let raw: RawTrigger = toml::from_str(&format!("name='t'\npath='/t'\nupstream='{url}'\nwho='anyone'")).unwrap();
        let source = SourceFile { name: "p".into(), base_dir: std::path::PathBuf::default(), text: String::new() };
        let mut diags = Diagnostics::default();
        assert!(Upstream::compile(&raw, &source, &KeyPath::root(), &mut diags).is_none(), "{url}");
        diags.into_vec().into_iter().map(|d| d.message).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn path_parts_from_the_vault() {
        let u = upstream("https://hooks.example/services/{{secret://kv/slack#path}}/x?v=1");
        assert_eq!(u.display, "https://hooks.example/services/{{secret://kv/slack#path}}/x");
        let template = u.path_template.as_ref().expect("a path template");
        assert_eq!(template.references().map(ToString::to_string).collect::<Vec<_>>(), ["secret://kv/slack#path"]);
        let uri = u.uri_for_path(Some("/services/T1/B2/c3/x"), "", None, &HashSet::new(), &[]).unwrap();
        assert_eq!(uri.to_string(), "https://hooks.example/services/T1/B2/c3/x?v=1");
        assert!(upstream("https://h/p").path_template.is_none());
        assert!(refused("https://h/p?sig={{secret://kv/s}}").contains("only stand in the URL's path"));
        assert!(refused("https://{{secret://kv/h}}/p").contains("only stand in the URL's path"));
        assert!(refused("https://h/{{secret://kv/s").contains("without"));
        assert!(refused("https://h/{{nope}}").contains("secret://"), "{}", refused("https://h/{{nope}}"));
    }

    #[test]
    fn semicolons_in_caller_values_are_encoded() {
        let u = upstream("http://h/p?sig=S");
        let uri = u.uri_for("", Some("x=1;sig=evil&a%3Bsig=y&z=%3B"), &HashSet::new(), &[]).unwrap();
        assert_eq!(uri.query(), Some("sig=S&x=1%3Bsig=evil&z=%3B"));
    }

    #[test]
    fn dropped_names_are_removed() {
        let u = upstream("http://h/p");
        let uri =
            u.uri_for("", Some("flowgate_sig=x&keep=1"), &HashSet::from(["flowgate_sig".to_owned()]), &[]).unwrap();
        assert_eq!(uri.query(), Some("keep=1"));
    }
}
