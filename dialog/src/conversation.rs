//! The cascaded assistant loop: Listening → UserSpeaking → Thinking → Speaking, with barge-in.
//!
//! One [`Assistant`] holds what is expensive and shareable (the LLM engine behind an `Arc`, the
//! recipes for building a recogniser and a voice) and hands out one [`Conversation`] per session
//! (a `voicerelay listen` run, a WebRTC peer, an eval dialogue). A conversation owns its own
//! recogniser, synthesizer, turn detector and token-bounded memory; sessions share the LLM (the
//! local engine serialises them on its one worker thread).
//!
//! [`Conversation::run`] is blocking and takes over the calling thread:
//! - a `vad` thread it spawns drains the input ring, resamples to 16 kHz mono, runs a stand-alone
//!   VAD for turn taking (never blocked by a Whisper decode) and forwards the audio to
//! - an `asr` thread running the streaming recogniser; both send their events, stamped with the
//!   input sample clock, to the loop;
//! - the calling thread runs the loop: turn detection on the input clock, the LLM stream
//!   (speculative `prepare` on partials, `generate` at the end of the turn), the clause chunker,
//!   the synthesizer's audio (resampled to the output's rate) and the [`AudioOutput`], which it
//!   keeps fed a short lead ahead of playback so a barge-in has little to throw away.
//!
//! Clocks: every `*_ms` in a [`ConversationEvent`] is milliseconds of the *input* sample clock
//! (0 = the first input sample). Output-side moments (first answer sample played, flush) are
//! measured on the output's [`AudioOutput::played`] clock and mapped onto the input clock through
//! the offset between the two, measured continuously as input arrives (both run at real time).
//!
//! Barge-in: user speech while the assistant speaks pauses the answer at once (the output is
//! flushed and the flushed audio kept aside) — the VAD only reports speech after
//! `vad.min_speech_ms`, and the backchannel rule needs `backchannel_min_ms` more, so waiting for
//! the detector's verdict would leave the assistant talking over the user for half a second. If
//! the overlap turns out to be a backchannel ("yeah") the kept audio resumes where it stopped; if
//! it is a barge-in the LLM and the synthesizer are cancelled and the kept audio is dropped. Audio
//! chunks carry their utterance number, so nothing of a cancelled answer is ever written again.

use crate::config::DialogConfig;
use crate::llm::{LlmEngine, Sampling};
use crate::memory::TokenCounter;
use crate::turn::{TurnEventKind, TurnReason};
use crate::DialogError;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vr_asr::StreamingRecognizer;
use vr_core::{SampleIndex, SampleRate};
use vr_tts::Synthesizer;

/// The sentence spoken (and printed) when the language model cannot be reached.
pub const UNREACHABLE_SENTENCE: &str = "I can't reach the language model right now.";

/// Where answer audio goes: the speaker (through capture's playback ring), a WAV file written on
/// a simulated real-time clock ([`WavOutput`]), or a WebRTC track (transport).
///
/// Positions are frames of mono audio at [`AudioOutput::rate`].
pub trait AudioOutput: Send {
    /// The loop resamples the synthesizer's audio to this rate.
    fn rate(&self) -> SampleRate;
    /// Enqueues samples to play after everything already queued; never blocks for long.
    fn write(&mut self, samples: &[f32]) -> Result<(), DialogError>;
    /// Drops everything queued and not yet played or sent (barge-in); returns the frames dropped.
    fn flush(&mut self) -> usize;
    /// The output's own clock: frames played or sent so far, silence included (an idle speaker
    /// keeps playing silence, so the clock keeps running).
    fn played(&self) -> SampleIndex;
    /// Frames queued and not yet played or sent.
    fn queued(&self) -> usize;
    /// The conversation is over: play out or write what is queued (a file is finalised here).
    /// Called once, at the end of [`Conversation::run`].
    fn close(&mut self) -> Result<(), DialogError> {
        Ok(())
    }
}

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
        voice: vr_tts::VoiceKind,
        sample_rate: u32,
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

impl EventSink for mpsc::Sender<ConversationEvent> {
    fn emit(&mut self, event: ConversationEvent) {
        // A receiver that went away no longer wants events; the loop goes on.
        let _ = self.send(event);
    }
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<ConversationEvent> {
    fn emit(&mut self, event: ConversationEvent) {
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

/// Builds one streaming recogniser per conversation.
pub type RecognizerFactory =
    Arc<dyn Fn() -> Result<Box<dyn StreamingRecognizer>, DialogError> + Send + Sync>;
/// Builds a synthesizer for a conversation: `None` is the configured voice (with its fallback),
/// `Some(kind)` that voice exactly (a session's voice change). Must be cheap: weights are
/// loaded once when the factory is made, not per call.
pub type SynthesizerFactory = Arc<
    dyn Fn(Option<vr_tts::VoiceKind>) -> Result<Box<dyn Synthesizer>, DialogError> + Send + Sync,
>;

/// Builds the stand-alone VAD that drives turn taking (see [`AssistantParts::vad`]).
pub type VadFactory = Arc<dyn Fn() -> Result<vr_asr::vad::SileroVad, DialogError> + Send + Sync>;

/// Counts tokens for the memory bound; shared by every conversation.
pub type SharedCounter = Arc<dyn TokenCounter + Send + Sync>;

impl TokenCounter for SharedCounter {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}

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
    pub turn_model: Option<Arc<crate::smart_turn::SmartTurn>>,
}

/// Loads the weights once and hands out cheap per-session [`Conversation`]s.
#[derive(Clone)]
pub struct Assistant {
    parts: AssistantParts,
}

impl Assistant {
    pub fn new(parts: AssistantParts) -> Result<Self, DialogError> {
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
        llm: &crate::config::LlmConfig,
        asr: &vr_asr::config::AsrConfig,
        vad: &vr_asr::vad::VadConfig,
        tts: &vr_tts::TtsConfig,
    ) -> Result<Self, DialogError> {
        crate::config::validate_together(dialog, llm)?;
        let (engine, token_counter) = llm.build_engine_and_counter(store)?;
        let t0 = Instant::now();
        let models = vr_asr::RecognizerModels::load(asr, vad, store)?;
        let silero = match models.silero() {
            Some(s) => s.clone(),
            None => Arc::new(vr_asr::models::silero::Silero::from_store(store)?),
        };
        let recognizer: RecognizerFactory =
            Arc::new(move || models.recognizer().map_err(DialogError::from));
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
                        .map_err(DialogError::from)
                }) as VadFactory)
            },
            vad_end_lag: Duration::from_millis(u64::from(vad.min_silence_ms + vad.speech_pad_ms)),
            turn_model: match dialog.turn.mode {
                crate::config::TurnMode::Timer => None,
                crate::config::TurnMode::SmartTurn => Some(Arc::new(
                    crate::smart_turn::SmartTurn::from_store(store, dialog.turn.threads)?,
                )),
            },
        })
    }

    pub fn llm(&self) -> &Arc<dyn LlmEngine> {
        &self.parts.llm
    }

    pub fn dialog_config(&self) -> &DialogConfig {
        &self.parts.dialog
    }

    /// A new session with empty memory: builds its recogniser and synthesizer.
    pub fn conversation(&self) -> Result<Conversation, DialogError> {
        let recognizer = (self.parts.recognizer)()?;
        let synthesizer = (self.parts.synthesizer)(None)?;
        let vad = match &self.parts.vad {
            Some(f) => Some(f()?),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        Ok(Conversation {
            parts: self.parts.clone(),
            recognizer,
            synthesizer,
            vad,
            control: Control {
                tx,
                stop: Arc::new(AtomicBool::new(false)),
            },
            rx,
        })
    }
}

/// How long past the turn's end (on the recogniser's clock) the loop waits for a final that a
/// partial announced: covers the recogniser's own VAD lag plus its `final_silence_ms` hold.
const FINAL_HOLD: Duration = Duration::from_secs(2);

/// Messages into the loop thread: recogniser output and control requests.
pub(crate) enum LoopMsg {
    /// Recogniser events from input up to `pos` (input clock, 16 kHz).
    Asr {
        events: Vec<vr_asr::AsrEvent>,
        pos: SampleIndex,
        /// Wall-clock moment the audio up to `pos` was taken from the ring.
        read_at: Instant,
    },
    /// Stand-alone VAD events from input up to `pos`.
    Vad {
        events: Vec<vr_asr::AsrEvent>,
        pos: SampleIndex,
        read_at: Instant,
    },
    /// The end-of-turn model's verdict on the pause that began at `speech_end`, known at `pos`.
    TurnModel {
        speech_end: SampleIndex,
        probability: f32,
        pos: SampleIndex,
    },
    /// The input ended at `pos` (its producer was dropped and everything was recognised).
    InputEnded {
        pos: SampleIndex,
    },
    /// The recogniser failed; the conversation ends with this error.
    AsrFailed(String),
    Interrupt,
    /// Typed input, and the moment it was sent.
    Text(String, Instant),
    Voice(vr_tts::VoiceKind),
    Stop,
}

#[derive(Clone)]
struct Control {
    tx: mpsc::Sender<LoopMsg>,
    stop: Arc<AtomicBool>,
}

/// Controls a running conversation from any thread.
#[derive(Clone)]
pub struct ConversationHandle {
    control: Control,
}

impl ConversationHandle {
    /// Stops the assistant's current answer as a barge-in would (cancel, flush); keeps listening.
    pub fn interrupt(&self) {
        let _ = self.control.tx.send(LoopMsg::Interrupt);
    }

    /// Typed user input: a complete user turn without audio.
    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self
            .control
            .tx
            .send(LoopMsg::Text(text.into(), Instant::now()));
    }

    /// Speaks the next answers with `voice` ("piper", "flite" or "espeak"). Applied at once
    /// when no answer is in flight, else when the current one ends; confirmed by a
    /// [`ConversationEvent::Voice`], or an [`ConversationEvent::Error`] (the voice stays as it
    /// was) when that voice cannot be opened. An unknown name is refused here.
    pub fn set_voice(&self, voice: &str) -> Result<(), String> {
        let kind = vr_tts::VoiceKind::parse(voice)
            .ok_or_else(|| format!("unknown voice {voice:?}; available: piper, flite, espeak"))?;
        let _ = self.control.tx.send(LoopMsg::Voice(kind));
        Ok(())
    }

    /// Ends the conversation now: the answer is cancelled, `run` returns.
    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::SeqCst);
        let _ = self.control.tx.send(LoopMsg::Stop);
    }
}

/// One session of the assistant. See the module docs.
pub struct Conversation {
    parts: AssistantParts,
    recognizer: Box<dyn StreamingRecognizer>,
    synthesizer: Box<dyn Synthesizer>,
    vad: Option<vr_asr::vad::SileroVad>,
    control: Control,
    rx: mpsc::Receiver<LoopMsg>,
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
        input: vr_capture::AudioConsumer,
        mut output: Box<dyn AudioOutput>,
        events: impl EventSink,
    ) -> Result<ConversationSummary, DialogError> {
        let Conversation {
            parts,
            recognizer,
            synthesizer,
            vad,
            control,
            rx,
        } = self;
        let has_vad = vad.is_some();
        let (samples_tx, samples_rx) = mpsc::channel::<Vec<f32>>();
        let (in_tx, in_stop) = (control.tx.clone(), control.stop.clone());
        let turn_model = parts.turn_model.clone();
        let input_thread = std::thread::Builder::new()
            .name("vad".into())
            .spawn(move || input_thread(input, vad, turn_model, samples_tx, in_tx, in_stop))
            .map_err(|e| DialogError::Runtime(format!("cannot start the input thread: {e}")))?;
        let (asr_tx, asr_stop) = (control.tx.clone(), control.stop.clone());
        let asr = std::thread::Builder::new()
            .name("asr".into())
            .spawn(move || asr_thread(samples_rx, recognizer, asr_tx, asr_stop))
            .map_err(|e| DialogError::Runtime(format!("cannot start the ASR thread: {e}")))?;
        let result = {
            let mut lp = Loop::new(&parts, synthesizer, output.as_mut(), events)?;
            lp.has_vad = has_vad;
            lp.run(&rx, &control.stop)
        };
        control.stop.store(true, Ordering::SeqCst);
        if input_thread.join().is_err() {
            tracing::error!("input thread panicked");
        }
        if asr.join().is_err() {
            tracing::error!("ASR thread panicked");
        }
        let closed = output.close();
        let summary = result?;
        closed?;
        Ok(summary)
    }
}

/// Samples per recogniser push: one Silero VAD chunk, so a speech start is known at the input
/// position where the VAD decided it.
const ASR_PIECE: usize = 512;

/// Drains the input ring, resamples to 16 kHz mono, runs the stand-alone VAD (if any) and
/// forwards the audio to the recogniser's thread: VAD decisions never wait for a decode.
fn input_thread(
    mut input: vr_capture::AudioConsumer,
    mut vad: Option<vr_asr::vad::SileroVad>,
    turn_model: Option<Arc<crate::smart_turn::SmartTurn>>,
    samples: mpsc::Sender<Vec<f32>>,
    tx: mpsc::Sender<LoopMsg>,
    stop: Arc<AtomicBool>,
) {
    let turn_model = turn_model.map(|m| (m, std::collections::VecDeque::new()));
    if let Err(e) = input_pump(&mut input, vad.as_mut(), turn_model, &samples, &tx, &stop) {
        let _ = tx.send(LoopMsg::AsrFailed(e.to_string()));
    }
}

/// The detector's config: Smart Turn's verdicts come from the stand-alone VAD's thread, so
/// without that VAD or the model the silence timer decides (`dialog.silence_timeout_ms`).
fn turn_config(parts: &AssistantParts) -> crate::turn::TurnConfig {
    let cfg = parts.dialog.turn_config();
    if parts.turn_model.is_some() && parts.vad.is_some() {
        cfg
    } else {
        crate::turn::TurnConfig {
            end_of_turn: crate::turn::EndOfTurn::Timer,
            ..cfg
        }
    }
}

/// The end-of-turn model and the last 8 s of 16 kHz audio it judges.
type TurnModelInput = (
    Arc<crate::smart_turn::SmartTurn>,
    std::collections::VecDeque<f32>,
);

fn input_pump(
    input: &mut vr_capture::AudioConsumer,
    mut vad: Option<&mut vr_asr::vad::SileroVad>,
    // The model and the last 8 s of 16 kHz audio it judges.
    mut turn_model: Option<TurnModelInput>,
    samples: &mpsc::Sender<Vec<f32>>,
    tx: &mpsc::Sender<LoopMsg>,
    stop: &AtomicBool,
) -> Result<(), DialogError> {
    let format = input.format();
    let mut resampler = if format == vr_capture::AudioFormat::PIPELINE {
        None
    } else {
        Some(vr_capture::resample::StreamResampler::new(
            format,
            SampleRate::PIPELINE,
        )?)
    };
    let channels = usize::from(format.channels);
    let mut mono: Vec<f32> = Vec::with_capacity(SampleRate::PIPELINE.hz() as usize);
    let mut pos = SampleIndex::ZERO;
    let forward = |mono: &mut Vec<f32>,
                   pos: &mut SampleIndex,
                   all: bool,
                   read_at: Instant,
                   vad: &mut Option<&mut vr_asr::vad::SileroVad>,
                   turn_model: &mut Option<TurnModelInput>| {
        let whole = if all {
            mono.len()
        } else {
            mono.len() / ASR_PIECE * ASR_PIECE
        };
        for piece in mono[..whole].chunks(ASR_PIECE) {
            *pos = pos.advance(piece.len() as u64);
            if let Some(v) = vad.as_mut() {
                let events = v.push(piece)?;
                let events: Vec<vr_asr::AsrEvent> =
                    events.into_iter().map(vr_asr::AsrEvent::from).collect();
                let ends: Vec<SampleIndex> = events
                    .iter()
                    .filter_map(|e| match e {
                        vr_asr::AsrEvent::SpeechEnded { at } => Some(*at),
                        _ => None,
                    })
                    .collect();
                let _ = tx.send(LoopMsg::Vad {
                    events,
                    pos: *pos,
                    read_at,
                });
                if let Some((model, tail)) = turn_model.as_mut() {
                    tail.extend(piece.iter().copied());
                    let excess = tail.len().saturating_sub(crate::smart_turn::WINDOW_SAMPLES);
                    tail.drain(..excess);
                    // The VAD's speech end is the short stop: judge the audio up to here. The
                    // verdict is dated by the compute time it took (input clock ≈ wall clock).
                    for at in ends {
                        let t0 = Instant::now();
                        let probability = model.probability(tail.make_contiguous())?;
                        let _ = tx.send(LoopMsg::TurnModel {
                            speech_end: at,
                            probability,
                            pos: pos.advance(SampleRate::PIPELINE.samples_in(t0.elapsed())),
                        });
                    }
                }
            }
        }
        if whole > 0 {
            let _ = samples.send(mono[..whole].to_vec());
        }
        mono.drain(..whole);
        Ok::<(), DialogError>(())
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !input.wait_for_data(Duration::from_millis(20)) {
            if input.end_position().is_some() {
                break;
            }
            continue;
        }
        let read_at = Instant::now();
        while let Some(chunk) = input.peek() {
            let frames = chunk.samples.len() / channels;
            match resampler.as_mut() {
                Some(r) => r.push(chunk.samples, |m| mono.extend_from_slice(m))?,
                None => mono.extend_from_slice(chunk.samples),
            }
            input.consume(frames);
        }
        forward(
            &mut mono,
            &mut pos,
            false,
            read_at,
            &mut vad,
            &mut turn_model,
        )?;
    }
    if let Some(r) = resampler.as_mut() {
        r.finish(|m| mono.extend_from_slice(m))?;
    }
    forward(
        &mut mono,
        &mut pos,
        true,
        Instant::now(),
        &mut vad,
        &mut turn_model,
    )?;
    if let Some(v) = vad.as_mut() {
        let events = v.finish().into_iter().map(vr_asr::AsrEvent::from).collect();
        let _ = tx.send(LoopMsg::Vad {
            events,
            pos,
            read_at: Instant::now(),
        });
    }
    Ok(())
}

/// Runs the recogniser on the audio the input thread forwards, in VAD-chunk pieces; when the
/// input ends, finalises and reports the end.
fn asr_thread(
    samples: mpsc::Receiver<Vec<f32>>,
    mut rec: Box<dyn StreamingRecognizer>,
    tx: mpsc::Sender<LoopMsg>,
    stop: Arc<AtomicBool>,
) {
    let mut pos = SampleIndex::ZERO;
    let mut run = || -> Result<(), DialogError> {
        while let Ok(block) = samples.recv() {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for piece in block.chunks(ASR_PIECE) {
                let events = rec.push(piece)?;
                pos = pos.advance(piece.len() as u64);
                let _ = tx.send(LoopMsg::Asr {
                    events,
                    pos,
                    read_at: Instant::now(),
                });
            }
        }
        let events = rec.finish()?;
        let _ = tx.send(LoopMsg::Asr {
            events,
            pos,
            read_at: Instant::now(),
        });
        Ok(())
    };
    match run() {
        Ok(()) => {
            let _ = tx.send(LoopMsg::InputEnded { pos });
        }
        Err(e) => {
            let _ = tx.send(LoopMsg::AsrFailed(e.to_string()));
        }
    }
}

/// The user's turn being collected.
#[derive(Debug, Default)]
struct TurnRecord {
    /// Final transcripts of the turn's utterances, in order.
    finals: Vec<String>,
    /// Speech starts (input clock) of the segments that make up this turn; a final belongs to
    /// the turn when it starts at one of them (a backchannel's does not).
    segments: Vec<SampleIndex>,
    /// Input position at which the VAD reported the end of the turn's last segment: the
    /// recogniser has finalised the turn once it has processed this far.
    end_decided: Option<SampleIndex>,
    /// End of the last speech segment (VAD speech end), input clock.
    speech_end: Option<SampleIndex>,
    /// Input-clock ms at which the last final reached the loop.
    final_at_ms: Option<u64>,
    /// Last text handed to `prepare`, so an unchanged partial is not prefilled twice.
    prepared: String,
}

impl TurnRecord {
    fn starting_at(at: SampleIndex) -> Self {
        Self {
            segments: vec![at],
            ..Self::default()
        }
    }

    fn text(&self) -> String {
        self.finals.join(" ")
    }

    fn owns(&self, start: SampleIndex) -> bool {
        // The recogniser's VAD is the same model on the same audio: identical starts; allow a
        // chunk either way.
        self.segments
            .iter()
            .any(|s| s.0.abs_diff(start.0) <= 2 * ASR_PIECE as u64)
    }
}

/// One answer in flight: LLM stream → chunker → synthesizer → resampler → output.
struct Answer {
    user_text: String,
    generation: Option<crate::llm::Generation>,
    chunker: vr_tts::ClauseChunker,
    /// The synthesizer utterance carrying this answer; chunks of any other are stale.
    utterance: u64,
    llm_done: bool,
    tts_done: bool,
    /// Text generated so far.
    text: String,
    /// Clauses that started playing.
    spoken: Vec<String>,
    resampler: Option<vr_capture::resample::StreamResampler>,
    /// Audio (at the output rate) not yet written to the output.
    pending: std::collections::VecDeque<f32>,
    /// Recently written audio, to recover what a pause flushes.
    recent: std::collections::VecDeque<f32>,
    /// Answer frames written to the output (net of flushes) and pushed into `pending` so far.
    written: u64,
    produced: u64,
    /// Output position of answer frame `run.0` for the current contiguous run of writes.
    run: Option<(u64, u64)>,
    /// Clauses not yet announced: (answer frame where it starts, text).
    marks: std::collections::VecDeque<(u64, String)>,
    last_clause: Option<Arc<str>>,
    /// Paused by an overlap (the user may be barging in).
    paused: bool,
    /// Output position of answer frame 0, once known.
    first_out: Option<u64>,
    fallback: bool,
    // Latency stamps.
    started: Instant,
    first_token: Option<Instant>,
    first_clause: Option<Instant>,
    first_chunk: Option<Instant>,
    /// The engine's statistics, once it finished.
    llm_stats: Option<crate::llm::GenerationStats>,
    /// The turn's latency inputs.
    turn_clock: Option<TurnClock>,
}

#[derive(Debug, Clone, Copy)]
struct TurnClock {
    turn: u32,
    input: TurnInput,
    /// Where the onset is measured from (input clock): the end of speech, or the typed text's
    /// arrival.
    start_ms: u64,
    speech_end_ms: Option<u64>,
    endpointing_ms: Option<u64>,
    asr_final_ms: Option<u64>,
}

/// A pending overlap: the output was paused at its VAD speech start.
#[derive(Debug, Clone, Copy)]
struct Overlap {
    at: SampleIndex,
    detected: SampleIndex,
    stop_latency_ms: u64,
    dropped: usize,
}

struct Loop<'a, E: EventSink> {
    parts: &'a AssistantParts,
    /// Owned: a voice change replaces it between answers.
    synth: Box<dyn Synthesizer>,
    /// A voice change waiting for the answer in flight to end.
    pending_voice: Option<vr_tts::VoiceKind>,
    output: &'a mut dyn AudioOutput,
    events: E,
    detector: crate::turn::TurnDetector,
    memory: crate::memory::ConversationMemory<SharedCounter>,
    state: LoopState,
    /// Input clock: samples recognised so far.
    in_pos: SampleIndex,
    /// Output clock minus input clock, in ms (the smallest seen: the least-delayed reading).
    offset_ms: Option<f64>,
    turn: TurnRecord,
    turns: u32,
    answer: Option<Answer>,
    overlap: Option<Overlap>,
    /// Mirror of the synthesizer's utterance counter (bumped by `finish` and `cancel`).
    tts_utterance: u64,
    lead: usize,
    input_done: bool,
    summary: ConversationSummary,
    /// A stand-alone VAD drives turn taking (else the recogniser's VAD events do).
    has_vad: bool,
    /// How far the recogniser has processed (input clock).
    asr_pos: SampleIndex,
    /// A turn that ended and waits for the recogniser to finalise it: (ended at, input ms).
    awaiting: Option<u64>,
    /// The recogniser has shown text (a partial) that no final has closed yet. Its own VAD ends
    /// an utterance a little after the stand-alone VAD and holds the final for
    /// `asr.final_silence_ms` more, so reaching `end_decided` is not enough to answer.
    asr_pending: bool,
}

impl<'a, E: EventSink> Loop<'a, E> {
    fn new(
        parts: &'a AssistantParts,
        synth: Box<dyn Synthesizer>,
        output: &'a mut dyn AudioOutput,
        events: E,
    ) -> Result<Self, DialogError> {
        let lead = output
            .rate()
            .samples_in(Duration::from_millis(parts.dialog.output_lead_ms))
            as usize;
        Ok(Self {
            detector: crate::turn::TurnDetector::new(turn_config(parts)),
            memory: crate::memory::ConversationMemory::new(
                parts.dialog.system_message(),
                parts.dialog.max_memory_tokens,
                parts.token_counter.clone(),
            ),
            parts,
            synth,
            pending_voice: None,
            output,
            events,
            state: LoopState::Listening,
            in_pos: SampleIndex::ZERO,
            offset_ms: None,
            turn: TurnRecord::default(),
            turns: 0,
            answer: None,
            overlap: None,
            tts_utterance: 0,
            lead: lead.max(1),
            input_done: false,
            summary: ConversationSummary::default(),
            has_vad: false,
            asr_pos: SampleIndex::ZERO,
            awaiting: None,
            asr_pending: false,
        })
    }

    fn in_ms(pos: SampleIndex) -> u64 {
        ms(pos.0, SampleRate::PIPELINE)
    }

    fn out_ms_f(&self, pos: u64) -> f64 {
        pos as f64 * 1000.0 / f64::from(self.output.rate().hz())
    }

    /// An output position on the input clock, in ms.
    fn out_to_in_ms(&self, pos: u64) -> u64 {
        (self.out_ms_f(pos) - self.offset_ms.unwrap_or(0.0)).max(0.0) as u64
    }

    /// Now, on the input clock, in ms (through the output clock, which runs continuously).
    fn now_ms(&self) -> u64 {
        self.out_to_in_ms(self.output.played().0)
    }

    fn emit(&mut self, ev: ConversationEvent) {
        if let ConversationEvent::Error { .. } = ev {
            self.summary.errors += 1;
        }
        self.events.emit(ev);
    }

    fn set_state(&mut self, to: LoopState) {
        let at_ms = self.now_ms();
        self.set_state_at(to, at_ms);
    }

    /// A state change that happened at `at_ms` (input clock), which may be a little before the
    /// loop noticed it.
    fn set_state_at(&mut self, to: LoopState, at_ms: u64) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.emit(ConversationEvent::State { from, to, at_ms });
        }
    }

    fn run(
        &mut self,
        rx: &mpsc::Receiver<LoopMsg>,
        stop: &AtomicBool,
    ) -> Result<ConversationSummary, DialogError> {
        self.emit(ConversationEvent::Voice {
            voice: self.synth.voice(),
            sample_rate: self.synth.sample_rate().hz(),
        });
        loop {
            if stop.load(Ordering::SeqCst) {
                self.cancel_answer();
                break;
            }
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(msg) => {
                    if !self.on_msg(msg)? {
                        self.cancel_answer();
                        break;
                    }
                    // Drain what else is waiting before doing audio work.
                    while let Ok(msg) = rx.try_recv() {
                        if !self.on_msg(msg)? {
                            self.cancel_answer();
                            return Ok(std::mem::take(&mut self.summary));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.poll_llm()?;
            self.poll_tts()?;
            self.feed_output()?;
            self.announce();
            self.maybe_finish_answer();
            if self.answer.is_none() {
                self.apply_voice();
            }
            if self.input_done
                && self.answer.is_none()
                && self.awaiting.is_none()
                && !self.detector.user_turn_open()
            {
                break;
            }
        }
        Ok(std::mem::take(&mut self.summary))
    }

    /// Returns false when the loop must end.
    fn on_msg(&mut self, msg: LoopMsg) -> Result<bool, DialogError> {
        match msg {
            LoopMsg::Vad {
                events,
                pos,
                read_at,
            } => {
                self.measure_offset(pos, read_at);
                for ev in events {
                    self.on_vad(ev, pos)?;
                }
                self.in_pos = pos;
                self.tick(pos)?;
            }
            LoopMsg::Asr {
                events,
                pos,
                read_at,
            } => {
                self.measure_offset(pos, read_at);
                for ev in events {
                    self.on_asr(ev, pos)?;
                }
                self.asr_pos = pos;
                if !self.has_vad {
                    self.in_pos = pos;
                    self.tick(pos)?;
                }
                self.try_start_awaited();
            }
            LoopMsg::TurnModel {
                speech_end,
                probability,
                pos,
            } => {
                let evs = self.detector.turn_model(speech_end, probability, pos);
                self.handle_turn_events(evs, pos)?;
            }
            LoopMsg::InputEnded { pos } => {
                self.input_done = true;
                // No more audio: whatever turn is open ends as if silence followed.
                let cfg = turn_config(self.parts);
                let horizon = pos.advance(
                    cfg.sample_rate
                        .samples_in(cfg.pause_timeout() + cfg.grace + cfg.backchannel_min),
                );
                for t in self.detector.tick(horizon) {
                    self.on_turn(t, pos)?;
                }
                self.asr_pos = self.asr_pos.max(pos);
                self.try_start_awaited();
            }
            LoopMsg::AsrFailed(reason) => {
                self.emit(ConversationEvent::Error {
                    message: format!("speech recognition failed: {reason}"),
                });
                return Err(DialogError::Runtime(format!(
                    "speech recognition failed: {reason}"
                )));
            }
            LoopMsg::Interrupt => {
                if self.answer.is_some() {
                    self.cancel_answer();
                    self.set_state(LoopState::Listening);
                }
            }
            LoopMsg::Text(text, sent) => {
                let text = text.trim().to_string();
                if !text.is_empty() {
                    self.cancel_answer();
                    self.set_state(LoopState::Thinking);
                    self.turns += 1;
                    // The input clock when the text was sent (it may have waited in the queue).
                    let at_ms = self.now_ms().saturating_sub(millis(sent.elapsed()));
                    let clock = TurnClock {
                        turn: self.turns,
                        input: TurnInput::Text,
                        start_ms: at_ms,
                        speech_end_ms: None,
                        endpointing_ms: None,
                        asr_final_ms: None,
                    };
                    self.start_answer(text, Some(clock));
                }
            }
            LoopMsg::Voice(kind) => {
                self.pending_voice = Some(kind);
                if self.answer.is_none() {
                    self.apply_voice();
                }
            }
            LoopMsg::Stop => return Ok(false),
        }
        Ok(true)
    }

    fn on_asr(&mut self, ev: vr_asr::AsrEvent, pos: SampleIndex) -> Result<(), DialogError> {
        use vr_asr::AsrEvent;
        let turn_events = match &ev {
            AsrEvent::SpeechStarted { .. } | AsrEvent::SpeechEnded { .. } => {
                if !self.has_vad {
                    self.on_vad(ev, pos)?;
                }
                return Ok(());
            }
            AsrEvent::Partial {
                text,
                stable_prefix_len,
            } => {
                self.emit(ConversationEvent::Partial {
                    text: text.clone(),
                    stable_prefix_len: *stable_prefix_len,
                });
                if !text.trim().is_empty() {
                    self.asr_pending = true;
                }
                if self.parts.dialog.speculative_prefill && self.detector.user_turn_open() {
                    let mut so_far = self.turn.text();
                    if !so_far.is_empty() {
                        so_far.push(' ');
                    }
                    so_far.push_str(text.trim());
                    if so_far != self.turn.prepared && !so_far.trim().is_empty() {
                        self.parts
                            .llm
                            .prepare(&self.memory.messages_with_user(&so_far));
                        self.turn.prepared = so_far;
                    }
                }
                Vec::new()
            }
            AsrEvent::Final {
                text, start, end, ..
            } => {
                self.emit(ConversationEvent::Final {
                    text: text.clone(),
                    start_ms: Self::in_ms(*start),
                    end_ms: Self::in_ms(*end),
                });
                self.asr_pending = false;
                let text = text.trim();
                if self.turn.owns(*start) && !text.is_empty() {
                    self.turn.finals.push(text.to_string());
                    self.turn.final_at_ms = Some(self.now_ms());
                } else if !text.is_empty() {
                    tracing::debug!(text, "final outside a user turn (backchannel or ignored)");
                }
                Vec::new()
            }
        };
        self.handle_turn_events(turn_events, pos)
    }

    /// The audio up to `pos` existed at `read_at`: output clock then minus input clock; the
    /// smallest reading is the least delayed.
    fn measure_offset(&mut self, pos: SampleIndex, read_at: Instant) {
        let out_then =
            self.out_ms_f(self.output.played().0) - read_at.elapsed().as_secs_f64() * 1000.0;
        let off = out_then - Self::in_ms(pos) as f64;
        self.offset_ms = Some(self.offset_ms.map_or(off, |o| o.min(off)));
    }

    /// Speech start/end from whichever VAD drives turn taking.
    fn on_vad(&mut self, ev: vr_asr::AsrEvent, pos: SampleIndex) -> Result<(), DialogError> {
        let evs = match ev {
            vr_asr::AsrEvent::SpeechStarted { at } => self.detector.speech_started(at),
            vr_asr::AsrEvent::SpeechEnded { at } => {
                if self.detector.user_turn_open() {
                    self.turn.speech_end = Some(at);
                    self.turn.end_decided = Some(pos);
                }
                self.detector.speech_ended(at)
            }
            _ => Vec::new(),
        };
        self.handle_turn_events(evs, pos)
    }

    /// Fires the detector's timers up to `pos`. While an overlap is pending, up to `pos` minus
    /// the VAD's end lag only: a speech end before the backchannel limit may not be known yet.
    fn tick(&mut self, pos: SampleIndex) -> Result<(), DialogError> {
        let at = if self.overlap.is_some() {
            SampleIndex(
                pos.0
                    .saturating_sub(SampleRate::PIPELINE.samples_in(self.parts.vad_end_lag)),
            )
        } else {
            pos
        };
        let evs = self.detector.tick(at);
        self.handle_turn_events(evs, pos)
    }

    /// Starts the answer to a turn that ended once the recogniser has finalised it.
    fn try_start_awaited(&mut self) {
        let Some(ended_ms) = self.awaiting else {
            return;
        };
        if self.turn.end_decided.is_some_and(|d| self.asr_pos < d) {
            return;
        }
        // Bounded: a recogniser whose pending text never turns into a final (everything cut as
        // hallucination) must not keep the user waiting for ever.
        let hold_until = self
            .turn
            .end_decided
            .map(|d| d.advance(SampleRate::PIPELINE.samples_in(FINAL_HOLD)));
        if self.asr_pending && !self.input_done && hold_until.is_some_and(|h| self.asr_pos < h) {
            return;
        }
        self.awaiting = None;
        let text = self.turn.text();
        if text.is_empty() {
            self.set_state(LoopState::Listening);
            return;
        }
        self.turns += 1;
        self.summary.turns += 1;
        let speech_end_ms = self.turn.speech_end.map_or(ended_ms, Self::in_ms);
        let clock = TurnClock {
            turn: self.turns,
            input: TurnInput::Speech,
            start_ms: speech_end_ms,
            speech_end_ms: Some(speech_end_ms),
            endpointing_ms: Some(ended_ms.saturating_sub(speech_end_ms)),
            asr_final_ms: Some(
                self.turn
                    .final_at_ms
                    .unwrap_or(ended_ms)
                    .saturating_sub(speech_end_ms),
            ),
        };
        self.start_answer(text, Some(clock));
    }

    fn handle_turn_events(
        &mut self,
        evs: Vec<crate::turn::TurnEvent>,
        pos: SampleIndex,
    ) -> Result<(), DialogError> {
        for t in evs {
            self.on_turn(t, pos)?;
        }
        Ok(())
    }

    fn on_turn(&mut self, t: crate::turn::TurnEvent, pos: SampleIndex) -> Result<(), DialogError> {
        use crate::turn::TurnEventKind as K;
        self.emit(ConversationEvent::Turn {
            kind: t.kind,
            reason: t.reason,
            at_ms: Self::in_ms(t.at),
        });
        match t.kind {
            K::TurnStarted => {
                if self.answer.is_some() {
                    // The user speaks again before the answer plays: they were not done.
                    self.cancel_answer();
                }
                self.awaiting = None;
                self.turn = TurnRecord::starting_at(t.turn_start);
                self.set_state(LoopState::UserSpeaking);
            }
            K::Paused | K::Waiting => {}
            K::Resumed => {
                // Within the grace period: the answer started for the shorter turn is dropped.
                if self.answer.is_some() {
                    self.cancel_answer();
                }
                self.awaiting = None;
                self.turn.segments.push(t.at);
                self.turn.end_decided = None;
                self.set_state(LoopState::UserSpeaking);
            }
            K::TurnEnded => {
                // Wait (Thinking) until the recogniser has finalised the turn's last segment.
                self.awaiting = Some(self.now_ms());
                self.set_state(LoopState::Thinking);
                self.try_start_awaited();
            }
            K::TurnCommitted => {
                self.turn.prepared.clear();
            }
            K::Overlap => self.pause_for_overlap(t.turn_start, pos),
            K::BargeIn => {
                let ov = self.overlap.take().unwrap_or_else(|| {
                    // `backchannel_min = 0`: the barge-in comes without an overlap first.
                    self.pause_for_overlap(t.turn_start, pos);
                    self.overlap.take().unwrap_or(Overlap {
                        at: t.turn_start,
                        detected: pos,
                        stop_latency_ms: 0,
                        dropped: 0,
                    })
                });
                self.cancel_answer();
                self.summary.barge_ins += 1;
                let rate = self.output.rate();
                self.emit(ConversationEvent::BargeIn {
                    at_ms: Self::in_ms(ov.at),
                    detected_ms: Self::in_ms(ov.detected),
                    stop_latency_ms: ov.stop_latency_ms,
                    dropped_ms: ms(ov.dropped as u64, rate),
                });
                self.awaiting = None;
                self.turn = TurnRecord::starting_at(t.turn_start);
                self.set_state(LoopState::UserSpeaking);
            }
            K::Backchannel => {
                self.summary.backchannels += 1;
                self.overlap = None;
                if let Some(a) = self.answer.as_mut() {
                    a.paused = false;
                }
            }
            K::Ignored => {}
        }
        Ok(())
    }

    /// User speech over the answer: stop the audio now, keep what was queued in case it is
    /// only a backchannel.
    fn pause_for_overlap(&mut self, at: SampleIndex, detected: SampleIndex) {
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        let dropped = self.output.flush();
        let flushed_at = self.output.played().0;
        a.paused = true;
        a.run = None;
        let back = dropped.min(a.recent.len());
        for _ in 0..back {
            if let Some(s) = a.recent.pop_back() {
                a.pending.push_front(s);
            }
        }
        a.written = a.written.saturating_sub(dropped as u64);
        let detected_out = Self::in_ms(detected) as f64 + self.offset_ms.unwrap_or(0.0);
        let stop_latency_ms = (self.out_ms_f(flushed_at) - detected_out).max(0.0).round() as u64;
        self.overlap = Some(Overlap {
            at,
            detected,
            stop_latency_ms,
            dropped,
        });
    }

    /// Switches to the pending voice (called only with no answer in flight: the old
    /// synthesizer has nothing left that could still play).
    fn apply_voice(&mut self) {
        let Some(kind) = self.pending_voice.take() else {
            return;
        };
        match (self.parts.synthesizer)(Some(kind)) {
            Ok(s) => {
                // The new synthesizer counts utterances from 0; the old one is dropped (its
                // worker stops) here.
                self.synth = s;
                self.tts_utterance = 0;
                tracing::info!(voice = %kind, "voice changed");
                self.emit(ConversationEvent::Voice {
                    voice: self.synth.voice(),
                    sample_rate: self.synth.sample_rate().hz(),
                });
            }
            Err(e) => self.emit(ConversationEvent::Error {
                message: format!(
                    "cannot switch to the {kind} voice, still speaking with {}: {e}",
                    self.synth.voice()
                ),
            }),
        }
    }

    fn start_answer(&mut self, user_text: String, clock: Option<TurnClock>) {
        self.apply_voice();
        let synth_rate = self.synth.sample_rate();
        let out_rate = self.output.rate();
        let resampler = if synth_rate == out_rate {
            None
        } else {
            match vr_capture::resample::StreamResampler::new(
                vr_capture::AudioFormat {
                    rate: synth_rate,
                    channels: 1,
                },
                out_rate,
            ) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.emit(ConversationEvent::Error {
                        message: format!("cannot resample speech to the output: {e}"),
                    });
                    return;
                }
            }
        };
        let mut req = crate::llm::GenerateRequest::new(self.memory.messages_with_user(&user_text));
        req.max_tokens = self.parts.dialog.max_answer_tokens;
        req.sampling = self.parts.sampling;
        let started = Instant::now();
        let generation = self.parts.llm.generate(req);
        let mut answer = Answer {
            user_text,
            generation: None,
            chunker: vr_tts::ClauseChunker::new(
                self.parts.min_clause_chars,
                self.parts.max_clause_chars,
            ),
            utterance: self.tts_utterance,
            llm_done: false,
            tts_done: false,
            text: String::new(),
            spoken: Vec::new(),
            resampler,
            pending: Default::default(),
            recent: Default::default(),
            written: 0,
            produced: 0,
            run: None,
            marks: Default::default(),
            last_clause: None,
            paused: false,
            first_out: None,
            fallback: false,
            started,
            first_token: None,
            first_clause: None,
            first_chunk: None,
            llm_stats: None,
            turn_clock: clock,
        };
        match generation {
            Ok(g) => answer.generation = Some(g),
            Err(e) => {
                self.answer = Some(answer);
                self.llm_failed(e);
                return;
            }
        }
        self.answer = Some(answer);
    }

    /// The LLM failed: say so (spoken if it cannot be reached), and end the answer's text.
    fn llm_failed(&mut self, e: DialogError) {
        let unreachable = e.is_unreachable();
        tracing::warn!(error = %e, unreachable, "language model failed");
        self.emit(ConversationEvent::Error {
            message: e.to_string(),
        });
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        a.generation = None;
        a.llm_done = true;
        if unreachable {
            a.fallback = true;
            a.chunker.reset();
            if let Err(e) = self.synth.push_text(UNREACHABLE_SENTENCE) {
                tracing::warn!(error = %e, "cannot speak the fallback sentence");
            }
            if a.first_clause.is_none() {
                a.first_clause = Some(Instant::now());
            }
        }
        self.finish_tts();
    }

    fn finish_tts(&mut self) {
        if let Err(e) = self.synth.finish() {
            tracing::warn!(error = %e, "synthesizer finish");
        }
        self.tts_utterance += 1;
    }

    fn poll_llm(&mut self) -> Result<(), DialogError> {
        loop {
            let Some(a) = self.answer.as_mut() else {
                return Ok(());
            };
            let Some(g) = a.generation.as_mut() else {
                return Ok(());
            };
            match g.try_next() {
                crate::llm::Polled::Pending => return Ok(()),
                crate::llm::Polled::Done => {
                    // Ended without `Finished` (engine gone): treat as the end of the text.
                    a.generation = None;
                    if !a.llm_done {
                        self.end_of_text();
                    }
                    return Ok(());
                }
                crate::llm::Polled::Ready(Ok(crate::llm::LlmEvent::Token(t))) => {
                    a.first_token.get_or_insert_with(Instant::now);
                    a.text.push_str(&t.text);
                    for clause in a.chunker.push(&t.text) {
                        a.first_clause.get_or_insert_with(Instant::now);
                        self.synth.push_text(&format!("{clause} "))?;
                    }
                }
                crate::llm::Polled::Ready(Ok(crate::llm::LlmEvent::Finished(f))) => {
                    a.llm_stats = Some(f.stats);
                    a.generation = None;
                    self.end_of_text();
                    return Ok(());
                }
                crate::llm::Polled::Ready(Err(e)) => {
                    self.llm_failed(e);
                    return Ok(());
                }
            }
        }
    }

    fn end_of_text(&mut self) {
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        a.llm_done = true;
        if let Some(rest) = a.chunker.finish() {
            a.first_clause.get_or_insert_with(Instant::now);
            if let Err(e) = self.synth.push_text(&rest) {
                tracing::warn!(error = %e, "synthesizer push");
            }
        }
        self.finish_tts();
    }

    fn poll_tts(&mut self) -> Result<(), DialogError> {
        while let Some(ev) = self.synth.try_recv() {
            let Some(a) = self.answer.as_mut() else {
                continue; // Stale: no answer in flight.
            };
            match ev {
                vr_tts::TtsEvent::Audio(c) if c.utterance == a.utterance => {
                    a.first_chunk.get_or_insert_with(Instant::now);
                    let new_clause = a
                        .last_clause
                        .as_ref()
                        .is_none_or(|l| !Arc::ptr_eq(l, &c.clause));
                    if new_clause {
                        a.marks.push_back((a.produced, c.clause.to_string()));
                        a.last_clause = Some(c.clause.clone());
                    }
                    let before = a.pending.len();
                    match a.resampler.as_mut() {
                        Some(r) => {
                            let pending = &mut a.pending;
                            r.push(&c.samples, |m| pending.extend(m.iter().copied()))?
                        }
                        None => a.pending.extend(c.samples.iter().copied()),
                    }
                    a.produced += (a.pending.len() - before) as u64;
                }
                vr_tts::TtsEvent::Done { utterance } if utterance == a.utterance => {
                    let before = a.pending.len();
                    if let Some(r) = a.resampler.as_mut() {
                        let pending = &mut a.pending;
                        r.finish(|m| pending.extend(m.iter().copied()))?;
                    }
                    a.produced += (a.pending.len() - before) as u64;
                    a.tts_done = true;
                }
                vr_tts::TtsEvent::Failed {
                    utterance,
                    clause,
                    reason,
                } if utterance == a.utterance => {
                    self.emit(ConversationEvent::Error {
                        message: format!("cannot speak {clause:?}: {reason}"),
                    });
                }
                _ => {} // Another (cancelled) utterance: never played.
            }
        }
        Ok(())
    }

    fn feed_output(&mut self) -> Result<(), DialogError> {
        let Some(a) = self.answer.as_mut() else {
            return Ok(());
        };
        if a.paused {
            return Ok(());
        }
        let mut buf: Vec<f32> = Vec::new();
        loop {
            let queued = self.output.queued();
            if a.pending.is_empty() || queued >= self.lead {
                return Ok(());
            }
            let n = (self.lead - queued).min(a.pending.len());
            if queued == 0 || a.run.is_none() {
                // Nothing queued: this write starts playing now.
                let at = self.output.played().0 + queued as u64;
                a.run = Some((a.written, at));
            }
            if a.first_out.is_none() {
                a.first_out = Some(self.output.played().0 + queued as u64);
            }
            buf.clear();
            buf.extend(a.pending.drain(..n));
            self.output.write(&buf)?;
            a.written += n as u64;
            a.recent.extend(buf.iter().copied());
            let keep = self.lead * 2;
            if a.recent.len() > keep {
                let excess = a.recent.len() - keep;
                a.recent.drain(..excess);
            }
        }
    }

    /// Emits what started playing: the answer's first sample (→ Speaking, latency) and clauses.
    fn announce(&mut self) {
        let played = self.output.played().0;
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        let Some((run_frame, run_out)) = a.run else {
            return;
        };
        let out_of = |frame: u64| run_out + frame.saturating_sub(run_frame);
        let mut texts = Vec::new();
        while let Some((frame, _)) = a.marks.front() {
            if *frame >= a.written || out_of(*frame) > played {
                break;
            }
            // A clause that started before the current run (before a pause) counts from its
            // resumption.
            let at = out_of((*frame).max(run_frame));
            if let Some((_, text)) = a.marks.pop_front() {
                a.spoken.push(text.clone());
                texts.push((at, text));
            }
        }
        let first = match a.first_out {
            Some(f) if f <= played && self.state != LoopState::Speaking => Some(f),
            _ => None,
        };
        if let Some(first) = first {
            self.summary.answers += 1;
            self.detector.set_assistant_speaking(true);
            // Dated at the first sample's play-out, not at this poll: a loop thread held up by a
            // busy CPU would otherwise report Speaking late.
            let at_ms = self.out_to_in_ms(first);
            self.set_state_at(LoopState::Speaking, at_ms);
            if let Some(lat) = self.latency(first) {
                self.summary.latencies.push(lat.clone());
                self.emit(ConversationEvent::TurnLatency(lat));
            }
        }
        for (at, text) in texts {
            let at_ms = self.out_to_in_ms(at);
            self.emit(ConversationEvent::AssistantText { text, at_ms });
        }
    }

    fn latency(&mut self, first_out: u64) -> Option<TurnLatency> {
        let onset_in = self.out_to_in_ms(first_out);
        let a = self.answer.as_mut()?;
        let clock = a.turn_clock.take()?;
        let since = |from: Instant, to: Option<Instant>| to.map(|t| millis(t - from));
        Some(TurnLatency {
            turn: clock.turn,
            input: clock.input,
            speech_end_ms: clock.speech_end_ms,
            endpointing_ms: clock.endpointing_ms,
            asr_final_ms: clock.asr_final_ms,
            llm_first_token_ms: since(a.started, a.first_token),
            first_clause_ms: since(a.started, a.first_clause),
            tts_first_chunk_ms: a.first_clause.and_then(|c| since(c, a.first_chunk)),
            onset_ms: onset_in.saturating_sub(clock.start_ms),
        })
    }

    fn maybe_finish_answer(&mut self) {
        let Some(a) = self.answer.as_ref() else {
            return;
        };
        let done = a.llm_done
            && a.tts_done
            && a.pending.is_empty()
            && !a.paused
            && self.output.queued() == 0;
        if !done {
            return;
        }
        if a.first_out.is_some_and(|f| f > self.output.played().0) {
            return;
        }
        // Clauses whose audio was too short to be seen starting are still spoken now.
        self.announce();
        let Some(mut a) = self.answer.take() else {
            return;
        };
        for (_, text) in a.marks.drain(..) {
            a.spoken.push(text);
        }
        self.remember(&a);
        self.emit(ConversationEvent::AnswerEnd {
            text: a.text.trim().to_string(),
            spoken: a.spoken.join(" "),
            interrupted: false,
            prompt_tokens: a.llm_stats.as_ref().map(|s| s.prompt_tokens),
            reused_tokens: a.llm_stats.as_ref().map(|s| s.reused_tokens),
            generated_tokens: a.llm_stats.as_ref().map(|s| s.generated_tokens),
        });
        self.detector.set_assistant_speaking(false);
        let next = if self.detector.user_turn_open() {
            LoopState::UserSpeaking
        } else {
            LoopState::Listening
        };
        self.set_state(next);
    }

    /// The exchange goes into memory as it was heard: only the clauses that started playing.
    fn remember(&mut self, a: &Answer) {
        if a.fallback && a.spoken.is_empty() {
            return;
        }
        let spoken: String = if a.fallback {
            String::new()
        } else {
            a.spoken.join(" ")
        };
        self.memory.push_user(a.user_text.clone());
        if !spoken.trim().is_empty() {
            self.memory.push_assistant(spoken);
        }
    }

    /// Drops the answer in flight: the LLM stops, the synthesizer forgets the utterance, the
    /// output drops what it has queued.
    fn cancel_answer(&mut self) {
        let Some(mut a) = self.answer.take() else {
            return;
        };
        if let Some(g) = a.generation.take() {
            g.cancel();
        }
        self.synth.cancel();
        self.tts_utterance += 1;
        self.output.flush();
        self.overlap = None;
        if a.first_out.is_some() {
            self.remember(&a);
        }
        self.emit(ConversationEvent::AnswerEnd {
            text: a.text.trim().to_string(),
            spoken: a.spoken.join(" "),
            interrupted: true,
            prompt_tokens: a.llm_stats.as_ref().map(|s| s.prompt_tokens),
            reused_tokens: a.llm_stats.as_ref().map(|s| s.reused_tokens),
            generated_tokens: a.llm_stats.as_ref().map(|s| s.generated_tokens),
        });
        a.pending.clear();
        self.detector.set_assistant_speaking(false);
    }
}

/// An [`AudioOutput`] that writes a WAV file as a real-time device would play it: its clock runs
/// on the wall clock from creation, silence fills the time nothing is queued, and a flush cuts
/// queued audio at the current moment. The file is a faithful timeline of what a listener would
/// have heard, so tests can measure onsets and barge-in stops on it.
pub struct WavOutput {
    path: PathBuf,
    writer: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
    rate: SampleRate,
    started: Instant,
    /// Frames already in the file (the timeline up to here is final).
    written: u64,
    /// Queued audio starting at timeline position `queue_start`.
    queue: std::collections::VecDeque<f32>,
    queue_start: u64,
    /// Frames dropped by flushes so far.
    flushed: u64,
}

impl WavOutput {
    /// Creates `path` (32-bit float mono at `rate`); its clock starts now.
    pub fn create(path: &Path, rate: SampleRate) -> Result<Self, DialogError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate.hz(),
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| DialogError::Output {
            reason: format!("cannot create {}: {e}", path.display()),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(writer),
            rate,
            started: Instant::now(),
            written: 0,
            queue: std::collections::VecDeque::new(),
            queue_start: 0,
            flushed: 0,
        })
    }

    /// Restarts the clock (call just before the conversation starts, to align it with the input).
    pub fn restart_clock(&mut self) {
        self.started = Instant::now() - self.rate.duration_of(self.written);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames dropped by flushes so far.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    fn clock(&self) -> u64 {
        self.rate.samples_in(self.started.elapsed())
    }

    fn queue_end(&self) -> u64 {
        self.queue_start + self.queue.len() as u64
    }

    /// Writes the timeline up to `until` (silence where nothing was queued).
    fn materialise(&mut self, until: u64) -> Result<(), DialogError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(DialogError::Output {
                reason: format!("{} is already closed", self.path.display()),
            });
        };
        let err = |e: hound::Error| DialogError::Output {
            reason: format!("cannot write {}: {e}", self.path.display()),
        };
        while self.written < until {
            let s = if self.written >= self.queue_start {
                match self.queue.pop_front() {
                    Some(s) => {
                        self.queue_start += 1;
                        s
                    }
                    None => 0.0,
                }
            } else {
                0.0
            };
            w.write_sample(s).map_err(err)?;
            self.written += 1;
        }
        if self.queue.is_empty() {
            self.queue_start = self.queue_start.max(self.written);
        }
        Ok(())
    }
}

impl AudioOutput for WavOutput {
    fn rate(&self) -> SampleRate {
        self.rate
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), DialogError> {
        let now = self.clock();
        self.materialise(now)?;
        if self.queue.is_empty() {
            // Nothing pending: this audio starts playing now (an idle device plays at once).
            self.queue_start = now.max(self.written);
        }
        self.queue.extend(samples.iter().copied());
        Ok(())
    }

    fn flush(&mut self) -> usize {
        let now = self.clock();
        if let Err(e) = self.materialise(now) {
            tracing::warn!(error = %e, "WAV output");
        }
        let dropped = self.queue.len();
        self.queue.clear();
        self.queue_start = self.written;
        self.flushed += dropped as u64;
        dropped
    }

    fn played(&self) -> SampleIndex {
        SampleIndex(self.clock())
    }

    fn queued(&self) -> usize {
        self.queue_end()
            .saturating_sub(self.clock().max(self.queue_start)) as usize
    }

    fn close(&mut self) -> Result<(), DialogError> {
        // Everything queued is heard in full; the file ends with the last sample.
        let end = self.queue_end().max(self.written);
        self.materialise(end)?;
        if let Some(w) = self.writer.take() {
            w.finalize().map_err(|e| DialogError::Output {
                reason: format!("cannot finalise {}: {e}", self.path.display()),
            })?;
        }
        Ok(())
    }
}

impl Drop for WavOutput {
    fn drop(&mut self) {
        if self.writer.is_some() {
            if let Err(e) = self.close() {
                tracing::warn!(error = %e, "WAV output not finalised");
            }
        }
    }
}

/// Milliseconds of `samples` at `rate`.
pub(crate) fn ms(samples: u64, rate: SampleRate) -> u64 {
    rate.duration_of(samples).as_millis() as u64
}

pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}
