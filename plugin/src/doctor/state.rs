//! `stateDir`: the images verified under the policy in force, kept across restarts. One that
//! cannot be used does not stop `serve`, which then verifies every image again after a restart.

use std::{io, path::Path};

use super::Check;
use crate::state::{StateDir, StateError};

/// What a restarting pullgate would read back from `dir` under the policy of `generation`
/// (`None`: the policy does not load).
pub(super) fn state(dir: Option<&Path>, generation: Option<&str>) -> Check {
    let Some(dir) = dir else {
        return Check::ok(
            "stateDir is \"\": verifications are kept in memory only, and verified again after a restart",
        );
    };
    let fix = "make it pullgate's own and closed to others (chown root; chmod 0700 for the directory, 0600 for the file), or remove it: pullgate writes a new one";
    let state = match StateDir::existing(dir) {
        Ok(state) => state,
        Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Check::ok(format!(
                "stateDir {} does not exist yet: pullgate creates it",
                dir.display()
            ))
        }
        Err(error) => {
            return Check::warn(
                format!("stateDir not used: {error}; after a restart every enforced image is verified again"),
                fix,
            )
        }
    };
    match state.load() {
        Ok(None) => Check::ok(format!("stateDir {}: no verifications kept yet", dir.display())),
        Ok(Some(snapshot)) if Some(snapshot.generation.as_str()) == generation => Check::ok(format!(
            "stateDir {}: {} image{} verified under the policy in force",
            dir.display(),
            snapshot.images.len(),
            if snapshot.images.len() == 1 { "" } else { "s" }
        )),
        Ok(Some(_)) => Check::ok(format!(
            "stateDir {}: kept under another policy or trust material; those images are verified again",
            dir.display()
        )),
        Err(error) => Check::warn(
            format!("state file ignored: {error}; after a restart every enforced image is verified again"),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::state::Snapshot;

    #[test]
    fn reports_what_a_restart_would_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        assert!(state(None, Some("g")).to_string().contains("memory only"));
        let missing = state(Some(&dir), Some("g")).to_string();
        assert!(
            missing.starts_with("ok") && missing.contains("does not exist"),
            "{missing}"
        );
        assert!(!dir.exists(), "doctor creates nothing");

        let stored = StateDir::open(&dir).unwrap();
        assert!(state(Some(&dir), Some("g"))
            .to_string()
            .contains("no verifications kept yet"));
        stored.store(&Snapshot::new("g".into(), vec![])).unwrap();
        let kept = state(Some(&dir), Some("g")).to_string();
        assert!(
            kept.starts_with("ok") && kept.contains("0 images verified under the policy in force"),
            "{kept}"
        );
        assert!(state(Some(&dir), Some("other")).to_string().contains("another policy"));

        std::fs::set_permissions(stored.file(), std::fs::Permissions::from_mode(0o644 | 0o022)).unwrap();
        let refused = state(Some(&dir), Some("g")).to_string();
        assert!(refused.starts_with("warn state file ignored"), "{refused}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = state(Some(&dir), Some("g")).to_string();
        assert!(refused.starts_with("warn stateDir not used"), "{refused}");
    }
}
