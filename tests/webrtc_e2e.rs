//! A webrtc-rs client talks to `voicerelay serve` on loopback: it speaks a corpus utterance as
//! Opus at real-time pace and must get back the final transcript (WER ≤ 15%), the assistant's
//! text, and assistant audio whose decoded level is speech, not silence.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_speaks_and_hears_the_assistant() {
    let Some((speech, reference, _)) = utterance_48k() else {
        return;
    };
    let server = ServerProcess::start(&[]);
    let mut c = Client::new(true).await;
    c.connect(&server.url, None).await;
    c.speak(&speech, Duration::from_millis(1000)).await;
    let mic = c.spawn_silence();
    c.wait_for(
        Duration::from_secs(150),
        "the final transcript, the assistant's text and 1 s of its audio",
        |r| {
            !r.of_type("final").is_empty()
                && !r.of_type("assistant_text").is_empty()
                && r.speech_rms().1 >= 50
        },
    )
    .await;
    mic.abort();

    let (finals, answer, (rms, loud), packets) = {
        let r = c.received.lock().unwrap();
        let finals: Vec<String> = r
            .of_type("final")
            .iter()
            .filter_map(|e| e["text"].as_str().map(str::to_string))
            .collect();
        let answer: Vec<String> = r
            .of_type("assistant_text")
            .iter()
            .filter_map(|e| e["text"].as_str().map(str::to_string))
            .collect();
        (finals, answer, r.speech_rms(), r.packets)
    };
    let heard = finals.join(" ");
    let w = wer(&reference, &heard);
    println!(
        "reference: {reference}\nheard:     {heard}\nWER {:.1}%",
        100.0 * w
    );
    println!("assistant: {}", answer.join(" "));
    println!("assistant audio: {packets} packets, {loud} with sound, rms {rms:.3}");
    assert!(w <= 0.15, "WER {:.1}% > 15%", 100.0 * w);
    assert!(
        answer.iter().any(|t| t.chars().any(char::is_alphabetic)),
        "assistant text is empty: {answer:?}"
    );
    // Speech-level: Piper speaks at about -20 dBFS RMS; silence or codec noise is far below.
    assert!(rms > 0.02, "assistant audio rms {rms} is not speech level");

    // WHIP teardown: DELETE on the Location frees the session within 5 s.
    let loc = c.location.clone().expect("Location header");
    let r = http("DELETE", &format!("{}{loc}", server.url), &[], None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        wait_sessions(&server.url, 0.0, Duration::from_secs(5))
            .await
            .is_some(),
        "session not freed within 5 s of DELETE"
    );
}
