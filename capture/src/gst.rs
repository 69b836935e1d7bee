//! The GStreamer video source: `videotestsrc`, `v4l2src` or any file through `uridecodebin`,
//! converted to RGBx and delivered by an `appsink` callback into a [`VideoProducer`].
//!
//! The appsink callback runs on GStreamer's streaming thread; it copies the picture (dropping the
//! row padding) into the ring's preallocated slot and returns, so the pipeline never waits on the
//! consumer. Start-up waits on the bus with a timeout: a missing file, a missing device or a
//! missing plugin is one clear error, never a hang.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::video::{video_ring, PixelFormat, VideoConsumer, VideoFrame, VideoProducer};
use crate::CaptureError;

/// Where the pictures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSourceSpec {
    /// GStreamer's test pattern; `frames` = None runs forever. `live` paces at `fps`.
    TestPattern {
        width: u32,
        height: u32,
        fps: u32,
        frames: Option<u32>,
        live: bool,
    },
    /// A V4L2 camera such as `/dev/video0`.
    V4l2 { device: PathBuf },
    /// Any file GStreamer can decode (its video stream).
    File { path: PathBuf },
}

impl VideoSourceSpec {
    fn describe(&self) -> String {
        match self {
            VideoSourceSpec::TestPattern { width, height, .. } => {
                format!("videotestsrc {width}x{height}")
            }
            VideoSourceSpec::V4l2 { device } => format!("v4l2src {}", device.display()),
            VideoSourceSpec::File { path } => format!("file {}", path.display()),
        }
    }
}

pub(crate) fn init() -> Result<(), CaptureError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(CaptureError::Gstreamer)
}

pub(crate) fn make(factory: &str) -> Result<gst::Element, CaptureError> {
    gst::ElementFactory::make(factory).build().map_err(|e| {
        CaptureError::Gstreamer(format!(
            "element `{factory}` unavailable (plugin missing?): {e}"
        ))
    })
}

/// A running video pipeline; dropping it stops the pipeline.
pub struct RunningVideo {
    pipeline: gst::Pipeline,
    desc: String,
}

impl RunningVideo {
    /// Waits until the stream ends (EOS), an error arrives, or `timeout` passes. Returns true at
    /// EOS, false on timeout.
    pub fn wait_for_end(&self, timeout: Duration) -> Result<bool, CaptureError> {
        let bus = self.bus()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            ) else {
                return Ok(false);
            };
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(true),
                gst::MessageView::Error(e) => return Err(bus_error(&self.desc, e)),
                _ => {}
            }
        }
    }

    fn bus(&self) -> Result<gst::Bus, CaptureError> {
        self.pipeline
            .bus()
            .ok_or_else(|| CaptureError::Gstreamer("pipeline has no bus".into()))
    }
}

impl Drop for RunningVideo {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub(crate) fn bus_error(desc: &str, e: &gst::message::Error) -> CaptureError {
    let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
    CaptureError::Video {
        source_desc: desc.to_string(),
        reason: format!("{}{debug}", e.error()),
    }
}

/// Builds and starts the pipeline for `spec`, returning it and the consuming end of its video
/// ring. Fails within `start_timeout` if the pipeline cannot start.
pub fn start_video(
    spec: &VideoSourceSpec,
    start_timeout: Duration,
) -> Result<(RunningVideo, VideoConsumer), CaptureError> {
    init()?;
    let desc = spec.describe();
    let pipeline = gst::Pipeline::new();
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let mut caps = gst::Caps::builder("video/x-raw").field("format", "RGBx");
    let mut sync = true;
    let head: gst::Element = match spec {
        VideoSourceSpec::TestPattern {
            width,
            height,
            fps,
            frames,
            live,
        } => {
            let src = make("videotestsrc")?;
            src.set_property("is-live", *live);
            if let Some(n) = frames {
                src.set_property("num-buffers", *n as i32);
            }
            caps = caps
                .field("width", *width as i32)
                .field("height", *height as i32)
                .field("framerate", gst::Fraction::new(*fps as i32, 1));
            sync = *live;
            src
        }
        VideoSourceSpec::V4l2 { device } => {
            let src = make("v4l2src")?;
            src.set_property("device", device.to_string_lossy().as_ref());
            src
        }
        VideoSourceSpec::File { path } => {
            let src = make("uridecodebin")?;
            src.set_property("uri", file_uri(path)?);
            src
        }
    };
    let caps = caps.build();
    let (producer, consumer) = video_ring(0);
    let sink = app_sink(&caps, sync, producer);
    pipeline
        .add_many([&head, &convert, &scale, sink.upcast_ref()])
        .map_err(|e| CaptureError::Gstreamer(e.to_string()))?;
    gst::Element::link_many([&convert, &scale, sink.upcast_ref()])
        .map_err(|e| CaptureError::Gstreamer(format!("linking {desc}: {e}")))?;
    if matches!(spec, VideoSourceSpec::File { .. }) {
        // uridecodebin's pads appear once it has typefound the file; link the video one.
        let convert_weak = convert.downgrade();
        head.connect_pad_added(move |_, pad| {
            let Some(convert) = convert_weak.upgrade() else {
                return;
            };
            let is_video = pad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if let Some(sinkpad) = convert.static_pad("sink") {
                if is_video && !sinkpad.is_linked() {
                    if let Err(e) = pad.link(&sinkpad) {
                        tracing::warn!(error = ?e, "cannot link decoded video pad");
                    }
                }
            }
        });
    } else {
        head.link(&convert)
            .map_err(|e| CaptureError::Gstreamer(format!("linking {desc}: {e}")))?;
    }
    let running = RunningVideo {
        pipeline: pipeline.clone(),
        desc: desc.clone(),
    };
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| pending_error(&running, &desc))?;
    wait_playing(&running, start_timeout)?;
    Ok((running, consumer))
}

/// After a failed state change the bus usually holds the reason; fetch it without waiting long.
fn pending_error(running: &RunningVideo, desc: &str) -> CaptureError {
    if let Ok(bus) = running.bus() {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(500),
            &[gst::MessageType::Error],
        ) {
            if let gst::MessageView::Error(e) = msg.view() {
                return bus_error(desc, e);
            }
        }
    }
    CaptureError::Video {
        source_desc: desc.to_string(),
        reason: "pipeline refused to start".into(),
    }
}

fn wait_playing(running: &RunningVideo, timeout: Duration) -> Result<(), CaptureError> {
    let bus = running.bus()?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CaptureError::Video {
                source_desc: running.desc.clone(),
                reason: format!("did not start within {timeout:?}"),
            });
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[
                gst::MessageType::Error,
                gst::MessageType::StateChanged,
                gst::MessageType::Eos,
            ],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => return Err(bus_error(&running.desc, e)),
            // A very short stream may finish before we look; its frames are already in the ring.
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::StateChanged(s) => {
                let from_pipeline = msg
                    .src()
                    .is_some_and(|src| src == running.pipeline.upcast_ref::<gst::Object>());
                if from_pipeline && s.current() == gst::State::Playing {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

fn file_uri(path: &Path) -> Result<String, CaptureError> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| CaptureError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .join(path)
    };
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| CaptureError::File {
            path: path.to_path_buf(),
            reason: format!("cannot form a URI: {e}"),
        })
}

pub(crate) fn app_sink(
    caps: &gst::Caps,
    sync: bool,
    mut producer: VideoProducer,
) -> gst_app::AppSink {
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
            let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
            let info =
                gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                .map_err(|_| gst::FlowError::Error)?;
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
            let pts = buffer
                .pts()
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or_default();
            producer.publish_with(|f: &mut VideoFrame| {
                copy_packed(f, data, stride, info.width(), info.height(), pts);
            });
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    gst_app::AppSink::builder()
        .caps(caps)
        .sync(sync)
        .max_buffers(2)
        .drop(false)
        .callbacks(callbacks)
        .build()
}

/// RGBx rows without padding; the slot's buffer keeps its capacity, so same-sized frames reuse it.
fn copy_packed(
    f: &mut VideoFrame,
    data: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    pts: Duration,
) {
    let row = width as usize * 4;
    f.width = width;
    f.height = height;
    f.format = PixelFormat::Rgbx;
    f.pts = pts;
    f.data.clear();
    for y in 0..height as usize {
        let start = y * stride;
        if let Some(r) = data.get(start..start + row) {
            f.data.extend_from_slice(r);
        }
    }
}
