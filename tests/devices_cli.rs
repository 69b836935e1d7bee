//! Without a sound card and without a PulseAudio server, `voicerelay devices` and `listen` (without `--input`) must
//! fail with one clear error rather than list ALSA's software plugins or record the unclocked
//! null device's silence.

use std::process::Command;

/// The `error:` line of `voicerelay ARGS` run with no sound server reachable; the command must
/// fail.
fn error_line_without_sound_server(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args(args)
        .env_remove("PULSE_SERVER")
        .env_remove("PULSE_RUNTIME_PATH")
        .env("XDG_RUNTIME_DIR", "/nonexistent-voicerelay-test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that waits for a device that will never come is the defect this guards against:
    // fail instead of hanging the suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still running after 60 s without a sound device");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_string()
}

#[test]
fn no_sound_card_is_a_clear_error() {
    if std::path::Path::new("/dev/snd").exists() {
        vr_core::prereq::missing("this machine has a sound card (/dev/snd exists)");
        return;
    }
    let line = error_line_without_sound_server(&["devices"]);
    assert!(line.contains("no audio devices found"), "{line}");
    let line = error_line_without_sound_server(&["listen"]);
    assert!(
        line.contains("no usable microphone") && line.contains("--input"),
        "{line}"
    );
}

/// Seconds of a WAV file (first channel) whose 10 ms RMS is speech-level.
fn active_seconds(path: &std::path::Path) -> f64 {
    let mut r = hound::WavReader::open(path).expect("a WAV file");
    let spec = r.spec();
    let ch = usize::from(spec.channels);
    let s: Vec<f32> = r
        .samples::<i16>()
        .step_by(ch)
        .map(|v| f32::from(v.unwrap_or(0)) / 32768.0)
        .collect();
    let frame = (spec.sample_rate / 100) as usize;
    let active = s
        .chunks_exact(frame)
        .filter(|c| (c.iter().map(|v| v * v).sum::<f32>() / frame as f32).sqrt() > 0.01)
        .count();
    active as f64 / 100.0
}

/// `say` without `-o` plays through the speaker sink, all of it: inside the PulseAudio null-sink
/// session the sink's monitor must hold as much speech as `say -o` writes for the same text. A
/// player that stops its stream before the server has played its buffer cuts the end off (it
/// used to: 0.76 s of 1.95 s of speech arrived).
#[test]
fn say_plays_through_the_speaker_sink() {
    if std::env::var_os("VOICERELAY_PULSE").is_none() {
        vr_core::prereq::missing("needs a PulseAudio session (run under scripts/with-pulseaudio)");
        return;
    }
    const TEXT: &str = "Hello from the speaker sink, one two three.";
    let dir = tempfile::tempdir().unwrap();
    let ref_path = dir.path().join("reference.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args(["say", "--voice", "flite", "-o"])
        .arg(&ref_path)
        .arg(TEXT)
        .output()
        .unwrap();
    assert!(out.status.success(), "say -o failed: {out:?}");
    let expected = active_seconds(&ref_path);
    assert!(expected > 1.0, "reference has {expected} s of speech");

    let source_outputs = || {
        let o = Command::new("pactl")
            .args(["list", "short", "source-outputs"])
            .output()
            .expect("pactl (pulseaudio-utils) runs");
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    let before = source_outputs();
    let rec_path = dir.path().join("monitor.wav");
    // A 20 ms record buffer: with the default (about 2 s) parecord loses what it still buffers
    // when interrupted.
    let mut rec = Command::new("parecord")
        .args([
            "--device=vsink.monitor",
            "--file-format=wav",
            "--channels=1",
            "--rate=16000",
            "--latency-msec=20",
        ])
        .arg(&rec_path)
        .spawn()
        .expect("parecord (pulseaudio-utils) runs");
    // Start playing only once the recorder is connected, however loaded the machine is.
    let t = std::time::Instant::now();
    while source_outputs() == before {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "parecord did not connect"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args(["say", "--voice", "flite", TEXT])
        .output()
        .unwrap();
    // `say` returns once its audio has played; this only covers the recorder's own latency.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SIGINT lets parecord finish the WAV header.
    let _ = Command::new("kill")
        .args(["-INT", &rec.id().to_string()])
        .status();
    let _ = rec.wait();
    assert!(
        out.status.success(),
        "say failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let heard = active_seconds(&rec_path);
    println!("speech: {expected:.2} s written by say -o, {heard:.2} s heard on the sink monitor");
    assert!(
        (heard - expected).abs() <= 0.1 * expected,
        "the sink heard {heard:.2} s of speech, say -o wrote {expected:.2} s"
    );
}
