//! The llama.cpp engine on the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M from the model store:
//! answers, per-token features, KV-cache reuse equal to a fresh context, speculative prefill with
//! rollback, cancellation, the config switch, and token-by-token agreement with the candle
//! engine on the same file.
//!
//! The tests share one loaded model and take a lock, so they run one at a time even under the
//! default parallel test harness (each is CPU-heavy on a 2-core machine):
//! `cargo test --workspace --test llamacpp_engine -- --nocapture`.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use voicerelay_dialog::llm::llamacpp::{
    LlamaCppEngine, LlamaCppLlm, LlamaCppModel, LlamaCppOptions,
};
use voicerelay_dialog::llm::local::{LocalLlm, LocalOptions};
use voicerelay_dialog::llm::template::PromptEnd;
use voicerelay_dialog::memory::TokenCounter;
use voicerelay_dialog::{
    CancelToken, ChatMessage, FinishReason, Finished, GenerateRequest, LlmEngine, LlmEvent, Token,
};

const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";

fn ask(question: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(question)]
}

/// One model for the whole file (weights are read-only; each test makes its own contexts).
fn model() -> &'static LlamaCppModel {
    static MODEL: OnceLock<LlamaCppModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let store = vr_core::ModelStore::from_env().expect("model store");
        LlamaCppModel::from_store(&store, "qwen2.5-0.5b")
            .unwrap_or_else(|e| panic!("loading qwen2.5-0.5b: {e} (run scripts/bootstrap)"))
    })
}

/// Serialises the tests: two at once would only measure each other.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn session(chunk: usize) -> LlamaCppLlm<'static> {
    session_with(chunk, false)
}

fn session_with(chunk: usize, hidden_states: bool) -> LlamaCppLlm<'static> {
    model()
        .session(&LlamaCppOptions {
            max_context: 2048,
            prefill_chunk: chunk,
            threads: 2,
            hidden_states,
        })
        .expect("context")
}

fn run(llm: &mut LlamaCppLlm<'_>, req: &GenerateRequest) -> (String, Vec<Token>, Finished) {
    let mut tokens = Vec::new();
    let fin = llm
        .generate(req, &CancelToken::new(), &mut |ev| {
            if let LlmEvent::Token(t) = ev {
                tokens.push(t);
            }
            true
        })
        .expect("generate");
    let text = tokens.iter().map(|t| t.text.as_str()).collect();
    (text, tokens, fin)
}

fn ids(tokens: &[Token]) -> Vec<u32> {
    tokens
        .iter()
        .map(|t| t.id.expect("llama.cpp tokens carry ids"))
        .collect()
}

/// llama.cpp is compiled for this CPU (`-march=native` through `target-cpu=native`, CMake
/// Release), with its repacked quantized kernels, and without AMX (its Q4_K matmul crashes here;
/// see .cargo/config.toml).
#[test]
fn build_is_optimised_for_this_cpu() {
    let info = voicerelay_dialog::llm::llamacpp::system_info().expect("llama.cpp backend");
    println!("{info}");
    assert!(info.contains("AVX2 = 1"), "{info}");
    assert!(info.contains("FMA = 1"), "{info}");
    assert!(info.contains("REPACK = 1"), "{info}");
    assert!(!info.contains("AMX_INT8 = 1"), "{info}");
}

#[test]
fn greedy_answer_and_features() {
    let _guard = one_at_a_time();
    let mut llm = session(64);
    assert!(
        llm.describe().contains("llama.cpp") && llm.describe().contains("ChatML"),
        "{}",
        llm.describe()
    );
    let mut req = GenerateRequest::new(ask("What is the capital of France? Answer in one word."));
    req.max_tokens = 12;
    req.want_hidden = true;
    let t0 = Instant::now();
    let (text, tokens, fin) = run(&mut llm, &req);
    println!(
        "answer: {text:?} ({:?}, {:?}) in {:?}",
        fin.reason,
        fin.stats,
        t0.elapsed()
    );
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(
        fin.reason,
        FinishReason::Stop,
        "a one-word answer ends itself"
    );
    assert!(!tokens.is_empty() && tokens.len() <= 12);
    assert_eq!(fin.stats.generated_tokens, tokens.len());
    assert!(fin.stats.prompt_tokens > 20);
    assert_eq!(fin.stats.reused_tokens, 0, "a fresh context reuses nothing");
    for t in &tokens {
        let f = t.features.as_ref().expect("features");
        let (h, m) = (f.entropy.expect("entropy"), f.margin.expect("margin"));
        println!(
            "  {:>6} {:<12?} logprob {:>8.4} entropy {:>7.4} margin {:>7.4}",
            t.id.unwrap(),
            t.text,
            f.logprob,
            h,
            m
        );
        assert!(
            f.logprob.is_finite() && h.is_finite() && m.is_finite(),
            "{f:?}"
        );
        assert!(f.logprob <= 0.0 && h >= 0.0, "{f:?}");
        // Greedy picks the top-1 token, so its margin over the runner-up is ≥ 0 and its
        // log-probability is at least the mean log-probability, -H.
        assert!(m >= 0.0, "{f:?}");
        assert!(
            f.logprob >= -h - 1e-4,
            "logprob {} < -entropy {h}",
            f.logprob
        );
        assert!(
            f.hidden.is_none(),
            "llama.cpp engine returns no hidden state"
        );
    }
    // A confident answer: the token that starts "Paris" is near-certain and well separated.
    let paris = tokens
        .iter()
        .find(|t| t.text.contains("Par"))
        .and_then(|t| t.features.clone())
        .expect("a token of Paris");
    assert!(
        paris.logprob > -1.0 && paris.margin.unwrap() > 1.0,
        "{paris:?}"
    );
    // Forcing the assistant's prefix continues from it and does not repeat it.
    let mut req = GenerateRequest::new(ask("Name the capital of France."));
    req.assistant_prefix = "The capital of France is".into();
    req.max_tokens = 4;
    let (text, _, _) = run(&mut llm, &req);
    println!("continued: {text:?}");
    assert!(text.trim_start().starts_with("Paris"), "{text:?}");
}

#[test]
fn kv_reuse_gives_the_tokens_of_a_fresh_context() {
    let _guard = one_at_a_time();
    let mut llm = session(64);
    let mut req = GenerateRequest::new(ask("Name one primary colour."));
    req.max_tokens = 12;
    let (a1, _, f1) = run(&mut llm, &req);
    assert_eq!(f1.stats.reused_tokens, 0);
    let mut conv = ask("Name one primary colour.");
    conv.push(ChatMessage::assistant(a1.clone()));
    conv.push(ChatMessage::user("And what is two plus three?"));
    let p2 = llm
        .prompt_tokens(&conv, PromptEnd::Assistant { prefix: "" })
        .unwrap();
    let mut req2 = GenerateRequest::new(conv);
    req2.max_tokens = 10;
    // The cache holds turn 1 (prompt + answer): only the new suffix is computed.
    let (text_reused, toks_reused, f2) = run(&mut llm, &req2);
    // A brand-new context on the same weights computes everything.
    let mut fresh = session(64);
    let (text_fresh, toks_fresh, f_fresh) = run(&mut fresh, &req2);
    println!(
        "turn 1 {a1:?}; turn 2: {} prompt tokens, reused {} → {text_reused:?}; fresh reused {} → {text_fresh:?}",
        p2.len(),
        f2.stats.reused_tokens,
        f_fresh.stats.reused_tokens
    );
    assert!(f2.stats.reused_tokens > 0);
    assert!(
        f2.stats.reused_tokens >= f1.stats.prompt_tokens,
        "{:?} vs turn-1 prompt {}",
        f2.stats,
        f1.stats.prompt_tokens
    );
    assert!(f2.stats.reused_tokens < p2.len());
    assert_eq!(f_fresh.stats.reused_tokens, 0);
    assert_eq!(ids(&toks_reused), ids(&toks_fresh), "same greedy tokens");
    assert!(
        text_reused.contains('5') || text_reused.to_lowercase().contains("five"),
        "{text_reused:?}"
    );
    // Rolling back to a shorter prompt (the next turn diverges early) equals a fresh context too.
    let mut req3 = GenerateRequest::new(ask("Name one secondary colour."));
    req3.max_tokens = 8;
    let (_, toks_back, f3) = run(&mut llm, &req3);
    let (_, toks_fresh3, _) = run(&mut session(64), &req3);
    println!(
        "rollback: reused {} of {}",
        f3.stats.reused_tokens, f3.stats.prompt_tokens
    );
    assert!(f3.stats.reused_tokens > 0 && f3.stats.reused_tokens < f3.stats.prompt_tokens);
    assert_eq!(ids(&toks_back), ids(&toks_fresh3));
}

#[test]
fn speculative_prefill_through_the_engine_reuses_and_rolls_back() {
    let _guard = one_at_a_time();
    let probe = session(16);
    let partial_ids = probe
        .prompt_tokens(&ask("What is the capital of"), PromptEnd::OpenUserTurn)
        .unwrap();
    let misheard_ids = probe
        .prompt_tokens(
            &ask("What is the capital of Jermaine"),
            PromptEnd::OpenUserTurn,
        )
        .unwrap();
    let spain_ids = probe
        .prompt_tokens(
            &ask("What is the capital of Spain? Answer in one word."),
            PromptEnd::Assistant { prefix: "" },
        )
        .unwrap();
    drop(probe);
    let common = misheard_ids
        .iter()
        .zip(&spain_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let store = vr_core::ModelStore::from_env().expect("model store");
    let engine = LlamaCppEngine::new(
        LlamaCppModel::from_store(&store, "qwen2.5-0.5b").unwrap(),
        LlamaCppOptions {
            max_context: 2048,
            prefill_chunk: 16,
            threads: 2,
            hidden_states: false,
        },
    )
    .unwrap();
    assert!(
        engine.describe().contains("2 threads"),
        "{}",
        engine.describe()
    );

    // The partial transcript is a prefix of the final one: all of it is reused.
    engine.prepare(&ask("What is the capital of"));
    engine.wait_idle().unwrap();
    let mut req = GenerateRequest::new(ask("What is the capital of Germany? Answer in one word."));
    req.max_tokens = 8;
    let (text, _, fin) = engine.generate(req).unwrap().blocking_collect().unwrap();
    let fin = fin.expect("finished");
    println!(
        "answer {text:?}, stats {:?}, partial prompt {}",
        fin.stats,
        partial_ids.len()
    );
    assert!(text.contains("Berlin"), "{text:?}");
    assert!(
        fin.stats.reused_tokens >= partial_ids.len() - 1,
        "{:?}",
        fin.stats
    );

    // The transcript changed: the speculative tail is removed from the KV cache and the answer
    // is the one a fresh context gives.
    engine.prepare(&ask("What is the capital of Jermaine"));
    engine.wait_idle().unwrap();
    let mut req_es = GenerateRequest::new(ask("What is the capital of Spain? Answer in one word."));
    req_es.max_tokens = 8;
    let (text_es, toks_spec, fin) = engine
        .generate(req_es.clone())
        .unwrap()
        .blocking_collect()
        .unwrap();
    let fin = fin.expect("finished");
    println!(
        "answer {text_es:?}, stats {:?}, common prefix {common}",
        fin.stats
    );
    assert!(text_es.contains("Madrid"), "{text_es:?}");
    assert_eq!(
        fin.stats.reused_tokens, common,
        "exactly the common prefix survives"
    );
    assert!(common < misheard_ids.len());
    drop(engine);
    let (_, toks_fresh, _) = run(&mut session(64), &req_es);
    assert_eq!(ids(&toks_spec), ids(&toks_fresh));
}

#[test]
fn cancel_stops_emission_and_the_engine_stays_usable() {
    let _guard = one_at_a_time();
    // The synchronous core: a cancel raised while handling token 3 lets nothing more out.
    let mut llm = session(64);
    let mut req = GenerateRequest::new(ask("Tell me a long story about a dragon."));
    req.max_tokens = 200;
    let cancel = CancelToken::new();
    let mut got = 0;
    let fin = llm
        .generate(&req, &cancel, &mut |ev| {
            if let LlmEvent::Token(_) = ev {
                got += 1;
                if got == 3 {
                    cancel.cancel();
                }
            }
            true
        })
        .unwrap();
    assert_eq!(got, 3, "no token after cancel");
    assert_eq!(fin.reason, FinishReason::Cancelled);
    drop(llm);

    // The engine: cancel through the stream handle, then drop one mid-stream.
    let store = vr_core::ModelStore::from_env().expect("model store");
    let engine = LlamaCppEngine::new(
        LlamaCppModel::from_store(&store, "qwen2.5-0.5b").unwrap(),
        LlamaCppOptions::default(),
    )
    .unwrap();
    let mut gen = engine.generate(req.clone()).unwrap();
    let mut got = 0;
    while let Some(ev) = gen.blocking_next() {
        if let LlmEvent::Token(_) = ev.unwrap() {
            got += 1;
            if got == 3 {
                gen.cancel();
            }
        }
    }
    assert_eq!(got, 3, "no token after cancel");
    assert!(gen.blocking_next().is_none());
    let mut abandoned = engine.generate(req).unwrap();
    assert!(matches!(
        abandoned.blocking_next(),
        Some(Ok(LlmEvent::Token(_)))
    ));
    drop(abandoned);
    // The next request is served at once, not after ~200 tokens of abandoned work.
    let t0 = Instant::now();
    let mut req = GenerateRequest::new(ask("What is the capital of France? Answer in one word."));
    req.max_tokens = 6;
    let (text, _, fin) = engine.generate(req).unwrap().blocking_collect().unwrap();
    println!("after drop: {text:?} in {:?}", t0.elapsed());
    assert!(text.contains("Paris"), "{text:?}");
    assert_ne!(fin.expect("finished").reason, FinishReason::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(30));
}

/// Both engines read the same Q4_K_M file and feed identical prompt ids, but their kernels
/// differ (candle dequantizes and runs the prompt through a dense f32 GEMM and quantizes decode
/// activations to Q8_K its own way; llama.cpp repacks the weights and uses its own dot
/// products), so greedy paths can part where two candidates are close. The first tokens of a
/// clear answer must agree; where they part is printed with both engines' margins.
#[test]
fn greedy_tokens_agree_with_the_candle_engine() {
    let _guard = one_at_a_time();
    const N: usize = 16;
    const MUST_AGREE: usize = 4;
    let mut req = GenerateRequest::new(ask("Explain in two sentences why the sky is blue."));
    req.max_tokens = N;
    let (text_ll, toks_ll, _) = run(&mut session(64), &req);
    let store = vr_core::ModelStore::from_env().expect("model store");
    let mut candle = LocalLlm::from_store(
        &store,
        "qwen2.5-0.5b",
        &LocalOptions {
            max_context: 2048,
            ..LocalOptions::default()
        },
    )
    .expect("candle qwen2.5-0.5b");
    let mut toks_c = Vec::new();
    candle
        .generate(&req, &CancelToken::new(), &mut |ev| {
            if let LlmEvent::Token(t) = ev {
                toks_c.push(t);
            }
            true
        })
        .unwrap();
    let text_c: String = toks_c.iter().map(|t| t.text.as_str()).collect();
    let (a, b) = (ids(&toks_ll), ids(&toks_c));
    let agree = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    println!("llama.cpp: {text_ll:?}\ncandle:    {text_c:?}");
    println!(
        "agree on the first {agree} of {} / {} tokens",
        a.len(),
        b.len()
    );
    for (i, (l, c)) in toks_ll.iter().zip(&toks_c).enumerate() {
        let (fl, fc) = (l.features.as_ref().unwrap(), c.features.as_ref().unwrap());
        println!(
            "  {i:>2} {} llama.cpp {:>6} {:<10?} lp {:>7.4} margin {:>6.3} | candle {:>6} {:<10?} lp {:>7.4} margin {:>6.3}",
            if l.id == c.id { " " } else { "≠" },
            l.id.unwrap(),
            l.text,
            fl.logprob,
            fl.margin.unwrap(),
            c.id.unwrap(),
            c.text,
            fc.logprob,
            fc.margin.unwrap()
        );
        if l.id != c.id {
            break;
        }
    }
    assert!(
        agree >= MUST_AGREE.min(a.len()).min(b.len()) && a.len().min(b.len()) >= MUST_AGREE,
        "engines diverge at token {agree}: {a:?} vs {b:?}"
    );
    // Where both chose the same token, they saw nearly the same distribution.
    for (l, c) in toks_ll.iter().zip(&toks_c).take(agree) {
        let (fl, fc) = (l.features.as_ref().unwrap(), c.features.as_ref().unwrap());
        assert!(
            (fl.logprob - fc.logprob).abs() < 0.5,
            "logprob {} vs {} at {:?}",
            fl.logprob,
            fc.logprob,
            l.text
        );
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The dual path's verifier reads the drafter's final hidden state. A llama.cpp session opened
/// with `hidden_states` reports it per token; it must be the same vector candle computes from the
/// same file (final norm, 896 wide), and turning it on must not change the tokens.
#[test]
fn hidden_states_match_the_candle_engine() {
    let _guard = one_at_a_time();
    const N: usize = 6;
    let mut req = GenerateRequest::new(ask("What is the capital of France?"));
    req.max_tokens = N;
    req.want_hidden = true;
    let (_, plain, _) = run(&mut session(64), &req);
    let (text, toks, _) = run(&mut session_with(64, true), &req);
    assert_eq!(ids(&plain), ids(&toks), "hidden_states changed the tokens");
    let store = vr_core::ModelStore::from_env().expect("model store");
    let mut candle = LocalLlm::from_store(
        &store,
        "qwen2.5-0.5b",
        &LocalOptions {
            max_context: 2048,
            ..LocalOptions::default()
        },
    )
    .expect("candle qwen2.5-0.5b");
    let mut toks_c = Vec::new();
    candle
        .generate(&req, &CancelToken::new(), &mut |ev| {
            if let LlmEvent::Token(t) = ev {
                toks_c.push(t);
            }
            true
        })
        .unwrap();
    println!("{text:?}");
    let agree = ids(&toks)
        .iter()
        .zip(&ids(&toks_c))
        .take_while(|(a, b)| a == b)
        .count();
    assert!(agree >= 3, "{:?} vs {:?}", ids(&toks), ids(&toks_c));
    for (i, (l, c)) in toks.iter().zip(&toks_c).take(agree).enumerate() {
        let hl = l.features.as_ref().and_then(|f| f.hidden.as_ref());
        let hc = c.features.as_ref().and_then(|f| f.hidden.as_ref());
        let (hl, hc) = (hl.expect("llama.cpp hidden"), hc.expect("candle hidden"));
        assert_eq!(hl.len(), 896);
        assert_eq!(hl.len(), hc.len());
        let cos = cosine(hl, hc);
        println!("  {i} {:?} cosine {cos:.4}", l.text);
        assert!(cos > 0.97, "token {i} {:?}: cosine {cos}", l.text);
    }
    // Without the option the request's want_hidden is not honoured (no silent zero vectors).
    assert!(plain
        .iter()
        .all(|t| t.features.as_ref().is_some_and(|f| f.hidden.is_none())));
}

/// `llm.engine = "llamacpp"` in the shipped config builds this engine through the same path the
/// app uses.
/// Scoring a continuation gives the log-probabilities the model had when it generated it, after
/// any cache state (here: a different prompt cached first).
#[test]
fn scored_continuation_matches_generation_logprobs() {
    let _guard = one_at_a_time();
    let mut req = GenerateRequest::new(ask("What is the capital of France?"));
    req.max_tokens = 6;
    let mut llm = session(64);
    let (_, toks, _) = run(&mut llm, &req);
    let messages = ask("What is the capital of France?");
    let prompt = llm
        .prompt_tokens(&messages, PromptEnd::Assistant { prefix: "" })
        .unwrap();
    let other = llm
        .prompt_tokens(&ask("Name a colour."), PromptEnd::Assistant { prefix: "" })
        .unwrap();
    llm.sync_prompt(&other, &|| false).unwrap();
    let scored = llm.score_continuation(&prompt, &ids(&toks)).unwrap();
    assert_eq!(scored.len(), toks.len());
    for (t, s) in toks.iter().zip(&scored) {
        let g = t.features.as_ref().expect("features").logprob;
        assert!(
            (g - s).abs() < 0.02,
            "{:?}: generated {g}, scored {s}",
            t.text
        );
    }
    // A token outside the vocabulary is an error, not a panic.
    assert!(llm.score_continuation(&prompt, &[u32::MAX]).is_err());
}

/// The dialog LM as its own end-of-turn detector: the probability that the user's message ends
/// after the words so far is high for finished requests and low for ones cut mid-phrase, and it
/// is the same number as scoring the end-of-turn token after the open turn.
#[test]
fn end_of_turn_probability_separates_finished_from_cut_requests() {
    let _guard = one_at_a_time();
    let mut llm = session(64);
    let eot = |llm: &mut LlamaCppLlm<'_>, text: &str| {
        let p = llm
            .end_of_turn_probability(&ask(text))
            .expect("end of turn");
        println!("{p:.4}  {text:?}");
        p
    };
    let finished = [
        "What is the capital of France?",
        "Tell me a joke.",
        "Set a timer for ten minutes.",
    ];
    let cut = [
        "What is the capital of",
        "Tell me a joke about the",
        "Set a timer for",
    ];
    let low_finished = finished
        .iter()
        .map(|t| eot(&mut llm, t))
        .fold(f32::INFINITY, f32::min);
    let high_cut = cut
        .iter()
        .map(|t| eot(&mut llm, t))
        .fold(f32::NEG_INFINITY, f32::max);
    // Not calibrated like a classifier: a finished command may still be followed by more words
    // ("Set a timer for ten minutes." measured 0.148; the questions 0.99), but a request cut
    // mid-phrase is all but impossible to end (≤ 1e-6 measured).
    assert!(
        low_finished > 0.1 && high_cut < 0.01,
        "finished ≥ {low_finished}, cut ≤ {high_cut}"
    );
    let messages = ask(finished[0]);
    let p = llm.end_of_turn_probability(&messages).unwrap();
    let open = llm
        .prompt_tokens(&messages, PromptEnd::OpenUserTurn)
        .unwrap();
    let end = llm.tokenize("<|im_end|>").unwrap();
    assert_eq!(end.len(), 1, "{end:?}");
    let scored = llm.score_continuation(&open, &end).unwrap()[0].exp();
    // The other end tokens (<|endoftext|>) add a little on top of <|im_end|>'s own probability.
    assert!(
        p >= scored - 1e-4 && p - scored < 0.02,
        "end_of_turn_probability {p} vs <|im_end|> scored {scored}"
    );
}

#[test]
fn config_selects_the_engine() {
    let _guard = one_at_a_time();
    let t: toml::Table = include_str!("../../configs/default.toml")
        .parse()
        .expect("default.toml");
    let mut llm: voicerelay_dialog::LlmConfig = t["llm"].clone().try_into().expect("[llm]");
    llm.engine = voicerelay_dialog::LocalEngineKind::Llamacpp;
    llm.max_context_tokens = 1024;
    let store = vr_core::ModelStore::from_env().expect("model store");
    let (engine, counter) = llm.build_engine_and_counter(&store).unwrap();
    println!("{}", engine.describe());
    assert!(
        engine.describe().contains("llama.cpp"),
        "{}",
        engine.describe()
    );
    assert_eq!(counter.count("hello world"), 2);
    let mut req = GenerateRequest::new(ask("What is 2 + 2? Answer with a digit."));
    req.max_tokens = 4;
    let (text, _, _) = engine.generate(req).unwrap().blocking_collect().unwrap();
    assert!(text.contains('4'), "{text:?}");
}
