//! Word and character error rates by Levenshtein alignment.
//!
//! `WER = (S + D + I) / N` with `N` the reference length. Among minimum-cost alignments the one
//! with the most substitutions' positions resolved first is taken (backtrace prefers diagonal
//! moves), so the split into S/D/I is deterministic. An empty reference has `N = 0`: the rate is
//! 0 for an empty hypothesis and 1 otherwise (every word an insertion), never a division by zero.

/// Edit counts of one alignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorCounts {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Reference length (words or characters).
    pub reference_len: usize,
}

impl ErrorCounts {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Error rate; see the module doc for the empty-reference convention.
    pub fn rate(&self) -> f64 {
        if self.reference_len == 0 {
            return if self.errors() == 0 { 0.0 } else { 1.0 };
        }
        self.errors() as f64 / self.reference_len as f64
    }
}

impl std::ops::Add for ErrorCounts {
    type Output = ErrorCounts;
    fn add(self, o: Self) -> Self {
        ErrorCounts {
            substitutions: self.substitutions + o.substitutions,
            deletions: self.deletions + o.deletions,
            insertions: self.insertions + o.insertions,
            reference_len: self.reference_len + o.reference_len,
        }
    }
}

impl std::iter::Sum for ErrorCounts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(ErrorCounts::default(), |a, b| a + b)
    }
}

/// Aligns two token sequences.
pub fn align<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> ErrorCounts {
    let (n, m) = (reference.len(), hypothesis.len());
    // d[i][j]: cost of aligning reference[..i] with hypothesis[..j].
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + usize::from(reference[i - 1] != hypothesis[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let mut c = ErrorCounts {
        reference_len: n,
        ..Default::default()
    };
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0 && j > 0 {
            let same = reference[i - 1] == hypothesis[j - 1];
            if d[i][j] == d[i - 1][j - 1] + usize::from(!same) {
                if !same {
                    c.substitutions += 1;
                }
                i -= 1;
                j -= 1;
                continue;
            }
        }
        if i > 0 && d[i][j] == d[i - 1][j] + 1 {
            c.deletions += 1;
            i -= 1;
        } else {
            c.insertions += 1;
            j -= 1;
        }
    }
    c
}

/// Word errors of already-normalised texts (split on whitespace).
pub fn word_errors(reference: &str, hypothesis: &str) -> ErrorCounts {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    align(&r, &h)
}

/// Character errors of already-normalised texts (whitespace runs count as one space).
pub fn char_errors(reference: &str, hypothesis: &str) -> ErrorCounts {
    let r: Vec<char> = reference
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    let h: Vec<char> = hypothesis
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    align(&r, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: usize, d: usize, i: usize, n: usize) -> ErrorCounts {
        ErrorCounts {
            substitutions: s,
            deletions: d,
            insertions: i,
            reference_len: n,
        }
    }

    #[test]
    fn hand_checked_cases() {
        assert_eq!(word_errors("a b c", "a b c"), c(0, 0, 0, 3));
        // One substitution.
        assert_eq!(word_errors("the cat sat", "the bat sat"), c(1, 0, 0, 3));
        // Two minimal alignments cost 2 (D+I or 2 S); the backtrace prefers the diagonal.
        assert_eq!(word_errors("the cat sat", "the sat down"), c(2, 0, 0, 3));
        assert_eq!(word_errors("a b c d", "a c d"), c(0, 1, 0, 4));
        assert_eq!(word_errors("a b", "x a b y"), c(0, 0, 2, 2));
        // Empty hypothesis: all deletions; empty reference: all insertions.
        assert_eq!(word_errors("one two three", ""), c(0, 3, 0, 3));
        assert_eq!(word_errors("", "hello there"), c(0, 0, 2, 0));
        assert_eq!(word_errors("", "hello there").rate(), 1.0);
        assert_eq!(word_errors("", "").rate(), 0.0);
        assert!((word_errors("a b c d", "a x c").rate() - 0.5).abs() < 1e-12);
        // Characters.
        assert_eq!(char_errors("kitten", "sitting"), c(2, 0, 1, 6));
        assert_eq!(char_errors("ab  c", "ab c"), c(0, 0, 0, 4));
    }

    #[test]
    fn sums_pool_counts() {
        let t: ErrorCounts = [word_errors("a b", "a"), word_errors("c d e", "c x e")]
            .into_iter()
            .sum();
        assert_eq!(t, c(1, 1, 0, 5));
        assert!((t.rate() - 0.4).abs() < 1e-12);
    }
}
