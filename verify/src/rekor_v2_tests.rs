//! Bundles as cosign v3 makes them against a Rekor v2 log (hashedrekord 0.0.2 entries, an
//! inclusion proof with a signed-note checkpoint, no SET, no integrated time), verified offline
//! as v1 entries are. A v2 entry proves inclusion, never a time: a keyless signature then needs
//! a trusted timestamp, and a key signature has no signing time without one.

use std::{collections::BTreeMap, sync::Arc};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use pullgate_tests::{
    sigstore::{
        cosign_sign_statement, make_v3_dsse_bundle_on_rekor_v2, unix_now, BundleSigner, RekorV2, SanKind, TestSigstore,
        Tsa,
    },
    Signer,
};
use serde_json::{json, Value};
use sigstore_types::{Artifact, Bundle, Sha256Hash};

use super::*;

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const IMAGE: &str = "registry.test/apps/app";
const DIGEST: &str = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270";

/// A test Sigstore whose trusted root lists a Rekor v2 log beside its v1 log, and a TSA.
struct World {
    sigstore: TestSigstore,
    log: RekorV2,
    tsa: Tsa,
    trust: TrustMaterial,
}

impl World {
    fn new() -> World {
        let (sigstore, log, tsa) = (TestSigstore::new(), RekorV2::generate(), Tsa::generate());
        let mut root = sigstore.trusted_root_value();
        log.trust_in(&mut root);
        tsa.trust_in(&mut root);
        let trust = TrustMaterial::from_json(&root.to_string()).unwrap();
        World {
            sigstore,
            log,
            tsa,
            trust,
        }
    }

    /// A keyless cosign v3 signature of the image, logged in the v2 log.
    fn keyless(&self) -> Value {
        let leaf = self.sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let statement = cosign_sign_statement(IMAGE, DIGEST);
        serde_json::from_str(&make_v3_dsse_bundle_on_rekor_v2(
            &self.log,
            BundleSigner::Leaf(&leaf),
            &statement,
        ))
        .unwrap()
    }

    /// A timestamp from the trusted TSA over the bundle's signature, made `at`.
    fn stamp(&self, bundle: &mut Value, at: i64) {
        let signature = BASE64
            .decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        let token = self.tsa.stamp(&signature, at, "");
        bundle["verificationMaterial"]["timestampVerificationData"] =
            json!({ "rfc3161Timestamps": [{ "signedTimestamp": BASE64.encode(token) }] });
    }
}

fn keyless_authority(tlog: Tlog) -> Authority {
    Authority {
        name: "ci".into(),
        kind: AuthorityKind::Keyless(Keyless {
            issuer: IdentityMatch::Exact(ISSUER.into()),
            subject: IdentityMatch::Exact(WORKFLOW.into()),
            extensions: BTreeMap::new(),
            trusted_root: None,
        }),
        tlog,
    }
}

fn key_authority(signer: &Signer, tlog: Tlog) -> Authority {
    Authority {
        name: "release-key".into(),
        kind: AuthorityKind::Key(Arc::new(PublicKey::from_pem(&signer.public_key_pem()).unwrap())),
        tlog,
    }
}

fn verify(trust: &TrustMaterial, bundle: &Value, authority: &Authority) -> Result<Evidence, Rejection> {
    let bundle = Bundle::from_json(&bundle.to_string()).unwrap();
    let hash = Sha256Hash::from_hex(DIGEST.strip_prefix("sha256:").unwrap()).unwrap();
    verify_bundle(trust, &bundle, Artifact::from_digest(hash), authority)
}

fn refused(verdict: Result<Evidence, Rejection>, why: &str) {
    match verdict {
        Err(Rejection::Invalid(what)) => assert!(what.contains(why), "{why:?} not in {what:?}"),
        other => panic!("expected a refusal for {why:?}, got {other:?}"),
    }
}

#[test]
fn a_keyless_v2_entry_with_a_trusted_timestamp_verifies_with_the_timestamp_as_signing_time() {
    let world = World::new();
    let mut bundle = world.keyless();
    let at = unix_now() - 5;
    world.stamp(&mut bundle, at);
    let evidence = verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).unwrap();
    assert_eq!(evidence.tlog_index, Some(0));
    assert_eq!(evidence.time_source, "tsa");
    assert_eq!(evidence.signed_at, Some(at));
    assert_eq!(evidence.subject.as_deref(), Some(WORKFLOW));
}

#[test]
fn a_keyless_v2_entry_without_a_timestamp_gives_no_signing_time_and_is_refused() {
    let world = World::new();
    let bundle = world.keyless();
    refused(
        verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)),
        "timestamp",
    );
}

/// A v2 entry's `integratedTime` is not signed by anything (there is no SET): written into the
/// bundle, it must not become the signing time that proves the certificate was valid.
#[test]
fn an_integrated_time_written_into_a_v2_entry_is_no_signing_time() {
    let world = World::new();
    let mut bundle = world.keyless();
    bundle["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!(unix_now().to_string());
    refused(
        verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)),
        "timestamp",
    );
    // With a timestamp the bundle verifies, and its time is the timestamp's, not the entry's.
    let at = unix_now() - 30;
    world.stamp(&mut bundle, at);
    let evidence = verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).unwrap();
    assert_eq!((evidence.time_source, evidence.signed_at), ("tsa", Some(at)));
}

#[test]
fn a_key_signature_on_a_v2_log_verifies_with_its_entry_and_no_signing_time() {
    let world = World::new();
    let signer = Signer::generate();
    let statement = cosign_sign_statement(IMAGE, DIGEST);
    let bundle: Value = serde_json::from_str(&make_v3_dsse_bundle_on_rekor_v2(
        &world.log,
        BundleSigner::Key(&signer),
        &statement,
    ))
    .unwrap();
    let evidence = verify(&world.trust, &bundle, &key_authority(&signer, Tlog::Required)).unwrap();
    assert_eq!(evidence.tlog_index, Some(0));
    assert_eq!((evidence.time_source, evidence.signed_at), ("none", None));
    // Another key's authority does not take it.
    let other = Signer::generate();
    assert!(verify(&world.trust, &bundle, &key_authority(&other, Tlog::Required)).is_err());
}

#[test]
fn a_v2_checkpoint_signed_by_an_untrusted_log_is_refused() {
    let world = World::new();
    let stranger = RekorV2::generate();
    let leaf = world.sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let statement = cosign_sign_statement(IMAGE, DIGEST);
    let mut bundle: Value = serde_json::from_str(&make_v3_dsse_bundle_on_rekor_v2(
        &stranger,
        BundleSigner::Leaf(&leaf),
        &statement,
    ))
    .unwrap();
    world.stamp(&mut bundle, unix_now());
    assert!(verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).is_err());
    // Claiming the trusted log's ID changes nothing: its key did not sign the checkpoint.
    bundle["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"] = json!(BASE64.encode(world.log.log_id()));
    assert!(verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).is_err());
}

/// The trusted log's key signs a checkpoint whose origin names another log: such a checkpoint
/// is not that log's statement about its own tree.
#[test]
fn a_v2_checkpoint_naming_another_origin_is_refused() {
    let world = World::new();
    let mut bundle = world.keyless();
    world.stamp(&mut bundle, unix_now());
    let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
    let proof = &entry["inclusionProof"];
    let root: [u8; 32] = BASE64
        .decode(proof["rootHash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let size: u64 = proof["treeSize"].as_str().unwrap().parse().unwrap();
    entry["inclusionProof"]["checkpoint"]["envelope"] = json!(world.log.checkpoint("evil.example", size, &root));
    refused(
        verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)),
        "does not name the log",
    );
}

/// An entry of the log about another signature proves nothing about this one.
#[test]
fn a_v2_entry_about_another_signature_is_refused() {
    let world = World::new();
    let mut bundle = world.keyless();
    world.stamp(&mut bundle, unix_now());
    let other = world.keyless();
    bundle["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"].clone();
    assert!(verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).is_err());
}

/// A v2 proof that does not lead to the checkpoint's root (a hash changed) is refused.
#[test]
fn a_v2_inclusion_proof_that_does_not_reach_the_checkpoint_is_refused() {
    let world = World::new();
    world.keyless();
    let mut bundle = world.keyless();
    world.stamp(&mut bundle, unix_now());
    let hashes = &mut bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"];
    assert_eq!(hashes.as_array().unwrap().len(), 1, "the second entry of a tree of two");
    hashes[0] = json!(BASE64.encode([7u8; 32]));
    assert!(verify(&world.trust, &bundle, &keyless_authority(Tlog::Required)).is_err());
}
