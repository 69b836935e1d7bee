//! The 1000 ImageNet-1k class names, parsed from candle-examples' `src/imagenet.rs` (the
//! `pub const CLASSES: [&str; 1000] = [ ... ];` array), which the model store ships beside the
//! weights. Each entry is a comma-separated list of synonyms ("tabby, tabby cat").

/// Number of classes the classifier head predicts.
pub const NUM_CLASSES: usize = 1000;

/// The string literals of the `CLASSES` array in `source`, in order; a reason when the array is
/// not there, a literal is malformed, or there are not exactly [`NUM_CLASSES`] of them.
pub(crate) fn parse(source: &str) -> Result<Vec<String>, String> {
    let start = source
        .find("pub const CLASSES")
        .ok_or("no `pub const CLASSES` array")?;
    let rest = &source[start..];
    let open = rest.find("= [").ok_or("`CLASSES` has no `= [`")? + 3;
    let body = &rest[open..];
    let close = body
        .find("];")
        .ok_or("`CLASSES` array is not closed with `];`")?;
    let body = &body[..close];

    let mut names = Vec::with_capacity(NUM_CLASSES);
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '\'')) => s.push(e),
                            Some('n') => s.push('\n'),
                            other => return Err(format!("unsupported escape `\\{other:?}`")),
                        },
                        Some(c) => s.push(c),
                        None => return Err("unterminated string literal".into()),
                    }
                }
                names.push(s);
            }
            c if c.is_whitespace() || c == ',' => {}
            // Line comments between entries.
            '/' if chars.as_str().starts_with('/') => {
                let skip = chars.as_str().find('\n').unwrap_or(chars.as_str().len());
                chars = chars.as_str()[skip..].chars();
            }
            other => return Err(format!("unexpected `{other}` in the CLASSES array")),
        }
    }
    if names.len() != NUM_CLASSES {
        return Err(format!(
            "{} class names, expected {NUM_CLASSES}",
            names.len()
        ));
    }
    Ok(names)
}

/// "tabby, tabby cat" → "tabby".
pub(crate) fn first_synonym(class: &str) -> &str {
    class.split(',').next().unwrap_or(class).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(n: usize) -> String {
        let mut s = String::from("use x;\npub const CLASSES: [&str; 1000] = [\n");
        for i in 0..n {
            s.push_str(&format!("    \"class {i}, synonym\",\n"));
        }
        s.push_str("    // done\n];\n");
        s
    }

    #[test]
    fn parses_exactly_a_thousand_names_and_refuses_other_counts() {
        let names = parse(&array(1000)).expect("1000 names");
        assert_eq!(names[0], "class 0, synonym");
        assert_eq!(first_synonym(&names[999]), "class 999");
        assert!(parse(&array(999)).unwrap_err().contains("999 class names"));
        assert!(parse("fn main() {}").is_err());
        assert!(parse("pub const CLASSES: [&str; 1] = [\"a\", b];").is_err());
    }
}
