//! Stdio URIs fuzzed as Create and Exec receive them: FIFO and file paths,
//! `file://`, `binary://` with query arguments, unknown schemes, and hostile
//! strings in every part. Paths stay inside a scratch directory (containerd
//! makes them; the shim opens what it is given). Nothing may panic or wait
//! past the logger's deadline; what opens is what was named, and what fails
//! names the URI, path or program.

use super::*;
use ferrum_fuzz::{string, Rng, Run};
use std::path::Path;

/// `s` with every byte outside [A-Za-z0-9/._-] percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A file name inside the scratch dir: hostile, but without `/` or `..`.
fn name(rng: &mut Rng) -> String {
    let n: String = string(rng).replace(['/', '\0'], "_").replace("..", "_").chars().take(200).collect();
    if n.is_empty() || n == "." {
        "x".into()
    } else {
        n
    }
}

/// A logging binary that is ready at once: it closes fd 5 by exiting.
const LOGGERS: &[&str] = &["/bin/true", "/bin/false", "/nonexistent/logger"];

fn uri(rng: &mut Rng, dir: &Path) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 | 2 => dir.join(name(rng)).display().to_string(),
        3 => format!("file://{}", dir.join(name(rng)).display()),
        4 | 5 => {
            let program = match rng.below(3) {
                0 => {
                    let logger = *rng.pick(LOGGERS);
                    percent_encode(logger)
                }
                1 => rng.pick(LOGGERS).to_string(),
                _ => format!("/{}", percent_encode(&name(rng))),
            };
            let pairs: Vec<String> = (0..rng.len(4))
                .map(|_| match rng.below(3) {
                    0 => percent_encode(&string(rng)),
                    1 => format!("{}={}", percent_encode(&string(rng)), percent_encode(&string(rng))),
                    _ => string(rng).replace(['&', '?'], ""),
                })
                .collect();
            format!("binary://{program}?{}", pairs.join("&"))
        }
        6 => format!("{}://{}", rng.pick(&["fifo", "http", "", "binary:", "FILE"]), name(rng)),
        _ => format!("binary://{}", name(rng)),
    }
}

#[test]
fn binary_uri_arguments_survive_encoding() {
    let run = Run::new("stdio binary:// arguments", 2000);
    run.each(|_, rng| {
        let (key, value) = (string(rng), string(rng));
        let program = format!("/{}", name(rng));
        let uri = format!("binary://{}?{}={}", percent_encode(&program), percent_encode(&key), percent_encode(&value));
        let (got_program, args) = parse_binary_uri(&uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        let utf8 = |s: &str| String::from_utf8_lossy(s.as_bytes()).into_owned();
        assert_eq!(got_program, utf8(&program), "{uri}");
        let mut want = vec![utf8(&key)];
        if !value.is_empty() {
            want.push(utf8(&value));
        }
        assert_eq!(args, want, "{uri}");
        // Whatever else the text holds, parsing never panics.
        let _ = parse_binary_uri(&format!("binary://{}", string(rng)));
        let _ = percent_decode(&string(rng));
    });
    run.report("");
}

#[test]
fn stdio_uris_fuzz() {
    let run = Run::new("stdio URIs", 400);
    let scratch = ferrum_fuzz::Scratch::new("stdio");
    let dir = scratch.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let owner = Owner { id: "fuzz", namespace: "fuzz", io_owner: None };
    let (mut opened, mut refused) = (0, 0);
    run.each(|_, rng| {
        // containerd mostly sends no stdin: let the outputs get opened.
        let stdin = if rng.chance(70) { String::new() } else { uri(rng, &dir) };
        let stdout = uri(rng, &dir);
        let stderr = if rng.chance(50) { stdout.clone() } else { uri(rng, &dir) };
        let started = std::time::Instant::now();
        let result = runtime.block_on(open(&stdin, &stdout, &stderr, &owner));
        assert!(started.elapsed() < LOGGER_READY_TIMEOUT + Duration::from_secs(2), "stdio took {:?}", started.elapsed());
        let case = format!("stdin {stdin:?} stdout {stdout:?} stderr {stderr:?}");
        match result {
            Ok((stdio, io)) => {
                opened += 1;
                assert_eq!(stdio.stdout.is_some(), !stdout.is_empty(), "{case}");
                if let Some(copy) = io.stdin_copy {
                    copy.abort();
                }
                for path in [&stdout, &stderr] {
                    if let Some(file) = path.strip_prefix("file://").or((!path.contains("://")).then_some(path.as_str())) {
                        assert!(file.is_empty() || Path::new(file).is_file(), "{case}: {file} was not made");
                    }
                }
            }
            Err(e) => {
                refused += 1;
                let message = format!("{e:#}");
                let named = [&stdin, &stdout, &stderr].iter().any(|uri| {
                    let program = uri.strip_prefix("binary://").and_then(|r| parse_binary_uri(&format!("binary://{r}")).ok());
                    !uri.is_empty()
                        && (message.contains(uri.as_str())
                            || message.contains(&format!("{uri:?}"))
                            || message.contains(uri.strip_prefix("file://").unwrap_or(uri))
                            || program.is_some_and(|(p, _)| message.contains(&p)))
                });
                assert!(named, "the error names no URI: {message}\n  {case}");
            }
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    });
    run.report(&format!("{opened} opened, {refused} refused"));
}
