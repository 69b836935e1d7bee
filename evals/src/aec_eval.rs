//! Offline echo-cancellation harness (issue 16): corpus speech as the far end, played through a
//! simulated echo path (bulk delay, gain, a synthetic room impulse response, a little noise),
//! with and without a second corpus speaker as the near-end user (double talk), cleaned by
//! [`vr_aec::EchoCanceller`] exactly as `listen` drives it (far pushed with its clock position,
//! mic processed in capture-sized chunks).
//!
//! Figures: ERLE after convergence, measured on far-active frames; the recogniser's output on
//! the cleaned signal is scored by the caller (`evals/tests/aec_echo.rs`, `voicerelay eval aec`).

use vr_aec::{AecConfig, AecEvent, AecStats, EchoCanceller};
use vr_core::{SampleIndex, SampleRate};

use crate::EvalError;

/// A simulated loudspeaker → microphone path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPath {
    /// Bulk delay (output latency the timestamps miss + acoustic flight time).
    pub delay_ms: f32,
    /// Gain of the direct path, dB.
    pub gain_db: f32,
    /// Reverberation time of the synthetic room (−60 dB decay).
    pub rt60_ms: f32,
    /// Length the impulse response is cut at.
    pub ir_ms: f32,
    /// White noise added at the microphone, dBFS RMS.
    pub noise_dbfs: f32,
    pub seed: u32,
}

impl EchoPath {
    /// A short, moderately live room: RT60 150 ms cut at 100 ms, noise at −70 dBFS.
    pub fn room(delay_ms: f32, gain_db: f32, seed: u32) -> Self {
        EchoPath {
            delay_ms,
            gain_db,
            rt60_ms: 150.0,
            ir_ms: 100.0,
            noise_dbfs: -70.0,
            seed,
        }
    }
}

struct XorShift(u32);
impl XorShift {
    /// Uniform in [−1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 as f32 / u32::MAX as f32 * 2.0 - 1.0
    }
}

/// Synthetic room impulse response at 16 kHz: the bulk delay, a unit direct path, then
/// exponentially decaying noise (the classic Schroeder-style model of the diffuse tail) at −6 dB
/// relative to the direct path at its start. Scaled by the path's gain.
pub fn impulse_response(path: &EchoPath) -> Vec<f32> {
    let sr = SampleRate::PIPELINE.hz() as f32;
    let delay = (path.delay_ms / 1000.0 * sr).round() as usize;
    let len = (path.ir_ms / 1000.0 * sr).round() as usize;
    let gain = 10f32.powf(path.gain_db / 20.0);
    // Amplitude decays 60 dB over rt60: a(t) = 10^(−3 t / rt60).
    let decay_per_sample = 10f32.powf(-3.0 / (path.rt60_ms / 1000.0 * sr));
    let mut rng = XorShift(path.seed | 1);
    let mut h = vec![0.0; delay + len.max(1)];
    h[delay] = gain;
    let mut a = 0.5 * gain;
    for v in h.iter_mut().skip(delay + 1) {
        a *= decay_per_sample;
        *v = a * rng.next() * 0.3;
    }
    h
}

/// `x` convolved with `h`, cut to `x.len()` (direct form: h is short and this runs offline).
pub fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let nz: Vec<(usize, f32)> = h
        .iter()
        .enumerate()
        .filter(|(_, &v)| v != 0.0)
        .map(|(i, &v)| (i, v))
        .collect();
    let mut y = vec![0.0; x.len()];
    for (i, out) in y.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for &(k, v) in &nz {
            if k > i {
                break;
            }
            acc += v * x[i - k];
        }
        *out = acc;
    }
    y
}

/// What the microphone records while `far` plays through `path`: echo + noise (+ `user`
/// starting at `user_at` samples, if given).
pub fn microphone(far: &[f32], path: &EchoPath, user: Option<(&[f32], usize)>) -> Vec<f32> {
    let mut y = convolve(far, &impulse_response(path));
    let noise_rms = 10f32.powf(path.noise_dbfs / 20.0);
    let mut rng = XorShift(path.seed.wrapping_mul(2_654_435_761) | 1);
    // Uniform in [−a, a] has RMS a/√3.
    let a = noise_rms * 3f32.sqrt();
    for v in &mut y {
        *v += a * rng.next();
    }
    if let Some((u, at)) = user {
        for (v, &s) in y.iter_mut().skip(at).zip(u) {
            *v += s;
        }
    }
    y
}

/// The canceller's output for a far/mic pair on one clock, fed in `chunk`-sample pieces (far
/// first, as `listen`'s AEC thread drains the reference ring before each mic chunk).
pub fn cancel(
    cfg: &AecConfig,
    far: &[f32],
    mic: &[f32],
    chunk: usize,
) -> Result<(Vec<f32>, Vec<AecEvent>, AecStats), EvalError> {
    let mut aec = EchoCanceller::new(cfg, SampleRate::PIPELINE).map_err(EvalError::Aec)?;
    let mut out = Vec::with_capacity(mic.len() + aec.frame_size());
    let mut events = Vec::new();
    for (k, m) in mic.chunks(chunk.max(1)).enumerate() {
        let at = k * chunk.max(1);
        let f = far.get(at..(at + m.len()).min(far.len())).unwrap_or(&[]);
        aec.push_far(f, SampleIndex(at as u64));
        events.extend(
            aec.process(m, SampleIndex(at as u64), &mut out)
                .map_err(EvalError::Aec)?,
        );
    }
    // Flush the last partial frame by a jump of the clock (zero-padded, trimmed).
    let end = mic.len() as u64;
    aec.process(&[], SampleIndex(end + 1), &mut out)
        .map_err(EvalError::Aec)?;
    out.truncate(mic.len());
    Ok((out, events, aec.stats()))
}

/// ERLE in dB: mic energy over output energy, summed over the 10 ms frames from `from` to `to`
/// in which `activity` (the far end delayed by the path's bulk delay, i.e. where echo arrives)
/// has RMS above `floor`.
pub fn erle_db(
    activity: &[f32],
    mic: &[f32],
    out: &[f32],
    range: std::ops::Range<usize>,
    floor: f32,
) -> Option<f64> {
    let far = activity;
    let far_floor = floor;
    let from = range.start;
    let n = 160;
    let (mut e_in, mut e_out) = (0.0f64, 0.0f64);
    let mut start = from;
    while start + n <= mic.len().min(out.len()).min(far.len()).min(range.end) {
        let f = &far[start..start + n];
        let rms = (f.iter().map(|x| x * x).sum::<f32>() / n as f32).sqrt();
        if rms >= far_floor {
            e_in += mic[start..start + n]
                .iter()
                .map(|&x| f64::from(x * x))
                .sum::<f64>();
            e_out += out[start..start + n]
                .iter()
                .map(|&x| f64::from(x * x))
                .sum::<f64>();
        }
        start += n;
    }
    (e_in > 0.0 && e_out > 0.0).then(|| 10.0 * (e_in / e_out).log10())
}

/// `far` delayed by the path's bulk delay (where its echo arrives), for [`erle_db`].
pub fn delayed(far: &[f32], path: &EchoPath) -> Vec<f32> {
    let d = (path.delay_ms / 1000.0 * SampleRate::PIPELINE.hz() as f32).round() as usize;
    let mut v = vec![0.0; far.len()];
    if d < far.len() {
        v[d..].copy_from_slice(&far[..far.len() - d]);
    }
    v
}
