//! RTMP timestamps made 64-bit, monotonic and continuous.
//!
//! RTMP carries 32-bit millisecond timestamps that wrap after about 49.7
//! days, and encoders reset or jump them (a restarted capture, a clock
//! correction, a bug). [`TrackClock`] unwraps one track's timestamps into a
//! 64-bit timeline and keeps that timeline usable downstream:
//!
//! - a step forward of more than [`MAX_FORWARD_STEP_MS`], or backward by
//!   more than [`REORDER_TOLERANCE_MS`], is a jump: the track is re-based
//!   so that its output time continues one frame after the last packet,
//!   and the caller is told (it logs the jump);
//! - a smaller step backward (or none) is clamped to one millisecond after
//!   the last packet without re-basing, so that later packets keep their
//!   time.
//!
//! Each track is re-based on its own, so the gap collapses in both outputs
//! and audio stays in step with video within a frame. The output timeline
//! has no gap, but the picture and sound change at that point, so ingest
//! tells the stream, which marks a discontinuity in its playlists.
//!
//! TODO(timestamps): a track with real gaps longer than
//! `MAX_FORWARD_STEP_MS` (video that only sends frames when the picture
//! changes) is taken for a jump; telling the two apart needs the other
//! track's clock.

/// Longest step forward between two packets of a track that is not a jump.
pub const MAX_FORWARD_STEP_MS: i64 = 5_000;
/// Longest step backward that is clamped rather than taken for a jump.
pub const REORDER_TOLERANCE_MS: i64 = 200;
/// Step assumed between packets before two packets show the real one.
const DEFAULT_STEP_MS: i64 = 20;
/// Longest step remembered as "one frame".
const MAX_FRAME_STEP_MS: i64 = 1_000;

/// A timestamp on the output timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Milliseconds on the track's 64-bit, monotonic timeline.
    pub ms: i64,
    /// The input step in milliseconds when this packet was a jump.
    pub jump_ms: Option<i64>,
}

/// One track's timeline: unwraps 32-bit RTMP timestamps and re-bases jumps.
#[derive(Debug, Clone)]
pub struct TrackClock {
    last_raw: Option<u32>,
    /// The raw timestamps unwrapped, before re-basing.
    unwrapped: i64,
    /// Added to `unwrapped` to get the output time.
    offset: i64,
    last_out: i64,
    /// The last normal step between packets: one frame.
    step: i64,
}

impl Default for TrackClock {
    fn default() -> Self {
        Self {
            last_raw: None,
            unwrapped: 0,
            offset: 0,
            last_out: 0,
            step: DEFAULT_STEP_MS,
        }
    }
}

impl TrackClock {
    /// The output time of a raw RTMP timestamp. A step that is shorter the
    /// other way round the 32-bit circle is taken as a wrap.
    pub fn tick(&mut self, raw: u32) -> Tick {
        let Some(last_raw) = self.last_raw else {
            self.last_raw = Some(raw);
            self.unwrapped = i64::from(raw);
            self.last_out = self.unwrapped;
            return Tick {
                ms: self.last_out,
                jump_ms: None,
            };
        };
        let delta = i64::from(raw.wrapping_sub(last_raw) as i32);
        self.last_raw = Some(raw);
        self.unwrapped = self.unwrapped.saturating_add(delta);
        let candidate = self.unwrapped.saturating_add(self.offset);
        let step = candidate.saturating_sub(self.last_out);
        let mut jump_ms = None;
        let out = if !(-REORDER_TOLERANCE_MS..=MAX_FORWARD_STEP_MS).contains(&step) {
            let out = self.last_out.saturating_add(self.step);
            self.offset = out.saturating_sub(self.unwrapped);
            jump_ms = Some(step);
            out
        } else if step <= 0 {
            self.last_out.saturating_add(1)
        } else {
            self.step = step.min(MAX_FRAME_STEP_MS);
            candidate
        };
        self.last_out = out;
        Tick { ms: out, jump_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &[u32]) -> Vec<i64> {
        let mut clock = TrackClock::default();
        raw.iter().map(|&r| clock.tick(r).ms).collect()
    }

    #[test]
    fn crosses_the_32_bit_wrap() {
        let base = i64::from(u32::MAX);
        assert_eq!(
            run(&[u32::MAX - 10, 5, 40]),
            [base - 10, base + 6, base + 41]
        );
    }

    #[test]
    fn small_backward_steps_are_clamped_without_shifting_later_packets() {
        assert_eq!(run(&[1000, 1033, 1020, 1066]), [1000, 1033, 1034, 1066]);
        assert_eq!(run(&[1000, 1000]), [1000, 1001]);
    }

    #[test]
    fn jumps_collapse_to_one_frame() {
        let mut clock = TrackClock::default();
        for i in 0..10 {
            assert_eq!(clock.tick(50_000 + i * 33).jump_ms, None);
        }
        let last = 50_000 + 9 * 33;
        // Ten seconds back.
        let back = clock.tick(last - 10_000);
        assert_eq!(back.ms, i64::from(last) + 33);
        assert_eq!(back.jump_ms, Some(-10_000));
        let next = clock.tick(last - 10_000 + 33);
        assert_eq!(
            next,
            Tick {
                ms: i64::from(last) + 66,
                jump_ms: None
            }
        );
        // An hour forward.
        let fwd = clock.tick(last - 10_000 + 33 + 3_600_000);
        assert_eq!(fwd.ms, i64::from(last) + 99);
        assert!(fwd.jump_ms.is_some_and(|j| j > 3_500_000));
    }

    #[test]
    fn output_is_strictly_increasing_for_any_input() {
        let mut seed = 1u32;
        let mut clock = TrackClock::default();
        let mut last = i64::MIN;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let out = clock.tick(seed).ms;
            assert!(out > last);
            last = out;
        }
    }
}
