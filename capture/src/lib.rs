//! Capture and playback: where real time meets the rest of the pipeline.
//!
//! Owns: the lock-free audio ring (SPSC, timestamped by sample index) and the latest-frame video
//! ring, audio sources (cpal microphone, WAV/FLAC files) and sinks (cpal speaker, WAV writer),
//! the GStreamer video source, and resampling between device rates and the pipeline's 16 kHz mono.
//!
//! Must not touch: models, dialog state or the network. Real-time callbacks here never allocate,
//! lock or block; they touch rings and atomic counters only, and every dropped sample or frame is
//! counted.
