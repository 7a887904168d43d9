//! Merchants' analytics: the `customer_ref` pseudonym that lets a merchant count returning
//! customers without learning who they are.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::{MerchantId, UserId};

/// `cus_` and 26 base32 characters (130 bits) of HMAC-SHA256(key, merchant id ‖ 0 ‖ user id):
/// stable across one merchant's stores, unrelated across merchants, irreversible without the key.
pub fn customer_ref(key: &[u8], merchant_id: &MerchantId, user_id: &UserId) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"customer_ref\0");
    mac.update(merchant_id.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(user_id.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("cus_{}", base32_130(&digest))
}

/// The first 130 bits of `bytes` as 26 lower-case RFC 4648 base32 characters.
fn base32_130(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(26);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        if out.len() == 26 {
            break;
        }
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
        buffer &= (1 << bits) - 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pseudonym_is_per_merchant() {
        let (m1, m2) = (MerchantId::from_raw("mer_a"), MerchantId::from_raw("mer_b"));
        let u = UserId::from_raw("usr_x");
        let a = customer_ref(b"k", &m1, &u);
        assert_eq!(a, customer_ref(b"k", &m1, &u));
        assert_ne!(a, customer_ref(b"k", &m2, &u));
        assert_eq!(a.len(), 30);
        assert!(a[4..].chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)), "{a}");
    }
}
