//! Building responses: bodies, JSON errors and the headers every reply needs.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::config::PlaybackSettings;

use crate::control::envelope::allow_origin;
pub use crate::control::envelope::{Body, full};

pub const M3U8: &str = "application/vnd.apple.mpegurl";
pub const JSON: &str = "application/json";
pub const MPD: &str = "application/dash+xml";
pub const JPEG: &str = "image/jpeg";

/// A JSON error with a stable code.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": code, "message": message });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    set(&mut response, header::CONTENT_TYPE, JSON);
    set(&mut response, header::CACHE_CONTROL, "no-store");
    response
}

/// A body with its content type and cache lifetime.
pub fn body(data: Bytes, content_type: &str, max_age: u32) -> Response<Body> {
    let mut response = Response::new(full(data));
    set(&mut response, header::CONTENT_TYPE, content_type);
    let cache = if max_age == 0 {
        "no-cache".to_string()
    } else {
        format!("public, max-age={max_age}")
    };
    set(&mut response, header::CACHE_CONTROL, &cache);
    response
}

/// Adds CORS headers when the request's origin is allowed.
pub fn cors(response: &mut Response<Body>, origin: Option<&HeaderValue>, p: &PlaybackSettings) {
    allow_origin(
        response,
        origin,
        &p.cors_origins,
        "Content-Length, Content-Type",
    );
}

/// The answer to a CORS preflight.
pub fn preflight() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    set(
        &mut response,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        "GET, HEAD, OPTIONS",
    );
    set(
        &mut response,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        "Range, Origin, Accept",
    );
    set(&mut response, header::ACCESS_CONTROL_MAX_AGE, "86400");
    response
}

fn set(response: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
