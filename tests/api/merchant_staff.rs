//! Merchant staff (API.md, "Merchants' side"): owners and staff of one merchant log in to the
//! dashboard with password and authenticator code at once, throttled like operators; a staff
//! member sees only their stores; the dashboard's session travels in its own cookie.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// A merchant user's credentials as a creation shows them once.
pub(crate) struct Staff {
    pub email: String,
    pub password: String,
    pub totp_secret: String,
}

impl Staff {
    pub fn from(v: &Value) -> Staff {
        Staff {
            email: v["email"].as_str().unwrap().to_string(),
            password: v["password"].as_str().unwrap().to_string(),
            totp_secret: v["totp_secret"].as_str().unwrap().to_string(),
        }
    }

    pub(crate) fn code(&self, step: u64) -> String {
        let seed = omamori::identity::totp::base32_decode(&self.totp_secret).unwrap();
        omamori::identity::totp::code_at_step(&seed, step)
    }
}

pub(crate) const STAFF_IP: &str = "203.0.113.90";

/// Logs `who` in (a code is accepted once: a second login in the same 30 s uses the next step's).
pub(crate) async fn staff_login(app: &TestApp, who: &Staff) -> String {
    let now = omamori::identity::totp::current_step();
    for step in [now, now + 1] {
        let body = json!({"email": who.email, "password": who.password, "totp_code": who.code(step)});
        let r = app.post_from("/v1/merchant/login", &body, STAFF_IP).await;
        if r.status == 200 {
            assert!(r.body["expires_at"].is_string(), "{r:?}");
            return r.body["session_token"].as_str().unwrap().to_string();
        }
        r.assert_problem(401, "invalid_credentials");
    }
    panic!("{} could not log in", who.email)
}

/// The sandbox's demo owner.
pub(crate) fn demo_owner(app: &TestApp) -> Staff {
    Staff::from(&app.sandbox_doc()["merchant_owner"])
}

async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    app.authed(Method::GET, path, token, None, STAFF_IP).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> Reply {
    app.authed(Method::POST, path, token, Some(body), STAFF_IP).await
}

/// A second store of the demo merchant, made by an operator.
pub(crate) async fn second_store(app: &TestApp, name: &str) -> String {
    let op = app.operator_session(0).await;
    let merchant = app.sandbox_doc()["merchant_id"].as_str().unwrap().to_string();
    let path = format!("/v1/admin/merchants/{merchant}/stores");
    let r = app.authed(Method::POST, &path, &op, Some(&json!({"name": name, "city": "Osaka"})), OPERATOR_IP).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["store_id"].as_str().unwrap().to_string()
}

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@shop.example", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

both_backends! {
    async fn the_owner_logs_in_with_password_and_code_and_sees_every_store(app: TestApp) {
        let owner = demo_owner(&app);
        let second = second_store(&app, "Demo Mart Umeda").await;
        let token = staff_login(&app, &owner).await;
        let me = get(&app, "/v1/merchant/me", &token).await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.body["merchant_id"], app.sandbox_doc()["merchant_id"]);
        assert_eq!(me.body["role"], "owner");
        assert_eq!(me.body["name"], "Omamori Demo Mart");
        let stores: Vec<&str> = me.body["stores"].as_array().unwrap().iter().map(|s| s["store_id"].as_str().unwrap()).collect();
        assert!(stores.contains(&second.as_str()) && stores.len() == 2, "{me:?}");
        let today = me.body["today"].as_str().unwrap();
        assert!(today.len() == 10 && today.as_bytes()[4] == b'-', "{today}");
        // Logging out ends the session.
        let r = post(&app, "/v1/merchant/logout", &token, &json!({})).await;
        assert_eq!(r.status, 204, "{r:?}");
        get(&app, "/v1/merchant/me", &token).await.assert_problem(401, "unauthenticated");
    }

    async fn a_wrong_password_a_wrong_code_and_an_unknown_email_get_the_same_answer(app: TestApp) {
        let owner = demo_owner(&app);
        let step = omamori::identity::totp::current_step();
        let wrong_code = format!("{:06}", (owner.code(step).parse::<u32>().unwrap() + 1) % 1_000_000);
        let tries = [
            json!({"email": owner.email, "password": "not-the-password", "totp_code": owner.code(step)}),
            json!({"email": owner.email, "password": owner.password, "totp_code": wrong_code}),
            json!({"email": "nobody@shop.example", "password": owner.password, "totp_code": owner.code(step)}),
        ];
        let mut details = Vec::new();
        for body in &tries {
            let r = app.post_from("/v1/merchant/login", body, STAFF_IP).await;
            r.assert_problem(401, "invalid_credentials");
            assert!(!r.text.contains(&owner.password), "{r:?}");
            details.push(r.body["detail"].clone());
        }
        assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
        // Missing fields are a bad body, not a login.
        let r = app.post_from("/v1/merchant/login", &json!({"email": owner.email}), STAFF_IP).await;
        r.assert_problem(422, "invalid_body");
    }

    async fn a_shops_shared_address_keeps_its_staff_and_its_shoppers_throttles_apart(app: TestApp) {
        // Ten failed shopper logins from the shop's network: shoppers there wait, staff do not.
        for i in 0..10 {
            let r = app.login(&format!("nobody{i}@example.jp"), "whatever-password", "d", None, STAFF_IP).await;
            r.assert_problem(401, "invalid_credentials");
        }
        app.login("nobody-else@example.jp", "whatever-password", "d", None, STAFF_IP).await.assert_problem(429, "too_many_attempts");
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        assert_eq!(get(&app, "/v1/merchant/me", &token).await.status, 200);
        // Staff's own address limit holds, and failing it does not stop shoppers there.
        let other = "203.0.113.91";
        for i in 0..10 {
            let body = json!({"email": format!("ghost{i}@shop.example"), "password": "whatever-password", "totp_code": "000000"});
            app.post_from("/v1/merchant/login", &body, other).await.assert_problem(401, "invalid_credentials");
        }
        let body = json!({"email": "ghost-else@shop.example", "password": "whatever-password", "totp_code": "000000"});
        app.post_from("/v1/merchant/login", &body, other).await.assert_problem(429, "too_many_attempts");
        app.login("nobody@example.jp", "whatever-password", "d", None, other).await.assert_problem(401, "invalid_credentials");
    }

    async fn guessing_a_password_is_throttled_before_it_is_checked(app: TestApp) {
        let owner = demo_owner(&app);
        let mut throttled = None;
        for i in 0..30 {
            let body = json!({"email": owner.email, "password": format!("guess-{i}"), "totp_code": "000000"});
            let r = app.post_from("/v1/merchant/login", &body, STAFF_IP).await;
            if r.status == 429 {
                throttled = Some(r);
                break;
            }
            r.assert_problem(401, "invalid_credentials");
        }
        let r = throttled.expect("30 wrong passwords in a row were never throttled");
        r.assert_problem(429, "too_many_attempts");
        assert!(r.body["retry_after"].as_i64().unwrap() > 0, "{r:?}");
        // Even the right credentials wait now.
        let body = json!({"email": owner.email, "password": owner.password, "totp_code": owner.code(omamori::identity::totp::current_step())});
        app.post_from("/v1/merchant/login", &body, STAFF_IP).await.assert_problem(429, "too_many_attempts");
    }

    async fn staff_see_only_their_stores_and_cannot_manage_staff(app: TestApp) {
        let owner = demo_owner(&app);
        let store_a = app.sandbox_doc()["store_id"].as_str().unwrap().to_string();
        let store_b = second_store(&app, "Demo Mart Namba").await;
        let token = staff_login(&app, &owner).await;
        let email = unique_email("cashier");
        let r = post(&app, "/v1/merchant/users", &token, &json!({"email": email, "role": "staff", "store_ids": [store_a]})).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.body["user_id"].as_str().unwrap().starts_with("mus_"), "{r:?}");
        assert!(r.body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"), "{r:?}");
        let staff = Staff::from(&r.body);
        // The owner's list names the staff member and their store, never a secret.
        let list = get(&app, "/v1/merchant/users", &token).await;
        assert_eq!(list.status, 200, "{list:?}");
        let member = list.body["items"].as_array().unwrap().iter().find(|m| m["email"] == email.as_str()).unwrap();
        assert_eq!(member["role"], "staff");
        assert_eq!(member["store_ids"], json!([store_a]));
        assert!(!list.text.contains(&staff.password) && !list.text.contains("password_hash"), "{list:?}");
        // The staff member sees store A only and may not manage staff.
        let staff_token = staff_login(&app, &staff).await;
        let me = get(&app, "/v1/merchant/me", &staff_token).await;
        assert_eq!(me.body["role"], "staff", "{me:?}");
        assert_eq!(me.body["stores"].as_array().unwrap().len(), 1, "{me:?}");
        assert_eq!(me.body["stores"][0]["store_id"], store_a.as_str());
        assert!(!me.text.contains(&store_b));
        get(&app, "/v1/merchant/users", &staff_token).await.assert_problem(403, "forbidden");
        let r = post(&app, "/v1/merchant/users", &staff_token, &json!({"email": unique_email("x"), "role": "owner"})).await;
        r.assert_problem(403, "forbidden");
    }

    async fn creating_a_merchant_user_checks_the_email_the_role_and_the_stores(app: TestApp) {
        let op = app.operator_session(0).await;
        let r = app.authed(Method::POST, "/v1/admin/merchants", &op, Some(&json!({"name": "Kissa Hoshi", "category": "5814"})), OPERATOR_IP).await;
        assert_eq!(r.status, 201, "{r:?}");
        let other = r.body["merchant_id"].as_str().unwrap().to_string();
        let path = format!("/v1/admin/merchants/{other}/users");
        let email = unique_email("owner");
        let made = app.authed(Method::POST, &path, &op, Some(&json!({"email": email, "role": "owner"})), OPERATOR_IP).await;
        assert_eq!(made.status, 201, "{made:?}");
        // The same e-mail again, at any merchant.
        let demo_path = format!("/v1/admin/merchants/{}/users", app.sandbox_doc()["merchant_id"].as_str().unwrap());
        let r = app.authed(Method::POST, &demo_path, &op, Some(&json!({"email": email.to_uppercase(), "role": "owner"})), OPERATOR_IP).await;
        r.assert_problem(409, "email_taken");
        // A store of another merchant, no store for staff, stores for an owner, a bad role.
        let demo_store = app.sandbox_doc()["store_id"].as_str().unwrap().to_string();
        let cases = [
            (json!({"email": unique_email("s"), "role": "staff", "store_ids": [demo_store]}), "unknown_store"),
            (json!({"email": unique_email("s"), "role": "staff"}), "store_ids_required"),
            (json!({"email": unique_email("s"), "role": "owner", "store_ids": [demo_store]}), "invalid_body"),
            (json!({"email": unique_email("s"), "role": "manager"}), "invalid_body"),
            (json!({"email": "not-an-email", "role": "owner"}), "invalid_email"),
        ];
        for (body, code) in cases {
            let r = app.authed(Method::POST, &path, &op, Some(&body), OPERATOR_IP).await;
            r.assert_problem(422, code);
        }
        let r = app.authed(Method::POST, "/v1/admin/merchants/mer_nothing/users", &op, Some(&json!({"email": unique_email("n"), "role": "owner"})), OPERATOR_IP).await;
        r.assert_problem(404, "not_found");
        // The new owner sees their own merchant and none of the demo merchant's stores.
        let token = staff_login(&app, &Staff::from(&made.body)).await;
        let me = get(&app, "/v1/merchant/me", &token).await;
        assert_eq!(me.body["merchant_id"], other.as_str(), "{me:?}");
        assert_eq!(me.body["stores"], json!([]));
    }

    async fn sessions_of_one_kind_do_not_open_another_kinds_routes(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        app.authed(Method::GET, "/v1/admin/alerts", &token, None, OPERATOR_IP).await.assert_problem(403, "forbidden");
        app.authed(Method::GET, "/v1/wallet", &token, None, &jp_ip(7)).await.assert_problem(403, "forbidden");
        let op = app.operator_session(0).await;
        get(&app, "/v1/merchant/me", &op).await.assert_problem(403, "forbidden");
        let mut shopper = app.register().await;
        app.log_in(&mut shopper).await;
        get(&app, "/v1/merchant/me", shopper.session.as_ref().unwrap()).await.assert_problem(403, "forbidden");
        get(&app, "/v1/merchant/me", "not-a-token").await.assert_problem(401, "unauthenticated");
    }

    async fn the_dashboard_session_lives_in_its_own_cookie_with_the_origin_check(app: TestApp) {
        let owner = demo_owner(&app);
        let step = omamori::identity::totp::current_step();
        let body = json!({"email": owner.email, "password": owner.password, "totp_code": owner.code(step)});
        let resp = app.from(Method::POST, "/v1/merchant/login", STAFF_IP).header("Omamori-Session", "cookie").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let set_cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(set_cookie.starts_with("omamori_merchant="), "{set_cookie}");
        for part in ["Path=/v1/merchant", "HttpOnly", "SameSite=Strict"] {
            assert!(set_cookie.contains(part), "{set_cookie}");
        }
        let reply = Reply::from(resp).await;
        assert_eq!(reply.body["session"], "cookie", "{reply:?}");
        assert!(reply.body.get("session_token").is_none(), "{reply:?}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let me = app.from(Method::GET, "/v1/merchant/me", STAFF_IP).header("Cookie", &cookie).send().await.unwrap();
        assert_eq!(me.status(), 200);
        // A change by cookie without this site's Origin is refused; with it, it goes through.
        let r = app.from(Method::POST, "/v1/merchant/logout", STAFF_IP).header("Cookie", &cookie).send().await.unwrap();
        Reply::from(r).await.assert_problem(403, "csrf_rejected");
        let origin = app.url("").trim_end_matches('/').to_string();
        let r = app.from(Method::POST, "/v1/merchant/logout", STAFF_IP).header("Cookie", &cookie).header("Origin", origin).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert!(r.headers().get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
        let me = app.from(Method::GET, "/v1/merchant/me", STAFF_IP).header("Cookie", &cookie).send().await.unwrap();
        assert_eq!(me.status(), 401);
    }

    async fn the_command_line_creates_a_merchant_user_who_can_log_in(app: TestApp) {
        let merchant = app.sandbox_doc()["merchant_id"].as_str().unwrap().to_string();
        let store = app.sandbox_doc()["store_id"].as_str().unwrap().to_string();
        let email = unique_email("cli");
        let out = app.omamori(&["admin", "merchant-user", "create", "--merchant", &merchant, "--email", &email, "--role", "staff", "--store", &store]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        let field = |name: &str| stdout.lines().find_map(|l| l.strip_prefix(name)).unwrap().to_string();
        let staff = Staff { email: email.clone(), password: field("password: "), totp_secret: field("totp_secret: ") };
        let token = staff_login(&app, &staff).await;
        let me = get(&app, "/v1/merchant/me", &token).await;
        assert_eq!(me.body["role"], "staff", "{me:?}");
        // A bad role is refused with a message, and nothing is made.
        let out = app.omamori(&["admin", "merchant-user", "create", "--merchant", &merchant, "--email", &unique_email("x"), "--role", "boss"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("owner or staff"), "{out:?}");
    }
}
