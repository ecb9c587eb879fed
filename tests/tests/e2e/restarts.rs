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
