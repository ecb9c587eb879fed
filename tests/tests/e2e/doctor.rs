//! `pullgate doctor` against a real node's parts: a running pullgate in front of a real
//! containerd, kubelet wiring written as kubelet reads it (a KubeletConfiguration file or a
//! systemd drop-in), the test Sigstore's trusted root — and each of them broken.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use pullgate_tests::{pullgate::config_yaml, sigstore::TestSigstore, Pullgate, TestEnv};

/// What one `pullgate doctor` run printed, and its exit status.
struct Doctor {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

// === impl Doctor ===

impl Doctor {
    /// Runs `pullgate doctor --config config --kubelet-config kubelet --kubelet-dropins dropins`.
    fn run(config: &Path, kubelet_config: &Path, kubelet_dropins: &Path) -> Doctor {
        let out = Pullgate::command()
            .arg("doctor")
            .arg("--config")
            .arg(config)
            .arg("--kubelet-config")
            .arg(kubelet_config)
            .arg("--kubelet-dropins")
            .arg(kubelet_dropins)
            .output()
            .expect("run pullgate doctor");
        Doctor {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The one line that starts with `level` and contains every one of `needles`; panics with
    /// the whole output otherwise.
    fn line(&self, level: &str, needles: &[&str]) -> &str {
        let found: Vec<&str> = self
            .lines()
            .into_iter()
            .filter(|l| l.starts_with(level) && needles.iter().all(|n| l.contains(n)))
            .collect();
        assert_eq!(found.len(), 1, "one {level:?} line with {needles:?} in:\n{self}");
        found[0]
    }
}

impl std::fmt::Display for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A policy requiring a keyless signature against the trusted root at `root`; `extra` is
/// appended to `spec`.
fn keyless_policy(root: &Path, extra: &str) -> String {
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: doctor
spec:
  trustedRoot: {root}
{extra}  rules:
    - name: apps
      images: [\"127.0.0.1:5000/apps/**\"]
      authorities:
        - name: ci
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subject: https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1
",
        root = root.display(),
    )
}

/// `dir/kubelet.yaml`, a KubeletConfiguration whose image service is `endpoint`.
fn kubelet_config(dir: &Path, endpoint: &Path) -> PathBuf {
    let path = dir.join("kubelet.yaml");
    fs::write(
        &path,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n\
             imageServiceEndpoint: unix://{}\n",
            endpoint.display()
        ),
    )
    .unwrap();
    path
}

/// A running pullgate with a keyless policy against a fresh test Sigstore's trusted root.
async fn healthy_pullgate(env: &TestEnv) -> Pullgate {
    let root = TestSigstore::new().write_trusted_root(env.dir());
    env.start_pullgate(&keyless_policy(&root, "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_is_all_ok() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let kubelet = kubelet_config(env.dir(), &pullgate.socket());

    let doctor = Doctor::run(&pullgate.config_path(), &kubelet, &env.dir().join("no-dropins"));
    assert_eq!(doctor.code, Some(0), "{doctor}");
    assert!(doctor.lines().len() >= 8, "{doctor}");
    for line in doctor.lines() {
        assert!(line.starts_with("ok   "), "{line:?} in\n{doctor}");
    }
    let listen = pullgate.socket().display().to_string();
    doctor.line("ok", &["listen socket", &listen, "0660"]);
    doctor.line("ok", &["upstream", "containerd", "CRI API v1"]);
    doctor.line("ok", &["kubelet pulls through pullgate", &listen]);
    doctor.line("ok", &["policy", "\"doctor\"", "hash sha256:"]);
    doctor.line("ok", &["Fulcio CA"]);
    doctor.line("ok", &["Rekor log key"]);
    doctor.line("ok", &["CT log key"]);
    doctor.line("ok", &["audit log", "0640"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_node_names_each_problem() {
    let env = TestEnv::start().await;
    let dir = env.dir().join("broken");
    fs::create_dir_all(&dir).unwrap();
    let listen = dir.join("pullgate.sock");
    let upstream = dir.join("no-containerd.sock");

    let mut root = TestSigstore::new().trusted_root_value();
    for ca in root["certificateAuthorities"].as_array_mut().unwrap() {
        ca["validFor"]["end"] = "2021-01-01T00:00:00Z".into();
    }
    let root_path = dir.join("trusted_root.json");
    fs::write(&root_path, serde_json::to_string_pretty(&root).unwrap()).unwrap();
    fs::write(
        dir.join("policy.yaml"),
        keyless_policy(&root_path, "  mode: sometimes\n"),
    )
    .unwrap();
    let audit = dir.join("audit.jsonl");
    fs::write(&audit, "").unwrap();
    fs::set_permissions(&audit, fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        config_yaml(&listen, &upstream, &dir.join("policy.yaml"), &audit, &[], "10s"),
    )
    .unwrap();
    // Straight at containerd, as pullgate's configuration names it.
    let kubelet = kubelet_config(&dir, &upstream);

    let doctor = Doctor::run(&config, &kubelet, &dir.join("no-dropins"));
    assert_eq!(doctor.code, Some(1), "{doctor}");
    let listen = listen.display().to_string();
    let upstream = upstream.display().to_string();

    let socket = doctor.line("FAIL", &["listen socket", &listen, "does not exist"]);
    assert!(socket.contains("fix: start pullgate"), "{socket}");
    assert!(socket.contains("pullgate.socket"), "{socket}");

    let containerd = doctor.line("FAIL", &["upstream", &upstream, "does not exist"]);
    assert!(containerd.contains("fix: start containerd"), "{containerd}");

    let wiring = doctor.line("FAIL", &["kubelet", "containerd's socket", &upstream]);
    assert!(wiring.contains("bypass signature verification"), "{wiring}");
    assert!(
        wiring.contains(&format!("fix: set `imageServiceEndpoint: unix://{listen}`")),
        "the fix is the exact line: {wiring}"
    );

    let policy = doctor.line("FAIL", &["policy does not load", "spec.mode", "sometimes"]);
    assert!(policy.contains("pullgate policy check"), "{policy}");

    let trust = doctor.line("FAIL", &["no Fulcio CA", "valid now", "expired 2021-01-01"]);
    assert!(trust.contains(&root_path.display().to_string()), "{trust}");
    assert!(trust.contains("fix: install a current trusted_root.json"), "{trust}");

    let log = doctor.line("FAIL", &["audit log", "readable by every user"]);
    assert!(log.contains("fix: chmod o-r"), "{log}");

    // Everything else is fine: the config parses, the socket directory is private, the
    // logs and CT keys of the root are valid.
    doctor.line("ok", &["config", "parses"]);
    doctor.line("ok", &["socket directory"]);
    doctor.line("ok", &["Rekor log key"]);
    doctor.line("ok", &["CT log key"]);
    assert_eq!(
        doctor.lines().iter().filter(|l| l.starts_with("FAIL")).count(),
        6,
        "{doctor}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_drop_in_counts_as_wiring() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let dropins = env.dir().join("kubelet.service.d");
    fs::create_dir_all(&dropins).unwrap();
    fs::write(
        dropins.join("20-pullgate.conf"),
        format!(
            "[Service]\nEnvironment=\"KUBELET_EXTRA_ARGS=--image-service-endpoint=unix://{}\"\n",
            pullgate.socket().display()
        ),
    )
    .unwrap();

    let doctor = Doctor::run(&pullgate.config_path(), &env.dir().join("no-kubelet.yaml"), &dropins);
    assert_eq!(doctor.code, Some(0), "{doctor}");
    let line = doctor.line("ok", &["kubelet pulls through pullgate", "--image-service-endpoint"]);
    assert!(line.contains("20-pullgate.conf"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_socket_mode_is_reported() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let kubelet = kubelet_config(env.dir(), &pullgate.socket());
    fs::set_permissions(pullgate.socket(), fs::Permissions::from_mode(0o666)).unwrap();

    let doctor = Doctor::run(&pullgate.config_path(), &kubelet, &env.dir().join("no-dropins"));
    assert_eq!(doctor.code, Some(1), "{doctor}");
    let line = doctor.line("FAIL", &["listen socket", "mode 0666", "socket.mode says 0660"]);
    assert!(line.contains("other users"), "{line}");
    assert!(line.contains("fix: chmod 0660"), "{line}");
    assert_eq!(
        doctor.lines().iter().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "only the mode is wrong:\n{doctor}"
    );
}

#[tokio::test]
async fn an_expired_root_in_a_valid_policy_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = TestSigstore::new().trusted_root_value();
    for log in root["tlogs"].as_array_mut().unwrap() {
        log["publicKey"]["validFor"]["end"] = "2022-02-02T00:00:00Z".into();
    }
    let root_path = dir.path().join("trusted_root.json");
    fs::write(&root_path, serde_json::to_string_pretty(&root).unwrap()).unwrap();
    fs::write(dir.path().join("policy.yaml"), keyless_policy(&root_path, "")).unwrap();
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        config_yaml(
            &dir.path().join("pullgate.sock"),
            &dir.path().join("containerd.sock"),
            &dir.path().join("policy.yaml"),
            &dir.path().join("audit.jsonl"),
            &[],
            "10s",
        ),
    )
    .unwrap();

    let doctor = Doctor::run(&config, &dir.path().join("kubelet.yaml"), &dir.path().join("d"));
    assert_eq!(doctor.code, Some(1), "{doctor}");
    doctor.line("ok", &["policy", "loads"]);
    doctor.line("FAIL", &["no Rekor log key", "expired 2022-02-02", "tlog: required"]);
    doctor.line("ok", &["Fulcio CA"]);
}

#[test]
fn an_unreadable_config_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    fs::write(&config, "policy: p.yaml\nlisten: tcp://127.0.0.1:1\n").unwrap();
    let doctor = Doctor::run(&config, &dir.path().join("k.yaml"), &dir.path().join("d"));
    assert_eq!(doctor.code, Some(2), "{doctor}");
    let line = doctor.line("FAIL", &["config cannot be read", "unix socket"]);
    assert!(line.contains("fix: correct"), "{line}");
    assert_eq!(doctor.lines().len(), 1, "{doctor}");
}
