//! The architecture guard: the module graph under `src/` points one way, down the layers below.
//!
//! Std only. A small lexer drops comments, literals and `#[cfg(test)]` items (unit tests may import
//! anything); every `use` and every `crate::` / `super::` / `self::` path (or one through a module
//! brought in by an earlier `use` or `mod`) then becomes an edge to the longest existing module.

use std::collections::{BTreeMap, BTreeSet};

/// Upward edges tolerated for now, as (from node, to node). Each must still occur, so the list only
/// shrinks: when a debt is paid the test names the entry to delete.
const TRANSITIONAL_UPWARD: &[(&str, &str)] = &[
    // Empty: no capability builds `http::error::ApiError` any more. An entry here is debt, named.
];

/// (module, rank, whether its submodules belong to the same node). Low ranks are the bottom.
/// Routes modules (`routes`, `*_routes`) are rank 4 and their own node; crate roots are rank 7.
const LAYERS: &[(&str, u8, bool)] = &[
    ("store", 0, true),
    ("config", 0, false),
    ("money", 0, false),
    ("secret", 0, false),
    ("ids", 0, false),
    ("ports", 0, true),
    ("state", 0, false),
    ("notify", 1, true),
    ("ledger", 1, true),
    ("audit", 1, true),
    ("risk", 2, true),
    ("identity", 2, true),
    ("merchants", 2, true),
    ("payments", 2, true),
    ("idempotency", 2, false),
    ("http::auth", 3, false),
    ("http::cookies", 3, false),
    ("http::error", 3, false),
    ("http::extract", 3, false),
    ("http::idempotent", 3, false),
    ("http::wire", 3, false),
    ("web", 4, false),
    ("http", 5, false),
    ("app", 6, false),
    ("sandbox", 6, false),
    ("cli", 7, false),
    ("bench", 7, true),
];

const ROUTES_RANK: u8 = 4;
const ROOT_RANK: u8 = 7;

// ---------------------------------------------------------------------------------------------
// Lexing: only identifiers, `::` and punctuation survive; comments and literals are dropped.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Punct(char),
    Lit,
    Lifetime,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    out: Vec<Token>,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn lex(src: &str) -> Vec<Token> {
    let mut lx = Lexer { chars: src.chars().collect(), pos: 0, line: 1, out: Vec::new() };
    while let Some(c) = lx.peek(0) {
        let line = lx.line;
        match (c, lx.peek(1)) {
            (c, _) if c.is_whitespace() => lx.bump(),
            ('/', Some('/')) => lx.line_comment(),
            ('/', Some('*')) => lx.block_comment(),
            ('"', _) => {
                lx.quoted();
                lx.emit(Tok::Lit, line);
            }
            ('\'', _) => lx.quote_or_lifetime(line),
            (':', Some(':')) => {
                lx.bump_n(2);
                lx.emit(Tok::Sep, line);
            }
            // `$crate` in a macro body is this crate.
            ('$', Some(n)) if is_ident_start(n) => {
                lx.bump();
                let word = lx.word();
                lx.emit(Tok::Ident(format!("${word}")), line);
            }
            (c, _) if c.is_ascii_digit() => {
                lx.word();
                lx.emit(Tok::Lit, line);
            }
            (c, _) if is_ident_start(c) => lx.ident_or_prefixed(line),
            (c, _) => {
                lx.bump();
                lx.emit(Tok::Punct(c), line);
            }
        }
    }
    lx.out
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) {
        if self.peek(0) == Some('\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn bump_n(&mut self, n: usize) {
        (0..n).for_each(|_| self.bump());
    }

    fn emit(&mut self, tok: Tok, line: usize) {
        self.out.push(Token { tok, line });
    }

    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek(0).filter(|c| c.is_alphanumeric() || *c == '_') {
            word.push(c);
            self.bump();
        }
        word
    }

    fn line_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Block comments nest in Rust.
    fn block_comment(&mut self) {
        let mut depth = 0;
        while let Some(c) = self.peek(0) {
            match (c, self.peek(1)) {
                ('/', Some('*')) => {
                    depth += 1;
                    self.bump_n(2);
                }
                ('*', Some('/')) => {
                    depth -= 1;
                    self.bump_n(2);
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.bump(),
            }
        }
    }

    /// A `"..."` string with escapes, starting at the opening quote.
    fn quoted(&mut self) {
        self.bump();
        while let Some(c) = self.peek(0) {
            self.bump();
            match c {
                '\\' => self.bump(),
                '"' => return,
                _ => {}
            }
        }
    }

    /// `r"..."`, `r#"..."#` and so on, starting at the first `#` or the opening quote.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            hashes += 1;
            self.bump();
        }
        self.bump();
        while let Some(c) = self.peek(0) {
            self.bump();
            if c == '"' && (0..hashes).all(|j| self.peek(j) == Some('#')) {
                self.bump_n(hashes);
                return;
            }
        }
    }

    fn raw_string_ahead(&self, from: usize) -> bool {
        let mut j = from;
        while self.peek(j) == Some('#') {
            j += 1;
        }
        self.peek(j) == Some('"')
    }

    /// A char literal, starting at its opening quote: `'x'`, `'\''`, `'\u{1F600}'`.
    fn char_literal(&mut self) {
        self.bump();
        self.bump_n(if self.peek(0) == Some('\\') { 2 } else { 1 });
        while self.peek(0).is_some_and(|c| c != '\'') {
            self.bump();
        }
        self.bump();
    }

    /// `'a'` and `'\n'` are chars; `'a` (no closing quote right after one char) is a lifetime.
    fn quote_or_lifetime(&mut self, line: usize) {
        if self.peek(1) == Some('\\') || self.peek(2) == Some('\'') {
            self.char_literal();
            self.emit(Tok::Lit, line);
        } else {
            self.bump();
            self.word();
            self.emit(Tok::Lifetime, line);
        }
    }

    /// An identifier, or a literal with a prefix: `b"..."`, `b'x'`, `c"..."`, `r"..."`, `br#"..."#`.
    fn ident_or_prefixed(&mut self, line: usize) {
        let (c, next) = (self.peek(0), self.peek(1));
        let raw_from = match (c, next) {
            (Some('r'), _) => Some(1),
            (Some('b' | 'c'), Some('r')) => Some(2),
            _ => None,
        };
        if let Some(from) = raw_from
            && self.raw_string_ahead(from)
        {
            self.bump_n(from);
            self.raw_string();
            self.emit(Tok::Lit, line);
            return;
        }
        match (c, next) {
            (Some('b' | 'c'), Some('"')) => {
                self.bump();
                self.quoted();
                self.emit(Tok::Lit, line);
            }
            (Some('b'), Some('\'')) => {
                self.bump();
                self.char_literal();
                self.emit(Tok::Lit, line);
            }
            // A raw identifier is never a keyword such as `crate` or `use`.
            (Some('r'), Some('#')) => {
                self.bump_n(2);
                let word = self.word();
                self.emit(Tok::Ident(format!("r#{word}")), line);
            }
            _ => {
                let word = self.word();
                self.emit(Tok::Ident(word), line);
            }
        }
    }
}

fn punct(toks: &[Token], i: usize, c: char) -> bool {
    toks.get(i).is_some_and(|t| t.tok == Tok::Punct(c))
}

fn ident(toks: &[Token], i: usize) -> Option<&str> {
    match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_sep(toks: &[Token], i: usize) -> bool {
    toks.get(i).is_some_and(|t| t.tok == Tok::Sep)
}

// ---------------------------------------------------------------------------------------------
// `#[cfg(test)]` items are dropped: unit tests may import anything.

/// Matches `[cfg(test)]` at `i`.
fn cfg_test_at(toks: &[Token], i: usize) -> bool {
    punct(toks, i, '[')
        && ident(toks, i + 1) == Some("cfg")
        && punct(toks, i + 2, '(')
        && ident(toks, i + 3) == Some("test")
        && punct(toks, i + 4, ')')
        && punct(toks, i + 5, ']')
}

/// Index just past the bracket group that opens at `i`.
fn skip_balanced(toks: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(t) = toks.get(i) {
        i += 1;
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    i
}

/// Index just past the item starting at `i`: up to a `;` or a braced body, whichever comes first,
/// and never past the closer of the block around it.
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    while punct(toks, i, '#') && punct(toks, i + 1, '[') {
        i = skip_balanced(toks, i + 1);
    }
    let mut depth = 0usize;
    while let Some(t) = toks.get(i) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(c @ (')' | ']' | '}')) => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 && c == '}' {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The tokens without `#[cfg(test)]` items, and the names of test-only `mod x;` files declared here.
fn strip_cfg_test(toks: &[Token]) -> (Vec<Token>, Vec<String>) {
    let (mut out, mut test_mods) = (Vec::new(), Vec::new());
    let (mut i, mut depth) = (0, 0usize);
    while let Some(t) = toks.get(i) {
        if depth == 0 && punct(toks, i, '#') && punct(toks, i + 1, '!') && cfg_test_at(toks, i + 2) {
            return (Vec::new(), Vec::new()); // `#![cfg(test)]`: the whole file is test-only
        }
        if punct(toks, i, '#') && cfg_test_at(toks, i + 1) {
            let end = skip_item(toks, i + 7);
            let item: Vec<&Tok> = toks[i + 7..end].iter().map(|t| &t.tok).collect();
            if let [.., Tok::Ident(kw), Tok::Ident(name), Tok::Punct(';')] = item.as_slice()
                && kw == "mod"
            {
                test_mods.push(name.clone());
            }
            i = end;
            continue;
        }
        match t.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    (out, test_mods)
}

// ---------------------------------------------------------------------------------------------
// References: `use` trees and inline paths, made absolute (crate-relative segments).

#[derive(Debug)]
struct UseLeaf {
    segs: Vec<String>,
    alias: Option<String>,
    glob: bool,
}

impl UseLeaf {
    fn text(&self) -> String {
        let mut segs: Vec<&str> = self.segs.iter().map(String::as_str).collect();
        if segs.len() > 1 && segs.last() == Some(&"self") {
            segs.pop();
            return format!("use {}::{{self}}", segs.join("::"));
        }
        let glob = if self.glob { "::*" } else { "" };
        let alias = self.alias.as_ref().map(|a| format!(" as {a}")).unwrap_or_default();
        format!("use {}{glob}{alias}", segs.join("::"))
    }

    /// The name this leaf binds in the file, if any.
    fn binding(&self) -> Option<String> {
        if self.glob {
            return None;
        }
        let name = match &self.alias {
            Some(alias) => alias.clone(),
            None => self.segs.iter().rev().find(|s| *s != "self")?.clone(),
        };
        (name != "_").then_some(name)
    }
}

/// Parses one use tree at `i` under `prefix`; returns the index after it.
fn parse_use_tree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<UseLeaf>) -> usize {
    let mut segs = prefix.to_vec();
    loop {
        match toks.get(i).map(|t| &t.tok) {
            // A leading `::` names an external crate.
            Some(Tok::Sep) => {
                if segs.is_empty() {
                    segs.push("::".to_string());
                }
                i += 1;
            }
            Some(Tok::Ident(s)) => {
                segs.push(s.clone());
                i += 1;
                if is_sep(toks, i) {
                    i += 1;
                    continue;
                }
                let mut alias = None;
                if ident(toks, i) == Some("as") {
                    alias = ident(toks, i + 1).map(String::from);
                    i += 2;
                }
                out.push(UseLeaf { segs, alias, glob: false });
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(UseLeaf { segs, alias: None, glob: true });
                return i + 1;
            }
            Some(Tok::Punct('{')) => return parse_use_group(toks, i + 1, &segs, out),
            _ => return i,
        }
    }
}

/// Parses `a, b::c, {d}}` after a `{`; returns the index after the closing `}`.
fn parse_use_group(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<UseLeaf>) -> usize {
    while i < toks.len() {
        if punct(toks, i, '}') {
            return i + 1;
        }
        let next = parse_use_tree(toks, i, prefix, out);
        i = if next == i { i + 1 } else { next };
        if punct(toks, i, ',') {
            i += 1;
        }
    }
    i
}

/// `crate::`, `$crate::` and (from `main.rs`) `omamori::` all name the library's root.
fn names_crate_root(first: &str) -> bool {
    matches!(first, "crate" | "$crate") || first == env!("CARGO_PKG_NAME").replace('-', "_")
}

/// A path made crate-relative, or `None` when it does not start inside this crate.
fn absolute(scope: &[String], segs: &[String], aliases: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    let first = segs.first()?.as_str();
    let (mut out, rest) = match first {
        _ if names_crate_root(first) => (Vec::new(), &segs[1..]),
        "self" | "super" => (scope.to_vec(), segs),
        name => (aliases.get(name)?.clone(), &segs[1..]),
    };
    for seg in rest {
        match seg.as_str() {
            "super" => {
                out.pop()?;
            }
            "self" => {}
            _ => out.push(seg.clone()),
        }
    }
    Some(out)
}

#[derive(Debug)]
struct Ref {
    line: usize,
    text: String,
    target: Vec<String>,
    /// For `Name::x` where `Name` came from a `use`: that use's target (usually the same module).
    via_use: Option<Vec<String>>,
}

/// Walks one file's tokens, tracking inline `mod x { }` blocks so that `super::` stays right.
struct Walker<'a> {
    toks: &'a [Token],
    file_module: Vec<String>,
    inline: Vec<(String, usize)>,
    depth: usize,
    aliases: BTreeMap<String, Vec<String>>,
    use_bound: BTreeSet<String>,
    refs: Vec<Ref>,
}

fn scan_refs(module: &[String], toks: &[Token]) -> Vec<Ref> {
    let mut walker = Walker {
        toks,
        file_module: module.to_vec(),
        inline: Vec::new(),
        depth: 0,
        aliases: BTreeMap::new(),
        use_bound: BTreeSet::new(),
        refs: Vec::new(),
    };
    let mut i = 0;
    while i < toks.len() {
        i = walker.step(i);
    }
    walker.refs
}

impl Walker<'_> {
    fn scope(&self) -> Vec<String> {
        let mut scope = self.file_module.clone();
        scope.extend(self.inline.iter().map(|(name, _)| name.clone()));
        scope
    }

    fn step(&mut self, i: usize) -> usize {
        let toks = self.toks;
        match &toks[i].tok {
            Tok::Punct('{') => self.depth += 1,
            Tok::Punct('}') => {
                self.depth = self.depth.saturating_sub(1);
                if self.inline.last().is_some_and(|(_, d)| *d == self.depth) {
                    self.inline.pop();
                }
            }
            Tok::Ident(kw) if kw == "mod" => return self.module_decl(i),
            // Not `impl Trait + use<'a>` (precise capturing).
            Tok::Ident(kw) if kw == "use" && !punct(toks, i + 1, '<') => return self.use_decl(i),
            // `pub(in crate::a)` is a visibility, not a dependency.
            Tok::Ident(kw) if kw == "in" && i >= 2 && punct(toks, i - 1, '(') && ident(toks, i - 2) == Some("pub") => {
                let mut j = i + 1;
                while ident(toks, j).is_some() || is_sep(toks, j) {
                    j += 1;
                }
                return j;
            }
            Tok::Ident(_) if self.starts_path(i) => return self.inline_path(i),
            _ => {}
        }
        i + 1
    }

    /// `mod x;` is a declaration, not a reference, but makes `x::...` a path into the child.
    fn module_decl(&mut self, i: usize) -> usize {
        let Some(name) = ident(self.toks, i + 1).map(String::from) else { return i + 1 };
        if punct(self.toks, i + 2, '{') {
            self.inline.push((name, self.depth));
            return i + 2;
        }
        let mut target = self.scope();
        target.push(name.clone());
        self.use_bound.remove(&name);
        self.aliases.insert(name, target);
        i + 2
    }

    fn use_decl(&mut self, i: usize) -> usize {
        let mut leaves = Vec::new();
        let mut end = parse_use_tree(self.toks, i + 1, &[], &mut leaves);
        while end < self.toks.len() && !punct(self.toks, end, ';') {
            end += 1;
        }
        let scope = self.scope();
        for leaf in leaves {
            let Some(target) = absolute(&scope, &leaf.segs, &self.aliases) else { continue };
            if let Some(name) = leaf.binding() {
                self.use_bound.insert(name.clone());
                self.aliases.insert(name, target.clone());
            }
            self.refs.push(Ref { line: self.toks[i].line, text: leaf.text(), target, via_use: None });
        }
        end + 1
    }

    fn starts_path(&self, i: usize) -> bool {
        let Some(first) = ident(self.toks, i) else { return false };
        let known = matches!(first, "self" | "super") || names_crate_root(first) || self.aliases.contains_key(first);
        // Not the middle of a longer path, nor a method turbofish (`x.name::<T>()`).
        let inside = i > 0 && (is_sep(self.toks, i - 1) || punct(self.toks, i - 1, '.'));
        known && is_sep(self.toks, i + 1) && !inside
    }

    fn inline_path(&mut self, i: usize) -> usize {
        let mut segs = vec![ident(self.toks, i).unwrap_or_default().to_string()];
        let mut j = i + 1;
        while is_sep(self.toks, j)
            && let Some(seg) = ident(self.toks, j + 1)
        {
            segs.push(seg.to_string());
            j += 2;
        }
        if let Some(target) = absolute(&self.scope(), &segs, &self.aliases) {
            let via_use = self.use_bound.contains(&segs[0]).then(|| self.aliases[&segs[0]].clone());
            self.refs.push(Ref { line: self.toks[i].line, text: segs.join("::"), target, via_use });
        }
        j
    }
}

// ---------------------------------------------------------------------------------------------
// The graph: files, their modules and nodes, and the edges between files.

/// `src/lib.rs` and `src/main.rs` are roots; `src/a.rs` and `src/a/mod.rs` are `a`.
fn module_of(path: &str) -> Option<Vec<String>> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "lib" || rel == "main" {
        return Some(Vec::new());
    }
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    Some(segs)
}

/// The node a file belongs to and its rank, or `None` when no layer has been given to it.
fn layer(path: &str, module: &[String]) -> Option<(String, u8)> {
    if path == "src/main.rs" {
        return Some(("main".to_string(), ROOT_RANK));
    }
    let name = module.join("::");
    let last = module.last()?;
    if last == "routes" || last.ends_with("_routes") {
        return Some((name, ROUTES_RANK));
    }
    LAYERS.iter().find_map(|&(node, rank, with_subs)| {
        let inside = with_subs && name.strip_prefix(node).is_some_and(|rest| rest.starts_with("::"));
        (name == node || inside).then(|| (node.to_string(), rank))
    })
}

fn node_of(path: &str, module: &[String]) -> Option<(String, u8)> {
    if module.is_empty() && path != "src/main.rs" {
        return Some(("crate".to_string(), ROOT_RANK));
    }
    layer(path, module)
}

#[derive(Debug)]
struct Edge {
    from: String,
    to: String,
    line: usize,
    text: String,
}

#[derive(Debug)]
struct Graph {
    modules: BTreeMap<String, Vec<String>>,
    edges: Vec<Edge>,
}

/// Builds the file graph from (path under the manifest dir, source text) pairs.
fn build_graph(sources: &BTreeMap<String, String>) -> Graph {
    let mut tokens = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for (path, text) in sources {
        let Some(module) = module_of(path) else { continue };
        let (toks, test_mods) = strip_cfg_test(&lex(text));
        test_only.extend(test_mods.into_iter().map(|m| [module.clone(), vec![m]].concat()));
        tokens.insert(path.clone(), (module, toks));
    }
    // Files declared `#[cfg(test)] mod x;` (and their children) are unit tests too.
    tokens.retain(|_, (module, _)| !test_only.iter().any(|t| module.starts_with(t)));
    let mut by_module: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for (path, (module, _)) in &tokens {
        if path != "src/main.rs" {
            by_module.insert(module.clone(), path.clone());
        }
    }
    let mut edges = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, (module, toks)) in &tokens {
        let file_of = |target: &[String]| (0..=target.len()).rev().find_map(|n| by_module.get(&target[..n]));
        for r in scan_refs(module, toks) {
            let Some(to) = file_of(&r.target).filter(|to| *to != path) else { continue };
            // `Db::connect` after `use crate::store::Db` says nothing the `use` did not.
            if r.via_use.as_deref().is_some_and(|via| file_of(via) == Some(to)) {
                continue;
            }
            if seen.insert((path.clone(), to.clone(), r.text.clone())) {
                edges.push(Edge { from: path.clone(), to: to.clone(), line: r.line, text: r.text });
            }
        }
    }
    let modules = tokens.into_iter().map(|(path, (module, _))| (path, module)).collect();
    Graph { modules, edges }
}

// ---------------------------------------------------------------------------------------------
// The rules.

#[derive(Debug, Default)]
struct Findings {
    unlayered: Vec<String>,
    upward: Vec<String>,
    node_cycles: Vec<String>,
    file_cycles: Vec<String>,
    stale_allowances: Vec<String>,
}

impl Edge {
    fn describe(&self) -> String {
        format!("{}:{}: `{}`", self.from, self.line, self.text)
    }
}

impl Graph {
    fn node(&self, path: &str) -> Option<(String, u8)> {
        node_of(path, self.modules.get(path)?)
    }

    /// A file's node name, or its module path when it has no layer (reported separately).
    fn node_name(&self, path: &str) -> String {
        self.node(path).map(|(node, _)| node).unwrap_or_else(|| self.modules[path].join("::"))
    }
}

fn check(graph: &Graph, allowed: &[(&str, &str)]) -> Findings {
    let mut findings = Findings::default();
    for (path, module) in &graph.modules {
        if node_of(path, module).is_none() {
            findings.unlayered.push(format!(
                "{path} (module `{}`) has no layer: give it one in LAYERS in tests/api/architecture.rs",
                module.join("::")
            ));
        }
    }
    let mut used = BTreeSet::new();
    for edge in &graph.edges {
        let (Some((from, from_rank)), Some((to, to_rank))) = (graph.node(&edge.from), graph.node(&edge.to)) else {
            continue;
        };
        if to_rank <= from_rank || from == to {
            continue;
        }
        if allowed.contains(&(from.as_str(), to.as_str())) {
            used.insert((from, to));
            continue;
        }
        findings
            .upward
            .push(format!("{} makes {from} (rank {from_rank}) depend on {to} (rank {to_rank})", edge.describe()));
    }
    for &(from, to) in allowed {
        if !used.contains(&(from.to_string(), to.to_string())) {
            findings
                .stale_allowances
                .push(format!("TRANSITIONAL_UPWARD entry (\"{from}\", \"{to}\") no longer occurs: remove it"));
        }
    }
    findings.node_cycles = cycles(graph, |path| graph.node_name(path));
    findings.file_cycles = cycles(graph, str::to_string);
    findings
}

/// Strongly connected components (more than one vertex) of the graph `key` projects the files
/// onto, each listed with the edges inside it.
fn cycles(graph: &Graph, key: impl Fn(&str) -> String) -> Vec<String> {
    let mut adjacency: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let keyed: Vec<(String, String, &Edge)> =
        graph.edges.iter().map(|e| (key(&e.from), key(&e.to), e)).filter(|(a, b, _)| a != b).collect();
    for (from, to, _) in &keyed {
        adjacency.entry(from.clone()).or_default().insert(to.clone());
    }
    let reach: BTreeMap<&String, BTreeSet<String>> =
        adjacency.keys().map(|start| (start, reachable(&adjacency, start))).collect();
    let mut components: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for (start, reached) in &reach {
        let component: BTreeSet<String> = reached
            .iter()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(*start)))
            .cloned()
            .collect();
        if component.len() > 1 {
            components.insert(component);
        }
    }
    let mut out = Vec::new();
    for component in components {
        let members: Vec<&str> = component.iter().map(String::as_str).collect();
        let mut text = format!("cycle among {}:", members.join(", "));
        for (from, to, edge) in &keyed {
            if component.contains(from) && component.contains(to) {
                text.push_str(&format!("\n      {} ({from} -> {to})", edge.describe()));
            }
        }
        out.push(text);
    }
    out
}

/// Every vertex reachable from `start` (including `start` when it lies on a cycle).
fn reachable(adjacency: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = vec![start];
    while let Some(vertex) = stack.pop() {
        for next in adjacency.get(vertex).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next);
            }
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// The real tree.

fn real_findings() -> Findings {
    check(&build_graph(&crate::helpers::source_files()), TRANSITIONAL_UPWARD)
}

fn assert_none(what: &str, found: &[String]) {
    assert!(found.is_empty(), "{} {what}:\n  {}", found.len(), found.join("\n  "));
}

#[test]
fn every_module_has_a_layer() {
    assert_none("modules have no layer", &real_findings().unlayered);
}

#[test]
fn no_import_runs_upward_through_the_layers() {
    assert_none("imports run upward (a module may use only its own rank or lower)", &real_findings().upward);
}

#[test]
fn the_node_graph_has_no_cycle() {
    assert_none("cycles between nodes", &real_findings().node_cycles);
}

#[test]
fn the_file_graph_has_no_cycle() {
    assert_none("cycles between files", &real_findings().file_cycles);
}

#[test]
fn the_transitional_allow_list_only_lists_edges_that_still_occur() {
    assert_none("allowances are no longer needed", &real_findings().stale_allowances);
}

// ---------------------------------------------------------------------------------------------
// The machinery itself, on in-memory sources.

fn graph_of(files: &[(&str, &str)]) -> Graph {
    build_graph(&files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect())
}

/// Each edge as `from -> to via text`.
fn edges_of(files: &[(&str, &str)]) -> Vec<String> {
    graph_of(files).edges.iter().map(|e| format!("{} -> {} via {}", e.from, e.to, e.text)).collect()
}

const FAKE_MODULES: &[(&str, &str)] = &[
    ("src/lib.rs", "pub mod store; pub mod ledger; pub mod payments; pub mod http;"),
    ("src/store/mod.rs", "pub mod clock;"),
    ("src/store/clock.rs", ""),
    ("src/ledger/mod.rs", ""),
    ("src/payments/mod.rs", "pub mod pos; pub mod cards;"),
    ("src/payments/cards.rs", ""),
    ("src/http/mod.rs", "pub mod error;"),
    ("src/http/error.rs", ""),
];

fn with_fake_modules(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    FAKE_MODULES.iter().filter(|(path, _)| !extra.iter().any(|(p, _)| p == path)).chain(extra).copied().collect()
}

#[test]
fn scanner_finds_nested_groups_super_and_inline_paths() {
    let pos = "use crate::{store::{self, clock::{now as at}}, ledger::*};\n\
               use super::cards;\n\
               fn f() { crate::http::error::ApiError::new(); <crate::ledger::Entry as Tr>::x(); }\n\
               fn g() { store::clock::tick(); cards::activate(); }";
    let edges = edges_of(&with_fake_modules(&[("src/payments/pos.rs", pos)]));
    for expected in [
        "src/payments/pos.rs -> src/store/mod.rs via use crate::store::{self}",
        "src/payments/pos.rs -> src/store/clock.rs via use crate::store::clock::now as at",
        "src/payments/pos.rs -> src/ledger/mod.rs via use crate::ledger::*",
        "src/payments/pos.rs -> src/payments/cards.rs via use super::cards",
        "src/payments/pos.rs -> src/http/error.rs via crate::http::error::ApiError::new",
        "src/payments/pos.rs -> src/ledger/mod.rs via crate::ledger::Entry",
        "src/payments/pos.rs -> src/store/clock.rs via store::clock::tick",
    ] {
        assert!(edges.iter().any(|e| e == expected), "missing {expected:?} in {edges:#?}");
    }
    // `cards::activate` repeats what `use super::cards` already says.
    assert!(!edges.iter().any(|e| e.ends_with("via cards::activate")), "{edges:#?}");
}

#[test]
fn super_in_mod_rs_is_the_parent_and_unknown_items_fall_back_to_the_module() {
    let payments = "pub mod pos; pub mod cards; use super::store::Db; fn f() { crate::ledger::post(); }";
    let edges = edges_of(&with_fake_modules(&[("src/payments/mod.rs", payments)]));
    assert!(edges.contains(&"src/payments/mod.rs -> src/store/mod.rs via use super::store::Db".to_string()));
    assert!(edges.contains(&"src/payments/mod.rs -> src/ledger/mod.rs via crate::ledger::post".to_string()));
}

#[test]
fn scanner_ignores_comments_literals_and_unit_tests() {
    let pos = r####"
        // use crate::http::error;
        /* crate::http::error::A /* nested */
           crate::http::error::B */
        /// crate::http::error::C
        fn f<'a>(x: &'a str) -> char {
            let _ = "crate::http::error::D \" crate::http::error::E";
            let _ = r#"crate::http::error::F " still inside"#;
            let _ = br##"crate::http::error::G"##;
            let _ = b"crate::http::error::H";
            let _ = ('"', '\'', b'"');
            'outer: loop { break 'outer; }
            '{'
        }
        fn g<'a>(x: &'a u8) -> impl Sized + use<'a> { crate::ledger::visible(); x }
        #[cfg(test)]
        mod tests {
            use crate::http::error::ApiError;
            fn t() { crate::http::error::f(); }
        }
        #[cfg(test)]
        use crate::http::error::Test;
        #[cfg(test)]
        mod fixtures;
    "####;
    let fixtures = "use crate::http::error::Fixture;";
    let edges =
        edges_of(&with_fake_modules(&[("src/payments/pos.rs", pos), ("src/payments/pos/fixtures.rs", fixtures)]));
    assert_eq!(edges, ["src/payments/pos.rs -> src/ledger/mod.rs via crate::ledger::visible"]);
}

#[test]
fn an_upward_edge_is_reported_and_an_unused_allowance_is_stale() {
    let cards = "use crate::http::error::ApiError;";
    let graph = graph_of(&with_fake_modules(&[("src/payments/cards.rs", cards)]));
    let findings = check(&graph, &[("ledger", "http::error")]);
    assert_eq!(
        findings.upward,
        [
            "src/payments/cards.rs:1: `use crate::http::error::ApiError` makes payments (rank 2) depend on http::error (rank 3)"
        ]
    );
    assert_eq!(findings.stale_allowances.len(), 1, "{:?}", findings.stale_allowances);
    assert!(findings.stale_allowances[0].contains("(\"ledger\", \"http::error\")"));
    let allowed = check(&graph, &[("payments", "http::error")]);
    assert!(allowed.upward.is_empty() && allowed.stale_allowances.is_empty(), "{allowed:?}");
}

#[test]
fn a_two_node_cycle_is_reported_with_its_edges() {
    let graph = graph_of(&with_fake_modules(&[
        ("src/store/clock.rs", "fn f() { crate::ledger::post(); }"),
        ("src/ledger/mod.rs", "use crate::store::Db;"),
    ]));
    let findings = check(&graph, &[]);
    assert_eq!(findings.node_cycles.len(), 1, "{findings:?}");
    let cycle = &findings.node_cycles[0];
    assert!(cycle.starts_with("cycle among ledger, store:"), "{cycle}");
    assert!(cycle.contains("src/store/clock.rs:1: `crate::ledger::post` (store -> ledger)"), "{cycle}");
    assert!(cycle.contains("src/ledger/mod.rs:1: `use crate::store::Db` (ledger -> store)"), "{cycle}");
    assert_eq!(findings.file_cycles.len(), 0, "clock.rs and store/mod.rs are different files: {findings:?}");
}

#[test]
fn a_file_cycle_inside_one_node_is_reported() {
    let graph = graph_of(&with_fake_modules(&[
        ("src/payments/mod.rs", "pub mod pos; pub mod cards; pub use cards::Card;"),
        ("src/payments/cards.rs", "use super::Shared;"),
    ]));
    let findings = check(&graph, &[]);
    assert!(findings.node_cycles.is_empty(), "{findings:?}");
    assert_eq!(findings.file_cycles.len(), 1, "{findings:?}");
    assert!(findings.file_cycles[0].starts_with("cycle among src/payments/cards.rs, src/payments/mod.rs:"));
}

#[test]
fn an_unplaced_module_must_be_given_a_layer() {
    let findings = check(&graph_of(&with_fake_modules(&[("src/reports.rs", "")])), &[]);
    assert_eq!(findings.unlayered.len(), 1, "{findings:?}");
    assert!(findings.unlayered[0].starts_with("src/reports.rs (module `reports`) has no layer"));
}
