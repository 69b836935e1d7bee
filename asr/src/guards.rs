//! Loop and hallucination guards for Whisper hypotheses: pure functions over scores and token or
//! word sequences, so every rule is tested without a model.
//!
//! The thresholds are the ones OpenAI's `transcribe()` uses to decide that a 30 s window's decode
//! failed (`whisper/transcribe.py`, `decode_with_fallback`): a zlib compression ratio above 2.4
//! means the text is too repetitive (a loop), a mean log-probability below −1.0 means the model
//! was guessing, and a no-speech probability above 0.6 *together with* a low log-probability
//! means the window is silence and its text is dropped. The reference then retries at a higher
//! temperature; a streaming recogniser re-decodes the window at its next update anyway, so a
//! failed window here simply contributes nothing new to the committed text.
//!
//! The repeated n-gram rules complement the compression ratio, which cannot see a short loop
//! (zlib's header and checksum outweigh what a 40-character repetition saves): a word pattern
//! repeated consecutively more often than speech plausibly repeats it is cut at the first excess
//! copy ([`repetition_cut`]), and a new utterance that opens by reciting the end of the previous
//! one is cut where the recital ends ([`echo_len`]).

/// OpenAI's `compression_ratio_threshold`.
pub const COMPRESSION_RATIO_THRESHOLD: f32 = 2.4;

/// Compression ratio of `text` as OpenAI computes it: UTF-8 bytes over zlib-compressed bytes
/// (zlib's default level 6). Empty text gives 0.
pub fn compression_ratio(text: &str) -> f32 {
    let b = text.as_bytes();
    if b.is_empty() {
        return 0.0;
    }
    let z = miniz_oxide::deflate::compress_to_vec_zlib(b, 6);
    b.len() as f32 / z.len().max(1) as f32
}

/// Thresholds of [`judge`]; the defaults are OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub compression_ratio: f32,
    pub logprob: f32,
    pub no_speech: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            compression_ratio: COMPRESSION_RATIO_THRESHOLD,
            logprob: -1.0,
            no_speech: 0.6,
        }
    }
}

/// What one decoded window says about itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowScores {
    /// Probability of `<|nospeech|>` at the first decoding position.
    pub no_speech_prob: f32,
    /// Mean log-probability of the sampled (not forced) tokens; `None` when nothing was sampled
    /// (the forced prefix alone ended the decode), which says nothing about confidence.
    pub avg_logprob: Option<f32>,
    /// [`compression_ratio`] of the window's whole text (forced prefix and new tokens).
    pub compression_ratio: f32,
}

/// Why a window's new text is not trusted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// Compression ratio above the threshold: the text repeats itself.
    Repetitive,
    /// Mean log-probability below the threshold: the model was guessing.
    Unlikely,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Accept,
    /// Silence (or noise) by the model's own account: the new text is dropped.
    Silence,
    /// The decode failed: its new text must not be committed.
    Failed(Failure),
}

/// OpenAI's decision for one decode, in its order: a repetitive or unlikely decode fails, unless
/// the no-speech probability is high as well, which makes it silence.
pub fn judge(s: &WindowScores, t: &Thresholds) -> Verdict {
    let unlikely = s.avg_logprob.is_some_and(|l| l < t.logprob);
    if unlikely && s.no_speech_prob > t.no_speech {
        return Verdict::Silence;
    }
    if s.compression_ratio > t.compression_ratio {
        return Verdict::Failed(Failure::Repetitive);
    }
    if unlikely {
        return Verdict::Failed(Failure::Unlikely);
    }
    Verdict::Accept
}

/// How many consecutive copies of a `p`-word pattern speech is allowed before the rest counts
/// as a loop: a single word up to six times (the dev references have "uh uh uh uh uh uh" and
/// "word word word word word"), longer patterns twice (a restart, "I went I went to", or a
/// sentence said again). Whether a second copy was really said is for [`unsupported_copy`] to
/// judge from the audio.
pub fn allowed_copies(p: usize) -> usize {
    match p {
        0 | 1 => 6,
        _ => 2,
    }
}

/// Token-level runaway limit for the decoder's own stop rule: looser than [`allowed_copies`]
/// (a word is one or more tokens), it only ends a decode that is clearly looping; the word
/// rules decide what is kept.
pub fn allowed_token_copies(p: usize) -> usize {
    if p <= 3 {
        6
    } else {
        2
    }
}

/// Whether `pat` is a repetition of a shorter block ("uh uh" is "uh" twice): such a pattern's
/// copies are already counted at the shorter period.
fn is_periodic<K: PartialEq>(pat: &[K]) -> bool {
    let p = pat.len();
    (1..p).any(|d| p.is_multiple_of(d) && (d..p).all(|i| pat[i] == pat[i - d]))
}

/// Longest pattern (in words) the repetition check looks for.
pub const MAX_PATTERN: usize = 24;

/// Where the earliest loop in `seq` starts, considering only loops whose excess copy ends at or
/// after `from` (the part before `from` is committed and is not judged again). A loop is a
/// pattern of `p` items repeated consecutively more than [`allowed_copies`]`(p)` times; the cut
/// is the start of the first excess copy, never before `from`. `None` when there is none.
pub fn repetition_cut<K: PartialEq>(seq: &[K], from: usize) -> Option<usize> {
    ((from + 1)..=seq.len())
        .find_map(|e| loop_ending_at(seq, e, allowed_copies))
        .map(|(e, p, _)| (e - p).max(from))
}

/// The decoder's stop rule, checked as each token arrives: when `seq` ends with a pattern
/// repeated more than [`allowed_token_copies`] times, the index where its second copy starts
/// (everything from there is the loop; the first copy is kept), never before `from` (the forced
/// prefix).
pub fn runaway_cut<K: PartialEq>(seq: &[K], from: usize) -> Option<usize> {
    loop_ending_at(seq, seq.len(), allowed_token_copies)
        .map(|(e, p, r)| (e - (r - 1) * p).max(from))
}

/// The shortest non-periodic pattern `p` whose consecutive copies ending at `e` exceed
/// `allowed(p)`, as (e, p, copies).
fn loop_ending_at<K: PartialEq>(
    seq: &[K],
    e: usize,
    allowed: fn(usize) -> usize,
) -> Option<(usize, usize, usize)> {
    for p in 1..=MAX_PATTERN.min(e) {
        if p > 1 && is_periodic(&seq[e - p..e]) {
            continue;
        }
        let mut r = 1;
        while (r + 1) * p <= e && seq[e - (r + 1) * p..e - r * p] == seq[e - p..e] {
            r += 1;
        }
        if r > allowed(p) {
            return Some((e, p, r));
        }
    }
    None
}

/// A copy of the pattern just before it ("being comparatively modern being comparatively
/// modern") that the audio does not support: aligned to less than `min_ratio` of the time its
/// first copy took. A speaker who repeats a phrase says it again at a similar pace; Whisper
/// re-reading audio it already transcribed squeezes the copy into the last fraction of a
/// second. `spans` are each item's aligned (start, end) frames where known. Without them a
/// short pattern (up to [`SHORT_PATTERN`] items: "five five", "I went I went") is kept, a
/// clause is not: a whole clause again needs positive evidence (in practice its first copy has
/// left the window, and a copy decoded now is the model reciting its prompt).
/// Returns the start of the earliest such copy at or after `from`.
pub fn unsupported_copy<K: PartialEq>(
    seq: &[K],
    spans: &[Option<(usize, usize)>],
    from: usize,
    min_ratio: f32,
) -> Option<usize> {
    let dur = |a: usize, b: usize| -> Option<usize> {
        let s = spans.get(a).copied().flatten()?;
        let e = spans.get(b - 1).copied().flatten()?;
        Some(e.1.saturating_sub(s.0))
    };
    for e in (from + 1)..=seq.len() {
        for p in 1..=MAX_PATTERN {
            if e < 2 * p || e - p < from || is_periodic(&seq[e - p..e]) {
                continue;
            }
            if seq[e - 2 * p..e - p] != seq[e - p..e] {
                continue;
            }
            let supported = match (dur(e - 2 * p, e - p), dur(e - p, e)) {
                (Some(first), Some(copy)) => copy as f32 >= min_ratio * first as f32,
                _ => p <= SHORT_PATTERN,
            };
            if !supported {
                return Some(e - p);
            }
        }
    }
    None
}

/// Longest pattern [`unsupported_copy`] keeps without alignment evidence.
pub const SHORT_PATTERN: usize = 3;

/// A near copy of recent text: a run of at least [`NEAR_MIN`] items starting at or after `from`
/// that matches, position by position with at most one mismatch in five, a run that ends
/// before it and starts at most [`MAX_PATTERN`] items earlier, and that covers at least half
/// the distance between the two starts ("i will love to go to that track i would love to go to
/// that"). Whisper produces this when a committed prefix it was forced to follow disagrees
/// with the audio and it transcribes the same audio again. Returns (start, length) of the
/// longest such copy at the earliest start; first words must agree.
pub fn near_repeat<K: PartialEq>(seq: &[K], from: usize) -> Option<(usize, usize)> {
    let n = seq.len();
    for i in from.max(NEAR_MIN)..n {
        let mut best = 0;
        for j in i.saturating_sub(MAX_PATTERN)..=(i - NEAR_MIN) {
            if seq[j] != seq[i] {
                continue;
            }
            let mut mism = 0;
            let mut len = 0;
            let mut l = 0;
            while j + l < i && i + l < n {
                if seq[j + l] != seq[i + l] {
                    mism += 1;
                }
                l += 1;
                if 5 * mism <= l && seq[j + l - 1] == seq[i + l - 1] {
                    len = l;
                }
            }
            if len >= NEAR_MIN && 2 * len >= i - j {
                best = best.max(len);
            }
        }
        if best > 0 {
            return Some((i, best));
        }
    }
    None
}

/// Shortest run [`near_repeat`] reports.
pub const NEAR_MIN: usize = 5;

/// Length of the echo at the start of `hyp`: how many of its leading items repeat the last items
/// of `prev` (the previous utterance's text) word for word, when that is at least `min` items;
/// else 0. Whisper conditioned on the previous text sometimes recites it again over the first
/// second of the new audio.
pub fn echo_len<K: PartialEq>(prev: &[K], hyp: &[K], min: usize) -> usize {
    let mut best = 0;
    for k in min..=hyp.len().min(prev.len()) {
        if prev[prev.len() - k..] == hyp[..k] {
            best = k;
        }
    }
    best
}

/// Normalised word key for the comparisons above: lower case, letters, digits and apostrophes.
pub fn word_key(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(word_key).collect()
    }

    #[test]
    fn compression_ratio_flags_loops_not_prose() {
        let prose = "The stale smell of old beer lingers. It takes heat to bring out the odor. \
                     A cold dip restores health and zest.";
        let r = compression_ratio(prose);
        assert!(r < 1.5, "prose ratio {r}");
        let looped = "and then I said that I would go and then I said that I would go and then \
                      I said that I would go and then I said that I would go";
        let r = compression_ratio(looped);
        assert!(r > COMPRESSION_RATIO_THRESHOLD, "loop ratio {r}");
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn verdict_follows_openai_order() {
        let t = Thresholds::default();
        let s = |ns, lp, cr| WindowScores {
            no_speech_prob: ns,
            avg_logprob: lp,
            compression_ratio: cr,
        };
        assert_eq!(judge(&s(0.1, Some(-0.3), 1.2), &t), Verdict::Accept);
        assert_eq!(
            judge(&s(0.1, Some(-0.3), 3.0), &t),
            Verdict::Failed(Failure::Repetitive)
        );
        assert_eq!(
            judge(&s(0.1, Some(-1.4), 1.2), &t),
            Verdict::Failed(Failure::Unlikely)
        );
        // High no-speech alone is not silence: the model was confident in the words.
        assert_eq!(judge(&s(0.9, Some(-0.3), 1.2), &t), Verdict::Accept);
        // ... with low confidence it is, even when the text loops.
        assert_eq!(judge(&s(0.9, Some(-1.4), 3.0), &t), Verdict::Silence);
        // Nothing sampled: no evidence either way.
        assert_eq!(judge(&s(0.9, None, 1.2), &t), Verdict::Accept);
    }

    #[test]
    fn repeated_clauses_are_cut_at_the_first_excess_copy() {
        let s = w("i went to the shop and i went to the shop and i went to the shop and");
        // Pattern "i went to the shop and" (6 words) is allowed twice, never three times.
        assert_eq!(repetition_cut(&s, 0), Some(12));
        // Committed text is never uncut: the cut moves to `from`.
        assert_eq!(repetition_cut(&s, 14), Some(14));
        // The second copy without alignment evidence is not supported either.
        assert_eq!(unsupported_copy(&s, &vec![None; s.len()], 0, 0.5), Some(6));
    }

    #[test]
    fn speech_repetitions_pass() {
        for ok in [
            "no no no",
            "word word word word word",
            "five five",
            "eight zero zero zero one",
            "i went i went to the store",
            "uh huh uh huh okay",
            "one two three four five six",
        ] {
            assert_eq!(repetition_cut(&w(ok), 0), None, "{ok}");
        }
        assert_eq!(
            repetition_cut(&w("and and and and and and and"), 0),
            Some(6)
        );
        assert_eq!(repetition_cut(&w("uh huh uh huh uh huh"), 0), Some(4));
        // Periodic patterns count at their shortest period: six "uh" are six copies of "uh",
        // not three of "uh uh".
        assert_eq!(
            repetition_cut(&w("montreal uh uh uh uh uh uh forced"), 0),
            None
        );
        assert_eq!(runaway_cut(&[5, 5, 5, 5, 5, 5], 0), None);
        // The decoder checks as each token arrives; a runaway keeps only its first copy.
        assert_eq!(runaway_cut(&[9, 5, 5, 5, 5, 5, 5, 5], 0), Some(2));
        assert_eq!(
            runaway_cut(&[1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4], 0),
            Some(4)
        );
        assert_eq!(
            runaway_cut(&[1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4], 6),
            Some(6)
        );
        assert_eq!(runaway_cut(&[1, 2, 3, 4, 1, 2, 3, 4], 0), None);
    }

    #[test]
    fn loops_inside_the_committed_part_are_not_judged_again() {
        let s = w("a b c d a b c d x y");
        // The loop ends at 8, before `from`: nothing new to cut.
        assert_eq!(repetition_cut(&s, 8), None);
        // A new copy continuing a committed loop is cut where the new part starts.
        let s = w("go go go go go go go");
        assert_eq!(repetition_cut(&s, 6), Some(6));
    }

    #[test]
    fn short_copies_need_audio_of_their_own() {
        let s = w("in being comparatively modern being comparatively modern");
        let sp = |v: &[(usize, usize)]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        // The copy squeezed into 20 frames after a first copy of 140: cut at the copy.
        let squeezed = sp(&[
            (0, 20),
            (20, 50),
            (50, 130),
            (130, 190),
            (190, 195),
            (195, 205),
            (205, 210),
        ]);
        assert_eq!(unsupported_copy(&s, &squeezed, 0, 0.5), Some(4));
        // Said again at the same pace: kept.
        let spoken = sp(&[
            (0, 20),
            (20, 50),
            (50, 130),
            (130, 190),
            (200, 230),
            (230, 310),
            (310, 370),
        ]);
        assert_eq!(unsupported_copy(&s, &spoken, 0, 0.5), None);
        // No alignment: a short phrase is kept; committed copies are not judged again.
        assert_eq!(unsupported_copy(&s, &[None; 7], 0, 0.5), None);
        // A sentence said twice at the same pace is kept.
        let s = w("turn off the lights turn off the lights");
        let paced = sp(&[
            (0, 20),
            (20, 40),
            (40, 50),
            (50, 90),
            (120, 140),
            (140, 160),
            (160, 170),
            (170, 210),
        ]);
        assert_eq!(unsupported_copy(&s, &paced, 0, 0.5), None);
        assert_eq!(repetition_cut(&s, 0), None);
        assert_eq!(unsupported_copy(&s, &squeezed, 5, 0.5), None);
        // "five five", the second squeezed.
        let s = w("five five");
        assert_eq!(
            unsupported_copy(&s, &sp(&[(0, 40), (40, 45)]), 0, 0.5),
            Some(1)
        );
    }

    #[test]
    fn near_copies_of_recent_text() {
        let s = w("change is part of growing i will love to go to that track \
                   i would love to go to that it is single of the week");
        // "i would love to go to that" (7 words) repeats "i will love to go to that".
        assert_eq!(near_repeat(&s, 0), Some((13, 7)));
        assert_eq!(near_repeat(&s, 20), None);
        let prose = w(
            "from fairest creatures we desire increase that thereby beautys rose \
                       might never die but as the riper should by time decease",
        );
        assert_eq!(near_repeat(&prose, 0), None);
        // Further back, as long as the copy covers half the distance: the second telling
        // (13 words, two of them different) goes.
        let s = w("and i have a long pause and i think this is probably \
                   good and here is a long pause and i think this is probably good");
        assert_eq!(near_repeat(&s, 0), Some((13, 13)));
        // A five-word echo fifteen words later is a coincidence, not a copy.
        assert_eq!(
            near_repeat(&w("a b c d e f g h i j k l m n o a b c d e"), 0),
            None
        );
        // Two different words in five are not a copy.
        assert_eq!(near_repeat(&w("a b c d e a x y d e"), 0), None);
    }

    #[test]
    fn echoes_of_the_previous_utterance() {
        let prev = w("we went down to the river");
        assert_eq!(echo_len(&prev, &w("down to the river and swam"), 3), 4);
        assert_eq!(echo_len(&prev, &w("the river was cold"), 3), 0);
        assert_eq!(echo_len(&prev, &w("river and more"), 1), 1);
        assert_eq!(echo_len(&prev, &w(""), 3), 0);
        assert_eq!(echo_len(&[] as &[String], &w("a b c"), 3), 0);
    }

    #[test]
    fn word_keys_ignore_case_and_punctuation() {
        assert_eq!(word_key(" Hello,"), "hello");
        assert_eq!(word_key("don't."), "don't");
    }
}
