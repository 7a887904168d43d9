//! The shopper's wallet at `/app` in a real browser: headless Chromium (Debian's `chromium`)
//! driven by Python's Playwright, one test per journey (tests/browser/wallet.py holds them). The
//! server and the fixture (a funded shopper, a store) are made here; the script plays the shopper.
//! Without Chromium or Playwright a test says why and passes, except under `CI=true`.
//! `OMAMORI_TEST_SCREENSHOTS=docs/screenshots` makes the journeys save their 360×740 screenshots there.
//! The journeys run on SQLite; those that move money (pay, cards, top-up, history) run on
//! PostgreSQL too when `OMAMORI_TEST_POSTGRES_URL` is set.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// Why the browser tests cannot run here, if they cannot.
pub(crate) fn missing_tools() -> Option<String> {
    let chromium = std::env::var("OMAMORI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    let playwright = std::process::Command::new("python3").args(["-c", "import playwright.sync_api"]).output();
    if !playwright.is_ok_and(|o| o.status.success()) {
        return Some("Python's playwright is missing (pip install playwright; no browser download needed)".into());
    }
    None
}

/// Runs one journey of tests/browser/wallet.py against `app` with `fixture`.
fn run_journey(app: &TestApp, journey: &str, fixture: &Value) {
    run_script(app, "wallet.py", journey, fixture);
}

/// Held shared by every running journey, and alone by the one that measures speed, so that the
/// measurement does not share the machine with other Chromiums of this suite.
static BROWSERS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs one journey of the script `tests/browser/<script>` against `app` with `fixture`.
pub(crate) fn run_script(app: &TestApp, script: &str, journey: &str, fixture: &Value) {
    let _shared = BROWSERS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    run_python(app, script, journey, fixture);
}

fn run_python(app: &TestApp, script: &str, journey: &str, fixture: &Value) {
    let base = app.base.replace("127.0.0.1", "localhost");
    let script = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let shots = std::env::var("OMAMORI_TEST_SCREENSHOTS").unwrap_or_default();
    let shots = if shots.is_empty() || std::path::Path::new(&shots).is_absolute() {
        shots
    } else {
        format!("{}/{shots}", env!("CARGO_MANIFEST_DIR"))
    };
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(journey)
        .env("OMAMORI_BASE", base)
        .env("OMAMORI_FIXTURE", fixture.to_string())
        .env("OMAMORI_TEST_SCREENSHOTS", shots)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "journey {journey} failed:\n{stdout}\n{stderr}");
    // What the journey measured (seen with `--nocapture`).
    print!("{stdout}");
}

/// A sandbox server, or `None` (with the reason printed) when the browser tools are missing.
pub(crate) async fn browser_app() -> Option<TestApp> {
    browser_app_with(|_| {}).await
}

/// As [`browser_app`], with the server's configuration adjusted.
pub(crate) async fn browser_app_with(adjust: impl FnOnce(&mut omamori::config::Config)) -> Option<TestApp> {
    browser_app_on(Backend::Sqlite, adjust).await
}

/// As [`browser_app_with`], on `backend`: `None` also when that backend is not available
/// (PostgreSQL without `OMAMORI_TEST_POSTGRES_URL`, which `TestApp` says, and refuses under CI).
pub(crate) async fn browser_app_on(
    backend: Backend,
    adjust: impl FnOnce(&mut omamori::config::Config),
) -> Option<TestApp> {
    if let Some(why) = missing_tools() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the browser tests cannot run: {why}");
        }
        eprintln!("skipping the browser test: {why}");
        return None;
    }
    TestApp::spawn_with(backend, adjust).await
}

/// Whether `zbarimg` (zbar-tools) is there to read drawn codes back; under `CI=true` it must be.
fn zbarimg() -> Result<(), &'static str> {
    if std::process::Command::new("which").arg("zbarimg").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but zbarimg is missing: install zbar-tools");
    }
    Err("zbarimg (zbar-tools) is not installed")
}

/// A shopper with a card and ¥10,000, as the fixture names it.
async fn funded(app: &TestApp) -> (Shopper, Value) {
    let (s, _card) = app.funded_shopper(10_000).await;
    let fixture = json!({"phone": s.phone, "email": s.email, "password": s.password});
    (s, fixture)
}

async fn journey_with_shopper(journey: &str, extra: impl FnOnce(&TestApp, &Shopper, &mut Value)) {
    journey_on(Backend::Sqlite, journey, extra).await;
}

/// A journey of a funded shopper on `backend`; `extra` adds to the fixture.
async fn journey_on(backend: Backend, journey: &str, extra: impl FnOnce(&TestApp, &Shopper, &mut Value)) {
    let Some(app) = browser_app_on(backend, |_| {}).await else { return };
    let (s, shopper) = funded(&app).await;
    let mut fixture = json!({"shopper": shopper});
    extra(&app, &s, &mut fixture);
    let app = std::sync::Arc::new(app);
    let (runner, journey) = (app.clone(), journey.to_string());
    tokio::task::spawn_blocking(move || run_journey(&runner, &journey, &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_up_with_both_codes_then_log_in() {
    let Some(app) = browser_app().await else { return };
    let phone = new_phone();
    let fixture = json!({
        "new_phone": phone,
        "new_email": format!("web-{}@example.jp", &phone[3..]),
        "new_password": strong_password(),
    });
    tokio::task::spawn_blocking(move || run_journey(&app, "signup", &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_log_in_by_sms_authenticator_app_and_recovery_code() {
    // The authenticator's QR code is read back with zbarimg where it is installed (always under CI).
    let read_codes = zbarimg().is_ok();
    journey_with_shopper("login", |_, _, f| f["read_codes"] = json!(read_codes)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_wallet_in_japanese() {
    journey_with_shopper("japanese", |_, _, _| {}).await;
}

async fn pay_journey(backend: Backend) {
    if let Err(why) = zbarimg() {
        eprintln!("skipping: {why}");
        return;
    }
    journey_on(backend, "pay", |app, _, f| {
        f["terminal_key"] = app.sandbox_doc()["terminal_key"].clone();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pay_shows_a_readable_barcode_and_renews_the_code() {
    pay_journey(Backend::Sqlite).await;
}

/// The SMS login, Pay and the till's charge, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pay_on_postgres() {
    pay_journey(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cards_top_up_with_step_up_and_history() {
    journey_with_shopper("topup", |_, _, f| f["new_card"] = json!(test_card())).await;
}

/// Cards, a top-up through the step-up dialog, and the history with its CSV, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cards_top_up_and_history_on_postgres() {
    journey_on(Backend::Postgres, "topup", |_, _, f| f["new_card"] = json!(test_card())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_limits_lower_at_once_and_raise_through_step_up() {
    journey_with_shopper("limits", |_, _, _| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_scan_a_store_whose_name_is_a_script_shows_it_as_text() {
    let Some(app) = browser_app().await else { return };
    let op = app.operator_session(0).await;
    let name = "<script>alert(1)</script>";
    let m = app
        .authed(Method::POST, "/v1/admin/merchants", &op, Some(&json!({"name": name, "category": "5812"})), OPERATOR_IP)
        .await;
    assert_eq!(m.status, 201, "{m:?}");
    let path = format!("/v1/admin/merchants/{}/stores", m.body["merchant_id"].as_str().unwrap());
    let st = app.authed(Method::POST, &path, &op, Some(&json!({"name": name, "city": "Tokyo"})), OPERATOR_IP).await;
    assert_eq!(st.status, 201, "{st:?}");
    let (_, shopper) = funded(&app).await;
    let fixture = json!({"shopper": shopper, "store_qr": st.body["store_qr"], "store_name": name});
    tokio::task::spawn_blocking(move || run_journey(&app, "scan", &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_security_signs_out_a_device_changes_the_password_and_logs_out() {
    journey_with_shopper("security", |_, s, f| {
        f["other_device"] = json!(s.device_id);
        f["other_session"] = json!(s.session);
        f["new_password"] = json!(strong_password());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_no_token_is_readable_and_a_cross_origin_post_is_refused() {
    journey_with_shopper("secrets", |_, _, _| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_passkey_added_then_logs_in_alone_and_steps_up() {
    journey_with_shopper("passkey", |_, _, _| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_password_reset_with_two_proofs_then_log_in_with_the_new_password() {
    journey_with_shopper("reset", |_, s, f| {
        f["other_session"] = json!(s.session);
        f["new_password"] = json!(strong_password());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_password_reset_in_japanese_with_the_authenticator_app() {
    journey_with_shopper("reset_japanese", |_, s, f| {
        f["api_shopper"] = json!({"session": s.session, "device_id": s.device_id, "ip": s.ip});
        f["new_password"] = json!(strong_password());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_the_shell_is_light_and_usable_within_a_second_on_a_slow_phone() {
    let Some(app) = browser_app().await else { return };
    tokio::task::spawn_blocking(move || {
        let _alone = BROWSERS.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        run_python(&app, "wallet.py", "light", &json!({}));
    })
    .await
    .unwrap();
}
