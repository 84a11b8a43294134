//! A minimal D-Bus client: just enough of the wire protocol to talk to systemd
//! over its private socket (`/run/systemd/private`).
//!
//! That socket is a direct, peer-to-peer connection to the manager, not a bus:
//! there is no bus daemon, so no `Hello` and no name ownership. We authenticate
//! with EXTERNAL (the kernel tells systemd our uid), send method calls and wait
//! for their replies, and keep the signals that arrive meanwhile (systemd sends
//! every signal to every private connection) for [`Connection::next_signal`].
//! No unix-fd passing.
//!
//! Everything received is untrusted input: lengths are checked against the
//! buffer, nesting is bounded, and a type we do not know is a
//! [`Error::Protocol`], never a panic.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("D-Bus {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("D-Bus authentication: {0}")]
    Auth(String),

    #[error("D-Bus protocol: {0}")]
    Protocol(String),

    #[error("D-Bus: timed out waiting for {0}")]
    Timeout(String),

    /// An ERROR reply. `name` is the D-Bus error name callers match on (e.g.
    /// `org.freedesktop.systemd1.NoSuchUnit`), `message` the peer's text.
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn protocol<T>(what: impl Into<String>) -> Result<T> {
    Err(Error::Protocol(what.into()))
}

/// A D-Bus value. Arrays carry their element signature so that empty arrays
/// still have a type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    Str(String),
    Path(String),
    Signature(String),
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    /// An element of a dictionary, `a{kv}`: key and value.
    DictEntry(Box<Value>, Box<Value>),
    Variant(Box<Value>),
}

impl Value {
    pub fn signature(&self) -> String {
        let code = match self {
            Value::Byte(_) => "y",
            Value::Bool(_) => "b",
            Value::I16(_) => "n",
            Value::U16(_) => "q",
            Value::I32(_) => "i",
            Value::U32(_) => "u",
            Value::I64(_) => "x",
            Value::U64(_) => "t",
            Value::Double(_) => "d",
            Value::Str(_) => "s",
            Value::Path(_) => "o",
            Value::Signature(_) => "g",
            Value::Variant(_) => "v",
            Value::Array(element, _) => return format!("a{element}"),
            Value::Struct(fields) => {
                return format!(
                    "({})",
                    fields.iter().map(Value::signature).collect::<String>()
                )
            }
            Value::DictEntry(key, value) => {
                return format!("{{{}{}}}", key.signature(), value.signature())
            }
        };
        code.to_string()
    }

    /// The text of a string, object path or signature.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Path(s) | Value::Signature(s) => Some(s),
            _ => None,
        }
    }
}

/// A signal received on the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub path: String,
    pub interface: String,
    pub member: String,
    pub args: Vec<Value>,
}

// Limits from the D-Bus specification.
const MAX_MESSAGE: usize = 1 << 27;
const MAX_ARRAY: usize = 1 << 26;
const MAX_SIGNATURE: usize = 255;
/// Arrays and structs may each nest 32 deep; variants add to it, so bound
/// the total to keep recursion on hostile input shallow.
const MAX_DEPTH: usize = 64;
/// Signals nobody asks for (systemd sends PropertiesChanged for every unit to
/// every private connection) must not pile up without bound.
const MAX_BUFFERED_SIGNALS: usize = 1024;

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;
const SIGNAL: u8 = 4;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SENDER: u8 = 7;
const FIELD_SIGNATURE: u8 = 8;
const FIELD_UNIX_FDS: u8 = 9;

fn alignment(signature: &str) -> usize {
    match signature.as_bytes().first() {
        Some(b'n' | b'q') => 2,
        Some(b'b' | b'i' | b'u' | b's' | b'o' | b'a') => 4,
        Some(b'x' | b't' | b'd' | b'(' | b'{') => 8,
        _ => 1,
    }
}

/// The end of the single complete type starting at `start`.
fn type_end(sig: &[u8], start: usize, depth: usize) -> Result<usize> {
    if depth > MAX_DEPTH {
        return protocol("signature nests too deep");
    }
    match sig.get(start) {
        None => protocol("signature ends inside a type"),
        Some(
            b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o' | b'g'
            | b'v',
        ) => Ok(start + 1),
        Some(b'a') if sig.get(start + 1) == Some(&b'{') => {
            match sig.get(start + 2) {
                Some(
                    b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o'
                    | b'g',
                ) => {}
                _ => return protocol("dictionary key is not a basic type"),
            }
            let end = type_end(sig, start + 3, depth + 1)?;
            if sig.get(end) != Some(&b'}') {
                return protocol("dictionary entry does not hold exactly a key and a value");
            }
            Ok(end + 1)
        }
        Some(b'a') => type_end(sig, start + 1, depth + 1),
        Some(b'(') => {
            let mut i = start + 1;
            if sig.get(i) == Some(&b')') {
                return protocol("empty struct in signature");
            }
            while sig.get(i) != Some(&b')') {
                i = type_end(sig, i, depth + 1)?;
            }
            Ok(i + 1)
        }
        Some(&c) => protocol(format!(
            "unsupported type code {:?} in signature",
            c as char
        )),
    }
}

/// Split a signature into its complete types, validating it.
fn split_signature(sig: &str) -> Result<Vec<&str>> {
    if sig.len() > MAX_SIGNATURE {
        return protocol(format!("signature longer than {MAX_SIGNATURE} bytes"));
    }
    let (bytes, mut types, mut i) = (sig.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let end = type_end(bytes, i, 0)?;
        types.push(&sig[i..end]);
        i = end;
    }
    Ok(types)
}

fn single_type(sig: &str) -> Result<()> {
    match split_signature(sig)?.len() {
        1 => Ok(()),
        _ => protocol(format!("{sig:?} is not a single complete type")),
    }
}

fn check_object_path(path: &str) -> Result<()> {
    let valid = path == "/"
        || (path.starts_with('/')
            && path[1..].split('/').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }));
    if valid {
        Ok(())
    } else {
        protocol(format!("{path:?} is not a valid object path"))
    }
}

/// What is between the brackets of a struct or dictionary entry signature.
fn enclosed(sig: &str) -> Result<&str> {
    match sig.get(1..sig.len().saturating_sub(1)) {
        Some(inner) if sig.len() >= 2 => Ok(inner),
        _ => protocol(format!("malformed signature {sig:?}")),
    }
}

/// Marshals little-endian. Offsets are relative to the start of `buf`, which
/// is the start of a message or an 8-aligned body, so alignment is right.
#[derive(Default)]
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn pad(&mut self, align: usize) {
        let len = self.buf.len().next_multiple_of(align);
        self.buf.resize(len, 0);
    }

    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) -> Result<()> {
        if s.contains('\0') {
            return protocol(format!("string {s:?} contains a NUL byte"));
        }
        let len = u32::try_from(s.len()).map_err(|_| Error::Protocol("string too long".into()))?;
        self.u32(len);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    fn signature(&mut self, s: &str) -> Result<()> {
        split_signature(s)?;
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<()> {
        self.pad(alignment(&v.signature()));
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::I16(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::U16(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::I32(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::U32(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::I64(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::U64(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::Double(n) => self.buf.extend_from_slice(&n.to_le_bytes()),
            Value::Str(s) => self.string(s)?,
            Value::Path(s) => {
                check_object_path(s)?;
                self.string(s)?
            }
            Value::Signature(s) => self.signature(s)?,
            Value::Array(element, items) => {
                single_type(&v.signature())?;
                let len_at = self.buf.len();
                self.u32(0);
                self.pad(alignment(element));
                let start = self.buf.len();
                for item in items {
                    if item.signature() != *element {
                        return protocol(format!(
                            "{} element in an array of {element}",
                            item.signature()
                        ));
                    }
                    self.value(item)?;
                }
                let len = self.buf.len() - start;
                if len > MAX_ARRAY {
                    return protocol(format!("array of {len} bytes exceeds the limit"));
                }
                self.buf[len_at..len_at + 4].copy_from_slice(&(len as u32).to_le_bytes());
            }
            Value::Struct(fields) => {
                if fields.is_empty() {
                    return protocol("empty struct");
                }
                for field in fields {
                    self.value(field)?;
                }
            }
            Value::DictEntry(key, value) => {
                self.value(key)?;
                self.value(value)?;
            }
            Value::Variant(inner) => {
                self.signature(&inner.signature())?;
                self.value(inner)?;
            }
        }
        Ok(())
    }
}

/// Unmarshals; offsets relative to the start of `buf` as for [`Encoder`].
struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|end| *end <= self.buf.len()) {
            Some(end) => {
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => protocol(format!(
                "message truncated: {n} bytes needed at offset {}",
                self.pos
            )),
        }
    }

    fn align(&mut self, align: usize) -> Result<()> {
        let padding = self.pos.next_multiple_of(align) - self.pos;
        if self.take(padding)?.iter().any(|b| *b != 0) {
            return protocol("non-zero alignment padding");
        }
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.align(N)?;
        let mut bytes: [u8; N] = self.take(N)?.try_into().expect("take returned N bytes");
        if self.big_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        self.fixed::<4>().map(u32::from_le_bytes)
    }

    fn text(&mut self, len: usize) -> Result<String> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return protocol("string is not NUL-terminated");
        }
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Ok(s.to_string()),
            _ => protocol("string is not valid UTF-8 without NUL bytes"),
        }
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        self.text(len)
    }

    fn signature(&mut self) -> Result<String> {
        let len = usize::from(self.take(1)?[0]);
        let sig = self.text(len)?;
        split_signature(&sig)?;
        Ok(sig)
    }

    /// Decode one value of the single complete type `sig` (already validated).
    fn value(&mut self, sig: &str, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return protocol("value nests too deep");
        }
        Ok(match sig.as_bytes().first() {
            Some(b'y') => Value::Byte(self.take(1)?[0]),
            Some(b'b') => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return protocol(format!("boolean with value {n}")),
            },
            Some(b'n') => Value::I16(i16::from_le_bytes(self.fixed()?)),
            Some(b'q') => Value::U16(u16::from_le_bytes(self.fixed()?)),
            Some(b'i') => Value::I32(i32::from_le_bytes(self.fixed()?)),
            Some(b'u') => Value::U32(self.u32()?),
            Some(b'x') => Value::I64(i64::from_le_bytes(self.fixed()?)),
            Some(b't') => Value::U64(u64::from_le_bytes(self.fixed()?)),
            Some(b'd') => Value::Double(f64::from_le_bytes(self.fixed()?)),
            Some(b's') => Value::Str(self.string()?),
            Some(b'o') => Value::Path(self.string()?),
            Some(b'g') => Value::Signature(self.signature()?),
            Some(b'a') => {
                let element = &sig[1..];
                let len = self.u32()? as usize;
                if len > MAX_ARRAY {
                    return protocol(format!("array of {len} bytes exceeds the limit"));
                }
                self.align(alignment(element))?;
                let end = self.pos + len;
                if end > self.buf.len() {
                    return protocol(format!(
                        "array of {len} bytes runs past the end of the message"
                    ));
                }
                let mut items = Vec::new();
                // Every element takes at least one byte, so this ends.
                while self.pos < end {
                    items.push(self.value(element, depth + 1)?);
                }
                if self.pos != end {
                    return protocol("array element overruns the array's length");
                }
                Value::Array(element.to_string(), items)
            }
            Some(b'(') => {
                self.align(8)?;
                let fields = split_signature(enclosed(sig)?)?;
                Value::Struct(
                    fields
                        .iter()
                        .map(|f| self.value(f, depth + 1))
                        .collect::<Result<_>>()?,
                )
            }
            Some(b'{') => {
                self.align(8)?;
                match split_signature(enclosed(sig)?)?.as_slice() {
                    [key, value] => {
                        let key = self.value(key, depth + 1)?;
                        Value::DictEntry(Box::new(key), Box::new(self.value(value, depth + 1)?))
                    }
                    _ => return protocol(format!("malformed dictionary entry {sig}")),
                }
            }
            Some(b'v') => {
                let inner = self.signature()?;
                single_type(&inner)?;
                Value::Variant(Box::new(self.value(&inner, depth + 1)?))
            }
            _ => return protocol(format!("unsupported type {sig:?}")),
        })
    }
}

/// A whole message, as sent or received. `body`'s signature is derived.
#[derive(Debug, Default, PartialEq)]
struct Message {
    kind: u8,
    serial: u32,
    path: Option<String>,
    interface: Option<String>,
    member: Option<String>,
    error_name: Option<String>,
    reply_serial: Option<u32>,
    destination: Option<String>,
    body: Vec<Value>,
}

/// The total length of the message whose 16-byte fixed header is `fixed`.
fn message_len(fixed: &[u8]) -> Result<usize> {
    let word = |at: usize| -> Result<usize> {
        let bytes: [u8; 4] = fixed[at..at + 4].try_into().expect("4 bytes");
        match fixed[0] {
            b'l' => Ok(u32::from_le_bytes(bytes) as usize),
            b'B' => Ok(u32::from_be_bytes(bytes) as usize),
            other => protocol(format!("unknown endianness marker {other:#x}")),
        }
    };
    let (body, fields) = (word(4)?, word(12)?);
    if fields > MAX_ARRAY || body > MAX_MESSAGE {
        return protocol("message exceeds the size limit");
    }
    let total = (16 + fields).next_multiple_of(8) + body;
    if total > MAX_MESSAGE {
        return protocol(format!("message of {total} bytes exceeds the size limit"));
    }
    Ok(total)
}

impl Message {
    fn encode(&self) -> Result<Vec<u8>> {
        let mut body = Encoder::default();
        for value in &self.body {
            body.value(value)?;
        }
        let body_signature: String = self.body.iter().map(Value::signature).collect();

        let text = |code: u8, v: &Option<String>, wrap: fn(String) -> Value| {
            v.clone().map(|s| (code, wrap(s)))
        };
        let fields: Vec<(u8, Value)> = [
            text(FIELD_PATH, &self.path, Value::Path),
            text(FIELD_INTERFACE, &self.interface, Value::Str),
            text(FIELD_MEMBER, &self.member, Value::Str),
            text(FIELD_ERROR_NAME, &self.error_name, Value::Str),
            self.reply_serial
                .map(|s| (FIELD_REPLY_SERIAL, Value::U32(s))),
            text(FIELD_DESTINATION, &self.destination, Value::Str),
            (!body_signature.is_empty())
                .then_some((FIELD_SIGNATURE, Value::Signature(body_signature))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let fields = fields
            .into_iter()
            .map(|(code, v)| Value::Struct(vec![Value::Byte(code), Value::Variant(Box::new(v))]))
            .collect();

        let mut msg = Encoder::default();
        msg.buf.extend_from_slice(&[b'l', self.kind, 0, 1]);
        let body_len =
            u32::try_from(body.buf.len()).map_err(|_| Error::Protocol("body too long".into()))?;
        msg.u32(body_len);
        msg.u32(self.serial);
        msg.value(&Value::Array("(yv)".into(), fields))?;
        msg.pad(8);
        msg.buf.extend_from_slice(&body.buf);
        if msg.buf.len() > MAX_MESSAGE {
            return protocol("message exceeds the size limit");
        }
        Ok(msg.buf)
    }

    /// Decode one complete message (exactly `message_len` bytes).
    fn decode(buf: &[u8]) -> Result<Message> {
        if buf.len() < 16 || message_len(&buf[..16])? != buf.len() {
            return protocol("message length does not match its header");
        }
        let (kind, version) = (buf[1], buf[3]);
        if version != 1 {
            return protocol(format!("protocol version {version}"));
        }
        let mut d = Decoder {
            buf,
            pos: 4,
            big_endian: buf[0] == b'B',
        };
        let body_len = d.u32()? as usize;
        let mut msg = Message {
            kind,
            serial: d.u32()?,
            ..Message::default()
        };
        let mut signature = String::new();
        let Value::Array(_, fields) = d.value("a(yv)", 0)? else {
            return protocol("header fields are not an array");
        };
        for field in fields {
            let Value::Struct(parts) = field else {
                return protocol("header field is not a struct");
            };
            let [Value::Byte(code), Value::Variant(v)] = parts.as_slice() else {
                return protocol("header field is not a (yv) struct");
            };
            match (*code, v.as_ref().clone()) {
                (FIELD_PATH, Value::Path(s)) => msg.path = Some(s),
                (FIELD_INTERFACE, Value::Str(s)) => msg.interface = Some(s),
                (FIELD_MEMBER, Value::Str(s)) => msg.member = Some(s),
                (FIELD_ERROR_NAME, Value::Str(s)) => msg.error_name = Some(s),
                (FIELD_REPLY_SERIAL, Value::U32(s)) => msg.reply_serial = Some(s),
                (FIELD_DESTINATION, Value::Str(s)) => msg.destination = Some(s),
                (FIELD_SIGNATURE, Value::Signature(s)) => signature = s,
                (FIELD_SENDER, Value::Str(_)) => {}
                (FIELD_UNIX_FDS, Value::U32(0)) => {}
                (FIELD_UNIX_FDS, _) => {
                    return protocol("message carries unix fds, which were not negotiated")
                }
                (code @ FIELD_PATH..=FIELD_SIGNATURE, v) => {
                    return protocol(format!("header field {code} has type {}", v.signature()))
                }
                // Unknown fields must be ignored.
                _ => {}
            }
        }
        d.align(8)?;
        if d.pos + body_len != buf.len() {
            return protocol("body length does not match the message length");
        }
        // The body starts 8-aligned, so decoding it on its own keeps alignment.
        let mut body = Decoder {
            buf: &buf[d.pos..],
            pos: 0,
            big_endian: d.big_endian,
        };
        for ty in split_signature(&signature)? {
            msg.body.push(body.value(ty, 0)?);
        }
        if body.pos != body.buf.len() {
            return protocol(format!(
                "{} bytes left after a body of signature {signature:?}",
                body.buf.len() - body.pos
            ));
        }
        Ok(msg)
    }
}

/// A connection to a D-Bus peer (systemd's private socket).
pub struct Connection {
    stream: UnixStream,
    /// Bytes read but not yet consumed (a partial message after a timeout).
    input: Vec<u8>,
    serial: u32,
    signals: VecDeque<Signal>,
}

fn connect_socket(path: &Path, timeout: Duration) -> Result<UnixStream> {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let what = || format!("connect to {}", path.display());
    let io = |e: nix::Error| Error::Io {
        what: what(),
        source: e.into(),
    };
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io)?;
    // A blocking connect on a unix socket waits for room in the listener's
    // backlog for at most the send timeout.
    let timeval = nix::sys::time::TimeVal::new(
        timeout.as_secs().try_into().unwrap_or(i64::MAX),
        timeout.subsec_micros().into(),
    );
    setsockopt(&fd, sockopt::SendTimeout, &timeval).map_err(io)?;
    match connect(fd.as_raw_fd(), &UnixAddr::new(path).map_err(io)?) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(nix::Error::EAGAIN | nix::Error::EINPROGRESS) => Err(Error::Timeout(what())),
        Err(e) => Err(io(e)),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Connection {
    /// Connect to the socket at `path` and authenticate, within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Connection> {
        let deadline = Instant::now() + timeout;
        Connection::authenticate(connect_socket(path, timeout)?, deadline)
    }

    fn authenticate(stream: UnixStream, deadline: Instant) -> Result<Connection> {
        let mut conn = Connection {
            stream,
            input: Vec::new(),
            serial: 0,
            signals: VecDeque::new(),
        };
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        // The leading NUL is where a client could send credentials over
        // SCM_CREDENTIALS; the server reads them from SO_PEERCRED instead.
        //
        // BEGIN goes in the same write, before the OK, as sd-bus clients
        // (systemctl) do. Sent after the OK it may reach systemd in one read
        // with our first message, and systemd 252's sd-bus then leaves that
        // message in its buffer unprocessed until more bytes arrive: the call
        // hangs. Pipelined, BEGIN is handled when the OK has been written, so
        // our first message (sent once we read the OK) arrives on its own.
        let auth = format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n");
        conn.send(auth.as_bytes(), deadline)?;
        let reply = conn.read_line(deadline)?;
        match reply.strip_prefix("OK ") {
            Some(guid) if guid.len() == 32 && guid.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            _ => {
                return Err(Error::Auth(format!(
                    "server answered {reply:?} to AUTH EXTERNAL for uid {uid}"
                )))
            }
        }
        Ok(conn)
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<()> {
        let what = "sending a message";
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout(what.into()));
        }
        self.stream
            .set_write_timeout(Some(remaining))
            .and_then(|()| self.stream.write_all(bytes))
            .map_err(|e| match is_timeout(&e) {
                true => Error::Timeout(what.into()),
                false => Error::Io {
                    what: what.into(),
                    source: e,
                },
            })
    }

    /// Read until `input` holds at least `want` bytes.
    fn fill(&mut self, want: usize, deadline: Instant, what: &str) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.input.len() < want {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout(what.into()));
            }
            let read = self
                .stream
                .set_read_timeout(Some(remaining))
                .and_then(|()| self.stream.read(&mut chunk));
            match read {
                Ok(0) => {
                    let source = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    );
                    return Err(Error::Io {
                        what: format!("waiting for {what}"),
                        source,
                    });
                }
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        what: format!("waiting for {what}"),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String> {
        const MAX_LINE: usize = 16 * 1024;
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.input[..end]).into_owned();
                self.input.drain(..end + 2);
                return Ok(line);
            }
            if self.input.len() > MAX_LINE {
                return Err(Error::Auth("over-long line from the server".into()));
            }
            self.fill(self.input.len() + 1, deadline, "the authentication reply")?;
        }
    }

    fn read_message(&mut self, deadline: Instant, what: &str) -> Result<Message> {
        self.fill(16, deadline, what)?;
        let len = message_len(&self.input[..16])?;
        self.fill(len, deadline, what)?;
        let msg = Message::decode(&self.input[..len]);
        self.input.drain(..len);
        msg
    }

    fn buffer_signal(&mut self, msg: Message) {
        let (Some(path), Some(interface), Some(member)) = (msg.path, msg.interface, msg.member)
        else {
            return; // not a valid signal; nothing could match it
        };
        if self.signals.len() == MAX_BUFFERED_SIGNALS {
            self.signals.pop_front();
        }
        self.signals.push_back(Signal {
            path,
            interface,
            member,
            args: msg.body,
        });
    }

    /// Call `interface.member` on `path` and wait until `deadline` for the
    /// reply's values. An ERROR reply is [`Error::Remote`]. Signals that
    /// arrive meanwhile are kept for [`Connection::next_signal`].
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[Value],
        deadline: Instant,
    ) -> Result<Vec<Value>> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let call = Message {
            kind: METHOD_CALL,
            serial,
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
            destination: Some(destination.into()),
            body: args.to_vec(),
            ..Message::default()
        };
        self.send(&call.encode()?, deadline)?;
        let what = format!("the reply to {interface}.{member}");
        loop {
            let msg = self.read_message(deadline, &what)?;
            match msg.kind {
                SIGNAL => self.buffer_signal(msg),
                METHOD_RETURN if msg.reply_serial == Some(serial) => return Ok(msg.body),
                ERROR if msg.reply_serial == Some(serial) => {
                    return Err(Error::Remote {
                        name: msg.error_name.unwrap_or_default(),
                        message: msg
                            .body
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                }
                // Replies to calls we gave up on; calls to us (we serve nothing).
                _ => {}
            }
        }
    }

    /// The next signal: one kept while waiting for a reply, or the next to
    /// arrive before `deadline`.
    pub fn next_signal(&mut self, deadline: Instant) -> Result<Signal> {
        loop {
            if let Some(signal) = self.signals.pop_front() {
                return Ok(signal);
            }
            let msg = self.read_message(deadline, "a signal")?;
            if msg.kind == SIGNAL {
                self.buffer_signal(msg);
            }
        }
    }

    /// Forget the signals kept so far.
    pub fn discard_signals(&mut self) {
        self.signals.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn start_transient_unit_call() -> Message {
        let pids = Value::Array("u".into(), vec![Value::U32(1), Value::U32(2)]);
        let prop = Value::Struct(vec![
            Value::Str("PIDs".into()),
            Value::Variant(Box::new(pids)),
        ]);
        Message {
            kind: METHOD_CALL,
            serial: 1,
            path: Some("/o".into()),
            interface: Some("i.f".into()),
            member: Some("M".into()),
            destination: Some("d.e".into()),
            body: vec![
                Value::Str("a.scope".into()),
                Value::Str("replace".into()),
                Value::Array("(sv)".into(), vec![prop]),
                Value::Array("(sa(sv))".into(), vec![]),
            ],
            ..Message::default()
        }
    }

    /// Worked out by hand from the specification's marshalling rules.
    #[test]
    fn method_call_golden_bytes() {
        #[rustfmt::skip]
        let header: &[u8] = &[
            b'l', 1, 0, 1, 64, 0, 0, 0, 1, 0, 0, 0, // little-endian call, body 64, serial 1
            86, 0, 0, 0,                            // header fields: 86 bytes from offset 16
            1, 1, b'o', 0, 2, 0, 0, 0, b'/', b'o', 0, 0, 0, 0, 0, 0, // PATH "/o", pad to 32
            2, 1, b's', 0, 3, 0, 0, 0, b'i', b'.', b'f', 0, 0, 0, 0, 0, // INTERFACE "i.f", pad to 48
            3, 1, b's', 0, 1, 0, 0, 0, b'M', 0, 0, 0, 0, 0, 0, 0,   // MEMBER "M", pad to 64
            6, 1, b's', 0, 3, 0, 0, 0, b'd', b'.', b'e', 0, 0, 0, 0, 0, // DESTINATION "d.e", pad to 80
            8, 1, b'g', 0, 16,                      // SIGNATURE, 16 characters
        ];
        #[rustfmt::skip]
        let body: &[u8] = &[
            7, 0, 0, 0, b'a', b'.', b's', b'c', b'o', b'p', b'e', 0, // s "a.scope"
            7, 0, 0, 0, b'r', b'e', b'p', b'l', b'a', b'c', b'e', 0, // s "replace"
            28, 0, 0, 0, 0, 0, 0, 0,                // a(sv): 28 bytes, elements from 32
            4, 0, 0, 0, b'P', b'I', b'D', b's', 0,  // s "PIDs"
            2, b'a', b'u', 0, 0, 0, 0,              // v "au", pad to 48
            8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,     // au [1, 2]
            0, 0, 0, 0,                             // a(sa(sv)) empty, already 8-aligned
        ];
        let mut expected = header.to_vec();
        expected.extend_from_slice(b"ssa(sv)a(sa(sv))\0");
        expected.extend_from_slice(&[0, 0]); // header 102 bytes, body at 104
        expected.extend_from_slice(body);

        let msg = start_transient_unit_call();
        let bytes = msg.encode().unwrap();
        assert_eq!(bytes, expected);
        assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }

    fn round_trip(body: Vec<Value>) {
        let msg = Message {
            kind: METHOD_RETURN,
            serial: 7,
            reply_serial: Some(3),
            body,
            ..Message::default()
        };
        let bytes = msg.encode().unwrap();
        assert_eq!(bytes.len(), message_len(&bytes[..16]).unwrap());
        assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }

    fn variant(v: Value) -> Value {
        Value::Variant(Box::new(v))
    }

    #[test]
    fn values_survive_a_round_trip() {
        let dict = Value::Array(
            "{sv}".into(),
            vec![
                Value::DictEntry(
                    Box::new(Value::Str("a".into())),
                    Box::new(variant(Value::U64(u64::MAX))),
                ),
                Value::DictEntry(
                    Box::new(Value::Str("b".into())),
                    Box::new(variant(Value::Double(-1.5))),
                ),
            ],
        );
        round_trip(vec![
            Value::Byte(7),
            Value::Bool(true),
            Value::I16(-2),
            Value::U16(65535),
            Value::I32(-3),
            Value::U32(4),
            Value::I64(i64::MIN),
            Value::U64(5),
            Value::Double(0.25),
            Value::Str("héllo".into()),
            Value::Path("/org/freedesktop/systemd1/job/42".into()),
            Value::Signature("a{sv}".into()),
            dict,
            Value::Array(
                "ay".into(),
                vec![
                    Value::Array("y".into(), vec![]),
                    Value::Array("y".into(), vec![Value::Byte(1)]),
                ],
            ),
            Value::Struct(vec![Value::Byte(1), Value::U64(2), Value::Str("".into())]),
            variant(variant(Value::Array(
                "(tt)".into(),
                vec![Value::Struct(vec![Value::U64(1), Value::U64(2)])],
            ))),
            Value::Array("x".into(), vec![]),
        ]);
        round_trip(vec![]);
        // PropertiesChanged, as systemd sends it.
        round_trip(vec![
            Value::Str("org.freedesktop.systemd1.Unit".into()),
            Value::Array("{sv}".into(), vec![]),
            Value::Array("s".into(), vec![Value::Str("ActiveState".into())]),
        ]);
    }

    #[test]
    fn ill_typed_values_are_not_encoded() {
        let mixed = Value::Array("u".into(), vec![Value::U32(1), Value::Str("x".into())]);
        let bad_path = Value::Path("no/slash".into());
        let bad_sig = Value::Array("uu".into(), vec![]);
        let nul = Value::Str("a\0b".into());
        for body in [mixed, bad_path, Value::Struct(vec![]), bad_sig, nul] {
            let msg = Message {
                kind: METHOD_CALL,
                serial: 1,
                body: vec![body.clone()],
                ..Message::default()
            };
            assert!(matches!(msg.encode(), Err(Error::Protocol(_))), "{body:?}");
        }
        assert!(single_type("{sv}").is_err());
    }

    /// Peers may send big-endian messages; we decode them too.
    #[test]
    fn big_endian_is_decoded() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            b'B', 2, 0, 1, 0, 0, 0, 4, 0, 0, 0, 9, 0, 0, 0, 15, // return, body 4, serial 9
            5, 1, b'u', 0, 0, 0, 0, 1,                           // REPLY_SERIAL 1
            8, 1, b'g', 0, 1, b'u', 0, 0,                        // SIGNATURE "u", pad to 32
            0, 0, 1, 2,                                          // u 258
        ];
        let msg = Message::decode(bytes).unwrap();
        assert_eq!(
            (msg.kind, msg.serial, msg.reply_serial),
            (METHOD_RETURN, 9, Some(1))
        );
        assert_eq!(msg.body, [Value::U32(258)]);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = start_transient_unit_call().encode().unwrap();
        for len in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..len]).is_err(),
                "accepted {len} of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = start_transient_unit_call().encode().unwrap();
        // Flip bytes one at a time, and in pseudo-random bunches.
        for i in 0..good.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] ^= x;
                if let Ok(len) = message_len(&bytes[..16]) {
                    bytes.resize(len.min(1 << 16), 0);
                }
                let _ = Message::decode(&bytes);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % bytes.len() as u64) as usize;
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = Message::decode(&bytes);
        }
    }

    fn body_with(signature: &str, body: &[u8]) -> Vec<u8> {
        let msg = Message {
            kind: METHOD_RETURN,
            serial: 1,
            reply_serial: Some(1),
            body: vec![Value::Signature("g".into())], // placeholder of the right shape
            ..Message::default()
        };
        let mut bytes = msg.encode().unwrap();
        // Replace the SIGNATURE field value and body by hand.
        let sig_at = bytes.windows(4).position(|w| w == [8, 1, b'g', 0]).unwrap() + 4;
        bytes.truncate(sig_at);
        bytes.push(signature.len() as u8);
        bytes.extend_from_slice(signature.as_bytes());
        bytes.push(0);
        let fields_len = (bytes.len() - 16) as u32;
        bytes[12..16].copy_from_slice(&fields_len.to_le_bytes());
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        bytes[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn hostile_bodies_are_rejected() {
        // Sanity: the helper builds valid messages.
        assert_eq!(
            Message::decode(&body_with("u", &[5, 0, 0, 0]))
                .unwrap()
                .body,
            vec![Value::U32(5)]
        );
        let cases: &[(&str, &[u8], &str)] = &[
            ("h", &[0, 0, 0, 0], "unsupported type code"),
            ("b", &[2, 0, 0, 0], "boolean"),
            ("s", &[200, 0, 0, 0, b'a', 0, 0, 0], "truncated"),
            ("s", &[1, 0, 0, 0, 0xff, 0, 0, 0], "UTF-8"),
            ("s", &[1, 0, 0, 0, b'a', b'b', 0, 0], "NUL-terminated"),
            ("au", &[0xff, 0xff, 0xff, 0x7f], "limit"),
            ("au", &[8, 0, 0, 0, 1, 0, 0, 0], "past the end"),
            ("ay", &[3, 0, 0, 0, 1, 2], "past the end"),
            ("at", &[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], "truncated"),
            ("v", &[1, b'h', 0, 0, 0, 0, 0, 0], "unsupported type code"),
            (
                "v",
                &[2, b'u', b'u', 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "single complete type",
            ),
            ("(", &[], "signature ends"),
            ("()", &[], "empty struct"),
            ("a{vs}", &[0, 0, 0, 0], "basic type"),
            ("a{sss}", &[0, 0, 0, 0], "exactly a key"),
            ("{ss}", &[], "unsupported type code"),
            ("u", &[1, 0, 0, 0, 9, 9, 9, 9], "left after"),
            ("yu", &[1, 9, 9, 9, 5, 0, 0, 0], "padding"),
        ];
        for (sig, body, expected) in cases {
            match Message::decode(&body_with(sig, body)) {
                Err(Error::Protocol(m)) => {
                    assert!(m.contains(expected), "{sig}: {m:?} lacks {expected:?}")
                }
                other => panic!("{sig} {body:?}: {other:?}"),
            }
        }
        // Variants nested beyond the limit.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[1, b'v', 0]);
        }
        deep.extend_from_slice(&[1, b'y', 0, 1]);
        match Message::decode(&body_with("v", &deep)) {
            Err(Error::Protocol(m)) => assert!(m.contains("too deep"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(split_signature(&"a".repeat(100).to_string()).is_err());
        // Unvalidated signatures reaching the decoder are errors, not panics.
        for sig in ["(", "{", ")", "", "h"] {
            let mut d = Decoder {
                buf: &[0; 8],
                pos: 0,
                big_endian: false,
            };
            assert!(d.value(sig, 0).is_err(), "{sig}");
        }
        assert!(split_signature(&format!("{}u{}", "(".repeat(70), ")".repeat(70))).is_err());
    }

    const MANAGER: &str = "org.freedesktop.systemd1.Manager";

    fn job_removed(job: &str) -> Vec<u8> {
        let args = fake::job_removed_args(job, "a.scope", "done");
        fake::signal_bytes("/org/freedesktop/systemd1", MANAGER, "JobRemoved", args)
    }

    #[test]
    fn talks_to_a_fake_peer() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = thread::spawn(move || {
            let mut peer = fake::Peer::new(theirs);
            peer.accept_auth();

            // A call whose reply comes after a signal, after a stale reply.
            let call = peer.read_call();
            assert_eq!(call.member, "StartTransientUnit");
            assert_eq!(
                call.destination.as_deref(),
                Some("org.freedesktop.systemd1")
            );
            assert_eq!(call.args, [Value::Str("a.scope".into())]);
            peer.send_bytes(&job_removed("/org/freedesktop/systemd1/job/1"));
            peer.reply_to(call.serial + 1000, vec![]);
            peer.reply(
                &call,
                vec![Value::Path("/org/freedesktop/systemd1/job/1".into())],
            );

            let call = peer.read_call();
            peer.error(
                &call,
                "org.freedesktop.systemd1.NoSuchUnit",
                "Unit b.scope not loaded.",
            );
            // A signal sent in pieces.
            let bytes = job_removed("/org/freedesktop/systemd1/job/2");
            peer.send_bytes(&bytes[..10]);
            thread::sleep(Duration::from_millis(50));
            peer.send_bytes(&bytes[10..]);
            peer.read_exact(1); // hold the socket open until the client is done
        });

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::authenticate(ours, deadline).unwrap();
        let args = [Value::Str("a.scope".into())];
        let reply = conn
            .call(
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "StartTransientUnit",
                &args,
                deadline,
            )
            .unwrap();
        assert_eq!(
            reply,
            vec![Value::Path("/org/freedesktop/systemd1/job/1".into())]
        );
        let signal = conn.next_signal(deadline).unwrap();
        assert_eq!(
            (signal.member.as_str(), &signal.args[1]),
            (
                "JobRemoved",
                &Value::Path("/org/freedesktop/systemd1/job/1".into())
            )
        );

        let err = conn
            .call("d", "/", "i.f", "StopUnit", &[], deadline)
            .unwrap_err();
        match &err {
            Error::Remote { name, message } => {
                assert_eq!(
                    (name.as_str(), message.as_str()),
                    (
                        "org.freedesktop.systemd1.NoSuchUnit",
                        "Unit b.scope not loaded."
                    )
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "org.freedesktop.systemd1.NoSuchUnit: Unit b.scope not loaded."
        );

        let signal = conn.next_signal(deadline).unwrap();
        assert_eq!(
            signal.args[1],
            Value::Path("/org/freedesktop/systemd1/job/2".into())
        );
        let started = Instant::now();
        let err = conn
            .next_signal(Instant::now() + Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        conn.stream.write_all(b"x").unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn a_rejected_authentication_is_an_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = thread::spawn(move || {
            let mut peer = fake::Peer::new(theirs);
            peer.read_line();
            peer.send_bytes(b"REJECTED EXTERNAL\r\n");
        });
        let err = Connection::authenticate(ours, Instant::now() + Duration::from_secs(10))
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::Auth(m) if m.contains("REJECTED")),
            "{err:?}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let err = Connection::authenticate(ours, Instant::now() + Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    }

    #[test]
    fn connecting_to_a_missing_socket_names_it() {
        let err = Connection::connect(
            Path::new("/nonexistent/ferrum-dbus"),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("/nonexistent/ferrum-dbus"),
            "{err}"
        );
    }
}

/// A fake D-Bus peer, systemd's end of a connection, for the tests here and
/// in the client.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// A method call as the peer received it.
    pub struct Call {
        pub serial: u32,
        pub path: String,
        pub interface: String,
        pub member: String,
        pub destination: Option<String>,
        pub args: Vec<Value>,
    }

    pub struct Peer {
        stream: UnixStream,
        serial: u32,
    }

    pub fn job_removed_args(job: &str, unit: &str, result: &str) -> Vec<Value> {
        vec![
            Value::U32(1),
            Value::Path(job.into()),
            Value::Str(unit.into()),
            Value::Str(result.into()),
        ]
    }

    pub fn signal_bytes(path: &str, interface: &str, member: &str, args: Vec<Value>) -> Vec<u8> {
        let msg = Message {
            kind: SIGNAL,
            serial: 1,
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
            body: args,
            ..Message::default()
        };
        msg.encode().unwrap()
    }

    impl Peer {
        pub fn new(stream: UnixStream) -> Peer {
            Peer {
                stream,
                serial: 1000,
            }
        }

        pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
            let mut buf = vec![0; n];
            self.stream.read_exact(&mut buf).unwrap();
            buf
        }

        pub fn read_line(&mut self) -> Vec<u8> {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                line.extend(self.read_exact(1));
            }
            line
        }

        pub fn send_bytes(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).unwrap();
        }

        /// Expect EXTERNAL authentication as our euid, then BEGIN; accept.
        pub fn accept_auth(&mut self) {
            let uid = nix::unistd::geteuid().as_raw().to_string();
            let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                self.read_line(),
                format!("\0AUTH EXTERNAL {hex}\r\n").into_bytes()
            );
            assert_eq!(self.read_line(), b"BEGIN\r\n");
            self.send_bytes(b"OK 0123456789abcdef0123456789abcdef\r\n");
        }

        pub fn read_call(&mut self) -> Call {
            let mut bytes = self.read_exact(16);
            let len = message_len(&bytes).unwrap();
            bytes.extend(self.read_exact(len - 16));
            let msg = Message::decode(&bytes).unwrap();
            assert_eq!(msg.kind, METHOD_CALL);
            Call {
                serial: msg.serial,
                path: msg.path.unwrap(),
                interface: msg.interface.unwrap(),
                member: msg.member.unwrap(),
                destination: msg.destination,
                args: msg.body,
            }
        }

        fn send(&mut self, mut msg: Message) {
            self.serial += 1;
            msg.serial = self.serial;
            self.send_bytes(&msg.encode().unwrap());
        }

        pub fn reply_to(&mut self, serial: u32, args: Vec<Value>) {
            let kind = METHOD_RETURN;
            self.send(Message {
                kind,
                reply_serial: Some(serial),
                body: args,
                ..Message::default()
            });
        }

        pub fn reply(&mut self, call: &Call, args: Vec<Value>) {
            self.reply_to(call.serial, args);
        }

        pub fn error(&mut self, call: &Call, name: &str, message: &str) {
            self.send(Message {
                kind: ERROR,
                reply_serial: Some(call.serial),
                error_name: Some(name.into()),
                body: vec![Value::Str(message.into())],
                ..Message::default()
            });
        }

        pub fn signal(&mut self, path: &str, interface: &str, member: &str, args: Vec<Value>) {
            self.send_bytes(&signal_bytes(path, interface, member, args));
        }
    }
}
