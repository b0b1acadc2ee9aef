//! The registry of live streams and the publish gate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::snapshot::SnapshotCell;
use super::stream::{Command, StreamTask};
use super::{MediaPacket, StreamSnapshot};
use crate::config::Config;
use crate::control::catalog::Catalog;
use crate::control::events::EventBus;
use crate::control::webhooks::PublishHook;
use crate::deliver::viewers::ViewerTracker;
use crate::transcode::EncoderChoice;

/// Commands queued per stream before a publisher waits.
const COMMAND_QUEUE: usize = 512;
/// Attempts to join a stream whose task is ending at the same moment.
const JOIN_ATTEMPTS: usize = 3;

/// Why a publish was refused; each maps to an RTMP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("stream `{0}` is disabled")]
    Disabled(String),
    #[error("stream `{0}` already has a live publisher")]
    Busy(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("refused by the on_publish hook")]
    RefusedByHook,
}

#[derive(Clone)]
pub(super) struct StreamHandle {
    pub id: u64,
    pub commands: mpsc::Sender<Command>,
    pub snapshot: Arc<SnapshotCell>,
}

pub(super) type StreamMap = DashMap<String, StreamHandle>;

/// All live streams by name.
pub struct Registry {
    streams: Arc<StreamMap>,
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    encoders: Arc<EncoderChoice>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_id: AtomicU64,
    events: Arc<EventBus>,
    viewers: Arc<ViewerTracker>,
    on_publish: Option<PublishHook>,
}

/// A publisher's side of a live stream.
pub struct Publisher {
    /// Public name of the stream being published.
    pub stream: String,
    id: u64,
    commands: mpsc::Sender<Command>,
    /// Cancelled when the stream drops this publisher (takeover, error,
    /// shutdown); the RTMP session then closes.
    pub kicked: CancellationToken,
    left: bool,
}

impl Registry {
    pub fn new(
        config: Arc<Config>,
        catalog: Arc<Catalog>,
        encoders: Arc<EncoderChoice>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            streams: Arc::new(DashMap::new()),
            config,
            catalog,
            encoders,
            shutdown,
            tasks,
            next_id: AtomicU64::new(1),
            events: Arc::new(EventBus::default()),
            viewers: Arc::new(ViewerTracker::new(Duration::from_secs(6))),
            on_publish: None,
        }
    }

    /// Stream tasks publish to `events` and start new viewer totals in
    /// `viewers` when a session starts.
    pub fn with_observers(mut self, events: Arc<EventBus>, viewers: Arc<ViewerTracker>) -> Self {
        self.events = events;
        self.viewers = viewers;
        self
    }

    /// Every publish with a known key is asked of `hook` first.
    pub fn with_publish_hook(mut self, hook: Option<PublishHook>) -> Self {
        self.on_publish = hook;
        self
    }

    /// The event bus stream tasks publish to.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The viewer sessions of every stream.
    pub fn viewers(&self) -> &Arc<ViewerTracker> {
        &self.viewers
    }

    /// The latest snapshot of a stream, if it is known. A stream deleted
    /// from the catalog has none, even while its task lives out the
    /// reconnect grace period: its playback ends with the delete.
    pub fn snapshot(&self, stream: &str) -> Option<Arc<StreamSnapshot>> {
        if !self.catalog.contains(stream) {
            return None;
        }
        self.streams.get(stream).map(|h| h.snapshot.load())
    }

    /// The stream's snapshot once `ready` holds for it, for a request that
    /// arrives while a live stream is starting: it waits until `deadline`
    /// rather than getting a 503 or an empty playlist. A stream that is not
    /// live, or not known, answers at once.
    pub async fn snapshot_when(
        &self,
        stream: &str,
        deadline: tokio::time::Instant,
        ready: impl Fn(&StreamSnapshot) -> bool,
    ) -> Option<Arc<StreamSnapshot>> {
        if !self.catalog.contains(stream) {
            return None;
        }
        let cell = self.streams.get(stream).map(|h| h.snapshot.clone())?;
        let snapshot = cell.wait_for(deadline, ready).await;
        // A stream deleted while the request waited is gone.
        self.catalog.contains(stream).then_some(snapshot)
    }

    /// Names of the streams that have a task now.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.iter().map(|e| e.key().clone()).collect()
    }

    /// Starts publishing with a stream key; the stream's policy decides
    /// what happens when the key is already live.
    pub async fn begin_publish(
        &self,
        key: &str,
        peer: SocketAddr,
    ) -> Result<Publisher, PublishRefusal> {
        let record = self
            .catalog
            .resolve_key(key)
            .ok_or(PublishRefusal::UnknownKey)?;
        if !record.enabled {
            return Err(PublishRefusal::Disabled(record.name));
        }
        if let Some(hook) = &self.on_publish
            && let Err(e) = hook.allows(&record.name, peer.ip()).await
        {
            warn!(
                stream = %record.name,
                peer = %peer,
                reason = %e,
                "the on_publish hook refused a publish"
            );
            return Err(PublishRefusal::RefusedByHook);
        }
        let mut transcode = self.config.transcode.clone();
        if let Some(ladder) = record.ladder {
            transcode.ladder = ladder;
        }
        if let Some(passthrough) = record.passthrough {
            transcode.passthrough = passthrough;
        }
        let stream = record.name;
        for _ in 0..JOIN_ATTEMPTS {
            if self.shutdown.is_cancelled() {
                return Err(PublishRefusal::ShuttingDown);
            }
            let handle = self.handle_for(&stream);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let kicked = self.shutdown.child_token();
            let (reply, answer) = oneshot::channel();
            let join = Command::Join {
                publisher: id,
                peer,
                kicked: kicked.clone(),
                transcode: transcode.clone(),
                reply,
            };
            if handle.commands.send(join).await.is_err() {
                self.streams.remove_if(&stream, |_, h| h.id == handle.id);
                continue;
            }
            match answer.await {
                Ok(Ok(())) => {
                    return Ok(Publisher {
                        stream,
                        id,
                        commands: handle.commands,
                        kicked,
                        left: false,
                    });
                }
                Ok(Err(refusal)) => return Err(refusal),
                Err(_) => {
                    self.streams.remove_if(&stream, |_, h| h.id == handle.id);
                }
            }
        }
        Err(PublishRefusal::ShuttingDown)
    }

    /// Disconnects a stream's publisher now; false if it has none.
    pub async fn disconnect(&self, stream: &str) -> bool {
        let Some(handle) = self.streams.get(stream).map(|h| h.clone()) else {
            return false;
        };
        let (reply, answer) = oneshot::channel();
        if handle
            .commands
            .send(Command::Disconnect { reply })
            .await
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// The catalog of streams that may publish.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    fn handle_for(&self, stream: &str) -> StreamHandle {
        self.streams
            .entry(stream.to_string())
            .or_insert_with(|| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
                let snapshot = Arc::new(SnapshotCell::default());
                let task = StreamTask::new(
                    stream.to_string(),
                    id,
                    self.config.clone(),
                    self.encoders.clone(),
                    inbox,
                    snapshot.clone(),
                    self.streams.clone(),
                    self.shutdown.clone(),
                    self.events.clone(),
                    self.viewers.clone(),
                );
                self.tasks.spawn(task.run());
                StreamHandle {
                    id,
                    commands,
                    snapshot,
                }
            })
            .clone()
    }
}

impl Publisher {
    /// Hands a media packet to the stream; false once the stream is gone.
    pub async fn send(&self, packet: MediaPacket) -> bool {
        let command = Command::Media {
            publisher: self.id,
            packet,
        };
        self.commands.send(command).await.is_ok()
    }

    /// Ends this publisher's session cleanly.
    pub async fn leave(mut self) {
        self.left = true;
        let _ = self
            .commands
            .send(Command::Leave { publisher: self.id })
            .await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        let commands = self.commands.clone();
        let publisher = self.id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = commands.send(Command::Leave { publisher }).await;
            });
        }
    }
}
