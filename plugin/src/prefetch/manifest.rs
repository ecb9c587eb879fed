//! What a manifest or index names, read as containerd's pull reads it: which children it
//! fetches, under which ingest refs, and the `gc.ref` labels it gives the parent.

use std::collections::HashMap;

use serde::Deserialize;

use crate::reference::Digest;

/// A manifest or an index, as far as fetching its content needs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

// === impl Document ===

impl Document {
    /// Parses `bytes`; `served_as` is the media type the registry sent it with.
    pub fn parse(bytes: &[u8], served_as: &str) -> Option<Self> {
        let mut document: Document = serde_json::from_slice(bytes).ok()?;
        if !served_as.is_empty() {
            document.media_type = Some(served_as.to_string());
        }
        Some(document)
    }

    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or_default()
    }

    pub fn is_index(&self) -> bool {
        is_index(self.media_type())
    }

    /// A manifest's children in containerd's order: the config, then the layers.
    pub fn children(&self) -> Vec<Descriptor> {
        if self.is_index() {
            return self.manifests.clone();
        }
        self.config.iter().chain(&self.layers).cloned().collect()
    }

    /// The manifest of an index containerd's CRI pull picks for this node: among the children
    /// that are manifests for this node's platform (or name none), in the index's order, the
    /// first that names a platform, else the first that names none.
    pub fn for_this_platform(&self) -> Option<&Descriptor> {
        let (os, architecture) = ("linux", go_arch());
        let candidates = self.manifests.iter().filter(|d| is_manifest(&d.media_type));
        let matches = |p: &Platform| p.os == os && p.architecture == architecture && variant_matches(architecture, p);
        let mut unnamed = None;
        for descriptor in candidates {
            match &descriptor.platform {
                Some(p) if matches(p) => return Some(descriptor),
                Some(_) => {}
                None => unnamed = unnamed.or(Some(descriptor)),
            }
        }
        unnamed
    }
}

// === impl Descriptor ===

impl Descriptor {
    /// The digest, when it is one pullgate can name (sha256).
    pub fn digest(&self) -> Option<Digest> {
        Digest::parse(&self.digest)
    }

    /// The size, when it is one a blob can have.
    pub fn size(&self) -> Option<u64> {
        u64::try_from(self.size).ok()
    }

    /// containerd's ingest ref for this blob (its `remotes.MakeRefKey`): a pull of the same
    /// blob opens the same ref, and waits for this write rather than fetching it again.
    pub fn ingest_ref(&self) -> String {
        let kind = match self.media_type.as_str() {
            t if is_manifest(t) => "manifest",
            t if is_index(t) => "index",
            t if is_layer(t) => "layer",
            t if is_config(t) => "config",
            _ => "unknown",
        };
        format!("{kind}-{}", self.digest)
    }

    /// Whether containerd's pull fetches it: it skips layers marked non-distributable.
    pub fn is_fetched(&self) -> bool {
        !(self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

/// The `containerd.io/gc.ref.content.*` labels containerd's pull gives a parent for its
/// `children` (`images.ChildGCLabels`, numbered per prefix): while the parent is kept, so are
/// they, once the lease is gone and only the image record holds the parent.
pub fn gc_labels(children: &[Descriptor]) -> HashMap<String, String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut labels = HashMap::new();
    for child in children {
        let prefix = match child.media_type.as_str() {
            t if is_config(t) => "containerd.io/gc.ref.content.config",
            t if is_manifest(t) => "containerd.io/gc.ref.content.m.",
            t if is_layer(t) => "containerd.io/gc.ref.content.l.",
            _ => "containerd.io/gc.ref.content.",
        };
        let index = counts.entry(prefix).or_default();
        let key = match (*index, prefix.ends_with('.')) {
            (0, false) => prefix.to_string(),
            (n, _) => format!("{prefix}{n}"),
        };
        *index += 1;
        labels.insert(key, child.digest.clone());
    }
    labels
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

fn is_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.docker.container.image.v1+json"
            | "application/vnd.oci.image.config.v1+json"
            | "application/vnd.containerd.container.criu.checkpoint.criu.tar"
            | "application/vnd.containerd.container.checkpoint.config.v1+proto"
    )
}

fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// This machine's architecture as Go (and so containerd and image indexes) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// containerd's normalization: an arm64 image without a variant is `v8`; amd64 `v1` is plain
/// amd64. Other variants are taken only when this node names the same (it names none).
fn variant_matches(architecture: &str, platform: &Platform) -> bool {
    matches!(
        (architecture, platform.variant.as_deref().unwrap_or("")),
        (_, "") | ("arm64", "v8") | ("amd64", "v1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            platform: None,
        }
    }

    #[test]
    fn children_get_containerds_gc_labels_and_ingest_refs() {
        let config = descriptor("application/vnd.oci.image.config.v1+json", 1);
        let layers = [
            descriptor("application/vnd.oci.image.layer.v1.tar+gzip", 2),
            descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", 3),
        ];
        let children: Vec<_> = std::iter::once(config.clone()).chain(layers.iter().cloned()).collect();
        let labels = gc_labels(&children);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], config.digest);
        assert_eq!(labels["containerd.io/gc.ref.content.l.0"], layers[0].digest);
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], layers[1].digest);
        assert_eq!(labels.len(), 3);
        assert_eq!(config.ingest_ref(), format!("config-{}", config.digest));
        assert_eq!(layers[0].ingest_ref(), format!("layer-{}", layers[0].digest));

        let manifests = [descriptor(OCI_MANIFEST, 4), descriptor(DOCKER_MANIFEST, 5)];
        let labels = gc_labels(&manifests);
        assert_eq!(labels["containerd.io/gc.ref.content.m.0"], manifests[0].digest);
        assert_eq!(labels["containerd.io/gc.ref.content.m.1"], manifests[1].digest);
        assert_eq!(manifests[1].ingest_ref(), format!("manifest-{}", manifests[1].digest));
    }

    #[test]
    fn an_index_yields_the_manifest_for_this_platform() {
        let arch = go_arch();
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"{other}"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{c}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64),
        );
        let document = Document::parse(index.as_bytes(), OCI_INDEX).unwrap();
        assert!(document.is_index());
        assert_eq!(
            document.for_this_platform().unwrap().digest,
            format!("sha256:{}", "b".repeat(64))
        );
        assert_eq!(document.children().len(), 3);
    }
}
