//! The RTMP accept loop, with a cap on open connections.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::session;
use crate::accept::{Accepted, Acceptor};
use crate::config::Config;
use crate::live::Registry;

/// Accepts RTMP connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut acceptor = Acceptor::new(listener, config.ingest.max_connections, "RTMP");
    while let Some(Accepted { socket, peer, slot }) = acceptor.next(&shutdown).await {
        let config = config.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("rtmp", peer = %peer);
        tasks.spawn(
            async move {
                let result = session::run(socket, peer, &config, &registry, shutdown).await;
                match result {
                    Err(e) if e.is_peer_fault() => warn!(error = %e, "connection closed"),
                    Err(e) => debug!(error = %e, "connection closed"),
                    Ok(()) => {}
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}
