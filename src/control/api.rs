//! The API's handlers: authorise, then read the catalog and the stream
//! snapshots or change them. One function per endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tracing::{Instrument, debug_span, info};

use super::Control;
use super::auth::Principal;
use super::catalog::{Catalog, CatalogError, StreamPatch, StreamRecord};
use super::envelope::{self, ApiError, Body, Pagination, RequestId};
use super::events::{Resume, query_value};
use super::routes::{self, Endpoint};
use super::streams::{
    self, CreateStream, MAX_PLAYBACK_TTL_SECS, PlaybackRequest, PlaybackUrls, StreamKey,
    StreamView, StreamWithKey, UpdateStream,
};
use super::{socket, sse};
use crate::config::Rung;
use crate::deliver::host::{is_plain_host, strip_port};
use crate::deliver::token::{Target, unix_now};
use crate::live::StreamStatus;

/// How long ending a session waits for the stream task to answer.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handler knows about its request.
struct Call<'a> {
    id: Option<String>,
    host: Option<String>,
    query: Option<String>,
    body: Bytes,
    principal: Option<Principal>,
    request_id: &'a RequestId,
}

impl Call<'_> {
    fn id(&self) -> Result<&str, ApiError> {
        self.id.as_deref().ok_or(ApiError::NotFound)
    }

    fn subject(&self) -> &str {
        self.principal.as_ref().map_or("-", |p| p.subject.as_str())
    }

    fn ok<T: serde::Serialize>(&self, data: &T) -> Response<Body> {
        envelope::success(StatusCode::OK, data, self.request_id, None)
    }
}

impl Control {
    /// Routes, rate-limits, authenticates and authorises, then calls the
    /// endpoint.
    pub(super) async fn dispatch<B>(
        &self,
        mut request: Request<B>,
        peer: SocketAddr,
        request_id: &RequestId,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = request.uri().path();
        if path.starts_with("/api/") {
            if !self.config.api.enabled {
                return Err(ApiError::NotFound);
            }
            self.limits
                .check_address(peer.ip())
                .map_err(ApiError::RateLimited)?;
        }
        let matched = routes::resolve(request.method(), path)?;
        let endpoint = matched.endpoint;
        let principal = match endpoint.role() {
            None => None,
            Some(required) => {
                let mut authorization = request.headers().get(header::AUTHORIZATION).cloned();
                if authorization.is_none() && endpoint.token_in_query() {
                    authorization = query_value(request.uri().query(), "access_token")
                        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
                }
                let principal = self.verifier.verify(authorization.as_ref())?;
                self.limits
                    .check_subject(&principal.subject)
                    .map_err(ApiError::RateLimited)?;
                if principal.role < required {
                    return Err(ApiError::Forbidden(required));
                }
                Some(principal)
            }
        };
        let id = matched.id.as_deref().map(routes::stream_name).transpose()?;
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_plain_host(h))
            .map(str::to_string);
        let query = request.uri().query().map(str::to_string);
        match endpoint {
            Endpoint::Events => return self.open_socket(&mut request, request_id),
            Endpoint::EventStream => return self.open_event_stream(&request, request_id),
            _ => {}
        }
        let body = if endpoint.takes_body() {
            self.read_body(request).await?
        } else {
            Bytes::new()
        };
        let call = Call {
            id,
            host,
            query,
            body,
            principal,
            request_id,
        };
        self.call(endpoint, &call).await
    }

    async fn call(&self, endpoint: Endpoint, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        match endpoint {
            Endpoint::Health => Ok(call.ok(&serde_json::json!({ "status": "ok" }))),
            Endpoint::Ready => self.ready(call),
            Endpoint::Metrics => Ok(self.metrics_text(call)),
            Endpoint::OpenApi => Ok(super::openapi::response(call.request_id)),
            Endpoint::ListStreams => self.list(call),
            Endpoint::CreateStream => self.create(call).await,
            Endpoint::GetStream => self.get(call),
            Endpoint::UpdateStream => self.update(call).await,
            Endpoint::DeleteStream => self.delete(call).await,
            Endpoint::EndSession => self.end(call).await,
            Endpoint::GetKey => self.key(call),
            Endpoint::RotateKey => self.rotate(call).await,
            Endpoint::PlaybackUrls => self.playback_urls(call),
            // Answered by `dispatch`, which still has the request.
            Endpoint::Events | Endpoint::EventStream => Err(ApiError::NotFound),
        }
    }

    /// `GET /api/v1/events`: checks the upgrade, answers `101` and starts
    /// the client's socket task.
    fn open_socket<B>(
        &self,
        request: &mut Request<B>,
        request_id: &RequestId,
    ) -> Result<Response<Body>, ApiError> {
        let resume = resume_of(request)?;
        let handshake = socket::Handshake::from_request(request)?;
        let response = handshake.response(request_id);
        let client = socket::Client {
            events: self.registry.events().clone(),
            subscription: resume.subscription,
            since: resume.since,
            queue: self.config.events.client_queue,
            shutdown: self.background.shutdown.clone(),
            disconnects: self.metrics.disconnects(),
        };
        let span = debug_span!("event socket", request_id = request_id.as_str());
        self.background
            .tasks
            .spawn(socket::serve(handshake, client).instrument(span));
        Ok(response)
    }

    /// `GET /api/v1/events/sse`: the same events as a `text/event-stream`.
    fn open_event_stream<B>(
        &self,
        request: &Request<B>,
        request_id: &RequestId,
    ) -> Result<Response<Body>, ApiError> {
        let resume = resume_of(request)?;
        Ok(sse::response(
            self.registry.events(),
            resume,
            self.background.shutdown.clone(),
            request_id,
        ))
    }

    fn ready(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        if !self.ready.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ApiError::NotReady);
        }
        Ok(call.ok(&serde_json::json!({ "status": "ready" })))
    }

    fn metrics_text(&self, call: &Call<'_>) -> Response<Body> {
        let streams: Vec<(String, StreamStatus)> = self
            .registry
            .stream_names()
            .into_iter()
            .filter_map(|name| {
                let snapshot = self.registry.snapshot(&name)?;
                Some((name, snapshot.status.clone()))
            })
            .collect();
        let viewers = self.registry.viewers().all_stats(std::time::Instant::now());
        let text = self.metrics.render(&streams, &viewers);
        envelope::text(super::metrics::CONTENT_TYPE, text, call.request_id)
    }

    fn list(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let (limit, offset) = streams::page(call.query.as_deref())?;
        let all = self.catalog().list();
        let ingest_url = self.ingest_url(call.host.as_deref());
        let now = time::OffsetDateTime::now_utc();
        let page: Vec<StreamView> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|record| self.view(record, &ingest_url, now))
            .collect();
        let pagination = Pagination {
            limit,
            offset,
            total: all.len(),
        };
        Ok(envelope::success(
            StatusCode::OK,
            &page,
            call.request_id,
            Some(pagination),
        ))
    }

    async fn create(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let body: CreateStream = streams::parse_body(&call.body)?;
        let ladder: Option<Vec<Rung>> =
            body.ladder.map(|l| l.into_iter().map(Rung::from).collect());
        streams::check_renditions(ladder.as_deref(), body.passthrough, &self.config.transcode)?;
        let name = body.name;
        let (passthrough, enabled) = (body.passthrough, body.enabled);
        let record = self
            .write_catalog(move |catalog| {
                let record = catalog.create(&name, ladder, passthrough)?;
                match enabled {
                    Some(false) => catalog.update(
                        &record.name,
                        StreamPatch {
                            enabled: Some(false),
                            ..StreamPatch::default()
                        },
                    ),
                    _ => Ok(record),
                }
            })
            .await?;
        info!(stream = %record.name, subject = call.subject(), "stream created through the API");
        let ingest_url = self.ingest_url(call.host.as_deref());
        let stream = self.view(&record, &ingest_url, time::OffsetDateTime::now_utc());
        let data = StreamWithKey {
            stream,
            publish_url: format!("{ingest_url}/{}", record.key),
            key: record.key,
        };
        Ok(envelope::success(
            StatusCode::CREATED,
            &data,
            call.request_id,
            None,
        ))
    }

    fn get(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let record = self.record(call.id()?)?;
        let ingest_url = self.ingest_url(call.host.as_deref());
        Ok(call.ok(&self.view(&record, &ingest_url, time::OffsetDateTime::now_utc())))
    }

    async fn update(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let id = call.id()?.to_string();
        let body: UpdateStream = streams::parse_body(&call.body)?;
        let current = self.record(&id)?;
        let ladder: Option<Vec<Rung>> =
            body.ladder.map(|l| l.into_iter().map(Rung::from).collect());
        streams::check_renditions(
            ladder.as_deref().or(current.ladder.as_deref()),
            body.passthrough.or(current.passthrough),
            &self.config.transcode,
        )?;
        let patch = StreamPatch {
            enabled: body.enabled,
            ladder,
            passthrough: body.passthrough,
        };
        let name = id.clone();
        let record = self
            .write_catalog(move |catalog| catalog.update(&name, patch))
            .await?;
        info!(stream = %id, subject = call.subject(), "stream settings changed through the API");
        let ingest_url = self.ingest_url(call.host.as_deref());
        Ok(call.ok(&self.view(&record, &ingest_url, time::OffsetDateTime::now_utc())))
    }

    async fn delete(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let id = call.id()?.to_string();
        let name = id.clone();
        self.write_catalog(move |catalog| catalog.delete(&name))
            .await?;
        let disconnected = self.disconnect(&id).await?;
        info!(
            stream = %id,
            subject = call.subject(),
            disconnected,
            "stream deleted through the API"
        );
        Ok(call.ok(&serde_json::json!({ "id": id, "deleted": true })))
    }

    async fn end(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let id = call.id()?;
        self.record(id)?;
        if !self.disconnect(id).await? {
            return Err(ApiError::StreamNotLive(id.to_string()));
        }
        info!(stream = %id, subject = call.subject(), "live session ended through the API");
        Ok(call.ok(&serde_json::json!({ "id": id, "ended": true })))
    }

    fn key(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let record = self.record(call.id()?)?;
        let ingest_url = self.ingest_url(call.host.as_deref());
        Ok(call.ok(&StreamKey::new(&record, &ingest_url)))
    }

    async fn rotate(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let id = call.id()?.to_string();
        let name = id.clone();
        let record = self
            .write_catalog(move |catalog| catalog.rotate_key(&name))
            .await?;
        info!(stream = %id, subject = call.subject(), "stream key rotated through the API");
        let ingest_url = self.ingest_url(call.host.as_deref());
        Ok(call.ok(&StreamKey::new(&record, &ingest_url)))
    }

    fn playback_urls(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let record = self.record(call.id()?)?;
        let body: PlaybackRequest = streams::parse_body(&call.body)?;
        let ttl = body
            .ttl_secs
            .unwrap_or(self.config.playback.default_ttl_secs);
        if !(1..=MAX_PLAYBACK_TTL_SECS).contains(&ttl) {
            return Err(ApiError::Validation(format!(
                "ttlSecs: must be within 1 to {MAX_PLAYBACK_TTL_SECS}"
            )));
        }
        let expires = unix_now().saturating_add(ttl);
        let base = self.playback_base(call.host.as_deref());
        let url = |target| {
            self.signer
                .url(&base, &record.name, target, expires, body.client_ip)
                .ok_or_else(|| ApiError::Internal("the active signing key is missing".into()))
        };
        let expires_at = i64::try_from(expires)
            .ok()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .map(envelope::rfc3339)
            .unwrap_or_default();
        Ok(call.ok(&PlaybackUrls {
            hls: url(Target::Hls)?,
            dash: url(Target::Dash)?,
            thumbnail: url(Target::Thumbnail)?,
            expires_at,
        }))
    }
}

impl Control {
    fn catalog(&self) -> &Catalog {
        self.registry.catalog()
    }

    fn record(&self, id: &str) -> Result<StreamRecord, ApiError> {
        self.catalog()
            .get(id)
            .ok_or_else(|| ApiError::StreamNotFound(id.to_string()))
    }

    fn view(
        &self,
        record: &StreamRecord,
        ingest_url: &str,
        now: time::OffsetDateTime,
    ) -> StreamView {
        let snapshot = self.registry.snapshot(&record.name);
        let viewers = self
            .registry
            .viewers()
            .stats(&record.name, std::time::Instant::now());
        StreamView::new(
            record,
            snapshot.as_ref().map(|s| &s.status),
            viewers,
            ingest_url,
            now,
        )
    }

    /// Runs a catalog change (which writes `catalog.json`) on the blocking
    /// pool.
    async fn write_catalog<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let catalog = self.registry.catalog().clone();
        tokio::task::spawn_blocking(move || change(&catalog))
            .await
            .map_err(|e| ApiError::Internal(format!("catalog task failed: {e}")))?
            .map_err(catalog_error)
    }

    /// Disconnects a stream's publisher; false when it had none.
    async fn disconnect(&self, stream: &str) -> Result<bool, ApiError> {
        tokio::time::timeout(DISCONNECT_TIMEOUT, self.registry.disconnect(stream))
            .await
            .map_err(|_| ApiError::Internal(format!("stream `{stream}` did not answer in time")))
    }

    /// `rtmp://{host}:{port}/{app}`: the host of `server.public_url`, else
    /// of the request's `Host`, else the bound RTMP address.
    fn ingest_url(&self, host_header: Option<&str>) -> String {
        let public = self.config.server.public_url.as_str();
        let from_public = public
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
            .filter(|h| !h.is_empty());
        let host = from_public
            .or(host_header)
            .map(strip_port)
            .filter(|h| !h.is_empty())
            .map_or_else(|| self.rtmp_host(), str::to_string);
        format!(
            "rtmp://{host}:{}/{}",
            self.rtmp_addr.port(),
            self.config.ingest.app
        )
    }

    fn rtmp_host(&self) -> String {
        let ip = match self.rtmp_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    }

    /// Where players reach this server: `server.public_url`, else
    /// `http://{Host}`.
    fn playback_base(&self, host_header: Option<&str>) -> String {
        let public = self.config.server.public_url.trim_end_matches('/');
        if !public.is_empty() {
            return public.to_string();
        }
        match host_header {
            Some(host) => format!("http://{host}"),
            None => crate::server::public_base_url(&self.config),
        }
    }
}

/// `streams`, `since` and `Last-Event-ID` of an events request.
fn resume_of<B>(request: &Request<B>) -> Result<Resume, ApiError> {
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    Resume::parse(request.uri().query(), last_event_id).map_err(ApiError::Validation)
}

fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::NotFound(name) => ApiError::StreamNotFound(name),
        CatalogError::Exists(name) => ApiError::StreamExists(name),
        CatalogError::ManagedByConfig(name) => ApiError::ManagedByConfig(name),
        e @ (CatalogError::BadName(_) | CatalogError::BadLadder(_)) => {
            ApiError::Validation(e.to_string())
        }
        e @ (CatalogError::Load { .. } | CatalogError::Save { .. }) => {
            ApiError::Internal(e.to_string())
        }
    }
}
