//! The threaded shell around [`ConversationCore`]: it runs [`crate::Conversation::run`].
//!
//! Threads (all per conversation):
//! - the **loop** (the caller's thread) owns the core. It blocks on one bounded channel
//!   ([`MSG_QUEUE`] messages) until a message arrives or the core's next deadline passes, hands
//!   the core the event with the moment on the input clock, and performs the actions: output
//!   writes/pause/resume/flush on the [`AudioOutput`], events to the [`EventSink`], and jobs for
//!   the workers, which it never waits on (their queues are bounded and it only `try_send`s);
//! - `vad` ([`input`]): input ring → 16 kHz mono → stand-alone VAD and Smart Turn; posts speech
//!   starts/ends and verdicts with clock readings; hands the audio to `asr` through a bounded
//!   capture ring;
//! - `asr` ([`input`]): the streaming recogniser; posts partials, finals and its progress;
//! - `llm-main`, and `llm-draft` on the dual path ([`llm`]): one per engine role, at a lower OS
//!   priority ([`vr_dialog::DialogConfig::llm_nice`]); relay tokens tagged with their answer;
//! - `tts` and its `tts-pump` ([`tts`]): speak the core's clauses, resample to the output.
//!
//! Every worker posts into the loop's one channel; the producers wait when it is full (the loop
//! drains it between actions), except the [`crate::ConversationHandle`], which must never block
//! its caller: it drops and counts what does not fit.
//!
//! Clocks: the core's `now` is the input clock, ms since the first input sample. The loop keeps
//! the moment input sample 0 was captured, estimated from the VAD's readings (the audio up to
//! `pos` existed when it was read: the earliest estimate is the least delayed) and reads the wall
//! clock against it. The output's frame counter is reported to the core before each step
//! ([`Event::OutputPlayed`]); the core maps it onto the input clock.

mod input;
pub use input::ASR_MAX_PUSH;
mod llm;
mod output;
mod tts;

use crate::assistant::{AssistantParts, AudioOutput};
use crate::PipelineError;
use llm::{LlmWorker, Stream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_asr::StreamingRecognizer;
use vr_core::{SampleIndex, SampleRate};
use vr_dialog::core::{Action, AnswerId, ConversationCore, CoreConfig, Event, LlmFailure, Millis};
use vr_dialog::{ConversationEvent, ConversationSummary, EventSink};
use vr_tts::Synthesizer;

/// Messages waiting for the loop.
const MSG_QUEUE: usize = 1024;
/// Longest the loop sleeps with nothing scheduled: a safety net for a stop whose wake-up
/// message was dropped (the stop flag is read on every wake).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// What the threads post to the loop.
pub(crate) enum Msg {
    /// Stand-alone VAD decisions, with a clock reading: the input up to `pos` had been captured
    /// by `read_at`.
    Input {
        events: Vec<Event>,
        pos: SampleIndex,
        read_at: Instant,
    },
    /// Recogniser output up to `pos` (its progress comes last among `events`).
    Asr {
        events: Vec<Event>,
        pos: SampleIndex,
        read_at: Instant,
    },
    /// The input ended at `pos` and everything in it was recognised.
    InputEnded {
        pos: SampleIndex,
    },
    Core(Event),
}

/// Posts from a worker thread: waits while the loop's queue is full; a loop that is gone no
/// longer wants anything.
pub(crate) fn post(tx: &SyncSender<Msg>, msg: Msg) {
    let _ = tx.send(msg);
}

/// The control side of a conversation, shared by its handles.
#[derive(Clone)]
pub(crate) struct Control {
    tx: SyncSender<Msg>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl Control {
    pub(crate) fn new() -> (Self, Receiver<Msg>) {
        let (tx, rx) = mpsc::sync_channel(MSG_QUEUE);
        let control = Self {
            tx,
            stop: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (control, rx)
    }

    /// Never blocks the caller (an async task, a signal handler's thread). False once the
    /// loop has ended.
    pub(crate) fn send(&self, event: Event) -> bool {
        match self.tx.try_send(Msg::Core(event)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::queue_dropped("control");
                tracing::warn!(
                    dropped = n,
                    "conversation queue full: control message dropped"
                );
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.send(Event::Stop);
    }
}

/// Input sample 0's capture moment, estimated from clock readings.
struct InputClock {
    t0: Instant,
}

impl InputClock {
    /// The audio up to `pos` had been captured by `read_at`.
    fn observe(&mut self, pos: SampleIndex, read_at: Instant) {
        if let Some(t) = read_at.checked_sub(SampleRate::PIPELINE.duration_of(pos.0)) {
            self.t0 = self.t0.min(t);
        }
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn until(&self, at: Millis) -> Duration {
        (self.t0 + Duration::from_millis(at.ms())).saturating_duration_since(Instant::now())
    }
}

/// What [`run`] takes over: one conversation's parts.
pub(crate) struct Session {
    pub parts: AssistantParts,
    pub recognizer: Box<dyn StreamingRecognizer>,
    pub synthesizer: Box<dyn Synthesizer>,
    pub vad: Option<vr_asr::vad::SileroVad>,
    pub control: Control,
    pub rx: Receiver<Msg>,
}

/// The core's configuration for this assistant and output.
fn core_config(parts: &AssistantParts, output_rate: SampleRate) -> CoreConfig {
    let mut cfg = CoreConfig::new(&parts.dialog, output_rate);
    // Smart Turn's verdicts come from the stand-alone VAD's thread: without that VAD or the
    // model, the silence timer decides.
    if parts.turn_model.is_none() || parts.vad.is_none() {
        cfg.turn.end_of_turn = vr_dialog::turn::EndOfTurn::Timer;
    }
    cfg.sampling = parts.sampling;
    cfg.min_clause_chars = parts.min_clause_chars;
    cfg.max_clause_chars = parts.max_clause_chars;
    cfg.vad_end_lag = parts.vad_end_lag;
    cfg.dual = parts.dual.as_ref().map(|d| d.config.clone());
    cfg
}

/// Runs the conversation on this thread. See the module docs.
pub(crate) fn run(
    session: Session,
    input: vr_audio::AudioConsumer,
    mut output: Box<dyn AudioOutput>,
    events: impl EventSink,
) -> Result<ConversationSummary, PipelineError> {
    let Session {
        parts,
        recognizer,
        synthesizer,
        vad,
        control,
        rx,
    } = session;
    let stop = control.stop.clone();
    let (asr_in, asr_out) = input::asr_ring()?;
    let has_vad = vad.is_some();
    let mut recognizer = recognizer;
    // One Silero pass per sample: when the recogniser would gate itself on a VAD of its own
    // (same `[vad]` config as the stand-alone one), it takes the stand-alone VAD's decisions.
    // Where the turn detector last ended a turn (input samples; 0: none yet): the recogniser
    // finalises its open utterance once its audio reaches it.
    let end_utterance = Arc::new(AtomicU64::new(0));
    let (vad_to_asr, vad_from_asr) = if has_vad && recognizer.use_external_vad() {
        let (tx, rx) = mpsc::sync_channel(input::VAD_EVENT_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| PipelineError::Runtime(format!("cannot start the {name} thread: {e}")))
    };
    let vad_thread = input::InputThread {
        input,
        vad,
        turn_model: parts.turn_model.clone(),
        asr: asr_in,
        vad_to_asr,
        tx: control.tx.clone(),
        stop: stop.clone(),
    };
    let vad_thread = spawn("vad", Box::new(move || vad_thread.run()))?;
    let asr_thread = input::AsrThread {
        audio: asr_out,
        recognizer,
        speech_events: !has_vad,
        vad: vad_from_asr,
        pending_vad: std::collections::VecDeque::new(),
        vad_finished: Vec::new(),
        end_utterance: end_utterance.clone(),
        ended_upto: 0,
        tx: control.tx.clone(),
        stop: stop.clone(),
    };
    let asr_thread = spawn("asr", Box::new(move || asr_thread.run()))?;
    let result = {
        let cfg = core_config(&parts, output.rate());
        let lead = cfg.output_lead;
        let mut lp = Loop {
            core: ConversationCore::new(cfg, parts.token_counter.clone()),
            llm: LlmWorker::spawn(
                "main",
                parts.llm.clone(),
                parts.dialog.llm_nice,
                control.tx.clone(),
            )?,
            draft: match parts.dual.as_ref() {
                Some(d) => Some(LlmWorker::spawn(
                    "draft",
                    d.drafter.clone(),
                    parts.dialog.llm_nice,
                    control.tx.clone(),
                )?),
                None => None,
            },
            tts: tts::TtsWorker::spawn(
                synthesizer,
                parts.synthesizer.clone(),
                output.rate(),
                control.tx.clone(),
            )?,
            out: output::Output::new(output.as_mut(), lead),
            events,
            clock: InputClock { t0: Instant::now() },
            wakes: (0, 0),
            stopped_at: None,
            end_utterance,
        };
        // Nothing but the workers and the handles may keep the channel open.
        drop(control);
        // The channel goes before the workers are joined (when `lp` drops): a worker waiting
        // for room in it would otherwise never finish.
        lp.run(rx, &stop)
    };
    stop.store(true, Ordering::SeqCst);
    if vad_thread.join().is_err() {
        tracing::error!("input thread panicked");
    }
    if asr_thread.join().is_err() {
        tracing::error!("ASR thread panicked");
    }
    let closed = output.close();
    let summary = result?;
    closed?;
    Ok(summary)
}

struct Loop<'a, E: EventSink> {
    core: ConversationCore,
    llm: LlmWorker,
    /// The dual path's drafter (it also completes an answer whose slow model failed).
    draft: Option<LlmWorker>,
    tts: tts::TtsWorker,
    out: output::Output<'a>,
    events: E,
    clock: InputClock,
    /// Wake-ups by a message and by a deadline (logged at the end: the loop does not poll).
    wakes: (u64, u64),
    /// When the output last stopped for user speech (a pause, or a flush without one), on the
    /// input clock: the core dates a barge-in's stop at its own step and cannot see this delay.
    stopped_at: Option<Millis>,
    /// Shared with the `asr` thread: the input position of the last turn end.
    end_utterance: Arc<AtomicU64>,
}

impl<E: EventSink> Loop<'_, E> {
    fn run(
        &mut self,
        rx: Receiver<Msg>,
        stop: &AtomicBool,
    ) -> Result<ConversationSummary, PipelineError> {
        while !self.core.is_done() {
            if stop.load(Ordering::SeqCst) {
                let now = self.clock.now();
                self.step(Event::Stop, now)?;
                break;
            }
            let wait = self
                .core
                .next_deadline()
                .map_or(IDLE_WAKE, |d| self.clock.until(d).min(IDLE_WAKE));
            let msg = match rx.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.wake(msg)?;
            // Whatever else is already waiting goes in before the next wait.
            while !self.core.is_done() {
                match rx.try_recv() {
                    Ok(msg) => self.wake(Some(msg))?,
                    Err(_) => break,
                }
            }
        }
        tracing::info!(
            message_wakes = self.wakes.0,
            deadline_wakes = self.wakes.1,
            input_ms = self.clock.now().ms(),
            "conversation loop ended"
        );
        if let Some(reason) = self.core.failure() {
            return Err(PipelineError::Runtime(reason.to_string()));
        }
        Ok(self.core.summary().clone())
    }

    /// One wake-up: the output's position, then the message (or the deadline's tick).
    fn wake(&mut self, msg: Option<Msg>) -> Result<(), PipelineError> {
        if let Some(Msg::Input { pos, read_at, .. } | Msg::Asr { pos, read_at, .. }) = &msg {
            self.clock.observe(*pos, *read_at);
        }
        let now = self.clock.now();
        if msg.is_some() {
            self.wakes.0 += 1;
        } else {
            self.wakes.1 += 1;
        }
        let frames = self.out.played();
        self.step(Event::OutputPlayed { frames }, now)?;
        match msg {
            None => self.step(Event::Tick, now),
            Some(Msg::Input { events, .. } | Msg::Asr { events, .. }) => {
                for event in events {
                    self.step(event, now)?;
                }
                Ok(())
            }
            Some(Msg::InputEnded { pos }) => {
                let at = Millis::from_samples(pos, SampleRate::PIPELINE);
                self.step(Event::InputEnded { at }, now)
            }
            Some(Msg::Core(event)) => self.step(event, now),
        }
    }

    fn step(&mut self, event: Event, now: Millis) -> Result<(), PipelineError> {
        for action in self.core.handle(event, now) {
            self.perform(action, now)?;
        }
        Ok(())
    }

    fn perform(&mut self, action: Action, now: Millis) -> Result<(), PipelineError> {
        match action {
            Action::Prefill { messages } => {
                // On the dual path the drafter speaks first, so its cache is the one the onset
                // waits on; the slow model's is warmed too, or its prefill after the verifier
                // shows as a gap at the seam. Each worker runs its own queue, one core each.
                if let Some(d) = self.draft.as_mut() {
                    d.prefill(messages.clone());
                }
                self.llm.prefill(messages);
            }
            Action::StartGeneration { answer, request } => {
                if !self.llm.start(answer, request, Stream::Answer) {
                    self.not_queued(answer, now)?;
                }
            }
            Action::CancelGeneration { answer } => {
                self.llm.cancel(answer);
                // A fast completion of the answer runs on the drafter.
                if let Some(d) = self.draft.as_mut() {
                    d.cancel(answer);
                }
            }
            Action::StartDraft { answer, request } => {
                let queued = self
                    .draft
                    .as_mut()
                    .is_some_and(|d| d.start(answer, request, Stream::Draft));
                if !queued {
                    let reason = "the drafter's queue is full or no drafter is configured";
                    let event = Event::DraftFailed {
                        answer,
                        reason: reason.into(),
                    };
                    self.step(event, now)?;
                }
            }
            Action::CancelDraft { answer } => {
                if let Some(d) = self.draft.as_mut() {
                    d.cancel(answer);
                }
            }
            Action::StartFastCompletion { answer, request } => {
                let queued = self
                    .draft
                    .as_mut()
                    .is_some_and(|d| d.start(answer, request, Stream::Answer));
                if !queued {
                    self.not_queued(answer, now)?;
                }
            }
            Action::SpeakText {
                answer,
                clause,
                text,
            } => self.tts.speak(answer, clause, text),
            Action::FinishSpeech { answer } => self.tts.finish(answer),
            Action::CancelSpeech { answer } => self.tts.cancel(answer),
            Action::WriteAudio { samples, .. } => {
                self.out.write(&samples)?;
                // Audio plays again: an earlier stop (an interrupt's flush) is not this one's.
                self.stopped_at = None;
            }
            Action::PauseAudio => {
                self.out.pause();
                self.stopped_at = Some(self.clock.now());
            }
            Action::ResumeAudio => {
                self.out.resume()?;
                self.stopped_at = None;
            }
            Action::FlushAudio => {
                self.out.flush();
                self.stopped_at.get_or_insert(self.clock.now());
            }
            Action::SetVoice(kind) => self.tts.set_voice(kind),
            Action::EndUtterance { upto } => {
                let at = upto.to_samples(SampleRate::PIPELINE).0;
                self.end_utterance.fetch_max(at, Ordering::Release);
            }
            Action::Emit(ConversationEvent::BargeIn {
                at_ms,
                detected_ms,
                stop_latency_ms,
                dropped_ms,
            }) => {
                // Measured here: from the VAD's report to the moment the output stopped.
                let stop_latency_ms = self
                    .stopped_at
                    .take()
                    .map_or(stop_latency_ms, |t| t.ms().saturating_sub(detected_ms));
                self.events.emit(ConversationEvent::BargeIn {
                    at_ms,
                    detected_ms,
                    stop_latency_ms,
                    dropped_ms,
                });
            }
            Action::Emit(event) => self.events.emit(event),
        }
        Ok(())
    }

    /// A generation that could not even be queued fails like one the engine refused.
    fn not_queued(&mut self, answer: AnswerId, now: Millis) -> Result<(), PipelineError> {
        self.step(
            Event::LlmFailed {
                answer,
                failure: LlmFailure {
                    message: "the language model's queue is full".into(),
                    unreachable: false,
                    busy: true,
                },
            },
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// A client's control message that finds the conversation's queue full is dropped (the
    /// caller never blocks) and counted in `pipeline_queue_dropped_total{queue="control"}`.
    #[test]
    fn a_full_control_queue_drops_and_counts_what_does_not_fit() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let (control, rx) = Control::new();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..MSG_QUEUE + 3 {
                control.send(Event::ClientInterrupt);
            }
        });
        assert_eq!(control.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().count(), MSG_QUEUE, "what fitted is all there");
        let text = metrics.render();
        assert!(
            text.contains("pipeline_queue_dropped_total{queue=\"control\"} 3"),
            "{text}"
        );
    }
}
