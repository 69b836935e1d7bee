//! Text normalisation applied to both reference and hypothesis before scoring.
//!
//! Steps, in order:
//! 1. Lower-case; typographic apostrophes (’ ‘) become `'`.
//! 2. Numbers: digit runs (with optional `,` thousands separators and one decimal point) are spelt
//!    out as English cardinals ("1961" → "one thousand nine hundred sixty one", "3.5" → "three
//!    point five", "2nd" → "second"). Number words already spelt out stay as they are, so "ten"
//!    and "10" compare equal. `%` becomes "percent".
//! 3. Contractions are expanded ("don't" → "do not", "i'm" → "i am", "it's" → "it is", "'ll" →
//!    " will", ...); a remaining possessive/other apostrophe is dropped ("bob's" → "bobs").
//! 4. Hyphens, slashes and every other non-alphanumeric character become spaces.
//! 5. A few spoken-form abbreviations: "mr" → "mister", "mrs" → "missus", "dr" → "doctor",
//!    "ok" → "okay".
//! 6. Whitespace is collapsed.
//!
//! Scorers in other languages (the faster-whisper peer script) implement the same steps.

/// English cardinal for `n`, words separated by single spaces, no "and" ("1961" → "one thousand
/// nine hundred sixty one"). The TTS verbaliser's number words, so what the voice is asked to say
/// and what the scorer expects are spelled by one piece of code.
pub fn cardinal(n: u64) -> String {
    vr_tts::verbalize::cardinal(n).replace('-', " ")
}

fn ordinal(n: u64) -> String {
    vr_tts::verbalize::ordinal(n).replace('-', " ")
}

const CONTRACTIONS: &[(&str, &str)] = &[
    ("won't", "will not"),
    ("can't", "can not"),
    ("cannot", "can not"),
    ("shan't", "shall not"),
    ("ain't", "is not"),
    ("let's", "let us"),
    ("i'm", "i am"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("there's", "there is"),
    ("what's", "what is"),
    ("he's", "he is"),
    ("she's", "she is"),
    ("here's", "here is"),
    ("who's", "who is"),
    ("where's", "where is"),
];

const SUFFIXES: &[(&str, &str)] = &[
    ("n't", " not"),
    ("'re", " are"),
    ("'ve", " have"),
    ("'ll", " will"),
    ("'d", " would"),
];

fn expand_word(w: &str) -> String {
    for (a, b) in CONTRACTIONS {
        if w == *a {
            return (*b).to_string();
        }
    }
    for (suf, rep) in SUFFIXES {
        if let Some(stem) = w.strip_suffix(suf) {
            if !stem.is_empty() {
                return format!("{stem}{rep}");
            }
        }
    }
    w.replace('\'', "")
}

/// Spells out the numbers in `s` (already lower-cased).
fn spell_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            if chars[i] == '%' {
                out.push_str(" percent ");
            } else {
                out.push(chars[i]);
            }
            i += 1;
            continue;
        }
        let mut digits = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_digit() {
                digits.push(c);
                i += 1;
            } else if c == ','
                && i + 3 < chars.len() + 1
                && chars[i + 1..]
                    .iter()
                    .take(3)
                    .filter(|c| c.is_ascii_digit())
                    .count()
                    == 3
                && chars.get(i + 4).is_none_or(|c| !c.is_ascii_digit())
            {
                i += 1;
            } else {
                break;
            }
        }
        let mut words = match digits.parse::<u64>() {
            Ok(n) => cardinal(n),
            // Longer than u64: digit by digit.
            Err(_) => digits
                .chars()
                .map(|d| cardinal(u64::from(d.to_digit(10).unwrap_or(0))))
                .collect::<Vec<_>>()
                .join(" "),
        };
        if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
            i += 1;
            words.push_str(" point");
            while i < chars.len() && chars[i].is_ascii_digit() {
                words.push(' ');
                words.push_str(&cardinal(u64::from(chars[i].to_digit(10).unwrap_or(0))));
                i += 1;
            }
        }
        let rest: String = chars[i..].iter().take(2).collect();
        if ["st", "nd", "rd", "th"].contains(&rest.as_str())
            && chars.get(i + 2).is_none_or(|c| !c.is_alphanumeric())
        {
            if let Ok(n) = digits.parse::<u64>() {
                words = ordinal(n);
                i += 2;
            }
        }
        out.push(' ');
        out.push_str(&words);
        out.push(' ');
    }
    out
}

/// Normalises one text for scoring (see the module doc).
pub fn normalize(text: &str) -> String {
    let s = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    let s = spell_numbers(&s);
    let mut words = Vec::new();
    for raw in s.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let w = raw.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        for part in expand_word(w).split_whitespace() {
            let part = match part {
                "mr" => "mister",
                "mrs" => "missus",
                "dr" => "doctor",
                "ok" => "okay",
                p => p,
            };
            words.push(part.to_string());
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(10), "ten");
        assert_eq!(cardinal(21), "twenty one");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(1961), "one thousand nine hundred sixty one");
        assert_eq!(cardinal(2_000_005), "two million five");
    }

    #[test]
    fn hand_checked_normalisation() {
        assert_eq!(normalize("Hello, World!"), "hello world");
        assert_eq!(
            normalize("HE HOPED THERE WOULD BE STEW"),
            "he hoped there would be stew"
        );
        assert_eq!(
            normalize("I'm sure it's 10 o'clock."),
            "i am sure it is ten oclock"
        );
        assert_eq!(
            normalize("We don't; they won't."),
            "we do not they will not"
        );
        assert_eq!(normalize("one, two, three"), normalize("1 2 3"));
        assert_eq!(normalize("1,000 people"), "one thousand people");
        assert_eq!(normalize("3.5%"), "three point five percent");
        assert_eq!(normalize("the 2nd time"), "the second time");
        assert_eq!(
            normalize("Mr. Smith's well-known dog"),
            "mister smiths well known dog"
        );
        assert_eq!(normalize("  "), "");
        assert_eq!(
            normalize("\u{2019}Tis you\u{2019}ll see"),
            "tis you will see"
        );
    }
}
