//! The one worker thread a local model runs on, shared by the candle and llama.cpp engines.
//!
//! Every session of a server feeds one worker (the weights and their KV cache are loaded once),
//! so its job queue is the place where one client could starve the others: it is bounded, and a
//! generation that finds it full fails at once with [`DialogError::Busy`] instead of waiting
//! behind an unbounded backlog. A speculative prefill that finds it full is dropped: it only
//! ever saves time, and a full queue means newer work is waiting anyway.

use super::local::PrefillStats;
use super::{
    CancelToken, ChatMessage, Finished, GenerateRequest, Generation, GenerationSender, LlmEvent,
};
use crate::DialogError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Jobs a worker holds beyond the one it runs: room for every session of a full server
/// (`transport.max_sessions` defaults to 4) to queue its answer, its draft and a prefill.
pub const JOB_QUEUE: usize = 32;

/// What a worker thread drives: one model with its own cache.
pub(crate) trait ModelSession {
    fn describe(&self) -> &str;

    fn prefill_open_turn(
        &mut self,
        messages: &[ChatMessage],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<PrefillStats, DialogError>;

    fn generate(
        &mut self,
        req: &GenerateRequest,
        cancel: &CancelToken,
        emit: &mut dyn FnMut(LlmEvent) -> bool,
    ) -> Result<Finished, DialogError>;
}

/// Implements [`ModelSession`] for an engine's session type by its inherent methods of the same
/// names (which stay the public API for direct, single-threaded use).
macro_rules! model_session {
    ($t:ty) => {
        impl $crate::llm::worker::ModelSession for $t {
            fn describe(&self) -> &str {
                <$t>::describe(self)
            }

            fn prefill_open_turn(
                &mut self,
                messages: &[$crate::llm::ChatMessage],
                interrupt: &dyn Fn() -> bool,
            ) -> Result<$crate::llm::local::PrefillStats, $crate::DialogError> {
                <$t>::prefill_open_turn(self, messages, interrupt)
            }

            fn generate(
                &mut self,
                req: &$crate::llm::GenerateRequest,
                cancel: &$crate::llm::CancelToken,
                emit: &mut dyn FnMut($crate::llm::LlmEvent) -> bool,
            ) -> Result<$crate::llm::Finished, $crate::DialogError> {
                <$t>::generate(self, req, cancel, emit)
            }
        }
    };
}
pub(crate) use model_session;

enum Job {
    Prepare(Vec<ChatMessage>),
    Generate {
        req: Box<GenerateRequest>,
        tx: GenerationSender,
        cancel: CancelToken,
    },
    /// Answered once every job queued before it is done.
    Barrier(SyncSender<()>),
}

impl Job {
    /// Work that a queued speculative prefill should give way to.
    fn is_work(&self) -> bool {
        !matches!(self, Job::Barrier(_))
    }
}

/// The worker thread and its bounded queue.
pub(crate) struct Worker {
    jobs: Option<SyncSender<Job>>,
    /// Work queued and not yet started: a running prefill stops when this is non-zero.
    pending: Arc<AtomicUsize>,
    capacity: usize,
    label: String,
    thread: Option<JoinHandle<()>>,
}

/// The worker thread's end of the queue.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Job>,
    pending: Arc<AtomicUsize>,
    ready: SyncSender<Result<String, DialogError>>,
}

impl Inbox {
    /// Reports the session open (or why not) and runs jobs until the engine is dropped.
    pub(crate) fn serve<S: ModelSession>(self, session: Result<S, DialogError>) {
        let mut session = match session {
            Ok(s) => s,
            Err(e) => {
                let _ = self.ready.send(Err(e));
                return;
            }
        };
        let _ = self.ready.send(Ok(session.describe().to_string()));
        while let Ok(job) = self.rx.recv() {
            if job.is_work() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
            run(&mut session, job, &self.pending);
        }
    }
}

impl Worker {
    /// Starts thread `name` running `body`, which opens the session on that thread (a llama.cpp
    /// context borrows its model, so both must live in the worker's frame) and hands it to
    /// [`Inbox::serve`]. Returns once the session exists, or with the error opening it.
    pub(crate) fn spawn<F>(name: &str, body: F) -> Result<Self, DialogError>
    where
        F: FnOnce(Inbox) + Send + 'static,
    {
        Self::spawn_with_queue(name, JOB_QUEUE, body)
    }

    fn spawn_with_queue<F>(name: &str, queue: usize, body: F) -> Result<Self, DialogError>
    where
        F: FnOnce(Inbox) + Send + 'static,
    {
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let (ready, ready_rx) = mpsc::sync_channel::<Result<String, DialogError>>(1);
        let pending = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox {
            rx,
            pending: pending.clone(),
            ready,
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(inbox))
            .map_err(|e| DialogError::Runtime(format!("cannot start LLM worker thread: {e}")))?;
        let label = ready_rx.recv().map_err(|_| DialogError::EngineStopped)??;
        Ok(Self {
            jobs: Some(jobs),
            pending,
            capacity: queue,
            label,
            thread: Some(thread),
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// `Err` once the worker thread has ended (a model step panicked): every later request
    /// would fail, so a health check must say so.
    pub(crate) fn health(&self) -> Result<(), String> {
        match &self.thread {
            Some(t) if !t.is_finished() => Ok(()),
            _ => Err(format!("the LLM worker for {} has stopped", self.label)),
        }
    }

    fn submit(&self, job: Job) -> Result<(), DialogError> {
        let jobs = self.jobs.as_ref().ok_or(DialogError::EngineStopped)?;
        let work = job.is_work();
        if work {
            self.pending.fetch_add(1, Ordering::SeqCst);
        }
        jobs.try_send(job).map_err(|e| {
            if work {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
            match e {
                TrySendError::Full(_) => DialogError::Busy {
                    queued: self.capacity,
                },
                TrySendError::Disconnected(_) => DialogError::EngineStopped,
            }
        })
    }

    pub(crate) fn generate(&self, req: GenerateRequest) -> Result<Generation, DialogError> {
        super::check_request(&req)?;
        let cancel = CancelToken::new();
        let (tx, generation) = Generation::channel(cancel.clone());
        self.submit(Job::Generate {
            req: Box::new(req),
            tx,
            cancel,
        })?;
        Ok(generation)
    }

    pub(crate) fn prepare(&self, messages: &[ChatMessage]) {
        match self.submit(Job::Prepare(messages.to_vec())) {
            Ok(()) => {}
            Err(DialogError::Busy { .. }) => {
                tracing::debug!("speculative prefill dropped: the LLM queue is full")
            }
            Err(e) => tracing::warn!(error = %e, "speculative prefill not queued"),
        }
    }

    /// Blocks until every job submitted before this call has finished (a speculative prefill
    /// included). For tests and benchmarks; the loop never needs to wait.
    pub(crate) fn wait_idle(&self) -> Result<(), DialogError> {
        // One reply, so room for one.
        let (tx, rx) = mpsc::sync_channel(1);
        // Waiting is the point here, so this one waits for room too.
        let jobs = self.jobs.as_ref().ok_or(DialogError::EngineStopped)?;
        jobs.send(Job::Barrier(tx))
            .map_err(|_| DialogError::EngineStopped)?;
        rx.recv().map_err(|_| DialogError::EngineStopped)
    }
}

fn run<S: ModelSession>(session: &mut S, job: Job, pending: &AtomicUsize) {
    match job {
        Job::Barrier(done) => {
            let _ = done.send(());
        }
        Job::Prepare(messages) => {
            // A newer job makes this prefill moot: the cache keeps whatever prefix it already
            // computed.
            let newer = || pending.load(Ordering::SeqCst) > 0;
            if newer() {
                return;
            }
            match session.prefill_open_turn(&messages, &newer) {
                Ok(s) => tracing::debug!(
                    reused = s.reused,
                    computed = s.computed,
                    complete = s.complete,
                    "speculative prefill"
                ),
                Err(e) => tracing::warn!(error = %e, "speculative prefill failed"),
            }
        }
        Job::Generate { req, tx, cancel } => {
            let mut emit = |ev: LlmEvent| tx.blocking_send(Ok(ev));
            if let Err(e) = session.generate(&req, &cancel, &mut emit) {
                tx.blocking_send(Err(e));
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Shutdown counts as newer work: a running speculative prefill stops at its next chunk
        // and queued ones are skipped. Closing the queue ends the worker after its current job;
        // outstanding generations were cancelled when their handles dropped.
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.jobs = None;
        // Not joined: one model step in flight (the first prefill of a cold model takes seconds
        // on a busy CPU) must not hold up whoever drops the engine, e.g. a server exiting on
        // SIGTERM. The worker owns everything it uses and ends right after that step.
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{FinishReason, GenerationStats};

    /// A session with no model in the way, so the tests see the queue's own behaviour: its
    /// generations hold the worker until released, or panic (a bug, or a model file that fails
    /// mid-run).
    enum Fake {
        Held(mpsc::Receiver<()>),
        Panics,
    }

    impl ModelSession for Fake {
        fn describe(&self) -> &str {
            match self {
                Fake::Held(_) => "held",
                Fake::Panics => "panics",
            }
        }

        fn prefill_open_turn(
            &mut self,
            _: &[ChatMessage],
            _: &dyn Fn() -> bool,
        ) -> Result<PrefillStats, DialogError> {
            Ok(PrefillStats::default())
        }

        fn generate(
            &mut self,
            _: &GenerateRequest,
            _: &CancelToken,
            emit: &mut dyn FnMut(LlmEvent) -> bool,
        ) -> Result<Finished, DialogError> {
            let Fake::Held(release) = self else {
                panic!("model step failed")
            };
            let _ = release.recv();
            let done = Finished {
                reason: FinishReason::Stop,
                stats: GenerationStats::default(),
            };
            emit(LlmEvent::Finished(done.clone()));
            Ok(done)
        }
    }

    #[test]
    fn a_worker_that_died_reports_it_and_refuses_work() {
        let worker =
            Worker::spawn("llm-test", |inbox| inbox.serve(Ok(Fake::Panics))).expect("worker");
        assert_eq!(worker.health(), Ok(()));
        let g = worker.generate(request()).expect("queued");
        // The stream ends with no finish record: the worker is gone.
        let (_, _, finished) = g.blocking_collect().unwrap_or_default();
        assert!(finished.is_none());
        let t0 = std::time::Instant::now();
        while worker.health().is_ok() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "still healthy"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            worker.health(),
            Err("the LLM worker for panics has stopped".to_string())
        );
        assert!(matches!(
            worker.generate(request()),
            Err(DialogError::EngineStopped)
        ));
    }

    fn request() -> GenerateRequest {
        GenerateRequest::new(vec![ChatMessage::user("hi")])
    }

    #[test]
    fn a_full_queue_refuses_a_generation_at_once_and_recovers_when_it_drains() {
        // Room for every release the test sends (one per generation it lets finish).
        let (release, rx) = mpsc::sync_channel(8);
        let worker =
            Worker::spawn_with_queue("llm-test", 2, move |inbox| inbox.serve(Ok(Fake::Held(rx))))
                .expect("worker");
        assert_eq!(worker.label(), "held");
        let running = worker.generate(request()).expect("first runs");
        // The worker may not have taken the first job yet: until it has, the queue holds it.
        let mut queued = Vec::new();
        let refused = loop {
            match worker.generate(request()) {
                Ok(g) => queued.push(g),
                Err(e) => break e,
            }
            assert!(queued.len() <= 2, "a queue of 2 took {}", queued.len());
        };
        assert!(
            matches!(refused, DialogError::Busy { queued: 2 }),
            "{refused}"
        );
        assert!(!queued.is_empty(), "the queue held nothing");
        // A prefill that finds the queue full is dropped, not an error and not a wait.
        worker.prepare(&[ChatMessage::user("hi")]);
        for _ in 0..=queued.len() {
            release.send(()).expect("worker alive");
        }
        drop(running);
        drop(queued);
        worker.wait_idle().expect("drained");
        let again = worker.generate(request()).expect("room again");
        release.send(()).expect("worker alive");
        drop(again);
        worker.wait_idle().expect("drained");
    }
}
