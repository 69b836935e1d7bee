//! VP8 and H.264 through GStreamer: a decoder that turns complete encoded frames (from the WebRTC
//! transport's assemblers) into RGBx pictures in a latest-frame ring, and an encoder (the sending
//! side of tests and the CLI) whose target bitrate can follow the receiver's REMB.
//!
//! Both are `appsrc ! … ! appsink` pipelines, the same for either codec except for the elements
//! in the middle ([`Codec`]): the caller pushes and returns at once; decoding runs on
//! GStreamer's streaming thread, never on the caller's (an async runtime's worker, for the
//! decoder). The decoder's queue is bounded: a decoder that falls [`MAX_QUEUED_FRAMES`] behind
//! refuses the frame, and the caller — whose reference chain is then broken — waits for a key
//! frame. That is the loss-resilient choice for a model: a late picture is worth less than the
//! last good one, which the ring keeps.
//!
//! | codec | decoder | encoder (real-time settings) |
//! |---|---|---|
//! | VP8 | `vp8dec` (plugins-good) | `vp8enc` CBR, deadline 1, no look-ahead |
//! | H.264 | `avdec_h264` (gstreamer1.0-libav), Annex-B access units in | `x264enc` zerolatency/ultrafast (gstreamer1.0-plugins-ugly), Constrained Baseline byte stream |

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

use crate::gst::{app_sink, bus_error, init, make};
use crate::video::VideoProducer;
use crate::CaptureError;

/// Encoded frames the decoder may hold before it refuses more (about 160 ms at 30 fps).
pub const MAX_QUEUED_FRAMES: u64 = 5;

/// The bound while a decoder starts: libav sets up its threads on the first frame, which took
/// longer than five frames' worth under load (the H.264 decode test saw the sixth refused, and a
/// refusal costs a PLI round trip and a key frame). A decoder that has not started is not
/// behind, so the queue may hold up to a second of a 30 fps stream for [`STARTUP_GRACE`].
pub const STARTUP_QUEUED_FRAMES: u64 = 30;
/// How long after [`Decoder::start`] the larger bound applies.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// The codecs the decoder and encoder handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    Vp8,
    /// H.264 as an Annex-B byte stream, one access unit per buffer.
    H264,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::H264 => "H.264",
        }
    }

    /// The encoded caps, as the decoder takes them and the encoder gives them.
    fn caps(self) -> gst::Caps {
        match self {
            Codec::Vp8 => gst::Caps::builder("video/x-vp8").build(),
            Codec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        }
    }

    /// The Debian package an element comes from, for the error when it is missing.
    fn package(factory: &str) -> &'static str {
        match factory {
            "avdec_h264" => "gstreamer1.0-libav",
            "x264enc" => "gstreamer1.0-plugins-ugly",
            "vp8dec" | "vp8enc" => "gstreamer1.0-plugins-good",
            _ => "gstreamer1.0-plugins-base",
        }
    }

    /// The elements between `appsrc` and `videoconvert` that turn frames into pictures.
    fn decoder_elements(self) -> Result<Vec<gst::Element>, CaptureError> {
        match self {
            Codec::Vp8 => {
                let dec = make_from(self, "vp8dec")?;
                // A frame libvpx refuses is skipped, not fatal: the caller resynchronises on a
                // key frame.
                dec.set_property("max-errors", -1i32);
                Ok(vec![dec])
            }
            Codec::H264 => {
                // No h264parse: libav reads the in-band SPS/PPS of an Annex-B byte stream itself,
                // and the frames come whole (alignment=au), so the parser would add only
                // gstreamer1.0-plugins-bad to what a machine must install. A restarted decoder
                // needs the parameter sets again: the transport puts them in front of every IDR.
                let dec = make_from(self, "avdec_h264")?;
                dec.set_property("max-errors", -1i32);
                // A picture libav had to conceal is not a picture a model should see; the last
                // good one stays in the ring instead.
                dec.set_property("output-corrupt", false);
                // Frame threads would each hold a picture back; slice threads add no latency.
                dec.set_property_from_str("thread-type", "slice");
                Ok(vec![dec])
            }
        }
    }

    /// The elements after `videoconvert` that encode (they end with the encoded caps).
    fn encoder_elements(
        self,
        fps: u32,
        bitrate_bps: u32,
    ) -> Result<(gst::Element, Vec<gst::Element>), CaptureError> {
        match self {
            Codec::Vp8 => {
                let enc = make_from(self, "vp8enc")?;
                enc.set_property("deadline", 1i64);
                enc.set_property("lag-in-frames", 0i32);
                enc.set_property_from_str("end-usage", "cbr");
                enc.set_property("target-bitrate", bitrate_bps as i32);
                enc.set_property("keyframe-max-dist", (fps * 4) as i32);
                enc.set_property("threads", 1i32);
                Ok((enc.clone(), vec![enc]))
            }
            Codec::H264 => {
                let enc = make_from(self, "x264enc")?;
                // zerolatency: no look-ahead and no B-frames, one access unit out per picture.
                enc.set_property_from_str("tune", "zerolatency");
                enc.set_property_from_str("speed-preset", "ultrafast");
                enc.set_property("key-int-max", fps * 4);
                enc.set_property("bitrate", kbps(bitrate_bps));
                enc.set_property("threads", 1u32);
                // SPS and PPS in band before every IDR, as browsers send them.
                enc.set_property("byte-stream", true);
                // What every browser decodes and the transport negotiates (42e01f).
                let filter = make_from(self, "capsfilter")?;
                let caps = gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build();
                filter.set_property("caps", &caps);
                Ok((enc.clone(), vec![enc, filter]))
            }
        }
    }
}

/// x264enc's bitrate is in kbit/s (at least 1).
fn kbps(bps: u32) -> u32 {
    (bps / 1000).max(1)
}

fn make_from(codec: Codec, factory: &str) -> Result<gst::Element, CaptureError> {
    make(factory).map_err(|e| {
        CaptureError::Gstreamer(format!(
            "{} needs `{factory}` (Debian: {}): {e}",
            codec.name(),
            Codec::package(factory)
        ))
    })
}

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

/// `appsrc ! middle… ! appsink` added, linked and playing.
fn build(
    src: &gst_app::AppSrc,
    middle: &[gst::Element],
    sink: &gst::Element,
    desc: &str,
) -> Result<gst::Pipeline, CaptureError> {
    let pipeline = gst::Pipeline::new();
    let chain: Vec<&gst::Element> = std::iter::once(src.upcast_ref())
        .chain(middle.iter())
        .chain(std::iter::once(sink))
        .collect();
    pipeline
        .add_many(chain.iter().copied())
        .map_err(|e| CaptureError::Gstreamer(e.to_string()))?;
    gst::Element::link_many(chain.iter().copied())
        .map_err(|e| CaptureError::Gstreamer(format!("linking {desc}: {e}")))?;
    set_playing(&pipeline, desc)?;
    Ok(pipeline)
}

/// `appsrc ! <codec's decoder> ! videoconvert ! appsink(RGBx)` into a [`VideoProducer`].
pub struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    desc: &'static str,
    restarts: u64,
    /// When the pipeline was (re)started: the startup bound applies for a while after.
    started: std::time::Instant,
}

impl Decoder {
    pub fn start(codec: Codec, producer: VideoProducer) -> Result<Self, CaptureError> {
        init()?;
        let desc = match codec {
            Codec::Vp8 => "vp8 decoder",
            Codec::H264 => "h264 decoder",
        };
        let src = gst_app::AppSrc::builder()
            .caps(&codec.caps())
            .format(gst::Format::Time)
            .is_live(true)
            .build();
        let mut middle = codec.decoder_elements()?;
        middle.push(make("videoconvert")?);
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGBx")
            .build();
        let sink = app_sink(&caps, false, producer);
        let pipeline = build(&src, &middle, sink.upcast_ref(), desc)?;
        Ok(Self {
            pipeline,
            src,
            desc,
            restarts: 0,
            started: std::time::Instant::now(),
        })
    }

    /// Times the pipeline was restarted after an error.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Queues one complete frame; `pts` is its capture time on the stream's clock. Never blocks.
    pub fn push(&mut self, data: &[u8], pts: Duration) -> Result<Pushed, CaptureError> {
        if let Some(err) = pipeline_error(&self.pipeline, self.desc) {
            tracing::warn!(error = %err, decoder = self.desc, "video decoder failed; restarting it");
            let _ = self.pipeline.set_state(gst::State::Null);
            set_playing(&self.pipeline, self.desc)?;
            self.restarts += 1;
            self.started = std::time::Instant::now();
            return Ok(Pushed::Restarted);
        }
        let bound = if self.started.elapsed() < STARTUP_GRACE {
            STARTUP_QUEUED_FRAMES
        } else {
            MAX_QUEUED_FRAMES
        };
        if self.src.property::<u64>("current-level-buffers") >= bound {
            return Ok(Pushed::Dropped);
        }
        push_buffer(&self.src, self.desc, data, pts, None)?;
        Ok(Pushed::Queued)
    }
}

/// Copies `data` into a buffer stamped with `pts` (and `duration`) and queues it on `src`.
fn push_buffer(
    src: &gst_app::AppSrc,
    desc: &str,
    data: &[u8],
    pts: Duration,
    duration: Option<Duration>,
) -> Result<(), CaptureError> {
    let clock = |d: Duration| gst::ClockTime::from_nseconds(d.as_nanos() as u64);
    let mut buffer = gst::Buffer::from_slice(data.to_vec());
    if let Some(b) = buffer.get_mut() {
        b.set_pts(clock(pts));
        if let Some(d) = duration {
            b.set_duration(clock(d));
        }
    }
    src.push_buffer(buffer).map_err(|e| CaptureError::Video {
        source_desc: desc.into(),
        reason: format!("push refused: {e:?}"),
    })?;
    Ok(())
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One encoded frame from [`Encoder`] (an H.264 one is an Annex-B access unit).
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    pub data: Vec<u8>,
    pub pts: Duration,
    pub key_frame: bool,
}

/// `appsrc(RGBx) ! videoconvert ! <codec's encoder> ! appsink`, real-time settings (no
/// look-ahead), pulled synchronously: a pushed picture comes back encoded (or not at all, if rate
/// control drops it).
pub struct Encoder {
    codec: Codec,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    enc: gst::Element,
    sink: gst_app::AppSink,
    desc: &'static str,
    width: u32,
    height: u32,
    fps: u32,
    pushed: u64,
}

impl Encoder {
    pub fn start(
        codec: Codec,
        width: u32,
        height: u32,
        fps: u32,
        bitrate_bps: u32,
    ) -> Result<Self, CaptureError> {
        let desc = match codec {
            Codec::Vp8 => "vp8 encoder",
            Codec::H264 => "h264 encoder",
        };
        if width == 0 || height == 0 || fps == 0 {
            return Err(CaptureError::Video {
                source_desc: desc.into(),
                reason: format!("bad picture {width}x{height} at {fps} fps"),
            });
        }
        init()?;
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
        let (enc, encoding) = codec.encoder_elements(fps, bitrate_bps)?;
        let mut middle = vec![make("videoconvert")?];
        middle.extend(encoding);
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = build(&src, &middle, sink.upcast_ref(), desc)?;
        Ok(Self {
            codec,
            pipeline,
            src,
            enc,
            sink,
            desc,
            width,
            height,
            fps,
            pushed: 0,
        })
    }

    /// Follows the receiver's estimate (REMB), in bit/s (H.264: rounded down to kbit/s).
    pub fn set_bitrate(&self, bps: u32) {
        match self.codec {
            Codec::Vp8 => self.enc.set_property("target-bitrate", bps.max(1) as i32),
            Codec::H264 => self.enc.set_property("bitrate", kbps(bps)),
        }
    }

    /// The target bitrate, bit/s.
    pub fn bitrate(&self) -> u32 {
        match self.codec {
            Codec::Vp8 => self.enc.property::<i32>("target-bitrate").max(0) as u32,
            Codec::H264 => self.enc.property::<u32>("bitrate").saturating_mul(1000),
        }
    }

    /// Encodes the next picture (tightly packed RGBx); `key` forces a key frame (a PLI arrived).
    pub fn encode(&mut self, rgbx: &[u8], key: bool) -> Result<Option<EncodedVideo>, CaptureError> {
        let want = self.width as usize * self.height as usize * 4;
        if rgbx.len() != want {
            return Err(CaptureError::Video {
                source_desc: self.desc.into(),
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
        let duration = Duration::from_nanos(1_000_000_000 / u64::from(self.fps));
        push_buffer(&self.src, self.desc, rgbx, pts, Some(duration))?;
        // Real-time settings give one output per input; rate control may drop a picture, so the
        // wait is bounded.
        let Some(sample) = self
            .sink
            .try_pull_sample(gst::ClockTime::from_mseconds(500))
        else {
            if let Some(err) = pipeline_error(&self.pipeline, self.desc) {
                return Err(err);
            }
            return Ok(None);
        };
        let Some(buf) = sample.buffer() else {
            return Ok(None);
        };
        let map = buf.map_readable().map_err(|e| CaptureError::Video {
            source_desc: self.desc.into(),
            reason: e.to_string(),
        })?;
        Ok(Some(EncodedVideo {
            data: map.as_slice().to_vec(),
            pts: buf
                .pts()
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or(pts),
            key_frame: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        }))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
