//! The runner's side of a dump or restore: `criu swrk` started as our child
//! with one end of a SOCK_SEQPACKET pair, one request sent, its notifications
//! answered (keeping a restored terminal's master CRIU hands over, running
//! the runtime's hooks once the restored tree's namespaces exist), its
//! answer read, its exit collected.

use super::rpc::{self, Opts, ReqType};
use super::{log_errors, needed, parse_version, MIN_VERSION};
use nix::sys::socket::{recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What CRIU's answer gives the runtime.
pub(crate) struct Outcome {
    /// The restored tree's root.
    pub pid: Option<i32>,
    /// A restored terminal's new master (orphan-pts-master).
    pub console: Option<OwnedFd>,
}

/// CRIU's messages are small; a notification with an fd is the largest.
const MAX_MESSAGE: usize = 64 * 1024;

/// `namespaces_ready` runs at CRIU's setup-namespaces with the restored
/// init's pid (runc's prestart and createRuntime hooks); its failure stops
/// the restore and is the error.
pub(crate) fn run(
    criu: &Path,
    path: &str,
    typ: ReqType,
    mut opts: Opts,
    image_dir: &Path,
    work_dir: &Path,
    namespaces_ready: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Outcome, String> {
    check_version(criu, path)?;
    let images = open_dir(image_dir)?;
    let work = open_dir(work_dir)?;
    // CRIU opens these through /proc/<our pid>/fd.
    opts.images_dir_fd = images.as_raw_fd();
    opts.work_dir_fd = work.as_raw_fd();
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| format!("socketpair for criu swrk: {e}"))?;
    // SAFETY: fcntl on an fd we own: CRIU must inherit its end.
    if unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(format!("pass criu its socket: {}", std::io::Error::last_os_error()));
    }
    let mut child = Command::new(criu)
        .env_clear()
        .env("PATH", path)
        .arg("swrk")
        .arg(theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("run {} swrk: {e}", criu.display()))?;
    drop(theirs);
    let talked = converse(&ours, typ, &opts, namespaces_ready);
    drop(ours);
    let status = child.wait().map_err(|e| format!("wait for criu: {e}"))?;
    let action = if typ == ReqType::Dump { "dump" } else { "restore" };
    let log = work_dir.join(&opts.log_file);
    // The log's last error lines say why; CRIU's own errmsg is its first
    // error, often only noise (see log_errors). One line: callers such as
    // go-runc keep only the first.
    let explain = |what: Option<String>| {
        let from_log = log_errors(&std::fs::read_to_string(&log).unwrap_or_default());
        let why = [what.unwrap_or_default(), from_log].into_iter().filter(|w| !w.is_empty()).collect::<Vec<_>>().join(": ");
        let why = if why.is_empty() { "no reason given".into() } else { why.replace('\n', " ") };
        format!("criu {action} failed: {why} (log: {})", log.display())
    };
    let (resp, console) = match talked {
        Ok(Conversation::Answered(resp, console)) => (resp, console),
        Ok(Conversation::Stopped(why)) => return Err(why),
        Err(e) => return Err(explain(Some(format!("{e} (criu {status})")))),
    };
    if !resp.success {
        let errno = resp.errno.filter(|e| *e != 0).map(|e| std::io::Error::from_raw_os_error(e).to_string());
        return Err(explain(errno));
    }
    Ok(Outcome { pid: resp.restored_pid, console })
}

/// How a conversation with CRIU ended.
enum Conversation {
    /// CRIU's final answer, and a restored terminal's master.
    Answered(rpc::Response, Option<OwnedFd>),
    /// We stopped it: why.
    Stopped(String),
}

/// Send the request, answer notifications until the final answer.
fn converse(
    sock: &OwnedFd,
    typ: ReqType,
    opts: &Opts,
    namespaces_ready: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Conversation, String> {
    send(sock, &rpc::request(typ, opts))?;
    let mut console = None;
    loop {
        let (buf, fd) = recv(sock)?;
        let resp = rpc::response(&buf)?;
        if !resp.is_notify() {
            return Ok(Conversation::Answered(resp, console));
        }
        let go_on = match resp.notify_script.as_deref() {
            Some("orphan-pts-master") => {
                console = Some(fd.ok_or("CRIU's orphan-pts-master came without the master")?);
                Ok(())
            }
            Some("setup-namespaces") => namespaces_ready(resp.notify_pid.unwrap_or(0)),
            _ => Ok(()),
        };
        send(sock, &rpc::notify_answer(go_on.is_ok()))?;
        if let Err(why) = go_on {
            // CRIU gives up and answers its failure; ours is the reason.
            let _ = recv(sock);
            return Ok(Conversation::Stopped(why));
        }
    }
}

fn send(sock: &OwnedFd, msg: &[u8]) -> Result<(), String> {
    nix::sys::socket::send(sock.as_raw_fd(), msg, MsgFlags::empty())
        .map(drop)
        .map_err(|e| format!("write to criu: {e}"))
}

fn recv(sock: &OwnedFd) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| format!("read from criu: {e}"))?;
        let mut fd = None;
        for cmsg in msg.cmsgs().map_err(|e| format!("read from criu: {e}"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these fds for us.
                let mut owned = fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) });
                fd = owned.next();
            }
        }
        (msg.bytes, fd)
    };
    if len == 0 {
        return Err("criu exited without an answer".into());
    }
    buf.truncate(len);
    Ok((buf, fd))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
    Ok(file.into())
}

fn check_version(criu: &Path, path: &str) -> Result<(), String> {
    let out = Command::new(criu)
        .env_clear()
        .env("PATH", path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| needed(format!("{}: {e}", criu.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(v) if v >= MIN_VERSION => Ok(()),
        Some((major, minor)) => Err(needed(format!("{} is CRIU {major}.{minor}", criu.display()))),
        None => Err(format!("{} --version said {:?}: not CRIU?", criu.display(), text.trim())),
    }
}
