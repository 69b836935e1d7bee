//! The GStreamer encoders and decoders (VP8: vp8enc/vp8dec; H.264: x264enc/avdec_h264) on real
//! pictures: a moving gradient scene is encoded, decoded into a latest-frame ring and compared
//! with what went in (PSNR); the encoder's bitrate follows `set_bitrate`; a forced key frame
//! comes out as one; garbage does not stop the decoder. Every test runs for both codecs. A
//! missing plugin fails the test with the Debian package to install (scripts/bootstrap
//! installs them all).

use std::time::{Duration, Instant};
use voicerelay_capture::video::{video_ring, PixelFormat, VideoConsumer, VideoProducer};
use voicerelay_capture::video_codec::{Codec, Decoder, Encoder, Pushed};

const W: u32 = 320;
const H: u32 = 240;
const FPS: u32 = 30;

/// A smooth scene that moves a little each frame (natural enough for the encoder to do its job).
fn picture(n: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity((W * H * 4) as usize);
    for y in 0..H {
        for x in 0..W {
            let dx = x as f32 - (W / 2) as f32 - n as f32;
            let dy = y as f32 - (H / 2) as f32;
            let r = ((dx * dx + dy * dy).sqrt() * 2.0) as u32;
            p.extend_from_slice(&[
                (x * 255 / W) as u8,
                (y * 255 / H) as u8,
                (r.min(255)) as u8,
                0,
            ]);
        }
    }
    p
}

/// Detail everywhere, changing every frame: more than 2 Mbit/s can carry (so the bitrate is set by
/// the target, not by the content).
fn textured(n: u32) -> Vec<u8> {
    let mut p = picture(n);
    let mut h = 0x9E37_79B9u32.wrapping_mul(n + 1);
    for b in p.iter_mut() {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        *b = b.wrapping_add((h & 0x3F) as u8);
    }
    p
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let (mut se, mut n) = (0f64, 0f64);
    for (pa, pb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for c in 0..3 {
            let d = f64::from(pa[c]) - f64::from(pb[c]);
            se += d * d;
            n += 1.0;
        }
    }
    10.0 * (255.0f64 * 255.0 / (se / n).max(1e-9)).log10()
}

fn encoder(codec: Codec, bitrate_bps: u32) -> Encoder {
    Encoder::start(codec, W, H, FPS, bitrate_bps)
        .unwrap_or_else(|e| panic!("{codec:?} encoder: {e} (run scripts/bootstrap)"))
}

fn decoder(codec: Codec, tx: VideoProducer) -> Decoder {
    Decoder::start(codec, tx)
        .unwrap_or_else(|e| panic!("{codec:?} decoder: {e} (run scripts/bootstrap)"))
}

/// Waits until the ring has published `n` frames and returns the latest one's pixels.
fn wait_frames(rx: &mut VideoConsumer, n: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.stats().published < n {
        assert!(
            Instant::now() < deadline,
            "decoder published {} of {n} frames",
            rx.stats().published
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = rx.latest().expect("a frame");
    assert_eq!((f.width, f.height, f.format), (W, H, PixelFormat::Rgbx));
    f.data.clone()
}

/// The NAL unit types of an Annex-B access unit, in order.
fn nal_types(au: &[u8]) -> Vec<(u8, &[u8])> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .filter_map(|&s| au.get(s).map(|h| (h & 0x1F, &au[s..])))
        .collect()
}

/// What the transport's sender side relies on: a byte stream starting with a start code, and
/// every IDR preceded by its SPS (Constrained Baseline: profile_idc 66, constraint_set1) and PPS.
fn check_access_unit(au: &[u8], key: bool) {
    assert!(au.starts_with(&[0, 0, 0, 1]), "not Annex-B: {:?}", &au[..8]);
    let nals = nal_types(au);
    let types: Vec<u8> = nals.iter().map(|n| n.0).collect();
    assert_eq!(types.contains(&5), key, "IDR iff key frame: {types:?}");
    if key {
        let sps = nals
            .iter()
            .find(|n| n.0 == 7)
            .expect("SPS before the IDR")
            .1;
        assert_eq!(sps[1], 66, "profile_idc: Baseline");
        assert!(sps[2] & 0x40 != 0, "constraint_set1: Constrained Baseline");
        assert!(types.contains(&8), "PPS before the IDR: {types:?}");
    }
}

fn encoded_pictures_decode_into_the_ring_close_to_the_source(codec: Codec) {
    let mut enc = encoder(codec, 1_000_000);
    let (tx, mut rx) = video_ring(PixelFormat::Rgbx.frame_bytes(W, H));
    let mut dec = decoder(codec, tx);
    let mut sent = 0u64;
    let mut keys = Vec::new();
    for n in 0..30 {
        let e = enc
            .encode(&picture(n), false)
            .expect("encode")
            .expect("a frame");
        keys.push(e.key_frame);
        if codec == Codec::H264 {
            check_access_unit(&e.data, e.key_frame);
        }
        assert_eq!(dec.push(&e.data, e.pts).expect("push"), Pushed::Queued);
        sent += 1;
        // Pace like a camera would, so the bounded queue is not what is tested here.
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(keys[0], "the first frame is a key frame");
    assert!(
        keys[1..].iter().filter(|k| **k).count() == 0,
        "no key frame within 30 frames"
    );
    let last = wait_frames(&mut rx, sent);
    let q = psnr(&last, &picture(29));
    eprintln!("{codec:?}: PSNR of the last decoded frame {q:.1} dB");
    assert!(
        q > 30.0,
        "{codec:?}: PSNR of the last decoded frame {q:.1} dB"
    );
    // A different picture is far off: the comparison can fail.
    assert!(psnr(&last, &picture(0)) < q - 3.0);
}

fn the_bitrate_follows_the_target_and_a_key_frame_can_be_forced(codec: Codec) {
    let mut enc = encoder(codec, 2_000_000);
    let size = |enc: &mut Encoder, from: u32| -> usize {
        (from..from + 30)
            .filter_map(|n| enc.encode(&textured(n), false).expect("encode"))
            .map(|e| e.data.len())
            .sum()
    };
    let high = size(&mut enc, 0);
    enc.set_bitrate(200_000);
    assert_eq!(enc.bitrate(), 200_000);
    let _settle = size(&mut enc, 30);
    let low = size(&mut enc, 60);
    eprintln!("{codec:?}: 30 frames at 200 kbit/s: {low} bytes, at 2 Mbit/s: {high}");
    assert!(
        (low as f64) < 0.5 * high as f64,
        "{codec:?}: 30 frames at 200 kbit/s: {low} bytes, at 2 Mbit/s: {high}"
    );
    let forced = enc
        .encode(&picture(100), true)
        .expect("encode")
        .expect("a frame");
    assert!(forced.key_frame);
    if codec == Codec::H264 {
        check_access_unit(&forced.data, true);
    }
    let next = enc
        .encode(&picture(101), false)
        .expect("encode")
        .expect("a frame");
    assert!(!next.key_frame);
}

fn garbage_is_survived_and_the_next_key_frame_decodes(codec: Codec) {
    let (tx, mut rx) = video_ring(PixelFormat::Rgbx.frame_bytes(W, H));
    let mut dec = decoder(codec, tx);
    for i in 0..3u8 {
        let mut junk: Vec<u8> = (0..500u32)
            .map(|b| (b as u8).wrapping_mul(31) ^ i)
            .collect();
        if codec == Codec::H264 {
            // Behind a start code and an IDR NAL header, so the decoder really tries it.
            junk.splice(0..0, [0, 0, 0, 1, 0x65]);
        }
        dec.push(&junk, Duration::from_millis(u64::from(i) * 33))
            .expect("a refused frame is not an error");
    }
    let mut enc = encoder(codec, 1_000_000);
    let e = enc
        .encode(&picture(0), true)
        .expect("encode")
        .expect("a frame");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The decoder may restart on the garbage; a key frame gets through either way.
    loop {
        dec.push(&e.data, Duration::from_millis(200)).expect("push");
        if rx.stats().published > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = wait_frames(&mut rx, 1);
    let q = psnr(&last, &picture(0));
    assert!(q > 30.0, "{codec:?}: {q:.1} dB");
}

fn a_wrong_sized_picture_is_an_error(codec: Codec) {
    let mut enc = encoder(codec, 500_000);
    assert!(enc.encode(&[0u8; 100], false).is_err());
    assert!(Encoder::start(codec, 0, H, FPS, 500_000).is_err());
}

/// Every test above, once per codec.
macro_rules! per_codec {
    ($($name:ident),* $(,)?) => {
        mod vp8 {
            $( #[test] fn $name() { super::$name(super::Codec::Vp8) } )*
        }
        mod h264 {
            $( #[test] fn $name() { super::$name(super::Codec::H264) } )*
        }
    };
}

per_codec!(
    encoded_pictures_decode_into_the_ring_close_to_the_source,
    the_bitrate_follows_the_target_and_a_key_frame_can_be_forced,
    garbage_is_survived_and_the_next_key_frame_decodes,
    a_wrong_sized_picture_is_an_error,
);
