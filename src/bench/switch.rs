//! `omamori bench switch`: how fast a kill switch reaches every instance (issue 14, "many
//! instances"). Several servers run on one PostgreSQL database, each paying POS charges all the
//! while; an operator engages a `payments` switch on the demo merchant through the first, and each
//! other instance is asked for a payment every few milliseconds until it refuses one. The time
//! from the engaging answer to the first refused request, over every other instance, is one trial;
//! the switch is then released (one operator asks, a second confirms) and the same is timed until
//! payments go through again.
//!
//! The instances run in this one process, each with its own pool, caches and generation poller,
//! exactly as separate `omamori serve` processes would (they share only the database).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::analytics::{ScratchPg, request};

/// What `bench switch` runs.
pub struct SwitchRun {
    /// A PostgreSQL server (the bench makes a scratch database there and drops it).
    pub database_url: String,
    pub instances: u64,
    pub trials: u64,
}

/// How often a probing instance is asked for a payment, and the background payments' pace.
const PROBE_EVERY: Duration = Duration::from_millis(5);
const BACKGROUND_EVERY: Duration = Duration::from_millis(20);
/// The longest a trial waits for an instance before calling it a failure.
const GIVE_UP: Duration = Duration::from_secs(5);

/// The shared supply of one-time payment codes (each is used once, by a probe or a background payment).
struct Codes {
    key: String,
    tag: String,
    codes: Vec<String>,
    next: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Paid,
    Refused,
    Other(u16),
}

impl Codes {
    /// Asks `addr` for a ¥100 payment with the next code.
    async fn pay(&self, addr: std::net::SocketAddr) -> anyhow::Result<Answer> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let code = self.codes.get(i as usize).ok_or_else(|| anyhow::anyhow!("the bench ran out of payment codes"))?;
        let body = format!(r#"{{"code":"{code}","amount":100}}"#);
        let headers = [
            ("Authorization", format!("Bearer {}", self.key)),
            ("Idempotency-Key", format!("switch-{}-{i}", self.tag)),
        ];
        let (status, answer) = request(addr, "POST", "/v1/pos/payments", Some(&body), &headers).await?;
        Ok(match status {
            201 => Answer::Paid,
            403 if answer.contains("\"switch_engaged\"") => Answer::Refused,
            s => Answer::Other(s),
        })
    }
}

pub async fn switch(mut config: crate::config::Config, run: SwitchRun) -> anyhow::Result<()> {
    anyhow::ensure!(
        run.database_url.starts_with("postgres://") || run.database_url.starts_with("postgresql://"),
        "bench switch needs --database-url of a PostgreSQL server: instances share a switch through it"
    );
    anyhow::ensure!(run.instances >= 2 && run.trials >= 1, "need 2 or more instances and 1 or more trials");
    let scratch = ScratchPg::create(&run.database_url).await?;
    let result = measure(&mut config, &scratch.url, &run).await;
    scratch.drop_database().await;
    result
}

async fn measure(config: &mut crate::config::Config, url: &str, run: &SwitchRun) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("omamori-bench-{}", uuid::Uuid::new_v4()));
    let _tmp = super::TempDir(dir.clone());
    config.data_dir = dir.clone();
    config.database_url = Some(url.to_string());
    config.listen = "127.0.0.1:0".parse()?;
    config.environment = crate::config::Environment::Development;
    config.database_max_connections = 8;
    // Alike, as instances of one deployment are (sandbox mode, for its demo merchant and operators;
    // each start prepares them again, so sandbox.json is read after the last).
    config.sandbox = true;
    let mut apps = Vec::new();
    for _ in 0..run.instances {
        apps.push(crate::app::Application::build(config.clone()).await?);
    }
    let addrs: Vec<_> = apps.iter().map(|a| a.local_addr()).collect();
    let state = apps[0].state().clone();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let servers = Servers(apps.into_iter().map(|a| tokio::spawn(a.run_until(std::future::pending()))).collect());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    // Enough codes for the background payments and the probes of every trial (about 1.5 s each).
    let per_trial = run.instances * 1500 / BACKGROUND_EVERY.as_millis() as u64
        + (run.instances - 1) * 1500 / PROBE_EVERY.as_millis() as u64;
    let shoppers = super::seed_shoppers(&state, &tag, per_trial * run.trials + 200).await?;
    let codes = Arc::new(Codes {
        key: doc["terminal_key"].as_str().unwrap_or_default().to_string(),
        tag,
        codes: super::fresh_codes(&state, &shoppers).await?,
        next: AtomicU64::new(0),
    });
    // A release takes two operators: one asks, another confirms.
    let operators = [operator_session(addrs[0], &doc, 0).await?, operator_session(addrs[0], &doc, 1).await?];
    let merchant = doc["merchant_id"].as_str().unwrap_or_default().to_string();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background: Vec<_> =
        addrs.iter().map(|&a| tokio::spawn(pay_meanwhile(codes.clone(), a, stop.clone()))).collect();
    let started = Instant::now();
    let (mut engaged, mut released, mut at_once) = (Vec::new(), Vec::new(), 0);
    for _ in 0..run.trials {
        let id = engage(addrs[0], &operators[0], &merchant).await?;
        let t = Instant::now();
        if codes.pay(addrs[0]).await? == Answer::Refused {
            at_once += 1;
        }
        engaged.push(reach(&codes, &addrs[1..], t, Answer::Refused).await?);
        release(addrs[0], &operators, &id).await?;
        let t = Instant::now();
        released.push(reach(&codes, &addrs[1..], t, Answer::Paid).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut meanwhile = [0u64; 3];
    for b in background {
        for (total, n) in meanwhile.iter_mut().zip(b.await??) {
            *total += n;
        }
    }
    let elapsed = started.elapsed();
    drop(servers);
    let problems = crate::ledger::verify(&state.db).await?;
    println!("omamori bench switch: PostgreSQL backend, {} instances on one database", run.instances);
    println!("machine: {}", super::machine());
    println!(
        "payments meanwhile on every instance: {} answered 201, {} refused by the switch, {} other answers, in {:.1} s",
        meanwhile[0],
        meanwhile[1],
        meanwhile[2],
        elapsed.as_secs_f64()
    );
    println!(
        "switch engaged through instance 1: its next payment refused at once in {at_once} of {} trials",
        run.trials
    );
    println!(
        "engaged: first payment refused on every other instance after {} ({} trials; goal p99 <= 1000 ms)",
        summary(engaged),
        run.trials
    );
    println!("released: first payment accepted on every other instance after {}", summary(released));
    println!(
        "ledger verify after the run: {}",
        if problems.is_empty() { "clean".to_string() } else { format!("{} problem(s)", problems.len()) }
    );
    anyhow::ensure!(problems.is_empty(), "the ledger did not verify after the benchmark");
    anyhow::ensure!(at_once == run.trials, "the engaging instance did not refuse its next payment every time");
    Ok(())
}

/// The running instances, stopped when dropped (also when the bench fails half-way, before its
/// scratch database is dropped).
struct Servers(Vec<tokio::task::JoinHandle<anyhow::Result<()>>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &self.0 {
            s.abort();
        }
    }
}

/// A payment every [`BACKGROUND_EVERY`] at `addr` until `stop`: how many were paid, refused by the
/// switch, or answered otherwise.
async fn pay_meanwhile(
    codes: Arc<Codes>,
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<[u64; 3]> {
    let mut counts = [0u64; 3];
    let mut tick = tokio::time::interval(BACKGROUND_EVERY);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let i = match codes.pay(addr).await? {
            Answer::Paid => 0,
            Answer::Refused => 1,
            Answer::Other(_) => 2,
        };
        counts[i] += 1;
    }
    Ok(counts)
}

/// How long after `since` every instance of `addrs` first answered `wanted` (each probed every
/// [`PROBE_EVERY`], one request at a time; the time counted is when that request was sent).
async fn reach(
    codes: &Arc<Codes>,
    addrs: &[std::net::SocketAddr],
    since: Instant,
    wanted: Answer,
) -> anyhow::Result<Duration> {
    let mut tasks = Vec::new();
    for &addr in addrs {
        let codes = codes.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let sent = Instant::now();
                anyhow::ensure!(
                    sent - since < GIVE_UP,
                    "instance {addr} did not follow the switch within {GIVE_UP:?} (wanted {wanted:?}, its last answer {last:?})"
                );
                let answer = codes.pay(addr).await?;
                if answer == wanted {
                    return Ok(sent - since);
                }
                last = Some(answer);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await??);
    }
    Ok(slowest)
}

/// A sandbox operator, logged in with password and the current authenticator code.
async fn operator_session(addr: std::net::SocketAddr, doc: &serde_json::Value, index: usize) -> anyhow::Result<String> {
    let op = &doc["operators"][index];
    let seed = crate::identity::totp::base32_decode(op["totp_secret"].as_str().unwrap_or_default())
        .ok_or_else(|| anyhow::anyhow!("sandbox.json has no operator's TOTP secret"))?;
    let body = serde_json::json!({"email": op["email"], "password": op["password"]}).to_string();
    let (status, answer) = request(addr, "POST", "/v1/admin/login", Some(&body), &[]).await?;
    anyhow::ensure!(status == 200, "the operator could not log in: {status} {answer}");
    let challenge: serde_json::Value = serde_json::from_str(&answer)?;
    let id = challenge["challenge_id"].as_str().unwrap_or_default();
    let code = crate::identity::totp::code_at_step(&seed, crate::identity::totp::current_step());
    let body = serde_json::json!({"method": "totp", "code": code}).to_string();
    let (status, answer) = request(addr, "POST", &format!("/v1/challenges/{id}/verify"), Some(&body), &[]).await?;
    anyhow::ensure!(status == 200, "the operator's code was refused: {status} {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    v["session_token"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no session_token"))
}

async fn engage(addr: std::net::SocketAddr, token: &str, merchant: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({"name": "payments", "scope": {"kind": "merchant", "id": merchant},
        "reason": "bench switch: how fast every instance stops"})
    .to_string();
    let auth = [("Authorization", format!("Bearer {token}"))];
    let (status, answer) = request(addr, "POST", "/v1/admin/switches", Some(&body), &auth).await?;
    anyhow::ensure!(status == 201, "the switch could not be engaged: {status} {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no switch id"))
}

/// Asks for the release as one operator and confirms it as the other; answers when it is released.
async fn release(addr: std::net::SocketAddr, operators: &[String; 2], id: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"reason": "bench switch: released"}).to_string();
    for (token, done) in [(&operators[0], false), (&operators[1], true)] {
        let auth = [("Authorization", format!("Bearer {token}"))];
        let (status, answer) =
            request(addr, "POST", &format!("/v1/admin/switches/{id}/release"), Some(&body), &auth).await?;
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        anyhow::ensure!(
            status == 202 && v["released"] == done,
            "the switch's release was not {}: {status} {answer}",
            if done { "confirmed" } else { "asked for" }
        );
    }
    Ok(())
}

/// "p50 … ms, p99 … ms, max … ms".
fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| ms(d[((d.len() as f64 - 1.0) * p).round() as usize]);
    format!("p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", pct(0.5), pct(0.99), pct(1.0))
}
