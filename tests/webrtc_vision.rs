//! The assistant sees the client's camera: a webrtc-rs client shares a microphone and a camera
//! with `voicerelay serve`. The camera films a real photo of a tabby cat (scikit-image's
//! "chelsea", from the model store's `vision-test-images`) as VP8; the server decodes it,
//! labels it with EfficientNet-Lite0 and must report the scene as a cat class on the events
//! channel. A typed "what do you see?" must then be answered with a cat, from the labels in the
//! prompt (the LLM has nothing else to go on), and the server's decoding counters must have
//! moved.

mod common;

use common::*;
use std::time::Duration;

const CATS: [&str; 5] = ["cat", "tabby", "kitten", "feline", "kitty"];

fn mentions_a_cat(text: &str) -> bool {
    let t = text.to_lowercase();
    CATS.iter().any(|c| t.contains(c))
}

/// The photo as tightly packed RGBx, cropped to even sides (the encoder's 4:2:0 wants them).
fn chelsea() -> (Vec<u8>, u32, u32) {
    let store = vr_core::ModelStore::from_env().expect("model store");
    let path = store
        .file("vision-test-images", "chelsea.png")
        .expect("the vision test images (scripts/bootstrap installs them)");
    let img = image::open(&path).expect("decode chelsea.png").to_rgba8();
    let (w, h) = (img.width() & !1, img.height() & !1);
    let mut rgbx = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(x, y);
            rgbx.extend_from_slice(&[p[0], p[1], p[2], 0]);
        }
    }
    (rgbx, w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_names_what_the_camera_shows() {
    let (picture, w, h) = chelsea();
    let server = ServerProcess::start(&[("VOICERELAY__VISION__INTERVAL_MS", "500")]);
    let mut c = Client::with_camera().await;
    c.connect(&server.url, None).await;
    let mic = c.spawn_silence();
    let (stop_camera, camera) = c.spawn_camera(picture, w, h, 15);

    c.wait_for(Duration::from_secs(60), "a scene event naming a cat", |r| {
        r.of_type("scene")
            .iter()
            .any(|e| e["description"].as_str().is_some_and(mentions_a_cat))
    })
    .await;
    let scene = {
        let r = c.received.lock().unwrap();
        r.of_type("scene")
            .iter()
            .filter_map(|e| e["description"].as_str().map(str::to_string))
            .find(|d| mentions_a_cat(d))
            .expect("checked above")
    };
    println!("scene: {scene}");

    let ends_before = c.received.lock().unwrap().of_type("answer_end").len();
    c.send_json(serde_json::json!({
        "type": "text",
        "text": "What do you see on my camera? Answer in one short sentence."
    }))
    .await;
    c.wait_for(
        Duration::from_secs(150),
        "the answer to the typed question",
        |r| r.of_type("answer_end").len() > ends_before,
    )
    .await;
    let answer = {
        let r = c.received.lock().unwrap();
        r.of_type("answer_end")[ends_before]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    println!("answer: {answer}");
    assert!(
        mentions_a_cat(&answer),
        "the answer does not name what the camera shows ({scene}): {answer:?}"
    );

    let metrics = http("GET", &format!("{}/metrics", server.url), &[], None)
        .await
        .body;
    let decoded = metric(&metrics, "transport_video_frames_decoded_total").unwrap_or(0.0);
    stop_camera.store(true, std::sync::atomic::Ordering::Relaxed);
    mic.abort();
    let sent = camera.join().expect("camera thread");
    println!("camera sent {sent} frames; the server decoded {decoded}");
    assert!(sent > 0);
    assert!(
        decoded >= 1.0 && decoded <= sent as f64,
        "decoded {decoded} of {sent} frames"
    );
}
