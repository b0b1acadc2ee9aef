//! RTMP timestamps made 64-bit and monotonic.
//!
//! RTMP carries 32-bit millisecond timestamps that wrap after about 49.7
//! days and that encoders sometimes reset. [`TrackClock`] unwraps them into
//! a 64-bit timeline per track so that everything downstream can subtract
//! without thinking about wrap.

/// Unwraps one track's 32-bit RTMP timestamps into 64-bit milliseconds.
#[derive(Debug, Default, Clone)]
pub struct TrackClock {
    last_raw: Option<u32>,
    unwrapped: i64,
}

impl TrackClock {
    /// Returns the 64-bit time of a raw RTMP timestamp. A step that is
    /// shorter the other way round the 32-bit circle is taken as a wrap.
    pub fn unwrap(&mut self, raw: u32) -> i64 {
        match self.last_raw {
            None => self.unwrapped = i64::from(raw),
            Some(last) => {
                let delta = raw.wrapping_sub(last) as i32;
                self.unwrapped = self.unwrapped.saturating_add(i64::from(delta));
            }
        }
        self.last_raw = Some(raw);
        self.unwrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosses_the_32_bit_wrap() {
        let mut clock = TrackClock::default();
        assert_eq!(clock.unwrap(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.unwrap(5), i64::from(u32::MAX) + 6);
        assert_eq!(clock.unwrap(40), i64::from(u32::MAX) + 41);
    }

    #[test]
    fn small_backward_steps_stay_backward() {
        let mut clock = TrackClock::default();
        clock.unwrap(1000);
        assert_eq!(clock.unwrap(990), 990);
    }
}
