//! EfficientNet-Lite0 on real photographs from the model store (`vision-test-images`): a tabby
//! cat (scikit-image's "chelsea"), a cup of espresso ("coffee") and an astronaut. The bounds are
//! the measured values with a margin (measured figures in the comments); a broken padding,
//! normalisation, weight layout or class list moves them far outside.

use image::{imageops::FilterType, DynamicImage, RgbaImage};
use std::time::Instant;
use voicerelay_vision::{Classification, Labeler, VisionError, FEATURES};
use vr_audio::video::{PixelFormat, VideoFrame};

/// ImageNet domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
const CATS: std::ops::RangeInclusive<usize> = 281..=285;
const ESPRESSO: usize = 967;
const CUP: usize = 968;
const COFFEE_MUG: usize = 504;

fn store() -> vr_core::ModelStore {
    vr_core::ModelStore::from_env().expect("model store")
}

fn labeler() -> Labeler {
    Labeler::load(&store()).expect("efficientnet-lite0 in the model cache (run scripts/bootstrap)")
}

fn photo(name: &str) -> RgbaImage {
    let path = store()
        .file("vision-test-images", name)
        .expect("vision-test-images in the model cache (run scripts/bootstrap)");
    image::open(&path)
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
        .to_rgba8()
}

fn classify(l: &Labeler, img: &RgbaImage) -> Classification {
    let (w, h) = img.dimensions();
    l.classify(img.as_raw(), w, h).expect("classify")
}

fn mass(c: &Classification, pred: impl Fn(usize) -> bool) -> f32 {
    c.top.iter().filter(|l| pred(l.class)).map(|l| l.prob).sum()
}

#[test]
fn chelsea_is_a_cat() {
    let c = classify(&labeler(), &photo("chelsea.png"));
    eprintln!("chelsea: {}", c.describe(0.0, 5));
    assert_eq!(c.features.len(), FEATURES);
    assert_eq!(c.top.len(), voicerelay_vision::TOP_K);
    assert!(c.top.windows(2).all(|w| w[0].prob >= w[1].prob));
    // Measured: Egyptian cat 0.386, tiger cat 0.37, tabby 0.16 (cat family 0.92).
    let top = &c.top[0];
    assert!(CATS.contains(&top.class), "top-1 {top:?}");
    assert!(top.prob > 0.25, "top-1 {top:?}");
    assert!(
        mass(&c, |k| CATS.contains(&k)) > 0.8,
        "{}",
        c.describe(0.0, 5)
    );
    let names: Vec<&str> = c.top[..3].iter().map(|l| l.name.as_str()).collect();
    assert!(
        names.contains(&"tabby") && names.contains(&"tiger cat"),
        "{names:?}"
    );
    assert!(c.describe(0.1, 3).contains("cat"), "{}", c.describe(0.1, 3));
}

#[test]
fn coffee_is_espresso_in_a_cup() {
    let c = classify(&labeler(), &photo("coffee.png"));
    eprintln!("coffee: {}", c.describe(0.0, 5));
    // Measured: espresso 0.953, then cup 0.01.
    assert_eq!(c.top[0].class, ESPRESSO, "{:?}", c.top[0]);
    assert_eq!(c.top[0].name, "espresso");
    assert!(c.top[0].prob > 0.8, "{:?}", c.top[0]);
    assert!(c.top[..3]
        .iter()
        .any(|l| l.class == CUP || l.class == COFFEE_MUG));
    assert_eq!(c.describe(0.5, 3), "an espresso (95 %)");
}

/// Features tell different scenes apart far more than they tell a frame from a resized copy;
/// JPEG and a 4x downscale keep the label but move the features measurably (the proxy the
/// bitrate controller can use for "still shows the same thing").
#[test]
fn features_separate_scenes_and_degrade_gracefully() {
    let l = labeler();
    let chelsea = photo("chelsea.png");
    let (w, h) = chelsea.dimensions();
    let pristine = classify(&l, &chelsea);
    let coffee = classify(&l, &photo("coffee.png"));
    let astronaut = classify(&l, &photo("astronaut.png"));

    let resized = DynamicImage::ImageRgba8(chelsea.clone())
        .resize_exact(w * 3 / 2, h * 3 / 2, FilterType::Triangle)
        .to_rgba8();
    let resized = classify(&l, &resized);

    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 10)
        .encode_image(&DynamicImage::ImageRgba8(chelsea.clone()).to_rgb8())
        .expect("jpeg encode");
    let jpeg = image::load_from_memory(&jpeg)
        .expect("jpeg decode")
        .to_rgba8();
    let jpeg = classify(&l, &jpeg);

    let small = DynamicImage::ImageRgba8(chelsea.clone())
        .resize_exact(w / 4, h / 4, FilterType::Triangle)
        .to_rgba8();
    let small = classify(&l, &small);

    let same = pristine.cosine(&pristine);
    let c_resized = pristine.cosine(&resized);
    let c_jpeg = pristine.cosine(&jpeg);
    let c_small = pristine.cosine(&small);
    let c_coffee = pristine.cosine(&coffee);
    let c_astro = pristine.cosine(&astronaut);
    eprintln!(
        "cosine to pristine chelsea: itself {same:.4}, 1.5x resized {c_resized:.4}, \
         JPEG q10 {c_jpeg:.4}, 4x downscaled {c_small:.4}, coffee {c_coffee:.4}, astronaut {c_astro:.4}"
    );
    eprintln!("JPEG q10: {}", jpeg.describe(0.0, 3));
    eprintln!("4x downscaled: {}", small.describe(0.0, 3));

    // Measured: itself 1.0000, 1.5x resized 0.998, JPEG q10 0.846, 4x downscaled 0.826,
    // coffee 0.086, astronaut 0.125; JPEG and downscaled chelsea stay "Egyptian cat".
    assert!((same - 1.0).abs() < 1e-5);
    assert!(c_resized > 0.99, "{c_resized}");
    assert!(c_coffee < 0.3 && c_astro < 0.3, "{c_coffee} {c_astro}");
    for (what, c, cos) in [
        ("JPEG q10", &jpeg, c_jpeg),
        ("4x downscaled", &small, c_small),
    ] {
        assert!(
            CATS.contains(&c.top[0].class),
            "{what}: {}",
            c.describe(0.0, 3)
        );
        assert!(
            mass(c, |k| CATS.contains(&k)) > 0.8,
            "{what}: {}",
            c.describe(0.0, 3)
        );
        assert!((0.7..0.95).contains(&cos), "{what}: cosine {cos}");
    }
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let l = labeler();
    let e = l.classify(&[0; 4 * 10 * 10 - 1], 10, 10).unwrap_err();
    assert!(
        matches!(
            e,
            VisionError::FrameSize {
                width: 10,
                height: 10,
                expected: 400,
                actual: 399
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        l.classify(&[], 0, 10).unwrap_err(),
        VisionError::EmptyFrame { .. }
    ));
    assert!(matches!(
        l.classify(&[], 10, 0).unwrap_err(),
        VisionError::EmptyFrame { .. }
    ));
    // A length that would overflow usize arithmetic on a 32-bit target is still just a mismatch.
    assert!(matches!(
        l.classify(&[0; 16], u32::MAX, u32::MAX).unwrap_err(),
        VisionError::FrameSize { .. }
    ));
    let i420 = VideoFrame {
        width: 4,
        height: 4,
        format: PixelFormat::I420,
        data: vec![0; PixelFormat::I420.frame_bytes(4, 4)],
        ..VideoFrame::default()
    };
    assert!(matches!(
        l.classify_frame(&i420).unwrap_err(),
        VisionError::PixelFormat {
            format: PixelFormat::I420
        }
    ));
    // Tiny and extreme aspect ratios are valid frames.
    for (w, h) in [(1, 1), (1, 300), (640, 2)] {
        let c = l
            .classify(&vec![128; w * h * 4], w as u32, h as u32)
            .expect("valid frame");
        assert_eq!(c.features.len(), FEATURES);
    }
}

/// A camera-sized frame through [`Labeler::classify_frame`], timed (run with `--no-capture` to
/// see the figure).
#[test]
fn a_720p_video_frame_and_its_cost() {
    let l = labeler();
    let chelsea = DynamicImage::ImageRgba8(photo("chelsea.png"))
        .resize_exact(1280, 720, FilterType::Triangle)
        .to_rgba8();
    let frame = VideoFrame {
        width: 1280,
        height: 720,
        format: PixelFormat::Rgbx,
        data: chelsea.into_raw(),
        ..VideoFrame::default()
    };
    let first = l.classify_frame(&frame).expect("classify");
    assert!(
        CATS.contains(&first.top[0].class),
        "{}",
        first.describe(0.0, 3)
    );
    let n = 5;
    let t0 = Instant::now();
    for _ in 0..n {
        let c = l.classify_frame(&frame).expect("classify");
        assert_eq!(c, first, "classification is deterministic");
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    eprintln!("classify 1280x720 RGBx: {ms:.1} ms per frame (mean of {n}, dev profile)");
}
