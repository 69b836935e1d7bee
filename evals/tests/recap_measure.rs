//! The ReCap measurement on a real photo, small: a 1 s clip of "chelsea" at 320×240 through the
//! real vp8enc/vp8dec at a starved and a generous bitrate, labelled by EfficientNet-Lite0.
//! The generous tier must keep the picture closer to the pristine one (features and labels),
//! the encoder must roughly hit its targets, and the table written must load as a ReCap table
//! with its `default` class first.

use voicerelay_evals::recap_measure::{self, MeasureOptions, Photo};

#[test]
fn a_starved_tier_moves_the_labels_further_from_the_pristine_picture() {
    let store = vr_core::ModelStore::from_env().expect("model store");
    let labeler = vr_vision::Labeler::load(&store).expect("efficientnet-lite0 (scripts/bootstrap)");
    let photo = Photo::from_store(&store, "chelsea.png").expect("vision-test-images");
    let o = MeasureOptions {
        width: 320,
        height: 240,
        frames: 30,
        sample_every: 5,
        tiers_kbps: vec![40, 1500],
        ..MeasureOptions::default()
    };
    let clip =
        recap_measure::measure_clip(&labeler, &photo, &o, |t| eprintln!("{t:?}")).expect("measure");
    let (low, high) = (&clip.tiers[0], &clip.tiers[1]);
    assert!(
        high.cosine > low.cosine + 0.02,
        "feature cosine {:.3} at 1500 vs {:.3} at 40 kbit/s",
        high.cosine,
        low.cosine
    );
    assert!(high.overlap >= low.overlap, "{high:?} vs {low:?}");
    assert!(high.overlap > 0.8, "{high:?}");
    // A cat, as the vision tests find on the photo itself.
    assert!(
        ["Egyptian cat", "tiger cat", "tabby"].contains(&clip.label.as_str()),
        "{}",
        clip.label
    );
    assert!(clip.pristine_top1 >= recap_measure::RECOGNISED);
    assert!(
        (0.5..=1.3).contains(&(high.encoded_kbps / 1500.0)),
        "encoded {:.0} kbit/s for 1500",
        high.encoded_kbps
    );
    let toml = recap_measure::table_toml(std::slice::from_ref(&clip), &o, "test");
    let table = vr_abr::RecapTable::from_toml_str(&toml).expect("the table loads");
    let names: Vec<&str> = table.classes().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["default", "chelsea"]);
}
