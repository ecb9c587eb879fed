//! Third-party cosign output through a real registry: the cosign OCI attestation vector is
//! pushed with its reconstructed image to docker-registry, attached through the referrers tag,
//! found by pullgate's discovery and verified offline against cosign's own trusted root; and
//! required by a policy, with a condition on its predicate, on a pull through pullgate.

use std::path::PathBuf;

use pullgate::{
    config::{Config, RegistryConfig},
    policy::{Authority, AuthorityKind, IdentityMatch, Keyless, Tlog},
    reference::{Digest, Reference},
    registry::{referrers, Credentials, Registries},
    verify::{verify_bundle, TrustMaterial},
};
use pullgate_tests::{
    distribution::{media_type, push_blob, put_manifest},
    image::push_image,
    sigstore::attach::attach_v3_bundle,
    Registry, TestEnv,
};

const SUBJECT: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
const PREDICATE: &str = "https://cosign.sigstore.dev/attestation/v1";

fn vectors() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/cosign");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: {} is absent; the cosign vector is not run", dir.display());
        None
    }
}

fn authority(subject_regexp: &str) -> Authority {
    let keyless = Keyless {
        issuer: IdentityMatch::RegExp(regex_lite(".*")),
        subject: IdentityMatch::RegExp(regex_lite(subject_regexp)),
        extensions: Default::default(),
        trusted_root: None,
    };
    Authority {
        name: "any".into(),
        kind: AuthorityKind::Keyless(keyless),
        tlog: Tlog::Required,
    }
}

fn regex_lite(pattern: &str) -> pullgate::policy::Re2Regex {
    pullgate::policy::Re2Regex::new(pattern).unwrap()
}

async fn discover(registry: &Registry, repo: &str, digest: &Digest) -> Vec<referrers::AttachedBundle> {
    let mut config = Config::with_policy("unused".into());
    config.registries.push(RegistryConfig {
        host: registry.host(),
        insecure: true,
        ca_file: None,
    });
    let registries = Registries::new(&config, Default::default()).unwrap();
    let reference = Reference::parse(&format!("{}/{repo}@{digest}", registry.host())).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    referrers::sigstore_bundles(&session, digest, &[PREDICATE])
        .await
        .unwrap()
        .bundles
}

fn verify(trust: &TrustMaterial, bundle: &referrers::AttachedBundle, digest: &Digest, subject: &str) -> bool {
    let parsed = sigstore_types::Bundle::from_json(std::str::from_utf8(&bundle.bytes).unwrap()).unwrap();
    let hash = sigstore_types::Sha256Hash::from_hex(digest.hex()).unwrap();
    verify_bundle(
        trust,
        &parsed,
        sigstore_types::Artifact::from_digest(hash),
        &authority(subject),
    )
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_oci_attestation_is_found_through_the_referrers_tag_and_verified() {
    let Some(dir) = vectors() else { return };
    let registry = Registry::start().await;
    let host = registry.host();
    let image_dir = dir.join("reconstructed-empty-image");
    let config = std::fs::read(image_dir.join("config.json")).unwrap();
    let manifest = std::fs::read(image_dir.join("manifest.json")).unwrap();
    push_blob(&host, "repo", &config, None).await.unwrap();
    let digest = put_manifest(&host, "repo", "latest", &manifest, media_type::DOCKER_MANIFEST, None)
        .await
        .unwrap();
    assert_eq!(digest, SUBJECT, "the reconstructed image is byte-exact");
    let bundle_json = std::fs::read_to_string(dir.join("pkg/cosign/testdata/oci-attestation.sigstore.json")).unwrap();
    attach_v3_bundle(&host, "repo", &digest, &bundle_json, Some(PREDICATE), None)
        .await
        .unwrap();

    let trust_json = std::fs::read_to_string(dir.join("pkg/cosign/testdata/trusted_root_pgi.json")).unwrap();
    let trust = TrustMaterial::from_json(&trust_json).unwrap();
    let digest = Digest::parse(&digest).unwrap();
    let found = discover(&registry, "repo", &digest).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].predicate_type.as_deref(), Some(PREDICATE));
    assert!(
        verify(&trust, &found[0], &digest, ".*"),
        "upstream: accept with identity .*"
    );
    assert!(
        !verify(&trust, &found[0], &digest, "wrong"),
        "upstream: reject with subject regexp `wrong`"
    );

    // The same bundle attached to a different image must not verify for it.
    let other = push_image(&host, "repo", "other", "another image", None).await.unwrap();
    attach_v3_bundle(&host, "repo", &other, &bundle_json, Some(PREDICATE), None)
        .await
        .unwrap();
    let other = Digest::parse(&other).unwrap();
    let found = discover(&registry, "repo", &other).await;
    assert_eq!(found.len(), 1);
    assert!(
        !verify(&trust, &found[0], &other, ".*"),
        "upstream: reject when attached to another image"
    );
}

/// A policy for `host/vec/**`: the image signed by the env's key, and the cosign attestation
/// from any public-good identity with `condition` on its predicate.
fn attestation_policy(env: &TestEnv, trusted_root: &std::path::Path, condition: &str) -> String {
    let pem = pullgate_tests::policy::key_block(&env.signer.public_key_pem());
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: vector
spec:
  trustedRoot: {root}
  rules:
    - name: vector
      images: [\"{host}/vec/**\"]
      authorities:
        - name: test-key
          key:
            publicKey: |
{pem}        - name: upstream
          keyless:
            issuerRegExp: '.*'
            subjectRegExp: '.*'
      attestations:
        - name: custom
          predicateType: {PREDICATE}
          conditions:
            - '{condition}'
",
        root = trusted_root.display(),
        host = env.host(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_oci_attestation_gates_a_pull_with_a_condition_on_its_predicate() {
    let Some(dir) = vectors() else { return };
    let env = TestEnv::start().await;
    let host = env.host();
    let image_dir = dir.join("reconstructed-empty-image");
    let config = std::fs::read(image_dir.join("config.json")).unwrap();
    let manifest = std::fs::read(image_dir.join("manifest.json")).unwrap();
    push_blob(&host, "vec/repo", &config, None).await.unwrap();
    let digest = put_manifest(&host, "vec/repo", "v1", &manifest, media_type::DOCKER_MANIFEST, None)
        .await
        .unwrap();
    assert_eq!(digest, SUBJECT, "the reconstructed image is byte-exact");
    env.signer.sign_image(&host, "vec/repo", &digest, None).await.unwrap();
    let bundle_json = std::fs::read_to_string(dir.join("pkg/cosign/testdata/oci-attestation.sigstore.json")).unwrap();
    attach_v3_bundle(&host, "vec/repo", &digest, &bundle_json, Some(PREDICATE), None)
        .await
        .unwrap();
    let trusted_root = dir.join("pkg/cosign/testdata/trusted_root_pgi.json");

    // The predicate is {"Data": "{\"foo\": \"bar\"}\n", "Timestamp": "2025-02-28T19:18:11Z"}.
    let holds = attestation_policy(&env, &trusted_root, "predicate.Timestamp.startsWith(\"2025-02-28\")");
    let pg = env.start_pullgate(&holds).await;
    pg.pull(&env.image_ref("vec/repo", "v1"), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    let outcome = &pg.last_record()["attestations"][0];
    assert_eq!(outcome["result"], "pass", "{outcome}");
    assert_eq!(outcome["signature"]["subject"], "cody@soyland.com");
    assert_eq!(outcome["signature"]["issuer"], "https://github.com/login/oauth");

    let fails = attestation_policy(&env, &trusted_root, "predicate.Timestamp.startsWith(\"2024\")");
    let pg = env.start_pullgate(&fails).await;
    let message = pg
        .pull(&env.image_ref("vec/repo", "v1"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(message.contains("predicate.Timestamp.startsWith"), "{message}");

    // The same bundle attached to another image, signed by the key too: rejected for it.
    let other = push_image(&host, "vec/repo", "other", "another image", None)
        .await
        .unwrap();
    env.signer.sign_image(&host, "vec/repo", &other, None).await.unwrap();
    attach_v3_bundle(&host, "vec/repo", &other, &bundle_json, Some(PREDICATE), None)
        .await
        .unwrap();
    let pg = env.start_pullgate(&holds).await;
    let message = pg
        .pull(&env.image_ref("vec/repo", "other"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(message.contains("attestation \"custom\""), "{message}");
    assert!(message.contains(&format!("{SUBJECT}, not this image")), "{message}");
}
