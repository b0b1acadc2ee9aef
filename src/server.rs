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
use crate::deliver::token::Signer;
use crate::live::Registry;
use crate::transcode::{self, Backend};

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
    #[error("encoder backend `{backend}` ({file}) needs elements this box lacks: {missing}")]
    MissingElements {
        backend: String,
        file: String,
        missing: String,
    },
    #[error("cannot create data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
}

/// A started server: its bound addresses and the handle to stop it.
pub struct RunningServer {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Loads the configured encoder backend and checks its elements exist.
pub fn load_backend(config: &Config) -> Result<Backend, StartError> {
    let backend = Backend::load(&config.pipelines_dir(), &config.transcode.encoder)?;
    let missing = backend.missing_elements();
    if !missing.is_empty() {
        return Err(StartError::MissingElements {
            backend: backend.name.clone(),
            file: backend.source.display().to_string(),
            missing: missing.join(", "),
        });
    }
    Ok(backend)
}

/// Binds the listeners and starts every stage.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    transcode::init()?;
    let backend = Arc::new(load_backend(&config)?);
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
    let secrets = Secrets::load_or_create(&config)?;
    let catalog = Arc::new(Catalog::load(&config)?);
    let registry = Arc::new(Registry::new(
        config.clone(),
        catalog,
        backend.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    tasks.spawn(crate::ingest::serve(
        rtmp,
        config.clone(),
        registry.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    let signer = Signer::from_secrets(&secrets, &config.playback);
    tasks.spawn(crate::deliver::serve(
        http,
        config.clone(),
        registry,
        signer,
        shutdown.clone(),
        tasks.clone(),
    ));
    info!("RTMP listening on {rtmp_addr}");
    info!("HTTP listening on {http_addr}");
    info!(encoder = %backend.name, "encoder backend ready");
    Ok(RunningServer {
        rtmp_addr,
        http_addr,
        shutdown,
        tasks,
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
