//! Signatures in another repository (cosign's `COSIGN_REPOSITORY`, a rule's
//! `signatureRepository`), end to end: real registries (one beside the image, and a second one
//! demanding htpasswd or token authentication), the real containerd and the real pullgate.
//! Credentials for the second registry come from `dockerConfig` only: kubelet's, sent for the
//! image's registry, never reach it.

use std::path::{Path, PathBuf};

use pullgate_tests::{
    cri,
    policy::{key_block, policy},
    pullgate::RegistryEntry,
    Pullgate, Registry, TestEnv, TEST_AUTHORITY,
};
use tonic::Code;

const USER: &str = "alice";
const PASS: &str = "s3cret";
const DENIED: &str = "SignatureValidationFailed: ";
const UNAVAILABLE: &str = "RegistryUnavailable: ";

/// A verify rule requiring the env's key for `images` in pod namespace `namespace`, with
/// `signatureRepository: <repository>` when given.
fn rule(env: &TestEnv, name: &str, images: &str, namespace: &str, repository: Option<&str>) -> String {
    let repository = repository.map_or_else(String::new, |r| format!("      signatureRepository: {r:?}\n"));
    format!(
        "    - name: {name}\n      images: [{images:?}]\n      namespaces: [{namespace:?}]\n{repository}      authorities:\n        - name: {TEST_AUTHORITY}\n          key:\n            publicKey: |\n{}",
        key_block(&env.signer.public_key_pem())
    )
}

/// A pullgate in front of `env`'s containerd, reaching `env`'s registry and `others` over plain
/// HTTP, reading `docker_config` as its `dockerConfig` (`None`: `dockerConfig: ""`, none read).
async fn start_pullgate(
    env: &TestEnv,
    name: &str,
    policy_yaml: &str,
    others: &[String],
    docker_config: Option<&Path>,
) -> Pullgate {
    let dir = env.dir().join(name);
    let mut registries = vec![RegistryEntry::insecure(&env.host())];
    registries.extend(others.iter().map(|h| RegistryEntry::insecure(h)));
    let mut config = env.pullgate_config_with(&dir, &registries, "10s");
    let docker_config = docker_config.map_or_else(String::new, |p| p.display().to_string());
    config.push_str(&format!("dockerConfig: {docker_config:?}\n"));
    Pullgate::start(&dir, &config, policy_yaml).await
}

/// Writes a Docker config.json with `username`/`password` entries under each key.
fn write_docker_config(path: &Path, entries: &[(&str, &str, &str)]) {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(key, user, pass)| (key.to_string(), serde_json::json!({"username": user, "password": pass})))
        .collect();
    std::fs::write(path, serde_json::json!({ "auths": auths }).to_string()).expect("write config.json");
}

/// Pulls `image` for a pod in `namespace`, sending `auth` as kubelet would.
async fn pull(
    pg: &Pullgate,
    image: &str,
    auth: Option<(&str, &str)>,
    namespace: &str,
) -> Result<String, tonic::Status> {
    pg.client()
        .pull_image(cri::pull_request(image, auth, Some(namespace)))
        .await
        .map(|r| r.into_inner().image_ref)
}

/// Waits (at most 10 s) until pullgate has logged `needle` at least `times` times.
async fn wait_for_logged(pg: &Pullgate, needle: &str, times: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.log().matches(needle).count() < times {
        assert!(
            std::time::Instant::now() < deadline,
            "pullgate never logged {needle:?} {times} times:\n{}",
            pg.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether the registry's log shows a request of pullgate's (by its User-Agent) that it
/// accepted as `user`.
fn pullgate_got_in_as(registry: &Registry, user: &str) -> bool {
    registry
        .log()
        .lines()
        .any(|line| line.contains("useragent=pullgate/") && line.contains(&format!("auth.user.name={user} ")))
}

fn denied(result: Result<String, tonic::Status>, prefix: &str) -> String {
    let status = result.expect_err("the pull must be refused");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().starts_with(prefix), "{}", status.message());
    status.message().to_string()
}

/// Signatures pushed only to another repository of the same registry: a rule naming it admits
/// the image, and the record says where its signatures were; a rule without it, or naming a
/// repository without them, denies, naming where it looked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_in_another_repository_admit_only_under_a_rule_naming_it() {
    let env = TestEnv::start().await;
    let host = env.host();
    let digest = env.push_image("apps/app", "v1", "signed elsewhere").await;
    env.signer
        .sign_image_into(&host, "apps/app", &digest, &host, "sigs/app", None)
        .await
        .expect("sign into sigs/app");
    let images = format!("{host}/apps/**");
    let elsewhere = format!("{host}/sigs/app");
    let empty = format!("{host}/sigs/none");
    let policy_yaml = policy(
        "enforce",
        "deny",
        &[
            rule(&env, "elsewhere", &images, "with", Some(&elsewhere)),
            rule(&env, "empty-elsewhere", &images, "empty", Some(&empty)),
            rule(&env, "beside", &images, "without", None),
        ],
    );
    let pg = start_pullgate(&env, "pullgate", &policy_yaml, &[], None).await;
    let image = env.image_ref("apps/app", "v1");

    let beside = denied(pull(&pg, &image, None, "without").await, DENIED);
    assert!(
        beside.contains("rule \"beside\": no signature from authority"),
        "{beside}"
    );
    let message = denied(pull(&pg, &image, None, "empty").await, DENIED);
    assert!(
        message.contains(&format!(
            "rule \"empty-elsewhere\": signatures in {empty}: no signature from authority \"{TEST_AUTHORITY}\" (no signatures found)"
        )),
        "{message}"
    );
    assert_eq!(pg.last_record()["reason"], message);

    let image_ref = pull(&pg, &image, None, "with")
        .await
        .expect("admitted under the rule naming sigs/app");
    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(image_ref.as_str())
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["rule"], "elsewhere");
    assert_eq!(record["digest"], digest);
    assert_eq!(
        record["reason"],
        format!("verified by authority \"{TEST_AUTHORITY}\" (signatures in {elsewhere})")
    );
    // The tag was resolved in the image's own repository; the signature tag was read in the
    // other one and never beside the image under this rule.
    let log = env.registry.log();
    let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    assert!(log.contains(&format!("/v2/sigs/app/manifests/{sig_tag}")), "{log}");

    // A verification under one rule is not shared with another looking elsewhere.
    let again = denied(pull(&pg, &image, None, "empty").await, DENIED);
    assert!(again.contains("no signature"), "{again}");
}

/// The rig's second registry: htpasswd-protected with the same user and password kubelet sends
/// for the image's registry, so a pullgate that sent kubelet's credentials there would get in.
struct TwoRegistries {
    env: TestEnv,
    signatures: Registry,
    digest: String,
    docker_config: PathBuf,
}

async fn two_registries() -> TwoRegistries {
    let env = TestEnv::start_with_auth(USER, PASS).await;
    let signatures = Registry::start_with_htpasswd(USER, PASS).await;
    let digest = env.push_image("apps/app", "v1", "signatures on another registry").await;
    env.signer
        .sign_image_into(
            &env.host(),
            "apps/app",
            &digest,
            &signatures.host(),
            "sigs/app",
            signatures.credentials(),
        )
        .await
        .expect("sign into the second registry");
    let docker_config = env.dir().join("docker-config.json");
    TwoRegistries {
        env,
        signatures,
        digest,
        docker_config,
    }
}

/// kubelet's credentials are for the image's registry; the signature registry gets only what
/// dockerConfig holds for it: nothing (denied, RegistryUnavailable naming dockerConfig), wrong
/// credentials (the same), the right ones (admitted). A dockerConfig that does not parse is a
/// reload failure naming file and line, and the last good one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_registry_gets_docker_config_credentials_and_never_kubelets() {
    let TwoRegistries {
        env,
        signatures,
        digest,
        docker_config,
    } = two_registries().await;
    let images = format!("{}/apps/**", env.host());
    let repository = format!("{}/sigs/app", signatures.host());
    let policy_yaml = policy(
        "enforce",
        "deny",
        &[rule(&env, "elsewhere", &images, "*", Some(&repository))],
    );
    // Credentials for the image's registry only, as a node's kubelet config would hold them.
    write_docker_config(&docker_config, &[(&env.host(), USER, PASS)]);
    let pg = start_pullgate(
        &env,
        "pullgate",
        &policy_yaml,
        &[signatures.host()],
        Some(&docker_config),
    )
    .await;
    let image = env.image_ref("apps/app", "v1");
    let kubelet = Some((USER, PASS));

    let message = denied(pull(&pg, &image, kubelet, "default").await, UNAVAILABLE);
    assert!(
        message.contains(&format!(
            "the registry wants credentials and {} has none for it",
            docker_config.display()
        )),
        "{message}"
    );
    assert_eq!(pg.last_record()["decision"], "deny");
    // Without credentials from dockerConfig, pullgate must not answer the second registry's
    // challenge with kubelet's: it never sent an Authorization header there.
    assert!(!pullgate_got_in_as(&signatures, USER), "{}", signatures.log());

    // Wrong credentials in dockerConfig (keyed by URL, as `docker login` writes them).
    let url_key = format!("http://{}/v2/", signatures.host());
    write_docker_config(&docker_config, &[(&url_key, USER, "wrong")]);
    pg.reload();
    wait_for_logged(&pg, "docker config reloaded", 1).await;
    let message = denied(pull(&pg, &image, kubelet, "default").await, UNAVAILABLE);
    assert!(
        message.contains(&format!(
            "HTTP 401 Unauthorized: the registry refused the credentials of {url_key:?} in {}",
            docker_config.display()
        )),
        "{message}"
    );

    // The right ones: admitted.
    write_docker_config(&docker_config, &[(&url_key, USER, PASS)]);
    pg.reload();
    wait_for_logged(&pg, "docker config reloaded", 2).await;
    pull(&pg, &image, kubelet, "default")
        .await
        .expect("admitted with dockerConfig's credentials");
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    assert_eq!(
        record["reason"],
        format!("verified by authority \"{TEST_AUTHORITY}\" (signatures in {repository})")
    );
    // The registry logs the user of credentials it accepted: the check above could fail.
    assert!(pullgate_got_in_as(&signatures, USER), "{}", signatures.log());

    // A broken file is refused with its line; the last good credentials stay in force (a new
    // image, so no remembered verification answers for it).
    std::fs::write(&docker_config, "{\n  \"auths\": {\n    \"x\": 1\n  }\n}\n").unwrap();
    pg.reload();
    wait_for_logged(&pg, "docker config reload refused", 1).await;
    assert!(
        pg.log()
            .contains(&format!("{}:3: not a Docker config.json", docker_config.display())),
        "{}",
        pg.log()
    );
    let second = env.push_image("apps/app", "v2", "after a bad reload").await;
    env.signer
        .sign_image_into(
            &env.host(),
            "apps/app",
            &second,
            &signatures.host(),
            "sigs/app",
            signatures.credentials(),
        )
        .await
        .unwrap();
    pull(&pg, &env.image_ref("apps/app", "v2"), kubelet, "default")
        .await
        .expect("the last good dockerConfig stays in force");
    assert_eq!(pg.last_record()["cache"], "miss");
}

/// On a token-auth signature registry the token server sees every credential pullgate offers:
/// dockerConfig's user, never kubelet's, and anonymous requests when dockerConfig has nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_server_of_a_signature_registry_never_sees_kubelets_user() {
    const SIGNER_USER: &str = "bob";
    const SIGNER_PASS: &str = "b0b-pass";
    let env = TestEnv::start_with_auth(USER, PASS).await;
    let signatures = Registry::start_with_token_auth(SIGNER_USER, SIGNER_PASS).await;
    let token_server = signatures.token_server().expect("a token server");
    let digest = env.push_image("apps/app", "v1", "signatures behind tokens").await;
    env.signer
        .sign_image_into(
            &env.host(),
            "apps/app",
            &digest,
            &signatures.host(),
            "sigs/app",
            signatures.credentials(),
        )
        .await
        .expect("sign into the token registry");
    let images = format!("{}/apps/**", env.host());
    let repository = format!("{}/sigs/app", signatures.host());
    let policy_yaml = policy(
        "enforce",
        "deny",
        &[rule(&env, "elsewhere", &images, "*", Some(&repository))],
    );
    let docker_config = env.dir().join("docker-config.json");
    write_docker_config(&docker_config, &[(&env.host(), USER, PASS)]);
    let others = [signatures.host(), token_server.host()];
    let pg = start_pullgate(&env, "pullgate", &policy_yaml, &others, Some(&docker_config)).await;
    let image = env.image_ref("apps/app", "v1");
    let kubelet = Some((USER, PASS));
    let asked_by_pullgate = || {
        token_server
            .requests()
            .into_iter()
            .filter(|r| r.user_agent.starts_with("pullgate/"))
            .collect::<Vec<_>>()
    };

    denied(pull(&pg, &image, kubelet, "default").await, UNAVAILABLE);
    let anonymous = asked_by_pullgate();
    assert!(!anonymous.is_empty(), "{:#?}", token_server.requests());
    assert!(anonymous.iter().all(|r| r.user.is_none()), "{anonymous:#?}");

    write_docker_config(
        &docker_config,
        &[
            (&env.host(), USER, PASS),
            (&signatures.host(), SIGNER_USER, SIGNER_PASS),
        ],
    );
    pg.reload();
    wait_for_logged(&pg, "docker config reloaded", 1).await;
    pull(&pg, &image, kubelet, "default")
        .await
        .expect("admitted with bob's token");
    let asked = asked_by_pullgate();
    assert!(
        asked
            .iter()
            .any(|r| r.user.as_deref() == Some(SIGNER_USER) && r.status == 200),
        "{asked:#?}"
    );
    assert!(asked.iter().all(|r| r.user.as_deref() != Some(USER)), "{asked:#?}");
    for request in asked.iter().filter(|r| r.user.is_some()) {
        assert_eq!(request.scopes, ["repository:sigs/app:pull"], "{request:#?}");
    }
}

/// cosign itself (v2, `go install`ed into the test tools directory) signing with
/// `COSIGN_REPOSITORY` on a second, htpasswd-protected registry, logged in through the same
/// `config.json` pullgate reads as its `dockerConfig`: admitted under the rule naming that
/// repository, denied under one that looks beside the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signing_with_cosign_repository_is_found_there() {
    const SIGNER_USER: &str = "bob";
    const SIGNER_PASS: &str = "b0b-pass";
    let cosign = pullgate_tests::tools::dir().join("bin/cosign2");
    assert!(
        cosign.exists(),
        "{} is missing: scripts/setup.sh builds cosign v2 with go install",
        cosign.display()
    );
    let env = TestEnv::start().await;
    let signatures = Registry::start_with_htpasswd(SIGNER_USER, SIGNER_PASS).await;
    let digest = env.push_image("apps/app", "v1", "signed by cosign elsewhere").await;
    let home = env.dir().join("cosign");
    std::fs::create_dir_all(&home).unwrap();
    // `docker login`'s file, with the key spelled as docker writes it for a plain registry.
    let docker_config = home.join("config.json");
    write_docker_config(&docker_config, &[(&signatures.host(), SIGNER_USER, SIGNER_PASS)]);
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&cosign)
            .args(args)
            .current_dir(&home)
            .env("HOME", &home)
            .env("DOCKER_CONFIG", &home)
            .env("COSIGN_PASSWORD", "")
            .env("COSIGN_REPOSITORY", format!("{}/sigs/app", signatures.host()))
            .output()
            .expect("run cosign");
        assert!(
            output.status.success(),
            "cosign {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["generate-key-pair", "--output-key-prefix", "release"]);
    let image_by_digest = env.image_ref("apps/app", &digest);
    run(&[
        "sign",
        "--key",
        "release.key",
        "--tlog-upload=false",
        "--allow-http-registry",
        "--allow-insecure-registry",
        "--yes",
        &image_by_digest,
    ]);
    let public_key = std::fs::read_to_string(home.join("release.pub")).unwrap();
    let authority = |name: &str, namespace: &str, repository: Option<&str>| {
        let repository = repository.map_or_else(String::new, |r| format!("      signatureRepository: {r:?}\n"));
        format!(
            "    - name: {name}\n      images: [\"{}/apps/**\"]\n      namespaces: [{namespace:?}]\n{repository}      authorities:\n        - name: cosign-release\n          key:\n            publicKey: |\n{}",
            env.host(),
            key_block(&public_key)
        )
    };
    let repository = format!("{}/sigs/app", signatures.host());
    let policy_yaml = policy(
        "enforce",
        "deny",
        &[
            authority("elsewhere", "with", Some(&repository)),
            authority("beside", "without", None),
        ],
    );
    let pg = start_pullgate(
        &env,
        "pullgate",
        &policy_yaml,
        &[signatures.host()],
        Some(&docker_config),
    )
    .await;
    let image = env.image_ref("apps/app", "v1");

    let beside = denied(pull(&pg, &image, None, "without").await, DENIED);
    assert!(
        beside.contains("no signature from authority \"cosign-release\""),
        "{beside}"
    );
    pull(&pg, &image, None, "with")
        .await
        .expect("cosign's signature found in the signature repository");
    let record = pg.last_record();
    assert_eq!(record["digest"], digest);
    assert_eq!(record["signatures"][0]["authority"], "cosign-release");
    assert!(pullgate_got_in_as(&signatures, SIGNER_USER), "{}", signatures.log());
}

/// `pullgate verify --docker-config` reads the same file for the image's registry (as kubelet's
/// credentials) and for the signature registry, through the same key matching as `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pullgate_verify_reads_a_signature_registry_with_its_docker_config() {
    let TwoRegistries {
        env,
        signatures,
        digest,
        docker_config,
    } = two_registries().await;
    let images = format!("{}/apps/**", env.host());
    let repository = format!("{}/sigs/app", signatures.host());
    let policy_yaml = policy(
        "enforce",
        "deny",
        &[rule(&env, "elsewhere", &images, "*", Some(&repository))],
    );
    let dir = env.dir().join("verify");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), policy_yaml).unwrap();
    let config_path = dir.join("config.yaml");
    let registries = [
        RegistryEntry::insecure(&env.host()),
        RegistryEntry::insecure(&signatures.host()),
    ];
    let config = env.pullgate_config_with(&dir, &registries, "10s");
    std::fs::write(&config_path, format!("{config}dockerConfig: \"\"\n")).unwrap();
    let verify = || {
        Pullgate::command()
            .args(["verify", "--output", "json", "--config"])
            .arg(&config_path)
            .arg("--docker-config")
            .arg(&docker_config)
            .arg(env.image_ref("apps/app", "v1"))
            .output()
            .unwrap()
    };

    // A path prefix key for the image's repository, a glob-free host key for the signatures'.
    write_docker_config(&docker_config, &[(&format!("{}/apps", env.host()), USER, PASS)]);
    let without = verify();
    assert_eq!(without.status.code(), Some(1), "{without:?}");
    let record: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(UNAVAILABLE) && reason.contains("has none for it"),
        "{record}"
    );

    write_docker_config(
        &docker_config,
        &[
            (&format!("{}/apps", env.host()), USER, PASS),
            (&signatures.host(), USER, PASS),
        ],
    );
    let with = verify();
    assert_eq!(with.status.code(), Some(0), "{}", String::from_utf8_lossy(&with.stdout));
    let record: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(record["digest"], digest);
    assert_eq!(record["decision"], "allow");
}

/// A cosign v3 bundle attached as a referrer in the signature repository (whose registry has no
/// referrers API, so the referrers tag holds it) is found there under the rule naming it, and
/// not beside the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_bundle_referrer_in_the_signature_repository_is_found() {
    use pullgate_tests::{
        distribution::get_manifest,
        policy::keyless_policy,
        sigstore::{
            attach::{attach_v3_bundle_to, Subject},
            bundle::{make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
            unix_now, SanKind, TestSigstore,
        },
    };
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let host = env.host();
    let digest = env.push_image("apps/app", "v1", "a v3 bundle elsewhere").await;
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let bundle = make_v3_signature_bundle(&sigstore, &leaf, &format!("{host}/apps/app"), &digest, unix_now());
    let (manifest, media_type) = get_manifest(&host, "apps/app", &digest, None).await.unwrap();
    let subject = Subject {
        digest: &digest,
        media_type: &media_type,
        size: manifest.len(),
    };
    attach_v3_bundle_to(&host, "sigs/app", subject, &bundle, Some(COSIGN_SIGN_PREDICATE), None)
        .await
        .unwrap();
    let root = sigstore.write_trusted_root(env.dir());
    let beside = keyless_policy(&root, &format!("{host}/apps/**"), ISSUER, &regex_escape(WORKFLOW));
    let elsewhere = beside.replace(
        "      authorities:\n",
        &format!("      signatureRepository: \"{host}/sigs/app\"\n      authorities:\n"),
    );
    assert_ne!(beside, elsewhere);
    let image = env.image_ref("apps/app", "v1");

    let pg = start_pullgate(&env, "pullgate", &elsewhere, &[], None).await;
    pg.pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    assert_eq!(pg.last_record()["signatures"][0]["subject"], WORKFLOW);
    let log = env.registry.log();
    let hex = digest.trim_start_matches("sha256:");
    assert!(log.contains(&format!("/v2/sigs/app/referrers/{digest}")), "{log}");
    assert!(log.contains(&format!("/v2/sigs/app/manifests/sha256-{hex} ")), "{log}");

    let looking_beside = start_pullgate(&env, "pullgate-beside", &beside, &[], None).await;
    let message = denied(looking_beside.pull(&image, None).await, DENIED);
    assert!(message.contains("no signatures found"), "{message}");
}

/// `text` as a regular expression matching exactly it.
fn regex_escape(text: &str) -> String {
    let escaped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == ':' || c == '@' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect();
    format!("^{escaped}$")
}
