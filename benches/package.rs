//! Packaging hot paths, measured on real bigfoot output: what runs for every
//! fragment (parsing it, updating the window) and for every segment of every
//! rendition (writing the playlists and the MPD).
//!
//! `cargo bench --bench package` prints the time per operation.

use std::hint::black_box;
use std::time::Duration;

use bigfoot::package::dash::{self, PeriodSpec, Presentation, RepresentationSpec};
use bigfoot::package::hls;
use bigfoot::package::isobmff::{FragmentInfo, InitInfo};
use bigfoot::package::window::RenditionWindow;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;

const INIT: &[u8] = include_bytes!("../assets/cmaf/video-240p-init.mp4");
const SEGMENT: &[u8] = include_bytes!("../assets/cmaf/video-240p-segment.m4s");

fn full_window() -> RenditionWindow {
    let mut window = RenditionWindow::new(6, 1000);
    window.fix_target_duration(2);
    if window.set_init(Bytes::from_static(INIT)).is_err() {
        panic!("the fixture init segment must parse");
    }
    let mut now = OffsetDateTime::UNIX_EPOCH;
    for _ in 0..10 {
        now += Duration::from_secs(2);
        let pushed = window.push(Duration::from_secs(2), Bytes::from_static(SEGMENT), now);
        assert!(pushed.is_ok());
    }
    window
}

fn parsing(c: &mut Criterion) {
    c.bench_function("InitInfo::parse (video init)", |b| {
        b.iter(|| InitInfo::parse(black_box(INIT)))
    });
    c.bench_function("FragmentInfo::parse (2 s 240p segment)", |b| {
        b.iter(|| FragmentInfo::parse(black_box(SEGMENT)))
    });
}

fn manifests(c: &mut Criterion) {
    let window = full_window();
    c.bench_function("hls::media_playlist (6 segments)", |b| {
        b.iter(|| hls::media_playlist(black_box(&window)))
    });
    let segments: Vec<_> = window.segments().collect();
    let presentation = Presentation {
        availability_start: OffsetDateTime::UNIX_EPOCH,
        publish_time: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(20),
        segment: Duration::from_secs(2),
        time_shift_depth: Duration::from_secs(12),
        ended_after: None,
        periods: vec![PeriodSpec {
            id: 1,
            start: Duration::ZERO,
            representations: (0..4)
                .map(|_| RepresentationSpec {
                    id: "240p",
                    frame_rate: 30.0,
                    bandwidth: 500_000,
                    segments: segments.clone(),
                })
                .collect(),
        }],
    };
    c.bench_function("dash::mpd (4 representations x 6 segments)", |b| {
        b.iter(|| dash::mpd(black_box(&presentation)))
    });
    c.bench_function("RenditionWindow::push (steady state)", |b| {
        let mut window = full_window();
        let data = Bytes::from_static(SEGMENT);
        let mut now = OffsetDateTime::UNIX_EPOCH;
        b.iter(|| {
            now += Duration::from_secs(2);
            let _ = black_box(window.push(Duration::from_secs(2), data.clone(), now));
        })
    });
}

criterion_group!(benches, parsing, manifests);
criterion_main!(benches);
