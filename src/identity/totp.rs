//! TOTP (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits) and the encryption of its seeds at rest.
//!
//! TOTP reads the real clock, not the service clock: it must agree with the authenticator in the
//! shopper's hand. One step of drift either way is accepted, and a code is never accepted twice:
//! the caller stores the last accepted step and passes it back. Seeds are encrypted with
//! ChaCha20-Poly1305 under the configured TOTP key, stored as `KEYID:BASE64(nonce || ciphertext)`
//! so that the key can be rotated.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};
use hmac::{Hmac, Mac};

use crate::config::{Key, KeyRing};

pub const STEP_SECS: u64 = 30;
pub const SEED_BYTES: usize = 20;

/// A fresh random seed.
pub fn new_seed() -> Vec<u8> {
    let mut seed = vec![0u8; SEED_BYTES];
    rand::fill(&mut seed[..]);
    seed
}

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_at_step(seed: &[u8], step: u64) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary =
        u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:06}", binary % 1_000_000)
}

/// The current step of the real clock.
pub fn current_step() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    now / STEP_SECS
}

/// The step `code` belongs to, if it is valid at `now_step` (±1) and newer than `last_used_step`.
pub fn verify(seed: &[u8], code: &str, now_step: u64, last_used_step: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut accepted = None;
    // Check every candidate (no early exit) so that timing says nothing about which step matched.
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let matches = crate::secret::constant_time_eq(code_at_step(seed, step).as_bytes(), code.as_bytes());
        if matches && step > last_used_step {
            accepted = Some(step);
        }
    }
    accepted
}

/// RFC 4648 base32 without padding, as authenticator apps expect the secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').chars() {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app scans (Google's Key Uri Format): the label
/// `Omamori:<account>` is one path segment, percent-encoded as UTF-8 by the `url` crate, so a
/// Japanese or otherwise non-ASCII address, a space or a `/` reaches the app as typed.
pub fn otpauth_uri(seed: &[u8], account: &str) -> String {
    let mut uri = url::Url::parse("otpauth://totp").expect("a constant URI parses");
    uri.path_segments_mut().expect("otpauth://totp has a path").clear().push(&format!("Omamori:{account}"));
    uri.query_pairs_mut()
        .append_pair("secret", &base32(seed))
        .append_pair("issuer", "Omamori")
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", "6")
        .append_pair("period", &STEP_SECS.to_string());
    uri.into()
}

fn cipher(key: &Key) -> ChaCha20Poly1305 {
    let bytes: [u8; 32] = key.bytes.expose().as_slice().try_into().expect("configured keys are 32 bytes");
    ChaCha20Poly1305::new(&AeadKey::from(bytes))
}

/// Encrypts a seed under `key` (a ring's newest); the result names the key.
pub fn seal(key: &Key, seed: &[u8]) -> String {
    let cipher = cipher(key);
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce);
    let ciphertext = cipher.encrypt(&Nonce::from(nonce), seed).expect("encryption of a short seed cannot fail");
    let mut blob = nonce.to_vec();
    blob.extend(ciphertext);
    format!("{}:{}", key.id, base64::engine::general_purpose::STANDARD.encode(blob))
}

/// Decrypts a sealed seed with the ring's key of the id it names (an older key still opens what
/// it sealed); `None` when that key id is not configured or the data was altered.
pub fn open(keys: &KeyRing, sealed: &str) -> Option<Vec<u8>> {
    let (id, b64) = sealed.split_once(':')?;
    let Some(key) = keys.get(id) else {
        tracing::error!(key_id = id, "a TOTP seed is sealed under a key that is not configured");
        return None;
    };
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if blob.len() < 12 {
        return None;
    }
    let nonce: [u8; 12] = blob[..12].try_into().ok()?;
    cipher(key).decrypt(&Nonce::from(nonce), &blob[12..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last 6 digits.
        let seed = b"12345678901234567890";
        for (time, expected) in [
            (59u64, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(code_at_step(seed, time / STEP_SECS), expected, "at {time}");
        }
    }

    #[test]
    fn drift_and_replay() {
        let seed = new_seed();
        let now = 1_000_000;
        assert_eq!(verify(&seed, &code_at_step(&seed, now), now, 0), Some(now));
        assert_eq!(verify(&seed, &code_at_step(&seed, now - 1), now, 0), Some(now - 1));
        assert_eq!(verify(&seed, &code_at_step(&seed, now + 1), now, 0), Some(now + 1));
        assert_eq!(verify(&seed, &code_at_step(&seed, now - 2), now, 0), None);
        // A code already used (its step is not newer than the last used one) is refused.
        assert_eq!(verify(&seed, &code_at_step(&seed, now), now, now), None);
        assert_eq!(verify(&seed, "12345", now, 0), None);
        assert_eq!(verify(&seed, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let seed = new_seed();
        assert_eq!(base32_decode(&base32(&seed)).unwrap(), seed);
        assert!(otpauth_uri(&seed, "a b@example.jp").starts_with("otpauth://totp/Omamori:a%20b@example.jp?secret="));
    }

    #[test]
    fn a_japanese_label_is_percent_encoded_as_utf8() {
        let seed = b"12345678901234567890";
        let uri = otpauth_uri(seed, "山田@例え.jp");
        assert_eq!(
            uri,
            "otpauth://totp/Omamori:%E5%B1%B1%E7%94%B0@%E4%BE%8B%E3%81%88.jp\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Omamori&algorithm=SHA1&digits=6&period=30"
        );
        // It reads back as the same label, and a '/' cannot split it.
        let parsed = url::Url::parse(&uri).unwrap();
        let label = parsed.path_segments().unwrap().next().unwrap();
        let decoded = url::form_urlencoded::parse(format!("l={label}").as_bytes()).next().unwrap().1.into_owned();
        assert_eq!(decoded, "Omamori:山田@例え.jp");
        assert!(otpauth_uri(seed, "a/b").contains("Omamori:a%2Fb?"));
    }

    #[test]
    fn seeds_are_sealed() {
        let key = KeyRing::from(Key::generate("k1"));
        let seed = new_seed();
        let sealed = seal(&key, &seed);
        assert!(sealed.starts_with("k1:"));
        assert!(!sealed.contains(&base32(&seed)));
        assert_eq!(open(&key, &sealed).unwrap(), seed);
        assert!(open(&Key::generate("k1").into(), &sealed).is_none(), "another key must not open it");
        assert!(open(&Key::generate("k2").into(), &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(open(&key, &tampered).is_none() || tampered == sealed);
        // Rotation: a ring with a newer key seals under it and still opens what the old one sealed.
        let rotated = KeyRing::new(Key::generate("k2"), vec![key.current().clone()]);
        assert_eq!(open(&rotated, &sealed).unwrap(), seed);
        assert!(seal(&rotated, &seed).starts_with("k2:"));
    }
}
