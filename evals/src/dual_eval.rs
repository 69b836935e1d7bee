//! `voicerelay eval dual`: typed turns through the conversation core with real models, in three
//! modes — `dual` (0.5B draft + verifier + 1.5B continuation), `cascade` (the 1.5B alone) and
//! `fast` (the 0.5B alone) — onset, seam gap, answer quality and factual accuracy side by side.
//!
//! **The driver** ([`Driver::run_turn`]) is deliberately simple: one thread performs the core's
//! actions in order on the wall clock. A generation runs token by token, each token handed to
//! the core as it exists; a clause is synthesised (Piper) the moment the core asks, and its audio
//! handed back when done. The output is virtual: it plays in real time from the moment the core
//! writes, with a lead long enough that every chunk is written at once, so playback timing is
//! exact and a late continuation shows as a seam gap. Once every generation and synthesis has
//! run, only playback is left and the driver skips to the core's deadlines instead of sleeping
//! through the answer's audio. Stages never overlap here (the threaded
//! pipeline would run the slow model while the synthesizer speaks; on two cores they would share
//! the cores instead).
//!
//! Not measured here: the recogniser and the end-of-turn detector (turns are typed; onset is
//! from the text reaching the core to the first answer sample played).
//!
//! **Quality**: the final answer's mean per-token log-probability under the slow model;
//! `quality_vs_cascade` = exp(mean(mode) − mean(cascade)) over the same turns (1.0: as likely to
//! the slow model as its own answers). **Accuracy**: the expected keywords of
//! `evals/data/factual.tsv` in the answer.

use crate::normalize::normalize;
use crate::streaming::percentile;
use crate::EvalError;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_dialog::core::{
    Action, AnswerId, ConversationCore, CoreConfig, DualPathConfig, Event, Millis,
};
use vr_dialog::llm::llamacpp::LlamaCppLlm;
use vr_dialog::llm::template::PromptEnd;
use vr_dialog::llm::{CancelToken, ChatMessage, FinishReason, GenerateRequest, LlmEvent};
use vr_dialog::memory::ByteEstimate;
use vr_dialog::verifier::Verifier;
use vr_dialog::ConversationEvent;
use vr_tts::VoiceEngine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMode {
    Dual,
    Cascade,
    Fast,
}

impl PathMode {
    pub fn name(self) -> &'static str {
        match self {
            PathMode::Dual => "dual",
            PathMode::Cascade => "cascade",
            PathMode::Fast => "fast",
        }
    }
}

/// A question with the keywords a correct answer contains (factual turns only).
#[derive(Debug, Clone, Serialize)]
pub struct EvalTurn {
    pub text: String,
    /// Groups that must all match; each group matches when one of its alternatives does.
    pub keywords: Option<Vec<Vec<String>>>,
}

/// `question<TAB>alt|alt;group2…` lines; `#` comments.
pub fn factual_turns(tsv: &str) -> Result<Vec<EvalTurn>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in tsv.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (q, k) = line.split_once('\t').ok_or_else(|| EvalError::Manifest {
            path: "evals/data/factual.tsv".into(),
            line: i + 1,
            reason: "expected `question<TAB>keywords`".into(),
        })?;
        let groups: Vec<Vec<String>> = k
            .split(';')
            .map(|g| {
                g.split('|')
                    .map(|a| normalize(a).trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        if groups.is_empty() {
            return Err(EvalError::Manifest {
                path: "evals/data/factual.tsv".into(),
                line: i + 1,
                reason: "no keywords".into(),
            });
        }
        out.push(EvalTurn {
            text: q.trim().to_string(),
            keywords: Some(groups),
        });
    }
    Ok(out)
}

/// Every keyword group has an alternative among the answer's normalised words.
pub fn answer_correct(answer: &str, groups: &[Vec<String>]) -> bool {
    let words = format!(" {} ", normalize(answer));
    groups
        .iter()
        .all(|g| g.iter().any(|alt| words.contains(&format!(" {alt} "))))
}

/// What one turn did in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct TurnResult {
    pub mode: PathMode,
    pub question: String,
    pub answer: String,
    pub onset_ms: Option<u64>,
    pub llm_first_token_ms: Option<u64>,
    pub first_clause_ms: Option<u64>,
    pub draft: Option<String>,
    pub draft_score: Option<f32>,
    pub draft_kept: Option<bool>,
    pub draft_ms: Option<u64>,
    pub seam_gap_ms: Option<u64>,
    /// Which model's words were heard first: `fast` or `slow`.
    pub spoke_first: &'static str,
    pub total_ms: u64,
    pub slow_mean_logprob: Option<f32>,
    pub correct: Option<bool>,
    pub errors: Vec<String>,
}

/// The models and the voice a turn runs on.
pub struct Driver<'f, 's> {
    pub fast: LlamaCppLlm<'f>,
    pub slow: LlamaCppLlm<'s>,
    pub voice: Box<dyn VoiceEngine>,
    pub verifier: Arc<Verifier>,
    /// The `[dialog]` configuration's core settings (output rate and lead are set here).
    pub base: CoreConfig,
    pub draft_words: usize,
    pub keep_threshold: f32,
    /// Most tokens an answer may take.
    pub max_answer_tokens: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    Fast,
    Slow,
}

/// Performs actions that need no model run: speech (inline), its end, events. Start actions
/// are deferred; a cancel of the running generation is reported.
struct Performer<'a> {
    core: &'a mut ConversationCore,
    voice: &'a mut dyn VoiceEngine,
    t0: Instant,
    /// Virtual time added while nothing but playback was left (see `run_turn`).
    skipped_ms: u64,
    deferred: VecDeque<Action>,
    events: Vec<ConversationEvent>,
}

impl Performer<'_> {
    fn now(&self) -> Millis {
        let real = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        Millis(real.saturating_add(self.skipped_ms))
    }

    /// Handles `event` and performs what follows; true if the running generation was cancelled.
    fn handle(&mut self, event: Event) -> Result<bool, EvalError> {
        let now = self.now();
        let mut work: VecDeque<Action> = self.core.handle(event, now).into();
        let mut stop = false;
        while let Some(action) = work.pop_front() {
            match action {
                Action::SpeakText {
                    answer,
                    clause,
                    text,
                } => {
                    let samples = self
                        .voice
                        .synthesize(&vr_tts::verbalize::verbalize(&text))
                        .map_err(|e| EvalError::Dialog(format!("speech synthesis: {e}")))?;
                    let now = self.now();
                    work.extend(self.core.handle(
                        Event::TtsAudio {
                            answer,
                            clause,
                            samples,
                        },
                        now,
                    ));
                }
                Action::FinishSpeech { answer } => {
                    let now = self.now();
                    work.extend(self.core.handle(Event::TtsDone { answer }, now));
                }
                Action::Emit(e) => self.events.push(e),
                Action::CancelDraft { .. } | Action::CancelGeneration { .. } => stop = true,
                a @ (Action::StartDraft { .. }
                | Action::StartGeneration { .. }
                | Action::StartFastCompletion { .. }) => self.deferred.push_back(a),
                _ => {}
            }
        }
        Ok(stop)
    }
}

impl Driver<'_, '_> {
    /// One typed turn in `mode`, on a fresh conversation.
    pub fn run_turn(&mut self, mode: PathMode, turn: &EvalTurn) -> Result<TurnResult, EvalError> {
        let mut cfg = self.base.clone();
        cfg.output_rate = self.voice.sample_rate();
        cfg.output_lead = Duration::from_secs(600);
        cfg.max_answer_tokens = self.max_answer_tokens;
        cfg.speculative_prefill = false;
        cfg.dual = (mode == PathMode::Dual).then(|| DualPathConfig {
            draft_words: self.draft_words,
            draft_max_tokens: 16,
            keep_threshold: self.keep_threshold,
            verifier: self.verifier.clone(),
            // Typed turns have no pause to draft in.
            early_draft: false,
        });
        let system = cfg.system.clone();
        let mut core = ConversationCore::new(cfg, Arc::new(ByteEstimate));
        let t0 = Instant::now();
        let mut p = Performer {
            core: &mut core,
            voice: self.voice.as_mut(),
            t0,
            skipped_ms: 0,
            deferred: VecDeque::new(),
            events: Vec::new(),
        };
        p.handle(Event::ClientText(turn.text.clone()))?;
        let deadline = Duration::from_secs(120);
        loop {
            while let Some(action) = p.deferred.pop_front() {
                let (answer, request, model, draft) = match action {
                    Action::StartDraft { answer, request } => (answer, request, Model::Fast, true),
                    Action::StartGeneration { answer, request } => {
                        let model = if mode == PathMode::Fast {
                            Model::Fast
                        } else {
                            Model::Slow
                        };
                        (answer, request, model, false)
                    }
                    Action::StartFastCompletion { answer, request } => {
                        (answer, request, Model::Fast, false)
                    }
                    _ => continue,
                };
                match model {
                    Model::Fast => generate(&mut self.fast, &mut p, answer, &request, draft)?,
                    Model::Slow => generate(&mut self.slow, &mut p, answer, &request, draft)?,
                }
            }
            if p.events
                .iter()
                .any(|e| matches!(e, ConversationEvent::AnswerEnd { .. }))
            {
                break;
            }
            if p.now().ms() > u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX) {
                return Err(EvalError::Dialog(format!(
                    "turn {:?} in {} mode did not end within {deadline:?}",
                    turn.text,
                    mode.name()
                )));
            }
            match p.core.next_deadline() {
                Some(d) => {
                    // Every generation and synthesis has run (they are synchronous here), so
                    // only playback is left until the deadline: skip to it instead of sleeping.
                    let now = p.now();
                    p.skipped_ms += d.ms().saturating_sub(now.ms());
                    p.handle(Event::Tick)?;
                }
                None => {
                    return Err(EvalError::Dialog(format!(
                        "turn {:?} in {} mode stalled: no work and no deadline",
                        turn.text,
                        mode.name()
                    )))
                }
            }
        }
        let total_ms = p.now().ms();
        let events = std::mem::take(&mut p.events);
        let mut r = TurnResult {
            mode,
            question: turn.text.clone(),
            answer: String::new(),
            onset_ms: None,
            llm_first_token_ms: None,
            first_clause_ms: None,
            draft: None,
            draft_score: None,
            draft_kept: None,
            draft_ms: None,
            seam_gap_ms: None,
            spoke_first: if mode == PathMode::Cascade {
                "slow"
            } else {
                "fast"
            },
            total_ms,
            slow_mean_logprob: None,
            correct: None,
            errors: Vec::new(),
        };
        for e in events {
            match e {
                ConversationEvent::TurnLatency(l) => {
                    r.onset_ms = Some(l.onset_ms);
                    r.llm_first_token_ms = l.llm_first_token_ms;
                    r.first_clause_ms = l.first_clause_ms;
                }
                ConversationEvent::Draft {
                    text,
                    score,
                    kept,
                    draft_ms,
                    ..
                } => {
                    r.spoke_first = if kept { "fast" } else { "slow" };
                    r.draft = Some(text);
                    r.draft_score = score;
                    r.draft_kept = Some(kept);
                    r.draft_ms = Some(draft_ms);
                }
                ConversationEvent::Seam { gap_ms } => r.seam_gap_ms = Some(gap_ms),
                ConversationEvent::AnswerEnd { text, .. } => r.answer = text,
                ConversationEvent::Error { message } => r.errors.push(message),
                _ => {}
            }
        }
        r.correct = turn.keywords.as_ref().map(|k| answer_correct(&r.answer, k));
        r.slow_mean_logprob = self.slow_mean_logprob(&system, &turn.text, &r.answer)?;
        Ok(r)
    }

    /// The answer's mean per-token log-probability under the slow model.
    fn slow_mean_logprob(
        &mut self,
        system: &ChatMessage,
        question: &str,
        answer: &str,
    ) -> Result<Option<f32>, EvalError> {
        if answer.trim().is_empty() {
            return Ok(None);
        }
        let err = |e: vr_dialog::DialogError| EvalError::Dialog(e.to_string());
        let messages = [system.clone(), ChatMessage::user(question)];
        let prompt = self
            .slow
            .prompt_tokens(&messages, PromptEnd::Assistant { prefix: "" })
            .map_err(err)?;
        let ids = self.slow.tokenize(answer.trim()).map_err(err)?;
        let lps = self.slow.score_continuation(&prompt, &ids).map_err(err)?;
        Ok((!lps.is_empty()).then(|| lps.iter().sum::<f32>() / lps.len() as f32))
    }
}

/// Runs one generation token by token, each token into the core; then its end.
fn generate(
    llm: &mut LlamaCppLlm<'_>,
    p: &mut Performer<'_>,
    answer: AnswerId,
    request: &GenerateRequest,
    draft: bool,
) -> Result<(), EvalError> {
    let cancel = CancelToken::new();
    let mut failure: Option<EvalError> = None;
    let mut cancelled = false;
    let result = llm.generate(request, &cancel, &mut |ev| {
        let LlmEvent::Token(token) = ev else {
            return true;
        };
        let event = if draft {
            Event::DraftToken { answer, token }
        } else {
            Event::LlmToken { answer, token }
        };
        match p.handle(event) {
            Ok(true) => {
                cancelled = true;
                false
            }
            Ok(false) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if cancelled {
        return Ok(());
    }
    let end = match (result, draft) {
        (Ok(f), true) => Event::DraftFinished {
            answer,
            complete: f.reason == FinishReason::Stop,
        },
        (Ok(f), false) => Event::LlmFinished {
            answer,
            stats: Some(f.stats),
        },
        (Err(e), true) => Event::DraftFailed {
            answer,
            reason: e.to_string(),
        },
        (Err(e), false) => Event::LlmFailed {
            answer,
            failure: vr_dialog::core::LlmFailure {
                message: e.to_string(),
                unreachable: false,
                busy: false,
            },
        },
    };
    p.handle(end)?;
    Ok(())
}

/// One mode's figures over a run.
#[derive(Debug, Clone, Serialize)]
pub struct ModeSummary {
    pub mode: PathMode,
    pub turns: usize,
    pub onset_p50_ms: Option<f64>,
    pub onset_p90_ms: Option<f64>,
    pub first_token_p50_ms: Option<f64>,
    pub total_p50_ms: Option<f64>,
    pub seam_gap_p50_ms: Option<f64>,
    pub seam_gap_p90_ms: Option<f64>,
    /// Share of turns whose draft was kept (dual only).
    pub keep_rate: Option<f64>,
    pub factual_questions: usize,
    pub factual_correct: usize,
    /// Mean over turns of the answer's mean log-probability under the slow model.
    pub slow_mean_logprob: Option<f64>,
    /// exp(mean(this mode) − mean(cascade)) over the turns both answered.
    pub quality_vs_cascade: Option<f64>,
    pub turns_with_errors: usize,
}

pub fn summarise(results: &[TurnResult], mode: PathMode) -> ModeSummary {
    let rs: Vec<&TurnResult> = results.iter().filter(|r| r.mode == mode).collect();
    let pct = |v: Vec<f64>, p: f64| percentile(&v, p);
    let onsets: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.onset_ms)
        .map(|v| v as f64)
        .collect();
    let seams: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.seam_gap_ms)
        .map(|v| v as f64)
        .collect();
    let firsts: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.llm_first_token_ms)
        .map(|v| v as f64)
        .collect();
    let totals: Vec<f64> = rs.iter().map(|r| r.total_ms as f64).collect();
    let kept: Vec<bool> = rs.iter().filter_map(|r| r.draft_kept).collect();
    let factual: Vec<bool> = rs.iter().filter_map(|r| r.correct).collect();
    let lps: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.slow_mean_logprob)
        .map(f64::from)
        .collect();
    // Paired with the cascade's answer to the same question.
    let mut diffs = Vec::new();
    for r in &rs {
        let base = results
            .iter()
            .find(|c| c.mode == PathMode::Cascade && c.question == r.question);
        if let (Some(a), Some(b)) = (r.slow_mean_logprob, base.and_then(|c| c.slow_mean_logprob)) {
            diffs.push(f64::from(a) - f64::from(b));
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    ModeSummary {
        mode,
        turns: rs.len(),
        onset_p50_ms: pct(onsets.clone(), 50.0),
        onset_p90_ms: pct(onsets, 90.0),
        first_token_p50_ms: pct(firsts, 50.0),
        total_p50_ms: pct(totals, 50.0),
        seam_gap_p50_ms: pct(seams.clone(), 50.0),
        seam_gap_p90_ms: pct(seams, 90.0),
        keep_rate: (!kept.is_empty())
            .then(|| kept.iter().filter(|k| **k).count() as f64 / kept.len() as f64),
        factual_questions: factual.len(),
        factual_correct: factual.iter().filter(|c| **c).count(),
        slow_mean_logprob: mean(&lps),
        quality_vs_cascade: mean(&diffs).map(f64::exp),
        turns_with_errors: rs.iter().filter(|r| !r.errors.is_empty()).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factual_file_parses_and_scores_keywords() {
        let turns = factual_turns(include_str!("../data/factual.tsv")).expect("parses");
        assert!(turns.len() >= 50, "{} factual questions", turns.len());
        let elbrus = turns
            .iter()
            .find(|t| t.text.contains("tallest mountain in Europe"))
            .and_then(|t| t.keywords.clone())
            .expect("the Europe question");
        assert!(answer_correct("Mount Elbrus, in Russia.", &elbrus));
        assert!(!answer_correct("Mount Everest.", &elbrus));
        let spider = factual_turns("How many legs?\teight|8\n").expect("parses");
        let k = spider[0].keywords.clone().expect("keywords");
        assert!(answer_correct("A spider has 8 legs.", &k));
        assert!(answer_correct("Eight.", &k));
        assert!(!answer_correct("Six legs, like insects... no, eighty.", &k));
        assert!(factual_turns("no tab here\n").is_err());
    }
}
