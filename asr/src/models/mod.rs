//! One file per model architecture, config read from the checkpoint's own files.

pub mod silero;
pub mod whisper;
