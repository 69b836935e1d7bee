//! The `[transport]` config section: where the endpoint listens, who may use it, and the media
//! and session timing knobs. `configs/default.toml` documents every key with its range.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use vr_core::{check_range, ConfigError};

/// One STUN or TURN server handed to each peer connection (and to the browser page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN user name; empty for STUN.
    #[serde(default)]
    pub username: String,
    /// TURN password; empty for STUN. Static: prefer `secret`, whose credentials expire.
    #[serde(default)]
    pub credential: String,
    /// Shared secret of a TURN server using time-limited credentials (TURN REST API, coturn's
    /// `static-auth-secret`). When set, every authorised client (and the server itself) gets a
    /// user name `<expiry>:voicerelay` and an HMAC-SHA1 credential valid for
    /// `transport.turn_credential_ttl_s`; `username`/`credential` must then be empty.
    #[serde(default)]
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// HTTP listen address of `voicerelay serve` (`--bind` overrides it).
    pub bind: String,
    /// Local UDP addresses the peer connections bind for media; `0.0.0.0:0` means every
    /// non-loopback interface on an ephemeral port, `127.0.0.1:0` loopback only.
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers; empty = host candidates only.
    pub ice_servers: Vec<IceServerConfig>,
    /// Bearer token required on `/v1/sessions`; empty = no authentication.
    pub auth_token: String,
    /// Origins allowed by CORS; `["*"]` = any, `[]` = same-origin only (the default). A request
    /// from any other origin is refused with 403.
    pub cors_allowed_origins: Vec<String>,
    /// Host names accepted in the `Host` header besides loopback names (a reverse proxy's name).
    /// Bound to loopback, only loopback names and these are served (DNS rebinding); bound
    /// elsewhere with this empty, any host is.
    pub allowed_hosts: Vec<String>,
    /// This worker's name behind a load balancer: session ids (and so their URLs) start with
    /// `<worker_id>-`, so the balancer can send a session's `DELETE` and resume to the worker
    /// that holds it. Empty (the default): plain ids.
    pub worker_id: String,
    /// Lifetime of the TURN credentials made from an ICE server's `secret`, in seconds.
    pub turn_credential_ttl_s: u64,
    /// Concurrent sessions; one more gets HTTP 503.
    pub max_sessions: usize,
    /// Largest accepted offer body, in bytes.
    pub max_offer_bytes: usize,
    /// Typed turns (`{"type":"text"}` on the `events` channel) one session may send per second,
    /// sustained. Each one cancels the answer and queues a generation on the shared LLM worker;
    /// more are dropped, with one `error` event per dropped burst.
    pub events_text_per_s: f64,
    /// Typed turns one session may send at once before `events_text_per_s` applies.
    pub events_text_burst: u32,
    /// `interrupt`, `config` and unparseable messages one session may send per second,
    /// sustained (a bucket of their own, so a text flood never delays an `interrupt`).
    pub events_control_per_s: f64,
    /// Such messages one session may send at once.
    pub events_control_burst: u32,
    /// How long an offer may wait for ICE candidate gathering before the answer goes out.
    pub gather_timeout_ms: u64,
    /// A session whose peer never connects is freed after this long.
    pub connect_timeout_ms: u64,
    /// Without STUN traffic from the peer for this long, ICE reports `disconnected`.
    pub ice_disconnected_timeout_ms: u64,
    /// After `disconnected`, ICE gives up (`failed`) after this long.
    pub ice_failed_timeout_ms: u64,
    /// STUN keep-alive interval.
    pub ice_keepalive_ms: u64,
    /// A `disconnected` session that has not reconnected after this long is freed.
    pub disconnect_grace_ms: u64,
    /// How long a session whose client went away keeps its conversation (memory, voice, the
    /// answer in progress) for the client to resume with its resume token; its connection is
    /// freed at once. 0 frees everything when the connection is lost.
    pub resume_window_ms: u64,
    /// A connected session whose user has done nothing this long (no speech the recogniser
    /// heard, no answer playing, no accepted data-channel message) is closed, with an `error`
    /// event saying so: a tab left open does not hold a slot forever. 0: never.
    pub idle_timeout_ms: u64,
    /// Reordering window of the incoming jitter buffer: how long a missing packet is waited for
    /// before it is concealed (FEC from the next packet, else Opus PLC).
    pub jitter_ms: u64,
    /// Outgoing Opus bitrate, bits per second.
    pub opus_bitrate: i32,
    /// Opus encoder complexity (0 = cheapest, 10 = best).
    pub opus_complexity: u8,
    /// Put in-band FEC in the outgoing stream (the browser recovers single losses from it).
    pub opus_fec: bool,
    /// Loss percentage the outgoing encoder plans its FEC for.
    pub opus_expected_loss_percent: u8,
    /// Offer to receive redundant audio (RED, RFC 2198: each packet repeats the frame before
    /// it): a client that sends it loses a frame only when two packets in a row are lost, and
    /// gets it back at full quality. It costs the client's uplink, never the server's.
    pub red: bool,
    /// Capacity of the 16 kHz input ring between the decoder and the conversation, in ms.
    pub input_ring_ms: u64,
    /// Most answer audio the outgoing queue holds ahead of the real-time pacer, in ms.
    pub output_queue_ms: u64,
    /// On SIGTERM, how long sessions are given to close before the process exits anyway.
    pub shutdown_grace_ms: u64,
    /// Open HTTP connections at most; one more gets a 503 and is closed.
    pub max_http_connections: usize,
    /// A connection that has not sent a request's headers within this long is closed.
    pub http_header_timeout_ms: u64,
    /// An offer body that has not fully arrived within this long gets 408.
    pub http_body_timeout_ms: u64,
    /// After the sessions closed on shutdown, how long open HTTP connections get to finish.
    pub http_drain_ms: u64,
    /// `[transport.video]`: receiving the peer's camera and the receiver-side bitrate estimate.
    #[serde(default)]
    pub video: VideoConfig,
}

/// `[transport.video]`: the receiving side of video (VP8, H.264) and the REMB it sends back.
///
/// What is real: the answer accepts a video m-line (recvonly), abs-send-time is negotiated, each
/// video track's packets feed [`vr_abr::ReceiverEstimator`], and REMB goes back to the sender
/// with `min(estimate, ReCap cap)` clamped into `[min_bitrate_kbps, max_bitrate_kbps]`. What is
/// not: no depacketising or decoding, no frames into the conversation, and no measured ReCap
/// table ships with the project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// Accept a video track (VP8, H.264). Off: the answer rejects video m-lines (port 0).
    pub enabled: bool,
    /// Highest bitrate ever advertised by REMB, kbit/s.
    pub max_bitrate_kbps: u32,
    /// Lowest bitrate ever advertised by REMB (and the estimator's floor), kbit/s.
    pub min_bitrate_kbps: u32,
    /// Regular REMB interval, ms (a drop of 3 % or more is sent at once regardless).
    pub remb_interval_ms: u64,
    /// Path of a ReCapABR confidence-vs-bitrate table (TOML, format in `vr_abr::recap`).
    /// Empty = no cap: REMB carries the congestion estimate alone.
    pub recap_table: String,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bitrate_kbps: 2500,
            min_bitrate_kbps: 100,
            remb_interval_ms: 1000,
            recap_table: vr_abr::recap::BUILTIN.into(),
        }
    }
}

impl VideoConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "transport.video.min_bitrate_kbps",
            self.min_bitrate_kbps,
            30..=50_000,
        )?;
        check_range(
            "transport.video.max_bitrate_kbps",
            self.max_bitrate_kbps,
            30..=50_000,
        )?;
        if self.min_bitrate_kbps > self.max_bitrate_kbps {
            return Err(ConfigError::Invalid {
                key: "transport.video.min_bitrate_kbps".into(),
                value: self.min_bitrate_kbps.to_string(),
                reason: format!(
                    "must not exceed transport.video.max_bitrate_kbps ({})",
                    self.max_bitrate_kbps
                ),
            });
        }
        check_range(
            "transport.video.remb_interval_ms",
            self.remb_interval_ms,
            100..=10_000,
        )?;
        if self.enabled {
            self.load_recap_table()?;
        }
        Ok(())
    }

    /// The ReCap table at `recap_table`: `"builtin"` the project's measured table, a path a
    /// table file, empty no table (no cap).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `transport.video.recap_table` when the file cannot be
    /// read or is not a valid table (every row must say how it was measured).
    pub fn load_recap_table(&self) -> Result<vr_abr::RecapTable, ConfigError> {
        if self.recap_table.trim().is_empty() {
            return Ok(vr_abr::RecapTable::empty());
        }
        if self.recap_table.trim() == vr_abr::recap::BUILTIN {
            return vr_abr::RecapTable::from_toml_str(vr_abr::recap::BUILTIN_TABLE_TOML).map_err(
                |e| ConfigError::Invalid {
                    key: "transport.video.recap_table".into(),
                    value: self.recap_table.clone(),
                    reason: format!("the built-in table does not load: {e}"),
                },
            );
        }
        let invalid = |reason: String| ConfigError::Invalid {
            key: "transport.video.recap_table".into(),
            value: self.recap_table.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&self.recap_table)
            .map_err(|e| invalid(format!("cannot read the table: {e}")))?;
        vr_abr::RecapTable::from_toml_str(&text).map_err(|e| invalid(e.to_string()))
    }

    /// The estimator's parameters: bounds from this section (the start rate is the GCC default
    /// 300 kbit/s, clamped into them), the rest from `vr_abr`'s defaults.
    pub fn estimator_config(&self) -> vr_abr::EstimatorConfig {
        let mut c = vr_abr::EstimatorConfig::default();
        let min = vr_abr::Bitrate::from_kbps(u64::from(self.min_bitrate_kbps));
        let max = vr_abr::Bitrate::from_kbps(u64::from(self.max_bitrate_kbps));
        c.aimd.min_bps = min;
        c.aimd.max_bps = max;
        c.aimd.start_bps = c.aimd.start_bps.clamp_to(min, max);
        c.remb_interval = vr_abr::Micros::from_millis(self.remb_interval_ms);
        c
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            udp_addrs: vec!["0.0.0.0:0".into()],
            ice_servers: Vec::new(),
            auth_token: String::new(),
            cors_allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            worker_id: String::new(),
            turn_credential_ttl_s: 3600,
            max_sessions: 4,
            max_offer_bytes: 64 * 1024,
            events_text_per_s: 2.0,
            events_text_burst: 5,
            events_control_per_s: 10.0,
            events_control_burst: 20,
            gather_timeout_ms: 2000,
            connect_timeout_ms: 15_000,
            ice_disconnected_timeout_ms: 2000,
            ice_failed_timeout_ms: 4000,
            ice_keepalive_ms: 500,
            disconnect_grace_ms: 1000,
            resume_window_ms: 30_000,
            idle_timeout_ms: 600_000,
            jitter_ms: 60,
            opus_bitrate: 32_000,
            opus_complexity: 5,
            opus_fec: true,
            opus_expected_loss_percent: 5,
            red: true,
            input_ring_ms: 4000,
            output_queue_ms: 60_000,
            shutdown_grace_ms: 3000,
            max_http_connections: 256,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 10_000,
            http_drain_ms: 2000,
            video: VideoConfig::default(),
        }
    }
}

impl TransportConfig {
    /// Refuses to serve a non-loopback address without a token: anyone who can reach the port
    /// could then start conversations on this machine's models. `insecure` (`serve --insecure`)
    /// overrides it; the caller warns loudly then.
    pub fn check_exposure(&self, insecure: bool) -> Result<(), ConfigError> {
        let addr = self.bind_addr()?;
        if addr.ip().is_loopback() || !self.auth_token.is_empty() || insecure {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "transport.bind".into(),
            value: self.bind.clone(),
            reason: "a non-loopback address needs transport.auth_token (set \
                     VOICERELAY__TRANSPORT__AUTH_TOKEN); `serve --insecure` serves it without one"
                .into(),
        })
    }

    /// Whether the HTTP listener is on a loopback address (Host checks apply then).
    pub fn bound_to_loopback(&self) -> bool {
        self.bind_addr().is_ok_and(|a| a.ip().is_loopback())
    }

    /// The ICE servers as a peer uses them at `now_unix_s`: entries with a TURN `secret` get a
    /// user name and credential that expire `turn_credential_ttl_s` later; the secret itself
    /// never leaves the server.
    pub fn ice_servers_at(&self, now_unix_s: u64) -> Vec<IceServerConfig> {
        let expires = now_unix_s.saturating_add(self.turn_credential_ttl_s);
        self.ice_servers
            .iter()
            .filter_map(|s| {
                if s.secret.is_empty() {
                    return Some(s.clone());
                }
                match crate::guard::turn_rest_credential(&s.secret, expires, "voicerelay") {
                    Ok((username, credential)) => Some(IceServerConfig {
                        urls: s.urls.clone(),
                        username,
                        credential,
                        secret: String::new(),
                    }),
                    Err(e) => {
                        tracing::warn!(urls = ?s.urls, error = %e, "TURN secret unusable; server left out");
                        None
                    }
                }
            })
            .collect()
    }

    /// A copy with every secret replaced, for printing (`voicerelay config`).
    pub fn redacted(&self) -> Self {
        let hide = |v: &str| {
            if v.is_empty() {
                String::new()
            } else {
                "<redacted>".to_string()
            }
        };
        let mut c = self.clone();
        c.auth_token = hide(&c.auth_token);
        for s in &mut c.ice_servers {
            s.credential = hide(&s.credential);
            s.secret = hide(&s.secret);
        }
        c
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        let w = &self.worker_id;
        if w.len() > 32
            || !w
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::Invalid {
                key: "transport.worker_id".into(),
                value: w.clone(),
                reason: "at most 32 of a-z, 0-9 and _ (it starts every session's URL path)".into(),
            });
        }
        check_range("transport.udp_addrs count", self.udp_addrs.len(), 1..=16)?;
        for a in &self.udp_addrs {
            a.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                key: "transport.udp_addrs".into(),
                value: a.clone(),
                reason: format!("not an IP:port socket address ({e})"),
            })?;
        }
        check_range(
            "transport.ice_servers count",
            self.ice_servers.len(),
            0..=16,
        )?;
        for s in &self.ice_servers {
            check_range("transport.ice_servers.urls count", s.urls.len(), 1..=8)?;
            for u in &s.urls {
                let ok = ["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| u.starts_with(p));
                if !ok {
                    return Err(ConfigError::Invalid {
                        key: "transport.ice_servers.urls".into(),
                        value: u.clone(),
                        reason: "must start with stun:, stuns:, turn: or turns:".into(),
                    });
                }
                let has_static = !s.username.is_empty() && !s.credential.is_empty();
                let has_secret = !s.secret.is_empty();
                if u.starts_with("turn") && has_static == has_secret {
                    return Err(ConfigError::Invalid {
                        key: "transport.ice_servers".into(),
                        value: u.clone(),
                        reason: "a TURN server needs either a secret (time-limited credentials) \
                                 or username and credential, not both"
                            .into(),
                    });
                }
            }
        }
        check_range(
            "transport.auth_token length",
            self.auth_token.len(),
            0..=4096,
        )?;
        if self
            .auth_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::Invalid {
                key: "transport.auth_token".into(),
                value: "<hidden>".into(),
                reason: "must not contain whitespace or control characters".into(),
            });
        }
        check_range(
            "transport.cors_allowed_origins count",
            self.cors_allowed_origins.len(),
            0..=64,
        )?;
        for o in &self.cors_allowed_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "transport.cors_allowed_origins".into(),
                    value: o.clone(),
                    reason: "each entry is \"*\" or an origin like https://example.com".into(),
                });
            }
        }
        check_range(
            "transport.allowed_hosts count",
            self.allowed_hosts.len(),
            0..=64,
        )?;
        check_range(
            "transport.turn_credential_ttl_s",
            self.turn_credential_ttl_s,
            60..=86_400,
        )?;
        check_range("transport.max_sessions", self.max_sessions, 1..=1024)?;
        check_range(
            "transport.max_offer_bytes",
            self.max_offer_bytes,
            1024..=1 << 20,
        )?;
        check_range(
            "transport.events_text_per_s",
            self.events_text_per_s,
            0.01..=100.0,
        )?;
        check_range(
            "transport.events_text_burst",
            self.events_text_burst,
            1..=1000,
        )?;
        check_range(
            "transport.events_control_per_s",
            self.events_control_per_s,
            0.1..=1000.0,
        )?;
        check_range(
            "transport.events_control_burst",
            self.events_control_burst,
            1..=10_000,
        )?;
        check_range(
            "transport.gather_timeout_ms",
            self.gather_timeout_ms,
            100..=30_000,
        )?;
        check_range(
            "transport.connect_timeout_ms",
            self.connect_timeout_ms,
            1000..=300_000,
        )?;
        check_range(
            "transport.ice_disconnected_timeout_ms",
            self.ice_disconnected_timeout_ms,
            500..=60_000,
        )?;
        check_range(
            "transport.ice_failed_timeout_ms",
            self.ice_failed_timeout_ms,
            500..=120_000,
        )?;
        check_range(
            "transport.ice_keepalive_ms",
            self.ice_keepalive_ms,
            100..=30_000,
        )?;
        if self.ice_keepalive_ms >= self.ice_disconnected_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "transport.ice_keepalive_ms".into(),
                value: self.ice_keepalive_ms.to_string(),
                reason: format!(
                    "must be below transport.ice_disconnected_timeout_ms ({})",
                    self.ice_disconnected_timeout_ms
                ),
            });
        }
        check_range(
            "transport.disconnect_grace_ms",
            self.disconnect_grace_ms,
            0..=60_000,
        )?;
        check_range(
            "transport.resume_window_ms",
            self.resume_window_ms,
            0..=600_000,
        )?;
        check_range(
            "transport.idle_timeout_ms",
            self.idle_timeout_ms,
            0..=86_400_000,
        )?;
        check_range("transport.jitter_ms", self.jitter_ms, 0..=1000)?;
        check_range("transport.opus_bitrate", self.opus_bitrate, 6_000..=256_000)?;
        check_range("transport.opus_complexity", self.opus_complexity, 0..=10)?;
        check_range(
            "transport.opus_expected_loss_percent",
            self.opus_expected_loss_percent,
            0..=100,
        )?;
        check_range("transport.input_ring_ms", self.input_ring_ms, 200..=60_000)?;
        check_range(
            "transport.output_queue_ms",
            self.output_queue_ms,
            200..=600_000,
        )?;
        check_range(
            "transport.shutdown_grace_ms",
            self.shutdown_grace_ms,
            0..=60_000,
        )?;
        check_range(
            "transport.max_http_connections",
            self.max_http_connections,
            1..=65_536,
        )?;
        check_range(
            "transport.http_header_timeout_ms",
            self.http_header_timeout_ms,
            100..=120_000,
        )?;
        check_range(
            "transport.http_body_timeout_ms",
            self.http_body_timeout_ms,
            100..=120_000,
        )?;
        check_range("transport.http_drain_ms", self.http_drain_ms, 0..=60_000)?;
        self.video.validate()
    }

    /// `bind` as a socket address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind.parse().map_err(|e| ConfigError::Invalid {
            key: "transport.bind".into(),
            value: self.bind.clone(),
            reason: format!("not an IP:port socket address ({e})"),
        })
    }

    /// The per-session limits on `events` client messages.
    pub fn event_limits(&self) -> crate::ratelimit::EventLimits {
        crate::ratelimit::EventLimits {
            text_per_s: self.events_text_per_s,
            text_burst: self.events_text_burst,
            control_per_s: self.events_control_per_s,
            control_burst: self.events_control_burst,
        }
    }

    pub fn gather_timeout(&self) -> Duration {
        Duration::from_millis(self.gather_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn disconnect_grace(&self) -> Duration {
        Duration::from_millis(self.disconnect_grace_ms)
    }
    pub fn resume_window(&self) -> Duration {
        Duration::from_millis(self.resume_window_ms)
    }
    /// `None`: sessions never time out.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
    pub fn jitter(&self) -> Duration {
        Duration::from_millis(self.jitter_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        TransportConfig::default().validate().unwrap();
        let c = TransportConfig {
            max_sessions: 0,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("transport.max_sessions"), "{e}");
        let c = TransportConfig {
            bind: "localhost".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("transport.bind"));
        let c = TransportConfig {
            ice_servers: vec![IceServerConfig {
                urls: vec!["turn:example.org:3478".into()],
                username: String::new(),
                credential: String::new(),
                secret: String::new(),
            }],
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("TURN server needs either a secret"), "{e}");
        for (c, key) in [
            (
                TransportConfig {
                    events_text_per_s: 0.0,
                    ..Default::default()
                },
                "transport.events_text_per_s",
            ),
            (
                TransportConfig {
                    events_text_per_s: f64::NAN,
                    ..Default::default()
                },
                "transport.events_text_per_s",
            ),
            (
                TransportConfig {
                    events_text_burst: 0,
                    ..Default::default()
                },
                "transport.events_text_burst",
            ),
            (
                TransportConfig {
                    events_control_per_s: 5000.0,
                    ..Default::default()
                },
                "transport.events_control_per_s",
            ),
            (
                TransportConfig {
                    events_control_burst: 0,
                    ..Default::default()
                },
                "transport.events_control_burst",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let c = TransportConfig {
            ice_keepalive_ms: 5000,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ice_keepalive_ms"));
    }

    #[test]
    fn video_section_is_validated() {
        let bad = |v: VideoConfig| {
            TransportConfig {
                video: v,
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        let e = bad(VideoConfig {
            min_bitrate_kbps: 3000,
            ..Default::default()
        });
        assert!(e.contains("transport.video.min_bitrate_kbps"), "{e}");
        let e = bad(VideoConfig {
            remb_interval_ms: 0,
            ..Default::default()
        });
        assert!(e.contains("transport.video.remb_interval_ms"), "{e}");
        let e = bad(VideoConfig {
            recap_table: "/nonexistent/recap.toml".into(),
            ..Default::default()
        });
        assert!(e.contains("transport.video.recap_table"), "{e}");
        let est = VideoConfig {
            min_bitrate_kbps: 400,
            max_bitrate_kbps: 800,
            ..Default::default()
        }
        .estimator_config();
        assert_eq!(est.aimd.start_bps, vr_abr::Bitrate::from_kbps(400));
        assert_eq!(est.aimd.max_bps, vr_abr::Bitrate::from_kbps(800));
        est.validate().unwrap();
    }

    /// `configs/default.toml`'s `[transport]` section is exactly the built-in default (the
    /// binary's config test checks the whole file; this one runs with the transport crate).
    #[test]
    fn default_toml_transport_section_matches_default() {
        let text = include_str!("../../configs/default.toml");
        let all: toml::Table = toml::from_str(text).unwrap();
        let t: TransportConfig = all["transport"].clone().try_into().unwrap();
        assert_eq!(t, TransportConfig::default());
    }
}
