//! The operators' console at `/console`: the operator's session in its own cookie (`Path=/v1/admin`,
//! the same `Origin` rule as shoppers' cookies), the routes the console added (who am I, the
//! operators, a shopper looked up by phone or e-mail, unfreezing with four eyes, the audit chain
//! check, the corrections list), each with its role refusals, and the console in a real browser
//! (tests/browser/console.py holds the journeys), run as the wallet's are (`browser.rs`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{browser_app_with, run_script};
use crate::helpers::*;

/// An operator made on the command line, as `omamori admin operator create` prints it.
pub(crate) struct MadeOperator {
    pub email: String,
    pub password: String,
    pub totp_secret: String,
}

/// Creates an operator of `role` with the CLI (`omamori admin operator create`).
pub(crate) fn create_operator(app: &TestApp, role: &str) -> MadeOperator {
    let email = format!("{role}-{}@omamori.example", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let out = app.omamori(&["admin", "operator", "create", "--email", &email, "--role", role]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let password = stdout.lines().find_map(|l| l.strip_prefix("password: ")).unwrap().to_string();
    let totp_secret = stdout.lines().find_map(|l| l.split("it is not shown again): ").nth(1)).unwrap().to_string();
    MadeOperator { email, password, totp_secret }
}

/// Logs `op` in with password and TOTP; answers the verify's reply (cookie mode when `cookie`).
async fn operator_login(app: &TestApp, op: &MadeOperator, cookie: bool) -> reqwest::Response {
    let r = app.post_from("/v1/admin/login", &json!({"email": op.email, "password": op.password}), OPERATOR_IP).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seed = omamori::identity::totp::base32_decode(&op.totp_secret).unwrap();
    let code = omamori::identity::totp::code_at_step(&seed, omamori::identity::totp::current_step());
    let path = format!("/v1/challenges/{}/verify", r.body["challenge_id"].as_str().unwrap());
    let mut req = app.from(Method::POST, &path, OPERATOR_IP).json(&json!({"method": "totp", "code": code}));
    if cookie {
        req = req.header("Omamori-Session", "cookie");
    }
    req.send().await.unwrap()
}

/// A viewer's bearer token.
async fn viewer_token(app: &TestApp) -> String {
    let viewer = create_operator(app, "viewer");
    let r = Reply::from(operator_login(app, &viewer, false).await).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["session_token"].as_str().unwrap().to_string()
}

/// A request from the console page: its cookie, and its `Origin` when `same_origin`.
async fn from_console(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    body: Option<&Value>,
    same_origin: bool,
) -> Reply {
    let mut req = app.from(method, path, OPERATOR_IP).header("Cookie", cookie.to_string());
    if same_origin {
        req = req.header("Origin", app.base.clone());
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    Reply::from(req.send().await.unwrap()).await
}

both_backends! {
    async fn an_operator_page_session_travels_in_its_own_cookie(app: TestApp) {
        let op = create_operator(&app, "operator");
        let r = operator_login(&app, &op, true).await;
        assert_eq!(r.status(), 200);
        let set: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["session"], "cookie", "{body}");
        assert!(body.get("session_token").is_none(), "the token is in the body: {body}");
        let cookie = set.iter().find(|c| c.starts_with("omamori_operator=")).unwrap_or_else(|| panic!("{set:?}"));
        for part in ["HttpOnly", "SameSite=Strict", "Path=/v1/admin"] {
            assert!(cookie.contains(part), "{cookie} lacks {part}");
        }
        let cookie = cookie.split(';').next().unwrap().to_string();
        // Who is signed in, read with the cookie alone.
        let me = from_console(&app, Method::GET, "/v1/admin/me", &cookie, None, false).await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.body["email"], op.email.as_str());
        assert_eq!(me.body["role"], "operator");
        // A change made with the cookie must come from the console's own origin.
        let engage = json!({"name": "refunds", "reason": "drill"});
        from_console(&app, Method::POST, "/v1/admin/switches", &cookie, Some(&engage), false).await.assert_problem(403, "csrf_rejected");
        let r = from_console(&app, Method::POST, "/v1/admin/switches", &cookie, Some(&engage), true).await;
        assert_eq!(r.status, 201, "{r:?}");
        // A shopper's session cookie opens nothing here.
        let (s, _) = app.funded_shopper(0).await;
        let shopper = format!("omamori_session={}", s.session.as_ref().unwrap());
        from_console(&app, Method::GET, "/v1/admin/me", &shopper, None, false).await.assert_problem(403, "forbidden");
        // Logging out clears the cookie, and the session is over.
        let r = from_console(&app, Method::POST, "/v1/admin/logout", &cookie, None, true).await;
        assert_eq!(r.status, 204, "{r:?}");
        from_console(&app, Method::GET, "/v1/admin/me", &cookie, None, false).await.assert_problem(401, "unauthenticated");
        // Bearer clients get their token as before.
        let r = Reply::from(operator_login(&app, &create_operator(&app, "admin"), false).await).await;
        assert!(r.body["session_token"].as_str().is_some_and(|t| !t.is_empty()), "{r:?}");
    }

    async fn a_shopper_is_looked_up_by_phone_or_email_by_operators_only(app: TestApp) {
        let (s, card) = app.funded_shopper(3_000).await;
        let op = app.operator_session(1).await;
        let r = app.authed(Method::GET, &format!("/v1/admin/users?login={}", urlencode(&s.phone)), &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["user_id"], s.user_id.as_str());
        assert_eq!(r.body["balance"], 3_000);
        assert_eq!(r.body["freeze"]["frozen"], false);
        assert_eq!(r.body["cards"][0]["card_id"], card.as_str());
        assert_eq!(r.body["activity"][0]["kind"], "topup");
        assert_eq!(r.body["activity"][0]["amount"], 3_000);
        assert_eq!(r.body["sessions"][0]["device_id"], s.device_id.as_str());
        assert_eq!(r.body["devices"][0]["recognised"], true);
        let by_email = app.authed(Method::GET, &format!("/v1/admin/users?login={}", urlencode(&s.email.to_uppercase())), &op, None, OPERATOR_IP).await;
        assert_eq!(by_email.body["user_id"], s.user_id.as_str(), "{by_email:?}");
        app.authed(Method::GET, "/v1/admin/users?login=nobody%40example.jp", &op, None, OPERATOR_IP).await.assert_problem(404, "not_found");
        app.authed(Method::GET, "/v1/admin/users?login=%2B8190", &op, None, OPERATOR_IP).await.assert_problem(404, "not_found");
        app.authed(Method::GET, "/v1/admin/users", &op, None, OPERATOR_IP).await.assert_problem(400, "invalid_query");
        // Every lookup is in the audit log, naming the operator and how the shopper was found.
        let audit = app.authed(Method::GET, "/v1/admin/audit", &op, None, OPERATOR_IP).await;
        let lookups: Vec<&Value> = audit.body["items"].as_array().unwrap().iter().filter(|e| e["action"] == "user.lookup").collect();
        assert_eq!(lookups.len(), 2, "{audit:?}");
        assert_eq!(lookups[0]["subject"], s.user_id.as_str());
        assert_eq!(lookups[0]["detail"]["by"], "email");
        // Personal data is not for viewers, shoppers or the anonymous.
        let viewer = viewer_token(&app).await;
        let path = format!("/v1/admin/users?login={}", urlencode(&s.phone));
        app.authed(Method::GET, &path, &viewer, None, OPERATOR_IP).await.assert_problem(403, "forbidden");
        app.authed(Method::GET, &path, s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
        app.from(Method::GET, &path, OPERATOR_IP).send().await.map(|r| assert_eq!(r.status(), 401)).unwrap();
    }

    async fn an_unfreeze_takes_two_operators(app: TestApp) {
        let store_qr = app.sandbox_doc()["store_qr"].as_str().unwrap().to_string();
        let (mut s, _) = app.funded_shopper(2_000).await;
        let (op1, op2) = (app.operator_session(0).await, app.operator_session(1).await);
        let freeze = format!("/v1/admin/users/{}/freeze", s.user_id);
        let unfreeze = format!("/v1/admin/users/{}/unfreeze", s.user_id);
        let reason = json!({"reason": "owner called: phone recovered"});
        app.authed(Method::POST, &unfreeze, &op1, Some(&reason), OPERATOR_IP).await.assert_problem(404, "not_found");
        let r = app.authed(Method::POST, &freeze, &op1, Some(&json!({"reason": "phone stolen"})), OPERATOR_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        let viewer = viewer_token(&app).await;
        app.authed(Method::POST, &unfreeze, &viewer, Some(&reason), OPERATOR_IP).await.assert_problem(403, "forbidden");
        let r = app.authed(Method::POST, &unfreeze, &op1, Some(&reason), OPERATOR_IP).await;
        assert_eq!((r.status.as_u16(), &r.body["unfrozen"]), (202, &json!(false)), "{r:?}");
        app.authed(Method::POST, &unfreeze, &op1, Some(&reason), OPERATOR_IP).await.assert_problem(409, "second_operator_required");
        // Still frozen until the second operator; the lookup says who asked.
        app.log_in(&mut s).await;
        app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 100}), "f1").await.assert_problem(403, "account_frozen");
        let path = format!("/v1/admin/users?login={}", urlencode(&s.phone));
        let looked = app.authed(Method::GET, &path, &op2, None, OPERATOR_IP).await;
        assert_eq!(looked.body["freeze"]["frozen"], true, "{looked:?}");
        assert!(looked.body["freeze"]["unfreeze_requested_by"].as_str().unwrap().starts_with("operator:opr_"));
        app.authed(Method::POST, &unfreeze, &op2, Some(&json!({"reason": ""})), OPERATOR_IP).await.assert_problem(422, "invalid_body");
        let r = app.authed(Method::POST, &unfreeze, &op2, Some(&reason), OPERATOR_IP).await;
        assert_eq!((r.status.as_u16(), &r.body["unfrozen"]), (202, &json!(true)), "{r:?}");
        assert_eq!(app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 100}), "f2").await.status, 201);
        app.authed(Method::POST, &unfreeze, &op2, Some(&reason), OPERATOR_IP).await.assert_problem(404, "not_found");
        let audit = app.authed(Method::GET, "/v1/admin/audit", &op1, None, OPERATOR_IP).await;
        let actions: Vec<&str> = audit.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"switch.release_requested") && actions.contains(&"switch.released"), "{actions:?}");
    }

    async fn the_audit_chain_is_checked_over_http(app: TestApp) {
        let viewer = viewer_token(&app).await;
        let r = app.authed(Method::GET, "/v1/admin/audit/verify", &viewer, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["intact"], true, "{r:?}");
        assert!(r.body["broken_id"].is_null() && r.body["head_id"].as_i64().unwrap() > 0, "{r:?}");
        // An insider rewrites one entry: the check names it.
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id").fetch_all(app.db().pool()).await.unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE id = $1").bind(ids[0]).execute(app.db().pool()).await.unwrap();
        let r = app.authed(Method::GET, "/v1/admin/audit/verify", &viewer, None, OPERATOR_IP).await;
        assert_eq!((r.body["intact"].clone(), r.body["broken_id"].as_i64()), (json!(false), Some(ids[0])), "{r:?}");
        assert!(r.body["problem"].as_str().unwrap().contains("altered"), "{r:?}");
        let (s, _) = app.funded_shopper(0).await;
        app.authed(Method::GET, "/v1/admin/audit/verify", s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
    }

    async fn corrections_and_operators_are_listed_for_every_role(app: TestApp) {
        let store_qr = app.sandbox_doc()["store_qr"].as_str().unwrap().to_string();
        let (s, _) = app.funded_shopper(2_000).await;
        let paid = app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 700}), "c1").await;
        assert_eq!(paid.status, 201, "{paid:?}");
        let payment = paid.body["payment_id"].as_str().unwrap();
        let op = app.operator_session(0).await;
        let body = json!({"kind": "payment", "id": payment, "reason": "the shopper's phone was stolen"});
        let proposed = app.authed(Method::POST, "/v1/admin/corrections", &op, Some(&body), OPERATOR_IP).await;
        assert_eq!(proposed.status, 202, "{proposed:?}");
        let viewer = viewer_token(&app).await;
        let list = app.authed(Method::GET, "/v1/admin/corrections", &viewer, None, OPERATOR_IP).await;
        assert_eq!(list.status, 200, "{list:?}");
        let item = &list.body["items"][0];
        assert_eq!((&item["correction_id"], &item["status"], &item["target"]), (&proposed.body["correction_id"], &json!("proposed"), &json!(payment)));
        assert!(item["proposed_by"].as_str().unwrap().starts_with("operator:"), "{item}");
        let ops = app.authed(Method::GET, "/v1/admin/operators", &viewer, None, OPERATOR_IP).await;
        let emails: Vec<&str> = ops.body["items"].as_array().unwrap().iter().map(|o| o["email"].as_str().unwrap()).collect();
        assert!(emails.contains(&"operator1@sandbox.omamori.test") && emails.len() == 3, "{ops:?}");
        assert!(ops.body["items"][0].get("password_hash").is_none());
        app.authed(Method::GET, "/v1/admin/corrections", s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
        app.authed(Method::GET, "/v1/admin/operators", s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Three shoppers, logged in (their login counts as a fresh step-up), whose declined card links
/// the browser journey makes while the operator watches.
async fn card_testers(app: &TestApp) -> Vec<Value> {
    let mut testers = Vec::new();
    for _ in 0..3 {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        testers.push(json!({"session": s.session, "device_id": s.device_id, "ip": s.ip}));
    }
    testers
}

async fn console_journey(journey: &str) {
    // A small flood is enough to trip the card-testing detector here (production's default is 20).
    let Some(app) = browser_app_with(|c| c.alert_card_declines_per_minute = 6).await else { return };
    let viewer = create_operator(&app, "viewer");
    let fixture = json!({
        "operators": app.sandbox_doc()["operators"],
        "viewer": {"email": viewer.email, "password": viewer.password, "totp_secret": viewer.totp_secret},
        "card_testers": card_testers(&app).await,
        "card_declines_per_minute": app.state.config.alert_card_declines_per_minute,
    });
    let journey = journey.to_string();
    tokio::task::spawn_blocking(move || run_script(&app, "console.py", &journey, &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_alert_to_switch_and_a_four_eyes_release_and_a_viewer_cannot_engage() {
    console_journey("switchboard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_reviews_corrections_users_and_rules() {
    let Some(app) = browser_app_with(|_| {}).await else { return };
    let store_qr = app.sandbox_doc()["store_qr"].as_str().unwrap().to_string();
    let (s, card) = app.funded_shopper(2_000).await;
    let paid = app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 700}), "pay-1").await;
    assert_eq!(paid.status, 201, "{paid:?}");
    let op = app.operator_session(0).await;
    let rule = json!({"id": "hold-large-topups", "event": "topup", "priority": 1,
        "conditions": {"amount_at_least": 30_000}, "outcome": "hold"});
    assert_eq!(app.authed(Method::POST, "/v1/admin/rules", &op, Some(&rule), OPERATOR_IP).await.status, 201);
    let held = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 40_000}), "held-1").await;
    assert_eq!(held.status, 202, "{held:?}");
    // The operator's login above used this step's code; the journey's logins must use the next.
    let fixture = json!({
        "operators": app.sandbox_doc()["operators"],
        "shopper": {"phone": s.phone, "email": s.email, "device_id": s.device_id},
        "payment_id": paid.body["payment_id"],
    });
    tokio::task::spawn_blocking(move || run_script(&app, "console.py", "operations", &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_passkey_added_then_logs_in_alone() {
    let Some(app) = browser_app_with(|_| {}).await else { return };
    let fixture = json!({"operators": app.sandbox_doc()["operators"]});
    tokio::task::spawn_blocking(move || run_script(&app, "console.py", "passkey", &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_in_japanese_and_at_tablet_width() {
    console_journey("japanese").await;
}
