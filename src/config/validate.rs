//! Validation of a parsed [`Config`], with errors that name the key and file.

use std::collections::HashSet;
use std::path::PathBuf;

use super::Config;

/// x264 speed presets an operator may choose.
pub const X264_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
];

/// Longest stream or rendition name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Bounds of `ingest.max_message_bytes`: room for a command, and the
/// largest length an RTMP message header can carry.
const MIN_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_MESSAGE_BYTES: usize = 0xFF_FFFF;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {file}: key `{key}`: {message}")]
    Parse {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("invalid config file {file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// Whether `name` is safe as a stream or rendition name in URLs and paths:
/// 1 to 64 of lowercase ASCII letters, digits, `-` and `_`, not starting
/// with `-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            file: self.source.clone(),
            key: key.to_string(),
            message,
        };

        let t = &self.transcode;
        if !(0.5..=30.0).contains(&t.segment_secs) || !t.segment_secs.is_finite() {
            return Err(bad(
                "transcode.segment_secs",
                format!("{} is outside 0.5 to 30 seconds", t.segment_secs),
            ));
        }
        if !X264_PRESETS.contains(&t.x264_preset.as_str()) {
            return Err(bad(
                "transcode.x264_preset",
                format!(
                    "`{}` is not one of {}",
                    t.x264_preset,
                    X264_PRESETS.join(", ")
                ),
            ));
        }
        if !is_valid_name(&t.encoder) {
            return Err(bad(
                "transcode.encoder",
                format!("`{}` is not a backend name", t.encoder),
            ));
        }
        self.validate_ladder()?;

        if !(3..=100).contains(&self.package.window_segments) {
            return Err(bad(
                "package.window_segments",
                format!("{} is outside 3 to 100", self.package.window_segments),
            ));
        }
        let thumbs = &self.thumbnails;
        if !(0.5..=300.0).contains(&thumbs.interval_secs) {
            return Err(bad(
                "thumbnails.interval_secs",
                format!("{} is outside 0.5 to 300 seconds", thumbs.interval_secs),
            ));
        }
        if !(16..=3840).contains(&thumbs.width) || !thumbs.width.is_multiple_of(2) {
            return Err(bad(
                "thumbnails.width",
                format!("{} must be even and within 16 to 3840", thumbs.width),
            ));
        }
        for (i, key) in self.playback.signing_keys.iter().enumerate() {
            if !is_valid_name(&key.id) {
                return Err(bad(
                    &format!("playback.signing_keys[{i}].id"),
                    format!("`{}` must be lowercase letters, digits, - or _", key.id),
                ));
            }
            if key.secret.len() < 32 {
                return Err(bad(
                    &format!("playback.signing_keys[{i}].secret"),
                    "must be at least 32 bytes".into(),
                ));
            }
        }
        let active = &self.playback.signing_key_id;
        if !active.is_empty() && !self.playback.signing_keys.iter().any(|k| &k.id == active) {
            return Err(bad(
                "playback.signing_key_id",
                format!("no key in playback.signing_keys has id `{active}`"),
            ));
        }
        if !self.api.jwt_secret.is_empty() && self.api.jwt_secret.len() < 32 {
            return Err(bad("api.jwt_secret", "must be at least 32 bytes".into()));
        }
        if self.api.rate_limit_per_minute == 0 {
            return Err(bad(
                "api.rate_limit_per_minute",
                "must be at least 1".into(),
            ));
        }
        let ingest = &self.ingest;
        if !is_valid_name(&ingest.app) {
            return Err(bad(
                "ingest.app",
                format!("`{}` is not a valid name", ingest.app),
            ));
        }
        for (key, secs) in [
            (
                "ingest.handshake_timeout_secs",
                ingest.handshake_timeout_secs,
            ),
            ("ingest.idle_timeout_secs", ingest.idle_timeout_secs),
        ] {
            if secs == 0 {
                return Err(bad(key, "timeouts must be at least 1 second".into()));
            }
        }
        if self.server.max_http_connections == 0 {
            return Err(bad(
                "server.max_http_connections",
                "must be at least 1".into(),
            ));
        }
        if ingest.max_connections == 0 {
            return Err(bad("ingest.max_connections", "must be at least 1".into()));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&ingest.max_message_bytes) {
            return Err(bad(
                "ingest.max_message_bytes",
                format!("must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"),
            ));
        }
        self.validate_hooks()?;
        if self.events.replay_buffer == 0 {
            return Err(bad("events.replay_buffer", "must be at least 1".into()));
        }
        if !(16..=1_000_000).contains(&self.events.client_queue) {
            return Err(bad(
                "events.client_queue",
                format!("{} is outside 16 to 1000000", self.events.client_queue),
            ));
        }
        let url = &self.server.public_url;
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(bad(
                "server.public_url",
                "must start with http:// or https://".into(),
            ));
        }
        self.validate_streams()
    }

    fn validate_ladder(&self) -> Result<(), ConfigError> {
        let bad = |key: String, message: String| ConfigError::Invalid {
            file: self.source.clone(),
            key,
            message,
        };
        let mut names = HashSet::new();
        for (i, rung) in self.transcode.ladder.iter().enumerate() {
            let key = |field: &str| format!("transcode.ladder[{i}].{field}");
            if !is_valid_name(&rung.name) || rung.name == "audio" || rung.name == "source" {
                return Err(bad(
                    key("name"),
                    format!(
                        "`{}` must be lowercase letters, digits, - or _ \
                         (and not `audio` or `source`)",
                        rung.name
                    ),
                ));
            }
            if !names.insert(rung.name.as_str()) {
                return Err(bad(key("name"), format!("`{}` is used twice", rung.name)));
            }
            if !(64..=4320).contains(&rung.height) || rung.height % 2 != 0 {
                return Err(bad(
                    key("height"),
                    format!("{} must be even and within 64 to 4320", rung.height),
                ));
            }
            if !(50..=100_000).contains(&rung.video_kbps) {
                return Err(bad(
                    key("video_kbps"),
                    format!("{} is outside 50 to 100000", rung.video_kbps),
                ));
            }
        }
        if self.transcode.ladder.is_empty() && !self.transcode.passthrough {
            return Err(bad(
                "transcode.ladder".into(),
                "empty ladder with passthrough = false leaves no video output".into(),
            ));
        }
        Ok(())
    }

    fn validate_hooks(&self) -> Result<(), ConfigError> {
        let bad = |key: String, message: String| ConfigError::Invalid {
            file: self.source.clone(),
            key,
            message,
        };
        let ingest = &self.ingest;
        if !ingest.on_publish_url.is_empty() && !is_http_url(&ingest.on_publish_url) {
            return Err(bad(
                "ingest.on_publish_url".into(),
                "must be an http:// URL with a host (https is not supported)".into(),
            ));
        }
        if !(50..=60_000).contains(&ingest.on_publish_timeout_ms) {
            return Err(bad(
                "ingest.on_publish_timeout_ms".into(),
                format!("{} is outside 50 to 60000", ingest.on_publish_timeout_ms),
            ));
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks[{i}].{field}");
            if !is_http_url(&hook.url) {
                return Err(bad(
                    key("url"),
                    "must be an http:// URL with a host (https is not supported)".into(),
                ));
            }
            if hook.secret.len() < 16 {
                return Err(bad(key("secret"), "must be at least 16 bytes".into()));
            }
            if hook.events.is_empty() {
                return Err(bad(key("events"), "lists no event type".into()));
            }
            if let Some(unknown) = hook
                .events
                .iter()
                .find(|e| *e != "*" && !EVENT_TYPES.contains(&e.as_str()))
            {
                return Err(bad(
                    key("events"),
                    format!("`{unknown}` is not one of *, {}", EVENT_TYPES.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn validate_streams(&self) -> Result<(), ConfigError> {
        let bad = |key: String, message: String| ConfigError::Invalid {
            file: self.source.clone(),
            key,
            message,
        };
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, stream) in self.streams.iter().enumerate() {
            if !is_valid_name(&stream.name) {
                return Err(bad(
                    format!("streams[{i}].name"),
                    format!(
                        "`{}` must be lowercase letters, digits, - or _",
                        stream.name
                    ),
                ));
            }
            if !names.insert(stream.name.as_str()) {
                return Err(bad(
                    format!("streams[{i}].name"),
                    format!("`{}` is used twice", stream.name),
                ));
            }
            let key_ok = (4..=128).contains(&stream.key.len())
                && stream
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !key_ok {
                return Err(bad(
                    format!("streams[{i}].key"),
                    "must be 4 to 128 of letters, digits, - or _".into(),
                ));
            }
            if !keys.insert(stream.key.as_str()) {
                return Err(bad(
                    format!("streams[{i}].key"),
                    "the same key is used by two streams".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Event types a webhook may ask for.
pub const EVENT_TYPES: &[&str] = &[
    "stream:started",
    "stream:ended",
    "stream:qualityChanged",
    "stream:health",
    "viewer:joined",
    "viewer:left",
    "thumbnail:updated",
];

/// Whether `url` is `http://host...`: the only scheme hooks are sent over.
fn is_http_url(url: &str) -> bool {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?']).next())
        .is_some_and(|authority| !authority.is_empty() && !authority.contains('@'))
        && url.parse::<http::Uri>().is_ok()
}

/// Best-effort name of the key a TOML parse error points at, such as
/// `transcode.segment_secs`, found from the error's span.
pub(super) fn key_of_toml_error(error: &toml::de::Error, text: &str) -> String {
    let Some(span) = error.span() else {
        return "(file)".into();
    };
    let before = text.get(..span.start).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text.get(line_start..line_end).unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();

    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    match section {
        Some(section) if !key.starts_with('[') && !key.is_empty() => format!("{section}.{key}"),
        Some(section) => section,
        None if key.is_empty() => "(file)".into(),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/bigfoot/test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let config = load("").expect("defaults are valid");
        assert_eq!(config.transcode.ladder.len(), 3);
        assert_eq!(config.transcode.segment_secs, 2.0);
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let err = load("[transcode]\nsegment_secs = \"two\"\n").expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("transcode.segment_secs"), "{text}");
        assert!(text.contains("/etc/bigfoot/test.toml"), "{text}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[ingest]\nhandshake_timeout = 3\n").expect_err("must fail");
        assert!(
            err.to_string().contains("ingest.handshake_timeout"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = load("[transcode]\nsegment_secs = 0.1\n").expect_err("must fail");
        assert!(err.to_string().contains("transcode.segment_secs"), "{err}");
        let err = load("[transcode]\nx264_preset = \"placebo\"\n").expect_err("must fail");
        assert!(err.to_string().contains("transcode.x264_preset"), "{err}");
    }

    #[test]
    fn stream_names_and_keys_are_checked() {
        let err = load("[[streams]]\nname = \"../etc\"\nkey = \"abcd\"\n").expect_err("bad");
        assert!(err.to_string().contains("streams[0].name"), "{err}");
        let twice = "[[streams]]\nname = \"a\"\nkey = \"abcd\"\n\
                     [[streams]]\nname = \"b\"\nkey = \"abcd\"\n";
        let err = load(twice).expect_err("duplicate key");
        assert!(err.to_string().contains("streams[1].key"), "{err}");
    }

    #[test]
    fn hooks_are_checked() {
        let hook = |url: &str, events: &str, secret: &str| {
            format!("[[webhooks]]\nurl = \"{url}\"\nevents = {events}\nsecret = \"{secret}\"\n")
        };
        let good = hook(
            "http://10.0.0.1:9000/in",
            r#"["stream:started"]"#,
            "0123456789abcdef",
        );
        assert_eq!(load(&good).expect("valid").webhooks.len(), 1);
        for (text, key) in [
            (
                hook("https://x/in", r#"["*"]"#, "0123456789abcdef"),
                "webhooks[0].url",
            ),
            (
                hook("http://x/in", r#"["*"]"#, "short"),
                "webhooks[0].secret",
            ),
            (
                hook("http://x/in", r#"["stream:gone"]"#, "0123456789abcdef"),
                "webhooks[0].events",
            ),
            (
                "[ingest]\non_publish_url = \"ftp://x\"\n".into(),
                "ingest.on_publish_url",
            ),
        ] {
            let err = load(&text).expect_err("must fail");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn names_are_a_closed_alphabet() {
        assert!(is_valid_name("demo_1-a"));
        for bad in ["", "Demo", "a/b", "a.b", "-x", "a\0b", "é", &"x".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
