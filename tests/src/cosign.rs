//! cosign's legacy signature layout: the signatures of `repo@sha256:<hex>` live in the same
//! repository under the tag `sha256-<hex>.sig`, an OCI image whose layers are simple-signing
//! payloads, each with its signature in a layer annotation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::distribution::{
    get_blob, get_manifest, media_type, push_blob, put_manifest, sha256_digest, Auth, RegistryError,
};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// Media type of a `cosign attest` layer: a DSSE envelope.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";

/// The layer annotation in which cosign names an attestation's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// The layer annotation that holds the base64 signature over the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The layer annotation that holds the signing certificate (PEM) of a keyless signature.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";

/// The layer annotation that holds the certificates above the signing one (PEM: intermediates,
/// then the root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";

/// The layer annotation that holds the Rekor v1 SET "bundle" (`{"SignedEntryTimestamp",
/// "Payload":{"body","integratedTime","logIndex","logID"}}`).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// The zero time go-containerregistry writes for images built from `empty.Image`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One signature found in a `.sig` image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySignature {
    pub payload: Vec<u8>,
    /// Base64 (standard) signature, as stored in the annotation.
    pub signature: String,
    pub layer_digest: String,
    /// Every annotation of the layer (the signature's included).
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest, fields in the order go-containerregistry writes them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: usize,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The config of a signature image, in go-containerregistry's field order.
#[derive(Debug, Serialize)]
struct Config {
    architecture: &'static str,
    created: &'static str,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
    config: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct History {
    created: &'static str,
}

#[derive(Debug, Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// `sha256-<hex>.sig`, the tag holding the signatures of `image_digest` (`sha256:<hex>`).
pub fn signature_tag(image_digest: &str) -> String {
    format!("{}.sig", image_digest.replacen(':', "-", 1))
}

/// Adds one signature over `payload` to the `.sig` image of `repo@image_digest`, creating it
/// if needed and keeping the signatures already there, as `cosign sign` does. Returns the
/// digest of the new `.sig` manifest.
pub async fn attach_signature(
    host: &str,
    repo: &str,
    image_digest: &str,
    payload: &[u8],
    signature_b64: &str,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), signature_b64.to_owned())]);
    attach_signature_with_annotations(host, repo, image_digest, payload, annotations, auth).await
}

/// As [`attach_signature`], with exactly `annotations` on the new layer: the signature, and for
/// keyless or Rekor-logged signatures [`CERTIFICATE_ANNOTATION`], [`CHAIN_ANNOTATION`] and
/// [`BUNDLE_ANNOTATION`].
pub async fn attach_signature_with_annotations(
    host: &str,
    repo: &str,
    image_digest: &str,
    payload: &[u8],
    annotations: BTreeMap<String, String>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let tag = signature_tag(image_digest);
    append_layer(host, repo, &tag, SIMPLE_SIGNING, payload, annotations, auth).await
}

/// The tag `cosign attest` (without the new bundle format) stores attestations under.
pub fn attestation_tag(image_digest: &str) -> String {
    format!("{}.att", image_digest.replacen(':', "-", 1))
}

/// Appends one attestation layer, a DSSE envelope (`envelope_json`, stored as given) with
/// `annotations`, to the `.att` image of `repo@image_digest`, as `cosign attest` does.
/// Returns the new `.att` manifest's digest.
pub async fn attach_attestation_layer(
    host: &str,
    repo: &str,
    image_digest: &str,
    envelope_json: &[u8],
    annotations: BTreeMap<String, String>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let tag = attestation_tag(image_digest);
    append_layer(host, repo, &tag, DSSE_ENVELOPE, envelope_json, annotations, auth).await
}

/// Appends a layer of `media_type` holding `payload` to the cosign image tagged `tag`
/// (created if missing), with a config listing every layer, as cosign's static layers do.
async fn append_layer(
    host: &str,
    repo: &str,
    tag: &str,
    layer_media_type: &str,
    payload: &[u8],
    annotations: BTreeMap<String, String>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let mut layers = match get_manifest(host, repo, tag, auth).await {
        Ok((bytes, _)) => parse_manifest(host, repo, tag, &bytes)?.layers,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };

    let payload_digest = push_blob(host, repo, payload, auth).await?;
    layers.push(Descriptor {
        media_type: layer_media_type.to_owned(),
        size: payload.len(),
        digest: payload_digest,
        annotations,
    });

    // Payload layers are stored uncompressed, so each diff id is the layer digest itself.
    let config = serde_json::to_vec(&Config {
        architecture: "",
        created: ZERO_TIME,
        history: layers.iter().map(|_| History { created: ZERO_TIME }).collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        },
        config: BTreeMap::new(),
    })
    .expect("serialize a signature config");
    let config_digest = push_blob(host, repo, &config, auth).await?;

    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: media_type::OCI_MANIFEST.to_owned(),
        config: Descriptor {
            media_type: media_type::OCI_CONFIG.to_owned(),
            size: config.len(),
            digest: config_digest,
            annotations: BTreeMap::new(),
        },
        layers,
    })
    .expect("serialize a signature manifest");
    put_manifest(host, repo, tag, &manifest, media_type::OCI_MANIFEST, auth).await
}

/// Every signature in the `.sig` image of `repo@image_digest`, in layer order; none if the tag
/// does not exist.
pub async fn read_signatures(
    host: &str,
    repo: &str,
    image_digest: &str,
    auth: Auth<'_>,
) -> Result<Vec<LegacySignature>, RegistryError> {
    let tag = signature_tag(image_digest);
    let manifest = match get_manifest(host, repo, &tag, auth).await {
        Ok((bytes, _)) => parse_manifest(host, repo, &tag, &bytes)?,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut signatures = Vec::with_capacity(manifest.layers.len());
    for layer in manifest.layers {
        let payload = get_blob(host, repo, &layer.digest, auth).await?;
        if sha256_digest(&payload) != layer.digest {
            return Err(RegistryError::Protocol {
                url: format!("{host}/{repo}@{}", layer.digest),
                message: "blob does not hash to its digest".to_owned(),
            });
        }
        signatures.push(LegacySignature {
            payload,
            signature: layer.annotations.get(SIGNATURE_ANNOTATION).cloned().unwrap_or_default(),
            layer_digest: layer.digest,
            annotations: layer.annotations,
        });
    }
    Ok(signatures)
}

fn parse_manifest(host: &str, repo: &str, tag: &str, bytes: &[u8]) -> Result<Manifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Protocol {
        url: format!("{host}/{repo}:{tag}"),
        message: format!("not an OCI image manifest: {e}"),
    })
}
