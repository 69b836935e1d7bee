//! Reading an offer request: `application/sdp` (WHIP) or JSON `{"type":"offer","sdp":...}`.

use serde::Deserialize;
use webrtc::peer_connection::RTCSessionDescription;

use crate::session::media_sections;

/// How the client sent its offer; the answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Sdp,
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOffer {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// A rejected request: HTTP status, machine-readable code, human reason.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub reason: String,
}

fn bad(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        code,
        reason: reason.into(),
    }
}

/// Parses and checks the offer: it must be SDP that parses, of type offer, with an audio
/// section (the microphone) — the `events` data channel is optional.
pub(crate) fn parse_offer(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(RTCSessionDescription, Format), Refusal> {
    let mime = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let (sdp, format) = match mime.as_str() {
        "application/sdp" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| bad("invalid_sdp", "the SDP offer is not UTF-8"))?;
            (text.to_string(), Format::Sdp)
        }
        "application/json" => {
            let o: JsonOffer = serde_json::from_slice(body).map_err(|e| {
                bad(
                    "invalid_json",
                    format!("expected {{\"type\":\"offer\",\"sdp\":\"...\"}}: {e}"),
                )
            })?;
            if o.kind != "offer" {
                return Err(bad(
                    "not_an_offer",
                    format!(
                        "description type is {:?}; only \"offer\" is accepted",
                        o.kind
                    ),
                ));
            }
            (o.sdp, Format::Json)
        }
        _ => {
            return Err(Refusal {
                status: 415,
                code: "unsupported_media_type",
                reason: format!(
                    "Content-Type {:?} is not accepted; send application/sdp or application/json",
                    content_type.unwrap_or("")
                ),
            })
        }
    };
    if !sdp.trim_start().starts_with("v=0") {
        return Err(bad(
            "invalid_sdp",
            "the offer is not SDP (it must start with v=0)",
        ));
    }
    let desc = RTCSessionDescription::offer(sdp)
        .map_err(|e| bad("invalid_sdp", format!("the SDP offer does not parse: {e}")))?;
    let (_, audio, _) = media_sections(&desc)
        .map_err(|e| bad("invalid_sdp", format!("the SDP offer does not parse: {e}")))?;
    if !audio {
        return Err(bad(
            "no_audio",
            "the offer has no audio section; add a microphone track (sendrecv) before creating it",
        ));
    }
    Ok((desc, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=fingerprint:sha-256 AA:BB\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn offers_are_checked_with_reasons() {
        let (_, f) = parse_offer(Some("application/sdp"), AUDIO_OFFER.as_bytes()).unwrap();
        assert_eq!(f, Format::Sdp);
        let json = serde_json::json!({"type": "offer", "sdp": AUDIO_OFFER}).to_string();
        let (_, f) = parse_offer(Some("application/json; charset=utf-8"), json.as_bytes()).unwrap();
        assert_eq!(f, Format::Json);

        let e = parse_offer(Some("application/sdp"), b"hello there").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_sdp"));
        let e = parse_offer(Some("text/plain"), AUDIO_OFFER.as_bytes()).unwrap_err();
        assert_eq!(e.status, 415);
        let video = AUDIO_OFFER
            .replace(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
            )
            .replace("opus/48000/2", "VP8/90000");
        let e = parse_offer(Some("application/sdp"), video.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.code), (400, "no_audio"));
        let answer = serde_json::json!({"type": "answer", "sdp": AUDIO_OFFER}).to_string();
        let e = parse_offer(Some("application/json"), answer.as_bytes()).unwrap_err();
        assert_eq!(e.code, "not_an_offer");
        let e = parse_offer(Some("application/json"), b"{\"sdp\":1}").unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }
}
