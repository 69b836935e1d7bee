//! The two in-process LLM engines side by side on the same Qwen2.5-0.5B Q4_K_M file, in one run:
//! fresh prefill of the same ~100-token prompt and greedy decoding, as the shipped config runs
//! them (`llm.prefill_chunk`; candle with its dense f32 prefill), llama.cpp on 1 thread (the
//! shipped `llm.threads`) and on 2. Rounds alternate
//! the engines and the medians are reported, so load from other processes hits both alike; the
//! load average before and after is printed with the build profile.
//!
//! ```sh
//! cargo bench --workspace --bench llm_engines                  # bench profile (= release)
//! cargo bench --workspace --bench llm_engines --profile dev    # the build tests/scripts/start use
//! ```
//! Needs the model store (scripts/bootstrap).

use std::time::{Duration, Instant};
use voicerelay_dialog::llm::llamacpp::{LlamaCppLlm, LlamaCppModel, LlamaCppOptions};
use voicerelay_dialog::llm::local::{LocalLlm, PrefillStats};
use voicerelay_dialog::llm::template::PromptEnd;
use voicerelay_dialog::{CancelToken, ChatMessage, Finished, GenerateRequest, LlmConfig, LlmEvent};

const ROUNDS: usize = 5;
const DECODE_TOKENS: usize = 32;

/// The same operations on either engine.
trait Bench {
    fn reset(&mut self);
    fn sync(&mut self, prompt: &[u32]) -> PrefillStats;
    fn generate(&mut self, req: &GenerateRequest, count: &mut usize) -> Finished;
    fn prompt(&self, req: &GenerateRequest) -> Vec<u32>;
}

impl Bench for LocalLlm {
    fn reset(&mut self) {
        LocalLlm::reset(self).expect("reset");
    }
    fn sync(&mut self, prompt: &[u32]) -> PrefillStats {
        self.sync_prompt(prompt, &|| false).expect("prefill")
    }
    fn generate(&mut self, req: &GenerateRequest, count: &mut usize) -> Finished {
        LocalLlm::generate(self, req, &CancelToken::new(), &mut |ev| {
            *count += usize::from(matches!(ev, LlmEvent::Token(_)));
            true
        })
        .expect("generate")
    }
    fn prompt(&self, req: &GenerateRequest) -> Vec<u32> {
        self.prompt_tokens(
            &req.messages,
            PromptEnd::Assistant {
                prefix: &req.assistant_prefix,
            },
        )
        .expect("prompt")
    }
}

impl Bench for LlamaCppLlm<'_> {
    fn reset(&mut self) {
        LlamaCppLlm::reset(self);
    }
    fn sync(&mut self, prompt: &[u32]) -> PrefillStats {
        self.sync_prompt(prompt, &|| false).expect("prefill")
    }
    fn generate(&mut self, req: &GenerateRequest, count: &mut usize) -> Finished {
        LlamaCppLlm::generate(self, req, &CancelToken::new(), &mut |ev| {
            *count += usize::from(matches!(ev, LlmEvent::Token(_)));
            true
        })
        .expect("generate")
    }
    fn prompt(&self, req: &GenerateRequest) -> Vec<u32> {
        self.prompt_tokens(
            &req.messages,
            PromptEnd::Assistant {
                prefix: &req.assistant_prefix,
            },
        )
        .expect("prompt")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unavailable".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A second turn of a voice conversation (~100 tokens with the template).
fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(
            "You are Relay, a friendly voice assistant. Answer in one or two short spoken sentences. \
             Do not use lists, markdown or emoji. If you are unsure, say so briefly.",
        ),
        ChatMessage::user(
            "Hi! I'm planning a trip to Lisbon next spring. What's the weather usually like there in April?",
        ),
        ChatMessage::assistant(
            "April in Lisbon is mild and pleasant, usually around 18 to 20 degrees, with some showers now and then.",
        ),
        ChatMessage::user("Great. And which neighbourhood would you recommend staying in?"),
    ]
}

fn main() {
    // Criterion-style flags (`--bench`) are passed by cargo; nothing to parse.
    let t: toml::Table = include_str!("../../configs/default.toml")
        .parse()
        .expect("default.toml");
    let cfg: LlmConfig = t["llm"].clone().try_into().expect("[llm]");
    let store = vr_core::ModelStore::from_env().expect("model store");
    let profile = if cfg!(debug_assertions) {
        "dev (opt-level 1 for our crates, 3 for dependencies; llama.cpp CMake Release)"
    } else {
        "release/bench (opt-level 3; llama.cpp CMake Release)"
    };
    println!("profile: {profile}");
    println!("load average before: {}", loadavg());

    let mut candle =
        LocalLlm::from_store(&store, &cfg.model, &cfg.local_options()).expect("candle model");
    let ll_model = LlamaCppModel::from_store(&store, &cfg.model).expect("llama.cpp model");
    // llama.cpp on 1 thread (the shipped `llm.threads`) and on 2: on a shared 2-core machine the
    // second compute thread can cost more at ggml's barriers (spinning for a descheduled peer)
    // than it adds.
    let with_threads = |threads| {
        ll_model
            .session(&LlamaCppOptions {
                threads,
                ..cfg.llamacpp_options()
            })
            .expect("llama.cpp context")
    };
    let mut llama1 = with_threads(1);
    let mut llama = with_threads(2);
    println!("candle:    {}", candle.describe());
    println!("llama.cpp: {}", llama1.describe());
    println!("llama.cpp: {}", llama.describe());

    let prefill_req = GenerateRequest::new(conversation());
    let prompt = Bench::prompt(&candle, &prefill_req);
    assert_eq!(
        prompt,
        Bench::prompt(&llama1, &prefill_req),
        "both engines feed the same ids"
    );
    let mut decode_req = GenerateRequest::new(conversation());
    decode_req.max_tokens = DECODE_TOKENS;
    // A prompt that does not end the answer early: the continuation of a story.
    decode_req.assistant_prefix = "Here is a long story. Once upon a time".into();
    let decode_prompt = Bench::prompt(&candle, &decode_req);

    let names = [
        "candle (dense f32 prefill, rayon pool)".to_string(),
        "llama.cpp, 1 thread".to_string(),
        "llama.cpp, 2 threads".to_string(),
    ];
    let mut engines: [&mut dyn Bench; 3] = [&mut candle, &mut llama1, &mut llama];
    const ARMS: usize = 3;
    // Warm-up: first touches of the weights (mmap faults, repacking, allocator growth).
    for e in engines.iter_mut() {
        e.reset();
        e.sync(&prompt);
    }
    let mut prefill: [Vec<f64>; ARMS] = Default::default();
    let mut prefill_s: [Vec<f64>; ARMS] = Default::default();
    let mut decode: [Vec<f64>; ARMS] = Default::default();
    for round in 0..ROUNDS {
        // Rotate which engine goes first so none always follows the same one.
        let order: Vec<usize> = (0..ARMS).map(|k| (k + round) % ARMS).collect();
        for &i in &order {
            let e = &mut engines[i];
            e.reset();
            let t0 = Instant::now();
            let s = e.sync(&prompt);
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!((s.computed, s.complete), (prompt.len(), true));
            prefill[i].push(prompt.len() as f64 / dt);
            prefill_s[i].push(dt);
        }
        for &i in &order {
            let e = &mut engines[i];
            e.sync(&decode_prompt);
            let mut n = 0;
            let f = e.generate(&decode_req, &mut n);
            assert_eq!(
                n, DECODE_TOKENS,
                "the story ended early; rate would be overstated"
            );
            // The first token comes from the cached prompt's logits; each later one costs a
            // forward pass.
            let d = f
                .stats
                .total
                .saturating_sub(f.stats.time_to_first_token)
                .max(Duration::from_micros(1));
            decode[i].push((n - 1) as f64 / d.as_secs_f64());
        }
        let cells: Vec<String> = (0..ARMS)
            .map(|i| format!("{:.1}/{:.2}", prefill[i][round], decode[i][round]))
            .collect();
        println!(
            "round {round}: prefill/decode tok/s {} (candle, llama.cpp 1t, llama.cpp 2t), load {}",
            cells.join("  "),
            loadavg()
        );
    }
    let p = prefill.map(median);
    let ps = prefill_s.map(median);
    let d = decode.map(median);
    println!();
    println!(
        "SUMMARY {} rounds, prompt {} tokens, decode {} tokens, medians; load average after: {}",
        ROUNDS,
        prompt.len(),
        DECODE_TOKENS,
        loadavg()
    );
    println!(
        "| engine | fresh prefill ({} tok) | prefill tok/s | decode tok/s | vs candle (prefill, decode) |",
        prompt.len()
    );
    println!("|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.3} s | {:.1} | {:.2} | {:.2}x, {:.2}x |",
            ps[i],
            p[i],
            d[i],
            p[i] / p[0],
            d[i] / d[0]
        );
    }
}
