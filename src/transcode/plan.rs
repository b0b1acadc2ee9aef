//! Which renditions a stream gets, decided from config and its source.

use bytes::Bytes;

use crate::config::TranscodeSettings;
use crate::ingest::avc::AvcConfig;

/// Rendition name of the untouched source video.
pub const PASSTHROUGH_NAME: &str = "source";
/// Rendition name of the audio track.
pub const AUDIO_NAME: &str = "audio";

/// The tracks a publisher sends, with their decoder configuration.
#[derive(Debug, Clone, Default)]
pub struct TrackSet {
    pub video: Option<AvcConfig>,
    /// AAC AudioSpecificConfig.
    pub audio: Option<Bytes>,
}

/// What one rendition is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum RenditionKind {
    /// Decoded, scaled and encoded.
    Transcoded {
        width: u32,
        height: u32,
        video_kbps: u32,
    },
    /// The source video, not decoded.
    Passthrough,
    /// The source audio, not decoded.
    Audio,
}

/// One rendition of a live stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionPlan {
    pub name: String,
    pub kind: RenditionKind,
}

impl RenditionPlan {
    pub fn is_video(&self) -> bool {
        !matches!(self.kind, RenditionKind::Audio)
    }
}

/// Plans the renditions: every rung shorter than the source (widths keep
/// the source aspect ratio, rounded to even), the passthrough, the audio.
pub fn plan(settings: &TranscodeSettings, tracks: &TrackSet) -> Vec<RenditionPlan> {
    let mut out = Vec::new();
    if let Some(video) = &tracks.video {
        for rung in &settings.ladder {
            if rung.height >= video.height {
                continue;
            }
            let width = scaled_width(video.width, video.height, rung.height);
            out.push(RenditionPlan {
                name: rung.name.clone(),
                kind: RenditionKind::Transcoded {
                    width,
                    height: rung.height,
                    video_kbps: rung.video_kbps,
                },
            });
        }
        if settings.passthrough || out.is_empty() {
            out.push(RenditionPlan {
                name: PASSTHROUGH_NAME.into(),
                kind: RenditionKind::Passthrough,
            });
        }
    }
    if tracks.audio.is_some() {
        out.push(RenditionPlan {
            name: AUDIO_NAME.into(),
            kind: RenditionKind::Audio,
        });
    }
    out
}

/// The even width that keeps `src_w:src_h` at `height`.
pub fn scaled_width(src_w: u32, src_h: u32, height: u32) -> u32 {
    if src_h == 0 {
        return height * 16 / 9 / 2 * 2;
    }
    let exact = f64::from(src_w) * f64::from(height) / f64::from(src_h);
    let even = (exact / 2.0).round() * 2.0;
    (even as u32).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_ladder;

    fn source(width: u32, height: u32) -> TrackSet {
        TrackSet {
            video: Some(AvcConfig {
                profile: 100,
                level: 31,
                width,
                height,
                record: Bytes::new(),
            }),
            audio: Some(Bytes::from_static(&[0x11, 0x90])),
        }
    }

    #[test]
    fn skips_rungs_at_or_above_the_source() {
        let settings = TranscodeSettings::default();
        let names: Vec<_> = plan(&settings, &source(1280, 720))
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["480p", "360p", "source", "audio"]);
        assert_eq!(settings.ladder, default_ladder());
    }

    #[test]
    fn widths_keep_aspect_and_are_even() {
        assert_eq!(scaled_width(1920, 1080, 480), 854);
        assert_eq!(scaled_width(1280, 720, 360), 640);
        assert_eq!(scaled_width(1280, 720, 240), 426);
        assert_eq!(scaled_width(720, 1280, 360), 202);
    }

    #[test]
    fn audio_only_and_video_only() {
        let settings = TranscodeSettings::default();
        let audio_only = TrackSet {
            video: None,
            audio: Some(Bytes::from_static(&[0x11, 0x90])),
        };
        assert_eq!(plan(&settings, &audio_only).len(), 1);
        let mut video_only = source(640, 360);
        video_only.audio = None;
        let names: Vec<_> = plan(&settings, &video_only)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["source"]);
    }
}
