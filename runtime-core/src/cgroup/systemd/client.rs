//! The org.freedesktop.systemd1 calls the systemd cgroup driver makes, over
//! the manager's private socket.
//!
//! Unit changes are jobs: a call like StartTransientUnit returns the job's
//! object path at once, and the outcome comes later in a `JobRemoved` signal
//! (possibly even before the reply, which is why [`dbus::Connection`] keeps
//! signals that arrive while a call waits).

use super::dbus::{self, Connection, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// The error systemd answers for a unit it has not loaded.
pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// How long one operation, call and job, may take; runc allows 30 s too.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("systemd at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: dbus::Error,
    },

    #[error("systemd unit {unit}: {action}: {source}")]
    Call {
        unit: String,
        action: &'static str,
        #[source]
        source: dbus::Error,
    },

    #[error("systemd unit {unit}: {action}: job {job} finished with result \"{result}\"")]
    JobFailed {
        unit: String,
        action: &'static str,
        job: String,
        result: String,
    },
}

impl Error {
    /// The D-Bus error name systemd answered with, if it answered with one.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            Error::Connect {
                source: dbus::Error::Remote { name, .. },
                ..
            }
            | Error::Call {
                source: dbus::Error::Remote { name, .. },
                ..
            } => Some(name),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to systemd's manager.
pub struct Systemd {
    conn: Connection,
}

/// `props` as the `a(sv)` systemd takes.
fn property_array(props: Vec<(String, Value)>) -> Value {
    let items = props
        .into_iter()
        .map(|(name, value)| Value::Struct(vec![Value::Str(name), Value::Variant(Box::new(value))]))
        .collect();
    Value::Array("(sv)".into(), items)
}

fn unexpected<T>(reply: &[Value]) -> dbus::Result<T> {
    let signature: String = reply.iter().map(Value::signature).collect();
    Err(dbus::Error::Protocol(format!(
        "unexpected reply of signature {signature:?}"
    )))
}

impl Systemd {
    /// Connect to the manager at `socket` (`/run/systemd/private`: root only).
    pub fn connect(socket: &Path) -> Result<Systemd> {
        let deadline = Instant::now() + TIMEOUT;
        let wrap = |source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        };
        let mut conn = Connection::connect(socket, TIMEOUT).map_err(wrap)?;
        // Private connections get every signal anyway; Subscribe keeps us
        // right should this ever run over the bus, where it is required.
        conn.call(
            DESTINATION,
            MANAGER_PATH,
            MANAGER,
            "Subscribe",
            &[],
            deadline,
        )
        .map_err(wrap)?;
        Ok(Systemd { conn })
    }

    fn manager(
        &mut self,
        member: &str,
        args: &[Value],
        deadline: Instant,
    ) -> dbus::Result<Vec<Value>> {
        self.conn
            .call(DESTINATION, MANAGER_PATH, MANAGER, member, args, deadline)
    }

    /// Run a Manager method that queues a job and wait for the job to finish.
    fn run_job(
        &mut self,
        unit: &str,
        action: &'static str,
        member: &str,
        args: &[Value],
    ) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        let wrap = |source| Error::Call {
            unit: unit.to_string(),
            action,
            source,
        };
        // Earlier signals cannot be about the job this call creates.
        self.conn.discard_signals();
        let job = match self
            .manager(member, args, deadline)
            .map_err(wrap)?
            .as_slice()
        {
            [Value::Path(job)] => job.clone(),
            other => return unexpected(other).map_err(wrap),
        };
        loop {
            let signal = self.conn.next_signal(deadline).map_err(wrap)?;
            let (path, interface) = (signal.path.as_str(), signal.interface.as_str());
            if (path, interface, signal.member.as_str()) != (MANAGER_PATH, MANAGER, "JobRemoved") {
                continue;
            }
            if let [Value::U32(_), Value::Path(removed), Value::Str(_), Value::Str(result)] =
                signal.args.as_slice()
            {
                if *removed == job {
                    return match result.as_str() {
                        "done" => Ok(()),
                        _ => Err(Error::JobFailed {
                            unit: unit.to_string(),
                            action,
                            job,
                            result: result.clone(),
                        }),
                    };
                }
            }
        }
    }

    /// Create and start the transient unit `name` (a scope or slice) with
    /// `properties`, waiting until systemd has started it.
    pub fn start_transient_unit(
        &mut self,
        name: &str,
        properties: Vec<(String, Value)>,
    ) -> Result<()> {
        let args = [
            Value::Str(name.into()),
            Value::Str("replace".into()),
            property_array(properties),
            // No auxiliary units.
            Value::Array("(sa(sv))".into(), Vec::new()),
        ];
        self.run_job(name, "start transient unit", "StartTransientUnit", &args)
    }

    /// Stop `name` and wait until it is stopped; a unit systemd does not
    /// know (already gone, or never there) counts as stopped.
    pub fn stop_unit(&mut self, name: &str) -> Result<()> {
        let args = [Value::Str(name.into()), Value::Str("replace".into())];
        match self.run_job(name, "stop", "StopUnit", &args) {
            Err(e) if e.remote_name() == Some(NO_SUCH_UNIT) => Ok(()),
            other => other,
        }
    }

    /// Change properties of `name`; `runtime` makes the change last only
    /// until the next reboot (transient units are runtime-only anyway).
    pub fn set_unit_properties(
        &mut self,
        name: &str,
        runtime: bool,
        properties: Vec<(String, Value)>,
    ) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        let args = [
            Value::Str(name.into()),
            Value::Bool(runtime),
            property_array(properties),
        ];
        self.manager("SetUnitProperties", &args, deadline)
            .map(drop)
            .map_err(|source| Error::Call {
                unit: name.to_string(),
                action: "set properties",
                source,
            })
    }

    /// The cgroup of `name` relative to the cgroup root systemd manages
    /// (e.g. `/system.slice/foo.scope`); empty while the unit has none.
    pub fn control_group(&mut self, name: &str) -> Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        let wrap = |source| Error::Call {
            unit: name.to_string(),
            action: "get its control group",
            source,
        };
        let unit_path = match self
            .manager("GetUnit", &[Value::Str(name.into())], deadline)
            .map_err(wrap)?
            .as_slice()
        {
            [Value::Path(path)] => path.clone(),
            other => return unexpected(other).map_err(wrap),
        };
        // ControlGroup lives on the unit type's interface.
        let interface = match name.rsplit_once('.').map(|(_, suffix)| suffix) {
            Some("slice") => "org.freedesktop.systemd1.Slice",
            Some("service") => "org.freedesktop.systemd1.Service",
            _ => "org.freedesktop.systemd1.Scope",
        };
        self.string_property(&unit_path, interface, "ControlGroup", deadline)
            .map_err(wrap)
    }

    /// systemd's version number: 252 for "252.39-1~deb12u1". None when it
    /// cannot be read or does not start with a number.
    pub fn version(&mut self) -> Option<u32> {
        let deadline = Instant::now() + TIMEOUT;
        let version = self
            .string_property(MANAGER_PATH, MANAGER, "Version", deadline)
            .ok()?;
        let digits: String = version
            .trim_start_matches('v')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// The string property `name` of `interface` on the object at `path`.
    fn string_property(
        &mut self,
        path: &str,
        interface: &str,
        name: &str,
        deadline: Instant,
    ) -> dbus::Result<String> {
        let args = [Value::Str(interface.into()), Value::Str(name.into())];
        let reply = self
            .conn
            .call(DESTINATION, path, PROPERTIES, "Get", &args, deadline)?;
        match reply.as_slice() {
            [Value::Variant(value)] => match value.as_ref() {
                Value::Str(text) => Ok(text.clone()),
                _ => unexpected(&reply),
            },
            _ => unexpected(&reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::systemd::dbus::fake;
    use std::os::unix::net::UnixListener;
    use std::thread;

    const JOB: &str = "/org/freedesktop/systemd1/job/7";

    /// Run `script` as systemd on a listening socket while `client` talks
    /// to it through [`Systemd::connect`].
    fn with_fake_systemd(
        script: impl FnOnce(&mut fake::Peer) + Send + 'static,
        client: impl FnOnce(&mut Systemd),
    ) {
        let dir = std::env::temp_dir().join(format!(
            "ferrum-systemd-client-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("private");
        let listener = UnixListener::bind(&socket).unwrap();
        let peer = thread::spawn(move || {
            let mut peer = fake::Peer::new(listener.accept().unwrap().0);
            peer.accept_auth();
            let call = peer.read_call();
            assert_eq!(
                (call.interface.as_str(), call.member.as_str()),
                (MANAGER, "Subscribe")
            );
            peer.reply(&call, vec![]);
            script(&mut peer);
        });
        let mut systemd = Systemd::connect(&socket).unwrap();
        client(&mut systemd);
        drop(systemd);
        peer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn job_removed(peer: &mut fake::Peer, job: &str, result: &str) {
        let args = fake::job_removed_args(job, "a.scope", result);
        peer.signal(MANAGER_PATH, MANAGER, "JobRemoved", args);
    }

    #[test]
    fn start_waits_for_its_job_even_when_the_signal_comes_first() {
        let script = |peer: &mut fake::Peer| {
            let call = peer.read_call();
            assert_eq!(
                (call.path.as_str(), call.member.as_str()),
                (MANAGER_PATH, "StartTransientUnit")
            );
            let props = Value::Array(
                "(sv)".into(),
                vec![Value::Struct(vec![
                    Value::Str("Delegate".into()),
                    Value::Variant(Box::new(Value::Bool(true))),
                ])],
            );
            let aux = Value::Array("(sa(sv))".into(), vec![]);
            assert_eq!(
                call.args,
                [
                    Value::Str("a.scope".into()),
                    Value::Str("replace".into()),
                    props,
                    aux
                ]
            );
            // Another job's end, then ours, all before the reply.
            job_removed(peer, "/org/freedesktop/systemd1/job/6", "failed");
            job_removed(peer, JOB, "done");
            peer.reply(&call, vec![Value::Path(JOB.into())]);
        };
        with_fake_systemd(script, |systemd| {
            systemd
                .start_transient_unit("a.scope", vec![("Delegate".into(), Value::Bool(true))])
                .unwrap();
        });
    }

    #[test]
    fn a_failed_job_names_the_unit_and_result() {
        let script = |peer: &mut fake::Peer| {
            let call = peer.read_call();
            peer.reply(&call, vec![Value::Path(JOB.into())]);
            peer.signal(
                MANAGER_PATH,
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                vec![Value::Str("x".into())],
            );
            job_removed(peer, JOB, "failed");
        };
        with_fake_systemd(script, |systemd| {
            let err = systemd.start_transient_unit("a.scope", vec![]).unwrap_err();
            assert!(
                matches!(&err, Error::JobFailed { result, .. } if result == "failed"),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("a.scope") && text.contains("\"failed\""),
                "{text}"
            );
        });
    }

    #[test]
    fn stopping_a_unit_systemd_does_not_know_succeeds() {
        let script = |peer: &mut fake::Peer| {
            let call = peer.read_call();
            assert_eq!(call.member, "StopUnit");
            peer.reply(&call, vec![Value::Path(JOB.into())]);
            job_removed(peer, JOB, "done");
            let call = peer.read_call();
            peer.error(&call, NO_SUCH_UNIT, "Unit a.scope not loaded.");
        };
        with_fake_systemd(script, |systemd| {
            systemd.stop_unit("a.scope").unwrap();
            systemd.stop_unit("a.scope").unwrap();
        });
    }

    #[test]
    fn errors_carry_the_unit_and_systemd_message() {
        let script = |peer: &mut fake::Peer| {
            let call = peer.read_call();
            assert_eq!(call.member, "SetUnitProperties");
            assert_eq!(
                call.args[..2],
                [Value::Str("a.scope".into()), Value::Bool(true)]
            );
            let message = "Cannot set property Bogus, or unknown property.";
            peer.error(
                &call,
                "org.freedesktop.DBus.Error.PropertyReadOnly",
                message,
            );
            // A reply of the wrong shape.
            let call = peer.read_call();
            peer.reply(&call, vec![Value::U32(1)]);
        };
        with_fake_systemd(script, |systemd| {
            let err = systemd
                .set_unit_properties("a.scope", true, vec![("Bogus".into(), Value::U64(1))])
                .unwrap_err();
            assert_eq!(
                err.remote_name(),
                Some("org.freedesktop.DBus.Error.PropertyReadOnly")
            );
            assert_eq!(
                err.to_string(),
                "systemd unit a.scope: set properties: org.freedesktop.DBus.Error.PropertyReadOnly: \
                 Cannot set property Bogus, or unknown property."
            );
            let err = systemd.stop_unit("a.scope").unwrap_err();
            assert!(
                err.to_string()
                    .contains("unexpected reply of signature \"u\""),
                "{err}"
            );
        });
    }

    #[test]
    fn control_group_reads_the_unit_types_property() {
        let script = |peer: &mut fake::Peer| {
            for (unit, interface, cgroup) in [
                (
                    "a.scope",
                    "org.freedesktop.systemd1.Scope",
                    "/system.slice/a.scope",
                ),
                (
                    "system.slice",
                    "org.freedesktop.systemd1.Slice",
                    "/system.slice",
                ),
            ] {
                let call = peer.read_call();
                assert_eq!(
                    (call.member.as_str(), &call.args[..]),
                    ("GetUnit", &[Value::Str(unit.into())][..])
                );
                peer.reply(
                    &call,
                    vec![Value::Path("/org/freedesktop/systemd1/unit/x".into())],
                );
                let call = peer.read_call();
                assert_eq!(call.path, "/org/freedesktop/systemd1/unit/x");
                assert_eq!(
                    (call.interface.as_str(), call.member.as_str()),
                    (PROPERTIES, "Get")
                );
                assert_eq!(
                    call.args,
                    [
                        Value::Str(interface.into()),
                        Value::Str("ControlGroup".into())
                    ]
                );
                peer.reply(
                    &call,
                    vec![Value::Variant(Box::new(Value::Str(cgroup.into())))],
                );
            }
        };
        with_fake_systemd(script, |systemd| {
            assert_eq!(
                systemd.control_group("a.scope").unwrap(),
                "/system.slice/a.scope"
            );
            assert_eq!(
                systemd.control_group("system.slice").unwrap(),
                "/system.slice"
            );
        });
    }

    #[test]
    fn the_version_is_the_managers_leading_number() {
        let script = |peer: &mut fake::Peer| {
            for version in ["252.39-1~deb12u1", "v239", "unknown"] {
                let call = peer.read_call();
                assert_eq!(
                    (
                        call.path.as_str(),
                        call.interface.as_str(),
                        call.member.as_str()
                    ),
                    (MANAGER_PATH, PROPERTIES, "Get")
                );
                assert_eq!(
                    call.args,
                    [Value::Str(MANAGER.into()), Value::Str("Version".into())]
                );
                peer.reply(
                    &call,
                    vec![Value::Variant(Box::new(Value::Str(version.into())))],
                );
            }
            let call = peer.read_call();
            peer.error(&call, "org.freedesktop.DBus.Error.UnknownProperty", "no");
        };
        with_fake_systemd(script, |systemd| {
            assert_eq!(systemd.version(), Some(252));
            assert_eq!(systemd.version(), Some(239));
            assert_eq!(systemd.version(), None, "not a number");
            assert_eq!(systemd.version(), None, "refused");
        });
    }

    #[test]
    fn a_missing_socket_is_named() {
        let err = Systemd::connect(Path::new("/nonexistent/systemd/private"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("systemd at /nonexistent/systemd/private: "),
            "{err}"
        );
    }
}
