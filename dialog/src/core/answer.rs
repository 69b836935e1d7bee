//! The assistant's side: one answer from its generation request to its end, cancelled or not.

use super::dual::Draft;
use super::time::Millis;
use super::{Action, AnswerId, ClauseId, ConversationCore, LlmFailure};
use crate::events::{ConversationEvent, TurnInput, TurnLatency};
use crate::llm::{GenerateRequest, GenerationStats, Token};
use std::collections::VecDeque;
use vr_core::clause::ClauseChunker;

/// What a turn's latency breakdown is measured from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TurnClock {
    pub(crate) turn: u32,
    pub(crate) input: TurnInput,
    /// Where the onset is measured from: the end of speech, or the typed text's arrival.
    pub(crate) start: Millis,
    pub(crate) speech_end: Option<Millis>,
    pub(crate) endpointing_ms: Option<u64>,
    pub(crate) asr_final_ms: Option<u64>,
}

/// A contiguous stretch of playback: answer frame `frame` plays at output frame `out`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) frame: u64,
    pub(crate) out: u64,
}

/// One answer in flight: LLM tokens → clauses → speech → output.
pub(crate) struct Answer {
    pub(crate) id: AnswerId,
    user_text: String,
    chunker: ClauseChunker,
    /// Clauses handed to the synthesizer, by [`ClauseId`].
    pub(crate) clauses: Vec<String>,
    pub(crate) llm_done: bool,
    pub(crate) tts_done: bool,
    /// Text generated so far.
    text: String,
    /// Clauses that started playing.
    pub(crate) spoken: Vec<String>,
    /// Audio (output rate) received and not yet written.
    pub(crate) pending: VecDeque<f32>,
    /// Answer frames received / written so far.
    pub(crate) produced: u64,
    pub(crate) written: u64,
    pub(crate) run: Option<Run>,
    /// Output frame at which the written audio ends (meaningful with a `run`).
    pub(crate) queue_end: u64,
    /// Clauses not yet reported: (answer frame where it starts, text).
    pub(crate) marks: VecDeque<(u64, String)>,
    pub(crate) last_clause: Option<ClauseId>,
    /// Paused by an overlap, with the answer frames the output kept.
    pub(crate) paused: Option<u64>,
    /// The output was flushed for this answer (a barge-in): it must not be flushed twice.
    pub(crate) flushed: bool,
    /// Output frame of answer frame 0, once written.
    pub(crate) first_out: Option<u64>,
    /// Its first sample has been reported playing (Speaking, latency).
    pub(crate) onset_reported: bool,
    fallback: bool,
    pub(crate) started: Millis,
    pub(crate) first_token: Option<Millis>,
    first_clause: Option<Millis>,
    pub(crate) first_chunk: Option<Millis>,
    stats: Option<GenerationStats>,
    clock: Option<TurnClock>,
    /// The dual path's draft, when the answer is drafted.
    pub(crate) draft: Option<Draft>,
}

impl Answer {
    /// Text the answer says (the kept draft, then the continuation).
    pub(crate) fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Hands one clause to the synthesizer.
    pub(crate) fn speak(&mut self, text: String, now: Millis, actions: &mut Vec<Action>) {
        self.first_clause.get_or_insert(now);
        let clause = ClauseId(self.clauses.len() as u32);
        self.clauses.push(text.clone());
        actions.push(Action::SpeakText {
            answer: self.id,
            clause,
            text,
        });
    }

    fn end_event(&self, interrupted: bool) -> ConversationEvent {
        ConversationEvent::AnswerEnd {
            text: self.text.trim().to_string(),
            spoken: self.spoken.join(" "),
            interrupted,
            prompt_tokens: self.stats.as_ref().map(|s| s.prompt_tokens),
            reused_tokens: self.stats.as_ref().map(|s| s.reused_tokens),
            generated_tokens: self.stats.as_ref().map(|s| s.generated_tokens),
        }
    }
}

impl ConversationCore {
    /// `id` names the answer in flight and its text is still coming.
    fn generating(&self, id: AnswerId) -> bool {
        self.answer
            .as_ref()
            .is_some_and(|a| a.id == id && !a.llm_done)
    }

    /// The answer's request for `user_text`: the memory, the scene and the user's words.
    pub(super) fn answer_request(&self, user_text: &str) -> GenerateRequest {
        let mut request = GenerateRequest::new(self.prompt(user_text));
        request.max_tokens = self.cfg.max_answer_tokens;
        request.sampling = self.cfg.sampling;
        request
    }

    pub(super) fn start_answer(&mut self, user_text: String, clock: TurnClock) {
        self.apply_voice();
        let request = self.answer_request(&user_text);
        let draft_request = self
            .cfg
            .dual
            .clone()
            .map(|dual| self.draft_request(&request, &dual));
        let early = draft_request
            .as_ref()
            .and_then(|d| self.take_early_draft(d));
        let id = match &early {
            Some(e) => e.id(),
            None => {
                self.last_answer += 1;
                AnswerId(self.last_answer)
            }
        };
        let draft = match draft_request {
            Some(draft) => {
                if early.is_none() {
                    self.actions.push(Action::StartDraft {
                        answer: id,
                        request: draft,
                    });
                }
                Some(Draft::new(request))
            }
            None => {
                self.actions.push(Action::StartGeneration {
                    answer: id,
                    request,
                });
                None
            }
        };
        self.answer = Some(Answer {
            id,
            user_text,
            chunker: ClauseChunker::new(self.cfg.min_clause_chars, self.cfg.max_clause_chars),
            clauses: Vec::new(),
            llm_done: false,
            tts_done: false,
            text: String::new(),
            spoken: Vec::new(),
            pending: VecDeque::new(),
            produced: 0,
            written: 0,
            run: None,
            queue_end: 0,
            marks: VecDeque::new(),
            last_clause: None,
            paused: None,
            flushed: false,
            first_out: None,
            onset_reported: false,
            fallback: false,
            started: self.now,
            first_token: None,
            first_clause: None,
            first_chunk: None,
            stats: None,
            clock: Some(clock),
            draft,
        });
        if let Some(e) = early {
            self.adopt_early_draft(e);
        }
    }

    pub(super) fn on_llm_token(&mut self, id: AnswerId, token: Token) {
        let now = self.now;
        if !self.generating(id) {
            return; // A cancelled answer's token: never spoken.
        }
        self.note_continuation(id);
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        a.first_token.get_or_insert(now);
        a.text.push_str(&token.text);
        for clause in a.chunker.push(&token.text) {
            a.speak(clause, now, &mut self.actions);
        }
    }

    pub(super) fn on_llm_finished(&mut self, id: AnswerId, stats: Option<GenerationStats>) {
        let now = self.now;
        if !self.generating(id) {
            return;
        }
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        a.stats = stats;
        a.llm_done = true;
        if let Some(rest) = a.chunker.finish() {
            a.speak(rest, now, &mut self.actions);
        }
        self.actions.push(Action::FinishSpeech { answer: id });
    }

    /// The LLM failed: say so (aloud if it cannot be reached), and end the answer's text.
    pub(super) fn on_llm_failed(&mut self, id: AnswerId, failure: LlmFailure) {
        if !self.generating(id) {
            return; // A cancelled generation's failure concerns nobody.
        }
        if self.take_over_from_slow(id, &failure.message) {
            return;
        }
        tracing::warn!(error = %failure.message, unreachable = failure.unreachable, busy = failure.busy, "language model failed");
        let spoken = failure.spoken();
        self.emit(ConversationEvent::Error {
            message: failure.message,
        });
        let now = self.now;
        let Some(a) = self.answer.as_mut().filter(|a| a.id == id) else {
            return;
        };
        a.llm_done = true;
        if let Some(sentence) = spoken {
            a.fallback = true;
            a.chunker.reset();
            a.speak(sentence.to_string(), now, &mut self.actions);
        }
        self.actions.push(Action::FinishSpeech { answer: id });
    }

    /// Drops the answer in flight: the output drops what it holds (first, so nothing more of
    /// it plays), the LLM stops, the synthesizer forgets it.
    pub(super) fn cancel_answer(&mut self) {
        self.cancel_early_draft();
        self.flush_output();
        let drafting = self.draft_in_flight();
        let Some(a) = self.answer.take() else {
            return;
        };
        if drafting {
            self.actions.push(Action::CancelDraft { answer: a.id });
        }
        // With a draft still undecided, no continuation was started.
        let continuing = a.draft.as_ref().is_none_or(|d| d.decided);
        if !a.llm_done && continuing {
            self.actions.push(Action::CancelGeneration { answer: a.id });
        }
        self.actions.push(Action::CancelSpeech { answer: a.id });
        self.overlap = None;
        if a.first_out.is_some() {
            self.remember(&a);
        }
        self.emit(a.end_event(true));
        self.detector.set_assistant_speaking(false);
    }

    /// Ends an answer that has played out.
    pub(super) fn finish_answer(&mut self) {
        let Some(mut a) = self.answer.take() else {
            return;
        };
        // Clauses whose audio was too short to be seen starting are still spoken now.
        let rest: Vec<String> = a.marks.drain(..).map(|(_, text)| text).collect();
        a.spoken.extend(rest);
        self.remember(&a);
        self.emit(a.end_event(false));
        self.detector.set_assistant_speaking(false);
        let next = if self.detector.user_turn_open() {
            crate::events::LoopState::UserSpeaking
        } else {
            crate::events::LoopState::Listening
        };
        self.set_state(next);
    }

    /// The exchange goes into memory as it was heard: only the clauses that started playing.
    fn remember(&mut self, a: &Answer) {
        if a.fallback && a.spoken.is_empty() {
            return;
        }
        self.memory.push_user(a.user_text.clone());
        let spoken = a.spoken.join(" ");
        if !a.fallback && !spoken.trim().is_empty() {
            self.memory.push_assistant(spoken);
        }
    }

    /// The first sample of the answer played at output frame `first_out`: the latency breakdown
    /// of its turn (once per answer).
    pub(super) fn latency(&mut self, first_out: u64) -> Option<TurnLatency> {
        let onset = self.out.time_of(first_out);
        let a = self.answer.as_mut()?;
        let clock = a.clock.take()?;
        let since = |from: Millis, to: Option<Millis>| to.map(|t| t.since(from));
        Some(TurnLatency {
            turn: clock.turn,
            input: clock.input,
            speech_end_ms: clock.speech_end.map(Millis::ms),
            endpointing_ms: clock.endpointing_ms,
            asr_final_ms: clock.asr_final_ms,
            llm_first_token_ms: since(a.started, a.first_token),
            first_clause_ms: since(a.started, a.first_clause),
            tts_first_chunk_ms: a.first_clause.and_then(|c| since(c, a.first_chunk)),
            onset_ms: onset.since(clock.start),
        })
    }
}
