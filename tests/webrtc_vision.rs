//! The assistant sees the client's camera: a webrtc-rs client shares a microphone and a camera
//! with `voicerelay serve`. The camera films a real photo of a tabby cat (scikit-image's
//! "chelsea", from the model store's `vision-test-images`) as VP8; the server decodes it,
//! labels it with EfficientNet-Lite0 and must report the scene as a cat class on the events
//! channel. A typed "what do you see?" must then be answered with a cat, from the labels in the
//! prompt (the LLM has nothing else to go on), and the server's decoding counters must have
//! moved.
//!
//! The frame rate follows the picture: while the photo stands still the server must ask for
//! 5 frames a second (`video_rate`), and once the client obeys, the server must decode about
//! that many; when the picture starts moving it must ask for the full rate again within
//! [`MOTION_DEADLINE`].

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The camera's own rate.
const FPS: u32 = 15;
/// How soon after the picture starts moving the full rate must be asked for: two motion samples
/// (200 ms apart) and the data channel.
const MOTION_DEADLINE: Duration = Duration::from_millis(1500);
/// How long each decoding rate is measured (`/metrics` publishes every 500 ms).
const RATE_WINDOW: Duration = Duration::from_secs(4);

async fn decoded_frames(url: &str) -> f64 {
    let metrics = http("GET", &format!("{url}/metrics"), &[], None).await.body;
    metric(&metrics, "transport_video_frames_decoded_total").unwrap_or(0.0)
}

/// Frames the server decoded per second over [`RATE_WINDOW`].
async fn decode_rate(url: &str) -> f64 {
    let before = decoded_frames(url).await;
    tokio::time::sleep(RATE_WINDOW).await;
    (decoded_frames(url).await - before) / RATE_WINDOW.as_secs_f64()
}

fn rate_requests(r: &Received) -> Vec<u64> {
    r.of_type("video_rate")
        .iter()
        .filter_map(|e| e["max_fps"].as_u64())
        .collect()
}

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
    let camera = c.spawn_camera(picture, w, h, FPS);

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

    // A still picture: full rate first, then the server asks for less.
    let full = decode_rate(&server.url).await;
    c.wait_for(
        Duration::from_secs(20),
        "a video_rate event asking for 5 frames a second",
        |r| rate_requests(r).contains(&5),
    )
    .await;
    camera
        .max_fps
        .store(5, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = decode_rate(&server.url).await;
    println!(
        "still picture: requests {:?}; decoded {full:.1} frames/s before, {still:.1} after",
        rate_requests(&c.received.lock().unwrap())
    );
    assert!(
        full >= 10.0,
        "decoded {full:.1} frames/s of a {FPS} fps camera"
    );
    assert!(
        still <= 7.0,
        "asked for 5 frames/s and obeyed, the server still decoded {still:.1}"
    );

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

    // The picture moves: the full rate is asked for again at once.
    let asked = c.received.lock().unwrap().of_type("video_rate").len();
    camera
        .moving
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    c.wait_for(
        Duration::from_secs(10),
        "a video_rate event asking for the full rate once the picture moves",
        |r| rate_requests(r)[asked..].contains(&30),
    )
    .await;
    let reaction = t0.elapsed();
    let motion = c.received.lock().unwrap().of_type("video_rate")[asked..]
        .iter()
        .find(|e| e["max_fps"] == 30)
        .map(|e| e["motion"].clone());
    println!("moving picture: full rate asked for after {reaction:?} (motion {motion:?})");
    assert!(
        reaction <= MOTION_DEADLINE,
        "the full rate was asked for {reaction:?} after the picture started moving"
    );

    let decoded = decoded_frames(&server.url).await;
    mic.abort();
    let sent = camera.stop();
    println!("camera sent {sent} frames; the server decoded {decoded}");
    assert!(sent > 0);
    assert!(
        decoded >= 1.0 && decoded <= sent as f64,
        "decoded {decoded} of {sent} frames"
    );
}
