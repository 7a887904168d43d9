//! The cashier's till at `/pos`: pairing a browser with a terminal key (an `HttpOnly` cookie for
//! `/v1/pos`, with the same `Origin` rule as shoppers' cookies), and the till in a real browser
//! (tests/browser/till.py holds the journeys), run as the wallet's are (`browser.rs`): a sandbox
//! server, the demo terminal's key from `sandbox.json`, and a funded shopper whose payment codes
//! the script asks the API for.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{browser_app, run_script};
use crate::helpers::*;

/// A request from the till page: its cookie, and its `Origin` when `same_origin`.
async fn from_till(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
    same_origin: bool,
) -> Reply {
    let mut req = app.client.request(method, app.url(path));
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("omamori_terminal={c}"));
    }
    if same_origin {
        req = req.header("Origin", app.base.clone());
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    Reply::from(req.send().await.unwrap()).await
}

both_backends! {
    async fn a_till_pairs_by_cookie_and_the_cookie_obeys_the_origin_rule(app: TestApp) {
        let key = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let pair = json!({"key": key});
        // Only the server's own page may pair, and only with a live key.
        from_till(&app, Method::POST, "/v1/pos/pair", None, Some(&pair), false).await.assert_problem(403, "csrf_rejected");
        for bad in ["tk_nope", "tk_a; Path=/", "", "x".repeat(101).as_str()] {
            from_till(&app, Method::POST, "/v1/pos/pair", None, Some(&json!({"key": bad})), true).await.assert_problem(401, "unauthenticated");
        }
        let r = from_till(&app, Method::POST, "/v1/pos/pair", None, Some(&pair), true).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["store_name"], "Demo Mart Shibuya");
        assert!(r.body["terminal_id"].as_str().unwrap().starts_with("trm"), "{r:?}");
        assert!(!r.text.contains(&key), "the key is echoed in the body");
        let set = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(set.starts_with(&format!("omamori_terminal={key};")), "{set}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/v1/pos", "Max-Age="] {
            assert!(set.contains(part), "{set} lacks {part}");
        }
        assert!(!set.contains("Secure"), "a loopback page gets no Secure cookie: {set}");
        assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
        // Every POS route takes the cookie; a change made with it needs the page's own Origin.
        let me = from_till(&app, Method::GET, "/v1/pos/terminal", Some(&key), None, false).await;
        assert_eq!(me.body["terminal_id"], r.body["terminal_id"], "{me:?}");
        from_till(&app, Method::GET, "/v1/pos/terminal", None, None, false).await.assert_problem(401, "unauthenticated");
        from_till(&app, Method::GET, "/v1/pos/terminal", Some("tk_revoked"), None, false).await.assert_problem(401, "unauthenticated");
        let (s, _) = app.funded_shopper(5_000).await;
        let charge = json!({"code": app.payment_code(&s).await, "amount": 700});
        from_till(&app, Method::POST, "/v1/pos/payments", Some(&key), Some(&charge), false).await.assert_problem(403, "csrf_rejected");
        from_till(&app, Method::POST, "/v1/pos/reversals", Some(&key), Some(&json!({"idempotency_key": "k"})), false)
            .await.assert_problem(403, "csrf_rejected");
        let paid = app.client.post(app.url("/v1/pos/payments")).header("Cookie", format!("omamori_terminal={key}"))
            .header("Origin", app.base.clone()).header("Idempotency-Key", "till-1").json(&charge).send().await.unwrap();
        let paid = Reply::from(paid).await;
        assert_eq!(paid.status, 201, "{paid:?}");
        assert_eq!(app.wallet(&s).await["balance"], 4_300);
        // Unpairing clears the cookie (and needs the page's Origin like any change).
        from_till(&app, Method::POST, "/v1/pos/unpair", Some(&key), None, false).await.assert_problem(403, "csrf_rejected");
        let out = from_till(&app, Method::POST, "/v1/pos/unpair", Some(&key), None, true).await;
        assert_eq!(out.status, 204, "{out:?}");
        let cleared = out.headers.get("set-cookie").unwrap().to_str().unwrap();
        assert!(cleared.starts_with("omamori_terminal=;") && cleared.contains("Max-Age=0"), "{cleared}");
    }

    async fn a_till_lists_its_own_payments(app: TestApp) {
        let doc = app.sandbox_doc();
        let key = doc["terminal_key"].as_str().unwrap().to_string();
        let op = app.operator_session(0).await;
        let t = app.authed(Method::POST, &format!("/v1/admin/stores/{}/terminals", doc["store_id"].as_str().unwrap()), &op, None, OPERATOR_IP).await;
        let other = t.body["key"].as_str().unwrap().to_string();
        let (s, _) = app.funded_shopper(5_000).await;
        for (terminal, amount, idem) in [(&key, 100, "a"), (&other, 200, "b"), (&key, 300, "c")] {
            let code = app.payment_code(&s).await;
            let r = app.pos(Method::POST, "/v1/pos/payments", terminal, Some(&json!({"code": code, "amount": amount})), Some(idem)).await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        let amounts = |r: &Reply| r.body["items"].as_array().unwrap().iter().map(|p| p["amount"].as_i64().unwrap()).collect::<Vec<_>>();
        let mine = app.pos(Method::GET, "/v1/pos/payments?this_terminal=true", &key, None, None).await;
        assert_eq!(amounts(&mine), [300, 100], "{mine:?}");
        let theirs = app.pos(Method::GET, "/v1/pos/payments?this_terminal=true", &other, None, None).await;
        assert_eq!(amounts(&theirs), [200]);
        let all = app.pos(Method::GET, "/v1/pos/payments", &key, None, None).await;
        assert!(amounts(&all).starts_with(&[300, 200, 100]), "{all:?}");
        app.pos(Method::GET, "/v1/pos/payments?this_terminal=maybe", &key, None, None).await.assert_problem(400, "invalid_query");
        // A terminal at another store of the same merchant sees none of this store's payments.
        let m = doc["merchant_id"].as_str().unwrap();
        let st = app.authed(Method::POST, &format!("/v1/admin/merchants/{m}/stores"), &op,
            Some(&json!({"name": "Second branch", "city": "Osaka"})), OPERATOR_IP).await;
        assert_eq!(st.status, 201, "{st:?}");
        let t = app.authed(Method::POST, &format!("/v1/admin/stores/{}/terminals", st.body["store_id"].as_str().unwrap()), &op, None, OPERATOR_IP).await;
        let elsewhere = t.body["key"].as_str().unwrap().to_string();
        let listed = app.pos(Method::GET, "/v1/pos/payments", &elsewhere, None, None).await;
        assert_eq!(amounts(&listed), Vec::<i64>::new(), "{listed:?}");
        let id = all.body["items"][0]["payment_id"].as_str().unwrap();
        app.pos(Method::GET, &format!("/v1/pos/payments/{id}"), &elsewhere, None, None).await.assert_problem(404, "not_found");
        assert_eq!(app.pos(Method::GET, &format!("/v1/pos/payments/{id}"), &key, None, None).await.status, 200);
    }
}

async fn till_journey(journey: &str) {
    let Some(app) = browser_app().await else { return };
    let (s, _card) = app.funded_shopper(10_000).await;
    let fixture: Value = json!({
        "terminal_key": app.sandbox_doc()["terminal_key"],
        "shopper": {"session": s.session, "device_id": s.device_id, "ip": s.ip},
    });
    let journey = journey.to_string();
    tokio::task::spawn_blocking(move || run_script(&app, "till.py", &journey, &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_till_pairs_charges_declines_in_words_refunds_and_unpairs() {
    till_journey("till").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_till_retries_a_lost_answer_once_and_reverses_when_it_gives_up() {
    till_journey("retry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_till_in_japanese() {
    till_journey("japanese").await;
}
