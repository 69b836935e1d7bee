//! RTP payload for redundant audio (RED, RFC 2198) carrying Opus, as browsers send it
//! (`audio/red` with `fmtp` `111/111`): each packet repeats the last frame(s) beside the new one,
//! so a lost packet is rebuilt at full quality from the one after it, where Opus's in-band FEC
//! only has a low-bitrate copy. Pure functions: parsed here, the jitter buffer takes the blocks.
//!
//! Layout: one 4-byte header per redundant block (F=1, block payload type, 14-bit timestamp
//! offset back from the packet's timestamp, 10-bit block length), a 1-byte header for the primary
//! (F=0, payload type), then the blocks' data in header order, the primary last.

use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::TransportError;

/// The `audio/red` codec carrying Opus at `opus_pt` (both blocks), as registered in a media
/// engine (`fmtp` `111/111` for Opus at 111, as browsers offer it).
pub fn rtp_codec(opus_pt: u8) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/red".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: format!("{opus_pt}/{opus_pt}"),
        rtcp_feedback: vec![],
    }
}

/// Redundant blocks taken from one packet at most; browsers send one or two. A packet claiming
/// more is refused rather than walked (each block is a frame to place).
pub const MAX_REDUNDANT_BLOCKS: usize = 8;

/// One redundant block: an earlier frame, `timestamp_offset` RTP ticks before the packet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedundantBlock<'a> {
    pub payload_type: u8,
    pub timestamp_offset: u16,
    pub payload: &'a [u8],
}

/// A parsed RED payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedPayload<'a> {
    /// Oldest first, as sent.
    pub redundant: Vec<RedundantBlock<'a>>,
    pub primary_type: u8,
    pub primary: &'a [u8],
}

fn bad(reason: impl Into<String>) -> TransportError {
    TransportError::Red {
        reason: reason.into(),
    }
}

/// Splits a RED payload into its blocks.
///
/// # Errors
/// [`TransportError::Red`] when the headers run past the payload, the lengths do not fit, or
/// there are more than [`MAX_REDUNDANT_BLOCKS`] redundant blocks.
pub fn parse(payload: &[u8]) -> Result<RedPayload<'_>, TransportError> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let Some(&first) = payload.get(at) else {
            return Err(bad(format!(
                "the headers run past the {}-byte payload",
                payload.len()
            )));
        };
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        let Some(h) = payload.get(at..at + 4) else {
            return Err(bad(format!(
                "a block header at byte {at} runs past the {}-byte payload",
                payload.len()
            )));
        };
        if headers.len() == MAX_REDUNDANT_BLOCKS {
            return Err(bad(format!(
                "more than {MAX_REDUNDANT_BLOCKS} redundant blocks"
            )));
        }
        let offset = (u16::from(h[1]) << 6) | (u16::from(h[2]) >> 2);
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        headers.push((h[0] & 0x7F, offset, len));
        at += 4;
    }
    let primary_type = payload[at - 1] & 0x7F;
    let mut redundant = Vec::with_capacity(headers.len());
    for (payload_type, timestamp_offset, len) in headers {
        let Some(data) = payload.get(at..at + len) else {
            return Err(bad(format!(
                "a {len}-byte block at byte {at} runs past the {}-byte payload",
                payload.len()
            )));
        };
        redundant.push(RedundantBlock {
            payload_type,
            timestamp_offset,
            payload: data,
        });
        at += len;
    }
    Ok(RedPayload {
        redundant,
        primary_type,
        primary: &payload[at..],
    })
}

/// Builds a RED payload: `redundant` (oldest first) and then the primary block. The sending side
/// of tests and clients; the server only receives RED.
///
/// # Errors
/// [`TransportError::Red`] for a block longer than 1023 bytes, an offset over 14 bits, a payload
/// type over 127, or more than [`MAX_REDUNDANT_BLOCKS`] blocks.
pub fn build(
    redundant: &[RedundantBlock<'_>],
    primary_type: u8,
    primary: &[u8],
) -> Result<Vec<u8>, TransportError> {
    if redundant.len() > MAX_REDUNDANT_BLOCKS {
        return Err(bad(format!(
            "{} redundant blocks, at most {MAX_REDUNDANT_BLOCKS}",
            redundant.len()
        )));
    }
    if primary_type > 0x7F {
        return Err(bad(format!("payload type {primary_type} is over 127")));
    }
    let size = redundant.iter().map(|b| 4 + b.payload.len()).sum::<usize>() + 1 + primary.len();
    let mut out = Vec::with_capacity(size);
    for b in redundant {
        if b.payload.len() > 0x3FF || b.timestamp_offset > 0x3FFF || b.payload_type > 0x7F {
            return Err(bad(format!(
                "block of {} bytes at offset {} with type {} does not fit its header",
                b.payload.len(),
                b.timestamp_offset,
                b.payload_type
            )));
        }
        let len = b.payload.len() as u16;
        out.push(0x80 | b.payload_type);
        out.push((b.timestamp_offset >> 6) as u8);
        out.push((((b.timestamp_offset & 0x3F) << 2) as u8) | ((len >> 8) as u8));
        out.push((len & 0xFF) as u8);
    }
    out.push(primary_type);
    for b in redundant {
        out.extend_from_slice(b.payload);
    }
    out.extend_from_slice(primary);
    Ok(out)
}

/// Samples per channel at 48 kHz in an Opus packet, from its TOC byte and frame count
/// (RFC 6716 §3.1); `None` for an empty or malformed packet.
pub fn opus_packet_samples(p: &[u8]) -> Option<usize> {
    let &toc = p.first()?;
    let config = toc >> 3;
    // In 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => usize::from(p.get(1)? & 0x3F),
    };
    let samples = frame * frames;
    // RFC 6716: a packet holds at most 120 ms.
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// How many packets back a redundant block lies: its timestamp offset in whole frames of its
/// own length (the sender's framing), or `None` when it does not divide (then the block cannot
/// be placed by sequence number and is ignored).
pub fn packets_back(block: &RedundantBlock<'_>) -> Option<u64> {
    let samples = opus_packet_samples(block.payload)?;
    let offset = usize::from(block.timestamp_offset);
    (offset > 0 && offset % samples == 0).then(|| (offset / samples) as u64)
}

/// The payload type an SDP (the server's answer) gives RED in its live audio section, if any.
pub fn payload_type_in_sdp(sdp: &str) -> Option<u8> {
    let mut live_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            live_audio = f.next() == Some("audio") && f.next().is_some_and(|port| port != "0");
        } else if let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| live_audio) {
            let (pt, codec) = map.split_once(' ')?;
            if codec
                .split('/')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case("red"))
            {
                return pt.parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms SILK wideband mono packet's TOC (config 9, code 0) and some bytes.
    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut v = vec![9 << 3];
        v.extend(std::iter::repeat_n(tag, len - 1));
        v
    }

    #[test]
    fn build_and_parse_round_trip_byte_exact() {
        let (a, b, p) = (frame(1, 40), frame(2, 300), frame(3, 77));
        let blocks = [
            RedundantBlock {
                payload_type: 111,
                timestamp_offset: 1920,
                payload: &a,
            },
            RedundantBlock {
                payload_type: 111,
                timestamp_offset: 960,
                payload: &b,
            },
        ];
        let bytes = build(&blocks, 111, &p).expect("build");
        assert_eq!(bytes.len(), 4 * 2 + 1 + 40 + 300 + 77);
        // RFC 2198 header for the first block: F=1|PT, offset 1920 (14 bits), length 40 (10 bits).
        assert_eq!(
            &bytes[..4],
            &[
                0x80 | 111,
                (1920u16 >> 6) as u8,
                ((1920u16 & 0x3F) << 2) as u8,
                40
            ]
        );
        let parsed = parse(&bytes).expect("parse");
        assert_eq!(parsed.redundant, blocks.to_vec());
        assert_eq!((parsed.primary_type, parsed.primary), (111, &p[..]));
        assert_eq!(
            parsed
                .redundant
                .iter()
                .map(packets_back)
                .collect::<Vec<_>>(),
            vec![Some(2), Some(1)]
        );
    }

    #[test]
    fn a_primary_alone_and_an_empty_redundant_block_parse() {
        let p = frame(7, 10);
        let only = build(&[], 111, &p).expect("build");
        assert_eq!(only[0], 111);
        let parsed = parse(&only).expect("parse");
        assert!(parsed.redundant.is_empty());
        assert_eq!(parsed.primary, &p[..]);
        // A sender with nothing to repeat (the first packet, or DTX) sends a 0-byte block.
        let empty = build(
            &[RedundantBlock {
                payload_type: 111,
                timestamp_offset: 960,
                payload: &[],
            }],
            111,
            &p,
        )
        .expect("build");
        let parsed = parse(&empty).expect("parse");
        assert_eq!(parsed.redundant[0].payload, &[] as &[u8]);
        assert_eq!(packets_back(&parsed.redundant[0]), None);
    }

    #[test]
    fn truncated_or_oversized_payloads_are_errors_not_panics() {
        let p = frame(1, 20);
        let bytes = build(
            &[RedundantBlock {
                payload_type: 111,
                timestamp_offset: 960,
                payload: &p,
            }],
            111,
            &p,
        )
        .expect("build");
        for cut in 0..5 + p.len() {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
        let many = [0x80u8 | 111, 0, 0, 0].repeat(MAX_REDUNDANT_BLOCKS + 1);
        let err = parse(&[many, vec![111]].concat()).expect_err("too many blocks");
        assert!(err.to_string().contains("more than 8"), "{err}");
        let long = vec![0; 1024];
        let block = RedundantBlock {
            payload_type: 111,
            timestamp_offset: 960,
            payload: &long,
        };
        assert!(build(&[block], 111, &p).is_err());
    }

    #[test]
    fn red_payload_type_is_read_from_the_live_audio_section_only() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=rtpmap:63 red/48000/2\r\n\
                   a=fmtp:63 111/111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(payload_type_in_sdp(sdp), Some(63));
        let rejected = sdp.replace("m=audio 9", "m=audio 0");
        assert_eq!(payload_type_in_sdp(&rejected), None);
        let opus_only = "m=audio 9 RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(payload_type_in_sdp(opus_only), None);
    }

    #[test]
    fn opus_durations_from_the_toc() {
        assert_eq!(opus_packet_samples(&[9 << 3]), Some(960)); // SILK WB 20 ms
        assert_eq!(opus_packet_samples(&[(8 << 3) | 1]), Some(960)); // 2 × SILK 10 ms
        assert_eq!(opus_packet_samples(&[(15 << 3) | 3, 3]), Some(2880)); // 3 × hybrid 20 ms
        assert_eq!(opus_packet_samples(&[(28 << 3) | 3, 48]), Some(5760)); // 48 × CELT 2.5 ms
        assert_eq!(opus_packet_samples(&[(28 << 3) | 3, 49]), None); // over 120 ms
        assert_eq!(opus_packet_samples(&[31 << 3]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_packet_samples(&[(11 << 3) | 3, 0]), None); // no frames
        assert_eq!(opus_packet_samples(&[]), None);
    }
}
