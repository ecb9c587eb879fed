//! The concurrent prefetch order: the lease made while the manifest is
//! fetched, an index written while its chosen manifest is fetched, a manifest written while
//! its blobs are fetched, a given-up blob aborted after containerd closed its writer. Denials
//! are made to land at many points of that (the signature lookup held back by steps of a few
//! milliseconds): nothing of a denied index may be left once containerd collected the lease.

use std::time::Duration;

use pullgate_tests::{
    containerd::Containerd,
    distribution::sha256_digest,
    image::{push_index_for_this_node, random_bytes, TinyImage},
    policy, pullgate,
    registry::Registry,
    slow_lookups::{Behaviour, SlowLookups},
    Pullgate, Signer, TEST_AUTHORITY,
};

/// An unsigned index of two 2 MiB images (this node's platform and another) pushed as
/// `prefetch/<name>:v1` to `registry`; its digests (index, chosen manifest, config, layer).
async fn push_index(registry: &Registry, name: &str) -> Vec<String> {
    let repo = format!("prefetch/{name}");
    let here = TinyImage::build_bytes(&random_bytes(2 * 1024 * 1024));
    let there = TinyImage::build_bytes(&random_bytes(2 * 1024 * 1024));
    let digest = push_index_for_this_node(&registry.host(), &repo, &here, &there, None)
        .await
        .expect("push the images and their index");
    vec![
        digest,
        here.digest(),
        sha256_digest(&here.config),
        sha256_digest(&here.layer),
    ]
}

/// Denials landing at many points of a denied index's concurrent prefetch (lookups held back
/// 0 to 120 ms, blobs sent at 8 MiB/s): nothing is left once the lease is collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_landing_anywhere_in_an_index_prefetch_leave_nothing() {
    let mut failures = Vec::new();
    for delay in [0u64, 3, 6, 10, 15, 20, 30, 45, 60, 90, 120] {
        let registry = Registry::start().await;
        let proxy = SlowLookups::start(
            &registry.host(),
            Behaviour {
                lookup_delay: Duration::from_millis(delay),
                blob_rate: Some(8 * 1024 * 1024),
                cut_blobs: None,
            },
        )
        .await;
        let containerd = Containerd::start(&[proxy.host()]).await;
        let signer = Signer::generate();
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = pullgate::config_yaml(
            &dir.path().join("pullgate.sock"),
            &containerd.socket(),
            &dir.path().join("policy.yaml"),
            &dir.path().join("audit.jsonl"),
            &[proxy.host()],
            "10s",
        );
        let policy = policy::key_policy(
            TEST_AUTHORITY,
            &signer.public_key_pem(),
            &[&format!("{}/prefetch/*", proxy.host())],
        );
        let pg = Pullgate::start(dir.path(), &config, &policy).await;
        for n in 0..3 {
            let digests = push_index(&registry, &format!("index-{delay}-{n}")).await;
            let image = format!("{}/prefetch/index-{delay}-{n}:v1", proxy.host());
            let denied = pg
                .pull(&image, Some("default"))
                .await
                .expect_err("unsigned index denied");
            assert!(denied.message().contains("no signature"), "{}", denied.message());
            // The prefetch suite's check: the lease gone, then no blob of the index, no ingest.
            let (held, ingests) = super::prefetch::collected(&containerd, &digests).await;
            if !held.is_empty() || !ingests.is_empty() {
                failures.push(format!("delay {delay} ms, image {n}: {held:?} {ingests:?}"));
            }
        }
        if !failures.is_empty() {
            eprintln!("{}", pg.log());
            break;
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}
