//! `voicerelay eval recap`: measures the ReCapABR confidence-vs-bitrate table on the model
//! store's test photos (see `vr_evals::recap_measure`) and writes it in the format
//! `transport.video.recap_table` reads. The shipped table (`abr/tables/vp8-efficientnet-lite0.toml`,
//! the default `recap_table = "builtin"`) was made with it.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use vr_evals::recap_measure::{self, MeasureOptions, Photo};

use crate::config::Config;

#[derive(clap::Args)]
pub struct RecapArgs {
    /// Where to write the table (TOML); without it the table is printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Photos of the model store's `vision-test-images` to film, one class each.
    #[arg(long, value_delimiter = ',', default_values_t = recap_measure::PHOTOS.map(String::from))]
    photos: Vec<String>,
    /// Bitrate tiers, kbit/s.
    #[arg(long, value_delimiter = ',', default_values_t = vr_abr::recap::ARTIC_TIERS_KBPS)]
    tiers: Vec<u32>,
    /// Frames per clip.
    #[arg(long, default_value_t = 150)]
    frames: u32,
    /// Frames per second of the clips (what a sender asked for fewer frames would send).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    fps: u32,
    /// Film a still view of each photo (centre crop, sensor noise only) instead of a pan.
    #[arg(long)]
    still: bool,
    /// Label every n-th picture.
    #[arg(long, default_value_t = 10)]
    sample_every: u32,
    /// Clip size.
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn run(cfg: &Config, args: RecapArgs) -> Result<ExitCode> {
    let store = crate::cli::models::store(cfg)?;
    let labeler = vr_vision::Labeler::load(&store).context("cannot load the labeller")?;
    let o = MeasureOptions {
        width: args.width,
        height: args.height,
        frames: args.frames,
        fps: args.fps,
        pan: !args.still,
        sample_every: args.sample_every,
        tiers_kbps: args.tiers.clone(),
        ..MeasureOptions::default()
    };
    let load_start = load_average();
    let t0 = std::time::Instant::now();
    let mut clips = Vec::new();
    for name in &args.photos {
        let photo = Photo::from_store(&store, name)?;
        eprintln!("{}: {}x{} photo", photo.name, photo.width, photo.height);
        let clip = recap_measure::measure_clip(&labeler, &photo, &o, |t| {
            eprintln!(
                "  {:>5} kbit/s: overlap {:.3}, top-1 {:.2}, cosine {:.3}, encoded {:.0} kbit/s, {} dropped",
                t.kbps, t.overlap, t.agreement, t.cosine, t.encoded_kbps, t.dropped
            );
        })?;
        clips.push(clip);
    }
    let provenance = format!(
        "{} photos, {:.0} s, load {load_start} -> {}",
        args.photos.len(),
        t0.elapsed().as_secs_f64(),
        load_average()
    );
    let toml = recap_measure::table_toml(&clips, &o, &provenance);
    // What is written must load as a table, or it is of no use to the transport.
    vr_abr::RecapTable::from_toml_str(&toml).context("the measured table does not validate")?;
    println!("| clip (pristine label) | {} |", tier_header(&o.tiers_kbps));
    println!("|---|{}", "---|".repeat(o.tiers_kbps.len()));
    for c in &clips {
        let cells: Vec<String> = c
            .tiers
            .iter()
            .map(|t| format!("{:.3} / {:.2} / {:.3}", t.overlap, t.agreement, t.cosine))
            .collect();
        println!(
            "| {} ({}, p {:.2}) | {} |",
            c.name,
            c.label,
            c.pristine_top1,
            cells.join(" | ")
        );
    }
    println!("(label overlap = confidence / top-1 agreement / feature cosine, vs pristine; {provenance})");
    match &args.out {
        Some(p) => {
            std::fs::write(p, &toml).with_context(|| format!("cannot write {}", p.display()))?;
            println!("table written to {}", p.display());
        }
        None => println!("{toml}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn tier_header(tiers: &[u32]) -> String {
    tiers
        .iter()
        .map(|t| format!("{t} kbit/s"))
        .collect::<Vec<_>>()
        .join(" | ")
}
