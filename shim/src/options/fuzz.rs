//! Runtime options fuzzed in every encoding containerd sends them: runc's
//! typed Options, the CRI's runtimeoptions.v1.Options (TOML in config_body,
//! or a file in config_path), 1.x's CreateOptions, the TOML alone, and byte
//! damage to each. Settings that decode must be the settings that were sent;
//! everything else is an error that says which options and which key.

use super::*;
use containerd_shim_protos::protobuf::CodedOutputStream;
use ferrum_fuzz::{mutate_bytes, short, string, Rng, Run};
use std::fmt::Write as _;

/// runc's keys, as containerd's config spells them, with the type each takes.
const KEYS: &[(&str, &str)] = &[
    ("SystemdCgroup", "bool"),
    ("Root", "string"),
    ("IoUid", "u32"),
    ("IoGid", "u32"),
    ("ShimCgroup", "string"),
    ("NoPivotRoot", "bool"),
    ("NoNewKeyring", "bool"),
    ("BinaryName", "string"),
    ("CriuPath", "string"),
    ("CriuImagePath", "string"),
    ("CriuWorkPath", "string"),
    ("TaskApiAddress", "string"),
    ("TaskApiVersion", "u32"),
];

/// A TOML value of the type `kind`, or of another; the flag says which.
fn toml_value(rng: &mut Rng, kind: &str) -> (String, bool) {
    if rng.chance(70) {
        let v = match kind {
            "bool" => rng.chance(50).to_string(),
            "u32" => rng.pick(&["0", "1", "1000", "4294967295"]).to_string(),
            _ => toml_string(rng),
        };
        return (v, true);
    }
    let v = match rng.below(8) {
        0 => "-1".into(),
        1 => "4294967296".into(),
        2 => "9223372036854775807".into(),
        3 => "1.5".into(),
        4 => "[1, \"a\"]".into(),
        5 => "{ a = 1 }".into(),
        6 => "1979-05-27T07:32:00Z".into(),
        _ => if kind == "string" { "true".into() } else { toml_string(rng) },
    };
    (v, false)
}

/// A TOML basic string holding a hostile value.
fn toml_string(rng: &mut Rng) -> String {
    let mut out = String::from("\"");
    for c in string(rng).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Options TOML and the keys decoding must refuse (unknown, or of the wrong
/// type; the error names one of them).
fn toml_case(rng: &mut Rng) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..rng.len(6) {
        let (key, kind) = if rng.chance(85) {
            *rng.pick(KEYS)
        } else {
            (*rng.pick(&["Frobnicate", "systemdCgroup", "IOUID", "Root ", "runtime_type", "options"]), "string")
        };
        if seen.contains(&key) {
            continue; // a duplicate key is TOML's error, tested below with the bytes
        }
        seen.push(key);
        let (value, right_type) = toml_value(rng, kind);
        let known = KEYS.iter().any(|(k, _)| *k == key);
        if !known || !right_type {
            bad.push(key.trim().to_string());
        }
        let quoted = if key.ends_with(' ') { format!("\"{key}\"") } else { key.to_string() };
        writeln!(text, "{quoted} = {value}").unwrap();
    }
    (text, bad)
}

fn runtime_options_bytes(path: &str, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::new();
    let mut out = CodedOutputStream::vec(&mut value);
    if !path.is_empty() {
        out.write_string(2, path).unwrap();
    }
    if !body.is_empty() {
        out.write_bytes(3, body).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    value
}

/// What `from_any` must make of a settings-only check: each option's value.
fn settings(o: &RuntimeOptions) -> (bool, String, u32, u32, String, bool, bool) {
    (o.systemd_cgroup, o.root.clone(), o.io_uid, o.io_gid, o.shim_cgroup.clone(), o.no_pivot_root, o.no_new_keyring)
}

fn any(type_url: &str, value: Vec<u8>) -> Any {
    Any { type_url: type_url.into(), value, ..Default::default() }
}

/// An error must say it is about runtime options and name `what`.
#[track_caller]
fn names(result: &anyhow::Result<RuntimeOptions>, what: &[&str], case: &str) {
    let Err(e) = result else { return };
    let message = format!("{e:#}");
    assert!(message.starts_with("runtime options: "), "{}\n  case: {}", short(&message), short(case));
    assert!(
        what.iter().any(|w| message.contains(w)),
        "the error names none of {what:?}: {}\n  case: {}",
        short(&message),
        short(case)
    );
}

#[test]
fn runtime_options_fuzz() {
    let run = Run::new("runtime options (protobuf and TOML)", 4000);
    let scratch = ferrum_fuzz::Scratch::new("options");
    let dir = scratch.path();
    let (mut accepted, mut refused) = (0, 0);
    run.each(|_, rng| {
        let result = match rng.below(6) {
            // runc's typed Options: what decodes is what was sent.
            0 => {
                let sent = RuncOptions {
                    systemd_cgroup: rng.chance(50),
                    root: if rng.chance(50) { String::new() } else { string(rng) },
                    io_uid: rng.next_u64() as u32,
                    io_gid: *rng.pick(&[0, 1, u32::MAX]),
                    shim_cgroup: if rng.chance(70) { String::new() } else { string(rng) },
                    no_pivot_root: rng.chance(50),
                    no_new_keyring: rng.chance(50),
                    binary_name: if rng.chance(80) { String::new() } else { string(rng) },
                    ..Default::default()
                };
                let url = format!("{}{RUNC_OPTIONS}", rng.pick(&["", "types.containerd.io/", "/", "a/b/"]));
                let got = RuntimeOptions::from_any(&any(&url, sent.write_to_bytes().unwrap()));
                let case = format!("{sent:?}");
                match &got {
                    Ok(o) => {
                        let want = (sent.systemd_cgroup, sent.root.clone(), sent.io_uid, sent.io_gid, sent.shim_cgroup.clone(), sent.no_pivot_root, sent.no_new_keyring);
                        assert_eq!(settings(o), want, "{case}");
                        assert!(sent.binary_name.is_empty() && (sent.root.is_empty() || sent.root.starts_with('/')), "{case}");
                    }
                    Err(_) => names(&got, &["BinaryName", "Root"], &case),
                }
                got
            }
            // The CRI's TOML: known keys of the right types decode, the first
            // bad key is named with its line.
            1 | 2 => {
                let (text, bad) = toml_case(rng);
                let got = RuntimeOptions::from_any(&any(RUNTIME_OPTIONS, runtime_options_bytes("", text.as_bytes())));
                let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
                match (&got, bad.is_empty()) {
                    (Ok(_), false) => panic!("{bad:?} accepted in\n{}", short(&text)),
                    (Err(_), false) => names(&got, &bad, &text),
                    (Err(_), true) => names(&got, &["BinaryName", "Criu", "TaskApi", "Root"], &text),
                    (Ok(_), true) => {}
                }
                got
            }
            // The same TOML, damaged bytes.
            3 => {
                let (text, _) = toml_case(rng);
                let mut body = text.into_bytes();
                mutate_bytes(rng, &mut body);
                let got = RuntimeOptions::from_any(&any(RUNTIME_OPTIONS, runtime_options_bytes("", &body)));
                let case = short(&String::from_utf8_lossy(&body));
                names(&got, &["config_body", "BinaryName", "Criu", "TaskApi", "Root"], &case);
                got
            }
            // config_path: a file of ours, or a path that is anything but one.
            4 => {
                let (text, _) = toml_case(rng);
                let file = dir.join("options.toml");
                std::fs::write(&file, &text).unwrap();
                let path = match rng.below(6) {
                    0 => "/dev/zero".to_string(),
                    1 => dir.display().to_string(),
                    2 => string(rng),
                    _ => file.display().to_string(),
                };
                let got = RuntimeOptions::from_any(&any(RUNTIME_OPTIONS, runtime_options_bytes(&path, b"")));
                if !path.is_empty() {
                    names(&got, &["config_path"], &path);
                }
                got
            }
            // Any of the three messages, or another type, with damaged bytes.
            _ => {
                let typed = RuncOptions { root: "/r".into(), io_uid: 7, ..Default::default() }.write_to_bytes().unwrap();
                let (url, mut value) = match rng.below(4) {
                    0 => (RUNC_OPTIONS.to_string(), typed),
                    1 => (RUNTIME_OPTIONS.to_string(), runtime_options_bytes("", b"IoUid = 1\n")),
                    2 => (LINUX_CREATE_OPTIONS.to_string(), vec![0x08, 0x01, 0x50, 0x05, 0x4a, 0x01, b'/']),
                    _ => (string(rng), rng.some_bytes(64)),
                };
                mutate_bytes(rng, &mut value);
                let got = RuntimeOptions::from_any(&any(&url, value.clone()));
                let case = format!("{url:?} {}", short(&format!("{value:?}")));
                let known = [RUNC_OPTIONS, RUNTIME_OPTIONS, LINUX_CREATE_OPTIONS];
                let url_name = url.rsplit('/').next().unwrap_or_default().to_string();
                let mut what: Vec<&str> = known.to_vec();
                what.extend(["BinaryName", "Criu", "TaskApi", "Root", "config_"]);
                what.push(&url_name);
                names(&got, &what, &case);
                got
            }
        };
        match result {
            Ok(o) => {
                assert!(o.check().is_ok(), "accepted options that check() refuses: {o:?}");
                accepted += 1;
            }
            Err(_) => refused += 1,
        }
    });
    let _ = std::fs::remove_dir_all(dir);
    run.report(&format!("{accepted} accepted, {refused} refused"));
}
