//! Measures a publisher's bitrate and frame rate over short intervals.

use std::time::Duration;

use tokio::time::Instant;

/// How long one measurement runs before its rates are published.
const INTERVAL: Duration = Duration::from_secs(2);

/// Bytes and video frames counted over the current interval.
#[derive(Debug)]
pub struct IngestMeter {
    started: Instant,
    bytes: u64,
    frames: u64,
    /// The last complete interval's rates: kbit/s and frames/s.
    pub bitrate_kbps: Option<u64>,
    pub fps: Option<f64>,
}

impl IngestMeter {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            bytes: 0,
            frames: 0,
            bitrate_kbps: None,
            fps: None,
        }
    }

    /// Counts one media packet; returns true when new rates are ready.
    pub fn count(&mut self, now: Instant, bytes: usize, video_frame: bool) -> bool {
        self.bytes += bytes as u64;
        self.frames += u64::from(video_frame);
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < INTERVAL {
            return false;
        }
        let secs = elapsed.as_secs_f64();
        self.bitrate_kbps = Some((self.bytes as f64 * 8.0 / secs / 1000.0).round() as u64);
        self.fps = (self.frames > 0).then(|| (self.frames as f64 / secs * 100.0).round() / 100.0);
        self.started = now;
        self.bytes = 0;
        self.frames = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_an_interval() {
        let start = Instant::now();
        let mut meter = IngestMeter::new(start);
        for i in 0..60u64 {
            let now = start + Duration::from_millis(i * 33);
            assert!(!meter.count(now, 1250, true));
        }
        assert!(meter.count(start + Duration::from_secs(2), 1250, true));
        assert_eq!(meter.bitrate_kbps, Some(305));
        assert_eq!(meter.fps, Some(30.5));
    }
}
