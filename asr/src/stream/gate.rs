//! Speech gating: the stream's own VAD, or the decisions of the caller's
//! ([`StreamingRecognizer::push_with_vad`]), open and close utterance windows; pushes decode when
//! an update is due.

use super::{WhisperStream, HOP, VAD_LAG_MS};
use crate::vad::VadEvent;
use crate::{AsrError, AsrEvent, StreamingRecognizer};

impl WhisperStream {
    /// Gated on speech starts and ends, from its own VAD or the caller's.
    fn gated(&self) -> bool {
        self.vad.is_some() || self.external_vad
    }

    /// The end of the stream: the last frame, then the VAD's last decisions, then the final.
    fn finish_gated(&mut self, vad_events: Vec<VadEvent>) -> Result<Vec<AsrEvent>, AsrError> {
        let mut out = Vec::new();
        self.s.mel.finish()?;
        for e in vad_events {
            self.on_vad(e, &mut out)?;
        }
        self.finalize(&mut out)?;
        Ok(out)
    }

    /// One push: the samples, then the VAD's decisions on them, then what they make due.
    fn push_gated(&mut self, vad_events: Vec<VadEvent>) -> Result<Vec<AsrEvent>, AsrError> {
        let mut out = Vec::new();
        let onset = vad_events
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechStarted { .. }));
        for e in vad_events {
            self.on_vad(e, &mut out)?;
        }
        if onset && self.s.vad_active {
            // Hand the speech start out before the first (slow) decode of the new utterance: a
            // barge-in must not wait for Whisper. The next push decodes.
            return Ok(out);
        }
        if self.gated() && !self.s.vad_active {
            if let Some(p) = self.s.paused_at {
                if self.s.total.saturating_sub(p) >= Self::ms_to_samples(self.cfg.final_silence_ms)
                {
                    self.finalize(&mut out)?;
                }
            }
            if self.s.utt_start.is_none() {
                // Outside speech only the pre-roll is kept, plus the VAD's decision lag: it
                // reports a start only after `min_speech_ms` (dated back), and the window must
                // still reach back to the onset then.
                let keep = Self::ms_to_frames(self.cfg.pre_roll_ms + VAD_LAG_MS);
                let from = self.s.mel.end_frame().saturating_sub(keep);
                self.s.mel.drain_front(from);
                self.s.window_start = from;
                self.s.last_decode_end = from;
            }
            return Ok(out);
        }
        if self.s.utt_start.is_none() {
            self.s.utt_start = Some(self.s.window_start as u64 * HOP as u64);
        }
        let end = self.s.mel.end_frame();
        let since_start = end.saturating_sub(self.s.window_start);
        let due = if self.s.last_decode_end <= self.s.window_start {
            since_start >= Self::ms_to_frames(self.cfg.first_update_ms)
        } else {
            end.saturating_sub(self.s.last_decode_end)
                >= Self::ms_to_frames(self.cfg.update_interval_ms)
        };
        if due {
            self.update(&mut out)?;
        }
        Ok(out)
    }

    fn on_vad(&mut self, e: VadEvent, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        match e {
            VadEvent::SpeechStarted { at } => {
                out.push(AsrEvent::SpeechStarted { at });
                self.s.vad_active = true;
                if self.s.paused_at.take().is_some() && self.s.utt_start.is_some() {
                    // Speech resumed within `final_silence_ms`: same utterance, same window.
                    return Ok(());
                }
                let pre = Self::ms_to_frames(self.cfg.pre_roll_ms);
                let frame = (at.0 as usize / HOP).saturating_sub(pre);
                self.s.window_start = frame.max(self.s.mel.first_frame());
                self.s.last_decode_end = self.s.window_start;
                self.s.utt_start = Some(at.0);
            }
            VadEvent::SpeechEnded { at } => {
                out.push(AsrEvent::SpeechEnded { at });
                self.s.vad_active = false;
                if self.s.utt_start.is_some() {
                    self.settle(at.0 as usize / HOP, out)?;
                    self.s.paused_at = Some(at.0);
                }
            }
            VadEvent::Pause { at } => {
                // Speech may have ended at `at`: decode what came before now, while the VAD
                // waits out its hangover, so that at the speech end the transcript is current
                // and only committing it remains. If speech goes on this was an update like any
                // other, made at a word gap.
                let frame = at.0 as usize / HOP;
                if self.s.vad_active
                    && self.s.utt_start.is_some()
                    && self.s.last_decode_end < frame
                    && frame > self.s.window_start
                {
                    self.update(out)?;
                    self.s.hint_decode = Some(self.s.decodes);
                }
            }
        }
        Ok(())
    }
}

impl StreamingRecognizer for WhisperStream {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<AsrEvent>, AsrError> {
        self.s.mel.push(samples)?;
        self.s.total += samples.len() as u64;
        let vad_events = match self.vad.as_mut() {
            Some(v) => v.push(samples)?,
            None => Vec::new(),
        };
        self.push_gated(vad_events)
    }

    fn end_utterance(&mut self) -> Result<Vec<AsrEvent>, AsrError> {
        let mut out = Vec::new();
        // Settled at the speech end: finalising now decodes nothing more, so the final is the
        // one `final_silence_ms` later would have given.
        if self.gated() && !self.s.vad_active && self.s.paused_at.is_some() {
            self.finalize(&mut out)?;
        }
        Ok(out)
    }

    fn use_external_vad(&mut self) -> bool {
        if self.vad.take().is_some() {
            self.external_vad = true;
        }
        self.external_vad
    }

    fn push_with_vad(
        &mut self,
        samples: &[f32],
        vad: &[VadEvent],
    ) -> Result<Vec<AsrEvent>, AsrError> {
        if !self.external_vad {
            return self.push(samples);
        }
        self.s.mel.push(samples)?;
        self.s.total += samples.len() as u64;
        self.push_gated(vad.to_vec())
    }

    fn finish(&mut self) -> Result<Vec<AsrEvent>, AsrError> {
        let vad_events = match self.vad.as_mut() {
            Some(v) => v.finish(),
            None => Vec::new(),
        };
        self.finish_gated(vad_events)
    }

    fn finish_with_vad(&mut self, vad: &[VadEvent]) -> Result<Vec<AsrEvent>, AsrError> {
        if !self.external_vad {
            return self.finish();
        }
        self.finish_gated(vad.to_vec())
    }

    fn reset(&mut self) {
        self.s.mel.reset();
        self.s.total = 0;
        self.s.window_start = 0;
        self.s.last_decode_end = 0;
        self.s.committed.clear();
        self.s.history.clear();
        self.s.token_frames.clear();
        self.s.done_text.clear();
        self.s.done_tokens.clear();
        self.s.done_words.clear();
        self.s.utt_start = None;
        self.s.paused_at = None;
        self.s.last_partial.clear();
        self.s.context.clear();
        self.s.vad_active = false;
        self.s.window_failed = false;
        if let Some(v) = self.vad.as_mut() {
            if let Err(e) = v.reset() {
                tracing::warn!(error = %e, "VAD reset failed; VAD gating disabled for this stream");
                self.vad = None;
            }
        }
    }
}
