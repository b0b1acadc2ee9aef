//! Control: the catalog of streams that may publish, and the REST API,
//! health checks and metrics that observe and change them.
//!
//! Delivery hands control every request under `/api/`, and `/healthz`,
//! `/readyz` and `/metrics`. Control never blocks on media work: it reads
//! stream snapshots and sends commands to stream tasks through the live
//! registry; catalog writes run on the blocking pool.
//!
//! - [`routes`]: the route table and the role each endpoint needs;
//! - [`auth`]: bearer JWTs (HS256 secret, or an identity provider's JWKS);
//! - [`limits`]: rate limits per client address and per token subject;
//! - [`envelope`]: request ids, the `{data, meta}` body and error codes;
//! - [`streams`]: the stream resource and request bodies;
//! - `api`: the handlers;
//! - [`events`]: the event bus; [`socket`] and [`sse`]: the event socket
//!   and its server-sent twin; [`webhooks`]: events POSTed out, and the
//!   `on_publish` hook;
//! - [`metrics`]: Prometheus metrics; [`openapi`]: the API document.

mod api;
pub mod auth;
pub mod catalog;
pub mod envelope;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod socket;
pub mod sse;
pub mod streams;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::config::Config;
use crate::config::secrets::Secrets;
use crate::deliver::token::Signer;
use crate::live::Registry;
use auth::{AuthSetupError, Verifier};
use envelope::{ApiError, Body, RequestId};
use limits::RateLimits;
use metrics::Metrics;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control API: {0}")]
    Auth(#[from] AuthSetupError),
}

/// The control plane: API, health, readiness and metrics.
pub struct Control {
    config: Arc<Config>,
    registry: Arc<Registry>,
    signer: Signer,
    verifier: Verifier,
    limits: RateLimits,
    metrics: Metrics,
    /// The bound RTMP address, for ingest URLs.
    rtmp_addr: SocketAddr,
    ready: AtomicBool,
    /// Ends event sockets and streams on shutdown; socket tasks run here.
    background: Background,
}

/// The server's cancellation root and task tracker, for the event
/// socket tasks control starts.
#[derive(Clone)]
pub struct Background {
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl Control {
    /// Builds the control plane; reads the JWKS file if one is configured.
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        signer: Signer,
        secrets: &Secrets,
        rtmp_addr: SocketAddr,
        background: Background,
    ) -> Result<Self, ControlError> {
        let api = &config.api;
        let jwks = (!api.jwks_file.as_os_str().is_empty()).then(|| config.resolve(&api.jwks_file));
        let verifier = Verifier::new(api, &secrets.jwt_secret, jwks.as_deref())?;
        if jwks.is_some() {
            tracing::info!(keys = verifier.jwks_len(), "identity provider keys loaded");
        }
        Ok(Self {
            limits: RateLimits::new(api.rate_limit_per_minute),
            config,
            registry,
            signer,
            verifier,
            metrics: Metrics::new(),
            rtmp_addr,
            ready: AtomicBool::new(false),
            background,
        })
    }

    /// Whether control answers this path rather than playback.
    pub fn serves(path: &str) -> bool {
        routes::serves(path)
    }

    /// The metrics delivery counts responses into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the server ready (listeners bound, GStreamer initialised) or
    /// not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Answers one request; every response carries `X-Request-Id`.
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = RequestId::from_headers(request.headers());
        let origin = request.headers().get(header::ORIGIN).cloned();
        let span = debug_span!(
            "control",
            method = %request.method(),
            path = %request.uri().path().chars().take(200).collect::<String>(),
            request_id = request_id.as_str(),
        );
        async move {
            let mut response = if request.method() == Method::OPTIONS {
                preflight(&request_id)
            } else {
                match self.dispatch(request, peer, &request_id).await {
                    Ok(response) => response,
                    Err(e) => {
                        if let ApiError::Internal(detail) = &e {
                            warn!(detail = %detail, "control request failed");
                        } else {
                            debug!(code = e.code(), "control request refused");
                        }
                        e.to_response(&request_id)
                    }
                }
            };
            self.cors(&mut response, origin.as_ref());
            debug!(status = response.status().as_u16(), "answered");
            response
        }
        .instrument(span)
        .await
    }

    /// Reads a request body of at most `api.max_body_bytes`.
    async fn read_body<B>(&self, request: Request<B>) -> Result<Bytes, ApiError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.config.api.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ApiError::PayloadTooLarge(limit))
            }
            Err(e) => Err(ApiError::InvalidJson(format!("cannot read the body: {e}"))),
        }
    }

    /// Adds CORS headers when the request's origin is in `api.cors_origins`.
    fn cors(&self, response: &mut Response<Body>, origin: Option<&HeaderValue>) {
        let allowed = &self.config.api.cors_origins;
        envelope::allow_origin(response, origin, allowed, "X-Request-Id, Retry-After");
    }
}

/// The answer to a CORS preflight of an API call.
fn preflight(request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(envelope::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, X-Request-Id"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    request_id.stamp(&mut response);
    response
}
