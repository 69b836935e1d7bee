//! Virtual-time tests of the core: every test is a script of events at exact moments, and
//! asserts the exact actions and events that come out.

mod answers;
mod barge_in;
mod dual;
mod scene;
mod turns;

use super::*;
use crate::events::{ConversationEvent, LoopState, TurnInput, TurnLatency};
use crate::llm::{ChatMessage, GenerateRequest, Sampling, Token};
use crate::memory::ByteEstimate;
use crate::turn::{EndOfTurn, TurnConfig, TurnEventKind, TurnReason};
use std::sync::Arc;
use std::time::Duration;
use vr_core::SampleRate;

/// Output frames per millisecond (48 kHz output).
const F: u64 = 48;
const SYSTEM: &str = "You are Relay.";

fn cfg() -> CoreConfig {
    CoreConfig {
        turn: TurnConfig {
            sample_rate: SampleRate::PIPELINE,
            silence_timeout: Duration::from_millis(600),
            grace: Duration::from_millis(400),
            backchannel_min: Duration::from_millis(500),
            half_duplex: false,
            end_of_turn: EndOfTurn::Timer,
        },
        system: ChatMessage::system(SYSTEM),
        max_memory_tokens: 1536,
        max_answer_tokens: 160,
        sampling: Sampling::GREEDY,
        speculative_prefill: true,
        output_lead: Duration::from_millis(200),
        output_rate: SampleRate(48_000),
        min_clause_chars: 12,
        max_clause_chars: 180,
        vad_end_lag: Duration::from_millis(100),
        final_hold: Duration::from_secs(2),
        dual: None,
    }
}

/// A core with everything it did, stamped with the moment it was asked to.
struct Sim {
    core: ConversationCore,
    log: Vec<(u64, Action)>,
    /// `handle` calls so far.
    steps: usize,
}

impl Sim {
    fn new() -> Self {
        Self::with(cfg())
    }

    fn with(cfg: CoreConfig) -> Self {
        Self {
            core: ConversationCore::new(cfg, Arc::new(ByteEstimate)),
            log: Vec::new(),
            steps: 0,
        }
    }

    /// `event` at `ms`; the actions of that one step.
    fn at(&mut self, ms: u64, event: Event) -> Vec<Action> {
        self.steps += 1;
        let actions = self.core.handle(event, Millis(ms));
        self.log.extend(actions.iter().map(|a| (ms, a.clone())));
        actions
    }

    /// Ticks at every deadline up to `ms`, then at `ms`, as a driver sleeping on
    /// `next_deadline` would.
    fn run_until(&mut self, ms: u64) {
        for _ in 0..100_000 {
            match self.core.next_deadline() {
                Some(d) if d.ms() < ms => {
                    self.at(d.ms(), Event::Tick);
                }
                _ => {
                    self.at(ms, Event::Tick);
                    return;
                }
            }
        }
        panic!("deadlines never got past {ms} ms");
    }

    /// The events emitted from log index `from` on.
    fn events_from(&self, from: usize) -> Vec<ConversationEvent> {
        self.log[from..]
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Emit(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<ConversationEvent> {
        self.events_from(0)
    }

    /// Every sample written for `answer`, in order.
    fn written(&self, answer: u64) -> Vec<f32> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::WriteAudio {
                    answer: id,
                    samples,
                } if id.0 == answer => Some(samples.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// (moment, frames) of each write, for any answer.
    fn writes(&self) -> Vec<(u64, usize)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::WriteAudio { samples, .. } => Some((*t, samples.len())),
                _ => None,
            })
            .collect()
    }

    fn latencies(&self) -> Vec<TurnLatency> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ConversationEvent::TurnLatency(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// The request of every `StartGeneration`, by answer number.
    fn requests(&self) -> Vec<(u64, GenerateRequest)> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::StartGeneration { answer, request } => Some((answer.0, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// A spoken question: speech from `start` to `end` ms (the VAD reports the start 250 ms in,
    /// the end 100 ms after it), its final 200 ms after the end, the recogniser caught up.
    fn say(&mut self, start: u64, end: u64, text: &str) {
        self.at(start + 250, Event::SpeechStarted { at: Millis(start) });
        self.at(end + 100, Event::SpeechEnded { at: Millis(end) });
        self.finalise(end + 200, text, start, end);
    }

    /// The recogniser's final for speech `start..end`, arriving at `ms` with its progress there.
    fn finalise(&mut self, ms: u64, text: &str, start: u64, end: u64) {
        self.at(
            ms,
            Event::AsrFinal {
                text: text.into(),
                start: Millis(start),
                end: Millis(end),
            },
        );
        self.at(ms, Event::AsrProgress { upto: Millis(ms) });
    }

    /// A typed question at `ms`, answered with `answer` (one token per word, 10 ms apart from
    /// `ms + 100`), its audio (one chunk per clause, `audio_ms` long) 50 ms after the last
    /// token; returns the answer's number.
    fn typed_answer(&mut self, ms: u64, question: &str, answer: &str, audio_ms: &[u64]) -> u64 {
        self.at(ms, Event::ClientText(question.into()));
        let id = self.requests().last().map_or(0, |(id, _)| *id);
        let mut t = ms + 100;
        for (k, word) in answer.split_inclusive(' ').enumerate() {
            t = ms + 100 + 10 * k as u64;
            self.at(t, token(id, word));
        }
        self.at(
            t,
            Event::LlmFinished {
                answer: AnswerId(id),
                stats: None,
            },
        );
        let mut produced = 0;
        for (k, len) in audio_ms.iter().enumerate() {
            self.at(t + 50, audio(id, k as u32, produced, len * F));
            produced += len * F;
        }
        self.at(
            t + 50,
            Event::TtsDone {
                answer: AnswerId(id),
            },
        );
        id
    }

    /// Every action but the emitted events, briefly, with its moment.
    fn commands(&self) -> Vec<(u64, String)> {
        self.log
            .iter()
            .filter(|(_, a)| !matches!(a, Action::Emit(_)))
            .map(|(t, a)| (*t, brief(a)))
            .collect()
    }
}

fn brief(a: &Action) -> String {
    match a {
        Action::Prefill { messages } => format!(
            "prefill {}",
            messages.last().map_or("", |m| m.content.as_str())
        ),
        Action::StartGeneration { answer, request } => format!(
            "start {} {}",
            answer.0,
            request.messages.last().map_or("", |m| m.content.as_str())
        ),
        Action::CancelGeneration { answer } => format!("cancel-gen {}", answer.0),
        Action::StartDraft { answer, .. } => format!("draft {}", answer.0),
        Action::CancelDraft { answer } => format!("cancel-draft {}", answer.0),
        Action::StartFastCompletion { answer, request } => {
            format!("fast-complete {} {:?}", answer.0, request.assistant_prefix)
        }
        Action::SpeakText {
            answer,
            clause,
            text,
        } => format!("speak {}/{} {text}", answer.0, clause.0),
        Action::FinishSpeech { answer } => format!("finish-speech {}", answer.0),
        Action::CancelSpeech { answer } => format!("cancel-speech {}", answer.0),
        Action::WriteAudio { answer, samples } => format!("write {} {}", answer.0, samples.len()),
        Action::PauseAudio => "pause".into(),
        Action::ResumeAudio => "resume".into(),
        Action::FlushAudio => "flush".into(),
        Action::SetVoice(v) => format!("voice {v}"),
        Action::EndUtterance { upto } => format!("end-utterance {}", upto.ms()),
        Action::Emit(e) => format!("emit {e:?}"),
    }
}

fn cmds(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(t, s)| (*t, (*s).to_string())).collect()
}

fn token(answer: u64, text: &str) -> Event {
    Event::LlmToken {
        answer: AnswerId(answer),
        token: Token {
            text: text.into(),
            id: None,
            features: None,
        },
    }
}

/// `frames` samples of clause `clause` whose values are their index in the answer, so the
/// written audio can be checked sample for sample.
fn audio(answer: u64, clause: u32, from: u64, frames: u64) -> Event {
    Event::TtsAudio {
        answer: AnswerId(answer),
        clause: ClauseId(clause),
        samples: (from..from + frames).map(|i| i as f32).collect(),
    }
}

fn ramp(frames: u64) -> Vec<f32> {
    (0..frames).map(|i| i as f32).collect()
}

fn state(from: LoopState, to: LoopState, at_ms: u64) -> ConversationEvent {
    ConversationEvent::State { from, to, at_ms }
}

fn turn(kind: TurnEventKind, reason: TurnReason, at_ms: u64) -> ConversationEvent {
    ConversationEvent::Turn {
        kind,
        reason,
        at_ms,
    }
}

fn said(text: &str, at_ms: u64) -> ConversationEvent {
    ConversationEvent::AssistantText {
        text: text.into(),
        at_ms,
    }
}

fn answer_end(text: &str, spoken: &str, interrupted: bool) -> ConversationEvent {
    ConversationEvent::AnswerEnd {
        text: text.into(),
        spoken: spoken.into(),
        interrupted,
        prompt_tokens: None,
        reused_tokens: None,
        generated_tokens: None,
    }
}

fn messages(turns: &[(crate::llm::Role, &str)]) -> Vec<ChatMessage> {
    std::iter::once(ChatMessage::system(SYSTEM))
        .chain(turns.iter().map(|(role, text)| ChatMessage {
            role: *role,
            content: (*text).into(),
        }))
        .collect()
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}
