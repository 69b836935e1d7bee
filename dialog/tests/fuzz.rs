//! Seeded random-input harness (`vr_core::fuzz`) for the GGUF loader the local LLM engine uses
//! (`models::gguf::read_header` around candle's reader, then each tensor read as `from_gguf`
//! reads them; llama.cpp's own C loader is not fuzzed here: a crash there is not catchable), on
//! mutations of a small valid GGUF (written by candle's own writer: metadata of every kind, an
//! f32 and a Q8_0 tensor) and random bytes behind the magic. Checks: no panic and no allocation
//! sized by a lying header (an out-of-memory abort fails the whole test); every tensor the
//! header lists either reads with the shape it claims or is an error.
//!
//! `VOICERELAY_FUZZ_ITERS=200000 VOICERELAY_FUZZ_SEED=$RANDOM cargo nextest run -p
//! voicerelay-dialog --test fuzz --no-capture` for a long run.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use voicerelay_dialog::models::gguf::read_header;
use vr_core::fuzz::{mutate_bytes, run_with, Input, Rng};

fn gguf_seed() -> Vec<u8> {
    let dev = Device::Cpu;
    let a = Tensor::arange(0f32, 64.0, &dev)
        .and_then(|t| t.reshape((2, 32)))
        .expect("tensor");
    let f32_t = QTensor::quantize(&a, GgmlDType::F32).expect("f32");
    let q8_t = QTensor::quantize(&a, GgmlDType::Q8_0).expect("q8_0");
    let arch = gguf_file::Value::String("qwen2".into());
    let n = gguf_file::Value::U32(2);
    let f = gguf_file::Value::F32(1e-6);
    let list = gguf_file::Value::Array(vec![
        gguf_file::Value::String("<|im_end|>".into()),
        gguf_file::Value::String("<|endoftext|>".into()),
    ]);
    let flag = gguf_file::Value::Bool(true);
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(
        &mut out,
        &[
            ("general.architecture", &arch),
            ("qwen2.block_count", &n),
            ("qwen2.attention.layer_norm_rms_epsilon", &f),
            ("tokenizer.ggml.tokens", &list),
            ("general.flag", &flag),
        ],
        &[
            ("token_embd.weight", &f32_t),
            ("blk.0.attn_q.weight", &q8_t),
        ],
    )
    .expect("gguf write");
    out.into_inner()
}

const TOKENS: &[&[u8]] = &[
    b"GGUF",
    b"\x03\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x01\x00\x00\x00\x00\x00\x00\x00",
    b"\x09\x00\x00\x00",
    b"\x08\x00\x00\x00",
    b"\xff\xff\xff\x7f",
    b"\x00\x00\x80\x7f",
];

static TENSORS_READ: AtomicU64 = AtomicU64::new(0);

fn check(input: &Input) {
    let mut r = Cursor::new(&input.0);
    // As `LocalLlm::from_files` reads it.
    let Ok(content) = read_header(&mut r, input.0.len() as u64) else {
        return;
    };
    for (name, info) in &content.tensor_infos {
        if let Ok(t) = content.tensor(&mut r, name, &Device::Cpu) {
            assert_eq!(t.shape(), &info.shape, "{name}");
            TENSORS_READ.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn case(seed: &[u8], rng: &mut Rng) -> Input {
    if rng.chance(5) {
        let mut v = b"GGUF\x03\x00\x00\x00".to_vec();
        v.extend(rng.bytes(256));
        return Input(v);
    }
    let mut v = seed.to_vec();
    mutate_bytes(rng, &mut v, TOKENS);
    Input(v)
}

/// Found by `fuzz_gguf_loader` (case 0xbe12eb6bbfe0d00d): dimensions whose product overflows
/// panicked inside candle's header reader. Now a clear error.
#[test]
fn regression_overflowing_tensor_dimensions_are_an_error() {
    let input = case(&gguf_seed(), &mut Rng::new(0xbe12_eb6b_bfe0_d00d));
    let err = read_header(&mut Cursor::new(&input.0), input.0.len() as u64).expect_err("refused");
    assert!(err.contains("overflow"), "{err}");
}

/// Found by `fuzz_gguf_loader`: reading a tensor with no elements aborted the process (candle
/// casts the empty buffer's dangling pointer to its block type). Now refused in the header.
#[test]
fn regression_an_empty_tensor_is_refused_before_it_is_read() {
    let empty = Tensor::zeros(0, candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&empty, GgmlDType::F32).expect("f32");
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &[], &[("empty", &q)]).expect("write");
    let bytes = out.into_inner();
    let err = read_header(&mut Cursor::new(&bytes), bytes.len() as u64).expect_err("refused");
    assert!(err.contains("\"empty\" has no elements"), "{err}");
}

#[test]
fn fuzz_gguf_loader() {
    let seed = gguf_seed();
    check(&Input(seed.clone()));
    assert_eq!(
        TENSORS_READ.load(Ordering::Relaxed),
        2,
        "the seed's tensors read"
    );
    run_with(
        "gguf_loader",
        20_000,
        |rng: &mut Rng| case(&seed, rng),
        check,
    );
    let read = TENSORS_READ.load(Ordering::Relaxed);
    eprintln!("gguf_loader: {read} tensors read from mutated files");
    assert!(read > 2, "no mutated file's tensor read");
}
