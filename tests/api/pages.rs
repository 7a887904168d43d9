//! The embedded pages over HTTP: text assets go gzip-compressed to a client that takes gzip, with
//! `Vary: Accept-Encoding`, and as they are otherwise; API answers are never compressed (BREACH:
//! an answer that carries a secret, such as an authenticator seed or recovery codes, must not
//! shrink by how much of it an attacker guessed).

use std::io::Read;

use reqwest::Method;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, VARY};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

async fn fetch(app: &TestApp, method: Method, path: &str, token: Option<&str>, accept: &str) -> reqwest::Response {
    let mut request = app.from(method.clone(), path, &jp_ip(7)).header(ACCEPT_ENCODING, accept);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    request.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

both_backends! {
    async fn page_assets_are_gzipped_for_browsers_that_take_it_and_api_answers_never(app: TestApp) {
        let plain = fetch(&app, Method::GET, "/app/js/i18n.js", None, "identity").await;
        assert_eq!(plain.status(), 200);
        assert_eq!(header(&plain, CONTENT_ENCODING), "");
        assert_eq!(header(&plain, VARY), "accept-encoding");
        let plain = plain.bytes().await.unwrap();

        let packed = fetch(&app, Method::GET, "/app/js/i18n.js", None, "gzip, deflate, br, zstd").await;
        assert_eq!(header(&packed, CONTENT_ENCODING), "gzip");
        assert_eq!(header(&packed, VARY), "accept-encoding");
        assert!(header(&packed, CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let packed = packed.bytes().await.unwrap();
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut unpacked).unwrap();
        assert_eq!(unpacked, plain, "the gzip form is the same file");
        assert!(packed.len() * 2 < plain.len(), "{} of {} bytes", packed.len(), plain.len());

        // A weight of 0 refuses gzip; the page shell is compressed too; a PNG is left alone.
        let refused = fetch(&app, Method::GET, "/app/js/i18n.js", None, "gzip;q=0, br").await;
        assert_eq!(header(&refused, CONTENT_ENCODING), "");
        assert_eq!(refused.bytes().await.unwrap(), plain);
        assert_eq!(header(&fetch(&app, Method::GET, "/app", None, "gzip").await, CONTENT_ENCODING), "gzip");
        let png = fetch(&app, Method::GET, "/app/icon-512.png", None, "gzip").await;
        assert_eq!((header(&png, CONTENT_ENCODING), header(&png, VARY)), (String::new(), String::new()));

        // API answers, with secrets in them or not, stay as they are whatever the client takes.
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let totp = fetch(&app, Method::POST, "/v1/me/totp", Some(&token), "gzip").await;
        assert_eq!(totp.status(), 200);
        assert_eq!(header(&totp, CONTENT_ENCODING), "", "an authenticator seed was compressed");
        let body: serde_json::Value = totp.json().await.unwrap();
        assert!(body["otpauth_qr_svg"].as_str().unwrap().starts_with("<svg"), "{body}");
        for (method, path) in [(Method::GET, "/v1/me"), (Method::GET, "/v1/openapi.json"), (Method::GET, "/healthz")] {
            let r = fetch(&app, method, path, Some(&token), "gzip").await;
            assert!(r.status().is_success(), "{path}: {}", r.status());
            assert_eq!(header(&r, CONTENT_ENCODING), "", "{path} was compressed");
        }
    }
}
