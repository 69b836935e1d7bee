//! Per-session limits on client messages of the `events` data channel. Sans-IO: the caller
//! passes `now`, so the buckets are tested on virtual time.
//!
//! Two token buckets per session: `text` (every typed turn cancels the answer and queues a
//! generation on the shared LLM worker, so a flood from one client would starve every other
//! session) and `control` (`interrupt`, `config` and messages that do not parse, which cost
//! little each but must not be free either). They are separate so a text flood never delays an
//! `interrupt`. A message over its limit is dropped; the first drop of a burst is reported to the
//! client once (an `error` event), every drop is counted.
#![deny(clippy::disallowed_methods)]

use std::time::Instant;

/// A token bucket: up to `burst` messages at once, refilled at `per_s` messages a second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `per_s` and `burst` are validated by the config (`> 0`, `>= 1`); other
    /// values are clamped so the bucket never panics nor divides by zero.
    pub fn new(per_s: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let per_s = if per_s.is_finite() && per_s > 0.0 {
            per_s
        } else {
            0.0
        };
        Self {
            per_s,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token at `now`: `true` = the message may pass. A `now` earlier than the last
    /// call refills nothing (a clock that steps back cannot mint tokens).
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_s).min(self.burst);
        }
        self.last = Some(match self.last {
            Some(l) if l > now => l,
            _ => now,
        });
        // The epsilon absorbs rounding in the refill sum (0.998 + 0.002 may be 0.99999…).
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Tokens left (fractional), for tests and diagnostics.
    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

/// Which bucket a client message draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `{"type":"text"}`: a typed turn.
    Text,
    /// `interrupt`, `config`, and anything that does not parse.
    Control,
}

impl MessageKind {
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Control => "control",
        }
    }
}

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Accept,
    /// Over the limit, the first of a burst: drop it and tell the client (one `error` event).
    DropAndReport,
    /// Over the limit again: drop it silently (it is still counted).
    Drop,
}

/// The limits of one session, as configured in `[transport]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventLimits {
    pub text_per_s: f64,
    pub text_burst: u32,
    pub control_per_s: f64,
    pub control_burst: u32,
}

/// One session's buckets and whether each is inside a dropped burst.
#[derive(Debug, Clone)]
pub struct EventLimiter {
    text: TokenBucket,
    control: TokenBucket,
    text_limited: bool,
    control_limited: bool,
}

impl EventLimiter {
    pub fn new(l: EventLimits) -> Self {
        Self {
            text: TokenBucket::new(l.text_per_s, l.text_burst),
            control: TokenBucket::new(l.control_per_s, l.control_burst),
            text_limited: false,
            control_limited: false,
        }
    }

    /// Decides on one message of `kind` arriving at `now`.
    pub fn check(&mut self, kind: MessageKind, now: Instant) -> Verdict {
        let (bucket, limited) = match kind {
            MessageKind::Text => (&mut self.text, &mut self.text_limited),
            MessageKind::Control => (&mut self.control, &mut self.control_limited),
        };
        if bucket.try_take(now) {
            *limited = false;
            Verdict::Accept
        } else if *limited {
            Verdict::Drop
        } else {
            *limited = true;
            Verdict::DropAndReport
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' virtual clock starts at the real one
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 5);
        // 5 at once, the 6th refused.
        assert_eq!((0..6).filter(|_| b.try_take(t0)).count(), 5);
        // 2/s: one token every 500 ms.
        assert!(!b.try_take(t0 + ms(499)));
        assert!(b.try_take(t0 + ms(500)));
        assert!(!b.try_take(t0 + ms(600)));
        assert!(b.try_take(t0 + ms(1000)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.try_take(later)).count(), 5);
    }

    #[test]
    fn a_flood_passes_at_most_burst_plus_rate_times_elapsed() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 5);
        // 1000 messages a second for 10 s.
        let mut passed = 0;
        for i in 0..10_000u64 {
            if b.try_take(t0 + ms(i)) {
                passed += 1;
            }
        }
        // Elapsed 9.999 s: at most 5 + 2 × 9.999 = 24.998 → 24.
        assert_eq!(passed, 24);
    }

    #[test]
    fn a_clock_stepping_back_mints_no_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1.0, 1);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        // Back at t0 + 0.5 s: still only half a token since t0.
        assert!(!b.try_take(t0 + ms(500)));
        assert!(b.try_take(t0 + ms(1000)));
    }

    #[test]
    fn odd_parameters_clamp_instead_of_panicking() {
        let t0 = Instant::now();
        for per_s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut b = TokenBucket::new(per_s, 0);
            assert!(b.try_take(t0));
            assert!(!b.try_take(t0 + Duration::from_secs(100)));
        }
    }

    #[test]
    fn limiter_reports_once_per_dropped_burst_and_buckets_are_separate() {
        let t0 = Instant::now();
        let mut l = EventLimiter::new(EventLimits {
            text_per_s: 2.0,
            text_burst: 5,
            control_per_s: 10.0,
            control_burst: 20,
        });
        let v: Vec<Verdict> = (0..8).map(|_| l.check(MessageKind::Text, t0)).collect();
        assert_eq!(&v[..5], &[Verdict::Accept; 5]);
        assert_eq!(
            &v[5..],
            &[Verdict::DropAndReport, Verdict::Drop, Verdict::Drop]
        );
        // A text flood leaves `interrupt` alone.
        assert_eq!(l.check(MessageKind::Control, t0), Verdict::Accept);
        // The bucket refills; an accepted message ends the burst, the next drop is reported.
        assert_eq!(l.check(MessageKind::Text, t0 + ms(500)), Verdict::Accept);
        assert_eq!(
            l.check(MessageKind::Text, t0 + ms(500)),
            Verdict::DropAndReport
        );
        assert_eq!(l.check(MessageKind::Text, t0 + ms(600)), Verdict::Drop);
    }
}
