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
    /// The newest decoded picture of the client's camera (`None` with video disabled). Frames
    /// arrive only if [`Pipeline::video_decoder`] gives the session a decoder.
    pub video: Option<vr_audio::video::VideoConsumer>,
}

/// Decodes one video track's complete frames (VP8 frames, or H.264 access units as an Annex-B
/// byte stream with the parameter sets before every key frame) into the session's latest-frame ring. The binary
/// supplies it (GStreamer), so the transport stays free of codec libraries.
pub trait VideoDecoder: Send {
    /// Queues one complete frame with its capture time on the stream's clock. Must not block.
    /// `Ok(false)`: the decoder dropped it (behind, or restarted after an error) and needs a key
    /// frame before it can continue.
    fn push(
        &mut self,
        frame: &crate::frame::EncodedFrame,
        pts: std::time::Duration,
    ) -> Result<bool, String>;
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

    /// A decoder for `codec` writing into `frames`, for a session's first video track. Called
    /// off the runtime's workers (starting a decoder may take a while). `Ok(None)` (the
    /// default, or a codec the pipeline cannot decode): video is received and its bitrate
    /// estimated, but not decoded.
    fn video_decoder(
        &self,
        codec: crate::frame::VideoCodec,
        frames: vr_audio::video::VideoProducer,
    ) -> Result<Option<Box<dyn VideoDecoder>>, String> {
        let _ = (codec, frames);
        Ok(None)
    }

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
