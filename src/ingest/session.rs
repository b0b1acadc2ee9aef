//! One RTMP connection: handshake, chunk reader, `rml_rtmp` session,
//! publish.
//!
//! Bytes from the peer go through [`ChunkReader`] first; each whole message
//! is then checked here (AMF shape and depth, metadata kept out) and handed
//! to `rml_rtmp` as one well-formed chunk.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::IngestError;
use super::amf;
use super::avc::AvcConfig;
use super::chunk::{self, ChunkReader, RawMessage};
use super::flv::{self, AudioTag, VideoTag};
use super::timestamp::{Tick, TrackClock};
use crate::config::Config;
use crate::live::{MediaPacket, PublishRefusal, Publisher, Registry};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// `createStream` commands one connection may send; each costs `rml_rtmp`
/// an entry it never frees. Encoders send one.
const MAX_CREATE_STREAM: u32 = 16;
/// Timestamp jumps logged at `warn` per track; later ones at `debug`.
const LOGGED_JUMPS: u32 = 5;
/// Chunk stream the server's own status messages go out on; `rml_rtmp`
/// uses 2 to 6 for its own.
const STATUS_CHUNK_STREAM: u8 = 7;

/// RTMP message types (RTMP 1.0, 5.4 and 7.1).
const MSG_ACKNOWLEDGEMENT: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_PEER_BANDWIDTH: u8 = 6;
const MSG_AUDIO: u8 = 8;
const MSG_VIDEO: u8 = 9;
const MSG_DATA_AMF3: u8 = 15;
const MSG_COMMAND_AMF3: u8 = 17;
const MSG_DATA_AMF0: u8 = 18;
const MSG_COMMAND_AMF0: u8 = 20;

/// Serves one connection until the peer leaves, is refused or is kicked.
pub async fn run(
    mut socket: TcpStream,
    peer: SocketAddr,
    config: &Config,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let limit = config.ingest.handshake_timeout_secs;
    let leftover = tokio::time::timeout(Duration::from_secs(limit), handshake(&mut socket))
        .await
        .map_err(|_| IngestError::HandshakeTimeout(limit))??;

    let (session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|e| IngestError::Protocol(e.to_string()))?;
    let mut conn = Connection {
        session,
        reader: ChunkReader::new(config.ingest.max_message_bytes),
        socket,
        peer,
        config,
        registry,
        publisher: None,
        video_clock: TrackClock::default(),
        audio_clock: TrackClock::default(),
        jumps_logged: 0,
        jump_pending: false,
        message_stream: 0,
        streams_created: 0,
        closing: false,
        warned_unsupported: false,
    };
    // `rml_rtmp` gets every message as a single chunk, whatever its size.
    let mut unchunked = Vec::new();
    chunk::single_chunk(
        2,
        &chunk::set_chunk_size(chunk::MAX_CHUNK_SIZE),
        &mut unchunked,
    );
    let mut results = conn.handle(&unchunked)?;
    results.extend(initial);
    conn.apply(results).await?;
    let result = conn.serve(leftover, shutdown).await;
    if let Some(publisher) = conn.publisher.take() {
        publisher.leave().await;
    }
    result
}

/// Runs the server side of the RTMP handshake; returns bytes read past it.
async fn handshake(socket: &mut TcpStream) -> Result<Vec<u8>, IngestError> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(IngestError::Handshake(
                "peer closed during handshake".into(),
            ));
        }
        let data = buf.get(..n).unwrap_or_default();
        match handshake
            .process_bytes(data)
            .map_err(|e| IngestError::Handshake(e.to_string()))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

struct Connection<'a> {
    session: ServerSession,
    reader: ChunkReader,
    socket: TcpStream,
    peer: SocketAddr,
    config: &'a Config,
    registry: &'a Registry,
    publisher: Option<Publisher>,
    video_clock: TrackClock,
    audio_clock: TrackClock,
    jumps_logged: u32,
    /// A timestamp jump to report to the stream before the next packet.
    jump_pending: bool,
    /// Message stream of the message being handled.
    message_stream: u32,
    streams_created: u32,
    closing: bool,
    warned_unsupported: bool,
}

impl Connection<'_> {
    async fn serve(
        &mut self,
        leftover: Vec<u8>,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        self.input(&leftover).await?;
        let idle = self.config.ingest.idle_timeout_secs;
        let mut buf = vec![0u8; READ_CHUNK];
        while !self.closing {
            let kicked = self.publisher.as_ref().map(|p| p.kicked.clone());
            let kicked = async move {
                match kicked {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let read = tokio::select! {
                read = tokio::time::timeout(
                    Duration::from_secs(idle),
                    self.socket.read(&mut buf),
                ) => read,
                () = kicked => {
                    info!("publisher disconnected by the stream");
                    return Ok(());
                }
                () = shutdown.cancelled() => return Ok(()),
            };
            let n = read.map_err(|_| IngestError::Idle(idle))??;
            if n == 0 {
                debug!("peer closed the connection");
                return Ok(());
            }
            self.input(buf.get(..n).unwrap_or_default()).await?;
        }
        self.socket.flush().await?;
        Ok(())
    }

    async fn input(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        if bytes.is_empty() {
            return Ok(());
        }
        for message in self.reader.push(bytes)? {
            if self.closing {
                break;
            }
            self.on_message(message).await?;
        }
        Ok(())
    }

    /// Checks one whole message and hands it to `rml_rtmp` if it should
    /// see it.
    async fn on_message(&mut self, message: RawMessage) -> Result<(), IngestError> {
        match message.type_id {
            MSG_AUDIO | MSG_VIDEO | MSG_ACKNOWLEDGEMENT | MSG_USER_CONTROL | MSG_PEER_BANDWIDTH => {
            }
            MSG_WINDOW_ACK_SIZE => {
                // `rml_rtmp` counts bytes towards it in a u32.
                let size = message.payload.get(..4).map(|b| b[0]);
                if size.is_none_or(|high| high & 0x80 != 0) {
                    debug!("ignored a window acknowledgement size over 2 GiB");
                    return Ok(());
                }
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                let body = amf::command_body(message.type_id, &message.payload);
                match amf::check_command(&body) {
                    Ok(command) if command.name == "createStream" => {
                        self.streams_created += 1;
                        if self.streams_created > MAX_CREATE_STREAM {
                            return Err(IngestError::Protocol(format!(
                                "more than {MAX_CREATE_STREAM} createStream commands"
                            )));
                        }
                    }
                    Ok(command) if command.name == "publish" && !is_publish(&command) => {
                        debug!("refused a publish without a stream name and type");
                        self.message_stream = message.stream_id;
                        let why = "publish needs a stream name and a publishing type";
                        return self.send_status("NetStream.Publish.BadName", why).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "ignored a malformed command");
                        return Ok(());
                    }
                }
            }
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => {
                // Metadata is a hint the server does not need: the sequence
                // headers say what the media is.
                debug!(bytes = message.payload.len(), "stream metadata ignored");
                return Ok(());
            }
            other => {
                debug!(type_id = other, "ignored an RTMP message");
                return Ok(());
            }
        }
        self.message_stream = message.stream_id;
        let mut bytes = Vec::with_capacity(message.payload.len() + 16);
        chunk::single_chunk(3, &message, &mut bytes);
        let results = self.handle(&bytes)?;
        self.apply(results).await
    }

    /// Runs `rml_rtmp` on well-formed chunks. A panic in it ends this
    /// connection only.
    fn handle(&mut self, bytes: &[u8]) -> Result<Vec<ServerSessionResult>, IngestError> {
        let session = &mut self.session;
        match std::panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes))) {
            Ok(results) => results.map_err(|e| IngestError::Protocol(e.to_string())),
            Err(_) => Err(IngestError::LibraryPanic),
        }
    }

    /// Sends an error `onStatus` on the current message stream.
    async fn send_status(&mut self, code: &str, description: &str) -> Result<(), IngestError> {
        let status = RawMessage {
            timestamp: 0,
            type_id: MSG_COMMAND_AMF0,
            stream_id: self.message_stream,
            payload: amf::on_status("error", code, description).into(),
        };
        let mut bytes = Vec::new();
        chunk::single_chunk(STATUS_CHUNK_STREAM, &status, &mut bytes);
        self.socket.write_all(&bytes).await?;
        Ok(())
    }

    /// Hands a packet to the stream, first telling it about a timestamp jump
    /// the packet follows.
    async fn forward(&mut self, packet: MediaPacket) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let mut sent = true;
        if std::mem::take(&mut self.jump_pending) {
            sent = publisher.send(MediaPacket::TimestampJump).await;
        }
        if !sent || !publisher.send(packet).await {
            self.closing = true;
        }
    }

    /// The output time of a media packet, logging jumps.
    fn tick(&mut self, raw: u32, video: bool) -> i64 {
        let (clock, track) = if video {
            (&mut self.video_clock, "video")
        } else {
            (&mut self.audio_clock, "audio")
        };
        let Tick { ms, jump_ms } = clock.tick(raw);
        if let Some(step_ms) = jump_ms {
            self.jump_pending = true;
            self.jumps_logged = self.jumps_logged.saturating_add(1);
            if self.jumps_logged <= LOGGED_JUMPS {
                warn!(
                    track,
                    step_ms, "publisher's timestamps jumped; output time continues smoothly"
                );
            } else {
                debug!(track, step_ms, "timestamp jump");
            }
        }
        ms
    }

    /// Sends responses and handles events, including those raised while
    /// accepting requests.
    async fn apply(&mut self, results: Vec<ServerSessionResult>) -> Result<(), IngestError> {
        let mut queue = std::collections::VecDeque::from(results);
        let mut outbound = Vec::new();
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    outbound.extend_from_slice(&packet.bytes);
                }
                ServerSessionResult::RaisedEvent(event) => {
                    queue.extend(self.on_event(event).await?);
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    debug!(type_id = payload.type_id, "ignored an RTMP message");
                }
            }
        }
        if !outbound.is_empty() {
            self.socket.write_all(&outbound).await?;
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, IngestError> {
        let protocol =
            |e: rml_rtmp::sessions::ServerSessionError| IngestError::Protocol(e.to_string());
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if strip_query(&app_name) == self.config.ingest.app {
                    return self.session.accept_request(request_id).map_err(protocol);
                }
                warn!(app = %app_name, "refused a connection to an unknown application");
                self.closing = true;
                self.session
                    .reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    )
                    .map_err(protocol)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.on_publish(request_id, &stream_key).await,
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.closing = true;
                self.session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "RTMP playback is not offered; play over HLS",
                    )
                    .map_err(protocol)
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(publisher) = self.publisher.take() {
                    publisher.leave().await;
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.on_video(&data, timestamp.value).await?;
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.on_audio(&data, timestamp.value).await;
                Ok(Vec::new())
            }
            other => {
                debug!(event = ?event_name(&other), "RTMP event");
                Ok(Vec::new())
            }
        }
    }

    async fn on_publish(
        &mut self,
        request_id: u32,
        stream_key: &str,
    ) -> Result<Vec<ServerSessionResult>, IngestError> {
        let protocol =
            |e: rml_rtmp::sessions::ServerSessionError| IngestError::Protocol(e.to_string());
        if self.publisher.is_some() {
            return self
                .session
                .reject_request(
                    request_id,
                    "NetStream.Publish.BadName",
                    "already publishing",
                )
                .map_err(protocol);
        }
        let Some(key) = publish_key(stream_key) else {
            warn!(
                len = stream_key.len(),
                "publish refused: malformed stream key"
            );
            self.closing = true;
            return self
                .session
                .reject_request(
                    request_id,
                    "NetStream.Publish.Denied",
                    "malformed stream key",
                )
                .map_err(protocol);
        };
        match self.registry.begin_publish(key, self.peer).await {
            Ok(publisher) => {
                info!(stream = %publisher.stream, "publish accepted");
                self.publisher = Some(publisher);
                self.session.accept_request(request_id).map_err(protocol)
            }
            Err(refusal) => {
                warn!(reason = %refusal, "publish refused");
                self.closing = true;
                let code = match refusal {
                    PublishRefusal::UnknownKey
                    | PublishRefusal::Disabled(_)
                    | PublishRefusal::RefusedByHook => "NetStream.Publish.Denied",
                    PublishRefusal::Busy(_) => "NetStream.Publish.BadName",
                    PublishRefusal::ShuttingDown => "NetStream.Publish.Failed",
                };
                self.session
                    .reject_request(request_id, code, &refusal.to_string())
                    .map_err(protocol)
            }
        }
    }

    async fn on_video(&mut self, data: &bytes::Bytes, raw_ts: u32) -> Result<(), IngestError> {
        if self.publisher.is_none() {
            return Ok(());
        }
        let packet = match flv::parse_video(data) {
            Ok(VideoTag::AvcSequenceHeader(record)) => match AvcConfig::parse(record) {
                Ok(config) => {
                    info!(
                        width = config.width,
                        height = config.height,
                        profile = config.profile,
                        level = config.level,
                        "AVC sequence header"
                    );
                    MediaPacket::VideoConfig(config)
                }
                Err(e) => {
                    warn!(error = %e, "unusable AVC sequence header");
                    return Ok(());
                }
            },
            Ok(VideoTag::AvcFrame {
                keyframe,
                cts_ms,
                data,
            }) => MediaPacket::Video {
                dts_ms: self.tick(raw_ts, true),
                cts_ms,
                keyframe,
                data,
            },
            Ok(VideoTag::Unsupported(what)) => {
                warn!(codec = %what, "video codec not supported; publish refused");
                let description =
                    format!("video codec {what} is not supported; publish H.264 (AVC)");
                self.closing = true;
                return self
                    .send_status("NetStream.Publish.Rejected", &description)
                    .await;
            }
            Ok(VideoTag::AvcEndOfSequence | VideoTag::Ignored) => return Ok(()),
            Err(e) => {
                debug!(error = %e, "skipped a video message");
                return Ok(());
            }
        };
        self.forward(packet).await;
        Ok(())
    }

    async fn on_audio(&mut self, data: &bytes::Bytes, raw_ts: u32) {
        if self.publisher.is_none() {
            return;
        }
        let packet = match flv::parse_audio(data) {
            Ok(AudioTag::AacSequenceHeader(config)) => MediaPacket::AudioConfig(config),
            Ok(AudioTag::AacFrame(data)) => MediaPacket::Audio {
                dts_ms: self.tick(raw_ts, false),
                data,
            },
            Ok(AudioTag::Unsupported(what)) => {
                if !self.warned_unsupported {
                    warn!(codec = %what, "audio codec not supported; audio is ignored");
                    self.warned_unsupported = true;
                }
                return;
            }
            Err(e) => {
                debug!(error = %e, "skipped an audio message");
                return;
            }
        };
        self.forward(packet).await;
    }
}

/// Whether a publish command names a stream and a publishing type, as
/// `rml_rtmp` needs (it answers others with a misleading status code).
fn is_publish(command: &amf::Command) -> bool {
    use rml_rtmp::rml_amf0::Amf0Value;
    matches!(
        command.values.get(3..5),
        Some([Amf0Value::Utf8String(_), Amf0Value::Utf8String(mode)])
            if matches!(mode.as_str(), "live" | "append" | "record")
    )
}

/// The part of an RTMP app or key before any `?query`.
/// The one gate a publish key passes before anything looks it up: the part
/// before any `?query`, 4 to 128 of ASCII letters, digits, `-` and `_`
/// (what config validation and generated keys allow). Anything else (path
/// or shell characters, NUL, overlong keys) is refused unread.
pub(crate) fn publish_key(raw: &str) -> Option<&str> {
    let key = strip_query(raw);
    let well_formed = (4..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(key)
}

fn strip_query(value: &str) -> &str {
    value
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

/// A short name for an event, without its payload (which may hold a key).
fn event_name(event: &ServerSessionEvent) -> &'static str {
    match event {
        ServerSessionEvent::ClientChunkSizeChanged { .. } => "chunk size changed",
        ServerSessionEvent::ReleaseStreamRequested { .. } => "releaseStream",
        ServerSessionEvent::StreamMetadataChanged { .. } => "metadata",
        ServerSessionEvent::AcknowledgementReceived { .. } => "acknowledgement",
        ServerSessionEvent::PingResponseReceived { .. } => "ping response",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::publish_key;

    #[test]
    fn only_well_formed_keys_pass_the_gate() {
        assert_eq!(publish_key("demo"), Some("demo"));
        assert_eq!(publish_key("Abc-123_x?token=1"), Some("Abc-123_x"));
        let long = "k".repeat(300);
        let huge = "k".repeat(65536);
        for bad in [
            "../x",
            "a%2fb",
            "a\\b",
            "a\0b",
            "a;rm -rf",
            "a b",
            "$(id)",
            "ab",
            "",
            long.as_str(),
            huge.as_str(),
        ] {
            assert_eq!(publish_key(bad), None, "{bad:?}");
        }
    }
}
