//! The speech corpus: `manifest.jsonl` (one utterance per line) beside a `wav/` folder.

use crate::EvalError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One utterance of the manifest (fields the harness uses; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Utterance {
    pub id: String,
    /// Relative to the corpus directory.
    pub wav: String,
    /// Reference transcript (casing and punctuation as the source wrote it).
    pub text: String,
    /// "dev" or "test".
    pub split: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub duration_s: f64,
    #[serde(default)]
    pub speaker: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Dev,
    Test,
    All,
}

impl Split {
    fn matches(self, s: &str) -> bool {
        match self {
            Split::Dev => s == "dev",
            Split::Test => s == "test",
            Split::All => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub dir: PathBuf,
    pub utterances: Vec<Utterance>,
}

impl Corpus {
    /// Reads `dir/manifest.jsonl`; a malformed line is an error naming its line number.
    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join("manifest.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut utterances = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let u: Utterance = serde_json::from_str(line).map_err(|e| EvalError::Manifest {
                path: path.display().to_string(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            utterances.push(u);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            utterances,
        })
    }

    /// The default corpus (`vr_core::paths::corpus_dir()`), or `None` if it is absent.
    pub fn open_default() -> Result<Option<Self>, EvalError> {
        let dir = vr_core::paths::corpus_dir();
        if !dir.join("manifest.jsonl").exists() {
            return Ok(None);
        }
        Self::open(&dir).map(Some)
    }

    pub fn split(&self, split: Split) -> impl Iterator<Item = &Utterance> {
        self.utterances
            .iter()
            .filter(move |u| split.matches(&u.split))
    }

    pub fn wav_path(&self, u: &Utterance) -> PathBuf {
        self.dir.join(&u.wav)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_filters_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.jsonl"),
            "{\"id\":\"a\",\"wav\":\"wav/a.wav\",\"text\":\"HI\",\"split\":\"dev\",\"extra\":1}\n\n\
             {\"id\":\"b\",\"wav\":\"wav/b.wav\",\"text\":\"YO\",\"split\":\"test\"}\n",
        )
        .unwrap();
        let c = Corpus::open(dir.path()).unwrap();
        assert_eq!(c.utterances.len(), 2);
        let t: Vec<&str> = c.split(Split::Test).map(|u| u.id.as_str()).collect();
        assert_eq!(t, ["b"]);
        assert_eq!(c.split(Split::All).count(), 2);
        assert_eq!(c.wav_path(&c.utterances[0]), dir.path().join("wav/a.wav"));
        std::fs::write(dir.path().join("manifest.jsonl"), "{\"id\":1}\n").unwrap();
        match Corpus::open(dir.path()) {
            Err(EvalError::Manifest { line, .. }) => assert_eq!(line, 1),
            other => panic!("{other:?}"),
        }
    }
}
