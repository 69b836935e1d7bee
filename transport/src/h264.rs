//! H.264 access units out of RTP packets (RFC 6184, packetization-mode 1), sans-IO: packets in,
//! whole access units out as an Annex-B byte stream (`00 00 00 01` before each NAL unit), the
//! form a byte-stream decoder (`h264parse ! avdec_h264`) takes.
//!
//! Mode 1 carries single NAL unit packets (types 1–23), STAP-A aggregates (24) and FU-A
//! fragments (28). STAP-B, MTAP and FU-B belong to the interleaved mode nobody negotiates with
//! us; those packets, and any whose headers run past the payload, are counted as discarded. A
//! missing packet of a frame then looks like any other loss.
//!
//! RTP says where an access unit ends (the marker) but not where it starts, so the start is read
//! from the content, as H.264 itself defines it (§7.4.1.2.3): a packet starts an access unit when
//! its first NAL unit is an access unit delimiter, SPS, PPS or SEI, or a slice whose
//! `first_mb_in_slice` is 0 (the first exp-Golomb bit after the NAL header is 1). Later slices
//! of a multi-slice picture do not start one. Constrained Baseline (what the session negotiates)
//! forbids arbitrary slice order, so the first slice comes first.
//!
//! A key frame is an access unit with an IDR slice (type 5) whose parameter sets are known.
//! The latest SPS (7) and PPS (8) seen are kept: browsers send them in a STAP-A before every
//! IDR, but a sender that sent them once only would otherwise leave a decoder that was
//! restarted (or joined late) unable to decode its next IDR, so they are put back in front of
//! an IDR's first slice when its access unit lacks them. Only the latest of each is kept: a
//! sender that switches between several parameter-set ids (no WebRTC encoder does) would need
//! them all. Reordering, loss and waiting for a key frame are [`FrameAssembler`]'s, shared with
//! VP8. Intra-refresh streams (no IDR, a recovery-point SEI instead) are not recognised as
//! having key frames.
#![deny(clippy::disallowed_methods)]

use crate::frame::{FrameAssembler, Joined, Parsed, PayloadFormat};

/// Reassembles H.264 access units from one SSRC's packets.
pub type H264Assembler = FrameAssembler<H264Format>;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

fn nal_type(header: u8) -> u8 {
    header & 0x1F
}

/// Whether a NAL unit (header first) is the first of an access unit (H.264 §7.4.1.2.3).
fn starts_access_unit(nal: &[u8]) -> bool {
    match nal.first().map(|h| nal_type(*h)) {
        // SEI, SPS, PPS, access unit delimiter; prefix and subset-SPS NAL units of extensions.
        Some(6..=9 | 14..=18) => true,
        // A slice (or data partition A) whose first_mb_in_slice, ue(v), is 0: a single 1 bit.
        Some(1 | 2 | 5) => nal.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

fn is_slice(nal: &[u8]) -> bool {
    nal.first().is_some_and(|h| (1..=5).contains(&nal_type(*h)))
}

/// A NAL unit type a single-NAL packet or an aggregate may carry (not an RTP packet type).
fn valid_nal_header(header: u8) -> bool {
    header & 0x80 == 0 && (1..=23).contains(&nal_type(header))
}

/// What is kept of one packet until its access unit is complete.
#[derive(Debug)]
pub enum H264Unit {
    /// Whole NAL units: one from a single NAL unit packet, several from a STAP-A.
    Nals(Vec<Vec<u8>>),
    /// A piece of a fragmented NAL unit (FU-A). The first piece begins with the NAL header
    /// rebuilt from the FU indicator and header; `nal_type` ties the pieces together.
    Fragment {
        start: bool,
        end: bool,
        nal_type: u8,
        data: Vec<u8>,
    },
}

/// The H.264 payload format; remembers the latest parameter sets.
#[derive(Debug, Default)]
pub struct H264Format {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    prepended: u64,
}

impl H264Format {
    /// Parameter sets (SPS or PPS) put back in front of an IDR that came without them.
    pub fn parameter_sets_prepended(&self) -> u64 {
        self.prepended
    }
}

impl PayloadFormat for H264Format {
    type Unit = H264Unit;

    fn parse(&mut self, p: &[u8]) -> Option<Parsed<H264Unit>> {
        let header = *p.first()?;
        if header & 0x80 != 0 {
            // forbidden_zero_bit: the sender marks a NAL unit it knows is damaged.
            return None;
        }
        match nal_type(header) {
            1..=23 => Some(Parsed {
                frame_start: starts_access_unit(p),
                unit: H264Unit::Nals(vec![p.to_vec()]),
            }),
            STAP_A => {
                let mut nals = Vec::new();
                let mut rest = p.get(1..)?;
                while !rest.is_empty() {
                    let (len, tail) = rest.split_first_chunk::<2>()?;
                    let len = usize::from(u16::from_be_bytes(*len));
                    let nal = tail.get(..len)?;
                    if !nal.first().is_some_and(|h| valid_nal_header(*h)) {
                        return None;
                    }
                    nals.push(nal.to_vec());
                    rest = &tail[len..];
                }
                Some(Parsed {
                    frame_start: starts_access_unit(nals.first()?),
                    unit: H264Unit::Nals(nals),
                })
            }
            FU_A => {
                let fu = *p.get(1)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                let ty = nal_type(fu);
                // One fragment cannot be a whole NAL unit (RFC 6184 §5.8), and what is
                // fragmented is a NAL unit, not another packet type.
                if start && end || !(1..=23).contains(&ty) {
                    return None;
                }
                let body = p.get(2..)?;
                let data = if start {
                    let mut d = Vec::with_capacity(1 + body.len());
                    // F and NRI from the indicator, the type from the FU header.
                    d.push(header & 0xE0 | ty);
                    d.extend_from_slice(body);
                    d
                } else {
                    body.to_vec()
                };
                Some(Parsed {
                    frame_start: start && starts_access_unit(&data),
                    unit: H264Unit::Fragment {
                        start,
                        end,
                        nal_type: ty,
                        data,
                    },
                })
            }
            // STAP-B, MTAP16/24, FU-B (interleaved mode), 0 and 30–31 (undefined).
            _ => None,
        }
    }

    fn join(&mut self, units: Vec<H264Unit>) -> Option<Joined> {
        let mut nals: Vec<Vec<u8>> = Vec::new();
        let mut open: Option<(u8, Vec<u8>)> = None;
        for unit in units {
            match unit {
                H264Unit::Nals(v) => {
                    if open.is_some() {
                        // A fragmented NAL unit was cut off by another.
                        return None;
                    }
                    nals.extend(v);
                }
                H264Unit::Fragment {
                    start,
                    end,
                    nal_type: ty,
                    data,
                } => {
                    if start {
                        if open.is_some() {
                            return None;
                        }
                        open = Some((ty, data));
                    } else {
                        let (open_ty, nal) = open.as_mut()?;
                        if *open_ty != ty {
                            return None;
                        }
                        nal.extend_from_slice(&data);
                    }
                    if end {
                        nals.push(open.take()?.1);
                    }
                }
            }
        }
        if open.is_some() || nals.is_empty() {
            return None;
        }

        let has = |t: u8| {
            nals.iter()
                .any(|n| n.first().is_some_and(|h| nal_type(*h) == t))
        };
        let (idr, has_sps, has_pps) = (has(NAL_IDR), has(NAL_SPS), has(NAL_PPS));
        for n in &nals {
            match n.first().map(|h| nal_type(*h)) {
                Some(NAL_SPS) => self.sps = Some(n.clone()),
                Some(NAL_PPS) => self.pps = Some(n.clone()),
                _ => {}
            }
        }
        let insert: Vec<&[u8]> = if idr {
            [(has_sps, &self.sps), (has_pps, &self.pps)]
                .into_iter()
                .filter(|(present, _)| !present)
                .filter_map(|(_, kept)| kept.as_deref())
                .collect()
        } else {
            Vec::new()
        };
        // An IDR decodes only with both parameter sets, from this access unit or kept.
        let key_frame = idr && (has_sps || self.sps.is_some()) && (has_pps || self.pps.is_some());
        self.prepended += insert.len() as u64;

        let first_slice = nals.iter().position(|n| is_slice(n)).unwrap_or(nals.len());
        let size: usize = nals
            .iter()
            .map(Vec::len)
            .chain(insert.iter().map(|n| n.len()))
            .map(|l| l + START_CODE.len())
            .sum();
        let mut data = Vec::with_capacity(size);
        for (i, n) in nals.iter().enumerate() {
            if i == first_slice {
                // Parameter sets go after any delimiter or SEI and before the first slice.
                for p in &insert {
                    data.extend_from_slice(&START_CODE);
                    data.extend_from_slice(p);
                }
            }
            data.extend_from_slice(&START_CODE);
            data.extend_from_slice(n);
        }
        Some(Joined { data, key_frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{EncodedFrame, MAX_BUFFERED};

    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
    /// An IDR slice (first_mb_in_slice = 0), a P slice, and a second P slice (first_mb = 1).
    fn idr(len: usize) -> Vec<u8> {
        nal(0x65, 0x88, len)
    }
    fn p_slice(len: usize) -> Vec<u8> {
        nal(0x41, 0x9A, len)
    }
    fn second_slice(len: usize) -> Vec<u8> {
        nal(0x41, 0x40, len)
    }
    fn nal(header: u8, first: u8, len: usize) -> Vec<u8> {
        let mut n = vec![header, first];
        n.extend((0..len.saturating_sub(2)).map(|i| (i % 251) as u8 + 1));
        n
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    /// FU-A payloads of `nal`, `chunk` bytes of its body each.
    fn fu_a(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let n = body.chunks(chunk).count();
        body.chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut p = vec![nal[0] & 0xE0 | FU_A, nal_type(nal[0])];
                if i == 0 {
                    p[1] |= 0x80;
                }
                if i + 1 == n {
                    p[1] |= 0x40;
                }
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    type Pkt = (u16, u32, bool, Vec<u8>);

    /// One access unit's packets from `first_seq`, the marker on the last.
    fn au(first_seq: u16, ts: u32, payloads: Vec<Vec<u8>>) -> Vec<Pkt> {
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| (first_seq.wrapping_add(i as u16), ts, i + 1 == n, p))
            .collect()
    }

    fn feed(a: &mut H264Assembler, pkts: &[Pkt]) -> Vec<EncodedFrame> {
        pkts.iter()
            .flat_map(|(s, t, m, p)| a.push(*s, *t, *m, p))
            .collect()
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&START_CODE[..], n].concat())
            .collect()
    }

    /// A key frame as browsers send it: SPS+PPS in a STAP-A, the IDR fragmented.
    fn key(first_seq: u16, ts: u32) -> Vec<Pkt> {
        let mut p = vec![stap_a(&[SPS, PPS])];
        p.extend(fu_a(&idr(300), 100));
        au(first_seq, ts, p)
    }

    #[test]
    fn single_nal_unit_packets_make_an_annex_b_access_unit() {
        let mut a = H264Assembler::new();
        let i = idr(40);
        let f = feed(
            &mut a,
            &au(7, 3000, vec![SPS.to_vec(), PPS.to_vec(), i.clone()]),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, annex_b(&[SPS, PPS, &i]));
        assert!(f[0].key_frame);
        assert_eq!(f[0].rtp_timestamp, 3000);
        assert!(!a.waiting_for_key_frame());
        let p = p_slice(30);
        let f = feed(&mut a, &au(10, 6000, vec![p.clone()]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, annex_b(&[&p]));
        assert!(!f[0].key_frame);
        assert_eq!(a.format().parameter_sets_prepended(), 0);
    }

    #[test]
    fn stap_a_and_fu_a_rebuild_every_nal_unit() {
        let mut a = H264Assembler::new();
        let i = idr(1000);
        let mut payloads = vec![stap_a(&[SPS, PPS])];
        let frags = fu_a(&i, 300);
        assert_eq!(frags.len(), 4);
        payloads.extend(frags);
        let f = feed(&mut a, &au(65533, 0, payloads)); // wraps through 0
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, annex_b(&[SPS, PPS, &i]));
        assert!(f[0].key_frame);
        assert_eq!(a.stats().key_frames, 1);
    }

    #[test]
    fn a_multi_slice_picture_is_one_access_unit() {
        let mut a = H264Assembler::new();
        feed(&mut a, &key(0, 0));
        let (s1, s2) = (p_slice(250), second_slice(250));
        let mut payloads = fu_a(&s1, 100);
        payloads.extend(fu_a(&s2, 100));
        payloads.push(second_slice(20));
        let f = feed(&mut a, &au(4, 3000, payloads));
        assert_eq!(
            f.len(),
            1,
            "the later slices do not start a new access unit"
        );
        assert_eq!(f[0].data, annex_b(&[&s1, &s2, &second_slice(20)]));
    }

    #[test]
    fn reordering_within_an_access_unit_still_completes_it() {
        let mut a = H264Assembler::new();
        let mut p = key(65534, 0);
        p.swap(1, 3);
        p.swap(0, 2);
        let f = feed(&mut a, &p);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, annex_b(&[SPS, PPS, &idr(300)]));
        assert_eq!(a.stats().losses, 0);
    }

    #[test]
    fn a_lost_fragment_drops_its_frame_and_every_inter_frame_until_the_next_idr() {
        let mut a = H264Assembler::new();
        let mut out = feed(&mut a, &key(0, 0)); // seq 0..=3
        let mut lossy = au(4, 3000, fu_a(&p_slice(300), 100));
        lossy.remove(1);
        out.extend(feed(&mut a, &lossy));
        assert_eq!(a.stats().losses, 0, "held until a later frame ends");
        out.extend(feed(&mut a, &au(7, 6000, vec![p_slice(50)])));
        assert_eq!(a.stats().losses, 1);
        assert!(a.needs_key_frame(), "the shell asks for a key frame");
        assert_eq!(a.stats().dropped_waiting_for_key, 1);
        out.extend(feed(&mut a, &au(8, 9000, vec![p_slice(50)])));
        assert_eq!(a.stats().dropped_waiting_for_key, 2);
        out.extend(feed(&mut a, &key(9, 12000)));
        assert!(!a.waiting_for_key_frame());
        out.extend(feed(&mut a, &au(13, 15000, vec![p_slice(50)])));
        let ts: Vec<(u32, bool)> = out.iter().map(|f| (f.rtp_timestamp, f.key_frame)).collect();
        assert_eq!(ts, vec![(0, true), (12000, true), (15000, false)]);
    }

    #[test]
    fn a_lost_first_fragment_is_a_loss_not_a_frame() {
        let mut a = H264Assembler::new();
        feed(&mut a, &key(0, 0));
        let mut lossy = au(4, 3000, fu_a(&p_slice(300), 100));
        lossy.remove(0);
        let mut out = feed(&mut a, &lossy);
        out.extend(feed(&mut a, &au(7, 6000, vec![p_slice(50)])));
        assert!(out.is_empty());
        assert_eq!(a.stats().losses, 1);
        assert!(a.needs_key_frame());
    }

    #[test]
    fn parameter_sets_are_put_back_in_front_of_an_idr_that_lacks_them() {
        let mut a = H264Assembler::new();
        feed(&mut a, &key(0, 0));
        // A later IDR with an SEI first and no parameter sets.
        let sei = [0x06u8, 0x05, 0x01, 0xAA, 0x80];
        let i = idr(80);
        let f = feed(&mut a, &au(4, 3000, vec![sei.to_vec(), i.clone()]));
        assert_eq!(f.len(), 1);
        assert!(f[0].key_frame);
        assert_eq!(f[0].data, annex_b(&[&sei, SPS, PPS, &i]));
        assert_eq!(a.format().parameter_sets_prepended(), 2);
        // A newer SPS replaces the kept one; only the missing PPS is added.
        let sps2 = [0x67u8, 0x42, 0xC0, 0x1E, 0xDA];
        let f = feed(&mut a, &au(6, 6000, vec![sps2.to_vec(), i.clone()]));
        assert_eq!(f[0].data, annex_b(&[&sps2, PPS, &i]));
        let f = feed(&mut a, &au(8, 9000, vec![i.clone()]));
        assert_eq!(f[0].data, annex_b(&[&sps2, PPS, &i]));
        // Inter frames never get them.
        let p = p_slice(20);
        let f = feed(&mut a, &au(9, 12000, vec![p.clone()]));
        assert_eq!(f[0].data, annex_b(&[&p]));
        assert_eq!(a.format().parameter_sets_prepended(), 5);
    }

    #[test]
    fn an_idr_without_known_parameter_sets_is_not_a_key_frame() {
        let mut a = H264Assembler::new();
        assert!(feed(&mut a, &au(0, 0, vec![idr(50)])).is_empty());
        assert_eq!(a.stats().dropped_waiting_for_key, 1);
        assert!(a.needs_key_frame(), "undecodable: ask for a key frame");
        assert_eq!(feed(&mut a, &key(1, 3000)).len(), 1);
    }

    #[test]
    fn fragments_that_do_not_line_up_break_the_frame() {
        let mut a = H264Assembler::new();
        feed(&mut a, &key(0, 0));
        // A slice, then an FU-A continuation whose start never existed, then the marker.
        let mut payloads = vec![p_slice(30)];
        payloads.extend(fu_a(&second_slice(300), 100).into_iter().skip(1));
        let out = feed(&mut a, &au(4, 3000, payloads));
        assert!(out.is_empty());
        assert_eq!(a.stats().malformed_frames, 1);
        assert!(a.needs_key_frame());
        // An access unit whose marker comes before its fragmented NAL unit ended.
        let mut frags = fu_a(&idr(300), 100);
        frags.pop();
        let mut b = H264Assembler::new();
        let mut payloads = vec![stap_a(&[SPS, PPS])];
        payloads.extend(frags);
        assert!(feed(&mut b, &au(0, 0, payloads)).is_empty());
        assert_eq!(b.stats().malformed_frames, 1);
    }

    #[test]
    fn malformed_payloads_are_counted_not_fatal() {
        let mut a = H264Assembler::new();
        let bad: &[&[u8]] = &[
            &[],
            &[0xE5, 0x88],             // forbidden_zero_bit
            &[0x78],                   // STAP-A with nothing in it
            &[0x78, 0x00],             // truncated length
            &[0x78, 0x00, 0x09, 0x67], // length past the end
            &[0x78, 0x00, 0x00],       // empty NAL unit
            &[0x78, 0x00, 0x01, 0x78], // aggregate inside an aggregate
            &[0x7C],                   // FU-A without its header
            &[0x7C, 0xC5, 0x01],       // start and end in one fragment
            &[0x7C, 0x9C, 0x01],       // a fragmented FU-A
            &[0x79, 0x00],             // STAP-B
            &[0x7A, 0x00],             // MTAP16
            &[0x7B, 0x00],             // MTAP24
            &[0x7D, 0x85, 0x00],       // FU-B
            &[0x00, 0x01],             // type 0
            &[0x7E],                   // type 30
            &[0x7F],                   // type 31
        ];
        for (i, p) in bad.iter().enumerate() {
            assert!(a.push(i as u16, 0, true, p).is_empty(), "{p:?}");
        }
        assert_eq!(a.stats().discarded_packets, bad.len() as u64);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn random_packets_never_panic_and_stay_bounded() {
        let mut a = H264Assembler::new();
        let mut h = 0x2545_F491u32;
        let mut next = || {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            h
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly valid packet types, so the assembler gets past parsing.
            if let Some(b) = p.first_mut() {
                *b = *b & 0x60 | [1, 5, 7, 8, 24, 28, 28, 28][(next() % 8) as usize];
            }
            let seq = (next() % 2000) as u16;
            let ts = (next() % 8) * 3000;
            a.push(seq, ts, next() % 4 == 0, &p);
            assert!(a.buffered() <= MAX_BUFFERED);
        }
        let s = a.stats();
        assert!(s.discarded_packets > 0 && s.losses > 0, "{s:?}");
    }
}
