//! Webhooks: events POSTed to the URLs in `[[webhooks]]`, signed and
//! retried; and the `on_publish` hook that lets another platform allow or
//! refuse each publish.
//!
//! One dispatcher task follows the event bus and hands each event to the
//! bounded queue of every webhook that wants it; one task per webhook
//! delivers its queue in order. A full queue drops the event (counted), so
//! a dead receiver never holds up the bus, media work or other webhooks.
//!
//! Every request carries `X-Bigfoot-Timestamp` (Unix seconds) and
//! `X-Bigfoot-Signature: sha256={hex}`, the HMAC-SHA256 of
//! `{timestamp}.{body}` with the webhook's secret.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::events::{Event, EventBus};
use super::metrics::WebhookCounter;
use crate::config::{Config, WebhookSettings};
use crate::deliver::token::unix_now;

/// The header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-bigfoot-timestamp";
/// The header with `sha256={hex HMAC of "{timestamp}.{body}"}`.
pub const SIGNATURE_HEADER: &str = "x-bigfoot-signature";
/// The header with the event type.
pub const EVENT_HEADER: &str = "x-bigfoot-event";
/// Events waiting per webhook before new ones are dropped.
const QUEUE: usize = 256;
/// Attempts per delivery, the first included.
const ATTEMPTS: u32 = 5;
/// Wait before the first retry; it doubles for each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One attempt (connect, send, answer) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// `sha256={hex}` over `{timestamp}.{body}`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("answered {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
}

/// POSTs a JSON body, signed when a secret is given; Ok on 2xx.
async fn post(
    client: &HttpClient,
    url: &Uri,
    secret: Option<&[u8]>,
    event_type: Option<&str>,
    body: Bytes,
    timeout: Duration,
) -> Result<(), HookError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("bigfoot/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(secret) = secret {
        let now = unix_now();
        request = request
            .header(TIMESTAMP_HEADER, now)
            .header(SIGNATURE_HEADER, signature(secret, now, &body));
    }
    if let Some(kind) = event_type.and_then(|k| HeaderValue::from_str(k).ok()) {
        request = request.header(EVENT_HEADER, kind);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| HookError::Request(e.to_string()))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| HookError::Timeout(timeout))?
        .map_err(|e| HookError::Request(e.to_string()))?;
    let status = response.status();
    // The answer's body is not read: dropping it closes the exchange.
    if status.is_success() {
        Ok(())
    } else {
        Err(HookError::Status(status.as_u16()))
    }
}

/// One configured webhook, ready to deliver.
struct Webhook {
    url: Uri,
    /// For logs: the URL without its path and query.
    host: String,
    events: Vec<String>,
    secret: Vec<u8>,
}

impl Webhook {
    fn new(settings: &WebhookSettings) -> Option<Self> {
        let url: Uri = settings.url.parse().ok()?;
        Some(Self {
            host: url.authority().map(|a| a.to_string()).unwrap_or_default(),
            url,
            events: settings.events.clone(),
            secret: settings.secret.clone().into_bytes(),
        })
    }

    fn wants(&self, event: &Event) -> bool {
        self.events.iter().any(|e| e == "*" || e == event.kind)
    }
}

/// Starts the dispatcher and one delivery task per webhook; none when no
/// webhook is configured. The tasks end with `shutdown`.
pub fn start(
    config: &Config,
    events: &EventBus,
    counter: WebhookCounter,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    let hooks: Vec<Arc<Webhook>> = config
        .webhooks
        .iter()
        .filter_map(Webhook::new)
        .map(Arc::new)
        .collect();
    if hooks.is_empty() {
        return;
    }
    let client = http_client();
    let mut queues = Vec::new();
    for hook in hooks {
        let (queue, pending) = mpsc::channel(QUEUE);
        let span = info_span!("webhook", host = %hook.host);
        tasks.spawn(
            deliver_queue(
                hook.clone(),
                pending,
                client.clone(),
                counter.clone(),
                shutdown.clone(),
            )
            .instrument(span),
        );
        queues.push((hook, queue));
    }
    let (_, live) = events.subscribe(None);
    tasks.spawn(dispatch(live, queues, counter, shutdown.clone()));
}

/// Hands each event to the queues of the webhooks that want it.
async fn dispatch(
    mut live: broadcast::Receiver<Arc<Event>>,
    queues: Vec<(Arc<Webhook>, mpsc::Sender<Arc<Event>>)>,
    counter: WebhookCounter,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = live.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "webhooks fell behind the event bus; events dropped");
                for _ in 0..missed {
                    counter.count("dropped");
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for (hook, queue) in &queues {
            if hook.wants(&event) && queue.try_send(event.clone()).is_err() {
                counter.count("dropped");
                warn!(host = %hook.host, id = event.id, "webhook queue full; event dropped");
            }
        }
    }
}

/// Delivers one webhook's events in order, each with retries.
async fn deliver_queue(
    hook: Arc<Webhook>,
    mut pending: mpsc::Receiver<Arc<Event>>,
    client: HttpClient,
    counter: WebhookCounter,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = pending.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let body = match serde_json::to_vec(&*event) {
            Ok(body) => Bytes::from(body),
            Err(_) => continue,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = deliver(&hook, &client, &counter, &event, body) => {}
        }
    }
}

async fn deliver(
    hook: &Webhook,
    client: &HttpClient,
    counter: &WebhookCounter,
    event: &Event,
    body: Bytes,
) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = post(
            client,
            &hook.url,
            Some(&hook.secret),
            Some(event.kind),
            body.clone(),
            ATTEMPT_TIMEOUT,
        )
        .await;
        match sent {
            Ok(()) => {
                counter.count("ok");
                debug!(id = event.id, attempt, "webhook delivered");
                return;
            }
            Err(e) if attempt < ATTEMPTS => {
                counter.count("retry");
                debug!(id = event.id, attempt, error = %e, "webhook attempt failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => {
                counter.count("failed");
                warn!(
                    id = event.id,
                    kind = event.kind,
                    attempts = ATTEMPTS,
                    error = %e,
                    "webhook delivery failed; event dropped"
                );
            }
        }
    }
}

/// The `on_publish` hook: asks another service whether a publish may go
/// ahead.
pub struct PublishHook {
    client: HttpClient,
    url: Uri,
    timeout: Duration,
    secret: Option<Vec<u8>>,
    app: String,
}

impl PublishHook {
    /// The hook from `[ingest]`, if `on_publish_url` is set.
    pub fn from_config(config: &Config) -> Option<Self> {
        let ingest = &config.ingest;
        let url = ingest.on_publish_url.parse().ok()?;
        Some(Self {
            client: http_client(),
            url,
            timeout: Duration::from_millis(ingest.on_publish_timeout_ms),
            secret: (!ingest.on_publish_secret.is_empty())
                .then(|| ingest.on_publish_secret.clone().into_bytes()),
            app: ingest.app.clone(),
        })
    }

    /// Asks about a publish to `stream` from `client`: `{"stream", "app",
    /// "clientIp"}`. Allowed on a 2xx answer within the timeout; the error
    /// says why not. The stream key is never sent.
    pub async fn allows(&self, stream: &str, client: IpAddr) -> Result<(), HookError> {
        let body = serde_json::json!({
            "stream": stream,
            "app": self.app,
            "clientIp": client.to_string(),
        });
        post(
            &self.client,
            &self.url,
            self.secret.as_deref(),
            Some("publish"),
            Bytes::from(body.to_string()),
            self.timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let sig = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "sha256=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
        assert_ne!(sig, signature(b"0123456789abcdeF", 1_700_000_000, b"{}"));
        assert_ne!(sig, signature(b"0123456789abcdef", 1_700_000_001, b"{}"));
    }

    #[test]
    fn webhooks_pick_their_event_types() {
        let settings = WebhookSettings {
            url: "http://127.0.0.1:9/in".into(),
            events: vec!["stream:started".into()],
            secret: "0123456789abcdef".into(),
        };
        let hook = Webhook::new(&settings).expect("valid");
        let event = |kind| Event {
            id: 1,
            kind,
            stream_id: None,
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            data: serde_json::json!({}),
            json: bytes::Bytes::new(),
        };
        assert!(hook.wants(&event("stream:started")));
        assert!(!hook.wants(&event("viewer:joined")));
        assert_eq!(hook.host, "127.0.0.1:9");
    }
}
