//! The Stripe processor against localstripe (PyPI `localstripe`: a stateful fake Stripe that no
//! one here wrote), one localstripe per test on a free port. The tests play Stripe.js where the
//! wallet would (creating the PaymentMethod, completing 3-D Secure) and drive Omamori as the
//! wallet does. Without localstripe a test says why and passes, except under `CI=true`, where
//! `.ci/run` installs it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use omamori::config::ProcessorKind;
use omamori::secret::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const SECRET_KEY: &str = "sk_test_omamori_localstripe";
const PUBLISHABLE_KEY: &str = "pk_test_omamori_localstripe";
const WEBHOOK_SECRET: &str = "whsec_omamori_localstripe_test";

/// Why localstripe cannot run here, if it cannot.
fn missing_localstripe() -> Option<String> {
    let found = Command::new("python3").args(["-c", "import localstripe"]).output();
    if found.is_ok_and(|o| o.status.success()) {
        None
    } else {
        Some("localstripe is missing (pip install localstripe)".into())
    }
}

/// A localstripe server of this test's own, stopped when dropped.
pub struct Localstripe {
    pub base: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Localstripe {
    async fn start() -> Option<Localstripe> {
        if let Some(why) = missing_localstripe() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but the Stripe tests cannot run: {why}");
            }
            eprintln!("skipping the Stripe test: {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "localstripe", "--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m localstripe starts");
        let ls = Localstripe {
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let started = Instant::now();
        while ls.http.get(format!("{}/js.stripe.com/v3/", ls.base)).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "localstripe did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(ls)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A call to localstripe's API with the secret key.
    async fn api(&self, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
        let mut r = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(SECRET_KEY);
        if method == Method::POST {
            r = r.form(form);
        }
        r.send().await.unwrap().json().await.unwrap()
    }

    /// What Stripe.js does with the card form: a PaymentMethod, whose id the wallet sends.
    async fn payment_method(&self, number: &str) -> String {
        let form = [
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2031"),
            ("card[cvc]", "123"),
        ];
        let pm = self.api(Method::POST, "/v1/payment_methods", &form).await;
        pm["id"].as_str().unwrap_or_else(|| panic!("no payment method: {pm}")).to_string()
    }

    /// What Stripe.js does when the shopper passes the issuer's 3-D Secure page.
    async fn complete_3ds(&self, client_secret: &str) {
        let seti = client_secret.split("_secret_").next().unwrap();
        let body = json!({"key": PUBLISHABLE_KEY, "use_stripe_sdk": true, "client_secret": client_secret});
        let r =
            self.http.post(format!("{}/v1/setup_intents/{seti}/confirm", self.base)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    /// What Stripe.js does when the shopper passes the issuer's 3-D Secure for a payment.
    async fn authenticate_payment(&self, client_secret: &str) {
        let pi = client_secret.split("_secret_").next().unwrap();
        let body = json!({"key": PUBLISHABLE_KEY, "client_secret": client_secret});
        let url = format!("{}/v1/payment_intents/{pi}/_authenticate?success=true", self.base);
        let r = self.http.post(url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    /// Every charge localstripe made for `intent`.
    async fn charges_of(&self, intent: &str) -> Vec<Value> {
        let list = self.api(Method::GET, "/v1/charges", &[]).await;
        let items = list["data"].as_array().cloned().unwrap_or_default();
        items.into_iter().filter(|c| c["payment_intent"] == intent).collect()
    }
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Omamori in sandbox mode with the Stripe processor, and its localstripe.
pub struct StripeApp {
    pub app: TestApp,
    pub ls: Localstripe,
}

impl StripeApp {
    async fn spawn(backend: Backend) -> Option<StripeApp> {
        let ls = Localstripe::start().await?;
        let base = ls.base.clone();
        let app = TestApp::spawn_with(backend, move |c| stripe_config(c, &base)).await?;
        Some(StripeApp { app, ls })
    }

    /// A logged-in shopper (the login counts as a step-up).
    async fn shopper(&self) -> Shopper {
        let mut s = self.app.register().await;
        self.app.log_in(&mut s).await;
        s
    }

    async fn link(&self, s: &Shopper, number: &str) -> Reply {
        let token = self.ls.payment_method(number).await;
        let body = json!({"processor_token": token});
        self.app.authed(Method::POST, "/v1/cards", s.session.as_ref().unwrap(), Some(&body), &s.ip).await
    }

    async fn linked_card(&self, s: &Shopper) -> String {
        let r = self.link(s, "4242424242424242").await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body["card_id"].as_str().unwrap().to_string()
    }
}

fn stripe_config(c: &mut omamori::config::Config, base: &str) {
    c.processor = Some(ProcessorKind::Stripe);
    c.stripe.secret_key = Some(Secret::new(SECRET_KEY.into()));
    c.stripe.publishable_key = Some(PUBLISHABLE_KEY.into());
    c.stripe.api_base = base.to_string();
    c.stripe.js_url = format!("{base}/js.stripe.com/v3/");
    c.stripe.webhook_secret = Some(Secret::new(WEBHOOK_SECRET.into()));
    c.stripe.timeout_ms = 3_000;
}

/// Runs each test body once per backend, each with its own localstripe.
macro_rules! with_localstripe {
    ($(async fn $name:ident($s:ident: StripeApp) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($s: StripeApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(s) = StripeApp::spawn(Backend::Sqlite).await {
                        run(s).await
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if postgres_url().is_some() && let Some(s) = StripeApp::spawn(Backend::Postgres).await {
                        run(s).await
                    }
                }
            }
        )*
    };
}

/// A stand-in for the network between Omamori and Stripe: it passes requests on, and once told,
/// lets the next PaymentIntent confirmation through to localstripe (the card is charged) and then
/// answers nothing useful any more (502), as if Omamori had crashed before hearing the answer.
struct Crash {
    target: String,
    mode: AtomicU8,
    http: reqwest::Client,
}

const PASS: u8 = 0;
const CRASH_AFTER_CONFIRM: u8 = 1;
const DOWN: u8 = 2;

async fn crash_proxy(target: &str) -> (String, Arc<Crash>) {
    let crash = Arc::new(Crash {
        target: target.to_string(),
        mode: AtomicU8::new(PASS),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    });
    let router = axum::Router::new().fallback(forward).with_state(crash.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), crash)
}

async fn forward(
    axum::extract::State(crash): axum::extract::State<Arc<Crash>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crash.mode.load(Ordering::SeqCst) == DOWN {
        return (reqwest::StatusCode::BAD_GATEWAY, "{}").into_response();
    }
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/js.stripe.com/v3/" {
        return stripe_js(&crash).await;
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let mut out = crash.http.request(parts.method.clone(), format!("{}{path}", crash.target)).body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    if !parts.headers.contains_key("authorization") {
        // The browser's Stripe.js stand-in creates PaymentMethods, which localstripe lets only a
        // secret key do (the real Stripe takes the publishable key).
        out = out.bearer_auth(SECRET_KEY);
    }
    let answer = out.send().await.unwrap();
    let (status, headers) = (answer.status(), answer.headers().clone());
    let bytes = answer.bytes().await.unwrap().to_vec();
    let confirm = parts.uri.path().starts_with("/v1/payment_intents/") && parts.uri.path().ends_with("/confirm");
    if confirm && crash.mode.load(Ordering::SeqCst) == CRASH_AFTER_CONFIRM {
        crash.mode.store(DOWN, Ordering::SeqCst);
        return (reqwest::StatusCode::BAD_GATEWAY, "{}").into_response();
    }
    let mut response = (status, bytes).into_response();
    for (name, value) in &headers {
        if !["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// localstripe's Stripe.js stand-in with tests/browser/stripe-shim.js appended.
async fn stripe_js(crash: &Crash) -> axum::response::Response {
    use axum::response::IntoResponse;
    let original = crash.http.get(format!("{}/js.stripe.com/v3/", crash.target)).send().await.unwrap();
    let original = original.text().await.unwrap();
    let shim = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/stripe-shim.js")).unwrap();
    ([("content-type", "application/javascript")], format!("{original}\n{shim}")).into_response()
}

fn balance_of(wallet: &Value) -> i64 {
    wallet["balance"].as_i64().unwrap()
}

/// A Stripe event as Stripe sends it, signed at `t` with `secret`.
async fn send_event(app: &TestApp, body: &Value, secret: &str, t: i64) -> Reply {
    let text = body.to_string();
    let signature = omamori::notify::webhooks::sign(secret, t, &text);
    let r = app
        .client
        .post(app.url("/v1/processor/stripe/events"))
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(text);
    Reply::from(r.send().await.unwrap()).await
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

with_localstripe! {
    async fn a_card_links_through_stripe_and_belongs_to_one_wallet(s: StripeApp) {
        let shopper = s.shopper().await;
        let r = s.link(&shopper, "4242424242424242").await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!((r.body["status"].as_str(), r.body["brand"].as_str(), r.body["last4"].as_str()), (Some("active"), Some("visa"), Some("4242")));
        let token: String = sqlx::query_scalar("SELECT processor_token FROM cards WHERE id = $1")
            .bind(r.body["card_id"].as_str().unwrap()).fetch_one(s.app.db().pool()).await.unwrap();
        assert!(token.starts_with("cus_") && token.contains("/pm_"), "Omamori keeps Stripe's customer and card: {token}");
        // The card number itself is refused: with Stripe it goes to Stripe.js only.
        let raw = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"});
        let r = s.app.authed(Method::POST, "/v1/cards", shopper.session.as_ref().unwrap(), Some(&raw), &shopper.ip).await;
        r.assert_problem(422, "invalid_body");
        assert!(!r.text.contains("4242424242424242"));
        // The same card, through a new PaymentMethod, in another wallet: Stripe's fingerprint says
        // no, before the card is checked with its issuer again.
        let other = s.shopper().await;
        let setups = s.ls.api(Method::GET, "/v1/setup_intents", &[]).await["data"].as_array().unwrap().len();
        s.link(&other, "4242424242424242").await.assert_problem(422, "card_not_allowed");
        let after = s.ls.api(Method::GET, "/v1/setup_intents", &[]).await["data"].as_array().unwrap().len();
        assert_eq!(after, setups, "no SetupIntent for another wallet's card");
        // The demo shopper of sandbox mode got no card: no test card was taken from Stripe.
        let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards").fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(cards, 1);
    }

    async fn a_3d_secure_card_links_through_its_challenge(s: StripeApp) {
        let shopper = s.shopper().await;
        let r = s.link(&shopper, "4000002500003155").await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.body["status"], "pending_challenge");
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        let client_secret = r.body["client_secret"].as_str().expect("the client secret for Stripe.js").to_string();
        assert!(client_secret.starts_with("seti_"), "{client_secret}");
        let verify = json!({"method": "three_d_secure"});
        let path = format!("/v1/challenges/{challenge}/verify");
        let session = shopper.session.as_ref().unwrap();
        // Before the shopper passed 3-D Secure, Stripe does not confirm it.
        let early = s.app.authed(Method::POST, &path, session, Some(&verify), &shopper.ip).await;
        early.assert_problem(422, "code_invalid");
        // A code does not answer a 3-D Secure challenge.
        let sms = s.app.authed(Method::POST, &path, session, Some(&json!({"method": "sms", "code": "123456"})), &shopper.ip).await;
        sms.assert_problem(422, "invalid_method");
        s.ls.complete_3ds(&client_secret).await;
        let done = s.app.authed(Method::POST, &path, session, Some(&verify), &shopper.ip).await;
        assert_eq!(done.status, 200, "{done:?}");
        let cards = s.app.authed(Method::GET, "/v1/cards", session, None, &shopper.ip).await;
        assert_eq!(cards.body["items"][0]["status"], "active", "{cards:?}");
        assert_eq!(cards.body["items"][0]["last4"], "3155");
    }

    async fn a_declined_card_is_refused_and_counted(s: StripeApp) {
        let shopper = s.shopper().await;
        s.link(&shopper, "4000000000000002").await.assert_problem(402, "card_declined");
        let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'card_fail_wallet'")
            .fetch_one(s.app.db().pool()).await.unwrap();
        assert!(failures >= 1, "the failed check counts against the card-testing limits");
        let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards").fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(cards, 0);
        // Card testing: three failed checks of one card (by Stripe's fingerprint, through fresh
        // PaymentMethods) and it is refused on every wallet for a day, before Stripe is asked.
        for _ in 0..2 {
            s.link(&shopper, "4000000000000002").await.assert_problem(402, "card_declined");
        }
        let other = s.shopper().await;
        s.link(&other, "4000000000000002").await.assert_problem(429, "too_many_attempts");
    }

    async fn a_topup_repeated_after_a_crash_charges_once(s: StripeApp) {
        let (proxy, crash) = crash_proxy(&s.ls.base).await;
        let first = TestApp::spawn_with(s.app.backend, |c| stripe_config(c, &proxy)).await.unwrap();
        let mut shopper = first.register().await;
        first.log_in(&mut shopper).await;
        let token = s.ls.payment_method("4242424242424242").await;
        let body = json!({"processor_token": token});
        let r = first.authed(Method::POST, "/v1/cards", shopper.session.as_ref().unwrap(), Some(&body), &shopper.ip).await;
        assert_eq!(r.status, 201, "{r:?}");
        let topup = json!({"card_id": r.body["card_id"], "amount": 3_000});
        // The charge reaches Stripe, and the answer never comes back.
        crash.mode.store(CRASH_AFTER_CONFIRM, Ordering::SeqCst);
        let r = first.money("/v1/topups", &shopper, &topup, "topup-crash-1").await;
        r.assert_problem(503, "processor_unavailable");
        let (status, intent): (String, Option<String>) = sqlx::query_as("SELECT status, processor_ref FROM topups")
            .fetch_one(first.db().pool()).await.unwrap();
        let intent = intent.expect("the PaymentIntent was recorded before it was confirmed");
        assert_eq!(status, "pending");
        assert_eq!(s.ls.charges_of(&intent).await.len(), 1, "the card was charged before the crash");
        assert_eq!(balance_of(&first.wallet(&shopper).await), 0);
        // After the restart (another instance on the same database, Stripe reachable), the app repeats.
        let second = first.another_instance_with(|c| stripe_config(c, &s.ls.base)).await;
        let r = second.money("/v1/topups", &shopper, &topup, "topup-crash-1").await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.body["balance"], 3_000);
        let again = second.money("/v1/topups", &shopper, &topup, "topup-crash-1").await;
        assert_eq!(again.body, r.body);
        let charges = s.ls.charges_of(&intent).await;
        assert_eq!(charges.len(), 1, "one charge in Stripe: {charges:?}");
        assert_eq!(charges[0]["amount"], 3_000);
        assert_eq!(charges[0]["currency"], "jpy");
        // Another crash, and no repeat: the sweeper asks Stripe about the recorded intent.
        crash.mode.store(CRASH_AFTER_CONFIRM, Ordering::SeqCst);
        let topup = json!({"card_id": topup["card_id"], "amount": 2_000});
        first.money("/v1/topups", &shopper, &topup, "topup-crash-2").await.assert_problem(503, "processor_unavailable");
        let intent: String = sqlx::query_scalar("SELECT processor_ref FROM topups WHERE status = 'pending'")
            .fetch_one(first.db().pool()).await.unwrap();
        second.advance_clock(3 * 60).await;
        assert_eq!(omamori::payments::topups::sweep(&second.state).await.unwrap(), 1);
        assert_eq!(balance_of(&second.wallet(&shopper).await), 5_000);
        assert_eq!(s.ls.charges_of(&intent).await.len(), 1);
        let out = second.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }

    async fn a_charge_the_issuer_declines_declines_the_topup(s: StripeApp) {
        let shopper = s.shopper().await;
        // Linked fine, but every charge is declined (Stripe's test card 4000 0000 0000 0341).
        let r = s.link(&shopper, "4000000000000341").await;
        assert_eq!(r.status, 201, "{r:?}");
        let topup = json!({"card_id": r.body["card_id"], "amount": 1_500});
        let r = s.app.money("/v1/topups", &shopper, &topup, "declined-1").await;
        r.assert_problem(402, "card_declined");
        let again = s.app.money("/v1/topups", &shopper, &topup, "declined-1").await;
        again.assert_problem(402, "card_declined");
        let status: String = sqlx::query_scalar("SELECT status FROM topups").fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(status, "declined");
        assert_eq!(balance_of(&s.app.wallet(&shopper).await), 0);
    }

    async fn a_topup_the_issuer_wants_authenticated_waits_for_3d_secure(s: StripeApp) {
        let shopper = s.shopper().await;
        let session = shopper.session.as_ref().unwrap();
        let r = s.link(&shopper, "4000002500003155").await;
        s.ls.complete_3ds(r.body["client_secret"].as_str().unwrap()).await;
        let path = format!("/v1/challenges/{}/verify", r.body["challenge_id"].as_str().unwrap());
        let verified = s.app.authed(Method::POST, &path, session, Some(&json!({"method": "three_d_secure"})), &shopper.ip).await;
        assert_eq!(verified.status, 200, "{verified:?}");
        let topup = json!({"card_id": r.body["card_id"], "amount": 2_500});
        // The issuer wants this payment authenticated too (Japan's rule for online card use).
        let r = s.app.money("/v1/topups", &shopper, &topup, "auth-1").await;
        r.assert_problem(402, "authentication_required");
        let secret = r.body["client_secret"].as_str().expect("the payment's client secret").to_string();
        assert!(secret.starts_with("pi_"), "{secret}");
        // Not final: asked again before authenticating, the same answer, and nothing charged.
        s.app.money("/v1/topups", &shopper, &topup, "auth-1").await.assert_problem(402, "authentication_required");
        let intent = secret.split("_secret_").next().unwrap().to_string();
        assert!(s.ls.charges_of(&intent).await.is_empty());
        s.ls.authenticate_payment(&secret).await;
        let done = s.app.money("/v1/topups", &shopper, &topup, "auth-1").await;
        assert_eq!((done.status.as_u16(), done.body["balance"].as_i64()), (201, Some(2_500)), "{done:?}");
        assert_eq!(s.ls.charges_of(&intent).await.len(), 1);
        // One the shopper never authenticates is given up by the sweeper after an hour, at Stripe too.
        let r = s.app.money("/v1/topups", &shopper, &json!({"card_id": topup["card_id"], "amount": 1_000}), "auth-2").await;
        r.assert_problem(402, "authentication_required");
        let abandoned = r.body["client_secret"].as_str().unwrap().split("_secret_").next().unwrap().to_string();
        s.app.advance_clock(61 * 60).await;
        assert!(omamori::payments::topups::sweep(&s.app.state).await.unwrap() >= 1);
        let status: String = sqlx::query_scalar("SELECT status FROM topups WHERE processor_ref = $1")
            .bind(&abandoned).fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(status, "declined");
        let pi = s.ls.api(Method::GET, &format!("/v1/payment_intents/{abandoned}"), &[]).await;
        assert_eq!(pi["status"], "canceled", "{pi}");
        let balance: i64 = sqlx::query_scalar(
            "SELECT a.balance FROM accounts a JOIN users u ON u.wallet_account_id = a.id WHERE u.id = $1",
        )
        .bind(&shopper.user_id)
        .fetch_one(s.app.db().pool())
        .await
        .unwrap();
        assert_eq!(balance, 2_500);
    }

    async fn stripe_down_mid_topup_is_503_fast_and_writes_nothing(s: StripeApp) {
        let shopper = s.shopper().await;
        let card = s.linked_card(&shopper).await;
        let mut ls = s.ls;
        ls.stop();
        let topup = json!({"card_id": card, "amount": 2_000});
        let mut took = Vec::new();
        for i in 0..5 {
            let started = Instant::now();
            let r = s.app.money("/v1/topups", &shopper, &topup, &format!("down-{i}")).await;
            took.push(started.elapsed());
            r.assert_problem(503, "processor_unavailable");
            assert!(r.headers.get("retry-after").is_some(), "{r:?}");
        }
        eprintln!("503 processor_unavailable with Stripe down, per top-up: {took:?}");
        // The circuit opened: the last requests did not wait for Stripe at all.
        assert!(took[4] < Duration::from_millis(300) && took[4] < took[0], "{took:?}");
        let topups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM topups").fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(topups, 0, "no top-up row is left half-written");
        let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal_entries WHERE kind = 'topup'")
            .fetch_one(s.app.db().pool()).await.unwrap();
        assert_eq!(entries, 0);
        assert_eq!(balance_of(&s.app.wallet(&shopper).await), 0);
        let metrics = s.app.get("/metrics").await.text;
        assert!(metrics.contains("omamori_processor_request_duration_seconds"), "{metrics}");
        assert!(metrics.contains("omamori_processor_errors_total"), "{metrics}");
    }

    async fn stripe_events_are_verified_deduplicated_and_settle_top_ups(s: StripeApp) {
        let app = &s.app;
        let event = json!({"id": "evt_useless_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
        // Unsigned, forged, stale: refused before anything is read.
        let unsigned = app.client.post(app.url("/v1/processor/stripe/events")).body(event.to_string()).send().await.unwrap();
        Reply::from(unsigned).await.assert_problem(401, "invalid_signature");
        send_event(app, &event, "whsec_someone_else_entirely", now_secs()).await.assert_problem(401, "invalid_signature");
        send_event(app, &event, WEBHOOK_SECRET, now_secs() - 301).await.assert_problem(401, "invalid_signature");
        // Correctly signed but of no use here: acknowledged (so Stripe stops), then a duplicate.
        let r = send_event(app, &event, WEBHOOK_SECRET, now_secs()).await;
        assert_eq!((r.status.as_u16(), r.body["outcome"].as_str()), (200, Some("ignored")), "{r:?}");
        let r = send_event(app, &event, WEBHOOK_SECRET, now_secs()).await;
        assert_eq!(r.body["outcome"], "duplicate", "{r:?}");
        // localstripe's own signed event settles a top-up whose answer was lost.
        let config = [("url", app.url("/v1/processor/stripe/events")), ("secret", WEBHOOK_SECRET.to_string())];
        let r = s.ls.http.post(format!("{}/_config/webhooks/omamori", s.ls.base)).form(&config).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let (proxy, crash) = crash_proxy(&s.ls.base).await;
        let lost = app.another_instance_with(|c| stripe_config(c, &proxy)).await;
        let shopper = s.shopper().await;
        let card = s.linked_card(&shopper).await;
        crash.mode.store(CRASH_AFTER_CONFIRM, Ordering::SeqCst);
        let r = lost.money("/v1/topups", &shopper, &json!({"card_id": card, "amount": 4_000}), "lost-answer").await;
        r.assert_problem(503, "processor_unavailable");
        let started = Instant::now();
        while balance_of(&app.wallet(&shopper).await) != 4_000 {
            assert!(started.elapsed() < Duration::from_secs(15), "payment_intent.succeeded did not settle the top-up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let intent: String = sqlx::query_scalar("SELECT processor_ref FROM topups WHERE status = 'succeeded'")
            .fetch_one(app.db().pool()).await.unwrap();
        // A dispute of that charge claws the top-up back through the chargeback path.
        let dispute = json!({"id": "evt_dispute_1", "type": "charge.dispute.created",
            "data": {"object": {"id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": intent, "amount": 4000}}});
        let r = send_event(app, &dispute, WEBHOOK_SECRET, now_secs()).await;
        assert_eq!(r.body["outcome"], "charged_back", "{r:?}");
        let repeat = json!({"id": "evt_refund_1", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "payment_intent": intent}}});
        assert_eq!(send_event(app, &repeat, WEBHOOK_SECRET, now_secs()).await.body["outcome"], "ignored");
        let status: String = sqlx::query_scalar("SELECT status FROM topups WHERE processor_ref = $1")
            .bind(&intent).fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(status, "charged_back");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

with_localstripe! {
    async fn the_wallet_loads_stripe_js_from_the_one_origin_its_policy_allows(s: StripeApp) {
        let page = s.app.get("/app").await;
        let policy = page.headers["content-security-policy"].to_str().unwrap().to_string();
        let ls = &s.ls.base;
        assert!(policy.contains(&format!("script-src 'self' {ls};")), "{policy}");
        assert!(policy.contains(&format!("frame-src {ls};")) && policy.contains(&format!("connect-src 'self' {ls};")), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"), "{policy}");
        let config = s.app.get("/v1/processor/config").await;
        assert_eq!(config.body["processor"], "stripe", "{config:?}");
        assert_eq!(config.body["publishable_key"], PUBLISHABLE_KEY);
        assert!(!config.text.contains(SECRET_KEY) && !config.text.contains(WEBHOOK_SECRET));
        let js = s.ls.http.get(config.body["js_url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(js.status(), 200, "Stripe.js (localstripe's stand-in) is where the wallet is told to load it");
    }
}

/// Without Stripe, the pages allow no other origin at all, and the wallet keeps its own form.
#[tokio::test]
async fn without_stripe_the_pages_allow_no_other_origin() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let page = app.get("/app").await;
    assert_eq!(page.headers["content-security-policy"], omamori::web::routes::CONTENT_SECURITY_POLICY);
    assert_eq!(app.get("/v1/processor/config").await.body, json!({"processor": "sandbox"}));
    let event = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}});
    send_event(&app, &event, WEBHOOK_SECRET, now_secs()).await.assert_problem(404, "not_found");
}

/// The wallet's Stripe path in a real browser: Stripe.js (localstripe's stand-in, from the one
/// other origin the page allows) collects the card, and Omamori sees only the PaymentMethod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cards_through_stripe_js() {
    if let Some(why) = crate::browser::missing_tools() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the browser tests cannot run: {why}");
        }
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let Some(ls) = Localstripe::start().await else { return };
    let (host, _crash) = crash_proxy(&ls.base).await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| stripe_config(c, &host)).await.unwrap();
    let s = app.register().await;
    let fixture = json!({"shopper": {"phone": s.phone, "email": s.email, "password": s.password}});
    let app = Arc::new(app);
    let runner = app.clone();
    tokio::task::spawn_blocking(move || crate::browser::run_script(&runner, "wallet.py", "stripe_cards", &fixture))
        .await
        .unwrap();
    let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE status = 'active'")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(cards, 2);
}
