//! `omamori bench ledger`: ledger transfers per second, one journal entry per transaction.
//!
//! This is the baseline that group commit will be measured against. It prints what it measured,
//! on which machine, with the command to rerun it; it asserts nothing.

pub mod analytics;
pub mod flood;
pub mod switch;

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
    let latencies = gather(tasks).await?;
    let elapsed = started.elapsed();
    let problems = ledger::verify(&db).await?;
    println!("omamori bench ledger: {} backend", db.backend().name());
    println!("machine: {}", machine());
    println!(
        "transfers: {transfers}, concurrency: {concurrency}, wallets: {wallets}, one journal entry per transaction"
    );
    println!(
        "elapsed: {:.2} s, throughput: {:.0} transfers/s, {}",
        elapsed.as_secs_f64(),
        transfers as f64 / elapsed.as_secs_f64(),
        latency_summary(latencies),
    );
    println!(
        "ledger verify after the run: {}",
        if problems.is_empty() { "clean".to_string() } else { format!("{} problem(s)", problems.len()) }
    );
    anyhow::ensure!(problems.is_empty(), "the ledger did not verify after the benchmark");
    db.close().await;
    Ok(())
}

/// `omamori bench login`: how many Argon2id password checks per second the machine sustains (all
/// cores busy through the bounded pool), and how long a first login step takes over HTTP (the
/// server in this process on a fresh SQLite file, a client over loopback TCP).
pub async fn login(
    mut config: crate::config::Config,
    logins: u64,
    concurrency: u64,
    checks: u64,
) -> anyhow::Result<()> {
    use crate::identity::password::{self, Password};
    use crate::secret::HashPool;
    anyhow::ensure!(logins >= 1 && concurrency >= 1 && checks >= 1, "need logins, concurrency and checks >= 1");
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = TempDir(dir.clone());
    config.data_dir = dir.clone();
    config.database_url = None;
    config.listen = "127.0.0.1:0".parse()?;
    config.sandbox = false;
    config.environment = crate::config::Environment::Development;
    // The benchmark logs in many times from one address: keep the address throttle out of the way.
    config.throttle_address_failures = 100_000;

    // Password checks per second, as many at once as the pool allows.
    let hasher = HashPool::new(config.password_hash_concurrency as usize);
    let password = Password::for_login("Kq7#vL-bench-password!");
    let stored = Arc::new(password::hash(&hasher, &password).await?);
    let check_rate = check_rate(&hasher, &stored, "Kq7#vL-bench-password!", checks).await?;

    // A user, made directly in the database (sign-up's codes are beside the point here).
    let app = crate::app::Application::build(config).await?;
    let addr = app.local_addr();
    let state = app.state().clone();
    {
        let mut tx = state.db.begin().await?;
        let now = state.clock.now_ms();
        let wallet = ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some("bench"), now).await?;
        sqlx::query(
            "INSERT INTO users (id, phone, email, password_hash, wallet_account_id, credentials_changed_at, created_at) \
             VALUES ('usr_bench', '+819000000000', 'bench@example.jp', $1, $2, $3, $3)",
        )
        .bind(stored.as_str())
        .bind(wallet.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let body = r#"{"login":"bench@example.jp","password":"Kq7#vL-bench-password!","device_id":"bench-device"}"#;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < logins {
                let t0 = Instant::now();
                let status = post_json(addr, "/v1/login", body).await?;
                anyhow::ensure!(status == 200, "a login answered {status}");
                latencies.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let latencies = gather(tasks).await?;
    let elapsed = started.elapsed();
    server.abort();
    println!("omamori bench login");
    println!("machine: {}", machine());
    println!("password checks: {checks} Argon2id verifications (m=19456 KiB, t=2, p=1), {:.1} checks/s", check_rate);
    println!(
        "logins (first step over HTTP, password checked, challenge answered): {logins} at concurrency {concurrency}: \
         {:.1} logins/s, {}",
        logins as f64 / elapsed.as_secs_f64(),
        latency_summary(latencies)
    );
    Ok(())
}

/// Argon2id verifications per second of `password` against `stored`, `checks` of them queued at
/// once on `hasher` (so all of its threads are busy).
async fn check_rate(
    hasher: &crate::secret::HashPool,
    stored: &Arc<String>,
    password: &'static str,
    checks: u64,
) -> anyhow::Result<f64> {
    use crate::identity::password::{self, Password};
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..checks {
        let (hasher, stored) = (hasher.clone(), stored.clone());
        tasks.push(tokio::spawn(async move {
            password::verify(&hasher, &Password::for_login(password), Some(stored.as_str())).await
        }));
    }
    for t in tasks {
        anyhow::ensure!(t.await?, "a password check failed");
    }
    Ok(checks as f64 / started.elapsed().as_secs_f64())
}

/// `omamori bench pos`: POS payments per second over HTTP. The server runs in this process in
/// sandbox mode (for its demo store and terminal key) on the given database; shoppers are made
/// directly in the database with funded wallets and one fresh payment code each; then the codes
/// are charged at the terminal over loopback HTTP. Each payment is the whole production path:
/// terminal key, idempotency, code redemption, limits, journal entry, payment row and notice in one
/// transaction.
///
/// Closed loop (the default): `concurrency` payments at a time, each starting when one ends.
/// Open loop (`rate`): arrivals at a fixed rate for the duration, whatever the answers take, each
/// timed from when it was due (so a stall counts against every payment that waited behind it).
pub async fn pos(mut config: crate::config::Config, run: PosRun) -> anyhow::Result<()> {
    let payments = match run.load {
        Load::Closed { payments, concurrency } => {
            anyhow::ensure!(payments >= 1 && concurrency >= 1, "need payments and concurrency >= 1");
            payments
        }
        Load::Open { rate, duration_secs } => {
            anyhow::ensure!(rate >= 1 && duration_secs >= 1, "need a rate and a duration >= 1");
            rate * duration_secs
        }
    };
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = TempDir(dir.clone());
    config.data_dir = dir.clone();
    config.database_url = run.database_url;
    config.listen = "127.0.0.1:0".parse()?;
    config.sandbox = true;
    config.environment = crate::config::Environment::Development;
    let connections = match run.load {
        Load::Closed { concurrency, .. } => concurrency as u32 + 4,
        Load::Open { .. } => 32,
    };
    config.database_max_connections = connections.max(8);
    let app = crate::app::Application::build(config).await?;
    let addr = app.local_addr();
    let state = app.state().clone();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let terminal_key = doc["terminal_key"].as_str().unwrap_or_default().to_string();
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let shoppers = seed_shoppers(&state, &tag, payments).await?;
    let codes = Arc::new(fresh_codes(&state, &shoppers).await?);
    let charge = Charge { addr, key: terminal_key, tag: tag.clone(), codes };
    let before_run = resident_mib();
    let sampler = ResidentPeak::start();
    let started = Instant::now();
    let (latencies, errors, load) = match run.load {
        Load::Closed { concurrency, .. } => {
            (closed_loop(&charge, payments, concurrency).await?, 0, format!("at concurrency {concurrency}"))
        }
        Load::Open { rate, duration_secs } => {
            let (latencies, failures) = open_loop(&charge, rate, duration_secs).await;
            println!("not answered 201: {failures}");
            (latencies, failures.count(), format!("arriving at {rate}/s for {duration_secs} s (open loop)"))
        }
    };
    let elapsed = started.elapsed();
    server.abort();
    let problems = ledger::verify(&state.db).await?;
    println!("omamori bench pos: {} backend", state.db.backend().name());
    println!("machine: {}", machine());
    println!(
        "payments: {} POS charges over HTTP {load}: {:.0} payments/s, {}, errors {errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latency_summary(latencies)
    );
    println!(
        "resident memory of this process (the server and the benchmark's client together): {} MiB before the \
         run, peak {} MiB during it (sampled every 100 ms)",
        before_run.map_or("?".into(), |m| m.to_string()),
        sampler.stop().map_or("?".into(), |m| m.to_string())
    );
    println!(
        "ledger verify after the run: {}",
        if problems.is_empty() { "clean".to_string() } else { format!("{} problem(s)", problems.len()) }
    );
    anyhow::ensure!(problems.is_empty(), "the ledger did not verify after the benchmark");
    Ok(())
}

/// This process's resident memory now (`VmRSS`), in MiB; `None` where /proc does not say.
fn resident_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The highest [`resident_mib`] seen by a thread that looks every 100 ms until stopped.
struct ResidentPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl ResidentPeak {
    fn start() -> ResidentPeak {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = resident_mib();
            while !seen.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(resident_mib());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak.max(resident_mib())
        });
        ResidentPeak { stop, thread }
    }

    fn stop(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// What `bench pos` runs: where, and which kind of load.
pub struct PosRun {
    pub database_url: Option<String>,
    pub load: Load,
}

pub enum Load {
    Closed { payments: u64, concurrency: u64 },
    Open { rate: u64, duration_secs: u64 },
}

/// Shoppers with ¥100,000 each, made directly in the database (the sign-up is not what is timed).
async fn seed_shoppers(
    state: &crate::state::AppState,
    tag: &str,
    count: u64,
) -> anyhow::Result<Vec<crate::ids::UserId>> {
    let now = state.clock.now_ms();
    let mut users = Vec::with_capacity(count as usize);
    let mut tx = state.db.begin().await?;
    let funding = crate::payments::topups::funding_account(&mut tx, now).await?;
    for i in 0..count {
        let user_id = crate::ids::UserId::from_raw(format!("usr_bench_{tag}_{i}"));
        let wallet =
            ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some(user_id.as_str()), now).await?;
        ledger::post(
            &mut tx,
            &NewEntry::transfer(EntryKind::Adjustment, "bench-funding", funding, wallet, Yen(100_000)),
            now,
        )
        .await?;
        sqlx::query(
            "INSERT INTO users (id, phone, email, password_hash, wallet_account_id, credentials_changed_at, created_at) \
             VALUES ($1, $2, $3, 'bench', $4, $5, $5)",
        )
        .bind(&user_id)
        .bind(format!("+8170{:08}{}", i, &tag[..2]))
        .bind(format!("bench-{tag}-{i}@example.jp"))
        .bind(wallet.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        users.push(user_id);
    }
    tx.commit().await?;
    Ok(users)
}

/// One payment code per shopper, made just before the timed run (codes live 60 s).
async fn fresh_codes(state: &crate::state::AppState, users: &[crate::ids::UserId]) -> anyhow::Result<Vec<String>> {
    let now = state.clock.now_ms();
    let mut codes = Vec::with_capacity(users.len());
    let mut tx = state.db.begin().await?;
    for user_id in users {
        let code =
            crate::payments::pos::new_code(&mut tx, &state.config.payment_code_prefix, user_id, "bench-device", now)
                .await?;
        codes.push(code.code);
    }
    tx.commit().await?;
    Ok(codes)
}

/// What every charge of one run shares.
#[derive(Clone)]
struct Charge {
    addr: std::net::SocketAddr,
    key: String,
    tag: String,
    codes: Arc<Vec<String>>,
}

impl Charge {
    /// Charges code `i`; answers the HTTP status.
    async fn pay(&self, i: u64) -> anyhow::Result<u16> {
        let body = format!(r#"{{"code":"{}","amount":100}}"#, self.codes[i as usize]);
        let headers =
            [("Authorization", format!("Bearer {}", self.key)), ("Idempotency-Key", format!("bench-{}-{i}", self.tag))];
        post_json_with(self.addr, "/v1/pos/payments", &body, &headers).await
    }
}

async fn closed_loop(charge: &Charge, payments: u64, concurrency: u64) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (charge, next) = (charge.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= payments {
                    break;
                }
                let t0 = Instant::now();
                let status = charge.pay(i).await?;
                anyhow::ensure!(status == 201, "a payment answered {status}");
                latencies.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    gather(tasks).await
}

/// Arrivals every 1/rate s; answers the latencies of the payments answered 201, and how many were
/// not (another status, or no answer), by what they got.
async fn open_loop(charge: &Charge, rate: u64, duration_secs: u64) -> (Vec<Duration>, Failures) {
    let total = rate * duration_secs;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let charge = charge.clone();
        tasks.push(tokio::spawn(async move {
            let status = charge.pay(i).await.map_err(|e| e.to_string());
            (status, due.elapsed())
        }));
    }
    let (mut latencies, mut failures) = (Vec::with_capacity(total as usize), Failures::default());
    for t in tasks {
        match t.await {
            Ok((Ok(201), latency)) => latencies.push(latency),
            Ok((Ok(status), _)) => failures.add(format!("HTTP {status}")),
            Ok((Err(e), _)) => failures.add(format!("no answer ({e})")),
            Err(_) => failures.add("the task failed".into()),
        }
    }
    (latencies, failures)
}

/// The payments not answered 201, counted by what they got.
#[derive(Default)]
pub(crate) struct Failures(std::collections::BTreeMap<String, u64>);

impl Failures {
    fn add(&mut self, what: String) {
        *self.0.entry(what).or_default() += 1;
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(what, n)| format!("{what}: {n}")).collect();
        write!(f, "{}", if parts.is_empty() { "none".into() } else { parts.join(", ") })
    }
}

/// `omamori bench tpcb`: the TPC-B transaction of pgbench's default script on SQLite, with the
/// durability Omamori uses (WAL, `synchronous = FULL`) and one connection (SQLite has one writer):
/// the bare-database baseline that `bench pos` on SQLite is compared with. Scale 10 as pgbench's
/// `-s 10`: 10 branches, 100 tellers, 1,000,000 accounts.
pub async fn tpcb(seconds: u64) -> anyhow::Result<()> {
    use rand::Rng;
    use sqlx::{Connection, Executor};
    anyhow::ensure!(seconds >= 1, "need seconds >= 1");
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let _tmp = TempDir(dir.clone());
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join("tpcb.db").display());
    let mut conn = sqlx::AnyConnection::connect(&url).await?;
    conn.execute(sqlx::raw_sql(TPCB_SCHEMA)).await?;
    let scale = 10i64;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut rng = rand::rng();
    while started.elapsed() < Duration::from_secs(seconds) {
        let (aid, tid, bid) =
            (rng.random_range(1..=100_000 * scale), rng.random_range(1..=10 * scale), rng.random_range(1..=scale));
        let delta: i64 = rng.random_range(-5000..=5000);
        let t0 = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")
            .bind(delta)
            .bind(aid)
            .execute(&mut *tx)
            .await?;
        let _: i64 = sqlx::query_scalar("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
            .bind(aid)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2")
            .bind(delta)
            .bind(tid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2")
            .bind(delta)
            .bind(bid)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
        )
        .bind(tid)
        .bind(bid)
        .bind(aid)
        .bind(delta)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        latencies.push(t0.elapsed());
    }
    let elapsed = started.elapsed();
    println!("omamori bench tpcb: SQLite, WAL, synchronous = FULL, one connection, scale {scale}");
    println!("machine: {}", machine());
    println!(
        "transactions: {} TPC-B in {:.1} s: {:.0} transactions/s, {}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latency_summary(latencies)
    );
    Ok(())
}

/// pgbench's tables at scale 10, filled as `pgbench -i -s 10` fills them.
const TPCB_SCHEMA: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TEXT, filler TEXT);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) INSERT INTO pgbench_branches SELECT x, 0, '' FROM n;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) INSERT INTO pgbench_tellers SELECT x, (x - 1) / 10 + 1, 0, '' FROM n;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000) INSERT INTO pgbench_accounts SELECT x, (x - 1) / 100000 + 1, 0, '' FROM n;";

async fn post_json_with(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("no HTTP status in the answer"))
}

/// One HTTP/1.1 POST over a fresh connection; answers the status code.
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> anyhow::Result<u16> {
    post_json_with(addr, path, body, &[]).await
}

/// Waits for the workers and answers every latency they measured.
async fn gather<E>(tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, E>>>) -> anyhow::Result<Vec<Duration>>
where
    anyhow::Error: From<E>,
{
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(latencies)
}

/// "latency p50 … ms, p99 … ms, max … ms".
fn latency_summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| ms(latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]);
    if latencies.is_empty() {
        return "no latency measured".into();
    }
    format!(
        "latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        ms(latencies.last().copied().unwrap_or_default())
    )
}

/// `omamori bench webhooks`: merchant webhook deliveries per second through one instance's
/// dispatcher. A local receiver (started here, on loopback) checks every signature and counts; the
/// server runs in sandbox mode on the given database with its demo merchant; `events` payment
/// events are written to the outbox in one transaction, as payments would, and the clock runs from
/// that commit until the receiver has verified them all.
pub async fn webhooks(
    mut config: crate::config::Config,
    database_url: Option<String>,
    events: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(events >= 1, "need events >= 1");
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = TempDir(dir.clone());
    config.data_dir = dir.clone();
    config.database_url = database_url;
    config.listen = "127.0.0.1:0".parse()?;
    config.sandbox = true;
    config.environment = crate::config::Environment::Development;
    config.notify.poll_ms = 20;
    let app = crate::app::Application::build(config).await?;
    let state = app.state().clone();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let merchant = crate::ids::MerchantId::from_raw(doc["merchant_id"].as_str().unwrap_or_default());
    let server = tokio::spawn(app.run_until(std::future::pending()));

    // The receiver: verifies each signature with the endpoint's secret, counts the good ones.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let key = state.config.keys.webhook_signing.clone().ok_or_else(|| anyhow::anyhow!("no webhook key"))?;
    let now = state.clock.now_ms();
    let (_, secret) = crate::merchants::webhooks::create(&state.db, &key, &merchant, &url, "bench", now)
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the endpoint: {e}"))?;
    let (verified, forged) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (v, f) = (verified.clone(), forged.clone());
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (v, f, secret) = (v.clone(), f.clone(), secret.clone());
            async move {
                let signature = headers
                    .get(crate::notify::webhooks::SIGNATURE_HEADER)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if crate::notify::webhooks::verify(&secret, signature, &body, now) {
                    v.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let receiving = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let mut tx = state.db.begin().await?;
    for i in 0..events {
        let data = serde_json::json!({"payment_id": format!("pay_bench_{i}"), "amount": 100, "currency": "JPY"});
        crate::merchants::webhooks::emit(&mut tx, &merchant, "payment.succeeded", &data, now).await?;
    }
    tx.commit().await?;
    let started = Instant::now();
    let mut first = None;
    while verified.load(Ordering::Relaxed) + forged.load(Ordering::Relaxed) < events {
        if first.is_none() && verified.load(Ordering::Relaxed) > 0 {
            first = Some(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "deliveries did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    println!("omamori bench webhooks: {} backend", state.db.backend().name());
    println!("machine: {}", machine());
    println!(
        "webhooks: {events} signed deliveries to a local receiver in {:.2} s: {:.0} deliveries/s; first after {:.1} ms; signatures verified {}, refused {}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        first.unwrap_or(elapsed).as_secs_f64() * 1000.0,
        verified.load(Ordering::Relaxed),
        forged.load(Ordering::Relaxed),
    );
    server.abort();
    receiving.abort();
    Ok(())
}

/// CPU model and count, for the report.
pub(crate) fn machine() -> String {
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

pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
