//! Per-chunk cost of the Moonshine streaming encoder against stream position, next to the
//! baseline a non-streaming encoder is stuck with: re-encoding the whole prefix for every chunk.
//!
//! Model: tiny-sized random weights (320 wide, 1280 MLP, 6 layers, 8 heads, the published window
//! layout), so the figures reflect the real tiny encoder's arithmetic. Target: streaming cost per
//! 80 ms chunk at 60 s within 1.1x of the cost at 2 s; the re-encode baseline grows linearly.
//!
//! `cargo bench -p voicerelay-asr --bench moonshine_encoder` prints criterion figures and a
//! cost-vs-position table (median of repeated runs, same process, same machine state).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, BatchSize, Criterion};
use rand::{Rng, SeedableRng};
use voicerelay_asr::models::moonshine_streaming::{Config, MoonshineStreaming};
use voicerelay_asr::moonshine::StreamingEncoder;

const RATE: usize = 16_000;
const CHUNK: usize = 1280; // 80 ms
const POSITIONS_S: [usize; 4] = [2, 10, 30, 60];

fn tiny_random() -> Arc<MoonshineStreaming> {
    let cfg = r#"{
        "encoder_config": {"hidden_size": 320, "intermediate_size": 1280, "num_hidden_layers": 6,
            "num_attention_heads": 8, "num_key_value_heads": 8,
            "sliding_windows": [[16,4],[16,4],[16,0],[16,0],[16,4],[16,4]]},
        "vocab_size": 64, "hidden_size": 320, "intermediate_size": 1280, "num_hidden_layers": 1,
        "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 4096,
        "decoder_start_token_id": 1
    }"#;
    let config = Config::from_json(cfg).expect("bench config");
    let (c, i, v) = (320usize, 1280usize, 64usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.encoder.embedder.comp.log_k".into(), vec![]),
        ("model.encoder.embedder.linear.weight".into(), vec![c, 80]),
        (
            "model.encoder.embedder.conv1.weight".into(),
            vec![2 * c, c, 5],
        ),
        ("model.encoder.embedder.conv1.bias".into(), vec![2 * c]),
        (
            "model.encoder.embedder.conv2.weight".into(),
            vec![c, 2 * c, 5],
        ),
        ("model.encoder.embedder.conv2.bias".into(), vec![c]),
        ("model.encoder.final_norm.gamma".into(), vec![c]),
        ("model.decoder.embed_tokens.weight".into(), vec![v, c]),
        ("model.decoder.pos_emb.weight".into(), vec![4096, c]),
        ("model.decoder.norm.weight".into(), vec![c]),
        ("proj_out.weight".into(), vec![v, c]),
    ];
    for l in 0..6 {
        let p = format!("model.encoder.layers.{l}");
        for n in ["q", "k", "v", "o"] {
            shapes.push((format!("{p}.self_attn.{n}_proj.weight"), vec![c, c]));
        }
        shapes.push((format!("{p}.mlp.fc1.weight"), vec![i, c]));
        shapes.push((format!("{p}.mlp.fc1.bias"), vec![i]));
        shapes.push((format!("{p}.mlp.fc2.weight"), vec![c, i]));
        shapes.push((format!("{p}.mlp.fc2.bias"), vec![c]));
        shapes.push((format!("{p}.input_layernorm.gamma"), vec![c]));
        shapes.push((format!("{p}.post_attention_layernorm.gamma"), vec![c]));
    }
    let p = "model.decoder.layers.0";
    for a in ["self_attn", "encoder_attn"] {
        for n in ["q", "k", "v", "o"] {
            shapes.push((format!("{p}.{a}.{n}_proj.weight"), vec![c, c]));
        }
    }
    shapes.push((format!("{p}.mlp.fc1.weight"), vec![2 * i, c]));
    shapes.push((format!("{p}.mlp.fc1.bias"), vec![2 * i]));
    shapes.push((format!("{p}.mlp.fc2.weight"), vec![c, i]));
    shapes.push((format!("{p}.mlp.fc2.bias"), vec![c]));
    for n in [
        "input_layernorm",
        "post_attention_layernorm",
        "final_layernorm",
    ] {
        shapes.push((format!("{p}.{n}.weight"), vec![c]));
    }
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .map(|(n, s)| {
            let fan_in = s.iter().skip(1).product::<usize>().max(1) as f64;
            let std = if s.len() >= 2 { fan_in.powf(-0.5) } else { 0.1 };
            let t = Tensor::randn(0f32, std as f32, s, &dev).expect("randn");
            (n, t)
        })
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    Arc::new(MoonshineStreaming::from_var_builder(config, vb, Path::new("random")).expect("model"))
}

fn audio(seconds: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    (0..seconds * RATE + 4 * CHUNK)
        .map(|i| 0.3 * (i as f32 * 0.05).sin() + rng.gen_range(-0.05..0.05))
        .collect()
}

/// A streaming encoder that has consumed `seconds` of audio (fed in 1 s pieces: same state).
fn encoder_at(model: &Arc<MoonshineStreaming>, audio: &[f32], seconds: usize) -> StreamingEncoder {
    let mut enc = StreamingEncoder::new(model.clone()).expect("encoder");
    for s in audio[..seconds * RATE].chunks(RATE) {
        enc.push(s).expect("push");
    }
    enc
}

fn median(mut f: impl FnMut() -> Duration, runs: usize) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[runs / 2]
}

fn bench(c: &mut Criterion) {
    let model = tiny_random();
    let audio = audio(*POSITIONS_S.last().unwrap_or(&60));
    let mut g = c.benchmark_group("moonshine_encoder_chunk_80ms");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    // Criterion covers both ends of the streaming curve and the cheap end of the baseline; the
    // table below covers every position for both (one 60 s re-encode alone takes seconds).
    for p in [2, 60] {
        let enc = encoder_at(&model, &audio, p);
        let chunk = &audio[p * RATE..p * RATE + CHUNK];
        g.bench_function(format!("streaming_at_{p}s"), |b| {
            b.iter_batched(
                || enc.clone(),
                |mut e| e.push(chunk).expect("push"),
                BatchSize::SmallInput,
            )
        });
    }
    for p in [2, 10] {
        let prefix = &audio[..p * RATE + CHUNK];
        g.bench_function(format!("reencode_prefix_at_{p}s"), |b| {
            b.iter(|| model.encode(prefix).expect("encode"))
        });
    }
    g.finish();
}

fn table() {
    let model = tiny_random();
    let audio = audio(*POSITIONS_S.last().unwrap_or(&60));
    // Streaming: encoders parked at every position, measured in interleaved rounds so machine
    // noise and allocator drift hit all positions alike.
    let encs: Vec<StreamingEncoder> = POSITIONS_S
        .iter()
        .map(|&p| encoder_at(&model, &audio, p))
        .collect();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); POSITIONS_S.len()];
    for _ in 0..41 {
        for (k, &p) in POSITIONS_S.iter().enumerate() {
            let chunk = &audio[p * RATE..p * RATE + CHUNK];
            let mut e = encs[k].clone();
            let t = Instant::now();
            e.push(chunk).expect("push");
            samples[k].push(t.elapsed());
        }
    }
    let streaming: Vec<Duration> = samples
        .into_iter()
        .map(|mut v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    let reencode: Vec<Duration> = POSITIONS_S
        .iter()
        .map(|&p| {
            let prefix = &audio[..p * RATE + CHUNK];
            median(
                || {
                    let t = Instant::now();
                    model.encode(prefix).expect("encode");
                    t.elapsed()
                },
                3,
            )
        })
        .collect();
    println!("\nper-80 ms-chunk encoder cost vs stream position (median):");
    println!(
        "{:>8} {:>14} {:>10} {:>18} {:>10}",
        "pos", "streaming", "vs 2 s", "re-encode prefix", "vs 2 s"
    );
    for (k, &p) in POSITIONS_S.iter().enumerate() {
        println!(
            "{:>6} s {:>11.3} ms {:>9.2}x {:>15.1} ms {:>9.1}x",
            p,
            streaming[k].as_secs_f64() * 1e3,
            streaming[k].as_secs_f64() / streaming[0].as_secs_f64(),
            reencode[k].as_secs_f64() * 1e3,
            reencode[k].as_secs_f64() / reencode[0].as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    table();
    Criterion::default().configure_from_args().final_summary();
}
