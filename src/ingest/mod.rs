//! RTMP ingest: the listener, the handshake, `rml_rtmp` sessions, publish
//! authorisation by stream key, FLV tag parsing and timestamp unwrapping.
//!
//! Ingest turns RTMP into [`crate::live::MediaPacket`]s for the stream a key
//! publishes to. It never touches GStreamer or HTTP.

pub mod avc;
pub mod flv;
mod listener;
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
    #[error("no data for {0} s")]
    Idle(u64),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}
