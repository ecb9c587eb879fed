//! What a cold verified pull asks of the registry, beside a direct pull of a twin image, counted
//! by the rig's latency proxies (no delay here): containerd and pullgate each reach the real
//! registry through a proxy of their own, so the requests of each are counted apart.
//!
//! The target (issue 17): at most one manifest `GET` more than a direct pull, since manifest
//! `GET`s count against Docker Hub's pull limit. The one more is the `.sig` manifest, which only
//! pullgate reads. Round trips are the other half of the cost: what remains on the critical path
//! before containerd starts is `HEAD` of the tag, then the `.sig` manifest, then its payload blob
//! (the referrers lookup runs beside them); the overlap of the content download with that chain
//! is other work.

use std::time::Duration;

use pullgate_tests::{latency_proxy::Kind, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_verified_pull_costs_at_most_one_manifest_get_more_than_a_direct_pull() {
    let env = TestEnv::start_behind_proxy(Duration::ZERO).await;
    let proxied = env.proxied.as_ref().expect("behind the proxies");
    env.push_signed_image("signed/app", "v1", "counted, signed").await;
    env.push_signed_image("signed/app", "v2", "counted, signed again").await;
    env.push_image("plain/app", "v1", "counted, direct").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/**", env.host())]))
        .await;

    let mark = proxied.containerd.mark();
    let mut direct = env.containerd.client();
    let request = pullgate_tests::cri::pull_request(&env.image_ref("plain/app", "v1"), None, Some("default"));
    direct.pull_image(request).await.expect("direct pull");
    let direct = proxied.containerd.since(mark);

    let marks = (proxied.containerd.mark(), proxied.pullgate.mark());
    pg.pull(&env.image_ref("signed/app", "v1"), Some("default"))
        .await
        .unwrap_or_else(|e| panic!("verified pull: {e:?}\n{}", pg.log()));
    let by_containerd = proxied.containerd.since(marks.0);
    let by_pullgate = proxied.pullgate.since(marks.1);
    let pullgate_asked = proxied.pullgate.requests_since(marks.1);
    let shown = format!("direct {direct:?}\ncontainerd {by_containerd:?}\npullgate {pullgate_asked:#?}");

    // containerd fetches no more than it would directly: none, once pullgate's prefetch has put
    // the content in its store.
    assert!(by_containerd.manifest_get <= direct.manifest_get, "{shown}");
    assert!(
        by_containerd.manifest_get + by_pullgate.manifest_get <= direct.manifest_get + 1,
        "at most one manifest GET more than a direct pull:\n{shown}"
    );
    // The tag is resolved by HEAD; the one manifest GET is the `.sig` tag's.
    let tag_gets = pullgate_asked
        .iter()
        .filter(|r| r.kind() == Kind::ManifestGet && r.path.contains("/manifests/v1"))
        .count();
    assert_eq!(tag_gets, 0, "{shown}");
    assert!(
        pullgate_asked
            .iter()
            .any(|r| r.kind() == Kind::ManifestHead && r.path.contains("/manifests/v1")),
        "{shown}"
    );

    // Besides: the referrers API (once per repository) and a HEAD of the referrers tag, which
    // this image does not have; each asked of the registry once though its hosts.toml lists it
    // twice (as `server` and as a `[host]`, for containerd 1.6).
    assert_eq!(by_pullgate.manifest_head, 2, "{shown}");
    assert_eq!(by_pullgate.referrers, 1, "{shown}");

    // A second cold pull: pullgate's connection to the registry is kept, not opened again.
    let mark = proxied.pullgate.mark();
    pg.pull(&env.image_ref("signed/app", "v2"), Some("default"))
        .await
        .unwrap_or_else(|e| panic!("second verified pull: {e:?}\n{}", pg.log()));
    let second = proxied.pullgate.since(mark);
    assert!(second.requests() >= 3, "{second:?}");
    // The prefetch runs beside the signature lookups, so a pull may need a connection more than
    // the pool holds; most are reused.
    assert!(
        second.connections < by_pullgate.connections.max(1),
        "pullgate reuses its connections: first {by_pullgate:?}, second {second:?}"
    );
}

/// A repeat pull by tag of a verified image containerd already holds (kubelet's
/// `imagePullPolicy: Always`): pullgate resolves the tag (`HEAD`) and, finding containerd's tag
/// already on that verified manifest, answers without asking containerd to pull again. The
/// registry sees what a direct repeat pull shows it: one `HEAD`. Where containerd's tag points
/// elsewhere, or the pull names a runtime handler, containerd pulls as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_verified_pull_asks_the_registry_no_more_than_a_direct_one() {
    let env = TestEnv::start_behind_proxy(Duration::ZERO).await;
    let proxied = env.proxied.as_ref().expect("behind the proxies");
    env.push_signed_image("signed/app", "v1", "warm, signed").await;
    env.push_image("plain/app", "v1", "warm, direct").await;
    env.push_image("plain/other", "v1", "warm, moved to").await;
    let policy = env.key_policy(&[&format!("{}/signed/**", env.host())]);
    // Every pull resolves the tag at the registry, as one after `resolveTTL` does.
    let pg = env.start_pullgate_with_config(&policy, "resolveTTL: 0s\n").await;

    let mut direct = env.containerd.client();
    let plain = pullgate_tests::cri::pull_request(&env.image_ref("plain/app", "v1"), None, Some("default"));
    direct.pull_image(plain.clone()).await.expect("direct pull");
    let mark = proxied.containerd.mark();
    direct.pull_image(plain).await.expect("direct repeat pull");
    let direct_warm = proxied.containerd.since(mark);
    assert!(direct_warm.requests() >= 1, "{direct_warm:?}");

    let signed = env.image_ref("signed/app", "v1");
    let cold = pg.pull(&signed, Some("default")).await.expect("cold verified pull");
    let marks = (proxied.containerd.mark(), proxied.pullgate.mark());
    let warm = pg.pull(&signed, Some("default")).await.expect("warm verified pull");
    let (by_containerd, by_pullgate) = (proxied.containerd.since(marks.0), proxied.pullgate.since(marks.1));
    let shown = format!("direct {direct_warm:?}\ncontainerd {by_containerd:?}\npullgate {by_pullgate:?}");
    assert_eq!(warm, cold, "the same image id");
    assert_eq!(
        by_containerd.requests(),
        0,
        "containerd is not asked to pull again:\n{shown}"
    );
    assert_eq!(by_pullgate.manifest_head, 1, "{shown}");
    assert!(
        by_containerd.requests() + by_pullgate.requests() <= direct_warm.requests(),
        "{shown}"
    );
    let record = pg.last_record();
    assert_eq!(record["outcome"], "pulled", "{record}");
    assert_eq!(record["decision"], "allow", "{record}");
    // kubelet's next look finds it by tag.
    let status = pg
        .client()
        .image_status(pullgate_tests::cri::image_status_request(&signed))
        .await
        .expect("ImageStatus")
        .into_inner();
    assert_eq!(status.image.map(|i| i.id), Some(cold.clone()));

    // A pull naming a runtime handler: containerd may unpack for that handler, so it pulls.
    let mut request = pullgate_tests::cri::pull_request(&signed, None, Some("default"));
    if let Some(spec) = request.image.as_mut() {
        spec.runtime_handler = "runc".into();
    }
    let mark = proxied.containerd.mark();
    pg.client()
        .pull_image(request)
        .await
        .expect("pull with a runtime handler");
    assert!(proxied.containerd.since(mark).requests() >= 1, "containerd pulled");

    // containerd's tag moved to another image: containerd pulls the verified digest again and
    // the tag names it once more.
    let other = pullgate_tests::cri::pull_request(&env.image_ref("plain/other", "v1"), None, None);
    direct.pull_image(other).await.expect("direct pull of another image");
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images", "tag", "--force"])
        .arg(env.image_ref("plain/other", "v1"))
        .arg(&signed)
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mark = proxied.containerd.mark();
    let again = pg
        .pull(&signed, Some("default"))
        .await
        .expect("pull after the tag moved");
    assert_eq!(again, cold, "{}", pg.log());
    assert!(proxied.containerd.since(mark).requests() >= 1, "containerd pulled");
}
