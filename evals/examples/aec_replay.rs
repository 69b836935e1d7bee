//! Replays a `VOICERELAY_AEC_DUMP` directory (`near.wav`, `far.wav` as `listen` placed them on
//! the microphone's clock) through [`vr_aec::EchoCanceller`] offline, so a run on a real device
//! can be studied and settings tried without the device:
//!
//!     cargo run -p voicerelay-evals --example aec_replay -- DIR [key=value ...]
//!
//! `key=value` overrides `[aec]` settings (`filter_ms=256`, `delay.min_psr=4`). Prints, per
//! second of far-end activity, the lag of the strongest cross-correlation between far and near
//! (what the echo path really is) and the canceller's ERLE; writes `DIR/replay_out.wav`.

use std::path::PathBuf;

use vr_aec::{AecConfig, AecEvent, EchoCanceller};
use vr_core::{SampleIndex, SampleRate};

/// 10 ms microphone chunks, the far end 20 ms ahead (as the speaker callback runs ahead).
const CHUNK: usize = 160;
const FAR_AHEAD: usize = 320;
const MAX_LAG: i64 = 2400;
/// Report step: 250 ms.
const STEP: usize = 4_000;

fn read(path: &std::path::Path) -> Vec<f32> {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.into_samples::<f32>().map_while(Result::ok).collect()
}

/// Lag (near − far, samples) of the largest normalised cross-correlation in `[-MAX_LAG, MAX_LAG]`
/// over `near[from..to]`, and its value.
fn best_lag(far: &[f32], near: &[f32], from: usize, to: usize) -> (i64, f32) {
    let e_near: f32 = near[from..to].iter().map(|x| x * x).sum();
    let mut best = (0, 0.0f32);
    for lag in -MAX_LAG..=MAX_LAG {
        let mut dot = 0.0f32;
        let mut e_far = 0.0f32;
        for (i, &n) in near.iter().enumerate().take(to).skip(from) {
            let j = i as i64 - lag;
            if j >= 0 && (j as usize) < far.len() {
                let f = far[j as usize];
                dot += f * n;
                e_far += f * f;
            }
        }
        let c = dot / (e_far * e_near).sqrt().max(1e-12);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: aec_replay DIR [key=value ...]"));
    let overrides: Vec<String> = args.collect();
    let mut table = toml::Table::try_from(AecConfig::default()).expect("config as TOML");
    for o in &overrides {
        let (k, v) = o.split_once('=').expect("key=value");
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .expect("TOML value")
            .remove("v")
            .expect("value");
        match k.split_once('.') {
            Some((section, key)) => {
                table[section]
                    .as_table_mut()
                    .expect("section")
                    .insert(key.into(), value);
            }
            None => {
                table.insert(k.into(), value);
            }
        }
    }
    let cfg: AecConfig = table.try_into().expect("valid [aec] settings");
    let near = read(&dir.join("near.wav"));
    let far = read(&dir.join("far.wav"));
    println!(
        "near {:.1} s, far {:.1} s, overrides {overrides:?}",
        near.len() as f32 / 16_000.0,
        far.len() as f32 / 16_000.0
    );
    let mut aec = EchoCanceller::new(&cfg, SampleRate::PIPELINE).expect("canceller");
    let mut out = Vec::with_capacity(near.len());
    let mut far_pushed = 0;
    for (k, chunk) in near.chunks(CHUNK).enumerate() {
        let at = k * CHUNK;
        let want = (at + chunk.len() + FAR_AHEAD).min(far.len());
        if want > far_pushed {
            aec.push_far(&far[far_pushed..want], SampleIndex(far_pushed as u64));
            far_pushed = want;
        }
        for e in aec
            .process(chunk, SampleIndex(at as u64), &mut out)
            .expect("process")
        {
            let AecEvent::DelayChanged { at, change } = e else {
                continue;
            };
            println!(
                "  {:>6.2} s: delay {} → {} samples (psr {:.1})",
                at.0 as f32 / 16_000.0,
                change.previous.map_or("none".into(), |p| p.to_string()),
                change.delay,
                change.psr
            );
        }
    }
    // The live run's own output, where the dump has it.
    let live = std::fs::metadata(dir.join("out.wav"))
        .is_ok()
        .then(|| read(&dir.join("out.wav")));
    println!("     s  far_rms  lag  corr  ERLE(dB, this 250 ms)  live ERLE");
    for s in 0..near.len() / STEP {
        let (a, b) = (s * STEP, (s + 1) * STEP);
        if b > far.len() || b > out.len() {
            break;
        }
        let far_rms = (far[a..b].iter().map(|x| x * x).sum::<f32>() / STEP as f32).sqrt();
        if far_rms < 1e-3 {
            continue;
        }
        let (lag, c) = best_lag(&far, &near, a, b);
        let e_in: f32 = near[a..b].iter().map(|x| x * x).sum();
        let e_out: f32 = out[a..b].iter().map(|x| x * x).sum();
        let live_erle = live
            .as_ref()
            .filter(|l| l.len() >= b)
            .map(|l| {
                let e: f32 = l[a..b].iter().map(|x| x * x).sum();
                format!("{:>6.1}", 10.0 * (e_in / e.max(1e-20)).log10())
            })
            .unwrap_or_default();
        println!(
            "{:>6.2} {far_rms:>8.4} {lag:>4} {c:>5.3} {:>6.1}  {live_erle}",
            (s * STEP) as f32 / 16_000.0,
            10.0 * (e_in / e_out.max(1e-20)).log10()
        );
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(dir.join("replay_out.wav"), spec).expect("write");
    for v in out {
        w.write_sample(v).expect("write");
    }
    w.finalize().expect("finalize");
    println!("stats: {:?}", aec.stats());
}
