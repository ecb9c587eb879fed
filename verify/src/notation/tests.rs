//! Notary Project envelopes from the test kit's signer (pullgate_tests::notation), judged here.

use jiff::Timestamp;
use pullgate_tests::{
    notation::{
        descriptor, DnType, ExtendedKeyUsagePurpose, Format, KeyKind, LeafRequest, NotationCa, NotationSigner,
        SignRequest, LEAF_IDENTITY,
    },
    sigstore::{unix_now, Tsa},
};

use super::*;
use crate::reference::Digest;

const DAY: i64 = 86_400;

fn digest() -> Digest {
    Digest::of(b"an image manifest")
}

fn target() -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest(),
        size: 17,
    }
}

fn request() -> SignRequest {
    SignRequest::new(descriptor(digest().as_str(), 17))
}

fn trust(ca: &NotationCa, identity: &str) -> NotationTrust {
    NotationTrust {
        trust_store: vec![ca.root_der().to_vec()],
        identities: TrustedIdentities::parse(&[identity]).expect("a valid identity"),
        tsa_roots: Vec::new(),
        verify_timestamp: VerifyTimestamp::default(),
    }
}

fn media_type(format: Format) -> &'static str {
    match format {
        Format::Jws => JWS_MEDIA_TYPE,
        Format::Cose => COSE_MEDIA_TYPE,
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(unix_now()).unwrap()
}

fn verify(format: Format, envelope: &[u8], trust: &NotationTrust) -> Result<NotationVerified, NotationRefusal> {
    verify_envelope(envelope, media_type(format), &target(), trust, now())
}

fn sign(signer: &NotationSigner, format: Format, request: &SignRequest) -> Vec<u8> {
    signer.sign(format, request, None)
}

const FORMATS: [Format; 2] = [Format::Jws, Format::Cose];

#[test]
fn good_signatures_of_every_algorithm_verify_in_both_envelopes() {
    // Each leaf under a CA of its own kind (the CA signs with PKCS #1 v1.5 or ECDSA), and an
    // RSA 4096 leaf under an EC CA, sparing three 4096-bit key generations.
    let p384 = NotationCa::generate(KeyKind::EcP384);
    for (kind, ca) in [
        (KeyKind::Rsa2048, NotationCa::generate(KeyKind::Rsa2048)),
        (KeyKind::Rsa3072, NotationCa::generate(KeyKind::Rsa3072)),
        (KeyKind::Rsa4096, p384),
        (KeyKind::EcP256, NotationCa::generate(KeyKind::EcP256)),
        (KeyKind::EcP384, NotationCa::generate(KeyKind::EcP384)),
        (KeyKind::EcP521, NotationCa::generate(KeyKind::EcP521)),
    ] {
        let signer = ca.signer(kind);
        for format in FORMATS {
            let envelope = sign(&signer, format, &request());
            let verified = verify(format, &envelope, &trust(&ca, LEAF_IDENTITY))
                .unwrap_or_else(|e| panic!("{kind:?} {format:?}: {e}"));
            assert_eq!(
                verified.subject(),
                "C=US, ST=WA, L=Seattle, O=pullgate.test, CN=notation signer"
            );
            assert_eq!(verified.scheme(), SigningScheme::X509);
            assert_eq!(verified.time_source(), TimeSource::Now);
        }
    }
}

#[test]
fn a_chain_to_another_ca_is_untrusted() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let other = NotationCa::generate(KeyKind::EcP256);
    let signer = other.signer(KeyKind::EcP256);
    for format in FORMATS {
        let envelope = sign(&signer, format, &request());
        assert!(
            matches!(
                verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
                Err(NotationRefusal::Untrusted(_))
            ),
            "{format:?}"
        );
    }
}

#[test]
fn the_intermediate_as_trust_store_is_enough() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let mut trust = trust(&ca, "*");
    trust.trust_store = vec![ca.intermediate_der().to_vec()];
    for format in FORMATS {
        verify(format, &sign(&signer, format, &request()), &trust).unwrap();
    }
}

#[test]
fn identities_match_subject_attributes_in_any_order() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let envelope = sign(&signer, Format::Jws, &request());
    for identity in [
        "*",
        "x509.subject: O=pullgate.test, ST=WA, C=US",
        "x509.subject: CN=notation signer, C=US, S=WA, O=pullgate.test",
        LEAF_IDENTITY,
    ] {
        assert!(
            verify(Format::Jws, &envelope, &trust(&ca, identity)).is_ok(),
            "{identity}"
        );
    }
    for identity in [
        "x509.subject: C=US, ST=WA, O=pullgate.test, CN=someone else",
        "x509.subject: C=US, ST=WA, O=pullgate.test, OU=absent",
        "x509.subject: C=DE, ST=WA, O=pullgate.test",
    ] {
        assert_eq!(
            verify(Format::Jws, &envelope, &trust(&ca, identity)),
            Err(NotationRefusal::Identity {
                subject: "C=US, ST=WA, L=Seattle, O=pullgate.test, CN=notation signer".into()
            }),
            "{identity}"
        );
    }
}

#[test]
fn a_signature_for_another_digest_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP384);
    let signer = ca.signer(KeyKind::EcP384);
    let other = Digest::of(b"another manifest");
    for format in FORMATS {
        let envelope = sign(&signer, format, &SignRequest::new(descriptor(other.as_str(), 17)));
        let refusal = verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)).unwrap_err();
        assert!(
            matches!(&refusal, NotationRefusal::OtherArtifact { signed } if signed.contains(other.as_str())),
            "{format:?}: {refusal}"
        );
        // The same digest with another size or media type is another artifact too.
        let mut sized = descriptor(digest().as_str(), 18);
        let envelope = sign(&signer, format, &SignRequest::new(sized.clone()));
        assert!(matches!(
            verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
            Err(NotationRefusal::OtherArtifact { .. })
        ));
        sized["size"] = 17.into();
        sized["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
        let envelope = sign(&signer, format, &SignRequest::new(sized));
        assert!(matches!(
            verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
            Err(NotationRefusal::OtherArtifact { .. })
        ));
    }
}

#[test]
fn a_payload_swapped_after_signing_is_refused() {
    let ca = NotationCa::generate(KeyKind::Rsa2048);
    let signer = ca.signer(KeyKind::Rsa2048);
    for format in FORMATS {
        let mut request = SignRequest::new(descriptor(Digest::of(b"what was signed").as_str(), 17));
        request.substitute_payload = Some(
            serde_json::to_vec(&serde_json::json!({ "targetArtifact": descriptor(digest().as_str(), 17) })).unwrap(),
        );
        let envelope = sign(&signer, format, &request);
        assert_eq!(
            verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
            Err(NotationRefusal::BadSignature),
            "{format:?}"
        );
    }
}

#[test]
fn an_expired_signature_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    for format in FORMATS {
        let mut request = request();
        request.expiry = Some(unix_now() - 60);
        let envelope = sign(&signer, format, &request);
        assert!(
            matches!(
                verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
                Err(NotationRefusal::Expired(_))
            ),
            "{format:?}"
        );
        request.expiry = Some(unix_now() + DAY);
        verify(format, &sign(&signer, format, &request), &trust(&ca, LEAF_IDENTITY)).unwrap();
    }
}

/// A leaf that expired two days ago, used five days ago.
fn expired_signer(ca: &NotationCa) -> NotationSigner {
    let mut leaf = LeafRequest::new(KeyKind::EcP256);
    leaf.not_before = unix_now() - 10 * DAY;
    leaf.not_after = unix_now() - 2 * DAY;
    ca.issue(&leaf)
}

#[test]
fn a_certificate_expired_by_now_is_refused_without_a_countersignature() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = expired_signer(&ca);
    for format in FORMATS {
        let mut request = request();
        // The signer's own claim of a signing time inside the validity counts for nothing.
        request.signing_time = unix_now() - 5 * DAY;
        let envelope = sign(&signer, format, &request);
        let refusal = verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)).unwrap_err();
        assert!(
            matches!(refusal, NotationRefusal::NotValid { .. }),
            "{format:?}: {refusal}"
        );
    }
}

#[test]
fn a_countersignature_inside_the_validity_admits_an_expired_certificate() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let tsa = Tsa::generate_notary(false);
    let signer = expired_signer(&ca);
    let mut trust = trust(&ca, LEAF_IDENTITY);
    trust.tsa_roots = vec![tsa.root_der().to_vec()];
    let stamped = unix_now() - 5 * DAY;
    for format in FORMATS {
        let mut request = request();
        request.signing_time = stamped;
        request.timestamp_at = Some(stamped);
        let envelope = signer.sign(format, &request, Some(&tsa));
        let verified = verify(format, &envelope, &trust).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(
            verified.time_source(),
            TimeSource::Timestamp {
                at: Timestamp::from_second(stamped).unwrap()
            }
        );
        assert_eq!(verified.time_source().as_str(), "tsa");

        // Stamped after the certificate expired: the stamp proves nothing in its favour.
        request.timestamp_at = Some(unix_now() - DAY);
        let envelope = signer.sign(format, &request, Some(&tsa));
        assert!(matches!(
            verify(format, &envelope, &trust),
            Err(NotationRefusal::NotValid { .. })
        ));

        // A TSA the authority does not trust.
        request.timestamp_at = Some(unix_now() - 5 * DAY);
        let envelope = signer.sign(format, &request, Some(&Tsa::generate_notary(false)));
        assert!(matches!(
            verify(format, &envelope, &trust),
            Err(NotationRefusal::Timestamp(_))
        ));
    }
}

#[test]
fn with_tsa_roots_when_a_countersignature_is_required_and_verified() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let tsa = Tsa::generate_notary(false);
    let signer = ca.signer(KeyKind::EcP256);
    let mut trust = trust(&ca, LEAF_IDENTITY);
    trust.tsa_roots = vec![tsa.root_der().to_vec()];
    let envelope = sign(&signer, Format::Cose, &request());
    trust.verify_timestamp = VerifyTimestamp::Always;
    assert!(matches!(
        verify(Format::Cose, &envelope, &trust),
        Err(NotationRefusal::Timestamp(_))
    ));
    for when in [VerifyTimestamp::WhenPresent, VerifyTimestamp::AfterCertExpiry] {
        trust.verify_timestamp = when;
        assert_eq!(
            verify(Format::Cose, &envelope, &trust).unwrap().time_source(),
            TimeSource::Now
        );
    }
    // A countersignature that does not verify refuses the signature whenever it is looked at.
    let mut stamped = request();
    stamped.timestamp_at = Some(unix_now());
    let envelope = signer.sign(Format::Cose, &stamped, Some(&Tsa::generate_notary(false)));
    for when in [VerifyTimestamp::WhenPresent, VerifyTimestamp::Always] {
        trust.verify_timestamp = when;
        assert!(matches!(
            verify(Format::Cose, &envelope, &trust),
            Err(NotationRefusal::Timestamp(_))
        ));
    }
    trust.verify_timestamp = VerifyTimestamp::AfterCertExpiry;
    assert_eq!(
        verify(Format::Cose, &envelope, &trust).unwrap().time_source(),
        TimeSource::Now
    );
}

#[test]
fn a_signing_authority_signature_needs_a_trusted_countersignature() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let tsa = Tsa::generate_notary(false);
    let signer = ca.signer(KeyKind::EcP256);
    let mut trust = trust(&ca, LEAF_IDENTITY);
    for format in FORMATS {
        let mut request = request();
        request.scheme = "notary.x509.signingAuthority".into();
        let envelope = sign(&signer, format, &request);
        assert!(matches!(
            verify(format, &envelope, &trust),
            Err(NotationRefusal::Timestamp(_))
        ));
        request.timestamp_at = Some(unix_now());
        let envelope = signer.sign(format, &request, Some(&tsa));
        assert!(matches!(
            verify(format, &envelope, &trust),
            Err(NotationRefusal::Timestamp(_))
        ));
        trust.tsa_roots = vec![tsa.root_der().to_vec()];
        let verified = verify(format, &envelope, &trust).unwrap();
        assert_eq!(verified.scheme(), SigningScheme::X509SigningAuthority);
        trust.tsa_roots.clear();
    }
}

#[test]
fn a_leaf_without_code_signing_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    for purposes in [
        vec![],
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        vec![
            ExtendedKeyUsagePurpose::CodeSigning,
            ExtendedKeyUsagePurpose::TimeStamping,
        ],
    ] {
        let mut leaf = LeafRequest::new(KeyKind::EcP256);
        leaf.extended_key_usages = purposes.clone();
        let signer = ca.issue(&leaf);
        for format in FORMATS {
            let envelope = sign(&signer, format, &request());
            let refusal = verify(format, &envelope, &trust(&ca, "*")).unwrap_err();
            assert!(
                matches!(refusal, NotationRefusal::Certificate(_)),
                "{purposes:?} {format:?}: {refusal}"
            );
        }
    }
}

#[test]
fn an_unknown_critical_header_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    for format in FORMATS {
        let mut request = request();
        request.unknown_critical = Some("io.cncf.notary.verificationPlugin".into());
        let envelope = sign(&signer, format, &request);
        assert_eq!(
            verify(format, &envelope, &trust(&ca, LEAF_IDENTITY)),
            Err(NotationRefusal::UnknownCritical(
                "io.cncf.notary.verificationPlugin".into()
            )),
            "{format:?}"
        );
    }
}

#[test]
fn an_envelope_of_the_other_media_type_or_unknown_type_is_malformed() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let jws = sign(&signer, Format::Jws, &request());
    let cose = sign(&signer, Format::Cose, &request());
    let trust = trust(&ca, LEAF_IDENTITY);
    assert!(matches!(
        verify_envelope(&jws, COSE_MEDIA_TYPE, &target(), &trust, now()),
        Err(NotationRefusal::Malformed(_))
    ));
    assert!(matches!(
        verify_envelope(&cose, JWS_MEDIA_TYPE, &target(), &trust, now()),
        Err(NotationRefusal::Malformed(_))
    ));
    assert!(matches!(
        verify_envelope(&cose, "application/octet-stream", &target(), &trust, now()),
        Err(NotationRefusal::MediaType(_))
    ));
    // Trailing bytes after a COSE_Sign1 are not ignored.
    let mut longer = cose.clone();
    longer.push(0);
    assert!(matches!(
        verify(Format::Cose, &longer, &trust),
        Err(NotationRefusal::Malformed(_))
    ));
}

#[test]
fn a_chain_with_the_wrong_subject_key_for_the_alg_is_refused() {
    // An ES256 envelope whose leaf holds a P-384 key: algorithm substitution.
    let ca = NotationCa::generate(KeyKind::EcP256);
    let p384 = ca.signer(KeyKind::EcP384);
    let jws = sign(&p384, Format::Jws, &request());
    let mut value: serde_json::Value = serde_json::from_slice(&jws).unwrap();
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut protected: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value["protected"].as_str().unwrap()).unwrap()).unwrap();
    protected["alg"] = "ES256".into();
    value["protected"] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap()).into();
    let refusal = verify(Format::Jws, &serde_json::to_vec(&value).unwrap(), &trust(&ca, "*")).unwrap_err();
    assert!(matches!(refusal, NotationRefusal::Algorithm(_)), "{refusal}");
}

#[test]
fn trusted_identities_are_checked_as_the_specification_defines() {
    use IdentityError::*;
    assert_eq!(TrustedIdentities::parse(&["*"]), Ok(TrustedIdentities::Any));
    assert_eq!(TrustedIdentities::parse::<&str>(&[]), Err(Empty));
    assert_eq!(TrustedIdentities::parse(&["*", LEAF_IDENTITY]), Err(StarWithOthers));
    assert!(matches!(
        TrustedIdentities::parse(&["C=US, ST=WA, O=x"]),
        Err(Prefix(_))
    ));
    assert!(matches!(
        TrustedIdentities::parse(&["x509.subject: C=US, O=x"]),
        Err(Missing { attribute: "ST", .. })
    ));
    assert!(matches!(
        TrustedIdentities::parse(&["x509.subject: C=US, ST=WA, O=x, O=y"]),
        Err(Syntax { .. })
    ));
    assert!(matches!(
        TrustedIdentities::parse(&["x509.subject: C=US, ST=WA, O=a;b"]),
        Err(Syntax { .. })
    ));
    // Overlapping: some certificate (OU=org1) would match both.
    assert!(matches!(
        TrustedIdentities::parse(&[
            "x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org1",
            "x509.subject: C=US, ST=WA, O=wabbit-network.io",
        ]),
        Err(Overlap(..))
    ));
    assert!(TrustedIdentities::parse(&[
        "x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org1",
        "x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org2",
    ])
    .is_ok());
}

#[test]
fn escaped_characters_in_identities_match_the_certificate_value() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let mut leaf = LeafRequest::new(KeyKind::EcP256);
    leaf.subject = vec![
        (DnType::CountryName, "US".into()),
        (DnType::StateOrProvinceName, "WA".into()),
        (DnType::OrganizationName, "Acme, Inc; \\ Rockets ".into()),
    ];
    let signer = ca.issue(&leaf);
    let envelope = sign(&signer, Format::Cose, &request());
    let identity = r"x509.subject: C=US, ST=WA, O=Acme\, Inc\; \\ Rockets\ ";
    let verified = verify(Format::Cose, &envelope, &trust(&ca, identity)).unwrap();
    // The evidence writes the subject the way an identity would.
    assert_eq!(verified.subject(), r"C=US, ST=WA, O=Acme\, Inc\; \\ Rockets\ ");
    let unescaped = "x509.subject: C=US, ST=WA, O=Acme Inc Rockets";
    assert!(matches!(
        verify(Format::Cose, &envelope, &trust(&ca, unescaped)),
        Err(NotationRefusal::Identity { .. })
    ));
}

#[test]
fn truncated_or_corrupted_envelopes_are_refused_without_panicking() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let trust = trust(&ca, LEAF_IDENTITY);
    for format in FORMATS {
        let envelope = sign(&signer, format, &request());
        for len in 0..envelope.len() {
            assert!(
                verify(format, &envelope[..len], &trust).is_err(),
                "{format:?} cut at {len}"
            );
        }
        // A flipped bit anywhere is refused or harmless (the unsigned signing agent); never a panic.
        for at in 0..envelope.len() {
            let mut flipped = envelope.clone();
            flipped[at] ^= 0x01;
            let _ = verify(format, &flipped, &trust);
        }
    }
}

/// `envelope` (JWS) with its x5c replaced by `chain`.
fn with_x5c(envelope: &[u8], chain: &[&Vec<u8>]) -> Vec<u8> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let mut value: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    value["header"]["x5c"] = chain.iter().map(|c| STANDARD.encode(c)).collect();
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn the_chain_must_be_ordered_and_end_with_a_root() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let envelope = sign(&signer, Format::Jws, &request());
    let [leaf, intermediate, root] = signer.chain() else {
        panic!("a chain of three")
    };
    let trust = trust(&ca, LEAF_IDENTITY);
    verify(Format::Jws, &with_x5c(&envelope, &[leaf, intermediate, root]), &trust).unwrap();
    for chain in [
        vec![leaf, intermediate],
        vec![leaf, root, intermediate],
        vec![leaf, root],
    ] {
        let refusal = verify(Format::Jws, &with_x5c(&envelope, &chain), &trust).unwrap_err();
        assert!(matches!(refusal, NotationRefusal::Certificate(_)), "{refusal}");
    }
}

#[test]
fn a_countersignature_from_an_rsa_tsa_counts_but_not_one_without_the_notary_tsa_requirements() {
    let ca = NotationCa::generate(KeyKind::Rsa2048);
    let signer = expired_signer(&ca);
    let stamped = unix_now() - 5 * DAY;
    let mut request = request();
    request.timestamp_at = Some(stamped);
    for format in FORMATS {
        let tsa = Tsa::generate_notary(true);
        let mut trust = trust(&ca, LEAF_IDENTITY);
        trust.tsa_roots = vec![tsa.root_der().to_vec()];
        let envelope = signer.sign(format, &request, Some(&tsa));
        let verified = verify(format, &envelope, &trust).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(verified.time_source().as_str(), "tsa");

        // Without signing-certificate-v2 the token does not say which certificate signed it.
        let tsa = Tsa::generate_notary(true).without_signing_certificate();
        trust.tsa_roots = vec![tsa.root_der().to_vec()];
        let envelope = signer.sign(format, &request, Some(&tsa));
        let refusal = verify(format, &envelope, &trust).unwrap_err();
        assert!(
            matches!(refusal, NotationRefusal::Timestamp(ref why) if why.contains("signing-certificate-v2")),
            "{refusal}"
        );

        // The cosign path's TSA: its EKU is not critical, which RFC 3161 and Notation require.
        let tsa = Tsa::generate();
        trust.tsa_roots = vec![tsa.root_der().to_vec()];
        let envelope = signer.sign(format, &request, Some(&tsa));
        let refusal = verify(format, &envelope, &trust).unwrap_err();
        assert!(
            matches!(refusal, NotationRefusal::Timestamp(ref why) if why.contains("critical")),
            "{refusal}"
        );
    }
}

/// `envelope` (JWS) with its protected header edited by `edit`; the signature no longer
/// matches, so what is refused must be refused before it is checked.
fn with_protected(envelope: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut value: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let mut protected: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value["protected"].as_str().unwrap()).unwrap()).unwrap();
    edit(&mut protected);
    value["protected"] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap()).into();
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn signed_attributes_follow_the_signing_scheme_rules() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let mut expiring = request();
    expiring.expiry = Some(unix_now() + DAY);
    let envelope = sign(&signer, Format::Jws, &expiring);
    let trust = trust(&ca, LEAF_IDENTITY);
    let refusal = |edit: fn(&mut serde_json::Value)| verify(Format::Jws, &with_protected(&envelope, edit), &trust);
    assert!(matches!(
        refusal(|h| drop(h.as_object_mut().unwrap().remove("io.cncf.notary.signingTime"))),
        Err(NotationRefusal::Malformed(_))
    ));
    assert!(matches!(
        refusal(|h| {
            h["io.cncf.notary.authenticSigningTime"] = "2026-01-01T00:00:00Z".into();
            h["crit"]
                .as_array_mut()
                .unwrap()
                .push("io.cncf.notary.authenticSigningTime".into());
        }),
        Err(NotationRefusal::Malformed(_))
    ));
    assert_eq!(
        refusal(|h| h["crit"] = serde_json::json!(["io.cncf.notary.signingScheme"])),
        Err(NotationRefusal::NotCritical("io.cncf.notary.expiry"))
    );
    assert!(matches!(
        refusal(|h| drop(h.as_object_mut().unwrap().remove("crit"))),
        Err(NotationRefusal::Malformed(_))
    ));
    assert!(matches!(
        refusal(|h| h["cty"] = "application/json".into()),
        Err(NotationRefusal::ContentType(_))
    ));
    assert!(matches!(
        refusal(|h| h["io.cncf.notary.signingScheme"] = "notary.tuf".into()),
        Err(NotationRefusal::Scheme(_))
    ));
    assert!(matches!(
        refusal(|h| h["alg"] = "HS256".into()),
        Err(NotationRefusal::Algorithm(_))
    ));
    // Untouched, it verifies: the edits above are what was refused.
    verify(Format::Jws, &envelope, &trust).unwrap();
}

/// A COSE_Sign1 whose protected header is `protected` (a CBOR map, encoded by `header`) and
/// whose unprotected header holds `chain` as x5chain; signed by no one.
fn cose_with(tagged: bool, header: impl FnOnce(&mut minicbor::Encoder<Vec<u8>>), chain: &[Vec<u8>]) -> Vec<u8> {
    let mut protected = minicbor::Encoder::new(Vec::new());
    header(&mut protected);
    let mut e = minicbor::Encoder::new(Vec::new());
    if tagged {
        e.tag(minicbor::data::Tag::new(18)).unwrap();
    }
    e.array(4).unwrap().bytes(&protected.into_writer()).unwrap();
    e.map(1).unwrap().i64(33).unwrap().array(chain.len() as u64).unwrap();
    for c in chain {
        e.bytes(c).unwrap();
    }
    e.bytes(b"{}").unwrap().bytes(&[0; 64]).unwrap();
    e.into_writer()
}

fn good_header(e: &mut minicbor::Encoder<Vec<u8>>) {
    e.map(5).unwrap();
    e.i64(1).unwrap().i64(-7).unwrap();
    e.i64(2)
        .unwrap()
        .array(1)
        .unwrap()
        .str("io.cncf.notary.signingScheme")
        .unwrap();
    e.i64(3)
        .unwrap()
        .str(pullgate_tests::notation::PAYLOAD_MEDIA_TYPE)
        .unwrap();
    e.str("io.cncf.notary.signingScheme")
        .unwrap()
        .str("notary.x509")
        .unwrap();
    e.str("io.cncf.notary.signingTime").unwrap();
    e.tag(minicbor::data::Tag::new(1)).unwrap().i64(unix_now()).unwrap();
}

#[test]
fn cose_structure_is_read_strictly() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let chain = signer.chain();
    let trust = trust(&ca, LEAF_IDENTITY);
    let refused = |envelope: Vec<u8>| verify(Format::Cose, &envelope, &trust).unwrap_err();
    // The well-formed one gets as far as the (absent) signature.
    assert_eq!(
        refused(cose_with(true, good_header, chain)),
        NotationRefusal::BadSignature
    );
    let malformed = |refusal: NotationRefusal, what: &str| {
        assert!(
            matches!(&refusal, NotationRefusal::Malformed(why) if why.contains(what)),
            "{what}: {refusal}"
        )
    };
    malformed(refused(cose_with(false, good_header, chain)), "expected tag");
    malformed(
        refused(cose_with(
            true,
            |e| {
                good_header(e);
                // A sixth entry the map did not announce: bytes after the header.
                e.i64(1).unwrap().i64(-35).unwrap();
            },
            chain,
        )),
        "after the protected header",
    );
    malformed(
        refused(cose_with(
            true,
            |e| {
                e.map(6).unwrap();
                e.i64(1).unwrap().i64(-35).unwrap();
                let mut rest = minicbor::Encoder::new(Vec::new());
                good_header(&mut rest);
                // good_header's entries (after its map head), alg among them: alg twice.
                e.writer_mut().extend_from_slice(&rest.into_writer()[1..]);
            },
            chain,
        )),
        "twice",
    );
    malformed(refused(cose_with(true, good_header, &[])), "x5chain");
    malformed(
        refused(cose_with(
            true,
            |e| {
                e.begin_map().unwrap();
                e.i64(1).unwrap().i64(-7).unwrap();
                e.end().unwrap();
            },
            chain,
        )),
        "indefinite",
    );
}

#[test]
fn a_self_signed_signing_certificate_in_the_trust_store_verifies() {
    // What `notation cert generate-test` makes and adds to its trust store.
    let signer = NotationSigner::self_signed(&LeafRequest::new(KeyKind::Rsa2048));
    let mut trust = NotationTrust {
        trust_store: vec![signer.chain()[0].clone()],
        identities: TrustedIdentities::Any,
        tsa_roots: Vec::new(),
        verify_timestamp: VerifyTimestamp::default(),
    };
    for format in FORMATS {
        verify(format, &sign(&signer, format, &request()), &trust).unwrap_or_else(|e| panic!("{format:?}: {e}"));
    }
    // Another self-signed certificate with the same subject is not it.
    let other = NotationSigner::self_signed(&LeafRequest::new(KeyKind::Rsa2048));
    trust.trust_store = vec![other.chain()[0].clone()];
    assert!(matches!(
        verify(Format::Jws, &sign(&signer, Format::Jws, &request()), &trust),
        Err(NotationRefusal::Untrusted(_))
    ));
}
