//! The real `pullgate` binary, run as `pullgate serve` in front of a test containerd.

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use pullgate_proto::cri::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

use crate::{
    cri,
    process::{Daemon, StartError},
};

/// A bound on pullgate's socket answering `ImageFsInfo` after the process was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where pullgate listens when the configuration does not say (SPEC §3 default).
const DEFAULT_LISTEN: &str = "/run/pullgate/pullgate.sock";

/// Where pullgate writes its audit log when the configuration does not say (SPEC §3 default).
const DEFAULT_AUDIT: &str = "/var/log/pullgate/audit.jsonl";

/// A running `pullgate serve` whose config, policy and log live in one directory. Dropping it
/// stops the process.
#[derive(Debug)]
pub struct Pullgate {
    daemon: Daemon,
    dir: PathBuf,
    socket: PathBuf,
    audit: PathBuf,
    metrics: Option<SocketAddr>,
}

// === impl Pullgate ===

impl Pullgate {
    /// The binary under test: `$PULLGATE_BIN`, else `target/<profile>/pullgate` next to the
    /// `deps/` directory this test binary runs from. Panics, saying how to build it, if missing.
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("PULLGATE_BIN") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "PULLGATE_BIN={} is not a file", path.display());
            return path;
        }
        let exe = std::env::current_exe().expect("locate the running test binary");
        exe.ancestors()
            .skip(1)
            .map(|dir| dir.join("pullgate"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no pullgate binary found above {}: run `cargo build -p pullgate` first \
                     (with the same profile as the tests), or set PULLGATE_BIN",
                    exe.display()
                )
            })
    }

    /// A command running the pullgate binary (for `verify`, `policy check`, `audit verify`).
    pub fn command() -> Command {
        Self::command_of(&Self::binary())
    }

    /// As [`Pullgate::command`], running `binary` instead (another build, for the benchmark's
    /// side-by-side comparison of two versions).
    pub fn command_of(binary: &Path) -> Command {
        let mut cmd = Command::new(binary);
        cmd.env_remove("PULLGATE_CONFIG");
        cmd
    }

    /// Writes `config.yaml` and `policy.yaml` into `dir` (created if missing) and runs
    /// `pullgate serve --config <dir>/config.yaml`. Panics with the log tail unless its listen
    /// socket answers a CRI call within 10 s.
    pub async fn start(dir: &Path, config_yaml: &str, policy_yaml: &str) -> Pullgate {
        match Self::try_start(dir, config_yaml, policy_yaml).await {
            Ok(pullgate) => pullgate,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Pullgate::start`], returning the failure (exit or timeout, with the log tail)
    /// instead of panicking, for tests of configurations pullgate must refuse.
    pub async fn try_start(dir: &Path, config_yaml: &str, policy_yaml: &str) -> Result<Pullgate, StartError> {
        Self::try_start_binary(&Self::binary(), dir, &hermetic(config_yaml), policy_yaml).await
    }

    /// As [`Pullgate::try_start`], running `binary` instead of [`Pullgate::binary`], with
    /// `config_yaml` exactly as given (an older build may not know the fields
    /// [`Pullgate::try_start`] adds).
    pub async fn try_start_binary(
        binary: &Path,
        dir: &Path,
        config_yaml: &str,
        policy_yaml: &str,
    ) -> Result<Pullgate, StartError> {
        fs::create_dir_all(dir).expect("create the pullgate dir");
        let config_path = dir.join("config.yaml");
        fs::write(&config_path, config_yaml).expect("write config.yaml");
        fs::write(dir.join("policy.yaml"), policy_yaml).expect("write policy.yaml");
        let (socket, audit) = paths_of(dir, config_yaml);

        let mut cmd = Self::command_of(binary);
        cmd.arg("serve").arg("--config").arg(&config_path).current_dir(dir);
        let daemon = Daemon::spawn("pullgate", cmd, &dir.join("pullgate.log"))
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut pullgate = Pullgate {
            daemon,
            dir: dir.to_owned(),
            socket,
            audit,
            metrics: metrics_of(config_yaml),
        };
        let socket = pullgate.socket.clone();
        pullgate
            .daemon
            .wait_ready("its socket answered ImageFsInfo", READY_TIMEOUT, async || {
                socket.exists() && cri::image_fs_info(&socket).await.is_ok()
            })
            .await?;
        Ok(pullgate)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The socket kubelet would talk to.
    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// A CRI ImageService client on [`Pullgate::socket`].
    pub fn client(&self) -> ImageServiceClient<Channel> {
        cri::cri_client(&self.socket)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.audit.clone()
    }

    /// Where pullgate serves `/metrics`, `/healthz` and `/readyz`, if its configuration says.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// `GET path` on the metrics endpoint: the status and the body. Panics when the
    /// configuration has no `metrics.listen` or nothing answers.
    pub async fn metrics_get(&self, path: &str) -> (u16, String) {
        let addr = self
            .metrics
            .expect("a configuration with metrics.listen (see with_metrics)");
        http_get(addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}\n{}", self.log()))
    }

    /// The `/metrics` text; panics unless the answer is 200.
    pub async fn scrape(&self) -> String {
        let (status, body) = self.metrics_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The audit log's records so far, one JSON value per line; empty if there is no log yet.
    /// Panics on a line that is not JSON.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line:?} is not JSON: {e}")))
            .collect()
    }

    /// Waits (at most 10 s) until pullgate has logged `needle`; panics with the log otherwise.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "pullgate never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The newest audit record; panics when there is none.
    pub fn last_record(&self) -> serde_json::Value {
        self.audit_records().pop().expect("an audit record")
    }

    /// Pulls `image` through pullgate as kubelet would for a pod in `namespace`, without
    /// credentials; the image id on success.
    pub async fn pull(&self, image: &str, namespace: Option<&str>) -> Result<String, tonic::Status> {
        let request = crate::cri::pull_request(image, None, namespace);
        self.client()
            .pull_image(request)
            .await
            .map(|r| r.into_inner().image_ref)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Replaces the policy file; call [`Pullgate::reload`] to have pullgate read it.
    pub fn write_policy(&self, policy_yaml: &str) {
        fs::write(self.policy_path(), policy_yaml).expect("write policy.yaml");
    }

    /// Sends SIGHUP: reload policy and trust material (SPEC §3).
    pub fn reload(&self) {
        self.daemon.signal(libc::SIGHUP).expect("send SIGHUP to pullgate");
    }

    /// Everything pullgate wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The exit status if pullgate has exited, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.daemon.exited()
    }

    /// SIGTERM, then SIGKILL after a bound; the exit status (0 on a clean drain, SPEC §3).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.daemon.stop()
    }
}

/// One entry of the configuration's `registries` (SPEC §3): how pullgate reaches `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub host: String,
    /// `insecure: true`: plain HTTP. Otherwise the key is left out, and pullgate speaks TLS.
    pub insecure: bool,
    /// `caFile`: a CA pullgate trusts for this host besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

// === impl RegistryEntry ===

impl RegistryEntry {
    /// `{host, insecure: true}`: plain HTTP.
    pub fn insecure(host: &str) -> RegistryEntry {
        RegistryEntry {
            host: host.to_owned(),
            insecure: true,
            ca_file: None,
        }
    }

    /// `{host, caFile}`: TLS, trusting the CA in `ca_file` for this host; no `insecure` key.
    pub fn tls_with_ca(host: &str, ca_file: &Path) -> RegistryEntry {
        RegistryEntry {
            host: host.to_owned(),
            insecure: false,
            ca_file: Some(ca_file.to_owned()),
        }
    }
}

/// `config_yaml` with the files pullgate reads by default when they exist on the machine
/// (containerd's `/etc/containerd/certs.d`, kubelet's `config.json`) and the state it keeps in
/// `/var/lib/pullgate` turned off, unless the test names its own: a test sees only the
/// registries and credentials it set up, and shares no verifications with another.
fn hermetic(config_yaml: &str) -> String {
    let mut config = config_yaml.to_string();
    for key in ["registryHosts", "dockerConfig", "stateDir"] {
        let named = config.lines().any(|l| l.starts_with(&format!("{key}:")));
        if !named {
            if !config.is_empty() && !config.ends_with('\n') {
                config.push('\n');
            }
            config.push_str(&format!("{key}: \"\"\n"));
        }
    }
    config
}

/// A SPEC §3 configuration: pullgate on `listen_sock` in front of `upstream_sock`, plain HTTP
/// to `insecure_hosts`, only this process's user allowed on the socket.
pub fn config_yaml(
    listen_sock: &Path,
    upstream_sock: &Path,
    policy_path: &Path,
    audit_path: &Path,
    insecure_hosts: &[String],
    verify_timeout: &str,
) -> String {
    let registries: Vec<RegistryEntry> = insecure_hosts.iter().map(|h| RegistryEntry::insecure(h)).collect();
    config_yaml_with_registries(
        listen_sock,
        upstream_sock,
        policy_path,
        audit_path,
        &registries,
        verify_timeout,
    )
}

/// As [`config_yaml`], with `registries` entries as given: plain HTTP, or TLS with or without a
/// `caFile` of its own. Hosts not listed get pullgate's default, TLS with the system's roots.
pub fn config_yaml_with_registries(
    listen_sock: &Path,
    upstream_sock: &Path,
    policy_path: &Path,
    audit_path: &Path,
    registries: &[RegistryEntry],
    verify_timeout: &str,
) -> String {
    // JSON strings are YAML flow scalars, so paths and hosts need no further quoting care.
    let q = |s: &str| serde_json::to_string(s).expect("encode a string");
    let path = |p: &Path| q(&p.display().to_string());
    let registries = if registries.is_empty() {
        "registries: []\n".to_owned()
    } else {
        let entries: String = registries
            .iter()
            .map(|entry| {
                let mut yaml = format!("  - host: {}\n", q(&entry.host));
                if entry.insecure {
                    yaml.push_str("    insecure: true\n");
                }
                if let Some(ca_file) = &entry.ca_file {
                    yaml.push_str(&format!("    caFile: {}\n", path(ca_file)));
                }
                yaml
            })
            .collect();
        format!("registries:\n{entries}")
    };
    format!(
        "listen: {listen}\n\
         upstream: {upstream}\n\
         containerdNamespace: k8s.io\n\
         policy: {policy}\n\
         audit:\n  path: {audit}\n\
         {registries}\
         socket:\n  mode: \"0660\"\n  allowedUids: [{uid}]\n\
         verifyTimeout: {timeout}\n",
        listen = q(&format!("unix://{}", listen_sock.display())),
        upstream = q(&format!("unix://{}", upstream_sock.display())),
        policy = path(policy_path),
        audit = path(audit_path),
        uid = current_uid(),
        timeout = q(verify_timeout),
    )
}

/// The value of `series` (the name and labels exactly as pullgate writes them) in a `/metrics`
/// text, if present.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")))
    })
}

/// `config_yaml` with `metrics.listen: <listen>` added (SPEC §3), so pullgate serves `/metrics`,
/// `/healthz` and `/readyz` there.
pub fn with_metrics(config_yaml: &str, listen: SocketAddr) -> String {
    let mut yaml = config_yaml.to_owned();
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str(&format!("metrics:\n  listen: \"{listen}\"\n"));
    yaml
}

/// `GET http://<addr><path>` without a proxy: the status and the body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), reqwest::Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let response = client.get(format!("http://{addr}{path}")).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// `metrics.listen` of a configuration, if it has one that parses.
fn metrics_of(config_yaml: &str) -> Option<SocketAddr> {
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(config_yaml).ok()?;
    config.get("metrics")?.get("listen")?.as_str()?.parse().ok()
}

/// The listen socket and audit log a configuration names, resolved the way pullgate does:
/// `unix://` stripped, relative paths against the configuration's directory, SPEC defaults
/// where absent. A configuration that does not parse gets the defaults; pullgate reports it.
fn paths_of(dir: &Path, config_yaml: &str) -> (PathBuf, PathBuf) {
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(config_yaml).unwrap_or_default();
    let listen = config.get("listen").and_then(|v| v.as_str()).unwrap_or(DEFAULT_LISTEN);
    let listen = listen.strip_prefix("unix://").unwrap_or(listen);
    let audit = config
        .get("audit")
        .and_then(|a| a.get("path"))
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_AUDIT);
    (dir.join(listen), dir.join(audit))
}

/// The uid this test process runs as, which [`config_yaml`] allows on the socket.
fn current_uid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_yaml_is_spec_section_3() {
        let yaml = config_yaml(
            Path::new("/t/pg.sock"),
            Path::new("/t/containerd.sock"),
            Path::new("/t/policy.yaml"),
            Path::new("/t/audit.jsonl"),
            &["127.0.0.1:5000".to_owned()],
            "2s",
        );
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["listen"].as_str(), Some("unix:///t/pg.sock"));
        assert_eq!(doc["upstream"].as_str(), Some("unix:///t/containerd.sock"));
        assert_eq!(doc["containerdNamespace"].as_str(), Some("k8s.io"));
        assert_eq!(doc["policy"].as_str(), Some("/t/policy.yaml"));
        assert_eq!(doc["audit"]["path"].as_str(), Some("/t/audit.jsonl"));
        assert_eq!(doc["registries"][0]["host"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(doc["registries"][0]["insecure"].as_bool(), Some(true));
        assert_eq!(doc["socket"]["mode"].as_str(), Some("0660"));
        assert_eq!(doc["socket"]["allowedUids"][0].as_u64(), Some(u64::from(current_uid())));
        assert_eq!(doc["verifyTimeout"].as_str(), Some("2s"));
        assert_eq!(
            paths_of(Path::new("/d"), &yaml),
            ("/t/pg.sock".into(), "/t/audit.jsonl".into())
        );
    }

    #[test]
    fn registries_entries_say_insecure_or_ca_file() {
        let yaml = config_yaml_with_registries(
            Path::new("/t/pg.sock"),
            Path::new("/t/containerd.sock"),
            Path::new("/t/policy.yaml"),
            Path::new("/t/audit.jsonl"),
            &[
                RegistryEntry::tls_with_ca("127.0.0.1:5443", Path::new("/t/ca.pem")),
                RegistryEntry::insecure("127.0.0.1:5000"),
            ],
            "2s",
        );
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let tls = &doc["registries"][0];
        assert_eq!(tls["host"].as_str(), Some("127.0.0.1:5443"));
        assert_eq!(tls["caFile"].as_str(), Some("/t/ca.pem"));
        assert!(tls.get("insecure").is_none(), "{yaml}");
        let plain = &doc["registries"][1];
        assert_eq!(plain["host"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(plain["insecure"].as_bool(), Some(true));
        assert!(plain.get("caFile").is_none(), "{yaml}");

        let none = config_yaml_with_registries(
            Path::new("/t/pg.sock"),
            Path::new("/t/containerd.sock"),
            Path::new("/t/policy.yaml"),
            Path::new("/t/audit.jsonl"),
            &[],
            "2s",
        );
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&none).unwrap();
        assert_eq!(doc["registries"].as_sequence().map(Vec::len), Some(0));
    }

    #[test]
    fn metrics_listen_is_added_and_read_back() {
        let plain = config_yaml(
            Path::new("/t/pg.sock"),
            Path::new("/t/containerd.sock"),
            Path::new("/t/policy.yaml"),
            Path::new("/t/audit.jsonl"),
            &[],
            "2s",
        );
        assert_eq!(metrics_of(&plain), None);
        let addr: SocketAddr = "127.0.0.1:9469".parse().unwrap();
        let yaml = with_metrics(&plain, addr);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["metrics"]["listen"].as_str(), Some("127.0.0.1:9469"));
        assert_eq!(doc["verifyTimeout"].as_str(), Some("2s"));
        assert_eq!(metrics_of(&yaml), Some(addr));
    }

    #[test]
    fn paths_resolve_like_pullgate() {
        let yaml = "listen: unix:///x/pg.sock\naudit:\n  path: audit.jsonl\npolicy: p.yaml\n";
        assert_eq!(
            paths_of(Path::new("/d"), yaml),
            ("/x/pg.sock".into(), "/d/audit.jsonl".into())
        );
        assert_eq!(
            paths_of(Path::new("/d"), "policy: p.yaml\n"),
            (DEFAULT_LISTEN.into(), DEFAULT_AUDIT.into())
        );
    }
}
