//! The node configuration file (SPEC §3). Every field but `policy` has a default; unknown
//! fields are errors that name the field.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::file::{read_bounded, ReadError};

/// Configuration files larger than this are refused rather than parsed.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The configuration of one pullgate process.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "defaults::listen", deserialize_with = "unix_path")]
    pub listen: PathBuf,
    #[serde(default = "defaults::upstream", deserialize_with = "unix_path")]
    pub upstream: PathBuf,
    #[serde(default = "defaults::namespace")]
    pub containerd_namespace: String,
    pub policy: PathBuf,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    #[serde(default)]
    pub socket: SocketConfig,
    #[serde(default = "defaults::verify_timeout", with = "duration")]
    pub verify_timeout: Duration,
    /// How long a tag's resolution to a digest is reused by later pulls of the tag with the same
    /// credentials; 0 resolves every pull.
    #[serde(default = "defaults::resolve_ttl", rename = "resolveTTL", with = "duration")]
    pub resolve_ttl: Duration,
    /// containerd's registry host directory (its CRI `config_path`): every registry request
    /// follows the `hosts.toml` containerd would. `None` (`""`) reaches registries directly; a
    /// directory that does not exist configures nothing.
    #[serde(default = "defaults::registry_hosts", deserialize_with = "optional_path")]
    pub registry_hosts: Option<PathBuf>,
    /// Registry credentials for registries the `PullImage` request carried none for (a
    /// `signatureRepository` on another registry).
    #[serde(default = "defaults::docker_config", deserialize_with = "docker_config_file")]
    pub docker_config: DockerConfigFile,
    /// Where the images verified under the policy in force are kept across restarts; `None`
    /// (`""`) keeps them in memory only.
    #[serde(default = "defaults::state_dir", deserialize_with = "optional_path")]
    pub state_dir: Option<PathBuf>,
    /// Fetch a pull's content into containerd's content store (under a lease) while its
    /// signatures are checked; `false` leaves all fetching to containerd after the verdict.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: bool,
}

/// Where `dockerConfig` says the Docker config.json is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerConfigFile {
    /// Not set: kubelet's own `/var/lib/kubelet/config.json`, read when it exists.
    Default(PathBuf),
    /// Set to a path: that file, which must exist.
    Path(PathBuf),
    /// Set to `""`: no Docker config is read; other registries are asked anonymously.
    Disabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "defaults::audit_path")]
    pub path: PathBuf,
}

/// Where `/metrics`, `/healthz` and `/readyz` are served; no `metrics` key, no endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsConfig {
    /// An IP address and TCP port, e.g. `127.0.0.1:9469`.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
}

/// Transport settings for one registry host.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    pub host: String,
    /// Plain HTTP. TLS is the default and the only choice for hosts not listed here.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocketConfig {
    #[serde(default = "defaults::socket_mode", deserialize_with = "octal_mode")]
    pub mode: u32,
    #[serde(default = "defaults::allowed_uids")]
    pub allowed_uids: Vec<u32>,
}

/// A configuration that could not be read; the message names the file and, where known, the
/// field and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

// === impl Config ===

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            ReadError::Io(source) => read(source),
            ReadError::TooLarge(_) => ConfigError::TooLarge { path: path.to_owned() },
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            read(io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ))
        })?;
        let mut config: Config = serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        // Relative paths are relative to the configuration file, not to the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        config.policy = base.join(&config.policy);
        config.audit.path = base.join(&config.audit.path);
        for registry in &mut config.registries {
            if let Some(ca) = &mut registry.ca_file {
                *ca = base.join(&*ca);
            }
        }
        if let Some(hosts) = &mut config.registry_hosts {
            *hosts = base.join(&*hosts);
        }
        if let DockerConfigFile::Path(file) = &mut config.docker_config {
            *file = base.join(&*file);
        }
        if let Some(dir) = &mut config.state_dir {
            *dir = base.join(&*dir);
        }
        config.validate(path)?;
        // Hosts are looked up in the canonical form references carry (`Registry.example.com:443`
        // is `registry.example.com`); `validate` has checked that each has one.
        for registry in &mut config.registries {
            if let Some(host) = crate::reference::canonical_host(&registry.host) {
                registry.host = host;
            }
        }
        Ok(config)
    }

    /// Every default, with `policy`: what `pullgate verify --policy` runs with.
    pub fn with_policy(policy: PathBuf) -> Self {
        Self {
            listen: defaults::listen(),
            upstream: defaults::upstream(),
            containerd_namespace: defaults::namespace(),
            policy,
            audit: AuditConfig::default(),
            metrics: None,
            registries: Vec::new(),
            socket: SocketConfig::default(),
            verify_timeout: defaults::verify_timeout(),
            resolve_ttl: defaults::resolve_ttl(),
            registry_hosts: defaults::registry_hosts(),
            docker_config: defaults::docker_config(),
            state_dir: defaults::state_dir(),
            prefetch: defaults::prefetch(),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        };
        if self.containerd_namespace.is_empty() {
            return Err(invalid("containerdNamespace", "must not be empty".into()));
        }
        if self.verify_timeout.is_zero() || self.verify_timeout > Duration::from_secs(300) {
            return Err(invalid("verifyTimeout", "must be between 1ms and 5m".into()));
        }
        if self.resolve_ttl > Duration::from_secs(300) {
            return Err(invalid(
                "resolveTTL",
                "must be at most 5m (0 resolves every pull)".into(),
            ));
        }
        if self.socket.mode & !0o777 != 0 {
            return Err(invalid(
                "socket.mode",
                format!("{:o} is not a permission mode", self.socket.mode),
            ));
        }
        for r in &self.registries {
            let Some(host) = crate::reference::canonical_host(&r.host) else {
                return Err(invalid(
                    "registries[].host",
                    format!("{:?} is not a host[:port]", r.host),
                ));
            };
            // References drop the default port, so plain HTTP on 443 could not be told apart
            // from the same host's HTTP on port 80.
            if r.insecure && !host.contains(':') && r.host.contains(':') {
                return Err(invalid(
                    "registries[].host",
                    format!(
                        "{:?}: plain HTTP on port 443 is not supported; references name port 443 by the host alone",
                        r.host
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Transport settings for `host`, if the configuration names it.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: defaults::audit_path(),
        }
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            mode: defaults::socket_mode(),
            allowed_uids: defaults::allowed_uids(),
        }
    }
}

mod defaults {
    use std::{path::PathBuf, time::Duration};

    pub fn listen() -> PathBuf {
        "/run/pullgate/pullgate.sock".into()
    }
    pub fn upstream() -> PathBuf {
        "/run/containerd/containerd.sock".into()
    }
    pub fn namespace() -> String {
        "k8s.io".into()
    }
    pub fn audit_path() -> PathBuf {
        "/var/log/pullgate/audit.jsonl".into()
    }
    pub fn socket_mode() -> u32 {
        0o660
    }
    pub fn allowed_uids() -> Vec<u32> {
        vec![0]
    }
    pub fn verify_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn resolve_ttl() -> Duration {
        Duration::from_secs(10)
    }
    /// containerd's conventional `config_path`; when it does not exist nothing is configured.
    pub fn registry_hosts() -> Option<PathBuf> {
        Some("/etc/containerd/certs.d".into())
    }
    /// systemd's `StateDirectory=pullgate`.
    pub fn state_dir() -> Option<PathBuf> {
        Some("/var/lib/pullgate".into())
    }
    /// Where kubelet reads its own registry credentials.
    pub fn docker_config() -> super::DockerConfigFile {
        super::DockerConfigFile::Default("/var/lib/kubelet/config.json".into())
    }
    pub fn prefetch() -> bool {
        true
    }
}

/// `dockerConfig`: a path, or `""` for none.
fn docker_config_file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DockerConfigFile, D::Error> {
    let s = String::deserialize(d)?;
    Ok(if s.is_empty() {
        DockerConfigFile::Disabled
    } else {
        DockerConfigFile::Path(PathBuf::from(s))
    })
}

/// `unix:///run/x.sock` (or a bare absolute path) to a path; other schemes are refused.
fn unix_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = String::deserialize(d)?;
    let path = s.strip_prefix("unix://").unwrap_or(&s);
    if !path.starts_with('/') {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is not a unix socket address; write unix:///absolute/path.sock"
        )));
    }
    Ok(PathBuf::from(path))
}

/// A path, or `""` for none.
fn optional_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

/// `127.0.0.1:9469` or `[::1]:9469`: an address to bind, not a name to resolve.
fn socket_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not an IP address and port like 127.0.0.1:9469 or [::1]:9469"
        ))
    })
}

/// A mode written as an octal string (`"0660"`); a YAML integer would be read as decimal.
fn octal_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    u32::from_str_radix(&s, 8)
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an octal mode like \"0660\"")))
}

mod duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write, process::Command};

    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    /// The limit holds for what is read: a FIFO's metadata says 0 bytes, as a file's does
    /// before it grows.
    #[test]
    fn a_config_larger_than_its_metadata_says_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        assert!(Command::new("mkfifo").arg(&path).status().unwrap().success());
        let writer = {
            let path = path.clone();
            let text = format!("policy: /p\n# {}\n", "x".repeat(MAX_CONFIG_BYTES as usize));
            // Fails with EPIPE once the reader has seen enough, which is fine.
            std::thread::spawn(move || {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .write_all(text.as_bytes())
            })
        };
        let error = Config::load(&path).expect_err("a config past the limit is refused");
        let _ = writer.join().unwrap();
        assert!(matches!(error, ConfigError::TooLarge { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!("{}: larger than {MAX_CONFIG_BYTES} bytes", path.display())
        );
    }

    #[test]
    fn defaults_apply() {
        let c = load("policy: /etc/pullgate/policy.yaml\n").unwrap();
        assert_eq!(c.listen, PathBuf::from("/run/pullgate/pullgate.sock"));
        assert_eq!(c.upstream, PathBuf::from("/run/containerd/containerd.sock"));
        assert_eq!(c.containerd_namespace, "k8s.io");
        assert_eq!(c.audit.path, PathBuf::from("/var/log/pullgate/audit.jsonl"));
        assert_eq!(c.socket.mode, 0o660);
        assert_eq!(c.socket.allowed_uids, vec![0]);
        assert_eq!(c.verify_timeout, Duration::from_secs(10));
        assert_eq!(c.resolve_ttl, Duration::from_secs(10));
        assert!(c.metrics.is_none(), "no endpoint unless asked for");
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/var/lib/pullgate")));
        assert_eq!(
            c.docker_config,
            DockerConfigFile::Default("/var/lib/kubelet/config.json".into())
        );
    }

    #[test]
    fn docker_config_is_a_path_relative_to_the_config_or_empty_for_none() {
        let c = load("policy: p.yaml\ndockerConfig: creds/config.json\n").unwrap();
        match &c.docker_config {
            DockerConfigFile::Path(p) => assert!(p.is_absolute() && p.ends_with("creds/config.json"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        let c = load("policy: p.yaml\ndockerConfig: \"\"\n").unwrap();
        assert_eq!(c.docker_config, DockerConfigFile::Disabled);
        let err = load("policy: p.yaml\ndockerConfig: [a]\n").unwrap_err().to_string();
        assert!(err.contains("dockerConfig") || err.contains("line 2"), "{err}");
    }

    /// A registries[] entry applies to every spelling of its host, as policy rules do.
    #[test]
    fn registry_hosts_are_canonical() {
        let c = load("policy: p.yaml\nregistries:\n  - host: Registry.Example.COM:443\n  - host: 127.0.0.1:05000\n    insecure: true\n").unwrap();
        assert!(c.registry("registry.example.com").is_some());
        assert!(c.registry("127.0.0.1:5000").unwrap().insecure);
        let err =
            load("policy: p.yaml\nregistries:\n  - host: registry.example.com:443\n    insecure: true\n").unwrap_err();
        assert!(err.to_string().contains("port 443"), "{err}");
        assert!(load("policy: p.yaml\nregistries:\n  - host: registry.example.com:99999\n").is_err());
    }

    #[test]
    fn full_example_parses() {
        let c = load(
            r#"
listen: unix:///run/pullgate/pullgate.sock
upstream: unix:///run/containerd/containerd.sock
containerdNamespace: k8s.io
policy: policy.yaml
audit:
  path: /var/log/pullgate/audit.jsonl
metrics:
  listen: 127.0.0.1:9469
registries:
  - host: 127.0.0.1:5000
    insecure: true
socket:
  mode: "0600"
  allowedUids: [0, 1000]
verifyTimeout: 2500ms
resolveTTL: 0s
"#,
        )
        .unwrap();
        assert!(c.policy.ends_with("policy.yaml") && c.policy.is_absolute());
        assert!(c.registry("127.0.0.1:5000").unwrap().insecure);
        assert!(c.registry("ghcr.io").is_none());
        assert_eq!(c.socket.mode, 0o600);
        assert_eq!(c.verify_timeout, Duration::from_millis(2500));
        assert_eq!(c.resolve_ttl, Duration::ZERO);
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9469".parse().unwrap());
    }

    /// `registryHosts` defaults to containerd's conventional directory, is relative to the
    /// configuration like every path, and `""` turns it off.
    #[test]
    fn registry_hosts_default_relative_and_off() {
        let c = load("policy: p.yaml\n").unwrap();
        assert_eq!(c.registry_hosts.as_deref(), Some(Path::new("/etc/containerd/certs.d")));
        let c = load("policy: p.yaml\nregistryHosts: certs.d\n").unwrap();
        let hosts = c.registry_hosts.unwrap();
        assert!(hosts.is_absolute() && hosts.ends_with("certs.d"), "{}", hosts.display());
        let c = load("policy: p.yaml\nregistryHosts: \"\"\n").unwrap();
        assert_eq!(c.registry_hosts, None);
    }

    /// `stateDir` is relative to the configuration like every path, and `""` keeps
    /// verifications in memory only.
    #[test]
    fn state_dir_relative_and_off() {
        let c = load("policy: p.yaml\nstateDir: state\n").unwrap();
        let dir = c.state_dir.unwrap();
        assert!(dir.is_absolute() && dir.ends_with("state"), "{}", dir.display());
        let c = load("policy: p.yaml\nstateDir: \"\"\n").unwrap();
        assert_eq!(c.state_dir, None);
    }

    #[test]
    fn resolve_ttl_is_bounded() {
        let err = load("policy: p.yaml\nresolveTTL: 6m\n").unwrap_err().to_string();
        assert!(err.contains("resolveTTL") && err.contains("at most 5m"), "{err}");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = load("policy: p.yaml\naudit:\n  path: /x\n  rotate: true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rotate"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn policy_is_required_and_bad_values_are_refused() {
        assert!(load("listen: unix:///x.sock\n")
            .unwrap_err()
            .to_string()
            .contains("policy"));
        assert!(load("policy: p\nlisten: tcp://1.2.3.4:5\n")
            .unwrap_err()
            .to_string()
            .contains("unix socket"));
        assert!(load("policy: p\nsocket:\n  mode: \"9\"\n")
            .unwrap_err()
            .to_string()
            .contains("octal"));
        assert!(load("policy: p\nverifyTimeout: soon\n")
            .unwrap_err()
            .to_string()
            .contains("soon"));
        assert!(load("policy: p\nverifyTimeout: 0s\n")
            .unwrap_err()
            .to_string()
            .contains("verifyTimeout"));
        assert!(load("policy: p\nmetrics:\n  listen: localhost:9469\n")
            .unwrap_err()
            .to_string()
            .contains("IP address and port"));
    }
}
