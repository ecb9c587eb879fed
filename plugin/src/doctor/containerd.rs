//! containerd behind pullgate: its CRI socket answers, with the CRI API pullgate speaks.

use std::{fs, io, os::unix::fs::FileTypeExt, path::Path};

use super::{Check, UPSTREAM_TIMEOUT};
use crate::cri::Upstream;

/// The CRI API version pullgate speaks to containerd.
const CRI_API_VERSION: &str = "v1";

/// containerd's CRI socket: there, and answering `Version` in time with CRI API v1.
pub(super) async fn upstream(path: &Path) -> Check {
    let start_containerd = format!(
        "start containerd (systemctl start containerd), or set upstream: to its CRI socket (now {})",
        path.display()
    );
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => return Check::fail(format!("upstream {} is not a socket", path.display()), start_containerd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                format!("upstream containerd socket {} does not exist", path.display()),
                start_containerd,
            )
        }
        Err(e) => return Check::fail(format!("upstream {}: {e}", path.display()), "run doctor as root"),
    }
    let version = match Upstream::connect_lazy(path).version(UPSTREAM_TIMEOUT).await {
        Ok(version) => version,
        Err(status) => {
            return Check::fail(
                format!(
                    "containerd at {} did not answer CRI Version: {}",
                    path.display(),
                    status.message()
                ),
                "check that containerd runs with its CRI plugin enabled: neither \"cri\" nor \"io.containerd.grpc.v1.cri\" \
                 in disabled_plugins (containerd 2.x: nor \"io.containerd.cri.v1.images\"); journalctl -u containerd",
            )
        }
    };
    let found = format!(
        "{} {} (CRI API {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    if version.runtime_api_version != CRI_API_VERSION {
        return Check::fail(
            format!(
                "upstream {} runs {found}; pullgate needs CRI API {CRI_API_VERSION}",
                path.display()
            ),
            "upgrade containerd to 1.6 or later",
        );
    }
    Check::ok(format!("upstream {} answers: {found}", path.display()))
}
