//! Discovery of cosign's legacy signature layout: the tag `sha256-<hex>.sig` in the image's
//! repository, one simple-signing layer per signature.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{RegistryError, Session};
use crate::reference::Digest;

/// Media type of a cosign simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// More signature layers than this on one image are refused rather than fetched.
pub const MAX_SIGNATURES: usize = 64;

/// A simple-signing payload larger than this is not fetched (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// One layer of a `.sig` manifest: its descriptor annotations and, when it is a signature
/// payload of acceptable size, the payload bytes (already checked against the layer digest).
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub media_type: String,
    pub annotations: BTreeMap<String, String>,
    pub payload: Payload,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Fetched(Vec<u8>),
    /// Not fetched, and why: not a signature layer, or too large.
    Skipped(String),
}

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

/// The tag cosign stores an image's signatures under.
pub fn signature_tag(image: &Digest) -> String {
    format!("sha256-{}.sig", image.hex())
}

/// Fetches the legacy `.sig` signatures of `image`. An image without the tag has none.
pub async fn legacy_signatures(session: &Session<'_>, image: &Digest) -> Result<Vec<SignatureLayer>, RegistryError> {
    let tag = signature_tag(image);
    let Some(manifest) = session.manifest(&tag).await? else {
        return Ok(Vec::new());
    };
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| RegistryError::Invalid(format!("signature manifest {tag}: {e}")))?;
    if parsed.layers.len() > MAX_SIGNATURES {
        return Err(RegistryError::Invalid(format!(
            "signature manifest {tag}: {} layers, more than the {MAX_SIGNATURES} pullgate reads",
            parsed.layers.len()
        )));
    }
    let mut layers = Vec::with_capacity(parsed.layers.len());
    for layer in parsed.layers {
        let payload = if layer.media_type != SIMPLE_SIGNING {
            Payload::Skipped(format!("layer media type {} is not a signature", layer.media_type))
        } else if layer.size > MAX_PAYLOAD_BYTES {
            Payload::Skipped(format!(
                "payload of {} bytes is larger than {MAX_PAYLOAD_BYTES}",
                layer.size
            ))
        } else {
            match Digest::parse(&layer.digest) {
                Some(d) => Payload::Fetched(session.blob(&d, MAX_PAYLOAD_BYTES as usize).await?),
                None => Payload::Skipped(format!("layer digest {:?} is not a sha256 digest", layer.digest)),
            }
        };
        layers.push(SignatureLayer {
            media_type: layer.media_type,
            annotations: layer.annotations,
            payload,
        });
    }
    Ok(layers)
}
