//! Real players against a real server: hls.js and dash.js in headless
//! Chromium (driven by `tests/browser/play.mjs`), and ffmpeg's DASH demuxer.
//!
//! The browser side needs Node, `tests/browser/node_modules` and Debian's
//! `/usr/bin/chromium`; `scripts/setup` installs them. When one is missing
//! the tests fail and say so: they never skip.
//!
//! Run them one at a time (`--test-threads=1`): each pushes live video,
//! transcodes it and decodes it again in a browser on two cores.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::{
    Publisher, Server, ServerConfig, assert_rendition_size, get, parse_master, publish_ffmpeg,
    read_in_thread, rendition_of, require_browser_tooling, run_play_mjs, wait_for_master,
    wait_timeout, wait_until,
};
use serde::Deserialize;

/// The publisher's picture.
const SOURCE: (u32, u32) = (1280, 720);
/// Longer than any test needs; the publisher is killed when a test ends.
const PUBLISH_SECS: f64 = 90.0;
/// The video renditions of `ServerConfig::default()` for a 720p source.
const RENDITIONS: [&str; 3] = ["240p", "360p", "source"];
/// From publish to a manifest that lists every rendition.
const READY_TIMEOUT: Duration = Duration::from_secs(40);
/// Seconds of playback the first check asks for.
const PLAY_SECS: u32 = 4;
/// The overall deadline `play.mjs` gives itself.
const PLAYER_TIMEOUT_SECS: u64 = 90;
/// ffprobe reads the MPD, then an init and a media segment of each
/// representation.
const FFPROBE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// What play.mjs reports

/// The JSON line `play.mjs` prints (the fields these tests assert on).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlayReport {
    player_version: Option<String>,
    browser: Option<String>,
    startup_ms: Option<u64>,
    advanced_secs: f64,
    played: bool,
    levels: Vec<Level>,
    level_results: Vec<LevelResult>,
    fatal_errors: Vec<serde_json::Value>,
    errors: Vec<serde_json::Value>,
    console_errors: Vec<String>,
    page_errors: Vec<String>,
    http_errors: Vec<serde_json::Value>,
    /// How often each playlist or MPD URL was fetched.
    manifest_fetches: BTreeMap<String, u32>,
    screenshot: Option<String>,
    failure: Option<String>,
    harness_error: Option<String>,
    elapsed_ms: u64,
}

/// One level (hls.js) or video representation (dash.js) as the player
/// lists it.
#[derive(Debug, Deserialize)]
struct Level {
    name: String,
    width: u32,
    height: u32,
    bitrate: u64,
}

/// What happened when one level was forced.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LevelResult {
    name: String,
    width: u32,
    height: u32,
    ok: bool,
    switch_ms: Option<u64>,
    advanced_secs: f64,
    video_width: u32,
    video_height: u32,
    failure: Option<String>,
}

// ---------------------------------------------------------------------------
// Running play.mjs

/// Where a test leaves its screenshot, kept after the run for a human to
/// look at.
fn screenshot_path(player: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("players");
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir.join(format!("{player}.png"))
}

/// Runs `play.mjs` on `url` and parses its report. Panics with its output
/// when the harness itself broke.
fn play(player: &str, url: &str, screenshot: &Path) -> (PlayReport, serde_json::Value) {
    let raw = run_play_mjs(player, url, PLAY_SECS, PLAYER_TIMEOUT_SECS, screenshot);
    let report = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("play.mjs report does not parse ({e}): {raw}"));
    (report, raw)
}

// ---------------------------------------------------------------------------
// Checks

/// Everything a player run must show: no fatal error, playback, every
/// rendition listed at its size, and each one playing when forced.
fn check_report(player: &str, report: &PlayReport, raw: &serde_json::Value) {
    let context = format!(
        "{player} {} in {}: failure {:?}\nerrors: {:?}\nconsole errors: {:?}\n\
         page errors: {:?}\nHTTP errors: {:?}\nfull report: {raw}",
        report.player_version.as_deref().unwrap_or("?"),
        report.browser.as_deref().unwrap_or("?"),
        report.failure,
        report.errors,
        report.console_errors,
        report.page_errors,
        report.http_errors,
    );
    assert!(report.harness_error.is_none(), "harness error; {context}");
    assert!(
        report.fatal_errors.is_empty(),
        "fatal player errors {:?}; {context}",
        report.fatal_errors
    );
    assert!(
        report.played && report.advanced_secs >= f64::from(PLAY_SECS),
        "currentTime advanced {:.2} s, wanted {PLAY_SECS} s (startup {:?} ms); {context}",
        report.advanced_secs,
        report.startup_ms
    );

    let refreshes = report.manifest_fetches.values().max().copied().unwrap_or(0);
    assert!(
        refreshes >= 2,
        "{player} never reloaded a playlist or the MPD, so it cannot follow the live \
         edge: fetches {:?}; {context}",
        report.manifest_fetches
    );

    let listed: BTreeMap<&str, &Level> = report
        .levels
        .iter()
        .map(|level| (level.name.as_str(), level))
        .collect();
    let names: Vec<&str> = listed.keys().copied().collect();
    assert_eq!(names, RENDITIONS, "levels {:?}; {context}", report.levels);
    for level in listed.values() {
        assert_rendition_size(player, &level.name, (level.width, level.height), SOURCE);
        assert!(
            level.bitrate > 0,
            "{player}: level {level:?} has no bitrate"
        );
    }

    assert_eq!(
        report.level_results.len(),
        report.levels.len(),
        "not every level was forced; {context}"
    );
    for result in &report.level_results {
        assert!(
            result.ok,
            "{player}: forcing {} ({}x{}) did not keep playing at that size: {:?} \
             (video {}x{}, advanced {:.2} s); {context}",
            result.name,
            result.width,
            result.height,
            result.failure,
            result.video_width,
            result.video_height,
            result.advanced_secs
        );
        assert_eq!(
            (result.video_width, result.video_height),
            (result.width, result.height),
            "{player}: <video> size while {} plays; {context}",
            result.name
        );
        assert!(
            result.switch_ms.is_some(),
            "{player}: {} never on screen",
            result.name
        );
    }

    let screenshot = report.screenshot.as_deref().expect("a screenshot path");
    let png = std::fs::read(screenshot).unwrap_or_else(|e| panic!("read {screenshot}: {e}"));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{screenshot} is not a screenshot of a playing video ({} bytes)",
        png.len()
    );
    eprintln!(
        "{player}: played {:.1} s after {:?} ms, {} levels forced, {} ms in all; \
         screenshot {screenshot}; non-fatal errors {:?}",
        report.advanced_secs,
        report.startup_ms,
        report.level_results.len(),
        report.elapsed_ms,
        report.errors,
    );
}

// ---------------------------------------------------------------------------
// Server set-up

/// A server with the default cheap ladder (360p, 240p) plus passthrough,
/// publishing a live 720p test pattern to `cam1`.
fn live_server() -> (Server, Publisher) {
    let server = ServerConfig::default().start();
    let publisher = publish_ffmpeg(
        &server.rtmp_url("secretkey1"),
        PUBLISH_SECS,
        SOURCE.0,
        SOURCE.1,
    );
    (server, publisher)
}

/// Waits until the master playlist lists every video rendition.
fn wait_for_hls(server: &Server) -> String {
    let url = server.master_url("cam1");
    wait_for_master(&url, READY_TIMEOUT);
    wait_until(
        "every rendition in the master playlist",
        READY_TIMEOUT,
        || {
            let response = get(&url)?;
            let master = parse_master(&response.body)?;
            let mut names: Vec<String> = master
                .variants
                .iter()
                .filter(|variant| !variant.is_i_frame)
                .map(|variant| rendition_of(&variant.uri))
                .collect();
            names.sort();
            ensure!(names == RENDITIONS, "variants {names:?}");
            Ok(())
        },
    );
    url
}

/// Waits until the MPD answers 200 and names every video rendition as a
/// representation.
fn wait_for_dash(server: &Server) -> String {
    let url = server.http_url("/live/cam1/manifest.mpd");
    wait_until("an MPD listing every rendition", READY_TIMEOUT, || {
        let response = get(&url)?;
        ensure!(
            response.status == 200,
            "{} {:?}",
            response.status,
            response.text()
        );
        let text = response.text();
        for name in RENDITIONS {
            ensure!(
                text.contains(&format!("id=\"{name}\"")),
                "no representation {name:?} in\n{text}"
            );
        }
        Ok(())
    });
    url
}

// ---------------------------------------------------------------------------
// Tests

/// hls.js plays the master playlist, lists every rendition at its size and
/// plays each one when forced.
#[test]
fn hlsjs_plays_every_rendition() {
    require_browser_tooling();
    let (mut server, _publisher) = live_server();
    let url = wait_for_hls(&server);

    let started = Instant::now();
    let (report, raw) = play("hls", &url, &screenshot_path("hls"));
    server.assert_running();
    check_report("hls.js", &report, &raw);
    eprintln!("hls.js run took {:?}", started.elapsed());
}

/// dash.js plays the MPD, lists every representation at its size and plays
/// each one when forced.
#[test]
fn dashjs_plays_every_representation() {
    require_browser_tooling();
    let (mut server, _publisher) = live_server();
    let url = wait_for_dash(&server);

    let started = Instant::now();
    let (report, raw) = play("dash", &url, &screenshot_path("dash"));
    server.assert_running();
    check_report("dash.js", &report, &raw);
    eprintln!("dash.js run took {:?}", started.elapsed());
}

/// What ffprobe reports about the MPD.
#[derive(Debug, Deserialize)]
struct MpdProbe {
    #[serde(default)]
    streams: Vec<MpdStream>,
}

#[derive(Debug, Deserialize)]
struct MpdStream {
    codec_type: String,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// ffmpeg's DASH demuxer reads the live MPD and finds every representation
/// with the size its name promises, plus the audio.
#[test]
fn ffprobe_reads_every_representation_of_the_mpd() {
    let (server, _publisher) = live_server();
    let url = wait_for_dash(&server);

    let mut child = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffprobe");
    let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, FFPROBE_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("ffprobe {url} ran past {FFPROBE_TIMEOUT:?}: {stderr}"));
    assert!(
        status.success() && stderr.trim().is_empty(),
        "ffprobe {url} ({status}): {stderr}"
    );
    let probe: MpdProbe =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("ffprobe JSON ({e}): {stdout}"));

    let mut video: Vec<(String, (u32, u32))> = probe
        .streams
        .iter()
        .filter(|stream| stream.codec_type == "video")
        .map(|stream| {
            assert_eq!(stream.codec_name.as_deref(), Some("h264"), "{stream:?}");
            let id = stream.tags.get("id").cloned().unwrap_or_default();
            let size = (stream.width.unwrap_or(0), stream.height.unwrap_or(0));
            (id, size)
        })
        .collect();
    video.sort();
    let ids: Vec<&str> = video.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids, RENDITIONS,
        "video representations ffprobe found: {probe:?}"
    );
    for (id, size) in &video {
        assert_rendition_size("ffprobe", id, *size, SOURCE);
    }
    let audio: Vec<&MpdStream> = probe
        .streams
        .iter()
        .filter(|stream| stream.codec_type == "audio")
        .collect();
    assert!(
        audio.len() == 1 && audio[0].codec_name.as_deref() == Some("aac"),
        "audio representations ffprobe found: {audio:?}"
    );
}
