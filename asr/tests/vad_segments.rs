//! The VAD segmenter on real audio: speech framed by silence gives one start and one end near the
//! utterance's true edges; digital silence and white noise give no speech at all.
#[path = "vad_common/mod.rs"]
mod common;

use rand::{Rng, SeedableRng};
use voicerelay_asr::vad::{SileroVad, VadConfig, VadEvent};
use vr_core::SampleIndex;

const RATE: usize = 16_000;

/// First and last sample of the utterance by an independent measure: 10 ms frames whose energy
/// is within 35 dB of the loudest frame.
fn energy_edges(audio: &[f32]) -> (usize, usize) {
    let frame = RATE / 100;
    let db: Vec<f32> = audio
        .chunks_exact(frame)
        .map(|f| 10.0 * (f.iter().map(|s| s * s).sum::<f32>() / frame as f32 + 1e-12).log10())
        .collect();
    let max = db.iter().copied().fold(f32::MIN, f32::max);
    let first = db.iter().position(|&d| d > max - 35.0).unwrap();
    let last = db.iter().rposition(|&d| d > max - 35.0).unwrap();
    (first * frame, (last + 1) * frame)
}

fn events_for(vad: &mut SileroVad, audio: &[f32], block: usize) -> Vec<VadEvent> {
    reported(vad, audio, block)
        .into_iter()
        .map(|(e, _)| e)
        .collect()
}

/// Each event with the stream position when `push` returned it.
fn reported(vad: &mut SileroVad, audio: &[f32], block: usize) -> Vec<(VadEvent, u64)> {
    let mut out = Vec::new();
    for b in audio.chunks(block) {
        let events = vad.push(b).unwrap();
        out.extend(events.into_iter().map(|e| (e, vad.position().0)));
    }
    out.extend(vad.finish().into_iter().map(|e| (e, vad.position().0)));
    out
}

fn ms(samples: i64) -> i64 {
    samples * 1000 / RATE as i64
}

#[test]
fn speech_between_silences_starts_and_ends_near_its_edges() {
    // Asserts real speech edges: without the corpus this fails, never passes.
    let corpus = common::corpus().expect("speech corpus (scripts/bootstrap)");
    let model = common::model();
    let config = VadConfig::default();
    let mut vad = SileroVad::new(model, config.clone()).unwrap();
    // Dev-split utterances without long internal pauses (longest gap ≤ 0.1 s by energy).
    for id in [
        "ls_1089-134691-0000",
        "ls_1272-128104-0000",
        "ls_1089-134686-0002",
        "lj_LJ002-0020",
    ] {
        let utt = common::read_wav(&corpus, id);
        let lead = RATE;
        let mut audio = vec![0.0f32; lead];
        audio.extend_from_slice(&utt);
        audio.extend(std::iter::repeat_n(0.0f32, RATE * 3 / 2));
        let (on, off) = energy_edges(&utt);
        let (true_start, true_end) = ((lead + on) as i64, (lead + off) as i64);

        vad.reset().unwrap();
        let all = reported(&mut vad, &audio, 320);
        let (hints, with_time): (Vec<_>, Vec<_>) = all
            .iter()
            .partition(|(e, _)| matches!(e, VadEvent::Pause { .. }));
        let events: Vec<VadEvent> = with_time.iter().map(|&(e, _)| e).collect();
        println!(
            "{id}: energy edges {:.3}..{:.3} s, events {:?}",
            true_start as f64 / RATE as f64,
            true_end as f64 / RATE as f64,
            events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()
        );
        let [VadEvent::SpeechStarted { at: SampleIndex(s) }, VadEvent::SpeechEnded { at: SampleIndex(e) }] =
            events[..]
        else {
            panic!("{id}: expected exactly one start and one end, got {events:?}");
        };
        let (s, e) = (s as i64, e as i64);
        let start_err = ms(s - true_start);
        let end_err = ms(e - true_end);
        println!("{id}: start error {start_err} ms, end error {end_err} ms");
        // The start includes 30 ms of padding and chunk (32 ms) granularity; the end adds the
        // padding to the first silent chunk.
        assert!(
            (-150..=150).contains(&start_err),
            "{id}: start off by {start_err} ms"
        );
        assert!(
            (-150..=250).contains(&end_err),
            "{id}: end off by {end_err} ms"
        );
        // Report delay (what a recogniser waits for): the start once `min_speech_ms` has passed,
        // the end once the hangover has; each plus chunk and push-block granularity.
        let slack = 512 + 320;
        let start_delay = with_time[0].1 as i64 - s;
        let end_delay = with_time[1].1 as i64 - e;
        println!(
            "{id}: start reported {} ms after its position, end {} ms after",
            ms(start_delay),
            ms(end_delay)
        );
        let min_speech = i64::from(config.min_speech_ms) * 16;
        let min_silence = i64::from(config.min_silence_ms) * 16;
        let pad = i64::from(config.speech_pad_ms) * 16;
        assert!(
            start_delay <= pad + min_speech + slack,
            "{id}: start reported late"
        );
        assert!(
            end_delay <= min_silence - pad + slack,
            "{id}: end reported late"
        );
        assert!(end_delay >= 0 && e <= audio.len() as i64);
        // The pause hint names the same end, `pause_hint_ms` into the silence: that much
        // earlier than the end itself, which waits for the whole hangover.
        let last_hint = hints.last().expect("a pause hint before the speech end");
        assert_eq!(last_hint.0.at().0 as i64, e, "{id}: hint names another end");
        let hint_delay = last_hint.1 as i64 - e;
        let pause_hint = i64::from(config.pause_hint_ms) * 16;
        println!("{id}: pause hinted {} ms after the end", ms(hint_delay));
        assert!(
            hint_delay <= pause_hint - pad + slack && hint_delay < end_delay,
            "{id}: hint late ({} ms, end {} ms)",
            ms(hint_delay),
            ms(end_delay)
        );
    }
}

#[test]
fn digital_silence_and_white_noise_are_not_speech() {
    let model = common::model();
    let mut vad = SileroVad::new(model, VadConfig::default()).unwrap();

    let silence = vec![0.0f32; RATE * 10];
    let events = events_for(&mut vad, &silence, 512);
    assert!(events.is_empty(), "silence: {events:?}");

    // White Gaussian noise at -30 dBFS RMS (full scale = 1.0).
    vad.reset().unwrap();
    let rms = 10f32.powf(-30.0 / 20.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let noise: Vec<f32> = (0..RATE * 10)
        .map(|_| {
            // Box-Muller.
            let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
            let u2: f32 = rng.gen_range(0.0..1.0);
            rms * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    let measured = (noise.iter().map(|s| s * s).sum::<f32>() / noise.len() as f32).sqrt();
    assert!((20.0 * measured.log10() + 30.0).abs() < 0.2);
    let mut max_prob = 0f32;
    let mut events = Vec::new();
    for b in noise.chunks(512) {
        events.extend(vad.push(b).unwrap());
        max_prob = vad
            .chunk_probabilities()
            .iter()
            .copied()
            .fold(max_prob, f32::max);
    }
    events.extend(vad.finish());
    println!("white noise -30 dBFS: max speech probability {max_prob:.4}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechStarted { .. })),
        "noise: {events:?}"
    );
}

#[test]
fn truncated_or_corrupted_model_file_is_a_clear_error() {
    let store = vr_core::ModelStore::from_env().unwrap();
    let path = store
        .file(
            voicerelay_asr::models::silero::STORE_MODEL,
            voicerelay_asr::models::silero::STORE_FILE,
        )
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let cut = dir.path().join("truncated.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = SileroVad::load(&cut, VadConfig::default())
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("truncated.bin") && e.contains("truncated: data of tensor"),
        "{e}"
    );

    let bad = dir.path().join("corrupted.bin");
    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"RIFF");
    std::fs::write(&bad, &b).unwrap();
    let e = SileroVad::load(&bad, VadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("corrupted.bin") && e.contains("not a whisper.cpp ggml file"),
        "{e}"
    );

    let e = SileroVad::load(&dir.path().join("absent.bin"), VadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.bin"), "{e}");

    let e = SileroVad::load(
        &path,
        VadConfig {
            end_threshold: 0.9,
            ..VadConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("vad.end_threshold"), "{e}");
}
