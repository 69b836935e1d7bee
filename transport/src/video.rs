//! Incoming video: one task per remote video track reads its RTP packets, feeds the receiver-side
//! bitrate estimator ([`vr_abr::ReceiverEstimator`]) and sends the resulting REMB back to the
//! sender.
//!
//! What is real: packet accounting, the GCC-style delay + loss estimate, the optional ReCapABR
//! cap (`min(estimate, cap)`, [`vr_abr::RecapTable`]), REMB on the wire, the `transport_video_*`
//! metrics and decoding of VP8 and H.264: the track's mime type picks the assembler
//! ([`Vp8Assembler`], or [`H264Assembler`] for RFC 6184 packetization-mode 1), which rebuilds
//! frames without ever waiting for a retransmission; the pipeline's [`VideoDecoder`] for that
//! codec (GStreamer in the binary) decodes them into the session's latest-frame ring, and a PLI
//! goes out (at most every [`PLI_INTERVAL`]) only while no usable reference exists — after a
//! loss, or when the decoder refused a frame. Other codecs are received and estimated, not
//! decoded. The project ships no measured ReCap table yet (without
//! one the REMB is the congestion estimate alone, and the task logs that the cap is unmeasured).
//!
//! # The task's loop
//! Per packet it does a header-extension lookup, a handful of integer operations in the
//! estimator and, about once a second, one RTCP write: no allocation beyond what the peer
//! connection already made for the packet, no decode, no lock. Metrics are published as deltas
//! every 500 ms, not per packet. A 100 ms tick polls the estimator when packets stop (so a REMB
//! still goes out on time while the sender is stalled).
//!
//! # Time
//! `vr_abr` is sans-IO: this task is the only place its time comes from. Arrival times are a
//! monotonic clock ([`Instant`]) read when the packet is taken off the track, as [`Micros`] since
//! the task started. The send time is the packet's abs-send-time header extension (negotiated by
//! the session, [`ABS_SEND_TIME_URI`]). A packet without it falls back to its RTP timestamp at
//! 90 kHz as the send time: that is the frame's capture time, so every packet of a frame has the
//! same "send time" and the pacing between them is seen as network delay. The estimate is then
//! coarser (groups are frames, not 5 ms bursts) and a sender whose capture clock drifts from its
//! send clock shows up as a trend; the fallback is counted in
//! `transport_video_packets_without_abs_send_time_total` and logged once per track.
//!
//! # REMB
//! Sender SSRC: the session's own outgoing audio SSRC (a real local SSRC, as RFC 4585 asks for
//! feedback). Media SSRC: the SSRC of the video stream's packets (one per track; simulcast layers
//! beyond the first SSRC are not estimated separately). With transport-wide CC also negotiated
//! (the default interceptors answer it), a browser runs its own send-side estimator; libwebrtc
//! takes a received REMB as an upper limit on that estimate, which is what `min(estimate, cap)`
//! needs. Checked against Chromium 156 (`tests/webrtc_browser_camera.rs`, transport-cc and
//! goog-remb both in the answer): its `availableOutgoingBitrate` sits at the REMB (200 kbit/s with
//! the built-in cap) and its VP8 encoder's target and send rate settle near 144 kbit/s under
//! it, against ~1 Mbit/s and still rising without the cap.

use rtc::shared::marshal::MarshalSize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vr_abr::{AbsSendTime, Bitrate, Micros, RecapTable, ReceiverEstimator};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::config::VideoConfig;
use crate::frame::{AssemblyStats, EncodedFrame, VideoCodec};
use crate::h264::H264Assembler;
use crate::pipeline::VideoDecoder;
use crate::vp8::Vp8Assembler;
use crate::TransportError;

/// The abs-send-time RTP header extension (24-bit 6.18 fixed-point seconds of the sender's clock).
pub(crate) const ABS_SEND_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// RTP clock rate of every video codec in WebRTC.
const VIDEO_CLOCK_RATE: u64 = 90_000;

/// How often the estimator is polled without packets, and metrics published.
const POLL_TICK: Duration = Duration::from_millis(100);
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Everything a video task needs from its session.
#[derive(Clone)]
pub(crate) struct VideoParams {
    pub config: VideoConfig,
    /// The negotiated id of the abs-send-time extension (`None`: the peer did not accept it).
    pub abs_send_time_id: Option<u8>,
    /// A local SSRC of this peer connection (the outgoing audio), the REMB's sender SSRC.
    pub sender_ssrc: u32,
}

/// A session's decoded-video destination: the latest-frame ring and the pipeline that can make a
/// decoder for it.
pub(crate) struct VideoOut {
    pub frames: vr_audio::video::VideoProducer,
    pub decoders: Arc<dyn crate::pipeline::Pipeline>,
}

/// Shortest interval between two PLIs while waiting for a key frame (a key frame takes a round
/// trip and a large frame's worth of packets to arrive).
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// A track's frame assembler, by codec.
enum Assembler {
    Vp8(Vp8Assembler),
    H264(H264Assembler),
}

impl Assembler {
    fn new(codec: VideoCodec) -> Self {
        match codec {
            VideoCodec::Vp8 => Self::Vp8(Vp8Assembler::new()),
            VideoCodec::H264 => Self::H264(H264Assembler::new()),
        }
    }

    fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<EncodedFrame> {
        match self {
            Self::Vp8(a) => a.push(seq, ts, marker, payload),
            Self::H264(a) => a.push(seq, ts, marker, payload),
        }
    }

    fn stats(&self) -> AssemblyStats {
        match self {
            Self::Vp8(a) => a.stats(),
            Self::H264(a) => a.stats(),
        }
    }

    fn needs_key_frame(&self) -> bool {
        match self {
            Self::Vp8(a) => a.needs_key_frame(),
            Self::H264(a) => a.needs_key_frame(),
        }
    }

    fn reset_to_key_frame(&mut self) {
        match self {
            Self::Vp8(a) => a.reset_to_key_frame(),
            Self::H264(a) => a.reset_to_key_frame(),
        }
    }
}

/// The decoding side of one track: assembler, decoder, and when the last PLI went out.
struct Decoding {
    /// Made with the decoder, once the track's codec is known.
    assembler: Option<Assembler>,
    decoder: Option<Box<dyn VideoDecoder>>,
    /// Waiting for [`crate::pipeline::Pipeline::video_decoder`] (the track's codec is not known
    /// before a packet).
    pending: Option<VideoOut>,
    first_ts: Option<u32>,
    /// Unwrapped RTP timestamp of the newest frame (90 kHz ticks since the first).
    ts_base: u64,
    last_ts: u32,
    last_pli: Option<Instant>,
    pushed: u64,
    refused: u64,
    plis: u64,
}

impl Decoding {
    fn new(out: Option<VideoOut>) -> Self {
        Self {
            assembler: None,
            decoder: None,
            pending: out,
            first_ts: None,
            ts_base: 0,
            last_ts: 0,
            last_pli: None,
            pushed: 0,
            refused: 0,
            plis: 0,
        }
    }

    fn start(&mut self, codec: VideoCodec, decoder: Box<dyn VideoDecoder>) {
        self.assembler = Some(Assembler::new(codec));
        self.decoder = Some(decoder);
    }

    fn stats(&self) -> AssemblyStats {
        self.assembler
            .as_ref()
            .map(Assembler::stats)
            .unwrap_or_default()
    }

    /// Hands the packet to the assembler and any frames it completes to the decoder.
    fn on_packet(&mut self, p: &rtc::rtp::Packet) {
        let (Some(decoder), Some(assembler)) = (self.decoder.as_mut(), self.assembler.as_mut())
        else {
            return;
        };
        let frames = assembler.push(
            p.header.sequence_number,
            p.header.timestamp,
            p.header.marker,
            &p.payload,
        );
        for f in frames {
            let pts = {
                let first = *self.first_ts.get_or_insert(f.rtp_timestamp);
                if self.pushed == 0 && self.refused == 0 {
                    self.last_ts = first;
                }
                self.ts_base = self
                    .ts_base
                    .wrapping_add(u64::from(f.rtp_timestamp.wrapping_sub(self.last_ts)));
                self.last_ts = f.rtp_timestamp;
                Duration::from_micros(self.ts_base * 1_000_000 / VIDEO_CLOCK_RATE)
            };
            match decoder.push(&f, pts) {
                Ok(true) => self.pushed += 1,
                Ok(false) => {
                    self.refused += 1;
                    assembler.reset_to_key_frame();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "video decoder failed; video is no longer decoded");
                    self.decoder = None;
                    return;
                }
            }
        }
    }

    /// A PLI is due: decoding, no usable reference, and none asked for recently.
    fn pli_due(&mut self, now: Instant) -> bool {
        let due = self.decoder.is_some()
            && self
                .assembler
                .as_ref()
                .is_some_and(Assembler::needs_key_frame)
            && self
                .last_pli
                .is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL);
        if due {
            self.last_pli = Some(now);
            self.plis += 1;
        }
        due
    }
}

/// The ReCap decision state: the table, the class applied and the last advertised rate.
struct Cap {
    table: RecapTable,
    /// No content classifier yet: the table's first class is applied.
    class: Option<String>,
    current: Bitrate,
    min: Bitrate,
    max: Bitrate,
}

impl Cap {
    /// `min(estimate, cap)` clamped into `[min, max]`.
    fn target(&mut self, estimate: Bitrate) -> Bitrate {
        let target = match &self.class {
            Some(class) => {
                self.table
                    .decide(class, None, self.current, estimate)
                    .target
            }
            None => estimate,
        };
        let target = target.min(estimate).clamp_to(self.min, self.max);
        self.current = target;
        target
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    packets: u64,
    bytes: u64,
    no_abs_send_time: u64,
    remb_sent: u64,
    remb_failed: u64,
}

#[derive(Default)]
struct Published {
    counts: Counts,
    reordered: u64,
    lost: u64,
}

fn publish(p: &mut Published, c: &Counts, est: &ReceiverEstimator) {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    metrics::counter!("transport_video_packets_total").increment(d(c.packets, p.counts.packets));
    metrics::counter!("transport_video_bytes_total").increment(d(c.bytes, p.counts.bytes));
    metrics::counter!("transport_video_packets_without_abs_send_time_total")
        .increment(d(c.no_abs_send_time, p.counts.no_abs_send_time));
    metrics::counter!("transport_video_remb_sent_total")
        .increment(d(c.remb_sent, p.counts.remb_sent));
    metrics::counter!("transport_video_remb_failed_total")
        .increment(d(c.remb_failed, p.counts.remb_failed));
    let reordered = est.stats().reordered;
    metrics::counter!("transport_video_reordered_total").increment(d(reordered, p.reordered));
    // Cumulative loss falls again when a late packet arrives: count only the rises.
    let lost = est.lost_packets();
    if lost > p.lost {
        metrics::counter!("transport_video_lost_total").increment(lost - p.lost);
        p.lost = lost;
    }
    p.reordered = reordered;
    p.counts = *c;
}

#[derive(Default)]
struct PublishedDecoding {
    pushed: u64,
    refused: u64,
    plis: u64,
    dropped: u64,
}

fn publish_decoding(p: &mut PublishedDecoding, d: &Decoding) {
    let st = d.stats();
    let dropped = st.dropped_waiting_for_key;
    metrics::counter!("transport_video_frames_decoded_total").increment(d.pushed - p.pushed);
    metrics::counter!("transport_video_frames_refused_total").increment(d.refused - p.refused);
    metrics::counter!("transport_video_frames_dropped_total").increment(dropped - p.dropped);
    metrics::counter!("transport_video_pli_sent_total").increment(d.plis - p.plis);
    *p = PublishedDecoding {
        pushed: d.pushed,
        refused: d.refused,
        plis: d.plis,
        dropped,
    };
}

/// A decoder for the track's codec (VP8 or H.264, by its mime type), made off the runtime's
/// workers.
async fn start_decoder(
    track: &Arc<dyn TrackRemote>,
    ssrc: u32,
    out: VideoOut,
) -> Option<(VideoCodec, Box<dyn VideoDecoder>)> {
    let mime = track
        .codec(ssrc)
        .await
        .map(|c| c.mime_type)
        .unwrap_or_default();
    let Some(codec) = VideoCodec::from_mime(&mime) else {
        tracing::info!(codec = %mime, "video is not decoded: only VP8 and H.264 are (the bitrate is still estimated)");
        return None;
    };
    let VideoOut { frames, decoders } = out;
    match tokio::task::spawn_blocking(move || decoders.video_decoder(codec, frames)).await {
        Ok(Ok(Some(d))) => {
            tracing::info!(%codec, "video is decoded");
            Some((codec, d))
        }
        Ok(Ok(None)) => {
            tracing::info!(%codec, "the pipeline has no decoder for this codec; video is not decoded");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%codec, error = %e, "no video decoder; video is not decoded");
            None
        }
        Err(e) => {
            tracing::warn!(%codec, error = %e, "video decoder start panicked");
            None
        }
    }
}

/// The send time of a packet: its abs-send-time extension, else its RTP timestamp (90 kHz).
pub(crate) fn send_time(p: &rtc::rtp::Packet, id: Option<u8>) -> Option<AbsSendTime> {
    let ext = id.and_then(|id| p.header.get_extension(id))?;
    match ext.as_ref() {
        [a, b, c, ..] => Some(AbsSendTime::from_raw(u32::from_be_bytes([0, *a, *b, *c]))),
        _ => None,
    }
}

fn rtp_timestamp_send_time(ts: u32) -> AbsSendTime {
    AbsSendTime::from_micros(Micros(u64::from(ts) * 1_000_000 / VIDEO_CLOCK_RATE))
}

/// Reads one remote video track until it ends or `stop` fires.
pub(crate) async fn run_video_in(
    track: Arc<dyn TrackRemote>,
    params: VideoParams,
    out: Option<VideoOut>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut decoding = Decoding::new(out);
    let cfg = &params.config;
    let mut est = ReceiverEstimator::new(cfg.estimator_config()).map_err(|e| {
        TransportError::Config(vr_core::ConfigError::Invalid {
            key: "transport.video".into(),
            value: String::new(),
            reason: e.to_string(),
        })
    })?;
    let table = cfg.load_recap_table()?;
    let class = table.classes().first().map(|c| c.name.clone());
    match &class {
        Some(c) => tracing::info!(
            table = %cfg.recap_table,
            class = %c,
            "video: ReCapABR cap from the configured table (first class applied: no content classifier yet)"
        ),
        None => tracing::warn!(
            "video: no ReCap table (transport.video.recap_table empty): REMB is the congestion \
             estimate alone; the AI-oriented cap is UNMEASURED and off"
        ),
    }
    let min = Bitrate::from_kbps(u64::from(cfg.min_bitrate_kbps));
    let max = Bitrate::from_kbps(u64::from(cfg.max_bitrate_kbps));
    let mut cap = Cap {
        table,
        class,
        // The rule starts from the floor: the first decision is the table's minimum bitrate
        // reaching θ (or one tier up), not the estimator's start rate.
        current: min,
        min,
        max,
    };
    if params.abs_send_time_id.is_none() {
        tracing::warn!(
            "video: the peer did not negotiate abs-send-time; RTP timestamps stand in for send \
             times (coarser estimate)"
        );
    }

    let epoch = Instant::now();
    let now = || Micros(epoch.elapsed().as_micros() as u64);
    let mut media_ssrc: Option<u32> = None;
    let mut counts = Counts::default();
    let mut published = Published::default();
    let mut published_dec = PublishedDecoding::default();
    let mut last_publish = Instant::now();
    let mut tick = tokio::time::interval(POLL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = track.poll() => match ev {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    let arrival = now();
                    let size = p.header.marshal_size() + p.payload.len();
                    let sent = match send_time(&p, params.abs_send_time_id) {
                        Some(t) => t,
                        None => {
                            counts.no_abs_send_time += 1;
                            if counts.no_abs_send_time == 1 && params.abs_send_time_id.is_some() {
                                tracing::debug!("video packet without abs-send-time; using its RTP timestamp");
                            }
                            rtp_timestamp_send_time(p.header.timestamp)
                        }
                    };
                    est.on_packet(arrival, sent, size as u32, p.header.sequence_number);
                    counts.packets += 1;
                    counts.bytes += size as u64;
                    media_ssrc.get_or_insert(p.header.ssrc);
                    if let Some(out) = decoding.pending.take() {
                        if let Some((codec, d)) = start_decoder(&track, p.header.ssrc, out).await {
                            decoding.start(codec, d);
                        }
                    }
                    decoding.on_packet(&p);
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            },
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if let (Some(update), Some(ssrc)) = (est.poll(now()), media_ssrc) {
            let target = cap.target(update.bitrate);
            metrics::gauge!("transport_video_estimate_bps").set(update.bitrate.bps() as f64);
            metrics::gauge!("transport_video_remb_bps").set(target.bps() as f64);
            let remb = rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate {
                sender_ssrc: params.sender_ssrc,
                bitrate: target.bps() as f32,
                ssrcs: vec![ssrc],
            };
            match track.write_rtcp(vec![Box::new(remb)]).await {
                Ok(()) => {
                    counts.remb_sent += 1;
                    tracing::debug!(estimate = %update.bitrate, remb = %target, reason = ?update.reason, "video REMB");
                }
                Err(e) => {
                    counts.remb_failed += 1;
                    if counts.remb_failed == 1 {
                        tracing::debug!(error = %e, "video REMB not sent");
                    }
                }
            }
        }
        if let Some(ssrc) = media_ssrc {
            if decoding.pli_due(Instant::now()) {
                let pli =
                    rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: params.sender_ssrc,
                        media_ssrc: ssrc,
                    };
                if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!(error = %e, "video PLI not sent");
                }
            }
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish(&mut published, &counts, &est);
            publish_decoding(&mut published_dec, &decoding);
            last_publish = Instant::now();
        }
    }
    publish(&mut published, &counts, &est);
    publish_decoding(&mut published_dec, &decoding);
    let s = est.stats();
    tracing::info!(
        packets = counts.packets,
        bytes = counts.bytes,
        remb = counts.remb_sent,
        lost = est.lost_packets(),
        reordered = s.reordered,
        estimate = %est.estimate(),
        frames_decoded = decoding.pushed,
        frames_refused = decoding.refused,
        losses = decoding.stats().losses,
        malformed_frames = decoding.stats().malformed_frames,
        plis = decoding.plis,
        "video track ended"
    );
    Ok(())
}

/// The id the answer gave the abs-send-time extension in its first video section.
pub(crate) fn abs_send_time_id(
    desc: &webrtc::peer_connection::RTCSessionDescription,
) -> Option<u8> {
    let parsed = desc.unmarshal().ok()?;
    parsed
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media == "video" && m.media_name.port.value != 0)
        .flat_map(|m| m.attributes.iter())
        .filter(|a| a.key == "extmap")
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| {
            let (id, uri) = v.split_once(' ')?;
            let id = id.split('/').next()?;
            (uri.trim() == ABS_SEND_TIME_URI).then(|| id.parse().ok())?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_timestamp_fallback_is_90_khz() {
        let a = rtp_timestamp_send_time(0);
        let b = rtp_timestamp_send_time(90_000);
        // One second later: 2^18 ticks of the 6.18 fixed-point clock.
        assert_eq!(b.raw() - a.raw(), 1 << 18);
    }

    #[test]
    fn cap_is_min_of_estimate_table_and_bounds() {
        let table = RecapTable::from_toml_str(
            "[[class]]\nname = \"t\"\n[[class.row]]\nconfidence = [0.9, 0.9, 0.9, 0.9, 0.9, 0.9]\n\
             measured_by = \"synthetic, for this test\"\n",
        )
        .unwrap();
        let mut cap = Cap {
            class: table.classes().first().map(|c| c.name.clone()),
            table,
            current: Bitrate::from_kbps(100),
            min: Bitrate::from_kbps(100),
            max: Bitrate::from_kbps(2500),
        };
        // From the floor (confidence 0.45 < θ): the lowest tier, 200 kbit/s, reaches θ.
        assert_eq!(
            cap.target(Bitrate::from_kbps(1000)),
            Bitrate::from_kbps(200)
        );
        // Confidence at 200 kbit/s >= θ: hold, well below the estimate.
        assert_eq!(
            cap.target(Bitrate::from_kbps(1000)),
            Bitrate::from_kbps(200)
        );
        // Never above the estimate.
        assert_eq!(cap.target(Bitrate::from_kbps(150)), Bitrate::from_kbps(150));
        // Never below the floor.
        assert_eq!(cap.target(Bitrate::from_kbps(50)), Bitrate::from_kbps(100));
        let mut none = Cap {
            table: RecapTable::empty(),
            class: None,
            current: Bitrate::from_kbps(300),
            min: Bitrate::from_kbps(100),
            max: Bitrate::from_kbps(800),
        };
        assert_eq!(
            none.target(Bitrate::from_kbps(1000)),
            Bitrate::from_kbps(800)
        );
    }
}
