//! Viewer sessions: who is watching which stream and rendition.
//!
//! A session is one player: its playback token (or, for unsigned playback,
//! its user agent) plus its address. The first playlist or manifest request
//! joins it; any request refreshes it; a session with no request for the
//! timeout leaves. Counts per stream and rendition, the peak and the total
//! viewer-seconds of each stream session are kept for the API and metrics.
//! Time comes in as `now`; [`sweep_until`] calls [`ViewerTracker::sweep`]
//! every second and announces who left.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::control::events::{EventBus, kind};

/// How often idle sessions are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Departures announced between two yields to the scheduler.
const SWEEP_BURST: usize = 32;

/// Identifies one player.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewerKey {
    /// A short hash of the token or user agent: never the token itself.
    pub session: String,
    pub client: IpAddr,
}

impl ViewerKey {
    /// Builds a key from whatever identifies the player's session.
    pub fn new(identity: &str, client: IpAddr) -> Self {
        let digest = Sha256::digest(identity.as_bytes());
        Self {
            session: hex::encode(&digest[..8]),
            client,
        }
    }
}

/// A change the tracker reports, for events.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewerChange {
    Joined {
        stream: String,
        session: String,
        /// Viewers of the stream with this one.
        viewers: usize,
    },
    Left {
        stream: String,
        session: String,
        watched: Duration,
        /// Viewers of the stream without this one.
        viewers: usize,
    },
}

/// Viewer figures of one stream.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerStats {
    pub current: usize,
    pub peak: usize,
    /// Seconds watched by everyone, summed, this stream session.
    pub viewer_seconds: u64,
    pub by_rendition: HashMap<String, usize>,
}

#[derive(Debug)]
struct Session {
    stream: String,
    rendition: Option<String>,
    joined: Instant,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Totals {
    peak: usize,
    finished_secs: f64,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<ViewerKey, Session>,
    totals: HashMap<String, Totals>,
    /// Sessions per stream, kept as they change (no scan per request).
    current: HashMap<String, usize>,
}

impl State {
    fn count(&mut self, stream: &str, joined: bool) -> usize {
        let current = self.current.entry(stream.to_string()).or_default();
        if joined {
            *current += 1;
        } else {
            *current = current.saturating_sub(1);
        }
        let now = *current;
        if now == 0 {
            self.current.remove(stream);
        }
        now
    }
}

/// Tracks viewer sessions across all streams.
#[derive(Debug)]
pub struct ViewerTracker {
    timeout: Duration,
    state: Mutex<State>,
}

impl ViewerTracker {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// Records a request. `joins` is true for playlists and manifests, which
    /// start a session; segments only keep an existing one alive.
    pub fn touch(
        &self,
        key: ViewerKey,
        stream: &str,
        rendition: Option<&str>,
        joins: bool,
        now: Instant,
    ) -> Option<ViewerChange> {
        let mut state = self.state.lock().ok()?;
        if let Some(session) = state.sessions.get_mut(&key)
            && session.stream == stream
        {
            session.last_seen = now;
            if let Some(rendition) = rendition
                && session.rendition.as_deref() != Some(rendition)
            {
                session.rendition = Some(rendition.to_string());
            }
            return None;
        }
        if !joins {
            return None;
        }
        let session = key.session.clone();
        let replaced = state.sessions.insert(
            key,
            Session {
                stream: stream.to_string(),
                rendition: rendition.map(str::to_string),
                joined: now,
                last_seen: now,
            },
        );
        // The same player moved to another stream: it left the old one
        // (its time there still counts).
        if let Some(old) = replaced {
            state.count(&old.stream, false);
            let watched = old.last_seen.saturating_duration_since(old.joined);
            state.totals.entry(old.stream).or_default().finished_secs += watched.as_secs_f64();
        }
        let current = state.count(stream, true);
        let totals = state.totals.entry(stream.to_string()).or_default();
        totals.peak = totals.peak.max(current);
        Some(ViewerChange::Joined {
            stream: stream.to_string(),
            session,
            viewers: current,
        })
    }

    /// Ends the sessions idle for longer than the timeout.
    pub fn sweep(&self, now: Instant) -> Vec<ViewerChange> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let timeout = self.timeout;
        let expired: Vec<ViewerKey> = state
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_seen) > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Vec::new();
        for key in expired {
            let Some(session) = state.sessions.remove(&key) else {
                continue;
            };
            let watched = session.last_seen.saturating_duration_since(session.joined);
            let totals = state.totals.entry(session.stream.clone()).or_default();
            totals.finished_secs += watched.as_secs_f64();
            let viewers = state.count(&session.stream, false);
            changes.push(ViewerChange::Left {
                stream: session.stream,
                session: key.session,
                watched,
                viewers,
            });
        }
        changes
    }

    /// Figures for one stream at `now`.
    pub fn stats(&self, stream: &str, now: Instant) -> ViewerStats {
        let Ok(state) = self.state.lock() else {
            return ViewerStats::default();
        };
        let mut stats = ViewerStats::default();
        let mut watching = 0.0;
        for session in state.sessions.values().filter(|s| s.stream == stream) {
            stats.current += 1;
            watching += now.saturating_duration_since(session.joined).as_secs_f64();
            if let Some(rendition) = &session.rendition {
                *stats.by_rendition.entry(rendition.clone()).or_default() += 1;
            }
        }
        if let Some(totals) = state.totals.get(stream) {
            stats.peak = totals.peak;
            watching += totals.finished_secs;
        }
        stats.viewer_seconds = watching.round() as u64;
        stats
    }

    /// Starts a new stream session's totals (peak, viewer-seconds).
    pub fn reset_totals(&self, stream: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.totals.remove(stream);
        }
    }

    /// Figures for every stream that has had viewers this session.
    pub fn all_stats(&self, now: Instant) -> HashMap<String, ViewerStats> {
        let streams: std::collections::HashSet<String> = match self.state.lock() {
            Ok(state) => state
                .totals
                .keys()
                .chain(state.current.keys())
                .cloned()
                .collect(),
            Err(_) => return HashMap::new(),
        };
        streams
            .into_iter()
            .map(|stream| {
                let stats = self.stats(&stream, now);
                (stream, stats)
            })
            .collect()
    }

    /// Current viewers of one stream.
    pub fn current(&self, stream: &str) -> usize {
        self.state
            .lock()
            .ok()
            .and_then(|state| state.current.get(stream).copied())
            .unwrap_or(0)
    }

    /// Current viewers of every stream.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.state
            .lock()
            .map(|state| state.current.clone())
            .unwrap_or_default()
    }
}

/// Publishes `viewer:joined` or `viewer:left` for a change.
pub fn announce(events: &EventBus, change: ViewerChange) {
    match change {
        ViewerChange::Joined {
            stream,
            session,
            viewers,
        } => {
            let data = serde_json::json!({
                "session": session,
                "viewers": viewers,
            });
            events.publish(kind::VIEWER_JOINED, Some(&stream), data);
        }
        ViewerChange::Left {
            stream,
            session,
            watched,
            viewers,
        } => {
            let data = serde_json::json!({
                "session": session,
                "watchedSecs": watched.as_secs(),
                "viewers": viewers,
            });
            events.publish(kind::VIEWER_LEFT, Some(&stream), data);
        }
    }
}

/// Ends idle sessions every second, announcing each, until `shutdown`.
pub async fn sweep_until(
    tracker: Arc<ViewerTracker>,
    events: Arc<EventBus>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (n, change) in tracker.sweep(Instant::now()).into_iter().enumerate() {
            announce(&events, change);
            // Many leaving at once (a stream ended): let subscribers take
            // the events off the bus before it wraps around.
            if n % SWEEP_BURST == SWEEP_BURST - 1 {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn key(n: u8) -> ViewerKey {
        ViewerKey::new("token", IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    #[test]
    fn playlists_join_segments_refresh_silence_leaves() {
        let tracker = ViewerTracker::new(Duration::from_secs(6));
        let t0 = Instant::now();
        assert_eq!(tracker.touch(key(1), "cam", Some("360p"), false, t0), None);
        assert!(matches!(
            tracker.touch(key(1), "cam", None, true, t0),
            Some(ViewerChange::Joined { .. })
        ));
        assert_eq!(tracker.touch(key(1), "cam", Some("360p"), false, t0), None);
        tracker.touch(key(2), "cam", Some("720p"), true, t0);
        let stats = tracker.stats("cam", t0 + Duration::from_secs(4));
        assert_eq!((stats.current, stats.peak), (2, 2));
        assert_eq!(stats.by_rendition.get("360p"), Some(&1));

        tracker.touch(key(1), "cam", None, false, t0 + Duration::from_secs(5));
        assert!(tracker.sweep(t0 + Duration::from_secs(6)).is_empty());
        let left = tracker.sweep(t0 + Duration::from_secs(7));
        assert_eq!(left.len(), 1, "{left:?}");
        let stats = tracker.stats("cam", t0 + Duration::from_secs(7));
        assert_eq!((stats.current, stats.peak), (1, 2));
        // 7 s for the viewer still there, 0 s for the one that left.
        assert_eq!(stats.viewer_seconds, 7);
        assert!(tracker.sweep(t0 + Duration::from_secs(20)).len() == 1);
        assert_eq!(tracker.counts().get("cam"), None);
    }

    #[test]
    fn keys_hide_the_token() {
        let key = ViewerKey::new("k1.1.p.00.secretmac", IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(key.session.len(), 16);
        assert!(!key.session.contains("secret"));
    }
}
