//! `pullgate policy import` end to end: Kyverno and policy-controller policies from
//! `tests/fixtures/import/` are imported by the real binary, the output passes `policy check`,
//! and `pullgate verify` with it decides real signed and unsigned images in a real registry as
//! the source policy would. The expected decisions below are read off the source policies.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use pullgate_tests::{
    sigstore::{
        attach::{attach_keyless_signature, attach_v3_bundle},
        bundle::{in_toto_statement, make_v3_dsse_bundle},
        unix_now, BundleSigner, LegacySigned, SanKind, TestSigstore,
    },
    tools::{notation, run},
    Pullgate, Signer, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

/// The public key written in the fixtures; each test puts its own signer's key in its place.
const FIXTURE_KEY: [&str; 2] = [
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjvch9g5YRvFJ43z0Ym0LOixUT92V",
    "zMVyA7IqqI/61uLMpkW6KCz+k7bxZjfo1axWp4aHaF7tfKlzRxLqAHEMxA==",
];

/// The fixture `name` as this test's cluster would have it: its registry and its release key.
fn fixture(env: &TestEnv, name: &str) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/import")
        .join(name);
    let mut text = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let pem = env.signer.public_key_pem();
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(body.len(), 2, "a P-256 key is two lines of base64");
    for (fixed, ours) in FIXTURE_KEY.iter().zip(&body) {
        text = text.replace(fixed, ours);
    }
    text = text.replace("registry.example.com", &env.host());
    let path = env.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What `pullgate policy import` did.
struct Imported {
    code: Option<i32>,
    policy: String,
    stderr: String,
    /// Where the policy was written.
    path: PathBuf,
}

fn import(input: &Path, trusted_root: &Path) -> Imported {
    let out = Pullgate::command()
        .args(["policy", "import", "--trusted-root"])
        .arg(trusted_root)
        .arg(input)
        .output()
        .unwrap();
    let policy = String::from_utf8(out.stdout).unwrap();
    let path = input.with_extension("pullgate.yaml");
    std::fs::write(&path, &policy).unwrap();
    Imported {
        code: out.status.code(),
        policy,
        stderr: String::from_utf8(out.stderr).unwrap(),
        path,
    }
}

/// `pullgate policy check` accepts the imported policy.
fn check(imported: &Imported) {
    let out = Pullgate::command()
        .args(["policy", "check"])
        .arg(&imported.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), imported.policy);
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `pullgate verify` with `policy` for the images `(repo:tag, expected decision)` pulled
/// into `namespace`, and checks each decision and the exit status.
fn expect(env: &TestEnv, policy: &Path, namespace: &str, cases: &[(&str, &str)]) {
    let config = env.dir().join(format!("verify-{namespace}.yaml"));
    std::fs::write(
        &config,
        format!(
            "policy: {}\nregistries:\n  - host: \"{}\"\n    insecure: true\n",
            policy.display(),
            env.host()
        ),
    )
    .unwrap();
    let images: Vec<String> = cases
        .iter()
        .map(|(image, _)| format!("{}/{image}", env.host()))
        .collect();
    let out = Pullgate::command()
        .args(["verify", "--output", "json", "--namespace", namespace, "--config"])
        .arg(&config)
        .args(&images)
        .output()
        .unwrap();
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{}", text(&out))))
        .collect();
    assert_eq!(records.len(), cases.len(), "{}", text(&out));
    for ((image, expected), record) in cases.iter().zip(&records) {
        assert_eq!(
            record["decision"], *expected,
            "{image} in namespace {namespace:?}: {}",
            record["reason"]
        );
    }
    let denied = cases.iter().any(|(_, decision)| *decision == "deny");
    assert_eq!(out.status.code(), Some(i32::from(denied)), "{}", text(&out));
}

/// Pushes `repo:tag` and signs it keyless (legacy `.sig`, logged) as `identity`.
async fn push_keyless(env: &TestEnv, sigstore: &TestSigstore, repo: &str, tag: &str, identity: &str) {
    let digest = env.push_image(repo, tag, &format!("{repo}:{tag} {identity}")).await;
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(identity.into()), ISSUER);
    let payload = Signer::payload_for(&format!("{}/{repo}", env.host()), &digest);
    let signed = LegacySigned::keyless(&leaf, &payload);
    let entry = signed.log(&sigstore.rekor, unix_now());
    attach_keyless_signature(&env.host(), repo, &digest, &signed, Some(&entry), true, None)
        .await
        .unwrap();
}

/// Attaches a statement of `predicate_type` about `repo@digest`, signed with `signer` (cosign v3
/// bundle, logged in the test Rekor).
async fn attest(
    env: &TestEnv,
    sigstore: &TestSigstore,
    signer: &Signer,
    repo: &str,
    digest: &str,
    predicate_type: &str,
    predicate: Value,
) {
    let statement = in_toto_statement(&format!("{}/{repo}", env.host()), digest, predicate_type, predicate);
    let bundle = make_v3_dsse_bundle(&sigstore.rekor, BundleSigner::Key(signer), &statement, unix_now());
    attach_v3_bundle(&env.host(), repo, digest, &bundle, Some(predicate_type), None)
        .await
        .unwrap();
}

fn sbom(components: usize) -> Value {
    let components: Vec<Value> = (0..components)
        .map(|i| json!({"type": "library", "name": format!("lib{i}")}))
        .collect();
    json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components})
}

fn scan(scanner: &str, severity: &str) -> Value {
    json!({
        "invocation": {"uri": "https://ci.example.com/runs/7"},
        "scanner": {
            "uri": scanner,
            "version": "0.50.0",
            "result": {"SchemaVersion": 2, "Results": [
                {"Target": "app", "Vulnerabilities": [{"VulnerabilityID": "CVE-2024-0001", "Severity": severity}]}
            ]}
        },
        "metadata": {"scanStartedOn": "2026-01-01T00:00:00Z", "scanFinishedOn": "2026-01-01T00:01:00Z"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kyverno_keyless_policy_decides_as_kyverno_would() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let release =
        |repo: &str, git_ref: &str| format!("https://github.com/{repo}/.github/workflows/release.yml@{git_ref}");
    push_keyless(
        &env,
        &sigstore,
        "apps/web",
        "v1",
        &release("example-org/web", "refs/tags/v1.4.0"),
    )
    .await;
    push_keyless(
        &env,
        &sigstore,
        "apps/team/api",
        "v2",
        &release("example-org/api", "refs/tags/v2.0.0"),
    )
    .await;
    env.push_image("apps/cron", "v1", "unsigned cron").await;
    env.push_image("apps/nested/job", "v1", "unsigned nested job").await;
    push_keyless(
        &env,
        &sigstore,
        "apps/fork",
        "v1",
        &release("example-org-fork/web", "refs/tags/v1"),
    )
    .await;
    push_keyless(
        &env,
        &sigstore,
        "apps/branch",
        "v1",
        &release("example-org/web", "refs/heads/main"),
    )
    .await;
    let embedded = format!(
        "https://evil.example.com/?u={}",
        release("example-org/web", "refs/tags/v1")
    );
    push_keyless(&env, &sigstore, "apps/embedded", "v1", &embedded).await;
    env.push_image("other/app", "v1", "unsigned, no policy").await;

    let imported = import(&fixture(&env, "kyverno-keyless.yaml"), &root);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    assert_eq!(imported.stderr, "", "everything carries over");
    assert!(imported
        .policy
        .starts_with("# Generated by `pullgate policy import` from "));
    assert!(imported
        .policy
        .contains(&format!("trustedRoot: \"{}\"", root.display())));
    assert!(imported.policy.contains(
        r#"subjectRegExp: "^https://github\\.com/example-org/.*/\\.github/workflows/release\\.yml@refs/tags/v.*$""#
    ));
    check(&imported);

    // Kyverno: in prod and team-* (not team-sandbox), every image under apps/ (its `*` spans
    // `/`) must be signed by an example-org release workflow from a v tag; Kyverno admits
    // images no policy matches.
    expect(
        &env,
        &imported.path,
        "prod",
        &[
            ("apps/web:v1", "allow"),
            ("apps/cron:v1", "deny"),
            ("apps/nested/job:v1", "deny"),
            ("apps/fork:v1", "deny"),
            ("apps/branch:v1", "deny"),
            ("apps/embedded:v1", "deny"),
            ("other/app:v1", "allow"),
        ],
    );
    expect(
        &env,
        &imported.path,
        "team-payments",
        &[("apps/team/api:v2", "allow"), ("apps/cron:v1", "deny")],
    );
    expect(&env, &imported.path, "team-sandbox", &[("apps/cron:v1", "allow")]);
    expect(&env, &imported.path, "dev", &[("apps/cron:v1", "allow")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kyverno_key_policy_with_a_cyclonedx_attestation_decides_as_kyverno_would() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let stranger = Signer::generate();
    for (tag, components) in [("good", 3), ("empty-sbom", 0)] {
        let digest = env.push_signed_image("shop/app", tag, tag).await;
        attest(
            &env,
            &sigstore,
            &env.signer,
            "shop/app",
            &digest,
            CYCLONEDX,
            sbom(components),
        )
        .await;
    }
    env.push_signed_image("shop/app", "no-sbom", "no sbom").await;
    let digest = env.push_image("shop/app", "unsigned", "unsigned with sbom").await;
    attest(&env, &sigstore, &env.signer, "shop/app", &digest, CYCLONEDX, sbom(2)).await;
    let digest = env.push_image("shop/app", "stranger", "a stranger's").await;
    stranger
        .sign_image(&env.host(), "shop/app", &digest, None)
        .await
        .unwrap();
    attest(&env, &sigstore, &stranger, "shop/app", &digest, CYCLONEDX, sbom(2)).await;

    let imported = import(&fixture(&env, "kyverno-key-sbom.yaml"), &root);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    assert_eq!(imported.stderr, "");
    // The attestations are Sigstore bundles, checked against the trusted root even when signed
    // with a key whose log is ignored.
    assert!(imported
        .policy
        .contains(&format!("trustedRoot: \"{}\"", root.display())));
    assert!(imported.policy.contains("predicateType: \"https://cyclonedx.org/bom\""));
    assert!(imported
        .policy
        .contains("# Kyverno conditions[0].all[1]: \"{{ length(components) }}\" GreaterThan 0"));
    check(&imported);

    // Kyverno: signed with the release key, and a CycloneDX SBOM with components signed by it.
    expect(
        &env,
        &imported.path,
        "default",
        &[
            ("shop/app:good", "allow"),
            ("shop/app:empty-sbom", "deny"),
            ("shop/app:no-sbom", "deny"),
            ("shop/app:unsigned", "deny"),
            ("shop/app:stranger", "deny"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mixing_kinds_decides_each_image_as_its_own_policy_would() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let platform = |workflow: &str, git_ref: &str| {
        format!("https://github.com/example-org/platform/.github/workflows/{workflow}@{git_ref}")
    };
    push_keyless(
        &env,
        &sigstore,
        "platform/api",
        "v1",
        &platform("build.yml", "refs/heads/main"),
    )
    .await;
    push_keyless(
        &env,
        &sigstore,
        "platform/api",
        "feature",
        &platform("build.yml", "refs/heads/feature"),
    )
    .await;
    env.push_image("platform/deep/agent", "v1", "unsigned platform agent")
        .await;
    env.push_signed_image("batch/job", "signed", "signed batch job").await;
    env.push_image("batch/job", "unsigned", "unsigned batch job").await;
    env.push_signed_image("tools/cli", "signed", "signed tool").await;
    env.push_image("tools/cli", "unsigned", "unsigned tool").await;
    env.push_image("elsewhere/app", "v1", "matched by no policy").await;

    let imported = import(&fixture(&env, "mixed.yaml"), &root);
    assert_eq!(imported.code, Some(0), "only notes: {}", imported.stderr);
    let input = env.dir().join("mixed.yaml");
    assert_eq!(
        imported.stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{}: policy-controller's no-match-policy (warn) also applies in the cluster to images that only \
                 Kyverno policies match; pullgate lets the Kyverno rules decide them",
                input.display()
            ),
            format!(
                "{}: policy-controller enforces only in namespaces labelled policy.sigstore.dev/include=true; \
                 pullgate applies its rules in every namespace",
                input.display()
            ),
        ]
    );
    check(&imported);

    // policy-controller: platform/** signed keyless from example-org/platform's main branch;
    // Kyverno Audit: batch/* signed with the key, but only recorded; Kyverno
    // ImageValidatingPolicy (Deny): tools/* signed with the key; anything else: warn
    // (no-match-policy).
    expect(
        &env,
        &imported.path,
        "default",
        &[
            ("platform/api:v1", "allow"),
            ("platform/api:feature", "deny"),
            ("platform/deep/agent:v1", "deny"),
            ("batch/job:signed", "allow"),
            ("batch/job:unsigned", "audit-deny"),
            ("tools/cli:signed", "allow"),
            ("tools/cli:unsigned", "deny"),
            ("elsewhere/app:v1", "warn"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_carried_over_is_listed_and_the_policy_fails_closed() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let root = sigstore.write_trusted_root(env.dir());
    let trivy = "pkg:github/aquasecurity/trivy@0.50.0";
    let digest = env.push_signed_image("legacy/svc", "scanned", "scanned by trivy").await;
    attest(
        &env,
        &sigstore,
        &env.signer,
        "legacy/svc",
        &digest,
        VULN,
        scan(trivy, "HIGH"),
    )
    .await;
    let digest = env
        .push_signed_image("legacy/svc", "other-scanner", "scanned by grype")
        .await;
    let grype = "pkg:github/anchore/grype@0.74.0";
    attest(
        &env,
        &sigstore,
        &env.signer,
        "legacy/svc",
        &digest,
        VULN,
        scan(grype, "HIGH"),
    )
    .await;
    env.push_signed_image("legacy/svc", "unscanned", "never scanned").await;
    env.push_image("legacy/svc", "unsigned", "unsigned").await;
    env.push_signed_image("payments/api", "v1", "signed payments").await;
    env.push_image("elsewhere/app", "v1", "matched by no policy").await;

    let input = fixture(&env, "unsupported.yaml");
    let imported = import(&input, &root);
    assert_eq!(imported.code, Some(1), "something was dropped: {}", imported.stderr);
    let file = input.display();
    let kyverno = format!("{file}: document 1 (ClusterPolicy/legacy-services): spec.rules[0].verifyImages[0]");
    let cip = format!("{file}: document 2 (ClusterImagePolicy/payments): spec.authorities");
    let expected = [
        format!("{kyverno}.attestors[0].entries[0].keys.kms: KMS keys cannot be read offline; dropped"),
        format!(
            "{kyverno}.attestors[0].entries[1].keys.publicKeys: \"k8s://kyverno/legacy-cosign-pub\" names a \
             Kubernetes secret, which cannot be read on the node; dropped"
        ),
        format!(
            "{kyverno}.attestations[0].conditions[0].all[0]: \"{{{{ scanner.result.Results[].Vulnerabilities[?Severity \
             == 'CRITICAL'] | length(@) }}}}\" Equals 0: JMESPath \"scanner.result.Results[].Vulnerabilities[?Severity \
             == 'CRITICAL'] | length(@)\" has no CEL equivalent (only plain paths and length() do); condition dropped"
        ),
        format!("{kyverno}.mutateDigest: implied on the node: pullgate pulls the digest it verified, whatever the pod named"),
        format!("{cip}[0].key.secretRef: keys in Kubernetes secrets cannot be read on the node; dropped"),
        format!(
            "{cip}[0].attestations[0].policy: CUE policies have no pullgate equivalent; the policy is dropped, the \
             attestation is still required"
        ),
        format!("{cip}[1].key.kms: KMS keys cannot be read offline; dropped"),
        format!(
            "{cip}[1].attestations[0].policy: Rego policies have no pullgate equivalent; the policy is dropped, the \
             attestation is still required"
        ),
        format!("{cip}: no signer of this rule could be carried over; the rule denies every image it matches"),
        format!(
            "{file}: policy-controller's no-match-policy (deny) also applies in the cluster to images that only \
             Kyverno policies match; pullgate lets the Kyverno rules decide them"
        ),
        format!(
            "{file}: policy-controller enforces only in namespaces labelled policy.sigstore.dev/include=true; \
             pullgate applies its rules in every namespace"
        ),
    ];
    assert_eq!(imported.stderr.lines().collect::<Vec<_>>(), expected);
    // The condition that has a CEL form is carried over, naming its original.
    assert!(imported
        .policy
        .contains(r#"- "predicate.scanner.uri.matches(\"(?s)^pkg:github/aquasecurity/trivy.*$\")""#));
    assert!(imported.policy.contains("action: deny"));
    check(&imported);

    // legacy/*: any one of the three keys (the one in the file is ours) and a vulnerability
    // scan by trivy (its CRITICAL count could not be carried over; these scans have none, so
    // the source allows them too). payments/**: only keys the node cannot read, so denied
    // (fail closed); anything else: policy-controller's default no-match-policy, deny.
    expect(
        &env,
        &imported.path,
        "default",
        &[
            ("legacy/svc:scanned", "allow"),
            ("legacy/svc:other-scanner", "deny"),
            ("legacy/svc:unscanned", "deny"),
            ("legacy/svc:unsigned", "deny"),
            ("payments/api:v1", "deny"),
            ("elsewhere/app:v1", "deny"),
        ],
    );
}

#[test]
fn input_that_holds_no_policy_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, content: Option<&str>| {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let out = Pullgate::command()
            .args(["policy", "import"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run("broken.yaml", Some("spec: [unclosed\n"));
    assert_eq!((code, stdout.as_str()), (Some(2), ""), "{stderr}");
    assert!(
        stderr.starts_with("pullgate policy import: ") && stderr.contains("not YAML"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        "secret.yaml",
        Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no Kyverno ClusterPolicy"), "{stderr}");
    let (code, _, stderr) = run("missing.yaml", None);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = run("huge.yaml", Some(&format!("# {}\n", "x".repeat(1024 * 1024))));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");

    let out = Pullgate::command()
        .args(["policy", "import", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "--trusted-root",
        "/etc/pullgate/trust/trusted_root.json",
        "Exit status: 0",
        "ClusterImagePolicy",
    ] {
        assert!(help.contains(needle), "{needle:?} in {help}");
    }
}

/// A notation user's home with a test certificate `pullgate.test` (`notation cert
/// generate-test`); the home and the certificate's PEM.
fn notary(env: &TestEnv, name: &str) -> (PathBuf, String) {
    let home = env.dir().join(name);
    std::fs::create_dir_all(&home).unwrap();
    run(notation(&home).args(["cert", "generate-test", "--default", "pullgate.test"]));
    let certificate = home.join(".config/notation/localkeys/pullgate.test.crt");
    (home, std::fs::read_to_string(certificate).unwrap())
}

/// Ratify's Notation verifier with an inline KeyManagementProvider holding the notation CLI's
/// certificate: images signed by the real CLI under it are allowed, unsigned ones and those of
/// another signer denied; a trust policy whose store lives in Azure Key Vault is named on stderr
/// and its rule denies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratify_notation_verifier_decides_as_ratify_would() {
    let env = TestEnv::start().await;
    let root = TestSigstore::new().write_trusted_root(env.dir());
    let (alice, certificate) = notary(&env, "alice");
    let (mallory, _) = notary(&env, "mallory");
    for (tag, home) in [
        ("signed", Some(&alice)),
        ("mallory", Some(&mallory)),
        ("unsigned", None),
    ] {
        let digest = env.push_image("shop/app", tag, tag).await;
        if let Some(home) = home {
            run(notation(home)
                .args(["sign", "--insecure-registry", "--signature-format", "cose"])
                .arg(env.image_ref("shop/app", &digest)));
        }
    }
    let digest = env.push_image("other/app", "v1", "other").await;
    run(notation(&alice)
        .args(["sign", "--insecure-registry"])
        .arg(env.image_ref("other/app", &digest)));

    let pem: String = certificate.lines().map(|l| format!("      {l}\n")).collect();
    let input = env.dir().join("ratify.yaml");
    std::fs::write(
        &input,
        format!(
            "apiVersion: config.ratify.deislabs.io/v1beta1
kind: Verifier
metadata:
  name: verifier-notation
spec:
  name: notation
  artifactTypes: application/vnd.cncf.notary.signature
  parameters:
    verificationCertStores:
      ca:
        ca-certs: [notation-inline]
        vault: [akv]
    trustPolicyDoc:
      version: \"1.0\"
      trustPolicies:
        - name: shop
          registryScopes: [\"{host}/shop/app\"]
          signatureVerification: {{level: strict}}
          trustStores: [\"ca:ca-certs\"]
          trustedIdentities: [\"x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=pullgate.test\"]
        - name: default
          registryScopes: [\"*\"]
          signatureVerification: {{level: strict}}
          trustStores: [\"ca:vault\"]
          trustedIdentities: [\"*\"]
---
apiVersion: config.ratify.deislabs.io/v1beta1
kind: KeyManagementProvider
metadata:
  name: notation-inline
spec:
  type: inline
  parameters:
    contentType: certificate
    value: |
{pem}---
apiVersion: config.ratify.deislabs.io/v1beta1
kind: KeyManagementProvider
metadata:
  name: akv
spec:
  type: azurekeyvault
  parameters:
    vaultURI: https://vault.example
",
            host = env.host()
        ),
    )
    .unwrap();
    let imported = import(&input, &root);
    assert_eq!(imported.code, Some(1), "something was dropped: {}", imported.stderr);
    assert!(
        imported.stderr.contains("\"ca:vault\": provider \"akv\"") && imported.stderr.contains("supply its PEM"),
        "{}",
        imported.stderr
    );
    check(&imported);
    expect(
        &env,
        &imported.path,
        "default",
        &[
            ("shop/app:signed", "allow"),
            ("shop/app:mallory", "deny"),
            ("shop/app:unsigned", "deny"),
            ("other/app:v1", "deny"),
        ],
    );
}
