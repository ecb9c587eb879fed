//! pullgate's own container image, for the DaemonSet route: built from a pullgate binary and the
//! repository's installer and units, with no container engine, as an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) and, for the demo and tests, pushed to a
//! registry.
//!
//! One uncompressed layer holds `/usr/local/bin/pullgate` and `/opt/pullgate/{installer,systemd}`;
//! the DaemonSet runs `/opt/pullgate/installer/install.sh --root /host` from it. The tar is
//! deterministic (mtime 0, root-owned, sorted), so the same inputs give the same digest.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde_json::json;

use crate::{
    distribution::{media_type, push_blob, put_manifest, sha256_digest, Auth, RegistryError},
    image::go_arch,
};

/// Where the binary lands in the image.
pub const BINARY_PATH: &str = "usr/local/bin/pullgate";

/// The repository directories copied into the image under `opt/pullgate/`.
const SHIPPED_DIRS: [&str; 2] = ["installer", "systemd"];

/// One entry of the layer: a directory, or a file with its mode and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir(String),
    File { path: String, mode: u32, bytes: Vec<u8> },
}

/// The image's blobs and manifest, as the exact bytes that are written or pushed.
#[derive(Debug, Clone)]
pub struct NodeImage {
    /// The base image's layers, when built on one (see [`NodeImage::on_base`]).
    pub base_layers: Vec<Vec<u8>>,
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

// === impl NodeImage ===

impl NodeImage {
    /// The image for `binary`, with `repo`'s installer and systemd units.
    pub fn build(binary: &Path, repo: &Path) -> io::Result<NodeImage> {
        let mut entries = vec![
            Entry::Dir("usr/".into()),
            Entry::Dir("usr/local/".into()),
            Entry::Dir("usr/local/bin/".into()),
            Entry::File {
                path: BINARY_PATH.into(),
                mode: 0o755,
                bytes: fs::read(binary)?,
            },
            Entry::Dir("opt/".into()),
            Entry::Dir("opt/pullgate/".into()),
        ];
        for dir in SHIPPED_DIRS {
            collect(&repo.join(dir), &format!("opt/pullgate/{dir}/"), &mut entries)?;
        }
        let layer = tar(&entries)?;
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": go_arch(),
            "os": "linux",
            "config": {
                "Entrypoint": [format!("/{BINARY_PATH}")],
                "Cmd": ["--help"],
                "Labels": {
                    "org.opencontainers.image.title": "pullgate",
                    "org.opencontainers.image.description": "pullgate and its node installer",
                },
            },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .map_err(io::Error::other)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": { "mediaType": media_type::OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": [{ "mediaType": media_type::OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() }],
        }))
        .map_err(io::Error::other)?;
        Ok(NodeImage {
            base_layers: Vec::new(),
            layer,
            config,
            manifest,
        })
    }

    /// This image's layer on top of the first image of the OCI layout `base` (for example
    /// `debian:12-slim`, copied with `skopeo copy docker://debian:12-slim oci:base`): the
    /// DaemonSet runs the installer's shell scripts, which need a shell and coreutils. The base's
    /// config is kept, with this layer's diff id appended and pullgate as the entrypoint.
    pub fn on_base(self, base: &Path) -> io::Result<NodeImage> {
        let read_json = |path: PathBuf| -> io::Result<serde_json::Value> {
            let bytes = fs::read(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            serde_json::from_slice(&bytes).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
        };
        let blob = |digest: &str| base.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let index = read_json(base.join("index.json"))?;
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .ok_or_else(|| io::Error::other("base index.json names no manifest"))?;
        let base_manifest = read_json(blob(manifest_digest))?;
        if base_manifest.get("manifests").is_some() {
            return Err(io::Error::other(
                "the base is a multi-platform index; copy one platform (skopeo copy --override-arch …)",
            ));
        }
        let config_digest = base_manifest["config"]["digest"].as_str().unwrap_or_default();
        let mut config = read_json(blob(config_digest))?;
        let mut layers = base_manifest["layers"].as_array().cloned().unwrap_or_default();
        let mut base_layers = Vec::with_capacity(layers.len());
        for layer in &layers {
            let digest = layer["digest"].as_str().unwrap_or_default();
            let bytes = fs::read(blob(digest))?;
            if sha256_digest(&bytes) != digest {
                return Err(io::Error::other(format!(
                    "base blob {digest} does not match its digest"
                )));
            }
            base_layers.push(bytes);
        }
        let ours: serde_json::Value = serde_json::from_slice(&self.manifest).map_err(io::Error::other)?;
        layers.push(ours["layers"][0].clone());
        match config["rootfs"]["diff_ids"].as_array_mut() {
            Some(ids) => ids.push(json!(sha256_digest(&self.layer))),
            None => return Err(io::Error::other("the base config has no rootfs.diff_ids")),
        }
        config["config"]["Entrypoint"] = json!([format!("/{BINARY_PATH}")]);
        config["config"]["Cmd"] = json!(["--help"]);
        let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": { "mediaType": media_type::OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": layers,
        }))
        .map_err(io::Error::other)?;
        Ok(NodeImage {
            base_layers,
            layer: self.layer,
            config,
            manifest,
        })
    }

    /// `sha256:<hex>` of the manifest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// Writes an OCI image layout to `dir` (created; must be empty or absent), with the
    /// manifest named `tag` in `index.json`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> io::Result<()> {
        if dir.exists() && fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty", dir.display()),
            ));
        }
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        for blob in self
            .base_layers
            .iter()
            .chain([&self.layer, &self.config, &self.manifest])
        {
            let digest = sha256_digest(blob);
            fs::write(blobs.join(digest.trim_start_matches("sha256:")), blob)?;
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": media_type::OCI_MANIFEST,
                "digest": self.digest(),
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec_pretty(&index).map_err(io::Error::other)?,
        )
    }

    /// Pushes the blobs, then the manifest as `repo:tag`; returns the manifest digest.
    pub async fn push(&self, host: &str, repo: &str, tag: &str, auth: Auth<'_>) -> Result<String, RegistryError> {
        for layer in &self.base_layers {
            push_blob(host, repo, layer, auth).await?;
        }
        push_blob(host, repo, &self.layer, auth).await?;
        push_blob(host, repo, &self.config, auth).await?;
        put_manifest(host, repo, tag, &self.manifest, media_type::OCI_MANIFEST, auth).await
    }
}

/// Every file under `dir`, sorted, as entries under `prefix` (which ends in `/`); shell scripts
/// keep their executable bit, everything else is 0644.
fn collect(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) -> io::Result<()> {
    entries.push(Entry::Dir(prefix.to_string()));
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    children.sort();
    for child in children {
        let name = child
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("{}: not a UTF-8 name", child.display())))?;
        let meta = fs::metadata(&child)?;
        if meta.is_dir() {
            collect(&child, &format!("{prefix}{name}/"), entries)?;
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            entries.push(Entry::File {
                path: format!("{prefix}{name}"),
                mode,
                bytes: fs::read(&child)?,
            });
        }
    }
    Ok(())
}

/// A ustar archive of `entries`, root-owned, mtime 0.
pub fn tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        let (path, mode, typeflag, bytes): (&str, u32, u8, &[u8]) = match entry {
            Entry::Dir(path) => (path, 0o755, b'5', &[]),
            Entry::File { path, mode, bytes } => (path, *mode, b'0', bytes),
        };
        out.extend_from_slice(&header(path, mode, typeflag, bytes.len())?);
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// One ustar header; names longer than 100 bytes are split into prefix and name.
fn header(path: &str, mode: u32, typeflag: u8, size: usize) -> io::Result<[u8; 512]> {
    let (prefix, name) = match path.len() {
        0..=100 => ("", path),
        _ => path
            .char_indices()
            .filter(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100)
            .map(|(i, _)| (&path[..i], &path[i + 1..]))
            .next()
            .ok_or_else(|| io::Error::other(format!("{path}: too long for a ustar header")))?,
    };
    let mut header = [0u8; 512];
    let mut field = |offset: usize, value: &[u8]| header[offset..offset + value.len()].copy_from_slice(value);
    field(0, name.as_bytes());
    field(100, format!("{mode:07o}\0").as_bytes());
    field(108, b"0000000\0");
    field(116, b"0000000\0");
    field(124, format!("{size:011o}\0").as_bytes());
    field(136, b"00000000000\0");
    field(148, b"        ");
    field(156, &[typeflag]);
    field(257, b"ustar\0");
    field(263, b"00");
    field(265, b"root");
    field(297, b"root");
    field(329, b"0000000\0");
    field(337, b"0000000\0");
    field(345, prefix.as_bytes());
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    Ok(header)
}
