//! containerd's filter syntax for List: `<fieldpath>[<op><value>]` selectors
//! joined by `,` (all must match); several filters match if any does.
//! Fields are `kind`, `name`, `parent` and `labels.<key>`, where a part may be a
//! Go-quoted string (`labels."containerd.io/snapshot.ref"==sha256:…`, which is
//! what containerd 1.6 sends after a Prepare answered AlreadyExists). The
//! regular-expression operator `~=` is not supported.

use crate::quote::Quoted;
use crate::store::Info;

#[derive(Debug, thiserror::Error)]
#[error("invalid filter {}: {reason}", Quoted(filter))]
pub struct Error {
    filter: String,
    reason: String,
}

/// Matches when any of its alternatives (one per filter string) matches.
#[derive(Debug, PartialEq, Eq)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Selector {
    field: Field,
    op: Op,
}

#[derive(Debug, PartialEq, Eq)]
enum Field {
    Kind,
    Name,
    Parent,
    Label(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
}

impl Filter {
    /// Parses the filters of a List request; none (or only empty strings) match everything.
    pub fn parse(filters: &[String]) -> Result<Filter, Error> {
        let any = filters
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| {
                Parser { input: f, pos: 0 }
                    .selectors()
                    .map_err(|reason| Error {
                        filter: f.clone(),
                        reason,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter { any })
    }

    pub fn matches(&self, info: &Info) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let kind = info.kind.to_string();
        let value = match &self.field {
            Field::Kind => Some(kind.as_str()),
            Field::Name => Some(info.name.as_str()),
            Field::Parent => Some(info.parent.as_str()),
            Field::Label(key) => info.labels.get(key).map(String::as_str),
        };
        // As in containerd, a missing field matches neither == nor !=.
        match (&self.op, value) {
            (_, None) => false,
            (Op::Present, Some(_)) => true,
            (Op::Equal(want), Some(have)) => want == have,
            (Op::NotEqual(want), Some(have)) => want != have,
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn selectors(&mut self) -> Result<Vec<Selector>, String> {
        let mut all = vec![self.selector()?];
        loop {
            self.skip_space();
            match self.peek() {
                None => return Ok(all),
                Some(',') => {
                    self.pos += 1;
                    all.push(self.selector()?);
                }
                Some(c) => return Err(format!("unexpected {c:?} at byte {}", self.pos)),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let path = self.fieldpath()?;
        let field = match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["kind"] => Field::Kind,
            ["name"] => Field::Name,
            ["parent"] => Field::Parent,
            ["labels", key @ ..] if !key.is_empty() => Field::Label(key.join(".")),
            _ => return Err(format!("unknown field {}", Quoted(&path.join(".")))),
        };
        self.skip_space();
        let op = match self.peek() {
            None | Some(',') => {
                return Ok(Selector {
                    field,
                    op: Op::Present,
                })
            }
            Some(_) if self.eat("==") => Op::Equal(self.value()?),
            Some(_) if self.eat("!=") => Op::NotEqual(self.value()?),
            Some(_) if self.eat("~=") => {
                return Err("the regular expression operator ~= is not supported".into())
            }
            Some(c) => {
                return Err(format!(
                    "expected an operator (== or !=) at byte {}, found {c:?}",
                    self.pos
                ))
            }
        };
        Ok(Selector { field, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, String> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, String> {
        self.skip_space();
        if matches!(self.peek(), Some('"' | '`')) {
            return self.quoted();
        }
        let word = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if word.is_empty() {
            return Err(format!("expected a field name at byte {}", self.pos));
        }
        Ok(word.to_owned())
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_space();
        if matches!(self.peek(), Some('"' | '`')) {
            return self.quoted();
        }
        let word = self.take_while(|c| !c.is_whitespace() && c != ',');
        if word.is_empty() {
            return Err(format!("expected a value at byte {}", self.pos));
        }
        Ok(word.to_owned())
    }

    /// A Go string literal: "…" with escapes, or a raw `…`.
    fn quoted(&mut self) -> Result<String, String> {
        let start = self.pos;
        let quote = self.next().expect("caller saw the quote");
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(format!("unterminated string starting at byte {start}")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') if quote == '"' => out.push(self.escape()?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        let at = self.pos;
        let hex = |p: &mut Self, digits: usize| -> Result<char, String> {
            let text = p
                .input
                .get(p.pos..p.pos + digits)
                .ok_or("truncated escape")?;
            p.pos += digits;
            u32::from_str_radix(text, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad escape at byte {at}"))
        };
        Ok(match self.next() {
            Some('\\') => '\\',
            Some('"') => '"',
            Some('\'') => '\'',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('a') => '\x07',
            Some('b') => '\x08',
            Some('f') => '\x0c',
            Some('v') => '\x0b',
            Some('x') => hex(self, 2)?,
            Some('u') => hex(self, 4)?,
            Some('U') => hex(self, 8)?,
            _ => return Err(format!("unsupported escape at byte {at}")),
        })
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.input[self.pos..].starts_with(token);
        if found {
            self.pos += token.len();
        }
        found
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += self.peek().map_or(0, char::len_utf8);
        }
        &self.input[start..self.pos]
    }

    fn skip_space(&mut self) {
        self.take_while(char::is_whitespace);
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;
    use std::time::SystemTime;

    fn info(name: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            parent: parent.into(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
        }
    }

    fn filter(filters: &[&str]) -> Result<Filter, Error> {
        Filter::parse(&filters.iter().map(|f| f.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn empty_matches_everything() {
        let i = info("a", "", Kind::Active, &[]);
        assert!(filter(&[]).unwrap().matches(&i));
        assert!(filter(&[""]).unwrap().matches(&i));
    }

    #[test]
    fn containerd_remote_snapshot_lookup() {
        // The filter containerd 1.6 builds after Prepare answered AlreadyExists.
        let f = filter(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/4/sha256:p""#,
        ])
        .unwrap();
        let hit = info(
            "x",
            "default/4/sha256:p",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        assert!(f.matches(&hit));
        assert!(!f.matches(&info(
            "x",
            "other",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")]
        )));
        assert!(!f.matches(&info("x", "default/4/sha256:p", Kind::Committed, &[])));

        let no_parent =
            filter(&[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="""#]).unwrap();
        assert!(no_parent.matches(&info(
            "x",
            "",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")]
        )));
    }

    #[test]
    fn operators_and_alternatives() {
        let active = info("a", "", Kind::Active, &[("gc", "1")]);
        let view = info("v", "p", Kind::View, &[]);
        let f = filter(&["kind==active", "name==v"]).unwrap();
        assert!(f.matches(&active) && f.matches(&view));
        let f = filter(&["kind!=active, labels.gc"]).unwrap();
        assert!(!f.matches(&active) && !f.matches(&view));
        let f = filter(&["labels.gc"]).unwrap();
        assert!(f.matches(&active) && !f.matches(&view));
        assert!(
            !filter(&["labels.gc!=2"]).unwrap().matches(&view),
            "a missing label matches nothing"
        );
        assert!(filter(&[r#"name=="\x61""#]).unwrap().matches(&active));
        assert!(filter(&["name==`a`"]).unwrap().matches(&active));
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        for bad in [
            "size==1",
            "name~=a.*",
            "name==",
            "name=a",
            r#"name=="a"#,
            "kind==active garbage",
            "labels",
            ",",
        ] {
            let err = filter(&[bad]).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
