//! systemd socket activation: the listening socket systemd opened and passed down
//! (`LISTEN_PID`, `LISTEN_FDS`, first descriptor 3), so pulls that arrive while pullgate
//! restarts wait in the socket's backlog instead of failing.

use std::{
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixListener,
    },
    sync::atomic::{AtomicBool, Ordering},
};

use nix::sys::socket::{self, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage};

/// The variables socket activation sets, for `main` to remove once they were read, so that
/// nothing this process starts mistakes them for its own.
pub const ACTIVATION_VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set once the passed descriptor was taken, so it is never owned twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The socket systemd passed to this process, if it passed one (`LISTEN_PID` names this
/// process). Only the first call can take it; later calls find none.
///
/// pullgate listens on one socket: more than one passed descriptor is an error, as is one that
/// is not a listening unix stream socket.
pub fn inherited_listener() -> io::Result<Option<UnixListener>> {
    // Checks LISTEN_PID, counts LISTEN_FDS and marks each passed descriptor close-on-exec.
    let mut fds = sd_notify::listen_fds().map_err(|e| invalid(format!("LISTEN_PID/LISTEN_FDS: {e}")))?;
    match fds.len() {
        0 => Ok(None),
        1 => match fds.next() {
            Some(fd) if !TAKEN.swap(true, Ordering::SeqCst) => listener_at(fd).map(Some),
            _ => Ok(None),
        },
        n => Err(invalid(format!(
            "systemd passed {n} sockets; pullgate listens on one (give the socket unit one ListenStream=)"
        ))),
    }
}

/// Takes ownership of descriptor `fd` after checking it is a listening unix stream socket.
fn listener_at(fd: RawFd) -> io::Result<UnixListener> {
    // SAFETY: systemd passed it to this process, listen_fds found it open, TAKEN lets it be owned once.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let not_ours = |why: &str| invalid(format!("the socket systemd passed (fd {fd}) {why}"));
    let address: SockaddrStorage = socket::getsockname(owned.as_raw_fd()).map_err(|_| not_ours("is not a socket"))?;
    if address.family() != Some(AddressFamily::Unix) {
        return Err(not_ours("is not a unix socket; use ListenStream=/path"));
    }
    if socket::getsockopt(&owned, sockopt::SockType).map_err(io::Error::from)? != SockType::Stream {
        return Err(not_ours("is not a stream socket; use ListenStream="));
    }
    if !socket::getsockopt(&owned, sockopt::AcceptConn).map_err(io::Error::from)? {
        return Err(not_ours("is not listening"));
    }
    let listener = UnixListener::from(owned);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
