//! The conversation's event schema: what the loop reports ([`ConversationEvent`], serialised
//! once as `{"type": "<snake_case variant>", ...fields}` for `listen --json`, the WebRTC data
//! channel and `eval dialog`), its states, the per-turn latency breakdown and the summary of a
//! finished conversation. The sans-IO core emits these; the pipeline that drives it only carries
//! them to an [`EventSink`].
//!
//! Clocks: every `*_ms` in a [`ConversationEvent`] is milliseconds of the *input* sample clock
//! (0 = the first input sample). Output-side moments (first answer sample played, flush) are
//! measured on the output's clock and mapped onto the input clock.

use crate::memory::TokenCounter;
use crate::turn::{TurnEventKind, TurnReason};
use serde::Serialize;
use std::sync::{mpsc, Arc};

/// The sentence spoken (and printed) when the language model cannot be reached.
pub const UNREACHABLE_SENTENCE: &str = "I can't reach the language model right now.";
/// Spoken when the shared language model's queue is full (other sessions' requests fill it).
pub const BUSY_SENTENCE: &str =
    "I'm busy with other conversations; please ask me again in a moment.";

/// The loop's state; every change is reported as [`ConversationEvent::State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    /// Waiting for the user.
    Listening,
    /// The user holds the floor (speaking, or pausing within the turn).
    UserSpeaking,
    /// The turn is over; the answer is being generated but nothing plays yet.
    Thinking,
    /// The answer's audio is playing.
    Speaking,
}

/// How the user's turn came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnInput {
    /// Spoken: the recogniser and the turn detector ended it.
    Speech,
    /// Typed ([`ConversationHandle::send_text`]): no speech stages.
    Text,
}

/// Per-turn latency breakdown. All durations in milliseconds; `None` when the stage did not
/// happen in this turn (a typed turn has no speech end, endpointing or ASR final; a fallback
/// sentence has no LLM token). The stages overlap in time (the recogniser finalises while the
/// endpointer waits), so they do not sum to the onset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnLatency {
    /// Turn number in this conversation, from 1 (spoken and typed turns share the count).
    pub turn: u32,
    pub input: TurnInput,
    /// End of the user's speech (the VAD's speech end of the turn's last segment), input clock.
    pub speech_end_ms: Option<u64>,
    /// Endpointing wait: end of speech → the turn detector's `TurnEnded` (input clock: the
    /// silence timeout plus whatever the recogniser's delivery delay added).
    pub endpointing_ms: Option<u64>,
    /// ASR finalisation: end of speech → the turn's final transcript reached the loop.
    pub asr_final_ms: Option<u64>,
    /// `generate` called → first token.
    pub llm_first_token_ms: Option<u64>,
    /// `generate` called → first complete clause handed to the synthesizer.
    pub first_clause_ms: Option<u64>,
    /// First clause handed to the synthesizer → its first audio chunk.
    pub tts_first_chunk_ms: Option<u64>,
    /// Onset: end of the user's speech (a typed turn: the text reaching the loop) → first
    /// answer sample played, on the output clock.
    pub onset_ms: u64,
}

/// Everything the loop reports, in order. The JSON (`listen --json`, the WebRTC data channel) is
/// `{"type": "<snake_case variant>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationEvent {
    State {
        from: LoopState,
        to: LoopState,
        at_ms: u64,
    },
    /// The recogniser's current hypothesis for the utterance in progress.
    Partial {
        text: String,
        stable_prefix_len: usize,
    },
    /// One utterance's final transcript (a turn may have several).
    Final {
        text: String,
        start_ms: u64,
        end_ms: u64,
    },
    /// A turn-taking decision and why.
    Turn {
        kind: TurnEventKind,
        reason: TurnReason,
        at_ms: u64,
    },
    /// One clause of the answer, as it starts playing.
    AssistantText {
        text: String,
        at_ms: u64,
    },
    /// The user interrupted the assistant. `at_ms`: the VAD's speech start (dated back to the
    /// first speech chunk); `detected_ms`: when the VAD reported it (after `vad.min_speech_ms`);
    /// `stop_latency_ms`: from `detected_ms` to the output flush, measured on the output clock;
    /// `dropped_ms`: answer audio that was queued and never played.
    BargeIn {
        at_ms: u64,
        detected_ms: u64,
        stop_latency_ms: u64,
        dropped_ms: u64,
    },
    TurnLatency(TurnLatency),
    /// The voice answers are spoken with: once at the start, then after each change
    /// ([`ConversationHandle::set_voice`]; applied between answers). `sample_rate`: the voice's
    /// own rate in Hz, before resampling to the output.
    Voice {
        voice: vr_core::VoiceKind,
        sample_rate: u32,
    },
    /// What the user's camera shows, as the answers' prompts will say it (sent when it changes;
    /// empty: no picture any more).
    Scene {
        description: String,
        at_ms: u64,
    },
    /// The answer is over. `text`: everything the LLM generated; `spoken`: the clauses that
    /// started playing (the fallback sentence when the LLM could not be reached);
    /// `interrupted`: cut short by a barge-in, `interrupt()` or `stop()`.
    AnswerEnd {
        text: String,
        spoken: String,
        interrupted: bool,
        /// The language model's account of the answer, once it finished (the latency event
        /// comes at the first answer sample, usually before the model has): prompt tokens, how
        /// many of them its KV cache already held (speculative prefill, earlier turns), tokens
        /// generated. `None` when it did not finish (interrupted, failed, fallback sentence).
        prompt_tokens: Option<usize>,
        reused_tokens: Option<usize>,
        generated_tokens: Option<usize>,
    },
    Error {
        message: String,
    },
    /// Dual path: the verifier's decision on the fast model's draft. `score`: its probability
    /// that the slow model accepts the draft (`None` when it could not score it); `kept`: the
    /// draft is spoken and the slow model continues after it, else it is dropped unheard and the
    /// slow model answers alone; `draft_ms`: answer start → decision.
    Draft {
        text: String,
        score: Option<f32>,
        kept: bool,
        draft_ms: u64,
        /// Drafted while the user paused, before the turn ended (`dialog.dual.early_draft`):
        /// `draft_ms` then counts from the turn's end, so it can be 0.
        early: bool,
    },
    /// Dual path: silence between the kept draft's last sample and the continuation's first
    /// (0 when the continuation was queued before the draft ran out), output clock.
    Seam {
        gap_ms: u64,
    },
}

/// Where events go: a channel, a printer, a WebRTC data channel.
pub trait EventSink: Send {
    fn emit(&mut self, event: ConversationEvent);
}

/// A bounded channel that loses nothing: `emit` waits while it is full, so it is for a consumer
/// that keeps reading (tests, `eval dialog`). A live client that may stall gets a sink that drops
/// and counts instead (`transport`'s event sender).
impl EventSink for mpsc::SyncSender<ConversationEvent> {
    fn emit(&mut self, event: ConversationEvent) {
        // A receiver that went away no longer wants events; the loop goes on.
        let _ = self.send(event);
    }
}

impl<F: FnMut(ConversationEvent) + Send> EventSink for F {
    fn emit(&mut self, event: ConversationEvent) {
        self(event)
    }
}

/// What a finished conversation did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ConversationSummary {
    /// User turns that ended (`TurnEnded`) with a non-empty transcript.
    pub turns: u32,
    /// Answers that started playing.
    pub answers: u32,
    pub barge_ins: u32,
    pub backchannels: u32,
    /// Errors reported as [`ConversationEvent::Error`].
    pub errors: u32,
    pub latencies: Vec<TurnLatency>,
}

/// Counts tokens for the memory bound; shared by every conversation.
pub type SharedCounter = Arc<dyn TokenCounter + Send + Sync>;

impl TokenCounter for SharedCounter {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}
