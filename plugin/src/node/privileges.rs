//! Least privilege for the running process: once the socket is bound and the files it writes
//! are open or creatable, pullgate needs no capability. It runs as root to reach containerd's
//! root-owned socket and root-owned files, which owner permissions already allow.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Files pullgate creates are not readable by others (audit log, state).
pub fn restrict_umask() {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o027) };
}

/// Sets `no_new_privs`, so nothing pullgate executes can gain privileges, and empties every
/// capability set: the bounding set (which needs `CAP_SETPCAP`, so it is emptied first),
/// ambient, inheritable, permitted and effective. Returns how many capabilities the bounding
/// set keeps because this process may not drop them (not root, say); with `no_new_privs` and
/// empty permitted and inheritable sets they are out of reach anyway.
pub fn drop_privileges() -> io::Result<usize> {
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "PR_SET_NO_NEW_PRIVS",
    )?;
    let mut left = 0;
    for capability in 0..=last_capability() {
        // SAFETY: prctl with integer arguments only. Fails with EPERM without CAP_SETPCAP.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) };
        if rc != 0 && bounding_has(capability) {
            left += 1;
        }
    }
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) },
        "PR_CAP_AMBIENT_CLEAR_ALL",
    )?;
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads one header and two data structs, laid out as the kernel expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) as libc::c_int };
    // A seccomp filter may refuse capset itself (systemd's ~@privileged); that is fine when
    // the sets are empty already, as they are under an empty CapabilityBoundingSet=.
    if rc != 0 && !sets_are_empty() {
        return Err(context(io::Error::last_os_error(), "capset"));
    }
    Ok(left)
}

/// Whether this process's permitted, effective and inheritable sets are empty.
fn sets_are_empty() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    ["CapInh:", "CapPrm:", "CapEff:"].iter().all(|set| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(set))
            .is_some_and(|value| value.trim().chars().all(|c| c == '0'))
    })
}

/// The highest capability number this kernel knows.
fn last_capability() -> libc::c_ulong {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Whether `capability` is still in the bounding set.
fn bounding_has(capability: libc::c_ulong) -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, capability, 0, 0, 0) == 1 }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(context(io::Error::last_os_error(), what))
    }
}

fn context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
