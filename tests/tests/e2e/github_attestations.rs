//! GitHub artifact attestations at the node, end to end. `actions/attest` with push-to-registry
//! attaches one thing to an image: a Sigstore bundle v0.3 (DSSE, in-toto Statement v1, SLSA
//! provenance v1) as an OCI referrer announcing its predicate type, with no cosign signature.
//! Made here by the test Sigstore in that shape and pushed to the real registry, such images
//! are judged by the real pullgate in front of a real containerd: a rule with
//! `requireSignature: false` admits them on their provenance alone, and nothing else does.

use std::path::Path;

use pullgate_tests::{
    sigstore::{
        attach::attach_v3_bundle, bundle::in_toto_statement, make_v3_dsse_bundle, unix_now, BundleSigner, Leaf,
        SanKind, TestSigstore, Tsa,
    },
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main";
const FORK: &str = "https://github.com/fork/repo/.github/workflows/release.yml@refs/heads/main";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const PREFIX: &str = "SignatureValidationFailed: ";
const CONDITION: &str =
    r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#;

/// The provenance `actions/attest-build-provenance` writes, as far as the rule reads it.
fn provenance(repository: &str) -> Value {
    json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"ref": "refs/heads/main", "repository": repository, "path": ".github/workflows/release.yml"}},
            "internalParameters": {"github": {"event_name": "push", "repository_id": "1", "repository_owner_id": "2"}},
            "resolvedDependencies": [{"uri": format!("git+{repository}@refs/heads/main"), "digest": {"gitCommit": "a".repeat(40)}}]
        },
        "runDetails": {"builder": {"id": format!("{WORKFLOW}")}, "metadata": {"invocationId": format!("{repository}/actions/runs/1/attempts/1")}}
    })
}

/// The policy a GitHub user writes (docs/github-attestations.md), over the test registry.
/// `require_signature` is `None` for the default.
fn github_policy(root: &Path, host: &str, require_signature: Option<bool>, tlog: &str) -> String {
    let require = require_signature.map_or(String::new(), |r| format!("      requireSignature: {r}\n"));
    format!(
        r#"apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: github
spec:
  trustedRoot: {root:?}
  rules:
    - name: github-attested
      images: ["{host}/org/**"]
{require}      authorities:
        - name: github
          keyless:
            issuer: {ISSUER}
            subjectRegExp: '^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/heads/main$'
          tlog: {tlog}
      attestations:
        - name: provenance
          predicateType: {SLSA_V1}
          conditions:
            - '{CONDITION}'
"#,
        root = root.display().to_string(),
    )
}

/// A registry and containerd, the test Sigstore standing in for GitHub's, and the workflow's
/// certificate.
struct Github {
    env: TestEnv,
    sigstore: TestSigstore,
    leaf: Leaf,
}

impl Github {
    async fn new() -> Github {
        let env = TestEnv::start().await;
        let sigstore = TestSigstore::new();
        let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        Github { env, sigstore, leaf }
    }

    /// Pushes `org/<repo>:v1`, unsigned, and attaches provenance as `actions/attest` does:
    /// about `subject` (the image unless given), from `repository`, signed by `leaf`, logged
    /// in Rekor. Returns the image reference.
    async fn attested(&self, repo: &str, leaf: &Leaf, subject: Option<&str>, repository: &str) -> String {
        let bundle = |digest: &str| {
            let name = format!("{}/org/{repo}", self.env.host());
            let statement = in_toto_statement(&name, subject.unwrap_or(digest), SLSA_V1, provenance(repository));
            make_v3_dsse_bundle(&self.sigstore.rekor, BundleSigner::Leaf(leaf), &statement, unix_now())
        };
        self.push_with(repo, bundle).await
    }

    /// Pushes `org/<repo>:v1` and attaches the bundle `make` makes for its digest.
    async fn push_with(&self, repo: &str, make: impl FnOnce(&str) -> String) -> String {
        let repo = format!("org/{repo}");
        let digest = self.env.push_image(&repo, "v1", &format!("{repo} content")).await;
        let bundle = make(&digest);
        attach_v3_bundle(&self.env.host(), &repo, &digest, &bundle, Some(SLSA_V1), None)
            .await
            .unwrap();
        self.env.image_ref(&repo, "v1")
    }

    async fn pullgate(&self, require_signature: Option<bool>) -> Pullgate {
        let root = self.sigstore.write_trusted_root(self.env.dir());
        let policy = github_policy(&root, &self.env.host(), require_signature, "required");
        self.env.start_pullgate(&policy).await
    }
}

async fn denied(pg: &Pullgate, image: &str) -> String {
    let status = pg.pull(image, None).await.expect_err("denied");
    let message = status.message().to_string();
    assert!(message.starts_with(PREFIX), "{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_alone_admits_an_image_github_attested_and_nothing_less() {
    let gh = Github::new().await;
    let fork = gh.sigstore.issue_fulcio_leaf(SanKind::Uri(FORK.into()), ISSUER);
    let other = format!("sha256:{}", "ab".repeat(32));
    let good = gh.attested("app", &gh.leaf, None, "https://github.com/org/repo").await;
    let elsewhere = gh
        .attested("moved", &gh.leaf, Some(&other), "https://github.com/org/repo")
        .await;
    let forked = gh.attested("forked", &fork, None, "https://github.com/org/repo").await;
    let built_elsewhere = gh
        .attested("built", &gh.leaf, None, "https://github.com/fork/repo")
        .await;
    let bare = gh.env.image_ref("org/bare", "v1");
    gh.env.push_image("org/bare", "v1", "nothing attached").await;

    let pg = gh.pullgate(Some(false)).await;
    pg.pull(&good, None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["outcome"], "pulled");
    assert_eq!(record["signatures"], json!([]), "no image signature was proven");
    let attestation = &record["attestations"][0];
    assert_eq!(attestation["name"], "provenance");
    assert_eq!(attestation["predicateType"], SLSA_V1);
    assert_eq!(attestation["result"], "pass");
    assert_eq!(attestation["signature"]["authority"], "github");
    assert_eq!(attestation["signature"]["subject"], WORKFLOW);
    assert_eq!(attestation["signature"]["issuer"], ISSUER);
    assert!(attestation["signature"]["tlogIndex"].is_u64(), "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("no signature required"), "{reason}");

    let no_signature = "no signature required, but the attestations that must prove the image do not: \
                        attestation \"provenance\" (SLSA provenance v1, https://slsa.dev/provenance/v1): ";
    for (image, why) in [
        (&elsewhere, format!("statement is about {other}, not this image")),
        (&forked, "identity mismatch".to_string()),
        (&built_elsewhere, "workflow.repository == ".to_string()),
        (&bare, "no attestation of this predicate type".to_string()),
    ] {
        let message = denied(&pg, image).await;
        assert!(message.contains(no_signature), "{image}: {message}");
        assert!(message.contains(&why), "{image}: {why}: {message}");
        let record = pg.last_record();
        assert_eq!(record["decision"], "deny");
        assert_eq!(record["attestations"][0]["result"], "fail", "{record}");
        assert!(record["attestations"][0]["signature"].is_null(), "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_requires_a_signature_denies_the_same_image() {
    let gh = Github::new().await;
    let image = gh.attested("app", &gh.leaf, None, "https://github.com/org/repo").await;
    for require_signature in [None, Some(true)] {
        let pg = gh.pullgate(require_signature).await;
        let message = denied(&pg, &image).await;
        assert!(
            message.contains("no signature from authority \"github\" (no signatures found)"),
            "{require_signature:?}: {message}"
        );
    }
}

/// A private repository's attestation: GitHub's own Fulcio and TSA, no Rekor entry. The
/// authority does not require the log, and the TSA is in the trusted root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_attestation_timestamped_without_a_log_is_admitted() {
    let gh = Github::new().await;
    let tsa = Tsa::generate();
    let image = gh
        .push_with("private", |digest| {
            let name = format!("{}/org/private", gh.env.host());
            let statement = in_toto_statement(&name, digest, SLSA_V1, provenance("https://github.com/org/repo"));
            let logged = make_v3_dsse_bundle(&gh.sigstore.rekor, BundleSigner::Leaf(&gh.leaf), &statement, unix_now());
            let mut bundle: Value = serde_json::from_str(&logged).unwrap();
            let signature = bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap();
            let signature = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signature).unwrap();
            let token = tsa.stamp(&signature, unix_now(), "");
            bundle["verificationMaterial"]["tlogEntries"] = json!([]);
            bundle["verificationMaterial"]["timestampVerificationData"] = json!({"rfc3161Timestamps": [
                {"signedTimestamp": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, token)}
            ]});
            bundle.to_string()
        })
        .await;
    let mut root = gh.sigstore.trusted_root_value();
    tsa.trust_in(&mut root);
    let root_path = gh.env.dir().join("github_trusted_root.json");
    std::fs::write(&root_path, root.to_string()).unwrap();

    let pg = gh
        .env
        .start_pullgate(&github_policy(&root_path, &gh.env.host(), Some(false), "optional"))
        .await;
    pg.pull(&image, None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["attestations"][0]["result"], "pass");
    assert!(
        record["attestations"][0]["signature"]["tlogIndex"].is_null(),
        "{record}"
    );
}

/// A policy-controller ClusterImagePolicy whose authority passes on its provenance alone is
/// imported as a rule with `requireSignature: false`, not as a stricter one, and that rule
/// admits the GitHub-attested image and nothing less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_controller_policy_passing_on_provenance_imports_to_a_rule_that_admits_it() {
    let gh = Github::new().await;
    let good = gh.attested("app", &gh.leaf, None, "https://github.com/org/repo").await;
    let bare = gh.env.image_ref("org/bare", "v1");
    gh.env.push_image("org/bare", "v1", "nothing attached").await;
    let cip = format!(
        r#"apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: github
spec:
  images:
    - glob: "{host}/org/**"
  authorities:
    - name: github
      keyless:
        url: https://fulcio.sigstore.dev
        identities:
          - issuer: {ISSUER}
            subjectRegExp: '^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/heads/main$'
      ctlog:
        url: https://rekor.sigstore.dev
      attestations:
        - name: provenance
          predicateType: {SLSA_V1}
"#,
        host = gh.env.host()
    );
    let input = gh.env.dir().join("cip.yaml");
    std::fs::write(&input, cip).unwrap();
    let root = gh.sigstore.write_trusted_root(gh.env.dir());
    let out = Pullgate::command()
        .args(["policy", "import", "--trusted-root"])
        .arg(&root)
        .arg(&input)
        .output()
        .unwrap();
    let (policy, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing dropped or made stricter: {stderr}\n{policy}"
    );
    assert!(
        stderr
            .contains("passes this authority on its attestations alone, without an image signature; so does pullgate"),
        "{stderr}"
    );
    assert!(policy.contains("requireSignature: false"), "{policy}");

    let pg = gh.env.start_pullgate(&policy).await;
    pg.pull(&good, None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{policy}", e.message()));
    let message = denied(&pg, &bare).await;
    assert!(message.contains("no signature required"), "{message}");
}
