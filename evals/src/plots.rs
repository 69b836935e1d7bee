//! SVG plots of a report (plotters' SVG backend; text is emitted as SVG `<text>`, so no font files
//! are needed). Each function returns a complete `<svg>` document.

use crate::schema::{AsrReport, Stats};
use crate::EvalError;
use plotters::prelude::*;

const SIZE: (u32, u32) = (720, 380);
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The series legend, drawn the same way on every chart.
fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), EvalError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn plot_err<E: std::fmt::Display>(e: E) -> EvalError {
    EvalError::Plot(e.to_string())
}

/// Empirical CDFs of several latency distributions, one line each.
pub fn latency_cdf(title: &str, series: &[(&str, &Stats)]) -> Result<String, EvalError> {
    let xmax = series
        .iter()
        .filter_map(|(_, s)| s.max)
        .fold(0.1f64, f64::max)
        * 1.05;
    let xmin = series
        .iter()
        .filter_map(|(_, s)| s.values.first().copied())
        .fold(0.0f64, f64::min);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(xmin..xmax, 0f64..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("fraction of utterances")
            .draw()
            .map_err(plot_err)?;
        for (i, (name, s)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let n = s.values.len() as f64;
            // A step function: the fraction jumps at each sample.
            let mut pts = vec![(xmin, 0.0)];
            for (k, &v) in s.values.iter().enumerate() {
                pts.push((v, k as f64 / n));
                pts.push((v, (k + 1) as f64 / n));
            }
            if let Some(&(last, _)) = pts.last() {
                pts.push((xmax.max(last), if n > 0.0 { 1.0 } else { 0.0 }));
            }
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{name} (n={})", s.n))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Vertical bars with a label under each.
pub fn bars(title: &str, y_desc: &str, items: &[(String, f64)]) -> Result<String, EvalError> {
    let ymax = items.iter().map(|(_, v)| *v).fold(0.05f64, f64::max) * 1.1;
    let n = items.len().max(1);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (SIZE.0.max(24 * n as u32 + 120), SIZE.1 + 60))
                .into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(110)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(plot_err)?;
        let label = |x: &f64| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                items.get(i).map(|(s, _)| s.clone()).unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&label)
            .x_label_style(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_desc(y_desc)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(items.iter().enumerate().map(|(i, (_, v))| {
                Rectangle::new(
                    [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                    COLOURS[0].filled(),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Compute per recogniser call against stream position (mean and max per bin), with the
/// real-time budget of one call as a dashed reference.
pub fn cost_vs_position(report: &AsrReport, budget_ms: Option<f64>) -> Result<String, EvalError> {
    let bins = &report.cost_by_position;
    let xmax = bins.last().map_or(1.0, |b| b.position_s + 1.0);
    let ymax = bins
        .iter()
        .map(|b| b.max_ms)
        .chain(budget_ms)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Compute per call vs position in the stream",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("audio fed so far (s)")
            .y_desc("ms per call")
            .draw()
            .map_err(plot_err)?;
        let centre = |b: &crate::schema::CostBin| b.position_s + 0.5;
        for (i, (name, f)) in [
            (
                "mean",
                (|b: &crate::schema::CostBin| b.mean_ms) as fn(&_) -> f64,
            ),
            ("p90", |b| b.p90_ms),
            ("max", |b| b.max_ms),
        ]
        .into_iter()
        .enumerate()
        {
            let colour = COLOURS[i];
            chart
                .draw_series(LineSeries::new(
                    bins.iter().map(|b| (centre(b), f(b))),
                    colour.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    bins.iter()
                        .map(|b| Circle::new((centre(b), f(b)), 3, colour.filled())),
                )
                .map_err(plot_err)?;
        }
        if let Some(budget) = budget_ms {
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, budget), (xmax, budget)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(plot_err)?
                .label("real-time budget per call")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The standard plot set of an ASR report: (file stem, SVG).
pub fn asr_plots(report: &AsrReport) -> Result<Vec<(&'static str, String)>, EvalError> {
    let budget_ms = report
        .settings
        .get("chunk_ms")
        .and_then(serde_json::Value::as_f64);
    Ok(vec![
        (
            "latency_cdf",
            latency_cdf(
                "Latency CDF",
                &[
                    ("TTFT: onset → first correct word", &report.summary.ttft_s),
                    (
                        "finalisation: end of speech → final",
                        &report.summary.finalisation_s,
                    ),
                ],
            )?,
        ),
        (
            "wer_by_utterance",
            bars(
                "WER per utterance (%)",
                "WER %",
                &report
                    .utterances
                    .iter()
                    .map(|u| (u.id.clone(), u.wer * 100.0))
                    .collect::<Vec<_>>(),
            )?,
        ),
        (
            "wer_by_category",
            bars(
                "WER per category (%)",
                "WER %",
                &report
                    .by_category
                    .iter()
                    .map(|c| (format!("{} ({})", c.category, c.utterances), c.wer * 100.0))
                    .collect::<Vec<_>>(),
            )?,
        ),
        ("cost_vs_position", cost_vs_position(report, budget_ms)?),
    ])
}

/// Lines through `(x, y)` points on the unit square, one per series (e.g. a threshold sweep:
/// keep rate against the share of kept drafts the slow model accepts).
pub fn unit_lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<String, EvalError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1.0, 0f64..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(plot_err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(plot_err)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
