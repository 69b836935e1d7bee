//! [`WavOutput`]: answer audio into a WAV file on a simulated real-time clock.

use crate::assistant::AudioOutput;
use crate::PipelineError;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vr_core::{SampleIndex, SampleRate};

/// An [`AudioOutput`] that writes a WAV file as a real-time device would play it: its clock runs
/// on the wall clock from creation, silence fills the time nothing is queued, and a flush cuts
/// queued audio at the current moment. The file is a faithful timeline of what a listener would
/// have heard, so tests can measure onsets and barge-in stops on it.
pub struct WavOutput {
    path: PathBuf,
    writer: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
    rate: SampleRate,
    started: Instant,
    /// Frames already in the file (the timeline up to here is final).
    written: u64,
    /// Queued audio starting at timeline position `queue_start`.
    queue: std::collections::VecDeque<f32>,
    queue_start: u64,
    /// Frames dropped by flushes so far.
    flushed: u64,
}

impl WavOutput {
    /// Creates `path` (32-bit float mono at `rate`); its clock starts now.
    pub fn create(path: &Path, rate: SampleRate) -> Result<Self, PipelineError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate.hz(),
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| PipelineError::Output {
            reason: format!("cannot create {}: {e}", path.display()),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(writer),
            rate,
            started: Instant::now(),
            written: 0,
            queue: std::collections::VecDeque::new(),
            queue_start: 0,
            flushed: 0,
        })
    }

    /// Restarts the clock (call just before the conversation starts, to align it with the input).
    pub fn restart_clock(&mut self) {
        self.started = Instant::now() - self.rate.duration_of(self.written);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames dropped by flushes so far.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    fn clock(&self) -> u64 {
        self.rate.samples_in(self.started.elapsed())
    }

    fn queue_end(&self) -> u64 {
        self.queue_start + self.queue.len() as u64
    }

    /// Writes the timeline up to `until` (silence where nothing was queued).
    fn materialise(&mut self, until: u64) -> Result<(), PipelineError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(PipelineError::Output {
                reason: format!("{} is already closed", self.path.display()),
            });
        };
        let err = |e: hound::Error| PipelineError::Output {
            reason: format!("cannot write {}: {e}", self.path.display()),
        };
        while self.written < until {
            let s = if self.written >= self.queue_start {
                match self.queue.pop_front() {
                    Some(s) => {
                        self.queue_start += 1;
                        s
                    }
                    None => 0.0,
                }
            } else {
                0.0
            };
            w.write_sample(s).map_err(err)?;
            self.written += 1;
        }
        if self.queue.is_empty() {
            self.queue_start = self.queue_start.max(self.written);
        }
        Ok(())
    }
}

impl AudioOutput for WavOutput {
    fn rate(&self) -> SampleRate {
        self.rate
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        let now = self.clock();
        self.materialise(now)?;
        if self.queue.is_empty() {
            // Nothing pending: this audio starts playing now (an idle device plays at once).
            self.queue_start = now.max(self.written);
        }
        self.queue.extend(samples.iter().copied());
        Ok(())
    }

    fn flush(&mut self) -> usize {
        let now = self.clock();
        if let Err(e) = self.materialise(now) {
            tracing::warn!(error = %e, "WAV output");
        }
        let dropped = self.queue.len();
        self.queue.clear();
        self.queue_start = self.written;
        self.flushed += dropped as u64;
        dropped
    }

    fn played(&self) -> SampleIndex {
        SampleIndex(self.clock())
    }

    fn queued(&self) -> usize {
        self.queue_end()
            .saturating_sub(self.clock().max(self.queue_start)) as usize
    }

    fn close(&mut self) -> Result<(), PipelineError> {
        // Everything queued is heard in full; the file ends with the last sample.
        let end = self.queue_end().max(self.written);
        self.materialise(end)?;
        if let Some(w) = self.writer.take() {
            w.finalize().map_err(|e| PipelineError::Output {
                reason: format!("cannot finalise {}: {e}", self.path.display()),
            })?;
        }
        Ok(())
    }
}

impl Drop for WavOutput {
    fn drop(&mut self) {
        if self.writer.is_some() {
            if let Err(e) = self.close() {
                tracing::warn!(error = %e, "WAV output not finalised");
            }
        }
    }
}
