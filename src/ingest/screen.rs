//! What a publisher's connection gets past before `rml_rtmp` and the
//! registry see it: whole RTMP messages, and publish keys.
//!
//! The chunk reader hands over whole messages; the screen decides, from a
//! message alone and a count kept per connection, whether the session
//! library sees it, whether it is dropped, or whether the connection must
//! close. Nothing here holds a socket or stream state, so the fuzz targets
//! run the very checks the server runs.

use std::borrow::Cow;

use rml_rtmp::rml_amf0::Amf0Value;

use super::amf;
use super::chunk::RawMessage;

/// RTMP message types (RTMP 1.0, 5.4 and 7.1).
pub const MSG_ACKNOWLEDGEMENT: u8 = 3;
pub const MSG_USER_CONTROL: u8 = 4;
pub const MSG_WINDOW_ACK_SIZE: u8 = 5;
pub const MSG_PEER_BANDWIDTH: u8 = 6;
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;
pub const MSG_DATA_AMF3: u8 = 15;
pub const MSG_COMMAND_AMF3: u8 = 17;
pub const MSG_DATA_AMF0: u8 = 18;
pub const MSG_COMMAND_AMF0: u8 = 20;

/// `createStream` commands one connection may send; each costs `rml_rtmp`
/// an entry it never frees. Encoders send one.
pub const MAX_CREATE_STREAM: u32 = 16;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to `rml_rtmp`.
    Pass,
    /// Drop it and carry on; the reason is for the debug log.
    Ignore(Cow<'static, str>),
    /// A `publish` without a stream name and a publishing type: answer
    /// `NetStream.Publish.BadName` instead of passing it on.
    BadPublish,
    /// Close the connection for this reason.
    Close(String),
}

/// The per-connection state of the screen.
#[derive(Debug, Default)]
pub struct Screen {
    streams_created: u32,
}

impl Screen {
    pub fn new() -> Self {
        Self::default()
    }

    /// The verdict on `message`, the next message of this connection.
    pub fn check(&mut self, message: &RawMessage) -> Verdict {
        match message.type_id {
            MSG_AUDIO | MSG_VIDEO | MSG_ACKNOWLEDGEMENT | MSG_USER_CONTROL | MSG_PEER_BANDWIDTH => {
                Verdict::Pass
            }
            MSG_WINDOW_ACK_SIZE => {
                // `rml_rtmp` counts bytes towards it in a u32.
                let high = message.payload.get(..4).map(|b| b[0]);
                if high.is_none_or(|high| high & 0x80 != 0) {
                    Verdict::Ignore("a window acknowledgement size over 2 GiB".into())
                } else {
                    Verdict::Pass
                }
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => self.check_command(message),
            // Metadata is a hint the server does not need: the sequence
            // headers say what the media is.
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => Verdict::Ignore("stream metadata".into()),
            other => Verdict::Ignore(format!("message type {other}").into()),
        }
    }

    fn check_command(&mut self, message: &RawMessage) -> Verdict {
        let body = amf::command_body(message.type_id, &message.payload);
        match amf::check_command(&body) {
            Ok(command) if command.name == "createStream" => {
                self.streams_created += 1;
                if self.streams_created > MAX_CREATE_STREAM {
                    Verdict::Close(format!(
                        "more than {MAX_CREATE_STREAM} createStream commands"
                    ))
                } else {
                    Verdict::Pass
                }
            }
            Ok(command) if command.name == "publish" && !is_publish(&command) => {
                Verdict::BadPublish
            }
            Ok(_) => Verdict::Pass,
            Err(e) => Verdict::Ignore(format!("a malformed command: {e}").into()),
        }
    }
}

/// Whether a `publish` command names a stream and a publishing type (`live`,
/// `append` or `record`), as `rml_rtmp` needs: it answers others with a
/// misleading status code.
fn is_publish(command: &amf::Command) -> bool {
    matches!(
        command.values.get(3..5),
        Some([Amf0Value::Utf8String(_), Amf0Value::Utf8String(mode)])
            if matches!(mode.as_str(), "live" | "append" | "record")
    )
}

/// The one gate a publish key passes before anything looks it up: the part
/// before any `?query`, 4 to 128 of ASCII letters, digits, `-` and `_`
/// (what config validation and generated keys allow). Anything else (path
/// or shell characters, NUL, overlong keys) is refused unread.
pub fn publish_key(raw: &str) -> Option<&str> {
    let key = strip_query(raw);
    let well_formed = (4..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(key)
}

/// The part of an RTMP app name or key before any `?query`, without
/// trailing slashes.
pub fn strip_query(value: &str) -> &str {
    value
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::publish_key;

    #[test]
    fn only_well_formed_keys_pass_the_gate() {
        assert_eq!(publish_key("demo"), Some("demo"));
        assert_eq!(publish_key("Abc-123_x?token=1"), Some("Abc-123_x"));
        let long = "k".repeat(300);
        let huge = "k".repeat(65536);
        for bad in [
            "../x",
            "a%2fb",
            "a\\b",
            "a\0b",
            "a;rm -rf",
            "a b",
            "$(id)",
            "ab",
            "",
            long.as_str(),
            huge.as_str(),
        ] {
            assert_eq!(publish_key(bad), None, "{bad:?}");
        }
    }
}
