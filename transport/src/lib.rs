//! Transport: the WebRTC voice assistant endpoint.
//!
//! Owns: signalling (WHIP-style HTTP), Opus media in and out, the `events` data channel, session
//! lifetime and admission, adaptive bitrate for incoming video.
//!
//! Must not touch: model code; each session runs a pipeline assembled from the other crates.
