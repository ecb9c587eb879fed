//! systemd's readiness protocol (`Type=notify`): one datagram per state change to the socket
//! named by `NOTIFY_SOCKET`. Without that variable (not started by systemd) nothing is sent.

use std::{io, os::unix::net::UnixDatagram};

/// Tells systemd the service is ready: policy and trust loaded, containerd answering.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\n"));
}

/// Tells systemd the service is reloading its configuration; [`ready`] ends the reload.
pub fn reloading() {
    send("RELOADING=1\n");
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send("STOPPING=1\n");
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    send(&format!("STATUS={status}\n"));
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_to(&path, message) {
        tracing::warn!(%error, socket = ?path, "could not notify systemd");
    }
}

fn send_to(path: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // A leading '@' names a socket in the abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &address)?;
    } else {
        socket.send_to(message.as_bytes(), std::path::Path::new(path))?;
    }
    Ok(())
}
