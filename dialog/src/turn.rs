//! Turn detection: when has the user finished speaking, and does speech over the assistant
//! interrupt it?
//!
//! A pure state machine on the 16 kHz sample clock, driven by the VAD's
//! [`AsrEvent::SpeechStarted`]/[`AsrEvent::SpeechEnded`] and by [`TurnDetector::tick`] with the
//! current sample position (time is a parameter: tests run on virtual time). Every decision is a
//! [`TurnEvent`] carrying its [`TurnReason`], so logs and evals can tell *why* a turn ended.
//!
//! Rules:
//! 1. User speech while idle starts a turn.
//! 2. A VAD speech-end pauses the turn; it ends after `silence_timeout` of continued silence.
//!    Speech resuming before that continues the turn.
//!    With [`EndOfTurn::Model`] the caller runs an end-of-turn model (Smart Turn) when the VAD
//!    reports the speech end (its `min_silence_ms` hangover is the short stop) and hands the
//!    probability in with [`TurnDetector::turn_model`] and the sample position at which it was
//!    known: above the threshold the turn ends right there; otherwise it waits
//!    ([`TurnEventKind::Waiting`]) and the silence timer, `fallback_timeout`, is the fallback.
//!    A result for a pause that is already over (speech resumed, or the timer fired) is ignored.
//! 3. For `grace` after a turn ended, resumed speech still continues that same turn (the loop
//!    discards the answer it started and waits for the longer transcript); after the grace period
//!    the turn is committed.
//! 4. While the assistant speaks, user speech is an overlap. It becomes a barge-in once it has
//!    lasted `backchannel_min`; if it ends sooner it was a backchannel ("yeah", "mm-hm") and the
//!    assistant goes on. With `backchannel_min = 0` any speech barges in at once.
//! 5. Half-duplex: while the assistant speaks, user speech is ignored (for devices without echo
//!    cancellation, where the assistant would otherwise interrupt itself).
//!
//! VAD events are applied in time order: timers that would have fired before an event's sample
//! are fired first, so the outcome does not depend on how often `tick` is called.

use serde::Serialize;
use std::time::Duration;
use vr_asr::AsrEvent;
use vr_core::{SampleIndex, SampleRate};

/// What ends a paused turn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndOfTurn {
    /// `silence_timeout` of silence after the VAD's speech end.
    Timer,
    /// The end-of-turn model's verdict, with `fallback_timeout` of silence as the fallback.
    Model {
        /// Complete when the probability is above this.
        threshold: f32,
        /// Silence after the VAD's speech end that ends the turn whatever the model said (it
        /// replaces `silence_timeout`: the model already ended the turns it found complete).
        fallback_timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnConfig {
    /// Rate of the sample clock the events and `now` are on (the pipeline's 16 kHz).
    pub sample_rate: SampleRate,
    pub silence_timeout: Duration,
    pub grace: Duration,
    pub backchannel_min: Duration,
    pub half_duplex: bool,
    pub end_of_turn: EndOfTurn,
}

impl TurnConfig {
    /// The silence after a VAD speech end that ends the turn by timer.
    pub fn pause_timeout(&self) -> Duration {
        match self.end_of_turn {
            EndOfTurn::Timer => self.silence_timeout,
            EndOfTurn::Model {
                fallback_timeout, ..
            } => fallback_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEventKind {
    /// A user turn began.
    TurnStarted,
    /// The user paused within a turn (VAD speech end); the silence timer runs.
    Paused,
    /// The end-of-turn model judged the paused turn incomplete: keep waiting (the silence timer
    /// still runs as the fallback).
    Waiting,
    /// Speech resumed within the same turn (before the timeout or within the grace period).
    Resumed,
    /// The user's turn is over: answer now.
    TurnEnded,
    /// The grace period after `TurnEnded` passed without speech: the turn can no longer grow.
    TurnCommitted,
    /// User speech started while the assistant speaks; not yet an interruption.
    Overlap,
    /// The user interrupts the assistant: stop and flush its speech. A new user turn starts.
    BargeIn,
    /// The overlap ended too soon to be an interruption.
    Backchannel,
    /// Speech ignored (half-duplex while the assistant speaks).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum TurnReason {
    VadSpeechStart,
    VadSpeechEnd,
    /// Speech came back `pause` after the VAD end, before the silence timeout.
    ResumedBeforeTimeout {
        pause: Duration,
    },
    /// Speech came back `after_end` after the turn ended, within the grace period.
    ResumedWithinGrace {
        after_end: Duration,
    },
    /// `silence` of silence since the VAD end reached the configured timeout.
    SilenceTimeout {
        silence: Duration,
    },
    /// The end-of-turn model found the turn complete (`probability` > `threshold`), known
    /// `silence` after the VAD's speech end.
    TurnModelComplete {
        probability: f32,
        threshold: f32,
        silence: Duration,
    },
    /// The end-of-turn model found the turn incomplete (`probability` ≤ `threshold`).
    TurnModelIncomplete {
        probability: f32,
        threshold: f32,
    },
    GraceExpired {
        grace: Duration,
    },
    /// The overlap has lasted `speech` ≥ `min`.
    OverlapLongEnough {
        speech: Duration,
        min: Duration,
    },
    /// Backchannel classification disabled (`backchannel_min = 0`): any speech interrupts.
    BackchannelDisabled,
    /// The overlap lasted only `speech` < `min`.
    TooShort {
        speech: Duration,
        min: Duration,
    },
    HalfDuplex,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TurnEvent {
    /// When the decision takes effect on the sample clock.
    pub at: SampleIndex,
    pub kind: TurnEventKind,
    pub reason: TurnReason,
    /// First sample of the user turn this concerns (for barge-in and backchannels: of the overlap).
    pub turn_start: SampleIndex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Speaking {
        turn_start: SampleIndex,
    },
    Paused {
        turn_start: SampleIndex,
        speech_end: SampleIndex,
    },
    Grace {
        turn_start: SampleIndex,
        ended_at: SampleIndex,
    },
    Overlap {
        start: SampleIndex,
    },
    /// Inside speech that half-duplex ignores; its end is ignored too.
    Ignoring,
}

#[derive(Debug, Clone)]
pub struct TurnDetector {
    cfg: TurnConfig,
    state: State,
    assistant_speaking: bool,
}

impl TurnDetector {
    pub fn new(cfg: TurnConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            assistant_speaking: false,
        }
    }

    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.assistant_speaking = false;
    }

    /// The loop tells the detector when the assistant's audio is playing (rules 4 and 5).
    pub fn set_assistant_speaking(&mut self, speaking: bool) {
        self.assistant_speaking = speaking;
    }

    /// True while the user holds the floor (speaking or paused within a turn).
    pub fn user_turn_open(&self) -> bool {
        matches!(self.state, State::Speaking { .. } | State::Paused { .. })
    }

    fn samples(&self, d: Duration) -> u64 {
        self.cfg.sample_rate.samples_in(d)
    }

    fn dur(&self, from: SampleIndex, to: SampleIndex) -> Duration {
        self.cfg.sample_rate.duration_of(to.since(from))
    }

    /// The sample position at which `tick` has something to decide, if any (so a caller can
    /// sleep until then instead of polling).
    pub fn next_deadline(&self) -> Option<SampleIndex> {
        match self.state {
            State::Paused { speech_end, .. } => {
                Some(speech_end.advance(self.samples(self.cfg.pause_timeout())))
            }
            State::Grace { ended_at, .. } => Some(ended_at.advance(self.samples(self.cfg.grace))),
            State::Overlap { start } => Some(start.advance(self.samples(self.cfg.backchannel_min))),
            _ => None,
        }
    }

    /// Fires every timer due at or before `now`.
    pub fn tick(&mut self, now: SampleIndex) -> Vec<TurnEvent> {
        let mut out = Vec::new();
        while let Some(deadline) = self.next_deadline().filter(|d| *d <= now) {
            let ev = match self.state {
                State::Paused {
                    turn_start,
                    speech_end,
                } => {
                    self.state = State::Grace {
                        turn_start,
                        ended_at: deadline,
                    };
                    TurnEvent {
                        at: deadline,
                        kind: TurnEventKind::TurnEnded,
                        reason: TurnReason::SilenceTimeout {
                            silence: self.dur(speech_end, deadline),
                        },
                        turn_start,
                    }
                }
                State::Grace { turn_start, .. } => {
                    self.state = State::Idle;
                    TurnEvent {
                        at: deadline,
                        kind: TurnEventKind::TurnCommitted,
                        reason: TurnReason::GraceExpired {
                            grace: self.cfg.grace,
                        },
                        turn_start,
                    }
                }
                State::Overlap { start } => {
                    self.state = State::Speaking { turn_start: start };
                    TurnEvent {
                        at: deadline,
                        kind: TurnEventKind::BargeIn,
                        reason: TurnReason::OverlapLongEnough {
                            speech: self.dur(start, deadline),
                            min: self.cfg.backchannel_min,
                        },
                        turn_start: start,
                    }
                }
                _ => break,
            };
            out.push(ev);
        }
        out
    }

    /// Applies a recogniser event; `Partial`/`Final` carry no timing decision and are ignored.
    pub fn on_asr_event(&mut self, ev: &AsrEvent) -> Vec<TurnEvent> {
        match ev {
            AsrEvent::SpeechStarted { at } => self.speech_started(*at),
            AsrEvent::SpeechEnded { at } => self.speech_ended(*at),
            _ => Vec::new(),
        }
    }

    pub fn speech_started(&mut self, at: SampleIndex) -> Vec<TurnEvent> {
        let mut out = self.tick(at);
        let ev = |kind, reason, turn_start| TurnEvent {
            at,
            kind,
            reason,
            turn_start,
        };
        match self.state {
            State::Paused {
                turn_start,
                speech_end,
            } => {
                self.state = State::Speaking { turn_start };
                out.push(ev(
                    TurnEventKind::Resumed,
                    TurnReason::ResumedBeforeTimeout {
                        pause: self.dur(speech_end, at),
                    },
                    turn_start,
                ));
            }
            State::Grace {
                turn_start,
                ended_at,
            } => {
                self.state = State::Speaking { turn_start };
                out.push(ev(
                    TurnEventKind::Resumed,
                    TurnReason::ResumedWithinGrace {
                        after_end: self.dur(ended_at, at),
                    },
                    turn_start,
                ));
            }
            State::Idle if self.assistant_speaking && self.cfg.half_duplex => {
                self.state = State::Ignoring;
                out.push(ev(TurnEventKind::Ignored, TurnReason::HalfDuplex, at));
            }
            State::Idle if self.assistant_speaking && self.cfg.backchannel_min.is_zero() => {
                self.state = State::Speaking { turn_start: at };
                out.push(ev(
                    TurnEventKind::BargeIn,
                    TurnReason::BackchannelDisabled,
                    at,
                ));
            }
            State::Idle if self.assistant_speaking => {
                self.state = State::Overlap { start: at };
                out.push(ev(TurnEventKind::Overlap, TurnReason::VadSpeechStart, at));
            }
            State::Idle => {
                self.state = State::Speaking { turn_start: at };
                out.push(ev(
                    TurnEventKind::TurnStarted,
                    TurnReason::VadSpeechStart,
                    at,
                ));
            }
            // A repeated start (VAD glitch) changes nothing.
            State::Speaking { .. } | State::Overlap { .. } | State::Ignoring => {}
        }
        out
    }

    /// The end-of-turn model's `probability` for the pause that began at the VAD speech end
    /// `speech_end` (the `at` of the `SpeechEnded` it was run for), known at sample `now` (the
    /// model ran on the audio up to the VAD's report and took its time: `now` includes both).
    /// Ignored in [`EndOfTurn::Timer`] mode and when that pause is over.
    pub fn turn_model(
        &mut self,
        speech_end: SampleIndex,
        probability: f32,
        now: SampleIndex,
    ) -> Vec<TurnEvent> {
        let mut out = self.tick(now);
        let EndOfTurn::Model { threshold, .. } = self.cfg.end_of_turn else {
            return out;
        };
        let State::Paused {
            turn_start,
            speech_end: current,
        } = self.state
        else {
            return out;
        };
        if current != speech_end {
            return out;
        }
        if probability > threshold {
            self.state = State::Grace {
                turn_start,
                ended_at: now,
            };
            out.push(TurnEvent {
                at: now,
                kind: TurnEventKind::TurnEnded,
                reason: TurnReason::TurnModelComplete {
                    probability,
                    threshold,
                    silence: self.dur(speech_end, now),
                },
                turn_start,
            });
        } else {
            out.push(TurnEvent {
                at: now,
                kind: TurnEventKind::Waiting,
                reason: TurnReason::TurnModelIncomplete {
                    probability,
                    threshold,
                },
                turn_start,
            });
        }
        out
    }

    pub fn speech_ended(&mut self, at: SampleIndex) -> Vec<TurnEvent> {
        let mut out = self.tick(at);
        match self.state {
            State::Speaking { turn_start } => {
                self.state = State::Paused {
                    turn_start,
                    speech_end: at,
                };
                out.push(TurnEvent {
                    at,
                    kind: TurnEventKind::Paused,
                    reason: TurnReason::VadSpeechEnd,
                    turn_start,
                });
            }
            State::Overlap { start } => {
                // Shorter than backchannel_min, or `tick` above would have made it a barge-in.
                self.state = State::Idle;
                out.push(TurnEvent {
                    at,
                    kind: TurnEventKind::Backchannel,
                    reason: TurnReason::TooShort {
                        speech: self.dur(start, at),
                        min: self.cfg.backchannel_min,
                    },
                    turn_start: start,
                });
            }
            State::Ignoring => self.state = State::Idle,
            State::Idle | State::Paused { .. } | State::Grace { .. } => {}
        }
        // The silence timer may already be due (events can arrive late).
        out.extend(self.tick(at));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TurnEventKind::*;

    const MS: u64 = 16; // samples per millisecond at 16 kHz

    fn cfg() -> TurnConfig {
        TurnConfig {
            sample_rate: SampleRate::PIPELINE,
            silence_timeout: Duration::from_millis(600),
            grace: Duration::from_millis(400),
            backchannel_min: Duration::from_millis(500),
            half_duplex: false,
            end_of_turn: EndOfTurn::Timer,
        }
    }

    fn model_cfg() -> TurnConfig {
        TurnConfig {
            end_of_turn: EndOfTurn::Model {
                threshold: 0.5,
                fallback_timeout: Duration::from_millis(1500),
            },
            ..cfg()
        }
    }

    #[test]
    fn complete_verdict_ends_the_turn_when_the_model_answers() {
        let mut d = TurnDetector::new(model_cfg());
        d.speech_started(t(0));
        // The VAD reports the end (at 1000 ms) after its 200 ms hangover; the model then takes
        // 45 ms: the turn ends at 1245 ms, 245 ms after the speech end.
        assert_eq!(kinds(&d.speech_ended(t(1000))), [Paused]);
        assert!(d.tick(t(1200)).is_empty());
        let e = d.turn_model(t(1000), 0.93, t(1245));
        assert_eq!(kinds(&e), [TurnEnded]);
        assert_eq!((e[0].at, e[0].turn_start), (t(1245), t(0)));
        assert_eq!(
            e[0].reason,
            TurnReason::TurnModelComplete {
                probability: 0.93,
                threshold: 0.5,
                silence: Duration::from_millis(245)
            }
        );
        // Grace still applies: speech within it continues the same turn.
        assert_eq!(kinds(&d.speech_started(t(1500))), [Resumed]);
    }

    #[test]
    fn incomplete_verdict_waits_for_the_fallback_timer() {
        let mut d = TurnDetector::new(model_cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        let e = d.turn_model(t(1000), 0.12, t(1250));
        assert_eq!(kinds(&e), [Waiting]);
        assert_eq!(
            e[0].reason,
            TurnReason::TurnModelIncomplete {
                probability: 0.12,
                threshold: 0.5
            }
        );
        assert!(d.user_turn_open());
        // Not the 600 ms timer: the fallback (1500 ms) ends it.
        assert!(d.tick(t(2499)).is_empty());
        let e = d.tick(t(2500));
        assert_eq!(kinds(&e), [TurnEnded]);
        assert_eq!(
            e[0].reason,
            TurnReason::SilenceTimeout {
                silence: Duration::from_millis(1500)
            }
        );
        // Speech resuming before the fallback continues the turn instead.
        let mut d = TurnDetector::new(model_cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        d.turn_model(t(1000), 0.2, t(1250));
        assert_eq!(kinds(&d.speech_started(t(1800))), [Resumed]);
    }

    #[test]
    fn stale_model_results_are_ignored() {
        let mut d = TurnDetector::new(model_cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        d.speech_started(t(1100));
        // The verdict for the pause at 1000 ms arrives after speech resumed: no effect.
        assert!(d.turn_model(t(1000), 0.99, t(1260)).is_empty());
        d.speech_ended(t(2000));
        // Still the old pause's verdict: the new pause is untouched.
        assert!(d.turn_model(t(1000), 0.99, t(2100)).is_empty());
        assert!(d.user_turn_open());
        // A verdict later than the fallback: the timer already ended the turn.
        let e = d.turn_model(t(2000), 0.99, t(3600));
        assert_eq!(kinds(&e), [TurnEnded]);
        assert!(matches!(e[0].reason, TurnReason::SilenceTimeout { .. }));
        // Timer mode ignores model results altogether.
        let mut d = TurnDetector::new(cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        assert!(d.turn_model(t(1000), 0.99, t(1200)).is_empty());
        assert_eq!(kinds(&d.tick(t(1600))), [TurnEnded]);
    }

    fn t(ms: u64) -> SampleIndex {
        SampleIndex(ms * MS)
    }

    fn kinds(evs: &[TurnEvent]) -> Vec<TurnEventKind> {
        evs.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn turn_ends_after_silence_timeout_then_commits_after_grace() {
        let mut d = TurnDetector::new(cfg());
        assert_eq!(kinds(&d.speech_started(t(100))), [TurnStarted]);
        assert!(d.user_turn_open());
        assert_eq!(kinds(&d.speech_ended(t(1100))), [Paused]);
        assert_eq!(d.next_deadline(), Some(t(1700)));
        assert!(d.tick(t(1699)).is_empty(), "one sample early");
        let e = d.tick(t(1700));
        assert_eq!(kinds(&e), [TurnEnded]);
        assert_eq!(e[0].at, t(1700));
        assert_eq!(e[0].turn_start, t(100));
        assert_eq!(
            e[0].reason,
            TurnReason::SilenceTimeout {
                silence: Duration::from_millis(600)
            }
        );
        assert!(!d.user_turn_open());
        assert!(d.tick(t(2099)).is_empty());
        let e = d.tick(t(2100));
        assert_eq!(kinds(&e), [TurnCommitted]);
        assert_eq!(
            e[0].reason,
            TurnReason::GraceExpired {
                grace: Duration::from_millis(400)
            }
        );
        assert_eq!(d.next_deadline(), None);
        // The next speech is a new turn.
        assert_eq!(kinds(&d.speech_started(t(3000))), [TurnStarted]);
    }

    #[test]
    fn speech_before_timeout_continues_the_turn() {
        let mut d = TurnDetector::new(cfg());
        d.speech_started(t(0));
        d.speech_ended(t(800));
        assert!(d.tick(t(1300)).is_empty());
        let e = d.speech_started(t(1350));
        assert_eq!(kinds(&e), [Resumed]);
        assert_eq!(
            e[0].reason,
            TurnReason::ResumedBeforeTimeout {
                pause: Duration::from_millis(550)
            }
        );
        assert_eq!(e[0].turn_start, t(0));
        // The old timer is gone: no end while speaking.
        assert!(d.tick(t(5000)).is_empty());
        d.speech_ended(t(5000));
        let e = d.tick(t(5600));
        assert_eq!((e[0].kind, e[0].turn_start), (TurnEnded, t(0)));
    }

    #[test]
    fn speech_within_grace_resumes_the_same_turn() {
        let mut d = TurnDetector::new(cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        assert_eq!(kinds(&d.tick(t(1600))), [TurnEnded]);
        d.set_assistant_speaking(true); // the answer may already be playing: still not a barge-in
        let e = d.speech_started(t(1900));
        assert_eq!(kinds(&e), [Resumed]);
        assert_eq!(
            e[0].reason,
            TurnReason::ResumedWithinGrace {
                after_end: Duration::from_millis(300)
            }
        );
        assert_eq!(e[0].turn_start, t(0));
        assert!(d.user_turn_open());
    }

    #[test]
    fn late_events_fire_due_timers_first() {
        // No tick between the end and a much later start: the turn still ended, then committed.
        let mut d = TurnDetector::new(cfg());
        d.speech_started(t(0));
        d.speech_ended(t(1000));
        let e = d.speech_started(t(4000));
        assert_eq!(kinds(&e), [TurnEnded, TurnCommitted, TurnStarted]);
        assert_eq!((e[0].at, e[1].at, e[2].at), (t(1600), t(2000), t(4000)));
        // A speech-end reported after its timeout already passed ends the turn in the same call.
        let mut d = TurnDetector::new(cfg());
        d.speech_started(t(0));
        let e = d.speech_ended(t(1000));
        assert_eq!(kinds(&e), [Paused]);
        assert_eq!(kinds(&d.tick(t(9000))), [TurnEnded, TurnCommitted]);
    }

    #[test]
    fn short_overlap_is_a_backchannel() {
        let mut d = TurnDetector::new(cfg());
        d.set_assistant_speaking(true);
        assert_eq!(kinds(&d.speech_started(t(1000))), [Overlap]);
        assert_eq!(d.next_deadline(), Some(t(1500)));
        assert!(d.tick(t(1299)).is_empty());
        let e = d.speech_ended(t(1300));
        assert_eq!(kinds(&e), [Backchannel]);
        assert_eq!(
            e[0].reason,
            TurnReason::TooShort {
                speech: Duration::from_millis(300),
                min: Duration::from_millis(500)
            }
        );
        assert!(!d.user_turn_open());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn long_overlap_barges_in_at_backchannel_min() {
        let mut d = TurnDetector::new(cfg());
        d.set_assistant_speaking(true);
        d.speech_started(t(1000));
        let e = d.tick(t(1500));
        assert_eq!(kinds(&e), [BargeIn]);
        assert_eq!(e[0].at, t(1500));
        assert_eq!(e[0].turn_start, t(1000));
        assert_eq!(
            e[0].reason,
            TurnReason::OverlapLongEnough {
                speech: Duration::from_millis(500),
                min: Duration::from_millis(500)
            }
        );
        d.set_assistant_speaking(false);
        // The interruption is a user turn that ends normally.
        assert_eq!(kinds(&d.speech_ended(t(2500))), [Paused]);
        let e = d.tick(t(3100));
        assert_eq!((e[0].kind, e[0].turn_start), (TurnEnded, t(1000)));
        // An end arriving after the barge-in deadline without a tick: barge-in first, then pause.
        let mut d = TurnDetector::new(cfg());
        d.set_assistant_speaking(true);
        d.speech_started(t(0));
        assert_eq!(kinds(&d.speech_ended(t(700))), [BargeIn, Paused]);
    }

    #[test]
    fn zero_backchannel_min_interrupts_immediately() {
        let mut d = TurnDetector::new(TurnConfig {
            backchannel_min: Duration::ZERO,
            ..cfg()
        });
        d.set_assistant_speaking(true);
        let e = d.speech_started(t(42));
        assert_eq!(kinds(&e), [BargeIn]);
        assert_eq!(
            (e[0].at, e[0].reason),
            (t(42), TurnReason::BackchannelDisabled)
        );
    }

    #[test]
    fn half_duplex_ignores_speech_while_assistant_speaks() {
        let mut d = TurnDetector::new(TurnConfig {
            half_duplex: true,
            ..cfg()
        });
        d.set_assistant_speaking(true);
        let e = d.speech_started(t(100));
        assert_eq!(
            (kinds(&e), e[0].reason),
            (vec![Ignored], TurnReason::HalfDuplex)
        );
        assert!(d.tick(t(5000)).is_empty());
        assert!(d.speech_ended(t(5000)).is_empty());
        d.set_assistant_speaking(false);
        assert_eq!(kinds(&d.speech_started(t(6000))), [TurnStarted]);
    }

    #[test]
    fn asr_events_drive_it_and_vad_glitches_are_harmless() {
        let mut d = TurnDetector::new(cfg());
        assert_eq!(
            kinds(&d.on_asr_event(&AsrEvent::SpeechStarted { at: t(10) })),
            [TurnStarted]
        );
        assert!(d
            .on_asr_event(&AsrEvent::SpeechStarted { at: t(20) })
            .is_empty());
        assert!(d
            .on_asr_event(&AsrEvent::Partial {
                text: "hi".into(),
                stable_prefix_len: 0
            })
            .is_empty());
        assert_eq!(
            kinds(&d.on_asr_event(&AsrEvent::SpeechEnded { at: t(500) })),
            [Paused]
        );
        assert!(d
            .on_asr_event(&AsrEvent::SpeechEnded { at: t(510) })
            .is_empty());
        // The duplicate end does not restart the timer.
        assert_eq!(kinds(&d.tick(t(1100))), [TurnEnded]);
        let e: Vec<String> = d
            .tick(t(1500))
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            e,
            [
                r#"{"at":24000,"kind":"turn_committed","reason":{"reason":"grace_expired","grace":{"secs":0,"nanos":400000000}},"turn_start":160}"#
            ]
        );
    }
}
