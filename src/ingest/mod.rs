//! RTMP ingest: the listener, the handshake, a bounded chunk reader in
//! front of `rml_rtmp` sessions, publish authorisation by stream key, FLV
//! tag parsing and timestamp normalisation.
//!
//! Ingest turns RTMP into [`crate::live::MediaPacket`]s for the stream a key
//! publishes to. It never touches GStreamer or HTTP.

pub mod amf;
pub mod avc;
pub mod chunk;
pub mod flv;
mod listener;
pub mod screen;
mod session;
pub mod timestamp;

pub use listener::serve;

/// A connection that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("handshake did not complete within {0} s")]
    HandshakeTimeout(u64),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("RTMP chunk stream refused: {0}")]
    Chunk(#[from] chunk::ChunkError),
    #[error("the RTMP library panicked on this connection's input")]
    LibraryPanic,
    #[error("no data for {0} s")]
    Idle(u64),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl IngestError {
    /// Whether the operator should hear of it: the peer broke the protocol
    /// or went silent. Handshake failures (port scanners) and socket errors
    /// (the peer went away) are not.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::Protocol(_) | Self::Chunk(_) | Self::LibraryPanic | Self::Idle(_)
        )
    }
}
