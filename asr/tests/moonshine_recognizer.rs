//! The streaming recogniser on the random-weight fixture model: segmentation, partials with a
//! committed prefix the final keeps, and final text equal to offline greedy decoding.

mod common;

use std::sync::Arc;

use common::{fixture_dir, read_clip};
use voicerelay_asr::models::moonshine_streaming::MoonshineStreaming;
use voicerelay_asr::moonshine::{MoonshineRecognizer, RecognizerOptions};
use voicerelay_asr::{AsrEvent, StreamingRecognizer};

const CLIP: &str = "ls_1089-134691-0000";

fn model() -> Arc<MoonshineStreaming> {
    Arc::new(MoonshineStreaming::load(&fixture_dir("tiny_layout")).expect("fixture loads"))
}

#[test]
fn silence_gives_no_events() {
    let mut r = MoonshineRecognizer::load(&fixture_dir("tiny_layout")).expect("load");
    let silence = vec![0.0f32; 320];
    for _ in 0..100 {
        assert!(r.push(&silence).expect("push").is_empty());
    }
    assert!(r.finish().expect("finish").is_empty());
}

#[test]
fn final_equals_offline_greedy_over_the_utterance() {
    let Some(audio) = read_clip(CLIP) else {
        vr_core::prereq::missing(format_args!("corpus clip {CLIP} absent"));
        return;
    };
    let m = model();
    let opts = RecognizerOptions {
        partial_every_frames: 0,
        ..RecognizerOptions::default()
    };
    let mut r = MoonshineRecognizer::new(m.clone(), opts.clone()).expect("recognizer");
    let mut events = Vec::new();
    for chunk in audio.chunks(533) {
        events.extend(r.push(chunk).expect("push"));
    }
    events.extend(r.finish().expect("finish"));
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AsrEvent::SpeechStarted { at } => Some(*at),
            _ => None,
        })
        .collect();
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AsrEvent::Final { text, start, .. } => Some((text.clone(), *start)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(finals.len(), 1, "{events:?}");
    assert_eq!(finals[0].1, starts[0]);

    // Offline: encode the utterance's audio in one go, decode greedily with the same budget.
    let seg = &audio[starts[0].0 as usize..];
    let enc = m.encode(seg).expect("encode");
    let frames = enc.dim(0).expect("dim");
    let budget = (frames as f32 * 0.02 * opts.max_tokens_per_second).ceil() as usize + 4;
    let (mut ids, _) = m.greedy(&enc, budget).expect("greedy");
    if ids
        .last()
        .is_some_and(|t| m.config.eos_tokens().contains(t))
    {
        ids.pop();
    }
    let expected = m.detokenize(&ids).expect("detok").trim().to_string();
    println!(
        "utterance from {:?}: {frames} frames, final {:?}",
        starts[0], finals[0].0
    );
    assert!(!expected.is_empty());
    assert_eq!(finals[0].0, expected);
}

#[test]
fn partials_commit_a_prefix_the_final_keeps() {
    let Some(audio) = read_clip(CLIP) else {
        vr_core::prereq::missing(format_args!("corpus clip {CLIP} absent"));
        return;
    };
    let mut r =
        MoonshineRecognizer::new(model(), RecognizerOptions::default()).expect("recognizer");
    let mut events = Vec::new();
    let mut input = audio.clone();
    input.extend(std::iter::repeat_n(0.0, 16_000));
    for chunk in input.chunks(320) {
        events.extend(r.push(chunk).expect("push"));
    }
    events.extend(r.finish().expect("finish"));
    let partials: Vec<(String, usize)> = events
        .iter()
        .filter_map(|e| match e {
            AsrEvent::Partial {
                text,
                stable_prefix_len,
            } => Some((text.clone(), *stable_prefix_len)),
            _ => None,
        })
        .collect();
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AsrEvent::Final {
                text, start, end, ..
            } => Some((text.clone(), *start, *end)),
            _ => None,
        })
        .collect();
    let ended = events
        .iter()
        .filter(|e| matches!(e, AsrEvent::SpeechEnded { .. }))
        .count();
    println!("{} partials, finals {finals:?}", partials.len());
    assert_eq!(finals.len(), 1, "one utterance: {events:?}");
    assert_eq!(ended, 1);
    // 2.1 s of speech at one partial per 300 ms of encoder frames.
    assert!(partials.len() >= 4, "{} partials", partials.len());
    let (final_text, start, end) = &finals[0];
    assert!(
        end > start && end.0 <= audio.len() as u64,
        "{start:?}..{end:?}"
    );
    let mut last_stable = String::new();
    for (text, stable) in &partials {
        let s = &text[..*stable];
        assert!(
            s.starts_with(last_stable.as_str()),
            "committed text shrank: {last_stable:?} -> {s:?}"
        );
        assert!(
            final_text.starts_with(s.trim()),
            "final {final_text:?} drops committed {s:?}"
        );
        last_stable = s.to_string();
    }

    // reset() starts a new stream at sample 0 with the same result.
    r.reset();
    let mut again = Vec::new();
    for chunk in input.chunks(320) {
        again.extend(r.push(chunk).expect("push"));
    }
    again.extend(r.finish().expect("finish"));
    assert_eq!(again, events);
}
