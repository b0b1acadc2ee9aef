//! Transcoding: one GStreamer pipeline per live stream.
//!
//! Owns choosing the encoder backend, building pipelines from the backend
//! descriptions in `pipelines/`, the appsrc/appsink glue, keyframe
//! alignment across renditions and pipeline errors. It hands CMAF init
//! segments and fragments to whoever listens on its output channel; it
//! never writes playlists.

pub mod backend;
pub mod pipeline;
pub mod plan;
pub mod select;
pub mod stills;

use std::path::PathBuf;

pub use backend::Backend;
pub use pipeline::{LivePipeline, PipelineEvent, PipelineOutput};
pub use plan::{RenditionKind, RenditionPlan, TrackSet};
pub use select::EncoderChoice;

/// Everything that can go wrong building or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("cannot read pipeline description {path}: {source}")]
    BackendRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid pipeline description {path}: {message}")]
    BackendParse { path: PathBuf, message: String },
    #[error(
        "GStreamer element `{0}` is not installed \
         (see `bigfoot check`; Debian packages gstreamer1.0-plugins-*, gstreamer1.0-libav)"
    )]
    MissingElement(String),
    #[error("element `{element}` property `{property}`: {message}")]
    BadProperty {
        element: String,
        property: String,
        message: String,
    },
    #[error(
        "transcode.encoder: no backend named `{requested}` \
         (no {requested}.toml in {dir}; known: {known}; or \"auto\")"
    )]
    UnknownBackend {
        requested: String,
        dir: PathBuf,
        known: String,
    },
    #[error("encoder backend `{requested}` cannot be used: {reasons}")]
    NoUsableBackend { requested: String, reasons: String },
    #[error("cannot link the pipeline: {0}")]
    Link(String),
    #[error("the pipeline refused to start: {0}")]
    Start(String),
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
}

/// Initialises GStreamer and registers the statically linked CMAF muxer.
pub fn init() -> Result<(), TranscodeError> {
    gst::init().map_err(|e| TranscodeError::Init(e.to_string()))?;
    gstfmp4::plugin_register_static().map_err(|e| TranscodeError::Init(e.to_string()))?;
    Ok(())
}
