//! One LLM worker per engine role (`llm-main`, `llm-draft`): it starts the core's generations on
//! its engine and relays the tokens into the loop's channel tagged with their answer.
//!
//! Jobs come in on a small bounded queue. Each generation gets a sequence number; cancelling an
//! answer marks every job issued for it (and any older answer) dead: a queued one is skipped, the
//! running one is stopped through the engine's [`CancelToken`], set from the loop thread at once
//! (the worker may be waiting on the engine's stream).

use super::{post, Msg};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use vr_dialog::core::{AnswerId, Event, LlmFailure};
use vr_dialog::llm::{
    CancelToken, ChatMessage, FinishReason, GenerateRequest, LlmEngine, LlmEvent,
};

/// Jobs waiting for a worker: a generation and a few prefills at most, in practice.
const JOB_QUEUE: usize = 16;
/// Generations remembered for cancelling.
const ISSUED_KEPT: usize = 8;

/// How a generation's events reach the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// The answer's text: `LlmToken`, `LlmFinished`, `LlmFailed`.
    Answer,
    /// The dual path's draft: `DraftToken`, `DraftFinished`, `DraftFailed`.
    Draft,
}

enum Job {
    Generate {
        seq: u64,
        answer: AnswerId,
        request: Box<GenerateRequest>,
        stream: Stream,
    },
    Prefill(Vec<ChatMessage>),
}

/// What the loop and the worker share about cancellation.
#[derive(Default)]
struct Cancel {
    /// Every generation with a sequence number up to this is dead.
    dead: AtomicU64,
    /// The running generation: its number and the engine's cancel token.
    running: Mutex<Option<(u64, CancelToken)>>,
}

impl Cancel {
    fn running(&self) -> MutexGuard<'_, Option<(u64, CancelToken)>> {
        // Plain data: a panicking holder cannot leave it inconsistent.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_dead(&self, seq: u64) -> bool {
        seq <= self.dead.load(Ordering::SeqCst)
    }
}

/// The loop's end of one worker.
pub(super) struct LlmWorker {
    role: &'static str,
    jobs: Option<SyncSender<Job>>,
    cancel: Arc<Cancel>,
    next_seq: u64,
    /// Generations issued and not yet known dead: (number, answer).
    issued: VecDeque<(u64, AnswerId)>,
    dropped: u64,
    thread: Option<JoinHandle<()>>,
}

impl LlmWorker {
    /// Starts the worker thread for `role` on `engine`, at OS priority `nice`.
    pub(super) fn spawn(
        role: &'static str,
        engine: Arc<dyn LlmEngine>,
        nice: i32,
        tx: SyncSender<Msg>,
    ) -> Result<Self, crate::PipelineError> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(JOB_QUEUE);
        let cancel = Arc::new(Cancel::default());
        let shared = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("llm-{role}"))
            .spawn(move || {
                vr_dialog::priority::lower_this_thread(nice, role);
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Prefill(messages) => engine.prepare(&messages),
                        Job::Generate {
                            seq,
                            answer,
                            request,
                            stream,
                        } => {
                            if !shared.is_dead(seq) {
                                generate(&*engine, &shared, seq, answer, *request, stream, &tx);
                            }
                        }
                    }
                }
            })
            .map_err(|e| {
                crate::PipelineError::Runtime(format!("cannot start the {role} LLM worker: {e}"))
            })?;
        Ok(Self {
            role,
            jobs: Some(jobs),
            cancel,
            next_seq: 0,
            issued: VecDeque::new(),
            dropped: 0,
            thread: Some(thread),
        })
    }

    fn submit(&mut self, job: Job) -> bool {
        let Some(jobs) = self.jobs.as_ref() else {
            return false;
        };
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                // The loop never waits on a worker; a full queue means it is far behind.
                self.dropped += 1;
                crate::metrics::queue_dropped("llm_jobs");
                tracing::warn!(
                    role = self.role,
                    dropped = self.dropped,
                    "LLM job queue full: job dropped"
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Starts generating `answer`; false if the job could not be queued (the caller reports
    /// the failure to the core).
    pub(super) fn start(
        &mut self,
        answer: AnswerId,
        request: GenerateRequest,
        stream: Stream,
    ) -> bool {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.issued.push_back((seq, answer));
        // The core only cancels the answer in flight (its draft, its generation, its fast
        // completion): older entries are of answers long over.
        if self.issued.len() > ISSUED_KEPT {
            self.issued.pop_front();
        }
        self.submit(Job::Generate {
            seq,
            answer,
            request: Box::new(request),
            stream,
        })
    }

    /// Speculative prefill; dropped silently when the queue is full (it is only a hint).
    pub(super) fn prefill(&mut self, messages: Vec<ChatMessage>) {
        self.submit(Job::Prefill(messages));
    }

    /// Stops every generation issued so far for `answer` or an older one.
    pub(super) fn cancel(&mut self, answer: AnswerId) {
        let Some(dead) = self
            .issued
            .iter()
            .filter(|(_, a)| *a <= answer)
            .map(|(s, _)| *s)
            .max()
        else {
            return;
        };
        self.issued.retain(|(s, _)| *s > dead);
        self.cancel.dead.fetch_max(dead, Ordering::SeqCst);
        if let Some((seq, token)) = self.cancel.running().as_ref() {
            if *seq <= dead {
                token.cancel();
            }
        }
    }
}

impl Drop for LlmWorker {
    fn drop(&mut self) {
        self.cancel.dead.store(u64::MAX, Ordering::SeqCst);
        if let Some((_, token)) = self.cancel.running().as_ref() {
            token.cancel();
        }
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(role = self.role, "LLM worker panicked");
            }
        }
    }
}

/// Runs one generation on `engine`, relaying its events until it ends or is cancelled.
fn generate(
    engine: &dyn LlmEngine,
    cancel: &Cancel,
    seq: u64,
    answer: AnswerId,
    request: GenerateRequest,
    stream: Stream,
    tx: &SyncSender<Msg>,
) {
    let fail = |e: &vr_dialog::DialogError| match stream {
        Stream::Answer => Event::LlmFailed {
            answer,
            failure: LlmFailure::from(e),
        },
        Stream::Draft => Event::DraftFailed {
            answer,
            reason: e.to_string(),
        },
    };
    let mut generation = match engine.generate(request) {
        Ok(g) => g,
        Err(e) => {
            post(tx, Msg::Core(fail(&e)));
            return;
        }
    };
    *cancel.running() = Some((seq, generation.cancel_token()));
    // A cancel that came between the check before `generate` and the line above saw no token.
    if cancel.is_dead(seq) {
        generation.cancel();
    }
    let mut finished = false;
    while let Some(ev) = generation.blocking_next() {
        let event = match ev {
            Ok(LlmEvent::Token(token)) => match stream {
                Stream::Answer => Event::LlmToken { answer, token },
                Stream::Draft => Event::DraftToken { answer, token },
            },
            Ok(LlmEvent::Finished(f)) => {
                finished = true;
                match stream {
                    Stream::Answer => Event::LlmFinished {
                        answer,
                        stats: Some(f.stats),
                    },
                    Stream::Draft => Event::DraftFinished {
                        answer,
                        complete: f.reason == FinishReason::Stop,
                    },
                }
            }
            Err(e) => {
                finished = true;
                fail(&e)
            }
        };
        post(tx, Msg::Core(event));
    }
    // The stream closed without a word (engine gone): the text ends here, unless cancelled.
    if !finished && !cancel.is_dead(seq) && !generation.cancel_token().is_cancelled() {
        let event = match stream {
            Stream::Answer => Event::LlmFinished {
                answer,
                stats: None,
            },
            Stream::Draft => Event::DraftFinished {
                answer,
                complete: false,
            },
        };
        post(tx, Msg::Core(event));
    }
    *cancel.running() = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vr_dialog::llm::llamacpp::{LlamaCppEngine, LlamaCppModel, LlamaCppOptions};

    fn next(rx: &mpsc::Receiver<Msg>) -> Event {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Msg::Core(e)) => e,
            Ok(_) => panic!("an LLM worker posts only core events"),
            Err(e) => panic!("no event from the worker: {e}"),
        }
    }

    /// Cancelling an answer stops its running generation within the few tokens already posted,
    /// and a job issued for the same answer afterwards (a fast completion after its draft was
    /// cut) still runs to its end.
    #[test]
    fn a_cancel_stops_the_running_generation_and_later_jobs_of_the_answer_run() {
        let Some(store) = vr_core::prereq::models(&["qwen2.5-0.5b"]) else {
            return;
        };
        let model = LlamaCppModel::from_store(&store, "qwen2.5-0.5b").expect("model");
        let engine: Arc<dyn LlmEngine> =
            Arc::new(LlamaCppEngine::new(model, LlamaCppOptions::default()).expect("engine"));
        // A small queue: the worker waits for room instead of dropping tokens.
        let (tx, rx) = mpsc::sync_channel(4);
        let mut w = LlmWorker::spawn("test", engine, 0, tx).expect("worker");
        let mut long = GenerateRequest::new(vec![ChatMessage::user(
            "Count from one to one hundred, one number per line.",
        )]);
        long.max_tokens = 200;
        let mut short = long.clone();
        short.max_tokens = 3;
        assert!(w.start(AnswerId(1), long, Stream::Draft));
        assert!(matches!(
            next(&rx),
            Event::DraftToken {
                answer: AnswerId(1),
                ..
            }
        ));
        w.cancel(AnswerId(1));
        assert!(w.start(AnswerId(1), short, Stream::Answer));
        let (mut late_draft, mut tokens) = (0, 0);
        loop {
            match next(&rx) {
                Event::DraftToken { .. } => late_draft += 1,
                Event::DraftFinished { .. } => panic!("the cancelled draft must not finish"),
                Event::LlmToken { answer, .. } => {
                    assert_eq!(answer, AnswerId(1));
                    tokens += 1;
                }
                Event::LlmFinished { answer, stats } => {
                    assert_eq!(answer, AnswerId(1));
                    assert_eq!(stats.map(|s| s.generated_tokens), Some(3));
                    break;
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        // What was already queued to the loop (4) and the one being posted, no more.
        assert!(
            late_draft <= 5,
            "{late_draft} draft tokens after the cancel"
        );
        assert_eq!(tokens, 3);
    }
}
