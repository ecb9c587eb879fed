//! Keyless signatures end to end: the test Sigstore (Fulcio-style CA with SCTs, Rekor SETs and
//! proofs, a generated trusted_root.json) signs images in a real registry; the real pullgate
//! verifies them offline in front of a real containerd.

use pullgate_tests::{
    sigstore::{
        attach::{attach_keyless_signature, attach_v3_bundle},
        bundle::{make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        unix_now, Leaf, LeafRequest, LegacySigned, SanKind, TestSigstore,
    },
    Pullgate, Signer, TestEnv,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const SUBJECT_REGEXP: &str = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$";
const PREFIX: &str = "SignatureValidationFailed: ";

/// A policy requiring a keyless signature whose subject matches `subject_regexp`, against the
/// test Sigstore's trusted root written next to it.
fn keyless_policy(env: &TestEnv, trusted_root: &std::path::Path, subject_regexp: &str) -> String {
    pullgate_tests::policy::keyless_policy(trusted_root, &format!("{}/apps/**", env.host()), ISSUER, subject_regexp)
}

/// Pushes an image and attaches a legacy keyless `.sig` for it; returns its digest.
async fn push_keyless(env: &TestEnv, sigstore: &TestSigstore, workflow: &str, with_set: bool) -> String {
    let digest = env
        .push_image("apps/app", "v1", &format!("keyless {workflow} {with_set}"))
        .await;
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(workflow.into()), ISSUER);
    let signed = LegacySigned::keyless(
        &leaf,
        &Signer::payload_for(&format!("{}/apps/app", env.host()), &digest),
    );
    let entry = signed.log(&sigstore.rekor, unix_now());
    let set = with_set.then_some(&entry);
    attach_keyless_signature(&env.host(), "apps/app", &digest, &signed, set, true, None)
        .await
        .unwrap();
    digest
}

async fn start(env: &TestEnv, sigstore: &TestSigstore, subject_regexp: &str) -> Pullgate {
    let root = sigstore.write_trusted_root(env.dir());
    env.start_pullgate(&keyless_policy(env, &root, subject_regexp)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_signature_is_allowed_with_its_evidence() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = push_keyless(&env, &sigstore, WORKFLOW, true).await;
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    let image = env.image_ref("apps/app", "v1");

    let id = pg
        .pull(&image, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(env.containerd.image_id(&image).await, Some(id));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    let evidence = &record["signatures"][0];
    assert_eq!(evidence["authority"], "ci");
    assert_eq!(evidence["kind"], "keyless");
    assert_eq!(evidence["subject"], WORKFLOW);
    assert_eq!(evidence["issuer"], ISSUER);
    assert_eq!(evidence["timeSource"], "tlog");
    assert!(evidence["tlogIndex"].is_u64(), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workflow_and_the_prefix_trick_are_denied() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    for workflow in [
        "https://github.com/org/other/.github/workflows/release.yml@refs/tags/v1",
        // `org/repo-evil` must not pass for `org/repo/` because the regexp is anchored by its author.
        "https://github.com/org/repo-evil/.github/workflows/release.yml@refs/tags/v1",
    ] {
        push_keyless(&env, &sigstore, workflow, true).await;
        let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
        let status = pg.pull(&env.image_ref("apps/app", "v1"), None).await.unwrap_err();
        assert!(status.message().starts_with(PREFIX), "{}", status.message());
        assert!(status.message().contains("identity mismatch"), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_set_while_the_log_is_required_is_denied() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    push_keyless(&env, &sigstore, WORKFLOW, false).await;
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    let status = pg.pull(&env.image_ref("apps/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_denied() {
    let env = TestEnv::start().await;
    let trusted = TestSigstore::new();
    let rogue = TestSigstore::new();
    // Signed, logged and timestamped by a complete Sigstore — just not the node's.
    push_keyless(&env, &rogue, WORKFLOW, true).await;
    let pg = start(&env, &trusted, SUBJECT_REGEXP).await;
    let status = pg.pull(&env.image_ref("apps/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
    assert!(status.message().contains("invalid"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_grafted_from_another_entry_is_denied() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = env.push_image("apps/app", "v1", "grafted").await;
    let payload = Signer::payload_for(&format!("{}/apps/app", env.host()), &digest);
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let signed = LegacySigned::keyless(&leaf, &payload);
    // A genuine entry and SET, but for another signature of the same payload.
    let other = LegacySigned::keyless(&leaf, &payload);
    let entry = other.log(&sigstore.rekor, unix_now());
    attach_keyless_signature(&env.host(), "apps/app", &digest, &signed, Some(&entry), true, None)
        .await
        .unwrap();
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    let status = pg.pull(&env.image_ref("apps/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_with_a_set_inside_its_validity_is_allowed() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = env.push_image("apps/app", "v1", "expired").await;
    let leaf = sigstore.issue_expired_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER, 30);
    assert!(leaf.not_after() < unix_now());
    let signed = LegacySigned::keyless(
        &leaf,
        &Signer::payload_for(&format!("{}/apps/app", env.host()), &digest),
    );
    // Logged while the certificate was valid: the SET's time is what the chain is checked at.
    let entry = signed.log(&sigstore.rekor, leaf.not_before() + 60);
    attach_keyless_signature(&env.host(), "apps/app", &digest, &signed, Some(&entry), true, None)
        .await
        .unwrap();
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}", s.message()));
    assert_eq!(pg.last_record()["signatures"][0]["timeSource"], "tlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_bundle_via_the_referrers_tag_is_allowed_and_its_wrong_identity_twin_denied() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let host = env.host();
    let image = env.image_ref("apps/app", "v1");
    let digest = env.push_image("apps/app", "v1", "cosign v3").await;
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let bundle = make_v3_signature_bundle(&sigstore, &leaf, &format!("{host}/apps/app"), &digest, unix_now());
    attach_v3_bundle(&host, "apps/app", &digest, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
        .await
        .unwrap();

    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    pg.pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(pg.last_record()["signatures"][0]["subject"], WORKFLOW);

    // The same bundle, judged against another identity, is denied.
    let twin = start(&env, &sigstore, r"^https://github\.com/org/other/.*$").await;
    let status = twin.pull(&image, None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
    assert!(status.message().contains("identity mismatch"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_bundle_for_another_image_is_denied() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let host = env.host();
    let digest = env.push_image("apps/app", "v1", "signed one").await;
    let other = env.push_image("apps/app", "v2", "unsigned one").await;
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    // A valid bundle for v1, attached to v2.
    let bundle = make_v3_signature_bundle(&sigstore, &leaf, &format!("{host}/apps/app"), &digest, unix_now());
    attach_v3_bundle(&host, "apps/app", &other, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
        .await
        .unwrap();
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    let status = pg.pull(&env.image_ref("apps/app", "v2"), None).await.unwrap_err();
    assert!(
        status.message().contains("signs another digest"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_trust_material_and_keeps_the_last_good_one() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    push_keyless(&env, &sigstore, WORKFLOW, true).await;
    let root = sigstore.write_trusted_root(env.dir());
    let pg = env.start_pullgate(&keyless_policy(&env, &root, SUBJECT_REGEXP)).await;
    let image = env.image_ref("apps/app", "v1");
    pg.pull(&image, None)
        .await
        .expect("allowed under the first trust material");

    // A broken trusted root is refused; the policy and trust in force stay.
    std::fs::write(
        &root,
        "{\"mediaType\": \"application/vnd.dev.sigstore.trustedroot+json;version=0.1\", \"tlogs\": [{}]}",
    )
    .unwrap();
    pg.reload();
    pg.wait_for_log("policy reload refused").await;
    pg.pull(&image, None)
        .await
        .expect("the last good trust material is still in force");

    // Another Sigstore's root is accepted, and the image's signer is no longer trusted.
    TestSigstore::new().write_trusted_root(env.dir());
    pg.reload();
    pg.wait_for_log("policy reloaded").await;
    let status = pg.pull(&image, None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
    let shown = pg
        .client()
        .image_status(pullgate_tests::cri::image_status_request(&image))
        .await
        .unwrap();
    assert!(
        shown.into_inner().image.is_none(),
        "a new trust generation forgets earlier verifications"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulcio_claims_must_match_the_policy_extensions_exactly() {
    use pullgate_tests::sigstore::fulcio::SOURCE_REPOSITORY_URI;
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let digest = env.push_image("apps/app", "v1", "claims").await;
    let request = LeafRequest::new(SanKind::Uri(WORKFLOW.into()), ISSUER)
        .claim(SOURCE_REPOSITORY_URI, "https://github.com/org/repo");
    let leaf = sigstore.issue(&request);
    let signed = LegacySigned::keyless(
        &leaf,
        &Signer::payload_for(&format!("{}/apps/app", env.host()), &digest),
    );
    let entry = signed.log(&sigstore.rekor, unix_now());
    attach_keyless_signature(&env.host(), "apps/app", &digest, &signed, Some(&entry), true, None)
        .await
        .unwrap();
    let image = env.image_ref("apps/app", "v1");

    for (expected, allowed) in [
        ("https://github.com/org/repo", true),
        ("https://github.com/org/repo-evil", false),
    ] {
        let policy = keyless_policy(&env, &root, SUBJECT_REGEXP)
            + &format!("            extensions:\n              sourceRepositoryURI: {expected}\n");
        let pg = env.start_pullgate(&policy).await;
        let outcome = pg.pull(&image, None).await;
        assert_eq!(outcome.is_ok(), allowed, "{expected}: {outcome:?}");
        if !allowed {
            let message = outcome.unwrap_err().message().to_string();
            assert!(message.contains("identity mismatch"), "{message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signature_with_a_rekor_set_satisfies_a_required_log() {
    use pullgate_tests::sigstore::attach::attach_key_signature;
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let image = env.image_ref("apps/app", "v1");
    let policy = || {
        format!(
            "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: key-and-log
spec:
  trustedRoot: {}
  rules:
    - name: apps
      images: [\"{}/apps/**\"]
      authorities:
        - name: release-key
          tlog: required
          key:
            publicKey: |
{}",
            root.display(),
            env.host(),
            pullgate_tests::policy::key_block(&env.signer.public_key_pem())
        )
    };
    for with_set in [true, false] {
        let digest = env
            .push_image("apps/app", "v1", &format!("key and log {with_set}"))
            .await;
        let signed = LegacySigned::with_key(
            &env.signer,
            &Signer::payload_for(&format!("{}/apps/app", env.host()), &digest),
        );
        let entry = signed.log(&sigstore.rekor, unix_now());
        attach_key_signature(
            &env.host(),
            "apps/app",
            &digest,
            &signed,
            with_set.then_some(&entry),
            None,
        )
        .await
        .unwrap();
        let pg = env.start_pullgate(&policy()).await;
        let outcome = pg.pull(&image, None).await;
        if with_set {
            outcome.unwrap_or_else(|s| panic!("{}", s.message()));
            let evidence = &pg.last_record()["signatures"][0];
            assert_eq!(evidence["kind"], "key");
            assert_eq!(evidence["timeSource"], "tlog");
            assert!(evidence["tlogIndex"].is_u64());
        } else {
            let message = outcome.unwrap_err().message().to_string();
            assert!(message.contains("no verified tlog entry"), "{message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pullgate_verify_prints_the_decision_and_evidence_as_json() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = push_keyless(&env, &sigstore, WORKFLOW, true).await;
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    let unsigned = env.push_image("apps/unsigned", "v1", "nope").await;
    let run = |image: String| {
        Pullgate::command()
            .args(["verify", "--output", "json", "--config"])
            .arg(pg.config_path())
            .arg(image)
            .output()
            .unwrap()
    };
    let out = run(env.image_ref("apps/app", "v1"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    assert_eq!(record["signatures"][0]["subject"], WORKFLOW);
    assert_eq!(record["signatures"][0]["issuer"], ISSUER);

    let out = run(env.image_ref("apps/unsigned", "v1"));
    assert_eq!(out.status.code(), Some(1));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["digest"], unsigned);
    // `verify` decides without pulling and without writing the node's audit log.
    assert!(pg.audit_records().is_empty());
}

/// Signs `repo:tag` with `leaf`: a legacy `.sig` with a SET for `apps/legacy`, a cosign v3
/// bundle for `apps/v3`.
async fn push_signed_by(env: &TestEnv, sigstore: &TestSigstore, repo: &str, tag: &str, leaf: &Leaf) {
    let host = env.host();
    let digest = env.push_image(repo, tag, &format!("{repo} {tag}")).await;
    if repo == "apps/v3" {
        let bundle = make_v3_signature_bundle(sigstore, leaf, &format!("{host}/{repo}"), &digest, unix_now());
        attach_v3_bundle(&host, repo, &digest, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
            .await
            .unwrap();
    } else {
        let signed = LegacySigned::keyless(leaf, &Signer::payload_for(&format!("{host}/{repo}"), &digest));
        let entry = signed.log(&sigstore.rekor, unix_now());
        attach_keyless_signature(&host, repo, &digest, &signed, Some(&entry), true, None)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_must_name_exactly_one_identity() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let workflow = || SanKind::Uri(WORKFLOW.into());
    // Accepts the workflow, the username `alice`, and the empty string a SAN-less certificate
    // was once read as.
    let regexp = r"^(https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*|alice)?$";
    let cases = [
        ("one-uri", vec![workflow()], Some(WORKFLOW)),
        ("one-username", vec![SanKind::Username("alice".into())], Some("alice")),
        (
            "uri-then-email",
            vec![workflow(), SanKind::Email("mallory@evil.example".into())],
            None,
        ),
        (
            "dns-then-uri",
            vec![SanKind::Dns("evil.example".into()), workflow()],
            None,
        ),
        (
            "username-then-uri",
            vec![SanKind::Username("mallory".into()), workflow()],
            None,
        ),
        (
            "uri-then-username",
            vec![workflow(), SanKind::Username("mallory".into())],
            None,
        ),
        ("none", vec![], None),
    ];
    for repo in ["apps/legacy", "apps/v3"] {
        for (tag, sans, _) in &cases {
            let leaf = sigstore.issue(&LeafRequest::new(workflow(), ISSUER).sans(sans.clone()));
            push_signed_by(&env, &sigstore, repo, tag, &leaf).await;
        }
    }
    let pg = start(&env, &sigstore, regexp).await;
    for repo in ["apps/legacy", "apps/v3"] {
        for (tag, _, allowed_as) in &cases {
            let image = env.image_ref(repo, tag);
            match (pg.pull(&image, None).await, allowed_as) {
                (Ok(_), Some(subject)) => {
                    assert_eq!(pg.last_record()["signatures"][0]["subject"], *subject, "{image}");
                }
                (Err(status), None) => {
                    let message = status.message();
                    assert!(message.contains("identity mismatch"), "{image}: {message}");
                }
                (outcome, _) => panic!("{image}: {outcome:?}\n{}", pg.log()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_root_without_ct_logs_asks_for_no_sct() {
    // GitHub's Fulcio instance has no CT log; SPEC §4 asks for an SCT only when the root lists one.
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let request = LeafRequest::new(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let without_sct = sigstore.fulcio.issue(None, &request);
    for repo in ["apps/legacy", "apps/v3"] {
        push_signed_by(&env, &sigstore, repo, "v1", &without_sct).await;
    }
    let mut root = sigstore.trusted_root_value();
    root["ctlogs"] = serde_json::json!([]);
    let path = env.dir().join("trusted_root_without_ct.json");
    std::fs::write(&path, root.to_string()).unwrap();
    let pg = env.start_pullgate(&keyless_policy(&env, &path, SUBJECT_REGEXP)).await;
    for repo in ["apps/legacy", "apps/v3"] {
        pg.pull(&env.image_ref(repo, "v1"), None)
            .await
            .unwrap_or_else(|s| panic!("{repo}: {}\n{}", s.message(), pg.log()));
        assert_eq!(pg.last_record()["signatures"][0]["subject"], WORKFLOW);
    }

    // With the CT log listed, the same certificates lack the SCT it asks for.
    let listed = start(&env, &sigstore, SUBJECT_REGEXP).await;
    for repo in ["apps/legacy", "apps/v3"] {
        let status = listed.pull(&env.image_ref(repo, "v1"), None).await.unwrap_err();
        assert!(status.message().starts_with(PREFIX), "{repo}: {}", status.message());
    }
}

/// A policy whose rule `apps` requires the key `public_key_pem`, with `tlog`, and the trusted
/// root `root`.
fn key_policy_with_root(env: &TestEnv, root: &std::path::Path, public_key_pem: &str, tlog: &str) -> String {
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: key-and-log
spec:
  trustedRoot: {}
  rules:
    - name: apps
      images: [\"{}/apps/**\"]
      authorities:
        - name: release-key
          tlog: {tlog}
          key:
            publicKey: |
{}",
        root.display(),
        env.host(),
        pullgate_tests::policy::key_block(public_key_pem)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signature_with_a_certificate_has_its_log_entry_verified() {
    // `cosign sign --key … --certificate …`: the certificate is for the key, and the log entry
    // names the certificate. With `tlog: optional`, an entry that is there must verify; one
    // that does not makes the signature not count.
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let rogue = TestSigstore::new();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let key_pem = pullgate_tests::sigstore::pem("PUBLIC KEY", &leaf.public_key_der());
    let cases = [
        ("good-entry", Some(&sigstore)),
        ("rogue-entry", Some(&rogue)),
        ("no-entry", None),
    ];
    for (tag, log) in cases {
        let digest = env.push_image("apps/app", tag, tag).await;
        let signed = LegacySigned::keyless(
            &leaf,
            &Signer::payload_for(&format!("{}/apps/app", env.host()), &digest),
        );
        let entry = log.map(|log| signed.log(&log.rekor, unix_now()));
        attach_keyless_signature(&env.host(), "apps/app", &digest, &signed, entry.as_ref(), false, None)
            .await
            .unwrap();
    }
    let root = sigstore.write_trusted_root(env.dir());
    let pg = env
        .start_pullgate(&key_policy_with_root(&env, &root, &key_pem, "optional"))
        .await;
    for (tag, allowed) in [("good-entry", true), ("rogue-entry", false), ("no-entry", true)] {
        let outcome = pg.pull(&env.image_ref("apps/app", tag), None).await;
        assert_eq!(outcome.is_ok(), allowed, "{tag}: {outcome:?}\n{}", pg.log());
        if let Err(status) = outcome {
            // The key's own reason, not a keyless one the rule never asked for.
            assert!(status.message().contains("1 invalid"), "{}", status.message());
        }
    }
    let evidence = &pg.audit_records()[0]["signatures"][0];
    assert_eq!(evidence["kind"], "key");
    assert_eq!(evidence["timeSource"], "tlog");

    // Another key is not accepted through the certificate's entry.
    let other = env
        .start_pullgate(&key_policy_with_root(
            &env,
            &root,
            &env.signer.public_key_pem(),
            "optional",
        ))
        .await;
    assert!(other
        .pull(&env.image_ref("apps/app", "good-entry"), None)
        .await
        .is_err());

    // An authority that ignores the log accepts the key's signature whatever the entry says.
    let ignoring = env
        .start_pullgate(&key_policy_with_root(&env, &root, &key_pem, "ignore"))
        .await;
    ignoring
        .pull(&env.image_ref("apps/app", "rogue-entry"), None)
        .await
        .unwrap_or_else(|s| panic!("{}", s.message()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p384_key_signs_with_sha384_with_or_without_a_log_entry() {
    use aws_lc_rs::{
        encoding::AsDer as _,
        rand::SystemRandom,
        signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P384_SHA384_ASN1_SIGNING},
    };
    // cosign signs with sigstore's default scheme for the key: ECDSA P-384 with SHA-384.
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
    for (tag, logged) in [("logged", true), ("unlogged", false)] {
        let digest = env.push_image("apps/app", tag, tag).await;
        let payload = Signer::payload_for(&format!("{}/apps/app", env.host()), &digest);
        let signed = LegacySigned {
            signature: key.sign(&rng, &payload).unwrap().as_ref().to_vec(),
            payload,
            certificate_der: None,
            chain_der: Vec::new(),
            public_key_der: spki.clone(),
        };
        let entry = logged.then(|| signed.log(&sigstore.rekor, unix_now()));
        pullgate_tests::sigstore::attach_key_signature(&env.host(), "apps/app", &digest, &signed, entry.as_ref(), None)
            .await
            .unwrap();
    }
    let root = sigstore.write_trusted_root(env.dir());
    let pem = pullgate_tests::sigstore::pem("PUBLIC KEY", &spki);
    let policy = key_policy_with_root(&env, &root, &pem, "optional");
    let pg = env.start_pullgate(&policy).await;
    for (tag, time_source) in [("logged", "tlog"), ("unlogged", "none")] {
        pg.pull(&env.image_ref("apps/app", tag), None)
            .await
            .unwrap_or_else(|s| panic!("{tag}: {}", s.message()));
        assert_eq!(pg.last_record()["signatures"][0]["timeSource"], time_source, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_statement_cosign_would_read_otherwise_is_denied() {
    use pullgate_tests::sigstore::{bundle::make_v3_dsse_bundle, BundleSigner};
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let host = env.host();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let other = env.push_image("apps/other", "v1", "another image").await;
    let statement = |tag: &str, digest: &str| -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let other = other.strip_prefix("sha256:").unwrap();
        let subject = format!(r#"[{{"name":"{host}/apps/app","digest":{{"sha256":"{hex}"}}}}]"#);
        match tag {
            "not-a-statement" => format!(
                r#"{{"_type":"https://example.com/NotAStatement","subject":{subject},"predicateType":"{COSIGN_SIGN_PREDICATE}","predicate":{{}}}}"#
            ),
            // Go reads the last `subject`, in any case: another image.
            "second-subject" => format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":{subject},"predicateType":"{COSIGN_SIGN_PREDICATE}","predicate":{{}},"Subject":[{{"digest":{{"sha256":"{other}"}}}}]}}"#
            ),
            _ => format!(
                r#"{{"_type":"https://in-toto.io/Statement/v0.1","subject":{subject},"predicateType":"{COSIGN_SIGN_PREDICATE}","predicate":{{}}}}"#
            ),
        }
        .into_bytes()
    };
    let cases = [
        ("v01-statement", true),
        ("not-a-statement", false),
        ("second-subject", false),
    ];
    for (tag, _) in cases {
        let digest = env.push_image("apps/app", tag, tag).await;
        let bundle = make_v3_dsse_bundle(
            &sigstore.rekor,
            BundleSigner::Leaf(&leaf),
            &statement(tag, &digest),
            unix_now(),
        );
        attach_v3_bundle(&host, "apps/app", &digest, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
            .await
            .unwrap();
    }
    let pg = start(&env, &sigstore, SUBJECT_REGEXP).await;
    for (tag, allowed) in cases {
        let outcome = pg.pull(&env.image_ref("apps/app", tag), None).await;
        assert_eq!(outcome.is_ok(), allowed, "{tag}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_regexp_classes_are_ascii_as_in_cosign() {
    // cosign's Go RE2 `\s` is [\t\n\f\r ]: a vertical tab is not a space to it.
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    push_keyless(&env, &sigstore, &format!("{WORKFLOW}\u{0b}"), true).await;
    let regexp = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v\d+\s?$";
    let pg = start(&env, &sigstore, regexp).await;
    let status = pg.pull(&env.image_ref("apps/app", "v1"), None).await.unwrap_err();
    assert!(status.message().contains("identity mismatch"), "{}", status.message());

    push_keyless(&env, &sigstore, &format!("{WORKFLOW} "), true).await;
    let pg = start(&env, &sigstore, regexp).await;
    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
}
