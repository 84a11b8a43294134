//! The parent <-> init channel: length-prefixed JSON over a Unix stream socket.
//!
//! The socket is close-on-exec in init, so after `Start` the parent reads either
//! an error message (the `execve` failed) or EOF (the user process is running).

use serde::{de::DeserializeOwned, Serialize};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

impl Channel {
    /// Pass an fd (e.g. a console's master) as one byte with SCM_RIGHTS; on a
    /// stream socket it arrives in order with the messages around it.
    pub(crate) fn send_fd(&mut self, fd: RawFd) -> io::Result<()> {
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(self.stream.as_raw_fd(), &[IoSlice::new(&[0])], &cmsg, MsgFlags::empty(), None)?;
        Ok(())
    }

    pub(crate) fn recv_fd(&mut self) -> io::Result<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(self.stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us.
                    return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "expected a file descriptor"))
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

    #[test]
    fn fds_travel_between_messages() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        a.send(&1u32).unwrap();
        a.send_fd(file.as_raw_fd()).unwrap();
        a.send(&2u32).unwrap();
        assert_eq!(b.recv::<u32>().unwrap(), Some(1));
        let got = std::fs::File::from(b.recv_fd().unwrap());
        assert!(got.metadata().unwrap().len() == 0, "procfs file");
        assert_eq!(b.recv::<u32>().unwrap(), Some(2));
    }
}
