//! CRIU's RPC messages (`criu_req`, `criu_opts`, `criu_resp` of CRIU's
//! images/rpc.proto, proto2), the fields ferrum uses, in protobuf's wire
//! format: a few varints and strings do not justify a code generator.

/// criu_req_type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ReqType {
    Dump = 1,
    Restore = 2,
    Notify = 6,
}

/// What a dump or restore is asked for, as criu_opts has it. Fds are the
/// requester's (CRIU reads them through /proc), inherited ones CRIU's own.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Opts {
    pub images_dir_fd: i32,
    pub work_dir_fd: i32,
    pub pid: Option<i32>,
    pub log_file: String,
    pub root: String,
    pub leave_running: bool,
    pub ext_unix_sk: bool,
    pub tcp_established: bool,
    pub file_locks: bool,
    pub rst_sibling: bool,
    pub orphan_pts_master: bool,
    pub freeze_cgroup: Option<String>,
    /// CLONE_NEW* flags of namespaces made, not dumped or restored with contents.
    pub empty_ns: u32,
    pub external: Vec<String>,
    /// (key, fd).
    pub inherit_fd: Vec<(String, i32)>,
    /// (namespace, file).
    pub join_ns: Vec<(String, String)>,
}

/// CRIU's most verbose level but one, as runc asks: the log is what a failure
/// is explained with.
const LOG_LEVEL: u64 = 4;

/// criu_cg_mode IGNORE: the restored container's cgroup is the runtime's.
const CG_IGNORE: u64 = 0;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn int(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(out, field, 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

fn flag(out: &mut Vec<u8>, field: u32, set: bool) {
    if set {
        int(out, field, 1);
    }
}

/// A negative int32 is a 10-byte varint in protobuf.
fn int32(out: &mut Vec<u8>, field: u32, v: i32) {
    int(out, field, i64::from(v) as u64);
}

impl Opts {
    fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        int32(&mut o, 1, self.images_dir_fd);
        if let Some(pid) = self.pid {
            int32(&mut o, 2, pid);
        }
        flag(&mut o, 3, self.leave_running);
        flag(&mut o, 4, self.ext_unix_sk);
        flag(&mut o, 5, self.tcp_established);
        flag(&mut o, 8, self.file_locks);
        int(&mut o, 9, LOG_LEVEL);
        bytes(&mut o, 10, self.log_file.as_bytes());
        // Notifications come as messages to answer: how a restored pty's
        // master comes back (orphan-pts-master).
        flag(&mut o, 12, true);
        bytes(&mut o, 13, self.root.as_bytes());
        int32(&mut o, 17, self.work_dir_fd);
        flag(&mut o, 26, self.rst_sibling);
        for (k, fd) in &self.inherit_fd {
            let mut m = Vec::new();
            bytes(&mut m, 1, k.as_bytes());
            int32(&mut m, 2, *fd);
            bytes(&mut o, 27, &m);
        }
        int(&mut o, 34, CG_IGNORE);
        for e in &self.external {
            bytes(&mut o, 37, e.as_bytes());
        }
        if self.empty_ns != 0 {
            int(&mut o, 38, u64::from(self.empty_ns));
        }
        for (ns, file) in &self.join_ns {
            let mut m = Vec::new();
            bytes(&mut m, 1, ns.as_bytes());
            bytes(&mut m, 2, file.as_bytes());
            bytes(&mut o, 39, &m);
        }
        if let Some(cg) = &self.freeze_cgroup {
            bytes(&mut o, 44, cg.as_bytes());
        }
        flag(&mut o, 50, self.orphan_pts_master);
        o
    }
}

/// A criu_req for a dump or restore.
pub(crate) fn request(typ: ReqType, opts: &Opts) -> Vec<u8> {
    let mut out = Vec::new();
    int(&mut out, 1, typ as u64);
    bytes(&mut out, 2, &opts.encode());
    out
}

/// The answer to a notification: whether CRIU may go on.
pub(crate) fn notify_answer(success: bool) -> Vec<u8> {
    let mut out = Vec::new();
    int(&mut out, 1, ReqType::Notify as u64);
    int(&mut out, 3, u64::from(success));
    out
}

/// A criu_resp, the fields ferrum reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Response {
    pub typ: u64,
    pub success: bool,
    /// criu_restore_resp.pid.
    pub restored_pid: Option<i32>,
    /// criu_notify.script, and the pid it concerns.
    pub notify_script: Option<String>,
    pub notify_pid: Option<i32>,
    pub errno: Option<i32>,
    pub errmsg: Option<String>,
}

impl Response {
    pub(crate) fn is_notify(&self) -> bool {
        self.typ == ReqType::Notify as u64
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// The next field: its number and its value (a varint, or bytes).
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Int(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                if len > self.buf.len() {
                    return Err("truncated field".into());
                }
                let (v, rest) = self.buf.split_at(len);
                self.buf = rest;
                Value::Bytes(v)
            }
            5 => {
                self.buf = self.buf.get(4..).ok_or("truncated fixed32")?;
                Value::Int(0)
            }
            1 => {
                self.buf = self.buf.get(8..).ok_or("truncated fixed64")?;
                Value::Int(0)
            }
            w => return Err(format!("wire type {w}")),
        };
        Ok(Some(((key >> 3) as u32, value)))
    }
}

enum Value<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn fields(buf: &[u8], mut each: impl FnMut(u32, Value) -> Result<(), String>) -> Result<(), String> {
    let mut r = Reader { buf };
    while let Some((n, v)) = r.field()? {
        each(n, v)?;
    }
    Ok(())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn response(buf: &[u8]) -> Result<Response, String> {
    let mut resp = Response::default();
    fields(buf, |n, v| {
        match (n, v) {
            (1, Value::Int(t)) => resp.typ = t,
            (2, Value::Int(s)) => resp.success = s != 0,
            (4, Value::Bytes(m)) => fields(m, |n, v| {
                if let (1, Value::Int(pid)) = (n, v) {
                    resp.restored_pid = Some(pid as i32);
                }
                Ok(())
            })?,
            (5, Value::Bytes(m)) => fields(m, |n, v| {
                match (n, v) {
                    (1, Value::Bytes(s)) => resp.notify_script = Some(text(s)),
                    (2, Value::Int(pid)) => resp.notify_pid = Some(pid as i32),
                    _ => {}
                }
                Ok(())
            })?,
            (7, Value::Int(e)) => resp.errno = Some(e as i32),
            (9, Value::Bytes(s)) => resp.errmsg = Some(text(s)),
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| format!("CRIU's answer: {e}"))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_in_the_wire_format() {
        let opts = Opts {
            images_dir_fd: 5,
            work_dir_fd: 6,
            pid: Some(300),
            log_file: "dump.log".into(),
            root: "/r".into(),
            leave_running: true,
            external: vec!["mnt[/a]:/a".into()],
            inherit_fd: vec![("pipe:[7]".into(), 10)],
            ..Default::default()
        };
        let req = request(ReqType::Dump, &opts);
        // type DUMP, then opts (field 2, length-delimited)...
        assert_eq!(&req[..3], &[0x08, 0x01, 0x12]);
        let body = &req[4..];
        assert_eq!(req[3] as usize, body.len());
        // images_dir_fd 5, pid 300 (0xac 0x02), leave_running.
        assert_eq!(&body[..7], &[0x08, 0x05, 0x10, 0xac, 0x02, 0x18, 0x01]);
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"\x52\x08dump.log"), "log_file");
        assert!(has(b"\xaa\x02\x0amnt[/a]:/a"), "external (37)");
        assert!(has(b"\xda\x01\x0c\x0a\x08pipe:[7]\x10\x0a"), "inherit_fd (27)");
        assert!(has(&[0x90, 0x02, 0x00]), "manage_cgroups_mode IGNORE (34)");
        assert_eq!(notify_answer(true), [0x08, 0x06, 0x18, 0x01]);
        assert_eq!(notify_answer(false), [0x08, 0x06, 0x18, 0x00]);
        let mut neg = Vec::new();
        int32(&mut neg, 1, -1);
        assert_eq!(neg.len(), 11);
    }

    #[test]
    fn responses_are_read() {
        // RESTORE, success, restore { pid: 4242 }.
        let r = response(&[0x08, 0x02, 0x10, 0x01, 0x22, 0x03, 0x08, 0x92, 0x21]).unwrap();
        assert_eq!((r.typ, r.success, r.restored_pid), (2, true, Some(4242)));
        // NOTIFY, success, notify { script: "orphan-pts-master", pid: 7 }.
        let mut buf = vec![0x08, 0x06, 0x10, 0x01, 0x2a, 21, 0x0a, 17];
        buf.extend_from_slice(b"orphan-pts-master");
        buf.extend_from_slice(&[0x10, 0x07]);
        let r = response(&buf).unwrap();
        assert!(r.is_notify());
        assert_eq!((r.notify_script.as_deref(), r.notify_pid), (Some("orphan-pts-master"), Some(7)));
        // DUMP, failed, cr_errno 2, cr_errmsg.
        let r = response(&[0x08, 0x01, 0x10, 0x00, 0x38, 0x02, 0x4a, 0x02, b'n', b'o']).unwrap();
        assert_eq!((r.success, r.errno, r.errmsg.as_deref()), (false, Some(2), Some("no")));
        assert!(response(&[0x08]).is_err());
        assert!(response(&[0x12, 0x05, 0x01]).is_err());
    }
}
