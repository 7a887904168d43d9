//! Bad input never produces a 5xx: every route in the OpenAPI document gets malformed, truncated,
//! oversized, wrongly typed and wrongly declared bodies, and must answer each with a 4xx problem.
//! The routes come from the served document, so a route added later is covered without editing
//! this file.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// Bodies that no route accepts, each with its content type. `schema_props` are the request's
/// property names with their declared JSON types; a value of the declared type is not "wrong".
fn hostile_bodies(schema_props: &[(String, Vec<String>)]) -> Vec<(String, &'static str, Vec<u8>)> {
    let mut bodies: Vec<(String, &'static str, Vec<u8>)> = vec![
        ("truncated".into(), "application/json", br#"{"amount": 10"#.to_vec()),
        ("malformed".into(), "application/json", b"{amount: ten}".to_vec()),
        ("not json".into(), "application/json", b"hello".to_vec()),
        ("array".into(), "application/json", b"[1,2,3]".to_vec()),
        ("string".into(), "application/json", br#""text""#.to_vec()),
        ("number".into(), "application/json", b"12".to_vec()),
        ("null".into(), "application/json", b"null".to_vec()),
        ("huge number".into(), "application/json", b"{\"amount\": 1e400}".to_vec()),
        ("invalid utf-8".into(), "application/json", b"{\"a\": \"\xff\xfe\"}".to_vec()),
        ("nul byte".into(), "application/json", b"{\"a\": \"\\u0000\"}".to_vec()),
        (
            "deep nesting".into(),
            "application/json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        ("wrong content type".into(), "text/plain", br#"{"amount": 10}"#.to_vec()),
        ("form".into(), "application/x-www-form-urlencoded", b"amount=10".to_vec()),
        ("oversized".into(), "application/json", format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024)).into_bytes()),
        ("unknown field".into(), "application/json", br#"{"definitely_not_a_field": 1}"#.to_vec()),
    ];
    // Every known field given every wrong type in turn, the others left out or wrong too.
    let wrong: [Value; 8] =
        [json!(null), json!({"x": 1}), json!([1]), json!("text"), json!(-1), json!(1.5), json!(true), json!(i64::MAX)];
    for (prop, types) in schema_props {
        for w in &wrong {
            let kind = match w {
                Value::Null => "null",
                Value::String(_) => "string",
                Value::Bool(_) => "boolean",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
                Value::Number(n) if n.is_i64() => "integer",
                Value::Number(_) => "number",
            };
            if types.iter().any(|t| t == kind) {
                continue;
            }
            let mut obj = serde_json::Map::new();
            for (other, _) in schema_props {
                obj.insert(other.clone(), if other == prop { w.clone() } else { json!(1) });
            }
            bodies.push((
                format!("{prop} = {w}"),
                "application/json",
                serde_json::to_vec(&Value::Object(obj)).unwrap(),
            ));
        }
    }
    bodies
}

/// The property names of an operation's request body schema, following one `$ref`.
fn request_props(doc: &Value, op: &Value) -> Vec<(String, Vec<String>)> {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    let schema = match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    };
    let types = |p: &Value| -> Vec<String> {
        match &p["type"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            // `oneOf` with null and the like: treat as nullable of any type.
            _ => vec!["null".into()],
        }
    };
    schema["properties"].as_object().map(|p| p.iter().map(|(k, v)| (k.clone(), types(v))).collect()).unwrap_or_default()
}

both_backends! {
    async fn every_route_answers_bad_input_with_a_4xx_problem(app: TestApp) {
        let doc = app.get("/v1/openapi.json").await.body;
        let paths = doc["paths"].as_object().unwrap().clone();
        let mut checked = 0;
        for (path, item) in &paths {
            for (method, op) in item.as_object().unwrap() {
                let props = request_props(&doc, op);
                // Path parameters: a plausible id, a huge one, a word, an encoded NUL.
                let variants: Vec<String> = if path.contains('{') {
                    ["1", "99999999999999999999999", "abc", "%00", "-1"].iter().map(|v| {
                        let mut p = path.clone();
                        while let (Some(a), Some(b)) = (p.find('{'), p.find('}')) { p.replace_range(a..=b, v); }
                        p
                    }).collect()
                } else {
                    vec![path.clone()]
                };
                for concrete in &variants {
                    let bodies = if method == "get" { vec![("no body".to_string(), "application/json", Vec::new())] } else { hostile_bodies(&props) };
                    for (label, content_type, body) in bodies {
                        for key in [None, Some("bad-input-key")] {
                            let mut req = app.client.request(method.to_uppercase().parse().unwrap(), app.url(concrete))
                                .header("Content-Type", content_type);
                            if let Some(k) = key { req = req.header("Idempotency-Key", format!("{k}-{checked}")); }
                            if method != "get" { req = req.body(body.clone()); }
                            let r = Reply::from(req.send().await.unwrap()).await;
                            checked += 1;
                            if method == "get" && r.status.is_success() { continue; }
                            assert!(r.status.is_client_error(), "{method} {concrete} with {label}: {r:?}");
                            assert_eq!(r.content_type(), "application/problem+json", "{method} {concrete} with {label}: {r:?}");
                            assert!(r.body["code"].as_str().is_some_and(|c| !c.is_empty()), "{method} {concrete} with {label}: {r:?}");
                            assert!(!r.text.contains("xxxxxxxx"), "an error echoed the body: {r:?}");
                        }
                    }
                }
            }
        }
        assert!(checked > 150, "only {checked} requests were made: did the OpenAPI document lose its routes?");
        // And nothing of it was written to the ledger.
        assert!(omamori::ledger::verify(app.db()).await.unwrap().is_empty());
    }

    async fn the_error_codes_are_precise(app: TestApp) {
        let send = |ct: &'static str, body: Vec<u8>| {
            let req = app.client.post(app.url("/v1/sandbox/clock")).header("Content-Type", ct).body(body);
            async move { Reply::from(req.send().await.unwrap()).await }
        };
        send("application/json", br#"{"advance_seconds": 1"#.to_vec()).await.assert_problem(400, "malformed_json");
        send("text/plain", br#"{"advance_seconds": 1}"#.to_vec()).await.assert_problem(415, "unsupported_media_type");
        send("application/json", vec![b' '; 65 * 1024]).await.assert_problem(413, "payload_too_large");
        let big = format!("{{\"advance_seconds\": 1, \"pad\": \"{}\"}}", "x".repeat(64 * 1024));
        send("application/json", big.into_bytes()).await.assert_problem(413, "payload_too_large");
        let r = send("application/json", br#"{"advance_seconds": "4242424242424242"}"#.to_vec()).await;
        r.assert_problem(422, "invalid_body");
        assert!(r.body["detail"].as_str().unwrap().contains("advance_seconds"), "{r:?}");
        assert!(!r.text.contains("4242"), "an error echoed a submitted value: {r:?}");
        send("application/json", b"{}".to_vec()).await.assert_problem(422, "invalid_body");
        // NUL in text is refused before it reaches a database (PostgreSQL cannot store it).
        let r = app.post("/v1/sandbox/accounts", &serde_json::json!({"kind": "wallet", "owner": "a\u{0}@b.jp"}), None).await;
        r.assert_problem(422, "invalid_body");
        app.get("/v1/sandbox/messages?to=%00").await.assert_problem(400, "invalid_query");
        // ...and in path ids, with an otherwise valid body.
        for path in ["/v1/challenges/%00/verify", "/v1/challenges/chl_%00/verify", "/v1/signup/%00/verify"] {
            let body = serde_json::json!({"method": "sms", "code": "123456", "phone_code": "1", "email_code": "1"});
            let r = app.post(path, &body, None).await;
            assert!(r.status == 404 || r.status == 422, "{path}: {r:?}");
            assert!(r.status.is_client_error());
        }
        let r = app.post("/v1/challenges/%00/verify", &serde_json::json!({"method": "sms", "code": "123456"}), None).await;
        r.assert_problem(404, "not_found");
        // A body just under the limit is read (and then refused for its shape, not its size).
        let fits = format!("{{\"advance_seconds\": 1, \"pad\": \"{}\"}}", "x".repeat(60 * 1024));
        send("application/json", fits.into_bytes()).await.assert_problem(422, "invalid_body");
        // `application/merge-patch+json` style types are JSON too.
        let r = send("application/vnd.omamori+json; charset=utf-8", br#"{"advance_seconds": 0}"#.to_vec()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}
