//! Tiny OCI artifacts, as Kubernetes image volumes (KEP-4639) mount them: an image manifest with
//! an `artifactType` whose config is not an image config, and one gzip-compressed tar layer.
//! kubelet pulls them through the CRI's `PullImage` like any image.

use serde_json::json;

use crate::{
    distribution::{media_type, push_blob, put_manifest, sha256_digest, Auth, RegistryError},
    image::{nonce, tar_one_file, NONCE_LABEL},
};

/// The `artifactType` of the rig's artifacts.
pub const ARTIFACT_TYPE: &str = "application/vnd.pullgate.test.volume.v1";

/// The config media type of [`Config::Custom`] artifacts.
pub const CUSTOM_CONFIG_TYPE: &str = "application/vnd.pullgate.test.volume.config.v1+json";

/// The gzip-compressed OCI layer media type.
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The path of the one file in the artifact's layer.
pub const FILE_NAME: &str = "volume.txt";

/// What an artifact's manifest has as its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// The empty descriptor (`application/vnd.oci.empty.v1+json`, blob `{}`), as `oras push
    /// --artifact-type` writes.
    Empty,
    /// A JSON blob of an artifact-specific media type ([`CUSTOM_CONFIG_TYPE`]), as a tool with a
    /// config of its own (Helm, WASM) writes.
    Custom,
}

/// The blobs and manifest of one artifact, as the exact bytes that get pushed.
#[derive(Debug, Clone)]
pub struct TinyArtifact {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

// === impl TinyArtifact ===

impl TinyArtifact {
    /// An artifact whose layer is `/volume.txt` with `content`, tarred and gzipped. Two calls
    /// never build the same artifact: the manifest carries a nonce annotation.
    pub fn build(config: Config, content: &str) -> TinyArtifact {
        let layer = gzip_stored(&tar_one_file(FILE_NAME, content.as_bytes()));
        let (config_type, config) = match config {
            Config::Empty => (media_type::OCI_EMPTY, b"{}".to_vec()),
            Config::Custom => (
                CUSTOM_CONFIG_TYPE,
                serde_json::to_vec(&json!({ "volume": FILE_NAME })).expect("serialize a config"),
            ),
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": config_type,
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_TAR_GZIP,
                "digest": sha256_digest(&layer),
                "size": layer.len(),
                "annotations": { "org.opencontainers.image.title": "volume.tar.gz" },
            }],
            "annotations": { NONCE_LABEL: nonce() },
        }))
        .expect("serialize an artifact manifest");
        TinyArtifact {
            layer,
            config,
            manifest,
        }
    }

    /// `sha256:<hex>` of the manifest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// `sha256:<hex>` of the config blob: the image id containerd gives what it pulled.
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    /// Pushes both blobs, then the manifest under `tag`; returns the manifest digest.
    pub async fn push(&self, host: &str, repo: &str, tag: &str, auth: Auth<'_>) -> Result<String, RegistryError> {
        push_blob(host, repo, &self.layer, auth).await?;
        push_blob(host, repo, &self.config, auth).await?;
        put_manifest(host, repo, tag, &self.manifest, media_type::OCI_MANIFEST, auth).await
    }
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks: a valid gzip stream any
/// decompressor reads, without a compressor in the rig.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // Header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(usize::from(u16::MAX)).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = u16::try_from(chunk.len()).expect("chunks are at most u16::MAX long");
        out.push(last); // BFINAL, BTYPE 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected), as gzip's trailer has it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_standard_check_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// gzip(1) itself reads what the rig writes, across a block boundary.
    #[test]
    fn gzip_reads_the_stored_stream() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, gzip_stored(&data)).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn an_artifact_has_its_type_a_config_that_is_no_image_config_and_a_gzip_layer() {
        for (config, config_type) in [
            (Config::Empty, media_type::OCI_EMPTY),
            (Config::Custom, CUSTOM_CONFIG_TYPE),
        ] {
            let artifact = TinyArtifact::build(config, "data");
            let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
            assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
            assert_eq!(manifest["config"]["mediaType"], config_type);
            assert_eq!(manifest["config"]["digest"], artifact.config_digest());
            assert_eq!(manifest["layers"][0]["mediaType"], LAYER_TAR_GZIP);
            assert_ne!(artifact.digest(), TinyArtifact::build(config, "data").digest());
        }
        assert_eq!(TinyArtifact::build(Config::Empty, "x").config, b"{}");
    }
}
