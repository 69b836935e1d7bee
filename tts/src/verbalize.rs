//! Text normalisation before phonemisation: numbers, decimals, ordinals, years, dates, times,
//! money, percentages, units and common abbreviations become words ("3.5 kg" → "three point five
//! kilograms"), so every voice (Piper via espeak phonemes, flite, espeak) reads them the same way
//! and the words Whisper hears back are predictable.
//!
//! Works token by token on whitespace-separated text, with one token of look-ahead (for units and
//! scale words) and one of look-behind (for years after a month or "in"). Punctuation around a
//! token is kept so the clause structure reaches the phonemiser unchanged.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [(u64, &str); 4] = [
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// (abbreviation, singular, plural); matched case-sensitively after a number.
const UNITS: &[(&str, &str, &str)] = &[
    ("kg", "kilogram", "kilograms"),
    ("g", "gram", "grams"),
    ("mg", "milligram", "milligrams"),
    ("lb", "pound", "pounds"),
    ("lbs", "pound", "pounds"),
    ("oz", "ounce", "ounces"),
    ("km", "kilometer", "kilometers"),
    ("m", "meter", "meters"),
    ("cm", "centimeter", "centimeters"),
    ("mm", "millimeter", "millimeters"),
    ("mi", "mile", "miles"),
    ("ft", "foot", "feet"),
    ("l", "liter", "liters"),
    ("L", "liter", "liters"),
    ("ml", "milliliter", "milliliters"),
    ("mL", "milliliter", "milliliters"),
    ("s", "second", "seconds"),
    ("sec", "second", "seconds"),
    ("ms", "millisecond", "milliseconds"),
    ("min", "minute", "minutes"),
    ("h", "hour", "hours"),
    ("hr", "hour", "hours"),
    ("hrs", "hour", "hours"),
    ("mph", "mile per hour", "miles per hour"),
    ("km/h", "kilometer per hour", "kilometers per hour"),
    ("kph", "kilometer per hour", "kilometers per hour"),
    ("°C", "degree Celsius", "degrees Celsius"),
    ("°F", "degree Fahrenheit", "degrees Fahrenheit"),
    ("°", "degree", "degrees"),
    ("KB", "kilobyte", "kilobytes"),
    ("kB", "kilobyte", "kilobytes"),
    ("MB", "megabyte", "megabytes"),
    ("GB", "gigabyte", "gigabytes"),
    ("TB", "terabyte", "terabytes"),
    ("Hz", "hertz", "hertz"),
    ("kHz", "kilohertz", "kilohertz"),
    ("MHz", "megahertz", "megahertz"),
    ("GHz", "gigahertz", "gigahertz"),
    ("W", "watt", "watts"),
    ("kW", "kilowatt", "kilowatts"),
    ("kWh", "kilowatt hour", "kilowatt hours"),
    ("V", "volt", "volts"),
    ("%", "percent", "percent"),
];

// The abbreviations the chunker protects are the ones read out here.
pub use vr_core::clause::ABBREVIATIONS;

/// "etc." is an abbreviation that usually *does* end a sentence; read but not protected.
const SENTENCE_FINAL_ABBREVIATIONS: &[(&str, &str)] = &[("etc.", "et cetera")];

/// Cardinal number in words: 1234 → "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n < 20 {
        return ONES[n as usize].to_string();
    }
    if n < 100 {
        let t = TENS[(n / 10) as usize];
        return if n.is_multiple_of(10) {
            t.to_string()
        } else {
            format!("{t}-{}", ONES[(n % 10) as usize])
        };
    }
    if n < 1000 {
        let h = format!("{} hundred", ONES[(n / 100) as usize]);
        return if n.is_multiple_of(100) {
            h
        } else {
            format!("{h} {}", cardinal(n % 100))
        };
    }
    for (scale, name) in SCALES {
        if n >= scale {
            if n / scale >= 1000 {
                // Beyond trillions: digit by digit is what a listener can follow anyway.
                return digits(&n.to_string());
            }
            let head = format!("{} {name}", cardinal(n / scale));
            return if n.is_multiple_of(scale) {
                head
            } else {
                format!("{head} {}", cardinal(n % scale))
            };
        }
    }
    digits(&n.to_string())
}

/// Each digit as a word: "025" → "zero two five".
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ordinal in words: 21 → "twenty-first".
pub fn ordinal(n: u64) -> String {
    let c = cardinal(n);
    let split = c.rfind([' ', '-']).map_or(0, |i| i + 1);
    let (head, last) = c.split_at(split);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// A year as people say it: 1999 → "nineteen ninety-nine", 2005 → "two thousand five",
/// 2024 → "twenty twenty-four", 1900 → "nineteen hundred".
pub fn year(n: u64) -> String {
    if !(1100..=2099).contains(&n) || (2000..2010).contains(&n) {
        return cardinal(n);
    }
    let (hi, lo) = (n / 100, n % 100);
    match lo {
        0 => format!("{} hundred", cardinal(hi)),
        1..=9 => format!("{} oh {}", cardinal(hi), cardinal(lo)),
        _ => format!("{} {}", cardinal(hi), cardinal(lo)),
    }
}

/// A parsed numeric literal: integer part, optional fraction digits, sign.
struct Num {
    negative: bool,
    int: u64,
    frac: Option<String>,
    /// Integer part had more than 15 digits or leading zeros that matter ("007").
    int_text: String,
}

impl Num {
    fn is_one(&self) -> bool {
        !self.negative && self.int == 1 && self.frac.is_none()
    }

    fn words(&self) -> String {
        let mut s = String::new();
        if self.negative {
            s.push_str("minus ");
        }
        if self.int_text.len() > 15 || (self.int_text.len() > 1 && self.int_text.starts_with('0')) {
            s.push_str(&digits(&self.int_text));
        } else {
            s.push_str(&cardinal(self.int));
        }
        if let Some(f) = &self.frac {
            s.push_str(" point ");
            s.push_str(&digits(f));
        }
        s
    }
}

/// "3.5", "-4", "1,000,000", "0.25" (the whole string must be the number).
fn parse_num(s: &str) -> Option<Num> {
    let (negative, body) = match s.strip_prefix(['-', '−']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let int_text: String = if int_part.contains(',') {
        // Thousands separators only in the canonical 1,234,567 shape.
        let groups: Vec<&str> = int_part.split(',').collect();
        let ok = !groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3);
        if !ok {
            return None;
        }
        groups.concat()
    } else {
        int_part.to_string()
    };
    if int_text.is_empty() && frac.is_some() {
        // ".5"
        return Some(Num {
            negative,
            int: 0,
            frac: frac.map(str::to_string),
            int_text: "0".into(),
        });
    }
    if int_text.is_empty() || !int_text.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int = if int_text.len() > 15 {
        0
    } else {
        int_text.parse().ok()?
    };
    Some(Num {
        negative,
        int,
        frac: frac.map(str::to_string),
        int_text,
    })
}

fn unit_words(abbr: &str, one: bool) -> Option<&'static str> {
    UNITS
        .iter()
        .find(|(a, _, _)| *a == abbr)
        .map(|(_, s, p)| if one { *s } else { *p })
}

fn month_index(w: &str) -> Option<usize> {
    let w = w.trim_end_matches([',', '.']);
    MONTHS.iter().position(|m| {
        m.eq_ignore_ascii_case(w) || (w.len() == 3 && m[..3].eq_ignore_ascii_case(w) && w != "may")
    })
}

/// Leading and trailing punctuation of a token, kept around its spoken form.
fn split_punct(tok: &str) -> (&str, &str, &str) {
    let start = tok
        .char_indices()
        .find(|(_, c)| !matches!(c, '(' | '"' | '\'' | '[' | '“' | '‘'))
        .map_or(tok.len(), |(i, _)| i);
    let rest = &tok[start..];
    let mut end = rest.len();
    for (i, c) in rest.char_indices().rev() {
        if matches!(
            c,
            ',' | ';' | ':' | '!' | '?' | ')' | '"' | '\'' | ']' | '”' | '’' | '.'
        ) {
            end = i;
        } else {
            break;
        }
    }
    (&tok[..start], &rest[..end], &rest[end..])
}

/// "3:45" → "three forty-five", "3:05" → "three oh five", "15:00" → "fifteen hundred".
fn time_words(core: &str) -> Option<String> {
    let (h, m) = core.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u64 = h.parse().ok()?;
    let m: u64 = m.parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(match m {
        0 if h > 12 => format!("{} hundred", cardinal(h)),
        0 => format!("{} o'clock", cardinal(h)),
        1..=9 => format!("{} oh {}", cardinal(h), cardinal(m)),
        _ => format!("{} {}", cardinal(h), cardinal(m)),
    })
}

/// "2024-03-15" → "March fifteenth, twenty twenty-four".
fn iso_date_words(core: &str) -> Option<String> {
    let mut it = core.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (u64, usize, u64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!("{} {}, {}", MONTHS[m - 1], ordinal(d), year(y)))
}

fn ordinal_words(core: &str) -> Option<String> {
    let lower = core.to_ascii_lowercase();
    for suf in ["st", "nd", "rd", "th"] {
        if let Some(n) = lower.strip_suffix(suf) {
            if !n.is_empty() && n.len() <= 15 && n.chars().all(|c| c.is_ascii_digit()) {
                return Some(ordinal(n.parse().ok()?));
            }
        }
    }
    None
}

fn url_words(core: &str) -> Option<String> {
    let lower = core.to_ascii_lowercase();
    let body = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .or_else(|| lower.strip_prefix("www.").map(|_| lower.as_str()))?;
    let body = body.trim_end_matches('/');
    let mut out = String::new();
    for c in body.chars() {
        match c {
            '.' => out.push_str(" dot "),
            '/' => out.push_str(" slash "),
            '-' => out.push_str(" dash "),
            '_' => out.push_str(" underscore "),
            ':' => out.push_str(" colon "),
            '@' => out.push_str(" at "),
            c => out.push(c),
        }
    }
    Some(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Rewrites `text` so that it contains no digits, unit symbols or dotted abbreviations that a
/// phonemiser could read differently from how a person would say them.
pub fn verbalize(text: &str) -> String {
    let toks: Vec<&str> = text.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let tok = toks[i];
        let prev = if i > 0 { Some(toks[i - 1]) } else { None };
        let next = toks.get(i + 1).copied();
        let (consumed, spoken) = verbalize_token(tok, prev, next);
        out.push(spoken);
        i += consumed;
    }
    out.join(" ")
}

/// One token (plus possibly the next, for units and scales). Returns (tokens consumed, words).
fn verbalize_token(tok: &str, prev: Option<&str>, next: Option<&str>) -> (usize, String) {
    for (abbr, full) in ABBREVIATIONS.iter().chain(SENTENCE_FINAL_ABBREVIATIONS) {
        if let Some(rest) = tok.strip_prefix(abbr) {
            if rest.chars().all(|c| c.is_ascii_punctuation()) {
                // "No." is only "number" before a number.
                if *abbr == "No."
                    && !next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
                {
                    break;
                }
                // A sentence-final "etc." keeps its period so the clause still ends.
                let tail = if SENTENCE_FINAL_ABBREVIATIONS.iter().any(|(a, _)| a == abbr) {
                    format!(".{rest}")
                } else {
                    rest.to_string()
                };
                return (1, format!("{full}{tail}"));
            }
        }
    }
    let (lead, core, trail) = split_punct(tok);
    if core.is_empty() {
        return (1, tok.to_string());
    }
    if let Some(w) = url_words(core) {
        return (1, format!("{lead}{w}{trail}"));
    }
    if core.contains('@') && core.contains('.') {
        return (
            1,
            format!(
                "{lead}{}{trail}",
                core.replace('.', " dot ").replace('@', " at ")
            ),
        );
    }
    if !core.chars().any(|c| c.is_ascii_digit()) {
        return (1, tok.replace('&', "and"));
    }
    let next_core = next.map(|n| split_punct(n).1);
    let next_trail = next.map(|n| split_punct(n).2).unwrap_or("");

    // Money: $35, $3.50, €20, £1.5 million.
    if let Some((sym, amount)) = ["$", "€", "£"]
        .iter()
        .find_map(|s| core.strip_prefix(s).map(|a| (*s, a)))
    {
        let (unit1, unitn, sub1, subn) = match sym {
            "$" => ("dollar", "dollars", "cent", "cents"),
            "€" => ("euro", "euros", "cent", "cents"),
            _ => ("pound", "pounds", "penny", "pence"),
        };
        if let Some(n) = parse_num(amount) {
            if let Some(scale) =
                next_core.filter(|w| matches!(*w, "thousand" | "million" | "billion" | "trillion"))
            {
                return (
                    2,
                    format!("{lead}{} {scale} {unitn}{next_trail}", n.words()),
                );
            }
            let cents = n
                .frac
                .as_deref()
                .filter(|f| f.len() == 2)
                .and_then(|f| f.parse::<u64>().ok());
            let words = match cents {
                Some(c) if c > 0 && n.int > 0 => format!(
                    "{} {} and {} {}",
                    cardinal(n.int),
                    if n.int == 1 { unit1 } else { unitn },
                    cardinal(c),
                    if c == 1 { sub1 } else { subn }
                ),
                Some(c) if c > 0 => format!("{} {}", cardinal(c), if c == 1 { sub1 } else { subn }),
                Some(_) => format!(
                    "{} {}",
                    cardinal(n.int),
                    if n.int == 1 { unit1 } else { unitn }
                ),
                None => format!("{} {}", n.words(), if n.is_one() { unit1 } else { unitn }),
            };
            return (1, format!("{lead}{words}{trail}"));
        }
    }
    if let Some(w) = iso_date_words(core) {
        return (1, format!("{lead}{w}{trail}"));
    }
    if let Some(w) = time_words(core) {
        // "3:45 pm" / "3:45pm"
        if let Some(ap) = next_core
            .filter(|w| matches!(w.to_ascii_lowercase().as_str(), "am" | "pm" | "a.m" | "p.m"))
        {
            let ap = if ap.starts_with(['a', 'A']) {
                "A M"
            } else {
                "P M"
            };
            return (2, format!("{lead}{w} {ap}{next_trail}"));
        }
        return (1, format!("{lead}{w}{trail}"));
    }
    for ap in ["am", "pm", "AM", "PM"] {
        if let Some(t) = core.strip_suffix(ap) {
            let spoken = time_words(t).or_else(|| {
                t.parse::<u64>()
                    .ok()
                    .filter(|h| (1..=12).contains(h))
                    .map(cardinal)
            });
            if let Some(w) = spoken {
                let ap = if ap.eq_ignore_ascii_case("am") {
                    "A M"
                } else {
                    "P M"
                };
                return (1, format!("{lead}{w} {ap}{trail}"));
            }
        }
    }
    if let Some(w) = ordinal_words(core) {
        return (1, format!("{lead}{w}{trail}"));
    }
    // Ranges "10-20" → "ten to twenty" (but not "-5").
    if let Some((a, b)) = core.split_once(['-', '–']) {
        if let (Some(x), Some(y)) = (parse_num(a), parse_num(b)) {
            let w = format!("{} to {}", x.words(), y.words());
            return with_unit(lead, &w, trail, false, next_core, next_trail);
        }
    }
    if let Some(n) = parse_num(core) {
        // Years: after a month name ("March 3, 2024" handled via the day) or "in/since/by 1999".
        let year_context = prev.is_some_and(|p| {
            month_index(p).is_some()
                || p.ends_with(',')
                    && p.trim_end_matches(',')
                        .parse::<u64>()
                        .is_ok_and(|d| d <= 31)
                || matches!(
                    p.to_ascii_lowercase().as_str(),
                    "in" | "since" | "by" | "until" | "from" | "year" | "of" | "before" | "after"
                )
        });
        if year_context
            && n.frac.is_none()
            && !n.negative
            && n.int_text.len() == 4
            && !core.contains(',')
        {
            return (1, format!("{lead}{}{trail}", year(n.int)));
        }
        // Day after a month: "March 15" → "March fifteenth".
        if prev.is_some_and(|p| month_index(p).is_some())
            && n.frac.is_none()
            && (1..=31).contains(&n.int)
        {
            return (1, format!("{lead}{}{trail}", ordinal(n.int)));
        }
        return with_unit(lead, &n.words(), trail, n.is_one(), next_core, next_trail);
    }
    // Number with an attached unit: "3.5kg", "20°C", "5%", "100km/h".
    let split = core
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '−')))
        .map(|(i, _)| i);
    if let Some(i) = split.filter(|&i| i > 0) {
        let (num, unit) = core.split_at(i);
        if let Some(n) = parse_num(num) {
            if let Some(u) = unit_words(unit, n.is_one()) {
                return (1, format!("{lead}{} {u}{trail}", n.words()));
            }
        }
    }
    // Mixed tokens ("mp3", "COVID-19"): spell the digits, leave the letters to the phonemiser.
    let mut s = String::new();
    let mut run = String::new();
    for c in core.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            if !run.is_empty() {
                s.push(' ');
                s.push_str(&parse_num(&run).map_or_else(|| digits(&run), |n| n.words()));
                s.push(' ');
                run.clear();
            }
            s.push(if c == '-' { ' ' } else { c });
        }
    }
    if !run.is_empty() {
        s.push(' ');
        s.push_str(&parse_num(&run).map_or_else(|| digits(&run), |n| n.words()));
    }
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (1, format!("{lead}{s}{trail}"))
}

/// `words` followed by the next token's unit if it is one.
fn with_unit(
    lead: &str,
    words: &str,
    trail: &str,
    one: bool,
    next_core: Option<&str>,
    next_trail: &str,
) -> (usize, String) {
    if trail.is_empty() {
        if let Some(u) = next_core.and_then(|n| unit_words(n, one)) {
            return (2, format!("{lead}{words} {u}{next_trail}"));
        }
    }
    (1, format!("{lead}{words}{trail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals_ordinals_and_years() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(13), "thirteen");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(99), "ninety-nine");
        assert_eq!(cardinal(101), "one hundred one");
        assert_eq!(cardinal(1234), "one thousand two hundred thirty-four");
        assert_eq!(cardinal(2_000_005), "two million five");
        assert_eq!(
            cardinal(987_654_321_012),
            "nine hundred eighty-seven billion six hundred fifty-four million three hundred twenty-one thousand twelve"
        );
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(103), "one hundred third");
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(2005), "two thousand five");
        assert_eq!(year(2024), "twenty twenty-four");
    }

    #[test]
    fn decimals_units_and_the_issue_example() {
        assert_eq!(verbalize("3.5 kg"), "three point five kilograms");
        assert_eq!(
            verbalize("It weighs 3.5kg."),
            "It weighs three point five kilograms."
        );
        assert_eq!(verbalize("1 km"), "one kilometer");
        assert_eq!(verbalize("0.25 l"), "zero point two five liters");
        assert_eq!(verbalize("20°C today"), "twenty degrees Celsius today");
        assert_eq!(
            verbalize("120 km/h"),
            "one hundred twenty kilometers per hour"
        );
        assert_eq!(verbalize("5% off"), "five percent off");
        assert_eq!(verbalize("-4 degrees"), "minus four degrees");
        assert_eq!(verbalize("1,000,000 people"), "one million people");
        assert_eq!(verbalize("pages 10-20,"), "pages ten to twenty,");
        assert_eq!(
            verbalize("I have 5 m of rope"),
            "I have five meters of rope"
        );
    }

    #[test]
    fn money_times_dates() {
        assert_eq!(verbalize("$35 each"), "thirty-five dollars each");
        assert_eq!(verbalize("$3.50."), "three dollars and fifty cents.");
        assert_eq!(verbalize("$1 only"), "one dollar only");
        assert_eq!(verbalize("$2.5 million"), "two point five million dollars");
        assert_eq!(verbalize("at 3:45 pm."), "at three forty-five P M.");
        assert_eq!(verbalize("at 7pm"), "at seven P M");
        assert_eq!(verbalize("at 9:05"), "at nine oh five");
        assert_eq!(verbalize("at 10:00,"), "at ten o'clock,");
        assert_eq!(
            verbalize("on 2024-03-15."),
            "on March fifteenth, twenty twenty-four."
        );
        assert_eq!(
            verbalize("on March 3, 2021 we"),
            "on March third, twenty twenty-one we"
        );
        assert_eq!(verbalize("in 1999,"), "in nineteen ninety-nine,");
        assert_eq!(verbalize("2024 people"), "two thousand twenty-four people");
        assert_eq!(verbalize("the 21st floor"), "the twenty-first floor");
    }

    #[test]
    fn abbreviations_urls_and_plain_text() {
        assert_eq!(
            verbalize("Dr. Smith met Mr. Jones"),
            "Doctor Smith met Mister Jones"
        );
        assert_eq!(verbalize("fruit, e.g. apples"), "fruit, for example apples");
        assert_eq!(verbalize("apples, pears etc."), "apples, pears et cetera.");
        assert_eq!(verbalize("No. 5"), "number five");
        assert_eq!(verbalize("No."), "No.");
        assert_eq!(
            verbalize("see https://example.com/docs."),
            "see example dot com slash docs."
        );
        assert_eq!(
            verbalize("www.rust-lang.org"),
            "www dot rust dash lang dot org"
        );
        assert_eq!(verbalize("Tom & Jerry"), "Tom and Jerry");
        assert_eq!(verbalize("Hello,   world!"), "Hello, world!");
        assert_eq!(verbalize("COVID-19 and mp3"), "COVID nineteen and mp three");
        assert_eq!(verbalize("\"42\""), "\"forty-two\"");
        assert_eq!(verbalize(""), "");
    }
}
