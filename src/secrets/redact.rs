//! [`Redactor`]: the one home of "no injected value leaves towards the caller, a log or a
//! record" for one call. Built once per call, when the secrets are rendered, from those
//! values, the caller's own credential and the upstream URL's credential values; the
//! values of the request's private fields join it when the capture is written (they are
//! known only once the request body was read).
//!
//! Two audiences read it:
//! - what the caller receives: [`Redactor::scrubber`] replaces the injected values, in
//!   every escaped form, in response headers, trailers and bodies (`proxy/forward.rs`);
//! - the run record: [`Redactor::scrub_captured`] passes the captured response through
//!   that same scrubber (no second one is built), and [`Redactor::record_values`] lists
//!   everything the capture must drop or replace (`audit/capture.rs`).
//!
//! [`redact_url`] hides the credentials a URL carries (user, password, credential-like
//! query values) wherever one is shown: captured headers and the admins' policy view.

use super::inject::Rendered;
use super::scrub::Scrubber;
use zeroize::Zeroizing;

/// Everything one call must not let out. Cheap to clone (the scrubber is shared).
#[derive(Clone, Default)]
pub struct Redactor {
    /// The injected values: scrubbed from what the caller receives and from the record.
    scrubber: Scrubber,
    /// Values the record must not hold, as plain substrings: the injected values and the
    /// forms an upstream echoes them in, the caller's credential, the upstream URL's
    /// credential values, and (once known) the values of dropped private fields.
    record: Vec<Zeroizing<Vec<u8>>>,
}

#[expect(clippy::missing_fields_in_debug, reason = "the values are secrets: only their count is shown")]
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("record_values", &self.record.len()).finish()
    }
}

impl Redactor {
    /// The redactor of a call whose injection rendered `rendered`: its scrubber, for what
    /// the caller receives. The record values are added by [`Redactor::recording`], only
    /// for a call whose record captures headers or bodies (nothing else in a record can
    /// hold a value), so that other calls never copy them.
    pub fn new(rendered: &Rendered) -> Self {
        Self { scrubber: rendered.scrubber(), record: Vec::new() }
    }

    /// This redactor, also holding every value the record must not hold: `rendered`'s
    /// injected values in every form an upstream echoes them in, `caller_credential` (what
    /// the caller authenticated with: a bearer token), `upstream_credentials` (the
    /// credential-like query values of the trigger's upstream URL).
    #[must_use]
    pub fn recording(
        mut self,
        rendered: &Rendered,
        caller_credential: Option<&[u8]>,
        upstream_credentials: &[String],
    ) -> Self {
        let injected = rendered.secret_values();
        let values = injected
            .iter()
            .map(|value| value.expose_secret().as_bytes())
            .chain(caller_credential)
            .chain(upstream_credentials.iter().map(String::as_bytes))
            .filter(|value| !value.is_empty())
            .map(|value| Zeroizing::new(value.to_vec()));
        self.record.extend(values);
        self
    }

    /// The scrubber of the injected values, for everything the caller receives.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }

    /// Adds the values of the request's dropped private fields: redacted from the record
    /// wherever they reappear (an upstream echoing its input), like injected values.
    pub fn add_private_values(&mut self, values: Vec<Vec<u8>>) {
        self.record.extend(values.into_iter().filter(|v| !v.is_empty()).map(Zeroizing::new));
    }

    /// Every value the record must not hold, as plain substrings.
    pub fn record_values(&self) -> Vec<&[u8]> {
        self.record.iter().map(|value| value.as_slice()).collect()
    }

    /// A captured response body with the injected values replaced in every escaped form
    /// (the caller may have had them unscrubbed), and the length to record: the
    /// redacted length when the capture holds the whole body, else `sent`.
    pub fn scrub_captured(&self, tapped: Vec<u8>, sent: u64) -> (Vec<u8>, u64) {
        if self.scrubber.is_empty() {
            return (tapped, sent);
        }
        let whole = tapped.len() as u64 == sent;
        let redacted = self.scrubber.scrub_bytes(&tapped);
        let len = if whole { redacted.len() as u64 } else { sent };
        (redacted, len)
    }
}

/// A URL with its user name, password and credential-like query values replaced by `[redacted]`;
/// any other text unchanged.
pub fn redact_url(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    // `{{secret://…}}` parts (an upstream path taken from the vault) are references, shown
    // as written: they are set aside while the URL is parsed (their `#field` is no fragment).
    if text.contains("{{") {
        let mut parts = Vec::new();
        let mut cut = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else { break };
            cut.push_str(&rest[..start]);
            cut.push_str(&format!("flowgate-reference-{}", parts.len()));
            parts.push(&rest[start..start + end + 2]);
            rest = &rest[start + end + 2..];
        }
        cut.push_str(rest);
        let shown = redact_url(&cut);
        return parts
            .iter()
            .enumerate()
            .rev()
            .fold(shown, |shown, (i, part)| shown.replace(&format!("flowgate-reference-{i}"), part));
    }
    let Ok(mut url) = url::Url::parse(text) else { return text.to_owned() };
    let mut changed = false;
    if url.password().is_some() {
        changed = url.set_password(Some("redacted")).is_ok();
    }
    // A token is sometimes given as the user name (`https://TOKEN@host`).
    if !url.username().is_empty() {
        changed |= url.set_username("redacted").is_ok();
    }
    if let Some(query) = url.query().map(str::to_owned) {
        let mut hidden = false;
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                if crate::secrets::is_credential_like(name) {
                    hidden = true;
                    format!("{name}=[redacted]")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        if hidden {
            url.set_query(Some(&parts.join("&")));
            changed = true;
        }
    }
    if changed { url.to_string() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretValue;

    fn redactor() -> Redactor {
        let rendered = Rendered::injecting([SecretValue::new("inj value+1".to_owned())]);
        let mut redactor =
            Redactor::new(&rendered).recording(&rendered, Some(b"CALLERTOKEN".as_slice()), &["UPSIG".to_owned()]);
        redactor.add_private_values(vec![b"pw-private".to_vec(), Vec::new()]);
        redactor
    }

    #[test]
    fn the_caller_gets_injected_values_scrubbed_and_its_own_token_back() {
        let redactor = redactor();
        let scrubbed = redactor.scrubber().scrub_bytes(b"a inj%20value%2B1 b CALLERTOKEN");
        let text = String::from_utf8(scrubbed).unwrap();
        assert!(!text.contains("inj") && text.contains(crate::secrets::REDACTED_MARKER), "{text}");
        assert!(text.contains("CALLERTOKEN"), "the caller's own token is the caller's to see: {text}");
    }

    #[test]
    fn the_record_drops_every_value_the_call_must_not_let_out() {
        let redactor = redactor();
        let values: Vec<String> =
            redactor.record_values().iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        for expected in ["inj value+1", "inj+value%2B1", "CALLERTOKEN", "UPSIG", "pw-private"] {
            assert!(values.iter().any(|v| v == expected), "{expected} missing from {values:?}");
        }
        assert!(values.iter().all(|v| !v.is_empty()));
        assert!(!format!("{redactor:?}").contains("inj"), "Debug shows no value");
    }

    #[test]
    fn a_captured_response_passes_the_same_scrubber_and_keeps_its_length_rule() {
        let redactor = redactor();
        let echoed = br#"{"v":"inj value\u002b1"}"#.to_vec();
        let sent = echoed.len() as u64;
        let (whole, len) = redactor.scrub_captured(echoed.clone(), sent);
        assert!(!String::from_utf8_lossy(&whole).contains("inj"), "{}", String::from_utf8_lossy(&whole));
        assert_eq!(len, whole.len() as u64, "a whole capture records its redacted length");
        let (_, len) = redactor.scrub_captured(echoed, sent + 100);
        assert_eq!(len, sent + 100, "a truncated capture records what was sent");
    }
}
