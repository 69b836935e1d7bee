//! User speech over the answer: pause, backchannel resume, barge-in, half-duplex, interrupt.

use super::*;
use crate::llm::Role::{Assistant, User};
use LoopState::*;
use TurnEventKind::*;

/// A typed question at 500 whose answer has two clauses; the first one's 200 ms of audio
/// arrive at 900 and fill the output's lead: it plays from 900 to 1100. The LLM has not
/// finished and the second clause's audio has not arrived.
fn speaking(cfg: CoreConfig) -> Sim {
    let mut sim = Sim::with(cfg);
    sim.at(500, Event::ClientText("Tell me a story".into()));
    sim.at(700, token(1, "Once upon a time, "));
    sim.at(800, token(1, "there was a fox."));
    sim.at(900, audio(1, 0, 0, 200 * F));
    assert_eq!(
        sim.commands(),
        cmds(&[
            (500, "start 1 Tell me a story"),
            (700, "speak 1/0 Once upon a time,"),
            (800, "speak 1/1 there was a fox."),
            (900, "write 1 9600"),
        ])
    );
    assert_eq!(sim.core.state(), Speaking);
    sim
}

fn briefs(actions: &[Action]) -> Vec<String> {
    actions.iter().map(brief).collect()
}

#[test]
fn barge_in_flushes_in_one_action_and_nothing_of_the_answer_is_written_after_it() {
    let mut sim = speaking(cfg());
    // The user starts at 950; the VAD is sure at 1000. The output pauses first, in that step.
    let step = sim.at(1_000, Event::SpeechStarted { at: Millis(950) });
    assert_eq!(
        briefs(&step),
        [
            "pause".to_string(),
            format!("emit {:?}", turn(Overlap, TurnReason::VadSpeechStart, 950))
        ]
    );
    // Audio arriving meanwhile waits.
    assert!(sim.at(1_050, audio(1, 1, 200 * F, 150 * F)).is_empty());
    // 500 ms of overlap, judged 100 ms (the VAD's end lag) behind the input clock.
    assert_eq!(sim.core.next_deadline(), Some(Millis(1_550)));
    sim.run_until(1_549);
    assert_eq!(sim.core.state(), Speaking);
    let step = sim.at(1_550, Event::Tick);
    let mut heard = messages(&[(User, "Tell me a story"), (Assistant, "Once upon a time,")]);
    assert_eq!(
        briefs(&step),
        [
            "flush".to_string(),
            format!(
                "emit {:?}",
                turn(
                    BargeIn,
                    TurnReason::OverlapLongEnough {
                        speech: ms(500),
                        min: ms(500)
                    },
                    1_450
                )
            ),
            "cancel-gen 1".into(),
            "cancel-speech 1".into(),
            format!(
                "emit {:?}",
                answer_end(
                    "Once upon a time, there was a fox.",
                    "Once upon a time,",
                    true
                )
            ),
            format!(
                "emit {:?}",
                ConversationEvent::BargeIn {
                    at_ms: 950,
                    detected_ms: 1_000,
                    stop_latency_ms: 0,
                    // 1000 → 1100 was queued when the output paused.
                    dropped_ms: 100,
                }
            ),
            format!("emit {:?}", state(Speaking, UserSpeaking, 1_550)),
        ]
    );
    let flush_at = sim.log.len() - step.len();
    // Whatever of the cancelled answer is still in flight changes nothing.
    for late in [
        audio(1, 1, 350 * F, 100 * F),
        token(1, " The end."),
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
        Event::TtsDone {
            answer: AnswerId(1),
        },
    ] {
        assert!(sim.at(1_600, late).is_empty());
    }
    assert!(!sim.log[flush_at..]
        .iter()
        .any(|(_, a)| matches!(a, Action::WriteAudio { answer, .. } if answer.0 == 1)));
    assert_eq!(sim.written(1), ramp(200 * F));
    // The interruption is the user's next turn; memory holds what was heard of the answer.
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.finalise(2_200, "Stop, a joke please.", 950, 2_000);
    sim.run_until(2_600);
    heard.push(ChatMessage::user("Stop, a joke please."));
    assert_eq!(sim.requests()[1].1.messages, heard);
    assert_eq!(sim.core.summary().barge_ins, 1);
}

/// A short "wait" is taken as a backchannel, the speech right after it as a barge-in; the
/// recogniser hears both as one utterance, whose final starts at the "wait", half a second before
/// the interrupting turn. It is still that turn's question.
#[test]
fn a_barge_in_whose_final_starts_at_the_backchannel_before_it_is_answered() {
    let mut sim = speaking(cfg());
    sim.at(1_000, Event::SpeechStarted { at: Millis(950) });
    sim.run_until(1_550);
    assert_eq!(sim.core.summary().barge_ins, 1);
    sim.at(2_100, Event::SpeechEnded { at: Millis(2_000) });
    sim.finalise(2_200, "Wait, stop, a joke please.", 400, 2_000);
    sim.run_until(2_600);
    let requests = sim.requests();
    assert_eq!(requests.len(), 2, "the interruption was not answered");
    assert_eq!(
        requests[1].1.messages.last(),
        Some(&ChatMessage::user("Wait, stop, a joke please."))
    );
}

#[test]
fn a_300_ms_backchannel_resumes_the_paused_answer() {
    let mut sim = speaking(cfg());
    sim.at(1_000, Event::SpeechStarted { at: Millis(950) });
    sim.at(1_050, audio(1, 1, 200 * F, 150 * F));
    let from = sim.log.len();
    // "Yeah" ends 300 ms after it began; the VAD reports it 100 ms later.
    let step = sim.at(1_350, Event::SpeechEnded { at: Millis(1_250) });
    assert_eq!(
        briefs(&step),
        [
            "resume".to_string(),
            format!(
                "emit {:?}",
                turn(
                    Backchannel,
                    TurnReason::TooShort {
                        speech: ms(300),
                        min: ms(500)
                    },
                    1_250
                )
            ),
            // The output kept 1000 → 1100 (100 ms); topped up to the 200 ms lead.
            "write 1 4800".into(),
        ]
    );
    // The backchannel's own transcript is nobody's turn.
    sim.at(
        1_400,
        Event::AsrFinal {
            text: "Yeah.".into(),
            start: Millis(950),
            end: Millis(1_250),
        },
    );
    sim.at(
        1_400,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(
        1_400,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(2_000);
    // 350 ms of audio from 900 with a 350 ms pause (1000 → 1350) ends at 1600; the second
    // clause starts where the first 200 ms end: 900 + 200 + 350 = 1450.
    assert_eq!(
        sim.events_from(from),
        vec![
            turn(
                Backchannel,
                TurnReason::TooShort {
                    speech: ms(300),
                    min: ms(500)
                },
                1_250
            ),
            ConversationEvent::Final {
                text: "Yeah.".into(),
                start_ms: 950,
                end_ms: 1_250
            },
            said("there was a fox.", 1_450),
            answer_end(
                "Once upon a time, there was a fox.",
                "Once upon a time, there was a fox.",
                false
            ),
            state(Speaking, Listening, 1_600),
        ]
    );
    // Every sample exactly once, in order.
    assert_eq!(sim.written(1), ramp(350 * F));
    assert_eq!(
        sim.writes(),
        vec![(900, 9_600), (1_350, 4_800), (1_400, 2_400)]
    );
    assert_eq!(sim.requests().len(), 1, "no turn for the backchannel");
    let s = sim.core.summary();
    assert_eq!((s.backchannels, s.barge_ins), (1, 0));
}

#[test]
fn with_no_backchannel_window_speech_flushes_at_once() {
    let mut sim = speaking(CoreConfig {
        turn: TurnConfig {
            backchannel_min: Duration::ZERO,
            ..cfg().turn
        },
        ..cfg()
    });
    let step = sim.at(1_000, Event::SpeechStarted { at: Millis(950) });
    let b = briefs(&step);
    assert_eq!(b[0], "flush");
    assert_eq!(b.iter().filter(|s| *s == "flush").count(), 1);
    assert!(b.contains(&format!(
        "emit {:?}",
        ConversationEvent::BargeIn {
            at_ms: 950,
            detected_ms: 1_000,
            stop_latency_ms: 0,
            dropped_ms: 100,
        }
    )));
    assert!(!b.iter().any(|s| s == "pause"));
}

#[test]
fn half_duplex_ignores_the_user_while_the_assistant_speaks() {
    let mut sim = speaking(CoreConfig {
        turn: TurnConfig {
            half_duplex: true,
            ..cfg().turn
        },
        ..cfg()
    });
    let step = sim.at(1_000, Event::SpeechStarted { at: Millis(950) });
    assert_eq!(
        briefs(&step),
        [format!(
            "emit {:?}",
            turn(Ignored, TurnReason::HalfDuplex, 950)
        )]
    );
    sim.at(1_050, audio(1, 1, 200 * F, 150 * F));
    sim.at(
        1_050,
        Event::LlmFinished {
            answer: AnswerId(1),
            stats: None,
        },
    );
    sim.at(
        1_050,
        Event::TtsDone {
            answer: AnswerId(1),
        },
    );
    sim.run_until(2_000);
    assert_eq!(sim.written(1), ramp(350 * F));
    assert_eq!(
        sim.events().last(),
        Some(&state(Speaking, Listening, 1_250))
    );
}

#[test]
fn a_client_interrupt_stops_the_answer_like_a_barge_in() {
    let mut sim = speaking(cfg());
    let step = sim.at(1_000, Event::ClientInterrupt);
    assert_eq!(
        briefs(&step),
        [
            "flush".to_string(),
            "cancel-gen 1".into(),
            "cancel-speech 1".into(),
            format!(
                "emit {:?}",
                answer_end(
                    "Once upon a time, there was a fox.",
                    "Once upon a time,",
                    true
                )
            ),
            format!("emit {:?}", state(Speaking, Listening, 1_000)),
        ]
    );
    assert!(sim.at(1_050, audio(1, 1, 200 * F, 150 * F)).is_empty());
}
