//! The verifier against real cosign signatures: the containers/image fixtures in
//! `../shared/vectors` (see its README for each case's upstream verdict).

use std::{path::PathBuf, sync::Arc};

use super::*;
use crate::attached::{AttachedBundle, Referrers, SIMPLE_SIGNING};

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
    let key = crate::PublicKey::from_pem(pem).unwrap();
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
    let keyless = crate::Keyless {
        issuer: crate::IdentityMatch::Exact(issuer.into()),
        subject: crate::IdentityMatch::Exact(subject.into()),
        extensions: Default::default(),
        trusted_root: None,
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
            notation: Vec::new(),
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
            notation: Vec::new(),
        },
        ..Attached::default()
    };
    let any = || crate::IdentityMatch::RegExp(crate::Re2Regex::new(".*").unwrap());
    let keyless = crate::Keyless {
        issuer: any(),
        subject: any(),
        extensions: Default::default(),
        trusted_root: None,
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

// === log entries: each must hold, and the index reported is one the log vouched for ===

mod log_entries {
    use pullgate_tests::{
        sigstore::{
            cosign_sign_statement, make_v3_dsse_bundle, rekor::HASHEDREKORD, unix_now, BundleSigner, SanKind,
            TestSigstore, Tsa,
        },
        Signer,
    };
    use serde_json::{json, Value};
    use sigstore_types::{Artifact, Bundle, Sha256Hash};

    use super::*;

    /// A cosign v3 bundle signed with a key and logged in `sigstore`'s Rekor, as JSON to edit,
    /// and what verifies it.
    struct Logged {
        sigstore: TestSigstore,
        trust: TrustMaterial,
        authority: Authority,
        digest: Digest,
        bundle: Value,
    }

    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const WORKFLOW: &str = "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main";

    impl Logged {
        /// The signature's entry is the `before`-th of the log.
        fn new(before: usize) -> Logged {
            let sigstore = TestSigstore::new();
            for n in 0..before {
                sigstore
                    .rekor
                    .append(HASHEDREKORD, format!("earlier {n}").into_bytes(), unix_now());
            }
            let signer = Signer::generate();
            let authority = key_authority("release", &signer.public_key_pem(), Tlog::Required);
            Self::signed(sigstore, BundleSigner::Key(&signer), authority)
        }

        /// Signed by a Fulcio leaf for [`WORKFLOW`], with a TSA in the trusted root.
        fn keyless(tsa: &Tsa) -> Logged {
            let sigstore = TestSigstore::new();
            let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
            let authority = keyless_authority(ISSUER, WORKFLOW, Tlog::Required);
            let mut logged = Self::signed(sigstore, BundleSigner::Leaf(&leaf), authority);
            let mut root = logged.sigstore.trusted_root_value();
            tsa.trust_in(&mut root);
            logged.trust = TrustMaterial::from_json(&root.to_string()).unwrap();
            logged
        }

        fn signed(sigstore: TestSigstore, signer: BundleSigner<'_>, authority: Authority) -> Logged {
            let digest = Digest::of(b"an image manifest");
            let statement = cosign_sign_statement("registry.test/app", digest.as_str());
            let bundle = make_v3_dsse_bundle(&sigstore.rekor, signer, &statement, unix_now());
            Logged {
                trust: TrustMaterial::from_json(&sigstore.trusted_root_json()).unwrap(),
                authority,
                sigstore,
                digest,
                bundle: serde_json::from_str(&bundle).unwrap(),
            }
        }

        /// The envelope's signature, which a timestamp is over.
        fn signature(&self) -> Vec<u8> {
            let sig = self.bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap();
            BASE64.decode(sig).unwrap()
        }

        fn stamp_with(&mut self, tokens: &[Vec<u8>]) {
            let stamps: Vec<Value> = tokens
                .iter()
                .map(|t| json!({ "signedTimestamp": BASE64.encode(t) }))
                .collect();
            self.bundle["verificationMaterial"]["timestampVerificationData"] = json!({ "rfc3161Timestamps": stamps });
        }

        fn entry(&mut self) -> &mut Value {
            &mut self.bundle["verificationMaterial"]["tlogEntries"][0]
        }

        fn verify(&self) -> Result<Evidence, Rejection> {
            let bundle = Bundle::from_json(&self.bundle.to_string()).unwrap();
            let hash = Sha256Hash::from_hex(self.digest.hex()).unwrap();
            verify_bundle(&self.trust, &bundle, Artifact::from_digest(hash), &self.authority)
        }
    }

    fn refused(verdict: Result<Evidence, Rejection>, why: &str) {
        match verdict {
            Err(Rejection::Invalid(what)) => assert!(what.contains(why), "{what}"),
            other => panic!("expected a refusal for {why:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_index_reported_is_the_logged_entrys() {
        let logged = Logged::new(3);
        let evidence = logged.verify().unwrap();
        assert_eq!(evidence.tlog_index, Some(3));
        assert_eq!(evidence.time_source, "tlog");
    }

    #[test]
    fn an_entry_with_neither_proof_nor_set_beside_a_good_one_is_refused() {
        let mut logged = Logged::new(3);
        let mut bare = logged.entry().clone();
        bare["logIndex"] = json!("999");
        bare.as_object_mut().unwrap().remove("inclusionPromise");
        bare.as_object_mut().unwrap().remove("inclusionProof");
        let good = logged.entry().clone();
        logged.bundle["verificationMaterial"]["tlogEntries"] = json!([bare, good]);
        refused(
            logged.verify(),
            "neither an inclusion proof nor a signed entry timestamp",
        );
    }

    #[test]
    fn a_log_index_the_proof_does_not_prove_is_refused() {
        let mut logged = Logged::new(3);
        // Without its SET nothing but the proof vouches for the index.
        logged.entry().as_object_mut().unwrap().remove("inclusionPromise");
        logged.entry()["logIndex"] = json!("7");
        refused(logged.verify(), "log index 7, but the proof is for index 3");
    }

    #[test]
    fn a_proof_for_another_tree_size_than_the_checkpoint_signs_is_refused() {
        // Entry 4 of 8: its audit path also proves it in a tree of 7, whose root is the same.
        let mut logged = Logged::new(4);
        for n in 0..3 {
            logged
                .sigstore
                .rekor
                .append(HASHEDREKORD, format!("later {n}").into_bytes(), unix_now());
        }
        let proof = logged.sigstore.rekor.prove(4);
        assert_eq!(proof.tree_size, 8);
        logged.entry()["inclusionProof"] = json!({
            "logIndex": "4",
            "rootHash": BASE64.encode(proof.root_hash),
            "treeSize": "8",
            "hashes": proof.hashes.iter().map(|h| BASE64.encode(h)).collect::<Vec<_>>(),
            "checkpoint": { "envelope": proof.checkpoint },
        });
        assert_eq!(logged.verify().unwrap().tlog_index, Some(4));
        logged.entry()["inclusionProof"]["treeSize"] = json!("7");
        refused(
            logged.verify(),
            "the proof is for a tree of 7 entries, the checkpoint signs 8",
        );
    }

    #[test]
    fn a_checkpoint_naming_another_log_is_refused() {
        let mut logged = Logged::new(0);
        let proof = logged.sigstore.rekor.prove(0);
        let forged =
            logged
                .sigstore
                .rekor
                .checkpoint_with_origin("rekor.evil.example - 1", proof.tree_size, &proof.root_hash);
        logged.entry()["inclusionProof"]["checkpoint"]["envelope"] = json!(forged);
        refused(logged.verify(), "does not name the log https://rekor.pullgate.test");
    }

    #[test]
    fn a_checkpoint_signed_by_another_trusted_log_is_refused() {
        let mut logged = Logged::new(0);
        // A second log in the trusted root, at the same URL, signs the first log's tree.
        let other = pullgate_tests::sigstore::Rekor::generate();
        let mut root = logged.sigstore.trusted_root_value();
        let mut log = root["tlogs"][0].clone();
        log["publicKey"]["rawBytes"] = json!(BASE64.encode(other.public_key_der()));
        log["logId"]["keyId"] = json!(BASE64.encode(other.log_id()));
        root["tlogs"].as_array_mut().unwrap().push(log);
        logged.trust = TrustMaterial::from_json(&root.to_string()).unwrap();
        assert!(logged.verify().is_ok());
        let proof = logged.sigstore.rekor.prove(0);
        let origin = logged.sigstore.rekor.origin().to_string();
        let envelope = other.checkpoint_with_origin(&origin, proof.tree_size, &proof.root_hash);
        logged.entry()["inclusionProof"]["checkpoint"]["envelope"] = json!(envelope);
        refused(logged.verify(), "the checkpoint is not signed by the entry's log");
    }

    // === RFC 3161 timestamps, with and without fractional seconds ===

    #[test]
    fn timestamps_with_fractional_seconds_beside_a_log_entry_are_accepted() {
        let tsa = Tsa::generate();
        for fraction in ["", "123", "46", "5"] {
            let mut logged = Logged::keyless(&tsa);
            let token = tsa.stamp(&logged.signature(), unix_now(), fraction);
            logged.stamp_with(&[token]);
            let evidence = logged
                .verify()
                .unwrap_or_else(|e| panic!("genTime fraction {fraction:?}: {e}"));
            assert_eq!(evidence.time_source, "tlog+tsa", "{fraction:?}");
            assert!(evidence.tlog_index.is_some());
        }
    }

    #[test]
    fn a_fractional_timestamp_is_checked_as_strictly_as_any_other() {
        let tsa = Tsa::generate();
        let mut logged = Logged::keyless(&tsa);
        let signature = logged.signature();
        let now = unix_now();
        // Over another signature.
        logged.stamp_with(&[tsa.stamp(b"another signature", now, "123")]);
        refused(logged.verify(), "over another signature");
        // From a TSA the trusted root does not name.
        logged.stamp_with(&[Tsa::generate().stamp(&signature, now, "123")]);
        refused(logged.verify(), "signed by another TSA");
        // Its TSTInfo changed after the TSA signed it: the fraction 123 made 124.
        let mut token = tsa.stamp(&signature, now, "123");
        let at = token.windows(5).position(|w| w == b".123Z").unwrap();
        token[at + 3] = b'4';
        logged.stamp_with(&[token]);
        refused(logged.verify(), "the TSA signed another TSTInfo");
        // At a time the signing certificate was not valid.
        logged.stamp_with(&[tsa.stamp(&signature, now - 86_400, "5")]);
        refused(logged.verify(), "signing certificate was not valid");
        // One good stamp does not carry a bad one.
        logged.stamp_with(&[tsa.stamp(&signature, now, "5"), tsa.stamp(b"other", now, "5")]);
        refused(logged.verify(), "over another signature");
    }

    #[test]
    fn a_fractional_timestamp_alone_is_not_a_signing_time() {
        // sigstore-verify must verify a signing time itself; with the SET gone, none is left.
        let tsa = Tsa::generate();
        let mut logged = Logged::keyless(&tsa);
        logged.entry().as_object_mut().unwrap().remove("inclusionPromise");
        let token = tsa.stamp(&logged.signature(), unix_now(), "5");
        logged.stamp_with(&[token]);
        refused(logged.verify(), "is not used as the only signing time");
    }
}

#[test]
fn a_bundle_with_a_log_entry_and_a_timestamp_says_both() {
    let (Some(attached), Some(trust)) = (kubewarden_bundle(), production_trust()) else {
        eprintln!("SKIP: ../shared/vectors is absent; the v3 bundle case is not run");
        return;
    };
    let authority = keyless_authority(
        "https://token.actions.githubusercontent.com",
        "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0",
        Tlog::Required,
    );
    let bundle = attached.parse().unwrap();
    let hash = sigstore_types::Sha256Hash::from_hex(Digest::parse(KUBEWARDEN_DIGEST).unwrap().hex()).unwrap();
    let evidence = verify_bundle(&trust, &bundle, sigstore_types::Artifact::from_digest(hash), &authority).unwrap();
    assert_eq!(evidence.time_source, "tlog+tsa");
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
            (crate::attached::PREDICATE_TYPE_ANNOTATION.to_string(), CYCLONEDX.into()),
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
    let required = crate::Attestation {
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
            AttestationResult::Pass,
            "{} signatures: {:?}",
            signers.len(),
            outcome.reason
        );
    }
    let outcome = attestation_outcome(&digest, vec![att_layer(&statement, &[&other, &other])], &authority);
    assert_eq!(outcome.result, AttestationResult::Fail);
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
        assert_eq!(outcome.result, AttestationResult::Pass, "{kind}: {:?}", outcome.reason);
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
        assert_eq!(outcome.result, AttestationResult::Fail, "{what} must be refused");
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

/// The audit record (SPEC §6) spells attestation results `pass` and `fail`; the enum must not
/// change that.
#[test]
fn attestation_results_serialize_as_the_audit_record_spells_them() {
    assert_eq!(serde_json::to_value(AttestationResult::Pass).unwrap(), "pass");
    assert_eq!(serde_json::to_value(AttestationResult::Fail).unwrap(), "fail");
    assert_eq!(AttestationResult::Fail.to_string(), "fail");
}
