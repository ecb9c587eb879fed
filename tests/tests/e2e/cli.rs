//! The command line's own promises: `--version` names the release and the git revision.

use std::process::Command;

use pullgate_tests::Pullgate;

/// The trimmed output of a successful git command run in this checkout, if git and a checkout
/// are there.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn version_names_the_release_and_a_commit_of_this_repository() {
    let output = Command::new(Pullgate::binary())
        .arg("--version")
        .output()
        .expect("run pullgate --version");
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let release = env!("CARGO_PKG_VERSION");
    let revision = line
        .strip_prefix(&format!("pullgate {release} (git "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?} is not `pullgate {release} (git <revision>)`"));

    match git(&["rev-parse", "--git-dir"]) {
        // Built in a checkout: the revision is one of its commits, abbreviated to 12 digits.
        Some(_) => {
            assert_eq!(revision.len(), 12, "{line:?}");
            assert!(revision.bytes().all(|b| b.is_ascii_hexdigit()), "{line:?}");
            assert!(
                git(&["cat-file", "-e", &format!("{revision}^{{commit}}")]).is_some(),
                "{revision} is not a commit of this repository"
            );
        }
        // No git or no checkout: the build could not know.
        None => assert_eq!(revision, "unknown", "{line:?}"),
    }
}

#[test]
fn every_command_has_help_and_the_version() {
    let commands: [&[&str]; 8] = [
        &["serve"],
        &["verify"],
        &["policy", "check"],
        &["policy", "import"],
        &["policy"],
        &["audit", "verify"],
        &["doctor"],
        &[],
    ];
    for command in commands {
        let output = Command::new(Pullgate::binary())
            .args(command)
            .arg("--help")
            .output()
            .expect("run pullgate --help");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}: {output:?}");
        assert!(help.contains("Usage: pullgate"), "{command:?}: {help}");
        let output = Command::new(Pullgate::binary())
            .args(command)
            .arg("--version")
            .output()
            .expect("run pullgate --version");
        let version = String::from_utf8_lossy(&output.stdout);
        assert!(version.contains(pullgate::VERSION), "{command:?}: {version}");
    }
}

/// `pullgate verify`'s text output, against a real registry: the decision and image first, then
/// one aligned line per fact (rule, mode, reason, digest), each signature that counted, and each
/// one found that did not with why. Exit 0 allowed, 1 denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_prints_each_signature_checked_and_why() {
    let env = pullgate_tests::TestEnv::start().await;
    let digest = env.push_signed_image("apps/app", "v1", "verify output").await;
    let images = format!("{}/apps/**", env.host());
    let dir = tempfile::tempdir().unwrap();
    let run = |policy: String| {
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, policy).unwrap();
        // The rig's registry is plain HTTP: a configuration marks it insecure.
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "policy: {}\nregistries:\n  - host: \"{}\"\n    insecure: true\n",
                path.display(),
                env.host()
            ),
        )
        .unwrap();
        let output = Pullgate::command()
            .args(["verify", "--config"])
            .arg(&config)
            .arg(env.image_ref("apps/app", "v1"))
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };

    let (code, text) = run(env.key_policy(&[&images]));
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("ALLOW      {}", env.image_ref("apps/app", "v1")),
        "{text}"
    );
    assert_eq!(lines[1], "  rule     signed", "{text}");
    assert_eq!(lines[2], "  mode     enforce", "{text}");
    assert_eq!(lines[3], "  reason   verified by authority \"test-key\"", "{text}");
    assert_eq!(lines[4], format!("  digest   {digest}"), "{text}");
    assert_eq!(lines[5], "  signed   authority \"test-key\" (key)", "{text}");

    // Another key: the one signature found is named, with why it did not count.
    let other = pullgate_tests::signer::Signer::generate();
    let (code, text) = run(pullgate_tests::policy::key_policy(
        "other-key",
        &other.public_key_pem(),
        &[&images],
    ));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("DENY       "), "{text}");
    assert!(
        text.contains("  reason   SignatureValidationFailed: ")
            && text.contains("no signature from authority \"other-key\" (1 signature found: 1 key mismatch)"),
        "{text}"
    );
    assert!(text.contains("\n  rejected key mismatch\n"), "{text}");
    assert!(!text.contains("  signed "), "{text}");
}
