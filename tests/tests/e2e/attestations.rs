//! Attestations at the node, end to end: in-toto statements signed by the test Sigstore (keyless)
//! or the test key, attached as cosign v3 referrers to images in a real registry, required by
//! the policy and judged by the real pullgate in front of a real containerd.

use pullgate_tests::{
    policy::keyless_attestation_policy,
    sigstore::{
        attach::attach_v3_bundle,
        bundle::{in_toto_statement, make_v3_dsse_bundle, make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        unix_now, BundleSigner, Leaf, SanKind, TestSigstore,
    },
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const PREFIX: &str = "SignatureValidationFailed: ";

/// One image, signed keyless (cosign v3), and the means to attach statements about it.
struct Signed {
    env: TestEnv,
    sigstore: TestSigstore,
    leaf: Leaf,
    digest: String,
}

impl Signed {
    async fn new() -> Signed {
        let env = TestEnv::start().await;
        let sigstore = TestSigstore::new();
        let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let digest = env.push_image("apps/app", "v1", "attested").await;
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
        Signed {
            env,
            sigstore,
            leaf,
            digest,
        }
    }

    /// Attaches a statement of `predicate_type` about `subject` (this image unless given),
    /// signed by the image's leaf and logged at `integrated_time`.
    async fn attest(&self, predicate_type: &str, predicate: Value, subject: Option<&str>, integrated_time: i64) {
        let subject = subject.unwrap_or(&self.digest);
        let statement = in_toto_statement(&name(&self.env), subject, predicate_type, predicate);
        let bundle = make_v3_dsse_bundle(
            &self.sigstore.rekor,
            BundleSigner::Leaf(&self.leaf),
            &statement,
            integrated_time,
        );
        let host = self.env.host();
        attach_v3_bundle(&host, "apps/app", &self.digest, &bundle, Some(predicate_type), None)
            .await
            .unwrap();
    }

    /// Starts pullgate with a rule requiring `attestations` (YAML list items at 8 spaces).
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

const SBOM_RULE: &str = "        - name: sbom
          predicateType: https://cyclonedx.org/bom
          conditions:
            - 'size(predicate.components) > 0'
";

fn sbom(components: usize) -> Value {
    let components: Vec<Value> = (0..components)
        .map(|i| json!({"type": "library", "name": format!("lib{i}")}))
        .collect();
    json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sbom_whose_condition_holds_is_allowed() {
    let s = Signed::new().await;
    s.attest(CYCLONEDX, sbom(2), None, unix_now()).await;
    let pg = s.pullgate(SBOM_RULE).await;
    pg.pull(&s.image(), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["attestations"][0]["name"], "sbom");
    assert_eq!(record["attestations"][0]["predicateType"], CYCLONEDX);
    assert_eq!(record["attestations"][0]["result"], "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_attestation_is_denied_by_name() {
    let s = Signed::new().await;
    let pg = s.pullgate(SBOM_RULE).await;
    let status = pg.pull(&s.image(), None).await.unwrap_err();
    let message = status.message();
    assert!(message.starts_with(PREFIX), "{message}");
    assert!(
        message.contains(
            "attestation \"sbom\" (CycloneDX SBOM, https://cyclonedx.org/bom): no attestation of this predicate type"
        ),
        "{message}"
    );
    let record = pg.last_record();
    assert_eq!(record["attestations"][0]["result"], "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_is_denied_with_its_text() {
    let s = Signed::new().await;
    s.attest(CYCLONEDX, sbom(0), None, unix_now()).await;
    let pg = s.pullgate(SBOM_RULE).await;
    let message = pg.pull(&s.image(), None).await.unwrap_err().message().to_string();
    assert!(message.contains("size(predicate.components) > 0"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_about_another_digest_is_denied() {
    let s = Signed::new().await;
    let other = format!("sha256:{}", "ab".repeat(32));
    s.attest(CYCLONEDX, sbom(3), Some(&other), unix_now()).await;
    let pg = s.pullgate(SBOM_RULE).await;
    let message = pg.pull(&s.image(), None).await.unwrap_err().message().to_string();
    assert!(message.contains("not this image"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_older_than_max_age_is_denied_with_time_and_limit() {
    let s = Signed::new().await;
    // Signed 100 days ago by a certificate valid then.
    let old_leaf = s
        .sigstore
        .issue_expired_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER, 100);
    let statement = in_toto_statement(&name(&s.env), &s.digest, CYCLONEDX, sbom(1));
    let bundle = make_v3_dsse_bundle(
        &s.sigstore.rekor,
        BundleSigner::Leaf(&old_leaf),
        &statement,
        old_leaf.not_before() + 60,
    );
    attach_v3_bundle(&s.env.host(), "apps/app", &s.digest, &bundle, Some(CYCLONEDX), None)
        .await
        .unwrap();
    let rule = "        - name: sbom
          predicateType: https://cyclonedx.org/bom
          maxAge: 2160h
";
    let pg = s.pullgate(rule).await;
    let message = pg.pull(&s.image(), None).await.unwrap_err().message().to_string();
    assert!(message.contains("older than maxAge 2160h"), "{message}");
    assert!(message.contains("signed 20"), "the signing time is named: {message}");
    // Without the age limit the same attestation is accepted.
    let pg = s
        .pullgate("        - name: sbom\n          predicateType: https://cyclonedx.org/bom\n")
        .await;
    pg.pull(&s.image(), None)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slsa_provenance_from_the_right_repository_only() {
    let rule = "        - name: provenance
          predicateType: https://slsa.dev/provenance/v1
          conditions:
            - 'predicate.buildDefinition.externalParameters.workflow.repository == \"https://github.com/org/repo\"'
";
    for (repository, allowed) in [
        ("https://github.com/org/repo", true),
        ("https://github.com/org/other", false),
    ] {
        let s = Signed::new().await;
        let provenance = json!({
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"ref": "refs/tags/v1", "repository": repository, "path": ".github/workflows/release.yml"}}
            },
            "runDetails": {"builder": {"id": "https://github.com/actions/runner"}}
        });
        s.attest(SLSA_V1, provenance, None, unix_now()).await;
        let pg = s.pullgate(rule).await;
        let outcome = pg.pull(&s.image(), None).await;
        assert_eq!(outcome.is_ok(), allowed, "{repository}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vuln_scan_with_no_critical_findings_only() {
    let rule = "        - name: scan
          predicateType: https://cosign.sigstore.dev/attestation/vuln/v1
          conditions:
            - 'predicate.scanner.result.summary.critical == 0'
";
    for (critical, allowed) in [(0, true), (1, false)] {
        let s = Signed::new().await;
        let scan = json!({
            "invocation": {"uri": "https://github.com/org/repo/actions/runs/1"},
            "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0",
                        "result": {"summary": {"critical": critical, "high": 3}}},
            "metadata": {"scanStartedOn": "2026-11-23T00:00:00Z", "scanFinishedOn": "2026-11-23T00:01:00Z"}
        });
        s.attest(VULN, scan, None, unix_now()).await;
        let pg = s.pullgate(rule).await;
        let outcome = pg.pull(&s.image(), None).await;
        assert_eq!(outcome.is_ok(), allowed, "critical={critical}: {outcome:?}");
        if !allowed {
            let message = outcome.unwrap_err().message().to_string();
            assert!(
                message.contains("predicate.scanner.result.summary.critical == 0"),
                "{message}"
            );
        }
    }
}
