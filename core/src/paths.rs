//! Where the shared material lives. The speech corpus sits beside the checkout as
//! `../shared/corpus` (in CI too); `VOICERELAY_CORPUS` points elsewhere.

use std::path::PathBuf;

/// The corpus directory (holds `manifest.jsonl` and `wav/`); it may not exist, callers check.
pub fn corpus_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VOICERELAY_CORPUS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"))
}
