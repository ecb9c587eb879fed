//! The binary the nodes run: an x86-64 Linux ELF whose glibc symbol versions stay at or below
//! the oldest supported node's (`scripts/check-binary.sh`, run here on the binary the suite
//! built), an installer that refuses a binary the node cannot run before touching anything,
//! and a DaemonSet that lands only on the nodes the binary is built for.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pullgate_tests::Pullgate;
use tempfile::TempDir;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The floor `scripts/check-binary.sh` holds binaries to, from its `GLIBC_FLOOR=` line.
fn stated_floor() -> String {
    let script = fs::read_to_string(repo().join("scripts/check-binary.sh")).unwrap();
    script
        .lines()
        .find_map(|l| l.strip_prefix("GLIBC_FLOOR="))
        .expect("scripts/check-binary.sh sets GLIBC_FLOOR=")
        .to_string()
}

/// `scripts/check-binary.sh [args] BINARY`, or None (the test then checks nothing) where
/// objdump is missing outside CI.
fn check_binary(args: &[&str], binary: &Path) -> Option<Output> {
    pullgate_tests::process::required_tool("objdump")?;
    Some(
        Command::new(repo().join("scripts/check-binary.sh"))
            .args(args)
            .arg(binary)
            .output()
            .unwrap(),
    )
}

/// The highest glibc version the check reports for a binary it passed ("needs glibc 2.34").
fn needed_glibc(output: &Output) -> (u32, u32) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = stdout
        .split("needs glibc ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no glibc version in {}", text(output)));
    let (major, minor) = version.split_once('.').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

/// A 64-byte ELF header (no sections, no program) for the machine `e_machine`.
fn elf_header(e_machine: u16) -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    header[16] = 2; // ET_EXEC
    header[18..20].copy_from_slice(&e_machine.to_le_bytes());
    header[20] = 1; // EV_CURRENT
    header[52] = 64; // e_ehsize
    header
}

const EM_AARCH64: u16 = 183;

/// A copy of the system's `true` that names GLIBC_9.x wherever it names GLIBC_2.x: a real
/// executable the loader refuses exactly as it refuses a binary built against a newer glibc.
fn needs_a_future_glibc(dir: &Path) -> PathBuf {
    let original = fs::read("/bin/true").unwrap();
    let (from, to) = (b"GLIBC_2.", b"GLIBC_9.");
    let mut patched = original.clone();
    let mut replaced = 0;
    let mut at = 0;
    while let Some(offset) = patched[at..].windows(from.len()).position(|w| w == from) {
        let start = at + offset;
        patched[start..start + to.len()].copy_from_slice(to);
        replaced += 1;
        at = start + from.len();
    }
    assert!(replaced > 0, "/bin/true names no GLIBC_2. version");
    let path = dir.join("future-glibc");
    fs::write(&path, patched).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn write_executable(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

// === the glibc and architecture check ===

#[test]
fn the_built_binary_is_x86_64_and_needs_no_glibc_above_the_floor() {
    let binary = Pullgate::binary();
    let Some(output) = check_binary(&[], &binary) else {
        return;
    };
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("x86-64 ELF"), "{}", text(&output));
    assert!(
        stdout.contains(&format!("(floor {})", stated_floor())),
        "{}",
        text(&output)
    );
}

/// The check can fail: one minor version below what the binary needs, it names the version and
/// the symbols that need it.
#[test]
fn the_glibc_check_fails_with_a_lowered_floor() {
    let binary = Pullgate::binary();
    let Some(passed) = check_binary(&[], &binary) else {
        return;
    };
    let (major, minor) = needed_glibc(&passed);
    let lowered = format!("{major}.{}", minor - 1);
    let output = check_binary(&["--glibc-floor", &lowered], &binary).unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("needs glibc {major}.{minor}, above the floor {lowered}")),
        "{}",
        text(&output)
    );
    assert!(
        stderr.contains(&format!("GLIBC_{major}.{minor} ")),
        "names the symbols: {}",
        text(&output)
    );
}

#[test]
fn the_check_refuses_another_architecture_a_macos_build_and_a_newer_glibc() {
    let dir = TempDir::new().unwrap();
    let arm64 = write_executable(dir.path(), "arm64", &elf_header(EM_AARCH64));
    let Some(output) = check_binary(&[], &arm64) else {
        return;
    };
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not an x86-64 ELF executable"),
        "{}",
        text(&output)
    );

    let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe];
    macho.resize(64, 0);
    let macho = write_executable(dir.path(), "macho", &macho);
    let output = check_binary(&[], &macho).unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not an ELF file"),
        "{}",
        text(&output)
    );

    let future = needs_a_future_glibc(dir.path());
    let output = check_binary(&[], &future).unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("above the floor"),
        "{}",
        text(&output)
    );
}

// === install.sh refuses what the node cannot run ===

/// `install.sh --dry-run --root <empty tree> --binary BINARY`, the run check running the binary
/// here (this machine stands in for the node), with extra environment.
fn install(root: &Path, binary: &Path, env: &[(&str, &str)]) -> Output {
    let policy = root.parent().unwrap().join("policy.yaml");
    fs::write(&policy, "# any policy: the binary is refused before it is read\n").unwrap();
    let mut cmd = Command::new(repo().join("installer/install.sh"));
    cmd.arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(binary)
        .arg("--policy")
        .arg(&policy)
        .args(["--no-kubelet-wiring", "--dry-run"])
        .env("SYSTEMCTL", "")
        .env("PULLGATE_CHECK_CMD", "")
        .env("PULLGATE_RUN_CMD", r#""$PULLGATE_CANDIDATE" --version"#)
        .env_remove("PULLGATE_NODE_ARCH");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

/// The installer refuses, with `message` in its error, and the tree stays empty.
fn assert_refused(output: &Output, root: &Path, message: &str) {
    assert!(!output.status.success(), "{}", text(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "expected {message:?}: {}", text(output));
    assert_eq!(
        fs::read_dir(root).unwrap().count(),
        0,
        "the node was touched: {}",
        text(output)
    );
}

#[test]
fn install_refuses_a_binary_the_node_cannot_run() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("node");
    fs::create_dir(&root).unwrap();
    let uname = String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout).unwrap();
    assert_eq!(
        uname.trim(),
        "x86_64",
        "these tests state x86_64 as the node's architecture"
    );

    let arm64 = write_executable(dir.path(), "arm64", &elf_header(EM_AARCH64));
    assert_refused(
        &install(&root, &arm64, &[]),
        &root,
        "is built for aarch64, but this node is x86_64",
    );

    let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe];
    macho.resize(64, 0);
    let macho = write_executable(dir.path(), "macho", &macho);
    assert_refused(&install(&root, &macho, &[]), &root, "is a macOS (Mach-O) executable");

    let script = write_executable(dir.path(), "script", b"#!/bin/sh\necho pullgate 0.1.0\n");
    assert_refused(
        &install(&root, &script, &[]),
        &root,
        "is a script, not the pullgate binary",
    );

    // The real binary, on an aarch64 node.
    assert_refused(
        &install(&root, &Pullgate::binary(), &[("PULLGATE_NODE_ARCH", "aarch64")]),
        &root,
        "is built for x86_64, but this node is aarch64",
    );

    // The right architecture, but the loader refuses it: what a build on a newer distribution
    // than the node's looks like. The loader's own message is shown.
    let future = needs_a_future_glibc(dir.path());
    let output = install(&root, &future, &[]);
    assert_refused(&output, &root, "does not run on this node");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("version `GLIBC_9."),
        "the loader's message: {}",
        text(&output)
    );

    // An x86_64 program that runs but is not pullgate.
    assert_refused(&install(&root, Path::new("/bin/true"), &[]), &root, "is not pullgate");

    // The real binary passes the check and goes on to the dry run.
    let output = install(&root, &Pullgate::binary(), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("binary") && l.contains(": pullgate ") && l.ends_with("(x86_64)")),
        "{}",
        text(&output)
    );
}

/// With `--root` and no way to run the binary as the node would, the installer says it did
/// not run it instead of running it in the wrong place; the architecture is still checked.
#[test]
fn install_under_root_without_a_run_command_says_it_did_not_run_the_binary() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("node");
    fs::create_dir(&root).unwrap();
    let output = install(&root, &Pullgate::binary(), &[("PULLGATE_RUN_CMD", "")]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("not run"),
        "{}",
        text(&output)
    );

    let arm64 = write_executable(dir.path(), "arm64", &elf_header(EM_AARCH64));
    assert_refused(
        &install(&root, &arm64, &[("PULLGATE_RUN_CMD", "")]),
        &root,
        "is built for aarch64",
    );
}

// === where the binary is scheduled, and what the docs state ===

#[test]
fn the_daemonset_lands_only_on_linux_amd64_nodes() {
    let manifests = fs::read_to_string(repo().join("installer/kubernetes/daemonset.yaml")).unwrap();
    let mut daemonsets = 0;
    for document in serde_yaml_ng::Deserializer::from_str(&manifests) {
        let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(document).unwrap();
        if value["kind"].as_str() != Some("DaemonSet") {
            continue;
        }
        daemonsets += 1;
        let selector = &value["spec"]["template"]["spec"]["nodeSelector"];
        assert_eq!(selector["kubernetes.io/os"].as_str(), Some("linux"), "{selector:?}");
        assert_eq!(selector["kubernetes.io/arch"].as_str(), Some("amd64"), "{selector:?}");
    }
    assert_eq!(daemonsets, 1);
}

/// The install pages state the architecture and the glibc floor the check holds binaries to.
#[test]
fn the_install_pages_state_the_architecture_and_the_glibc_floor() {
    let floor = format!("glibc {}", stated_floor());
    for page in [
        "README.md",
        "docs/building.md",
        "docs/install-kubeadm.md",
        "docs/install-aks.md",
        "docs/quickstart-kind.md",
        "installer/README.md",
        "installer/kubernetes/README.md",
    ] {
        let text = fs::read_to_string(repo().join(page)).unwrap();
        assert!(
            text.contains("x86_64"),
            "{page} does not state the architecture (x86_64)"
        );
        assert!(
            page == "docs/quickstart-kind.md" || text.contains(&floor),
            "{page} does not state the floor ({floor})"
        );
    }
}
