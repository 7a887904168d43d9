//! The code-shape guard: functions under `src/` stay small and plain.
//!
//! Std only, no database. Every `.rs` file under `src/` (except the bench) is scanned with its
//! comments and literals blanked (so a brace in a string does not count) and its `#[cfg(test)]`
//! items dropped; then three rules hold for every function:
//! - it spans at most [`MAX_LINES`] lines, from its `fn` line to its closing brace;
//! - it carries no `too_many_arguments` allowance (group the arguments into a struct instead);
//! - it does not return `Result<Result<..>>` (name the inner outcome with an enum instead).
//!
//! The lists below are transitional: each entry (`FILE FN`) must still break its rule, so they only
//! shrink. When a function is fixed, the test names the entry to delete.

use std::collections::BTreeMap;

/// Functions still longer than [`MAX_LINES`], as `FILE FN`.
const LONG_FUNCTIONS: &[&str] = &[];

/// Functions still allowed `clippy::too_many_arguments`, as `FILE FN`.
const MANY_ARGUMENTS: &[&str] = &[];

/// Functions still returning `Result<Result<..>>`, as `FILE FN`.
const NESTED_RESULTS: &[&str] = &[];

/// The longest a function may be, in lines from its `fn` line to its closing brace.
const MAX_LINES: usize = 70;

/// Files the rules do not cover: benches, like tests, may be long.
const EXEMPT_FILES: &[&str] =
    &["src/bench/mod.rs", "src/bench/analytics.rs", "src/bench/flood.rs", "src/bench/switch.rs"];

#[test]
fn functions_under_src_stay_short_and_plain() {
    let (mut long, mut wide, mut nested) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (file, text) in crate::helpers::source_files() {
        if EXEMPT_FILES.contains(&file.as_str()) {
            continue;
        }
        let shape = scan(&text);
        for f in &shape.functions {
            let key = format!("{file} {}", f.name);
            if f.lines > MAX_LINES {
                long.insert(key.clone(), format!("{} lines from line {} (at most {MAX_LINES})", f.lines, f.line));
            }
            if f.nested_result {
                nested.insert(key, format!("returns Result<Result<..>> (line {}): name the outcome", f.line));
            }
        }
        for (name, line) in shape.many_arguments {
            wide.insert(format!("{file} {name}"), format!("allows too_many_arguments (line {line})"));
        }
    }
    let mut problems = Vec::new();
    compare("LONG_FUNCTIONS", LONG_FUNCTIONS, &long, &mut problems);
    compare("MANY_ARGUMENTS", MANY_ARGUMENTS, &wide, &mut problems);
    compare("NESTED_RESULTS", NESTED_RESULTS, &nested, &mut problems);
    assert!(problems.is_empty(), "the code shape rules are broken:\n  {}", problems.join("\n  "));
}

#[test]
fn the_scanner_counts_lines_and_skips_literals_comments_and_tests() {
    let body = "    step();\n".repeat(MAX_LINES);
    let src = r####"
fn braces() {
    let s = "}}}"; // } in a comment
    let c = '}'; /* } /* nested } */ */
    let r = r#"{ " }"#;
    let q = '"';
}
fn long<'a>(x: &'a str) {
BODY}
#[allow(clippy::too_many_arguments)]
pub async fn wide(a: u8) -> Result<Result<(), String>, sqlx::Error> { Ok(Ok(())) }
fn takes(f: impl Fn(u8) -> u8) -> Result<Vec<Result<u8, u8>>, u8>;
#[cfg(test)]
mod tests {
    fn huge() {
BODY    }
}
"####
        .replace("BODY", &body);
    let shape = scan(&src);
    let seen: Vec<(&str, usize, bool)> =
        shape.functions.iter().map(|f| (f.name.as_str(), f.lines, f.nested_result)).collect();
    assert_eq!(seen, [("braces", 6, false), ("long", MAX_LINES + 2, false), ("wide", 1, true), ("takes", 1, false)]);
    assert_eq!(shape.functions[1].line, 8);
    assert_eq!(shape.many_arguments, [("wide".to_string(), 80)]);
}

#[test]
fn the_lists_fail_both_ways() {
    let found = BTreeMap::from([("src/a.rs f".to_string(), "71 lines".to_string())]);
    let mut problems = Vec::new();
    compare("LIST", &["src/b.rs g"], &found, &mut problems);
    assert_eq!(problems, ["src/a.rs f: 71 lines", "src/b.rs g: no longer breaks the rule, remove it from LIST"]);
}

/// Reports each finding not on `allowed`, and each entry of `allowed` that is no longer found.
/// Where HTTP may be spoken: the HTTP layer, the routes files, and the assembly above them.
fn speaks_http(file: &str) -> bool {
    file.starts_with("src/http/")
        || file.ends_with("routes.rs")
        || ["src/app.rs", "src/cli.rs", "src/main.rs", "src/lib.rs"].contains(&file)
        || file.starts_with("src/bench/")
}

/// The words that mean a module is shaped by HTTP rather than by its domain.
const HTTP_WORDS: &[&str] = &["axum", "ApiError", "IntoResponse"];

/// The HTTP words a source text uses outside comments, literals and unit tests.
fn http_words(src: &str) -> Vec<&'static str> {
    let mut code = blank_comments_and_literals(src);
    blank_test_items(&mut code);
    HTTP_WORDS.iter().copied().filter(|w| find_word(&code, 0, w).is_some()).collect()
}

#[test]
fn capabilities_speak_their_own_types_not_http() {
    let mut problems = Vec::new();
    for (file, text) in crate::helpers::source_files() {
        if speaks_http(&file) {
            continue;
        }
        let words = http_words(&text);
        if !words.is_empty() {
            problems.push(format!(
                "{file} uses {}: return its own types and error, and map them in src/http/",
                words.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "HTTP outside the HTTP layer:\n  {}", problems.join("\n  "));
}

/// Names ending in `_id` that are text on purpose, with the reason: none of them is one of our row
/// ids, so no id type fits.
const TEXT_IDS: &[(&str, &str)] = &[
    ("device_id", "the app chooses it; it is checked by identity::login::check_device_id"),
    ("subject_id", "names a card, a top-up or a payment, as the review's or challenge's kind says"),
    ("scope_id", "a merchant, a user, a card or a country code, as the scope's kind says"),
    ("rule_id", "risk rules are named by words, not by generated ids"),
    ("key_id", "a signing key's name in the configuration"),
    ("credential_id", "a WebAuthn credential's id (base64url), chosen by the authenticator"),
];

/// Each `NAME_id: TYPE` (a parameter or a field) whose type is text, outside comments, literals
/// and unit tests.
fn text_ids(src: &str) -> Vec<String> {
    let mut code = blank_comments_and_literals(src);
    blank_test_items(&mut code);
    let text: String = code.iter().collect();
    let mut found = Vec::new();
    for (at, _) in text.match_indices("_id: ") {
        let start = text[..at].rfind(|c: char| !is_ident(c)).map_or(0, |i| i + 1);
        let name = &text[start..at + 3];
        let ty = text[at + 5..].trim_start_matches("Option<").trim_start_matches('&').trim_start_matches("'a ");
        if ty.starts_with("str") || ty.starts_with("String") {
            found.push(name.to_string());
        }
    }
    found
}

#[test]
fn row_ids_are_types_not_text() {
    let mut problems = Vec::new();
    for (file, text) in crate::helpers::source_files() {
        for name in text_ids(&text) {
            if !TEXT_IDS.iter().any(|(allowed, _)| *allowed == name) {
                problems.push(format!("{file}: `{name}` is text; give it its id type from src/ids.rs"));
            }
        }
    }
    assert!(problems.is_empty(), "ids as plain text:\n  {}", problems.join("\n  "));
}

#[test]
fn the_text_id_check_is_not_vacuous() {
    assert_eq!(
        text_ids(
            "fn f(user_id: &str, store_id: Option<&'a str>, card_id: &CardId) {}\nstruct S { payment_id: String }"
        ),
        ["user_id", "store_id", "payment_id"]
    );
    assert!(text_ids("// user_id: &str\n#[cfg(test)]\nmod tests { fn f(user_id: &str) {} }").is_empty());
}

#[test]
fn the_http_word_check_is_not_vacuous() {
    assert_eq!(
        http_words("use axum::http::StatusCode;\nfn f() -> Result<(), ApiError> { todo!() }"),
        ["axum", "ApiError"]
    );
    assert!(
        http_words("// axum\nconst X: &str = \"ApiError\";\n#[cfg(test)]\nmod tests { use axum::Json; }").is_empty()
    );
    assert!(
        speaks_http("src/payments/routes.rs")
            && speaks_http("src/http/error.rs")
            && !speaks_http("src/payments/pos.rs")
    );
}

fn compare(list: &str, allowed: &[&str], found: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    let unlisted = found.iter().filter(|(key, _)| !allowed.contains(&key.as_str()));
    problems.extend(unlisted.map(|(key, why)| format!("{key}: {why}")));
    let stale = allowed.iter().filter(|entry| !found.contains_key(**entry));
    problems.extend(stale.map(|entry| format!("{entry}: no longer breaks the rule, remove it from {list}")));
}

// ---------------------------------------------------------------------------------------------
// Scanning: blank comments and literals, drop test items, then find each `fn` and its extent.

#[derive(Debug)]
struct Function {
    name: String,
    /// The line of its `fn` keyword, from 1.
    line: usize,
    /// Lines from the `fn` line to the closing brace; 1 for a declaration without a body.
    lines: usize,
    nested_result: bool,
}

#[derive(Debug, Default)]
struct Shape {
    functions: Vec<Function>,
    /// The function each `too_many_arguments` allowance applies to (`(file)` for an inner one),
    /// with the allowance's line.
    many_arguments: Vec<(String, usize)>,
}

fn scan(src: &str) -> Shape {
    let mut code = blank_comments_and_literals(src);
    blank_test_items(&mut code);
    let mut shape = Shape::default();
    let mut from = 0;
    while let Some(at) = find_word(&code, from, "fn") {
        from = at + 2;
        if let Some(function) = function_at(&code, at) {
            shape.functions.push(function);
        }
    }
    let mut from = 0;
    while let Some(at) = find_word(&code, from, "too_many_arguments") {
        from = at + 1;
        let inner = code[..at].iter().rposition(|c| *c == '#').is_some_and(|hash| code.get(hash + 1) == Some(&'!'));
        let next_fn = find_word(&code, at, "fn").and_then(|f| function_at(&code, f)).map(|f| f.name);
        let name = if inner { None } else { next_fn };
        shape.many_arguments.push((name.unwrap_or_else(|| "(file)".to_string()), line_of(&code, at)));
    }
    shape
}

/// The function whose `fn` keyword is at `at`, or `None` where `fn` is a pointer type (`fn(u8)`)
/// or a macro's `fn $name`.
fn function_at(code: &[char], at: usize) -> Option<Function> {
    let (name, after_name) = ident_after(code, at + 2)?;
    let mut depth = 0i32;
    for j in after_name..code.len() {
        match code[j] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' | '{' if depth == 0 => {
                let close = if code[j] == '{' { matching_brace(code, j) } else { j };
                let line = line_of(code, at);
                let signature: String = code[after_name..j].iter().filter(|c| !c.is_whitespace()).collect();
                let nested_result = returns_nested_result(&signature);
                return Some(Function { name, line, lines: line_of(code, close) - line + 1, nested_result });
            }
            _ => {}
        }
    }
    None
}

/// Whether the return type (after the last top-level `->`) is `Result<Result<..>, ..>`, with any
/// path before either `Result` (`io::Result<std::result::Result<..>>`).
fn returns_nested_result(signature: &str) -> bool {
    let mut depth = 0i32;
    let mut returns = None;
    let bytes = signature.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'-' if depth == 0 && bytes.get(i + 1) == Some(&b'>') => returns = Some(i + 2),
            _ => {}
        }
    }
    let Some(start) = returns else { return false };
    let ty = &signature[start..];
    ty.match_indices("Result<").any(|(i, m)| {
        let rest = &ty[i + m.len()..];
        let path_len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        rest[..path_len].ends_with("Result") && rest[path_len..].starts_with('<')
    })
}

/// The identifier after `from` (skipping whitespace and a raw `r#`), with the index after it.
fn ident_after(code: &[char], from: usize) -> Option<(String, usize)> {
    let mut i = from;
    while code.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    if code.get(i) == Some(&'r') && code.get(i + 1) == Some(&'#') {
        i += 2;
    }
    if !code.get(i).is_some_and(|c| c.is_alphabetic() || *c == '_') {
        return None;
    }
    let start = i;
    while code.get(i).is_some_and(|c| is_ident(*c)) {
        i += 1;
    }
    Some((code[start..i].iter().collect(), i))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The next occurrence of `word` at or after `from` that is a whole word.
fn find_word(code: &[char], from: usize, word: &str) -> Option<usize> {
    let word: Vec<char> = word.chars().collect();
    (from..code.len().saturating_sub(word.len() - 1)).find(|&i| {
        code[i..].starts_with(&word)
            && (i == 0 || !is_ident(code[i - 1]))
            && !code.get(i + word.len()).is_some_and(|c| is_ident(*c))
    })
}

fn line_of(code: &[char], index: usize) -> usize {
    1 + code[..index].iter().filter(|c| **c == '\n').count()
}

/// The index of the `}` closing the `{` at `open` (the end of the text if it is never closed).
fn matching_brace(code: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (j, c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    code.len().saturating_sub(1)
}

/// Blanks each `#[cfg(test)]` item: up to its `;`, its closing brace, or the closer of whatever
/// encloses it (a field or an argument).
fn blank_test_items(code: &mut [char]) {
    let attribute: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i < code.len() {
        if !code[i..].starts_with(&attribute) {
            i += 1;
            continue;
        }
        let end = item_end(code, i + attribute.len());
        blank(code, i, end);
        i = end;
    }
}

fn item_end(code: &[char], from: usize) -> usize {
    let mut depth = 0i32;
    for j in from..code.len() {
        match code[j] {
            '{' if depth == 0 => return matching_brace(code, j) + 1,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return j,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => return j + 1,
            _ => {}
        }
    }
    code.len()
}

/// Replaces `code[start..end]` with spaces, keeping newlines so that line numbers hold.
fn blank(code: &mut [char], start: usize, end: usize) {
    let end = end.min(code.len());
    for c in &mut code[start..end] {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

/// The source with comments, strings and character literals blanked (lifetimes stay).
fn blank_comments_and_literals(src: &str) -> Vec<char> {
    let mut code: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < code.len() {
        let next = code.get(i + 1).copied();
        let end = match code[i] {
            '/' if next == Some('/') => code[i..].iter().position(|c| *c == '\n').map_or(code.len(), |n| i + n),
            '/' if next == Some('*') => block_comment_end(&code, i),
            '"' => quoted_end(&code, i),
            'r' if starts_raw_string(&code, i) => raw_string_end(&code, i),
            '\'' if next == Some('\\') => quoted_char_end(&code, i),
            '\'' if code.get(i + 2) == Some(&'\'') => i + 3,
            _ => {
                i += 1;
                continue;
            }
        };
        blank(&mut code, i, end);
        i = end;
    }
    code
}

/// Block comments nest in Rust.
fn block_comment_end(code: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0, start);
    while i < code.len() {
        match (code[i], code.get(i + 1)) {
            ('/', Some('*')) => (depth, i) = (depth + 1, i + 2),
            ('*', Some('/')) => {
                (depth, i) = (depth - 1, i + 2);
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    code.len()
}

/// A `"..."` string with escapes, from its opening quote to after its closing one.
fn quoted_end(code: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < code.len() {
        match code[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    code.len()
}

/// An escaped character literal (`'\''`, `'\u{7f}'`), from its opening quote.
fn quoted_char_end(code: &[char], start: usize) -> usize {
    let close = code.iter().skip(start + 3).position(|c| *c == '\'');
    close.map_or(code.len(), |n| start + 3 + n + 1)
}

/// `r"`, `r#"` (and `br"`, `cr#"`), but not a raw identifier (`r#type`) or the end of a word.
fn starts_raw_string(code: &[char], i: usize) -> bool {
    let word_start =
        i == 0 || !is_ident(code[i - 1]) || (matches!(code[i - 1], 'b' | 'c') && (i == 1 || !is_ident(code[i - 2])));
    let hashes = code[i + 1..].iter().take_while(|c| **c == '#').count();
    word_start && code.get(i + 1 + hashes) == Some(&'"')
}

fn raw_string_end(code: &[char], start: usize) -> usize {
    let hashes = code[start + 1..].iter().take_while(|c| **c == '#').count();
    let mut i = start + 1 + hashes + 1;
    while i < code.len() {
        if code[i] == '"' && (1..=hashes).all(|h| code.get(i + h) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    code.len()
}
