//! containerd's registry host configuration (`registryHosts`): the hosts pullgate asks for each
//! registry, in order and with what each may be asked, or why a `hosts.toml` cannot be used.

use super::Check;
use crate::registry::{
    hosts::{describe, Namespace, Source, DEFAULT_NAMESPACE},
    Registries,
};

/// One line per registry directory, or one saying why there are none. The clients are built as
/// `serve` builds them, so an unreadable certificate file shows here too.
pub(super) fn registry_hosts(config: &crate::config::Config) -> Vec<Check> {
    let Some(root) = &config.registry_hosts else {
        return vec![Check::ok(
            "registryHosts is \"\": registries are reached directly, not through containerd's hosts.toml",
        )];
    };
    let loaded = match Registries::new(config, Default::default()) {
        Ok(registries) => registries.hosts(),
        Err(error) => {
            return vec![Check::fail(
                format!("registry host configuration cannot be used: {error}"),
                "correct the file: `pullgate serve` refuses it at start, and keeps the last good one on SIGHUP",
            )]
        }
    };
    if !loaded.exists() {
        return vec![Check::ok(format!(
            "registryHosts {} does not exist: registries are reached directly",
            root.display()
        ))];
    }
    let checks: Vec<Check> = loaded.namespaces().map(|(name, ns)| namespace(name, ns)).collect();
    if checks.is_empty() {
        return vec![Check::ok(format!(
            "registryHosts {} holds no registry directory: registries are reached directly",
            root.display()
        ))];
    }
    checks
}

/// `registry hosts for <registry> (<file>): <host> [<capabilities>], …`.
fn namespace(name: &str, namespace: &Namespace) -> Check {
    let from = match &namespace.source {
        Source::HostsToml(path) => path.display().to_string(),
        Source::CertFiles(dir) => format!("{} (certificate files, no hosts.toml)", dir.display()),
    };
    let which = if name == DEFAULT_NAMESPACE {
        "every registry without a directory of its own".to_string()
    } else {
        name.to_string()
    };
    Check::ok(format!(
        "registry hosts for {which} ({from}): {}",
        describe(&namespace.hosts)
    ))
}
