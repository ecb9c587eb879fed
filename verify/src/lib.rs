//! Signature verification: bytes and trust material in, a verdict with evidence out. No I/O
//! and no async runtime: the registry fetches what is attached to an image ([`attached`]), the
//! policy names the authorities and requirements, and this crate judges.
//!
//! A [`Verified`] value can only be made here, and the upstream pull takes one, so pullgate
//! cannot pull a digest by the verified path unless this crate vouched for it.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::Serialize;
use sigstore_types::SignatureBytes;

use crate::{
    attached::{AttachedBundle, Payload, SignatureLayer},
    reference::{Digest, Reference},
};

pub mod attached;
mod attestation;
mod authority;
mod certificate;
pub mod condition;
#[cfg(test)]
mod crafted;
pub mod expiry;
mod fulcio;
#[cfg(test)]
mod github_attestations;
mod intoto;
pub mod key;
#[cfg(test)]
mod key_bundle_tests;
pub mod legacy;
pub mod notation;
pub mod reference;
mod regexp;
#[cfg(test)]
mod rekor_v2_tests;
mod requirement;
mod roots;
mod sigstore;
// Public for pullgate's fuzz targets, which parse payloads the way verification does.
#[doc(hidden)]
pub mod simple_signing;
#[cfg(test)]
mod tests;
mod timestamp;
mod tlog;
mod unambiguous;

pub use attached::Attached;
pub use attestation::{check_attestations, verify_attestations, AttestationOutcome, AttestationResult, Unattested};
pub use authority::{Authority, AuthorityKind, IdentityMatch, Keyless, Tlog};
pub use condition::{evaluate as evaluate_conditions, Condition, ConditionFailure};
pub use expiry::TrustNeeds;
pub use fulcio::FulcioClaim;
pub use key::PublicKey;
pub use regexp::{Re2Regex, RegexError};
pub use requirement::{Attestation, MAX_AGE_NEEDS_KEYLESS};
pub use sigstore::{verify_bundle, TrustMaterial};

/// The predicate type of a cosign v3 image signature statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The cosign annotation that carries a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Proof that `digest` of `reference`'s repository carries a valid signature from one of the
/// authorities of the rule that matched it — or, for a rule that requires no signature, that
/// every attestation the rule requires (at least one) is signed by one of them and names the
/// digest. Constructed only by [`verify_image`] and [`verify_attestations`].
#[derive(Debug, Clone)]
pub struct Verified {
    reference: Reference,
    digest: Digest,
    evidence: Vec<Evidence>,
    attestations: Vec<AttestationOutcome>,
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
    /// The verified signing time (unix seconds), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<i64>,
    /// A keyless signature's certificate was valid from this time (unix seconds): the earliest
    /// the signature can have been made, what `maxAge` is measured from. A log entry or
    /// timestamp only shows the signature existed by its time; an old one can be logged again.
    #[serde(skip)]
    pub certified_from: Option<i64>,
    /// A Notary Project signature's signing scheme (`notary.x509` or
    /// `notary.x509.signingAuthority`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<&'static str>,
    /// From this unix second the signature no longer counts: a Notary Project signature's
    /// expiry, or, checked at the time of the pull, when its certificate chain expires. `None`:
    /// it counts for good.
    #[serde(skip)]
    pub valid_until: Option<i64>,
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
    /// The signature is valid but the payload is not a cosign simple-signing payload.
    BadPayload(String),
    /// The signature is valid but signs another image.
    DigestMismatch { signed: String },
    /// The signature is valid but the authority requires a verified transparency-log entry.
    TlogRequired { authority: String },
    /// Sigstore verification failed: chain, SCT, log proof, timestamp or signature.
    Invalid(String),
    /// A verified certificate whose identity no keyless authority accepts.
    IdentityMismatch(String),
    /// The signature needs Sigstore trust material and the policy names no `trustedRoot`.
    NoTrustedRoot,
    /// A Notary Project signature that no Notation authority of the rule accepts.
    Notation(notation::NotationRefusal),
}

/// All signatures were looked at and none satisfies the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub authorities: Vec<String>,
    pub rejections: Vec<Rejection>,
}

// === impl Evidence ===

impl Evidence {
    /// A signature checked with an authority's key alone: no log entry, so no signing time.
    pub(crate) fn key_only(authority: &Authority) -> Self {
        Self {
            authority: authority.name.clone(),
            kind: "key",
            subject: None,
            issuer: None,
            tlog_index: None,
            time_source: "none",
            signed_at: None,
            certified_from: None,
            scheme: None,
            valid_until: None,
        }
    }
}

// === impl Verified ===

impl Verified {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The same verification for another reference of the same repository and digest (another
    /// tag, say), as the cache hands it to a later pull; `None` for a reference of another
    /// repository or digest, which this verification says nothing about.
    pub fn for_reference(self, reference: &Reference) -> Option<Self> {
        let same_repository = reference.repository() == self.reference.repository();
        let same_digest = reference.digest().is_none_or(|d| *d == self.digest);
        (same_repository && same_digest).then(|| Self {
            reference: reference.clone(),
            ..self
        })
    }

    /// From this unix second no accepted signature counts any more, and a pull verified now
    /// would be refused; `None` when one counts for good, or when no signature was needed.
    pub fn valid_until(&self) -> Option<i64> {
        let mut until: Option<i64> = None;
        for evidence in &self.evidence {
            // Any one signature admits the image: the last to lapse decides.
            let lapses = evidence.valid_until?;
            until = Some(until.map_or(lapses, |u| u.max(lapses)));
        }
        until
    }

    /// `host/path@sha256:…`: the only reference pullgate asks containerd to pull.
    pub fn pinned(&self) -> String {
        self.reference.pinned(&self.digest)
    }

    /// The image signatures that were accepted; empty when the attestations alone are the
    /// proof (see [`verify_attestations`]).
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    /// The rule's attestations, each passed.
    pub fn attestations(&self) -> &[AttestationOutcome] {
        &self.attestations
    }

    /// Requires every attestation in `required` of an image whose signature verified: the image
    /// stays verified only if all hold. On failure, every outcome is returned for the record.
    pub fn require_attestations(
        mut self,
        attached: &Attached,
        required: &[Attestation],
        authorities: &[Authority],
        trust: Option<&TrustMaterial>,
        now: i64,
    ) -> Result<Self, Vec<AttestationOutcome>> {
        let outcomes = check_attestations(&self.digest, attached, required, authorities, trust, now);
        if outcomes.iter().any(|o| o.result != AttestationResult::Pass) {
            return Err(outcomes);
        }
        self.attestations = outcomes;
        Ok(self)
    }
}

/// Checks `layers` (from the image's `.sig` tag) against `authorities`. One valid signature
/// from any authority is enough; every accepted one is kept as evidence.
pub fn verify_signatures(
    reference: &Reference,
    digest: &Digest,
    layers: &[SignatureLayer],
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
) -> Result<Verified, Unverified> {
    let attached = Attached {
        layers: layers.to_vec(),
        ..Attached::default()
    };
    verify_image(reference, digest, &attached, authorities, trust)
}

/// Checks every signature found for the image: legacy `.sig` layers and Sigstore bundles
/// attached as referrers. Bundles of other predicate types (attestations) are not signatures
/// and are not counted; referrers that could not be read are counted as rejections.
pub fn verify_image(
    reference: &Reference,
    digest: &Digest,
    attached: &Attached,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
) -> Result<Verified, Unverified> {
    let mut evidence = Vec::new();
    let mut rejections: Vec<Rejection> = attached
        .referrers
        .unreadable
        .iter()
        .cloned()
        .map(Rejection::Invalid)
        .collect();
    for outcome in notation::check_attached(attached, authorities, jiff::Timestamp::now()) {
        match outcome {
            Ok(e) => evidence.push(e),
            Err(r) => rejections.push(r),
        }
    }
    // Each root is checked with only the authorities that named it (see `roots`).
    let outcomes = roots::each_root(authorities, trust, |authorities, trust| {
        let layers = attached
            .layers
            .iter()
            .map(|layer| Some(check_layer(digest, layer, authorities, trust)));
        let bundles = attached
            .referrers
            .bundles
            .iter()
            .map(|bundle| check_attached_bundle(digest, bundle, authorities, trust));
        layers.chain(bundles).flatten().collect::<Vec<_>>()
    });
    for outcome in outcomes.into_iter().flatten() {
        match outcome {
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
        attestations: Vec::new(),
    })
}

fn check_layer(
    digest: &Digest,
    layer: &SignatureLayer,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
) -> Result<Evidence, Rejection> {
    let payload = match &layer.payload {
        Payload::Fetched(bytes) => bytes,
        Payload::Skipped(why) => return Err(Rejection::NotASignature(why.clone())),
    };
    let signature = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| Rejection::MalformedSignature(format!("no {SIGNATURE_ANNOTATION} annotation")))?;
    // cosign writes one line; other signers wrap base64 at 76 columns, which decoders accept.
    let signature: String = signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let signature = BASE64
        .decode(signature)
        .map_err(|e| Rejection::MalformedSignature(format!("signature is not base64: {e}")))?;

    let keyless = layer.annotations.contains_key(legacy::CERTIFICATE_ANNOTATION);
    let has_key_authority = authorities.iter().any(|a| matches!(a.kind, AuthorityKind::Key(_)));
    let by_key = || check_key_signature(digest, payload, &SignatureBytes::new(signature.clone()), authorities);
    match trust {
        Some(trust) if legacy::has_sigstore_material(&layer.annotations) => {
            let bundle = legacy::to_bundle(&layer.annotations, &signature).map_err(Rejection::Invalid)?;
            let verdict = check_bundle_layer(digest, payload, &bundle, keyless, authorities, trust);
            // `cosign sign --key … --certificate …`: a key signature that also carries a
            // certificate still counts for the key, and a log entry it carries must verify as
            // any key signature's must (unless the authority ignores the log).
            match verdict {
                Err(rejection) if keyless && has_key_authority => {
                    let for_key = if layer.annotations.contains_key(legacy::REKOR_BUNDLE_ANNOTATION) {
                        check_key_with_certificate(digest, payload, &bundle, &signature, authorities, trust)
                    } else {
                        by_key()
                    };
                    // The key's reason says more when no keyless authority could have accepted.
                    let any_keyless = authorities.iter().any(|a| matches!(a.kind, AuthorityKind::Keyless(_)));
                    for_key.map_err(|key_rejection| if any_keyless { rejection } else { key_rejection })
                }
                verdict => verdict,
            }
        }
        None if keyless && !has_key_authority => Err(Rejection::NoTrustedRoot),
        // A key signature, with no log entry or no trust material to check one: the key alone.
        _ => by_key(),
    }
}

/// A cosign v3 signature: a bundle whose DSSE statement (`https://sigstore.dev/cosign/sign/v1`)
/// names the image digest. `None` for attestations, which are not signatures.
fn check_attached_bundle(
    digest: &Digest,
    attached: &AttachedBundle,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
) -> Option<Result<Evidence, Rejection>> {
    if attached
        .predicate_type
        .as_deref()
        .is_some_and(|t| t != COSIGN_SIGN_PREDICATE)
    {
        return None;
    }
    let bundle = match attached.parse() {
        Ok(b) => b,
        Err(e) => return Some(Err(Rejection::Invalid(e))),
    };
    // A message signature says nothing about what it signs; only a statement binds the image.
    let sigstore_types::SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
        let why = format!(
            "bundle {} is a message signature, not an image signature statement",
            attached.manifest
        );
        return Some(Err(Rejection::NotASignature(why)));
    };
    match serde_json::from_slice::<sigstore_types::Statement>(envelope.payload.as_bytes()) {
        Ok(s) if s.predicate_type != COSIGN_SIGN_PREDICATE => return None,
        Ok(s)
            if !s
                .subject
                .iter()
                .any(|x| x.digest.sha256.is_some_and(|h| h.to_hex() == digest.hex())) =>
        {
            let named = s
                .subject
                .first()
                .and_then(|x| x.digest.sha256)
                .map(|h| h.to_hex())
                .unwrap_or_default();
            return Some(Err(Rejection::DigestMismatch {
                signed: format!("sha256:{named}"),
            }));
        }
        Ok(_) => {}
        Err(e) => {
            return Some(Err(Rejection::Invalid(format!(
                "bundle {}: statement: {e}",
                attached.manifest
            ))))
        }
    }
    if let Err(e) = attestation::check_statement(envelope.payload.as_bytes()) {
        return Some(Err(Rejection::Invalid(format!(
            "bundle {}: statement: {e}",
            attached.manifest
        ))));
    }
    let keyless = bundle.signing_certificate().is_some();
    let Some(trust) = trust else {
        return Some(if keyless {
            Err(Rejection::NoTrustedRoot)
        } else {
            sigstore::verify_bundle_by_key(&bundle, authorities)
        });
    };
    let Ok(hash) = sigstore_types::Sha256Hash::from_hex(digest.hex()) else {
        return Some(Err(Rejection::Invalid(format!("digest {digest}"))));
    };
    Some(first_accepting(authorities, keyless, |authority| {
        verify_bundle(trust, &bundle, sigstore_types::Artifact::from_digest(hash), authority)
    }))
}

/// Tries `check` with every authority of the signature's kind (keyless for a certificate, key
/// otherwise); the first that accepts wins, else the last rejection is reported.
fn first_accepting<'a>(
    authorities: impl IntoIterator<Item = &'a Authority>,
    keyless: bool,
    mut check: impl FnMut(&Authority) -> Result<Evidence, Rejection>,
) -> Result<Evidence, Rejection> {
    let mut rejection = if keyless {
        Rejection::IdentityMismatch("the rule has no keyless authority".into())
    } else {
        Rejection::KeyMismatch
    };
    for authority in authorities
        .into_iter()
        .filter(|a| matches!(a.kind, AuthorityKind::Keyless(_)) == keyless)
    {
        match check(authority) {
            Ok(evidence) => return Ok(evidence),
            Err(r) => rejection = r,
        }
    }
    Err(rejection)
}

/// A legacy signature restated as a bundle: every authority of the signature's kind is tried.
fn check_bundle_layer(
    digest: &Digest,
    payload: &[u8],
    bundle: &sigstore_types::Bundle,
    keyless: bool,
    authorities: &[Authority],
    trust: &TrustMaterial,
) -> Result<Evidence, Rejection> {
    let evidence = first_accepting(authorities, keyless, |authority| {
        verify_bundle(trust, bundle, payload.into(), authority)
    })?;
    // Authenticated: now the payload may be read.
    check_payload(digest, payload)?;
    Ok(evidence)
}

/// A key signature whose layer also carries a certificate and a log entry: an authority that
/// ignores the log takes the key alone; the others need the entry, which names the
/// certificate, to verify for their key.
fn check_key_with_certificate(
    digest: &Digest,
    payload: &[u8],
    bundle: &sigstore_types::Bundle,
    signature: &[u8],
    authorities: &[Authority],
    trust: &TrustMaterial,
) -> Result<Evidence, Rejection> {
    let ignoring: Vec<Authority> = authorities.iter().filter(|a| a.tlog == Tlog::Ignore).cloned().collect();
    if let Ok(evidence) = check_key_signature(digest, payload, &SignatureBytes::new(signature.to_vec()), &ignoring) {
        return Ok(evidence);
    }
    let logged = authorities.iter().filter(|a| a.tlog != Tlog::Ignore);
    let evidence = first_accepting(logged, false, |authority| {
        sigstore::verify_key_with_certificate(trust, bundle, payload.into(), authority)
    })?;
    // Authenticated: now the payload may be read.
    check_payload(digest, payload)?;
    Ok(evidence)
}

/// A signature checked with the rule's keys alone. Every authority is tried, so one whose other
/// requirements fail does not hide another.
fn check_key_signature(
    digest: &Digest,
    payload: &[u8],
    signature: &SignatureBytes,
    authorities: &[Authority],
) -> Result<Evidence, Rejection> {
    let mut checked = false;
    let mut unmet = None;
    for authority in authorities {
        let AuthorityKind::Key(key) = &authority.kind else {
            continue;
        };
        if key.verify(payload, signature).is_err() {
            continue;
        }
        // Authenticated: now the payload may be read.
        if !checked {
            check_payload(digest, payload)?;
            checked = true;
        }
        if authority.tlog == Tlog::Required {
            unmet = Some(Rejection::TlogRequired {
                authority: authority.name.clone(),
            });
            continue;
        }
        return Ok(Evidence::key_only(authority));
    }
    let any_key = authorities.iter().any(|a| matches!(a.kind, AuthorityKind::Key(_)));
    let no_match = if any_key {
        Rejection::KeyMismatch
    } else {
        Rejection::IdentityMismatch("a key signature, without a certificate for the rule's keyless authorities".into())
    };
    Err(unmet.unwrap_or(no_match))
}

/// The signed payload must be a cosign image signature for exactly `digest`.
fn check_payload(digest: &Digest, payload: &[u8]) -> Result<(), Rejection> {
    let signed = simple_signing::parse(payload).map_err(Rejection::BadPayload)?;
    if signed.manifest_digest != digest.as_str() {
        return Err(Rejection::DigestMismatch {
            signed: signed.manifest_digest,
        });
    }
    Ok(())
}

// === impl Rejection ===

impl Rejection {
    /// A short category, used to count rejections in one line.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotASignature(_) => "not a signature",
            Self::MalformedSignature(_) => "malformed",
            Self::KeyMismatch => "key mismatch",
            Self::BadPayload(_) => "bad payload",
            Self::DigestMismatch { .. } => "signs another digest",
            Self::TlogRequired { .. } => "no verified tlog entry",
            Self::Invalid(_) => "invalid",
            Self::IdentityMismatch(_) => "identity mismatch",
            Self::NoTrustedRoot => "no trusted root",
            Self::Notation(refusal) => refusal.category(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASignature(why)
            | Self::MalformedSignature(why)
            | Self::BadPayload(why)
            | Self::Invalid(why)
            | Self::IdentityMismatch(why) => {
                write!(f, "{}: {why}", self.category())
            }
            Self::DigestMismatch { signed } => write!(f, "signs {signed}"),
            Self::Notation(refusal) => write!(f, "notation: {refusal}"),
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
        // SPEC §5's wording: `authority "a" or "b"`, whatever the number.
        write!(f, "no signature from authority {}", names.join(" or "))?;
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
