//! The endpoint's safe defaults over real HTTP on loopback: a loopback server refuses other host
//! names (DNS rebinding) and other sites' origins, sends no CORS headers unless configured, and
//! hands TURN credentials (time-limited, from the shared secret) only to authorised clients;
//! the HTTP side is bounded: capped connections, slow headers and bodies time out, shutdown
//! drains within its deadline.
//! No session is ever started here, so the pipeline refuses to start one.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voicerelay_transport as vr_transport;
use vr_transport::config::{IceServerConfig, TransportConfig};
use vr_transport::pipeline::{Pipeline, PipelineRun, SessionIo};
use vr_transport::server::Server;
use vr_transport::TransportError;

struct NoSessions;

impl Pipeline for NoSessions {
    fn start(&self, _io: SessionIo) -> Result<PipelineRun, TransportError> {
        Err(TransportError::WebRtc {
            context: "test",
            reason: "no sessions in this test".into(),
        })
    }
}

struct Running {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A pipeline whose model died: it can start nothing and says why.
struct DeadModel;

impl Pipeline for DeadModel {
    fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
        NoSessions.start(io)
    }

    fn health(&self) -> Result<(), String> {
        Err("the LLM worker for qwen has stopped".into())
    }
}

async fn start(cfg: TransportConfig) -> Running {
    start_with(cfg, Arc::new(NoSessions)).await
}

async fn start_with(mut cfg: TransportConfig, pipeline: Arc<dyn Pipeline>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    cfg.bind = format!("127.0.0.1:{port}");
    let server = Server::new(cfg, pipeline, Arc::new(String::new)).expect("server");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let _ = vr_transport::server::serve(listener, server, async move {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        port,
        stop: Some(tx),
        served: Some(served),
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One raw HTTP/1.1 request, so the test controls Host and Origin exactly.
async fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_host {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/sdp\r\nContent-Length: 2\r\n\r\nv=");
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("reply within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

#[tokio::test]
async fn loopback_server_refuses_rebinding_hosts_and_foreign_origins() {
    let srv = start(TransportConfig::default()).await;
    let p = srv.port;
    let own = format!("http://127.0.0.1:{p}");

    assert_eq!(request(p, "GET", "/healthz", &[]).await.status, 200);
    let r = request(p, "GET", "/healthz", &[("Host", "localhost:1234")]).await;
    assert_eq!(r.status, 200);

    // A DNS-rebinding page reaches 127.0.0.1 under its own name.
    for path in ["/", "/v1/sessions", "/v1/client-config"] {
        let r = request(p, "GET", path, &[("Host", &format!("evil.example:{p}"))]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("host_not_allowed"), "{}", r.body);
    }
    let r = request(p, "DELETE", "/v1/sessions/abc", &[("Host", "evil.example")]).await;
    assert_eq!(r.status, 403);

    // Another site's page, with the right Host (the browser sends the server's own).
    for (m, path) in [
        ("GET", "/v1/sessions"),
        ("POST", "/v1/sessions"),
        ("DELETE", "/v1/sessions/abc"),
    ] {
        let r = request(p, m, path, &[("Origin", "https://evil.example")]).await;
        assert_eq!(r.status, 403, "{m} {path}: {}", r.body);
        assert!(r.body.contains("origin_not_allowed"), "{}", r.body);
        assert!(
            !r.head.contains("access-control-allow-origin"),
            "{}",
            r.head
        );
    }

    // The page served here (same origin) gets through; the offer itself is bad SDP.
    let r = request(p, "GET", "/v1/sessions", &[("Origin", &own)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.head.contains("access-control-allow-origin"),
        "no CORS by default"
    );
    let r = request(p, "POST", "/v1/sessions", &[("Origin", &own)]).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn turn_credentials_are_time_limited_and_only_for_authorised_clients() {
    let cfg = TransportConfig {
        auth_token: "s3cret-token".into(),
        turn_credential_ttl_s: 600,
        ice_servers: vec![
            IceServerConfig {
                urls: vec!["stun:stun.example.org:3478".into()],
                username: String::new(),
                credential: String::new(),
                secret: String::new(),
            },
            IceServerConfig {
                urls: vec!["turn:turn.example.org:3478".into()],
                username: String::new(),
                credential: String::new(),
                secret: "north".into(),
            },
        ],
        ..TransportConfig::default()
    };
    let srv = start(cfg).await;
    let p = srv.port;

    let r = request(p, "GET", "/v1/client-config", &[]).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["auth_required"], true);
    assert_eq!(v["authorised"], false);
    assert_eq!(
        v["ice_servers"],
        serde_json::json!([]),
        "nothing without the token"
    );
    assert!(!r.body.contains("north"));

    let r = request(
        p,
        "GET",
        "/v1/sessions",
        &[("Authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(r.status, 401);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let r = request(
        p,
        "GET",
        "/v1/client-config",
        &[("Authorization", "Bearer s3cret-token")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["authorised"], true);
    let ice = v["ice_servers"].as_array().expect("ice servers");
    assert_eq!(ice.len(), 2);
    assert_eq!(
        ice[0],
        serde_json::json!({"urls": ["stun:stun.example.org:3478"]})
    );
    let user = ice[1]["username"].as_str().expect("username");
    let (expiry, label) = user.split_once(':').expect("expiry:label");
    let expiry: u64 = expiry.parse().expect("unix seconds");
    assert_eq!(label, "voicerelay");
    assert!(
        (before + 600..=before + 602).contains(&expiry),
        "expiry {expiry} vs now {before} + ttl 600"
    );
    let (_, cred) =
        vr_transport::guard::turn_rest_credential("north", expiry, "voicerelay").expect("hmac");
    assert_eq!(ice[1]["credential"], cred.as_str());
    assert!(
        !r.body.contains("\"north\""),
        "the secret itself never leaves"
    );
}

#[test]
fn a_public_bind_needs_a_token_unless_insecure_and_config_output_hides_secrets() {
    let public = TransportConfig {
        bind: "0.0.0.0:8080".into(),
        ..TransportConfig::default()
    };
    let e = public.check_exposure(false).expect_err("refused");
    assert!(e.to_string().contains("auth_token"), "{e}");
    public.check_exposure(true).expect("--insecure");
    let with_token = TransportConfig {
        auth_token: "t0ken".into(),
        ..public.clone()
    };
    with_token.check_exposure(false).expect("token given");
    TransportConfig::default()
        .check_exposure(false)
        .expect("loopback");

    let shown = format!("{:?}", with_token.redacted());
    assert!(
        !shown.contains("t0ken") && shown.contains("<redacted>"),
        "{shown}"
    );
}

async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection (10 s at most).
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection within 10 s")
        .ok();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn connections_are_capped_and_silent_ones_time_out() {
    let srv = start(TransportConfig {
        max_http_connections: 2,
        http_header_timeout_ms: 300,
        ..TransportConfig::default()
    })
    .await;
    let p = srv.port;
    // Two clients that connect and say nothing (slowloris) hold both slots...
    let mut idle = [connect(p).await, connect(p).await];
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ... so a third is told so and closed, instead of waiting.
    let mut third = connect(p).await;
    let reply = read_until_closed(&mut third).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too_many_connections"), "{reply}");
    // The silent ones are closed at the header timeout, which frees their slots.
    for s in &mut idle {
        let left = read_until_closed(s).await;
        assert!(!left.contains("200 OK"), "{left}");
    }
    assert_eq!(request(p, "GET", "/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn a_trickled_offer_body_gets_408() {
    let srv = start(TransportConfig {
        http_body_timeout_ms: 300,
        ..TransportConfig::default()
    })
    .await;
    let p = srv.port;
    let mut s = connect(p).await;
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\
         Content-Type: application/sdp\r\nContent-Length: 100\r\n\r\nv=0\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let reply = read_until_closed(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
}

#[tokio::test]
async fn shutdown_ends_within_the_drain_deadline_despite_a_stuck_connection() {
    let mut srv = start(TransportConfig {
        http_header_timeout_ms: 60_000,
        http_drain_ms: 300,
        shutdown_grace_ms: 0,
        ..TransportConfig::default()
    })
    .await;
    let p = srv.port;
    // A request whose headers never finish: hyper would wait for them for a minute.
    let mut stuck = connect(p).await;
    stuck
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n").as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let t0 = std::time::Instant::now();
    let _ = srv.stop.take().expect("running").send(());
    let served = srv.served.take().expect("running");
    tokio::time::timeout(std::time::Duration::from_secs(20), served)
        .await
        .expect("serve returns after its drain deadline, not after the stuck request")
        .expect("serve task");
    let took = t0.elapsed();
    println!("shutdown took {took:?} with a stuck connection (drain 300 ms)");
    assert!(
        took < std::time::Duration::from_secs(10),
        "shutdown waited {took:?}: longer than the drain deadline allows"
    );
    // New connections are no longer accepted.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .is_err());
}

#[tokio::test]
async fn healthz_is_503_with_the_reason_when_the_pipeline_cannot_answer() {
    let ok = start(TransportConfig::default()).await;
    let r = request(ok.port, "GET", "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["status"], "ok");
    assert!(v.get("reason").is_none(), "{v}");

    let dead = start_with(TransportConfig::default(), Arc::new(DeadModel)).await;
    let r = request(dead.port, "GET", "/healthz", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["reason"], "the LLM worker for qwen has stopped");
}
