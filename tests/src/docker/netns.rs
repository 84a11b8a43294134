//! Reaching dockerd's network namespace from the test: published ports are
//! served on its loopback, not the host's.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// GET `path` from `127.0.0.1:port` in `pid`'s network namespace: the whole
/// response. A thread of its own enters the namespace (setns changes only
/// the calling thread's) and ends with the request, so no test thread is
/// ever left in it.
pub(super) fn http_get(pid: i32, port: u16, path: &str) -> Result<String> {
    let ns = File::open(format!("/proc/{pid}/ns/net")).with_context(|| format!("opening the network namespace of {pid}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    thread::scope(|scope| {
        scope
            .spawn(|| -> Result<String> {
                setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into dockerd's network namespace")?;
                let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT)
                    .with_context(|| format!("connecting to {address} in dockerd's network namespace"))?;
                stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
                stream.write_all(request.as_bytes())?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response).with_context(|| format!("reading the response from {address}"))?;
                Ok(String::from_utf8_lossy(&response).into_owned())
            })
            .join()
            .map_err(|_| anyhow!("the HTTP thread panicked"))?
    })
}
