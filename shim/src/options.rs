//! Runtime options: what containerd passes a shim about how to run a container,
//! on `start`'s stdin (an Any, or inside 2.3+'s BootstrapParams) and again in
//! Create.
//!
//! Three encodings reach a shim, carrying the same settings under runc's names:
//! - runc's typed `containerd.runc.v1.Options`, which the CRI sends a runtime of
//!   type `io.containerd.runc.v2` (e.g. one whose `runtime_path` is ferrum);
//! - `runtimeoptions.v1.Options`, which the CRI sends every other runtime type
//!   (the runtime's `options` table as TOML in `config_body`) and `ctr run
//!   --runtime-config-path` sends (a TOML file in `config_path`);
//! - containerd 1.x's `containerd.linux.runc.CreateOptions`, which its client
//!   sends for `ctr run --no-pivot` to any runtime but runc's.
//!
//! Every key is either applied or refused with an error that names it: an option
//! silently dropped would run a container differently from what was asked.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use serde::Deserialize;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const LINUX_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";

/// The options, whichever encoding they came in. Keys are runc's (as they are
/// written in containerd's config); the TOML forms are decoded straight into it.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct RuntimeOptions {
    pub systemd_cgroup: bool,
    /// Where container state lives (runc's root); `<Root>/<namespace>/<id>`.
    pub root: String,
    /// Owner of the stdio pipes and FIFOs handed to the container's processes.
    pub io_uid: u32,
    pub io_gid: u32,
    /// An existing cgroup the shim daemon is moved into.
    pub shim_cgroup: String,
    /// Handed to runtime-core (move + chroot instead of pivot_root; no keyring of the container's own).
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    /// CRIU's program for checkpoint/restore: a path, or a name on PATH.
    pub criu_path: String,
    /// Where a checkpoint's images go when containerd names no path.
    pub criu_image_path: String,
    /// CRIU's logs and scratch files (the container's state dir by default).
    pub criu_work_path: String,
    // runc's keys that mean nothing without runc: refused when set.
    binary_name: String,
    task_api_address: String,
    task_api_version: u32,
}

fn err(msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("runtime options: {msg}")
}

/// The name in a type URL ("types.containerd.io/x.y.Z" -> "x.y.Z").
fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// Whether an Any holds runtime options (2.3+'s BootstrapParams carry them
/// among other extensions).
pub fn is_options(any: &Any) -> bool {
    matches!(type_name(any), RUNC_OPTIONS | RUNTIME_OPTIONS | LINUX_CREATE_OPTIONS)
}

impl RuntimeOptions {
    /// Decode containerd's Any; an empty one means no options.
    pub fn from_any(any: &Any) -> anyhow::Result<RuntimeOptions> {
        if any.type_url.is_empty() && any.value.is_empty() {
            return Ok(RuntimeOptions::default());
        }
        let options = match type_name(any) {
            RUNC_OPTIONS => from_runc(&any.value)?,
            RUNTIME_OPTIONS => from_runtime_options(&any.value)?,
            LINUX_CREATE_OPTIONS => from_linux_create_options(&any.value)?,
            other => {
                return Err(err(format!(
                    "type {other:?} is not understood by ferrum (it takes {RUNC_OPTIONS}, {RUNTIME_OPTIONS} or {LINUX_CREATE_OPTIONS})"
                )))
            }
        };
        options.check().map_err(err)?;
        Ok(options)
    }

    /// Parse the TOML form (the options table of containerd's config).
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<RuntimeOptions> {
        let options: RuntimeOptions = toml::from_str(text).map_err(|e| {
            // The message alone may not name the key ("invalid type: ..."): add its line.
            let at = e.span().map(|span| {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count();
                format!(", line {} ({:?})", line + 1, text.lines().nth(line).unwrap_or_default().trim())
            });
            err(format!("{origin}{}: {}", at.unwrap_or_default(), e.message().trim()))
        })?;
        // Say where the key came from: a file's name, or the CRI's config_body.
        options.check().map_err(|reason| err(format!("{origin}: {reason}")))?;
        Ok(options)
    }

    /// Refuse what ferrum cannot do, naming the key.
    fn check(&self) -> Result<(), String> {
        let refused = [
            ("BinaryName", !self.binary_name.is_empty(), "ferrum runs no runc binary"),
            ("TaskApiAddress", !self.task_api_address.is_empty(), "ferrum serves the Task API itself"),
            ("TaskApiVersion", self.task_api_version != 0, "ferrum serves the Task API itself"),
        ];
        if let Some((key, _, why)) = refused.iter().find(|(_, set, _)| *set) {
            return Err(format!("{key} is set, but {why}"));
        }
        for (key, path) in [("Root", &self.root), ("CriuImagePath", &self.criu_image_path), ("CriuWorkPath", &self.criu_work_path)] {
            if !path.is_empty() && !Path::new(path).is_absolute() {
                return Err(format!("{key} {path:?} must be an absolute path"));
            }
        }
        if self.criu_path.contains('\0') {
            return Err(format!("CriuPath {:?} holds a NUL byte", self.criu_path));
        }
        Ok(())
    }

    /// Where runtime-core keeps the state of `namespace`'s containers.
    pub fn state_root(&self, namespace: &str) -> PathBuf {
        if self.root.is_empty() {
            crate::manager::state_root(namespace)
        } else {
            Path::new(&self.root).join(namespace)
        }
    }

    /// Note the state root in the bundle when Root moved it.
    pub fn remember_state_root(&self, bundle: &Path, namespace: &str) -> anyhow::Result<()> {
        if self.root.is_empty() {
            return Ok(());
        }
        let file = bundle.join(STATE_ROOT_FILE);
        let root = self.state_root(namespace);
        std::fs::write(&file, root.as_os_str().as_encoded_bytes())
            .map_err(|e| err(format!("write {}: {e}", file.display())))
    }

    pub fn cgroup_driver(&self) -> runtime_core::cgroup::CgroupDriver {
        match self.systemd_cgroup {
            true => runtime_core::cgroup::CgroupDriver::Systemd,
            false => runtime_core::cgroup::CgroupDriver::Cgroupfs,
        }
    }

    /// CRIU as the options name it (CriuPath), else `criu` on PATH.
    pub fn criu(&self) -> crate::process::Criu {
        let some = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        crate::process::Criu {
            program: some(&self.criu_path).unwrap_or_else(|| PathBuf::from("criu")),
            image_dir: some(&self.criu_image_path),
            work_dir: some(&self.criu_work_path),
        }
    }

    /// The owner to give the stdio handed to processes, when one is asked for.
    pub fn io_owner(&self) -> Option<(u32, u32)> {
        (self.io_uid != 0 || self.io_gid != 0).then_some((self.io_uid, self.io_gid))
    }
}

/// A bundle file naming the state root when Root moved it away from ours, so
/// that `shim delete` (after the daemon died) finds the container.
const STATE_ROOT_FILE: &str = "ferrum-state-root";

pub fn remembered_state_root(bundle: &Path, namespace: &str) -> PathBuf {
    match std::fs::read(bundle.join(STATE_ROOT_FILE)) {
        Ok(path) => PathBuf::from(String::from_utf8_lossy(&path).into_owned()),
        Err(_) => crate::manager::state_root(namespace),
    }
}

fn from_runc(bytes: &[u8]) -> anyhow::Result<RuntimeOptions> {
    let o = RuncOptions::parse_from_bytes(bytes).map_err(|e| err(format!("{RUNC_OPTIONS}: {e}")))?;
    // criu_path (8) is a field of containerd 1.x's proto, gone from this one;
    // any other unknown field is one we do not have yet.
    let mut criu_path = String::new();
    for (number, value) in o.special_fields.unknown_fields().iter() {
        match (number, value) {
            (8, containerd_shim_protos::protobuf::UnknownValueRef::LengthDelimited(bytes)) => {
                criu_path = String::from_utf8(bytes.to_vec())
                    .map_err(|_| err(format!("{RUNC_OPTIONS}: criu_path (field 8) is not UTF-8")))?;
            }
            _ => return Err(err(format!("{RUNC_OPTIONS}: field {number} is not understood by ferrum"))),
        }
    }
    Ok(RuntimeOptions {
        systemd_cgroup: o.systemd_cgroup,
        root: o.root,
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        shim_cgroup: o.shim_cgroup,
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        binary_name: o.binary_name,
        criu_path,
        criu_image_path: o.criu_image_path,
        criu_work_path: o.criu_work_path,
        task_api_address: o.task_api_address,
        task_api_version: o.task_api_version,
    })
}

/// A field of a protobuf message as the wire has it.
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

/// The fields of a message whose proto no crate we use ships (and whose few
/// scalar fields do not justify generating code), in wire order.
fn fields(bytes: &[u8], message: &str) -> anyhow::Result<Vec<(u32, Field)>> {
    let bad = |e: containerd_shim_protos::protobuf::Error| err(format!("{message}: {e}"));
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut out = Vec::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        let value = match tag & 7 {
            0 => Field::Varint(input.read_uint64().map_err(bad)?),
            2 => Field::Bytes(input.read_bytes().map_err(bad)?),
            wire => return Err(err(format!("{message}: field {} has wire type {wire}", tag >> 3))),
        };
        out.push((tag >> 3, value));
    }
    Ok(out)
}

/// `name` is the field's name in the proto, for the error: "field 3" alone
/// tells a user nothing (config_body, sent by the CRI, is field 3).
fn text(value: Field, message: &str, field: u32, name: &str) -> anyhow::Result<String> {
    match value {
        Field::Bytes(b) => String::from_utf8(b).map_err(|_| err(format!("{message}: {name} (field {field}) is not UTF-8"))),
        Field::Varint(_) => Err(err(format!("{message}: {name} (field {field}) should be a string"))),
    }
}

fn number(value: Field, message: &str, field: u32, name: &str) -> anyhow::Result<u64> {
    match value {
        Field::Varint(n) => Ok(n),
        Field::Bytes(_) => Err(err(format!("{message}: {name} (field {field}) should be a number"))),
    }
}

/// `runtimeoptions.v1.Options { type_url = 1; config_path = 2; config_body = 3 }`.
fn from_runtime_options(bytes: &[u8]) -> anyhow::Result<RuntimeOptions> {
    let (mut path, mut body) = (String::new(), String::new());
    for (field, value) in fields(bytes, RUNTIME_OPTIONS)? {
        match field {
            // The type of config_body, which is TOML whatever it says.
            1 => drop(text(value, RUNTIME_OPTIONS, field, "type_url")?),
            2 => path = text(value, RUNTIME_OPTIONS, field, "config_path")?,
            3 => body = text(value, RUNTIME_OPTIONS, field, "config_body")?,
            _ => return Err(err(format!("{RUNTIME_OPTIONS}: field {field} is not understood by ferrum"))),
        }
    }
    match (path.is_empty(), body.is_empty()) {
        (true, true) => Ok(RuntimeOptions::default()),
        (false, false) => Err(err("both config_path and config_body are set; give one")),
        (false, true) => RuntimeOptions::from_toml(&read_config_path(&path)?, &format!("config_path {path}")),
        (true, false) => RuntimeOptions::from_toml(&body, "config_body"),
    }
}

/// More than any options table: containerd's are a few lines.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// The TOML file config_path names. A device or FIFO named there would be read
/// for ever (/dev/zero) or block the shim until a writer came: only a regular
/// file of a sane size is read.
fn read_config_path(path: &str) -> anyhow::Result<String> {
    let fail = |e: &dyn std::fmt::Display| err(format!("config_path {path}: {e}"));
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(&e))?;
    if !file.metadata().map_err(|e| fail(&e))?.is_file() {
        return Err(fail(&"not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE + 1).read_to_string(&mut text).map_err(|e| fail(&e))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(fail(&format!("larger than {MAX_CONFIG_FILE} bytes")));
    }
    Ok(text)
}

/// containerd 1.x's `containerd.linux.runc.CreateOptions`, which its client
/// (`ctr run --no-pivot`) sends any runtime not named io.containerd.runc.*,
/// with a restore's settings beside the create ones.
fn from_linux_create_options(bytes: &[u8]) -> anyhow::Result<RuntimeOptions> {
    let mut o = RuntimeOptions::default();
    for (field, value) in fields(bytes, LINUX_CREATE_OPTIONS)? {
        match field {
            1 => o.no_pivot_root = number(value, LINUX_CREATE_OPTIONS, field, "no_pivot_root")? != 0,
            8 => o.no_new_keyring = number(value, LINUX_CREATE_OPTIONS, field, "no_new_keyring")? != 0,
            9 => o.shim_cgroup = text(value, LINUX_CREATE_OPTIONS, field, "shim_cgroup")?,
            10 => o.io_uid = number(value, LINUX_CREATE_OPTIONS, field, "io_uid")? as u32,
            11 => o.io_gid = number(value, LINUX_CREATE_OPTIONS, field, "io_gid")? as u32,
            12 => o.criu_work_path = text(value, LINUX_CREATE_OPTIONS, field, "criu_work_path")?,
            13 => o.criu_image_path = text(value, LINUX_CREATE_OPTIONS, field, "criu_image_path")?,
            // A restore's CRIU settings: ferrum applies those its images were
            // dumped with (ferrum-checkpoint.json), which these can only repeat.
            2 => drop(number(value, LINUX_CREATE_OPTIONS, field, "open_tcp")?),
            3 => drop(number(value, LINUX_CREATE_OPTIONS, field, "external_unix_sockets")?),
            4 => drop(number(value, LINUX_CREATE_OPTIONS, field, "terminal")?),
            5 => drop(number(value, LINUX_CREATE_OPTIONS, field, "file_locks")?),
            6 => match text(value, LINUX_CREATE_OPTIONS, field, "empty_namespaces")?.as_str() {
                "network" => {}
                other => {
                    return Err(err(format!(
                        "{LINUX_CREATE_OPTIONS}: empty_namespaces {other:?}: only \"network\" can be restored empty"
                    )))
                }
            },
            7 => match text(value, LINUX_CREATE_OPTIONS, field, "cgroups_mode")?.as_str() {
                "" | "ignore" => {}
                other => {
                    return Err(err(format!(
                        "{LINUX_CREATE_OPTIONS}: cgroups_mode {other:?}: ferrum restores into the cgroup it makes (only \"ignore\")"
                    )))
                }
            },
            _ => return Err(err(format!("{LINUX_CREATE_OPTIONS}: field {field} is not understood by ferrum"))),
        }
    }
    Ok(o)
}


#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::CodedOutputStream;

    fn runtime_options_any(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            if !path.is_empty() {
                out.write_string(2, path).unwrap();
            }
            if !body.is_empty() {
                out.write_bytes(3, body.as_bytes()).unwrap();
            }
            out.flush().unwrap();
        }
        Any { type_url: RUNTIME_OPTIONS.into(), value, ..Default::default() }
    }

    #[test]
    fn runc_typed_options() {
        let o = RuncOptions {
            io_uid: 1000,
            io_gid: 1001,
            root: "/run/r".into(),
            no_pivot_root: true,
            ..Default::default()
        };
        let any = Any { type_url: RUNC_OPTIONS.into(), value: o.write_to_bytes().unwrap(), ..Default::default() };
        let got = RuntimeOptions::from_any(&any).unwrap();
        assert_eq!((got.io_owner(), got.no_pivot_root), (Some((1000, 1001)), true));
        assert_eq!(got.state_root("k8s.io"), Path::new("/run/r/k8s.io"));
    }

    #[test]
    fn toml_body_with_runc_names() {
        let any = runtime_options_any("", "IoUid = 7\nIoGid = 8\nShimCgroup = \"/shims\"\n");
        let got = RuntimeOptions::from_any(&any).unwrap();
        assert_eq!((got.io_owner(), got.shim_cgroup.as_str()), (Some((7, 8)), "/shims"));
        assert_eq!(RuntimeOptions::from_any(&Any::default()).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn systemd_cgroup_picks_the_driver() {
        let got = RuntimeOptions::from_any(&runtime_options_any("", "SystemdCgroup = true")).unwrap();
        assert_eq!(got.cgroup_driver(), runtime_core::cgroup::CgroupDriver::Systemd);
        assert_eq!(RuntimeOptions::default().cgroup_driver(), runtime_core::cgroup::CgroupDriver::Cgroupfs);
    }

    #[test]
    fn unknown_and_refused_keys_are_named() {
        let e = RuntimeOptions::from_any(&runtime_options_any("", "Frobnicate = true")).unwrap_err().to_string();
        assert!(e.contains("Frobnicate") && e.contains("config_body"), "{e}");
        let e = RuntimeOptions::from_toml("BinaryName = \"runc\"", "x").unwrap_err().to_string();
        assert!(e.contains("BinaryName"), "{e}");
        let e = RuntimeOptions::from_toml("IoGid = 1\nIoUid = \"x\"", "x").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("IoUid"), "{e}");
        let e = RuntimeOptions::from_toml("Root = \"rel\"", "x").unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = RuntimeOptions::from_any(&Any { type_url: "foo.Bar".into(), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("foo.Bar"), "{e}");
    }

    #[test]
    fn criu_path_of_containerd_1_is_read() {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(8, "/usr/sbin/criu").unwrap();
            out.flush().unwrap();
        }
        let any = Any { type_url: format!("types.containerd.io/{RUNC_OPTIONS}"), value, ..Default::default() };
        assert_eq!(RuntimeOptions::from_any(&any).unwrap().criu_path, "/usr/sbin/criu");
    }

    #[test]
    fn containerd_1_create_options() {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_bool(1, true).unwrap();
            out.write_uint32(10, 5).unwrap();
            out.flush().unwrap();
        }
        let any = Any { type_url: LINUX_CREATE_OPTIONS.into(), value, ..Default::default() };
        let got = from_linux_create_options(&any.value).unwrap();
        assert_eq!((got.no_pivot_root, got.io_uid), (true, 5));
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_bool(2, true).unwrap();
            out.write_string(12, "/w").unwrap();
            out.write_string(13, "/i").unwrap();
            out.flush().unwrap();
        }
        let any = Any { type_url: LINUX_CREATE_OPTIONS.into(), value, ..Default::default() };
        let got = RuntimeOptions::from_any(&any).unwrap();
        assert_eq!((got.criu_work_path.as_str(), got.criu_image_path.as_str()), ("/w", "/i"));
        for (field, value, named) in [(7, "full", "cgroups_mode \"full\""), (6, "ipc", "empty_namespaces \"ipc\""), (12, "w", "CriuWorkPath")] {
            let mut bytes = Vec::new();
            {
                let mut out = CodedOutputStream::vec(&mut bytes);
                out.write_string(field, value).unwrap();
                out.flush().unwrap();
            }
            let any = Any { type_url: LINUX_CREATE_OPTIONS.into(), value: bytes, ..Default::default() };
            let e = RuntimeOptions::from_any(&any).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
        let any = Any { type_url: LINUX_CREATE_OPTIONS.into(), value: vec![14 << 3, 1], ..Default::default() };
        assert!(RuntimeOptions::from_any(&any).unwrap_err().to_string().contains("field 14"));
    }

    #[test]
    fn config_path_is_read() {
        let file = std::env::temp_dir().join(format!("ferrum-opts-{}.toml", std::process::id()));
        std::fs::write(&file, "IoGid = 3\n").unwrap();
        let got = RuntimeOptions::from_any(&runtime_options_any(&file.to_string_lossy(), "")).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(got.io_gid, 3);
        let e = RuntimeOptions::from_any(&runtime_options_any("/nonexistent/x.toml", "")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
        // Found by the fuzz suite: /dev/zero was read until memory ran out.
        let e = RuntimeOptions::from_any(&runtime_options_any("/dev/zero", "")).unwrap_err().to_string();
        assert!(e.contains("config_path /dev/zero: not a regular file"), "{e}");
        let e = RuntimeOptions::from_any(&runtime_options_any("/tmp", "")).unwrap_err().to_string();
        assert!(e.contains("config_path /tmp: not a regular file"), "{e}");
    }

    /// Found by the fuzz suite: "field 3 is not UTF-8" left the user to
    /// look up which field of which message that is.
    #[test]
    fn a_field_of_the_wrong_kind_is_named() {
        let any = Any { type_url: RUNTIME_OPTIONS.into(), value: vec![3 << 3 | 2, 1, 0xff], ..Default::default() };
        let e = RuntimeOptions::from_any(&any).unwrap_err().to_string();
        assert!(e.contains("config_body (field 3) is not UTF-8"), "{e}");
        let e = from_linux_create_options(&[10 << 3 | 2, 1, b'x']).unwrap_err().to_string();
        assert!(e.contains("io_uid (field 10) should be a number"), "{e}");
    }

    /// Found by the fuzz suite: a refused key from a config_path file did not
    /// say it came from that file.
    #[test]
    fn a_refused_key_names_where_it_came_from() {
        let e = RuntimeOptions::from_toml("BinaryName = \"runc\"", "config_path /etc/f.toml").unwrap_err();
        assert!(e.to_string().contains("config_path /etc/f.toml: BinaryName is set"), "{e}");
        let e = RuntimeOptions::from_toml("CriuWorkPath = \"w\"", "config_path /etc/f.toml").unwrap_err();
        assert!(e.to_string().contains("config_path /etc/f.toml: CriuWorkPath \"w\" must be an absolute path"), "{e}");
    }
}
