//! Bundles signed with a key under a policy with no trusted root: what `cosign sign --key` and
//! `cosign attest --key` (v3) attach by default. Such a signature is checked with the key alone,
//! as a legacy key signature is; its log entry, which nothing here can check, counts for nothing.

use std::{collections::BTreeMap, sync::Arc};

use pullgate_tests::{
    sigstore::{
        cosign_sign_statement, in_toto_statement, make_v3_dsse_bundle, unix_now, BundleSigner, SanKind, TestSigstore,
    },
    Signer,
};
use serde_json::json;

use super::*;
use crate::attached::{AttachedBundle, Referrers};

const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const IMAGE: &str = "registry.test/apps/app";

fn digest() -> Digest {
    Digest::of(b"the image manifest")
}

fn key_authority(signer: &Signer, tlog: Tlog) -> Authority {
    Authority {
        name: "release".into(),
        kind: AuthorityKind::Key(Arc::new(PublicKey::from_pem(&signer.public_key_pem()).unwrap())),
        tlog,
    }
}

/// A cosign v3 bundle over `statement`, logged in the test Rekor, as a referrer of `predicate_type`.
fn attached(sigstore: &TestSigstore, signer: BundleSigner<'_>, statement: &[u8], predicate_type: &str) -> Attached {
    let bundle = make_v3_dsse_bundle(&sigstore.rekor, signer, statement, unix_now());
    Attached {
        referrers: Referrers {
            bundles: vec![AttachedBundle {
                manifest: Digest::of(bundle.as_bytes()),
                predicate_type: Some(predicate_type.into()),
                bytes: bundle.into_bytes(),
            }],
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    }
}

fn signed_by(sigstore: &TestSigstore, signer: &Signer) -> Attached {
    let statement = cosign_sign_statement(IMAGE, digest().as_str());
    attached(sigstore, BundleSigner::Key(signer), &statement, SIGN_PREDICATE)
}

fn verify(attached: &Attached, authorities: &[Authority]) -> Result<Verified, Unverified> {
    let reference = Reference::parse(&format!("{IMAGE}@{}", digest())).unwrap();
    verify_image(&reference, &digest(), attached, authorities, None)
}

#[test]
fn a_key_signed_bundle_verifies_with_the_key_alone_when_there_is_no_trusted_root() {
    let (sigstore, signer) = (TestSigstore::new(), Signer::generate());
    let verified = verify(
        &signed_by(&sigstore, &signer),
        &[key_authority(&signer, Tlog::Optional)],
    )
    .unwrap();
    let evidence = &verified.evidence[0];
    assert_eq!((evidence.authority.as_str(), evidence.kind), ("release", "key"));
    // Its log entry is not checked, so it is neither reported nor a signing time.
    assert_eq!(
        (evidence.tlog_index, evidence.signed_at, evidence.time_source),
        (None, None, "none")
    );
}

#[test]
fn without_a_trusted_root_a_key_bundle_needs_the_authoritys_key_and_cannot_meet_a_required_log() {
    let (sigstore, signer) = (TestSigstore::new(), Signer::generate());
    let attached = signed_by(&sigstore, &signer);
    let err = verify(&attached, &[key_authority(&Signer::generate(), Tlog::Optional)]).unwrap_err();
    assert_eq!(err.rejections, vec![Rejection::KeyMismatch]);
    let err = verify(&attached, &[key_authority(&signer, Tlog::Required)]).unwrap_err();
    assert_eq!(
        err.rejections,
        vec![Rejection::TlogRequired {
            authority: "release".into()
        }]
    );
}

/// The key signed a statement about another image: its signature is good, its subject is not.
#[test]
fn without_a_trusted_root_a_key_bundle_about_another_image_is_refused() {
    let (sigstore, signer) = (TestSigstore::new(), Signer::generate());
    let other = Digest::of(b"another manifest");
    let statement = cosign_sign_statement(IMAGE, other.as_str());
    let attached = attached(&sigstore, BundleSigner::Key(&signer), &statement, SIGN_PREDICATE);
    let err = verify(&attached, &[key_authority(&signer, Tlog::Optional)]).unwrap_err();
    assert!(
        matches!(&err.rejections[..], [Rejection::DigestMismatch { .. }]),
        "{:?}",
        err.rejections
    );
}

#[test]
fn a_keyless_bundle_still_needs_a_trusted_root() {
    let sigstore = TestSigstore::new();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Email("dev@example.com".into()), "https://issuer.example");
    let statement = cosign_sign_statement(IMAGE, digest().as_str());
    let attached = attached(&sigstore, BundleSigner::Leaf(&leaf), &statement, SIGN_PREDICATE);
    let keyless = Authority {
        name: "ci".into(),
        kind: AuthorityKind::Keyless(Keyless {
            issuer: IdentityMatch::Exact("https://issuer.example".into()),
            subject: IdentityMatch::Exact("dev@example.com".into()),
            extensions: BTreeMap::new(),
            trusted_root: None,
        }),
        tlog: Tlog::Required,
    };
    let err = verify(&attached, &[keyless]).unwrap_err();
    assert_eq!(err.rejections, vec![Rejection::NoTrustedRoot]);
}

#[test]
fn a_key_signed_attestation_bundle_counts_without_a_trusted_root() {
    let (sigstore, signer) = (TestSigstore::new(), Signer::generate());
    let statement = in_toto_statement(IMAGE, digest().as_str(), CYCLONEDX, json!({ "components": [] }));
    let attached = attached(&sigstore, BundleSigner::Key(&signer), &statement, CYCLONEDX);
    let required = Attestation {
        name: "sbom".into(),
        predicate_type: CYCLONEDX.into(),
        max_age: None,
        conditions: Vec::new(),
    };
    let check = |authority: Authority| {
        check_attestations(
            &digest(),
            &attached,
            std::slice::from_ref(&required),
            &[authority],
            None,
            unix_now(),
        )
        .remove(0)
    };
    let outcome = check(key_authority(&signer, Tlog::Optional));
    assert_eq!(outcome.result, AttestationResult::Pass, "{:?}", outcome.reason);
    let outcome = check(key_authority(&Signer::generate(), Tlog::Optional));
    assert_eq!(outcome.result, AttestationResult::Fail);
}
