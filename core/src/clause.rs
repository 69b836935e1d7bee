//! Streaming clause chunker, the one place that decides where a clause ends: the conversation cuts
//! the LLM's answer with it and the synthesizer's streaming text input uses the same rules. Text arrives in arbitrary fragments (LLM tokens) and leaves as
//! clauses ready to synthesise, so the first audio can start after the first clause rather than
//! after the whole answer.
//!
//! A chunk ends at a sentence end (`.` `!` `?` followed by space, or at the end of the text so far
//! when the word before it cannot be an abbreviation, initial, number or URL), at a clause mark
//! (`,` `;` `:` and dashes followed by space) once the chunk has `min_chars`, at a blank line, or
//! — as a last resort — at the last space before `max_chars`. A period inside "3.5", "e.g.",
//! "Dr." or "example.com/x" never ends a chunk.

/// Abbreviations that end in a period but do not end a sentence (the synthesizer reads them out
/// in full).
pub const ABBREVIATIONS: &[(&str, &str)] = &[
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Dr.", "Doctor"),
    ("Prof.", "Professor"),
    ("St.", "Saint"),
    ("Jr.", "Junior"),
    ("Sr.", "Senior"),
    ("vs.", "versus"),
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("approx.", "approximately"),
    ("No.", "number"),
    ("Fig.", "figure"),
    ("Mt.", "Mount"),
    ("Ave.", "Avenue"),
    ("Inc.", "Incorporated"),
    ("Ltd.", "Limited"),
    ("Co.", "Company"),
];

#[derive(Debug, Clone)]
pub struct ClauseChunker {
    buf: String,
    min_chars: usize,
    max_chars: usize,
}

impl ClauseChunker {
    /// `min_chars`: shortest chunk cut at a clause mark (sentence ends always cut);
    /// `max_chars`: longest chunk before a forced cut at a space.
    pub fn new(min_chars: usize, max_chars: usize) -> Self {
        Self {
            buf: String::new(),
            min_chars,
            max_chars: max_chars.max(min_chars + 1).max(2),
        }
    }

    /// Text not yet handed out.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Append a fragment; returns every chunk that became complete (possibly none).
    pub fn push(&mut self, fragment: &str) -> Vec<String> {
        self.buf.push_str(fragment);
        let mut out = Vec::new();
        while let Some(end) = self.find_cut() {
            let rest = self.buf.split_off(end);
            let chunk = std::mem::replace(&mut self.buf, rest);
            let chunk = chunk.trim();
            if !chunk.is_empty() {
                out.push(chunk.to_string());
            }
        }
        // Leading whitespace never starts a chunk.
        let trimmed = self.buf.trim_start().len();
        if trimmed != self.buf.len() {
            self.buf.drain(..self.buf.len() - trimmed);
        }
        out
    }

    /// End of the text: whatever is left is the last chunk.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte offset just after the first cut point in `buf`, if any.
    fn find_cut(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        let mut len_chars = 0usize;
        let mut last_space: Option<usize> = None;
        for (k, &(i, c)) in chars.iter().enumerate() {
            len_chars += 1;
            let after = i + c.len_utf8();
            let next = chars.get(k + 1).map(|&(_, n)| n);
            if c.is_whitespace() {
                if len_chars > 1 {
                    last_space = Some(i);
                }
                if c == '\n' && next == Some('\n') && !b[..i].trim().is_empty() {
                    return Some(after);
                }
            }
            match c {
                '.' | '!' | '?' | '…' => {
                    // Let "?!" / "..." / closing quotes stay with their sentence.
                    let mut end = after;
                    let mut j = k + 1;
                    while let Some(&(ji, jc)) = chars.get(j) {
                        if matches!(jc, '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’' | '…')
                        {
                            end = ji + jc.len_utf8();
                            j += 1;
                        } else {
                            break;
                        }
                    }
                    let following = chars.get(j).map(|&(_, n)| n);
                    let cut = match following {
                        Some(n) if n.is_whitespace() => c != '.' || !self.period_is_not_an_end(i),
                        None => self.end_is_certain(i, c),
                        _ => false,
                    };
                    if cut {
                        return Some(end);
                    }
                }
                ',' | ';' | ':' | '—' | '–' => {
                    let next_is_space = next.is_some_and(char::is_whitespace);
                    if next_is_space && b[..i].trim().chars().count() + 1 >= self.min_chars {
                        return Some(after);
                    }
                }
                _ => {}
            }
            if len_chars >= self.max_chars {
                return last_space.map(|s| s + 1).or(Some(after));
            }
        }
        None
    }

    /// The word that ends with the period at byte `i`, e.g. "Dr." or "3." or "e.g.".
    fn word_ending_at(&self, i: usize) -> &str {
        let head = &self.buf[..=i];
        let start = head.rfind(char::is_whitespace).map_or(0, |s| s + 1);
        head[start..].trim_start_matches(['(', '"', '\'', '“'])
    }

    /// A period followed by whitespace that still does not end the sentence: "Dr. Smith",
    /// "e.g. this", the initial in "J. Smith".
    fn period_is_not_an_end(&self, i: usize) -> bool {
        let w = self.word_ending_at(i);
        if w == "No." {
            // "No. 5" is "number five"; "No. I can't." ends a sentence.
            let rest = self.buf[i + 1..].trim_start();
            return rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit());
        }
        if ABBREVIATIONS.iter().any(|(a, _)| *a == w) {
            return true;
        }
        let body = &w[..w.len() - 1];
        // Single capital initial.
        body.chars().count() == 1 && body.chars().all(|c| c.is_uppercase())
    }

    /// A terminator at the very end of the text received so far: cut now only when no further
    /// character could turn it into something else, so the first sentence is not held back
    /// until the next token (which usually carries the space) arrives.
    fn end_is_certain(&self, i: usize, c: char) -> bool {
        let w = self.word_ending_at(i);
        if w.contains("://") || w.starts_with("www.") || w.contains('@') {
            return false;
        }
        if c != '.' {
            return true;
        }
        if self.period_is_not_an_end(i) {
            return false;
        }
        let body = &w[..w.len() - 1];
        // "3." may become "3.5"; "e.g" or "U.S" may gain another period; "example." may be
        // "example.com".
        let last = body.chars().last();
        if last.is_none_or(|l| !l.is_alphabetic()) || body.contains('.') {
            return false;
        }
        // A bare domain ("example." then "com") is cut here: rarer in speech than a sentence end,
        // and waiting would hold every first sentence back until the next token.
        if ABBREVIATIONS
            .iter()
            .any(|(a, _)| a.starts_with(body) && a.len() > body.len() + 1)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(ch: &mut ClauseChunker, pieces: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend(ch.push(p));
        }
        out.extend(ch.finish());
        out
    }

    fn feed_chars(min: usize, max: usize, text: &str) -> Vec<String> {
        let mut ch = ClauseChunker::new(min, max);
        let pieces: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        feed(&mut ch, &refs)
    }

    #[test]
    fn sentences_and_clauses() {
        let out = feed_chars(
            10,
            200,
            "Sure, I can help with that. The train leaves at noon, and it takes two hours! Okay?",
        );
        assert_eq!(
            out,
            vec![
                "Sure, I can help with that.",
                "The train leaves at noon,",
                "and it takes two hours!",
                "Okay?"
            ]
        );
    }

    #[test]
    fn short_clause_is_not_cut_below_min() {
        let out = feed_chars(10, 200, "Sure, I can help. Yes.");
        assert_eq!(out, vec!["Sure, I can help.", "Yes."]);
        let out = feed_chars(3, 200, "Sure, I can help.");
        assert_eq!(out, vec!["Sure,", "I can help."]);
    }

    #[test]
    fn numbers_abbreviations_and_urls_do_not_cut() {
        let text = "It weighs 3.5 kg. Dr. Smith said e.g. apples cost $1,000.50 each. \
                    See https://example.com/a.b?c=1 for more. J. R. R. Tolkien wrote it.";
        let out = feed_chars(10, 300, text);
        assert_eq!(
            out,
            vec![
                "It weighs 3.5 kg.",
                "Dr. Smith said e.g. apples cost $1,000.50 each.",
                "See https://example.com/a.b?c=1 for more.",
                "J. R. R. Tolkien wrote it."
            ]
        );
    }

    #[test]
    fn fragment_boundaries_do_not_matter() {
        let text = "First clause here, then more words follow. Version 2.5 is out; enjoy it! Bye.";
        let whole = {
            let mut ch = ClauseChunker::new(8, 120);
            let mut v = ch.push(text);
            v.extend(ch.finish());
            v
        };
        for size in [1, 2, 3, 5, 7, 13] {
            let chars: Vec<char> = text.chars().collect();
            let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut ch = ClauseChunker::new(8, 120);
            assert_eq!(feed(&mut ch, &refs), whole, "fragment size {size}");
        }
        assert_eq!(
            whole,
            vec![
                "First clause here,",
                "then more words follow.",
                "Version 2.5 is out;",
                "enjoy it!",
                "Bye."
            ]
        );
    }

    #[test]
    fn sentence_end_is_released_before_the_next_token() {
        // LLM tokens usually carry the space at the start of the next token.
        let mut ch = ClauseChunker::new(10, 200);
        assert!(ch.push("The answer is yes").is_empty());
        assert_eq!(ch.push("."), vec!["The answer is yes."]);
        // A trailing number period must wait: it may be "3.5".
        assert!(ch.push(" It costs 3").is_empty());
        assert!(ch.push(".").is_empty());
        assert!(ch.push("5").is_empty());
        assert_eq!(ch.push(" dollars!"), vec!["It costs 3.5 dollars!"]);
        // An abbreviation at the end waits too.
        assert!(ch.push(" Ask Dr.").is_empty());
        assert!(ch.push(" Who").is_empty());
        assert_eq!(ch.push("?"), vec!["Ask Dr. Who?"]);
        assert_eq!(ch.finish(), None);
    }

    #[test]
    fn max_length_forces_a_cut_at_a_space() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let out = feed_chars(5, 20, text);
        assert!(out.len() >= 3, "{out:?}");
        for c in &out {
            assert!(c.chars().count() <= 20, "{c:?}");
        }
        assert_eq!(out.join(" "), text);
    }

    #[test]
    fn blank_line_and_empty_input() {
        let out = feed_chars(10, 200, "A heading\n\nThe body text");
        assert_eq!(out, vec!["A heading", "The body text"]);
        assert!(feed_chars(10, 200, "   ").is_empty());
        assert!(feed_chars(10, 200, "").is_empty());
    }
}
