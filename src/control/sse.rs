//! The event stream as server-sent events: `GET /api/v1/events/sse`, for
//! clients that cannot open a WebSocket.
//!
//! The same events, the same `streams` filter (fixed for the connection)
//! and the same resume (`since`, or the `Last-Event-ID` header that
//! `EventSource` sends when it reconnects). Each message is `id: {id}`
//! and `data: {event JSON}`. The body is pulled by hyper as the client
//! reads, straight from the bus: a client that falls behind the bus gets a
//! `close` message and the stream ends, so it reconnects and resumes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use super::envelope::{Body, RequestId};
use super::events::{Event, EventBus, Replay, Resume, Subscription};
use super::socket::close;

/// A comment line is sent this often so that proxies keep the stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long `EventSource` waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 2000;

/// The `text/event-stream` response for one client.
pub fn response(
    events: &EventBus,
    resume: Resume,
    shutdown: CancellationToken,
    request_id: &RequestId,
) -> Response<Body> {
    let (replay, live, position) = events.subscribe_at(resume.since);
    let mut backlog = VecDeque::new();
    backlog.push_back(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
    match replay {
        Replay::Missed(missed) => backlog.extend(
            missed
                .iter()
                .filter(|e| resume.subscription.wants(e))
                .map(|e| message(e)),
        ),
        Replay::Resync => backlog.push_back(message(&EventBus::resync_event(position))),
    }
    let feed = Feed {
        live,
        backlog,
        subscription: resume.subscription,
        keep_alive: tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
        shutdown,
        done: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), feed))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    request_id.stamp(&mut response);
    response
}

/// One event as an SSE message.
pub fn message(event: &Event) -> Bytes {
    let mut message = Vec::with_capacity(event.json.len() + 32);
    message.extend_from_slice(format!("id: {}\ndata: ", event.id).as_bytes());
    message.extend_from_slice(&event.json);
    message.extend_from_slice(b"\n\n");
    Bytes::from(message)
}

/// What the body of one client still has to send.
struct Feed {
    live: broadcast::Receiver<Arc<Event>>,
    backlog: VecDeque<Bytes>,
    subscription: Subscription,
    keep_alive: Interval,
    shutdown: CancellationToken,
    done: bool,
}

impl Feed {
    /// The next chunk of the body; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.backlog.pop_front() {
            return Some(chunk);
        }
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                event = self.live.recv() => match event {
                    Ok(event) if self.subscription.wants(&event) => return Some(message(&event)),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.done = true;
                        let notice = serde_json::json!({
                            "code": close::SLOW_CONSUMER,
                            "reason": "slow consumer; reconnect with Last-Event-ID",
                        });
                        return Some(Bytes::from(format!("event: close\ndata: {notice}\n\n")));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::events::kind;

    #[tokio::test]
    async fn replay_then_live_then_a_lag_notice() {
        let bus = EventBus::new(8, 2);
        bus.publish(kind::STREAM_STARTED, Some("a"), serde_json::json!({}));
        bus.publish(kind::STREAM_STARTED, Some("b"), serde_json::json!({}));
        let resume = Resume::parse(Some("streams=a&since=0"), None).expect("valid");
        let response = response(
            &bus,
            resume,
            CancellationToken::new(),
            &RequestId::from_headers(&http::HeaderMap::new()),
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        let mut next = async || {
            let frame = body.frame().await.expect("a frame").expect("no error");
            String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8")
        };
        assert!(next().await.starts_with("retry: "));
        let first = next().await;
        assert!(first.starts_with("id: 1\ndata: {"), "{first}");
        assert!(first.contains("\"streamId\":\"a\""), "{first}");
        bus.publish(kind::STREAM_ENDED, Some("a"), serde_json::json!({}));
        assert!(next().await.starts_with("id: 3\n"));
        for _ in 0..5 {
            bus.publish(kind::STREAM_HEALTH, Some("a"), serde_json::json!({}));
        }
        assert!(next().await.starts_with("event: close\n"));
    }
}
