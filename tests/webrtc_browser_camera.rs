//! A real browser's camera: headless Debian chromium (playwright-core, `tests/browser/run.js`)
//! opens the page with its camera on (`?camera=1`), inside a private network namespace
//! (`unshare -n`, loopback only). Chromium's fake camera plays a Y4M file this test makes from
//! scikit-image's tabby-cat photo ("chelsea", from the model store): a slow pan across the photo
//! with a little sensor noise, so the encoder has something to spend bits on. Its fake microphone
//! plays "What do you see on my camera?", spoken by the project's Piper voice.
//!
//! Two runs of `voicerelay serve`, each in its own namespace:
//!
//! 1. **control**, `transport.video.recap_table = ""` (no ReCap cap: REMB is the receiver's
//!    congestion estimate alone): the camera sends for [`CONTROL_MS`], no question is asked.
//!    This is what Chromium sends when nothing holds it back on loopback.
//! 2. **capped**, the default configuration (the built-in ReCap table, REMB ≤ 200 kbit/s for
//!    recognisable content): the whole conversation.
//!
//! Asserted, from the capped run: the server decoded the browser's VP8 (`/metrics`, read by the
//! page from inside the namespace); a `scene` event names a cat; the spoken question's final
//! transcript is the question (WER bound) and the answer names a cat; the server's REMB is at
//! the cap; and, from Chromium's own `getStats()` (outbound-rtp video), the browser's send rate
//! and its encoder's target settle at or under the cap plus [`CAP_MARGIN`], at most half of what
//! the same browser sends in the control run. The figures are printed; the screenshot and logs
//! stay in `target/test-artifacts/camera-*`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CATS: [&str; 5] = ["cat", "tabby", "kitten", "feline", "kitty"];

fn mentions_a_cat(text: &str) -> bool {
    let t = text.to_lowercase();
    CATS.iter().any(|c| t.contains(c))
}

/// What the fake microphone asks.
const QUESTION: &str = "What do you see on my camera?";
/// Silence before the question in the fake microphone's file (the page opens the microphone
/// once the server listens; see tests/webrtc_browser.rs).
const LEAD_SILENCE_S: usize = 3;
/// How long the capped run's driver waits for scene, transcript, answer and answer audio.
const DEADLINE_S: usize = 200;
/// The capped run films at least this long, so Chromium's rate has settled under the REMB.
const MIN_VIDEO_MS: usize = 30_000;
/// How long the control run films.
const CONTROL_MS: usize = 25_000;
/// The window at the end of each run over which the send rate is measured, s.
const TAIL_S: f64 = 10.0;
/// How far over the server's REMB the browser's measured video rate may be (RTP headers and
/// the rate controller's overshoot within a window).
const CAP_MARGIN: f64 = 0.15;
/// The fake camera's picture and frame rate.
const W: u32 = 640;
const H: u32 = 480;
const FPS: u32 = 15;

/// Chromium, node, a network namespace and playwright-core, or None (skipped; a failure under
/// CI).
fn browser_prerequisites() -> Option<(String, PathBuf)> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        vr_core::prereq::missing(format!(
            "{chromium} not found (apt-get install chromium; scripts/bootstrap installs it)"
        ));
        return None;
    }
    if Command::new("node").arg("--version").output().is_err() {
        vr_core::prereq::missing("node is not installed");
        return None;
    }
    let unshare_ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshare_ok {
        vr_core::prereq::missing(
            "cannot create a network namespace (`unshare -n` needs root or CAP_SYS_ADMIN)",
        );
        return None;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !here
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        vr_core::prereq::missing("tests/browser/node_modules is missing (run scripts/bootstrap)");
        return None;
    }
    Some((chromium, here))
}

/// Writes the fake camera's file: `frames` 640×480 I420 pictures at [`FPS`] of the cat photo
/// scaled to cover the frame, panning across it and back (so the loop has no jump), each with
/// ±3 levels of luma noise (a real sensor's; without it a still picture costs the encoder next
/// to nothing and no rate control would show).
fn write_y4m(store: &vr_core::ModelStore, path: &Path, frames: u32) {
    let photo = store
        .file("vision-test-images", "chelsea.png")
        .expect("the vision test images (scripts/bootstrap installs them)");
    let img = image::open(&photo).expect("decode chelsea.png").to_rgb8();
    let scale = (f64::from(W) / f64::from(img.width())).max(f64::from(H) / f64::from(img.height()));
    let (sw, sh) = (
        (f64::from(img.width()) * scale).ceil() as u32,
        (f64::from(img.height()) * scale).ceil() as u32,
    );
    let big = image::imageops::resize(&img, sw, sh, image::imageops::FilterType::Triangle);
    let (span_x, span_y) = (sw - W, sh - H);
    let mut out = Vec::with_capacity(64 + frames as usize * (W * H * 3 / 2 + 6) as usize);
    out.extend_from_slice(format!("YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n").as_bytes());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 7) as i32 - 3
    };
    let half = frames / 2;
    for f in 0..frames {
        // Ping-pong position in [0, 1].
        let p = if f <= half {
            f64::from(f) / f64::from(half.max(1))
        } else {
            f64::from(frames - f) / f64::from(half.max(1))
        };
        let (ox, oy) = (
            (p * f64::from(span_x)).round() as u32,
            (p * f64::from(span_y)).round() as u32,
        );
        let px = |x: u32, y: u32| img_rgb(&big, ox + x, oy + y);
        out.extend_from_slice(b"FRAME\n");
        // BT.601 full range ("jpeg"): Y, then 2×2-averaged U and V.
        for y in 0..H {
            for x in 0..W {
                let (r, g, b) = px(x, y);
                let l = 0.299 * r + 0.587 * g + 0.114 * b;
                out.push((l.round() as i32 + noise()).clamp(0, 255) as u8);
            }
        }
        let mut u = Vec::with_capacity((W * H / 4) as usize);
        let mut v = Vec::with_capacity((W * H / 4) as usize);
        for y in (0..H).step_by(2) {
            for x in (0..W).step_by(2) {
                let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (pr, pg, pb) = px(x + dx, y + dy);
                    (r, g, b) = (r + pr / 4.0, g + pg / 4.0, b + pb / 4.0);
                }
                let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
                let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
                u.push(cb.round().clamp(0.0, 255.0) as u8);
                v.push(cr.round().clamp(0.0, 255.0) as u8);
            }
        }
        out.extend_from_slice(&u);
        out.extend_from_slice(&v);
    }
    std::fs::write(path, out).expect("write the fake camera's y4m");
}

fn img_rgb(img: &image::RgbImage, x: u32, y: u32) -> (f64, f64, f64) {
    let p = img.get_pixel(x, y);
    (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]))
}

/// The question in the project's Piper voice, at 48 kHz.
fn question_48k(store: &vr_core::ModelStore) -> Vec<f32> {
    let mut voice = vr_tts::open_voice(&vr_tts::TtsConfig::default(), store)
        .expect("a TTS voice (scripts/bootstrap installs piper-joe)");
    assert_eq!(
        voice.fallback_reason, None,
        "the question must be spoken by Piper, not a fallback voice"
    );
    let rate = voice.engine.sample_rate();
    let speech = voice.engine.synthesize(QUESTION).expect("synthesise");
    assert!(
        speech.len() > rate.0 as usize / 2,
        "{} samples",
        speech.len()
    );
    let fmt = vr_capture::AudioFormat { rate, channels: 1 };
    vr_capture::resample::resample_to_mono(&speech, fmt, vr_core::SampleRate::OPUS)
        .expect("resample")
}

/// A 48 kHz mono 16-bit WAV: `lead_s` of silence, `speech`, then `tail_s` of silence.
fn write_mic(path: &Path, speech: &[f32], lead_s: usize, tail_s: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("mic wav");
    for s in std::iter::repeat_n(0.0, 48_000 * lead_s)
        .chain(speech.iter().copied())
        .chain(std::iter::repeat_n(0.0, 48_000 * tail_s))
    {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .expect("write");
    }
    w.finalize().expect("finalize wav");
}

/// One `e2e.sh` run in its own network namespace, under a hard wall-clock limit; the driver's
/// RESULT and the server's log.
fn run_browser(
    name: &str,
    chromium: &str,
    here: &Path,
    wav: &Path,
    y4m: &Path,
    env: &[(&str, String)],
    limit_s: usize,
) -> (serde_json::Value, String) {
    let out = artifact_dir();
    let t0 = std::time::Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args([
        "--kill-after=10",
        &limit_s.to_string(),
        "unshare",
        "-n",
        "bash",
    ])
    .arg(here.join("e2e.sh"))
    .arg(server_bin())
    .arg(wav)
    .arg(&out)
    .arg(name)
    .env("CHROMIUM", chromium)
    .env("FAKE_VIDEO_Y4M", y4m)
    .env("VOICERELAY__TRANSPORT__UDP_ADDRS", "[\"127.0.0.1:0\"]")
    .env("VOICERELAY__VISION__INTERVAL_MS", "500")
    .env("RUST_LOG", "info,voicerelay_transport=debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.output().expect("run e2e.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!(
        "== {name} run ({:.0} s)\n{stdout}\n{}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&run.stderr)
    );
    let log = std::fs::read_to_string(out.join(format!("{name}-serve.log"))).unwrap_or_default();
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| {
            panic!(
                "no RESULT from the {name} run (exit {:?}); server log:\n{log}",
                run.status
            )
        });
    assert!(
        run.status.success(),
        "{name}: browser driver failed: {result}"
    );
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(0),
        "{name}: {result}"
    );
    (result, log)
}

/// Chromium's outbound video over the last [`TAIL_S`] of a run, from the page's samples.
struct SendRate {
    /// bytesSent rate, bit/s.
    sent_bps: f64,
    /// The encoder's target (`targetBitrate`), median of the window's samples, bit/s.
    target_bps: f64,
    /// The send-side estimate (`availableOutgoingBitrate`), median, bit/s.
    estimate_bps: Option<f64>,
    frames_encoded: f64,
    size: String,
    limited_by: String,
}

impl SendRate {
    fn describe(&self) -> String {
        format!(
            "last {TAIL_S:.0} s: sent {:.0} kbit/s, encoder target {:.0}, send-side estimate {}, \
             {} frames encoded, {}, quality limited by {}",
            self.sent_bps / 1000.0,
            self.target_bps / 1000.0,
            self.estimate_bps
                .map_or("–".to_string(), |e| format!("{:.0}", e / 1000.0)),
            self.frames_encoded,
            self.size,
            self.limited_by
        )
    }
}

fn send_rate(name: &str, result: &serde_json::Value) -> SendRate {
    let samples = result["video"].as_array().cloned().unwrap_or_default();
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64();
    let last = samples
        .last()
        .unwrap_or_else(|| panic!("{name}: no outbound video samples: {result}"));
    let t_end = f(last, "timestamp").expect("timestamp");
    let window: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| f(s, "timestamp").is_some_and(|t| t >= t_end - TAIL_S * 1000.0))
        .collect();
    let first = window[0];
    let dt = (t_end - f(first, "timestamp").expect("timestamp")) / 1000.0;
    assert!(
        dt >= TAIL_S * 0.7,
        "{name}: only {dt:.1} s of outbound video samples at the end: {samples:?}"
    );
    let bytes = f(last, "bytesSent").unwrap_or(0.0) - f(first, "bytesSent").unwrap_or(0.0);
    let median = |k: &str| {
        let mut v: Vec<f64> = window.iter().filter_map(|s| f(s, k)).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    SendRate {
        sent_bps: 8.0 * bytes / dt,
        target_bps: median("targetBitrate")
            .unwrap_or_else(|| panic!("{name}: no targetBitrate in getStats: {last}")),
        estimate_bps: median("availableOutgoingBitrate"),
        frames_encoded: f(last, "framesEncoded").unwrap_or(0.0),
        size: format!("{}×{}", last["frameWidth"], last["frameHeight"]),
        limited_by: last["qualityLimitationReason"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    }
}

/// The page's samples as one line: per second, kbit/s sent, encoder target, send-side estimate.
fn print_series(name: &str, result: &serde_json::Value) {
    let samples = result["video"].as_array().cloned().unwrap_or_default();
    let mut prev: Option<&serde_json::Value> = None;
    let mut line = format!("{name} outbound video, kbit/s sent/target/estimate each second:");
    for s in &samples {
        if let Some(p) = prev {
            let dt = (s["timestamp"].as_f64().unwrap_or(0.0)
                - p["timestamp"].as_f64().unwrap_or(0.0))
                / 1000.0;
            let sent = 8.0
                * (s["bytesSent"].as_f64().unwrap_or(0.0) - p["bytesSent"].as_f64().unwrap_or(0.0))
                / dt.max(1e-3);
            line += &format!(
                " {:.0}/{:.0}/{:.0}",
                sent / 1000.0,
                s["targetBitrate"].as_f64().unwrap_or(f64::NAN) / 1000.0,
                s["availableOutgoingBitrate"].as_f64().unwrap_or(f64::NAN) / 1000.0
            );
        }
        prev = Some(s);
    }
    println!("{line}");
}

fn server_metric(name: &str, result: &serde_json::Value, key: &str) -> f64 {
    let text = result["metrics"].as_str().unwrap_or_default();
    metric(text, key).unwrap_or_else(|| panic!("{name}: no {key} in /metrics:\n{text}"))
}

#[test]
fn chromium_camera_is_seen_and_remb_lowers_its_bitrate() {
    let Some((chromium, here)) = browser_prerequisites() else {
        return;
    };
    let Some(store) = vr_core::prereq::models(&[
        "piper-joe",
        "onnxruntime",
        "efficientnet-lite0",
        "vision-test-images",
    ]) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let out = artifact_dir();
    let y4m = out.join("camera-chelsea.y4m");
    write_y4m(&store, &y4m, 2 * FPS);
    let question = question_48k(&store);
    println!(
        "fake camera: {} ({W}×{H} @ {FPS} fps, {} frames looped); question {:.2} s",
        y4m.display(),
        2 * FPS,
        question.len() as f64 / 48_000.0
    );
    let silent = out.join("camera-silence.wav");
    write_mic(&silent, &[], 1, 5);
    let asking = out.join("camera-mic.wav");
    // Lead-in silence, the question once, then silence past the deadline (Chromium loops the
    // file; a repeat would be a new turn cancelling the answer).
    write_mic(&asking, &question, LEAD_SILENCE_S, DEADLINE_S + 10);

    // 1. Control: no ReCap cap.
    let (control, control_log) = run_browser(
        "camera-control",
        &chromium,
        &here,
        &silent,
        &y4m,
        &[
            ("VOICERELAY__TRANSPORT__VIDEO__RECAP_TABLE", String::new()),
            ("VIDEO_ONLY_MS", CONTROL_MS.to_string()),
            ("BROWSER_TIMEOUT_MS", (CONTROL_MS + 30_000).to_string()),
        ],
        CONTROL_MS / 1000 + 150,
    );
    assert!(
        control_log.contains("no ReCap table"),
        "the control run's server applied a ReCap cap"
    );
    print_series("control (no cap)", &control);
    let free = send_rate("control", &control);
    let free_remb = server_metric("control", &control, "transport_video_remb_bps");
    println!(
        "control (no cap): {}; server's last REMB {:.0} kbit/s",
        free.describe(),
        free_remb / 1000.0
    );

    // 2. Capped (the default configuration), with the spoken question.
    let (r, log) = run_browser(
        "camera",
        &chromium,
        &here,
        &asking,
        &y4m,
        &[
            ("MIN_VIDEO_MS", MIN_VIDEO_MS.to_string()),
            ("BROWSER_TIMEOUT_MS", (DEADLINE_S * 1000).to_string()),
        ],
        DEADLINE_S + 150,
    );
    print_series("capped", &r);
    let capped = send_rate("capped", &r);
    let remb = server_metric("capped", &r, "transport_video_remb_bps");
    let estimate = server_metric("capped", &r, "transport_video_estimate_bps");
    let decoded = server_metric("capped", &r, "transport_video_frames_decoded_total");
    let rembs = server_metric("capped", &r, "transport_video_remb_sent_total");
    println!(
        "capped: {}; server: last REMB {:.0} kbit/s (estimate {:.0}), {rembs} REMBs sent, \
         {decoded} frames decoded",
        capped.describe(),
        remb / 1000.0,
        estimate / 1000.0
    );
    // What the server's answer negotiated for the camera: REMB must be among its feedback.
    let video_section: Vec<&str> = r["answerSdp"]
        .as_str()
        .unwrap_or_default()
        .split("m=")
        .find(|m| m.starts_with("video"))
        .map(|m| {
            m.lines()
                .filter(|l| l.starts_with("a=rtcp-fb") || l.starts_with("a=extmap"))
                .collect()
        })
        .unwrap_or_default();
    println!("answer, video feedback and extensions: {video_section:?}");
    assert!(
        video_section.iter().any(|l| l.contains("goog-remb")),
        "the answer's video section does not offer REMB: {}",
        r["answerSdp"]
    );
    println!("wall time so far {:.0} s", t0.elapsed().as_secs_f64());
    assert!(
        log.contains("ReCapABR cap from the configured table"),
        "the capped run did not load the ReCap table"
    );

    // (a) The server decoded the browser's VP8: at least a third of what 30 s at 15 fps gives.
    assert!(
        decoded >= (MIN_VIDEO_MS / 1000) as f64 * f64::from(FPS) / 3.0,
        "only {decoded} frames decoded; Chromium encoded {}",
        capped.frames_encoded
    );
    assert!(
        decoded <= capped.frames_encoded,
        "{decoded} decoded > {}",
        capped.describe()
    );

    // The frame-rate requests the page applied (the fake camera pans, so the full rate is
    // expected; `tests/webrtc_vision.rs` asserts the still and moving cases).
    let rates: Vec<String> = r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "video_rate")
        .map(|e| format!("{}@{}", e["max_fps"], e["motion"]))
        .collect();
    let fps: Vec<String> = r["video"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["framesPerSecond"].as_f64())
        .map(|f| format!("{f:.0}"))
        .collect();
    println!(
        "codec {}; video_rate requests (max_fps@motion): {rates:?}; Chromium's fps each second: {fps:?}",
        last_codec(&r)
    );

    // (b) A scene event names a cat, and the page shows it.
    let scenes = scene_descriptions(&r);
    println!(
        "scenes: {} events, first {:?}",
        scenes.len(),
        scenes.first()
    );
    let scene = scenes
        .iter()
        .find(|d| mentions_a_cat(d))
        .unwrap_or_else(|| panic!("no scene names a cat: {scenes:?}"));
    println!("scene: {scene}");
    assert!(
        r["sceneText"].as_str().is_some_and(mentions_a_cat),
        "the page does not show a cat scene: {}",
        r["sceneText"]
    );

    // (c) The spoken question was heard, and answered with a cat.
    let finals: Vec<&str> = r["finals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let heard = finals.join(" ");
    let w = wer(QUESTION, &heard);
    println!(
        "question: {QUESTION}\nheard: {heard}\nWER {:.1}%",
        100.0 * w
    );
    assert!(w <= 0.2, "WER {:.1}% > 20%: {finals:?}", 100.0 * w);
    let answer = r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "answer_end")
        .and_then(|e| e["text"].as_str())
        .unwrap_or_default();
    println!("answer: {answer}");
    assert!(
        mentions_a_cat(answer),
        "the answer does not name what the camera shows ({scene}): {answer:?}"
    );
    let energy = r["inbound"]["totalAudioEnergy"].as_f64().unwrap_or(0.0);
    assert!(
        energy > 0.01,
        "no audible answer reached the browser: {}",
        r["inbound"]
    );

    // (d) REMB lowered the browser's bitrate. The server's REMB is at the built-in table's
    // lowest tier (200 kbit/s) while its estimate is above it.
    assert!(rembs >= 10.0, "{rembs} REMBs sent");
    assert!(
        remb <= 200_000.0 && remb < free_remb,
        "capped REMB {remb} bit/s (control's {free_remb})"
    );
    // Chromium's own send-side estimate (its congestion controller's output, which REMB bounds)
    // sits at the REMB.
    let browser_estimate = capped.estimate_bps.unwrap_or_else(|| {
        panic!(
            "no availableOutgoingBitrate in getStats: {}",
            capped.describe()
        )
    });
    assert!(
        browser_estimate <= remb * 1.02,
        "Chromium's estimate {browser_estimate} is above the REMB {remb}"
    );
    let ceiling = remb * (1.0 + CAP_MARGIN);
    assert!(
        capped.sent_bps <= ceiling && capped.target_bps <= ceiling,
        "Chromium does not keep under the REMB {remb:.0} bit/s + {:.0}%: {}",
        100.0 * CAP_MARGIN,
        capped.describe()
    );
    assert!(
        capped.sent_bps * 2.0 <= free.sent_bps && capped.target_bps * 2.0 <= free.target_bps,
        "the cap did not lower Chromium's rate clearly: capped {}, no cap {}",
        capped.describe(),
        free.describe()
    );
    println!(
        "Chromium's video: {:.0} kbit/s sent (target {:.0}) under REMB {:.0} kbit/s vs {:.0} kbit/s \
         (target {:.0}) without the cap; test wall time {:.0} s",
        capped.sent_bps / 1000.0,
        capped.target_bps / 1000.0,
        remb / 1000.0,
        free.sent_bps / 1000.0,
        free.target_bps / 1000.0,
        t0.elapsed().as_secs_f64()
    );
}

/// The descriptions of the page's `scene` events, in order.
fn scene_descriptions(result: &serde_json::Value) -> Vec<&str> {
    result["scenes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["description"].as_str())
        .collect()
}

/// The codec of Chromium's outbound video in its last stats sample (`video/VP8`, `video/H264`).
fn last_codec(result: &serde_json::Value) -> String {
    result["video"]
        .as_array()
        .and_then(|v| v.iter().rev().find_map(|s| s["codec"].as_str()))
        .unwrap_or_default()
        .to_string()
}

/// How long the H.264 run films.
const H264_MS: usize = 12_000;

/// The same page asking Chromium for H.264 first (`?codec=h264`): its camera must arrive as
/// H.264, be decoded by the server (avdec_h264) and labelled as a cat.
#[test]
fn chromium_h264_camera_is_decoded_and_seen() {
    let Some((chromium, here)) = browser_prerequisites() else {
        return;
    };
    let Some(store) = vr_core::prereq::models(&["efficientnet-lite0", "vision-test-images"]) else {
        return;
    };
    let out = artifact_dir();
    let y4m = out.join("camera-h264-chelsea.y4m");
    write_y4m(&store, &y4m, 2 * FPS);
    let silent = out.join("camera-h264-silence.wav");
    write_mic(&silent, &[], 1, 5);
    let (r, _log) = run_browser(
        "camera-h264",
        &chromium,
        &here,
        &silent,
        &y4m,
        &[
            ("PAGE_QUERY", "&codec=h264".to_string()),
            ("VIDEO_ONLY_MS", H264_MS.to_string()),
            ("BROWSER_TIMEOUT_MS", (H264_MS + 30_000).to_string()),
        ],
        H264_MS / 1000 + 150,
    );
    let codec = last_codec(&r);
    let sent = send_rate("h264", &r);
    let decoded = server_metric("h264", &r, "transport_video_frames_decoded_total");
    let scenes = scene_descriptions(&r);
    println!(
        "H.264 camera: codec {codec}; {}; server decoded {decoded} frames; scenes {:?}",
        sent.describe(),
        scenes.first()
    );
    assert_eq!(
        codec.to_ascii_lowercase(),
        "video/h264",
        "Chromium did not send H.264"
    );
    assert!(
        decoded >= (H264_MS / 1000) as f64 * f64::from(FPS) / 3.0,
        "only {decoded} H.264 frames decoded; {}",
        sent.describe()
    );
    assert!(
        decoded <= sent.frames_encoded,
        "{decoded} decoded > {}",
        sent.describe()
    );
    assert!(
        scenes.iter().any(|d| mentions_a_cat(d)),
        "no scene names a cat: {scenes:?}"
    );
}
