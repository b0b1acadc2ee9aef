//! Thumbnails of a stream whose pipeline decodes nothing else (no
//! transcoded rungs: the passthrough and audio only).
//!
//! Keeping a decoder running for one picture every few seconds would cost
//! every such stream a decode thread, a pool of decoded frames and a thread
//! hand-off for each source frame. Instead each thumbnail that falls due
//! decodes a single keyframe in a short-lived pipeline on a thread of its
//! own, and nothing is kept between thumbnails:
//!
//! ```text
//! appsrc(one H.264 keyframe) ! h264parse ! decode ! videoconvert
//!     ! videoscale ! capsfilter(thumbnail size) ! jpegenc ! appsink
//! ```

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::TranscodeError;
use super::backend::{ElementSpec, build_chain};
use super::pipeline::{
    PipelineEvent, PipelineOutput, ThumbnailSettings, avc_caps, copy_out, i420_filter, link_chain,
    make, next_due,
};
use crate::ingest::avc::AvcConfig;

/// How long one keyframe may take to become a JPEG before it is given up.
const STILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns the keyframes a thumbnail is due for into JPEGs.
pub struct KeyframeStills {
    job: Arc<StillJob>,
    interval: gst::ClockTime,
    due: Mutex<Option<gst::ClockTime>>,
    /// A thumbnail is being made; keyframes that arrive meanwhile are not
    /// taken (the next one is).
    busy: Arc<AtomicBool>,
    /// The last thumbnail failed: the next failures are not warned about
    /// again (a broken decoder would fail every interval).
    failing: Arc<AtomicBool>,
    generation: u64,
    stream: Arc<str>,
    output: UnboundedSender<PipelineOutput>,
}

/// What every one-shot pipeline of a stream is built from.
struct StillJob {
    caps: gst::Caps,
    decode: Vec<ElementSpec>,
    size: gst::Caps,
}

impl KeyframeStills {
    pub fn new(
        video: &AvcConfig,
        decode: &[ElementSpec],
        settings: ThumbnailSettings,
        generation: u64,
        stream: &str,
        output: UnboundedSender<PipelineOutput>,
    ) -> Self {
        let mut size = thumbnail_caps(video, settings.width);
        if let Some(structure) = size.make_mut().structure_mut(0) {
            structure.set("format", "I420");
        }
        let job = StillJob {
            caps: avc_caps(video),
            decode: decode.to_vec(),
            size,
        };
        Self {
            job: Arc::new(job),
            interval: gst::ClockTime::from_nseconds(settings.interval.as_nanos() as u64),
            due: Mutex::new(None),
            busy: Arc::new(AtomicBool::new(false)),
            failing: Arc::new(AtomicBool::new(false)),
            generation,
            stream: stream.into(),
            output,
        }
    }

    /// Offers a source keyframe at `pts`; starts a thumbnail from it when
    /// one is due and none is being made.
    pub fn offer(&self, pts: gst::ClockTime, keyframe: &Bytes) {
        let Ok(mut due) = self.due.lock() else {
            return;
        };
        if due.is_some_and(|due| pts < due) || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        *due = Some(next_due(*due, pts, self.interval));
        drop(due);

        let job = self.job.clone();
        let busy = self.busy.clone();
        let failing = self.failing.clone();
        let output = self.output.clone();
        let stream = self.stream.clone();
        let generation = self.generation;
        let frame = keyframe.clone();
        let spawned = std::thread::Builder::new()
            .name("thumbnail".into())
            .spawn(move || {
                let result = job.run(frame);
                busy.store(false, Ordering::Release);
                let failed_before = failing.swap(result.is_err(), Ordering::AcqRel);
                match result {
                    Ok(jpeg) => {
                        if failed_before {
                            tracing::info!(stream = %stream, "thumbnails work again");
                        }
                        let event = PipelineEvent::Thumbnail(jpeg);
                        let _ = output.send(PipelineOutput { generation, event });
                    }
                    Err(e) if failed_before => {
                        tracing::debug!(stream = %stream, error = %e, "thumbnail failed again");
                    }
                    Err(e) => tracing::warn!(stream = %stream, error = %e, "thumbnail failed"),
                }
            });
        if let Err(e) = spawned {
            self.busy.store(false, Ordering::Release);
            tracing::warn!(stream = %self.stream, error = %e, "cannot start a thumbnail thread");
        }
    }
}

impl StillJob {
    /// Decodes `keyframe` and encodes it as a JPEG of the thumbnail size.
    fn run(&self, keyframe: Bytes) -> Result<Bytes, TranscodeError> {
        let pipeline = gst::Pipeline::with_name("thumbnail");
        let result = self.build_and_pull(&pipeline, keyframe);
        let _ = pipeline.set_state(gst::State::Null);
        result
    }

    fn build_and_pull(
        &self,
        pipeline: &gst::Pipeline,
        keyframe: Bytes,
    ) -> Result<Bytes, TranscodeError> {
        let src = gst_app::AppSrc::builder()
            .caps(&self.caps)
            .format(gst::Format::Time)
            .build();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let size = make("capsfilter")?;
        size.set_property("caps", &self.size);
        let mut chain: Vec<gst::Element> = vec![src.clone().upcast(), make("h264parse")?];
        for decoder in build_chain(&self.decode, None)? {
            // One picture: threads would cost more to start than they save.
            if decoder.find_property("max-threads").is_some() {
                decoder.set_property_from_str("max-threads", "1");
            }
            chain.push(decoder);
        }
        // Fixed formats keep caps negotiation, most of a still's cost, short.
        chain.extend([
            make("videoconvert")?,
            i420_filter()?,
            make("videoscale")?,
            size,
            make("jpegenc")?,
        ]);
        chain.push(sink.clone().upcast());
        pipeline
            .add_many(chain.iter())
            .map_err(|e| TranscodeError::Link(e.to_string()))?;
        link_chain(&chain)?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| TranscodeError::Start(e.to_string()))?;

        let mut buffer = gst::Buffer::from_slice(keyframe);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::ZERO);
            b.set_dts(gst::ClockTime::ZERO);
        }
        src.push_buffer(buffer)
            .map_err(|e| TranscodeError::Start(format!("keyframe refused: {e:?}")))?;
        let _ = src.end_of_stream();

        let timeout = gst::ClockTime::from_nseconds(STILL_TIMEOUT.as_nanos() as u64);
        let sample = sink
            .try_pull_sample(timeout)
            .ok_or_else(|| TranscodeError::Start(format!("no picture within {STILL_TIMEOUT:?}")))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| TranscodeError::Start("empty picture".into()))?;
        Ok(copy_out(std::iter::once(buffer)))
    }
}

/// Raw video caps of the thumbnail size, for the capsfilter after the
/// scaler.
pub(super) fn thumbnail_caps(video: &AvcConfig, width: u32) -> gst::Caps {
    let (width, height) = thumbnail_size(video, width);
    gst::Caps::builder("video/x-raw")
        .field("width", i32::try_from(width).unwrap_or(320))
        .field("height", i32::try_from(height).unwrap_or(180))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// The thumbnail's even width and height: `width` at most, never wider
/// than the source, with the source's aspect ratio.
fn thumbnail_size(video: &AvcConfig, width: u32) -> (u32, u32) {
    let width = width.min(video.width.max(2)) / 2 * 2;
    let height = super::plan::scaled_width(video.height, video.width, width);
    (width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc(width: u32, height: u32, record: Bytes) -> AvcConfig {
        AvcConfig {
            profile: 66,
            level: 30,
            width,
            height,
            record,
        }
    }

    /// One x264 keyframe of a 640x360 test picture, with its `avcC`.
    fn encoded_keyframe() -> (Bytes, Bytes) {
        gst::init().expect("GStreamer initialises");
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=1 ! video/x-raw,width=640,height=360 \
             ! x264enc speed-preset=ultrafast ! h264parse \
             ! video/x-h264,stream-format=avc,alignment=au ! appsink name=out",
        )
        .expect("test pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
        let sink = pipeline
            .by_name("out")
            .expect("appsink")
            .downcast::<gst_app::AppSink>()
            .expect("an appsink");
        pipeline.set_state(gst::State::Playing).expect("playing");
        let sample = sink.pull_sample().expect("a keyframe");
        let record = sample
            .caps()
            .and_then(|c| c.structure(0)?.get::<gst::Buffer>("codec_data").ok())
            .expect("codec_data");
        let frame = copy_out(std::iter::once(sample.buffer().expect("buffer")));
        let _ = pipeline.set_state(gst::State::Null);
        let record = Bytes::copy_from_slice(&record.map_readable().expect("map"));
        (record, frame)
    }

    /// Width and height from a JPEG's start-of-frame marker.
    fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
        let at = jpeg.windows(2).position(|w| w == [0xff, 0xc0])?;
        let h = u32::from(u16::from_be_bytes([*jpeg.get(at + 5)?, *jpeg.get(at + 6)?]));
        let w = u32::from(u16::from_be_bytes([*jpeg.get(at + 7)?, *jpeg.get(at + 8)?]));
        Some((w, h))
    }

    fn job(video: &AvcConfig, width: u32) -> StillJob {
        let settings = ThumbnailSettings {
            interval: Duration::from_secs(5),
            width,
        };
        let decode = vec![ElementSpec {
            factory: "avdec_h264".into(),
            properties: Default::default(),
        }];
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let stills = KeyframeStills::new(video, &decode, settings, 1, "test", tx);
        Arc::try_unwrap(stills.job)
            .ok()
            .expect("the only reference")
    }

    #[test]
    fn a_keyframe_becomes_a_jpeg_of_the_thumbnail_size() {
        let (record, frame) = encoded_keyframe();
        let video = avc(640, 360, record);
        let jpeg = job(&video, 320).run(frame).expect("a thumbnail");
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "JPEG start of image");
        assert_eq!(jpeg_size(&jpeg), Some((320, 180)));
    }

    #[test]
    fn a_keyframe_that_does_not_decode_is_an_error() {
        let (record, _) = encoded_keyframe();
        let video = avc(640, 360, record);
        let garbage = Bytes::from_static(&[0, 0, 0, 4, 0x65, 0xff, 0xff, 0xff]);
        assert!(job(&video, 320).run(garbage).is_err());
    }

    #[test]
    fn thumbnails_keep_the_source_shape_and_never_upscale() {
        let size = |w, h, want| thumbnail_size(&avc(w, h, Bytes::new()), want);
        assert_eq!(size(1280, 720, 320), (320, 180));
        assert_eq!(size(200, 100, 320), (200, 100));
        assert_eq!(size(1920, 1080, 255), (254, 142));
    }
}
