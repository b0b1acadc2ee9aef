//! The hyper server: accept loop, per-request handling, graceful close.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::{Accepted, Acceptor};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span};

use super::host::is_plain_host;
use super::respond::{self, Body, JPEG, M3U8, MPD};
use super::route::{Route, RouteError, signed_route};
use super::token::{Scope, Signer, TokenError, unix_now};
use super::viewers::{self, ViewerKey};
use crate::config::Config;
use crate::control::Control;
use crate::control::envelope::RequestId;
use crate::live::{Registry, StreamSnapshot};
use crate::package::dash;
use crate::package::isobmff::TrackKind;

/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on how long a playlist or manifest request for a live stream that
/// is still starting waits for it (three segment durations in between):
/// players' manifest timeouts are about 10 s.
const START_WAIT_MIN: Duration = Duration::from_secs(3);
const START_WAIT_MAX: Duration = Duration::from_secs(8);

struct Delivery {
    config: Arc<Config>,
    registry: Arc<Registry>,
    signer: Signer,
    control: Arc<Control>,
}

/// Serves HTTP until `shutdown` is cancelled, then lets requests finish.
/// Requests for the API, health checks and metrics go to `control`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    registry: Arc<Registry>,
    signer: Signer,
    control: Arc<Control>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let max_connections = config.server.max_http_connections;
    let delivery = Arc::new(Delivery {
        config,
        registry,
        signer,
        control,
    });
    let mut acceptor = Acceptor::new(listener, max_connections, "HTTP");
    while let Some(Accepted { socket, peer, slot }) = acceptor.next(&shutdown).await {
        let delivery = delivery.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                let service = service_fn(move |request| {
                    let delivery = delivery.clone();
                    async move { Ok::<_, Infallible>(delivery.handle(request, peer).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let conn = builder
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.as_mut().await
                    }
                };
                if let Err(e) = result {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                drop(slot);
            }
            .instrument(debug_span!("http", peer = %peer)),
        );
    }
}

impl Delivery {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let response = if Control::serves(request.uri().path()) {
            self.control.handle(request, peer).await
        } else {
            let request_id = RequestId::from_headers(request.headers());
            let mut response = self.playback(request, peer).await;
            request_id.stamp(&mut response);
            response
        };
        let bytes = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        self.control
            .metrics()
            .record_http(response.status().as_u16(), bytes);
        response
    }

    async fn playback(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let mut response = match *request.method() {
            Method::GET | Method::HEAD => {
                self.get(request.uri().path(), request.headers(), peer.ip())
                    .await
            }
            Method::OPTIONS => respond::preflight(),
            _ => {
                let mut refused = respond::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "only GET, HEAD and OPTIONS are served",
                );
                refused.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                refused
            }
        };
        respond::cors(&mut response, origin.as_ref(), &self.config.playback);
        response
    }

    async fn get(&self, path: &str, headers: &http::HeaderMap, client: IpAddr) -> Response<Body> {
        let (route, token) = match signed_route(path) {
            Ok(signed) => match self.authorize(signed.token, &signed.route, client) {
                Ok(()) => (signed.route, signed.token),
                Err(Refusal::SignatureRequired) => {
                    return respond::error(
                        StatusCode::FORBIDDEN,
                        "SIGNATURE_REQUIRED",
                        "playback needs a signed URL (see `bigfoot sign`)",
                    );
                }
                Err(Refusal::Token(e)) => {
                    return respond::error(StatusCode::FORBIDDEN, e.code(), &e.to_string());
                }
            },
            Err(RouteError::BadPath) => {
                return respond::error(StatusCode::BAD_REQUEST, "BAD_PATH", "malformed path");
            }
            Err(RouteError::NotFound) => {
                return respond::error(StatusCode::NOT_FOUND, "NOT_FOUND", "nothing is here");
            }
        };
        let watch = Watch::of(&route, token, headers, client);
        let response = self.answer(route, headers).await;
        if let Some(watch) = watch
            && response.status().is_success()
        {
            self.touch(watch);
        }
        response
    }

    /// Counts a player's request in its viewer session; a playlist or
    /// manifest that starts a session announces `viewer:joined`.
    fn touch(&self, watch: Watch) {
        let registry = &self.registry;
        let change = registry.viewers().touch(
            watch.key,
            &watch.stream,
            watch.rendition.as_deref(),
            watch.joins,
            std::time::Instant::now(),
        );
        if let Some(change) = change {
            viewers::announce(registry.events(), change);
        }
    }

    /// The response to an authorised route. Playlists and manifests of a
    /// live stream that is still starting are answered once they exist
    /// (within a bound), so a player that asks early is not turned away.
    async fn answer(&self, route: Route, headers: &http::HeaderMap) -> Response<Body> {
        let playback = &self.config.playback;
        match route {
            Route::Time => {
                let now = dash::utc(time::OffsetDateTime::now_utc());
                respond::body(now.into(), "text/plain", 0)
            }
            Route::Dash { stream } => {
                let ready = |s: &StreamSnapshot| s.dash.is_some();
                let Some(snapshot) = self.snapshot_when(&stream, ready).await else {
                    return stream_not_found(&stream);
                };
                match &snapshot.dash {
                    Some((before, after)) => {
                        let clock = self.clock_url(headers);
                        let mut mpd = Vec::with_capacity(before.len() + clock.len() + after.len());
                        mpd.extend_from_slice(before);
                        mpd.extend_from_slice(clock.as_bytes());
                        mpd.extend_from_slice(after);
                        respond::body(mpd.into(), MPD, playback.playlist_max_age_secs)
                    }
                    None => starting_or_not_found(&stream, snapshot.pending),
                }
            }
            Route::Thumbnail { stream } => {
                let Some(snapshot) = self.registry.snapshot(&stream) else {
                    return stream_not_found(&stream);
                };
                match &snapshot.thumbnail {
                    Some(jpeg) => respond::body(jpeg.clone(), JPEG, playback.playlist_max_age_secs),
                    None => respond::error(
                        StatusCode::NOT_FOUND,
                        "THUMBNAIL_NOT_AVAILABLE",
                        "the stream has no picture yet, or no video at all",
                    ),
                }
            }
            Route::Master { stream } => {
                let ready = |s: &StreamSnapshot| s.master.is_some();
                let Some(snapshot) = self.snapshot_when(&stream, ready).await else {
                    return stream_not_found(&stream);
                };
                match &snapshot.master {
                    Some(master) => {
                        respond::body(master.clone(), M3U8, playback.playlist_max_age_secs)
                    }
                    None => starting_or_not_found(&stream, snapshot.pending),
                }
            }
            Route::Media { stream, rendition } => {
                // Held until the rendition has a segment, or until the
                // current session's plan shows it does not exist.
                let ready = |s: &StreamSnapshot| match s.renditions.get(&rendition) {
                    Some(r) => !r.segments.is_empty(),
                    None => s.planned,
                };
                let Some(snapshot) = self.snapshot_when(&stream, ready).await else {
                    return stream_not_found(&stream);
                };
                match snapshot.renditions.get(&rendition) {
                    // No playlist without segments while more media is
                    // coming: its target duration may not be final yet. An
                    // ended rendition's playlist is (it says it ended).
                    Some(r) if r.segments.is_empty() && snapshot.pending => {
                        starting_or_not_found(&stream, true)
                    }
                    _ => rendition_file(&snapshot, &rendition, |r| {
                        Some(respond::body(
                            r.playlist.clone(),
                            M3U8,
                            playback.playlist_max_age_secs,
                        ))
                    }),
                }
            }
            Route::Init {
                stream,
                rendition,
                id,
            } => self.with_rendition(&stream, &rendition, |r| {
                let data = r.inits.get(&id)?;
                Some(respond::body(
                    data.clone(),
                    mime(r.kind),
                    playback.segment_max_age_secs,
                ))
            }),
            Route::Segment {
                stream,
                rendition,
                sequence,
            } => self.with_rendition(&stream, &rendition, |r| {
                let data = r.segments.get(&sequence)?;
                Some(respond::body(
                    data.clone(),
                    mime(r.kind),
                    playback.segment_max_age_secs,
                ))
            }),
        }
    }

    fn with_rendition(
        &self,
        stream: &str,
        rendition: &str,
        f: impl FnOnce(&crate::live::RenditionSnapshot) -> Option<Response<Body>>,
    ) -> Response<Body> {
        let Some(snapshot) = self.registry.snapshot(stream) else {
            return stream_not_found(stream);
        };
        rendition_file(&snapshot, rendition, f)
    }

    /// The stream's snapshot, waiting while it is live and not `ready`.
    async fn snapshot_when(
        &self,
        stream: &str,
        ready: impl Fn(&StreamSnapshot) -> bool,
    ) -> Option<Arc<StreamSnapshot>> {
        let wait = (self.config.segment_duration() * 3).clamp(START_WAIT_MIN, START_WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        self.registry.snapshot_when(stream, deadline, ready).await
    }
}

/// A rendition's playlist or file, or the 404 that says which is missing.
fn rendition_file(
    snapshot: &StreamSnapshot,
    rendition: &str,
    f: impl FnOnce(&crate::live::RenditionSnapshot) -> Option<Response<Body>>,
) -> Response<Body> {
    let Some(found) = snapshot.renditions.get(rendition) else {
        return respond::error(
            StatusCode::NOT_FOUND,
            "RENDITION_NOT_FOUND",
            "the stream has no such rendition",
        );
    };
    f(found).unwrap_or_else(|| {
        respond::error(
            StatusCode::NOT_FOUND,
            "SEGMENT_NOT_FOUND",
            "the segment is not in the live window",
        )
    })
}

impl Delivery {
    /// Checks a playback route's token; unsigned playback only when the
    /// config allows it.
    fn authorize(&self, token: Option<&str>, route: &Route, client: IpAddr) -> Result<(), Refusal> {
        let Some(stream) = route.stream() else {
            return Ok(());
        };
        let Some(token) = token else {
            if self.config.playback.require_signed_urls {
                return Err(Refusal::SignatureRequired);
            }
            return Ok(());
        };
        match self.signer.verify(token, stream, unix_now(), client) {
            Ok(Scope::Playback) => Ok(()),
            Ok(Scope::Thumbnail) if matches!(route, Route::Thumbnail { .. }) => Ok(()),
            Ok(Scope::Thumbnail) => Err(Refusal::Token(TokenError::WrongScope)),
            Err(e) => {
                debug!(stream, code = e.code(), "playback token refused");
                Err(Refusal::Token(e))
            }
        }
    }

    /// Absolute URL of the clock endpoint as this client reaches the server.
    fn clock_url(&self, headers: &http::HeaderMap) -> String {
        let public = self.config.server.public_url.trim_end_matches('/');
        if !public.is_empty() {
            return format!("{public}/time");
        }
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_plain_host(h))
            .map_or_else(
                || self.config.server.http_listen.to_string(),
                str::to_string,
            );
        format!("http://{host}/time")
    }
}

/// A request that counts towards a viewer session.
struct Watch {
    key: ViewerKey,
    stream: String,
    rendition: Option<String>,
    /// Playlists and manifests start sessions; segments only refresh them.
    joins: bool,
}

impl Watch {
    /// The session a request belongs to: its token (or, unsigned, its user
    /// agent) and its address. `None` for the clock and thumbnails.
    fn of(
        route: &Route,
        token: Option<&str>,
        headers: &http::HeaderMap,
        client: IpAddr,
    ) -> Option<Self> {
        let (stream, rendition, joins) = match route {
            Route::Master { stream } | Route::Dash { stream } => (stream, None, true),
            Route::Media { stream, rendition } => (stream, Some(rendition), true),
            Route::Init {
                stream, rendition, ..
            }
            | Route::Segment {
                stream, rendition, ..
            } => (stream, Some(rendition), false),
            Route::Time | Route::Thumbnail { .. } => return None,
        };
        let identity = token.unwrap_or_else(|| {
            headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        });
        Some(Self {
            key: ViewerKey::new(identity, client),
            stream: stream.clone(),
            // Players fetch the audio rendition beside a video one: the
            // video rendition is the one a viewer watches.
            rendition: rendition.filter(|r| *r != "audio").cloned(),
            joins,
        })
    }
}

/// Why a playback request was not authorised.
enum Refusal {
    SignatureRequired,
    Token(TokenError),
}

fn starting_or_not_found(stream: &str, pending: bool) -> Response<Body> {
    if pending {
        return respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "STREAM_STARTING",
            "the stream is starting; retry in a second",
        );
    }
    stream_not_found(stream)
}

fn stream_not_found(stream: &str) -> Response<Body> {
    respond::error(
        StatusCode::NOT_FOUND,
        "STREAM_NOT_FOUND",
        &format!("stream `{stream}` is not live"),
    )
}

fn mime(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Video => "video/mp4",
        TrackKind::Audio => "audio/mp4",
    }
}
