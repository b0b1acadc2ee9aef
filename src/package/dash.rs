//! The DASH MPD, written over the same CMAF segments as the HLS playlists.
//!
//! One `Period` per publish session (a reconnect starts a new one, so
//! timestamps and init segments may restart), one video `AdaptationSet` with
//! a `Representation` per video rendition and one audio `AdaptationSet`.
//! Each representation carries its own `SegmentTemplate` with a
//! `SegmentTimeline` read from the fragments' `tfdt`/`trun`, and `$Number$`
//! equal to the HLS media sequence, so both manifests name the same files.

use std::fmt::Write;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::isobmff::TrackKind;
use super::window::Segment;

/// Where the server's clock endpoint goes in the MPD; the delivery layer
/// replaces it with an absolute URL for the requesting client.
pub const UTC_TIMING_PLACEHOLDER: &str = "\u{1}utc-timing\u{1}";

/// A whole live presentation.
#[derive(Debug)]
pub struct Presentation<'a> {
    /// Fixed for the life of the stream.
    pub availability_start: OffsetDateTime,
    pub publish_time: OffsetDateTime,
    pub segment: Duration,
    /// How far back players may seek: the segment window.
    pub time_shift_depth: Duration,
    /// Set once the publisher has gone: the presentation's end, measured
    /// from `availability_start`. The MPD then stops asking for updates.
    pub ended_after: Option<Duration>,
    pub periods: Vec<PeriodSpec<'a>>,
}

/// One publish session.
#[derive(Debug)]
pub struct PeriodSpec<'a> {
    /// Stable across updates (the session number).
    pub id: u64,
    /// Period start from `availability_start`; media time 0 plays then.
    pub start: Duration,
    pub representations: Vec<RepresentationSpec<'a>>,
}

/// One rendition within a period.
#[derive(Debug)]
pub struct RepresentationSpec<'a> {
    /// The rendition name: also its folder in segment URLs.
    pub id: &'a str,
    pub frame_rate: f64,
    pub bandwidth: u64,
    /// Its segments in this period, oldest first; all share one init.
    pub segments: Vec<&'a Segment>,
}

/// Writes the MPD. Representations without segments are left out, and so
/// are periods left empty.
pub fn mpd(p: &Presentation<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = write!(
        out,
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" "#
    );
    out.push_str(
        r#"profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" "#,
    );
    let _ = write!(
        out,
        r#"availabilityStartTime="{}" publishTime="{}" "#,
        utc(p.availability_start),
        utc(p.publish_time)
    );
    match p.ended_after {
        Some(end) => {
            let _ = write!(out, r#"mediaPresentationDuration="{}" "#, duration(end));
        }
        None => {
            let _ = write!(out, r#"minimumUpdatePeriod="{}" "#, duration(p.segment));
        }
    }
    let _ = writeln!(
        out,
        concat!(
            r#"timeShiftBufferDepth="{}" suggestedPresentationDelay="{}" "#,
            r#"maxSegmentDuration="{}" minBufferTime="{}">"#
        ),
        duration(p.time_shift_depth),
        duration(p.segment * 3),
        duration(p.segment * 2),
        duration(p.segment),
    );
    for period in &p.periods {
        write_period(&mut out, period);
    }
    let _ = writeln!(
        out,
        concat!(
            r#"  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" "#,
            r#"value="{placeholder}"/>"#
        ),
        placeholder = UTC_TIMING_PLACEHOLDER
    );
    out.push_str("</MPD>\n");
    out
}

fn write_period(out: &mut String, period: &PeriodSpec<'_>) {
    let with_segments: Vec<&RepresentationSpec<'_>> = period
        .representations
        .iter()
        .filter(|r| !r.segments.is_empty())
        .collect();
    if with_segments.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        r#"  <Period id="{}" start="{}">"#,
        period.id,
        duration(period.start)
    );
    for (set_id, kind) in [TrackKind::Video, TrackKind::Audio].into_iter().enumerate() {
        let members: Vec<&&RepresentationSpec<'_>> = with_segments
            .iter()
            .filter(|r| r.segments[0].init.info.kind == kind)
            .collect();
        if members.is_empty() {
            continue;
        }
        let (content, mime) = match kind {
            TrackKind::Video => ("video", "video/mp4"),
            TrackKind::Audio => ("audio", "audio/mp4"),
        };
        let _ = writeln!(
            out,
            concat!(
                r#"    <AdaptationSet id="{set_id}" contentType="{content}" "#,
                r#"mimeType="{mime}" startWithSAP="1">"#
            ),
            set_id = set_id,
            content = content,
            mime = mime
        );
        for rep in members {
            write_representation(out, rep);
        }
        out.push_str("    </AdaptationSet>\n");
    }
    out.push_str("  </Period>\n");
}

fn write_representation(out: &mut String, rep: &RepresentationSpec<'_>) {
    let Some(first) = rep.segments.first() else {
        return;
    };
    let info = &first.init.info;
    let _ = write!(
        out,
        r#"      <Representation id="{}" bandwidth="{}" codecs="{}""#,
        rep.id,
        rep.bandwidth.max(1),
        info.codec
    );
    match info.kind {
        TrackKind::Video => {
            let _ = write!(
                out,
                r#" width="{}" height="{}" sar="1:1""#,
                info.width, info.height
            );
            if rep.frame_rate > 0.0 {
                let _ = write!(out, r#" frameRate="{}""#, frame_rate(rep.frame_rate));
            }
            out.push_str(">\n");
        }
        TrackKind::Audio => {
            let _ = writeln!(out, r#" audioSamplingRate="{}">"#, info.sample_rate);
            let _ = writeln!(
                out,
                concat!(
                    r#"        <AudioChannelConfiguration "#,
                    r#"schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" "#,
                    r#"value="{}"/>"#
                ),
                info.channels
            );
        }
    }
    let _ = writeln!(
        out,
        concat!(
            r#"        <SegmentTemplate timescale="{}" presentationTimeOffset="0" "#,
            r#"startNumber="{}" initialization="{}/init-{}.mp4" media="{}/$Number$.m4s">"#
        ),
        info.timescale.max(1),
        first.sequence,
        rep.id,
        first.init.id,
        rep.id
    );
    out.push_str("          <SegmentTimeline>\n");
    write_timeline(out, &rep.segments, info.timescale);
    out.push_str("          </SegmentTimeline>\n");
    out.push_str("        </SegmentTemplate>\n");
    out.push_str("      </Representation>\n");
}

/// `S` elements from the fragments' decode times and durations, runs of
/// equal durations folded with `r`.
fn write_timeline(out: &mut String, segments: &[&Segment], timescale: u32) {
    let mut entries: Vec<(u64, u64)> = Vec::with_capacity(segments.len());
    for segment in segments {
        let entry = match segment.fragment {
            Some(f) if f.duration_ticks > 0 => (f.base_decode_time, f.duration_ticks),
            _ => {
                let t = entries.last().map_or(0, |(t, d)| t + d);
                let d = (segment.duration.as_secs_f64() * f64::from(timescale)).round() as u64;
                (t, d.max(1))
            }
        };
        entries.push(entry);
    }
    // A fragment's own duration can differ from the distance to the next
    // fragment by a tick of rounding; the distance is what keeps the
    // timeline gapless, so it wins unless there is a real gap.
    for i in 1..entries.len() {
        let (t, d) = entries[i - 1];
        let next = entries[i].0;
        if next > t && next - t <= d + d / 50 && next - t + d / 50 >= d {
            entries[i - 1].1 = next - t;
        }
    }

    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    let mut expected_next: Option<u64> = None;
    for (t, d) in entries {
        match runs.last_mut() {
            Some((_, dur, repeat)) if *dur == d && expected_next == Some(t) => *repeat += 1,
            _ => runs.push((t, d, 0)),
        }
        expected_next = Some(t + d);
    }
    for (t, d, r) in runs {
        if r > 0 {
            let _ = writeln!(out, r#"            <S t="{t}" d="{d}" r="{r}"/>"#);
        } else {
            let _ = writeln!(out, r#"            <S t="{t}" d="{d}"/>"#);
        }
    }
}

/// `t` in UTC, RFC 3339 with milliseconds (`2026-01-02T03:04:05.678Z`).
pub fn utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let millis = t.replace_nanosecond((t.nanosecond() / 1_000_000) * 1_000_000);
    millis
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// An `xs:duration` in seconds with millisecond precision.
fn duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(1000) {
        format!("PT{}S", millis / 1000)
    } else {
        format!("PT{}.{:03}S", millis / 1000, millis % 1000)
    }
}

/// A DASH frame rate: an integer, or a ratio for NTSC-style rates.
fn frame_rate(fps: f64) -> String {
    let rounded = fps.round();
    if (fps - rounded).abs() < 0.01 {
        return format!("{}", rounded as u64);
    }
    let ntsc = (rounded * 1000.0 / 1001.0 - fps).abs() < 0.01;
    if ntsc {
        return format!("{}/1001", rounded as u64 * 1000);
    }
    format!("{}/1000", (fps * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::package::isobmff::{FragmentInfo, InitInfo};
    use crate::package::window::InitSegment;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    /// A `moof` with one `traf` whose `tfdt` is `t` and one sample of `d`.
    fn fragment(t: u64, d: u32) -> Bytes {
        let mut tfhd = vec![0, 0x02, 0, 0x08];
        tfhd.extend_from_slice(&1u32.to_be_bytes());
        tfhd.extend_from_slice(&d.to_be_bytes());
        let mut tfdt = vec![1, 0, 0, 0];
        tfdt.extend_from_slice(&t.to_be_bytes());
        let mut trun = vec![0, 0, 0, 0];
        trun.extend_from_slice(&1u32.to_be_bytes());
        let traf = [
            boxed(b"tfhd", &tfhd),
            boxed(b"tfdt", &tfdt),
            boxed(b"trun", &trun),
        ]
        .concat();
        let mfhd = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]);
        let moof = boxed(b"moof", &[mfhd, boxed(b"traf", &traf)].concat());
        Bytes::from([moof, boxed(b"mdat", &[0; 4])].concat())
    }

    fn segment(kind: TrackKind, sequence: u64, t: u64, d: u32) -> Segment {
        let info = InitInfo {
            kind,
            codec: match kind {
                TrackKind::Video => "avc1.64001F".into(),
                TrackKind::Audio => "mp4a.40.2".into(),
            },
            width: 1280,
            height: 720,
            timescale: 90_000,
            sample_rate: 48_000,
            channels: 2,
        };
        let data = fragment(t, d);
        Segment {
            sequence,
            duration: Duration::from_secs(2),
            fragment: FragmentInfo::parse(&data).ok(),
            data,
            program_date_time: OffsetDateTime::UNIX_EPOCH,
            discontinuity: false,
            init: Arc::new(InitSegment {
                id: 4,
                data: Bytes::new(),
                info,
            }),
        }
    }

    fn presentation<'a>(video: &'a [Segment], audio: &'a [Segment]) -> Presentation<'a> {
        Presentation {
            availability_start: OffsetDateTime::UNIX_EPOCH + Duration::from_millis(1500),
            publish_time: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(10),
            segment: Duration::from_secs(2),
            time_shift_depth: Duration::from_secs(12),
            ended_after: None,
            periods: vec![PeriodSpec {
                id: 1,
                start: Duration::ZERO,
                representations: vec![
                    RepresentationSpec {
                        id: "360p",
                        frame_rate: 30.0,
                        bandwidth: 900_000,
                        segments: video.iter().collect(),
                    },
                    RepresentationSpec {
                        id: "audio",
                        frame_rate: 0.0,
                        bandwidth: 130_000,
                        segments: audio.iter().collect(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn live_mpd_names_the_hls_files() {
        let video: Vec<Segment> = (0..3)
            .map(|i| segment(TrackKind::Video, 7 + i, 180_000 * i, 180_000))
            .collect();
        let audio = vec![segment(TrackKind::Audio, 7, 0, 180_000)];
        let text = mpd(&presentation(&video, &audio));
        assert!(text.contains(r#"type="dynamic""#), "{text}");
        assert!(
            text.contains(r#"availabilityStartTime="1970-01-01T00:00:01.5Z""#),
            "{text}"
        );
        assert!(text.contains(r#"minimumUpdatePeriod="PT2S""#), "{text}");
        assert!(text.contains(r#"timeShiftBufferDepth="PT12S""#), "{text}");
        assert!(text.contains(r#"startNumber="7""#), "{text}");
        assert!(
            text.contains(r#"initialization="360p/init-4.mp4""#),
            "{text}"
        );
        assert!(text.contains(r#"media="360p/$Number$.m4s""#), "{text}");
        assert!(text.contains(r#"<S t="0" d="180000" r="2"/>"#), "{text}");
        assert!(text.contains(r#"width="1280" height="720""#), "{text}");
        assert!(text.contains(r#"frameRate="30""#), "{text}");
        assert!(text.contains(r#"contentType="audio""#), "{text}");
        assert!(text.contains(UTC_TIMING_PLACEHOLDER), "{text}");
    }

    #[test]
    fn gaps_start_a_new_timeline_run_and_end_stops_updates() {
        let video = vec![
            segment(TrackKind::Video, 1, 0, 180_000),
            segment(TrackKind::Video, 2, 360_000, 180_000),
        ];
        let mut p = presentation(&video, &[]);
        p.ended_after = Some(Duration::from_millis(6250));
        let text = mpd(&p);
        assert!(text.contains(r#"<S t="0" d="180000"/>"#), "{text}");
        assert!(text.contains(r#"<S t="360000" d="180000"/>"#), "{text}");
        assert!(!text.contains("minimumUpdatePeriod"), "{text}");
        assert!(
            text.contains(r#"mediaPresentationDuration="PT6.250S""#),
            "{text}"
        );
        assert!(!text.contains(r#"contentType="audio""#), "{text}");
    }

    #[test]
    fn tick_overlaps_fold_into_one_run() {
        let video = vec![
            segment(TrackKind::Video, 1, 63, 6001),
            segment(TrackKind::Video, 2, 6063, 6001),
            segment(TrackKind::Video, 3, 12063, 6001),
        ];
        let text = mpd(&presentation(&video, &[]));
        assert!(text.contains(r#"<S t="63" d="6000" r="1"/>"#), "{text}");
        assert!(text.contains(r#"<S t="12063" d="6001"/>"#), "{text}");
    }

    #[test]
    fn frame_rates_are_dash_values() {
        assert_eq!(frame_rate(30.0), "30");
        assert_eq!(frame_rate(29.97), "30000/1001");
        assert_eq!(frame_rate(12.5), "12500/1000");
    }
}
