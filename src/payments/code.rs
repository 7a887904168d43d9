//! Payment codes shown by the phone (ARCHITECTURE section 6, consumer-presented payment).
//!
//! This module owns what a code is: Omamori's provider prefix followed by random digits, how a fresh one
//! is drawn, how a code submitted by a POS is checked before any database work, the hash under which the
//! database keeps it, and its QR drawing. Whether a code is still valid (single use, 60-second life,
//! bound to wallet and device) is decided where codes are stored, not here. The entropy here is what
//! defeats a guessed code (section 2): 18 random digits are 10^18 possibilities per prefix.

use std::fmt;

use fast_qr::convert::svg::SvgBuilder;
use fast_qr::convert::{Builder, Shape};
use fast_qr::{ECL, QRBuilder};
use rand::Rng;
use sha2::{Digest, Sha256};

/// A payment code as shown by the phone: Omamori's provider prefix followed by random digits.
/// Numeric so that it prints as a 1-D barcode too (Japan's unified code-payment guideline routes by prefix).
///
/// `Debug` prints the prefix and the last 4 digits only, so a code that reaches a log line cannot be paid
/// with. There is deliberately no `Display`: [`PaymentCode::as_str`] is the one way to read the code.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentCode(String);

/// Random digits after the prefix. 16 decimal digits from a CSPRNG are ~53.15 bits; 18 (~59.8 bits) keep
/// a clear margin over 53 bits.
pub const RANDOM_DIGITS: usize = 18;

/// The error correction level of the QR drawing: M recovers about 15% damage (glare, a cracked screen) and
/// still fits a payment code in the smallest symbol, version 1.
const QR_ECL: ECL = ECL::M;

/// The quiet zone the QR specification requires around the symbol, in modules.
const QR_QUIET_ZONE: usize = 4;

pub use crate::config::validate_code_prefix as validate_prefix;

impl PaymentCode {
    /// A fresh code: `prefix` then [`RANDOM_DIGITS`] digits, each uniform over 0 to 9.
    ///
    /// The caller passes a prefix that passed [`validate_prefix`] (the configuration checks it at start-up).
    /// This function never panics: given any other prefix it still returns a code, but [`PaymentCode::parse`]
    /// refuses every code under an invalid prefix, so such a code can never be paid with.
    ///
    /// `rand::rng()` is the thread-local ChaCha12 generator seeded from the operating system, and
    /// `random_range` samples without modulo bias, so every digit carries log2(10) bits.
    pub fn generate(prefix: &str) -> PaymentCode {
        let mut rng = rand::rng();
        let mut code = String::with_capacity(prefix.len() + RANDOM_DIGITS);
        code.push_str(prefix);
        for _ in 0..RANDOM_DIGITS {
            code.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        PaymentCode(code)
    }

    /// Parses a code as submitted by a POS: trims ASCII whitespace, requires only ASCII digits, exactly
    /// `prefix.len() + RANDOM_DIGITS` long and starting with `prefix`. Anything else, including any code under
    /// a prefix that fails [`validate_prefix`], is `None` (the POS answers `422 code_invalid`).
    pub fn parse(raw: &str, prefix: &str) -> Option<PaymentCode> {
        let code = raw.trim_ascii();
        let well_formed = validate_prefix(prefix).is_ok()
            && code.len() == prefix.len() + RANDOM_DIGITS
            && code.bytes().all(|b| b.is_ascii_digit())
            && code.starts_with(prefix);
        well_formed.then(|| PaymentCode(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database stores and looks up: SHA-256 of the code, in lower-case hex.
    ///
    /// Codes are random and live about a minute, so a fast unkeyed hash is enough: inverting one means
    /// searching ~2^59 candidates, long after the code expired. A database reader cannot pay with what it reads.
    pub fn lookup_hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for PaymentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every code is a prefix followed by RANDOM_DIGITS digits, so the prefix length follows from the
        // total. `get` keeps this panic-free even for a code generated under a non-ASCII prefix.
        let prefix_end = self.0.len().saturating_sub(RANDOM_DIGITS);
        let tail_start = self.0.len().saturating_sub(4).max(prefix_end);
        let prefix = self.0.get(..prefix_end).unwrap_or("");
        let tail = self.0.get(tail_start..).unwrap_or("");
        write!(f, "PaymentCode({prefix}…{tail})")
    }
}

/// Draws `text` as a QR code in SVG (black square modules on white, with the standard 4-module quiet zone,
/// error correction level M), for `GET /v1/payment-codes/{code}/qr.svg`. Returns the SVG document.
///
/// The document has a `viewBox` of one unit per module and no fixed size, so it scales to whatever the
/// app gives it. A digits-only text is encoded in numeric mode: a payment code fits a version 1 symbol
/// (21 × 21 modules), the easiest for a scanner. Text too long for any QR code at level M (more than
/// 5,596 digits or 2,331 bytes) cannot happen for a payment code; it yields a blank white square and an
/// error in the log rather than a panic.
pub fn qr_svg(text: &str) -> String {
    let mut builder = SvgBuilder::default();
    builder
        .shape(Shape::Square)
        .margin(QR_QUIET_ZONE)
        .module_color([0, 0, 0, 255])
        .background_color([255, 255, 255, 255]);
    match QRBuilder::new(text.as_bytes()).ecl(QR_ECL).build() {
        Ok(qr) => builder.to_str(&qr),
        Err(error) => {
            tracing::error!(len = text.len(), %error, "text does not fit in a QR code");
            let side = 2 * QR_QUIET_ZONE;
            format!(
                r##"<svg viewBox="0 0 {side} {side}" xmlns="http://www.w3.org/2000/svg"><rect width="{side}" height="{side}" fill="#ffffff"/></svg>"##
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    const PREFIX: &str = "4649";

    #[test]
    fn generated_codes_are_prefix_then_random_digits() {
        for _ in 0..1_000 {
            let code = PaymentCode::generate(PREFIX);
            let s = code.as_str();
            assert_eq!(s.len(), PREFIX.len() + RANDOM_DIGITS);
            assert!(s.starts_with(PREFIX), "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_digit()), "{s}");
        }
    }

    #[test]
    fn random_digits_carry_more_than_53_bits() {
        let bits = RANDOM_DIGITS as f64 * 10f64.log2();
        assert!(bits > 59.0, "{bits}");
    }

    #[test]
    fn ten_thousand_codes_are_all_distinct() {
        let codes: HashSet<String> = (0..10_000).map(|_| PaymentCode::generate(PREFIX).as_str().to_owned()).collect();
        assert_eq!(codes.len(), 10_000);
    }

    #[test]
    fn random_digits_are_roughly_uniform() {
        // 100 000 digits: one digit's share has a standard deviation of about 0.1%, so 8%..12% never flakes
        // yet catches a stuck or modulo-biased generator.
        let mut counts = [0u32; 10];
        let mut total = 0u32;
        while total < 100_000 {
            let code = PaymentCode::generate(PREFIX);
            for b in code.as_str()[PREFIX.len()..].bytes() {
                counts[usize::from(b - b'0')] += 1;
                total += 1;
            }
        }
        for (digit, &count) in counts.iter().enumerate() {
            let share = f64::from(count) / f64::from(total);
            assert!((0.08..=0.12).contains(&share), "digit {digit}: {share:.4} of {total}");
        }
    }

    #[test]
    fn parse_accepts_a_valid_code_with_surrounding_whitespace() {
        let code = PaymentCode::generate(PREFIX);
        let raw = format!(" \t{}\r\n", code.as_str());
        assert_eq!(PaymentCode::parse(&raw, PREFIX), Some(code.clone()));
        assert_eq!(PaymentCode::parse(code.as_str(), PREFIX), Some(code));
    }

    #[test]
    fn parse_rejects_malformed_codes() {
        let code = PaymentCode::generate(PREFIX);
        let s = code.as_str();
        let random = &s[PREFIX.len()..];
        let rejected = [
            format!("9999{random}"),                   // wrong prefix
            s[..s.len() - 1].to_owned(),               // one digit short
            format!("{s}0"),                           // one digit long
            format!("{PREFIX}{}", &random[1..]),       // prefix with one random digit missing
            format!("{}a", &s[..s.len() - 1]),         // a letter
            format!("{}-{}", &s[..10], &s[11..]),      // a separator
            format!("{PREFIX}{}١٢٣", &random[3..]),    // Arabic-Indic digits
            format!("{PREFIX}{}１２３", &random[3..]), // full-width digits
            format!("{s}\u{3000}"),                    // ideographic space is not ASCII whitespace
            format!("{} {}", &s[..10], &s[10..]),      // inner whitespace
            format!("+{}", &s[1..]),                   // a sign
            String::new(),
            "   ".to_owned(),
            "١٢٣".to_owned(),
        ];
        for raw in &rejected {
            assert_eq!(PaymentCode::parse(raw, PREFIX), None, "{raw:?}");
        }
    }

    #[test]
    fn parse_refuses_everything_under_an_invalid_prefix() {
        for prefix in ["", "1", "0123", "1234567", "12a", "１２"] {
            let code = PaymentCode::generate(prefix);
            assert_eq!(PaymentCode::parse(code.as_str(), prefix), None, "{prefix:?}");
        }
    }

    #[test]
    fn validate_prefix_accepts_2_to_6_digits_not_starting_with_0() {
        for ok in ["12", "4649", "999999", "100000"] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1", "1234567", "01", "0", "12a", " 12", "12 ", "١٢", "１２", "-12"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_shows_prefix_and_last_four_digits_only() {
        let code = PaymentCode::generate(PREFIX);
        let s = code.as_str();
        let debug = format!("{code:?}");
        assert!(!debug.contains(s), "{debug}");
        // No run of digits longer than the prefix or the last four survives.
        assert!(!debug.contains(&s[PREFIX.len()..s.len() - 4]), "{debug}");
        assert_eq!(debug, format!("PaymentCode({PREFIX}…{})", &s[s.len() - 4..]));
        // Same inside a containing struct's derived Debug, the way it would reach a log line.
        assert!(!format!("{:?}", Some(code.clone())).contains(s));
    }

    #[test]
    fn debug_does_not_panic_on_odd_prefixes() {
        for prefix in ["", "１２", "é"] {
            let code = PaymentCode::generate(prefix);
            assert!(!format!("{code:?}").contains(code.as_str()));
        }
    }

    #[test]
    fn lookup_hash_is_stable_and_differs_between_codes() {
        let a = PaymentCode::parse("4649000000000000000001", PREFIX).unwrap();
        let b = PaymentCode::parse("4649000000000000000002", PREFIX).unwrap();
        assert_eq!(a.lookup_hash(), a.clone().lookup_hash());
        assert_ne!(a.lookup_hash(), b.lookup_hash());
        // Pinned: the stored hashes must not change between releases, or every live code stops working.
        let expected = hex::encode(Sha256::digest(b"4649000000000000000001"));
        assert_eq!(a.lookup_hash(), expected);
        assert_eq!(a.lookup_hash().len(), 64);
        assert!(a.lookup_hash().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(!a.lookup_hash().contains(a.as_str()));
    }

    #[test]
    fn qr_svg_is_well_formed_svg_text() {
        let code = PaymentCode::generate(PREFIX);
        let svg = qr_svg(code.as_str());
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#), "{svg}");
        // A 22-digit code is a version 1 symbol (21 modules) plus a 4-module quiet zone on each side.
        assert!(svg.contains(r#"viewBox="0 0 29 29""#), "{svg}");
        assert!(svg.contains("#000000") && svg.contains("#ffffff"), "{svg}");
        // The drawing does not leak the code as text.
        assert!(!svg.contains(code.as_str()));
    }

    #[test]
    fn qr_svg_of_oversized_text_is_a_blank_svg_not_a_panic() {
        let svg = qr_svg(&"7".repeat(10_000));
        assert!(svg.starts_with("<svg") && svg.contains("viewBox") && svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("<path"), "{svg}");
    }

    /// A file in the system temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let unique: u64 = rand::rng().random();
            TempFile(std::env::temp_dir().join(format!("omamori-{}-{unique:016x}-{name}", std::process::id())))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Whether `program` can be started. A missing tool skips a test locally but fails it in CI, so the
    /// decisive test cannot silently stop running there.
    fn tool_available(program: &str, test: &str) -> bool {
        match Command::new(program).arg("--version").output() {
            Ok(_) => true,
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!(
                    "{test}: `{program}` is required in CI ({error}); CI needs the Debian packages zbar-tools and librsvg2-bin"
                )
            }
            Err(error) => {
                eprintln!("skipping {test}: `{program}` is not available ({error})");
                false
            }
        }
    }

    /// The decisive test: a real reader decodes the drawing. zbarimg reads SVG only through ImageMagick's
    /// delegate, which renders at the natural size of one pixel per module, and at that size zbar misses most
    /// codes (38 of 40 in a trial). A phone shows the code far larger, so the test renders it at 8 pixels per
    /// module with rsvg-convert first, the same library ImageMagick's delegate uses.
    ///
    /// CI installs the Debian packages `zbar-tools` (zbarimg) and `librsvg2-bin` (rsvg-convert).
    #[test]
    fn qr_svg_is_read_back_by_zbarimg() {
        const TEST: &str = "qr_svg_is_read_back_by_zbarimg";
        if !tool_available("zbarimg", TEST) || !tool_available("rsvg-convert", TEST) {
            return;
        }
        // Random codes under the shortest, a typical and the longest prefix, so that the symbol's data mask,
        // chosen per content, varies across runs.
        for prefix in ["12", PREFIX, "999999"] {
            for _ in 0..6 {
                let code = PaymentCode::generate(prefix);
                let svg = TempFile::new("qr.svg");
                let png = TempFile::new("qr.png");
                std::fs::write(&svg.0, qr_svg(code.as_str())).unwrap();

                let render = Command::new("rsvg-convert").arg("--zoom=8").arg("-o").arg(&png.0).arg(&svg.0).output();
                let render = render.unwrap();
                assert!(render.status.success(), "rsvg-convert failed: {render:?}");

                let read = Command::new("zbarimg").arg("--raw").arg("-q").arg(&png.0).output().unwrap();
                // zbarimg exits with 4 when it finds no symbol; print the SVG so a failure can be looked at.
                assert!(read.status.success(), "zbarimg read nothing ({read:?}) from {}", qr_svg(code.as_str()));
                assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), code.as_str());
            }
        }
    }
}
