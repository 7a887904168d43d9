//! The card processor port: what Omamori asks of any processor (the sandbox one in
//! `payments::processor`, a real one later), and the checks every adapter shares.
//!
//! Omamori never keeps a card number or security code: the processor turns a card into a token
//! (or the app sends a token it got from the processor directly), and Omamori keeps the token, the
//! brand, the last four digits and a keyed fingerprint of the number. Charges carry Omamori's
//! top-up id as their idempotency key, so asking again never charges twice, and the sweeper can
//! ask how a charge ended after a crash.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Key;
use crate::secret::Secret;

pub use super::BoxFuture;

/// A card as typed into the app. Never logged: `Debug` shows the last four digits only.
pub struct RawCard {
    pub number: Secret<String>,
    pub exp_month: u32,
    pub exp_year: u32,
    pub cvc: Secret<String>,
}

/// What the processor tells about a card.
#[derive(Debug, Clone)]
pub struct CardInfo {
    pub token: String,
    pub brand: String,
    pub last4: String,
    /// Stable per card number across tokens (the processor's own fingerprint, or ours).
    pub fingerprint_source: Secret<String>,
    /// The issuer wants a 3-D Secure style challenge before the card may be used.
    pub needs_challenge: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    #[error("the card number is not valid")]
    InvalidCard,
    #[error("the card was declined")]
    Declined,
    #[error("the processor is unavailable")]
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded {
        reference: String,
    },
    Declined,
    /// The processor has no charge under that key.
    Unknown,
}

/// The port. Implementations must treat `idempotency_key` as the identity of a charge.
pub trait CardProcessor: Send + Sync {
    /// Checks a raw card and tokenizes it.
    fn tokenize<'a>(&'a self, card: &'a RawCard) -> BoxFuture<'a, Result<CardInfo, ProcessorError>>;
    /// Looks up a token the app obtained from the processor itself.
    fn lookup<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<CardInfo, ProcessorError>>;
    fn charge<'a>(
        &'a self,
        token: &'a str,
        amount_yen: i64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProcessorError>>;
    fn charge_status<'a>(
        &'a self,
        token: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<ChargeStatus, ProcessorError>>;
}

/// The keyed fingerprint Omamori stores: HMAC-SHA-256 under the card-fingerprint key, so that a
/// database reader cannot test candidate numbers against it.
pub fn fingerprint(key: &Key, source: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes.expose()).expect("HMAC takes any key length");
    mac.update(source.as_bytes());
    format!("{}:{}", key.id, hex::encode(mac.finalize().into_bytes()))
}

pub fn luhn_valid(number: &str) -> bool {
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("4000000000000002"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("42424242424242a2"));
    }

    #[test]
    fn fingerprints_are_keyed() {
        let (a, b) = (Key::generate("k1"), Key::generate("k1"));
        assert_eq!(fingerprint(&a, "x"), fingerprint(&a, "x"));
        assert_ne!(fingerprint(&a, "x"), fingerprint(&b, "x"));
    }
}
