//! Whisper's log-mel front end, incremental.
//!
//! Frame `i` covers samples `[160 i, 160 i + 400)` with a periodic Hann window; its power
//! spectrum (201 bins, bins 1..=199 doubled as whisper.cpp and candle fold the mirrored half) goes
//! through the 80-bin filter bank and `log10(max(·, 1e-10))`. A frame depends only on its own 400
//! samples, so [`MelStream`] emits exactly the frames [`log_mel_frames`] computes offline on the
//! same samples, as soon as their last sample arrives. Whisper's normalisation
//! (`(max(x, max_all − 8) + 4) / 4`) needs the maximum over the whole input, so it is applied per
//! encoder window by [`normalize`], not per frame.
//!
//! [`HfMelFrontEnd`] is the other Whisper convention, Hugging Face's `WhisperFeatureExtractor`
//! (and OpenAI's): the plain one-sided power `|rfft|²` (no doubled bins), frames centred by
//! reflect padding, the Slaney filter bank of [`slaney_filters`], all in f64 as numpy computes it,
//! normalised by [`normalize_f64`]. Smart Turn was trained on these features, and its 8-bit
//! model is so sensitive to them (1e-6 of noise moves some clips' probability by 0.1) that only
//! numpy's precision reproduces its reference outputs.

use candle_core::{Device, Tensor};

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frequency bins of a 400-point real FFT.
pub const N_FREQ: usize = N_FFT / 2 + 1;

/// The fixed parts of the front end: window, DFT matrix, filter bank.
#[derive(Debug, Clone)]
pub struct MelFrontEnd {
    hann: Vec<f32>,
    /// `(N_FFT, 2 N_FREQ)`: cosine columns then sine columns of the real DFT.
    dft: Tensor,
    /// `(N_FREQ, n_mels)`.
    filters: Tensor,
    /// Whisper's mirrored-half folding: bins 1..=199 doubled.
    fold: Tensor,
    n_mels: usize,
}

impl MelFrontEnd {
    /// `filters`: the `(n_mels, 201)` row-major filter bank (`melfilters.bytes`).
    pub fn new(filters: &[f32]) -> Result<Self, candle_core::Error> {
        if filters.is_empty() || !filters.len().is_multiple_of(N_FREQ) {
            candle_core::bail!(
                "filter bank of {} values is not n_mels x {N_FREQ}",
                filters.len()
            );
        }
        let n_mels = filters.len() / N_FREQ;
        let hann = (0..N_FFT)
            .map(|i| {
                (0.5 * (1.0 - (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())) as f32
            })
            .collect();
        let m: Vec<f32> = dft_matrix().into_iter().map(|v| v as f32).collect();
        let dft = Tensor::from_vec(m, (N_FFT, 2 * N_FREQ), &Device::Cpu)?;
        let filters = Tensor::from_slice(filters, (n_mels, N_FREQ), &Device::Cpu)?
            .t()?
            .contiguous()?;
        let mut fold = vec![2f32; N_FREQ];
        fold[0] = 1.0;
        fold[N_FFT / 2] = 1.0;
        let fold = Tensor::from_vec(fold, (1, N_FREQ), &Device::Cpu)?;
        Ok(Self {
            hann,
            dft,
            filters,
            fold,
            n_mels,
        })
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Raw log10 mel energies of `n` frames hopping through `samples` (frame-major). The DFT and
    /// filter bank are candle matmuls, so they run optimised even in debug builds.
    fn frames(&self, samples: &[f32], n: usize) -> Result<Vec<f32>, candle_core::Error> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut x = vec![0f32; n * N_FFT];
        for i in 0..n {
            let src = &samples[i * HOP..i * HOP + N_FFT];
            for (j, v) in x[i * N_FFT..(i + 1) * N_FFT].iter_mut().enumerate() {
                *v = src[j] * self.hann[j];
            }
        }
        let x = Tensor::from_vec(x, (n, N_FFT), &Device::Cpu)?;
        let y = x.matmul(&self.dft)?;
        let re = y.narrow(1, 0, N_FREQ)?;
        let im = y.narrow(1, N_FREQ, N_FREQ)?;
        let power = (re.sqr()? + im.sqr()?)?.broadcast_mul(&self.fold)?;
        let mel = power.matmul(&self.filters)?.maximum(1e-10f32)?.log()?;
        (mel * std::f64::consts::LOG10_E)?.flatten_all()?.to_vec1()
    }

    /// Offline: raw log-mel frames (frame-major) of every frame fully covered by `samples`.
    pub fn log_mel_frames(&self, samples: &[f32]) -> Result<Vec<f32>, candle_core::Error> {
        let n = if samples.len() >= N_FFT {
            (samples.len() - N_FFT) / HOP + 1
        } else {
            0
        };
        self.frames(samples, n)
    }

    /// Offline, whole clip: zero-pads the end so every sample lies in some frame, then
    /// normalises. Returns channel-major mel and the frame count.
    pub fn log_mel_padded(&self, samples: &[f32]) -> Result<(Vec<f32>, usize), candle_core::Error> {
        let mut s = samples.to_vec();
        s.extend(std::iter::repeat_n(0.0, N_FFT - HOP));
        let raw = self.log_mel_frames(&s)?;
        Ok(normalize(&raw, self.n_mels))
    }
}

/// `(N_FFT, 2 N_FREQ)` row-major: cosine columns then sine columns of the real DFT, in f64.
fn dft_matrix() -> Vec<f64> {
    let mut m = vec![0f64; N_FFT * 2 * N_FREQ];
    for n in 0..N_FFT {
        for k in 0..N_FREQ {
            // Reduce k·n mod N first so the angle stays exact for large products.
            let a = 2.0 * std::f64::consts::PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
            m[n * 2 * N_FREQ + k] = a.cos();
            m[n * 2 * N_FREQ + N_FREQ + k] = a.sin();
        }
    }
    m
}

/// The Slaney-scale, Slaney-normalised triangular mel filter bank of `librosa.filters.mel` and
/// Hugging Face's `mel_filter_bank(norm="slaney", mel_scale="slaney")` over `0 ..= sample_rate / 2`,
/// row-major `(n_mels, N_FREQ)` like `melfilters.bytes` (which OpenAI generated the same way), in
/// f64 as the references compute it.
pub fn slaney_filters(n_mels: usize, sample_rate: u32) -> Vec<f64> {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 27.0 / 6.4f64.ln();
    let hz_to_mel = |f: f64| {
        if f >= MIN_LOG_HZ {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() * logstep
        } else {
            3.0 * f / 200.0
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= MIN_LOG_MEL {
            MIN_LOG_HZ * ((m - MIN_LOG_MEL) / logstep).exp()
        } else {
            200.0 * m / 3.0
        }
    };
    let nyquist = f64::from(sample_rate / 2);
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    // Filter edges: n_mels + 2 points evenly spaced in mel (numpy linspace).
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f64; n_mels * N_FREQ];
    for m in 0..n_mels {
        let enorm = 2.0 / (edges[m + 2] - edges[m]);
        for k in 0..N_FREQ {
            let f = nyquist * k as f64 / (N_FREQ - 1) as f64;
            let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
            let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
            out[m * N_FREQ + k] = down.min(up).max(0.0) * enorm;
        }
    }
    out
}

/// Hugging Face's Whisper log-mel (`WhisperFeatureExtractor`, numpy backend), in f64: frames
/// centred by reflect padding, numpy's periodic Hann window, one-sided power, Slaney filters,
/// log10 with a 1e-10 floor.
#[derive(Debug, Clone)]
pub struct HfMelFrontEnd {
    hann: Vec<f64>,
    /// `(N_FFT, 2 N_FREQ)` f64.
    dft: Tensor,
    /// `(N_FREQ, n_mels)` f64.
    filters: Tensor,
    n_mels: usize,
}

impl HfMelFrontEnd {
    pub fn new(n_mels: usize, sample_rate: u32) -> Result<Self, candle_core::Error> {
        // numpy `hanning(N + 1)[:-1]`, written as numpy writes it (0.5 + 0.5 cos(pi n / N) over
        // n = -N, -N + 2, ...) so the window is bit-identical.
        let hann = (0..N_FFT)
            .map(|i| {
                let n = 2.0 * i as f64 - N_FFT as f64;
                0.5 + 0.5 * (std::f64::consts::PI * n / N_FFT as f64).cos()
            })
            .collect();
        let dft = Tensor::from_vec(dft_matrix(), (N_FFT, 2 * N_FREQ), &Device::Cpu)?;
        let filters = Tensor::from_vec(
            slaney_filters(n_mels, sample_rate),
            (n_mels, N_FREQ),
            &Device::Cpu,
        )?
        .t()?
        .contiguous()?;
        Ok(Self {
            hann,
            dft,
            filters,
            n_mels,
        })
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Raw log10 mel frames (frame-major, f64) centred on every hop multiple
    /// (`torch.stft(center=True)`): `samples` is reflect-padded by `N_FFT / 2` on both sides,
    /// giving `len / HOP + 1` frames. Needs more than `N_FFT / 2` samples.
    pub fn log_mel_centered(&self, samples: &[f32]) -> Result<Vec<f64>, candle_core::Error> {
        let pad = N_FFT / 2;
        let len = samples.len();
        if len <= pad {
            candle_core::bail!("reflect padding needs more than {pad} samples, got {len}");
        }
        // numpy `reflect`: the edge sample is not repeated.
        let mut s: Vec<f64> = Vec::with_capacity(len + 2 * pad);
        s.extend(samples[1..=pad].iter().rev().map(|&v| f64::from(v)));
        s.extend(samples.iter().map(|&v| f64::from(v)));
        s.extend(
            samples[len - 1 - pad..len - 1]
                .iter()
                .rev()
                .map(|&v| f64::from(v)),
        );
        let n = (s.len() - N_FFT) / HOP + 1;
        let mut x = vec![0f64; n * N_FFT];
        for i in 0..n {
            let src = &s[i * HOP..i * HOP + N_FFT];
            for (j, v) in x[i * N_FFT..(i + 1) * N_FFT].iter_mut().enumerate() {
                *v = src[j] * self.hann[j];
            }
        }
        let x = Tensor::from_vec(x, (n, N_FFT), &Device::Cpu)?;
        let y = x.matmul(&self.dft)?;
        let re = y.narrow(1, 0, N_FREQ)?;
        let im = y.narrow(1, N_FREQ, N_FREQ)?;
        let power = (re.sqr()? + im.sqr()?)?;
        let mel: Vec<f64> = power.matmul(&self.filters)?.flatten_all()?.to_vec1()?;
        Ok(mel.into_iter().map(|v| v.max(1e-10).log10()).collect())
    }
}

/// [`normalize`] in f64 (numpy's order: clamp at max − 8, `(x + 4) / 4`, then round to f32),
/// returned channel-major `(n_mels, n_frames)`.
pub fn normalize_f64(raw: &[f64], n_mels: usize) -> (Vec<f32>, usize) {
    let n = raw.len() / n_mels;
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let floor = max - 8.0;
    let mut out = vec![0f32; n * n_mels];
    for i in 0..n {
        for j in 0..n_mels {
            out[j * n + i] = ((raw[i * n_mels + j].max(floor) + 4.0) / 4.0) as f32;
        }
    }
    (out, n)
}

/// Whisper's normalisation over a window of raw frames (frame-major), returned channel-major
/// `(n_mels, n_frames)` as the encoder wants it.
pub fn normalize(raw: &[f32], n_mels: usize) -> (Vec<f32>, usize) {
    let n = raw.len() / n_mels;
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let floor = max - 8.0;
    let mut out = vec![0f32; n * n_mels];
    for i in 0..n {
        for j in 0..n_mels {
            out[j * n + i] = (raw[i * n_mels + j].max(floor) + 4.0) / 4.0;
        }
    }
    (out, n)
}

/// Incremental front end: push samples in any chunk sizes, read the frames computed so far.
/// Frames can be dropped from the front (`drain_front`) as the streaming window slides; frame
/// indices stay absolute.
#[derive(Debug, Clone)]
pub struct MelStream {
    fe: MelFrontEnd,
    /// Samples not yet consumed by a complete frame.
    pending: Vec<f32>,
    /// Raw frames (frame-major); `frames[0..n_mels]` is frame `first_frame`.
    frames: Vec<f32>,
    first_frame: usize,
}

impl MelStream {
    pub fn new(fe: MelFrontEnd) -> Self {
        Self {
            fe,
            pending: Vec::new(),
            frames: Vec::new(),
            first_frame: 0,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.fe.n_mels
    }

    pub fn push(&mut self, samples: &[f32]) -> Result<(), candle_core::Error> {
        self.pending.extend_from_slice(samples);
        if self.pending.len() < N_FFT {
            return Ok(());
        }
        let n = (self.pending.len() - N_FFT) / HOP + 1;
        let f = self.fe.frames(&self.pending, n)?;
        self.frames.extend_from_slice(&f);
        self.pending.drain(..n * HOP);
        Ok(())
    }

    /// Index one past the last complete frame.
    pub fn end_frame(&self) -> usize {
        self.first_frame + self.frames.len() / self.fe.n_mels
    }

    pub fn first_frame(&self) -> usize {
        self.first_frame
    }

    /// Raw frames `[from, end_frame())` (frame-major); `from` is clamped to what is kept.
    pub fn frames_from(&self, from: usize) -> &[f32] {
        let from = from.clamp(self.first_frame, self.end_frame());
        &self.frames[(from - self.first_frame) * self.fe.n_mels..]
    }

    /// Forget frames before `frame`.
    pub fn drain_front(&mut self, frame: usize) {
        let frame = frame.clamp(self.first_frame, self.end_frame());
        self.frames
            .drain(..(frame - self.first_frame) * self.fe.n_mels);
        self.first_frame = frame;
    }

    /// Flush the tail at end of stream: zero-pad so the last samples fall inside a frame, exactly
    /// as [`MelFrontEnd::log_mel_padded`] does offline.
    pub fn finish(&mut self) -> Result<(), candle_core::Error> {
        // Samples past the last complete frame's hop start, not yet inside any frame's first hop.
        if self.pending.len() > N_FFT - HOP {
            let pad = vec![0f32; N_FFT - HOP];
            self.push(&pad)?;
        }
        self.pending.clear();
        Ok(())
    }

    pub fn reset(&mut self) {
        self.pending.clear();
        self.frames.clear();
        self.first_frame = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic non-trivial filter bank (triangles) so the test needs no model files.
    fn filters() -> Vec<f32> {
        let mut f = vec![0f32; 80 * N_FREQ];
        for j in 0..80 {
            let c: usize = 1 + j * 2;
            for k in c.saturating_sub(3)..(c + 4).min(N_FREQ) {
                f[j * N_FREQ + k] = 1.0 - (k as f32 - c as f32).abs() / 4.0;
            }
        }
        f
    }

    fn signal(n: usize) -> Vec<f32> {
        let mut seed = 12345u32;
        (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                0.3 * (i as f32 * 0.05).sin() + 0.1 * noise
            })
            .collect()
    }

    #[test]
    fn streaming_equals_offline_for_any_chunking() {
        let f = filters();
        let s = signal(16000 + 123);
        let fe = MelFrontEnd::new(&f).unwrap();
        let offline = fe.log_mel_frames(&s).unwrap();
        assert_eq!(offline.len() / 80, (s.len() - N_FFT) / HOP + 1);
        for chunk in [1usize, 7, 160, 161, 400, 512, 4000, s.len()] {
            let mut m = MelStream::new(fe.clone());
            for c in s.chunks(chunk) {
                m.push(c).unwrap();
            }
            let got = m.frames_from(0);
            assert_eq!(got.len(), offline.len(), "chunk {chunk}");
            let diff = got
                .iter()
                .zip(&offline)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Batched matmuls may sum in a different order per batch size: allow float noise.
            assert!(diff < 1e-4, "chunk {chunk}: max abs diff {diff}");
            m.finish().unwrap();
            let (padded, n) = fe.log_mel_padded(&s).unwrap();
            let (streamed, n2) = normalize(m.frames_from(0), 80);
            assert_eq!(n, n2);
            let diff = padded
                .iter()
                .zip(&streamed)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "chunk {chunk}: padded max abs diff {diff}");
        }
    }

    #[test]
    fn pure_tone_peaks_in_its_band() {
        let f = filters();
        // Bin 41 of a 400-point FFT at 16 kHz = 1640 Hz; filter 20 is centred on bin 41.
        let s: Vec<f32> = (0..4000)
            .map(|i| (2.0 * std::f32::consts::PI * 1640.0 * i as f32 / 16000.0).sin())
            .collect();
        let raw = MelFrontEnd::new(&f).unwrap().log_mel_frames(&s).unwrap();
        let fr = &raw[5 * 80..6 * 80];
        let best = fr.iter().enumerate().fold(
            (0, f32::MIN),
            |a, (i, v)| if *v > a.1 { (i, *v) } else { a },
        );
        assert_eq!(best.0, 20);
    }

    #[test]
    fn drain_keeps_absolute_indices() {
        let f = filters();
        let s = signal(8000);
        let mut m = MelStream::new(MelFrontEnd::new(&f).unwrap());
        m.push(&s).unwrap();
        let all = m.frames_from(0).to_vec();
        m.drain_front(10);
        assert_eq!(m.first_frame(), 10);
        assert_eq!(m.frames_from(10), &all[10 * 80..]);
        assert_eq!(m.frames_from(0), &all[10 * 80..]);
    }
}
