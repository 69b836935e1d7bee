//! The incoming jitter buffer: puts RTP packets back in sequence order and decides, on the
//! caller's clock, when a missing packet is lost. Sans-IO: `push(seq, payload, now)`,
//! `pop(now)`, `poll_timeout()`, so it is tested on virtual time.
//!
//! The consumer is a recogniser, not a loudspeaker, so there is no playout clock to smooth:
//! packets in order are released at once, and a gap holds back the packets behind it for at
//! most `window` (measured from the arrival of the first packet behind the gap) before the gap is
//! declared lost. A lost packet is handed out with the packet that follows it, when that one is
//! already here, so the decoder can rebuild it from the follower's in-band FEC.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest run of lost packets concealed frame by frame (1 s of 20 ms frames); a longer hole
/// (a peer that paused, or restarted its sequence) is skipped in one step.
const MAX_CONCEALED_RUN: u64 = 50;
/// Packets held behind a gap at most, whatever the window says: after `pop` has returned `None`
/// the buffer holds fewer than this many packets (see [`JitterBuffer::held_len`]).
pub const MAX_HELD: usize = 64;
/// A packet this far behind the next one to play (2 s of 20 ms frames) is no late arrival: the
/// peer restarted its sequence numbers lower. Two such packets in a row re-anchor the buffer
/// (one alone may be a stray duplicate); without this a backward jump of up to 32768 would drop
/// every packet, deafening the session for up to 11 minutes until the numbers caught up.
const RESTART_DISTANCE: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next packet, in order.
    Packet(Bytes),
    /// The next packet is lost; `next` is the packet after it if it has arrived (for FEC).
    Lost { next: Option<Bytes> },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub duplicates: u64,
    /// Arrived after their slot had been played out or concealed.
    pub late: u64,
    /// Declared lost and concealed (one `Playout::Lost` each).
    pub lost: u64,
    /// Lost in runs too long to conceal, skipped.
    pub skipped: u64,
    /// Backward sequence jumps taken as a restart of the peer's numbering.
    pub restarts: u64,
    /// Received packets of the old numbering still held when a restart re-anchored the buffer,
    /// dropped unplayed (also counted in `skipped`). Every received or recovered packet is
    /// either played, still held, or flushed: `received + recovered == played + held_len() +
    /// flushed`.
    pub flushed: u64,
    /// Missing packets filled from a later packet's redundant copy (RED) before their slot was
    /// due.
    pub recovered: u64,
}

pub struct JitterBuffer {
    window: Duration,
    /// Extended (wrap-free) sequence number → payload and arrival time.
    held: BTreeMap<u64, (Bytes, Instant)>,
    /// Extended sequence number of the next packet to release.
    next: Option<u64>,
    /// Highest extended sequence number seen, the reference for unwrapping.
    highest: u64,
    /// A packet far behind `next` that may start a restarted sequence: (extended seq, payload).
    restart_candidate: Option<(u64, Bytes)>,
    /// Slots recently filled from a RED copy: their originals, if they still come, are
    /// duplicates of what was played, not late arrivals. Pruned to the last `MAX_HELD`.
    copied: std::collections::BTreeSet<u64>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            held: BTreeMap::new(),
            next: None,
            highest: 0,
            restart_candidate: None,
            copied: std::collections::BTreeSet::new(),
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held now (waiting behind a gap, or not yet popped).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn extend(&mut self, seq: u16) -> u64 {
        if self.next.is_none() {
            // Start well above zero so a first few reordered packets can still sit below it.
            let ext = (1u64 << 32) + u64::from(seq);
            self.highest = ext;
            return ext;
        }
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        let ext = self.highest.wrapping_add_signed(i64::from(delta));
        self.highest = self.highest.max(ext);
        ext
    }

    pub fn push(&mut self, seq: u16, payload: Bytes, now: Instant) {
        let mut ext = self.extend(seq);
        let next = *self.next.get_or_insert(ext);
        if ext + RESTART_DISTANCE < next {
            match self.restart_candidate.take() {
                Some((prev, first)) if prev + 1 == ext => {
                    // Re-anchor the extended numbering where the first packet put it: each
                    // restart moves it down by up to 32768, and without this ~143 000 restart
                    // pairs (seconds of packets for a hostile peer) walk it below zero, where
                    // `ext + RESTART_DISTANCE` overflows.
                    let first_ext = (1u64 << 32) + (prev & 0xFFFF);
                    self.restart(first_ext, first, now);
                    ext = first_ext + 1;
                    self.highest = ext;
                }
                _ => {
                    self.stats.late += 1;
                    self.restart_candidate = Some((ext, payload));
                    return;
                }
            }
        } else {
            self.restart_candidate = None;
        }
        if self.copied.remove(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        if self.next.is_some_and(|n| ext < n) {
            self.stats.late += 1;
            return;
        }
        if self.held.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        self.held.insert(ext, (payload, now));
    }

    /// Offers an earlier packet's payload carried again in a later one (RED, RFC 2198): it
    /// fills the slot of `seq` if that one is still missing and not yet played or concealed;
    /// otherwise it is the copy nobody needed and is dropped uncounted. It never moves the
    /// sequence reference (the primary packet that carried it did).
    pub fn push_redundant(&mut self, seq: u16, payload: Bytes, now: Instant) {
        let Some(next) = self.next else {
            return;
        };
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        if delta > 0 {
            return;
        }
        let ext = self.highest.wrapping_add_signed(i64::from(delta));
        if ext < next || self.held.contains_key(&ext) {
            return;
        }
        self.stats.recovered += 1;
        self.held.insert(ext, (payload, now));
        self.copied.insert(ext);
        while self.copied.len() > MAX_HELD {
            self.copied.pop_first();
        }
    }

    /// Re-anchors on a restarted sequence starting at `first_ext`: what was held of the old
    /// numbering is dropped (counted as skipped), and the candidate packet, counted late when it
    /// arrived, is played after all.
    fn restart(&mut self, first_ext: u64, first: Bytes, now: Instant) {
        self.stats.restarts += 1;
        self.stats.skipped += self.held.len() as u64;
        self.stats.flushed += self.held.len() as u64;
        self.stats.late -= 1;
        self.stats.received += 1;
        self.held.clear();
        self.copied.clear();
        self.held.insert(first_ext, (first, now));
        self.next = Some(first_ext);
    }

    /// The next packet (or loss) to decode, if one is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let next = self.next?;
        if let Some((payload, _)) = self.held.remove(&next) {
            self.next = Some(next + 1);
            return Some(Playout::Packet(payload));
        }
        let (&first_held, &(_, arrived)) = self.held.iter().next()?;
        let expired = now.saturating_duration_since(arrived) >= self.window;
        if !expired && self.held.len() < MAX_HELD {
            return None;
        }
        if first_held - next > MAX_CONCEALED_RUN {
            self.stats.skipped += first_held - next;
            self.next = Some(first_held);
            return self.pop(now);
        }
        self.stats.lost += 1;
        self.next = Some(next + 1);
        let follower = self.held.get(&(next + 1)).map(|(p, _)| p.clone());
        Some(Playout::Lost { next: follower })
    }

    /// When a held-back gap expires, if one is pending: the caller wakes then and calls `pop`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.next?;
        if self.held.contains_key(&next) {
            return None;
        }
        self.held.values().next().map(|(_, t)| *t + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    #[test]
    fn reorders_within_the_window() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(10, p(10), t0);
        jb.push(12, p(12), t0);
        assert_eq!(drain(&mut jb, t0), vec![Playout::Packet(p(10))]);
        assert_eq!(jb.poll_timeout(), Some(t0 + Duration::from_millis(60)));
        jb.push(11, p(11), t0 + Duration::from_millis(20));
        assert_eq!(
            drain(&mut jb, t0 + Duration::from_millis(20)),
            vec![Playout::Packet(p(11)), Playout::Packet(p(12))]
        );
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.poll_timeout(), None);
    }

    #[test]
    fn a_gap_expires_into_a_loss_with_the_follower_for_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(1, p(1), t0);
        jb.push(3, p(3), t0 + Duration::from_millis(40));
        jb.push(4, p(4), t0 + Duration::from_millis(60));
        assert_eq!(
            drain(&mut jb, t0 + Duration::from_millis(99)),
            vec![Playout::Packet(p(1))]
        );
        assert_eq!(jb.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(
            drain(&mut jb, t0 + Duration::from_millis(100)),
            vec![
                Playout::Lost { next: Some(p(3)) },
                Playout::Packet(p(3)),
                Playout::Packet(p(4))
            ]
        );
        // Packet 2 finally turns up: too late, dropped and counted.
        jb.push(2, p(2), t0 + Duration::from_millis(120));
        assert_eq!(drain(&mut jb, t0 + Duration::from_millis(120)), vec![]);
        let s = jb.stats();
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (3, 1, 1, 0));
    }

    #[test]
    fn wraps_around_and_counts_duplicates() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        for (i, seq) in [65534u16, 65535, 1, 0, 0].into_iter().enumerate() {
            jb.push(seq, p(i as u8), t0);
        }
        // In order across the wrap; the second copy of 0 is a duplicate.
        assert_eq!(
            drain(&mut jb, t0),
            vec![
                Playout::Packet(p(0)),
                Playout::Packet(p(1)),
                Playout::Packet(p(3)),
                Playout::Packet(p(2))
            ]
        );
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.stats().lost, 0);
        // Once played, a copy is late rather than a duplicate.
        jb.push(0, p(9), t0);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_long_hole_is_skipped_not_concealed_frame_by_frame() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(100, p(0), t0);
        jb.push(1100, p(1), t0);
        let later = t0 + Duration::from_millis(60);
        assert_eq!(
            drain(&mut jb, later),
            vec![Playout::Packet(p(0)), Playout::Packet(p(1))]
        );
        assert_eq!(jb.stats().skipped, 999);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_backward_sequence_jump_is_a_restart_not_eleven_minutes_of_late_packets() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        for (i, seq) in (40_000u16..40_010).enumerate() {
            jb.push(seq, p(i as u8), t0);
        }
        assert_eq!(drain(&mut jb, t0).len(), 10);
        // The peer restarts 30000 lower (a reconnect, a new encoder): ~10 minutes behind.
        jb.push(10_000, p(100), t0);
        assert_eq!(
            drain(&mut jb, t0),
            vec![],
            "one far-behind packet may be a stray"
        );
        jb.push(10_001, p(101), t0);
        jb.push(10_002, p(102), t0);
        assert_eq!(
            drain(&mut jb, t0),
            vec![
                Playout::Packet(p(100)),
                Playout::Packet(p(101)),
                Playout::Packet(p(102))
            ]
        );
        let st = jb.stats();
        assert_eq!((st.restarts, st.late, st.received), (1, 0, 13));
        // And the new numbering goes on normally, including its own reordering.
        jb.push(10_004, p(104), t0);
        jb.push(10_003, p(103), t0);
        assert_eq!(
            drain(&mut jb, t0),
            vec![Playout::Packet(p(103)), Playout::Packet(p(104))]
        );
    }

    #[test]
    fn a_redundant_copy_fills_a_gap_once_and_nothing_else() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(65_534, p(1), t0);
        assert_eq!(drain(&mut jb, t0), vec![Playout::Packet(p(1))]);
        // 65 535 is lost; packet 0 (across the wrap) carries it again.
        jb.push(0, p(3), t0);
        jb.push_redundant(65_535, p(2), t0);
        // A copy of a packet already played, one still held and one from the future: ignored.
        jb.push_redundant(65_534, p(9), t0);
        jb.push_redundant(0, p(9), t0);
        jb.push_redundant(1, p(9), t0);
        assert_eq!(
            drain(&mut jb, t0),
            vec![Playout::Packet(p(2)), Playout::Packet(p(3))]
        );
        // The original turns up after all: a duplicate of what was played, not played twice.
        jb.push(65_535, p(2), t0);
        assert_eq!(drain(&mut jb, t0), vec![]);
        let s = jb.stats();
        assert_eq!(
            (s.received, s.recovered, s.lost, s.late, s.duplicates),
            (2, 1, 0, 0, 1)
        );
        // Nothing before the first packet is ever taken from a copy.
        let mut fresh = JitterBuffer::new(Duration::from_millis(60));
        fresh.push_redundant(7, p(7), t0);
        assert_eq!(fresh.stats().recovered, 0);
        assert_eq!(drain(&mut fresh, t0), vec![]);
    }

    #[test]
    fn a_single_stray_old_packet_does_not_restart_the_stream() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        for (i, seq) in (5_000u16..5_005).enumerate() {
            jb.push(seq, p(i as u8), t0);
        }
        drain(&mut jb, t0);
        jb.push(1_000, p(99), t0); // a replayed packet from long ago
        jb.push(5_005, p(5), t0);
        jb.push(1_500, p(98), t0); // another, not its successor
        jb.push(5_006, p(6), t0);
        assert_eq!(
            drain(&mut jb, t0),
            vec![Playout::Packet(p(5)), Playout::Packet(p(6))]
        );
        assert_eq!((jb.stats().restarts, jb.stats().late), (0, 2));
    }
}
