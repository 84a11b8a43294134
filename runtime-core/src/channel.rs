//! The parent <-> init channel: length-prefixed JSON over a Unix stream socket.
//!
//! The socket is close-on-exec in init, so after `Start` the parent reads either
//! an error message (the `execve` failed) or EOF (the user process is running).

use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// Largest message accepted; a spec is far smaller, this only bounds a bad peer.
const MAX_MESSAGE: usize = 16 << 20;

pub(crate) struct Channel {
    stream: UnixStream,
}

impl Channel {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self { stream }
    }

    pub(crate) fn send<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        let body = serde_json::to_vec(msg)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)
    }

    /// Receive one message; `Ok(None)` on a clean EOF before any byte.
    pub(crate) fn recv<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "message too large"));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        serde_json::from_slice(&body).map(Some).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        a.send(&vec!["x".to_string(), "y".to_string()]).unwrap();
        let got: Vec<String> = b.recv().unwrap().unwrap();
        assert_eq!(got, ["x", "y"]);
        drop(a);
        assert!(b.recv::<Vec<String>>().unwrap().is_none());
    }
}
