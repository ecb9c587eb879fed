//! A Fulcio signing certificate checked at an already verified
//! time against the test Sigstore's trusted root — validity window, chain to a CA valid then,
//! embedded SCT from a CT log the root names — and refused, without panicking, otherwise.

use std::time::{Duration, UNIX_EPOCH};

use super::{verify_signing_certificate, CertificateInfo};
use crate::TrustMaterial;
use pullgate_tests::sigstore::{
    b64, ctlog::sct_list_extension, der, rfc3339, CtLog, Leaf, LeafRequest, SanKind, TestSigstore, CA_EPOCH,
};
use serde_json::{json, Value};
use sigstore_types::DerCertificate;

const EMAIL: &str = "dev@pullgate.test";
const ISSUER: &str = "https://accounts.pullgate.test";
const WORKFLOW: &str = "https://github.com/pullgate/app/.github/workflows/release.yml@refs/tags/v1";
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn trust(root: &Value) -> TrustMaterial {
    TrustMaterial::from_json(&root.to_string()).expect("the trusted root loads")
}

/// Checks `leaf` with `intermediates` at unix second `at`.
fn verify(trust: &TrustMaterial, leaf: &[u8], intermediates: &[&[u8]], at: i64) -> Result<CertificateInfo, String> {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).expect("a time after 1970"));
    let intermediates: Vec<DerCertificate> = intermediates
        .iter()
        .map(|der| DerCertificate::from_bytes(der))
        .collect();
    verify_signing_certificate(
        trust,
        &DerCertificate::from_bytes(leaf),
        &intermediates,
        at.try_into().expect("a time jiff holds"),
    )
}

/// Half way through `leaf`'s validity.
fn signed_at(leaf: &Leaf) -> i64 {
    (leaf.not_before() + leaf.not_after()) / 2
}

fn email_leaf(sigstore: &TestSigstore) -> Leaf {
    sigstore.issue_fulcio_leaf(SanKind::Email(EMAIL.into()), ISSUER)
}

fn request() -> LeafRequest {
    LeafRequest::new(SanKind::Email(EMAIL.into()), ISSUER)
}

/// A leaf of `sigstore` whose SCT list extension is what `make` returns, given the signing CA's
/// SubjectPublicKeyInfo, the precertificate TBS and the SCT timestamp (ms).
fn with_sct_list(sigstore: &TestSigstore, make: impl FnOnce(&[u8], &[u8], u64) -> Vec<u8>) -> Leaf {
    sigstore
        .fulcio
        .issue_with_sct_list(&request(), |spki, tbs, ms| Some(make(spki, tbs, ms)))
}

/// Verifies `leaf` of `sigstore` against its own trusted root at `signed_at`; returns the error.
fn rejection(sigstore: &TestSigstore, leaf: &Leaf) -> String {
    verify(
        &trust(&sigstore.trusted_root_value()),
        &leaf.cert_der,
        &[],
        signed_at(leaf),
    )
    .expect_err("the certificate is refused")
}

fn assert_contains(error: &str, expected: &str) {
    assert!(error.contains(expected), "{error:?} does not say {expected:?}");
    assert!(!error.contains('\n'), "{error:?} is one line");
}

#[test]
fn leaf_signed_by_the_root_verifies_and_says_who_signed() {
    let sigstore = TestSigstore::new();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), GITHUB_ISSUER);
    let info = verify(
        &trust(&sigstore.trusted_root_value()),
        &leaf.cert_der,
        &[],
        signed_at(&leaf),
    )
    .unwrap();
    assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(WORKFLOW));
    assert_eq!(info.issuer.as_deref(), Some(GITHUB_ISSUER));
    assert_eq!(info.public_key.as_bytes(), leaf.public_key_der());
}

#[test]
fn leaf_at_the_edges_of_its_validity_verifies() {
    let sigstore = TestSigstore::new();
    let leaf = email_leaf(&sigstore);
    let trust = trust(&sigstore.trusted_root_value());
    for at in [leaf.not_before(), leaf.not_after()] {
        let info = verify(&trust, &leaf.cert_der, &[], at).unwrap();
        assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(EMAIL));
        assert_eq!(info.issuer.as_deref(), Some(ISSUER));
    }
}

#[test]
fn leaf_signed_by_an_intermediate_the_trusted_root_lists_verifies() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = email_leaf(&sigstore);
    let intermediate = sigstore.fulcio.intermediate_der().unwrap();
    let trust = trust(&sigstore.trusted_root_value());
    for given in [&[][..], &[intermediate][..]] {
        let info = verify(&trust, &leaf.cert_der, given, signed_at(&leaf)).unwrap();
        assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(EMAIL));
        assert_eq!(info.issuer.as_deref(), Some(ISSUER));
    }
}

#[test]
fn intermediate_from_the_chain_annotation_completes_the_path() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = email_leaf(&sigstore);
    let mut root = sigstore.trusted_root_value();
    root["certificateAuthorities"][0]["certChain"]["certificates"] =
        json!([{ "rawBytes": b64(sigstore.fulcio.root_der()) }]);
    let trust = trust(&root);

    let intermediate = sigstore.fulcio.intermediate_der().unwrap();
    let info = verify(&trust, &leaf.cert_der, &[intermediate], signed_at(&leaf)).unwrap();
    assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(EMAIL));

    let error = verify(&trust, &leaf.cert_der, &[], signed_at(&leaf)).unwrap_err();
    assert_contains(&error, "does not chain to a certificate authority");
}

#[test]
fn leaf_outside_its_validity_is_refused() {
    let sigstore = TestSigstore::new();
    let leaf = email_leaf(&sigstore);
    let trust = trust(&sigstore.trusted_root_value());
    for at in [leaf.not_before() - 1, leaf.not_after() + 1] {
        let error = verify(&trust, &leaf.cert_der, &[], at).unwrap_err();
        assert_contains(&error, "signing certificate was not valid at");
    }
}

#[test]
fn leaf_of_another_ca_is_refused() {
    let ours = TestSigstore::with_intermediate();
    let theirs = TestSigstore::with_intermediate();
    let leaf = email_leaf(&theirs);
    let trust = trust(&ours.trusted_root_value());
    let error = verify(&trust, &leaf.cert_der, &[], signed_at(&leaf)).unwrap_err();
    assert_contains(&error, "does not chain to a certificate authority");

    // Its own chain, handed over as intermediates, does not make its root an anchor.
    let chain: Vec<&[u8]> = leaf.chain_der.iter().map(Vec::as_slice).collect();
    let error = verify(&trust, &leaf.cert_der, &chain, signed_at(&leaf)).unwrap_err();
    assert_contains(&error, "does not chain to a certificate authority");
}

#[test]
fn only_the_last_certificate_of_a_ca_chain_is_an_anchor() {
    let sigstore = TestSigstore::with_intermediate();
    let stranger = TestSigstore::new();
    let leaf = email_leaf(&sigstore);
    let mut root = sigstore.trusted_root_value();
    // The leaf's own intermediate, under a root that did not sign it.
    root["certificateAuthorities"][0]["certChain"]["certificates"] = json!([
        { "rawBytes": b64(sigstore.fulcio.intermediate_der().unwrap()) },
        { "rawBytes": b64(stranger.fulcio.root_der()) },
    ]);
    let error = verify(&trust(&root), &leaf.cert_der, &[], signed_at(&leaf)).unwrap_err();
    assert_contains(&error, "does not chain to a certificate authority");
}

#[test]
fn ca_not_valid_at_the_signing_time_is_refused() {
    let sigstore = TestSigstore::new();
    let leaf = email_leaf(&sigstore);
    let at = signed_at(&leaf);
    for window in [
        json!({ "start": rfc3339(CA_EPOCH), "end": rfc3339(at - 1) }),
        json!({ "start": rfc3339(at + 1) }),
    ] {
        let mut root = sigstore.trusted_root_value();
        root["certificateAuthorities"][0]["validFor"] = window;
        let error = verify(&trust(&root), &leaf.cert_der, &[], at).unwrap_err();
        assert_contains(&error, "names no certificate authority valid at");
    }
}

#[test]
fn leaf_without_an_sct_is_refused() {
    let sigstore = TestSigstore::new();
    let leaf = sigstore.fulcio.issue(None, &request());
    assert_contains(&rejection(&sigstore, &leaf), "signing certificate embeds no SCT");
}

#[test]
fn sct_from_a_log_the_root_does_not_name_is_refused() {
    let sigstore = TestSigstore::new();
    let leaf = sigstore.fulcio.issue(Some(&CtLog::generate()), &request());
    assert_contains(
        &rejection(&sigstore, &leaf),
        "from a CT log the trusted root does not name",
    );
}

#[test]
fn sct_over_other_bytes_is_refused() {
    let sigstore = TestSigstore::with_intermediate();
    let ctlog = &sigstore.ctlog;
    let other_tbs = with_sct_list(&sigstore, |spki, tbs, ms| {
        let mut tbs = tbs.to_vec();
        *tbs.last_mut().unwrap() ^= 1;
        sct_list_extension(&[ctlog.sign_precert(spki, &tbs, ms)])
    });
    // The intermediate issued the leaf; an SCT naming the root as its issuer is for another
    // precertificate.
    let root_spki = sigstore_crypto::parse_certificate_info(&DerCertificate::from_bytes(sigstore.fulcio.root_der()))
        .unwrap()
        .public_key;
    let root_as_issuer = with_sct_list(&sigstore, |_, tbs, ms| {
        sct_list_extension(&[ctlog.sign_precert(root_spki.as_bytes(), tbs, ms)])
    });
    let other_time = with_sct_list(&sigstore, |spki, tbs, ms| {
        let mut sct = ctlog.sign_precert(spki, tbs, ms);
        // version (1 byte), log ID (32), then the timestamp (8)
        sct.get_mut(33..41).unwrap().copy_from_slice(&(ms + 1).to_be_bytes());
        sct_list_extension(&[sct])
    });
    let tampered = with_sct_list(&sigstore, |spki, tbs, ms| {
        let mut content = sct_list_extension(&[ctlog.sign_precert(spki, tbs, ms)]);
        // the last byte of the last SCT's signature
        *content.last_mut().unwrap() ^= 1;
        content
    });
    for leaf in [other_tbs, root_as_issuer, other_time, tampered] {
        assert_contains(&rejection(&sigstore, &leaf), "an SCT's signature does not verify");
    }
}

#[test]
fn one_verifying_sct_among_others_is_enough() {
    let sigstore = TestSigstore::new();
    let ctlog = &sigstore.ctlog;
    let leaf = with_sct_list(&sigstore, |spki, tbs, ms| {
        let stranger = CtLog::generate().sign_precert(spki, tbs, ms);
        sct_list_extension(&[stranger, ctlog.sign_precert(spki, tbs, ms)])
    });
    let trust = trust(&sigstore.trusted_root_value());
    verify(&trust, &leaf.cert_der, &[], signed_at(&leaf)).unwrap();
}

#[test]
fn sct_issued_outside_the_log_keys_validity_is_refused() {
    let sigstore = TestSigstore::new();
    let leaf = email_leaf(&sigstore);
    let mut root = sigstore.trusted_root_value();
    root["ctlogs"][0]["publicKey"]["validFor"] = json!({ "start": rfc3339(leaf.not_before() + 1) });
    let error = verify(&trust(&root), &leaf.cert_der, &[], signed_at(&leaf)).unwrap_err();
    assert_contains(&error, "from a CT log whose key was not valid at");
}

#[test]
fn root_without_ct_logs_asks_for_no_sct() {
    // SPEC §4: an embedded SCT is required only when the root lists CT logs (GitHub's does not).
    let sigstore = TestSigstore::new();
    let mut root = sigstore.trusted_root_value();
    root["ctlogs"] = json!([]);
    let trust = trust(&root);
    let without_sct = sigstore.fulcio.issue(None, &request());
    for leaf in [email_leaf(&sigstore), without_sct] {
        let info = verify(&trust, &leaf.cert_der, &[], signed_at(&leaf)).unwrap();
        assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(EMAIL));
    }
    // The chain is still required.
    let rogue = TestSigstore::new().fulcio.issue(None, &request());
    let error = verify(&trust, &rogue.cert_der, &[], signed_at(&rogue)).unwrap_err();
    assert_contains(&error, "does not chain");
}

#[test]
fn malformed_sct_lists_are_refused() {
    let sigstore = TestSigstore::new();
    let ctlog = &sigstore.ctlog;
    let cases = [
        // webpki reads the extension's OCTET STRING itself when it parses the leaf.
        (
            with_sct_list(&sigstore, |_, _, _| der::utf8_string("scts")),
            "signing certificate does not parse",
        ),
        (
            with_sct_list(&sigstore, |_, _, _| der::octet_string(&[])),
            "SCT list is malformed",
        ),
        (
            with_sct_list(&sigstore, |_, _, _| der::octet_string(&[0, 9, 0, 7, 0])),
            "SCT list is malformed",
        ),
        (
            with_sct_list(&sigstore, |_, _, _| sct_list_extension(&[])),
            "SCT list is empty",
        ),
        (
            with_sct_list(&sigstore, |spki, tbs, ms| {
                let mut sct = ctlog.sign_precert(spki, tbs, ms);
                sct[0] = 1; // v2
                sct_list_extension(&[sct])
            }),
            "an SCT is not a v1 SCT",
        ),
        (
            with_sct_list(&sigstore, |spki, tbs, ms| {
                sct_list_extension(&vec![ctlog.sign_precert(spki, tbs, ms); 17])
            }),
            "embeds more than 16 SCTs",
        ),
    ];
    for (leaf, expected) in cases {
        assert_contains(&rejection(&sigstore, &leaf), expected);
    }
}

#[test]
fn garbage_certificates_are_refused_without_panicking() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = email_leaf(&sigstore);
    let trust = trust(&sigstore.trusted_root_value());
    let at = signed_at(&leaf);
    let garbage: [&[u8]; 5] = [
        &[],
        &[0x30],
        &[0x30, 0x03, 0x02, 0x01, 0x01],
        b"-----BEGIN CERTIFICATE-----",
        &[0xff; 64],
    ];
    for bytes in garbage {
        let error = verify(&trust, bytes, &[], at).unwrap_err();
        assert_contains(&error, "signing certificate does not parse");
    }
    for len in [1, leaf.cert_der.len() / 2, leaf.cert_der.len() - 1] {
        let error = verify(&trust, &leaf.cert_der[..len], &[], at).unwrap_err();
        assert_contains(&error, "signing certificate does not parse");
    }
    // Garbage intermediates are merely useless.
    let info = verify(&trust, &leaf.cert_der, &garbage, at).unwrap();
    assert_eq!(info.identity.as_ref().map(|san| san.as_str()), Some(EMAIL));
}

#[test]
fn oversized_material_is_refused_before_parsing() {
    let sigstore = TestSigstore::with_intermediate();
    let leaf = email_leaf(&sigstore);
    let trust = trust(&sigstore.trusted_root_value());
    let at = signed_at(&leaf);

    let mut huge = leaf.cert_der.clone();
    huge.resize(16 * 1024 + 1, 0);
    let error = verify(&trust, &huge, &[], at).unwrap_err();
    assert_contains(&error, "signing certificate is 16385 bytes");
    let error = verify(&trust, &leaf.cert_der, &[&huge], at).unwrap_err();
    assert_contains(&error, "intermediate certificate is 16385 bytes");

    let intermediate = sigstore.fulcio.intermediate_der().unwrap();
    verify(&trust, &leaf.cert_der, &[intermediate; 8], at).unwrap();
    let error = verify(&trust, &leaf.cert_der, &[intermediate; 9], at).unwrap_err();
    assert_contains(&error, "9 intermediate certificates");
}

#[test]
fn the_identity_is_the_one_san_a_certificate_names() {
    use super::signing_identity;
    let sigstore = TestSigstore::new();
    let identity = |sans: Vec<SanKind>| {
        let leaf = sigstore.issue(&request().sans(sans));
        signing_identity(&DerCertificate::from_bytes(&leaf.cert_der))
    };
    assert_eq!(identity(vec![SanKind::Email(EMAIL.into())]).as_deref(), Ok(EMAIL));
    assert_eq!(identity(vec![SanKind::Uri(WORKFLOW.into())]).as_deref(), Ok(WORKFLOW));
    assert_eq!(
        identity(vec![SanKind::Username("foo!oidc.local".into())]).as_deref(),
        Ok("foo!oidc.local")
    );
    let several = identity(vec![SanKind::Email(EMAIL.into()), SanKind::Uri(WORKFLOW.into())]).unwrap_err();
    assert_contains(&several, "names 2 identities");
    assert_contains(&identity(vec![]).unwrap_err(), "exactly one SubjectAltName extension");
    assert_contains(
        &identity(vec![SanKind::Dns("registry.example".into())]).unwrap_err(),
        "not an email, URI or Fulcio username",
    );
}
