//! Live streams: the task that owns one stream from publish to release.
//!
//! Each stream name has at most one task. It receives media from the RTMP
//! session that publishes it, runs the stream's transcode pipeline, feeds
//! the pipeline's CMAF output into the packager's segment windows, and
//! publishes an immutable [`StreamSnapshot`] that HTTP delivery reads.
//! Other parts talk to it only through [`Registry`] and [`Publisher`].

mod manifests;
mod meter;
pub mod mirror;
mod observe;
mod registry;
mod snapshot;
mod state;
mod stream;

use bytes::Bytes;

pub use registry::{PublishRefusal, Publisher, Registry};
pub use snapshot::{
    IngestStatus, RenditionSnapshot, RenditionStatus, StreamSnapshot, StreamStatus,
};

use crate::ingest::avc::AvcConfig;

/// Media from a publisher, timestamps already unwrapped to 64-bit ms.
#[derive(Debug, Clone)]
pub enum MediaPacket {
    VideoConfig(AvcConfig),
    Video {
        dts_ms: i64,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
    },
    /// AAC AudioSpecificConfig.
    AudioConfig(Bytes),
    Audio {
        dts_ms: i64,
        data: Bytes,
    },
    /// The publisher's timestamps jumped. Ingest keeps output time
    /// continuous; the playlists mark the jump with a discontinuity.
    TimestampJump,
}

impl MediaPacket {
    fn dts_ms(&self) -> Option<i64> {
        match self {
            Self::Video { dts_ms, .. } | Self::Audio { dts_ms, .. } => Some(*dts_ms),
            _ => None,
        }
    }
}
