//! Choosing the encoder backend at start-up.
//!
//! A backend is usable when every element it names exists on this box *and*
//! a small probe pipeline through its scale, encode and decode chains runs
//! to end-of-stream in time, with a forced keyframe honoured. A plugin that
//! registers elements but finds no device or driver fails the probe, so it
//! is never chosen. `auto` takes the first usable backend in [`AUTO_ORDER`];
//! a named backend that is not usable falls back to the first usable one in
//! [`SOFTWARE_ORDER`] when the config allows it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use tracing::{debug, info, warn};

use super::TranscodeError;
use super::backend::{Backend, BackendKind, RungValues, build_chain};
use super::pipeline::keyint_max_frames;

/// The `transcode.encoder` value that picks a backend by probing.
pub const AUTO: &str = "auto";
/// The order `auto` tries backends in: GPUs first, then software.
pub const AUTO_ORDER: &[&str] = &["nvenc", "va", "qsv", "x264", "openh264"];
/// The software backends a failed backend falls back to, in order.
pub const SOFTWARE_ORDER: &[&str] = &["x264", "openh264"];
/// How long a probe pipeline may take to reach end-of-stream.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames the probe encodes.
const PROBE_FRAMES: i32 = 10;
/// The probe asks for a keyframe on this frame, as the segment grid does.
const PROBE_FORCED_KEYFRAME: u64 = 5;
/// Probe source and rung sizes.
const PROBE_SOURCE: (i32, i32) = (640, 360);
const PROBE_RUNG: (u32, u32) = (320, 180);
const PROBE_KBPS: u32 = 500;

/// The values a probe fills the backend's placeholders with.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub segment: Duration,
    pub x264_preset: String,
    pub timeout: Duration,
}

/// How one backend fares on this box.
#[derive(Debug)]
pub struct BackendReport {
    pub name: String,
    /// The description, or why it could not be read.
    pub backend: Result<Backend, String>,
    /// Element factories this box lacks.
    pub missing: Vec<String>,
    /// The probe's outcome; `None` when it was not run (elements missing).
    pub probe: Option<Result<(), String>>,
}

impl BackendReport {
    /// Whether the backend can encode here.
    pub fn usable(&self) -> bool {
        matches!(self.probe, Some(Ok(())))
    }

    /// One line saying why the backend cannot be used, naming the missing
    /// elements and what provides them.
    pub fn problem(&self) -> Option<String> {
        let backend = match &self.backend {
            Ok(backend) => backend,
            Err(e) => return Some(e.clone()),
        };
        if !self.missing.is_empty() {
            return Some(format!(
                "missing GStreamer element(s) {} (from {}; install: {})",
                self.missing.join(", "),
                backend.source.display(),
                if backend.packages.is_empty() {
                    "see the file's comments"
                } else {
                    &backend.packages
                }
            ));
        }
        match &self.probe {
            Some(Err(e)) => Some(format!(
                "the elements exist but the encoder did not open: {e} \
                 (check the driver: {})",
                backend.packages
            )),
            _ => None,
        }
    }
}

/// The backend streams use, and the software backend a hardware one is
/// replaced by when it fails while a stream is live.
#[derive(Debug, Clone)]
pub struct EncoderChoice {
    pub backend: Arc<Backend>,
    pub fallback: Option<Arc<Backend>>,
}

/// Loads, checks and probes one backend.
pub fn assess(dir: &Path, name: &str, settings: &ProbeSettings) -> BackendReport {
    let backend = Backend::load(dir, name).map_err(|e| e.to_string());
    let missing = backend
        .as_ref()
        .map(Backend::missing_elements)
        .unwrap_or_default();
    let probe = match &backend {
        Ok(backend) if missing.is_empty() => Some(probe(backend, settings)),
        _ => None,
    };
    BackendReport {
        name: name.to_string(),
        backend,
        missing,
        probe,
    }
}

/// Every backend in `dir` (the built-in x264 included), those `auto` knows
/// first in its order, then the others by name.
pub fn survey(dir: &Path, settings: &ProbeSettings) -> Vec<BackendReport> {
    backend_names(dir)
        .iter()
        .map(|name| assess(dir, name, settings))
        .collect()
}

/// The names of the backends in `dir`, in [`survey`]'s order.
pub fn backend_names(dir: &Path) -> Vec<String> {
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .filter(|name| !AUTO_ORDER.contains(&name.as_str()))
        .collect();
    others.sort();
    AUTO_ORDER
        .iter()
        .map(|name| name.to_string())
        .filter(|name| Backend::exists(dir, name))
        .chain(others)
        .collect()
}

/// The backend `auto` picks from a survey.
pub fn auto_pick(reports: &[BackendReport]) -> Option<&BackendReport> {
    AUTO_ORDER
        .iter()
        .find_map(|name| reports.iter().find(|r| r.name == *name && r.usable()))
}

/// Chooses the backend for `encoder` (a backend name or [`AUTO`]).
pub fn choose(
    dir: &Path,
    encoder: &str,
    allow_fallback: bool,
    settings: &ProbeSettings,
) -> Result<EncoderChoice, TranscodeError> {
    // Fallback is for a backend this box cannot run, not for a name that
    // names no backend at all: that is a typo in the config.
    if encoder != AUTO && !Backend::exists(dir, encoder) {
        return Err(TranscodeError::UnknownBackend {
            requested: encoder.to_string(),
            dir: dir.to_path_buf(),
            known: backend_names(dir).join(", "),
        });
    }
    let started = Instant::now();
    let mut reports = Vec::new();
    let candidates: Vec<&str> = if encoder == AUTO {
        AUTO_ORDER.to_vec()
    } else {
        vec![encoder]
    };
    for name in candidates {
        if encoder == AUTO && !Backend::exists(dir, name) {
            continue;
        }
        let report = assess(dir, name, settings);
        if let Some(problem) = report.problem() {
            debug!(backend = name, %problem, "encoder backend not usable");
        }
        if let (true, Ok(backend)) = (report.usable(), &report.backend) {
            let backend = backend.clone();
            let fallback = software_fallback(dir, &backend, settings);
            debug!(elapsed_ms = started.elapsed().as_millis() as u64, "probed");
            return Ok(EncoderChoice {
                backend: Arc::new(backend),
                fallback,
            });
        }
        reports.push(report);
    }

    let reasons = reasons(&reports);
    if encoder != AUTO && allow_fallback {
        for name in SOFTWARE_ORDER.iter().filter(|n| **n != encoder) {
            let report = assess(dir, name, settings);
            if let (true, Ok(backend)) = (report.usable(), report.backend) {
                warn!(
                    requested = encoder,
                    using = %backend.name,
                    reason = %reasons,
                    "encoder backend not usable; falling back to software \
                     (transcode.fallback = true)"
                );
                return Ok(EncoderChoice {
                    backend: Arc::new(backend),
                    fallback: None,
                });
            }
        }
    }
    Err(TranscodeError::NoUsableBackend {
        requested: encoder.to_string(),
        reasons,
    })
}

/// The software backend that replaces `backend` when it fails mid-stream;
/// none for a software backend.
fn software_fallback(
    dir: &Path,
    backend: &Backend,
    settings: &ProbeSettings,
) -> Option<Arc<Backend>> {
    if backend.kind == BackendKind::Software {
        return None;
    }
    let found = SOFTWARE_ORDER
        .iter()
        .map(|name| assess(dir, name, settings))
        .find(BackendReport::usable)
        .and_then(|report| report.backend.ok());
    match &found {
        Some(fallback) => info!(
            backend = %backend.name,
            fallback = %fallback.name,
            "hardware encoder backend; software fallback ready"
        ),
        None => warn!(
            backend = %backend.name,
            "no software encoder backend works here: a hardware encoder \
             failure will end the publish session"
        ),
    }
    found.map(Arc::new)
}

/// What `bigfoot check` prints about the backends of a survey: kind,
/// missing elements and what provides them, the probe, and `auto`'s pick.
pub fn describe(dir: &Path, reports: &[BackendReport]) -> String {
    let mut out = format!("encoder backends in {}:\n", dir.display());
    for report in reports {
        let kind = report.backend.as_ref().map_or("?", |b| b.kind.as_str());
        let state = match (&report.backend, &report.probe) {
            (Err(e), _) => format!("UNREADABLE: {e}"),
            (Ok(_), None) => format!("MISSING {}", report.missing.join(", ")),
            (Ok(_), Some(Ok(()))) => "elements ok, probe ok".into(),
            (Ok(_), Some(Err(e))) => format!("elements ok, probe FAILED: {e}"),
        };
        out.push_str(&format!("  {:<10} {kind:<9} {state}\n", report.name));
        if let Ok(backend) = &report.backend
            && !report.usable()
            && !backend.packages.is_empty()
        {
            out.push_str(&format!("  {:<10} needs: {}\n", "", backend.packages));
        }
    }
    out.push_str(&format!("auto order: {}\n", AUTO_ORDER.join(", ")));
    let pick = auto_pick(reports).map_or("nothing (no backend works here)", |r| &r.name);
    out.push_str(&format!("auto picks: {pick}\n"));
    out
}

fn reasons(reports: &[BackendReport]) -> String {
    if reports.is_empty() {
        return "no backend description found".into();
    }
    reports
        .iter()
        .map(|r| {
            let problem = r.problem().unwrap_or_else(|| "not usable".into());
            format!("`{}`: {problem}", r.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `videotestsrc ! I420 ! scale ! encode ! h264parse ! decode !
/// fakesink` for a few frames, forcing one keyframe mid-way. Blocks for at
/// most `settings.timeout`.
pub fn probe(backend: &Backend, settings: &ProbeSettings) -> Result<(), String> {
    let pipeline = gst::Pipeline::with_name(&format!("probe-{}", backend.name));
    let result = run_probe(&pipeline, backend, settings);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run_probe(
    pipeline: &gst::Pipeline,
    backend: &Backend,
    settings: &ProbeSettings,
) -> Result<(), String> {
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| format!("cannot create `{factory}`"))
    };
    let src = make("videotestsrc")?;
    src.set_property("num-buffers", PROBE_FRAMES);
    let raw = make("capsfilter")?;
    raw.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", PROBE_SOURCE.0)
            .field("height", PROBE_SOURCE.1)
            .field("framerate", gst::Fraction::new(30, 1))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let values = RungValues {
        width: PROBE_RUNG.0,
        height: PROBE_RUNG.1,
        bitrate_kbps: PROBE_KBPS,
        keyint_max_frames: keyint_max_frames(settings.segment),
        x264_preset: settings.x264_preset.clone(),
    };
    let scale = build_chain(&backend.scale, Some(&values)).map_err(|e| e.to_string())?;
    let encode = build_chain(&backend.encode, Some(&values)).map_err(|e| e.to_string())?;
    let decode = build_chain(&backend.decode, None).map_err(|e| e.to_string())?;
    let encoded = encode.last().cloned().ok_or("empty encode chain")?;

    let mut chain = vec![src, raw.clone()];
    chain.extend(scale);
    chain.extend(encode);
    chain.push(make("h264parse")?);
    chain.extend(decode);
    chain.push(make("fakesink")?);
    pipeline
        .add_many(chain.iter())
        .map_err(|e| format!("cannot build the probe: {e}"))?;
    gst::Element::link_many(chain.iter()).map_err(|e| format!("cannot link the probe: {e}"))?;
    force_keyframe_at(&raw, PROBE_FORCED_KEYFRAME);
    let keyframes = count_keyframes(&encoded);

    let deadline = Instant::now() + settings.timeout;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("the probe pipeline did not start: {e}"))?;
    let bus = pipeline.bus().ok_or("the probe pipeline has no bus")?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let message = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(remaining.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    match message.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(err)) => {
            return Err(format!(
                "{} ({})",
                err.error(),
                err.debug().unwrap_or_default()
            ));
        }
        _ => {
            return Err(format!(
                "no end-of-stream within {} s",
                settings.timeout.as_secs_f64()
            ));
        }
    }
    let keyframes = keyframes.lock().map(|k| *k).unwrap_or(0);
    if keyframes < 2 {
        return Err(format!(
            "the encoder ignored a forced keyframe ({keyframes} keyframe(s) in \
             {PROBE_FRAMES} frames); segments could not be aligned"
        ));
    }
    Ok(())
}

/// Asks for a keyframe on frame `index` of `element`'s output.
fn force_keyframe_at(element: &gst::Element, index: u64) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let seen = AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        if seen.fetch_add(1, Ordering::Relaxed) == index {
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(event);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts the keyframes leaving `element`.
fn count_keyframes(element: &gst::Element) -> Arc<Mutex<u32>> {
    let count = Arc::new(Mutex::new(0));
    if let Some(pad) = element.static_pad("src") {
        let counter = count.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let key = info
                .buffer()
                .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            if key && let Ok(mut count) = counter.lock() {
                *count += 1;
            }
            gst::PadProbeReturn::Ok
        });
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProbeSettings {
        ProbeSettings {
            segment: Duration::from_secs(2),
            x264_preset: "superfast".into(),
            timeout: PROBE_TIMEOUT,
        }
    }

    fn shipped() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
    }

    #[test]
    fn software_backends_open_and_hardware_ones_name_their_packages() {
        crate::transcode::init().expect("gstreamer");
        let reports = survey(&shipped(), &settings());
        let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, AUTO_ORDER);
        for report in &reports {
            let Ok(backend) = &report.backend else {
                panic!("{}: {:?}", report.name, report.backend);
            };
            if report.usable() {
                continue;
            }
            // Where a backend cannot run, the reason names what to install.
            let problem = report.problem().expect("a reason");
            assert!(problem.contains(&backend.packages), "{problem}");
        }
        let x264 = reports.iter().find(|r| r.name == "x264").expect("x264");
        assert!(x264.usable(), "{:?}", x264.problem());
    }

    #[test]
    fn forced_missing_backend_falls_back_only_when_allowed() {
        crate::transcode::init().expect("gstreamer");
        let dir = tempfile::tempdir().expect("tempdir");
        let text = include_str!("../../pipelines/x264.toml")
            .replace("kind = \"software\"", "kind = \"hardware\"")
            .replace("x264enc", "nosuchh264enc");
        std::fs::write(dir.path().join("gpu.toml"), text).expect("write");

        let err = choose(dir.path(), "gpu", false, &settings()).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("nosuchh264enc"), "{message}");
        assert!(message.contains("gstreamer1.0-plugins-ugly"), "{message}");

        let choice = choose(dir.path(), "gpu", true, &settings()).expect("falls back");
        assert_eq!(choice.backend.name, "x264");
        assert!(choice.fallback.is_none());
    }

    #[test]
    fn an_unknown_backend_name_is_refused_even_with_fallback() {
        crate::transcode::init().expect("gstreamer");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("gpu.toml"),
            include_str!("../../pipelines/x264.toml"),
        )
        .expect("write");
        for fallback in [false, true] {
            let err = choose(dir.path(), "x246", fallback, &settings()).expect_err("refused");
            let message = err.to_string();
            assert!(message.contains("transcode.encoder"), "{message}");
            assert!(message.contains("`x246`"), "{message}");
            assert!(message.contains("x264, gpu"), "{message}");
        }
    }
}
