//! Several trusted roots, end to end: the public-good-like test Sigstore as `spec.trustedRoot`
//! and a second instance like GitHub's for private repositories (its own Fulcio CA and a TSA,
//! no Rekor, no CT log) as `spec.trustedRoots.github`. The real pullgate, in front of a real
//! containerd and registry, admits what the second instance signed only under the authority
//! naming that root, and a SIGHUP with a broken second root keeps the last good policy.

use std::path::{Path, PathBuf};

use pullgate_tests::{
    pullgate::metric_sample,
    sigstore::{
        attach::attach_v3_bundle, bundle::COSIGN_SIGN_PREDICATE, cosign_sign_statement,
        make_v3_timestamped_dsse_bundle, unix_now, BundleSigner, SanKind, TestSigstore, Tsa,
    },
    Pullgate, TestEnv,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const SUBJECT_REGEXP: &str = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$";
const PREFIX: &str = "SignatureValidationFailed: ";
const EXPIRY: &str = "pullgate_trust_material_expiry_timestamp_seconds";

/// The second instance: a Fulcio CA (from a test Sigstore whose Rekor and CT log it leaves
/// out of its root) and a TSA.
struct Instance {
    sigstore: TestSigstore,
    tsa: Tsa,
}

impl Instance {
    fn new() -> Self {
        Self {
            sigstore: TestSigstore::new(),
            tsa: Tsa::generate(),
        }
    }

    fn write_root(&self, path: &Path) {
        std::fs::write(path, self.sigstore.rekorless_trusted_root_json(&self.tsa)).unwrap();
    }

    /// Pushes `repo:tag` and attaches a cosign v3 signature bundle made on this instance: a
    /// certificate for [`WORKFLOW`], a timestamp from its TSA, no log entry.
    async fn push_signed(&self, env: &TestEnv, repo: &str, tag: &str) -> String {
        let digest = env.push_image(repo, tag, &format!("{repo} {tag}")).await;
        let leaf = self.sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let statement = cosign_sign_statement(&format!("{}/{repo}", env.host()), &digest);
        let bundle = make_v3_timestamped_dsse_bundle(&self.tsa, BundleSigner::Leaf(&leaf), &statement, unix_now());
        attach_v3_bundle(&env.host(), repo, &digest, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
            .await
            .unwrap();
        digest
    }
}

/// `private/**` trusts the identity on the `github` root (signing time from its TSA);
/// `apps/**` trusts the same identity on the default root.
fn policy(env: &TestEnv, public_root: &Path, github_root: &Path) -> String {
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: two-roots
spec:
  trustedRoot: {public}
  trustedRoots:
    github: {github}
  rules:
    - name: private
      images: [\"{host}/private/**\"]
      authorities:
        - name: github-ci
          keyless:
            trustedRoot: github
            issuer: {ISSUER}
            subjectRegExp: '{SUBJECT_REGEXP}'
          tlog: ignore
    - name: public
      images: [\"{host}/apps/**\"]
      authorities:
        - name: public-ci
          keyless:
            issuer: {ISSUER}
            subjectRegExp: '{SUBJECT_REGEXP}'
",
        public = public_root.display(),
        github = github_root.display(),
        host = env.host(),
    )
}

/// Both roots written into the env's directory: the default one and `second`'s.
fn roots(env: &TestEnv, second: &Instance) -> (PathBuf, PathBuf) {
    let public = TestSigstore::new().write_trusted_root(env.dir());
    let github = env.dir().join("github_trusted_root.json");
    second.write_root(&github);
    (public, github)
}

async fn denied(pg: &Pullgate, env: &TestEnv, image: &str) -> String {
    let status = pg.pull(image, None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
    assert_eq!(pg.last_record()["decision"], "deny");
    assert_eq!(env.containerd.image_id(image).await, None, "{image} reached containerd");
    status.message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instances_signature_counts_only_under_the_authority_naming_its_root() {
    let env = TestEnv::start().await;
    let github = Instance::new();
    let digest = github.push_signed(&env, "private/app", "v1").await;
    github.push_signed(&env, "apps/app", "v1").await;
    let (public_root, github_root) = roots(&env, &github);
    let pg = env
        .start_pullgate_with_metrics(&policy(&env, &public_root, &github_root))
        .await;

    let image = env.image_ref("private/app", "v1");
    let id = pg
        .pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(env.containerd.image_id(&image).await, Some(id));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    let evidence = &record["signatures"][0];
    assert_eq!(evidence["authority"], "github-ci", "{record}");
    assert_eq!(evidence["timeSource"], "tsa", "{record}");
    assert!(evidence.get("tlogIndex").is_none(), "{record}");

    // The same signature under the authority on the default root: its CA is not trusted there.
    let message = denied(&pg, &env, &env.image_ref("apps/app", "v1")).await;
    assert!(message.contains("public-ci"), "{message}");

    // One expiry series per root, each for what its own authorities need.
    let text = pg.scrape().await;
    let series = |root: &str| metric_sample(&text, &format!("{EXPIRY}{{root=\"{root}\"}}"));
    let on_github = series("github").unwrap_or_else(|| panic!("{text}"));
    assert!(on_github.is_finite() && on_github > unix_now() as f64, "{text}");
    assert!(on_github <= github.sigstore.fulcio.not_after() as f64, "{text}");
    assert!(series("default").is_some(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_of_the_default_instance_is_refused_under_the_authority_naming_the_second() {
    let env = TestEnv::start().await;
    let github = Instance::new();
    let public = TestSigstore::new();
    let public_root = public.write_trusted_root(env.dir());
    let github_root = env.dir().join("github_trusted_root.json");
    github.write_root(&github_root);
    // Signed on the default instance, logged in its Rekor, in both repositories.
    for repo in ["private/app", "apps/app"] {
        let digest = env.push_image(repo, "v1", &format!("{repo} public")).await;
        let leaf = public.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let bundle = pullgate_tests::sigstore::make_v3_signature_bundle(
            &public,
            &leaf,
            &format!("{}/{repo}", env.host()),
            &digest,
            unix_now(),
        );
        attach_v3_bundle(&env.host(), repo, &digest, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
            .await
            .unwrap();
    }
    let pg = env.start_pullgate(&policy(&env, &public_root, &github_root)).await;

    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(pg.last_record()["signatures"][0]["authority"], "public-ci");
    let message = denied(&pg, &env, &env.image_ref("private/app", "v1")).await;
    assert!(message.contains("github-ci"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_second_root_keeps_the_last_good_policy_and_roots() {
    let env = TestEnv::start().await;
    let github = Instance::new();
    for tag in ["v1", "v2", "v3"] {
        github.push_signed(&env, "private/app", tag).await;
    }
    let (public_root, github_root) = roots(&env, &github);
    let pg = env.start_pullgate(&policy(&env, &public_root, &github_root)).await;
    pg.pull(&env.image_ref("private/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));

    // Broken, the second root fails the whole reload, naming the file and the line.
    std::fs::write(&github_root, "{\"mediaType\": ").unwrap();
    pg.reload();
    pg.wait_for_log("policy reload refused").await;
    let log = pg.log();
    assert!(log.contains("github_trusted_root.json"), "{log}");
    assert!(
        log.contains("policy.yaml:8"),
        "the line of spec.trustedRoots.github:\n{log}"
    );
    pg.pull(&env.image_ref("private/app", "v2"), None)
        .await
        .unwrap_or_else(|s| panic!("the last good roots stay in force: {}\n{}", s.message(), pg.log()));

    // Another instance's root in its place is a new generation: what the old one admitted is
    // no longer admitted, cached or not.
    Instance::new().write_root(&github_root);
    pg.reload();
    pg.wait_for_log("policy reloaded").await;
    denied(&pg, &env, &env.image_ref("private/app", "v3")).await;
    let status = pg.pull(&env.image_ref("private/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(PREFIX), "{}", status.message());
    assert_eq!(pg.last_record()["decision"], "deny");
}
