//! Beyond one machine: two `voicerelay serve` workers behind a real load balancer (Debian's
//! HAProxy running `configs/haproxy.cfg` as committed). New sessions spread across the workers;
//! a full worker's 503 is retried on the other, so the client never sees it; a session's own URL
//! (`DELETE`, resume) reaches the worker that holds it. Media goes straight to the workers.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// HAProxy in the foreground; killed on drop.
struct Balancer {
    child: Child,
    url: String,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `host:port` of a server's URL.
fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_balancer(w1: &str, w2: &str) -> Balancer {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/haproxy.cfg");
    let bind = format!("127.0.0.1:{}", free_port());
    let log = artifact_dir().join(format!("haproxy-{}.log", std::process::id()));
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .env("VR_LB_BIND", &bind)
        .env("VR_W1_ADDR", addr(w1))
        .env("VR_W2_ADDR", addr(w2))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("haproxy log"))
        .spawn()
        .expect("spawn haproxy");
    let lb = Balancer {
        child,
        url: format!("http://{bind}"),
    };
    let t0 = Instant::now();
    loop {
        let up = reqwest::get(format!("{}/healthz", lb.url))
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return lb;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "haproxy not serving after 15 s; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker a session URL names.
fn worker(location: &str) -> &str {
    location
        .trim_start_matches("/v1/sessions/")
        .split('-')
        .next()
        .unwrap_or_default()
}

/// A labelled Prometheus sample, e.g. `name{reason="x"}`.
fn labelled(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_of(url: &str) -> String {
    http("GET", &format!("{url}/metrics"), &[], None).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_behind_haproxy_share_sessions_retry_a_full_one_and_route_session_urls() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        vr_core::prereq::missing("haproxy is not installed (scripts/bootstrap installs it)");
        return;
    }
    // w1 holds one session, w2 three.
    let w1 = ServerProcess::start(&[
        ("VOICERELAY__TRANSPORT__WORKER_ID", "w1"),
        ("VOICERELAY__TRANSPORT__MAX_SESSIONS", "1"),
    ]);
    let w2 = ServerProcess::start(&[
        ("VOICERELAY__TRANSPORT__WORKER_ID", "w2"),
        ("VOICERELAY__TRANSPORT__MAX_SESSIONS", "3"),
    ]);
    let lb = start_balancer(&w1.url, &w2.url).await;

    // Two offers through the balancer land on different workers.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = Client::new(true).await;
        c.connect(&lb.url, None).await;
        clients.push(c);
    }
    let placed: Vec<String> = clients
        .iter()
        .map(|c| c.location.clone().expect("Location"))
        .collect();
    println!("first two sessions: {placed:?}");
    let mut workers: Vec<&str> = placed.iter().map(|l| worker(l)).collect();
    workers.sort_unstable();
    assert_eq!(workers, ["w1", "w2"], "{placed:?}");

    // w1 is full now. Round robin sends one of the next two offers to it first; its 503 is
    // retried on w2, and the client sees only the 201.
    for _ in 0..2 {
        let mut c = Client::new(true).await;
        c.connect(&lb.url, None).await;
        let loc = c.location.clone().expect("Location");
        assert_eq!(worker(&loc), "w2", "{loc}");
        clients.push(c);
    }
    let refused = labelled(
        &metrics_of(&w1.url).await,
        "transport_sessions_rejected_total{reason=\"too_many_sessions\"}",
    );
    println!("w1 refused {refused} offer(s) as full; the balancer retried them on w2");
    assert!(refused >= 1.0, "no offer was retried: w1 refused {refused}");
    let m2 = metrics_of(&w2.url).await;
    assert_eq!(metric(&m2, "transport_sessions_active"), Some(3.0), "{m2}");

    // A session's URL reaches its worker: DELETE the one on w1 through the balancer.
    let on_w1 = placed
        .iter()
        .find(|l| worker(l) == "w1")
        .expect("a session on w1");
    let r = http("DELETE", &format!("{}{on_w1}", lb.url), &[], None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let m1 = metrics_of(&w1.url).await;
    assert_eq!(metric(&m1, "transport_sessions_active"), Some(0.0), "{m1}");

    // And a resume: a w2 client loses its connection and comes back through the balancer.
    let gone = clients.pop().expect("a client on w2");
    let (loc, token) = (
        gone.location.clone().expect("Location"),
        gone.resume_token.clone().expect("resume token"),
    );
    gone.pc.close().await.expect("close");
    wait_metric(
        &w2.url,
        "transport_sessions_parked",
        1.0,
        Duration::from_secs(10),
    )
    .await
    .expect("the w2 session never waited for its resume");
    let mut back = Client::new(true).await;
    back.resume(&lb.url, &loc, &token).await;
    back.wait_for(Duration::from_secs(10), "the resumed event", |r| {
        !r.of_type("resumed").is_empty()
    })
    .await;
    let m2 = metrics_of(&w2.url).await;
    assert_eq!(
        metric(&m2, "transport_sessions_resumed_total"),
        Some(1.0),
        "{m2}"
    );
    assert_eq!(metric(&m2, "transport_sessions_active"), Some(3.0), "{m2}");
    println!("resumed {loc} through the balancer on its worker");
}
