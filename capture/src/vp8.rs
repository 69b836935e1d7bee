//! VP8 through GStreamer: a decoder that turns complete encoded frames (from the WebRTC
//! transport's assembler) into RGBx pictures in a latest-frame ring, and an encoder (the sending
//! side of tests and the CLI) whose target bitrate can follow the receiver's REMB.
//!
//! Both are `appsrc ! … ! appsink` pipelines: the caller pushes and returns at once; decoding runs
//! on GStreamer's streaming thread, never on the caller's (an async runtime's worker, for the
//! decoder). The decoder's queue is bounded: a decoder that falls [`MAX_QUEUED_FRAMES`] behind
//! refuses the frame, and the caller — whose reference chain is then broken — waits for a key
//! frame. That is the loss-resilient choice for a model: a late picture is worth less than the
//! last good one, which the ring keeps.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

use crate::gst::{app_sink, bus_error, init, make};
use crate::video::VideoProducer;
use crate::CaptureError;

/// Encoded frames the decoder may hold before it refuses more (about 160 ms at 30 fps).
pub const MAX_QUEUED_FRAMES: u64 = 5;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for decoding.
    Queued,
    /// The decoder is behind: the frame was dropped (a reference is now missing).
    Dropped,
    /// The decoder had failed and was restarted; the frame was dropped. It needs a key frame.
    Restarted,
}

fn pipeline_error(pipeline: &gst::Pipeline, desc: &str) -> Option<CaptureError> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(bus_error(desc, e)),
        _ => None,
    }
}

fn set_playing(pipeline: &gst::Pipeline, desc: &str) -> Result<(), CaptureError> {
    pipeline
        .set_state(gst::State::Playing)
        .map(|_| ())
        .map_err(|_| {
            pipeline_error(pipeline, desc).unwrap_or_else(|| CaptureError::Video {
                source_desc: desc.to_string(),
                reason: "pipeline refused to start".into(),
            })
        })
}

fn link(elements: &[&gst::Element], desc: &str) -> Result<(), CaptureError> {
    gst::Element::link_many(elements.iter().copied())
        .map_err(|e| CaptureError::Gstreamer(format!("linking {desc}: {e}")))
}

/// `appsrc ! vp8dec ! videoconvert ! appsink(RGBx)` into a [`VideoProducer`].
pub struct Vp8Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    restarts: u64,
}

const DECODER: &str = "vp8 decoder";

impl Vp8Decoder {
    pub fn start(producer: VideoProducer) -> Result<Self, CaptureError> {
        init()?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(&gst::Caps::builder("video/x-vp8").build())
            .format(gst::Format::Time)
            .is_live(true)
            .build();
        let dec = make("vp8dec")?;
        // A frame libvpx refuses is skipped, not fatal: the caller resynchronises on a key frame.
        dec.set_property("max-errors", -1i32);
        let convert = make("videoconvert")?;
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGBx")
            .build();
        let sink = app_sink(&caps, false, producer);
        pipeline
            .add_many([src.upcast_ref(), &dec, &convert, sink.upcast_ref()])
            .map_err(|e| CaptureError::Gstreamer(e.to_string()))?;
        link(
            &[src.upcast_ref(), &dec, &convert, sink.upcast_ref()],
            DECODER,
        )?;
        set_playing(&pipeline, DECODER)?;
        Ok(Self {
            pipeline,
            src,
            restarts: 0,
        })
    }

    /// Times the pipeline was restarted after an error.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Queues one complete frame; `pts` is its capture time on the stream's clock. Never blocks.
    pub fn push(&mut self, data: &[u8], pts: Duration) -> Result<Pushed, CaptureError> {
        if let Some(err) = pipeline_error(&self.pipeline, DECODER) {
            tracing::warn!(error = %err, "VP8 decoder failed; restarting it");
            let _ = self.pipeline.set_state(gst::State::Null);
            set_playing(&self.pipeline, DECODER)?;
            self.restarts += 1;
            return Ok(Pushed::Restarted);
        }
        if self.src.property::<u64>("current-level-buffers") >= MAX_QUEUED_FRAMES {
            return Ok(Pushed::Dropped);
        }
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
        }
        self.src
            .push_buffer(buffer)
            .map_err(|e| CaptureError::Video {
                source_desc: DECODER.into(),
                reason: format!("push refused: {e:?}"),
            })?;
        Ok(Pushed::Queued)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One encoded VP8 frame from [`Vp8Encoder`].
#[derive(Debug, Clone)]
pub struct EncodedVp8 {
    pub data: Vec<u8>,
    pub pts: Duration,
    pub key_frame: bool,
}

/// `appsrc(RGBx) ! videoconvert ! vp8enc ! appsink`, real-time settings (no look-ahead), pulled
/// synchronously: a pushed picture comes back encoded (or not at all, if rate control drops it).
pub struct Vp8Encoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    enc: gst::Element,
    sink: gst_app::AppSink,
    width: u32,
    height: u32,
    fps: u32,
    pushed: u64,
}

const ENCODER: &str = "vp8 encoder";

impl Vp8Encoder {
    pub fn start(
        width: u32,
        height: u32,
        fps: u32,
        bitrate_bps: u32,
    ) -> Result<Self, CaptureError> {
        if width == 0 || height == 0 || fps == 0 {
            return Err(CaptureError::Video {
                source_desc: ENCODER.into(),
                reason: format!("bad picture {width}x{height} at {fps} fps"),
            });
        }
        init()?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("video/x-raw")
                    .field("format", "RGBx")
                    .field("width", width as i32)
                    .field("height", height as i32)
                    .field("framerate", gst::Fraction::new(fps as i32, 1))
                    .build(),
            )
            .format(gst::Format::Time)
            .build();
        let convert = make("videoconvert")?;
        let enc = make("vp8enc")?;
        enc.set_property("deadline", 1i64);
        enc.set_property("lag-in-frames", 0i32);
        enc.set_property_from_str("end-usage", "cbr");
        enc.set_property("target-bitrate", bitrate_bps as i32);
        enc.set_property("keyframe-max-dist", (fps * 4) as i32);
        enc.set_property("threads", 1i32);
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline
            .add_many([src.upcast_ref(), &convert, &enc, sink.upcast_ref()])
            .map_err(|e| CaptureError::Gstreamer(e.to_string()))?;
        link(
            &[src.upcast_ref(), &convert, &enc, sink.upcast_ref()],
            ENCODER,
        )?;
        set_playing(&pipeline, ENCODER)?;
        Ok(Self {
            pipeline,
            src,
            enc,
            sink,
            width,
            height,
            fps,
            pushed: 0,
        })
    }

    /// Follows the receiver's estimate (REMB), in bit/s.
    pub fn set_bitrate(&self, bps: u32) {
        self.enc.set_property("target-bitrate", bps.max(1) as i32);
    }

    pub fn bitrate(&self) -> u32 {
        self.enc.property::<i32>("target-bitrate").max(0) as u32
    }

    /// Encodes the next picture (tightly packed RGBx); `key` forces a key frame (a PLI arrived).
    pub fn encode(&mut self, rgbx: &[u8], key: bool) -> Result<Option<EncodedVp8>, CaptureError> {
        let want = self.width as usize * self.height as usize * 4;
        if rgbx.len() != want {
            return Err(CaptureError::Video {
                source_desc: ENCODER.into(),
                reason: format!(
                    "picture of {} bytes, {}x{} RGBx needs {want}",
                    rgbx.len(),
                    self.width,
                    self.height
                ),
            });
        }
        let pts = Duration::from_nanos(self.pushed * 1_000_000_000 / u64::from(self.fps));
        self.pushed += 1;
        if key {
            let ev = gstreamer_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            self.src.send_event(ev);
        }
        let mut buffer = gst::Buffer::from_slice(rgbx.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
            b.set_duration(gst::ClockTime::from_nseconds(
                1_000_000_000 / u64::from(self.fps),
            ));
        }
        self.src
            .push_buffer(buffer)
            .map_err(|e| CaptureError::Video {
                source_desc: ENCODER.into(),
                reason: format!("push refused: {e:?}"),
            })?;
        // Real-time settings give one output per input; rate control may drop a picture, so the
        // wait is bounded.
        let Some(sample) = self
            .sink
            .try_pull_sample(gst::ClockTime::from_mseconds(500))
        else {
            if let Some(err) = pipeline_error(&self.pipeline, ENCODER) {
                return Err(err);
            }
            return Ok(None);
        };
        let Some(buf) = sample.buffer() else {
            return Ok(None);
        };
        let map = buf.map_readable().map_err(|e| CaptureError::Video {
            source_desc: ENCODER.into(),
            reason: e.to_string(),
        })?;
        Ok(Some(EncodedVp8 {
            data: map.as_slice().to_vec(),
            pts: buf
                .pts()
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or(pts),
            key_frame: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        }))
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
