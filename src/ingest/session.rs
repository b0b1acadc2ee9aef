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
use super::screen::{MSG_COMMAND_AMF0, Screen, Verdict, publish_key, strip_query};
use super::timestamp::{Tick, TrackClock};
use crate::config::Config;
use crate::live::{MediaPacket, PublishRefusal, Publisher, Registry};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Timestamp jumps logged at `warn` per track; later ones at `debug`.
const LOGGED_JUMPS: u32 = 5;
/// Chunk stream the server's own status messages go out on; `rml_rtmp`
/// uses 2 to 6 for its own.
const STATUS_CHUNK_STREAM: u8 = 7;

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
        screen: Screen::new(),
        chunk: Vec::new(),
        closing: false,
        warned_unsupported: false,
    };
    // `rml_rtmp` gets every message as a single chunk, whatever its size.
    let mut results = conn.handle(2, &chunk::set_chunk_size(chunk::MAX_CHUNK_SIZE))?;
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
    /// Which messages reach `rml_rtmp`.
    screen: Screen,
    /// The message being handed to `rml_rtmp`, as one chunk (kept to
    /// reuse its allocation).
    chunk: Vec<u8>,
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
        match self.screen.check(&message) {
            Verdict::Pass => {}
            Verdict::Ignore(what) => {
                debug!(
                    type_id = message.type_id,
                    bytes = message.payload.len(),
                    "ignored {what}"
                );
                return Ok(());
            }
            Verdict::BadPublish => {
                debug!("refused a publish without a stream name and type");
                self.message_stream = message.stream_id;
                let why = "publish needs a stream name and a publishing type";
                return self.send_status("NetStream.Publish.BadName", why).await;
            }
            Verdict::Close(why) => return Err(IngestError::Protocol(why)),
        }
        self.message_stream = message.stream_id;
        let results = self.handle(3, &message)?;
        self.apply(results).await
    }

    /// Runs `rml_rtmp` on `message`, re-framed as one well-formed chunk on
    /// chunk stream `csid`. A panic in it ends this connection only.
    fn handle(
        &mut self,
        csid: u8,
        message: &RawMessage,
    ) -> Result<Vec<ServerSessionResult>, IngestError> {
        self.chunk.clear();
        chunk::single_chunk(csid, message, &mut self.chunk);
        let (session, bytes) = (&mut self.session, &self.chunk);
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
