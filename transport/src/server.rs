//! The HTTP side: signalling routes, health, metrics and the browser page, on axum.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/sessions` | SDP offer in (`application/sdp`, or JSON `{type, sdp}`), `201` + answer + `Location` + `VoiceRelay-Resume-Token` |
//! | `POST /v1/sessions/{id}/resume` | a new offer for a session whose client went away (or is reconnecting), with its `VoiceRelay-Resume-Token`: `201` + answer; the same conversation continues |
//! | `DELETE /v1/sessions/{id}` | ends the session; `204` once it is freed |
//! | `GET /v1/sessions` | live sessions (id, connection state, age) |
//! | `GET /v1/client-config` | whether a token is needed; ICE servers (time-limited TURN credentials) only with the token |
//! | `GET /healthz` | `{"status":"ok",...}`; `503` while shutting down, or `"degraded"` with a `reason` when the pipeline cannot answer (a dead LLM worker) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /`, `/app.js` | the browser client |
//!
//! Every refusal is JSON: `{"error": "<code>", "reason": "<what to change>"}`. Before any route,
//! the Host and Origin checks (`guard.rs`) refuse, with 403, requests under a non-loopback host
//! name to a loopback server (DNS rebinding) and requests from another site's page.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::TransportConfig;
use crate::pipeline::Pipeline;
use crate::session::{answer_offer, create_session, EndReason, OfferError, Registry};
use crate::signalling::{parse_offer, Format, Refusal};
use crate::TransportError;
use webrtc::peer_connection::RTCSessionDescription;

const INDEX_HTML: &str = include_str!("../page/index.html");
const APP_JS: &str = include_str!("../page/app.js");
/// The header carrying a session's resume token: in the creation response, and in a resume.
pub const RESUME_TOKEN_HEADER: &str = "voicerelay-resume-token";

/// Renders the process's metrics as Prometheus text (the binary owns the recorder).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The endpoint's shared state.
pub struct Server {
    cfg: TransportConfig,
    registry: Arc<Registry>,
    pipeline: Arc<dyn Pipeline>,
    metrics: MetricsRenderer,
    shutting_down: AtomicBool,
}

impl Server {
    pub fn new(
        cfg: TransportConfig,
        pipeline: Arc<dyn Pipeline>,
        metrics: MetricsRenderer,
    ) -> Result<Arc<Self>, TransportError> {
        cfg.validate()?;
        describe_metrics();
        metrics::gauge!("transport_sessions_active").set(0.0);
        metrics::gauge!("transport_sessions_parked").set(0.0);
        metrics::gauge!("transport_pipelines_running").set(0.0);
        Ok(Arc::new(Self {
            registry: Arc::new(Registry::new(cfg.max_sessions)),
            cfg,
            pipeline,
            metrics,
            shutting_down: AtomicBool::new(false),
        }))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let r = Router::new()
            .route("/", get(index))
            .route("/app.js", get(app_js))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .route("/v1/client-config", get(client_config))
            .route("/v1/sessions", get(list_sessions).post(post_session))
            .route("/v1/sessions/{id}", delete(delete_session))
            .route("/v1/sessions/{id}/resume", post(resume_session))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                check_host_and_origin,
            ))
            .with_state(self.clone());
        match self.cors() {
            Some(cors) => r.layer(cors),
            None => r,
        }
    }

    fn cors(&self) -> Option<CorsLayer> {
        let origins = &self.cfg.cors_allowed_origins;
        if origins.is_empty() {
            return None;
        }
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::HeaderName::from_static(RESUME_TOKEN_HEADER),
                ])
                .expose_headers([
                    header::LOCATION,
                    header::HeaderName::from_static(RESUME_TOKEN_HEADER),
                ])
                .max_age(Duration::from_secs(600)),
        )
    }

    /// Ends every session (reason `shutdown`), waiting up to `shutdown_grace_ms` for them.
    pub async fn close_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions = self.registry.all();
        for s in &sessions {
            s.request_close(EndReason::Shutdown);
        }
        let all = futures_join_all(sessions.iter().map(|s| s.wait_closed()));
        if tokio::time::timeout(self.cfg.shutdown_grace(), all)
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close within the shutdown grace period");
        }
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let want = &self.cfg.auth_token;
        if want.is_empty() {
            return Ok(());
        }
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match got {
            Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
            Some(_) => Err(refusal(401, "unauthorized", "the bearer token is wrong")),
            None => Err(refusal(
                401,
                "unauthorized",
                "this endpoint needs an Authorization: Bearer <token> header",
            )),
        }
    }
}

async fn futures_join_all<F: Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    for f in set {
        f.await;
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refusal(status: u16, code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        reason: reason.into(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = (
            status,
            Json(serde_json::json!({"error": self.code, "reason": self.reason})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

fn rejected(r: Refusal) -> Response {
    metrics::counter!("transport_sessions_rejected_total", "reason" => r.code).increment(1);
    tracing::info!(status = r.status, code = r.code, reason = %r.reason, "offer refused");
    r.into_response()
}

/// Authentication, shutdown, size and time limits, and parsing: the offer of a new or resumed
/// session, or the refusal to send.
async fn read_offer(
    srv: &Server,
    headers: &HeaderMap,
    body: Body,
) -> Result<(RTCSessionDescription, Format), Refusal> {
    srv.check_auth(headers)?;
    if srv.shutting_down.load(Ordering::SeqCst) {
        return Err(refusal(503, "shutting_down", "the server is shutting down"));
    }
    let limit = srv.cfg.max_offer_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_big = || {
        refusal(
            413,
            "offer_too_large",
            format!("the offer exceeds {limit} bytes (transport.max_offer_bytes)"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    // A client that trickles its body holds a connection slot: it gets a deadline.
    let deadline = Duration::from_millis(srv.cfg.http_body_timeout_ms);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(too_big()),
        Err(_) => {
            return Err(refusal(
                408,
                "body_timeout",
                format!(
                    "the offer body did not arrive within {} ms (transport.http_body_timeout_ms)",
                    srv.cfg.http_body_timeout_ms
                ),
            ))
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    parse_offer(content_type, &bytes)
}

/// The `201` answering a new or resumed session's offer.
fn answered(id: &str, answer_sdp: String, resume_token: &str, format: Format) -> Response {
    let location = format!("/v1/sessions/{id}");
    let (ctype, body) = match format {
        Format::Sdp => ("application/sdp", answer_sdp),
        Format::Json => (
            "application/json",
            serde_json::json!({
                "type": "answer",
                "sdp": answer_sdp,
                "session": id,
                "resume_token": resume_token,
            })
            .to_string(),
        ),
    };
    let mut resp = (StatusCode::CREATED, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    for (name, value) in [
        (header::LOCATION, location.as_str()),
        (
            header::HeaderName::from_static(RESUME_TOKEN_HEADER),
            resume_token,
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    resp
}

fn offer_failed(e: OfferError) -> Response {
    match e {
        OfferError::Rejected(reason) => rejected(refusal(400, "offer_rejected", reason)),
        OfferError::Internal(reason) => {
            tracing::error!(%reason, "cannot answer an offer");
            rejected(refusal(500, "internal", reason))
        }
    }
}

async fn post_session(State(srv): State<Arc<Server>>, headers: HeaderMap, body: Body) -> Response {
    let (offer, format) = match read_offer(&srv, &headers, body).await {
        Ok(x) => x,
        Err(r) => return rejected(r),
    };
    let Some(slot) = srv.registry.reserve() else {
        return rejected(refusal(
            503,
            "too_many_sessions",
            format!(
                "all {} session slots are in use (transport.max_sessions); retry later",
                srv.registry.max()
            ),
        ));
    };
    let created = create_session(
        &srv.cfg,
        srv.registry.clone(),
        srv.pipeline.clone(),
        slot,
        offer,
    )
    .await;
    match created {
        Ok(c) => answered(&c.id, c.answer_sdp, &c.resume_token, format),
        Err(e) => offer_failed(e),
    }
}

/// A client back after losing its connection (or reloading): a new peer connection for the
/// session's running conversation. Takes no new slot: the session still holds its own.
async fn resume_session(
    State(srv): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let (offer, format) = match read_offer(&srv, &headers, body).await {
        Ok(x) => x,
        Err(r) => return rejected(r),
    };
    let refuse = |status, code, reason: String| {
        metrics::counter!("transport_resumes_refused_total", "reason" => code).increment(1);
        tracing::info!(session = %id, status, code, %reason, "resume refused");
        refusal(status, code, reason).into_response()
    };
    if srv.cfg.resume_window_ms == 0 {
        return refuse(
            403,
            "resume_disabled",
            "sessions cannot be resumed here (transport.resume_window_ms = 0)".into(),
        );
    }
    let Some(session) = srv.registry.get(&id) else {
        return refuse(
            404,
            "no_such_session",
            format!("no live session {id:?} (it ended, or its resume window passed)"),
        );
    };
    let token = headers
        .get(RESUME_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match token {
        Some(t) if session.resume_token_matches(t) => {}
        Some(_) => return refuse(403, "bad_resume_token", "the resume token is wrong".into()),
        None => {
            return refuse(
                403,
                "bad_resume_token",
                format!("a resume needs the session's {RESUME_TOKEN_HEADER} header"),
            )
        }
    }
    let (conn, answer_sdp) = match answer_offer(&srv.cfg, offer).await {
        Ok(x) => x,
        Err(e) => return offer_failed(e),
    };
    match session.resume(conn) {
        Ok(()) => answered(&id, answer_sdp, session.resume_token(), format),
        Err(conn) => {
            conn.discard().await;
            refuse(
                409,
                "resume_conflict",
                format!("session {id:?} is ending or already taking another resume; retry"),
            )
        }
    }
}

async fn delete_session(
    State(srv): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = srv.check_auth(&headers) {
        return r.into_response();
    }
    let Some(s) = srv.registry.get(&id) else {
        return refusal(404, "no_such_session", format!("no live session {id:?}")).into_response();
    };
    s.request_close(EndReason::Deleted);
    if tokio::time::timeout(Duration::from_secs(5), s.wait_closed())
        .await
        .is_err()
    {
        tracing::warn!(session = %id, "session still closing after 5 s");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_sessions(State(srv): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = srv.check_auth(&headers) {
        return r.into_response();
    }
    let list: Vec<_> = srv
        .registry
        .all()
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "state": s.state(),
                "age_ms": s.created.elapsed().as_millis() as u64,
                "waiting_for_resume": s.parked(),
            })
        })
        .collect();
    Json(serde_json::json!({"sessions": list, "max_sessions": srv.registry.max()})).into_response()
}

/// Seconds since the Unix epoch (TURN credential expiry); 0 if the clock is before 1970.
pub(crate) fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The page asks first without a token to learn whether one is needed; ICE servers (TURN
/// credentials) are handed out only to a request that passes authentication.
async fn client_config(State(srv): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let auth_required = !srv.cfg.auth_token.is_empty();
    let authorised = srv.check_auth(&headers).is_ok();
    let ice: Vec<_> = if authorised {
        srv.cfg
            .ice_servers_at(unix_now_s())
            .into_iter()
            .map(|s| {
                let mut o = serde_json::json!({"urls": s.urls});
                if !s.username.is_empty() {
                    o["username"] = s.username.into();
                    o["credential"] = s.credential.into();
                }
                o
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(serde_json::json!({
        "ice_servers": ice,
        "auth_required": auth_required,
        "authorised": authorised,
    }))
    .into_response()
}

/// Host and Origin checks in front of every route (see `guard.rs`).
async fn check_host_and_origin(
    State(srv): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    // Owned copies: nothing may borrow the request (its body is not Sync) across the await.
    let (host, origin) = {
        let header_str = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // HTTP/1.1 puts the authority in Host; HTTP/2 in the URI.
        let host =
            header_str(header::HOST).or_else(|| req.uri().authority().map(|a| a.to_string()));
        (host, header_str(header::ORIGIN))
    };
    let cfg = &srv.cfg;
    let refused = if !crate::guard::host_allowed(
        host.as_deref(),
        cfg.bound_to_loopback(),
        &cfg.allowed_hosts,
    ) {
        Some(refusal(
            403,
            "host_not_allowed",
            format!(
                "host {:?} is not served here (a loopback server answers only to loopback \
                 names; add the name to transport.allowed_hosts)",
                host.as_deref().unwrap_or("")
            ),
        ))
    } else if !crate::guard::origin_allowed(
        origin.as_deref(),
        host.as_deref(),
        &cfg.cors_allowed_origins,
    ) {
        Some(refusal(
            403,
            "origin_not_allowed",
            format!(
                "requests from origin {:?} are not allowed (transport.cors_allowed_origins)",
                origin.as_deref().unwrap_or("")
            ),
        ))
    } else {
        None
    };
    match refused {
        Some(r) => {
            metrics::counter!("transport_http_refused_total", "reason" => r.code).increment(1);
            tracing::info!(status = r.status, code = r.code, reason = %r.reason, "request refused");
            r.into_response()
        }
        None => next.run(req).await,
    }
}

async fn healthz(State(srv): State<Arc<Server>>) -> Response {
    let down = srv.shutting_down.load(Ordering::SeqCst);
    let health = srv.pipeline.health();
    let (status, word) = match (&health, down) {
        (_, true) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        (Err(_), false) => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        (Ok(()), false) => (StatusCode::OK, "ok"),
    };
    let mut body = serde_json::json!({
        "status": word,
        "sessions": srv.registry.len(),
        "max_sessions": srv.registry.max(),
    });
    if let Err(reason) = health {
        body["reason"] = serde_json::Value::String(reason);
    }
    (status, Json(body)).into_response()
}

async fn metrics_text(State(srv): State<Arc<Server>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        (srv.metrics)(),
    )
        .into_response()
}

async fn index() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        APP_JS,
    )
        .into_response()
}

async fn not_found() -> Response {
    refusal(404, "not_found", "no such route; see /v1/sessions").into_response()
}

/// Serves `server` on `listener` until `shutdown` resolves, then closes every session (within
/// `shutdown_grace_ms`), gives open HTTP connections `http_drain_ms` to finish, and returns.
/// Connections are capped and slow headers time out ([`crate::http`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TransportError> {
    let router = server.router();
    let limits = crate::http::HttpLimits {
        max_connections: server.cfg.max_http_connections,
        header_timeout: Duration::from_millis(server.cfg.http_header_timeout_ms),
        drain: Duration::from_millis(server.cfg.http_drain_ms),
    };
    let srv = server.clone();
    crate::http::serve_bounded(listener, router, limits, shutdown, async move {
        tracing::info!("shutting down: closing sessions");
        srv.close_all().await;
    })
    .await
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "transport_sessions_active",
        "WebRTC sessions with a connection (or connecting)"
    );
    describe_gauge!(
        "transport_sessions_parked",
        "sessions whose client went away, kept (slot and conversation) for it to resume"
    );
    describe_counter!(
        "transport_sessions_resumed_total",
        "sessions a client took back on a new connection with its resume token"
    );
    describe_counter!(
        "transport_resumes_refused_total",
        "resume requests refused, by reason"
    );
    describe_gauge!(
        "transport_pipelines_running",
        "conversation threads still running (includes sessions being torn down)"
    );
    describe_counter!("transport_sessions_started_total", "sessions created");
    describe_counter!(
        "transport_video_packets_total",
        "video RTP packets received (all video tracks; not decoded)"
    );
    describe_counter!(
        "transport_video_bytes_total",
        Unit::Bytes,
        "video RTP bytes received, headers included"
    );
    describe_counter!(
        "transport_video_packets_without_abs_send_time_total",
        "video packets whose send time fell back to the RTP timestamp (90 kHz)"
    );
    describe_counter!(
        "transport_video_remb_sent_total",
        "REMB packets sent to video senders"
    );
    describe_counter!(
        "transport_video_remb_failed_total",
        "REMB packets that could not be written (peer connection closing)"
    );
    describe_counter!(
        "transport_video_reordered_total",
        "video packets sent before the current send-time group (ignored by the delay estimator)"
    );
    describe_counter!(
        "transport_video_lost_total",
        "video packets missing from the sequence (RFC 3550 cumulative loss; rises only)"
    );
    describe_gauge!(
        "transport_video_estimate_bps",
        "latest receiver-side congestion estimate of a video track, bit/s (before the ReCap cap)"
    );
    describe_gauge!(
        "transport_video_remb_bps",
        "latest bitrate advertised by REMB, bit/s: min(estimate, ReCap cap) within the configured bounds"
    );
    describe_counter!(
        "transport_rtp_sequence_restarts_total",
        "backward RTP sequence jumps taken as a restart of the peer's numbering"
    );
    describe_counter!(
        "transport_http_refused_total",
        "HTTP requests refused by the Host/Origin checks, by reason"
    );
    describe_counter!(
        "transport_sessions_ended_total",
        "sessions freed, by reason"
    );
    describe_counter!(
        "transport_sessions_rejected_total",
        "offers refused, by error code"
    );
    describe_histogram!(
        "transport_session_duration_seconds",
        Unit::Seconds,
        "session lifetimes"
    );
    describe_histogram!(
        "transport_session_start_ms",
        Unit::Milliseconds,
        "offer received → conversation running and answer ready"
    );
    describe_counter!(
        "transport_rtp_packets_received_total",
        "incoming RTP audio packets"
    );
    describe_counter!(
        "transport_rtp_packets_lost_total",
        "incoming RTP packets declared lost by the jitter buffer"
    );
    describe_counter!(
        "transport_rtp_packets_late_total",
        "incoming RTP packets that arrived after their slot was concealed"
    );
    describe_counter!(
        "transport_rtp_packets_duplicate_total",
        "duplicate RTP packets"
    );
    describe_counter!(
        "transport_opus_fec_recovered_total",
        "lost frames rebuilt from in-band FEC"
    );
    describe_counter!(
        "transport_opus_plc_frames_total",
        "frames invented by Opus PLC"
    );
    describe_counter!(
        "transport_opus_decode_errors_total",
        "undecodable Opus packets"
    );
    describe_counter!(
        "transport_input_ring_overrun_frames_total",
        "16 kHz frames dropped because a session's input ring was full"
    );
    describe_counter!("transport_rtp_packets_sent_total", "outgoing Opus packets");
    describe_counter!(
        "transport_output_flushed_frames_total",
        "queued answer frames dropped by barge-in"
    );
    describe_counter!(
        "transport_output_underrun_frames_total",
        "answer frames padded with silence because synthesis fell behind"
    );
    describe_counter!(
        "transport_events_dropped_total",
        "data-channel events dropped (queue full or channel gone)"
    );
    describe_histogram!(
        "transport_turn_latency_ms",
        Unit::Milliseconds,
        "per-turn latency breakdown by stage (from turn_latency events)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
