//! The one shape of every control response: request ids, the success
//! envelope `{data, meta}` and the error body `{code, message, details?,
//! timestamp, requestId}` with its stable codes and HTTP statuses.
//!
//! Pure builders over data; nothing here reads a request body or a token.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::auth::{AuthError, Role};

/// The body type of every HTTP response: whole bodies and streams
/// (server-sent events) alike.
pub type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// Adds CORS headers to `response` when the request's `origin` is one of
/// `allowed` (or `allowed` holds `*`), exposing the headers listed in
/// `expose`. `Vary: Origin` goes on every answer, since each depends on it.
pub fn allow_origin<B>(
    response: &mut Response<B>,
    origin: Option<&HeaderValue>,
    allowed: &[String],
    expose: &'static str,
) {
    let allow = if allowed.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        origin
            .filter(|o| allowed.iter().any(|a| a.as_bytes() == o.as_bytes()))
            .cloned()
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(expose),
        );
    }
}

/// The header that carries the request id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id accepted from a client.
const MAX_CLIENT_REQUEST_ID: usize = 64;
/// The JSON content type.
pub const JSON: &str = "application/json";

/// Every error code the API answers with, as listed in `openapi.json`.
pub const ERROR_CODES: &[&str] = &[
    "AUTH_MISSING_TOKEN",
    "AUTH_INVALID_TOKEN",
    "AUTH_TOKEN_EXPIRED",
    "AUTH_FORBIDDEN",
    "RATE_LIMITED",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "STREAM_NOT_FOUND",
    "STREAM_EXISTS",
    "STREAM_MANAGED_BY_CONFIG",
    "STREAM_NOT_LIVE",
    "VALIDATION_FAILED",
    "INVALID_JSON",
    "PAYLOAD_TOO_LARGE",
    "NOT_READY",
    "UPGRADE_REQUIRED",
    "INTERNAL",
];

/// Identifies one request in responses and logs: the client's own
/// `X-Request-Id` when it is short and plain, else a new UUID v4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let given = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_plain_id(v));
        match given {
            Some(id) => Self(id.to_string()),
            // A v4 UUID from the thread's seeded generator: `Uuid::new_v4`
            // asks the kernel for randomness on every call, a system call
            // per request that was a third of those a playlist costs.
            None => Self(
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string(),
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Sets `X-Request-Id` on a response.
    pub fn stamp<B>(&self, response: &mut Response<B>) {
        if let Ok(value) = HeaderValue::from_str(&self.0) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
    }
}

fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a page of a list starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub limit: usize,
    pub offset: usize,
    pub total: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    timestamp: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pagination: Option<Pagination>,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    data: &'a T,
    meta: Meta<'a>,
}

/// `{data, meta}` with `status`.
pub fn success<T: Serialize>(
    status: StatusCode,
    data: &T,
    request_id: &RequestId,
    pagination: Option<Pagination>,
) -> Response<Body> {
    let envelope = Envelope {
        data,
        meta: Meta {
            timestamp: timestamp(),
            request_id: request_id.as_str(),
            pagination,
        },
    };
    match serde_json::to_vec(&envelope) {
        Ok(bytes) => json_response(status, bytes, request_id),
        Err(e) => {
            ApiError::Internal(format!("cannot encode the response: {e}")).to_response(request_id)
        }
    }
}

/// A non-JSON body (metrics, for instance) with its content type.
pub fn text(content_type: &str, body: String, request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(full(body));
    set(&mut response, header::CONTENT_TYPE, content_type);
    set(&mut response, header::CACHE_CONTROL, "no-store");
    request_id.stamp(&mut response);
    response
}

fn json_response(status: StatusCode, bytes: Vec<u8>, request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    set(&mut response, header::CONTENT_TYPE, JSON);
    set(&mut response, header::CACHE_CONTROL, "no-store");
    request_id.stamp(&mut response);
    response
}

fn set<B>(response: &mut Response<B>, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// Now, as RFC 3339 UTC.
pub fn timestamp() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339 UTC, whole seconds.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why an API request failed. Each variant has one stable code and one
/// HTTP status; the message is for people and may change.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this needs the `{0}` role or a higher one")]
    Forbidden(Role),
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("nothing is served at this path")]
    NotFound,
    #[error("this path does not answer this method; it answers {0}")]
    MethodNotAllowed(String),
    #[error("stream `{0}` does not exist")]
    StreamNotFound(String),
    #[error("stream `{0}` already exists")]
    StreamExists(String),
    #[error("stream `{0}` is defined in config.toml; edit the file to change it")]
    ManagedByConfig(String),
    #[error("stream `{0}` has no live publisher")]
    StreamNotLive(String),
    #[error("{0}")]
    Validation(String),
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    InvalidJson(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the server is starting or stopping")]
    NotReady,
    #[error("this endpoint is a WebSocket: send `Upgrade: websocket` (or use /api/v1/events/sse)")]
    UpgradeRequired,
    /// The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound | Self::StreamNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::StreamExists(_) | Self::ManagedByConfig(_) | Self::StreamNotLive(_) => {
                StatusCode::CONFLICT
            }
            Self::Validation(_) | Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code, one of [`ERROR_CODES`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.code(),
            Self::Forbidden(_) => "AUTH_FORBIDDEN",
            Self::RateLimited(_) => "RATE_LIMITED",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::StreamNotFound(_) => "STREAM_NOT_FOUND",
            Self::StreamExists(_) => "STREAM_EXISTS",
            Self::ManagedByConfig(_) => "STREAM_MANAGED_BY_CONFIG",
            Self::StreamNotLive(_) => "STREAM_NOT_LIVE",
            Self::Validation(_) => "VALIDATION_FAILED",
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::NotReady => "NOT_READY",
            Self::UpgradeRequired => "UPGRADE_REQUIRED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; the server log has the detail".into(),
            other => other.to_string(),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            Self::Auth(e) => Some(serde_json::json!({ "reason": e.reason() })),
            Self::Forbidden(role) => Some(serde_json::json!({ "requiredRole": role.as_str() })),
            Self::RateLimited(secs) => Some(serde_json::json!({ "retryAfterSecs": secs })),
            Self::MethodNotAllowed(allow) => Some(serde_json::json!({ "allow": allow })),
            Self::PayloadTooLarge(limit) => Some(serde_json::json!({ "maxBytes": limit })),
            _ => None,
        }
    }

    /// The error body with its status and headers (`Retry-After`, `Allow`,
    /// `WWW-Authenticate`).
    pub fn to_response(&self, request_id: &RequestId) -> Response<Body> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ErrorBody<'a> {
            code: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<serde_json::Value>,
            timestamp: String,
            request_id: &'a str,
        }
        let body = ErrorBody {
            code: self.code(),
            message: self.message(),
            details: self.details(),
            timestamp: timestamp(),
            request_id: request_id.as_str(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = json_response(self.status(), bytes, request_id);
        match self {
            Self::RateLimited(secs) => set(&mut response, header::RETRY_AFTER, &secs.to_string()),
            Self::MethodNotAllowed(allow) => set(&mut response, header::ALLOW, allow),
            Self::UpgradeRequired => {
                set(&mut response, header::UPGRADE, "websocket");
                set(&mut response, header::CONNECTION, "Upgrade");
            }
            Self::Auth(e) => set(
                &mut response,
                header::WWW_AUTHENTICATE,
                &format!("Bearer error=\"{}\"", e.bearer_error()),
            ),
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: Response<Body>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = runtime
            .block_on(response.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&bytes).expect("JSON body")
    }

    #[test]
    fn errors_carry_code_status_and_request_id() {
        let id = RequestId("req-1".into());
        let response = ApiError::RateLimited(7).to_response(&id);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(response.headers()[REQUEST_ID], "req-1");
        let json = body_json(response);
        assert_eq!(json["code"], "RATE_LIMITED");
        assert_eq!(json["requestId"], "req-1");
        assert!(json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

        let internal = ApiError::Internal("disk on fire at /secret/path".into());
        let json = body_json(internal.to_response(&id));
        assert!(!json["message"].as_str().unwrap_or("").contains("/secret"));
    }

    #[test]
    fn every_code_is_listed() {
        let samples = [
            ApiError::Forbidden(Role::Admin),
            ApiError::NotFound,
            ApiError::MethodNotAllowed("GET".into()),
            ApiError::StreamNotFound("x".into()),
            ApiError::StreamExists("x".into()),
            ApiError::ManagedByConfig("x".into()),
            ApiError::StreamNotLive("x".into()),
            ApiError::Validation("x".into()),
            ApiError::InvalidJson("x".into()),
            ApiError::PayloadTooLarge(1),
            ApiError::NotReady,
            ApiError::UpgradeRequired,
            ApiError::Internal("x".into()),
            ApiError::Auth(AuthError::Missing),
            ApiError::Auth(AuthError::Expired),
            ApiError::Auth(AuthError::Signature),
        ];
        for error in samples {
            assert!(ERROR_CODES.contains(&error.code()), "{}", error.code());
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_plain() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("a b<script>"));
        assert_eq!(RequestId::from_headers(&headers).as_str().len(), 36);
    }
}
