//! Load and soak: sessions come and go against one `voicerelay serve` for minutes (3 in the
//! suite; `VOICERELAY_SOAK_S=1800` for the 30-minute run). Each cycle, two real clients (the
//! sessions one 2-core machine holds in real time, `voicerelay bench`) speak a corpus utterance
//! at the same time and must both get a correct transcript; then one session is deleted and the
//! other ends another way in turn: its client goes away and the resume window expires, or it
//! resumes on a new connection and is then deleted. Over the run the server's resident memory,
//! threads and open file descriptors, measured idle after a warm-up and again idle at the end,
//! must not grow: RSS by less than 5 % (private memory by less than 10 %, see the test), threads
//! and descriptors not at all.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Private memory may grow by this fraction (see the assertion).
const PRIVATE_GROWTH_LIMIT: f64 = 0.10;

/// Cycles before the baseline is measured.
const WARM_UP_CYCLES: usize = 4;

/// The server's footprint, from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kb: u64,
    /// Of which the heap and other private memory (what a leak grows) ...
    anon_kb: u64,
    /// ... and mapped files: the model weights' pages in use, at most the files' size.
    file_kb: u64,
    threads: u64,
    fds: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("server fds")
        .count() as u64;
    Usage {
        rss_kb: field("VmRSS:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
        threads: field("Threads:"),
        fds,
    }
}

/// Waits until no session is left (none connected, parked or running), then for the runtime's
/// idle blocking threads to retire (tokio keeps them 10 s), and measures.
async fn settle(url: &str, pid: u32) -> Usage {
    assert!(
        wait_sessions(url, 0.0, Duration::from_secs(60))
            .await
            .is_some(),
        "sessions still open a minute after the last client"
    );
    wait_metric(
        url,
        "transport_sessions_parked",
        0.0,
        Duration::from_secs(30),
    )
    .await
    .expect("a parked session never expired");
    // Each peer connection's memory is freed with it (its callbacks handler is dropped).
    if wait_metric(
        url,
        "transport_peer_connections_alive",
        0.0,
        Duration::from_secs(10),
    )
    .await
    .is_none()
    {
        let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
        panic!(
            "peer connections never freed: {:?} alive",
            metric(&m, "transport_peer_connections_alive")
        );
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    usage(pid)
}

fn finals_of(c: &Client) -> String {
    let r = c.received.lock().unwrap();
    r.of_type("final")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One cycle: two clients speak at once; both transcripts checked; both sessions ended.
async fn cycle(url: &str, i: usize, speech: &[f32], reference: &str) {
    let (mut a, mut b) = (Client::new(true).await, Client::new(true).await);
    a.connect(url, None).await;
    b.connect(url, None).await;
    let silence = Duration::from_millis(1000);
    tokio::join!(a.speak(speech, silence), b.speak(speech, silence));
    for (name, c) in [("a", &a), ("b", &b)] {
        c.wait_for(Duration::from_secs(60), "the final transcript", |r| {
            !r.of_type("final").is_empty()
        })
        .await;
        // The speaker pauses mid-sentence, so the sentence can come as two finals, the second
        // a little later on a busy machine: give it up to 10 s before scoring.
        let t0 = Instant::now();
        let mut heard = finals_of(c);
        while wer(reference, &heard) > 0.15 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            heard = finals_of(c);
        }
        let w = wer(reference, &heard);
        println!("cycle {i} client {name}: WER {:.1}% {heard:?}", 100.0 * w);
        assert!(w <= 0.15, "cycle {i} client {name}: WER {:.1}%", 100.0 * w);
    }
    let delete = |loc: String| async move {
        let r = http("DELETE", &format!("{url}{loc}"), &[], None).await;
        assert_eq!(r.status, 204, "{}", r.body);
    };
    delete(a.location.clone().expect("a's Location")).await;
    let (loc, token) = (
        b.location.clone().expect("b's Location"),
        b.resume_token.clone().expect("b's resume token"),
    );
    b.pc.close().await.expect("close b");
    if i % 2 == 1 {
        // Back on a new connection, then gone for good.
        wait_metric(
            url,
            "transport_sessions_parked",
            1.0,
            Duration::from_secs(10),
        )
        .await
        .expect("b's session never waited for its resume");
        let mut again = Client::new(true).await;
        again.resume(url, &loc, &token).await;
        again
            .wait_for(Duration::from_secs(10), "the resumed event", |r| {
                !r.of_type("resumed").is_empty()
            })
            .await;
        delete(loc).await;
    }
    // Else b's session expires after its resume window, while the next cycle runs.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_and_go_for_minutes_without_growing_memory_threads_or_fds() {
    let soak = Duration::from_secs(
        std::env::var("VOICERELAY_SOAK_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let Some((speech, reference, _)) = utterance_48k() else {
        return;
    };
    let server = ServerProcess::start(&[("VOICERELAY__TRANSPORT__RESUME_WINDOW_MS", "2000")]);
    let (url, pid) = (server.url.clone(), server.child.id());

    // Warm-up: both kinds of cycle twice (lazily made buffers, pools and caches).
    for i in 0..WARM_UP_CYCLES {
        cycle(&url, i, &speech, &reference).await;
    }
    let base = settle(&url, pid).await;
    println!("after warm-up: {base:?}");

    let t0 = Instant::now();
    let mut cycles = WARM_UP_CYCLES;
    while t0.elapsed() < soak {
        cycle(&url, cycles, &speech, &reference).await;
        println!("after cycle {cycles}: {:?}", usage(pid));
        cycles += 1;
    }
    let end = settle(&url, pid).await;
    let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
    let started = metric(&m, "transport_sessions_started_total").unwrap_or(0.0);
    let growth = end.rss_kb as f64 / base.rss_kb as f64 - 1.0;
    let anon_growth = end.anon_kb as f64 / base.anon_kb as f64 - 1.0;
    println!(
        "{} s, {cycles} cycles, {started} sessions: {base:?} -> {end:?}, RSS {:+.2}% \
         (anonymous {:+.2}%, mapped files {} -> {} kB)",
        t0.elapsed().as_secs(),
        100.0 * growth,
        100.0 * anon_growth,
        base.file_kb,
        end.file_kb
    );
    assert!(growth < 0.05, "RSS grew {:.1}%", 100.0 * growth);
    // Private memory climbs in ~20 MB steps over the first 20–50 cycles to a plateau near
    // 590 MB that does not grow with sessions (44 and 426 sessions ended at the same level),
    // not yet profiled; so it gets a looser bound than RSS here, one that still catches a
    // per-session leak like the one this test first found (+22 % RSS, about +43 % private, in
    // 3 minutes). The 30-minute run is the slow-leak check.
    assert!(
        anon_growth < PRIVATE_GROWTH_LIMIT,
        "anonymous memory grew {:.1}%",
        100.0 * anon_growth
    );
    assert!(
        end.threads <= base.threads,
        "threads leaked: {base:?} -> {end:?}"
    );
    assert!(
        end.fds <= base.fds,
        "descriptors leaked: {base:?} -> {end:?}"
    );
}
