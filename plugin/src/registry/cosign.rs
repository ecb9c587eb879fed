//! Discovery of cosign's legacy layout: the tags `sha256-<hex>.sig` (one simple-signing layer
//! per signature) and `sha256-<hex>.att` (one DSSE envelope layer per attestation) in the
//! image's repository, with the signing material in each layer's annotations.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{RegistryError, Session};
use crate::reference::Digest;
pub use pullgate_verify::attached::{Payload, SignatureLayer, PREDICATE_TYPE_ANNOTATION, SIMPLE_SIGNING};

/// More signature layers than this on one image are refused rather than fetched.
pub const MAX_SIGNATURES: usize = 64;

/// A simple-signing payload larger than this is not fetched (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// Media type of a `cosign attest` layer: a DSSE envelope around an in-toto statement.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";

/// An attestation envelope larger than this is not fetched: room for a large SBOM.
pub const MAX_ENVELOPE_BYTES: u64 = 4 * 1024 * 1024;

/// What the layers of one tag may add up to; layers beyond it are not fetched.
pub const MAX_TAG_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The layers a `.sig`/`.att` manifest lists (for the fuzz targets: the same parsing the
/// lookup does).
pub(crate) fn manifest_layer_count(bytes: &[u8]) -> Result<usize, String> {
    serde_json::from_slice::<ImageManifest>(bytes)
        .map(|m| m.layers.len())
        .map_err(|e| e.to_string())
}

/// The tag cosign stores an image's signatures under.
pub fn signature_tag(image: &Digest) -> String {
    format!("sha256-{}.sig", image.hex())
}

/// The tag `cosign attest` stores an image's attestations under.
pub fn attestation_tag(image: &Digest) -> String {
    format!("sha256-{}.att", image.hex())
}

/// Fetches the legacy `.sig` signatures of `image`. An image without the tag has none.
pub async fn legacy_signatures(session: &Session<'_>, image: &Digest) -> Result<Vec<SignatureLayer>, RegistryError> {
    legacy_layers(session, &signature_tag(image), |layer| {
        if layer.media_type != SIMPLE_SIGNING {
            return Wanted::Skip(format!("layer media type {} is not a signature", layer.media_type));
        }
        Wanted::Fetch(MAX_PAYLOAD_BYTES)
    })
    .await
}

/// Fetches the legacy `.att` attestations of `image` whose predicate type is one of `wanted`
/// (or is not announced). An image without the tag has none.
pub async fn legacy_attestations(
    session: &Session<'_>,
    image: &Digest,
    wanted: &[&str],
) -> Result<Vec<SignatureLayer>, RegistryError> {
    legacy_layers(session, &attestation_tag(image), |layer| {
        if layer.media_type != DSSE_ENVELOPE {
            return Wanted::Skip(format!("layer media type {} is not a DSSE envelope", layer.media_type));
        }
        match layer.annotations.get(PREDICATE_TYPE_ANNOTATION) {
            Some(t) if !wanted.contains(&t.as_str()) => Wanted::Ignore,
            _ => Wanted::Fetch(MAX_ENVELOPE_BYTES),
        }
    })
    .await
}

/// What to do with one layer of a legacy manifest.
enum Wanted {
    /// Fetch it, if it is at most this many bytes.
    Fetch(u64),
    /// Keep it as unfetched, for this reason (it shows in the rejections).
    Skip(String),
    /// Leave it out: nothing the rule asks for.
    Ignore,
}

/// Fetches the manifest tagged `tag` and the layers `wanted` picks, within the size bounds.
async fn legacy_layers(
    session: &Session<'_>,
    tag: &str,
    wanted: impl Fn(&Descriptor) -> Wanted,
) -> Result<Vec<SignatureLayer>, RegistryError> {
    let Some(manifest) = session.manifest(tag).await? else {
        return Ok(Vec::new());
    };
    let parsed: ImageManifest =
        serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::Invalid(format!("manifest {tag}: {e}")))?;
    if parsed.layers.len() > MAX_SIGNATURES {
        return Err(RegistryError::Invalid(format!(
            "manifest {tag}: {} layers, more than the {MAX_SIGNATURES} pullgate reads",
            parsed.layers.len()
        )));
    }
    let mut budget = MAX_TAG_BYTES;
    let mut layers = Vec::with_capacity(parsed.layers.len());
    for layer in parsed.layers {
        let payload = match wanted(&layer) {
            Wanted::Ignore => continue,
            Wanted::Skip(why) => Payload::Skipped(why),
            Wanted::Fetch(max) if layer.size > max => {
                Payload::Skipped(format!("layer of {} bytes is larger than {max}", layer.size))
            }
            Wanted::Fetch(_) if layer.size > budget => Payload::Skipped(format!(
                "layer of {} bytes would take {tag} past {MAX_TAG_BYTES} bytes",
                layer.size
            )),
            // The declared size is only a claim: the read is bounded by the limits themselves
            // and the budget is charged what actually arrived.
            Wanted::Fetch(max) => match Digest::parse(&layer.digest) {
                // One bad layer (too large, not matching its digest) is one rejection, not a
                // failed lookup: it must not hide the good ones. A registry gone away is.
                Some(d) => match session.blob(&d, max.min(budget) as usize).await {
                    Ok(bytes) => {
                        budget = budget.saturating_sub(bytes.len() as u64);
                        Payload::Fetched(bytes)
                    }
                    Err(RegistryError::Invalid(why) | RegistryError::NotFound(why)) => Payload::Skipped(why),
                    Err(unavailable) => return Err(unavailable),
                },
                None => Payload::Skipped(format!("layer digest {:?} is not a sha256 digest", layer.digest)),
            },
        };
        layers.push(SignatureLayer {
            media_type: layer.media_type,
            annotations: layer.annotations,
            payload,
        });
    }
    Ok(layers)
}
