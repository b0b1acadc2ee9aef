//! The immutable view of a stream that HTTP delivery serves.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::package::isobmff::TrackKind;

/// A stream's latest snapshot, swapped in whole by the stream's task, with
/// a wake-up for requests waiting for something the stream has not made yet
/// (a master playlist or a first segment).
#[derive(Debug, Default)]
pub struct SnapshotCell {
    current: ArcSwap<StreamSnapshot>,
    changed: Notify,
}

impl SnapshotCell {
    pub fn load(&self) -> Arc<StreamSnapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot and wakes every waiter.
    pub fn store(&self, snapshot: StreamSnapshot) {
        self.current.store(Arc::new(snapshot));
        self.changed.notify_waiters();
    }

    /// The snapshot once `ready` holds for it, or as soon as nothing more
    /// is coming (no publisher and no media left to drain), or at
    /// `deadline`, whichever is first.
    pub async fn wait_for(
        &self,
        deadline: tokio::time::Instant,
        ready: impl Fn(&StreamSnapshot) -> bool,
    ) -> Arc<StreamSnapshot> {
        let snapshot = self.load();
        if ready(&snapshot) || !snapshot.pending {
            // The usual case, without touching the wake-up list.
            return snapshot;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a store in between still wakes us.
            changed.as_mut().enable();
            let snapshot = self.load();
            if ready(&snapshot) || !snapshot.pending {
                return snapshot;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.load();
            }
        }
    }
}

/// Everything a player can fetch for a stream at one moment.
#[derive(Debug, Default)]
pub struct StreamSnapshot {
    pub status: StreamStatus,
    /// Whether a publisher is sending now.
    pub live: bool,
    /// Whether more media is coming: a publisher is sending, or the
    /// pipeline is still flushing what the last one sent.
    pub pending: bool,
    /// Whether the current session's renditions are known (its pipeline
    /// has started), so a name outside them will not appear.
    pub planned: bool,
    /// The master playlist, once every rendition has a segment.
    pub master: Option<Bytes>,
    /// The DASH MPD, split where delivery writes the clock endpoint's URL.
    pub dash: Option<(Bytes, Bytes)>,
    /// The latest JPEG of the picture, when the stream has video.
    pub thumbnail: Option<Bytes>,
    pub renditions: HashMap<String, RenditionSnapshot>,
}

/// One rendition's playlist and the files it references.
#[derive(Debug)]
pub struct RenditionSnapshot {
    pub kind: TrackKind,
    pub playlist: Bytes,
    pub inits: HashMap<u32, Bytes>,
    pub segments: HashMap<u64, Bytes>,
}

/// What the control API reports about a stream.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub live: bool,
    /// Address of the current publisher.
    pub publisher: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub live_since: Option<time::OffsetDateTime>,
    pub ingest: IngestStatus,
    pub renditions: Vec<RenditionStatus>,
    /// Encoder backend of the transcoded renditions.
    pub encoder: String,
    pub last_error: Option<String>,
    /// Source video frames dropped since the stream started.
    pub dropped_frames: u64,
    /// Whether writing the disk mirror fails now (playback goes on).
    pub disk_mirror_failing: bool,
}

/// The publisher's media, as received.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestStatus {
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub bitrate_kbps: Option<u64>,
    /// Seconds between the last two source keyframes.
    pub keyframe_interval_secs: Option<f64>,
}

/// One rendition as it is being produced.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionStatus {
    pub name: String,
    pub kind: &'static str,
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bandwidth: u64,
    /// Frames per second of the output, measured from its segments.
    pub fps: Option<f64>,
    /// `passthrough`, `copy` (audio) or the encoder backend.
    pub encoder: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn with(pending: bool, master: Option<&'static [u8]>) -> StreamSnapshot {
        StreamSnapshot {
            pending,
            master: master.map(Bytes::from_static),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_ready_or_when_nothing_more_is_coming() {
        let has_master = |s: &StreamSnapshot| s.master.is_some();
        let cell = Arc::new(SnapshotCell::default());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);

        // Nothing pending: answered at once, not ready.
        cell.store(with(false, None));
        let now = tokio::time::Instant::now();
        assert!(cell.wait_for(deadline, has_master).await.master.is_none());
        assert_eq!(now.elapsed(), Duration::ZERO);

        // Pending (a pipeline still flushing): held until the master exists.
        cell.store(with(true, None));
        let waiter = {
            let cell = cell.clone();
            tokio::spawn(async move { cell.wait_for(deadline, has_master).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished(), "answered before the master existed");
        cell.store(with(false, Some(b"#EXTM3U\n")));
        let answered = waiter.await.expect("waiter");
        assert_eq!(answered.master.as_deref(), Some(&b"#EXTM3U\n"[..]));

        // Pending and never ready: answered at the deadline.
        cell.store(with(true, None));
        let answered = cell.wait_for(deadline, has_master).await;
        assert!(answered.master.is_none());
        assert!(tokio::time::Instant::now() >= deadline);
    }
}
