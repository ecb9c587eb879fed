//! systemd socket activation: the listening socket systemd opened and passed down
//! (`LISTEN_PID`, `LISTEN_FDS`, first descriptor 3), so pulls that arrive while pullgate
//! restarts wait in the socket's backlog instead of failing.

use std::{
    io,
    os::{
        fd::{FromRawFd, RawFd},
        unix::net::UnixListener,
    },
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The socket systemd passed to this process, if it passed one. The variables are removed so
/// that nothing this process starts mistakes them for its own.
///
/// pullgate listens on one socket: more than one passed descriptor is an error, as is one that
/// is not a listening unix stream socket.
pub fn inherited_listener() -> io::Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // SAFETY: removing variables is unsound only while another thread reads the environment;
    // this runs first in `serve`, when the runtime's idle workers are the only other threads.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    // Passed to another process (our parent, say): not ours.
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={fds:?} is not a number")))?;
    match count {
        0 => Ok(None),
        1 => listener_at(FIRST_FD).map(Some),
        n => Err(invalid(format!(
            "systemd passed {n} sockets; pullgate listens on one (give the socket unit one ListenStream=)"
        ))),
    }
}

/// Takes ownership of descriptor `fd` after checking it is a listening unix stream socket.
fn listener_at(fd: RawFd) -> io::Result<UnixListener> {
    let option = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes of the sizes given.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut len) };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let not_ours = |why: &str| invalid(format!("the socket systemd passed (fd {fd}) {why}"));
    if option(libc::SO_DOMAIN).map_err(|_| not_ours("is not a socket"))? != libc::AF_UNIX {
        return Err(not_ours("is not a unix socket; use ListenStream=/path"));
    }
    if option(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(not_ours("is not a stream socket; use ListenStream="));
    }
    if option(libc::SO_ACCEPTCONN)? == 0 {
        return Err(not_ours("is not listening"));
    }
    // SAFETY: systemd handed this descriptor to this process, nothing else in it owns it, and
    // it was just checked to be a listening unix stream socket.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    // Not inherited by anything this process might start.
    // SAFETY: plain fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(listener)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
