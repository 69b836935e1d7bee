//! Tuning aid for streaming Whisper (tune on `dev`, report on `test`): runs the streaming
//! recogniser with the VAD over a corpus split on the simulated real-time clock of
//! [`run_stream`] once per configuration given, and prints WER, RTF and latency percentiles.
//!
//! `cargo run -p voicerelay-evals --example whisper_stream_sweep -- dev pad_ms=0 pad_ms=2000,max_window_ms=8000`
//!
//! Each argument after the split is one configuration: comma-separated `key=value` overrides of
//! `[asr]` keys (`update_interval_ms first_update_ms max_window_ms agreement pad_ms min_encode_ms
//! final_silence_ms pre_roll_ms`) or `vad.min_silence_ms`; an empty string is the default
//! configuration. `encoder` instead times the encoder on 1-30 s inputs.

extern crate voicerelay_evals as vr_evals;

use std::process::ExitCode;
use vr_asr::config::AsrConfig;
use vr_asr::models::whisper::load_configured;
use vr_asr::stream::WhisperStream;
use vr_asr::vad::{SileroVad, VadConfig};
use vr_asr::StreamingRecognizer;
use vr_evals::corpus::{Corpus, Split};
use vr_evals::normalize::normalize;
use vr_evals::streaming::{percentile, run_stream};
use vr_evals::wer::{word_errors, ErrorCounts};

fn configure(spec: &str) -> Result<(AsrConfig, VadConfig), String> {
    let mut a = AsrConfig::default();
    let mut v = VadConfig::default();
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, val) = kv.split_once('=').ok_or(format!("not key=value: {kv}"))?;
        let n: u32 = val.parse().map_err(|_| format!("not a number: {kv}"))?;
        match k {
            "update_interval_ms" => a.update_interval_ms = n,
            "first_update_ms" => a.first_update_ms = n,
            "max_window_ms" => a.max_window_ms = n,
            "agreement" => a.agreement = n,
            "pad_ms" => a.pad_ms = n,
            "min_encode_ms" => a.min_encode_ms = n,
            "final_silence_ms" => a.final_silence_ms = n,
            "pre_roll_ms" => a.pre_roll_ms = n,
            "vad.min_silence_ms" => v.min_silence_ms = n,
            _ => return Err(format!("unknown key {k}")),
        }
    }
    a.validate().map_err(|e| e.to_string())?;
    v.validate().map_err(|e| e.to_string())?;
    Ok((a, v))
}

fn read_wav(path: &std::path::Path) -> Result<Vec<f32>, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    r.samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn p(v: &[f64], q: f64) -> String {
    percentile(v, q).map_or("-".into(), |x| format!("{x:.3}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<(), String> {
        let split = match args.first().map(String::as_str) {
            Some("dev") => Split::Dev,
            Some("test") => Split::Test,
            Some("all") => Split::All,
            _ => return Err("usage: whisper_stream_sweep dev|test|all [CONFIG ...]".into()),
        };
        let store = vr_core::ModelStore::from_env().map_err(|e| e.to_string())?;
        let corpus = Corpus::open_default()
            .map_err(|e| e.to_string())?
            .ok_or("corpus not found (set VOICERELAY_CORPUS)")?;
        let utts: Vec<_> = corpus.split(split).cloned().collect();
        let audio = utts
            .iter()
            .map(|u| read_wav(&corpus.wav_path(u)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut specs: Vec<String> = args[1..].to_vec();
        if specs.is_empty() {
            specs.push(String::new());
        }
        for spec in specs {
            if spec == "encoder" {
                let mut m =
                    load_configured(&AsrConfig::default(), &store).map_err(|e| e.to_string())?;
                for secs in [1usize, 2, 4, 6, 8, 10, 12, 30] {
                    let n = secs * 100;
                    let mel = vec![0.1f32; 80 * n];
                    m.encode(&mel, n).map_err(|e| e.to_string())?;
                    let t = std::time::Instant::now();
                    for _ in 0..3 {
                        m.encode(&mel, n).map_err(|e| e.to_string())?;
                    }
                    println!(
                        "encoder {secs:>2} s: {:.1} ms",
                        t.elapsed().as_secs_f64() * 1e3 / 3.0
                    );
                }
                continue;
            }
            let (cfg, vcfg) = configure(&spec)?;
            let vad = SileroVad::from_store(&store, vcfg).map_err(|e| e.to_string())?;
            let model = load_configured(&cfg, &store).map_err(|e| e.to_string())?;
            let mut rec = WhisperStream::new(model, cfg)
                .map_err(|e| e.to_string())?
                .with_vad(vad);
            let mut errs = ErrorCounts::default();
            let (mut lat, mut first, mut fin) = (Vec::new(), Vec::new(), Vec::new());
            let (mut compute, mut total) = (0.0, 0.0);
            for (u, s) in utts.iter().zip(&audio) {
                rec.reset();
                let r = run_stream(&mut rec, s, 1600).map_err(|e| e.to_string())?;
                let (rf, h) = (normalize(&u.text), normalize(&r.text));
                let e = word_errors(&rf, &h);
                if std::env::var_os("SWEEP_VERBOSE").is_some() {
                    println!("  {:<28} {:>2} err | {h}", u.id, e.errors());
                }
                errs = errs + e;
                lat.extend(r.word_latencies);
                first.extend(r.first_partial);
                fin.extend(r.finalisation);
                compute += r.compute_s;
                total += r.audio_s;
            }
            println!(
                "[{spec}] WER {:.2}% ({}/{}) RTF {:.3} | word lat P50 {} P90 {} | first P50 {} P90 {} | fin P50 {} P90 {}",
                errs.rate() * 100.0,
                errs.errors(),
                errs.reference_len,
                compute / total,
                p(&lat, 50.0),
                p(&lat, 90.0),
                p(&first, 50.0),
                p(&first, 90.0),
                p(&fin, 50.0),
                p(&fin, 90.0),
            );
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
