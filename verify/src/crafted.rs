//! Registry content crafted to pass for what it is not, found by a review of verification:
//! old key-signed attestations made to look fresh, and signed JSON that would switch off the
//! check that cosign and pullgate read it alike.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use pullgate_tests::{
    sigstore::{in_toto_statement, make_v3_dsse_bundle, unix_now, BundleSigner, TestSigstore, Tsa},
    Signer,
};
use serde_json::{json, Value};

use super::*;
use crate::attached::{AttachedBundle, Referrers};

const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const DAY: i64 = 86_400;

fn key_authority(name: &str, pem: &str, tlog: Tlog) -> Authority {
    let key = crate::PublicKey::from_pem(pem).unwrap();
    Authority {
        name: name.to_string(),
        kind: AuthorityKind::Key(Arc::new(key)),
        tlog,
    }
}

fn attached_bundle(bundle: &Value, predicate_type: &str) -> AttachedBundle {
    AttachedBundle {
        manifest: Digest::of(bundle.to_string().as_bytes()),
        predicate_type: Some(predicate_type.into()),
        bytes: bundle.to_string().into_bytes(),
    }
}

fn sbom_requirement(max_age: Option<Duration>) -> crate::Attestation {
    crate::Attestation {
        name: "sbom".into(),
        predicate_type: CYCLONEDX.into(),
        max_age,
        conditions: Vec::new(),
    }
}

fn outcome_of(
    digest: &Digest,
    bundles: Vec<AttachedBundle>,
    required: crate::Attestation,
    authority: &Authority,
    trust: &TrustMaterial,
) -> AttestationOutcome {
    let attached = Attached {
        referrers: Referrers {
            bundles,
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    };
    let now = unix_now();
    check_attestations(
        digest,
        &attached,
        &[required],
        std::slice::from_ref(authority),
        Some(trust),
        now,
    )
    .remove(0)
}

/// `bundle` as anyone can remake it: the same envelope with a `keyid` added (so the log takes
/// it as a new entry), submitted to the log at `at`, and carrying only that entry.
fn logged_again(sigstore: &TestSigstore, bundle: &Value, statement: &[u8], verifier_pem: &str, at: i64) -> Value {
    let mut envelope = bundle["dsseEnvelope"].clone();
    envelope["signatures"][0]["keyid"] = json!("again");
    let signature = BASE64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let again = sigstore.rekor.log_dsse(
        &serde_json::to_vec(&envelope).unwrap(),
        statement,
        &signature,
        verifier_pem,
        at,
    );
    let mut relogged = bundle.clone();
    relogged["verificationMaterial"]["tlogEntries"] = json!([again.tlog_entry()]);
    relogged
}

/// An attestation signed with a key 100 days ago and logged then is stale under `maxAge: 24h`.
/// Anyone can ask a public TSA (the Sigstore TSA in the production trusted root stamps any hash)
/// to timestamp the old signature today; with the log entry dropped from the bundle, that stamp
/// becomes the "signing time" and the stale attestation passes. A timestamp proves the signature
/// existed then, not that it was made then: for a key there is no certificate window to bound it.
#[test]
fn a_fresh_timestamp_over_an_old_key_signature_does_not_make_it_fresh() {
    let sigstore = TestSigstore::new();
    let tsa = Tsa::generate();
    let mut root = sigstore.trusted_root_value();
    tsa.trust_in(&mut root);
    let trust = TrustMaterial::from_json(&root.to_string()).unwrap();
    let signer = Signer::generate();
    let authority = key_authority("release-key", &signer.public_key_pem(), Tlog::Optional);
    let digest = Digest::of(b"an image manifest");
    let statement = in_toto_statement(
        "registry.test/app",
        digest.as_str(),
        CYCLONEDX,
        json!({"components": [1]}),
    );
    let signed_at = unix_now() - 100 * DAY;
    let bundle: Value = serde_json::from_str(&make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Key(&signer),
        &statement,
        signed_at,
    ))
    .unwrap();
    let max_age = Some(Duration::from_secs(86_400));

    // As published: logged 100 days ago, stale.
    let honest = outcome_of(
        &digest,
        vec![attached_bundle(&bundle, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(honest.result, AttestationResult::Fail, "{honest:?}");

    // The attacker drops the entry and adds a stamp taken today over the same signature.
    let signature = BASE64
        .decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let mut restamped = bundle.clone();
    restamped["verificationMaterial"]["tlogEntries"] = json!([]);
    restamped["verificationMaterial"]["timestampVerificationData"] =
        json!({"rfc3161Timestamps": [{"signedTimestamp": BASE64.encode(tsa.stamp(&signature, unix_now(), ""))}]});
    let outcome = outcome_of(
        &digest,
        vec![attached_bundle(&restamped, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(
        outcome.result,
        AttestationResult::Fail,
        "a 100-day-old attestation passed maxAge 24h on a timestamp taken today: {outcome:?}"
    );
}

/// A key-signed `.sig` layer over `payload`.
fn sig_layer(signer: &Signer, payload: &[u8]) -> SignatureLayer {
    SignatureLayer {
        media_type: crate::attached::SIMPLE_SIGNING.into(),
        annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signer.sign(payload))]),
        payload: Payload::Fetched(payload.to_vec()),
    }
}

fn reference() -> Reference {
    Reference::parse("registry.test/app:v1").unwrap()
}

/// Issue 13 item 17 refuses payloads whose keys Go would read as one (cosign takes the last,
/// case-insensitively). The check parses the whole document into its own tree first and skips
/// itself when that parse fails; serde's typed parse skips unknown members without reading them.
/// A member that only the tree parse chokes on (a number out of f64 range, a lone surrogate
/// escape) in a member Go skips unread turns the check off, and the case variant is read as
/// the first.
#[test]
fn the_case_variant_check_cannot_be_switched_off_by_an_unparsable_number() {
    let signer = Signer::generate();
    let authority = key_authority("release-key", &signer.public_key_pem(), Tlog::Optional);
    let digest = Digest::of(b"an image");
    let other = Digest::of(b"another image");
    for spoiler in ["1e400", r#""\ud800""#] {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{digest}","Docker-Manifest-Digest":"{other}"}},"type":"cosign container image signature"}},"optional":null,"x":{spoiler}}}"#
        );
        let verdict = verify_signatures(
            &reference(),
            &digest,
            &[sig_layer(&signer, payload.as_bytes())],
            std::slice::from_ref(&authority),
            None,
        );
        assert!(
            verdict.is_err(),
            "x: {spoiler}: accepted for {digest}, while cosign reads {other} from the same payload"
        );
    }
}

/// The same for a cosign v3 signature statement: with an out-of-range number beside it, a
/// second, case-variant `Subject` list (the one Go reads) passes unnoticed.
#[test]
fn a_statement_case_variant_check_cannot_be_switched_off_either() {
    let statement = |spoiler: &str| {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}}}}],"Subject":[{{"digest":{{"sha256":"{}"}}}}],"predicateType":"{COSIGN_SIGN_PREDICATE}","predicate":{{}},"x":{spoiler}}}"#,
            Digest::of(b"an image").hex(),
            Digest::of(b"another image").hex()
        )
    };
    assert!(attestation::check_statement(statement("1").as_bytes()).is_err());

    // End to end: a key-signed cosign v3 bundle over that statement counts for the first list.
    let sigstore = TestSigstore::new();
    let trust = TrustMaterial::from_json(&sigstore.trusted_root_json()).unwrap();
    let signer = Signer::generate();
    let authority = key_authority("release-key", &signer.public_key_pem(), Tlog::Required);
    let bundle: Value = serde_json::from_str(&make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Key(&signer),
        statement("1e400").as_bytes(),
        unix_now(),
    ))
    .unwrap();
    let attached = Attached {
        referrers: Referrers {
            bundles: vec![attached_bundle(&bundle, COSIGN_SIGN_PREDICATE)],
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    };
    let verdict = verify_image(
        &reference(),
        &Digest::of(b"an image"),
        &attached,
        &[authority],
        Some(&trust),
    );
    assert!(
        verdict.is_err(),
        "a sign/v1 statement with a case-variant Subject list (the one cosign reads) counts once an out-of-range number is beside it"
    );
}

/// The same with `tlog: required`: anyone may submit an existing envelope to Rekor again (a
/// dsse entry is keyed by the envelope's bytes, so another `keyid` or spacing makes a new one;
/// Rekor only checks the signature). The bundle then carries only the new entry, and the
/// signing time is its integrated time: today.
#[test]
fn a_key_signed_attestation_logged_again_today_does_not_become_fresh() {
    let sigstore = TestSigstore::new();
    let trust = TrustMaterial::from_json(&sigstore.trusted_root_json()).unwrap();
    let signer = Signer::generate();
    let authority = key_authority("release-key", &signer.public_key_pem(), Tlog::Required);
    let digest = Digest::of(b"an image manifest");
    let statement = in_toto_statement(
        "registry.test/app",
        digest.as_str(),
        CYCLONEDX,
        json!({"components": [1]}),
    );
    let bundle: Value = serde_json::from_str(&make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Key(&signer),
        &statement,
        unix_now() - 100 * DAY,
    ))
    .unwrap();
    let max_age = Some(Duration::from_secs(86_400));
    let honest = outcome_of(
        &digest,
        vec![attached_bundle(&bundle, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(honest.result, AttestationResult::Fail, "{honest:?}");

    let relogged = logged_again(&sigstore, &bundle, &statement, &signer.public_key_pem(), unix_now());
    let outcome = outcome_of(
        &digest,
        vec![attached_bundle(&relogged, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(
        outcome.result,
        AttestationResult::Fail,
        "a 100-day-old attestation passed maxAge 24h on an entry logged again today: {outcome:?}"
    );
}

/// A verification speaks for its repository and digest only: the cache hands it to another tag
/// of the same repository, never to another repository or to a reference pinned elsewhere.
#[test]
fn a_verification_is_not_lent_to_another_image() {
    let signer = Signer::generate();
    let authority = key_authority("release-key", &signer.public_key_pem(), Tlog::Optional);
    let digest = Digest::of(b"an image");
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.test/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let verified = verify_signatures(
        &reference(),
        &digest,
        &[sig_layer(&signer, payload.as_bytes())],
        std::slice::from_ref(&authority),
        None,
    )
    .unwrap();
    let another_tag = Reference::parse("registry.test/app:v2").unwrap();
    let lent = verified
        .clone()
        .for_reference(&another_tag)
        .expect("another tag, same image");
    assert_eq!(lent.reference(), &another_tag);
    let another_repository = Reference::parse("registry.test/other:v1").unwrap();
    assert!(verified.clone().for_reference(&another_repository).is_none());
    let pinned_elsewhere = Reference::parse(&format!("registry.test/app@{}", Digest::of(b"another"))).unwrap();
    assert!(verified.for_reference(&pinned_elsewhere).is_none());
}

/// Review of the fixes: maxAge trusted a keyless signature's log time because "its short certificate pins
/// when it was signed", but nothing checked that the certificate is short. A keyless authority
/// under a trusted root whose CA issues long-lived leaves (a private CA) let an attestation
/// signed 100 days ago be logged again today, as in the key case above, and pass maxAge 24h. maxAge is now
/// measured from the certificate's notBefore.
#[test]
fn a_keyless_attestation_under_a_long_lived_leaf_logged_again_today_does_not_become_fresh() {
    use pullgate_tests::sigstore::SanKind;
    const ISSUER: &str = "https://issuer.test";
    const WORKFLOW: &str = "https://ci.test/release";
    let sigstore = TestSigstore::new();
    let trust = TrustMaterial::from_json(&sigstore.trusted_root_json()).unwrap();
    let now = unix_now();
    let leaf = sigstore.issue_leaf(
        SanKind::Uri(WORKFLOW.into()),
        ISSUER,
        &[],
        now - 101 * DAY,
        now + 265 * DAY,
    );
    let keyless = crate::Keyless {
        issuer: crate::IdentityMatch::Exact(ISSUER.into()),
        subject: crate::IdentityMatch::Exact(WORKFLOW.into()),
        extensions: Default::default(),
        trusted_root: None,
    };
    let authority = Authority {
        name: "ci".into(),
        kind: AuthorityKind::Keyless(keyless),
        tlog: Tlog::Required,
    };
    let digest = Digest::of(b"an image manifest");
    let statement = in_toto_statement(
        "registry.test/app",
        digest.as_str(),
        CYCLONEDX,
        json!({"components": [1]}),
    );
    let bundle: Value = serde_json::from_str(&make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Leaf(&leaf),
        &statement,
        now - 100 * DAY,
    ))
    .unwrap();
    let max_age = Some(Duration::from_secs(86_400));
    let honest = outcome_of(
        &digest,
        vec![attached_bundle(&bundle, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(honest.result, AttestationResult::Fail, "{honest:?}");

    let relogged = logged_again(
        &sigstore,
        &bundle,
        &statement,
        &BundleSigner::Leaf(&leaf).verifier_pem(),
        now,
    );
    let outcome = outcome_of(
        &digest,
        vec![attached_bundle(&relogged, CYCLONEDX)],
        sbom_requirement(max_age),
        &authority,
        &trust,
    );
    assert_eq!(
        outcome.result,
        AttestationResult::Fail,
        "a 100-day-old keyless attestation passed maxAge 24h on an entry logged again today: {outcome:?}"
    );
}
