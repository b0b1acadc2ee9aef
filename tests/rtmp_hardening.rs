//! Hostile and unusual RTMP input, sent by a crafted client: chunk sizes and
//! message lengths, extended timestamps, timestamp wraps and jumps, broken
//! sessions, AMF with the wrong types, metadata variants, single-track
//! publishers, codecs the server refuses, frozen and duplicate publishers.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::rtmp_client::{
    AUDIO, COMMAND_AMF0, Chunk, DATA_AMF0, DATA_AMF3, RtmpClient, TestMedia, Track, Tracks, VIDEO,
    rss_kib,
};
use common::*;
use m3u8_rs::{AlternativeMediaType, MediaPlaylist};
use rml_rtmp::rml_amf0::{self, Amf0Value};

const READY: Duration = Duration::from_secs(30);
const CLOSE: Duration = Duration::from_secs(3);

/// Timestamps as the media has them.
fn plain(_: Track, ms: u64) -> u32 {
    ms as u32
}

/// Polls a media playlist until `check` accepts it.
fn wait_playlist(
    url: &str,
    what: &str,
    check: impl Fn(&MediaPlaylist) -> anyhow::Result<()>,
) -> MediaPlaylist {
    wait_until(what, READY, || {
        let playlist = fetch_media(url)?;
        check(&playlist)?;
        Ok(playlist)
    })
}

fn ended(playlist: &MediaPlaylist) -> anyhow::Result<()> {
    ensure!(playlist.end_list, "no ENDLIST yet");
    Ok(())
}

/// EXTINF total, and a check that no segment is longer than the target.
fn check_durations(url: &str, playlist: &MediaPlaylist) -> f64 {
    let target = playlist.target_duration as f32;
    for segment in &playlist.segments {
        assert!(
            segment.duration > 0.0 && segment.duration <= target + 0.001,
            "{url}: EXTINF {} with target {target}",
            segment.duration
        );
    }
    playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .sum()
}

/// Decodes the first segment of a rendition; returns the frames decoded.
fn decode_first(server: &Server, stream: &str, rendition: &str, playlist: &MediaPlaylist) -> u64 {
    let url = server.media_url(stream, rendition);
    let segment = playlist.segments.first().expect("a segment");
    let init = segment.map.as_ref().expect("EXT-X-MAP");
    let init = get_ok(&resolve(&url, &init.uri)).body;
    let data = get_ok(&resolve(&url, &segment.uri)).body;
    let frames = decode_fragment(&init, &data).unwrap_or_else(|e| panic!("{url}: {e:#}"));
    frames.values().sum()
}

fn logged(server: &Server, needle: &str) -> bool {
    server.logs().contains(needle)
}

fn assert_no_panic(server: &mut Server) {
    server.assert_running();
    assert!(!logged(server, "panicked"), "a task panicked");
}

/// A connection that has connected to `live` (and created a stream).
fn connected(server: &Server) -> RtmpClient {
    let mut client = RtmpClient::connect(server.rtmp_addr).expect("handshake");
    client.connect_app("live").expect("connect");
    client
}

// ---------------------------------------------------------------------------
// 1 and 4: chunk sizes, message lengths, broken sessions

#[test]
fn hostile_chunk_streams_close_only_their_connection() {
    let mut server = ServerConfig::passthrough_only().start();
    let addr = server.rtmp_addr;
    let _ffmpeg = publish_ffmpeg(&server.rtmp_url("secretkey1"), 25.0, 320, 240);
    let cam1 = server.media_url("cam1", "source");
    let first = wait_until("cam1 segments", READY, || {
        let playlist = fetch_media(&cam1)?;
        last_sequence(&playlist).ok_or_else(|| anyhow::anyhow!("no segment yet"))
    });
    let rss_before = rss_kib(server.pid()).expect("VmRSS");

    // Invalid chunk sizes.
    for size in [0u32, 0x8000_0000] {
        let mut client = connected(&server);
        client.set_chunk_size(size).expect("send");
        assert!(
            client.closed_within(CLOSE),
            "chunk size {size:#x} kept open"
        );
    }

    // The largest chunk size, then 16 MB of an unknown type, four at once.
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut client = RtmpClient::connect(addr).expect("handshake");
                client.connect_app("live").expect("connect");
                client.set_chunk_size(0x7FFF_FFFF).expect("send");
                let header = Chunk {
                    fmt: 0,
                    csid: 5,
                    timestamp: 0,
                    extended: false,
                    length: 0xFF_FFFF,
                    type_id: 0x42,
                    stream_id: 0,
                    payload: &[],
                };
                let mut sent = 0usize;
                let block = vec![0x5au8; 64 * 1024];
                if client.send_chunk(&header).is_ok() {
                    while sent < 0xFF_FFFF && client.send_raw(&block).is_ok() {
                        sent += block.len();
                    }
                }
                (sent, client.closed_within(CLOSE))
            })
        })
        .collect();
    for attacker in attackers {
        let (sent, closed) = attacker.join().expect("attacker thread");
        assert!(closed, "a 16 MB message did not close the connection");
        assert!(sent < 0xFF_FFFF, "the server read all 16 MB ({sent} bytes)");
    }

    // Under the limit, but only 1 KB of 7 MB arrives: then a disconnect in
    // the middle of the chunk.
    let mut partial = Vec::new();
    for _ in 0..8 {
        let mut client = connected(&server);
        client.set_chunk_size(0x7FFF_FFFF).expect("send");
        let header = Chunk {
            fmt: 0,
            csid: 6,
            timestamp: 0,
            extended: false,
            length: 7 << 20,
            type_id: VIDEO,
            stream_id: 1,
            payload: &[0u8; 1024],
        };
        client.send_chunk(&header).expect("send");
        partial.push(client);
    }
    thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(server.pid()).expect("VmRSS");
    for client in &partial {
        client.shutdown();
    }
    assert!(
        rss_after < rss_before + 16 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    for needle in [
        "chunk size 0 is invalid",
        "chunk size 2147483648 is invalid",
        "message of type 66 declares 16777215 bytes",
    ] {
        assert!(logged(&server, needle), "log lacks {needle:?}");
    }
    wait_until("cam1 segments after the attacks", READY, || {
        let last = last_sequence(&fetch_media(&cam1)?);
        ensure!(last > Some(first + 1), "cam1 at {last:?}, was {first}");
        Ok(())
    });
    assert_no_panic(&mut server);
}

#[test]
fn malformed_sessions_never_take_the_server_down() {
    let mut server = ServerConfig::passthrough_only().start();
    // What each sends, and whether the server must close the connection
    // (`Some(false)`: it must keep serving it; `None`: either).
    let cases: Vec<(&str, Vec<u8>, Option<bool>)> = vec![
        (
            "continuation without a header",
            vec![0xc6, 1, 2, 3],
            Some(true),
        ),
        (
            "interleaved partial messages",
            [
                chunk(0, 6, 0, 300, VIDEO, &[0; 128]),
                chunk(0, 4, 0, 20, AUDIO, &[0; 20]),
            ]
            .concat(),
            Some(false),
        ),
        (
            "new header mid-message",
            [
                chunk(0, 6, 0, 300, VIDEO, &[0; 128]),
                chunk(1, 6, 5, 10, VIDEO, &[]),
            ]
            .concat(),
            Some(true),
        ),
        // A type-1 header whose extended delta is below 0xFFFFFF.
        (
            "small extended delta",
            {
                let mut bytes = chunk(0, 6, 0, 2, VIDEO, &[0x17, 2]);
                bytes.extend([0x46, 0xff, 0xff, 0xff, 0, 0, 2, VIDEO, 0, 0, 0, 5, 0x17, 2]);
                bytes
            },
            Some(false),
        ),
        (
            "a command of two values",
            {
                let body = amf(&[text("connect"), Amf0Value::Number(1.0)]);
                chunk(0, 3, 0, body.len() as u32, COMMAND_AMF0, &body)
            },
            Some(false),
        ),
        (
            "a deeply nested command",
            {
                let mut body = amf(&[text("connect"), Amf0Value::Number(1.0)]);
                for _ in 0..20_000 {
                    body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
                }
                let mut bytes = chunk(0, 2, 0, 4, 1, &(1u32 << 20).to_be_bytes());
                bytes.extend(chunk(0, 3, 0, body.len() as u32, COMMAND_AMF0, &body));
                bytes
            },
            Some(false),
        ),
        (
            "many chunk streams",
            {
                let mut bytes = Vec::new();
                for id in 0..200u8 {
                    bytes.extend([0x00, id]);
                    bytes.extend(&chunk(0, 3, 0, 0, 0x30, &[])[1..]);
                }
                bytes
            },
            Some(true),
        ),
        (
            "garbage",
            (0..4000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            None,
        ),
    ];
    for round in 0..3 {
        for (what, bytes, closes) in &cases {
            let mut client = RtmpClient::connect(server.rtmp_addr).expect("handshake");
            let _ = client.send_raw(bytes);
            if round == 2 {
                // Disconnect right after, maybe mid-chunk.
                client.shutdown();
                continue;
            }
            let wait = if closes.is_some() {
                CLOSE
            } else {
                Duration::from_millis(200)
            };
            let closed = client.closed_within(wait);
            if let Some(closes) = closes {
                assert_eq!(closed, *closes, "{what}: closed {closed}");
            }
            if !closed {
                // Still a working session: it answers a command.
                client
                    .connect_app("live")
                    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            }
        }
    }
    assert_no_panic(&mut server);
    for needle in [
        "continues a message header it never sent",
        "starts a new message before finishing the last one",
        "more than 64 chunk streams",
    ] {
        assert!(logged(&server, needle), "log lacks {needle:?}");
    }

    // The listener still serves a real publisher.
    let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
    client
        .send_media(TestMedia::get(), Tracks::BOTH, 0, 3000, 4.0, &plain)
        .expect("send");
    wait_for_master(&server.master_url("cam1"), READY);
    assert_no_panic(&mut server);
}

fn chunk(fmt: u8, csid: u32, timestamp: u32, length: u32, type_id: u8, payload: &[u8]) -> Vec<u8> {
    Chunk {
        fmt,
        csid,
        timestamp,
        extended: false,
        length,
        type_id,
        stream_id: 1,
        payload,
    }
    .encode()
}

fn amf(values: &[Amf0Value]) -> Vec<u8> {
    rml_amf0::serialize(&values.to_vec()).expect("AMF0")
}

fn text(value: &str) -> Amf0Value {
    Amf0Value::Utf8String(value.into())
}

// ---------------------------------------------------------------------------
// 2 and 3: timestamps

/// Publishes `seconds` of both tracks with `ts`, leaves, and returns the
/// ended source and audio playlists.
fn publish_with_timestamps(
    server: &Server,
    seconds: u64,
    ts: &dyn Fn(Track, u64) -> u32,
) -> (MediaPlaylist, MediaPlaylist) {
    let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
    client
        .send_media(TestMedia::get(), Tracks::BOTH, 0, seconds * 1000, 4.0, ts)
        .expect("send");
    assert!(!client.closed_within(Duration::from_millis(300)), "closed");
    client.shutdown();
    let source = wait_playlist(&server.media_url("cam1", "source"), "ENDLIST", ended);
    let audio = wait_playlist(&server.media_url("cam1", "audio"), "ENDLIST", ended);
    (source, audio)
}

#[test]
fn extended_timestamps_from_the_start() {
    let mut server = ServerConfig::passthrough_only().start();
    // Above 24 bits from the first message; frames are larger than the
    // 128-byte chunk size, so type-3 continuations carry the extended field.
    let start = 0x0100_0000 + 12_345;
    let ts = move |_: Track, ms: u64| start + ms as u32;
    let (source, audio) = publish_with_timestamps(&server, 7, &ts);

    let video_secs = check_durations("source", &source);
    let audio_secs = check_durations("audio", &audio);
    assert!(
        (video_secs - 7.0).abs() < 1.0,
        "video EXTINF total {video_secs}"
    );
    assert!(
        (audio_secs - 7.0).abs() < 1.0,
        "audio EXTINF total {audio_secs}"
    );
    assert!(decode_first(&server, "cam1", "source", &source) >= 30);
    assert!(decode_first(&server, "cam1", "audio", &audio) >= 40);
    assert_no_panic(&mut server);
}

#[test]
fn timestamp_wrap_and_jumps_keep_segments_sane() {
    let mut server = ServerConfig::passthrough_only().start();
    // Crosses 2^32 at 2 s; video steps 10 s back at 4 s and an hour forward
    // at 7 s; audio jumps an hour forward at 5.5 s on its own.
    let base = u32::MAX - 2_000;
    let ts = move |track: Track, ms: u64| {
        let mut t = base.wrapping_add(ms as u32);
        match track {
            Track::Video => {
                if ms >= 4_000 {
                    t = t.wrapping_sub(10_000);
                }
                if ms >= 7_000 {
                    t = t.wrapping_add(3_600_000);
                }
            }
            Track::Audio if ms >= 5_500 => t = t.wrapping_add(3_600_000),
            Track::Audio => {}
        }
        t
    };
    let (source, audio) = publish_with_timestamps(&server, 12, &ts);

    let video_secs = check_durations("source", &source);
    let audio_secs = check_durations("audio", &audio);
    assert!(
        (video_secs - 12.0).abs() < 1.5,
        "video EXTINF total {video_secs}"
    );
    assert!(
        (audio_secs - 12.0).abs() < 1.5,
        "audio EXTINF total {audio_secs}"
    );
    assert!(audio.segments.len() >= 5, "audio segments: {audio:?}");
    for (name, playlist) in [("source", &source), ("audio", &audio)] {
        assert!(
            playlist.segments.iter().any(|s| s.discontinuity),
            "{name}: the jumps are marked with #EXT-X-DISCONTINUITY"
        );
    }
    let log = server.logs();
    let jumps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("timestamps jumped"))
        .collect();
    assert!(
        jumps
            .iter()
            .any(|l| l.contains("video") && l.contains("step_ms=-99"))
            && jumps
                .iter()
                .any(|l| l.contains("audio") && l.contains("step_ms=36")),
        "jumps logged: {jumps:?}"
    );
    assert_no_panic(&mut server);
}

// ---------------------------------------------------------------------------
// 5: commands with the wrong types

#[test]
fn commands_with_wrong_types_get_errors_or_are_ignored() {
    let mut server = ServerConfig::passthrough_only().start();
    let wrong = [
        Amf0Value::Boolean(true),
        Amf0Value::Null,
        Amf0Value::Number(7.0),
    ];

    // publish with a name that is not a string, or none: an error status.
    for name in wrong.iter().cloned().map(Some).chain([None]) {
        let mut client = connected(&server);
        let stream = client.create_stream().expect("createStream");
        let mut args: Vec<Amf0Value> = name.clone().into_iter().collect();
        args.push(text("live"));
        if name.is_none() {
            args.clear();
        }
        client
            .command("publish", stream, Amf0Value::Null, &args)
            .expect("send");
        let status = client
            .wait_for("publish error", CLOSE, |m| {
                m.command() == Some("_error")
                    || m.status("level").is_some_and(|l| l.contains("error"))
            })
            .unwrap_or_else(|e| panic!("publish({name:?}): {e:#}"));
        assert_eq!(status.status("code"), Some("NetStream.Publish.BadName"));
        assert_eq!(status.status("level"), Some("error"));
        client
            .create_stream()
            .expect("session alive after a bad publish");
    }

    // Other commands with wrong values, non-numeric transaction ids,
    // unknown commands: ignored, the session goes on.
    let mut client = connected(&server);
    for command in ["releaseStream", "FCPublish", "deleteStream", "FCUnpublish"] {
        for value in &wrong {
            client
                .command(command, 0, Amf0Value::Null, std::slice::from_ref(value))
                .expect("send");
        }
        client
            .command(command, 0, Amf0Value::Null, &[])
            .expect("send");
    }
    for id in [text("seven"), Amf0Value::Null, Amf0Value::Boolean(false)] {
        client
            .send_values(0, &[text("createStream"), id, Amf0Value::Null])
            .expect("send");
    }
    client
        .send_values(0, &[Amf0Value::Number(3.0)])
        .expect("send");
    client
        .command(
            "someUnknownCommand",
            0,
            text("x"),
            &[Amf0Value::Number(1.0)],
        )
        .expect("send");
    client
        .create_stream()
        .expect("session alive after odd commands");

    let mut ffmpeg = publish_ffmpeg(&server.rtmp_url("secretkey1"), 4.0, 320, 240);
    wait_for_master(&server.master_url("cam1"), READY);
    ffmpeg.wait_success(READY);
    assert_no_panic(&mut server);
}

// ---------------------------------------------------------------------------
// 6: metadata variants

#[test]
fn metadata_in_any_shape_is_accepted() {
    let mut server = ServerConfig::passthrough_only().start();
    let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
    let stream = client.stream_id;
    let mut props = HashMap::new();
    props.insert("width".to_string(), Amf0Value::Number(320.0));
    props.insert("videocodecid".to_string(), Amf0Value::Number(7.0));
    let mut wrong = HashMap::new();
    wrong.insert("width".to_string(), text("wide"));
    wrong.insert("framerate".to_string(), Amf0Value::Boolean(true));
    let set = text("@setDataFrame");
    let on = text("onMetaData");
    let mut ecma = amf(&[set.clone(), on.clone()]);
    ecma.extend([0x08, 0, 0, 0, 1, 0, 5]);
    ecma.extend(b"width");
    ecma.extend(amf(&[Amf0Value::Number(320.0)]));
    ecma.extend([0, 0, 9]);
    let variants: Vec<Vec<u8>> = vec![
        amf(&[set.clone(), on.clone(), Amf0Value::Object(props.clone())]),
        ecma,
        amf(&[on.clone(), Amf0Value::Object(props)]),
        amf(&[set.clone(), on.clone(), Amf0Value::Object(wrong)]),
        amf(&[set.clone(), on.clone()]),
        amf(std::slice::from_ref(&set)),
        amf(&[set, Amf0Value::Number(1.0), Amf0Value::Null]),
        vec![0x11, 0x0a, 0x0b],
        Vec::new(),
    ];
    let send_all = |client: &mut RtmpClient| {
        for body in &variants {
            for type_id in [DATA_AMF0, DATA_AMF3] {
                for on_stream in [stream, 0] {
                    client
                        .send_message(5, type_id, on_stream, 0, body)
                        .expect("send metadata");
                }
            }
        }
    };
    send_all(&mut client);
    let media = TestMedia::get();
    client
        .send_media(media, Tracks::BOTH, 0, 3000, 4.0, &plain)
        .expect("send");
    send_all(&mut client);
    client
        .send_media(media, Tracks::BOTH, 3000, 6000, 4.0, &plain)
        .expect("send media after metadata");
    assert!(
        !client.closed_within(Duration::from_millis(300)),
        "metadata closed the publish"
    );
    client.shutdown();
    let source = wait_playlist(&server.media_url("cam1", "source"), "ENDLIST", ended);
    let secs = check_durations("source", &source);
    assert!((secs - 6.0).abs() < 1.0, "EXTINF total {secs}");
    assert_no_panic(&mut server);
}

// ---------------------------------------------------------------------------
// 7: one track only

#[test]
fn single_track_publishers_list_only_their_track() {
    let server = ServerConfig::passthrough_only().start();
    let media = TestMedia::get();
    let started = Instant::now();
    let addr = server.rtmp_addr;
    let audio_only = thread::spawn(move || {
        let mut client = RtmpClient::publisher(addr, "secretkey1").expect("publish");
        client
            .send_media(TestMedia::get(), Tracks::AUDIO, 0, 8000, 2.0, &plain)
            .expect("send");
        client
    });
    let mut video = RtmpClient::publisher(addr, "secretkey2").expect("publish");
    video
        .send_media(media, Tracks::VIDEO, 0, 8000, 2.0, &plain)
        .expect("send");
    let _audio = audio_only.join().expect("audio publisher");

    let master = parse_master(&wait_for_master(&server.master_url("cam1"), READY).body)
        .expect("audio-only master");
    assert_eq!(master.variants.len(), 1, "audio-only variants: {master:?}");
    assert_eq!(master.variants[0].codecs.as_deref(), Some("mp4a.40.2"));
    assert!(master.variants[0].resolution.is_none());

    let master = parse_master(&wait_for_master(&server.master_url("cam2"), READY).body)
        .expect("video-only master");
    assert!(
        !master
            .alternatives
            .iter()
            .any(|m| m.media_type == AlternativeMediaType::Audio),
        "video-only audio group: {master:?}"
    );
    let codecs = master.variants[0].codecs.as_deref().unwrap_or_default();
    assert!(
        codecs.starts_with("avc1.") && !codecs.contains("mp4a"),
        "{codecs}"
    );
    assert!(master.variants[0].audio.is_none());
    // 8 s of media sent at twice real time: the track wait (1.5 s) ended,
    // it did not hold the streams until the publishers left.
    assert!(started.elapsed() < Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// 8: codecs the server does not carry

#[test]
fn unsupported_video_codecs_are_refused_with_a_status() {
    let mut server = ServerConfig::passthrough_only().start();
    let headers: [(&str, Vec<u8>); 4] = [
        ("hvc1", [&[0x90][..], b"hvc1", &[1, 2, 3]].concat()),
        ("av01", [&[0x90][..], b"av01", &[0x81, 0, 0]].concat()),
        ("vp09", [&[0x90][..], b"vp09", &[1, 0, 0]].concat()),
        ("HEVC", vec![0x1c, 0, 0, 0, 0, 1, 2, 3]),
    ];
    for (codec, header) in headers {
        let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
        let stream = client.stream_id;
        client
            .send_message(6, VIDEO, stream, 0, &header)
            .expect("send");
        let status = client
            .wait_for("refusal", CLOSE, |m| {
                m.status("code") == Some("NetStream.Publish.Rejected")
            })
            .unwrap_or_else(|e| panic!("{codec}: {e:#}"));
        assert_eq!(status.status("level"), Some("error"));
        let description = status.status("description").unwrap_or_default();
        assert!(description.contains(codec), "{codec}: {description:?}");
        assert!(client.closed_within(CLOSE), "{codec}: still open");
        // Media after the refusal goes nowhere.
        let master = get(&server.master_url("cam1")).expect("GET");
        assert_ne!(master.status, 200, "{codec}: the stream has output");
    }
    assert!(!logged(&server, "secretkey1"), "a stream key was logged");
    assert_no_panic(&mut server);
}

// ---------------------------------------------------------------------------
// 9: frozen and duplicate publishers

#[test]
fn frozen_publisher_is_dropped_after_the_idle_timeout() {
    let mut server = ServerConfig::passthrough_only()
        .ingest("idle_timeout_secs = 2\n")
        .start();
    let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
    client
        .send_media(TestMedia::get(), Tracks::BOTH, 0, 5000, 2.0, &plain)
        .expect("send");
    // The network freezes: the socket stays open, nothing more is sent.
    let frozen = Instant::now();
    wait_playlist(&server.media_url("cam1", "source"), "ENDLIST", ended);
    assert!(
        frozen.elapsed() < Duration::from_secs(2 + 4),
        "ENDLIST after {:?}",
        frozen.elapsed()
    );
    assert!(logged(&server, "no data for 2 s"));
    drop(client);
    assert_no_panic(&mut server);
}

/// A publisher that has sent a second of media.
fn live_publisher(server: &Server) -> RtmpClient {
    let mut client = RtmpClient::publisher(server.rtmp_addr, "secretkey1").expect("publish");
    client
        .send_media(TestMedia::get(), Tracks::BOTH, 0, 1000, 2.0, &plain)
        .expect("send");
    client
}

#[test]
fn duplicate_publisher_takes_over_by_default() {
    let mut server = ServerConfig::passthrough_only().start();
    let mut first = live_publisher(&server);
    let mut second = RtmpClient::publisher(server.rtmp_addr, "secretkey1")
        .expect("the newcomer's publish starts");
    assert!(first.closed_within(CLOSE), "the old publisher stays");
    second
        .send_media(TestMedia::get(), Tracks::BOTH, 0, 3000, 2.0, &plain)
        .expect("the newcomer sends");
    assert!(logged(&server, "publisher taken over"));
    assert_no_panic(&mut server);
}

#[test]
fn duplicate_publisher_is_refused_with_bad_name_when_configured() {
    let mut server = ServerConfig::passthrough_only()
        .ingest("on_duplicate = \"reject\"\n")
        .start();
    let mut first = live_publisher(&server);
    let mut second = connected(&server);
    second.create_stream().expect("createStream");
    let status = second.publish("secretkey1").expect("a status");
    assert_eq!(status.status("code"), Some("NetStream.Publish.BadName"));
    assert!(second.closed_within(CLOSE), "the refused publisher stays");
    first
        .send_media(TestMedia::get(), Tracks::BOTH, 1000, 2000, 2.0, &plain)
        .expect("the first publisher goes on");
    assert!(!first.closed_within(Duration::from_millis(500)));
    assert!(logged(&server, "refused a second publisher"));
    assert_no_panic(&mut server);
}

// ---------------------------------------------------------------------------
// 14. Hostile stream keys

/// Keys with path, shell or pipeline characters, NUL, other case and
/// overlong lengths are refused at the one gate, with a status, and never
/// logged; the server goes on serving a real publisher.
#[test]
fn hostile_stream_keys_are_refused_at_the_gate() {
    let mut server = ServerConfig::passthrough_only().start();
    let long = "k".repeat(300);
    // Just under the longest AMF0 short string.
    let huge = "k".repeat(65_000);
    let hostile = [
        "../secretkey1",
        "secretkey1%2f..",
        "secret\\key1",
        "secret\0key1",
        "secretkey1; rm -rf /",
        "videotestsrc ! fakesink",
        "SECRETKEY1",
        long.as_str(),
        huge.as_str(),
    ];
    for key in hostile {
        let mut client = connected(&server);
        client.create_stream().expect("createStream");
        let status = client.publish(key).expect("a status");
        assert_eq!(
            status.status("code"),
            Some("NetStream.Publish.Denied"),
            "key of {} bytes",
            key.len()
        );
        assert!(client.closed_within(CLOSE), "a refused publisher is closed");
    }
    let log = server.logs();
    for key in [
        "../secretkey1",
        "rm -rf",
        "videotestsrc",
        "SECRETKEY1",
        long.as_str(),
    ] {
        assert!(!log.contains(key), "a refused key was logged: {key}");
    }
    let mut real = live_publisher(&server);
    assert!(
        !real.closed_within(Duration::from_millis(500)),
        "a real publisher goes on"
    );
    assert_no_panic(&mut server);
}
