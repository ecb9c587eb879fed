use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
};

use super::*;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn image(repository: &str) -> AdmittedImage {
    AdmittedImage {
        repository: repository.into(),
        id: "sha256:1111111111111111111111111111111111111111111111111111111111111111".into(),
        verified: vec![Verification {
            rule: "release".into(),
            digest: DIGEST.into(),
            until: None,
        }],
    }
}

fn snapshot() -> Snapshot {
    Snapshot::new(
        "generation-1".into(),
        vec![image("127.0.0.1:5000/app"), image("docker.io/library/nginx")],
    )
}

fn state_dir() -> (tempfile::TempDir, StateDir) {
    let root = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&root.path().join("state")).unwrap();
    (root, dir)
}

#[test]
fn a_snapshot_round_trips_into_a_private_file() {
    let (root, dir) = state_dir();
    assert_eq!(dir.load().unwrap(), None, "no file yet");
    dir.store(&snapshot()).unwrap();
    assert_eq!(dir.load().unwrap(), Some(snapshot()));
    let created = fs::metadata(root.path().join("state")).unwrap();
    assert_eq!(created.mode() & 0o7777, 0o700);
    assert_eq!(fs::metadata(dir.file()).unwrap().mode() & 0o7777, 0o600);
    // Replaced whole, with no temporary file left beside it.
    let other = Snapshot::new("generation-2".into(), vec![]);
    dir.store(&other).unwrap();
    assert_eq!(dir.load().unwrap(), Some(other));
    let names: Vec<_> = fs::read_dir(root.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [FILE_NAME]);
}

/// A torn write (a crash without the rename's atomicity), a corrupt byte, another format or
/// one malformed entry: the whole file is refused, nothing in it is used.
#[test]
fn a_torn_or_corrupt_file_is_refused_whole() {
    let (_root, dir) = state_dir();
    dir.store(&snapshot()).unwrap();
    let good = fs::read(dir.file()).unwrap();
    let refused = |bytes: &[u8]| {
        fs::write(dir.file(), bytes).unwrap();
        let error = dir.load().expect_err("refused");
        assert!(matches!(error, StateError::Invalid { .. }), "{error}");
        error.to_string()
    };
    refused(&good[..good.len() / 2]);
    refused(b"");
    refused(
        &good
            .iter()
            .map(|b| if *b == b'{' { b'[' } else { *b })
            .collect::<Vec<_>>(),
    );
    let text = String::from_utf8(good.clone()).unwrap();
    // The first format (no `until`, so blind to `maxAge`) is another format.
    assert!(refused(text.replace("\"version\":2", "\"version\":1").as_bytes()).contains("format version 1"));
    // Written by a pullgate that verified otherwise (older, or newer and since rolled back).
    let epoch = format!("\"verifier\":{VERIFIER_EPOCH}");
    assert!(text.contains(&epoch), "{text}");
    let older = text.replace(&epoch, &format!("\"verifier\":{}", VERIFIER_EPOCH - 1));
    assert!(refused(older.as_bytes()).contains("verification differs"));
    let newer = text.replace(&epoch, &format!("\"verifier\":{}", VERIFIER_EPOCH + 1));
    refused(newer.as_bytes());
    let bad_digest = text.replacen(DIGEST, "sha256:nothex", 1);
    assert!(refused(bad_digest.as_bytes()).contains("images[0]"));
    let not_canonical = text.replace("docker.io/library/nginx", "nginx");
    assert!(refused(not_canonical.as_bytes()).contains("images[1]: repository"));
    let no_rule = text.replacen("\"release\"", "\"\"", 1);
    assert!(refused(no_rule.as_bytes()).contains("rule name"));
    let unknown_field = text.replacen("\"images\"", "\"extra\":1,\"images\"", 1);
    refused(unknown_field.as_bytes());
}

#[test]
fn bounds_hold_on_read_and_write() {
    let (_root, dir) = state_dir();
    let many = Snapshot::new("g".into(), vec![image("127.0.0.1:5000/app"); MAX_ADMITTED + 1]);
    fs::write(dir.file(), serde_json::to_vec(&many).unwrap()).unwrap();
    let error = dir.load().unwrap_err();
    assert!(
        error.to_string().contains(&format!("more than {MAX_ADMITTED}")),
        "{error}"
    );

    let mut huge = image("127.0.0.1:5000/app");
    let long_rule = Verification {
        rule: "r".repeat(MAX_FIELD_BYTES),
        digest: DIGEST.into(),
        until: None,
    };
    huge.verified = vec![long_rule; (MAX_STATE_BYTES as usize / MAX_FIELD_BYTES) + 1];
    let huge = Snapshot::new("g".into(), vec![huge]);
    assert!(matches!(dir.store(&huge), Err(StateError::TooLarge { .. })));
    // One byte past the limit on disk is not read, however it got there.
    let file = fs::File::create(dir.file()).unwrap();
    file.set_len(MAX_STATE_BYTES + 1).unwrap();
    assert!(matches!(dir.load(), Err(StateError::TooLarge { .. })));
}

/// Whoever can write the file (or plant one in the directory) could make `ImageStatus` show
/// an image nothing verified: both must be pullgate's own and closed to others.
#[test]
fn a_file_or_directory_others_could_write_is_refused() {
    let (root, dir) = state_dir();
    dir.store(&snapshot()).unwrap();
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o620)).unwrap();
    assert!(matches!(dir.load(), Err(StateError::Writable { mode: 0o620, .. })));
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o602)).unwrap();
    assert!(matches!(dir.load(), Err(StateError::Writable { .. })));
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(dir.load().unwrap().is_some());

    let state = root.path().join("state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o770)).unwrap();
    assert!(matches!(StateDir::open(&state), Err(StateError::Writable { .. })));
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();

    // A link is not followed, even to a file pullgate owns.
    let elsewhere = root.path().join("elsewhere.json");
    fs::rename(dir.file(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.file()).unwrap();
    assert!(matches!(dir.load(), Err(StateError::Io { .. })));
    fs::remove_file(dir.file()).unwrap();
    fs::rename(&elsewhere, dir.file()).unwrap();

    // Another owner: only root can make one here.
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        eprintln!("not root: the other-owner case is not exercised");
        return;
    }
    std::os::unix::fs::chown(dir.file(), Some(65534), None).unwrap();
    assert!(matches!(dir.load(), Err(StateError::Owner { owner: 65534, .. })));
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    assert!(matches!(StateDir::open(&state), Err(StateError::Owner { .. })));
}

#[test]
fn a_state_dir_that_is_a_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("state");
    fs::write(&path, b"").unwrap();
    assert!(StateDir::open(&path).is_err());
}

/// A FIFO (or a device) at the file's name: refused at once. Opened without `O_NONBLOCK`, a
/// FIFO with no writer blocks the open forever, before any check sees what it is: pullgate
/// would never start, and `doctor` would hang.
#[test]
fn a_fifo_at_the_state_file_is_refused_without_blocking() {
    let (_root, dir) = state_dir();
    nix::unistd::mkfifo(&dir.file(), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (done, result) = std::sync::mpsc::channel();
    let reader = dir.clone();
    std::thread::spawn(move || {
        let _ = done.send(reader.load().map(|_| ()).map_err(|e| e.to_string()));
    });
    let loaded = result
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("load blocked on a FIFO");
    let error = loaded.expect_err("a FIFO is refused");
    assert!(error.ends_with("not a file"), "{error}");
}
