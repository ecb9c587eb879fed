//! `pullgate doctor` against a real node's parts: a running pullgate in front of a real
//! containerd, kubelet wiring written as kubelet reads it (a KubeletConfiguration file or a
//! systemd drop-in), a running process standing in for kubelet (its name, flags and config file
//! as /proc shows them), the test Sigstore's trusted root — and each of them broken.

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

    /// Runs doctor as [`Doctor::run`] does, in a PID namespace of its own (with its own /proc)
    /// where a process named `kubelet` runs with `flags`. The stand-in is a copy of /bin/sh, so
    /// /proc shows kubelet's name, executable and flags; `meanwhile` runs in a shell after it
    /// started and before doctor does. Other tests' doctors do not see it: doctor judges only
    /// the kubelets of the PID namespace /proc belongs to, not those of namespaces below it.
    fn run_beside_kubelet(
        dir: &Path,
        flags: &[String],
        meanwhile: &str,
        config: &Path,
        kubelet_config: &Path,
        kubelet_dropins: &Path,
    ) -> Doctor {
        let stand_in = dir.join("kubelet");
        fs::copy("/bin/sh", &stand_in).expect("copy /bin/sh");
        let quoted = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let script = format!(
            "{kubelet} -c 'sleep 600; :' kubelet {flags} &\n\
             i=0\n\
             while [ \"$(cat /proc/$!/comm 2>/dev/null)\" != kubelet ]; do\n\
               i=$((i+1)); [ $i -lt 200 ] || {{ echo 'the stand-in never ran' >&2; exit 97; }}; sleep 0.05\n\
             done\n\
             {meanwhile}\n\
             exec {doctor} doctor --config {config} --kubelet-config {kc} --kubelet-dropins {kd}\n",
            kubelet = quoted(&stand_in.display().to_string()),
            flags = flags.iter().map(|f| quoted(f)).collect::<Vec<_>>().join(" "),
            doctor = quoted(&Pullgate::binary().display().to_string()),
            config = quoted(&config.display().to_string()),
            kc = quoted(&kubelet_config.display().to_string()),
            kd = quoted(&kubelet_dropins.display().to_string()),
        );
        let out = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"])
            .arg(&script)
            .output()
            .expect("run unshare (the e2e tests run as root)");
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
    doctor.line(
        "ok",
        &[
            "no kubelet process runs",
            "judged by the files",
            "kubelet pulls through pullgate",
            &listen,
        ],
    );
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

/// `dir/name`, a KubeletConfiguration as kubeadm writes it, with `imageServiceEndpoint` when
/// `endpoint` is given.
fn kubelet_config_named(dir: &Path, name: &str, endpoint: Option<&Path>) -> PathBuf {
    let path = dir.join(name);
    let mut text = "apiVersion: kubelet.config.k8s.io/v1beta1\n\
                    kind: KubeletConfiguration\n\
                    containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"
        .to_string();
    if let Some(endpoint) = endpoint {
        text.push_str(&format!("imageServiceEndpoint: unix://{}\n", endpoint.display()));
    }
    fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_kubelet_wired_through_its_config_or_its_flag_is_ok() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let listen = pullgate.socket().display().to_string();
    let wired = kubelet_config_named(env.dir(), "config.yaml", Some(&pullgate.socket()));
    let unwired = kubelet_config_named(env.dir(), "plain.yaml", None);
    // The files doctor is told about say nothing: only the process can make this pass.
    let nowhere = env.dir().join("no-kubelet.yaml");
    let no_dropins = env.dir().join("no-dropins");

    let by_config = Doctor::run_beside_kubelet(
        env.dir(),
        &[format!("--config={}", wired.display()), "--v=2".into()],
        "",
        &pullgate.config_path(),
        &nowhere,
        &no_dropins,
    );
    assert_eq!(by_config.code, Some(0), "{by_config}");
    let line = by_config.line("ok", &["kubelet pulls through pullgate", "the running kubelet (pid"]);
    assert!(
        line.contains(&format!("imageServiceEndpoint unix://{listen}")),
        "{line}"
    );
    assert!(line.contains(&wired.display().to_string()), "{line}");
    assert!(line.contains("unchanged since it started"), "{line}");

    // The flag wins over a file that names no endpoint, as in kubelet.
    let by_flag = Doctor::run_beside_kubelet(
        env.dir(),
        &[
            "--config".into(),
            unwired.display().to_string(),
            "--image-service-endpoint".into(),
            format!("unix://{listen}"),
        ],
        "",
        &pullgate.config_path(),
        &nowhere,
        &no_dropins,
    );
    assert_eq!(by_flag.code, Some(0), "{by_flag}");
    by_flag.line(
        "ok",
        &[
            "kubelet pulls through pullgate",
            &format!("--image-service-endpoint unix://{listen} on its command line"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_kubelet_that_is_not_wired_fails_whatever_the_files_say() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let listen = pullgate.socket().display().to_string();
    let unwired = kubelet_config_named(env.dir(), "config.yaml", None);
    // The file doctor is pointed at is wired: judged alone, it would pass.
    let wired_elsewhere = kubelet_config(env.dir(), &pullgate.socket());

    let doctor = Doctor::run_beside_kubelet(
        env.dir(),
        &[format!("--config={}", unwired.display())],
        "",
        &pullgate.config_path(),
        &wired_elsewhere,
        &env.dir().join("no-dropins"),
    );
    assert_eq!(doctor.code, Some(1), "{doctor}");
    let line = doctor.line("FAIL", &["the running kubelet (pid", "no image service endpoint"]);
    assert!(line.contains("bypassing verification"), "{line}");
    assert!(
        line.contains(&format!(
            "fix: set `imageServiceEndpoint: unix://{listen}` in {}",
            unwired.display()
        )),
        "{line}"
    );
    assert!(line.contains("kubelet-config ConfigMap"), "{line}");
    assert_eq!(
        doctor.lines().iter().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "only the wiring is wrong:\n{doctor}"
    );
}

/// What `kubeadm upgrade node` does: it rewrites kubelet's config file from the kubelet-config
/// ConfigMap, without `imageServiceEndpoint`, under a kubelet that still runs wired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_rewritten_under_the_running_kubelet_is_reported() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let config = kubelet_config_named(env.dir(), "config.yaml", Some(&pullgate.socket()));
    let upgraded = kubelet_config_named(env.dir(), "from-configmap.yaml", None);

    let doctor = Doctor::run_beside_kubelet(
        env.dir(),
        &[format!("--config={}", config.display())],
        // Past the second of slack doctor gives a write just before kubelet's start.
        &format!("sleep 1.5; cat '{}' > '{}'", upgraded.display(), config.display()),
        &pullgate.config_path(),
        &config,
        &env.dir().join("no-dropins"),
    );
    assert_eq!(doctor.code, Some(1), "{doctor}");
    let line = doctor.line(
        "FAIL",
        &[
            "the running kubelet (pid",
            &format!("its configuration {}", config.display()),
            "was changed at",
        ],
    );
    assert!(
        line.contains(
            "a kubelet restart would take no imageServiceEndpoint: pulls would bypass signature verification"
        ),
        "{line}"
    );
    assert!(line.contains("kubelet-config ConfigMap"), "{line}");
}

/// A kubelet in a PID namespace below the one /proc belongs to (a kind node's kubelet, seen
/// from the host that runs kind) is another node's: doctor on the host does not judge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_in_a_nested_pid_namespace_is_another_nodes() {
    let env = TestEnv::start().await;
    let pullgate = healthy_pullgate(&env).await;
    let unwired = kubelet_config_named(env.dir(), "nested.yaml", None);
    let wired = kubelet_config(env.dir(), &pullgate.socket());
    let stand_in = env.dir().join("kubelet");
    fs::copy("/bin/sh", &stand_in).unwrap();
    let mut nested = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(&stand_in)
        .args(["-c", "sleep 600; :", "kubelet"])
        .arg(format!("--config={}", unwired.display()))
        .spawn()
        .expect("run unshare");
    let seen = |exe: &Path| {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| fs::read_link(p.path().join("exe")).is_ok_and(|e| e == exe))
    };
    for _ in 0..100 {
        if seen(&stand_in) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen(&stand_in), "the nested stand-in runs");

    let doctor = Doctor::run(&pullgate.config_path(), &wired, &env.dir().join("no-dropins"));
    let _ = nested.kill();
    let _ = nested.wait();
    assert_eq!(doctor.code, Some(0), "{doctor}");
    doctor.line(
        "ok",
        &["no kubelet process runs here", "kubelet pulls through pullgate"],
    );
}
