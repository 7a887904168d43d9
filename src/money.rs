//! Money: whole yen with the currency beside every amount.

use std::fmt;

use serde::{Deserialize, Serialize};

/// ISO 4217 currency. Omamori holds yen only, but every amount carries its currency so that a
/// second one cannot be mixed in silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Currency {
    #[serde(rename = "JPY")]
    Jpy,
}

impl Currency {
    pub fn code(self) -> &'static str {
        match self {
            Currency::Jpy => "JPY",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "JPY" => Some(Currency::Jpy),
            _ => None,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount in yen (yen have no minor unit). Signed, because postings and history lines are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Yen(pub i64);

impl Yen {
    pub fn amount(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Yen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "¥{}", self.0)
    }
}

/// Why a submitted amount was refused; every variant maps to `422 invalid_amount`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a whole number of yen")]
    NotAnInteger,
    #[error("amount must be at least 1")]
    TooSmall,
    #[error("amount must be at most {0}")]
    TooLarge(i64),
}

/// Parses an amount as submitted in JSON: an integer from 1 to `ceiling`. Accepts the raw JSON
/// value so that `1.5`, `"100"` or `1e3` are refused with `invalid_amount`, not a generic error.
pub fn parse_amount(value: &serde_json::Value, ceiling: i64) -> Result<Yen, AmountError> {
    let n = match value {
        serde_json::Value::Number(n) => n.as_i64().ok_or(if n.as_u64().is_some() {
            AmountError::TooLarge(ceiling)
        } else {
            AmountError::NotAnInteger
        })?,
        _ => return Err(AmountError::NotAnInteger),
    };
    if n < 1 {
        return Err(AmountError::TooSmall);
    }
    if n > ceiling {
        return Err(AmountError::TooLarge(ceiling));
    }
    Ok(Yen(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_whole_yen_within_the_ceiling() {
        assert_eq!(parse_amount(&json!(1), 1_000_000), Ok(Yen(1)));
        assert_eq!(parse_amount(&json!(1_000_000), 1_000_000), Ok(Yen(1_000_000)));
        assert_eq!(parse_amount(&json!(1_000_001), 1_000_000), Err(AmountError::TooLarge(1_000_000)));
        assert_eq!(parse_amount(&json!(0), 1_000_000), Err(AmountError::TooSmall));
        assert_eq!(parse_amount(&json!(-5), 1_000_000), Err(AmountError::TooSmall));
        assert_eq!(parse_amount(&json!(1.5), 1_000_000), Err(AmountError::NotAnInteger));
        assert_eq!(parse_amount(&json!("100"), 1_000_000), Err(AmountError::NotAnInteger));
        assert_eq!(parse_amount(&json!(u64::MAX), 1_000_000), Err(AmountError::TooLarge(1_000_000)));
        assert_eq!(parse_amount(&json!(null), 1_000_000), Err(AmountError::NotAnInteger));
    }
}
