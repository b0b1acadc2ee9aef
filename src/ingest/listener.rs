//! The RTMP accept loop, with a cap on open connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::session;
use crate::config::Config;
use crate::live::Registry;

/// Pause after an accept error (such as running out of file descriptors)
/// before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts RTMP connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(config.ingest.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "RTMP accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(peer = %peer, "RTMP connection refused: max_connections reached");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let config = config.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("rtmp", peer = %peer);
        tasks.spawn(
            async move {
                let result = session::run(socket, peer, &config, &registry, shutdown).await;
                if let Err(e) = result {
                    debug!(error = %e, "connection closed");
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}
