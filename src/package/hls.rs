//! HLS playlists written from segment windows with `m3u8-rs`.
//!
//! It owns the text of the master playlist and of each rendition's media
//! playlist: the tags, their order and the relative URIs
//! (`{rendition}/index.m3u8`, `init-{id}.mp4`, `{sequence}.m4s`). Relative
//! URIs are what let a signed path prefix carry over to every request, so
//! nothing here may write an absolute URI or know about tokens or HTTP.

use std::sync::atomic::Ordering;

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, ExtTag, MasterPlaylist, MediaPlaylist, MediaSegment,
    Resolution, VariantStream,
};
use time::{OffsetDateTime, UtcOffset};

use super::window::{RenditionWindow, Segment, rounded_millis};

/// `EXT-X-VERSION` of every playlist: 7 allows `EXT-X-MAP` in playlists that
/// are not I-frame only, which fragmented MP4 segments need.
const HLS_VERSION: usize = 7;

/// Decimals of `EXTINF` durations.
const EXTINF_DECIMALS: usize = 3;

/// `GROUP-ID` of the audio rendition in the master playlist.
const AUDIO_GROUP: &str = "audio";

/// A video variant for the master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    /// Rendition name; its playlist is `{rendition}/index.m3u8`.
    pub rendition: String,
    /// RFC 6381 video codec string.
    pub codec: String,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames per second.
    pub frame_rate: f64,
    /// Peak segment bitrate of the video alone, in bits per second.
    pub peak_bps: u64,
    /// Average bitrate of the video alone, in bits per second.
    pub average_bps: u64,
}

/// The audio rendition shared by all variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// Rendition name; its playlist is `{rendition}/index.m3u8`.
    pub rendition: String,
    /// RFC 6381 audio codec string.
    pub codec: String,
    /// Peak segment bitrate, in bits per second.
    pub peak_bps: u64,
    /// Average bitrate, in bits per second.
    pub average_bps: u64,
    /// Channel count.
    pub channels: u16,
}

/// The media playlist of one rendition's window.
pub fn media_playlist(window: &RenditionWindow) -> String {
    let mut segments = Vec::with_capacity(window.segments().len());
    let mut previous_init = None;
    for segment in window.segments() {
        let init_changed = previous_init != Some(segment.init.id);
        segments.push(media_segment(
            segment,
            init_changed || segment.discontinuity,
        ));
        previous_init = Some(segment.init.id);
    }

    let playlist = MediaPlaylist {
        version: Some(HLS_VERSION),
        target_duration: window.target_duration(),
        media_sequence: window.media_sequence(),
        discontinuity_sequence: window.discontinuity_sequence(),
        independent_segments: true,
        end_list: window.ended(),
        segments,
        ..MediaPlaylist::default()
    };

    // m3u8-rs keeps the EXTINF precision in a process-wide setting; every
    // writer in bigfoot wants the same value, so setting it here is safe.
    m3u8_rs::WRITE_OPT_FLOAT_PRECISION.store(EXTINF_DECIMALS, Ordering::Relaxed);
    render(|out| playlist.write_to(out))
}

fn media_segment(segment: &Segment, with_map: bool) -> MediaSegment {
    // Both tags are written as plain tags, which m3u8-rs puts after
    // EXT-X-DISCONTINUITY: a new map then follows the discontinuity, as
    // Apple orders them, and the time crate formats the date (m3u8-rs's own
    // field would need chrono). Players parse them the same.
    let mut tags = Vec::with_capacity(2);
    if with_map {
        tags.push(ExtTag {
            tag: "X-MAP".to_owned(),
            rest: Some(format!("URI=\"init-{}.mp4\"", segment.init.id)),
        });
    }
    tags.push(ExtTag {
        tag: "X-PROGRAM-DATE-TIME".to_owned(),
        rest: Some(format_program_date_time(segment.program_date_time)),
    });

    MediaSegment {
        uri: format!("{}.m4s", segment.sequence),
        duration: extinf(segment),
        discontinuity: segment.discontinuity,
        unknown_tags: tags,
        ..MediaSegment::default()
    }
}

/// The segment duration in seconds, rounded to milliseconds.
fn extinf(segment: &Segment) -> f32 {
    (rounded_millis(segment.duration) as f64 / 1000.0) as f32
}

/// RFC 3339 in UTC with milliseconds and `Z`: `2024-05-01T12:00:00.000Z`.
fn format_program_date_time(at: OffsetDateTime) -> String {
    let utc = at.checked_to_offset(UtcOffset::UTC).unwrap_or(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    )
}

/// The master playlist: one `EXT-X-STREAM-INF` per video variant in the
/// given order, sharing one audio rendition when there is one. With audio
/// and no video it lists the audio playlist as the only variant.
pub fn master_playlist(variants: &[VariantInfo], audio: Option<&AudioInfo>) -> String {
    let mut playlist = MasterPlaylist {
        version: Some(HLS_VERSION),
        independent_segments: true,
        ..MasterPlaylist::default()
    };

    match (variants.is_empty(), audio) {
        (true, Some(audio)) => playlist.variants.push(audio_only_variant(audio)),
        _ => {
            playlist.alternatives.extend(audio.map(audio_rendition));
            playlist
                .variants
                .extend(variants.iter().map(|variant| video_variant(variant, audio)));
        }
    }

    render(|out| playlist.write_to(out))
}

fn audio_rendition(audio: &AudioInfo) -> AlternativeMedia {
    AlternativeMedia {
        media_type: AlternativeMediaType::Audio,
        uri: Some(playlist_uri(&audio.rendition)),
        group_id: AUDIO_GROUP.to_owned(),
        name: audio.rendition.clone(),
        default: true,
        autoselect: true,
        channels: Some(audio.channels.to_string()),
        ..AlternativeMedia::default()
    }
}

fn video_variant(variant: &VariantInfo, audio: Option<&AudioInfo>) -> VariantStream {
    let (audio_peak, audio_average) = audio.map_or((0, 0), |a| (a.peak_bps, a.average_bps));
    let codecs = match audio {
        Some(audio) => format!("{},{}", variant.codec, audio.codec),
        None => variant.codec.clone(),
    };
    let resolution = (variant.width > 0 && variant.height > 0).then_some(Resolution {
        width: u64::from(variant.width),
        height: u64::from(variant.height),
    });

    VariantStream {
        uri: playlist_uri(&variant.rendition),
        bandwidth: variant.peak_bps.saturating_add(audio_peak),
        average_bandwidth: nonzero(variant.average_bps.saturating_add(audio_average)),
        codecs: Some(codecs),
        resolution,
        frame_rate: frame_rate(variant.frame_rate),
        audio: audio.map(|_| AUDIO_GROUP.to_owned()),
        ..VariantStream::default()
    }
}

fn audio_only_variant(audio: &AudioInfo) -> VariantStream {
    VariantStream {
        uri: playlist_uri(&audio.rendition),
        bandwidth: audio.peak_bps,
        average_bandwidth: nonzero(audio.average_bps),
        codecs: Some(audio.codec.clone()),
        ..VariantStream::default()
    }
}

fn playlist_uri(rendition: &str) -> String {
    format!("{rendition}/index.m3u8")
}

fn nonzero(bps: u64) -> Option<u64> {
    (bps > 0).then_some(bps)
}

/// The frame rate rounded to three decimals; none when unknown.
fn frame_rate(fps: f64) -> Option<f64> {
    (fps.is_finite() && fps > 0.0).then(|| (fps * 1000.0).round() / 1000.0)
}

/// Runs a playlist writer into a string.
fn render(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    // Writing into a Vec<u8> cannot fail: its io::Write never returns an error.
    let _infallible = write(&mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use m3u8_rs::Playlist;

    use super::super::window::tests::avc_init;
    use super::*;

    fn at_millis(unix_millis: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_millis) * 1_000_000)
            .expect("valid timestamp")
    }

    fn parse_media(text: &str) -> MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MediaPlaylist(playlist)) => playlist,
            other => panic!("not a media playlist: {other:?}\n{text}"),
        }
    }

    fn parse_master(text: &str) -> MasterPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MasterPlaylist(playlist)) => playlist,
            other => panic!("not a master playlist: {other:?}\n{text}"),
        }
    }

    fn window_with(durations: &[f64]) -> RenditionWindow {
        let mut window = RenditionWindow::new(10, 0);
        window.set_init(avc_init(0x1F)).expect("valid init");
        let mut now = 1_700_000_000_000;
        for &secs in durations {
            now += (secs * 1000.0) as i64;
            window
                .push(Duration::from_secs_f64(secs), Bytes::new(), at_millis(now))
                .expect("pushed");
        }
        window
    }

    #[test]
    fn media_playlist_basic_fields() {
        let window = window_with(&[2.0, 2.002, 1.9995]);
        let text = media_playlist(&window);
        let playlist = parse_media(&text);

        assert_eq!(playlist.version, Some(7));
        assert_eq!(playlist.target_duration, 2);
        assert_eq!(playlist.media_sequence, 0);
        assert!(playlist.independent_segments);
        assert!(!playlist.end_list);
        assert_eq!(playlist.segments.len(), 3);

        let uris: Vec<_> = playlist.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["0.m4s", "1.m4s", "2.m4s"]);
        assert!(text.contains("#EXTINF:2.000,\n0.m4s"), "{text}");
        assert!(text.contains("#EXTINF:2.002,\n1.m4s"), "{text}");
        assert!(text.contains("#EXTINF:2.000,\n2.m4s"), "{text}");

        // The map is written once, on the first segment.
        let maps: Vec<_> = playlist.segments.iter().map(|s| s.map.clone()).collect();
        assert_eq!(maps[0].as_ref().map(|m| m.uri.as_str()), Some("init-0.mp4"));
        assert!(maps[1].is_none() && maps[2].is_none());
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
    }

    #[test]
    fn program_date_time_is_utc_with_millis() {
        let window = window_with(&[2.5]);
        let text = media_playlist(&window);
        // Pushed at 1_700_000_002_500 ms, lasting 2.5 s: starts at 1.7e12 ms.
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n"),
            "{text}"
        );
        let playlist = parse_media(&text);
        let pdt = playlist.segments[0]
            .program_date_time
            .expect("parsed program date time");
        assert_eq!(pdt.timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn program_date_time_of_a_non_utc_time_is_converted() {
        let offset = UtcOffset::from_hms(2, 0, 0).expect("valid offset");
        let local = at_millis(1_700_000_000_123).to_offset(offset);
        assert_eq!(format_program_date_time(local), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn eviction_moves_media_and_discontinuity_sequence() {
        let mut window = RenditionWindow::new(2, 50);
        window.set_init(avc_init(0x1F)).expect("valid init");
        let t = |ms: i64| at_millis(1_700_000_000_000 + ms);
        window
            .push(Duration::from_secs(2), Bytes::new(), t(2000))
            .expect("pushed");
        window.mark_discontinuity();
        window
            .push(Duration::from_secs(2), Bytes::new(), t(4000))
            .expect("pushed");
        window
            .push(Duration::from_secs(2), Bytes::new(), t(6000))
            .expect("pushed");

        let text = media_playlist(&window);
        let playlist = parse_media(&text);
        assert_eq!(playlist.media_sequence, 51);
        assert_eq!(playlist.discontinuity_sequence, 0);
        assert!(playlist.segments[0].discontinuity);
        // A map repeats after a discontinuity; the first segment has one anyway.
        assert!(playlist.segments[0].map.is_some());
        assert!(!text.contains("#EXT-X-DISCONTINUITY-SEQUENCE"), "{text}");

        window
            .push(Duration::from_secs(2), Bytes::new(), t(8000))
            .expect("pushed");
        let playlist = parse_media(&media_playlist(&window));
        assert_eq!(playlist.media_sequence, 52);
        assert_eq!(playlist.discontinuity_sequence, 1);
        assert!(playlist.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn map_follows_init_changes_and_discontinuities() {
        let mut window = RenditionWindow::new(10, 0);
        window.set_init(avc_init(0x1F)).expect("valid init");
        let t = |ms: i64| at_millis(1_700_000_000_000 + ms);
        window
            .push(Duration::from_secs(2), Bytes::new(), t(2000))
            .expect("pushed");
        window.set_init(avc_init(0x28)).expect("valid init");
        window
            .push(Duration::from_secs(2), Bytes::new(), t(4000))
            .expect("pushed");
        window
            .push(Duration::from_secs(2), Bytes::new(), t(6000))
            .expect("pushed");
        window.mark_discontinuity();
        window
            .push(Duration::from_secs(2), Bytes::new(), t(8000))
            .expect("pushed");

        let text = media_playlist(&window);
        let playlist = parse_media(&text);
        let maps: Vec<_> = playlist
            .segments
            .iter()
            .map(|s| s.map.as_ref().map(|m| m.uri.clone()))
            .collect();
        assert_eq!(
            maps,
            [
                Some("init-0.mp4".to_owned()),
                Some("init-1.mp4".to_owned()),
                None,
                Some("init-1.mp4".to_owned()),
            ]
        );
        assert!(playlist.segments[3].discontinuity);
        // Discontinuity, then the map, then the segment.
        let tag = text.find("#EXT-X-DISCONTINUITY\n").expect("tag written");
        let map = text.rfind("#EXT-X-MAP:").expect("map written");
        assert!(tag < map, "{text}");
        assert!(map < text.find("3.m4s").expect("segment written"));
    }

    #[test]
    fn ended_window_gets_endlist() {
        let mut window = window_with(&[2.0]);
        assert!(!parse_media(&media_playlist(&window)).end_list);
        window.end();
        let text = media_playlist(&window);
        assert!(parse_media(&text).end_list);
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    }

    #[test]
    fn extinf_never_rounds_above_the_target() {
        let mut window = RenditionWindow::new(10, 0);
        window.set_init(avc_init(0x1F)).expect("valid init");
        assert!(window.fix_target_duration(2));
        let now = at_millis(1_700_000_000_000);
        for secs in [2.0, 2.4994, 1.0] {
            window
                .push(Duration::from_secs_f64(secs), Bytes::new(), now)
                .expect("pushed");
        }
        let playlist = parse_media(&media_playlist(&window));
        assert_eq!(window.target_exceeded(), 0);
        for segment in &playlist.segments {
            assert!(
                (segment.duration.round() as u64) <= playlist.target_duration,
                "{} over {}",
                segment.duration,
                playlist.target_duration
            );
        }
    }

    fn variant(name: &str, peak: u64, average: u64) -> VariantInfo {
        VariantInfo {
            rendition: name.to_owned(),
            codec: "avc1.64001F".to_owned(),
            width: 1280,
            height: 720,
            frame_rate: 30_000.0 / 1001.0,
            peak_bps: peak,
            average_bps: average,
        }
    }

    fn audio() -> AudioInfo {
        AudioInfo {
            rendition: "audio".to_owned(),
            codec: "mp4a.40.2".to_owned(),
            peak_bps: 130_000,
            average_bps: 128_000,
            channels: 2,
        }
    }

    #[test]
    fn master_with_audio_sums_bandwidth_and_lists_codecs() {
        let variants = [
            variant("720p", 3_000_000, 2_500_000),
            variant("360p", 800_000, 0),
        ];
        let text = master_playlist(&variants, Some(&audio()));
        let playlist = parse_master(&text);

        assert!(playlist.independent_segments);
        assert_eq!(playlist.alternatives.len(), 1);
        let media = &playlist.alternatives[0];
        assert_eq!(media.media_type, AlternativeMediaType::Audio);
        assert_eq!(media.group_id, "audio");
        assert_eq!(media.name, "audio");
        assert!(media.default && media.autoselect);
        assert_eq!(media.channels.as_deref(), Some("2"));
        assert_eq!(media.uri.as_deref(), Some("audio/index.m3u8"));

        assert_eq!(playlist.variants.len(), 2);
        let first = &playlist.variants[0];
        assert_eq!(first.uri, "720p/index.m3u8");
        assert_eq!(first.bandwidth, 3_130_000);
        assert_eq!(first.average_bandwidth, Some(2_628_000));
        assert_eq!(first.codecs.as_deref(), Some("avc1.64001F,mp4a.40.2"));
        assert_eq!(
            first.resolution.map(|r| (r.width, r.height)),
            Some((1280, 720))
        );
        assert_eq!(first.frame_rate, Some(29.97));
        assert_eq!(first.audio.as_deref(), Some("audio"));

        // Given order is kept; the second's average is the audio's alone.
        assert_eq!(playlist.variants[1].uri, "360p/index.m3u8");
        assert_eq!(playlist.variants[1].bandwidth, 930_000);
        assert_eq!(playlist.variants[1].average_bandwidth, Some(128_000));
        assert!(text.contains("FRAME-RATE=29.97,"), "{text}");
    }

    #[test]
    fn master_without_audio_has_no_audio_group() {
        let text = master_playlist(&[variant("720p", 3_000_000, 2_500_000)], None);
        let playlist = parse_master(&text);
        assert!(playlist.alternatives.is_empty());
        let only = &playlist.variants[0];
        assert_eq!(only.bandwidth, 3_000_000);
        assert_eq!(only.codecs.as_deref(), Some("avc1.64001F"));
        assert!(only.audio.is_none());
        assert!(!text.contains("AUDIO="), "{text}");
    }

    #[test]
    fn audio_only_master_points_at_the_audio_playlist() {
        let text = master_playlist(&[], Some(&audio()));
        let playlist = parse_master(&text);
        assert!(playlist.alternatives.is_empty());
        assert_eq!(playlist.variants.len(), 1);
        let only = &playlist.variants[0];
        assert_eq!(only.uri, "audio/index.m3u8");
        assert_eq!(only.codecs.as_deref(), Some("mp4a.40.2"));
        assert_eq!(only.bandwidth, 130_000);
        assert_eq!(only.average_bandwidth, Some(128_000));
        assert!(only.resolution.is_none());
    }

    #[test]
    fn unknown_frame_rate_and_size_are_left_out() {
        let mut v = variant("src", 1_000_000, 900_000);
        v.frame_rate = f64::NAN;
        v.width = 0;
        let text = master_playlist(&[v], None);
        assert!(!text.contains("FRAME-RATE"), "{text}");
        assert!(!text.contains("RESOLUTION"), "{text}");
        assert_eq!(parse_master(&text).variants.len(), 1);
    }
}
