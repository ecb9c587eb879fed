//! Tiny real OCI images: one uncompressed tar layer holding one file, a config and a manifest,
//! small enough to build per test and real enough for containerd to pull and unpack.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::json;

use crate::distribution::{media_type, push_blob, put_manifest, sha256_digest, Auth, RegistryError};

/// The path of the one file in the image's layer.
pub const FILE_NAME: &str = "hello";

/// The config label whose value makes every built image unique.
pub const NONCE_LABEL: &str = "dev.pullgate.test.nonce";

/// The blobs and manifest of one tiny image, as the exact bytes that get pushed.
#[derive(Debug, Clone)]
pub struct TinyImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

// === impl TinyImage ===

impl TinyImage {
    /// An image whose layer holds `/hello` with `content`. Two calls never build the same image,
    /// even for the same content: the config carries a nonce label, so digests always differ.
    pub fn build(content: &str) -> TinyImage {
        Self::build_bytes(content.as_bytes())
    }

    /// As [`TinyImage::build`], with `/hello` holding any bytes (a large layer, say).
    pub fn build_bytes(content: &[u8]) -> TinyImage {
        let layer = tar_one_file(FILE_NAME, content);
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": go_arch(),
            "os": "linux",
            "config": {
                "Cmd": [format!("/{FILE_NAME}")],
                "Labels": { NONCE_LABEL: nonce() },
            },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .expect("serialize an image config");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {
                "mediaType": media_type::OCI_CONFIG,
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": media_type::OCI_LAYER_TAR,
                "digest": layer_digest,
                "size": layer.len(),
            }],
        }))
        .expect("serialize an image manifest");
        TinyImage {
            layer,
            config,
            manifest,
        }
    }

    /// `sha256:<hex>` of the manifest: the image's digest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// Pushes both blobs, then the manifest under `tag`; returns the manifest digest.
    pub async fn push(&self, host: &str, repo: &str, tag: &str, auth: Auth<'_>) -> Result<String, RegistryError> {
        push_blob(host, repo, &self.layer, auth).await?;
        push_blob(host, repo, &self.config, auth).await?;
        put_manifest(host, repo, tag, &self.manifest, media_type::OCI_MANIFEST, auth).await
    }
}

/// Builds and pushes a new tiny image as `host/repo:tag`; returns its manifest digest
/// (`sha256:<hex>`), checked against the registry's `Docker-Content-Digest`.
pub async fn push_image(
    host: &str,
    repo: &str,
    tag: &str,
    content: &str,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    TinyImage::build(content).push(host, repo, tag, auth).await
}

/// A ustar archive with one regular file `name` (at most 100 bytes, mode 0755, owned by root).
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() <= 100, "a ustar name field holds 100 bytes");
    let mut header = [0u8; 512];
    let mut field = |offset: usize, value: &[u8]| header[offset..offset + value.len()].copy_from_slice(value);
    field(0, name.as_bytes());
    field(100, b"0000755\0"); // mode
    field(108, b"0000000\0"); // uid
    field(116, b"0000000\0"); // gid
    field(124, format!("{:011o}\0", content.len()).as_bytes()); // size
    field(136, b"00000000000\0"); // mtime
    field(148, b"        "); // checksum, counted as spaces while summing
    field(156, b"0"); // typeflag: regular file
    field(257, b"ustar\0"); // magic
    field(263, b"00"); // version
    field(265, b"root"); // uname
    field(297, b"root"); // gname
    field(329, b"0000000\0"); // devmajor
    field(337, b"0000000\0"); // devminor
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());

    let padded = content.len().div_ceil(512) * 512;
    let mut tar = Vec::with_capacity(512 + padded + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(content);
    tar.resize(512 + padded, 0);
    // Two zero blocks end the archive.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// `len` bytes no compressor can shrink (xorshift64*), different for every call.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = nonce().bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Pushes `here` and `there` to `repo` on `host` (as tags `here` and `there`), then, as
/// `repo:v1`, an index naming `there` for another architecture first and `here` for this
/// machine's: the manifest containerd's pull picks is `here`. Returns the index's digest.
pub async fn push_index_for_this_node(
    host: &str,
    repo: &str,
    here: &TinyImage,
    there: &TinyImage,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    here.push(host, repo, "here", auth).await?;
    there.push(host, repo, "there", auth).await?;
    let other = if go_arch() == "amd64" { "arm64" } else { "amd64" };
    let entry = |image: &TinyImage, architecture: &str| {
        json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": image.digest(),
            "size": image.manifest.len(),
            "platform": { "os": "linux", "architecture": architecture },
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [entry(there, other), entry(here, go_arch())],
    })
    .to_string();
    put_manifest(host, repo, "v1", index.as_bytes(), media_type::OCI_INDEX, auth).await
}

/// The GOARCH name of this machine, so containerd's platform matcher takes the image.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A value no other image built by any test process has used.
pub fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_and_layout() {
        let tar = tar_one_file("hello", b"hi\n");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        let stored = std::str::from_utf8(&tar[148..154]).unwrap();
        let mut header = tar[..512].to_vec();
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&tar[512..515], b"hi\n");
        assert!(tar[515..].iter().all(|&b| b == 0));
    }

    #[test]
    fn system_tar_reads_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar");
        std::fs::write(&path, tar_one_file("hello", &[b'x'; 700])).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .expect("run tar");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.starts_with("-rwxr-xr-x root/root"), "{listing}");
        assert!(
            listing.contains(" 700 ") && listing.trim_end().ends_with("hello"),
            "{listing}"
        );
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn every_build_differs() {
        assert_ne!(TinyImage::build("same").digest(), TinyImage::build("same").digest());
    }
}
