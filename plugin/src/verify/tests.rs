//! The verifier against real cosign signatures: the containers/image fixtures in
//! `../shared/vectors` (see its README for each case's upstream verdict).

use std::{path::PathBuf, sync::Arc};

use super::*;
use crate::{
    policy::Tlog,
    registry::{
        cosign::SIMPLE_SIGNING,
        referrers::{AttachedBundle, Referrers},
    },
};

fn fixtures() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/containers-image/signature/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent; the third-party vector cases are not run",
            dir.display()
        );
        None
    }
}

fn key_authority(name: &str, pem: &str, tlog: Tlog) -> Authority {
    let key = crate::policy::PublicKey::from_pem(pem).unwrap();
    Authority {
        name: name.to_string(),
        kind: AuthorityKind::Key(Arc::new(key)),
        tlog,
    }
}

fn fixture_key(dir: &std::path::Path, file: &str, tlog: Tlog) -> Authority {
    key_authority(file, &std::fs::read_to_string(dir.join(file)).unwrap(), tlog)
}

/// Reads containers/image's on-disk form: `\0sigstore-json\n{mimeType, payload, annotations}`.
fn layers(case: &std::path::Path) -> Vec<SignatureLayer> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OnDisk {
        mime_type: String,
        payload: String,
        annotations: BTreeMap<String, String>,
    }
    let mut out = Vec::new();
    for n in 1.. {
        let Ok(bytes) = std::fs::read(case.join(format!("signature-{n}"))) else {
            break;
        };
        let json = bytes
            .strip_prefix(b"\x00sigstore-json\n")
            .expect("sigstore-json prefix");
        let d: OnDisk = serde_json::from_slice(json).unwrap();
        let payload = if d.mime_type == SIMPLE_SIGNING {
            Payload::Fetched(BASE64.decode(d.payload).unwrap())
        } else {
            Payload::Skipped(format!("layer media type {} is not a signature", d.mime_type))
        };
        out.push(SignatureLayer {
            media_type: d.mime_type,
            annotations: d.annotations,
            payload,
        });
    }
    out
}

fn digest_of_manifest(case: &std::path::Path) -> Digest {
    Digest::of(&std::fs::read(case.join("manifest.json")).unwrap())
}

fn reference() -> Reference {
    Reference::parse("192.168.64.2:5000/cosign-signed-single-sample:latest").unwrap()
}

fn run(case: &str, authorities: &[Authority]) -> Result<Verified, Unverified> {
    let dir = fixtures().unwrap().join(case);
    verify_signatures(
        &reference(),
        &digest_of_manifest(&dir),
        &layers(&dir),
        authorities,
        None,
    )
}

#[test]
fn cosign_valid_is_accepted_with_its_key() {
    let Some(dir) = fixtures() else { return };
    let verified = run(
        "dir-img-cosign-valid",
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)],
    )
    .unwrap();
    assert_eq!(verified.evidence().len(), 1);
    assert_eq!(verified.evidence()[0].authority, "cosign.pub");
    assert_eq!(verified.evidence()[0].time_source, "none");
    assert_eq!(
        verified.pinned(),
        format!("192.168.64.2:5000/cosign-signed-single-sample@{}", verified.digest())
    );
}

#[test]
fn cosign_valid_is_rejected_with_another_key() {
    let Some(dir) = fixtures() else { return };
    let err = run(
        "dir-img-cosign-valid",
        &[fixture_key(&dir, "cosign2.pub", Tlog::Optional)],
    )
    .unwrap_err();
    assert_eq!(err.rejections, vec![Rejection::KeyMismatch]);
    assert_eq!(
        err.to_string(),
        "no signature from authority \"cosign2.pub\" (1 signature found: 1 key mismatch)"
    );
}

#[test]
fn garbage_or_missing_signature_annotation_is_rejected() {
    let Some(dir) = fixtures() else { return };
    let case = dir.join("dir-img-cosign-valid");
    let key = fixture_key(&dir, "cosign.pub", Tlog::Optional);
    let mut garbage = layers(&case);
    garbage[0]
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), "this is not base64!".into());
    let err = verify_signatures(
        &reference(),
        &digest_of_manifest(&case),
        &garbage,
        std::slice::from_ref(&key),
        None,
    )
    .unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::MalformedSignature(_)));
    let mut wrong = layers(&case);
    wrong[0]
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), BASE64.encode(b"not a signature"));
    let err = verify_signatures(
        &reference(),
        &digest_of_manifest(&case),
        &wrong,
        std::slice::from_ref(&key),
        None,
    )
    .unwrap_err();
    assert_eq!(err.rejections, vec![Rejection::KeyMismatch]);
    let mut missing = layers(&case);
    missing[0].annotations.clear();
    assert!(verify_signatures(&reference(), &digest_of_manifest(&case), &missing, &[key], None).is_err());
}

#[test]
fn two_valid_signatures_give_two_pieces_of_evidence() {
    let Some(dir) = fixtures() else { return };
    let verified = run(
        "dir-img-cosign-valid-2",
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)],
    )
    .unwrap();
    assert_eq!(verified.evidence().len(), 2);
}

#[test]
fn mixed_one_unknown_one_valid_is_accepted() {
    let Some(dir) = fixtures() else { return };
    assert!(run(
        "dir-img-cosign-mixed",
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)]
    )
    .is_ok());
}

#[test]
fn modified_manifest_is_rejected_as_another_digest() {
    let Some(dir) = fixtures() else { return };
    let err = run(
        "dir-img-cosign-modified-manifest",
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)],
    )
    .unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::DigestMismatch { .. }), "{err}");
}

#[test]
fn other_attachment_is_not_a_signature() {
    let Some(dir) = fixtures() else { return };
    let err = run(
        "dir-img-cosign-other-attachment",
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)],
    )
    .unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::NotASignature(_)), "{err}");
}

#[test]
fn unsigned_reports_no_signatures() {
    let Some(dir) = fixtures() else { return };
    let err = run("dir-img-unsigned", &[fixture_key(&dir, "cosign.pub", Tlog::Optional)]).unwrap_err();
    assert!(err.rejections.is_empty());
    assert_eq!(
        err.to_string(),
        "no signature from authority \"cosign.pub\" (no signatures found)"
    );
}

#[test]
fn key_rekor_valid_needs_verified_tlog_only_when_required() {
    let Some(dir) = fixtures() else { return };
    assert!(run(
        "dir-img-cosign-key-rekor-valid",
        &[fixture_key(&dir, "cosign2.pub", Tlog::Optional)]
    )
    .is_ok());
    assert!(run(
        "dir-img-cosign-key-rekor-valid",
        &[fixture_key(&dir, "cosign2.pub", Tlog::Ignore)]
    )
    .is_ok());
    let err = run(
        "dir-img-cosign-key-rekor-valid",
        &[fixture_key(&dir, "cosign2.pub", Tlog::Required)],
    )
    .unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::TlogRequired { .. }), "{err}");
}

#[test]
fn any_authority_of_several_is_enough() {
    let Some(dir) = fixtures() else { return };
    let authorities = [
        fixture_key(&dir, "cosign2.pub", Tlog::Optional),
        fixture_key(&dir, "cosign.pub", Tlog::Optional),
    ];
    let verified = run("dir-img-cosign-valid", &authorities).unwrap();
    assert_eq!(verified.evidence()[0].authority, "cosign.pub");
}

#[test]
fn summary_counts_each_kind_of_rejection() {
    let u = Unverified {
        authorities: vec!["release-key".into(), "ci".into()],
        rejections: vec![
            Rejection::KeyMismatch,
            Rejection::DigestMismatch {
                signed: "sha256:x".into(),
            },
            Rejection::KeyMismatch,
        ],
    };
    assert_eq!(
        u.to_string(),
        "no signature from authority \"release-key\" or \"ci\" (3 signatures found: 2 key mismatch, 1 signs another digest)"
    );
}

#[test]
fn an_authority_with_unmet_requirements_does_not_hide_the_next_one() {
    let Some(dir) = fixtures() else { return };
    let strict = fixture_key(&dir, "cosign.pub", Tlog::Required);
    let lenient = Authority {
        name: "lenient".into(),
        ..fixture_key(&dir, "cosign.pub", Tlog::Optional)
    };
    let verified = run("dir-img-cosign-valid", &[strict, lenient]).unwrap();
    assert_eq!(verified.evidence()[0].authority, "lenient");
}

// === keyless and Rekor, against the public-good trusted root ===

fn production_trust() -> Option<TrustMaterial> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/sigstore-conformance/production_trusted_root.json");
    let text = std::fs::read_to_string(&path).ok()?;
    Some(TrustMaterial::from_json(&text).unwrap())
}

fn keyless_authority(issuer: &str, subject: &str, tlog: Tlog) -> Authority {
    let keyless = crate::policy::Keyless {
        issuer: crate::policy::IdentityMatch::Exact(issuer.into()),
        subject: crate::policy::IdentityMatch::Exact(subject.into()),
        extensions: Default::default(),
    };
    Authority {
        name: "ci".into(),
        kind: AuthorityKind::Keyless(keyless),
        tlog,
    }
}

fn run_trusted(
    case: &str,
    layers_of: impl FnOnce(Vec<SignatureLayer>) -> Vec<SignatureLayer>,
    authorities: &[Authority],
) -> Result<Verified, Unverified> {
    let dir = fixtures().unwrap().join(case);
    let trust = production_trust().expect("production trusted root");
    verify_signatures(
        &reference(),
        &digest_of_manifest(&dir),
        &layers_of(layers(&dir)),
        authorities,
        Some(&trust),
    )
}

const FULCIO_ISSUER: &str = "https://github.com/login/oauth";
const FULCIO_EMAIL: &str = "mitr@redhat.com";

#[test]
fn fulcio_rekor_valid_is_accepted_with_an_expired_cert_valid_at_integrated_time() {
    let Some(_) = fixtures() else { return };
    let authority = keyless_authority(FULCIO_ISSUER, FULCIO_EMAIL, Tlog::Required);
    let verified = run_trusted("dir-img-cosign-fulcio-rekor-valid", |l| l, &[authority])
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    let e = &verified.evidence()[0];
    assert_eq!(e.kind, "keyless");
    assert_eq!(e.subject.as_deref(), Some(FULCIO_EMAIL));
    assert_eq!(e.issuer.as_deref(), Some(FULCIO_ISSUER));
    assert_eq!(e.time_source, "tlog");
    assert!(e.tlog_index.is_some());
}

#[test]
fn fulcio_rekor_wrong_email_or_issuer_is_rejected() {
    let Some(_) = fixtures() else { return };
    for authority in [
        keyless_authority(FULCIO_ISSUER, "this-does-not-match@example.com", Tlog::Required),
        keyless_authority("https://accounts.google.com", FULCIO_EMAIL, Tlog::Required),
    ] {
        let err = run_trusted("dir-img-cosign-fulcio-rekor-valid", |l| l, &[authority]).unwrap_err();
        assert!(matches!(err.rejections[0], Rejection::IdentityMismatch(_)), "{err}");
    }
}

#[test]
fn fulcio_rekor_without_a_set_or_certificate_is_rejected() {
    let Some(_) = fixtures() else { return };
    let authority = || keyless_authority(FULCIO_ISSUER, FULCIO_EMAIL, Tlog::Required);
    let strip = |key: &'static str| {
        move |mut l: Vec<SignatureLayer>| {
            l[0].annotations.remove(key);
            l
        }
    };
    // No SET: the expired certificate has no verified time to be valid at.
    assert!(run_trusted(
        "dir-img-cosign-fulcio-rekor-valid",
        strip(legacy::REKOR_BUNDLE_ANNOTATION),
        &[authority()]
    )
    .is_err());
    let garbage_set = |mut l: Vec<SignatureLayer>| {
        l[0].annotations
            .insert(legacy::REKOR_BUNDLE_ANNOTATION.into(), "this is not a valid SET".into());
        l
    };
    assert!(run_trusted("dir-img-cosign-fulcio-rekor-valid", garbage_set, &[authority()]).is_err());
    // No certificate: a plain signature no keyless authority can accept.
    assert!(run_trusted(
        "dir-img-cosign-fulcio-rekor-valid",
        strip(legacy::CERTIFICATE_ANNOTATION),
        &[authority()]
    )
    .is_err());
    let garbage_cert = |mut l: Vec<SignatureLayer>| {
        l[0].annotations.insert(
            legacy::CERTIFICATE_ANNOTATION.into(),
            "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into(),
        );
        l
    };
    assert!(run_trusted("dir-img-cosign-fulcio-rekor-valid", garbage_cert, &[authority()]).is_err());
}

#[test]
fn key_rekor_valid_verifies_its_set_when_the_log_is_required() {
    let Some(dir) = fixtures() else { return };
    let verified = run_trusted(
        "dir-img-cosign-key-rekor-valid",
        |l| l,
        &[fixture_key(&dir, "cosign2.pub", Tlog::Required)],
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    assert_eq!(verified.evidence()[0].time_source, "tlog");
    assert_eq!(verified.evidence()[0].tlog_index, Some(11608800));
    // The same signature against the other key fails.
    assert!(run_trusted(
        "dir-img-cosign-key-rekor-valid",
        |l| l,
        &[fixture_key(&dir, "cosign.pub", Tlog::Optional)]
    )
    .is_err());
}

#[test]
fn a_set_grafted_from_another_signature_is_rejected() {
    let Some(dir) = fixtures() else { return };
    let rekor = layers(&dir.join("dir-img-cosign-key-rekor-valid"));
    let set = rekor[0].annotations[legacy::REKOR_BUNDLE_ANNOTATION].clone();
    let graft = move |mut l: Vec<SignatureLayer>| {
        l[0].annotations.insert(legacy::REKOR_BUNDLE_ANNOTATION.into(), set);
        l
    };
    let keys = [
        fixture_key(&dir, "cosign.pub", Tlog::Optional),
        fixture_key(&dir, "cosign2.pub", Tlog::Optional),
    ];
    let err = run_trusted("dir-img-cosign-valid", graft, &keys).unwrap_err();
    assert!(
        matches!(err.rejections[0], Rejection::Invalid(_) | Rejection::KeyMismatch),
        "{err}: {:?}",
        err.rejections
    );
}

#[test]
fn keyless_signature_without_trust_material_is_refused() {
    let Some(dir) = fixtures() else { return };
    let case = dir.join("dir-img-cosign-fulcio-rekor-valid");
    let authority = keyless_authority(FULCIO_ISSUER, FULCIO_EMAIL, Tlog::Required);
    let err = verify_signatures(
        &reference(),
        &digest_of_manifest(&case),
        &layers(&case),
        &[authority],
        None,
    )
    .unwrap_err();
    assert_eq!(err.rejections, vec![Rejection::NoTrustedRoot]);
}

// === cosign v3 bundles attached as referrers ===

fn kubewarden_bundle() -> Option<AttachedBundle> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/sigstore-rs/tests/data/bundle_v03.json");
    let bytes = std::fs::read(&path).ok()?;
    Some(AttachedBundle {
        manifest: Digest::of(b"referrer manifest"),
        predicate_type: Some(COSIGN_SIGN_PREDICATE.into()),
        bytes,
    })
}

const KUBEWARDEN_DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

#[test]
fn cosign_v3_bundle_is_accepted_for_its_digest_only() {
    let (Some(bundle), Some(trust)) = (kubewarden_bundle(), production_trust()) else {
        eprintln!("SKIP: ../shared/vectors is absent; the v3 bundle cases are not run");
        return;
    };
    let authority = keyless_authority(
        "https://token.actions.githubusercontent.com",
        "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0",
        Tlog::Required,
    );
    let reference = Reference::parse("ghcr.io/kubewarden/kubewarden-controller:v1.34.0").unwrap();
    let digest = Digest::parse(KUBEWARDEN_DIGEST).unwrap();
    let attached = |bundles: Vec<AttachedBundle>| Attached {
        referrers: Referrers {
            bundles,
            unreadable: Vec::new(),
        },
        ..Attached::default()
    };
    let bundles = attached(vec![bundle.clone()]);
    let verified = verify_image(
        &reference,
        &digest,
        &bundles,
        std::slice::from_ref(&authority),
        Some(&trust),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    assert_eq!(verified.evidence()[0].kind, "keyless");
    assert!(verified.evidence()[0].tlog_index.is_some());

    let other = Digest::of(b"another image");
    let err = verify_image(
        &reference,
        &other,
        &bundles,
        std::slice::from_ref(&authority),
        Some(&trust),
    )
    .unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::DigestMismatch { .. }), "{err}");

    let wrong = keyless_authority(
        "https://token.actions.githubusercontent.com",
        "https://github.com/evil/x",
        Tlog::Required,
    );
    let err = verify_image(&reference, &digest, &bundles, &[wrong], Some(&trust)).unwrap_err();
    assert!(matches!(err.rejections[0], Rejection::IdentityMismatch(_)), "{err}");

    // An attestation bundle is not a signature: it is neither accepted nor counted.
    let attestation = AttachedBundle {
        predicate_type: Some("https://slsa.dev/provenance/v1".into()),
        ..bundle.clone()
    };
    let err = verify_image(
        &reference,
        &digest,
        &attached(vec![attestation]),
        std::slice::from_ref(&authority),
        Some(&trust),
    )
    .unwrap_err();
    assert!(err.rejections.is_empty());

    // A referrer that could not be read is counted, and does not hide the good one.
    let mut with_broken = attached(vec![bundle]);
    with_broken
        .referrers
        .unreadable
        .push("referrer sha256:…: blob not found".into());
    assert!(verify_image(
        &reference,
        &digest,
        &with_broken,
        std::slice::from_ref(&authority),
        Some(&trust)
    )
    .is_ok());
    with_broken.referrers.bundles.clear();
    let err = verify_image(&reference, &digest, &with_broken, &[authority], Some(&trust)).unwrap_err();
    assert!(matches!(err.rejections[..], [Rejection::Invalid(_)]), "{err}");
}

#[test]
fn a_message_signature_bundle_is_not_an_image_signature() {
    // A sign-blob signature over bytes whose digest happens to be the image's must not count:
    // it carries no statement that it signs an image.
    let case = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/sigstore-conformance/test/assets");
    let (Ok(bytes), Ok(blob), Some(trust)) = (
        std::fs::read(case.join("bundle-verify/happy-path-v0.3/bundle.sigstore.json")),
        std::fs::read(case.join("bundle-verify/a.txt")),
        production_trust(),
    ) else {
        eprintln!("SKIP: ../shared/vectors is absent; the message-signature case is not run");
        return;
    };
    let digest = Digest::of(&blob);
    let attached = Attached {
        referrers: Referrers {
            bundles: vec![AttachedBundle {
                manifest: Digest::of(b"m"),
                predicate_type: None,
                bytes,
            }],
            unreadable: Vec::new(),
        },
        ..Attached::default()
    };
    let any = || crate::policy::IdentityMatch::RegExp(crate::policy::Re2Regex::new(".*").unwrap());
    let keyless = crate::policy::Keyless {
        issuer: any(),
        subject: any(),
        extensions: Default::default(),
    };
    let authority = Authority {
        name: "any".into(),
        kind: AuthorityKind::Keyless(keyless),
        tlog: Tlog::Required,
    };
    let err = verify_image(&reference(), &digest, &attached, &[authority], Some(&trust)).unwrap_err();
    assert!(
        matches!(err.rejections[..], [Rejection::NotASignature(_)]),
        "{err}: {:?}",
        err.rejections
    );
}

// === legacy `.att` layers and simple-signing payloads signed with a key ===

const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";

fn generated_key() -> (sigstore_crypto::KeyPair, Authority) {
    let key = sigstore_crypto::KeyPair::generate_ecdsa_p256().unwrap();
    let pem = key.public_key_der().unwrap().to_pem();
    let authority = key_authority("release-key", &pem, Tlog::Optional);
    (key, authority)
}

/// A `.att` layer: a DSSE envelope over `statement`, one signature per key of `signers`.
fn att_layer(statement: &[u8], signers: &[&sigstore_crypto::KeyPair]) -> SignatureLayer {
    let pae = sigstore_types::pae("application/vnd.in-toto+json", statement);
    let signatures: Vec<serde_json::Value> = signers
        .iter()
        .map(|key| serde_json::json!({"keyid": "", "sig": BASE64.encode(key.sign(&pae).unwrap().as_bytes())}))
        .collect();
    let envelope = serde_json::json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": BASE64.encode(statement),
        "signatures": signatures,
    });
    SignatureLayer {
        media_type: "application/vnd.dsse.envelope.v1+json".into(),
        annotations: BTreeMap::from([
            (SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                crate::registry::cosign::PREDICATE_TYPE_ANNOTATION.to_string(),
                CYCLONEDX.into(),
            ),
        ]),
        payload: Payload::Fetched(serde_json::to_vec(&envelope).unwrap()),
    }
}

/// A statement as text, so keys can repeat: `_type`, then the subject, then `extra` members.
fn statement_text(kind: &str, digest: &Digest, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"_type":"{kind}","subject":[{{"name":"r/a","digest":{{"sha256":"{}"}}}}],"predicateType":"{CYCLONEDX}","predicate":{{"components":[1]}}{extra}}}"#,
        digest.hex()
    )
    .into_bytes()
}

/// The one attestation outcome of `layers` for an sbom requirement.
fn attestation_outcome(digest: &Digest, layers: Vec<SignatureLayer>, authority: &Authority) -> AttestationOutcome {
    let attached = Attached {
        attestations: layers,
        ..Attached::default()
    };
    let required = crate::policy::Attestation {
        name: "sbom".into(),
        predicate_type: CYCLONEDX.into(),
        max_age: None,
        conditions: Vec::new(),
    };
    let mut outcomes = check_attestations(digest, &attached, &[required], std::slice::from_ref(authority), None, 0);
    outcomes.remove(0)
}

#[test]
fn an_att_envelope_counts_when_any_one_of_its_signatures_verifies() {
    let (key, authority) = generated_key();
    let other = sigstore_crypto::KeyPair::generate_ecdsa_p256().unwrap();
    let digest = Digest::of(b"an image");
    let statement = statement_text(STATEMENT_V1, &digest, "");
    for signers in [vec![&key], vec![&other, &key], vec![&key, &other]] {
        let outcome = attestation_outcome(&digest, vec![att_layer(&statement, &signers)], &authority);
        assert_eq!(
            outcome.result,
            "pass",
            "{} signatures: {:?}",
            signers.len(),
            outcome.reason
        );
    }
    let outcome = attestation_outcome(&digest, vec![att_layer(&statement, &[&other, &other])], &authority);
    assert_eq!(outcome.result, "fail");
    // Bounded: a layer cannot make each key try an unbounded list.
    let many = vec![&other; 17];
    let outcome = attestation_outcome(&digest, vec![att_layer(&statement, &many)], &authority);
    assert!(
        outcome.reason.as_deref().unwrap_or_default().contains("17 signatures"),
        "{outcome:?}"
    );
}

#[test]
fn an_att_statement_must_be_an_in_toto_statement_read_alike_by_cosign() {
    let (key, authority) = generated_key();
    let digest = Digest::of(b"an image");
    let other = Digest::of(b"another image");
    for kind in [STATEMENT_V1, "https://in-toto.io/Statement/v0.1"] {
        let outcome = attestation_outcome(
            &digest,
            vec![att_layer(&statement_text(kind, &digest, ""), &[&key])],
            &authority,
        );
        assert_eq!(outcome.result, "pass", "{kind}: {:?}", outcome.reason);
    }
    let refused = [
        ("another _type", statement_text("https://example.com/NotAStatement", &digest, "")),
        // Go reads the last `_type`, `predicateType` or `subject`, case-insensitively.
        (
            "a case-variant _type",
            statement_text(STATEMENT_V1, &digest, r#","_TYPE":"https://example.com/x""#),
        ),
        (
            "a case-variant predicateType",
            statement_text(STATEMENT_V1, &digest, r#","PredicateType":"https://example.com/x""#),
        ),
        (
            "a second subject list",
            statement_text(
                STATEMENT_V1,
                &digest,
                &format!(r#","Subject":[{{"digest":{{"sha256":"{}"}}}}]"#, other.hex()),
            ),
        ),
        (
            "a case-variant digest algorithm",
            format!(
                r#"{{"_type":"{STATEMENT_V1}","subject":[{{"digest":{{"sha256":"{}","SHA256":"{}"}}}}],"predicateType":"{CYCLONEDX}","predicate":{{}}}}"#,
                digest.hex(),
                other.hex()
            )
            .into_bytes(),
        ),
    ];
    for (what, statement) in refused {
        let outcome = attestation_outcome(&digest, vec![att_layer(&statement, &[&key])], &authority);
        assert_eq!(outcome.result, "fail", "{what} must be refused");
    }
}

#[test]
fn a_payload_with_case_variant_keys_is_refused_as_cosign_would_read_the_last() {
    let (key, authority) = generated_key();
    let digest = Digest::of(b"an image");
    let other = Digest::of(b"another image");
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{digest}","Docker-Manifest-Digest":"{other}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let layer = SignatureLayer {
        media_type: SIMPLE_SIGNING.into(),
        annotations: BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            BASE64.encode(key.sign(payload.as_bytes()).unwrap().as_bytes()),
        )]),
        payload: Payload::Fetched(payload.into_bytes()),
    };
    let err = verify_signatures(&reference(), &digest, &[layer], &[authority], None).unwrap_err();
    assert!(
        matches!(err.rejections[..], [Rejection::BadPayload(_)]),
        "{err}: {:?}",
        err.rejections
    );
}
