//! The ReCapABR rule, branch by branch, and the table loader's validation.
//!
//! The tables here are synthetic fixtures (their `measured_by` says so), not measurements.

use vr_abr::recap::{recap_rule, ConfidenceCurve, RecapBranch, RecapTable, ARTIC_TIERS_KBPS};
use vr_abr::{AbrError, Bitrate};

const TABLE: &str = r#"
threshold = 0.8

[[class]]
name = "desk"
[[class.row]]
confidence = [0.50, 0.70, 0.85, 0.90, 0.94, 0.95]
measured_by = "synthetic test fixture, not a measurement"

[[class]]
name = "busy"
[[class.row]]
confidence = [0.20, 0.30, 0.40, 0.50, 0.60, 0.70]
measured_by = "synthetic test fixture, not a measurement"

[[class]]
name = "two_segments"
tiers_kbps = [200, 400, 800]
[[class.row]]
confidence = [0.90, 0.95, 0.97]
measured_by = "synthetic: segment 0"
[[class.row]]
confidence = [0.40, 0.60, 0.90]
measured_by = "synthetic: segment 1"
"#;

fn kbps(k: u64) -> Bitrate {
    Bitrate::from_kbps(k)
}

fn table() -> RecapTable {
    RecapTable::from_toml_str(TABLE).unwrap_or_else(|e| panic!("fixture must load: {e}"))
}

#[test]
fn loads_with_default_tiers_and_threshold() {
    let t = table();
    assert_eq!(t.threshold(), 0.8);
    assert_eq!(t.classes().len(), 3);
    let desk = t.class("desk").expect("desk");
    assert_eq!(desk.tiers_kbps, ARTIC_TIERS_KBPS.to_vec());
    assert_eq!(
        desk.rows[0].measured_by,
        "synthetic test fixture, not a measurement"
    );
}

#[test]
fn hold_when_confidence_at_current_reaches_threshold() {
    let d = table().decide("desk", None, kbps(910), kbps(2000));
    assert_eq!(d.branch, RecapBranch::Hold);
    assert_eq!(d.target, kbps(910));
    assert_eq!(d.cap, Some(kbps(910)));
    assert!(!d.limited_by_cc);
}

#[test]
fn interpolates_to_the_minimum_bitrate_reaching_threshold() {
    // conf(400) = 0.70 < 0.8; tier 610 has 0.85: 400 + (0.8-0.7)/(0.85-0.7) × 210 = 540 kbit/s.
    let d = table().decide("desk", None, kbps(400), kbps(3000));
    assert_eq!(d.branch, RecapBranch::Interpolated);
    assert_eq!(d.target, kbps(540));
    assert!(!d.limited_by_cc);
}

#[test]
fn lowest_tier_reaching_threshold_is_not_extrapolated_below() {
    let t = table();
    // Segment 0 reaches θ at 200 already; current 150 (conf 0.675 by the linear-to-zero
    // assumption) → cap = the lowest measured tier, 200.
    let d = t.decide("two_segments", Some(0), kbps(150), kbps(3000));
    assert_eq!(d.branch, RecapBranch::Interpolated);
    assert_eq!(d.target, kbps(200));
}

#[test]
fn tier_up_when_no_tier_reaches_threshold() {
    let t = table();
    let d = t.decide("busy", None, kbps(610), kbps(3000));
    assert_eq!(d.branch, RecapBranch::TierUp);
    assert_eq!(d.target, kbps(910));
    let d = t.decide("busy", None, kbps(700), kbps(3000));
    assert_eq!(d.target, kbps(910));
    // At or above the top tier: the top tier.
    let d = t.decide("busy", None, kbps(3150), kbps(5000));
    assert_eq!((d.branch, d.target), (RecapBranch::TierUp, kbps(3150)));
}

#[test]
fn never_above_the_cc_estimate() {
    let t = table();
    // Tier up wants 910, CC says 800.
    let d = t.decide("busy", None, kbps(610), kbps(800));
    assert_eq!(
        (d.branch, d.target, d.cap),
        (RecapBranch::TierUp, kbps(800), Some(kbps(910)))
    );
    assert!(d.limited_by_cc);
    // Current 910 would hold, but CC fell to 500: the rule starts from min(current, cc) = 500,
    // conf(500) ≈ 0.771 < 0.8 → interpolated cap 540 → target 500.
    let d = t.decide("desk", None, kbps(910), kbps(500));
    assert_eq!(d.branch, RecapBranch::Interpolated);
    assert_eq!(d.target, kbps(500));
    assert!(d.limited_by_cc);
}

#[test]
fn empty_table_or_unknown_class_is_passthrough() {
    let empty = RecapTable::from_toml_str("").unwrap_or_else(|e| panic!("{e}"));
    assert!(empty.is_empty());
    let d = empty.decide("desk", None, kbps(200), kbps(2345));
    assert_eq!(
        (d.branch, d.target, d.cap),
        (RecapBranch::Passthrough, kbps(2345), None)
    );
    let d = table().decide("nope", Some(3), kbps(200), kbps(1234));
    assert_eq!((d.branch, d.target), (RecapBranch::Passthrough, kbps(1234)));
}

#[test]
fn segment_rows_and_conservative_curve() {
    let t = table();
    // Segment 1: conf(400) = 0.6 → interpolate 400..800 to 0.8: 400 + 0.2/0.3 × 400 ≈ 666.667.
    let d = t.decide("two_segments", Some(1), kbps(400), kbps(3000));
    assert_eq!(d.target, Bitrate(666_667));
    // Segment index wraps around the rows: 3 → row 1.
    assert_eq!(
        t.decide("two_segments", Some(3), kbps(400), kbps(3000))
            .target,
        Bitrate(666_667)
    );
    // Conservative (per-tier minimum) = segment 1's curve here.
    assert_eq!(
        t.decide("two_segments", None, kbps(400), kbps(3000)).target,
        Bitrate(666_667)
    );
    // Segment 0 alone holds at 400.
    let d = t.decide("two_segments", Some(0), kbps(400), kbps(3000));
    assert_eq!((d.branch, d.target), (RecapBranch::Hold, kbps(400)));
}

#[test]
fn closed_loop_on_saturating_content_leaves_headroom() {
    // The sender follows the target; CC estimate grows to 3 Mbit/s. On content whose
    // confidence saturates ("desk"), the cap settles at 540 kbit/s: 82 % below the estimate.
    let t = table();
    let mut current = kbps(200);
    for step in 0..20u64 {
        let cc = kbps(300 + step * 150).min(kbps(3000));
        current = t.decide("desk", None, current, cc).target;
    }
    assert_eq!(current, kbps(540));
    let headroom = 1.0 - current.kbps() / 3000.0;
    assert!(headroom >= 0.2, "headroom {headroom}");
}

#[test]
fn rule_on_a_bare_curve() {
    let c = ConfidenceCurve::new(vec![100, 200, 300], vec![0.1, 0.5, 0.9])
        .unwrap_or_else(|e| panic!("{e}"));
    let d = recap_rule(&c, 0.7, kbps(100), kbps(1000));
    assert_eq!((d.branch, d.target), (RecapBranch::Interpolated, kbps(250)));
}

fn err(text: &str) -> AbrError {
    match RecapTable::from_toml_str(text) {
        Ok(t) => panic!("should be rejected, loaded {t:?}"),
        Err(e) => e,
    }
}

#[test]
fn rejects_row_without_measured_by() {
    let text = r#"
[[class]]
name = "desk"
[[class.row]]
confidence = [0.5, 0.7, 0.85, 0.9, 0.94, 0.95]
measured_by = "synthetic"
[[class.row]]
confidence = [0.5, 0.7, 0.85, 0.9, 0.94, 0.95]
"#;
    let e = err(text);
    assert_eq!(
        e,
        AbrError::RowNotMeasured {
            class: "desk".into(),
            row: 1
        }
    );
    assert!(e.to_string().contains("measured_by"), "{e}");
    let blank = text.replace("measured_by = \"synthetic\"", "measured_by = \"  \"");
    assert_eq!(
        err(&blank),
        AbrError::RowNotMeasured {
            class: "desk".into(),
            row: 0
        }
    );
}

#[test]
fn rejects_invalid_tables() {
    let row =
        |conf: &str| format!("[[class.row]]\nconfidence = {conf}\nmeasured_by = \"synthetic\"\n");
    let e = err(&format!(
        "[[class]]\nname = \"a\"\ntiers_kbps = [200, 400, 400]\n{}",
        row("[0.1, 0.2, 0.3]")
    ));
    assert_eq!(
        e,
        AbrError::TiersNotIncreasing {
            class: "a".into(),
            index: 2,
            previous: 400,
            value: 400
        }
    );
    let e = err(&format!(
        "[[class]]\nname = \"a\"\ntiers_kbps = [200, 400]\n{}",
        row("[0.1, 1.2]")
    ));
    assert_eq!(
        e,
        AbrError::ConfidenceOutOfRange {
            class: "a".into(),
            row: 0,
            index: 1,
            value: 1.2
        }
    );
    let e = err(&format!(
        "[[class]]\nname = \"a\"\ntiers_kbps = [200, 400]\n{}",
        row("[0.1]")
    ));
    assert_eq!(
        e,
        AbrError::RowLength {
            class: "a".into(),
            row: 0,
            expected: 2,
            actual: 1
        }
    );
    let e = err(&format!(
        "[[class]]\nname = \"a\"\ntiers_kbps = []\n{}",
        row("[]")
    ));
    assert!(matches!(e, AbrError::InvalidTiers { .. }), "{e}");
    let e = err(&format!(
        "threshold = 1.5\n[[class]]\nname = \"a\"\n{}",
        row("[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]")
    ));
    assert!(
        matches!(
            e,
            AbrError::InvalidConfig {
                field: "recap.threshold",
                ..
            }
        ),
        "{e}"
    );
    let one = format!(
        "[[class]]\nname = \"a\"\ntiers_kbps = [200]\n{}",
        row("[0.5]")
    );
    let e = err(&format!("{one}{one}"));
    assert!(matches!(e, AbrError::InvalidClassName { .. }), "{e}");
    let e = err("[[class]]\nname = \"a\"\n");
    assert!(matches!(e, AbrError::InvalidTiers { .. }), "{e}");
    let e = err("thresold = 0.8\n");
    assert!(matches!(e, AbrError::RecapToml { .. }), "{e}");
}
