//! Subscription handshakes that senders require before they deliver, answered at the
//! edge on a trigger configured for them (never forwarded):
//! - Slack `url_verification`: a signed JSON body `{"type":"url_verification",
//!   "challenge":…}`, answered after its signature is verified with the challenge;
//! - Azure Event Grid subscription validation: `aeg-event-type: SubscriptionValidation`
//!   and a `Microsoft.EventGrid.SubscriptionValidationEvent`, answered with
//!   `{"validationResponse": code}`;
//! - Microsoft Graph change notifications: `POST …?validationToken=…`, answered with the
//!   token as `text/plain`.
//!
//! Event Grid and Graph send their handshakes unsigned, so they are answered before any
//! signature is read; the answer only echoes what the caller sent, and nothing reaches
//! the upstream. A handshake on a trigger not configured for it is an ordinary delivery
//! (and fails verification).

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;

/// Longest challenge or token echoed back.
pub const MAX_ECHO_BYTES: usize = 1024;

/// A handshake a trigger answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// Slack Events API `url_verification` (signed).
    SlackUrlVerification,
    /// Azure Event Grid subscription validation (unsigned).
    EventGrid,
    /// Microsoft Graph `validationToken` (unsigned).
    GraphValidation,
}

/// The answer to a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `Content-Type` of the answer.
    pub content_type: &'static str,
    /// Its body.
    pub body: Bytes,
}

impl Handshake {
    /// Its name in policy text and the run record.
    pub fn name(self) -> &'static str {
        match self {
            Self::SlackUrlVerification => "slack_url_verification",
            Self::EventGrid => "event_grid",
            Self::GraphValidation => "graph_validation",
        }
    }

    /// True when the sender signs its handshake: it is answered after verification.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::SlackUrlVerification)
    }

    /// The answer when this request is the handshake, else `None` (a delivery).
    pub fn answer(self, headers: &http::HeaderMap, query: Option<&str>, body: &[u8]) -> Option<Answer> {
        match self {
            Self::SlackUrlVerification => {
                let value: serde_json::Value = serde_json::from_slice(body).ok()?;
                if value.get("type")?.as_str()? != "url_verification" {
                    return None;
                }
                let challenge = value.get("challenge")?.as_str()?;
                (challenge.len() <= MAX_ECHO_BYTES).then(|| Answer {
                    content_type: "application/json",
                    body: Bytes::from(serde_json::json!({ "challenge": challenge }).to_string()),
                })
            }
            Self::EventGrid => {
                let kind = headers.get("aeg-event-type")?.to_str().ok()?;
                if !kind.eq_ignore_ascii_case("SubscriptionValidation") {
                    return None;
                }
                let events: serde_json::Value = serde_json::from_slice(body).ok()?;
                let event = events.as_array()?.first()?;
                if event.get("eventType")?.as_str()? != "Microsoft.EventGrid.SubscriptionValidationEvent" {
                    return None;
                }
                let code = event.get("data")?.get("validationCode")?.as_str()?;
                (code.len() <= MAX_ECHO_BYTES).then(|| Answer {
                    content_type: "application/json",
                    body: Bytes::from(serde_json::json!({ "validationResponse": code }).to_string()),
                })
            }
            Self::GraphValidation => {
                let token = url::form_urlencoded::parse(query?.as_bytes())
                    .find(|(name, _)| name == "validationToken")
                    .map(|(_, value)| value.into_owned())?;
                (token.len() <= MAX_ECHO_BYTES).then(|| Answer { content_type: "text/plain", body: Bytes::from(token) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handshake_answers_only_its_own_request() {
        let none = http::HeaderMap::new();
        let slack = br#"{"type":"url_verification","challenge":"c-1","token":"x"}"#;
        let answer = Handshake::SlackUrlVerification.answer(&none, None, slack).unwrap();
        assert_eq!(answer.body, Bytes::from(r#"{"challenge":"c-1"}"#));
        assert!(Handshake::SlackUrlVerification.answer(&none, None, br#"{"type":"event_callback"}"#).is_none());

        let mut grid = http::HeaderMap::new();
        grid.insert("aeg-event-type", "SubscriptionValidation".parse().unwrap());
        let body = br#"[{"id":"1","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"abc"}}]"#;
        let answer = Handshake::EventGrid.answer(&grid, None, body).unwrap();
        assert_eq!(answer.body, Bytes::from(r#"{"validationResponse":"abc"}"#));
        assert!(Handshake::EventGrid.answer(&none, None, body).is_none());

        let answer = Handshake::GraphValidation.answer(&none, Some("validationToken=a%20b"), b"").unwrap();
        assert_eq!((answer.content_type, answer.body), ("text/plain", Bytes::from("a b")));
        assert!(Handshake::GraphValidation.answer(&none, Some("x=1"), b"").is_none());
    }
}
