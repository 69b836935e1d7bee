//! Seeded random-input harness (`vr_core::fuzz`) for the audio file loaders: WAV (hound) and
//! FLAC (claxon) through `read_audio_file`, on mutations of small valid files (16-bit and float
//! WAV written by `WavSink`/hound, FLAC made by GStreamer's `flacenc`) and on random bytes
//! behind a valid magic. Checks: no panic, no allocation sized by a lying header (a case that
//! runs out of memory aborts the whole test, so it fails too); an `Ok` has whole frames of
//! finite samples, and no more of them than the file could hold.
//!
//! `VOICERELAY_FUZZ_ITERS=200000 VOICERELAY_FUZZ_SEED=$RANDOM cargo nextest run -p
//! voicerelay-capture --test fuzz --no-capture` for a long run.

use std::path::Path;

use voicerelay_capture::file::read_audio_file;
use vr_core::fuzz::{mutate_bytes, run_with, Input, Rng};

/// File decodes cost ~0.2 ms each: 10 000 per format is about 2 s of the suite.
const ITERATIONS: u64 = 10_000;

const TOKENS: &[&[u8]] = &[
    b"RIFF",
    b"WAVE",
    b"fmt ",
    b"data",
    b"LIST",
    b"fLaC",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xf8",
    b"\x01\x00",
    b"\x03\x00",
    b"\xfe\xff",
];

fn wav_seed(float: bool, channels: u16) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seed.wav");
    let spec = hound::WavSpec {
        channels,
        sample_rate: 16_000,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("wav writer");
    for i in 0..160 * usize::from(channels) {
        let x = (i as f32 * 0.05).sin() * 0.5;
        if float {
            w.write_sample(x).expect("sample");
        } else {
            w.write_sample((x * 32767.0) as i16).expect("sample");
        }
    }
    w.finalize().expect("finalize");
    std::fs::read(&path).expect("read seed")
}

/// A real FLAC stream (GStreamer's encoder, as any FLAC a user brings would come from a real
/// encoder): 20 ms of a tone, 16 kHz mono, 16-bit.
fn flac_seed() -> Vec<u8> {
    use gstreamer::prelude::*;
    gstreamer::init().expect("gstreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seed.flac");
    let pipeline = gstreamer::parse::launch(&format!(
        "audiotestsrc num-buffers=2 samplesperbuffer=160 ! \
         audio/x-raw,format=S16LE,rate=16000,channels=1 ! flacenc ! filesink location={}",
        path.display()
    ))
    .expect("flacenc pipeline (gstreamer1.0-plugins-good)");
    pipeline
        .set_state(gstreamer::State::Playing)
        .expect("playing");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gstreamer::ClockTime::from_seconds(10),
            &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
        )
        .expect("EOS within 10 s");
    assert_eq!(msg.type_(), gstreamer::MessageType::Eos, "{msg:?}");
    pipeline.set_state(gstreamer::State::Null).expect("null");
    let bytes = std::fs::read(&path).expect("read seed");
    assert_eq!(&bytes[..4], b"fLaC");
    bytes
}

fn check(dir: &Path, input: &Input) {
    let path = dir.join(format!("case-{:?}", std::thread::current().id()));
    std::fs::write(&path, &input.0).expect("write case");
    if let Ok((format, samples)) = read_audio_file(&path) {
        let ch = usize::from(format.channels);
        assert!(ch > 0 && format.rate.hz() > 0, "{format:?}");
        assert_eq!(samples.len() % ch, 0, "a partial frame");
        // Every stored sample takes at least one bit, so never more samples than 8 per byte.
        assert!(
            samples.len() <= 8 * input.0.len(),
            "{} samples from {} bytes",
            samples.len(),
            input.0.len()
        );
        assert!(samples.iter().all(|s| s.is_finite()), "a non-finite sample");
    }
}

fn cases<'a>(seeds: &'a [Vec<u8>], magic: &'static [u8]) -> impl Fn(&mut Rng) -> Input + 'a {
    move |rng| {
        if rng.chance(10) {
            // Random bytes behind a valid magic: the header parser's own input space.
            let mut v = magic.to_vec();
            v.extend(rng.bytes(256));
            return Input(v);
        }
        let mut v = rng.pick(seeds).clone();
        mutate_bytes(rng, &mut v, TOKENS);
        Input(v)
    }
}

#[test]
fn fuzz_wav_loader() {
    let seeds = vec![wav_seed(false, 1), wav_seed(true, 1), wav_seed(false, 2)];
    for s in &seeds {
        check(
            tempfile::tempdir().expect("tempdir").path(),
            &Input(s.clone()),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    run_with("wav_loader", ITERATIONS, cases(&seeds, b"RIFF"), |i| {
        check(dir.path(), i)
    });
}

#[test]
fn fuzz_flac_loader() {
    let seeds = vec![flac_seed()];
    let dir = tempfile::tempdir().expect("tempdir");
    // The seed itself decodes: 320 samples of 16 kHz mono.
    std::fs::write(dir.path().join("seed.flac"), &seeds[0]).expect("write");
    let (format, samples) = read_audio_file(&dir.path().join("seed.flac")).expect("seed decodes");
    assert_eq!(
        (format.rate.hz(), format.channels, samples.len()),
        (16_000, 1, 320)
    );
    run_with("flac_loader", ITERATIONS, cases(&seeds, b"fLaC"), |i| {
        check(dir.path(), i)
    });
}

/// Found by `fuzz_flac_loader`: a STREAMINFO claiming 2^36 − 1 samples made `read_all` reserve
/// 467 GB up front and abort the process. Now the claim is only a bounded hint.
#[test]
fn regression_flac_header_claiming_2_to_the_36_samples_does_not_abort() {
    let mut bytes = flac_seed();
    // STREAMINFO's 36-bit total-samples field: the low nibble of byte 21 and bytes 22..26.
    bytes[21] |= 0x0F;
    bytes[22..26].fill(0xFF);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("liar.flac");
    std::fs::write(&path, &bytes).expect("write");
    let (_, samples) = read_audio_file(&path).expect("the frames themselves are intact");
    assert_eq!(samples.len(), 320);
}

/// Found by `fuzz_wav_loader`: a float WAV holding NaN or infinity handed it on to the resampler
/// and the models. Now it is a clear error naming where.
#[test]
fn regression_float_wav_with_a_nan_sample_is_a_clear_error() {
    let mut bytes = wav_seed(true, 1);
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk")
        + 8;
    bytes[data + 40..data + 44].copy_from_slice(&f32::NAN.to_le_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nan.wav");
    std::fs::write(&path, &bytes).expect("write");
    let err = read_audio_file(&path).expect_err("NaN refused");
    assert!(
        err.to_string()
            .contains("non-finite float sample (NaN) after 10 samples"),
        "{err}"
    );
}
