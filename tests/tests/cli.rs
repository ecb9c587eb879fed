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
    let commands: [&[&str]; 7] = [
        &["serve"],
        &["verify"],
        &["policy", "check"],
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
