//! Resume: a client whose connection goes (a tab reload, a network change) comes back with its
//! resume token on a new peer connection and gets its conversation back — the answer it was
//! hearing goes on, and the next answer knows what was said before. A fresh session asked the
//! same question is the control: it must not know. Wrong tokens and unknown sessions are
//! refused, and the session's slot is held, connection-less, while it waits.

mod common;

use common::*;
use std::time::Duration;

const COLOUR: &str = "turquoise";

/// Sends a typed turn; the text of its answer (the first uninterrupted `answer_end` after it:
/// an answer the turn cut short ends first, interrupted).
async fn ask(c: &Client, text: &str) -> String {
    let before = c.received.lock().unwrap().of_type("answer_end").len();
    c.send_json(serde_json::json!({"type": "text", "text": text}))
        .await;
    let answer = |r: &Received| {
        r.of_type("answer_end")
            .into_iter()
            .skip(before)
            .find(|e| e["interrupted"] == false)
            .map(|e| e["text"].as_str().unwrap_or_default().to_string())
    };
    c.wait_for(Duration::from_secs(150), text, |r| answer(r).is_some())
        .await;
    let r = c.received.lock().unwrap();
    answer(&r).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_client_gets_its_conversation_and_the_answer_in_progress_back() {
    let server = ServerProcess::start(&[]);
    let url = server.url.clone();

    // A: tells the assistant something, then asks for a long answer and goes mid-answer.
    let mut a = Client::new(true).await;
    a.connect(&url, None).await;
    let a_mic = a.spawn_silence();
    let location = a.location.clone().expect("Location of the session");
    let token = a
        .resume_token
        .clone()
        .expect("a resume token with the answer");
    assert_eq!(token.len(), 32, "{token}");
    let told = ask(
        &a,
        &format!("My favourite colour is {COLOUR}. Please remember that."),
    )
    .await;
    println!("A told, answer: {told}");
    // Mid-story: its first clause is playing (its text event came and A has heard half a second
    // more of audio than the first answer's).
    let (texts, heard) = {
        let r = a.received.lock().unwrap();
        (r.of_type("assistant_text").len(), r.speech_rms().1)
    };
    a.send_json(serde_json::json!({
        "type": "text",
        "text": "Tell me a long story about a lighthouse keeper and his cat, in about ten sentences."
    }))
    .await;
    a.wait_for(Duration::from_secs(150), "the story's first audio", |r| {
        r.of_type("assistant_text").len() > texts && r.speech_rms().1 >= heard + 25
    })
    .await;
    let heard_by_a = a.received.lock().unwrap().speech_rms().1 - heard;
    a_mic.abort();
    a.pc.close().await.expect("close A");
    println!("A left after {heard_by_a} packets of the story");

    // The connection is freed; the conversation waits, holding its slot.
    wait_metric(
        &url,
        "transport_sessions_parked",
        1.0,
        Duration::from_secs(10),
    )
    .await
    .expect("the session never waited for a resume");
    let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
    assert_eq!(metric(&m, "transport_sessions_active"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "transport_pipelines_running"), Some(1.0), "{m}");
    let list = http("GET", &format!("{url}/v1/sessions"), &[], None)
        .await
        .json();
    let listed = &list["sessions"][0];
    assert_eq!(listed["waiting_for_resume"], true, "{list}");
    assert!(location.ends_with(listed["id"].as_str().unwrap_or("?")));

    // Refusals: a wrong token, no token's worth of guessing, an unknown session.
    let mut x = Client::new(true).await;
    let wrong = x.offer_resume(&url, &location, &"0".repeat(32)).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert_eq!(wrong.json()["error"], "bad_resume_token");
    let mut y = Client::new(true).await;
    let unknown = y
        .offer_resume(&url, &format!("/v1/sessions/{}", "f".repeat(32)), &token)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // B: the same client back on a new connection.
    let mut b = Client::new(true).await;
    b.resume(&url, &location, &token).await;
    let b_mic = b.spawn_silence();
    b.wait_for(Duration::from_secs(10), "the resumed event", |r| {
        !r.of_type("resumed").is_empty()
    })
    .await;
    // The story goes on where the queue held it: two seconds of it, far more than the 300 ms
    // the conversation writes ahead (`dialog.output_lead_ms`), so it kept speaking after the
    // resume, not just what was queued.
    b.wait_for(
        Duration::from_secs(60),
        "2 s of the rest of the story",
        |r| r.speech_rms().1 >= 100,
    )
    .await;
    let (rms, n) = b.received.lock().unwrap().speech_rms();
    println!("B heard {n} packets of the story (RMS {rms:.3}) after resuming");
    assert!(rms > 0.01, "{rms}");
    let recalled = ask(&b, "What is my favourite colour? Answer in a few words.").await;
    println!("B asked, answer: {recalled}");
    assert!(
        recalled.to_lowercase().contains(COLOUR),
        "the resumed conversation forgot what was said before it: {recalled:?}"
    );

    // A reload before the server noticed the old connection go: the resume takes the session
    // over from the connection still up.
    let mut d = Client::new(true).await;
    d.resume(&url, &location, &token).await;
    let d_mic = d.spawn_silence();
    d.wait_for(Duration::from_secs(10), "the resumed event", |r| {
        !r.of_type("resumed").is_empty()
    })
    .await;
    let again = ask(&d, "Say my favourite colour once more, in a few words.").await;
    println!("D (took over from B) asked, answer: {again}");
    assert!(again.to_lowercase().contains(COLOUR), "{again:?}");
    b_mic.abort();

    // Control: a new session does not know.
    let mut c = Client::new(true).await;
    c.connect(&url, None).await;
    let fresh = ask(&c, "What is my favourite colour? Answer in a few words.").await;
    println!("a fresh session's answer: {fresh}");
    assert!(
        !fresh.to_lowercase().contains(COLOUR),
        "a fresh session knew the colour, so the recall proves nothing: {fresh:?}"
    );

    let m = http("GET", &format!("{url}/metrics"), &[], None).await.body;
    assert_eq!(
        metric(&m, "transport_sessions_resumed_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "transport_sessions_started_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(metric(&m, "transport_sessions_parked"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "transport_sessions_active"), Some(2.0), "{m}");

    d_mic.abort();
    for loc in [location, c.location.clone().expect("C's location")] {
        let r = http("DELETE", &format!("{url}{loc}"), &[], None).await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    assert!(
        wait_sessions(&url, 0.0, Duration::from_secs(30))
            .await
            .is_some(),
        "sessions not freed after DELETE"
    );
}
