//! A verified repeat pull by tag answered by pullgate without containerd's pull (gate/pull.rs
//! `already_pulled`): only when containerd could make a container of what it holds, and never
//! a way around the pull's credentials, a moved tag, a reload or a restart. Written as attacks
//! by a reviewer of that change; the first found a hole, since closed.

use std::{process::Command, time::Duration};

use pullgate_tests::{cri, Pullgate, TestEnv};

/// `ctr --namespace k8s.io <args>` against the env's containerd: (success, stdout, stderr).
fn ctr(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The layer digests of the manifest `digest` as containerd's content store holds it.
fn layers_of(env: &TestEnv, digest: &str) -> Vec<String> {
    let (ok, manifest, err) = ctr(env, &["content", "get", digest]);
    assert!(ok, "content get {digest}: {err}");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("a manifest");
    let layers = manifest["layers"].as_array().expect("an image manifest").iter();
    layers
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

fn has_content(env: &TestEnv, digest: &str) -> bool {
    ctr(env, &["content", "get", digest]).0
}

/// The snapshots of the rig's snapshotter (`native`).
fn snapshots(env: &TestEnv) -> Vec<String> {
    let (ok, out, err) = ctr(env, &["snapshots", "--snapshotter", "native", "ls"]);
    assert!(ok, "snapshots ls: {err}");
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// What a node can lose under an image record: its layers' blobs (`ctr content rm`, or
/// containerd's `discard_unpacked_layers`) and its unpacked snapshots.
fn lose_layers_and_snapshots(env: &TestEnv, layers: &[String]) {
    for layer in layers {
        let (ok, _, err) = ctr(env, &["content", "rm", layer]);
        assert!(ok, "content rm {layer}: {err}");
    }
    // Children first: repeat until none is left.
    for _ in 0..10 {
        let left = snapshots(env);
        if left.is_empty() {
            break;
        }
        for key in left {
            ctr(env, &["snapshots", "--snapshotter", "native", "rm", &key]);
        }
    }
    assert!(snapshots(env).is_empty(), "snapshots removed");
}

/// Whether a container can be made from `image` as CRI's CreateContainer makes one: a snapshot
/// of the image, unpacked first where it is not (containerd's CRI does the same on NotFound).
fn container_can_be_created(env: &TestEnv, image: &str, id: &str) -> Result<(), String> {
    let (ok, _, err) = ctr(env, &["containers", "create", "--snapshotter", "native", image, id]);
    if ok {
        ctr(env, &["containers", "rm", id]);
        ctr(env, &["snapshots", "--snapshotter", "native", "rm", id]);
        Ok(())
    } else {
        Err(err)
    }
}

/// An image record whose layers and snapshots are gone is not answered as present: containerd
/// pulls, fetching the missing layers and unpacking them again, as a direct pull does (the
/// first version of the warm path answered, and kubelet's container failed to unpack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pull_leaves_the_image_whole_as_a_direct_pull_does() {
    let env = TestEnv::start().await;
    let digest = env.push_signed_image("signed/app", "v1", "warm, whole").await;
    let policy = env.key_policy(&[&format!("{}/signed/**", env.host())]);
    let pg = env.start_pullgate_with_config(&policy, "resolveTTL: 0s\n").await;
    let signed = env.image_ref("signed/app", "v1");

    let cold = pg.pull(&signed, Some("default")).await.expect("cold verified pull");
    container_can_be_created(&env, &signed, "c-cold").expect("a container from the cold pull");
    let layers = layers_of(&env, &digest);
    lose_layers_and_snapshots(&env, &layers);

    let warm = pg.pull(&signed, Some("default")).await.expect("warm verified pull");
    assert_eq!(warm, cold);
    let by_pullgate = (
        layers.iter().all(|l| has_content(&env, l)),
        container_can_be_created(&env, &signed, "c-warm"),
    );

    // The same loss, and a direct repeat pull, as without pullgate.
    lose_layers_and_snapshots(&env, &layers);
    let mut direct = env.containerd.client();
    let request = cri::pull_request(&signed, None, Some("default"));
    direct.pull_image(request).await.expect("direct repeat pull");
    assert!(
        layers.iter().all(|l| has_content(&env, l)),
        "a direct pull fetches the layers"
    );
    container_can_be_created(&env, &signed, "c-direct").expect("a container after a direct pull");

    assert!(
        by_pullgate.0 && by_pullgate.1.is_ok(),
        "after pullgate's repeat pull: layers present {}, container {:?}\n{}",
        by_pullgate.0,
        by_pullgate.1,
        pg.log()
    );
}

/// the warm path does not let a pull without (or with wrong) credentials reuse a private
/// image on the node: the tag is resolved with the pull's own credentials, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pull_without_the_pods_credentials_is_refused() {
    let env = TestEnv::start_with_auth("alice", "s3cret").await;
    env.push_signed_image("signed/app", "v1", "private, warm").await;
    let policy = env.key_policy(&[&format!("{}/signed/*", env.host())]);
    // The default resolveTTL: a resolution with other credentials is not reused.
    let pg = env.start_pullgate(&policy).await;
    let image = env.image_ref("signed/app", "v1");
    let right = cri::pull_request(&image, Some(("alice", "s3cret")), Some("default"));
    pg.client()
        .pull_image(right.clone())
        .await
        .expect("cold pull with credentials");
    pg.client().pull_image(right).await.expect("warm pull with credentials");
    assert_eq!(pg.last_record()["outcome"], "pulled");

    let none = pg.pull(&image, Some("other")).await.expect_err("no credentials");
    assert!(
        none.message().starts_with("RegistryUnavailable: "),
        "{}",
        none.message()
    );
    let wrong = cri::pull_request(&image, Some(("alice", "wrong")), Some("other"));
    let wrong = pg.client().pull_image(wrong).await.expect_err("wrong credentials");
    assert!(
        wrong.message().starts_with("RegistryUnavailable: "),
        "{}",
        wrong.message()
    );
}

/// containerd 1.7's sandbox annotation naming a runtime handler sends the pull to
/// containerd (only `ImageSpec.runtime_handler` is covered by round_trips), and a policy reload
/// (a new generation) does too; the warm record carries the verified digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pull_is_passed_on_for_a_handler_annotation_and_after_a_reload() {
    let env = TestEnv::start_behind_proxy(Duration::ZERO).await;
    let proxied = env.proxied.as_ref().expect("behind the proxies");
    let digest = env.push_signed_image("signed/app", "v1", "warm, annotated").await;
    let policy = env.key_policy(&[&format!("{}/signed/**", env.host())]);
    let pg = env.start_pullgate_with_config(&policy, "resolveTTL: 0s\n").await;
    let signed = env.image_ref("signed/app", "v1");
    let cold = pg.pull(&signed, Some("default")).await.expect("cold");
    let cold_record = pg.last_record();

    let mark = proxied.containerd.mark();
    let warm = pg.pull(&signed, Some("default")).await.expect("warm");
    assert_eq!(warm, cold);
    assert_eq!(proxied.containerd.since(mark).requests(), 0, "answered by pullgate");
    let record = pg.last_record();
    assert_eq!(record["digest"], digest.as_str(), "{record}");
    assert_eq!(record["outcome"], "pulled", "{record}");
    assert_eq!(record["rule"], cold_record["rule"], "{record}");

    let mut request = cri::pull_request(&signed, None, Some("default"));
    if let Some(sandbox) = request.sandbox_config.as_mut() {
        sandbox
            .annotations
            .insert("io.containerd.cri.runtime-handler".into(), "runc".into());
    }
    let mark = proxied.containerd.mark();
    pg.client().pull_image(request).await.expect("annotated pull");
    assert!(proxied.containerd.since(mark).requests() >= 1, "containerd pulled");

    // Another generation: the same rule, one more (unused) image pattern.
    pg.write_policy(&env.key_policy(&[
        &format!("{}/signed/**", env.host()),
        &format!("{}/unused/**", env.host()),
    ]));
    pg.reload();
    pg.wait_for_log("policy reloaded").await;
    let mark = proxied.containerd.mark();
    pg.pull(&signed, Some("default")).await.expect("after the reload");
    assert!(
        proxied.containerd.since(mark).requests() >= 1,
        "containerd pulled under the new generation\n{}",
        pg.log()
    );
}

/// after a restart with `stateDir`, a tag moved in containerd (to an unverified image)
/// while pullgate was stopped is not answered from the kept verification: containerd pulls the
/// verified digest and kubelet gets its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pull_after_a_restart_does_not_answer_for_a_tag_moved_meanwhile() {
    let env = TestEnv::start().await;
    env.push_signed_image("restarts/app", "v1", "signed, warm").await;
    env.push_image("restarts/app", "other", "unsigned, warm").await;
    let signed = env.image_ref("restarts/app", "v1");
    let other = env.image_ref("restarts/app", "other");
    let policy = env.key_policy(&[&format!("{}/restarts/**", env.host())]);
    let dir = env.dir().join("pullgate");
    let config = format!("{}stateDir: state\nresolveTTL: 0s\n", env.pullgate_config(&dir, "10s"));

    let mut pullgate = Pullgate::start(&dir, &config, &policy).await;
    let cold = pullgate.pull(&signed, Some("default")).await.expect("cold");
    assert!(pullgate.stop().is_some_and(|s| s.success()), "{}", pullgate.log());

    let mut direct = env.containerd.client();
    direct
        .pull_image(cri::pull_request(&other, None, None))
        .await
        .expect("direct pull");
    let (ok, _, err) = ctr(&env, &["images", "tag", "--force", &other, &signed]);
    assert!(ok, "{err}");
    let other_id = env.containerd.image_id(&other).await.expect("other's id");
    assert_ne!(other_id, cold);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.containerd.image_id(&signed).await.as_ref() != Some(&other_id) {
        assert!(std::time::Instant::now() < deadline, "CRI sees the moved tag");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pullgate = Pullgate::start(&dir, &config, &policy).await;
    let warm = pullgate
        .pull(&signed, Some("default"))
        .await
        .expect("after the restart");
    assert_eq!(warm, cold, "{}", pullgate.log());
    assert_eq!(env.containerd.image_id(&signed).await, Some(cold.clone()));
    let again = pullgate.pull(&signed, Some("default")).await.expect("warm again");
    assert_eq!(again, cold);
}

/// a signed multi-platform index: containerd's pinned pull of the index picks this node's
/// manifest; the warm answer is that manifest's config id (the one the cold pull returned), and a
/// container can be made from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pull_of_an_index_answers_the_id_containerds_pull_gave() {
    use pullgate_tests::image::{push_index_for_this_node, random_bytes, TinyImage};
    let env = TestEnv::start_behind_proxy(Duration::ZERO).await;
    let proxied = env.proxied.as_ref().expect("behind the proxies");
    let repo = "signed/multi";
    let here = TinyImage::build_bytes(&random_bytes(4096));
    let there = TinyImage::build_bytes(&random_bytes(4096));
    let digest = push_index_for_this_node(&env.host(), repo, &here, &there, env.auth())
        .await
        .expect("push the images and their index");
    env.signer
        .sign_image(&env.host(), repo, &digest, env.auth())
        .await
        .expect("sign the index");
    let policy = env.key_policy(&[&format!("{}/signed/**", env.host())]);
    let pg = env.start_pullgate_with_config(&policy, "resolveTTL: 0s\n").await;
    let tag = env.image_ref(repo, "v1");

    let cold = pg.pull(&tag, Some("default")).await.expect("cold");
    let mark = proxied.containerd.mark();
    let warm = pg.pull(&tag, Some("default")).await.expect("warm");
    assert_eq!(proxied.containerd.since(mark).requests(), 0, "answered by pullgate");
    assert_eq!(warm, cold);
    assert_eq!(pg.last_record()["digest"], digest.as_str());
    container_can_be_created(&env, &tag, "c-index").expect("a container");
    // This node's manifest alone, unsigned, is still denied.
    let alone = pg.pull(&env.image_ref(repo, "here"), Some("default")).await;
    assert!(alone.is_err(), "the platform manifest is not signed itself");
}
