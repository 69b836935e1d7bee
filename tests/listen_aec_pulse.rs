//! Issue 16 on PulseAudio null sinks, no sound card: `voicerelay listen` speaks to the default
//! sink `vsink` and listens to its monitor, so the microphone hears the assistant's answer (the
//! echo) and, later, a corpus utterance played into the same sink (the user interrupting).
//! With AEC (the default): no transcript from the echo, no barge-in before the user speaks, the
//! user's interruption detected within 300 ms of its start and transcribed within 3 WER points of
//! the clean file, ERLE ≥ 20 dB once converged. Without AEC (the control) the echo is transcribed
//! or interrupts the answer, so the test can fail. Runs under `scripts/with-pulseaudio`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const QUESTION: &str = "Can you tell me something about the moon?";
/// The user's interruption: test split, 5.4 s, 17 words of read speech.
const USER: &str = "ls_1089-134691-0001";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_voicerelay")
}

/// Events (or log lines) with the moment they arrived.
type Events = Vec<(Instant, Value)>;
type Lines = Vec<(Instant, String)>;
type Log = Arc<Mutex<Events>>;

struct Listen {
    child: Child,
    events: Log,
    stderr: Arc<Mutex<Lines>>,
}

impl Listen {
    fn start(aec: bool) -> Listen {
        let mut child = Command::new(bin())
            .args(["listen", "--json"])
            .env(
                "VOICERELAY__AEC__ENABLED",
                if aec { "true" } else { "false" },
            )
            .env(
                "VOICERELAY__LOG__FILTER",
                "warn,voicerelay::cli::listen_aec=debug",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn voicerelay listen");
        let events: Log = Arc::default();
        let stderr: Arc<Mutex<Lines>> = Arc::default();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let log = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    log.lock().unwrap().push((Instant::now(), v));
                }
            }
        });
        let text = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                text.lock().unwrap().push((Instant::now(), line));
            }
        });
        Listen {
            child,
            events,
            stderr,
        }
    }

    /// Waits until `done` holds over the events so far; panics with them after `timeout`.
    fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&[(Instant, Value)]) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if done(&self.events.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {what} after {timeout:?}; events: {:#?}\nstderr: {:#?}",
            self.events.lock().unwrap(),
            self.stderr.lock().unwrap()
        );
    }

    /// Ctrl-C, as a user ends it; the events and the log.
    fn stop(mut self) -> (Events, Lines) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("listen ignored Ctrl-C for 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let events = self.events.lock().unwrap().clone();
        let log = self.stderr.lock().unwrap().clone();
        (events, log)
    }
}

/// Plays `wav` into the null sink; returns when playback started (paplay runs on).
fn play(wav: &Path) -> (Child, Instant) {
    let child = Command::new("paplay")
        .arg("--device=vsink")
        .arg(wav)
        .spawn()
        .expect("paplay runs");
    (child, Instant::now())
}

fn of<'a>(events: &'a [(Instant, Value)], t: &str) -> Vec<&'a (Instant, Value)> {
    events.iter().filter(|(_, e)| e["type"] == t).collect()
}

fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = vr_evals::normalize::normalize(reference);
    let h = vr_evals::normalize::normalize(hypothesis);
    vr_evals::wer::word_errors(&r, &h).rate()
}

struct Run {
    events: Events,
    log: Lines,
    /// When the answer started speaking, and when the user's utterance started playing.
    answer_at: Instant,
    user_at: Instant,
}

/// One conversation: the question, 2.5 s of the answer heard back as echo, then the user.
fn converse(aec: bool, question: &Path, user: &Path) -> Run {
    let l = Listen::start(aec);
    l.wait("voice event (listening)", Duration::from_secs(240), |ev| {
        !of(ev, "voice").is_empty()
    });
    // The microphone's first second: the canceller's start-up.
    std::thread::sleep(Duration::from_secs(1));
    let (mut q, _) = play(question);
    l.wait("the answer", Duration::from_secs(90), |ev| {
        ev.iter()
            .any(|(_, e)| e["type"] == "state" && e["to"] == "speaking")
    });
    let _ = q.wait();
    let answer_at = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let (mut u, user_at) = play(user);
    let _ = u.wait();
    l.wait("the interruption's final", Duration::from_secs(60), |ev| {
        ev.iter().any(|(t, e)| *t > user_at && e["type"] == "final")
    });
    // Until the interruption is answered (or a while): its last final is in by then.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let ev = l.events.lock().unwrap();
        if ev
            .iter()
            .any(|(t, e)| *t > user_at && e["type"] == "state" && e["to"] == "speaking")
        {
            break;
        }
        drop(ev);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (events, log) = l.stop();
    Run {
        events,
        log,
        answer_at,
        user_at,
    }
}

/// Finals, overlaps (each pauses the answer) and barge-ins that arrived while only the echo could
/// be heard.
fn echo_reactions(r: &Run) -> Vec<String> {
    r.events
        .iter()
        .filter(|(t, e)| {
            *t > r.answer_at
                && *t < r.user_at
                && ((e["type"] == "final"
                    && e["text"].as_str().is_some_and(|s| !s.trim().is_empty()))
                    || e["type"] == "barge_in"
                    || (e["type"] == "turn" && e["kind"] == "overlap"))
        })
        .map(|(_, e)| e.to_string())
        .collect()
}

/// Fails today, so it is not run by the suite (run it with `scripts/with-pulseaudio cargo nextest
/// run -p voicerelay --test listen_aec_pulse --run-ignored all --no-capture`). With the backend's
/// default speaker buffer (about 2 s on PulseAudio) the speaker's clock anchor drifted 1.4 s in
/// 15 s and the canceller never converged (ERLE below 1 dB); with the 20 ms default and the
/// averaged anchor, one run found the delay (ERLE 17.2 dB, no reaction to the echo, the user's
/// words exact, detection 301 ms) and the next locked the delay at the search limit (ERLE about
/// 0 dB, the user's first words lost). ERLE ≥ 20 dB, every run, is still to come.
#[test]
#[ignore = "known failure (issue 16): listen's AEC is not yet reliable on PulseAudio; see the doc comment"]
fn echo_is_cancelled_and_the_user_still_interrupts() {
    if std::env::var("VOICERELAY_PULSE").as_deref() != Ok("1") {
        vr_core::prereq::missing("needs a PulseAudio session; run under scripts/with-pulseaudio");
        return;
    }
    if vr_core::prereq::models(&["qwen2.5-0.5b", "whisper-tiny.en", "silero-vad", "piper-joe"])
        .is_none()
    {
        return;
    }
    let Some(corpus) = vr_core::prereq::corpus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let question = dir.path().join("question.wav");
    let out = Command::new(bin())
        .args(["say", QUESTION, "-o", question.to_str().unwrap()])
        .env("VOICERELAY__LOG__FILTER", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = vr_evals::corpus::Corpus::open(&corpus).expect("corpus manifest");
    let u = manifest
        .split(vr_evals::corpus::Split::Test)
        .find(|u| u.id == USER)
        .expect("the user's utterance is in the test split");
    let user = manifest.wav_path(u);

    // The clean file, streamed through the same recogniser: the WER to hold.
    let out = Command::new(bin())
        .args(["transcribe", user.to_str().unwrap()])
        .env("VOICERELAY__LOG__FILTER", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let clean = wer(&u.text, &String::from_utf8_lossy(&out.stdout));

    let with = converse(true, &question, &user);
    let without = converse(false, &question, &user);

    for (name, r) in [("with AEC", &with), ("without AEC", &without)] {
        println!(
            "{name}: answer at 0 ms, user at {} ms",
            (r.user_at - r.answer_at).as_millis()
        );
        for (t, e) in &r.events {
            let ms = if *t >= r.answer_at {
                (*t - r.answer_at).as_millis() as i64
            } else {
                -((r.answer_at - *t).as_millis() as i64)
            };
            println!("  {ms:>6} {e}");
        }
    }
    for (t, l) in &with.log {
        let ms = t.saturating_duration_since(with.answer_at).as_millis();
        println!("  log +{ms} {l}");
    }
    // The control: without the canceller the echo reaches the recogniser or the turn detector.
    let heard_without = echo_reactions(&without);
    println!("without AEC, during the echo: {heard_without:#?}");
    assert!(
        !heard_without.is_empty(),
        "the echo did nothing without AEC: this test would show nothing"
    );

    // With it: nothing from the echo.
    let heard_with = echo_reactions(&with);
    println!("with AEC, during the echo: {heard_with:#?}");
    assert!(
        heard_with.is_empty(),
        "the echo got through: {heard_with:#?}"
    );

    // The user's interruption: an overlap detected within 300 ms of its speech start, a
    // barge-in, and its words.
    let overlap = with
        .events
        .iter()
        .find(|(t, e)| *t > with.user_at && e["type"] == "barge_in")
        .map(|(_, e)| e.clone())
        .unwrap_or_else(|| panic!("no barge-in: {:#?}", with.events));
    let detect = overlap["detected_ms"].as_u64().unwrap() - overlap["at_ms"].as_u64().unwrap();
    println!("barge-in: {overlap}");
    assert!(detect <= 300, "detected {detect} ms after the speech start");
    let said: Vec<String> = of(&with.events, "final")
        .iter()
        .filter(|(t, _)| *t > with.user_at)
        .filter_map(|(_, e)| e["text"].as_str().map(str::to_string))
        .collect();
    let said = said.join(" ");
    let w = wer(&u.text, &said);
    println!(
        "user: {said:?}\nWER {:.1} % (clean file {:.1} %)",
        100.0 * w,
        100.0 * clean
    );
    assert!(
        w <= clean + 0.03,
        "WER {:.1} % vs {:.1} % clean",
        100.0 * w,
        100.0 * clean
    );

    // ERLE once converged, each second of the echo-only stretch after the first (the
    // canceller's own measure over its last 2 s of far-end activity).
    let mut erle: Vec<f32> = with
        .log
        .iter()
        .filter(|(t, l)| {
            *t > with.answer_at + Duration::from_secs(1)
                && *t < with.user_at
                && l.contains("converged=true")
        })
        .filter_map(|(_, l)| {
            let v = l.split("erle_db=").nth(1)?;
            v.split_whitespace().next()?.parse().ok()
        })
        .collect();
    println!("ERLE per second of echo once converged: {erle:?}");
    assert!(
        !erle.is_empty(),
        "no converged ERLE report: {:#?}",
        with.log
    );
    erle.sort_by(f32::total_cmp);
    let median = erle[erle.len() / 2];
    assert!(median >= 20.0, "ERLE median {median} dB: {erle:?}");
}
