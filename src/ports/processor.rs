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
    pub challenge: Option<IssuerChallenge>,
}

/// How the issuer's challenge is answered.
#[derive(Debug, Clone)]
pub enum IssuerChallenge {
    /// The sandbox's stand-in: a code sent by SMS to the wallet's phone.
    Sms,
    /// 3-D Secure at the processor: the app completes it with the processor's SDK (Stripe.js,
    /// given `client_secret`), and Omamori asks the processor about `reference` afterwards.
    ThreeDSecure { reference: String, client_secret: Secret<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    #[error("the card number is not valid")]
    InvalidCard,
    #[error("the card was declined")]
    Declined,
    #[error("the processor is unavailable")]
    Unavailable,
    /// The issuer asks the shopper to authenticate this payment (3-D Secure): the app completes it
    /// with the processor's SDK given this client secret, then repeats the request.
    #[error("the card issuer asks the shopper to authenticate this payment")]
    AuthenticationRequired(Secret<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded {
        reference: String,
    },
    Declined,
    /// The processor has no charge under that key (or one never confirmed: no money moved).
    Unknown,
    /// Not ended yet: processing, or waiting for the shopper's authentication.
    Pending,
}

/// The port. Implementations must treat `idempotency_key` as the identity of a charge.
///
/// A charge is made in two steps when the processor allows it: [`CardProcessor::prepare_charge`]
/// opens it without moving money and answers the processor's reference, which Omamori records
/// before [`CardProcessor::charge`] confirms it; a repeat or the sweeper then asks about that very
/// charge, never relying on the processor's idempotency window alone.
pub trait CardProcessor: Send + Sync {
    /// Checks a raw card and tokenizes it.
    fn tokenize<'a>(&'a self, card: &'a RawCard) -> BoxFuture<'a, Result<CardInfo, ProcessorError>>;
    /// Looks up a token the app obtained from the processor itself, and checks the card with its
    /// issuer (which may ask for a challenge).
    fn lookup<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<CardInfo, ProcessorError>>;
    /// Whether card numbers may be sent to Omamori at all (the sandbox, PCI DSS scope); otherwise
    /// only the processor's tokens are taken.
    fn takes_raw_cards(&self) -> bool {
        true
    }
    /// The fingerprint source of a token's card, when it can be read without checking the card
    /// with its issuer: the card-testing limits then count per card for tokens too.
    fn token_fingerprint<'a>(
        &'a self,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret<String>>, ProcessorError>> {
        Box::pin(async { Ok(None) })
    }
    /// Whether the issuer's challenge of a card ([`IssuerChallenge::ThreeDSecure`]) has passed.
    fn challenge_passed<'a>(&'a self, _reference: &'a str) -> BoxFuture<'a, Result<bool, ProcessorError>> {
        Box::pin(async { Ok(false) })
    }
    /// Opens the charge under `idempotency_key` without moving money; `None` when the processor
    /// needs no such step (its idempotency key alone names the charge).
    fn prepare_charge<'a>(
        &'a self,
        _token: &'a str,
        _amount_yen: i64,
        _idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProcessorError>> {
        Box::pin(async { Ok(None) })
    }
    /// Moves the money (once, however often asked); `reference` is what `prepare_charge` answered.
    fn charge<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<String, ProcessorError>>;
    /// Cancels a charge that has not ended (one whose authentication the shopper abandoned), so
    /// that it can never complete later.
    fn cancel_charge<'a>(&'a self, _charge: &'a Charge<'a>) -> BoxFuture<'a, Result<(), ProcessorError>> {
        Box::pin(async { Ok(()) })
    }
    /// How the charge ended, if it did.
    fn charge_status<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<ChargeStatus, ProcessorError>>;
}

/// One charge, as Omamori names it to the processor.
pub struct Charge<'a> {
    pub token: &'a str,
    pub amount_yen: i64,
    pub idempotency_key: &'a str,
    /// The processor's reference, when `prepare_charge` gave one.
    pub reference: Option<&'a str>,
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
