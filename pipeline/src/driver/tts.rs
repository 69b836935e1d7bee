//! The TTS worker (`tts` thread): performs the core's SpeakText / FinishSpeech / CancelSpeech /
//! SetVoice on the conversation's [`Synthesizer`], resamples its audio to the output's rate and
//! posts TtsAudio / TtsDone / TtsFailed / VoiceReady / VoiceFailed into the loop's channel.
//!
//! Each clause is its own synthesizer utterance (pushed, then finished), so the synthesizer's
//! chunks map back to the core's clause exactly, whatever its own chunker would have cut. The
//! synthesizer's events reach the worker through a `tts-pump` thread that waits on them and
//! posts them into the worker's own bounded queue, so the worker waits on one queue for both
//! commands and audio, and nothing here polls.

use super::{post, Msg};
use crate::assistant::SynthesizerFactory;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vr_audio::resample::StreamResampler;
use vr_core::SampleRate;
use vr_dialog::core::{AnswerId, ClauseId, Event};
use vr_tts::{Synthesizer, TtsEvent, VoiceKind};

/// Commands and synthesizer events waiting for the worker.
const QUEUE: usize = 256;
/// How often an idle pump looks at its stop flag.
const PUMP_WAIT: Duration = Duration::from_millis(200);

enum In {
    Speak {
        answer: AnswerId,
        clause: ClauseId,
        text: String,
    },
    Finish(AnswerId),
    Cancel(AnswerId),
    Voice(VoiceKind),
    /// An event of the synthesizer of voice generation `.0`.
    Synth(u64, TtsEvent),
    Shutdown,
}

/// The loop's end of the worker.
pub(super) struct TtsWorker {
    tx: SyncSender<In>,
    dropped: u64,
    thread: Option<JoinHandle<()>>,
}

impl TtsWorker {
    pub(super) fn spawn(
        synth: Box<dyn Synthesizer>,
        factory: SynthesizerFactory,
        out_rate: SampleRate,
        loop_tx: SyncSender<Msg>,
    ) -> Result<Self, crate::PipelineError> {
        let (tx, rx) = mpsc::sync_channel::<In>(QUEUE);
        let self_tx = tx.clone();
        let thread = std::thread::Builder::new()
            .name("tts".into())
            .spawn(move || {
                let mut w = Worker {
                    synth: Arc::from(synth),
                    factory,
                    out_rate,
                    tx: loop_tx,
                    self_tx,
                    generation: 0,
                    pump: None,
                    next_utterance: 0,
                    utterances: HashMap::new(),
                    answer: None,
                };
                w.run(rx);
            })
            .map_err(|e| {
                crate::PipelineError::Runtime(format!("cannot start the TTS worker: {e}"))
            })?;
        Ok(Self {
            tx,
            dropped: 0,
            thread: Some(thread),
        })
    }

    fn send(&mut self, cmd: In) {
        match self.tx.try_send(cmd) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                // The loop never waits on the worker; a full queue means it is far behind.
                self.dropped += 1;
                crate::metrics::queue_dropped("tts_jobs");
                tracing::warn!(dropped = self.dropped, "TTS queue full: command dropped");
            }
        }
    }

    pub(super) fn speak(&mut self, answer: AnswerId, clause: ClauseId, text: String) {
        self.send(In::Speak {
            answer,
            clause,
            text,
        });
    }

    pub(super) fn finish(&mut self, answer: AnswerId) {
        self.send(In::Finish(answer));
    }

    pub(super) fn cancel(&mut self, answer: AnswerId) {
        self.send(In::Cancel(answer));
    }

    pub(super) fn set_voice(&mut self, kind: VoiceKind) {
        self.send(In::Voice(kind));
    }
}

impl Drop for TtsWorker {
    fn drop(&mut self) {
        // Blocking: the worker drains its queue quickly, and must see this to stop its pump.
        let _ = self.tx.send(In::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("TTS worker panicked");
            }
        }
    }
}

/// The answer being spoken.
struct Speaking {
    id: AnswerId,
    /// Utterances (clauses) pushed and not yet done.
    open: usize,
    finished: bool,
    resampler: Option<StreamResampler>,
    last_clause: ClauseId,
}

struct Pump {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Worker {
    synth: Arc<dyn Synthesizer>,
    factory: SynthesizerFactory,
    out_rate: SampleRate,
    tx: SyncSender<Msg>,
    self_tx: SyncSender<In>,
    /// Bumped with each new synthesizer; events of an older one are stale.
    generation: u64,
    pump: Option<Pump>,
    /// Mirror of the synthesizer's utterance counter (bumped by `finish` and `cancel`).
    next_utterance: u64,
    utterances: HashMap<u64, (AnswerId, ClauseId)>,
    answer: Option<Speaking>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<In>) {
        self.start_pump();
        self.voice_ready();
        while let Ok(msg) = rx.recv() {
            match msg {
                In::Speak {
                    answer,
                    clause,
                    text,
                } => self.speak(answer, clause, &text),
                In::Finish(answer) => {
                    if let Some(a) = self.answer.as_mut().filter(|a| a.id == answer) {
                        a.finished = true;
                    }
                    self.maybe_done();
                }
                In::Cancel(answer) => {
                    if self.answer.as_ref().is_some_and(|a| a.id <= answer) {
                        self.synth.cancel();
                        self.next_utterance += 1;
                        self.utterances.clear();
                        self.answer = None;
                    }
                }
                In::Voice(kind) => self.switch_voice(kind),
                In::Synth(generation, ev) if generation == self.generation => self.on_synth(ev),
                In::Synth(..) => {}
                In::Shutdown => break,
            }
        }
        self.stop_pump();
    }

    fn voice_ready(&self) {
        post(
            &self.tx,
            Msg::Core(Event::VoiceReady {
                voice: self.synth.voice(),
                sample_rate: self.synth.sample_rate().hz(),
            }),
        );
    }

    fn speak(&mut self, answer: AnswerId, clause: ClauseId, text: &str) {
        if self.answer.as_ref().is_none_or(|a| a.id != answer) {
            let resampler = match self.resampler() {
                Ok(r) => r,
                Err(reason) => {
                    post(
                        &self.tx,
                        Msg::Core(Event::TtsFailed {
                            answer,
                            clause,
                            reason,
                        }),
                    );
                    return;
                }
            };
            self.answer = Some(Speaking {
                id: answer,
                open: 0,
                finished: false,
                resampler,
                last_clause: clause,
            });
        }
        let utterance = self.next_utterance;
        // One utterance per clause, cut once, by the core's chunker.
        let pushed = self.synth.speak_clause(text);
        self.next_utterance += 1;
        match pushed {
            Ok(()) => {
                self.utterances.insert(utterance, (answer, clause));
                if let Some(a) = self.answer.as_mut() {
                    a.open += 1;
                }
            }
            Err(e) => post(
                &self.tx,
                Msg::Core(Event::TtsFailed {
                    answer,
                    clause,
                    reason: e.to_string(),
                }),
            ),
        }
    }

    fn resampler(&self) -> Result<Option<StreamResampler>, String> {
        let rate = self.synth.sample_rate();
        if rate == self.out_rate {
            return Ok(None);
        }
        let format = vr_audio::AudioFormat { rate, channels: 1 };
        StreamResampler::new(format, self.out_rate)
            .map(Some)
            .map_err(|e| format!("cannot resample speech to the output: {e}"))
    }

    fn on_synth(&mut self, ev: TtsEvent) {
        match ev {
            TtsEvent::Audio(chunk) => {
                let Some(&(answer, clause)) = self.utterances.get(&chunk.utterance) else {
                    return; // A cancelled utterance.
                };
                let Some(a) = self.answer.as_mut().filter(|a| a.id == answer) else {
                    return;
                };
                a.last_clause = clause;
                let samples = match a.resampler.as_mut() {
                    None => chunk.samples,
                    Some(r) => {
                        let mut out = Vec::with_capacity(chunk.samples.len() * 3);
                        if let Err(e) = r.push(&chunk.samples, |m| out.extend_from_slice(m)) {
                            tracing::warn!(error = %e, "resampling speech");
                        }
                        out
                    }
                };
                if !samples.is_empty() {
                    post(
                        &self.tx,
                        Msg::Core(Event::TtsAudio {
                            answer,
                            clause,
                            samples,
                        }),
                    );
                }
            }
            TtsEvent::Done { utterance } => {
                let Some((answer, _)) = self.utterances.remove(&utterance) else {
                    return;
                };
                if let Some(a) = self.answer.as_mut().filter(|a| a.id == answer) {
                    a.open = a.open.saturating_sub(1);
                }
                self.maybe_done();
            }
            TtsEvent::Failed {
                utterance, reason, ..
            } => {
                if let Some(&(answer, clause)) = self.utterances.get(&utterance) {
                    post(
                        &self.tx,
                        Msg::Core(Event::TtsFailed {
                            answer,
                            clause,
                            reason,
                        }),
                    );
                }
            }
        }
    }

    /// Reports the answer's speech complete once it has no more text and every clause is done;
    /// the resampler's tail goes out first.
    fn maybe_done(&mut self) {
        if !self
            .answer
            .as_ref()
            .is_some_and(|a| a.finished && a.open == 0)
        {
            return;
        }
        let Some(mut a) = self.answer.take() else {
            return;
        };
        if let Some(r) = a.resampler.as_mut() {
            let mut tail = Vec::new();
            if let Err(e) = r.finish(|m| tail.extend_from_slice(m)) {
                tracing::warn!(error = %e, "resampling speech");
            }
            if !tail.is_empty() {
                post(
                    &self.tx,
                    Msg::Core(Event::TtsAudio {
                        answer: a.id,
                        clause: a.last_clause,
                        samples: tail,
                    }),
                );
            }
        }
        post(&self.tx, Msg::Core(Event::TtsDone { answer: a.id }));
    }

    /// Only between answers (the core's rule): nothing of the old voice can still play.
    fn switch_voice(&mut self, kind: VoiceKind) {
        match (self.factory)(Some(kind)) {
            Ok(s) => {
                self.stop_pump();
                self.synth = Arc::from(s);
                self.generation += 1;
                self.next_utterance = 0;
                self.utterances.clear();
                self.answer = None;
                self.start_pump();
                tracing::info!(voice = %kind, "voice changed");
                self.voice_ready();
            }
            Err(e) => post(
                &self.tx,
                Msg::Core(Event::VoiceFailed {
                    voice: kind,
                    reason: e.to_string(),
                }),
            ),
        }
    }

    fn start_pump(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let (synth, tx, generation, flag) = (
            self.synth.clone(),
            self.self_tx.clone(),
            self.generation,
            stop.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("tts-pump".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match synth.recv_timeout(PUMP_WAIT) {
                        Ok(Some(ev)) => {
                            if tx.send(In::Synth(generation, ev)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "synthesizer stopped");
                            return;
                        }
                    }
                }
            });
        match spawned {
            Ok(thread) => self.pump = Some(Pump { stop, thread }),
            Err(e) => tracing::error!(error = %e, "cannot start the synthesizer's pump"),
        }
    }

    fn stop_pump(&mut self) {
        if let Some(p) = self.pump.take() {
            p.stop.store(true, Ordering::SeqCst);
            // Not joined: it may be blocked posting into this worker's own full queue; it ends
            // at its next wake-up (its sends fail once this worker's receiver is gone).
            drop(p.thread);
        }
    }
}
