//! The `events` data channel: conversation events out as JSON text messages (the schema is the
//! dialog crate's `ConversationEvent`, plus the transport's own `session` and `error`), client
//! messages in.
//!
//! Client → server messages (JSON objects with a `type`):
//! - `{"type":"interrupt"}`: stop the assistant now (as if the user had barged in).
//! - `{"type":"text","text":"What time is it?"}`: typed input, a turn without audio.
//! - `{"type":"config", ...settings}`: this session's settings, e.g.
//!   `{"type":"config","voice":"flite"}`; the pipeline applies them or says why not (an `error`
//!   event), see [`PipelineControl::configure`].
//!
//! Client messages are rate limited per session ([`crate::ratelimit`]): typed turns have a
//! bucket of their own (`transport.events_text_*`, default burst 5 then 2/s), `interrupt`,
//! `config` and unparseable messages share another (`transport.events_control_*`, burst 20 then
//! 10/s). A message over the limit is dropped and counted in
//! `transport_events_rate_limited_total{kind}`; the client gets one `error` event (its message
//! says "rate limit") per dropped burst.

use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use crate::pipeline::PipelineControl;
use crate::ratelimit::{EventLimiter, EventLimits, MessageKind, Verdict};

/// Events waiting for the data channel to open (or for a slow channel) at most; past that the
/// oldest are dropped and counted.
pub(crate) const EVENT_QUEUE: usize = 512;
/// Longest typed input accepted, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

/// Where a conversation sends its events. Never blocks: a full queue drops the event and counts
/// it in `transport_events_dropped_total`.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<String>,
}

impl EventSender {
    pub(crate) fn new(tx: mpsc::Sender<String>) -> Self {
        Self { tx }
    }

    /// Serialises `event` (an object with a `type`) and queues it for the data channel. (The
    /// metrics an event carries are recorded by whoever knows its type, from the typed value:
    /// `voicerelay serve` for conversation events.)
    pub fn send<T: Serialize + ?Sized>(&self, event: &T) -> bool {
        let json = match serde_json::to_string(event) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "event does not serialise");
                return false;
            }
        };
        self.send_json(json)
    }

    fn send_json(&self, json: String) -> bool {
        match self.tx.try_send(json) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("transport_events_dropped_total").increment(1);
                false
            }
        }
    }

    /// Waits (at most `timeout`) until the events task has taken every queued event.
    pub(crate) async fn drained(&self, timeout: Duration) {
        let t0 = Instant::now();
        while self.tx.capacity() < self.tx.max_capacity() && t0.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An `error` event with `message`.
    pub fn error(&self, message: impl Into<String>) -> bool {
        self.send(&serde_json::json!({"type": "error", "message": message.into()}))
    }
}

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Interrupt,
    Text(String),
    Config(Map<String, Value>),
}

impl ClientMessage {
    /// Parses one data-channel message; the error is the reason, sent back as an `error` event.
    pub fn parse(raw: &[u8]) -> Result<ClientMessage, String> {
        let v: Value =
            serde_json::from_slice(raw).map_err(|e| format!("message is not JSON: {e}"))?;
        let Value::Object(mut obj) = v else {
            return Err("message must be a JSON object with a \"type\"".into());
        };
        let ty = match obj.remove("type") {
            Some(Value::String(t)) => t,
            _ => return Err("message has no string \"type\"".into()),
        };
        match ty.as_str() {
            "interrupt" => Ok(ClientMessage::Interrupt),
            "text" => match obj.get("text") {
                Some(Value::String(t)) if !t.trim().is_empty() && t.len() <= MAX_TEXT_BYTES => {
                    Ok(ClientMessage::Text(t.clone()))
                }
                Some(Value::String(t)) if t.len() > MAX_TEXT_BYTES => Err(format!(
                    "\"text\" is {} bytes; at most {MAX_TEXT_BYTES}",
                    t.len()
                )),
                _ => Err("a text message needs a non-empty string \"text\"".into()),
            },
            "config" if obj.is_empty() => Err("a config message needs at least one setting".into()),
            "config" => Ok(ClientMessage::Config(obj)),
            other => Err(format!(
                "unknown message type {other:?} (expected interrupt, text or config)"
            )),
        }
    }
}

/// Handles one client message arriving at `now`: parsed, checked against the session's limits,
/// then handed to the conversation (or answered with an `error` event). Returns what the limiter
/// decided.
pub(crate) fn handle_client_message(
    raw: &[u8],
    limiter: &mut EventLimiter,
    now: Instant,
    control: &dyn PipelineControl,
    errors: &EventSender,
    limits: &EventLimits,
) -> Verdict {
    let parsed = ClientMessage::parse(raw);
    let kind = match parsed {
        Ok(ClientMessage::Text(_)) => MessageKind::Text,
        _ => MessageKind::Control,
    };
    let verdict = limiter.check(kind, now);
    if verdict != Verdict::Accept {
        metrics::counter!("transport_events_rate_limited_total", "kind" => kind.label())
            .increment(1);
        if verdict == Verdict::DropAndReport {
            let (burst, per_s, what) = match kind {
                MessageKind::Text => (limits.text_burst, limits.text_per_s, "text messages"),
                MessageKind::Control => (
                    limits.control_burst,
                    limits.control_per_s,
                    "interrupt/config messages",
                ),
            };
            errors.error(format!(
                "rate limit: more than {burst} {what} at once or {per_s}/s sustained; \
                 dropping them until the rate falls"
            ));
        }
        return verdict;
    }
    match parsed {
        Ok(ClientMessage::Interrupt) => control.interrupt(),
        Ok(ClientMessage::Text(t)) => control.send_text(t),
        Ok(ClientMessage::Config(c)) => {
            if let Err(e) = control.configure(&c) {
                errors.error(format!("config: {e}"));
            }
        }
        Err(e) => {
            errors.error(e);
        }
    }
    verdict
}

/// When the session last saw its user: an accepted client message, or a conversation event
/// other than the ones that come without anyone there (`voice`, `scene`, `video_rate`, `error`). Written by the events
/// task, read by the supervisor for `transport.idle_timeout_ms`.
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether the event `json` says someone is there (see [`Activity`]).
    fn is_user_event(json: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Tagged<'a> {
            #[serde(rename = "type", borrow)]
            ty: &'a str,
        }
        match serde_json::from_str::<Tagged<'_>>(json) {
            Ok(t) => !matches!(t.ty, "voice" | "scene" | "video_rate" | "error"),
            Err(_) => true,
        }
    }
}

/// What the session's connections tell the events task about data channels.
pub(crate) enum ChannelMsg {
    /// A data channel the client opened (only the one labelled `events` is used; it replaces the
    /// one before).
    Opened(Arc<dyn DataChannel>),
    /// The connection carrying the current channel is going: queue events for the next one.
    Detach,
}

/// Forwards queued events to the data channel once it is open and hands client messages to the
/// conversation, until the session ends (`events` yields `None`). Events wait (the newest
/// [`EVENT_QUEUE`]) while no channel is open: before the first, and while a session waits to be
/// resumed.
pub(crate) async fn run_events(
    mut events: mpsc::Receiver<String>,
    mut channels: mpsc::Receiver<ChannelMsg>,
    control: Arc<dyn PipelineControl>,
    errors: EventSender,
    limits: EventLimits,
    activity: Arc<Activity>,
) {
    let mut limiter = EventLimiter::new(limits);
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut dc: Option<Arc<dyn DataChannel>> = None;
    let mut open = false;
    let mut channels_live = true;
    loop {
        tokio::select! {
            // Channel changes first: a `Detach` sent before an event was queued is applied before
            // that event is sent, so nothing meant for the next connection goes to the old one.
            biased;
            ch = channels.recv(), if channels_live => match ch {
                Some(ChannelMsg::Opened(ch)) => match ch.label().await {
                    Ok(l) if l == "events" => {
                        dc = Some(ch);
                        open = false;
                    }
                    Ok(l) => tracing::debug!(label = %l, "ignoring data channel"),
                    Err(_) => {}
                },
                Some(ChannelMsg::Detach) => {
                    dc = None;
                    open = false;
                }
                // The session is ending; `events` ends this task.
                None => channels_live = false,
            },
            ev = events.recv() => {
                let Some(json) = ev else { break };
                if Activity::is_user_event(&json) {
                    activity.touch(Instant::now());
                }
                if open {
                    if let Some(dc) = &dc {
                        if let Err(e) = dc.send_text(&json).await {
                            tracing::debug!(error = %e, "events channel send failed");
                            metrics::counter!("transport_events_dropped_total").increment(1);
                        }
                        continue;
                    }
                }
                if pending.len() == EVENT_QUEUE {
                    pending.pop_front();
                    metrics::counter!("transport_events_dropped_total").increment(1);
                }
                pending.push_back(json);
            }
            ev = poll_channel(&dc) => {
                match ev {
                    Some(DataChannelEvent::OnOpen) => {
                        open = true;
                        if let Some(dc) = &dc {
                            while let Some(json) = pending.pop_front() {
                                if dc.send_text(&json).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Some(DataChannelEvent::OnMessage(m)) => {
                        let now = Instant::now();
                        let verdict = handle_client_message(
                            &m.data,
                            &mut limiter,
                            now,
                            control.as_ref(),
                            &errors,
                            &limits,
                        );
                        if verdict == Verdict::Accept {
                            activity.touch(now);
                        }
                    }
                    Some(DataChannelEvent::OnClose) | None => {
                        // Keep draining events so the conversation never sees a full queue; the
                        // newest `EVENT_QUEUE` wait for a resumed session's next channel.
                        dc = None;
                        open = false;
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

async fn poll_channel(dc: &Option<Arc<dyn DataChannel>>) -> Option<DataChannelEvent> {
    match dc {
        Some(dc) => dc.poll().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_bad_ones_say_why() {
        assert_eq!(
            ClientMessage::parse(br#"{"type":"interrupt"}"#),
            Ok(ClientMessage::Interrupt)
        );
        assert_eq!(
            ClientMessage::parse(br#"{"type":"text","text":"hi there"}"#),
            Ok(ClientMessage::Text("hi there".into()))
        );
        let c = ClientMessage::parse(br#"{"type":"config","voice":"flite"}"#).unwrap();
        let ClientMessage::Config(m) = c else {
            panic!("{c:?}")
        };
        assert_eq!(m.get("voice"), Some(&Value::String("flite".into())));
        for (raw, want) in [
            (&b"not json"[..], "not JSON"),
            (br#"[1,2]"#, "JSON object"),
            (br#"{"kind":"x"}"#, "no string \"type\""),
            (br#"{"type":"dance"}"#, "unknown message type"),
            (br#"{"type":"text","text":"  "}"#, "non-empty"),
            (br#"{"type":"config"}"#, "at least one setting"),
        ] {
            let e = ClientMessage::parse(raw).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn events_that_come_without_a_user_do_not_count_as_activity() {
        for (json, user) in [
            (
                r#"{"type":"partial","text":"hel","stable_prefix_len":0}"#,
                true,
            ),
            (r#"{"type":"answer_end","text":"Hi.","spoken":"Hi."}"#, true),
            (r#"{"session":"w1-ab","type":"resumed"}"#, true),
            (
                r#"{"type":"voice","voice":"piper","sample_rate":22050}"#,
                false,
            ),
            (r#"{"type":"scene","description":"a cat","at_ms":5}"#, false),
            (r#"{"type":"video_rate","max_fps":5,"motion":0.2}"#, false),
            (r#"{"message":"rate limit: ...","type":"error"}"#, false),
            ("not json", true),
        ] {
            assert_eq!(Activity::is_user_event(json), user, "{json}");
        }
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.last(), t0);
        a.touch(t0 + Duration::from_millis(1500));
        // Out of order: the later touch stands.
        a.touch(t0 + Duration::from_millis(700));
        assert_eq!(a.last(), t0 + Duration::from_millis(1500));
    }

    #[derive(Default)]
    struct Recording {
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl PipelineControl for Recording {
        fn interrupt(&self) {
            self.calls.lock().unwrap().push("interrupt".into());
        }
        fn send_text(&self, text: String) {
            self.calls.lock().unwrap().push(format!("text:{text}"));
        }
        fn configure(&self, _settings: &Map<String, Value>) -> Result<(), String> {
            self.calls.lock().unwrap().push("config".into());
            Ok(())
        }
        fn stop(&self) {}
    }

    #[test]
    fn a_text_flood_is_cut_to_the_limit_with_one_error_and_interrupt_still_works() {
        let limits = EventLimits {
            text_per_s: 2.0,
            text_burst: 5,
            control_per_s: 10.0,
            control_burst: 20,
        };
        let mut limiter = EventLimiter::new(limits);
        let control = Recording::default();
        let (tx, mut rx) = mpsc::channel(64);
        let errors = EventSender::new(tx);
        let t0 = Instant::now();
        // 50 typed turns in 490 ms (one every 10 ms).
        for i in 0..50u64 {
            let raw = format!(r#"{{"type":"text","text":"turn {i}"}}"#);
            let now = t0 + std::time::Duration::from_millis(i * 10);
            handle_client_message(
                raw.as_bytes(),
                &mut limiter,
                now,
                &control,
                &errors,
                &limits,
            );
        }
        let now = t0 + std::time::Duration::from_millis(500);
        let v = handle_client_message(
            br#"{"type":"interrupt"}"#,
            &mut limiter,
            now,
            &control,
            &errors,
            &limits,
        );
        assert_eq!(v, Verdict::Accept);
        let calls = control.calls.lock().unwrap().clone();
        let texts = calls.iter().filter(|c| c.starts_with("text:")).count();
        // 5 at once + 2/s × 0.49 s < 1: exactly the burst.
        assert_eq!(texts, 5, "{calls:?}");
        assert_eq!(calls.last().map(String::as_str), Some("interrupt"));
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(serde_json::from_str::<Value>(&e).unwrap());
        }
        assert_eq!(events.len(), 1, "one error per dropped burst: {events:?}");
        assert_eq!(events[0]["type"], "error");
        assert!(events[0]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit"));
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, mut rx) = mpsc::channel(2);
        let s = EventSender::new(tx);
        assert!(s.send(&serde_json::json!({"type":"state","from":"a","to":"b"})));
        assert!(s.error("x"));
        assert!(!s.error("y"));
        let first: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"type":"state","from":"a","to":"b"})
        );
        let second: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(second, serde_json::json!({"type":"error","message":"x"}));
        assert!(rx.try_recv().is_err());
    }
}
