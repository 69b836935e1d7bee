//! Shared by the WebRTC end-to-end tests: the `voicerelay serve` child process, a webrtc-rs
//! client (the same library the server uses, driven from the other side), HTTP helpers and the
//! corpus utterance they speak.
#![allow(dead_code)]

pub mod relay;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate as OpusRate};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// The utterance the clients speak: test split, 5.4 s, 17 words of read speech.
pub const UTTERANCE_ID: &str = "ls_1089-134691-0001";

/// `voicerelay serve` on a free loopback port; killed (SIGTERM, then SIGKILL) on drop.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts the server with `env` (`VOICERELAY__...` overrides) and waits for its URL.
    pub fn start(env: &[(&str, &str)]) -> ServerProcess {
        let dir = artifact_dir();
        // One log per server, also when a test runs several.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("serve-{}-{n}.log", std::process::id()));
        let logf = std::fs::File::create(&log).expect("server log file");
        let mut cmd = Command::new(server_bin());
        cmd.args(["serve", "--bind", "127.0.0.1:0"])
            .env("VOICERELAY__TRANSPORT__UDP_ADDRS", "[\"127.0.0.1:0\"]")
            // VOICERELAY_TEST_SERVER_LOG: another filter for the servers' logs (debugging).
            .env(
                "RUST_LOG",
                std::env::var("VOICERELAY_TEST_SERVER_LOG")
                    .unwrap_or_else(|_| "info,voicerelay_transport=debug".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn voicerelay serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[serve] {line}");
                if let Some(i) = line.find("http://") {
                    let _ = tx.send(line[i..].trim().trim_end_matches('/').to_string());
                }
            }
        });
        // Loading the models in a debug build takes a while on 2 busy cores.
        let url = match rx.recv_timeout(Duration::from_secs(240)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "voicerelay serve printed no URL; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        ServerProcess { child, url, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return (s, t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("server ignored SIGTERM for 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The server binary: cargo's, unless `VOICERELAY_TEST_BIN` names another build of it (several
/// worktrees sharing one target directory overwrite each other's `target/debug/voicerelay`).
pub fn server_bin() -> PathBuf {
    std::env::var_os("VOICERELAY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_voicerelay")))
}

/// Where tests leave artifacts (logs, screenshots): `$CARGO_TARGET_DIR/test-artifacts`.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

pub struct HttpReply {
    pub status: u16,
    pub location: Option<String>,
    /// The `VoiceRelay-Resume-Token` header of a session's creation or resume.
    pub resume_token: Option<String>,
    pub content_type: String,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> HttpReply {
    let client = reqwest::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    // Generous: a session start loads a recogniser and a voice, slow on a busy 2-core machine.
    let mut req = client.request(m, url).timeout(Duration::from_secs(120));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resume_token = resp
        .headers()
        .get("voicerelay-resume-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.unwrap_or_default();
    HttpReply {
        status,
        location,
        resume_token,
        content_type,
        body,
    }
}

/// The value of an unlabelled Prometheus sample `name` (None if absent).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

/// Polls `/metrics` until `transport_sessions_active` and `transport_pipelines_running` are
/// both `want`; returns when that happened, or None after `timeout`.
pub async fn wait_sessions(url: &str, want: f64, timeout: Duration) -> Option<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
        if metric(&m, "transport_sessions_active") == Some(want)
            && metric(&m, "transport_pipelines_running") == Some(want)
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Polls `/metrics` until the unlabelled sample `name` equals `want`; when, or None after
/// `timeout`.
pub async fn wait_metric(url: &str, name: &str, want: f64, timeout: Duration) -> Option<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
        if metric(&m, name) == Some(want) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The test utterance as 48 kHz mono f32 and its reference text, or None when the corpus is
/// absent (a failure under CI: `vr_core::prereq`).
pub fn utterance_48k() -> Option<(Vec<f32>, String, PathBuf)> {
    utterances_48k(&[UTTERANCE_ID])?.pop()
}

/// The named test-split utterances as 48 kHz mono f32 with their reference texts, or None when
/// the corpus is absent (a failure under CI: `vr_core::prereq`).
pub fn utterances_48k(ids: &[&str]) -> Option<Vec<(Vec<f32>, String, PathBuf)>> {
    let corpus = match vr_evals::corpus::Corpus::open_default() {
        Ok(Some(c)) => c,
        Ok(None) => {
            vr_core::prereq::missing(format_args!(
                "speech corpus not found at {} (set VOICERELAY_CORPUS)",
                vr_core::paths::corpus_dir().display()
            ));
            return None;
        }
        Err(e) => panic!("corpus manifest: {e}"),
    };
    let load = |id: &str| {
        let u = corpus
            .split(vr_evals::corpus::Split::Test)
            .find(|u| u.id == id)
            .unwrap_or_else(|| panic!("{id} is not in the corpus test split"));
        let path = corpus.wav_path(u);
        let mut r = hound::WavReader::open(&path).expect("corpus wav");
        let spec = r.spec();
        let samples: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Int => {
                let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
                r.samples::<i32>()
                    .map(|s| s.expect("wav") as f32 / scale)
                    .collect()
            }
            hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.expect("wav")).collect(),
        };
        let fmt = vr_capture::AudioFormat {
            rate: vr_core::SampleRate(spec.sample_rate),
            channels: spec.channels,
        };
        let mono48 =
            vr_capture::resample::resample_to_mono(&samples, fmt, vr_core::SampleRate::OPUS)
                .expect("resample");
        (mono48, u.text.clone(), path)
    };
    Some(ids.iter().map(|id| load(id)).collect())
}

pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = vr_evals::normalize::normalize(reference);
    let h = vr_evals::normalize::normalize(hypothesis);
    vr_evals::wer::word_errors(&r, &h).rate()
}

/// What the client has received so far.
#[derive(Default)]
pub struct Received {
    pub events: Vec<serde_json::Value>,
    /// Decoded assistant audio: one (rms, peak) per packet.
    pub frames: Vec<(f32, f32)>,
    pub packets: u64,
    pub open: bool,
}

impl Received {
    pub fn of_type(&self, t: &str) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["type"].as_str() == Some(t))
            .collect()
    }

    /// RMS over packets that carry sound (peak above -50 dBFS), and how many there were.
    pub fn speech_rms(&self) -> (f32, usize) {
        let loud: Vec<f32> = self
            .frames
            .iter()
            .filter(|(_, peak)| *peak > 0.003)
            .map(|(rms, _)| *rms)
            .collect();
        let n = loud.len();
        let ms = loud.iter().map(|r| r * r).sum::<f32>() / n.max(1) as f32;
        (ms.sqrt(), n)
    }
}

struct ClientHandler {
    received: Arc<Mutex<Received>>,
    gathered: mpsc::Sender<()>,
    state: mpsc::UnboundedSender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let mut dec = Decoder::new(OpusRate::Hz48000, Channels::Mono).expect("decoder");
            let mut pcm = vec![0f32; 5760];
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let n = dec
                            .decode_float(Some(&p.payload[..]), &mut pcm[..], false)
                            .unwrap_or(0);
                        let s = &pcm[..n];
                        let rms = (s.iter().map(|v| v * v).sum::<f32>() / n.max(1) as f32).sqrt();
                        let peak = s.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let mut r = received.lock().unwrap();
                        r.packets += 1;
                        r.frames.push((rms, peak));
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
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

/// A webrtc-rs peer playing the browser's part: microphone track, `events` data channel.
pub struct Client {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    pub dc: Arc<dyn DataChannel>,
    pub received: Arc<Mutex<Received>>,
    gathered: mpsc::Receiver<()>,
    state: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    pub location: Option<String>,
    /// The session's resume token, from the answer's `VoiceRelay-Resume-Token` header.
    pub resume_token: Option<String>,
    /// Opus in-band FEC for this expected loss (%), as a browser turns it on when the answer
    /// has `useinbandfec=1` and its receiver reports show loss; None: no FEC.
    pub fec_loss_pct: Option<u8>,
    /// The camera track (VP8, payload type [`VP8_PT`]) and its SSRC, when offered.
    pub camera: Option<(Arc<TrackLocalStaticSample>, u32)>,
    /// RED's payload type once the server's answer accepted the client's `audio/red` offer
    /// ([`Client::with_red`]): `speak` then sends each frame with the one before it, as Chrome
    /// does when RED is negotiated first.
    pub red_pt: Option<u8>,
}

/// The payload type the client offers RED (RFC 2198) over Opus at (Chrome's).
pub const RED_PT: u8 = 63;

/// The payload type the client offers VP8 at (as Chromium does).
pub const VP8_PT: u8 = 96;

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

impl Client {
    /// Builds the peer and its offer; `audio = false` makes a data-channel-only offer.
    pub async fn new(audio: bool) -> Client {
        Client::build(audio, false, false).await
    }

    /// A microphone and a camera (VP8), as a browser sharing both.
    pub async fn with_camera() -> Client {
        Client::build(true, true, false).await
    }

    /// A microphone that also offers redundant audio (RED over Opus, [`RED_PT`]).
    pub async fn with_red() -> Client {
        Client::build(true, false, true).await
    }

    async fn build(audio: bool, camera: bool, red: bool) -> Client {
        let mut media = MediaEngine::default();
        if red {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: vr_transport::red::rtp_codec(111),
                        payload_type: RED_PT,
                    },
                    RtpCodecKind::Audio,
                )
                .expect("red");
        }
        if camera {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: vp8_codec(),
                        payload_type: VP8_PT,
                    },
                    RtpCodecKind::Video,
                )
                .expect("vp8");
        }
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: 111,
                },
                RtpCodecKind::Audio,
            )
            .expect("codec");
        let (gtx, grx) = mpsc::channel(1);
        let (stx, srx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Received::default()));
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(
                SettingEngineBuilder::default()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(Arc::new(ClientHandler {
                received: received.clone(),
                gathered: gtx,
                state: stx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("client peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc: u32 = rand::random();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "mic".to_owned(),
                    "mic-audio".to_owned(),
                    "mic".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: opus_codec(),
                        ..Default::default()
                    }],
                ),
            )
            .expect("track"),
        );
        if audio {
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add track");
        }
        let camera = if camera {
            let ssrc: u32 = rand::random();
            let track = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        "cam".to_owned(),
                        "cam-video".to_owned(),
                        "cam".to_owned(),
                        RtpCodecKind::Video,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            codec: vp8_codec(),
                            ..Default::default()
                        }],
                    ),
                )
                .expect("camera track"),
            );
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add camera");
            Some((track, ssrc))
        } else {
            None
        };
        let dc = pc.create_data_channel("events", None).await.expect("dc");
        Client {
            camera,
            pc,
            track,
            ssrc,
            dc,
            received,
            gathered: grx,
            state: srx,
            location: None,
            resume_token: None,
            fec_loss_pct: None,
            red_pt: None,
        }
    }

    /// The offer SDP after ICE gathering.
    pub async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.expect("offer");
        self.pc
            .set_local_description(offer)
            .await
            .expect("set local");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.gathered.recv()).await;
        self.pc.local_description().await.expect("local").sdp
    }

    /// Offer → POST → answer → connected, with the events channel open.
    pub async fn connect(&mut self, url: &str, token: Option<&str>) {
        let answer = self.post_offer(url, token).await;
        self.accept_answer(answer).await;
    }

    /// As [`Client::connect`], but every datagram goes through a [`relay::Relay`] that applies
    /// `impairment` to the uplink once connected.
    pub async fn connect_through_relay(
        &mut self,
        url: &str,
        impairment: Option<relay::Impairment>,
        seed: u64,
    ) -> relay::Relay {
        let answer = self.post_offer(url, None).await;
        let server = relay::server_candidate(&answer)
            .unwrap_or_else(|| panic!("no UDP host candidate in the answer:\n{answer}"));
        let r = relay::Relay::start(server, impairment, seed).await;
        self.accept_answer(relay::through_relay(&answer, r.front))
            .await;
        r.impair(true);
        r
    }

    /// POSTs the offer; the answer SDP.
    async fn post_offer(&mut self, url: &str, token: Option<&str>) -> String {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/sdp")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = self
            .send_offer(&format!("{url}/v1/sessions"), &headers)
            .await;
        assert_eq!(r.status, 201, "offer refused: {}", r.body);
        assert_eq!(r.content_type, "application/sdp");
        self.location = r.location.clone();
        self.resume_token = r.resume_token.clone();
        r.body
    }

    async fn send_offer(&mut self, to: &str, headers: &[(&str, &str)]) -> HttpReply {
        let sdp = self.offer().await;
        http("POST", to, headers, Some(sdp.into_bytes())).await
    }

    /// Offers this (new) peer connection to the session at `location` with its resume token;
    /// the reply as it came (a `201` carries the answer).
    pub async fn offer_resume(&mut self, url: &str, location: &str, token: &str) -> HttpReply {
        self.send_offer(
            &format!("{url}{location}/resume"),
            &[
                ("content-type", "application/sdp"),
                ("voicerelay-resume-token", token),
            ],
        )
        .await
    }

    /// Resumes the session at `location`: offer, answer, connected, events channel open.
    pub async fn resume(&mut self, url: &str, location: &str, token: &str) {
        let r = self.offer_resume(url, location, token).await;
        assert_eq!(r.status, 201, "resume refused: {}", r.body);
        assert_eq!(
            r.location.as_deref(),
            Some(location),
            "a resume keeps the session"
        );
        self.location = r.location.clone();
        self.resume_token = r.resume_token.clone();
        self.accept_answer(r.body).await;
    }

    /// Applies the answer, waits for the connection and the events channel.
    async fn accept_answer(&mut self, answer: String) {
        self.red_pt = vr_transport::red::payload_type_in_sdp(&answer);
        let answer = RTCSessionDescription::answer(answer).expect("answer parses");
        self.pc
            .set_remote_description(answer)
            .await
            .expect("set remote");
        let t0 = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.state.recv()).await {
                Ok(Some(RTCPeerConnectionState::Connected)) => break,
                Ok(Some(RTCPeerConnectionState::Failed)) => panic!("connection failed"),
                Ok(Some(_)) => {}
                _ => panic!("not connected after {:?}", t0.elapsed()),
            }
        }
        // Collect data-channel events from here on.
        let dc = self.dc.clone();
        let received = self.received.clone();
        let (otx, mut orx) = mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                match ev {
                    DataChannelEvent::OnOpen => {
                        received.lock().unwrap().open = true;
                        let _ = otx.try_send(());
                    }
                    DataChannelEvent::OnMessage(m) => {
                        if let Ok(v) = serde_json::from_slice(&m.data) {
                            received.lock().unwrap().events.push(v);
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
        if !self.received.lock().unwrap().open {
            let _ = tokio::time::timeout(Duration::from_secs(10), orx.recv()).await;
        }
        assert!(
            self.received.lock().unwrap().open,
            "events channel never opened"
        );
    }

    /// Sends `samples` (48 kHz mono) as 20 ms Opus frames at real-time pace, then `silence`.
    pub async fn speak(&self, samples: &[f32], silence: Duration) {
        let mut enc =
            Encoder::new(OpusRate::Hz48000, Channels::Mono, Application::Voip).expect("enc");
        if let Some(pct) = self.fec_loss_pct {
            enc.set_inband_fec(true).expect("fec");
            enc.set_packet_loss_perc(pct).expect("loss perc");
        }
        let mut buf = vec![0u8; 1500];
        let pad = (silence.as_millis() as usize / 20) * 960;
        let mut all = samples.to_vec();
        all.resize(samples.len().div_ceil(960) * 960 + pad, 0.0);
        let t0 = tokio::time::Instant::now();
        let mut previous: Vec<u8> = Vec::new();
        for (i, frame) in all.chunks(960).enumerate() {
            tokio::time::sleep_until(t0 + Duration::from_millis(20 * i as u64)).await;
            let n = enc.encode_float(frame, &mut buf).expect("encode");
            let (data, pt) = match self.red_pt {
                None => (bytes::Bytes::copy_from_slice(&buf[..n]), 111),
                Some(pt) => {
                    use vr_transport::red::{build, RedundantBlock};
                    let block = RedundantBlock {
                        payload_type: 111,
                        timestamp_offset: 960,
                        payload: &previous,
                    };
                    let red = build(&[block], 111, &buf[..n]).expect("red payload");
                    previous = buf[..n].to_vec();
                    (bytes::Bytes::from(red), pt)
                }
            };
            let sample = rtc::media::Sample {
                data,
                duration: Duration::from_millis(20),
                ..rtc::media::Sample::new(Instant::now())
            };
            let _ = self
                .track
                .sample_writer(self.ssrc, pt)
                .write_sample(&sample)
                .await;
        }
    }

    pub async fn send_json(&self, v: serde_json::Value) {
        self.dc.send_text(&v.to_string()).await.expect("dc send");
    }

    /// Waits until `done(received)` holds; panics with what arrived after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&Received) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if done(&self.received.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = self.received.lock().unwrap();
        panic!(
            "timed out after {timeout:?} waiting for {what}; events: {:#?}",
            r.events
        );
    }
}

impl Client {
    /// Films `picture` (RGBx, `width`×`height`) at up to `fps`: GStreamer's VP8 encoder
    /// (real-time settings, 500 kbit/s), packetised by the track, until [`Camera::stop`]. The
    /// returned handle lowers the rate (`max_fps`, as a browser obeys a `video_rate` request) and
    /// sets the picture moving (`moving`: each frame rolled 8 pixels further to the left).
    pub fn spawn_camera(&self, picture: Vec<u8>, width: u32, height: u32, fps: u32) -> Camera {
        let (track, ssrc) = self.camera.clone().expect("a client with a camera");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let max_fps = Arc::new(std::sync::atomic::AtomicU32::new(fps));
        let moving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::spawn({
            let (stop, max_fps, moving) = (stop.clone(), max_fps.clone(), moving.clone());
            move || {
                use std::sync::atomic::Ordering::Relaxed;
                let mut enc = vr_capture::video_codec::Encoder::start(
                    vr_capture::video_codec::Codec::Vp8,
                    width,
                    height,
                    fps,
                    500_000,
                )
                .expect("vp8enc");
                let row = (width * 4) as usize;
                let mut rolled = picture.clone();
                let mut due = Instant::now();
                let mut sent = 0u64;
                for n in 0usize.. {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let frame_time = Duration::from_micros(
                        1_000_000 / u64::from(max_fps.load(Relaxed).clamp(1, fps)),
                    );
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    due += frame_time;
                    let shown = if moving.load(Relaxed) {
                        let by = (n * 8 * 4) % row;
                        for (dst, src) in
                            rolled.chunks_exact_mut(row).zip(picture.chunks_exact(row))
                        {
                            dst[..row - by].copy_from_slice(&src[by..]);
                            dst[row - by..].copy_from_slice(&src[..by]);
                        }
                        &rolled
                    } else {
                        &picture
                    };
                    let Some(e) = enc.encode(shown, false).expect("encode") else {
                        continue;
                    };
                    let sample = rtc::media::Sample {
                        data: bytes::Bytes::from(e.data),
                        duration: frame_time,
                        ..rtc::media::Sample::new(Instant::now())
                    };
                    if rt
                        .block_on(track.sample_writer(ssrc, VP8_PT).write_sample(&sample))
                        .is_ok()
                    {
                        sent += 1;
                    }
                }
                sent
            }
        });
        Camera {
            stop,
            max_fps,
            moving,
            thread,
        }
    }

    /// Keeps the microphone "open" with 20 ms silence frames (as a real one would) until the
    /// returned task is aborted.
    pub fn spawn_silence(&self) -> tokio::task::JoinHandle<()> {
        let track = self.track.clone();
        let ssrc = self.ssrc;
        tokio::spawn(async move {
            let enc =
                Encoder::new(OpusRate::Hz48000, Channels::Mono, Application::Voip).expect("enc");
            let mut buf = vec![0u8; 1500];
            let frame = vec![0f32; 960];
            let t0 = tokio::time::Instant::now();
            for i in 0u64.. {
                tokio::time::sleep_until(t0 + Duration::from_millis(20 * i)).await;
                let Ok(n) = enc.encode_float(&frame, &mut buf) else {
                    return;
                };
                let sample = rtc::media::Sample {
                    data: bytes::Bytes::copy_from_slice(&buf[..n]),
                    duration: Duration::from_millis(20),
                    ..rtc::media::Sample::new(Instant::now())
                };
                let _ = track.sample_writer(ssrc, 111).write_sample(&sample).await;
            }
        })
    }
}

/// A running [`Client::spawn_camera`].
pub struct Camera {
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Frames per second at most (the camera's own rate caps it).
    pub max_fps: Arc<std::sync::atomic::AtomicU32>,
    pub moving: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Camera {
    /// Stops filming; the number of frames sent.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("camera thread")
    }
}
