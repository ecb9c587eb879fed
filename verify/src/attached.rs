//! What the registry found attached to an image, as plain data: the layers of cosign's legacy
//! `.sig` and `.att` tags, and the Sigstore bundles and Notary Project signature envelopes among
//! its referrers. The registry fetches and bounds them; verification reads them.

use std::collections::BTreeMap;

use crate::{notation::Descriptor, reference::Digest};

/// Everything found attached to an image that may be a signature or attestation of it.
#[derive(Debug, Default)]
pub struct Attached {
    /// Layers of the legacy `.sig` tag.
    pub layers: Vec<SignatureLayer>,
    /// Sigstore bundles among the image's referrers, and the referrers that could not be read.
    pub referrers: Referrers,
    /// Layers of the legacy `.att` tag (only fetched when the rule asks for attestations).
    pub attestations: Vec<SignatureLayer>,
    /// The image manifest as the registry served it when the tag was resolved: what a Notary
    /// Project signature must name as its `targetArtifact`. `None`: no Notation signature counts.
    pub image: Option<Descriptor>,
}

/// Media type of a cosign simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation in which cosign names an attestation's predicate type, so layers of
/// types no rule asks for are not downloaded. Older cosign did not write it.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// One layer of a `.sig` or `.att` manifest: its descriptor annotations and, when it is a
/// payload of the expected type and an acceptable size, its bytes (checked against the layer
/// digest).
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

/// One Sigstore bundle attached to the image.
#[derive(Debug, Clone)]
pub struct AttachedBundle {
    /// The referrer manifest it came from, for messages.
    pub manifest: Digest,
    pub predicate_type: Option<String>,
    pub bytes: Vec<u8>,
}

impl AttachedBundle {
    /// The bundle, parsed.
    pub fn parse(&self) -> Result<sigstore_types::Bundle, String> {
        let text = std::str::from_utf8(&self.bytes).map_err(|e| format!("bundle {}: {e}", self.manifest))?;
        sigstore_types::Bundle::from_json(text).map_err(|e| format!("bundle {}: {e}", self.manifest))
    }
}

/// What the referrers of one image held: the bundles and Notation envelopes that could be read,
/// and why the others could not, so one broken referrer does not hide the rest.
#[derive(Debug, Default)]
pub struct Referrers {
    pub bundles: Vec<AttachedBundle>,
    pub unreadable: Vec<String>,
    /// Notary Project signatures (only looked for when the rule has a Notation authority).
    pub notation: Vec<NotationEnvelope>,
}

/// One Notary Project signature envelope: the layer of a signature manifest among the image's
/// referrers, JWS (`application/jose+json`) or COSE (`application/cose`).
#[derive(Debug, Clone)]
pub struct NotationEnvelope {
    /// The signature manifest it came from, for messages.
    pub manifest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}
