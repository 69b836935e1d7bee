//! The cascaded assistant loop: Listening → UserSpeaking → Thinking → Speaking, with barge-in.
//!
//! One [`Assistant`] holds what is expensive and shareable (the LLM engine behind an `Arc`, the
//! recipes for building a recogniser and a voice) and hands out one [`Conversation`] per session
//! (a `voicerelay listen` run, a WebRTC peer, an eval dialogue). A conversation owns its own
//! recogniser, synthesizer, turn detector and token-bounded memory; sessions share the LLM (the
//! local engine serialises them on its one worker thread).
//!
//! [`Conversation::run`] is blocking and takes over the calling thread:
//! - an `asr` thread it spawns drains the 16 kHz input ring, runs the streaming recogniser (VAD
//!   included) and sends its events, stamped with the input sample clock, to the loop;
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

/// Per-turn latency breakdown. All durations in milliseconds; `None` when the stage did not
/// happen in this turn (a fallback sentence has no LLM token). The stages overlap in time (the
/// recogniser finalises while the endpointer waits), so they do not sum to the onset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnLatency {
    /// Turn number in this conversation, from 1.
    pub turn: u32,
    /// End of the user's speech (the VAD's speech end of the turn's last segment), input clock.
    pub speech_end_ms: u64,
    /// Endpointing wait: end of speech → the turn detector's `TurnEnded` (input clock: the
    /// silence timeout plus whatever the recogniser's delivery delay added).
    pub endpointing_ms: u64,
    /// ASR finalisation: end of speech → the turn's final transcript reached the loop.
    pub asr_final_ms: u64,
    /// `generate` called → first token.
    pub llm_first_token_ms: Option<u64>,
    /// `generate` called → first complete clause handed to the synthesizer.
    pub first_clause_ms: Option<u64>,
    /// First clause handed to the synthesizer → its first audio chunk.
    pub tts_first_chunk_ms: Option<u64>,
    /// Onset: end of the user's speech → first answer sample played, on the output clock.
    pub onset_ms: u64,
    /// Prompt tokens and how many of them the engine's KV cache already held (local engine).
    pub prompt_tokens: Option<usize>,
    pub reused_tokens: Option<usize>,
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
    Error {
        message: String,
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
/// Builds one synthesizer per conversation.
pub type SynthesizerFactory =
    Arc<dyn Fn() -> Result<Box<dyn Synthesizer>, DialogError> + Send + Sync>;

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

    /// The configured assistant: the `[llm]` engine (loaded now), the `[asr]`/`[vad]` recogniser
    /// and the `[tts]` voice (built per conversation), `[dialog]` turn taking and persona.
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
        let (asr, vad, rec_store) = (asr.clone(), vad.clone(), store.clone());
        let recognizer: RecognizerFactory = Arc::new(move || {
            vr_asr::build_recognizer(&asr, &vad, &rec_store).map_err(DialogError::from)
        });
        let (tts_cfg, tts_store) = (tts.clone(), store.clone());
        let synthesizer: SynthesizerFactory = Arc::new(move || {
            let s = vr_tts::StreamingSynthesizer::from_config(&tts_cfg, &tts_store)?;
            if let Some(why) = s.fallback_reason() {
                tracing::warn!(voice = %s.voice(), reason = why, "fallback voice");
            }
            Ok(Box::new(s) as Box<dyn Synthesizer>)
        });
        Self::new(AssistantParts {
            dialog: dialog.clone(),
            llm: Arc::from(engine),
            sampling: llm.sampling(),
            token_counter,
            recognizer,
            synthesizer,
            min_clause_chars: tts.min_chunk_chars,
            max_clause_chars: tts.max_chunk_chars,
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
        let synthesizer = (self.parts.synthesizer)()?;
        let (tx, rx) = mpsc::channel();
        Ok(Conversation {
            parts: self.parts.clone(),
            recognizer,
            synthesizer,
            control: Control {
                tx,
                stop: Arc::new(AtomicBool::new(false)),
            },
            rx,
        })
    }
}

/// Messages into the loop thread: recogniser output and control requests.
pub(crate) enum LoopMsg {
    /// Recogniser events from input up to `pos` (input clock, 16 kHz).
    Asr {
        events: Vec<vr_asr::AsrEvent>,
        pos: SampleIndex,
        /// Wall-clock moment the audio up to `pos` was taken from the ring.
        read_at: Instant,
    },
    /// The input ended at `pos` (its producer was dropped and everything was recognised).
    InputEnded {
        pos: SampleIndex,
    },
    /// The recogniser failed; the conversation ends with this error.
    AsrFailed(String),
    Interrupt,
    Text(String),
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
        let _ = self.control.tx.send(LoopMsg::Text(text.into()));
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
        output: Box<dyn AudioOutput>,
        events: impl EventSink,
    ) -> Result<ConversationSummary, DialogError> {
        let _ = (
            input,
            output,
            events,
            &self.parts,
            &self.recognizer,
            &self.synthesizer,
            &self.rx,
        );
        Err(DialogError::Runtime(
            "the conversation loop lands in the next commit on branch dialog-loop".into(),
        ))
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

#[allow(dead_code)]
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}
