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

/// One track's bytes over its media time since a publish session began: the
/// bitrate a rendition announces in the master playlist before it has a
/// segment to measure. The first keyframe weighs heavily in the first
/// moments, so the estimate errs high, the safe side for players.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrackRate {
    bytes: u64,
    packets: u64,
    first_ms: i64,
    last_ms: i64,
}

impl TrackRate {
    /// Counts one packet of the track.
    pub fn count(&mut self, dts_ms: i64, bytes: usize) {
        if self.packets == 0 {
            self.first_ms = dts_ms;
        }
        self.bytes += bytes as u64;
        self.packets += 1;
        self.last_ms = self.last_ms.max(dts_ms);
    }

    /// Bits per second, each packet taken to last the mean interval between
    /// packets; none before two packets a moment apart.
    pub fn bits_per_second(&self) -> Option<u64> {
        let span_ms = self.last_ms.checked_sub(self.first_ms)?;
        if self.packets < 2 || span_ms <= 0 {
            return None;
        }
        let total_ms = span_ms as f64 * self.packets as f64 / (self.packets - 1) as f64;
        Some((self.bytes as f64 * 8.0 * 1000.0 / total_ms).round() as u64)
    }

    /// Packets (video frames) per second between the first and the last.
    pub fn packets_per_second(&self) -> Option<f64> {
        let span_ms = self.last_ms.checked_sub(self.first_ms)?;
        if self.packets < 2 || span_ms <= 0 {
            return None;
        }
        Some((self.packets - 1) as f64 * 1000.0 / span_ms as f64)
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

    #[test]
    fn track_rate_over_media_time() {
        let mut rate = TrackRate::default();
        assert_eq!(rate.bits_per_second(), None);
        rate.count(1000, 12_500);
        assert_eq!(rate.bits_per_second(), None, "one packet has no duration");
        rate.count(1000, 12_500);
        assert_eq!(rate.bits_per_second(), None, "no media time has passed");
        // Four packets over 200 ms: each lasts a third of it, so 50 kB
        // span 267 ms of media.
        rate.count(1100, 12_500);
        rate.count(1200, 12_500);
        assert_eq!(rate.bits_per_second(), Some(1_500_000));
        assert_eq!(rate.packets_per_second(), Some(15.0));
    }
}
