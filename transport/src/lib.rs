//! Transport: the WebRTC voice assistant endpoint.
//!
//! Owns: WHIP-style signalling over HTTP (`POST /v1/sessions` with an SDP offer, `DELETE` on the
//! returned `Location`), bearer-token auth, CORS, admission control (`max_sessions`), the Opus
//! media path in both directions (jitter buffer, FEC/PLC, resampling into the 16 kHz input ring;
//! a real-time paced, flushable outgoing queue), the `events` data channel, session lifetime,
//! `/healthz`, `/metrics` and the browser page at `/`.
//!
//! Must not touch: model code. Each session's conversation is started through [`Pipeline`],
//! which the binary implements with the dialog crate's conversation loop.
//!
//! # Tasks and threads of one session
//! - The **supervisor** task owns the session's lifetime: it receives the peer connection's
//!   events, starts the tasks below, and tears everything down on `DELETE`, ICE
//!   `failed`/`closed`, `disconnected` for longer than `disconnect_grace_ms`, a peer that never
//!   connects within `connect_timeout_ms`, the pipeline ending, or server shutdown.
//! - The **media-in** task polls the remote audio track, reorders packets in the
//!   [`jitter::JitterBuffer`], decodes Opus (FEC from the next packet, else PLC, for a lost one),
//!   resamples 48 kHz → 16 kHz and pushes into the input ring ([`vr_audio::AudioProducer`]).
//! - A **video-in** task per remote video track (VP8, H.264; `[transport.video]`) reads its RTP
//!   packets, feeds [`vr_abr::ReceiverEstimator`] (arrival on a monotonic clock, abs-send-time
//!   or else the RTP timestamp as send time) and sends REMB (`min(estimate, ReCap cap)`) back to
//!   the sender. It rebuilds whole frames ([`vp8::Vp8Assembler`], [`h264::H264Assembler`]) and
//!   hands them to the decoder [`Pipeline::video_decoder`] gives it, which writes the session's
//!   latest-frame ring.
//! - The **pacer** task sends one 20 ms Opus frame per real-time tick from the
//!   [`output::OpusOutput`] queue (silence when it is empty).
//! - The **events** task forwards the conversation's events to the `events` data channel as JSON
//!   and turns client messages (`interrupt`, `config`, `text`) into pipeline calls, within the
//!   session's rate limits ([`ratelimit::EventLimiter`]).
//! - The **conversation** runs on its own OS thread (started by [`Pipeline::start`]), reading
//!   the input ring and writing the output queue.

pub mod config;
pub mod events;
pub mod frame;
pub mod guard;
pub mod h264;
mod http;
pub mod jitter;
mod media;
pub mod opus;
pub mod output;
pub mod pipeline;
pub mod ratelimit;
pub mod red;
pub mod server;
mod session;
mod signalling;
mod video;
pub mod vp8;

pub use config::{IceServerConfig, TransportConfig, VideoConfig};
pub use events::{ClientMessage, EventSender};
pub use output::OpusOutput;
pub use pipeline::{Pipeline, PipelineControl, SessionIo};
pub use server::{serve, Server};

/// Entry points for the fuzz harnesses (`tests/fuzz.rs`): crate-private pure functions,
/// exposed as they are. Not an API; nothing outside the tests may use it.
#[doc(hidden)]
pub mod fuzz_api {
    use webrtc::peer_connection::RTCSessionDescription;

    /// `session::media_sections` on an SDP text parsed as an offer: (audio with a live port,
    /// any audio, a data channel section), or why the text does not parse.
    pub fn media_sections(sdp: &str) -> Result<(bool, bool, bool), String> {
        let desc = RTCSessionDescription::offer(sdp.to_owned()).map_err(|e| e.to_string())?;
        crate::session::media_sections(&desc)
    }

    /// `signalling::parse_offer`: `Ok(())` for an acceptable offer, else (status, code).
    pub fn parse_offer(content_type: Option<&str>, body: &[u8]) -> Result<(), (u16, &'static str)> {
        crate::signalling::parse_offer(content_type, body)
            .map(|_| ())
            .map_err(|r| (r.status, r.code))
    }

    /// `video::abs_send_time_id` on an SDP text (an answer in the server; any SDP here).
    pub fn abs_send_time_id(sdp: &str) -> Option<u8> {
        let desc = RTCSessionDescription::offer(sdp.to_owned()).ok()?;
        crate::video::abs_send_time_id(&desc)
    }

    /// `video::send_time`: the raw 24-bit abs-send-time of a packet's extension `id`.
    pub fn send_time(p: &rtc::rtp::Packet, id: Option<u8>) -> Option<u32> {
        crate::video::send_time(p, id).map(|t| t.raw())
    }

    /// `opus::packet_has_fec`: whether an Opus packet announces LBRR (in-band FEC) data.
    pub fn packet_has_fec(p: &[u8]) -> bool {
        crate::opus::packet_has_fec(p)
    }
}

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("opus {what}: {reason}")]
    Opus { what: &'static str, reason: String },
    #[error("RED payload (RFC 2198): {reason}")]
    Red { reason: String },
    #[error("output queue full: {queued} frames queued + {offered} offered > capacity {capacity}")]
    OutputFull {
        queued: usize,
        offered: usize,
        capacity: usize,
    },
    #[error("webrtc {context}: {reason}")]
    WebRtc {
        context: &'static str,
        reason: String,
    },
    #[error("audio: {0}")]
    Audio(#[from] vr_audio::AudioError),
    #[error("pipeline: {0}")]
    Pipeline(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
}

impl TransportError {
    pub(crate) fn webrtc(context: &'static str) -> impl Fn(webrtc::error::Error) -> Self {
        move |e| TransportError::WebRtc {
            context,
            reason: e.to_string(),
        }
    }
}
