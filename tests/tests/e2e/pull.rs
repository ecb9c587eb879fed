//! The verified pull path end to end: a real registry, a real containerd, the real pullgate
//! binary, driven over its unix socket the way kubelet drives it.

use std::time::{Duration, Instant};

use pullgate_tests::{
    cosign, cri,
    distribution::{get_blob, get_manifest, push_blob, put_manifest, sha256_digest},
    policy::{policy, rule},
    tools, Pullgate, Signer, TestEnv, TEST_AUTHORITY,
};
use tonic::Code;

const SIGNED_PREFIX: &str = "SignatureValidationFailed: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_is_allowed_and_pulled_by_its_verified_digest() {
    let env = TestEnv::start().await;
    let digest = env.push_signed_image("signed/app", "v1", "signed").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let image = env.image_ref("signed/app", "v1");

    let image_ref = pg.pull(&image, Some("default")).await.expect("signed image allowed");

    // containerd holds the image under the tag, and its repo digest is the verified digest.
    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(image_ref.as_str())
    );
    let through = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    let shown = through.image.expect("ImageStatus by tag shows the verified image");
    assert_eq!(shown.id, image_ref);
    assert_eq!(shown.repo_digests, vec![format!("{}/signed/app@{digest}", env.host())]);
    assert!(shown.repo_tags.contains(&image));

    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    assert_eq!(record["rule"], "signed");
    assert_eq!(record["namespace"], "default");
    assert_eq!(record["pod"], cri::TEST_POD);
    assert_eq!(record["signatures"][0]["authority"], TEST_AUTHORITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_image_is_denied_with_the_kubelet_prefix_and_never_reaches_containerd() {
    let env = TestEnv::start().await;
    let digest = env.push_image("signed/app", "v1", "unsigned").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let image = env.image_ref("signed/app", "v1");

    let status = pg.pull(&image, Some("default")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(
        status.message(),
        format!(
            "{SIGNED_PREFIX}{}/signed/app@{digest}: rule \"signed\": no signature from authority \"{TEST_AUTHORITY}\" (no signatures found)",
            env.host()
        )
    );
    assert_eq!(
        env.containerd.image_id(&image).await,
        None,
        "a denied image must not be pulled"
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], status.message());
    // The record names the image as asked and the digest that was judged (SPEC §6).
    assert_eq!(record["image"], image);
    assert_eq!(record["digest"], digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_by_another_key_is_denied() {
    let env = TestEnv::start().await;
    let digest = env.push_image("signed/app", "v1", "wrong key").await;
    Signer::generate()
        .sign_image(&env.host(), "signed/app", &digest, None)
        .await
        .unwrap();
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;

    let status = pg.pull(&env.image_ref("signed/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(SIGNED_PREFIX), "{}", status.message());
    assert!(
        status.message().ends_with("(1 signature found: 1 key mismatch)"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_copied_from_another_image_is_denied() {
    let env = TestEnv::start().await;
    let host = env.host();
    let signed = env.push_signed_image("signed/app", "v1", "the signed one").await;
    let other = env.push_image("signed/app", "v2", "the other one").await;
    // Copy the whole .sig manifest of v1 onto v2's signature tag: a valid signature, for
    // another digest.
    let (sig_manifest, media_type) = get_manifest(&host, "signed/app", &cosign::signature_tag(&signed), None)
        .await
        .unwrap();
    put_manifest(
        &host,
        "signed/app",
        &cosign::signature_tag(&other),
        &sig_manifest,
        &media_type,
        None,
    )
    .await
    .unwrap();
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;

    let status = pg.pull(&env.image_ref("signed/app", "v2"), None).await.unwrap_err();
    assert!(status.message().starts_with(SIGNED_PREFIX), "{}", status.message());
    assert!(
        status.message().contains("1 signs another digest"),
        "{}",
        status.message()
    );
    // The original still verifies.
    pg.pull(&env.image_ref("signed/app", "v1"), None)
        .await
        .expect("v1 keeps its signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_payload_is_denied() {
    let env = TestEnv::start().await;
    let host = env.host();
    let digest = env.push_signed_image("signed/app", "v1", "tampered").await;
    // Rewrite the payload blob (keeping the signature annotation) and point the layer at it.
    let tag = cosign::signature_tag(&digest);
    let (manifest, media_type) = get_manifest(&host, "signed/app", &tag, None).await.unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = &mut manifest["layers"][0];
    let payload = get_blob(&host, "signed/app", layer["digest"].as_str().unwrap(), None)
        .await
        .unwrap();
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace("signed/app", "signed/evil")
        .into_bytes();
    let tampered_digest = push_blob(&host, "signed/app", &tampered, None).await.unwrap();
    assert_eq!(tampered_digest, sha256_digest(&tampered));
    layer["digest"] = tampered_digest.into();
    layer["size"] = tampered.len().into();
    put_manifest(
        &host,
        "signed/app",
        &tag,
        &serde_json::to_vec(&manifest).unwrap(),
        &media_type,
        None,
    )
    .await
    .unwrap();
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;

    let status = pg.pull(&env.image_ref("signed/app", "v1"), None).await.unwrap_err();
    assert!(status.message().starts_with(SIGNED_PREFIX), "{}", status.message());
    assert!(status.message().contains("1 key mismatch"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_and_one_good_signature_is_allowed() {
    let env = TestEnv::start().await;
    let digest = env.push_image("signed/app", "v1", "two signatures").await;
    Signer::generate()
        .sign_image(&env.host(), "signed/app", &digest, None)
        .await
        .unwrap();
    env.signer
        .sign_image(&env.host(), "signed/app", &digest, None)
        .await
        .unwrap();
    assert_eq!(
        cosign::read_signatures(&env.host(), "signed/app", &digest, None)
            .await
            .unwrap()
            .len(),
        2
    );
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;

    pg.pull(&env.image_ref("signed/app", "v1"), None)
        .await
        .expect("one good signature is enough");
    let record = pg.last_record();
    assert_eq!(record["signatures"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_deny_refuses_images_no_rule_names() {
    let env = TestEnv::start().await;
    env.push_image("elsewhere/app", "v1", "unmatched").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let image = env.image_ref("elsewhere/app", "v1");

    let status = pg.pull(&image, Some("default")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(
        status.message(),
        format!("{SIGNED_PREFIX}{image}: no rule matches: noMatch is deny")
    );
    assert_eq!(env.containerd.image_id(&image).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_rule_pulls_without_verification_and_status_shows_it() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_image("system/pause", "3.9", "system image").await;
    let rules = [rule("system", &[&format!("{host}/system/**")], "action: allow", None)];
    let pg = env.start_pullgate(&policy("enforce", "deny", &rules)).await;
    let image = env.image_ref("system/pause", "3.9");

    let id = pg.pull(&image, None).await.expect("allowed by rule");
    let shown = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.image.map(|i| i.id), Some(id));
    let record = pg.last_record();
    assert_eq!(
        (record["decision"].as_str(), record["rule"].as_str()),
        (Some("allow"), Some("system"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_rule_applies_only_in_its_namespaces() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_image("apps/tool", "v1", "namespaced").await;
    let pattern = format!("{host}/apps/**");
    let pem = env.signer.public_key_pem();
    let rules = [
        rule(
            "dev-anything",
            &[&pattern],
            "action: allow\nnamespaces: [\"dev-*\"]\nexcludeNamespaces: [dev-locked]",
            None,
        ),
        rule("apps", &[&pattern], "", Some(("release-key", &pem))),
    ];
    let pg = env.start_pullgate(&policy("enforce", "deny", &rules)).await;
    let image = env.image_ref("apps/tool", "v1");

    pg.pull(&image, Some("dev-alice"))
        .await
        .expect("dev-* namespaces are allowed unsigned");
    assert_eq!(pg.last_record()["rule"], "dev-anything");
    for namespace in [Some("prod"), Some("dev-locked"), None] {
        let status = pg.pull(&image, namespace).await.unwrap_err();
        assert!(
            status.message().contains("rule \"apps\""),
            "{namespace:?}: {}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_and_audit_modes_allow_and_record_what_enforce_would_do() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_image("signed/app", "v1", "warned").await;
    let pem = env.signer.public_key_pem();
    let image = env.image_ref("signed/app", "v1");
    for (mode, decision) in [("warn", "warn"), ("audit", "audit-deny")] {
        let rules = [rule(
            "signed",
            &[&format!("{host}/signed/*")],
            "",
            Some((TEST_AUTHORITY, &pem)),
        )];
        let pg = env.start_pullgate(&policy(mode, "deny", &rules)).await;
        pg.pull(&image, Some("default"))
            .await
            .unwrap_or_else(|s| panic!("{mode} mode must not block: {s}"));
        let record = pg.last_record();
        assert_eq!(record["decision"], decision, "{mode}");
        assert_eq!(record["mode"], mode);
        assert!(
            record["reason"].as_str().unwrap().starts_with(SIGNED_PREFIX),
            "{record}"
        );
    }
    // A rule's own mode overrides the policy's.
    let rules = [rule(
        "signed",
        &[&format!("{host}/signed/*")],
        "mode: warn",
        Some((TEST_AUTHORITY, &pem)),
    )];
    let pg = env.start_pullgate(&policy("enforce", "deny", &rules)).await;
    pg.pull(&image, None)
        .await
        .expect("rule mode warn overrides spec.mode enforce");
    assert_eq!(pg.last_record()["decision"], "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_works_only_with_the_credentials_kubelet_sends() {
    let env = TestEnv::start_with_auth("alice", "s3cret").await;
    env.push_signed_image("signed/app", "v1", "private").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let image = env.image_ref("signed/app", "v1");

    let status = pg.pull(&image, None).await.unwrap_err();
    assert!(
        status.message().starts_with("RegistryUnavailable: "),
        "{}",
        status.message()
    );
    assert!(status.message().contains("unauthorized"), "{}", status.message());

    let wrong = cri::pull_request(&image, Some(("alice", "wrong")), None);
    let status = pg.client().pull_image(wrong).await.unwrap_err();
    assert!(
        status.message().starts_with("RegistryUnavailable: "),
        "{}",
        status.message()
    );

    let right = cri::pull_request(&image, Some(("alice", "s3cret")), None);
    pg.client()
        .pull_image(right)
        .await
        .expect("pull with kubelet's credentials");
    assert_eq!(pg.last_record()["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_registry_gives_registry_unavailable_within_the_timeout() {
    let mut env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "gone").await;
    let dir = env.dir().join("pg");
    let pg = Pullgate::start(
        &dir,
        &env.pullgate_config(&dir, "3s"),
        &env.key_policy(&[&format!("{}/signed/*", env.host())]),
    )
    .await;
    env.registry.stop();

    let started = Instant::now();
    let status = pg.pull(&env.image_ref("signed/app", "v1"), None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        status.message().starts_with("RegistryUnavailable: "),
        "{}",
        status.message()
    );
    assert!(took < Duration::from_secs(3 + 5), "took {took:?}");
    assert_eq!(pg.last_record()["decision"], "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_refuses_a_broken_one() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_image("other/app", "v1", "reload").await;
    let image = env.image_ref("other/app", "v1");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;
    assert!(pg.pull(&image, None).await.is_err());

    // A broken policy is refused; the last good one stays in force.
    pg.write_policy("apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  bogus: 1\n");
    pg.reload();
    pg.wait_for_log("policy reload refused").await;
    assert!(pg.pull(&image, None).await.is_err());

    pg.write_policy(&policy(
        "enforce",
        "allow",
        &[rule("signed", &[&format!("{host}/signed/*")], "action: deny", None)],
    ));
    pg.reload();
    pg.wait_for_log("policy reloaded").await;
    pg.pull(&image, None).await.expect("noMatch: allow after reload");
}

/// crictl, the CRI client on every node, pulls through pullgate as kubelet does: a signed image
/// is pulled by its verified digest, an unsigned one is refused with kubelet's message, and the
/// image list comes from containerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_pulls_through_pullgate() {
    let env = TestEnv::start().await;
    let digest = env.push_signed_image("signed/app", "v1", "crictl").await;
    env.push_image("signed/unsigned", "v1", "crictl unsigned").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let crictl = |args: Vec<String>| {
        let mut command = tools::crictl(&pg.socket(), &env.containerd.socket());
        command.args(args);
        tokio::task::spawn_blocking(move || command.output().expect("crictl runs"))
    };

    let signed = env.image_ref("signed/app", "v1");
    let out = crictl(vec!["pull".into(), signed.clone()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Image is up to date for sha256:"));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest.as_str());
    assert_eq!(record["namespace"], "", "crictl pulls with no pod");

    let out = crictl(vec!["images".into(), "--digests".into()]).await.unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listed.contains(&format!("{}/signed/app", env.host())), "{listed}");

    let unsigned = env.image_ref("signed/unsigned", "v1");
    let out = crictl(vec!["pull".into(), unsigned.clone()]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unsigned image was pulled: {stderr}");
    assert!(stderr.contains(SIGNED_PREFIX), "{stderr}");
    assert_eq!(pg.last_record()["decision"], "deny");
    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&unsigned))
        .await
        .unwrap();
    assert!(direct.into_inner().image.is_none());
}
