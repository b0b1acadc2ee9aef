//! The task that owns one live stream: publisher, pipeline and windows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::MediaPacket;
use super::manifests::{self, EarlyRates, MpdContext, RenditionOutput, SessionPeriod};
use super::meter::{IngestMeter, TrackRate};
use super::mirror::{Mirror, MirrorHealth};
use super::observe::{self, KeyframeClock, Quality};
use super::registry::{PublishRefusal, StreamMap};
use super::snapshot::{
    IngestStatus, RenditionSnapshot, RenditionStatus, SnapshotCell, StreamSnapshot, StreamStatus,
};
use super::state::{self, PersistedState};
use crate::config::{Config, DuplicatePolicy, TranscodeSettings};
use crate::control::events::{EventBus, kind};
use crate::deliver::viewers::ViewerTracker;
use crate::package::hls;
use crate::package::isobmff::TrackKind;
use crate::package::window::RenditionWindow;
use crate::transcode::backend::BackendKind;
use crate::transcode::pipeline::{PipelineSettings, ThumbnailSettings};
use crate::transcode::plan::{self, RenditionKind, RenditionPlan, TrackSet};
use crate::transcode::{Backend, EncoderChoice, LivePipeline, PipelineEvent, PipelineOutput};

/// How long a finished pipeline may take to flush its last fragments.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Packets held while waiting for the second track, at most.
const MAX_PENDING_PACKETS: usize = 4096;
/// How often a live stream publishes `stream:health`.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Messages to a stream task.
pub(super) enum Command {
    Join {
        publisher: u64,
        peer: SocketAddr,
        kicked: CancellationToken,
        /// The stream's transcode settings with its overrides applied.
        transcode: TranscodeSettings,
        reply: oneshot::Sender<Result<(), PublishRefusal>>,
    },
    /// Disconnect the publisher now; answers whether there was one.
    Disconnect {
        reply: oneshot::Sender<bool>,
    },
    Media {
        publisher: u64,
        packet: MediaPacket,
    },
    Leave {
        publisher: u64,
    },
}

struct ActivePublisher {
    id: u64,
    peer: SocketAddr,
    kicked: CancellationToken,
}

/// One publish session: from the first packet to the pipeline's end.
struct Session {
    generation: u64,
    /// The encoder backend of the session's pipeline.
    backend: Arc<Backend>,
    /// After an encoder failure: source video is dropped until a keyframe
    /// comes, so the rebuilt pipeline starts decoding cleanly.
    awaiting_keyframe: bool,
    transcode: TranscodeSettings,
    tracks: TrackSet,
    pending: Vec<MediaPacket>,
    wait_until: Option<Instant>,
    pipeline: Option<LivePipeline>,
    plan: Vec<RenditionPlan>,
    base_ms: Option<i64>,
    /// Wall-clock time of presentation time zero.
    started_at: Option<OffsetDateTime>,
    /// When the session's first pipeline started.
    live_since: Option<OffsetDateTime>,
    drain_until: Option<Instant>,
    /// Source bitrates so far, for the master playlist's first moments.
    video_rate: TrackRate,
    audio_rate: TrackRate,
}

pub(super) struct StreamTask {
    name: String,
    id: u64,
    config: Arc<Config>,
    encoders: Arc<EncoderChoice>,
    /// The backend of the latest pipeline, as reported in the status.
    encoder: Arc<Backend>,
    inbox: mpsc::Receiver<Command>,
    snapshot: Arc<SnapshotCell>,
    streams: Arc<StreamMap>,
    shutdown: CancellationToken,
    data_dir: PathBuf,
    output_tx: mpsc::UnboundedSender<PipelineOutput>,
    output_rx: mpsc::UnboundedReceiver<PipelineOutput>,
    publisher: Option<ActivePublisher>,
    session: Option<Session>,
    outputs: HashMap<String, RenditionOutput>,
    /// Renditions of the latest session, in master playlist order.
    plan: Vec<RenditionPlan>,
    /// Fixed at the first publish for the life of the stream (DASH).
    availability_start: Option<OffsetDateTime>,
    /// Publish sessions with segments still in the window, oldest first.
    periods: Vec<SessionPeriod>,
    thumbnail: Option<Bytes>,
    /// Every rendition has announced its format but the source has not yet
    /// sent enough to estimate a bitrate: the master playlist is retried as
    /// media arrives.
    master_waiting: bool,
    meter: IngestMeter,
    ingest: IngestStatus,
    /// Source video frames dropped (waiting for a keyframe after a
    /// pipeline rebuild), over the life of the stream.
    dropped_frames: u64,
    last_error: Option<String>,
    generation: u64,
    persisted: PersistedState,
    release_at: Option<Instant>,
    mirror: Option<Mirror>,
    events: Arc<EventBus>,
    viewers: Arc<ViewerTracker>,
    /// The quality last announced, across sessions.
    quality: Option<Quality>,
    keyframes: KeyframeClock,
    /// When the next `stream:health` is due, while a session is live.
    health_at: Option<Instant>,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl StreamTask {
    #[allow(clippy::too_many_arguments)] // reason: wiring of one task, called once
    pub(super) fn new(
        name: String,
        id: u64,
        config: Arc<Config>,
        encoders: Arc<EncoderChoice>,
        inbox: mpsc::Receiver<Command>,
        snapshot: Arc<SnapshotCell>,
        streams: Arc<StreamMap>,
        shutdown: CancellationToken,
        events: Arc<EventBus>,
        viewers: Arc<ViewerTracker>,
    ) -> Self {
        let data_dir = config.data_dir();
        let persisted = state::load(&data_dir, &name);
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let mirror = config
            .package
            .mirror_to_disk
            .then(|| Mirror::new(&data_dir, &name));
        Self {
            name,
            id,
            config,
            encoder: encoders.backend.clone(),
            encoders,
            inbox,
            snapshot,
            streams,
            shutdown,
            data_dir,
            output_tx,
            output_rx,
            publisher: None,
            session: None,
            outputs: HashMap::new(),
            plan: Vec::new(),
            availability_start: None,
            periods: Vec::new(),
            thumbnail: None,
            master_waiting: false,
            meter: IngestMeter::new(Instant::now()),
            ingest: IngestStatus::default(),
            dropped_frames: 0,
            last_error: None,
            generation: 0,
            persisted,
            release_at: None,
            mirror,
            events,
            viewers,
            quality: None,
            keyframes: KeyframeClock::default(),
            health_at: None,
        }
    }

    pub(super) async fn run(self) {
        let span = info_span!("stream", stream = %self.name);
        self.run_inner().instrument(span).await;
    }

    async fn run_inner(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                command = self.inbox.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(output) = self.output_rx.recv() => self.on_output(output),
                () = tokio::time::sleep_until(deadline) => {
                    if self.on_deadline() {
                        break;
                    }
                }
                () = self.shutdown.cancelled() => {
                    self.drain_for_shutdown().await;
                    break;
                }
            }
        }
        self.streams.remove_if(&self.name, |_, h| h.id == self.id);
        self.save_state();
        if let Some(mirror) = &self.mirror
            && !self.shutdown.is_cancelled()
        {
            mirror.remove();
        }
        info!("stream released");
    }

    fn next_deadline(&self) -> Instant {
        let session = self.session.as_ref();
        [
            session.and_then(|s| s.wait_until),
            session.and_then(|s| s.drain_until),
            self.release_at,
            self.health_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(far_future)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join {
                publisher,
                peer,
                kicked,
                transcode,
                reply,
            } => {
                let answer = self.join(publisher, peer, kicked, transcode);
                let _ = reply.send(answer);
            }
            Command::Disconnect { reply } => {
                let had = match self.publisher.take() {
                    Some(active) => {
                        info!(peer = %active.peer, "publisher disconnected by the API");
                        active.kicked.cancel();
                        self.end_session();
                        true
                    }
                    None => false,
                };
                let _ = reply.send(had);
            }
            Command::Media { publisher, packet } => {
                if self.publisher.as_ref().is_some_and(|p| p.id == publisher) {
                    self.on_media(packet);
                }
            }
            Command::Leave { publisher } => {
                if let Some(active) = self.publisher.take_if(|p| p.id == publisher) {
                    info!(peer = %active.peer, "publisher left");
                    self.end_session();
                }
            }
        }
    }

    fn join(
        &mut self,
        id: u64,
        peer: SocketAddr,
        kicked: CancellationToken,
        transcode: TranscodeSettings,
    ) -> Result<(), PublishRefusal> {
        if let Some(current) = &self.publisher {
            match self.config.ingest.on_duplicate {
                DuplicatePolicy::Reject => {
                    warn!(peer = %peer, live_peer = %current.peer, "refused a second publisher");
                    return Err(PublishRefusal::Busy(self.name.clone()));
                }
                DuplicatePolicy::Takeover => {
                    warn!(peer = %peer, old_peer = %current.peer, "publisher taken over");
                    current.kicked.cancel();
                    self.publisher = None;
                    self.end_session();
                }
            }
        }
        if let Some(old) = self.session.take() {
            self.announce_end(&old);
            stop_pipeline(old.pipeline);
        }
        self.generation += 1;
        self.release_at = None;
        // Until the new session's renditions have segments, the master
        // playlist answers "starting" rather than list the old session's.
        self.plan.clear();
        self.thumbnail = None;
        self.ingest = IngestStatus::default();
        self.meter = IngestMeter::new(Instant::now());
        self.keyframes = KeyframeClock::default();
        self.publisher = Some(ActivePublisher { id, peer, kicked });
        self.session = Some(Session {
            generation: self.generation,
            backend: self.encoders.backend.clone(),
            awaiting_keyframe: false,
            transcode,
            tracks: TrackSet::default(),
            pending: Vec::new(),
            wait_until: None,
            pipeline: None,
            plan: Vec::new(),
            base_ms: None,
            started_at: None,
            live_since: None,
            drain_until: None,
            video_rate: TrackRate::default(),
            audio_rate: TrackRate::default(),
        });
        info!(peer = %peer, "publisher joined");
        // Playback requests from now on wait for the new session's media.
        self.publish_snapshot();
        Ok(())
    }

    fn on_media(&mut self, packet: MediaPacket) {
        if self.measure(&packet) {
            self.publish_snapshot();
            if self.session.as_ref().is_some_and(|s| s.pipeline.is_some()) {
                self.announce_quality("ingestChanged");
            }
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match &packet {
            MediaPacket::Video { dts_ms, data, .. } => {
                session.video_rate.count(*dts_ms, data.len())
            }
            MediaPacket::Audio { dts_ms, data } => session.audio_rate.count(*dts_ms, data.len()),
            _ => {}
        }
        if let Some(pipeline) = &session.pipeline {
            feed(pipeline, session.base_ms.unwrap_or(0), packet);
            if self.master_waiting && self.master().is_some() {
                self.publish_snapshot();
            }
            return;
        }
        if session.awaiting_keyframe {
            match &packet {
                MediaPacket::Video {
                    keyframe: false, ..
                } => {
                    self.dropped_frames += 1;
                    return;
                }
                MediaPacket::Video { keyframe: true, .. } => session.awaiting_keyframe = false,
                _ => {}
            }
        }
        match &packet {
            MediaPacket::VideoConfig(config) => session.tracks.video = Some(config.clone()),
            MediaPacket::AudioConfig(config) => session.tracks.audio = Some(config.clone()),
            _ => {
                if session.wait_until.is_none() && !session.awaiting_keyframe {
                    let wait = Duration::from_millis(self.config.ingest.track_wait_ms);
                    session.wait_until = Some(Instant::now() + wait);
                }
                session.pending.push(packet);
            }
        }
        let both = session.tracks.video.is_some() && session.tracks.audio.is_some();
        let ready = both && !session.awaiting_keyframe;
        if ready || session.pending.len() >= MAX_PENDING_PACKETS {
            self.start_pipeline();
        }
    }

    /// Updates the ingest figures; true when new rates are ready.
    fn measure(&mut self, packet: &MediaPacket) -> bool {
        let now = Instant::now();
        match packet {
            MediaPacket::VideoConfig(config) => {
                self.ingest.video_codec = Some(format!(
                    "avc1.{:02X}{:02X}{:02X}",
                    config.profile,
                    config.record.get(2).copied().unwrap_or(0),
                    config.level
                ));
                self.ingest.width = Some(config.width);
                self.ingest.height = Some(config.height);
                // A new configuration mid-session may be a new resolution.
                self.session.as_ref().is_some_and(|s| s.pipeline.is_some())
            }
            MediaPacket::AudioConfig(_) => {
                self.ingest.audio_codec = Some("aac".into());
                false
            }
            MediaPacket::Video {
                data,
                dts_ms,
                keyframe,
                ..
            } => {
                if let Some(interval) = self.keyframes.frame(*dts_ms, *keyframe) {
                    self.ingest.keyframe_interval_secs = Some(interval);
                }
                self.meter.count(now, data.len(), true)
            }
            MediaPacket::Audio { data, .. } => self.meter.count(now, data.len(), false),
            MediaPacket::TimestampJump => {
                // Ingest logs the jump, a few times per connection.
                debug!("marking a discontinuity after a timestamp jump");
                for rendition in &self.plan {
                    if let Some(out) = self.outputs.get_mut(&rendition.name) {
                        out.window.mark_discontinuity();
                    }
                }
                false
            }
        }
    }

    fn start_pipeline(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.wait_until = None;
        if session.tracks.video.is_none() && session.tracks.audio.is_none() {
            warn!("publisher sent media without any decoder configuration");
            return;
        }
        let renditions = plan::plan(&session.transcode, &session.tracks);
        let mut fallbacks = Vec::new();
        let pipeline = loop {
            let backend = session.backend.clone();
            let settings = PipelineSettings {
                backend: &backend,
                segment: self.config.segment_duration(),
                x264_preset: &self.config.transcode.x264_preset,
                generation: session.generation,
                stream: &self.name,
                thumbnails: self.config.thumbnails.enabled.then(|| ThumbnailSettings {
                    interval: Duration::from_secs_f64(self.config.thumbnails.interval_secs),
                    width: self.config.thumbnails.width,
                }),
            };
            let started = LivePipeline::start(
                &settings,
                &renditions,
                &session.tracks,
                self.output_tx.clone(),
            );
            let e = match started {
                Ok(pipeline) => break pipeline,
                Err(e) => e,
            };
            if let Some(fallback) = fallback_for(&backend, &self.encoders) {
                warn!(
                    error = %e,
                    failed = %backend.name,
                    encoder = %fallback.name,
                    "hardware encoder pipeline did not start; using the software encoder"
                );
                self.last_error = Some(format!(
                    "encoder `{}` did not start, now `{}`: {e}",
                    backend.name, fallback.name
                ));
                fallbacks.push((backend.name.clone(), fallback.name.clone()));
                session.backend = fallback;
                continue;
            }
            warn!(error = %e, "cannot start the pipeline; disconnecting the publisher");
            self.last_error = Some(format!("pipeline did not start: {e}"));
            if let Some(p) = self.publisher.take() {
                p.kicked.cancel();
            }
            self.session = None;
            return;
        };
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        info!(renditions = ?names, encoder = %session.backend.name, "pipeline started");
        self.encoder = session.backend.clone();

        let base = session.pending.iter().filter_map(MediaPacket::dts_ms).min();
        session.base_ms = base;
        let started_at = OffsetDateTime::now_utc();
        session.started_at = Some(started_at);
        let first_start = session.live_since.is_none();
        session.live_since.get_or_insert(started_at);
        self.availability_start.get_or_insert(started_at);
        self.periods.push(SessionPeriod {
            session: session.generation,
            started_at,
        });
        for packet in session.pending.drain(..) {
            feed(&pipeline, base.unwrap_or(0), packet);
        }
        session.pipeline = Some(pipeline);
        session.plan = renditions.clone();
        self.plan = renditions.clone();

        let segment_secs = self.config.transcode.segment_secs;
        for rendition in &renditions {
            let output = self
                .outputs
                .entry(rendition.name.clone())
                .or_insert_with(|| {
                    let mut window = RenditionWindow::new(
                        self.config.package.window_segments,
                        self.persisted.next_sequence,
                    )
                    .with_first_init_id(self.persisted.next_init_id);
                    if self.persisted.next_sequence > 0 {
                        window = window.continue_after_restart(self.persisted.discontinuities);
                    }
                    if matches!(rendition.kind, RenditionKind::Passthrough) {
                        window = window.with_target_headroom(segment_secs.ceil() as u64);
                    } else {
                        window.fix_target_duration(segment_secs.ceil() as u64);
                    }
                    RenditionOutput {
                        kind: if rendition.is_video() {
                            TrackKind::Video
                        } else {
                            TrackKind::Audio
                        },
                        window,
                        frame_rate: 0.0,
                        announced: None,
                        session_starts: Vec::new(),
                    }
                });
            // A new session is a new timeline: whatever came before (an
            // ended session, or one a takeover cut short) is a discontinuity.
            output.window.resume();
            output.window.mark_discontinuity();
            output.announced = None;
        }
        self.publish_snapshot();
        if first_start {
            self.announce_start();
        }
        for (failed, encoder) in fallbacks {
            self.announce_fallback(&failed, &encoder);
        }
    }

    fn on_output(&mut self, output: PipelineOutput) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if output.generation != session.generation {
            return;
        }
        match output.event {
            PipelineEvent::Format {
                rendition,
                info,
                frame_rate,
            } => {
                let Some((name, out)) = planned_output(&session.plan, &mut self.outputs, rendition)
                else {
                    return;
                };
                debug!(rendition = %name, codec = %info.codec, "rendition format");
                out.announced = Some(info);
                if let Some(fps) = frame_rate {
                    out.frame_rate = fps;
                }
                self.publish_snapshot();
            }
            PipelineEvent::Init { rendition, data } => {
                let Some((name, out)) = planned_output(&session.plan, &mut self.outputs, rendition)
                else {
                    return;
                };
                if let Err(e) = out.window.set_init(data) {
                    warn!(rendition = %name, error = %e, "unusable init segment");
                }
                let next = out.window.next_init_id();
                if next > self.persisted.next_init_id {
                    self.persisted.next_init_id = next;
                    self.save_state();
                }
            }
            PipelineEvent::Fragment {
                rendition,
                data,
                pts,
                duration,
            } => {
                let Some(plan) = session.plan.get(rendition) else {
                    return;
                };
                let name = plan.name.clone();
                // Segment end on the wall clock, from the session's start, so
                // that every rendition dates the same slot alike.
                let end = match (pts, session.started_at) {
                    (Some(pts), Some(start)) => start + pts + duration,
                    _ => OffsetDateTime::now_utc(),
                };
                let generation = session.generation;
                self.on_fragment(&name, generation, data, duration, end);
            }
            PipelineEvent::Thumbnail(jpeg) => {
                let bytes = jpeg.len();
                self.thumbnail = Some(jpeg);
                self.publish_snapshot();
                self.publish(
                    kind::THUMBNAIL_UPDATED,
                    serde_json::json!({ "bytes": bytes, "path": "thumbnail.jpg" }),
                );
            }
            PipelineEvent::Eos => {
                debug!("pipeline drained");
                self.finish_session();
            }
            PipelineEvent::Error(message) => {
                if self.publisher.is_some() && self.rebuild_on_fallback(&message) {
                    return;
                }
                warn!(error = %message, "pipeline failed; ending the publish session");
                self.last_error = Some(format!("pipeline failed: {message}"));
                if let Some(p) = self.publisher.take() {
                    p.kicked.cancel();
                }
                self.finish_session();
            }
        }
    }

    fn on_fragment(
        &mut self,
        name: &str,
        session: u64,
        data: Bytes,
        duration: Duration,
        end: OffsetDateTime,
    ) {
        let Some(out) = self.outputs.get_mut(name) else {
            return;
        };
        out.record_session(session, out.window.next_sequence());
        let exceeded = out.window.target_exceeded();
        match out.window.push(duration, data, end) {
            Ok(segment) => {
                debug!(
                    rendition = name,
                    sequence = segment.sequence,
                    duration_ms = duration.as_millis() as u64,
                    "segment"
                );
                if let Some(info) = segment.fragment
                    && out.kind == TrackKind::Video
                {
                    // `push` refuses zero durations.
                    out.frame_rate = f64::from(info.sample_count) / duration.as_secs_f64();
                }
            }
            Err(e) => {
                warn!(rendition = name, error = %e, "dropped a fragment");
                return;
            }
        }
        if out.window.target_exceeded() > exceeded {
            warn!(
                rendition = name,
                duration_ms = duration.as_millis() as u64,
                target = out.window.target_duration(),
                "segment longer than the playlist's target duration; \
                 check the encoder's keyframe interval"
            );
        }
        let next = out.window.next_sequence();
        let discontinuities = out.window.discontinuities();
        if next > self.persisted.next_sequence || discontinuities > self.persisted.discontinuities {
            self.persisted.next_sequence = self.persisted.next_sequence.max(next);
            self.persisted.discontinuities = self.persisted.discontinuities.max(discontinuities);
            self.save_state();
        }
        self.publish_snapshot();
    }

    /// Replaces a failed hardware encoder by the software fallback while the
    /// publisher stays connected: a new pipeline (a new generation, so every
    /// playlist gets a discontinuity) fed from the next source keyframe,
    /// with the audio that arrives meanwhile kept. False when the session
    /// has no fallback (it is already on software).
    fn rebuild_on_fallback(&mut self, error: &str) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let Some(fallback) = fallback_for(&session.backend, &self.encoders) else {
            return false;
        };
        let failed = std::mem::replace(&mut session.backend, fallback.clone());
        self.generation += 1;
        session.generation = self.generation;
        stop_pipeline(session.pipeline.take());
        session.pending.clear();
        session.base_ms = None;
        session.drain_until = None;
        session.awaiting_keyframe = session.tracks.video.is_some();
        warn!(
            error,
            failed = %failed.name,
            encoder = %fallback.name,
            "hardware encoder failed; rebuilding the renditions on the software encoder"
        );
        self.last_error = Some(format!(
            "encoder `{}` failed, now `{}`: {error}",
            failed.name, fallback.name
        ));
        self.encoder = fallback.clone();
        let awaiting_keyframe = session.awaiting_keyframe;
        self.announce_fallback(&failed.name, &fallback.name);
        if !awaiting_keyframe {
            self.start_pipeline();
        }
        self.publish_snapshot();
        true
    }

    /// The publisher is gone: flush the pipeline, then end the playlists.
    fn end_session(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match &session.pipeline {
            Some(pipeline) => {
                pipeline.finish();
                session.drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            None => self.finish_session(),
        }
    }

    /// The pipeline has drained (or failed): stop it, end the playlists and
    /// keep the stream for the reconnect grace period.
    fn finish_session(&mut self) {
        if let Some(session) = self.session.take() {
            self.announce_end(&session);
            stop_pipeline(session.pipeline);
        }
        for out in self.outputs.values_mut() {
            out.window.end();
        }
        self.publish_snapshot();
        self.save_state();
        if self.publisher.is_none() && !self.shutdown.is_cancelled() {
            let grace = Duration::from_secs(self.config.ingest.reconnect_grace_secs);
            self.release_at = Some(Instant::now() + grace);
            info!(
                grace_secs = grace.as_secs(),
                "stream ended; waiting for a reconnect"
            );
        }
    }

    /// Handles whichever deadline passed; true when the stream is released.
    fn on_deadline(&mut self) -> bool {
        let now = Instant::now();
        if self.health_at.is_some_and(|t| t <= now) {
            self.health_at = Some(now + HEALTH_INTERVAL);
            let health = observe::health(&self.status(), self.viewers.current(&self.name));
            self.publish(kind::STREAM_HEALTH, health);
        }
        if let Some(session) = &self.session {
            if session.wait_until.is_some_and(|t| t <= now) {
                debug!("second track did not arrive; starting with what there is");
                self.start_pipeline();
                return false;
            }
            if session.drain_until.is_some_and(|t| t <= now) {
                warn!("pipeline did not drain in time; stopping it");
                self.finish_session();
                return false;
            }
        }
        self.release_at.is_some_and(|t| t <= now) && self.publisher.is_none()
    }

    async fn drain_for_shutdown(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.kicked.cancel();
        }
        if let Some(session) = &self.session
            && let Some(pipeline) = &session.pipeline
        {
            pipeline.finish();
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while let Ok(Some(output)) =
                tokio::time::timeout_at(deadline, self.output_rx.recv()).await
            {
                let eos = matches!(output.event, PipelineEvent::Eos);
                self.on_output(output);
                if eos || self.session.is_none() {
                    break;
                }
            }
        }
        if self.session.is_some() {
            self.finish_session();
        }
    }

    fn save_state(&self) {
        if let Err(e) = state::save(&self.data_dir, &self.name, self.persisted) {
            warn!(error = %e, dir = %self.data_dir.display(), "cannot save stream state");
        }
    }

    /// The source's bitrates so far in the current session.
    fn early_rates(&self) -> EarlyRates {
        let Some(session) = &self.session else {
            return EarlyRates::default();
        };
        EarlyRates {
            source_video_bps: session.video_rate.bits_per_second(),
            source_fps: session.video_rate.packets_per_second(),
            audio_bps: session.audio_rate.bits_per_second(),
        }
    }

    fn master(&self) -> Option<String> {
        manifests::master_playlist(&self.plan, &self.outputs, &self.early_rates())
    }

    fn publish_snapshot(&mut self) {
        let master = self.master().map(Bytes::from);
        self.master_waiting = master.is_none()
            && self.publisher.is_some()
            && self.plan.iter().all(|r| {
                self.outputs
                    .get(&r.name)
                    .is_some_and(|out| out.announced.is_some())
            });
        let mut renditions = HashMap::new();
        for (name, out) in &self.outputs {
            let window = &out.window;
            let mut inits = HashMap::new();
            let mut segments = HashMap::new();
            for segment in window.segments() {
                inits.insert(segment.init.id, segment.init.data.clone());
                segments.insert(segment.sequence, segment.data.clone());
            }
            let playlist = Bytes::from(hls::media_playlist(window));
            renditions.insert(
                name.clone(),
                RenditionSnapshot {
                    kind: out.kind,
                    playlist,
                    inits,
                    segments,
                },
            );
        }
        self.forget_old_periods();
        let snapshot = StreamSnapshot {
            status: self.status(),
            live: self.publisher.is_some(),
            pending: self.publisher.is_some() || self.session.is_some(),
            planned: self.session.as_ref().is_some_and(|s| s.pipeline.is_some()),
            master,
            dash: self.dash_manifest(),
            thumbnail: self.thumbnail.clone(),
            renditions,
        };
        let health = match &mut self.mirror {
            Some(mirror) => mirror.write(&snapshot),
            None => MirrorHealth::Unchanged,
        };
        self.snapshot.store(snapshot);
        match health {
            MirrorHealth::Unchanged => {}
            MirrorHealth::Failed(error) => self.publish(
                kind::STREAM_STORAGE,
                serde_json::json!({ "mirror": "failing", "error": error }),
            ),
            MirrorHealth::Recovered => {
                self.publish(kind::STREAM_STORAGE, serde_json::json!({ "mirror": "ok" }))
            }
        }
    }
}

/// Events about the stream.
impl StreamTask {
    fn publish(&self, kind: &'static str, data: serde_json::Value) {
        self.events.publish(kind, Some(&self.name), data);
    }

    /// The session's first pipeline runs: `stream:started`, new viewer
    /// totals, health from now on, and any change from the last session.
    fn announce_start(&mut self) {
        self.viewers.reset_totals(&self.name);
        self.health_at = Some(Instant::now() + HEALTH_INTERVAL);
        let status = self.status();
        let renditions: Vec<&str> = self.plan.iter().map(|r| r.name.as_str()).collect();
        info!(renditions = ?renditions, "stream started");
        self.publish(
            kind::STREAM_STARTED,
            serde_json::json!({
                "session": self.generation,
                "ingest": status.ingest,
                "renditions": renditions,
                "encoder": status.encoder,
            }),
        );
        self.announce_quality("newSession");
    }

    /// `stream:qualityChanged` when what the stream is published at moved
    /// away from what was last announced.
    fn announce_quality(&mut self, reason: &str) {
        let names: Vec<String> = self.plan.iter().map(|r| r.name.clone()).collect();
        let now = Quality::of(self.ingest_now(), &names, &self.encoder.name);
        let Some(before) = self.quality.as_mut() else {
            self.quality = Some(now);
            return;
        };
        let changed = before.changes(&now);
        if changed.is_empty() {
            before.update(now);
            return;
        }
        let previous = before.to_json();
        before.update(now);
        let data = serde_json::json!({
            "reason": reason,
            "changed": changed,
            "before": previous,
            "after": before.to_json(),
        });
        self.publish(kind::STREAM_QUALITY_CHANGED, data);
    }

    /// The transcoded renditions moved to another encoder.
    fn announce_fallback(&mut self, failed: &str, encoder: &str) {
        let renditions: Vec<&str> = self
            .plan
            .iter()
            .filter(|r| matches!(r.kind, RenditionKind::Transcoded { .. }))
            .map(|r| r.name.as_str())
            .collect();
        let data = serde_json::json!({
            "reason": "encoderFallback",
            "changed": ["encoder"],
            "failed": failed,
            "encoder": encoder,
            "renditions": renditions,
        });
        self.publish(kind::STREAM_QUALITY_CHANGED, data);
        if let Some(quality) = self.quality.as_mut() {
            quality.encoder = Some(encoder.to_string());
        }
    }

    /// `stream:ended` for a session that had started.
    fn announce_end(&mut self, session: &Session) {
        let Some(since) = session.live_since else {
            return;
        };
        self.health_at = None;
        let viewers = self.viewers.stats(&self.name, std::time::Instant::now());
        let duration = (OffsetDateTime::now_utc() - since).whole_seconds().max(0);
        info!(duration_secs = duration, "stream ended");
        self.publish(
            kind::STREAM_ENDED,
            serde_json::json!({
                "session": session.generation,
                "durationSecs": duration,
                "peakViewers": viewers.peak,
                "viewerSeconds": viewers.viewer_seconds,
                "lastError": self.last_error,
            }),
        );
    }
}

impl StreamTask {
    fn dash_manifest(&self) -> Option<(Bytes, Bytes)> {
        let availability_start = self.availability_start?;
        // Players read the adaptation sets once: a starting stream's MPD
        // waits for every rendition's first segment.
        let starting = self.plan.iter().any(|r| {
            self.outputs
                .get(&r.name)
                .is_none_or(|out| out.window.segments().next().is_none())
        });
        if starting {
            return None;
        }
        let mut order: Vec<&str> = self.plan.iter().map(|r| r.name.as_str()).collect();
        let mut others: Vec<&str> = self
            .outputs
            .keys()
            .map(String::as_str)
            .filter(|n| !order.contains(n))
            .collect();
        others.sort_unstable();
        order.extend(others);
        let ctx = MpdContext {
            availability_start,
            now: OffsetDateTime::now_utc(),
            segment: self.config.segment_duration(),
            window_segments: self.config.package.window_segments,
            live: self.publisher.is_some(),
            periods: &self.periods,
            order,
        };
        manifests::dash_manifest(&ctx, &self.outputs)
    }

    /// The publisher's media with the rates measured so far.
    fn ingest_now(&self) -> IngestStatus {
        IngestStatus {
            bitrate_kbps: self.meter.bitrate_kbps,
            fps: self.meter.fps,
            ..self.ingest.clone()
        }
    }

    fn status(&self) -> StreamStatus {
        let ingest = self.ingest_now();
        let renditions = self
            .plan
            .iter()
            .filter_map(|plan| {
                let out = self.outputs.get(&plan.name)?;
                let init = out.window.current_init();
                let info = init.as_ref().map(|i| &i.info);
                let video = plan.is_video();
                Some(RenditionStatus {
                    name: plan.name.clone(),
                    kind: if video { "video" } else { "audio" },
                    codec: info.map(|i| i.codec.clone()).unwrap_or_default(),
                    width: info.filter(|_| video).map(|i| i.width),
                    height: info.filter(|_| video).map(|i| i.height),
                    bandwidth: out.window.peak_bitrate(),
                    fps: (video && out.frame_rate > 0.0).then_some(out.frame_rate),
                    encoder: match plan.kind {
                        RenditionKind::Transcoded { .. } => self.encoder.name.clone(),
                        RenditionKind::Passthrough => "passthrough".into(),
                        RenditionKind::Audio => "copy".into(),
                    },
                })
            })
            .collect();
        StreamStatus {
            live: self.publisher.is_some(),
            publisher: self.publisher.as_ref().map(|p| p.peer.to_string()),
            live_since: self
                .publisher
                .as_ref()
                .and(self.session.as_ref())
                .and_then(|s| s.live_since),
            ingest,
            renditions,
            encoder: self.encoder.name.clone(),
            last_error: self.last_error.clone(),
            dropped_frames: self.dropped_frames,
            disk_mirror_failing: self.mirror.as_ref().is_some_and(Mirror::failing),
        }
    }

    /// Drops periods of past sessions none of whose segments are in any
    /// window any more.
    fn forget_old_periods(&mut self) {
        let outputs = &self.outputs;
        let current = self.generation;
        self.periods.retain(|p| {
            p.session == current
                || outputs
                    .values()
                    .any(|o| o.session_starts.iter().any(|(s, _)| *s == p.session))
        });
    }
}

/// Pushes one packet into the pipeline, timed from the session's base.
fn feed(pipeline: &LivePipeline, base_ms: i64, packet: MediaPacket) {
    let clock = |ms: i64| gst::ClockTime::from_mseconds(ms.saturating_sub(base_ms).max(0) as u64);
    match packet {
        MediaPacket::Video {
            dts_ms,
            cts_ms,
            keyframe,
            data,
        } => {
            let pts = dts_ms.saturating_add(i64::from(cts_ms));
            pipeline.push_video(clock(pts), clock(dts_ms), keyframe, data);
        }
        MediaPacket::Audio { dts_ms, data } => pipeline.push_audio(clock(dts_ms), data),
        MediaPacket::VideoConfig(_) | MediaPacket::AudioConfig(_) => {
            debug!("decoder configuration repeated mid-stream; keeping the first");
        }
        MediaPacket::TimestampJump => {}
    }
}

/// The output of the session's rendition number `index`, with its name.
fn planned_output<'a>(
    plan: &'a [RenditionPlan],
    outputs: &'a mut HashMap<String, RenditionOutput>,
    index: usize,
) -> Option<(&'a str, &'a mut RenditionOutput)> {
    let name = plan.get(index)?.name.as_str();
    Some((name, outputs.get_mut(name)?))
}

/// The software backend that replaces `backend` when it fails; none when
/// `backend` is not a hardware one or no software backend works here.
fn fallback_for(backend: &Backend, encoders: &EncoderChoice) -> Option<Arc<Backend>> {
    if backend.kind != BackendKind::Hardware {
        return None;
    }
    encoders.fallback.clone()
}

/// Sets a pipeline to `Null` off the async executor.
fn stop_pipeline(pipeline: Option<LivePipeline>) {
    if let Some(pipeline) = pipeline {
        tokio::task::spawn_blocking(move || pipeline.stop());
    }
}
