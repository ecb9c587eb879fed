//! kubelet in front of pullgate: the image service endpoint of the kubelet that runs (its
//! command line, or the KubeletConfiguration it was started with) is pullgate's socket, and
//! the files on disk still say so for its next start. Where no kubelet runs, the files alone
//! (a drop-in's flag, the KubeletConfiguration) are judged.

use std::{
    fs, io,
    path::{Component, Path, PathBuf},
    time::SystemTime,
};

use jiff::Timestamp;

use super::{
    kubelet_proc::{self, ConfigFile, FileState, RunningKubelet, YamlEndpoint},
    Check,
};
use crate::{
    config::Config,
    file::{read_bounded, ReadError},
};

/// A unit drop-in or KubeletConfiguration is a few kilobytes.
const MAX_FILE: u64 = 1024 * 1024;

/// Where kubelet's image service endpoint was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointSource {
    /// `imageServiceEndpoint:` in the KubeletConfiguration file.
    Config(PathBuf),
    /// `--image-service-endpoint` in a systemd drop-in.
    Flag(PathBuf),
}

/// Where kubeadm nodes keep kubelet's configuration for every node and every upgrade.
const CONFIGMAP_ROUTE: &str = "on a kubeadm node put it in the kubelet-config ConfigMap in kube-system too, or `kubeadm upgrade node` drops it (docs/install-kubeadm.md)";

/// kubelet pulls through pullgate: judged on every kubelet process of this node, or, where none
/// runs, on the files it would start with.
pub(super) fn kubelet_wiring(config: &Config, kubelet_config: &Path, dropins: &Path) -> Vec<Check> {
    kubelet_wiring_in(Path::new(kubelet_proc::PROC), config, kubelet_config, dropins)
}

/// As [`kubelet_wiring`], with the processes of `proc`.
pub(super) fn kubelet_wiring_in(proc: &Path, config: &Config, kubelet_config: &Path, dropins: &Path) -> Vec<Check> {
    let pids = match kubelet_proc::kubelet_pids(proc) {
        Ok(pids) => pids,
        Err(e) => {
            return vec![on_disk_only(
                &format!("cannot list the processes in {} ({e})", proc.display()),
                wiring_on_disk(config, kubelet_config, dropins),
            )]
        }
    };
    if pids.is_empty() {
        return vec![on_disk_only(
            "no kubelet process runs here (none in the PID namespace /proc belongs to)",
            wiring_on_disk(config, kubelet_config, dropins),
        )];
    }
    if pids.len() > kubelet_proc::MAX_KUBELETS {
        return vec![Check::fail(
            format!(
                "more than {} processes are named kubelet: which one is the node's cannot be told, so none is judged",
                kubelet_proc::MAX_KUBELETS
            ),
            "find them (pgrep -a kubelet) and stop those that are not the node's kubelet",
        )];
    }
    pids.into_iter()
        .map(|pid| {
            let read = kubelet_proc::read_kubelet(proc, pid).and_then(|kubelet| {
                let files = kubelet_proc::config_files(proc, &kubelet)?;
                Ok((kubelet, files))
            });
            match read {
                Ok((kubelet, files)) => running_wiring(config, &kubelet, &files),
                Err(e) if e.process_gone() => Check::fail(
                    format!("the running kubelet (pid {pid}) exited while doctor read it: {e}"),
                    "wait until kubelet runs again (systemctl status kubelet), then run doctor again",
                ),
                Err(e) => Check::fail(
                    format!("the running kubelet (pid {pid}) cannot be read: {e}"),
                    "run doctor as root on the node (from a privileged pod: chroot /host)",
                ),
            }
        })
        .collect()
}

/// A file-based finding, saying that no running kubelet was judged.
fn on_disk_only(why: &str, mut check: Check) -> Check {
    check.message = format!("{why}; judged by the files it would start with: {}", check.message);
    check
}

/// The running kubelet's endpoint is pullgate's socket. A flag wins over the files; without
/// one, the files count only while they are what kubelet read at its start.
pub(super) fn running_wiring(config: &Config, kubelet: &RunningKubelet, files: &[ConfigFile]) -> Check {
    let listen = format!("unix://{}", config.listen.display());
    let who = format!("the running kubelet (pid {})", kubelet.pid);
    let in_files = files
        .iter()
        .rev()
        .find_map(|f| f.endpoint.as_ref().map(|e| (e.clone(), f.path.clone())));
    let main_file = files.first().map(|f| f.path.display().to_string());
    let set_in_file =
        |file: &str| format!("set `imageServiceEndpoint: {listen}` in {file} ({CONFIGMAP_ROUTE}) and restart kubelet");
    if let Some(flag) = &kubelet.args.image_service_endpoint {
        let set_flag = format!(
            "set `--image-service-endpoint={listen}` where kubelet's flags come from (its systemd drop-in), then systemctl daemon-reload && systemctl restart kubelet"
        );
        return judge_endpoint(
            config,
            &format!("{who} has --image-service-endpoint {flag} on its command line"),
            flag,
            set_flag,
        );
    }
    let changed: Vec<&ConfigFile> = files.iter().filter(|f| f.state != FileState::AsStarted).collect();
    if let Some(first) = changed.first() {
        let when = match first.state {
            FileState::ChangedAt(at) => format!("changed at {}", timestamp(at)),
            _ => "removed".to_string(),
        };
        let after_restart = match &in_files {
            Some((endpoint, _)) if is_socket(endpoint, &config.listen) => {
                format!("imageServiceEndpoint {endpoint}, pullgate's socket")
            }
            Some((endpoint, _)) => format!(
                "imageServiceEndpoint {endpoint}, not pullgate's {listen}: pulls would bypass signature verification"
            ),
            None => "no imageServiceEndpoint: pulls would bypass signature verification".to_string(),
        };
        let fix = match &in_files {
            Some((endpoint, _)) if is_socket(endpoint, &config.listen) => {
                "restart kubelet (systemctl restart kubelet) so that it runs with the file on disk, then run doctor again".to_string()
            }
            Some((_, file)) => set_in_file(&file.display().to_string()),
            None => set_in_file(main_file.as_deref().unwrap_or("its KubeletConfiguration")),
        };
        return Check::fail(
            format!(
                "{who} started at {} and its configuration {} was {when} since: it runs with what the file held then, which doctor cannot read; a kubelet restart would take {after_restart}",
                timestamp(kubelet.started),
                first.path.display(),
            ),
            fix,
        );
    }
    match in_files {
        Some((endpoint, file)) => judge_endpoint(
            config,
            &format!(
                "{who} has imageServiceEndpoint {endpoint} from {}, unchanged since it started",
                file.display()
            ),
            &endpoint,
            set_in_file(&file.display().to_string()),
        ),
        None => Check::fail(
            format!(
                "{who} has no image service endpoint (no --image-service-endpoint flag, none in {}): it pulls straight from its container runtime, bypassing verification",
                main_file.as_deref().unwrap_or("a --config file")
            ),
            set_in_file(main_file.as_deref().unwrap_or("its KubeletConfiguration (--config)")),
        ),
    }
}

/// `endpoint`, found as `found` says, is pullgate's socket; containerd's is a bypass.
fn judge_endpoint(config: &Config, found: &str, endpoint: &str, fix: String) -> Check {
    if is_socket(endpoint, &config.listen) {
        return Check::ok(format!("kubelet pulls through pullgate: {found}"));
    }
    if is_socket(endpoint, &config.upstream) {
        return Check::fail(
            format!("{found}, containerd's socket: pulls bypass signature verification"),
            fix,
        );
    }
    Check::fail(
        format!("{found}, not pullgate's unix://{}", config.listen.display()),
        fix,
    )
}

fn is_socket(endpoint: &str, socket: &Path) -> bool {
    endpoint_path(endpoint).as_deref() == Some(normalize(socket).as_path())
}

/// A time as doctor prints it: UTC, to the second.
fn timestamp(at: SystemTime) -> String {
    Timestamp::try_from(at)
        .ok()
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map_or_else(|| format!("{at:?}"), |t| t.to_string())
}

/// kubelet's image service endpoint in the files it reads at start is pullgate's listen
/// socket. A command-line flag (from a drop-in) wins over the KubeletConfiguration file, as in
/// kubelet.
pub(super) fn wiring_on_disk(config: &Config, kubelet_config: &Path, dropins: &Path) -> Check {
    let listen = format!("unix://{}", config.listen.display());
    let add_line = format!(
        "add `imageServiceEndpoint: {listen}` to {} ({CONFIGMAP_ROUTE}; or `--image-service-endpoint={listen}` to a drop-in in {}) and restart kubelet",
        kubelet_config.display(),
        dropins.display()
    );
    let from_flag = match endpoint_in_dropins(dropins) {
        Ok(found) => found,
        Err(e) => {
            return Check::fail(
                format!("kubelet drop-ins {}: {e}", dropins.display()),
                "run doctor as root",
            )
        }
    };
    let from_config = match endpoint_in_config(kubelet_config) {
        Ok(found) => found,
        Err(e) => {
            return Check::fail(
                format!("kubelet config {}: {e}", kubelet_config.display()),
                format!("correct it, then {add_line}"),
            )
        }
    };
    let Some((endpoint, source)) = from_flag
        .map(|(e, file)| (e, EndpointSource::Flag(file)))
        .or(from_config.map(|e| (e, EndpointSource::Config(kubelet_config.to_owned()))))
    else {
        return Check::fail(
            format!(
                "kubelet has no image service endpoint (none in {} or {}/*.conf): it pulls straight from its container runtime, bypassing verification",
                kubelet_config.display(),
                dropins.display()
            ),
            add_line,
        );
    };
    let (where_, set_it) = match &source {
        EndpointSource::Config(file) => (
            format!("imageServiceEndpoint in {}", file.display()),
            format!(
                "set `imageServiceEndpoint: {listen}` in {} ({CONFIGMAP_ROUTE}) and restart kubelet",
                file.display()
            ),
        ),
        EndpointSource::Flag(file) => (
            format!("--image-service-endpoint in {}", file.display()),
            format!(
                "set `--image-service-endpoint={listen}` in {}, then systemctl daemon-reload && systemctl restart kubelet",
                file.display()
            ),
        ),
    };
    let points_at = endpoint_path(&endpoint);
    if points_at.as_deref() == Some(normalize(&config.listen).as_path()) {
        return Check::ok(format!("kubelet pulls through pullgate: {where_} is {endpoint}"));
    }
    if points_at.as_deref() == Some(normalize(&config.upstream).as_path()) {
        return Check::fail(
            format!("kubelet's {where_} is containerd's socket {endpoint}: pulls bypass signature verification"),
            set_it,
        );
    }
    Check::fail(
        format!("kubelet's {where_} is {endpoint}, not pullgate's {listen}"),
        set_it,
    )
}

/// The last `--image-service-endpoint` in the `*.conf` drop-ins, read in systemd's (lexical)
/// order, with the file it is in. A missing directory holds none.
pub(super) fn endpoint_in_dropins(dir: &Path) -> io::Result<Option<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    files.sort();
    let mut found = None;
    for file in files {
        let text = read_bounded(&file, MAX_FILE).map_err(|e| match e {
            ReadError::Io(e) => e,
            too_large => io::Error::other(format!("{}: {too_large}", file.display())),
        })?;
        if let Some(endpoint) = image_service_flag(&String::from_utf8_lossy(&text)) {
            found = Some((endpoint, file));
        }
    }
    Ok(found)
}

/// The value of the last `--image-service-endpoint=V` (or `--image-service-endpoint V`) in a
/// unit file, skipping comments. Values end at whitespace or a quote, so the flag is found
/// inside `Environment="KUBELET_EXTRA_ARGS=…"` too.
pub(super) fn image_service_flag(unit: &str) -> Option<String> {
    const FLAG: &str = "--image-service-endpoint";
    let mut found = None;
    for line in unit.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find(FLAG) {
            rest = &rest[at + FLAG.len()..];
            let value = match rest.chars().next() {
                Some('=') => &rest[1..],
                Some(c) if c.is_whitespace() => rest.trim_start(),
                _ => continue,
            };
            let value = value.trim_start_matches(['"', '\'']);
            let end = value
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(value.len());
            if end > 0 {
                found = Some(value[..end].to_string());
            }
        }
    }
    found
}

/// `imageServiceEndpoint` in a KubeletConfiguration file; a missing file names none.
pub(super) fn endpoint_in_config(path: &Path) -> Result<Option<String>, String> {
    let text = match read_bounded(path, MAX_FILE) {
        Ok(text) => text,
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    kubelet_proc::endpoint_in_yaml(&text).map_err(|e| match e {
        YamlEndpoint::NotYaml(e) => format!("not YAML: {e}"),
        YamlEndpoint::NotAString => "imageServiceEndpoint is not a string".into(),
    })
}

/// The socket path a CRI endpoint names: `unix:///p` and a bare `/p` (which kubelet still
/// accepts) are `/p`; other schemes name no socket of this node.
pub(super) fn endpoint_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    path.starts_with('/').then(|| normalize(Path::new(path)))
}

/// `path` without repeated separators or `.` components, so equal sockets compare equal.
pub(super) fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|c| *c != Component::CurDir).collect()
}
