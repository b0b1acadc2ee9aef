//! Whole-server tests: a real `bigfoot serve` on free ports, real RTMP
//! publishers (ffmpeg, GStreamer), real HLS fetched over HTTP and checked
//! with ffprobe.
//!
//! Run them one at a time (`--test-threads=1`): each pushes live video and
//! the test machine has two cores.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Mpd, Probe, Response, ServerConfig, TEST_ORIGIN, TestPattern, assert_rendition_size,
    check_avc_codec, decode_fragment, fetch_media, get, get_ok, last_sequence, max_age,
    parse_master, parse_media, probe_fragment, publish_ffmpeg, publish_ffmpeg_keyframes,
    publish_ffmpeg_pattern, publish_gst, raw_get, rendition_of, resolve, run_bigfoot,
    wait_for_master, wait_until,
};
use m3u8_rs::{AlternativeMediaType, MasterPlaylist, MediaPlaylist, VariantStream};

/// A ladder whose top rung is skipped for a 720p (or smaller) source.
const LADDER: &str = r#"[
  { name = "720p", height = 720, video_kbps = 2500 },
  { name = "360p", height = 360, video_kbps = 800 },
  { name = "240p", height = 240, video_kbps = 400 },
]"#;
/// One frame of the 30 fps test patterns, plus rounding slack.
const FRAME_SECS: f64 = 1.0 / 30.0 + 0.002;
/// From publish to a playable master playlist.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// From the publisher leaving to `#EXT-X-ENDLIST`.
const END_TIMEOUT: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------
// Checks shared by the tests below

/// Asserts the headers every playlist and segment response carries.
fn check_headers(response: &Response, content_type: &str) {
    let url = &response.url;
    let actual = response.header("content-type").unwrap_or_default();
    assert!(
        actual.starts_with(content_type),
        "{url}: content-type {actual:?}, expected {content_type}"
    );
    let origin = response.header("access-control-allow-origin");
    assert!(
        origin == Some("*") || origin == Some(TEST_ORIGIN),
        "{url}: access-control-allow-origin {origin:?}"
    );
    assert!(
        response.header("cache-control").is_some(),
        "{url}: no cache-control header"
    );
}

fn cache_max_age(response: &Response) -> u64 {
    let value = response.header("cache-control").unwrap_or_default();
    max_age(value).unwrap_or_else(|| panic!("{}: cache-control {value:?}", response.url))
}

/// Asserts the JSON error body `{"code": ..., "message": ...}`.
fn check_error_body(what: &str, body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let code = json.get("code").and_then(|c| c.as_str());
    let message = json.get("message").and_then(|m| m.as_str());
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some(),
        "{what}: error body without code and message: {json}"
    );
    code.unwrap_or_default().to_string()
}

/// The media playlist URL of each variant (by rendition name) and of the
/// audio rendition.
struct Renditions {
    variants: BTreeMap<String, (String, VariantStream)>,
    audio_url: String,
}

fn renditions(master_url: &str, master: &MasterPlaylist) -> Renditions {
    let mut variants = BTreeMap::new();
    for variant in master.variants.iter().filter(|v| !v.is_i_frame) {
        let name = rendition_of(&variant.uri);
        let url = resolve(master_url, &variant.uri);
        let duplicate = variants.insert(name.clone(), (url, variant.clone()));
        assert!(duplicate.is_none(), "rendition {name} listed twice");
    }

    let audio: Vec<_> = master
        .alternatives
        .iter()
        .filter(|m| m.media_type == AlternativeMediaType::Audio)
        .collect();
    assert_eq!(audio.len(), 1, "one EXT-X-MEDIA audio rendition: {audio:?}");
    assert_eq!(audio[0].group_id, "audio");
    let uri = audio[0]
        .uri
        .as_deref()
        .expect("audio EXT-X-MEDIA has a URI");
    assert_eq!(rendition_of(uri), "audio");

    Renditions {
        variants,
        audio_url: resolve(master_url, uri),
    }
}

/// Parses the master playlist of a 720p push on [`LADDER`]: the 240p and
/// 360p rungs plus the source, each with checked attributes.
fn checked_ladder_master(url: &str, response: &Response, source: (u32, u32)) -> Renditions {
    let master = parse_master(&response.body).expect("master playlist");
    let listed = renditions(url, &master);
    let names: BTreeSet<_> = listed.variants.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["240p", "360p", "source"]),
        "variants"
    );
    for (name, (_, variant)) in &listed.variants {
        check_variant_attributes(name, variant, source);
    }
    listed
}

/// The size a variant must have, from its name and the source size.
fn expected_size(name: &str, source: (u32, u32)) -> (u32, u32) {
    if name == "source" {
        return source;
    }
    let height: u32 = name
        .strip_suffix('p')
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("unexpected rendition {name}"));
    let width = u32::try_from((u64::from(height) * u64::from(source.0) / u64::from(source.1)) & !1)
        .expect("width fits");
    (width, height)
}

fn check_variant_attributes(name: &str, variant: &VariantStream, source: (u32, u32)) {
    let resolution = variant
        .resolution
        .unwrap_or_else(|| panic!("{name}: no RESOLUTION"));
    let size = (
        u32::try_from(resolution.width).expect("width"),
        u32::try_from(resolution.height).expect("height"),
    );
    assert_rendition_size(name, name, size, source);

    let codecs = variant.codecs.as_deref().unwrap_or_default();
    assert!(
        codecs.contains("avc1."),
        "{name}: CODECS {codecs:?} has no avc1"
    );
    assert!(
        codecs.contains("mp4a.40.2"),
        "{name}: CODECS {codecs:?} has no mp4a.40.2"
    );
    assert!(variant.bandwidth > 0, "{name}: BANDWIDTH 0");
    let average = variant
        .average_bandwidth
        .unwrap_or_else(|| panic!("{name}: no AVERAGE-BANDWIDTH"));
    assert!(
        average > 0 && average <= variant.bandwidth,
        "{name}: AVERAGE-BANDWIDTH {average} vs BANDWIDTH {}",
        variant.bandwidth
    );
    let rate = variant.frame_rate.unwrap_or_default();
    assert!((rate - 30.0).abs() < 0.5, "{name}: FRAME-RATE {rate}");
    assert_eq!(
        variant.audio.as_deref(),
        Some("audio"),
        "{name}: AUDIO group"
    );
}

/// Asserts the structure of a media playlist: segment names follow the media
/// sequence, the first segment has a map and a date, and every duration
/// fits the target duration.
fn check_media_playlist(url: &str, playlist: &MediaPlaylist) {
    assert!(!playlist.segments.is_empty(), "{url}: no segments");
    for (i, segment) in playlist.segments.iter().enumerate() {
        let sequence = playlist.media_sequence + i as u64;
        assert_eq!(
            segment.uri,
            format!("{sequence}.m4s"),
            "{url}: segment {i} URI"
        );
        assert!(
            f64::from(segment.duration).round() <= playlist.target_duration as f64,
            "{url}: EXTINF {} exceeds EXT-X-TARGETDURATION {}",
            segment.duration,
            playlist.target_duration
        );
        if let Some(map) = &segment.map {
            let index = map
                .uri
                .strip_prefix("init-")
                .and_then(|rest| rest.strip_suffix(".mp4"));
            assert!(
                index.is_some_and(|n| n.parse::<u64>().is_ok()),
                "{url}: EXT-X-MAP URI {:?}",
                map.uri
            );
        }
    }
    let first = &playlist.segments[0];
    assert!(
        first.map.is_some(),
        "{url}: no EXT-X-MAP before the first segment"
    );
    assert!(
        first.program_date_time.is_some(),
        "{url}: no EXT-X-PROGRAM-DATE-TIME before the first segment"
    );
    let dates: Vec<_> = playlist
        .segments
        .iter()
        .filter_map(|s| s.program_date_time)
        .collect();
    assert!(dates.is_sorted(), "{url}: program date times go backwards");
}

/// One media segment, fetched and probed.
struct FetchedSegment {
    sequence: u64,
    extinf: f64,
    init: std::rc::Rc<Vec<u8>>,
    bytes: Vec<u8>,
    probe: Probe,
}

/// Fetches the init segment(s) and every listed segment of a playlist,
/// checking the response headers, and probes each segment.
fn fetch_segments(url: &str, playlist: &MediaPlaylist, content_type: &str) -> Vec<FetchedSegment> {
    let mut init = std::rc::Rc::new(Vec::new());
    let mut fetched = Vec::new();
    for (i, segment) in playlist.segments.iter().enumerate() {
        if let Some(map) = &segment.map {
            let response = get_ok(&resolve(url, &map.uri));
            check_headers(&response, content_type);
            init = std::rc::Rc::new(response.body);
        }
        let response = get_ok(&resolve(url, &segment.uri));
        check_headers(&response, content_type);
        assert!(
            cache_max_age(&response) >= 60,
            "{}: segments should be cacheable",
            response.url
        );
        let probe = probe_fragment(&init, &response.body)
            .unwrap_or_else(|e| panic!("{}: {e:#}", response.url));
        fetched.push(FetchedSegment {
            sequence: playlist.media_sequence + i as u64,
            extinf: f64::from(segment.duration),
            init: std::rc::Rc::clone(&init),
            bytes: response.body,
            probe,
        });
    }
    fetched
}

/// Asserts what every segment of a video rendition must be: H.264 at the
/// expected size, single-track, starting on a keyframe, decodable, and as
/// long as its EXTINF says.
fn check_video_segments(name: &str, segments: &[FetchedSegment], size: (u32, u32)) {
    for segment in segments {
        let what = format!("{name} segment {}", segment.sequence);
        let video = segment
            .probe
            .stream("video")
            .unwrap_or_else(|| panic!("{what}: no video stream"));
        assert_eq!(video.codec_name.as_deref(), Some("h264"), "{what}: codec");
        assert_eq!(
            (
                video.width.unwrap_or_default(),
                video.height.unwrap_or_default()
            ),
            size,
            "{what}: size differs from RESOLUTION"
        );
        assert!(
            segment.probe.stream("audio").is_none(),
            "{what}: video segments are single-track"
        );
        let first = segment.probe.packets("video").next();
        assert!(
            first.is_some_and(|p| p.is_keyframe()),
            "{what}: first video packet is not a keyframe: {first:?}"
        );
        let frames = check_extinf_and_decode(segment, "video", &what);
        let packets = segment.probe.packets("video").count() as u64;
        assert_eq!(
            frames.get("video"),
            Some(&packets),
            "{what}: decoded frames"
        );
    }
}

/// Checks that a segment's packets last as long as its `EXTINF` says, and
/// decodes it; returns the decoded frame counts per media type.
fn check_extinf_and_decode(
    segment: &FetchedSegment,
    kind: &str,
    what: &str,
) -> HashMap<String, u64> {
    let duration = segment.probe.duration(kind);
    assert!(
        (duration - segment.extinf).abs() <= 0.1,
        "{what}: EXTINF {} but the packets last {duration}",
        segment.extinf
    );
    decode_fragment(&segment.init, &segment.bytes).unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

fn check_audio_segments(segments: &[FetchedSegment]) {
    for segment in segments {
        let what = format!("audio segment {}", segment.sequence);
        let audio = segment
            .probe
            .stream("audio")
            .unwrap_or_else(|| panic!("{what}: no audio stream"));
        assert_eq!(audio.codec_name.as_deref(), Some("aac"), "{what}: codec");
        assert_eq!(audio.profile.as_deref(), Some("LC"), "{what}: AAC profile");
        assert_eq!(audio.sample_rate(), Some(48_000), "{what}: sample rate");
        assert_eq!(audio.channels, Some(2), "{what}: channels");
        assert!(
            segment.probe.stream("video").is_none(),
            "{what}: single-track"
        );
        let frames = check_extinf_and_decode(segment, "audio", &what);
        assert!(
            frames.get("audio").is_some_and(|&n| n > 0),
            "{what}: decoded {frames:?}"
        );
    }
}

/// Asserts that transcoded renditions cut segments at the same times.
fn check_alignment(renditions: &BTreeMap<String, Vec<FetchedSegment>>) {
    let mut names = renditions.keys().filter(|name| *name != "source");
    let Some(reference) = names.next() else {
        return;
    };
    let sequences =
        |name: &str| -> Vec<u64> { renditions[name].iter().map(|s| s.sequence).collect() };
    for other in names {
        assert_eq!(
            sequences(reference),
            sequences(other),
            "{reference} and {other} list different media sequence numbers"
        );
        for (a, b) in renditions[reference].iter().zip(&renditions[other]) {
            assert!(
                (a.extinf - b.extinf).abs() <= FRAME_SECS,
                "segment {}: {reference} lasts {} but {other} {}",
                a.sequence,
                a.extinf,
                b.extinf
            );
            let (start_a, start_b) = (a.probe.first_pts("video"), b.probe.first_pts("video"));
            let (Some(start_a), Some(start_b)) = (start_a, start_b) else {
                panic!("segment {}: no video timestamps", a.sequence)
            };
            assert!(
                (start_a - start_b).abs() <= FRAME_SECS,
                "segment {}: {reference} starts at {start_a} but {other} at {start_b}",
                a.sequence
            );
        }
    }
}

/// Waits for a media playlist with `#EXT-X-ENDLIST`.
fn wait_for_endlist(url: &str) -> MediaPlaylist {
    wait_until(&format!("#EXT-X-ENDLIST in {url}"), END_TIMEOUT, || {
        let playlist = fetch_media(url)?;
        anyhow::ensure!(playlist.end_list, "no ENDLIST yet");
        Ok(playlist)
    })
}

/// Waits for a media playlist listing at least `count` segments.
fn wait_for_segments(url: &str, count: usize) -> MediaPlaylist {
    wait_until(&format!("{count} segments in {url}"), READY_TIMEOUT, || {
        let playlist = fetch_media(url)?;
        anyhow::ensure!(
            playlist.segments.len() >= count,
            "{} so far",
            playlist.segments.len()
        );
        Ok(playlist)
    })
}

// ---------------------------------------------------------------------------
// Tests

/// ffmpeg pushes 12 s of 720p30 with sound; the whole ladder (minus the
/// 720p rung, at the source height) plus passthrough and audio must be
/// correct HLS, with every segment checked by ffprobe.
#[test]
fn ffmpeg_publish_serves_checked_ladder() {
    const SOURCE: (u32, u32) = (1280, 720);
    let server = ServerConfig::default().ladder(LADDER).start();
    let master_url = server.master_url("cam1");
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 12.0, SOURCE.0, SOURCE.1);

    let master_response = wait_for_master(&master_url, READY_TIMEOUT);
    check_headers(&master_response, common::PLAYLIST_CONTENT_TYPE);
    let listed = checked_ladder_master(&master_url, &master_response, SOURCE);

    let mut urls: BTreeMap<String, String> = listed
        .variants
        .iter()
        .map(|(name, (url, _))| (name.clone(), url.clone()))
        .collect();
    urls.insert("audio".to_string(), listed.audio_url.clone());

    let mut live_targets = BTreeMap::new();
    for (name, url) in &urls {
        let playlist = wait_for_segments(url, 1);
        assert!(
            publisher.try_wait().is_some() || !playlist.end_list,
            "{name}: ENDLIST while the publisher is live"
        );
        let response = get_ok(url);
        check_headers(&response, common::PLAYLIST_CONTENT_TYPE);
        assert!(
            cache_max_age(&response) <= 5,
            "{url}: live playlists must not be cached long"
        );
        let target = playlist.target_duration;
        assert!(
            (2..=4).contains(&target),
            "{name}: EXT-X-TARGETDURATION {target}"
        );
        live_targets.insert(name.clone(), target);
    }

    publisher.wait_success(Duration::from_secs(40));

    let mut fetched = BTreeMap::new();
    for (name, url) in &urls {
        let playlist = wait_for_endlist(url);
        check_media_playlist(url, &playlist);
        assert_eq!(
            playlist.target_duration, live_targets[name],
            "{name}: EXT-X-TARGETDURATION changed"
        );
        let total: f64 = playlist
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .sum();
        assert!(
            (9.5..=12.6).contains(&total),
            "{name}: {total} s listed for a 12 s push"
        );

        let content_type = if name == "audio" {
            "audio/mp4"
        } else {
            "video/mp4"
        };
        fetched.insert(name.clone(), fetch_segments(url, &playlist, content_type));
    }

    let audio = fetched
        .remove("audio")
        .expect("fetched the audio rendition");
    check_audio_segments(&audio);
    for (name, segments) in &fetched {
        let (_, variant) = &listed.variants[name];
        let resolution = variant.resolution.expect("checked above");
        let size = (
            u32::try_from(resolution.width).expect("width"),
            u32::try_from(resolution.height).expect("height"),
        );
        check_video_segments(name, segments, size);
        let video = segments[0].probe.stream("video").expect("checked above");
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        check_avc_codec(codecs, video).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        if name != "source" {
            let profile = video.profile.as_deref().unwrap_or_default();
            assert!(
                matches!(profile, "High" | "Main"),
                "{name}: transcoded video must be browser-safe Main or High, got {profile:?}"
            );
            assert_eq!(
                video.pix_fmt.as_deref(),
                Some("yuv420p"),
                "{name}: pixel format"
            );
        }
    }
    check_alignment(&fetched);

    assert!(
        !server.logs().contains("secretkey1"),
        "the stream key must never be logged"
    );
}

/// A player that asks as soon as the publisher starts gets the master
/// playlist (codecs, sizes, bitrates, frame rate) before the first segment
/// is complete, and a media playlist asked for then is held until its first
/// segment exists instead of being answered empty. 4 s segments leave the
/// master a clear lead on two busy cores.
#[test]
fn master_playlist_comes_before_the_first_segment() {
    let listed = check_master_before_first_segment(ServerConfig::default().ladder(LADDER));
    let bandwidth = |name: &str| listed.variants[name].1.bandwidth;
    assert!(
        bandwidth("source") > bandwidth("360p") && bandwidth("360p") > bandwidth("240p"),
        "BANDWIDTH follows the ladder: {:?}",
        listed
            .variants
            .values()
            .map(|(_, v)| v.bandwidth)
            .collect::<Vec<_>>()
    );
}

/// The same without a ladder: the source's bitrate so far stands in for
/// the passthrough's until it has a segment.
#[test]
fn passthrough_master_playlist_comes_before_the_first_segment() {
    let listed = check_master_before_first_segment(ServerConfig::passthrough_only());
    let names: BTreeSet<_> = listed.variants.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["source"]), "variants");
}

/// Publishes 720p with 4 s segments, checks the master playlist's variants
/// and that it came before the first segment of any rendition ended, and
/// that each media playlist, asked for at once, lists a segment.
fn check_master_before_first_segment(config: ServerConfig) -> Renditions {
    const SOURCE: (u32, u32) = (1280, 720);
    let server = ServerConfig {
        segment_secs: 4.0,
        ..config
    }
    .start();
    let master_url = server.master_url("cam1");
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 9.0, SOURCE.0, SOURCE.1);

    let master_response = wait_for_master(&master_url, READY_TIMEOUT);
    let master_at = unix_millis(SystemTime::now());
    let master = parse_master(&master_response.body).expect("master playlist");
    let listed = renditions(&master_url, &master);
    for (name, (_, variant)) in &listed.variants {
        check_variant_attributes(name, variant, SOURCE);
    }

    let mut urls: Vec<String> = listed.variants.values().map(|(u, _)| u.clone()).collect();
    urls.push(listed.audio_url.clone());
    let mut first_end = None;
    for url in &urls {
        let response = get_ok(url);
        let playlist = parse_media(&response.body).expect("media playlist");
        let first = playlist
            .segments
            .first()
            .unwrap_or_else(|| panic!("{url} was answered before its first segment existed"));
        let start = first
            .program_date_time
            .unwrap_or_else(|| panic!("{url}: no EXT-X-PROGRAM-DATE-TIME"));
        let end = start.timestamp_millis() + (f64::from(first.duration) * 1000.0) as i64;
        first_end = Some(first_end.map_or(end, |e: i64| e.min(end)));
    }
    let first_end = first_end.expect("renditions");
    assert!(
        master_at < first_end,
        "the master playlist came {} ms after the first segment ended",
        master_at - first_end
    );
    publisher.wait_success(Duration::from_secs(40));
    listed
}

fn unix_millis(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// GStreamer's `rtmp2sink` publishes 640x360: the 720p and 360p rungs are
/// skipped, and the first segment of each rendition decodes at its size.
#[test]
fn gstreamer_publish_serves_decodable_renditions() {
    const SOURCE: (u32, u32) = (640, 360);
    let server = ServerConfig::default().ladder(LADDER).start();
    let master_url = server.master_url("cam2");
    let mut publisher = publish_gst(&server.rtmp_url("secretkey2"), 8.0, SOURCE.0, SOURCE.1);

    let master_response = wait_for_master(&master_url, READY_TIMEOUT);
    let master = parse_master(&master_response.body).expect("master playlist");
    let listed = renditions(&master_url, &master);
    let names: BTreeSet<_> = listed.variants.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["240p", "source"]), "variants");

    for (name, (url, variant)) in &listed.variants {
        check_variant_attributes(name, variant, SOURCE);
        let mut playlist = wait_for_segments(url, 1);
        playlist.segments.truncate(1);
        let segments = fetch_segments(url, &playlist, "video/mp4");
        check_video_segments(name, &segments, expected_size(name, SOURCE));
        let video = segments[0].probe.stream("video").expect("checked above");
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        check_avc_codec(codecs, video).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }

    let mut audio = wait_for_segments(&listed.audio_url, 1);
    audio.segments.truncate(1);
    check_audio_segments(&fetch_segments(&listed.audio_url, &audio, "audio/mp4"));

    publisher.wait_success(Duration::from_secs(30));
    wait_for_endlist(&listed.audio_url);
}

/// A publish with a key that is not configured is refused at once, and
/// nothing is served under that name.
#[test]
fn unknown_stream_key_is_refused() {
    let mut server = ServerConfig::passthrough_only().start();
    let started = Instant::now();
    let mut publisher = publish_ffmpeg(&server.rtmp_url("wrongkey"), 15.0, 320, 240);

    let status = publisher
        .wait_timeout(Duration::from_secs(10))
        .expect("ffmpeg publishing to an unknown key is still running after 10 s");
    assert!(!status.success(), "publish to an unknown key succeeded");
    assert!(started.elapsed() < Duration::from_secs(10));

    for stream in ["wrongkey", "nosuchstream"] {
        let response = get(&server.master_url(stream)).expect("GET master");
        assert_eq!(response.status, 404, "{stream}: {:?}", response.text());
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type:?}"
        );
        let code = check_error_body(&response.url, &response.body);
        assert_eq!(code, "STREAM_NOT_FOUND");
    }
    server.assert_running();
}

/// Killing one of two publishers ends that stream's playlists within a few
/// seconds while the other stream keeps going.
#[test]
fn publisher_disconnect_ends_only_its_stream() {
    let server = ServerConfig::passthrough_only().start();
    let mut first = publish_ffmpeg(&server.rtmp_url("secretkey1"), 20.0, 640, 360);
    let mut second = publish_ffmpeg(&server.rtmp_url("secretkey2"), 20.0, 640, 360);
    wait_for_master(&server.master_url("cam1"), READY_TIMEOUT);
    wait_for_master(&server.master_url("cam2"), READY_TIMEOUT);
    wait_for_segments(&server.media_url("cam1", "source"), 2);

    for path in [
        "/live/cam1/source/999999.m4s",
        "/live/cam1/nosuch/index.m3u8",
    ] {
        let (status, body) = raw_get(server.http_addr, path).expect("GET");
        assert_eq!(status, 404, "{path}");
        check_error_body(path, &body);
    }

    first.kill();
    for rendition in ["source", "audio"] {
        let ended = wait_for_endlist(&server.media_url("cam1", rendition));
        check_media_playlist(rendition, &ended);
    }

    let cam2 = server.media_url("cam2", "source");
    let before = fetch_media(&cam2).expect("cam2 playlist");
    assert!(!before.end_list, "cam2 ended with cam1");
    let before = last_sequence(&before).expect("cam2 has segments");
    let after = wait_until("cam2 to keep advancing", Duration::from_secs(8), || {
        let playlist = fetch_media(&cam2)?;
        let last = last_sequence(&playlist).unwrap_or_default();
        anyhow::ensure!(last >= before + 2, "last segment {last}, was {before}");
        Ok(playlist)
    });
    assert!(!after.end_list, "cam2 has ENDLIST while live");
    assert!(
        second.try_wait().is_none(),
        "cam2's publisher stopped: {}",
        second.output()
    );
}

/// A source whose keyframes come 0.6 to 3.9 s apart, with 2 s segments:
/// the transcoded rung keeps 2 s segments on the forced grid, and the
/// passthrough's segments, cut on the source's keyframes, stay within a
/// target duration that never changes.
#[test]
fn irregular_source_keyframes_stay_within_the_target_duration() {
    const KEYFRAMES: &str = "0,2.2,5.9,6.5,8.0,11.9";
    let server = ServerConfig::default()
        .ladder(r#"[{ name = "180p", height = 180, video_kbps = 300 }]"#)
        .start();
    let pattern = TestPattern::video_only(14.0, 640, 360);
    let mut publisher =
        publish_ffmpeg_keyframes(&server.rtmp_url("secretkey1"), &pattern, Some(KEYFRAMES));
    wait_for_master(&server.master_url("cam1"), READY_TIMEOUT);

    let source_url = server.media_url("cam1", "source");
    let rung_url = server.media_url("cam1", "180p");
    let live_source = wait_for_segments(&source_url, 1).target_duration;
    let live_rung = wait_for_segments(&rung_url, 1).target_duration;
    assert_eq!(live_rung, 2, "180p: EXT-X-TARGETDURATION");
    assert!(
        (4..=5).contains(&live_source),
        "source: EXT-X-TARGETDURATION {live_source}"
    );

    publisher.wait_success(Duration::from_secs(40));
    for (name, url, target, size) in [
        ("source", &source_url, live_source, (640, 360)),
        ("180p", &rung_url, live_rung, (320, 180)),
    ] {
        let playlist = wait_for_endlist(url);
        check_media_playlist(url, &playlist);
        assert_eq!(playlist.target_duration, target, "{name}: target changed");
        let segments = fetch_segments(url, &playlist, "video/mp4");
        check_video_segments(name, &segments, size);
        let longest = segments.iter().map(|s| s.extinf).fold(0.0, f64::max);
        if name == "source" {
            assert!(
                longest > 3.5,
                "source: no segment spans the 3.7 s keyframe gap ({longest} s)"
            );
        } else {
            assert!(longest <= 2.0 + FRAME_SECS, "180p: a {longest} s segment");
        }
    }
    assert!(
        !server.logs().contains("longer than the playlist's target"),
        "a segment exceeded its target duration"
    );
}

/// A publisher that comes back within the grace period continues its
/// stream: sequence numbers go on, a discontinuity marks the join, and the
/// playlists are live again.
#[test]
fn reconnect_within_grace_continues_stream() {
    let server = ServerConfig::passthrough_only()
        .reconnect_grace_secs(30)
        .start();
    let url = server.rtmp_url("secretkey1");
    let mut first = publish_ffmpeg(&url, 6.0, 640, 360);
    wait_for_master(&server.master_url("cam1"), READY_TIMEOUT);
    first.wait_success(Duration::from_secs(30));

    let renditions = ["source", "audio"];
    let mut last_before = BTreeMap::new();
    for rendition in renditions {
        let ended = wait_for_endlist(&server.media_url("cam1", rendition));
        let last = last_sequence(&ended).expect("segments before the reconnect");
        last_before.insert(rendition, last);
    }

    let mut second = publish_ffmpeg(&url, 8.0, 640, 360);
    for rendition in renditions {
        let media_url = server.media_url("cam1", rendition);
        let before = last_before[rendition];
        let playlist = wait_until("segments after the reconnect", READY_TIMEOUT, || {
            let playlist = fetch_media(&media_url)?;
            let last = last_sequence(&playlist).unwrap_or_default();
            anyhow::ensure!(
                last > before,
                "last segment {last}, {before} before the reconnect"
            );
            Ok(playlist)
        });
        check_media_playlist(&media_url, &playlist);
        assert!(!playlist.end_list, "{rendition}: ENDLIST while live again");

        let joined = playlist
            .segments
            .iter()
            .zip(playlist.media_sequence..)
            .find(|(_, sequence)| *sequence > before);
        let Some((segment, sequence)) = joined else {
            panic!("{rendition}: no segment after {before}")
        };
        assert!(
            segment.discontinuity,
            "{rendition}: segment {sequence}, the first after the reconnect, has no \
             #EXT-X-DISCONTINUITY"
        );
        assert!(
            playlist.media_sequence <= before,
            "{rendition}: segments from before the reconnect are gone from a 10-segment window"
        );
    }

    second.wait_success(Duration::from_secs(30));
    wait_for_endlist(&server.media_url("cam1", "source"));
}

/// A second publisher on a live key takes the stream over (the default
/// policy): the first is disconnected, the stream goes on in the same
/// playlists with a discontinuity, and it never ends in between.
#[test]
fn second_publisher_takes_over_the_stream() {
    let server = ServerConfig::passthrough_only().start();
    let url = server.rtmp_url("secretkey1");
    let mut first = publish_ffmpeg(&url, 30.0, 640, 360);
    let media_url = server.media_url("cam1", "source");
    let before = wait_until(
        "two segments from the first publisher",
        READY_TIMEOUT,
        || {
            let playlist = fetch_media(&media_url)?;
            anyhow::ensure!(
                playlist.segments.len() >= 2,
                "{} segments",
                playlist.segments.len()
            );
            Ok(last_sequence(&playlist).unwrap_or_default())
        },
    );

    let mut second = publish_ffmpeg(&url, 8.0, 640, 360);
    let status = first
        .wait_timeout(Duration::from_secs(15))
        .expect("the first publisher is disconnected by the takeover");
    assert!(
        !status.success(),
        "the first publisher's push should fail, got {status}"
    );

    let playlist = wait_until("segments from the second publisher", READY_TIMEOUT, || {
        let playlist = fetch_media(&media_url)?;
        let last = last_sequence(&playlist).unwrap_or_default();
        anyhow::ensure!(
            last > before + 1,
            "last segment {last}, {before} before the takeover"
        );
        Ok(playlist)
    });
    assert!(
        !playlist.end_list,
        "the stream must not end during a takeover"
    );
    let discontinuities = playlist.segments.iter().filter(|s| s.discontinuity).count();
    assert_eq!(
        discontinuities, 1,
        "one discontinuity marks the takeover: {playlist:?}"
    );
    second.wait_success(Duration::from_secs(30));
    assert!(
        server.logs().contains("publisher taken over"),
        "the takeover is logged"
    );
}

/// `check` and `serve` reject a broken config, naming the key and the file.
#[test]
fn broken_config_names_key_and_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let good = ServerConfig::default().to_toml(&dir.path().join("data"));
    let good_path = dir.path().join("good.toml");
    std::fs::write(&good_path, &good).expect("write config");
    let good_path = good_path.to_string_lossy().into_owned();
    let output = run_bigfoot(&["check", "--config", &good_path], Duration::from_secs(30));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "check of a good config failed: {printed}"
    );
    assert!(
        printed.contains("auto picks: x264") && printed.contains("encoder in use: x264"),
        "check does not report the backend it will use: {printed}"
    );

    let cases = [
        (
            "segment_secs = 2.0",
            "segment_secs = \"two\"",
            "transcode.segment_secs",
        ),
        (
            "segment_secs = 2.0",
            "segment_secs = 0.1",
            "transcode.segment_secs",
        ),
        ("[server]\n", "[server]\nbogus_option = 1\n", "bogus_option"),
    ];
    for (i, (from, to, key)) in cases.into_iter().enumerate() {
        let bad = good.replacen(from, to, 1);
        assert_ne!(bad, good, "case {i}: the test config has no {from:?}");
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, bad).expect("write config");
        let path = path.to_string_lossy().into_owned();

        for command in ["check", "serve"] {
            let output = run_bigfoot(&[command, "--config", &path], Duration::from_secs(30));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{command} accepted `{to}`");
            assert!(
                stderr.contains(key),
                "{command} `{to}`: stderr does not name {key}: {stderr}"
            );
            assert!(
                stderr.contains(&path),
                "{command} `{to}`: stderr does not name {path}"
            );
        }
    }
}

/// Malformed, unknown and traversal paths get a 400 or 404 with a JSON code,
/// and never a file.
#[test]
fn bad_paths_get_json_errors() {
    let server = ServerConfig::passthrough_only().start();
    let long_name = "a".repeat(300);
    let long_path = format!("/live/{long_name}/master.m3u8");
    let paths = [
        "/live/../etc/passwd",
        "/live/%2e%2e/etc/passwd",
        "/live/cam1/source/../../../../etc/passwd",
        "/live/DEMO/master.m3u8",
        "/live/cam1/360p/999999.m4s",
        "/live/cam1/master.m3u8",
        "/live/cam1/source/init-0.mp4",
        "/no/such/path",
        &long_path,
    ];
    for path in paths {
        let (status, body) = raw_get(server.http_addr, path).expect("GET");
        assert!(status == 400 || status == 404, "{path}: status {status}");
        check_error_body(path, &body);
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path}: served a file"
        );
    }
}

/// SIGTERM while a stream is live: the server exits 0 within 5 s and ends
/// the stream's playlists (seen in the on-disk mirror).
#[test]
fn sigterm_ends_streams_and_exits_cleanly() {
    let mut server = ServerConfig::passthrough_only()
        .mirror_to_disk(true)
        .start();
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 20.0, 640, 360);
    wait_for_master(&server.master_url("cam1"), READY_TIMEOUT);
    let live = wait_for_segments(&server.media_url("cam1", "source"), 1);
    assert!(!live.end_list);

    let (status, took) = server.stop_and_wait();
    assert!(status.success(), "exit status {status} after SIGTERM");
    assert!(took <= Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(
        publisher.wait_timeout(Duration::from_secs(10)).is_some(),
        "the publisher's connection stayed open after the server exited"
    );

    let mirrored = server.data_dir().join("live/cam1/source/index.m3u8");
    let text = std::fs::read(&mirrored)
        .unwrap_or_else(|e| panic!("read mirrored playlist {}: {e}", mirrored.display()));
    let playlist = parse_media(&text).expect("mirrored playlist");
    assert!(
        playlist.end_list,
        "no #EXT-X-ENDLIST in {} after SIGTERM",
        mirrored.display()
    );
}

/// A publisher that leaves before its first segment is complete: the
/// playlist and manifest requests held for that segment are answered with
/// the segment its end flushed and the end of the stream, never with an
/// empty playlist or a 404; a rendition the stream does not have is
/// refused at once instead of being held.
#[test]
fn publisher_leaving_before_the_first_segment_answers_held_requests() {
    const SOURCE: (u32, u32) = (640, 360);
    let server = ServerConfig::default().ladder(LADDER).start();
    let master_url = server.master_url("cam1");
    // Shorter than one 2 s segment: the only segment is cut by the end.
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 1.8, SOURCE.0, SOURCE.1);

    let master = parse_master(&wait_for_master(&master_url, READY_TIMEOUT).body).expect("master");
    let listed = renditions(&master_url, &master);
    let mut urls: Vec<String> = listed.variants.values().map(|(u, _)| u.clone()).collect();
    urls.push(listed.audio_url.clone());
    let held: Vec<_> = urls
        .into_iter()
        .map(|url| std::thread::spawn(move || (get(&url), url)))
        .collect();
    let mpd_url = server.mpd_url("cam1");
    let mpd = std::thread::spawn(move || get(&mpd_url));

    let asked = Instant::now();
    let unknown = get(&server.media_url("cam1", "nosuch")).expect("unknown rendition");
    assert_eq!(unknown.status, 404, "unknown rendition");
    assert_eq!(
        check_error_body("unknown rendition", &unknown.body),
        "RENDITION_NOT_FOUND"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "an unknown rendition was held for {:?}",
        asked.elapsed()
    );

    let mut answers = Vec::new();
    for handle in held {
        let (response, url) = handle.join().expect("request thread");
        let response = response.unwrap_or_else(|e| panic!("{url}: {e:#}"));
        assert_eq!(response.status, 200, "{url}: {}", response.text());
        let playlist = parse_media(&response.body).expect("media playlist");
        assert!(
            !playlist.segments.is_empty(),
            "{url}: held answer without a segment"
        );
        answers.push((url, playlist));
    }
    publisher.wait_success(Duration::from_secs(20));
    for (url, held) in answers {
        let ended = wait_for_endlist(&url);
        assert_eq!(
            ended.target_duration, held.target_duration,
            "{url}: the target duration changed"
        );
        assert_eq!(ended.segments.len(), 1, "{url}: one segment for 1.8 s");
        let segment = &ended.segments[0];
        assert_eq!(
            segment.uri, held.segments[0].uri,
            "{url}: the segment changed"
        );
        assert!(
            f64::from(segment.duration).round() as u64 <= ended.target_duration,
            "{url}: segment of {} s over the target duration {}",
            segment.duration,
            ended.target_duration
        );
    }
    let mpd = mpd.join().expect("request thread").expect("manifest");
    assert_eq!(
        mpd.status,
        200,
        "manifest: {}",
        String::from_utf8_lossy(&mpd.body)
    );
    let mpd = Mpd::parse(&mpd.text()).expect("scan the MPD");
    let mut ids = BTreeSet::new();
    for (_, _, representation) in mpd.representations() {
        let segments = representation.segments().expect("segment timeline");
        assert!(!segments.is_empty(), "{}: no segment", representation.id());
        ids.insert(representation.id().to_string());
    }
    let expected: BTreeSet<String> = listed
        .variants
        .keys()
        .cloned()
        .chain(["audio".to_string()])
        .collect();
    assert_eq!(ids, expected, "representations of the held manifest");
}

/// Between a publisher joining and its pipeline starting (a video-only
/// source: bigfoot first waits for a second track), playlist requests are
/// already held for the new session; none is refused as an unknown
/// rendition or a stream that is not live.
#[test]
fn requests_between_publish_and_pipeline_start_are_held() {
    let server = ServerConfig::passthrough_only().start();
    let urls = [
        server.media_url("cam1", "source"),
        server.master_url("cam1"),
    ];
    let mut publisher = publish_ffmpeg_pattern(
        &server.rtmp_url("secretkey1"),
        &TestPattern::video_only(8.0, 640, 360),
    );
    for url in urls {
        let body = wait_until(&format!("200 from {url}"), READY_TIMEOUT, || {
            let response = get(&url)?;
            match (response.status, response.error_code().as_deref()) {
                (200, _) => Ok(response.body),
                // Before the publisher has joined.
                (404, Some("STREAM_NOT_FOUND")) => anyhow::bail!("not live yet"),
                (status, code) => {
                    panic!("{url} answered {status} {code:?} while the stream started")
                }
            }
        });
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("#EXTM3U"), "{url}: {text}");
    }
    let playlist = fetch_media(&server.media_url("cam1", "source")).expect("playlist");
    assert!(
        !playlist.segments.is_empty(),
        "a held playlist without segments"
    );
    publisher.wait_success(Duration::from_secs(30));
}
