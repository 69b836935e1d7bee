//! The worker-thread synthesizer behind [`Synthesizer`]: see the crate docs for the design.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vr_core::{ModelStore, SampleIndex, SampleRate};

use crate::verbalize::verbalize;
use crate::voices::open_voice;
use crate::{
    AudioChunk, Interrupter, Synthesizer, TtsConfig, TtsError, TtsEvent, VoiceEngine, VoiceKind,
};
use vr_core::clause::ClauseChunker;

enum Command {
    Text {
        epoch: u64,
        utterance: u64,
        text: String,
    },
    /// Ends the utterance: what the chunker still holds, then `text` as given (not chunked:
    /// empty from `finish`, a whole clause from `speak_clause`), then `Done`.
    End {
        epoch: u64,
        utterance: u64,
        text: String,
    },
    Shutdown,
}

struct Queue {
    events: VecDeque<TtsEvent>,
    worker_alive: bool,
}

/// How much synthesised audio may wait for its consumer before the worker stops synthesising
/// and waits for room: a consumer that stalls (a blocked pump, a slow client) holds the worker
/// back instead of growing memory without bound. Nothing is dropped; a cancel frees it at once.
pub const MAX_QUEUED_AUDIO: Duration = Duration::from_secs(30);

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an event is queued (consumers wait on it).
    ready: Condvar,
    /// Signalled when an event is taken or the queue is cleared (a worker waiting for room).
    space: Condvar,
    /// The queue's bound in events: [`MAX_QUEUED_AUDIO`] in `chunk_ms` chunks.
    max_events: usize,
    /// Bumped by `cancel` while holding `queue`; everything stamped with an older epoch is dead.
    epoch: AtomicU64,
    /// The utterance text is currently being pushed to.
    utterance: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds plain data; a panicking holder cannot leave it inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `ev` only if `epoch` is still current, waiting while the queue is full; false if
    /// it was cancelled (before or while waiting).
    fn emit(&self, epoch: u64, ev: TtsEvent) -> bool {
        let mut q = self.lock();
        while q.events.len() >= self.max_events && self.current(epoch) {
            q = self.space.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if !self.current(epoch) {
            return false;
        }
        q.events.push_back(ev);
        drop(q);
        self.ready.notify_all();
        true
    }

    fn current(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::SeqCst) == epoch
    }
}

/// A [`Synthesizer`] running one [`VoiceEngine`] on its own thread.
pub struct StreamingSynthesizer {
    shared: Arc<Shared>,
    tx: Mutex<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
    interrupter: Option<Interrupter>,
    voice: VoiceKind,
    rate: SampleRate,
    fallback_reason: Option<String>,
}

impl StreamingSynthesizer {
    /// Opens the configured voice (falling back with a warning) and starts the worker. Loads
    /// the voice's model: for many synthesizers over one load, use a [`crate::VoiceBank`].
    pub fn from_config(cfg: &TtsConfig, store: &ModelStore) -> Result<Self, TtsError> {
        let opened = open_voice(cfg, store)?;
        let mut s = Self::new(opened.engine, cfg)?;
        s.fallback_reason = opened.fallback_reason;
        Ok(s)
    }

    pub(crate) fn set_fallback_reason(&mut self, reason: Option<String>) {
        self.fallback_reason = reason;
    }

    /// Starts the worker thread around `engine`.
    pub fn new(engine: Box<dyn VoiceEngine>, cfg: &TtsConfig) -> Result<Self, TtsError> {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                worker_alive: true,
            }),
            ready: Condvar::new(),
            space: Condvar::new(),
            max_events: (MAX_QUEUED_AUDIO.as_millis() as usize / cfg.chunk_ms.max(1) as usize)
                .max(1),
            epoch: AtomicU64::new(0),
            utterance: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let voice = engine.kind();
        let rate = engine.sample_rate();
        let interrupter = engine.interrupter();
        let chunker = ClauseChunker::new(cfg.min_chunk_chars, cfg.max_chunk_chars);
        let chunk_samples = (u64::from(rate.hz()) * u64::from(cfg.chunk_ms) / 1000).max(1) as usize;
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name(format!("tts-{voice}"))
            .spawn(move || {
                let mut w = Worker {
                    shared: worker_shared,
                    engine,
                    chunker,
                    chunk_samples,
                    utterance: u64::MAX,
                    position: SampleIndex::ZERO,
                };
                w.run(rx);
                let mut q = w.shared.lock();
                q.worker_alive = false;
                drop(q);
                w.shared.ready.notify_all();
            })
            .map_err(|e| TtsError::Io {
                path: "tts worker thread".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            shared,
            tx: Mutex::new(tx),
            worker: Some(worker),
            interrupter,
            voice,
            rate,
            fallback_reason: None,
        })
    }

    /// The synthesised audio waiting for its consumer; at most [`MAX_QUEUED_AUDIO`] plus one
    /// chunk.
    pub fn queued_audio(&self) -> Duration {
        let samples: usize = self
            .shared
            .lock()
            .events
            .iter()
            .map(|e| match e {
                TtsEvent::Audio(c) => c.samples.len(),
                _ => 0,
            })
            .sum();
        Duration::from_secs_f64(samples as f64 / f64::from(self.rate.hz()))
    }

    /// Why a fallback voice is speaking, if one is.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    fn send(&self, cmd: Command) -> Result<(), TtsError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .map_err(|_| TtsError::WorkerGone)
    }

    /// Synthesises `text` as one utterance and returns all its samples (for `say` and tests).
    /// Gives up with [`TtsError::Interrupted`] if nothing arrives for `idle_timeout`.
    pub fn speak_all(&self, text: &str, idle_timeout: Duration) -> Result<Vec<f32>, TtsError> {
        let utterance = self.shared.utterance.load(Ordering::SeqCst);
        self.push_text(text)?;
        self.finish()?;
        let mut out = Vec::new();
        loop {
            match self.recv_timeout(idle_timeout)? {
                Some(TtsEvent::Audio(c)) if c.utterance == utterance => out.extend(c.samples),
                Some(TtsEvent::Done { utterance: u }) if u == utterance => return Ok(out),
                Some(TtsEvent::Failed { reason, clause, .. }) => {
                    tracing::warn!(%clause, %reason, "clause failed to synthesise");
                }
                Some(_) => {}
                None => return Err(TtsError::Interrupted),
            }
        }
    }
}

impl Synthesizer for StreamingSynthesizer {
    fn voice(&self) -> VoiceKind {
        self.voice
    }

    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn push_text(&self, fragment: &str) -> Result<(), TtsError> {
        if fragment.is_empty() {
            return Ok(());
        }
        self.send(Command::Text {
            epoch: self.shared.epoch.load(Ordering::SeqCst),
            utterance: self.shared.utterance.load(Ordering::SeqCst),
            text: fragment.to_string(),
        })
    }

    fn finish(&self) -> Result<(), TtsError> {
        let utterance = self.shared.utterance.fetch_add(1, Ordering::SeqCst);
        self.send(Command::End {
            epoch: self.shared.epoch.load(Ordering::SeqCst),
            utterance,
            text: String::new(),
        })
    }

    fn speak_clause(&self, clause: &str) -> Result<(), TtsError> {
        let utterance = self.shared.utterance.fetch_add(1, Ordering::SeqCst);
        self.send(Command::End {
            epoch: self.shared.epoch.load(Ordering::SeqCst),
            utterance,
            text: clause.to_string(),
        })
    }

    fn recv_timeout(&self, timeout: Duration) -> Result<Option<TtsEvent>, TtsError> {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.lock();
        loop {
            if let Some(ev) = q.events.pop_front() {
                drop(q);
                self.shared.space.notify_all();
                return Ok(Some(ev));
            }
            if !q.worker_alive {
                return Err(TtsError::WorkerGone);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            q = self
                .shared
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn try_recv(&self) -> Option<TtsEvent> {
        let ev = self.shared.lock().events.pop_front();
        if ev.is_some() {
            self.shared.space.notify_all();
        }
        ev
    }

    fn cancel(&self) {
        let mut q = self.shared.lock();
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.utterance.fetch_add(1, Ordering::SeqCst);
        q.events.clear();
        drop(q);
        if let Some(i) = &self.interrupter {
            i();
        }
        self.shared.ready.notify_all();
        self.shared.space.notify_all();
    }
}

impl Drop for StreamingSynthesizer {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.send(Command::Shutdown);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    engine: Box<dyn VoiceEngine>,
    chunker: ClauseChunker,
    chunk_samples: usize,
    utterance: u64,
    position: SampleIndex,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Shutdown => return,
                Command::Text {
                    epoch,
                    utterance,
                    text,
                } => {
                    if !self.shared.current(epoch) {
                        continue;
                    }
                    self.enter(utterance);
                    for clause in self.chunker.push(&text) {
                        if !self.speak(epoch, &clause) {
                            self.chunker.reset();
                            break;
                        }
                    }
                }
                Command::End {
                    epoch,
                    utterance,
                    text,
                } => {
                    if !self.shared.current(epoch) {
                        continue;
                    }
                    self.enter(utterance);
                    // Text pushed before and not finished is the start of this utterance.
                    let rest = self.chunker.finish();
                    let spoken = rest.iter().map(String::as_str).chain([text.trim()]);
                    if !spoken
                        .filter(|t| !t.is_empty())
                        .all(|t| self.speak(epoch, t))
                    {
                        continue;
                    }
                    self.shared.emit(epoch, TtsEvent::Done { utterance });
                    // The next text belongs to a new utterance.
                    self.utterance = u64::MAX;
                }
            }
        }
    }

    fn enter(&mut self, utterance: u64) {
        if utterance != self.utterance {
            self.chunker.reset();
            self.utterance = utterance;
            self.position = SampleIndex::ZERO;
        }
    }

    /// Synthesises one clause and queues its chunks; false once `epoch` has been cancelled.
    fn speak(&mut self, epoch: u64, clause: &str) -> bool {
        if !self.shared.current(epoch) {
            return false;
        }
        let text = verbalize(clause);
        let samples = match self.engine.synthesize(&text) {
            Ok(s) => s,
            Err(TtsError::Interrupted) => return self.shared.current(epoch),
            Err(e) => {
                return self.shared.emit(
                    epoch,
                    TtsEvent::Failed {
                        utterance: self.utterance,
                        clause: clause.to_string(),
                        reason: e.to_string(),
                    },
                );
            }
        };
        let clause: Arc<str> = Arc::from(clause);
        let rate = self.engine.sample_rate();
        for piece in samples.chunks(self.chunk_samples) {
            let chunk = AudioChunk {
                samples: piece.to_vec(),
                rate,
                utterance: self.utterance,
                start: self.position,
                clause: Arc::clone(&clause),
            };
            if !self.shared.emit(epoch, TtsEvent::Audio(chunk)) {
                return false;
            }
            self.position = self.position.advance(piece.len() as u64);
        }
        true
    }
}
