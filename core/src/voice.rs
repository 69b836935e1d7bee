//! Which voice speaks: named in config, on the wire and by the synthesizer.

/// Which voice is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceKind {
    /// Piper VITS `en_US-joe-medium` (22.05 kHz).
    Piper,
    /// flite `cmu_us_slt` (16 kHz).
    Flite,
    /// espeak-ng `en-us` (22.05 kHz).
    Espeak,
}

impl VoiceKind {
    pub fn parse(s: &str) -> Option<VoiceKind> {
        match s {
            "piper" => Some(VoiceKind::Piper),
            "flite" => Some(VoiceKind::Flite),
            "espeak" => Some(VoiceKind::Espeak),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VoiceKind::Piper => "piper",
            VoiceKind::Flite => "flite",
            VoiceKind::Espeak => "espeak",
        }
    }
}

impl std::fmt::Display for VoiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
