//! Resampler accuracy on pure tones and streaming = whole-buffer equivalence.

use std::f64::consts::PI;
use voicerelay_audio::resample::{resample_to_mono, StreamResampler};
use voicerelay_audio::AudioFormat;
use vr_core::SampleRate;

/// Least-squares fit of `a·sin(2πft) + b·cos(2πft) + c` at a fixed `f`; returns amplitude and
/// residual power.
#[allow(clippy::needless_range_loop)]
fn fit_at(x: &[f32], rate: f64, f: f64) -> (f64, f64) {
    // Normal equations for the three regressors.
    let mut m = [[0f64; 3]; 3];
    let mut v = [0f64; 3];
    for (n, &y) in x.iter().enumerate() {
        let t = n as f64 / rate;
        let r = [(2.0 * PI * f * t).sin(), (2.0 * PI * f * t).cos(), 1.0];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
            v[i] += r[i] * f64::from(y);
        }
    }
    let coef = solve3(m, v);
    let mut resid = 0.0;
    for (n, &y) in x.iter().enumerate() {
        let t = n as f64 / rate;
        let model =
            coef[0] * (2.0 * PI * f * t).sin() + coef[1] * (2.0 * PI * f * t).cos() + coef[2];
        resid += (f64::from(y) - model).powi(2);
    }
    (
        (coef[0].powi(2) + coef[1].powi(2)).sqrt(),
        resid / x.len() as f64,
    )
}

#[allow(clippy::needless_range_loop)] // index form mirrors the matrix algebra
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let piv = (col..3)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap();
        m.swap(col, piv);
        v.swap(col, piv);
        for row in 0..3 {
            if row != col {
                let k = m[row][col] / m[col][col];
                for c in 0..3 {
                    m[row][c] -= k * m[col][c];
                }
                v[row] -= k * v[col];
            }
        }
    }
    [v[0] / m[0][0], v[1] / m[1][1], v[2] / m[2][2]]
}

/// Frequency estimate: the `f` that minimises the residual. A 0.1 Hz grid over ±5 Hz finds the
/// main lobe (the residual has sidelobes every 1/T Hz), golden-section search then refines it.
fn estimate_frequency(x: &[f32], rate: f64, guess: f64) -> f64 {
    let coarse = (-50..=50)
        .map(|k| guess + f64::from(k) * 0.1)
        .min_by(|&a, &b| fit_at(x, rate, a).1.total_cmp(&fit_at(x, rate, b).1))
        .unwrap();
    let (mut lo, mut hi) = (coarse - 0.1, coarse + 0.1);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..40 {
        let a = hi - g * (hi - lo);
        let b = lo + g * (hi - lo);
        if fit_at(x, rate, a).1 < fit_at(x, rate, b).1 {
            hi = b;
        } else {
            lo = a;
        }
    }
    (lo + hi) / 2.0
}

fn stereo_sine(rate: u32, seconds: f64, freq: f64, amp: f64) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let s = (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32;
        out.push(s);
        out.push(s);
    }
    out
}

#[test]
fn one_khz_stereo_at_44_1_and_48_khz_comes_out_clean_at_16_khz_mono() {
    let amp = 0.5;
    for rate in [44_100u32, 48_000] {
        let input = stereo_sine(rate, 1.0, 1000.0, amp);
        let fmt = AudioFormat {
            rate: SampleRate(rate),
            channels: 2,
        };
        let out = resample_to_mono(&input, fmt, SampleRate::PIPELINE).unwrap();
        assert_eq!(
            out.len(),
            16_000,
            "{rate} Hz: one second in, one second out"
        );
        // Judge the steady state: skip 50 ms at each end, where the FFT filter sees the edges.
        let mid = &out[800..out.len() - 800];
        let f = estimate_frequency(mid, 16_000.0, 1000.0);
        let (a, resid) = fit_at(mid, 16_000.0, f);
        let gain_db = 20.0 * (a / amp).log10();
        let snr_db = 10.0 * ((a * a / 2.0) / resid).log10();
        eprintln!(
            "{rate} Hz -> 16 kHz: f = {f:.4} Hz, gain = {gain_db:+.4} dB, SNR = {snr_db:.1} dB"
        );
        assert!((f - 1000.0).abs() < 1.0, "{rate}: frequency {f}");
        assert!(gain_db.abs() < 0.5, "{rate}: gain {gain_db} dB");
        assert!(snr_db > 60.0, "{rate}: SNR {snr_db} dB");
    }
}

#[test]
fn streaming_equals_whole_buffer_for_any_chunking() {
    let cases = [
        (
            AudioFormat {
                rate: SampleRate(48_000),
                channels: 2,
            },
            SampleRate::PIPELINE,
        ),
        (
            AudioFormat {
                rate: SampleRate(44_100),
                channels: 1,
            },
            SampleRate::PIPELINE,
        ),
        (
            AudioFormat {
                rate: SampleRate(22_050),
                channels: 1,
            },
            SampleRate::OPUS,
        ),
        (
            AudioFormat {
                rate: SampleRate(16_000),
                channels: 2,
            },
            SampleRate::PIPELINE,
        ),
    ];
    for (fmt, to) in cases {
        let ch = usize::from(fmt.channels);
        // A chirp plus a second tone per channel: rich enough that misaligned chunks would show.
        let frames = 23_456usize;
        let input: Vec<f32> = (0..frames * ch)
            .map(|i| {
                let (n, c) = ((i / ch) as f32, (i % ch) as f32);
                0.3 * (n * n * 1e-6).sin() + 0.2 * (n * 0.05 * (c + 1.0)).cos()
            })
            .collect();
        let whole = resample_to_mono(&input, fmt, to).unwrap();
        let expected_len = (frames as u64 * u64::from(to.hz())).div_ceil(u64::from(fmt.rate.hz()));
        assert_eq!(whole.len() as u64, expected_len);
        for chunk_frames in [1usize, 7, 160, 441, 1024, 4000, frames] {
            let mut r = StreamResampler::new(fmt, to).unwrap();
            let mut streamed = Vec::new();
            for part in input.chunks(chunk_frames * ch) {
                r.push_into(part, &mut streamed).unwrap();
            }
            r.finish(|s| streamed.extend_from_slice(s)).unwrap();
            assert_eq!(streamed.len(), whole.len(), "{fmt:?} chunk {chunk_frames}");
            let max_diff = streamed
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-6,
                "{fmt:?}->{to} chunk {chunk_frames}: max diff {max_diff}"
            );
        }
    }
}
