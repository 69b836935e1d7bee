//! Test prerequisites: what a test does when something it needs (the corpus, a model, Chromium,
//! PulseAudio, a network namespace, the llama-server venv) is not on this machine.
//!
//! On a developer's machine a missing prerequisite may skip the test, but visibly: the reason is
//! printed and, when `VOICERELAY_SKIP_LOG` names a file, appended to it, so `scripts/test` ends
//! with one line per skipped test. Under CI (`CI=true`) or `VOICERELAY_STRICT=1` the same call
//! fails the test with the reason: a suite that passed because it tested nothing is what this
//! module exists to prevent.
//!
//! ```no_run
//! let Some(corpus) = vr_core::prereq::corpus() else { return };
//! let Some(store) = vr_core::prereq::models(&["whisper-tiny.en"]) else { return };
//! # let _ = (corpus, store);
//! ```

use std::fmt::Display;
use std::io::Write;

/// Whether a missing prerequisite fails the test instead of skipping it.
pub fn strict() -> bool {
    let on = |k: &str| {
        std::env::var(k)
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false)
    };
    on("CI") || on("VOICERELAY_STRICT")
}

/// Reports that the calling test cannot run for `reason`. Panics (fails the test) in strict
/// mode; otherwise prints and logs the skip and returns, and the caller returns at once.
pub fn missing(reason: impl Display) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if strict() {
        panic!(
            "prerequisite missing for {test}: {reason} \
             (CI=true / VOICERELAY_STRICT=1 make this a failure; run scripts/bootstrap)"
        );
    }
    let line = format!("{test}: {reason}");
    eprintln!("SKIP {line}");
    if let Some(path) = std::env::var_os("VOICERELAY_SKIP_LOG") {
        // One short write per line with O_APPEND: lines from tests running in parallel
        // processes do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "could not record the skip in {}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// `Some(value)` when the prerequisite is there; otherwise reports it with [`missing`] (naming
/// `what` and the error) and gives `None`.
pub fn require<T, E: Display>(r: Result<T, E>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            missing(format!("{what}: {e}"));
            None
        }
    }
}

/// Like [`require`] for an `Option`, with `why` saying what is absent.
pub fn require_some<T>(v: Option<T>, why: impl Display) -> Option<T> {
    if v.is_none() {
        missing(why);
    }
    v
}

/// The speech corpus directory (`../shared/corpus` or `VOICERELAY_CORPUS`), if it holds a
/// manifest.
pub fn corpus() -> Option<std::path::PathBuf> {
    let dir = crate::paths::corpus_dir();
    let ok = dir.join("manifest.jsonl").is_file();
    require_some(
        ok.then_some(dir.clone()),
        format_args!(
            "speech corpus not found at {} (set VOICERELAY_CORPUS)",
            dir.display()
        ),
    )
}

/// The model store, if it opens and every one of `names` is present and verified (a corrupted
/// file counts as missing, with the store's error naming the file and the repair command).
pub fn models(names: &[&str]) -> Option<crate::ModelStore> {
    let store = require(crate::ModelStore::from_env(), "model store")?;
    for name in names {
        require(store.dir(name), &format!("model {name}"))?;
    }
    Some(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the environment, so no other test here races on it.
    #[test]
    fn strict_mode_fails_and_lenient_mode_logs_the_test_and_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("skips.txt");
        std::env::remove_var("CI");
        std::env::remove_var("VOICERELAY_STRICT");
        std::env::set_var("VOICERELAY_SKIP_LOG", &log);
        assert!(!strict());
        assert_eq!(require::<u8, _>(Err("gone"), "the corpus"), None);
        assert_eq!(require_some(Some(3), "never printed"), Some(3));
        let text = std::fs::read_to_string(&log).expect("skip log written");
        assert_eq!(
            text,
            "prereq::tests::strict_mode_fails_and_lenient_mode_logs_the_test_and_reason: \
             the corpus: gone\n"
        );

        std::env::set_var("CI", "true");
        assert!(strict());
        let r = std::panic::catch_unwind(|| missing("chromium is not installed"));
        std::env::remove_var("CI");
        let msg = r.expect_err("strict mode must fail the test");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("chromium is not installed"), "{msg}");
        // The strict failure is not logged as a skip.
        let text = std::fs::read_to_string(&log).expect("skip log");
        assert_eq!(text.lines().count(), 1);
        std::env::remove_var("VOICERELAY_SKIP_LOG");
    }
}
