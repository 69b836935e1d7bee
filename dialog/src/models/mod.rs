//! Model code, one file per architecture, each adapted from candle-transformers (see the file
//! headers) to expose what the engine needs: last-position logits and hidden state per step and a
//! KV cache that can be cut back to a prefix.

pub mod gemma3;
pub mod gguf;
pub mod qwen2;
