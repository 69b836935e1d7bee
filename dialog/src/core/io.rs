//! What goes into the core ([`Event`]) and what comes out ([`Action`]), and its configuration.

use super::time::Millis;
use crate::config::DialogConfig;
use crate::events::ConversationEvent;
use crate::llm::{ChatMessage, GenerateRequest, GenerationStats, Sampling, Token};
use crate::turn::TurnConfig;
use crate::verifier::Verifier;
use std::sync::Arc;
use std::time::Duration;
use vr_core::SampleRate;
use vr_core::VoiceKind;

/// One answer of the conversation, numbered from 1. Every LLM and TTS event names the answer it
/// belongs to; the core drops events of any answer but the one in flight, which is how nothing
/// of a cancelled answer can reach the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnswerId(pub u64);

/// A clause of an answer, numbered from 0 in the order the core hands them to the synthesizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClauseId(pub u32);

/// Why a generation failed, as far as the core cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmFailure {
    /// Shown to the user as an error event.
    pub message: String,
    /// The model could not be reached at all ([`crate::DialogError::is_unreachable`]): the core
    /// speaks [`crate::events::UNREACHABLE_SENTENCE`] instead of staying silent.
    pub unreachable: bool,
    /// The model's queue was full ([`crate::DialogError::Busy`]): the core speaks
    /// [`crate::events::BUSY_SENTENCE`].
    pub busy: bool,
}

impl LlmFailure {
    /// What the user hears instead of silence, if anything.
    pub(crate) fn spoken(&self) -> Option<&'static str> {
        if self.unreachable {
            Some(crate::events::UNREACHABLE_SENTENCE)
        } else if self.busy {
            Some(crate::events::BUSY_SENTENCE)
        } else {
            None
        }
    }
}

impl From<&crate::DialogError> for LlmFailure {
    fn from(e: &crate::DialogError) -> Self {
        Self {
            message: e.to_string(),
            unreachable: e.is_unreachable(),
            busy: matches!(e, crate::DialogError::Busy { .. }),
        }
    }
}

/// Everything that can happen to a conversation. `now` (passed beside the event) is when the
/// driver hands it over, on the input clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The VAD that drives turn taking heard speech start at `at` (dated back to the first speech
    /// chunk; `now` is when it decided, `vad.min_speech_ms` later).
    SpeechStarted { at: Millis },
    /// The VAD heard speech end at `at` (`now` is when it decided: the VAD end lag later).
    SpeechEnded { at: Millis },
    /// The end-of-turn model's verdict on the pause that began at `speech_end` (a
    /// [`Event::SpeechEnded`] `at`): the probability that the user is done. Only counts under
    /// [`crate::turn::EndOfTurn::Model`] and while that pause is still the current one; `now` is
    /// when the verdict is known (the model's compute time after the speech end's report).
    TurnModel {
        speech_end: Millis,
        probability: f32,
    },
    /// The recogniser's current hypothesis for the utterance in progress.
    AsrPartial {
        text: String,
        stable_prefix_len: usize,
    },
    /// One utterance's final transcript; `start`/`end` on the input clock.
    AsrFinal {
        text: String,
        start: Millis,
        end: Millis,
    },
    /// The recogniser has processed the input up to `upto` (a turn waits for this to pass the
    /// VAD's end decision before it is answered).
    AsrProgress { upto: Millis },
    /// The input ended at `at` and everything in it was recognised.
    InputEnded { at: Millis },
    /// The recogniser failed: the conversation ends.
    RecognizerFailed { reason: String },
    /// One token of `answer`, with its features when the engine has them.
    LlmToken { answer: AnswerId, token: Token },
    /// `answer`'s generation ended (the model stopped, hit its length, or its stream closed).
    /// `stats`: the engine's account, when it gave one.
    LlmFinished {
        answer: AnswerId,
        stats: Option<GenerationStats>,
    },
    /// `answer`'s generation failed (or could not start).
    LlmFailed {
        answer: AnswerId,
        failure: LlmFailure,
    },
    /// One token of `answer`'s draft (the dual path's fast model), with its features.
    DraftToken { answer: AnswerId, token: Token },
    /// The drafter stopped by itself before the draft was full; `complete`: it ended its
    /// message (the whole answer is the draft), else it hit its length.
    DraftFinished { answer: AnswerId, complete: bool },
    /// The drafter failed: the slow path answers alone.
    DraftFailed { answer: AnswerId, reason: String },
    /// Audio of one clause of `answer`, already at the output's rate (the driver resamples the
    /// voice's audio, and flushes its resampler before [`Event::TtsDone`]).
    TtsAudio {
        answer: AnswerId,
        clause: ClauseId,
        samples: Vec<f32>,
    },
    /// Everything `answer` asked the synthesizer for has been delivered.
    TtsDone { answer: AnswerId },
    /// The synthesizer could not speak one clause of `answer`.
    TtsFailed {
        answer: AnswerId,
        clause: ClauseId,
        reason: String,
    },
    /// The output has played `frames` frames (silence included) by `now`.
    OutputPlayed { frames: u64 },
    /// Typed user input: a complete turn without audio.
    ClientText(String),
    /// Stop the current answer as a barge-in would; keep listening.
    ClientInterrupt,
    /// Speak the next answers with this voice (applied between answers).
    ClientVoice(VoiceKind),
    /// The synthesizer now speaks with `voice` (at start, and after [`Action::SetVoice`]).
    VoiceReady { voice: VoiceKind, sample_rate: u32 },
    /// [`Action::SetVoice`] failed; the previous voice stays.
    VoiceFailed { voice: VoiceKind, reason: String },
    /// What the user's camera shows now, in words (the vision stage's labels of the newest
    /// picture); `None`: the camera stopped. Answers started within [`SCENE_MAX_AGE`] of it put
    /// it in their prompt.
    Scene { description: Option<String> },
    /// End the conversation now.
    Stop,
    /// Nothing happened; time passed (call at [`super::ConversationCore::next_deadline`]).
    Tick,
}

/// How long a scene description stays true without a new one. The vision stage refreshes it
/// every few seconds while pictures arrive; older than this, the camera has stopped.
pub const SCENE_MAX_AGE: Duration = Duration::from_secs(15);

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Warm the LLM's cache with a prompt the turn is likely to end with (speculative prefill);
    /// on the dual path both models', since the draft and the slow model's request share it.
    Prefill { messages: Vec<ChatMessage> },
    /// Start generating `answer`; report its tokens as [`Event::LlmToken`].
    StartGeneration {
        answer: AnswerId,
        request: GenerateRequest,
    },
    /// Stop generating `answer`; tokens still in flight are ignored.
    CancelGeneration { answer: AnswerId },
    /// Dual path: draft the first words of `answer` on the fast model (with the hidden state);
    /// report its tokens as [`Event::DraftToken`], its end as [`Event::DraftFinished`].
    StartDraft {
        answer: AnswerId,
        request: GenerateRequest,
    },
    /// Stop drafting `answer` (the draft is full, or the answer was cancelled).
    CancelDraft { answer: AnswerId },
    /// Dual path, the slow model failed: the fast model completes `answer` from its kept draft
    /// (`request.assistant_prefix`); its tokens come back as [`Event::LlmToken`] of `answer`.
    StartFastCompletion {
        answer: AnswerId,
        request: GenerateRequest,
    },
    /// The turn ended at `upto` (input clock) with the recogniser's utterance still open: it may
    /// finalise it once its audio reaches `upto` rather than wait out its own final silence.
    EndUtterance { upto: Millis },
    /// Synthesize one clause of `answer`, after the ones before it. The core has already cut the
    /// text into clauses: the synthesizer speaks `text` as it is.
    SpeakText {
        answer: AnswerId,
        clause: ClauseId,
        text: String,
    },
    /// `answer` has no more text; report [`Event::TtsDone`] once its audio is all delivered.
    FinishSpeech { answer: AnswerId },
    /// Drop everything `answer` asked the synthesizer for.
    CancelSpeech { answer: AnswerId },
    /// Queue samples (output rate, mono) after what the output already holds.
    WriteAudio { answer: AnswerId, samples: Vec<f32> },
    /// Stop playing at once, keeping what is queued (the user may only be backchannelling).
    PauseAudio,
    /// Play what was kept at [`Action::PauseAudio`] from where it stopped.
    ResumeAudio,
    /// Drop everything queued, paused or not; none of it may ever play.
    FlushAudio,
    /// Speak the next answers with this voice; confirm with [`Event::VoiceReady`] or
    /// [`Event::VoiceFailed`].
    SetVoice(VoiceKind),
    /// Report this to the user (data channel, `--json`, metrics).
    Emit(ConversationEvent),
}

/// How the core behaves; [`CoreConfig::new`] takes the `[dialog]` section and fills the rest
/// with the shipped defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    pub turn: TurnConfig,
    pub system: ChatMessage,
    /// Memory budget in tokens, system message included.
    pub max_memory_tokens: usize,
    pub max_answer_tokens: usize,
    pub sampling: Sampling,
    /// Prefill the LLM on partial transcripts while the user speaks.
    pub speculative_prefill: bool,
    /// How far ahead of playback answer audio is written: what a barge-in has to throw away.
    pub output_lead: Duration,
    pub output_rate: SampleRate,
    /// Clause chunking (`tts.min_chunk_chars`, `tts.max_chunk_chars`).
    pub min_clause_chars: usize,
    pub max_clause_chars: usize,
    /// How long after the end of speech the VAD reports it (`vad.min_silence_ms` +
    /// `vad.speech_pad_ms`). While an overlap is pending the backchannel timer runs this far
    /// behind `now`, so a short "yeah" whose end is not reported yet is not taken for a barge-in.
    pub vad_end_lag: Duration,
    /// How long past the turn's end (on the recogniser's clock) to wait for a final that a
    /// partial announced: the recogniser's own VAD lag plus its `final_silence_ms` hold.
    pub final_hold: Duration,
    /// The dual path (fast draft, verifier, slow continuation); `None`: one model answers.
    pub dual: Option<DualPathConfig>,
}

/// How the dual path drafts and decides.
#[derive(Debug, Clone)]
pub struct DualPathConfig {
    /// Words in a draft: the drafter stops before the token that starts the next one.
    pub draft_words: usize,
    /// Most tokens the drafter may take for them.
    pub draft_max_tokens: usize,
    /// Keep the draft when the verifier scores at least this; 0 keeps every draft, 1 none.
    pub keep_threshold: f32,
    pub verifier: Arc<Verifier>,
    /// Draft while the user pauses, on the transcript so far, before the turn has ended: a
    /// turn that ends with that transcript takes the draft as it stands (see `core::dual`).
    pub early_draft: bool,
}

impl PartialEq for DualPathConfig {
    fn eq(&self, other: &Self) -> bool {
        self.draft_words == other.draft_words
            && self.draft_max_tokens == other.draft_max_tokens
            && self.keep_threshold == other.keep_threshold
            && Arc::ptr_eq(&self.verifier, &other.verifier)
            && self.early_draft == other.early_draft
    }
}

impl DualPathConfig {
    /// The verifier's decision for a draft scored `score` (`None`: it could not be scored).
    pub fn keeps(&self, score: Option<f32>) -> bool {
        if self.keep_threshold <= 0.0 {
            return true;
        }
        self.keep_threshold < 1.0 && score.is_some_and(|s| s >= self.keep_threshold)
    }
}

impl CoreConfig {
    pub fn new(dialog: &DialogConfig, output_rate: SampleRate) -> Self {
        Self {
            turn: dialog.turn_config(),
            system: dialog.system_message(),
            max_memory_tokens: dialog.max_memory_tokens,
            max_answer_tokens: dialog.max_answer_tokens,
            sampling: Sampling::GREEDY,
            speculative_prefill: dialog.speculative_prefill,
            output_lead: Duration::from_millis(dialog.output_lead_ms),
            output_rate,
            min_clause_chars: 12,
            max_clause_chars: 180,
            vad_end_lag: Duration::from_millis(230),
            final_hold: Duration::from_secs(2),
            dual: None,
        }
    }
}
