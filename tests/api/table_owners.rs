//! Each table has one owning capability that writes it (ARCHITECTURE section 3); the others call that
//! capability's functions. This test reads every SQL statement under `src/` that writes (`INSERT INTO`,
//! `UPDATE`, `DELETE FROM`) and fails when a module writes a table it does not own, or when a table has
//! no owner listed here (so a new table is given one deliberately).

use std::collections::BTreeMap;

/// Table → the top-level module that owns it.
const OWNERS: &[(&str, &str)] = &[
    ("accounts", "ledger"),
    ("journal_entries", "ledger"),
    ("postings", "ledger"),
    ("users", "identity"),
    ("signups", "identity"),
    ("challenges", "identity"),
    ("sessions", "identity"),
    ("device_tokens", "identity"),
    ("recovery_codes", "identity"),
    ("password_resets", "identity"),
    ("operators", "identity"),
    ("merchant_users", "identity"),
    ("merchant_user_stores", "identity"),
    ("passkeys", "identity"),
    ("passkey_registrations", "identity"),
    ("cards", "payments"),
    ("card_fingerprints", "payments"),
    ("topups", "payments"),
    ("payment_codes", "payments"),
    ("payments", "payments"),
    ("refunds", "payments"),
    ("payment_items", "payments"),
    ("refund_items", "payments"),
    ("wallet_limits", "payments"),
    ("corrections", "payments"),
    ("processor_events", "payments"),
    ("merchants", "merchants"),
    ("stores", "merchants"),
    ("terminals", "merchants"),
    ("webhook_endpoints", "merchants"),
    ("settlements", "merchants"),
    ("customer_firsts", "merchants"),
    ("customer_folds", "merchants"),
    ("settlement_lines", "merchants"),
    ("settlement_days", "merchants"),
    ("bank_accounts", "merchants"),
    ("payout_confirmations", "merchants"),
    ("auth_events", "risk"),
    ("throttle_state", "risk"),
    ("switches", "risk"),
    ("risk_rules", "risk"),
    ("reviews", "risk"),
    ("alerts", "risk"),
    ("outbox", "notify"),
    ("audit_log", "audit"),
    ("idempotency_keys", "idempotency"),
    ("schema_migrations", "store"),
    ("service_clock", "store"),
    // pgbench's tables, in the scratch SQLite file of `omamori bench tpcb` only (no migration).
    ("pgbench_accounts", "bench"),
    ("pgbench_branches", "bench"),
    ("pgbench_tellers", "bench"),
    ("pgbench_history", "bench"),
];

/// Writers outside the owner, each on purpose.
const EXCEPTIONS: &[(&str, &str)] = &[
    // The login benchmark seeds thousands of users at once, skipping sign-up's SMS round trips; it is
    // a measuring tool, never run by the service.
    ("src/bench/mod.rs", "users"),
    // The analytics benchmark seeds a year of one merchant's business (customers, payments, baskets,
    // refunds) in multi-row statements: a measuring tool on a scratch database, never run by the service.
    ("src/bench/analytics.rs", "users"),
    ("src/bench/analytics.rs", "payments"),
    ("src/bench/analytics.rs", "payment_items"),
    ("src/bench/analytics.rs", "refunds"),
    ("src/bench/analytics.rs", "refund_items"),
];

/// The module a source file belongs to: its first path segment under `src/`.
fn module_of(path: &str) -> String {
    let rest = path.trim_start_matches("src/");
    rest.split(['/', '.']).next().unwrap_or(rest).to_string()
}

/// The tables a source text writes, outside `#[cfg(test)]` modules.
fn written_tables(source: &str) -> Vec<String> {
    let code = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    let mut tables = Vec::new();
    for verb in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        let mut rest = code;
        while let Some(i) = rest.find(verb) {
            let after = &rest[i + verb.len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `UPDATE` also starts `ON CONFLICT ... DO UPDATE SET`: only a table name counts.
            if !name.is_empty() && name != "SET" && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                tables.push(name);
            }
            rest = after;
        }
    }
    tables
}

fn violations(sources: &BTreeMap<String, String>) -> Vec<String> {
    let owners: BTreeMap<&str, &str> = OWNERS.iter().copied().collect();
    let mut found = Vec::new();
    for (path, text) in sources {
        for table in written_tables(text) {
            match owners.get(table.as_str()) {
                None => found.push(format!("{path} writes {table}, which has no owner in OWNERS")),
                Some(owner) if *owner != module_of(path) && !EXCEPTIONS.contains(&(path.as_str(), table.as_str())) => {
                    found.push(format!("{path} writes {table}, which belongs to {owner}: call {owner}'s functions"))
                }
                Some(_) => {}
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_table_is_written_only_by_its_owner() {
    let found = violations(&crate::helpers::source_files());
    assert!(found.is_empty(), "{} writes outside the owning module:\n  {}", found.len(), found.join("\n  "));
}

#[test]
fn every_exception_still_occurs() {
    let sources = crate::helpers::source_files();
    for (path, table) in EXCEPTIONS {
        let text = sources.get(*path).unwrap_or_else(|| panic!("{path} is gone: remove its exception"));
        assert!(
            written_tables(text).iter().any(|t| t == table),
            "{path} no longer writes {table}: remove its exception"
        );
    }
}

#[test]
fn the_scanner_sees_writes_and_ignores_upserts_and_unit_tests() {
    let text = "sqlx::query(\"INSERT INTO sessions (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET id = $1\");\n\
                sqlx::query(\"UPDATE cards SET status = 'x'\");\n\
                #[cfg(test)]\nmod tests { const X: &str = \"DELETE FROM users\"; }";
    assert_eq!(written_tables(text), ["sessions", "cards"]);
    let fake = BTreeMap::from([("src/risk/rules.rs".to_string(), text.to_string())]);
    let found = violations(&fake);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("writes cards, which belongs to payments"), "{found:?}");
    assert!(found[1].contains("writes sessions, which belongs to identity"), "{found:?}");
}
