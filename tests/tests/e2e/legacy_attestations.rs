//! Legacy `cosign attest` attestations at the node, end to end: DSSE envelopes in layers of the
//! `sha256-<hex>.att` tag, logged as intoto 0.0.1 entries whose SET pullgate checks with its own
//! code, signed keyless by the test Sigstore or with the test key. Also key-signed cosign v3
//! attestation bundles.

use pullgate_tests::{
    cosign::{attach_attestation_layer, BUNDLE_ANNOTATION},
    policy::keyless_attestation_policy,
    sigstore::{
        attach::{attach_key_signature, attach_v3_bundle},
        bundle::{in_toto_statement, make_v3_dsse_bundle, make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        make_legacy_attestation, unix_now, BundleSigner, Leaf, LeafRequest, LegacyAttestation, LegacySigned, Rekor,
        SanKind, TestSigstore,
    },
    Pullgate, Signer, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const SPDX: &str = "https://spdx.dev/Document";

const SBOM_RULE: &str = "        - name: sbom
          predicateType: https://cyclonedx.org/bom
          maxAge: 2160h
          conditions:
            - 'size(predicate.components) > 0'
";

fn sbom(components: usize) -> Value {
    let components: Vec<Value> = (0..components)
        .map(|i| json!({"type": "library", "name": format!("lib{i}")}))
        .collect();
    json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components})
}

/// One image signed keyless (cosign v3), to which legacy attestations are attached.
struct Image {
    env: TestEnv,
    sigstore: TestSigstore,
    leaf: Leaf,
    digest: String,
}

impl Image {
    async fn keyless() -> Image {
        let env = TestEnv::start().await;
        let sigstore = TestSigstore::with_intermediate();
        let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let digest = env.push_image("apps/app", "v1", "legacy-attested").await;
        let signature = make_v3_signature_bundle(&sigstore, &leaf, &name(&env), &digest, unix_now());
        attach_v3_bundle(
            &env.host(),
            "apps/app",
            &digest,
            &signature,
            Some(COSIGN_SIGN_PREDICATE),
            None,
        )
        .await
        .unwrap();
        Image {
            env,
            sigstore,
            leaf,
            digest,
        }
    }

    /// A statement of `predicate_type` about this image.
    fn statement(&self, predicate_type: &str, predicate: Value) -> Vec<u8> {
        in_toto_statement(&name(&self.env), &self.digest, predicate_type, predicate)
    }

    async fn attach(&self, attestation: &LegacyAttestation) {
        attach_att(&self.env, "apps/app", &self.digest, attestation).await;
    }

    async fn pullgate(&self, attestations: &str) -> Pullgate {
        let root = self.sigstore.write_trusted_root(self.env.dir());
        let images = format!("{}/apps/**", self.env.host());
        let policy = keyless_attestation_policy(&root, &images, ISSUER, WORKFLOW, attestations);
        self.env.start_pullgate(&policy).await
    }

    fn image(&self) -> String {
        self.env.image_ref("apps/app", "v1")
    }
}

fn name(env: &TestEnv) -> String {
    format!("{}/apps/app", env.host())
}

async fn denied(pg: &Pullgate, image: &str) -> String {
    let status = pg.pull(image, None).await.unwrap_err();
    status.message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_att_layer_with_an_intoto_set_is_allowed() {
    let image = Image::keyless().await;
    let statement = image.statement(CYCLONEDX, sbom(2));
    let now = unix_now();
    let attestation = make_legacy_attestation(
        Some(&image.sigstore.rekor),
        BundleSigner::Leaf(&image.leaf),
        &statement,
        now,
    );
    image.attach(&attestation).await;
    let pg = image.pullgate(SBOM_RULE).await;
    pg.pull(&image.image(), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let record = pg.last_record();
    let outcome = &record["attestations"][0];
    assert_eq!(outcome["result"], "pass", "{record}");
    assert_eq!(outcome["predicateType"], CYCLONEDX);
    assert_eq!(outcome["signature"]["kind"], "keyless");
    assert_eq!(outcome["signature"]["subject"], WORKFLOW);
    assert_eq!(outcome["signature"]["timeSource"], "tlog");
    assert_eq!(outcome["signature"]["signedAt"], now);
    let entry = attestation.entry.as_ref().unwrap();
    assert_eq!(outcome["signature"]["tlogIndex"], entry.log_index);
}

/// Attaches what `make` builds for a fresh keyless-signed image and returns pullgate's denial.
async fn denial_for(make: impl FnOnce(&Image) -> LegacyAttestation) -> String {
    let image = Image::keyless().await;
    let attestation = make(&image);
    image.attach(&attestation).await;
    let pg = image.pullgate(SBOM_RULE).await;
    let message = denied(&pg, &image.image()).await;
    assert!(
        message.contains("attestation \"sbom\""),
        "the denial names the attestation: {message}"
    );
    assert_eq!(pg.last_record()["attestations"][0]["result"], "fail");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_a_second_identity_is_denied() {
    let message = denial_for(|image| {
        // The policy's workflow first, then another identity: no longer read as the first.
        let request = LeafRequest::new(SanKind::Uri(WORKFLOW.into()), ISSUER).sans(vec![
            SanKind::Uri(WORKFLOW.into()),
            SanKind::Email("mallory@evil.example".into()),
        ]);
        let leaf = image.sigstore.issue(&request);
        let statement = image.statement(CYCLONEDX, sbom(2));
        make_legacy_attestation(
            Some(&image.sigstore.rekor),
            BundleSigner::Leaf(&leaf),
            &statement,
            unix_now(),
        )
    })
    .await;
    assert!(message.contains("2 identities"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grafted_set_is_denied() {
    let message = denial_for(|image| {
        let signer = BundleSigner::Leaf(&image.leaf);
        let rekor = Some(&image.sigstore.rekor);
        let mut attestation = make_legacy_attestation(rekor, signer, &image.statement(CYCLONEDX, sbom(2)), unix_now());
        let other = make_legacy_attestation(rekor, signer, &image.statement(CYCLONEDX, sbom(5)), unix_now());
        let entry = attestation
            .entry
            .as_ref()
            .unwrap()
            .with_set_of(other.entry.as_ref().unwrap());
        attestation
            .annotations
            .insert(BUNDLE_ANNOTATION.into(), entry.cosign_bundle_annotation());
        attestation
    })
    .await;
    assert!(message.contains("SET does not verify"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_logging_another_envelope_is_denied() {
    let message = denial_for(|image| {
        let signer = BundleSigner::Leaf(&image.leaf);
        let rekor = Some(&image.sigstore.rekor);
        // A valid entry with a valid SET, but for another envelope by the same signer.
        let mut attestation = make_legacy_attestation(rekor, signer, &image.statement(CYCLONEDX, sbom(2)), unix_now());
        let other = make_legacy_attestation(rekor, signer, &image.statement(CYCLONEDX, sbom(5)), unix_now());
        attestation
            .annotations
            .insert(BUNDLE_ANNOTATION.into(), other.annotations[BUNDLE_ANNOTATION].clone());
        attestation
    })
    .await;
    assert!(message.contains("content.hash differs"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_in_a_log_the_trust_root_does_not_name_is_denied() {
    let message = denial_for(|image| {
        let statement = image.statement(CYCLONEDX, sbom(2));
        make_legacy_attestation(
            Some(&Rekor::generate()),
            BundleSigner::Leaf(&image.leaf),
            &statement,
            unix_now(),
        )
    })
    .await;
    assert!(message.contains("no log of the trusted root"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_att_layer_without_a_log_entry_has_no_time_and_is_denied() {
    let message = denial_for(|image| {
        let statement = image.statement(CYCLONEDX, sbom(2));
        make_legacy_attestation(None, BundleSigner::Leaf(&image.leaf), &statement, unix_now())
    })
    .await;
    assert!(message.contains("no verified time"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_denied() {
    let message = denial_for(|image| {
        let stranger = TestSigstore::new().issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let statement = image.statement(CYCLONEDX, sbom(2));
        make_legacy_attestation(
            Some(&image.sigstore.rekor),
            BundleSigner::Leaf(&stranger),
            &statement,
            unix_now(),
        )
    })
    .await;
    assert!(message.contains("does not chain"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_att_layer_is_measured_by_its_logged_time() {
    let message = denial_for(|image| {
        // Signed 100 days ago by a certificate valid then, as the SET says.
        let old_leaf = image
            .sigstore
            .issue_expired_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER, 100);
        let statement = image.statement(CYCLONEDX, sbom(2));
        make_legacy_attestation(
            Some(&image.sigstore.rekor),
            BundleSigner::Leaf(&old_leaf),
            &statement,
            old_leaf.not_before() + 60,
        )
    })
    .await;
    assert!(message.contains("older than maxAge 2160h"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_att_layer_about_another_digest_is_denied() {
    let message = denial_for(|image| {
        let other = format!("sha256:{}", "cd".repeat(32));
        let statement = in_toto_statement(&name(&image.env), &other, CYCLONEDX, sbom(2));
        make_legacy_attestation(
            Some(&image.sigstore.rekor),
            BundleSigner::Leaf(&image.leaf),
            &statement,
            unix_now(),
        )
    })
    .await;
    assert!(message.contains("not this image"), "{message}");
}

/// An image signed with the env's key (legacy `.sig`, logged in the test Rekor), and a policy
/// whose key authority (with `tlog`) must also sign an SPDX SBOM of it.
async fn key_signed(tlog: &str) -> (TestEnv, TestSigstore, String, String) {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = env.push_image("keyed/app", "v1", "key-attested").await;
    let signed = LegacySigned::with_key(&env.signer, &Signer::payload_for(&name_of(&env, "keyed/app"), &digest));
    let entry = signed.log(&sigstore.rekor, unix_now());
    attach_key_signature(&env.host(), "keyed/app", &digest, &signed, Some(&entry), None)
        .await
        .unwrap();
    let root = sigstore.write_trusted_root(env.dir());
    let pem = pullgate_tests::policy::key_block(&env.signer.public_key_pem());
    let policy = format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: keyed
spec:
  trustedRoot: {root}
  rules:
    - name: keyed
      images: [\"{host}/keyed/**\"]
      authorities:
        - name: release-key
          tlog: {tlog}
          key:
            publicKey: |
{pem}      attestations:
        - name: sbom
          predicateType: https://spdx.dev/Document
          conditions:
            - 'predicate.spdxVersion == \"SPDX-2.3\"'
",
        root = root.display(),
        host = env.host(),
    );
    (env, sigstore, digest, policy)
}

fn spdx() -> Value {
    json!({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "app", "packages": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_signed_attestations_legacy_and_v3_are_allowed() {
    // Legacy .att, logged as intoto 0.0.1; the key authority requires the log entry.
    let (env, sigstore, digest, policy) = key_signed("required").await;
    let statement = in_toto_statement(&name_of(&env, "keyed/app"), &digest, SPDX, spdx());
    let attestation = make_legacy_attestation(
        Some(&sigstore.rekor),
        BundleSigner::Key(&env.signer),
        &statement,
        unix_now(),
    );
    attach_att(&env, "keyed/app", &digest, &attestation).await;
    let pg = env.start_pullgate(&policy).await;
    pg.pull(&env.image_ref("keyed/app", "v1"), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let outcome = &pg.last_record()["attestations"][0];
    assert_eq!(outcome["result"], "pass");
    assert_eq!(outcome["signature"]["kind"], "key");
    assert_eq!(outcome["signature"]["timeSource"], "tlog");

    // A cosign v3 bundle signed with the key.
    let (env, sigstore, digest, policy) = key_signed("required").await;
    let statement = in_toto_statement(&name_of(&env, "keyed/app"), &digest, SPDX, spdx());
    let bundle = make_v3_dsse_bundle(&sigstore.rekor, BundleSigner::Key(&env.signer), &statement, unix_now());
    attach_v3_bundle(&env.host(), "keyed/app", &digest, &bundle, Some(SPDX), None)
        .await
        .unwrap();
    let pg = env.start_pullgate(&policy).await;
    pg.pull(&env.image_ref("keyed/app", "v1"), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    assert_eq!(pg.last_record()["attestations"][0]["signature"]["kind"], "key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signed_att_layer_without_a_log_entry_needs_tlog_optional() {
    for (tlog, allowed) in [("optional", true), ("required", false)] {
        let (env, _sigstore, digest, policy) = key_signed(tlog).await;
        let statement = in_toto_statement(&name_of(&env, "keyed/app"), &digest, SPDX, spdx());
        let attestation = make_legacy_attestation(None, BundleSigner::Key(&env.signer), &statement, unix_now());
        attach_att(&env, "keyed/app", &digest, &attestation).await;
        // The image's own signature is logged, so only the attestation can deny.
        let pg = env.start_pullgate(&policy).await;
        let outcome = pg.pull(&env.image_ref("keyed/app", "v1"), None).await;
        assert_eq!(outcome.is_ok(), allowed, "tlog {tlog}: {outcome:?}");
        let record = pg.last_record();
        if allowed {
            assert_eq!(record["attestations"][0]["result"], "pass", "{record}");
            assert_eq!(record["attestations"][0]["signature"]["timeSource"], "none");
        } else {
            let message = outcome.unwrap_err().message().to_string();
            assert!(
                message.contains("requires a verified transparency-log entry"),
                "{message}"
            );
            assert_eq!(record["attestations"][0]["result"], "fail", "{record}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_att_layer_signed_by_another_key_is_denied() {
    let (env, sigstore, digest, policy) = key_signed("optional").await;
    let stranger = Signer::generate();
    let statement = in_toto_statement(&name_of(&env, "keyed/app"), &digest, SPDX, spdx());
    let attestation = make_legacy_attestation(
        Some(&sigstore.rekor),
        BundleSigner::Key(&stranger),
        &statement,
        unix_now(),
    );
    attach_att(&env, "keyed/app", &digest, &attestation).await;
    let pg = env.start_pullgate(&policy).await;
    let message = denied(&pg, &env.image_ref("keyed/app", "v1")).await;
    assert!(message.contains("attestation \"sbom\""), "{message}");
    assert!(message.contains("key"), "{message}");
}

/// Appends `attestation` to the `.att` image of `repo@digest` in `env`'s registry.
async fn attach_att(env: &TestEnv, repo: &str, digest: &str, attestation: &LegacyAttestation) {
    attach_attestation_layer(
        &env.host(),
        repo,
        digest,
        &attestation.envelope_json,
        attestation.annotations.clone(),
        None,
    )
    .await
    .unwrap();
}

fn name_of(env: &TestEnv, repo: &str) -> String {
    format!("{}/{repo}", env.host())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_authority_that_ignores_the_log_accepts_an_entry_from_an_unknown_log() {
    for (tlog, allowed) in [("ignore", true), ("optional", false)] {
        let (env, _sigstore, digest, policy) = key_signed(tlog).await;
        let statement = in_toto_statement(&name_of(&env, "keyed/app"), &digest, SPDX, spdx());
        // Logged in a private Rekor the trust root does not name.
        let attestation = make_legacy_attestation(
            Some(&Rekor::generate()),
            BundleSigner::Key(&env.signer),
            &statement,
            unix_now(),
        );
        attach_att(&env, "keyed/app", &digest, &attestation).await;
        let pg = env.start_pullgate(&policy).await;
        let outcome = pg.pull(&env.image_ref("keyed/app", "v1"), None).await;
        assert_eq!(outcome.is_ok(), allowed, "tlog {tlog}: {outcome:?}");
        if !allowed {
            let message = outcome.unwrap_err().message().to_string();
            assert!(message.contains("no log of the trusted root"), "{message}");
        }
    }
}
