//! The receiving side of video against a real webrtc-rs client peer, over loopback UDP, with the
//! real server and session code in this process:
//! - an offer with audio + VP8 (or H.264) gets an answer with a live (recvonly) video section,
//!   `goog-remb` and the abs-send-time extension;
//! - the client sends 3 s of paced video RTP at 1 Mbit/s (synthetic VP8 payload bytes: a
//!   one-byte VP8 payload descriptor and filler, nothing decodable — the server does not decode)
//!   with abs-send-time from its own clock;
//! - REMB packets reach the client for its video SSRC, with bitrates inside
//!   `[min_bitrate_kbps, max_bitrate_kbps]`; a lower `max_bitrate_kbps` and a (synthetic,
//!   labelled as such) ReCap table each hold every REMB at or below their limit;
//! - the `transport_video_*` counters moved;
//! - without abs-send-time negotiated the RTP timestamp stands in (and is counted);
//! - packets the client withholds are counted lost, packets it holds back counted reordered;
//! - with video disabled the same offer is answered with the video section rejected, and audio
//!   still connects; an audio-only offer is answered as before.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp::extension::abs_send_time_extension::AbsSendTimeExtension;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use voicerelay_transport as vr_transport;
use vr_transport::config::{TransportConfig, VideoConfig};
use vr_transport::pipeline::{Pipeline, PipelineControl, PipelineRun, SessionIo};
use vr_transport::server::Server;
use vr_transport::TransportError;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry as InterceptorRegistry,
    SettingEngineBuilder,
};

const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const VIDEO_SSRC: u32 = 0x00DE_CAFE;
const SEND_RATE_BPS: u64 = 1_000_000;
const SEND_FOR: Duration = Duration::from_secs(3);
const FPS: u64 = 30;
const PAYLOAD_BYTES: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// A metrics recorder that keeps counters and gauges in memory (one per test process under
// nextest; shared, and only ever compared with `>`, when tests share a process).

#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

struct CounterCell(Arc<AtomicU64>);
impl metrics::CounterFn for CounterCell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }
}

struct GaugeCell(Arc<AtomicU64>);
impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }
    fn decrement(&self, v: f64) {
        self.increment(-v);
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

fn cell(map: &Mutex<HashMap<String, Arc<AtomicU64>>>, key: &metrics::Key) -> Arc<AtomicU64> {
    map.lock()
        .unwrap()
        .entry(key.name().to_owned())
        .or_default()
        .clone()
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(CounterCell(cell(&self.counters, key))))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(GaugeCell(cell(&self.gauges, key))))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

fn recorder() -> &'static TestRecorder {
    static R: OnceLock<&'static TestRecorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static TestRecorder = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(r);
        r
    })
}

fn counter(name: &str) -> u64 {
    recorder()
        .counters
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

fn gauge(name: &str) -> f64 {
    recorder()
        .gauges
        .lock()
        .unwrap()
        .get(name)
        .map_or(0.0, |c| f64::from_bits(c.load(Ordering::Relaxed)))
}

// ---------------------------------------------------------------------------------------------
// A conversation that does nothing until it is stopped.

struct IdleControl {
    done: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
    _io: Mutex<SessionIo>,
}

impl PipelineControl for IdleControl {
    fn interrupt(&self) {}
    fn send_text(&self, _text: String) {}
    fn configure(
        &self,
        _settings: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        Ok(())
    }
    fn stop(&self) {
        if let Some(tx) = self.done.lock().unwrap().take() {
            let _ = tx.send(Ok(()));
        }
    }
}

struct Idle;

impl Pipeline for Idle {
    fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
        let (tx, rx) = oneshot::channel();
        Ok(PipelineRun {
            control: Arc::new(IdleControl {
                done: Mutex::new(Some(tx)),
                _io: Mutex::new(io),
            }),
            done: rx,
        })
    }
}

struct Running {
    url_port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_server(video: VideoConfig) -> Running {
    recorder();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let cfg = TransportConfig {
        bind: format!("127.0.0.1:{port}"),
        udp_addrs: vec!["127.0.0.1:0".into()],
        video,
        ..Default::default()
    };
    let server = Server::new(cfg, Arc::new(Idle), Arc::new(String::new)).expect("server");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = vr_transport::server::serve(listener, server, async move {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        url_port: port,
        stop: Some(tx),
    }
}

/// POST the offer; (status, body).
async fn post_offer(port: u16, sdp: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("answer within 15 s")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

// ---------------------------------------------------------------------------------------------
// The client peer.

/// Hands inbound REMB to the application (inbound RTCP otherwise ends in the interceptors).
#[derive(Default)]
struct DeliverRemb {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for DeliverRemb {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets
                .iter()
                .any(|p| p.as_any().is::<ReceiverEstimatedMaximumBitrate>())
            {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverRemb {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

struct Handler {
    gathered: mpsc::Sender<()>,
    state: mpsc::UnboundedSender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8_codec() -> RTCRtpCodec {
    video_codec(MIME_TYPE_VP8, "")
}

fn video_codec(mime: &str, fmtp: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.to_owned(),
        // As a browser offers it.
        rtcp_feedback: vec![rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
            typ: "goog-remb".to_owned(),
            parameter: String::new(),
        }],
    }
}

fn local_track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "client".to_owned(),
        format!("client-{kind}"),
        "client".to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    video: Option<Arc<TrackLocalStaticRTP>>,
    video_pt: u8,
    gathered: mpsc::Receiver<()>,
    state: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
}

impl Client {
    /// `abs_send_time = false`: the client does not offer the extension (an older sender).
    async fn new(with_video: bool, abs_send_time: bool) -> Client {
        Client::with_codec(with_video, abs_send_time, vp8_codec(), 96).await
    }

    /// A client offering `codec` (payload type `pt`) as its only video codec.
    async fn with_codec(
        with_video: bool,
        abs_send_time: bool,
        codec: RTCRtpCodec,
        pt: u8,
    ) -> Client {
        let mut media = webrtc::peer_connection::MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: 111,
                },
                RtpCodecKind::Audio,
            )
            .expect("opus");
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec.clone(),
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )
            .expect("vp8");
        if abs_send_time {
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: ABS_SEND_TIME_URI.to_owned(),
                    },
                    RtpCodecKind::Video,
                    None,
                )
                .expect("abs-send-time");
        }
        let registry = InterceptorRegistry::new().with(Slot::from(14_000), DeliverRemb::default());
        let (gtx, grx) = mpsc::channel(1);
        let (stx, srx) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::default()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(Arc::new(Handler {
                gathered: gtx,
                state: stx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("client peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let audio = local_track(RtpCodecKind::Audio, rand::random(), opus_codec());
        pc.add_track(audio as Arc<dyn TrackLocal>)
            .await
            .expect("add audio");
        let video = if with_video {
            let v = local_track(RtpCodecKind::Video, VIDEO_SSRC, codec);
            pc.add_track(v.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add video");
            Some(v)
        } else {
            None
        };
        Client {
            pc,
            video,
            video_pt: pt,
            gathered: grx,
            state: srx,
        }
    }

    /// Offer → POST → answer applied → connected; returns the answer SDP.
    async fn connect(&mut self, port: u16) -> String {
        let offer = self.pc.create_offer(None).await.expect("offer");
        self.pc.set_local_description(offer).await.expect("local");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.gathered.recv()).await;
        let offer = self.pc.local_description().await.expect("offer").sdp;
        let (status, answer) = post_offer(port, &offer).await;
        assert_eq!(status, 201, "offer refused: {answer}");
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.clone()).expect("answer"))
            .await
            .expect("apply answer");
        let t0 = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.state.recv()).await {
                Ok(Some(RTCPeerConnectionState::Connected)) => break,
                Ok(Some(RTCPeerConnectionState::Failed)) => panic!("connection failed"),
                Ok(Some(_)) => {}
                _ => panic!("not connected after {:?}", t0.elapsed()),
            }
        }
        answer
    }
}

/// The media sections of an SDP as (kind, port, attribute lines).
fn sections(sdp: &str) -> Vec<(String, u16, Vec<String>)> {
    let mut out: Vec<(String, u16, Vec<String>)> = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split_whitespace();
            let kind = it.next().unwrap_or_default().to_owned();
            let port = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push((kind, port, Vec::new()));
        } else if let (Some(a), Some(last)) = (line.strip_prefix("a="), out.last_mut()) {
            last.2.push(a.to_owned());
        }
    }
    out
}

/// One REMB the client received.
#[derive(Clone, Debug)]
struct Remb {
    kbps: f64,
    sender_ssrc: u32,
    ssrcs: Vec<u32>,
}

/// Impairments the client applies itself (loopback has none).
#[derive(Clone, Copy, Default)]
struct Impair {
    /// Never send every n-th packet (0 = send all): the sequence number is skipped.
    drop_every: u64,
    /// Every n-th frame (0 = none), hold its last packet back until after the next frame's
    /// first one: it arrives with a send time before the current group's.
    hold_every: u64,
}

/// Sends `SEND_FOR` of paced video at `SEND_RATE_BPS` and collects the REMBs meanwhile (plus
/// 1.5 s after, so the last periodic one arrives).
async fn send_video_and_collect(client: &Client, impair: Impair) -> Vec<Remb> {
    let track = client.video.clone().expect("a video track");
    let pt = client.video_pt;
    let rembs: Arc<Mutex<Vec<Remb>>> = Arc::default();
    let reader = {
        let track = track.clone();
        let rembs = rembs.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = ev {
                    for p in packets {
                        if let Some(r) =
                            p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                        {
                            rembs.lock().unwrap().push(Remb {
                                kbps: f64::from(r.bitrate) / 1000.0,
                                sender_ssrc: r.sender_ssrc,
                                ssrcs: r.ssrcs.clone(),
                            });
                        }
                    }
                }
            }
        })
    };
    // 1 Mbit/s at 30 fps: 4167 bytes a frame, sent as packets of 1000 payload bytes back to
    // back (as an encoder's pacer would burst a frame), the frame's last packet shorter.
    let bytes_per_frame = (SEND_RATE_BPS / 8 / FPS) as usize;
    let epoch = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut seq: u16 = rand::random();
    let frames = SEND_FOR.as_millis() as u64 * FPS / 1000;
    let mut packet_index = 0u64;
    let mut held: Option<(rtc::rtp::Packet, vr_abr::AbsSendTime)> = None;
    let write = |pkt: rtc::rtp::Packet, sent: vr_abr::AbsSendTime| {
        let track = track.clone();
        async move {
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
    };
    for f in 0..frames {
        tokio::time::sleep_until(t0 + Duration::from_micros(f * 1_000_000 / FPS)).await;
        let mut left = bytes_per_frame;
        let mut first = true;
        while left > 0 {
            let n = left.min(PAYLOAD_BYTES);
            left -= n;
            let mut payload = vec![0xA5u8; n];
            // VP8 payload descriptor: S (start of partition) on the frame's first packet.
            payload[0] = if first { 0x10 } else { 0x00 };
            first = false;
            let sent = vr_abr::AbsSendTime::from_micros(vr_abr::Micros(
                epoch.elapsed().as_micros() as u64,
            ));
            let pkt = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: (f * 90_000 / FPS) as u32,
                    marker: left == 0,
                    ssrc: VIDEO_SSRC,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(payload),
            };
            seq = seq.wrapping_add(1);
            packet_index += 1;
            if impair.drop_every > 0 && packet_index.is_multiple_of(impair.drop_every) {
                continue;
            }
            if impair.hold_every > 0 && f.is_multiple_of(impair.hold_every) && left == 0 {
                held = Some((pkt, sent));
                continue;
            }
            write(pkt, sent).await;
            if let Some((pkt, sent)) = held.take() {
                write(pkt, sent).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reader.abort();
    let out = rembs.lock().unwrap().clone();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_offer_gets_remb_within_the_configured_bounds() {
    let video = VideoConfig::default();
    let (min, max) = (video.min_bitrate_kbps, video.max_bitrate_kbps);
    let srv = start_server(video).await;
    let packets0 = counter("transport_video_packets_total");
    let bytes0 = counter("transport_video_bytes_total");
    let remb0 = counter("transport_video_remb_sent_total");

    let mut client = Client::new(true, true).await;
    let answer = client.connect(srv.url_port).await;
    let secs = sections(&answer);
    let audio = secs.iter().find(|s| s.0 == "audio").expect("audio section");
    assert_ne!(audio.1, 0, "audio rejected:\n{answer}");
    let v = secs.iter().find(|s| s.0 == "video").expect("video section");
    assert_ne!(v.1, 0, "video rejected:\n{answer}");
    assert!(
        v.2.iter().any(|a| a == "recvonly"),
        "video not recvonly:\n{answer}"
    );
    assert!(
        v.2.iter()
            .any(|a| a.starts_with("extmap:") && a.ends_with(ABS_SEND_TIME_URI)),
        "no abs-send-time in the answer:\n{answer}"
    );
    assert!(
        v.2.iter().any(|a| a.contains("goog-remb")),
        "no goog-remb:\n{answer}"
    );

    let rembs = send_video_and_collect(&client, Impair::default()).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    eprintln!("REMB kbit/s: {values:?}");
    assert!(
        rembs.len() >= 3,
        "expected >= 3 REMBs in 4.5 s, got {values:?}"
    );
    // The REMB's sender SSRC is the server's own outgoing audio SSRC (from the answer).
    let server_ssrc: u32 = audio
        .2
        .iter()
        .find_map(|a| a.strip_prefix("ssrc:")?.split(' ').next()?.parse().ok())
        .expect("a=ssrc in the answer's audio section");
    for r in &rembs {
        assert_eq!(r.ssrcs, vec![VIDEO_SSRC]);
        assert_eq!(r.sender_ssrc, server_ssrc);
        let k = r.kbps;
        assert!(
            (f64::from(min)..=f64::from(max)).contains(&k),
            "REMB {k} kbit/s outside [{min}, {max}]"
        );
    }
    // Loopback is never congested: the estimate does not fall below its 300 kbit/s start.
    assert!(
        values.iter().all(|&k| k >= 299.0),
        "estimate fell on an idle loopback: {values:?}"
    );

    // 3 s at 1 Mbit/s: 90 frames of 5 packets, 375 kB of payload.
    let packets = counter("transport_video_packets_total") - packets0;
    let bytes = counter("transport_video_bytes_total") - bytes0;
    let remb = counter("transport_video_remb_sent_total") - remb0;
    eprintln!("server: {packets} packets, {bytes} bytes, {remb} REMBs");
    assert!(packets >= 400, "{packets} packets counted (450 sent)");
    assert!(bytes >= 375_000 * 9 / 10, "{bytes} bytes counted");
    assert!(
        remb >= rembs.len() as u64,
        "{remb} REMBs counted, {} received",
        rembs.len()
    );
    let est = gauge("transport_video_estimate_bps");
    assert!(
        (f64::from(min) * 1000.0..=f64::from(max) * 1000.0).contains(&est),
        "estimate gauge {est}"
    );
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_max_bitrate_caps_every_remb() {
    let video = VideoConfig {
        max_bitrate_kbps: 250,
        ..Default::default()
    };
    let srv = start_server(video).await;
    let mut client = Client::new(true, true).await;
    client.connect(srv.url_port).await;
    let rembs = send_video_and_collect(&client, Impair::default()).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    eprintln!("REMB kbit/s (max 250): {values:?}");
    assert!(rembs.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|&k| (100.0..=250.0).contains(&k)),
        "{values:?}"
    );
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recap_table_caps_remb_below_the_estimate() {
    // Synthetic: every tier reaches θ = 0.8, so the minimum bitrate reaching θ is the lowest
    // tier (200 kbit/s) and the cap holds there while the estimate is >= 300 kbit/s.
    let dir = std::env::temp_dir().join(format!("vr-recap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("recap.toml");
    std::fs::write(
        &path,
        "[[class]]\nname = \"synthetic\"\n[[class.row]]\n\
         confidence = [0.9, 0.92, 0.94, 0.95, 0.96, 0.97]\n\
         measured_by = \"synthetic table for transport/tests/video_remb.rs, NOT a measurement\"\n",
    )
    .expect("write table");
    let video = VideoConfig {
        recap_table: path.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let srv = start_server(video).await;
    let mut client = Client::new(true, true).await;
    client.connect(srv.url_port).await;
    let rembs = send_video_and_collect(&client, Impair::default()).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    let est = gauge("transport_video_estimate_bps") / 1000.0;
    eprintln!("REMB kbit/s (ReCap): {values:?}; last estimate {est} kbit/s");
    assert!(rembs.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|&k| (199.0..=201.0).contains(&k)),
        "{values:?}"
    );
    assert!(est >= 299.0, "the cap is below the estimate: {est}");
    let _ = client.pc.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_disabled_rejects_the_video_section_and_audio_still_connects() {
    let video = VideoConfig {
        enabled: false,
        ..Default::default()
    };
    let srv = start_server(video).await;
    let mut client = Client::new(true, true).await;
    let answer = client.connect(srv.url_port).await;
    let secs = sections(&answer);
    assert!(secs.iter().any(|s| s.0 == "audio" && s.1 != 0), "{answer}");
    let v = secs.iter().find(|s| s.0 == "video").expect("video section");
    assert_eq!(v.1, 0, "video accepted though disabled:\n{answer}");
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_offer_still_connects_with_video_enabled() {
    let srv = start_server(VideoConfig::default()).await;
    let mut client = Client::new(false, true).await;
    let answer = client.connect(srv.url_port).await;
    let secs = sections(&answer);
    assert!(secs.iter().any(|s| s.0 == "audio" && s.1 != 0), "{answer}");
    assert!(!secs.iter().any(|s| s.0 == "video"), "{answer}");
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_abs_send_time_the_rtp_timestamp_stands_in() {
    let srv = start_server(VideoConfig::default()).await;
    let fallback0 = counter("transport_video_packets_without_abs_send_time_total");
    let mut client = Client::new(true, false).await;
    let answer = client.connect(srv.url_port).await;
    assert!(!answer.contains(ABS_SEND_TIME_URI), "{answer}");
    let rembs = send_video_and_collect(&client, Impair::default()).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    let fallback = counter("transport_video_packets_without_abs_send_time_total") - fallback0;
    eprintln!(
        "REMB kbit/s (RTP timestamps as send times): {values:?}; {fallback} packets fell back"
    );
    assert!(rembs.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|&k| (100.0..=2500.0).contains(&k)),
        "{values:?}"
    );
    assert!(
        fallback >= 400,
        "{fallback} packets counted as falling back (450 sent)"
    );
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_reordering_are_counted() {
    let srv = start_server(VideoConfig::default()).await;
    let lost0 = counter("transport_video_lost_total");
    let reordered0 = counter("transport_video_reordered_total");
    let packets0 = counter("transport_video_packets_total");
    let mut client = Client::new(true, true).await;
    client.connect(srv.url_port).await;
    // 450 packets: every 25th never sent (18, 4 %: between GCC's 2 % and 10 % thresholds, so
    // the loss-based estimate holds; the 450th is the last one, so its loss cannot be seen: 17
    // detectable); the last packet of every 10th frame held back behind the next frame's first
    // one (9 of them).
    let impair = Impair {
        drop_every: 25,
        hold_every: 10,
    };
    let rembs = send_video_and_collect(&client, impair).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    let lost = counter("transport_video_lost_total") - lost0;
    let reordered = counter("transport_video_reordered_total") - reordered0;
    let packets = counter("transport_video_packets_total") - packets0;
    eprintln!("REMB kbit/s: {values:?}; {packets} packets, {lost} lost, {reordered} reordered");
    assert!(rembs.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|&k| (100.0..=2500.0).contains(&k)),
        "{values:?}"
    );
    // Loopback may lose a packet of its own now and then, never fewer than the 17 withheld.
    assert!(
        (17..=20).contains(&lost),
        "{lost} lost counted (17 detectable never sent)"
    );
    assert!(
        reordered >= 5,
        "{reordered} reordered counted (9 held back)"
    );
    assert!(packets >= 400, "{packets}");
    let _ = client.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_offer_is_accepted_and_estimated_too() {
    let srv = start_server(VideoConfig::default()).await;
    let h264 = video_codec(
        MIME_TYPE_H264,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    );
    let mut client = Client::with_codec(true, true, h264, 102).await;
    let answer = client.connect(srv.url_port).await;
    let secs = sections(&answer);
    let v = secs.iter().find(|s| s.0 == "video").expect("video section");
    assert_ne!(v.1, 0, "H.264 rejected:\n{answer}");
    assert!(v.2.iter().any(|a| a.contains("H264/90000")), "{answer}");
    // Synthetic payload again: the server counts and times packets, it never parses H.264.
    let rembs = send_video_and_collect(&client, Impair::default()).await;
    let values: Vec<f64> = rembs.iter().map(|r| r.kbps).collect();
    eprintln!("REMB kbit/s (H.264): {values:?}");
    assert!(rembs.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|&k| (100.0..=2500.0).contains(&k)),
        "{values:?}"
    );
    let _ = client.pc.close().await;
}
