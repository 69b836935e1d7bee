//! The dual path (RelayS2S): a fast model drafts the answer's first words, a small verifier
//! decides from the drafter's own token features whether the slow model would have started
//! that way, and the slow model continues after a kept draft (or answers alone).
//!
//! Order of work, chosen for two cores: the draft runs first and alone ([`Action::StartDraft`]);
//! the slow model starts when the verifier has decided, with the kept draft forced as the start
//! of its message (`assistant_prefix`), so the two never compete for the cores and the slow
//! model's prefill and first tokens run while the draft is being spoken. The draft is decided
//! before it is heard: a discarded draft is never spoken.
//!
//! Failures never leave a draft hanging: if the drafter fails the slow model answers alone; if
//! the slow model fails before its first token, the fast model completes the answer from the
//! kept draft ([`Action::StartFastCompletion`]).
//!
//! **Early drafts** (`DualPathConfig::early_draft`): the turn detector ends a turn a silence
//! timeout (or a turn model's verdict) after the speech, while the recogniser's transcript of a
//! pause is ready well before that. So once the user pauses, the draft starts on the
//! transcript so far; its tokens are held, unheard. A turn that ends with exactly that prompt
//! adopts the draft as it stands (often already decided by then: the answer speaks at once); a
//! changed transcript, speech resuming, or any other answer cancels it. The drafter only ever
//! works on the draft's few tokens, and only while the user is silent.

use super::{Action, AnswerId, ConversationCore};
use crate::events::ConversationEvent;
use crate::llm::{GenerateRequest, Token, TokenFeatures};
use crate::verifier::draft_token_count;

/// A draft started while the user paused, before there was an answer to give it to.
#[derive(Debug)]
pub(crate) struct EarlyDraft {
    /// The answer number it was started under; the answer that adopts it keeps it.
    id: AnswerId,
    request: GenerateRequest,
    /// What the drafter reported so far, replayed into the answer that adopts it.
    reports: Vec<DraftReport>,
    /// The drafter has stopped, or was stopped because the draft is full.
    done: bool,
}

#[derive(Debug)]
enum DraftReport {
    Token(Token),
    Finished(bool),
    Failed(String),
}

/// One answer's draft and what became of it.
#[derive(Debug)]
pub(crate) struct Draft {
    tokens: Vec<Token>,
    /// The request the slow model gets (with the draft as its prefix when kept).
    request: GenerateRequest,
    /// The drafter is still producing tokens.
    pub(crate) drafting: bool,
    /// The verifier has decided (and the slow model, or nothing, has been started).
    pub(crate) decided: bool,
    pub(crate) kept: bool,
    /// The continuation (slow model, or the fast completion) produced a token.
    pub(crate) continued: bool,
    /// The fast model took over from a failed slow model.
    pub(crate) fast_completion: bool,
    /// Answer frame where the continuation's audio starts, once its first chunk arrived.
    pub(crate) seam_frame: Option<u64>,
    pub(crate) seam_reported: bool,
    /// Started as an early draft, before the turn ended.
    pub(crate) early: bool,
    /// The drafter was already stopped when the answer adopted the early draft: nothing to
    /// cancel when it is full.
    drafter_stopped: bool,
}

impl EarlyDraft {
    pub(crate) fn id(&self) -> AnswerId {
        self.id
    }
}

impl Draft {
    pub(crate) fn new(request: GenerateRequest) -> Self {
        Self {
            tokens: Vec::new(),
            request,
            drafting: true,
            decided: false,
            kept: false,
            continued: false,
            fast_completion: false,
            seam_frame: None,
            seam_reported: false,
            early: false,
            drafter_stopped: false,
        }
    }

    fn text(&self) -> String {
        self.tokens.iter().map(|t| t.text.as_str()).collect()
    }

    /// Drops the last word when the token cap may have cut it: tokenizers split numbers and
    /// rare words into many pieces, and a draft that ends inside one ("93,840" of "93,840,000")
    /// would be spoken as a different number, with the slow model's rest (",000") as a clause
    /// of its own. The draft then ends where a word starts, as it does when it is full.
    fn drop_partial_word(&mut self) {
        let start = self
            .tokens
            .iter()
            .rposition(|t| t.text.starts_with(char::is_whitespace))
            .unwrap_or(0);
        self.tokens.truncate(start);
    }

    fn features(&self) -> Option<Vec<TokenFeatures>> {
        self.tokens.iter().map(|t| t.features.clone()).collect()
    }
}

impl ConversationCore {
    /// The drafter's request: the answer's own messages; hidden states only when the verifier
    /// reads them (they cost the drafter about a third more prefill on llama.cpp).
    pub(super) fn draft_request(
        &self,
        request: &GenerateRequest,
        dual: &super::DualPathConfig,
    ) -> GenerateRequest {
        let mut draft = request.clone();
        draft.max_tokens = dual.draft_max_tokens;
        draft.want_hidden = dual.verifier.hidden_width() > 0;
        draft
    }

    /// The answer `id` is in flight and still drafting.
    fn drafting(&mut self, id: AnswerId) -> Option<&mut super::answer::Answer> {
        self.answer
            .as_mut()
            .filter(|a| a.id == id && a.draft.as_ref().is_some_and(|d| d.drafting))
    }

    /// Starts (or restarts) an early draft on the transcript so far, when the user is pausing
    /// inside an open turn and nothing else is being answered. Only once the recogniser has
    /// heard as far as the VAD's end decision: its transcript then includes the decode it made
    /// in the pause, so the words are those the turn will most likely end with (a partial from
    /// before the pause often lacks the last word or the punctuation, and each restart costs
    /// the drafter's tokens on the cores the recogniser needs).
    pub(super) fn maybe_draft_early(&mut self) {
        let Some(dual) = self.cfg.dual.clone().filter(|d| d.early_draft) else {
            return;
        };
        if !self.user_paused
            || self.turn.end_decided().is_none_or(|d| self.asr_pos < d)
            || self.awaiting.is_some()
            || self.answer.is_some()
            || !self.detector.user_turn_open()
        {
            return;
        }
        let text = self.turn.text_with_partial();
        if text.trim().is_empty() {
            return;
        }
        let request = self.draft_request(&self.answer_request(&text), &dual);
        if self.early.as_ref().is_some_and(|e| e.request == request) {
            return;
        }
        self.cancel_early_draft();
        self.last_answer += 1;
        let id = AnswerId(self.last_answer);
        tracing::debug!(
            answer = id.0,
            %text,
            after_end_decision_ms = self.turn.end_decided().map(|d| self.now.since(d)),
            "early draft"
        );
        self.actions.push(Action::StartDraft {
            answer: id,
            request: request.clone(),
        });
        self.early = Some(EarlyDraft {
            id,
            request,
            reports: Vec::new(),
            done: false,
        });
    }

    /// Drops the early draft (the user spoke on, the transcript changed, or another answer
    /// started).
    pub(super) fn cancel_early_draft(&mut self) {
        if let Some(e) = self.early.take() {
            if !e.done {
                self.actions.push(Action::CancelDraft { answer: e.id });
            }
        }
    }

    /// The early draft, if it was made for exactly this draft request; any other is cancelled.
    pub(super) fn take_early_draft(&mut self, request: &GenerateRequest) -> Option<EarlyDraft> {
        if let Some(e) = self.early.as_ref().filter(|e| e.request == *request) {
            tracing::debug!(
                answer = e.id.0,
                held = e.reports.len(),
                done = e.done,
                "the answer takes the early draft"
            );
            return self.early.take();
        }
        if let Some(e) = &self.early {
            tracing::debug!(
                answer = e.id.0,
                early = ?e.request.messages.last().map(|m| &m.content),
                now = ?request.messages.last().map(|m| &m.content),
                "the early draft was for other words"
            );
        }
        self.cancel_early_draft();
        None
    }

    /// The draft of answer `id`, while that answer is the one in flight.
    fn draft_of(&mut self, id: AnswerId) -> Option<&mut Draft> {
        self.answer
            .as_mut()
            .filter(|a| a.id == id)
            .and_then(|a| a.draft.as_mut())
    }

    /// The answer `id` adopts `early`'s draft: what the drafter reported is handled as if it
    /// came now; what it reports from here on goes to the answer as usual.
    pub(super) fn adopt_early_draft(&mut self, early: EarlyDraft) {
        let id = early.id;
        if let Some(d) = self.draft_of(id) {
            d.early = true;
            d.drafter_stopped = early.done;
        }
        for report in early.reports {
            match report {
                DraftReport::Token(t) => self.on_draft_token(id, t),
                DraftReport::Finished(complete) => self.on_draft_finished(id, complete),
                DraftReport::Failed(reason) => self.on_draft_failed(id, reason),
            }
        }
    }

    fn is_early(&self, id: AnswerId) -> bool {
        self.early.as_ref().is_some_and(|e| e.id == id)
    }

    /// Holds a report for the early draft.
    fn hold_early(&mut self, report: DraftReport) {
        let Some(dual) = self.cfg.dual.clone() else {
            return;
        };
        let Some(e) = self.early.as_mut() else {
            return;
        };
        if e.done {
            return; // After the cut: the answer would ignore it too.
        }
        let id = e.id;
        match &report {
            DraftReport::Token(token) => {
                let mut pieces: Vec<&str> = e
                    .reports
                    .iter()
                    .filter_map(|r| match r {
                        DraftReport::Token(t) => Some(t.text.as_str()),
                        _ => None,
                    })
                    .collect();
                pieces.push(&token.text);
                // Stop the drafter where the answer would: at the word after the draft, or
                // at the token cap.
                if draft_token_count(&pieces, dual.draft_words) < pieces.len()
                    || pieces.len() >= dual.draft_max_tokens
                {
                    e.done = true;
                    self.actions.push(Action::CancelDraft { answer: id });
                }
            }
            DraftReport::Finished(_) | DraftReport::Failed(_) => e.done = true,
        }
        e.reports.push(report);
    }

    pub(super) fn on_draft_token(&mut self, id: AnswerId, token: Token) {
        if self.is_early(id) {
            self.hold_early(DraftReport::Token(token));
            return;
        }
        let now = self.now;
        let Some(dual) = self.cfg.dual.clone() else {
            return;
        };
        let Some(a) = self
            .answer
            .as_mut()
            .filter(|a| a.id == id && a.draft.as_ref().is_some_and(|d| d.drafting))
        else {
            return; // A cancelled or finished draft's token.
        };
        a.first_token.get_or_insert(now);
        let Some(d) = a.draft.as_mut() else {
            return;
        };
        let mut pieces: Vec<&str> = d.tokens.iter().map(|t| t.text.as_str()).collect();
        pieces.push(&token.text);
        // This token starts the word after the draft: the draft is full without it.
        let full = draft_token_count(&pieces, dual.draft_words) < pieces.len();
        if !full {
            d.tokens.push(token);
        }
        if full || d.tokens.len() >= dual.draft_max_tokens {
            if !full {
                d.drop_partial_word();
            }
            d.drafting = false;
            if !d.drafter_stopped {
                self.actions.push(Action::CancelDraft { answer: id });
            }
            self.decide_draft(false);
        }
    }

    /// The drafter stopped by itself; `complete`: it ended its message (the whole answer is the
    /// draft).
    pub(super) fn on_draft_finished(&mut self, id: AnswerId, complete: bool) {
        if self.is_early(id) {
            self.hold_early(DraftReport::Finished(complete));
            return;
        }
        let Some(a) = self.drafting(id) else {
            return;
        };
        if let Some(d) = a.draft.as_mut() {
            d.drafting = false;
        }
        self.decide_draft(complete);
    }

    pub(super) fn on_draft_failed(&mut self, id: AnswerId, reason: String) {
        if self.is_early(id) {
            self.hold_early(DraftReport::Failed(reason));
            return;
        }
        let Some(a) = self.drafting(id) else {
            return;
        };
        if let Some(d) = a.draft.as_mut() {
            d.drafting = false;
            d.tokens.clear();
        }
        tracing::warn!(%reason, "the drafter failed; the slow model answers alone");
        self.decide_draft(false);
    }

    /// The verifier's decision, then the slow model (or the end of the answer).
    fn decide_draft(&mut self, complete: bool) {
        let now = self.now;
        let Some(dual) = self.cfg.dual.clone() else {
            return;
        };
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        let Some(d) = a.draft.as_mut().filter(|d| !d.decided) else {
            return;
        };
        d.decided = true;
        let early = d.early;
        let text = d.text();
        let score = match d.features() {
            Some(f) if !f.is_empty() => match dual.verifier.score_draft(&f) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "the verifier cannot score this draft");
                    None
                }
            },
            _ => None,
        };
        let kept = !text.trim().is_empty() && dual.keeps(score);
        d.kept = kept;
        let mut request = d.request.clone();
        let id = a.id;
        let draft_ms = now.since(a.started);
        if kept {
            request.assistant_prefix = text.clone();
            a.push_text(&text);
            a.speak(text.trim().to_string(), now, &mut self.actions);
            if complete {
                a.llm_done = true;
                self.actions.push(Action::FinishSpeech { answer: id });
            } else {
                self.actions.push(Action::StartGeneration {
                    answer: id,
                    request,
                });
            }
        } else {
            // The slow model's first token is the answer's.
            a.first_token = None;
            self.actions.push(Action::StartGeneration {
                answer: id,
                request,
            });
        }
        self.emit(ConversationEvent::Draft {
            text: text.trim().to_string(),
            score,
            kept,
            draft_ms,
            early,
        });
    }

    /// The continuation produced a token (a later failure ends the answer as usual).
    pub(super) fn note_continuation(&mut self, id: AnswerId) {
        if let Some(d) = self.draft_of(id) {
            d.continued = true;
        }
    }

    /// The slow model failed before its first token: the fast model completes the answer from
    /// the kept draft (or answers alone). True if it took over; false: fail as usual.
    pub(super) fn take_over_from_slow(&mut self, id: AnswerId, message: &str) -> bool {
        let Some(a) = self.answer.as_mut().filter(|a| a.id == id) else {
            return false;
        };
        let Some(d) = a
            .draft
            .as_mut()
            .filter(|d| d.decided && !d.continued && !d.fast_completion)
        else {
            return false;
        };
        d.fast_completion = true;
        let mut request = d.request.clone();
        if d.kept {
            request.assistant_prefix = d.text();
        }
        self.actions.push(Action::StartFastCompletion {
            answer: id,
            request,
        });
        tracing::warn!(error = %message, "the slow model failed; the fast model completes the answer");
        self.emit(ConversationEvent::Error {
            message: format!("{message} (the fast model completes the answer)"),
        });
        true
    }

    /// The continuation's first audio arrives at answer frame `frame`.
    pub(super) fn mark_seam(&mut self, id: AnswerId, frame: u64) {
        if let Some(d) = self
            .draft_of(id)
            .filter(|d| d.kept && d.seam_frame.is_none())
        {
            d.seam_frame = Some(frame);
        }
    }

    /// `gap` output frames passed between the draft's end and the continuation's start.
    pub(super) fn report_seam(&mut self, gap_frames: u64) {
        let rate = u64::from(self.cfg.output_rate.0.max(1));
        self.emit(ConversationEvent::Seam {
            gap_ms: gap_frames * 1000 / rate,
        });
    }

    pub(super) fn draft_in_flight(&self) -> bool {
        self.answer
            .as_ref()
            .and_then(|a| a.draft.as_ref())
            .is_some_and(|d| d.drafting)
    }
}
