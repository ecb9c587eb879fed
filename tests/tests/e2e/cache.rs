//! The verification cache and single flight, end to end: concurrent pulls of one new image
//! share one verification, a repeat pull is answered from memory, a policy reload forgets, and a
//! tag's resolution is reused for `resolveTTL`.

use std::collections::BTreeMap;

use pullgate_tests::TestEnv;

fn lookups(records: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry(record["cache"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_one_verification() {
    let env = TestEnv::start().await;
    env.push_signed_image("apps/app", "v1", "rollout").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/apps/**", env.host())]))
        .await;
    let image = env.image_ref("apps/app", "v1");

    let pulls: Vec<_> = (0..64)
        .map(|_| {
            let client = pg.client();
            let request = pullgate_tests::cri::pull_request(&image, None, Some("default"));
            tokio::spawn(async move {
                let mut client = client;
                client.pull_image(request).await
            })
        })
        .collect();
    for pull in pulls {
        pull.await.unwrap().unwrap_or_else(|e| panic!("{}", e.message()));
    }
    let records = pg.audit_records();
    assert_eq!(records.len(), 64);
    let counts = lookups(&records);
    assert_eq!(counts.get("miss"), Some(&1), "exactly one verification: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 64);
    assert!(records.iter().all(|r| r["decision"] == "allow"));
    // Every record carries the evidence of the one verification.
    assert!(records.iter().all(|r| r["signatures"][0]["authority"] == "test-key"));

    // A repeat pull is answered from memory.
    pg.pull(&image, None).await.unwrap();
    assert_eq!(pg.last_record()["cache"], "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_forgets_and_a_denial_is_never_remembered() {
    let env = TestEnv::start().await;
    env.push_signed_image("apps/app", "v1", "reload").await;
    env.push_image("apps/unsigned", "v1", "never").await;
    let policy = env.key_policy(&[&format!("{}/apps/**", env.host())]);
    let pg = env.start_pullgate(&policy).await;
    let image = env.image_ref("apps/app", "v1");
    pg.pull(&image, None).await.unwrap();
    pg.pull(&image, None).await.unwrap();
    assert_eq!(pg.last_record()["cache"], "hit");

    // The same policy with one more rule is another generation: verified again.
    pg.write_policy(&format!(
        "{policy}    - name: extra\n      images: [\"{}/other/**\"]\n      action: allow\n",
        env.host()
    ));
    pg.reload();
    pg.wait_for_log("policy reloaded").await;
    pg.pull(&image, None).await.unwrap();
    assert_eq!(pg.last_record()["cache"], "miss");

    let unsigned = env.image_ref("apps/unsigned", "v1");
    for _ in 0..2 {
        pg.pull(&unsigned, None).await.unwrap_err();
        assert_eq!(pg.last_record()["cache"], "miss", "a denial is verified again");
    }
    // A decision that needs no verification says so.
    pg.pull(&env.image_ref("other/x", "v1"), None).await.unwrap_err();
    assert_eq!(pg.last_record()["cache"], "none");
}

/// A tag resolved moments ago is not asked of the registry again (`resolveTTL`, 10 s by
/// default): a tag moved meanwhile keeps pulling the verified digest it named, never the new
/// content unverified. With `resolveTTL: 0s` every pull judges what the tag names now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_resolution_is_reused_within_resolve_ttl() {
    let env = TestEnv::start().await;
    let signed = env.push_signed_image("apps/app", "v1", "signed first").await;
    let policy = env.key_policy(&[&format!("{}/apps/**", env.host())]);
    let remembering = env.start_pullgate(&policy).await;
    let resolving = env.start_pullgate_with_config(&policy, "resolveTTL: 0s\n").await;
    let image = env.image_ref("apps/app", "v1");
    for pg in [&remembering, &resolving] {
        pg.pull(&image, None).await.unwrap();
        assert_eq!(pg.last_record()["digest"], signed);
    }

    let moved = env.push_image("apps/app", "v1", "moved, unsigned").await;
    assert_ne!(moved, signed);
    remembering.pull(&image, None).await.unwrap();
    let record = remembering.last_record();
    assert_eq!(
        (&record["decision"], &record["digest"]),
        (&"allow".into(), &signed.clone().into())
    );
    assert_eq!(record["cache"], "hit");

    let denied = resolving.pull(&image, None).await.unwrap_err();
    assert!(
        denied.message().starts_with("SignatureValidationFailed: "),
        "{denied:?}"
    );
    assert_eq!(resolving.last_record()["digest"], moved);
    // The tag still names the verified image in containerd.
    assert_eq!(
        env.containerd.image_id(&image).await,
        env.containerd.image_id(&env.image_ref("apps/app", &signed)).await
    );
}
