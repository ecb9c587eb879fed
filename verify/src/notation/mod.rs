//! Notary Project (Notation) signatures: one signature envelope, JWS or COSE_Sign1, judged
//! against the part of a Notation trust policy pullgate enforces — a trust store of CA
//! certificates, the identities trusted to sign, and the roots of the timestamp authorities.
//! The facts are the Notary Project specifications' (signature-specification, signing-scheme,
//! trust-store-trust-policy, signature-envelope-jws, signature-envelope-cose).
//!
//! The checks run in the order trust-store-trust-policy §Signature Verification lists:
//! integrity (envelope, content type, algorithm of the signing key, signature, target artifact),
//! authenticity (certificate requirements, chain to the trust store, trusted identity), expiry,
//! authentic timestamp. The signed `signingTime` is the signer's own claim and never moves the
//! time at which the chain must be valid; only a verified RFC 3161 countersignature does.
//!
//! Revocation (CRL, OCSP) is not checked: it needs the network and this crate does no I/O. A
//! signing certificate revoked within its validity still verifies here. [`NotationVerified`]
//! carries no revocation claim, so a revocation step can be added before the verdict later.

#[cfg(test)]
mod adversarial;
mod attached;
mod certificates;
mod cose;
mod envelope;
mod identity;
mod jws;
mod store;
#[cfg(test)]
mod tests;

use jiff::Timestamp;

use crate::reference::Digest;

pub(crate) use attached::check_attached;
pub use identity::{IdentityError, SubjectIdentity, TrustedIdentities};
pub use store::{parse_certificates, StoreError, MAX_STORE_CERTIFICATES};

/// The media type of a JWS JSON serialization envelope (the signature manifest's layer).
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
/// The media type of a COSE_Sign1 envelope.
pub const COSE_MEDIA_TYPE: &str = "application/cose";
/// The `artifactType` of a Notary Project signature manifest among an image's referrers.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// The content type of the signed payload; the only one the specification defines.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

/// Envelopes larger than this are refused before parsing: the bound of a cosign bundle
/// (`MAX_BUNDLE_BYTES` of the registry client). A chain of a few certificates and a timestamp
/// token is tens of kilobytes; notation-go reads signature blobs of up to 32 MiB.
pub const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;

/// The trust a Notation authority gives: what a `ca` (or `signingAuthority`) and a `tsa` trust
/// store and `trustedIdentities` say in a Notation trust policy.
#[derive(Clone, Debug)]
pub struct NotationTrust {
    /// DER certificates; a signature's chain must lead to one of them.
    pub trust_store: Vec<Vec<u8>>,
    /// Whose signing certificates are accepted.
    pub identities: TrustedIdentities,
    /// DER roots of the timestamp authorities whose countersignatures are believed. Empty: no
    /// countersignature is verified, and the chain must be valid now.
    pub tsa_roots: Vec<Vec<u8>>,
    /// When a countersignature is verified (trust policy `verifyTimestamp`).
    pub verify_timestamp: VerifyTimestamp,
}

/// When an authority with TSA roots verifies a countersignature. A verified countersignature
/// fixes the time the chain must be valid at; one that does not verify refuses the signature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyTimestamp {
    /// SPEC §4: a countersignature is verified when the envelope has one; without one the chain
    /// must be valid now.
    #[default]
    WhenPresent,
    /// Notation's `verifyTimestamp: always` (its default): a countersignature is required.
    Always,
    /// Notation's `verifyTimestamp: afterCertExpiry`: one is required, and looked at, only when
    /// a certificate of the chain has expired by now.
    AfterCertExpiry,
}

/// The descriptor the signature must name as its `targetArtifact`: the image being pulled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// The Notary Project signing schemes (signing-scheme.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningScheme {
    /// `notary.x509`: a signer with a CA-issued certificate.
    X509,
    /// `notary.x509.signingAuthority`: a signing service signs for the requestor.
    X509SigningAuthority,
}

/// What fixed the time at which the certificate chain had to be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// No countersignature was used: the chain is valid at verification time.
    Now,
    /// A countersignature from a trusted TSA: the signature existed by `at` (its genTime).
    Timestamp { at: Timestamp },
}

/// A Notary Project signature that passed every check for the target artifact; only
/// [`verify_envelope`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotationVerified {
    subject: String,
    scheme: SigningScheme,
    time_source: TimeSource,
    valid_until: Option<Timestamp>,
}

/// Why a Notary Project signature envelope does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotationRefusal {
    #[error("signature envelope media type {0:?} is neither {JWS_MEDIA_TYPE} nor {COSE_MEDIA_TYPE}")]
    MediaType(String),
    #[error("signature envelope of {0} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte bound")]
    TooLarge(usize),
    #[error("malformed signature envelope: {0}")]
    Malformed(String),
    #[error("unsupported payload content type {0:?}")]
    ContentType(String),
    #[error("unsupported signing scheme {0:?}")]
    Scheme(String),
    #[error("critical header {0:?} is not understood")]
    UnknownCritical(String),
    #[error("header {0} must be marked critical")]
    NotCritical(&'static str),
    #[error("signature algorithm: {0}")]
    Algorithm(String),
    #[error("the signature does not verify with the signing certificate's key")]
    BadSignature,
    #[error("the signature is for another artifact: {signed}")]
    OtherArtifact { signed: String },
    #[error("certificate requirements: {0}")]
    Certificate(String),
    #[error("the certificate chain does not lead to the trust store: {0}")]
    Untrusted(String),
    #[error("signing certificate subject {subject:?} is not a trusted identity")]
    Identity { subject: String },
    #[error("the signature expired at {0}")]
    Expired(Timestamp),
    #[error("the certificate chain is not valid {at}: {why}")]
    NotValid { at: String, why: String },
    #[error("timestamp countersignature: {0}")]
    Timestamp(String),
}

// === impl NotationRefusal ===

impl NotationRefusal {
    /// A short category, used to count rejections in one line of a denial.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MediaType(_)
            | Self::TooLarge(_)
            | Self::Malformed(_)
            | Self::ContentType(_)
            | Self::Scheme(_)
            | Self::UnknownCritical(_)
            | Self::NotCritical(_)
            | Self::Algorithm(_) => "notation malformed",
            Self::BadSignature => "notation bad signature",
            Self::OtherArtifact { .. } => "notation signs another artifact",
            Self::Certificate(_) => "notation certificate requirements",
            Self::Untrusted(_) => "notation untrusted chain",
            Self::Identity { .. } => "notation identity mismatch",
            Self::Expired(_) => "notation expired",
            Self::NotValid { .. } => "notation certificate not valid",
            Self::Timestamp(_) => "notation timestamp",
        }
    }
}

// === impl SigningScheme ===

impl SigningScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "notary.x509",
            Self::X509SigningAuthority => "notary.x509.signingAuthority",
        }
    }

    fn parse(value: &str) -> Result<Self, NotationRefusal> {
        match value {
            "notary.x509" => Ok(Self::X509),
            "notary.x509.signingAuthority" => Ok(Self::X509SigningAuthority),
            other => Err(NotationRefusal::Scheme(other.to_string())),
        }
    }
}

// === impl NotationVerified ===

impl NotationVerified {
    /// The signing certificate's subject, written as a `x509.subject:` identity would be.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn scheme(&self) -> SigningScheme {
        self.scheme
    }

    pub fn time_source(&self) -> TimeSource {
        self.time_source
    }

    /// When this verdict lapses: the signed expiry, or, for a chain checked now, when its
    /// first certificate expires. A signature countersigned in time outlives its chain.
    pub fn valid_until(&self) -> Option<Timestamp> {
        self.valid_until
    }
}

// === impl TimeSource ===

impl TimeSource {
    /// The name audit records and `pullgate verify` give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::Timestamp { .. } => "tsa",
        }
    }
}

/// Verifies one Notary Project signature envelope (`envelope`, of `media_type`) over `target`
/// with `trust`, at `now`.
pub fn verify_envelope(
    envelope: &[u8],
    media_type: &str,
    target: &Descriptor,
    trust: &NotationTrust,
    now: Timestamp,
) -> Result<NotationVerified, NotationRefusal> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(NotationRefusal::TooLarge(envelope.len()));
    }
    let envelope = match media_type {
        JWS_MEDIA_TYPE => jws::parse(envelope)?,
        COSE_MEDIA_TYPE => cose::parse(envelope)?,
        other => return Err(NotationRefusal::MediaType(other.to_string())),
    };
    // Integrity: the signing key's algorithm, the signature, then what it signs.
    let chain = certificates::Chain::parse(&envelope.chain)?;
    chain.verify_signature(envelope.algorithm, &envelope.signed, &envelope.signature)?;
    envelope::check_target(&envelope.payload, target)?;
    // Authenticity: the chain meets the requirements and leads to the trust store.
    chain.check_requirements()?;
    chain.check_in_store(&trust.trust_store)?;
    let subject = chain.leaf_subject();
    if !trust.identities.admits(&subject) {
        return Err(NotationRefusal::Identity {
            subject: subject.to_string(),
        });
    }
    // Expiry: the signer's "best by" time.
    if let Some(expiry) = envelope.expiry {
        if now >= expiry {
            return Err(NotationRefusal::Expired(expiry));
        }
    }
    let time_source = authentic_time(&envelope, &chain, trust, now)?;
    // The path to the trust store, its signatures and constraints, at the time just fixed.
    let at = match time_source {
        TimeSource::Now => now,
        TimeSource::Timestamp { at } => at,
    };
    chain.check_path(&trust.trust_store, at)?;
    let chain_expires = match time_source {
        TimeSource::Now => Some(chain.expires()),
        TimeSource::Timestamp { .. } => None,
    };
    Ok(NotationVerified {
        subject: subject.to_string(),
        scheme: envelope.scheme,
        time_source,
        valid_until: [envelope.expiry, chain_expires].into_iter().flatten().min(),
    })
}

/// The time the chain must be valid at: a verified countersignature's, or now. Never the
/// signed signing time alone, which the signer chose.
fn authentic_time(
    envelope: &envelope::Envelope,
    chain: &certificates::Chain,
    trust: &NotationTrust,
    now: Timestamp,
) -> Result<TimeSource, NotationRefusal> {
    let stamp = |token: Option<&Vec<u8>>| -> Result<crate::timestamp::Stamped, NotationRefusal> {
        let token = token.ok_or_else(|| NotationRefusal::Timestamp("the envelope has none".into()))?;
        if trust.tsa_roots.is_empty() {
            return Err(NotationRefusal::Timestamp("the authority trusts no TSA".into()));
        }
        crate::timestamp::verify_countersignature(token, &envelope.signature, &trust.tsa_roots)
            .map_err(NotationRefusal::Timestamp)
    };
    let at_stamp = |stamped: crate::timestamp::Stamped| -> Result<TimeSource, NotationRefusal> {
        chain.check_valid(stamped.earliest, stamped.latest, || {
            format!("at the countersignature's time {}", stamped.at)
        })?;
        Ok(TimeSource::Timestamp { at: stamped.at })
    };
    match envelope.scheme {
        // pullgate believes a signing authority's authentic signing time only when a TSA it
        // trusts vouches for it: the authority's own claim is a claim of the signer.
        SigningScheme::X509SigningAuthority => {
            let stamped = stamp(envelope.timestamp.as_ref())?;
            if let Some(claimed) = envelope.authentic_signing_time {
                chain.check_valid(claimed, claimed, || format!("at the authentic signing time {claimed}"))?;
            }
            at_stamp(stamped)
        }
        SigningScheme::X509 => {
            let verify = !trust.tsa_roots.is_empty()
                && match trust.verify_timestamp {
                    VerifyTimestamp::WhenPresent => envelope.timestamp.is_some(),
                    VerifyTimestamp::Always => true,
                    VerifyTimestamp::AfterCertExpiry => chain.check_valid(now, now, String::new).is_err(),
                };
            if verify {
                at_stamp(stamp(envelope.timestamp.as_ref())?)
            } else {
                chain.check_valid(now, now, || format!("now ({now})"))?;
                Ok(TimeSource::Now)
            }
        }
    }
}
