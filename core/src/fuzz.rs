//! Seeded random-input harness on stable Rust, no fuzzing crate, for the crates' `tests/fuzz.rs`:
//! a splitmix64 generator makes inputs (random bytes, mutations of valid inputs), [`run`] feeds
//! them to a check and re-raises a panic with the case's seed and input.
//!
//! Each target runs `VOICERELAY_FUZZ_ITERS` iterations (default 20 000, or the target's own
//! default) from `VOICERELAY_FUZZ_SEED` (default fixed, so the suite is deterministic); a failing
//! case prints its input and `VOICERELAY_FUZZ_CASE=<seed>`, which replays that case alone.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

pub struct Rng(crate::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(crate::rng::SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (`0` for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.usize(max_len + 1);
        (0..n).map(|_| self.byte()).collect()
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.usize(xs.len())]
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// Runs `check` on `iterations` inputs from `gen`; a panic is re-raised with the case's seed and
/// input. Returns the iterations per second.
pub fn run<I: Debug>(name: &str, gen: impl Fn(&mut Rng) -> I, check: impl Fn(&I)) -> f64 {
    run_with(name, 20_000, gen, check)
}

/// [`run`] with its own default iteration count, for targets whose one case costs milliseconds
/// (a decoder over a file): the suite's budget is time, not iterations.
pub fn run_with<I: Debug>(
    name: &str,
    default_iterations: u64,
    gen: impl Fn(&mut Rng) -> I,
    check: impl Fn(&I),
) -> f64 {
    let iterations = env_u64("VOICERELAY_FUZZ_ITERS").unwrap_or(default_iterations);
    let base = env_u64("VOICERELAY_FUZZ_SEED").unwrap_or(0x5EED_2026);
    let mut seeds = crate::rng::SplitMix64::new(base ^ name_hash(name));
    let only = env_u64("VOICERELAY_FUZZ_CASE");
    let t0 = Instant::now();
    let mut done = 0u64;
    for i in 0..iterations {
        let case = match only {
            Some(c) => c,
            None => seeds.next_u64(),
        };
        let input = gen(&mut Rng::new(case));
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz {name}: iteration {i} failed (replay: VOICERELAY_FUZZ_CASE={case:#x}): \
                 {msg}\ninput: {input:#?}"
            );
        }
        done += 1;
        if only.is_some() {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = done as f64 / secs.max(1e-9);
    eprintln!("fuzz {name}: {done} iterations in {secs:.2} s = {rate:.0}/s (seed {base:#x})");
    rate
}

/// Bytes shown as text when they are UTF-8, else as hex.
pub struct Input(pub Vec<u8>);

impl Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => {
                write!(f, "hex:")?;
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Generic byte-level mutations: flip, insert, delete a range, duplicate a range, truncate,
/// splice in a token from `dict`.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]]) {
    let n = 1 + rng.usize(4);
    for _ in 0..n {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.usize(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.usize(len + 1);
                data.insert(i, rng.byte());
            }
            2 if len > 0 => {
                let a = rng.usize(len);
                let b = (a + 1 + rng.usize(16)).min(len);
                data.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.usize(len);
                let b = (a + 1 + rng.usize(32)).min(len);
                let chunk = data[a..b].to_vec();
                let at = rng.usize(data.len() + 1);
                data.splice(at..at, chunk);
            }
            4 => data.truncate(rng.usize(len + 1)),
            _ if !dict.is_empty() => {
                let tok = rng.pick(dict);
                let at = rng.usize(len + 1);
                data.splice(at..at, tok.iter().copied());
            }
            _ => {}
        }
    }
}

/// JSON syntax and edge values for [`mutate_bytes`] on JSON inputs; targets add their own keys.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"null",
    b"true",
    b"-0",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\\udfff\\ud800",
    b"\"type\"",
    b"\xff",
    b"\xe2\x82",
    "\u{e9}\u{20ac}\u{1f600}".as_bytes(),
    b" \t\r\n",
];

/// `JSON_TOKENS` and a target's own tokens, as one dictionary.
pub fn json_dict<'a>(extra: &[&'a [u8]]) -> Vec<&'a [u8]> {
    JSON_TOKENS
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}
