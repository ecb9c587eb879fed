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
        valid_until: verified.valid_until().map(Timestamp::as_second),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pullgate_tests::notation::{descriptor, Format, KeyKind, NotationCa, SignRequest, LEAF_IDENTITY};

    use super::*;
    use crate::{
        attached::Referrers,
        notation::{Descriptor, NotationTrust, TrustedIdentities, VerifyTimestamp, COSE_MEDIA_TYPE, JWS_MEDIA_TYPE},
        reference::{Digest, Reference},
        verify_image, Tlog,
    };

    fn image() -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(b"the image manifest"),
            size: 18,
        }
    }

    fn authority(name: &str, ca: &NotationCa, identity: &str) -> Authority {
        Authority {
            name: name.into(),
            kind: AuthorityKind::Notation(Arc::new(NotationTrust {
                trust_store: vec![ca.root_der().to_vec()],
                identities: TrustedIdentities::parse(&[identity]).unwrap(),
                tsa_roots: Vec::new(),
                verify_timestamp: VerifyTimestamp::default(),
            })),
            tlog: Tlog::Ignore,
        }
    }

    fn key_authority() -> Authority {
        let signer = pullgate_tests::signer::Signer::generate();
        Authority {
            name: "release-key".into(),
            kind: AuthorityKind::Key(Arc::new(crate::PublicKey::from_pem(&signer.public_key_pem()).unwrap())),
            tlog: Tlog::Optional,
        }
    }

    fn attached(envelopes: Vec<(Format, Vec<u8>)>) -> Attached {
        let notation = envelopes
            .into_iter()
            .map(|(format, bytes)| NotationEnvelope {
                manifest: Digest::of(&bytes),
                media_type: match format {
                    Format::Jws => JWS_MEDIA_TYPE,
                    Format::Cose => COSE_MEDIA_TYPE,
                }
                .into(),
                bytes,
            })
            .collect();
        Attached {
            referrers: Referrers {
                notation,
                ..Referrers::default()
            },
            image: Some(image()),
            ..Attached::default()
        }
    }

    fn verify(attached: &Attached, authorities: &[Authority]) -> Result<crate::Verified, crate::Unverified> {
        let reference = Reference::parse(&format!("registry.example.com/app@{}", image().digest)).unwrap();
        verify_image(&reference, &image().digest, attached, authorities, None)
    }

    #[test]
    fn a_notation_signature_satisfies_a_rule_mixing_it_with_a_key() {
        let ca = NotationCa::generate(KeyKind::EcP256);
        let signer = ca.signer(KeyKind::EcP256);
        let request = SignRequest::new(descriptor(image().digest.as_str(), image().size));
        let authorities = [key_authority(), authority("notary", &ca, LEAF_IDENTITY)];
        for format in [Format::Jws, Format::Cose] {
            let found = attached(vec![(format, signer.sign(format, &request, None))]);
            let verified = verify(&found, &authorities).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            let [evidence] = verified.evidence() else {
                panic!("{:?}", verified.evidence());
            };
            assert_eq!((evidence.authority.as_str(), evidence.kind), ("notary", "notation"));
            assert_eq!(evidence.scheme, Some("notary.x509"));
            assert_eq!(evidence.time_source, "now");
            assert_eq!(
                evidence.subject.as_deref(),
                Some("C=US, ST=WA, L=Seattle, O=pullgate.test, CN=notation signer")
            );
        }
    }

    #[test]
    fn refused_envelopes_are_counted_in_the_denial() {
        let ca = NotationCa::generate(KeyKind::EcP256);
        let other = NotationCa::generate(KeyKind::EcP256);
        let request = SignRequest::new(descriptor(image().digest.as_str(), image().size));
        let elsewhere = SignRequest::new(descriptor(Digest::of(b"another").as_str(), 7));
        let found = attached(vec![
            (
                Format::Jws,
                other.signer(KeyKind::EcP256).sign(Format::Jws, &request, None),
            ),
            (
                Format::Cose,
                ca.signer(KeyKind::EcP256).sign(Format::Cose, &elsewhere, None),
            ),
        ]);
        let unverified = verify(&found, &[authority("notary", &ca, LEAF_IDENTITY)]).unwrap_err();
        assert_eq!(
            unverified.to_string(),
            "no signature from authority \"notary\" (2 signatures found: \
             1 notation signs another artifact, 1 notation untrusted chain)"
        );
        // Without the image's descriptor no Notation signature can count.
        let good = ca.signer(KeyKind::EcP256).sign(Format::Jws, &request, None);
        let mut blind = attached(vec![(Format::Jws, good)]);
        blind.image = None;
        assert!(verify(&blind, &[authority("notary", &ca, LEAF_IDENTITY)]).is_err());
        // A rule of key authorities alone does not look at Notation signatures.
        let keyed = verify(&attached(vec![]), &[key_authority()]).unwrap_err();
        assert!(keyed.rejections.is_empty(), "{keyed}");
    }
}
