use std::{fs, os::unix::fs::PermissionsExt, process::Command};

use super::*;

/// Set in a child run of this test binary: the directory an `in_child_` test works in. Tests
/// that lower the process's file size limit run in a child, alone, so no other test sees it.
const CHILD_DIR: &str = "PULLGATE_AUDIT_TEST_CHILD_DIR";

/// Runs the test `name` of this binary in a child process, alone, with [`CHILD_DIR`] set to
/// `dir`; panics with the child's output unless the test ran there and passed.
fn run_in_child(name: &str, dir: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_DIR, dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed in the child:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run in the child:\n{text}");
}

/// Lets this process write files up to `bytes` long (`None`: no limit), with SIGXFSZ blocked
/// in this thread, where the writes happen, so a write past the limit fails with EFBIG instead
/// of killing the process, as in `pullgate serve` (which handles the signal).
fn limit_file_size(bytes: Option<u64>) {
    use nix::sys::{
        resource::{setrlimit, Resource, RLIM_INFINITY},
        signal::{pthread_sigmask, SigSet, SigmaskHow, Signal},
    };
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&xfsz), None).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, bytes.unwrap_or(RLIM_INFINITY), RLIM_INFINITY).unwrap();
}

fn record(image: &str, decision: Decision) -> Record {
    Record {
        event: Event::Pull,
        image: image.to_string(),
        digest: None,
        namespace: "default".into(),
        pod: "web-0".into(),
        rule: Some("apps".into()),
        mode: "enforce".into(),
        decision,
        reason: "test".into(),
        signatures: Vec::new(),
        attestations: Vec::new(),
        rejected: Vec::new(),
        duration_ms: 1.5,
        cache: "miss",
        outcome: Some(Outcome::Pulled),
        error: None,
        count: None,
    }
}

#[test]
fn chain_starts_at_genesis_and_links_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&record("a", Decision::Allow)).unwrap(), 1);
    assert_eq!(log.append(&record("b", Decision::Deny)).unwrap(), 2);

    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["event"], "pull");
    assert_eq!(second["prev"].as_str().unwrap(), line_hash(lines[0].as_bytes()));
    assert_eq!(second["decision"], "deny");
    // SPEC §6 field order: seq, time, prev first.
    assert!(lines[0].starts_with(r#"{"seq":1,"time":""#), "{}", lines[0]);
    assert_eq!(verify_chain(&path).unwrap().unwrap().records, 2);
}

/// logrotate's way (move, then SIGHUP): the moved file keeps what was written before, the new
/// file at the path continues the same chain, and nothing is reopened while the file stays.
#[test]
fn a_rotated_file_is_continued_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let log = AuditLog::open(&path).unwrap();
    log.append(&record("a", Decision::Allow)).unwrap();
    assert!(!log.reopen().unwrap(), "the file is still at its path");

    fs::rename(&path, &rotated).unwrap();
    // Written after the move and before the signal: lands in the moved file.
    log.append(&record("b", Decision::Deny)).unwrap();
    assert!(log.reopen().unwrap());
    assert_eq!(log.append(&record("c", Decision::Allow)).unwrap(), 3);

    let old = verify_chain(&rotated).unwrap().unwrap();
    assert_eq!(
        (old.first_seq, old.last_seq, old.continues_earlier_file),
        (Some(1), Some(2), false)
    );
    let new = verify_chain(&path).unwrap().unwrap();
    assert_eq!(
        (new.first_seq, new.last_seq, new.continues_earlier_file),
        (Some(3), Some(3), true)
    );
    let last_old = fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let first_new: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&path).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first_new["prev"].as_str().unwrap(), line_hash(last_old.as_bytes()));
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);

    // Someone put a file with records of its own there: its chain is the one continued.
    fs::rename(&path, dir.path().join("audit.jsonl.2")).unwrap();
    fs::copy(&rotated, &path).unwrap();
    assert!(log.reopen().unwrap());
    assert_eq!(log.append(&record("d", Decision::Allow)).unwrap(), 3);
    assert_eq!(verify_chain(&path).unwrap().unwrap().records, 3);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    AuditLog::open(&path)
        .unwrap()
        .append(&record("a", Decision::Allow))
        .unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&record("b", Decision::Warn)).unwrap(), 2);
    let summary = verify_chain(&path).unwrap().unwrap();
    assert_eq!(
        (summary.first_seq, summary.last_seq, summary.records),
        (Some(1), Some(2), 2)
    );
}

#[test]
fn torn_last_line_is_cut_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    AuditLog::open(&path)
        .unwrap()
        .append(&record("a", Decision::Allow))
        .unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"seq":2,"time":"half"#).unwrap();
    drop(f);
    assert!(verify_chain(&path).unwrap().is_err());
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&record("b", Decision::Allow)).unwrap(), 2);
    assert_eq!(verify_chain(&path).unwrap().unwrap().records, 2);
}

#[test]
fn every_single_byte_flip_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..3 {
        log.append(&record(&format!("img{i}"), Decision::Allow)).unwrap();
    }
    let original = fs::read(&path).unwrap();
    let last_line_start = original[..original.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    // Flipping any byte of any line but the last breaks the link to the next line, or the
    // line itself. The last line has no successor to vouch for it: a chain alone cannot
    // protect its newest record, only an external copy of the last hash can.
    for i in 0..last_line_start {
        let mut tampered = original.clone();
        tampered[i] ^= 0x01;
        fs::write(&path, &tampered).unwrap();
        assert!(verify_chain(&path).unwrap().is_err(), "flip at byte {i} not detected");
    }
}

#[test]
fn reports_the_first_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..4 {
        log.append(&record(&format!("img{i}"), Decision::Allow)).unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("img1", "imgX", 1);
    fs::write(&path, tampered).unwrap();
    let broken = verify_chain(&path).unwrap().unwrap_err();
    // Line 2 was edited; line 3's prev no longer matches it.
    assert_eq!(broken.line, 3);
    assert!(broken.why.contains("prev"), "{}", broken.why);
}

#[test]
fn removed_line_and_reordered_seq_are_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..3 {
        log.append(&record(&format!("img{i}"), Decision::Allow)).unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert_eq!(verify_chain(&path).unwrap().unwrap_err().line, 2);
    // Dropping the first line of a fresh chain is visible too: seq 2 cannot start a file
    // unless it continues a rotated one, which the summary says.
    fs::write(&path, format!("{}\n{}\n", lines[1], lines[2])).unwrap();
    assert!(verify_chain(&path).unwrap().unwrap().continues_earlier_file);
}

/// logrotate moved the file and created a new one, and a write fails before SIGHUP: the moved
/// file, which the log still writes to, is cut back to where it was, not to anything read at
/// the path, and the chain goes on in it once writes succeed again.
#[test]
fn a_failed_write_after_rotation_leaves_the_rotated_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    run_in_child(
        "audit::tests::in_child_a_failed_write_after_rotation_leaves_the_rotated_file_whole",
        dir.path(),
    );
    let rotated = verify_chain(&dir.path().join("audit.jsonl.1")).unwrap().unwrap();
    assert_eq!((rotated.records, rotated.last_seq), (4, Some(4)));
    assert_eq!(fs::read(dir.path().join("audit.jsonl")).unwrap(), b"");
}

#[test]
fn in_child_a_failed_write_after_rotation_leaves_the_rotated_file_whole() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("audit.jsonl");
    let rotated = dir.join("audit.jsonl.1");
    let log = AuditLog::open(&path).unwrap();
    for image in ["a", "b", "c"] {
        log.append(&record(image, Decision::Allow)).unwrap();
    }
    fs::rename(&path, &rotated).unwrap();
    // logrotate's `create`: an empty file at the path, before the signal.
    fs::write(&path, "").unwrap();
    let kept = fs::read_to_string(&rotated).unwrap();

    // Room for part of the next line only: the write is cut short, then refused.
    limit_file_size(Some(kept.len() as u64 + 20));
    let error = log.append(&record("d", Decision::Allow)).unwrap_err();
    assert!(error.to_string().contains("File too large"), "{error}");
    assert_eq!(
        fs::read_to_string(&rotated).unwrap(),
        kept,
        "the rotated file keeps every byte, and no more"
    );
    // Still full: a probe fails, and leaves no trace either.
    assert!(log.check_writable().is_err());
    assert_eq!(fs::read_to_string(&rotated).unwrap(), kept);

    limit_file_size(None);
    log.check_writable().unwrap();
    assert_eq!(
        fs::read_to_string(&rotated).unwrap(),
        kept,
        "the probe's bytes are cut off again"
    );
    assert_eq!(log.append(&record("d", Decision::Allow)).unwrap(), 4, "seq goes on");
    assert_eq!(verify_chain(&rotated).unwrap().unwrap().records, 4);
}

/// A healthy log is writable without anything being written to check it.
#[test]
fn a_healthy_log_is_writable_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    log.append(&record("a", Decision::Allow)).unwrap();
    let modified = fs::metadata(&path).unwrap().modified().unwrap();
    let kept = fs::read(&path).unwrap();
    log.check_writable().unwrap();
    assert_eq!(fs::read(&path).unwrap(), kept);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
}

/// SPEC §6: one schema: every key in every record, `null` (or empty) where nothing applies.
#[test]
fn every_record_carries_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let mut refused = record("", Decision::Deny);
    refused.event = Event::PeerRefused;
    (refused.rule, refused.outcome, refused.count) = (None, None, Some(3));
    log.append(&refused).unwrap();
    let mut failed = record("a", Decision::Allow);
    failed.outcome = Some(Outcome::Failed);
    failed.error = Some("connection refused".into());
    log.append(&failed).unwrap();

    let keys = [
        "seq",
        "time",
        "prev",
        "event",
        "image",
        "digest",
        "namespace",
        "pod",
        "rule",
        "mode",
        "decision",
        "reason",
        "outcome",
        "error",
        "signatures",
        "attestations",
        "rejected",
        "durationMs",
        "cache",
        "count",
    ];
    let text = fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Map<String, serde_json::Value>> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for record in &records {
        let mut have: Vec<&str> = record.keys().map(String::as_str).collect();
        let mut want = keys.to_vec();
        have.sort_unstable();
        want.sort_unstable();
        assert_eq!(have, want);
    }
    let refused = &records[0];
    assert_eq!(
        (
            &refused["digest"],
            &refused["rule"],
            &refused["outcome"],
            &refused["count"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!(3)
        )
    );
    assert_eq!(refused["rejected"], serde_json::json!([]));
    let failed = &records[1];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["error"], "connection refused");
    assert_eq!(failed["count"], serde_json::Value::Null);
}

#[test]
fn unwritable_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    // /dev/full accepts the open and fails every write with ENOSPC.
    let full = AuditLog {
        chain: Arc::new(Mutex::new(Chain {
            path: "/dev/full".into(),
            file: OpenOptions::new().append(true).open("/dev/full").unwrap(),
            seq: 0,
            prev: GENESIS.into(),
            failing: None,
        })),
    };
    let err = full.append(&record("a", Decision::Allow)).unwrap_err();
    assert!(err.to_string().contains("/dev/full"), "{err}");
    // The healthy log is unaffected.
    assert_eq!(log.append(&record("a", Decision::Allow)).unwrap(), 1);
}

#[test]
fn verify_text_names_signatures_and_each_attestation_with_its_outcome() {
    use crate::verify::{AttestationOutcome, AttestationResult, Evidence};
    let evidence = Evidence {
        authority: "ci".into(),
        kind: "keyless",
        subject: Some("https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1".into()),
        issuer: Some("https://token.actions.githubusercontent.com".into()),
        tlog_index: Some(42),
        time_source: "tlog",
        signed_at: Some(1_763_856_000),
        certified_from: None,
        scheme: None,
        valid_until: None,
    };
    let mut record = record("registry.example.com/app:v1", Decision::Deny);
    record.digest = Some(format!("sha256:{}", "ab".repeat(32)));
    record.signatures = vec![(&evidence).into()];
    record.attestations = [
        AttestationOutcome {
            name: "sbom".into(),
            predicate_type: "https://cyclonedx.org/bom".into(),
            result: AttestationResult::Pass,
            reason: None,
            signature: Some(evidence),
        },
        AttestationOutcome {
            name: "scan".into(),
            predicate_type: "https://security.sigstore.dev/attestations/vuln/trivy/v1".into(),
            result: AttestationResult::Fail,
            reason: Some("condition 'predicate.critical == 0' is false".into()),
            signature: None,
        },
    ]
    .iter()
    .map(super::Attested::from)
    .collect();
    record.rejected = vec!["key mismatch".into()];
    let text = record.to_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "DENY       registry.example.com/app:v1", "{text}");
    assert!(text.contains("  signed   authority \"ci\" (keyless)\n"), "{text}");
    assert!(text.contains("tlog     42 (signing time from: tlog)"), "{text}");
    assert!(text.contains("signed   2025-11-23T00:00:00Z"), "{text}");
    assert!(
        text.contains("  attested \"sbom\" pass: CycloneDX SBOM, https://cyclonedx.org/bom\n"),
        "{text}"
    );
    assert!(text.contains("by authority \"ci\" (keyless)"), "{text}");
    assert!(text.contains("\n  rejected key mismatch\n"), "{text}");
    assert!(
        text.contains("  attested \"scan\" FAIL: https://security.sigstore.dev/attestations/vuln/trivy/v1\n"),
        "{text}"
    );
    assert!(text.contains("condition 'predicate.critical == 0' is false"), "{text}");
}

/// The audit log spells signatures and attestations in its own types: the keys SPEC §6 and
/// docs/audit-log.md promise, whatever verify's evidence types are called.
#[test]
fn signatures_and_attestations_keep_the_logs_spelling() {
    use crate::verify::{AttestationOutcome, AttestationResult, Evidence};
    let evidence = Evidence {
        authority: "ci".into(),
        kind: "keyless",
        subject: Some("s".into()),
        issuer: Some("i".into()),
        tlog_index: Some(7),
        time_source: "tlog+tsa",
        signed_at: Some(1),
        certified_from: None,
        scheme: None,
        valid_until: None,
    };
    assert_eq!(
        serde_json::to_value(super::Signature::from(&evidence)).unwrap(),
        serde_json::json!({"authority": "ci", "kind": "keyless", "subject": "s", "issuer": "i",
                           "tlogIndex": 7, "timeSource": "tlog+tsa", "signedAt": 1})
    );
    let outcome = AttestationOutcome {
        name: "sbom".into(),
        predicate_type: "https://cyclonedx.org/bom".into(),
        result: AttestationResult::Fail,
        reason: Some("why".into()),
        signature: None,
    };
    assert_eq!(
        serde_json::to_value(super::Attested::from(&outcome)).unwrap(),
        serde_json::json!({"name": "sbom", "predicateType": "https://cyclonedx.org/bom",
                           "result": "fail", "reason": "why"})
    );
}

/// A Notation signature's evidence: kind, subject DN, signing scheme and what fixed the time
/// its chain was checked at, in the record and in `pullgate verify`'s text.
#[test]
fn notation_evidence_names_its_scheme_and_time_source() {
    use crate::verify::Evidence;
    let evidence = Evidence {
        authority: "notary".into(),
        kind: "notation",
        subject: Some("C=US, ST=WA, O=pullgate.test, CN=release".into()),
        issuer: None,
        tlog_index: None,
        time_source: "tsa",
        signed_at: Some(1_763_856_000),
        certified_from: None,
        scheme: Some("notary.x509"),
        valid_until: None,
    };
    assert_eq!(
        serde_json::to_value(super::Signature::from(&evidence)).unwrap(),
        serde_json::json!({"authority": "notary", "kind": "notation", "subject": "C=US, ST=WA, O=pullgate.test, CN=release",
                           "timeSource": "tsa", "signedAt": 1_763_856_000, "scheme": "notary.x509"})
    );
    let mut record = record("registry.example.com/app:v1", Decision::Allow);
    record.signatures = vec![(&evidence).into()];
    let text = record.to_text();
    assert!(text.contains("  signed   authority \"notary\" (notation)\n"), "{text}");
    assert!(
        text.contains("  subject  C=US, ST=WA, O=pullgate.test, CN=release\n"),
        "{text}"
    );
    assert!(
        text.contains("  scheme   notary.x509 (chain checked at: tsa)\n"),
        "{text}"
    );
    assert!(!text.contains("tlog "), "{text}");
}
