//! AMF0 checks before `rml_rtmp` decodes a command, and the one status
//! message the server writes itself.
//!
//! `rml_rtmp` decodes AMF0 recursively (deep nesting overflows the stack and
//! aborts the process) and panics on a command with fewer than three values.
//! [`check_command`] refuses both first: it measures nesting without
//! recursion, then decodes the (now shallow) values to check their shape.

use bytes::Bytes;
use rml_rtmp::rml_amf0::{self, Amf0Value};

/// Deepest object or array nesting accepted. Real commands nest two levels.
pub const MAX_DEPTH: usize = 16;

/// Why a command message is not handed to `rml_rtmp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("AMF0 values nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("AMF0 is malformed: {0}")]
    Malformed(String),
    #[error("a command needs a name, a numeric transaction id and an object")]
    Shape,
}

/// A command that `rml_rtmp` can decode without panicking.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub values: Vec<Amf0Value>,
}

/// The AMF0 body of a command message: type 17 (AMF3 command) bodies start
/// with a zero byte that `rml_rtmp` skips, so this skips it too.
pub fn command_body(type_id: u8, payload: &Bytes) -> Bytes {
    if type_id == 17 && payload.first() == Some(&0) {
        payload.slice(1..)
    } else {
        payload.clone()
    }
}

/// Checks an AMF0 command body the way `rml_rtmp` will read it.
pub fn check_command(body: &[u8]) -> Result<Command, CommandError> {
    check_depth(body)?;
    let mut cursor = std::io::Cursor::new(body);
    let values =
        rml_amf0::deserialize(&mut cursor).map_err(|e| CommandError::Malformed(e.to_string()))?;
    match values.as_slice() {
        [Amf0Value::Utf8String(name), Amf0Value::Number(_), _, ..] => Ok(Command {
            name: name.clone(),
            values,
        }),
        _ => Err(CommandError::Shape),
    }
}

/// One open container while measuring depth.
enum Open {
    /// Object or ECMA array: `key, value` pairs until an empty key and 0x09.
    Object,
    /// Strict array with this many values still to come.
    Array(u32),
}

/// Walks AMF0 values without recursion, as `rml_amf0` would read them, and
/// fails if they nest deeper than [`MAX_DEPTH`]. Other errors are left to
/// the decoder, which reports them without panicking.
fn check_depth(body: &[u8]) -> Result<(), CommandError> {
    let mut at = 0usize;
    let mut open: Vec<Open> = Vec::new();
    loop {
        let marker = match open.last_mut() {
            None => match body.get(at) {
                None | Some(0x09) => return Ok(()),
                Some(&m) => {
                    at += 1;
                    m
                }
            },
            Some(Open::Array(0)) => {
                open.pop();
                continue;
            }
            Some(Open::Array(left)) => {
                *left -= 1;
                match body.get(at) {
                    None => return Ok(()),
                    Some(0x09) => {
                        at += 1;
                        open.pop();
                        continue;
                    }
                    Some(&m) => {
                        at += 1;
                        m
                    }
                }
            }
            Some(Open::Object) => {
                let Some(len) = body.get(at..at + 2) else {
                    return Ok(());
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                at += 2;
                if len == 0 {
                    at += 1;
                    open.pop();
                    continue;
                }
                at = at.saturating_add(len);
                match body.get(at) {
                    None => return Ok(()),
                    Some(&m) => {
                        at += 1;
                        m
                    }
                }
            }
        };
        match marker {
            0x00 => at += 8,
            0x01 => at += 1,
            0x02 => {
                let Some(len) = body.get(at..at + 2) else {
                    return Ok(());
                };
                at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
            0x03 => open.push(Open::Object),
            0x08 => {
                at += 4;
                open.push(Open::Object);
            }
            0x0a => {
                let Some(n) = body.get(at..at + 4) else {
                    return Ok(());
                };
                at += 4;
                open.push(Open::Array(u32::from_be_bytes([n[0], n[1], n[2], n[3]])));
            }
            0x05 | 0x06 => {}
            _ => return Ok(()),
        }
        if open.len() > MAX_DEPTH {
            return Err(CommandError::TooDeep);
        }
    }
}

/// The AMF0 body of `onStatus(level, code, description)` for a stream.
pub fn on_status(level: &str, code: &str, description: &str) -> Vec<u8> {
    let status = [
        ("level", level),
        ("code", code),
        ("description", description),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
    .collect();
    let values = [
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(status),
    ];
    rml_amf0::serialize(&values.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(values: &[Amf0Value]) -> Vec<u8> {
        rml_amf0::serialize(&values.to_vec()).expect("serializable")
    }

    #[test]
    fn accepts_a_publish_command() {
        let body = encode(&[
            Amf0Value::Utf8String("publish".into()),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::Utf8String("key".into()),
            Amf0Value::Utf8String("live".into()),
        ]);
        let command = check_command(&body).expect("valid");
        assert_eq!(command.name, "publish");
        assert_eq!(command.values.len(), 5);
    }

    #[test]
    fn refuses_short_or_mistyped_commands() {
        let short = encode(&[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
        ]);
        assert_eq!(check_command(&short), Err(CommandError::Shape));
        let text_id = encode(&[
            Amf0Value::Utf8String("createStream".into()),
            Amf0Value::Utf8String("two".into()),
            Amf0Value::Null,
        ]);
        assert_eq!(check_command(&text_id), Err(CommandError::Shape));
        assert_eq!(check_command(&[]), Err(CommandError::Shape));
    }

    #[test]
    fn refuses_deep_nesting_without_recursion() {
        let mut body = encode(&[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
        ]);
        for _ in 0..200_000 {
            body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        assert_eq!(check_command(&body), Err(CommandError::TooDeep));
        let mut arrays = Vec::new();
        for _ in 0..100 {
            arrays.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert_eq!(check_depth(&arrays), Err(CommandError::TooDeep));
    }

    #[test]
    fn status_decodes() {
        let body = on_status("error", "NetStream.Publish.Rejected", "no HEVC");
        let command = check_command(&body).expect("valid");
        assert_eq!(command.name, "onStatus");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u32;
        for _ in 0..2000 {
            let len = (seed % 48) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    [0x00, 0x02, 0x03, 0x08, 0x09, 0x0a, 0x01, 0xff][(seed >> 16) as usize % 8]
                })
                .collect();
            let _ = check_command(&body);
        }
    }
}
