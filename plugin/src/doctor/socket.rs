//! The socket kubelet connects to, and the directory it is in.

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
};

use super::{Check, UPSTREAM_TIMEOUT};
use crate::config::Config;

/// The socket kubelet connects to: there, a socket, something listening, with the configured
/// permission bits and none for other users beyond them.
pub(super) async fn listen_socket(config: &Config) -> Check {
    let path = &config.listen;
    let start = "start pullgate (systemctl start pullgate.socket, or pullgate serve --config …)";
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                format!(
                    "listen socket {} does not exist: pullgate is not running",
                    path.display()
                ),
                start,
            )
        }
        Err(e) => return Check::fail(format!("listen socket {}: {e}", path.display()), "run doctor as root"),
    };
    if !meta.file_type().is_socket() {
        return Check::fail(
            format!("listen {} is not a socket", path.display()),
            format!("remove it, or set listen: to another path, then {start}"),
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = config.socket.mode;
    if mode != wanted {
        let others = if mode & !wanted & 0o007 != 0 {
            ": other users get access the configuration does not give them"
        } else {
            ""
        };
        return Check::fail(
            format!(
                "listen socket {} has mode {mode:04o}, socket.mode says {wanted:04o}{others}",
                path.display()
            ),
            format!(
                "chmod {wanted:04o} {} (or restart pullgate, which sets socket.mode when it binds; \
                 with socket activation set SocketMode={wanted:04o} in pullgate.socket)",
                path.display()
            ),
        );
    }
    match tokio::time::timeout(UPSTREAM_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Check::fail(
                format!("cannot connect to listen socket {}: {e}", path.display()),
                "run doctor as root (kubelet's user)",
            )
        }
        Ok(Err(e)) => {
            return Check::fail(
                format!(
                    "nothing answers on listen socket {} ({e}): pullgate is not running, the socket is stale",
                    path.display()
                ),
                start,
            )
        }
        Err(_) => {
            return Check::fail(
                format!(
                    "listen socket {} did not accept within {UPSTREAM_TIMEOUT:?}",
                    path.display()
                ),
                "check pullgate's log (journalctl -u pullgate)",
            )
        }
    }
    if wanted & 0o007 != 0 {
        return Check::warn(
            format!(
                "listen socket {} is open to every local user (socket.mode {wanted:04o}); only socket.allowedUids are served",
                path.display()
            ),
            "set socket.mode: \"0660\" and restart pullgate",
        );
    }
    Check::ok(format!(
        "listen socket {} answers, mode {mode:04o} as configured",
        path.display()
    ))
}

/// The directory the listen socket is in: whoever may write it may replace the socket.
pub(super) fn listen_directory(listen: &Path) -> Check {
    let Some(dir) = listen.parent() else {
        return Check::fail(
            format!("listen {} has no directory", listen.display()),
            "set listen: to unix:///run/pullgate/pullgate.sock",
        );
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => Check::fail(
            format!(
                "socket directory {} is writable by every user (mode {:04o}): anyone could replace pullgate's socket",
                dir.display(),
                meta.permissions().mode() & 0o7777
            ),
            format!(
                "chmod o-w {} (or set listen: to a socket in a directory of its own, like /run/pullgate)",
                dir.display()
            ),
        ),
        Ok(meta) => Check::ok(format!(
            "socket directory {} is not writable by other users (mode {:04o})",
            dir.display(),
            meta.permissions().mode() & 0o7777
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Check::ok(format!(
            "socket directory {} does not exist yet; pullgate creates it",
            dir.display()
        )),
        Err(e) => Check::fail(format!("socket directory {}: {e}", dir.display()), "run doctor as root"),
    }
}
