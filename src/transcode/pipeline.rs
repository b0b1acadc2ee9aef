//! The live pipeline of one stream session.
//!
//! ```text
//! appsrc(h264) ! h264parse ! tee ─┬─ cmafmux ! appsink                (source)
//!                                 └─ queue ! decode ! videoconvert ! I420
//!                                      ! [force keyframes] ! tee ─┬─ queue ! scale ! encode
//!                                                                 │    ! h264parse ! cmafmux
//!                                                                 │    ! appsink   (each rung)
//! appsrc(aac) ! aacparse ! cmafmux ! appsink                          (audio)
//! ```
//!
//! With `cascade_scaling` in the backend, the rungs are chained instead:
//! the largest is scaled from the decoded picture and each smaller one from
//! the rung above it (`scale ! tee ! encode`, the tee feeding the next
//! rung's queue), which costs the software scaler about a third less.
//!
//! A pipeline without transcoded rungs has no decoder: its thumbnails are
//! made from single keyframes by [`super::stills`].
//!
//! Keyframes are forced on a fixed grid of segment boundaries measured from
//! the first decoded frame, on the single raw branch that feeds every rung,
//! so every transcoded rendition starts each segment at the same
//! presentation time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::TranscodeError;
use super::backend::{Backend, RungValues, build_chain};
use super::plan::{RenditionKind, RenditionPlan, TrackSet};
use super::stills::{KeyframeStills, thumbnail_caps};
use crate::package::isobmff::{InitInfo, aac_track_info, avc_track_info};

/// Elements every pipeline uses whatever the backend.
pub const FIXED_ELEMENTS: &[&str] = &[
    "appsrc",
    "appsink",
    "h264parse",
    "aacparse",
    "tee",
    "queue",
    "videoconvert",
    "capsfilter",
    "cmafmux",
    "jpegenc",
    "videoscale",
];

/// Raw frames queued per rung before the tee waits.
const RAW_QUEUE_TIME: Duration = Duration::from_secs(2);
/// Source bytes appsrc may hold before it reports that it is falling behind.
const APPSRC_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What a pipeline reports, tagged with the session that produced it.
#[derive(Debug)]
pub struct PipelineOutput {
    pub generation: u64,
    pub event: PipelineEvent,
}

/// One report from a running pipeline.
#[derive(Debug)]
pub enum PipelineEvent {
    /// The format a rendition's muxer was given, from its caps: known
    /// before the muxer writes its header with the first fragment, so the
    /// master playlist can list the rendition as soon as it starts.
    Format {
        rendition: usize,
        info: InitInfo,
        /// Frames per second, when the caps say (0/1 means unknown).
        frame_rate: Option<f64>,
    },
    /// A CMAF header (`ftyp` + `moov`) for a rendition.
    Init { rendition: usize, data: Bytes },
    /// A complete CMAF fragment (`moof` + `mdat`), one segment.
    Fragment {
        rendition: usize,
        data: Bytes,
        /// Presentation time of the fragment's start on the session clock.
        pts: Option<Duration>,
        duration: Duration,
    },
    /// A JPEG of the current picture.
    Thumbnail(Bytes),
    /// Every sink has received end-of-stream.
    Eos,
    /// The pipeline failed; it produces nothing more.
    Error(String),
}

/// A running pipeline for one publish session of a stream.
pub struct LivePipeline {
    pipeline: gst::Pipeline,
    video_src: Option<gst_app::AppSrc>,
    audio_src: Option<gst_app::AppSrc>,
    /// Thumbnails made from single keyframes, when nothing else decodes.
    stills: Option<KeyframeStills>,
}

/// What [`LivePipeline::start`] needs besides the renditions.
pub struct PipelineSettings<'a> {
    pub backend: &'a Backend,
    pub segment: Duration,
    pub x264_preset: &'a str,
    pub generation: u64,
    pub stream: &'a str,
    /// JPEG snapshots of the decoded picture, if wanted.
    pub thumbnails: Option<ThumbnailSettings>,
}

/// How often and how wide thumbnails are taken.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailSettings {
    pub interval: Duration,
    pub width: u32,
}

impl LivePipeline {
    /// Builds and starts the pipeline for these renditions and tracks.
    pub fn start(
        settings: &PipelineSettings<'_>,
        renditions: &[RenditionPlan],
        tracks: &TrackSet,
        output: UnboundedSender<PipelineOutput>,
    ) -> Result<Self, TranscodeError> {
        let pipeline =
            gst::Pipeline::with_name(&format!("{}-{}", settings.stream, settings.generation));
        let mut builder = Builder {
            pipeline: &pipeline,
            settings,
            output: output.clone(),
            stills: None,
        };

        let video_src = match &tracks.video {
            Some(video) => Some(builder.video(video, renditions)?),
            None => None,
        };
        let audio_src = match (
            &tracks.audio,
            position(renditions, |k| k == &RenditionKind::Audio),
        ) {
            (Some(config), Some(index)) => Some(builder.audio(config, index)?),
            _ => None,
        };

        watch_bus(&pipeline, settings.generation, output);
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| TranscodeError::Start(e.to_string()))?;
        let stills = builder.stills.take();
        Ok(Self {
            pipeline,
            video_src,
            audio_src,
            stills,
        })
    }

    /// Feeds one access unit of source video.
    pub fn push_video(&self, pts: gst::ClockTime, dts: gst::ClockTime, key: bool, data: Bytes) {
        let Some(src) = &self.video_src else { return };
        if let (true, Some(stills)) = (key, &self.stills) {
            stills.offer(pts, &data);
        }
        let mut buffer = gst::Buffer::from_slice(data);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(pts);
            b.set_dts(dts);
            if !key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        push(src, buffer);
    }

    /// Feeds one raw AAC frame.
    pub fn push_audio(&self, pts: gst::ClockTime, data: Bytes) {
        let Some(src) = &self.audio_src else { return };
        let mut buffer = gst::Buffer::from_slice(data);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(pts);
        }
        push(src, buffer);
    }

    /// Bytes of source waiting in front of the pipeline.
    pub fn backlog_bytes(&self) -> u64 {
        [&self.video_src, &self.audio_src]
            .into_iter()
            .flatten()
            .map(|s| s.current_level_bytes())
            .sum()
    }

    /// Ends the input; the muxers flush their last fragments, then the bus
    /// reports [`PipelineEvent::Eos`].
    pub fn finish(&self) {
        for src in [&self.video_src, &self.audio_src].into_iter().flatten() {
            let _ = src.end_of_stream();
        }
    }

    /// Stops the pipeline and frees it. Blocks briefly: call it off the
    /// async executor.
    pub fn stop(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn push(src: &gst_app::AppSrc, buffer: gst::Buffer) {
    if let Err(flow) = src.push_buffer(buffer) {
        tracing::debug!(?flow, "appsrc refused a buffer");
    }
}

fn position(renditions: &[RenditionPlan], f: impl Fn(&RenditionKind) -> bool) -> Option<usize> {
    renditions.iter().position(|r| f(&r.kind))
}

struct Builder<'a> {
    pipeline: &'a gst::Pipeline,
    settings: &'a PipelineSettings<'a>,
    output: UnboundedSender<PipelineOutput>,
    stills: Option<KeyframeStills>,
}

pub(super) fn make(factory: &str) -> Result<gst::Element, TranscodeError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| TranscodeError::MissingElement(factory.to_string()))
}

pub(super) fn link_chain(elements: &[gst::Element]) -> Result<(), TranscodeError> {
    gst::Element::link_many(elements.iter()).map_err(|e| {
        let names: Vec<_> = elements.iter().map(|e| e.name().to_string()).collect();
        TranscodeError::Link(format!("{} ({e})", names.join(" ! ")))
    })
}

/// Caps of the source's H.264 as RTMP carries it: `avcC`-framed access
/// units with the decoder configuration as `codec_data`.
pub(super) fn avc_caps(video: &crate::ingest::avc::AvcConfig) -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("stream-format", "avc")
        .field("alignment", "au")
        .field("codec_data", gst::Buffer::from_slice(video.record.clone()))
        .build()
}

/// A capsfilter that fixes raw video to I420.
pub(super) fn i420_filter() -> Result<gst::Element, TranscodeError> {
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .build(),
    );
    Ok(filter)
}

fn queue(max_time: Option<Duration>) -> Result<gst::Element, TranscodeError> {
    let q = make("queue")?;
    if let Some(max) = max_time {
        q.set_property("max-size-buffers", 0u32);
        q.set_property("max-size-bytes", 0u32);
        q.set_property("max-size-time", max.as_nanos() as u64);
    }
    Ok(q)
}

impl Builder<'_> {
    fn add(&self, elements: &[gst::Element]) -> Result<(), TranscodeError> {
        self.pipeline
            .add_many(elements.iter())
            .map_err(|e| TranscodeError::Link(e.to_string()))
    }

    fn appsrc(&self, caps: gst::Caps) -> gst_app::AppSrc {
        gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            .do_timestamp(false)
            .max_bytes(APPSRC_MAX_BYTES)
            .build()
    }

    /// Adds `cmafmux ! appsink` for rendition `index`; returns the muxer.
    fn mux_sink(&self, index: usize) -> Result<gst::Element, TranscodeError> {
        let mux = make("cmafmux")?;
        mux.set_property("fragment-duration", self.settings.segment.as_nanos() as u64);
        // Keyframes come from our own grid; the muxer asking encoders for them
        // as well makes GstVideoEncoder throttle the grid requests.
        mux.set_property("send-force-keyunit", false);
        let sink = gst_app::AppSink::builder()
            .buffer_list(true)
            .sync(false)
            .build();
        sink.set_property("async", false);
        sink.set_callbacks(fragment_callbacks(
            index,
            self.settings.generation,
            self.output.clone(),
        ));
        report_format(&mux, index, self.settings.generation, self.output.clone());
        let sink: gst::Element = sink.upcast();
        self.add(&[mux.clone(), sink.clone()])?;
        link_chain(&[mux.clone(), sink])?;
        Ok(mux)
    }

    fn video(
        &mut self,
        video: &crate::ingest::avc::AvcConfig,
        renditions: &[RenditionPlan],
    ) -> Result<gst_app::AppSrc, TranscodeError> {
        let src = self.appsrc(avc_caps(video));
        let parse = make("h264parse")?;
        let tee = make("tee")?;
        let src_el: gst::Element = src.clone().upcast();
        self.add(&[src_el.clone(), parse.clone(), tee.clone()])?;
        link_chain(&[src_el, parse, tee.clone()])?;

        if let Some(index) = position(renditions, |k| k == &RenditionKind::Passthrough) {
            // No queue: the source's own thread muxes the passthrough (the
            // decode branch has its queue), one thread hand-off fewer for
            // every frame, which is most of what a passthrough costs.
            let mux = self.mux_sink(index)?;
            link_chain(&[tee.clone(), mux])?;
        }

        let rungs = largest_first(renditions);
        let thumbnails = self.settings.thumbnails;
        let backend = self.settings.backend;
        if rungs.is_empty() {
            // Nothing else wants pictures: thumbnails decode single keyframes
            // on their own, and the pipeline has no decoder at all.
            self.stills = thumbnails.map(|settings| {
                KeyframeStills::new(
                    video,
                    &backend.decode,
                    settings,
                    self.settings.generation,
                    self.settings.stream,
                    self.output.clone(),
                )
            });
            return Ok(src);
        }

        let mut decode = vec![queue(Some(RAW_QUEUE_TIME))?];
        decode.extend(build_chain(&backend.decode, None)?);
        decode.push(make("videoconvert")?);
        let i420 = i420_filter()?;
        decode.push(i420.clone());
        let raw_tee = make("tee")?;
        decode.push(raw_tee.clone());
        self.add(&decode)?;
        let mut chain = vec![tee];
        chain.extend(decode);
        link_chain(&chain)?;
        force_keyframes_on_grid(&i420, self.settings.segment);
        if let Some(thumbnails) = thumbnails {
            self.thumbnail_branch(&raw_tee, video, thumbnails)?;
        }

        let mut inputs = RungInputs {
            decoded: raw_tee,
            larger: None,
        };
        for (position, &(index, width, height, video_kbps)) in rungs.iter().enumerate() {
            let values = RungValues {
                width,
                height,
                bitrate_kbps: video_kbps,
                keyint_max_frames: keyint_max_frames(self.settings.segment),
                x264_preset: self.settings.x264_preset.to_string(),
            };
            let mut branch = vec![queue(Some(RAW_QUEUE_TIME))?];
            branch.extend(build_chain(&backend.scale, Some(&values))?);
            let scaled = if backend.cascade_scaling && position + 1 < rungs.len() {
                let tee = make("tee")?;
                branch.push(tee.clone());
                Some(tee)
            } else {
                None
            };
            branch.extend(build_chain(&backend.encode, Some(&values))?);
            branch.push(make("h264parse")?);
            self.add(&branch)?;
            let mux = self.mux_sink(index)?;
            let mut chain = vec![inputs.for_rung(width, height).clone()];
            chain.extend(branch);
            chain.push(mux);
            link_chain(&chain)?;
            if let Some(tee) = scaled {
                inputs.larger = Some((tee, width, height));
            }
        }
        Ok(src)
    }

    /// Adds `queue ! videoscale ! jpegenc ! appsink` on the decoded frames.
    /// The queue drops frames rather than wait, and only one frame per
    /// interval gets past its gate, so thumbnails never slow the ladder.
    fn thumbnail_branch(
        &self,
        raw_tee: &gst::Element,
        video: &crate::ingest::avc::AvcConfig,
        settings: ThumbnailSettings,
    ) -> Result<(), TranscodeError> {
        let gate = queue(None)?;
        gate.set_property("max-size-buffers", 1u32);
        gate.set_property_from_str("leaky", "downstream");
        let scale = make("videoscale")?;
        let size = make("capsfilter")?;
        size.set_property("caps", thumbnail_caps(video, settings.width));
        let jpeg = make("jpegenc")?;
        let sink = gst_app::AppSink::builder().sync(false).build();
        sink.set_property("async", false);
        sink.set_callbacks(thumbnail_callbacks(
            self.settings.generation,
            self.output.clone(),
        ));
        let sink: gst::Element = sink.upcast();
        let chain = [gate.clone(), scale, size, jpeg, sink];
        self.add(&chain)?;
        let mut linked = vec![raw_tee.clone()];
        linked.extend(chain);
        link_chain(&linked)?;
        pass_one_frame_per(&gate, settings.interval);
        Ok(())
    }

    fn audio(&mut self, config: &Bytes, index: usize) -> Result<gst_app::AppSrc, TranscodeError> {
        let caps = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("codec_data", gst::Buffer::from_slice(config.clone()))
            .build();
        let src = self.appsrc(caps);
        let parse = make("aacparse")?;
        let src_el: gst::Element = src.clone().upcast();
        self.add(&[src_el.clone(), parse.clone()])?;
        let mux = self.mux_sink(index)?;
        link_chain(&[src_el, parse, mux])?;
        Ok(src)
    }
}

/// Where each rung's scaler takes its pictures from.
struct RungInputs {
    decoded: gst::Element,
    /// With cascade scaling: the previous (larger) rung's scaled picture.
    larger: Option<(gst::Element, u32, u32)>,
}

impl RungInputs {
    /// The larger rung's picture when it covers `width` x `height`, else the
    /// decoded source.
    fn for_rung(&self, width: u32, height: u32) -> &gst::Element {
        match &self.larger {
            Some((tee, w, h)) if *w >= width && *h >= height => tee,
            _ => &self.decoded,
        }
    }
}

/// The transcoded rungs as (rendition index, width, height, kbit/s), the
/// largest picture first, so that each can be scaled from the one before.
fn largest_first(renditions: &[RenditionPlan]) -> Vec<(usize, u32, u32, u32)> {
    let mut sized: Vec<_> = renditions
        .iter()
        .enumerate()
        .filter_map(|(index, rendition)| match rendition.kind {
            RenditionKind::Transcoded {
                width,
                height,
                video_kbps,
            } => Some((index, width, height, video_kbps)),
            _ => None,
        })
        .collect();
    sized.sort_by_key(|&(_, width, height, _)| {
        std::cmp::Reverse(u64::from(width) * u64::from(height))
    });
    sized
}

/// The longest keyframe interval an encoder may choose on its own: two
/// segments at 60 fps. Segment boundaries are forced separately.
pub(crate) fn keyint_max_frames(segment: Duration) -> u32 {
    ((segment.as_secs_f64() * 120.0).ceil() as u32).max(1)
}

/// Sends a force-key-unit event ahead of the first frame at or after each
/// segment boundary, so every encoder downstream starts a GOP there.
fn force_keyframes_on_grid(element: &gst::Element, segment: Duration) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let segment = gst::ClockTime::from_nseconds(segment.as_nanos() as u64);
    let next: Arc<Mutex<Option<gst::ClockTime>>> = Arc::new(Mutex::new(None));
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let due = {
            let Ok(mut next) = next.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            let boundary = next.get_or_insert(pts);
            if pts >= *boundary {
                while *boundary <= pts {
                    *boundary += segment;
                }
                true
            } else {
                false
            }
        };
        if due {
            // No running time: the request applies to the very next frame,
            // which is this one. (With a running time, GstVideoEncoder
            // compares it against x264enc's offset output times and drops
            // every request after the first.)
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            let sent = pad.push_event(event);
            tracing::debug!(pts = %pts, sent, "forced a keyframe on the segment grid");
        }
        gst::PadProbeReturn::Ok
    });
}

/// Lets the first frame through, then one frame per `interval`. The gate
/// sits after the leaky queue: dropping on the queue's sink pad makes
/// GStreamer 1.22 unref a null buffer.
fn pass_one_frame_per(queue: &gst::Element, interval: Duration) {
    let Some(pad) = queue.static_pad("src") else {
        return;
    };
    let interval = gst::ClockTime::from_nseconds(interval.as_nanos() as u64);
    let next: Mutex<Option<gst::ClockTime>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Drop;
        };
        let Ok(mut next) = next.lock() else {
            return gst::PadProbeReturn::Drop;
        };
        match *next {
            Some(due) if pts < due => gst::PadProbeReturn::Drop,
            _ => {
                *next = Some(next_due(*next, pts, interval));
                gst::PadProbeReturn::Ok
            }
        }
    });
}

/// When the next thumbnail is due after a frame at `pts` was let through:
/// one interval after the previous due time, so that frames arriving late
/// (keyframes every 2 s against thumbnails every 5 s) keep the average
/// interval; from `pts` again when more than an interval late.
pub(super) fn next_due(
    due: Option<gst::ClockTime>,
    pts: gst::ClockTime,
    interval: gst::ClockTime,
) -> gst::ClockTime {
    match due {
        Some(due) if pts < due + interval => due + interval,
        _ => pts + interval,
    }
}

/// Reports the caps that reach the muxer's sink pads (`cmafmux` has one,
/// always there; muxers with request pads get theirs when linked) as
/// [`PipelineEvent::Format`].
fn report_format(
    mux: &gst::Element,
    rendition: usize,
    generation: u64,
    output: UnboundedSender<PipelineOutput>,
) {
    let watch = move |pad: &gst::Pad| {
        let output = output.clone();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, probe| {
            if let Some(gst::EventView::Caps(caps)) = probe.event().map(|e| e.view())
                && let Some(info) = track_info(caps.caps())
            {
                let frame_rate = caps_frame_rate(caps.caps());
                let event = PipelineEvent::Format {
                    rendition,
                    info,
                    frame_rate,
                };
                let _ = output.send(PipelineOutput { generation, event });
            }
            gst::PadProbeReturn::Ok
        });
    };
    for pad in mux.sink_pads() {
        watch(&pad);
    }
    mux.connect_pad_added(move |_, pad| {
        if pad.direction() == gst::PadDirection::Sink {
            watch(pad);
        }
    });
}

/// The frame rate of video caps, if they carry a known one.
fn caps_frame_rate(caps: &gst::CapsRef) -> Option<f64> {
    let rate = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    (rate.numer() > 0 && rate.denom() > 0)
        .then(|| f64::from(rate.numer()) / f64::from(rate.denom()))
}

/// Codec, picture size and channels from H.264 or AAC caps that carry their
/// decoder configuration; none for anything else.
fn track_info(caps: &gst::CapsRef) -> Option<InitInfo> {
    let s = caps.structure(0)?;
    let config = s.get::<gst::Buffer>("codec_data").ok()?;
    let config = config.map_readable().ok()?;
    match s.name().as_str() {
        "video/x-h264" => {
            let width = u32::try_from(s.get::<i32>("width").ok()?).ok()?;
            let height = u32::try_from(s.get::<i32>("height").ok()?).ok()?;
            avc_track_info(config.as_slice(), width, height).ok()
        }
        "audio/mpeg" => {
            let rate = s
                .get::<i32>("rate")
                .ok()
                .and_then(|r| u32::try_from(r).ok());
            let channels = s
                .get::<i32>("channels")
                .ok()
                .and_then(|c| u16::try_from(c).ok());
            aac_track_info(config.as_slice(), rate.unwrap_or(0), channels.unwrap_or(0)).ok()
        }
        _ => None,
    }
}

fn thumbnail_callbacks(
    generation: u64,
    output: UnboundedSender<PipelineOutput>,
) -> gst_app::AppSinkCallbacks {
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            if let Some(buffer) = sample.buffer() {
                let event = PipelineEvent::Thumbnail(copy_out(std::iter::once(buffer)));
                output
                    .send(PipelineOutput { generation, event })
                    .map_err(|_| gst::FlowError::Flushing)?;
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// Appsink callbacks that turn each CMAF buffer list into pipeline events.
fn fragment_callbacks(
    rendition: usize,
    generation: u64,
    output: UnboundedSender<PipelineOutput>,
) -> gst_app::AppSinkCallbacks {
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let send = |event| {
                output
                    .send(PipelineOutput { generation, event })
                    .map_err(|_| gst::FlowError::Flushing)
            };
            let Some(list) = sample.buffer_list() else {
                if let Some(buffer) = sample.buffer() {
                    let data = copy_out(std::iter::once(buffer));
                    send(PipelineEvent::Init { rendition, data })?;
                }
                return Ok(gst::FlowSuccess::Ok);
            };
            let buffers: Vec<&gst::BufferRef> = list.iter().collect();
            let Some(first) = buffers.first() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let mut media = &buffers[..];
            if first
                .flags()
                .contains(gst::BufferFlags::DISCONT | gst::BufferFlags::HEADER)
            {
                let data = copy_out(std::iter::once(*first));
                send(PipelineEvent::Init { rendition, data })?;
                media = &buffers[1..];
            }
            let Some(head) = media.first() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let duration = head.duration().map_or(Duration::ZERO, Duration::from);
            let pts = sample
                .segment()
                .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                .zip(head.pts())
                .and_then(|(segment, pts)| segment.to_running_time(pts))
                .map(Duration::from);
            let data = copy_out(media.iter().copied());
            send(PipelineEvent::Fragment {
                rendition,
                data,
                pts,
                duration,
            })?;
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

pub(super) fn copy_out<'a>(buffers: impl Iterator<Item = &'a gst::BufferRef>) -> Bytes {
    let mut out = Vec::new();
    for buffer in buffers {
        if let Ok(map) = buffer.map_readable() {
            out.extend_from_slice(map.as_slice());
        }
    }
    Bytes::from(out)
}

/// Forwards end-of-stream and errors from the bus, on the posting thread.
fn watch_bus(pipeline: &gst::Pipeline, generation: u64, output: UnboundedSender<PipelineOutput>) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(move |_, msg| {
        let event = match msg.view() {
            gst::MessageView::Eos(_) => Some(PipelineEvent::Eos),
            gst::MessageView::Error(err) => {
                let source = msg.src().map(|s| s.path_string().to_string());
                Some(PipelineEvent::Error(format!(
                    "{} (from {}; {})",
                    err.error(),
                    source.unwrap_or_default(),
                    err.debug().unwrap_or_default()
                )))
            }
            gst::MessageView::Warning(w) => {
                tracing::debug!(warning = %w.error(), "pipeline warning");
                None
            }
            _ => None,
        };
        if let Some(event) = event {
            let _ = output.send(PipelineOutput { generation, event });
        }
        gst::BusSyncReply::Drop
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(name: &str, width: u32, height: u32, video_kbps: u32) -> RenditionPlan {
        RenditionPlan {
            name: name.into(),
            kind: RenditionKind::Transcoded {
                width,
                height,
                video_kbps,
            },
        }
    }

    #[test]
    fn rungs_are_scaled_largest_first_whatever_the_config_order() {
        let plans = [
            rung("360p", 640, 360, 800),
            rung("720p", 1280, 720, 3000),
            RenditionPlan {
                name: "source".into(),
                kind: RenditionKind::Passthrough,
            },
            rung("480p", 854, 480, 1400),
        ];
        assert_eq!(
            largest_first(&plans),
            vec![
                (1, 1280, 720, 3000),
                (3, 854, 480, 1400),
                (0, 640, 360, 800)
            ]
        );
    }

    #[test]
    fn a_rung_not_covered_by_the_larger_one_scales_from_the_source() {
        gst::init().expect("GStreamer initialises");
        let decoded = make("tee").expect("tee");
        let rung_tee = make("tee").expect("tee");
        let inputs = RungInputs {
            decoded: decoded.clone(),
            larger: Some((rung_tee.clone(), 854, 480)),
        };
        assert_eq!(inputs.for_rung(640, 360), &rung_tee);
        assert_eq!(inputs.for_rung(854, 480), &rung_tee);
        // Wider than the larger rung (a narrower aspect rung above it).
        assert_eq!(inputs.for_rung(900, 360), &decoded);
        assert_eq!(inputs.for_rung(640, 500), &decoded);
    }

    /// The frames a gate lets through, from frame times in seconds.
    fn gate(times: &[u64], interval: u64) -> Vec<u64> {
        let interval = gst::ClockTime::from_seconds(interval);
        let mut due = None;
        let mut passed = Vec::new();
        for &t in times {
            let pts = gst::ClockTime::from_seconds(t);
            if due.is_some_and(|due| pts < due) {
                continue;
            }
            due = Some(next_due(due, pts, interval));
            passed.push(t);
        }
        passed
    }

    #[test]
    fn thumbnails_keep_their_interval_on_sparse_keyframes() {
        // Keyframes every 2 s, thumbnails every 5 s: 0, 6, 10, 16, 20.
        let keyframes: Vec<u64> = (0..=20).step_by(2).collect();
        assert_eq!(gate(&keyframes, 5), vec![0, 6, 10, 16, 20]);
        // Every second: exactly every 5 s.
        let frames: Vec<u64> = (0..=20).collect();
        assert_eq!(gate(&frames, 5), vec![0, 5, 10, 15, 20]);
        // After a gap longer than the interval the count restarts.
        assert_eq!(gate(&[0, 30, 32, 35, 36], 5), vec![0, 30, 35]);
    }
}
