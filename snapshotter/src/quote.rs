//! Client text (keys, parents, filters) as error messages quote it.

use std::fmt;

/// Quoted whole up to this many bytes.
const MAX_QUOTED_BYTES: usize = 256;

/// `text` as `{:?}` prints it, cut after [`MAX_QUOTED_BYTES`] with its
/// length said. A gRPC status carries its message in a header: a key of
/// megabytes quoted whole made the answer too large to send, and the client
/// got an HTTP/2 protocol error instead of the status.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if text.len() <= MAX_QUOTED_BYTES {
            return write!(f, "{text:?}");
        }
        let mut end = MAX_QUOTED_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &text[..end], text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole_and_long_text_cut_on_a_char() {
        assert_eq!(Quoted("a\0b").to_string(), r#""a\0b""#);
        let long = "é".repeat(1000);
        let q = Quoted(&long).to_string();
        assert!(q.starts_with(&format!("\"{}\"…", "é".repeat(128))) && q.ends_with("(2000 bytes)"), "{q}");
    }
}
