//! Request extractors whose every rejection is a precise problem (never axum's plain-text one).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON body: `T` parsed from it, and the parsed document itself (what idempotency fingerprints).
///
/// Rejections: a body that is not declared as JSON gets `415 unsupported_media_type`; one over the
/// 64 KiB limit `413 payload_too_large`; one that is not JSON `400 malformed_json`; one of the
/// wrong shape `422 invalid_body` naming the field (never its value, which may be a secret). An
/// empty body counts as `{}`.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Value,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = read_json(req, state).await?;
        let value = parse_value(&raw)?;
        Ok(ApiJson { value, raw })
    }
}

/// The JSON body of a route that moves money: read like [`ApiJson`], but its shape is checked
/// only after the `Idempotency-Key` (API.md orders idempotency before input validation): a key
/// reused with a body that adds a field is `409 idempotency_conflict`, not `422`. The route takes
/// `value` (with `?`) where it validates its input, after claiming the key.
pub struct IdempotentJson<T> {
    pub value: Result<T, InvalidBody>,
    pub raw: Value,
}

/// Why a body has the wrong shape (`422 invalid_body` with this detail); cloned into a retried work.
#[derive(Debug, Clone)]
pub struct InvalidBody(String);

impl From<InvalidBody> for ApiError {
    fn from(e: InvalidBody) -> Self {
        ApiError::invalid_body(e.0)
    }
}

impl<S, T> FromRequest<S> for IdempotentJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = read_json(req, state).await?;
        let value = parse_value(&raw).map_err(|e| InvalidBody(e.detail));
        Ok(IdempotentJson { value, raw })
    }
}

/// Reads a body as a JSON document (an empty body is `{}`), with the rejections [`ApiJson`] names.
async fn read_json<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            super::error::problem_for_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", "the request body could not be read")
        }
    })?;
    let is_json = |ct: &str| ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"));
    let raw = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match content_type.as_deref() {
            Some(ct) if is_json(ct) => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as application/json",
                ));
            }
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()),
            )
        })?
    };
    Ok(raw)
}

/// Parses a JSON document (every request body is an object) into `T`, naming the offending field
/// without echoing its value.
pub fn parse_value<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    if !raw.is_object() {
        return Err(ApiError::invalid_body("the body must be a JSON object"));
    }
    if contains_nul(raw) {
        // PostgreSQL cannot store NUL in text, and no field of ours has a use for it.
        return Err(ApiError::invalid_body("text must not contain NUL characters"));
    }
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let detail = if let Some(field) = inner.strip_prefix("missing field ") {
            let field = field.split(" at ").next().unwrap_or(field);
            if path == "." {
                format!("the field {field} is required")
            } else {
                format!("the field {field} is required in {path}")
            }
        } else if inner.starts_with("unknown field") {
            let field = inner.split('`').nth(1).unwrap_or("?");
            format!("the field `{field}` is not accepted here")
        } else {
            format!("the field `{path}` has the wrong type or an invalid value")
        };
        ApiError::invalid_body(detail)
    })
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Whether text could be one of our ids (`prefix_hex`): anything else (a NUL, a long string) is
/// simply not found, and never reaches the database.
pub fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An id from the path, typed: a handler that takes `PathId<StoreId>` cannot mistake it for
/// another kind of id. Text that cannot be an id answers `404` ("there is no such store").
pub struct PathId<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: crate::ids::Id,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let not_found = || ApiError::not_found(format!("there is no such {}", T::NOUN));
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found())?;
        if is_id(&id) { Ok(PathId(T::from_raw(id))) } else { Err(not_found()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Card {
        number: String,
        exp_month: u8,
    }

    #[test]
    fn shape_errors_name_the_field_but_never_its_value() {
        let e = parse_value::<Card>(&json!({"number": 4242424242424242u64, "exp_month": 1})).unwrap_err();
        assert_eq!(e.code, "invalid_body");
        assert!(e.detail.contains("number"), "{}", e.detail);
        assert!(!e.detail.contains("4242"), "{}", e.detail);
        let e =
            parse_value::<Card>(&json!({"number": "4242424242424242", "exp_month": "4242424242424242"})).unwrap_err();
        assert!(e.detail.contains("exp_month") && !e.detail.contains("4242"), "{}", e.detail);
        let e = parse_value::<Card>(&json!({"exp_month": 1})).unwrap_err();
        assert_eq!(e.detail, "the field `number` is required");
        let e = parse_value::<Card>(&json!([1, 2])).unwrap_err();
        assert_eq!(e.detail, "the body must be a JSON object");
        let e = parse_value::<Card>(&json!({"number": "1", "exp_month": 1, "cvc": "123"})).unwrap_err();
        assert_eq!(e.detail, "the field `cvc` is not accepted here");
    }
}
