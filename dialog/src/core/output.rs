//! Answer audio: the synthesizer's chunks in, paced writes out, and what the listener has heard
//! so far (the answer's first sample, each clause as it starts).
//!
//! The core models the output's queue from its own writes and the output clock: a write lands
//! after what is still queued, or plays at once on an idle output. Everything it reports as
//! heard is derived from that model, so a driver that reports the output's frame counter
//! ([`super::Event::OutputPlayed`]) keeps it exact.

use super::answer::Run;
use super::time::Millis;
use super::{Action, AnswerId, ClauseId, ConversationCore};
use crate::events::{ConversationEvent, LoopState};

impl ConversationCore {
    fn lead_frames(&self) -> u64 {
        self.out.frames_in(self.cfg.output_lead).max(1)
    }

    pub(super) fn on_tts_audio(&mut self, id: AnswerId, clause: ClauseId, samples: Vec<f32>) {
        let now = self.now;
        let Some(a) = self.answer.as_mut().filter(|a| a.id == id) else {
            return; // Another (cancelled) answer's audio: never played.
        };
        a.first_chunk.get_or_insert(now);
        let seam = clause.0 == 1 && a.last_clause != Some(clause);
        let at = a.produced;
        if a.last_clause != Some(clause) {
            let text = a
                .clauses
                .get(clause.0 as usize)
                .cloned()
                .unwrap_or_default();
            a.marks.push_back((a.produced, text));
            a.last_clause = Some(clause);
        }
        a.produced += samples.len() as u64;
        a.pending.extend(samples);
        if seam {
            self.mark_seam(id, at);
        }
    }

    pub(super) fn on_tts_done(&mut self, id: AnswerId) {
        if let Some(a) = self.answer.as_mut().filter(|a| a.id == id) {
            a.tts_done = true;
        }
    }

    pub(super) fn on_tts_failed(&mut self, id: AnswerId, clause: ClauseId, reason: String) {
        let Some(a) = self.answer.as_ref().filter(|a| a.id == id) else {
            return;
        };
        let text = a
            .clauses
            .get(clause.0 as usize)
            .cloned()
            .unwrap_or_default();
        self.emit(ConversationEvent::Error {
            message: format!("cannot speak {text:?}: {reason}"),
        });
    }

    /// Answer frames written and not yet played, as of now.
    pub(super) fn queued_now(&self) -> u64 {
        let Some(a) = self.answer.as_ref() else {
            return 0;
        };
        if let Some(kept) = a.paused {
            return kept;
        }
        match a.run {
            Some(_) => a.queue_end.saturating_sub(self.out.played_at(self.now)),
            None => 0,
        }
    }

    /// Writes pending audio until the output holds `output_lead` of it.
    pub(super) fn feed_output(&mut self) {
        let played = self.out.played_at(self.now);
        let lead = self.lead_frames();
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        if a.paused.is_some() || a.flushed || a.pending.is_empty() {
            return;
        }
        let queued = match a.run {
            Some(_) => a.queue_end.saturating_sub(played),
            None => 0,
        };
        if queued >= lead {
            return;
        }
        let n = (lead - queued).min(a.pending.len() as u64);
        // The continuation after a kept draft: silence before it only when it starts this write
        // on an output that ran dry (inside a write, it follows the draft sample for sample).
        let (written, ran_dry, idle_since) =
            (a.written, queued == 0 && a.run.is_some(), a.queue_end);
        let seam_gap = a
            .draft
            .as_mut()
            .filter(|d| {
                !d.seam_reported
                    && d.seam_frame
                        .is_some_and(|f| f >= written && f < written + n)
            })
            .map(|d| {
                d.seam_reported = true;
                if ran_dry && d.seam_frame == Some(written) {
                    played.saturating_sub(idle_since)
                } else {
                    0
                }
            });
        if queued == 0 {
            // Nothing queued: this write starts playing now.
            a.run = Some(Run {
                frame: a.written,
                out: played,
            });
            a.queue_end = played;
        }
        a.first_out.get_or_insert(a.queue_end);
        let n = n as usize;
        let samples: Vec<f32> = a.pending.drain(..n).collect();
        a.written += n as u64;
        a.queue_end += n as u64;
        self.actions.push(Action::WriteAudio {
            answer: a.id,
            samples,
        });
        if let Some(gap) = seam_gap {
            self.report_seam(gap);
        }
    }

    /// Reports what started playing: the answer's first sample (→ Speaking, latency) and each
    /// clause, dated when it played.
    pub(super) fn announce(&mut self) {
        let played = self.out.played_at(self.now);
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        let Some(run) = a.run.filter(|_| a.paused.is_none()) else {
            return;
        };
        let out_of = |frame: u64| run.out + frame.saturating_sub(run.frame);
        let mut texts = Vec::new();
        while let Some((frame, _)) = a.marks.front() {
            if *frame >= a.written || out_of(*frame) > played {
                break;
            }
            // A clause that started before this run (before a pause) counts from its resumption.
            let at = out_of((*frame).max(run.frame));
            if let Some((_, text)) = a.marks.pop_front() {
                a.spoken.push(text.clone());
                texts.push((at, text));
            }
        }
        let first = a.first_out.filter(|f| *f <= played && !a.onset_reported);
        if let Some(first) = first {
            a.onset_reported = true;
            self.summary.answers += 1;
            self.detector.set_assistant_speaking(true);
            self.set_state_at(LoopState::Speaking, self.out.time_of(first));
            if let Some(lat) = self.latency(first) {
                self.summary.latencies.push(lat.clone());
                self.emit(ConversationEvent::TurnLatency(lat));
            }
        }
        for (at, text) in texts {
            let at_ms = self.out.time_of(at).ms();
            self.emit(ConversationEvent::AssistantText { text, at_ms });
        }
    }

    pub(super) fn maybe_finish_answer(&mut self) {
        let played = self.out.played_at(self.now);
        let Some(a) = self.answer.as_ref() else {
            return;
        };
        let played_out =
            a.run.is_none_or(|_| a.queue_end <= played) && a.first_out.is_none_or(|f| f <= played);
        if a.llm_done && a.tts_done && a.pending.is_empty() && a.paused.is_none() && played_out {
            self.announce();
            self.finish_answer();
        }
    }

    /// Pauses the output for the answer in flight; returns the answer frames it keeps.
    pub(super) fn pause_output(&mut self) -> Option<u64> {
        let queued = self.queued_now();
        let a = self.answer.as_mut()?;
        if a.paused.is_none() {
            a.paused = Some(queued);
            self.actions.push(Action::PauseAudio);
        }
        a.paused
    }

    /// A backchannel: what the output kept plays on from now, and writing resumes.
    pub(super) fn resume_after_backchannel(&mut self) {
        let played = self.out.played_at(self.now);
        let Some(a) = self.answer.as_mut() else {
            return;
        };
        let Some(kept) = a.paused.take() else {
            return;
        };
        self.actions.push(Action::ResumeAudio);
        if kept > 0 {
            a.run = Some(Run {
                frame: a.written - kept,
                out: played,
            });
            a.queue_end = played + kept;
        } else {
            // Nothing was kept: the next write starts a new run.
            a.run = None;
        }
    }

    /// Flushes the output for the answer in flight, once; true if it did now.
    pub(super) fn flush_output(&mut self) -> bool {
        let Some(a) = self.answer.as_mut() else {
            return false;
        };
        if a.flushed {
            return false;
        }
        a.flushed = true;
        a.paused = None;
        self.actions.push(Action::FlushAudio);
        true
    }

    /// When the answer's audio next needs the core: a top-up of the output, its first sample or
    /// a clause starting to play, or its end.
    pub(super) fn output_deadline(&self) -> Option<Millis> {
        let a = self.answer.as_ref()?;
        if a.paused.is_some() || a.flushed {
            return None;
        }
        let mut frames: Vec<u64> = Vec::new();
        if let Some(run) = a.run {
            let out_of = |frame: u64| run.out + frame.saturating_sub(run.frame);
            if let Some(f) = a.first_out.filter(|_| !a.onset_reported) {
                frames.push(f);
            }
            if let Some((frame, _)) = a.marks.front().filter(|(f, _)| *f < a.written) {
                frames.push(out_of(*frame));
            }
            if !a.pending.is_empty() {
                // Woken when half the lead has played, rather than at every played frame.
                frames.push((a.queue_end + 1).saturating_sub(self.lead_frames() / 2));
            } else if a.llm_done && a.tts_done {
                frames.push(a.queue_end);
            }
        }
        frames
            .into_iter()
            .min()
            .map(|f| self.out.deadline_of(f).max(self.now))
    }
}
