//! Streams a 16 kHz mono 16-bit WAV through Whisper tiny.en and prints every event with the
//! sample time it was emitted at: `cargo run -p voicerelay-asr --example stream_wav FILE [TAIL_MS]`
//! (TAIL_MS: silence appended before the end of stream, as `voicerelay eval asr` appends 1000).

extern crate voicerelay_asr as vr_asr;

use std::process::ExitCode;
use vr_asr::config::AsrConfig;
use vr_asr::models::whisper::load_configured;
use vr_asr::stream::WhisperStream;
use vr_asr::StreamingRecognizer;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: stream_wav FILE.wav");
        return ExitCode::FAILURE;
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut r = hound::WavReader::open(&path)?;
        let mut s: Vec<f32> = r
            .samples::<i16>()
            .map(|x| x.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>()?;
        let tail_ms: usize = std::env::args().nth(2).map_or(Ok(0), |a| a.parse())?;
        s.resize(s.len() + tail_ms * 16, 0.0);
        let cfg = AsrConfig {
            ..Default::default()
        };
        let store = vr_core::ModelStore::from_env()?;
        let mut vad_cfg = vr_asr::vad::VadConfig::default();
        if let Ok(v) = std::env::var("VR_VAD_MIN_SPEECH_MS") {
            vad_cfg.min_speech_ms = v.parse()?;
        }
        let vad = vr_asr::vad::SileroVad::from_store(&store, vad_cfg)?;
        let mut rec = WhisperStream::new(load_configured(&cfg, &store)?, cfg)?.with_vad(vad);
        let mut pos = 0usize;
        for c in s.chunks(1600) {
            pos += c.len();
            let t = std::time::Instant::now();
            let ev = rec.push(c)?;
            let dt = t.elapsed().as_secs_f64();
            if dt > 0.05 {
                println!(
                    "{:6.2}s (+{:4.0} ms) {:?}",
                    pos as f64 / 16000.0,
                    dt * 1e3,
                    rec.last_stats()
                );
            }
            for e in ev {
                println!(
                    "{:6.2}s (+{:4.0} ms) {:?} {e:?}",
                    pos as f64 / 16000.0,
                    dt * 1e3,
                    rec.last_stats()
                );
            }
        }
        for e in rec.finish()? {
            println!("finish {e:?}");
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
