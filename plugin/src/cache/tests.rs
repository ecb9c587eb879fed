use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use super::*;

type TestCache = Cache<&'static str, u32, String>;

fn cache() -> TestCache {
    Cache::new(Duration::from_secs(60), 16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_verification() {
    let cache = Arc::new(cache());
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (cache, runs, gate) = (cache.clone(), runs.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_verify(
                    "sha256:a",
                    || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(7)
                    },
                    |_| None,
                )
                .await
        }));
    }
    // Let every request arrive before the one verification finishes.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.notify_waiters();
    let mut lookups = Vec::new();
    for task in tasks {
        let (outcome, lookup) = task.await.unwrap();
        assert_eq!(outcome, Ok(7));
        lookups.push(lookup);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(lookups.iter().filter(|l| **l == Lookup::Miss).count(), 1);
}

#[tokio::test]
async fn a_success_is_remembered_and_a_failure_is_not() {
    let cache = cache();
    let (outcome, lookup) = cache.get_or_verify("ok", || async { Ok(1) }, |_| None).await;
    assert_eq!((outcome, lookup), (Ok(1), Lookup::Miss));
    let (outcome, lookup) = cache
        .get_or_verify("ok", || async { panic!("not verified again") }, |_| None)
        .await;
    assert_eq!((outcome, lookup), (Ok(1), Lookup::Hit));

    let (outcome, _) = cache
        .get_or_verify("bad", || async { Err("no".to_string()) }, |_| None)
        .await;
    assert_eq!(outcome, Err("no".to_string()));
    let (outcome, lookup) = cache.get_or_verify("bad", || async { Ok(2) }, |_| None).await;
    assert_eq!((outcome, lookup), (Ok(2), Lookup::Miss), "a failure is verified again");
}

#[tokio::test]
async fn a_success_that_expires_now_is_not_kept_and_the_ttl_bounds_it() {
    let cache = cache();
    let now = Instant::now();
    let (outcome, _) = cache.get_or_verify("k", || async { Ok(1) }, |_| Some(now)).await;
    assert_eq!(outcome, Ok(1));
    assert!(cache.is_empty(), "an outcome that is already stale is not remembered");

    let short: TestCache = Cache::new(Duration::from_millis(30), 16);
    let (outcome, _) = short.get_or_verify("k", || async { Ok(1) }, |_| None).await;
    assert_eq!(outcome, Ok(1));
    assert_eq!(short.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, lookup) = short.get_or_verify("k", || async { Ok(2) }, |_| None).await;
    assert_eq!(lookup, Lookup::Miss, "expired after the TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_strand_its_followers() {
    let cache = Arc::new(cache());
    let started = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, started) = (cache.clone(), started.clone());
        tokio::spawn(async move {
            cache
                .get_or_verify(
                    "k",
                    || async move {
                        started.notify_one();
                        std::future::pending::<Result<u32, String>>().await
                    },
                    |_| None,
                )
                .await
        })
    };
    started.notified().await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_verify("k", || async { Ok(9) }, |_| None).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    let (outcome, lookup) = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower is not stranded")
        .unwrap();
    assert_eq!((outcome, lookup), (Ok(9), Lookup::Miss), "it verified itself");
}

#[tokio::test]
async fn at_most_capacity_successes_are_kept() {
    let cache: Cache<u32, u32, String> = Cache::new(Duration::from_secs(60), 4);
    for key in 0..10 {
        let (outcome, _) = cache.get_or_verify(key, || async move { Ok(key) }, |_| None).await;
        assert_eq!(outcome, Ok(key));
    }
    assert_eq!(cache.len(), 4);
}
