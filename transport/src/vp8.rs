//! VP8 frames out of RTP packets (RFC 7741), sans-IO: packets in, whole encoded frames out.
//!
//! The model path never waits for a retransmission. A frame is complete when every packet from
//! its first (S=1, partition 0) to its marker has arrived with consecutive sequence numbers;
//! packets may arrive out of order meanwhile. A gap is declared lost as soon as a later frame
//! has ended (its marker arrived) — about one frame interval of reordering tolerance, far less
//! than a NACK round trip — or when the buffer holds [`MAX_BUFFERED`] packets. After a loss every
//! inter frame may reference what was lost, so frames are dropped until the next key frame
//! ([`Vp8Assembler::waiting_for_key_frame`] tells the shell to ask for one with a PLI). What the
//! model sees meanwhile is the last good picture, which the latest-frame ring keeps.

use std::collections::BTreeMap;

/// Packets held while waiting for a gap to fill; beyond this the oldest gap is declared lost.
pub(crate) const MAX_BUFFERED: usize = 512;

/// One complete VP8 frame (the codec's own bitstream, descriptors removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// RTP timestamp (90 kHz) of the frame's packets.
    pub rtp_timestamp: u32,
    pub key_frame: bool,
}

/// What the assembler has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    pub frames: u64,
    pub key_frames: u64,
    /// Gaps declared lost (each may have taken one or more frames with it).
    pub losses: u64,
    /// Complete inter frames dropped because a reference before them was lost.
    pub dropped_waiting_for_key: u64,
    /// Packets that arrived after their place was given up, or with a malformed descriptor.
    pub discarded_packets: u64,
}

struct Pkt {
    rtp_timestamp: u32,
    marker: bool,
    /// S=1 and partition index 0: the first packet of a frame.
    frame_start: bool,
    /// The VP8 payload after the descriptor.
    payload: Vec<u8>,
}

/// Extends 16-bit RTP sequence numbers to a monotonic 64-bit count.
#[derive(Default)]
struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    fn unwrap(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // Start well above zero so a reordered packet before the first one still fits.
            let v = (1u64 << 32) + u64::from(seq);
            self.last = Some(v);
            return v;
        };
        let base = last & !0xFFFF;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        let v = candidates
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|v| v.abs_diff(last))
            .unwrap_or(base + u64::from(seq));
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

/// Offset of the VP8 payload after the payload descriptor, and whether the packet starts a frame.
/// `None` for a descriptor that runs past the packet.
fn parse_descriptor(p: &[u8]) -> Option<(usize, bool)> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let pic = *p.get(i)?;
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    (i < p.len()).then_some((i, start))
}

/// Reassembles VP8 frames from one SSRC's packets.
pub struct Vp8Assembler {
    packets: BTreeMap<u64, Pkt>,
    seq: SeqUnwrap,
    /// The first packet of the next frame to emit (`None` until the first frame start).
    next: Option<u64>,
    /// Packets below this were given up on (`next` is `None` after a loss with nothing held).
    floor: u64,
    waiting_for_key: bool,
    stats: AssemblyStats,
}

impl Default for Vp8Assembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Assembler {
    pub fn new() -> Self {
        Self {
            packets: BTreeMap::new(),
            seq: SeqUnwrap::default(),
            next: None,
            floor: 0,
            // Nothing decodes before a key frame.
            waiting_for_key: true,
            stats: AssemblyStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// No usable reference: inter frames are being dropped until a key frame arrives.
    pub fn waiting_for_key_frame(&self) -> bool {
        self.waiting_for_key
    }

    /// A key frame must be asked for: no usable reference, and something to decode was lost or
    /// dropped for it. (A stream that starts with a key frame spread over several packets is
    /// waiting too, but needs no PLI.)
    pub fn needs_key_frame(&self) -> bool {
        self.waiting_for_key
            && (self.stats.frames > 0
                || self.stats.losses > 0
                || self.stats.dropped_waiting_for_key > 0)
    }

    /// The decoder could not continue (it refused a frame): drop inter frames until a key frame.
    pub fn reset_to_key_frame(&mut self) {
        self.waiting_for_key = true;
    }

    /// One RTP packet of the stream; returns the frames it completed, oldest first.
    pub fn push(
        &mut self,
        seq: u16,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<EncodedFrame> {
        let s = self.seq.unwrap(seq);
        let Some((offset, frame_start)) = parse_descriptor(payload) else {
            self.stats.discarded_packets += 1;
            return Vec::new();
        };
        if s < self.floor || self.next.is_some_and(|n| s < n) || self.packets.contains_key(&s) {
            self.stats.discarded_packets += 1;
            return Vec::new();
        }
        self.packets.insert(
            s,
            Pkt {
                rtp_timestamp,
                marker,
                frame_start,
                payload: payload[offset..].to_vec(),
            },
        );
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// Emits or gives up on the frame at the head; `false` when nothing more can happen yet.
    fn step(&mut self, out: &mut Vec<EncodedFrame>) -> bool {
        let next = match self.next {
            Some(n) => n,
            None => {
                // Before the first frame start: anything earlier is the tail of a frame we
                // joined in the middle of.
                let Some(first) = self
                    .packets
                    .iter()
                    .find_map(|(s, p)| p.frame_start.then_some(*s))
                else {
                    return false;
                };
                self.discard_before(first);
                self.next = Some(first);
                first
            }
        };
        // Walk consecutive packets from the head.
        let mut s = next;
        let mut head_ts = None;
        let gap = loop {
            let Some(p) = self.packets.get(&s) else {
                break s;
            };
            let ts = *head_ts.get_or_insert(p.rtp_timestamp);
            if s == next && !p.frame_start || ts != p.rtp_timestamp {
                // The head is not a frame start, or a new frame began before this one's marker:
                // the frame is broken.
                return self.give_up(next);
            }
            if p.marker {
                self.emit(next, s, out);
                return true;
            }
            s += 1;
        };
        // Missing packet at `gap`. Lost once a later frame has ended, or the buffer is full.
        let later_frame_ended = self
            .packets
            .range(gap..)
            .any(|(_, p)| p.marker && Some(p.rtp_timestamp) != head_ts);
        if later_frame_ended || self.packets.len() >= MAX_BUFFERED {
            return self.give_up(next);
        }
        false
    }

    /// Declares the frame at `from` lost: skips to the next frame start with another timestamp.
    fn give_up(&mut self, from: u64) -> bool {
        self.stats.losses += 1;
        self.waiting_for_key = true;
        let head_ts = self.packets.get(&from).map(|p| p.rtp_timestamp);
        let resume = self
            .packets
            .range(from + 1..)
            .find_map(|(s, p)| (p.frame_start && Some(p.rtp_timestamp) != head_ts).then_some(*s));
        match resume {
            Some(r) => {
                self.discard_before(r);
                self.next = Some(r);
                true
            }
            None => {
                // Nothing to resume from yet: drop what is held and wait for the next start.
                let last = self.packets.keys().next_back().copied();
                self.stats.discarded_packets += self.packets.len() as u64;
                self.packets.clear();
                self.next = None;
                if let Some(l) = last {
                    self.floor = l + 1;
                }
                false
            }
        }
    }

    fn discard_before(&mut self, s: u64) {
        let kept = self.packets.split_off(&s);
        self.stats.discarded_packets += self.packets.len() as u64;
        self.packets = kept;
    }

    fn emit(&mut self, from: u64, to: u64, out: &mut Vec<EncodedFrame>) {
        let mut data = Vec::new();
        let mut rtp_timestamp = 0;
        for s in from..=to {
            if let Some(p) = self.packets.remove(&s) {
                rtp_timestamp = p.rtp_timestamp;
                data.extend_from_slice(&p.payload);
            }
        }
        self.next = Some(to + 1);
        // The frame tag's P bit (bit 0 of the first byte) is 0 on a key frame.
        let key_frame = data.first().is_some_and(|b| b & 0x01 == 0);
        if self.waiting_for_key && !key_frame {
            self.stats.dropped_waiting_for_key += 1;
            return;
        }
        if key_frame {
            self.waiting_for_key = false;
            self.stats.key_frames += 1;
        }
        self.stats.frames += 1;
        out.push(EncodedFrame {
            data,
            rtp_timestamp,
            key_frame,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's packets: descriptor with a 15-bit picture id, then `chunks` of payload.
    fn packets(
        first_seq: u16,
        ts: u32,
        key: bool,
        chunks: usize,
    ) -> Vec<(u16, u32, bool, Vec<u8>)> {
        (0..chunks)
            .map(|i| {
                let start = i == 0;
                let mut p = vec![0x80 | if start { 0x10 } else { 0 }, 0x80, 0x80 | 0x12, 0x34];
                let tag = if key { 0x00 } else { 0x01 };
                p.push(if start { tag } else { 0xAA });
                p.extend_from_slice(&[i as u8; 3]);
                (first_seq.wrapping_add(i as u16), ts, i + 1 == chunks, p)
            })
            .collect()
    }

    fn feed(a: &mut Vp8Assembler, pkts: &[(u16, u32, bool, Vec<u8>)]) -> Vec<EncodedFrame> {
        pkts.iter()
            .flat_map(|(s, t, m, p)| a.push(*s, *t, *m, p))
            .collect()
    }

    #[test]
    fn a_frame_is_the_payloads_joined_without_descriptors() {
        let mut a = Vp8Assembler::new();
        let f = feed(&mut a, &packets(10, 3000, true, 3));
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].data,
            vec![0x00, 0, 0, 0, 0xAA, 1, 1, 1, 0xAA, 2, 2, 2],
            "payload bytes after the 4-byte descriptor, in sequence order"
        );
        assert!(f[0].key_frame);
        assert_eq!(f[0].rtp_timestamp, 3000);
        assert!(!a.waiting_for_key_frame());
    }

    #[test]
    fn reordering_within_a_frame_still_completes_it() {
        let mut a = Vp8Assembler::new();
        let mut p = packets(65534, 0, true, 4); // wraps through 0
        p.swap(1, 3);
        let f = feed(&mut a, &p);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data.len(), 16);
        assert_eq!(a.stats().losses, 0);
    }

    #[test]
    fn inter_frames_before_the_first_key_frame_are_dropped() {
        let mut a = Vp8Assembler::new();
        let start = packets(0, 0, false, 2);
        feed(&mut a, &start[..1]);
        assert!(a.waiting_for_key_frame());
        assert!(!a.needs_key_frame(), "nothing lost yet: no PLI");
        assert!(feed(&mut a, &start[1..]).is_empty());
        assert!(a.needs_key_frame(), "an inter frame could not be decoded");
        let f = feed(&mut a, &packets(2, 3000, true, 2));
        assert_eq!(f.len(), 1);
        assert_eq!(a.stats().dropped_waiting_for_key, 1);
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_every_inter_frame_until_the_next_key_frame() {
        let mut a = Vp8Assembler::new();
        let mut out = feed(&mut a, &packets(0, 0, true, 2));
        let mut lossy = packets(2, 3000, false, 3);
        lossy.remove(1);
        out.extend(feed(&mut a, &lossy));
        // The gap is held until a later frame ends: no retransmission is waited for beyond it.
        assert_eq!(a.stats().losses, 0);
        out.extend(feed(&mut a, &packets(5, 6000, false, 2)));
        assert_eq!(a.stats().losses, 1);
        assert!(a.needs_key_frame(), "the shell asks for a key frame");
        assert_eq!(a.stats().dropped_waiting_for_key, 1);
        out.extend(feed(&mut a, &packets(7, 9000, true, 2)));
        assert!(!a.waiting_for_key_frame());
        out.extend(feed(&mut a, &packets(9, 12000, false, 2)));
        let ts: Vec<u32> = out.iter().map(|f| f.rtp_timestamp).collect();
        assert_eq!(ts, vec![0, 9000, 12000]);
    }

    #[test]
    fn a_late_packet_fills_its_gap_before_the_next_frame_ends() {
        let mut a = Vp8Assembler::new();
        feed(&mut a, &packets(0, 0, true, 1));
        let mut p = packets(1, 3000, false, 3);
        let late = p.remove(1);
        let mut next = packets(4, 6000, false, 2);
        let next_end = next.pop().expect("two packets");
        let mut out = feed(&mut a, &p);
        out.extend(feed(&mut a, &next));
        out.extend(feed(&mut a, std::slice::from_ref(&late)));
        out.extend(feed(&mut a, &[next_end]));
        assert_eq!(out.len(), 2);
        assert_eq!(a.stats().losses, 0);
        // Once given up, the same packet is discarded.
        let before = a.stats().discarded_packets;
        assert!(feed(&mut a, &[late]).is_empty());
        assert_eq!(a.stats().discarded_packets, before + 1);
    }

    #[test]
    fn a_frame_without_its_marker_is_given_up_when_the_next_starts() {
        let mut a = Vp8Assembler::new();
        let mut p = packets(0, 0, true, 3);
        p.pop(); // marker lost
        let mut out = feed(&mut a, &p);
        out.extend(feed(&mut a, &packets(3, 3000, true, 2)));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rtp_timestamp, 3000);
        assert_eq!(a.stats().losses, 1);
    }

    #[test]
    fn malformed_descriptors_are_counted_not_fatal() {
        let mut a = Vp8Assembler::new();
        for bad in [&[][..], &[0x80], &[0x90, 0x80], &[0x90, 0x80, 0x80, 0x01]] {
            assert!(a.push(1, 0, true, bad).is_empty());
        }
        assert_eq!(a.stats().discarded_packets, 4);
    }

    #[test]
    fn the_buffer_is_bounded_when_a_gap_never_fills() {
        let mut a = Vp8Assembler::new();
        feed(&mut a, &packets(0, 0, true, 1));
        // A frame whose second packet never comes and whose marker never comes either.
        let mut seq = 1u16;
        let start = packets(seq, 3000, false, 2);
        feed(&mut a, &start[..1]);
        seq += 2;
        for i in 0..MAX_BUFFERED as u16 {
            let mut p = packets(seq + i, 3000, false, 2);
            p.truncate(1);
            p[0].3[0] &= !0x10; // continuation packets
            feed(&mut a, &p);
        }
        assert!(a.packets.len() <= MAX_BUFFERED);
        assert_eq!(a.stats().losses, 1);
    }
}
