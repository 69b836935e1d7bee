//! A user-space path impairment between a WebRTC client and `voicerelay serve`: a UDP relay
//! that drops and delays the client's uplink datagrams. It stands in for `tc netem`, whose
//! qdisc this machine's kernel does not have (`tc qdisc add dev lo root netem` fails with
//! "Specified qdisc kind is unknown"); the server sees the same thing either way: sequence gaps,
//! reordering and late packets on its RTP, SCTP and DTLS.
//!
//! The relay listens on one loopback port and forwards to the server's ICE candidate; the
//! client learns the relay's port instead of the server's through a rewritten answer SDP, and
//! the server learns the relay's back socket as a peer-reflexive candidate. As the controlling
//! agent the client nominates the only pair it knows, so both directions go through the relay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What happens to each uplink datagram while the impairment is on.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Fixed one-way delay added to every datagram.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram; datagrams overtake each
    /// other when it exceeds their spacing (20 ms for audio), as with netem's jitter.
    pub jitter: Duration,
}

#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    /// Datagrams with an RTP/RTCP first byte (RFC 7983: 128..=191) among the forwarded ones.
    pub rtp_forwarded: AtomicU64,
    pub downlink: AtomicU64,
}

pub struct Relay {
    pub front: SocketAddr,
    pub stats: Arc<RelayStats>,
    on: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying to `server`; `impairment` applies to the uplink once [`Relay::impair`]
    /// turns it on (after the connection is up, so the test measures the media path, not how
    /// long a lossy DTLS handshake takes).
    pub async fn start(server: SocketAddr, impairment: Option<Impairment>, seed: u64) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay front"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay back"));
        back.connect(server).await.expect("relay back connect");
        let front_addr = front.local_addr().expect("relay addr");
        let stats = Arc::new(RelayStats::default());
        let on = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();

        let up = {
            let (front, back, stats, on, client) = (
                front.clone(),
                back.clone(),
                stats.clone(),
                on.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut rng = vr_core::rng::SplitMix64::new(seed);
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    let d = buf[..n].to_vec();
                    let impair = impairment.filter(|_| on.load(Ordering::SeqCst));
                    let Some(imp) = impair else {
                        send_up(&back, &stats, &d).await;
                        continue;
                    };
                    if rng.next_f64() < imp.loss {
                        stats.dropped.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let wait = imp.delay + imp.jitter.mul_f64(rng.next_f64());
                    let (back, stats) = (back.clone(), stats.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        send_up(&back, &stats, &d).await;
                    });
                }
            })
        };
        let down = {
            let (front, back, stats) = (front.clone(), back.clone(), stats.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = back.recv(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let Some(to) = to {
                        let _ = front.send_to(&buf[..n], to).await;
                        stats.downlink.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Relay {
            front: front_addr,
            stats,
            on,
            tasks: vec![up, down],
        }
    }

    pub fn impair(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }
}

async fn send_up(back: &UdpSocket, stats: &RelayStats, d: &[u8]) {
    if back.send(d).await.is_ok() {
        stats.forwarded.fetch_add(1, Ordering::SeqCst);
        if (128..=191).contains(&d[0]) {
            stats.rtp_forwarded.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The first IPv4 UDP host candidate in `sdp`: where the server listens.
pub fn server_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let t: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        if t.len() < 8 || !t[2].eq_ignore_ascii_case("udp") || t[7] != "host" {
            return None;
        }
        format!("{}:{}", t[4], t[5]).parse().ok()
    })
}

/// `sdp` with every candidate replaced by one host candidate at `relay`, so the client's
/// connectivity checks (and then all its traffic) go to the relay.
pub fn through_relay(sdp: &str, relay: SocketAddr) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(rest) = l.strip_prefix("a=candidate:") {
            let mut t: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if done || t.len() < 8 || t[7] != "host" || !t[2].eq_ignore_ascii_case("udp") {
                continue;
            }
            t[4] = relay.ip().to_string();
            t[5] = relay.port().to_string();
            out.push_str(&format!("a=candidate:{}\r\n", t.join(" ")));
            done = true;
        } else {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out
}
