//! `omamori bench flood`: payments under a credential-stuffing flood (issue 14, "under attack").
//! POS payments arrive at a fixed rate (open loop), first alone, then while login attempts with
//! leaked-looking credentials arrive at ten times the rate this machine can check passwords, each
//! from one of 1,000 addresses (one per /24, as a botnet's are: no address or subnet throttle
//! catches them in the run's seconds). It reports the payments' latency in both phases, and what
//! the flood cost: how many attempts had their password checked (one Argon2 computation each) and
//! how many were refused before any check.
//!
//! The server runs in this process in sandbox mode, behind a trusted proxy at 127.0.0.1 that
//! forwards each attempt's address in `X-Forwarded-For`.

use std::sync::Arc;
use std::time::Duration;

use super::{Charge, fresh_codes, latency_summary, open_loop, post_json_with, seed_shoppers};

/// What `bench flood` runs.
pub struct FloodRun {
    pub database_url: Option<String>,
    /// Payments per second, in both phases.
    pub rate: u64,
    /// Seconds of each phase.
    pub duration_secs: u64,
    /// Distinct addresses the flood comes from.
    pub addresses: u64,
}

/// How the flood's login attempts were answered.
#[derive(Default)]
struct FloodCounts {
    checked: u64,
    refused: u64,
    other: u64,
}

pub async fn flood(mut config: crate::config::Config, run: FloodRun) -> anyhow::Result<()> {
    anyhow::ensure!(run.rate >= 1 && run.duration_secs >= 1, "need a rate and a duration >= 1");
    anyhow::ensure!((1..=60_000).contains(&run.addresses), "addresses: 1 to 60000");
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = super::TempDir(dir.clone());
    config.data_dir = dir.clone();
    config.database_url = run.database_url.clone();
    config.listen = "127.0.0.1:0".parse()?;
    config.sandbox = true;
    config.environment = crate::config::Environment::Development;
    config.database_max_connections = 32;
    config.trusted_proxies = vec!["127.0.0.1/32".parse()?];
    let capacity = check_capacity(config.password_hash_concurrency as usize).await?;
    let app = crate::app::Application::build(config).await?;
    let addr = app.local_addr();
    let state = app.state().clone();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let key = doc["terminal_key"].as_str().unwrap_or_default().to_string();
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let per_phase = run.rate * run.duration_secs;
    let mut phases = Vec::new();
    for phase in ["quiet", "flood"] {
        let tag = format!("{phase}{}", uuid::Uuid::new_v4().simple());
        let shoppers = seed_shoppers(&state, &tag, per_phase).await?;
        // Codes live 60 s: made just before the phase that spends them.
        let codes = Arc::new(fresh_codes(&state, &shoppers).await?);
        phases.push(Charge { addr, key: key.clone(), tag, codes });
    }
    let quiet = open_loop(&phases[0], run.rate, run.duration_secs).await;
    let flood_rate = (capacity * 10.0).ceil() as u64;
    let hashes_before = state.hasher.runs();
    let attack = tokio::spawn(stuff(addr, flood_rate, run.duration_secs, run.addresses));
    let under = open_loop(&phases[1], run.rate, run.duration_secs).await;
    let counts = attack.await??;
    let hashes = state.hasher.runs() - hashes_before;
    server.abort();
    let problems = crate::ledger::verify(&state.db).await?;
    let p99 = |l: &[Duration]| {
        let mut l = l.to_vec();
        l.sort();
        l.get(((l.len().max(1) - 1) as f64 * 0.99).round() as usize).copied().unwrap_or_default()
    };
    let (quiet_p99, under_p99) = (p99(&quiet.0), p99(&under.0));
    println!("omamori bench flood: {} backend", state.db.backend().name());
    println!("machine: {}", super::machine());
    println!(
        "password checks: {capacity:.1}/s on this machine ({} at once); the flood: {flood_rate} login attempts/s (10x) from {} addresses for {} s",
        state.config.password_hash_concurrency, run.addresses, run.duration_secs
    );
    for (name, (latencies, errors)) in [("quiet", quiet), ("under the flood", under)] {
        println!(
            "payments {name}: {} answered 201 arriving at {}/s for {} s, {}, errors {} ({errors})",
            latencies.len(),
            run.rate,
            run.duration_secs,
            latency_summary(latencies),
            errors.count()
        );
    }
    println!(
        "payment p99 under the flood / quiet: {:.2}x (goal <= 2x)",
        under_p99.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-6)
    );
    println!(
        "flood: {} attempts: {} had their password checked (401), {} refused before any check (429), {} other; \
         Argon2 computations meanwhile: {hashes}",
        counts.checked + counts.refused + counts.other,
        counts.checked,
        counts.refused,
        counts.other
    );
    println!(
        "ledger verify after the run: {}",
        if problems.is_empty() { "clean".to_string() } else { format!("{} problem(s)", problems.len()) }
    );
    anyhow::ensure!(problems.is_empty(), "the ledger did not verify after the benchmark");
    anyhow::ensure!(hashes <= counts.checked, "a refused login cost an Argon2 computation");
    Ok(())
}

/// Argon2id verifications per second through a pool like the server's, all of it busy.
async fn check_capacity(concurrency: usize) -> anyhow::Result<f64> {
    use crate::identity::password::{self, Password};
    let pool = crate::secret::HashPool::new(concurrency);
    let stored = Arc::new(password::hash(&pool, &Password::for_login("Kq7#vL-flood-bench!")).await?);
    super::check_rate(&pool, &stored, "Kq7#vL-flood-bench!", 20 * concurrency.max(1) as u64).await
}

/// Login attempts at `rate` per second for `secs`, each with a phone number and password from a
/// "leaked list" (none of them an account here), from address `i % addresses`.
async fn stuff(addr: std::net::SocketAddr, rate: u64, secs: u64, addresses: u64) -> anyhow::Result<FloodCounts> {
    let total = rate * secs;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate as f64)).await;
        let a = i % addresses;
        let from = format!("100.{}.{}.7", 64 + a / 256, a % 256);
        tasks.push(tokio::spawn(async move {
            let body =
                format!(r#"{{"login":"+8180{:08}","password":"leaked-{i}-Passw0rd!","device_id":"stuffing-{a}"}}"#, i);
            post_json_with(addr, "/v1/login", &body, &[("X-Forwarded-For", from)]).await
        }));
    }
    let mut counts = FloodCounts::default();
    for t in tasks {
        match t.await? {
            Ok(401) => counts.checked += 1,
            Ok(429) => counts.refused += 1,
            _ => counts.other += 1,
        }
    }
    Ok(counts)
}
