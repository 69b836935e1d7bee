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
    /// Lifetime of the TURN credentials made from an ICE server's `secret`, in seconds.
    pub turn_credential_ttl_s: u64,
    /// Concurrent sessions; one more gets HTTP 503.
    pub max_sessions: usize,
    /// Largest accepted offer body, in bytes.
    pub max_offer_bytes: usize,
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
    /// Capacity of the 16 kHz input ring between the decoder and the conversation, in ms.
    pub input_ring_ms: u64,
    /// Most answer audio the outgoing queue holds ahead of the real-time pacer, in ms.
    pub output_queue_ms: u64,
    /// On SIGTERM, how long sessions are given to close before the process exits anyway.
    pub shutdown_grace_ms: u64,
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
            turn_credential_ttl_s: 3600,
            max_sessions: 4,
            max_offer_bytes: 64 * 1024,
            gather_timeout_ms: 2000,
            connect_timeout_ms: 15_000,
            ice_disconnected_timeout_ms: 2000,
            ice_failed_timeout_ms: 4000,
            ice_keepalive_ms: 500,
            disconnect_grace_ms: 1000,
            jitter_ms: 60,
            opus_bitrate: 32_000,
            opus_complexity: 5,
            opus_fec: true,
            opus_expected_loss_percent: 5,
            input_ring_ms: 4000,
            output_queue_ms: 60_000,
            shutdown_grace_ms: 3000,
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
        Ok(())
    }

    /// `bind` as a socket address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind.parse().map_err(|e| ConfigError::Invalid {
            key: "transport.bind".into(),
            value: self.bind.clone(),
            reason: format!("not an IP:port socket address ({e})"),
        })
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
}
