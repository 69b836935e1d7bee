//! The dual path on virtual time: the verifier's threshold, the seam, barge-in during the draft,
//! and a slow model that fails.

use super::*;
use crate::llm::Role::{Assistant, User};
use crate::llm::TokenFeatures;
use crate::verifier::{Verifier, SCALARS};

/// A verifier on the draft's mean log-probability alone: σ(4·tanh(mean) + 2), so a confident
/// draft (mean 0) scores 0.88 and an unsure one (mean −3) 0.14.
fn mean_logprob_verifier() -> Verifier {
    let mut w1 = vec![0.0; SCALARS];
    w1[0] = 1.0;
    Verifier::from_parts(
        vec![0.0; SCALARS],
        vec![1.0; SCALARS],
        w1,
        vec![0.0],
        vec![4.0],
        2.0,
    )
}

fn dual_cfg(threshold: f32) -> CoreConfig {
    CoreConfig {
        dual: Some(DualPathConfig {
            draft_words: 5,
            draft_max_tokens: 16,
            keep_threshold: threshold,
            verifier: Arc::new(mean_logprob_verifier()),
            early_draft: false,
        }),
        ..cfg()
    }
}

fn draft_token(answer: u64, text: &str, logprob: f32) -> Event {
    Event::DraftToken {
        answer: AnswerId(answer),
        token: Token {
            text: text.into(),
            id: None,
            features: Some(TokenFeatures {
                logprob,
                entropy: Some(0.5),
                margin: Some(2.0),
                hidden: None,
            }),
        },
    }
}

const DRAFT: [&str; 6] = ["The", " capital", " of", " France", " is", " Paris"];

/// A typed question at 500 ms, the drafter's six tokens from 600 ms 10 ms apart (the sixth
/// starts word six, so the draft is full at 650 ms).
fn drafted(threshold: f32, logprob: f32) -> Sim {
    let mut sim = Sim::with(dual_cfg(threshold));
    sim.at(
        500,
        Event::ClientText("What is the capital of France?".into()),
    );
    for (k, t) in DRAFT.iter().enumerate() {
        sim.at(600 + 10 * k as u64, draft_token(1, t, logprob));
    }
    sim
}

fn draft_events(sim: &Sim) -> Vec<(String, Option<f32>, bool, u64)> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e {
            ConversationEvent::Draft {
                text,
                score,
                kept,
                draft_ms,
                ..
            } => Some((text, score, kept, draft_ms)),
            _ => None,
        })
        .collect()
}

fn spoken_texts(sim: &Sim) -> Vec<String> {
    sim.log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SpeakText { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn answer_ends(sim: &Sim) -> Vec<ConversationEvent> {
    sim.events()
        .into_iter()
        .filter(|e| matches!(e, ConversationEvent::AnswerEnd { .. }))
        .collect()
}

fn seams(sim: &Sim) -> Vec<u64> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e {
            ConversationEvent::Seam { gap_ms } => Some(gap_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn the_draft_is_requested_first_and_full_at_word_six() {
    let sim = drafted(0.0, -0.1);
    let drafts: Vec<&GenerateRequest> = sim
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::StartDraft { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(drafts.len(), 1);
    // This verifier reads no hidden state, so the drafter is not asked for it.
    assert!(!drafts[0].want_hidden);
    assert_eq!(drafts[0].max_tokens, 16);
    let got = sim.commands();
    assert_eq!(got[0], (500, "draft 1".to_string()));
    // Nothing else until the token that starts the sixth word: then stop the drafter, speak
    // the five words, start the slow model after them.
    assert_eq!(
        got[1..4],
        cmds(&[
            (650, "cancel-draft 1"),
            (650, "speak 1/0 The capital of France is"),
            (650, "start 1 What is the capital of France?"),
        ])
    );
    assert_eq!(
        sim.requests()[0].1.assistant_prefix,
        "The capital of France is"
    );
    assert_eq!(
        draft_events(&sim),
        vec![(
            "The capital of France is".to_string(),
            Some(sigmoid(4.0 * (-0.1f32).tanh() + 2.0)),
            true,
            150
        )]
    );
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn threshold_one_never_plays_the_draft() {
    // The most confident draft possible still is not kept.
    let mut sim = drafted(1.0, 0.0);
    assert!(!draft_events(&sim)[0].2);
    let (_, request) = sim.requests()[0].clone();
    assert_eq!(request.assistant_prefix, "");
    assert!(spoken_texts(&sim).is_empty(), "{:?}", spoken_texts(&sim));
    // The slow model answers alone; the draft's words never reach the synthesizer.
    sim.at(900, token(1, "Paris is the capital."));
    sim.at(
        910,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    assert_eq!(spoken_texts(&sim), ["Paris is the capital."]);
    sim.at(950, audio(1, 0, 0, 300 * F));
    sim.at(
        950,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(1_400);
    let lat = sim.latencies();
    // The first token that counts is the slow model's (400 ms after the question).
    assert_eq!(lat[0].llm_first_token_ms, Some(400));
    assert!(seams(&sim).is_empty());
}

#[test]
fn threshold_zero_gives_prefix_then_continuation_with_no_word_lost_or_doubled() {
    let mut sim = drafted(0.0, -5.0);
    // The draft plays 400 ms from 700 ms; the continuation's audio arrives while it plays.
    sim.at(700, audio(1, 0, 0, 400 * F));
    for (k, t) in [" Paris", ",", " a", " city", " of", " light", "."]
        .iter()
        .enumerate()
    {
        sim.at(800 + 10 * k as u64, token(1, t));
    }
    sim.at(
        870,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(950, audio(1, 1, 400 * F, 500 * F));
    sim.at(
        950,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(2_000);
    let answer = "The capital of France is Paris, a city of light.";
    assert_eq!(
        spoken_texts(&sim),
        ["The capital of France is", "Paris, a city of light."]
    );
    assert_eq!(answer_ends(&sim), vec![answer_end(answer, answer, false)]);
    assert_eq!(
        sim.core.memory(),
        messages(&[
            (User, "What is the capital of France?"),
            (Assistant, answer)
        ])
    );
    // Every sample of both clauses written once, in order, with no gap at the seam.
    assert_eq!(sim.written(1), ramp(900 * F));
    assert_eq!(seams(&sim), vec![0]);
}

#[test]
fn a_continuation_that_comes_late_reports_the_silence_at_the_seam() {
    let mut sim = drafted(0.0, -0.2);
    sim.at(700, audio(1, 0, 0, 300 * F));
    // The draft has played out at 1000 ms; the continuation's audio arrives at 1250 ms.
    sim.run_until(1_100);
    sim.at(1_100, token(1, " Paris."));
    sim.at(
        1_100,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.run_until(1_250);
    sim.at(1_250, audio(1, 1, 300 * F, 200 * F));
    sim.at(
        1_250,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(2_000);
    assert_eq!(seams(&sim), vec![250]);
    assert_eq!(sim.written(1), ramp(500 * F));
}

#[test]
fn barge_in_while_drafting_stops_the_drafter_and_starts_nothing() {
    let mut sim = Sim::with(dual_cfg(0.5));
    sim.say(0, 1_000, "Tell me about Paris.");
    sim.run_until(1_600);
    let before = sim.log.len();
    sim.at(1_650, draft_token(1, "Paris", -0.1));
    // The user goes on talking (a barge-in needs no answer playing: the turn reopens).
    sim.at(2_000, Event::SpeechStarted { at: Millis(1_750) });
    sim.run_until(3_000);
    let after: Vec<String> = sim.log[before..]
        .iter()
        .filter(|(_, a)| !matches!(a, Action::Emit(_)))
        .map(|(_, a)| brief(a))
        .collect();
    assert!(
        after.iter().any(|c| c == "cancel-draft 1"),
        "the drafter must be stopped: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|c| c.starts_with("start ") || c.starts_with("speak ")),
        "nothing may start after the cancel: {after:?}"
    );
    // Tokens still in flight from the cancelled drafter are dropped.
    let n = sim.log.len();
    sim.at(3_010, draft_token(1, " is", -0.1));
    assert!(sim.log[n..]
        .iter()
        .all(|(_, a)| matches!(a, Action::Emit(_))));
}

#[test]
fn barge_in_during_the_draft_cancels_both_paths() {
    let mut sim = Sim::with(dual_cfg(0.5));
    sim.say(0, 1_000, "What is the capital of France?");
    sim.run_until(1_600);
    for (k, t) in DRAFT.iter().enumerate() {
        sim.at(1_700 + 10 * k as u64, draft_token(1, t, -0.1));
    }
    // The draft plays from 1800 ms while the slow model generates.
    sim.at(1_800, audio(1, 0, 0, 2_000 * F));
    sim.at(1_900, token(1, " Paris"));
    let from = sim.log.len();
    // The user talks over the draft for longer than a backchannel.
    sim.at(2_300, Event::SpeechStarted { at: Millis(2_050) });
    sim.run_until(2_700);
    let cmds: Vec<String> = sim.log[from..]
        .iter()
        .filter(|(_, a)| !matches!(a, Action::Emit(_)))
        .map(|(_, a)| brief(a))
        .collect();
    assert_eq!(cmds[0], "pause");
    assert!(cmds.contains(&"flush".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"cancel-gen 1".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"cancel-speech 1".to_string()), "{cmds:?}");
    let n = sim.log.len();
    sim.at(2_710, token(1, ", a city"));
    sim.at(2_720, audio(1, 1, 2_000 * F, 100 * F));
    assert!(
        sim.log[n..]
            .iter()
            .all(|(_, a)| !matches!(a, Action::WriteAudio { .. } | Action::SpeakText { .. })),
        "nothing of the cancelled answer after the flush"
    );
}

#[test]
fn a_failed_slow_model_is_replaced_by_the_fast_model_from_the_draft() {
    let mut sim = drafted(0.0, -0.1);
    let step = sim.at(
        700,
        Event::LlmFailed {
            answer: AnswerId(1),
            failure: LlmFailure {
                message: "cannot connect to the language model".into(),
                unreachable: true,
                busy: false,
            },
        },
    );
    let cmds: Vec<String> = step
        .iter()
        .filter(|a| !matches!(a, Action::Emit(_)))
        .map(brief)
        .collect();
    assert_eq!(cmds, ["fast-complete 1 \"The capital of France is\""]);
    // The fast model's continuation arrives as the answer's tokens; no fallback sentence.
    sim.at(750, token(1, " Paris."));
    sim.at(
        760,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    assert_eq!(spoken_texts(&sim), ["The capital of France is", "Paris."]);
    // A second failure (the fast completion's) ends the answer as any failure would.
    let mut sim = drafted(0.0, -0.1);
    let fail = || Event::LlmFailed {
        answer: AnswerId(1),
        failure: LlmFailure {
            message: "down".into(),
            unreachable: true,
            busy: false,
        },
    };
    sim.at(700, fail());
    sim.at(800, fail());
    assert_eq!(
        spoken_texts(&sim),
        [
            "The capital of France is".to_string(),
            crate::events::UNREACHABLE_SENTENCE.to_string()
        ]
    );
}

#[test]
fn a_whole_answer_inside_the_draft_needs_no_slow_model() {
    let mut sim = Sim::with(dual_cfg(0.0));
    sim.at(500, Event::ClientText("Hi!".into()));
    sim.at(600, draft_token(1, "Hello", -0.1));
    sim.at(610, draft_token(1, " there!", -0.1));
    let step = sim.at(
        620,
        Event::DraftFinished {
            answer: AnswerId(1),
            complete: true,
        },
    );
    let cmds: Vec<String> = step
        .iter()
        .filter(|a| !matches!(a, Action::Emit(_)))
        .map(brief)
        .collect();
    assert_eq!(cmds, ["speak 1/0 Hello there!", "finish-speech 1"]);
    assert!(sim.requests().is_empty());
}

#[test]
fn a_middle_threshold_follows_the_verifier() {
    let confident = drafted(0.5, -0.1);
    let unsure = drafted(0.5, -3.0);
    let (c, u) = (draft_events(&confident), draft_events(&unsure));
    assert!(c[0].1.is_some_and(|s| s > 0.8) && c[0].2, "{c:?}");
    assert!(u[0].1.is_some_and(|s| s < 0.2) && !u[0].2, "{u:?}");
    assert_eq!(spoken_texts(&confident), ["The capital of France is"]);
    assert!(spoken_texts(&unsure).is_empty());
    // A drafter that fails leaves the slow model to answer alone, at once.
    let mut sim = Sim::with(dual_cfg(0.5));
    sim.at(500, Event::ClientText("Hi".into()));
    sim.at(
        600,
        Event::DraftFailed {
            answer: AnswerId(1),
            reason: "drafter crashed".into(),
        },
    );
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(sim.requests()[0].1.assistant_prefix, "");
}

/// Digits come one token each: a draft stopped by the token cap inside "93,840,000,000" ends
/// before that word, so no number is spoken in halves and the seam falls between words.
#[test]
fn a_draft_cut_by_the_token_cap_inside_a_number_ends_before_it() {
    let mut sim = Sim::with(dual_cfg(0.0));
    sim.at(500, Event::ClientText("How many people?".into()));
    let pieces = [
        "It", " is", " 9", "3", ",", "8", "4", "0", ",", "0", "0", "0", ",", "0", "0", "0",
    ];
    assert_eq!(pieces.len(), 16, "the cap in dual_cfg");
    for (k, t) in pieces.iter().enumerate() {
        sim.at(600 + 10 * k as u64, draft_token(1, t, -0.1));
    }
    assert_eq!(spoken_texts(&sim), ["It is"]);
    assert_eq!(sim.requests()[0].1.assistant_prefix, "It is");
    sim.at(800, audio(1, 0, 0, 200 * F));
    for (k, t) in [
        " 9", "3", ",", "8", "4", "0", ",", "0", "0", "0", " people", ".",
    ]
    .iter()
    .enumerate()
    {
        sim.at(900 + 10 * k as u64, token(1, t));
    }
    sim.at(
        1_050,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(1_100, audio(1, 1, 200 * F, 300 * F));
    sim.at(
        1_100,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(2_000);
    assert_eq!(spoken_texts(&sim), ["It is", "93,840,000 people."]);
    let answer = "It is 93,840,000 people.";
    assert_eq!(answer_ends(&sim), vec![answer_end(answer, answer, false)]);
}

/// A draft that is one long word cut by the cap keeps nothing: the slow model answers alone.
#[test]
fn a_draft_that_is_one_cut_word_is_not_spoken() {
    let mut sim = Sim::with(dual_cfg(0.0));
    sim.at(500, Event::ClientText("Spell it".into()));
    for k in 0..16u64 {
        sim.at(600 + 10 * k, draft_token(1, "a", -0.1));
    }
    assert!(spoken_texts(&sim).is_empty());
    assert!(!draft_events(&sim)[0].2);
    assert_eq!(sim.requests()[0].1.assistant_prefix, "");
}

fn early_cfg() -> CoreConfig {
    let mut cfg = dual_cfg(0.5);
    if let Some(d) = cfg.dual.as_mut() {
        d.early_draft = true;
    }
    cfg
}

fn partial(text: &str) -> Event {
    Event::AsrPartial {
        text: text.into(),
        stable_prefix_len: 0,
    }
}

/// The recogniser has processed the input up to `ms`.
fn heard(ms: u64) -> Event {
    Event::AsrProgress { upto: Millis(ms) }
}

const QUESTION: &str = "What is the capital of France?";

/// The user pauses at 1000 ms (reported at 1100) with the question transcribed; once the
/// recogniser has heard that far (1150) the draft starts, is full at 1200 and is held unheard;
/// the turn ends at 1600 with the same words and the held draft is spoken in that same step,
/// the slow model continuing after it.
#[test]
fn an_early_draft_made_in_the_pause_is_spoken_the_moment_the_turn_ends() {
    let mut sim = Sim::with(early_cfg());
    sim.at(250, Event::SpeechStarted { at: Millis(0) });
    sim.at(900, partial(QUESTION));
    sim.at(1_100, Event::SpeechEnded { at: Millis(1_000) });
    sim.at(1_150, heard(1_150));
    for (k, t) in DRAFT.iter().enumerate() {
        sim.at(1_150 + 10 * k as u64, draft_token(1, t, -0.1));
    }
    sim.finalise(1_300, QUESTION, 0, 1_000);
    sim.run_until(1_700);
    let prompt = format!("prefill {QUESTION}");
    let start = format!("start 1 {QUESTION}");
    assert_eq!(
        sim.commands(),
        cmds(&[
            (900, &prompt),
            (1_150, "draft 1"),
            (1_200, "cancel-draft 1"),
            (1_600, "speak 1/0 The capital of France is"),
            (1_600, &start),
        ])
    );
    let requests = sim.requests();
    assert_eq!(requests[0].1.assistant_prefix, "The capital of France is");
    let drafts = draft_events(&sim);
    assert_eq!(drafts.len(), 1);
    assert_eq!(
        (drafts[0].0.as_str(), drafts[0].2, drafts[0].3),
        ("The capital of France is", true, 0)
    );
    assert!(sim.events().iter().any(|e| matches!(
        e,
        ConversationEvent::Draft {
            early: true,
            kept: true,
            draft_ms: 0,
            ..
        }
    )));
}

/// Speech that goes on cancels the early draft (its late tokens are ignored); changed words
/// replace it with a draft on the new words, and the turn's end adopts only that one.
#[test]
fn an_early_draft_is_dropped_when_the_user_goes_on_or_the_words_change() {
    let mut sim = Sim::with(early_cfg());
    sim.at(250, Event::SpeechStarted { at: Millis(0) });
    sim.at(900, partial("What is the capital"));
    sim.at(1_100, Event::SpeechEnded { at: Millis(1_000) });
    sim.at(1_120, heard(1_120));
    sim.at(1_130, draft_token(1, "The", -0.1));
    // The user goes on within the timeout: same turn, the draft is stale.
    sim.at(1_300, Event::SpeechStarted { at: Millis(1_250) });
    sim.at(1_310, draft_token(1, " capital", -0.1));
    sim.at(1_900, partial("What is the capital of France?"));
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.at(2_100, heard(2_100));
    // The final reads the words differently: the draft on the partial is replaced.
    sim.finalise(2_200, "What's the capital of France?", 0, 2_000);
    for (k, t) in DRAFT.iter().enumerate() {
        sim.at(2_210 + 10 * k as u64, draft_token(3, t, -0.1));
    }
    sim.run_until(2_700);
    let cmds_only: Vec<(u64, String)> = sim
        .commands()
        .into_iter()
        .filter(|(_, c)| !c.starts_with("prefill"))
        .collect();
    assert_eq!(
        cmds_only,
        cmds(&[
            (1_120, "draft 1"),
            (1_300, "cancel-draft 1"),
            (2_100, "draft 2"),
            (2_200, "cancel-draft 2"),
            (2_200, "draft 3"),
            (2_260, "cancel-draft 3"),
            (2_600, "speak 3/0 The capital of France is"),
            (2_600, "start 3 What's the capital of France?"),
        ])
    );
    // Nothing of the stale drafts was ever spoken.
    assert_eq!(
        spoken_texts(&sim),
        vec!["The capital of France is".to_string()]
    );
}

/// A turn that ends before the drafter has finished adopts the draft in flight: the tokens
/// held so far and the ones after the turn's end make one draft, decided when it is full.
#[test]
fn a_turn_that_ends_mid_draft_takes_the_rest_of_the_draft_as_it_comes() {
    let mut sim = Sim::with(early_cfg());
    sim.say(0, 1_000, QUESTION);
    // `say`: the end reported at 1100 before any partial, the final at 1200: the draft
    // starts on the final.
    sim.at(1_500, draft_token(1, "The", -0.1));
    sim.at(1_550, draft_token(1, " capital", -0.1));
    sim.run_until(1_650);
    for (k, t) in DRAFT.iter().enumerate().skip(2) {
        sim.at(1_700 + 10 * k as u64, draft_token(1, t, -0.1));
    }
    sim.run_until(1_800);
    let start = format!("start 1 {QUESTION}");
    assert_eq!(
        sim.commands(),
        cmds(&[
            (1_200, "draft 1"),
            (1_750, "cancel-draft 1"),
            (1_750, "speak 1/0 The capital of France is"),
            (1_750, &start),
        ])
    );
    assert!(sim.events().iter().any(|e| matches!(
        e,
        ConversationEvent::Draft {
            early: true,
            kept: true,
            draft_ms: 150,
            ..
        }
    )));
}
