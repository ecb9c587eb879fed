//! A real containerd (Debian `containerd` 1.6) with the CRI plugin, isolated from every other
//! containerd on the machine: its own root, state, sockets and config, no TCP listeners but the
//! CRI streaming server on an ephemeral loopback port.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pullgate_proto::cri::image_service_client::ImageServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::{
    cri,
    process::{Daemon, StartError},
};

const PROGRAM: &str = "containerd";

/// A bound on containerd's CRI socket answering `ImageFsInfo` after the process was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Plugins that cannot work in a test sandbox; disabling them only saves start-up time and noise.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
];

/// A containerd child process whose CRI plugin pulls from the given registries over plain HTTP,
/// or over TLS trusting a given CA ([`Containerd::start_in_with_tls`]). Dropping it stops the
/// process.
#[derive(Debug)]
pub struct Containerd {
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

    /// Starts containerd with everything (config, root, state, sockets, log) under `dir`.
    /// Panics with the log tail if its CRI socket does not answer in time.
    pub async fn start_in(dir: &Path, insecure_registries: &[String]) -> Containerd {
        Self::start_in_with_tls(dir, insecure_registries, &[]).await
    }

    /// As [`Containerd::start_in`], and pulling from each of `tls_registries` (`host:port` and
    /// the CA file that signed its certificate) over TLS only, trusting that CA besides the
    /// system's roots: a CRI `registry.configs."<host>".tls.ca_file`, and an `https://` mirror
    /// of the host as its only endpoint (see [`config_toml`]), never a plain-HTTP one.
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
    /// plain-HTTP registry `host` instead: `("docker.io", "127.0.0.1:PORT")` makes the test
    /// registry stand in for Docker Hub.
    pub async fn start_in_with_mirrors(
        dir: &Path,
        insecure_registries: &[String],
        mirrors: &[(String, String)],
    ) -> Containerd {
        match Self::try_start(dir, insecure_registries, &[], mirrors).await {
            Ok(containerd) => containerd,
            Err(e) => panic!("{e}"),
        }
    }

    /// A containerd in `dir` whose CRI plugin reaches registries only as the `hosts.toml` files
    /// under `certs_dir` say (`registry.config_path`), with no mirrors or configs of its own.
    pub async fn start_with_config_path(dir: &Path, certs_dir: &Path) -> Containerd {
        fs::create_dir_all(dir).expect("create the containerd dir");
        let config_path = toml_str(&certs_dir.display().to_string());
        let toml = format!(
            "{}\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {config_path}\n",
            config_toml(dir, &[], &[], &[])
        );
        fs::write(dir.join("config.toml"), toml).expect("write config.toml");
        let daemon = Daemon::spawn(PROGRAM, command(dir), &dir.join("containerd.log"))
            .unwrap_or_else(|e| panic!("spawn {PROGRAM} (Debian package containerd): {e}"));
        let mut containerd = Containerd {
            daemon,
            dir: dir.to_owned(),
            _tmp: None,
        };
        if let Err(e) = containerd.wait_ready().await {
            panic!("{e}");
        }
        containerd
    }

    /// As [`Containerd::start_in`], returning the failure instead of panicking.
    pub async fn try_start_in(dir: &Path, insecure_registries: &[String]) -> Result<Containerd, StartError> {
        Self::try_start_in_with_tls(dir, insecure_registries, &[]).await
    }

    /// As [`Containerd::start_in_with_tls`], returning the failure instead of panicking.
    pub async fn try_start_in_with_tls(
        dir: &Path,
        insecure_registries: &[String],
        tls_registries: &[(String, PathBuf)],
    ) -> Result<Containerd, StartError> {
        Self::try_start(dir, insecure_registries, tls_registries, &[]).await
    }

    async fn try_start(
        dir: &Path,
        insecure_registries: &[String],
        tls_registries: &[(String, PathBuf)],
        mirrors: &[(String, String)],
    ) -> Result<Containerd, StartError> {
        for (host, _) in tls_registries {
            assert!(
                !insecure_registries.contains(host),
                "{host} cannot be both a plain-HTTP and a TLS registry"
            );
        }
        fs::create_dir_all(dir).expect("create the containerd dir");
        fs::write(
            dir.join("config.toml"),
            config_toml(dir, insecure_registries, tls_registries, mirrors),
        )
        .expect("write config.toml");
        let daemon = Daemon::spawn(PROGRAM, command(dir), &dir.join("containerd.log"))
            .unwrap_or_else(|e| panic!("spawn {PROGRAM} (Debian package containerd): {e}"));
        let mut containerd = Containerd {
            daemon,
            dir: dir.to_owned(),
            _tmp: None,
        };
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    /// The CRI (and containerd API) gRPC socket.
    pub fn socket(&self) -> PathBuf {
        socket_path(&self.dir)
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
            .respawn(command(&self.dir))
            .unwrap_or_else(|e| panic!("respawn {PROGRAM}: {e}"));
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

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(PROGRAM);
    cmd.arg("--config").arg(dir.join("config.toml"));
    cmd
}

/// A version-2 config that keeps every path inside `dir` and opens no fixed port.
///
/// containerd 1.6's CRI plugin reaches a registry through its mirror endpoints, then its default
/// endpoint, unless a mirror is the host itself. That default is `https://<host>`, except for
/// loopback hosts (`localhost`, `127.0.0.1`), where it is `http://` (`defaultScheme` in
/// `pkg/cri/server/image_pull.go`). So every test registry gets a mirror of itself, which is then
/// its one endpoint: `http://` for an insecure registry, `https://` for a TLS registry, whose
/// `configs` entry gives containerd the `ca_file` to trust besides the system roots.
fn config_toml(
    dir: &Path,
    insecure_registries: &[String],
    tls_registries: &[(String, PathBuf)],
    mirrors: &[(String, String)],
) -> String {
    let path = |name: &str| toml_str(&dir.join(name).display().to_string());
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_str(p)).collect();
    let mut toml = format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
"#,
        root = path("root"),
        state = path("state"),
        disabled = disabled.join(", "),
        grpc = toml_str(&socket_path(dir).display().to_string()),
        ttrpc = path("containerd.sock.ttrpc"),
        opt = path("opt"),
        cni_bin = path("cni/bin"),
        cni_conf = path("cni/conf"),
    );
    for host in insecure_registries {
        let host_key = toml_str(host);
        let endpoint = toml_str(&format!("http://{host}"));
        toml.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.{host_key}]\n  endpoint = [{endpoint}]\n"
        ));
    }
    for (name, host) in mirrors {
        let name_key = toml_str(name);
        let endpoint = toml_str(&format!("http://{host}"));
        toml.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.{name_key}]\n  endpoint = [{endpoint}]\n"
        ));
    }
    for (host, ca_file) in tls_registries {
        let host_key = toml_str(host);
        let endpoint = toml_str(&format!("https://{host}"));
        let ca_file = toml_str(&ca_file.display().to_string());
        toml.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.{host_key}]\n  endpoint = [{endpoint}]\n\
             \n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{host_key}.tls]\n  ca_file = {ca_file}\n"
        ));
    }
    toml
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
