//! Without a sound card and without a PulseAudio server, `voicerelay devices` and `serve` must
//! fail with one clear error rather than list ALSA's software plugins or record the unclocked
//! null device's silence.

use std::process::Command;

/// The `error:` line of `voicerelay ARGS` run with no sound server reachable; the command must
/// fail.
fn error_line_without_sound_server(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args(args)
        .env_remove("PULSE_SERVER")
        .env_remove("PULSE_RUNTIME_PATH")
        .env("XDG_RUNTIME_DIR", "/nonexistent-voicerelay-test")
        .output()
        .unwrap();
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
        eprintln!("SKIP: this machine has a sound card (/dev/snd exists)");
        return;
    }
    let line = error_line_without_sound_server(&["devices"]);
    assert!(line.contains("no audio devices found"), "{line}");
    let line = error_line_without_sound_server(&["serve"]);
    assert!(
        line.contains("no usable microphone") && line.contains("--input"),
        "{line}"
    );
    let line = error_line_without_sound_server(&["listen"]);
    assert!(
        line.contains("no usable microphone") && line.contains("--input"),
        "{line}"
    );
}

/// `say` without `-o` plays through the speaker sink: inside the PulseAudio null-sink session,
/// what the sink's monitor records while `say` runs must be speech-level, not silence.
#[test]
#[ignore = "flaky: passes alone, but under nextest the monitor often records near-silence (peak RMS 0.003); stream start/stop buffering in the PulseAudio speaker path needs investigation"]
fn say_plays_through_the_speaker_sink() {
    if std::env::var_os("VOICERELAY_PULSE").is_none() {
        eprintln!("SKIP: needs a PulseAudio session (run under scripts/with-pulseaudio)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec_path = dir.path().join("monitor.wav");
    let mut rec = Command::new("parecord")
        .args([
            "--device=vsink.monitor",
            "--file-format=wav",
            "--channels=1",
            "--rate=16000",
        ])
        .arg(&rec_path)
        .spawn()
        .expect("parecord (pulseaudio-utils) runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args([
            "say",
            "--voice",
            "flite",
            "Hello from the speaker sink, one two three.",
        ])
        .output()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
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
    let mut r = hound::WavReader::open(&rec_path).expect("parecord wrote a WAV");
    let s: Vec<f32> = r
        .samples::<i16>()
        .map(|v| f32::from(v.unwrap_or(0)) / 32768.0)
        .collect();
    assert!(s.len() > 16_000, "recorded only {} samples", s.len());
    let peak_rms = s
        .chunks(1600)
        .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt())
        .fold(0f32, f32::max);
    println!(
        "recorded {} samples, loudest 100 ms RMS {peak_rms:.4}",
        s.len()
    );
    assert!(
        peak_rms > 0.02,
        "speaker output is silent (peak RMS {peak_rms})"
    );
}
