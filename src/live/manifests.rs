//! Manifests of one stream: the HLS master playlist and the DASH MPD, built
//! from the renditions' segment windows.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::package::dash::{self, PeriodSpec, Presentation, RepresentationSpec};
use crate::package::hls::{self, AudioInfo, VariantInfo};
use crate::package::isobmff::TrackKind;
use crate::package::window::RenditionWindow;
use crate::transcode::plan::RenditionPlan;

/// A rendition's packaging state, kept across publish sessions.
pub(super) struct RenditionOutput {
    pub kind: TrackKind,
    pub window: RenditionWindow,
    pub frame_rate: f64,
    /// First media sequence of each publish session: `(session, sequence)`.
    pub session_starts: Vec<(u64, u64)>,
}

impl RenditionOutput {
    /// Notes that `sequence` is the next segment, from `session`.
    pub fn record_session(&mut self, session: u64, sequence: u64) {
        if self
            .session_starts
            .last()
            .is_none_or(|(s, _)| *s != session)
        {
            self.session_starts.push((session, sequence));
        }
        let oldest = self.window.media_sequence();
        while self.session_starts.len() > 1 && self.session_starts[1].1 <= oldest {
            self.session_starts.remove(0);
        }
    }

    /// The sequence range `[first, end)` of a session's segments.
    fn session_range(&self, session: u64) -> Option<(u64, u64)> {
        let index = self
            .session_starts
            .iter()
            .position(|(s, _)| *s == session)?;
        let first = self.session_starts[index].1;
        let end = self
            .session_starts
            .get(index + 1)
            .map_or(u64::MAX, |(_, seq)| *seq);
        Some((first, end))
    }
}

/// A publish session as the MPD sees it: a period.
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionPeriod {
    pub session: u64,
    /// Wall-clock time of media time zero.
    pub started_at: OffsetDateTime,
}

/// The master playlist of `plan`, once each rendition has a segment.
pub(super) fn master_playlist(
    plan: &[RenditionPlan],
    outputs: &HashMap<String, RenditionOutput>,
) -> Option<String> {
    if plan.is_empty() {
        return None;
    }
    let mut variants = Vec::new();
    let mut audio = None;
    for rendition in plan {
        let out = outputs.get(&rendition.name)?;
        let segment = out.window.segments().last()?;
        let info = &segment.init.info;
        if rendition.is_video() {
            variants.push(VariantInfo {
                rendition: rendition.name.clone(),
                codec: info.codec.clone(),
                width: info.width,
                height: info.height,
                frame_rate: out.frame_rate,
                peak_bps: out.window.peak_bitrate(),
                average_bps: out.window.average_bitrate(),
            });
        } else {
            audio = Some(AudioInfo {
                rendition: rendition.name.clone(),
                codec: info.codec.clone(),
                peak_bps: out.window.peak_bitrate(),
                average_bps: out.window.average_bitrate(),
                channels: info.channels,
            });
        }
    }
    variants.sort_by_key(|v| std::cmp::Reverse(v.peak_bps));
    Some(hls::master_playlist(&variants, audio.as_ref()))
}

/// What the MPD needs besides the renditions.
pub(super) struct MpdContext<'a> {
    pub availability_start: OffsetDateTime,
    pub now: OffsetDateTime,
    pub segment: Duration,
    pub window_segments: usize,
    pub live: bool,
    pub periods: &'a [SessionPeriod],
    /// Rendition names in manifest order.
    pub order: Vec<&'a str>,
}

/// The MPD split around the clock URL, which delivery fills in per request.
pub(super) fn dash_manifest(
    ctx: &MpdContext<'_>,
    outputs: &HashMap<String, RenditionOutput>,
) -> Option<(Bytes, Bytes)> {
    let mut periods = Vec::new();
    let mut last_end: Option<OffsetDateTime> = None;
    for period in ctx.periods {
        let mut representations = Vec::new();
        for name in &ctx.order {
            let Some(out) = outputs.get(*name) else {
                continue;
            };
            let Some((first, end)) = out.session_range(period.session) else {
                continue;
            };
            let segments: Vec<_> = out
                .window
                .segments()
                .filter(|s| s.sequence >= first && s.sequence < end)
                .collect();
            if let Some(last) = segments.last() {
                let end = last.program_date_time + last.duration;
                last_end = Some(last_end.map_or(end, |e| e.max(end)));
            }
            representations.push(RepresentationSpec {
                id: name,
                frame_rate: out.frame_rate,
                bandwidth: out.window.peak_bitrate(),
                segments,
            });
        }
        let start = period.started_at - ctx.availability_start;
        periods.push(PeriodSpec {
            id: period.session,
            start: start.try_into().unwrap_or(Duration::ZERO),
            representations,
        });
    }
    last_end?;
    let ended_after = match (ctx.live, last_end) {
        (false, Some(end)) => (end - ctx.availability_start).try_into().ok(),
        _ => None,
    };
    let presentation = Presentation {
        availability_start: ctx.availability_start,
        publish_time: ctx.now,
        segment: ctx.segment,
        time_shift_depth: ctx.segment * ctx.window_segments as u32,
        ended_after,
        periods,
    };
    let text = dash::mpd(&presentation);
    let at = text.find(dash::UTC_TIMING_PLACEHOLDER)?;
    let text = Bytes::from(text);
    Some((
        text.slice(..at),
        text.slice(at + dash::UTC_TIMING_PLACEHOLDER.len()..),
    ))
}
