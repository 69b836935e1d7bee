//! Silero VAD cost per 32 ms chunk against real time.
//!
//! `silero_chunk` times one model step (512 samples); `silero_push_4000` times a streaming push of
//! 4000 samples (250 ms, the size a capture thread might hand over), buffering included. Both
//! report throughput in samples/s: real time is 16 000 samples/s, so the speed-up over real time
//! is the throughput divided by 16 000. The same run then prints that ratio from a plain timed
//! loop so the figure is on one line.
//!
//! Run: `cargo bench -p voicerelay-asr --bench vad`.
use criterion::{black_box, criterion_group, Criterion, Throughput};
use std::sync::Arc;
use std::time::Instant;
use voicerelay_asr::models::silero::{Silero, CHUNK};
use voicerelay_asr::vad::{SileroVad, VadConfig};

/// Speech-like test signal: a few harmonics with a slow amplitude envelope plus noise, so the
/// LSTM state moves as it would on real audio.
fn signal(n: usize) -> Vec<f32> {
    let mut noise = vr_core::rng::Xorshift32::new(0x9e37_79b9);
    (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let voiced: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
                .sum();
            0.1 * env * voiced + 0.005 * noise.next_centred()
        })
        .collect()
}

fn model() -> Arc<Silero> {
    let store = vr_core::ModelStore::from_env().unwrap_or_else(|e| panic!("model store: {e}"));
    Arc::new(Silero::from_store(&store).unwrap_or_else(|e| panic!("silero: {e}")))
}

fn bench(c: &mut Criterion) {
    let model = model();
    let audio = signal(16_000 * 4);
    let mut g = c.benchmark_group("vad");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("silero_chunk", |b| {
        let mut state = model.new_state().unwrap();
        let mut k = 0usize;
        let n_chunks = audio.len() / CHUNK;
        b.iter(|| {
            let chunk: &[f32; CHUNK] = audio[k * CHUNK..(k + 1) * CHUNK].try_into().unwrap();
            k = (k + 1) % n_chunks;
            black_box(model.forward_chunk(&mut state, chunk).unwrap())
        })
    });
    g.throughput(Throughput::Elements(4000));
    g.bench_function("silero_push_4000", |b| {
        let mut vad = SileroVad::new(model.clone(), VadConfig::default()).unwrap();
        let mut k = 0usize;
        let n_blocks = audio.len() / 4000;
        b.iter(|| {
            let block = &audio[k * 4000..(k + 1) * 4000];
            k = (k + 1) % n_blocks;
            black_box(vad.push(block).unwrap())
        })
    });
    g.finish();
}

/// Median per-chunk time over repeated passes, as a fraction of the chunk's 32 ms.
fn real_time_summary() {
    let model = model();
    let audio = signal(16_000 * 10);
    let mut per_chunk = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        black_box(model.probabilities(&audio).unwrap());
        per_chunk.push(t.elapsed().as_secs_f64() / (audio.len() / CHUNK) as f64);
    }
    per_chunk.sort_by(f64::total_cmp);
    let med = per_chunk[per_chunk.len() / 2];
    let chunk_s = CHUNK as f64 / 16_000.0;
    println!(
        "silero real-time summary: {:.3} ms per 32 ms chunk = {:.4} x real time ({:.0}x faster than real time)",
        med * 1e3,
        med / chunk_s,
        chunk_s / med
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    real_time_summary();
    Criterion::default().configure_from_args().final_summary();
}
