//! The `config.toml` schema, its defaults and its validation.
//!
//! Everything an operator can set lives here as plain `serde` structs with
//! one `Default` per section. The file is read and validated once at
//! start-up; nothing here is consulted at request time except through the
//! validated [`Config`] value the other stages are handed.

pub mod secrets;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use validate::ConfigError;

/// Default RTMP listen address.
pub const DEFAULT_RTMP_LISTEN: &str = "0.0.0.0:1935";
/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSettings,
    pub ingest: IngestSettings,
    pub transcode: TranscodeSettings,
    pub package: PackageSettings,
    pub playback: PlaybackSettings,
    pub thumbnails: ThumbnailSettings,
    pub api: ApiSettings,
    pub events: EventSettings,
    /// Where to POST events, and which.
    pub webhooks: Vec<WebhookSettings>,
    /// Streams that may publish, each with its secret key.
    pub streams: Vec<StreamSettings>,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Listeners and the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub rtmp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base URL printed for playback (for example `http://edge1.example:8080`).
    /// Empty means "derive it from the HTTP listen address".
    pub public_url: String,
    /// Seconds SIGTERM waits for streams to end before exiting anyway.
    pub shutdown_grace_secs: u64,
    /// Most HTTP connections open at once; more are closed at accept.
    pub max_http_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            rtmp_listen: parse_addr(DEFAULT_RTMP_LISTEN),
            http_listen: parse_addr(DEFAULT_HTTP_LISTEN),
            data_dir: PathBuf::from("data"),
            public_url: String::new(),
            shutdown_grace_secs: 5,
            max_http_connections: 16_384,
        }
    }
}

fn parse_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// What happens when a key that is already live publishes again.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// The newcomer replaces the live publisher, which is disconnected.
    Takeover,
    /// The newcomer is refused with `NetStream.Publish.BadName`.
    Reject,
}

/// RTMP ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// RTMP application name in `rtmp://host/{app}/{key}`.
    pub app: String,
    pub handshake_timeout_secs: u64,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout_secs: u64,
    /// How long an ended stream waits for its publisher to come back.
    pub reconnect_grace_secs: u64,
    /// How long to wait for the second track before starting with one.
    pub track_wait_ms: u64,
    pub on_duplicate: DuplicatePolicy,
    pub max_connections: usize,
    /// Longest RTMP message a publisher may announce; a longer one closes
    /// the connection before any of it is buffered.
    pub max_message_bytes: usize,
    /// `http://` URL asked whether a publish may go ahead (a 2xx answer
    /// allows it). Empty: no hook.
    pub on_publish_url: String,
    /// How long the hook may take before the publish is refused.
    pub on_publish_timeout_ms: u64,
    /// Signs the hook's requests like webhook deliveries. Empty: unsigned.
    pub on_publish_secret: String,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            app: "live".into(),
            handshake_timeout_secs: 5,
            idle_timeout_secs: 10,
            reconnect_grace_secs: 30,
            track_wait_ms: 1500,
            on_duplicate: DuplicatePolicy::Takeover,
            max_connections: 4096,
            max_message_bytes: 8 * 1024 * 1024,
            on_publish_url: String::new(),
            on_publish_timeout_ms: 2000,
            on_publish_secret: String::new(),
        }
    }
}

/// One rung of the adaptive bitrate ladder.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Rendition name, used in URLs: lowercase letters, digits, `-`, `_`.
    pub name: String,
    /// Output height in pixels; the width follows the source aspect ratio.
    pub height: u32,
    /// Target video bitrate in kbit/s.
    pub video_kbps: u32,
}

/// Transcoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeSettings {
    /// Encoder backend: a file name (without `.toml`) under `pipelines_dir`,
    /// or `auto` for the first one that works on this box.
    pub encoder: String,
    /// A configured backend that does not work falls back to software
    /// (x264, then openh264) instead of stopping start-up.
    pub fallback: bool,
    /// Folder with the pipeline descriptions, relative to the config file.
    pub pipelines_dir: PathBuf,
    /// x264 speed preset for software encoding.
    pub x264_preset: String,
    /// Target segment duration in seconds; also the keyframe interval.
    pub segment_secs: f64,
    /// Publish the source video as its own rendition, without re-encoding.
    pub passthrough: bool,
    /// Rungs taller than the source are skipped, not upscaled.
    pub ladder: Vec<Rung>,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        Self {
            encoder: "auto".into(),
            fallback: true,
            pipelines_dir: PathBuf::from("pipelines"),
            x264_preset: "veryfast".into(),
            segment_secs: 2.0,
            passthrough: true,
            ladder: default_ladder(),
        }
    }
}

/// The default ladder, close to Apple's HLS authoring ladder.
pub fn default_ladder() -> Vec<Rung> {
    [("720p", 720, 3000), ("480p", 480, 1400), ("360p", 360, 800)]
        .into_iter()
        .map(|(name, height, video_kbps)| Rung {
            name: name.into(),
            height,
            video_kbps,
        })
        .collect()
}

/// Packaging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageSettings {
    /// Segments listed in each live media playlist.
    pub window_segments: usize,
    /// Also write segments and playlists under `data_dir/live/`.
    pub mirror_to_disk: bool,
}

impl Default for PackageSettings {
    fn default() -> Self {
        Self {
            window_segments: 6,
            mirror_to_disk: false,
        }
    }
}

/// Playback over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybackSettings {
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_origins: Vec<String>,
    /// `Cache-Control: max-age` for playlists, in seconds.
    pub playlist_max_age_secs: u32,
    /// `Cache-Control: max-age` for segments, in seconds.
    pub segment_max_age_secs: u32,
    /// Refuse playback URLs without a valid signed token.
    pub require_signed_urls: bool,
    /// Keys that sign playback tokens. Empty: one is generated and kept in
    /// `data_dir/secrets.json`.
    pub signing_keys: Vec<SigningKeySettings>,
    /// Which key signs new URLs; empty means the first.
    pub signing_key_id: String,
    /// Lifetime of URLs printed by `bigfoot sign` and minted by the API.
    pub default_ttl_secs: u64,
    /// Tolerated clock difference when checking expiry, in seconds.
    pub clock_leeway_secs: u64,
    /// A player with no request for this long has left. 0: three segment
    /// durations.
    pub viewer_timeout_secs: u64,
}

/// A playback signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySettings {
    /// Short name written into tokens: lowercase letters, digits, - and _.
    pub id: String,
    /// At least 32 bytes.
    pub secret: String,
}

impl Default for PlaybackSettings {
    fn default() -> Self {
        Self {
            cors_origins: vec!["*".into()],
            playlist_max_age_secs: 1,
            segment_max_age_secs: 3600,
            require_signed_urls: false,
            signing_keys: Vec::new(),
            signing_key_id: String::new(),
            default_ttl_secs: 3600,
            clock_leeway_secs: 30,
            viewer_timeout_secs: 0,
        }
    }
}

/// The control API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub enabled: bool,
    /// HS256 secret for API tokens (`bigfoot token`). Empty: one is
    /// generated and kept in `data_dir/secrets.json`.
    pub jwt_secret: String,
    /// JWKS file of an identity provider whose RS256/ES256 tokens are also
    /// accepted (relative to this file). Empty: none.
    pub jwks_file: PathBuf,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` (or Cognito `client_id`) claim.
    pub audience: String,
    /// Requests per minute per token subject and per client address.
    pub rate_limit_per_minute: u32,
    /// Origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            jwt_secret: String::new(),
            jwks_file: PathBuf::new(),
            issuer: "bigfoot".into(),
            audience: "bigfoot-api".into(),
            rate_limit_per_minute: 600,
            cors_origins: vec!["*".into()],
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The event socket (`/api/v1/events`) and its server-sent twin.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Recent events kept for clients that resume with `since`.
    pub replay_buffer: usize,
    /// Events a client may fall behind the newest one before it is cut off
    /// as too slow (the capacity of the live event ring).
    pub client_queue: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            replay_buffer: 1024,
            client_queue: 1024,
        }
    }
}

/// A receiver of events over HTTP POST.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` URL to POST each event to.
    pub url: String,
    /// Event types to send, such as `stream:started`; `["*"]` sends all.
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `X-Bigfoot-Signature` header; 16 bytes or more.
    pub secret: String,
}

/// JPEG thumbnails of the live picture.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThumbnailSettings {
    pub enabled: bool,
    /// Seconds between two thumbnails.
    pub interval_secs: f64,
    /// Width in pixels; the height keeps the source aspect ratio.
    pub width: u32,
}

impl Default for ThumbnailSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 5.0,
            width: 320,
        }
    }
}

/// A stream that may publish.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Public name, used in playback URLs.
    pub name: String,
    /// Secret stream key, used in the publish URL.
    pub key: String,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text that came from `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            key: validate::key_of_toml_error(&e, text),
            message: e.message().to_string(),
        })?;
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match self.source.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.server.data_dir)
    }

    /// The pipelines directory, resolved.
    pub fn pipelines_dir(&self) -> PathBuf {
        self.resolve(&self.transcode.pipelines_dir)
    }

    /// Segment duration as a [`Duration`].
    pub fn segment_duration(&self) -> Duration {
        Duration::from_secs_f64(self.transcode.segment_secs)
    }

    /// How long a silent player still counts as a viewer.
    pub fn viewer_timeout(&self) -> Duration {
        match self.playback.viewer_timeout_secs {
            0 => self.segment_duration() * 3,
            secs => Duration::from_secs(secs),
        }
    }

    /// The stream a key publishes to, if any.
    pub fn stream_for_key(&self, key: &str) -> Option<&StreamSettings> {
        self.streams.iter().find(|s| s.key == key)
    }
}
