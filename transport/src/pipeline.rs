//! What a session drives. The transport does not know how answers are made: the binary gives
//! the server a [`Pipeline`] (the dialog crate's conversation loop, weights loaded once), and each
//! peer gets its own conversation through [`Pipeline::start`].

use std::sync::Arc;
use tokio::sync::oneshot;

use crate::events::EventSender;
use crate::output::OpusOutput;
use crate::TransportError;

/// One session's ends of the media and event paths, handed to its conversation.
pub struct SessionIo {
    pub session_id: String,
    /// 16 kHz mono: the decoded, resampled incoming track. Its producer is dropped when the
    /// session ends, which ends the conversation's input.
    pub input: vr_audio::AudioConsumer,
    /// 48 kHz mono answer audio, sent as Opus by the session's pacer.
    pub output: OpusOutput,
    /// JSON events for the `events` data channel.
    pub events: EventSender,
}

/// A running conversation: its control handle and a signal that fires when its thread has ended
/// (with the error that ended it, if any).
pub struct PipelineRun {
    pub control: Arc<dyn PipelineControl>,
    pub done: oneshot::Receiver<Result<(), String>>,
}

pub trait Pipeline: Send + Sync + 'static {
    /// Starts one conversation on its own thread. Must not block for long: it runs on the
    /// signalling request's task.
    fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError>;

    /// Whether new sessions can be served: `Err` says why not (`/healthz` answers 503 with it).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The client's data-channel commands, forwarded to the conversation. Cheap and non-blocking.
pub trait PipelineControl: Send + Sync {
    /// Barge-in from the client (the interrupt button): stop speaking now.
    fn interrupt(&self);
    /// Typed user input: a turn without audio.
    fn send_text(&self, text: String);
    /// A `config` message's settings (everything but `type`); an error names what cannot be
    /// applied.
    fn configure(
        &self,
        settings: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String>;
    /// End the conversation (the session is closing).
    fn stop(&self);
}
