//! One RTMP connection: handshake, `rml_rtmp` session, publish.

use std::net::SocketAddr;
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
use super::avc::AvcConfig;
use super::flv::{self, AudioTag, VideoTag};
use super::timestamp::TrackClock;
use crate::config::Config;
use crate::live::{MediaPacket, PublishRefusal, Publisher, Registry};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

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
        socket,
        peer,
        config,
        registry,
        publisher: None,
        video_clock: TrackClock::default(),
        audio_clock: TrackClock::default(),
        closing: false,
        warned_unsupported: false,
    };
    conn.apply(initial).await?;
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
    socket: TcpStream,
    peer: SocketAddr,
    config: &'a Config,
    registry: &'a Registry,
    publisher: Option<Publisher>,
    video_clock: TrackClock,
    audio_clock: TrackClock,
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
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| IngestError::Protocol(e.to_string()))?;
        self.apply(results).await
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
                self.on_video(&data, timestamp.value).await;
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
        let key = strip_query(stream_key);
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
                    PublishRefusal::UnknownKey | PublishRefusal::Disabled(_) => {
                        "NetStream.Publish.Denied"
                    }
                    PublishRefusal::Busy(_) => "NetStream.Publish.BadName",
                    PublishRefusal::ShuttingDown => "NetStream.Publish.Failed",
                };
                self.session
                    .reject_request(request_id, code, &refusal.to_string())
                    .map_err(protocol)
            }
        }
    }

    async fn on_video(&mut self, data: &bytes::Bytes, raw_ts: u32) {
        let Some(publisher) = &self.publisher else {
            return;
        };
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
                    return;
                }
            },
            Ok(VideoTag::AvcFrame {
                keyframe,
                cts_ms,
                data,
            }) => MediaPacket::Video {
                dts_ms: self.video_clock.unwrap(raw_ts),
                cts_ms,
                keyframe,
                data,
            },
            Ok(VideoTag::Unsupported(what)) => {
                if !self.warned_unsupported {
                    warn!(codec = %what, "video codec not supported; disconnecting");
                    self.warned_unsupported = true;
                }
                self.closing = true;
                return;
            }
            Ok(VideoTag::AvcEndOfSequence | VideoTag::Ignored) => return,
            Err(e) => {
                debug!(error = %e, "skipped a video message");
                return;
            }
        };
        if !publisher.send(packet).await {
            self.closing = true;
        }
    }

    async fn on_audio(&mut self, data: &bytes::Bytes, raw_ts: u32) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let packet = match flv::parse_audio(data) {
            Ok(AudioTag::AacSequenceHeader(config)) => MediaPacket::AudioConfig(config),
            Ok(AudioTag::AacFrame(data)) => MediaPacket::Audio {
                dts_ms: self.audio_clock.unwrap(raw_ts),
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
        if !publisher.send(packet).await {
            self.closing = true;
        }
    }
}

/// The part of an RTMP app or key before any `?query`.
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
