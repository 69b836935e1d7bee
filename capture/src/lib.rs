//! Capture and playback: where real time meets the rest of the pipeline.
//!
//! Owns: audio sources (cpal microphone, WAV/FLAC files) and sinks (cpal speaker, WAV writer),
//! the GStreamer video source, and resampling between device rates and the pipeline's 16 kHz mono.
//!
//! Must not touch: models, dialog state or the network. Real-time callbacks here never allocate,
//! lock or block; they touch rings and atomic counters only, and every dropped sample or frame is
//! counted.
//!
//! # Threads and ownership
//! - A source owns the producing end of a ring: the cpal input callback (real-time thread owned
//!   by the audio backend), a file-reader thread ([`file::FileSource`]), or GStreamer's streaming
//!   thread (appsink callback → [`video::VideoProducer`]).
//! - The pipeline owns the consuming end ([`ring::AudioConsumer`], [`video::VideoConsumer`]) on
//!   its own thread and resamples there ([`resample::StreamResampler`]), never in the callback.
//! - The speaker sink's cpal output callback owns the consuming end of a playback ring; whoever
//!   generates audio (TTS) owns the producer.
//! - Counters live in atomics beside each ring; [`ring::RingMonitor::publish_metrics`] copies
//!   them into the `metrics` recorder from a non-real-time thread.
//!
//! ```no_run
//! use voicerelay_capture::{ring::audio_ring, file::{FileSource, Pacing}, resample::StreamResampler};
//! use vr_core::SampleRate;
//! # fn main() -> Result<(), voicerelay_capture::CaptureError> {
//! let src = FileSource::open("speech.wav".as_ref(), Pacing::real_time())?;
//! let (producer, mut consumer) = audio_ring("mic", src.format(), 48_000)?;
//! let running = src.start(producer)?;
//! let mut rs = StreamResampler::new(consumer.format(), SampleRate::PIPELINE)?;
//! let channels = usize::from(consumer.format().channels);
//! while consumer.wait_for_data(std::time::Duration::from_secs(1)) {
//!     while let Some(chunk) = consumer.peek() {
//!         let n = chunk.samples.len() / channels;
//!         rs.push(chunk.samples, |mono16k| { /* feed ASR */ let _ = mono16k; })?;
//!         consumer.consume(n);
//!     }
//! }
//! running.stop()?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod device;
pub mod file;
pub mod gst;
pub mod video_codec;

// The rings and the resampler live in `vr_audio` (no device code); re-exported so a source and
// the ring it fills come from one place.
pub use vr_audio::{resample, ring, video};

pub use config::{CaptureConfig, FileReadMode};
pub use vr_audio::{
    audio_ring, video_ring, AudioChunk, AudioConsumer, AudioError, AudioFormat, AudioProducer,
    AudioRun, PixelFormat, RingMonitor, RingStats, VideoConsumer, VideoFrame, VideoProducer,
    VideoStats,
};

use std::path::PathBuf;

/// Everything that can go wrong in capture and playback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    #[error("no audio {direction} device found (host {host}){hint}")]
    NoDevice {
        direction: &'static str,
        host: String,
        hint: String,
    },
    #[error("audio {direction} device {name:?} not found; available: {available}")]
    DeviceNotFound {
        direction: &'static str,
        name: String,
        available: String,
    },
    #[error("audio backend: {context}: {message}")]
    Backend { context: String, message: String },
    #[error("cannot read {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("unsupported audio file {}: {reason}", path.display())]
    UnsupportedFile { path: PathBuf, reason: String },
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("gstreamer: {0}")]
    Gstreamer(String),
    #[error("video source {source_desc}: {reason}")]
    Video { source_desc: String, reason: String },
    #[error("{what} thread panicked")]
    ThreadPanicked { what: &'static str },
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
    #[error(transparent)]
    Audio(#[from] AudioError),
}
