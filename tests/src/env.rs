//! One test's world: a registry, a containerd that pulls from it (over plain HTTP, or over TLS
//! trusting the registry's test CA), and a signing key, all under one temp dir that goes away
//! with the env.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tempfile::TempDir;

use crate::{
    containerd::{write_certs_d, Binary, Containerd, RegistryHost},
    distribution::Auth,
    image,
    latency_proxy::LatencyProxy,
    policy,
    process::free_local_port,
    pullgate::{self, Pullgate, RegistryEntry},
    registry::Registry,
    signer::Signer,
    token_server::TokenServer,
};

/// The name [`TestEnv::key_policy`] gives the signer's authority.
pub const TEST_AUTHORITY: &str = "test-key";

/// A registry, a containerd that trusts it (as an insecure registry, or over TLS with its CA),
/// and a [`Signer`]. Fields drop in order, so the daemons stop before their directory is
/// removed.
#[derive(Debug)]
pub struct TestEnv {
    pub registry: Registry,
    pub containerd: Containerd,
    pub signer: Signer,
    /// The latency proxies in front of the registry, for an env started with
    /// [`TestEnv::start_behind_proxy`].
    pub proxied: Option<Proxied>,
    pullgates: AtomicUsize,
    dir: TempDir,
}

/// A registry in another zone: containerd and pullgate each reach it through a
/// [`LatencyProxy`] of their own (named as the registry's `server` in the `hosts.toml` each
/// reads), so the requests of each are counted apart. Pushes go to the registry directly.
#[derive(Debug)]
pub struct Proxied {
    pub containerd: LatencyProxy,
    pub pullgate: LatencyProxy,
    /// The `registryHosts` directory pullgate's configuration names.
    pullgate_hosts: PathBuf,
}

// === impl TestEnv ===

impl TestEnv {
    /// An env whose registry lets anyone push and pull.
    pub async fn start() -> TestEnv {
        Self::start_inner(None).await
    }

    /// An env whose registry demands basic authentication as `user`/`pass`.
    pub async fn start_with_auth(user: &str, pass: &str) -> TestEnv {
        Self::start_inner(Some((user, pass))).await
    }

    /// An env whose registry demands bearer tokens from its token server, which grants them to
    /// `user`/`pass` (see [`crate::token_server`]); [`TestEnv::auth`] is `user`/`pass`.
    pub async fn start_with_token_auth(user: &str, pass: &str) -> TestEnv {
        let dir = env_dir();
        let registry = Registry::start_in_with_token_auth(&dir.path().join("registry"), user, pass).await;
        Self::start_with(dir, registry).await
    }

    /// An env whose open registry serves only TLS, with a certificate signed by a test CA
    /// ([`Registry::ca_file`]) that the rig and containerd trust; containerd has no plain-HTTP
    /// mirror for it.
    pub async fn start_with_tls() -> TestEnv {
        let dir = env_dir();
        let registry = Registry::start_in_with_tls(&dir.path().join("registry")).await;
        Self::start_with(dir, registry).await
    }

    /// As [`TestEnv::start`], with a containerd running `binary` (say
    /// [`crate::containerd::binary_2x`]) instead of the usual one.
    pub async fn start_on(binary: &'static Binary) -> TestEnv {
        let dir = env_dir();
        let registry = Registry::start_in(&dir.path().join("registry"), None).await;
        let containerd = Containerd::try_start_on(
            binary,
            &dir.path().join("containerd"),
            &[RegistryHost::plain_http(&registry.host())],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        Self::with(dir, registry, containerd)
    }

    /// An env whose open registry is reached `rtt` away: containerd through one
    /// [`LatencyProxy`], pullgates through another ([`Proxied`]).
    pub async fn start_behind_proxy(rtt: Duration) -> TestEnv {
        let dir = env_dir();
        let registry = Registry::start_in(&dir.path().join("registry"), None).await;
        let proxy = || async {
            LatencyProxy::start(&registry.host(), rtt)
                .await
                .expect("start a latency proxy")
        };
        let (to_containerd, to_pullgate) = (proxy().await, proxy().await);
        let behind = |proxy: &LatencyProxy| RegistryHost {
            namespace: registry.host(),
            server: Some(format!("http://{}", proxy.host())),
            ca: None,
            mirrors: Vec::new(),
        };
        let containerd =
            Containerd::start_in_with_hosts(&dir.path().join("containerd"), &[behind(&to_containerd)]).await;
        let pullgate_hosts = dir.path().join("pullgate-hosts");
        write_certs_d(&pullgate_hosts, &[behind(&to_pullgate)])
            .unwrap_or_else(|e| panic!("write {}: {e}", pullgate_hosts.display()));
        let mut env = Self::with(dir, registry, containerd);
        env.proxied = Some(Proxied {
            containerd: to_containerd,
            pullgate: to_pullgate,
            pullgate_hosts,
        });
        env
    }

    async fn start_inner(htpasswd: Option<(&str, &str)>) -> TestEnv {
        let dir = env_dir();
        let registry = Registry::start_in(&dir.path().join("registry"), htpasswd).await;
        Self::start_with(dir, registry).await
    }

    async fn start_with(dir: TempDir, registry: Registry) -> TestEnv {
        let containerd_dir = dir.path().join("containerd");
        let containerd = match registry.ca_file() {
            Some(ca) => Containerd::start_in_with_tls(&containerd_dir, &[], &[(registry.host(), ca.to_owned())]).await,
            None => Containerd::start_in(&containerd_dir, &[registry.host()]).await,
        };
        Self::with(dir, registry, containerd)
    }

    fn with(dir: TempDir, registry: Registry, containerd: Containerd) -> TestEnv {
        TestEnv {
            registry,
            containerd,
            signer: Signer::generate(),
            proxied: None,
            pullgates: AtomicUsize::new(0),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// The registry's token server, if it uses token authentication.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.registry.token_server()
    }

    /// The registry's credentials, if it demands them.
    pub fn auth(&self) -> Auth<'_> {
        self.registry.credentials()
    }

    /// `host/repo:tag`, or `host/repo@digest` when `reference` is a digest.
    pub fn image_ref(&self, repo: &str, reference: &str) -> String {
        let separator = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{repo}{separator}{reference}", self.host())
    }

    /// Pushes a new tiny image as `repo:tag` (with the env's credentials); returns its digest.
    pub async fn push_image(&self, repo: &str, tag: &str, content: &str) -> String {
        image::push_image(&self.host(), repo, tag, content, self.auth())
            .await
            .unwrap_or_else(|e| panic!("push {}: {e}", self.image_ref(repo, tag)))
    }

    /// Pushes a new tiny image as `repo:tag` and signs it with the env's signer; returns its
    /// digest.
    pub async fn push_signed_image(&self, repo: &str, tag: &str, content: &str) -> String {
        let digest = self.push_image(repo, tag, content).await;
        self.signer
            .sign_image(&self.host(), repo, &digest, self.auth())
            .await
            .unwrap_or_else(|e| panic!("sign {}: {e}", self.image_ref(repo, &digest)));
        digest
    }

    /// A SPEC §4 policy that requires the env signer's key for `images` (see
    /// [`policy::key_policy`]).
    pub fn key_policy(&self, images: &[&str]) -> String {
        policy::key_policy(TEST_AUTHORITY, &self.signer.public_key_pem(), images)
    }

    /// A SPEC §3 configuration for a pullgate in `dir` in front of this env's containerd, with
    /// the registry as an insecure host (or, when it serves TLS, with its CA as `caFile`), and its
    /// token server too if it has one (pullgate fetches tokens from a plain-HTTP realm only on a
    /// host marked insecure).
    pub fn pullgate_config(&self, dir: &Path, verify_timeout: &str) -> String {
        let mut registries = vec![match self.registry.ca_file() {
            Some(ca) => RegistryEntry::tls_with_ca(&self.host(), ca),
            None => RegistryEntry::insecure(&self.host()),
        }];
        registries.extend(self.token_server().map(|t| RegistryEntry::insecure(&t.host())));
        self.pullgate_config_with(dir, &registries, verify_timeout)
    }

    /// As [`TestEnv::pullgate_config`], with exactly `registries` as the `registries` entries.
    /// Behind a proxy ([`TestEnv::start_behind_proxy`]) it also names pullgate's `hosts.toml`
    /// directory as `registryHosts`.
    pub fn pullgate_config_with(&self, dir: &Path, registries: &[RegistryEntry], verify_timeout: &str) -> String {
        let mut config = pullgate::config_yaml_with_registries(
            &dir.join("pullgate.sock"),
            &self.containerd.socket(),
            &dir.join("policy.yaml"),
            &dir.join("audit.jsonl"),
            registries,
            verify_timeout,
        );
        if let Some(proxied) = &self.proxied {
            let path = proxied.pullgate_hosts.display().to_string();
            let quoted = serde_json::to_string(&path).expect("encode a path");
            config.push_str(&format!("registryHosts: {quoted}\n"));
        }
        config
    }

    /// Starts a pullgate in front of this env's containerd with `policy_yaml`, in a fresh
    /// directory of the env (`pullgate`, `pullgate-2`, ...).
    pub async fn start_pullgate(&self, policy_yaml: &str) -> Pullgate {
        let dir = self.next_pullgate_dir();
        Pullgate::start(&dir, &self.pullgate_config(&dir, "10s"), policy_yaml).await
    }

    /// As [`TestEnv::start_pullgate`], also serving `/metrics`, `/healthz` and `/readyz` on a
    /// free loopback port ([`Pullgate::metrics_addr`]); another port is tried when the one picked
    /// was taken meanwhile.
    pub async fn start_pullgate_with_metrics(&self, policy_yaml: &str) -> Pullgate {
        let mut attempts = 0;
        loop {
            let port = free_local_port().expect("find a free port");
            let dir = self.next_pullgate_dir();
            let config = pullgate::with_metrics(&self.pullgate_config(&dir, "10s"), ([127, 0, 0, 1], port).into());
            match Pullgate::try_start(&dir, &config, policy_yaml).await {
                Ok(pullgate) => return pullgate,
                Err(e) if attempts < 3 && e.log_tail.contains("Address already in use") => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// As [`TestEnv::start_pullgate`], with `extra_config` (whole YAML lines, such as
    /// `resolveTTL: 0s`) added to pullgate's configuration.
    pub async fn start_pullgate_with_config(&self, policy_yaml: &str, extra_config: &str) -> Pullgate {
        let dir = self.next_pullgate_dir();
        let config = format!("{}{extra_config}", self.pullgate_config(&dir, "10s"));
        Pullgate::start(&dir, &config, policy_yaml).await
    }

    /// As [`TestEnv::start_pullgate`], with exactly `registries` in pullgate's configuration.
    pub async fn start_pullgate_with(&self, policy_yaml: &str, registries: &[RegistryEntry]) -> Pullgate {
        let dir = self.next_pullgate_dir();
        Pullgate::start(&dir, &self.pullgate_config_with(&dir, registries, "10s"), policy_yaml).await
    }

    fn next_pullgate_dir(&self) -> PathBuf {
        match self.pullgates.fetch_add(1, Ordering::Relaxed) {
            0 => self.dir().join("pullgate"),
            n => self.dir().join(format!("pullgate-{}", n + 1)),
        }
    }
}

fn env_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("pullgate-env-")
        .tempdir()
        .expect("create a temp dir")
}
