//! The config.toml the rig gives containerd: every path inside the test's dir, no fixed port, no
//! socket outside it, registries through the `config_path` directory ([`super::hosts`]).
//!
//! containerd 1.6 and 1.7 read config version 2, with the whole CRI plugin under
//! `io.containerd.grpc.v1.cri`. containerd 2.x reads version 3, where the CRI plugin is split
//! into `io.containerd.cri.v1.images` (snapshotter, registry), `io.containerd.cri.v1.runtime`
//! (CNI) and `io.containerd.grpc.v1.cri` (the gRPC service and its streaming server), and CRI
//! pulls go through the transfer service (`io.containerd.transfer.v1.local`), which unpacks only
//! into the snapshotters its `unpack_config` lists (by default only overlayfs).

use std::path::Path;

use super::{hosts::toml_str, socket_path};
use crate::image::go_arch;

/// Plugins that cannot work in a test sandbox, or would reach outside it.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
];

/// Plugins only containerd 2.x has that the rig disables as well: NRI listens on a fixed
/// `/var/run/nri/nri.sock` (parallel tests would fight over it), and the erofs and blockfile
/// snapshotters need what a test sandbox lacks.
const DISABLED_PLUGINS_2X: &[&str] = &[
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
    "io.containerd.snapshotter.v1.blockfile",
];

/// The config of a containerd of `major` version whose root, state, sockets and CNI dirs are in
/// `dir`, reaching registries as `certs_d` says.
pub(super) fn config_toml(dir: &Path, major: u32, certs_d: &Path) -> String {
    let path = |name: &str| toml_str(&dir.join(name).display().to_string());
    let mut disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_str(p)).collect();
    if major >= 2 {
        disabled.extend(DISABLED_PLUGINS_2X.iter().map(|p| toml_str(p)));
    }
    let common = format!(
        r#"root = {root}
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
"#,
        root = path("root"),
        state = path("state"),
        disabled = disabled.join(", "),
        grpc = toml_str(&socket_path(dir).display().to_string()),
        ttrpc = path("containerd.sock.ttrpc"),
        opt = path("opt"),
    );
    let certs_d = toml_str(&certs_d.display().to_string());
    let cni_bin = path("cni/bin");
    let cni_conf = path("cni/conf");
    if major >= 2 {
        format!(
            r#"version = 3
{common}
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = {certs_d}

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [{cni_bin}]
  conf_dir = {cni_conf}

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {platform}
  snapshotter = "native"
"#,
            platform = toml_str(&format!("linux/{}", go_arch())),
        )
    } else {
        format!(
            r#"version = 2
{common}
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = {certs_d}

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
"#
        )
    }
}
