//! The cascaded assistant: Listening → UserSpeaking → Thinking → Speaking, with barge-in.
//!
//! One [`Assistant`] holds what is expensive and shareable (the LLM engine behind an `Arc`, the
//! recipes for building a recogniser and a voice) and hands out one [`Conversation`] per session
//! (a `voicerelay listen` run, a WebRTC peer, an eval dialogue). A conversation owns its own
//! recogniser, synthesizer, turn detector and token-bounded memory; sessions share the LLM (the
//! local engine serialises them on its one worker thread).
//!
//! What the conversation does is decided by the sans-IO [`vr_dialog::core::ConversationCore`] (turns,
//! speculative prefill, clauses, paced output, barge-in and backchannels, memory, the fallback
//! sentence, voice changes, latency); [`Conversation::run`] hands it to the threaded driver in
//! [`crate::driver`] (VAD, recogniser, LLM and TTS workers around one event-driven loop), which
//! takes over the calling thread.
//!
//! Clocks: every `*_ms` in a [`vr_dialog::ConversationEvent`] is milliseconds of the *input* sample clock
//! (0 = the first input sample). Output-side moments (first answer sample played, flush) are
//! measured on the output's [`AudioOutput::played`] clock and mapped onto the input clock.

use crate::driver::Control;
use crate::PipelineError;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vr_asr::StreamingRecognizer;
use vr_core::{SampleIndex, SampleRate};
use vr_dialog::config::DialogConfig;
use vr_dialog::core::Event;
use vr_dialog::llm::{LlmEngine, Sampling};
use vr_dialog::{ConversationSummary, EventSink, SharedCounter};
use vr_tts::Synthesizer;

pub use crate::wav_output::WavOutput;

/// Where answer audio goes: the speaker (through capture's playback ring), a WAV file written on
/// a simulated real-time clock ([`WavOutput`]), or a WebRTC track (transport).
///
/// Positions are frames of mono audio at [`AudioOutput::rate`].
pub trait AudioOutput: Send {
    /// The loop resamples the synthesizer's audio to this rate.
    fn rate(&self) -> SampleRate;
    /// Enqueues samples to play after everything already queued; never blocks for long.
    fn write(&mut self, samples: &[f32]) -> Result<(), PipelineError>;
    /// Drops everything queued and not yet played or sent (barge-in); returns the frames dropped.
    fn flush(&mut self) -> usize;
    /// The output's own clock: frames played or sent so far, silence included (an idle speaker
    /// keeps playing silence, so the clock keeps running).
    fn played(&self) -> SampleIndex;
    /// Frames queued and not yet played or sent.
    fn queued(&self) -> usize;
    /// The conversation is over: play out or write what is queued (a file is finalised here).
    /// Called once, at the end of [`Conversation::run`].
    fn close(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// Builds one streaming recogniser per conversation.
pub type RecognizerFactory =
    Arc<dyn Fn() -> Result<Box<dyn StreamingRecognizer>, PipelineError> + Send + Sync>;
/// Builds a synthesizer for a conversation: `None` is the configured voice (with its fallback),
/// `Some(kind)` that voice exactly (a session's voice change). Must be cheap: weights are
/// loaded once when the factory is made, not per call.
pub type SynthesizerFactory = Arc<
    dyn Fn(Option<vr_tts::VoiceKind>) -> Result<Box<dyn Synthesizer>, PipelineError> + Send + Sync,
>;

/// Builds the stand-alone VAD that drives turn taking (see [`AssistantParts::vad`]).
pub type VadFactory = Arc<dyn Fn() -> Result<vr_asr::vad::SileroVad, PipelineError> + Send + Sync>;

/// The parts an [`Assistant`] is made of (see [`Assistant::from_configs`] for the usual ones).
#[derive(Clone)]
pub struct AssistantParts {
    pub dialog: DialogConfig,
    pub llm: Arc<dyn LlmEngine>,
    pub sampling: Sampling,
    pub token_counter: SharedCounter,
    pub recognizer: RecognizerFactory,
    pub synthesizer: SynthesizerFactory,
    /// The synthesizer's clause chunking (`tts.min_chunk_chars`, `tts.max_chunk_chars`).
    pub min_clause_chars: usize,
    pub max_clause_chars: usize,
    /// A VAD run on its own thread for turn taking and barge-in, configured like the
    /// recogniser's, so speech starts and ends are never delayed by a Whisper decode. `None`:
    /// the recogniser's own VAD events drive turn taking.
    pub vad: Option<VadFactory>,
    /// How long after the end of speech the VAD reports it (`vad.min_silence_ms` +
    /// `vad.speech_pad_ms`): the backchannel timer waits this long before calling an overlap a
    /// barge-in, so a short "yeah" whose end is not reported yet is not mistaken for one.
    pub vad_end_lag: Duration,
    /// `dialog.turn.mode = "smart_turn"`: the end-of-turn model, run by the VAD thread on each
    /// speech end of the stand-alone VAD (needs `vad`); `None`: the silence timer alone.
    pub turn_model: Option<Arc<vr_dialog::smart_turn::SmartTurn>>,
    /// `[dialog.dual]`: a fast drafter speaks the first words while [`AssistantParts::llm`]
    /// continues after them; `None`: `llm` answers alone.
    pub dual: Option<DualParts>,
}

/// The dual path's parts: the drafting engine (the fast model, reporting hidden states when the
/// verifier reads them) and how its drafts are judged.
#[derive(Clone)]
pub struct DualParts {
    pub drafter: Arc<dyn LlmEngine>,
    pub config: vr_dialog::core::DualPathConfig,
}

impl DualParts {
    /// `[dialog.dual]`: the drafter on llama.cpp with `[llm]`'s context and threads (hidden
    /// states on only when the built-in verifier reads them), at `dialog.llm_nice`.
    pub fn from_config(
        store: &vr_core::ModelStore,
        dialog: &DialogConfig,
        llm: &vr_dialog::config::LlmConfig,
    ) -> Result<Self, PipelineError> {
        let dual = &dialog.dual;
        let verifier = Arc::new(
            vr_dialog::verifier::Verifier::builtin().map_err(vr_dialog::DialogError::from)?,
        );
        let model = vr_dialog::llm::llamacpp::LlamaCppModel::from_store(store, &dual.drafter)?;
        let opts = vr_dialog::llm::llamacpp::LlamaCppOptions {
            hidden_states: verifier.hidden_width() > 0,
            ..llm.llamacpp_options()
        };
        let drafter =
            vr_dialog::llm::llamacpp::LlamaCppEngine::with_priority(model, opts, dialog.llm_nice)?;
        tracing::info!(drafter = %dual.drafter, slow = %llm.model, "dual path enabled");
        Ok(Self {
            drafter: Arc::new(drafter),
            config: vr_dialog::core::DualPathConfig {
                draft_words: dual.draft_words,
                draft_max_tokens: dual.draft_max_tokens,
                keep_threshold: dual.keep_threshold,
                verifier,
                early_draft: dual.early_draft,
            },
        })
    }
}

/// Loads the weights once and hands out cheap per-session [`Conversation`]s.
#[derive(Clone)]
pub struct Assistant {
    parts: AssistantParts,
}

impl Assistant {
    /// The shared engines' state: `Err` names the first that can no longer answer.
    pub fn health(&self) -> Result<(), String> {
        self.parts.llm.health()?;
        if let Some(d) = &self.parts.dual {
            d.drafter.health()?;
        }
        Ok(())
    }

    pub fn new(parts: AssistantParts) -> Result<Self, PipelineError> {
        parts.dialog.validate()?;
        Ok(Self { parts })
    }

    /// The configured assistant: the `[llm]` engine, the `[asr]`/`[vad]` recogniser weights and
    /// the `[tts]` voice, all loaded now and shared by every conversation (each builds only its
    /// own streams: recogniser and VAD state, a synthesis worker); `[dialog]` turn taking and
    /// persona.
    pub fn from_configs(
        store: &vr_core::ModelStore,
        dialog: &DialogConfig,
        llm: &vr_dialog::config::LlmConfig,
        asr: &vr_asr::config::AsrConfig,
        vad: &vr_asr::vad::VadConfig,
        tts: &vr_tts::TtsConfig,
    ) -> Result<Self, PipelineError> {
        vr_dialog::config::validate_together(dialog, llm)?;
        let (engine, token_counter) = llm.build_engine_and_counter_at(store, dialog.llm_nice)?;
        let dual = if dialog.dual.enabled {
            Some(DualParts::from_config(store, dialog, llm)?)
        } else {
            None
        };
        let t0 = Instant::now();
        let models = vr_asr::RecognizerModels::load(asr, vad, store)?;
        let silero = match models.silero() {
            Some(s) => s.clone(),
            None => Arc::new(vr_asr::models::silero::Silero::from_store(store)?),
        };
        let recognizer: RecognizerFactory =
            Arc::new(move || models.recognizer().map_err(PipelineError::from));
        let bank = Arc::new(vr_tts::VoiceBank::load(tts, store)?);
        let synthesizer: SynthesizerFactory = Arc::new(move |kind| {
            let s = bank.synthesizer(kind)?;
            if let Some(why) = s.fallback_reason() {
                tracing::warn!(voice = %s.voice(), reason = why, "fallback voice");
            }
            Ok(Box::new(s) as Box<dyn Synthesizer>)
        });
        tracing::info!(
            ms = t0.elapsed().as_millis() as u64,
            "recogniser, VAD and voice weights loaded"
        );
        Self::new(AssistantParts {
            dialog: dialog.clone(),
            llm: Arc::from(engine),
            sampling: llm.sampling(),
            token_counter,
            recognizer,
            synthesizer,
            min_clause_chars: tts.min_chunk_chars,
            max_clause_chars: tts.max_chunk_chars,
            vad: {
                let vad_cfg = vad.clone();
                Some(Arc::new(move || {
                    vr_asr::vad::SileroVad::new(silero.clone(), vad_cfg.clone())
                        .map_err(PipelineError::from)
                }) as VadFactory)
            },
            vad_end_lag: Duration::from_millis(u64::from(vad.min_silence_ms + vad.speech_pad_ms)),
            turn_model: match dialog.turn.mode {
                vr_dialog::config::TurnMode::Timer => None,
                vr_dialog::config::TurnMode::SmartTurn => {
                    Some(Arc::new(vr_dialog::smart_turn::SmartTurn::from_store(
                        store,
                        &onnx_environment(store)?,
                        dialog.turn.threads,
                    )?))
                }
            },
            dual,
        })
    }

    pub fn llm(&self) -> &Arc<dyn LlmEngine> {
        &self.parts.llm
    }

    pub fn dialog_config(&self) -> &DialogConfig {
        &self.parts.dialog
    }

    /// A new session with empty memory: builds its recogniser and synthesizer.
    pub fn conversation(&self) -> Result<Conversation, PipelineError> {
        let recognizer = (self.parts.recognizer)()?;
        let synthesizer = (self.parts.synthesizer)(None)?;
        let vad = match &self.parts.vad {
            Some(f) => Some(f()?),
            None => None,
        };
        let (control, rx) = Control::new();
        Ok(Conversation {
            parts: self.parts.clone(),
            recognizer,
            synthesizer,
            vad,
            control,
            rx,
        })
    }
}

/// Controls a running conversation from any thread. Never blocks: a request that finds the
/// conversation's queue full is dropped and counted (logged).
#[derive(Clone)]
pub struct ConversationHandle {
    control: Control,
}

impl ConversationHandle {
    /// Stops the assistant's current answer as a barge-in would (cancel, flush); keeps listening.
    pub fn interrupt(&self) {
        self.control.send(Event::ClientInterrupt);
    }

    /// Typed user input: a complete user turn without audio.
    pub fn send_text(&self, text: impl Into<String>) {
        self.control.send(Event::ClientText(text.into()));
    }

    /// Speaks the next answers with `voice` ("piper", "flite" or "espeak"). Applied at once
    /// when no answer is in flight, else when the current one ends; confirmed by a
    /// [`ConversationEvent::Voice`], or an [`ConversationEvent::Error`] (the voice stays as it
    /// was) when that voice cannot be opened. An unknown name is refused here.
    pub fn set_voice(&self, voice: &str) -> Result<(), String> {
        let kind = vr_tts::VoiceKind::parse(voice)
            .ok_or_else(|| format!("unknown voice {voice:?}; available: piper, flite, espeak"))?;
        self.control.send(Event::ClientVoice(kind));
        Ok(())
    }

    /// What the user's camera shows now, in words (`None`: no picture any more); answers
    /// started in the next [`vr_dialog::core::SCENE_MAX_AGE`] put it in their prompt. Returns
    /// false once the conversation has ended.
    pub fn set_scene(&self, description: Option<String>) -> bool {
        self.control.send(Event::Scene { description })
    }

    /// Ends the conversation now: the answer is cancelled, `run` returns.
    pub fn stop(&self) {
        self.control.stop();
    }
}

/// One session of the assistant. See the module docs.
pub struct Conversation {
    parts: AssistantParts,
    recognizer: Box<dyn StreamingRecognizer>,
    synthesizer: Box<dyn Synthesizer>,
    vad: Option<vr_asr::vad::SileroVad>,
    control: Control,
    rx: mpsc::Receiver<crate::driver::Msg>,
}

impl Conversation {
    pub fn handle(&self) -> ConversationHandle {
        ConversationHandle {
            control: self.control.clone(),
        }
    }

    /// Runs the conversation on this thread until the input ring's producer is dropped and its
    /// audio has been answered (the last answer plays out), or [`ConversationHandle::stop`].
    ///
    /// `input`: any rate and channel count (resampled to 16 kHz mono here); a microphone or file
    /// ring, or the transport's decoded Opus.
    pub fn run(
        self,
        input: vr_audio::AudioConsumer,
        output: Box<dyn AudioOutput>,
        events: impl EventSink,
    ) -> Result<ConversationSummary, PipelineError> {
        let session = crate::driver::Session {
            parts: self.parts,
            recognizer: self.recognizer,
            synthesizer: self.synthesizer,
            vad: self.vad,
            control: self.control,
            rx: self.rx,
        };
        crate::driver::run(session, input, output, events)
    }
}

/// The process's ONNX Runtime environment (shared by the Piper voice and Smart Turn).
pub fn onnx_environment(
    store: &vr_core::ModelStore,
) -> Result<vr_tts::piper::Environment, PipelineError> {
    let lib = store.file(vr_tts::ORT_MODEL, vr_tts::ORT_LIB)?;
    Ok(vr_tts::piper::environment(&lib)?)
}
