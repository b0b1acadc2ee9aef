//! Manifests of one stream: the HLS master playlist and the DASH MPD, built
//! from the renditions' segment windows.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::package::dash::{self, PeriodSpec, Presentation, RepresentationSpec};
use crate::package::hls::{self, AudioInfo, VariantInfo};
use crate::package::isobmff::{InitInfo, TrackKind};
use crate::package::window::RenditionWindow;
use crate::transcode::plan::{RenditionKind, RenditionPlan};

/// A rendition's packaging state, kept across publish sessions.
pub(super) struct RenditionOutput {
    pub kind: TrackKind,
    pub window: RenditionWindow,
    pub frame_rate: f64,
    /// The format the current session's muxer was given, known before the
    /// rendition's first segment.
    pub announced: Option<InitInfo>,
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

/// Bitrates of the source tracks so far in a session, for renditions that
/// have no segment to measure yet.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EarlyRates {
    pub source_video_bps: Option<u64>,
    /// Source video frames per second, for caps that do not say.
    pub source_fps: Option<f64>,
    pub audio_bps: Option<u64>,
}

impl EarlyRates {
    /// A rendition's bitrate before its first segment: the configured one
    /// for a rung, the source's for the passthrough and the audio.
    fn of(&self, rendition: &RenditionPlan) -> Option<u64> {
        match rendition.kind {
            RenditionKind::Transcoded { video_kbps, .. } => Some(u64::from(video_kbps) * 1000),
            RenditionKind::Passthrough => self.source_video_bps,
            RenditionKind::Audio => self.audio_bps,
        }
    }
}

/// The master playlist of `plan`, once each rendition has a segment or, at
/// the start of a session, a format and a bitrate estimate: players get it
/// while the first segments are still being made.
pub(super) fn master_playlist(
    plan: &[RenditionPlan],
    outputs: &HashMap<String, RenditionOutput>,
    early: &EarlyRates,
) -> Option<String> {
    if plan.is_empty() {
        return None;
    }
    let mut variants = Vec::new();
    let mut audio = None;
    for rendition in plan {
        let out = outputs.get(&rendition.name)?;
        let (info, peak_bps, average_bps) = match out.window.segments().last() {
            Some(segment) => (
                &segment.init.info,
                out.window.peak_bitrate(),
                out.window.average_bitrate(),
            ),
            None => {
                let bps = early.of(rendition)?;
                (out.announced.as_ref()?, bps, bps)
            }
        };
        if rendition.is_video() {
            let frame_rate = if out.frame_rate > 0.0 {
                out.frame_rate
            } else {
                early.source_fps.unwrap_or(0.0)
            };
            variants.push(VariantInfo {
                rendition: rendition.name.clone(),
                codec: info.codec.clone(),
                width: info.width,
                height: info.height,
                frame_rate,
                peak_bps,
                average_bps,
            });
        } else {
            audio = Some(AudioInfo {
                rendition: rendition.name.clone(),
                codec: info.codec.clone(),
                peak_bps,
                average_bps,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::isobmff::{aac_track_info, avc_track_info};

    fn output(kind: TrackKind, announced: Option<InitInfo>) -> RenditionOutput {
        RenditionOutput {
            kind,
            window: RenditionWindow::new(6, 0),
            frame_rate: 0.0,
            announced,
            session_starts: Vec::new(),
        }
    }

    fn plan() -> Vec<RenditionPlan> {
        vec![
            RenditionPlan {
                name: "360p".into(),
                kind: RenditionKind::Transcoded {
                    width: 640,
                    height: 360,
                    video_kbps: 800,
                },
            },
            RenditionPlan {
                name: "source".into(),
                kind: RenditionKind::Passthrough,
            },
            RenditionPlan {
                name: "audio".into(),
                kind: RenditionKind::Audio,
            },
        ]
    }

    fn announced_outputs() -> HashMap<String, RenditionOutput> {
        let avc = |w, h| avc_track_info(&[1, 0x64, 0, 0x1F], w, h).ok();
        HashMap::from([
            ("360p".into(), output(TrackKind::Video, avc(640, 360))),
            ("source".into(), output(TrackKind::Video, avc(1280, 720))),
            (
                "audio".into(),
                output(
                    TrackKind::Audio,
                    aac_track_info(&[0x11, 0x90], 48_000, 2).ok(),
                ),
            ),
        ])
    }

    const EARLY: EarlyRates = EarlyRates {
        source_video_bps: Some(4_000_000),
        source_fps: Some(30.0),
        audio_bps: Some(128_000),
    };

    #[test]
    fn master_lists_announced_renditions_before_their_first_segment() {
        let master = master_playlist(&plan(), &announced_outputs(), &EARLY).expect("master");
        let lines: Vec<&str> = master.lines().collect();
        let variant = |uri: &str| {
            let at = lines.iter().position(|l| *l == uri).expect(uri);
            lines[at - 1]
        };
        let source = variant("source/index.m3u8");
        assert!(source.contains("BANDWIDTH=4128000,"), "{source}");
        assert!(source.contains("RESOLUTION=1280x720"), "{source}");
        assert!(source.contains("FRAME-RATE=30"), "{source}");
        assert!(
            source.contains(r#"CODECS="avc1.64001F,mp4a.40.2""#),
            "{source}"
        );
        // A rung announces its configured bitrate.
        let rung = variant("360p/index.m3u8");
        assert!(rung.contains("BANDWIDTH=928000,"), "{rung}");
        assert!(rung.contains("RESOLUTION=640x360"), "{rung}");
        assert!(master.contains(r#"CHANNELS="2""#), "{master}");
    }

    #[test]
    fn master_waits_for_every_rendition() {
        let mut outputs = announced_outputs();
        let no_rate = EarlyRates {
            source_video_bps: None,
            ..EARLY
        };
        assert_eq!(master_playlist(&plan(), &outputs, &no_rate), None);
        if let Some(audio) = outputs.get_mut("audio") {
            audio.announced = None;
        }
        assert_eq!(master_playlist(&plan(), &outputs, &EARLY), None);
        outputs.remove("audio");
        assert_eq!(master_playlist(&plan(), &outputs, &EARLY), None);
    }
}
