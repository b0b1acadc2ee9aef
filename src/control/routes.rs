//! The control API's route table: method and path to endpoint, and the
//! role each endpoint needs. `openapi.json` documents exactly these routes
//! (a test holds the two together).

use http::Method;

use super::auth::Role;
use super::envelope::ApiError;
use crate::config::validate::{MAX_NAME_LEN, is_valid_name};

/// What a request asks the control plane for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Ready,
    Metrics,
    OpenApi,
    ListStreams,
    CreateStream,
    GetStream,
    UpdateStream,
    DeleteStream,
    EndSession,
    GetKey,
    RotateKey,
    PlaybackUrls,
    Events,
    EventStream,
}

/// Every route: method, path template (`{id}` is a stream name), endpoint.
pub const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/healthz", Endpoint::Health),
    ("GET", "/readyz", Endpoint::Ready),
    ("GET", "/metrics", Endpoint::Metrics),
    ("GET", "/api/v1/openapi.json", Endpoint::OpenApi),
    ("GET", "/api/v1/streams", Endpoint::ListStreams),
    ("POST", "/api/v1/streams", Endpoint::CreateStream),
    ("GET", "/api/v1/streams/{id}", Endpoint::GetStream),
    ("PATCH", "/api/v1/streams/{id}", Endpoint::UpdateStream),
    ("DELETE", "/api/v1/streams/{id}", Endpoint::DeleteStream),
    ("POST", "/api/v1/streams/{id}/end", Endpoint::EndSession),
    ("GET", "/api/v1/streams/{id}/key", Endpoint::GetKey),
    (
        "POST",
        "/api/v1/streams/{id}/key/rotate",
        Endpoint::RotateKey,
    ),
    (
        "POST",
        "/api/v1/streams/{id}/playback-urls",
        Endpoint::PlaybackUrls,
    ),
    ("GET", "/api/v1/events", Endpoint::Events),
    ("GET", "/api/v1/events/sse", Endpoint::EventStream),
];

impl Endpoint {
    /// The least role that may call it; `None` for public endpoints.
    pub fn role(self) -> Option<Role> {
        match self {
            Self::Health | Self::Ready | Self::Metrics | Self::OpenApi => None,
            Self::ListStreams
            | Self::GetStream
            | Self::PlaybackUrls
            | Self::Events
            | Self::EventStream => Some(Role::Viewer),
            Self::CreateStream
            | Self::UpdateStream
            | Self::DeleteStream
            | Self::EndSession
            | Self::GetKey
            | Self::RotateKey => Some(Role::Operator),
        }
    }

    /// Whether it is under `/api/`, where rate limits and CORS apply.
    pub fn is_api(self) -> bool {
        !matches!(self, Self::Health | Self::Ready | Self::Metrics)
    }

    /// Whether the token may come as an `access_token` query parameter
    /// (browsers cannot set headers on WebSockets and `EventSource`).
    pub fn token_in_query(self) -> bool {
        matches!(self, Self::Events | Self::EventStream)
    }

    /// Whether a request body is read.
    pub fn takes_body(self) -> bool {
        matches!(
            self,
            Self::CreateStream | Self::UpdateStream | Self::PlaybackUrls
        )
    }
}

/// A matched route: the endpoint and the stream name in the path, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub endpoint: Endpoint,
    pub id: Option<String>,
}

/// Whether control answers this path (everything else is playback).
pub fn serves(path: &str) -> bool {
    path.starts_with("/api/") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Finds the route of a request; a known path with another method is
/// `METHOD_NOT_ALLOWED`. The stream name is checked later, with
/// [`stream_name`], once the caller is authorised.
pub fn resolve(method: &Method, path: &str) -> Result<Matched, ApiError> {
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let mut allowed = Vec::new();
    for (route_method, template, endpoint) in ROUTES {
        let Some(id) = match_template(template, path) else {
            continue;
        };
        if *route_method != method.as_str() {
            allowed.push(*route_method);
            continue;
        }
        return Ok(Matched {
            endpoint: *endpoint,
            id,
        });
    }
    if allowed.is_empty() {
        return Err(ApiError::NotFound);
    }
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.push("OPTIONS");
    Err(ApiError::MethodNotAllowed(allowed.join(", ")))
}

/// The stream name from a path, or `STREAM_NOT_FOUND` when no stream can
/// have it.
pub fn stream_name(id: &str) -> Result<String, ApiError> {
    if id.len() > MAX_NAME_LEN || !is_valid_name(id) {
        return Err(ApiError::StreamNotFound(id.chars().take(80).collect()));
    }
    Ok(id.to_string())
}

/// `Some(id)` when `path` fits `template` (`Some(None)` without `{id}`).
fn match_template(template: &str, path: &str) -> Option<Option<String>> {
    let mut id = None;
    let mut parts = path.split('/');
    for expected in template.split('/') {
        let part = parts.next()?;
        if expected == "{id}" {
            if part.is_empty() {
                return None;
            }
            id = Some(part.to_string());
        } else if expected != part {
            return None;
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_endpoints() {
        let get = |p: &str| resolve(&Method::GET, p);
        assert_eq!(
            get("/api/v1/streams/cam1").map(|m| (m.endpoint, m.id)).ok(),
            Some((Endpoint::GetStream, Some("cam1".into())))
        );
        assert_eq!(
            resolve(&Method::POST, "/api/v1/streams/cam1/key/rotate")
                .map(|m| m.endpoint)
                .ok(),
            Some(Endpoint::RotateKey)
        );
        assert!(matches!(get("/api/v1/streams/"), Err(ApiError::NotFound)));
        assert!(matches!(get("/api/v1/nothing"), Err(ApiError::NotFound)));
        assert!(matches!(
            stream_name("Not%20A%20Name"),
            Err(ApiError::StreamNotFound(_))
        ));
        match resolve(&Method::PUT, "/api/v1/streams/cam1") {
            Err(ApiError::MethodNotAllowed(allow)) => {
                assert_eq!(allow, "GET, PATCH, DELETE, HEAD, OPTIONS");
            }
            other => panic!("{other:?}"),
        }
        assert!(serves("/api/v1/streams") && serves("/metrics") && !serves("/live/x"));
    }
}
