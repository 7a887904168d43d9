//! Property-based fuzzing of every parser that takes outside input (issue 15).
//!
//! Each target feeds arbitrary and mutated-valid input to one parser and checks that it never
//! panics and that what it accepts is consistent (re-parses, round-trips, verifies). The normal
//! test run does a short smoke of each (`OMAMORI_FUZZ_CASES`, default 256); a long run is
//! `OMAMORI_FUZZ_CASES=1000000 cargo test --test api fuzz:: -- --test-threads 1` (the README records runs).
//! The router target sends arbitrary JSON bodies through the whole router in-process (with a
//! shopper's and an operator's session) and checks that no answer is a 5xx and every error is a
//! problem document; it is slower, so it runs a tenth of the cases, or `OMAMORI_FUZZ_ROUTE_CASES`.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, FileFailurePersistence};

fn cases() -> u32 {
    std::env::var("OMAMORI_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn config(cases: u32) -> RunnerConfig {
    RunnerConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("fuzz-regressions"))),
        max_shrink_iters: 2048,
        ..RunnerConfig::default()
    }
}

/// Any string, biased toward the bytes parsers care about.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9+ ()\\-.@a-zA-Z:,=\"'\\r\\n\\t\\x00\u{3000}\u{FF10}-\u{FF19}]{0,64}",
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// A valid value with a few random edits (a byte replaced, inserted or removed; a cut).
fn mutated(valid: String) -> impl Strategy<Value = String> {
    let len = valid.len().max(1);
    proptest::collection::vec((0..len, any::<char>(), 0..4u8), 0..4).prop_map(move |edits| {
        let mut chars: Vec<char> = valid.chars().collect();
        for (at, c, op) in edits {
            let at = at % (chars.len() + 1);
            match op {
                0 if at < chars.len() => chars[at] = c,
                1 => chars.insert(at, c),
                2 if at < chars.len() => {
                    chars.remove(at);
                }
                _ => chars.truncate(at),
            }
        }
        chars.into_iter().collect()
    })
}

fn store_qr() -> omamori::merchants::qr::StoreQr {
    omamori::merchants::qr::StoreQr {
        store_id: omamori::ids::StoreId::from_raw("sto_0193ab12cd34ef56"),
        merchant_name: "Omamori Demo Mart".into(),
        merchant_city: "Tokyo".into(),
        postal_code: Some("1000001".into()),
        mcc: "5411".into(),
    }
}

proptest! {
    #![proptest_config(config(cases()))]

    #[test]
    fn store_qr_payloads(raw in prop_oneof![text(), mutated(omamori::merchants::qr::build(&store_qr()))]) {
        use omamori::merchants::qr;
        if let Ok(parsed) = qr::parse(&raw) {
            // What parses builds a payload that parses to the same store.
            let again = qr::parse(&qr::build(&parsed)).expect("a built payload parses");
            prop_assert_eq!(again.store_id, parsed.store_id);
        }
    }

    #[test]
    fn payment_codes(raw in prop_oneof![text(), mutated("4649123456789012345".into()), "[ 0-9]{0,30}"], prefix in "[0-9]{0,7}") {
        use omamori::payments::code::PaymentCode;
        if let Some(code) = PaymentCode::parse(&raw, &prefix) {
            prop_assert!(code.as_str().starts_with(&prefix));
            prop_assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(PaymentCode::parse(code.as_str(), &prefix).is_some());
        }
    }

    #[test]
    fn phone_numbers(raw in prop_oneof![text(), mutated("+819012345678".into()), mutated("090-1234-5678".into())]) {
        use omamori::identity::PhoneNumber;
        if let Ok(phone) = PhoneNumber::parse(&raw) {
            let again = PhoneNumber::parse(phone.as_str()).expect("a normalised number parses");
            prop_assert_eq!(again.as_str(), phone.as_str());
        }
    }

    #[test]
    fn email_addresses(raw in prop_oneof![text(), mutated("hanako.yamada@example.jp".into())]) {
        use omamori::identity::Email;
        if let Ok(email) = Email::parse(&raw) {
            // What sign-up accepts, the mailer can send to (defect 7).
            prop_assert!(email.as_str().parse::<lettre::Address>().is_ok(), "{}", email.as_str());
            prop_assert!(Email::parse(email.as_str()).is_ok());
        }
    }

    #[test]
    fn geoip_csv(
        lines in proptest::collection::vec(prop_oneof![
            text(),
            mutated("192.0.2.0,192.0.2.255,JP".into()),
            mutated("2001:db8::,2001:db8::ffff,KR".into()),
            (any::<u32>(), any::<u32>(), "[A-Za-z]{2}").prop_map(|(a, b, c)| {
                format!("{},{},{c}", std::net::Ipv4Addr::from(a.min(b)), std::net::Ipv4Addr::from(a.max(b)))
            }),
        ], 0..8),
        probes in proptest::collection::vec(any::<std::net::IpAddr>(), 1..4),
    ) {
        if let Ok(geo) = omamori::ports::geo::GeoIp::from_csv_text(&lines.join("\n")) {
            for ip in probes {
                if let Some(country) = geo.country(ip) {
                    prop_assert!(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()), "{country}");
                }
            }
        }
    }

    #[test]
    fn configuration(pairs in proptest::collection::vec(
        (prop_oneof![
            proptest::sample::select(omamori::config::SETTINGS).prop_map(|s| format!("OMAMORI_{}", s.to_ascii_uppercase())),
            "OMAMORI_[A-Z_]{1,12}",
        ], prop_oneof![text(), "[0-9]{1,12}", Just("production".to_string()), Just("true".to_string())]),
        0..6,
    )) {
        match omamori::config::Config::load_from(None, pairs.clone()) {
            Ok(_) => {}
            Err(e) => {
                let known = ["invalid setting ", "unknown setting ", "missing setting "];
                prop_assert!(known.iter().any(|k| e.0.starts_with(k)), "{}", e.0);
                prop_assert!(!e.0.contains('\n'), "one line: {}", e.0);
            }
        }
    }

    #[test]
    fn signature_headers(
        header in prop_oneof![text(), mutated("t=1764633600,v1=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into())],
        body in text(),
        now in 0i64..4_000_000_000,
    ) {
        use omamori::notify::webhooks::{sign, verify};
        let secret = "whsec_fuzzing-secret-0123456789";
        let _ = verify(secret, &header, &body, now);
        // The real header verifies; any edit of it, the body or the clock beyond the tolerance does not.
        let good = sign(secret, now, &body);
        prop_assert!(verify(secret, &good, &body, now));
        let altered = format!("{}x", body);
        prop_assert!(!verify(secret, &good, &altered, now));
        prop_assert!(!verify(secret, &good, &body, now + 3600));
    }
}

/// A router on a fresh SQLite database with a shopper's and an operator's session.
struct Target {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    shopper: String,
    operator: String,
    routes: Vec<(http::Method, String)>,
    _dir: std::path::PathBuf,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("omamori-fuzz-{}", uuid::Uuid::new_v4()));
        let (router, shopper, operator, routes) = runtime.block_on(async {
            let config = omamori::config::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.clone(),
                sandbox: true,
                password_hash_concurrency: 2,
                ..omamori::config::Config::default()
            };
            let app = omamori::app::Application::build(config).await.unwrap();
            let state = app.state().clone();
            let base = format!("http://{}", app.local_addr());
            tokio::spawn(app.run_until(std::future::pending()));
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json")).unwrap()).unwrap();
            let (shopper, operator) = sessions(&base, &doc).await;
            assert!(!shopper.is_empty() && !operator.is_empty(), "the fuzz target logs in");
            let openapi = serde_json::to_value(omamori::http::openapi(&state)).unwrap();
            let mut routes = Vec::new();
            for (path, item) in openapi["paths"].as_object().unwrap() {
                for method in ["post", "put"] {
                    if item.get(method).is_some() {
                        let concrete: Vec<&str> =
                            path.split('/').map(|seg| if seg.starts_with('{') { "{ID}" } else { seg }).collect();
                        let concrete = concrete.join("/");
                        routes.push((method.to_uppercase().parse().unwrap(), concrete));
                    }
                }
            }
            (omamori::http::router(state), shopper, operator, routes)
        });
        Target { runtime, router, shopper, operator, routes, _dir: dir }
    })
}

/// Logs the sandbox's demo shopper and first operator in over HTTP.
async fn sessions(base: &str, doc: &serde_json::Value) -> (String, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, body: serde_json::Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let shopper = &doc["shopper"];
    let login = post(
        "/v1/login",
        serde_json::json!({"login": shopper["phone"], "password": shopper["password"], "device_id": "fuzz-device"}),
    )
    .await;
    let challenge = login["challenge_id"].as_str().unwrap_or_default().to_string();
    post(&format!("/v1/challenges/{challenge}/send"), serde_json::json!({"method": "sms"})).await;
    let messages = client
        .get(format!("{base}/v1/sandbox/messages"))
        .query(&[("to", shopper["phone"].as_str().unwrap_or_default())])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let code = messages["items"][0]["code"].as_str().unwrap_or_default().to_string();
    let verified =
        post(&format!("/v1/challenges/{challenge}/verify"), serde_json::json!({"method": "sms", "code": code})).await;
    let shopper_token = verified["session_token"].as_str().unwrap_or_default().to_string();
    let op = &doc["operators"][0];
    let login = post("/v1/admin/login", serde_json::json!({"email": op["email"], "password": op["password"]})).await;
    let challenge = login["challenge_id"].as_str().unwrap_or_default().to_string();
    let seed = omamori::identity::totp::base32_decode(op["totp_secret"].as_str().unwrap_or_default()).unwrap();
    let code = omamori::identity::totp::code_at_step(&seed, omamori::identity::totp::current_step());
    let verified =
        post(&format!("/v1/challenges/{challenge}/verify"), serde_json::json!({"method": "totp", "code": code})).await;
    let operator_token = verified["session_token"].as_str().unwrap_or_default().to_string();
    (shopper_token, operator_token)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop_oneof![
            text(),
            proptest::sample::select(vec![
                "amount",
                "card_id",
                "code",
                "method",
                "login",
                "password",
                "phone",
                "email",
                "name",
                "reason",
                "store_qr",
                "payment_code",
                "idempotency_key",
                "scope",
                "kind",
                "id",
                "items",
                "url",
                "category",
                "city",
                "advance_seconds",
                "from_account",
                "to_account",
                "number",
                "exp_month",
                "exp_year",
                "cvc",
            ])
            .prop_map(str::to_string),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn route_json_bodies() {
    use tower::ServiceExt;
    let t = target();
    // `OMAMORI_FUZZ_ROUTE_CASES` sets this target's count on its own (a long run of it alone).
    let own = std::env::var("OMAMORI_FUZZ_ROUTE_CASES").ok().and_then(|v| v.parse().ok());
    let mut runner = proptest::test_runner::TestRunner::new(config(own.unwrap_or((cases() / 10).max(16))));
    let strategy = (0..t.routes.len(), json_value(), 0..3u8, any::<bool>(), 0..3u8);
    runner
        .run(&strategy, |(route, body, who, raw, id)| {
            let (method, path) = &t.routes[route];
            // Path ids: a real-looking one, a number, or junk.
            let path = path.replace("{ID}", ["usr_0193ab", "1", "%00x"][id as usize]);
            let bytes = if raw {
                body.to_string().into_bytes()[..body.to_string().len() / 2].to_vec()
            } else {
                body.to_string().into_bytes()
            };
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(&path)
                .header("content-type", "application/json")
                .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                .header("x-device-id", "fuzz-device");
            match who {
                0 => req = req.header("authorization", format!("Bearer {}", t.shopper)),
                1 => req = req.header("authorization", format!("Bearer {}", t.operator)),
                _ => {}
            }
            let mut req = req.body(axum::body::Body::from(bytes)).unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
            let response = t.runtime.block_on(t.router.clone().oneshot(req)).unwrap();
            let status = response.status();
            prop_assert!(!status.is_server_error(), "{method} {path} {body}: {status}");
            if status.is_client_error() {
                let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
                prop_assert!(ct.starts_with("application/problem+json"), "{method} {path}: {status} {ct}");
            }
            Ok(())
        })
        .unwrap();
}
