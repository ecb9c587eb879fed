//! kubelet in front of pullgate: its image service endpoint, from a drop-in's flag or its
//! KubeletConfiguration, is pullgate's socket.

use std::{
    fs, io,
    path::{Component, Path, PathBuf},
};

use super::Check;
use crate::config::Config;

/// Where kubelet's image service endpoint was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointSource {
    /// `imageServiceEndpoint:` in the KubeletConfiguration file.
    Config(PathBuf),
    /// `--image-service-endpoint` in a systemd drop-in.
    Flag(PathBuf),
}

/// kubelet's image service endpoint is pullgate's listen socket, so its pulls are verified.
/// A command-line flag (from a drop-in) wins over the KubeletConfiguration file, as in kubelet.
pub(super) fn kubelet_wiring(config: &Config, kubelet_config: &Path, dropins: &Path) -> Check {
    let listen = format!("unix://{}", config.listen.display());
    let add_line = format!(
        "add `imageServiceEndpoint: {listen}` to {} (or `--image-service-endpoint={listen}` to a drop-in in {}) and restart kubelet",
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
            format!("set `imageServiceEndpoint: {listen}` in {} and restart kubelet", file.display()),
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
        let text = fs::read_to_string(&file)?;
        if let Some(endpoint) = image_service_flag(&text) {
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
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("not YAML: {e}"))?;
    match doc.get("imageServiceEndpoint") {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("imageServiceEndpoint is not a string".into()),
    }
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
