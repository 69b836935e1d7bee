#![allow(dead_code)]

use std::time::Duration;

use voicerelay_tts::{OpenedVoice, TtsConfig, TtsEvent, VoiceKind};
use vr_core::ModelStore;

/// The Piper voice from the model cache, or `None` when the cache has not been filled by
/// `scripts/bootstrap` (a failure under CI: `vr_core::prereq`).
pub fn piper(cfg: &TtsConfig) -> Option<OpenedVoice> {
    let store: ModelStore = vr_core::prereq::models(&["piper-joe"])?;
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
