//! `omamori bench ledger`: ledger transfers per second, one journal entry per transaction.
//!
//! This is the baseline that group commit will be measured against. It prints what it measured,
//! on which machine, with the command to rerun it; it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ledger::{self, AccountKind, EntryKind, NewEntry};
use crate::money::{Currency, Yen};
use crate::store::{self, Clock, Db};

pub async fn ledger(
    database_url: Option<String>,
    transfers: u64,
    concurrency: u64,
    wallets: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        transfers >= 1 && concurrency >= 1 && wallets >= 2,
        "need transfers >= 1, concurrency >= 1, wallets >= 2"
    );
    let (url, _tmp) = match database_url {
        Some(url) => (url, None),
        None => {
            let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir)?;
            (format!("sqlite://{}", dir.join("bench.db").display()), Some(TempDir(dir)))
        }
    };
    let db = Db::connect(&url, (concurrency as u32).max(2) + 2).await?;
    store::migrate::run(&db).await?;
    let clock = Clock::real();

    // Set-up: wallets funded generously so that no transfer fails for want of money.
    let mut accounts = Vec::new();
    {
        let mut tx = db.begin().await?;
        let now = clock.now_ms();
        let funding =
            ledger::create_account(&mut tx, AccountKind::FundingClearing, Currency::Jpy, Some("bench"), now).await?;
        for _ in 0..wallets {
            let w = ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some("bench"), now).await?;
            ledger::post(
                &mut tx,
                &NewEntry::transfer(EntryKind::Adjustment, "bench-funding", funding, w, Yen(1_000_000_000)),
                now,
            )
            .await?;
            accounts.push(w);
        }
        tx.commit().await?;
    }
    let accounts = Arc::new(accounts);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, clock, accounts, next) = (db.clone(), clock.clone(), accounts.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= transfers {
                    break;
                }
                let n = accounts.len() as u64;
                let from = accounts[(i % n) as usize];
                let to = accounts[((i * 7 + 1 + i / n) % n) as usize];
                let to = if to == from { accounts[((i + 1) % n) as usize] } else { to };
                let entry = NewEntry::transfer(
                    EntryKind::Adjustment,
                    format!("bench-{i}"),
                    from,
                    to,
                    Yen(1 + (i % 1000) as i64),
                );
                let t0 = Instant::now();
                store::retry(|| async {
                    let mut tx = db.begin().await?;
                    ledger::post(&mut tx, &entry, clock.now_ms()).await?;
                    tx.commit().await?;
                    Ok::<_, ledger::LedgerError>(())
                })
                .await?;
                latencies.push(t0.elapsed());
            }
            Ok::<_, ledger::LedgerError>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let problems = ledger::verify(&db).await?;
    println!("omamori bench ledger: {} backend", db.backend().name());
    println!("machine: {}", machine());
    println!(
        "transfers: {transfers}, concurrency: {concurrency}, wallets: {wallets}, one journal entry per transaction"
    );
    println!(
        "elapsed: {:.2} s, throughput: {:.0} transfers/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        transfers as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "ledger verify after the run: {}",
        if problems.is_empty() { "clean".to_string() } else { format!("{} problem(s)", problems.len()) }
    );
    anyhow::ensure!(problems.is_empty(), "the ledger did not verify after the benchmark");
    db.close().await;
    Ok(())
}

/// CPU model and count, for the report.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs, {model}, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
