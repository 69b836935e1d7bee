//! Seeded random-input harness (`vr_core::fuzz`) for the recogniser's loaders: the CTranslate2
//! `model.bin` reader (`Ct2Model::parse`) and the tokenizer JSON loader (`tokenizers`, as the
//! Moonshine and Whisper loaders call it), on mutations of small valid inputs and random bytes.
//! Checks: no panic; a parsed checkpoint's variables hold exactly their shape's bytes, convert
//! to tensors, its aliases resolve, and it writes back readable and unchanged; a malformed
//! tokenizer is an error, never a panic (`tokenizers` 0.21 panics inside its deserialiser on
//! some inputs: the loaders run it under `vr_core::catch_parser_panic`); a loaded one encodes
//! and decodes.
//!
//! `VOICERELAY_FUZZ_ITERS=1000000 VOICERELAY_FUZZ_SEED=$RANDOM cargo nextest run -p
//! voicerelay-asr --test fuzz --no-capture` for a long run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;
use voicerelay_asr::ct2::{Ct2DType, Ct2Model, Ct2Variable};
use vr_core::fuzz::{json_dict, mutate_bytes, run_with, Input, Rng};

fn ct2_seed() -> Vec<u8> {
    let var = |shape: Vec<usize>, dtype: Ct2DType, fill: u8| {
        let n = shape.iter().product::<usize>() * dtype.size();
        Ct2Variable {
            shape,
            dtype,
            data: (0..n).map(|i| fill.wrapping_add(i as u8) & 0x3F).collect(),
        }
    };
    let mut variables = BTreeMap::new();
    variables.insert(
        "encoder/conv1/weight".into(),
        var(vec![4, 2, 3], Ct2DType::F16, 1),
    );
    variables.insert("encoder/conv1/bias".into(), var(vec![4], Ct2DType::F32, 2));
    variables.insert("decoder/scale".into(), var(vec![2, 2], Ct2DType::I8, 3));
    variables.insert("decoder/heads".into(), var(vec![], Ct2DType::I32, 0));
    variables.insert("decoder/embed".into(), var(vec![3, 2], Ct2DType::BF16, 4));
    variables.insert("decoder/steps".into(), var(vec![2], Ct2DType::I16, 5));
    let mut aliases = BTreeMap::new();
    aliases.insert("decoder/proj".into(), "decoder/embed".into());
    Ct2Model {
        version: 6,
        spec: "WhisperSpec".into(),
        revision: 3,
        variables,
        aliases,
    }
    .to_bytes()
}

const CT2_TOKENS: &[&[u8]] = &[
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x06\x00\x00\x00",
    b"\x01\x00\x00\x00",
    b"\x08",
    b"\x09",
    b"\x05",
    b"\xff\xff",
    b"\xff",
];

static CT2_PARSED: AtomicU64 = AtomicU64::new(0);

fn check_ct2(input: &Input) {
    let Ok(m) = Ct2Model::parse(&input.0) else {
        return;
    };
    CT2_PARSED.fetch_add(1, Ordering::Relaxed);
    for (name, v) in &m.variables {
        assert_eq!(
            v.data.len(),
            v.shape.iter().product::<usize>() * v.dtype.size(),
            "{name}"
        );
        let _ = v.to_f32_tensor(&Device::Cpu);
        let _ = v.scalar_i64();
    }
    for alias in m.aliases.keys() {
        assert!(m.get(alias).is_some(), "alias {alias} does not resolve");
    }
    // Written back and read again, it is the same checkpoint (variables in name order).
    let again = Ct2Model::parse(&m.to_bytes()).expect("what was read writes back readable");
    assert_eq!(again.to_bytes(), m.to_bytes());
}

#[test]
fn fuzz_ct2_checkpoint() {
    let seed = ct2_seed();
    Ct2Model::parse(&seed).expect("the seed parses");
    // ~1.5 µs a case: 200 000 in about a third of a second.
    run_with(
        "ct2_checkpoint",
        200_000,
        |rng: &mut Rng| {
            if rng.chance(5) {
                return Input(rng.bytes(128));
            }
            let mut v = seed.clone();
            mutate_bytes(rng, &mut v, CT2_TOKENS);
            Input(v)
        },
        check_ct2,
    );
    // The mutations reach past the header: some still parse and go through every check.
    let parsed = CT2_PARSED.load(Ordering::Relaxed);
    assert!(parsed > 0, "no mutated checkpoint parsed");
    eprintln!("ct2_checkpoint: {parsed} mutated checkpoints parsed");
}

/// Two small tokenizers in the `tokenizers` JSON format: byte-level BPE (Whisper's and Qwen's
/// kind) and word-level with added special tokens.
const TOKENIZERS: [&str; 2] = [
    r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":6,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
"post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,
"vocab":{"h":0,"e":1,"l":2,"o":3,"he":4,"ll":5},"merges":["h e","l l"]}}"#,
    r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2,"one":3,"two":4},"unk_token":"[UNK]"}}"#,
];

/// Tokenizer keys and model types, beside `vr_core::fuzz::JSON_TOKENS`.
const TOKENIZER_TOKENS: &[&[u8]] = &[
    b"\"BPE\"",
    b"\"WordLevel\"",
    b"\"Unigram\"",
    b"\"merges\"",
    b"\"vocab\"",
    b"\"decoder\"",
];

static TOKENIZERS_LOADED: AtomicU64 = AtomicU64::new(0);

fn check_tokenizer(input: &Input) {
    // As the loaders call it: the library's own panics on malformed JSON become errors.
    // A refused file is a correct outcome; a loaded one must encode and decode.
    let Ok(Ok(tok)) = vr_core::catch_parser_panic(|| tokenizers::Tokenizer::from_bytes(&input.0))
    else {
        return;
    };
    TOKENIZERS_LOADED.fetch_add(1, Ordering::Relaxed);
    if let Ok(enc) = tok.encode("hello world, one two <|endoftext|>", true) {
        let _ = tok.decode(enc.get_ids(), false);
    }
    let _ = tok.decode(&[0, 1, 2, 3, 4, 5, 6, 7, u32::MAX], true);
}

fn tokenizer_case(rng: &mut Rng) -> Input {
    let mut v = rng.pick(&TOKENIZERS).as_bytes().to_vec();
    mutate_bytes(rng, &mut v, &json_dict(TOKENIZER_TOKENS));
    Input(v)
}

/// Found by `fuzz_tokenizer_json` (case 0xf169a70cc6f68710): a malformed `decoder` object made
/// `tokenizers` 0.21 panic inside its deserialiser. The loaders now get an error.
#[test]
fn regression_a_tokenizer_whose_decoder_panics_the_library_is_an_error() {
    let input = tokenizer_case(&mut Rng::new(0xf169_a70c_c6f6_8710));
    let guarded = vr_core::catch_parser_panic(|| tokenizers::Tokenizer::from_bytes(&input.0));
    assert!(guarded.is_err_and(|e| e.contains("expected")), "{input:?}");
}

#[test]
fn fuzz_tokenizer_json() {
    for t in TOKENIZERS {
        let tok = tokenizers::Tokenizer::from_bytes(t.as_bytes()).expect("seed tokenizer loads");
        assert!(!tok
            .encode("hello", false)
            .expect("encodes")
            .get_ids()
            .is_empty());
    }
    // A JSON parse of ~1 kB costs ~20 µs; 5 000 keep the suite's share small.
    run_with("tokenizer_json", 5_000, tokenizer_case, check_tokenizer);
    // The mutations must not all be refused at the first brace: some load and are exercised.
    let loaded = TOKENIZERS_LOADED.load(Ordering::Relaxed);
    eprintln!("tokenizer_json: {loaded} mutated tokenizers loaded");
    assert!(loaded > 0, "no mutated tokenizer loaded");
}
