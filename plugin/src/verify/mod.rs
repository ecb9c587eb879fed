//! Signature verification: bytes and trust material in, a verdict with evidence out. No I/O.
//!
//! A [`Verified`] value can only be made here, and the upstream pull takes one, so pullgate
//! cannot pull a digest by the verified path unless this module vouched for it.

use std::{collections::BTreeMap, fmt};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::Serialize;
use sigstore_types::SignatureBytes;

use crate::{
    policy::{Authority, AuthorityKind, Tlog},
    reference::{Digest, Reference},
    registry::cosign::{Payload, SignatureLayer},
};

mod simple_signing;
#[cfg(test)]
mod tests;

/// The cosign annotation that carries a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Proof that `digest` of `reference`'s repository carries a valid signature from one of the
/// authorities of the rule that matched it. Constructed only by [`verify_signatures`].
#[derive(Debug, Clone)]
pub struct Verified {
    reference: Reference,
    digest: Digest,
    evidence: Vec<Evidence>,
}

/// What was checked for one accepted signature; goes into the audit record and `verify` output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub authority: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlog_index: Option<u64>,
    /// Where the signing time came from; `none` for a key signature without a log entry.
    pub time_source: &'static str,
}

/// Why one signature layer did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The layer is not a simple-signing payload, or was too large to fetch.
    NotASignature(String),
    /// No signature annotation, or one that is not base64.
    MalformedSignature(String),
    /// No key of the rule's key authorities verifies the signature.
    KeyMismatch,
    /// Only keyless authorities could apply and keyless verification is not available.
    KeylessUnsupported,
    /// The signature is valid but the payload is not a cosign simple-signing payload.
    BadPayload(String),
    /// The signature is valid but signs another image.
    DigestMismatch { signed: String },
    /// The signature is valid but the authority requires a verified transparency-log entry.
    TlogRequired { authority: String },
}

/// All signatures were looked at and none satisfies the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub authorities: Vec<String>,
    pub rejections: Vec<Rejection>,
}

// === impl Verified ===

impl Verified {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// `host/path@sha256:…`: the only reference pullgate asks containerd to pull.
    pub fn pinned(&self) -> String {
        self.reference.pinned(&self.digest)
    }

    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }
}

/// Checks `layers` (from the image's `.sig` tag) against `authorities`. One valid signature
/// from any authority is enough; every accepted one is kept as evidence.
pub fn verify_signatures(
    reference: &Reference,
    digest: &Digest,
    layers: &[SignatureLayer],
    authorities: &[Authority],
) -> Result<Verified, Unverified> {
    let mut evidence = Vec::new();
    let mut rejections = Vec::new();
    for layer in layers {
        match check_layer(digest, layer, authorities) {
            Ok(e) => evidence.push(e),
            Err(r) => rejections.push(r),
        }
    }
    if evidence.is_empty() {
        let authorities = authorities.iter().map(|a| a.name.clone()).collect();
        return Err(Unverified {
            authorities,
            rejections,
        });
    }
    Ok(Verified {
        reference: reference.clone(),
        digest: digest.clone(),
        evidence,
    })
}

fn check_layer(digest: &Digest, layer: &SignatureLayer, authorities: &[Authority]) -> Result<Evidence, Rejection> {
    let payload = match &layer.payload {
        Payload::Fetched(bytes) => bytes,
        Payload::Skipped(why) => return Err(Rejection::NotASignature(why.clone())),
    };
    let signature = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| Rejection::MalformedSignature(format!("no {SIGNATURE_ANNOTATION} annotation")))?;
    let signature = BASE64
        .decode(signature.trim())
        .map_err(|e| Rejection::MalformedSignature(format!("signature is not base64: {e}")))?;
    let signature = SignatureBytes::new(signature);

    // Authenticate before reading: the payload is only parsed once a trusted key signed it.
    // Every authority is tried, so one whose other requirements fail does not hide another.
    let mut signed = None;
    let mut unmet = None;
    for authority in authorities {
        let AuthorityKind::Key(key) = &authority.kind else {
            continue;
        };
        if key.verify(payload, &signature).is_err() {
            continue;
        }
        let signed = match &signed {
            Some(s) => s,
            None => signed.insert(simple_signing::parse(payload).map_err(Rejection::BadPayload)?),
        };
        if signed.manifest_digest != digest.as_str() {
            return Err(Rejection::DigestMismatch {
                signed: signed.manifest_digest.clone(),
            });
        }
        if authority.tlog == Tlog::Required {
            // No transparency-log verification exists yet, so a requirement for one cannot be met.
            unmet = Some(Rejection::TlogRequired {
                authority: authority.name.clone(),
            });
            continue;
        }
        return Ok(Evidence {
            authority: authority.name.clone(),
            kind: "key",
            subject: None,
            issuer: None,
            tlog_index: None,
            time_source: "none",
        });
    }
    let any_key = authorities.iter().any(|a| matches!(a.kind, AuthorityKind::Key(_)));
    Err(unmet.unwrap_or(if any_key {
        Rejection::KeyMismatch
    } else {
        Rejection::KeylessUnsupported
    }))
}

// === impl Rejection ===

impl Rejection {
    /// A short category, used to count rejections in one line.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotASignature(_) => "not a signature",
            Self::MalformedSignature(_) => "malformed",
            Self::KeyMismatch => "key mismatch",
            Self::KeylessUnsupported => "keyless unsupported",
            Self::BadPayload(_) => "bad payload",
            Self::DigestMismatch { .. } => "signs another digest",
            Self::TlogRequired { .. } => "no verified tlog entry",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASignature(why) | Self::MalformedSignature(why) | Self::BadPayload(why) => {
                write!(f, "{}: {why}", self.category())
            }
            Self::DigestMismatch { signed } => write!(f, "signs {signed}"),
            Self::TlogRequired { authority } => {
                write!(f, "authority {authority:?} requires a verified transparency-log entry")
            }
            other => f.write_str(other.category()),
        }
    }
}

// === impl Unverified ===

impl fmt::Display for Unverified {
    /// `no signature from authority "a" or "b" (2 signatures found: 1 key mismatch, 1 …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.authorities.iter().map(|a| format!("{a:?}")).collect();
        let noun = if names.len() == 1 { "authority" } else { "authorities" };
        write!(f, "no signature from {noun} {}", names.join(" or "))?;
        if self.rejections.is_empty() {
            return f.write_str(" (no signatures found)");
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rejections {
            *counts.entry(r.category()).or_default() += 1;
        }
        let n = self.rejections.len();
        let parts: Vec<String> = counts.iter().map(|(c, k)| format!("{k} {c}")).collect();
        write!(
            f,
            " ({n} signature{} found: {})",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}
