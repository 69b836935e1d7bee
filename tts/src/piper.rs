//! Piper VITS voices (`en_US-joe-medium`) on ONNX Runtime.
//!
//! Reference: rhasspy/piper (`piper-phonemize` for the phoneme → id scheme, `piper/voice.py` for
//! inference). Text is split at punctuation into clauses, each clause is phonemised to IPA by
//! espeak-ng and the punctuation appended as Piper does (`.` `?` `!` end a sentence; `,` `:` `;`
//! are followed by a space). Each sentence becomes `^ _ p1 _ p2 _ … _ $` through the voice's
//! `phoneme_id_map` and one model run with `scales = [noise_scale, length_scale, noise_w]` from
//! the voice JSON (length_scale divided by the configured speed).
//!
//! The ONNX Runtime library is loaded at run time from the model cache (`ort` with
//! `load-dynamic`), never downloaded; a missing or broken library is an error the caller turns
//! into the fallback voice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

// Re-exported: whoever opens the shared environment hands it to other ONNX models (Smart Turn).
pub use ort::environment::Environment;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use serde::Deserialize;
use vr_core::SampleRate;

use crate::{espeak, Interrupter, TtsError, VoiceEngine, VoiceKind};

/// The parts of `<voice>.onnx.json` Piper inference needs.
#[derive(Debug, Clone, Deserialize)]
pub struct PiperVoiceConfig {
    pub audio: AudioSection,
    pub espeak: EspeakSection,
    pub inference: InferenceSection,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    pub num_speakers: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioSection {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakSection {
    pub voice: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceSection {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

impl PiperVoiceConfig {
    pub fn load(path: &Path) -> Result<Self, TtsError> {
        let text = std::fs::read_to_string(path).map_err(|e| TtsError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cfg: PiperVoiceConfig =
            serde_json::from_str(&text).map_err(|e| TtsError::VoiceConfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        for sym in ["^", "$", "_"] {
            if !cfg.phoneme_id_map.contains_key(sym) {
                return Err(TtsError::VoiceConfig {
                    path: path.to_path_buf(),
                    reason: format!("phoneme_id_map has no `{sym}`"),
                });
            }
        }
        if cfg.audio.sample_rate == 0 {
            return Err(TtsError::VoiceConfig {
                path: path.to_path_buf(),
                reason: "audio.sample_rate is 0".into(),
            });
        }
        Ok(cfg)
    }

    /// Piper's id sequence for one sentence's phonemes: BOS, pad, then each phoneme followed by
    /// pad, then EOS. Phonemes missing from the map are skipped (counted in the return).
    pub fn phoneme_ids(&self, phonemes: &str) -> (Vec<i64>, usize) {
        let m = &self.phoneme_id_map;
        let mut ids = Vec::with_capacity(phonemes.chars().count() * 2 + 3);
        let mut missing = 0;
        ids.extend_from_slice(&m["^"]);
        ids.extend_from_slice(&m["_"]);
        let mut key = [0u8; 4];
        for c in phonemes.chars() {
            match m.get(c.encode_utf8(&mut key) as &str) {
                Some(v) => {
                    ids.extend_from_slice(v);
                    ids.extend_from_slice(&m["_"]);
                }
                None => missing += 1,
            }
        }
        ids.extend_from_slice(&m["$"]);
        (ids, missing)
    }
}

/// Process-wide ONNX Runtime environment: `ort` allows one per process, so every Piper voice
/// shares it, and so do other ONNX models (the Smart Turn end-of-turn model in `dialog`). Once a
/// library has loaded, later paths are ignored.
pub fn environment(lib: &Path) -> Result<Environment, TtsError> {
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);
    let mut guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    if !lib.is_file() {
        return Err(TtsError::OnnxRuntimeMissing {
            path: lib.to_path_buf(),
            reason: "file not found".into(),
        });
    }
    let builder = ort::init_from(lib).map_err(|e| TtsError::OnnxRuntimeMissing {
        path: lib.to_path_buf(),
        reason: e.to_string(),
    })?;
    let env = builder
        .with_name("voicerelay-tts")
        .build()
        .map_err(|e| TtsError::Onnx(e.to_string()))?;
    *guard = Some(env.clone());
    Ok(env)
}

/// Where a Piper voice's files are.
#[derive(Debug, Clone)]
pub struct PiperPaths {
    pub model: PathBuf,
    pub config: PathBuf,
    pub onnxruntime: PathBuf,
}

/// A Piper voice's model, loaded once and shared by every [`PiperVoice`] speaking with it.
///
/// ONNX Runtime's `Run` is not safe to call concurrently on one session (`ort` 2.0 therefore
/// makes `Session::run` take `&mut self`: some execution-provider allocators and statistics are
/// not thread safe), so the session sits behind a mutex. It is only ever taken by a voice's
/// synthesis worker thread for one sentence's run, never by an audio or async thread. Two
/// sessions speaking at once take turns per sentence; on the two cores this targets, one run
/// already keeps `tts.threads` cores busy, so a second session copy (another 60 MB and a
/// second load) would not make the answers come sooner.
pub struct PiperModel {
    session: Mutex<Session>,
    cfg: PiperVoiceConfig,
    has_sid: bool,
}

impl PiperModel {
    /// Loads the model on `threads` intra-op threads.
    pub fn load(paths: &PiperPaths, threads: usize) -> Result<Self, TtsError> {
        let cfg = PiperVoiceConfig::load(&paths.config)?;
        if !paths.model.is_file() {
            return Err(TtsError::Io {
                path: paths.model.clone(),
                reason: "file not found".into(),
            });
        }
        let env = environment(&paths.onnxruntime)?;
        let onnx =
            |e: ort::Error<ort::session::builder::SessionBuilder>| TtsError::Onnx(e.to_string());
        let session = Session::builder(&env)
            .map_err(|e| TtsError::Onnx(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(onnx)?
            .with_inter_threads(1)
            .map_err(onnx)?
            .commit_from_file(&paths.model)
            .map_err(|e| TtsError::Onnx(format!("{}: {e}", paths.model.display())))?;
        let has_sid = session.inputs().iter().any(|i| i.name() == "sid");
        Ok(Self {
            session: Mutex::new(session),
            cfg,
            has_sid,
        })
    }

    pub fn config(&self) -> &PiperVoiceConfig {
        &self.cfg
    }
}

/// One speaker's use of a [`PiperModel`]: its speed, sentence silence and the run options a
/// barge-in terminates (so cancelling one session never cuts another's sentence).
pub struct PiperVoice {
    model: Arc<PiperModel>,
    scales: [f32; 3],
    sentence_silence: usize,
    run_options: Arc<RunOptions>,
}

impl PiperVoice {
    /// Loads the model on `threads` intra-op threads. `speed` > 1 speaks faster;
    /// `sentence_silence_ms` of silence follows each sentence end.
    pub fn load(
        paths: &PiperPaths,
        threads: usize,
        speed: f32,
        sentence_silence_ms: u32,
    ) -> Result<Self, TtsError> {
        Self::new(
            Arc::new(PiperModel::load(paths, threads)?),
            speed,
            sentence_silence_ms,
        )
    }

    /// A voice over an already loaded model.
    pub fn new(
        model: Arc<PiperModel>,
        speed: f32,
        sentence_silence_ms: u32,
    ) -> Result<Self, TtsError> {
        let inf = model.cfg.inference;
        let scales = [
            inf.noise_scale,
            inf.length_scale / speed.max(0.1),
            inf.noise_w,
        ];
        let sentence_silence = (u64::from(model.cfg.audio.sample_rate)
            * u64::from(sentence_silence_ms)
            / 1000) as usize;
        let run_options = Arc::new(RunOptions::new().map_err(|e| TtsError::Onnx(e.to_string()))?);
        Ok(Self {
            model,
            scales,
            sentence_silence,
            run_options,
        })
    }

    pub fn config(&self) -> &PiperVoiceConfig {
        &self.model.cfg
    }

    /// Piper's phoneme strings for `text`, one per sentence.
    pub fn phonemize(&self, text: &str) -> Result<Vec<String>, TtsError> {
        let mut sentences = Vec::new();
        let mut current = String::new();
        for (piece, term) in split_clauses(text) {
            let clauses = espeak::phonemize_ipa(piece, &self.model.cfg.espeak.voice)?;
            let ph = clauses
                .iter()
                .map(|c| strip_language_flags(c))
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if ph.is_empty() && term.is_none() {
                continue;
            }
            current.push_str(&ph);
            match term {
                Some(t @ ('.' | '?' | '!')) => {
                    current.push(t);
                    sentences.push(std::mem::take(&mut current));
                }
                Some(t) => {
                    current.push(t);
                    current.push(' ');
                }
                None => {
                    if !current.trim().is_empty() {
                        sentences.push(std::mem::take(&mut current));
                    }
                    current.clear();
                }
            }
        }
        if !current.trim().is_empty() {
            sentences.push(current);
        }
        Ok(sentences)
    }

    /// One model run over one sentence's ids.
    fn infer(&mut self, ids: Vec<i64>) -> Result<Vec<f32>, TtsError> {
        let onnx = |e: ort::Error| TtsError::Onnx(e.to_string());
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(onnx)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(onnx)?;
        let scales = Tensor::from_array(([3usize], self.scales.to_vec())).map_err(onnx)?;
        let run_options = Arc::clone(&self.run_options);
        // Held for this one run (see `PiperModel`); a poisoned lock only means another voice's
        // run panicked, which leaves the session itself usable.
        let mut session = self.model.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = if self.model.has_sid {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(onnx)?;
            session.run_with_options(
                ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid],
                &run_options,
            )
        } else {
            session.run_with_options(
                ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales],
                &run_options,
            )
        };
        let outputs = outputs.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("terminate") {
                TtsError::Interrupted
            } else {
                TtsError::Onnx(msg)
            }
        })?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(onnx)?;
        // VITS can overshoot slightly; clip rather than renormalise so loudness is stable across
        // clauses synthesised separately.
        Ok(audio.iter().map(|s| s.clamp(-1.0, 1.0)).collect())
    }
}

impl VoiceEngine for PiperVoice {
    fn kind(&self) -> VoiceKind {
        VoiceKind::Piper
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate(self.model.cfg.audio.sample_rate)
    }

    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        // A terminate() aimed at an earlier clause must not kill this one.
        self.run_options
            .unterminate()
            .map_err(|e| TtsError::Onnx(e.to_string()))?;
        let sentences = self.phonemize(text)?;
        let mut audio = Vec::new();
        for s in sentences {
            let (ids, missing) = self.model.cfg.phoneme_ids(&s);
            if missing > 0 {
                tracing::debug!(missing, phonemes = %s, "phonemes not in the voice's map were skipped");
            }
            if ids.len() <= 3 {
                continue;
            }
            let ends_sentence = s.ends_with(['.', '?', '!']);
            audio.extend(self.infer(ids)?);
            if ends_sentence {
                audio.resize(audio.len() + self.sentence_silence, 0.0);
            }
        }
        Ok(audio)
    }

    fn interrupter(&self) -> Option<Interrupter> {
        let ro = Arc::clone(&self.run_options);
        Some(Arc::new(move || {
            // Best effort: if it fails the clause finishes and its audio is dropped anyway.
            let _ = ro.terminate();
        }))
    }
}

/// Splits text at clause punctuation followed by whitespace or the end: ("Hello", Some(',')),
/// ("world", Some('.')), ... The last piece may have no terminator.
pub fn split_clauses(text: &str) -> Vec<(&str, Option<char>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '?' | '!' | ',' | ';' | ':') {
            continue;
        }
        let next = chars.get(k + 1).map(|&(_, n)| n);
        if next.is_some_and(|n| !n.is_whitespace()) {
            continue;
        }
        let raw = text[start..i].trim();
        // "?!" or "..." are one terminator: the first mark of the run.
        let piece = raw
            .trim_end_matches(['.', '?', '!', ',', ';', ':'])
            .trim_end();
        let term = raw[piece.len()..]
            .chars()
            .find(|c| !c.is_whitespace())
            .unwrap_or(c);
        if !piece.is_empty() {
            out.push((piece, Some(term)));
        } else if let Some(last) = out.last_mut() {
            if last.1 == Some(',') || last.1 == Some('.') {
                last.1 = Some(c);
            }
        }
        start = i + c.len_utf8();
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push((rest, None));
    }
    out
}

/// espeak marks a switch of language as "(fr)…(en)"; Piper's map has no such symbols.
fn strip_language_flags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_keep_their_terminators() {
        assert_eq!(
            split_clauses("Hello, world. How are you?! Fine"),
            vec![
                ("Hello", Some(',')),
                ("world", Some('.')),
                ("How are you", Some('?')),
                ("Fine", None)
            ]
        );
        assert_eq!(split_clauses("3.5 kg."), vec![("3.5 kg", Some('.'))]);
        assert!(split_clauses("  ").is_empty());
    }

    #[test]
    fn language_flags_are_removed() {
        assert_eq!(strip_language_flags("(fr)bɔ̃ʒuʁ(en) wɜːld"), "bɔ̃ʒuʁ wɜːld");
        assert_eq!(strip_language_flags("həlˈoʊ"), "həlˈoʊ");
    }

    #[test]
    fn ids_follow_piper_bos_pad_eos_scheme() {
        let mut map = HashMap::new();
        for (s, id) in [("_", 0), ("^", 1), ("$", 2), (" ", 3), ("a", 14), ("b", 15)] {
            map.insert(s.to_string(), vec![id]);
        }
        let cfg = PiperVoiceConfig {
            audio: AudioSection { sample_rate: 22050 },
            espeak: EspeakSection {
                voice: "en-us".into(),
            },
            inference: InferenceSection {
                noise_scale: 0.667,
                length_scale: 1.0,
                noise_w: 0.8,
            },
            phoneme_id_map: map,
            num_speakers: 1,
        };
        let (ids, missing) = cfg.phoneme_ids("ab a?");
        assert_eq!(ids, vec![1, 0, 14, 0, 15, 0, 3, 0, 14, 0, 2]);
        assert_eq!(missing, 1);
    }
}
