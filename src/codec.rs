//! PURE: how values are decoded (decodingStrategy, base64) and hashed. Shared by the renderer and
//! the template functions.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api::DecodingStrategy;
use crate::error::{Error, Result};
use crate::value::SecretBytes;

/// Decode a value as `strategy` says. `what` names the value (never shows it) for the error.
pub fn decode(strategy: DecodingStrategy, bytes: SecretBytes, what: &str) -> Result<SecretBytes> {
    let fail = |name: &str| {
        Error::InvalidValue(format!("{what} is not valid {name} (decodingStrategy); fix the value or the strategy"))
    };
    Ok(match strategy {
        DecodingStrategy::None => bytes,
        DecodingStrategy::Base64 => {
            SecretBytes::new(decode_base64(bytes.expose(), false).ok_or_else(|| fail("base64"))?)
        }
        DecodingStrategy::Base64Url => {
            SecretBytes::new(decode_base64(bytes.expose(), true).ok_or_else(|| fail("URL-safe base64"))?)
        }
        DecodingStrategy::Auto => match decode_base64_any(bytes.expose()) {
            Some(decoded) => SecretBytes::new(decoded),
            None => bytes,
        },
    })
}

/// Base64 (standard or URL-safe alphabet), padding optional, surrounding whitespace ignored.
pub fn decode_base64(bytes: &[u8], url: bool) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if url { &base64::alphabet::URL_SAFE } else { &base64::alphabet::STANDARD };
    GeneralPurpose::new(alphabet, config).decode(bytes.trim_ascii()).ok()
}

/// Standard base64, else URL-safe base64.
pub fn decode_base64_any(bytes: &[u8]) -> Option<Vec<u8>> {
    decode_base64(bytes, false).or_else(|| decode_base64(bytes, true))
}

/// sha256 over the sorted keys and values, length-prefixed so no two maps collide by
/// concatenation. Hex; it identifies the data without showing it.
pub fn data_hash(data: &BTreeMap<String, SecretBytes>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.expose());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_sensitive_and_unambiguous() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, SecretBytes> {
            pairs.iter().map(|(k, v)| (k.to_string(), SecretBytes::from(v.to_string()))).collect()
        };
        let one = data_hash(&map(&[("k", "1")]));
        assert_eq!(one, data_hash(&map(&[("k", "1")])));
        assert_ne!(one, data_hash(&map(&[("k", "2")])));
        assert_ne!(data_hash(&map(&[("ab", "c")])), data_hash(&map(&[("a", "bc")])));
        assert_eq!(one.len(), 64);
    }

    #[test]
    fn decoding_strategies() {
        let b = |s: &str| SecretBytes::from(s.to_string());
        let d = |s, v: &str| decode(s, b(v), "v").map(|x| x.expose().to_vec()).ok();
        assert_eq!(d(DecodingStrategy::Base64, "aGVsbG8=\n"), Some(b"hello".to_vec()));
        assert_eq!(d(DecodingStrategy::Base64Url, "_-8"), Some(vec![255, 239]));
        assert_eq!(d(DecodingStrategy::Auto, "not base64!"), Some(b"not base64!".to_vec()));
        let e = decode(DecodingStrategy::Base64, b("sentinel-XYZ!"), "the value").err().map(|e| e.to_string());
        let msg = e.expect("not base64");
        assert!(msg.contains("not valid base64") && !msg.contains("sentinel"), "{msg}");
    }
}
