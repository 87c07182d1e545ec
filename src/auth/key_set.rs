//! Signing keys as parsed from a JWKS: each key parsed once per rotation, with the
//! algorithms it may verify. Pure data: fetching and refreshing live in
//! [`keys`](super::keys), the token checks that use these keys in [`token`](super::token).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::sync::Arc;

/// One parsed verification key.
#[derive(Debug)]
pub struct VerifyKey {
    /// `kid`, if the JWK had one.
    pub kid: Option<String>,
    /// The key's algorithm family.
    pub family: AlgorithmFamily,
    /// The JWK's own `alg`, when given: only that algorithm is accepted with it.
    pub alg: Option<Algorithm>,
    /// The EC curve, for EC keys.
    pub curve: Option<EllipticCurve>,
    /// Parsed once when the set was fetched.
    pub decoding: DecodingKey,
    jwk: Jwk,
}

impl VerifyKey {
    /// Parses a JWK; `None` for encryption keys, symmetric keys or unsupported types.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let (family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
            AlgorithmParameters::EllipticCurve(ec) => (AlgorithmFamily::Ec, Some(ec.curve.clone())),
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                (AlgorithmFamily::Ed, Some(EllipticCurve::Ed25519))
            }
            // Symmetric keys in a JWKS would enable HMAC forgery with public material.
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
            None => None,
        };
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { kid: jwk.common.key_id.clone(), family, alg, curve, decoding, jwk: jwk.clone() })
    }

    /// True when `alg` may be verified with this key: same family, the JWK's own `alg` if
    /// any, and the matching curve for EC keys.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match (alg, &self.curve) {
            (Algorithm::ES256, Some(curve)) => *curve == EllipticCurve::P256,
            (Algorithm::ES384, Some(curve)) => *curve == EllipticCurve::P384,
            (Algorithm::ES256 | Algorithm::ES384, None) => false,
            _ => true,
        }
    }
}

/// The keys of one fetch.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// Parses a JWKS, keeping the `Arc` of keys unchanged since `previous` so that cached
    /// verifications survive a refresh that did not rotate their key.
    pub fn from_jwks(set: &JwkSet, previous: Option<&KeySet>) -> Self {
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                if let Some(old) = previous.and_then(|p| p.keys.iter().find(|k| k.jwk == *jwk)) {
                    return Some(Arc::clone(old));
                }
                VerifyKey::from_jwk(jwk).map(Arc::new)
            })
            .collect();
        Self { keys }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for `kid`; without a `kid`, the only key that accepts `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        if let Some(kid) = kid {
            return self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned();
        }
        let mut candidates = self.keys.iter().filter(|k| k.accepts(alg));
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Some(Arc::clone(only)),
            _ => None,
        }
    }

    /// True when `key` is this very key (the same parsed instance), not a lookalike.
    pub(super) fn contains(&self, key: &Arc<VerifyKey>) -> bool {
        self.keys.iter().any(|k| Arc::ptr_eq(k, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_ignored() {
        let set: JwkSet = serde_json::from_str(
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},
                {"kty":"EC","crv":"P-256","use":"enc","kid":"e","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
                {"kty":"EC","crv":"P-256","kid":"s","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
        )
        .unwrap();
        let keys = KeySet::from_jwks(&set, None);
        assert_eq!(keys.len(), 1);
        let key = keys.find(Some("s"), Algorithm::ES256).unwrap();
        assert!(key.accepts(Algorithm::ES256));
        assert!(!key.accepts(Algorithm::ES384));
        assert!(!key.accepts(Algorithm::HS256));
        assert!(!key.accepts(Algorithm::RS256));
        // An unchanged key keeps its parsed instance across refreshes.
        let again = KeySet::from_jwks(&set, Some(&keys));
        assert!(Arc::ptr_eq(&again.find(Some("s"), Algorithm::ES256).unwrap(), &key));
    }
}
