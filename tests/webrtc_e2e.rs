//! A webrtc-rs client talks to `voicerelay serve` on loopback: it speaks a corpus utterance as
//! Opus at real-time pace and must get back the final transcript (WER ≤ 15%), the assistant's
//! text, and assistant audio whose decoded level is speech, not silence. Then, over the events
//! channel, it switches the session's voice (`config`), types a turn (`text`: answered in the
//! new voice, with a latency event whose speech stages are absent), and sends bad settings
//! (an `error` each, and the session keeps answering).

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

    // The conversation announced its voice when it started listening.
    let first_voice = c
        .received
        .lock()
        .unwrap()
        .of_type("voice")
        .first()
        .cloned()
        .cloned();
    let first_voice = first_voice.expect("no voice event at the start");
    assert_eq!(first_voice["voice"], "piper", "{first_voice}");
    assert_eq!(first_voice["sample_rate"], 22050, "{first_voice}");

    // Per-session voice: applied between answers, so let the spoken answer end first.
    c.wait_for(Duration::from_secs(120), "the spoken answer to end", |r| {
        !r.of_type("answer_end").is_empty()
    })
    .await;
    c.send_json(serde_json::json!({"type": "config", "voice": "flite"}))
        .await;
    c.wait_for(Duration::from_secs(20), "a voice event naming flite", |r| {
        r.of_type("voice").iter().any(|v| v["voice"] == "flite")
    })
    .await;
    let (ends_before, frames_before) = {
        let r = c.received.lock().unwrap();
        let v = r.of_type("voice");
        let flite = v.iter().find(|v| v["voice"] == "flite").unwrap();
        // flite's cmu_us_slt speaks at 16 kHz (Piper's joe at 22.05 kHz): the voice really changed.
        assert_eq!(flite["sample_rate"], 16000, "{flite}");
        (r.of_type("answer_end").len(), r.frames.len())
    };
    c.send_json(serde_json::json!({"type": "text", "text": "Say hello to me."}))
        .await;
    c.wait_for(
        Duration::from_secs(120),
        "the typed turn's latency and its answer in the flite voice",
        |r| {
            r.of_type("answer_end").len() > ends_before
                && r.of_type("turn_latency")
                    .iter()
                    .any(|l| l["input"] == "text")
        },
    )
    .await;
    {
        let r = c.received.lock().unwrap();
        let typed = r
            .of_type("turn_latency")
            .into_iter()
            .find(|l| l["input"] == "text")
            .unwrap()
            .clone();
        println!("typed turn latency: {typed}");
        // Speech-only stages are absent (null), not zero; the others are measured.
        for k in ["speech_end_ms", "endpointing_ms", "asr_final_ms"] {
            assert!(typed[k].is_null(), "{k} should be null: {typed}");
        }
        for k in [
            "llm_first_token_ms",
            "first_clause_ms",
            "tts_first_chunk_ms",
            "onset_ms",
        ] {
            assert!(typed[k].as_u64().is_some(), "{k} missing: {typed}");
        }
        let onset = typed["onset_ms"].as_u64().unwrap();
        let first_clause = typed["first_clause_ms"].as_u64().unwrap();
        assert!(
            onset + 100 >= first_clause && onset < 60_000,
            "onset {onset} ms must follow the first clause ({first_clause} ms): {typed}"
        );
        let spoken = r.of_type("answer_end")[ends_before]["spoken"].clone();
        assert!(
            spoken
                .as_str()
                .is_some_and(|t| t.chars().any(char::is_alphabetic)),
            "typed turn answer spoke nothing: {spoken}"
        );
        let loud = r.frames[frames_before..]
            .iter()
            .filter(|(_, peak)| *peak > 0.003)
            .count();
        println!("flite answer: {loud} packets with sound; spoke {spoken}");
        assert!(
            loud >= 25,
            "the flite answer's audio did not arrive ({loud} loud packets)"
        );
    }

    // Bad settings: one clear error each, the voice stays, the session keeps answering.
    let errors_before = c.received.lock().unwrap().of_type("error").len();
    c.send_json(serde_json::json!({"type": "config", "voice": "festival"}))
        .await;
    c.send_json(serde_json::json!({"type": "config", "speed": 2}))
        .await;
    c.wait_for(Duration::from_secs(10), "two error events", |r| {
        r.of_type("error").len() >= errors_before + 2
    })
    .await;
    {
        let r = c.received.lock().unwrap();
        let errs: Vec<String> = r.of_type("error")[errors_before..]
            .iter()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect();
        println!("errors: {errs:?}");
        assert!(
            errs[0].contains("festival") && errs[0].contains("piper, flite, espeak"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("speed") && errs[1].contains("voice"),
            "{errs:?}"
        );
    }
    let ends_before = c.received.lock().unwrap().of_type("answer_end").len();
    c.send_json(serde_json::json!({"type": "text", "text": "Thank you."}))
        .await;
    c.wait_for(
        Duration::from_secs(120),
        "an answer after the bad settings",
        |r| r.of_type("answer_end").len() > ends_before,
    )
    .await;
    {
        let r = c.received.lock().unwrap();
        let voices: Vec<&str> = r
            .of_type("voice")
            .iter()
            .filter_map(|v| v["voice"].as_str())
            .collect();
        assert_eq!(voices, ["piper", "flite"], "bad settings changed the voice");
    }

    mic.abort();

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
