//! Whole-server tests of the DASH manifest, the server clock and live
//! thumbnails: a real `bigfoot serve` on free ports, real RTMP publishers,
//! the MPD scanned and cross-checked against the HLS playlists that name
//! the same CMAF files.
//!
//! Run them one at a time (`--test-threads=1`): each pushes live video and
//! the test machine has two cores.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use common::{
    DashSegment, Mpd, MpdPeriod, Probe, Representation, Response, Server, ServerConfig,
    TestPattern, decode_jpeg, fetch_media, fetch_mpd, get, get_ok, get_with_host,
    iso_duration_secs, max_age, now_millis, parse_master, probe_fragment, probe_url,
    publish_ffmpeg, publish_ffmpeg_pattern, rendition_of, resolve, utc_millis, wait_for_master,
    wait_for_mpd, wait_until,
};
use m3u8_rs::{AlternativeMediaType, MasterPlaylist, MediaPlaylist};

/// From publish to a playable manifest.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// From the publisher leaving to the MPD saying the presentation ended.
const END_TIMEOUT: Duration = Duration::from_secs(8);
/// The package window the contract's `PT12S` is computed from.
const WINDOW_SEGMENTS: u32 = 6;
const SEGMENT_SECS: f64 = 2.0;
/// How far an MPD segment's wall-clock time may be from the HLS
/// `EXT-X-PROGRAM-DATE-TIME` of the same file.
const CLOCK_SLACK_MS: i64 = 100;
/// `UTCTiming` scheme for a plain ISO 8601 time over HTTP.
const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";

// ---------------------------------------------------------------------------
// Checks shared by the tests below

/// A config with the default 6-segment window, so that
/// `timeShiftBufferDepth` must be `PT12S`.
fn six_segment_window(config: ServerConfig) -> ServerConfig {
    ServerConfig {
        window_segments: WINDOW_SEGMENTS,
        ..config
    }
}

fn content_type(response: &Response) -> &str {
    response.header("content-type").unwrap_or_default()
}

/// Asserts a JSON error answer with `status` and `code`.
fn check_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status, response.error_code().as_deref()),
        (status, Some(code)),
        "GET {}: body {:?}",
        response.url,
        response.text()
    );
    assert!(
        content_type(response).starts_with("application/json"),
        "{}: error content-type {:?}",
        response.url,
        content_type(response)
    );
}

/// The MPD-level attributes every live MPD carries; returns
/// `availabilityStartTime`.
fn check_live_mpd_attributes(url: &str, mpd: &Mpd) -> String {
    let attrs = &mpd.attrs;
    assert_eq!(attrs.get("type"), Some("dynamic"), "{url}: MPD@type");
    let ast = attrs.require("availabilityStartTime").expect("AST");
    let publish = attrs.require("publishTime").expect("publishTime");
    let (ast_ms, publish_ms) = (
        utc_millis(ast).unwrap_or_else(|e| panic!("{url}: {e:#}")),
        utc_millis(publish).unwrap_or_else(|e| panic!("{url}: {e:#}")),
    );
    assert!(
        publish_ms >= ast_ms,
        "{url}: publishTime {publish} before availabilityStartTime {ast}"
    );

    let duration = |name: &str| {
        let text = attrs
            .get(name)
            .unwrap_or_else(|| panic!("{url}: no MPD@{name} while live: {attrs:?}"));
        iso_duration_secs(text).unwrap_or_else(|e| panic!("{url}: MPD@{name}: {e:#}"))
    };
    assert!(duration("minimumUpdatePeriod") > 0.0, "minimumUpdatePeriod");
    assert!(
        attrs.get("mediaPresentationDuration").is_none(),
        "{url}: mediaPresentationDuration while live: {attrs:?}"
    );
    let depth = duration("timeShiftBufferDepth");
    let window = f64::from(WINDOW_SEGMENTS) * SEGMENT_SECS;
    assert!(
        (depth - window).abs() < 1e-6,
        "{url}: timeShiftBufferDepth {:?}, expected PT{window}S",
        attrs.get("timeShiftBufferDepth")
    );
    assert!(duration("suggestedPresentationDelay") > 0.0);
    assert!(
        duration("maxSegmentDuration") >= SEGMENT_SECS,
        "{url}: maxSegmentDuration {:?}",
        attrs.get("maxSegmentDuration")
    );
    ast.to_string()
}

/// Timeline sanity of one representation: positive durations, no overlap,
/// at most the window's worth of segments, and no segment longer than
/// `maxSegmentDuration`.
fn check_timeline(mpd: &Mpd, representation: &Representation) {
    let id = representation.id();
    let segments = representation.segments().expect("segments");
    let timescale = representation.timescale().expect("timescale");
    assert!(timescale > 0, "{id}: timescale 0");
    let max_segment = mpd
        .attrs
        .get("maxSegmentDuration")
        .map(|d| iso_duration_secs(d).expect("maxSegmentDuration"));

    for pair in segments.windows(2) {
        assert!(
            pair[1].t >= pair[0].t + pair[0].d,
            "{id}: segment {} starts at {} inside segment {} ({} + {})",
            pair[1].number,
            pair[1].t,
            pair[0].number,
            pair[0].t,
            pair[0].d
        );
    }
    for segment in &segments {
        assert!(segment.d > 0, "{id}: segment {} has d=0", segment.number);
        if let Some(max) = max_segment {
            let secs = segment.d as f64 / timescale as f64;
            assert!(
                secs <= max + 1e-3,
                "{id}: segment {} is {secs} s, maxSegmentDuration {max}",
                segment.number
            );
        }
    }

    let total: u64 = segments.iter().map(|s| s.d).sum();
    let total = total as f64 / timescale as f64;
    let window = f64::from(WINDOW_SEGMENTS) * SEGMENT_SECS;
    assert!(
        segments.len() <= WINDOW_SEGMENTS as usize && total <= window + 0.5,
        "{id}: {} segments, {total} s listed for a {window} s window",
        segments.len()
    );
}

/// The HLS view of one media playlist: sequence number -> (segment URL,
/// init URL, program date-time in ms).
fn hls_segments(media_url: &str, playlist: &MediaPlaylist) -> BTreeMap<u64, HlsSegment> {
    let mut init = None;
    let mut segments = BTreeMap::new();
    for (segment, sequence) in playlist.segments.iter().zip(playlist.media_sequence..) {
        if let Some(map) = &segment.map {
            init = Some(resolve(media_url, &map.uri));
        }
        let init = init
            .clone()
            .unwrap_or_else(|| panic!("{media_url}: segment {sequence} has no EXT-X-MAP"));
        segments.insert(
            sequence,
            HlsSegment {
                url: resolve(media_url, &segment.uri),
                init,
                date_ms: segment
                    .program_date_time
                    .as_ref()
                    .map(|date| date.timestamp_millis()),
            },
        );
    }
    segments
}

#[derive(Debug)]
struct HlsSegment {
    url: String,
    init: String,
    date_ms: Option<i64>,
}

/// Checks that the MPD's segments of `representation` (in `period`) name
/// the same files as the HLS playlist, with the same init segment and the
/// same wall-clock time. Returns how many segments the two share.
fn check_same_files(
    mpd_url: &str,
    mpd: &Mpd,
    period: &MpdPeriod,
    representation: &Representation,
    media_url: &str,
    hls: &BTreeMap<u64, HlsSegment>,
) -> usize {
    let id = representation.id();
    let ast_ms = utc_millis(mpd.attrs.require("availabilityStartTime").expect("AST"))
        .expect("AST is a UTC time");
    let period_start_ms = (period.start_secs().expect("Period@start") * 1000.0).round() as i64;
    let timescale = representation.timescale().expect("timescale") as f64;
    let offset = representation.presentation_time_offset().expect("PTO") as f64;
    let init = resolve(mpd_url, &representation.init_uri().expect("init URI"));

    let mut shared = 0;
    let mut dated = 0;
    for segment in representation.segments().expect("segments") {
        let Some(listed) = hls.get(&segment.number) else {
            continue;
        };
        shared += 1;
        let url = resolve(
            mpd_url,
            &representation.media_uri(segment.number).expect("media"),
        );
        assert_eq!(url, listed.url, "{id}: segment {}", segment.number);
        assert_eq!(
            init, listed.init,
            "{id}: init of segment {} (MPD vs {media_url})",
            segment.number
        );
        if let Some(date_ms) = listed.date_ms {
            dated += 1;
            let media_ms = ((segment.t as f64 - offset) / timescale * 1000.0).round() as i64;
            let mpd_ms = ast_ms + period_start_ms + media_ms;
            assert!(
                (mpd_ms - date_ms).abs() <= CLOCK_SLACK_MS,
                "{id}: segment {} starts at {mpd_ms} ms by the MPD (AST + Period@start + \
                 (t - presentationTimeOffset) / timescale) but at {date_ms} ms by \
                 EXT-X-PROGRAM-DATE-TIME",
                segment.number
            );
        }
    }
    assert!(
        shared == 0 || dated > 0,
        "{id}: no shared segment has an EXT-X-PROGRAM-DATE-TIME in {media_url}"
    );
    shared
}

/// Fetches the MPD, every rendition's media playlist, and the MPD again,
/// until both MPD fetches list the same segments (no segment was added in
/// between). Returns the MPD and the playlists by rendition.
fn stable_snapshot(
    server: &Server,
    stream: &str,
    min_segments: usize,
) -> (Mpd, BTreeMap<String, MediaPlaylist>) {
    let mpd_url = server.mpd_url(stream);
    wait_until("a stable MPD and playlists", READY_TIMEOUT, || {
        let before = fetch_mpd(&mpd_url)?;
        let mut playlists = BTreeMap::new();
        let mut timelines = Vec::new();
        for (_, _, representation) in before.representations() {
            let segments = representation.segments()?;
            ensure!(
                segments.len() >= min_segments,
                "{}: {} segments",
                representation.id(),
                segments.len()
            );
            timelines.push(segments);
            let id = representation.id().to_string();
            let playlist = fetch_media(&server.media_url(stream, &id))?;
            playlists.insert(id, playlist);
        }
        let after = fetch_mpd(&mpd_url)?;
        let again: Vec<Vec<DashSegment>> = after
            .representations()
            .map(|(_, _, r)| r.segments())
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            again == timelines,
            "the MPD changed while reading playlists"
        );
        Ok((before, playlists))
    })
}

/// The variants of a master playlist by rendition name.
fn variants_by_name(master: &MasterPlaylist) -> BTreeMap<String, &m3u8_rs::VariantStream> {
    master
        .variants
        .iter()
        .filter(|v| !v.is_i_frame)
        .map(|v| (rendition_of(&v.uri), v))
        .collect()
}

/// Polls the thumbnail until it answers 200; every answer on the way must
/// be a documented "not yet".
fn wait_for_thumbnail(url: &str) -> Response {
    wait_until(&format!("200 from {url}"), READY_TIMEOUT, || {
        let response = get(url)?;
        let code = response.error_code();
        match (response.status, code.as_deref()) {
            (200, _) => return Ok(response),
            (404, Some("STREAM_NOT_FOUND" | "THUMBNAIL_NOT_AVAILABLE"))
            | (503, Some("STREAM_STARTING")) => {}
            (status, _) => panic!("{url} answered {status}: {:?}", response.text()),
        }
        bail!("{} {:?}", response.status, response.text())
    })
}

/// Checks a thumbnail response: JPEG headers, a short cache lifetime, and a
/// picture of `size` that decodes.
fn check_thumbnail(response: &Response, size: (u32, u32), max_cache_secs: u64) {
    let url = &response.url;
    assert_eq!(response.status, 200, "{url}");
    assert!(
        content_type(response).starts_with("image/jpeg"),
        "{url}: content-type {:?}",
        content_type(response)
    );
    let cache = response.header("cache-control").unwrap_or_default();
    let age = max_age(cache).unwrap_or_else(|| panic!("{url}: cache-control {cache:?}"));
    assert!(
        age <= max_cache_secs,
        "{url}: cache-control {cache:?} outlives the thumbnail interval"
    );
    let picture = decode_jpeg(&response.body).unwrap_or_else(|e| panic!("{url}: {e:#}"));
    assert_eq!(picture.codec_name.as_deref(), Some("mjpeg"), "{url}");
    assert_eq!(
        (picture.width, picture.height),
        (Some(size.0), Some(size.1))
    );
}

// ---------------------------------------------------------------------------
// Tests

/// The MPD and the HLS playlists of a live 720p stream name the same files
/// (segments and init segments) at the same wall-clock times, describe the
/// same renditions, and the MPD's live attributes and clock are right.
#[test]
fn dash_and_hls_reference_identical_files() {
    const SOURCE: (u32, u32) = (1280, 720);
    let server = six_segment_window(ServerConfig::default()).start();
    let mpd_url = server.mpd_url("cam1");
    let unknown = get(&server.mpd_url("nosuchstream")).expect("GET");
    check_error(&unknown, 404, "STREAM_NOT_FOUND");
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 12.0, SOURCE.0, SOURCE.1);

    // The first answer once the publish registers is held until every
    // representation has its first segment, then lists them all.
    let starting = wait_until("cam1 to register", READY_TIMEOUT, || {
        let response = get(&mpd_url)?;
        ensure!(response.status != 404, "{}", response.text());
        Ok(response)
    });
    assert_eq!(starting.status, 200, "{}", starting.text());
    let ids: BTreeSet<String> = Mpd::parse(&starting.text())
        .expect("MPD")
        .representations()
        .map(|(_, _, r)| r.id().to_string())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["240p", "360p", "source", "audio"].map(String::from)),
        "the first MPD"
    );

    let (first, first_mpd) = wait_for_mpd(&mpd_url, READY_TIMEOUT);
    assert!(
        content_type(&first).starts_with(common::MPD_CONTENT_TYPE),
        "MPD content-type {:?}",
        content_type(&first)
    );
    for (_, _, representation) in first_mpd.representations() {
        let segments = representation.segments().expect("segments");
        assert!(
            !segments.is_empty(),
            "{}: the first 200 MPD has an empty SegmentTimeline:\n{}",
            representation.id(),
            first.text()
        );
    }

    let master_url = server.master_url("cam1");
    let master = parse_master(&wait_for_master(&master_url, READY_TIMEOUT).body).expect("master");
    let variants = variants_by_name(&master);
    let (mpd, playlists) = stable_snapshot(&server, "cam1", 3);
    let ast = check_live_mpd_attributes(&mpd_url, &mpd);
    assert_eq!(mpd.periods.len(), 1, "one publish, one Period");
    let period = &mpd.periods[0];

    // The same renditions, with the same attributes.
    let mut video_ids = BTreeSet::new();
    let mut audio_ids = BTreeSet::new();
    for set in &period.adaptation_sets {
        let ids = set.representations.iter().map(|r| r.id().to_string());
        match set.attrs.get("contentType") {
            Some("video") => video_ids.extend(ids),
            Some("audio") => audio_ids.extend(ids),
            other => panic!("AdaptationSet contentType {other:?}"),
        }
    }
    let variant_names: BTreeSet<String> = variants.keys().cloned().collect();
    assert_eq!(
        video_ids, variant_names,
        "video Representations vs variants"
    );
    assert_eq!(audio_ids, BTreeSet::from(["audio".to_string()]));
    for (name, variant) in &variants {
        let representation = period.representation(name).expect("listed above");
        let attrs = &representation.attrs;
        let resolution = variant.resolution.expect("RESOLUTION");
        let size = (
            attrs.number::<u64>("width").expect("width"),
            attrs.number::<u64>("height").expect("height"),
        );
        assert_eq!(size, (resolution.width, resolution.height), "{name}: size");
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        let video_codec = codecs.split(',').find(|c| !c.starts_with("mp4a"));
        assert_eq!(
            attrs.get("codecs"),
            video_codec,
            "{name}: codecs vs {codecs}"
        );
        let rate: f64 = attrs.number("frameRate").expect("frameRate");
        assert!(
            (rate - variant.frame_rate.unwrap_or_default()).abs() < 0.01,
            "{name}: frameRate {rate} vs FRAME-RATE {:?}",
            variant.frame_rate
        );
        assert!(attrs.number::<u64>("bandwidth").expect("bandwidth") > 0);
    }
    let audio = period.representation("audio").expect("audio");
    let any_codecs = variants.values().next().and_then(|v| v.codecs.as_deref());
    let audio_codec = any_codecs.and_then(|c| c.split(',').find(|c| c.starts_with("mp4a")));
    assert_eq!(audio.attrs.get("codecs"), audio_codec, "audio codecs");
    assert_eq!(audio.attrs.get("audioSamplingRate"), Some("48000"));
    let channels = master
        .alternatives
        .iter()
        .find(|m| m.media_type == AlternativeMediaType::Audio)
        .and_then(|m| m.channels.clone());
    let configured = audio
        .audio_channels
        .as_ref()
        .expect("AudioChannelConfiguration");
    assert_eq!(configured.get("value"), channels.as_deref(), "channels");

    // The same files, at the same times.
    for (_, _, representation) in mpd.representations() {
        check_timeline(&mpd, representation);
        let id = representation.id();
        let media_url = server.media_url("cam1", id);
        let playlist = &playlists[id];
        let hls = hls_segments(&media_url, playlist);
        let shared = check_same_files(&mpd_url, &mpd, period, representation, &media_url, &hls);
        let numbers: Vec<u64> = representation
            .segments()
            .expect("segments")
            .iter()
            .map(|s| s.number)
            .collect();
        let (first, last) = (numbers[0], numbers[numbers.len() - 1]);
        let hls_first = playlist.media_sequence;
        let hls_last = *hls.keys().last().expect("HLS segments");
        assert!(
            shared >= 2 && first.abs_diff(hls_first) <= 1 && last.abs_diff(hls_last) <= 1,
            "{id}: MPD lists {first}..={last}, HLS {hls_first}..={hls_last}"
        );

        // One segment and the init fetched by the MPD's URLs: the same bytes
        // as by the playlist's, and the media time the timeline says.
        let segment = representation.segments().expect("segments")[numbers.len() - 1];
        let segment = if hls.contains_key(&segment.number) {
            segment
        } else {
            representation.segments().expect("segments")[numbers.len() - 2]
        };
        let listed = &hls[&segment.number];
        let by_mpd = |uri: String| get_ok(&resolve(&mpd_url, &uri)).body;
        let init = by_mpd(representation.init_uri().expect("init"));
        let media = by_mpd(representation.media_uri(segment.number).expect("media"));
        assert!(init == get_ok(&listed.init).body, "{id}: init bytes differ");
        assert!(
            media == get_ok(&listed.url).body,
            "{id}: segment bytes differ"
        );

        let kind = if id == "audio" { "audio" } else { "video" };
        let probe = probe_fragment(&init, &media).unwrap_or_else(|e| panic!("{id}: {e:#}"));
        let first_pts = probe.first_pts(kind).expect("packets");
        let timescale = representation.timescale().expect("timescale") as f64;
        let offset = representation.presentation_time_offset().expect("PTO") as f64;
        let timeline_secs = (segment.t as f64 - offset) / timescale;
        assert!(
            (first_pts - timeline_secs).abs() <= 0.1,
            "{id}: segment {} starts at {first_pts} s in the media, {timeline_secs} s by S@t",
            segment.number
        );
    }

    // The clock a DASH player syncs to.
    assert_eq!(mpd.utc_timings.len(), 1, "one UTCTiming");
    let timing = &mpd.utc_timings[0];
    assert_eq!(timing.get("schemeIdUri"), Some(UTC_TIMING_SCHEME));
    let time_url = format!("http://{}/time", server.http_addr);
    assert_eq!(
        timing.get("value"),
        Some(time_url.as_str()),
        "UTCTiming@value"
    );
    let time = get_ok(&time_url);
    assert!(
        content_type(&time).starts_with("text/plain"),
        "/time content-type {:?}",
        content_type(&time)
    );
    let server_ms = utc_millis(time.text().trim()).expect("/time body");
    let skew = (server_ms - now_millis()).abs();
    assert!(skew <= 5_000, "/time is {skew} ms off the local clock");

    let other_host = get_with_host(&mpd_url, "cdn.example.test:8443").expect("GET");
    let other_mpd = Mpd::parse(&other_host.text()).expect("MPD");
    assert_eq!(
        other_mpd.utc_timings[0].get("value"),
        Some("http://cdn.example.test:8443/time"),
        "UTCTiming must follow the Host header"
    );

    // ffprobe's DASH demuxer sees every representation at its size.
    let probe = probe_url(&mpd_url).unwrap_or_else(|e| panic!("ffprobe {mpd_url}: {e:#}"));
    let mut probed: Vec<(u64, u64)> = probe
        .streams
        .iter()
        .filter(|s| s.codec_type == "video")
        .map(|s| {
            (
                u64::from(s.width.unwrap_or(0)),
                u64::from(s.height.unwrap_or(0)),
            )
        })
        .collect();
    let mut expected: Vec<(u64, u64)> = variants
        .values()
        .map(|v| v.resolution.expect("RESOLUTION"))
        .map(|r| (r.width, r.height))
        .collect();
    probed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(probed, expected, "ffprobe video streams of the MPD");
    let probed_audio = probe.streams.iter().filter(|s| s.codec_type == "audio");
    assert_eq!(probed_audio.count(), 1, "ffprobe audio streams of the MPD");

    let again = fetch_mpd(&mpd_url).expect("MPD");
    assert!(
        publisher.try_wait().is_none(),
        "the publisher ended before the live checks were done"
    );
    assert_eq!(
        again.attrs.get("availabilityStartTime"),
        Some(ast.as_str()),
        "availabilityStartTime changed while live"
    );
    publisher.wait_success(Duration::from_secs(40));
}

/// The MPD says when a publish ended, and a republish within the grace
/// period adds a Period whose segment numbers continue, with the same
/// availability start time.
#[test]
fn dash_signals_end_and_new_period_on_republish() {
    let server = six_segment_window(ServerConfig::passthrough_only())
        .reconnect_grace_secs(30)
        .start();
    let mpd_url = server.mpd_url("cam1");
    let rtmp_url = server.rtmp_url("secretkey1");
    let mut first = publish_ffmpeg(&rtmp_url, 6.0, 640, 360);

    let (_, live) = wait_for_mpd(&mpd_url, READY_TIMEOUT);
    let ast = check_live_mpd_attributes(&mpd_url, &live);
    first.wait_success(Duration::from_secs(30));

    let ended = wait_until("the MPD to end", END_TIMEOUT, || {
        let mpd = fetch_mpd(&mpd_url)?;
        ensure!(
            mpd.attrs.get("mediaPresentationDuration").is_some()
                && mpd.attrs.get("minimumUpdatePeriod").is_none(),
            "MPD attributes {:?}",
            mpd.attrs
        );
        Ok(mpd)
    });
    assert_eq!(
        ended.attrs.get("availabilityStartTime"),
        Some(ast.as_str()),
        "AST changed at the end"
    );
    let duration = iso_duration_secs(ended.attrs.get("mediaPresentationDuration").expect("mPD"))
        .expect("mediaPresentationDuration");
    let mut content_end: f64 = 0.0;
    for (period, _, representation) in ended.representations() {
        let last = *representation
            .segments()
            .expect("segments")
            .last()
            .expect("segments");
        let timescale = representation.timescale().expect("timescale") as f64;
        let offset = representation.presentation_time_offset().expect("PTO") as f64;
        let end = period.start_secs().expect("start") + (last.t + last.d) as f64 / timescale
            - offset / timescale;
        content_end = content_end.max(end);
    }
    assert!(
        (duration - content_end).abs() <= 0.25 && (4.0..=8.0).contains(&duration),
        "mediaPresentationDuration {duration} s for a 6 s push whose segments end at \
         {content_end} s"
    );
    let old_ids: Vec<u64> = ended
        .periods
        .iter()
        .map(|p| p.attrs.number("id").expect("numeric Period@id"))
        .collect();
    let old_last_id = *old_ids.last().expect("a Period");
    let mut old_last_number = BTreeMap::new();
    for (_, _, representation) in ended.representations() {
        let last = representation
            .segments()
            .expect("segments")
            .last()
            .map(|s| s.number);
        old_last_number.insert(representation.id().to_string(), last.expect("segments"));
    }

    let mut second = publish_ffmpeg(&rtmp_url, 6.0, 640, 360);
    let (mpd, playlists) = wait_until("a new Period", READY_TIMEOUT, || {
        let mpd = fetch_mpd(&mpd_url)?;
        let Some(period) = mpd.periods.last() else {
            bail!("no Period")
        };
        ensure!(
            period.attrs.number::<u64>("id")? > old_last_id,
            "last Period id {:?}",
            period.attrs.get("id")
        );
        for set in &period.adaptation_sets {
            for representation in &set.representations {
                ensure!(representation.segments()?.len() >= 2, "segments");
            }
        }
        let mut playlists = BTreeMap::new();
        for id in old_last_number.keys() {
            playlists.insert(id.clone(), fetch_media(&server.media_url("cam1", id))?);
        }
        Ok((mpd, playlists))
    });
    check_live_mpd_attributes(&mpd_url, &mpd);
    assert_eq!(
        mpd.attrs.get("availabilityStartTime"),
        Some(ast.as_str()),
        "AST changed across the republish"
    );
    let ids: Vec<u64> = mpd
        .periods
        .iter()
        .map(|p| p.attrs.number("id").expect("numeric Period@id"))
        .collect();
    assert!(
        ids.len() >= 2 && ids.windows(2).all(|w| w[0] < w[1]),
        "Period ids {ids:?}, before the republish {old_ids:?}"
    );

    let new_period = mpd.periods.last().expect("checked above");
    let new_start = new_period.start_secs().expect("start");
    for (id, old_last) in &old_last_number {
        let mut numbers = Vec::new();
        let mut previous_end: f64 = 0.0;
        for period in &mpd.periods {
            let Some(representation) = period.representation(id) else {
                continue;
            };
            let segments = representation.segments().expect("segments");
            let timescale = representation.timescale().expect("timescale") as f64;
            let offset = representation.presentation_time_offset().expect("PTO") as f64;
            let start = period.start_secs().expect("start");
            let media_start = (segments[0].t as f64 - offset) / timescale;
            assert!(
                (0.0..SEGMENT_SECS).contains(&media_start),
                "{id}: Period {:?} starts its media {media_start} s after Period@start",
                period.attrs.get("id")
            );
            assert!(
                start + media_start >= previous_end - 0.05,
                "{id}: Period {:?} starts at {start} s, before the previous one ends at \
                 {previous_end} s",
                period.attrs.get("id")
            );
            let last = segments.last().expect("segments");
            previous_end = start + (last.t + last.d) as f64 / timescale - offset / timescale;
            numbers.extend(segments.iter().map(|s| s.number));

            let media_url = server.media_url("cam1", id);
            let hls = hls_segments(&media_url, &playlists[id]);
            check_same_files(&mpd_url, &mpd, period, representation, &media_url, &hls);
        }
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{id}: segment numbers across Periods {numbers:?}"
        );
        let first_new = new_period
            .representation(id)
            .and_then(|r| r.segments().ok())
            .and_then(|s| s.first().map(|s| s.number))
            .unwrap_or_else(|| panic!("{id}: not in the new Period"));
        assert!(
            first_new > *old_last,
            "{id}: the new Period starts at number {first_new}, the old one ended at {old_last}"
        );
    }
    assert!(new_start > 0.0, "the new Period starts at {new_start} s");

    second.wait_success(Duration::from_secs(30));
}

/// The thumbnail of a live 720p stream is a 320x180 JPEG that changes every
/// `interval_secs` (2 s here), not more often.
#[test]
fn thumbnails_update_while_live() {
    let config =
        ServerConfig::default().ladder(r#"[{ name = "240p", height = 240, video_kbps = 400 }]"#);
    check_thumbnails_change(&config, 2);
}

/// Without a ladder only the keyframes a thumbnail is due for are decoded,
/// one at a time: with a keyframe every 2 s and a thumbnail every 3 s, the
/// thumbnail still changes every 2 to 4 s.
#[test]
fn passthrough_thumbnails_follow_their_interval() {
    check_thumbnails_change(&ServerConfig::passthrough_only(), 3);
}

/// Publishes 720p and watches the thumbnail change for three intervals and
/// a half. The decoder gives out a picture when the next one arrives, so
/// the first thumbnail can take up to two intervals.
fn check_thumbnails_change(config: &ServerConfig, interval_secs: u64) {
    let extra = format!("[thumbnails]\ninterval_secs = {interval_secs}.0\n");
    let server = Server::start_with_extra_toml(config, &extra);
    let url = server.thumbnail_url("cam1");
    let seconds = 8.0 + 6.0 * interval_secs as f64;
    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), seconds, 1280, 720);

    let first = wait_for_thumbnail(&url);
    check_thumbnail(&first, (320, 180), interval_secs);

    let started = Instant::now();
    let mut changes = vec![Duration::ZERO];
    let mut current = first.body;
    while started.elapsed() < Duration::from_millis(interval_secs * 3_500) {
        thread::sleep(Duration::from_millis(250));
        let response = get_ok(&url);
        if response.body != current {
            check_thumbnail(&response, (320, 180), interval_secs);
            changes.push(started.elapsed());
            current = response.body;
        }
    }
    assert!(
        publisher.try_wait().is_none(),
        "the publisher ended while thumbnails were watched"
    );
    let gaps: Vec<f64> = changes
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let interval = interval_secs as f64;
    assert!(
        gaps.len() >= 2,
        "the thumbnail changed {} times in {:?} (changes at {changes:?})",
        gaps.len(),
        started.elapsed()
    );
    assert!(
        gaps[1..]
            .iter()
            .all(|g| (interval * 0.5..=interval + 1.5).contains(g)),
        "changes every {gaps:?} s, expected about every {interval} s"
    );

    let missing = get(&server.thumbnail_url("nosuchstream")).expect("GET");
    assert_eq!(missing.status, 404, "{:?}", missing.text());
    assert!(missing.error_code().is_some(), "{:?}", missing.text());
    publisher.wait_success(Duration::from_secs(40));
}

/// An audio-only and a video-only publisher: the master playlist and the
/// MPD list only the tracks that exist, and only the video stream has a
/// thumbnail (at the configured width).
#[test]
fn audio_only_and_video_only_streams() {
    const THUMBNAIL_WIDTH: u32 = 256;
    let server = Server::start_with_extra_toml(
        &six_segment_window(ServerConfig::passthrough_only()),
        &format!("[thumbnails]\nwidth = {THUMBNAIL_WIDTH}\n"),
    );
    let mut audio_only = publish_ffmpeg_pattern(
        &server.rtmp_url("secretkey1"),
        &TestPattern::audio_only(10.0),
    );
    let mut video_only = publish_ffmpeg_pattern(
        &server.rtmp_url("secretkey2"),
        &TestPattern::video_only(10.0, 1280, 720),
    );

    // Audio only.
    let master = parse_master(&wait_for_master(&server.master_url("cam1"), READY_TIMEOUT).body)
        .expect("master");
    assert_eq!(master.variants.len(), 1, "audio-only variants: {master:?}");
    let variant = &master.variants[0];
    assert_eq!(
        variant.codecs.as_deref(),
        Some("mp4a.40.2"),
        "audio-only CODECS"
    );
    assert!(variant.resolution.is_none(), "audio-only RESOLUTION");
    let media_url = resolve(&server.master_url("cam1"), &variant.uri);
    let playlist = fetch_media(&media_url).expect("audio-only media playlist");
    assert!(!playlist.segments.is_empty(), "{media_url}: no segments");

    let mpd_url = server.mpd_url("cam1");
    let mpd = wait_for_single_kind_mpd(&mpd_url, "audio");
    let ids: Vec<_> = mpd.representations().map(|(_, _, r)| r.id()).collect();
    assert_eq!(ids, ["audio"], "audio-only Representations");
    let probe = probe_url(&mpd_url).unwrap_or_else(|e| panic!("ffprobe {mpd_url}: {e:#}"));
    assert_eq!(
        stream_kinds(&probe),
        ["audio"],
        "ffprobe streams of the audio-only MPD"
    );
    assert_eq!(probe.streams[0].sample_rate(), Some(48_000));

    // Video only.
    let master_url = server.master_url("cam2");
    let master = parse_master(&wait_for_master(&master_url, READY_TIMEOUT).body).expect("master");
    let audio_media: Vec<_> = master
        .alternatives
        .iter()
        .filter(|m| m.media_type == AlternativeMediaType::Audio)
        .collect();
    assert!(
        audio_media.is_empty(),
        "video-only EXT-X-MEDIA audio: {audio_media:?}"
    );
    assert_eq!(master.variants.len(), 1, "video-only variants: {master:?}");
    let variant = &master.variants[0];
    let codecs = variant.codecs.as_deref().unwrap_or_default();
    assert!(
        codecs.starts_with("avc1.") && !codecs.contains("mp4a"),
        "video-only CODECS {codecs:?}"
    );
    assert!(
        variant.audio.is_none(),
        "video-only AUDIO group {:?}",
        variant.audio
    );
    let no_audio = get(&server.media_url("cam2", "audio")).expect("GET");
    assert_eq!(no_audio.status, 404, "video-only audio playlist");

    let mpd_url = server.mpd_url("cam2");
    let mpd = wait_for_single_kind_mpd(&mpd_url, "video");
    let source = mpd.periods[0].representation("source").expect("source");
    assert_eq!(
        (source.attrs.get("width"), source.attrs.get("height")),
        (Some("1280"), Some("720"))
    );
    let probe = probe_url(&mpd_url).unwrap_or_else(|e| panic!("ffprobe {mpd_url}: {e:#}"));
    assert_eq!(
        stream_kinds(&probe),
        ["video"],
        "ffprobe streams of the video-only MPD"
    );

    // Thumbnails: the video stream has one, the audio stream never will.
    let thumbnail = wait_for_thumbnail(&server.thumbnail_url("cam2"));
    check_thumbnail(&thumbnail, (THUMBNAIL_WIDTH, THUMBNAIL_WIDTH * 9 / 16), 5);
    let none = get(&server.thumbnail_url("cam1")).expect("GET");
    check_error(&none, 404, "THUMBNAIL_NOT_AVAILABLE");

    audio_only.wait_success(Duration::from_secs(30));
    video_only.wait_success(Duration::from_secs(30));
}

/// Waits for the live MPD at `mpd_url`, checks its live attributes, and
/// asserts that its first Period has one AdaptationSet, of `content_type`.
fn wait_for_single_kind_mpd(mpd_url: &str, content_type: &str) -> Mpd {
    let (_, mpd) = wait_for_mpd(mpd_url, READY_TIMEOUT);
    check_live_mpd_attributes(mpd_url, &mpd);
    let kinds: Vec<_> = mpd.periods[0]
        .adaptation_sets
        .iter()
        .map(|s| s.attrs.get("contentType").unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [content_type],
        "{mpd_url}: {content_type}-only AdaptationSets"
    );
    mpd
}

/// The codec type of each stream ffprobe found.
fn stream_kinds(probe: &Probe) -> Vec<&str> {
    probe
        .streams
        .iter()
        .map(|s| s.codec_type.as_str())
        .collect()
}

/// The MPD scan and the time parsers on a fixed document: `r` expands,
/// `t` carries on from the previous entry, numbers follow `startNumber`.
#[test]
fn mpd_scan_reads_timelines_and_times() {
    let text = r#"<?xml version="1.0"?>
<!-- a comment with <tags> -->
<MPD type="dynamic" availabilityStartTime="2026-12-03T18:34:15.631Z"
     timeShiftBufferDepth="PT1M2.5S">
  <Period id="3" start="PT16.392S">
    <AdaptationSet contentType="video">
      <Representation id="360p" width="640">
        <SegmentTemplate timescale="3000" startNumber="7"
            initialization="$RepresentationID$/init-1.mp4" media="360p/$Number$.m4s">
          <SegmentTimeline><S t="63" d="6000" r="1"/><S d="3000"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="x" value="http://a.test/time?x=1&amp;y=2"/>
</MPD>"#;
    let mpd = Mpd::parse(text).expect("scan");
    let period = &mpd.periods[0];
    assert_eq!(period.start_secs().expect("start"), 16.392);
    let representation = period.representation("360p").expect("360p");
    let segments = representation.segments().expect("segments");
    let expanded: Vec<_> = segments.iter().map(|s| (s.number, s.t, s.d)).collect();
    assert_eq!(expanded, [(7, 63, 6000), (8, 6063, 6000), (9, 12063, 3000)]);
    assert_eq!(representation.init_uri().expect("init"), "360p/init-1.mp4");
    assert_eq!(representation.media_uri(9).expect("media"), "360p/9.m4s");
    assert_eq!(
        mpd.utc_timings[0].get("value"),
        Some("http://a.test/time?x=1&y=2")
    );

    assert_eq!(iso_duration_secs("PT1M2.5S").expect("duration"), 62.5);
    assert_eq!(iso_duration_secs("PT12S").expect("duration"), 12.0);
    assert!(iso_duration_secs("12S").is_err());
    assert_eq!(
        utc_millis("2026-12-03T18:34:15.631Z").expect("time"),
        1_796_322_855_631
    );
    assert_eq!(utc_millis("1970-01-01T00:00:01Z").expect("time"), 1_000);
    assert!(utc_millis("2026-12-03T18:34:15").is_err());

    assert!(
        Mpd::parse("<MPD><Period></MPD>").is_err(),
        "unbalanced tags"
    );
    assert!(
        Mpd::parse("<MPD><S d=\"1\"/></MPD>").is_err(),
        "S outside a timeline"
    );
}
