//! The Zengin (全銀協) general transfer file, 種別コード 21: 120-byte records of single-byte JIS X 0201
//! (half-width katakana 0xA1–0xDF), header (1), data (2) per payee, trailer (8), end (9), each record
//! followed by CR LF. Names are half-width katakana with voiced marks as separate characters.

/// The originator (委託者) of the file, from `OMAMORI_PAYOUT_ORIGINATOR`:
/// `company_code,name_kana,bank_code,branch_code,account_type,account_number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originator {
    pub company_code: String,
    pub name_kana: String,
    pub bank_code: String,
    pub branch_code: String,
    /// `1` ordinary (普通), `2` current (当座).
    pub account_type: u8,
    pub account_number: String,
}

/// The sandbox's demo originator.
pub const DEMO_ORIGINATOR: &str = "1234567890,ｵﾏﾓﾘ(ｶ,0001,001,1,1234567";

fn digits(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_digit())
}

impl Originator {
    pub fn parse(value: &str) -> Result<Originator, String> {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let [company, name, bank, branch, kind, number] = parts[..] else {
            return Err("expected company_code,name_kana,bank_code,branch_code,account_type,account_number".into());
        };
        if !digits(company, 10) || !digits(bank, 4) || !digits(branch, 3) || !digits(number, 7) {
            return Err("company_code has 10 digits, bank_code 4, branch_code 3, account_number 7".into());
        }
        let account_type = match kind {
            "1" | "ordinary" => 1,
            "2" | "current" => 2,
            _ => return Err("account_type is 1 (ordinary) or 2 (current)".into()),
        };
        let name_kana = half_width_kana(name).map_err(|e| format!("name_kana: {e}"))?;
        Ok(Originator {
            company_code: company.into(),
            name_kana,
            bank_code: bank.into(),
            branch_code: branch.into(),
            account_type,
            account_number: number.into(),
        })
    }
}

const FULL: &str = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン";
const HALF: &str = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝ";
const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボ";
const VOICED_BASE: &str = "ｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾊﾋﾌﾍﾎ";
const SEMI: &str = "パピプペポ";
const SEMI_BASE: &str = "ﾊﾋﾌﾍﾎ";

/// Why a name cannot be written in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KanaError {
    #[error("the name is empty")]
    Empty,
    #[error("'{0}' cannot be written in JIS X 0201 katakana (small kana, kanji, hiragana and lowercase are refused)")]
    NotWritable(char),
    #[error("the name is longer than 30 characters in half-width katakana")]
    TooLong,
}

fn nth(s: &str, i: usize) -> char {
    s.chars().nth(i).unwrap_or(' ')
}

fn convert_char(c: char, out: &mut String) -> Result<(), KanaError> {
    if let Some(i) = FULL.chars().position(|f| f == c) {
        out.push(nth(HALF, i));
    } else if let Some(i) = VOICED.chars().position(|f| f == c) {
        out.push(nth(VOICED_BASE, i));
        out.push('ﾞ');
    } else if let Some(i) = SEMI.chars().position(|f| f == c) {
        out.push(nth(SEMI_BASE, i));
        out.push('ﾟ');
    } else if c == 'ヴ' {
        out.push_str("ｳﾞ");
    } else if c == 'ー' || c == 'ｰ' || c == '－' || c == '‐' {
        out.push('-');
    } else if c == '　' {
        out.push(' ');
    } else if ('！'..='～').contains(&c) {
        let ascii = char::from_u32(c as u32 - 0xFEE0).unwrap_or('?');
        return convert_char(ascii, out);
    } else if (HALF.contains(c) && c != 'ｦ')
        || c == 'ﾞ'
        || c == 'ﾟ'
        || c.is_ascii_uppercase()
        || c.is_ascii_digit()
        || " ().-".contains(c)
    {
        out.push(c);
    } else {
        return Err(KanaError::NotWritable(c));
    }
    Ok(())
}

/// A payee or originator name in half-width katakana (JIS X 0201), converted from full-width
/// katakana with voiced marks as separate characters; at most 30 characters.
pub fn half_width_kana(name: &str) -> Result<String, KanaError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(KanaError::Empty);
    }
    let mut out = String::new();
    for c in name.chars() {
        convert_char(c, &mut out)?;
    }
    if out.chars().count() > 30 {
        return Err(KanaError::TooLong);
    }
    Ok(out)
}

/// The JIS X 0201 bytes of a text already in half-width katakana, ASCII digits and symbols.
fn jis(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            0xFF61..=0xFF9F => (c as u32 - 0xFF61 + 0xA1) as u8,
            x if x < 0x80 => x as u8,
            _ => b' ',
        })
        .collect()
}

/// `text` left-aligned and space-padded (or cut) to `len` bytes.
fn field_c(text: &str, len: usize) -> Vec<u8> {
    let mut b = jis(text);
    b.resize(len, b' ');
    b
}

/// A number right-aligned and zero-padded to `len` digits.
fn field_n(value: impl std::fmt::Display, len: usize) -> Vec<u8> {
    let s = format!("{value:0>len$}");
    s.as_bytes()[s.len() - len..].to_vec()
}

/// One payee of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub bank_code: String,
    pub branch_code: String,
    /// `1` ordinary, `2` current.
    pub account_type: u8,
    pub account_number: String,
    pub holder_kana: String,
    pub amount: i64,
}

fn header(o: &Originator, mmdd: &str) -> Vec<u8> {
    let mut r = b"1210".to_vec();
    r.extend(field_n(&o.company_code, 10));
    r.extend(field_c(&o.name_kana, 40));
    r.extend(field_n(mmdd, 4));
    r.extend(field_n(&o.bank_code, 4));
    r.extend(field_c("", 15));
    r.extend(field_n(&o.branch_code, 3));
    r.extend(field_c("", 15));
    r.extend(field_n(o.account_type, 1));
    r.extend(field_n(&o.account_number, 7));
    r.extend(field_c("", 17));
    r
}

fn data(t: &Transfer) -> Vec<u8> {
    let mut r = b"2".to_vec();
    r.extend(field_n(&t.bank_code, 4));
    r.extend(field_c("", 15));
    r.extend(field_n(&t.branch_code, 3));
    r.extend(field_c("", 15));
    r.extend(field_n(0, 4));
    r.extend(field_n(t.account_type, 1));
    r.extend(field_n(&t.account_number, 7));
    r.extend(field_c(&t.holder_kana, 30));
    r.extend(field_n(t.amount, 10));
    r.extend(b"0");
    r.extend(field_n(0, 20));
    r.extend(b"7");
    r.extend(field_c("", 8));
    r
}

/// The whole file: header, one data record per transfer, trailer, end; CR LF after each record.
pub fn file(o: &Originator, mmdd: &str, transfers: &[Transfer]) -> Vec<u8> {
    let mut records = vec![header(o, mmdd)];
    records.extend(transfers.iter().map(data));
    let total: i64 = transfers.iter().map(|t| t.amount).sum();
    let mut trailer = b"8".to_vec();
    trailer.extend(field_n(transfers.len(), 6));
    trailer.extend(field_n(total, 12));
    trailer.extend(field_c("", 101));
    records.push(trailer);
    let mut end = b"9".to_vec();
    end.extend(field_c("", 119));
    records.push(end);
    let mut out = Vec::with_capacity(records.len() * 122);
    for r in records {
        debug_assert_eq!(r.len(), 120);
        out.extend(r);
        out.extend(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_half_width_with_separate_voiced_marks() {
        assert_eq!(half_width_kana("ガンバ　シヨウテン").unwrap(), "ｶﾞﾝﾊﾞ ｼﾖｳﾃﾝ");
        assert_eq!(half_width_kana("パン-ヤ").unwrap(), "ﾊﾟﾝ-ﾔ");
        assert_eq!(half_width_kana("ｶ)ｵﾏﾓﾘ").unwrap(), "ｶ)ｵﾏﾓﾘ");
        assert_eq!(half_width_kana("コーヒー").unwrap(), "ｺ-ﾋ-");
        assert_eq!(half_width_kana("ＡＢＣ１").unwrap(), "ABC1");
        assert_eq!(half_width_kana("ショウ"), Err(KanaError::NotWritable('ョ')));
        assert_eq!(half_width_kana("山田"), Err(KanaError::NotWritable('山')));
        assert_eq!(half_width_kana("やまだ"), Err(KanaError::NotWritable('や')));
        assert_eq!(half_width_kana("abc"), Err(KanaError::NotWritable('a')));
        assert_eq!(half_width_kana(" "), Err(KanaError::Empty));
    }

    #[test]
    fn every_record_is_120_bytes() {
        let o = Originator::parse(DEMO_ORIGINATOR).unwrap();
        let t = Transfer {
            bank_code: "0005".into(),
            branch_code: "123".into(),
            account_type: 1,
            account_number: "0012345".into(),
            holder_kana: "ｶﾞﾝﾊﾞ".into(),
            amount: 9_802,
        };
        let f = file(&o, "1203", &[t.clone(), t]);
        let records: Vec<&[u8]> = f.split(|b| *b == b'\n').filter(|r| !r.is_empty()).collect();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.len() == 121 && r[120] == b'\r'));
        assert_eq!(&records[3][..19], b"8000002000000019604");
        assert_eq!(records[1][50], 0xB6);
        assert_eq!(records[1][51], 0xDE);
    }
}
