//! containerd's registry host configuration: the `config_path` directory with one
//! `<namespace>/hosts.toml` per registry host namespace, read the same way by containerd 1.6,
//! 1.7 and 2.x (the CRI `registry.mirrors` and `registry.configs` it replaces are deprecated, and
//! gone from 2.x's config version 3).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// One registry host namespace: what containerd does for images named `<namespace>/...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost {
    /// The directory name: the registry as images name it (`host` or `host:port`), or `_default`
    /// for every registry without a directory of its own.
    pub namespace: String,
    /// `server`, the host tried after every mirror (`http://…` or `https://…`); `None` leaves
    /// containerd's default, `https://<namespace>` (plain HTTP for a loopback namespace).
    pub server: Option<String>,
    /// `ca`: a CA file trusted for `server` besides the system's roots.
    pub ca: Option<PathBuf>,
    /// `[host."<url>"]` tables, tried in this order before `server`; containerd adds
    /// `?ns=<namespace>` to what it asks them.
    pub mirrors: Vec<Mirror>,
}

/// A `[host."<url>"]` table of a hosts.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `http://host:port` or `https://host:port`, optionally with a path.
    pub url: String,
    /// What containerd may ask of it: `pull`, `resolve`, `push`.
    pub capabilities: Vec<String>,
    /// A CA file trusted for this host besides the system's roots.
    pub ca: Option<PathBuf>,
}

// === impl RegistryHost ===

impl RegistryHost {
    /// The registry `host` (`host:port`) served over plain HTTP at its own name.
    pub fn plain_http(host: &str) -> RegistryHost {
        RegistryHost {
            namespace: host.to_owned(),
            server: Some(format!("http://{host}")),
            ca: None,
            mirrors: Vec::new(),
        }
    }

    /// The registry `host` served over TLS only, trusting `ca` besides the system's roots.
    pub fn tls(host: &str, ca: &Path) -> RegistryHost {
        RegistryHost {
            namespace: host.to_owned(),
            server: Some(format!("https://{host}")),
            ca: Some(ca.to_owned()),
            mirrors: Vec::new(),
        }
    }

    /// Images named `<namespace>/...` pulled from `mirror` first, then from containerd's default
    /// server for the namespace (`registry-1.docker.io` for `docker.io`).
    pub fn mirrored(namespace: &str, mirror: Mirror) -> RegistryHost {
        RegistryHost {
            namespace: namespace.to_owned(),
            server: None,
            ca: None,
            mirrors: vec![mirror],
        }
    }

    /// The hosts.toml of this namespace.
    ///
    /// containerd 1.6 and 1.7 ignore a hosts.toml without a `[host."…"]` table (they log
    /// "failed to decode hosts.toml: invalid `host` tree" and pull as if it were absent), so a
    /// namespace with a `server` and no mirror also lists its server as its one host. containerd
    /// then has it twice, and tries it a second time only after the first failed.
    pub fn hosts_toml(&self) -> String {
        let mut toml = String::new();
        if let Some(server) = &self.server {
            toml.push_str(&format!("server = {}\n", toml_str(server)));
        }
        if let Some(ca) = &self.ca {
            toml.push_str(&format!("ca = {}\n", toml_path(ca)));
        }
        let server_as_host = match (&self.server, self.mirrors.is_empty()) {
            (Some(server), true) => Some(Mirror {
                url: server.clone(),
                capabilities: ["pull", "resolve", "push"].map(str::to_owned).to_vec(),
                ca: self.ca.clone(),
            }),
            _ => None,
        };
        for mirror in self.mirrors.iter().chain(&server_as_host) {
            let capabilities: Vec<String> = mirror.capabilities.iter().map(|c| toml_str(c)).collect();
            toml.push_str(&format!(
                "\n[host.{}]\n  capabilities = [{}]\n",
                toml_str(&mirror.url),
                capabilities.join(", ")
            ));
            if let Some(ca) = &mirror.ca {
                toml.push_str(&format!("  ca = {}\n", toml_path(ca)));
            }
        }
        toml
    }
}

// === impl Mirror ===

impl Mirror {
    /// A mirror containerd pulls from and resolves tags with (a private mirror, as a node's
    /// pull-through cache is).
    pub fn pull_and_resolve(url: &str) -> Mirror {
        Mirror {
            url: url.to_owned(),
            capabilities: vec!["pull".to_owned(), "resolve".to_owned()],
            ca: None,
        }
    }
}

/// Writes `<dir>/<namespace>/hosts.toml` for each of `hosts`: the directory to give containerd as
/// its registry `config_path`.
pub fn write_certs_d(dir: &Path, hosts: &[RegistryHost]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for host in hosts {
        // A namespace is one path component: a `/` or `..` would write outside `dir`.
        if host.namespace.is_empty() || host.namespace.contains('/') || host.namespace.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} is not a registry host namespace", host.namespace),
            ));
        }
        let namespace_dir = dir.join(&host.namespace);
        fs::create_dir_all(&namespace_dir)?;
        fs::write(namespace_dir.join("hosts.toml"), host.hosts_toml())?;
    }
    Ok(())
}

/// A TOML basic string.
pub(super) fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn toml_path(path: &Path) -> String {
    toml_str(&path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirrored_namespace_lists_its_mirror_and_leaves_the_server_to_containerd() {
        let host = RegistryHost::mirrored("docker.io", Mirror::pull_and_resolve("http://127.0.0.1:5000"));
        assert_eq!(
            host.hosts_toml(),
            "\n[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
    }

    #[test]
    fn a_tls_registry_names_its_server_and_ca() {
        let host = RegistryHost::tls("127.0.0.1:5000", Path::new("/x/ca.pem"));
        assert_eq!(
            host.hosts_toml(),
            "server = \"https://127.0.0.1:5000\"\nca = \"/x/ca.pem\"\n\
             \n[host.\"https://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"/x/ca.pem\"\n"
        );
    }

    #[test]
    fn a_namespace_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../etc", "a/b", ".."] {
            let host = RegistryHost::plain_http(bad);
            assert!(write_certs_d(dir.path(), &[host]).is_err(), "{bad:?}");
        }
    }
}
