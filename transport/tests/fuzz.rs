//! Seeded random-input harnesses on stable Rust, no fuzzing crate: a splitmix64 generator makes
//! inputs (random bytes, and mutations of valid inputs), each target checks that nothing panics
//! and that its documented invariants hold.
//!
//! | target | input | checks |
//! |---|---|---|
//! | `client_message_json` | random bytes; valid `events` messages with JSON-ish mutations | no panic; `Ok` only for a non-empty text of at most 4096 bytes or a non-empty config without `type`; deterministic; a text round-trips |
//! | `jitter_buffer` | push/pop sequences: in order, reordered, duplicated, gaps, wraps, forward and backward jumps, restarts; clocks that jump and step back | no panic; after every drain fewer than `MAX_HELD` packets held; every push counted once as received, duplicate or late; every received packet played at most once, or flushed by a restart, or still held; a `Lost { next }` is followed by `next` itself; at most 50 losses concealed in a row |
//! | `sdp_offer` | a browser-like offer (audio, video, data channel) and a minimal one, mutated by line and by byte | no panic in `parse_offer` (SDP and JSON bodies agree), `media_sections`, `abs_send_time_id`; live audio implies audio; an accepted offer has audio |
//! | `rtp_opus_payload` | random bytes and well-formed RTP (CSRCs, one- and two-byte header extensions, padding) around real or mutated Opus packets | no panic in RTP parsing, `send_time`, `packet_has_fec`, Opus decode and FEC/PLC concealment; decoded frames at most 120 ms, samples finite |
//! | `transport_config_toml` | `configs/default.toml`'s `[transport]` section, mutated by line and by value | no panic parsing or validating |
//!
//! Each target runs `VOICERELAY_FUZZ_ITERS` iterations (default 20 000) from
//! `VOICERELAY_FUZZ_SEED` (default fixed, so the suite is deterministic); a failing case prints
//! its input and `VOICERELAY_FUZZ_CASE=<seed>`, which replays that case alone. Long run:
//! `VOICERELAY_FUZZ_ITERS=2000000 VOICERELAY_FUZZ_SEED=$RANDOM cargo nextest run -p
//! voicerelay-transport --test fuzz --release --no-capture`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::shared::marshal::Unmarshal;
use voicerelay_transport as vr_transport;
use vr_core::fuzz::{json_dict, mutate_bytes, run, Input, Rng};
use vr_transport::fuzz_api;
use vr_transport::jitter::{JitterBuffer, Playout, MAX_HELD};
use vr_transport::opus::{EncoderSettings, OpusDecoder, OpusEncoder, FRAME_SAMPLES};
use vr_transport::ClientMessage;

// ---------------------------------------------------------------------------------------------
// Data-channel JSON.

/// The `events` messages' own keys, beside `vr_core::fuzz::JSON_TOKENS`.
const EVENT_TOKENS: &[&[u8]] = &[b"\"text\"", b"\"interrupt\"", b"\"config\"", b"\"voice\""];

fn json_seeds() -> Vec<Vec<u8>> {
    let long = "a".repeat(4096);
    let too_long = "é".repeat(2049);
    vec![
        br#"{"type":"interrupt"}"#.to_vec(),
        br#"{"type":"text","text":"What time is it?"}"#.to_vec(),
        br#"{"type":"text","text":"caf\u00e9 \ud83d\ude00 \"quoted\" \n"}"#.to_vec(),
        br#"{"type":"config","voice":"flite"}"#.to_vec(),
        br#"{"type":"config","voice":{"nested":[1,2,{"x":null}]},"speed":2.5}"#.to_vec(),
        br#"{"text":"order","type":"text","extra":[true,false]}"#.to_vec(),
        format!(r#"{{"type":"text","text":"{long}"}}"#).into_bytes(),
        format!(r#"{{"type":"text","text":"{too_long}"}}"#).into_bytes(),
        br#"{"type":"text","text":"dup","text":"second"}"#.to_vec(),
        br#"{"type":"type","type":"text","text":"x"}"#.to_vec(),
    ]
}

fn check_client_message(raw: &[u8]) {
    let r = ClientMessage::parse(raw);
    assert_eq!(r, ClientMessage::parse(raw), "parse is not deterministic");
    match &r {
        Ok(ClientMessage::Interrupt) => {}
        Ok(ClientMessage::Text(t)) => {
            assert!(!t.trim().is_empty(), "empty text accepted");
            assert!(t.len() <= 4096, "{} bytes of text accepted", t.len());
            let again = serde_json::json!({"type": "text", "text": t}).to_string();
            assert_eq!(ClientMessage::parse(again.as_bytes()), r, "text round trip");
        }
        Ok(ClientMessage::Config(m)) => {
            assert!(!m.is_empty(), "empty config accepted");
            assert!(!m.contains_key("type"), "config keeps its type: {m:?}");
        }
        Err(e) => assert!(!e.is_empty(), "an error without a reason"),
    }
}

#[test]
fn fuzz_client_message_json() {
    let seeds = json_seeds();
    run(
        "client_message_json",
        |rng| {
            if rng.chance(25) {
                return Input(rng.bytes(64));
            }
            let mut m = rng.pick(&seeds).clone();
            if rng.chance(5) {
                // Deep nesting: serde_json's recursion limit must answer, not the stack.
                let depth = rng.usize(100_000);
                let mut v = b"{\"type\":\"config\",\"v\":".to_vec();
                v.extend(std::iter::repeat_n(b'[', depth));
                v.extend(std::iter::repeat_n(b']', rng.usize(depth + 1)));
                v.push(b'}');
                m = v;
            }
            mutate_bytes(rng, &mut m, &json_dict(EVENT_TOKENS));
            Input(m)
        },
        |input| check_client_message(&input.0),
    );
}

// ---------------------------------------------------------------------------------------------
// The jitter buffer.

#[derive(Debug, Clone, Copy)]
enum JbOp {
    /// Push this sequence number (its payload is the push's index) at the current time.
    Push(u16),
    /// Offer a RED copy of this sequence number (payload: the push's index).
    Redundant(u16),
    /// Advance the clock (ms; negative = a clock stepping back) and drain.
    Tick(i64),
}

fn jitter_ops(rng: &mut Rng) -> (u64, Vec<JbOp>) {
    let window_ms = *rng.pick(&[0u64, 1, 20, 60, 200, 1000]);
    let n = 1 + rng.usize(200);
    let mut seq: u16 = if rng.chance(30) {
        65535 - rng.below(40) as u16
    } else {
        rng.byte() as u16 * 257
    };
    let mut ops = Vec::with_capacity(n * 2);
    for _ in 0..n {
        let step: i64 = match rng.below(100) {
            0..=49 => 1,
            50..=59 => rng.range(-5, 5),
            60..=64 => 0,
            65..=74 => rng.range(2, 60),
            75..=79 => rng.range(40, 200),
            80..=83 => rng.range(1000, 32767),
            84..=87 => -rng.range(90, 130),
            88..=91 => -rng.range(131, 32768),
            92..=94 => rng.range(-65535, 65535),
            _ => {
                // A restarted sequence: a far jump back, then its successors.
                seq = seq.wrapping_sub(rng.range(101, 40_000) as u16);
                ops.push(JbOp::Push(seq));
                1
            }
        };
        seq = seq.wrapping_add(step as u16);
        ops.push(JbOp::Push(seq));
        if rng.chance(30) {
            // The copies a RED packet carries: one to three packets back, or anywhere.
            let back = if rng.chance(90) {
                rng.range(1, 3)
            } else {
                rng.range(-40_000, 40_000)
            };
            ops.push(JbOp::Redundant(seq.wrapping_sub(back as u16)));
        }
        if rng.chance(60) {
            let dt = match rng.below(20) {
                0 => -rng.range(1, 100),
                1 => rng.range(1000, 700_000),
                _ => rng.range(0, 80),
            };
            ops.push(JbOp::Tick(dt));
        }
    }
    ops.push(JbOp::Tick(window_ms as i64 + 1));
    (window_ms, ops)
}

/// What became of each push, as far as the statistics tell it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Received,
    Duplicate,
    Late,
    /// A RED copy that filled a missing slot.
    Recovered,
    /// A RED copy nobody needed.
    Ignored,
}

fn check_jitter(window_ms: u64, ops: &[JbOp]) {
    let base = Instant::now() + Duration::from_secs(1000);
    let mut now = base;
    let mut jb = JitterBuffer::new(Duration::from_millis(window_ms));
    let mut fates: Vec<Fate> = Vec::new();
    let mut played = vec![false; ops.len()];
    let mut played_n = 0u64;
    let mut drain = |jb: &mut JitterBuffer, now: Instant, fates: &[Fate]| {
        let mut lost_run = 0u32;
        let mut expect_next: Option<Bytes> = None;
        while let Some(p) = jb.pop(now) {
            match p {
                Playout::Packet(b) => {
                    if let Some(want) = expect_next.take() {
                        assert_eq!(b, want, "Lost{{next}} was not the packet played next");
                    }
                    let id = u32::from_le_bytes(b[..4].try_into().expect("4-byte id")) as usize;
                    assert!(
                        matches!(fates[id], Fate::Received | Fate::Recovered),
                        "push {id} played but counted {:?}",
                        fates[id]
                    );
                    assert!(!played[id], "push {id} played twice");
                    played[id] = true;
                    played_n += 1;
                    lost_run = 0;
                }
                Playout::Lost { next } => {
                    assert!(
                        expect_next.is_none(),
                        "Lost{{next: Some}} followed by a loss"
                    );
                    expect_next = next;
                    lost_run += 1;
                    assert!(lost_run <= 50, "{lost_run} losses concealed in a row");
                }
            }
        }
        assert!(expect_next.is_none(), "Lost{{next: Some}} and then nothing");
        assert!(
            jb.held_len() < MAX_HELD,
            "{} packets held after a drain",
            jb.held_len()
        );
    };
    for op in ops {
        match *op {
            JbOp::Push(seq) => {
                let id = fates.len() as u32;
                let before = jb.stats();
                jb.push(seq, Bytes::copy_from_slice(&id.to_le_bytes()), now);
                let after = jb.stats();
                let d = |a: u64, b: u64| a as i64 - b as i64;
                let (dr, dd, dl) = (
                    d(after.received, before.received),
                    d(after.duplicates, before.duplicates),
                    d(after.late, before.late),
                );
                assert_eq!(dr + dd + dl, 1, "push of {seq} counted {dr}/{dd}/{dl}");
                if after.restarts > before.restarts {
                    // The previous push, counted late as a candidate, became the new start.
                    assert_eq!((dr, dd, dl), (2, 0, -1));
                    // (RED copies offered in between are no pushes of the sequence.)
                    let prev = fates
                        .iter_mut()
                        .rev()
                        .find(|f| !matches!(f, Fate::Recovered | Fate::Ignored))
                        .expect("a restart needs a candidate");
                    assert_eq!(*prev, Fate::Late);
                    *prev = Fate::Received;
                    fates.push(Fate::Received);
                } else {
                    fates.push(match (dr, dd, dl) {
                        (1, 0, 0) => Fate::Received,
                        (0, 1, 0) => Fate::Duplicate,
                        (0, 0, 1) => Fate::Late,
                        other => panic!("push of {seq} counted {other:?}"),
                    });
                }
                drain(&mut jb, now, &fates);
            }
            JbOp::Redundant(seq) => {
                let id = fates.len() as u32;
                let before = jb.stats();
                jb.push_redundant(seq, Bytes::copy_from_slice(&id.to_le_bytes()), now);
                let after = jb.stats();
                let recovered = after.recovered - before.recovered;
                assert!(recovered <= 1, "one copy recovered {recovered}");
                assert_eq!(
                    (after.received, after.duplicates, after.late, after.restarts),
                    (
                        before.received,
                        before.duplicates,
                        before.late,
                        before.restarts
                    ),
                    "a RED copy of {seq} moved the packet counters"
                );
                fates.push(if recovered == 1 {
                    Fate::Recovered
                } else {
                    Fate::Ignored
                });
                drain(&mut jb, now, &fates);
            }
            JbOp::Tick(dt) => {
                now = if dt >= 0 {
                    now + Duration::from_millis(dt as u64)
                } else {
                    now - Duration::from_millis(dt.unsigned_abs())
                };
                drain(&mut jb, now, &fates);
            }
        }
    }
    let s = jb.stats();
    let received = fates.iter().filter(|f| **f == Fate::Received).count() as u64;
    let count = |f: Fate| fates.iter().filter(|x| **x == f).count() as u64;
    assert_eq!(s.received, received);
    assert_eq!(s.recovered, count(Fate::Recovered));
    assert_eq!(
        s.received + s.recovered,
        played_n + jb.held_len() as u64 + s.flushed,
        "received + recovered = played + held + flushed ({s:?}, played {played_n}, held {})",
        jb.held_len()
    );
    assert_eq!(
        fates.len() as u64,
        s.received + s.duplicates + s.late + s.recovered + count(Fate::Ignored),
        "every push counted once"
    );
}

#[test]
fn fuzz_jitter_buffer() {
    run("jitter_buffer", jitter_ops, |(window_ms, ops)| {
        check_jitter(*window_ms, ops)
    });
}

// ---------------------------------------------------------------------------------------------
// SDP offers.

const BROWSER_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx7Q\r\n\
a=ice-pwd:9lWb6Hq0Q0aXuvZ1aSy6v5ge\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:4C:D3:B6:5A:09:BD:DC:FD\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:stream track-audio\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1001 cname:abc\r\n\
a=ssrc:1001 msid:stream track-audio\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx7Q\r\n\
a=ice-pwd:9lWb6Hq0Q0aXuvZ1aSy6v5ge\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:4C:D3:B6:5A:09:BD:DC:FD\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=sendrecv\r\n\
a=msid:stream track-video\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 goog-remb\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc-group:FID 2001 2002\r\n\
a=ssrc:2001 cname:abc\r\n\
a=ssrc:2002 cname:abc\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx7Q\r\n\
a=ice-pwd:9lWb6Hq0Q0aXuvZ1aSy6v5ge\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:4C:D3:B6:5A:09:BD:DC:FD\r\n\
a=setup:actpass\r\n\
a=mid:2\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

const MINIMAL_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=fingerprint:sha-256 AA:BB\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

const SDP_LINES: &[&str] = &[
    "m=",
    "m=audio",
    "m=audio 0 UDP/TLS/RTP/SAVPF 111",
    "m=audio 99999999999999999999 RTP/AVP 0",
    "m=audio -1 RTP/AVP",
    "m=audio 9/2 UDP/TLS/RTP/SAVPF 111",
    "m=video 9 UDP/TLS/RTP/SAVPF",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=text 9 RTP/AVP 98",
    "a=",
    "a=:",
    "a=extmap:",
    "a=extmap:99999 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3/sendrecv http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:x http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time extra",
    "a=rtpmap:111",
    "a=rtpmap:abc opus/48000/2",
    "a=fmtp:",
    "a=ssrc:",
    "c=IN IP4",
    "c=IN IP6 ::1/64/3",
    "b=AS:",
    "b=AS:99999999999999999999",
    "t=1 x",
    "r=7d 1h 0 25h",
    "z=",
    "k=prompt",
    "o=",
    "v=1",
    "i=é€😀",
    "x=unknown",
    "=",
    "",
];

const SDP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"=",
    b":",
    b"/",
    b"-1",
    b"0",
    b"65536",
    b"18446744073709551616",
    b"audio",
    b"video",
    b"application",
    "é😀".as_bytes(),
];

fn sdp_input(rng: &mut Rng) -> Vec<u8> {
    let base = if rng.chance(70) {
        BROWSER_OFFER
    } else {
        MINIMAL_OFFER
    };
    if rng.chance(5) {
        return rng.bytes(200);
    }
    let mut lines: Vec<String> = base.split("\r\n").map(str::to_owned).collect();
    let n = 1 + rng.usize(4);
    for _ in 0..n {
        let len = lines.len();
        match rng.below(8) {
            0 if len > 1 => {
                lines.remove(rng.usize(len));
            }
            1 if len > 0 => {
                let l = lines[rng.usize(len)].clone();
                lines.insert(rng.usize(len + 1), l);
            }
            2 if len > 1 => {
                let (a, b) = (rng.usize(len), rng.usize(len));
                lines.swap(a, b);
            }
            3 => {
                let l = rng.pick(SDP_LINES).to_string();
                lines.insert(rng.usize(len + 1), l);
            }
            4 if len > 0 => {
                // Replace a number in a line by another.
                let i = rng.usize(len);
                let num = rng
                    .pick(&["0", "9", "65535", "65536", "4294967296", "-1", "", "1e3"])
                    .to_string();
                let mut out = String::new();
                let mut replaced = false;
                let mut chars = lines[i].chars().peekable();
                while let Some(c) = chars.next() {
                    if c.is_ascii_digit() && !replaced && rng.chance(50) {
                        while chars.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        }
                        out.push_str(&num);
                        replaced = true;
                    } else {
                        out.push(c);
                    }
                }
                lines[i] = out;
            }
            5 if len > 0 => {
                let i = rng.usize(len);
                let kind = rng.pick(&["audio", "video", "application", "message", ""]);
                lines[i] = lines[i]
                    .replacen("audio", kind, 1)
                    .replacen("video", kind, 1);
            }
            _ => {}
        }
    }
    let sep = if rng.chance(10) { "\n" } else { "\r\n" };
    let mut text = lines.join(sep).into_bytes();
    if rng.chance(40) {
        mutate_bytes(rng, &mut text, SDP_TOKENS);
    }
    text
}

fn check_sdp(body: &[u8]) {
    let as_sdp = fuzz_api::parse_offer(Some("application/sdp"), body);
    if let Ok(text) = std::str::from_utf8(body) {
        let json = serde_json::json!({"type": "offer", "sdp": text}).to_string();
        let as_json =
            fuzz_api::parse_offer(Some("application/json; charset=utf-8"), json.as_bytes());
        assert_eq!(as_sdp, as_json, "SDP and JSON bodies disagree");
        let sections = fuzz_api::media_sections(text);
        if let Ok((live, audio, _)) = sections {
            assert!(!live || audio, "live audio without audio");
        }
        if as_sdp.is_ok() {
            let (_, audio, _) = sections.expect("an accepted offer parses");
            assert!(audio, "an offer without audio accepted");
        }
        if fuzz_api::abs_send_time_id(text).is_some() {
            assert!(
                text.contains("abs-send-time"),
                "an abs-send-time id out of nowhere"
            );
        }
    } else {
        assert_eq!(as_sdp, Err((400, "invalid_sdp")), "non-UTF-8 SDP");
    }
    if let Err((status, code)) = as_sdp {
        assert!((400..500).contains(&status), "{status} {code}");
    }
}

#[test]
fn fuzz_sdp_offer() {
    // The unmutated offers pass.
    assert_eq!(
        fuzz_api::parse_offer(Some("application/sdp"), BROWSER_OFFER.as_bytes()),
        Ok(())
    );
    assert_eq!(
        fuzz_api::media_sections(BROWSER_OFFER),
        Ok((true, true, true))
    );
    assert_eq!(fuzz_api::abs_send_time_id(BROWSER_OFFER), Some(2));
    assert_eq!(
        fuzz_api::parse_offer(Some("application/sdp"), MINIMAL_OFFER.as_bytes()),
        Ok(())
    );
    run(
        "sdp_offer",
        |rng| Input(sdp_input(rng)),
        |input| check_sdp(&input.0),
    );
}

// ---------------------------------------------------------------------------------------------
// RTP and Opus payloads.

/// Real Opus packets: 20 ms frames of a tone at a few bitrates, with FEC and without.
fn opus_packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (bitrate, fec) in [(12_000, true), (32_000, true), (64_000, false)] {
        let mut enc = OpusEncoder::new(EncoderSettings {
            bitrate,
            complexity: 5,
            fec,
            expected_loss_percent: 20,
        })
        .expect("encoder");
        for i in 0..6 {
            let frame: Vec<f32> = (0..FRAME_SAMPLES)
                .map(|n| {
                    let t = (i * FRAME_SAMPLES + n) as f32 / 48_000.0;
                    0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                })
                .collect();
            out.push(enc.encode(&frame).expect("encode").to_vec());
        }
    }
    out
}

#[derive(Debug)]
struct RtpCase {
    packet: Input,
    ext_id: Option<u8>,
    /// Where the packet's payload starts when the harness built it (for a cross-check).
    built_payload: Option<Vec<u8>>,
}

fn rtp_case(rng: &mut Rng, opus: &[Vec<u8>]) -> RtpCase {
    let ext_id = if rng.chance(20) {
        None
    } else {
        Some(rng.below(16) as u8)
    };
    if rng.chance(20) {
        return RtpCase {
            packet: Input(rng.bytes(120)),
            ext_id,
            built_payload: None,
        };
    }
    let mut payload = rng.pick(opus).clone();
    if rng.chance(50) {
        mutate_bytes(rng, &mut payload, &[&[0x03, 0x00], &[0xff; 4], &[0x00]]);
    }
    if rng.chance(10) {
        // Any TOC byte, any code.
        if let Some(b) = payload.first_mut() {
            *b = rng.byte();
        }
    }
    let csrc = rng.below(16) as usize;
    let has_ext = rng.chance(70);
    let padding = rng.chance(10);
    let mut padding_or_lie = padding;
    let mut p = vec![
        0x80 | (u8::from(padding) << 5) | (u8::from(has_ext) << 4) | csrc as u8,
        (u8::from(rng.chance(50)) << 7) | 111,
    ];
    p.extend_from_slice(&(rng.next_u64() as u16).to_be_bytes());
    p.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    p.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    for _ in 0..csrc {
        p.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    }
    if has_ext {
        let two_byte = rng.chance(30);
        let mut body = Vec::new();
        for _ in 0..rng.usize(4) {
            // Ids 1..=14: 0 is a padding byte and 15 stops parsing in the one-byte form
            // (rtc-rtp 0.21 then takes the rest of the block as payload, ignoring its length).
            let id = match ext_id {
                Some(id @ 1..=14) if rng.chance(50) => id,
                _ => 1 + rng.below(14) as u8,
            };
            let len = 1 + rng.usize(4);
            if two_byte {
                body.push(id);
                body.push(len as u8);
            } else {
                body.push(id << 4 | (len as u8 - 1));
            }
            for _ in 0..len {
                body.push(rng.byte());
            }
        }
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let profile: u16 = if two_byte { 0x1000 } else { 0xBEDE };
        let words = if rng.chance(5) {
            // A length that lies: the payload is then wherever the parser says.
            padding_or_lie = true;
            rng.next_u64() as u16
        } else {
            (body.len() / 4) as u16
        };
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&words.to_be_bytes());
        p.extend_from_slice(&body);
    }
    p.extend_from_slice(&payload);
    if padding {
        let n = rng.below(8) as u8;
        p.extend(std::iter::repeat_n(0, n.saturating_sub(1) as usize));
        p.push(if rng.chance(80) { n } else { rng.byte() });
    }
    let built = (!padding_or_lie).then(|| payload.clone());
    if rng.chance(10) {
        mutate_bytes(rng, &mut p, &[]);
        return RtpCase {
            packet: Input(p),
            ext_id,
            built_payload: None,
        };
    }
    RtpCase {
        packet: Input(p),
        ext_id,
        built_payload: built,
    }
}

fn check_decoded(samples: &[f32]) {
    assert!(
        samples.len() <= 5760,
        "{} samples from one packet",
        samples.len()
    );
    assert!(samples.iter().all(|s| s.is_finite()), "non-finite sample");
}

fn check_rtp(case: &RtpCase) {
    let mut buf = &case.packet.0[..];
    let Ok(p) = rtc::rtp::Packet::unmarshal(&mut buf) else {
        // Not RTP: the payload path must still survive the bytes themselves.
        check_payload(&case.packet.0);
        return;
    };
    if let Some(want) = &case.built_payload {
        assert_eq!(&p.payload[..], &want[..], "payload not where it was put");
    }
    if let Some(t) = fuzz_api::send_time(&p, case.ext_id) {
        assert!(t < 1 << 24, "abs-send-time {t:#x} wider than 24 bits");
    }
    check_payload(&p.payload);
}

fn check_payload(payload: &[u8]) {
    let _ = fuzz_api::packet_has_fec(payload);
    // The same bytes as a RED payload: blocks and primary lie inside it, in order.
    if let Ok(red) = vr_transport::red::parse(payload) {
        let blocks: usize = red.redundant.iter().map(|b| b.payload.len()).sum();
        let headers = 4 * red.redundant.len() + 1;
        assert_eq!(headers + blocks + red.primary.len(), payload.len());
        for b in &red.redundant {
            let _ = vr_transport::red::packets_back(b);
        }
    }
    let mut dec = OpusDecoder::new().expect("decoder");
    if let Ok(s) = dec.decode(payload) {
        check_decoded(s);
    }
    // As the follower of a lost packet (FEC, else PLC): never fails for a sane decoder state.
    let (s, _) = dec.conceal(Some(payload)).expect("conceal with a follower");
    check_decoded(s);
    let (s, _) = dec.conceal(None).expect("plain PLC");
    check_decoded(s);
}

#[test]
fn fuzz_rtp_opus_payload() {
    let opus = opus_packets();
    assert!(
        opus.iter().any(|p| fuzz_api::packet_has_fec(p)),
        "no FEC packet to mutate"
    );
    run("rtp_opus_payload", |rng| rtp_case(rng, &opus), check_rtp);
}

// ---------------------------------------------------------------------------------------------
// The `[transport]` config section.

fn transport_section() -> String {
    let text = include_str!("../../configs/default.toml");
    let start = text
        .find("[transport]")
        .expect("[transport] in default.toml");
    text[start..].to_owned()
}

const TOML_VALUES: &[&str] = &[
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "18446744073709551616",
    "9223372036854775807",
    "\"\"",
    "\"0.0.0.0:0\"",
    "\"[::1]:99999\"",
    "[]",
    "[\"stun:\"]",
    "[{ urls = [\"turn:x\"], secret = \"s\" }]",
    "[{ urls = [] }]",
    "true",
    "{}",
    "0.0",
    "1000000",
    "\"é😀\"",
];

fn check_config(text: &str) {
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        let v = t.get("transport").cloned().unwrap_or(toml::Value::Table(t));
        if let Ok(c) = v.try_into::<vr_transport::TransportConfig>() {
            let _ = c.validate();
            let _ = c.check_exposure(false);
            let _ = c.ice_servers_at(1_700_000_000);
            let _ = c.redacted();
        }
    }
}

#[test]
fn fuzz_transport_config_toml() {
    let base = transport_section();
    check_config(&base);
    run(
        "transport_config_toml",
        |rng| {
            let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
            for _ in 0..1 + rng.usize(4) {
                let len = lines.len();
                let i = rng.usize(len);
                match rng.below(4) {
                    0 => {
                        if let Some((k, _)) = lines[i].split_once(" = ") {
                            lines[i] = format!("{k} = {}", rng.pick(TOML_VALUES));
                        }
                    }
                    1 => {
                        lines.remove(i);
                    }
                    2 => {
                        let l = lines[i].clone();
                        lines.insert(rng.usize(len), l);
                    }
                    _ => {}
                }
            }
            let mut text = lines.join("\n").into_bytes();
            if rng.chance(20) {
                mutate_bytes(rng, &mut text, &[b"=", b"[", b"]", b"\"", b"\n", b"#"]);
            }
            Input(text)
        },
        |input| check_config(&String::from_utf8_lossy(&input.0)),
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: crashes found, each with its input.

/// Found reading the jitter buffer for this harness (the random sequences are too short to
/// reach it): every restart used to move the extended numbering down by up to 32768 from its
/// start at 2^32, so ~143 000 restart pairs (a far jump back and its successor; 286 000 packets,
/// seconds for a peer sending as fast as it can) walked it below zero and
/// `ext + RESTART_DISTANCE` overflowed: a panic in the media-in task in debug builds, garbage
/// ordering in release. Restarts now re-anchor the numbering.
#[test]
fn regression_restart_storm_does_not_overflow_the_extended_numbering() {
    let mut ops = vec![JbOp::Push(40_000)];
    let mut seq: u16 = 40_000;
    for _ in 0..150_000 {
        seq = seq.wrapping_sub(30_000);
        ops.push(JbOp::Push(seq));
        seq = seq.wrapping_add(1);
        ops.push(JbOp::Push(seq));
    }
    check_jitter(60, &ops);
}
