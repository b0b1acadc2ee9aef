//! The event bus: what happened to streams and viewers, in order.
//!
//! Every event gets an id that increases across the server. Recent events
//! stay in a bounded buffer so that a client reconnecting with the last id
//! it saw gets exactly what it missed; a client whose id has already left
//! the buffer is told to resync from the API instead. Live delivery uses a
//! broadcast channel: a subscriber that falls behind loses its place (and is
//! disconnected by its socket task), never slowing the publisher or others.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// Events kept for resuming clients.
pub const DEFAULT_REPLAY: usize = 1024;
/// Events a live subscriber may lag behind before it is dropped.
pub const DEFAULT_LAG: usize = 256;

/// Event types.
pub mod kind {
    pub const STREAM_STARTED: &str = "stream:started";
    pub const STREAM_ENDED: &str = "stream:ended";
    pub const STREAM_QUALITY_CHANGED: &str = "stream:qualityChanged";
    pub const STREAM_HEALTH: &str = "stream:health";
    pub const VIEWER_JOINED: &str = "viewer:joined";
    pub const VIEWER_LEFT: &str = "viewer:left";
    pub const THUMBNAIL_UPDATED: &str = "thumbnail:updated";
    /// The disk mirror started failing (a full disk) or works again.
    pub const STREAM_STORAGE: &str = "stream:storage";
    /// Sent to a resuming client whose position is no longer buffered.
    pub const RESYNC: &str = "resync";
}

/// One event, as clients receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub stream_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub data: serde_json::Value,
    /// The event as JSON, serialised once for every subscriber.
    #[serde(skip)]
    pub json: bytes::Bytes,
}

fn serialise(event: &Event) -> bytes::Bytes {
    serde_json::to_vec(event)
        .map(bytes::Bytes::from)
        .unwrap_or_default()
}

/// Where a resuming subscriber starts.
#[derive(Debug, PartialEq)]
pub enum Replay {
    /// The events after the given id, oldest first (possibly none).
    Missed(Vec<Arc<Event>>),
    /// The id is older than the buffer: reload state, then follow live.
    Resync,
}

struct Log {
    next_id: u64,
    recent: VecDeque<Arc<Event>>,
    capacity: usize,
}

/// Publishes events to subscribers and keeps the recent ones.
pub struct EventBus {
    log: Mutex<Log>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY, DEFAULT_LAG)
    }
}

impl EventBus {
    pub fn new(replay: usize, lag: usize) -> Self {
        let (live, _) = broadcast::channel(lag.max(1));
        Self {
            log: Mutex::new(Log {
                next_id: 1,
                recent: VecDeque::with_capacity(replay.max(1)),
                capacity: replay.max(1),
            }),
            live,
        }
    }

    /// Records and broadcasts an event; never blocks on subscribers.
    pub fn publish(
        &self,
        kind: &'static str,
        stream: Option<&str>,
        data: serde_json::Value,
    ) -> Option<Arc<Event>> {
        let mut log = self.log.lock().ok()?;
        let mut event = Event {
            id: log.next_id,
            kind,
            stream_id: stream.map(str::to_string),
            timestamp: OffsetDateTime::now_utc(),
            data,
            json: bytes::Bytes::new(),
        };
        event.json = serialise(&event);
        let event = Arc::new(event);
        log.next_id += 1;
        if log.recent.len() == log.capacity {
            log.recent.pop_front();
        }
        log.recent.push_back(event.clone());
        // Sent under the lock so that live order equals id order.
        let _ = self.live.send(event.clone());
        Some(event)
    }

    /// Subscribes to live events, first replaying what came after `since`.
    /// Events in the replay are not repeated on the live receiver.
    pub fn subscribe(&self, since: Option<u64>) -> (Replay, broadcast::Receiver<Arc<Event>>) {
        let (replay, receiver, _) = self.subscribe_at(since);
        (replay, receiver)
    }

    /// Like [`subscribe`](Self::subscribe), also answering the id of the
    /// last event published before the live receiver starts: where a
    /// client told to resync stands.
    pub fn subscribe_at(
        &self,
        since: Option<u64>,
    ) -> (Replay, broadcast::Receiver<Arc<Event>>, u64) {
        let Ok(log) = self.log.lock() else {
            return (Replay::Resync, self.live.subscribe(), 0);
        };
        let receiver = self.live.subscribe();
        let position = log.next_id.saturating_sub(1);
        let replay = match since {
            None => Replay::Missed(Vec::new()),
            Some(id) if id.saturating_add(1) >= log.next_id => Replay::Missed(Vec::new()),
            Some(id) => match log.recent.front() {
                Some(oldest) if oldest.id <= id.saturating_add(1) => {
                    Replay::Missed(log.recent.iter().filter(|e| e.id > id).cloned().collect())
                }
                _ => Replay::Resync,
            },
        };
        (replay, receiver, position)
    }

    /// The event a client gets instead of a replay it cannot have: reload
    /// state from the API, then follow live events from `position`.
    pub fn resync_event(position: u64) -> Event {
        let mut event = Event {
            id: position,
            kind: kind::RESYNC,
            stream_id: None,
            timestamp: OffsetDateTime::now_utc(),
            data: serde_json::json!({
                "reason": "the requested position is older than the replay buffer; \
                           reload state from the API",
            }),
            json: bytes::Bytes::new(),
        };
        event.json = serialise(&event);
        event
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.log.lock().map_or(0, |log| log.next_id)
    }
}

/// Which streams a client follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    All,
    Streams(BTreeSet<String>),
}

impl Subscription {
    /// Most streams one client may name.
    pub const MAX_STREAMS: usize = 256;

    /// From a `streams` query value: `a,b`, or `*` (or nothing) for all.
    pub fn from_list(list: Option<&str>) -> Result<Self, String> {
        match list {
            None | Some("*") => Ok(Self::All),
            Some(list) => Self::names(list.split(',')).map(Self::Streams),
        }
    }

    fn names<'a>(names: impl Iterator<Item = &'a str>) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        for name in names {
            if !crate::config::validate::is_valid_name(name) {
                return Err(format!("`{}` is not a stream name", truncate(name)));
            }
            set.insert(name.to_string());
            if set.len() > Self::MAX_STREAMS {
                return Err(Self::too_many());
            }
        }
        Ok(set)
    }

    fn too_many() -> String {
        format!("at most {} streams", Self::MAX_STREAMS)
    }

    /// Adds streams (`None`: all of them).
    pub fn add(&mut self, streams: Option<&[String]>) -> Result<(), String> {
        let Some(streams) = streams else {
            *self = Self::All;
            return Ok(());
        };
        let names = Self::names(streams.iter().map(String::as_str))?;
        if let Self::Streams(set) = self {
            // Refused whole: a subscription never grows past the limit.
            if set.union(&names).count() > Self::MAX_STREAMS {
                return Err(Self::too_many());
            }
            set.extend(names);
        }
        Ok(())
    }

    /// Removes streams (`None`: all of them, leaving none).
    pub fn remove(&mut self, streams: Option<&[String]>) {
        match (streams, &mut *self) {
            (None, _) => *self = Self::Streams(BTreeSet::new()),
            (Some(names), Self::Streams(set)) => {
                for name in names {
                    set.remove(name);
                }
            }
            // Unsubscribing one stream from "all" would need a deny list:
            // the client subscribes to the streams it wants instead.
            (Some(_), Self::All) => {}
        }
    }

    /// Whether the client gets this event. Events about no stream (resync)
    /// go to everyone.
    pub fn wants(&self, event: &Event) -> bool {
        match (self, &event.stream_id) {
            (Self::All, _) | (_, None) => true,
            (Self::Streams(set), Some(stream)) => set.contains(stream),
        }
    }

    /// The list as clients see it: `"*"` or the names.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::All => serde_json::json!("*"),
            Self::Streams(set) => serde_json::json!(set),
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// What a client asks for when it connects: from the query string
/// (`streams`, `since`) and the `Last-Event-ID` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub subscription: Subscription,
    pub since: Option<u64>,
}

impl Resume {
    pub fn parse(query: Option<&str>, last_event_id: Option<&str>) -> Result<Self, String> {
        let streams = query_value(query, "streams");
        let subscription = Subscription::from_list(streams.as_deref())?;
        let since = match query_value(query, "since").or(last_event_id.map(str::to_string)) {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| format!("since: `{}` is not an event id", truncate(&text)))?,
            ),
        };
        Ok(Self {
            subscription,
            since,
        })
    }
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(replay: &Replay) -> Vec<u64> {
        match replay {
            Replay::Missed(events) => events.iter().map(|e| e.id).collect(),
            Replay::Resync => vec![u64::MAX],
        }
    }

    #[test]
    fn resume_gets_exactly_the_missed_events() {
        let bus = EventBus::new(4, 16);
        for _ in 0..3 {
            bus.publish(kind::STREAM_HEALTH, Some("cam"), serde_json::json!({}));
        }
        assert_eq!(ids(&bus.subscribe(Some(1)).0), [2, 3]);
        assert_eq!(ids(&bus.subscribe(Some(3)).0), Vec::<u64>::new());
        assert_eq!(ids(&bus.subscribe(None).0), Vec::<u64>::new());
    }

    #[test]
    fn too_old_a_position_means_resync() {
        let bus = EventBus::new(2, 16);
        for _ in 0..5 {
            bus.publish(kind::VIEWER_JOINED, Some("cam"), serde_json::json!({}));
        }
        assert_eq!(bus.subscribe(Some(1)).0, Replay::Resync);
        assert_eq!(ids(&bus.subscribe(Some(3)).0), [4, 5]);
    }

    #[tokio::test]
    async fn live_events_follow_the_replay_in_order() {
        let bus = EventBus::new(8, 8);
        bus.publish(kind::STREAM_STARTED, Some("cam"), serde_json::json!({}));
        let (replay, mut live) = bus.subscribe(Some(0));
        assert_eq!(ids(&replay), [1]);
        bus.publish(kind::STREAM_ENDED, Some("cam"), serde_json::json!({}));
        let next = live.recv().await.expect("live event");
        assert_eq!((next.id, next.kind), (2, kind::STREAM_ENDED));
        let json = serde_json::to_value(&*next).expect("serialises");
        assert_eq!(json["type"], "stream:ended");
        assert_eq!(json["streamId"], "cam");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_not_blocked() {
        let bus = EventBus::new(8, 2);
        let (_, mut slow) = bus.subscribe(None);
        for _ in 0..10 {
            bus.publish(kind::STREAM_HEALTH, None, serde_json::json!({}));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }

    fn event(stream: Option<&str>) -> Event {
        Event {
            id: 1,
            kind: kind::VIEWER_JOINED,
            stream_id: stream.map(str::to_string),
            timestamp: OffsetDateTime::UNIX_EPOCH,
            data: serde_json::json!({}),
            json: bytes::Bytes::new(),
        }
    }

    #[test]
    fn subscriptions_filter_by_stream_and_change() {
        let mut sub = Subscription::from_list(Some("cam1,cam2")).expect("valid");
        assert!(sub.wants(&event(Some("cam1"))) && !sub.wants(&event(Some("cam3"))));
        assert!(sub.wants(&event(None)), "resync goes to everyone");
        sub.add(Some(&["cam3".into()])).expect("valid");
        assert!(sub.wants(&event(Some("cam3"))));
        sub.remove(Some(&["cam1".into()]));
        assert!(!sub.wants(&event(Some("cam1"))));
        sub.remove(None);
        assert!(!sub.wants(&event(Some("cam2"))));
        sub.add(None).expect("all");
        assert_eq!(sub, Subscription::All);
        assert_eq!(Subscription::from_list(Some("*")), Ok(Subscription::All));
        assert!(Subscription::from_list(Some("../x")).is_err());
        assert!(Subscription::from_list(Some("a,")).is_err());
        assert!(Subscription::from_list(Some("")).is_err());
    }

    #[test]
    fn repeated_subscribes_never_grow_past_the_limit() {
        let batch = |from: usize| -> Vec<String> {
            (from..from + 200).map(|i| format!("cam{i}")).collect()
        };
        let mut sub = Subscription::from_list(Some("cam0")).expect("valid");
        sub.add(Some(&batch(0))).expect("200 streams");
        assert!(sub.add(Some(&batch(1000))).is_err(), "400 streams");
        assert!(sub.add(Some(&batch(2000))).is_err(), "still 400");
        let Subscription::Streams(set) = &sub else {
            panic!("a list: {sub:?}");
        };
        assert_eq!(set.len(), 200, "a refused subscribe adds nothing");
        let many: Vec<&str> = (0..100_000).map(|_| "cam1").collect();
        assert!(
            Subscription::from_list(Some(&many.join(","))).is_ok(),
            "one name"
        );
    }

    #[test]
    fn resume_reads_the_query_then_the_header() {
        let resume = Resume::parse(Some("streams=a%2Cb&since=7"), Some("3")).expect("valid");
        assert_eq!(resume.since, Some(7));
        assert_eq!(
            resume.subscription,
            Subscription::from_list(Some("a,b")).expect("valid")
        );
        assert_eq!(Resume::parse(None, Some("3")).map(|r| r.since), Ok(Some(3)));
        assert!(Resume::parse(Some("since=-1"), None).is_err());
        assert_eq!(
            query_value(Some("access_token=a.b-c&x"), "access_token").as_deref(),
            Some("a.b-c")
        );
    }

    #[test]
    fn a_huge_since_is_not_an_overflow() {
        let bus = EventBus::new(4, 4);
        bus.publish(kind::STREAM_HEALTH, None, serde_json::json!({}));
        assert_eq!(ids(&bus.subscribe(Some(u64::MAX)).0), Vec::<u64>::new());
    }

    #[test]
    fn webhook_event_names_are_the_event_types() {
        use crate::config::validate::EVENT_TYPES;
        let kinds = [
            kind::STREAM_STARTED,
            kind::STREAM_ENDED,
            kind::STREAM_QUALITY_CHANGED,
            kind::STREAM_HEALTH,
            kind::VIEWER_JOINED,
            kind::VIEWER_LEFT,
            kind::THUMBNAIL_UPDATED,
        ];
        assert_eq!(EVENT_TYPES, kinds);
    }
}
