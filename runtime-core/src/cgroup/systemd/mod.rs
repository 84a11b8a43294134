//! Temporary: the D-Bus transport and systemd client, until the driver lands.
#![allow(dead_code)]

pub(crate) mod client;
pub(crate) mod dbus;
