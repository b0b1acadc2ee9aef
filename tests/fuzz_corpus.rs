//! Replays the fuzz targets' regression corpus, `fuzz/corpus/<target>/`,
//! through the same bodies the fuzz targets run (`fuzz/harness.rs`), so an
//! input that once crashed a parser keeps passing without `cargo fuzz`.
//!
//! `regenerate_rtmp_seeds` (ignored) rebuilds the seeds captured from a
//! real ffmpeg publish; see `fuzz/README.md`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use bigfoot::deliver::token::{self, Grant, Scope, SigningKey};
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// Fewest files a target's corpus may hold.
const MIN_CORPUS_FILES: usize = 3;
/// The seed captured from ffmpeg, replayed in one read.
const FFMPEG_SEED: &str = "ffmpeg-publish";
/// RTMP message types whose payloads seed the `amf0` target.
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;
const SET_CHUNK_SIZE: u8 = 1;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs every file of a target's corpus; names each one that panicked.
fn replay(target: &str, body: impl Fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= MIN_CORPUS_FILES,
        "{} holds {} files, expected at least {MIN_CORPUS_FILES}",
        dir.display(),
        files.len()
    );

    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on {failed:?}");
}

#[test]
fn rtmp_session_corpus() {
    replay("rtmp_session", |data| {
        let report = harness::rtmp_session(data);
        assert_eq!(report.library_panics, 0, "rml_rtmp panicked: {report:?}");
    });
}

#[test]
fn amf0_corpus() {
    replay("amf0", harness::amf0);
}

#[test]
fn flv_tags_corpus() {
    replay("flv_tags", harness::flv_tags);
}

#[test]
fn playback_token_corpus() {
    replay("playback_token", harness::playback_token);
}

#[test]
fn request_path_corpus() {
    replay("request_path", harness::request_path);
}

#[test]
fn cmaf_corpus() {
    replay("cmaf", harness::cmaf);
}

#[test]
fn config_corpus() {
    replay("config", harness::config);
}

/// The harness must reach the media path, or fuzzing it proves little.
#[test]
fn ffmpeg_seed_reaches_the_media_path() {
    for seed in [FFMPEG_SEED, "ffmpeg-publish-small-reads", "plain-handshake"] {
        let path = corpus_dir("rtmp_session").join(seed);
        let data = std::fs::read(&path).expect("the ffmpeg seed");
        let report = harness::rtmp_session(&data);
        assert_eq!(report.library_panics, 0, "{seed}: {report:?}");
        assert!(
            report.handshake_done && report.connected,
            "{seed}: {report:?}"
        );
        assert!(report.publishing, "{seed}: {report:?}");
        assert_eq!(report.avc_configs, 1, "{seed}: {report:?}");
        assert!(report.video_tags > 10, "{seed}: {report:?}");
        assert!(report.audio_tags > 10, "{seed}: {report:?}");
    }
}

/// Rebuilds the seeds that come from a real publish: records what ffmpeg
/// sends to a server that accepts it, and the AMF0 and FLV payloads in it.
/// Writes into `fuzz/corpus/`; needs ffmpeg with libx264.
#[test]
#[ignore = "rewrites fuzz/corpus seeds; needs ffmpeg"]
fn regenerate_rtmp_seeds() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("rtmp://{}/live/fuzz", listener.local_addr()?);
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "testsrc=size=160x120:rate=25:duration=2"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-c:a", "aac", "-b:a", "32k", "-f", "flv", &url])
        .stdin(Stdio::null())
        .spawn()
        .context("starting ffmpeg")?;
    let (socket, _) = listener.accept()?;
    let capture = record_publish(socket)?;
    ensure!(ffmpeg.wait()?.success(), "ffmpeg failed");

    let handshake_len = 1 + 2 * 1536;
    let chunks = capture.get(handshake_len..).context("a short capture")?;
    let rtmp = corpus_dir("rtmp_session");
    write_seed(&rtmp, FFMPEG_SEED, &[[0, 1].as_slice(), &capture].concat())?;
    let small_reads = [[5, 1].as_slice(), &capture].concat();
    write_seed(&rtmp, "ffmpeg-publish-small-reads", &small_reads)?;
    write_seed(
        &rtmp,
        "plain-handshake",
        &[[40, 0].as_slice(), chunks].concat(),
    )?;
    write_payload_seeds(chunks)
}

/// Serves one publish like bigfoot would; returns every byte received.
fn record_publish(mut socket: TcpStream) -> anyhow::Result<Vec<u8>> {
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut handshake = Some(Handshake::new(PeerType::Server));
    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())?;
    let mut pending = VecDeque::from(initial);
    let mut capture = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Ok(capture);
        }
        let read = buf.get(..n).context("a read past the buffer")?;
        capture.extend_from_slice(read);
        let chunks = match handshake.as_mut() {
            Some(shake) => match shake.process_bytes(read)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes)?;
                    continue;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes)?;
                    handshake = None;
                    remaining_bytes
                }
            },
            None => read.to_vec(),
        };
        pending.extend(session.handle_input(&chunks)?);
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => socket.write_all(&packet.bytes)?,
                ServerSessionResult::RaisedEvent(
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. },
                ) => pending.extend(session.accept_request(request_id)?),
                _ => {}
            }
        }
    }
}

/// The AMF0 command and data payloads, the first AVC and AAC sequence
/// headers and frames, and the SPS in the capture.
fn write_payload_seeds(chunks: &[u8]) -> anyhow::Result<()> {
    let mut deserializer = ChunkDeserializer::new();
    let mut input = chunks;
    let (mut amf, mut video, mut audio) = (0, 0, 0);
    while let Some(payload) = deserializer.get_next_message(input)? {
        input = &[];
        let data = &payload.data;
        match payload.type_id {
            SET_CHUNK_SIZE => {
                let size = data.get(..4).context("a short SetChunkSize")?;
                let size = u32::from_be_bytes(size.try_into()?);
                deserializer.set_max_chunk_size(usize::try_from(size)?)?;
            }
            AMF0_DATA | AMF0_COMMAND => {
                // The `amf0` target's first byte picks AMF0 (even) framing.
                amf += 1;
                let input = [[0].as_slice(), data].concat();
                write_seed(&corpus_dir("amf0"), &format!("ffmpeg-{amf}"), &input)?;
            }
            8 if audio < 3 => {
                audio += 1;
                write_seed(&corpus_dir("flv_tags"), &format!("audio-{audio}"), data)?;
            }
            9 if video < 3 => {
                video += 1;
                write_seed(&corpus_dir("flv_tags"), &format!("video-{video}"), data)?;
                if video == 1 {
                    let len = usize::from(u16::from_be_bytes([data[11], data[12]]));
                    write_seed(&corpus_dir("flv_tags"), "sps", &data[13..13 + len])?;
                }
            }
            _ => {}
        }
    }
    ensure!(amf >= 3 && video == 3 && audio == 3, "too few payloads");
    write_token_seeds()
}

/// Tokens signed with the harness's first key, in its input layout.
fn write_token_seeds() -> anyhow::Result<()> {
    let key = SigningKey {
        id: "k1".into(),
        secret: b"fuzzing key one, 32 bytes long!!".to_vec(),
    };
    let now: u64 = 1_800_000_000;
    let ip = Ipv4Addr::new(192, 0, 2, 7);
    for (name, scope, bound) in [
        ("playback", Scope::Playback, false),
        ("thumbnail-bound", Scope::Thumbnail, true),
    ] {
        let grant = Grant {
            stream: "demo",
            expires: now + 60,
            scope,
            client_ip: bound.then_some(IpAddr::V4(ip)),
        };
        let signed = token::sign(&key, &grant).context("signing")?;
        let mut input = now.to_be_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(&u64::from(u32::from(ip)).to_be_bytes());
        input.extend_from_slice(format!("demo\n{signed}").as_bytes());
        write_seed(&corpus_dir("playback_token"), name, &input)?;
    }
    Ok(())
}

fn write_seed(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), data)?;
    Ok(())
}
