//! Least privilege for the running process: once the socket is bound and the files it writes
//! are open or creatable, pullgate needs no capability. It runs as root to reach containerd's
//! root-owned socket and root-owned files, which owner permissions already allow.

use std::io;

use caps::CapSet;
use nix::sys::stat::Mode;

/// Files pullgate creates are not readable by others (audit log, state).
pub fn restrict_umask() {
    nix::sys::stat::umask(Mode::from_bits_truncate(0o027));
}

/// Sets `no_new_privs`, so nothing pullgate executes can gain privileges, and empties every
/// capability set: the bounding set (which needs `CAP_SETPCAP`, so it is emptied first),
/// ambient, inheritable, permitted and effective. Returns how many capabilities the bounding
/// set keeps because this process may not drop them (not root, say); with `no_new_privs` and
/// empty permitted and inheritable sets they are out of reach anyway.
pub fn drop_privileges() -> io::Result<usize> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| context(e.into(), "PR_SET_NO_NEW_PRIVS"))?;
    let mut left = 0;
    for capability in caps::all() {
        // Fails with EPERM without CAP_SETPCAP; what stays is counted.
        if caps::drop(None, CapSet::Bounding, capability).is_err()
            && caps::has_cap(None, CapSet::Bounding, capability).unwrap_or(false)
        {
            left += 1;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_error(&e))?;
    // Clearing the permitted set clears the effective set with it.
    let cleared = caps::clear(None, CapSet::Inheritable).and_then(|()| caps::clear(None, CapSet::Permitted));
    // A seccomp filter may refuse capset itself (systemd's ~@privileged); that is fine when
    // the sets are empty already, as they are under an empty CapabilityBoundingSet=.
    if let Err(error) = cleared {
        if !sets_are_empty() {
            return Err(caps_error(&error));
        }
    }
    Ok(left)
}

/// Whether this process's inheritable, permitted and effective sets are empty, as capget
/// reads them back.
fn sets_are_empty() -> bool {
    [CapSet::Inheritable, CapSet::Permitted, CapSet::Effective]
        .into_iter()
        .all(|set| caps::read(None, set).is_ok_and(|caps| caps.is_empty()))
}

fn caps_error(error: &caps::errors::CapsError) -> io::Error {
    io::Error::other(error.to_string())
}

fn context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
