//! A real browser as the client: headless Debian chromium (driven by playwright-core) opens the
//! page served at `/`, its fake microphone plays a corpus utterance, and everything runs in a
//! private network namespace (`unshare -n`, loopback only). The page must show the final
//! transcript (WER ≤ 15%) and the assistant's text, and the browser's inbound-rtp stats must
//! show received assistant audio. The screenshot is kept in `target/test-artifacts/`.
//!
//! Chromium's fake microphone starts its file wherever capture starts. The page opens the
//! microphone only once the server's conversation says it listens (its first `voice` event), and
//! the file starts with [`LEAD_SILENCE_S`] of silence, so the whole sentence is heard from its
//! first word however long the session took to start.
//!
//! Then the tab is reloaded and Connect pressed again: the page must resume the same session (the
//! server's `resumed` event, the same session URL), not start a new one.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn skip(why: &str) {
    vr_core::prereq::missing(why);
}

/// Silence before the speech in the fake microphone's file.
const LEAD_SILENCE_S: usize = 3;
/// How long the driver waits for transcript, answer text and answer audio.
const DEADLINE_S: usize = 230;

#[test]
fn chromium_uses_the_page_end_to_end() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return skip(&format!(
            "{chromium} not found (apt-get install chromium; scripts/bootstrap installs it)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return skip("node is not installed");
    }
    let unshare_ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshare_ok {
        return skip(
            "cannot create a network namespace (`unshare -n` needs root or CAP_SYS_ADMIN)",
        );
    }
    let Some((speech, reference, _)) = utterance_48k() else {
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    // scripts/bootstrap installs playwright-core (tests/browser/setup.sh): no test reaches a
    // package registry while it runs.
    if !here
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return skip("tests/browser/node_modules is missing (run scripts/bootstrap)");
    }

    // Chromium loops the fake-microphone file: lead-in silence, speech, then silence past the
    // driver's deadline, so the sentence is said once. (A repeat would be a new user turn that
    // cancels an answer still being generated: on two shared cores the LLM's first clause can
    // take 30 s.)
    let out = artifact_dir();
    let wav = out.join("browser-mic.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).expect("mic wav");
    for s in std::iter::repeat_n(0.0, 48_000 * LEAD_SILENCE_S)
        .chain(speech.iter().copied())
        .chain(std::iter::repeat_n(0.0, 48_000 * (DEADLINE_S + 10)))
    {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .expect("write");
    }
    w.finalize().expect("finalize wav");
    let shot = out.join("browser-page.png");
    let _ = std::fs::remove_file(&shot);

    let run = Command::new("unshare")
        .arg("-n")
        .arg("bash")
        .arg(here.join("e2e.sh"))
        .arg(server_bin())
        .arg(&wav)
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .env("BROWSER_TIMEOUT_MS", (DEADLINE_S * 1000).to_string())
        .env("RELOAD_RESUME", "1")
        .env("VOICERELAY__TRANSPORT__UDP_ADDRS", "[\"127.0.0.1:0\"]")
        .output()
        .expect("run e2e.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let server_log = std::fs::read_to_string(out.join("browser-serve.log")).unwrap_or_default();
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT from the browser driver; server log:\n{server_log}"));
    assert!(run.status.success(), "browser driver failed: {result}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());

    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );
    // The server said it listens (its first `voice` event names the voice) before the page
    // opened the microphone, so the file's speech reached a running conversation.
    let at = |k: &str| result[k].as_f64();
    let (connected, listening, mic) = (at("connectedAt"), at("listeningAt"), at("micAt"));
    println!(
        "page: Connect → server listening {:.0} ms → microphone open {:.0} ms later (voice {})",
        listening.unwrap_or(f64::NAN) - connected.unwrap_or(f64::NAN),
        mic.unwrap_or(f64::NAN) - listening.unwrap_or(f64::NAN),
        result["voice"]
    );
    assert_eq!(result["voice"].as_str(), Some("piper"), "{result}");
    // The page prefers RED and the server accepts it: Chromium sends the microphone's packets
    // as RED, each with a copy of the one before (its stats name only the primary codec, Opus;
    // the server counts them). The WER below is measured through it.
    let red = result["metrics"]
        .as_str()
        .and_then(|m| metric(m, "transport_red_packets_received_total"))
        .unwrap_or(0.0);
    println!("RED packets received by the server: {red}");
    assert!(red > 100.0, "Chromium did not send RED: {result}");
    // The page's level meter saw the microphone's speech (RMS ≈ 0.05 for this utterance).
    let mic_peak = result["micPeak"].as_f64().unwrap_or(0.0);
    println!("page microphone meter peak RMS {mic_peak:.3}");
    assert!(
        mic_peak > 0.01,
        "the microphone meter never moved: {result}"
    );
    assert!(
        matches!((connected, listening, mic), (Some(c), Some(l), Some(m)) if c <= l && l <= m),
        "the microphone must open after the server listens: {result}"
    );
    let finals: Vec<&str> = result["finals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    // The speaker pauses mid-sentence, so the utterance can arrive as several finals. Score the
    // best prefix of finals (it starts at the first final: a sentence heard from its middle
    // would fail here).
    let (k, w) = (1..=finals.len().max(1))
        .map(|k| {
            let k = k.min(finals.len());
            (k, wer(&reference, &finals[..k].join(" ")))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default();
    println!(
        "reference: {reference}\npage shows: {}\nWER {:.1}%",
        finals[..k].join(" "),
        100.0 * w
    );
    assert!(w <= 0.15, "WER {:.1}% > 15%: {result}", 100.0 * w);
    // The page puts each final in its own paragraph.
    let page = result["transcriptText"].as_str().unwrap_or_default();
    assert!(
        finals[..k].iter().all(|f| page.contains(f)),
        "the final transcript is not on the page: {result}"
    );
    assert!(
        result["assistant"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "no assistant text: {result}"
    );
    let inbound = &result["inbound"];
    let packets = inbound["packetsReceived"].as_f64().unwrap_or(0.0);
    let energy = inbound["totalAudioEnergy"].as_f64().unwrap_or(0.0);
    println!("browser inbound-rtp: {packets} packets, totalAudioEnergy {energy:.4}");
    assert!(packets >= 50.0, "{inbound}");
    // Energy is Σ(level² × duration): 0.01 is e.g. 1 s at RMS 0.1; silence stays near 0.
    assert!(
        energy > 0.01,
        "no audible assistant audio reached the browser: {inbound}"
    );

    // A reload resumes the conversation instead of starting another.
    let resume = &result["resume"];
    println!("after a reload: {resume}");
    assert_eq!(
        resume["resumed"], true,
        "the reloaded page did not resume: {resume}"
    );
    assert!(
        resume["session"].is_string() && resume["session"] == resume["before"],
        "the reloaded page is on another session: {resume}"
    );
    assert_eq!(
        resume["errors"].as_array().map(Vec::len),
        Some(0),
        "{resume}"
    );
}
