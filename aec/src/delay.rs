//! Far-end → near-end delay estimation by GCC-PHAT (Knapp & Carter, "The generalized correlation
//! method for estimation of time delay", IEEE TASSP 1976) over a sliding window, re-estimated
//! periodically, with hysteresis so the canceller's alignment only moves on a confirmed change.
//!
//! Sans-IO: the caller pushes far and near samples on one shared sample clock (sample `i` of
//! both was played / captured at the same instant); the estimator answers in samples.
//!
//! Why PHAT: whitening the cross-spectrum makes the correlation peak sharp for speech, whose
//! long-term spectrum is dominated by a few hundred Hz and would otherwise give a broad peak;
//! reverberation and the user's own voice (double talk) spread the sidelobes but rarely move the
//! peak of the direct path.

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use crate::AecError;

/// Agreeing estimates needed before the first delay is taken. On PulseAudio the first window
/// with far-end audio gave a spurious 0 ms twice in nine runs (PSR 11.6 and 27.8, while real
/// echoes measured 32–165, so PSR does not tell them apart), and the filter then lost 0.7 s
/// re-converging once the real 110 ms was confirmed; a second agreeing estimate costs one
/// `interval`, inside the startup gate.
const FIRST_CONFIRMATIONS: usize = 2;

/// Settings in samples of the shared clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelaySettings {
    /// Largest delay searched (speaker latency + acoustic path).
    pub max_delay: usize,
    /// Correlation window length.
    pub window: usize,
    /// Samples between estimates.
    pub interval: usize,
    /// Minimum peak-to-sidelobe ratio (peak over the RMS of the other lags) for an estimate to
    /// count; below it the window had too little far-end signal or too much near-end talk.
    pub min_psr: f32,
    /// Far-end RMS under which a window is skipped (nothing was played: no information).
    pub min_far_rms: f32,
    /// A new estimate within this many samples of the current delay is the same delay.
    pub tolerance: usize,
    /// Consecutive confident estimates, agreeing within `tolerance`, needed to move the delay.
    pub confirmations: usize,
}

/// A change of the tracked delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayChange {
    /// New delay, samples (near lags far by this much).
    pub delay: usize,
    /// The delay it replaces (`None` for the first estimate).
    pub previous: Option<usize>,
    /// Peak-to-sidelobe ratio of the confirming estimate.
    pub psr: f32,
}

/// GCC-PHAT delay tracker.
pub struct DelayEstimator {
    s: DelaySettings,
    far: VecDeque<f32>,
    near: VecDeque<f32>,
    since_estimate: usize,
    fft_len: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    buf_far: Vec<f32>,
    buf_near: Vec<f32>,
    spec_far: Vec<Complex32>,
    spec_near: Vec<Complex32>,
    corr: Vec<f32>,
    scratch_fwd: Vec<Complex32>,
    scratch_inv: Vec<Complex32>,
    current: Option<usize>,
    candidate: Option<(usize, usize)>,
    last: Option<(usize, f32)>,
}

impl std::fmt::Debug for DelayEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayEstimator")
            .field("settings", &self.s)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl DelayEstimator {
    /// # Errors
    /// [`AecError::InvalidSetting`] for a zero window or interval, or `confirmations == 0`.
    pub fn new(s: DelaySettings) -> Result<Self, AecError> {
        if s.window == 0 || s.interval == 0 || s.confirmations == 0 {
            return Err(AecError::InvalidSetting {
                what: "delay window, interval and confirmations must be > 0",
                value: 0.0,
            });
        }
        // Linear (not circular) correlation for lags 0..=max_delay needs window + max_delay.
        let fft_len = (s.window + s.max_delay).next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(fft_len);
        let inverse = planner.plan_fft_inverse(fft_len);
        let mut me = DelayEstimator {
            far: VecDeque::with_capacity(s.window + s.max_delay),
            near: VecDeque::with_capacity(s.window),
            since_estimate: 0,
            fft_len,
            buf_far: forward.make_input_vec(),
            buf_near: forward.make_input_vec(),
            spec_far: forward.make_output_vec(),
            spec_near: forward.make_output_vec(),
            corr: inverse.make_output_vec(),
            scratch_fwd: forward.make_scratch_vec(),
            scratch_inv: inverse.make_scratch_vec(),
            forward,
            inverse,
            s,
            current: None,
            candidate: None,
            last: None,
        };
        me.reset();
        Ok(me)
    }

    /// The tracked delay in samples, once one was confirmed.
    pub fn delay(&self) -> Option<usize> {
        self.current
    }

    /// The last raw estimate and its peak-to-sidelobe ratio (confident or not), for telemetry.
    pub fn last_estimate(&self) -> Option<(usize, f32)> {
        self.last
    }

    /// Pushes equally long far and near chunks (same clock); returns a change of the tracked
    /// delay when one was confirmed.
    ///
    /// # Errors
    /// [`AecError::FrameSize`] when the chunks differ in length.
    pub fn push(&mut self, far: &[f32], near: &[f32]) -> Result<Option<DelayChange>, AecError> {
        if far.len() != near.len() {
            return Err(AecError::FrameSize {
                expected: far.len(),
                actual: near.len(),
            });
        }
        let mut change = None;
        for (&f, &n) in far.iter().zip(near) {
            if self.far.len() == self.s.window + self.s.max_delay {
                self.far.pop_front();
            }
            self.far.push_back(f);
            if self.near.len() == self.s.window {
                self.near.pop_front();
            }
            self.near.push_back(n);
            self.since_estimate += 1;
            if self.since_estimate >= self.s.interval {
                self.since_estimate = 0;
                if let Some(c) = self.estimate() {
                    change = Some(c);
                }
            }
        }
        Ok(change)
    }

    /// Forgets everything (a new far-end stream).
    pub fn reset(&mut self) {
        // Start from silence rather than an empty window: nothing was played before the stream
        // began, so zeros are the truth, and the first estimate comes one `interval` after the
        // far end starts instead of a whole window + max_delay later (the echo that matters most
        // is in the first second, before the filter has converged).
        self.far.clear();
        self.near.clear();
        self.far.resize(self.s.window + self.s.max_delay, 0.0);
        self.near.resize(self.s.window, 0.0);
        self.since_estimate = 0;
        self.current = None;
        self.candidate = None;
        self.last = None;
    }

    fn estimate(&mut self) -> Option<DelayChange> {
        let (w, m) = (self.s.window, self.s.max_delay);
        let far_energy: f32 = self.far.iter().skip(m).map(|x| x * x).sum();
        if (far_energy / w as f32).sqrt() < self.s.min_far_rms {
            return None;
        }
        self.buf_far.fill(0.0);
        self.buf_near.fill(0.0);
        for (d, &s) in self.buf_far.iter_mut().zip(&self.far) {
            *d = s;
        }
        for (d, &s) in self.buf_near.iter_mut().zip(&self.near) {
            *d = s;
        }
        // Both calls only fail on buffer length mismatches, impossible with the planner's own
        // vectors; skipping the estimate is the safe answer regardless.
        self.forward
            .process_with_scratch(&mut self.buf_far, &mut self.spec_far, &mut self.scratch_fwd)
            .ok()?;
        self.forward
            .process_with_scratch(
                &mut self.buf_near,
                &mut self.spec_near,
                &mut self.scratch_fwd,
            )
            .ok()?;
        // c[lag] = Σ near[i]·far[i + lag]  ⇔  C = conj(NEAR)·FAR; PHAT keeps only the phase.
        for (f, n) in self.spec_far.iter_mut().zip(&self.spec_near) {
            let x = n.conj() * *f;
            let mag = x.norm();
            *f = if mag > 1e-12 {
                x / mag
            } else {
                Complex32::new(0.0, 0.0)
            };
        }
        // The inverse real FFT needs purely real DC and Nyquist bins.
        if let Some(first) = self.spec_far.first_mut() {
            first.im = 0.0;
        }
        if let Some(last) = self.spec_far.last_mut() {
            last.im = 0.0;
        }
        self.inverse
            .process_with_scratch(&mut self.spec_far, &mut self.corr, &mut self.scratch_inv)
            .ok()?;
        // far_seg starts m samples before the near window: near[i] ≈ far_seg[i + m - D], so the
        // peak lag is m - D.
        let lags = &self.corr[..=m.min(self.fft_len - 1)];
        let (peak_lag, peak) =
            lags.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        let guard = 8;
        let (mut sum, mut count) = (0.0f32, 0usize);
        for (i, &v) in lags.iter().enumerate() {
            if i.abs_diff(peak_lag) > guard {
                sum += v * v;
                count += 1;
            }
        }
        let side = (sum / count.max(1) as f32).sqrt().max(1e-12);
        let psr = peak / side;
        let delay = m - peak_lag;
        self.last = Some((delay, psr));
        if psr < self.s.min_psr {
            return None;
        }
        self.track(delay, psr)
    }

    /// Hysteresis: the first estimate is taken once [`FIRST_CONFIRMATIONS`] agree (soon: anything
    /// beats no alignment); later a different delay must be seen `confirmations` times in a row.
    fn track(&mut self, delay: usize, psr: f32) -> Option<DelayChange> {
        let tol = self.s.tolerance;
        match self.current {
            None => {
                let n = match self.candidate {
                    Some((c, n)) if c.abs_diff(delay) <= tol => n + 1,
                    _ => 1,
                };
                if n < FIRST_CONFIRMATIONS.min(self.s.confirmations) {
                    self.candidate = Some((delay, n));
                    return None;
                }
                self.candidate = None;
                self.current = Some(delay);
                Some(DelayChange {
                    delay,
                    previous: None,
                    psr,
                })
            }
            Some(cur) if cur.abs_diff(delay) <= tol => {
                self.candidate = None;
                None
            }
            Some(cur) => {
                let n = match self.candidate {
                    Some((c, n)) if c.abs_diff(delay) <= tol => n + 1,
                    _ => 1,
                };
                self.candidate = Some((delay, n));
                if n >= self.s.confirmations {
                    self.candidate = None;
                    self.current = Some(delay);
                    Some(DelayChange {
                        delay,
                        previous: Some(cur),
                        psr,
                    })
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like far end: white noise through a one-pole low-pass, gated on and off in
    /// 300 ms bursts (so windows with silence exist).
    fn far_signal(n: usize, seed: u32) -> Vec<f32> {
        let mut noise = vr_core::rng::Xorshift32::new(seed);
        let mut y = 0.0f32;
        (0..n)
            .map(|i| {
                let x = noise.next_centred();
                y = 0.9 * y + 0.1 * x;
                if (i / 4800) % 3 == 2 {
                    0.0
                } else {
                    y * 2.0
                }
            })
            .collect()
    }

    fn settings() -> DelaySettings {
        DelaySettings {
            max_delay: 4800,
            window: 16_000,
            interval: 4000,
            min_psr: 6.0,
            min_far_rms: 1e-3,
            tolerance: 16,
            confirmations: 3,
        }
    }

    /// near[i] = gain·far[i − delay(i)] + a second, independent talker + noise.
    fn near_signal(far: &[f32], delay_at: impl Fn(usize) -> usize, talker: f32) -> Vec<f32> {
        let other = far_signal(far.len(), 0xdead_beef);
        (0..far.len())
            .map(|i| {
                let d = delay_at(i);
                let echo = if i >= d { 0.3 * far[i - d] } else { 0.0 };
                echo + talker * other[i]
            })
            .collect()
    }

    fn run(
        est: &mut DelayEstimator,
        far: &[f32],
        near: &[f32],
        chunk: usize,
    ) -> Vec<(usize, DelayChange)> {
        let mut changes = Vec::new();
        for (k, (f, n)) in far.chunks(chunk).zip(near.chunks(chunk)).enumerate() {
            if let Some(c) = est.push(f, n).expect("push") {
                changes.push(((k + 1) * chunk, c));
            }
        }
        changes
    }

    #[test]
    fn finds_a_fixed_delay_with_double_talk() {
        let far = far_signal(16_000 * 6, 0x1234_5678);
        let near = near_signal(&far, |_| 1234, 0.15);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        let changes = run(&mut est, &far, &near, 160);
        assert_eq!(est.delay(), Some(1234), "changes {changes:?}");
        assert_eq!(changes.len(), 1, "one estimate, no flapping: {changes:?}");
    }

    /// A lone first estimate is not taken: the echo that starts after a first window at
    /// another lag is locked at once, with no detour through the lone one.
    #[test]
    fn the_first_delay_needs_two_agreeing_estimates() {
        let far = far_signal(16_000 * 6, 0x1234_5678);
        let near = near_signal(&far, |_| 1234, 0.0);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        let changes = run(&mut est, &far, &near, 160);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1.delay, 1234);
        // The far end plays from sample 0; estimates come every 4000 samples.
        assert_eq!(changes[0].0, 2 * 4000, "{changes:?}");

        // One window whose peak is at 300 (a different echo for its first 0.25 s), then 1234.
        let near = near_signal(&far, |i| if i < 4000 { 300 } else { 1234 }, 0.0);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        let changes = run(&mut est, &far, &near, 160);
        assert_eq!(
            changes.first().map(|c| c.1.delay),
            Some(1234),
            "{changes:?}"
        );
        assert_eq!(changes[0].1.previous, None);
    }

    #[test]
    fn tracks_a_delay_change_after_confirmations() {
        let far = far_signal(16_000 * 12, 0x1234_5678);
        let near = near_signal(&far, |i| if i < 16_000 * 5 { 800 } else { 2000 }, 0.05);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        let changes = run(&mut est, &far, &near, 160);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].1.delay, 800);
        assert_eq!(changes[1].1.delay, 2000);
        assert_eq!(changes[1].1.previous, Some(800));
        // The switch needs the new delay to fill the window and then three confirmations.
        let at = changes[1].0;
        assert!(
            at > 16_000 * 5 + 3 * 4000 && at < 16_000 * 10,
            "switched at {at}"
        );
    }

    #[test]
    fn a_single_outlier_does_not_move_the_delay() {
        let far = far_signal(16_000 * 10, 0x1234_5678);
        // 1.2 s at another delay: at most two confident windows see it, fewer than three.
        let near = near_signal(
            &far,
            |i| {
                if (16_000 * 5..16_000 * 5 + 3200).contains(&i) {
                    3000
                } else {
                    500
                }
            },
            0.0,
        );
        let mut est = DelayEstimator::new(settings()).expect("settings");
        let changes = run(&mut est, &far, &near, 320);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(est.delay(), Some(500));
    }

    #[test]
    fn silence_and_unrelated_audio_give_no_estimate() {
        let far = vec![0.0; 16_000 * 4];
        let near = far_signal(far.len(), 7);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        assert!(run(&mut est, &far, &near, 160).is_empty());
        let far = far_signal(16_000 * 4, 1);
        let near = far_signal(far.len(), 2);
        let mut est = DelayEstimator::new(settings()).expect("settings");
        assert!(
            run(&mut est, &far, &near, 160).is_empty(),
            "{:?}",
            est.last_estimate()
        );
    }

    #[test]
    fn chunk_size_does_not_matter() {
        let far = far_signal(16_000 * 5, 99);
        let near = near_signal(&far, |_| 333, 0.1);
        let a = run(
            &mut DelayEstimator::new(settings()).expect("s"),
            &far,
            &near,
            160,
        );
        let b = run(
            &mut DelayEstimator::new(settings()).expect("s"),
            &far,
            &near,
            1000,
        );
        assert_eq!(a.first().map(|c| c.1.delay), Some(333));
        assert_eq!(
            a.iter().map(|c| c.1.delay).collect::<Vec<_>>(),
            b.iter().map(|c| c.1.delay).collect::<Vec<_>>()
        );
    }
}
