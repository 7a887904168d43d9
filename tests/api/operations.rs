//! `/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`, request ids, and the problem document for
//! whatever goes wrong below the handlers.

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn health_readiness_and_metrics(app: TestApp) {
        let r = app.get("/healthz").await;
        assert_eq!(r.status, 200);
        let r = app.get("/readyz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["database"], match app.backend { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" });
        let r = app.get("/metrics").await;
        assert_eq!(r.status, 200);
        assert!(r.content_type().starts_with("text/plain"), "{r:?}");
        assert!(r.text.contains("omamori_http_requests_total"), "{}", r.text);
    }

    async fn readyz_fails_when_the_database_is_gone(app: TestApp) {
        assert_eq!(app.get("/readyz").await.status, 200);
        app.db().close().await;
        let r = app.get("/readyz").await;
        r.assert_problem(503, "unavailable");
        // Liveness does not depend on the database.
        assert_eq!(app.get("/healthz").await.status, 200);
    }

    async fn readyz_answers_503_while_draining(app: TestApp) {
        let mut app = TestApp::spawn_with(app.backend, |c| c.shutdown_drain_secs = 2).await.unwrap();
        assert_eq!(app.get("/readyz").await.status, 200);
        app.begin_stop();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Still serving (a balancer's probe gets its answer), but no longer ready.
        let r = app.get("/readyz").await;
        r.assert_problem(503, "unavailable");
        assert_eq!(app.get("/healthz").await.status, 200);
        app.stop().await;
    }

    async fn metrics_behind_a_token_or_on_their_own_listener(app: TestApp) {
        let token = "metrics-token-0123456789";
        let app = TestApp::spawn_with(app.backend, |c| {
            c.metrics_token = Some(omamori::secret::Secret::new(token.to_string()));
            c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .await
        .unwrap();
        app.get("/metrics").await.assert_problem(401, "unauthenticated");
        let wrong = app.client.get(app.url("/metrics")).bearer_auth("metrics-token-wrong-0000").send().await.unwrap();
        Reply::from(wrong).await.assert_problem(401, "unauthenticated");
        let r = Reply::from(app.client.get(app.url("/metrics")).bearer_auth(token).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{r:?}");
        // The metrics listener serves them without a token, and nothing else.
        let base = app.metrics_base.clone().expect("a metrics listener");
        let r = Reply::from(app.client.get(format!("{base}/metrics")).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.text.contains("omamori_http_requests_total"), "{}", r.text);
        let r = Reply::from(app.client.get(format!("{base}/v1/openapi.json")).send().await.unwrap()).await;
        r.assert_problem(404, "not_found");
    }

    async fn production_keeps_metrics_off_the_main_listener(app: TestApp) {
        use omamori::config::{Environment, Key};
        let app = TestApp::spawn_with(app.backend, |c| {
            c.environment = Environment::Production;
            c.keys.card_fingerprint = Some(Key::generate("k1").into());
            c.keys.totp_encryption = Some(Key::generate("k1").into());
            c.keys.webhook_signing = Some(Key::generate("k1").into());
            c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .await
        .unwrap();
        app.get("/metrics").await.assert_problem(404, "not_found");
        let base = app.metrics_base.clone().expect("a metrics listener");
        let r = Reply::from(app.client.get(format!("{base}/metrics")).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    async fn every_response_carries_a_request_id(app: TestApp) {
        let a = app.get("/healthz").await;
        let b = app.get("/no/such/route").await;
        let id_a = a.headers.get("x-request-id").expect("a request id").to_str().unwrap().to_string();
        let id_b = b.headers.get("x-request-id").expect("a request id on errors too").to_str().unwrap().to_string();
        assert_ne!(id_a, id_b);
        assert_eq!(uuid::Uuid::parse_str(&id_a).unwrap().get_version_num(), 4);
        // A caller's own id is kept, so that a POS vendor can correlate its logs with ours.
        let r = app.client.get(app.url("/healthz")).header("x-request-id", "pos-123").send().await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "pos-123");
    }

    async fn unknown_routes_and_methods_are_problems(app: TestApp) {
        app.get("/v1/nothing-here").await.assert_problem(404, "not_found");
        let r = Reply::from(app.client.delete(app.url("/healthz")).send().await.unwrap()).await;
        r.assert_problem(405, "method_not_allowed");
        assert!(r.headers.get("allow").is_some(), "{r:?}");
    }

    async fn openapi_describes_every_route(app: TestApp) {
        let r = app.get("/v1/openapi.json").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["openapi"], "3.1.0");
        let paths = r.body["paths"].as_object().unwrap();
        for path in ["/healthz", "/readyz", "/metrics", "/v1/sandbox/messages", "/v1/sandbox/clock",
                     "/v1/sandbox/accounts", "/v1/sandbox/accounts/{id}", "/v1/sandbox/transfers"] {
            assert!(paths.contains_key(path), "{path} missing from the OpenAPI document");
        }
        // Every documented path answers something other than 404 (the document matches the router).
        for path in paths.keys() {
            let concrete = path.replace("{id}", "1");
            let methods = paths[path].as_object().unwrap();
            if methods.contains_key("get") {
                let r = app.get(&concrete).await;
                assert_ne!(r.body["code"], "not_found", "{path} is documented but not routed: {r:?}");
                assert!(r.status.as_u16() != 405, "{path}: {r:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_problem_not_a_crash() {
    // A route that panics, behind the same layers that wrap every real route.
    use axum::routing::get;
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let router = omamori::http::with_layers(
        axum::Router::new().route("/boom", get(boom)).route("/healthz", get(|| async { "ok" })),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let r = Reply::from(app.client.get(format!("http://{addr}/boom")).send().await.unwrap()).await;
    r.assert_problem(500, "internal_error");
    assert!(!r.text.contains("4242"), "the panic message must not reach the client: {r:?}");
    // The server is still up.
    let r = Reply::from(app.client.get(format!("http://{addr}/healthz")).send().await.unwrap()).await;
    assert_eq!(r.status, 200);
}

async fn boom() -> &'static str {
    panic!("secret 4242424242424242")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_in_wal_mode_in_one_file_under_the_data_directory() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.database_url = None).await.unwrap();
    assert!(app.data_dir.0.join("omamori.db").exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(app.db().pool()).await.unwrap();
    assert_eq!(mode, "wal");
}

/// Sends raw bytes and reads the whole answer (the server closes the connection after a request
/// it cannot parse).
async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_problems_too() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let addr = app.base.trim_start_matches("http://").to_string();
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100 * 1024));
    let big_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a control character in a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a duplicate Content-Length",
            b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
            400,
            "bad_request",
        ),
        ("invalid UTF-8 in the path", b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "bad_request"),
        ("a 100 KB path", long_path.into_bytes(), 414, "uri_too_long"),
        ("a 1 MiB header", big_header.into_bytes(), 431, "headers_too_large"),
    ];
    for (what, request, status, code) in cases {
        let answer = raw_exchange(&addr, &request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{what}: {head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body:?}"));
        assert_eq!(problem["status"], status, "{what}");
        assert_eq!(problem["code"], code, "{what}");
    }
    // A good request on the same server is untouched, and keep-alive still works.
    let answer = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("HTTP/1.1 404 Not Found\r\n") && answer.contains("\"code\":\"not_found\""), "{answer}");
}
