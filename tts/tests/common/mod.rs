#![allow(dead_code)]

use std::time::Duration;

use voicerelay_tts::{OpenedVoice, TtsConfig, TtsEvent, VoiceKind};
use vr_core::ModelStore;

/// The Piper voice from the model cache, or `None` (with a printed reason) when the cache has not
/// been filled by `scripts/bootstrap`.
pub fn piper(cfg: &TtsConfig) -> Option<OpenedVoice> {
    let store = match ModelStore::from_env() {
        Ok(s) => s,
        Err(e) => {
            println!("SKIPPED: model store unavailable: {e}");
            return None;
        }
    };
    if let Err(e) = store.dir("piper-joe") {
        println!("SKIPPED: Piper voice not in the model cache ({e}); run scripts/bootstrap");
        return None;
    }
    let cfg = TtsConfig {
        voice: "piper".into(),
        ..cfg.clone()
    };
    let opened = voicerelay_tts::open_voice(&cfg, &store).expect("open piper");
    assert_eq!(
        opened.engine.kind(),
        VoiceKind::Piper,
        "Piper files are present but it did not load: {:?}",
        opened.fallback_reason
    );
    Some(opened)
}

/// Tokens the way an LLM emits them: words carry their leading space, punctuation is separate.
pub fn llm_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, word) in text.split(' ').enumerate() {
        let lead = if k == 0 { "" } else { " " };
        let core = word.trim_end_matches(['.', ',', '?', '!', ';', ':']);
        let punct = &word[core.len()..];
        out.push(format!("{lead}{core}"));
        for p in punct.chars() {
            out.push(p.to_string());
        }
    }
    out
}

pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
}

pub fn wait_event(s: &dyn voicerelay_tts::Synthesizer, timeout: Duration) -> Option<TtsEvent> {
    s.recv_timeout(timeout).expect("worker alive")
}
