//! The bodies of bigfoot's fuzz targets, one function per target.
//!
//! Each function takes the fuzzer's bytes, runs one parser of untrusted
//! input the way the server runs it, and checks what must hold of the
//! result. The `fuzz_targets/` binaries call these under libFuzzer, and the
//! server's `tests/fuzz_corpus.rs` includes this file to replay
//! `fuzz/corpus/` in the normal test suite, so a found crash stays fixed.
//!
//! Nothing here opens a socket, reads a file or looks at the clock.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use bigfoot::config::{Config, IngestSettings};
use bigfoot::deliver::route::{self, Route};
use bigfoot::deliver::token::{self, Grant, Scope, SigningKey};
use bigfoot::ingest::amf;
use bigfoot::ingest::avc::{self, AvcConfig};
use bigfoot::ingest::chunk::{self, ChunkReader, RawMessage};
use bigfoot::ingest::flv::{self, AudioTag, VideoTag};
use bigfoot::ingest::screen::{
    MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, Screen, Verdict, publish_key, strip_query,
};
use bigfoot::ingest::timestamp::TrackClock;
use bigfoot::package::isobmff::{FragmentInfo, InitInfo};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// Length of the C1 and C2 handshake packets.
const HANDSHAKE_PACKET_LEN: usize = 1536;
/// The RTMP application our adapter accepts, as in the shipped config.
const APP: &str = "live";
/// Bit of an `rtmp_session` input's second byte: the handshake is in the
/// input rather than made up by the harness.
const RAW_HANDSHAKE: u8 = 1;

/// How far one `rtmp_session` input drove the session, so the replay test
/// can check that the capture seeds reach the media path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    pub handshake_done: bool,
    pub connected: bool,
    pub publishing: bool,
    /// Video messages of a publishing stream that parsed as FLV tags.
    pub video_tags: usize,
    /// Audio messages of a publishing stream that parsed as FLV tags.
    pub audio_tags: usize,
    /// AVC sequence headers whose `avcC` and SPS parsed.
    pub avc_configs: usize,
    /// Panics of `rml_rtmp` that the adapter contained.
    pub library_panics: usize,
}

/// The bytes an RTMP publisher sends, through the handshake, the chunk
/// reader, the command checks, the `rml_rtmp` server session and what our
/// ingest adapter does with its events.
///
/// Byte 0 picks how the rest is split into reads (`n * n` bytes, 0 for one
/// read). Bit 0 of byte 1 says the handshake (C0, C1, C2) is in the input;
/// when clear, the harness sends a plain handshake itself and all the rest
/// is RTMP chunks.
pub fn rtmp_session(data: &[u8]) -> SessionReport {
    let [split, mode, rest @ ..] = data else {
        return SessionReport::default();
    };
    let read_len = match usize::from(*split) {
        0 => usize::MAX,
        n => n * n,
    };
    let input = if mode & RAW_HANDSHAKE == 0 {
        plain_handshake(rest)
    } else {
        rest.to_vec()
    };

    let Some(mut peer) = Publisher::new() else {
        return SessionReport::default();
    };
    for read in input.chunks(read_len) {
        if peer.read(read).is_err() {
            break;
        }
    }
    peer.report
}

/// C0, an all-zero C1 (no digest, so the original RTMP handshake) and an
/// all-zero C2, followed by `chunks`.
fn plain_handshake(chunks: &[u8]) -> Vec<u8> {
    let mut input = vec![3u8];
    input.resize(1 + 2 * HANDSHAKE_PACKET_LEN, 0);
    input.extend_from_slice(chunks);
    input
}

/// The connection was closed, as the adapter would close it.
struct Closed;

/// The server side of one RTMP connection, as `ingest::session` serves it:
/// a bounded [`ChunkReader`] in front, each whole message checked and handed
/// to `rml_rtmp` as one chunk, the `live` app, one publish per connection,
/// no playback, and each audio and video message parsed as an FLV tag.
///
/// TODO(fuzz): this mirrors the adapter's private message checks; if the
/// session grows a pure entry point for them, call that instead.
struct Publisher {
    handshake: Option<Handshake>,
    reader: ChunkReader,
    session: ServerSession,
    publishing: bool,
    closing: bool,
    screen: Screen,
    video_clock: TrackClock,
    audio_clock: TrackClock,
    last_video_ms: Option<i64>,
    last_audio_ms: Option<i64>,
    report: SessionReport,
}

impl Publisher {
    fn new() -> Option<Self> {
        let (session, initial) = ServerSession::new(ServerSessionConfig::new()).ok()?;
        let max_message_bytes = IngestSettings::default().max_message_bytes;
        let mut publisher = Self {
            handshake: Some(Handshake::new(PeerType::Server)),
            reader: ChunkReader::new(max_message_bytes),
            session,
            publishing: false,
            closing: false,
            screen: Screen::new(),
            video_clock: TrackClock::default(),
            audio_clock: TrackClock::default(),
            last_video_ms: None,
            last_audio_ms: None,
            report: SessionReport::default(),
        };

        let mut unchunked = Vec::new();
        let max_chunk = chunk::set_chunk_size(chunk::MAX_CHUNK_SIZE);
        chunk::single_chunk(2, &max_chunk, &mut unchunked);
        let mut results = publisher.handle(&unchunked).ok()?;
        results.extend(initial);
        publisher.apply(results).ok()?;
        Some(publisher)
    }

    /// One read from the socket; `Err` once the adapter would hang up.
    fn read(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let Some(handshake) = &mut self.handshake else {
            return self.input(bytes);
        };
        match handshake.process_bytes(bytes).map_err(|_| Closed)? {
            HandshakeProcessResult::InProgress { .. } => Ok(()),
            HandshakeProcessResult::Completed {
                remaining_bytes, ..
            } => {
                self.handshake = None;
                self.report.handshake_done = true;
                self.input(&remaining_bytes)
            }
        }
    }

    fn input(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        if bytes.is_empty() {
            return Ok(());
        }
        for message in self.reader.push(bytes).map_err(|_| Closed)? {
            if self.closing {
                break;
            }
            self.on_message(message)?;
        }
        if self.closing { Err(Closed) } else { Ok(()) }
    }

    /// The adapter's checks on one whole message before `rml_rtmp` sees it.
    fn on_message(&mut self, message: RawMessage) -> Result<(), Closed> {
        match self.screen.check(&message) {
            Verdict::Pass => {}
            Verdict::Ignore(_) | Verdict::BadPublish => return Ok(()),
            Verdict::Close(_) => return Err(Closed),
        }
        let mut bytes = Vec::with_capacity(message.payload.len() + 16);
        chunk::single_chunk(3, &message, &mut bytes);
        let results = self.handle(&bytes)?;
        self.apply(results)
    }

    /// `rml_rtmp` on well-formed chunks; the adapter contains its panics to
    /// the connection. (Under libFuzzer any panic, caught or not, is a
    /// crash, so a panic that gets past the checks above is still found.)
    fn handle(&mut self, bytes: &[u8]) -> Result<Vec<ServerSessionResult>, Closed> {
        let session = &mut self.session;
        match panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes))) {
            Ok(results) => results.map_err(|_| Closed),
            Err(_) => {
                self.report.library_panics += 1;
                Err(Closed)
            }
        }
    }

    fn apply(&mut self, results: Vec<ServerSessionResult>) -> Result<(), Closed> {
        let mut queue = VecDeque::from(results);
        while let Some(result) = queue.pop_front() {
            if let ServerSessionResult::RaisedEvent(event) = result {
                queue.extend(self.on_event(event)?);
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: ServerSessionEvent) -> Result<Vec<ServerSessionResult>, Closed> {
        let results = match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if strip_query(&app_name) == APP {
                    self.report.connected = true;
                    self.session.accept_request(request_id)
                } else {
                    self.closing = true;
                    self.session
                        .reject_request(request_id, "rejected", "unknown app")
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.publishing {
                    self.session
                        .reject_request(request_id, "bad name", "publishing")
                } else if publish_key(&stream_key).is_none() {
                    self.closing = true;
                    self.session
                        .reject_request(request_id, "denied", "malformed key")
                } else {
                    self.publishing = true;
                    self.report.publishing = true;
                    self.session.accept_request(request_id)
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.closing = true;
                self.session
                    .reject_request(request_id, "failed", "no playback")
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.publishing = false;
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.on_video(&data, timestamp.value);
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.on_audio(&data, timestamp.value);
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        };
        results.map_err(|_| Closed)
    }

    fn on_video(&mut self, data: &Bytes, raw_ts: u32) {
        if !self.publishing {
            return;
        }
        let Ok(tag) = flv::parse_video(data) else {
            return;
        };
        self.report.video_tags += 1;
        match tag {
            VideoTag::AvcSequenceHeader(record) => {
                if avc_sequence_header(record) {
                    self.report.avc_configs += 1;
                }
            }
            VideoTag::AvcFrame { .. } => {
                tick(&mut self.video_clock, &mut self.last_video_ms, raw_ts);
            }
            VideoTag::Unsupported(_) => self.closing = true,
            VideoTag::AvcEndOfSequence | VideoTag::Ignored => {}
        }
    }

    fn on_audio(&mut self, data: &Bytes, raw_ts: u32) {
        if !self.publishing {
            return;
        }
        let Ok(tag) = flv::parse_audio(data) else {
            return;
        };
        self.report.audio_tags += 1;
        if let AudioTag::AacFrame(_) = tag {
            tick(&mut self.audio_clock, &mut self.last_audio_ms, raw_ts);
        }
    }
}

/// A track's output time, which must only move forward.
fn tick(clock: &mut TrackClock, last_ms: &mut Option<i64>, raw: u32) {
    let ms = clock.tick(raw).ms;
    if let Some(last) = *last_ms {
        assert!(
            ms > last,
            "output time went from {last} to {ms} ms at raw {raw}"
        );
    }
    *last_ms = Some(ms);
}

/// Parses an `avcC` record as ingest does; whether it was usable.
fn avc_sequence_header(record: Bytes) -> bool {
    let Ok(config) = AvcConfig::parse(record.clone()) else {
        return false;
    };
    assert!((16..=16384).contains(&config.width), "{config:?}");
    assert!((16..=16384).contains(&config.height), "{config:?}");
    assert_eq!(config.record, record, "the record is kept whole");
    true
}

/// AMF0 command bodies, through the checks ingest runs before `rml_rtmp`
/// decodes a command (nesting depth without recursion, then
/// `rml_amf0::deserialize`, then the command's shape). Byte 0 picks the
/// message type: odd for an AMF3 command (type 17), even for AMF0 (20).
pub fn amf0(data: &[u8]) {
    let [kind, rest @ ..] = data else {
        return;
    };
    let type_id = if kind & 1 == 1 {
        MSG_COMMAND_AMF3
    } else {
        MSG_COMMAND_AMF0
    };
    let body = amf::command_body(type_id, &Bytes::copy_from_slice(rest));
    let Ok(command) = amf::check_command(&body) else {
        return;
    };
    match command.values.as_slice() {
        [Amf0Value::Utf8String(name), Amf0Value::Number(_), _, ..] => {
            assert_eq!(*name, command.name);
        }
        other => panic!("a command of the wrong shape passed: {other:?}"),
    }
}

/// FLV audio and video message bodies, the `avcC` in AVC sequence headers
/// and an SPS on its own.
pub fn flv_tags(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    match flv::parse_video(&body) {
        Ok(VideoTag::AvcSequenceHeader(record)) => {
            avc_sequence_header(record);
        }
        Ok(VideoTag::AvcFrame { cts_ms, .. }) => {
            assert!((-(1 << 23)..1 << 23).contains(&cts_ms), "cts {cts_ms}");
        }
        _ => {}
    }
    let _ = flv::parse_audio(&body);
    avc_sequence_header(body.clone());
    if let Ok((width, height)) = avc::sps_picture_size(data) {
        assert!((16..=16384).contains(&width) && (16..=16384).contains(&height));
    }
}

/// The keys tokens are checked against in `playback_token`.
fn signing_keys() -> Vec<SigningKey> {
    vec![
        SigningKey {
            id: "k1".into(),
            secret: b"fuzzing key one, 32 bytes long!!".to_vec(),
        },
        SigningKey {
            id: "old".into(),
            secret: b"the key being rotated out".to_vec(),
        },
    ]
}

/// Splits fuzzer bytes into fields for `playback_token`.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        *first
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |value, _| (value << 8) | u64::from(self.byte()))
    }

    fn ip(&mut self) -> IpAddr {
        if self.byte() & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.u64() as u32))
        } else {
            let high = u128::from(self.u64()) << 64;
            IpAddr::V6(Ipv6Addr::from(high | u128::from(self.u64())))
        }
    }

    /// Text up to the next `\n` (lossy UTF-8).
    fn text(&mut self) -> String {
        let end = self
            .data
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.data.len());
        let (text, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or_default();
        String::from_utf8_lossy(text).into_owned()
    }
}

/// Playback tokens: an arbitrary token for an arbitrary stream from an
/// arbitrary address at an arbitrary time must be refused or accepted
/// without panicking; and a token we sign must verify.
///
/// Layout: now (8 bytes), client address, the stream name, `\n`, the token.
pub fn playback_token(data: &[u8]) {
    let keys = signing_keys();
    let mut fields = Fields { data };
    let now = fields.u64();
    let client = fields.ip();
    let stream = fields.text();
    let token = fields.text();

    let _ = token::verify(&token, &stream, &keys, now, 30, client);

    let scope = if now & 1 == 0 {
        Scope::Playback
    } else {
        Scope::Thumbnail
    };
    let grant = Grant {
        stream: &stream,
        expires: now,
        scope,
        client_ip: (now & 2 == 0).then_some(client),
    };
    let Some(signed) = token::sign(&keys[0], &grant) else {
        return;
    };
    assert!(signed.len() <= token::MAX_TOKEN_LEN, "{signed}");
    assert_eq!(
        token::verify(&signed, &stream, &keys, now, 0, client),
        Ok(scope),
        "a token we signed for {stream:?} does not verify"
    );
    let path = format!("/p/{signed}/live/{stream}/master.m3u8");
    let routed = route::signed_route(&path);
    assert_eq!(
        routed.as_ref().map(|signed| signed.token),
        Ok(Some(signed.as_str())),
        "the URL of a token we signed does not route: {path}"
    );
}

/// Request paths, with and without a token prefix.
pub fn request_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let plain = route::route(path);
    if plain.is_ok() {
        assert!(!path.contains("..") && !path.contains("//"), "{path}");
        assert!(
            path.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'_' | b'.' | b'/')),
            "{path}"
        );
    }
    let signed = route::signed_route(path);
    match &signed {
        Ok(signed) => match signed.token {
            Some(token) => {
                assert!(!token.is_empty() && token.len() <= token::MAX_TOKEN_LEN);
                assert!(!token.contains('/'), "{path}");
                assert!(signed.route.stream().is_some(), "{path}");
            }
            None => assert_eq!(plain.as_ref(), Ok(&signed.route), "{path}"),
        },
        Err(_) if !path.starts_with("/p/") => assert!(plain.is_err(), "{path}"),
        Err(_) => {}
    }
    if let Ok(Route::Media { stream, rendition }) = plain {
        assert!(!stream.is_empty() && !rendition.is_empty(), "{path}");
    }
}

/// CMAF init and media segments, as package reads its muxer's output.
pub fn cmaf(data: &[u8]) {
    let _ = InitInfo::parse(data);
    let _ = FragmentInfo::parse(data);
}

/// `config.toml` text: refused with an error or accepted, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text, Path::new("fuzz/config.toml"));
}
