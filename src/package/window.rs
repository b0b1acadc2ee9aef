//! The live segment window of one rendition.
//!
//! It owns the media-sequence and discontinuity-sequence bookkeeping, the
//! init segments (with ids stable enough to put in URIs), program date times
//! and the fixed target duration. It keeps segments in memory only; writing
//! them anywhere, or serving them, is someone else's job. Time comes in as
//! `now`; nothing here reads a clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use super::PackageError;
use super::isobmff::{FragmentInfo, InitInfo};

/// An init segment (CMAF header) and what it says about the track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSegment {
    /// Distinct for every different init installed in a window, so
    /// `init-{id}.mp4` names one set of bytes for the life of the window.
    pub id: u32,
    /// The `ftyp` + `moov` bytes.
    pub data: Bytes,
    /// Codec, size and timescale read from `data`.
    pub info: InitInfo,
}

/// One media segment in the window.
#[derive(Debug, Clone)]
pub struct Segment {
    /// HLS media sequence number; also names the segment URI.
    pub sequence: u64,
    /// Playback duration.
    pub duration: Duration,
    /// The `moof`/`mdat` bytes (with any leading `styp`).
    pub data: Bytes,
    /// Wall-clock time of the segment's first sample.
    pub program_date_time: OffsetDateTime,
    /// Whether a discontinuity comes before this segment.
    pub discontinuity: bool,
    /// The init segment this segment decodes with.
    pub init: Arc<InitSegment>,
    /// What the fragment says of its timing, read once when it arrives;
    /// `None` when it does not parse.
    pub fragment: Option<FragmentInfo>,
}

/// The window of recent segments of one rendition, oldest first.
#[derive(Debug)]
pub struct RenditionWindow {
    capacity: usize,
    segments: VecDeque<Segment>,
    next_sequence: u64,
    discontinuity_sequence: u64,
    init: Option<Arc<InitSegment>>,
    next_init_id: u32,
    discontinuity_pending: bool,
    last_end: Option<OffsetDateTime>,
    ended: bool,
    target_duration: Option<u64>,
    target_headroom: u64,
    target_exceeded: u64,
}

impl RenditionWindow {
    /// An empty window holding at most `capacity` segments (at least one)
    /// whose first segment will get sequence `first_sequence`.
    pub fn new(capacity: usize, first_sequence: u64) -> Self {
        RenditionWindow {
            capacity: capacity.max(1),
            segments: VecDeque::new(),
            next_sequence: first_sequence,
            discontinuity_sequence: 0,
            init: None,
            next_init_id: 0,
            discontinuity_pending: false,
            last_end: None,
            ended: false,
            target_duration: None,
            target_headroom: 0,
            target_exceeded: 0,
        }
    }

    /// Starts init ids at `id` instead of 0, so that init URIs stay distinct
    /// from those of an earlier run when sequences are restored.
    pub fn with_first_init_id(mut self, id: u32) -> Self {
        self.next_init_id = id;
        self
    }

    /// Continues a rendition that an earlier run of the server published:
    /// `discontinuities` is how many discontinuities that run had (see
    /// [`RenditionWindow::discontinuities`]), and the first segment of this
    /// run follows a discontinuity too, so a player that kept the old
    /// playlist sees the restart.
    pub fn continue_after_restart(mut self, discontinuities: u64) -> Self {
        self.discontinuity_sequence = discontinuities;
        self.discontinuity_pending = true;
        self
    }

    /// Every discontinuity so far: those that left the window plus those in
    /// it. A later run continues its discontinuity sequence from here.
    pub fn discontinuities(&self) -> u64 {
        let tagged = self.segments.iter().filter(|s| s.discontinuity).count();
        self.discontinuity_sequence + tagged as u64
    }

    /// Installs the init segment for the segments pushed from now on.
    /// The same bytes as the current init keep its id; other bytes get a
    /// new one.
    pub fn set_init(&mut self, data: Bytes) -> Result<Arc<InitSegment>, PackageError> {
        if let Some(current) = &self.init
            && current.data == data
        {
            return Ok(Arc::clone(current));
        }

        let info = InitInfo::parse(&data)?;
        let init = Arc::new(InitSegment {
            id: self.next_init_id,
            data,
            info,
        });
        self.next_init_id = self.next_init_id.wrapping_add(1);
        self.init = Some(Arc::clone(&init));
        Ok(init)
    }

    /// The init segment new segments will use, if one is installed.
    pub fn current_init(&self) -> Option<Arc<InitSegment>> {
        self.init.clone()
    }

    /// The id the next different init segment will get.
    pub fn next_init_id(&self) -> u32 {
        self.next_init_id
    }

    /// Appends a segment that ended at `now` and lasted `duration`, and
    /// evicts the oldest segments beyond the capacity.
    ///
    /// A segment longer than the target duration is still kept; it is
    /// counted in [`RenditionWindow::target_exceeded`].
    pub fn push(
        &mut self,
        duration: Duration,
        data: Bytes,
        now: OffsetDateTime,
    ) -> Result<&Segment, PackageError> {
        let init = self.init.clone().ok_or(PackageError::NoInitSegment)?;
        if self.ended {
            return Err(PackageError::WindowEnded);
        }
        if duration.is_zero() {
            return Err(PackageError::ZeroDuration);
        }

        let discontinuity = self.discontinuity_pending;
        let program_date_time = self.start_time(duration, now, discontinuity);

        let headroom = self.target_headroom;
        let target = *self
            .target_duration
            .get_or_insert_with(|| rounded_secs(duration).max(1).saturating_add(headroom));
        if rounded_secs(duration) > target {
            self.target_exceeded += 1;
        }

        let segment = Segment {
            sequence: self.next_sequence,
            duration,
            fragment: FragmentInfo::parse(&data).ok(),
            data,
            program_date_time,
            discontinuity,
            init,
        };
        self.next_sequence = self.next_sequence.saturating_add(1);
        self.discontinuity_pending = false;
        self.last_end = Some(program_date_time.saturating_add(duration_to_time(duration)));
        self.segments.push_back(segment);
        self.evict();

        self.segments.back().ok_or(PackageError::Invalid {
            what: "segment window",
            detail: "empty right after a push".to_owned(),
        })
    }

    /// Start time of a new segment: right after the previous one, unless a
    /// discontinuity resets it to the wall clock (never earlier than the end
    /// of the previous segment, so program date times never go back).
    fn start_time(
        &self,
        duration: Duration,
        now: OffsetDateTime,
        discontinuity: bool,
    ) -> OffsetDateTime {
        let from_clock = now.saturating_sub(duration_to_time(duration));
        match self.last_end {
            Some(end) if discontinuity => from_clock.max(end),
            Some(end) => end,
            None => from_clock,
        }
    }

    fn evict(&mut self) {
        while self.segments.len() > self.capacity {
            if let Some(old) = self.segments.pop_front()
                && old.discontinuity
            {
                self.discontinuity_sequence += 1;
            }
        }
    }

    /// Marks the next pushed segment as following a discontinuity (the
    /// publisher reconnected or the pipeline restarted). Before the first
    /// segment there is nothing to be discontinuous with, so it does nothing.
    pub fn mark_discontinuity(&mut self) {
        if self.last_end.is_some() {
            self.discontinuity_pending = true;
        }
    }

    /// The segments in the window, oldest first.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &Segment> + DoubleEndedIterator {
        self.segments.iter()
    }

    /// The windowed segment with this sequence number.
    pub fn get(&self, sequence: u64) -> Option<&Segment> {
        let first = self.segments.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
        self.segments.get(index)
    }

    /// The init segment with this id, while the current init or a windowed
    /// segment still uses it.
    pub fn init_by_id(&self, id: u32) -> Option<Arc<InitSegment>> {
        self.init
            .iter()
            .chain(self.segments.iter().map(|segment| &segment.init))
            .find(|init| init.id == id)
            .cloned()
    }

    /// Sequence number of the first segment in the window, or of the next
    /// segment when the window is empty. Never decreases.
    pub fn media_sequence(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.next_sequence, |segment| segment.sequence)
    }

    /// Sequence number the next pushed segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Discontinuities that have left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// Whether the rendition has ended (the playlist gets `EXT-X-ENDLIST`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Ends the rendition: no more segments until [`RenditionWindow::resume`].
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Reopens an ended rendition; the next segment follows a discontinuity.
    pub fn resume(&mut self) {
        if self.ended {
            self.ended = false;
            self.mark_discontinuity();
        }
    }

    /// Fixes the target duration in whole seconds (at least 1) before the
    /// first segment. Returns false, changing nothing, once it is already
    /// fixed, because a target duration must never change.
    pub fn fix_target_duration(&mut self, secs: u64) -> bool {
        if self.target_duration.is_some() {
            return false;
        }
        self.target_duration = Some(secs.max(1));
        true
    }

    /// For a rendition cut on keyframes it does not control (the
    /// passthrough): the target duration taken from the first segment gets
    /// `secs` more. A segment ends at the first keyframe after the segment
    /// duration, so it is at most that duration plus one keyframe interval;
    /// `secs` = the segment duration covers sources whose keyframes come
    /// irregularly (scene cuts) up to the first segment's length apart.
    pub fn with_target_headroom(mut self, secs: u64) -> Self {
        self.target_headroom = secs;
        self
    }

    /// `EXT-X-TARGETDURATION`: fixed by [`RenditionWindow::fix_target_duration`]
    /// or else by the first segment's duration rounded to the nearest second.
    /// Before either, the value it would be from a one-second segment.
    pub fn target_duration(&self) -> u64 {
        self.target_duration.unwrap_or(1)
    }

    /// Segments pushed whose rounded duration exceeded the target duration.
    pub fn target_exceeded(&self) -> u64 {
        self.target_exceeded
    }

    /// The highest bitrate of any windowed segment, in bits per second.
    pub fn peak_bitrate(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| bitrate(segment.data.len() as u64, segment.duration))
            .max()
            .unwrap_or(0)
    }

    /// The bitrate over all windowed segments together, in bits per second.
    pub fn average_bitrate(&self) -> u64 {
        let bytes = self.segments.iter().map(|s| s.data.len() as u64).sum();
        let duration = self.segments.iter().map(|s| s.duration).sum();
        bitrate(bytes, duration)
    }
}

/// A duration rounded to the nearest millisecond, as `EXTINF` is written.
pub(super) fn rounded_millis(duration: Duration) -> u64 {
    let millis = duration.as_millis() + u128::from(duration.subsec_nanos() % 1_000_000 >= 500_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// The written `EXTINF` rounded to the nearest second, as HLS compares it
/// with `EXT-X-TARGETDURATION`.
fn rounded_secs(duration: Duration) -> u64 {
    rounded_millis(duration).saturating_add(500) / 1000
}

fn duration_to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// Bits per second of `bytes` over `duration`; 0 for a zero duration.
fn bitrate(bytes: u64, duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return 0;
    }
    let bits = u128::from(bytes) * 8 * 1_000_000_000;
    u64::try_from(bits / nanos).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A minimal valid AVC init segment, built by hand.
    pub(crate) fn avc_init(level: u8) -> Bytes {
        fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
            let mut out = (payload.len() as u32 + 8).to_be_bytes().to_vec();
            out.extend_from_slice(kind);
            out.extend_from_slice(payload);
            out
        }
        let mut entry = vec![0; 24];
        entry.extend_from_slice(&640u16.to_be_bytes());
        entry.extend_from_slice(&360u16.to_be_bytes());
        entry.extend_from_slice(&[0; 50]);
        entry.extend_from_slice(&bx(b"avcC", &[1, 0x64, 0, level]));
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend_from_slice(&bx(b"avc1", &entry));
        let mut mdhd = vec![0; 12];
        mdhd.extend_from_slice(&90_000u32.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let mut hdlr = vec![0; 8];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0; 13]);
        let stbl = bx(b"stbl", &bx(b"stsd", &stsd));
        let mdia = [bx(b"mdhd", &mdhd), bx(b"hdlr", &hdlr), bx(b"minf", &stbl)].concat();
        Bytes::from(bx(b"moov", &bx(b"trak", &bx(b"mdia", &mdia))))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).expect("valid timestamp")
    }

    fn window(capacity: usize, first: u64) -> RenditionWindow {
        let mut window = RenditionWindow::new(capacity, first);
        window.set_init(avc_init(0x1F)).expect("valid init");
        window
    }

    #[test]
    fn push_without_init_is_refused() {
        let mut window = RenditionWindow::new(3, 0);
        let err = window
            .push(secs(2.0), Bytes::new(), at(1000))
            .expect_err("refused");
        assert_eq!(err, PackageError::NoInitSegment);
        assert_eq!(window.next_sequence(), 0);
    }

    #[test]
    fn bad_init_is_refused_and_keeps_the_old_one() {
        let mut window = window(3, 0);
        assert!(window.set_init(Bytes::from_static(b"garbage")).is_err());
        assert_eq!(window.current_init().map(|i| i.id), Some(0));
    }

    #[test]
    fn same_init_keeps_its_id_and_new_init_gets_a_new_one() {
        let mut window = RenditionWindow::new(3, 0).with_first_init_id(10);
        let first = window.set_init(avc_init(0x1F)).expect("valid");
        let again = window.set_init(avc_init(0x1F)).expect("valid");
        assert_eq!(first.id, 10);
        assert_eq!(again.id, 10);
        assert!(Arc::ptr_eq(&first, &again));

        let other = window.set_init(avc_init(0x28)).expect("valid");
        assert_eq!(other.id, 11);
        assert_eq!(other.info.codec, "avc1.640028");
        assert_eq!(window.next_init_id(), 12);
    }

    #[test]
    fn sequences_advance_and_eviction_keeps_capacity() {
        let mut window = window(3, 100);
        assert_eq!(window.media_sequence(), 100);
        for i in 0..5 {
            let segment = window
                .push(secs(2.0), Bytes::from(vec![0; 1000]), at(1000 + 2 * i))
                .expect("pushed");
            assert_eq!(segment.sequence, 100 + i as u64);
        }
        assert_eq!(window.segments().len(), 3);
        assert_eq!(window.media_sequence(), 102);
        assert_eq!(window.next_sequence(), 105);
        assert!(window.get(101).is_none());
        assert_eq!(window.get(103).map(|s| s.sequence), Some(103));
        assert!(window.get(105).is_none());
    }

    #[test]
    fn program_date_time_is_contiguous_and_monotonic() {
        let mut window = window(5, 0);
        let first = window
            .push(secs(2.0), Bytes::new(), at(1000))
            .expect("pushed");
        assert_eq!(first.program_date_time, at(998));

        // Pushed late: still follows on from the previous segment.
        let second = window
            .push(secs(2.0), Bytes::new(), at(1005))
            .expect("pushed");
        assert_eq!(second.program_date_time, at(1000));

        // After a discontinuity the wall clock counts again...
        window.mark_discontinuity();
        let third = window
            .push(secs(2.0), Bytes::new(), at(1010))
            .expect("pushed");
        assert!(third.discontinuity);
        assert_eq!(third.program_date_time, at(1008));

        // ...but never earlier than the end of the previous segment.
        window.mark_discontinuity();
        let fourth = window
            .push(secs(2.0), Bytes::new(), at(1005))
            .expect("pushed");
        assert_eq!(fourth.program_date_time, at(1010));
        let fifth = window
            .push(secs(2.0), Bytes::new(), at(1005))
            .expect("pushed");
        assert!(!fifth.discontinuity);
    }

    #[test]
    fn discontinuity_sequence_counts_discontinuities_that_left() {
        let mut window = window(2, 0);
        window
            .push(secs(2.0), Bytes::new(), at(10))
            .expect("pushed");
        window.mark_discontinuity();
        window
            .push(secs(2.0), Bytes::new(), at(12))
            .expect("pushed");
        window.mark_discontinuity();
        window
            .push(secs(2.0), Bytes::new(), at(14))
            .expect("pushed");
        // Segment 0 (no discontinuity) left.
        assert_eq!(window.discontinuity_sequence(), 0);
        window
            .push(secs(2.0), Bytes::new(), at(16))
            .expect("pushed");
        // Segment 1 (discontinuity) left.
        assert_eq!(window.discontinuity_sequence(), 1);
        window
            .push(secs(2.0), Bytes::new(), at(18))
            .expect("pushed");
        assert_eq!(window.discontinuity_sequence(), 2);
        window
            .push(secs(2.0), Bytes::new(), at(20))
            .expect("pushed");
        assert_eq!(window.discontinuity_sequence(), 2);
    }

    #[test]
    fn first_segment_is_no_discontinuity() {
        let mut window = window(2, 0);
        window.mark_discontinuity();
        let first = window
            .push(secs(2.0), Bytes::new(), at(10))
            .expect("pushed");
        assert!(!first.discontinuity);
    }

    #[test]
    fn end_and_resume() {
        let mut window = window(4, 0);
        window
            .push(secs(2.0), Bytes::new(), at(10))
            .expect("pushed");
        window.end();
        assert!(window.ended());
        assert_eq!(
            window
                .push(secs(2.0), Bytes::new(), at(12))
                .expect_err("refused"),
            PackageError::WindowEnded
        );
        window.resume();
        assert!(!window.ended());
        let next = window
            .push(secs(2.0), Bytes::new(), at(30))
            .expect("pushed");
        assert!(next.discontinuity);
        assert_eq!(next.sequence, 1);
    }

    #[test]
    fn target_duration_comes_from_the_first_segment_and_stays() {
        let mut window = window(4, 0);
        window
            .push(secs(2.4), Bytes::new(), at(10))
            .expect("pushed");
        assert_eq!(window.target_duration(), 2);
        assert!(!window.fix_target_duration(6));
        window
            .push(secs(3.6), Bytes::new(), at(14))
            .expect("pushed");
        assert_eq!(window.target_duration(), 2);
        assert_eq!(window.target_exceeded(), 1);
        window
            .push(secs(2.4994), Bytes::new(), at(17))
            .expect("pushed");
        assert_eq!(window.target_exceeded(), 1);
        // Written as EXTINF 2.500, which rounds to 3.
        window
            .push(secs(2.4996), Bytes::new(), at(20))
            .expect("pushed");
        assert_eq!(window.target_exceeded(), 2);
    }

    #[test]
    fn headroom_covers_segments_of_irregular_keyframe_intervals() {
        let mut window = window(4, 0).with_target_headroom(2);
        window
            .push(secs(2.2), Bytes::new(), at(10))
            .expect("pushed");
        assert_eq!(window.target_duration(), 4);
        for (duration, start) in [(3.7, 13), (4.4, 17), (2.0, 21)] {
            window
                .push(secs(duration), Bytes::new(), at(start))
                .expect("pushed");
        }
        assert_eq!(window.target_duration(), 4);
        assert_eq!(window.target_exceeded(), 0);
        window
            .push(secs(4.6), Bytes::new(), at(26))
            .expect("pushed");
        assert_eq!(window.target_exceeded(), 1);
    }

    #[test]
    fn fixed_target_duration_wins_and_short_first_segment_is_at_least_one() {
        let mut window = window(4, 0);
        assert!(window.fix_target_duration(4));
        window
            .push(secs(0.2), Bytes::new(), at(10))
            .expect("pushed");
        window
            .push(secs(4.4), Bytes::new(), at(15))
            .expect("pushed");
        assert_eq!(window.target_duration(), 4);
        assert_eq!(window.target_exceeded(), 0);
        window
            .push(secs(4.5), Bytes::new(), at(20))
            .expect("pushed");
        assert_eq!(window.target_exceeded(), 1);

        let mut short = self::window(4, 0);
        short.push(secs(0.3), Bytes::new(), at(10)).expect("pushed");
        assert_eq!(short.target_duration(), 1);
    }

    #[test]
    fn zero_duration_is_refused() {
        let mut window = window(4, 0);
        assert_eq!(
            window
                .push(Duration::ZERO, Bytes::new(), at(10))
                .expect_err("refused"),
            PackageError::ZeroDuration
        );
        assert_eq!(window.next_sequence(), 0);
    }

    #[test]
    fn init_by_id_finds_current_and_windowed_inits_only() {
        let mut window = window(2, 0);
        window
            .push(secs(2.0), Bytes::new(), at(10))
            .expect("pushed");
        window.set_init(avc_init(0x28)).expect("valid");
        window
            .push(secs(2.0), Bytes::new(), at(12))
            .expect("pushed");
        window.set_init(avc_init(0x29)).expect("valid");
        assert_eq!(window.init_by_id(0).map(|i| i.id), Some(0));
        assert_eq!(window.init_by_id(1).map(|i| i.id), Some(1));
        assert_eq!(window.init_by_id(2).map(|i| i.id), Some(2));

        window
            .push(secs(2.0), Bytes::new(), at(14))
            .expect("pushed");
        assert!(
            window.init_by_id(0).is_none(),
            "init 0 left with its segment"
        );
        assert!(window.init_by_id(1).is_some());
        assert!(window.init_by_id(3).is_none());
    }

    #[test]
    fn bitrates_over_the_window() {
        let mut window = window(2, 0);
        assert_eq!(window.peak_bitrate(), 0);
        assert_eq!(window.average_bitrate(), 0);
        // 250 kB in 2 s = 1 Mbit/s; 750 kB in 2 s = 3 Mbit/s.
        window
            .push(secs(2.0), Bytes::from(vec![0; 250_000]), at(10))
            .expect("pushed");
        window
            .push(secs(2.0), Bytes::from(vec![0; 750_000]), at(12))
            .expect("pushed");
        assert_eq!(window.peak_bitrate(), 3_000_000);
        assert_eq!(window.average_bitrate(), 2_000_000);
        // The 1 Mbit/s segment leaves; a 0.5 Mbit/s one arrives.
        window
            .push(secs(4.0), Bytes::from(vec![0; 250_000]), at(16))
            .expect("pushed");
        assert_eq!(window.peak_bitrate(), 3_000_000);
        assert_eq!(window.average_bitrate(), 8_000_000 / 6);
    }

    #[test]
    fn zero_capacity_still_holds_one_segment() {
        let mut window = window(0, 0);
        window
            .push(secs(2.0), Bytes::new(), at(10))
            .expect("pushed");
        window
            .push(secs(2.0), Bytes::new(), at(12))
            .expect("pushed");
        assert_eq!(window.segments().len(), 1);
        assert_eq!(window.media_sequence(), 1);
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::package::hls::media_playlist;

    const INIT: &[u8] = include_bytes!("../../assets/cmaf/video-240p-init.mp4");
    const SEGMENT: &[u8] = include_bytes!("../../assets/cmaf/video-240p-segment.m4s");

    #[test]
    fn a_restart_continues_sequences_with_a_tagged_discontinuity() {
        let mut before = RenditionWindow::new(3, 0);
        before.set_init(Bytes::from_static(INIT)).expect("init");
        let mut now = OffsetDateTime::UNIX_EPOCH;
        for i in 0..5 {
            now += Duration::from_secs(2);
            if i == 2 {
                before.mark_discontinuity();
            }
            before
                .push(Duration::from_secs(2), Bytes::from_static(SEGMENT), now)
                .expect("push");
        }
        assert_eq!(before.discontinuities(), 1);

        let mut after = RenditionWindow::new(3, before.next_sequence())
            .continue_after_restart(before.discontinuities());
        after.set_init(Bytes::from_static(INIT)).expect("init");
        after
            .push(Duration::from_secs(2), Bytes::from_static(SEGMENT), now)
            .expect("push");
        let text = media_playlist(&after);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:5"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert_eq!(after.discontinuities(), 2);
    }
}
