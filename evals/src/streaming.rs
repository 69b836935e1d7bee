//! Drives a [`StreamingRecognizer`] over one clip on a simulated real-time clock and measures
//! what a user would see.
//!
//! Clock model: chunk `i` becomes available at its audio time; the recogniser starts on it when
//! both the chunk has arrived and the previous `push` has returned, and its events are stamped
//! with the time that `push` returns (measured wall time of the call added to the simulated
//! clock). This is what a live run on this machine would show, without sleeping.
//!
//! Measures (all in seconds):
//! - word latency: for the i-th word of the final text, the time the stable prefix of a partial
//!   first held i+1 words (or the final's time) minus that word's end time. Word end times are
//!   the recogniser's own (Whisper: segment timestamps spread over the words, approximate).
//! - first partial: time of the first partial minus the first word's start time.
//! - finalisation: time the last `Final` was emitted minus the end of the audio.
//! - RTF: total wall time inside `push`/`finish` over audio duration.

use std::time::Instant;
use vr_asr::{AsrError, AsrEvent, StreamingRecognizer};

#[derive(Debug, Clone, Default)]
pub struct StreamRun {
    pub text: String,
    pub finals: usize,
    pub word_latencies: Vec<f64>,
    pub first_partial: Option<f64>,
    pub finalisation: Option<f64>,
    pub compute_s: f64,
    pub audio_s: f64,
}

/// Runs `rec` over `samples` in chunks of `chunk` samples, then `finish()`.
pub fn run_stream(
    rec: &mut dyn StreamingRecognizer,
    samples: &[f32],
    chunk: usize,
) -> Result<StreamRun, AsrError> {
    let sr = rec.sample_rate().hz() as f64;
    let mut clock = 0.0f64;
    let mut compute = 0.0f64;
    let mut stamped: Vec<(f64, AsrEvent)> = Vec::new();
    let mut pos = 0usize;
    for c in samples.chunks(chunk.max(1)) {
        pos += c.len();
        clock = clock.max(pos as f64 / sr);
        let t0 = Instant::now();
        let ev = rec.push(c)?;
        let dt = t0.elapsed().as_secs_f64();
        compute += dt;
        clock += dt;
        stamped.extend(ev.into_iter().map(|e| (clock, e)));
    }
    let audio_s = samples.len() as f64 / sr;
    clock = clock.max(audio_s);
    let t0 = Instant::now();
    let ev = rec.finish()?;
    let dt = t0.elapsed().as_secs_f64();
    compute += dt;
    clock += dt;
    stamped.extend(ev.into_iter().map(|e| (clock, e)));

    let mut run = StreamRun {
        compute_s: compute,
        audio_s,
        ..Default::default()
    };
    let mut texts = Vec::new();
    // Words committed before the current utterance's finals, to index partials across utterances.
    let mut words_before = 0usize;
    let mut commit_time: Vec<Option<f64>> = Vec::new();
    for (t, e) in &stamped {
        match e {
            AsrEvent::Partial {
                text,
                stable_prefix_len,
            } => {
                if run.first_partial.is_none() {
                    run.first_partial = Some(*t);
                }
                let stable = text.get(..*stable_prefix_len).unwrap_or("");
                let n = words_before + stable.split_whitespace().count();
                while commit_time.len() < n {
                    commit_time.push(Some(*t));
                }
            }
            AsrEvent::Final { text, words, .. } => {
                run.finals += 1;
                texts.push(text.clone());
                let n = words_before + words.len();
                while commit_time.len() < n {
                    commit_time.push(Some(*t));
                }
                commit_time.truncate(n);
                for (i, w) in words.iter().enumerate() {
                    if let Some(Some(ct)) = commit_time.get(words_before + i) {
                        run.word_latencies.push(ct - w.end.0 as f64 / sr);
                    }
                    if i == 0 && words_before == 0 {
                        if let Some(fp) = run.first_partial.as_mut() {
                            *fp -= w.start.0 as f64 / sr;
                        }
                    }
                }
                words_before = n;
                run.finalisation = Some(t - audio_s);
            }
            _ => {}
        }
    }
    if words_before == 0 {
        run.first_partial = None;
    }
    run.text = texts.join(" ");
    Ok(run)
}

/// The `p`-th percentile (0..=100, nearest rank) of `v`; `None` when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 90.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
