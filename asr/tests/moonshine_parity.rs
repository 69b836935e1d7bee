//! Parity of the candle Moonshine streaming port with the reference (transformers 5.23) on random
//! weights: offline encoder, decoder logits, greedy ids, and streaming encoder == offline encoder.

mod common;

use std::sync::Arc;

use candle_core::{DType, Tensor};
use common::{fixture_dir, goldens, max_abs_diff, MODELS};
use rand::{Rng, SeedableRng};
use voicerelay_asr::models::moonshine_streaming::MoonshineStreaming;
use voicerelay_asr::moonshine::StreamingEncoder;

/// Label and a generator of successive chunk sizes.
type ChunkSizes = Box<dyn FnMut() -> usize>;

fn load(model: &str) -> MoonshineStreaming {
    MoonshineStreaming::load(&fixture_dir(model)).expect("fixture model loads")
}

#[test]
fn offline_encoder_matches_reference() {
    for name in MODELS {
        let Some(g) = goldens(name) else { return };
        let m = load(name);
        for c in &g.clips {
            let ours = m.encode(&c.audio).expect("encode");
            let reference = &g.tensors[&format!("{}.encoder", c.id)];
            let d = max_abs_diff(&ours, reference);
            println!(
                "{name} {}: encoder {:?} max|diff| = {d:.3e}",
                c.id,
                ours.dims()
            );
            assert!(d <= 1e-4, "{name} {}: encoder diff {d}", c.id);
        }
    }
}

#[test]
fn decoder_logits_and_greedy_ids_match_reference() {
    for name in MODELS {
        let Some(g) = goldens(name) else { return };
        let m = load(name);
        for c in &g.clips {
            // Teacher-forced logits over a fixed prefix, on the reference encoder output.
            let enc_ref = &g.tensors[&format!("{}.encoder", c.id)];
            let tf_ids: Vec<u32> = g.tensors[&format!("{}.tf_ids", c.id)]
                .to_dtype(DType::U32)
                .and_then(|t| t.to_vec1())
                .expect("tf ids");
            let mut state = m.decoder.start(enc_ref).expect("decoder start");
            let tf = m
                .decoder
                .forward(&mut state, &tf_ids)
                .expect("decoder forward");
            let d_tf = max_abs_diff(&tf, &g.tensors[&format!("{}.tf_logits", c.id)]);

            // The same prefix fed one token at a time through the KV cache.
            let mut state = m.decoder.start(enc_ref).expect("decoder start");
            let steps: Vec<Tensor> = tf_ids
                .iter()
                .map(|&t| m.decoder.forward(&mut state, &[t]).expect("step"))
                .collect();
            let d_cached = max_abs_diff(&Tensor::cat(&steps, 0).expect("cat"), &tf);

            // Cached greedy decoding end to end from audio (our encoder).
            let enc = m.encode(&c.audio).expect("encode");
            let max_new = c.greedy_ids.len() - 1;
            let (ids, logits) = m.greedy(&enc, max_new).expect("greedy");
            let ref_logits = &g.tensors[&format!("{}.greedy_logits", c.id)];
            let d_greedy = max_abs_diff(&Tensor::stack(&logits, 0).expect("stack"), ref_logits);
            println!(
                "{name} {}: teacher-forced logits max|diff| = {d_tf:.3e}, cached-vs-batched {d_cached:.3e}, \
                 greedy-step logits {d_greedy:.3e}, ids {ids:?}",
                c.id
            );
            assert!(
                d_tf <= 1e-3,
                "{name} {}: teacher-forced logits diff {d_tf}",
                c.id
            );
            assert!(
                d_cached <= 1e-4,
                "{name} {}: cached decoding diff {d_cached}",
                c.id
            );
            assert!(
                d_greedy <= 1e-3,
                "{name} {}: greedy logits diff {d_greedy}",
                c.id
            );
            assert_eq!(ids, c.greedy_ids[1..], "{name} {}: greedy ids", c.id);
            assert_eq!(c.greedy_ids[0], m.config.decoder_start_token());
        }
    }
}

/// Pushes `audio` in the given chunk sizes; returns all frames and checks, after every push,
/// that exactly the frames whose right context has arrived were emitted.
fn stream(m: &Arc<MoonshineStreaming>, audio: &[f32], sizes: &mut dyn FnMut() -> usize) -> Tensor {
    let mut enc = StreamingEncoder::new(m.clone()).expect("streaming encoder");
    let la = enc.lookahead_frames();
    let fl = m.config.frame_len();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < audio.len() {
        let n = sizes().min(audio.len() - pos);
        if let Some(f) = enc.push(&audio[pos..pos + n]).expect("push") {
            out.push(f);
        }
        pos += n;
        // 50 Hz frames the front end can produce from `pos` samples: ceil((pos / 80) / 4).
        let t = (pos / fl).div_ceil(4);
        assert_eq!(
            enc.frames_emitted(),
            t.saturating_sub(la),
            "emitted frames after {pos} samples"
        );
    }
    if let Some(f) = enc.finish().expect("finish") {
        out.push(f);
    }
    Tensor::cat(&out, 0).expect("cat")
}

#[test]
fn streaming_encoder_equals_offline_for_any_chunking() {
    for name in MODELS {
        let Some(g) = goldens(name) else { return };
        let m = Arc::new(load(name));
        if name == "tiny_layout" {
            assert_eq!(m.config.encoder_lookahead(), 12, "tiny layout lookahead");
        }
        for c in &g.clips {
            let offline = m.encode(&c.audio).expect("encode");
            let reference = &g.tensors[&format!("{}.encoder", c.id)];
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let chunkings: Vec<(&str, ChunkSizes)> = vec![
                ("80 (1 frame)", Box::new(|| 80)),
                ("320 (20 ms)", Box::new(|| 320)),
                ("1280 (80 ms)", Box::new(|| 1280)),
                ("5328 (333 ms)", Box::new(|| 5328)),
                ("random 1..4000", Box::new(move || rng.gen_range(1..4000))),
            ];
            for (label, mut sizes) in chunkings {
                let s = stream(&m, &c.audio, &mut *sizes);
                let d = max_abs_diff(&s, &offline);
                let d_ref = max_abs_diff(&s, reference);
                let t = s.dim(0).expect("dim");
                let last = 13.min(t);
                let d_tail = max_abs_diff(
                    &s.narrow(0, t - last, last).expect("tail"),
                    &offline.narrow(0, t - last, last).expect("tail"),
                );
                println!(
                    "{name} {} chunks {label}: {t} frames, max|stream-offline| = {d:.3e} \
                     (last {last} frames {d_tail:.3e}), vs reference {d_ref:.3e}",
                    c.id
                );
                assert!(
                    d <= 1e-4 && d_ref <= 1e-4,
                    "{name} {} {label}: {d} / {d_ref}",
                    c.id
                );
            }
        }
    }
}

#[test]
fn streaming_encoder_state_stays_bounded() {
    let m = Arc::new(load("tiny_layout"));
    let mut enc = StreamingEncoder::new(m.clone()).expect("encoder");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let chunk = 320;
    let (mut early, mut late) = (0usize, 0usize);
    let seconds = 20;
    for i in 0..seconds * 50 {
        let audio: Vec<f32> = (0..chunk).map(|_| rng.gen_range(-0.3..0.3)).collect();
        enc.push(&audio).expect("push");
        let c = enc.cached_frames();
        if (50..250).contains(&i) {
            early = early.max(c);
        } else if i >= 250 {
            late = late.max(c);
        }
    }
    println!("cached frames: max over 1-5 s {early}, over 5-{seconds} s {late}");
    assert_eq!(enc.frames_emitted(), seconds * 50 - 12);
    assert!(late <= early, "state grew: {early} -> {late}");
    // Per layer at most left-1 + lookahead + 1 keys and lookahead + 1 waiting queries, plus
    // convolution context and one partial frame.
    let bound: usize = m
        .config
        .encoder_config
        .sliding_windows
        .iter()
        .map(|&(l, r)| l - 1 + 2 * (r.saturating_sub(1) + 1))
        .sum::<usize>()
        + 2 * 6
        + 1;
    assert!(late <= bound, "cached {late} > bound {bound}");
}

fn write_bad(
    name: &str,
    edit_config: impl Fn(&mut serde_json::Value),
    edit_tensors: impl Fn(&mut std::collections::HashMap<String, Tensor>),
) -> tempfile::TempDir {
    let src = fixture_dir(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("config"))
            .expect("json");
    edit_config(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write config");
    let mut ts =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .expect("load weights");
    edit_tensors(&mut ts);
    candle_core::safetensors::save(&ts, dir.path().join("model.safetensors"))
        .expect("save weights");
    dir
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let missing = "model.encoder.layers.3.self_attn.k_proj.weight";
    let dir = write_bad(
        "tiny_layout",
        |_| {},
        |t| {
            t.remove(missing);
        },
    );
    let e = MoonshineStreaming::load(dir.path())
        .expect_err("missing tensor")
        .to_string();
    println!("missing tensor: {e}");
    assert!(e.contains(missing) && e.contains("missing"), "{e}");

    let wrong = "model.decoder.layers.1.mlp.fc1.weight";
    let dir = write_bad(
        "tiny_layout",
        |_| {},
        |t| {
            t.insert(
                wrong.into(),
                Tensor::zeros((7, 40), DType::F32, &candle_core::Device::Cpu).expect("zeros"),
            );
        },
    );
    let e = MoonshineStreaming::load(dir.path())
        .expect_err("wrong shape")
        .to_string();
    println!("wrong shape: {e}");
    assert!(
        e.contains(wrong) && e.contains("[7, 40]") && e.contains("expected [160, 40]"),
        "{e}"
    );

    let dir = write_bad(
        "odd_rotary",
        |c| {
            c["encoder_config"]["bogus_window_field"] = serde_json::json!(3);
        },
        |_| {},
    );
    let e = MoonshineStreaming::load(dir.path())
        .expect_err("unknown field")
        .to_string();
    println!("unknown field: {e}");
    assert!(
        e.contains("bogus_window_field") && e.contains("config.json"),
        "{e}"
    );

    let dir = write_bad(
        "odd_rotary",
        |c| {
            c["encoder_config"]["sliding_windows"] = serde_json::json!([[8, 2], [4, 1]]);
        },
        |_| {},
    );
    let e = MoonshineStreaming::load(dir.path())
        .expect_err("window count")
        .to_string();
    println!("window count: {e}");
    assert!(e.contains("sliding_windows"), "{e}");

    let e = MoonshineStreaming::load(&fixture_dir("no_such_model"))
        .expect_err("absent")
        .to_string();
    assert!(e.contains("config.json"), "{e}");
}
