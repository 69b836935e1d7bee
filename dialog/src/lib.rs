//! Dialog: turn detection, LLM engines and the conversation loop with barge-in.
//!
//! Owns: deciding when the user's turn ends, producing the assistant's answer (fast and slow
//! paths, verifier) and the Listening → UserSpeaking → Thinking → Speaking state machine.
//!
//! Must not touch: devices or the network directly; it consumes recogniser events and drives a
//! synthesizer, and its caller wires audio in and out.
