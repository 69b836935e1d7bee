//! Fixture access shared by the Moonshine tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub const MODELS: [&str; 2] = ["tiny_layout", "odd_rotary"];

pub fn fixture_dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/moonshine")
        .join(model)
}

pub struct Clip {
    pub id: String,
    pub audio: Vec<f32>,
    pub greedy_ids: Vec<u32>,
}

pub struct Goldens {
    pub clips: Vec<Clip>,
    pub tensors: HashMap<String, Tensor>,
}

/// The corpus clip as 16 kHz mono f32 (int16 / 32768, as the generator read it).
pub fn read_clip(id: &str) -> Option<Vec<f32>> {
    let path = vr_core::paths::corpus_dir()
        .join("wav")
        .join(format!("{id}.wav"));
    let mut r = hound::WavReader::open(&path).ok()?;
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 16_000, 16)
    );
    Some(
        r.samples::<i16>()
            .map(|s| f32::from(s.expect("wav sample")) / 32768.0)
            .collect(),
    )
}

/// Goldens of one fixture model, or `None` when the corpus is absent (see `vr_core::prereq`).
pub fn goldens(model: &str) -> Option<Goldens> {
    let dir = fixture_dir(model);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("goldens.json")).expect("goldens.json"),
    )
    .expect("goldens.json parses");
    let mut clips = Vec::new();
    for c in meta["clips"].as_array().expect("clips") {
        let id = c["id"].as_str().expect("id").to_string();
        let Some(audio) = read_clip(&id) else {
            vr_core::prereq::missing(format_args!(
                "corpus clip {id} not found under {} (set VOICERELAY_CORPUS)",
                vr_core::paths::corpus_dir().display()
            ));
            return None;
        };
        assert_eq!(
            audio.len() as u64,
            c["samples"].as_u64().expect("samples"),
            "clip {id} length changed"
        );
        let greedy_ids = c["greedy_ids"]
            .as_array()
            .expect("greedy_ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        clips.push(Clip {
            id,
            audio,
            greedy_ids,
        });
    }
    let tensors = candle_core::safetensors::load(dir.join("goldens.safetensors"), &Device::Cpu)
        .expect("goldens.safetensors");
    Some(Goldens { clips, tensors })
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .flatten_all()
        .expect("flatten")
        .max(0)
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar")
}
