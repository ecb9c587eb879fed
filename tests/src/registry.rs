//! A real CNCF distribution registry (Debian `docker-registry`) on 127.0.0.1: open, with htpasswd
//! authentication, or with token authentication against a [`TokenServer`] of its own; serving
//! plain HTTP, or TLS with a certificate from a test CA of its own ([`Registry::start_with_tls`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tempfile::TempDir;

use crate::{
    distribution::{self, TlsHost},
    process::{free_local_port, Daemon, StartError},
    tls::{TestCa, TlsFiles},
    token_server::{self, TokenServer},
};

/// The registry program Debian installs.
const PROGRAM: &str = "docker-registry";

/// A bound on the registry answering `GET /v2/` after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports are tried when another process takes the chosen one first.
const BIND_ATTEMPTS: usize = 5;

/// A registry child process serving plain HTTP (or TLS) on a free loopback port, its storage in
/// its own directory, deletion enabled. Dropping it kills the process.
#[derive(Debug)]
pub struct Registry {
    daemon: Daemon,
    host: String,
    dir: PathBuf,
    credentials: Option<(String, String)>,
    /// The token server of a token-auth registry; it stops with the registry.
    token_server: Option<TokenServer>,
    /// The certificate files of a TLS registry, and its registration with the rig's HTTP client
    /// (dropped after the daemon, which is stopped first).
    tls: Option<(TlsFiles, TlsHost)>,
    _tmp: Option<TempDir>,
}

/// What the registry's `auth` section says.
enum AuthSection {
    Open,
    Htpasswd(PathBuf),
    /// Bearer tokens from `realm`, signed by a certificate in the `rootcertbundle` file.
    Token {
        realm: String,
        bundle: PathBuf,
    },
}

// === impl Registry ===

impl Registry {
    /// A registry that lets anyone push and pull, in a temp dir of its own.
    pub async fn start() -> Registry {
        Self::start_owned(None).await
    }

    /// A registry that demands HTTP basic authentication as `user`/`pass` for every request.
    pub async fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Self::start_owned(Some((user, pass))).await
    }

    /// A registry that demands bearer tokens (distribution's `auth: token`) from a token server
    /// of its own that knows `user`/`pass` (see [`token_server`] for who gets which token).
    /// [`Registry::credentials`] are `user`/`pass`, which the rig's pushes trade for a token.
    pub async fn start_with_token_auth(user: &str, pass: &str) -> Registry {
        let tmp = temp_dir();
        let mut registry = Self::start_in_with_token_auth(tmp.path(), user, pass).await;
        registry._tmp = Some(tmp);
        registry
    }

    /// An open registry that serves only TLS, with a certificate for `127.0.0.1` and `localhost`
    /// signed by a CA made for it ([`Registry::ca_file`]), in a temp dir of its own. The rig's own
    /// requests to it go over `https://` trusting that CA (see [`distribution::TlsHost`]).
    pub async fn start_with_tls() -> Registry {
        let tmp = temp_dir();
        let mut registry = Self::start_in_with_tls(tmp.path()).await;
        registry._tmp = Some(tmp);
        registry
    }

    /// As [`Registry::start_with_tls`], keeping config, storage, log and the certificates
    /// (`tls/ca.pem`, `tls/server.pem`, `tls/server-key.pem`) in `dir`.
    pub async fn start_in_with_tls(dir: &Path) -> Registry {
        fs::create_dir_all(dir).expect("create the registry dir");
        let files = TestCa::generate().write_to(&dir.join("tls"));
        match Self::try_start_tls(dir, &AuthSection::Open, None, Some(&files)).await {
            Ok(registry) => registry,
            Err(e) => panic!("{e}"),
        }
    }

    async fn start_owned(htpasswd: Option<(&str, &str)>) -> Registry {
        let tmp = temp_dir();
        let mut registry = Self::start_in(tmp.path(), htpasswd).await;
        registry._tmp = Some(tmp);
        registry
    }

    /// Starts a registry keeping its config, storage and log in `dir` (created if missing).
    /// Panics with the log tail if it does not answer within 10 s.
    pub async fn start_in(dir: &Path, htpasswd: Option<(&str, &str)>) -> Registry {
        match Self::try_start_in(dir, htpasswd).await {
            Ok(registry) => registry,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Registry::start_with_token_auth`], keeping config, storage, log and the token
    /// certificate bundle (`token-ca.pem`) in `dir`.
    pub async fn start_in_with_token_auth(dir: &Path, user: &str, pass: &str) -> Registry {
        fs::create_dir_all(dir).expect("create the registry dir");
        let server = TokenServer::start(user, pass);
        let bundle = dir.join("token-ca.pem");
        fs::write(&bundle, server.cert_pem()).expect("write the token certificate bundle");
        let auth = AuthSection::Token {
            realm: server.realm(),
            bundle,
        };
        match Self::try_start(dir, &auth, Some((user, pass))).await {
            Ok(mut registry) => {
                registry.token_server = Some(server);
                registry
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Registry::start_in`], returning the failure instead of panicking.
    pub async fn try_start_in(dir: &Path, htpasswd: Option<(&str, &str)>) -> Result<Registry, StartError> {
        fs::create_dir_all(dir).expect("create the registry dir");
        let auth = match htpasswd {
            Some((user, pass)) => AuthSection::Htpasswd(write_htpasswd(dir, user, pass)),
            None => AuthSection::Open,
        };
        Self::try_start(dir, &auth, htpasswd).await
    }

    async fn try_start(
        dir: &Path,
        auth: &AuthSection,
        credentials: Option<(&str, &str)>,
    ) -> Result<Registry, StartError> {
        Self::try_start_tls(dir, auth, credentials, None).await
    }

    async fn try_start_tls(
        dir: &Path,
        auth: &AuthSection,
        credentials: Option<(&str, &str)>,
        tls: Option<&TlsFiles>,
    ) -> Result<Registry, StartError> {
        fs::create_dir_all(dir.join("storage")).expect("create the registry storage dir");
        let log = dir.join("registry.log");

        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_local_port().expect("find a free port");
            let host = format!("127.0.0.1:{port}");
            let config = dir.join("config.yml");
            fs::write(&config, config_yml(dir, &host, auth, tls)).expect("write config.yml");
            // A fresh log per attempt, so an earlier attempt's bind error is not read as this one's.
            let _ = fs::remove_file(&log);
            // Registered before the probe, so that the probe speaks TLS too; an attempt that
            // fails drops its registration. A port a live TLS registry of this process holds is
            // not tried.
            let tls_host = match tls {
                None => None,
                Some(files) => {
                    let ca = fs::read(&files.ca).expect("read the registry CA");
                    let Some(registration) = TlsHost::register(&host, &ca) else {
                        continue;
                    };
                    Some((files.clone(), registration))
                }
            };

            let mut daemon = Daemon::spawn(PROGRAM, command(&config), &log)
                .unwrap_or_else(|e| panic!("spawn {PROGRAM} (Debian package docker-registry): {e}"));
            match daemon
                .wait_ready("GET /v2/ answered", READY_TIMEOUT, async || answers(&host).await)
                .await
            {
                Ok(()) => {
                    return Ok(Registry {
                        daemon,
                        host,
                        dir: dir.to_owned(),
                        credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
                        token_server: None,
                        tls: tls_host,
                        _tmp: None,
                    })
                }
                // Someone took the port between our probe and the registry's bind: try another.
                Err(e) if e.log_tail.contains("address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt got as far as starting the registry"))
    }

    /// `127.0.0.1:PORT`, the registry host part of image references.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` for a TLS registry.
    pub fn url(&self) -> String {
        distribution::base_url(&self.host)
    }

    /// The PEM file of the CA that signed a TLS registry's certificate; `None` for plain HTTP.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(files, _)| files.ca.as_path())
    }

    /// The CA, server certificate and key files of a TLS registry.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|(files, _)| files)
    }

    /// The user and password this registry (htpasswd) or its token server knows, if it
    /// demands them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The token server, when the registry uses token authentication.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's log so far (its access log included).
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Stops the process (SIGTERM, SIGKILL after a bound). Its port is not held afterwards.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Stops the registry if it runs and starts it again on the same port, storage and
    /// credentials. Panics with the log tail if it does not answer in time (for instance because
    /// another process took the port meanwhile).
    pub async fn restart(&mut self) {
        self.daemon
            .respawn(command(&self.dir.join("config.yml")))
            .unwrap_or_else(|e| panic!("respawn {PROGRAM}: {e}"));
        let host = self.host.clone();
        let ready = self
            .daemon
            .wait_ready("GET /v2/ answered", READY_TIMEOUT, async || answers(&host).await);
        if let Err(e) = ready.await {
            panic!("{e}");
        }
    }
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("pullgate-registry-")
        .tempdir()
        .expect("create a temp dir")
}

fn command(config: &Path) -> Command {
    let mut cmd = Command::new(PROGRAM);
    cmd.arg("serve").arg(config);
    // distribution reads REGISTRY_* variables as config overrides; none may leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A bcrypt htpasswd file, made by apache2-utils' `htpasswd -Bbn`.
fn write_htpasswd(dir: &Path, user: &str, pass: &str) -> PathBuf {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .unwrap_or_else(|e| panic!("run htpasswd (Debian package apache2-utils): {e}"));
    assert!(
        out.status.success(),
        "htpasswd -Bbn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("htpasswd");
    fs::write(&path, &out.stdout).expect("write htpasswd");
    path
}

fn config_yml(dir: &Path, host: &str, auth: &AuthSection, tls: Option<&TlsFiles>) -> String {
    let mut yml = format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  \
           filesystem:\n    rootdirectory: {storage}\n  \
           delete:\n    enabled: true\n  \
           maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {host}\n  secret: pullgate-test-{host}\n",
        storage = dir.join("storage").display(),
    );
    if let Some(files) = tls {
        yml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            files.certificate.display(),
            files.key.display()
        ));
    }
    match auth {
        AuthSection::Open => {}
        AuthSection::Htpasswd(path) => yml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: pullgate-test\n    path: {}\n",
            path.display()
        )),
        AuthSection::Token { realm, bundle } => yml.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
             rootcertbundle: {bundle}\n",
            service = token_server::SERVICE,
            issuer = token_server::ISSUER,
            bundle = bundle.display(),
        )),
    }
    yml
}

/// True once the registry on `host` answers the API base, over the scheme the rig speaks to it
/// (see [`distribution::base_url`]): 200 when open, 401 when it wants credentials.
async fn answers(host: &str) -> bool {
    let client = distribution::client(host, Duration::from_secs(2));
    let url = format!("{}/v2/", distribution::base_url(host));
    match client.get(url).send().await {
        Ok(resp) => matches!(resp.status().as_u16(), 200 | 401),
        Err(_) => false,
    }
}
