//! The stream resource as the API shows it, and the request bodies that
//! create and change streams or mint playback URLs.
//!
//! Plain data and checks; the handlers that use them are in `api.rs`.
//! A stream's key appears only in [`StreamWithKey`] and [`StreamKey`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::catalog::{Origin, StreamRecord};
use super::envelope::{ApiError, rfc3339};
use crate::config::{Rung, TranscodeSettings};
use crate::deliver::viewers::ViewerStats;
use crate::live::{IngestStatus, RenditionStatus, StreamStatus};

/// Most rungs a stream's own ladder may have.
pub const MAX_RUNGS: usize = 8;
/// Longest lifetime of a minted playback URL: 7 days.
pub const MAX_PLAYBACK_TTL_SECS: u64 = 7 * 24 * 3600;

/// A ladder rung in the API's camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RungBody {
    pub name: String,
    pub height: u32,
    pub video_kbps: u32,
}

impl From<&Rung> for RungBody {
    fn from(rung: &Rung) -> Self {
        Self {
            name: rung.name.clone(),
            height: rung.height,
            video_kbps: rung.video_kbps,
        }
    }
}

impl From<RungBody> for Rung {
    fn from(rung: RungBody) -> Self {
        Self {
            name: rung.name,
            height: rung.height,
            video_kbps: rung.video_kbps,
        }
    }
}

/// One stream: its settings and, when it has a task, its live state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub origin: Origin,
    /// `None` for streams from config.toml.
    pub created_at: Option<String>,
    /// The stream's own ladder; `None` uses `transcode.ladder`.
    pub ladder: Option<Vec<RungBody>>,
    /// The stream's own choice; `None` uses `transcode.passthrough`.
    pub passthrough: Option<bool>,
    pub live: bool,
    pub live_since: Option<String>,
    pub uptime_secs: Option<u64>,
    pub publisher: Option<String>,
    pub ingest: IngestStatus,
    pub renditions: Vec<RenditionStatus>,
    /// Player sessions watching now (`viewers.current`).
    pub current_viewers: usize,
    /// Viewers now, at the peak and in total this stream session.
    pub viewers: ViewerStats,
    pub last_error: Option<String>,
    /// Where to publish, without the key (OBS's "Server").
    pub ingest_url: String,
}

impl StreamView {
    /// `status` is `None` for a stream that has not published since the
    /// server started.
    pub fn new(
        record: &StreamRecord,
        status: Option<&StreamStatus>,
        viewers: ViewerStats,
        ingest_url: &str,
        now: OffsetDateTime,
    ) -> Self {
        let status = status.cloned().unwrap_or_default();
        let live_since = status.live_since.filter(|_| status.live);
        let uptime_secs =
            live_since.map(|since| u64::try_from((now - since).whole_seconds()).unwrap_or(0));
        Self {
            id: record.name.clone(),
            name: record.name.clone(),
            enabled: record.enabled,
            origin: record.origin,
            created_at: (record.origin == Origin::Api).then(|| rfc3339(record.created_at)),
            ladder: record
                .ladder
                .as_ref()
                .map(|l| l.iter().map(RungBody::from).collect()),
            passthrough: record.passthrough,
            live: status.live,
            live_since: live_since.map(rfc3339),
            uptime_secs,
            publisher: status.publisher.filter(|_| status.live),
            ingest: status.ingest,
            renditions: status.renditions,
            current_viewers: viewers.current,
            viewers,
            last_error: status.last_error,
            ingest_url: ingest_url.to_string(),
        }
    }
}

/// A stream with its secret key: the answer to create.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamWithKey {
    #[serde(flatten)]
    pub stream: StreamView,
    pub key: String,
    /// `ingestUrl/key`: what ffmpeg publishes to.
    pub publish_url: String,
}

/// A stream's key and where to publish with it: the answer to get-key and
/// rotate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamKey {
    pub id: String,
    pub key: String,
    pub ingest_url: String,
    pub publish_url: String,
}

impl StreamKey {
    pub fn new(record: &StreamRecord, ingest_url: &str) -> Self {
        Self {
            id: record.name.clone(),
            key: record.key.clone(),
            ingest_url: ingest_url.to_string(),
            publish_url: format!("{ingest_url}/{}", record.key),
        }
    }
}

/// `POST /api/v1/streams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateStream {
    pub name: String,
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub ladder: Option<Vec<RungBody>>,
    #[serde(default, deserialize_with = "present")]
    pub passthrough: Option<bool>,
}

/// `PATCH /api/v1/streams/{id}`: absent fields stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateStream {
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub ladder: Option<Vec<RungBody>>,
    #[serde(default, deserialize_with = "present")]
    pub passthrough: Option<bool>,
}

/// `POST /api/v1/streams/{id}/playback-urls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaybackRequest {
    /// Lifetime in seconds; `playback.default_ttl_secs` when absent.
    #[serde(default, deserialize_with = "present")]
    pub ttl_secs: Option<u64>,
    /// Bind the URLs to this client address.
    #[serde(default, deserialize_with = "present")]
    pub client_ip: Option<IpAddr>,
}

/// Signed playback URLs of one stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackUrls {
    pub hls: String,
    pub dash: String,
    pub thumbnail: String,
    pub expires_at: String,
}

/// A field that may be absent but not `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A JSON body, or `INVALID_JSON` with serde's reason. An empty body is `{}`.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Refuses a ladder and passthrough choice that would publish no video
/// rendition at all, or a ladder too long.
pub fn check_renditions(
    ladder: Option<&[Rung]>,
    passthrough: Option<bool>,
    defaults: &TranscodeSettings,
) -> Result<(), ApiError> {
    if ladder.is_some_and(|l| l.len() > MAX_RUNGS) {
        return Err(ApiError::Validation(format!(
            "ladder: at most {MAX_RUNGS} rungs"
        )));
    }
    let rungs = ladder.map_or(defaults.ladder.len(), <[Rung]>::len);
    if rungs == 0 && !passthrough.unwrap_or(defaults.passthrough) {
        return Err(ApiError::Validation(
            "ladder: an empty ladder needs passthrough = true".into(),
        ));
    }
    Ok(())
}

/// `limit` and `offset` of a list query.
pub fn page(query: Option<&str>) -> Result<(usize, usize), ApiError> {
    const DEFAULT_LIMIT: usize = 50;
    const MAX_LIMIT: usize = 100;
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || match value.parse::<usize>() {
            Ok(n) => Ok(n),
            Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(usize::MAX)
            }
            Err(_) => Err(ApiError::Validation(format!("{name}: not a whole number"))),
        };
        match name {
            "limit" => limit = number()?,
            "offset" => offset = number()?,
            _ => {}
        }
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be within 1 to {MAX_LIMIT}"
        )));
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_and_are_bounded() {
        assert_eq!(page(None).ok(), Some((50, 0)));
        assert_eq!(page(Some("limit=2&offset=4&x=y")).ok(), Some((2, 4)));
        assert!(page(Some("limit=0")).is_err());
        assert!(page(Some("limit=101")).is_err());
        assert!(page(Some("offset=-1")).is_err());
        assert_eq!(
            page(Some("offset=99999999999999999999999")).ok(),
            Some((50, usize::MAX))
        );
    }

    #[test]
    fn bodies_refuse_unknown_fields_and_accept_empty() {
        assert!(parse_body::<UpdateStream>(br#"{"enabled":true,"x":1}"#).is_err());
        assert!(parse_body::<PlaybackRequest>(b"").is_ok());
        assert!(parse_body::<PlaybackRequest>(br#"{"ttlSecs":null}"#).is_err());
        let create: CreateStream =
            parse_body(br#"{"name":"a","ladder":[{"name":"l","height":360,"videoKbps":800}]}"#)
                .expect("valid");
        assert_eq!(create.ladder.map(|l| l[0].video_kbps), Some(800));
    }

    #[test]
    fn a_stream_must_publish_some_video() {
        let defaults = TranscodeSettings::default();
        assert!(check_renditions(Some(&[]), Some(false), &defaults).is_err());
        assert!(check_renditions(Some(&[]), None, &defaults).is_ok());
        assert!(check_renditions(None, Some(false), &defaults).is_ok());
    }
}
