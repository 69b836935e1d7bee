//! Real VP8 and H.264 from a webrtc-rs client into the session's latest-frame ring, over
//! loopback UDP: the client encodes a moving scene with GStreamer's vp8enc or x264enc (real-time
//! settings; H.264 Constrained Baseline, SPS/PPS before every IDR), packetises it with
//! webrtc-rs's payloader for the codec (H.264: STAP-A for the parameter sets, FU-A for large NAL
//! units, RFC 6184 mode 1) and sends it with abs-send-time; the session's pipeline gives it
//! GStreamer's vp8dec or avdec_h264. Every picture the ring shows is compared with the one that
//! was encoded at its timestamp (PSNR), so a corrupted or misplaced picture fails the test.
//!
//! With one packet lost mid-stream the server must not wait for a retransmission, must not pass
//! the broken reference chain to the decoder (no corrupted picture reaches the ring), must send
//! a PLI, and must decode again from the key frame the sender answers it with — well before the
//! encoder's own periodic key frame (4 s, longer than the stream).
//!
//! Every test runs once per codec (`vp8::…`, `h264::…`).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::extension::abs_send_time_extension::AbsSendTimeExtension;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::oneshot;
use voicerelay_transport as vr_transport;
use vr_capture::video::{PixelFormat, VideoConsumer, VideoProducer};
use vr_capture::video_codec::{Codec, Decoder, Encoder, Pushed};
use vr_transport::config::VideoConfig;
use vr_transport::frame::{EncodedFrame, VideoCodec};
use vr_transport::pipeline::{Pipeline, PipelineControl, PipelineRun, SessionIo, VideoDecoder};
use vr_transport::TransportError;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

const W: u32 = 320;
const H: u32 = 240;
const FPS: u64 = 30;
const FRAMES: u64 = 90;
const MTU: usize = 1_000;
/// Decoded pictures measure 29–34 dB (VP8) and 31–37 dB (H.264) against their source at
/// 800 kbit/s; the scene moves enough that the neighbouring frame is at about 22.6 dB.
const MIN_PSNR_DB: f64 = 26.0;

/// The client's offer of a codec and its payload type.
fn offer(codec: Codec) -> (RTCRtpCodec, u8) {
    match codec {
        Codec::Vp8 => (vp8_codec(), 96),
        // What browsers offer (Constrained Baseline 3.1, mode 1), which the session accepts.
        Codec::H264 => (
            video_codec(
                MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            102,
        ),
        other => panic!("no offer for {other:?}"),
    }
}

fn payloader(codec: Codec) -> Box<dyn Payloader> {
    match codec {
        Codec::Vp8 => {
            let mut p = Vp8Payloader::default();
            p.enable_picture_id = true;
            Box::new(p)
        }
        Codec::H264 => Box::new(H264Payloader::default()),
        other => panic!("no payloader for {other:?}"),
    }
}

fn session_codec(codec: Codec) -> VideoCodec {
    match codec {
        Codec::Vp8 => VideoCodec::Vp8,
        Codec::H264 => VideoCodec::H264,
        other => panic!("no session codec for {other:?}"),
    }
}

fn picture(n: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity((W * H * 4) as usize);
    for y in 0..H {
        for x in 0..W {
            let cx = x as f32 - 80.0 - 2.0 * n as f32;
            let cy = y as f32 - 120.0;
            let ring = (((cx * cx + cy * cy).sqrt() / 6.0).sin() * 120.0 + 128.0) as u8;
            p.extend_from_slice(&[
                ring,
                (y * 255 / H) as u8,
                ((x + 3 * n as u32) % 256) as u8,
                0,
            ]);
        }
    }
    p
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mut se = 0f64;
    for (pa, pb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for c in 0..3 {
            let d = f64::from(pa[c]) - f64::from(pb[c]);
            se += d * d;
        }
    }
    let mse = se / (a.len() / 4 * 3) as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

// ---------------------------------------------------------------------------------------------
// A pipeline that decodes with GStreamer and hands the session's frames to the test.

struct GstDecoder(Decoder);

impl VideoDecoder for GstDecoder {
    fn push(&mut self, frame: &EncodedFrame, pts: Duration) -> Result<bool, String> {
        match self.0.push(&frame.data, pts) {
            Ok(Pushed::Queued) => Ok(true),
            Ok(other) => {
                // Says whether a refusal was a decoder behind (load) or one that failed.
                eprintln!("decoder refused the frame at {pts:?}: {other:?}");
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

struct Control(Mutex<Option<oneshot::Sender<Result<(), String>>>>);

impl PipelineControl for Control {
    fn interrupt(&self) {}
    fn send_text(&self, _text: String) {}
    fn configure(&self, _: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        Ok(())
    }
    fn stop(&self) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(Ok(()));
        }
    }
}

#[derive(Default)]
struct Decoding {
    frames: Arc<Mutex<Option<VideoConsumer>>>,
    /// The codecs the session asked decoders for.
    asked: Mutex<Vec<VideoCodec>>,
}

impl Pipeline for Decoding {
    fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
        *self.frames.lock().unwrap() = io.video;
        let (tx, rx) = oneshot::channel();
        Ok(PipelineRun {
            control: Arc::new(Control(Mutex::new(Some(tx)))),
            done: rx,
        })
    }

    fn video_decoder(
        &self,
        codec: VideoCodec,
        frames: VideoProducer,
    ) -> Result<Option<Box<dyn VideoDecoder>>, String> {
        self.asked.lock().unwrap().push(codec);
        let c = match codec {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
            other => return Err(format!("no decoder for {other}")),
        };
        // A missing plugin fails the test with the package to install: nothing would decode.
        let d = Decoder::start(c, frames)
            .unwrap_or_else(|e| panic!("{codec} decoder: {e} (run scripts/bootstrap)"));
        Ok(Some(Box::new(GstDecoder(d))))
    }
}

// ---------------------------------------------------------------------------------------------

struct Sent {
    plis: u64,
    /// Frame indices at which a PLI was answered with a key frame.
    keys_after_pli: Vec<u64>,
}

/// Encodes and sends `FRAMES` frames at 30 fps; `lose`: the frame one of whose packets is never
/// sent. A PLI makes the next frame a key frame.
async fn send(client: &Client, codec: Codec, lose: Option<u64>) -> Sent {
    let track = client.video.clone().expect("a video track");
    let pt = client.video_pt;
    let pli = Arc::new(AtomicBool::new(false));
    let plis = Arc::new(AtomicU64::new(0));
    let reader = {
        let (track, pli, plis) = (track.clone(), pli.clone(), plis.clone());
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = ev {
                    if packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>())
                    {
                        plis.fetch_add(1, Ordering::Relaxed);
                        pli.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let mut enc = Encoder::start(codec, W, H, FPS as u32, 800_000)
        .unwrap_or_else(|e| panic!("{codec:?} encoder: {e} (run scripts/bootstrap)"));
    let mut payloader = payloader(codec);
    let epoch = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut seq: u16 = rand::random();
    let mut keys_after_pli = Vec::new();
    for n in 0..FRAMES {
        tokio::time::sleep_until(t0 + Duration::from_micros(n * 1_000_000 / FPS)).await;
        let asked = pli.swap(false, Ordering::Relaxed);
        let Some(frame) = enc.encode(&picture(n), asked).expect("encode") else {
            continue;
        };
        if asked && frame.key_frame {
            keys_after_pli.push(n);
        }
        let payloads = payloader
            .payload(MTU, &Bytes::from(frame.data))
            .expect("payload");
        let last = payloads.len() - 1;
        for (i, payload) in payloads.into_iter().enumerate() {
            let s = seq;
            seq = seq.wrapping_add(1);
            if lose == Some(n) && i == last.min(1) {
                continue;
            }
            let sent = vr_abr::AbsSendTime::from_micros(vr_abr::Micros(
                epoch.elapsed().as_micros() as u64,
            ));
            let pkt = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: s,
                    timestamp: (n * 90_000 / FPS) as u32,
                    marker: i == last,
                    ssrc: VIDEO_SSRC,
                    ..Default::default()
                },
                payload,
            };
            track
                .write_rtp_with_extensions(
                    pkt,
                    &[HeaderExtension::AbsSendTime(AbsSendTimeExtension {
                        timestamp: u64::from(sent.raw()),
                    })],
                )
                .await
                .expect("write video rtp");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    Sent {
        plis: plis.load(Ordering::Relaxed),
        keys_after_pli,
    }
}

/// Connects, sends, and returns what was sent and what the ring showed.
async fn run(codec: Codec, lose: Option<u64>) -> (Sent, Vec<(u64, f64, f64)>, u64) {
    let pipeline = Arc::new(Decoding::default());
    let srv = start_server_with(VideoConfig::default(), pipeline.clone()).await;
    let (offered, pt) = offer(codec);
    let mut client = Client::with_codec(true, true, offered, pt).await;
    client.connect(srv.url_port).await;
    let rx = pipeline
        .frames
        .lock()
        .unwrap()
        .take()
        .expect("the session got a video ring");
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let published = published.clone();
        let mut rx = rx;
        // The watcher owns the consumer; its published count is read at the end.
        std::thread::spawn(move || {
            let seen = watch_ring(&mut rx, &stop);
            published.store(rx.stats().published, Ordering::Relaxed);
            seen
        })
    };
    let sent = send(&client, codec, lose).await;
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    let _ = client.pc.close().await;
    assert_eq!(
        *pipeline.asked.lock().unwrap(),
        vec![session_codec(codec)],
        "the session asked for a decoder of the track's codec"
    );
    (sent, seen, published.load(Ordering::Relaxed))
}

/// What the ring showed: for each new picture, the frame index its timestamp names, its PSNR
/// against the picture encoded at that index, and against the next one (which must be worse).
fn watch_ring(rx: &mut VideoConsumer, stop: &AtomicBool) -> Vec<(u64, f64, f64)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = rx.latest() {
            assert_eq!((f.width, f.height, f.format), (W, H, PixelFormat::Rgbx));
            let idx = (f.pts.as_secs_f64() * FPS as f64).round() as u64;
            seen.push((
                idx,
                psnr(&f.data, &picture(idx)),
                psnr(&f.data, &picture(idx + 1)),
            ));
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    seen
}

async fn every_picture_in_the_ring_is_the_one_sent_at_its_timestamp(codec: Codec) {
    let decoded0 = counter("transport_video_frames_decoded_total");
    let refused0 = counter("transport_video_frames_refused_total");
    let (sent, seen, published) = run(codec, None).await;
    eprintln!(
        "{codec:?}: refused {}",
        counter("transport_video_frames_refused_total") - refused0
    );
    let (lo, hi) = seen.iter().fold((f64::MAX, f64::MIN), |(lo, hi), s| {
        (lo.min(s.1), hi.max(s.1))
    });
    let next_hi = seen.iter().map(|s| s.2).fold(f64::MIN, f64::max);
    eprintln!(
        "{codec:?}: published {published}, seen {}, PSNR {lo:.1}–{hi:.1} dB (next picture ≤ \
         {next_hi:.1} dB): {:?}",
        seen.len(),
        &seen[..seen.len().min(8)]
    );
    assert_eq!(sent.plis, 0, "a clean stream needs no PLI");
    assert!(
        published >= FRAMES * 9 / 10,
        "{published} of {FRAMES} frames decoded"
    );
    assert!(seen.len() >= 20, "the watcher saw {} pictures", seen.len());
    for (idx, q, next) in &seen {
        assert!(
            *q > MIN_PSNR_DB,
            "picture {idx}: PSNR {q:.1} dB against the one sent"
        );
        assert!(
            *next < q - 3.0,
            "picture {idx} is as close to the next one ({next:.1} dB)"
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "timestamps go forward"
    );
    assert!(seen.last().is_some_and(|(i, _, _)| *i >= FRAMES - 5));
    assert!(counter("transport_video_frames_decoded_total") - decoded0 >= FRAMES * 9 / 10);
}

async fn a_lost_packet_is_not_waited_for_no_broken_picture_shows_and_a_pli_restores_decoding(
    codec: Codec,
) {
    let lose = 30;
    let pli0 = counter("transport_video_pli_sent_total");
    let refused0 = counter("transport_video_frames_refused_total");
    let dropped0 = counter("transport_video_frames_dropped_total");
    let (sent, seen, published) = run(codec, Some(lose)).await;
    eprintln!(
        "{codec:?}: published {published}, PLIs {}, key frames after PLI at {:?}, refused {}, \
         dropped {}, seen {:?}",
        sent.plis,
        sent.keys_after_pli,
        counter("transport_video_frames_refused_total") - refused0,
        counter("transport_video_frames_dropped_total") - dropped0,
        seen.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(sent.plis >= 1, "no PLI reached the sender");
    let key = sent
        .keys_after_pli
        .iter()
        .copied()
        .find(|k| *k > lose)
        .expect("the sender answered the PLI after the loss with a key frame");
    // The PLI goes out when the next frame completes (about one frame interval), not after a
    // retransmission timeout.
    assert!(key <= lose + 10, "key frame only at frame {key}");
    for (idx, q, _) in &seen {
        assert!(
            *q > MIN_PSNR_DB,
            "picture {idx}: PSNR {q:.1} dB (a broken reference reached the ring?)"
        );
        assert!(
            *idx < lose || *idx >= key,
            "picture {idx} decoded between the loss ({lose}) and the key frame ({key})"
        );
    }
    assert!(
        seen.iter().any(|(i, _, _)| *i >= key + 20),
        "decoding did not resume after the key frame"
    );
    assert!(
        published < FRAMES,
        "frames after the loss were dropped, not decoded"
    );
    assert!(counter("transport_video_pli_sent_total") > pli0);
}

/// Every test above, once per codec.
macro_rules! per_codec {
    ($($name:ident),* $(,)?) => {
        mod vp8 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Codec::Vp8).await
                }
            )*
        }
        mod h264 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Codec::H264).await
                }
            )*
        }
    };
}

per_codec!(
    every_picture_in_the_ring_is_the_one_sent_at_its_timestamp,
    a_lost_packet_is_not_waited_for_no_broken_picture_shows_and_a_pli_restores_decoding,
);
