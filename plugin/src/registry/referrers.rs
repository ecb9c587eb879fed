//! Discovery of Sigstore bundles attached to an image as OCI referrers, the way cosign v3 stores
//! signatures and attestations: `GET /v2/<repo>/referrers/<digest>`, and, where the registry
//! has no referrers API (404), the referrers tag `<repo>:sha256-<hex>`.

use serde::Deserialize;

use super::{read_bounded, RegistryError, Session};
use crate::reference::Digest;

/// `artifactType` of a referrer holding a Sigstore bundle (v0.1–v0.3 share this prefix).
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle";

/// The manifest annotation naming an attestation's predicate type, so bundles can be chosen
/// without downloading them.
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

/// More bundle referrers than this on one image are refused rather than fetched.
pub const MAX_BUNDLES: usize = 64;

/// A bundle larger than this is not fetched (a keyless bundle is a few KiB).
pub const MAX_BUNDLE_BYTES: u64 = 1024 * 1024;

/// An index listing referrers is refused above this size.
const MAX_INDEX_BYTES: usize = 1024 * 1024;

/// One Sigstore bundle attached to the image.
#[derive(Debug, Clone)]
pub struct AttachedBundle {
    /// The referrer manifest it came from, for messages.
    pub manifest: Digest,
    pub predicate_type: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The referrers tag of `image`: where registries without the referrers API keep the index.
pub fn referrers_tag(image: &Digest) -> String {
    format!("sha256-{}", image.hex())
}

/// Fetches every Sigstore bundle that refers to `image`.
pub async fn sigstore_bundles(session: &Session<'_>, image: &Digest) -> Result<Vec<AttachedBundle>, RegistryError> {
    let Some(index) = referrers_index(session, image).await? else {
        return Ok(Vec::new());
    };
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|t| t.starts_with(BUNDLE_ARTIFACT_TYPE))
        })
        .collect();
    if candidates.len() > MAX_BUNDLES {
        return Err(RegistryError::Invalid(format!(
            "{} Sigstore bundles refer to {image}, more than the {MAX_BUNDLES} pullgate reads",
            candidates.len()
        )));
    }
    let mut bundles = Vec::with_capacity(candidates.len());
    for descriptor in candidates {
        let Some(digest) = Digest::parse(&descriptor.digest) else {
            continue;
        };
        if let Some(bundle) = fetch_bundle(session, image, &digest).await? {
            let predicate_type = bundle
                .predicate_type
                .or_else(|| descriptor.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned());
            bundles.push(AttachedBundle {
                predicate_type,
                ..bundle
            });
        }
    }
    Ok(bundles)
}

/// The referrers API's answer, or the referrers tag's index when the registry has no API.
async fn referrers_index(session: &Session<'_>, image: &Digest) -> Result<Option<Index>, RegistryError> {
    let url = format!("{}/v2/{}/referrers/{image}", session.base, session.repository);
    let bytes = match session
        .get(&url, Some("application/vnd.oci.image.index.v1+json"))
        .await?
    {
        Some(response) => read_bounded(response, MAX_INDEX_BYTES, &url).await?,
        None => match session.manifest(&referrers_tag(image)).await? {
            Some(manifest) => manifest.bytes,
            None => return Ok(None),
        },
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::Invalid(format!("referrers of {image}: not an image index: {e}")))
}

/// Fetches one referrer manifest and its bundle layer. A manifest whose subject is another
/// image (a stale or forged index entry) is skipped.
async fn fetch_bundle(
    session: &Session<'_>,
    image: &Digest,
    manifest_digest: &Digest,
) -> Result<Option<AttachedBundle>, RegistryError> {
    let Some(manifest) = session.manifest(manifest_digest.as_str()).await? else {
        return Ok(None);
    };
    let parsed: ReferrerManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| RegistryError::Invalid(format!("referrer {manifest_digest}: {e}")))?;
    if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(image.as_str()) {
        return Ok(None);
    }
    let Some(layer) = parsed
        .layers
        .iter()
        .find(|l| l.media_type.starts_with(BUNDLE_ARTIFACT_TYPE))
    else {
        return Ok(None);
    };
    if layer.size > MAX_BUNDLE_BYTES {
        return Err(RegistryError::Invalid(format!(
            "referrer {manifest_digest}: bundle of {} bytes is larger than {MAX_BUNDLE_BYTES}",
            layer.size
        )));
    }
    let Some(layer_digest) = Digest::parse(&layer.digest) else {
        return Ok(None);
    };
    let bytes = session.blob(&layer_digest, MAX_BUNDLE_BYTES as usize).await?;
    Ok(Some(AttachedBundle {
        manifest: manifest_digest.clone(),
        predicate_type: parsed.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned(),
        bytes,
    }))
}
