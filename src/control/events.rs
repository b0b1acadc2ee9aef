//! The event bus: what happened to streams and viewers, in order.
//!
//! Every event gets an id that increases across the server. Recent events
//! stay in a bounded buffer so that a client reconnecting with the last id
//! it saw gets exactly what it missed; a client whose id has already left
//! the buffer is told to resync from the API instead. Live delivery uses a
//! broadcast channel: a subscriber that falls behind loses its place (and is
//! disconnected by its socket task), never slowing the publisher or others.

use std::collections::VecDeque;
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
        let event = Arc::new(Event {
            id: log.next_id,
            kind,
            stream_id: stream.map(str::to_string),
            timestamp: OffsetDateTime::now_utc(),
            data,
        });
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
        let Ok(log) = self.log.lock() else {
            return (Replay::Resync, self.live.subscribe());
        };
        let receiver = self.live.subscribe();
        let replay = match since {
            None => Replay::Missed(Vec::new()),
            Some(id) if id + 1 >= log.next_id => Replay::Missed(Vec::new()),
            Some(id) => match log.recent.front() {
                Some(oldest) if oldest.id <= id + 1 => {
                    Replay::Missed(log.recent.iter().filter(|e| e.id > id).cloned().collect())
                }
                _ => Replay::Resync,
            },
        };
        (replay, receiver)
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.log.lock().map_or(0, |log| log.next_id)
    }
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
}
