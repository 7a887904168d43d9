//! Passkeys (API.md "Passkeys (WebAuthn)"): registration, login with a passkey alone, step-up by
//! passkey, operators' passkeys, and the tricks that must fail (another origin, a replayed
//! challenge, another user's credential, a counter that goes back, no user verification).
//!
//! The authenticator is a software one: a P-256 key (ring) that writes real attestation "none"
//! objects, authenticator data and client data, signed as a platform authenticator signs them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::helpers::{Shopper, TestApp};

pub(crate) const UP: u8 = 0x01;
pub(crate) const UV: u8 = 0x04;
pub(crate) const AT: u8 = 0x40;

/// What a test changes in what the authenticator (or a phishing page) sends.
#[derive(Default, Clone)]
pub(crate) struct Tweak {
    pub(crate) origin: Option<String>,
    pub(crate) flags: Option<u8>,
    pub(crate) count: Option<u32>,
    pub(crate) challenge: Option<String>,
    /// The attestation statement's format and statement (default: `none` with an empty one).
    pub(crate) attestation: Option<Attestation>,
}

/// An attestation statement an authenticator may send instead of `none`.
#[derive(Clone)]
pub(crate) enum Attestation {
    /// `packed` self-attestation: `{alg, sig}`, signed by the credential's own key over
    /// authenticatorData ‖ SHA-256(clientDataJSON); `forge` flips a bit of the signature, and
    /// `alg` may name another algorithm than the key's.
    PackedSelf { alg: i64, forge: bool },
    /// Any format with any statement, sent as is.
    Other { fmt: String, statement: Vec<(String, ciborium::Value)> },
}

pub(crate) struct Authenticator {
    key: EcdsaKeyPair,
    pub(crate) credential_id: Vec<u8>,
    pub(crate) user_handle: Vec<u8>,
    pub(crate) count: u32,
    origin: String,
    pub(crate) rp_id: String,
}

impl Authenticator {
    pub(crate) fn new(app: &TestApp) -> Authenticator {
        let origin = app.state.config.public_url.clone().expect("a loopback test server has a public URL");
        assert!(origin.starts_with("http://localhost:"), "{origin}");
        Authenticator::at(&origin, "localhost")
    }

    /// An authenticator in a browser at `origin` (what the browser writes in the client data),
    /// for relying party `rp_id`.
    pub(crate) fn at(origin: &str, rp_id: &str) -> Authenticator {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Authenticator {
            key,
            credential_id: rand::random::<[u8; 16]>().to_vec(),
            user_handle: Vec::new(),
            count: 0,
            origin: origin.to_string(),
            rp_id: rp_id.to_string(),
        }
    }

    fn id(&self) -> String {
        B64.encode(&self.credential_id)
    }

    fn cose_key(&self) -> Vec<u8> {
        use ciborium::Value as C;
        let point = self.key.public_key().as_ref();
        let map = C::Map(vec![
            (C::from(1), C::from(2)),
            (C::from(3), C::from(-7)),
            (C::from(-1), C::from(1)),
            (C::from(-2), C::Bytes(point[1..33].to_vec())),
            (C::from(-3), C::Bytes(point[33..65].to_vec())),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&map, &mut out).unwrap();
        out
    }

    fn client_data(&self, kind: &str, challenge: &str, tweak: &Tweak) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": tweak.challenge.as_deref().unwrap_or(challenge),
            "origin": tweak.origin.as_deref().unwrap_or(&self.origin),
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    fn auth_data(&self, flags: u8, count: u32) -> Vec<u8> {
        let mut data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend_from_slice(&count.to_be_bytes());
        data
    }

    /// `navigator.credentials.create` with these creation options.
    pub(crate) fn create(&mut self, options: &Value, tweak: &Tweak) -> Value {
        assert_eq!(options["rp"]["id"], self.rp_id.as_str(), "{options}");
        assert_eq!(options["authenticatorSelection"]["residentKey"], "required", "{options}");
        assert_eq!(options["authenticatorSelection"]["userVerification"], "required", "{options}");
        assert!(options["pubKeyCredParams"].as_array().unwrap().iter().any(|p| p["alg"] == -7), "{options}");
        self.user_handle = B64.decode(options["user"]["id"].as_str().unwrap()).unwrap();
        let client_data = self.client_data("webauthn.create", options["challenge"].as_str().unwrap(), tweak);
        let mut auth_data = self.auth_data(tweak.flags.unwrap_or(UP | UV | AT), self.count);
        auth_data.extend_from_slice(&[0u8; 16]);
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&self.cose_key());
        use ciborium::Value as C;
        let (fmt, statement) = match &tweak.attestation {
            None => ("none".to_string(), vec![]),
            Some(Attestation::PackedSelf { alg, forge }) => {
                let mut signed = auth_data.clone();
                signed.extend_from_slice(&Sha256::digest(&client_data));
                let mut sig = self.key.sign(&SystemRandom::new(), &signed).unwrap().as_ref().to_vec();
                if *forge {
                    let last = sig.len() - 1;
                    sig[last] ^= 0x01;
                }
                ("packed".to_string(), vec![(C::from("alg"), C::from(*alg)), (C::from("sig"), C::Bytes(sig))])
            }
            Some(Attestation::Other { fmt, statement }) => {
                (fmt.clone(), statement.iter().map(|(k, v)| (C::from(k.as_str()), v.clone())).collect())
            }
        };
        let object = C::Map(vec![
            (C::from("fmt"), C::from(fmt)),
            (C::from("attStmt"), C::Map(statement)),
            (C::from("authData"), C::Bytes(auth_data)),
        ]);
        let mut attestation = Vec::new();
        ciborium::ser::into_writer(&object, &mut attestation).unwrap();
        json!({
            "id": self.id(),
            "rawId": self.id(),
            "type": "public-key",
            "response": {"clientDataJSON": B64.encode(&client_data), "attestationObject": B64.encode(&attestation)},
            "clientExtensionResults": {},
        })
    }

    /// `navigator.credentials.get` with these request options.
    pub(crate) fn get(&mut self, options: &Value, tweak: &Tweak) -> Value {
        assert_eq!(options["rpId"], self.rp_id.as_str(), "{options}");
        assert_eq!(options["userVerification"], "required", "{options}");
        self.count += 1;
        let client_data = self.client_data("webauthn.get", options["challenge"].as_str().unwrap(), tweak);
        let auth_data = self.auth_data(tweak.flags.unwrap_or(UP | UV), tweak.count.unwrap_or(self.count));
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let signature = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": self.id(),
            "rawId": self.id(),
            "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(&client_data),
                "authenticatorData": B64.encode(&auth_data),
                "signature": B64.encode(signature.as_ref()),
                "userHandle": B64.encode(&self.user_handle),
            },
        })
    }
}

/// A logged-in shopper (fresh step-up) with one passkey registered.
pub(crate) async fn shopper_with_passkey(app: &TestApp) -> (Shopper, Authenticator) {
    let mut s = app.register().await;
    app.log_in(&mut s).await;
    let mut authenticator = Authenticator::new(app);
    let r = add_passkey(app, &s, &mut authenticator, Some("My phone"), &Tweak::default()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    (s, authenticator)
}

pub(crate) async fn add_passkey(
    app: &TestApp,
    s: &Shopper,
    authenticator: &mut Authenticator,
    name: Option<&str>,
    tweak: &Tweak,
) -> crate::helpers::Reply {
    let token = s.session.as_deref().unwrap();
    let r = app.authed(Method::POST, "/v1/me/passkeys", token, None, &s.ip).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let id = r.body["registration_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("pkr_"), "{r:?}");
    let credential = authenticator.create(&r.body["options"], tweak);
    let mut body = json!({"credential": credential});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    app.authed(Method::POST, &format!("/v1/me/passkeys/{id}/finish"), token, Some(&body), &s.ip).await
}

pub(crate) async fn start_passkey_login(app: &TestApp, device_id: &str, ip: &str) -> (String, Value) {
    let r = app.post_from("/v1/login/passkey", &json!({"device_id": device_id}), ip).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["options"]["allowCredentials"], json!([]), "{r:?}");
    (r.body["challenge_id"].as_str().unwrap().to_string(), r.body["options"].clone())
}

pub(crate) async fn verify_passkey(
    app: &TestApp,
    challenge_id: &str,
    credential: &Value,
    ip: &str,
) -> crate::helpers::Reply {
    app.post_from(
        &format!("/v1/challenges/{challenge_id}/verify"),
        &json!({"method": "passkey", "credential": credential}),
        ip,
    )
    .await
}

both_backends! {
    async fn adding_a_passkey_is_a_credential_change_the_risk_rules_see(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        app.advance_clock(60).await;
        let mut authenticator = Authenticator::new(&app);
        let r = add_passkey(&app, &s, &mut authenticator, None, &Tweak::default()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let (changed, created): (i64, i64) = sqlx::query_as("SELECT credentials_changed_at, created_at FROM users WHERE id = $1")
            .bind(&s.user_id).fetch_one(app.db().pool()).await.unwrap();
        assert!(changed >= created + 60_000, "credentials_changed_at {changed} not moved from {created}");
    }

    async fn a_passkey_alone_logs_in(app: TestApp) {
        let (s, mut authenticator) = shopper_with_passkey(&app).await;
        let token = s.session.clone().unwrap();
        // Told on every channel.
        for to in [&s.phone, &s.email] {
            assert!(app.messages(to).await.iter().any(|m| m["kind"] == "passkey_added"), "{to}");
        }
        let r = app.authed(Method::GET, "/v1/me/passkeys", &token, None, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{r:?}");
        assert_eq!(items[0]["name"], "My phone");
        assert!(items[0]["passkey_id"].as_str().unwrap().starts_with("pky_"));
        assert!(items[0]["last_used_at"].is_null());
        let me = app.me(&token, &s.ip).await;
        assert!(me.body["factors"].as_array().unwrap().contains(&json!("passkey")), "{me:?}");

        // Log in with no login name and no password, on a new device.
        let device = "browser-passkey-1";
        let (challenge_id, options) = start_passkey_login(&app, device, &s.ip).await;
        let credential = authenticator.get(&options, &Tweak::default());
        let r = verify_passkey(&app, &challenge_id, &credential, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let new_token = r.body["session_token"].as_str().unwrap().to_string();
        assert!(r.body["device_token"].is_string(), "{r:?}");
        let me = app.me(&new_token, &s.ip).await;
        assert_eq!(me.body["user_id"], s.user_id.as_str(), "{me:?}");
        // The session is stepped up: adding another passkey needs no further proof.
        let r = app.authed(Method::POST, "/v1/me/passkeys", &new_token, None, &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = app.authed(Method::GET, "/v1/me/passkeys", &token, None, &s.ip).await;
        assert!(r.body["items"][0]["last_used_at"].is_string(), "{r:?}");

        // The same answer again: the challenge was used.
        verify_passkey(&app, &challenge_id, &credential, &s.ip).await.assert_problem(410, "challenge_expired");
        // Replayed on a new challenge: its WebAuthn challenge differs.
        let (challenge_id, _) = start_passkey_login(&app, device, &s.ip).await;
        verify_passkey(&app, &challenge_id, &credential, &s.ip).await.assert_problem(422, "code_invalid");
    }

    async fn a_discoverable_login_must_name_its_user(app: TestApp) {
        let (s, mut authenticator) = shopper_with_passkey(&app).await;
        // WebAuthn's userHandle, which the authenticator returns for a discoverable credential.
        let (id, options) = start_passkey_login(&app, "d0", &s.ip).await;
        let mut anonymous = authenticator.get(&options, &Tweak::default());
        anonymous["response"].as_object_mut().unwrap().remove("userHandle");
        verify_passkey(&app, &id, &anonymous, &s.ip).await.assert_problem(422, "code_invalid");
        // Another user's handle does not pass either; the right answer does.
        let mut wrong = authenticator.get(&options, &Tweak::default());
        wrong["response"]["userHandle"] = json!(B64.encode("usr_someone_else"));
        app.advance_clock(5).await;
        verify_passkey(&app, &id, &wrong, &s.ip).await.assert_problem(422, "code_invalid");
        app.advance_clock(5).await;
        let r = verify_passkey(&app, &id, &authenticator.get(&options, &Tweak::default()), &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }

    async fn tricks_with_a_passkey_fail(app: TestApp) {
        let (s, mut authenticator) = shopper_with_passkey(&app).await;
        let ip = s.ip.clone();
        let refused = |r: crate::helpers::Reply| r.assert_problem(422, "code_invalid");

        // A phishing page's origin.
        let (id, options) = start_passkey_login(&app, "d1", &ip).await;
        let tweak = Tweak { origin: Some("https://omamori-login.example".into()), ..Tweak::default() };
        refused(verify_passkey(&app, &id, &authenticator.get(&options, &tweak), &ip).await);
        // No user verification.
        let tweak = Tweak { flags: Some(UP), ..Tweak::default() };
        refused(verify_passkey(&app, &id, &authenticator.get(&options, &tweak), &ip).await);
        // Another challenge's value.
        let tweak = Tweak { challenge: Some(B64.encode([7u8; 32])), ..Tweak::default() };
        refused(verify_passkey(&app, &id, &authenticator.get(&options, &tweak), &ip).await);
        // A forged signature (another key under the same credential id).
        let mut forger = Authenticator::new(&app);
        forger.credential_id = authenticator.credential_id.clone();
        forger.user_handle = authenticator.user_handle.clone();
        forger.count = 100;
        refused(verify_passkey(&app, &id, &forger.get(&options, &Tweak::default()), &ip).await);
        // The right answer still works on the same challenge (4 failures so far).
        let r = verify_passkey(&app, &id, &authenticator.get(&options, &Tweak::default()), &ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");

        // A counter that goes back: a copied key. Refused, and the shopper is told.
        let (id, options) = start_passkey_login(&app, "d1", &ip).await;
        let tweak = Tweak { count: Some(1), ..Tweak::default() };
        refused(verify_passkey(&app, &id, &authenticator.get(&options, &tweak), &ip).await);
        for to in [&s.phone, &s.email] {
            assert!(app.messages(to).await.iter().any(|m| m["kind"] == "passkey_cloned"), "{to}");
        }

        // The copied passkey is disabled (it answers nothing now): the shopper adds a new one.
        let mut authenticator = Authenticator::new(&app);
        let r = add_passkey(&app, &s, &mut authenticator, Some("New phone"), &Tweak::default()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");

        // Another shopper's passkey does not answer this shopper's step-up.
        let (other, mut other_key) = shopper_with_passkey(&app).await;
        let token = s.session.clone().unwrap();
        let r = app.authed(Method::POST, "/v1/step-up", &token, None, &ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(r.body["methods"].as_array().unwrap().contains(&json!("passkey")), "{r:?}");
        let step_up = r.body["challenge_id"].as_str().unwrap().to_string();
        let path = format!("/v1/challenges/{step_up}/send");
        let r = app.authed(Method::POST, &path, &token, Some(&json!({"method": "passkey"})), &ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body["options"]["allowCredentials"][0]["id"], authenticator.id(), "{r:?}");
        refused(verify_passkey(&app, &step_up, &other_key.get(&r.body["options"], &Tweak::default()), &ip).await);
        let _ = other;

        // A passkey login answered with a credential no one registered.
        let (id, options) = start_passkey_login(&app, "d2", &ip).await;
        let mut stranger = Authenticator::new(&app);
        stranger.user_handle = s.user_id.clone().into_bytes();
        refused(verify_passkey(&app, &id, &stranger.get(&options, &Tweak::default()), &ip).await);
        // A code where a credential belongs, and the other way round.
        app.verify(&id, "passkey", "123456", &ip).await.assert_problem(422, "invalid_body");
        let r = app
            .post_from(&format!("/v1/challenges/{id}/verify"), &json!({"method": "sms", "credential": {}}), &ip)
            .await;
        r.assert_problem(422, "invalid_body");
        // A passkey login challenge takes nothing but a passkey.
        let r = app.post_from(&format!("/v1/challenges/{id}/send"), &json!({"method": "sms"}), &ip).await;
        r.assert_problem(422, "invalid_method");
    }

    async fn registrations_that_must_fail(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let mut authenticator = Authenticator::new(&app);
        for tweak in [
            Tweak { origin: Some("https://evil.example".into()), ..Tweak::default() },
            Tweak { flags: Some(UP | AT), ..Tweak::default() },
            Tweak { challenge: Some(B64.encode([1u8; 32])), ..Tweak::default() },
        ] {
            add_passkey(&app, &s, &mut authenticator, None, &tweak).await.assert_problem(422, "passkey_rejected");
        }
        // A registration is answered once, right or wrong.
        let r = app.authed(Method::POST, "/v1/me/passkeys", &token, None, &s.ip).await;
        let id = r.body["registration_id"].as_str().unwrap().to_string();
        let bad = authenticator.create(&r.body["options"], &Tweak { flags: Some(UP | AT), ..Tweak::default() });
        let path = format!("/v1/me/passkeys/{id}/finish");
        app.authed(Method::POST, &path, &token, Some(&json!({"credential": bad})), &s.ip)
            .await
            .assert_problem(422, "passkey_rejected");
        let good = authenticator.create(&r.body["options"], &Tweak::default());
        app.authed(Method::POST, &path, &token, Some(&json!({"credential": good})), &s.ip)
            .await
            .assert_problem(410, "challenge_expired");
        // Another shopper cannot finish this one's registration.
        let mut other = app.register().await;
        app.log_in(&mut other).await;
        let r = app.authed(Method::POST, "/v1/me/passkeys", &token, None, &s.ip).await;
        let id = r.body["registration_id"].as_str().unwrap().to_string();
        let good = authenticator.create(&r.body["options"], &Tweak::default());
        let path = format!("/v1/me/passkeys/{id}/finish");
        let other_token = other.session.clone().unwrap();
        app.authed(Method::POST, &path, &other_token, Some(&json!({"credential": good.clone()})), &other.ip)
            .await
            .assert_problem(404, "not_found");
        // Unnamed, it is "Passkey"; the same credential cannot be registered twice.
        let r = app.authed(Method::POST, &path, &token, Some(&json!({"credential": good})), &s.ip).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        assert_eq!(r.body["name"], "Passkey");
        add_passkey(&app, &s, &mut authenticator, None, &Tweak::default()).await.assert_problem(422, "passkey_rejected");
        // Adding one needs a fresh step-up.
        app.advance_clock(6 * 60).await;
        let r = app.authed(Method::POST, "/v1/me/passkeys", &token, None, &s.ip).await;
        r.assert_problem(403, "step_up_required");
    }

    async fn a_passkey_steps_up_and_removing_one_needs_it(app: TestApp) {
        let (s, mut authenticator) = shopper_with_passkey(&app).await;
        let token = s.session.clone().unwrap();
        let r = app.authed(Method::GET, "/v1/me/passkeys", &token, None, &s.ip).await;
        let passkey_id = r.body["items"][0]["passkey_id"].as_str().unwrap().to_string();
        app.advance_clock(6 * 60).await;
        let path = format!("/v1/me/passkeys/{passkey_id}");
        let r = app.authed(Method::DELETE, &path, &token, None, &s.ip).await;
        r.assert_problem(403, "step_up_required");
        assert!(r.body["methods"].as_array().unwrap().contains(&json!("passkey")), "{r:?}");
        let challenge_id = r.body["challenge_id"].as_str().unwrap().to_string();
        let send = format!("/v1/challenges/{challenge_id}/send");
        let r = app.authed(Method::POST, &send, &token, Some(&json!({"method": "passkey"})), &s.ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = verify_passkey(&app, &challenge_id, &authenticator.get(&r.body["options"], &Tweak::default()), &s.ip)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body["step_up"], true, "{r:?}");
        let r = app.authed(Method::DELETE, &path, &token, None, &s.ip).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
        app.authed(Method::DELETE, &path, &token, None, &s.ip).await.assert_problem(404, "not_found");
        let r = app.authed(Method::GET, "/v1/me/passkeys", &token, None, &s.ip).await;
        assert_eq!(r.body["items"], json!([]), "{r:?}");
        for to in [&s.phone, &s.email] {
            assert!(app.messages(to).await.iter().any(|m| m["kind"] == "passkey_removed"), "{to}");
        }
        // Removed, it no longer logs in.
        let (id, options) = start_passkey_login(&app, "d3", &s.ip).await;
        verify_passkey(&app, &id, &authenticator.get(&options, &Tweak::default()), &s.ip)
            .await
            .assert_problem(422, "code_invalid");
    }

    async fn an_operator_logs_in_with_a_passkey(app: TestApp) {
        let token = app.operator_session(0).await;
        let ip = crate::helpers::OPERATOR_IP;
        let r = app.authed(Method::POST, "/v1/admin/me/passkeys", &token, None, ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let mut authenticator = Authenticator::new(&app);
        let credential = authenticator.create(&r.body["options"], &Tweak::default());
        let id = r.body["registration_id"].as_str().unwrap();
        let path = format!("/v1/admin/me/passkeys/{id}/finish");
        let r = app.authed(Method::POST, &path, &token, Some(&json!({"credential": credential, "name": "Key"})), ip).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r = app.authed(Method::GET, "/v1/admin/me/passkeys", &token, None, ip).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{r:?}");

        let r = app.post_from("/v1/admin/login/passkey", &json!({}), ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let challenge_id = r.body["challenge_id"].as_str().unwrap().to_string();
        let r = verify_passkey(&app, &challenge_id, &authenticator.get(&r.body["options"], &Tweak::default()), ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(r.body["role"].is_string(), "{r:?}");
        let session = r.body["session_token"].as_str().unwrap();
        let r = app.authed(Method::GET, "/v1/admin/alerts", session, None, ip).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");

        // Minutes after the login, a stolen session alone cannot add or remove a passkey: the
        // operator proves a second factor again (here with the passkey itself).
        app.advance_clock(6 * 60).await;
        let r = app.authed(Method::POST, "/v1/admin/me/passkeys", session, None, ip).await;
        r.assert_problem(403, "step_up_required");
        assert_eq!(r.body["methods"], json!(["totp", "passkey"]), "{r:?}");
        let listed = app.authed(Method::GET, "/v1/admin/me/passkeys", session, None, ip).await;
        let passkey_path = format!("/v1/admin/me/passkeys/{}", listed.body["items"][0]["passkey_id"].as_str().unwrap());
        app.authed(Method::DELETE, &passkey_path, session, None, ip).await.assert_problem(403, "step_up_required");
        let step = r.body["challenge_id"].as_str().unwrap().to_string();
        let send = format!("/v1/challenges/{step}/send");
        let sent = app.authed(Method::POST, &send, session, Some(&json!({"method": "passkey"})), ip).await;
        assert_eq!(sent.status, StatusCode::OK, "{sent:?}");
        let r = verify_passkey(&app, &step, &authenticator.get(&sent.body["options"], &Tweak::default()), ip).await;
        assert_eq!(r.body["step_up"], true, "{r:?}");
        let r = app.authed(Method::POST, "/v1/admin/me/passkeys", session, None, ip).await;
        assert_eq!(r.status, StatusCode::OK, "after the step-up: {r:?}");

        // An operator's passkey does not log in as a shopper, nor the other way round.
        let r = app.post_from("/v1/login/passkey", &json!({"device_id": "d"}), &crate::helpers::jp_ip(7)).await;
        let id = r.body["challenge_id"].as_str().unwrap().to_string();
        verify_passkey(&app, &id, &authenticator.get(&r.body["options"], &Tweak::default()), &crate::helpers::jp_ip(7))
            .await
            .assert_problem(422, "code_invalid");
    }
}

/// Without a public address (not set, and not listening on loopback) there is no origin to bind
/// passkeys to: their routes say so instead of trusting the request's `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_url_passkeys_are_unavailable() {
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| c.listen = "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap();
    assert!(app.state.config.public_url.is_none());
    let ip = crate::helpers::jp_ip(9);
    app.post_from("/v1/login/passkey", &json!({"device_id": "d"}), &ip).await.assert_problem(503, "unavailable");
    let mut s = app.register().await;
    app.log_in(&mut s).await;
    let token = s.session.clone().unwrap();
    app.authed(Method::POST, "/v1/me/passkeys", &token, None, &s.ip).await.assert_problem(503, "unavailable");
}

both_backends! {
    async fn a_passkey_is_no_way_back_in_after_a_reset_or_a_switch(app: TestApp) {
        // A takeover that added its own passkey: the owner resets the password with both proofs.
        let (s, mut thief_key) = shopper_with_passkey(&app).await;
        let r = app.post_from("/v1/password-reset", &json!({"login": s.email}), &s.ip).await;
        let reset = r.body["reset_id"].as_str().unwrap().to_string();
        let (sms, email) = (app.code_for(&s.phone, "reset_code").await, app.code_for(&s.email, "reset_code").await);
        let path = format!("/v1/password-reset/{reset}/complete");
        let body = json!({"sms_code": sms, "email_code": email, "new_password": crate::helpers::strong_password()});
        assert_eq!(app.post_from(&path, &body, &s.ip).await.status, 204);
        // The passkey went with the reset: logging in with it fails.
        let (challenge_id, options) = start_passkey_login(&app, "thief-browser", &s.ip).await;
        let credential = thief_key.get(&options, &Tweak::default());
        assert_ne!(verify_passkey(&app, &challenge_id, &credential, &s.ip).await.status, StatusCode::OK);

        // An operator stops one account's logins: its passkey no longer logs in either.
        let (t, mut key) = shopper_with_passkey(&app).await;
        let op = app.operator_session(0).await;
        let body = json!({"name": "logins", "scope": {"kind": "user", "id": t.user_id}, "reason": "account reported taken over"});
        let r = app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), "127.0.0.1").await;
        assert_eq!(r.status, 201, "{r:?}");
        let (challenge_id, options) = start_passkey_login(&app, "thief-browser-2", &t.ip).await;
        let credential = key.get(&options, &Tweak::default());
        verify_passkey(&app, &challenge_id, &credential, &t.ip).await.assert_problem(403, "switch_engaged");
    }
}
