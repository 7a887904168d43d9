//! The sandbox card processor: the [`CardProcessor`] port implemented with test numbers (API.md
//! "Sandbox"), so that development and tests need no real processor.

use crate::ports::processor::{
    BoxFuture, CardInfo, CardProcessor, Charge, ChargeStatus, IssuerChallenge, ProcessorError, RawCard, luhn_valid,
};
use crate::secret::Secret;

/// The sandbox processor (API.md "Sandbox"): Luhn-valid 16-digit numbers starting `424242`
/// succeed, `4000000000000002` is declined, `4000000000003220` needs a challenge. It is
/// stateless: the token carries the card's class and a digest of its number, so every instance
/// answers alike. It remembers (in memory) which charge keys it has charged, so that asking how a
/// charge ended tells a charge that never happened from one that did.
#[derive(Default)]
pub struct SandboxProcessor {
    charged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl SandboxProcessor {
    fn classify(number: &str) -> Result<&'static str, ProcessorError> {
        if !luhn_valid(number) || number.len() != 16 {
            return Err(ProcessorError::InvalidCard);
        }
        match number {
            "4000000000000002" => Ok("decline"),
            "4000000000003220" => Ok("3ds"),
            n if n.starts_with("424242") => Ok("ok"),
            _ => Err(ProcessorError::Declined),
        }
    }

    fn info(class: &str, digest: &str, last4: &str) -> CardInfo {
        CardInfo {
            token: format!("tok_sandbox_{class}_{digest}_{last4}"),
            brand: "visa".into(),
            last4: last4.to_string(),
            fingerprint_source: Secret::new(format!("sandbox:{digest}")),
            challenge: (class == "3ds").then_some(IssuerChallenge::Sms),
        }
    }

    fn parse_token(token: &str) -> Result<(String, String, String), ProcessorError> {
        let rest = token.strip_prefix("tok_sandbox_").ok_or(ProcessorError::InvalidCard)?;
        let mut parts = rest.split('_');
        let (Some(class), Some(digest), Some(last4), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProcessorError::InvalidCard);
        };
        if !["ok", "decline", "3ds"].contains(&class) || digest.len() != 32 || last4.len() != 4 {
            return Err(ProcessorError::InvalidCard);
        }
        Ok((class.to_string(), digest.to_string(), last4.to_string()))
    }
}

impl CardProcessor for SandboxProcessor {
    fn tokenize<'a>(&'a self, card: &'a RawCard) -> BoxFuture<'a, Result<CardInfo, ProcessorError>> {
        Box::pin(async move {
            let number = card.number.expose();
            let class = Self::classify(number)?;
            let cvc = card.cvc.expose();
            if !(1..=12).contains(&card.exp_month)
                || !(2000..=2100).contains(&card.exp_year)
                || !(3..=4).contains(&cvc.len())
                || !cvc.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(ProcessorError::InvalidCard);
            }
            if class == "decline" {
                return Err(ProcessorError::Declined);
            }
            use sha2::{Digest, Sha256};
            let digest = hex::encode(&Sha256::digest(format!("sandbox-card:{number}").as_bytes())[..16]);
            Ok(Self::info(class, &digest, &number[number.len() - 4..]))
        })
    }

    fn lookup<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<CardInfo, ProcessorError>> {
        Box::pin(async move {
            let (class, digest, last4) = Self::parse_token(token)?;
            if class == "decline" {
                return Err(ProcessorError::Declined);
            }
            Ok(Self::info(&class, &digest, &last4))
        })
    }

    fn charge<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<String, ProcessorError>> {
        Box::pin(async move {
            let (class, digest, _) = Self::parse_token(charge.token)?;
            if class == "decline" || charge.amount_yen <= 0 {
                return Err(ProcessorError::Declined);
            }
            self.charged.lock().unwrap_or_else(|e| e.into_inner()).insert(charge.idempotency_key.to_string());
            Ok(format!("ch_sandbox_{}", &digest[..12]))
        })
    }

    fn charge_status<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<ChargeStatus, ProcessorError>> {
        Box::pin(async move {
            let (_, digest, _) = Self::parse_token(charge.token)?;
            if self.charged.lock().unwrap_or_else(|e| e.into_inner()).contains(charge.idempotency_key) {
                Ok(ChargeStatus::Succeeded { reference: format!("ch_sandbox_{}", &digest[..12]) })
            } else {
                Ok(ChargeStatus::Unknown)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> RawCard {
        RawCard { number: Secret::new(number.into()), exp_month: 12, exp_year: 2030, cvc: Secret::new("123".into()) }
    }

    #[tokio::test]
    async fn sandbox_test_numbers() {
        let p = SandboxProcessor::default();
        let ok = p.tokenize(&card("4242424242424242")).await.unwrap();
        assert_eq!(ok.last4, "4242");
        assert!(ok.challenge.is_none());
        assert!(!ok.token.contains("424242424242"), "the token must not carry the number");
        assert_eq!(p.tokenize(&card("4000000000000002")).await.unwrap_err(), ProcessorError::Declined);
        assert!(p.tokenize(&card("4000000000003220")).await.unwrap().challenge.is_some());
        assert_eq!(p.tokenize(&card("4242424242424241")).await.unwrap_err(), ProcessorError::InvalidCard);
        assert_eq!(p.lookup(&ok.token).await.unwrap().fingerprint_source, ok.fingerprint_source);
        let charge = Charge { token: &ok.token, amount_yen: 100, idempotency_key: "top_1", reference: None };
        assert_eq!(p.charge_status(&charge).await.unwrap(), ChargeStatus::Unknown);
        assert!(p.charge(&charge).await.is_ok());
        assert!(matches!(p.charge_status(&charge).await.unwrap(), ChargeStatus::Succeeded { .. }));
        assert_eq!(p.lookup("tok_garbage").await.unwrap_err(), ProcessorError::InvalidCard);
    }
}
