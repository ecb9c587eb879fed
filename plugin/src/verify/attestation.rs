//! In-toto attestations: every attestation a rule lists must be held by at least one DSSE
//! statement about this image, of exactly that predicate type, signed by one of the rule's
//! authorities, young enough, and satisfying the rule's conditions.

use std::fmt;

use serde::Serialize;
use sigstore_types::{Artifact, SignatureContent};

use super::{first_accepting, verify_bundle, Evidence, TrustMaterial};
use crate::{
    policy::{Attestation, Authority},
    reference::Digest,
    registry::referrers::AttachedBundle,
};

/// Statements larger than this are not evaluated (they are parsed from a bundle already bounded
/// at 1 MiB; this is the bound the condition evaluator relies on).
const MAX_STATEMENT_BYTES: usize = 1024 * 1024;

/// The outcome of one attestation requirement, for the audit record and `pullgate verify`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttestationOutcome {
    pub name: String,
    pub predicate_type: String,
    /// `pass` or `fail`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Evidence>,
}

/// Why no statement satisfied one requirement; the most telling failure is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unmet {
    /// No statement of this predicate type refers to the image.
    Missing,
    /// Statements exist but none is signed by an authority of the rule.
    Unsigned(String),
    /// Signed, but about another image.
    OtherSubject(String),
    /// Signed and about this image, but older than `maxAge`, or with no verified time.
    Stale(String),
    /// Signed, fresh, but a condition does not hold.
    Condition(String),
}

impl Unmet {
    /// Later failures got further, so they say more about what is wrong.
    fn rank(&self) -> u8 {
        match self {
            Self::Missing => 0,
            Self::Unsigned(_) => 1,
            Self::OtherSubject(_) => 2,
            Self::Stale(_) => 3,
            Self::Condition(_) => 4,
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no attestation of this predicate type"),
            Self::Unsigned(why) | Self::OtherSubject(why) | Self::Stale(why) | Self::Condition(why) => f.write_str(why),
        }
    }
}

/// Checks each of `required` against the bundles attached to the image. `now` (unix seconds)
/// is only used for `maxAge`, against a signing time that was itself verified.
pub fn check_attestations(
    digest: &Digest,
    bundles: &[AttachedBundle],
    required: &[Attestation],
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
    now: i64,
) -> Vec<AttestationOutcome> {
    required
        .iter()
        .map(|attestation| {
            let mut best = Unmet::Missing;
            for bundle in bundles.iter().filter(|b| {
                // Bundles announce their predicate type; only those that could match are read.
                b.predicate_type
                    .as_deref()
                    .is_none_or(|t| t == attestation.predicate_type)
            }) {
                match check_one(digest, bundle, attestation, authorities, trust, now) {
                    Ok(Some(evidence)) => {
                        return outcome(attestation, Ok(evidence));
                    }
                    Ok(None) => {}
                    Err(unmet) if unmet.rank() >= best.rank() => best = unmet,
                    Err(_) => {}
                }
            }
            outcome(attestation, Err(best))
        })
        .collect()
}

fn outcome(attestation: &Attestation, result: Result<Evidence, Unmet>) -> AttestationOutcome {
    let (result, reason, signature) = match result {
        Ok(evidence) => ("pass", None, Some(evidence)),
        Err(unmet) => ("fail", Some(unmet.to_string()), None),
    };
    AttestationOutcome {
        name: attestation.name.clone(),
        predicate_type: attestation.predicate_type.clone(),
        result,
        reason,
        signature,
    }
}

/// One bundle against one requirement: `Ok(None)` when it is not a statement of this type.
fn check_one(
    digest: &Digest,
    attached: &AttachedBundle,
    attestation: &Attestation,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
    now: i64,
) -> Result<Option<Evidence>, Unmet> {
    let unsigned = |why: String| Unmet::Unsigned(format!("bundle {}: {why}", attached.manifest));
    let bundle = attached.parse().map_err(Unmet::Unsigned)?;
    let SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
        return Ok(None);
    };
    let payload = envelope.payload.as_bytes();
    if payload.len() > MAX_STATEMENT_BYTES {
        return Err(unsigned(format!("statement larger than {MAX_STATEMENT_BYTES} bytes")));
    }
    let statement: serde_json::Value = serde_json::from_slice(payload).map_err(|e| unsigned(e.to_string()))?;
    if statement.get("predicateType").and_then(|t| t.as_str()) != Some(attestation.predicate_type.as_str()) {
        return Ok(None);
    }
    // Authenticate first, against the subject the statement names: nothing it says counts
    // before its signature does. Then it must name this image.
    let trust = trust.ok_or_else(|| unsigned("no trustedRoot to verify it against".into()))?;
    let subjects: Vec<&str> = statement
        .get("subject")
        .and_then(|s| s.as_array())
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| s.pointer("/digest/sha256")?.as_str())
                .collect()
        })
        .unwrap_or_default();
    let named = subjects
        .first()
        .ok_or_else(|| unsigned("statement has no sha256 subject".into()))?;
    let hash = sigstore_types::Sha256Hash::from_hex(named).map_err(|e| unsigned(format!("subject digest: {e}")))?;
    let keyless = bundle.signing_certificate().is_some();
    let evidence = first_accepting(authorities, keyless, |authority| {
        verify_bundle(trust, &bundle, Artifact::from_digest(hash), authority)
    })
    .map_err(|rejection| unsigned(rejection.to_string()))?;
    if !subjects.contains(&digest.hex()) {
        return Err(Unmet::OtherSubject(format!(
            "statement is about sha256:{named}, not this image"
        )));
    }
    if let Some(max_age) = attestation.max_age {
        let Some(signed_at) = evidence.signed_at else {
            return Err(Unmet::Stale(
                "no verified signing time to measure maxAge against".into(),
            ));
        };
        let age = now.saturating_sub(signed_at);
        if age < 0 || age as u64 > max_age.as_secs() {
            let signed = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(signed_at.max(0) as u64),
            );
            // As a policy writes it: whole hours, else humantime's form.
            let limit = match max_age.as_secs() {
                secs if secs % 3600 == 0 => format!("{}h", secs / 3600),
                _ => humantime::format_duration(max_age).to_string(),
            };
            return Err(Unmet::Stale(format!("signed {signed}, older than maxAge {limit}")));
        }
    }
    crate::policy::evaluate_conditions(&attestation.conditions, &statement)
        .map_err(|failure| Unmet::Condition(failure.to_string()))?;
    Ok(Some(evidence))
}
