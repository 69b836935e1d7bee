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
    /// The filter has converged (the startup gate is open).
    pub converged: bool,
    /// Echo return loss enhancement over the last ~0.5 s of far-active frames, dB
    /// (10·log10(mic energy / output energy)); a lower bound while the near end also talks.
    pub erle_db: Option<f32>,
    /// Microphone and output energy summed over every far-active frame so far (before the
    /// startup gate): the ERLE over any stretch is the ratio of their increments.
    pub echo_in_energy: f64,
    pub echo_out_energy: f64,
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
    /// Startup gate: linear gain applied while not converged (1.0 = off), the short-window
    /// energies that decide convergence, and far-active frames gated so far.
    gate_gain: f32,
    converged_erle_db: f64,
    gate_max_frames: u64,
    gate_min_frames: u64,
    gate_frames: u64,
    converged: bool,
    short_in: f64,
    short_out: f64,
    /// Residual echo gate: its gain, threshold, the gain applied to the last frame and the
    /// frames left to hold it open after the near end was heard.
    nlp_gain: f32,
    nlp_threshold_db: f64,
    nlp_applied: f32,
    nlp_hold: u32,
    stats: AecStats,
}

/// The residual echo gate stays open this many frames after the near end was last heard, so a
/// word's quiet tail is not cut (50 ms at 10 ms frames).
const NLP_HOLD_FRAMES: u32 = 5;

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
            gate_gain: 10f32.powf(cfg.startup_gate_db as f32 / 20.0),
            converged_erle_db: f64::from(cfg.converged_erle_db),
            gate_max_frames: u64::from(cfg.startup_gate_max_ms) * u64::from(rate.hz())
                / 1000
                / frame as u64,
            gate_min_frames: u64::from(cfg.startup_gate_min_ms) * u64::from(rate.hz())
                / 1000
                / frame as u64,
            gate_frames: 0,
            converged: cfg.startup_gate_db == 0,
            short_in: 0.0,
            short_out: 0.0,
            nlp_gain: 10f32.powf(cfg.nlp_db as f32 / 20.0),
            nlp_threshold_db: f64::from(cfg.nlp_threshold_db),
            nlp_applied: 1.0,
            nlp_hold: NLP_HOLD_FRAMES,
            stats: AecStats {
                converged: cfg.startup_gate_db == 0,
                ..AecStats::default()
            },
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

    fn restart_gate(&mut self) {
        if self.gate_gain < 1.0 {
            self.converged = false;
            self.stats.converged = false;
            self.gate_frames = 0;
        }
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
                self.short_in = 0.0;
                self.short_out = 0.0;
                self.restart_gate();
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
        let r = self
            .speex
            .process(&self.near_frame, &far_frame, &mut self.out_frame);
        self.far_frame = far_frame;
        r?;
        self.stats.frames += 1;
        let far_e: f32 = self.far_frame.iter().map(|x| x * x).sum::<f32>() / n as f32;
        if far_e.sqrt() >= self.far_active_rms {
            self.stats.far_active_frames += 1;
            let e_in: f64 = self.near_frame.iter().map(|&x| f64::from(x * x)).sum();
            let e_out: f64 = self.out_frame.iter().map(|&x| f64::from(x * x)).sum();
            self.stats.echo_in_energy += e_in;
            self.stats.echo_out_energy += e_out;
            // ~0.5 s exponential window at 10 ms frames: what the filter does now. A longer one
            // reported the first second's unconverged frames for seconds after (a digital echo
            // measured 25–39 dB per 250 ms from 0.75 s in while a 2 s window still said 13.6).
            let b = 1.0 - (n as f64 / 8_000.0);
            self.short_in = b * self.short_in + e_in;
            self.short_out = b * self.short_out + e_out;
            let erle = 10.0 * (self.short_in / self.short_out.max(1e-20)).log10();
            self.stats.erle_db = (self.short_in > 0.0).then_some(erle as f32);
            if !self.converged {
                self.gate_frames += 1;
                if (self.gate_frames >= self.gate_min_frames && erle >= self.converged_erle_db)
                    || self.gate_frames >= self.gate_max_frames
                {
                    self.converged = true;
                    self.stats.converged = true;
                    tracing::debug!(erle_db = erle, frames = self.gate_frames, "aec converged");
                } else {
                    for v in &mut self.out_frame {
                        *v *= self.gate_gain;
                    }
                }
            }
            if self.converged {
                // Residual echo gate: the filter plus the residual suppressor leave the echo
                // ~20 dB down, which Silero still takes for speech now and then (one of three
                // null-sink runs: "It is a beautiful" heard back, an overlap). A frame the
                // filter took more than `nlp_threshold_db` out of is echo only; the user's
                // voice (double talk) keeps its energy through the filter and is left alone,
                // and for `NLP_HOLD_FRAMES` after it.
                let removed = 10.0 * (e_in / e_out.max(1e-20)).log10();
                if removed < self.nlp_threshold_db {
                    self.nlp_hold = NLP_HOLD_FRAMES;
                } else {
                    self.nlp_hold = self.nlp_hold.saturating_sub(1);
                }
                let target = if self.nlp_hold == 0 {
                    self.nlp_gain
                } else {
                    1.0
                };
                self.ramp_out(target);
            }
        } else {
            self.ramp_out(1.0);
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

impl EchoCanceller {
    /// Moves the output gain to `target` across the frame (no step, no click).
    fn ramp_out(&mut self, target: f32) {
        if self.nlp_applied == target && target == 1.0 {
            return;
        }
        let n = self.out_frame.len() as f32;
        let from = self.nlp_applied;
        for (k, v) in self.out_frame.iter_mut().enumerate() {
            *v *= from + (target - from) * (k as f32 + 1.0) / n;
        }
        self.nlp_applied = target;
    }
}

/// One stream's position on a shared clock: frame `frame` of a stream at `rate` was captured
/// (or became audible) `ns` nanoseconds after a common epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPoint {
    pub frame: u64,
    pub ns: u64,
    pub rate: SampleRate,
}

/// Where far-end sample `k` (at `rate`, counted from the far stream's frame 0) lands on the
/// near-end clock at `rate`: returns `near index − k`. The streams may run at different device
/// rates; both are first expressed at `rate`.
pub fn clock_offset(far: ClockPoint, near: ClockPoint, rate: SampleRate) -> i64 {
    let r = f64::from(rate.hz());
    let frames =
        near.frame as f64 / f64::from(near.rate.hz()) - far.frame as f64 / f64::from(far.rate.hz());
    let ns = far.ns as f64 - near.ns as f64;
    (frames * r + ns * r / 1e9).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_maps_playback_onto_capture() {
        let r = SampleRate(16_000);
        // Speaker at 48 kHz: frame 48 000 audible at 2.0 s. Mic at 44.1 kHz: frame 44 100
        // captured at 1.5 s. Far sample k=16 000 (1 s into playback, audible at 2.0 s) is
        // captured 0.5 s after mic frame 44 100, i.e. at 16 kHz index 16 000 + 8 000.
        let far = ClockPoint {
            frame: 48_000,
            ns: 2_000_000_000,
            rate: SampleRate(48_000),
        };
        let near = ClockPoint {
            frame: 44_100,
            ns: 1_500_000_000,
            rate: SampleRate(44_100),
        };
        assert_eq!(clock_offset(far, near, r) + 16_000, 24_000);
        // Same instant, same index: zero offset.
        let a = ClockPoint {
            frame: 160,
            ns: 10_000_000,
            rate: r,
        };
        assert_eq!(clock_offset(a, a, r), 0);
    }

    /// The stage end to end on a synthetic echo, fed in odd chunk sizes with a clock jump:
    /// output length equals input length and the echo is cancelled after convergence.
    #[test]
    fn stage_cancels_and_keeps_the_sample_count() {
        let rate = SampleRate(16_000);
        let mut aec = EchoCanceller::new(&AecConfig::default(), rate).expect("aec");
        let mut noise = vr_core::rng::Xorshift32::new(0x9e37_79b9);
        let far: Vec<f32> = (0..16_000 * 6)
            .map(|i| {
                let x = noise.next_centred();
                let on = (i / 4000) % 4 != 3;
                if on {
                    x * 0.3
                } else {
                    0.0
                }
            })
            .collect();
        let d = 1100;
        let mic: Vec<f32> = (0..far.len())
            .map(|i| if i >= d { 0.4 * far[i - d] } else { 0.0 })
            .collect();
        let mut out = Vec::new();
        let mut at = 0;
        for (k, c) in mic.chunks(333).enumerate() {
            // Far arrives a little ahead of the mic, as on a real device.
            let f_end = (at + c.len() + 500).min(far.len());
            let f_start = at.saturating_sub(0).min(f_end);
            if k == 0 {
                aec.push_far(&far[..f_end], SampleIndex(0));
            } else {
                aec.push_far(&far[f_start..f_end], SampleIndex(f_start as u64));
            }
            aec.process(c, SampleIndex(at as u64), &mut out)
                .expect("process");
            at += c.len();
        }
        let frame = aec.frame_size();
        assert!(
            out.len() + frame > mic.len() && out.len() <= mic.len(),
            "{} vs {}",
            out.len(),
            mic.len()
        );
        assert_eq!(aec.stats().delay, Some(d));
        let from = 16_000 * 3;
        let e_in: f32 = mic[from..out.len()].iter().map(|x| x * x).sum();
        let e_out: f32 = out[from..].iter().map(|x| x * x).sum();
        let erle = 10.0 * (e_in / e_out).log10();
        assert!(erle > 20.0, "ERLE {erle:.1} dB");
    }
}
