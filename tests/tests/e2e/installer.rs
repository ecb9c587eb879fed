//! `installer/install.sh` and `installer/uninstall.sh` run for real against a node's file tree
//! (`--root`), with the real pullgate binary checking the installed policy. The one stand-in is
//! systemctl: a small script that records each call and keeps which units are enabled and
//! active, so the tests see what the installer would do to systemd and kubelet.
//!
//! A tree is compared as paths, types, modes and contents (sha256), so "exactly as before" means
//! byte for byte, mode for mode.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::{
        fs::{FileTypeExt, PermissionsExt},
        net::UnixListener,
    },
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pullgate_tests::{sigstore::TestSigstore, Pullgate, Signer};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A systemctl that records its arguments, one call per line, in `$FAKE_SYSTEMCTL_STATE/calls`,
/// and keeps unit state in `active` and `enabled` there: `is-active` and `is-enabled` answer
/// from them, `start`/`stop`/`enable`/`disable` change them.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
# A recording systemctl for the installer tests: every call is appended to $state/calls, and
# unit state lives in $state/active and $state/enabled, one unit name a line.
set -eu
state=${FAKE_SYSTEMCTL_STATE:?}
printf '%s\n' "$*" >>"$state/calls"
touch "$state/active" "$state/enabled"
verb=$1
shift
units=
for arg in "$@"; do
    case $arg in
    -*) ;;
    *) units="$units $arg" ;;
    esac
done
has() { grep -qxF "$2" "$state/$1"; }
add() { has "$1" "$2" || printf '%s\n' "$2" >>"$state/$1"; }
del() {
    grep -vxF "$2" "$state/$1" >"$state/$1.new" || true
    mv "$state/$1.new" "$state/$1"
}
for unit in $units; do
    case $verb in
    is-active | status) has active "$unit" || exit 3 ;;
    is-enabled) has enabled "$unit" || exit 1 ;;
    start | restart | reload) add active "$unit" ;;
    stop) del active "$unit" ;;
    enable) add enabled "$unit" ;;
    disable)
        del enabled "$unit"
        case " $* " in *" --now "*) del active "$unit" ;; esac
        ;;
    esac
done
"#;

/// A stand-in for `pullgate doctor` on the host, whose verdict the test sets: it prints
/// `$FAKE_DOCTOR_STATE/out` and exits with the number in `$FAKE_DOCTOR_STATE/status` (0 when
/// there is none). The real doctor judges a real node; here the tests need to flip its verdict.
const FAKE_DOCTOR: &str = r#"#!/bin/sh
state=${FAKE_DOCTOR_STATE:?}
cat "$state/out" 2>/dev/null
exit "$(cat "$state/status" 2>/dev/null || echo 0)"
"#;

/// kubelet.service as the kubelet package ships it, and kubeadm's drop-in.
const KUBELET_SERVICE: &str = "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\n\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n";
const KUBEADM_DROPIN: &str = r#"[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

/// What the node had before pullgate: an operator's own policy and a hand-made drop-in where
/// the installer puts its own, both of which install.sh replaces and uninstall.sh restores.
const OPERATOR_POLICY: &str = "# the operator's policy, from before pullgate's installer\n";
const OPERATOR_DROPIN: &str = "[Service]\nEnvironment=OPERATOR=1\n";

const POLICY: &str = "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: node-default\nspec:\n  rules:\n    - name: system\n      images: [\"registry.k8s.io/**\"]\n      action: allow\n";
const POLICY_V2: &str = "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: node-default\nspec:\n  noMatch: deny\n  rules:\n    - name: system\n      images: [\"registry.k8s.io/**\", \"docker.io/kindest/**\"]\n      action: allow\n";

/// install.sh's run check for a `--root` tree: this machine stands in for the node, so the
/// candidate binary runs here as it is.
const RUN_HERE: &str = r#""$PULLGATE_CANDIDATE" --version"#;

const DROPIN: &str = "etc/systemd/system/kubelet.service.d/90-pullgate.conf";
const LOGROTATE: &str = "etc/logrotate.d/pullgate";
const STATE: &str = "var/lib/pullgate/install";

// === a tree snapshot ===

/// What a path is, as far as "the node is exactly as before" is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: Mode },
    File { mode: Mode, sha256: String },
    Symlink { target: PathBuf },
    Socket { mode: Mode },
}

/// Permission bits, shown in octal.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mode(u32);

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

type Tree = BTreeMap<PathBuf, Entry>;

fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = Mode(meta.permissions().mode() & 0o7777);
        let kind = meta.file_type();
        let entry = if kind.is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&path).unwrap(),
            }
        } else if kind.is_dir() {
            Entry::Dir { mode }
        } else if kind.is_socket() {
            Entry::Socket { mode }
        } else {
            Entry::File {
                mode,
                sha256: hex::encode(Sha256::digest(fs::read(&path).unwrap())),
            }
        };
        tree.insert(path.strip_prefix(root).unwrap().to_owned(), entry.clone());
        if matches!(entry, Entry::Dir { .. }) {
            walk(root, &path, tree);
        }
    }
}

/// Panics listing every path that was added, removed or changed between `before` and `after`.
fn assert_same_tree(before: &Tree, after: &Tree, what: &str) {
    let mut differences = Vec::new();
    for (path, entry) in before {
        match after.get(path) {
            None => differences.push(format!("  removed {}: {entry:?}", path.display())),
            Some(now) if now != entry => {
                differences.push(format!("  changed {}: {entry:?} -> {now:?}", path.display()))
            }
            Some(_) => {}
        }
    }
    for (path, entry) in after {
        if !before.contains_key(path) {
            differences.push(format!("  added   {}: {entry:?}", path.display()));
        }
    }
    assert!(differences.is_empty(), "{what}:\n{}", differences.join("\n"));
}

// === a node ===

/// A kubeadm node's file tree, the inputs to install, and a recording systemctl, all in one
/// temp dir. kubelet is running (the fake says so) and pullgate's socket exists, as systemd would
/// hold it once pullgate.socket runs.
struct Node {
    dir: TempDir,
    _socket: UnixListener,
}

/// How a run of a script ended.
struct Run {
    output: Output,
}

impl Run {
    fn ok(&self) -> bool {
        self.output.status.success()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "expected success, got {}", self.describe());
        self
    }
    #[track_caller]
    fn assert_failed(&self) -> &Self {
        assert!(!self.ok(), "expected failure, got {}", self.describe());
        self
    }
}

impl Node {
    /// A node with the kubelet package's units, an operator's policy and a hand-made drop-in
    /// (mode 0600) where pullgate's goes.
    fn kubeadm() -> Node {
        let node = Node::bare();
        node.write("usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE, 0o644);
        node.write(
            "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
            KUBEADM_DROPIN,
            0o644,
        );
        node.write("etc/pullgate/policy.yaml", OPERATOR_POLICY, 0o644);
        node.write(DROPIN, OPERATOR_DROPIN, 0o600);
        node
    }

    /// A node with nothing but its running kubelet (per the fake systemctl) and pullgate's
    /// socket directory.
    fn bare() -> Node {
        let dir = tempfile::Builder::new().prefix("pullgate-installer").tempdir().unwrap();
        for sub in ["root/run/pullgate", "systemctl", "inputs", "tmp", "doctor"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let socket = UnixListener::bind(dir.path().join("root/run/pullgate/pullgate.sock")).unwrap();
        let fake = dir.path().join("fake-systemctl");
        fs::write(&fake, FAKE_SYSTEMCTL).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let doctor = dir.path().join("fake-doctor");
        fs::write(&doctor, FAKE_DOCTOR).unwrap();
        fs::set_permissions(&doctor, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("systemctl/active"), "kubelet.service\n").unwrap();
        fs::write(dir.path().join("systemctl/enabled"), "kubelet.service\n").unwrap();
        fs::write(dir.path().join("inputs/policy.yaml"), POLICY).unwrap();
        TestSigstore::new().write_trusted_root(&dir.path().join("inputs"));
        Node { dir, _socket: socket }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn input(&self, name: &str) -> PathBuf {
        self.dir.path().join("inputs").join(name)
    }

    fn write(&self, relative: &str, contents: &str, mode: u32) {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, relative: &str) -> String {
        let path = self.root().join(relative);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn mode(&self, relative: &str) -> u32 {
        fs::symlink_metadata(self.root().join(relative))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn snapshot(&self) -> Tree {
        snapshot(&self.root())
    }

    /// `install.sh --root <node> --binary <pullgate> --policy <inputs/policy.yaml>
    /// --trusted-root <inputs/trusted_root.json>`, then `extra`.
    fn install(&self, extra: &[&str]) -> Run {
        self.install_with(extra, &[])
    }

    fn install_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut args: Vec<String> = vec![
            "--binary".into(),
            Pullgate::binary().display().to_string(),
            "--policy".into(),
            self.input("policy.yaml").display().to_string(),
            "--trusted-root".into(),
            self.input("trusted_root.json").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.run("install.sh", &args, env)
    }

    fn uninstall(&self, extra: &[&str]) -> Run {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        self.run("uninstall.sh", &args, &[])
    }

    /// Runs an installer script with the node's root, the recording systemctl, and the real
    /// pullgate binary (the installed one) checking the installed policy.
    fn run(&self, script: &str, args: &[String], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(repo().join("installer").join(script));
        cmd.arg("--root").arg(self.root()).args(args);
        for var in [
            "PULLGATE_READY_CMD",
            "KUBELET_READY_CMD",
            "PULLGATE_READY_TIMEOUT",
            "PULLGATE_CHECK_CMD",
            "PULLGATE_NODE_ARCH",
            "SYSTEMCTL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("SYSTEMCTL", self.dir.path().join("fake-systemctl"))
            .env("PULLGATE_RUN_CMD", RUN_HERE)
            .env("FAKE_SYSTEMCTL_STATE", self.dir.path().join("systemctl"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env(
                "PULLGATE_CHECK_CMD",
                r#""$PULLGATE_ROOT/usr/local/bin/pullgate" policy check "$PULLGATE_ROOT/etc/pullgate/policy.yaml""#,
            );
        for (key, value) in env {
            if value.is_empty() {
                cmd.env_remove(key);
            } else {
                cmd.env(key, value);
            }
        }
        Run {
            output: cmd.output().unwrap_or_else(|e| panic!("run {script}: {e}")),
        }
    }

    /// systemctl calls since the last [`Node::forget_calls`], one string each.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("systemctl/calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn forget_calls(&self) {
        let _ = fs::remove_file(self.dir.path().join("systemctl/calls"));
    }

    /// The DaemonSet's inputs, as its ConfigMap and Secret would be mounted: the policy given,
    /// the installer's default configuration and the node's trusted root.
    fn sync_source(&self, policy: &str) -> PathBuf {
        let source = self.dir.path().join("source");
        fs::create_dir_all(source.join("config")).unwrap();
        fs::create_dir_all(source.join("trust")).unwrap();
        fs::write(source.join("config/policy.yaml"), policy).unwrap();
        fs::copy(repo().join("installer/config.yaml"), source.join("config/config.yaml")).unwrap();
        fs::copy(self.input("trusted_root.json"), source.join("trust/trusted_root.json")).unwrap();
        source
    }

    /// One pass of `node-sync.sh --once` with the inputs in `self.sync_source`, the recording
    /// systemctl, and the doctor stand-in unless `env` gives PULLGATE_DOCTOR_CMD.
    fn node_sync(&self, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.node_sync_command(Command::new(repo().join("installer/kubernetes/node-sync.sh")));
        cmd.arg("--once");
        for (key, value) in env {
            cmd.env(key, value);
        }
        Run {
            output: cmd.output().unwrap(),
        }
    }

    /// `cmd` (node-sync.sh, or something that runs it) with node-sync's environment for this node.
    fn node_sync_command(&self, mut cmd: Command) -> Command {
        let source = self.dir.path().join("source");
        cmd.env("HOST_ROOT", self.root())
            .env("PULLGATE_SOURCE_CONFIG", source.join("config"))
            .env("PULLGATE_SOURCE_TRUST", source.join("trust"))
            .env("PULLGATE_BINARY", Pullgate::binary())
            .env("PULLGATE_SYNC_STATE", self.sync_state())
            .env("SYSTEMCTL", self.dir.path().join("fake-systemctl"))
            .env("FAKE_SYSTEMCTL_STATE", self.dir.path().join("systemctl"))
            .env("PULLGATE_DOCTOR_CMD", self.dir.path().join("fake-doctor"))
            .env("FAKE_DOCTOR_STATE", self.dir.path().join("doctor"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env(
                "PULLGATE_CHECK_CMD",
                r#""$PULLGATE_ROOT/usr/local/bin/pullgate" policy check "$PULLGATE_ROOT/etc/pullgate/policy.yaml""#,
            )
            .env("PULLGATE_RUN_CMD", RUN_HERE)
            .env_remove("PULLGATE_READY_CMD")
            .env_remove("KUBELET_READY_CMD");
        cmd
    }

    fn sync_state(&self) -> PathBuf {
        self.dir.path().join("sync")
    }

    /// Whether the pod's readiness probe (`test -f /run/pullgate-sync/ready`) would pass.
    fn ready(&self) -> bool {
        self.sync_state().join("ready").exists()
    }

    /// What the doctor stand-in says next: its exit status and output.
    fn doctor_says(&self, status: i32, out: &str) {
        fs::write(self.dir.path().join("doctor/status"), status.to_string()).unwrap();
        fs::write(self.dir.path().join("doctor/out"), out).unwrap();
    }

    fn units(&self, which: &str) -> Vec<String> {
        let mut units: Vec<String> = fs::read_to_string(self.dir.path().join("systemctl").join(which))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        units.sort();
        units
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn repo_file(relative: &str) -> Vec<u8> {
    fs::read(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The calls that change something (everything but is-active, is-enabled and status).
fn changes(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .map(String::as_str)
        .filter(|c| !c.starts_with("is-active") && !c.starts_with("is-enabled") && !c.starts_with("status"))
        .collect()
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no systemctl {call:?} in {calls:#?}"))
}

fn tool(name: &str) -> Option<PathBuf> {
    pullgate_tests::process::required_tool(name)
}

// === tests ===

#[test]
fn install_is_idempotent_and_uninstall_restores_the_node_exactly() {
    let node = Node::kubeadm();
    let original = node.snapshot();

    let run = node.install(&[]);
    run.assert_ok();
    let binary = fs::read(Pullgate::binary()).unwrap();
    assert!(fs::read(node.root().join("usr/local/bin/pullgate")).unwrap() == binary);
    for (path, mode) in [
        ("usr/local/bin/pullgate", 0o755),
        ("etc/systemd/system/pullgate.socket", 0o644),
        ("etc/systemd/system/pullgate.service", 0o644),
        ("etc/pullgate/config.yaml", 0o640),
        ("etc/pullgate/policy.yaml", 0o640),
        ("etc/pullgate/trust/trusted_root.json", 0o640),
        (LOGROTATE, 0o644),
        (DROPIN, 0o644),
        ("etc/pullgate/trust", 0o750),
        (STATE, 0o700),
    ] {
        assert_eq!(node.mode(path), mode, "mode of {path}");
    }
    assert_eq!(
        node.read("etc/systemd/system/pullgate.socket").as_bytes(),
        repo_file("systemd/pullgate.socket")
    );
    assert_eq!(
        node.read("etc/systemd/system/pullgate.service").as_bytes(),
        repo_file("systemd/pullgate.service")
    );
    assert_eq!(node.read(LOGROTATE).as_bytes(), repo_file("systemd/pullgate.logrotate"));
    assert!(
        run.stderr().contains("no logrotate under") && run.stderr().contains("docs/audit-log.md"),
        "a node without logrotate is told: {}",
        run.describe()
    );
    assert_eq!(
        node.read("etc/pullgate/config.yaml").as_bytes(),
        repo_file("installer/config.yaml"),
        "no --config and none on the node: the shipped default"
    );
    assert_eq!(node.read("etc/pullgate/policy.yaml"), POLICY);
    assert_eq!(
        fs::read(node.root().join("etc/pullgate/trust/trusted_root.json")).unwrap(),
        fs::read(node.input("trusted_root.json")).unwrap()
    );
    // On a kubeadm node the drop-in is the shipped one, byte for byte.
    assert_eq!(node.read(DROPIN).as_bytes(), repo_file("systemd/kubelet-pullgate.conf"));
    // What the node had is kept for uninstall.
    assert_eq!(
        node.read(&format!("{STATE}/orig/etc/pullgate/policy.yaml")),
        OPERATOR_POLICY
    );
    assert_eq!(node.read(&format!("{STATE}/orig/{DROPIN}")), OPERATOR_DROPIN);
    assert!(run.stdout().contains("replace"), "{}", run.describe());

    // pullgate enabled, started and ready before kubelet is switched over, once.
    let calls = node.calls();
    assert!(position(&calls, "enable pullgate.socket pullgate.service") < position(&calls, "restart kubelet.service"));
    assert!(position(&calls, "start pullgate.socket pullgate.service") < position(&calls, "restart kubelet.service"));
    assert_eq!(
        changes(&calls)
            .iter()
            .filter(|c| **c == "restart kubelet.service")
            .count(),
        1,
        "{calls:#?}"
    );
    assert_eq!(
        node.units("active"),
        ["kubelet.service", "pullgate.service", "pullgate.socket"]
    );
    assert_eq!(
        node.units("enabled"),
        ["kubelet.service", "pullgate.service", "pullgate.socket"]
    );

    // Again, with the same inputs: nothing changes, nothing restarts.
    let installed = node.snapshot();
    node.forget_calls();
    let again = node.install(&[]);
    again.assert_ok();
    assert_same_tree(&installed, &node.snapshot(), "a second install changed the tree");
    assert!(
        changes(&node.calls()).is_empty(),
        "a second install changed systemd: {:#?}",
        node.calls()
    );
    assert!(
        !again.stdout().contains("create") && !again.stdout().contains("update"),
        "{}",
        again.describe()
    );

    // What pullgate keeps in its state directory (stateDir's default) goes with it.
    let admitted = node.root().join("var/lib/pullgate/admitted.json");
    fs::write(&admitted, "{}").unwrap();
    fs::set_permissions(&admitted, fs::Permissions::from_mode(0o600)).unwrap();

    // Uninstall: kubelet back first, then pullgate stopped; the tree exactly as it was.
    node.forget_calls();
    node.uninstall(&[]).assert_ok();
    let calls = node.calls();
    assert!(
        position(&calls, "restart kubelet.service")
            < position(&calls, "disable --now pullgate.service pullgate.socket")
    );
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
    assert_eq!(node.units("active"), ["kubelet.service"]);
    assert_eq!(node.units("enabled"), ["kubelet.service"]);

    // And once more: nothing left to do.
    node.forget_calls();
    let nothing = node.uninstall(&[]);
    nothing.assert_ok();
    assert!(
        nothing.stdout().contains("nothing to uninstall"),
        "{}",
        nothing.describe()
    );
    assert!(node.calls().is_empty());
    assert_same_tree(&original, &node.snapshot(), "a second uninstall changed the tree");
}

#[test]
fn a_new_policy_is_reloaded_without_touching_kubelet() {
    let node = Node::kubeadm();
    node.install(&[]).assert_ok();
    fs::write(node.input("policy.yaml"), POLICY_V2).unwrap();
    node.forget_calls();

    let run = node.install(&[]);
    run.assert_ok();
    assert_eq!(node.read("etc/pullgate/policy.yaml"), POLICY_V2);
    assert!(run.stdout().contains("update"), "{}", run.describe());
    assert_eq!(changes(&node.calls()), ["reload pullgate.service"]);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let node = Node::kubeadm();
    let original = node.snapshot();

    let run = node.install(&["--dry-run"]);
    run.assert_ok();
    assert_same_tree(&original, &node.snapshot(), "install --dry-run changed the tree");
    assert!(changes(&node.calls()).is_empty(), "{:#?}", node.calls());
    let root = node.root().display().to_string();
    let plan = run.stdout();
    for line in [
        format!("create    {root}/usr/local/bin/pullgate (0755)"),
        format!("create    {root}/etc/systemd/system/pullgate.service (0644)"),
        format!("replace   {root}/etc/pullgate/policy.yaml (0640; the node's file is kept for uninstall)"),
        format!("replace   {root}/{DROPIN} (0644; the node's file is kept for uninstall)"),
        format!("mkdir     {root}/etc/pullgate/trust (0750)"),
        format!("create    {root}/{LOGROTATE} (0644)"),
        "systemctl enable pullgate.socket pullgate.service".to_owned(),
        "systemctl start pullgate.socket pullgate.service".to_owned(),
        "systemctl restart kubelet.service".to_owned(),
        "dry run: nothing was changed".to_owned(),
    ] {
        assert!(plan.contains(&line), "the plan lacks {line:?}:\n{plan}");
    }

    node.install(&[]).assert_ok();
    let installed = node.snapshot();
    node.forget_calls();
    let run = node.uninstall(&["--dry-run"]);
    run.assert_ok();
    assert_same_tree(&installed, &node.snapshot(), "uninstall --dry-run changed the tree");
    assert!(changes(&node.calls()).is_empty(), "{:#?}", node.calls());
    assert!(
        run.stdout()
            .contains(&format!("restore   {root}/etc/pullgate/policy.yaml")),
        "{}",
        run.describe()
    );
}

#[test]
fn pullgate_not_ready_rolls_everything_back_and_kubelet_is_not_switched() {
    let node = Node::kubeadm();
    let original = node.snapshot();

    let run = node.install_with(
        &["--ready-timeout", "2"],
        &[("PULLGATE_READY_CMD", "echo 'the socket does not answer' >&2; exit 1")],
    );
    run.assert_failed();
    let stderr = run.stderr();
    assert!(
        stderr.contains("pullgate did not become ready within 2s, so kubelet was not switched over"),
        "{}",
        run.describe()
    );
    assert!(stderr.contains("the socket does not answer"), "{}", run.describe());
    assert!(
        run.stdout().contains("the node is as it was before this run"),
        "{}",
        run.describe()
    );
    // The drop-in (the operator's) and everything else exactly as before.
    assert_eq!(node.read(DROPIN), OPERATOR_DROPIN);
    assert_eq!(node.mode(DROPIN), 0o600);
    assert_same_tree(&original, &node.snapshot(), "a failed install left changes");
    let calls = node.calls();
    assert!(
        !calls.iter().any(|c| c.contains("kubelet") && !c.starts_with("is-")),
        "{calls:#?}"
    );
    assert_eq!(node.units("active"), ["kubelet.service"], "{calls:#?}");
    assert_eq!(node.units("enabled"), ["kubelet.service"], "{calls:#?}");

    // An update that does not come up goes back to the previous install, which is restarted.
    node.install(&[]).assert_ok();
    let installed = node.snapshot();
    fs::write(node.input("policy.yaml"), POLICY_V2).unwrap();
    node.forget_calls();
    let run = node.install_with(&["--ready-timeout", "1"], &[("PULLGATE_READY_CMD", "false")]);
    run.assert_failed();
    assert_same_tree(&installed, &node.snapshot(), "a failed update left changes");
    assert_eq!(
        changes(&node.calls()),
        ["reload pullgate.service", "restart pullgate.service"],
        "{}",
        run.describe()
    );
}

#[test]
fn a_policy_that_fails_the_check_is_never_started() {
    let node = Node::kubeadm();
    let original = node.snapshot();
    fs::write(
        node.input("policy.yaml"),
        "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n    - name: broken\n",
    )
    .unwrap();

    let run = node.install(&[]);
    run.assert_failed();
    // The real pullgate names the file, line and field.
    assert!(
        run.stderr().contains("etc/pullgate/policy.yaml:5") && run.stderr().contains("images"),
        "{}",
        run.describe()
    );
    assert!(run.stderr().contains("do not pass the check"), "{}", run.describe());
    assert_same_tree(&original, &node.snapshot(), "a refused install left changes");
    assert!(changes(&node.calls()).is_empty(), "{:#?}", node.calls());
}

#[test]
fn kubelet_that_does_not_come_back_gets_its_old_drop_in_back() {
    let node = Node::kubeadm();
    let original = node.snapshot();

    let run = node.install_with(&["--ready-timeout", "1"], &[("KUBELET_READY_CMD", "false")]);
    run.assert_failed();
    assert!(
        run.stderr()
            .contains("kubelet did not run with pullgate's drop-in within 1s"),
        "{}",
        run.describe()
    );
    assert_same_tree(&original, &node.snapshot(), "a failed switch left changes");
    let calls = node.calls();
    let restarts: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| *c == "restart kubelet.service")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(restarts.len(), 2, "switched over and back: {calls:#?}");
    let reload_after = calls[restarts[0]..restarts[1]].iter().any(|c| c == "daemon-reload");
    assert!(
        reload_after,
        "the old drop-in is loaded before kubelet restarts again: {calls:#?}"
    );
    assert_eq!(node.units("active"), ["kubelet.service"]);
}

#[test]
fn the_drop_in_carries_the_nodes_own_kubelet_command_line() {
    // A kubelet unit of its own (AKS-style), its command continued over lines.
    let node = Node::bare();
    node.write(
        "etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=Kubelet\n\n[Service]\nEnvironmentFile=/etc/default/kubelet\n\
         ExecStart=/usr/local/bin/kubelet \\\n        --enable-server \\\n        # a comment inside\n        --v=2 \\\n        $KUBELET_FLAGS\n",
        0o644,
    );
    let original = node.snapshot();
    node.install(&[]).assert_ok();
    let dropin = node.read(DROPIN);
    let exec: Vec<&str> = dropin.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    assert_eq!(
        exec,
        [
            "ExecStart=",
            "ExecStart=/usr/local/bin/kubelet          --enable-server          --v=2          $KUBELET_FLAGS $PULLGATE_KUBELET_ARGS"
        ],
        "{dropin}"
    );
    assert!(
        dropin.contains("\n# ExecStart taken from: /etc/systemd/system/kubelet.service\n"),
        "{dropin}"
    );
    // Everything else is the shipped drop-in.
    let shipped = String::from_utf8(repo_file("systemd/kubelet-pullgate.conf")).unwrap();
    let others = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("ExecStart=") && !l.starts_with("# ExecStart taken from: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(others(&dropin), others(&shipped));
    node.uninstall(&[]).assert_ok();
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
}

#[test]
fn kubelet_wiring_that_would_not_work_is_refused_before_anything_changes() {
    // An operator's override sorts after pullgate's drop-in and sets ExecStart= itself.
    let node = Node::kubeadm();
    node.write(
        "etc/systemd/system/kubelet.service.d/override.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/kubelet --v=4\n",
        0o644,
    );
    let original = node.snapshot();
    let run = node.install(&[]);
    run.assert_failed();
    assert!(
        run.stderr()
            .contains("override.conf sets ExecStart= and sorts after 90-pullgate.conf"),
        "{}",
        run.describe()
    );
    assert_same_tree(&original, &node.snapshot(), "a refused install changed the tree");
    assert!(node.calls().is_empty(), "{:#?}", node.calls());

    // kubelet started through a shell: an appended flag would go to the shell.
    let node = Node::bare();
    node.write(
        "etc/systemd/system/kubelet.service",
        "[Service]\nExecStart=/bin/sh -c \"exec /usr/bin/kubelet $ARGS\"\n",
        0o644,
    );
    let run = node.install(&[]);
    run.assert_failed();
    assert!(
        run.stderr().contains("kubelet runs through a shell"),
        "{}",
        run.describe()
    );

    // No kubelet at all: say so, and how to go on without the drop-in.
    let node = Node::bare();
    let original = node.snapshot();
    let run = node.install(&[]);
    run.assert_failed();
    assert!(
        run.stderr().contains("kubelet.service was not found") && run.stderr().contains("--no-kubelet-wiring"),
        "{}",
        run.describe()
    );
    assert_same_tree(&original, &node.snapshot(), "a refused install changed the tree");
    let run = node.install(&["--no-kubelet-wiring"]);
    run.assert_ok();
    assert!(!node.root().join(DROPIN).exists());
    assert!(
        !changes(&node.calls()).iter().any(|c| c.contains("kubelet")),
        "{:#?}",
        node.calls()
    );
}

#[test]
fn without_systemctl_the_units_are_enabled_by_symlinks() {
    let node = Node::kubeadm();
    let original = node.snapshot();
    // --root and no SYSTEMCTL: nothing is started; `systemctl enable` is done by hand.
    let run = node.install_with(&[], &[("SYSTEMCTL", "")]);
    run.assert_ok();
    assert!(run.stdout().contains("not starting pullgate"), "{}", run.describe());
    assert!(node.calls().is_empty(), "{:#?}", node.calls());
    for (link, target) in [
        (
            "etc/systemd/system/sockets.target.wants/pullgate.socket",
            "/etc/systemd/system/pullgate.socket",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/pullgate.service",
            "/etc/systemd/system/pullgate.service",
        ),
    ] {
        assert_eq!(fs::read_link(node.root().join(link)).unwrap(), Path::new(target));
    }
    let installed = node.snapshot();
    node.install_with(&[], &[("SYSTEMCTL", "")]).assert_ok();
    assert_same_tree(&installed, &node.snapshot(), "a second install changed the tree");

    let run = node.run("uninstall.sh", &[], &[("SYSTEMCTL", "")]);
    run.assert_ok();
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
}

#[test]
fn a_file_changed_on_the_node_is_replaced_and_the_change_kept() {
    let node = Node::kubeadm();
    let original = node.snapshot();
    node.install(&[]).assert_ok();
    let edited = format!("{POLICY}# edited on the node\n");
    fs::write(node.root().join("etc/pullgate/policy.yaml"), &edited).unwrap();

    let run = node.install(&[]);
    run.assert_ok();
    assert_eq!(node.read("etc/pullgate/policy.yaml"), POLICY, "the given policy wins");
    assert_eq!(node.read(&format!("{STATE}/edited/etc/pullgate/policy.yaml")), edited);
    assert!(
        run.stderr().contains("was changed on the node since the last install"),
        "{}",
        run.describe()
    );
    node.uninstall(&[]).assert_ok();
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
}

#[test]
fn node_sync_installs_once_per_change_of_its_inputs() {
    let node = Node::kubeadm();
    let source = node.sync_source(POLICY);

    let run = node.node_sync(&[]);
    run.assert_ok();
    assert!(run.stdout().contains("installed"), "{}", run.describe());
    assert!(run.stdout().contains("ready"), "{}", run.describe());
    assert!(node.ready());
    assert_eq!(node.read("etc/pullgate/policy.yaml"), POLICY);

    // The next pass re-applies: install.sh finds everything right and changes nothing.
    node.forget_calls();
    let run = node.node_sync(&[]);
    run.assert_ok();
    assert!(
        run.stdout().is_empty(),
        "nothing changed, nothing to say: {}",
        run.describe()
    );
    assert!(changes(&node.calls()).is_empty(), "{:#?}", node.calls());
    assert!(node.ready());

    fs::write(source.join("config/policy.yaml"), POLICY_V2).unwrap();
    node.forget_calls();
    node.node_sync(&[]).assert_ok();
    assert_eq!(node.read("etc/pullgate/policy.yaml"), POLICY_V2);
    assert_eq!(changes(&node.calls()), ["reload pullgate.service"]);
    assert!(node.ready());
}

/// A node image upgrade (or a hand) took pullgate's unit, its logrotate file and kubelet's
/// drop-in away: the next pass puts them back, restarts what needs it, and says so.
#[test]
fn node_sync_puts_back_what_vanished_from_the_node() {
    let node = Node::kubeadm();
    node.write("usr/sbin/logrotate", "#!/bin/sh\n", 0o755);
    let original = node.snapshot();
    node.sync_source(POLICY);
    let run = node.node_sync(&[]);
    run.assert_ok();
    assert!(!run.stderr().contains("no logrotate"), "{}", run.describe());
    let installed = node.snapshot();

    for gone in [DROPIN, "etc/systemd/system/pullgate.service", LOGROTATE] {
        fs::remove_file(node.root().join(gone)).unwrap();
    }
    node.forget_calls();
    let run = node.node_sync(&[]);
    run.assert_ok();
    assert!(
        run.stdout()
            .contains("the node differed from what was installed; install.sh put it right"),
        "{}",
        run.describe()
    );
    assert_same_tree(&installed, &node.snapshot(), "the next pass did not put the node back");
    let calls = node.calls();
    let calls = changes(&calls);
    assert!(calls.contains(&"daemon-reload"), "{calls:#?}");
    assert!(calls.contains(&"restart pullgate.service"), "{calls:#?}");
    assert!(calls.contains(&"restart kubelet.service"), "{calls:#?}");
    assert!(node.ready());

    // pullgate stopped behind the installer's back: started again.
    fs::write(node.dir.path().join("systemctl/active"), "kubelet.service\n").unwrap();
    node.forget_calls();
    node.node_sync(&[]).assert_ok();
    assert!(
        changes(&node.calls()).contains(&"start pullgate.socket pullgate.service"),
        "{:#?}",
        node.calls()
    );

    node.uninstall(&[]).assert_ok();
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
}

/// The pod is Ready only while doctor, run on the host, finds nothing failed: installing
/// without an error is not enough.
#[test]
fn node_sync_is_ready_only_while_doctor_passes() {
    let node = Node::kubeadm();
    node.sync_source(POLICY);

    // The real doctor against this tree: pullgate's configuration names a containerd socket
    // that nothing serves, so doctor fails and the pod is not Ready, though the install worked.
    let socket = node.root().join("run/containerd/containerd.sock");
    let config = fs::read_to_string(repo().join("installer/config.yaml"))
        .unwrap()
        .replace(
            "unix:///run/containerd/containerd.sock",
            &format!("unix://{}", socket.display()),
        );
    assert!(config.contains(&socket.display().to_string()));
    fs::write(node.dir.path().join("source/config/config.yaml"), config).unwrap();
    let real_doctor =
        r#""$PULLGATE_ROOT/usr/local/bin/pullgate" doctor --config "$PULLGATE_ROOT/etc/pullgate/config.yaml""#;
    let run = node.node_sync(&[("PULLGATE_DOCTOR_CMD", real_doctor)]);
    run.assert_failed();
    assert!(run.stdout().contains("installed"), "{}", run.describe());
    assert!(
        run.stdout()
            .contains("pullgate doctor fails on the node (1): not ready until it passes"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout().contains("    FAIL"),
        "doctor's findings are shown: {}",
        run.describe()
    );
    assert!(!node.ready());

    // Doctor's verdict flips, and readiness with it; a failure is told once, not every pass.
    node.doctor_says(0, "ok   everything\n");
    let run = node.node_sync(&[]);
    run.assert_ok();
    assert!(
        run.stdout()
            .contains("pullgate doctor finds nothing failed on the node: ready"),
        "{}",
        run.describe()
    );
    assert!(node.ready());
    node.doctor_says(1, "FAIL kubelet is not wired to pullgate — fix: restart kubelet\n");
    let run = node.node_sync(&[]);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert!(!node.ready());
    assert!(run.stdout().contains("FAIL kubelet is not wired"), "{}", run.describe());
    let run = node.node_sync(&[]);
    run.assert_failed();
    assert!(run.stdout().is_empty(), "the same failure again: {}", run.describe());
    assert!(!node.ready());
    node.doctor_says(0, "");
    node.node_sync(&[]).assert_ok();
    assert!(node.ready());

    // An install that fails is not Ready either, whatever doctor says.
    fs::write(
        node.dir.path().join("source/config/policy.yaml"),
        "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n    - name: broken\n",
    )
    .unwrap();
    let run = node.node_sync(&[]);
    run.assert_failed();
    assert!(run.stdout().contains("install failed"), "{}", run.describe());
    assert!(!node.ready());
}

/// kubelet's unit changed after the install (a kubelet package upgrade): the drop-in, which
/// copies its command line, is derived again on the next pass instead of masking the change.
#[test]
fn a_changed_kubelet_unit_is_carried_into_the_drop_in_by_the_next_pass() {
    let node = Node::kubeadm();
    let original = node.snapshot();
    node.sync_source(POLICY);
    node.node_sync(&[]).assert_ok();
    let exec_start = |node: &Node| -> String {
        node.read(DROPIN)
            .lines()
            .find(|l| l.starts_with("ExecStart=/"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        exec_start(&node),
        "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS $PULLGATE_KUBELET_ARGS"
    );

    let kubeadm = "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf";
    let upgraded = KUBEADM_DROPIN.replace(
        "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS",
        "ExecStart=/usr/bin/kubelet --node-status-max-images=0 $KUBELET_KUBECONFIG_ARGS",
    );
    assert_ne!(upgraded, KUBEADM_DROPIN);
    node.write(kubeadm, &upgraded, 0o644);
    node.forget_calls();
    let run = node.node_sync(&[]);
    run.assert_ok();
    assert_eq!(
        exec_start(&node),
        "ExecStart=/usr/bin/kubelet --node-status-max-images=0 $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS $PULLGATE_KUBELET_ARGS",
        "{}",
        run.describe()
    );
    assert!(
        node.read(DROPIN)
            .contains(&format!("\n# ExecStart taken from: /{kubeadm}\n")),
        "{}",
        node.read(DROPIN)
    );
    // Not an edit of pullgate's file: no warning, no copy kept; kubelet restarted on the new line.
    assert!(!run.stderr().contains("was changed on the node"), "{}", run.describe());
    assert!(!node.root().join(STATE).join("edited").exists());
    let calls = node.calls();
    assert!(
        position(&calls, "daemon-reload") < position(&calls, "restart kubelet.service"),
        "{calls:#?}"
    );

    // The unit now lives elsewhere (a package that ships its own kubelet.service): followed too.
    fs::remove_file(node.root().join(kubeadm)).unwrap();
    node.write(
        "etc/systemd/system/kubelet.service",
        "[Service]\nExecStart=/usr/local/bin/kubelet --config=/etc/kubelet.yaml\n",
        0o644,
    );
    node.node_sync(&[]).assert_ok();
    assert_eq!(
        exec_start(&node),
        "ExecStart=/usr/local/bin/kubelet --config=/etc/kubelet.yaml $PULLGATE_KUBELET_ARGS"
    );
    assert!(node
        .read(DROPIN)
        .contains("\n# ExecStart taken from: /etc/systemd/system/kubelet.service\n"));

    // And uninstall still leaves the node as it was (with its own kubelet files put back too).
    node.uninstall(&[]).assert_ok();
    fs::remove_file(node.root().join("etc/systemd/system/kubelet.service")).unwrap();
    node.write(kubeadm, KUBEADM_DROPIN, 0o644);
    assert_same_tree(&original, &node.snapshot(), "uninstall did not restore the node");
}

/// The container's PID 1 is node-sync.sh, and PID 1 ignores a signal it has no handler for: the
/// SIGTERM of a pod deletion or rolling update. An idle node-sync stops at once, cleanly.
#[test]
fn node_sync_as_pid_1_stops_at_once_on_sigterm() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || tool("unshare").is_none() {
        eprintln!("SKIPPED: a PID namespace needs root and unshare");
        return;
    }
    let node = Node::kubeadm();
    node.sync_source(POLICY);
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child"])
        .arg(repo().join("installer/kubernetes/node-sync.sh"))
        .env("PULLGATE_SYNC_INTERVAL", "3600");
    let mut child = node
        .node_sync_command(unshare)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !node.ready() {
        assert!(std::time::Instant::now() < deadline, "no first pass within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "node-sync exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let pid1: libc::pid_t = fs::read_to_string(children).unwrap().trim().parse().unwrap();
    // SAFETY: kill with a pid this test started and a signal number.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node-sync, PID 1 of its namespace, ignored SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn every_shell_script_is_shellcheck_clean() {
    let Some(shellcheck) = tool("shellcheck") else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let fake = dir.path().join("fake-systemctl");
    fs::write(&fake, FAKE_SYSTEMCTL).unwrap();
    let mut scripts = vec![fake];
    for sub in ["installer", "installer/kubernetes", "installer/kind", "vagrant"] {
        let Ok(entries) = fs::read_dir(repo().join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
    }
    for script in [
        "installer/install.sh",
        "installer/uninstall.sh",
        "installer/kubernetes/node-sync.sh",
    ] {
        assert!(scripts.contains(&repo().join(script)), "{script} is checked");
    }
    let output = Command::new(shellcheck).args(&scripts).output().unwrap();
    assert!(
        output.status.success(),
        "shellcheck {scripts:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every configuration and policy this repository ships for nodes loads in pullgate: the
/// installer's default configuration, the DaemonSet's ConfigMap, the kind and Vagrant files.
#[test]
fn shipped_configurations_and_policies_pass_pullgates_checks() {
    let dir = TempDir::new().unwrap();
    let trusted_root = TestSigstore::new().write_trusted_root(dir.path());
    let policy_check = |name: &str, text: &str| {
        let text = text.replace(
            "/etc/pullgate/trust/trusted_root.json",
            &trusted_root.display().to_string(),
        );
        let path = dir.path().join(name.replace('/', "-"));
        fs::write(&path, text).unwrap();
        let output = Pullgate::command()
            .args(["policy", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let config_loads = |name: &str, text: &str| {
        let path = dir.path().join(name.replace('/', "-"));
        fs::write(&path, text).unwrap();
        pullgate::config::Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    };

    let read = |relative: &str| String::from_utf8(repo_file(relative)).unwrap();
    config_loads("installer/config.yaml", &read("installer/config.yaml"));
    config_loads("vagrant/config.yaml", &read("vagrant/config.yaml"));
    policy_check("installer/kind/policy.yaml", &read("installer/kind/policy.yaml"));
    // provision.sh puts the demo key in place of DEMO_PUBLIC_KEY, keeping the line's indent.
    let key = Signer::generate().public_key_pem();
    let vagrant_policy: String = read("vagrant/policy.yaml")
        .lines()
        .map(|line| match line.find("DEMO_PUBLIC_KEY") {
            Some(indent) => key
                .lines()
                .map(|k| format!("{}{k}\n", &line[..indent]))
                .collect::<String>(),
            None => format!("{line}\n"),
        })
        .collect();
    policy_check("vagrant/policy.yaml", &vagrant_policy);

    let manifests = read("installer/kubernetes/daemonset.yaml");
    let mut configmaps = 0;
    for document in serde_yaml_ng::Deserializer::from_str(&manifests) {
        let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(document).unwrap();
        match value["kind"].as_str() {
            Some("ConfigMap") => {
                configmaps += 1;
                config_loads("configmap-config.yaml", value["data"]["config.yaml"].as_str().unwrap());
                policy_check("configmap-policy.yaml", value["data"]["policy.yaml"].as_str().unwrap());
            }
            Some("DaemonSet") => {
                let pod = &value["spec"]["template"]["spec"];
                assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
                assert!(pod["hostPID"].is_null(), "the installer needs no hostPID");
                let volumes = pod["volumes"].as_sequence().unwrap();
                assert!(volumes.iter().any(|v| v["hostPath"]["path"].as_str() == Some("/")));
            }
            Some("Namespace") => assert_eq!(value["metadata"]["name"].as_str(), Some("pullgate-system")),
            other => panic!("daemonset.yaml holds a {other:?}: no RBAC or other objects are expected"),
        }
    }
    assert_eq!(configmaps, 1);
}

/// The kind recipe mounts files this repository has, and points kubelet at pullgate's socket.
#[test]
fn the_kind_cluster_mounts_the_repositorys_files() {
    let text = String::from_utf8(repo_file("installer/kind/cluster.yaml")).unwrap();
    let cluster: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let patch: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(cluster["kubeadmConfigPatches"][0].as_str().unwrap()).unwrap();
    assert_eq!(patch["kind"].as_str(), Some("KubeletConfiguration"));
    assert_eq!(
        patch["imageServiceEndpoint"].as_str(),
        Some("unix:///run/pullgate/pullgate.sock")
    );
    let nodes = cluster["nodes"].as_sequence().unwrap();
    assert!(!nodes.is_empty());
    for node in nodes {
        let mounts: BTreeMap<&str, &str> = node["extraMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| (m["containerPath"].as_str().unwrap(), m["hostPath"].as_str().unwrap()))
            .collect();
        for (container, host) in [
            // A directory, so a rebuilt binary (a new file) shows through without recreating.
            ("/opt/pullgate/bin", "target/release"),
            (
                "/etc/systemd/system/pullgate.service.d/10-kind.conf",
                "installer/kind/pullgate-binary.conf",
            ),
            ("/etc/systemd/system/pullgate.socket", "systemd/pullgate.socket"),
            ("/etc/systemd/system/pullgate.service", "systemd/pullgate.service"),
            ("/etc/pullgate/config.yaml", "installer/config.yaml"),
            ("/etc/pullgate/policy.yaml", "installer/kind/policy.yaml"),
            (
                "/etc/systemd/system/kubelet.service.d/20-pullgate.conf",
                "installer/kind/kubelet-pullgate.conf",
            ),
        ] {
            assert_eq!(mounts.get(container), Some(&host), "{container}");
            assert!(
                host.starts_with("target/") || repo().join(host).is_file(),
                "{host} is not in the repository"
            );
        }
    }
}
