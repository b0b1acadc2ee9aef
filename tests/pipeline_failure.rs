//! A GStreamer pipeline that fails in one stream ends that stream only: the
//! publisher is disconnected (so the encoder reconnects and gets a fresh
//! pipeline), its playlists end, the failure is logged with the stream's
//! name, and the other streams keep playing.

mod common;

use std::time::Duration;

use common::{
    EncoderSettings, Server, ServerConfig, copy_shipped_pipelines, fetch_media, last_sequence,
    publish_ffmpeg, wait_for_master, wait_until,
};

const RUNG_360P: &str = r#"[{ name = "360p", height = 360, video_kbps = 800 }]"#;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The shipped x264 backend whose encode chain fails after 45 frames. It is
/// a software backend, so there is nothing to fall back to.
fn failing_software_backend() -> String {
    let x264 = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/x264.toml"),
    )
    .expect("read pipelines/x264.toml");
    x264 + "\n[[encode]]\nfactory = \"identity\"\nproperties = { error-after = \"45\" }\n"
}

#[test]
fn a_failed_pipeline_ends_its_stream_and_spares_the_others() {
    let pipelines = tempfile::tempdir().expect("tempdir");
    copy_shipped_pipelines(pipelines.path());
    std::fs::write(
        pipelines.path().join("failing.toml"),
        failing_software_backend(),
    )
    .expect("write the failing backend");
    let config = ServerConfig {
        segment_secs: 1.0,
        ..ServerConfig::default().ladder(RUNG_360P)
    };
    let settings = EncoderSettings::new("failing", false).pipelines_dir(pipelines.path());
    let mut server = Server::start_with_encoder(&config, &settings);

    // cam2 publishes below the 360p rung: it has no encoder to fail.
    let mut healthy = publish_ffmpeg(&server.rtmp_url("secretkey2"), 14.0, 320, 180);
    wait_for_master(&server.master_url("cam2"), READY_TIMEOUT);
    let mut failing = publish_ffmpeg(&server.rtmp_url("secretkey1"), 14.0, 1280, 720);

    let status = failing
        .wait_timeout(Duration::from_secs(20))
        .expect("the failing stream's publisher is disconnected");
    assert!(
        !status.success(),
        "the push to the failed stream should fail, got {status}"
    );
    let ended = wait_until("cam1 playlists end", Duration::from_secs(10), || {
        let playlist = fetch_media(&server.media_url("cam1", "source"))?;
        anyhow::ensure!(playlist.end_list, "no ENDLIST yet");
        Ok(playlist)
    });
    assert!(ended.end_list);

    let cam2 = server.media_url("cam2", "source");
    let before = last_sequence(&fetch_media(&cam2).expect("cam2 playlist")).unwrap_or(0);
    let after = wait_until("cam2 keeps producing", Duration::from_secs(10), || {
        let playlist = fetch_media(&cam2)?;
        let last = last_sequence(&playlist).unwrap_or(0);
        anyhow::ensure!(last >= before + 2, "cam2 at {last}, was {before}");
        anyhow::ensure!(!playlist.end_list, "cam2 ended");
        Ok(last)
    });
    assert!(after >= before + 2);
    healthy.wait_success(Duration::from_secs(20));
    server.assert_running();

    let log = server.logs();
    let failure = log
        .lines()
        .find(|l| l.contains("pipeline failed") && l.contains("stream=cam1"))
        .unwrap_or_else(|| panic!("no failure logged for cam1:\n{log}"));
    assert!(failure.contains("WARN"), "{failure}");
    assert!(
        !log.lines()
            .any(|l| l.contains("pipeline failed") && l.contains("stream=cam2")),
        "cam2 must not fail"
    );
}
