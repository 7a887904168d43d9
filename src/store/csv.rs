//! CSV fields for the files people open in a spreadsheet (a shopper's history, a merchant's
//! payments and statements).

/// A quoted CSV field: inner quotes doubled, and a text that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@` first, and not a number) defused with a leading `'`.
pub fn field(s: &str) -> String {
    let s =
        if s.starts_with(['=', '+', '-', '@']) && s.parse::<i64>().is_err() { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("a\"b"), "\"a\"\"b\"");
        assert_eq!(field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(field("-140"), "\"-140\"");
    }
}
