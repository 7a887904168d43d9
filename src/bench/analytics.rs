//! `omamori bench analytics`: a year of one merchant's business (by default 1,000,000 payments at
//! 20 stores by 50,000 customers, baskets of 2,000 items, 1 % refunded with their items), written
//! straight into the database, then each analytics route the dashboard calls, timed over HTTP as
//! the merchant's owner, one request at a time.
//!
//! The seeded payments are data for reading only: they carry no journal entries (the ledger is not
//! what is measured), so the bench's server runs without the daily close, and it runs on a scratch database (a temporary SQLite file, or a database
//! it creates on the PostgreSQL server given and drops afterwards).

use std::time::{Duration, Instant};

use crate::ids::{MerchantId, PaymentId, RefundId, StoreId, UserId};
use crate::ledger::{self, AccountKind};
use crate::money::Currency;
use crate::state::AppState;

/// What `bench analytics` seeds and how often it asks.
pub struct AnalyticsRun {
    pub database_url: Option<String>,
    pub payments: u64,
    pub stores: u64,
    pub customers: u64,
    pub items: u64,
    /// Warm requests per route (after the first, timed apart as cold).
    pub requests: u64,
}

const DAY_MS: i64 = 86_400_000;
/// Rows per multi-row INSERT (12 values a payment: 4,800 placeholders, under both backends' caps).
const BATCH: usize = 400;
/// Rows per transaction while seeding.
const TX_ROWS: u64 = 20_000;

/// SplitMix64: a small, fast, seeded generator, so that every run seeds the same business.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In [0, n), skewed towards 0 by `power` (1: uniform): popular items and regular customers.
    fn skewed(&mut self, n: u64, power: f64) -> u64 {
        ((n as f64 * self.unit().powf(power)) as u64).min(n.saturating_sub(1))
    }
}

/// When shops are busy: a weight per hour of the day (Asia/Tokyo), peaks at breakfast, lunch
/// and after work.
const HOUR_WEIGHTS: [u32; 24] = [1, 1, 0, 0, 0, 1, 2, 6, 9, 6, 5, 7, 12, 10, 6, 5, 6, 9, 11, 9, 7, 5, 3, 2];

struct Catalogue {
    skus: Vec<String>,
    names: Vec<String>,
    categories: Vec<String>,
    prices: Vec<i64>,
}

fn catalogue(items: u64, rng: &mut Rng) -> Catalogue {
    let n = items as usize;
    let mut c = Catalogue { skus: Vec::new(), names: Vec::new(), categories: Vec::new(), prices: Vec::new() };
    for i in 0..n {
        c.skus.push(format!("49{:011}", 1_000_000 + i));
        c.names.push(format!("Item {i}"));
        c.categories.push(format!("category-{:02}", i % 24));
        c.prices.push(100 + 10 * (rng.next() % 190) as i64);
    }
    c
}

pub async fn analytics(mut config: crate::config::Config, run: AnalyticsRun) -> anyhow::Result<()> {
    anyhow::ensure!(
        run.payments >= 1 && run.stores >= 1 && run.customers >= 1 && run.items >= 2,
        "need payments, stores, customers >= 1 and items >= 2"
    );
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = super::TempDir(dir.clone());
    let scratch = match &run.database_url {
        Some(url) => Some(ScratchPg::create(url).await?),
        None => None,
    };
    config.data_dir = dir.clone();
    config.database_url = scratch.as_ref().map(|s| s.url.clone());
    config.listen = "127.0.0.1:0".parse()?;
    config.sandbox = true;
    config.environment = crate::config::Environment::Development;
    config.database_max_connections = config.database_max_connections.max(8);
    // The seeded year has no journal entries: it must not be settled (the fold is timed below).
    config.daily_close = false;
    let app = crate::app::Application::build(config).await?;
    let addr = app.local_addr();
    let state = app.state().clone();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let now = state.clock.now_ms();
    let merchant = MerchantId::from_raw(doc["merchant_id"].as_str().unwrap_or_default());
    let seeded = Instant::now();
    seed(&state, &merchant, &doc, &run).await?;
    let seed_time = seeded.elapsed();
    // Statistics for the planner and the visibility map, as a database in service has them.
    let tidy = if state.db.backend().name() == "PostgreSQL" { "VACUUM ANALYZE" } else { "ANALYZE" };
    sqlx::raw_sql(tidy).execute(state.db.pool()).await?;
    // What `serve` does each minute: fold the payments into first visits (here a whole year at once).
    let folding = Instant::now();
    crate::merchants::analytics::fold(&state.db, &merchant, state.clock.now_ms()).await?;
    let fold_time = folding.elapsed();
    let token = owner_session(addr, &doc).await?;
    println!("omamori bench analytics: {} backend", state.db.backend().name());
    println!("machine: {}", super::machine());
    println!(
        "seeded: {} payments at {} stores by {} customers, {} items, over 365 days, in {:.0} s",
        run.payments,
        run.stores,
        run.customers,
        run.items,
        seed_time.as_secs_f64()
    );
    println!(
        "first-visit fold of the seeded year: {:.1} s (serve folds each minute's payments)",
        fold_time.as_secs_f64()
    );
    let today = crate::store::clock::tokyo_date(now);
    let week_ago = crate::store::clock::tokyo_date(now - 7 * DAY_MS);
    let year_ago = crate::store::clock::tokyo_date(now - 365 * DAY_MS);
    let mut worst_p50 = Duration::ZERO;
    println!("load average before: {}", load_average());
    for (path, counts) in routes(&today, &week_ago, &year_ago) {
        // Each route's first question meets an empty cache of closed days: it is timed as "cold".
        crate::merchants::analytics_cache::clear(&state.db);
        let (cold, latencies) = time_route(addr, &token, &path, run.requests, &state.db).await?;
        let p50 = percentile(&latencies, 0.5);
        if counts {
            worst_p50 = worst_p50.max(p50);
        }
        let ahead = cold.read_ahead.map(|d| {
            format!(" (SQL answered while the days were read: in memory {:.1} s after the question)", d.as_secs_f64())
        });
        println!(
            "{path}: cold {:.1} ms{}; warm p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests){}",
            ms(cold.first),
            ahead.unwrap_or_default(),
            ms(p50),
            ms(percentile(&latencies, 0.99)),
            ms(percentile(&latencies, 1.0)),
            latencies.len(),
            if counts { "" } else { " [a year: beyond the goal's 30 days]" }
        );
    }
    let held = crate::merchants::analytics_cache::stats(&state.db);
    println!(
        "analytics cache after the year-long question: {} days, {} payments, {:.1} MiB ({} answers from memory; \
         SQL answered {} while days were read ahead, {} for values memory could not hold)",
        held.days,
        held.payments,
        held.bytes as f64 / (1024.0 * 1024.0),
        held.answers,
        held.deferred,
        held.declined
    );
    println!("load average after: {}", load_average());
    println!("worst warm p50 of the dashboard's routes (30 days and today): {:.1} ms (goal 200 ms)", ms(worst_p50));
    server.abort();
    drop(state);
    if let Some(s) = scratch {
        s.drop_database().await;
    }
    Ok(())
}

/// The routes the dashboard calls, and whether each counts towards the goal (the default 30 days
/// and the day charts do; the year-long ones are reported beside them).
fn routes(today: &str, week_ago: &str, year_ago: &str) -> Vec<(String, bool)> {
    let s = "/v1/merchant/analytics/sales";
    vec![
        (format!("{s}?group_by=hour&from={today}&to={today}"), true),
        (format!("{s}?group_by=hour&from={week_ago}&to={week_ago}"), true),
        (format!("{s}?group_by=day"), true),
        (format!("{s}?group_by=weekday_hour"), true),
        (format!("{s}?group_by=store"), true),
        (format!("{s}?group_by=category"), true),
        (format!("{s}?group_by=sku"), true),
        ("/v1/merchant/analytics/customers".to_string(), true),
        ("/v1/merchant/analytics/baskets".to_string(), true),
        ("/v1/merchant/payments".to_string(), true),
        (format!("{s}?group_by=day&from={year_ago}&to={today}"), false),
        (format!("/v1/merchant/analytics/customers?from={year_ago}&to={today}"), false),
    ]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The 1-, 5- and 15-minute load averages (the machine is shared), or why not.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A route's first request on an empty cache, and how long the days it asked about then took to
/// read in the background (a period longer than the cache reads before answering).
struct Cold {
    first: Duration,
    read_ahead: Option<Duration>,
}

/// The first (cold) request's time, then, once no days are being read ahead, `n` more, sorted.
async fn time_route(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    n: u64,
    db: &crate::store::Db,
) -> anyhow::Result<(Cold, Vec<Duration>)> {
    let auth = [("Authorization", format!("Bearer {token}"))];
    let deferred = crate::merchants::analytics_cache::stats(db).deferred;
    let t0 = Instant::now();
    let (status, body) = request(addr, "GET", path, None, &auth).await?;
    let first = t0.elapsed();
    anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    let mut read_ahead = None;
    if crate::merchants::analytics_cache::stats(db).deferred > deferred {
        while crate::merchants::analytics_cache::stats(db).filling > 0 && t0.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        read_ahead = Some(t0.elapsed());
    }
    let cold = Cold { first, read_ahead };
    let mut latencies = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t0 = Instant::now();
        let (status, _) = request(addr, "GET", path, None, &auth).await?;
        latencies.push(t0.elapsed());
        anyhow::ensure!(status == 200, "{path} answered {status}");
    }
    latencies.sort();
    Ok((cold, latencies))
}

/// The sandbox owner's dashboard session (password and the current authenticator code).
async fn owner_session(addr: std::net::SocketAddr, doc: &serde_json::Value) -> anyhow::Result<String> {
    let owner = &doc["merchant_owner"];
    let seed = crate::identity::totp::base32_decode(owner["totp_secret"].as_str().unwrap_or_default())
        .ok_or_else(|| anyhow::anyhow!("sandbox.json has no owner's TOTP secret"))?;
    let code = crate::identity::totp::code_at_step(&seed, crate::identity::totp::current_step());
    let body =
        serde_json::json!({"email": owner["email"], "password": owner["password"], "totp_code": code}).to_string();
    let (status, answer) = request(addr, "POST", "/v1/merchant/login", Some(&body), &[]).await?;
    anyhow::ensure!(status == 200, "the owner could not log in: {status} {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    v["session_token"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no session_token"))
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub(super) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status =
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("no HTTP status"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A database of its own on the PostgreSQL server of `admin_url`, dropped afterwards.
pub(super) struct ScratchPg {
    admin: String,
    name: String,
    pub(super) url: String,
}

impl ScratchPg {
    pub(super) async fn create(admin: &str) -> anyhow::Result<ScratchPg> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!("omamori_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let _ = conn.close().await;
        let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = format!("{server}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        Ok(ScratchPg { admin: admin.to_string(), name, url })
    }

    pub(super) async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::AnyConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
}

/// What the seeded payments are made of.
struct World {
    merchant: MerchantId,
    stores: Vec<StoreId>,
    customers: Vec<UserId>,
    refs: Vec<String>,
    cat: Catalogue,
}

/// Seeds stores, customers and a year of payments, printing progress.
async fn seed(
    state: &AppState,
    merchant: &MerchantId,
    doc: &serde_json::Value,
    run: &AnalyticsRun,
) -> anyhow::Result<()> {
    let now = state.clock.now_ms();
    let mut rng = Rng(0x0A0A_2026);
    let mut stores = vec![StoreId::from_raw(doc["store_id"].as_str().unwrap_or_default())];
    for i in 1..run.stores {
        let name = format!("Bench Store {i}");
        let s = crate::merchants::NewStore { name: &name, city: "Tokyo", postal_code: None, category: None };
        stores.push(crate::merchants::create_store(&state.db, merchant, s, "bench", now).await?.0);
    }
    let key = state.config.keys.analytics.as_ref().ok_or_else(|| anyhow::anyhow!("no analytics key"))?;
    let customers = seed_customers(state, run.customers, now).await?;
    let refs: Vec<String> =
        customers.iter().map(|u| crate::merchants::analytics::customer_ref(key.bytes.expose(), merchant, u)).collect();
    eprintln!("bench analytics: {} stores and {} customers made; seeding payments", stores.len(), customers.len());
    let world = World { merchant: merchant.clone(), stores, customers, refs, cat: catalogue(run.items, &mut rng) };
    // Payments arrive in time order, so a month's rows are together on disk, as in service.
    let year_start = now - 365 * DAY_MS;
    let mut times: Vec<i64> = (0..run.payments).map(|_| moment(&mut rng, year_start, now)).collect();
    times.sort_unstable();
    let mut made = 0u64;
    while made < run.payments {
        let n = TX_ROWS.min(run.payments - made);
        let slice = &times[made as usize..(made + n) as usize];
        let batch: Vec<Seeded> = slice.iter().map(|&t| one_payment(&mut rng, &world, t)).collect();
        write_batch(state, &world, &batch).await?;
        made += n;
        if made.is_multiple_of(100_000) || made == run.payments {
            eprintln!("bench analytics: {made} of {} payments written", run.payments);
        }
    }
    Ok(())
}

/// Customers as the login bench makes shoppers: a wallet account and a user row each.
async fn seed_customers(state: &AppState, n: u64, now: i64) -> anyhow::Result<Vec<UserId>> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let mut users = Vec::with_capacity(n as usize);
    let mut tx = state.db.begin().await?;
    for i in 0..n {
        let user = UserId::from_raw(format!("usr_bench_{tag}_{i}"));
        let wallet =
            ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some(user.as_str()), now).await?;
        sqlx::query(
            "INSERT INTO users (id, phone, email, password_hash, wallet_account_id, credentials_changed_at, created_at) \
             VALUES ($1, $2, $3, 'bench', $4, $5, $5)",
        )
        .bind(&user)
        .bind(format!("+8170{i:08}"))
        .bind(format!("bench-{tag}-{i}@example.jp"))
        .bind(wallet.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        users.push(user);
    }
    tx.commit().await?;
    Ok(users)
}

/// One seeded payment: who, where, when, its basket lines (item index, quantity) and refund.
struct Seeded {
    id: PaymentId,
    store: usize,
    customer: usize,
    created_at: i64,
    lines: Vec<(usize, i64)>,
    amount: i64,
    /// The first line returned in full, for 1 % of payments.
    refund: Option<i64>,
}

/// A moment of the last 365 days, at a busy hour more often than at a quiet one.
fn moment(rng: &mut Rng, year_start: i64, now: i64) -> i64 {
    let total: u32 = HOUR_WEIGHTS.iter().sum();
    let pick = (rng.next() % u64::from(total)) as u32;
    let mut acc = 0;
    let hour = HOUR_WEIGHTS.iter().position(|&wt| {
        acc += wt;
        pick < acc
    });
    let hour = hour.unwrap_or(12) as i64;
    let day = (rng.next() % 365) as i64;
    // Midnight in Tokyo of the day, then the hour and a moment within it.
    let first_midnight = (year_start + 9 * 3_600_000).div_euclid(DAY_MS) * DAY_MS - 9 * 3_600_000 + DAY_MS;
    (first_midnight + day * DAY_MS + hour * 3_600_000 + (rng.next() % 3_600_000) as i64).min(now - 1)
}

fn one_payment(rng: &mut Rng, w: &World, created_at: i64) -> Seeded {
    let n_lines = 1 + rng.skewed(5, 1.6) as usize;
    let mut lines: Vec<(usize, i64)> = Vec::with_capacity(n_lines);
    while lines.len() < n_lines {
        let item = rng.skewed(w.cat.skus.len() as u64, 2.5) as usize;
        if lines.iter().all(|(s, _)| *s != item) {
            lines.push((item, if rng.next().is_multiple_of(5) { 2 } else { 1 }));
        }
    }
    let amount = lines.iter().map(|(s, q)| w.cat.prices[*s] * q).sum();
    let refund = rng.next().is_multiple_of(100).then(|| w.cat.prices[lines[0].0] * lines[0].1);
    Seeded {
        id: PaymentId::generate(),
        store: (rng.next() % w.stores.len() as u64) as usize,
        customer: rng.skewed(w.customers.len() as u64, 1.8) as usize,
        created_at,
        lines,
        amount,
        refund,
    }
}

/// `($1, $2, ...), (...)` for `rows` rows of `cols` values, with `tail` appended inside each row.
fn values(rows: usize, cols: usize, tail: &str) -> String {
    let mut out = String::new();
    for r in 0..rows {
        let marks: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
        out.push_str(&format!("{}({}{tail})", if r > 0 { ", " } else { "" }, marks.join(", ")));
    }
    out
}

/// Writes payments, their lines and refunds in one transaction, in multi-row statements.
async fn write_batch(state: &AppState, w: &World, batch: &[Seeded]) -> anyhow::Result<()> {
    let mut tx = state.db.begin().await?;
    for chunk in batch.chunks(BATCH) {
        let sql = payments_sql(chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(p.id.as_str())
                .bind(w.customers[p.customer].as_str())
                .bind(w.merchant.as_str())
                .bind(w.stores[p.store].as_str())
                .bind(p.amount)
                .bind(p.refund.unwrap_or(0))
                .bind(p.created_at)
                .bind(w.refs[p.customer].as_str());
        }
        q.execute(&mut *tx).await?;
    }
    let lines: Vec<(&Seeded, usize, (usize, i64))> =
        batch.iter().flat_map(|p| p.lines.iter().enumerate().map(move |(i, l)| (p, i, *l))).collect();
    for chunk in lines.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO payment_items (payment_id, line_no, sku, name, category, quantity, unit_amount, currency) VALUES {}",
            values(chunk.len(), 7, ", 'JPY'")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (p, i, (item, qty)) in chunk {
            q = q
                .bind(p.id.as_str())
                .bind(*i as i64 + 1)
                .bind(w.cat.skus[*item].as_str())
                .bind(w.cat.names[*item].as_str())
                .bind(w.cat.categories[*item].as_str())
                .bind(*qty)
                .bind(w.cat.prices[*item]);
        }
        q.execute(&mut *tx).await?;
    }
    write_refunds(&mut tx, w, batch).await?;
    tx.commit().await?;
    Ok(())
}

/// `INSERT INTO payments ...` of `rows` rows: 8 bound values each, the constants written in.
fn payments_sql(rows: usize) -> String {
    let mut out = String::from(
        "INSERT INTO payments (id, user_id, merchant_id, store_id, amount, refunded, created_at, customer_ref, \
         source, currency, status) VALUES ",
    );
    out.push_str(&values(rows, 8, ", 'code', 'JPY', 'succeeded'"));
    out
}

/// The refunds of a batch: a refund row and its returned item each.
async fn write_refunds(tx: &mut crate::store::Conn, w: &World, batch: &[Seeded]) -> anyhow::Result<()> {
    for p in batch {
        let Some(amount) = p.refund else { continue };
        let id = RefundId::generate();
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, amount, currency, created_at) VALUES ($1, $2, $3, 'JPY', $4)",
        )
        .bind(&id)
        .bind(&p.id)
        .bind(amount)
        .bind(p.created_at + 600_000)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refund_items (refund_id, payment_id, sku, quantity) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(&p.id)
            .bind(w.cat.skus[p.lines[0].0].as_str())
            .bind(p.lines[0].1)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
