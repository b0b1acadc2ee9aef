//! Encoder backends: the software ones transcoding for real, the GPU ones
//! (absent on the test machine) through `bigfoot check`, start-up refusal
//! and fallback, and a backend that fails mid-stream being rebuilt on x264.
//!
//! Run them one at a time (`--test-threads=1`): the pushes are live video
//! and the test machine has two cores.

mod common;

use std::time::{Duration, Instant};

use common::{
    EncoderSettings, Server, ServerConfig, check_avc_codec, copy_shipped_pipelines, fetch_media,
    get_ok, gst_element_exists, last_sequence, parse_master, probe_fragment, publish_ffmpeg,
    resolve, run_bigfoot, wait_for_master, wait_until,
};

/// One 360p rung: a 1280x720 source is scaled to 640x360.
const RUNG_360P: &str = r#"[{ name = "360p", height = 360, video_kbps = 800 }]"#;
/// From publish to a playable master playlist.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `bigfoot check` and a refused `bigfoot serve` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The GPU backends, the elements each needs that this box lacks, and words
/// from the package hint that must reach the operator.
const GPU_BACKENDS: &[(&str, &[&str], &[&str])] = &[
    (
        "nvenc",
        &["nvh264enc", "nvh264dec", "cudaupload", "cudascale"],
        &["NVIDIA driver", "gstreamer1.0-plugins-bad"],
    ),
    (
        "va",
        &["vah264enc", "vah264dec", "vapostproc"],
        &[
            "gstreamer1.0-plugins-bad",
            "intel-media-va-driver-non-free",
            "mesa-va-drivers",
        ],
    ),
    (
        "qsv",
        &["qsvh264enc", "qsvh264dec"],
        &["gstreamer1.0-plugins-bad", "libvpl2", "libmfx-gen1.2"],
    ),
];

/// True (and says so) when this box has an element a test expects missing,
/// in which case the test cannot show the missing-element path.
fn box_has_any(elements: &[&str]) -> bool {
    let present: Vec<&str> = elements
        .iter()
        .copied()
        .filter(|e| gst_element_exists(e))
        .collect();
    if !present.is_empty() {
        eprintln!("skipping: this box has {present:?}");
    }
    !present.is_empty()
}

fn all_gpu_elements() -> Vec<&'static str> {
    GPU_BACKENDS
        .iter()
        .flat_map(|(_, elements, _)| elements.iter().copied())
        .collect()
}

/// The lines of `log` that contain every one of `words`.
fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .collect()
}

/// Whether the server has logged a line with every one of `words`.
fn logged(server: &Server, words: &[&str]) -> bool {
    !lines_with(&server.logs(), words).is_empty()
}

// ---------------------------------------------------------------------------
// Software backends, for real

/// Pushes 1280x720 for a few seconds through `encoder` (no fallback) and
/// checks the 360p output: H.264 of `profile` at 640x360, CODECS from the
/// real SPS, every segment starting on a keyframe.
fn transcodes_with(encoder: &str, profile: &str) {
    let config = ServerConfig {
        passthrough: false,
        ..ServerConfig::default().ladder(RUNG_360P)
    };
    let settings = EncoderSettings::new(encoder, false);
    let server = Server::start_with_encoder(&config, &settings);
    assert!(
        logged(&server, &["encoder backend ready", encoder]),
        "no `encoder backend ready` for {encoder}"
    );

    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 8.0, 1280, 720);
    let master_url = server.master_url("cam1");
    let master =
        parse_master(&wait_for_master(&master_url, READY_TIMEOUT).body).expect("master playlist");
    let variant = master
        .variants
        .iter()
        .find(|v| v.uri.starts_with("360p/"))
        .expect("a 360p variant");
    let media_url = resolve(&master_url, &variant.uri);
    let media = wait_until("two 360p segments", READY_TIMEOUT, || {
        let media = fetch_media(&media_url)?;
        anyhow::ensure!(
            media.segments.len() >= 2,
            "{} segments",
            media.segments.len()
        );
        Ok(media)
    });

    let mut map_uri = None;
    for segment in &media.segments {
        if let Some(map) = &segment.map {
            map_uri = Some(map.uri.clone());
        }
        let map_uri = map_uri
            .as_deref()
            .expect("EXT-X-MAP before the first segment");
        let init = get_ok(&resolve(&media_url, map_uri)).body;
        let data = get_ok(&resolve(&media_url, &segment.uri)).body;
        let probe = probe_fragment(&init, &data).expect("ffprobe");
        let video = probe.stream("video").expect("a video stream");
        assert_eq!(video.codec_name.as_deref(), Some("h264"));
        assert_eq!((video.width, video.height), (Some(640), Some(360)));
        assert_eq!(video.profile.as_deref(), Some(profile), "{encoder}");
        assert_eq!(video.pix_fmt.as_deref(), Some("yuv420p"));
        let first = probe.packets("video").next().expect("video packets");
        assert!(
            first.is_keyframe(),
            "{encoder}: segment {} does not start on a keyframe",
            segment.uri
        );
        let codecs = variant.codecs.as_deref().expect("CODECS");
        check_avc_codec(codecs, video).expect("CODECS matches the SPS");
    }
    publisher.wait_success(Duration::from_secs(30));
    assert!(
        logged(&server, &["pipeline started", encoder]),
        "no pipeline started on {encoder}"
    );
}

#[test]
fn x264_transcodes_a_720p_push() {
    transcodes_with("x264", "High");
}

#[test]
fn openh264_transcodes_a_720p_push_in_constrained_baseline() {
    transcodes_with("openh264", "Constrained Baseline");
}

// ---------------------------------------------------------------------------
// GPU backends, absent here

#[test]
fn check_names_missing_gpu_elements_and_their_packages() {
    if box_has_any(&all_gpu_elements()) {
        return;
    }
    let (_dir, path) = EncoderSettings::new("auto", true).write(&ServerConfig::default());
    let out = run_bigfoot(
        &["check", "--config", &path.to_string_lossy()],
        COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    for (backend, elements, packages) in GPU_BACKENDS {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{backend} ")))
            .unwrap_or_else(|| panic!("no line for {backend}:\n{stdout}"));
        assert!(
            line.contains("hardware") && line.contains("MISSING"),
            "{line}"
        );
        for element in *elements {
            assert!(
                line.contains(element),
                "{backend} line lacks {element}: {line}"
            );
        }
        let needs = stdout
            .lines()
            .skip_while(|l| *l != line)
            .nth(1)
            .unwrap_or_default();
        for package in *packages {
            assert!(
                needs.contains(package),
                "{backend}: no {package} in {needs:?}"
            );
        }
    }
    for software in ["x264", "openh264"] {
        let line = lines_with(&stdout, &[software, "software"]);
        assert!(
            line.iter().any(|l| l.contains("elements ok, probe ok")),
            "{software}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("auto order: nvenc, va, qsv, x264, openh264"),
        "{stdout}"
    );
    assert!(stdout.contains("auto picks: x264"), "{stdout}");
    assert!(stdout.contains("encoder in use: x264"), "{stdout}");
}

#[test]
fn forced_gpu_backend_without_fallback_refuses_to_start() {
    for (backend, elements, packages) in GPU_BACKENDS {
        if box_has_any(elements) {
            continue;
        }
        let (_dir, path) = EncoderSettings::new(backend, false).write(&ServerConfig::default());
        let started = Instant::now();
        let out = run_bigfoot(
            &["serve", "--config", &path.to_string_lossy()],
            COMMAND_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{backend}: serve started:\n{stderr}");
        assert!(
            stderr.contains(&format!("encoder backend `{backend}` cannot be used")),
            "{stderr}"
        );
        for element in *elements {
            assert!(
                stderr.contains(element),
                "{backend}: {element} not named:\n{stderr}"
            );
        }
        for package in *packages {
            assert!(
                stderr.contains(package),
                "{backend}: {package} not named:\n{stderr}"
            );
        }
        assert!(!stderr.contains("RTMP listening"), "{stderr}");
        eprintln!("{backend}: refused in {:?}", started.elapsed());

        let out = run_bigfoot(
            &["check", "--config", &path.to_string_lossy()],
            COMMAND_TIMEOUT,
        );
        assert!(
            !out.status.success(),
            "check passed a config that cannot serve"
        );
    }
}

/// A backend name with no file under `pipelines/` is a typo, not a backend
/// this box lacks: `check` and `serve` refuse it even with fallback on.
#[test]
fn an_unknown_backend_name_is_refused_even_with_fallback() {
    let (_dir, path) = EncoderSettings::new("nvnec", true).write(&ServerConfig::default());
    for command in ["check", "serve"] {
        let out = run_bigfoot(
            &[command, "--config", &path.to_string_lossy()],
            COMMAND_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command} accepted `nvnec`:\n{stderr}"
        );
        assert!(
            stderr.contains("transcode.encoder: no backend named `nvnec`"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("nvenc"),
            "{command}: known backends not listed: {stderr}"
        );
        assert!(!stderr.contains("RTMP listening"), "{stderr}");
    }
}

#[test]
fn forced_gpu_backend_with_fallback_serves_on_x264() {
    if box_has_any(&["nvh264enc"]) {
        return;
    }
    let settings = EncoderSettings::new("nvenc", true);
    let server = Server::start_with_encoder(&ServerConfig::default(), &settings);
    let log = server.logs();
    let warned = lines_with(&log, &["falling back to software", "nvenc", "nvh264enc"]);
    assert!(!warned.is_empty(), "no fallback warning:\n{log}");
    assert!(warned.iter().all(|l| l.contains("WARN")), "{warned:?}");
    let ready = lines_with(
        &log,
        &["encoder backend ready", "encoder=x264", "requested=nvenc"],
    );
    assert!(!ready.is_empty(), "not serving on x264:\n{log}");

    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 4.0, 640, 360);
    wait_for_master(&server.master_url("cam1"), READY_TIMEOUT);
    publisher.wait_success(Duration::from_secs(30));
    assert!(
        logged(&server, &["pipeline started", "encoder=x264"]),
        "no pipeline on x264"
    );
}

#[test]
fn auto_picks_x264_on_a_box_without_gpu_encoders() {
    if box_has_any(&["nvh264enc", "vah264enc", "qsvh264enc"]) {
        return;
    }
    let settings = EncoderSettings::new("auto", false);
    let (_dir, path) = settings.write(&ServerConfig::default());
    let out = run_bigfoot(
        &["check", "--config", &path.to_string_lossy()],
        COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("auto picks: x264"), "{stdout}");

    let started = Instant::now();
    let server = Server::start_with_encoder(&ServerConfig::default(), &settings);
    let log = server.logs();
    let ready = lines_with(
        &log,
        &["encoder backend ready", "encoder=x264", "requested=auto"],
    );
    assert!(!ready.is_empty(), "{log}");
    assert!(
        !log.contains("falling back"),
        "auto is not a fallback:\n{log}"
    );
    eprintln!("auto start-up took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// A backend that fails while a stream is live

/// A copy of the x264 backend, marked hardware, whose encode chain fails
/// after 45 encoded frames (1.5 s of a 30 fps source).
fn flaky_backend() -> String {
    let x264 = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/x264.toml"),
    )
    .expect("read pipelines/x264.toml");
    let text = x264.replace("kind = \"software\"", "kind = \"hardware\"");
    assert_ne!(text, x264, "x264.toml has no `kind = \"software\"` line");
    text + "\n[[encode]]\nfactory = \"identity\"\nproperties = { error-after = \"45\" }\n"
}

#[test]
fn mid_stream_encoder_failure_is_rebuilt_on_software() {
    let pipelines = tempfile::tempdir().expect("tempdir");
    copy_shipped_pipelines(pipelines.path());
    std::fs::write(pipelines.path().join("flaky.toml"), flaky_backend()).expect("write");

    // One-second segments, so a 360p segment exists before the failure.
    let config = ServerConfig {
        segment_secs: 1.0,
        ..ServerConfig::default().ladder(RUNG_360P)
    };
    let settings = EncoderSettings::new("flaky", true).pipelines_dir(pipelines.path());
    let mut server = Server::start_with_encoder(&config, &settings);
    assert!(
        logged(&server, &["encoder backend ready", "encoder=flaky"]),
        "the flaky backend was not chosen"
    );

    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 12.0, 1280, 720);
    let master_url = server.master_url("cam1");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut sequence_at_failure: Option<u64> = None;
    let mut last_seen = 0;
    let mut discontinuity = false;
    let mut polls = 0;
    while publisher.try_wait().is_none() {
        assert!(Instant::now() < deadline, "the push did not finish");
        std::thread::sleep(Duration::from_millis(300));
        let Ok(response) = common::get(&master_url) else {
            continue;
        };
        if response.status != 200 {
            continue;
        }
        for rendition in ["360p", "source"] {
            let url = server.media_url("cam1", rendition);
            let Ok(media) = fetch_media(&url) else {
                continue;
            };
            // The publisher is still pushing: the playlists stay open.
            if publisher.try_wait().is_none() {
                assert!(!media.end_list, "{rendition} ended while live");
            }
            discontinuity |= media.segments.iter().any(|s| s.discontinuity);
            if rendition == "360p" {
                last_seen = last_sequence(&media).unwrap_or(0).max(last_seen);
                polls += 1;
            }
        }
        let failed = server.logs().contains("hardware encoder failed");
        if failed && sequence_at_failure.is_none() {
            sequence_at_failure = Some(last_seen);
        }
    }
    publisher.wait_success(Duration::from_secs(5));
    server.assert_running();

    let log = server.logs();
    let warned = lines_with(
        &log,
        &["hardware encoder failed", "failed=flaky", "encoder=x264"],
    );
    assert_eq!(warned.len(), 1, "one rebuild expected:\n{log}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(!log.contains("ending the publish session"), "{log}");
    let on_x264 = lines_with(&log, &["pipeline started", "encoder=x264"]);
    assert_eq!(on_x264.len(), 1, "{log}");

    let at_failure = sequence_at_failure.expect("the failure was seen while live");
    assert!(polls > 10, "only {polls} polls");
    assert!(
        last_seen >= at_failure + 5,
        "segments stopped after the failure: {at_failure} then {last_seen}"
    );
    assert!(discontinuity, "no #EXT-X-DISCONTINUITY after the rebuild");
}
