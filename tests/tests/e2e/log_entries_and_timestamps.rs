//! What a cosign v3 bundle's log entries and RFC 3161 timestamps must be for the real pullgate,
//! in front of a real containerd and registry: every entry holds and the audited `tlogIndex` is
//! the logged one; timestamps with fractional seconds count; a log entry and a timestamp that
//! both verified are recorded as `tlog+tsa`.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use pullgate_tests::{
    sigstore::{
        attach::attach_v3_bundle,
        bundle::{make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        rekor::HASHEDREKORD,
        unix_now, SanKind, TestSigstore, Tsa,
    },
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const SUBJECT_REGEXP: &str = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$";

/// Pushes `apps/app:<tag>` and returns its digest and a v3 signature bundle for it, logged as
/// the fourth entry of the test Rekor, to edit before attaching.
async fn signed_image(env: &TestEnv, sigstore: &TestSigstore, tag: &str) -> (String, Value) {
    let digest = env.push_image("apps/app", tag, &format!("image {tag}")).await;
    for n in 0..3 {
        sigstore
            .rekor
            .append(HASHEDREKORD, format!("{tag} earlier {n}").into_bytes(), unix_now());
    }
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let repo = format!("{}/apps/app", env.host());
    let bundle = make_v3_signature_bundle(sigstore, &leaf, &repo, &digest, unix_now());
    (digest, serde_json::from_str(&bundle).unwrap())
}

async fn attach(env: &TestEnv, digest: &str, bundle: &Value) {
    attach_v3_bundle(
        &env.host(),
        "apps/app",
        digest,
        &bundle.to_string(),
        Some(COSIGN_SIGN_PREDICATE),
        None,
    )
    .await
    .unwrap();
}

/// pullgate with a keyless policy over `apps/**`, trusting `sigstore` and `tsa`.
async fn start(env: &TestEnv, sigstore: &TestSigstore, tsa: &Tsa) -> Pullgate {
    let mut root = sigstore.trusted_root_value();
    tsa.trust_in(&mut root);
    let path = env.dir().join("trusted_root.json");
    std::fs::write(&path, root.to_string()).unwrap();
    let policy =
        pullgate_tests::policy::keyless_policy(&path, &format!("{}/apps/**", env.host()), ISSUER, SUBJECT_REGEXP);
    env.start_pullgate(&policy).await
}

/// A timestamp from `tsa` over the bundle's signature, with `fraction` after genTime's seconds.
fn stamp(bundle: &mut Value, tsa: &Tsa, fraction: &str) {
    let signature = BASE64
        .decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let token = tsa.stamp(&signature, unix_now(), fraction);
    bundle["verificationMaterial"]["timestampVerificationData"] =
        json!({ "rfc3161Timestamps": [{ "signedTimestamp": BASE64.encode(token) }] });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_proves_nothing_beside_a_good_one_is_denied_and_the_logged_index_audited() {
    let env = TestEnv::start().await;
    let (sigstore, tsa) = (TestSigstore::new(), Tsa::generate());
    let (honest, bundle) = signed_image(&env, &sigstore, "v1").await;
    attach(&env, &honest, &bundle).await;
    // The same signature for v2, behind an entry claiming index 999 with no proof and no SET.
    let (forged, mut twin) = signed_image(&env, &sigstore, "v2").await;
    let entries = &mut twin["verificationMaterial"]["tlogEntries"];
    let mut bare = entries[0].clone();
    bare["logIndex"] = json!("999");
    bare.as_object_mut().unwrap().remove("inclusionPromise");
    bare.as_object_mut().unwrap().remove("inclusionProof");
    *entries = json!([bare, entries[0].clone()]);
    attach(&env, &forged, &twin).await;
    let pg = start(&env, &sigstore, &tsa).await;

    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["signatures"][0]["tlogIndex"], 3, "{record}");

    let status = pg.pull(&env.image_ref("apps/app", "v2"), None).await.unwrap_err();
    assert!(status.message().contains("invalid"), "{}", status.message());
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(env.containerd.image_id(&env.image_ref("apps/app", "v2")).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_with_fractional_seconds_beside_a_log_entry_is_allowed() {
    let env = TestEnv::start().await;
    let (sigstore, tsa) = (TestSigstore::new(), Tsa::generate());
    let (digest, mut bundle) = signed_image(&env, &sigstore, "v1").await;
    stamp(&mut bundle, &tsa, "123");
    attach(&env, &digest, &bundle).await;
    let pg = start(&env, &sigstore, &tsa).await;

    let image = env.image_ref("apps/app", "v1");
    let id = pg
        .pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(env.containerd.image_id(&image).await, Some(id));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["signatures"][0]["timeSource"], "tlog+tsa", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_and_a_timestamp_that_both_verified_are_audited_as_tlog_plus_tsa() {
    let env = TestEnv::start().await;
    let (sigstore, tsa) = (TestSigstore::new(), Tsa::generate());
    let (digest, mut bundle) = signed_image(&env, &sigstore, "v1").await;
    stamp(&mut bundle, &tsa, "");
    attach(&env, &digest, &bundle).await;
    let pg = start(&env, &sigstore, &tsa).await;

    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    let evidence = &record["signatures"][0];
    assert_eq!(evidence["timeSource"], "tlog+tsa", "{record}");
    assert_eq!(evidence["tlogIndex"], 3, "{record}");
}
