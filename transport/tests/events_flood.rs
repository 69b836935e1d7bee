//! A typed-turn flood on the `events` data channel, against the real server and session code in
//! this process and a real webrtc-rs client over loopback: the client sends 50 `text` messages
//! as fast as it can; the conversation (a recording stand-in) receives at most
//! `burst + rate × elapsed` of them, the rest are dropped and counted in
//! `transport_events_rate_limited_total`, the client gets an `error` event mentioning the rate
//! limit (one per dropped burst), and an `interrupt` sent right after is still handled.

mod common;

use common::{counter, opus_codec, post_offer, start_server_config, Handler};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot};
use voicerelay_transport as vr_transport;
use vr_transport::config::TransportConfig;
use vr_transport::pipeline::{Pipeline, PipelineControl, PipelineRun, SessionIo};
use vr_transport::{EventSender, TransportError};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

// ---------------------------------------------------------------------------------------------
// A conversation that records what the client asked of it and acknowledges interrupts with an
// event of its own.

#[derive(Default)]
struct Seen {
    texts: AtomicU64,
    interrupts: AtomicU64,
}

struct RecordingControl {
    seen: Arc<Seen>,
    events: EventSender,
    done: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
    _io: Mutex<SessionIo>,
}

impl PipelineControl for RecordingControl {
    fn interrupt(&self) {
        let n = self.seen.interrupts.fetch_add(1, Ordering::SeqCst) + 1;
        self.events
            .send(&serde_json::json!({"type": "interrupted", "count": n}));
    }
    fn send_text(&self, _text: String) {
        self.seen.texts.fetch_add(1, Ordering::SeqCst);
    }
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

struct Recording(Arc<Seen>);

impl Pipeline for Recording {
    fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
        let (tx, rx) = oneshot::channel();
        Ok(PipelineRun {
            control: Arc::new(RecordingControl {
                seen: self.0.clone(),
                events: io.events.clone(),
                done: Mutex::new(Some(tx)),
                _io: Mutex::new(io),
            }),
            done: rx,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The client: an Opus track (the offer needs audio) and the `events` data channel.

/// Connects a client to the server on `port`; returns it and its open `events` channel.
async fn connect(port: u16) -> (Arc<dyn PeerConnection>, Arc<dyn DataChannel>) {
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
    let (gtx, mut grx) = mpsc::channel(1);
    let (stx, mut srx) = mpsc::channel(common::STATE_QUEUE);
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
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
    let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "client".to_owned(),
        "client-audio".to_owned(),
        "client".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random()),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )));
    pc.add_track(audio as Arc<dyn TrackLocal>)
        .await
        .expect("add audio");
    let dc = pc
        .create_data_channel("events", None)
        .await
        .expect("data channel");
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local");
    let _ = tokio::time::timeout(Duration::from_secs(3), grx.recv()).await;
    let offer = pc.local_description().await.expect("offer").sdp;
    let (status, answer) = post_offer(port, &offer).await;
    assert_eq!(status, 201, "offer refused: {answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer).expect("answer"))
        .await
        .expect("apply answer");
    loop {
        match tokio::time::timeout(Duration::from_secs(15), srx.recv()).await {
            Ok(Some(RTCPeerConnectionState::Connected)) => break,
            Ok(Some(RTCPeerConnectionState::Failed)) => panic!("connection failed"),
            Ok(Some(_)) => {}
            _ => panic!("not connected in 15 s"),
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), dc.poll()).await {
            Ok(Some(DataChannelEvent::OnOpen)) => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("events channel closed before opening"),
            Err(_) => panic!("events channel not open in 10 s"),
        }
    }
    (pc, dc)
}

/// The next JSON text message on `dc`, within `within`.
async fn next_event(dc: &Arc<dyn DataChannel>, within: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, dc.poll()).await {
            Ok(Some(DataChannelEvent::OnMessage(m))) => {
                return Some(serde_json::from_slice(&m.data).expect("event is JSON"));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_turn_flood_is_rate_limited_and_interrupt_still_works() {
    let cfg = TransportConfig::default();
    let (rate, burst) = (cfg.events_text_per_s, u64::from(cfg.events_text_burst));
    assert_eq!((rate, burst), (2.0, 5), "the defaults this test documents");
    let seen = Arc::new(Seen::default());
    let srv = start_server_config(cfg, Arc::new(Recording(seen.clone()))).await;
    let limited0 = counter("transport_events_rate_limited_total");
    let (pc, dc) = connect(srv.url_port).await;

    const SENT: u64 = 50;
    let t0 = Instant::now();
    for i in 0..SENT {
        dc.send_text(&format!(r#"{{"type":"text","text":"turn {i}"}}"#))
            .await
            .expect("send text");
    }
    dc.send_text(r#"{"type":"interrupt"}"#)
        .await
        .expect("send interrupt");

    // Messages are delivered in order, so once the interrupt is acknowledged every text has been
    // decided on; everything the server said meanwhile is collected.
    let mut errors = Vec::new();
    let mut acked = false;
    while let Some(ev) = next_event(&dc, Duration::from_secs(10)).await {
        match ev["type"].as_str() {
            Some("error") => errors.push(ev["message"].as_str().unwrap_or("").to_owned()),
            Some("interrupted") => {
                acked = true;
                break;
            }
            _ => {}
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(acked, "the interrupt after the flood was not handled");
    let texts = seen.texts.load(Ordering::SeqCst);
    let dropped = counter("transport_events_rate_limited_total") - limited0;
    eprintln!(
        "flood: {SENT} sent, {texts} accepted, {dropped} dropped, {} error events, {elapsed:.3} s",
        errors.len()
    );
    // The server handled every text within `elapsed` of the first, so it can have accepted no
    // more than the burst plus what the rate refilled meanwhile.
    let allowed = burst + (rate * elapsed).floor() as u64;
    assert!(
        (burst..=allowed).contains(&texts),
        "{texts} texts accepted; the limit allows {burst}..={allowed} in {elapsed:.3} s"
    );
    assert_eq!(
        texts + dropped,
        SENT,
        "every text accepted or counted dropped"
    );
    assert!(!errors.is_empty(), "no error event for the dropped texts");
    for e in &errors {
        assert!(e.contains("rate limit"), "{e}");
    }
    // One error per dropped burst: a burst ends only when a text gets through again.
    assert!(
        errors.len() as u64 <= 1 + (texts - burst),
        "{} error events for {texts} accepted texts",
        errors.len()
    );
    assert_eq!(seen.interrupts.load(Ordering::SeqCst), 1);

    // Nothing else comes after the acknowledgement: the interrupt itself cost no error.
    assert!(
        next_event(&dc, Duration::from_millis(300)).await.is_none(),
        "unexpected event after the interrupt"
    );
    // And the session is still alive: a second interrupt is handled too.
    dc.send_text(r#"{"type":"interrupt"}"#)
        .await
        .expect("send interrupt");
    let ev = next_event(&dc, Duration::from_secs(5))
        .await
        .expect("second interrupt acknowledged");
    assert_eq!(ev["type"], "interrupted", "{ev}");
    let _ = pc.close().await;
}
