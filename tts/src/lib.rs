//! Streaming text-to-speech.
//!
//! Owns: the `Synthesizer` trait (text in incrementally, audio chunks out, `cancel()`), the Piper
//! VITS backend on ONNX Runtime with espeak-ng phonemes, the flite/espeak fallback voices, and the
//! clause chunker with number/unit verbalisation.
//!
//! Must not touch: audio devices, rings or the network: it hands out audio chunks with their
//! sample rate and the caller decides where they go.
