//! The echo-cancelling stage: far-end history on the near-end sample clock, GCC-PHAT alignment,
//! SpeexDSP cancellation frame by frame. Sans-IO: the caller says where on the clock each far
//! chunk was played and each near chunk was captured.

use std::collections::VecDeque;

use vr_core::{SampleIndex, SampleRate};

use crate::config::AecConfig;
use crate::delay::{DelayChange, DelayEstimator};
use crate::speex::SpeexAec;
use crate::AecError;

/// What the stage reports besides audio.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AecEvent {
    /// The far→near alignment moved; the adaptive filter was reset.
    DelayChanged {
        /// Near-clock position of the frame where it took effect.
        at: SampleIndex,
        change: DelayChange,
    },
}

/// Running figures for telemetry and `devices --check`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AecStats {
    pub frames: u64,
    /// Frames with far-end signal (the ones ERLE is measured on).
    pub far_active_frames: u64,
    /// Tracked delay, samples.
    pub delay: Option<usize>,
    /// Echo return loss enhancement over the last ~2 s of far-active frames, dB
    /// (10·log10(mic energy / output energy)); a lower bound while the near end also talks.
    pub erle_db: Option<f32>,
}

/// Acoustic echo canceller for one mono stream at the pipeline rate.
#[derive(Debug)]
pub struct EchoCanceller {
    frame: usize,
    preroll: usize,
    initial_delay: usize,
    far: VecDeque<f32>,
    /// Clock position of `far[0]`.
    far_start: u64,
    /// Samples of far history kept behind the near cursor.
    far_keep: usize,
    /// Upper bound on far samples held (far may run ahead of near by the output latency).
    far_cap: usize,
    near: Vec<f32>,
    near_frame: Vec<f32>,
    /// Clock position of `near[0]` (the next frame to process).
    near_start: Option<u64>,
    far_frame: Vec<f32>,
    est_far: Vec<f32>,
    out_frame: Vec<f32>,
    speex: SpeexAec,
    delay: DelayEstimator,
    far_active_rms: f32,
    energy_in: f64,
    energy_out: f64,
    stats: AecStats,
}

impl EchoCanceller {
    /// # Errors
    /// Invalid settings ([`AecError::InvalidSetting`]) or a SpeexDSP initialisation failure.
    pub fn new(cfg: &AecConfig, rate: SampleRate) -> Result<Self, AecError> {
        cfg.validate()?;
        let speex = SpeexAec::new(cfg.speex_settings(rate))?;
        let ds = cfg.delay_settings(rate);
        let frame = speex.settings().frame_size;
        let ms = |v: u32| rate.samples_in(std::time::Duration::from_millis(u64::from(v))) as usize;
        let far_keep = ds.max_delay + ms(cfg.preroll_ms) + 2 * frame;
        Ok(EchoCanceller {
            frame,
            preroll: ms(cfg.preroll_ms),
            initial_delay: ms(cfg.initial_delay_ms),
            far: VecDeque::with_capacity(far_keep * 4),
            far_start: 0,
            far_keep,
            far_cap: far_keep + rate.hz() as usize * 10,
            near: Vec::with_capacity(frame * 8),
            near_start: None,
            near_frame: vec![0.0; frame],
            far_frame: vec![0.0; frame],
            est_far: vec![0.0; frame],
            out_frame: vec![0.0; frame],
            speex,
            delay: DelayEstimator::new(ds)?,
            far_active_rms: cfg.delay.min_far_rms,
            energy_in: 0.0,
            energy_out: 0.0,
            stats: AecStats::default(),
        })
    }

    pub fn frame_size(&self) -> usize {
        self.frame
    }

    pub fn stats(&self) -> AecStats {
        self.stats
    }

    /// Records far-end samples that became audible starting at clock position `at`. Overlaps
    /// with what is already held are ignored, gaps are silence.
    pub fn push_far(&mut self, samples: &[f32], at: SampleIndex) {
        let end = self.far_start + self.far.len() as u64;
        if self.far.is_empty() {
            self.far_start = at.0;
        } else if at.0 > end {
            let gap = (at.0 - end).min(self.far_cap as u64) as usize;
            self.far.extend(std::iter::repeat_n(0.0, gap));
            if gap as u64 != at.0 - end {
                self.far.clear();
                self.far_start = at.0;
            }
        }
        let end = self.far_start + self.far.len() as u64;
        let skip = end.saturating_sub(at.0).min(samples.len() as u64) as usize;
        self.far.extend(&samples[skip..]);
        let excess = self.far.len().saturating_sub(self.far_cap);
        if excess > 0 {
            self.far.drain(..excess);
            self.far_start += excess as u64;
        }
    }

    /// Copies far samples for clock positions `from..from + out.len()` (zeros where none held).
    fn far_at(&self, from: i64, out: &mut [f32]) {
        for (k, d) in out.iter_mut().enumerate() {
            let i = from + k as i64 - self.far_start as i64;
            *d = if i >= 0 {
                self.far.get(i as usize).copied().unwrap_or(0.0)
            } else {
                0.0
            };
        }
    }

    /// Cancels echo from mic samples captured starting at clock position `at`; the cleaned
    /// samples are appended to `out` in whole frames (up to one frame of latency). A jump in
    /// `at` flushes the partial frame (zero-padded) first.
    ///
    /// # Errors
    /// Only on internal frame-size mismatches, which would be a bug.
    pub fn process(
        &mut self,
        near: &[f32],
        at: SampleIndex,
        out: &mut Vec<f32>,
    ) -> Result<Vec<AecEvent>, AecError> {
        let mut events = Vec::new();
        let n = self.frame;
        let mut start = match self.near_start {
            Some(start) if start + self.near.len() as u64 == at.0 => start,
            Some(start) => {
                if !self.near.is_empty() {
                    let real = self.near.len();
                    self.near_frame.fill(0.0);
                    self.near_frame[..real].copy_from_slice(&self.near);
                    self.run_frame(start, &mut events)?;
                    out.extend_from_slice(&self.out_frame[..real]);
                    self.near.clear();
                }
                at.0
            }
            None => at.0,
        };
        self.near.extend_from_slice(near);
        let mut off = 0;
        while self.near.len() - off >= n {
            self.near_frame.copy_from_slice(&self.near[off..off + n]);
            self.run_frame(start, &mut events)?;
            out.extend_from_slice(&self.out_frame);
            start += n as u64;
            off += n;
        }
        self.near.drain(..off);
        self.near_start = Some(start);
        Ok(events)
    }

    fn run_frame(&mut self, start: u64, events: &mut Vec<AecEvent>) -> Result<(), AecError> {
        let n = self.frame;
        // Delay estimation sees far and near on the same clock.
        let mut est_far = std::mem::take(&mut self.est_far);
        self.far_at(start as i64, &mut est_far);
        let change = self.delay.push(&est_far, &self.near_frame);
        self.est_far = est_far;
        if let Some(change) = change? {
            if change.previous.is_some() || change.delay.abs_diff(self.initial_delay) > n {
                // The adapted taps sit at the old lag; starting over converges faster than
                // unlearning them.
                self.speex.reset();
                self.energy_in = 0.0;
                self.energy_out = 0.0;
            }
            tracing::debug!(delay = change.delay, previous = ?change.previous, psr = change.psr, "aec delay");
            events.push(AecEvent::DelayChanged {
                at: SampleIndex(start),
                change,
            });
        }
        let d = self.delay.delay().unwrap_or(self.initial_delay);
        self.stats.delay = self.delay.delay();
        // Feed the reference `preroll` samples early so the direct path lands inside the causal
        // filter even when the estimate is a little late.
        let shift = d as i64 - self.preroll as i64;
        let mut far_frame = std::mem::take(&mut self.far_frame);
        self.far_at(start as i64 - shift, &mut far_frame);
        let r = self.speex
            .process(&self.near_frame, &far_frame, &mut self.out_frame);
        self.far_frame = far_frame;
        r?;
        self.stats.frames += 1;
        let far_e: f32 = self.far_frame.iter().map(|x| x * x).sum::<f32>() / n as f32;
        if far_e.sqrt() >= self.far_active_rms {
            self.stats.far_active_frames += 1;
            // ~2 s exponential window at 10 ms frames.
            let a = 1.0 - (n as f64 / 32_000.0);
            let e_in: f64 = self.near_frame.iter().map(|&x| f64::from(x * x)).sum();
            let e_out: f64 = self.out_frame.iter().map(|&x| f64::from(x * x)).sum();
            self.energy_in = a * self.energy_in + e_in;
            self.energy_out = a * self.energy_out + e_out;
            self.stats.erle_db = (self.energy_in > 0.0)
                .then(|| (10.0 * (self.energy_in / self.energy_out.max(1e-20)).log10()) as f32);
        }
        // Drop far history no future frame can need.
        let keep_from = (start + n as u64).saturating_sub(self.far_keep as u64);
        if keep_from > self.far_start {
            let k = ((keep_from - self.far_start) as usize).min(self.far.len());
            self.far.drain(..k);
            self.far_start += k as u64;
        }
        Ok(())
    }
}
