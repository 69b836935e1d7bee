//! Turns: spoken and typed, their latency, and what happens when the user is not done.

use super::*;
use crate::llm::GenerationStats;
use crate::llm::Role::{Assistant, User};
use LoopState::*;
use TurnEventKind::*;

/// The turn ends (timer) while the recogniser still holds the utterance open (a partial, no
/// final): the recogniser is told to finalise at the turn end rather than wait out its own
/// final silence, and the answer starts as soon as that final arrives.
#[test]
fn a_turn_that_ends_before_its_final_asks_the_recogniser_to_finalise_now() {
    let mut sim = Sim::new();
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(
        2_050,
        Event::AsrPartial {
            text: "what time is it".into(),
            stable_prefix_len: 15,
        },
    );
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.at(
        2_590,
        Event::AsrProgress {
            upto: Millis(2_590),
        },
    );
    sim.run_until(2_600);
    assert_eq!(sim.core.state(), Thinking);
    sim.finalise(2_620, "What time is it?", 1_000, 2_000);
    assert_eq!(
        sim.commands(),
        cmds(&[
            (2_050, "prefill what time is it"),
            (2_600, "end-utterance 2600"),
            (2_620, "start 1 What time is it?"),
        ])
    );
}

#[test]
fn a_spoken_turn_is_answered_and_remembered() {
    let mut sim = Sim::new();
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(
        1_500,
        Event::AsrPartial {
            text: "what time".into(),
            stable_prefix_len: 0,
        },
    );
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.finalise(2_200, " What time is it? ", 1_000, 2_000);
    assert_eq!(sim.core.next_deadline(), Some(Millis(2_600)));
    sim.run_until(2_600);
    assert_eq!(sim.core.state(), Thinking);
    sim.at(2_800, token(1, "It is"));
    sim.at(2_900, token(1, " noon."));
    let stats = GenerationStats {
        prompt_tokens: 20,
        reused_tokens: 15,
        generated_tokens: 4,
        ..GenerationStats::default()
    };
    sim.at(
        3_000,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: Some(stats),
        },
    );
    sim.at(3_100, audio(1, 0, 0, 100 * F));
    sim.at(3_150, audio(1, 0, 100 * F, 100 * F));
    sim.at(
        3_150,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    // The last written frame plays out at 3100 + 200 ms.
    assert_eq!(sim.core.next_deadline(), Some(Millis(3_300)));
    sim.run_until(4_000);

    assert_eq!(
        sim.commands(),
        cmds(&[
            (1_500, "prefill what time"),
            (2_600, "start 1 What time is it?"),
            (2_900, "speak 1/0 It is noon."),
            (3_000, "finish-speech 1"),
            (3_100, "write 1 4800"),
            (3_150, "write 1 4800"),
        ])
    );
    assert_eq!(sim.written(1), ramp(200 * F));
    let latency = TurnLatency {
        turn: 1,
        input: TurnInput::Speech,
        speech_end_ms: Some(2_000),
        endpointing_ms: Some(600),
        asr_final_ms: Some(200),
        llm_first_token_ms: Some(200),
        first_clause_ms: Some(300),
        tts_first_chunk_ms: Some(200),
        onset_ms: 1_100,
    };
    assert_eq!(sim.events(), spoken_turn_events(&latency));
    let request = &sim.requests()[0].1;
    assert_eq!(request.messages, messages(&[(User, "What time is it?")]));
    assert_eq!(
        (request.max_tokens, request.sampling),
        (160, Sampling::GREEDY)
    );
    assert_eq!(
        sim.core.memory(),
        messages(&[(User, "What time is it?"), (Assistant, "It is noon.")])
    );
    let summary = sim.core.summary();
    assert_eq!((summary.turns, summary.answers, summary.errors), (1, 1, 0));
    assert_eq!(summary.latencies, vec![latency]);
    assert_eq!(sim.core.next_deadline(), None);
}

/// What the spoken turn of `a_spoken_turn_is_answered_and_remembered` reports, in order.
fn spoken_turn_events(latency: &TurnLatency) -> Vec<ConversationEvent> {
    vec![
        turn(TurnStarted, TurnReason::VadSpeechStart, 1_000),
        state(Listening, UserSpeaking, 1_250),
        ConversationEvent::Partial {
            text: "what time".into(),
            stable_prefix_len: 0,
        },
        turn(Paused, TurnReason::VadSpeechEnd, 2_000),
        ConversationEvent::Final {
            text: " What time is it? ".into(),
            start_ms: 1_000,
            end_ms: 2_000,
        },
        turn(
            TurnEnded,
            TurnReason::SilenceTimeout { silence: ms(600) },
            2_600,
        ),
        state(UserSpeaking, Thinking, 2_600),
        turn(
            TurnCommitted,
            TurnReason::GraceExpired { grace: ms(400) },
            3_000,
        ),
        state(Thinking, Speaking, 3_100),
        ConversationEvent::TurnLatency(latency.clone()),
        said("It is noon.", 3_100),
        ConversationEvent::AnswerEnd {
            text: "It is noon.".into(),
            spoken: "It is noon.".into(),
            interrupted: false,
            prompt_tokens: Some(20),
            reused_tokens: Some(15),
            generated_tokens: Some(4),
        },
        state(Speaking, Listening, 3_300),
    ]
}

#[test]
fn a_typed_turn_has_no_speech_stages() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("  Hello there  ".into()));
    let id = sim.requests()[0].0;
    assert_eq!(id, 1);
    for (t, piece) in [(600, "Hi, "), (610, "how "), (620, "are "), (630, "you?")] {
        sim.at(t, token(1, piece));
    }
    sim.at(
        630,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(680, audio(1, 0, 0, 100 * F));
    sim.at(
        680,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(1_000);
    assert_eq!(
        sim.commands(),
        cmds(&[
            (500, "start 1 Hello there"),
            (630, "speak 1/0 Hi, how are you?"),
            (630, "finish-speech 1"),
            (680, "write 1 4800"),
        ])
    );
    let latency = TurnLatency {
        turn: 1,
        input: TurnInput::Text,
        speech_end_ms: None,
        endpointing_ms: None,
        asr_final_ms: None,
        llm_first_token_ms: Some(100),
        first_clause_ms: Some(130),
        tts_first_chunk_ms: Some(50),
        onset_ms: 180,
    };
    assert_eq!(
        sim.events(),
        vec![
            state(Listening, Thinking, 500),
            state(Thinking, Speaking, 680),
            ConversationEvent::TurnLatency(latency),
            said("Hi, how are you?", 680),
            answer_end("Hi, how are you?", "Hi, how are you?", false),
            state(Speaking, Listening, 780),
        ]
    );
    // Typed turns are not counted as spoken turns (as in the threaded loop's summary).
    assert_eq!(
        (sim.core.summary().turns, sim.core.summary().answers),
        (0, 1)
    );
}

/// Every stage scripted at a distinct moment; the output clock started 250 ms after the input.
#[test]
fn the_latency_breakdown_equals_the_scripted_times() {
    let mut sim = Sim::new();
    sim.at(1_000, Event::OutputPlayed { frames: 750 * F });
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(
        1_500,
        Event::AsrPartial {
            text: "what is".into(),
            stable_prefix_len: 0,
        },
    );
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.at(
        2_150,
        Event::AsrProgress {
            upto: Millis(2_150),
        },
    );
    sim.run_until(2_600);
    // The turn ended at 2600, but a partial announced text whose final is still due.
    assert_eq!(sim.core.state(), Thinking);
    assert!(sim.requests().is_empty());
    sim.finalise(2_900, "What is the time?", 1_000, 2_000);
    assert_eq!(
        sim.commands()[1..3],
        [
            (2_600, "end-utterance 2600".into()),
            (2_900, "start 1 What is the time?".into())
        ]
    );
    sim.at(3_300, token(1, "It is"));
    sim.at(3_500, token(1, " noon."));
    sim.at(3_650, audio(1, 0, 0, 80 * F));
    sim.run_until(4_000);
    assert_eq!(
        sim.latencies(),
        vec![TurnLatency {
            turn: 1,
            input: TurnInput::Speech,
            speech_end_ms: Some(2_000),
            endpointing_ms: Some(600),
            asr_final_ms: Some(900),
            llm_first_token_ms: Some(400),
            first_clause_ms: Some(600),
            tts_first_chunk_ms: Some(150),
            onset_ms: 1_650,
        }]
    );
    assert!(sim.events().contains(&state(Thinking, Speaking, 3_650)));
}

#[test]
fn a_partial_without_a_final_is_waited_for_at_most_the_final_hold() {
    let mut sim = Sim::new();
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(
        1_500,
        Event::AsrPartial {
            text: "uh".into(),
            stable_prefix_len: 0,
        },
    );
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.run_until(2_600);
    sim.at(
        4_099,
        Event::AsrProgress {
            upto: Millis(4_099),
        },
    );
    assert_eq!(sim.core.state(), Thinking);
    // The VAD decided the end at 2100; the hold runs 2 s on the recogniser's clock.
    sim.at(
        4_100,
        Event::AsrProgress {
            upto: Millis(4_100),
        },
    );
    assert_eq!(sim.core.state(), Listening);
    assert!(
        sim.requests().is_empty(),
        "no transcript: nothing to answer"
    );
    assert_eq!(
        sim.events().last(),
        Some(&state(Thinking, Listening, 4_100))
    );
}

#[test]
fn a_second_spoken_question_while_thinking_replaces_the_first() {
    let mut sim = Sim::new();
    sim.say(1_000, 2_000, "What time is it?");
    sim.run_until(2_600);
    sim.at(2_700, token(1, "It"));
    let from = sim.log.len();
    // After the grace period (commit at 3000): a new turn, not a longer one.
    sim.at(3_450, Event::SpeechStarted { at: Millis(3_200) });
    assert_eq!(
        sim.log[from..]
            .iter()
            .map(|(_, a)| brief(a))
            .filter(|b| !b.starts_with("emit"))
            .collect::<Vec<_>>(),
        ["flush", "cancel-gen 1", "cancel-speech 1"]
    );
    assert_eq!(
        sim.events_from(from),
        vec![
            turn(
                TurnCommitted,
                TurnReason::GraceExpired { grace: ms(400) },
                3_000
            ),
            turn(TurnStarted, TurnReason::VadSpeechStart, 3_200),
            answer_end("It", "", true),
            state(Thinking, UserSpeaking, 3_450),
        ]
    );
    // The first answer's generation is still draining: nothing of it is spoken.
    assert!(sim.at(3_500, token(1, " is noon. ")).is_empty());
    sim.at(3_900, Event::SpeechEnded { at: Millis(3_800) });
    sim.finalise(4_000, "And the date?", 3_200, 3_800);
    sim.run_until(4_400);
    let (id, request) = sim.requests()[1].clone();
    assert_eq!(id, 2);
    // The first question was never answered aloud, so it is not remembered.
    assert_eq!(request.messages, messages(&[(User, "And the date?")]));
    let spoken = sim.at(4_500, token(2, "It is Friday. "));
    assert_eq!(
        spoken.iter().map(brief).collect::<Vec<_>>(),
        ["speak 2/0 It is Friday."]
    );
    assert_eq!(sim.core.summary().turns, 2);
}

/// The turn ended and was committed while the recogniser was still behind, so it was never
/// answered; the user spoke on and the recogniser finalised both parts as one utterance from the
/// first speech start. That final is the new turn's whole question, not speech outside any turn.
#[test]
fn a_turn_still_waiting_for_its_final_carries_into_the_next() {
    let mut sim = Sim::new();
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(
        1_800,
        Event::AsrPartial {
            text: "What time".into(),
            stable_prefix_len: 0,
        },
    );
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.run_until(3_100);
    assert!(sim.requests().is_empty(), "answered without the final");
    let from = sim.log.len();
    sim.at(3_450, Event::SpeechStarted { at: Millis(3_200) });
    sim.at(3_900, Event::SpeechEnded { at: Millis(3_800) });
    sim.finalise(4_000, "What time is it in Paris?", 1_000, 3_800);
    sim.run_until(4_500);
    assert!(
        sim.events_from(from)
            .contains(&turn(TurnStarted, TurnReason::VadSpeechStart, 3_200)),
        "{:?}",
        sim.events_from(from)
    );
    let requests = sim.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].1.messages,
        messages(&[(User, "What time is it in Paris?")])
    );
    assert_eq!(sim.core.summary().turns, 1);
}

#[test]
fn a_second_typed_question_while_thinking_replaces_the_first() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("Tell me a joke".into()));
    let actions = sim.at(550, Event::ClientText("No, the weather".into()));
    assert_eq!(
        actions.iter().map(brief).collect::<Vec<_>>(),
        [
            "flush".to_string(),
            "cancel-gen 1".into(),
            "cancel-speech 1".into(),
            format!("emit {:?}", answer_end("", "", true)),
            "start 2 No, the weather".into(),
        ]
    );
    assert_eq!(
        sim.requests()[1].1.messages,
        messages(&[(User, "No, the weather")])
    );
    assert!(sim.at(600, token(1, "Why did the chicken. ")).is_empty());
}

#[test]
fn speech_within_the_grace_period_extends_the_turn_and_drops_its_answer() {
    let mut sim = Sim::new();
    sim.say(1_000, 2_000, "What time is it");
    sim.run_until(2_600);
    let from = sim.log.len();
    sim.at(3_050, Event::SpeechStarted { at: Millis(2_800) });
    assert_eq!(
        sim.events_from(from),
        vec![
            turn(
                Resumed,
                TurnReason::ResumedWithinGrace { after_end: ms(200) },
                2_800
            ),
            answer_end("", "", true),
            state(Thinking, UserSpeaking, 3_050),
        ]
    );
    sim.at(3_600, Event::SpeechEnded { at: Millis(3_500) });
    sim.finalise(3_700, "in London?", 2_800, 3_500);
    sim.run_until(4_100);
    assert_eq!(
        sim.requests()[1].1.messages,
        messages(&[(User, "What time is it in London?")])
    );
    // One turn, answered twice: the count follows the answers started.
    let l = sim.core.summary();
    assert_eq!(l.turns, 2);
}

#[test]
fn partials_prefill_once_per_change_and_only_while_the_turn_is_open() {
    let partial = |t: &str| Event::AsrPartial {
        text: t.into(),
        stable_prefix_len: 0,
    };
    let mut sim = Sim::new();
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(1_300, partial("what"));
    sim.at(1_400, partial(" what "));
    sim.at(1_500, partial("what time"));
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.at(2_200, partial("what time"));
    sim.run_until(2_600);
    sim.at(2_700, partial("what time is it"));
    assert_eq!(
        sim.commands(),
        cmds(&[
            (1_300, "prefill what"),
            (1_500, "prefill what time"),
            (2_600, "end-utterance 2600")
        ])
    );
    let mut off = Sim::with(CoreConfig {
        speculative_prefill: false,
        ..cfg()
    });
    off.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    off.at(1_300, partial("what"));
    assert!(off.commands().is_empty());
}

#[test]
fn the_end_of_turn_model_ends_a_complete_turn_and_waits_out_an_incomplete_one() {
    let mut c = cfg();
    c.turn.end_of_turn = EndOfTurn::Model {
        threshold: 0.5,
        fallback_timeout: Duration::from_millis(2_000),
    };
    let mut sim = Sim::with(c);
    // Unsure about the first pause: the turn waits (no answer) until the user goes on.
    sim.at(1_250, Event::SpeechStarted { at: Millis(1_000) });
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.at(
        2_150,
        Event::TurnModel {
            speech_end: Millis(2_000),
            probability: 0.2,
        },
    );
    assert_eq!(sim.core.state(), UserSpeaking);
    // The timer no longer decides at 600 ms: the model's fallback does, at 2 s.
    assert_eq!(sim.core.next_deadline(), Some(Millis(4_000)));
    sim.at(2_650, Event::SpeechStarted { at: Millis(2_400) });
    sim.at(3_100, Event::SpeechEnded { at: Millis(3_000) });
    sim.finalise(3_150, "What is the capital of France?", 1_000, 3_000);
    // A late verdict on the first pause no longer counts: it is not the current one.
    sim.at(
        3_160,
        Event::TurnModel {
            speech_end: Millis(2_000),
            probability: 0.9,
        },
    );
    assert_eq!(sim.core.state(), UserSpeaking);
    assert!(sim.requests().is_empty());
    // Sure about the second: the turn ends at the verdict, 180 ms after the speech end.
    sim.at(
        3_180,
        Event::TurnModel {
            speech_end: Millis(3_000),
            probability: 0.9,
        },
    );
    assert_eq!(sim.core.state(), Thinking);
    let kinds: Vec<(TurnEventKind, u64)> = sim
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ConversationEvent::Turn { kind, at_ms, .. } => Some((kind, at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (TurnStarted, 1_000),
            (Paused, 2_000),
            (Waiting, 2_150),
            (Resumed, 2_400),
            (Paused, 3_000),
            (TurnEnded, 3_180),
        ]
    );
    assert!(sim.events().iter().any(|e| matches!(
        e,
        ConversationEvent::Turn {
            kind: TurnEnded,
            reason: TurnReason::TurnModelComplete { .. },
            ..
        }
    )));
    assert_eq!(
        sim.commands(),
        cmds(&[(3_180, "start 1 What is the capital of France?")])
    );
    assert_eq!(sim.core.summary().turns, 1);
}
