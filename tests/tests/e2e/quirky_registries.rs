//! Referrers quirks of registries in production (an empty or partial referrers answer while the
//! referrers tag holds the bundle; ghcr.io's referrers redirect ending in 404; an index without
//! `artifactType`), served by a canned registry in front of the real one: containerd pulls real
//! content through it, pullgate admits a cosign v3 keyless bundle behind each quirk, and an
//! unsigned image behind the same quirk is still denied.

use pullgate_tests::{
    image, pullgate,
    quirky_registry::{Quirk, QuirkyRegistry},
    sigstore::{
        attach::attach_v3_bundle,
        bundle::{make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
        unix_now, SanKind, TestSigstore,
    },
    Containerd, Pullgate, Registry,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const SUBJECT_REGEXP: &str = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$";

/// Pushes a signed and an unsigned image to a real registry, puts the canned registry with
/// `quirk` in front of it, and pulls both through pullgate and containerd from the canned one.
/// Behind ghcr.io's redirect, a second signed image follows whose referrers only the redirect
/// leads to.
async fn signed_admitted_and_unsigned_denied_behind(quirk: Quirk) {
    let registry = Registry::start().await;
    let canned = QuirkyRegistry::start(&registry.host(), quirk).await;
    let host = canned.host();
    let containerd = Containerd::start(std::slice::from_ref(&host)).await;
    let sigstore = TestSigstore::new();

    let signed = image::push_image(&registry.host(), "apps/app", "signed", "signed behind a quirk", None)
        .await
        .unwrap();
    let unsigned = image::push_image(
        &registry.host(),
        "apps/app",
        "unsigned",
        "unsigned behind a quirk",
        None,
    )
    .await
    .unwrap();
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let bundle = make_v3_signature_bundle(&sigstore, &leaf, &format!("{host}/apps/app"), &signed, unix_now());
    attach_v3_bundle(
        &registry.host(),
        "apps/app",
        &signed,
        &bundle,
        Some(COSIGN_SIGN_PREDICATE),
        None,
    )
    .await
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let root = sigstore.write_trusted_root(tmp.path());
    let dir = tmp.path().join("pullgate");
    let policy = pullgate_tests::policy::keyless_policy(&root, &format!("{host}/apps/**"), ISSUER, SUBJECT_REGEXP);
    let config = pullgate::config_yaml_with_registries(
        &dir.join("pullgate.sock"),
        &containerd.socket(),
        &dir.join("policy.yaml"),
        &dir.join("audit.jsonl"),
        &[pullgate::RegistryEntry::insecure(&host)],
        "10s",
    );
    let pg = Pullgate::start(&dir, &config, &policy).await;

    let image = format!("{host}/apps/app@{signed}");
    let id = pg
        .pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{quirk:?}: {}\n{}\n{:?}", s.message(), pg.log(), canned.asked()));
    assert_eq!(
        containerd.image_id(&image).await,
        Some(id),
        "containerd pulled the verified digest"
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["signatures"][0]["subject"], WORKFLOW);
    let asked = canned.asked();
    assert!(
        asked
            .iter()
            .any(|a| a.starts_with(&format!("GET /v2/apps/app/referrers/{signed}"))),
        "the quirk was met: {asked:?}"
    );

    if quirk == Quirk::RedirectTo404 {
        // ghcr.io: the 404 was about that image only. The next image's redirect leads to its
        // referrers (and its tag has none): the repository was not written off as API-less.
        let next = image::push_image(&registry.host(), "apps/app", "next", "listed after the redirect", None)
            .await
            .unwrap();
        let bundle = make_v3_signature_bundle(&sigstore, &leaf, &format!("{host}/apps/app"), &next, unix_now());
        attach_v3_bundle(
            &registry.host(),
            "apps/app",
            &next,
            &bundle,
            Some(COSIGN_SIGN_PREDICATE),
            None,
        )
        .await
        .unwrap();
        canned.list_only_after_redirect(&next);
        let image = format!("{host}/apps/app@{next}");
        pg.pull(&image, None)
            .await
            .unwrap_or_else(|s| panic!("{}\n{:?}", s.message(), canned.asked()));
        assert!(containerd.image_id(&image).await.is_some());
    }

    let status = pg
        .pull(&format!("{host}/apps/app@{unsigned}"), None)
        .await
        .expect_err("an unsigned image behind the quirk is denied");
    assert!(
        status.message().starts_with("SignatureValidationFailed: "),
        "{quirk:?}: a policy denial, not RegistryUnavailable: {}",
        status.message()
    );
    assert_eq!(pg.last_record()["decision"], "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_referrers_answer_beside_a_tagged_bundle_admits() {
    signed_admitted_and_unsigned_denied_behind(Quirk::EmptyList).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_redirect_ending_in_404_admits_through_the_tag() {
    signed_admitted_and_unsigned_denied_behind(Quirk::RedirectTo404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_index_without_artifact_type_admits() {
    signed_admitted_and_unsigned_denied_behind(Quirk::Untyped).await;
}
