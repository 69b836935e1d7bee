//! One file per model architecture, config read from the checkpoint's own files.
pub mod moonshine_streaming;

pub mod silero;
pub mod whisper;
pub mod whisper_decoder;
pub mod whisper_encoder;

mod fast_gelu;
