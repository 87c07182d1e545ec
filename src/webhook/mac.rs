//! The primitives every scheme shares: keyed MACs (HMAC-SHA1/256/512), constant-time
//! comparison, and decoding of the hex or base64 a sender writes its signature in.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A hash a sender's HMAC is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// HMAC-SHA1 (Twilio; older senders).
    Sha1,
    /// HMAC-SHA256 (most senders).
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// Its name in policy text.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

/// The MAC of the concatenation of `parts` under `key`. The result is not secret (it is
/// what the sender sent), but the key is: it only ever lives in zeroizing buffers.
pub(super) fn hmac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else { return Vec::new() };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// True when `a` and `b` are equal, in time that depends only on their lengths (which
/// are public: every MAC of one algorithm has the same length).
pub(super) fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Decodes lower- or upper-case hex; `None` when it is not hex.
pub(super) fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.trim()).ok()
}

/// Decodes standard base64 with padding (what every listed sender writes), accepting
/// unpadded and URL-safe spellings too; `None` when it is none of them.
pub(super) fn from_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(text).ok())
}

/// Key bytes, zeroized on drop.
pub(super) type KeyBytes = Zeroizing<Vec<u8>>;

/// A secret's text as HMAC key bytes, as most senders use it: the UTF-8 bytes as given.
pub(super) fn raw_key(secret: &str) -> KeyBytes {
    Zeroizing::new(secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(Algorithm::Sha256, b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn equal_needs_same_length_and_bytes() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }

    #[test]
    fn base64_accepts_every_common_spelling() {
        assert_eq!(from_base64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(from_base64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(from_base64("!!").is_none());
    }
}
