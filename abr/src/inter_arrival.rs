//! Packet groups and their deltas: the input of the delay-based detector.
//!
//! Why groups: a video sender emits each frame as a burst of packets with (nearly) the same send
//! time, so per-packet inter-arrival times measure the sender's burstiness, not the path. GCC
//! (draft-ietf-rmcat-gcc-02, §5.2 "Arrival-time model") therefore compares *groups*: packets sent
//! within a burst interval (5 ms) form one group, and for consecutive groups i-1, i it uses
//! `d(i) = t(i) - t(i-1) - (T(i) - T(i-1))`, arrival minus send delta of the groups' last
//! packets. libwebrtc's `InterArrival` does the same; this is a fresh implementation of the idea.
//!
//! Send times come from the RTP abs-send-time header extension: 24 bits, 6.18 fixed-point
//! seconds, so it wraps every 64 s. [`SendTimeUnwrapper`] extends it to a monotone 64-bit clock
//! (a difference of more than half the range backwards is a wrap forwards). Packets whose send
//! time is older than the current group (reordered by the network) are ignored and counted, as are
//! packets whose arrival time goes backwards.

use crate::units::{Micros, TimeDelta};

/// abs-send-time ticks per second (6.18 fixed point: 2^18).
const ABS_SEND_TIME_TICKS_PER_SEC: u64 = 1 << 18;
/// The 24-bit field's range.
const ABS_SEND_TIME_RANGE: u64 = 1 << 24;

/// The raw 24-bit abs-send-time header extension value (6.18 fixed-point seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbsSendTime(u32);

impl AbsSendTime {
    /// From the wire value; bits above the 24th are masked off (the field is 24 bits).
    pub fn from_raw(raw: u32) -> AbsSendTime {
        AbsSendTime(raw & 0x00FF_FFFF)
    }

    /// The 24-bit value for a sender's clock reading (wraps every 64 s, as on the wire).
    pub fn from_micros(t: Micros) -> AbsSendTime {
        let ticks = (u128::from(t.as_micros()) * u128::from(ABS_SEND_TIME_TICKS_PER_SEC)
            / 1_000_000) as u64;
        AbsSendTime((ticks % ABS_SEND_TIME_RANGE) as u32)
    }

    /// The 24-bit wire value.
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// Extends 24-bit abs-send-time values to a monotone microsecond clock.
///
/// Only differences between unwrapped values are meaningful: the first value is placed one full
/// range (64 s) after zero so that a reordered packet from before the first one still unwraps to
/// a non-negative time.
#[derive(Clone, Debug, Default)]
pub struct SendTimeUnwrapper {
    last_raw: Option<u32>,
    last_ticks: u64,
}

impl SendTimeUnwrapper {
    /// A fresh unwrapper.
    pub fn new() -> SendTimeUnwrapper {
        SendTimeUnwrapper::default()
    }

    /// The unwrapped send time of `t`. A step of less than half the range (32 s) backwards is
    /// taken as reordering (the result is earlier than the previous one); anything else moves
    /// forwards, across the wrap if needed.
    pub fn unwrap(&mut self, t: AbsSendTime) -> Micros {
        let ticks = match self.last_raw {
            None => ABS_SEND_TIME_RANGE + u64::from(t.0),
            Some(last) => {
                let forward =
                    (u64::from(t.0) + ABS_SEND_TIME_RANGE - u64::from(last)) % ABS_SEND_TIME_RANGE;
                if forward < ABS_SEND_TIME_RANGE / 2 {
                    self.last_ticks + forward
                } else {
                    self.last_ticks
                        .saturating_sub(ABS_SEND_TIME_RANGE - forward)
                }
            }
        };
        // Track the newest value only, so a reordered packet does not drag the reference back.
        if self.last_raw.is_none() || ticks >= self.last_ticks {
            self.last_raw = Some(t.0);
            self.last_ticks = ticks;
        }
        Micros((u128::from(ticks) * 1_000_000 / u128::from(ABS_SEND_TIME_TICKS_PER_SEC)) as u64)
    }
}

/// The deltas between two consecutive complete packet groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDelta {
    /// Send-time difference of the groups' last packets.
    pub send_delta: TimeDelta,
    /// Arrival-time difference of the groups' last packets.
    pub arrival_delta: TimeDelta,
    /// Size difference (bytes) of the two groups.
    pub size_delta: i64,
    /// Arrival time of the newer group's last packet.
    pub arrival: Micros,
}

/// Why a packet did not enter a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Its send time is older than the current group's first packet (network reordering).
    Reordered,
    /// Its arrival time is earlier than the previous packet's (the receive clock went back).
    ArrivalBackwards,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    first_send: Micros,
    last_send: Micros,
    last_arrival: Micros,
    size: u64,
}

/// Counters of what [`InterArrival`] ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterArrivalStats {
    /// Packets accepted into a group.
    pub packets: u64,
    /// Completed group deltas produced.
    pub deltas: u64,
    /// Packets ignored as reordered.
    pub reordered: u64,
    /// Packets ignored because arrival time went backwards.
    pub arrival_backwards: u64,
    /// Times the group state was reset (a negative arrival delta between groups).
    pub resets: u64,
}

/// Groups packets into send-time bursts and reports the deltas between consecutive groups.
#[derive(Clone, Debug)]
pub struct InterArrival {
    burst: Micros,
    current: Option<Group>,
    previous: Option<Group>,
    stats: InterArrivalStats,
}

impl InterArrival {
    /// Groups are packets sent within `burst` of the group's first packet (GCC: 5 ms).
    pub fn new(burst: Micros) -> InterArrival {
        InterArrival {
            burst,
            current: None,
            previous: None,
            stats: InterArrivalStats::default(),
        }
    }

    /// What was ignored so far.
    pub fn stats(&self) -> InterArrivalStats {
        self.stats
    }

    /// Add a packet (unwrapped send time, arrival time, size in bytes).
    ///
    /// Returns `Ok(Some(delta))` when this packet starts a new group and so completes the
    /// previous one, `Ok(None)` when it joined the current group, `Err` when it was ignored.
    pub fn push(
        &mut self,
        send: Micros,
        arrival: Micros,
        size: u32,
    ) -> Result<Option<GroupDelta>, Rejected> {
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send: send,
                last_send: send,
                last_arrival: arrival,
                size: u64::from(size),
            });
            self.stats.packets += 1;
            return Ok(None);
        };
        if send < cur.first_send {
            self.stats.reordered += 1;
            return Err(Rejected::Reordered);
        }
        if arrival < cur.last_arrival {
            self.stats.arrival_backwards += 1;
            return Err(Rejected::ArrivalBackwards);
        }
        self.stats.packets += 1;
        if send.saturating_since(cur.first_send) <= self.burst {
            cur.last_send = cur.last_send.max(send);
            cur.last_arrival = arrival;
            cur.size += u64::from(size);
            return Ok(None);
        }
        // A new group: the current one is complete.
        let completed = *cur;
        self.current = Some(Group {
            first_send: send,
            last_send: send,
            last_arrival: arrival,
            size: u64::from(size),
        });
        let delta = self.previous.map(|prev| GroupDelta {
            send_delta: completed.last_send.delta(prev.last_send),
            arrival_delta: completed.last_arrival.delta(prev.last_arrival),
            size_delta: completed.size as i64 - prev.size as i64,
            arrival: completed.last_arrival,
        });
        self.previous = Some(completed);
        match delta {
            Some(d) if d.arrival_delta.0 < 0 || d.send_delta.0 < 0 => {
                // Cannot happen with the checks above unless the clocks are inconsistent; start
                // over rather than feed a nonsense delta to the trendline.
                self.stats.resets += 1;
                self.previous = None;
                Ok(None)
            }
            Some(d) => {
                self.stats.deltas += 1;
                Ok(Some(d))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_send_time_round_trip_and_mask() {
        assert_eq!(
            AbsSendTime::from_micros(Micros::from_secs(1)).raw(),
            1 << 18
        );
        assert_eq!(AbsSendTime::from_micros(Micros::from_secs(64)).raw(), 0);
        assert_eq!(AbsSendTime::from_raw(0xFF00_0001).raw(), 1);
    }

    #[test]
    fn unwrapper_crosses_the_64_s_wrap() {
        let mut u = SendTimeUnwrapper::new();
        let a = u.unwrap(AbsSendTime::from_micros(Micros::from_millis(63_990)));
        let b = u.unwrap(AbsSendTime::from_micros(Micros::from_millis(64_010)));
        let d = b.delta(a).0;
        assert!((19_990..=20_010).contains(&d), "delta across wrap {d} µs");
        // A reordered packet from just before the wrap unwraps to an earlier time.
        let c = u.unwrap(AbsSendTime::from_micros(Micros::from_millis(63_995)));
        assert!(c < b && c > a, "{a:?} {c:?} {b:?}");
        // The reference stays at the newest value.
        let e = u.unwrap(AbsSendTime::from_micros(Micros::from_millis(64_030)));
        assert!((19_990..=20_010).contains(&e.delta(b).0));
    }

    #[test]
    fn groups_by_5_ms_bursts() {
        let mut ia = InterArrival::new(Micros::from_millis(5));
        let ms = Micros::from_millis;
        // Group 1: sent at 0 and 1 ms; group 2 at 33 ms; group 3 at 66 ms.
        assert_eq!(ia.push(ms(0), ms(100), 1000), Ok(None));
        assert_eq!(ia.push(ms(1), ms(101), 1000), Ok(None));
        assert_eq!(ia.push(ms(33), ms(140), 500), Ok(None)); // completes group 1, no previous
        let d = ia.push(ms(66), ms(175), 500).unwrap().unwrap();
        assert_eq!(d.send_delta, TimeDelta(32_000));
        assert_eq!(d.arrival_delta, TimeDelta(39_000));
        assert_eq!(d.size_delta, 500 - 2000);
        assert_eq!(d.arrival, ms(140));
    }

    #[test]
    fn reordered_and_backwards_packets_are_counted() {
        let mut ia = InterArrival::new(Micros::from_millis(5));
        let ms = Micros::from_millis;
        ia.push(ms(10), ms(100), 1000).unwrap();
        assert_eq!(ia.push(ms(5), ms(101), 1000), Err(Rejected::Reordered));
        assert_eq!(
            ia.push(ms(11), ms(90), 1000),
            Err(Rejected::ArrivalBackwards)
        );
        let s = ia.stats();
        assert_eq!((s.packets, s.reordered, s.arrival_backwards), (1, 1, 1));
    }
}
