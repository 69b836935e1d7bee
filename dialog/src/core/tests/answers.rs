//! Answers: failures, voices, memory, the end of the conversation, and tick independence.

use super::*;
use crate::events::UNREACHABLE_SENTENCE;
use crate::llm::Role::{Assistant, User};
use vr_core::VoiceKind;
use LoopState::*;
use TurnEventKind::*;

fn failed(answer: u64, message: &str, unreachable: bool) -> Event {
    Event::LlmFailed {
        answer: AnswerId(answer),
        failure: LlmFailure {
            message: message.into(),
            unreachable,
            busy: false,
        },
    }
}

/// What a failed generation does at once: report the error, speak `sentence`, end the speech.
fn spoken_failure(message: &str, sentence: &str) -> [String; 3] {
    [
        format!(
            "emit {:?}",
            ConversationEvent::Error {
                message: message.into()
            }
        ),
        format!("speak 1/0 {sentence}"),
        "finish-speech 1".into(),
    ]
}

/// The failed answer's fallback audio plays out.
fn play_fallback(sim: &mut Sim) {
    sim.at(800, audio(1, 0, 0, 100 * F));
    sim.at(
        800,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(1_000);
}

/// A full model queue (other sessions' requests) is said aloud, not answered with silence, and
/// the apology stays out of the conversation's memory.
#[test]
fn a_busy_llm_is_answered_with_the_busy_sentence() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("Hello".into()));
    let e = crate::DialogError::Busy { queued: 32 };
    let step = sim.at(
        700,
        Event::LlmFailed {
            answer: AnswerId(1),
            failure: LlmFailure::from(&e),
        },
    );
    assert_eq!(
        step.iter().map(brief).collect::<Vec<_>>(),
        spoken_failure(&e.to_string(), crate::events::BUSY_SENTENCE)
    );
    play_fallback(&mut sim);
    assert!(
        sim.core
            .memory()
            .iter()
            .all(|m| m.content != crate::events::BUSY_SENTENCE),
        "{:?}",
        sim.core.memory()
    );
}

#[test]
fn an_unreachable_llm_is_answered_with_the_fallback_sentence() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("Hello".into()));
    let msg = "cannot connect to the language model at http://127.0.0.1:9 after 1 attempt(s)";
    let step = sim.at(700, failed(1, msg, true));
    assert_eq!(
        step.iter().map(brief).collect::<Vec<_>>(),
        spoken_failure(msg, UNREACHABLE_SENTENCE)
    );
    play_fallback(&mut sim);
    assert_eq!(
        sim.latencies(),
        vec![TurnLatency {
            turn: 1,
            input: TurnInput::Text,
            speech_end_ms: None,
            endpointing_ms: None,
            asr_final_ms: None,
            llm_first_token_ms: None,
            first_clause_ms: Some(200),
            tts_first_chunk_ms: Some(100),
            onset_ms: 300,
        }]
    );
    let events = sim.events();
    assert_eq!(
        events[events.len() - 3..],
        [
            said(UNREACHABLE_SENTENCE, 800),
            answer_end("", UNREACHABLE_SENTENCE, false),
            state(Speaking, Listening, 900),
        ]
    );
    // The user was heard; the apology is not part of the conversation.
    assert_eq!(sim.core.memory(), messages(&[(User, "Hello")]));
    assert_eq!(sim.core.summary().errors, 1);
}

#[test]
fn a_failing_llm_that_is_reachable_ends_the_answer_without_the_fallback() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("Hi".into()));
    sim.at(600, token(1, "Well, let me think about "));
    let step = sim.at(700, failed(1, "stream is malformed", false));
    assert_eq!(
        step.iter().map(brief).collect::<Vec<_>>(),
        [
            format!(
                "emit {:?}",
                ConversationEvent::Error {
                    message: "stream is malformed".into()
                }
            ),
            "finish-speech 1".to_string(),
        ]
    );
    let step = sim.at(
        750,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    assert_eq!(
        step.iter().map(brief).collect::<Vec<_>>(),
        [
            format!(
                "emit {:?}",
                answer_end("Well, let me think about", "", false)
            ),
            format!("emit {:?}", state(Thinking, Listening, 750)),
        ]
    );
    // A cancelled generation's failure concerns nobody.
    sim.at(800, Event::ClientText("Again".into()));
    sim.at(900, Event::ClientInterrupt);
    assert!(sim.at(950, failed(2, "late", true)).is_empty());
}

#[test]
fn a_voice_change_waits_for_the_answer_in_flight_and_applies_between_answers() {
    let mut sim = Sim::new();
    sim.at(
        0,
        Event::VoiceReady {
            voice: VoiceKind::Piper,
            sample_rate: 22_050,
        },
    );
    sim.typed_answer(500, "Hi", "Hello there.", &[100]);
    // Playing 660 → 760; the switch is asked for mid-answer.
    assert!(sim.at(700, Event::ClientVoice(VoiceKind::Flite)).is_empty());
    sim.run_until(760);
    let end = sim
        .log
        .iter()
        .rposition(|(_, a)| matches!(a, Action::Emit(ConversationEvent::AnswerEnd { .. })));
    let switch = sim
        .log
        .iter()
        .position(|(_, a)| *a == Action::SetVoice(VoiceKind::Flite));
    assert!(end.is_some() && switch > end, "{:?}", sim.commands());
    assert_eq!(sim.log[switch.unwrap_or(0)].0, 760);
    sim.at(
        770,
        Event::VoiceReady {
            voice: VoiceKind::Flite,
            sample_rate: 16_000,
        },
    );
    sim.typed_answer(1_000, "Again", "Sure.", &[50]);
    assert_eq!(
        sim.commands(),
        cmds(&[
            (500, "start 1 Hi"),
            (610, "speak 1/0 Hello there."),
            (610, "finish-speech 1"),
            (660, "write 1 4800"),
            (760, "voice flite"),
            (1_000, "start 2 Again"),
            (1_100, "speak 2/0 Sure."),
            (1_100, "finish-speech 2"),
            (1_150, "write 2 2400"),
        ])
    );
    let voices: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|e| matches!(e, ConversationEvent::Voice { .. }))
        .collect();
    assert_eq!(
        voices,
        [
            ConversationEvent::Voice {
                voice: VoiceKind::Piper,
                sample_rate: 22_050
            },
            ConversationEvent::Voice {
                voice: VoiceKind::Flite,
                sample_rate: 16_000
            }
        ]
    );
    // Idle: applied at once; a voice that cannot be opened leaves the old one speaking.
    sim.run_until(2_000);
    let step = sim.at(2_000, Event::ClientVoice(VoiceKind::Espeak));
    assert_eq!(step, [Action::SetVoice(VoiceKind::Espeak)]);
    let step = sim.at(
        2_010,
        Event::VoiceFailed {
            voice: VoiceKind::Espeak,
            reason: "espeak-ng is not installed".into(),
        },
    );
    assert_eq!(
        step,
        [Action::Emit(ConversationEvent::Error {
            message: "cannot switch to the espeak voice, still speaking with flite: espeak-ng is not installed".into()
        })]
    );
}

#[test]
fn memory_keeps_the_newest_exchanges_within_its_token_budget() {
    // ByteEstimate: "You are Relay." 4 + 5 tokens; "Question N" and "Answer N." 3 + 5 each.
    let mut sim = Sim::with(CoreConfig {
        max_memory_tokens: 9 + 2 * 16,
        ..cfg()
    });
    for n in 1..=4 {
        sim.typed_answer(
            n * 1_000,
            &format!("Question {n}"),
            &format!("Answer {n}."),
            &[50],
        );
        sim.run_until(n * 1_000 + 500);
    }
    assert_eq!(
        sim.requests()[3].1.messages,
        messages(&[
            (User, "Question 2"),
            (Assistant, "Answer 2."),
            (User, "Question 3"),
            (Assistant, "Answer 3."),
            (User, "Question 4"),
        ])
    );
}

#[test]
fn the_conversation_ends_when_the_input_has_ended_and_been_answered() {
    let mut sim = Sim::new();
    sim.say(1_000, 2_000, "Bye.");
    // No more audio: the open turn ends as if silence followed.
    sim.at(2_200, Event::InputEnded { at: Millis(2_200) });
    assert_eq!(sim.requests().len(), 1);
    assert!(!sim.core.is_done());
    sim.at(2_300, token(1, "Goodbye!"));
    sim.at(
        2_300,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(2_400, audio(1, 0, 0, 100 * F));
    sim.at(
        2_400,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    assert!(!sim.core.is_done());
    sim.run_until(2_500);
    assert!(sim.core.is_done());
    assert_eq!(sim.core.next_deadline(), None);
    assert!(sim.at(2_600, Event::ClientText("more".into())).is_empty());
    assert_eq!(sim.written(1), ramp(100 * F));
}

#[test]
fn a_recogniser_failure_ends_the_conversation_and_its_answer() {
    let mut sim = Sim::new();
    sim.at(500, Event::ClientText("Hi".into()));
    sim.at(600, token(1, "Hello. "));
    sim.at(
        650,
        Event::TtsFailed {
            answer: AnswerId(1),
            clause: ClauseId(0),
            reason: "voice crashed".into(),
        },
    );
    let step = sim.at(
        700,
        Event::RecognizerFailed {
            reason: "decoder crashed".into(),
        },
    );
    let message = "speech recognition failed: decoder crashed";
    assert_eq!(
        step.iter().map(brief).collect::<Vec<_>>(),
        [
            format!(
                "emit {:?}",
                ConversationEvent::Error {
                    message: message.into()
                }
            ),
            "flush".into(),
            "cancel-gen 1".into(),
            "cancel-speech 1".into(),
            format!("emit {:?}", answer_end("Hello.", "", true)),
        ]
    );
    assert!(sim.core.is_done());
    assert_eq!(sim.core.failure(), Some(message));
    assert!(sim.events().contains(&ConversationEvent::Error {
        message: "cannot speak \"Hello.\": voice crashed".into()
    }));
    assert_eq!(sim.core.summary().errors, 2);
}

/// The spoken turn, a two-clause answer and a backchannel over it.
fn script() -> Vec<(u64, Event)> {
    vec![
        (1_250, Event::SpeechStarted { at: Millis(1_000) }),
        (
            1_500,
            Event::AsrPartial {
                text: "what time".into(),
                stable_prefix_len: 0,
            },
        ),
        (2_100, Event::SpeechEnded { at: Millis(2_000) }),
        (
            2_200,
            Event::AsrFinal {
                text: "What time is it?".into(),
                start: Millis(1_000),
                end: Millis(2_000),
            },
        ),
        (
            2_200,
            Event::AsrProgress {
                upto: Millis(2_200),
            },
        ),
        (2_800, token(1, "Right now it is noon, ")),
        (2_900, token(1, "and the sun is high.")),
        (
            3_000,
            Event::LlmFinished {
                answer: AnswerId(1),
                stats: None,
            },
        ),
        (3_100, audio(1, 0, 0, 300 * F)),
        (3_150, audio(1, 1, 300 * F, 400 * F)),
        (
            3_150,
            Event::TtsDone {
                answer: AnswerId(1),
            },
        ),
        (3_380, Event::SpeechStarted { at: Millis(3_330) }),
        (3_680, Event::SpeechEnded { at: Millis(3_580) }),
        (6_000, Event::Tick),
    ]
}

/// Plays `script`, waking at every deadline and, with `every`, also on that grid.
fn drive(script: &[(u64, Event)], every: Option<u64>) -> Sim {
    let mut sim = Sim::new();
    let mut now = 0;
    for (t, ev) in script {
        for _ in 0..100_000 {
            let deadline = sim.core.next_deadline().map(Millis::ms);
            let grid = every.map(|e| (now / e + 1) * e);
            match [deadline, grid]
                .into_iter()
                .flatten()
                .filter(|x| x < t)
                .min()
            {
                Some(x) => {
                    now = x.max(now);
                    sim.at(now, Event::Tick);
                }
                None => break,
            }
        }
        now = *t;
        sim.at(now, ev.clone());
    }
    sim
}

#[test]
fn the_outcome_does_not_depend_on_how_often_the_core_is_woken() {
    let lazy = drive(&script(), None);
    let busy = drive(&script(), Some(7));
    // 14 events over 6 s: the grid adds some 850 wake-ups.
    assert!(
        busy.steps > lazy.steps + 800,
        "{} vs {}",
        busy.steps,
        lazy.steps
    );
    assert_eq!(lazy.events(), busy.events());
    assert_eq!(lazy.written(1), ramp(700 * F));
    assert_eq!(busy.written(1), ramp(700 * F));
    let l = lazy.events();
    // 700 ms of audio from 3100, paused 3380 → 3680 (280 ms in): the second clause 20 ms after
    // the resumption, the end 420 ms after it.
    assert!(l.contains(&said("and the sun is high.", 3_700)));
    assert_eq!(l.last(), Some(&state(Speaking, Listening, 4_100)));
    assert!(l.contains(&turn(
        Backchannel,
        TurnReason::TooShort {
            speech: ms(250),
            min: ms(500)
        },
        3_580
    )));
}
