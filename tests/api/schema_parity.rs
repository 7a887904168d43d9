//! The SQLite and PostgreSQL migration trees must build the same schema. Each file is parsed into a
//! schema model and applied in order, once per backend, and the two final models are compared after
//! dialect spellings are normalised. No database is needed. A construct the parser does not know
//! fails loudly, naming the file and statement, so a new migration cannot slip past unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Real differences between the trees today, each accepted on purpose. The test also fails when an
/// entry no longer occurs, so a fixed difference must leave this list.
const KNOWN_DIFFERENCES: &[&str] = &[
    // 0001: SQLite's `INTEGER PRIMARY KEY` is the rowid, filled in when an INSERT omits it;
    // PostgreSQL's `BIGINT PRIMARY KEY` is not. Harmless: CHECK (id = 1), a seeded row, no INSERTs.
    "table service_clock, column id: auto-assigned: sqlite by default, postgres no",
];

const HINT: &str = "tests/api/schema_parity.rs does not understand this: teach it the construct (or give it a \
                    deliberate rule) so that the two migration trees stay comparable";

#[test]
fn sqlite_and_postgres_migrations_build_the_same_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let sqlite_names = migration_names(&root.join("sqlite"));
    let postgres_names = migration_names(&root.join("postgres"));
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>().join(", ");
    assert!(
        sqlite_names == postgres_names,
        "the migration folders differ: only in sqlite [{}], only in postgres [{}]",
        only(&sqlite_names, &postgres_names),
        only(&postgres_names, &sqlite_names)
    );
    assert!(!sqlite_names.is_empty(), "no migrations under {}", root.display());

    let (sqlite, postgres, first_seen) = migrate_both(&root, &sqlite_names);
    assert!(!sqlite.tables.is_empty() && !postgres.tables.is_empty(), "the migrations created no table");
    let found = diff(&sqlite, &postgres);
    let mut problems: Vec<String> = found
        .iter()
        .filter(|d| !KNOWN_DIFFERENCES.contains(&d.as_str()))
        .map(|d| format!("{d} (since {})", first_seen.get(d).map_or("?", String::as_str)))
        .collect();
    problems.extend(
        KNOWN_DIFFERENCES
            .iter()
            .filter(|known| !found.iter().any(|d| d == *known))
            .map(|known| format!("no longer differs, remove it from KNOWN_DIFFERENCES: {known}")),
    );
    assert!(problems.is_empty(), "the SQLite and PostgreSQL migrations drift apart:\n  {}", problems.join("\n  "));
}

#[test]
fn the_checker_reports_each_real_difference() {
    let sqlite = "CREATE TABLE t (id INTEGER PRIMARY KEY, amount BIGINT NOT NULL, note TEXT);";
    let narrower = "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, amount INTEGER NOT NULL, note TEXT);";
    assert_eq!(
        diff_sql(sqlite, narrower),
        ["table t, column amount: type: sqlite int64 (bigint), postgres int32 (integer)"]
    );
    let missing = "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, amount BIGINT NOT NULL);";
    assert_eq!(diff_sql(sqlite, missing), ["table t, column note: only in sqlite (text, nullable)"]);
    let looser = "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, amount BIGINT DEFAULT 0, note TEXT);";
    assert_eq!(
        diff_sql(sqlite, looser),
        [
            "table t, column amount: nullability: sqlite NOT NULL, postgres nullable",
            "table t, column amount: default: sqlite none, postgres 0",
        ]
    );
    // A rebuild that widens the CHECK but forgets to recreate the index the old table had.
    let (rebuilt, altered) = rebuild_pair("('a', 'b')", "('a', 'b', 'c')");
    let rebuilt = &rebuilt[..rebuilt.rfind("CREATE INDEX").unwrap()];
    assert_eq!(
        diff_sql(rebuilt, &altered),
        [
            "table r: check (event in ('a', 'b')) only in sqlite",
            "table r: check (event in ('a', 'b', 'c')) only in postgres",
            "index r_event: only in postgres (index on r (event))",
        ]
    );
}

#[test]
fn the_checker_ignores_dialect_spellings() {
    let sqlite = "-- a comment
        CREATE TABLE t (
            id    INTEGER PRIMARY KEY AUTOINCREMENT,
            data  BLOB,
            flag  BOOLEAN NOT NULL DEFAULT 1,
            kind  TEXT CHECK (kind != 'x')
        );
        CREATE TRIGGER t_no_update BEFORE UPDATE ON t BEGIN SELECT RAISE(ABORT, 't is immutable'); END;
        CREATE UNIQUE INDEX t_kind ON t (kind) WHERE flag = 1;
        INSERT INTO t (id, flag) VALUES (1, 0);";
    let postgres = "create table T (ID bigserial primary key, DATA bytea, flag boolean not null default TRUE,
            kind text check (KIND <> 'x'));
        /* PostgreSQL runs trigger bodies as functions. */
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN RAISE EXCEPTION '% is immutable', TG_TABLE_NAME; END $body$;
        CREATE TRIGGER t_immutable BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION refuse();
        CREATE TRIGGER t_no_truncate BEFORE TRUNCATE ON t FOR EACH STATEMENT EXECUTE FUNCTION refuse();
        create unique index t_kind on t (kind) where flag = true;
        insert into t (id, flag) values (1, false);";
    assert_eq!(diff_sql(sqlite, postgres), Vec::<String>::new());
    // SQLite rebuilds a table to change a CHECK; PostgreSQL drops and re-adds the constraint.
    let (rebuilt, altered) = rebuild_pair("('a', 'b')", "('a', 'b')");
    assert_eq!(diff_sql(&rebuilt, &altered), Vec::<String>::new());
}

#[test]
fn the_checker_refuses_what_it_does_not_understand() {
    let err = |sql: &str| apply_sql(&mut Schema::default(), Dialect::Sqlite, sql).unwrap_err();
    let view = err("CREATE TABLE t (id TEXT);\nCREATE VIEW v AS SELECT id FROM t;");
    assert!(view.contains("line 2") && view.contains("create view v") && view.contains("unsupported"), "{view}");
    let collate = err("CREATE TABLE t (id TEXT COLLATE NOCASE);");
    assert!(collate.contains("unsupported column constraint `collate`"), "{collate}");
    let update = err("CREATE TABLE t (id TEXT);\nUPDATE t SET id = 'x';");
    assert!(update.contains("line 2") && update.contains("unsupported statement"), "{update}");
    let copy = err(
        "CREATE TABLE a (id TEXT);\nCREATE TABLE b (id TEXT);\nINSERT INTO b (id) SELECT id FROM a WHERE id <> '';",
    );
    assert!(copy.contains("line 3"), "{copy}");
}

/// SQLite's table rebuild and PostgreSQL's constraint swap, widening `event`'s CHECK to `sqlite_in`
/// and `postgres_in` respectively.
fn rebuild_pair(sqlite_in: &str, postgres_in: &str) -> (String, String) {
    let before = "CREATE TABLE r (id TEXT PRIMARY KEY, event TEXT NOT NULL CHECK (event IN ('a')));
        CREATE INDEX r_event ON r (event);";
    let sqlite = format!(
        "{before}
        CREATE TABLE r_next (id TEXT PRIMARY KEY, event TEXT NOT NULL CHECK (event IN {sqlite_in}));
        INSERT INTO r_next (id, event) SELECT id, event FROM r;
        DROP TABLE r;
        ALTER TABLE r_next RENAME TO r;
        CREATE INDEX r_event ON r (event);"
    );
    let postgres = format!(
        "{before}
        ALTER TABLE r DROP CONSTRAINT r_event_check;
        ALTER TABLE r ADD CONSTRAINT r_event_check CHECK (event IN {postgres_in});"
    );
    (sqlite, postgres)
}

fn diff_sql(sqlite: &str, postgres: &str) -> Vec<String> {
    let (mut a, mut b) = (Schema::default(), Schema::default());
    apply_sql(&mut a, Dialect::Sqlite, sqlite).unwrap_or_else(|e| panic!("sqlite: {e}"));
    apply_sql(&mut b, Dialect::Postgres, postgres).unwrap_or_else(|e| panic!("postgres: {e}"));
    diff(&a, &b)
}

fn migration_names(dir: &Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect()
}

/// Applies each pair of files in order; also notes after which file each difference first showed.
fn migrate_both(root: &Path, names: &BTreeSet<String>) -> (Schema, Schema, BTreeMap<String, String>) {
    let (mut sqlite, mut postgres) = (Schema::default(), Schema::default());
    let mut first_seen = BTreeMap::new();
    for name in names {
        for (schema, dialect, dir) in
            [(&mut sqlite, Dialect::Sqlite, "sqlite"), (&mut postgres, Dialect::Postgres, "postgres")]
        {
            let path = root.join(dir).join(name);
            let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            apply_sql(schema, dialect, &sql).unwrap_or_else(|e| panic!("migrations/{dir}/{name}: {e}\n{HINT}"));
        }
        for d in diff(&sqlite, &postgres) {
            first_seen.entry(d).or_insert_with(|| name.clone());
        }
    }
    (sqlite, postgres, first_seen)
}

// ----- The schema model -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// An integer key filled in when an INSERT omits it (SQLite's rowid, PostgreSQL's identity).
const BY_DEFAULT: &str = "by default";

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// The logical type both backends are compared on; `declared` is the spelling, for messages.
    ty: &'static str,
    declared: String,
    not_null: bool,
    default: Option<String>,
    auto: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Check {
    /// A chosen name, compared; None when unnamed or named as PostgreSQL would have named it.
    name: Option<String>,
    /// The name PostgreSQL gives it, which `DROP CONSTRAINT` uses; never compared.
    pg_name: String,
    expr: String,
}

#[derive(Debug, Clone, Default)]
struct Table {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    uniques: BTreeSet<Vec<String>>,
    checks: Vec<Check>,
    /// (columns, referenced table, referenced columns)
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
    /// What the table's refusing triggers refuse, such as "update" (trigger names are not compared).
    guards: BTreeSet<String>,
    seeds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Index {
    table: String,
    columns: Vec<String>,
    unique: bool,
    filter: Option<String>,
}

#[derive(Debug, Default)]
struct Schema {
    tables: BTreeMap<String, Table>,
    indexes: BTreeMap<String, Index>,
    /// PostgreSQL trigger functions whose whole body is RAISE EXCEPTION.
    refusing_functions: BTreeSet<String>,
    /// PostgreSQL trigger functions that move the cache generation their argument names.
    generation_functions: BTreeSet<String>,
    /// PostgreSQL trigger functions that move the analytics generation of a row's day.
    analytics_functions: BTreeSet<String>,
}

impl Schema {
    fn table(&mut self, name: &str) -> Result<&mut Table, String> {
        self.tables.get_mut(name).ok_or_else(|| format!("no table `{name}` at this point"))
    }
}

// ----- Tokens -----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Lowercased: unquoted names and keywords are case-insensitive in both dialects.
    Word(String),
    Str(String),
    Num(String),
    Sym(String),
    /// A PostgreSQL dollar-quoted body, unparsed.
    Dollar(String),
}

struct Stmt {
    toks: Vec<Tok>,
    line: usize,
}

fn tokenize(sql: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < chars.len() {
        let start = i;
        if let Some(tok) = lex(&chars, &mut i).map_err(|e| format!("line {line}: {e}"))? {
            out.push((tok, line));
        }
        line += chars[start..i].iter().filter(|c| **c == '\n').count();
    }
    Ok(out)
}

/// Reads one token, or skips whitespace or a comment (then None).
fn lex(c: &[char], i: &mut usize) -> Result<Option<Tok>, String> {
    let (ch, next) = (c[*i], c.get(*i + 1).copied().unwrap_or('\0'));
    if ch.is_whitespace() {
        *i += 1;
        return Ok(None);
    }
    if ch == '-' && next == '-' {
        *i = find(c, *i, "\n").unwrap_or(c.len());
        return Ok(None);
    }
    if ch == '/' && next == '*' {
        *i = find(c, *i + 2, "*/").ok_or("unterminated /* comment")? + 2;
        return Ok(None);
    }
    if ch == '\'' {
        return lex_string(c, i).map(Some);
    }
    if ch == '$' {
        return lex_dollar(c, i).map(Some);
    }
    let run = |i: &mut usize, keep: fn(char) -> bool| {
        let start = *i;
        while *i < c.len() && keep(c[*i]) {
            *i += 1;
        }
        c[start..*i].iter().collect::<String>()
    };
    if ch.is_ascii_alphabetic() || ch == '_' {
        let word = run(i, |x| x.is_ascii_alphanumeric() || x == '_').to_ascii_lowercase();
        // SQLite reads TRUE and FALSE as 1 and 0, so both boolean spellings compare equal.
        return Ok(Some(match word.as_str() {
            "true" => Tok::Num("1".into()),
            "false" => Tok::Num("0".into()),
            _ => Tok::Word(word),
        }));
    }
    if ch.is_ascii_digit() {
        return Ok(Some(Tok::Num(run(i, |x| x.is_ascii_digit() || x == '.'))));
    }
    for sym in
        ["<>", "!=", "<=", ">=", "==", "||", "(", ")", ",", ";", "=", "<", ">", "+", "-", "*", "/", "%", ".", "[", "]"]
    {
        if at(c, *i, sym) {
            *i += sym.len();
            let same = match sym {
                "!=" => "<>",
                "==" => "=",
                _ => sym,
            };
            return Ok(Some(Tok::Sym(same.into())));
        }
    }
    Err(format!("unexpected character `{ch}`"))
}

fn at(c: &[char], k: usize, pat: &str) -> bool {
    pat.chars().enumerate().all(|(n, x)| c.get(k + n) == Some(&x))
}

fn find(c: &[char], from: usize, pat: &str) -> Option<usize> {
    (from..c.len()).find(|&k| at(c, k, pat))
}

fn lex_string(c: &[char], i: &mut usize) -> Result<Tok, String> {
    let mut text = String::new();
    let mut k = *i + 1;
    loop {
        match (c.get(k), c.get(k + 1)) {
            (None, _) => return Err("unterminated string".into()),
            (Some('\''), Some('\'')) => {
                text.push('\'');
                k += 2;
            }
            (Some('\''), _) => break,
            (Some(x), _) => {
                text.push(*x);
                k += 1;
            }
        }
    }
    *i = k + 1;
    Ok(Tok::Str(text))
}

fn lex_dollar(c: &[char], i: &mut usize) -> Result<Tok, String> {
    let tag_end = (*i + 1..c.len())
        .take_while(|&k| c[k] == '$' || c[k].is_ascii_alphanumeric() || c[k] == '_')
        .find(|&k| c[k] == '$')
        .ok_or("unexpected `$`")?;
    let tag: String = c[*i..=tag_end].iter().collect();
    let close = find(c, tag_end + 1, &tag).ok_or_else(|| format!("unterminated {tag} body"))?;
    let body = c[tag_end + 1..close].iter().collect();
    *i = close + tag.chars().count();
    Ok(Tok::Dollar(body))
}

/// Splits at `;`, except inside a SQLite trigger's BEGIN ... END.
fn split(tokens: Vec<(Tok, usize)>) -> Vec<Stmt> {
    let (mut out, mut cur, mut line, mut depth) = (Vec::new(), Vec::new(), 0, 0usize);
    for (tok, at) in tokens {
        if cur.is_empty() {
            line = at;
        }
        if cur.starts_with(&[word("create"), word("trigger")]) {
            match &tok {
                Tok::Word(w) if w == "begin" || w == "case" => depth += 1,
                Tok::Word(w) if w == "end" => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if tok == Tok::Sym(";".into()) && depth == 0 {
            if !cur.is_empty() {
                out.push(Stmt { toks: std::mem::take(&mut cur), line });
            }
            continue;
        }
        cur.push(tok);
    }
    if !cur.is_empty() {
        out.push(Stmt { toks: cur, line });
    }
    out
}

fn word(w: &str) -> Tok {
    Tok::Word(w.into())
}

/// Normalised text of tokens: single spaces, none inside parentheses or before commas.
fn show(toks: &[Tok]) -> String {
    let mut out = String::new();
    for tok in toks {
        let text = match tok {
            Tok::Word(s) | Tok::Num(s) | Tok::Sym(s) => s.clone(),
            Tok::Str(s) => format!("'{}'", s.replace('\'', "''")),
            Tok::Dollar(_) => "$$...$$".into(),
        };
        let tight = out.is_empty() || out.ends_with('(') || text == ")" || text == ",";
        if !tight {
            out.push(' ');
        }
        out.push_str(&text);
    }
    out
}

struct Cur<'a> {
    t: &'a [Tok],
    p: usize,
}

impl<'a> Cur<'a> {
    fn new(t: &'a [Tok]) -> Self {
        Cur { t, p: 0 }
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.p)
    }

    fn is(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x) | Tok::Sym(x)) if x == w)
    }

    fn eat(&mut self, w: &str) -> bool {
        let hit = self.is(w);
        self.p += usize::from(hit);
        hit
    }

    /// Eats the space-separated words all, or none.
    fn eat_all(&mut self, words: &str) -> bool {
        let start = self.p;
        let all = words.split(' ').all(|w| self.eat(w));
        if !all {
            self.p = start;
        }
        all
    }

    fn expect(&mut self, words: &str) -> Result<(), String> {
        for w in words.split(' ') {
            if !self.eat(w) {
                return Err(format!("expected `{w}`, found {}", self.found()));
            }
        }
        Ok(())
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.p += 1;
                Ok(w.clone())
            }
            _ => Err(format!("expected a name, found {}", self.found())),
        }
    }

    /// The tokens inside the parenthesised group that comes next.
    fn group(&mut self) -> Result<&'a [Tok], String> {
        self.expect("(")?;
        let (start, mut depth) = (self.p, 1);
        while let Some(tok) = self.peek() {
            self.p += 1;
            match tok {
                Tok::Sym(s) if s == "(" => depth += 1,
                Tok::Sym(s) if s == ")" => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(&self.t[start..self.p - 1]);
                    }
                }
                _ => {}
            }
        }
        Err("unbalanced parentheses".into())
    }

    fn rest(&mut self) -> &'a [Tok] {
        let rest = &self.t[self.p..];
        self.p = self.t.len();
        rest
    }

    fn done(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(format!("unsupported {} here", self.found())),
        }
    }

    fn found(&self) -> String {
        self.peek().map_or("end of statement".into(), |t| format!("`{}`", show(std::slice::from_ref(t))))
    }
}

fn split_commas(toks: &[Tok]) -> Vec<&[Tok]> {
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i32);
    for (k, tok) in toks.iter().enumerate() {
        match tok {
            Tok::Sym(s) if s == "(" => depth += 1,
            Tok::Sym(s) if s == ")" => depth -= 1,
            Tok::Sym(s) if s == "," && depth == 0 => {
                out.push(&toks[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    out.push(&toks[start..]);
    out
}

fn name_list(toks: &[Tok]) -> Result<Vec<String>, String> {
    split_commas(toks)
        .into_iter()
        .map(|item| match item {
            [Tok::Word(w)] => Ok(w.clone()),
            _ => Err(format!("expected a column name, found `{}`", show(item))),
        })
        .collect()
}

// ----- Applying statements -----

fn apply_sql(s: &mut Schema, d: Dialect, sql: &str) -> Result<(), String> {
    for st in split(tokenize(sql)?) {
        apply(s, d, &st.toks).map_err(|e| {
            let head = show(&st.toks[..st.toks.len().min(12)]);
            let more = if st.toks.len() > 12 { " ..." } else { "" };
            format!("statement at line {} (`{head}{more}`): {e}", st.line)
        })?;
    }
    Ok(())
}

fn apply(s: &mut Schema, d: Dialect, toks: &[Tok]) -> Result<(), String> {
    let c = &mut Cur::new(toks);
    if c.eat_all("create table") {
        create_table(s, d, c)
    } else if c.eat_all("create unique index") {
        create_index(s, c, true)
    } else if c.eat_all("create index") {
        create_index(s, c, false)
    } else if c.eat_all("create trigger") {
        create_trigger(s, d, c)
    } else if d == Dialect::Postgres && c.eat_all("create function") {
        create_function(s, c)
    } else if c.eat_all("alter table") {
        alter_table(s, d, c)
    } else if c.eat_all("drop table") {
        let name = c.ident()?;
        c.done()?;
        // Both backends drop a table's indexes and triggers with it.
        s.tables.remove(&name).ok_or_else(|| format!("no table `{name}` to drop"))?;
        s.indexes.retain(|_, ix| ix.table != name);
        Ok(())
    } else if c.eat_all("drop index") {
        let name = c.ident()?;
        c.done()?;
        s.indexes.remove(&name).map(|_| ()).ok_or_else(|| format!("no index `{name}` to drop"))
    } else if c.eat_all("insert into") {
        insert(s, c)
    } else if d == Dialect::Sqlite && c.eat("pragma") {
        // A PRAGMA sets connection state (and foreign_keys is a no-op inside the migration's
        // transaction): it changes no schema.
        Ok(())
    } else {
        Err("unsupported statement".into())
    }
}

fn create_table(s: &mut Schema, d: Dialect, c: &mut Cur) -> Result<(), String> {
    let name = c.ident()?;
    let body = c.group()?;
    c.done()?;
    if s.tables.contains_key(&name) {
        return Err(format!("table `{name}` already exists"));
    }
    let mut t = Table::default();
    let mut checks = Vec::new();
    for item in split_commas(body) {
        let ic = &mut Cur::new(item);
        if ["constraint", "primary", "unique", "check", "foreign"].iter().any(|w| ic.is(w)) {
            table_constraint(&mut t, ic, &mut checks)?;
        } else {
            column_def(&mut t, d, ic, &mut checks)?;
        }
        ic.done()?;
    }
    settle(&mut t, d, &name, checks);
    s.tables.insert(name, t);
    Ok(())
}

type PendingCheck = (Option<String>, Vec<Tok>);

fn column_def(t: &mut Table, d: Dialect, c: &mut Cur, checks: &mut Vec<PendingCheck>) -> Result<(), String> {
    let name = c.ident()?;
    let declared = c.ident()?;
    let (ty, auto) = column_type(d, &declared)?;
    let mut col = Column { name: name.clone(), ty, declared, not_null: false, default: None, auto };
    let mut constraint_name = None;
    while c.peek().is_some() {
        if c.eat("constraint") {
            constraint_name = Some(c.ident()?);
            if !c.is("check") {
                return Err("only a CHECK may be named (DROP CONSTRAINT would need its name)".into());
            }
        } else if c.eat_all("primary key") {
            if !t.primary_key.is_empty() {
                return Err("a second primary key".into());
            }
            t.primary_key = vec![name.clone()];
            // Same as the plain rowid key here (AUTOINCREMENT only stops reuse of deleted ids,
            // which PostgreSQL's identity never reuses either).
            if d == Dialect::Sqlite && col.declared == "integer" && c.eat("autoincrement") {
                col.auto = Some(BY_DEFAULT);
            }
        } else if c.eat_all("not null") {
            col.not_null = true;
        } else if c.eat("null") {
            // An explicit NULL: nullable is the default anyway.
        } else if c.eat("unique") {
            t.uniques.insert(vec![name.clone()]);
        } else if c.eat("default") {
            col.default = Some(default_value(c)?);
        } else if c.eat("check") {
            checks.push((constraint_name.take(), c.group()?.to_vec()));
        } else if c.eat("references") {
            let (table, columns) = reference(c)?;
            t.foreign_keys.insert((vec![name.clone()], table, columns));
        } else if d == Dialect::Postgres && c.eat("generated") {
            col.auto = Some(if c.eat("always") { "always" } else { c.expect("by default").map(|_| BY_DEFAULT)? });
            c.expect("as identity")?;
        } else {
            return Err(format!("unsupported column constraint {}", c.found()));
        }
    }
    t.columns.push(col);
    Ok(())
}

/// The logical type of a declared one: SQLite integers are all 64-bit, PostgreSQL's INTEGER is not.
fn column_type(d: Dialect, declared: &str) -> Result<(&'static str, Option<&'static str>), String> {
    use Dialect::{Postgres, Sqlite};
    let ty = match (d, declared) {
        (Sqlite, "integer" | "int") | (_, "bigint") => "int64",
        (Postgres, "integer" | "int") => "int32",
        (Postgres, "bigserial") => return Ok(("int64", Some(BY_DEFAULT))),
        (Postgres, "serial") => return Ok(("int32", Some(BY_DEFAULT))),
        (_, "text") => "text",
        (Sqlite, "blob") | (Postgres, "bytea") => "bytes",
        (_, "boolean") | (Postgres, "bool") => "bool",
        _ => return Err(format!("unsupported column type `{declared}`")),
    };
    Ok((ty, None))
}

fn default_value(c: &mut Cur) -> Result<String, String> {
    if c.is("(") {
        return Ok(format!("({})", show(c.group()?)));
    }
    let negative = c.eat("-");
    match c.peek() {
        Some(tok @ (Tok::Num(_) | Tok::Str(_) | Tok::Word(_))) => {
            c.p += 1;
            Ok(format!("{}{}", if negative { "-" } else { "" }, show(std::slice::from_ref(tok))))
        }
        _ => Err(format!("unsupported default {}", c.found())),
    }
}

fn reference(c: &mut Cur) -> Result<(String, Vec<String>), String> {
    let table = c.ident()?;
    let columns = if c.is("(") { name_list(c.group()?)? } else { Vec::new() };
    Ok((table, columns))
}

fn table_constraint(t: &mut Table, c: &mut Cur, checks: &mut Vec<PendingCheck>) -> Result<(), String> {
    let name = if c.eat("constraint") { Some(c.ident()?) } else { None };
    if c.eat("check") {
        checks.push((name, c.group()?.to_vec()));
        return Ok(());
    }
    if name.is_some() {
        return Err("only a CHECK may be named (DROP CONSTRAINT would need its name)".into());
    }
    if c.eat_all("primary key") {
        if !t.primary_key.is_empty() {
            return Err("a second primary key".into());
        }
        t.primary_key = name_list(c.group()?)?;
    } else if c.eat("unique") {
        t.uniques.insert(name_list(c.group()?)?);
    } else if c.eat_all("foreign key") {
        let columns = name_list(c.group()?)?;
        c.expect("references")?;
        let (table, ref_columns) = reference(c)?;
        t.foreign_keys.insert((columns, table, ref_columns));
    } else {
        return Err(format!("unsupported table constraint {}", c.found()));
    }
    Ok(())
}

/// Completes a table once its columns are known: key columns, the SQLite rowid, CHECK names.
fn settle(t: &mut Table, d: Dialect, table: &str, checks: Vec<PendingCheck>) {
    let pk = &t.primary_key;
    for col in &mut t.columns {
        // SQLite: a lone INTEGER PRIMARY KEY is the rowid, assigned when an INSERT omits it.
        if d == Dialect::Sqlite && pk.len() == 1 && pk[0] == col.name && col.declared == "integer" {
            col.auto.get_or_insert(BY_DEFAULT);
        }
        // PostgreSQL makes key and identity columns NOT NULL. SQLite lets a non-INTEGER key hold
        // NULL only by a documented bug, which no code here relies on: read both as NOT NULL.
        col.not_null |= col.auto.is_some() || pk.contains(&col.name);
    }
    for (name, toks) in checks {
        add_check(t, table, name, &toks);
    }
}

/// Names the check as PostgreSQL would: `<table>_<column>_check` when it reads one column, else
/// `<table>_check`, numbered on a clash.
fn add_check(t: &mut Table, table: &str, name: Option<String>, toks: &[Tok]) {
    let columns: BTreeSet<&String> = toks
        .iter()
        .filter_map(|tok| match tok {
            Tok::Word(w) if t.columns.iter().any(|c| c.name == *w) => Some(w),
            _ => None,
        })
        .collect();
    let base = match columns.first() {
        Some(column) if columns.len() == 1 => format!("{table}_{column}_check"),
        _ => format!("{table}_check"),
    };
    let mut default = base.clone();
    for n in 1.. {
        if !t.checks.iter().any(|k| k.pg_name == default) {
            break;
        }
        default = format!("{base}{n}");
    }
    let pg_name = name.clone().unwrap_or_else(|| default.clone());
    // A name spelled as PostgreSQL's own default (its way to re-add a check) is no chosen name.
    let name = name.filter(|n| *n != default);
    t.checks.push(Check { name, pg_name, expr: show(toks) });
}

fn alter_table(s: &mut Schema, d: Dialect, c: &mut Cur) -> Result<(), String> {
    let name = c.ident()?;
    if c.eat_all("rename to") {
        let new = c.ident()?;
        c.done()?;
        return rename_table(s, &name, new);
    }
    let t = s.table(&name)?;
    if d == Dialect::Postgres && c.eat_all("drop constraint") {
        let constraint = c.ident()?;
        c.done()?;
        let before = t.checks.len();
        t.checks.retain(|k| k.pg_name != constraint);
        if t.checks.len() == before {
            return Err(format!("no CHECK constraint `{constraint}` on `{name}`"));
        }
        return Ok(());
    }
    if d == Dialect::Postgres && c.eat_all("add constraint") {
        let constraint = c.ident()?;
        c.expect("check")?;
        let expr = c.group()?;
        c.done()?;
        add_check(t, &name, Some(constraint), expr);
        return Ok(());
    }
    if c.eat("add") {
        c.eat("column");
        let mut checks = Vec::new();
        column_def(t, d, c, &mut checks)?;
        c.done()?;
        settle(t, d, &name, checks);
        return Ok(());
    }
    Err(format!("unsupported ALTER TABLE {}", c.found()))
}

/// Both backends keep a renamed table's indexes and triggers and follow it in other tables'
/// references (SQLite since 3.26); constraint names stay as they were.
fn rename_table(s: &mut Schema, old: &str, new: String) -> Result<(), String> {
    if s.tables.contains_key(&new) {
        return Err(format!("table `{new}` already exists"));
    }
    let t = s.tables.remove(old).ok_or_else(|| format!("no table `{old}` to rename"))?;
    s.tables.insert(new.clone(), t);
    for ix in s.indexes.values_mut().filter(|ix| ix.table == old) {
        ix.table = new.clone();
    }
    for t in s.tables.values_mut() {
        t.foreign_keys = std::mem::take(&mut t.foreign_keys)
            .into_iter()
            .map(|(cols, table, ref_cols)| (cols, if table == old { new.clone() } else { table }, ref_cols))
            .collect();
    }
    Ok(())
}

fn create_index(s: &mut Schema, c: &mut Cur, unique: bool) -> Result<(), String> {
    let name = c.ident()?;
    c.expect("on")?;
    let table = c.ident()?;
    let columns = split_commas(c.group()?).into_iter().map(show).collect();
    let filter = if c.eat("where") { Some(show(c.rest())) } else { None };
    c.done()?;
    s.table(&table)?;
    if s.indexes.contains_key(&name) {
        return Err(format!("index `{name}` already exists"));
    }
    s.indexes.insert(name, Index { table, columns, unique, filter });
    Ok(())
}

/// Seed rows (`INSERT ... VALUES`) are data the code relies on, such as the service clock's one
/// row: they are compared like schema. `INSERT ... SELECT` is understood only as the plain copy of
/// SQLite's table rebuild, which carries the old table's seed rows over.
fn insert(s: &mut Schema, c: &mut Cur) -> Result<(), String> {
    let table = c.ident()?;
    let columns = if c.is("(") { Some(name_list(c.group()?)?) } else { None };
    if c.eat("values") {
        let mut rows = Vec::new();
        loop {
            rows.push(format!("({}) values ({})", columns.clone().unwrap_or_default().join(", "), show(c.group()?)));
            if !c.eat(",") {
                break;
            }
        }
        c.done()?;
        s.table(&table)?.seeds.extend(rows);
        return Ok(());
    }
    c.expect("select")?;
    let rest = c.rest();
    let copy_error = || "only `INSERT INTO new (cols) SELECT cols FROM old` (a plain copy) is understood".to_string();
    let [selected @ .., Tok::Word(from), Tok::Word(source)] = rest else { return Err(copy_error()) };
    let selected = name_list(selected).map_err(|_| copy_error())?;
    if from != "from" || columns.is_some_and(|columns| columns != selected) {
        return Err(copy_error());
    }
    let seeds = s.table(source)?.seeds.clone();
    s.table(&table)?.seeds.extend(seeds);
    Ok(())
}

/// Only triggers that refuse a change are understood: SQLite's `BEGIN SELECT RAISE(ABORT, ..);
/// END`, PostgreSQL's `EXECUTE FUNCTION f()` where `f` only raises.
fn create_trigger(s: &mut Schema, d: Dialect, c: &mut Cur) -> Result<(), String> {
    c.ident()?;
    if c.eat("after") {
        return generation_trigger(s, d, c);
    }
    c.expect("before")?;
    let mut events = vec![c.ident()?];
    while c.eat("or") {
        events.push(c.ident()?);
    }
    c.expect("on")?;
    let table = c.ident()?;
    let per_row = if d == Dialect::Sqlite {
        c.eat_all("for each row");
        c.expect("begin select raise ( abort ,")?;
        if !matches!(c.peek(), Some(Tok::Str(_))) {
            return Err(format!("expected a message, found {}", c.found()));
        }
        c.p += 1;
        c.expect(") ; end")?;
        true
    } else {
        c.expect("for each")?;
        let level = c.ident()?;
        c.expect("execute function")?;
        let function = c.ident()?;
        c.expect("( )")?;
        if !s.refusing_functions.contains(&function) {
            return Err(format!("`{function}` is not a known function that only raises"));
        }
        level == "row"
    };
    c.done()?;
    let t = s.table(&table)?;
    for event in events {
        match event.as_str() {
            // SQLite has no TRUNCATE; its DELETE guard already refuses emptying the table.
            "truncate" if d == Dialect::Postgres => {}
            "insert" | "update" | "delete" => {
                let level = if per_row { "" } else { " (per statement)" };
                t.guards.insert(format!("refuses {event}{level}"));
            }
            _ => return Err(format!("unsupported trigger event `{event}`")),
        }
    }
    Ok(())
}

/// The other trigger understood: after a change, move the table's cache generation (SQLite's
/// `BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'g'; END` per row,
/// PostgreSQL's `EXECUTE FUNCTION f('g')` where `f` does that for its argument). Compared as "moves
/// the g generation on EVENT", whatever the level: any move makes a cached copy stale.
fn generation_trigger(s: &mut Schema, d: Dialect, c: &mut Cur) -> Result<(), String> {
    let mut events = vec![c.ident()?];
    while c.eat("or") {
        events.push(c.ident()?);
    }
    c.expect("on")?;
    let table = c.ident()?;
    let group = |c: &mut Cur| match c.peek() {
        Some(Tok::Str(g)) => {
            c.p += 1;
            Ok(g.clone())
        }
        _ => Err(format!("expected a generation name, found {}", c.found())),
    };
    let group = if d == Dialect::Sqlite {
        c.eat_all("for each row");
        if c.eat_all("begin insert into analytics_generations") {
            c.p -= 4;
            analytics_body(c)?;
            return analytics_guards(s, d, &table, events);
        }
        c.expect("begin update cache_generations set generation = generation +")?;
        if c.peek() != Some(&Tok::Num("1".into())) {
            return Err(format!("expected `1`, found {}", c.found()));
        }
        c.p += 1;
        c.expect("where name =")?;
        let g = group(c)?;
        c.expect("; end")?;
        g
    } else {
        c.expect("for each")?;
        c.ident()?;
        c.expect("execute function")?;
        let function = c.ident()?;
        if s.analytics_functions.contains(&function) {
            c.expect("( )")?;
            c.done()?;
            return analytics_guards(s, d, &table, events);
        }
        if !s.generation_functions.contains(&function) {
            return Err(format!("`{function}` is not a known function that moves a cache generation"));
        }
        c.expect("(")?;
        let g = group(c)?;
        c.expect(")")?;
        g
    };
    c.done()?;
    moves_on(s, d, &table, events, &format!("moves the {group} generation"))
}

/// Records that `table`'s trigger does `what` on each of `events` (SQLite has no TRUNCATE).
fn moves_on(s: &mut Schema, d: Dialect, table: &str, events: Vec<String>, what: &str) -> Result<(), String> {
    let t = s.table(table)?;
    for event in events {
        match event.as_str() {
            "truncate" if d == Dialect::Postgres => {}
            "insert" | "update" | "delete" => {
                t.guards.insert(format!("{what} on {event}"));
            }
            _ => return Err(format!("unsupported trigger event `{event}`")),
        }
    }
    Ok(())
}

/// The third kind of trigger: after a change to a payment (or its lines, refunded items, first
/// visits), move the generation of the day it belongs to in `analytics_generations`. SQLite's body
/// is `BEGIN INSERT INTO analytics_generations ...; ... END`, statements of nothing else;
/// PostgreSQL's `EXECUTE FUNCTION f()` where `f`'s body only upserts that table. Compared as "moves
/// the analytics generation of its day on EVENT" (the days are computed alike: the reviewer reads
/// the two files side by side).
fn analytics_body(c: &mut Cur) -> Result<(), String> {
    c.expect("begin")?;
    loop {
        c.expect("insert into analytics_generations")?;
        while !c.is(";") {
            if c.peek().is_none() || c.is("update") && !matches!(c.t.get(c.p - 1), Some(Tok::Word(w)) if w == "do") {
                return Err(format!("only upserts of analytics_generations are understood, found {}", c.found()));
            }
            c.p += 1;
        }
        c.expect(";")?;
        if c.eat("end") {
            return c.done();
        }
    }
}

fn analytics_guards(s: &mut Schema, d: Dialect, table: &str, events: Vec<String>) -> Result<(), String> {
    moves_on(s, d, table, events, "moves the analytics generation of its day")
}

/// A PostgreSQL function body that only upserts `analytics_generations` (inserts into nothing
/// else, updates only by `ON CONFLICT DO UPDATE`, deletes nothing) and returns NULL.
fn is_analytics_body(toks: &[Tok]) -> bool {
    let w = |k: usize, x: &str| matches!(toks.get(k), Some(Tok::Word(y)) if y == x);
    let inserts = (0..toks.len()).filter(|&k| w(k, "insert")).collect::<Vec<_>>();
    let tail = ["return", "null", ";", "end"];
    let ends = toks.len() >= 4
        && toks[toks.len() - 4..].iter().zip(tail).all(|(t, x)| matches!(t, Tok::Word(y) | Tok::Sym(y) if y == x));
    w(0, "begin")
        && ends
        && !inserts.is_empty()
        && inserts.iter().all(|&k| w(k + 1, "into") && w(k + 2, "analytics_generations"))
        && (0..toks.len()).all(|k| !w(k, "delete") && (!w(k, "update") || k > 0 && w(k - 1, "do")))
}

fn create_function(s: &mut Schema, c: &mut Cur) -> Result<(), String> {
    let name = c.ident()?;
    c.expect("( ) returns trigger")?;
    let (mut language, mut body) = (None, None);
    while c.peek().is_some() {
        if c.eat("language") {
            language = Some(c.ident()?);
        } else if c.eat("as") {
            let Some(Tok::Dollar(text)) = c.peek() else { return Err("expected a $$ body".into()) };
            body = Some(text.clone());
            c.p += 1;
        } else {
            return Err(format!("unsupported function clause {}", c.found()));
        }
    }
    if language.as_deref() != Some("plpgsql") {
        return Err("only LANGUAGE plpgsql is understood".into());
    }
    let toks: Vec<Tok> = tokenize(&body.ok_or("no function body")?)?.into_iter().map(|(tok, _)| tok).collect();
    let trimmed = match toks.last() {
        Some(Tok::Sym(x)) if x == ";" => &toks[..toks.len() - 1],
        _ => &toks[..],
    };
    if is_analytics_body(trimmed) {
        s.analytics_functions.insert(name);
        return Ok(());
    }
    let b = &mut Cur::new(&toks);
    if b.eat_all("begin update cache_generations set generation = generation +") {
        b.p += 1;
        b.expect("where name = tg_argv [")?;
        b.p += 1;
        b.expect("] ; return null ; end")?;
        b.eat(";");
        b.done()?;
        s.generation_functions.insert(name);
        return Ok(());
    }
    b.expect("begin raise exception").map_err(|e| format!("only a body that just raises is understood ({e})"))?;
    while b.peek().is_some_and(|tok| *tok != Tok::Sym(";".into())) {
        b.p += 1;
    }
    b.expect("; end")?;
    b.eat(";");
    b.done()?;
    s.refusing_functions.insert(name);
    Ok(())
}

// ----- Comparing -----

/// Every difference between the SQLite (`a`) and PostgreSQL (`b`) schemas, one line each.
fn diff(a: &Schema, b: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for name in a.tables.keys().chain(b.tables.keys()).collect::<BTreeSet<_>>() {
        match (a.tables.get(name), b.tables.get(name)) {
            (Some(x), Some(y)) => diff_table(name, x, y, &mut out),
            (Some(_), None) => out.push(format!("table {name}: only in sqlite")),
            _ => out.push(format!("table {name}: only in postgres")),
        }
    }
    let describe = |ix: &Index| {
        let unique = if ix.unique { "unique index" } else { "index" };
        let filter = ix.filter.as_ref().map_or(String::new(), |f| format!(" where {f}"));
        format!("{unique} on {} ({}){filter}", ix.table, ix.columns.join(", "))
    };
    for name in a.indexes.keys().chain(b.indexes.keys()).collect::<BTreeSet<_>>() {
        match (a.indexes.get(name).map(describe), b.indexes.get(name).map(describe)) {
            (Some(x), Some(y)) if x != y => out.push(format!("index {name}: sqlite {x}, postgres {y}")),
            (Some(x), None) => out.push(format!("index {name}: only in sqlite ({x})")),
            (None, Some(y)) => out.push(format!("index {name}: only in postgres ({y})")),
            _ => {}
        }
    }
    out
}

fn diff_table(table: &str, a: &Table, b: &Table, out: &mut Vec<String>) {
    let find = |t: &Table, name: &str| t.columns.iter().find(|c| c.name == name).cloned();
    for (mine, theirs, backend) in [(a, b, "sqlite"), (b, a, "postgres")] {
        for col in mine.columns.iter().filter(|c| find(theirs, &c.name).is_none()) {
            out.push(format!("table {table}, column {}: only in {backend} ({})", col.name, describe_column(col)));
        }
    }
    for x in &a.columns {
        if let Some(y) = find(b, &x.name) {
            diff_column(&format!("table {table}, column {}", x.name), x, &y, out);
        }
    }
    // Column order matters to `SELECT *` and to INSERTs without a column list.
    let order = |t: &Table, other: &Table| {
        t.columns.iter().filter(|c| find(other, &c.name).is_some()).map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    let (order_a, order_b) = (order(a, b), order(b, a));
    if order_a != order_b {
        out.push(format!(
            "table {table}: column order: sqlite ({}), postgres ({})",
            order_a.join(", "),
            order_b.join(", ")
        ));
    }
    field(out, &format!("table {table}"), "primary key", a.primary_key.join(", "), b.primary_key.join(", "));
    for (x, y) in constraint_sets(a).into_iter().zip(constraint_sets(b)) {
        set_diff(out, table, x, y);
    }
}

/// A table's unordered parts, each as a set of readable lines.
fn constraint_sets(t: &Table) -> [BTreeSet<String>; 5] {
    let check_name = |k: &Check| k.name.as_ref().map_or(String::new(), |n| format!("constraint {n} "));
    let fk = |(cols, to, ref_cols): &(Vec<String>, String, Vec<String>)| {
        format!("foreign key ({}) references {to} ({})", cols.join(", "), ref_cols.join(", "))
    };
    [
        t.uniques.iter().map(|u| format!("unique ({})", u.join(", "))).collect(),
        t.checks.iter().map(|k| format!("{}check ({})", check_name(k), k.expr)).collect(),
        t.foreign_keys.iter().map(fk).collect(),
        t.guards.iter().map(|g| format!("trigger that {g}")).collect(),
        t.seeds.iter().map(|r| format!("seed row {r}")).collect(),
    ]
}

fn set_diff(out: &mut Vec<String>, table: &str, a: BTreeSet<String>, b: BTreeSet<String>) {
    out.extend(a.difference(&b).map(|x| format!("table {table}: {x} only in sqlite")));
    out.extend(b.difference(&a).map(|x| format!("table {table}: {x} only in postgres")));
}

fn diff_column(at: &str, a: &Column, b: &Column, out: &mut Vec<String>) {
    let ty = |c: &Column| format!("{} ({})", c.ty, c.declared);
    if a.ty != b.ty {
        field(out, at, "type", ty(a), ty(b));
    }
    let null = |c: &Column| if c.not_null { "NOT NULL" } else { "nullable" }.to_string();
    field(out, at, "nullability", null(a), null(b));
    let default = |c: &Column| c.default.clone().unwrap_or_else(|| "none".into());
    field(out, at, "default", default(a), default(b));
    let auto = |c: &Column| c.auto.unwrap_or("no").to_string();
    field(out, at, "auto-assigned", auto(a), auto(b));
}

fn field(out: &mut Vec<String>, at: &str, what: &str, a: String, b: String) {
    if a != b {
        out.push(format!("{at}: {what}: sqlite {a}, postgres {b}"));
    }
}

fn describe_column(c: &Column) -> String {
    let mut text = format!("{}, {}", c.ty, if c.not_null { "NOT NULL" } else { "nullable" });
    if let Some(default) = &c.default {
        text += &format!(", default {default}");
    }
    if let Some(auto) = c.auto {
        text += &format!(", auto-assigned {auto}");
    }
    text
}
