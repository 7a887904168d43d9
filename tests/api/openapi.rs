//! The OpenAPI document at `/v1/openapi.json` is the contract clients are generated from, so it is
//! held to rules here, operation by operation:
//! - (a) every 2xx answer other than `204` has a content schema;
//! - (b) every 4xx and 5xx answer is `application/problem+json` referencing the one `Problem`
//!   schema, and its description names the `code`s it carries (in backticks);
//! - (c) an operation whose route refuses a request without a token (`401 unauthenticated`, asked
//!   of the running server) declares `security` and its `401` and `403`; one that declares
//!   `security` does refuse such a request;
//! - (d) path parameters are exactly the template's `{names}`, and required;
//! - (f) a JSON request body comes with `400` (malformed JSON) and `422` (invalid fields);
//! - (g) a declared `Idempotency-Key` is a required header of at most 255 characters, with `400`
//!   and `409`; a route that answers `400 idempotency_key_required` declares it.
//!
//! The document as a whole must also hold together (e): every `$ref` resolves, operation ids are
//! unique, security requirements name declared schemes, and `Problem.code` lists exactly
//! `PROBLEM_CODES`, which in turn are exactly the codes written under `src/`.
//!
//! [`INCOMPLETE`] lists operations that do not keep the rules yet. Each must still break one, so
//! the list only shrinks: when an operation is complete the test names the entry to delete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

/// Operations still short of the rules, as (method, path). Empty: every operation keeps them; an
/// entry here is debt, named.
const INCOMPLETE: &[(&str, &str)] = &[];

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
const PROBLEM_REF: &str = "#/components/schemas/Problem";

/// Each operation of the document: (METHOD, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// The `{names}` of a path template.
fn template_names(path: &str) -> BTreeSet<String> {
    path.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string())).collect()
}

/// The words in backticks of a description that are problem codes.
fn codes_named(description: &str, codes: &BTreeSet<String>) -> Vec<String> {
    description.split('`').skip(1).step_by(2).filter(|w| codes.contains(*w)).map(str::to_string).collect()
}

/// (a), (b): the answers' content.
fn response_rules(op: &Value, codes: &BTreeSet<String>, broken: &mut Vec<String>) {
    let Some(responses) = op["responses"].as_object() else {
        broken.push("declares no responses".into());
        return;
    };
    for (status, response) in responses {
        let content = response["content"].as_object();
        if status.starts_with('2') && status != "204" {
            let typed = content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m["schema"].is_object()));
            if !typed {
                broken.push(format!("its {status} has no content schema"));
            }
        }
        if status.starts_with('4') || status.starts_with('5') {
            let problem = content.is_some_and(|c| {
                c.len() == 1 && c.get("application/problem+json").is_some_and(|m| m["schema"]["$ref"] == PROBLEM_REF)
            });
            if !problem {
                broken.push(format!("its {status} is not application/problem+json with a $ref to Problem"));
            }
            if codes_named(response["description"].as_str().unwrap_or(""), codes).is_empty() {
                broken.push(format!("the description of its {status} names no `code`"));
            }
        }
    }
}

/// (d), (f), (g): parameters and request bodies.
fn request_rules(path: &str, op: &Value, broken: &mut Vec<String>) {
    let params: Vec<&Value> = op["parameters"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
    let declared: BTreeSet<String> =
        params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str().map(str::to_string)).collect();
    let template = template_names(path);
    for name in declared.difference(&template) {
        broken.push(format!("declares a path parameter `{name}` that is not in its path"));
    }
    for name in template.difference(&declared) {
        broken.push(format!("does not declare its path parameter `{name}`"));
    }
    for p in params.iter().filter(|p| p["in"] == "path" && p["required"] != true) {
        broken.push(format!("its path parameter {} is not required", p["name"]));
    }
    let responds = |status: &str| op["responses"].get(status).is_some();
    if op["requestBody"]["content"].get("application/json").is_some() {
        for status in ["400", "422"] {
            if !responds(status) {
                broken.push(format!("takes a JSON body but does not declare its {status}"));
            }
        }
    }
    if let Some(key) =
        params.iter().find(|p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key")))
    {
        if key["in"] != "header" || key["required"] != true || key["schema"]["maxLength"] != 255 {
            broken.push("its Idempotency-Key is not a required header of at most 255 characters".into());
        }
        for status in ["400", "409"] {
            if !responds(status) {
                broken.push(format!("takes an Idempotency-Key but does not declare its {status}"));
            }
        }
    }
}

/// The path with every `{name}` filled in with an id-shaped value.
fn concrete(path: &str) -> String {
    let mut p = path.to_string();
    while let (Some(a), Some(b)) = (p.find('{'), p.find('}')) {
        p.replace_range(a..=b, "1");
    }
    p
}

/// (c) and the `Idempotency-Key` half of (g), from what the server answers without a token.
async fn probe_rules(app: &TestApp, method: &str, path: &str, op: &Value, broken: &mut Vec<String>) {
    let mut req = app.client.request(method.parse().unwrap(), app.url(&concrete(path)));
    if method != "GET" && method != "DELETE" {
        req = req.header("Content-Type", "application/json").body("{}");
    }
    let r = Reply::from(req.send().await.expect("request sent")).await;
    let declares_security = op["security"].as_array().is_some_and(|s| !s.is_empty());
    if r.status == 401 && r.body["code"] == "unauthenticated" {
        let schemes: BTreeSet<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|s| s.keys().map(String::as_str))
            .collect();
        if !schemes.contains("bearer") && !schemes.contains("session") {
            broken.push("refuses a request without a token but declares no bearer or session security".into());
        }
        for status in ["401", "403"] {
            if op["responses"].get(status).is_none() {
                broken.push(format!("refuses a request without a token but does not declare its {status}"));
            }
        }
    } else if declares_security {
        broken.push(format!("declares security, but without a token it answers {} {}", r.status, r.body["code"]));
    }
    if r.status == 400 && r.body["code"] == "idempotency_key_required" {
        let declared = op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == "Idempotency-Key");
        if !declared {
            broken.push("answers 400 idempotency_key_required but does not declare the Idempotency-Key header".into());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_keeps_the_documents_rules() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = app.get("/v1/openapi.json").await;
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.body;
    let codes: BTreeSet<String> = problem_codes(&doc).into_iter().collect();
    let mut listed: BTreeSet<(String, String)> =
        INCOMPLETE.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let mut failures = Vec::new();
    for (method, path, op) in operations(&doc) {
        let mut broken = Vec::new();
        response_rules(&op, &codes, &mut broken);
        request_rules(&path, &op, &mut broken);
        probe_rules(&app, &method, &path, &op, &mut broken).await;
        let exempt = listed.remove(&(method.clone(), path.clone()));
        match (exempt, broken.is_empty()) {
            (false, false) => failures.push(format!("{method} {path}: {}", broken.join("; "))),
            (true, true) => failures.push(format!(
                "{method} {path} keeps every rule now: delete (\"{method}\", \"{path}\") from INCOMPLETE in tests/api/openapi.rs"
            )),
            _ => {}
        }
    }
    for (method, path) in listed {
        failures.push(format!("INCOMPLETE lists {method} {path}, which the document does not have: delete it"));
    }
    assert!(failures.is_empty(), "the OpenAPI document breaks its rules:\n{}", failures.join("\n"));
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.to_string(), r.clone())),
                    _ => refs(v, &format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The `enum` of `Problem.code`.
fn problem_codes(doc: &Value) -> Vec<String> {
    let code = &doc["components"]["schemas"]["Problem"]["properties"]["code"];
    code["enum"].as_array().expect("Problem.code has an enum").iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_holds_together() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let doc = app.get("/v1/openapi.json").await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // The same document, built without a server.
    assert_eq!(serde_json::to_value(omamori::http::openapi(&app.state)).unwrap(), doc);
    let mut all = Vec::new();
    refs(&doc, "#", &mut all);
    assert!(all.len() > 100, "only {} $refs: did the document lose its schemas?", all.len());
    let dangling: Vec<String> = all
        .iter()
        .filter(|(_, r)| r.strip_prefix('#').is_none_or(|pointer| doc.pointer(pointer).is_none()))
        .map(|(at, r)| format!("{at} -> {r}"))
        .collect();
    assert!(dangling.is_empty(), "$refs that resolve to nothing:\n{}", dangling.join("\n"));
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes are declared");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["type"], "apiKey");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], omamori::http::SESSION_COOKIE);
    let mut ids = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        if let Some(other) = ids.insert(id.to_string(), format!("{method} {path}")) {
            panic!("{method} {path} and {other} share the operationId {id}");
        }
        for requirement in op["security"].as_array().into_iter().flatten() {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{method} {path} names the undeclared security scheme {name}");
            }
        }
    }
    let declared = problem_codes(&doc);
    assert_eq!(declared, omamori::http::error::PROBLEM_CODES, "Problem.code must list PROBLEM_CODES");
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of each `ApiError::new(STATUS, "code", ..)` and `ApiError::decline(STATUS, "code", ..)`
/// in `text` (a call whose code is not a literal is skipped).
fn written_codes(text: &str) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for call in ["ApiError::new(", "ApiError::decline("] {
        for (at, _) in text.match_indices(call) {
            let args = &text[at + call.len()..];
            let Some(comma) = args.find(',') else { continue };
            let rest = args[comma + 1..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                codes.insert(literal.split('"').next().unwrap().to_string());
            }
        }
    }
    codes
}

#[test]
fn problem_codes_are_the_codes_the_server_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let declared: BTreeSet<&str> = omamori::http::error::PROBLEM_CODES.iter().copied().collect();
    assert_eq!(declared.len(), omamori::http::error::PROBLEM_CODES.len(), "PROBLEM_CODES has a duplicate");
    let (mut written, mut sources) = (BTreeSet::new(), String::new());
    for file in files {
        let mut text = std::fs::read_to_string(&file).unwrap();
        // The list itself does not count as a use.
        if let Some(start) = text.find("pub const PROBLEM_CODES") {
            let end = start + text[start..].find("];").unwrap();
            text.replace_range(start..end, "");
        }
        written.extend(written_codes(&text));
        sources.push_str(&text);
    }
    let undeclared: Vec<&String> = written.iter().filter(|c| !declared.contains(c.as_str())).collect();
    assert!(undeclared.is_empty(), "codes written under src/ but missing from PROBLEM_CODES: {undeclared:?}");
    // A code may be written other than by a literal call (`QrError::code`, `problem_for_status`),
    // but it is written as a literal somewhere.
    let unused: Vec<&&str> = declared.iter().filter(|c| !sources.contains(&format!("\"{c}\""))).collect();
    assert!(unused.is_empty(), "PROBLEM_CODES lists codes that nothing under src/ writes: {unused:?}");
}

#[test]
fn the_scanner_finds_literal_codes_only() {
    let text = r#"ApiError::new(StatusCode::CONFLICT, "rule_exists", detail); ApiError::decline(
        StatusCode::PAYMENT_REQUIRED,
        "card_declined",
        "the card was declined",
    ); ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())"#;
    assert_eq!(written_codes(text), BTreeSet::from(["card_declined".to_string(), "rule_exists".to_string()]));
}
