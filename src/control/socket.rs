//! The event socket: `GET /api/v1/events` upgraded to a WebSocket.
//!
//! One task per client reads the event bus and the client's messages; a
//! second one writes to the socket from a short queue. Events wait in a
//! per-client backlog until the writer has room; a client that does not
//! read never holds up the bus, and once `events.client_queue` events
//! wait for it (or it lags that far behind the bus), it is closed with
//! [`close::SLOW_CONSUMER`]. The server pings every
//! [`PING_INTERVAL`] and closes a client that has not answered for
//! [`PONG_TIMEOUT`]; it answers the client's pings (WebSocket pings, or a
//! `{"type":"ping"}` message for browsers).
//!
//! Client messages, each answered by an `ack` (or an `error`):
//! `{"type":"subscribe","streams":["a","b"]}` (or `"*"` for all),
//! `{"type":"unsubscribe","streams":[...]}` (or `"*"` for none) and
//! `{"type":"ping"}`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::envelope::{ApiError, Body, RequestId, full};
use super::events::{Event, EventBus, Replay, Subscription};
use super::metrics::DisconnectCounter;

/// How often the server pings each client.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A client silent for this long (no pong, no message) is closed.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a single write to a client may take before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the close frame may take to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages between the reading and the writing task of one client.
const OUTGOING: usize = 16;
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Close codes the server sends.
pub mod close {
    /// The client did not keep up: its queue filled or it lagged behind.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// No pong (or any other message) within the pong timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent binary data.
    pub const UNSUPPORTED: u16 = 1003;
}

/// A WebSocket upgrade request that passed the checks.
pub struct Handshake {
    accept: HeaderValue,
    upgrade: OnUpgrade,
}

impl Handshake {
    /// Checks the upgrade headers (RFC 6455 section 4.2.1); anything else
    /// is `426 UPGRADE_REQUIRED`.
    pub fn from_request<B>(request: &mut Request<B>) -> Result<Self, ApiError> {
        let headers = request.headers();
        let has = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
            })
        };
        let upgrade = has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade");
        let version = headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let key = headers.get(header::SEC_WEBSOCKET_KEY);
        let (true, true, Some(key)) = (upgrade, version, key) else {
            return Err(ApiError::UpgradeRequired);
        };
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| ApiError::UpgradeRequired)?;
        Ok(Self {
            accept,
            upgrade: hyper::upgrade::on(request),
        })
    }

    /// The `101 Switching Protocols` answer; the socket opens once it is
    /// sent.
    pub fn response(&self, request_id: &RequestId) -> Response<Body> {
        let mut response = Response::new(full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        request_id.stamp(&mut response);
        response
    }
}

/// What one client's socket is set up with.
pub struct Client {
    pub events: Arc<EventBus>,
    pub subscription: Subscription,
    pub since: Option<u64>,
    /// Events a client may fall behind before it is closed as too slow.
    pub queue: usize,
    pub shutdown: CancellationToken,
    pub disconnects: DisconnectCounter,
}

/// Serves one client from the upgrade until either side closes.
pub async fn serve(handshake: Handshake, client: Client) {
    let upgraded = match handshake.upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(error = %e, "the WebSocket upgrade did not complete");
            return;
        }
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_CLIENT_MESSAGE);
    config.max_frame_size = Some(MAX_CLIENT_MESSAGE);
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(OUTGOING);
    let disconnects = client.disconnects.clone();
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(write(sink, outgoing, close_rx));
    let ending = Session::new(client, queue).run(stream).await;
    debug!(code = ending, "event socket closed");
    disconnects.count(ending);
    let _ = close_tx.send(ending);
    let _ = writer.await;
}

/// Writes queued messages until told to close, then sends the close frame.
async fn write<S>(
    mut sink: S,
    mut outgoing: mpsc::Receiver<Message>,
    mut close: oneshot::Receiver<Ending>,
) where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let code = loop {
        tokio::select! {
            biased;
            code = &mut close => break code.ok().flatten(),
            message = outgoing.recv() => {
                let Some(message) = message else { break None };
                let batch = write_batch(&mut sink, message, &mut outgoing);
                let sent = tokio::select! {
                    sent = tokio::time::timeout(WRITE_TIMEOUT, batch) => sent,
                    code = &mut close => break code.ok().flatten(),
                };
                if !matches!(sent, Ok(Ok(()))) {
                    debug!("event socket write failed or timed out");
                    return;
                }
            }
        }
    };
    let Some(code) = code else {
        return;
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: close_reason(code).into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// Writes `first` and whatever else is already queued, then flushes once:
/// one system call for a burst of events rather than one per event.
async fn write_batch<S>(
    sink: &mut S,
    first: Message,
    outgoing: &mut mpsc::Receiver<Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    sink.feed(first).await?;
    while let Ok(next) = outgoing.try_recv() {
        sink.feed(next).await?;
    }
    sink.flush().await
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::SLOW_CONSUMER => "slow consumer",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        close::GOING_AWAY => "server shutting down",
        close::UNSUPPORTED => "text messages only",
        _ => "",
    }
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Subscribe { streams: Streams },
    Unsubscribe { streams: Streams },
    Ping,
}

/// `"*"` or a list of stream names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Streams {
    All(String),
    Some(Vec<String>),
}

impl Streams {
    fn names(&self) -> Result<Option<&[String]>, String> {
        match self {
            Self::All(star) if star == "*" => Ok(None),
            Self::All(_) => Err("streams: a list of names, or \"*\"".into()),
            Self::Some(names) => Ok(Some(names)),
        }
    }
}

/// The reading side of one client.
struct Session {
    events: Arc<EventBus>,
    subscription: Subscription,
    since: Option<u64>,
    queue: mpsc::Sender<Message>,
    shutdown: CancellationToken,
    heard: Instant,
    /// Events waiting for room in the queue, replayed ones first.
    backlog: std::collections::VecDeque<Arc<Event>>,
    /// Events the backlog may hold before the client is too slow.
    limit: usize,
}

/// Why a session ends: a close code to send, or none when the client
/// closed or went away.
type Ending = Option<u16>;

impl Session {
    fn new(client: Client, queue: mpsc::Sender<Message>) -> Self {
        Self {
            events: client.events,
            subscription: client.subscription,
            since: client.since,
            queue,
            shutdown: client.shutdown,
            heard: Instant::now(),
            backlog: std::collections::VecDeque::new(),
            limit: client.queue,
        }
    }

    async fn run<S>(mut self, mut stream: S) -> Ending
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let (replay, mut live, position) = self.events.subscribe_at(self.since);
        let hello = serde_json::json!({
            "type": "hello",
            "streams": self.subscription.to_json(),
            "lastEventId": position,
        });
        if let Err(code) = self
            .send(Message::text(hello.to_string()))
            .and_then(|()| self.replay(replay, position))
        {
            return Some(code);
        }
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let queue = self.queue.clone();
        let mut backlog = std::mem::take(&mut self.backlog);
        // Replayed events come on top of what a client may fall behind.
        let limit = self.limit + backlog.len();
        let ending: Ending = loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break Some(close::GOING_AWAY),
                message = stream.next() => match message {
                    Some(Ok(message)) => {
                        self.heard = Instant::now();
                        if let Err(ending) = self.on_message(message) {
                            break ending;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "event socket read failed");
                        break None;
                    }
                    None => break None,
                },
                // Events wait in the backlog until the writer has room.
                permit = queue.reserve(), if !backlog.is_empty() => {
                    let (Ok(permit), Some(event)) = (permit, backlog.pop_front()) else {
                        break Some(close::GOING_AWAY);
                    };
                    if let Ok(text) = Utf8Bytes::try_from(event.json.clone()) {
                        permit.send(Message::text(text));
                    }
                }
                event = live.recv() => match event {
                    Ok(event) if !self.subscription.wants(&event) => {}
                    Ok(_) if backlog.len() >= limit => {
                        debug!(limit, "event socket client fell too far behind");
                        break Some(close::SLOW_CONSUMER);
                    }
                    Ok(event) => backlog.push_back(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "event socket client lagged behind the bus");
                        break Some(close::SLOW_CONSUMER);
                    }
                    Err(broadcast::error::RecvError::Closed) => break Some(close::GOING_AWAY),
                },
                _ = ping.tick() => {
                    if self.heard.elapsed() > PONG_TIMEOUT {
                        break Some(close::HEARTBEAT_TIMEOUT);
                    }
                    if let Err(code) = self.send(Message::Ping(Default::default())) {
                        break Some(code);
                    }
                }
            }
        };
        ending
    }

    fn replay(&mut self, replay: Replay, position: u64) -> Result<(), u16> {
        match replay {
            Replay::Missed(events) => self
                .backlog
                .extend(events.into_iter().filter(|e| self.subscription.wants(e))),
            Replay::Resync => self
                .backlog
                .push_back(Arc::new(EventBus::resync_event(position))),
        }
        Ok(())
    }

    /// Queues a message other than an event (acks, pings); a queue full
    /// with those means the client is too slow.
    fn send(&mut self, message: Message) -> Result<(), u16> {
        self.queue.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => close::SLOW_CONSUMER,
            mpsc::error::TrySendError::Closed(_) => close::GOING_AWAY,
        })
    }

    fn on_message(&mut self, message: Message) -> Result<(), Ending> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return Err(None),
            Message::Binary(_) => return Err(Some(close::UNSUPPORTED)),
            // tungstenite answers pings itself; pongs only prove life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        let answer = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(message) => self.apply(message),
            Err(e) => Err(format!("not a client message: {e}")),
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(message) => serde_json::json!({ "type": "error", "message": message }),
        };
        self.send(Message::text(reply.to_string())).map_err(Some)
    }

    fn apply(&mut self, message: ClientMessage) -> Result<serde_json::Value, String> {
        let action = match message {
            ClientMessage::Ping => return Ok(serde_json::json!({ "type": "pong" })),
            ClientMessage::Subscribe { streams } => {
                self.subscription.add(streams.names()?)?;
                "subscribe"
            }
            ClientMessage::Unsubscribe { streams } => {
                self.subscription.remove(streams.names()?);
                "unsubscribe"
            }
        };
        Ok(serde_json::json!({
            "type": "ack",
            "action": action,
            "streams": self.subscription.to_json(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        let sub: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","streams":["a"]}"#).expect("valid");
        assert!(
            matches!(sub, ClientMessage::Subscribe { streams: Streams::Some(ref s) } if s == &["a"])
        );
        let all: ClientMessage =
            serde_json::from_str(r#"{"type":"unsubscribe","streams":"*"}"#).expect("valid");
        assert!(matches!(
            all,
            ClientMessage::Unsubscribe {
                streams: Streams::All(_)
            }
        ));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn subscribing_answers_with_the_new_list() {
        let (queue, _outgoing) = mpsc::channel(4);
        let mut session = Session::new(
            Client {
                events: Arc::new(EventBus::default()),
                subscription: Subscription::from_list(Some("a")).expect("valid"),
                since: None,
                queue: 4,
                shutdown: CancellationToken::new(),
                disconnects: DisconnectCounter::default(),
            },
            queue,
        );
        let ack = session
            .apply(ClientMessage::Subscribe {
                streams: Streams::Some(vec!["b".into()]),
            })
            .expect("valid");
        assert_eq!(ack["streams"], serde_json::json!(["a", "b"]));
        let refused = session.apply(ClientMessage::Subscribe {
            streams: Streams::All("a".into()),
        });
        assert!(refused.is_err());
    }

    #[test]
    fn a_full_queue_is_a_slow_consumer() {
        let (queue, _outgoing) = mpsc::channel(1);
        let mut session = Session::new(
            Client {
                events: Arc::new(EventBus::default()),
                subscription: Subscription::All,
                since: None,
                queue: 4,
                shutdown: CancellationToken::new(),
                disconnects: DisconnectCounter::default(),
            },
            queue,
        );
        assert_eq!(session.send(Message::text("1")), Ok(()));
        assert_eq!(session.send(Message::text("2")), Err(close::SLOW_CONSUMER));
    }
}
