//! What the video tests share: an in-memory metrics recorder, a server with a chosen pipeline,
//! and a webrtc-rs client peer offering audio and one video codec, whose interceptor hands the
//! server's REMB and PLI feedback to the application.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
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
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry as InterceptorRegistry,
    SettingEngineBuilder,
};

pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const VIDEO_SSRC: u32 = 0x00DE_CAFE;
/// Connection states a client keeps for the test to read.
pub const STATE_QUEUE: usize = 16;

// ---------------------------------------------------------------------------------------------
// A metrics recorder that keeps counters and gauges in memory (one per test process under
// nextest; shared, and only ever compared with `>`, when tests share a process).

#[derive(Default)]
pub struct TestRecorder {
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

pub fn recorder() -> &'static TestRecorder {
    static R: OnceLock<&'static TestRecorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static TestRecorder = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(r);
        r
    })
}

pub fn counter(name: &str) -> u64 {
    recorder()
        .counters
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

pub fn gauge(name: &str) -> f64 {
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

pub struct Idle;

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

pub struct Running {
    pub url_port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start_server(video: VideoConfig) -> Running {
    start_server_with(video, Arc::new(Idle)).await
}

/// A server whose sessions run `pipeline`.
pub async fn start_server_with(video: VideoConfig, pipeline: Arc<dyn Pipeline>) -> Running {
    let cfg = TransportConfig {
        video,
        ..Default::default()
    };
    start_server_config(cfg, pipeline).await
}

/// A server with `cfg` (its addresses replaced by loopback ones) whose sessions run `pipeline`.
pub async fn start_server_config(cfg: TransportConfig, pipeline: Arc<dyn Pipeline>) -> Running {
    recorder();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let cfg = TransportConfig {
        bind: format!("127.0.0.1:{port}"),
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..cfg
    };
    let server = Server::new(cfg, pipeline, Arc::new(String::new)).expect("server");
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
pub async fn post_offer(port: u16, sdp: &str) -> (u16, String) {
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

/// Hands inbound REMB and PLI to the application (inbound RTCP otherwise ends in the interceptors).
#[derive(Default)]
struct DeliverFeedback {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for DeliverFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| {
                p.as_any().is::<ReceiverEstimatedMaximumBitrate>()
                    || p.as_any().is::<PictureLossIndication>()
            }) {
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

impl Interceptor for DeliverFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

pub struct Handler {
    pub gathered: mpsc::Sender<()>,
    /// Bounded: a connection goes through a handful of states; once full, later ones (which no
    /// test waits for) are dropped rather than queued without bound.
    pub state: mpsc::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.try_send(s);
    }
}

pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

pub fn vp8_codec() -> RTCRtpCodec {
    video_codec(MIME_TYPE_VP8, "")
}

pub fn video_codec(mime: &str, fmtp: &str) -> RTCRtpCodec {
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

pub fn local_track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
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

pub struct Client {
    pub pc: Arc<dyn PeerConnection>,
    pub video: Option<Arc<TrackLocalStaticRTP>>,
    pub video_pt: u8,
    gathered: mpsc::Receiver<()>,
    state: mpsc::Receiver<RTCPeerConnectionState>,
}

impl Client {
    /// `abs_send_time = false`: the client does not offer the extension (an older sender).
    pub async fn new(with_video: bool, abs_send_time: bool) -> Client {
        Client::with_codec(with_video, abs_send_time, vp8_codec(), 96).await
    }

    /// A client offering `codec` (payload type `pt`) as its only video codec.
    pub async fn with_codec(
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
            .expect("video codec");
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
        let registry =
            InterceptorRegistry::new().with(Slot::from(14_000), DeliverFeedback::default());
        let (gtx, grx) = mpsc::channel(1);
        let (stx, srx) = mpsc::channel(STATE_QUEUE);
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
    pub async fn connect(&mut self, port: u16) -> String {
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
pub fn sections(sdp: &str) -> Vec<(String, u16, Vec<String>)> {
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
