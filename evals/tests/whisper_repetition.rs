//! Repetition traps for streaming Whisper tiny.en (issue 19): clips whose streaming decode
//! looped before the loop guards (`vr_asr::guards`), and one where the speaker really repeats
//! a sentence, which the guards must keep.
//!
//! Each clip is streamed in 100 ms chunks with the VAD, followed by 1 s of silence as
//! `voicerelay eval asr` feeds it (the settle decode over the trailing silence is where the
//! read-speech trap looped). Asserted on the normalised transcript:
//! - no word n-gram is repeated back to back more times than in the reference (a loop repeats
//!   what the speaker said once);
//! - insertions ≤ half the reference length;
//! - WER ≤ 35 %.
//!
//! Before the guards: `lj_LJ001-0002` gave "in being comparatively modern being comparatively
//! modern" (3 insertions on 4 words), `mfa_surround` "this one this one montreal … aligner very
//! what are you going to do" ("this one" twice).

extern crate voicerelay_evals as vr_evals;

use std::collections::HashMap;
use std::path::Path;
use vr_asr::config::AsrConfig;
use vr_asr::models::whisper::load_configured;
use vr_asr::stream::WhisperStream;
use vr_asr::vad::{SileroVad, VadConfig};
use vr_asr::StreamingRecognizer;
use vr_evals::corpus::Corpus;
use vr_evals::normalize::normalize;
use vr_evals::streaming::run_stream;
use vr_evals::wer::word_errors;

fn read_wav(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).expect("corpus wav opens");
    assert_eq!(r.spec().sample_rate, 16000, "{}", path.display());
    r.samples::<i16>()
        .map(|s| s.expect("corpus sample") as f32 / 32768.0)
        .collect()
}

/// Word n-grams (1 ≤ n ≤ 8) that the hypothesis repeats back to back ("this one this one") more
/// times in a row than the reference ever does, as (n-gram, copies in the hypothesis, copies in
/// the reference).
fn excess_repeats(reference: &str, hypothesis: &str) -> Vec<(String, usize, usize)> {
    let runs = |s: &str| {
        let w: Vec<&str> = s.split_whitespace().collect();
        let mut m: HashMap<String, usize> = HashMap::new();
        for n in 1..=8 {
            for i in 0..w.len().saturating_sub(n - 1) {
                let mut k = 1;
                while i + (k + 1) * n <= w.len() && w[i + k * n..i + (k + 1) * n] == w[i..i + n] {
                    k += 1;
                }
                let e = m.entry(w[i..i + n].join(" ")).or_default();
                *e = (*e).max(k);
            }
        }
        m
    };
    let (r, h) = (runs(reference), runs(hypothesis));
    let mut out: Vec<(String, usize, usize)> = h
        .into_iter()
        .filter_map(|(g, c)| {
            let rc = r.get(&g).copied().unwrap_or(0);
            (c >= 2 && c > rc).then_some((g, c, rc))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn excess_repeats_counts_only_loops_the_reference_lacks() {
    assert!(excess_repeats("a b c d", "a b c d").is_empty());
    assert!(excess_repeats("uh uh uh x", "uh uh x").is_empty());
    assert_eq!(
        excess_repeats("in being modern", "in being modern being modern"),
        vec![("being modern".to_string(), 2, 1)]
    );
    // Repeated apart, not back to back: not a loop ("going to ... going to").
    assert!(excess_repeats(
        "is going to be are you gonna",
        "is going to be are you going to"
    )
    .is_empty());
    assert_eq!(
        excess_repeats("this one x", "this one this one x"),
        vec![("this one".to_string(), 2, 1)]
    );
}

#[test]
fn streaming_whisper_does_not_loop_on_the_repetition_traps() {
    let Some(corpus) = vr_core::prereq::require_some(
        Corpus::open_default().expect("manifest parses"),
        format_args!(
            "corpus not found at {} (set VOICERELAY_CORPUS)",
            vr_core::paths::corpus_dir().display()
        ),
    ) else {
        return;
    };
    let cfg = AsrConfig::default();
    let store = vr_core::ModelStore::from_env().expect("model store");
    let model = load_configured(&cfg, &store).expect("whisper-tiny.en in the model cache");
    let vad = SileroVad::from_store(&store, VadConfig::default()).expect("silero-vad in the cache");
    let mut rec = WhisperStream::new(model, cfg)
        .expect("stream")
        .with_vad(vad);
    let utt = |id: &str| {
        corpus
            .utterances
            .iter()
            .find(|u| u.id == id)
            .unwrap_or_else(|| panic!("{id} in the corpus manifest"))
            .clone()
    };
    let mut cases: Vec<(String, String, Vec<f32>)> = ["lj_LJ001-0002", "mfa_surround"]
        .iter()
        .map(|id| {
            let u = utt(id);
            (u.id.clone(), u.text.clone(), read_wav(&corpus.wav_path(&u)))
        })
        .collect();
    // The control: one sentence said twice, 300 ms apart. Both copies have audio; a guard that
    // cut every repeated clause would fail here.
    let h = utt("sb_example1_harvard");
    let once = read_wav(&corpus.wav_path(&h));
    let mut twice = once.clone();
    twice.resize(once.len() + 4800, 0.0);
    twice.extend_from_slice(&once);
    cases.push((
        "harvard said twice".into(),
        format!("{} {}", h.text, h.text),
        twice,
    ));

    let mut failures = Vec::new();
    for (id, text, mut audio) in cases {
        audio.resize(audio.len() + 16_000, 0.0);
        rec.reset();
        let run = run_stream(&mut rec, &audio, 1600).expect("streaming decode");
        let (r, hyp) = (normalize(&text), normalize(&run.text));
        let e = word_errors(&r, &hyp);
        let excess = excess_repeats(&r, &hyp);
        println!(
            "{id:<22} WER {:5.1}% ({} S, {} D, {} I / {}) | {hyp}",
            e.rate() * 100.0,
            e.substitutions,
            e.deletions,
            e.insertions,
            e.reference_len
        );
        if !excess.is_empty() {
            failures.push(format!(
                "{id}: back-to-back repeats {excess:?} in \"{hyp}\""
            ));
        }
        if 2 * e.insertions > e.reference_len {
            failures.push(format!(
                "{id}: {} insertions on {} reference words",
                e.insertions, e.reference_len
            ));
        }
        if e.rate() > 0.35 {
            failures.push(format!("{id}: WER {:.1}% > 35%", e.rate() * 100.0));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
