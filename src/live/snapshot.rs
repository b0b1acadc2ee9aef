//! The immutable view of a stream that HTTP delivery serves.

use std::collections::HashMap;

use bytes::Bytes;

use crate::package::isobmff::TrackKind;

/// Everything a player can fetch for a stream at one moment.
#[derive(Debug, Default)]
pub struct StreamSnapshot {
    /// Whether a publisher is sending now.
    pub live: bool,
    /// The master playlist, once every rendition has a segment.
    pub master: Option<Bytes>,
    /// The DASH MPD, split where delivery writes the clock endpoint's URL.
    pub dash: Option<(Bytes, Bytes)>,
    /// The latest JPEG of the picture, when the stream has video.
    pub thumbnail: Option<Bytes>,
    pub renditions: HashMap<String, RenditionSnapshot>,
}

/// One rendition's playlist and the files it references.
#[derive(Debug)]
pub struct RenditionSnapshot {
    pub kind: TrackKind,
    pub playlist: Bytes,
    pub inits: HashMap<u32, Bytes>,
    pub segments: HashMap<u64, Bytes>,
}
