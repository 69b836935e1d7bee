//! Which padding and input normalisation the checkpoint expects: classifies the store's test
//! photos with each of the four combinations and prints top-1 and the probability of the right
//! class family. The numbers in `Labeler::load` and README "Vision" come from this.
//!
//! Run: `cargo run -p voicerelay-vision --example variants`.
use voicerelay_vision::{Labeler, Normalisation, Padding};

fn rgbx(store: &vr_core::ModelStore, name: &str) -> (Vec<u8>, u32, u32) {
    let path = store
        .file("vision-test-images", name)
        .unwrap_or_else(|e| panic!("{e}"));
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgba8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn main() {
    let store = vr_core::ModelStore::from_env().unwrap_or_else(|e| panic!("{e}"));
    let images = ["chelsea.png", "coffee.png", "astronaut.png"];
    let frames: Vec<_> = images.iter().map(|n| rgbx(&store, n)).collect();
    for padding in [Padding::Symmetric, Padding::TfSame] {
        for norm in [Normalisation::ImageNet, Normalisation::Symmetric] {
            let labeler =
                Labeler::load_variant(&store, padding, norm).unwrap_or_else(|e| panic!("{e}"));
            let mut line = format!("{padding:?} + {norm:?}:");
            for (name, (data, w, h)) in images.iter().zip(&frames) {
                let c = labeler
                    .classify(data, *w, *h)
                    .unwrap_or_else(|e| panic!("{e}"));
                let t = &c.top[0];
                // Probability mass on the right family among the top 5: domestic cats (tabby,
                // tiger cat, Persian, Siamese, Egyptian cat) / espresso, cup, coffee mug.
                let family: f32 = c
                    .top
                    .iter()
                    .filter(|l| {
                        (281..=285).contains(&l.class) || [967, 968, 504].contains(&l.class)
                    })
                    .map(|l| l.prob)
                    .sum();
                let family = family + 0.0; // an empty f32 sum is -0.0
                line += &format!("  {name}: {} {:.3} (family {family:.3})", t.name, t.prob);
            }
            println!("{line}");
        }
    }
    let labeler = Labeler::load(&store).unwrap_or_else(|e| panic!("{e}"));
    for (name, (data, w, h)) in images.iter().zip(&frames) {
        let c = labeler
            .classify(data, *w, *h)
            .unwrap_or_else(|e| panic!("{e}"));
        println!("default, {name}: {}", c.describe(0.0, 5));
    }
}
