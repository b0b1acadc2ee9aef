//! What a stream task tells the event bus, as plain data: the quality a
//! stream is published at (to see it change), its health figures, and the
//! source keyframe interval.

use serde_json::{Value, json};

use super::snapshot::{IngestStatus, StreamStatus};

/// A change in frame rate smaller than this (frames/s) is noise.
const FPS_TOLERANCE: f64 = 2.0;
/// A bitrate change by less than this fraction of the last one is noise.
const BITRATE_TOLERANCE: f64 = 0.5;
/// Keyframe intervals longer than this are gaps, not intervals.
const MAX_KEYFRAME_INTERVAL_MS: i64 = 60_000;

/// What the stream is published at: the publisher's media and the
/// renditions made of it. `None` is "not known yet" and never a change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quality {
    /// The publisher's media; its keyframe interval is left out.
    pub source: IngestStatus,
    pub renditions: Option<Vec<String>>,
    pub encoder: Option<String>,
}

impl Quality {
    /// The quality of a stream receiving `ingest`, made into `renditions`
    /// (the planned names) by `encoder`.
    pub fn of(ingest: IngestStatus, renditions: &[String], encoder: &str) -> Self {
        Self {
            source: IngestStatus {
                keyframe_interval_secs: None,
                ..ingest
            },
            renditions: (!renditions.is_empty()).then(|| renditions.to_vec()),
            encoder: (!encoder.is_empty()).then(|| encoder.to_string()),
        }
    }

    /// Names of the fields that changed from `self` to `after`.
    pub fn changes(&self, after: &Self) -> Vec<&'static str> {
        fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            matches!((a, b), (Some(a), Some(b)) if a != b)
        }
        let mut changed = Vec::new();
        if differs(&self.source.video_codec, &after.source.video_codec) {
            changed.push("videoCodec");
        }
        if differs(&self.source.audio_codec, &after.source.audio_codec) {
            changed.push("audioCodec");
        }
        if differs(&self.source.width, &after.source.width)
            || differs(&self.source.height, &after.source.height)
        {
            changed.push("resolution");
        }
        if let (Some(a), Some(b)) = (self.source.fps, after.source.fps)
            && (a - b).abs() >= FPS_TOLERANCE
        {
            changed.push("fps");
        }
        if let (Some(a), Some(b)) = (self.source.bitrate_kbps, after.source.bitrate_kbps)
            && (a as f64 - b as f64).abs() > a as f64 * BITRATE_TOLERANCE
        {
            changed.push("bitrate");
        }
        if differs(&self.renditions, &after.renditions) {
            changed.push("renditions");
        }
        if differs(&self.encoder, &after.encoder) {
            changed.push("encoder");
        }
        changed
    }

    /// `self` with every known field of `after` taken over.
    pub fn update(&mut self, after: Self) {
        fn take<T>(field: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *field = new;
            }
        }
        take(&mut self.source.video_codec, after.source.video_codec);
        take(&mut self.source.audio_codec, after.source.audio_codec);
        take(&mut self.source.width, after.source.width);
        take(&mut self.source.height, after.source.height);
        take(&mut self.source.fps, after.source.fps);
        take(&mut self.source.bitrate_kbps, after.source.bitrate_kbps);
        take(&mut self.renditions, after.renditions);
        take(&mut self.encoder, after.encoder);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "videoCodec": self.source.video_codec,
            "audioCodec": self.source.audio_codec,
            "width": self.source.width,
            "height": self.source.height,
            "fps": self.source.fps,
            "bitrateKbps": self.source.bitrate_kbps,
            "renditions": self.renditions,
            "encoder": self.encoder,
        })
    }
}

/// The `stream:health` figures of a status.
pub fn health(status: &StreamStatus, viewers: usize) -> Value {
    let ingest = &status.ingest;
    let renditions: Vec<Value> = status
        .renditions
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "fps": r.fps,
                "bandwidth": r.bandwidth,
                "encoder": r.encoder,
            })
        })
        .collect();
    json!({
        "bitrateKbps": ingest.bitrate_kbps,
        "fps": ingest.fps,
        "droppedFrames": status.dropped_frames,
        "keyframeIntervalSecs": ingest.keyframe_interval_secs,
        "width": ingest.width,
        "height": ingest.height,
        "encoder": status.encoder,
        "renditions": renditions,
        "viewers": viewers,
    })
}

/// Measures the time between source keyframes, in decode time.
#[derive(Debug, Default)]
pub struct KeyframeClock {
    last_ms: Option<i64>,
}

impl KeyframeClock {
    /// Records a video frame; the interval in seconds once two keyframes
    /// have been seen close enough together.
    pub fn frame(&mut self, dts_ms: i64, keyframe: bool) -> Option<f64> {
        if !keyframe {
            return None;
        }
        let last = self.last_ms.replace(dts_ms)?;
        let interval = dts_ms - last;
        (1..=MAX_KEYFRAME_INTERVAL_MS)
            .contains(&interval)
            .then(|| interval as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_wobbles_are_not_changes() {
        let before = Quality {
            source: IngestStatus {
                width: Some(1280),
                height: Some(720),
                fps: Some(30.0),
                bitrate_kbps: Some(2000),
                ..IngestStatus::default()
            },
            renditions: Some(vec!["source".into(), "audio".into()]),
            ..Quality::default()
        };
        let mut after = before.clone();
        after.source.fps = Some(29.2);
        after.source.bitrate_kbps = Some(2600);
        after.source.width = None;
        assert!(before.changes(&after).is_empty());
        after.source.height = Some(1080);
        after.source.fps = Some(25.0);
        after.source.bitrate_kbps = Some(900);
        after.renditions = Some(vec!["source".into()]);
        assert_eq!(
            before.changes(&after),
            ["resolution", "fps", "bitrate", "renditions"]
        );
        let mut merged = before.clone();
        merged.update(after);
        assert_eq!(
            (merged.source.width, merged.source.height),
            (Some(1280), Some(1080))
        );
    }

    #[test]
    fn keyframe_intervals_come_from_decode_times() {
        let mut clock = KeyframeClock::default();
        assert_eq!(clock.frame(0, true), None);
        assert_eq!(clock.frame(1000, false), None);
        assert_eq!(clock.frame(2000, true), Some(2.0));
        assert_eq!(clock.frame(500_000, true), None, "a gap");
        assert_eq!(clock.frame(501_500, true), Some(1.5));
    }
}
