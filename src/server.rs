//! Starting and stopping the whole server under one cancellation root.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::config::secrets::{Secrets, SecretsError};
use crate::control::catalog::{Catalog, CatalogError};
use crate::control::events::EventBus;
use crate::control::webhooks::{self, PublishHook};
use crate::control::{Background, Control, ControlError};
use crate::deliver::token::Signer;
use crate::deliver::viewers::{self, ViewerTracker};
use crate::live::Registry;
use crate::transcode::select::{self, ProbeSettings};
use crate::transcode::{self, EncoderChoice};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Transcode(#[from] transcode::TranscodeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the encoder probe did not finish: {0}")]
    Probe(String),
    #[error("cannot create data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
}

/// A started server: its bound addresses and the handle to stop it.
pub struct RunningServer {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    control: Arc<Control>,
}

/// Chooses the encoder backend (`transcode.encoder`, `transcode.fallback`):
/// its elements must exist and a probe through it must succeed. Blocks for
/// the probes, a fraction of a second per backend tried.
pub fn load_backend(config: &Config) -> Result<EncoderChoice, StartError> {
    let t = &config.transcode;
    let choice = select::choose(
        &config.pipelines_dir(),
        &t.encoder,
        t.fallback,
        &probe_settings(config),
    )?;
    Ok(choice)
}

/// The values encoder probes use, from the config.
pub fn probe_settings(config: &Config) -> ProbeSettings {
    ProbeSettings {
        segment: config.segment_duration(),
        x264_preset: config.transcode.x264_preset.clone(),
        timeout: select::PROBE_TIMEOUT,
    }
}

/// Binds the listeners and starts every stage.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    transcode::init()?;
    let probe_config = config.clone();
    let encoders = tokio::task::spawn_blocking(move || load_backend(&probe_config))
        .await
        .map_err(|e| StartError::Probe(e.to_string()))??;
    let encoders = Arc::new(encoders);
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        dir: data_dir.display().to_string(),
        source,
    })?;

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let rtmp = bind("RTMP", config.server.rtmp_listen).await?;
    let http = bind("HTTP", config.server.http_listen).await?;
    let rtmp_addr = local_addr(&rtmp, config.server.rtmp_listen);
    let http_addr = local_addr(&http, config.server.http_listen);

    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Every connection is a file descriptor: take what the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open file limit"),
        Err(e) => warn!(error = %e, "cannot raise the open file limit"),
    }
    let swept = crate::live::mirror::sweep_orphans(&data_dir);
    if swept > 0 {
        info!(
            folders = swept,
            "removed segments mirrored by an earlier run"
        );
    }
    let secrets = Secrets::load_or_create(&config)?;
    let catalog = Arc::new(Catalog::load(&config)?);
    let events = Arc::new(EventBus::new(
        config.events.replay_buffer,
        config.events.client_queue,
    ));
    let viewers = Arc::new(ViewerTracker::new(config.viewer_timeout()));
    let registry = Arc::new(
        Registry::new(
            config.clone(),
            catalog,
            encoders.clone(),
            shutdown.clone(),
            tasks.clone(),
        )
        .with_observers(events.clone(), viewers.clone())
        .with_publish_hook(PublishHook::from_config(&config)),
    );
    let signer = Signer::from_secrets(&secrets, &config.playback);
    let control = Arc::new(Control::new(
        config.clone(),
        registry.clone(),
        signer.clone(),
        &secrets,
        rtmp_addr,
        Background {
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        },
    )?);
    webhooks::start(
        &config,
        &events,
        control.metrics().webhooks(),
        &shutdown,
        &tasks,
    );
    tasks.spawn(viewers::sweep_until(viewers, events, shutdown.clone()));
    tasks.spawn(crate::ingest::serve(
        rtmp,
        config.clone(),
        registry.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    tasks.spawn(crate::deliver::serve(
        http,
        config.clone(),
        registry,
        signer,
        control.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    control.set_ready(true);
    // The encoder line comes before the listening lines: whoever waits for
    // "HTTP listening" (scripts, tests) has then seen which encoder runs.
    info!(
        encoder = %encoders.backend.name,
        kind = encoders.backend.kind.as_str(),
        requested = %config.transcode.encoder,
        "encoder backend ready"
    );
    info!("RTMP listening on {rtmp_addr}");
    info!("HTTP listening on {http_addr}");
    Ok(RunningServer {
        rtmp_addr,
        http_addr,
        shutdown,
        tasks,
        control,
    })
}

/// The base URL players reach this server at: `server.public_url`, or the
/// HTTP listen address (a wildcard address becomes `127.0.0.1`).
pub fn public_base_url(config: &Config) -> String {
    let public = config.server.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return public.to_string();
    }
    let mut addr = config.server.http_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

impl RunningServer {
    /// Stops accepting, ends every stream's playlists, stops pipelines and
    /// waits up to `grace` for everything to finish.
    pub async fn shutdown(self, grace: Duration) {
        info!("shutting down");
        self.control.set_ready(false);
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                grace_secs = grace.as_secs(),
                "some tasks did not finish in time"
            );
        }
    }
}
