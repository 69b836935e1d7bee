//! Per-update cost of streaming Whisper tiny.en after 2 s and after 20 s of ongoing speech.
//!
//! The stream is fed real corpus speech up to the mark (outside the timing), its state is
//! snapshotted, and each iteration restores the snapshot and pushes the next update interval (one update:
//! encode the window, decode with the committed prefix forced). Because the window is bounded,
//! the 20 s cost should stay close to the 2 s cost; the ratio is printed at the end (target
//! ≤ 1.3×), both measured in the same run.
//!
//! Second pair: one greedy decode of 8 s of speech (a full transcript, ~25 tokens, on the same
//! encoder output) with the self-attention KV cache and without it (every step re-runs the
//! whole token sequence, as candle's decoder does); the speed-up ratio is printed.

extern crate voicerelay_asr as vr_asr;

use criterion::{BatchSize, Criterion};
use std::time::{Duration, Instant};
use vr_asr::config::AsrConfig;
use vr_asr::models::whisper::load_configured;
use vr_asr::stream::WhisperStream;
use vr_asr::StreamingRecognizer;

fn speech(min_samples: usize) -> Option<Vec<f32>> {
    let dir = vr_core::paths::corpus_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.jsonl")).ok()?;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let wav = dir.join(v["wav"].as_str()?);
        let mut r = hound::WavReader::open(&wav).ok()?;
        if r.spec().sample_rate != 16000 || r.spec().channels != 1 {
            continue;
        }
        out.extend(
            r.samples::<i16>()
                .filter_map(Result::ok)
                .map(|s| s as f32 / 32768.0),
        );
        if out.len() >= min_samples {
            return Some(out);
        }
    }
    None
}

fn main() {
    // Exactly one update: the default update interval's worth of audio.
    let step = AsrConfig::default().update_interval_ms as usize * 16;
    let Some(audio) = speech(20 * 16000 + step) else {
        eprintln!(
            "SKIP: corpus not found at {}",
            vr_core::paths::corpus_dir().display()
        );
        return;
    };
    // No VAD attached: every sample counts as speech, so the utterance goes on for 20 s.
    let cfg = AsrConfig::default();
    let store = match vr_core::ModelStore::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let model = match load_configured(&cfg, &store) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let mut rec = match WhisperStream::new(model, cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut medians = Vec::new();
    for secs in [2usize, 20] {
        rec.reset();
        let mark = secs * 16000;
        for chunk in audio[..mark].chunks(1600) {
            let _ = rec.push(chunk);
        }
        let snap = rec.state().clone();
        let next = &audio[mark..mark + step];
        c.bench_function(&format!("whisper_tiny_en_update_after_{secs}s"), |b| {
            b.iter_batched(
                || snap.clone(),
                |st| {
                    rec.set_state(st);
                    rec.push(next)
                },
                BatchSize::SmallInput,
            )
        });
        // Same measurement by hand for the ratio (criterion does not compare two functions).
        let mut times = Vec::new();
        for _ in 0..7 {
            rec.set_state(snap.clone());
            let t = Instant::now();
            let _ = rec.push(next);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let st = rec.last_stats();
        println!(
            "after {secs:>2} s: median update {:.1} ms (window {} frames, {} forced + {} new tokens)",
            times[3] * 1e3,
            st.window_frames,
            st.forced_tokens,
            st.new_tokens
        );
        medians.push(times[3]);
    }
    println!(
        "per-update cost ratio 20 s / 2 s = {:.2}x (target <= 1.3x)",
        medians[1] / medians[0]
    );

    let model = rec.model_mut();
    let clip = &audio[..8 * 16000];
    let enc = match model
        .front_end()
        .log_mel_padded(clip)
        .map_err(vr_asr::AsrError::from)
        .and_then(|(mel, n)| Ok((model.encode(&mel, n)?, n)))
    {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    let (enc, n) = enc;
    let mut decode_medians = Vec::new();
    for cached in [true, false] {
        model.use_kv_cache = cached;
        let name = if cached { "with" } else { "without" };
        c.bench_function(&format!("whisper_tiny_en_decode_8s_{name}_kv_cache"), |b| {
            b.iter(|| model.decode(&enc, &[], &[], false, n, 224))
        });
        let mut times = Vec::new();
        let mut toks = 0;
        for _ in 0..5 {
            let t = Instant::now();
            if let Ok(d) = model.decode(&enc, &[], &[], false, n, 224) {
                toks = d.tokens.len();
            }
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "decode {name} KV cache: median {:.1} ms for {toks} tokens",
            times[2] * 1e3
        );
        decode_medians.push(times[2]);
    }
    model.use_kv_cache = true;
    println!(
        "decode speed-up from the KV cache = {:.2}x (without / with)",
        decode_medians[1] / decode_medians[0]
    );
    c.final_summary();
}
