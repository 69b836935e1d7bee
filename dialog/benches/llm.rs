//! Local LLM latency: time to first token for the second turn of a conversation with a fresh
//! prefill vs with the first turn's KV cache reused, decoding speed, and the reuse/fresh ratio
//! (the baseline is measured in the same run, so the ratio holds on a noisy machine).
//!
//! `cargo bench -p voicerelay-dialog --bench llm` (needs the model store: scripts/bootstrap).
//! On a shared machine, `cargo bench --profile dev -p voicerelay-dialog --bench llm -- summary`
//! reuses the debug build (dependencies are optimised there too) and runs only the interleaved
//! ratio summary (the criterion groups are filtered out by name).

use criterion::{criterion_group, Criterion, Throughput};
use std::time::{Duration, Instant};
use voicerelay_dialog::llm::local::{LocalLlm, LocalOptions};
use voicerelay_dialog::llm::template::PromptEnd;
use voicerelay_dialog::{CancelToken, ChatMessage, GenerateRequest, LlmEvent};

struct Setup {
    llm: LocalLlm,
    /// Turn 1 (prompt + answer) as cached after the first exchange.
    turn1: Vec<u32>,
    turn2: GenerateRequest,
}

fn setup() -> Setup {
    let store = vr_core::ModelStore::from_env().expect("model store");
    let mut llm = LocalLlm::from_store(&store, "qwen2.5-0.5b", &LocalOptions::default())
        .expect("load qwen2.5-0.5b");
    let mut conv = vec![
        ChatMessage::system(
            "You are Relay, a friendly voice assistant. Answer in one or two short spoken sentences. \
             Do not use lists, markdown or emoji. If you are unsure, say so briefly.",
        ),
        ChatMessage::user("Hi! I'm planning a trip to Lisbon next spring. What's the weather usually like there in April?"),
    ];
    let mut req = GenerateRequest::new(conv.clone());
    req.max_tokens = 40;
    let mut answer = String::new();
    llm.generate(&req, &CancelToken::new(), &mut |ev| {
        if let LlmEvent::Token(t) = ev {
            answer.push_str(&t.text);
        }
        true
    })
    .expect("turn 1");
    let turn1 = llm.cached_tokens().to_vec();
    conv.push(ChatMessage::assistant(answer));
    conv.push(ChatMessage::user(
        "Great. And which neighbourhood would you recommend staying in?",
    ));
    let mut turn2 = GenerateRequest::new(conv);
    turn2.max_tokens = 1;
    Setup { llm, turn1, turn2 }
}

fn first_token(llm: &mut LocalLlm, req: &GenerateRequest) {
    llm.generate(req, &CancelToken::new(), &mut |_| true)
        .expect("generate");
}

fn benches(c: &mut Criterion) {
    let mut s = setup();
    let prompt2 = s
        .llm
        .prompt_tokens(&s.turn2.messages, PromptEnd::Assistant { prefix: "" })
        .unwrap();
    println!(
        "turn-2 prompt: {} tokens, {} cached from turn 1",
        prompt2.len(),
        s.turn1.len()
    );
    let mut g = c.benchmark_group("ttft_turn2");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(2));
    // Setup (emptying the cache, or restoring turn 1 in it) is excluded from the timing.
    g.bench_function("fresh_prefill", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.llm.reset().unwrap();
                let t = Instant::now();
                first_token(&mut s.llm, &s.turn2);
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("kv_reuse", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.llm.sync_prompt(&s.turn1, &|| false).unwrap();
                let t = Instant::now();
                first_token(&mut s.llm, &s.turn2);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    const N: usize = 32;
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    let mut req = s.turn2.clone();
    req.max_tokens = N;
    // A prompt that does not end the answer early: the continuation of a story.
    req.assistant_prefix = "Here is a long story. Once upon a time".into();
    let prompt_n = s
        .llm
        .prompt_tokens(
            &req.messages,
            PromptEnd::Assistant {
                prefix: &req.assistant_prefix,
            },
        )
        .unwrap();
    g.bench_function("tokens_32", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.llm.sync_prompt(&prompt_n, &|| false).unwrap();
                let t = Instant::now();
                let mut n = 0usize;
                s.llm
                    .generate(&req, &CancelToken::new(), &mut |ev| {
                        n += usize::from(matches!(ev, LlmEvent::Token(_)));
                        true
                    })
                    .unwrap();
                total += t.elapsed();
                assert_eq!(
                    n, N,
                    "the story ended early; throughput would be overstated"
                );
            }
            total
        })
    });
    g.finish();

    // Ratio summary from interleaved runs (same conditions for both arms), medians.
    let [f, r] = interleaved_medians(|arm| {
        if arm == 0 {
            s.llm.reset().unwrap();
        } else {
            s.llm.sync_prompt(&s.turn1, &|| false).unwrap();
        }
        let t = Instant::now();
        first_token(&mut s.llm, &s.turn2);
        t.elapsed()
    });
    println!(
        "SUMMARY ttft turn 2: fresh prefill {f:?}, KV reuse {r:?}, ratio reuse/fresh {:.3} (saved {:?} per turn)",
        r.as_secs_f64() / f.as_secs_f64(),
        f.saturating_sub(r)
    );
    // Dense f32 prefill (the default) against the quantized-only weights, same prompt, fresh
    // cache, interleaved.
    let store = vr_core::ModelStore::from_env().expect("model store");
    let mut quantized = LocalLlm::from_store(
        &store,
        "qwen2.5-0.5b",
        &LocalOptions {
            dense_prefill: false,
            ..LocalOptions::default()
        },
    )
    .expect("load qwen2.5-0.5b");
    let [d, q] = interleaved_medians(|arm| {
        let llm = if arm == 0 { &mut s.llm } else { &mut quantized };
        llm.reset().unwrap();
        let t = Instant::now();
        first_token(llm, &s.turn2);
        t.elapsed()
    });
    println!(
        "SUMMARY fresh prefill of {} tokens: dense f32 {d:?}, quantized {q:?}, ratio dense/quantized {:.3}",
        prompt2.len(),
        d.as_secs_f64() / q.as_secs_f64()
    );
    drop(quantized);

    s.llm.sync_prompt(&prompt_n, &|| false).unwrap();
    let fin = s
        .llm
        .generate(&req, &CancelToken::new(), &mut |_| true)
        .unwrap();
    let decode = fin
        .stats
        .total
        .saturating_sub(fin.stats.time_to_first_token);
    println!(
        "SUMMARY decode: {} tokens, {:.2} tokens/s after the first",
        fin.stats.generated_tokens,
        (fin.stats.generated_tokens.saturating_sub(1)) as f64 / decode.as_secs_f64().max(1e-9)
    );
}

/// Medians of `ROUNDS` interleaved runs of two arms (`run(0)`, `run(1)`), so load from other
/// processes hits both alike.
fn interleaved_medians(mut run: impl FnMut(usize) -> Duration) -> [Duration; 2] {
    const ROUNDS: usize = 5;
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (arm, t) in times.iter_mut().enumerate() {
            t.push(run(arm));
        }
    }
    times.map(|mut t| {
        t.sort();
        t[ROUNDS / 2]
    })
}

criterion_group!(llm, benches);

fn main() {
    llm();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
