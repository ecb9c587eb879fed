//! The logrotate configuration the installer ships (`systemd/pullgate.logrotate`, installed as
//! `/etc/logrotate.d/pullgate`), run by the real logrotate against a real pullgate: rotation
//! moves the file and signals pullgate, so every record stays whole in exactly one file, none is
//! lost, and the hash chain runs on from one file into the next, compressed ones included.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use pullgate_tests::{Pullgate, TestEnv};

/// What pullgate logs when SIGHUP finds its audit log moved away.
const REOPENED: &str = "audit log moved away: a new file continues the chain";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `text` with `from` replaced by `to`; panics unless `from` occurs exactly once, so the test
/// stops matching the shipped file the moment its shape changes.
fn substitute_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in the shipped configuration:\n{text}"
    );
    text.replace(from, to)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `pullgate audit verify PATH`: its stdout; panics unless the chain is intact (exit 0).
fn audit_verify(path: &Path) -> String {
    let out = Pullgate::command()
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify {}: {stdout}{out:?}",
        path.display()
    );
    stdout
}

/// Waits (at most 10 s) until pullgate has logged `needle` `times` times.
async fn wait_for_log_count(pg: &Pullgate, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.log().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "pullgate logged {needle:?} fewer than {times} times:\n{}",
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_with_the_shipped_configuration_loses_no_record_and_keeps_the_chain() {
    let Some(logrotate) = pullgate_tests::process::required_tool("logrotate") else {
        return;
    };
    let env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "rotated by logrotate").await;
    env.push_image("unsigned/app", "v1", "rotated by logrotate, unsigned")
        .await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let signed = env.image_ref("signed/app", "v1");
    let unsigned = env.image_ref("unsigned/app", "v1");
    let audit = pg.audit_path();
    let pid = pg.pid().unwrap();

    // The shipped file with two substitutions only: the rig's audit log for the node's path, and
    // SIGHUP to the rig's pullgate for `systemctl reload pullgate.service`, since the rig runs
    // pullgate as a plain child process, not as a systemd unit (what the unit's ExecReload=
    // sends is this same SIGHUP to the main process; systemd_units checks that part).
    let shipped = read(&repo().join("systemd/pullgate.logrotate"));
    let config = substitute_once(&shipped, "/var/log/pullgate/audit.jsonl", &audit.display().to_string());
    let config = substitute_once(
        &config,
        "systemctl reload pullgate.service",
        &format!("kill -HUP {pid}"),
    );
    // Ahead of it, the global defaults of /etc/logrotate.conf as Debian (create) and Azure
    // Linux or RHEL (dateext too) set them, which the file's own directives must override.
    let config = format!("weekly\nrotate 4\ncreate\ndateext\n{config}");
    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("pullgate.logrotate");
    std::fs::write(&config_path, config).unwrap();
    let state = work.path().join("logrotate.state");
    let rotate = || {
        let out = Command::new(&logrotate)
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "logrotate: {out:?}\n{}", pg.log());
    };

    let mut pulls = 0;
    for image in [&signed, &signed] {
        pg.pull(image, None).await.unwrap();
        pulls += 1;
    }
    pg.pull(&unsigned, None).await.expect_err("unsigned is denied");
    pulls += 1;
    let first = read(&audit);
    assert_eq!(first.lines().count(), pulls);

    rotate();
    wait_for_log_count(&pg, REOPENED, 1).await;
    let rotated = audit.with_extension("jsonl.1");
    assert_eq!(read(&rotated), first, "the rotated file holds every record, whole");
    for image in [&signed, &unsigned] {
        let _ = pg.pull(image, None).await;
        pulls += 1;
    }
    let second = read(&audit);
    assert_eq!(second.lines().count(), 2, "the new file has what came after: {second}");
    let continued = audit_verify(&audit);
    assert!(continued.contains("intact, 2 records (seq 4..=5)"), "{continued}");
    assert!(
        continued.contains("continues a chain from an earlier (rotated) file"),
        "{continued}"
    );

    // Again: the first rotated file is compressed now (delaycompress), the second is .1.
    rotate();
    wait_for_log_count(&pg, REOPENED, 2).await;
    pg.pull(&signed, None).await.unwrap();
    pulls += 1;
    let compressed = audit.with_extension("jsonl.2.gz");
    let unpacked = Command::new("gzip").arg("-dc").arg(&compressed).output().unwrap();
    assert!(
        unpacked.status.success(),
        "gzip -dc {}: {unpacked:?}",
        compressed.display()
    );
    assert_eq!(String::from_utf8(unpacked.stdout).unwrap(), first);
    assert_eq!(read(&rotated), second);
    assert!(!audit.with_extension("jsonl.2").exists());

    // Across all three files, oldest first: one chain, every record once, none missing.
    let all = format!("{first}{second}{}", read(&audit));
    assert_eq!(all.lines().count(), pulls, "one record per decision, none lost");
    let joined = work.path().join("all.jsonl");
    std::fs::write(&joined, &all).unwrap();
    let whole = audit_verify(&joined);
    assert!(
        whole.contains(&format!("intact, {pulls} records (seq 1..={pulls})")),
        "{whole}"
    );
    assert!(!whole.contains("continues a chain"), "{whole}");
    for file in [&rotated, &audit] {
        audit_verify(file);
    }
}

/// logrotate moved the file but its reload failed (pullgate was restarting, or the unit was
/// reloading already): no SIGHUP came. pullgate notices the move itself and starts a new file
/// that continues the chain; records no longer go to the moved file, which logrotate, finding
/// no file at the path, would otherwise never rotate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_reload_failed_still_gets_a_new_file() {
    let Some(logrotate) = pullgate_tests::process::required_tool("logrotate") else {
        return;
    };
    let env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "rotated without a signal")
        .await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let signed = env.image_ref("signed/app", "v1");
    let audit = pg.audit_path();
    let shipped = read(&repo().join("systemd/pullgate.logrotate"));
    let config = substitute_once(&shipped, "/var/log/pullgate/audit.jsonl", &audit.display().to_string());
    // The reload fails, visibly, as `systemctl reload` of a unit that is not running does.
    let config = substitute_once(&config, "systemctl reload pullgate.service", "false");
    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("pullgate.logrotate");
    std::fs::write(&config_path, config).unwrap();

    pg.pull(&signed, None).await.unwrap();
    let first = read(&audit);
    let out = Command::new(&logrotate)
        .arg("-f")
        .arg("-s")
        .arg(work.path().join("logrotate.state"))
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the postrotate reload fails: {out:?}");
    let rotated = audit.with_extension("jsonl.1");
    assert_eq!(read(&rotated), first, "moved whole");

    // Within a few seconds, without a signal, a new file at the path.
    wait_for_log_count(&pg, REOPENED, 1).await;
    pg.pull(&signed, None).await.unwrap();
    assert_eq!(read(&rotated), first, "nothing more goes to the moved file");
    let continued = audit_verify(&audit);
    assert!(continued.contains("intact, 1 records (seq 2..=2)"), "{continued}");
}

/// The settings docs/audit-log.md, installer/README.md and the DaemonSet's README state are the
/// shipped file's, and it never copies and truncates.
#[test]
fn the_pages_state_the_shipped_rotation_settings() {
    let shipped = read(&repo().join("systemd/pullgate.logrotate"));
    let directives: Vec<&str> = shipped
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for directive in [
        "/var/log/pullgate/audit.jsonl {",
        "weekly",
        "maxsize 100M",
        "rotate 12",
        "nodateext",
        "nocopytruncate",
        "nocopy",
        "nocreate",
        "compress",
        "delaycompress",
        "systemctl reload pullgate.service",
    ] {
        assert!(directives.contains(&directive), "{directive:?} in:\n{shipped}");
    }
    assert!(!directives.iter().any(|d| *d == "copytruncate" || *d == "copy"));
    let page = read(&repo().join("docs/audit-log.md"));
    for stated in [
        "weekly, or at the first logrotate run after the file passes 100 MiB",
        "12 rotated files",
    ] {
        assert!(page.contains(stated), "docs/audit-log.md no longer says {stated:?}");
    }
    for readme in [
        "installer/kubernetes/README.md",
        "systemd/README.md",
        "docs/failure-modes.md",
    ] {
        let text = read(&repo().join(readme));
        assert!(
            text.contains("weekly or past 100 MiB") && text.contains("12"),
            "{readme} states other rotation settings"
        );
    }
}
