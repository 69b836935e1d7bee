//! The user's side: VAD and recogniser events, the turn detector's decisions, and when a turn
//! that ended is answered.

use super::answer::TurnClock;
use super::time::Millis;
use super::{Action, ConversationCore};
use crate::events::{ConversationEvent, LoopState, TurnInput};
use crate::turn::{TurnEvent, TurnEventKind};

/// A final belongs to a segment when it starts within this of the VAD's speech start (the
/// recogniser's VAD is the same model on the same audio, a chunk either way), or when it runs
/// on past the turn's start by more than this.
const SEGMENT_SLACK_MS: u64 = 64;

/// The user's turn being collected.
#[derive(Debug, Default)]
pub(crate) struct TurnRecord {
    /// Final transcripts of the turn's utterances, in order.
    finals: Vec<String>,
    /// Speech starts of the segments that make up this turn.
    segments: Vec<Millis>,
    /// When the VAD reported the end of the turn's last segment: the recogniser has finalised
    /// the turn once it has processed this far.
    end_decided: Option<Millis>,
    /// End of the last speech segment (the VAD's speech end).
    speech_end: Option<Millis>,
    /// When the last final of the turn arrived.
    final_at: Option<Millis>,
    /// Last text prefilled, so an unchanged partial is not prefilled twice.
    prepared: String,
    /// The recogniser's latest partial since the turn's last final.
    partial: String,
}

impl TurnRecord {
    fn starting_at(at: Millis) -> Self {
        Self {
            segments: vec![at],
            ..Self::default()
        }
    }

    fn text(&self) -> String {
        self.finals.join(" ")
    }

    pub(super) fn end_decided(&self) -> Option<Millis> {
        self.end_decided
    }

    /// The finals and the partial after them: the turn's words as the recogniser has them now.
    pub(super) fn text_with_partial(&self) -> String {
        let mut text = self.text();
        if !self.partial.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&self.partial);
        }
        text
    }

    /// Whether the final of the utterance `start..end` is this turn's. The recogniser's
    /// utterance can begin well before the turn: a "wait" heard as a backchannel and the barge-in
    /// right after it are one utterance to the recogniser, but the turn starts at the barge-in.
    /// Speech that ends inside the turn is the turn's either way.
    fn owns(&self, start: Millis, end: Millis) -> bool {
        self.segments
            .iter()
            .any(|s| s.0.abs_diff(start.0) <= SEGMENT_SLACK_MS)
            || self
                .segments
                .first()
                .is_some_and(|first| end.0 > first.0 + SEGMENT_SLACK_MS)
    }
}

/// A pending overlap: the output was paused at the user's speech start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingOverlap {
    at: Millis,
    detected: Millis,
    /// Answer frames queued in the output when it paused: dropped if this becomes a barge-in.
    queued: u64,
}

impl ConversationCore {
    fn samples(&self, t: Millis) -> vr_core::SampleIndex {
        t.to_samples(self.cfg.turn.sample_rate)
    }

    fn millis(&self, pos: vr_core::SampleIndex) -> Millis {
        Millis::from_samples(pos, self.cfg.turn.sample_rate)
    }

    pub(super) fn on_speech_started(&mut self, at: Millis) {
        self.user_paused = false;
        self.cancel_early_draft();
        let evs = self.detector.speech_started(self.samples(at));
        self.on_turn_events(evs);
    }

    pub(super) fn on_speech_ended(&mut self, at: Millis) {
        if self.detector.user_turn_open() {
            self.turn.speech_end = Some(at);
            self.turn.end_decided = Some(self.now);
            self.user_paused = true;
        }
        let evs = self.detector.speech_ended(self.samples(at));
        self.on_turn_events(evs);
        self.maybe_draft_early();
    }

    pub(super) fn on_turn_model(&mut self, speech_end: Millis, probability: f32) {
        let (end, now) = (self.samples(speech_end), self.samples(self.now));
        let evs = self.detector.turn_model(end, probability, now);
        self.on_turn_events(evs);
    }

    /// Fires the detector's timers up to now. While an overlap is pending, only up to now minus
    /// the VAD's end lag: a speech end before the backchannel limit may not be reported yet.
    pub(super) fn tick_detector(&mut self) {
        let at = if self.overlap.is_some() {
            self.now.before(self.cfg.vad_end_lag)
        } else {
            self.now
        };
        let evs = self.detector.tick(self.samples(at));
        self.on_turn_events(evs);
    }

    pub(super) fn on_partial(&mut self, text: String, stable_prefix_len: usize) {
        let trimmed = text.trim().to_string();
        self.emit(ConversationEvent::Partial {
            text,
            stable_prefix_len,
        });
        if !trimmed.is_empty() {
            self.asr_pending = true;
        }
        self.turn.partial = trimmed;
        if !self.detector.user_turn_open() {
            return;
        }
        let so_far = self.turn.text_with_partial();
        if self.cfg.speculative_prefill && so_far != self.turn.prepared && !so_far.trim().is_empty()
        {
            let messages = self.prompt(&so_far);
            self.actions.push(Action::Prefill { messages });
            self.turn.prepared = so_far;
        }
        self.maybe_draft_early();
    }

    pub(super) fn on_final(&mut self, text: String, start: Millis, end: Millis) {
        self.asr_pending = false;
        let trimmed = text.trim().to_string();
        self.emit(ConversationEvent::Final {
            text,
            start_ms: start.ms(),
            end_ms: end.ms(),
        });
        if self.turn.owns(start, end) && !trimmed.is_empty() {
            self.turn.finals.push(trimmed);
            self.turn.final_at = Some(self.now);
            self.turn.partial.clear();
            // The final may change the words the early draft was made on.
            self.maybe_draft_early();
        } else if !trimmed.is_empty() {
            tracing::debug!(
                text = %trimmed,
                "final outside a user turn (backchannel or ignored)"
            );
        }
        // The final a partial announced may be all a turn that ended was waiting for.
        self.try_start_awaited();
    }

    /// No more audio: whatever turn is open ends as if silence followed.
    pub(super) fn on_input_ended(&mut self, at: Millis) {
        self.input_done = true;
        let t = &self.cfg.turn;
        let horizon = at.after(t.silence_timeout + t.grace + t.backchannel_min);
        let evs = self.detector.tick(self.samples(horizon));
        self.on_turn_events(evs);
        self.asr_pos = self.asr_pos.max(at);
        self.try_start_awaited();
    }

    pub(super) fn on_client_text(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.cancel_answer();
        self.set_state(LoopState::Thinking);
        self.turns += 1;
        let clock = TurnClock {
            turn: self.turns,
            input: TurnInput::Text,
            start: self.now,
            speech_end: None,
            endpointing_ms: None,
            asr_final_ms: None,
        };
        self.start_answer(text.to_string(), clock);
    }

    /// Answers a turn that ended once the recogniser has finalised it.
    pub(super) fn try_start_awaited(&mut self) {
        let Some(ended) = self.awaiting else {
            return;
        };
        if self.turn.end_decided.is_some_and(|d| self.asr_pos < d) {
            return;
        }
        // Bounded: a recogniser whose pending text never becomes a final (all of it cut as
        // hallucination) must not keep the user waiting for ever.
        let hold_until = self.turn.end_decided.map(|d| d.after(self.cfg.final_hold));
        if self.asr_pending && !self.input_done && hold_until.is_some_and(|h| self.asr_pos < h) {
            return;
        }
        self.awaiting = None;
        let text = self.turn.text();
        if text.is_empty() {
            self.set_state(LoopState::Listening);
            return;
        }
        self.turns += 1;
        self.summary.turns += 1;
        let speech_end = self.turn.speech_end.unwrap_or(ended);
        let clock = TurnClock {
            turn: self.turns,
            input: TurnInput::Speech,
            start: speech_end,
            speech_end: Some(speech_end),
            endpointing_ms: Some(ended.since(speech_end)),
            asr_final_ms: Some(self.turn.final_at.unwrap_or(ended).since(speech_end)),
        };
        self.start_answer(text, clock);
    }

    fn on_turn_events(&mut self, evs: Vec<TurnEvent>) {
        for t in evs {
            self.on_turn(t);
        }
    }

    fn emit_turn(&mut self, t: &TurnEvent) {
        self.emit(ConversationEvent::Turn {
            kind: t.kind,
            reason: t.reason,
            at_ms: self.millis(t.at).ms(),
        });
    }

    fn on_turn(&mut self, t: TurnEvent) {
        use TurnEventKind as K;
        let turn_start = self.millis(t.turn_start);
        // Audio first: the output stops (or resumes) in the step's first action.
        match t.kind {
            K::Overlap => self.pause_for_overlap(turn_start),
            K::BargeIn => {
                self.barge_in(&t, turn_start);
                return;
            }
            K::Backchannel => {
                self.summary.backchannels += 1;
                self.overlap = None;
                self.resume_after_backchannel();
            }
            _ => {}
        }
        self.emit_turn(&t);
        match t.kind {
            K::TurnStarted => {
                // The user speaks again before the answer plays: they were not done.
                self.cancel_answer();
                let previous =
                    std::mem::replace(&mut self.turn, TurnRecord::starting_at(turn_start));
                // A turn that ended but was never answered (its final had not come) is the start
                // of this one: the recogniser may finalise both as one utterance from the
                // earlier speech start, which this turn must own, or that speech is lost.
                if self.awaiting.take().is_some() {
                    self.turn.finals = previous.finals;
                    self.turn.segments.splice(0..0, previous.segments);
                }
                self.set_state(LoopState::UserSpeaking);
            }
            K::Resumed => {
                // Within the grace period: the answer started for the shorter turn is dropped.
                self.cancel_answer();
                self.awaiting = None;
                self.turn.segments.push(self.millis(t.at));
                self.turn.end_decided = None;
                self.set_state(LoopState::UserSpeaking);
            }
            K::TurnEnded => {
                if self.asr_pending {
                    self.actions.push(Action::EndUtterance { upto: self.now });
                }
                self.awaiting = Some(self.now);
                self.set_state(LoopState::Thinking);
                self.try_start_awaited();
            }
            K::TurnCommitted => self.turn.prepared.clear(),
            K::Paused | K::Waiting | K::Overlap | K::BargeIn | K::Backchannel | K::Ignored => {}
        }
    }

    /// User speech over the answer: stop the audio now, keep what is queued in case it is only
    /// a backchannel.
    fn pause_for_overlap(&mut self, at: Millis) {
        // Clauses heard up to now are reported before the pause hides them.
        self.announce();
        let Some(queued) = self.pause_output() else {
            return;
        };
        self.overlap = Some(PendingOverlap {
            at,
            detected: self.now,
            queued,
        });
    }

    fn barge_in(&mut self, t: &TurnEvent, turn_start: Millis) {
        let ov = match self.overlap.take() {
            Some(ov) => ov,
            // `backchannel_min = 0`: the barge-in comes without an overlap first.
            None => PendingOverlap {
                at: turn_start,
                detected: self.now,
                queued: self.queued_now(),
            },
        };
        let flushed = self.flush_output();
        self.emit_turn(t);
        self.cancel_answer();
        self.summary.barge_ins += 1;
        let dropped = if flushed { ov.queued } else { 0 };
        self.emit(ConversationEvent::BargeIn {
            at_ms: ov.at.ms(),
            detected_ms: ov.detected.ms(),
            // The pause is the first action of the step that detected the overlap, so on the
            // core's clock it takes no time; the driver's own delay is not seen from here.
            stop_latency_ms: 0,
            dropped_ms: self.out.ms_of(dropped),
        });
        self.awaiting = None;
        self.turn = TurnRecord::starting_at(turn_start);
        self.set_state(LoopState::UserSpeaking);
    }
}
