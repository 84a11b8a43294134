//! Task.Checkpoint's request as runtime-core's options: containerd's
//! `containerd.runc.v1.CheckpointOptions` (which ctr and the CRI send a
//! runc-typed runtime; others get none), each field applied or refused by name.

use anyhow::{bail, Context};
use containerd_shim_protos::api::CheckpointTaskRequest;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use std::path::PathBuf;

const CHECKPOINT_OPTIONS: &str = "containerd.runc.v1.CheckpointOptions";

/// The request's options; the CRIU program and defaults come from the
/// runtime options later (see InitProcess::checkpoint).
pub fn options(req: &CheckpointTaskRequest) -> anyhow::Result<runtime_core::CheckpointOptions> {
    let o = match req.options.as_ref().filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) {
        None => CheckpointOptions::default(),
        Some(any) => {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            if name != CHECKPOINT_OPTIONS {
                bail!("options of type {name:?} are not understood (ferrum takes {CHECKPOINT_OPTIONS})");
            }
            CheckpointOptions::parse_from_bytes(&any.value).context(CHECKPOINT_OPTIONS)?
        }
    };
    // As runc: only a network namespace can be left empty (whoever set it
    // up, a CNI plugin, sets it up again after the restore).
    if let Some(other) = o.empty_namespaces.iter().find(|ns| *ns != "network") {
        bail!("empty_namespaces {other:?}: only \"network\" can be checkpointed empty");
    }
    // ferrum always makes the restored container's cgroup itself (CRIU's
    // "ignore"); another mode would ask CRIU to do it.
    if !matches!(o.cgroups_mode.as_str(), "" | "ignore") {
        bail!("cgroups_mode {:?}: ferrum restores into the cgroup it makes (only \"ignore\")", o.cgroups_mode);
    }
    // A terminal container is refused by runtime-core whatever this says;
    // without one, there is no terminal to dump.
    let some = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let image_dir = some(&o.image_path).or_else(|| some(&req.path)).unwrap_or_default();
    for (field, path) in [("image_path", &image_dir), ("work_path", &some(&o.work_path).unwrap_or_default())] {
        if !path.as_os_str().is_empty() && !path.is_absolute() {
            bail!("{field} {} is not an absolute path", path.display());
        }
    }
    Ok(runtime_core::CheckpointOptions {
        criu: PathBuf::new(),
        image_dir,
        work_dir: some(&o.work_path),
        leave_running: !o.exit,
        tcp_established: o.open_tcp,
        ext_unix_sockets: o.external_unix_sockets,
        file_locks: o.file_locks,
        empty_network: !o.empty_namespaces.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    fn request(o: &CheckpointOptions, path: &str) -> CheckpointTaskRequest {
        let any = Any { type_url: format!("type.googleapis.com/{CHECKPOINT_OPTIONS}"), value: o.write_to_bytes().unwrap(), ..Default::default() };
        CheckpointTaskRequest { id: "c1".into(), path: path.into(), options: Some(any).into(), ..Default::default() }
    }

    #[test]
    fn fields_are_applied() {
        let o = CheckpointOptions { exit: true, open_tcp: true, file_locks: true, work_path: "/w".into(), ..Default::default() };
        let got = options(&request(&o, "/img")).unwrap();
        assert_eq!(got.image_dir, PathBuf::from("/img"));
        assert_eq!(got.work_dir, Some(PathBuf::from("/w")));
        assert!(!got.leave_running && got.tcp_established && got.file_locks && !got.ext_unix_sockets);
        let o = CheckpointOptions { image_path: "/mine".into(), ..Default::default() };
        let got = options(&request(&o, "/img")).unwrap();
        assert_eq!((got.image_dir, got.leave_running), (PathBuf::from("/mine"), true));
        let none = CheckpointTaskRequest { path: "/img".into(), ..Default::default() };
        assert!(options(&none).unwrap().leave_running);
    }

    #[test]
    fn what_is_not_done_is_named() {
        let o = CheckpointOptions { empty_namespaces: vec!["network".into(), "ipc".into()], ..Default::default() };
        assert!(options(&request(&o, "/img")).unwrap_err().to_string().contains("empty_namespaces \"ipc\""));
        let o = CheckpointOptions { empty_namespaces: vec!["network".into()], ..Default::default() };
        assert!(options(&request(&o, "/img")).unwrap().empty_network);
        let o = CheckpointOptions { cgroups_mode: "full".into(), ..Default::default() };
        assert!(options(&request(&o, "/img")).unwrap_err().to_string().contains("cgroups_mode"));
        let o = CheckpointOptions { work_path: "rel".into(), ..Default::default() };
        assert!(options(&request(&o, "/img")).unwrap_err().to_string().contains("work_path rel"));
    }
}
