//! Piper speed on this machine (2 ONNX Runtime threads):
//! - real-time factor: synthesis time / audio duration for a 40-word answer (target < 0.3);
//! - first-chunk latency vs whole-answer latency when the answer is streamed (the ratio is what
//!   a listener gains from streaming).
//!
//! Both figures are printed as ratios measured in the same run, after criterion's timings.
//! `cargo bench -p voicerelay-tts --bench piper`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use voicerelay_tts::verbalize::verbalize;
use voicerelay_tts::{
    open_voice, StreamingSynthesizer, Synthesizer, TtsConfig, TtsEvent, VoiceKind,
};

const ANSWER: &str =
    "Sure, the next train to Boston leaves from platform 9 at 3:45 this afternoon. \
The trip takes about 2.5 hours, and a ticket costs $35 if you book online. \
Would you like me to reserve two seats for your sister?";

/// (time to first audio chunk, time to Done, audio duration) for one streamed answer.
fn streamed(tts: &StreamingSynthesizer) -> (Duration, Duration, Duration) {
    let t0 = Instant::now();
    tts.push_text(ANSWER).expect("push");
    tts.finish().expect("finish");
    let mut first = None;
    let mut samples = 0u64;
    loop {
        match tts.recv_timeout(Duration::from_secs(120)).expect("worker") {
            Some(TtsEvent::Audio(c)) => {
                first.get_or_insert_with(|| t0.elapsed());
                samples += c.samples.len() as u64;
            }
            Some(TtsEvent::Done { .. }) => break,
            Some(TtsEvent::Failed { reason, .. }) => panic!("{reason}"),
            None => panic!("stalled"),
        }
    }
    let whole = t0.elapsed();
    (
        first.unwrap_or(whole),
        whole,
        tts.sample_rate().duration_of(samples),
    )
}

fn bench(c: &mut Criterion) {
    let store = match vr_core::ModelStore::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let cfg = TtsConfig {
        threads: 2,
        ..TtsConfig::default()
    };
    let opened = match open_voice(&cfg, &store) {
        Ok(o) if o.engine.kind() == VoiceKind::Piper => o,
        _ => {
            eprintln!("SKIPPED: Piper voice unavailable (run scripts/bootstrap)");
            return;
        }
    };
    let mut engine = opened.engine;
    let text = verbalize(ANSWER);
    let rate = engine.sample_rate();

    let mut g = c.benchmark_group("piper");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("whole_answer_one_shot", |b| {
        b.iter(|| engine.synthesize(&text).expect("synth"))
    });

    // Real-time factor, baseline = the audio's own duration, same run.
    let mut rtf = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let audio = engine.synthesize(&text).expect("synth");
        rtf.push(t.elapsed().as_secs_f64() / rate.duration_of(audio.len() as u64).as_secs_f64());
    }

    let tts = StreamingSynthesizer::new(engine, &cfg).expect("start");
    g.bench_function("streamed_first_chunk", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| streamed(&tts).0).sum())
    });
    g.bench_function("streamed_whole_answer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| streamed(&tts).1).sum())
    });
    g.finish();

    let mut ratios = Vec::new();
    let mut firsts = Vec::new();
    let mut audio_s = 0.0;
    for _ in 0..5 {
        let (first, whole, audio) = streamed(&tts);
        ratios.push(first.as_secs_f64() / whole.as_secs_f64());
        firsts.push(first.as_secs_f64());
        audio_s = audio.as_secs_f64();
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "piper summary: audio {audio_s:.2} s; real-time factor (2 threads) median {:.3} (target < 0.3); \
         streamed first chunk median {:.3} s; first-chunk / whole-answer latency median {:.3}",
        med(&mut rtf),
        med(&mut firsts),
        med(&mut ratios)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
