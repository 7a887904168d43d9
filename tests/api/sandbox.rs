//! Sandbox mode: the shared service clock, the message list, `sandbox.json`, and its absence
//! outside sandbox mode.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn the_demo_shopper_logs_in_at_once_with_a_card_and_ten_thousand_yen(app: TestApp) {
        // A second start on the same database finds the shopper and makes no second one.
        let again = app.another_instance().await;
        let doc = again.sandbox_doc();
        let shopper = &doc["shopper"];
        assert!(doc["wallet_url"].as_str().unwrap().ends_with("/app"), "{doc}");
        let phone = shopper["phone"].as_str().unwrap();
        let mut s = Shopper {
            user_id: String::new(),
            phone: phone.to_string(),
            email: shopper["email"].as_str().unwrap().to_string(),
            password: shopper["password"].as_str().unwrap().to_string(),
            device_id: "demo-phone".into(),
            ip: jp_ip(77),
            session: None,
            device_token: None,
        };
        app.log_in(&mut s).await;
        assert_eq!(app.wallet(&s).await["balance"], 10_000);
        let cards = app.authed(reqwest::Method::GET, "/v1/cards", s.session.as_ref().unwrap(), None, &s.ip).await;
        assert_eq!(cards.body["items"].as_array().unwrap().len(), 1, "{cards:?}");
        assert_eq!(cards.body["items"][0]["status"], "active");
        again.stop().await;
    }

    async fn the_clock_moves_forward_for_every_instance(app: TestApp) {
        let other = app.another_instance().await;
        let before = app.state.clock.now();
        let r = app.advance_clock(3 * 24 * 3600).await;
        assert_eq!(r.status, 200, "{r:?}");
        let now = time::OffsetDateTime::parse(r.body["now"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
        assert!(now - before >= time::Duration::hours(72), "{now} vs {before}");
        // The other instance reads the offset from the database within its refresh interval.
        tokio::time::sleep(omamori::store::clock::REFRESH_INTERVAL * 3).await;
        assert!(other.state.clock.now() - before >= time::Duration::hours(72));
        // It never goes back, and reading it is advancing by zero.
        let r = other.advance_clock(0).await;
        assert_eq!(r.status, 200);
        app.advance_clock(-1).await.assert_problem(422, "invalid_body");
        app.post("/v1/sandbox/clock", &json!({"advance_seconds": "soon"}), None).await.assert_problem(422, "invalid_body");
        // The clock stops 100 years ahead instead of overflowing.
        let ten_years = 10 * 366 * 24 * 3600;
        let mut refused = None;
        for i in 0..12 {
            let r = app.advance_clock(ten_years).await;
            if r.status != 200 {
                refused = Some((i, r));
                break;
            }
        }
        let (i, r) = refused.expect("the clock never refused to move");
        r.assert_problem(422, "clock_limit");
        assert!(i >= 9, "refused too early, after {i} moves");
        assert_eq!(app.get("/healthz").await.status, 200);
        other.stop().await;
    }

    async fn messages_are_listed_newest_first_once_the_request_answered(app: TestApp) {
        let owner = "hanako@example.jp";
        let wallet = app.create_account("wallet", Some(owner)).await;
        let funding = app.create_account("funding_clearing", None).await;
        assert!(app.messages(owner).await.is_empty());
        assert_eq!(app.transfer(funding, wallet, 100, "m1").await.status, 201);
        assert_eq!(app.transfer(funding, wallet, 250, "m2").await.status, 201);
        let items = app.messages(owner).await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0]["body"].as_str().unwrap().contains("¥250"), "{items:?}");
        assert!(items[1]["body"].as_str().unwrap().contains("¥100"), "{items:?}");
        assert_eq!(items[0]["channel"], "email");
        assert_eq!(items[0]["to"], owner);
        assert!(items[0]["code"].is_null());
        // A declined movement leaves no message: the notice commits with the money or not at all.
        let shop = app.create_account("merchant", None).await;
        app.transfer(wallet, shop, 10_000, "m3").await.assert_problem(402, "insufficient_funds");
        assert_eq!(app.messages(owner).await.len(), 2);
        app.get("/v1/sandbox/messages").await.assert_problem(400, "invalid_query");
    }

    async fn sandbox_json_describes_the_demo_data(app: TestApp) {
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(app.data_dir.0.join("sandbox.json")).unwrap()).unwrap();
        assert_eq!(doc["base_url"], app.base);
        let wallets = doc["demo_wallets"].as_array().unwrap();
        assert_eq!(wallets.len(), 2);
        let (a, b) = (wallets[0]["account_id"].as_i64().unwrap(), wallets[1]["account_id"].as_i64().unwrap());
        assert_eq!(app.balance(a).await, 10_000);
        let r = app.transfer(a, b, 500, "demo").await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(app.balance(b).await, 10_500);
        // A restart on the same database finds the demo data instead of making more.
        let again = app.another_instance().await;
        assert_eq!(again.balance(b).await, 10_500);
        let doc2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(again.data_dir.0.join("sandbox.json")).unwrap()).unwrap();
        assert_eq!(doc2["demo_wallets"][1]["account_id"], b);
        again.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_routes_do_not_exist_outside_sandbox_mode() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.sandbox = false).await.unwrap();
    app.get("/v1/sandbox/messages?to=x").await.assert_problem(404, "not_found");
    app.post("/v1/sandbox/clock", &json!({"advance_seconds": 60}), None).await.assert_problem(404, "not_found");
    app.post("/v1/sandbox/transfers", &json!({}), Some("k")).await.assert_problem(404, "not_found");
    let doc = app.get("/v1/openapi.json").await;
    assert!(doc.body["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/v1/sandbox")));
    assert!(!app.data_dir.0.join("sandbox.json").exists());
}
