//! Sessions: building a peer connection from an offer, the registry with admission control, and
//! the supervisor task that owns each session's lifetime.

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use vr_audio::{audio_ring, AudioFormat};
use vr_core::SampleRate;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription, Registry as InterceptorRegistry,
    SettingEngineBuilder,
};

use crate::config::TransportConfig;
use crate::events::{run_events, Activity, ChannelMsg, EventSender, EVENT_QUEUE};
use crate::media::{run_media_in, run_pacer, OutTrack};
use crate::opus::{EncoderSettings, OpusEncoder};
use crate::output::output_queue;
use crate::pipeline::{Pipeline, PipelineControl, SessionIo};
use crate::video::{abs_send_time_id, run_video_in, VideoOut, VideoParams, ABS_SEND_TIME_URI};
use crate::TransportError;

/// Dynamic payload type Opus is registered with (what browsers use; the answer follows the
/// offer's number anyway).
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type RED (RFC 2198) over Opus is registered with: Chrome's number.
const RED_PAYLOAD_TYPE: u8 = 63;
/// Payload types VP8 and H.264 are registered with (the answer follows the offer's numbers).
const VP8_PAYLOAD_TYPE: u8 = 96;
const H264_PAYLOAD_TYPE: u8 = 102;
/// How long teardown waits for the peer connection to close and the conversation to end.
const TEARDOWN_STEP: Duration = Duration::from_secs(2);

/// Why a session ended (the `reason` label of `transport_sessions_ended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Deleted,
    Failed,
    Disconnected,
    ConnectTimeout,
    PipelineEnded,
    Shutdown,
    Idle,
}

impl EndReason {
    fn label(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Failed => "ice_failed",
            EndReason::Disconnected => "disconnected",
            EndReason::ConnectTimeout => "connect_timeout",
            EndReason::PipelineEnded => "pipeline_ended",
            EndReason::Shutdown => "shutdown",
            EndReason::Idle => "idle",
        }
    }
}

/// The part of a session other tasks and HTTP handlers see.
pub(crate) struct SessionHandle {
    pub id: String,
    pub created: Instant,
    state: Mutex<RTCPeerConnectionState>,
    close: watch::Sender<Option<EndReason>>,
    closed: watch::Sender<bool>,
    /// The secret a client presents to resume this session (`VoiceRelay-Resume-Token`).
    resume_token: String,
    /// A resumed client's new connection, for the supervisor to take over.
    resume: mpsc::Sender<Connection>,
    /// The connection is gone and the conversation waits to be resumed.
    parked: AtomicBool,
}

impl SessionHandle {
    /// Asks the supervisor to end the session (the first reason wins).
    pub fn request_close(&self, reason: EndReason) {
        self.close.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once teardown has finished.
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn state(&self) -> String {
        lock(&self.state).to_string()
    }

    pub fn parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    pub fn resume_token(&self) -> &str {
        &self.resume_token
    }

    /// Whether `token` is this session's resume token (compared in constant time).
    pub fn resume_token_matches(&self, token: &str) -> bool {
        crate::server::constant_time_eq(token.as_bytes(), self.resume_token.as_bytes())
    }

    /// Hands a resumed client's connection to the session. `Err` gives it back when the session
    /// is ending or another resume is being taken over.
    pub fn resume(&self, conn: Connection) -> Result<(), Connection> {
        self.resume.try_send(conn).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct RegistryInner {
    sessions: HashMap<String, Arc<SessionHandle>>,
    /// Offers being answered: they hold a slot before they are sessions.
    pending: usize,
    /// Sessions waiting to be resumed: they hold their slot but have no connection.
    parked: usize,
}

impl RegistryInner {
    fn publish(&self) {
        metrics::gauge!("transport_sessions_active")
            .set(self.sessions.len().saturating_sub(self.parked) as f64);
        metrics::gauge!("transport_sessions_parked").set(self.parked as f64);
    }
}

/// All live sessions, with admission control.
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
    max: usize,
}

/// A reserved admission slot; released on drop unless it became a session.
pub(crate) struct Slot<'a> {
    registry: &'a Registry,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.registry.inner).pending -= 1;
        }
    }
}

impl Registry {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(RegistryInner::default()),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn reserve(&self) -> Option<Slot<'_>> {
        let mut g = lock(&self.inner);
        if g.sessions.len() + g.pending >= self.max {
            return None;
        }
        g.pending += 1;
        Some(Slot {
            registry: self,
            armed: true,
        })
    }

    fn commit(&self, mut slot: Slot<'_>, s: Arc<SessionHandle>) {
        slot.armed = false;
        let mut g = lock(&self.inner);
        g.pending -= 1;
        g.sessions.insert(s.id.clone(), s);
        g.publish();
    }

    fn remove(&self, id: &str) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.sessions.remove(id) {
            if s.parked.swap(false, Ordering::AcqRel) {
                g.parked -= 1;
            }
        }
        g.publish();
    }

    /// Marks a session as waiting to be resumed (`true`) or connected again.
    fn set_parked(&self, s: &SessionHandle, parked: bool) {
        let mut g = lock(&self.inner);
        if s.parked.swap(parked, Ordering::AcqRel) != parked {
            if parked {
                g.parked += 1;
            } else {
                g.parked -= 1;
            }
        }
        g.publish();
    }

    pub fn get(&self, id: &str) -> Option<Arc<SessionHandle>> {
        lock(&self.inner).sessions.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        lock(&self.inner).sessions.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).sessions.len()
    }
}

enum PcEvent {
    State(RTCPeerConnectionState),
    /// A remote track and whether it is video.
    Track(Arc<dyn TrackRemote>, bool),
    DataChannel(Arc<dyn DataChannel>),
}

/// A peer connection's callbacks. The connection owns it, so its drop says the connection's
/// memory went too: `transport_peer_connections_alive` counts the handlers not yet dropped.
struct Handler {
    events: mpsc::Sender<PcEvent>,
    gathered: mpsc::Sender<()>,
}

impl Handler {
    fn new(events: mpsc::Sender<PcEvent>, gathered: mpsc::Sender<()>) -> Self {
        metrics::gauge!("transport_peer_connections_alive").increment(1.0);
        Self { events, gathered }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        metrics::gauge!("transport_peer_connections_alive").decrement(1.0);
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::State(s)).await;
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let video = track.kind().await == RtpCodecKind::Video;
        let _ = self.events.send(PcEvent::Track(track, video)).await;
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.events.send(PcEvent::DataChannel(dc)).await;
    }
}

/// Why an offer was refused: the client's fault (4xx) or ours (5xx).
#[derive(Debug)]
pub(crate) enum OfferError {
    Rejected(String),
    Internal(String),
}

impl From<TransportError> for OfferError {
    fn from(e: TransportError) -> Self {
        OfferError::Internal(e.to_string())
    }
}

/// Which m-sections an SDP has: (audio with a usable port, any audio, data channel).
pub(crate) fn media_sections(desc: &RTCSessionDescription) -> Result<(bool, bool, bool), String> {
    let parsed = desc.unmarshal().map_err(|e| e.to_string())?;
    let mut live_audio = false;
    let mut audio = false;
    let mut data = false;
    for m in &parsed.media_descriptions {
        match m.media_name.media.as_str() {
            "audio" => {
                audio = true;
                live_audio |= m.media_name.port.value != 0;
            }
            "application" => data = true,
            _ => {}
        }
    }
    Ok((live_audio, audio, data))
}

pub(crate) struct Created {
    pub id: String,
    pub answer_sdp: String,
    pub resume_token: String,
}

/// One peer connection of a session. A session has one at a time; a resumed session gets a new
/// one for the same conversation.
pub(crate) struct Connection {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Receiver<PcEvent>,
    out: OutTrack,
    video: VideoParams,
    /// RED's payload type when the answer accepted it (the incoming audio may then be RED).
    red_pt: Option<u8>,
}

impl Connection {
    /// Closes a connection that no session took.
    pub async fn discard(self) {
        let _ = tokio::time::timeout(TEARDOWN_STEP, self.pc.close()).await;
    }
}

/// Answers `offer`, starts the session's conversation and tasks, and registers it.
pub(crate) async fn create_session(
    cfg: &TransportConfig,
    registry: Arc<Registry>,
    pipeline: Arc<dyn Pipeline>,
    slot: Slot<'_>,
    offer: RTCSessionDescription,
) -> Result<Created, OfferError> {
    let t0 = Instant::now();
    let prepared = prepare(cfg, pipeline).await?;
    let conversation_ms = t0.elapsed().as_millis() as u64;
    match answer_offer(cfg, offer).await {
        Ok((conn, answer_sdp)) => {
            let (id, resume_token) = start(cfg, registry, prepared, slot, conn);
            let ready_ms = t0.elapsed().as_millis() as u64;
            metrics::histogram!("transport_session_start_ms").record(ready_ms as f64);
            tracing::info!(
                session = %id,
                conversation_ms,
                answer_ms = ready_ms - conversation_ms,
                "session ready in {ready_ms} ms"
            );
            Ok(Created {
                id,
                answer_sdp,
                resume_token,
            })
        }
        Err(e) => {
            prepared.abandon();
            Err(e)
        }
    }
}

/// Builds the peer connection and answers `offer` (after ICE gathering).
pub(crate) async fn answer_offer(
    cfg: &TransportConfig,
    offer: RTCSessionDescription,
) -> Result<(Connection, String), OfferError> {
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .map_err(TransportError::webrtc("register opus"))?;
    if cfg.red {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: crate::red::rtp_codec(OPUS_PAYLOAD_TYPE),
                    payload_type: RED_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(TransportError::webrtc("register red"))?;
    }
    if cfg.video.enabled {
        register_video(&mut media)?;
    }
    let interceptors = register_default_interceptors(InterceptorRegistry::new(), &mut media)
        .map_err(TransportError::webrtc("interceptors"))?;
    let ms = Duration::from_millis;
    let settings = SettingEngineBuilder::default()
        .with_ice_timeouts(
            Some(ms(cfg.ice_disconnected_timeout_ms)),
            Some(ms(cfg.ice_failed_timeout_ms)),
            Some(ms(cfg.ice_keepalive_ms)),
        )
        // Host candidates are plain addresses: mDNS needs a multicast route that a loopback-only
        // namespace (the tests) or a container may not have.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let ice_servers = cfg
        .ice_servers_at(crate::server::unix_now_s())
        .into_iter()
        .map(|s| RTCIceServer {
            urls: s.urls,
            username: s.username,
            credential: s.credential,
        })
        .collect();
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let (gather_tx, mut gather_rx) = mpsc::channel(1);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::default()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(interceptors)
        .with_handler(Arc::new(Handler::new(ev_tx, gather_tx)))
        .with_udp_addrs(cfg.udp_addrs.clone())
        .build()
        .await
        .map_err(TransportError::webrtc("peer connection"))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    match answer(cfg, &pc, offer, &mut gather_rx).await {
        Ok((track, ssrc, payload_type, answer_sdp, abs_id)) => Ok((
            Connection {
                pc,
                events: ev_rx,
                red_pt: crate::red::payload_type_in_sdp(&answer_sdp),
                out: OutTrack {
                    track,
                    ssrc,
                    payload_type,
                },
                video: VideoParams {
                    config: cfg.video.clone(),
                    abs_send_time_id: abs_id,
                    sender_ssrc: ssrc,
                },
            },
            answer_sdp,
        )),
        Err(e) => {
            let _ = tokio::time::timeout(TEARDOWN_STEP, pc.close()).await;
            Err(e)
        }
    }
}

/// VP8 and H.264 (receive only; decoded by the pipeline's decoder, [`crate::video`]), REMB
/// feedback, and the abs-send-time extension the estimator needs. H.264 is the Constrained
/// Baseline, packetization-mode 1 entry every browser offers: mode 1 is what lets the sender use
/// FU-A and STAP-A, which [`crate::h264`] depacketises (mode 0 would allow single NAL unit
/// packets only, so no NAL unit larger than the MTU). webrtc-rs matches H.264 on its fmtp, so
/// other profiles are not accepted.
/// The default interceptors registered after this add NACK, PLI and transport-wide CC feedback.
fn register_video(media: &mut MediaEngine) -> Result<(), TransportError> {
    let feedback = vec![RTCPFeedback {
        typ: "goog-remb".to_owned(),
        parameter: String::new(),
    }];
    for (mime, pt, fmtp) in [
        (MIME_TYPE_VP8, VP8_PAYLOAD_TYPE, ""),
        (
            MIME_TYPE_H264,
            H264_PAYLOAD_TYPE,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
    ] {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: mime.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: fmtp.to_owned(),
                        rtcp_feedback: feedback.clone(),
                    },
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )
            .map_err(TransportError::webrtc("register video codec"))?;
    }
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: ABS_SEND_TIME_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(TransportError::webrtc("register abs-send-time"))?;
    Ok(())
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

async fn answer(
    cfg: &TransportConfig,
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    gathered: &mut mpsc::Receiver<()>,
) -> Result<(Arc<TrackLocalStaticSample>, u32, u8, String, Option<u8>), OfferError> {
    let ssrc: u32 = rand::random();
    let track = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "voicerelay".to_owned(),
                "assistant-audio".to_owned(),
                "assistant".to_owned(),
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
        .map_err(TransportError::webrtc("outgoing track"))?,
    );
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(TransportError::webrtc("add track"))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| OfferError::Rejected(format!("offer not accepted: {e}")))?;
    let ans = pc
        .create_answer(None)
        .await
        .map_err(|e| OfferError::Rejected(format!("cannot answer the offer: {e}")))?;
    pc.set_local_description(ans)
        .await
        .map_err(TransportError::webrtc("set local description"))?;
    if tokio::time::timeout(cfg.gather_timeout(), gathered.recv())
        .await
        .is_err()
    {
        tracing::debug!("ICE gathering not complete in time; answering with what there is");
    }
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| OfferError::Internal("no local description after answering".into()))?;
    let (live_audio, _, _) = media_sections(&local).map_err(OfferError::Internal)?;
    if !live_audio {
        return Err(OfferError::Rejected(
            "the offer's audio section has no codec in common with the server (Opus/48000/2 is required)"
                .into(),
        ));
    }
    let pt = sender
        .get_parameters()
        .await
        .ok()
        .and_then(|p| {
            p.rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS))
                .map(|c| c.payload_type)
        })
        .unwrap_or(OPUS_PAYLOAD_TYPE);
    let abs_id = abs_send_time_id(&local);
    Ok((track, ssrc, pt, local.sdp, abs_id))
}

/// A started conversation and the session ends it will be connected to.
pub(crate) struct Prepared {
    id: String,
    producer: vr_audio::AudioProducer,
    pacer: crate::output::Pacer,
    events: EventSender,
    event_rx: mpsc::Receiver<String>,
    run: crate::pipeline::PipelineRun,
    /// Where the first video track's decoded frames go, and who can decode them.
    video_out: Option<VideoOut>,
}

impl Prepared {
    /// Ends a conversation whose session never came to be.
    fn abandon(self) {
        self.run.control.stop();
        drop(self.producer);
        tokio::spawn(async move {
            let _ = self.run.done.await;
            metrics::gauge!("transport_pipelines_running").decrement(1.0);
        });
    }
}

/// Starts the session's conversation. Done before the peer connection exists, so the
/// conversation is already reading the input ring when the first packet can arrive: nothing the
/// client says is dropped or left waiting for a pipeline still starting (the ring holds
/// `input_ring_ms` should the conversation fall behind). With the weights shared this takes
/// milliseconds; a slow pipeline here delays the answer, never the ICE checks after it.
async fn prepare(
    cfg: &TransportConfig,
    pipeline: Arc<dyn Pipeline>,
) -> Result<Prepared, OfferError> {
    let id = match cfg.worker_id.as_str() {
        "" => format!("{:032x}", rand::random::<u128>()),
        w => format!("{w}-{:032x}", rand::random::<u128>()),
    };
    let ring_frames = SampleRate::PIPELINE.samples_in(Duration::from_millis(cfg.input_ring_ms));
    let (producer, consumer) = audio_ring("webrtc-in", AudioFormat::PIPELINE, ring_frames as usize)
        .map_err(TransportError::from)?;
    let encoder = OpusEncoder::new(EncoderSettings {
        bitrate: cfg.opus_bitrate,
        complexity: cfg.opus_complexity,
        fec: cfg.opus_fec,
        expected_loss_percent: cfg.opus_expected_loss_percent,
    })?;
    let (output, pacer) = output_queue(Duration::from_millis(cfg.output_queue_ms), encoder);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let events = EventSender::new(event_tx);
    // The slots grow to the first picture's size and keep it.
    let (video_tx, video_rx) = if cfg.video.enabled {
        let (tx, rx) = vr_audio::video::video_ring(0);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let io = SessionIo {
        session_id: id.clone(),
        input: consumer,
        output,
        events: events.clone(),
        video: video_rx,
    };
    let decoders = pipeline.clone();
    // Blocking work (model loading), off the runtime's workers.
    let run = tokio::task::spawn_blocking(move || pipeline.start(io))
        .await
        .map_err(|e| OfferError::Internal(format!("conversation start panicked: {e}")))?
        .map_err(|e| OfferError::Internal(format!("cannot start the conversation: {e}")))?;
    metrics::gauge!("transport_pipelines_running").increment(1.0);
    Ok(Prepared {
        id,
        producer,
        pacer,
        events,
        event_rx,
        run,
        video_out: video_tx.map(|frames| VideoOut { frames, decoders }),
    })
}

/// Registers the session and starts its supervisor on its first connection; its id and resume
/// token.
fn start(
    cfg: &TransportConfig,
    registry: Arc<Registry>,
    prepared: Prepared,
    slot: Slot<'_>,
    conn: Connection,
) -> (String, String) {
    let Prepared {
        id,
        producer,
        pacer,
        events,
        event_rx,
        run,
        video_out,
    } = prepared;
    let (close_tx, close_rx) = watch::channel(None);
    let (closed_tx, _) = watch::channel(false);
    let (resume_tx, resume_rx) = mpsc::channel(1);
    let resume_token = format!("{:032x}", rand::random::<u128>());
    let handle = Arc::new(SessionHandle {
        id: id.clone(),
        created: Instant::now(),
        state: Mutex::new(RTCPeerConnectionState::New),
        close: close_tx,
        closed: closed_tx,
        resume_token: resume_token.clone(),
        resume: resume_tx,
        parked: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (out_tx, out_rx) = watch::channel(None);
    let (dc_tx, dc_rx) = mpsc::channel(4);
    let activity = Arc::new(Activity::new(Instant::now()));
    tokio::spawn({
        let stop = stop_rx.clone();
        async move {
            if let Err(e) = run_pacer(pacer, out_rx, stop).await {
                tracing::warn!(error = %e, "outgoing audio stopped");
            }
        }
    });
    let events_task = tokio::spawn(run_events(
        event_rx,
        dc_rx,
        run.control.clone(),
        events.clone(),
        cfg.event_limits(),
        activity.clone(),
    ));
    let sup = Supervisor {
        handle: handle.clone(),
        registry: registry.clone(),
        control: run.control,
        done: run.done,
        producer: Some(producer),
        jitter: cfg.jitter(),
        video_out,
        connect_timeout: cfg.connect_timeout(),
        disconnect_grace: cfg.disconnect_grace(),
        resume_window: cfg.resume_window(),
        idle_timeout: cfg.idle_timeout(),
        activity,
        stop_tx,
        out_tx,
        dc_tx,
        events_task,
        events,
        resume_rx,
        pipeline_result: None,
    };
    registry.commit(slot, handle);
    metrics::counter!("transport_sessions_started_total").increment(1);
    tokio::spawn(sup.run(conn, close_rx));
    tracing::info!(session = %id, "session started");
    (id, resume_token)
}

/// How one connection of a session ended.
enum ConnectionEnd {
    /// The session ends (deleted, shut down, its conversation ended, or never connected).
    Session(EndReason),
    /// The client went away: the session may wait for it to resume.
    Lost(EndReason),
    /// The client resumed on a new connection while this one was still up.
    Replaced(Connection),
}

struct Supervisor {
    handle: Arc<SessionHandle>,
    registry: Arc<Registry>,
    control: Arc<dyn PipelineControl>,
    done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    /// The input ring's writer: lent to each connection's media task and given back when the
    /// connection ends; dropping it ends the conversation's input.
    producer: Option<vr_audio::AudioProducer>,
    jitter: Duration,
    /// Taken by the first video track: only one is decoded, and only on the first connection
    /// (the decoder's timeline is that stream's).
    video_out: Option<VideoOut>,
    connect_timeout: Duration,
    disconnect_grace: Duration,
    resume_window: Duration,
    idle_timeout: Option<Duration>,
    /// When the user last did something (kept by the events task).
    activity: Arc<Activity>,
    /// Ends the session's own tasks (the pacer).
    stop_tx: watch::Sender<bool>,
    /// The current connection's outgoing track, `None` while there is no connection.
    out_tx: watch::Sender<Option<OutTrack>>,
    dc_tx: mpsc::Sender<ChannelMsg>,
    events_task: tokio::task::JoinHandle<()>,
    /// For the `resumed` event.
    events: EventSender,
    resume_rx: mpsc::Receiver<Connection>,
    pipeline_result: Option<Result<(), String>>,
}

impl Supervisor {
    async fn run(mut self, first: Connection, mut close: watch::Receiver<Option<EndReason>>) {
        let mut conn = first;
        let mut ever_connected = false;
        let reason = loop {
            let (end, connected) = self.serve(conn, &mut close).await;
            ever_connected |= connected;
            conn = match end {
                ConnectionEnd::Session(r) => break r,
                ConnectionEnd::Replaced(next) => next,
                ConnectionEnd::Lost(r) if !ever_connected || self.resume_window.is_zero() => {
                    break r
                }
                ConnectionEnd::Lost(r) => match self.park(r, &mut close).await {
                    Ok(next) => next,
                    Err(r) => break r,
                },
            };
            metrics::counter!("transport_sessions_resumed_total").increment(1);
            tracing::info!(session = %self.handle.id, "session resumed on a new connection");
            self.events
                .send(&serde_json::json!({"type": "resumed", "session": self.handle.id}));
        };
        self.teardown(reason).await;
    }

    /// Runs one connection until it ends, then frees it (peer connection and media tasks); the
    /// conversation, its input ring and its output queue stay. Also says whether it connected.
    async fn serve(
        &mut self,
        conn: Connection,
        close: &mut watch::Receiver<Option<EndReason>>,
    ) -> (ConnectionEnd, bool) {
        let Connection {
            pc,
            events: mut pc_events,
            out,
            video,
            red_pt,
        } = conn;
        let started = Instant::now();
        let mut connected = false;
        let mut disconnected_since: Option<Instant> = None;
        let mut media_in = None;
        let mut video_in = Vec::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let end = loop {
            let deadline = match (connected, disconnected_since) {
                (false, _) => Some(started + self.connect_timeout),
                (true, Some(t)) => Some(t + self.disconnect_grace),
                (true, None) => None,
            };
            // Counted from the later of the connection's start and the user's last activity: a
            // resumed connection gets the whole timeout.
            let idle_deadline = self
                .idle_timeout
                .filter(|_| connected)
                .map(|t| self.activity.last().max(started) + t);
            tokio::select! {
                ev = pc_events.recv() => match ev {
                    Some(PcEvent::State(s)) => {
                        *lock(&self.handle.state) = s;
                        tracing::debug!(session = %self.handle.id, state = %s, "connection state");
                        match s {
                            RTCPeerConnectionState::Connected => {
                                connected = true;
                                disconnected_since = None;
                                self.out_tx.send_replace(Some(out.clone()));
                            }
                            RTCPeerConnectionState::Disconnected => {
                                disconnected_since.get_or_insert_with(Instant::now);
                            }
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                                break ConnectionEnd::Lost(EndReason::Failed);
                            }
                            _ => {}
                        }
                    }
                    Some(PcEvent::Track(track, true)) => {
                        let stop = stop_rx.clone();
                        let params = video.clone();
                        let session = self.handle.id.clone();
                        let out = self.video_out.take();
                        tracing::info!(session = %session, decoded = out.is_some(), "incoming video track");
                        video_in.push(tokio::spawn(async move {
                            if let Err(e) = run_video_in(track, params, out, stop).await {
                                tracing::warn!(session = %session, error = %e, "incoming video stopped");
                            }
                        }));
                    }
                    Some(PcEvent::Track(track, false)) => {
                        if let Some(mut producer) = self.producer.take() {
                            let stop = stop_rx.clone();
                            let jitter = self.jitter;
                            media_in = Some(tokio::spawn(async move {
                                if let Err(e) = run_media_in(track, &mut producer, jitter, red_pt, stop).await {
                                    tracing::warn!(error = %e, "incoming audio stopped");
                                }
                                producer
                            }));
                        } else {
                            tracing::debug!("ignoring a second incoming audio track");
                        }
                    }
                    Some(PcEvent::DataChannel(dc)) => {
                        let _ = self.dc_tx.try_send(ChannelMsg::Opened(dc));
                    }
                    None => break ConnectionEnd::Lost(EndReason::Failed),
                },
                _ = sleep_until_opt(deadline) => {
                    break if connected {
                        ConnectionEnd::Lost(EndReason::Disconnected)
                    } else {
                        ConnectionEnd::Lost(EndReason::ConnectTimeout)
                    };
                }
                _ = sleep_until_opt(idle_deadline) => {
                    // Activity since the deadline was set moves it on the next turn.
                    if let Some(t) = self.idle_timeout {
                        if self.activity.last().max(started) + t <= Instant::now() {
                            break ConnectionEnd::Session(EndReason::Idle);
                        }
                    }
                }
                next = self.resume_rx.recv() => {
                    match next {
                        Some(next) => break ConnectionEnd::Replaced(next),
                        None => break ConnectionEnd::Session(EndReason::Shutdown),
                    }
                }
                r = close.wait_for(|r| r.is_some()) => {
                    break ConnectionEnd::Session(r.ok().and_then(|r| *r).unwrap_or(EndReason::Shutdown));
                }
                r = &mut self.done => {
                    let r = r.unwrap_or_else(|_| Err("conversation thread vanished".into()));
                    self.pipeline_result = Some(r);
                    break ConnectionEnd::Session(EndReason::PipelineEnded);
                }
            }
        };
        if let (ConnectionEnd::Session(EndReason::Idle), Some(t)) = (&end, self.idle_timeout) {
            tracing::info!(session = %self.handle.id, idle_ms = t.as_millis() as u64, "session idle");
            self.events.error(format!(
                "idle: nothing from you for {} s, so the session is closed \
                 (transport.idle_timeout_ms)",
                t.as_secs()
            ));
            // The notice goes out before the channel is detached below.
            self.events.drained(TEARDOWN_STEP).await;
        }
        self.out_tx.send_replace(None);
        let _ = self.dc_tx.send(ChannelMsg::Detach).await;
        let _ = stop_tx.send(true);
        if let Some(t) = media_in {
            match tokio::time::timeout(TEARDOWN_STEP, t).await {
                Ok(Ok(producer)) => self.producer = Some(producer),
                // Its producer drops with it, which closes the input ring: the conversation ends
                // and the session with it.
                _ => {
                    tracing::warn!(session = %self.handle.id, "incoming audio did not stop in time")
                }
            }
        }
        for t in video_in {
            let _ = tokio::time::timeout(TEARDOWN_STEP, t).await;
        }
        if tokio::time::timeout(TEARDOWN_STEP, pc.close())
            .await
            .is_err()
        {
            tracing::warn!(session = %self.handle.id, "peer connection did not close in time");
        }
        (end, connected)
    }

    /// The client is gone: the conversation waits up to the resume window for it to come back on
    /// a new connection (`Ok`), or the session ends (`Err` with why).
    async fn park(
        &mut self,
        lost: EndReason,
        close: &mut watch::Receiver<Option<EndReason>>,
    ) -> Result<Connection, EndReason> {
        self.registry.set_parked(&self.handle, true);
        tracing::info!(
            session = %self.handle.id,
            reason = lost.label(),
            window_ms = self.resume_window.as_millis() as u64,
            "connection lost; the conversation waits to be resumed"
        );
        let deadline = Instant::now() + self.resume_window;
        let r = tokio::select! {
            next = self.resume_rx.recv() => next.ok_or(lost),
            _ = tokio::time::sleep_until(deadline.into()) => Err(lost),
            r = close.wait_for(|r| r.is_some()) => {
                Err(r.ok().and_then(|r| *r).unwrap_or(EndReason::Shutdown))
            }
            r = &mut self.done => {
                let r = r.unwrap_or_else(|_| Err("conversation thread vanished".into()));
                self.pipeline_result = Some(r);
                Err(EndReason::PipelineEnded)
            }
        };
        self.registry.set_parked(&self.handle, false);
        r
    }

    async fn teardown(mut self, reason: EndReason) {
        let id = self.handle.id.clone();
        tracing::info!(session = %id, reason = reason.label(), "session ending");
        // Out of the registry first: admission and /metrics see the slot free at once.
        self.registry.remove(&id);
        // A resume that arrived meanwhile gets its connection closed, not leaked.
        self.resume_rx.close();
        while let Ok(c) = self.resume_rx.try_recv() {
            c.discard().await;
        }
        let _ = self.stop_tx.send(true);
        self.control.stop();
        // The input ring closes when its producer goes: the conversation drains it and ends.
        drop(self.producer.take());
        let result = match self.pipeline_result.take() {
            Some(r) => Some(r),
            None => tokio::time::timeout(TEARDOWN_STEP, &mut self.done)
                .await
                .ok()
                .map(|r| r.unwrap_or_else(|_| Err("conversation thread vanished".into()))),
        };
        match result {
            Some(r) => {
                metrics::gauge!("transport_pipelines_running").decrement(1.0);
                if let Err(e) = r {
                    tracing::warn!(session = %id, error = %e, "conversation ended with an error");
                }
            }
            None => {
                // Counted as running until its thread really ends.
                tracing::warn!(session = %id, "conversation did not stop in time");
                let done = self.done;
                tokio::spawn(async move {
                    let _ = done.await;
                    metrics::gauge!("transport_pipelines_running").decrement(1.0);
                });
            }
        }
        self.events_task.abort();
        metrics::counter!("transport_sessions_ended_total", "reason" => reason.label())
            .increment(1);
        metrics::histogram!("transport_session_duration_seconds")
            .record(self.handle.created.elapsed().as_secs_f64());
        let _ = self.handle.closed.send(true);
        tracing::info!(session = %id, reason = reason.label(), "session freed");
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
