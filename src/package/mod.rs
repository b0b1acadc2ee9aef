//! The package stage: turns CMAF output from `cmafmux` into something players
//! can fetch.
//!
//! It owns the live segment window of each rendition ([`RenditionWindow`]),
//! the facts read from CMAF init and media segments ([`InitInfo`],
//! [`FragmentInfo`]) and the HLS playlists written from them ([`hls`]).
//!
//! Everything here is pure: bytes and `now` come in as arguments, strings and
//! snapshots go out. It must not do IO, spawn tasks, touch GStreamer or know
//! about HTTP.

pub mod dash;
pub mod hls;
pub mod isobmff;
pub mod window;

pub use hls::{AudioInfo, VariantInfo, master_playlist, media_playlist};
pub use isobmff::{FragmentInfo, InitInfo, TrackKind};
pub use window::{InitSegment, RenditionWindow, Segment};

/// What went wrong while reading CMAF bytes or updating a segment window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// The bytes ended before a field or box that had to be there.
    #[error("truncated {what}: needed {needed} more bytes, {available} left")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes the field needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },

    /// A box header declared a size smaller than its header or larger than
    /// the space its parent has left.
    #[error("box `{kind}` declares size {size}, but {available} bytes are available")]
    BadBoxSize {
        /// The box type, escaped for printing.
        kind: String,
        /// The declared size.
        size: u64,
        /// Bytes left in the parent from the box start.
        available: u64,
    },

    /// A box the segment needs was not found.
    #[error("missing `{0}` box")]
    MissingBox(&'static str),

    /// The track's handler is neither video (`vide`) nor audio (`soun`).
    #[error("unsupported track handler `{0}`")]
    UnsupportedHandler(String),

    /// The sample entry (or audio object type) is not one we can describe.
    #[error("unsupported sample entry `{0}`")]
    UnsupportedCodec(String),

    /// A field holds a value that cannot be right.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The field or structure.
        what: &'static str,
        /// Why it was refused.
        detail: String,
    },

    /// A media segment arrived before any init segment was installed.
    #[error("media segment pushed before an init segment was installed")]
    NoInitSegment,

    /// A media segment was pushed after the window was ended.
    #[error("media segment pushed into an ended window (call resume first)")]
    WindowEnded,

    /// A media segment was pushed with a zero duration.
    #[error("media segment has zero duration")]
    ZeroDuration,
}
