//! Sigstore bundles, checked offline with `sigstore-verify` against the node's trusted root:
//! the certificate chain, SCT, transparency-log proofs and timestamps are its job; matching
//! the signer against the policy's authority is ours.

use sigstore_crypto::CertificateInfo;
use sigstore_types::{bundle::VerificationMaterialContent, Artifact, Bundle, DerCertificate, SignatureContent};
use sigstore_verify::{
    bundle as sigstore_bundle, PublicKeyVerificationPolicy, TimestampError, VerificationPolicy, VerificationResult,
    Verifier,
};

use super::{
    certificate::{signing_identity, verify_signing_certificate},
    Evidence, Rejection,
};
use crate::{Authority, AuthorityKind, Keyless, Tlog};

/// The media type of a Sigstore `TrustedRoot` (any version).
const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot+json";

/// The node's Sigstore trust material: Fulcio CAs, Rekor and CT log keys, TSAs.
pub struct TrustMaterial {
    verifier: Verifier,
    /// The parsed root, for what `sigstore-verify` does not check itself: legacy `intoto`
    /// log entries and the certificates they vouch for.
    root: sigstore_trust_root::TrustedRoot,
    /// `sha256:<hex>` of the file, so a change of trust is a change of generation.
    version: String,
}

// === impl TrustMaterial ===

impl std::fmt::Debug for TrustMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustMaterial").field("version", &self.version).finish()
    }
}

impl TrustMaterial {
    /// Parses and checks a `trusted_root.json`; malformed or inconsistent material is refused.
    /// The policy reads the file (`spec.trustedRoot`), so policy and trust load together.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let root = sigstore_trust_root::TrustedRoot::from_json(text).map_err(|e| format!("not a trusted root: {e}"))?;
        if !root.media_type.starts_with(TRUSTED_ROOT_MEDIA_TYPE) {
            return Err(format!(
                "mediaType is {:?}, not {TRUSTED_ROOT_MEDIA_TYPE}",
                root.media_type
            ));
        }
        if root.certificate_authorities.is_empty() && root.tlogs.is_empty() && root.timestamp_authorities.is_empty() {
            return Err("names no certificate authority, transparency log or timestamp authority".into());
        }
        let verifier = Verifier::new(&root).map_err(|e| format!("unusable trusted root: {e}"))?;
        Ok(Self {
            verifier,
            root,
            version: crate::reference::Digest::of(text.as_bytes()).to_string(),
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn root(&self) -> &sigstore_trust_root::TrustedRoot {
        &self.root
    }
}

/// Verifies `bundle` over `artifact` for `authority`, offline.
///
/// The tlog setting decides how the transparency log counts: `required` needs a verified entry,
/// `optional` verifies entries that are present, `ignore` does not look at them (a signing time
/// must then come from a trusted timestamp).
pub fn verify_bundle(
    trust: &TrustMaterial,
    bundle: &Bundle,
    artifact: Artifact<'_>,
    authority: &Authority,
) -> Result<Evidence, Rejection> {
    // A keyless authority that names its own root is never checked against another.
    let trust = authority.trust(Some(trust)).unwrap_or(trust);
    // Timestamps sigstore-tsa cannot read are verified here; sigstore-verify checks the rest.
    let set_aside = super::timestamp::set_aside(trust, bundle)
        .map_err(|e| Rejection::Invalid(format!("RFC 3161 timestamp: {e}")))?;
    let (bundle, stamped) = match &set_aside {
        Some((rest, times)) => (rest, times.as_slice()),
        None => (bundle, &[][..]),
    };
    let has_entries = !bundle.verification_material.tlog_entries.is_empty();
    let skip_tlog = match authority.tlog {
        Tlog::Required => false,
        Tlog::Optional => !has_entries,
        Tlog::Ignore => true,
    };
    let result = match &authority.kind {
        AuthorityKind::Key(key) => {
            let mut policy = PublicKeyVerificationPolicy::new(key.der().clone());
            if skip_tlog {
                policy = policy.skip_tlog_unsafe();
            }
            trust.verifier.verify(artifact, bundle, &policy)
        }
        AuthorityKind::Keyless(_) => {
            let mut policy = VerificationPolicy::any_identity();
            if skip_tlog {
                policy = policy.skip_tlog_unsafe();
            }
            // An embedded SCT is required only when the root lists CT logs (SPEC §4).
            if trust.root.ctlogs.is_empty() {
                policy = policy.skip_sct();
            }
            trust.verifier.verify(artifact, bundle, &policy)
        }
        // Never offered one (`roots::each_root` leaves them out): no Sigstore signature counts.
        AuthorityKind::Notation(_) => return Err(Rejection::KeyMismatch),
    }
    .map_err(|e| match e {
        // Set aside, such stamps cannot give sigstore-verify the signing time it needs.
        sigstore_verify::Error::Timestamp(TimestampError::NoVerifiedTimestamp(_))
        | sigstore_verify::Error::Bundle(sigstore_bundle::Error::MissingSigningTimeEvidence)
            if !stamped.is_empty() =>
        {
            Rejection::Invalid(format!(
                "{e} (a timestamp with fractional seconds is not used as the only signing time)"
            ))
        }
        e => Rejection::Invalid(e.to_string()),
    })?;

    if authority.tlog == Tlog::Required && !result.tlog_verified() {
        return Err(Rejection::TlogRequired {
            authority: authority.name.clone(),
        });
    }
    let mut subject = None;
    let mut certified_from = None;
    if let AuthorityKind::Keyless(keyless) = &authority.kind {
        let verified = result.certificate().filter(|_| result.certificate_verified());
        match (bundle.signing_certificate(), verified) {
            (Some(leaf), Some(certificate)) => {
                subject = Some(match_identity(keyless, leaf, certificate)?);
                certified_from = Some(certificate.not_before.as_second());
            }
            _ => return Err(Rejection::IdentityMismatch("no verified certificate".into())),
        }
        // sigstore-verify checks the certificate at every time it verified; these it did not see.
        let (leaf, chain) = signing_chain(bundle)?;
        for &at in stamped {
            verify_signing_certificate(trust, &leaf, &chain, at).map_err(Rejection::Invalid)?;
        }
    }
    // Entries the authority looks at must each hold, beyond what sigstore-verify checks.
    let tlog_index = if skip_tlog {
        None
    } else {
        super::tlog::check_entries(trust, bundle).map_err(Rejection::Invalid)?
    };
    Ok(Evidence {
        authority: authority.name.clone(),
        kind: if matches!(authority.kind, AuthorityKind::Key(_)) {
            "key"
        } else {
            "keyless"
        },
        subject,
        issuer: result.issuer().map(str::to_string),
        tlog_index,
        time_source: time_source(bundle, &result, stamped),
        signed_at: signing_time(&result, stamped),
        certified_from,
        scheme: None,
        valid_until: None,
    })
}

/// A key-signed bundle under a policy with no trusted root (cosign v3's `sign --key` and
/// `attest --key` by default): its DSSE signature checked with the authorities' keys alone, as a
/// legacy key signature is. Its log entries and timestamps cannot be checked without a root, so
/// they count for nothing: no signing time, and an authority requiring the log is not met. The
/// caller has matched the statement's subject to the digest; the signature covers the statement.
pub(super) fn verify_bundle_by_key(bundle: &Bundle, authorities: &[Authority]) -> Result<Evidence, Rejection> {
    let SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
        return Err(Rejection::NotASignature(
            "a message signature, not a signed statement".into(),
        ));
    };
    let pae = envelope.pae();
    super::first_accepting(authorities, false, |authority| {
        let AuthorityKind::Key(key) = &authority.kind else {
            return Err(Rejection::KeyMismatch);
        };
        key.verify(&pae, &envelope.signature.sig)
            .map_err(|_| Rejection::KeyMismatch)?;
        if authority.tlog == Tlog::Required {
            return Err(Rejection::TlogRequired {
                authority: authority.name.clone(),
            });
        }
        Ok(Evidence::key_only(authority))
    })
}

/// Verifies a key signature that also carries a certificate for that key (`cosign sign --key …
/// --certificate …`), whose log entry names the certificate: the entry is checked as a keyless
/// bundle's is (SET or proof, consistency with the signature and certificate), the chain is
/// not, since the key authority does not ask for one, and the certificate's key must be the
/// authority's.
pub fn verify_key_with_certificate(
    trust: &TrustMaterial,
    bundle: &Bundle,
    artifact: Artifact<'_>,
    authority: &Authority,
) -> Result<Evidence, Rejection> {
    let AuthorityKind::Key(key) = &authority.kind else {
        return Err(Rejection::KeyMismatch);
    };
    let policy = VerificationPolicy::any_identity().skip_certificate_chain();
    let result = trust
        .verifier
        .verify(artifact, bundle, &policy)
        .map_err(|e| Rejection::Invalid(e.to_string()))?;
    let certified = result.certificate().map(|c| c.public_key.as_bytes());
    if certified != Some(key.der().as_bytes()) {
        return Err(Rejection::KeyMismatch);
    }
    // Its entries must each hold, as a bundle's do.
    let tlog_index = super::tlog::check_entries(trust, bundle).map_err(Rejection::Invalid)?;
    Ok(Evidence {
        tlog_index: tlog_index.filter(|_| result.tlog_verified()),
        time_source: time_source(bundle, &result, &[]),
        signed_at: signing_time(&result, &[]),
        ..Evidence::key_only(authority)
    })
}

/// Matches a verified certificate's issuer, subject and Fulcio claims against the authority;
/// returns the subject, the certificate's one identity (see [`signing_identity`]).
pub(super) fn match_identity(
    keyless: &Keyless,
    leaf: &DerCertificate,
    cert: &CertificateInfo,
) -> Result<String, Rejection> {
    let mismatch = |what: String| Err(Rejection::IdentityMismatch(what));
    let issuer = cert.issuer.as_deref().unwrap_or_default();
    if !keyless.issuer.matches(issuer) {
        return mismatch(format!("issuer {issuer:?}"));
    }
    let subject = signing_identity(leaf).map_err(Rejection::IdentityMismatch)?;
    if !keyless.subject.matches(&subject) {
        return mismatch(format!("subject {subject:?}"));
    }
    for (claim, expected) in &keyless.extensions {
        let found = claim.value_in(&cert.ci_claims);
        if found != Some(expected.as_str()) {
            return mismatch(format!("{} {:?}", claim.name(), found.unwrap_or("(absent)")));
        }
    }
    Ok(subject)
}

/// Where the verified signing times came from: a log entry (its integrated time, vouched for by
/// its SET), RFC 3161 timestamps, both, or nothing.
fn time_source(bundle: &Bundle, result: &VerificationResult, stamped: &[jiff::Timestamp]) -> &'static str {
    // sigstore-verify refuses a bundle any of whose timestamps fails, and lists one time per
    // timestamp among the verified ones; any beyond those are integrated times.
    let stamps = bundle
        .verification_material
        .timestamp_verification_data
        .rfc3161_timestamps
        .len();
    let tsa = !stamped.is_empty() || (stamps > 0 && result.verified_timestamps().len() >= stamps);
    let tlog = result.integrated_time().is_some() || result.verified_timestamps().len() > stamps;
    match (tlog, tsa) {
        (true, true) => "tlog+tsa",
        (true, false) => "tlog",
        (false, true) => "tsa",
        (false, false) => "none",
    }
}

/// The verified signing time: the log's integrated time, else the earliest verified timestamp.
fn signing_time(result: &VerificationResult, stamped: &[jiff::Timestamp]) -> Option<i64> {
    result
        .integrated_time()
        .or_else(|| result.verified_timestamps().iter().chain(stamped).min().copied())
        .map(|t| t.as_second())
}

/// The bundle's signing certificate and the certificates it brings to chain it.
fn signing_chain(bundle: &Bundle) -> Result<(DerCertificate, Vec<DerCertificate>), Rejection> {
    match &bundle.verification_material.content {
        VerificationMaterialContent::Certificate(c) => Ok((c.raw_bytes.clone(), Vec::new())),
        VerificationMaterialContent::X509CertificateChain { certificates } => match certificates.as_slice() {
            [leaf, rest @ ..] => Ok((
                leaf.raw_bytes.clone(),
                rest.iter().map(|c| c.raw_bytes.clone()).collect(),
            )),
            [] => Err(Rejection::Invalid("an empty certificate chain".into())),
        },
        _ => Err(Rejection::IdentityMismatch("no certificate".into())),
    }
}
