//! The systemd units in `systemd/`: systemd's own checker accepts them without a single
//! warning, its security review rates the service's exposure low, and they say what the contract
//! says — the socket kubelet is pointed at, the socket's mode, readiness by sd_notify, the
//! hardening, and the same endpoint in the kubelet drop-in and the KubeletConfiguration snippet.
//!
//! And the units run: a real systemd, booted as PID 1 of its own PID and mount namespaces,
//! holds pullgate.socket, starts the hardened pullgate.service on kubelet's first call, gets
//! READY=1 once containerd (a real one, at its default socket path) answers, and pullgate
//! verifies pulls from a real registry and writes its audit log where the unit lets it.
//!
//! `systemd-analyze` works without systemd as PID 1. It is installed by scripts/setup.sh: in CI
//! (CI=true) a missing tool fails these tests; elsewhere they say so and pass.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::{
        fs::{FileTypeExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use pullgate_tests::{cri, Pullgate, TestEnv};
use tempfile::TempDir;

const KUBEADM_DROPIN: &str = r#"[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn unit_text(name: &str) -> String {
    let path = repo().join("systemd").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze`, or `None` outside CI when it is not installed.
fn systemd_analyze() -> Option<PathBuf> {
    tool("systemd-analyze")
}

fn tool(name: &str) -> Option<PathBuf> {
    pullgate_tests::process::required_tool(name)
}

/// A unit directory as a node would have it: pullgate's units, a kubelet with kubeadm's
/// drop-in and pullgate's drop-in. Commands that do not exist on this machine (pullgate under
/// /usr/local/bin, kubelet) point at the built pullgate binary instead, as systemd-analyze
/// checks that each command is executable.
fn unit_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    let binary = Pullgate::binary().display().to_string();
    let put = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = text
            .replace("/usr/local/bin/pullgate", &binary)
            .replace("/usr/bin/kubelet", &binary);
        fs::write(path, text).unwrap();
    };
    put("pullgate.socket", &unit_text("pullgate.socket"));
    put("pullgate.service", &unit_text("pullgate.service"));
    put(
        "kubelet.service",
        "[Unit]\nDescription=kubelet\n\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n",
    );
    put("kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN);
    put(
        "kubelet.service.d/90-pullgate.conf",
        &unit_text("kubelet-pullgate.conf"),
    );
    dir
}

/// Runs systemd-analyze with `dir` first on the unit search path (then systemd's own, for the
/// targets every unit depends on).
fn analyze(tool: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `[section] key = values` of a unit file: every assignment in order, comments dropped.
fn settings(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment: {line}"));
        settings
            .entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    settings
}

fn get<'a>(settings: &'a BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> &'a [String] {
    settings
        .get(&(section.to_owned(), key.to_owned()))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The one value of `key`; panics if it is set more or less than once.
fn one<'a>(settings: &'a BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> &'a str {
    match get(settings, section, key) {
        [value] => value,
        values => panic!("[{section}] {key}= should be set once, is {values:?}"),
    }
}

/// Every word of every value of `key`.
fn words(settings: &BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> Vec<String> {
    get(settings, section, key)
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn systemd_accepts_the_units_without_a_warning() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = unit_dir();
    let output = analyze(
        &tool,
        dir.path(),
        &[
            "verify",
            "--man=no",
            "pullgate.socket",
            "pullgate.service",
            "kubelet.service",
        ],
    );
    assert!(
        output.status.success() && text(&output).trim().is_empty(),
        "systemd-analyze verify ({}):\n{}",
        output.status,
        text(&output)
    );

    // The check bites: a setting systemd does not know is reported, not ignored by this test.
    let broken = dir.path().join("pullgate.service");
    let unit = fs::read_to_string(&broken).unwrap();
    fs::write(&broken, unit.replace("Type=notify", "Type=notify\nProtectNothing=yes")).unwrap();
    let output = analyze(&tool, dir.path(), &["verify", "--man=no", "pullgate.service"]);
    assert!(
        text(&output).contains("ProtectNothing"),
        "a broken unit went unnoticed: {}",
        text(&output)
    );
}

#[test]
fn systemd_rates_the_service_exposure_low() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = unit_dir();
    // Exposure runs from 0 (locked down) to 10; --threshold is in tenths.
    let output = analyze(
        &tool,
        dir.path(),
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            "pullgate.service",
        ],
    );
    let report = text(&output);
    assert!(output.status.success(), "exposure above 2.0:\n{report}");
    let level = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for pullgate.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    assert!(level <= 2.0, "exposure {level}:\n{report}");
}

#[test]
fn the_socket_is_the_one_kubelet_is_pointed_at() {
    let socket = settings(&unit_text("pullgate.socket"));
    assert_eq!(one(&socket, "Socket", "ListenStream"), "/run/pullgate/pullgate.sock");
    assert_eq!(one(&socket, "Socket", "SocketMode"), "0660");
    assert_eq!(one(&socket, "Socket", "Service"), "pullgate.service");
    assert_eq!(one(&socket, "Install", "WantedBy"), "sockets.target");
    let endpoint = format!("unix://{}", one(&socket, "Socket", "ListenStream"));

    // The shipped configuration agrees with the unit (SPEC §3 defaults).
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&fs::read_to_string(repo().join("installer/config.yaml")).unwrap()).unwrap();
    assert_eq!(config["listen"].as_str(), Some(endpoint.as_str()));
    assert_eq!(config["socket"]["mode"].as_str(), Some("0660"));
    assert_eq!(config["audit"]["path"].as_str(), Some("/var/log/pullgate/audit.jsonl"));
    assert_eq!(config["policy"].as_str(), Some("/etc/pullgate/policy.yaml"));

    // The drop-in and the KubeletConfiguration snippet name the same endpoint.
    let dropin = settings(&unit_text("kubelet-pullgate.conf"));
    assert_eq!(
        one(&dropin, "Service", "Environment"),
        format!("\"PULLGATE_KUBELET_ARGS=--image-service-endpoint={endpoint}\"")
    );
    let exec = get(&dropin, "Service", "ExecStart");
    assert_eq!(exec.len(), 2, "ExecStart= is reset, then set: {exec:?}");
    assert_eq!(exec[0], "");
    assert!(exec[1].ends_with(" $PULLGATE_KUBELET_ARGS"), "{exec:?}");
    assert!(words(&dropin, "Unit", "Wants").contains(&"pullgate.socket".to_owned()));
    assert!(words(&dropin, "Unit", "After").contains(&"pullgate.socket".to_owned()));
    let snippet: serde_yaml_ng::Value = serde_yaml_ng::from_str(&unit_text("kubelet-config-snippet.yaml")).unwrap();
    assert_eq!(snippet["kind"].as_str(), Some("KubeletConfiguration"));
    assert_eq!(snippet["imageServiceEndpoint"].as_str(), Some(endpoint.as_str()));
}

/// pullgate runs outside pod accounting, so the unit bounds it; the kubeadm page states the same
/// numbers (measured in BENCHMARKS.md), so neither changes without the other.
#[test]
fn the_service_is_bounded_as_the_install_page_says() {
    let service = settings(&unit_text("pullgate.service"));
    let page = std::fs::read_to_string(repo().join("docs/install-kubeadm.md")).unwrap();
    for (key, value) in [("MemoryMax", "256M"), ("CPUQuota", "100%")] {
        assert_eq!(one(&service, "Service", key), value, "{key}=");
        assert!(
            page.contains(&format!("`{key}={value}`")),
            "install-kubeadm.md does not say {key}={value}"
        );
    }
}

#[test]
fn the_service_starts_as_the_contract_says_and_is_hardened() {
    let service = settings(&unit_text("pullgate.service"));
    let unit = |key| words(&service, "Unit", key);
    assert_eq!(one(&service, "Service", "Type"), "notify");
    assert_eq!(
        one(&service, "Service", "ExecStart"),
        "/usr/local/bin/pullgate serve --config /etc/pullgate/config.yaml"
    );
    assert_eq!(one(&service, "Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&service, "Service", "Restart"), "on-failure");
    assert!(unit("Requires").contains(&"pullgate.socket".to_owned()));
    assert!(unit("After").contains(&"containerd.service".to_owned()));
    assert!(unit("Before").contains(&"kubelet.service".to_owned()));

    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("UMask", "0027"),
        ("LogsDirectory", "pullgate"),
        ("StateDirectory", "pullgate"),
        ("StateDirectoryMode", "0700"),
    ] {
        assert_eq!(one(&service, "Service", key), value, "{key}=");
    }
    let writable = words(&service, "Service", "ReadWritePaths");
    assert!(writable.contains(&"/var/log/pullgate".to_owned()), "{writable:?}");
    assert!(
        writable.iter().any(|p| p.trim_start_matches('-') == "/run/pullgate"),
        "{writable:?}"
    );

    // It must reach registries, and keep the socket pullgate.socket holds in /run/pullgate.
    assert!(get(&service, "Service", "PrivateNetwork").is_empty());
    assert!(get(&service, "Service", "IPAddressDeny").is_empty());
    assert!(get(&service, "Service", "RuntimeDirectory").is_empty());
    assert_eq!(
        get(&service, "Service", "SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );
}

// === the units under a real systemd ===

/// systemd's manager binary on Debian.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// What the namespace sees in place of the node's files: a fresh /run (systemd's own, the
/// socket's directory, and containerd's socket bound to its default path), a fresh /var/log and
/// /var/lib (so LogsDirectory= and StateDirectory= do not touch this machine's), and the units
/// in /run/systemd/system. The
/// binary is copied to /run too: the checkout may live under /tmp, which the service does not
/// see (PrivateTmp=).
const BOOT: &str = r#"#!/bin/sh
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir -p /run/systemd/system /run/pullgate-test /run/containerd
cp -R "$WORK/units/." /run/systemd/system/
cp "$WORK/config.yaml" "$WORK/policy.yaml" "$WORK/pullgate" /run/pullgate-test/
mount --bind "$CONTAINERD_DIR" /run/containerd
export container=pullgate-test
exec /lib/systemd/systemd --system --unit=pullgate-test.target
"#;

/// A systemd running as PID 1 of new PID and mount namespaces; killed (with everything it
/// started) when dropped.
struct Systemd {
    unshare: Child,
    pid1: u32,
    work: PathBuf,
}

impl Systemd {
    /// Boots systemd with the units in `work/units`, waiting (at most 20 s) for its private
    /// socket.
    fn boot(work: &Path, containerd_dir: &Path) -> Systemd {
        fs::write(work.join("boot.sh"), BOOT).unwrap();
        let log = fs::File::create(work.join("systemd.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            "--uts",
            "--ipc",
            "sh",
        ])
        .arg(work.join("boot.sh"))
        .env("WORK", work)
        .env("CONTAINERD_DIR", containerd_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        // SAFETY: prctl with integer arguments only, in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let unshare = cmd.spawn().expect("spawn unshare");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut systemd = Systemd {
            pid1: 0,
            unshare,
            work: work.to_owned(),
        };
        systemd.pid1 = systemd.wait_for("systemd to start", || {
            fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        });
        systemd.wait_for("systemd's private socket", || {
            systemd.path("/run/systemd/private").exists().then_some(())
        });
        systemd
    }

    /// `path` as the namespace sees it, reached through PID 1's root.
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid1))
    }

    /// systemctl inside the namespace; its stdout, trimmed, and whether it succeeded.
    fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new("nsenter")
            .arg(format!("--target={}", self.pid1))
            .args(["--mount", "--pid", "--", "systemctl", "--no-pager"])
            .args(args)
            .output()
            .expect("run nsenter systemctl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
    }

    /// What went wrong, for a failing assertion: systemd's and pullgate's logs, the units' state.
    fn describe(&self) -> String {
        format!(
            "--- systemd\n{}\n--- pullgate\n{}\n--- status\n{}",
            fs::read_to_string(self.work.join("systemd.log")).unwrap_or_default(),
            fs::read_to_string(self.path("/run/pullgate-test/pullgate.log")).unwrap_or_default(),
            self.systemctl(&["status", "--lines=0", "pullgate.socket", "pullgate.service"])
                .1,
        )
    }

    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(Instant::now() < deadline, "no {what} within 30 s\n{}", self.describe());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            // SAFETY: kill with a pid this test started and a signal number.
            unsafe { libc::kill(self.pid1 as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// `call`, or a panic with the namespace's logs when it takes longer than 30 s.
async fn bounded<T>(call: impl std::future::Future<Output = T>, systemd: &Systemd) -> T {
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Ok(value) => value,
        Err(_) => panic!("no answer within 30 s\n{}", systemd.describe()),
    }
}

/// The `Name:\tvalue` lines of a /proc status file.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_runs_the_hardened_service_on_its_socket() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root");
        eprintln!("SKIPPED: booting systemd in a namespace needs root");
        return;
    }
    if tool(SYSTEMD).is_none() || tool("unshare").is_none() || tool("nsenter").is_none() {
        return;
    }
    let mut env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "signed content").await;
    env.push_image("unsigned/app", "v1", "unsigned content").await;

    // Outside /tmp, which the service does not see (PrivateTmp=), and outside /home.
    let work = tempfile::Builder::new()
        .prefix("systemd-units-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let units = work.path().join("units");
    fs::create_dir_all(units.join("pullgate.service.d")).unwrap();
    fs::create_dir_all(units.join("pullgate.socket.d")).unwrap();
    fs::write(units.join("pullgate.socket"), unit_text("pullgate.socket")).unwrap();
    fs::write(units.join("pullgate.service"), unit_text("pullgate.service")).unwrap();
    // The shipped units as they are; a drop-in changes only what a test machine needs: no
    // boot-time dependencies (there is no boot), the built binary and a test configuration,
    // and its log in a file (there is no journal).
    fs::write(
        units.join("pullgate.service.d/test.conf"),
        "[Unit]\nDefaultDependencies=no\n\n[Service]\nExecStart=\nExecStart=/run/pullgate-test/pullgate serve --config /run/pullgate-test/config.yaml\n\
         StandardOutput=append:/run/pullgate-test/pullgate.log\nStandardError=append:/run/pullgate-test/pullgate.log\n",
    )
    .unwrap();
    fs::write(
        units.join("pullgate.socket.d/test.conf"),
        "[Unit]\nDefaultDependencies=no\n",
    )
    .unwrap();
    fs::write(
        units.join("pullgate-test.target"),
        "[Unit]\nDefaultDependencies=no\nWants=pullgate.socket\nAfter=pullgate.socket\n",
    )
    .unwrap();
    // The installer's default configuration, with the test registry, and the policy beside it.
    let config = fs::read_to_string(repo().join("installer/config.yaml"))
        .unwrap()
        .replace(
            "policy: /etc/pullgate/policy.yaml",
            "policy: /run/pullgate-test/policy.yaml",
        );
    let config = format!(
        "{config}registries:\n  - host: \"{}\"\n    insecure: true\n",
        env.host()
    );
    fs::write(work.path().join("config.yaml"), config).unwrap();
    fs::copy(Pullgate::binary(), work.path().join("pullgate")).unwrap();
    let policy = env.key_policy(&[&format!("{}/signed/**", env.host())]);
    fs::write(work.path().join("policy.yaml"), policy).unwrap();

    let systemd = Systemd::boot(work.path(), env.containerd.dir());

    // The socket is systemd's, with the unit's mode; pullgate is not running yet.
    let socket = systemd.path("/run/pullgate/pullgate.sock");
    systemd.wait_for("pullgate's socket", || socket.exists().then_some(()));
    let meta = fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "SocketMode=");
    assert_eq!(systemd.systemctl(&["is-active", "pullgate.service"]).1, "inactive");

    // kubelet's first call starts the service; the call waits in the backlog and is answered.
    bounded(cri::image_fs_info(&socket), &systemd)
        .await
        .unwrap_or_else(|e| panic!("ImageFsInfo through systemd's socket: {e}\n{}", systemd.describe()));
    systemd.wait_for("pullgate.service active (READY=1)", || {
        (systemd.systemctl(&["is-active", "pullgate.service"]).1 == "active").then_some(())
    });
    let (_, status_text) = systemd.systemctl(&["show", "--property=StatusText", "--value", "pullgate.service"]);
    assert!(status_text.starts_with("serving; policy sha256:"), "{status_text}");

    // The process: no capabilities at all, no_new_privs, a seccomp filter.
    let (_, main_pid) = systemd.systemctl(&["show", "--property=MainPID", "--value", "pullgate.service"]);
    let status = fs::read_to_string(systemd.path(&format!("/proc/{main_pid}/status"))).unwrap();
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, field), "0000000000000000", "{field}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");

    // Pulls through the hardened service: registry reached, containerd reached, decisions made.
    let client = || cri::cri_client(&socket);
    let signed = env.image_ref("signed/app", "v1");
    bounded(
        client().pull_image(cri::pull_request(&signed, None, Some("default"))),
        &systemd,
    )
    .await
    .unwrap_or_else(|e| panic!("pull {signed}: {e}\n{}", systemd.describe()));
    let unsigned = env.image_ref("unsigned/app", "v1");
    let denied = bounded(
        client().pull_image(cri::pull_request(&unsigned, None, Some("default"))),
        &systemd,
    )
    .await
    .expect_err("an unsigned image is denied");
    assert!(
        denied.message().starts_with("SignatureValidationFailed: "),
        "{}",
        denied.message()
    );

    // The audit log where the unit lets pullgate write, with the unit's UMask.
    let audit = systemd.path("/var/log/pullgate/audit.jsonl");
    let records = fs::read_to_string(&audit).unwrap_or_else(|e| panic!("{e}\n{}", systemd.describe()));
    let decisions: Vec<String> = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["decision"].to_string())
        .collect();
    assert_eq!(decisions, ["\"allow\"", "\"deny\""]);
    assert_eq!(fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o640);
    let log_dir = systemd.path("/var/log/pullgate");
    assert_eq!(fs::metadata(log_dir).unwrap().permissions().mode() & 0o777, 0o750);

    // ExecReload: SIGHUP, and the service stays active.
    let (reloaded, _) = systemd.systemctl(&["reload", "pullgate.service"]);
    assert!(reloaded, "{}", systemd.describe());
    let log = systemd.path("/run/pullgate-test/pullgate.log");
    systemd.wait_for("pullgate to log the reload", || {
        fs::read_to_string(&log).ok()?.contains("policy reloaded").then_some(())
    });
    assert_eq!(systemd.systemctl(&["is-active", "pullgate.service"]).1, "active");

    // The shipped logrotate configuration as it is, run by logrotate inside the namespace: its
    // postrotate `systemctl reload` reaches this systemd, and pullgate continues the chain.
    if let Some(logrotate) = tool("logrotate") {
        let config = work.path().join("pullgate.logrotate");
        fs::copy(repo().join("systemd/pullgate.logrotate"), &config).unwrap();
        let out = Command::new("nsenter")
            .arg(format!("--target={}", systemd.pid1))
            .args(["--mount", "--pid", "--"])
            .arg(logrotate)
            .arg("-f")
            .arg("-s")
            .arg(work.path().join("logrotate.state"))
            .arg(&config)
            .output()
            .expect("run nsenter logrotate");
        assert!(out.status.success(), "logrotate: {out:?}\n{}", systemd.describe());
        systemd.wait_for("pullgate to reopen its audit log", || {
            fs::read_to_string(&log)
                .ok()?
                .contains("audit log moved away")
                .then_some(())
        });
        let rotated = systemd.path("/var/log/pullgate/audit.jsonl.1");
        assert_eq!(fs::read_to_string(&rotated).unwrap(), records, "every record, whole");
        bounded(
            client().pull_image(cri::pull_request(&signed, None, Some("default"))),
            &systemd,
        )
        .await
        .unwrap_or_else(|e| panic!("pull {signed} after rotation: {e}\n{}", systemd.describe()));
        let next: serde_json::Value = serde_json::from_str(fs::read_to_string(&audit).unwrap().trim_end()).unwrap();
        assert_eq!(next["seq"], 3, "the chain goes on in the new file: {next}");
        let last_old = records.lines().last().unwrap();
        assert_eq!(next["prev"], pullgate::audit::line_hash(last_old.as_bytes()));
    }

    // A stop is a clean drain (exit 0), and the socket stays for the next start.
    let (stopped, _) = systemd.systemctl(&["stop", "pullgate.service"]);
    assert!(stopped, "{}", systemd.describe());
    let (_, result) = systemd.systemctl(&["show", "--property=Result", "--value", "pullgate.service"]);
    assert_eq!(result, "success", "{}", systemd.describe());
    assert!(socket.exists());

    // The verification was kept where the unit lets pullgate write, closed to others...
    let state = systemd.path("/var/lib/pullgate");
    assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    let admitted =
        fs::read_to_string(state.join("admitted.json")).unwrap_or_else(|e| panic!("{e}\n{}", systemd.describe()));
    assert!(admitted.contains("signed/app"), "{admitted}");
    assert_eq!(
        fs::metadata(state.join("admitted.json")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // ...so after a restart (here by kubelet's next call) the image is shown with its registry
    // down: a container of it can start again.
    env.registry.stop();
    let status = bounded(client().image_status(cri::image_status_request(&signed)), &systemd)
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {signed}: {e}\n{}", systemd.describe()));
    assert!(status.into_inner().image.is_some(), "{}", systemd.describe());
}
