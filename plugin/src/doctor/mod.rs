//! `pullgate doctor`: checks the node the way an operator would before trusting pullgate with
//! kubelet's pulls — the sockets and their permissions, containerd behind pullgate, kubelet in
//! front of it, the policy, the trust material's expiry and the audit log.
//!
//! Every check runs even when an earlier one failed, and each says in one line what it found
//! and, when something is wrong, how to fix it. Nothing here changes the node. Every path comes
//! from [`Options`] or the configuration, so the checks run as well against a temp dir.

//!
//! One file per family of checks: [`socket`] (the listen socket and its directory),
//! [`containerd`], [`kubelet`] (its wiring to pullgate; [`kubelet_proc`] reads the running
//! kubelet from /proc), [`policy`] (the policy and its trust
//! material's expiry), [`registry_hosts`] (containerd's hosts.toml as pullgate follows it),
//! [`credentials`] (`dockerConfig`), [`audit`] (the audit log) and [`state`] (`stateDir`).

mod audit;
mod containerd;
mod credentials;
mod kubelet;
mod kubelet_proc;
mod policy;
mod registry_hosts;
mod socket;
mod state;
#[cfg(test)]
mod tests;

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;

use crate::{config::Config, policy::Policy};

/// Where the configuration is when neither `--config` nor `PULLGATE_CONFIG` says (SPEC §3).
pub const DEFAULT_CONFIG: &str = "/etc/pullgate/config.yaml";

/// Where kubeadm writes kubelet's `KubeletConfiguration`.
pub const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";

/// Where kubelet's systemd drop-ins, and so its command-line flags, live.
pub const DEFAULT_KUBELET_DROPINS: &str = "/etc/systemd/system/kubelet.service.d";

/// How long pullgate's socket has to accept, and containerd to answer CRI `Version`.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// What to check: pullgate's configuration and where kubelet's wiring is written down.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// kubelet's `KubeletConfiguration` YAML, searched for `imageServiceEndpoint` where no
    /// kubelet runs (a running kubelet names its own files).
    pub kubelet_config: PathBuf,
    /// kubelet's systemd drop-in directory, whose `*.conf` files are searched for
    /// `--image-service-endpoint`.
    pub kubelet_dropins: PathBuf,
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works today, needs attention soon.
    Warn,
    /// Broken now: pulls fail, or are not verified.
    Fail,
}

/// One finding, printed as one line: `ok   <what>`, `warn <what> — fix: <how>` or
/// `FAIL <what is wrong> — fix: <how>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

/// Every finding, in the order the checks ran.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The configuration could not be read, so nothing else was checked.
    pub config_unreadable: bool,
}

/// Runs every check and collects what each found.
pub async fn run(options: &Options) -> Report {
    let config = match Config::load(&options.config) {
        Ok(config) => config,
        Err(error) => {
            return Report {
                checks: vec![config_unreadable(&options.config, &error)],
                config_unreadable: true,
            }
        }
    };
    let policy = Policy::load(&config.policy);
    let mut checks = vec![
        Check::ok(format!("config {} parses", options.config.display())),
        socket::listen_socket(&config).await,
        socket::listen_directory(&config.listen),
        containerd::upstream(&config.upstream).await,
    ];
    checks.extend(kubelet::kubelet_wiring(
        &config,
        &options.kubelet_config,
        &options.kubelet_dropins,
    ));
    checks.push(policy::policy_loads(&config.policy, &policy));
    checks.extend(policy::trust_material(
        &config.policy,
        policy.as_ref().ok(),
        Timestamp::now(),
    ));
    checks.extend(registry_hosts::registry_hosts(&config));
    checks.push(credentials::docker_config(&config.docker_config));
    checks.push(audit::audit_log(&config.audit.path));
    checks.push(state::state(
        config.state_dir.as_deref(),
        policy.as_ref().ok().map(Policy::hash),
    ));
    Report {
        checks,
        config_unreadable: false,
    }
}

// === impl Check ===

impl Check {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            level: Level::Ok,
            message: one_line(message.into()),
            fix: None,
        }
    }

    pub fn warn(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            message: one_line(message.into()),
            fix: Some(one_line(fix.into())),
        }
    }

    pub fn fail(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            message: one_line(message.into()),
            fix: Some(one_line(fix.into())),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{label} {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

// === impl Report ===

impl Report {
    /// 0 when nothing failed, 1 when something did, 2 when the configuration could not be read.
    pub fn exit_code(&self) -> u8 {
        if self.config_unreadable {
            2
        } else if self.checks.iter().any(|c| c.level == Level::Fail) {
            1
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    /// One line per check.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

/// Why the configuration could not be read, and what to do about it.
fn config_unreadable(path: &Path, error: &crate::config::ConfigError) -> Check {
    let fix = match error {
        crate::config::ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            "write the configuration (its fields: docs/contract.md), or name it with --config PATH or PULLGATE_CONFIG"
                .to_string()
        }
        _ => format!(
            "correct {}: `pullgate serve` refuses it too; nothing else was checked",
            path.display()
        ),
    };
    Check::fail(format!("config cannot be read: {error}"), fix)
}

/// Messages from other crates may hold newlines; a check is one line.
fn one_line(text: String) -> String {
    if text.contains('\n') {
        text.split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        text
    }
}
