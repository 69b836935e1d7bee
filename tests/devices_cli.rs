//! Without a sound card and without a PulseAudio server, `voicerelay devices` and `serve` must
//! fail with one clear error rather than list ALSA's software plugins or record the unclocked
//! null device's silence.

use std::process::Command;

fn without_sound_server(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("PULSE_SERVER")
        .env_remove("PULSE_RUNTIME_PATH")
        .env("XDG_RUNTIME_DIR", "/nonexistent-voicerelay-test")
}

#[test]
fn no_sound_card_is_a_clear_error() {
    if std::path::Path::new("/dev/snd").exists() {
        eprintln!("SKIP: this machine has a sound card (/dev/snd exists)");
        return;
    }
    let out = without_sound_server(Command::new(env!("CARGO_BIN_EXE_voicerelay")).arg("devices"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains("no audio devices found"), "{line}");

    let out = without_sound_server(Command::new(env!("CARGO_BIN_EXE_voicerelay")).arg("serve"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains("no usable microphone") && line.contains("--input"),
        "{line}"
    );
}
