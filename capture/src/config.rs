//! The `[capture]` config section.

use serde::{Deserialize, Serialize};
use vr_core::{check_range, ConfigError};

/// How a file source delivers its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileReadMode {
    /// At the file's own rate, as a microphone would.
    Paced,
    /// As fast as the consumer takes them (waits for ring space, never drops).
    Fast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Input device name (substring match, case-insensitive); empty = the host's default input.
    pub input_device: String,
    /// Output device name for playback; empty = the host's default output.
    pub output_device: String,
    /// Audio ring capacity in milliseconds of audio at the device's rate.
    pub ring_ms: u32,
    /// Playback ring capacity in milliseconds.
    pub playback_ring_ms: u32,
    /// Output (speaker) device buffer request in frames; 0 = the backend's default.
    pub device_buffer_frames: u32,
    /// Input (microphone) device buffer request in frames; 0 = the backend's default, which on
    /// PulseAudio delivered the microphone in bursts 2 s apart (2 s of added latency, and
    /// overruns of a 2 s ring).
    pub input_buffer_frames: u32,
    /// File sources: "paced" (real time) or "fast".
    pub file_read: FileReadMode,
    /// Samples per push from a file source, in milliseconds of audio.
    pub file_chunk_ms: u32,
    /// How long a GStreamer pipeline may take to reach PLAYING or report its first error.
    pub video_start_timeout_ms: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            input_device: String::new(),
            output_device: String::new(),
            ring_ms: 2000,
            playback_ring_ms: 1000,
            device_buffer_frames: 960,
            input_buffer_frames: 480,
            file_read: FileReadMode::Paced,
            file_chunk_ms: 10,
            video_start_timeout_ms: 5000,
        }
    }
}

impl CaptureConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "capture.input_device length",
            self.input_device.len(),
            0..=256,
        )?;
        check_range(
            "capture.output_device length",
            self.output_device.len(),
            0..=256,
        )?;
        check_range("capture.ring_ms", self.ring_ms, 20..=60_000)?;
        check_range(
            "capture.playback_ring_ms",
            self.playback_ring_ms,
            20..=60_000,
        )?;
        check_range(
            "capture.device_buffer_frames",
            self.device_buffer_frames,
            0..=65_536,
        )?;
        check_range(
            "capture.input_buffer_frames",
            self.input_buffer_frames,
            0..=65_536,
        )?;
        check_range("capture.file_chunk_ms", self.file_chunk_ms, 1..=1000)?;
        check_range(
            "capture.video_start_timeout_ms",
            self.video_start_timeout_ms,
            100..=120_000,
        )?;
        Ok(())
    }

    /// Ring capacity in frames at `rate`.
    pub fn ring_frames(&self, rate: vr_core::SampleRate) -> usize {
        (u64::from(rate.hz()) * u64::from(self.ring_ms) / 1000).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_key() {
        CaptureConfig::default().validate().unwrap();
        let c = CaptureConfig {
            ring_ms: 5,
            ..CaptureConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("capture.ring_ms") && e.contains("20 ..= 60000"),
            "{e}"
        );
        assert_eq!(
            CaptureConfig::default().ring_frames(vr_core::SampleRate(48_000)),
            96_000
        );
    }
}
