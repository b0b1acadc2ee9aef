//! What a stream task tells the event bus, as plain data: the quality a
//! stream is published at (to see it change), its health figures, and the
//! source keyframe interval.

use serde_json::{Value, json};

use super::snapshot::StreamStatus;

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
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub bitrate_kbps: Option<u64>,
    pub renditions: Option<Vec<String>>,
    pub encoder: Option<String>,
}

impl Quality {
    /// The quality a status shows; `renditions` are the planned names.
    pub fn of(status: &StreamStatus, renditions: &[String]) -> Self {
        let ingest = &status.ingest;
        Self {
            video_codec: ingest.video_codec.clone(),
            audio_codec: ingest.audio_codec.clone(),
            width: ingest.width,
            height: ingest.height,
            fps: ingest.fps,
            bitrate_kbps: ingest.bitrate_kbps,
            renditions: (!renditions.is_empty()).then(|| renditions.to_vec()),
            encoder: (!status.encoder.is_empty()).then(|| status.encoder.clone()),
        }
    }

    /// Names of the fields that changed from `self` to `after`.
    pub fn changes(&self, after: &Self) -> Vec<&'static str> {
        fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            matches!((a, b), (Some(a), Some(b)) if a != b)
        }
        let mut changed = Vec::new();
        if differs(&self.video_codec, &after.video_codec) {
            changed.push("videoCodec");
        }
        if differs(&self.audio_codec, &after.audio_codec) {
            changed.push("audioCodec");
        }
        if differs(&self.width, &after.width) || differs(&self.height, &after.height) {
            changed.push("resolution");
        }
        if let (Some(a), Some(b)) = (self.fps, after.fps)
            && (a - b).abs() >= FPS_TOLERANCE
        {
            changed.push("fps");
        }
        if let (Some(a), Some(b)) = (self.bitrate_kbps, after.bitrate_kbps)
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
        take(&mut self.video_codec, after.video_codec);
        take(&mut self.audio_codec, after.audio_codec);
        take(&mut self.width, after.width);
        take(&mut self.height, after.height);
        take(&mut self.fps, after.fps);
        take(&mut self.bitrate_kbps, after.bitrate_kbps);
        take(&mut self.renditions, after.renditions);
        take(&mut self.encoder, after.encoder);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "bitrateKbps": self.bitrate_kbps,
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
            width: Some(1280),
            height: Some(720),
            fps: Some(30.0),
            bitrate_kbps: Some(2000),
            renditions: Some(vec!["source".into(), "audio".into()]),
            ..Quality::default()
        };
        let mut after = before.clone();
        after.fps = Some(29.2);
        after.bitrate_kbps = Some(2600);
        after.width = None;
        assert!(before.changes(&after).is_empty());
        after.height = Some(1080);
        after.fps = Some(25.0);
        after.bitrate_kbps = Some(900);
        after.renditions = Some(vec!["source".into()]);
        assert_eq!(
            before.changes(&after),
            ["resolution", "fps", "bitrate", "renditions"]
        );
        let mut merged = before.clone();
        merged.update(after);
        assert_eq!((merged.width, merged.height), (Some(1280), Some(1080)));
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
