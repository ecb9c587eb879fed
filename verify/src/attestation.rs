//! In-toto attestations: every attestation a rule lists must be held by at least one DSSE
//! statement about this image, of exactly that predicate type, signed by one of the rule's
//! authorities, young enough, and satisfying the rule's conditions.

use std::fmt;

use serde::Serialize;
use sigstore_types::{Artifact, DsseEnvelope, DsseSignature, PayloadBytes, Sha256Hash, SignatureContent};

use super::{
    first_accepting,
    intoto::{verify_attestation_layer, AttestationLayer},
    unambiguous, verify_bundle, Attached, Evidence, Rejection, TrustMaterial, Verified,
};
use crate::{
    attached::{self, AttachedBundle, Payload, SignatureLayer},
    condition::MAX_STATEMENT_BYTES,
    reference::{Digest, Reference},
    Attestation, Authority,
};

/// The DSSE payload type of an in-toto statement.
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// cosign accepts a DSSE envelope when any one of its signatures verifies; an envelope with
/// more than this many is refused unread, so a layer cannot make every key try thousands.
const MAX_ENVELOPE_SIGNATURES: usize = 16;

/// The in-toto statement versions cosign reads (`_type`).
const STATEMENT_TYPES: [&str; 2] = ["https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"];

/// Refuses a statement that is not an in-toto statement of a version cosign reads, or whose
/// keys cosign would read otherwise (see [`super::unambiguous`]).
pub(super) fn check_statement(payload: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "_type")]
        kind: Option<String>,
    }
    unambiguous::check(payload, &unambiguous::STATEMENT)?;
    let header: Header = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    match header.kind.as_deref() {
        Some(kind) if STATEMENT_TYPES.contains(&kind) => Ok(()),
        Some(kind) => Err(format!("_type {kind:?} is not an in-toto statement")),
        None => Err("no _type: not an in-toto statement".into()),
    }
}

/// The outcome of one attestation requirement, for the audit record and `pullgate verify`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttestationOutcome {
    pub name: String,
    pub predicate_type: String,
    pub result: AttestationResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Evidence>,
}

/// Whether one attestation requirement held; serialized `pass` or `fail`, as SPEC §6's audit
/// record has it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttestationResult {
    Pass,
    Fail,
}

// === impl AttestationResult ===

impl AttestationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
        }
    }
}

impl fmt::Display for AttestationResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// A rule that requires no image signature (`requireSignature: false`) was not proven by its
/// attestations: each requirement as checked, or none when the rule asked for none, which
/// proves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unattested {
    pub outcomes: Vec<AttestationOutcome>,
}

/// Proves `digest` of `reference` by attestations alone, for a rule that requires no image
/// signature: there must be at least one requirement, and every one must be held by a
/// statement naming the digest and signed by one of `authorities`. The [`Verified`] it makes
/// carries no signature evidence; its attestations, each with its signature, are the proof.
pub fn verify_attestations(
    reference: &Reference,
    digest: &Digest,
    attached: &Attached,
    required: &[Attestation],
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
    now: i64,
) -> Result<Verified, Unattested> {
    let outcomes = check_attestations(digest, attached, required, authorities, trust, now);
    // An empty list passes `all`; here it must not.
    let proven = !outcomes.is_empty()
        && outcomes
            .iter()
            .all(|o| o.result == AttestationResult::Pass && o.signature.is_some());
    if !proven {
        return Err(Unattested { outcomes });
    }
    Ok(Verified {
        reference: reference.clone(),
        digest: digest.clone(),
        evidence: Vec::new(),
        attestations: outcomes,
    })
}

/// Checks each of `required` against the statements attached to the image: bundles among its
/// referrers and layers of its legacy `.att` tag. `now` (unix seconds) is only used for
/// `maxAge`, against a signing time that was itself verified.
pub fn check_attestations(
    digest: &Digest,
    attached: &Attached,
    required: &[Attestation],
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
    now: i64,
) -> Vec<AttestationOutcome> {
    let sources: Vec<Source<'_>> = attached
        .referrers
        .bundles
        .iter()
        .map(Source::Bundle)
        .chain(
            attached
                .attestations
                .iter()
                .enumerate()
                .map(|(i, l)| Source::Layer(i + 1, l)),
        )
        .collect();
    required
        .iter()
        .map(|attestation| {
            let mut best = Unmet::Missing;
            // Sources announce their predicate type; only those that could match are read.
            for source in sources
                .iter()
                .filter(|s| s.announced_type().is_none_or(|t| t == attestation.predicate_type))
            {
                match check_one(digest, source, attestation, authorities, trust, now) {
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
        Ok(evidence) => (AttestationResult::Pass, None, Some(evidence)),
        Err(unmet) => (AttestationResult::Fail, Some(unmet.to_string()), None),
    };
    AttestationOutcome {
        name: attestation.name.clone(),
        predicate_type: attestation.predicate_type.clone(),
        result,
        reason,
        signature,
    }
}

/// Where a statement may be: a Sigstore bundle among the referrers, or a layer (numbered from 1)
/// of the legacy `.att` tag.
enum Source<'a> {
    Bundle(&'a AttachedBundle),
    Layer(usize, &'a SignatureLayer),
}

/// A source read far enough to see its statement, not yet authenticated. A layer's envelope
/// may carry several signatures: one layer each, sharing the bytes and statement.
enum Opened<'a> {
    Bundle(sigstore_types::Bundle),
    Layer(Vec<AttestationLayer<'a>>),
}

impl<'a> Source<'a> {
    /// The predicate type the source says it holds, before it is downloaded or read.
    fn announced_type(&self) -> Option<&str> {
        match self {
            Self::Bundle(bundle) => bundle.predicate_type.as_deref(),
            Self::Layer(_, layer) => layer
                .annotations
                .get(attached::PREDICATE_TYPE_ANNOTATION)
                .map(String::as_str),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Bundle(bundle) => format!("bundle {}", bundle.manifest),
            Self::Layer(n, _) => format!(".att layer {n}"),
        }
    }

    /// The envelope; `None` when the source holds no in-toto statement.
    fn open(&self) -> Result<Option<Opened<'a>>, String> {
        match *self {
            Self::Bundle(attached) => {
                let bundle = attached.parse()?;
                match bundle.content {
                    SignatureContent::DsseEnvelope(_) => Ok(Some(Opened::Bundle(bundle))),
                    _ => Ok(None),
                }
            }
            Self::Layer(_, layer) => {
                let bytes = match &layer.payload {
                    Payload::Fetched(bytes) => bytes,
                    Payload::Skipped(why) => return Err(why.clone()),
                };
                let envelopes = each_signature(bytes)?;
                if envelopes.first().is_none_or(|e| e.payload_type != IN_TOTO_PAYLOAD_TYPE) {
                    return Ok(None);
                }
                let layers = envelopes
                    .into_iter()
                    .map(|envelope| AttestationLayer {
                        bytes,
                        annotations: &layer.annotations,
                        envelope,
                    })
                    .collect();
                Ok(Some(Opened::Layer(layers)))
            }
        }
    }
}

impl Opened<'_> {
    fn statement(&self) -> &[u8] {
        match self {
            Self::Bundle(bundle) => match &bundle.content {
                SignatureContent::DsseEnvelope(envelope) => envelope.payload.as_bytes(),
                _ => &[],
            },
            Self::Layer(layers) => layers.first().map_or(&[], |l| l.envelope.payload.as_bytes()),
        }
    }

    /// Verifies the signature for one of `authorities`; `subject` is the digest the statement
    /// names, which the signature must cover.
    fn authenticate(
        &self,
        subject: Sha256Hash,
        authorities: &[Authority],
        trust: Option<&TrustMaterial>,
    ) -> Result<Evidence, Rejection> {
        // Each root is tried with only the authorities that named it (see `roots`).
        let mut rejection = None;
        for verdict in crate::roots::each_root(authorities, trust, |authorities, trust| {
            self.authenticate_with(subject, authorities, trust)
        }) {
            match verdict {
                Ok(evidence) => return Ok(evidence),
                Err(r) => rejection = Some(r),
            }
        }
        Err(rejection.unwrap_or(Rejection::KeyMismatch))
    }

    /// [`Opened::authenticate`] for authorities that all use `trust`.
    fn authenticate_with(
        &self,
        subject: Sha256Hash,
        authorities: &[Authority],
        trust: Option<&TrustMaterial>,
    ) -> Result<Evidence, Rejection> {
        match self {
            Self::Bundle(bundle) => {
                let keyless = bundle.signing_certificate().is_some();
                let Some(trust) = trust else {
                    return if keyless {
                        Err(Rejection::NoTrustedRoot)
                    } else {
                        crate::sigstore::verify_bundle_by_key(bundle, authorities)
                    };
                };
                first_accepting(authorities, keyless, |authority| {
                    verify_bundle(trust, bundle, Artifact::from_digest(subject), authority)
                })
            }
            Self::Layer(layers) => {
                let mut rejection = Rejection::NotASignature("a DSSE envelope without signatures".into());
                for layer in layers {
                    match verify_attestation_layer(layer, subject, authorities, trust) {
                        Ok(evidence) => return Ok(evidence),
                        Err(r) => rejection = r,
                    }
                }
                Err(rejection)
            }
        }
    }
}

/// A legacy `.att` layer's DSSE envelope once per signature it carries (at least one, at most
/// [`MAX_ENVELOPE_SIGNATURES`]), for cosign's rule that any one verifying signature suffices.
fn each_signature(bytes: &[u8]) -> Result<Vec<DsseEnvelope>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        payload_type: String,
        payload: PayloadBytes,
        signatures: Vec<DsseSignature>,
    }
    let wire: Wire = serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    match wire.signatures.len() {
        0 => Err("a DSSE envelope without signatures".into()),
        n if n > MAX_ENVELOPE_SIGNATURES => Err(format!(
            "a DSSE envelope with {n} signatures, more than the {MAX_ENVELOPE_SIGNATURES} allowed"
        )),
        _ => Ok(wire
            .signatures
            .into_iter()
            .map(|signature| DsseEnvelope::new(wire.payload_type.clone(), wire.payload.clone(), signature))
            .collect()),
    }
}

/// One source against one requirement: `Ok(None)` when it is not a statement of this type.
fn check_one(
    digest: &Digest,
    source: &Source<'_>,
    attestation: &Attestation,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
    now: i64,
) -> Result<Option<Evidence>, Unmet> {
    let unsigned = |why: String| Unmet::Unsigned(format!("{}: {why}", source.label()));
    let Some(opened) = source.open().map_err(unsigned)? else {
        return Ok(None);
    };
    let payload = opened.statement();
    if payload.len() > MAX_STATEMENT_BYTES {
        return Err(unsigned(format!("statement larger than {MAX_STATEMENT_BYTES} bytes")));
    }
    let statement: serde_json::Value = serde_json::from_slice(payload).map_err(|e| unsigned(e.to_string()))?;
    if statement.get("predicateType").and_then(|t| t.as_str()) != Some(attestation.predicate_type.as_str()) {
        return Ok(None);
    }
    check_statement(payload).map_err(unsigned)?;
    // Only signed bytes decide: the statement is the payload the signature covers. It names
    // the digests it is about; the signature is checked against one, then this image must be
    // among them.
    let subjects: Vec<Sha256Hash> = statement
        .get("subject")
        .and_then(|s| s.as_array())
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| s.pointer("/digest/sha256")?.as_str())
                .filter_map(|hex| Sha256Hash::from_hex(&hex.to_ascii_lowercase()).ok())
                .collect()
        })
        .unwrap_or_default();
    let named = *subjects
        .first()
        .ok_or_else(|| unsigned("statement has no sha256 subject".into()))?;
    let evidence = opened
        .authenticate(named, authorities, trust)
        .map_err(|rejection| unsigned(rejection.to_string()))?;
    if !subjects.iter().any(|s| s.to_hex() == digest.hex()) {
        return Err(Unmet::OtherSubject(format!(
            "statement is about sha256:{}, not this image",
            named.to_hex()
        )));
    }
    if let Some(max_age) = attestation.max_age {
        if evidence.kind != "keyless" {
            return Err(Unmet::Stale(crate::MAX_AGE_NEEDS_KEYLESS.into()));
        }
        let (Some(signed_at), Some(certified_from)) = (evidence.signed_at, evidence.certified_from) else {
            return Err(Unmet::Stale(
                "no verified signing time to measure maxAge against".into(),
            ));
        };
        let rfc3339 = |t: i64| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
        };
        // As a policy writes it: whole hours, else humantime's form.
        let limit = match max_age.as_secs() {
            secs if secs % 3600 == 0 => format!("{}h", secs / 3600),
            _ => humantime::format_duration(max_age).to_string(),
        };
        let too_old = |t: i64| {
            let age = now.saturating_sub(t);
            age < 0 || age as u64 > max_age.as_secs()
        };
        if too_old(signed_at) {
            return Err(Unmet::Stale(format!(
                "signed {}, older than maxAge {limit}",
                rfc3339(signed_at)
            )));
        }
        // The signature can be as old as its certificate: a long-lived one (a private CA) does
        // not pin when it was made, and an old signature can be logged again today.
        if too_old(certified_from) {
            return Err(Unmet::Stale(format!(
                "signed with a certificate valid from {}, older than maxAge {limit}",
                rfc3339(certified_from)
            )));
        }
    }
    crate::evaluate_conditions(&attestation.conditions, &statement)
        .map_err(|failure| Unmet::Condition(failure.to_string()))?;
    Ok(Some(evidence))
}
