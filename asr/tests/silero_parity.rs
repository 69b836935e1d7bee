//! The candle Silero port against ONNX Runtime's output of the silero-vad 6.2.3 v6 ONNX model
//! (`tests/fixtures/silero_golden.json`, made by `scripts/silero_golden.sh`), and streaming
//! (any push size) against offline scoring.
#[path = "vad_common/mod.rs"]
mod common;

use rand::{Rng, SeedableRng};
use voicerelay_asr::vad::{SileroVad, VadConfig, VadEvent};

#[derive(serde::Deserialize)]
struct Golden {
    chunk: usize,
    context: usize,
    files: Vec<GoldenFile>,
}

#[derive(serde::Deserialize)]
struct GoldenFile {
    id: String,
    samples: usize,
    probs: Vec<f32>,
}

#[test]
fn candle_port_matches_onnx_runtime_within_0_01() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/silero_golden.json"
    ))
    .unwrap();
    let golden: Golden = serde_json::from_str(&text).unwrap();
    assert_eq!((golden.chunk, golden.context), (512, 64));
    assert!(golden.files.len() >= 3);
    let model = common::model();
    let mut worst = 0f32;
    let mut total = 0usize;
    for f in &golden.files {
        let audio = common::read_wav(&corpus, &f.id);
        assert_eq!(audio.len(), f.samples, "{}: corpus file changed", f.id);
        let probs = model.probabilities(&audio).unwrap();
        assert_eq!(probs.len(), f.probs.len(), "{}", f.id);
        let (k, diff) = probs
            .iter()
            .zip(&f.probs)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0, 0f32), |m, (k, d)| if d > m.1 { (k, d) } else { m });
        let mean = probs.iter().sum::<f32>() / probs.len() as f32;
        println!(
            "{}: {} chunks, mean prob {mean:.3}, max |candle - onnx| = {diff:.5} at chunk {k}",
            f.id,
            probs.len()
        );
        worst = worst.max(diff);
        total += probs.len();
    }
    println!("silero parity: {total} chunks, max abs diff {worst:.5}");
    assert!(worst <= 0.01, "max abs diff {worst} > 0.01");
}

#[test]
fn streaming_equals_offline_for_any_push_size() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    let model = common::model();
    // Noisy speech with pauses, so the segmenter produces several events to compare too.
    let audio = common::read_wav(&corpus, "jfk_inaugural");
    let offline = model.probabilities(&audio).unwrap();
    assert_eq!(offline.len(), audio.len() / 512);

    let run = |sizes: &mut dyn FnMut() -> usize| -> (Vec<f32>, Vec<VadEvent>) {
        let mut vad = SileroVad::new(model.clone(), VadConfig::default()).unwrap();
        let (mut probs, mut events) = (Vec::new(), Vec::new());
        let mut rest = &audio[..];
        while !rest.is_empty() {
            let n = sizes().min(rest.len());
            events.extend(vad.push(&rest[..n]).unwrap());
            probs.extend_from_slice(vad.chunk_probabilities());
            rest = &rest[n..];
        }
        assert_eq!(vad.position().0, audio.len() as u64);
        events.extend(vad.finish());
        (probs, events)
    };
    let (ref_probs, ref_events) = run(&mut || audio.len());
    assert_eq!(ref_probs, offline, "one push differs from offline scoring");
    assert!(
        ref_events
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechStarted { .. })),
        "no speech found in jfk_inaugural: {ref_events:?}"
    );
    println!("jfk_inaugural events: {ref_events:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (name, mut sizes) in [
        ("1", Box::new(|| 1usize) as Box<dyn FnMut() -> usize>),
        ("100", Box::new(|| 100)),
        ("512", Box::new(|| 512)),
        ("4000", Box::new(|| 4000)),
        ("random 0..=3000", Box::new(move || rng.gen_range(0..=3000))),
    ] {
        let (probs, events) = run(&mut *sizes);
        // Bit-identical: the same chunks go through the same computation.
        assert_eq!(probs, offline, "push size {name}: probabilities differ");
        assert_eq!(events, ref_events, "push size {name}: events differ");
    }
}

#[test]
fn reset_restarts_the_stream() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    let model = common::model();
    let audio = common::read_wav(&corpus, "ps_goforward");
    let mut vad = SileroVad::new(model.clone(), VadConfig::default()).unwrap();
    let first = vad.push(&audio).unwrap();
    let first_probs = vad.chunk_probabilities().to_vec();
    vad.push(&audio[..1000]).unwrap();
    vad.reset().unwrap();
    assert_eq!(vad.position().0, 0);
    assert!(!vad.in_speech());
    let again = vad.push(&audio).unwrap();
    assert_eq!(again, first);
    assert_eq!(vad.chunk_probabilities(), &first_probs[..]);
}
