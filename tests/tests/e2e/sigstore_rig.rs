//! The test Sigstore ([`pullgate_tests::sigstore`]) against the real verifier: every piece of
//! material it makes — trust root, Fulcio leaves with embedded SCTs, Rekor SETs, inclusion proofs
//! and checkpoints, legacy `.sig` annotations, bundles v0.1 and v0.3 — is verified offline by
//! sigstore-verify 0.15.1 against the generated `trusted_root.json`, and must fail where a real
//! Sigstore's would. The attach functions are checked against the real registry.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use pullgate_tests::{
    cosign::{self, BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, SIGNATURE_ANNOTATION, SIMPLE_SIGNING},
    distribution::{self, media_type},
    image::push_image,
    sigstore::{
        self,
        attach::{BUNDLE_CONTENT_ANNOTATION, BUNDLE_PREDICATE_TYPE_ANNOTATION},
        b64,
        bundle::{BUNDLE_V03_MEDIA_TYPE, COSIGN_SIGN_PREDICATE},
        der,
        fulcio::{self, oid_content, strip_extension, SCT_LIST_OID},
        rekor::{set_payload, HASHEDREKORD},
        unix_now, BundleSigner, LeafRequest, LegacySigned, SanKind, TestSigstore, Tsa,
    },
    Registry, Signer,
};
use serde_json::{json, Value};
use sigstore_crypto::VerificationKey;
use sigstore_types::{Bundle, DerCertificate, DerPublicKey, Sha256Hash, SignatureBytes};
use sigstore_verify::{Error, IdentityMatcher, PublicKeyVerificationPolicy, VerificationPolicy};

const EMAIL: &str = "dev@pullgate.test";
const WORKFLOW: &str = "https://github.com/pullgate/app/.github/workflows/release.yml@refs/tags/v1";
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
const EMAIL_ISSUER: &str = "https://accounts.pullgate.test";
const IMAGE_DIGEST: &str = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";

fn bundle(json: &str) -> Bundle {
    Bundle::from_json(json).unwrap_or_else(|e| panic!("bundle parses: {e}\n{json}"))
}

fn email_policy() -> VerificationPolicy {
    VerificationPolicy::new(IdentityMatcher::Email(EMAIL.to_owned()), EMAIL_ISSUER)
}

fn payload(digest: &str) -> Vec<u8> {
    Signer::payload_for("127.0.0.1:5000/signed/app", digest)
}

fn digest_of(image_digest: &str) -> Sha256Hash {
    Sha256Hash::from_hex(image_digest.strip_prefix("sha256:").unwrap()).unwrap()
}

#[test]
fn trusted_root_parses_and_names_the_generated_keys() {
    for sigstore in [TestSigstore::new(), TestSigstore::with_intermediate()] {
        let root = sigstore.trusted_root();
        assert_eq!(
            root.media_type,
            "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
        );
        assert_eq!(root.tlogs.len(), 1);
        assert_eq!(root.ctlogs.len(), 1);
        assert_eq!(root.certificate_authorities.len(), 1);
        assert!(root.timestamp_authorities.is_empty());
        assert_eq!(root.tlogs[0].log_id.key_id.as_bytes(), sigstore.rekor.log_id());
        assert_eq!(
            root.tlogs[0].public_key.raw_bytes.as_bytes(),
            sigstore.rekor.public_key_der()
        );
        assert_eq!(root.ctlogs[0].log_id.key_id.as_bytes(), sigstore.ctlog.log_id());
        let chain = &root.certificate_authorities[0].cert_chain.certificates;
        assert_eq!(
            chain.len(),
            if sigstore.fulcio.intermediate_der().is_some() {
                2
            } else {
                1
            }
        );
        assert_eq!(chain.last().unwrap().raw_bytes.as_bytes(), sigstore.fulcio.root_der());
        let keys = root.rekor_keys().unwrap();
        assert_eq!(keys.len(), 1);
        sigstore.verifier();

        let value: Value = serde_json::from_str(&sigstore.trusted_root_json()).unwrap();
        assert_eq!(value["tlogs"][0]["publicKey"]["keyDetails"], "PKIX_ECDSA_P256_SHA_256");
        assert_eq!(
            value["tlogs"][0]["publicKey"]["validFor"]["start"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(value["ctlogs"][0]["hashAlgorithm"], "SHA2_256");
        assert_eq!(
            value["certificateAuthorities"][0]["uri"],
            "https://fulcio.pullgate.test"
        );
        assert_eq!(value["timestampAuthorities"], json!([]));

        let dir = tempfile::tempdir().unwrap();
        let path = sigstore.write_trusted_root(dir.path());
        sigstore_trust_root::TrustedRoot::from_file(&path).expect("the written file parses");
    }
}

#[test]
fn leaves_carry_fulcio_extensions_and_a_detachable_sct() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = sigstore.issue_leaf(
        SanKind::Uri(WORKFLOW.to_owned()),
        GITHUB_ISSUER,
        &[
            (fulcio::BUILD_SIGNER_URI, WORKFLOW),
            (fulcio::SOURCE_REPOSITORY_URI, "https://github.com/pullgate/app"),
            (fulcio::SOURCE_REPOSITORY_REF, "refs/tags/v1"),
            (fulcio::RUNNER_ENVIRONMENT, "github-hosted"),
        ],
        unix_now() - 60,
        unix_now() + 540,
    );
    let info = sigstore_crypto::parse_certificate_info(&DerCertificate::new(leaf.cert_der.clone())).unwrap();
    assert_eq!(info.identity.as_ref().map(|i| i.as_str()), Some(WORKFLOW));
    assert!(matches!(info.identity, Some(sigstore_verify::SubjectAltName::Uri(_))));
    assert_eq!(info.issuer.as_deref(), Some(GITHUB_ISSUER));
    assert_eq!(info.ci_claims.build_signer_uri.as_deref(), Some(WORKFLOW));
    assert_eq!(
        info.ci_claims.source_repository_uri.as_deref(),
        Some("https://github.com/pullgate/app")
    );
    assert_eq!(info.ci_claims.source_repository_ref.as_deref(), Some("refs/tags/v1"));
    assert_eq!(info.ci_claims.runner_environment.as_deref(), Some("github-hosted"));
    assert_eq!(info.not_after.as_second() - info.not_before.as_second(), 600);

    // The legacy issuer extension (.1.1) holds the raw issuer bytes, .1.8 a UTF8String.
    let extension = |suffix: u64, value: Vec<u8>| {
        let mut oid = fulcio::FULCIO_OID_ARC.to_vec();
        oid.push(suffix);
        [der::tlv(0x06, &oid_content(&oid)), der::octet_string(&value)].concat()
    };
    let contains = |needle: &[u8]| leaf.cert_der.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&extension(1, GITHUB_ISSUER.as_bytes().to_vec())));
    assert!(contains(&extension(8, der::utf8_string(GITHUB_ISSUER))));

    // Taking the SCT extension out of the TBS gives the precertificate TBS; a leaf without SCT
    // has none to take out.
    let tbs = der::tbs_certificate(&leaf.cert_der).unwrap();
    let precert = strip_extension(tbs, &SCT_LIST_OID).expect("the leaf has an SCT extension");
    assert!(precert.len() < tbs.len());
    let bare = sigstore
        .fulcio
        .issue(None, &LeafRequest::new(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER));
    assert_eq!(
        strip_extension(der::tbs_certificate(&bare.cert_der).unwrap(), &SCT_LIST_OID),
        None
    );

    assert_eq!(leaf.chain_der.len(), 2);
    assert!(leaf.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert_eq!(leaf.chain_pem().matches("-----BEGIN CERTIFICATE-----").count(), 2);
}

#[test]
fn legacy_keyless_signature_with_set_verifies_as_bundle_v01() {
    for sigstore in [TestSigstore::new(), TestSigstore::with_intermediate()] {
        let verifier = sigstore.verifier();
        let leaf = sigstore.issue_fulcio_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
        let payload = payload(IMAGE_DIGEST);
        let signed = LegacySigned::keyless(&leaf, &payload);
        let entry = signed.log(&sigstore.rekor, unix_now() - 5);
        let v01 = bundle(&signed.to_v01_bundle(&entry));

        let result = verifier
            .verify(payload.as_slice(), &v01, &email_policy())
            .expect("the legacy keyless signature verifies");
        assert!(result.certificate_verified() && result.sct_verified() && result.tlog_verified());
        assert_eq!(result.identity().map(|i| i.as_str()), Some(EMAIL));
        assert_eq!(result.issuer(), Some(EMAIL_ISSUER));
        assert_eq!(
            result.integrated_time().map(|t| t.as_second()),
            Some(entry.integrated_time)
        );

        // The same material as a v0.3 message-signature bundle, with inclusion proof.
        let v03 = bundle(&signed.to_v03_bundle(&entry));
        verifier
            .verify(payload.as_slice(), &v03, &email_policy())
            .expect("the v0.3 message-signature bundle verifies");

        // Wrong identity, wrong kind of identity, wrong issuer, wrong payload.
        let err = verifier
            .verify(
                payload.as_slice(),
                &v01,
                &VerificationPolicy::new("someone-else@pullgate.test", EMAIL_ISSUER),
            )
            .unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
        let as_uri = VerificationPolicy::new(IdentityMatcher::Uri(EMAIL.to_owned()), EMAIL_ISSUER);
        let err = verifier.verify(payload.as_slice(), &v01, &as_uri).unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
        let err = verifier
            .verify(payload.as_slice(), &v01, &VerificationPolicy::new(EMAIL, GITHUB_ISSUER))
            .unwrap_err();
        assert!(matches!(err, Error::IssuerMismatch { .. }), "{err}");
        let other_payload = self::payload("sha256:1111111111111111111111111111111111111111111111111111111111111111");
        verifier
            .verify(other_payload.as_slice(), &v01, &email_policy())
            .expect_err("another payload");
    }
}

#[test]
fn a_set_of_another_entry_or_log_fails() {
    let sigstore = TestSigstore::with_intermediate();
    let verifier = sigstore.verifier();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
    let payload = payload(IMAGE_DIGEST);
    let signed = LegacySigned::keyless(&leaf, &payload);
    let entry = signed.log(&sigstore.rekor, unix_now() - 5);
    let other = LegacySigned::keyless(&leaf, b"another payload").log(&sigstore.rekor, unix_now() - 5);

    // The SET of another entry does not sign this body.
    let grafted = bundle(&signed.to_v01_bundle(&entry.with_set_of(&other)));
    let err = verifier
        .verify(payload.as_slice(), &grafted, &email_policy())
        .unwrap_err();
    assert!(err.to_string().contains("SET"), "{err}");

    // Another signature's whole entry (body and SET valid) is caught by the consistency check.
    let borrowed = bundle(&signed.to_v01_bundle(&other));
    verifier
        .verify(payload.as_slice(), &borrowed, &email_policy())
        .expect_err("an entry for another signature");

    // A tampered integrated time breaks the SET.
    let mut moved = entry.clone();
    moved.integrated_time -= 1;
    let err = verifier
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&moved)),
            &email_policy(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("SET"), "{err}");

    // The same entry logged in another Rekor (not in the trust root) fails.
    let stranger = TestSigstore::new();
    let foreign = signed.log(&stranger.rekor, unix_now() - 5);
    verifier
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&foreign)),
            &email_policy(),
        )
        .expect_err("a log the trust root does not name");

    // An integrated time in the future is refused.
    let future = signed.log(&sigstore.rekor, unix_now() + 3600);
    verifier
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&future)),
            &email_policy(),
        )
        .expect_err("an integrated time in the future");
}

#[test]
fn an_untrusted_ca_or_ct_log_fails() {
    let trusted = TestSigstore::new();
    let stranger = TestSigstore::with_intermediate();
    let payload = payload(IMAGE_DIGEST);

    // A leaf of another CA, logged in the trusted Rekor: the chain does not reach the root.
    let leaf = stranger.issue_fulcio_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
    let signed = LegacySigned::keyless(&leaf, &payload);
    let entry = signed.log(&trusted.rekor, unix_now() - 5);
    let err = trusted
        .verifier()
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&entry)),
            &email_policy(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("chain"), "{err}");

    // A leaf of the trusted CA whose SCT comes from another CT log, or that has no SCT.
    let request = LeafRequest::new(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
    for (leaf, what) in [
        (
            trusted.fulcio.issue(Some(&stranger.ctlog), &request),
            "SCT of an unknown log",
        ),
        (trusted.fulcio.issue(None, &request), "no SCT"),
    ] {
        let signed = LegacySigned::keyless(&leaf, &payload);
        let v01 = bundle(&signed.to_v01_bundle(&signed.log(&trusted.rekor, unix_now() - 5)));
        let err = trusted
            .verifier()
            .verify(payload.as_slice(), &v01, &email_policy())
            .unwrap_err();
        assert!(err.to_string().contains("SCT"), "{what}: {err}");
        trusted
            .verifier()
            .verify(payload.as_slice(), &v01, &email_policy().skip_sct())
            .unwrap_or_else(|e| panic!("{what}, SCT not checked: {e}"));
    }
}

#[test]
fn an_expired_certificate_verifies_with_a_set_inside_its_validity() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = sigstore.issue_expired_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER, 30);
    assert!(leaf.not_after() < unix_now() - 29 * 86_400);
    let payload = payload(IMAGE_DIGEST);
    let signed = LegacySigned::keyless(&leaf, &payload);

    let inside = signed.log(&sigstore.rekor, leaf.not_before() + 60);
    let result = sigstore
        .verifier()
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&inside)),
            &email_policy(),
        )
        .expect("valid at its integrated time");
    assert_eq!(
        result.integrated_time().map(|t| t.as_second()),
        Some(leaf.not_before() + 60)
    );

    for time in [leaf.not_after() + 60, leaf.not_before() - 60] {
        let outside = signed.log(&sigstore.rekor, time);
        let err = sigstore
            .verifier()
            .verify(
                payload.as_slice(),
                &bundle(&signed.to_v01_bundle(&outside)),
                &email_policy(),
            )
            .unwrap_err();
        let message = err.to_string().to_lowercase();
        assert!(message.contains("expired") || message.contains("notvalidyet"), "{err}");
    }

    // The v3 bundle of an expired leaf, integrated inside its window, verifies too.
    let v3 = sigstore::make_v3_signature_bundle(&sigstore, &leaf, "signed/app", IMAGE_DIGEST, leaf.not_before() + 60);
    sigstore
        .verifier()
        .verify(digest_of(IMAGE_DIGEST), &bundle(&v3), &email_policy())
        .expect("the v3 bundle of an expired leaf");
}

#[test]
fn legacy_key_signature_with_set_verifies_with_its_key() {
    let sigstore = TestSigstore::new();
    let signer = Signer::generate();
    let payload = payload(IMAGE_DIGEST);
    let signed = LegacySigned::with_key(&signer, &payload);
    let entry = signed.log(&sigstore.rekor, unix_now() - 5);
    let key_pem_b64 = b64(b"-----BEGIN PUBLIC KEY-----");
    let needle = &key_pem_b64.as_bytes()[..24];
    assert!(
        entry.body.windows(needle.len()).any(|w| w == needle),
        "Rekor logs the key PEM"
    );
    let v01 = bundle(&signed.to_v01_bundle(&entry));
    let verifier = sigstore.verifier();
    let result = verifier
        .verify(
            payload.as_slice(),
            &v01,
            &PublicKeyVerificationPolicy::new(signer.public_key_der()),
        )
        .expect("the key signature with its SET");
    assert!(result.tlog_verified());
    verifier
        .verify(
            payload.as_slice(),
            &v01,
            &PublicKeyVerificationPolicy::new(Signer::generate().public_key_der()),
        )
        .expect_err("another key");
    verifier
        .verify(
            payload.as_slice(),
            &bundle(&signed.to_v01_bundle(&entry.with_set_of(&signed.log(&sigstore.rekor, unix_now())))),
            &PublicKeyVerificationPolicy::new(signer.public_key_der()),
        )
        .expect_err("a grafted SET");
}

#[test]
fn cosign_bundle_annotation_has_cosigns_shape_and_a_valid_set() {
    let sigstore = TestSigstore::new();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
    let payload = payload(IMAGE_DIGEST);
    let signed = LegacySigned::keyless(&leaf, &payload);
    let entry = signed.log(&sigstore.rekor, unix_now() - 5);

    let annotation = entry.cosign_bundle_annotation();
    let expected_prefix = format!(
        r#"{{"SignedEntryTimestamp":"{}","Payload":{{"body":"{}","integratedTime":{},"logIndex":{},"logID":"{}"}}}}"#,
        b64(&entry.signed_entry_timestamp),
        b64(&entry.body),
        entry.integrated_time,
        entry.log_index,
        hex::encode(sigstore.rekor.log_id()),
    );
    assert_eq!(annotation, expected_prefix);

    // The SET verifies with the Rekor key over the canonical payload, as a cosign verifier does.
    let rekor_key = VerificationKey::from_spki(&DerPublicKey::new(sigstore.rekor.public_key_der().to_vec())).unwrap();
    let canonical = set_payload(
        &entry.body,
        entry.integrated_time,
        &hex::encode(entry.log_id),
        entry.log_index,
    );
    assert_eq!(
        String::from_utf8(canonical.clone()).unwrap(),
        format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            b64(&entry.body),
            entry.integrated_time,
            hex::encode(entry.log_id),
            entry.log_index
        )
    );
    rekor_key
        .verify(&canonical, &SignatureBytes::new(entry.signed_entry_timestamp.clone()))
        .expect("the SET");

    // The body is the hashedrekord 0.0.1 body of this signature and certificate.
    let body: Value = serde_json::from_slice(&entry.body).unwrap();
    assert_eq!(
        body,
        json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": { "hash": { "algorithm": "sha256", "value": hex::encode(sigstore::sha256(&payload)) } },
                "signature": { "content": signed.signature_b64(), "publicKey": { "content": b64(leaf.cert_pem().as_bytes()) } },
            },
        })
    );
    assert_eq!((entry.kind.as_str(), entry.version.as_str()), HASHEDREKORD);

    let annotations = signed.annotations(Some(&entry), true);
    assert_eq!(annotations[SIGNATURE_ANNOTATION], signed.signature_b64());
    assert_eq!(annotations[CERTIFICATE_ANNOTATION], leaf.cert_pem());
    assert_eq!(annotations[CHAIN_ANNOTATION], leaf.chain_pem());
    assert_eq!(annotations[BUNDLE_ANNOTATION], annotation);
    assert_eq!(signed.annotations(None, false).len(), 2);
}

#[test]
fn v3_dsse_bundle_verifies_against_the_image_digest_only() {
    let sigstore = TestSigstore::with_intermediate();
    // Entries before ours, so the inclusion proof has a real audit path.
    for i in 0..6u8 {
        sigstore.rekor.append(HASHEDREKORD, vec![i], unix_now() - 100);
    }
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER);
    let json = sigstore::make_v3_signature_bundle(&sigstore, &leaf, "signed/app", IMAGE_DIGEST, unix_now() - 5);
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["mediaType"], BUNDLE_V03_MEDIA_TYPE);
    let entry = &value["verificationMaterial"]["tlogEntries"][0];
    assert_eq!(entry["kindVersion"], json!({ "kind": "dsse", "version": "0.0.1" }));
    assert_eq!(entry["logIndex"], "6");
    assert_eq!(entry["inclusionProof"]["treeSize"], "7");
    // PATH(6, D[7]) = [MTH(D[4..6]), MTH(D[0..4])]
    assert_eq!(entry["inclusionProof"]["hashes"].as_array().unwrap().len(), 2);
    let envelope = &value["dsseEnvelope"];
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        statement,
        json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{ "name": "signed/app", "digest": { "sha256": IMAGE_DIGEST.strip_prefix("sha256:").unwrap() } }],
            "predicateType": COSIGN_SIGN_PREDICATE,
            "predicate": {},
        })
    );

    let v3 = bundle(&json);
    let policy = VerificationPolicy::new(IdentityMatcher::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER);
    let verifier = sigstore.verifier();
    let result = verifier
        .verify(digest_of(IMAGE_DIGEST), &v3, &policy)
        .expect("the v3 signature verifies against the image digest");
    assert!(result.certificate_verified() && result.sct_verified() && result.tlog_verified());
    let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let err = verifier.verify(digest_of(other), &v3, &policy).unwrap_err();
    assert!(matches!(err, Error::ArtifactMismatch(_)), "{err}");
    verifier
        .verify(
            digest_of(IMAGE_DIGEST),
            &v3,
            &VerificationPolicy::new(WORKFLOW, EMAIL_ISSUER),
        )
        .expect_err("another issuer");

    // v0.3 needs the inclusion proof; a checkpoint signed by another log or a wrong proof fails.
    let mut no_proof = value.clone();
    no_proof["verificationMaterial"]["tlogEntries"][0]
        .as_object_mut()
        .unwrap()
        .remove("inclusionProof");
    verifier
        .verify(digest_of(IMAGE_DIGEST), &bundle(&no_proof.to_string()), &policy)
        .expect_err("a v0.3 bundle without inclusion proof");
    let stranger = TestSigstore::new();
    let root_hash = base64::engine::general_purpose::STANDARD
        .decode(entry["inclusionProof"]["rootHash"].as_str().unwrap())
        .unwrap();
    let mut foreign_checkpoint = value.clone();
    foreign_checkpoint["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"] =
        json!(stranger.rekor.checkpoint(7, &root_hash.try_into().unwrap()));
    let err = verifier
        .verify(
            digest_of(IMAGE_DIGEST),
            &bundle(&foreign_checkpoint.to_string()),
            &policy,
        )
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("checkpoint"), "{err}");
    let mut wrong_path = value.clone();
    wrong_path["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0] = json!(b64(&[0u8; 32]));
    verifier
        .verify(digest_of(IMAGE_DIGEST), &bundle(&wrong_path.to_string()), &policy)
        .expect_err("a wrong audit path");

    // A key-signed v3 bundle (publicKey hint) with an attestation predicate.
    let signer = Signer::generate();
    let statement = sigstore::in_toto_statement(
        "signed/app",
        IMAGE_DIGEST,
        "https://slsa.dev/provenance/v1",
        json!({ "buildDefinition": { "buildType": "test" } }),
    );
    let keyed = sigstore::make_v3_dsse_bundle(&sigstore.rekor, BundleSigner::Key(&signer), &statement, unix_now() - 5);
    verifier
        .verify(
            digest_of(IMAGE_DIGEST),
            &bundle(&keyed),
            &PublicKeyVerificationPolicy::new(signer.public_key_der()),
        )
        .expect("the key-signed v3 bundle");
    verifier
        .verify(
            digest_of(other),
            &bundle(&keyed),
            &PublicKeyVerificationPolicy::new(signer.public_key_der()),
        )
        .expect_err("the key-signed v3 bundle, another digest");
}

/// What a verifier of legacy `.sig` signatures does with a layer: rebuilds the bundle v0.1 from
/// the annotations alone.
#[test]
fn tsa_tokens_verify_with_sigstore_tsa_unless_their_gen_time_has_a_fraction() {
    let sigstore = TestSigstore::new();
    let tsa = Tsa::generate();
    let mut root = sigstore.trusted_root_value();
    tsa.trust_in(&mut root);
    let verifier = sigstore_verify::Verifier::new(
        &sigstore_trust_root::TrustedRoot::from_json(&root.to_string()).expect("a trusted root with a TSA"),
    )
    .expect("sigstore-verify accepts the TSA");
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER);
    let json = sigstore::make_v3_signature_bundle(&sigstore, &leaf, "signed/app", IMAGE_DIGEST, unix_now());
    let mut value: Value = serde_json::from_str(&json).unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(value["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let policy = VerificationPolicy::new(IdentityMatcher::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER);
    let mut verify = |token: Vec<u8>| {
        value["verificationMaterial"]["timestampVerificationData"] =
            json!({ "rfc3161Timestamps": [{ "signedTimestamp": b64(&token) }] });
        verifier.verify(digest_of(IMAGE_DIGEST), &bundle(&value.to_string()), &policy)
    };
    let result = verify(tsa.stamp(&signature, unix_now(), "")).expect("a whole-second stamp verifies");
    // One time from the stamp, one from the SET.
    assert_eq!(result.verified_timestamps().len(), 2);
    assert!(verify(tsa.stamp(b"another signature", unix_now(), "")).is_err());
    assert!(verify(Tsa::generate().stamp(&signature, unix_now(), "")).is_err());
    // sigstore-tsa 0.15.1 cannot read a fraction; pullgate-verify's timestamp.rs does.
    let err = verify(tsa.stamp(&signature, unix_now(), "123")).unwrap_err();
    assert!(err.to_string().contains("GeneralizedTime"), "{err}");
}

fn bundle_from_annotations(payload: &[u8], annotations: &BTreeMap<String, String>) -> String {
    let std = base64::engine::general_purpose::STANDARD;
    let pem_ders = |pem: &str| -> Vec<String> {
        pem.split("-----END CERTIFICATE-----")
            .filter_map(|block| block.split("-----BEGIN CERTIFICATE-----\n").nth(1))
            .map(|b64| b64.replace('\n', ""))
            .collect()
    };
    let mut certificates = pem_ders(&annotations[CERTIFICATE_ANNOTATION]);
    let chain = pem_ders(&annotations[CHAIN_ANNOTATION]);
    certificates.extend(chain[..chain.len() - 1].iter().cloned());
    let set: Value = serde_json::from_str(&annotations[BUNDLE_ANNOTATION]).unwrap();
    let body = std.decode(set["Payload"]["body"].as_str().unwrap()).unwrap();
    let kind: Value = serde_json::from_slice(&body).unwrap();
    json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": { "certificates": certificates.iter().map(|c| json!({ "rawBytes": c })).collect::<Vec<_>>() },
            "tlogEntries": [{
                "logIndex": set["Payload"]["logIndex"].to_string(),
                "logId": { "keyId": b64(&hex::decode(set["Payload"]["logID"].as_str().unwrap()).unwrap()) },
                "kindVersion": { "kind": kind["kind"], "version": kind["apiVersion"] },
                "integratedTime": set["Payload"]["integratedTime"].to_string(),
                "inclusionPromise": { "signedEntryTimestamp": set["SignedEntryTimestamp"] },
                "canonicalizedBody": set["Payload"]["body"],
            }],
        },
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": b64(&sigstore::sha256(payload)) },
            "signature": annotations[SIGNATURE_ANNOTATION],
        },
    })
    .to_string()
}

#[tokio::test]
async fn legacy_signatures_attach_in_cosigns_sig_layout() {
    let registry = Registry::start().await;
    let host = registry.host();
    let digest = push_image(&host, "signed/app", "v1", "keyless", None).await.unwrap();
    let sigstore = TestSigstore::with_intermediate();
    let payload = Signer::payload_for(&format!("{host}/signed/app"), &digest);

    let leaf = sigstore.issue_fulcio_leaf(SanKind::Email(EMAIL.to_owned()), EMAIL_ISSUER);
    let keyless = LegacySigned::keyless(&leaf, &payload);
    let keyless_entry = keyless.log(&sigstore.rekor, unix_now() - 5);
    sigstore::attach_keyless_signature(&host, "signed/app", &digest, &keyless, Some(&keyless_entry), true, None)
        .await
        .expect("attach the keyless signature");
    let signer = Signer::generate();
    let keyed = LegacySigned::with_key(&signer, &payload);
    let keyed_entry = keyed.log(&sigstore.rekor, unix_now() - 5);
    sigstore::attach_key_signature(&host, "signed/app", &digest, &keyed, Some(&keyed_entry), None)
        .await
        .expect("attach the key signature");
    sigstore::attach_keyless_signature(&host, "signed/app", &digest, &keyless, None, false, None)
        .await
        .expect("attach the bare keyless signature");

    let (manifest, media) = distribution::get_manifest(&host, "signed/app", &cosign::signature_tag(&digest), None)
        .await
        .unwrap();
    assert_eq!(media, media_type::OCI_MANIFEST);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert!(layers.iter().all(|l| l["mediaType"] == SIMPLE_SIGNING));

    let signatures = cosign::read_signatures(&host, "signed/app", &digest, None)
        .await
        .unwrap();
    assert_eq!(signatures.len(), 3);
    assert!(signatures.iter().all(|s| s.payload == payload));
    let keys = |s: &cosign::LegacySignature| s.annotations.keys().cloned().collect::<BTreeSet<_>>();
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&signatures[0]),
        set(&[
            SIGNATURE_ANNOTATION,
            CERTIFICATE_ANNOTATION,
            CHAIN_ANNOTATION,
            BUNDLE_ANNOTATION
        ])
    );
    assert_eq!(keys(&signatures[1]), set(&[SIGNATURE_ANNOTATION, BUNDLE_ANNOTATION]));
    assert_eq!(
        keys(&signatures[2]),
        set(&[SIGNATURE_ANNOTATION, CERTIFICATE_ANNOTATION])
    );
    assert_eq!(signatures[0].signature, keyless.signature_b64());
    assert_eq!(signatures[0].annotations[CERTIFICATE_ANNOTATION], leaf.cert_pem());
    assert_eq!(signatures[0].annotations[CHAIN_ANNOTATION], leaf.chain_pem());
    assert_eq!(
        signatures[1].annotations[BUNDLE_ANNOTATION],
        keyed_entry.cosign_bundle_annotation()
    );

    // The keyless layer's annotations alone make a bundle that verifies.
    let rebuilt = bundle_from_annotations(&signatures[0].payload, &signatures[0].annotations);
    sigstore
        .verifier()
        .verify(signatures[0].payload.as_slice(), &bundle(&rebuilt), &email_policy())
        .expect("the bundle rebuilt from the registry's annotations verifies");
}

#[tokio::test]
async fn v3_bundles_attach_as_referrers_with_the_tag_fallback() {
    let registry = Registry::start().await;
    let host = registry.host();
    let digest = push_image(&host, "signed/app", "v1", "v3", None).await.unwrap();
    let (image_manifest, image_media_type) = distribution::get_manifest(&host, "signed/app", &digest, None)
        .await
        .unwrap();

    // The rig's registry has no referrers API: the tag schema is the only way.
    let url = format!("{}/v2/signed/app/referrers/{digest}", distribution::base_url(&host));
    let resp = distribution::client(&host, std::time::Duration::from_secs(10))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "GET {url}");
    assert_eq!(
        sigstore::read_referrers_tag(&host, "signed/app", &digest, None)
            .await
            .unwrap(),
        None
    );

    let sigstore = TestSigstore::with_intermediate();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER);
    let signature = sigstore::make_v3_signature_bundle(&sigstore, &leaf, "signed/app", &digest, unix_now() - 5);
    let attestation = sigstore::make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Leaf(&leaf),
        &sigstore::in_toto_statement("signed/app", &digest, "https://slsa.dev/provenance/v1", json!({})),
        unix_now() - 5,
    );
    let first = sigstore::attach_v3_bundle(
        &host,
        "signed/app",
        &digest,
        &signature,
        Some(COSIGN_SIGN_PREDICATE),
        None,
    )
    .await
    .expect("attach the signature bundle");
    let second = sigstore::attach_v3_bundle(
        &host,
        "signed/app",
        &digest,
        &attestation,
        Some("https://slsa.dev/provenance/v1"),
        None,
    )
    .await
    .expect("attach the attestation bundle");
    // Attaching the same bundle again adds no second index entry.
    let again = sigstore::attach_v3_bundle(
        &host,
        "signed/app",
        &digest,
        &signature,
        Some(COSIGN_SIGN_PREDICATE),
        None,
    )
    .await
    .unwrap();
    assert_eq!(again, first);

    let (index_bytes, index_media) =
        distribution::get_manifest(&host, "signed/app", &sigstore::referrers_tag(&digest), None)
            .await
            .unwrap();
    assert_eq!(index_media, media_type::OCI_INDEX);
    assert!(sigstore::referrers_tag(&digest).starts_with("sha256-"));
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index["mediaType"], media_type::OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for (descriptor, (referrer, predicate, bundle_json)) in manifests.iter().zip([
        (&first, COSIGN_SIGN_PREDICATE, &signature),
        (&second, "https://slsa.dev/provenance/v1", &attestation),
    ]) {
        assert_eq!(descriptor["digest"], referrer.as_str());
        assert_eq!(descriptor["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(descriptor["artifactType"], BUNDLE_V03_MEDIA_TYPE);
        assert_eq!(descriptor["annotations"][BUNDLE_CONTENT_ANNOTATION], "dsse-envelope");
        assert_eq!(descriptor["annotations"][BUNDLE_PREDICATE_TYPE_ANNOTATION], predicate);

        let (bytes, media) = distribution::get_manifest(&host, "signed/app", referrer, None)
            .await
            .unwrap();
        assert_eq!(media, media_type::OCI_MANIFEST);
        assert_eq!(descriptor["size"], bytes.len());
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(manifest["artifactType"], BUNDLE_V03_MEDIA_TYPE);
        assert_eq!(
            manifest["config"],
            json!({
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "size": 2,
            })
        );
        assert_eq!(
            manifest["subject"],
            json!({ "mediaType": image_media_type, "digest": digest, "size": image_manifest.len() })
        );
        assert_eq!(manifest["annotations"], descriptor["annotations"]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], BUNDLE_V03_MEDIA_TYPE);
        let blob = distribution::get_blob(&host, "signed/app", layers[0]["digest"].as_str().unwrap(), None)
            .await
            .unwrap();
        assert_eq!(blob, bundle_json.as_bytes());
        let empty = distribution::get_blob(
            &host,
            "signed/app",
            manifest["config"]["digest"].as_str().unwrap(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(empty, b"{}");

        // The bundle as fetched verifies against the image's digest.
        let fetched = bundle(std::str::from_utf8(&blob).unwrap());
        sigstore
            .verifier()
            .verify(
                digest_of(&digest),
                &fetched,
                &VerificationPolicy::new(IdentityMatcher::Uri(WORKFLOW.to_owned()), GITHUB_ISSUER),
            )
            .expect("the fetched bundle verifies");
    }
}
