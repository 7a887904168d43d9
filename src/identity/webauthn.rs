//! The relying party's side of WebAuthn (W3C Web Authentication level 3, sections 7.1 and 7.2),
//! for passkeys: the options a browser is given, and the checks of what it answers. No storage
//! here: `passkey` keeps the challenges and the credentials.
//!
//! Built on `ring` (signatures: ES256, EdDSA and RS256, the algorithms offered) and `ciborium`
//! (CBOR). Attestation is not asked for (`attestation: "none"`) and not relied on: a passkey
//! proves possession of its private key and user verification, which is all Omamori needs. An
//! attestation statement is still never accepted unchecked: `none` must be empty, `packed`
//! self-attestation must verify, and every other format is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a ceremony's options are good for (the browser's `timeout`, and our challenge's life).
pub const TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// COSE algorithms offered, most preferred first: ES256, EdDSA, RS256.
const ALGORITHMS: [i64; 3] = [-7, -8, -257];

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
/// Backup eligible: the credential may be synced to other devices (a multi-device passkey).
const FLAG_BE: u8 = 0x08;
/// Backup state: it is backed up now; only a backup-eligible credential can be.
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// The relying party: its id (the host browsers see) and the one origin accepted.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub id: String,
    pub origin: String,
}

impl RelyingParty {
    /// From `scheme://host[:port]` (the `public_url` setting, already checked).
    pub fn from_public_url(url: &str) -> RelyingParty {
        let origin = url.trim_end_matches('/').to_string();
        let rest = origin.split_once("://").map(|(_, r)| r).unwrap_or(&origin);
        let id = match rest.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => rest,
        };
        RelyingParty { id: id.to_string(), origin }
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the passkey's answer is not valid: {0}")]
    Invalid(&'static str),
    /// The authenticator's signature counter did not go up: the key may have been copied.
    #[error("the passkey's signature counter went back")]
    CounterWentBack {
        /// The authenticator says the key may be synced to other devices (BE): their counters
        /// need not agree, so a counter that went back there proves no copy.
        backup_eligible: bool,
    },
}

fn invalid(why: &'static str) -> Rejected {
    Rejected::Invalid(why)
}

/// A fresh challenge: 32 random bytes, base64url.
pub fn new_challenge() -> String {
    let bytes: [u8; 32] = rand::random();
    B64.encode(bytes)
}

/// Who a new passkey is for: the user handle (our id of the account, as bytes) and the names the
/// authenticator shows.
pub struct Account<'a> {
    pub handle: &'a str,
    pub name: &'a str,
}

/// `PublicKeyCredentialCreationOptions` (JSON form): a discoverable credential with user
/// verification, no attestation; `exclude` lists the account's credential ids.
pub fn creation_options(rp: &RelyingParty, challenge: &str, account: &Account<'_>, exclude: &[String]) -> Value {
    json!({
        "rp": {"id": rp.id, "name": "Omamori"},
        "user": {"id": B64.encode(account.handle.as_bytes()), "name": account.name, "displayName": account.name},
        "challenge": challenge,
        "pubKeyCredParams": ALGORITHMS.iter().map(|alg| json!({"type": "public-key", "alg": alg})).collect::<Vec<_>>(),
        "timeout": TIMEOUT_MS,
        "excludeCredentials": descriptors(exclude),
        "authenticatorSelection": {"residentKey": "required", "requireResidentKey": true, "userVerification": "required"},
        "attestation": "none",
    })
}

/// `PublicKeyCredentialRequestOptions` (JSON form): `allow` empty for a discoverable login.
pub fn request_options(rp: &RelyingParty, challenge: &str, allow: &[String]) -> Value {
    json!({
        "challenge": challenge,
        "timeout": TIMEOUT_MS,
        "rpId": rp.id,
        "allowCredentials": descriptors(allow),
        "userVerification": "required",
    })
}

fn descriptors(ids: &[String]) -> Vec<Value> {
    ids.iter().map(|id| json!({"type": "public-key", "id": id})).collect()
}

/// A credential a registration created: its id (base64url), its public key (the COSE_Key,
/// base64url) and its signature counter.
#[derive(Debug)]
pub struct NewCredential {
    pub credential_id: String,
    pub public_key: String,
    pub sign_count: i64,
}

fn b64_field(v: &Value, name: &'static str) -> Result<Vec<u8>, Rejected> {
    let text = v.get(name).and_then(Value::as_str).ok_or(invalid(name))?;
    B64.decode(text.trim_end_matches('=')).map_err(|_| invalid(name))
}

/// The credential's id, checked against `rawId` and `type`.
fn credential_id(credential: &Value) -> Result<String, Rejected> {
    if credential.get("type").and_then(Value::as_str) != Some("public-key") {
        return Err(invalid("type"));
    }
    let id = b64_field(credential, "id")?;
    if credential.get("rawId").is_some_and(|v| !v.is_null()) && b64_field(credential, "rawId")? != id {
        return Err(invalid("rawId"));
    }
    if id.is_empty() || id.len() > 1023 {
        return Err(invalid("id"));
    }
    Ok(B64.encode(id))
}

fn response(credential: &Value) -> Result<&Value, Rejected> {
    credential.get("response").filter(|r| r.is_object()).ok_or(invalid("response"))
}

/// Section 7.1 steps 5-14 and 7.2 steps 10-15: the client data is for this ceremony, challenge
/// and origin.
fn check_client_data(raw: &[u8], kind: &str, challenge: &str, rp: &RelyingParty) -> Result<(), Rejected> {
    let data: Value = serde_json::from_slice(raw).map_err(|_| invalid("clientDataJSON"))?;
    if data.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(invalid("clientDataJSON.type"));
    }
    let sent = B64.decode(challenge).map_err(|_| invalid("challenge"))?;
    let got = b64_field(&data, "challenge").map_err(|_| invalid("clientDataJSON.challenge"))?;
    if sent.is_empty() || got != sent {
        return Err(invalid("clientDataJSON.challenge"));
    }
    if data.get("origin").and_then(Value::as_str) != Some(rp.origin.as_str()) {
        return Err(invalid("clientDataJSON.origin"));
    }
    if data.get("crossOrigin").and_then(Value::as_bool) == Some(true) {
        return Err(invalid("clientDataJSON.crossOrigin"));
    }
    Ok(())
}

/// Authenticator data (section 6.1).
struct AuthData<'a> {
    flags: u8,
    sign_count: u32,
    /// The credential id and its COSE_Key, when attested credential data is present.
    attested: Option<(&'a [u8], &'a [u8])>,
}

fn parse_auth_data<'a>(data: &'a [u8], rp: &RelyingParty) -> Result<AuthData<'a>, Rejected> {
    if data.len() < 37 {
        return Err(invalid("authenticatorData"));
    }
    if data[..32] != Sha256::digest(rp.id.as_bytes())[..] {
        return Err(invalid("authenticatorData.rpIdHash"));
    }
    let flags = data[32];
    if flags & FLAG_UP == 0 {
        return Err(invalid("the user was not present"));
    }
    if flags & FLAG_UV == 0 {
        return Err(invalid("the user was not verified"));
    }
    // Section 6.1: BS set with BE clear is a state no authenticator can be in.
    if flags & FLAG_BS != 0 && flags & FLAG_BE == 0 {
        return Err(invalid("the flags say backed up but not backup eligible"));
    }
    let sign_count = u32::from_be_bytes([data[33], data[34], data[35], data[36]]);
    let mut at = 37;
    let attested = if flags & FLAG_AT != 0 {
        let header = data.get(at..at + 18).ok_or(invalid("attestedCredentialData"))?;
        let len = u16::from_be_bytes([header[16], header[17]]) as usize;
        at += 18;
        let id = data.get(at..at + len).ok_or(invalid("credentialId"))?;
        at += len;
        let key_len = cbor_item_len(&data[at..]).ok_or(invalid("credentialPublicKey"))?;
        let key = &data[at..at + key_len];
        at += key_len;
        Some((id, key))
    } else {
        None
    };
    if flags & FLAG_ED != 0 {
        at += cbor_item_len(&data[at..]).ok_or(invalid("extensions"))?;
    }
    if at != data.len() {
        return Err(invalid("authenticatorData has trailing bytes"));
    }
    Ok(AuthData { flags, sign_count, attested })
}

/// Section 7.1: checks a registration's `PublicKeyCredential` (JSON form, base64url fields)
/// against the challenge sent.
pub fn verify_registration(rp: &RelyingParty, challenge: &str, credential: &Value) -> Result<NewCredential, Rejected> {
    let id = credential_id(credential)?;
    let response = response(credential)?;
    let client_data = b64_field(response, "clientDataJSON")?;
    check_client_data(&client_data, "webauthn.create", challenge, rp)?;
    let attestation = b64_field(response, "attestationObject")?;
    let object: ciborium::Value =
        ciborium::de::from_reader(attestation.as_slice()).map_err(|_| invalid("attestationObject"))?;
    let map = object.as_map().ok_or(invalid("attestationObject"))?;
    let field = |name: &str| map.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v);
    let fmt = field("fmt").and_then(ciborium::Value::as_text).ok_or(invalid("attestationObject.fmt"))?;
    let statement = field("attStmt").and_then(ciborium::Value::as_map).ok_or(invalid("attestationObject.attStmt"))?;
    let auth_data = field("authData").and_then(ciborium::Value::as_bytes).ok_or(invalid("authData"))?;
    let parsed = parse_auth_data(auth_data, rp)?;
    let (raw_id, key) = parsed.attested.ok_or(invalid("no attested credential data"))?;
    if B64.encode(raw_id) != id {
        return Err(invalid("the credential id differs from the attested one"));
    }
    let public_key = PublicKey::from_cose(key)?;
    check_attestation(fmt, statement, &public_key, auth_data, &client_data)?;
    Ok(NewCredential { credential_id: id, public_key: B64.encode(key), sign_count: i64::from(parsed.sign_count) })
}

/// Section 8: the attestation statement, checked or refused, never ignored. `none` (what is asked
/// for) must be empty; `packed` self-attestation (section 8.2: no `x5c`, signed by the credential's
/// own key, which is what browsers pass on when asked for none) must verify. Every other format, and
/// `packed` with a certificate chain, would need attestation roots Omamori does not keep: refused.
fn check_attestation(
    fmt: &str,
    statement: &[(ciborium::Value, ciborium::Value)],
    key: &PublicKey,
    auth_data: &[u8],
    client_data: &[u8],
) -> Result<(), Rejected> {
    let field = |name: &str| statement.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v);
    match fmt {
        "none" if statement.is_empty() => Ok(()),
        "none" => Err(invalid("attestationObject.attStmt")),
        "packed" if statement.len() == 2 => {
            let alg = field("alg").and_then(ciborium::Value::as_integer).map(i128::from);
            let sig = field("sig").and_then(ciborium::Value::as_bytes).ok_or(invalid("attStmt.sig"))?;
            if alg != Some(i128::from(key.algorithm())) {
                return Err(invalid("the self-attestation's algorithm is not the credential's"));
            }
            let mut signed = auth_data.to_vec();
            signed.extend_from_slice(&Sha256::digest(client_data));
            if !key.verifies(&signed, sig) {
                return Err(invalid("the self-attestation's signature does not verify"));
            }
            Ok(())
        }
        "packed" => Err(invalid("only self-attestation is accepted: register without attestation (none)")),
        _ => Err(invalid("this attestation format is not accepted: register without attestation (none)")),
    }
}

/// An authentication's `PublicKeyCredential`, decoded but not yet checked.
#[derive(Debug)]
pub struct Assertion {
    pub credential_id: String,
    /// The user handle the authenticator holds (our account id), when it sent one.
    pub user_handle: Option<String>,
    client_data: Vec<u8>,
    auth_data: Vec<u8>,
    signature: Vec<u8>,
}

/// Reads an authentication's `PublicKeyCredential` (JSON form).
pub fn parse_assertion(credential: &Value) -> Result<Assertion, Rejected> {
    let credential_id = credential_id(credential)?;
    let response = response(credential)?;
    let user_handle = match response.get("userHandle") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let bytes = b64_field(response, "userHandle")?;
            Some(String::from_utf8(bytes).map_err(|_| invalid("userHandle"))?)
        }
    };
    Ok(Assertion {
        credential_id,
        user_handle,
        client_data: b64_field(response, "clientDataJSON")?,
        auth_data: b64_field(response, "authenticatorData")?,
        signature: b64_field(response, "signature")?,
    })
}

impl Assertion {
    /// Section 7.2: checks the assertion against the challenge sent and the stored credential's
    /// key and counter; answers the new counter.
    pub fn verify(
        &self,
        rp: &RelyingParty,
        challenge: &str,
        public_key: &str,
        stored_count: i64,
    ) -> Result<i64, Rejected> {
        check_client_data(&self.client_data, "webauthn.get", challenge, rp)?;
        let parsed = parse_auth_data(&self.auth_data, rp)?;
        if parsed.attested.is_some() || parsed.flags & FLAG_AT != 0 {
            return Err(invalid("an assertion carries no attested credential data"));
        }
        let key = B64.decode(public_key).map_err(|_| invalid("stored key"))?;
        let mut signed = self.auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&self.client_data));
        if !PublicKey::from_cose(&key)?.verifies(&signed, &self.signature) {
            return Err(invalid("the signature does not verify"));
        }
        let count = i64::from(parsed.sign_count);
        // Authenticators that keep no counter always say 0; any other must go up every time.
        if (count != 0 || stored_count != 0) && count <= stored_count {
            return Err(Rejected::CounterWentBack { backup_eligible: parsed.flags & FLAG_BE != 0 });
        }
        Ok(count)
    }
}

/// A credential public key, from its COSE_Key (RFC 9053).
enum PublicKey {
    /// The uncompressed P-256 point.
    Es256(Vec<u8>),
    Ed25519(Vec<u8>),
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl PublicKey {
    /// The COSE algorithm of the key.
    fn algorithm(&self) -> i64 {
        match self {
            PublicKey::Es256(_) => -7,
            PublicKey::Ed25519(_) => -8,
            PublicKey::Rs256 { .. } => -257,
        }
    }

    fn from_cose(bytes: &[u8]) -> Result<PublicKey, Rejected> {
        let bad = invalid("credentialPublicKey");
        let value: ciborium::Value = ciborium::de::from_reader(bytes).map_err(|_| bad.clone())?;
        let map = value.as_map().ok_or(bad.clone())?;
        let get = |label: i64| {
            map.iter().find(|(k, _)| k.as_integer().is_some_and(|i| i128::from(i) == i128::from(label))).map(|(_, v)| v)
        };
        let int = |label: i64| get(label).and_then(ciborium::Value::as_integer).map(i128::from);
        let bytes = |label: i64| get(label).and_then(ciborium::Value::as_bytes).cloned();
        match (int(1), int(3)) {
            // EC2, ES256, P-256.
            (Some(2), Some(-7)) if int(-1) == Some(1) => {
                let (x, y) = (bytes(-2).ok_or(bad.clone())?, bytes(-3).ok_or(bad.clone())?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad);
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(PublicKey::Es256(point))
            }
            // OKP, EdDSA, Ed25519.
            (Some(1), Some(-8)) if int(-1) == Some(6) => {
                let x = bytes(-2).filter(|x| x.len() == 32).ok_or(bad)?;
                Ok(PublicKey::Ed25519(x))
            }
            // RSA, RS256.
            (Some(3), Some(-257)) => {
                let (n, e) = (bytes(-1).ok_or(bad.clone())?, bytes(-2).ok_or(bad.clone())?);
                if n.len() < 256 {
                    return Err(bad);
                }
                Ok(PublicKey::Rs256 { n, e })
            }
            _ => Err(invalid("the key's algorithm is not one offered")),
        }
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Es256(point) => signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                .verify(message, sig)
                .is_ok(),
            PublicKey::Ed25519(x) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            PublicKey::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        }
    }
}

/// The length of the one CBOR data item at the start of `data` (definite lengths only, as CTAP2's
/// canonical CBOR has), or `None` when it is not one.
fn cbor_item_len(data: &[u8]) -> Option<usize> {
    fn item(data: &[u8], at: usize, depth: u8) -> Option<usize> {
        if depth > 16 {
            return None;
        }
        let first = *data.get(at)?;
        let (major, info) = (first >> 5, first & 0x1f);
        let (arg, mut next) = match info {
            0..=23 => (u64::from(info), at + 1),
            24..=27 => {
                let n = 1usize << (info - 24);
                let bytes = data.get(at + 1..at + 1 + n)?;
                (bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)), at + 1 + n)
            }
            _ => return None,
        };
        match major {
            0 | 1 | 7 => {}
            2 | 3 => {
                next = next.checked_add(usize::try_from(arg).ok()?)?;
                if next > data.len() {
                    return None;
                }
            }
            4 | 5 => {
                let items = if major == 5 { arg.checked_mul(2)? } else { arg };
                for _ in 0..items {
                    next = item(data, next, depth + 1)?;
                }
            }
            _ => next = item(data, next, depth + 1)?,
        }
        Some(next)
    }
    item(data, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_from_the_public_url() {
        let rp = RelyingParty::from_public_url("http://localhost:8080");
        assert_eq!((rp.id.as_str(), rp.origin.as_str()), ("localhost", "http://localhost:8080"));
        let rp = RelyingParty::from_public_url("https://pay.example.jp/");
        assert_eq!((rp.id.as_str(), rp.origin.as_str()), ("pay.example.jp", "https://pay.example.jp"));
    }

    #[test]
    fn cbor_lengths() {
        // {1: 2, 3: h'0102'} then a trailing byte.
        let data = [0xa2, 0x01, 0x02, 0x03, 0x42, 0x01, 0x02, 0xff];
        assert_eq!(cbor_item_len(&data), Some(7));
        assert_eq!(cbor_item_len(&[0x42, 0x01]), None);
        assert_eq!(cbor_item_len(&[0x9f]), None);
    }
}
