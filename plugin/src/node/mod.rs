//! The process on the node: its listening socket (bound, or passed by systemd), its
//! privileges, and what it tells systemd.

mod activation;
pub mod notify;
mod privileges;

pub use activation::{inherited_listener, ACTIVATION_VARIABLES};
pub use privileges::{drop_privileges, restrict_umask};

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
};

use tokio::net::UnixListener;

/// Binds the unix socket kubelet connects to, replacing a stale socket left by an earlier run,
/// and sets its permission bits to `mode`.
///
/// Anything at `path` that is not a socket is left alone and reported, so a typo in the
/// configuration cannot delete a file.
pub fn bind_socket(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(listener)
}
