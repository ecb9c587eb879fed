//! pullgate restarted: what it verified under the policy in force is kept in `stateDir`, so a
//! node whose registry is down can start its verified images again after pullgate restarts
//! (an upgrade, a crash, a reboot); a policy or trust change still forgets them.

use pullgate_tests::{cri, Pullgate, TestEnv};

/// `ImageStatus` through pullgate, as kubelet asks before starting a container: whether the
/// image is shown.
async fn shown(pullgate: &Pullgate, image: &str) -> bool {
    pullgate
        .client()
        .image_status(cri::image_status_request(image))
        .await
        .unwrap_or_else(|s| panic!("ImageStatus {image}: {s}\n{}", pullgate.log()))
        .into_inner()
        .image
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_images_stay_shown_across_a_restart_during_a_registry_outage_until_the_policy_changes() {
    let mut env = TestEnv::start().await;
    env.push_signed_image("restarts/app", "v1", "signed").await;
    env.push_image("restarts/unsigned", "v1", "unsigned").await;
    let signed = env.image_ref("restarts/app", "v1");
    let unsigned = env.image_ref("restarts/unsigned", "v1");
    let policy = env.key_policy(&[&format!("{}/restarts/**", env.host())]);
    let dir = env.dir().join("pullgate");
    let config = format!("{}stateDir: state\n", env.pullgate_config(&dir, "10s"));

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    pullgate
        .pull(&signed, Some("default"))
        .await
        .expect("signed image allowed");
    assert!(shown(&pullgate, &signed).await);
    // On the node, but not through pullgate (as before pullgate was installed).
    env.containerd
        .client()
        .pull_image(cri::pull_request(&unsigned, None, None))
        .await
        .expect("containerd pulls the unsigned image directly");
    assert!(!shown(&pullgate, &unsigned).await, "never verified");
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());

    // The registry goes down, and pullgate restarts with the same state.
    env.registry.stop();
    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    assert!(
        shown(&pullgate, &signed).await,
        "the verified image is shown without its registry:\n{}",
        pullgate.log()
    );
    assert!(pullgate.log().contains("verified images read back from the state file"));
    assert!(dir.join("state/admitted.json").is_file());
    assert!(
        !shown(&pullgate, &unsigned).await,
        "the state vouches only for what was verified"
    );
    let refused = pullgate
        .pull(&unsigned, Some("default"))
        .await
        .expect_err("an unverified image is not pulled");
    assert!(refused.message().contains("restarts/unsigned"), "{}", refused.message());

    // Another policy (hence generation), put in force by a reload: hidden again.
    let changed = policy.replace("name: test", "name: test-changed");
    assert_ne!(changed, policy);
    pullgate.write_policy(&changed);
    pullgate.reload();
    pullgate.wait_for_log("policy reloaded").await;
    assert!(
        !shown(&pullgate, &signed).await,
        "a changed policy forgets what the old one verified"
    );
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());

    // The file forgot too: neither the changed policy nor the old one, put back and started
    // on, shows the image again.
    let pullgate = Pullgate::start(&dir, &config, &changed).await;
    assert!(!shown(&pullgate, &signed).await);
    drop(pullgate);
    let pullgate = Pullgate::start(&dir, &config, &policy).await;
    assert!(
        !shown(&pullgate, &signed).await,
        "the old generation's entries were dropped from the file"
    );
}

/// A policy changed while pullgate was stopped: the file's generation is not the one in force,
/// so nothing in it is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_while_stopped_forgets_the_verifications() {
    let mut env = TestEnv::start().await;
    env.push_signed_image("restarts/app", "v1", "signed").await;
    let signed = env.image_ref("restarts/app", "v1");
    let policy = env.key_policy(&[&format!("{}/restarts/**", env.host())]);
    let dir = env.dir().join("pullgate");
    let config = format!("{}stateDir: state\n", env.pullgate_config(&dir, "10s"));

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    pullgate
        .pull(&signed, Some("default"))
        .await
        .expect("signed image allowed");
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());
    env.registry.stop();

    let changed = policy.replace("name: test", "name: test-changed");
    let pullgate = Pullgate::start(&dir, &config, &changed).await;
    assert!(!shown(&pullgate, &signed).await);
    assert!(
        pullgate.log().contains("state file is of another policy generation"),
        "{}",
        pullgate.log()
    );
}

/// A state file someone else could have written is not believed: pullgate starts, says why,
/// and verifies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let mut env = TestEnv::start().await;
    env.push_signed_image("restarts/app", "v1", "signed").await;
    let signed = env.image_ref("restarts/app", "v1");
    let policy = env.key_policy(&[&format!("{}/restarts/**", env.host())]);
    let dir = env.dir().join("pullgate");
    let config = format!("{}stateDir: state\n", env.pullgate_config(&dir, "10s"));

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    pullgate
        .pull(&signed, Some("default"))
        .await
        .expect("signed image allowed");
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());
    env.registry.stop();
    let state = dir.join("state/admitted.json");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();

    let pullgate = Pullgate::start(&dir, &config, &policy).await;
    assert!(!shown(&pullgate, &signed).await);
    assert!(
        pullgate.log().contains("state file ignored") && pullgate.log().contains("lets others than its owner write it"),
        "{}",
        pullgate.log()
    );
}

/// An attestation's `maxAge` holds for `ImageStatus` too: a verification whose attestation has
/// since grown older than `maxAge` no longer shows the image, though the policy is unchanged.
/// The state file must not carry it past that age across a restart (a pull would now be denied:
/// the image may not be started from the node's copy either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_is_not_shown_past_its_attestations_max_age_after_a_restart() {
    use pullgate_tests::{
        policy::keyless_attestation_policy,
        sigstore::{
            attach::attach_v3_bundle,
            bundle::{in_toto_statement, make_v3_dsse_bundle, make_v3_signature_bundle, COSIGN_SIGN_PREDICATE},
            fulcio::LEAF_LIFETIME_SECS,
            unix_now, BundleSigner, LeafRequest, SanKind, TestSigstore,
        },
    };
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
    const CYCLONEDX: &str = "https://cyclonedx.org/bom";
    // The attestation turns older than maxAge this many seconds after it is attached.
    const FRESH_FOR: i64 = 25;

    let env = TestEnv::start().await;
    let sigstore = TestSigstore::new();
    let digest = env.push_image("apps/app", "v1", "attested").await;
    let name = format!("{}/apps/app", env.host());
    let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
    let signature = make_v3_signature_bundle(&sigstore, &leaf, &name, &digest, unix_now());
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
    // An SBOM attested by a certificate that became valid 100 days ago.
    let days = 100;
    let not_before = unix_now() - days * 86_400;
    let old_leaf = sigstore.issue(
        &LeafRequest::new(SanKind::Uri(WORKFLOW.into()), ISSUER).valid(not_before, not_before + LEAF_LIFETIME_SECS),
    );
    let sbom = serde_json::json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{"type": "library", "name": "lib"}]});
    let statement = in_toto_statement(&name, &digest, CYCLONEDX, sbom);
    let bundle = make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Leaf(&old_leaf),
        &statement,
        not_before + 60,
    );
    attach_v3_bundle(&env.host(), "apps/app", &digest, &bundle, Some(CYCLONEDX), None)
        .await
        .unwrap();
    let max_age = days * 86_400 + FRESH_FOR;
    let stale_at = not_before + max_age;
    let attestations =
        format!("        - name: sbom\n          predicateType: {CYCLONEDX}\n          maxAge: {max_age}s\n");

    let dir = env.dir().join("pullgate");
    let root = sigstore.write_trusted_root(env.dir());
    let policy = keyless_attestation_policy(
        &root,
        &format!("{}/apps/**", env.host()),
        ISSUER,
        WORKFLOW,
        &attestations,
    );
    let config = format!("{}stateDir: state\n", env.pullgate_config(&dir, "10s"));
    let image = env.image_ref("apps/app", "v1");

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    pullgate
        .pull(&image, Some("default"))
        .await
        .unwrap_or_else(|e| panic!("a fresh attestation is accepted: {}", e.message()));
    assert!(
        unix_now() < stale_at,
        "the pull took too long for this test to mean anything"
    );
    assert!(shown(&pullgate, &image).await);
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());

    // Past maxAge, the same policy: a pull is denied, and the node's copy is not shown.
    while unix_now() <= stale_at + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let pullgate = Pullgate::start(&dir, &config, &policy).await;
    assert!(
        !shown(&pullgate, &image).await,
        "shown past the attestation's maxAge:\n{}",
        pullgate.log()
    );
    let denied = pullgate.pull(&image, Some("default")).await.expect_err("stale now");
    assert!(denied.message().contains("older than maxAge"), "{}", denied.message());
}

/// containerd changed while pullgate was stopped: the verified tag now names another image
/// (pulled straight into containerd, then tagged over it). The state vouches for what was
/// verified, not for a name: the tag is hidden after the restart, though the file still lists
/// the old image under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_in_containerd_while_stopped_is_not_shown() {
    let mut env = TestEnv::start().await;
    env.push_signed_image("restarts/app", "v1", "signed").await;
    env.push_image("restarts/app", "other", "unsigned").await;
    let signed = env.image_ref("restarts/app", "v1");
    let other = env.image_ref("restarts/app", "other");
    let policy = env.key_policy(&[&format!("{}/restarts/**", env.host())]);
    let dir = env.dir().join("pullgate");
    let config = format!("{}stateDir: state\n", env.pullgate_config(&dir, "10s"));

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    pullgate
        .pull(&signed, Some("default"))
        .await
        .expect("signed image allowed");
    assert!(shown(&pullgate, &signed).await);
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());

    env.containerd
        .client()
        .pull_image(cri::pull_request(&other, None, None))
        .await
        .expect("containerd pulls the unsigned image directly");
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images", "tag", "--force", &other, &signed])
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    env.registry.stop();
    // containerd itself answers for the tag with the other image (the CRI plugin learns of the
    // tag from containerd's events: asked until it has).
    let id_of = |image: String| {
        let mut containerd = env.containerd.client();
        async move {
            containerd
                .image_status(cri::image_status_request(&image))
                .await
                .unwrap()
                .into_inner()
                .image
                .map(|i| i.id)
        }
    };
    let other_id = id_of(other.clone()).await.expect("containerd has the other image");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while id_of(signed.clone()).await.as_ref() != Some(&other_id) {
        assert!(
            std::time::Instant::now() < deadline,
            "containerd never answered the tag with the other image"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let pullgate = Pullgate::start(&dir, &config, &policy).await;
    assert!(pullgate.log().contains("verified images read back from the state file"));
    assert!(
        !shown(&pullgate, &signed).await,
        "the tag now names an image nothing verified:\n{}",
        pullgate.log()
    );
}
