//! The audit log: where pullgate writes it, only its owners may.

use std::{fs, io, os::unix::fs::PermissionsExt, path::Path};

use nix::unistd::AccessFlags;

use super::Check;

/// The audit log: its directory is (or can be made) writable and only by its owners, and the
/// log, if it exists yet, is writable and not readable by every user.
pub(super) fn audit_log(path: &Path) -> Check {
    let Some(dir) = path.parent() else {
        return Check::fail(
            format!("audit.path {} has no directory", path.display()),
            "set audit.path: to /var/log/pullgate/audit.jsonl",
        );
    };
    let fix_dir = format!(
        "create {} writable by root only (install -d -m 0750 {}), or set audit.path: elsewhere",
        dir.display(),
        dir.display()
    );
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Check::fail(format!("audit directory {} is not a directory", dir.display()), fix_dir)
        }
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => {
            return Check::fail(
                format!(
                    "audit directory {} is writable by every user: anyone could replace the log",
                    dir.display()
                ),
                format!("chmod o-w {}", dir.display()),
            )
        }
        Ok(_) => {
            if let Err(e) = writable(dir) {
                return Check::fail(
                    format!("audit directory {} is not writable: {e}", dir.display()),
                    fix_dir,
                );
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
            return match writable(existing) {
                Ok(()) => Check::ok(format!(
                    "audit directory {} does not exist yet; pullgate can create it in {}",
                    dir.display(),
                    existing.display()
                )),
                Err(e) => Check::fail(
                    format!(
                        "audit directory {} does not exist and {} is not writable: {e}",
                        dir.display(),
                        existing.display()
                    ),
                    fix_dir,
                ),
            };
        }
        Err(e) => return Check::fail(format!("audit directory {}: {e}", dir.display()), "run doctor as root"),
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::ok(format!(
                "audit directory {} is writable; no log written yet",
                dir.display()
            ))
        }
        Err(e) => return Check::fail(format!("audit log {}: {e}", path.display()), "run doctor as root"),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() {
        return Check::fail(
            format!("audit log {} is not a regular file", path.display()),
            "move it away, or set audit.path: elsewhere",
        );
    }
    if mode & 0o004 != 0 {
        return Check::fail(
            format!(
                "audit log {} is readable by every user (mode {mode:04o}): it names images, pods and namespaces",
                path.display()
            ),
            format!("chmod o-r {} (pullgate creates it 0640)", path.display()),
        );
    }
    if let Err(e) = writable(path) {
        return Check::fail(
            format!("audit log {} is not writable: {e}", path.display()),
            format!("chown root {} and chmod u+w it", path.display()),
        );
    }
    Check::ok(format!("audit log {} is writable, mode {mode:04o}", path.display()))
}

/// Whether this process may write `path` (for a directory: create entries in it), as the
/// kernel decides, read-only mounts included.
fn writable(path: &Path) -> io::Result<()> {
    let wanted = if path.is_dir() {
        AccessFlags::W_OK | AccessFlags::X_OK
    } else {
        AccessFlags::W_OK
    };
    nix::unistd::access(path, wanted).map_err(io::Error::from)
}
