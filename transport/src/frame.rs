//! Whole encoded video frames out of RTP packets, sans-IO: what the VP8 ([`crate::vp8`]) and
//! H.264 ([`crate::h264`]) assemblers share. A [`PayloadFormat`] says what one packet's payload
//! holds and how a frame's payloads join; [`FrameAssembler`] does everything else the same way
//! for both: sequence-number unwrapping, reordering, loss, and waiting for a key frame.
//!
//! The model path never waits for a retransmission. A frame is complete when every packet from
//! its first (the format says which packet starts a frame) to its marker has arrived with
//! consecutive sequence numbers; packets may arrive out of order meanwhile. A gap is declared
//! lost as soon as a later frame has ended (its marker arrived) — about one frame interval of
//! reordering tolerance, far less than a NACK round trip — or when the buffer holds
//! [`MAX_BUFFERED`] packets. After a loss every inter frame may reference what was lost, so
//! frames are dropped until the next key frame ([`FrameAssembler::needs_key_frame`] tells the
//! shell to ask for one with a PLI). What the model sees meanwhile is the last good picture,
//! which the latest-frame ring keeps.
#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;

/// Packets held while waiting for a gap to fill; beyond this the oldest gap is declared lost.
pub const MAX_BUFFERED: usize = 512;

/// The codecs whose frames can be assembled and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    /// The codec of a track's mime type (`video/VP8`, `video/H264`; case-insensitive).
    pub fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("video/vp8") {
            Some(Self::Vp8)
        } else if mime.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Vp8 => "VP8",
            Self::H264 => "H.264",
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One complete encoded frame in the form its decoder takes: VP8's own bitstream (descriptors
/// removed), or one H.264 access unit as an Annex-B byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// RTP timestamp (90 kHz) of the frame's packets.
    pub rtp_timestamp: u32,
    pub key_frame: bool,
}

/// What an assembler has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    pub frames: u64,
    pub key_frames: u64,
    /// Gaps declared lost (each may have taken one or more frames with it).
    pub losses: u64,
    /// Complete inter frames dropped because a reference before them was lost.
    pub dropped_waiting_for_key: u64,
    /// Packets that arrived after their place was given up, or with a malformed payload header.
    pub discarded_packets: u64,
    /// Frames whose packets were all there but did not join into a valid frame (e.g. H.264
    /// fragments that do not line up). Each also breaks the reference chain, like a loss.
    pub malformed_frames: u64,
}

/// One packet's payload as its format reads it.
pub struct Parsed<U> {
    /// The packet starts a frame (its first packet).
    pub frame_start: bool,
    /// What the frame is later joined from.
    pub unit: U,
}

/// A frame joined from its packets' units.
pub struct Joined {
    pub data: Vec<u8>,
    pub key_frame: bool,
}

/// A codec's RTP payload format: what the [`FrameAssembler`] needs to know about it.
pub trait PayloadFormat {
    /// What is kept of one packet until its frame is complete.
    type Unit;
    /// Reads one packet's payload; `None` for a malformed one (it is counted and discarded).
    fn parse(&mut self, payload: &[u8]) -> Option<Parsed<Self::Unit>>;
    /// Joins a complete frame's units, in sequence order; `None` if they do not make a valid
    /// frame.
    fn join(&mut self, units: Vec<Self::Unit>) -> Option<Joined>;
}

struct Pkt<U> {
    rtp_timestamp: u32,
    marker: bool,
    frame_start: bool,
    unit: U,
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

/// Reassembles one SSRC's frames in the payload format `F`.
pub struct FrameAssembler<F: PayloadFormat> {
    format: F,
    packets: BTreeMap<u64, Pkt<F::Unit>>,
    seq: SeqUnwrap,
    /// The first packet of the next frame to emit (`None` until the first frame start).
    next: Option<u64>,
    /// Packets below this were given up on (`next` is `None` after a loss with nothing held).
    floor: u64,
    waiting_for_key: bool,
    stats: AssemblyStats,
}

impl<F: PayloadFormat + Default> Default for FrameAssembler<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: PayloadFormat + Default> FrameAssembler<F> {
    pub fn new() -> Self {
        Self::with_format(F::default())
    }
}

impl<F: PayloadFormat> FrameAssembler<F> {
    pub fn with_format(format: F) -> Self {
        Self {
            format,
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
                || self.stats.dropped_waiting_for_key > 0
                || self.stats.malformed_frames > 0)
    }

    /// The decoder could not continue (it refused a frame): drop inter frames until a key frame.
    pub fn reset_to_key_frame(&mut self) {
        self.waiting_for_key = true;
    }

    /// Packets held, waiting for their frame to complete.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.packets.len()
    }

    /// The payload format's own state (H.264: the kept parameter sets).
    pub fn format(&self) -> &F {
        &self.format
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
        if s < self.floor || self.next.is_some_and(|n| s < n) || self.packets.contains_key(&s) {
            self.stats.discarded_packets += 1;
            return Vec::new();
        }
        let Some(Parsed { frame_start, unit }) = self.format.parse(payload) else {
            self.stats.discarded_packets += 1;
            return Vec::new();
        };
        self.packets.insert(
            s,
            Pkt {
                rtp_timestamp,
                marker,
                frame_start,
                unit,
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
        let mut units = Vec::new();
        let mut rtp_timestamp = 0;
        for s in from..=to {
            if let Some(p) = self.packets.remove(&s) {
                rtp_timestamp = p.rtp_timestamp;
                units.push(p.unit);
            }
        }
        self.next = Some(to + 1);
        let Some(Joined { data, key_frame }) = self.format.join(units) else {
            // Whatever this frame was, what follows it may reference it.
            self.stats.malformed_frames += 1;
            self.waiting_for_key = true;
            return;
        };
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
