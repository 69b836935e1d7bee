//! `voicerelay models verify` against the real model cache, and against a copy of it with one byte
//! of one file changed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn voicerelay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voicerelay"))
}

fn real_cache() -> PathBuf {
    vr_core::models::default_root()
}

#[test]
fn verify_passes_on_the_bootstrapped_cache_and_lists_every_model() {
    let out = voicerelay().args(["models", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "models verify failed (run scripts/bootstrap):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = vr_core::ModelStore::open(real_cache()).unwrap();
    for m in store.models() {
        for f in &m.files {
            let line = format!("ok       {}/{}", m.name, f.name);
            assert!(stdout.contains(&line), "missing `{line}` in:\n{stdout}");
        }
    }
}

/// A cache whose files link to the real ones, except one small file copied with a byte flipped.
fn cache_with_one_corrupted_byte(dir: &Path) -> PathBuf {
    let store = vr_core::ModelStore::open(real_cache()).unwrap();
    for m in store.models() {
        std::fs::create_dir_all(dir.join(&m.name)).unwrap();
        for f in &m.files {
            let src = store.file_path(&m.name, &f.name);
            let dst = dir.join(&m.name).join(&f.name);
            if m.name == "whisper-tiny.en" && f.name == "config.json" {
                let mut bytes = std::fs::read(&src).unwrap();
                bytes[10] ^= 0x01;
                std::fs::write(&dst, bytes).unwrap();
            } else {
                std::os::unix::fs::symlink(&src, &dst).unwrap();
            }
        }
    }
    dir.join("whisper-tiny.en").join("config.json")
}

#[test]
fn one_corrupted_byte_fails_verify_and_loading_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = cache_with_one_corrupted_byte(tmp.path());
    let out = voicerelay()
        .args(["models", "verify", "whisper-tiny.en"])
        .env("VOICERELAY_MODELS", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CORRUPT"))
        .unwrap_or_else(|| panic!("no CORRUPT line in:\n{stdout}"));
    assert!(line.contains(&bad.display().to_string()), "{line}");
    assert!(
        line.contains("expected sha256") && line.contains(", got "),
        "{line}"
    );
    assert!(line.contains("scripts/bootstrap"), "{line}");
    assert!(stdout.contains("ok       whisper-tiny.en/model.bin"));

    // Loading code goes through the same check: `models path` refuses the model.
    let out = voicerelay()
        .args(["models", "path", "whisper-tiny.en"])
        .env("VOICERELAY_MODELS", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("is corrupted: expected sha256"), "{stderr}");
}

#[test]
fn unknown_config_key_and_bad_value_fail_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[log]\nfilter = \"info\"\nshiny = true\n").unwrap();
    let out = voicerelay()
        .args(["--config", cfg.to_str().unwrap(), "config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shiny"), "{stderr}");

    let out = voicerelay()
        .args(["config"])
        .env("VOICERELAY__LOG__FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log.format") && stderr.contains("yaml"),
        "{stderr}"
    );
}
