//! One file per model architecture, config read from the checkpoint's own files.

pub mod whisper;
pub mod silero;
