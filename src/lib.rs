//! bigfoot: a live media server in one binary.
//!
//! The stages of the data flow, one module each:
//!
//! - [`ingest`]: RTMP listener and sessions; publishers push FLV tags.
//! - [`live`]: one task per stream that owns its pipeline and segment
//!   windows, and publishes immutable snapshots of its playlists.
//! - [`transcode`]: GStreamer pipelines that decode once, encode the ladder,
//!   pass the source through, and emit CMAF fragments.
//! - [`package`]: segment windows, codec strings from init segments, HLS
//!   playlists.
//! - [`deliver`]: hyper serving playlists and segments.
//!
//! [`config`] holds the `config.toml` schema; [`server`] starts the stages
//! under one cancellation root.

pub mod accept;
pub mod config;
pub mod control;
pub mod deliver;
pub mod ingest;
pub mod live;
pub mod package;
pub mod server;
pub mod transcode;
