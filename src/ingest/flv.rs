//! FLV tag bodies as RTMP carries them: audio and video message payloads.
//!
//! Pure parsing over bytes; nothing here allocates beyond cheap `Bytes`
//! slices, and nothing panics on hostile input.

use bytes::Bytes;

/// FLV video codec id for AVC (H.264).
const CODEC_AVC: u8 = 7;
/// Legacy, non-standard FLV codec id some encoders use for HEVC.
const CODEC_HEVC_LEGACY: u8 = 12;
/// FLV sound format for AAC.
const SOUND_AAC: u8 = 10;

/// A parsed video message.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord (`avcC`).
    AvcSequenceHeader(Bytes),
    /// One access unit of length-prefixed NAL units.
    AvcFrame {
        keyframe: bool,
        /// Composition time offset (PTS - DTS) in milliseconds.
        cts_ms: i32,
        data: Bytes,
    },
    /// End of sequence marker; carries no picture.
    AvcEndOfSequence,
    /// Video the server cannot carry, named for the error message.
    Unsupported(String),
    /// Video info or command frames, which carry no picture.
    Ignored,
}

/// A parsed audio message.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioTag {
    /// AudioSpecificConfig.
    AacSequenceHeader(Bytes),
    /// One raw AAC frame.
    AacFrame(Bytes),
    /// Audio the server cannot carry, named for the error message.
    Unsupported(String),
}

/// Why a tag body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("{0} message is too short ({1} bytes)")]
    Truncated(&'static str, usize),
}

/// Parses an RTMP video message payload.
pub fn parse_video(body: &Bytes) -> Result<VideoTag, TagError> {
    let Some(&first) = body.first() else {
        return Err(TagError::Truncated("video", 0));
    };
    if first & 0x80 != 0 {
        return Ok(VideoTag::Unsupported(enhanced_fourcc(body)));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    match codec {
        CODEC_AVC => {}
        CODEC_HEVC_LEGACY => return Ok(VideoTag::Unsupported("HEVC (codec id 12)".into())),
        other => return Ok(VideoTag::Unsupported(format!("FLV video codec id {other}"))),
    }
    if body.len() < 5 {
        return Err(TagError::Truncated("AVC video", body.len()));
    }
    let cts = i32::from_be_bytes([0, body[2], body[3], body[4]]);
    let cts_ms = (cts << 8) >> 8;
    match body[1] {
        0 => Ok(VideoTag::AvcSequenceHeader(body.slice(5..))),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            cts_ms,
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::AvcEndOfSequence),
        _ => Ok(VideoTag::Ignored),
    }
}

fn enhanced_fourcc(body: &Bytes) -> String {
    match body.get(1..5) {
        Some(code) if code.iter().all(u8::is_ascii_graphic) => {
            format!("enhanced RTMP `{}`", String::from_utf8_lossy(code))
        }
        _ => "enhanced RTMP video".into(),
    }
}

/// Parses an RTMP audio message payload.
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, TagError> {
    let Some(&first) = body.first() else {
        return Err(TagError::Truncated("audio", 0));
    };
    let format = first >> 4;
    if format != SOUND_AAC {
        return Ok(AudioTag::Unsupported(format!("FLV sound format {format}")));
    }
    match body.get(1) {
        Some(0) => Ok(AudioTag::AacSequenceHeader(body.slice(2..))),
        Some(_) => Ok(AudioTag::AacFrame(body.slice(2..))),
        None => Err(TagError::Truncated("AAC audio", body.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_frame_with_negative_cts() {
        let body = Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x65]);
        let tag = parse_video(&body).expect("parses");
        assert_eq!(
            tag,
            VideoTag::AvcFrame {
                keyframe: true,
                cts_ms: -2,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            }
        );
    }

    #[test]
    fn avc_sequence_header_and_inter_frame() {
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]);
        assert_eq!(
            parse_video(&seq),
            Ok(VideoTag::AvcSequenceHeader(Bytes::from_static(&[
                1, 0x64, 0, 0x1f
            ])))
        );
        let inter = Bytes::from_static(&[0x27, 1, 0, 0, 40, 9]);
        match parse_video(&inter) {
            Ok(VideoTag::AvcFrame {
                keyframe, cts_ms, ..
            }) => {
                assert!(!keyframe);
                assert_eq!(cts_ms, 40);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_codecs_are_named() {
        let hevc = Bytes::from_static(&[0x1c, 0, 0, 0, 0]);
        assert!(matches!(parse_video(&hevc), Ok(VideoTag::Unsupported(s)) if s.contains("HEVC")));
        let ex = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1']);
        assert!(matches!(parse_video(&ex), Ok(VideoTag::Unsupported(s)) if s.contains("hvc1")));
        let mp3 = Bytes::from_static(&[0x2f, 0xff]);
        assert!(matches!(parse_audio(&mp3), Ok(AudioTag::Unsupported(_))));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for len in 0..5 {
            let body = Bytes::from(vec![0x17u8; len]);
            let _ = parse_video(&body);
            let _ = parse_audio(&body);
        }
        assert!(parse_video(&Bytes::new()).is_err());
        assert!(parse_audio(&Bytes::from_static(&[0xaf])).is_err());
    }

    #[test]
    fn aac_header_and_frame() {
        let hdr = Bytes::from_static(&[0xaf, 0, 0x11, 0x90]);
        assert_eq!(
            parse_audio(&hdr),
            Ok(AudioTag::AacSequenceHeader(Bytes::from_static(&[
                0x11, 0x90
            ])))
        );
        let frame = Bytes::from_static(&[0xaf, 1, 0x21]);
        assert_eq!(
            parse_audio(&frame),
            Ok(AudioTag::AacFrame(Bytes::from_static(&[0x21])))
        );
    }
}
