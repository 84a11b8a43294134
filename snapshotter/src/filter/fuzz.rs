//! List filters fuzzed: selectors built from the grammar (fields, operators,
//! bare, Go-quoted and raw values, hostile text in each) must parse and match
//! exactly as a direct evaluation says; any other text, damaged or random,
//! either parses or is refused with an error that quotes it. Nothing panics.

use super::*;
use crate::store::Kind;
use ferrum_fuzz::{mutate_bytes, string, Rng, Run};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A Go-quoted string, some characters escaped for no reason.
fn quoted(rng: &mut Rng, value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || rng.chance(5) => match c as u32 {
                n if n < 0x10000 => out.push_str(&format!("\\u{n:04x}")),
                n => out.push_str(&format!("\\U{n:08x}")),
            },
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value as the filter syntax writes it: bare when it can be, raw or quoted.
fn render(rng: &mut Rng, value: &str) -> String {
    let bare = !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '`');
    if bare && rng.chance(50) {
        value.to_string()
    } else if !value.contains('`') && rng.chance(30) {
        format!("`{value}`")
    } else {
        quoted(rng, value)
    }
}

/// A field name: bare when it is a word, else quoted.
fn render_field(rng: &mut Rng, name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name.to_string()
    } else {
        quoted(rng, name)
    }
}

fn info(rng: &mut Rng) -> Info {
    let pick = |rng: &mut Rng| if rng.chance(50) { rng.pick(&["a", "b", "sha256:x", ""]).to_string() } else { string(rng) };
    let labels: BTreeMap<String, String> = (0..rng.len(3)).map(|_| (pick(rng), pick(rng))).collect();
    Info {
        name: pick(rng),
        parent: pick(rng),
        kind: *rng.pick(&[Kind::View, Kind::Active, Kind::Committed]),
        labels,
        created: SystemTime::UNIX_EPOCH,
        updated: SystemTime::UNIX_EPOCH,
    }
}

/// One selector as text, and whether it matches `info` by direct evaluation.
fn selector(rng: &mut Rng, info: &Info) -> (String, bool) {
    let label_key = if rng.chance(60) && !info.labels.is_empty() {
        info.labels.keys().nth(rng.below(info.labels.len())).unwrap().clone()
    } else {
        string(rng)
    };
    let (field, have) = match rng.below(4) {
        0 => ("kind".to_string(), Some(info.kind.to_string())),
        1 => ("name".to_string(), Some(info.name.clone())),
        2 => ("parent".to_string(), Some(info.parent.clone())),
        _ => {
            // labels.<key> splits the key at dots unless it is quoted whole.
            let text = format!("labels.{}", render_field(rng, &label_key));
            (text, info.labels.get(&label_key).cloned())
        }
    };
    let want = match (rng.below(3), &have) {
        (0, _) => None,
        (_, Some(h)) if rng.chance(50) => Some(h.clone()),
        _ => Some(string(rng)),
    };
    match want {
        None => (field, have.is_some()),
        Some(w) => {
            let equal = rng.chance(50);
            let op = if equal { "==" } else { "!=" };
            let matches = have.as_ref().is_some_and(|h| (h == &w) == equal);
            if w.is_empty() {
                // An empty value must be quoted.
                (format!("{field}{op}\"\""), matches)
            } else {
                (format!("{field}{op}{}", render(rng, &w)), matches)
            }
        }
    }
}

#[test]
fn filters_from_the_grammar_match_as_evaluated() {
    let run = Run::new("List filters (grammar)", 2000);
    run.each(|_, rng| {
        let info = info(rng);
        let alternatives: Vec<(String, bool)> = (0..1 + rng.below(3))
            .map(|_| {
                let parts: Vec<(String, bool)> = (0..1 + rng.below(3)).map(|_| selector(rng, &info)).collect();
                let sep = *rng.pick(&[",", ", ", " ,"]);
                (parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(sep), parts.iter().all(|p| p.1))
            })
            .collect();
        let filters: Vec<String> = alternatives.iter().map(|a| a.0.clone()).collect();
        let parsed = Filter::parse(&filters).unwrap_or_else(|e| panic!("{filters:?} is valid: {e}"));
        let want = alternatives.iter().any(|a| a.1);
        assert_eq!(parsed.matches(&info), want, "{filters:?} on {info:?}");
    });
    run.report("");
}

#[test]
fn any_filter_text_parses_or_is_quoted_in_its_error() {
    let run = Run::new("List filters (damaged and random text)", 5000);
    let (mut parsed, mut refused) = (0, 0);
    run.each(|_, rng| {
        let info = info(rng);
        let text = if rng.chance(50) {
            let mut bytes = selector(rng, &info).0.into_bytes();
            mutate_bytes(rng, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let sep = *rng.pick(&["", ",", "==", "!=", "."]);
            (0..1 + rng.below(4)).map(|_| string(rng)).collect::<Vec<_>>().join(sep)
        };
        match Filter::parse(std::slice::from_ref(&text)) {
            Ok(f) => {
                parsed += 1;
                let _ = f.matches(&info);
            }
            Err(e) => {
                refused += 1;
                let message = e.to_string();
                assert!(message.starts_with(&format!("invalid filter {}: ", Quoted(&text))), "{message}");
            }
        }
    });
    run.report(&format!("{parsed} parsed, {refused} refused"));
}
