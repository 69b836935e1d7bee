//! Scores a hypotheses file (`{"id": .., "text": ..}` per line) against the corpus references
//! with the project's normaliser and WER: `score HYPS.jsonl CORPUS_DIR [split]`.

extern crate voicerelay_evals as vr_evals;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use vr_evals::corpus::{Corpus, Split};
use vr_evals::normalize::normalize;
use vr_evals::wer::{word_errors, ErrorCounts};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: score HYPS.jsonl CORPUS_DIR [dev|test|all]");
        return ExitCode::FAILURE;
    }
    let split = match args.get(3).map(String::as_str).unwrap_or("test") {
        "dev" => Split::Dev,
        "all" => Split::All,
        _ => Split::Test,
    };
    let corpus = match Corpus::open(Path::new(&args[2])) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match std::fs::read_to_string(&args[1]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", args[1]);
            return ExitCode::FAILURE;
        }
    };
    let mut hyps = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {} line {}: {e}", args[1], i + 1);
                return ExitCode::FAILURE;
            }
        };
        let id = v["id"].as_str().unwrap_or_default().to_string();
        hyps.insert(id, v["text"].as_str().unwrap_or_default().to_string());
    }
    let mut total = ErrorCounts::default();
    for u in corpus.split(split) {
        let h = hyps.get(&u.id).map(String::as_str).unwrap_or("");
        let e = word_errors(&normalize(&u.text), &normalize(h));
        println!("{:<28} {:>2} err | {}", u.id, e.errors(), normalize(h));
        total = total + e;
    }
    println!(
        "WER {:.2}% ({} S, {} D, {} I / {} words)",
        total.rate() * 100.0,
        total.substitutions,
        total.deletions,
        total.insertions,
        total.reference_len
    );
    ExitCode::SUCCESS
}
