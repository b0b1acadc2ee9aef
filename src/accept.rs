//! The accept loop shared by the RTMP and HTTP listeners.
//!
//! A connection cap (a semaphore slot held for the life of the connection
//! and released on every exit path), a short back-off after accept errors
//! such as running out of file descriptors (the loop never ends on one),
//! and refusal warnings rate-limited so a flood cannot flood the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Pause after an accept error before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one refusal warning per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accepts connections for one listener, under a cap.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    what: &'static str,
    refused: u64,
    last_warning: Option<Instant>,
}

/// An accepted connection and the slot it holds until dropped.
pub struct Accepted {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

impl Acceptor {
    pub fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            what,
            refused: 0,
            last_warning: None,
        }
    }

    /// The next connection within the cap; `None` once `shutdown` fires.
    /// Connections over the cap are closed at once.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.cancelled() => return None,
            };
            let (socket, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "{} accept failed; retrying", self.what);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let _ = socket.set_nodelay(true);
                    return Some(Accepted { socket, peer, slot });
                }
                Err(_) => self.refuse(peer),
            }
        }
    }

    fn refuse(&mut self, peer: SocketAddr) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            warn!(
                peer = %peer,
                refused = self.refused,
                "{} connection refused: the connection limit is reached",
                self.what
            );
            self.last_warning = Some(now);
            self.refused = 0;
        }
    }
}
