//! Slow and silent peers do not lock real clients out: a thousand RTMP
//! connections that send nothing and HTTP clients that dribble their
//! headers a byte at a time, while a real encoder publishes and a player
//! fetches playlists. Every connection's slot and descriptor is released
//! when it ends.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    ServerConfig, fetch_media, get, open_fds, publish_ffmpeg, wait_for_fds_at_most, wait_for_master,
};

const SILENT_RTMP: usize = 1000;
const DRIBBLING_HTTP: usize = 200;

#[test]
fn silent_and_slow_peers_do_not_stop_real_clients() {
    let mut server = ServerConfig::passthrough_only().start();
    let pid = server.pid();
    let idle_fds = open_fds(pid);

    let rtmp = server.rtmp_addr;
    let silent: Vec<TcpStream> = (0..SILENT_RTMP)
        .filter_map(|_| TcpStream::connect(rtmp).ok())
        .collect();
    assert_eq!(
        silent.len(),
        SILENT_RTMP,
        "every silent connection was accepted by the kernel"
    );

    let http = server.http_addr;
    let mut dribbling: Vec<TcpStream> = (0..DRIBBLING_HTTP)
        .filter_map(|_| TcpStream::connect(http).ok())
        .collect();
    let started = Instant::now();

    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 6.0, 640, 360);
    let master = wait_for_master(&server.master_url("cam1"), Duration::from_secs(30));
    assert_eq!(master.status, 200);
    let playlist = fetch_media(&server.media_url("cam1", "source")).expect("media playlist");
    assert!(!playlist.segments.is_empty(), "the player gets segments");
    let health = get(&server.http_url("/healthz")).expect("health check");
    assert_eq!(health.status, 200);

    // Keep dribbling a request line one byte at a time for a few seconds.
    let line = b"GET /healthz HTTP/1.1\r\n";
    for (i, byte) in line.iter().cycle().take(4).enumerate() {
        for socket in &mut dribbling {
            let _ = socket.write_all(&[*byte]);
        }
        std::thread::sleep(Duration::from_millis(500 + 100 * i as u64));
    }
    publisher.wait_success(Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(60));

    drop(silent);
    drop(dribbling);
    let what = format!("descriptors not released ({idle_fds} when idle)");
    wait_for_fds_at_most(pid, idle_fds + 10, Duration::from_secs(20), &what);
    server.assert_running();
}
