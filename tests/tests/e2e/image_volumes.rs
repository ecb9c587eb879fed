//! OCI image volumes (KEP-4639): kubelet pulls an OCI artifact (a manifest whose config is no
//! image config, with one tar+gzip layer) through `PullImage` like any image, and containerd 2.x
//! stores it. pullgate judges an artifact as it judges an image: signed is admitted and pulled,
//! unsigned is denied; the config's media type is no reason to refuse.
//!
//! containerd 1.6 cannot store artifacts: its CRI pull unpacks every image and fails with
//! "mismatched image rootfs and manifest layers" (the config lists no layers). So the admission
//! tests run on containerd 2.x, whichever containerd this run uses ([`containerd::binary_2x`]),
//! and one test pins 1.6's refusal on the run with 1.6.

use pullgate_tests::{
    artifact::{Config, TinyArtifact},
    containerd,
    policy::{policy, rule},
    TestEnv,
};
use tonic::Code;

const REPOSITORY: &str = "volumes/model";

/// Pushes a new artifact with `config` as `REPOSITORY:tag`, signed by the env's signer when
/// `signed`.
async fn push_artifact(env: &TestEnv, config: Config, tag: &str, signed: bool) -> TinyArtifact {
    let artifact = TinyArtifact::build(config, &format!("{config:?} {tag}"));
    let digest = artifact
        .push(&env.host(), REPOSITORY, tag, env.auth())
        .await
        .unwrap_or_else(|e| panic!("push {tag}: {e}"));
    assert_eq!(digest, artifact.digest());
    if signed {
        env.signer
            .sign_image(&env.host(), REPOSITORY, &digest, env.auth())
            .await
            .unwrap_or_else(|e| panic!("sign {tag}: {e}"));
    }
    artifact
}

fn volumes_policy(env: &TestEnv) -> String {
    env.key_policy(&[&format!("{}/volumes/**", env.host())])
}

/// Whether containerd fetched `what` (`manifests/<digest>`, `blobs/<digest>`) of the repository.
fn fetched_by_containerd(env: &TestEnv, what: &str) -> bool {
    fetched_by(env, what, "containerd/")
}

/// Whether a client whose user agent starts with `agent` fetched `what` of the repository.
fn fetched_by(env: &TestEnv, what: &str, agent: &str) -> bool {
    env.registry.log().lines().any(|line| {
        line.contains(&format!("\"GET /v2/{REPOSITORY}/{what} HTTP/1.1\" 200 "))
            && line.rsplit_once(" \"").is_some_and(|(_, ua)| ua.starts_with(agent))
    })
}

/// A signed artifact, with the empty config or a config of its own type, is admitted, pulled by
/// containerd 2.x as the verified digest, and named with kubelet's tag. (containerd 2.1 fetches
/// an artifact's manifest and config but not its layer, which it does not unpack.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_artifact_is_admitted_and_containerd_2_stores_it() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    for (config, tag) in [(Config::Empty, "empty-config"), (Config::Custom, "own-config")] {
        let artifact = push_artifact(&env, config, tag, true).await;
        let image = env.image_ref(REPOSITORY, tag);

        let image_ref = pg
            .pull(&image, Some("default"))
            .await
            .unwrap_or_else(|e| panic!("{config:?}: a signed artifact must be admitted: {e:?}"));
        // containerd names what it pulled by its config's digest, as it does for an image.
        assert_eq!(image_ref, artifact.config_digest(), "{config:?}");
        let record = pg.last_record();
        assert_eq!(record["decision"], "allow", "{record}");
        assert_eq!(record["digest"], artifact.digest(), "{record}");
        assert_eq!(record["outcome"], "pulled", "{record}");
        assert_eq!(record["rule"], "signed", "{record}");

        // containerd has it under kubelet's tag and the verified digest, which it fetched.
        let status = env
            .containerd
            .client()
            .image_status(pullgate_tests::cri::image_status_request(&image))
            .await
            .expect("containerd answers ImageStatus")
            .into_inner()
            .image
            .unwrap_or_else(|| panic!("{config:?}: containerd does not have {image}"));
        assert!(status.repo_tags.contains(&image), "{status:?}");
        let pinned = env.image_ref(REPOSITORY, &artifact.digest());
        assert!(status.repo_digests.contains(&pinned), "{status:?}");
        let manifest = format!("manifests/{}", artifact.digest());
        // The manifest came from the registry: fetched into containerd by pullgate while it was
        // verified (its prefetch), or by containerd's pull.
        let fetched = fetched_by_containerd(&env, &manifest) || fetched_by(&env, &manifest, "pullgate/");
        assert!(fetched, "{}", env.registry.log());
        // pullgate shows kubelet the artifact it verified.
        let shown = pg
            .client()
            .image_status(pullgate_tests::cri::image_status_request(&image))
            .await
            .unwrap()
            .into_inner()
            .image;
        assert_eq!(shown.map(|i| i.id), Some(artifact.config_digest()), "{config:?}");
    }
}

/// An unsigned artifact is denied as an unsigned image is, and containerd never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_artifact_is_denied_like_any_image() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let artifact = push_artifact(&env, Config::Empty, "unsigned", false).await;
    let image = env.image_ref(REPOSITORY, "unsigned");

    let denied = pg
        .pull(&image, Some("default"))
        .await
        .expect_err("an unsigned artifact must be denied");
    assert_eq!(denied.code(), Code::Unknown);
    assert!(
        denied.message().starts_with("SignatureValidationFailed: "),
        "{}",
        denied.message()
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["digest"], artifact.digest(), "{record}");
    assert_eq!(env.containerd.image_id(&image).await, None);
    let manifest = format!("manifests/{}", artifact.digest());
    assert!(!fetched_by_containerd(&env, &manifest), "{}", env.registry.log());
}

/// With no rule for the artifact's repository and `noMatch: allow`, an artifact goes through
/// unverified as an image would: pullgate reads nothing of the manifest that could refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_no_rule_covers_is_let_through_by_no_match_allow() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let key = env.signer.public_key_pem();
    let rules = [rule(
        "apps",
        &[&format!("{}/apps/**", env.host())],
        "",
        Some(("release-key", &key)),
    )];
    let pg = env.start_pullgate(&policy("enforce", "allow", &rules)).await;
    let artifact = push_artifact(&env, Config::Custom, "no-rule", false).await;

    let image_ref = pg
        .pull(&env.image_ref(REPOSITORY, "no-rule"), None)
        .await
        .expect("noMatch: allow lets an artifact through");
    assert_eq!(image_ref, artifact.config_digest());
    let record = pg.last_record();
    assert_eq!(record["outcome"], "pulled", "{record}");
}

/// Why the tests above need containerd 2.x: pullgate admits a signed artifact, but containerd
/// 1.6's pull fails unpacking it, and kubelet gets containerd's error (recorded as failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_1_6_cannot_pull_an_artifact_pullgate_admits() {
    let binary = containerd::binary();
    if binary.major >= 2 {
        eprintln!(
            "SKIPPED: this run's containerd is {}; containerd 1.6's refusal is checked in the run with 1.6",
            binary.version
        );
        return;
    }
    let env = TestEnv::start().await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let artifact = push_artifact(&env, Config::Empty, "on-1.6", true).await;

    let failed = pg
        .pull(&env.image_ref(REPOSITORY, "on-1.6"), None)
        .await
        .expect_err("containerd 1.6 cannot unpack an artifact");
    assert!(
        failed.message().contains("mismatched image rootfs and manifest layers"),
        "{failed:?}"
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["digest"], artifact.digest(), "{record}");
    assert_eq!(record["outcome"], "failed", "{record}");
}

/// The manifest digest containerd's own image `name` points at (containerd's image API, through
/// `ctr`: the CRI answers by image id, which artifacts with the same config share).
fn target_in_containerd(env: &TestEnv, name: &str) -> Option<String> {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images", "ls", &format!("name=={name}")])
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|columns| columns.first().map(String::as_str) == Some(name))
        .and_then(|columns| columns.get(2).cloned())
}

/// Every artifact with the empty config has the same image id in containerd (the config's
/// digest). An unsigned artifact that reached containerd around pullgate, in the repository of
/// a verified one, has the verified one's id: pullgate must not show it for that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_artifact_sharing_a_verified_ones_image_id_is_not_shown() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let verified = push_artifact(&env, Config::Empty, "verified", true).await;
    let around = push_artifact(&env, Config::Empty, "around", false).await;
    let (verified_image, around_image) = (
        env.image_ref(REPOSITORY, "verified"),
        env.image_ref(REPOSITORY, "around"),
    );
    pg.pull(&verified_image, None)
        .await
        .expect("a signed artifact is admitted");
    // Pulled straight into containerd, as `ctr` or a node bootstrap script might.
    env.containerd
        .client()
        .pull_image(pullgate_tests::cri::pull_request(&around_image, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    assert_eq!(
        env.containerd.image_id(&around_image).await,
        Some(verified.config_digest()),
        "both artifacts have the empty config's digest as their id"
    );
    assert_eq!(target_in_containerd(&env, &around_image), Some(around.digest()));

    let status = |image: String| {
        let pg = &pg;
        async move {
            pg.client()
                .image_status(pullgate_tests::cri::image_status_request(&image))
                .await
                .unwrap()
                .into_inner()
                .image
        }
    };
    assert_eq!(
        status(around_image.clone()).await,
        None,
        "the unverified artifact was shown"
    );
    let record = pg.last_record();
    assert_eq!(record["event"], "status-hidden", "{record}");
    assert_eq!(record["image"], around_image.as_str(), "{record}");
    // containerd now reports both manifests under the one id, so the verified artifact's name is
    // not shown either until every manifest there was verified: kubelet pulls it through
    // pullgate again, which is admitted as before.
    assert_eq!(status(verified_image.clone()).await, None);
    pg.pull(&verified_image, None).await.expect("admitted again");
}

/// A tag containerd has for one artifact, pulled again through pullgate after the registry moved
/// it to another artifact with the same image id: containerd's tag must name the verified
/// artifact afterwards, not the one it named before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_artifact_takes_over_a_tag_that_named_another_with_its_image_id() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let image = env.image_ref(REPOSITORY, "v1");
    let before = push_artifact(&env, Config::Empty, "v1", false).await;
    env.containerd
        .client()
        .pull_image(pullgate_tests::cri::pull_request(&image, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    assert_eq!(target_in_containerd(&env, &image), Some(before.digest()));

    let signed = push_artifact(&env, Config::Empty, "v1", true).await;
    pg.pull(&image, None).await.expect("the signed artifact is admitted");
    assert_eq!(pg.last_record()["digest"], signed.digest());
    assert_eq!(
        target_in_containerd(&env, &image),
        Some(signed.digest()),
        "containerd's tag still names the artifact pullgate did not verify"
    );
}

/// containerd's CRI lists a tag in `repoTags` and only digest names in `repoDigests`: an
/// unverified artifact sharing a verified one's id, known to containerd by a tag alone (as
/// `ctr images pull` or `ctr images tag` leave it), must not be shown by that tag because the
/// only digest listed for the id is the verified one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_artifact_known_by_a_tag_alone_is_not_shown() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let _verified = push_artifact(&env, Config::Empty, "verified", true).await;
    let around = push_artifact(&env, Config::Empty, "around", false).await;
    let (verified_image, around_image) = (
        env.image_ref(REPOSITORY, "verified"),
        env.image_ref(REPOSITORY, "around"),
    );
    env.containerd
        .client()
        .pull_image(pullgate_tests::cri::pull_request(&around_image, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    // Only the tag names the unverified artifact now.
    let around_pinned = format!("{}/{REPOSITORY}@{}", env.host(), around.digest());
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images", "rm", &around_pinned])
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(target_in_containerd(&env, &around_image), Some(around.digest()));
    pg.pull(&verified_image, None)
        .await
        .expect("a signed artifact is admitted");

    let shown = pg
        .client()
        .image_status(pullgate_tests::cri::image_status_request(&around_image))
        .await
        .unwrap()
        .into_inner()
        .image;
    assert_eq!(shown, None, "the unverified artifact was shown by its tag");
}

/// A name containerd keeps but pullgate cannot parse (`registry-1.docker.io/<name>`: Docker Hub
/// without a namespace under a spelling containerd does not add `library/` to) can name an
/// unverified artifact with a verified one's id. Asked by that name, the image must not be
/// shown because every name pullgate could read was verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_asked_by_a_name_pullgate_cannot_read_is_not_shown() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let _verified = push_artifact(&env, Config::Empty, "verified", true).await;
    let around = push_artifact(&env, Config::Empty, "around", false).await;
    let around_image = env.image_ref(REPOSITORY, "around");
    env.containerd
        .client()
        .pull_image(pullgate_tests::cri::pull_request(&around_image, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    let ctr = |args: &[&str]| {
        let output = std::process::Command::new("ctr")
            .arg("--address")
            .arg(env.containerd.socket())
            .args(["--namespace", "k8s.io", "images"])
            .args(args)
            .output()
            .expect("ctr runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let around_pinned = format!("{}/{REPOSITORY}@{}", env.host(), around.digest());
    let unreadable = "registry-1.docker.io/model:around";
    ctr(&["tag", &around_pinned, unreadable]);
    ctr(&["rm", &around_pinned, &around_image]);
    pg.pull(&env.image_ref(REPOSITORY, "verified"), None)
        .await
        .expect("a signed artifact is admitted");

    let shown = pg
        .client()
        .image_status(pullgate_tests::cri::image_status_request(unreadable))
        .await
        .unwrap()
        .into_inner()
        .image;
    assert_eq!(
        shown, None,
        "the unverified artifact was shown by a name pullgate cannot read"
    );
}

/// containerd keeps whatever target an image name is given: a digest name (`repo@sha256:A`)
/// can be made to point at another manifest with the same id (`ctr images tag --force`). The
/// name proves nothing; what it points at must have been verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_name_pointing_at_another_manifest_is_not_shown() {
    let Some(binary) = containerd::binary_2x() else { return };
    let env = TestEnv::start_on(binary).await;
    let pg = env.start_pullgate(&volumes_policy(&env)).await;
    let verified = push_artifact(&env, Config::Empty, "verified", true).await;
    let around = push_artifact(&env, Config::Empty, "around", false).await;
    let (verified_image, around_image) = (
        env.image_ref(REPOSITORY, "verified"),
        env.image_ref(REPOSITORY, "around"),
    );
    env.containerd
        .client()
        .pull_image(pullgate_tests::cri::pull_request(&around_image, None, None))
        .await
        .expect("containerd 2.x pulls an artifact");
    pg.pull(&verified_image, None)
        .await
        .expect("a signed artifact is admitted");
    let ctr = |args: &[&str]| {
        let output = std::process::Command::new("ctr")
            .arg("--address")
            .arg(env.containerd.socket())
            .args(["--namespace", "k8s.io", "images"])
            .args(args)
            .output()
            .expect("ctr runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let pinned = |digest: String| format!("{}/{REPOSITORY}@{digest}", env.host());
    // Only a name saying the verified digest remains, and it points at the unverified artifact.
    ctr(&["tag", "--force", &around_image, &pinned(verified.digest())]);
    ctr(&["rm", &pinned(around.digest()), &around_image, &verified_image]);
    assert_eq!(
        target_in_containerd(&env, &pinned(verified.digest())),
        Some(around.digest())
    );

    let shown = pg
        .client()
        .image_status(pullgate_tests::cri::image_status_request(&pinned(verified.digest())))
        .await
        .unwrap()
        .into_inner()
        .image;
    assert_eq!(
        shown, None,
        "a name saying the verified digest was taken for what it points at"
    );
}
