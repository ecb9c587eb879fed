//! `ImageStatus` remembers what containerd's image names point at, and containerd's image events
//! keep that true: a name moved through containerd's own API is seen as moved at the next
//! `ImageStatus`, and after containerd restarts nothing remembered from before is trusted.
//!
//! The images are OCI artifacts with the empty config, so two manifests share one image id (as
//! in `image_volumes.rs`): only what a name points at tells them apart. containerd 1.6 cannot
//! store artifacts, so these run on containerd 2.x ([`containerd::binary_2x`]).

use pullgate_tests::{
    artifact::{Config, TinyArtifact},
    containerd, cri, Pullgate, TestEnv,
};

/// Logged by pullgate when its subscription to containerd's image events answers.
const FOLLOWING: &str = "following containerd's image events";

/// Pushes a new artifact with the empty config as `repository:tag`, signed when `signed`.
async fn push_artifact(env: &TestEnv, repository: &str, tag: &str, signed: bool) -> TinyArtifact {
    let artifact = TinyArtifact::build(Config::Empty, &format!("{repository} {tag} signed={signed}"));
    let digest = artifact
        .push(&env.host(), repository, tag, env.auth())
        .await
        .unwrap_or_else(|e| panic!("push {tag}: {e}"));
    if signed {
        env.signer
            .sign_image(&env.host(), repository, &digest, env.auth())
            .await
            .unwrap_or_else(|e| panic!("sign {tag}: {e}"));
    }
    artifact
}

async fn shown(pg: &Pullgate, image: &str) -> bool {
    pg.client()
        .image_status(cri::image_status_request(image))
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .is_some()
}

fn ctr_images(env: &TestEnv, args: &[&str]) {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images"])
        .args(args)
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A verified artifact `volumes/model:verified`, shown through `pg` (so what its names point
/// at is remembered), and an unsigned one with the same image id, `volumes/other:around`,
/// pulled straight into containerd. Returns (verified name, unverified name).
async fn verified_beside_an_unverified_twin(env: &TestEnv, pg: &Pullgate) -> (String, String) {
    push_artifact(env, "volumes/model", "verified", true).await;
    push_artifact(env, "volumes/other", "around", false).await;
    let (verified, around) = (
        env.image_ref("volumes/model", "verified"),
        env.image_ref("volumes/other", "around"),
    );
    env.containerd
        .client()
        .pull_image(cri::pull_request(&around, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    pg.pull(&verified, None).await.expect("a signed artifact is admitted");
    pg.wait_for_log(FOLLOWING).await;
    // Twice: the second answer comes from what the first remembered.
    assert!(shown(pg, &verified).await, "the verified artifact is shown");
    assert!(shown(pg, &verified).await, "the verified artifact is shown again");
    (verified, around)
}

/// `ctr images tag --force` moves a name pullgate remembers as pointing at a verified manifest
/// to an unverified one with the same image id: the next `ImageStatus` hides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_name_moved_in_containerd_is_hidden_at_the_next_status() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/volumes/**", env.host())]))
        .await;
    let (verified, around) = verified_beside_an_unverified_twin(&env, &pg).await;

    ctr_images(&env, &["tag", "--force", &around, &verified]);
    assert!(
        !shown(&pg, &verified).await,
        "a name now pointing at an unverified manifest was shown from what was remembered"
    );
}

/// A pull that goes to containerd's CRI directly (not through pullgate) moves the remembered
/// tag to an unverified manifest with the same image id: containerd's own pull path publishes
/// the event too, and the next `ImageStatus` hides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_name_moved_by_a_direct_pull_is_hidden_at_the_next_status() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/volumes/**", env.host())]))
        .await;
    let (verified, _) = verified_beside_an_unverified_twin(&env, &pg).await;

    // The registry's tag now names an unsigned artifact with the same (empty) config.
    let unsigned = push_artifact(&env, "volumes/model", "verified", false).await;
    env.containerd
        .client()
        .pull_image(cri::pull_request(&verified, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    // The pull also named the new manifest by its digest; without that name only the moved tag
    // tells the image's manifests apart.
    let pinned = env.image_ref("volumes/model", &unsigned.digest());
    ctr_images(&env, &["rm", &pinned]);
    assert!(
        !shown(&pg, &verified).await,
        "a tag a direct pull moved to an unverified manifest was shown from what was remembered"
    );
}

/// While containerd is down, what was remembered is dropped; a name moved after containerd
/// is back but before pullgate has subscribed again (pullgate is held stopped meanwhile, so
/// the move's event cannot reach it) is seen as moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_containerd_restarts_nothing_remembered_from_before_is_trusted() {
    let Some(binary) = containerd::binary_2x() else { return };
    let mut env = TestEnv::start_on(binary).await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/volumes/**", env.host())]))
        .await;
    let (verified, around) = verified_beside_an_unverified_twin(&env, &pg).await;

    env.containerd.stop();
    pg.wait_for_log("containerd's image events lost").await;
    let pid = pg.pid().expect("pullgate runs") as libc::pid_t;
    // SAFETY: signals to the child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    env.containerd.restart().await;
    ctr_images(&env, &["tag", "--force", &around, &verified]);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while pg.log().matches(FOLLOWING).count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never subscribed again:\n{}",
            pg.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !shown(&pg, &verified).await,
        "a name moved while pullgate was not following containerd's events was shown"
    );
}
