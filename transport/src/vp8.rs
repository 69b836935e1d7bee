//! VP8 frames out of RTP packets (RFC 7741), sans-IO: packets in, whole encoded frames out.
//!
//! [`Vp8Format`] reads the payload descriptor (a frame starts at S=1, partition 0) and joins a
//! frame's payloads without their descriptors; the frame tag's P bit tells a key frame.
//! Reordering, loss and waiting for a key frame are [`FrameAssembler`]'s, shared with H.264.
#![deny(clippy::disallowed_methods)]

pub use crate::frame::{AssemblyStats, EncodedFrame};
use crate::frame::{FrameAssembler, Joined, Parsed, PayloadFormat};

/// Reassembles VP8 frames from one SSRC's packets.
pub type Vp8Assembler = FrameAssembler<Vp8Format>;

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

/// The VP8 payload format (RFC 7741); stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct Vp8Format;

impl PayloadFormat for Vp8Format {
    /// The VP8 payload after the descriptor.
    type Unit = Vec<u8>;

    fn parse(&mut self, payload: &[u8]) -> Option<Parsed<Vec<u8>>> {
        let (offset, frame_start) = parse_descriptor(payload)?;
        Some(Parsed {
            frame_start,
            unit: payload.get(offset..)?.to_vec(),
        })
    }

    fn join(&mut self, units: Vec<Vec<u8>>) -> Option<Joined> {
        let data = units.concat();
        // The frame tag's P bit (bit 0 of the first byte) is 0 on a key frame.
        let key_frame = data.first().is_some_and(|b| b & 0x01 == 0);
        Some(Joined { data, key_frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_BUFFERED;

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
        assert!(a.buffered() <= MAX_BUFFERED);
        assert_eq!(a.stats().losses, 1);
    }
}
