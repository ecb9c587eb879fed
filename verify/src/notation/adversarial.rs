//! A reviewer's attempts to get a wrong signature accepted: chains that lean on what the trust
//! store holds, countersignatures moved between envelopes, targets that differ in one field,
//! and hostile CBOR. Each one must be refused, or, where the bytes an attacker changed are
//! unsigned and harmless, must not change the verdict.

use pullgate_tests::{
    notation::{descriptor, Format, KeyKind, LeafRequest, NotationCa, NotationSigner, SignRequest, LEAF_IDENTITY},
    sigstore::{unix_now, Tsa},
};
use serde_json::{json, Value};

use super::*;
use crate::reference::Digest;

const DAY: i64 = 86_400;
const FORMATS: [Format; 2] = [Format::Jws, Format::Cose];

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

fn media_type(format: Format) -> &'static str {
    match format {
        Format::Jws => JWS_MEDIA_TYPE,
        Format::Cose => COSE_MEDIA_TYPE,
    }
}

fn store(certificates: Vec<Vec<u8>>, identities: TrustedIdentities) -> NotationTrust {
    NotationTrust {
        trust_store: certificates,
        identities,
        tsa_roots: Vec::new(),
        verify_timestamp: VerifyTimestamp::default(),
    }
}

fn verify(format: Format, envelope: &[u8], trust: &NotationTrust) -> Result<NotationVerified, NotationRefusal> {
    let now = Timestamp::from_second(unix_now()).unwrap();
    verify_envelope(envelope, media_type(format), &target(), trust, now)
}

#[test]
fn a_self_signed_leaf_in_the_trust_store_does_not_vouch_for_leaves_its_key_signs() {
    // The holder of a trusted `generate-test` certificate mints one for another subject.
    let mut other = LeafRequest::new(KeyKind::EcP256);
    other.subject[4].1 = "someone else".into();
    let (trusted, minted) = NotationSigner::self_signed_issuing(&LeafRequest::new(KeyKind::EcP256), &other);
    let trust = store(vec![trusted.chain()[0].clone()], TrustedIdentities::Any);
    for format in FORMATS {
        verify(format, &trusted.sign(format, &request(), None), &trust).unwrap();
        let refusal = verify(format, &minted.sign(format, &request(), None), &trust).unwrap_err();
        assert!(
            matches!(refusal, NotationRefusal::Certificate(_)),
            "{format:?}: {refusal}"
        );
    }
}

#[test]
fn a_ca_issued_leaf_in_the_trust_store_is_no_anchor_for_itself() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let trust = store(vec![signer.chain()[0].clone()], TrustedIdentities::Any);
    for format in FORMATS {
        let refusal = verify(format, &signer.sign(format, &request(), None), &trust).unwrap_err();
        assert!(
            matches!(refusal, NotationRefusal::Untrusted(_)),
            "{format:?}: {refusal}"
        );
    }
}

#[test]
fn a_countersignature_lifted_from_another_signature_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let tsa = Tsa::generate_notary(false);
    let mut trust = store(
        vec![ca.root_der().to_vec()],
        TrustedIdentities::parse(&[LEAF_IDENTITY]).unwrap(),
    );
    trust.tsa_roots = vec![tsa.root_der().to_vec()];
    // A signature stamped while its certificate was valid...
    let mut old = LeafRequest::new(KeyKind::EcP256);
    old.not_before = unix_now() - 30 * DAY;
    old.not_after = unix_now() - 2 * DAY;
    let expired = ca.issue(&old);
    let mut stamped = request();
    stamped.signing_time = unix_now() - 5 * DAY;
    stamped.timestamp_at = Some(unix_now() - 5 * DAY);
    let genuine: Value = serde_json::from_slice(&expired.sign(Format::Jws, &stamped, Some(&tsa))).unwrap();
    // ...lends its token to a new one, backdated, made with the expired certificate's key.
    let mut forged = request();
    forged.signing_time = unix_now() - 5 * DAY;
    forged.descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest().as_str(),
        "size": 17,
        "annotations": {"made": "later"},
    });
    let mut envelope: Value = serde_json::from_slice(&expired.sign(Format::Jws, &forged, None)).unwrap();
    envelope["header"]["io.cncf.notary.timestampSignature"] =
        genuine["header"]["io.cncf.notary.timestampSignature"].clone();
    let refusal = verify(Format::Jws, &serde_json::to_vec(&envelope).unwrap(), &trust).unwrap_err();
    assert!(
        matches!(&refusal, NotationRefusal::Timestamp(why) if why.contains("another signature")),
        "{refusal}"
    );
}

#[test]
fn a_target_that_differs_in_any_field_is_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let trust = store(
        vec![ca.root_der().to_vec()],
        TrustedIdentities::parse(&[LEAF_IDENTITY]).unwrap(),
    );
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    let hex = digest().as_str().trim_start_matches("sha256:").to_string();
    for descriptor in [
        // The index that lists the manifest, or the manifest under the index's media type.
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest().as_str(), "size": 17}),
        json!({"mediaType": manifest, "digest": format!("sha256:{}", hex.to_uppercase()), "size": 17}),
        json!({"mediaType": manifest, "digest": format!("SHA256:{hex}"), "size": 17}),
        json!({"mediaType": manifest, "digest": format!("sha256:{hex} "), "size": 17}),
        json!({"mediaType": manifest, "digest": digest().as_str(), "size": 18}),
        json!({"mediaType": manifest, "digest": digest().as_str(), "size": "17"}),
        json!({"mediaType": manifest, "digest": digest().as_str()}),
    ] {
        let mut request = request();
        request.descriptor = descriptor.clone();
        for format in FORMATS {
            let refusal = verify(format, &signer.sign(format, &request, None), &trust).unwrap_err();
            assert!(
                matches!(
                    refusal,
                    NotationRefusal::OtherArtifact { .. } | NotationRefusal::Malformed(_)
                ),
                "{format:?} {descriptor}: {refusal}"
            );
        }
    }
}

/// The parts of a COSE envelope: protected header, payload, signature.
fn cose_parts(envelope: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut d = minicbor::Decoder::new(envelope);
    d.tag().unwrap();
    d.array().unwrap();
    let protected = d.bytes().unwrap().to_vec();
    d.skip().unwrap();
    let payload = d.bytes().unwrap().to_vec();
    let signature = d.bytes().unwrap().to_vec();
    (protected, payload, signature)
}

#[test]
fn hostile_cbor_in_the_unsigned_header_costs_no_stack_or_memory() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let trust = store(
        vec![ca.root_der().to_vec()],
        TrustedIdentities::parse(&[LEAF_IDENTITY]).unwrap(),
    );
    let (protected, payload, signature) = cose_parts(&signer.sign(Format::Cose, &request(), None));
    let envelope = |unprotected: &dyn Fn(&mut minicbor::Encoder<Vec<u8>>)| {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.tag(minicbor::data::Tag::new(18)).unwrap().array(4).unwrap();
        e.bytes(&protected).unwrap();
        unprotected(&mut e);
        e.bytes(&payload).unwrap().bytes(&signature).unwrap();
        e.into_writer()
    };
    let chain = |e: &mut minicbor::Encoder<Vec<u8>>| {
        e.i64(33).unwrap().array(3).unwrap();
        for c in signer.chain() {
            e.bytes(c).unwrap();
        }
    };
    // A million nested arrays under an unknown label: skipped without recursion. The header
    // is unsigned, so the signature still verifies.
    let deep = envelope(&|e| {
        e.map(2).unwrap();
        chain(e);
        e.str("x").unwrap();
        let mut nested = vec![0x81u8; 1_000_000];
        nested.push(0x00);
        e.writer_mut().extend_from_slice(&nested);
    });
    verify(Format::Cose, &deep, &trust).unwrap();
    // Lengths far past the input are errors, not allocations.
    for huge in [
        vec![0xd2, 0x84, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xd2, 0x84, 0x40, 0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xd2, 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert!(matches!(
            verify(Format::Cose, &huge, &trust),
            Err(NotationRefusal::Malformed(_))
        ));
    }
    let wide = envelope(&|e| {
        e.map(2).unwrap();
        chain(e);
        e.str("x").unwrap();
        e.writer_mut()
            .extend_from_slice(&[0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    });
    assert!(matches!(
        verify(Format::Cose, &wide, &trust),
        Err(NotationRefusal::Malformed(_))
    ));
}

/// `envelopes` as an image's referrers, verified with one Notation authority.
fn verify_attached(trust: NotationTrust, envelopes: Vec<(Format, Vec<u8>)>) -> crate::Verified {
    use crate::attached::{Attached, NotationEnvelope, Referrers};
    let notation = envelopes
        .into_iter()
        .map(|(format, bytes)| NotationEnvelope {
            manifest: Digest::of(&bytes),
            media_type: media_type(format).into(),
            bytes,
        })
        .collect();
    let attached = Attached {
        referrers: Referrers {
            notation,
            ..Referrers::default()
        },
        image: Some(target()),
        ..Attached::default()
    };
    let authority = crate::Authority {
        name: "notary".into(),
        kind: crate::AuthorityKind::Notation(std::sync::Arc::new(trust)),
        tlog: crate::Tlog::Ignore,
    };
    let reference = crate::reference::Reference::parse(&format!("registry.example.com/app@{}", digest())).unwrap();
    crate::verify_image(&reference, &digest(), &attached, &[authority], None).unwrap()
}

#[test]
fn a_verdict_says_when_it_lapses_so_that_it_is_not_remembered_past_then() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let trust = store(
        vec![ca.root_der().to_vec()],
        TrustedIdentities::parse(&[LEAF_IDENTITY]).unwrap(),
    );
    let mut leaf = LeafRequest::new(KeyKind::EcP256);
    leaf.not_after = unix_now() + 30 * DAY;
    let signer = ca.issue(&leaf);
    let expiry = unix_now() + 3600;
    let mut expiring = request();
    expiring.expiry = Some(expiry);
    for format in FORMATS {
        // The signed expiry comes first...
        let verified = verify(format, &signer.sign(format, &expiring, None), &trust).unwrap();
        assert_eq!(verified.valid_until(), Some(Timestamp::from_second(expiry).unwrap()));
        // ...else the end of the chain's validity, checked now.
        let verified = verify(format, &signer.sign(format, &request(), None), &trust).unwrap();
        assert_eq!(
            verified.valid_until(),
            Some(Timestamp::from_second(leaf.not_after + 1).unwrap())
        );
    }
    // Of two signatures the one that lasts longer holds the image.
    let verified = verify_attached(
        trust.clone(),
        vec![
            (Format::Jws, signer.sign(Format::Jws, &expiring, None)),
            (Format::Cose, signer.sign(Format::Cose, &request(), None)),
        ],
    );
    assert_eq!(verified.valid_until(), Some(leaf.not_after + 1));
    let verified = verify_attached(
        trust.clone(),
        vec![(Format::Jws, signer.sign(Format::Jws, &expiring, None))],
    );
    assert_eq!(verified.valid_until(), Some(expiry));

    // A countersigned chain outlives its certificates: only an expiry bounds it.
    let tsa = Tsa::generate_notary(false);
    let mut stamped_trust = trust;
    stamped_trust.tsa_roots = vec![tsa.root_der().to_vec()];
    let mut stamped = request();
    stamped.timestamp_at = Some(unix_now());
    let verified = verify(
        Format::Cose,
        &signer.sign(Format::Cose, &stamped, Some(&tsa)),
        &stamped_trust,
    )
    .unwrap();
    assert_eq!(verified.valid_until(), None);
}

/// `envelope` (JWS) with its protected header edited by `edit`, its payload replaced by
/// `payload` when given, and signed again by `signer`.
fn resigned_jws(
    signer: &NotationSigner,
    envelope: &[u8],
    payload: Option<&Value>,
    edit: impl FnOnce(&mut Value),
) -> Vec<u8> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut value: Value = serde_json::from_slice(envelope).unwrap();
    let mut protected: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value["protected"].as_str().unwrap()).unwrap()).unwrap();
    edit(&mut protected);
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap());
    if let Some(payload) = payload {
        value["payload"] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap()).into();
    }
    let signed = format!("{protected}.{}", value["payload"].as_str().unwrap());
    value["signature"] = URL_SAFE_NO_PAD.encode(signer.sign_bytes(signed.as_bytes())).into();
    value["protected"] = protected.into();
    serde_json::to_vec(&value).unwrap()
}

/// notation-go reads envelopes with Go's encoding/json, which matches a key to a field
/// case-insensitively, with Unicode folding (`ſ` is `s`), the last match winning. A signed
/// key spelled so is one notation would read and pullgate would not: the two would judge
/// different targets or headers. Such envelopes are refused.
#[test]
fn keys_notation_would_fold_onto_a_field_are_refused() {
    let ca = NotationCa::generate(KeyKind::EcP256);
    let signer = ca.signer(KeyKind::EcP256);
    let trust = store(
        vec![ca.root_der().to_vec()],
        TrustedIdentities::parse(&[LEAF_IDENTITY]).unwrap(),
    );
    let other = Digest::of(b"another image manifest");
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    let malformed = |result: Result<NotationVerified, NotationRefusal>, what: &str| {
        let refusal = result.expect_err(what);
        assert!(matches!(refusal, NotationRefusal::Malformed(_)), "{what}: {refusal}");
    };
    // Sorted after `digest`, `digeſt` is the digest notation reads; `ſize` the size.
    for descriptor in [
        json!({"mediaType": manifest, "digest": digest().as_str(), "digeſt": other.as_str(), "size": 17}),
        json!({"mediaType": manifest, "digest": digest().as_str(), "size": 17, "ſize": 99}),
        json!({"mediaType": manifest, "MediaType": "application/vnd.oci.image.index.v1+json", "digest": digest().as_str(), "size": 17}),
    ] {
        let mut request = request();
        request.descriptor = descriptor.clone();
        for format in FORMATS {
            malformed(
                verify(format, &signer.sign(format, &request, None), &trust),
                &format!("{format:?} {descriptor}"),
            );
        }
    }
    let envelope = signer.sign(Format::Jws, &request(), None);
    verify(Format::Jws, &resigned_jws(&signer, &envelope, None, |_| {}), &trust).unwrap();
    // A second target under a folded spelling of `targetArtifact`.
    let payload = json!({
        "targetArtifact": {"mediaType": manifest, "digest": digest().as_str(), "size": 17},
        "targetArtifacť": {"mediaType": manifest, "digest": other.as_str(), "size": 17},
        "tarGetArtifact": {"mediaType": manifest, "digest": other.as_str(), "size": 17},
    });
    malformed(
        verify(
            Format::Jws,
            &resigned_jws(&signer, &envelope, Some(&payload), |_| {}),
            &trust,
        ),
        "a folded targetArtifact",
    );
    // An expiry notation enforces and pullgate would not see.
    let past = pullgate_tests::sigstore::rfc3339(unix_now() - DAY);
    for key in ["io.cncf.notary.EXPIRY", "io.cncf.notary.Expiry", "CRIT", "Alg"] {
        let edited = resigned_jws(&signer, &envelope, None, |h| {
            h[key] = json!(past);
        });
        malformed(verify(Format::Jws, &edited, &trust), key);
    }
}
