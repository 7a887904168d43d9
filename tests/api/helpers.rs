//! The test harness: a real `omamori` server on a free port against a fresh database.
//!
//! Every black-box test runs twice through [`both_backends!`]: on SQLite, and on PostgreSQL
//! when `OMAMORI_TEST_POSTGRES_URL` is set (a fresh database per test, dropped afterwards). Without
//! that variable the PostgreSQL half prints why it is skipped, except under `CI=true`, where a
//! missing PostgreSQL fails the test.

use std::path::PathBuf;

use omamori::app::{AppState, Application};
use omamori::config::Config;
use omamori::store::Db;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::helpers::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.unwrap()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                        run(app).await
                    }
                }
            }
        )*
    };
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("OMAMORI_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but OMAMORI_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI");
            }
            eprintln!("skipping the PostgreSQL half of this test: OMAMORI_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A temporary folder removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("omamori-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty database for one test: a SQLite file in a temporary folder, or a new
/// PostgreSQL database dropped when this value is dropped.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    pg: Option<(String, String)>, // (admin url, database name)
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &TempDir) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => Some(TestDatabase {
                url: format!("sqlite://{}", dir.0.join("omamori.db").display()),
                backend,
                pg: None,
            }),
            Backend::Postgres => {
                let admin = postgres_url()?;
                sqlx::any::install_default_drivers();
                let name = format!("omamori_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn =
                    sqlx::AnyConnection::connect(&admin).await.expect("connect to OMAMORI_TEST_POSTGRES_URL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create a test database");
                let _ = conn.close().await;
                let url = with_database(&admin, &name);
                Some(TestDatabase { url, backend, pg: Some((admin, name)) })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside async code: use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                        let _ =
                            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub backend: Backend,
    pub database_url: String,
    /// `http://ADDR` of the `/metrics` listener, when `metrics_listen` is configured.
    pub metrics_base: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the database and its folder outlive the server.
    _database: TestDatabase,
    pub data_dir: TempDir,
}

impl TestApp {
    /// A sandbox-mode server on a fresh database, or `None` when that backend is not available.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let data_dir = TempDir::new();
        let database = TestDatabase::create(backend, &data_dir).await?;
        Some(Self::start(database, data_dir, adjust).await)
    }

    /// A second server on the same database as `self` (as a second instance behind a balancer).
    pub async fn another_instance(&self) -> TestApp {
        let data_dir = TempDir::new();
        let database = TestDatabase { url: self.database_url.clone(), backend: self.backend, pg: None };
        // Instances of one deployment share their keys as they share the database.
        let keys = self.state.config.keys.clone();
        Self::start(database, data_dir, move |c| c.keys = keys).await
    }

    /// As [`TestApp::another_instance`], with its configuration adjusted after the shared keys are
    /// set (a key rotation, say).
    pub async fn another_instance_with(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let data_dir = TempDir::new();
        let database = TestDatabase { url: self.database_url.clone(), backend: self.backend, pg: None };
        let keys = self.state.config.keys.clone();
        Self::start(database, data_dir, move |c| {
            c.keys = keys;
            adjust(c)
        })
        .await
    }

    /// Tells the server to stop without waiting for it (it drains first).
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    async fn start(database: TestDatabase, data_dir: TempDir, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: Some(database.url.clone()),
            data_dir: data_dir.0.clone(),
            sandbox: true,
            database_max_connections: 8,
            // Tests speak through 127.0.0.1 as a trusted proxy, naming the client in
            // X-Forwarded-For; the range file maps documentation addresses to countries.
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            geoip: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geoip-test.csv"))),
            // Tests make many logins from one address; throttle tests set their own limits.
            password_hash_concurrency: 2,
            ..Config::default()
        };
        adjust(&mut config);
        let app = Application::build(config).await.expect("the server starts");
        let addr = app.local_addr();
        let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            state,
            backend: database.backend,
            database_url: database.url.clone(),
            metrics_base,
            shutdown: Some(tx),
            server: Some(server),
            _database: database,
            data_dir,
        }
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits until in-flight requests have finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.client.get(self.url(path)).send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> Reply {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    // One method per API call.

    pub async fn create_account(&self, kind: &str, owner: Option<&str>) -> i64 {
        let r = self.post("/v1/sandbox/accounts", &json!({"kind": kind, "owner": owner}), None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["account_id"].as_i64().unwrap()
    }

    pub async fn balance(&self, account: i64) -> i64 {
        let r = self.get(&format!("/v1/sandbox/accounts/{account}")).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["balance"].as_i64().unwrap()
    }

    pub async fn transfer(&self, from: i64, to: i64, amount: i64, key: &str) -> Reply {
        self.post(
            "/v1/sandbox/transfers",
            &json!({"from_account": from, "to_account": to, "amount": amount}),
            Some(key),
        )
        .await
    }

    /// A wallet funded with `amount` from a fresh funding account.
    pub async fn funded_wallet(&self, amount: i64, owner: Option<&str>) -> i64 {
        let funding = self.create_account("funding_clearing", None).await;
        let wallet = self.create_account("wallet", owner).await;
        let r = self.transfer(funding, wallet, amount, &uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        wallet
    }

    pub async fn advance_clock(&self, seconds: i64) -> Reply {
        self.post("/v1/sandbox/clock", &json!({"advance_seconds": seconds}), None).await
    }

    pub async fn messages(&self, to: &str) -> Vec<Value> {
        let r = self.client.get(self.url("/v1/sandbox/messages")).query(&[("to", to)]).send().await.unwrap();
        let r = Reply::from(r).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["items"].as_array().unwrap().clone()
    }

    /// Runs `omamori` as a separate process against this app's database.
    pub fn omamori(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_omamori"))
            .args(args)
            .env_clear()
            .env("OMAMORI_DATABASE_URL", &self.database_url)
            .env("OMAMORI_DATA_DIR", &self.data_dir.0)
            .env("OMAMORI_LOG_LEVEL", "warn")
            .output()
            .expect("run omamori")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(
            self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string(),
            "{self:?}"
        );
    }
}

/// A shopper as the tests drive one: contacts, password, and (once logged in) tokens.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub user_id: String,
    pub phone: String,
    pub email: String,
    pub password: String,
    pub device_id: String,
    pub ip: String,
    pub session: Option<String>,
    pub device_token: Option<String>,
}

/// A Japanese documentation address (tests/data/geoip-test.csv) for the n-th client.
pub fn jp_ip(n: u32) -> String {
    format!("2001:db8:{:x}::{:x}", n % 0x7fff, 1 + n / 0x7fff)
}

/// Where the tests' operators sit (a JP documentation address no attack test uses).
pub const OPERATOR_IP: &str = "203.0.113.200";

/// A US documentation address.
pub const US_IP: &str = "198.51.100.7";

/// A strong password nobody else uses.
pub fn strong_password() -> String {
    format!("Kq7#vL{}-mZ!", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

static PHONE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh Japanese mobile number.
pub fn new_phone() -> String {
    let n = PHONE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r: u32 = rand::random_range(0..100_000);
    format!("+8190{:03}{:05}", n % 1000, r)
}

impl TestApp {
    /// A request from client address `ip` (through the trusted test proxy).
    pub fn from(&self, method: reqwest::Method, path: &str, ip: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).header("X-Forwarded-For", ip)
    }

    pub async fn post_from(&self, path: &str, body: &Value, ip: &str) -> Reply {
        Reply::from(self.from(reqwest::Method::POST, path, ip).json(body).send().await.unwrap()).await
    }

    /// A request with a session token.
    pub async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        ip: &str,
    ) -> Reply {
        let mut req = self.from(method, path, ip).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// The code of the newest message of `kind` sent to `to`.
    pub async fn code_for(&self, to: &str, kind: &str) -> String {
        let messages = self.messages(to).await;
        let m = messages
            .iter()
            .find(|m| m["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} message to {to}: {messages:?}"));
        m["code"].as_str().unwrap().to_string()
    }

    pub async fn signup(&self, phone: &str, email: &str, password: &str, ip: &str) -> Reply {
        self.post_from("/v1/signup", &json!({"phone": phone, "email": email, "password": password}), ip).await
    }

    /// Signs a new shopper up (both codes verified).
    pub async fn register(&self) -> Shopper {
        let phone = new_phone();
        let email = format!("shopper-{}@example.jp", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let password = strong_password();
        let ip = jp_ip(rand::random_range(1..30_000));
        let r = self.signup(&phone, &email, &password, &ip).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        let signup_id = r.body["signup_id"].as_str().unwrap().to_string();
        let phone_code = self.code_for(&phone, "signup_code").await;
        let email_code = self.code_for(&email, "signup_code").await;
        let r = self
            .post_from(
                &format!("/v1/signup/{signup_id}/verify"),
                &json!({"phone_code": phone_code, "email_code": email_code}),
                &ip,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        Shopper {
            user_id: r.body["user_id"].as_str().unwrap().to_string(),
            phone,
            email,
            password,
            device_id: format!("phone-{}", uuid::Uuid::new_v4().simple()),
            ip,
            session: None,
            device_token: None,
        }
    }

    pub async fn login(
        &self,
        login: &str,
        password: &str,
        device_id: &str,
        device_token: Option<&str>,
        ip: &str,
    ) -> Reply {
        let mut body = json!({"login": login, "password": password, "device_id": device_id});
        if let Some(t) = device_token {
            body["device_token"] = json!(t);
        }
        self.post_from("/v1/login", &body, ip).await
    }

    pub async fn send_code(&self, challenge_id: &str, ip: &str) -> Reply {
        self.post_from(&format!("/v1/challenges/{challenge_id}/send"), &json!({"method": "sms"}), ip).await
    }

    pub async fn verify(&self, challenge_id: &str, method: &str, code: &str, ip: &str) -> Reply {
        self.post_from(&format!("/v1/challenges/{challenge_id}/verify"), &json!({"method": method, "code": code}), ip)
            .await
    }

    /// Answers a challenge with the SMS code sent to `phone`.
    pub async fn pass_sms_challenge(&self, challenge_id: &str, phone: &str, ip: &str) -> Reply {
        let r = self.send_code(challenge_id, ip).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        let code = self.code_for(phone, "challenge_code").await;
        self.verify(challenge_id, "sms", &code, ip).await
    }

    /// A full two-step login by SMS; keeps the session and device tokens on `s`.
    pub async fn log_in(&self, s: &mut Shopper) {
        let r = self.login(&s.phone, &s.password, &s.device_id, None, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(r.body["session_token"].is_null(), "a password alone opened a session: {r:?}");
        let r = self.pass_sms_challenge(r.body["challenge_id"].as_str().unwrap(), &s.phone, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        s.session = Some(r.body["session_token"].as_str().unwrap().to_string());
        s.device_token = Some(r.body["device_token"].as_str().unwrap().to_string());
    }

    pub async fn me(&self, token: &str, ip: &str) -> Reply {
        self.authed(reqwest::Method::GET, "/v1/me", token, None, ip).await
    }

    /// Logs in as a sandbox operator (password, then TOTP computed from the secret).
    pub async fn operator_session(&self, index: usize) -> String {
        self.operator_session_from(index, OPERATOR_IP).await
    }

    /// Logs in as a sandbox operator from the address `ip`.
    pub async fn operator_session_from(&self, index: usize, ip: &str) -> String {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(self.data_dir.0.join("sandbox.json")).unwrap()).unwrap();
        let op = &doc["operators"][index];
        let seed = omamori::identity::totp::base32_decode(op["totp_secret"].as_str().unwrap()).unwrap();
        // A TOTP code is accepted once: a second login in the same 30 s uses the next step's code
        // (one step of drift is allowed).
        let now = omamori::identity::totp::current_step();
        for step in [now, now + 1] {
            let r =
                self.post_from("/v1/admin/login", &json!({"email": op["email"], "password": op["password"]}), ip).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            assert_eq!(r.body["methods"], json!(["totp"]));
            let code = omamori::identity::totp::code_at_step(&seed, step);
            let r = self.verify(r.body["challenge_id"].as_str().unwrap(), "totp", &code, ip).await;
            if r.status == StatusCode::OK {
                return r.body["session_token"].as_str().unwrap().to_string();
            }
        }
        panic!("the sandbox operator could not log in")
    }

    pub async fn alerts(&self) -> Vec<Value> {
        let token = self.operator_session(0).await;
        let r = self.authed(reqwest::Method::GET, "/v1/admin/alerts", &token, None, OPERATOR_IP).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["items"].as_array().unwrap().clone()
    }
}

impl TestApp {
    pub fn sandbox_doc(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.data_dir.0.join("sandbox.json")).unwrap()).unwrap()
    }

    /// A request from a POS terminal.
    pub async fn pos(
        &self,
        method: reqwest::Method,
        path: &str,
        terminal_key: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(terminal_key);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// A shopper request with an idempotency key.
    pub async fn money(&self, path: &str, s: &Shopper, body: &Value, key: &str) -> Reply {
        let req = self
            .from(reqwest::Method::POST, path, &s.ip)
            .bearer_auth(s.session.as_ref().unwrap())
            .header("Idempotency-Key", key)
            .json(body);
        Reply::from(req.send().await.unwrap()).await
    }

    /// Links a sandbox card (a fresh Luhn-valid 4242... number unless given).
    pub async fn link_card(&self, s: &Shopper, number: &str) -> Reply {
        let body = json!({"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"});
        self.authed(reqwest::Method::POST, "/v1/cards", s.session.as_ref().unwrap(), Some(&body), &s.ip).await
    }

    /// A logged-in shopper with a linked card and `amount` topped up.
    pub async fn funded_shopper(&self, amount: i64) -> (Shopper, String) {
        let mut s = self.register().await;
        self.log_in(&mut s).await;
        let r = self.link_card(&s, &test_card()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let card = r.body["card_id"].as_str().unwrap().to_string();
        if amount > 0 {
            let r = self
                .money("/v1/topups", &s, &json!({"card_id": card, "amount": amount}), &uuid::Uuid::new_v4().to_string())
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        }
        (s, card)
    }

    pub async fn wallet(&self, s: &Shopper) -> Value {
        let r = self.authed(reqwest::Method::GET, "/v1/wallet", s.session.as_ref().unwrap(), None, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }

    pub async fn payment_code(&self, s: &Shopper) -> String {
        let r = self.authed(reqwest::Method::POST, "/v1/payment-codes", s.session.as_ref().unwrap(), None, &s.ip).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["code"].as_str().unwrap().to_string()
    }
}

/// A fresh Luhn-valid sandbox card number starting 424242 (each succeeds and is distinct).
pub fn test_card() -> String {
    let mut digits: Vec<u32> = "424242".chars().map(|c| c.to_digit(10).unwrap()).collect();
    for _ in 0..9 {
        digits.push(rand::random_range(0..10));
    }
    // The check digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { *d })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect()
}

/// Every `.rs` file under `src/`, by its path from the crate root (`src/...`, with `/`), with its
/// text: what the tests of the code's shape read.
pub fn source_files() -> std::collections::BTreeMap<String, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = std::collections::BTreeMap::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let rel = path.strip_prefix(root).expect("under the manifest dir").to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
                sources.insert(rel, text);
            }
        }
    }
    assert!(!sources.is_empty(), "no .rs files under {}", root.join("src").display());
    sources
}
