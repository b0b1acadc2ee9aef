//! Publish/unpublish churn leaves the server where it started: file
//! descriptors, memory and stream tasks come back once the streams are
//! released. The suite runs a bounded number of cycles; `scripts/churn`
//! runs the full 10,000 (`CHURN_CYCLES`).

mod common;

use std::time::{Duration, Instant};

use common::rtmp_client::{RtmpClient, TestMedia, Track, Tracks, rss_kib};
use common::{ServerConfig, open_fds, wait_for_fds_at_most};

/// Cycles in the normal suite.
const DEFAULT_CYCLES: usize = 120;

fn plain(_: Track, ms: u64) -> u32 {
    ms as u32
}

/// One cycle: a valid publisher that sends a little media, a publisher with
/// a random unknown key, and a connection that leaves mid-handshake.
fn cycle(server: &common::Server, i: usize) {
    let key = if i.is_multiple_of(2) {
        "secretkey1"
    } else {
        "secretkey2"
    };
    if let Ok(mut client) = RtmpClient::publisher(server.rtmp_addr, key) {
        let _ = client.send_media(TestMedia::get(), Tracks::BOTH, 0, 300, 50.0, &plain);
        client.shutdown();
    }
    if let Ok(mut client) = RtmpClient::connect(server.rtmp_addr) {
        let _ = client.connect_app("live");
        let _ = client.create_stream();
        let _ = client.publish(&format!("random{i:08x}"));
        client.shutdown();
    }
    if let Ok(socket) = std::net::TcpStream::connect(server.rtmp_addr) {
        use std::io::Write;
        let _ = (&socket).write_all(&[3, 0, 0, 0]);
    }
}

#[test]
fn publish_churn_returns_to_the_baseline() {
    let cycles = std::env::var("CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let mut server = ServerConfig::passthrough_only()
        .reconnect_grace_secs(1)
        .ingest("handshake_timeout_secs = 1\n")
        .extra_toml("[thumbnails]\nenabled = false\n")
        .start();
    let pid = server.pid();

    // Warm up once so lazily created state (GStreamer registry, media) is in
    // the baseline.
    cycle(&server, 0);
    std::thread::sleep(Duration::from_secs(3));
    let fds_before = open_fds(pid);
    let rss_before = rss_kib(pid).expect("rss");

    let started = Instant::now();
    for i in 1..=cycles {
        cycle(&server, i);
    }
    let churn_time = started.elapsed();

    // Streams are released after the grace period; connections after the
    // handshake timeout.
    let what = format!("after {cycles} cycles ({fds_before} before)");
    wait_for_fds_at_most(pid, fds_before + 4, Duration::from_secs(20), &what);
    let released = |server: &common::Server| server.logs().matches("stream released").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while released(&server) < 3 {
        assert!(Instant::now() < deadline, "cam1 and cam2 were not released");
        std::thread::sleep(Duration::from_millis(250));
    }
    let rss_after = rss_kib(pid).expect("rss");
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 40 * 1024,
        "memory grew {grown} KiB over {cycles} cycles ({rss_before} -> {rss_after} KiB)"
    );
    let log = server.logs();
    let joined = log.matches("publisher joined").count();
    assert!(
        joined >= cycles / 2,
        "only {joined} publishes were accepted"
    );
    assert!(!log.contains("panicked"), "a task panicked");
    server.assert_running();
    eprintln!(
        "churn: {cycles} cycles in {churn_time:?}; fds {fds_before} -> {}; \
         rss {rss_before} -> {rss_after} KiB",
        open_fds(pid)
    );
}
