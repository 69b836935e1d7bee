//! The user's side of the driver: the `vad` thread (input ring → 16 kHz mono → stand-alone VAD,
//! Smart Turn verdicts) and the `asr` thread (the streaming recogniser), both posting core events
//! stamped with the input sample clock into the loop's channel.
//!
//! Audio reaches the recogniser through a bounded capture ring ([`ASR_RING_SECONDS`] of 16 kHz
//! audio), never through a channel of buffers: a recogniser that falls behind holds the VAD
//! thread back once the ring is full (for at most [`ASR_PUSH_TIMEOUT`] per piece) and whatever
//! still does not fit is dropped and counted, so turn taking never waits on a Whisper decode
//! until the recogniser is tens of seconds behind.

use super::{post, Msg};
use crate::PipelineError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_asr::vad::VadEvent;
use vr_asr::{AsrEvent, StreamingRecognizer};
use vr_audio::{AudioConsumer, AudioFormat, AudioProducer};
use vr_core::{SampleIndex, SampleRate};
use vr_dialog::core::{Event, Millis};
use vr_dialog::smart_turn::SmartTurn;

/// Samples per VAD and recogniser push: one Silero VAD chunk, so a speech start is known at the
/// input position where the VAD decided it.
const ASR_PIECE: usize = 512;
/// Most audio (16 kHz samples) one recogniser push takes. The recogniser decodes at most once
/// per push, so when a decode took longer than the audio it covered, the backlog goes in as one
/// push and costs one decode rather than one per update interval: the recogniser catches up
/// instead of falling further behind (`voicerelay bench` measures both). While it keeps up the
/// ring holds one VAD piece at a time and pushes stay that small.
pub const ASR_MAX_PUSH: usize = 16_000;
/// How much audio the recogniser may fall behind the VAD before the VAD thread waits for it.
const ASR_RING_SECONDS: usize = 30;
/// Longest the VAD thread waits for room in the recogniser's ring before dropping a piece.
const ASR_PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// VAD decisions waiting for the recogniser (a few per utterance; the recogniser's audio ring
/// fills long before this does).
pub(super) const VAD_EVENT_QUEUE: usize = 1024;
/// How often the threads look at the stop flag while their input is quiet.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// What the stand-alone VAD tells a recogniser that gave up its own.
pub(super) enum VadDecisions {
    /// Decided once the input up to `at` had gone through the VAD.
    At {
        at: SampleIndex,
        events: Vec<VadEvent>,
    },
    /// Decided at the end of the input (`SileroVad::finish`).
    Finished(Vec<VadEvent>),
}

/// The end-of-turn model and the last 8 s of 16 kHz audio it judges.
type TurnModelInput = (Arc<SmartTurn>, VecDeque<f32>);

fn millis(pos: SampleIndex) -> Millis {
    Millis::from_samples(pos, SampleRate::PIPELINE)
}

/// The ring that carries 16 kHz mono audio from the `vad` thread to the `asr` thread.
pub(super) fn asr_ring() -> Result<(AudioProducer, AudioConsumer), PipelineError> {
    let frames = ASR_RING_SECONDS * SampleRate::PIPELINE.hz() as usize;
    Ok(vr_audio::audio_ring(
        "asr-input",
        AudioFormat::PIPELINE,
        frames,
    )?)
}

/// What the `vad` thread works with.
pub(super) struct InputThread {
    pub input: AudioConsumer,
    pub vad: Option<vr_asr::vad::SileroVad>,
    pub turn_model: Option<Arc<SmartTurn>>,
    pub asr: AudioProducer,
    /// The VAD's decisions for a recogniser that gave up its own VAD, each with the input
    /// position at which it was decided (the end of the piece that decided it).
    pub vad_to_asr: Option<SyncSender<VadDecisions>>,
    pub tx: SyncSender<Msg>,
    pub stop: Arc<AtomicBool>,
}

impl InputThread {
    pub(super) fn run(mut self) {
        let tx = self.tx.clone();
        if let Err(e) = self.pump() {
            post(
                &tx,
                Msg::Core(Event::RecognizerFailed {
                    reason: e.to_string(),
                }),
            );
        }
        // Dropping the producer (with `self`) tells the recogniser the input ended.
    }

    fn pump(&mut self) -> Result<(), PipelineError> {
        let format = self.input.format();
        let mut resampler = if format == AudioFormat::PIPELINE {
            None
        } else {
            Some(vr_audio::resample::StreamResampler::new(
                format,
                SampleRate::PIPELINE,
            )?)
        };
        let mut turn_model: Option<TurnModelInput> =
            self.turn_model.clone().map(|m| (m, VecDeque::new()));
        let mut mono: Vec<f32> = Vec::with_capacity(SampleRate::PIPELINE.hz() as usize);
        let mut pos = SampleIndex::ZERO;
        let mut dropped = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !self.input.wait_for_data(IDLE_WAIT) {
                if self.input.end_position().is_some() {
                    break;
                }
                continue;
            }
            let read_at = Instant::now();
            while let Some(chunk) = self.input.peek() {
                let frames = chunk.samples.len() / usize::from(format.channels);
                match resampler.as_mut() {
                    Some(r) => r.push(chunk.samples, |m| mono.extend_from_slice(m))?,
                    None => mono.extend_from_slice(chunk.samples),
                }
                self.input.consume(frames);
            }
            let whole = mono.len() / ASR_PIECE * ASR_PIECE;
            self.forward(
                &mono[..whole],
                &mut pos,
                read_at,
                &mut turn_model,
                &mut dropped,
            )?;
            mono.drain(..whole);
        }
        if let Some(r) = resampler.as_mut() {
            r.finish(|m| mono.extend_from_slice(m))?;
        }
        let read_at = Instant::now();
        self.forward(&mono, &mut pos, read_at, &mut turn_model, &mut dropped)?;
        if let Some(v) = self.vad.as_mut() {
            let decided = v.finish();
            if let Some(tx) = &self.vad_to_asr {
                let _ = tx.send(VadDecisions::Finished(decided.clone()));
            }
            let events = decided
                .into_iter()
                .filter_map(VadEvent::boundary)
                .filter_map(speech_event)
                .collect();
            post(
                &self.tx,
                Msg::Input {
                    events,
                    pos,
                    read_at,
                },
            );
        }
        if dropped > 0 {
            tracing::warn!(
                dropped_ms = SampleRate::PIPELINE.duration_of(dropped).as_millis() as u64,
                "the recogniser fell behind: audio it never heard"
            );
        }
        Ok(())
    }

    /// Passes the VAD's decisions at `pos` on to a recogniser that takes them. Waits while the
    /// queue is full rather than lose one: a lost speech end would leave an utterance open.
    fn hand_to_recogniser(&self, pos: SampleIndex, decided: &[VadEvent]) {
        if let (Some(tx), false) = (&self.vad_to_asr, decided.is_empty()) {
            // A recogniser that stopped no longer needs them.
            let _ = tx.send(VadDecisions::At {
                at: pos,
                events: decided.to_vec(),
            });
        }
    }

    /// Runs the VAD (and Smart Turn) over `mono` piece by piece, reporting each piece's events
    /// with the clock reading, and hands the audio to the recogniser's ring.
    fn forward(
        &mut self,
        mono: &[f32],
        pos: &mut SampleIndex,
        read_at: Instant,
        turn_model: &mut Option<TurnModelInput>,
        dropped: &mut u64,
    ) -> Result<(), PipelineError> {
        if mono.is_empty() {
            return Ok(());
        }
        for piece in mono.chunks(ASR_PIECE) {
            *pos = pos.advance(piece.len() as u64);
            let Some(v) = self.vad.as_mut() else {
                continue;
            };
            let decided = v.push(piece)?;
            self.hand_to_recogniser(*pos, &decided);
            let raw: Vec<AsrEvent> = decided.into_iter().filter_map(VadEvent::boundary).collect();
            let ends: Vec<SampleIndex> = raw
                .iter()
                .filter_map(|e| match e {
                    AsrEvent::SpeechEnded { at } => Some(*at),
                    _ => None,
                })
                .collect();
            let events = raw.into_iter().filter_map(speech_event).collect();
            post(
                &self.tx,
                Msg::Input {
                    events,
                    pos: *pos,
                    read_at,
                },
            );
            if let Some((model, tail)) = turn_model.as_mut() {
                tail.extend(piece.iter().copied());
                let excess = tail
                    .len()
                    .saturating_sub(vr_dialog::smart_turn::WINDOW_SAMPLES);
                tail.drain(..excess);
                // The VAD's speech end is the short stop: judge the audio up to here.
                for at in ends {
                    let probability = model.probability(tail.make_contiguous())?;
                    post(
                        &self.tx,
                        Msg::Core(Event::TurnModel {
                            speech_end: millis(at),
                            probability,
                        }),
                    );
                }
            }
        }
        if self.vad.is_none() {
            // No VAD: the recogniser drives turn taking; this only keeps the clock.
            post(
                &self.tx,
                Msg::Input {
                    events: Vec::new(),
                    pos: *pos,
                    read_at,
                },
            );
        }
        let stored = self.asr.push_blocking(mono, ASR_PUSH_TIMEOUT);
        if stored < mono.len() {
            if *dropped == 0 {
                tracing::warn!("the recogniser's input ring is full: dropping audio");
            }
            *dropped += (mono.len() - stored) as u64;
            crate::metrics::asr_dropped((mono.len() - stored) as u64);
        }
        Ok(())
    }
}

/// A VAD decision as a core event.
fn speech_event(e: AsrEvent) -> Option<Event> {
    match e {
        AsrEvent::SpeechStarted { at } => Some(Event::SpeechStarted { at: millis(at) }),
        AsrEvent::SpeechEnded { at } => Some(Event::SpeechEnded { at: millis(at) }),
        _ => None,
    }
}

/// What the `asr` thread works with.
pub(super) struct AsrThread {
    pub audio: AudioConsumer,
    pub recognizer: Box<dyn StreamingRecognizer>,
    /// No stand-alone VAD: the recogniser's own speech events drive turn taking.
    pub speech_events: bool,
    /// The stand-alone VAD's decisions, for a recogniser that gave up its own VAD.
    pub vad: Option<Receiver<VadDecisions>>,
    /// Decisions received and not yet handed over (their audio has not been pushed yet).
    pub pending_vad: VecDeque<(SampleIndex, Vec<VadEvent>)>,
    /// The VAD's end-of-input decisions, once received.
    pub vad_finished: Vec<VadEvent>,
    /// Set by the loop: the input position where the turn detector last ended a turn.
    pub end_utterance: Arc<AtomicU64>,
    /// The turn end already handed to the recogniser.
    pub ended_upto: u64,
    pub tx: SyncSender<Msg>,
    pub stop: Arc<AtomicBool>,
}

impl AsrThread {
    /// Runs the recogniser on the ring's audio (all that is waiting, up to [`ASR_MAX_PUSH`]
    /// contiguous samples per push); when the input ends,
    /// finalises and reports the end.
    pub(super) fn run(mut self) {
        match self.recognise() {
            Ok(Some(pos)) => post(&self.tx, Msg::InputEnded { pos }),
            Ok(None) => {}
            Err(e) => post(
                &self.tx,
                Msg::Core(Event::RecognizerFailed {
                    reason: e.to_string(),
                }),
            ),
        }
    }

    /// The input's end position, or `None` when stopped first.
    fn recognise(&mut self) -> Result<Option<SampleIndex>, PipelineError> {
        let mut piece = vec![0f32; ASR_MAX_PUSH];
        let mut pos = SampleIndex::ZERO;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let Some((start, n)) = self.audio.pop_into(&mut piece) else {
                if let Some(end) = self.audio.end_position() {
                    pos = pos.max(end);
                    break;
                }
                self.audio.wait_for_data(IDLE_WAIT);
                continue;
            };
            let mut events = self.push(start, &piece[..n])?;
            // A gap (audio the ring dropped) moves the clock on without the recogniser.
            pos = start.advance(n as u64);
            events.extend(self.end_utterance_if_due(pos)?);
            self.report(events, pos);
        }
        // The VAD thread has finished (the ring's producer is gone), so every decision it made,
        // its last speech end included, is in the queue.
        let mut events = if self.vad.is_some() {
            self.push(pos, &[])?
        } else {
            Vec::new()
        };
        events.extend(self.recognizer.finish_with_vad(&self.vad_finished)?);
        self.report(events, pos);
        Ok(Some(pos))
    }

    /// The turn ended and the recogniser has heard the audio up to its end: the utterance it
    /// holds open is final now, not after its own final silence.
    fn end_utterance_if_due(&mut self, pos: SampleIndex) -> Result<Vec<AsrEvent>, PipelineError> {
        let upto = self.end_utterance.load(Ordering::Acquire);
        if upto <= self.ended_upto || pos.0 < upto {
            return Ok(Vec::new());
        }
        self.ended_upto = upto;
        Ok(self.recognizer.end_utterance()?)
    }

    /// Pushes `samples` (input positions from `start`), cut where the VAD decided something so
    /// that each decision reaches the recogniser right after the audio that decided it, as its
    /// own VAD's would have.
    fn push(
        &mut self,
        start: SampleIndex,
        samples: &[f32],
    ) -> Result<Vec<AsrEvent>, PipelineError> {
        let Some(rx) = &self.vad else {
            return Ok(self.recognizer.push(samples)?);
        };
        for news in rx.try_iter() {
            match news {
                VadDecisions::At { at, events } => self.pending_vad.push_back((at, events)),
                VadDecisions::Finished(events) => self.vad_finished = events,
            }
        }
        let end = start.advance(samples.len() as u64);
        let mut events = Vec::new();
        let mut done = 0usize;
        while let Some((at, _)) = self.pending_vad.front() {
            if *at > end {
                break;
            }
            let Some((at, decided)) = self.pending_vad.pop_front() else {
                break;
            };
            // A decision inside audio the ring dropped is handed over at once.
            let upto = (at.0.saturating_sub(start.0) as usize).clamp(done, samples.len());
            events.extend(
                self.recognizer
                    .push_with_vad(&samples[done..upto], &decided)?,
            );
            done = upto;
        }
        if done < samples.len() {
            events.extend(self.recognizer.push_with_vad(&samples[done..], &[])?);
        }
        Ok(events)
    }

    fn report(&self, raw: Vec<AsrEvent>, pos: SampleIndex) {
        let mut events = Vec::with_capacity(raw.len() + 1);
        for e in raw {
            match e {
                AsrEvent::Partial {
                    text,
                    stable_prefix_len,
                } => events.push(Event::AsrPartial {
                    text,
                    stable_prefix_len,
                }),
                AsrEvent::Final {
                    text, start, end, ..
                } => events.push(Event::AsrFinal {
                    text,
                    start: millis(start),
                    end: millis(end),
                }),
                e @ (AsrEvent::SpeechStarted { .. } | AsrEvent::SpeechEnded { .. }) => {
                    if self.speech_events {
                        events.extend(speech_event(e));
                    }
                }
            }
        }
        events.push(Event::AsrProgress { upto: millis(pos) });
        post(
            &self.tx,
            Msg::Asr {
                events,
                pos,
                read_at: Instant::now(),
            },
        );
    }
}
