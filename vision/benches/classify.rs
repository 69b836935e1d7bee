//! CPU cost of labelling one frame: EfficientNet-Lite0 plus the crop/resize, for a frame that
//! needs no resampling (224×224), a VGA and a 720p camera frame (the chelsea test photo stretched
//! to each size). Then one line per size with the median of a plain timed loop.
//!
//! Run: `cargo bench -p voicerelay-vision --bench classify`.
use criterion::{black_box, criterion_group, Criterion};
use image::{imageops::FilterType, DynamicImage};
use std::time::Instant;
use voicerelay_vision::Labeler;

const SIZES: [(u32, u32); 3] = [(224, 224), (640, 480), (1280, 720)];

fn setup() -> (Labeler, Vec<(u32, u32, Vec<u8>)>) {
    let store = vr_core::ModelStore::from_env().unwrap_or_else(|e| panic!("model store: {e}"));
    let labeler = Labeler::load(&store).unwrap_or_else(|e| panic!("labeler: {e}"));
    let path = store
        .file("vision-test-images", "chelsea.png")
        .unwrap_or_else(|e| panic!("{e}"));
    let img = image::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let frames = SIZES
        .iter()
        .map(|&(w, h)| {
            let f = DynamicImage::resize_exact(&img, w, h, FilterType::Triangle).to_rgba8();
            (w, h, f.into_raw())
        })
        .collect();
    (labeler, frames)
}

fn bench(c: &mut Criterion) {
    let (labeler, frames) = setup();
    let mut g = c.benchmark_group("vision");
    g.sample_size(20);
    for (w, h, data) in &frames {
        g.bench_function(format!("classify_{w}x{h}"), |b| {
            b.iter(|| black_box(labeler.classify(data, *w, *h).unwrap()))
        });
    }
    g.finish();
}

fn summary() {
    let (labeler, frames) = setup();
    for (w, h, data) in &frames {
        let mut ms: Vec<f64> = (0..15)
            .map(|_| {
                let t = Instant::now();
                black_box(labeler.classify(data, *w, *h).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "vision summary: classify {w}x{h}: median {:.1} ms per frame",
            ms[ms.len() / 2]
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
