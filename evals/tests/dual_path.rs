//! The dual path on the real models: Qwen2.5-0.5B drafts (llama.cpp), the shipped
//! verifier decides, Qwen2.5-Coder-1.5B continues, Piper speaks, through the conversation core on
//! the one-thread driver of `voicerelay eval dual`.

use std::sync::Arc;
use voicerelay_evals::dual_eval::{factual_turns, Driver, EvalTurn, PathMode};
use vr_dialog::core::CoreConfig;
use vr_dialog::llm::llamacpp::{LlamaCppModel, LlamaCppOptions};
use vr_dialog::verifier::Verifier;

fn opts(hidden_states: bool) -> LlamaCppOptions {
    LlamaCppOptions {
        max_context: 2048,
        prefill_chunk: 64,
        threads: 2,
        hidden_states,
    }
}

#[test]
fn dual_path_speaks_the_draft_then_the_slow_model_continues_it() {
    let Some(store) =
        vr_core::prereq::models(&["qwen2.5-0.5b", "qwen2.5-1.5b", "piper-joe", "onnxruntime"])
    else {
        return;
    };
    let fast = LlamaCppModel::from_store(&store, "qwen2.5-0.5b").expect("0.5B");
    let slow = LlamaCppModel::from_store(&store, "qwen2.5-1.5b").expect("1.5B");
    let bank = vr_tts::VoiceBank::load(&vr_tts::TtsConfig::default(), &store).expect("voices");
    // The shipped `[dialog]` section: its system prompt is the one users get.
    let table: toml::Table =
        toml::from_str(include_str!("../../configs/default.toml")).expect("default config");
    let dialog: vr_dialog::DialogConfig = table
        .get("dialog")
        .cloned()
        .expect("[dialog]")
        .try_into()
        .expect("valid [dialog]");
    let verifier = Verifier::builtin().expect("shipped verifier");
    let mut driver = Driver {
        fast: fast
            .session(&opts(verifier.hidden_width() > 0))
            .expect("fast session"),
        slow: slow.session(&opts(false)).expect("slow session"),
        voice: bank.open(vr_tts::VoiceKind::Piper).expect("piper"),
        verifier: Arc::new(verifier),
        base: CoreConfig::new(&dialog, vr_core::SampleRate(22_050)),
        draft_words: 5,
        keep_threshold: 0.0,
        max_answer_tokens: 32,
    };
    let turn = factual_turns("What is the capital of France?\tparis\n")
        .expect("parses")
        .remove(0);

    // Threshold 0 keeps the draft: it is heard first and the answer starts with it.
    let kept = driver.run_turn(PathMode::Dual, &turn).expect("dual turn");
    let draft = kept.draft.clone().expect("a draft");
    assert_eq!(kept.draft_kept, Some(true), "{kept:?}");
    assert!(kept.draft_score.is_some_and(|s| (0.0..=1.0).contains(&s)));
    assert!(
        kept.answer.starts_with(&draft),
        "answer {:?} does not start with the draft {draft:?}",
        kept.answer
    );
    assert!(draft.split_whitespace().count() <= 5, "{draft:?}");
    assert_eq!(kept.correct, Some(true), "{:?}", kept.answer);
    assert!(
        kept.onset_ms.is_some() && kept.seam_gap_ms.is_some(),
        "{kept:?}"
    );
    // No word of the draft is repeated at the seam.
    let words: Vec<&str> = kept.answer.split_whitespace().collect();
    let n = draft.split_whitespace().count();
    assert_ne!(words.get(n), words.get(n - 1), "{:?}", kept.answer);

    // Threshold 1 drops it: the slow model answers alone and the draft is never spoken.
    driver.keep_threshold = 1.0;
    let dropped = driver.run_turn(PathMode::Dual, &turn).expect("dual turn");
    assert_eq!(dropped.draft_kept, Some(false));
    assert_eq!(dropped.seam_gap_ms, None);
    assert_eq!(dropped.correct, Some(true), "{:?}", dropped.answer);
    let cascade = driver
        .run_turn(PathMode::Cascade, &turn)
        .expect("cascade turn");
    // Greedy on both: the slow model alone says exactly what it says after a dropped draft.
    assert_eq!(dropped.answer, cascade.answer);

    let unknown = EvalTurn {
        text: "Say hello.".into(),
        keywords: None,
    };
    let fast_only = driver
        .run_turn(PathMode::Fast, &unknown)
        .expect("fast turn");
    assert!(!fast_only.answer.trim().is_empty());
    assert_eq!(fast_only.correct, None);
}
