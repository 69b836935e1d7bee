//! Bad input never breaks the endpoint: garbage SDP, an offer without audio, an oversized body,
//! a wrong content type or token each get a 4xx with a JSON reason; admission control answers
//! 503 when full; and the server keeps serving good offers throughout.

mod common;

use common::*;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

fn check_refusal(r: &HttpReply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(
        j["reason"].as_str().is_some_and(|s| s.len() > 10),
        "reason missing: {j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_get_json_4xx_and_the_server_keeps_serving() {
    let server = ServerProcess::start(&[
        ("VOICERELAY__TRANSPORT__AUTH_TOKEN", TOKEN),
        ("VOICERELAY__TRANSPORT__MAX_SESSIONS", "1"),
    ]);
    let url = &server.url;
    let sessions = format!("{url}/v1/sessions");
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("authorization", bearer.as_str());
    let sdp_type = ("content-type", "application/sdp");

    let h = http("GET", &format!("{url}/healthz"), &[], None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");

    let mut good = Client::new(true).await;
    let offer = good.offer().await;

    // Auth: missing and wrong tokens.
    let r = http("POST", &sessions, &[sdp_type], Some(offer.clone().into())).await;
    check_refusal(&r, 401, "unauthorized");
    let r = http(
        "POST",
        &sessions,
        &[sdp_type, ("authorization", "Bearer wrong")],
        Some(offer.clone().into()),
    )
    .await;
    check_refusal(&r, 401, "unauthorized");

    // Garbage SDP, in both accepted formats.
    let r = http(
        "POST",
        &sessions,
        &[sdp_type, auth],
        Some(b"v=0\r\nthis is not sdp".to_vec()),
    )
    .await;
    check_refusal(&r, 400, "invalid_sdp");
    let r = http(
        "POST",
        &sessions,
        &[sdp_type, auth],
        Some(vec![0xff, 0xfe, 0x00]),
    )
    .await;
    check_refusal(&r, 400, "invalid_sdp");
    let r = http(
        "POST",
        &sessions,
        &[("content-type", "application/json"), auth],
        Some(b"{\"type\":\"offer\"".to_vec()),
    )
    .await;
    check_refusal(&r, 400, "invalid_json");

    // An offer without audio (data channel only, from a real peer).
    let mut dataonly = Client::new(false).await;
    let no_audio = dataonly.offer().await;
    assert!(!no_audio.contains("m=audio"));
    let r = http("POST", &sessions, &[sdp_type, auth], Some(no_audio.into())).await;
    check_refusal(&r, 400, "no_audio");

    // Oversized body (limit 64 KiB).
    let mut big = offer.clone().into_bytes();
    big.resize(70_000, b'a');
    let r = http("POST", &sessions, &[sdp_type, auth], Some(big)).await;
    check_refusal(&r, 413, "offer_too_large");

    // Wrong content type.
    let r = http(
        "POST",
        &sessions,
        &[("content-type", "text/plain"), auth],
        Some(offer.clone().into()),
    )
    .await;
    check_refusal(&r, 415, "unsupported_media_type");

    // Prepared now: a peer that never answers ICE checks is freed in a few seconds, so the 503
    // check must follow the first session's creation closely.
    let mut second = Client::new(true).await;
    let offer2 = second.offer().await;

    // A good offer as JSON is answered as JSON, with a Location.
    let body = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
    let r = http(
        "POST",
        &sessions,
        &[("content-type", "application/json"), auth],
        Some(body.into()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let j = r.json();
    assert_eq!(j["type"], "answer");
    assert!(j["sdp"].as_str().unwrap().contains("m=audio"));
    let loc = r.location.clone().expect("Location");
    assert!(loc.starts_with("/v1/sessions/"), "{loc}");
    let answer = webrtc::peer_connection::RTCSessionDescription::answer(
        j["sdp"].as_str().unwrap().to_string(),
    )
    .expect("answer parses");
    good.pc
        .set_remote_description(answer)
        .await
        .expect("apply answer");

    // Full (max_sessions = 1): 503 with a reason.
    let r = http(
        "POST",
        &sessions,
        &[sdp_type, auth],
        Some(offer2.clone().into()),
    )
    .await;
    check_refusal(&r, 503, "too_many_sessions");

    // DELETE frees the slot; a second DELETE is a 404.
    let r = http("DELETE", &format!("{url}{loc}"), &[auth], None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http("DELETE", &format!("{url}{loc}"), &[auth], None).await;
    check_refusal(&r, 404, "no_such_session");

    // Still serving: a new peer gets in now, and really connects.
    drop(second);
    let mut third = Client::new(true).await;
    third.connect(url, Some(TOKEN)).await;
    let r = http("GET", &sessions, &[auth], None).await;
    assert_eq!(r.json()["sessions"].as_array().map(Vec::len), Some(1));
    let loc = third.location.clone().unwrap();
    let r = http("DELETE", &format!("{url}{loc}"), &[auth], None).await;
    assert_eq!(r.status, 204);
    assert!(wait_sessions(url, 0.0, Duration::from_secs(5))
        .await
        .is_some());

    let m = http("GET", &format!("{url}/metrics"), &[], None).await;
    assert!(
        m.body
            .contains("transport_sessions_rejected_total{reason=\"invalid_sdp\"} 2"),
        "{}",
        m.body
    );
    assert!(m
        .body
        .contains("transport_sessions_rejected_total{reason=\"no_audio\"} 1"));
    let r = http("GET", &format!("{url}/nope"), &[], None).await;
    check_refusal(&r, 404, "not_found");
    let h = http("GET", &format!("{url}/healthz"), &[], None).await;
    assert_eq!(h.status, 200);
    drop(good);
}
