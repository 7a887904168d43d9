//! The EMVCo merchant-presented QR payload of a store (EMV QRCPS Merchant-Presented Mode; ARCHITECTURE.md
//! section 6): [`build`] writes the payload a store prints, [`parse`] reads and verifies what a shopper's phone
//! scanned. This module owns only the text format — its tag-length-value structure, the CRC and the Omamori
//! merchant account information template. Rendering the QR image and checking that the named store exists and
//! is open belong to the callers.
//!
//! # Lengths count characters
//!
//! Every length field counts Unicode scalar values (Rust `char`s), not UTF-8 bytes, in [`build`] and [`parse`]
//! alike, and the 512-character payload limit and the 25/15/10-character field limits count the same way. This
//! is what the EMVCo specification says ("number of characters") and what its own published sample does: its
//! language template carries `0104最佳运输`, four characters in twelve bytes. The CRC, being over data, is over the
//! payload's UTF-8 bytes (that sample's `A13A` checks only that way). For ASCII, which is all that most payloads
//! carry, the two counts agree; a reader that counts bytes would misread a Japanese merchant name, which is why
//! the test suite pins the choice with that sample.
//!
//! Over-long names are cut at a character boundary, and the cut also steps back over a character that the
//! next one modifies (a combining mark such as a dakuten, a half-width ﾞ/ﾟ, a zero-width joiner), so that
//! "ｶﾞｽﾄ" cut after "ｶ" does not print as a different word.

use crate::ids::StoreId;
use std::fmt::Write as _;

/// What a store's QR code carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreQr {
    /// Omamori store id, e.g. "sto_0193ab..." (ASCII, at most 60 chars).
    pub store_id: StoreId,
    /// At most 25 characters (EMVCo limit); longer names are cut at build time.
    pub merchant_name: String,
    /// At most 15 characters; cut likewise.
    pub merchant_city: String,
    /// Tag 61, at most 10 characters; cut likewise.
    pub postal_code: Option<String>,
    /// ISO 18245 merchant category code, exactly 4 digits.
    pub mcc: String,
}

/// Why a scanned payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// Bad length field, truncated, non-digit id or length, duplicate tag, CRC not last, too long...
    #[error("the payload is not valid tag-length-value data")]
    Malformed,
    /// The CRC field is missing, not upper-case hex, or does not match the payload.
    #[error("the payload's CRC does not match")]
    BadCrc,
    /// No template names Omamori, or the format, currency or country is not one Omamori accepts.
    #[error("the payload is not an Omamori store code")]
    NotOmamori,
    /// A field of an Omamori code is missing or invalid; names the [`StoreQr`] field (or "merchant_account",
    /// "point_of_initiation").
    #[error("a field of the payload is invalid: {0}")]
    InvalidField(&'static str),
}

impl QrError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            QrError::Malformed => "qr_malformed",
            QrError::BadCrc => "qr_bad_crc",
            QrError::NotOmamori => "qr_not_omamori",
            QrError::InvalidField(_) => "qr_invalid_field",
        }
    }
}

/// The globally unique identifier Omamori uses in its merchant account information template.
pub const OMAMORI_GUI: &str = "JP.OMAMORI";

/// Payloads longer than this (in characters) are refused.
pub const MAX_PAYLOAD_CHARS: usize = 512;

const MAX_STORE_ID: usize = 60;
const MAX_NAME: usize = 25;
const MAX_CITY: usize = 15;
const MAX_POSTAL_CODE: usize = 10;
/// Length fields are two decimal digits.
const MAX_VALUE: usize = 99;

const TAG_FORMAT: u8 = 0;
const TAG_INITIATION: u8 = 1;
const TAG_OMAMORI_ACCOUNT: u8 = 26;
/// Tags 26-51 are merchant account information templates, one per payment provider; a multi-provider code
/// may put Omamori's in any of them.
const ACCOUNT_TEMPLATES: std::ops::RangeInclusive<u8> = 26..=51;
const TAG_MCC: u8 = 52;
const TAG_CURRENCY: u8 = 53;
const TAG_COUNTRY: u8 = 58;
const TAG_NAME: u8 = 59;
const TAG_CITY: u8 = 60;
const TAG_POSTAL_CODE: u8 = 61;
const TAG_CRC: u8 = 63;
const SUB_GUI: u8 = 0;
const SUB_STORE_ID: u8 = 1;

const FORMAT_INDICATOR: &str = "01";
const STATIC_CODE: &str = "11";
const DYNAMIC_CODE: &str = "12";
/// ISO 4217 numeric code of the yen.
const JPY: &str = "392";
const JAPAN: &str = "JP";
/// The id and length of the CRC field, which the CRC covers.
const CRC_HEADER: &str = "6304";

/// Builds the payload a store's QR code shows.
///
/// Name, city and postal code are cut to their limits (see the module documentation) and characters that could
/// disguise the payee on the shopper's screen (control characters, bidirectional overrides, line separators) are
/// replaced by spaces. Build cannot fail, so a `StoreQr` outside the limits that cannot be cut safely yields a
/// payload that [`parse`] refuses rather than a different one: an invalid store id is left out (cutting an id
/// could name another store; `parse` answers `InvalidField("store_id")`), and an invalid MCC is written as
/// given (`InvalidField("mcc")`). An empty name or city is left out, and an empty postal code reads back as
/// `None`.
pub fn build(qr: &StoreQr) -> String {
    let mut account = String::new();
    push_field(&mut account, SUB_GUI, OMAMORI_GUI);
    if is_valid_store_id(qr.store_id.as_str()) {
        push_field(&mut account, SUB_STORE_ID, qr.store_id.as_str());
    }

    let mut out = String::with_capacity(256);
    push_field(&mut out, TAG_FORMAT, FORMAT_INDICATOR);
    push_field(&mut out, TAG_INITIATION, STATIC_CODE);
    push_field(&mut out, TAG_OMAMORI_ACCOUNT, &account);
    push_field(&mut out, TAG_MCC, &qr.mcc);
    push_field(&mut out, TAG_CURRENCY, JPY);
    push_field(&mut out, TAG_COUNTRY, JAPAN);
    push_field(&mut out, TAG_NAME, cut(&displayable(&qr.merchant_name), MAX_NAME));
    push_field(&mut out, TAG_CITY, cut(&displayable(&qr.merchant_city), MAX_CITY));
    if let Some(postal_code) = &qr.postal_code {
        push_field(&mut out, TAG_POSTAL_CODE, cut(&displayable(postal_code), MAX_POSTAL_CODE));
    }
    out.push_str(CRC_HEADER);
    let crc = crc_hex(crc16_ccitt_false(out.as_bytes()));
    // The hex digits are ASCII by construction.
    out.extend(crc.iter().map(|&b| char::from(b)));
    out
}

/// Parses and verifies a scanned payload: the CRC first ([`QrError::BadCrc`]), then the TLV structure
/// ([`QrError::Malformed`]), then the Omamori template and fields ([`QrError::NotOmamori`],
/// [`QrError::InvalidField`]). Fields it does not know are skipped. Never panics.
///
/// One exception to that order: input longer than 4 × 512 bytes cannot be a payload of at most 512 characters
/// and is refused as `Malformed` before the CRC is computed over it.
pub fn parse(payload: &str) -> Result<StoreQr, QrError> {
    let fields = verified_fields(payload)?;

    if get(&fields, TAG_FORMAT) != Some(FORMAT_INDICATOR) {
        return Err(QrError::NotOmamori);
    }
    let account = omamori_account(&fields)?.ok_or(QrError::NotOmamori)?;
    if get(&fields, TAG_CURRENCY) != Some(JPY) || get(&fields, TAG_COUNTRY) != Some(JAPAN) {
        return Err(QrError::NotOmamori);
    }

    // A dynamic code (12) is accepted: the shopper still enters and confirms the amount.
    match get(&fields, TAG_INITIATION) {
        None | Some(STATIC_CODE | DYNAMIC_CODE) => {}
        Some(_) => return Err(QrError::InvalidField("point_of_initiation")),
    }
    let store_id = get(&account, SUB_STORE_ID).filter(|id| is_valid_store_id(id));
    let store_id = store_id.ok_or(QrError::InvalidField("store_id"))?;
    let mcc = get(&fields, TAG_MCC).filter(|mcc| mcc.len() == 4 && mcc.bytes().all(|b| b.is_ascii_digit()));
    let mcc = mcc.ok_or(QrError::InvalidField("mcc"))?;
    let merchant_name = text_field(get(&fields, TAG_NAME), MAX_NAME, "merchant_name")?;
    let merchant_city = text_field(get(&fields, TAG_CITY), MAX_CITY, "merchant_city")?;
    let postal_code = match get(&fields, TAG_POSTAL_CODE) {
        None => None,
        some => Some(text_field(some, MAX_POSTAL_CODE, "postal_code")?),
    };

    Ok(StoreQr {
        store_id: StoreId::from_raw(store_id),
        merchant_name,
        merchant_city,
        postal_code,
        mcc: mcc.to_owned(),
    })
}

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor.
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |crc, &byte| (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ byte)])
}

/// The CRC of each leading byte, so the CRC costs one lookup per byte rather than eight shifts.
const CRC_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// One data object: a two-digit id and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field<'a> {
    tag: u8,
    value: &'a str,
}

/// The CRC check and the top-level structure, shared by [`parse`] and the tests of foreign payloads.
fn verified_fields(payload: &str) -> Result<Vec<Field<'_>>, QrError> {
    // No string of more than 4 × 512 bytes has at most 512 characters; refusing it here bounds the work an
    // arbitrary request can cause.
    if payload.len() > 4 * MAX_PAYLOAD_CHARS {
        return Err(QrError::Malformed);
    }
    verify_crc(payload)?;
    if payload.chars().count() > MAX_PAYLOAD_CHARS {
        return Err(QrError::Malformed);
    }
    let fields = tlv(payload)?;
    // EMVCo: the payload format indicator comes first and the CRC last. The CRC check only saw that the
    // payload ends in "6304XXXX"; those bytes could also be the tail of another field's value.
    if fields.first().map(|f| f.tag) != Some(TAG_FORMAT) {
        return Err(QrError::Malformed);
    }
    match fields.last() {
        Some(last) if last.tag == TAG_CRC && last.value.len() == 4 => Ok(fields),
        _ => Err(QrError::Malformed),
    }
}

/// Checks that the payload ends in "6304" and four upper-case hex digits that are the CRC of everything before
/// them. Anything else in that place, a missing CRC included, is `BadCrc`, so that a damaged scan asks for a
/// rescan. Lower-case hex is refused: one payload, one spelling.
fn verify_crc(payload: &str) -> Result<(), QrError> {
    let bytes = payload.as_bytes();
    let split = bytes.len().checked_sub(4).ok_or(QrError::BadCrc)?;
    let (covered, written) = bytes.split_at(split);
    if covered.ends_with(CRC_HEADER.as_bytes()) && written == crc_hex(crc16_ccitt_false(covered)) {
        Ok(())
    } else {
        Err(QrError::BadCrc)
    }
}

fn crc_hex(crc: u16) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [12, 8, 4, 0].map(|shift| HEX[usize::from((crc >> shift) & 0xF)])
}

/// Splits `data` into data objects: two ASCII digits of id, two of length (01-99 characters), then exactly
/// that many characters. A repeated id is malformed: EMVCo ids are unique within a template, and two values
/// for one field would let two readers see two different payees.
fn tlv(data: &str) -> Result<Vec<Field<'_>>, QrError> {
    let mut fields = Vec::new();
    let mut seen = [false; 100];
    let mut rest = data;
    while !rest.is_empty() {
        let header = rest.as_bytes().get(..4).ok_or(QrError::Malformed)?;
        if !header.iter().all(u8::is_ascii_digit) {
            return Err(QrError::Malformed);
        }
        let digits = |i: usize| (header[i] - b'0') * 10 + (header[i + 1] - b'0');
        let (tag, len) = (digits(0), usize::from(digits(2)));
        if len == 0 || std::mem::replace(&mut seen[usize::from(tag)], true) {
            return Err(QrError::Malformed);
        }
        // The four header bytes are ASCII, so byte 4 is a character boundary.
        let (value, tail) = split_chars(&rest[4..], len).ok_or(QrError::Malformed)?;
        fields.push(Field { tag, value });
        rest = tail;
    }
    Ok(fields)
}

/// Splits off the first `n` characters, or `None` if there are fewer.
fn split_chars(s: &str, n: usize) -> Option<(&str, &str)> {
    match s.char_indices().nth(n) {
        Some((at, _)) => Some(s.split_at(at)),
        None if s.chars().count() == n => Some((s, "")),
        None => None,
    }
}

fn get<'a>(fields: &[Field<'a>], tag: u8) -> Option<&'a str> {
    fields.iter().find(|f| f.tag == tag).map(|f| f.value)
}

/// Finds the merchant account information template whose GUI is Omamori's, among those of every provider.
///
/// Another provider's template that is not valid TLV is its own business and is skipped; one that starts with
/// Omamori's GUI but is broken is `Malformed`. Two Omamori templates could name two stores, so they are refused.
fn omamori_account<'a>(fields: &[Field<'a>]) -> Result<Option<Vec<Field<'a>>>, QrError> {
    let mut gui_field = String::new();
    push_field(&mut gui_field, SUB_GUI, OMAMORI_GUI);
    let mut found = None;
    for field in fields.iter().filter(|f| ACCOUNT_TEMPLATES.contains(&f.tag)) {
        match tlv(field.value) {
            Ok(sub) if get(&sub, SUB_GUI) == Some(OMAMORI_GUI) => {
                if found.replace(sub).is_some() {
                    return Err(QrError::InvalidField("merchant_account"));
                }
            }
            Ok(_) => {}
            Err(err) if field.value.starts_with(&gui_field) => return Err(err),
            Err(_) => {}
        }
    }
    Ok(found)
}

/// Store ids are printable ASCII without spaces, at most 60 characters (so the template stays within 99).
fn is_valid_store_id(id: &str) -> bool {
    (1..=MAX_STORE_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A name, city or postal code as shown to the shopper: present, within its limit, something visible in it,
/// and nothing that could reorder or hide text on the screen where the shopper confirms the payee.
fn text_field(value: Option<&str>, max: usize, name: &'static str) -> Result<String, QrError> {
    match value {
        Some(v) if v.chars().count() <= max && !v.trim().is_empty() && !v.chars().any(is_deceptive) => Ok(v.to_owned()),
        _ => Err(QrError::InvalidField(name)),
    }
}

/// Control characters, bidirectional marks, embeddings, overrides and isolates, and line separators.
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn displayable(text: &str) -> String {
    text.chars().map(|c| if is_deceptive(c) { ' ' } else { c }).collect()
}

/// At most `max` characters of `text`, never ending just before a character that modifies the last one kept
/// (see the module documentation). Falls back to a plain character cut if the whole prefix is one cluster.
fn cut(text: &str, max: usize) -> &str {
    let Some((at, _)) = text.char_indices().nth(max) else { return text };
    let mut end = at;
    while let Some(last) = text[..end].chars().next_back() {
        let next_modifies = text[end..].chars().next().is_some_and(modifies_previous);
        if !next_modifies && last != '\u{200D}' {
            break;
        }
        end -= last.len_utf8();
    }
    if end == 0 { &text[..at] } else { &text[..end] }
}

/// Combining marks (dakuten U+3099, accents, variation selectors), the half-width voiced sound marks and the
/// zero-width joiner. An approximation of grapheme clusters that needs no segmentation tables.
fn modifies_previous(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c) || matches!(c, '\u{200D}' | '\u{FF9E}' | '\u{FF9F}')
}

/// Appends one data object; a value that has no valid length (empty, or over 99 characters) is left out.
fn push_field(out: &mut String, tag: u8, value: &str) {
    let len = value.chars().count();
    if (1..=MAX_VALUE).contains(&len) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{tag:02}{len:02}{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sample payload of the EMVCo Merchant-Presented Mode specification, as reproduced in the test suites of
    /// many public EMV QR libraries:
    /// two other providers' templates (29, 31), a Chinese language template whose lengths count characters,
    /// additional data, an unreserved template 91, and CRC A13A.
    const EMVCO_SAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678\
        520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京\
        540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

    fn store() -> StoreQr {
        StoreQr {
            store_id: StoreId::from_raw("sto_0193ab4c5d6e7f"),
            merchant_name: "Omamori Coffee".into(),
            merchant_city: "Tokyo".into(),
            postal_code: Some("150-0002".into()),
            mcc: "5814".into(),
        }
    }

    fn japanese_store() -> StoreQr {
        StoreQr { merchant_name: "セブン・ストア 渋谷店".into(), postal_code: None, ..store() }
    }

    /// A bitwise CRC written independently of the table, as the reference for the tests.
    fn reference_crc(data: &[u8]) -> u16 {
        let mut crc: u16 = 0xFFFF;
        for &byte in data {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc
    }

    /// Whether the payload ends in a CRC field that matches, checked without the module's code.
    fn crc_is_valid(payload: &str) -> bool {
        let bytes = payload.as_bytes();
        bytes.len() >= 8
            && bytes[bytes.len() - 8..bytes.len() - 4] == *b"6304"
            && format!("{:04X}", reference_crc(&bytes[..bytes.len() - 4])).as_bytes() == &bytes[bytes.len() - 4..]
    }

    /// Appends a correct CRC field to `body`, to test what lies behind the CRC check.
    fn with_crc(body: &str) -> String {
        let covered = format!("{body}6304");
        format!("{covered}{:04X}", reference_crc(covered.as_bytes()))
    }

    /// A field written by hand, counting characters.
    fn f(tag: &str, value: &str) -> String {
        format!("{tag}{:02}{value}", value.chars().count())
    }

    /// The body (without CRC) of a valid Omamori code, with `extra` inserted before tag 52, for hand-made cases.
    fn body_with(format: &str, account: &str, extra: &str, currency: &str, country: &str, name: &str) -> String {
        [f("00", format), f("01", "11"), account.to_owned(), extra.to_owned(), f("52", "5814"), f("53", currency)]
            .concat()
            + &f("58", country)
            + &f("59", name)
            + &f("60", "Tokyo")
    }

    fn omamori_account_field(store_id: &str) -> String {
        f("26", &(f("00", OMAMORI_GUI) + &f("01", store_id)))
    }

    fn valid_body() -> String {
        body_with("01", &omamori_account_field("sto_1"), "", "392", "JP", "Shop")
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
        assert_eq!(reference_crc(b"123456789"), 0x29B1);
    }

    #[test]
    fn emvco_sample_parses_structurally() {
        let fields = verified_fields(EMVCO_SAMPLE).expect("the published sample is valid TLV with a valid CRC");
        let tags: Vec<u8> = fields.iter().map(|f| f.tag).collect();
        assert_eq!(tags, [0, 1, 29, 31, 52, 58, 59, 60, 64, 54, 53, 55, 62, 91, 63]);
        assert_eq!(get(&fields, 59), Some("BEST TRANSPORT"));
        assert_eq!(get(&fields, 54), Some("23.72"));
        assert_eq!(get(&fields, 63), Some("A13A"));
        // The language template counts characters: 4 CJK characters in 12 bytes.
        let language = tlv(get(&fields, 64).unwrap()).unwrap();
        assert_eq!(get(&language, 1), Some("最佳运输"));
        assert_eq!(get(&language, 2), Some("北京"));
        let other_provider = tlv(get(&fields, 29).unwrap()).unwrap();
        assert_eq!(get(&other_provider, 0), Some("D15600000000"));
        // It is a Chinese code of other providers: structurally fine, not Omamori's.
        assert_eq!(parse(EMVCO_SAMPLE), Err(QrError::NotOmamori));
        assert!(crc_is_valid(EMVCO_SAMPLE));
    }

    #[test]
    fn build_writes_the_documented_fields() {
        let payload = build(&store());
        // Written out once, so that a change in field order or encoding shows here.
        let expected_body = "00020101021126360010JP.OMAMORI0118sto_0193ab4c5d6e7f5204581453033925802JP\
            5914Omamori Coffee6005Tokyo6108150-00026304";
        assert_eq!(&payload[..payload.len() - 4], expected_body);
        assert!(crc_is_valid(&payload));
        let tags: Vec<u8> = verified_fields(&payload).unwrap().iter().map(|f| f.tag).collect();
        assert_eq!(tags, [0, 1, 26, 52, 53, 58, 59, 60, 61, 63]);
    }

    #[test]
    fn round_trip_ascii_and_japanese() {
        let without_postal = StoreQr { postal_code: None, ..store() };
        let japanese_with_postal =
            StoreQr { merchant_city: "渋谷区".into(), postal_code: Some("〒150-0002".into()), ..japanese_store() };
        for qr in [store(), without_postal, japanese_store(), japanese_with_postal] {
            let payload = build(&qr);
            assert_eq!(parse(&payload), Ok(qr.clone()), "{payload}");
            let fields = verified_fields(&payload).unwrap();
            assert_eq!(get(&fields, TAG_POSTAL_CODE), qr.postal_code.as_deref());
        }
        // 11 characters, 29 bytes: the length says 11.
        assert!(build(&japanese_store()).contains("5911セブン・ストア 渋谷店6005Tokyo6304"));
    }

    #[test]
    fn long_texts_are_cut_at_character_boundaries() {
        let long = StoreQr {
            merchant_name: "お守りコーヒー株式会社渋谷道玄坂二丁目店舗第二号館一階".into(), // 27 characters
            merchant_city: "Shibuya-ku, Tokyo".into(),
            postal_code: Some("150-0043-JAPAN".into()),
            ..store()
        };
        let parsed = parse(&build(&long)).unwrap();
        assert_eq!(parsed.merchant_name, "お守りコーヒー株式会社渋谷道玄坂二丁目店舗第二号館");
        assert_eq!(parsed.merchant_name.chars().count(), 25);
        assert_eq!(parsed.merchant_city, "Shibuya-ku, Tok");
        assert_eq!(parsed.postal_code.as_deref(), Some("150-0043-J"));

        // A half-width voiced mark or a combining dakuten after the cut takes its base character with it.
        let half_width = format!("{}ｶﾞｽﾄ", "A".repeat(24));
        let parsed = parse(&build(&StoreQr { merchant_name: half_width, ..store() })).unwrap();
        assert_eq!(parsed.merchant_name, "A".repeat(24));
        let combining = format!("{}か\u{3099}き", "B".repeat(24));
        let parsed = parse(&build(&StoreQr { merchant_name: combining, ..store() })).unwrap();
        assert_eq!(parsed.merchant_name, "B".repeat(24));
        // A name made of one endless cluster still gets a plain character cut rather than vanishing.
        let cluster = format!("e{}", "\u{301}".repeat(40));
        assert_eq!(cut(&cluster, 25).chars().count(), 25);
        // Emoji joined by zero-width joiners are not left ending in a joiner.
        let family = format!("{}👨\u{200D}👩\u{200D}👧", "C".repeat(23));
        assert_eq!(cut(&family, 25), "C".repeat(23));
    }

    #[test]
    fn deceptive_characters_are_replaced_at_build_and_refused_at_parse() {
        let spoof = StoreQr { merchant_name: "Shop\u{202E}evil\nx".into(), ..store() };
        assert_eq!(parse(&build(&spoof)).unwrap().merchant_name, "Shop evil x");
        let body = body_with("01", &omamori_account_field("sto_1"), "", "392", "JP", "Shop\u{202E}evil");
        assert_eq!(parse(&with_crc(&body)), Err(QrError::InvalidField("merchant_name")));
        let blank = body_with("01", &omamori_account_field("sto_1"), "", "392", "JP", "\u{3000} ");
        assert_eq!(parse(&with_crc(&blank)), Err(QrError::InvalidField("merchant_name")));
        let too_long = body_with("01", &omamori_account_field("sto_1"), "", "392", "JP", &"x".repeat(26));
        assert_eq!(parse(&with_crc(&too_long)), Err(QrError::InvalidField("merchant_name")));
    }

    #[test]
    fn invalid_store_ids_are_never_cut_into_another_store() {
        for store_id in ["", "sto 1", "sto_é", &"s".repeat(61), &"s".repeat(90)] {
            let payload = build(&StoreQr { store_id: StoreId::from_raw(store_id), ..store() });
            assert_eq!(parse(&payload), Err(QrError::InvalidField("store_id")), "{store_id:?}");
        }
        let sixty = "s".repeat(60);
        assert_eq!(
            parse(&build(&StoreQr { store_id: StoreId::from_raw(&sixty), ..store() })).unwrap().store_id,
            *sixty
        );
    }

    #[test]
    fn missing_or_bad_fields_are_invalid() {
        assert_eq!(parse(&build(&StoreQr { mcc: "12a4".into(), ..store() })), Err(QrError::InvalidField("mcc")));
        assert_eq!(parse(&build(&StoreQr { mcc: "581".into(), ..store() })), Err(QrError::InvalidField("mcc")));
        assert_eq!(parse(&build(&StoreQr { mcc: String::new(), ..store() })), Err(QrError::InvalidField("mcc")));
        let no_name = StoreQr { merchant_name: String::new(), ..store() };
        assert_eq!(parse(&build(&no_name)), Err(QrError::InvalidField("merchant_name")));
        let no_city = StoreQr { merchant_city: String::new(), ..store() };
        assert_eq!(parse(&build(&no_city)), Err(QrError::InvalidField("merchant_city")));
        let empty_postal = StoreQr { postal_code: Some(String::new()), ..store() };
        assert_eq!(parse(&build(&empty_postal)).unwrap().postal_code, None);

        let dynamic = valid_body().replacen("010211", "010212", 1);
        assert!(parse(&with_crc(&dynamic)).is_ok());
        let unknown_initiation = valid_body().replacen("010211", "010213", 1);
        assert_eq!(parse(&with_crc(&unknown_initiation)), Err(QrError::InvalidField("point_of_initiation")));
        let no_store_id = body_with("01", &f("26", &f("00", OMAMORI_GUI)), "", "392", "JP", "Shop");
        assert_eq!(parse(&with_crc(&no_store_id)), Err(QrError::InvalidField("store_id")));
    }

    #[test]
    fn any_flipped_bit_is_a_bad_crc() {
        // CRC-16 catches every single-bit error; every flip that is still UTF-8 must be BadCrc, wherever it is,
        // including in the "6304" header and the hex digits themselves.
        for payload in [build(&store()), build(&japanese_store())] {
            let mut checked = 0;
            for i in 0..payload.len() {
                for bit in 0..8 {
                    let mut bytes = payload.clone().into_bytes();
                    bytes[i] ^= 1 << bit;
                    if let Ok(flipped) = String::from_utf8(bytes) {
                        assert_eq!(parse(&flipped), Err(QrError::BadCrc), "byte {i} bit {bit}: {flipped}");
                        checked += 1;
                    }
                }
            }
            assert!(checked > payload.len() * 4);
        }
        // A different Japanese character of the same length.
        let replaced = build(&japanese_store()).replace('渋', "澁");
        assert_eq!(parse(&replaced), Err(QrError::BadCrc));
    }

    #[test]
    fn wrong_crc_digits_are_a_bad_crc() {
        let payload = build(&store());
        let (body, crc) = payload.split_at(payload.len() - 4);
        let wrong = format!("{:04X}", u16::from_str_radix(crc, 16).unwrap().wrapping_add(1));
        assert_eq!(parse(&format!("{body}{wrong}")), Err(QrError::BadCrc));
        assert_eq!(parse(&format!("{body}ZZZZ")), Err(QrError::BadCrc));
        assert_eq!(parse(&format!("{body}{crc}0")), Err(QrError::BadCrc));
        // Lower-case hex is the same number but not the canonical spelling.
        let lettered = (0..100)
            .map(|n| build(&StoreQr { merchant_name: format!("Shop {n}"), ..store() }))
            .find(|p| p[p.len() - 4..].bytes().any(|b| b.is_ascii_uppercase()))
            .unwrap();
        assert_eq!(parse(&lettered.to_ascii_lowercase()), Err(QrError::BadCrc));
        let (body, crc) = lettered.split_at(lettered.len() - 4);
        assert_eq!(parse(&format!("{body}{}", crc.to_ascii_lowercase())), Err(QrError::BadCrc));
    }

    #[test]
    fn truncated_payloads_are_refused() {
        for payload in [build(&store()), build(&japanese_store())] {
            // Byte offsets between fields.
            let mut boundaries = vec![0];
            for field in verified_fields(&payload).unwrap() {
                boundaries.push(boundaries.last().unwrap() + 4 + field.value.len());
            }
            for (end, _) in payload.char_indices() {
                let body = &payload[..end];
                assert_eq!(parse(body), Err(QrError::BadCrc), "{body}");
                // Behind a correct CRC, a body cut inside a field is malformed; one cut between fields may
                // be a valid code without its last fields, or lack a required one, but it never panics.
                let behind_crc = parse(&with_crc(body));
                if !boundaries.contains(&end) {
                    assert_eq!(behind_crc, Err(QrError::Malformed), "{body}");
                }
            }
        }
    }

    #[test]
    fn structural_errors_behind_a_valid_crc_are_malformed() {
        let body = valid_body();
        assert!(parse(&with_crc(&body)).is_ok());
        let cases = [
            ("bad length digits", body.replacen("5204", "52x4", 1)),
            ("non-digit id", body.replacen("5204", "A204", 1)),
            ("full-width digit in a header", body.replacen("5204", "５204", 1)),
            ("zero length", body.clone() + "9900"),
            ("length running past the end", body.clone() + "9950abc"),
            ("length running into the CRC", body.clone() + "9908abc"),
            ("duplicate tag", body.clone() + &f("59", "Other Shop")),
            ("format indicator not first", f("01", "11") + &body.replacen("010211", "", 1)),
            ("CRC inside", body.clone() + "63040000" + &f("99", "x")),
            ("no format indicator", f("59", "Shop")),
            ("empty body", String::new()),
            ("dangling header", body.clone() + "99"),
            ("broken Omamori template", body.replacen("0105sto_1", "0199sto_1", 1)),
        ];
        for (what, body) in cases {
            assert_eq!(parse(&with_crc(&body)), Err(QrError::Malformed), "{what}: {body}");
        }
        // The last eight bytes read "6304" + a correct CRC, but they end another field's value: CRC not last.
        let prefix = format!("{body}62160104ABCD6304");
        let swallowed = format!("{prefix}{:04X}", reference_crc(prefix.as_bytes()));
        assert!(crc_is_valid(&swallowed));
        assert_eq!(parse(&swallowed), Err(QrError::Malformed));
        // A CRC field that is not last fails the CRC check itself.
        assert_eq!(parse(&(with_crc(&body) + &f("99", "x"))), Err(QrError::BadCrc));
        // A missing CRC.
        assert_eq!(parse(&body), Err(QrError::BadCrc));
        assert_eq!(parse(""), Err(QrError::BadCrc));
        assert_eq!(parse("6304"), Err(QrError::BadCrc));
        assert_eq!(parse(&with_crc("")), Err(QrError::Malformed));
    }

    #[test]
    fn oversized_payloads_are_refused() {
        assert_eq!(parse(&"0".repeat(10_000)), Err(QrError::Malformed));
        let filler = |tags: &[&str], c: &str| tags.iter().map(|tag| f(tag, &c.repeat(99))).collect::<String>();
        let long_body = valid_body() + &filler(&["90", "91", "92", "93"], "x") + &f("98", &"x".repeat(30));
        let huge = with_crc(&(valid_body() + &"9".repeat(10_000)));
        assert_eq!(huge.chars().count(), valid_body().len() + 10_008);
        assert_eq!(parse(&huge), Err(QrError::Malformed));
        // Just over 512 characters but within the byte bound: refused after the CRC check.
        let over = with_crc(&long_body);
        assert!(over.chars().count() > MAX_PAYLOAD_CHARS && over.len() <= 4 * MAX_PAYLOAD_CHARS);
        assert_eq!(parse(&over), Err(QrError::Malformed));
        let within = with_crc(&(valid_body() + &filler(&["90", "91", "92"], "x")));
        assert!(within.chars().count() <= MAX_PAYLOAD_CHARS);
        assert!(parse(&within).is_ok());
        // 396 Japanese characters are 1188 bytes, but the payload is within 512 characters: not refused.
        let japanese = with_crc(&(valid_body() + &filler(&["80", "81", "82", "83"], "漢")));
        assert!(japanese.chars().count() <= MAX_PAYLOAD_CHARS && japanese.len() > MAX_PAYLOAD_CHARS);
        assert!(parse(&japanese).is_ok());
    }

    #[test]
    fn other_providers_and_markets_are_not_omamori() {
        let other = f("26", &(f("00", "JP.OTHERPAY") + &f("01", "sto_1")));
        let cases = [
            ("another provider's template", body_with("01", &other, "", "392", "JP", "Shop")),
            ("no template", body_with("01", "", "", "392", "JP", "Shop")),
            ("GUI in a non-template tag", body_with("01", &f("02", OMAMORI_GUI), "", "392", "JP", "Shop")),
            ("dollars", body_with("01", &omamori_account_field("sto_1"), "", "840", "JP", "Shop")),
            ("no currency", valid_body().replacen("5303392", "", 1)),
            ("United States", body_with("01", &omamori_account_field("sto_1"), "", "392", "US", "Shop")),
            ("no country", valid_body().replacen("5802JP", "", 1)),
            ("format 02", body_with("02", &omamori_account_field("sto_1"), "", "392", "JP", "Shop")),
        ];
        for (what, body) in cases {
            assert_eq!(parse(&with_crc(&body)), Err(QrError::NotOmamori), "{what}: {body}");
        }
    }

    #[test]
    fn multi_provider_codes_find_the_omamori_template() {
        let other = f("26", &(f("00", "JP.OTHERPAY") + &f("01", "sto_1")));
        let broken_other = f("28", "not tlv at all");
        let ours = f("27", &(f("00", OMAMORI_GUI) + &f("01", "sto_9") + &f("05", "ignored")));
        let network = f("02", "4111111111111111");
        let extra = [network, other, broken_other, ours].concat();
        let mut body = body_with("01", "", &extra, "392", "JP", "セブン・ストア");
        body += &f("62", &f("07", "T-01"));
        body += &f("64", &(f("00", "JA") + &f("01", "セブン")));
        body += &f("80", "unreserved");
        let qr = parse(&with_crc(&body)).unwrap();
        assert_eq!(qr.store_id, "sto_9");
        assert_eq!(qr.merchant_name, "セブン・ストア");

        let twice = body_with(
            "01",
            &omamori_account_field("sto_1"),
            &f("27", &(f("00", OMAMORI_GUI) + &f("01", "sto_2"))),
            "392",
            "JP",
            "Shop",
        );
        assert_eq!(parse(&with_crc(&twice)), Err(QrError::InvalidField("merchant_account")));
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(QrError::Malformed.code(), "qr_malformed");
        assert_eq!(QrError::BadCrc.code(), "qr_bad_crc");
        assert_eq!(QrError::NotOmamori.code(), "qr_not_omamori");
        assert_eq!(QrError::InvalidField("mcc").code(), "qr_invalid_field");
        assert_eq!(QrError::InvalidField("mcc").to_string(), "a field of the payload is invalid: mcc");
    }

    /// Text the format can carry unchanged: no control, format, private-use or unassigned characters, no line
    /// separators, and something visible.
    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[^\\p{{C}}\\p{{Zl}}\\p{{Zp}}]{{1,{max}}}"))
            .unwrap()
            .prop_filter("something visible", |s| !s.trim().is_empty())
    }

    fn store_within_limits() -> impl Strategy<Value = StoreQr> {
        ("[!-~]{1,60}", text(MAX_NAME), text(MAX_CITY), proptest::option::of(text(MAX_POSTAL_CODE)), "[0-9]{4}")
            .prop_map(|(store_id, merchant_name, merchant_city, postal_code, mcc)| StoreQr {
                store_id: StoreId::from_raw(store_id),
                merchant_name,
                merchant_city,
                postal_code,
                mcc,
            })
    }

    fn config() -> ProptestConfig {
        // No regression files: this module may write only itself.
        ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn crc_table_matches_the_bitwise_definition(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(crc16_ccitt_false(&data), reference_crc(&data));
        }

        #[test]
        fn build_then_parse_is_identity_within_limits(qr in store_within_limits()) {
            let payload = build(&qr);
            prop_assert!(crc_is_valid(&payload));
            prop_assert_eq!(parse(&payload), Ok(qr));
        }

        #[test]
        fn over_long_texts_come_back_as_prefixes(name in text(60), city in text(40)) {
            let qr = StoreQr { merchant_name: name.clone(), merchant_city: city.clone(), ..store() };
            let parsed = parse(&build(&qr));
            // A cut can in principle leave only spaces; that name is refused, never mangled.
            if let Ok(parsed) = parsed {
                prop_assert!(name.starts_with(&parsed.merchant_name));
                prop_assert!(city.starts_with(&parsed.merchant_city));
                prop_assert!(parsed.merchant_name.chars().count() <= MAX_NAME);
                prop_assert!(parsed.merchant_city.chars().count() <= MAX_CITY);
                if name.chars().count() <= MAX_NAME {
                    prop_assert_eq!(parsed.merchant_name, name);
                }
            } else {
                prop_assert!(matches!(parsed, Err(QrError::InvalidField(_))));
            }
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in "\\PC{0,600}|[0-9A-F]{0,120}") {
            let result = parse(&s);
            prop_assert!(result.is_err() || crc_is_valid(&s));
        }

        #[test]
        fn parse_never_panics_behind_a_valid_crc(
            fields in proptest::collection::vec((0u8..100, 0u8..100, "\\PC{0,12}"), 0..12),
        ) {
            // Made-up fields with mostly wrong lengths, under a correct CRC, reach the structure parser.
            let body: String = fields.iter().map(|(tag, len, value)| format!("{tag:02}{len:02}{value}")).collect();
            let _ = parse(&with_crc(&body));
        }

        #[test]
        fn mutated_payloads_pass_only_with_a_valid_crc(
            qr in store_within_limits(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
        ) {
            let original = build(&qr);
            let mut bytes = original.clone().into_bytes();
            for (index, byte, kind) in edits {
                let i = index.index(bytes.len() + 1);
                match kind {
                    0 | 1 if i < bytes.len() => bytes[i] = byte,
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i.min(bytes.len()), byte),
                }
            }
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            let result = parse(&mutated);
            if mutated == original {
                prop_assert_eq!(result, Ok(qr));
            } else if result.is_ok() {
                prop_assert!(crc_is_valid(&mutated), "accepted without a valid CRC: {}", mutated);
            }
        }
    }
}
