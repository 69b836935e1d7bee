//! Who may talk to the endpoint: the Host and Origin checks that keep a web page the operator
//! happens to open (or a DNS-rebinding page) from driving a server on `127.0.0.1`, and the
//! time-limited TURN credentials handed to authorised clients. Pure functions; the HTTP
//! middleware in `server.rs` applies them.

use base64::Engine as _;
use hmac::{Hmac, Mac};

/// The host part of a `Host` header or an origin's authority, lower-cased, without the port
/// (`[::1]:8080` → `[::1]`, `Example.COM:80` → `example.com`).
fn host_only(authority: &str) -> String {
    let a = authority.trim();
    let host = if a.starts_with('[') {
        match a.find(']') {
            Some(end) => &a[..=end],
            None => a,
        }
    } else {
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

/// Whether a host name is this machine: `localhost`, `127.0.0.0/8`, `[::1]`.
fn is_loopback_name(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") || host == "[::1]" {
        return true;
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request's `Host` header is acceptable. A server bound to loopback answers only to
/// loopback names (plus `allowed_hosts`): a DNS-rebinding page reaches it under the attacker's
/// name, which this refuses. A server bound elsewhere needs a token (see
/// `TransportConfig::check_exposure`) and accepts any host unless `allowed_hosts` lists them.
pub fn host_allowed(host: Option<&str>, bound_to_loopback: bool, allowed_hosts: &[String]) -> bool {
    let Some(host) = host.map(host_only) else {
        return !bound_to_loopback && allowed_hosts.is_empty();
    };
    if allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return true;
    }
    if bound_to_loopback {
        is_loopback_name(&host)
    } else {
        allowed_hosts.is_empty()
    }
}

/// Whether a request's `Origin` header is acceptable: no Origin (not a browser's cross-origin
/// request), the page's own origin (same authority as `Host`), or one of the configured CORS
/// origins. Anything else is another web site's page.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, cors_origins: &[String]) -> bool {
    let Some(origin) = origin.map(str::trim) else {
        return true;
    };
    if cors_origins.iter().any(|o| o == "*" || o == origin) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (authority, host) {
        (Some(a), Some(h)) => a.eq_ignore_ascii_case(h.trim()),
        _ => false,
    }
}

/// TURN REST API credentials (the scheme coturn's `use-auth-secret` checks): the user name is
/// the expiry time in Unix seconds and a label, the password base64(HMAC-SHA1(secret, user)).
/// The TURN server accepts them until `expires_unix_s`, so a leaked pair stops working on its own.
pub fn turn_rest_credential(
    secret: &str,
    expires_unix_s: u64,
    label: &str,
) -> Result<(String, String), hmac::digest::InvalidLength> {
    let username = format!("{expires_unix_s}:{label}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())?;
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok((username, credential))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn loopback_server_answers_only_to_loopback_names() {
        for h in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.9.9.9",
            "LOCALHOST",
        ] {
            assert!(host_allowed(Some(h), true, &[]), "{h}");
        }
        for h in [
            "evil.example:8080",
            "192.168.1.5:8080",
            "127.0.0.1.evil.example",
            "[::2]:80",
        ] {
            assert!(!host_allowed(Some(h), true, &[]), "{h}");
        }
        assert!(!host_allowed(None, true, &[]));
        // A reverse proxy's name can be allowed explicitly.
        assert!(host_allowed(
            Some("voice.example.org"),
            true,
            &s(&["voice.example.org"])
        ));
    }

    #[test]
    fn public_server_accepts_any_host_unless_listed() {
        assert!(host_allowed(Some("203.0.113.7:8080"), false, &[]));
        assert!(host_allowed(None, false, &[]));
        let list = s(&["voice.example.org"]);
        assert!(host_allowed(Some("voice.example.org:443"), false, &list));
        assert!(!host_allowed(Some("other.example.org"), false, &list));
    }

    #[test]
    fn only_same_origin_or_configured_origins_pass() {
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), host, &[]));
        assert!(!origin_allowed(Some("http://127.0.0.1:9999"), host, &[]));
        assert!(!origin_allowed(Some("https://evil.example"), host, &[]));
        assert!(!origin_allowed(Some("null"), host, &[]));
        let cors = s(&["https://app.example.org"]);
        assert!(origin_allowed(Some("https://app.example.org"), host, &cors));
        assert!(origin_allowed(
            Some("https://evil.example"),
            host,
            &s(&["*"])
        ));
    }

    #[test]
    fn turn_rest_credential_matches_the_published_scheme() {
        // Expected value computed independently:
        // python3 -c "import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b'north',
        //   b'1700000000:voicerelay',hashlib.sha1).digest()).decode())"
        let (user, cred) =
            turn_rest_credential("north", 1_700_000_000, "voicerelay").expect("any key length");
        assert_eq!(user, "1700000000:voicerelay");
        assert_eq!(cred, "Pu6iuM8rID73YgNQdZVhHx388vI=");
    }
}
