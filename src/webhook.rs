//! Signed webhook deliveries (`who = "webhook"`): the callers that cannot hold a token.
//! A `SaaS` sender signs each delivery with a shared secret; the gateway verifies that
//! signature over the body read whole, judges its timestamp, refuses a delivery seen
//! before, and only then forwards the very bytes it verified.
//!
//! # Layout
//! | file | concern |
//! |---|---|
//! | `webhook.rs` | [`RawWebhook`] (the policy's `webhook = { … }`), its compile step into a [`WebhookRule`], the replay key |
//! | `webhook/verify.rs` | [`Delivery`], [`Verified`], [`Refusal`]: what every scheme is given and gives back |
//! | `webhook/scheme.rs` | [`Scheme`] and its dispatch to the scheme files |
//! | `webhook/mac.rs` | HMAC, constant-time comparison, hex and base64 |
//! | `webhook/{standard,github,stripe,slack,shopify,twilio,generic}.rs` | one file per scheme family |
//! | `webhook/error.rs` | [`DeliveryError`]: why the request path refuses a delivery (its statuses are in `refusal.rs`) |
//! | `webhook/replay.rs` | [`ReplayGuard`]: in memory under a bound in bytes, or shared through Redis |
//! | `webhook/handshake.rs` | subscription handshakes answered at the edge |
//! | `webhook/sign.rs` | signing as a sender would, for `flowgate sign-webhook` and the bench |
//!
//! This module is pure: the request path (`proxy/delivery.rs`) reads the body, resolves
//! the secrets from the vault cache and calls [`WebhookRule::verify`]. Secrets are held
//! as [`SecretValue`]s and never leave a verification: no
//! error, record or metric names more than a reference.

mod error;
mod generic;
pub mod handshake;
mod mac;
pub mod replay;
mod scheme;
pub mod sign;
mod verify;

pub mod github;
pub mod shopify;
pub mod slack;
pub mod standard;
pub mod stripe;
pub mod twilio;

pub use error::DeliveryError;
pub use generic::{Encoding, GenericHmac, RawGenericHmac};
pub use handshake::Handshake;
pub use mac::Algorithm;
pub use replay::{Claim, ReplayError, ReplayGuard};
pub use scheme::Scheme;
pub use verify::{Delivery, Refusal, Verified};

use crate::config::{Diagnostics, HumanDuration, KeyPath};
use crate::secrets::{SecretRef, SecretValue, Vaults};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// A webhook trigger's largest body unless its `max_body_bytes` says otherwise: senders'
/// events are small, and the body is held whole while it is verified.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The default timestamp tolerance, which is also how long a delivery is held for replay.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A signature scheme as named in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawScheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`; also
    /// Svix's `svix-*` headers): `v1` HMAC-SHA256 with `whsec_` secrets, `v1a` Ed25519
    /// with `whpk_` public keys.
    Standard,
    /// GitHub: `X-Hub-Signature-256`.
    Github,
    /// Stripe: `Stripe-Signature` (`t=…,v1=…`).
    Stripe,
    /// Slack: `X-Slack-Signature` (`v0=`) and `X-Slack-Request-Timestamp`.
    Slack,
    /// Shopify: `X-Shopify-Hmac-Sha256` (base64).
    Shopify,
    /// Twilio: `X-Twilio-Signature`, HMAC-SHA1 over `public_url` and the form parameters.
    Twilio,
    /// Any other sender, described by `hmac = { … }`.
    Hmac,
}

/// `webhook = { … }`: how a `who = "webhook"` trigger verifies its deliveries.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The sender's signature scheme.
    pub scheme: RawScheme,
    /// The signing secret: a `secret://` reference (shorthand for a one-element `secrets`).
    pub secret: Option<String>,
    /// Signing secrets as `secret://` references, current first: a delivery signed with
    /// any of them passes, so a sender's secret can be rolled without a failed delivery.
    /// For `standard`, a secret is `whsec_…` (HMAC) or `whpk_…` (Ed25519 public key).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How far a signed timestamp may be from now (default `"5m"`); also how long a
    /// delivery's replay key is held.
    pub tolerance: Option<HumanDuration>,
    /// What a repeated delivery is recognised by: `"auto"` (default: the delivery id
    /// where the signature covers it, else the signature), `"id"` (the signed delivery
    /// id), `"signature"`, a JSON pointer into the body such as `"/id"`, or `"off"` (no
    /// replay protection; `check --diff` reports it as a loosening).
    pub replay: Option<String>,
    /// `twilio`: the URL exactly as configured at Twilio (scheme, host, port, path); the
    /// query of the request is appended to it.
    pub public_url: Option<String>,
    /// `hmac`: the generic scheme's description.
    pub hmac: Option<RawGenericHmac>,
    /// A subscription handshake answered at the edge: `"slack_url_verification"`,
    /// `"event_grid"` (Azure Event Grid subscription validation) or `"graph_validation"`
    /// (Microsoft Graph `validationToken`).
    pub handshake: Option<Handshake>,
}

/// What a delivery is recognised by when it comes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayKey {
    /// The delivery id, which the scheme's signature covers.
    Id,
    /// The signature itself (it covers the body and any timestamp).
    Signature,
    /// A JSON pointer into the (signed) body.
    Pointer(String),
    /// No replay protection.
    Off,
}

impl ReplayKey {
    /// As written in the policy and shown by `flowgate check`.
    pub fn describe(&self) -> String {
        match self {
            Self::Id => "delivery id".into(),
            Self::Signature => "signature".into(),
            Self::Pointer(pointer) => format!("body {pointer}"),
            Self::Off => "off".into(),
        }
    }
}

/// A compiled `webhook = { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRule {
    /// The scheme.
    pub scheme: Scheme,
    /// The signing secrets' references, current first. Never their values.
    pub secrets: Vec<SecretRef>,
    /// Timestamp tolerance and replay window.
    pub tolerance: Duration,
    /// What keys the replay guard.
    pub replay: ReplayKey,
    /// The handshake answered at the edge, if any.
    pub handshake: Option<Handshake>,
}

impl WebhookRule {
    /// Compiles `webhook` of a trigger (`path` is the trigger). `who_webhook` is whether
    /// the trigger says `who = "webhook"`: each needs the other.
    pub fn compile(
        raw: Option<&RawWebhook>,
        who_webhook: bool,
        path: &KeyPath,
        vaults: &Vaults,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let at = path.key("webhook");
        let raw = match (raw, who_webhook) {
            (None, false) => return None,
            (Some(_), false) => {
                diags.error_with_hint(&at, "webhook is set but who is not \"webhook\"", "set who = \"webhook\"");
                return None;
            }
            (None, true) => {
                diags.error_with_hint(
                    &path.key("who"),
                    "who = \"webhook\" needs a webhook = { scheme, secrets }",
                    "add webhook = { scheme = \"github\", secret = \"secret://VAULT/PATH#field\" }",
                );
                return None;
            }
            (Some(raw), true) => raw,
        };
        let secrets = compile_secrets(raw, &at, vaults, diags);
        let scheme = compile_scheme(raw, &at, diags)?;
        let tolerance = raw.tolerance.map_or(DEFAULT_TOLERANCE, |d| d.0);
        if tolerance < Duration::from_secs(1) {
            diags.error(&at.key("tolerance"), "must be at least 1s");
        }
        let replay = compile_replay(raw.replay.as_deref(), &scheme, &at.key("replay"), diags);
        Some(Self { scheme, secrets, tolerance, replay, handshake: raw.handshake })
    }

    /// The run record's principal: `webhook:<scheme>`.
    pub fn principal(&self) -> String {
        format!("webhook:{}", self.scheme.name())
    }

    /// Verifies a delivery against resolved secrets at `now` (Unix seconds).
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn verify(&self, delivery: &Delivery<'_>, secrets: &[SecretValue], now: i64) -> Result<Verified, Refusal> {
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        self.scheme.verify(delivery, secrets, now, tolerance)
    }

    /// The bytes a verified delivery is recognised by, or `None` with `replay = "off"`.
    ///
    /// # Errors
    /// A fixed phrase when the key cannot be read (a JSON pointer into a body that is not
    /// JSON or lacks it).
    pub fn replay_key(&self, verified: &Verified, body: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        match &self.replay {
            ReplayKey::Off => Ok(None),
            ReplayKey::Id => match (&verified.delivery_id, verified.id_signed) {
                (Some(id), true) => Ok(Some(id.as_bytes().to_vec())),
                _ => Err("the delivery has no signed id"),
            },
            ReplayKey::Signature => Ok(Some(verified.signature.clone())),
            ReplayKey::Pointer(pointer) => {
                let value: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|_| "the body is not JSON, so the replay key cannot be read")?;
                match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.as_bytes().to_vec())),
                    Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string().into_bytes())),
                    _ => Err("the body lacks its replay key (a string or number at the pointer)"),
                }
            }
        }
    }

    /// One line for `flowgate check`: scheme, secret references and replay window.
    pub fn describe(&self) -> String {
        let secrets: Vec<String> = self.secrets.iter().map(ToString::to_string).collect();
        let scheme = match &self.scheme {
            Scheme::Twilio { public_url } => format!("twilio at {public_url}"),
            Scheme::Hmac(generic) => format!("hmac {}", generic.describe()),
            other => other.name().to_owned(),
        };
        let freshness = if self.scheme.signs_timestamp() {
            format!("timestamps within {}", humantime::format_duration(self.tolerance))
        } else {
            "no signed timestamp".to_owned()
        };
        let replay = match self.replay {
            ReplayKey::Off => "replay protection OFF".to_owned(),
            ref key => {
                format!("replays refused by {} for {}", key.describe(), humantime::format_duration(self.tolerance))
            }
        };
        let handshake = self.handshake.map(|h| format!("; answers {}", h.name())).unwrap_or_default();
        format!("webhook {scheme}, secrets [{}]; {freshness}; {replay}{handshake}", secrets.join(", "))
    }
}

fn compile_secrets(raw: &RawWebhook, at: &KeyPath, vaults: &Vaults, diags: &mut Diagnostics) -> Vec<SecretRef> {
    let mut written: Vec<(KeyPath, &String)> = Vec::new();
    if let Some(one) = &raw.secret {
        if !raw.secrets.is_empty() {
            diags.error_with_hint(&at.key("secret"), "secret and secrets are both set", "list every secret in secrets");
        }
        written.push((at.key("secret"), one));
    }
    for (i, text) in raw.secrets.iter().enumerate() {
        written.push((at.key("secrets").index(i), text));
    }
    if written.is_empty() {
        diags.error_with_hint(at, "no signing secret", "add secret = \"secret://VAULT/PATH#field\"");
    }
    let mut refs = Vec::new();
    for (path, text) in written {
        match SecretRef::parse(text) {
            Ok(reference) => {
                if let Err((message, hint)) = vaults.check_ref(&reference) {
                    diags.error_with_hint(&path, message, hint);
                }
                refs.push(reference);
            }
            // The text is not repeated: it may be the secret itself, pasted by mistake.
            Err(_) => diags.error_with_hint(
                &path,
                "is not a secret:// reference: a signing secret is never written in the policy",
                "store it in a vault and write secret://VAULT/PATH[#field]",
            ),
        }
    }
    refs
}

fn compile_scheme(raw: &RawWebhook, at: &KeyPath, diags: &mut Diagnostics) -> Option<Scheme> {
    if raw.public_url.is_some() && raw.scheme != RawScheme::Twilio {
        diags.error(&at.key("public_url"), "only scheme = \"twilio\" signs a URL");
    }
    if raw.hmac.is_some() && raw.scheme != RawScheme::Hmac {
        diags.error(&at.key("hmac"), "only scheme = \"hmac\" takes an hmac description");
    }
    Some(match raw.scheme {
        RawScheme::Standard => Scheme::Standard,
        RawScheme::Github => Scheme::Github,
        RawScheme::Stripe => Scheme::Stripe,
        RawScheme::Slack => Scheme::Slack,
        RawScheme::Shopify => Scheme::Shopify,
        RawScheme::Twilio => {
            let Some(url) = &raw.public_url else {
                diags.error_with_hint(
                    &at.key("public_url"),
                    "scheme = \"twilio\" signs the URL Twilio calls",
                    "set public_url to the URL configured at Twilio, for example \"https://hooks.example.com/sms\"",
                );
                return None;
            };
            match url::Url::parse(url) {
                Ok(parsed) if parsed.query().is_none() && parsed.fragment().is_none() => {}
                _ => diags.error(&at.key("public_url"), "must be an absolute URL without query or fragment"),
            }
            Scheme::Twilio { public_url: url.clone() }
        }
        RawScheme::Hmac => {
            let Some(generic) = &raw.hmac else {
                diags.error_with_hint(
                    &at.key("hmac"),
                    "scheme = \"hmac\" needs a description",
                    "add hmac = { header = \"X-Signature\", algorithm = \"sha256\", encoding = \"hex\" }",
                );
                return None;
            };
            Scheme::Hmac(GenericHmac::compile(generic, &at.key("hmac"), diags)?)
        }
    })
}

fn compile_replay(text: Option<&str>, scheme: &Scheme, at: &KeyPath, diags: &mut Diagnostics) -> ReplayKey {
    let signs_id = match scheme {
        Scheme::Standard => true,
        Scheme::Hmac(generic) => generic.signs_id(),
        _ => false,
    };
    match text.unwrap_or("auto") {
        "auto" | "id" if signs_id => ReplayKey::Id,
        "auto" | "signature" => ReplayKey::Signature,
        "id" => {
            diags.error_with_hint(
                at,
                format!("the {} scheme does not sign its delivery id: a replay could change it", scheme.name()),
                "use \"signature\" or a JSON pointer into the body such as \"/id\"",
            );
            ReplayKey::Signature
        }
        "off" => ReplayKey::Off,
        pointer if pointer.starts_with('/') => ReplayKey::Pointer(pointer.to_owned()),
        other => {
            diags.error_with_hint(
                at,
                format!("{other:?} is not a replay key"),
                "write \"auto\", \"id\", \"signature\", a JSON pointer such as \"/id\", or \"off\"",
            );
            ReplayKey::Signature
        }
    }
}
