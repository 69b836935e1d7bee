//! The conversation as a sans-IO state machine: no threads, no clocks, no channels.
//!
//! [`ConversationCore::handle`] takes one [`Event`] (VAD speech start/end, ASR partial/final,
//! LLM token/end/error, TTS audio, output position, typed text, interrupt, voice change, tick)
//! and the moment it happens on the input clock ([`Millis`]), and returns the [`Action`]s the
//! driver must carry out, in order: start/cancel a generation, speak a clause, write/pause/
//! resume/flush audio, switch voice, emit a typed [`ConversationEvent`].
//! [`ConversationCore::next_deadline`] says when to call again with [`Event::Tick`] if nothing
//! else happens first. Time is a parameter, so tests run on virtual time, in microseconds, and
//! the same script always gives the same actions.
//!
//! ```ignore
//! let mut core = ConversationCore::new(config, token_counter);
//! loop {
//!     let (event, now) = driver.next_event_or(core.next_deadline());   // Event::Tick on timeout
//!     for action in core.handle(event, now) {
//!         driver.perform(action);   // LLM worker, TTS worker, output queue, event sink
//!     }
//!     if core.is_done() { break; }
//! }
//! ```
//!
//! What it does (the semantics of the threaded loop in [`crate::conversation`]):
//! - **Turns**: [`crate::turn::TurnDetector`] on the input clock. A turn that ended waits
//!   (Thinking) until the recogniser has processed past the VAD's end decision and, if a partial
//!   announced more text, for its final (at most `final_hold` on the recogniser's clock). A final
//!   belongs to the turn whose speech segment it starts at; a backchannel's does not.
//! - **Speculative prefill**: each changed partial transcript of an open turn becomes an
//!   [`Action::Prefill`] of the prompt the turn would end with.
//! - **Answers**: the LLM's tokens are cut into clauses here, once ([`Action::SpeakText`]); the
//!   voice's audio comes back as [`Event::TtsAudio`] and is written at most `output_lead` ahead
//!   of playback, so a barge-in has little to throw away.
//! - **Barge-in**: user speech over the answer pauses the output at once (the first action of
//!   that step), keeping what is queued; a backchannel (shorter than `backchannel_min`) resumes
//!   it where it stopped; a barge-in flushes it (one [`Action::FlushAudio`]) and cancels the
//!   generation and the speech. Events of a cancelled answer carry its [`AnswerId`] and are
//!   dropped, so none of its audio is written after the flush. Half-duplex ignores the user
//!   while the assistant speaks.
//! - **Memory**: exchanges are remembered as heard (only clauses that started playing), bounded
//!   by tokens ([`crate::memory::ConversationMemory`]).
//! - **Fallback**: an unreachable LLM is answered with
//!   [`crate::events::UNREACHABLE_SENTENCE`], a full model queue with
//!   [`crate::events::BUSY_SENTENCE`]; neither enters the memory.
//! - **Voice switch**: applied between answers ([`Action::SetVoice`]).
//! - **Latency**: per turn, endpointing, ASR finalisation, LLM first token, first clause, TTS
//!   first chunk and onset ([`crate::events::TurnLatency`]), all from the `now`s given.
//!
//! Clocks: `now` is the input clock (ms since the first input sample), which the driver must not
//! run ahead of the VAD by more than it has to (the turn detector's timers fire at `now`). The
//! output's frame counter is mapped onto it through [`Event::OutputPlayed`] readings (the
//! smallest offset seen); with no reading, output frame 0 is input moment 0.

// Wall clocks, threads and channels are the driver's (clippy.toml lists them); a call in here
// fails `cargo clippy -D warnings`.
#![deny(clippy::disallowed_methods)]

mod answer;
mod dual;
mod io;
mod output;
mod time;
mod turns;

#[cfg(test)]
mod tests;

pub use io::{
    Action, AnswerId, ClauseId, CoreConfig, DualPathConfig, Event, LlmFailure, SCENE_MAX_AGE,
};
pub use time::Millis;

use crate::events::{ConversationEvent, ConversationSummary, LoopState, SharedCounter};
use crate::llm::ChatMessage;
use crate::memory::ConversationMemory;
use crate::turn::TurnDetector;
use answer::Answer;
use time::OutputClock;
use turns::{PendingOverlap, TurnRecord};
use vr_core::VoiceKind;

/// One conversation's state. See the module docs.
pub struct ConversationCore {
    cfg: CoreConfig,
    detector: TurnDetector,
    memory: ConversationMemory<SharedCounter>,
    out: OutputClock,
    /// The latest `now` handed in (time never runs backwards in here).
    now: Millis,
    state: LoopState,
    turn: TurnRecord,
    /// Turns answered so far (spoken and typed share the count).
    turns: u32,
    last_answer: u64,
    answer: Option<Answer>,
    overlap: Option<PendingOverlap>,
    /// The voice the synthesizer speaks with, once confirmed.
    voice: Option<VoiceKind>,
    /// A voice change waiting for the answer in flight to end.
    pending_voice: Option<VoiceKind>,
    /// What the camera showed, and when that was said.
    scene: Option<(String, Millis)>,
    /// How far the recogniser has processed the input.
    asr_pos: Millis,
    /// A turn that ended and waits for the recogniser to finalise it: when it ended.
    awaiting: Option<Millis>,
    /// The VAD has reported the end of the user's speech in an open turn, and no new start.
    user_paused: bool,
    /// A dual-path draft started in the user's pause, before the turn ended.
    early: Option<dual::EarlyDraft>,
    /// The recogniser showed text (a partial) that no final has closed yet.
    asr_pending: bool,
    input_done: bool,
    stopped: bool,
    failure: Option<String>,
    summary: ConversationSummary,
    /// Actions of the step in progress.
    actions: Vec<Action>,
}

impl ConversationCore {
    pub fn new(cfg: CoreConfig, counter: SharedCounter) -> Self {
        Self {
            detector: TurnDetector::new(cfg.turn),
            memory: ConversationMemory::new(cfg.system.clone(), cfg.max_memory_tokens, counter),
            out: OutputClock::new(cfg.output_rate),
            cfg,
            now: Millis::ZERO,
            state: LoopState::Listening,
            turn: TurnRecord::default(),
            turns: 0,
            last_answer: 0,
            answer: None,
            overlap: None,
            voice: None,
            pending_voice: None,
            scene: None,
            asr_pos: Millis::ZERO,
            awaiting: None,
            user_paused: false,
            early: None,
            asr_pending: false,
            input_done: false,
            stopped: false,
            failure: None,
            summary: ConversationSummary::default(),
            actions: Vec::new(),
        }
    }

    /// Applies `event`, which happened at `now` (input clock), and returns what to do.
    pub fn handle(&mut self, event: Event, now: Millis) -> Vec<Action> {
        self.now = self.now.max(now);
        if self.is_done() {
            return Vec::new();
        }
        let vad = matches!(
            event,
            Event::SpeechStarted { .. } | Event::SpeechEnded { .. }
        );
        // A VAD event fires the timers due before its own moment itself; anything else must
        // not be applied before the timers that were due by now.
        if !vad {
            self.tick_detector();
        }
        self.dispatch(event);
        if !self.is_done() {
            self.tick_detector();
            self.pump();
        }
        std::mem::take(&mut self.actions)
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::SpeechStarted { at } => self.on_speech_started(at),
            Event::SpeechEnded { at } => self.on_speech_ended(at),
            Event::TurnModel {
                speech_end,
                probability,
            } => self.on_turn_model(speech_end, probability),
            Event::AsrPartial {
                text,
                stable_prefix_len,
            } => self.on_partial(text, stable_prefix_len),
            Event::AsrFinal { text, start, end } => self.on_final(text, start, end),
            Event::AsrProgress { upto } => {
                self.asr_pos = self.asr_pos.max(upto);
                self.maybe_draft_early();
                self.try_start_awaited();
            }
            Event::InputEnded { at } => self.on_input_ended(at),
            Event::RecognizerFailed { reason } => {
                let message = format!("speech recognition failed: {reason}");
                self.emit(ConversationEvent::Error {
                    message: message.clone(),
                });
                self.cancel_answer();
                self.failure = Some(message);
            }
            Event::LlmToken { answer, token } => self.on_llm_token(answer, token),
            Event::LlmFinished { answer, stats } => self.on_llm_finished(answer, stats),
            Event::DraftToken { answer, token } => self.on_draft_token(answer, token),
            Event::DraftFinished { answer, complete } => self.on_draft_finished(answer, complete),
            Event::DraftFailed { answer, reason } => self.on_draft_failed(answer, reason),
            Event::LlmFailed { answer, failure } => self.on_llm_failed(answer, failure),
            Event::TtsAudio {
                answer,
                clause,
                samples,
            } => self.on_tts_audio(answer, clause, samples),
            Event::TtsDone { answer } => self.on_tts_done(answer),
            Event::TtsFailed {
                answer,
                clause,
                reason,
            } => self.on_tts_failed(answer, clause, reason),
            Event::OutputPlayed { frames } => self.out.observe(frames, self.now),
            Event::ClientText(text) => self.on_client_text(&text),
            Event::ClientInterrupt => {
                if self.answer.is_some() {
                    self.cancel_answer();
                    self.set_state(LoopState::Listening);
                }
            }
            Event::ClientVoice(kind) => self.pending_voice = Some(kind),
            Event::VoiceReady { voice, sample_rate } => {
                self.voice = Some(voice);
                self.emit(ConversationEvent::Voice { voice, sample_rate });
            }
            Event::VoiceFailed { voice, reason } => {
                let current = self.voice.map_or("the previous voice", VoiceKind::name);
                self.emit(ConversationEvent::Error {
                    message: format!(
                        "cannot switch to the {voice} voice, still speaking with {current}: {reason}"
                    ),
                });
            }
            Event::Scene { description } => self.on_scene(description),
            Event::Stop => {
                self.cancel_answer();
                self.stopped = true;
            }
            Event::Tick => {}
        }
    }

    fn on_scene(&mut self, description: Option<String>) {
        let description = description
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty());
        let changed = self.scene.as_ref().map(|(d, _)| d) != description.as_ref();
        self.scene = description.map(|d| (d, self.now));
        if changed {
            self.emit(ConversationEvent::Scene {
                description: self
                    .scene
                    .as_ref()
                    .map(|(d, _)| d.clone())
                    .unwrap_or_default(),
                at_ms: self.now.ms(),
            });
        }
    }

    /// The prompt for an answer to `user_text`: the memory, then the user's words, preceded by
    /// what the camera shows if that is recent. The scene goes in the user's message, not the
    /// system message, so the cached prefix of the conversation stays the same as it changes.
    fn prompt(&self, user_text: &str) -> Vec<ChatMessage> {
        let fresh = self
            .scene
            .as_ref()
            .filter(|(_, at)| self.now.since(*at) <= SCENE_MAX_AGE.as_millis() as u64);
        match fresh {
            Some((scene, _)) => self
                .memory
                .messages_with_user(&format!("(My camera shows {scene}.) {user_text}")),
            None => self.memory.messages_with_user(user_text),
        }
    }

    /// Output work after every event: write audio within the lead, report what started
    /// playing, end a finished answer, switch voice between answers.
    fn pump(&mut self) {
        self.feed_output();
        self.announce();
        self.maybe_finish_answer();
        if self.answer.is_none() {
            self.apply_voice();
        }
    }

    /// When to call [`ConversationCore::handle`] with [`Event::Tick`] if no other event comes
    /// first; `None`: only an event can change anything.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.is_done() {
            return None;
        }
        let turn = self.detector.next_deadline().map(|d| {
            let t = Millis::deadline_of(d, self.cfg.turn.sample_rate);
            // The backchannel timer runs behind `now` (see `tick_detector`).
            if self.overlap.is_some() {
                t.after(self.cfg.vad_end_lag)
            } else {
                t
            }
        });
        let output = self.output_deadline();
        match (turn, output) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The conversation is over: stopped, the recogniser failed, or the input ended and
    /// everything in it was answered.
    pub fn is_done(&self) -> bool {
        self.stopped
            || self.failure.is_some()
            || (self.input_done
                && self.answer.is_none()
                && self.awaiting.is_none()
                && !self.detector.user_turn_open())
    }

    /// Why the conversation ended early, when the recogniser failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn state(&self) -> LoopState {
        self.state
    }

    pub fn summary(&self) -> &ConversationSummary {
        &self.summary
    }

    /// What the next request would start with: the system message and the remembered turns.
    pub fn memory(&self) -> Vec<ChatMessage> {
        self.memory.messages()
    }

    fn emit(&mut self, event: ConversationEvent) {
        if let ConversationEvent::Error { .. } = event {
            self.summary.errors += 1;
        }
        self.actions.push(Action::Emit(event));
    }

    fn set_state(&mut self, to: LoopState) {
        self.set_state_at(to, self.now);
    }

    /// A change that happened at `at`, which may be a little before the core noticed it.
    fn set_state_at(&mut self, to: LoopState, at: Millis) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.emit(ConversationEvent::State {
                from,
                to,
                at_ms: at.ms(),
            });
        }
    }

    /// Switches to the pending voice; only with no answer in flight, so nothing the old voice
    /// still holds can play.
    fn apply_voice(&mut self) {
        if let Some(kind) = self.pending_voice.take() {
            self.actions.push(Action::SetVoice(kind));
        }
    }
}
