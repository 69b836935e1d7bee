//! The shipped verifier weights against the held-out turns they were not trained on
//! (`voicerelay eval verifier --weights-out … --heldout-out …` wrote both).

use std::path::Path;
use std::time::Instant;
use voicerelay_dialog::verifier::{load_examples, roc_auc, Verifier, SCALARS};

#[test]
fn shipped_verifier_ranks_held_out_drafts_with_roc_auc_of_at_least_0_8() {
    let v = Verifier::builtin().expect("the shipped weights load");
    // `eval verifier` ships the candidate with the better dev AUC: with Qwen2.5-0.5B's hidden
    // state (896 wide) or without it.
    assert!(matches!(v.hidden_width(), 0 | 896), "{}", v.hidden_width());
    assert!(v.parameters() <= 200_000, "{} parameters", v.parameters());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/verifier_heldout.safetensors");
    let held_out = load_examples(&path).expect("held-out examples");
    assert!(held_out.len() >= 80, "{} held-out drafts", held_out.len());
    let kept = held_out.iter().filter(|e| e.keep).count();
    assert!(
        kept >= 10 && held_out.len() - kept >= 10,
        "{kept} of {} kept",
        held_out.len()
    );
    let t = Instant::now();
    let scores: Vec<f32> = held_out
        .iter()
        .map(|e| v.score(&e.input).expect("input width"))
        .collect();
    let per_draft = t.elapsed() / held_out.len() as u32;
    let labels: Vec<bool> = held_out.iter().map(|e| e.keep).collect();
    let auc = roc_auc(&scores, &labels);
    println!(
        "held-out: {} drafts, {kept} kept, ROC AUC {auc:.3}, {per_draft:?} per draft",
        held_out.len()
    );
    assert!(auc >= 0.8, "ROC AUC {auc:.3}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    // An input of the wrong width is refused, not scored.
    assert!(v.score(&vec![0.0; v.input_width() + 1]).is_err());
    assert!(v.input_width() >= SCALARS);
}
