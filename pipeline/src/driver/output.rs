//! The core's audio actions on the [`AudioOutput`]. An output can only queue and flush, so a
//! pause is a flush whose dropped audio is kept (from a copy of the latest writes) and written
//! again on resume.

use crate::assistant::AudioOutput;
use crate::PipelineError;
use std::collections::VecDeque;
use std::time::Duration;

pub(super) struct Output<'a> {
    dev: &'a mut dyn AudioOutput,
    /// The latest samples written, newest last: what a pause's flush may have to give back.
    recent: VecDeque<f32>,
    /// Most samples `recent` holds (more than the core ever has queued).
    keep: usize,
    /// Audio a pause took off the output, for a resume to play.
    kept: Vec<f32>,
}

impl<'a> Output<'a> {
    /// `lead`: how far ahead of playback the core writes.
    pub(super) fn new(dev: &'a mut dyn AudioOutput, lead: Duration) -> Self {
        // Twice the lead plus slack: the core's writes top the queue up to the lead, and the
        // device may hold a little more than the core's model of it.
        let keep = dev.rate().samples_in(lead * 2 + Duration::from_millis(500)) as usize;
        Self {
            dev,
            recent: VecDeque::with_capacity(keep),
            keep,
            kept: Vec::with_capacity(keep),
        }
    }

    pub(super) fn played(&self) -> u64 {
        self.dev.played().0
    }

    pub(super) fn write(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        self.dev.write(samples)?;
        self.remember(samples);
        Ok(())
    }

    fn remember(&mut self, samples: &[f32]) {
        let tail = &samples[samples.len().saturating_sub(self.keep)..];
        let excess = (self.recent.len() + tail.len()).saturating_sub(self.keep);
        self.recent.drain(..excess);
        self.recent.extend(tail.iter().copied());
    }

    /// Stops playback now; what was queued is kept for [`Output::resume`].
    pub(super) fn pause(&mut self) {
        let dropped = self.dev.flush();
        let from = self.recent.len().saturating_sub(dropped);
        self.kept.clear();
        self.kept.extend(self.recent.drain(from..));
        self.recent.clear();
    }

    pub(super) fn resume(&mut self) -> Result<(), PipelineError> {
        if self.kept.is_empty() {
            return Ok(());
        }
        let kept = std::mem::take(&mut self.kept);
        let written = self.write(&kept);
        self.kept = kept;
        self.kept.clear();
        written
    }

    /// Drops everything queued or kept.
    pub(super) fn flush(&mut self) {
        self.dev.flush();
        self.kept.clear();
        self.recent.clear();
    }
}
