//! Bearer token verification: the header is judged before any key is touched, the
//! signature is checked with a key parsed when the key set was fetched, and the payload is
//! decoded strictly (no duplicate keys, every claim of the JSON type it must have).
//!
//! jsonwebtoken's `decode` is not used on purpose: it lets serde keep the last of two
//! duplicate keys, accepts any `crit`, and does not know Entra's `{tenant}` issuers. Only
//! its signature primitive ([`jsonwebtoken::crypto::verify`]) is used here.
//!
//! Pure: given a key set, a token and the time, a verdict. Fetching keys, refetching
//! for an unknown `kid` and caching verdicts live in [`keys`](super::keys).

use super::key_set::{KeySet, VerifyKey};
use super::strict_json::parse_object;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Header parameters that carry or point at a key; a token never chooses its own key.
const EMBEDDED_KEY_PARAMS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// Longest `kid` we look up.
const MAX_KID_LEN: usize = 256;

/// Why a token was refused. Each names the failed check, never the token or a claim value
/// that could be secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Larger than the identity's `max_token_bytes`, refused before parsing.
    #[error("token larger than {limit} bytes")]
    Oversized {
        /// The configured bound.
        limit: usize,
    },
    /// Not three dot-separated parts.
    #[error("token is not a compact JWS")]
    Malformed,
    /// A part is not unpadded base64url.
    #[error("malformed base64url in the token {part}")]
    Base64 {
        /// `header`, `payload` or `signature`.
        part: &'static str,
    },
    /// A part is not a JSON object, or repeats a key.
    #[error("invalid JSON in the token {part}: {reason}")]
    Json {
        /// `header` or `payload`.
        part: &'static str,
        /// What the parser said (names no value).
        reason: String,
    },
    /// `alg` is `none` in any casing.
    #[error("alg none refused")]
    AlgNone,
    /// `alg` is missing, unknown or not in the identity's list.
    #[error("alg {0:?} not allowed")]
    AlgNotAllowed(String),
    /// `jku`, `x5u`, `jwk` or `x5c` present.
    #[error("header carries a key ({0})")]
    EmbeddedKey(&'static str),
    /// `crit` present: no extension is understood.
    #[error("unknown crit header")]
    UnknownCrit,
    /// `b64` present (RFC 7797 unencoded payload), listed in `crit` or not: the signed
    /// bytes would not be the payload that is read.
    #[error("b64 header parameter refused (RFC 7797)")]
    UnencodedPayload,
    /// A header parameter has the wrong JSON type or an encrypted-token marker.
    #[error("invalid header parameter {0}")]
    BadHeader(&'static str),
    /// No key with this `kid` (or no `kid` and several keys).
    #[error("unknown kid")]
    UnknownKid,
    /// The key's type does not match `alg`, or its own `alg` differs.
    #[error("alg does not match the key type")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// A claim has the wrong JSON type or is missing.
    #[error("claim {0} missing or of the wrong type")]
    ClaimType(&'static str),
    /// `exp` is past (beyond leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("not yet valid (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond leeway).
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    /// `exp` lies further ahead than the identity's `max_token_lifetime` (beyond leeway),
    /// or `exp - iat` is longer: a token that would practically never expire.
    #[error("lifetime longer than max_token_lifetime")]
    LifetimeTooLong,
    /// `iss` matches no configured issuer.
    #[error("issuer not accepted")]
    Issuer,
    /// `aud` matches no configured audience.
    #[error("audience not accepted")]
    Audience,
    /// The tenant in `iss` differs from `tid`, or `tid` is not a GUID.
    #[error("issuer tenant does not match tid")]
    IssuerTenant,
}

/// An issuer as configured: exact, or a template with one `{tenant}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IssuerPattern {
    /// Must equal `iss`.
    Exact(String),
    /// `prefix{tenant}suffix`: the middle must be a GUID equal to `tid`.
    Tenant {
        /// Text before `{tenant}`.
        prefix: String,
        /// Text after `{tenant}`.
        suffix: String,
    },
}

impl IssuerPattern {
    /// Parses a configured issuer; `None` when `{tenant}` appears more than once.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once("{tenant}") {
            None => Some(Self::Exact(text.to_owned())),
            Some((prefix, suffix)) if !suffix.contains("{tenant}") => {
                Some(Self::Tenant { prefix: prefix.to_owned(), suffix: suffix.to_owned() })
            }
            Some(_) => None,
        }
    }

    /// True when `iss` is this issuer: equal, or the template with a GUID tenant filled in.
    pub fn names(&self, iss: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == iss,
            Self::Tenant { prefix, suffix } => iss
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(is_guid),
        }
    }

    /// `Ok(true)` when `iss` matches; a template match also requires `tid` to be a GUID
    /// equal to the tenant part of `iss`.
    fn matches(&self, iss: &str, tid: Option<&str>) -> Result<bool, TokenError> {
        match self {
            Self::Exact(exact) => Ok(exact == iss),
            Self::Tenant { prefix, suffix } => {
                let Some(middle) =
                    iss.strip_prefix(prefix.as_str()).and_then(|rest| rest.strip_suffix(suffix.as_str()))
                else {
                    return Ok(false);
                };
                match tid {
                    Some(tid) if is_guid(middle) && is_guid(tid) && middle.eq_ignore_ascii_case(tid) => Ok(true),
                    _ => Err(TokenError::IssuerTenant),
                }
            }
        }
    }
}

/// True for a GUID in its canonical 8-4-4-4-12 hexadecimal form.
pub(crate) fn is_guid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// What a token is checked against: built once per identity at policy compile.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Accepted issuers.
    pub issuers: Vec<IssuerPattern>,
    /// Accepted audiences (any one).
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// Longest lifetime accepted, in seconds: `exp` at most this far ahead of now (and of
    /// `iat`, when present).
    pub max_lifetime: u64,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
}

/// The verified claims flowgate uses, with the Entra v1 and v2 spellings kept apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `iss`.
    pub iss: String,
    /// `aud`, as a list.
    pub aud: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// `nbf`.
    pub nbf: Option<u64>,
    /// `iat`.
    pub iat: Option<u64>,
    /// `sub`.
    pub sub: Option<String>,
    /// `oid` (Entra object id).
    pub oid: Option<String>,
    /// `tid` (Entra tenant id).
    pub tid: Option<String>,
    /// `appid` (v1) or `azp` (v2): the calling application.
    pub app_id: Option<String>,
    /// `upn`: the user's sign-in name, set by the user's own tenant. The only name claim
    /// a `upn:` principal matches.
    pub upn: Option<String>,
    /// `upn`, `unique_name` (v1), `preferred_username` (v2) and `email`, as present. Display
    /// and pinning only: all but `upn` are mutable or unverified, so no rule admits by them.
    pub user_names: Vec<String>,
    /// The application is calling as itself (client credentials), not on behalf of a
    /// user: `idtyp = "app"`; or, without `idtyp`, no `scp` and an `appidacr` (v1) or
    /// `azpacr` (v2) claim.
    pub app_only: bool,
    /// A user signed in through the application (`idtyp = "user"`, or a `scp` claim on a
    /// token that is not app-only).
    pub delegated: bool,
    /// `roles`.
    pub roles: Vec<String>,
    /// `scp`, split on spaces.
    pub scopes: Vec<String>,
    /// `idtyp` (`app` or `user`).
    pub idtyp: Option<String>,
    /// Every claim, for exact-match rules.
    pub all: Map<String, Value>,
}

/// The parts of a compact token, decoded; the header is already judged.
struct Parsed<'a> {
    alg: Algorithm,
    kid: Option<String>,
    signing_input: &'a str,
    signature_b64: &'a str,
    payload_b64: &'a str,
}

fn decode_part(text: &str, part: &'static str) -> Result<Vec<u8>, TokenError> {
    // The standard engine refuses padding, non-alphabet bytes and non-canonical trailing bits.
    URL_SAFE_NO_PAD.decode(text).map_err(|_| TokenError::Base64 { part })
}

/// Splits and judges the header. Runs before any key is looked up.
fn parse_header<'a>(token: &'a str, rules: &TokenRules) -> Result<Parsed<'a>, TokenError> {
    if token.len() > rules.max_token_bytes {
        return Err(TokenError::Oversized { limit: rules.max_token_bytes });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header_bytes = decode_part(header_b64, "header")?;
    let header = parse_object(&header_bytes).map_err(|e| TokenError::Json { part: "header", reason: e.to_string() })?;

    let alg_text = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        _ => return Err(TokenError::BadHeader("alg")),
    };
    if alg_text.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    // The caller's text is echoed into reasons only when it names a known algorithm.
    let alg: Algorithm = alg_text.parse().map_err(|_| TokenError::AlgNotAllowed("unrecognized".to_owned()))?;
    if !rules.algorithms.contains(&alg) {
        return Err(TokenError::AlgNotAllowed(alg_text.to_owned()));
    }
    for name in EMBEDDED_KEY_PARAMS {
        if header.contains_key(name) {
            return Err(TokenError::EmbeddedKey(name));
        }
    }
    // Before `crit`, so a token listing `b64` there is refused for what it is. A verifier
    // that honoured `b64: false` would check the signature over other bytes than the
    // payload read below; one that ignored it would disagree with one that did.
    if header.contains_key("b64") {
        return Err(TokenError::UnencodedPayload);
    }
    if header.contains_key("crit") {
        return Err(TokenError::UnknownCrit);
    }
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(TokenError::BadHeader("enc"));
    }
    if let Some(typ) = header.get("typ")
        && !typ.is_string()
    {
        return Err(TokenError::BadHeader("typ"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => Some(kid.clone()),
        Some(_) => return Err(TokenError::BadHeader("kid")),
    };
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Parsed { alg, kid, signing_input, signature_b64, payload_b64 })
}

/// Header-only facts the key lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    /// The judged algorithm.
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// Judges a token's size and header without touching keys.
///
/// # Errors
/// Any header-level [`TokenError`].
pub fn inspect(token: &str, rules: &TokenRules) -> Result<HeaderFacts, TokenError> {
    parse_header(token, rules).map(|p| HeaderFacts { alg: p.alg, kid: p.kid })
}

/// Verifies a token completely against `keys` at time `now` (seconds since the epoch).
/// Returns the claims and the key that verified them.
///
/// # Errors
/// The first failed check as a [`TokenError`]; [`TokenError::UnknownKid`] lets the caller
/// refetch keys once.
pub fn verify(
    token: &str,
    rules: &TokenRules,
    keys: &KeySet,
    now: u64,
) -> Result<(Claims, Arc<VerifyKey>), TokenError> {
    let parsed = parse_header(token, rules)?;
    let key = keys.find(parsed.kid.as_deref(), parsed.alg).ok_or(TokenError::UnknownKid)?;
    if !key.accepts(parsed.alg) {
        return Err(TokenError::KeyMismatch);
    }
    // Decode the signature strictly ourselves first: jsonwebtoken's decoder is lenient.
    decode_part(parsed.signature_b64, "signature")?;
    let ok =
        jsonwebtoken::crypto::verify(parsed.signature_b64, parsed.signing_input.as_bytes(), &key.decoding, parsed.alg)
            .unwrap_or(false);
    if !ok {
        return Err(TokenError::Signature);
    }
    let payload_bytes = decode_part(parsed.payload_b64, "payload")?;
    let payload =
        parse_object(&payload_bytes).map_err(|e| TokenError::Json { part: "payload", reason: e.to_string() })?;
    let claims = Claims::from_map(payload)?;
    claims.check(rules, now)?;
    Ok((claims, key))
}

fn numeric_date(map: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Some(v) if (0.0..1.0e15).contains(&v) => Ok(Some(v.floor() as u64)),
                    _ => Err(TokenError::ClaimType(name)),
                }
            }
        }
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

fn string_claim(map: &Map<String, Value>, name: &'static str) -> Result<Option<String>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

fn string_list(map: &Map<String, Value>, name: &'static str) -> Result<Vec<String>, TokenError> {
    match map.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_owned).ok_or(TokenError::ClaimType(name))).collect()
        }
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

impl Claims {
    /// Reads the claims flowgate uses, refusing any of the wrong JSON type.
    ///
    /// # Errors
    /// [`TokenError::ClaimType`] naming the claim.
    pub fn from_map(all: Map<String, Value>) -> Result<Self, TokenError> {
        let exp = numeric_date(&all, "exp")?.ok_or(TokenError::ClaimType("exp"))?;
        let iss = string_claim(&all, "iss")?.ok_or(TokenError::ClaimType("iss"))?;
        let aud = match all.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(_)) => string_list(&all, "aud")?,
            _ => return Err(TokenError::ClaimType("aud")),
        };
        let appid = string_claim(&all, "appid")?;
        let azp = string_claim(&all, "azp")?;
        let mut user_names = Vec::new();
        for name in ["upn", "unique_name", "preferred_username", "email"] {
            if let Some(value) = string_claim(&all, name)? {
                user_names.push(value);
            }
        }
        let scp = string_claim(&all, "scp")?;
        let idtyp = string_claim(&all, "idtyp")?;
        let app_acr = string_claim(&all, "appidacr")?.or(string_claim(&all, "azpacr")?);
        // Entra documents `idtyp` as the answer when present; v1 tokens and v2 tokens
        // without the optional claim are app-only when they carry no delegated scopes and
        // name how the client authenticated.
        let app_only = match idtyp.as_deref() {
            Some(kind) => kind == "app",
            None => scp.is_none() && app_acr.is_some(),
        };
        let delegated = !app_only && (idtyp.as_deref() == Some("user") || scp.is_some());
        let scopes =
            scp.map(|scp| scp.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
        Ok(Self {
            nbf: numeric_date(&all, "nbf")?,
            iat: numeric_date(&all, "iat")?,
            sub: string_claim(&all, "sub")?,
            oid: string_claim(&all, "oid")?,
            tid: string_claim(&all, "tid")?,
            app_id: appid.or(azp),
            roles: string_list(&all, "roles")?,
            upn: string_claim(&all, "upn")?,
            idtyp,
            app_only,
            delegated,
            iss,
            aud,
            exp,
            user_names,
            scopes,
            all,
        })
    }

    /// Time, issuer and audience checks.
    fn check(&self, rules: &TokenRules, now: u64) -> Result<(), TokenError> {
        if self.exp.saturating_add(rules.leeway) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = self.nbf
            && nbf > now.saturating_add(rules.leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(iat) = self.iat
            && iat > now.saturating_add(rules.leeway)
        {
            return Err(TokenError::IssuedInFuture);
        }
        // A stolen token that never expires is a standing credential.
        let furthest = now.saturating_add(rules.max_lifetime).saturating_add(rules.leeway);
        if self.exp > furthest || self.iat.is_some_and(|iat| self.exp.saturating_sub(iat) > rules.max_lifetime) {
            return Err(TokenError::LifetimeTooLong);
        }
        let mut issuer_ok = false;
        for pattern in &rules.issuers {
            if pattern.matches(&self.iss, self.tid.as_deref())? {
                issuer_ok = true;
                break;
            }
        }
        if !issuer_ok {
            return Err(TokenError::Issuer);
        }
        if !self.aud.iter().any(|aud| rules.audiences.iter().any(|want| want == aud)) {
            return Err(TokenError::Audience);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> TokenRules {
        TokenRules {
            algorithms: vec![Algorithm::RS256],
            issuers: vec![
                IssuerPattern::parse("https://login.microsoftonline.com/{tenant}/v2.0").unwrap(),
                IssuerPattern::parse("https://sts.windows.net/{tenant}/").unwrap(),
            ],
            audiences: vec!["api://flowgate".into()],
            leeway: 60,
            max_lifetime: 24 * 3600,
            max_token_bytes: 16 * 1024,
        }
    }

    fn claims(value: Value) -> Result<Claims, TokenError> {
        let Value::Object(map) = value else { unreachable!() };
        Claims::from_map(map)
    }

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn guid_shape() {
        assert!(is_guid(TID));
        assert!(!is_guid("common"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
    }

    #[test]
    fn entra_issuers_need_matching_tid() {
        let ok = claims(
            json!({"iss": format!("https://sts.windows.net/{TID}/"), "aud": "api://flowgate", "exp": 2000, "tid": TID}),
        )
        .unwrap();
        assert_eq!(ok.check(&rules(), 1000), Ok(()));
        let other = "00000000-0000-0000-0000-000000000001";
        let bad = claims(json!({"iss": format!("https://login.microsoftonline.com/{other}/v2.0"), "aud": "api://flowgate", "exp": 2000, "tid": TID})).unwrap();
        assert_eq!(bad.check(&rules(), 1000), Err(TokenError::IssuerTenant));
        let not_guid = claims(json!({"iss": "https://login.microsoftonline.com/common/v2.0", "aud": "api://flowgate", "exp": 2000, "tid": "common"})).unwrap();
        assert_eq!(not_guid.check(&rules(), 1000), Err(TokenError::IssuerTenant));
    }

    #[test]
    fn wrong_claim_types_are_refused() {
        let base = |k: &str, v: Value| {
            let mut m = json!({"iss": "x", "aud": "a", "exp": 5});
            m[k] = v;
            claims(m)
        };
        assert_eq!(base("exp", json!("5")), Err(TokenError::ClaimType("exp")));
        assert_eq!(base("roles", json!("Admin")), Err(TokenError::ClaimType("roles")));
        assert_eq!(base("aud", json!(5)), Err(TokenError::ClaimType("aud")));
        assert_eq!(base("scp", json!(["a"])), Err(TokenError::ClaimType("scp")));
        assert_eq!(base("tid", json!(1)), Err(TokenError::ClaimType("tid")));
        assert!(base("scp", json!("a b")).is_ok());
    }

    #[test]
    fn time_checks_use_leeway() {
        let c = claims(json!({"iss": format!("https://sts.windows.net/{TID}/"), "aud": ["x", "api://flowgate"], "exp": 1000, "nbf": 900, "tid": TID})).unwrap();
        assert_eq!(c.check(&rules(), 1059), Ok(()));
        assert_eq!(c.check(&rules(), 1060), Err(TokenError::Expired));
        assert_eq!(c.check(&rules(), 839), Err(TokenError::NotYetValid));
    }

    #[test]
    fn tokens_that_practically_never_expire_are_refused() {
        let iss = format!("https://sts.windows.net/{TID}/");
        let at = |exp: u64, iat: Option<u64>| {
            let mut m = json!({"iss": iss, "aud": "api://flowgate", "exp": exp, "tid": TID});
            if let Some(iat) = iat {
                m["iat"] = json!(iat);
            }
            claims(m).unwrap()
        };
        let now = 1_000_000;
        let day = 24 * 3600;
        assert_eq!(at(1 << 63, None).check(&rules(), now), Err(TokenError::LifetimeTooLong));
        assert_eq!(at(u64::MAX, None).check(&rules(), now), Err(TokenError::LifetimeTooLong));
        assert_eq!(at(now + day + 60, None).check(&rules(), now), Ok(()), "within the lifetime and its leeway");
        assert_eq!(at(now + day + 61, None).check(&rules(), now), Err(TokenError::LifetimeTooLong));
        assert_eq!(at(now + 3600, Some(now - 60)).check(&rules(), now), Ok(()));
        assert_eq!(at(now + 3600, Some(now + 3600 - day - 1)).check(&rules(), now), Err(TokenError::LifetimeTooLong));
    }

    #[test]
    fn header_checks_run_first() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let tok = |h: Value| format!("{}.{}.AAAA", enc(h), enc(json!({})));
        for none in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(inspect(&tok(json!({"alg": none})), &rules()), Err(TokenError::AlgNone));
        }
        assert!(matches!(inspect(&tok(json!({"alg": "HS256"})), &rules()), Err(TokenError::AlgNotAllowed(_))));
        for p in EMBEDDED_KEY_PARAMS {
            let mut h = json!({"alg": "RS256"});
            h[p] = json!("x");
            assert_eq!(inspect(&tok(h), &rules()), Err(TokenError::EmbeddedKey(p)));
        }
        assert_eq!(inspect(&tok(json!({"alg": "RS256", "crit": ["exp"]})), &rules()), Err(TokenError::UnknownCrit));
        assert!(matches!(inspect("a.b", &rules()), Err(TokenError::Malformed)));
        assert!(matches!(inspect("a=.b.c", &rules()), Err(TokenError::Base64 { .. })));
        let mut small = rules();
        small.max_token_bytes = 10;
        assert_eq!(inspect(&tok(json!({"alg": "RS256"})), &small), Err(TokenError::Oversized { limit: 10 }));
        let dup = format!("{}.{}.AAAA", URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","alg":"none"}"#), enc(json!({})));
        assert!(matches!(inspect(&dup, &rules()), Err(TokenError::Json { .. })));
    }

    #[test]
    fn b64_is_refused_in_crit_or_not() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let tok = |h: Value| format!("{}.{}.AAAA", enc(h), enc(json!({})));
        for header in [
            json!({"alg": "RS256", "b64": false}),
            json!({"alg": "RS256", "b64": true}),
            json!({"alg": "RS256", "b64": false, "crit": ["b64"]}),
        ] {
            assert_eq!(inspect(&tok(header.clone()), &rules()), Err(TokenError::UnencodedPayload), "{header}");
        }
    }

    #[test]
    fn app_only_and_delegated_follow_entra_v1_and_v2() {
        let base = |extra: Value| {
            let mut m = json!({"iss": "x", "aud": "a", "exp": 5});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            claims(m).unwrap()
        };
        let kind = |c: Claims| (c.app_only, c.delegated);
        // v2 with idtyp: the claim decides.
        assert_eq!(kind(base(json!({"idtyp": "app", "azp": "c"}))), (true, false));
        assert_eq!(kind(base(json!({"idtyp": "user", "azp": "c"}))), (false, true));
        // idtyp = app wins over a scp that should not be there.
        assert_eq!(kind(base(json!({"idtyp": "app", "scp": "x"}))), (true, false));
        // v1 (appidacr) and v2 without idtyp (azpacr): app-only without scp.
        assert_eq!(kind(base(json!({"appid": "c", "appidacr": "1"}))), (true, false));
        assert_eq!(kind(base(json!({"azp": "c", "azpacr": "2"}))), (true, false));
        assert_eq!(kind(base(json!({"appid": "c", "appidacr": "0", "scp": "user_impersonation"}))), (false, true));
        // Nothing says how the client authenticated: neither.
        assert_eq!(kind(base(json!({"azp": "c"}))), (false, false));
        // The name claims are kept apart: only `upn` is the upn.
        let names = base(json!({"email": "a@x", "preferred_username": "b@x"}));
        assert_eq!(names.upn, None);
        assert_eq!(names.user_names.len(), 2);
    }
}
