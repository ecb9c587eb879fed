//! The example policies in `examples/policies/` are loaded and checked as shipped (with the
//! test trust root standing in for the node's), their conditions are held against statements
//! that meet them and statements that do not, and two of them gate real pulls.

use std::path::{Path, PathBuf};

use pullgate::policy::{evaluate_conditions, Mode, Policy};
use pullgate_tests::{
    sigstore::{
        attach::attach_v3_bundle,
        bundle::{in_toto_statement, make_v3_dsse_bundle, make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        unix_now, BundleSigner, LeafRequest, SanKind, TestSigstore,
    },
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const EXAMPLES: [&str; 4] = [
    "github-actions-sbom.yaml",
    "trivy-vuln-gate.yaml",
    "slsa-provenance.yaml",
    "audit-rollout.yaml",
];
const NODE_TRUST_ROOT: &str = "/etc/pullgate/trust/trusted_root.json";
const WORKFLOW: &str = "https://github.com/example-org/app/.github/workflows/release.yml@refs/tags/v1.2.3";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `name` as a node would have it in `dir`: the trust root at `trusted_root`.
/// `registry.example.com` becomes `host` when given.
fn install(dir: &Path, name: &str, trusted_root: &Path, host: Option<&str>) -> PathBuf {
    let mut text = example(name);
    assert!(text.contains(NODE_TRUST_ROOT), "{name} names the node's trust root");
    text = text.replace(NODE_TRUST_ROOT, &trusted_root.display().to_string());
    if let Some(host) = host {
        text = text.replace("registry.example.com", host);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads every example and returns them by file name.
fn load_all(dir: &Path) -> Vec<(&'static str, Policy)> {
    let root = TestSigstore::new().write_trusted_root(dir);
    EXAMPLES
        .iter()
        .map(|name| {
            let path = install(dir, name, &root, None);
            let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, policy)
        })
        .collect()
}

fn conditions_hold(policy: &Policy, attestation: &str, statement: &Value) -> Result<(), String> {
    let required = policy
        .rules()
        .iter()
        .flat_map(|r| r.attestations())
        .find(|a| a.name == attestation)
        .unwrap_or_else(|| panic!("{}: no attestation {attestation:?}", policy.name()));
    evaluate_conditions(&required.conditions, statement).map_err(|f| f.to_string())
}

fn statement(predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": "ab".repeat(32)}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

#[test]
fn every_example_passes_policy_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = TestSigstore::new().write_trusted_root(dir.path());
    for name in EXAMPLES {
        let path = install(dir.path(), name, &root, None);
        let out = Pullgate::command()
            .args(["policy", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn each_example_says_what_it_promises() {
    let dir = tempfile::tempdir().unwrap();
    let policies = load_all(dir.path());
    let by_name = |name: &str| &policies.iter().find(|(n, _)| *n == name).unwrap().1;

    let sbom = by_name("github-actions-sbom.yaml");
    let rule = &sbom.rules()[1];
    let attestation = &rule.attestations()[0];
    assert_eq!(attestation.predicate_type, "https://cyclonedx.org/bom");
    assert_eq!(attestation.max_age.map(|d| d.as_secs()), Some(90 * 24 * 3600));
    assert_eq!(sbom.mode(), Mode::Enforce);

    let audit = by_name("audit-rollout.yaml");
    assert_eq!(audit.mode(), Mode::Audit);

    let gate = by_name("trivy-vuln-gate.yaml");
    let types: Vec<&str> = gate.rules()[0]
        .attestations()
        .iter()
        .map(|a| a.predicate_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            "https://security.sigstore.dev/attestations/dast/zap/v1"
        ]
    );
}

#[test]
fn example_conditions_hold_for_good_evidence_and_fail_for_bad() {
    let dir = tempfile::tempdir().unwrap();
    let policies = load_all(dir.path());
    let by_name = |name: &str| &policies.iter().find(|(n, _)| *n == name).unwrap().1;

    // CycloneDX: at least one component.
    let sbom = by_name("github-actions-sbom.yaml");
    let bom = |components: Value| {
        statement(
            "https://cyclonedx.org/bom",
            json!({"bomFormat": "CycloneDX", "components": components}),
        )
    };
    assert!(conditions_hold(sbom, "sbom", &bom(json!([{"type": "library", "name": "openssl"}]))).is_ok());
    assert!(conditions_hold(sbom, "sbom", &bom(json!([]))).is_err());

    // Trivy inside cosign's vuln predicate: no CRITICAL anywhere.
    let gate = by_name("trivy-vuln-gate.yaml");
    let scan = |results: Value| {
        statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            json!({
                "invocation": {"uri": "https://ci.example.com/run/1"},
                "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0",
                            "result": {"SchemaVersion": 2, "Results": results}},
                "metadata": {"scanStartedOn": "2026-11-23T00:00:00Z", "scanFinishedOn": "2026-11-23T00:01:00Z"}
            }),
        )
    };
    let clean = scan(json!([
        {"Target": "app (debian 12)", "Vulnerabilities": [{"VulnerabilityID": "CVE-1", "Severity": "HIGH"}]},
        {"Target": "go.mod"}
    ]));
    assert!(conditions_hold(gate, "trivy", &clean).is_ok());
    let critical = scan(json!([
        {"Target": "go.mod", "Vulnerabilities": [{"VulnerabilityID": "CVE-2", "Severity": "CRITICAL"}]}
    ]));
    let failure = conditions_hold(gate, "trivy", &critical).unwrap_err();
    assert!(
        failure.contains("CRITICAL"),
        "the failing condition is named: {failure}"
    );

    // ZAP: no high-risk alert.
    let zap = |riskcode: &str| {
        statement(
            "https://security.sigstore.dev/attestations/dast/zap/v1",
            json!({"site": [{"@name": "https://shop.example.com", "alerts": [{"pluginid": "10038", "riskcode": riskcode}]}]}),
        )
    };
    assert!(conditions_hold(gate, "dast", &zap("1")).is_ok());
    assert!(conditions_hold(gate, "dast", &zap("3")).is_err());

    // SLSA v1 provenance from the release workflow of the right repository, built from a tag.
    let slsa = by_name("slsa-provenance.yaml");
    let provenance = |repository: &str, git_ref: &str| {
        statement(
            "https://slsa.dev/provenance/v1",
            json!({
                "buildDefinition": {
                    "buildType": "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
                    "externalParameters": {"workflow": {"ref": git_ref, "repository": repository, "path": ".github/workflows/release.yml"}}
                },
                "runDetails": {"builder": {"id": "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v2.0.0"}}
            }),
        )
    };
    let platform = "https://github.com/example-org/platform";
    assert!(conditions_hold(slsa, "provenance", &provenance(platform, "refs/tags/v1.0.0")).is_ok());
    assert!(conditions_hold(
        slsa,
        "provenance",
        &provenance("https://github.com/example-org/fork", "refs/tags/v1.0.0")
    )
    .is_err());
    assert!(conditions_hold(slsa, "provenance", &provenance(platform, "refs/heads/main")).is_err());
}

/// An image in `env` signed keyless by the example's release workflow (with the claims it asks
/// for), carrying a CycloneDX SBOM of `components` components.
async fn signed_with_sbom(env: &TestEnv, sigstore: &TestSigstore, tag: &str, components: usize) -> String {
    let leaf = sigstore.issue(
        &LeafRequest::new(SanKind::Uri(WORKFLOW.into()), ISSUER).claim(12, "https://github.com/example-org/app"),
    );
    let digest = env.push_image("team/app", tag, tag).await;
    let name = format!("{}/team/app", env.host());
    let signature = make_v3_signature_bundle(sigstore, &leaf, &name, &digest, unix_now());
    attach_v3_bundle(
        &env.host(),
        "team/app",
        &digest,
        &signature,
        Some(COSIGN_SIGN_PREDICATE),
        None,
    )
    .await
    .unwrap();
    let components: Vec<Value> = (0..components)
        .map(|i| json!({"type": "library", "name": format!("lib{i}")}))
        .collect();
    let sbom = in_toto_statement(
        &name,
        &digest,
        "https://cyclonedx.org/bom",
        json!({"components": components}),
    );
    let bundle = make_v3_dsse_bundle(&sigstore.rekor, BundleSigner::Leaf(&leaf), &sbom, unix_now());
    attach_v3_bundle(
        &env.host(),
        "team/app",
        &digest,
        &bundle,
        Some("https://cyclonedx.org/bom"),
        None,
    )
    .await
    .unwrap();
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_actions_example_gates_real_pulls() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    signed_with_sbom(&env, &sigstore, "good", 3).await;
    signed_with_sbom(&env, &sigstore, "empty-sbom", 0).await;
    let root = sigstore.write_trusted_root(env.dir());
    let path = install(env.dir(), "github-actions-sbom.yaml", &root, Some(&env.host()));
    let pg = env.start_pullgate(&std::fs::read_to_string(path).unwrap()).await;
    pg.pull(&env.image_ref("team/app", "good"), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let message = pg
        .pull(&env.image_ref("team/app", "empty-sbom"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(message.contains("size(predicate.components) > 0"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_rollout_example_allows_and_records_what_enforce_would_deny() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    env.push_image("team/app", "unsigned", "unsigned").await;
    let root = sigstore.write_trusted_root(env.dir());
    let path = install(env.dir(), "audit-rollout.yaml", &root, Some(&env.host()));
    let pg: Pullgate = env.start_pullgate(&std::fs::read_to_string(path).unwrap()).await;
    pg.pull(&env.image_ref("team/app", "unsigned"), None)
        .await
        .unwrap_or_else(|e| panic!("audit mode never blocks: {}", e.message()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "audit-deny", "{record}");
    assert_eq!(record["rule"], "team-apps");
}

#[test]
fn policy_check_points_at_a_malformed_condition_and_an_unknown_predicate_type() {
    let dir = tempfile::tempdir().unwrap();
    let root = TestSigstore::new().write_trusted_root(dir.path());
    let path = install(dir.path(), "github-actions-sbom.yaml", &root, None);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("'size(predicate.components) > 0'", "'size(predicate.components > 0'")
        .replace("https://cyclonedx.org/bom     #", "cyclondx     #");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &text).unwrap();
    let out = Pullgate::command()
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let condition_line = line_of("size(predicate.components > 0");
    assert!(err.contains(&format!("bad.yaml:{condition_line}:")), "{err}");
    assert!(err.contains("conditions[0]"), "{err}");
    assert!(
        err.contains("size(predicate.components > 0"),
        "the expression is quoted: {err}"
    );
    let type_line = line_of("cyclondx");
    assert!(err.contains(&format!("bad.yaml:{type_line}:")), "{err}");
    assert!(err.contains("\"cyclondx\" is neither a URI"), "{err}");
}
