//! The pipeline's audio plumbing, with no device, file or GStreamer code: the lock-free audio
//! ring (SPSC, timestamped by sample index), the latest-frame video ring and resampling between
//! any rate and the pipeline's 16 kHz mono.
//!
//! Split out of `capture` so that whoever only moves audio between threads (the WebRTC
//! transport, the conversation pipeline, the evals) does not link cpal or GStreamer.
//!
//! Must not touch: devices, files, models or the network. Real-time code here never allocates,
//! locks or blocks; it touches rings and atomic counters only, and every dropped sample or frame
//! is counted.
//!
//! # Threads and ownership
//! - A producer (an audio callback, a file reader, a decoder) owns [`ring::AudioProducer`] or
//!   [`video::VideoProducer`]; the consumer owns the other end on its own thread and resamples
//!   there ([`resample::StreamResampler`]), never in a callback.
//! - Counters live in atomics beside each ring; [`ring::RingMonitor::publish_metrics`] copies
//!   them into the `metrics` recorder from a non-real-time thread.

pub mod resample;
pub mod ring;
pub mod video;

pub use ring::{
    audio_ring, AudioChunk, AudioConsumer, AudioFormat, AudioProducer, AudioRun, RingMonitor,
    RingStats,
};
pub use video::{video_ring, PixelFormat, VideoConsumer, VideoFrame, VideoProducer, VideoStats};

/// What can go wrong in the rings and the resampler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    #[error("resampler: {0}")]
    Resample(String),
}
