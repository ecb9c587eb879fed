//! A real containerd with its CRI plugin, isolated from every other containerd on the machine:
//! its own root, state, sockets, config and registry hosts directory, no TCP listeners but the
//! CRI streaming server on an ephemeral loopback port.
//!
//! The binary is `$PULLGATE_TEST_CONTAINERD`, or `containerd` on PATH (Debian 12's 1.6);
//! scripts/setup.sh puts a containerd 2.x at `/var/cache/pullgate-tests/bin/containerd2`. The
//! rig writes the config its major version reads ([`config`]), and registries always go through
//! containerd's `config_path` ([`hosts`]).

mod config;
pub mod hosts;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use pullgate_proto::cri::image_service_client::ImageServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

pub use self::hosts::{write_certs_d, Mirror, RegistryHost};
use crate::{
    cri,
    process::{Daemon, StartError},
};

/// The environment variable naming the containerd binary the rig runs.
pub const BINARY_ENV: &str = "PULLGATE_TEST_CONTAINERD";

/// A bound on containerd's CRI socket answering `ImageFsInfo` after the process was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The containerd binary the rig runs, and what its `--version` says.
#[derive(Debug)]
pub struct Binary {
    pub path: PathBuf,
    /// The version as containerd prints it (`1.6.20~ds1`, `2.1.9+unknown`).
    pub version: String,
    pub major: u32,
}

/// The binary of this test process's containerds: `$PULLGATE_TEST_CONTAINERD` or `containerd`.
/// Panics when it does not run or its version cannot be read.
pub fn binary() -> &'static Binary {
    static BINARY: OnceLock<Binary> = OnceLock::new();
    BINARY.get_or_init(|| {
        let path = std::env::var_os(BINARY_ENV).map_or_else(|| PathBuf::from("containerd"), PathBuf::from);
        let output = Command::new(&path).arg("--version").output().unwrap_or_else(|e| {
            panic!(
                "run {} --version (${BINARY_ENV}, or Debian's containerd): {e}",
                path.display()
            )
        });
        let stdout = String::from_utf8_lossy(&output.stdout);
        match parse_version(&stdout) {
            Some((version, major)) => Binary { path, version, major },
            None => panic!("{} --version printed no version: {stdout:?}", path.display()),
        }
    })
}

/// A containerd 2.x, for tests of what only 2.x does: `$PULLGATE_TEST_CONTAINERD` when that is
/// 2.x, else scripts/setup.sh's `<tools>/bin/containerd2`. When there is none the reason is
/// printed and the caller returns without checking anything; in CI (`CI=true`) it fails instead.
pub fn binary_2x() -> Option<&'static Binary> {
    static BINARY_2X: OnceLock<Option<Binary>> = OnceLock::new();
    let found = BINARY_2X.get_or_init(|| {
        let path = crate::tools::dir().join("bin/containerd2");
        let output = Command::new(&path).arg("--version").output().ok()?;
        let (version, major) = parse_version(&String::from_utf8_lossy(&output.stdout))?;
        Some(Binary { path, version, major })
    });
    let chosen = if binary().major >= 2 {
        Some(binary())
    } else {
        found.as_ref().filter(|b| b.major >= 2)
    };
    if chosen.is_none() {
        let missing = format!(
            "no containerd 2.x: ${BINARY_ENV} is {} and {} is not a 2.x (run scripts/setup.sh --clients)",
            binary().version,
            crate::tools::dir().join("bin/containerd2").display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{missing}");
        eprintln!("SKIPPED: {missing}");
    }
    chosen
}

/// The version and major version in `containerd --version`'s line:
/// `containerd github.com/containerd/containerd[/v2] <version> [<revision>]`.
fn parse_version(line: &str) -> Option<(String, u32)> {
    let version = line.split_whitespace().nth(2)?;
    let major = version.split('.').next()?.parse().ok()?;
    Some((version.to_owned(), major))
}

/// A containerd child process whose CRI plugin reaches registries as its hosts directory says
/// ([`RegistryHost`]). Dropping it stops the process.
#[derive(Debug)]
pub struct Containerd {
    binary: &'static Binary,
    daemon: Daemon,
    dir: PathBuf,
    _tmp: Option<TempDir>,
}

// === impl Containerd ===

impl Containerd {
    /// A containerd in a temp dir of its own; `insecure_registries` are `host:port` names it
    /// reaches over plain HTTP.
    pub async fn start(insecure_registries: &[String]) -> Containerd {
        let tmp = tempfile::Builder::new()
            .prefix("pullgate-containerd-")
            .tempdir()
            .expect("create a temp dir");
        let mut containerd = Self::start_in(tmp.path(), insecure_registries).await;
        containerd._tmp = Some(tmp);
        containerd
    }

    /// Starts containerd with everything (config, root, state, sockets, log, hosts directory)
    /// under `dir`, reaching each of `insecure_registries` over plain HTTP.
    /// Panics with the log tail if its CRI socket does not answer in time.
    pub async fn start_in(dir: &Path, insecure_registries: &[String]) -> Containerd {
        Self::start_in_with_hosts(dir, &plain_http(insecure_registries)).await
    }

    /// As [`Containerd::start_in`], and pulling from each of `tls_registries` (`host:port` and
    /// the CA file that signed its certificate) over TLS only, trusting that CA besides the
    /// system's roots ([`RegistryHost::tls`]), never over plain HTTP.
    pub async fn start_in_with_tls(
        dir: &Path,
        insecure_registries: &[String],
        tls_registries: &[(String, PathBuf)],
    ) -> Containerd {
        match Self::try_start_in_with_tls(dir, insecure_registries, tls_registries).await {
            Ok(containerd) => containerd,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Containerd::start_in`], and pulling each `(name, host)` of `mirrors` from the
    /// plain-HTTP registry `host` first: `("docker.io", "127.0.0.1:PORT")` makes the test
    /// registry stand in for Docker Hub ([`RegistryHost::mirrored`]).
    pub async fn start_in_with_mirrors(
        dir: &Path,
        insecure_registries: &[String],
        mirrors: &[(String, String)],
    ) -> Containerd {
        let mut hosts = plain_http(insecure_registries);
        hosts.extend(
            mirrors
                .iter()
                .map(|(name, host)| RegistryHost::mirrored(name, Mirror::pull_and_resolve(&format!("http://{host}")))),
        );
        Self::start_in_with_hosts(dir, &hosts).await
    }

    /// Starts containerd in `dir` with `hosts` as its registry hosts directory
    /// ([`Containerd::certs_d`]). Panics with the log tail if its CRI socket does not answer in
    /// time.
    pub async fn start_in_with_hosts(dir: &Path, hosts: &[RegistryHost]) -> Containerd {
        match Self::try_start_in_with_hosts(dir, hosts).await {
            Ok(containerd) => containerd,
            Err(e) => panic!("{e}"),
        }
    }

    /// A containerd in `dir` whose CRI plugin reaches registries only as the `hosts.toml` files
    /// under `certs_dir` say (`config_path`), a directory the test writes itself (hosts the rig's
    /// [`RegistryHost`] cannot express, such as a name that does not resolve).
    pub async fn start_with_config_path(dir: &Path, certs_dir: &Path) -> Containerd {
        match Self::try_start_with_certs_d(binary(), dir, certs_dir).await {
            Ok(containerd) => containerd,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Containerd::start_in`], returning the failure instead of panicking.
    pub async fn try_start_in(dir: &Path, insecure_registries: &[String]) -> Result<Containerd, StartError> {
        Self::try_start_in_with_hosts(dir, &plain_http(insecure_registries)).await
    }

    /// As [`Containerd::start_in_with_tls`], returning the failure instead of panicking.
    pub async fn try_start_in_with_tls(
        dir: &Path,
        insecure_registries: &[String],
        tls_registries: &[(String, PathBuf)],
    ) -> Result<Containerd, StartError> {
        for (host, _) in tls_registries {
            assert!(
                !insecure_registries.contains(host),
                "{host} cannot be both a plain-HTTP and a TLS registry"
            );
        }
        let mut hosts = plain_http(insecure_registries);
        hosts.extend(tls_registries.iter().map(|(host, ca)| RegistryHost::tls(host, ca)));
        Self::try_start_in_with_hosts(dir, &hosts).await
    }

    /// As [`Containerd::start_in_with_hosts`], returning the failure instead of panicking.
    pub async fn try_start_in_with_hosts(dir: &Path, hosts: &[RegistryHost]) -> Result<Containerd, StartError> {
        Self::try_start_on(binary(), dir, hosts).await
    }

    /// As [`Containerd::try_start_in_with_hosts`], running `binary` (say [`binary_2x`]) instead
    /// of [`binary`].
    pub async fn try_start_on(
        binary: &'static Binary,
        dir: &Path,
        hosts: &[RegistryHost],
    ) -> Result<Containerd, StartError> {
        fs::create_dir_all(dir).expect("create the containerd dir");
        let certs_d = certs_d_path(dir);
        write_certs_d(&certs_d, hosts).unwrap_or_else(|e| panic!("write {}: {e}", certs_d.display()));
        Self::try_start_with_certs_d(binary, dir, &certs_d).await
    }

    /// Starts `binary` in `dir` with `certs_d` as its registry hosts directory.
    async fn try_start_with_certs_d(
        binary: &'static Binary,
        dir: &Path,
        certs_d: &Path,
    ) -> Result<Containerd, StartError> {
        // Printed for every test that starts one: a failing test's output says which it ran on.
        eprintln!("rig: {} in {}", binary.name(), dir.display());
        fs::create_dir_all(dir).expect("create the containerd dir");
        fs::write(dir.join("config.toml"), config::config_toml(dir, binary.major, certs_d)).expect("write config.toml");
        let daemon = Daemon::spawn(&binary.name(), command(binary, dir), &dir.join("containerd.log"))
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.name()));
        let mut containerd = Containerd {
            binary,
            daemon,
            dir: dir.to_owned(),
            _tmp: None,
        };
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    /// The binary it runs, and its version.
    pub fn binary(&self) -> &'static Binary {
        self.binary
    }

    /// The CRI (and containerd API) gRPC socket.
    pub fn socket(&self) -> PathBuf {
        socket_path(&self.dir)
    }

    /// Its registry `config_path`: `<namespace>/hosts.toml` files, which containerd reads at
    /// each pull, so [`write_certs_d`] on it takes effect without a restart.
    pub fn certs_d(&self) -> PathBuf {
        certs_d_path(&self.dir)
    }

    /// A CRI ImageService client on [`Containerd::socket`].
    pub fn client(&self) -> ImageServiceClient<Channel> {
        cri::cri_client(self.socket())
    }

    /// The image id containerd itself reports for `image` (bypassing any proxy), if it has it.
    pub async fn image_id(&self, image: &str) -> Option<String> {
        let status = self
            .client()
            .image_status(crate::cri::image_status_request(image))
            .await;
        status
            .expect("containerd answers ImageStatus")
            .into_inner()
            .image
            .map(|i| i.id)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs (to pause it with signals).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// containerd's log so far, across restarts.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Stops the process (SIGTERM, SIGKILL after a bound). Root and state stay for a restart.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Stops containerd if it runs and starts it again on the same root, state and socket.
    pub async fn restart(&mut self) {
        self.daemon
            .respawn(command(self.binary, &self.dir))
            .unwrap_or_else(|e| panic!("respawn {}: {e}", self.binary.name()));
        if let Err(e) = self.wait_ready().await {
            panic!("{e}");
        }
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let socket = self.socket();
        self.daemon
            .wait_ready("the CRI socket answered ImageFsInfo", READY_TIMEOUT, async || {
                socket.exists() && cri::image_fs_info(&socket).await.is_ok()
            })
            .await
    }
}

/// Where a containerd started in `dir` listens.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("containerd.sock")
}

fn certs_d_path(dir: &Path) -> PathBuf {
    dir.join("certs.d")
}

fn plain_http(hosts: &[String]) -> Vec<RegistryHost> {
    hosts.iter().map(|host| RegistryHost::plain_http(host)).collect()
}

// === impl Binary ===

impl Binary {
    /// `containerd <version> (<path>)`: how start failures name the daemon, so a failure says
    /// which containerd.
    pub fn name(&self) -> String {
        format!("containerd {} ({})", self.version, self.path.display())
    }
}

fn command(binary: &Binary, dir: &Path) -> Command {
    let mut cmd = Command::new(&binary.path);
    cmd.arg("--config").arg(dir.join("config.toml"));
    cmd
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn version_lines_of_debian_packages() {
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n"),
            Some(("1.6.20~ds1".to_owned(), 1))
        );
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n"),
            Some(("2.1.9+unknown".to_owned(), 2))
        );
        assert_eq!(parse_version("containerd: command not found"), None);
    }
}
