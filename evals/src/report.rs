//! Writing reports (JSON + self-contained HTML with inline SVG plots, plus each plot as its own
//! `.svg`) and comparing two JSON reports side by side.

use crate::plots;
use crate::schema::{AsrReport, Stats, SCHEMA_VERSION};
use crate::EvalError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Files written by [`write_asr`].
#[derive(Debug, Clone)]
pub struct Written {
    pub json: PathBuf,
    pub html: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Writes `report.json`, `report.html` and `plots/*.svg` into `dir` (created if needed).
pub fn write_asr(dir: &Path, report: &AsrReport) -> Result<Written, EvalError> {
    std::fs::create_dir_all(dir.join("plots")).map_err(io(dir))?;
    let json = dir.join("report.json");
    let text = serde_json::to_string_pretty(report).map_err(|e| EvalError::Json {
        path: json.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(&json, text).map_err(io(&json))?;
    let svgs = plots::asr_plots(report)?;
    let mut plot_paths = Vec::new();
    for (stem, svg) in &svgs {
        let p = dir.join("plots").join(format!("{stem}.svg"));
        std::fs::write(&p, svg).map_err(io(&p))?;
        plot_paths.push(p);
    }
    let html = dir.join("report.html");
    std::fs::write(&html, asr_html(report, &svgs)).map_err(io(&html))?;
    Ok(Written {
        json,
        html,
        plots: plot_paths,
    })
}

/// Reads a report, refusing other schema versions with a clear message.
pub fn read_asr(path: &Path) -> Result<AsrReport, EvalError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| EvalError::Json {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let found = v
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as u32;
    if found != SCHEMA_VERSION {
        return Err(EvalError::Schema {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    serde_json::from_value(v).map_err(|e| EvalError::Json {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

fn pct(v: f64) -> String {
    format!("{:.2}", v * 100.0)
}

fn stats_cells(s: &Stats) -> String {
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        s.n,
        secs(s.p50),
        secs(s.p90),
        secs(s.p99),
        secs(s.mean)
    )
}

/// The self-contained HTML report.
pub fn asr_html(r: &AsrReport, svgs: &[(&str, String)]) -> String {
    let s = &r.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>VoiceRelay eval asr: {sys} {model} ({split})</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td.t{{text-align:left}}.warn{{color:#b00}}</style></head><body>\
         <h1>eval asr: {sys} / {engine} {model}</h1>",
        sys = esc(&r.system),
        engine = esc(&r.engine),
        model = esc(&r.model),
        split = esc(&r.split)
    );
    if !r.complete {
        h.push_str("<p class=\"warn\"><b>Partial report:</b> the run was interrupted; only the utterances below were scored.</p>");
    }
    let _ = write!(
        h,
        "<p>Version <code>{}</code>; corpus <code>{}</code>, split <b>{}</b>; mode <b>{:?}</b>.<br>Latencies are on the <b>{}</b>.<br>\
         Normaliser: {}.<br>Speech onset/end: {}.<br>Settings: <code>{}</code></p>",
        esc(&r.version),
        esc(&r.corpus),
        esc(&r.split),
        r.mode,
        esc(&r.latency_clock),
        esc(&r.normaliser),
        esc(&r.onset_detector),
        esc(&r.settings.to_string())
    );
    let _ = write!(
        h,
        "<h2>Summary</h2><table><tr><th>utterances</th><th>audio s</th><th>WER %</th><th>CER %</th><th>S/D/I/N words</th>\
         <th>RTF</th><th>CPU s / audio s</th><th>peak RSS MiB</th><th>finals only at end of stream</th><th>empty</th></tr>\
         <tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}/{}/{}/{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        s.utterances,
        s.audio_s,
        pct(s.wer),
        pct(s.cer),
        s.word_errors.substitutions,
        s.word_errors.deletions,
        s.word_errors.insertions,
        s.word_errors.reference_len,
        s.rtf,
        secs(s.cpu_s_per_audio_s),
        s.peak_rss_mb.map_or_else(|| "–".into(), |v| format!("{v:.0}")),
        s.finals_at_end_of_stream,
        s.empty_hypotheses
    );
    let _ = write!(
        h,
        "<table><tr><th class=\"t\">latency (s)</th><th>n</th><th>P50</th><th>P90</th><th>P99</th><th>mean</th></tr>\
         <tr><td class=\"t\">TTFT (onset → first correct word)</td>{}</tr>\
         <tr><td class=\"t\">finalisation (end of speech → final)</td>{}</tr></table>",
        stats_cells(&s.ttft_s),
        stats_cells(&s.finalisation_s)
    );
    h.push_str("<h2>Plots</h2>");
    for (_, svg) in svgs {
        // The SVG documents are inlined whole; browsers accept the XML prolog-free <svg> root.
        h.push_str("<div>");
        h.push_str(svg);
        h.push_str("</div>");
    }
    h.push_str("<h2>By category</h2><table><tr><th class=\"t\">category</th><th>utterances</th><th>words</th><th>WER %</th></tr>");
    for c in &r.by_category {
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.category),
            c.utterances,
            c.word_errors.reference_len,
            pct(c.wer)
        );
    }
    h.push_str("</table><h2>Utterances</h2><table><tr><th class=\"t\">id</th><th class=\"t\">category</th><th>audio s</th><th>WER %</th>\
                <th>TTFT s</th><th>final s</th><th>RTF</th><th class=\"t\">reference / hypothesis (normalised)</th></tr>");
    for u in &r.utterances {
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{:.3}</td>\
             <td class=\"t\">{}<br><i>{}</i></td></tr>",
            esc(&u.id),
            esc(&u.category),
            u.audio_s,
            pct(u.wer),
            secs(u.ttft_s),
            secs(u.finalisation_s),
            if u.final_at_end_of_stream { "*" } else { "" },
            u.rtf,
            esc(&u.reference),
            esc(&u.hypothesis)
        );
    }
    h.push_str("</table><p>* final emitted only when the stream was closed, not by the recogniser's endpointing.</p></body></html>\n");
    h
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a.abs() > 1e-12 => format!("{:.2}×", b / a),
        _ => "–".into(),
    }
}

/// Side-by-side table of two reports with B/A ratios, plus warnings when they are not measuring
/// the same thing (different utterance sets, modes or splits).
pub fn compare(a: &AsrReport, b: &AsrReport) -> String {
    let mut out = String::new();
    let name = |r: &AsrReport| format!("{} {} ({:?})", r.system, r.model, r.mode);
    let (na, nb) = (name(a), name(b));
    let w = 12;
    let _ = writeln!(out, "A = {na} [{}]", a.version);
    let _ = writeln!(out, "B = {nb} [{}]", b.version);
    fn ids(r: &AsrReport) -> Vec<&str> {
        let mut v: Vec<&str> = r.utterances.iter().map(|u| u.id.as_str()).collect();
        v.sort_unstable();
        v
    }
    if ids(a) != ids(b) {
        let _ = writeln!(
            out,
            "WARNING: the reports cover different utterances ({} vs {}); figures are not directly comparable",
            a.utterances.len(),
            b.utterances.len()
        );
    }
    if a.split != b.split {
        let _ = writeln!(
            out,
            "WARNING: different splits ({} vs {})",
            a.split, b.split
        );
    }
    if a.mode != b.mode {
        let _ = writeln!(
            out,
            "NOTE: different modes; latencies are on different clocks (A: {}; B: {})",
            a.latency_clock, b.latency_clock
        );
    }
    for (r, tag) in [(a, "A"), (b, "B")] {
        if !r.complete {
            let _ = writeln!(out, "WARNING: {tag} is a partial (interrupted) run");
        }
    }
    let _ = writeln!(out, "{:<28} {:>w$} {:>w$} {:>8}", "metric", "A", "B", "B/A");
    let (sa, sb) = (&a.summary, &b.summary);
    let rows: Vec<(&str, Option<f64>, Option<f64>, usize)> = vec![
        (
            "utterances",
            Some(sa.utterances as f64),
            Some(sb.utterances as f64),
            0,
        ),
        ("WER %", Some(sa.wer * 100.0), Some(sb.wer * 100.0), 2),
        ("CER %", Some(sa.cer * 100.0), Some(sb.cer * 100.0), 2),
        ("TTFT P50 s", sa.ttft_s.p50, sb.ttft_s.p50, 3),
        ("TTFT P90 s", sa.ttft_s.p90, sb.ttft_s.p90, 3),
        (
            "finalisation P50 s",
            sa.finalisation_s.p50,
            sb.finalisation_s.p50,
            3,
        ),
        (
            "finalisation P90 s",
            sa.finalisation_s.p90,
            sb.finalisation_s.p90,
            3,
        ),
        (
            "finalisation P99 s",
            sa.finalisation_s.p99,
            sb.finalisation_s.p99,
            3,
        ),
        ("RTF", Some(sa.rtf), Some(sb.rtf), 3),
        (
            "CPU s per audio s",
            sa.cpu_s_per_audio_s,
            sb.cpu_s_per_audio_s,
            3,
        ),
        ("peak RSS MiB", sa.peak_rss_mb, sb.peak_rss_mb, 0),
    ];
    for (label, x, y, prec) in rows {
        let f = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.prec$}"));
        let _ = writeln!(
            out,
            "{label:<28} {:>w$} {:>w$} {:>8}",
            f(x),
            f(y),
            ratio(x, y)
        );
    }
    out
}
