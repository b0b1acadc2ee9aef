//! The disk mirror: a stream's files follow its window on disk, and when
//! writing fails (a full disk, a path that is not a folder) the failure is
//! logged, shown in `/metrics` and sent as a `stream:storage` event, while
//! playback from memory goes on; when writing works again, that is reported
//! too.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{ServerConfig, get, publish_ffmpeg, wait_for_master, wait_until};

/// The value of `bigfoot_disk_mirror_failing{stream="cam1"}`.
fn mirror_failing(server: &common::Server) -> Option<u8> {
    let text = get(&server.http_url("/metrics")).ok()?.text();
    text.lines()
        .find(|l| l.starts_with("bigfoot_disk_mirror_failing{") && l.contains("cam1"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_failing_mirror_is_reported_and_playback_goes_on() {
    let server = ServerConfig::passthrough_only()
        .mirror_to_disk(true)
        .start();
    let live = server.data_dir().join("live");
    std::fs::create_dir_all(&live).expect("live folder");
    // A file where the stream's folder should be: every write fails.
    std::fs::write(live.join("cam1"), b"in the way").expect("blocker");

    let token = server.token("viewer", "disk-test");
    let events_url = server.api_url("/events/sse?streams=cam1");
    let events = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client")
        .get(&events_url)
        .bearer_auth(&token)
        .send()
        .expect("event stream");
    assert_eq!(events.status().as_u16(), 200);

    let mut publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), 12.0, 640, 360);
    let master = wait_for_master(&server.master_url("cam1"), Duration::from_secs(30));
    assert_eq!(master.status, 200, "playback from memory goes on");
    wait_until(
        "the metric shows the failure",
        Duration::from_secs(10),
        || {
            anyhow::ensure!(mirror_failing(&server) == Some(1), "not failing yet");
            Ok(())
        },
    );
    assert!(
        server.logs().contains("disk mirror failed"),
        "the failure is logged"
    );

    std::fs::remove_file(live.join("cam1")).expect("remove the blocker");
    wait_until(
        "the metric shows the recovery",
        Duration::from_secs(10),
        || {
            anyhow::ensure!(mirror_failing(&server) == Some(0), "still failing");
            Ok(())
        },
    );
    assert!(
        live.join("cam1/source/index.m3u8").exists(),
        "the mirror is written again"
    );

    let mut storage = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(events).lines() {
        let Ok(line) = line else { break };
        if let Some(json) = line.strip_prefix("data: ")
            && json.contains("\"stream:storage\"")
        {
            storage.push(json.to_string());
            if storage.len() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "events so far: {storage:?}");
    }
    assert_eq!(storage.len(), 2, "{storage:?}");
    assert!(storage[0].contains("\"failing\""), "{}", storage[0]);
    assert!(storage[1].contains("\"ok\""), "{}", storage[1]);
    publisher.wait_success(Duration::from_secs(30));
}
