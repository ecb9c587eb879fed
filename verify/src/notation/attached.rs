//! A rule's Notation authorities against the Notary Project envelopes found among an image's
//! referrers: each envelope counts for the first authority that accepts it.

use jiff::Timestamp;

use super::{verify_envelope, NotationRefusal, NotationVerified, TimeSource};
use crate::{
    attached::{Attached, NotationEnvelope},
    Authority, AuthorityKind, Evidence, Rejection,
};

/// One outcome per envelope, when the rule has Notation authorities; nothing otherwise (the
/// registry looks for none then).
pub(crate) fn check_attached(
    attached: &Attached,
    authorities: &[Authority],
    now: Timestamp,
) -> Vec<Result<Evidence, Rejection>> {
    let notation: Vec<&Authority> = authorities
        .iter()
        .filter(|a| matches!(a.kind, AuthorityKind::Notation(_)))
        .collect();
    if notation.is_empty() {
        return Vec::new();
    }
    attached
        .referrers
        .notation
        .iter()
        .map(|envelope| check_one(envelope, attached, &notation, now))
        .collect()
}

fn check_one(
    envelope: &NotationEnvelope,
    attached: &Attached,
    authorities: &[&Authority],
    now: Timestamp,
) -> Result<Evidence, Rejection> {
    // The target is the manifest the tag resolved to; without it nothing can be matched.
    let Some(target) = &attached.image else {
        return Err(Rejection::Invalid(format!(
            "Notation signature {}: the image manifest's descriptor is unknown",
            envelope.manifest
        )));
    };
    let mut refusal = None;
    for authority in authorities {
        let AuthorityKind::Notation(trust) = &authority.kind else {
            continue;
        };
        match verify_envelope(&envelope.bytes, &envelope.media_type, target, trust, now) {
            Ok(verified) => return Ok(evidence(authority, &verified)),
            Err(why) => refusal = Some(more_telling(refusal, why)),
        }
    }
    Err(Rejection::Notation(refusal.unwrap_or_else(|| {
        NotationRefusal::Malformed("the rule has no Notation authority".into())
    })))
}

/// Of two authorities' refusals of one envelope, the one that got further: "identity mismatch"
/// from the authority whose store the chain leads to says more than "untrusted" from another.
fn more_telling(earlier: Option<NotationRefusal>, later: NotationRefusal) -> NotationRefusal {
    match earlier {
        Some(earlier @ NotationRefusal::Identity { .. })
        | Some(earlier @ NotationRefusal::Expired(_))
        | Some(earlier @ NotationRefusal::NotValid { .. })
        | Some(earlier @ NotationRefusal::Timestamp(_))
            if matches!(later, NotationRefusal::Untrusted(_)) =>
        {
            earlier
        }
        _ => later,
    }
}

fn evidence(authority: &Authority, verified: &NotationVerified) -> Evidence {
    let signed_at = match verified.time_source() {
        TimeSource::Timestamp { at } => Some(at.as_second()),
        TimeSource::Now => None,
    };
    Evidence {
        authority: authority.name.clone(),
        kind: "notation",
        subject: Some(verified.subject().to_string()),
        issuer: None,
        tlog_index: None,
        time_source: verified.time_source().as_str(),
        signed_at,
        certified_from: None,
        scheme: Some(verified.scheme().as_str()),
    }
}
