//! Piper streaming behaviour on the real voice: first audio before the second sentence exists,
//! streamed duration equals one-shot duration, cancel() is final.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use voicerelay_tts::verbalize::verbalize;
use voicerelay_tts::{StreamingSynthesizer, Synthesizer, TtsConfig, TtsEvent, VoiceKind};

/// 40 words, 3 sentences, with numbers, a time and money to exercise verbalisation.
const ANSWER: [&str; 3] = [
    "Sure, the next train to Boston leaves from platform 9 at 3:45 this afternoon.",
    "The trip takes about 2.5 hours, and a ticket costs $35 if you book online.",
    "Would you like me to reserve two seats for your sister?",
];

#[test]
fn answer_has_forty_words_in_three_sentences() {
    let words: usize = ANSWER.iter().map(|s| s.split_whitespace().count()).sum();
    assert_eq!(words, 40);
}

#[test]
fn first_audio_before_second_sentence_arrives_and_duration_matches_one_shot() {
    let cfg = TtsConfig::default();
    let Some(mut opened) = common::piper(&cfg) else {
        return;
    };
    let full = ANSWER.join(" ");
    let rate = opened.engine.sample_rate();
    assert_eq!(rate.hz(), 22_050);

    // One-shot reference on the same engine before it moves into the worker.
    let t = Instant::now();
    let one_shot = opened
        .engine
        .synthesize(&verbalize(&full))
        .expect("one-shot");
    let one_shot_time = t.elapsed();
    let one_shot_dur = rate.duration_of(one_shot.len() as u64);
    assert!(common::rms(&one_shot) > 0.01, "one-shot audio is silent");

    let tts = StreamingSynthesizer::new(opened.engine, &cfg).expect("start");
    // Sentences after the first start with a space-carrying token, as an LLM would send them.
    let tokens: Vec<Vec<String>> = ANSWER
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut t = common::llm_tokens(s);
            if k > 0 {
                t[0].insert(0, ' ');
            }
            t
        })
        .collect();

    // The instrumented text source: it feeds sentence 1 token by token, then holds sentence 2
    // back until the consumer reports the first audio chunk (or 30 s pass), and records when.
    let (first_audio_tx, first_audio_rx) = mpsc::channel::<Instant>();
    let t0 = Instant::now();
    let (tts, tokens) = (&tts, &tokens);
    let (released_at, gate_opened_by_audio) = std::thread::scope(|scope| {
        let source = scope.spawn(move || {
            let mut released = None;
            let mut by_audio = false;
            for (k, sentence) in tokens.iter().enumerate() {
                if k == 1 {
                    by_audio = first_audio_rx.recv_timeout(Duration::from_secs(30)).is_ok();
                    released = Some(Instant::now());
                }
                for tok in sentence {
                    tts.push_text(tok).expect("push");
                    // An LLM at ~50 tokens/s.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            tts.finish().expect("finish");
            (released, by_audio)
        });

        let mut streamed = Vec::new();
        let mut first: Option<(Instant, String)> = None;
        let mut chunks = 0usize;
        loop {
            match tts.recv_timeout(Duration::from_secs(120)).expect("worker") {
                Some(TtsEvent::Audio(c)) => {
                    if first.is_none() {
                        first = Some((Instant::now(), c.clause.to_string()));
                        let _ = first_audio_tx.send(Instant::now());
                    }
                    assert_eq!(c.rate, rate);
                    assert_eq!(
                        c.start.0,
                        streamed.len() as u64,
                        "chunk positions are contiguous"
                    );
                    assert!(c.samples.len() <= 2205, "chunks are at most 100 ms");
                    chunks += 1;
                    streamed.extend_from_slice(&c.samples);
                }
                Some(TtsEvent::Done { .. }) => break,
                Some(TtsEvent::Failed { clause, reason, .. }) => panic!("{clause}: {reason}"),
                None => panic!("no audio for 120 s"),
            }
        }
        let (released, by_audio) = source.join().expect("source thread");
        let (first_at, first_clause) = first.expect("some audio");
        let whole = t0.elapsed();
        let streamed_dur = rate.duration_of(streamed.len() as u64);
        let ratio = streamed_dur.as_secs_f64() / one_shot_dur.as_secs_f64();
        println!(
            "first chunk after {:?} (clause {first_clause:?}); whole answer {:?}; {chunks} chunks; \
             streamed {streamed_dur:?} vs one-shot {one_shot_dur:?} (ratio {ratio:.3}); one-shot took {one_shot_time:?}",
            first_at - t0,
            whole
        );
        assert!(
            ANSWER[0].starts_with(&first_clause),
            "first audio must speak the start of sentence 1, got {first_clause:?}"
        );
        assert!(
            (0.95..=1.05).contains(&ratio),
            "streamed {streamed_dur:?} vs one-shot {one_shot_dur:?}"
        );
        assert!(released.is_some_and(|r| first_at <= r));
        (released, by_audio)
    });
    assert!(released_at.is_some());
    assert!(
        gate_opened_by_audio,
        "the first audio chunk did not arrive while sentence 2 was held back"
    );
}

#[test]
fn cancel_is_final_for_piper() {
    let cfg = TtsConfig::default();
    let Some(opened) = common::piper(&cfg) else {
        return;
    };
    let tts = StreamingSynthesizer::new(opened.engine, &cfg).expect("start");
    assert_eq!(tts.voice(), VoiceKind::Piper);
    cancel_check(&tts);
}

#[test]
fn cancel_is_final_for_flite() {
    let cfg = TtsConfig::default();
    let engine =
        voicerelay_tts::FliteEngine::new(voicerelay_tts::flite::FliteVoice::Slt).expect("flite");
    let tts = StreamingSynthesizer::new(Box::new(engine), &cfg).expect("start");
    cancel_check(&tts);
}

/// Starts a long answer, cancels right after the first chunk while the worker is still
/// synthesising, and checks that not one chunk of it arrives afterwards; then the synthesizer
/// speaks a new utterance from sample 0.
fn cancel_check(tts: &StreamingSynthesizer) {
    let long = "This is the first sentence of a long answer. ".to_string()
        + &"It goes on, and on, with many more clauses to speak, so that synthesis is still running. ".repeat(8);
    tts.push_text(&long).expect("push");
    tts.finish().expect("finish");
    let first = match common::wait_event(tts, Duration::from_secs(60)) {
        Some(TtsEvent::Audio(c)) => c,
        other => panic!("expected audio, got {other:?}"),
    };
    let cancelled_utterance = first.utterance;
    let t = Instant::now();
    tts.cancel();
    let cancel_took = t.elapsed();
    // Long enough for several more clauses had the worker kept going.
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        if let Some(ev) = tts
            .recv_timeout(Duration::from_millis(100))
            .expect("worker")
        {
            panic!("event after cancel() returned: {ev:?}");
        }
    }
    println!("{}: cancel() returned in {cancel_took:?}", tts.voice());

    // The synthesizer is usable again: a new utterance starting at sample 0.
    let samples = tts
        .speak_all("Okay, stopping.", Duration::from_secs(60))
        .expect("speak");
    assert!(common::rms(&samples) > 0.01);
    tts.push_text("Second try.").expect("push");
    tts.finish().expect("finish");
    match common::wait_event(tts, Duration::from_secs(60)) {
        Some(TtsEvent::Audio(c)) => {
            assert_ne!(c.utterance, cancelled_utterance);
            assert_eq!(c.start.0, 0);
        }
        other => panic!("expected audio, got {other:?}"),
    }
}
