//! The download hidden behind the verification: while pullgate checks an image's signatures it
//! fetches the image's content into containerd's content store under a lease. An admitted pull
//! then finds it there (containerd asks the registry for no manifest or blob); a refused one
//! leaves nothing behind once containerd has collected the lease's content.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pullgate_tests::{
    containerd::Containerd,
    image::TinyImage,
    policy, pullgate,
    registry::Registry,
    slow_lookups::{Behaviour, CutBlobs, SlowLookups},
    Pullgate, Signer, TestEnv, TEST_AUTHORITY,
};

/// A layer well beyond anything pullgate holds in memory, and beyond what it can fetch before
/// an unsigned image's denial.
const LARGE_LAYER: usize = 64 * 1024 * 1024;

/// Runs `ctr` against `containerd` in the CRI plugin's namespace.
fn ctr(containerd: &Containerd, args: &[&str]) -> String {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr");
    assert!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The leases pullgate's prefetches hold.
fn prefetch_leases(containerd: &Containerd) -> Vec<String> {
    ctr(containerd, &["leases", "ls"])
        .lines()
        .filter(|l| l.starts_with("pullgate-prefetch-"))
        .map(str::to_owned)
        .collect()
}

/// Which of `digests` containerd's content store holds, and the ingests it has open (as `ctr`
/// lists them, and as files in its content store's ingest directory).
fn left_in_containerd(containerd: &Containerd, digests: &[String]) -> (Vec<String>, Vec<String>) {
    let content = ctr(containerd, &["content", "ls"]);
    // By the first column: a manifest's labels name its children too.
    let listed: Vec<&str> = content.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let held = digests
        .iter()
        .filter(|d| listed.contains(&d.as_str()))
        .cloned()
        .collect();
    let mut ingests: Vec<String> = ctr(containerd, &["content", "active"])
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let ingest_dir = containerd.dir().join("root/io.containerd.content.v1.content/ingest");
    if let Ok(entries) = std::fs::read_dir(&ingest_dir) {
        // With the files each holds: what containerd left of the ingest.
        ingests.extend(entries.flatten().map(|e| {
            let files: Vec<String> = std::fs::read_dir(e.path())
                .map(|d| {
                    d.flatten()
                        .map(|f| f.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let reference = std::fs::read_to_string(e.path().join("ref")).unwrap_or_default();
            let data = std::fs::metadata(e.path().join("data")).map_or(0, |m| m.len());
            format!("{} {files:?} ref {reference} data {data}", e.path().display())
        }));
    }
    (held, ingests)
}

/// Waits until no prefetch lease is left, then says what of `digests` containerd still has.
async fn after_the_lease(containerd: &Containerd, digests: &[String]) -> (Vec<String>, Vec<String>) {
    wait_until("the prefetch lease deleted", Duration::from_secs(5), || {
        prefetch_leases(containerd).is_empty()
    })
    .await;
    left_in_containerd(containerd, digests)
}

/// Waits until containerd has collected every one of `digests` and every ingest, once the
/// prefetch's lease is gone (containerd 2 may list the lease gone before its collection ends).
pub(super) async fn collected(containerd: &Containerd, digests: &[String]) -> (Vec<String>, Vec<String>) {
    let started = Instant::now();
    loop {
        let left = after_the_lease(containerd, digests).await;
        if (left.0.is_empty() && left.1.is_empty()) || started.elapsed() > Duration::from_secs(5) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The size the registry logged for each `GET /v2/<repo>/<what>` whose user agent starts with
/// `agent` (`containerd/`, `pullgate/`).
fn gets(env: &TestEnv, repo: &str, what: &str, agent: &str) -> Vec<u64> {
    let request = format!("\"GET /v2/{repo}/{what} HTTP/1.1\" ");
    env.registry
        .log()
        .lines()
        .filter(|line| line.rsplit_once(" \"").is_some_and(|(_, ua)| ua.starts_with(agent)))
        .filter_map(|line| {
            let after = &line[line.find(&request)? + request.len()..];
            after.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

/// Pushes an image whose one layer holds `size` random bytes as `repo:tag`.
async fn push_large(env: &TestEnv, repo: &str, tag: &str, size: usize) -> TinyImage {
    let image = TinyImage::build_bytes(&pullgate_tests::image::random_bytes(size));
    image.push(&env.host(), repo, tag, env.auth()).await.expect("push");
    image
}

fn digests(image: &TinyImage) -> Vec<String> {
    use pullgate_tests::distribution::sha256_digest;
    vec![
        image.digest(),
        sha256_digest(&image.config),
        sha256_digest(&image.layer),
    ]
}

/// pullgate's peak resident memory so far, in bytes.
fn peak_rss(pg: &Pullgate) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pg.pid().expect("running"))).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

async fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what} not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An admitted image was fetched by pullgate while it was verified: containerd's pinned pull
/// asks the registry for no manifest and no blob, the image is pulled and unpacked as before,
/// the lease is gone afterwards and the image record alone holds the content. A 64 MiB layer
/// goes through pullgate without its memory growing by anything like it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_pull_finds_its_content_in_containerd() {
    let env = TestEnv::start().await;
    let repo = "prefetch/app";
    let image = push_large(&env, repo, "v1", LARGE_LAYER).await;
    let all = digests(&image);
    let [manifest, config, layer] = [&all[0], &all[1], &all[2]];
    env.signer
        .sign_image(&env.host(), repo, manifest, env.auth())
        .await
        .expect("sign");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/prefetch/*", env.host())]))
        .await;
    let before = peak_rss(&pg);

    let tag = env.image_ref(repo, "v1");
    let image_id = pg
        .pull(&tag, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));

    assert_eq!(env.containerd.image_id(&tag).await.as_deref(), Some(image_id.as_str()));
    for what in [
        format!("manifests/{manifest}"),
        format!("blobs/{config}"),
        format!("blobs/{layer}"),
    ] {
        assert_eq!(
            gets(&env, repo, &what, "containerd/"),
            Vec::<u64>::new(),
            "containerd fetched {what}\n{}",
            env.registry.log()
        );
        assert_eq!(
            gets(&env, repo, &what, "pullgate/").len(),
            1,
            "pullgate fetched {what} once"
        );
    }
    // The manifest carries the labels containerd's own fetch gives it.
    let content = ctr(&env.containerd, &["content", "ls"]);
    let manifest_line = content
        .lines()
        .find(|l| l.starts_with(manifest.as_str()))
        .expect("manifest in the content store");
    assert!(
        manifest_line.contains(&format!("containerd.io/gc.ref.content.config={config}")),
        "{manifest_line}"
    );
    assert!(
        manifest_line.contains(&format!("containerd.io/gc.ref.content.l.0={layer}")),
        "{manifest_line}"
    );
    // Only the image record holds the content now, and it keeps all of it.
    let (held, ingests) = after_the_lease(&env.containerd, &all).await;
    assert_eq!((held.len(), ingests), (3, Vec::new()), "{content}");

    let grown = peak_rss(&pg).saturating_sub(before);
    eprintln!("pullgate's peak RSS: {before} bytes before the pull, grown by {grown} for a {LARGE_LAYER}-byte layer");
    assert!(
        grown < LARGE_LAYER as u64 / 4,
        "peak RSS grew by {grown} bytes for a {LARGE_LAYER}-byte layer"
    );
}

/// A registry, the proxy in front of it, a containerd and a pullgate that pull through the
/// proxy, and a signer whose key the policy requires for `<proxy>/prefetch/*`.
struct Behind {
    registry: Registry,
    proxy: SlowLookups,
    containerd: Containerd,
    signer: Signer,
    pg: Pullgate,
    _dir: tempfile::TempDir,
}

impl Behind {
    async fn start(behaviour: Behaviour) -> Behind {
        Behind::start_with(behaviour, "10s").await
    }

    /// As [`Behind::start`], with pullgate's `verifyTimeout` set to `verify_timeout`.
    async fn start_with(behaviour: Behaviour, verify_timeout: &str) -> Behind {
        let registry = Registry::start().await;
        let proxy = SlowLookups::start(&registry.host(), behaviour).await;
        let containerd = Containerd::start(&[proxy.host()]).await;
        let signer = Signer::generate();
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = pullgate::config_yaml(
            &dir.path().join("pullgate.sock"),
            &containerd.socket(),
            &dir.path().join("policy.yaml"),
            &dir.path().join("audit.jsonl"),
            &[proxy.host()],
            verify_timeout,
        );
        let policy = policy::key_policy(
            TEST_AUTHORITY,
            &signer.public_key_pem(),
            &[&format!("{}/prefetch/*", proxy.host())],
        );
        let pg = Pullgate::start(dir.path(), &config, &policy).await;
        Behind {
            registry,
            proxy,
            containerd,
            signer,
            pg,
            _dir: dir,
        }
    }

    /// Pushes an image with a `size`-byte layer as `prefetch/<name>:v1`, signed when `signed`;
    /// its reference through the proxy and its digests (manifest, config, layer).
    async fn push(&self, name: &str, size: usize, signed: bool) -> (String, Vec<String>) {
        let repo = format!("prefetch/{name}");
        let image = TinyImage::build_bytes(&pullgate_tests::image::random_bytes(size));
        image
            .push(&self.registry.host(), &repo, "v1", None)
            .await
            .expect("push");
        if signed {
            let host = self.proxy.host();
            self.signer
                .sign_image_into(&host, &repo, &image.digest(), &self.registry.host(), &repo, None)
                .await
                .expect("sign");
        }
        (format!("{}/{repo}:v1", self.proxy.host()), digests(&image))
    }

    /// Body bytes of blob `digest` the proxy sent to clients whose user agent starts with
    /// `agent`.
    fn served(&self, digest: &str, agent: &str) -> u64 {
        let path = format!("/blobs/{digest}");
        self.proxy
            .served()
            .iter()
            .filter(|s| s.request.starts_with("GET ") && s.request.ends_with(&path) && s.agent.starts_with(agent))
            .map(|s| s.bytes)
            .sum()
    }
}

/// An unsigned image with a 64 MiB layer, from a registry that sends it at 16 MiB/s and answers
/// signature lookups after 500 ms, is denied while its layer is on its way: the download stops
/// (far less than the layer leaves the registry), the lease is deleted within a bound, and once
/// containerd has collected it nothing of the image is left: no blob, no ingest, no image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_image_stops_downloading_and_leaves_nothing() {
    let behind = Behind::start(Behaviour {
        lookup_delay: Duration::from_millis(500),
        blob_rate: Some(16 * 1024 * 1024),
        cut_blobs: None,
    })
    .await;
    let (image, digests) = behind.push("unsigned", LARGE_LAYER, false).await;
    let layer = &digests[2];

    let denied = behind
        .pg
        .pull(&image, Some("default"))
        .await
        .expect_err("unsigned image denied");
    assert!(denied.message().contains("no signature"), "{}", denied.message());
    let at_denial = behind.served(layer, "pullgate/");
    assert!(
        at_denial > 0,
        "the layer was on its way when the verdict came\n{}",
        behind.pg.log()
    );

    let (held, ingests) = collected(&behind.containerd, &digests).await;
    assert_eq!(held, Vec::<String>::new(), "left in containerd after the denial");
    assert_eq!(ingests, Vec::<String>::new(), "ingests left in containerd");
    assert_eq!(behind.containerd.image_id(&image).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = behind.served(layer, "pullgate/");
    eprintln!("layer bytes sent to pullgate: {at_denial} at the denial, {served} in all, of {LARGE_LAYER}");
    assert!(
        served < LARGE_LAYER as u64 / 2,
        "{served} of {LARGE_LAYER} bytes served"
    );
}

/// A prefetch cut off mid-layer by the registry changes nothing but the time: the signed image
/// is admitted and containerd fetches the layer itself; the unsigned one is denied; and neither
/// leaves a lease, an ingest or (for the denied one) content behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_failing_mid_layer_changes_no_decision_and_leaves_nothing() {
    let behind = Behind::start(Behaviour {
        lookup_delay: Duration::from_millis(200),
        blob_rate: None,
        cut_blobs: Some(CutBlobs {
            agent: "pullgate/".into(),
            after: 1024 * 1024,
        }),
    })
    .await;
    let (signed, signed_digests) = behind.push("signed", 4 * 1024 * 1024, true).await;
    let (unsigned, unsigned_digests) = behind.push("unsigned", 4 * 1024 * 1024, false).await;

    let image_id = behind
        .pg
        .pull(&signed, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), behind.pg.log()));
    assert_eq!(
        behind.containerd.image_id(&signed).await.as_deref(),
        Some(image_id.as_str())
    );
    assert!(
        behind.served(&signed_digests[2], "pullgate/") > 0,
        "the prefetch began the layer"
    );
    assert!(
        behind.served(&signed_digests[2], "containerd/") > 0,
        "containerd fetched the layer the prefetch could not"
    );
    let (held, ingests) = after_the_lease(&behind.containerd, &signed_digests).await;
    assert_eq!((held.len(), ingests), (3, Vec::new()));

    let denied = behind
        .pg
        .pull(&unsigned, Some("default"))
        .await
        .expect_err("unsigned image denied");
    assert!(denied.message().contains("no signature"), "{}", denied.message());
    let (held, ingests) = collected(&behind.containerd, &unsigned_digests).await;
    assert_eq!(
        (held, ingests),
        (Vec::new(), Vec::new()),
        "left in containerd after the denial"
    );
}

/// Bytes of blob `digest` sent to pullgate once they stop growing (a connection being closed
/// may still take what the proxy had in hand).
async fn settled(behind: &Behind, digest: &str) -> u64 {
    let mut last = behind.served(digest, "pullgate/");
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = behind.served(digest, "pullgate/");
        if now == last {
            return now;
        }
        last = now;
    }
}

/// kubelet gives up an admitted pull while pullgate waits for the image's download (its layer
/// sent at 16 MiB/s): the download stops with the pull, the lease is deleted and what it held
/// collected; nothing keeps coming from the registry afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_given_up_while_its_content_downloads_stops_the_download() {
    let behind = Behind::start(Behaviour {
        lookup_delay: Duration::from_millis(200),
        blob_rate: Some(16 * 1024 * 1024),
        cut_blobs: None,
    })
    .await;
    let (image, digests) = behind.push("given-up", LARGE_LAYER, true).await;
    let layer = &digests[2];

    let pulling = behind.pg.pull(&image, Some("default"));
    let given_up = tokio::time::timeout(Duration::from_millis(1500), pulling).await;
    assert!(given_up.is_err(), "the 64 MiB layer cannot arrive within 1.5 s");
    assert!(behind.served(layer, "pullgate/") > 0, "the layer was on its way");

    let (held, ingests) = collected(&behind.containerd, &digests).await;
    let stopped_at = settled(&behind, layer).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let served = behind.served(layer, "pullgate/");
    eprintln!("layer bytes sent to pullgate: {stopped_at} once stopped, {served} a second later, of {LARGE_LAYER}");
    assert_eq!(served, stopped_at, "the download went on after the pull was given up");
    assert!(served < LARGE_LAYER as u64, "{served} of {LARGE_LAYER} bytes served");
    assert_eq!((held, ingests), (Vec::new(), Vec::new()), "left in containerd");
    assert_eq!(behind.containerd.image_id(&image).await, None);
}

/// Four pulls of one unsigned image at once share its verification and its one download: all
/// are denied, the download stops, and nothing of the image is left in containerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_a_denied_image_leave_nothing() {
    let behind = Behind::start(Behaviour {
        lookup_delay: Duration::from_millis(500),
        blob_rate: Some(16 * 1024 * 1024),
        cut_blobs: None,
    })
    .await;
    let (image, digests) = behind.push("unsigned-shared", LARGE_LAYER, false).await;
    let layer = &digests[2];

    let pull = || behind.pg.pull(&image, Some("default"));
    let (a, b, c, d) = tokio::join!(pull(), pull(), pull(), pull());
    for denied in [a, b, c, d] {
        let denied = denied.expect_err("unsigned image denied");
        assert!(denied.message().contains("no signature"), "{}", denied.message());
    }
    let (held, ingests) = collected(&behind.containerd, &digests).await;
    assert_eq!((held, ingests), (Vec::new(), Vec::new()), "left in containerd");
    assert_eq!(behind.containerd.image_id(&image).await, None);
    let served = settled(&behind, layer).await;
    assert!(
        served < LARGE_LAYER as u64 / 2,
        "{served} of {LARGE_LAYER} bytes served"
    );
}

/// Unsigned images denied as fast as their prefetch starts (no delay on signature lookups: the
/// verdict comes while the lease is created, the manifest fetched or written): each time no
/// lease, no ingest and no content is left.
///
/// A denial that came while an ingest was being opened used to cut containerd's call off and
/// leave that ingest's directory (`ref`, empty `data`...) behind, unknown to containerd's
/// metadata and untouched by the lease's collection (3 runs in 4 failed). The download now
/// stops at its next registry read, never inside a containerd call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_racing_the_prefetchs_start_leave_nothing() {
    let behind = Behind::start(Behaviour::default()).await;
    for n in 0..8 {
        let (image, digests) = behind.push(&format!("quick-{n}"), 256 * 1024, false).await;
        let denied = behind
            .pg
            .pull(&image, Some("default"))
            .await
            .expect_err("unsigned image denied");
        assert!(denied.message().contains("no signature"), "{}", denied.message());
        let (held, ingests) = collected(&behind.containerd, &digests).await;
        assert_eq!(
            (held, ingests),
            (Vec::new(), Vec::new()),
            "left in containerd after denial {n}\n{}",
            behind.pg.log()
        );
    }
}

/// Seconds since the epoch of an RFC 3339 time, as GNU `date` reads it.
fn epoch_seconds(time: &str) -> i64 {
    let output = Command::new("date")
        .args(["-u", "-d", time, "+%s"])
        .output()
        .expect("run date");
    assert!(output.status.success(), "date cannot read {time:?}");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("seconds")
}

/// pullgate killed while it prefetches a denied-to-be image: the lease it leaves carries a
/// `containerd.io/gc.expire` containerd can read, no more than half an hour ahead, so that
/// containerd's collector drops it and its content by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_killed_pullgate_expires_by_itself() {
    let mut behind = Behind::start(Behaviour {
        lookup_delay: Duration::from_secs(3),
        blob_rate: Some(16 * 1024 * 1024),
        cut_blobs: None,
    })
    .await;
    let (image, digests) = behind.push("killed", LARGE_LAYER, false).await;
    let pulling = behind.pg.pull(&image, Some("default"));
    let killed = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let pid = behind.pg.pid().expect("running");
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    };
    let (pulled, ()) = tokio::join!(pulling, killed);
    assert!(pulled.is_err(), "pullgate died mid-pull");
    assert!(behind.served(&digests[2], "pullgate/") > 0, "the layer was on its way");
    let _ = behind.pg.stop();

    let leases = prefetch_leases(&behind.containerd);
    assert_eq!(leases.len(), 1, "{leases:?}");
    let expires = leases[0]
        .split([' ', '\t', ','])
        .find_map(|field| field.strip_prefix("containerd.io/gc.expire="))
        .unwrap_or_else(|| panic!("no gc.expire label: {}", leases[0]));
    let now = epoch_seconds("now");
    let at = epoch_seconds(expires);
    assert!(at > now && at <= now + 31 * 60, "expires at {expires}, now {now}");
}

/// A signed image whose signature lookups outlast `verifyTimeout` is refused while its 64 MiB
/// layer is on its way: the download stops with the verification cut off, and nothing of the
/// image is left in containerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_timing_out_stops_the_download_and_leaves_nothing() {
    let behind = Behind::start_with(
        Behaviour {
            lookup_delay: Duration::from_secs(3),
            blob_rate: Some(16 * 1024 * 1024),
            cut_blobs: None,
        },
        "1s",
    )
    .await;
    let (image, digests) = behind.push("slow-signatures", LARGE_LAYER, true).await;
    let layer = &digests[2];

    let denied = behind
        .pg
        .pull(&image, Some("default"))
        .await
        .expect_err("a verification cut off is a refusal");
    // Cut off by verifyTimeout, or (on a loaded machine, the same bound a moment earlier) by
    // the registry request's own bound, which is verifyTimeout too.
    let message = denied.message();
    assert!(
        message.contains("did not finish within verifyTimeout") || message.contains("operation timed out"),
        "{message}"
    );
    assert!(behind.served(layer, "pullgate/") > 0, "the layer was on its way");
    let (held, ingests) = collected(&behind.containerd, &digests).await;
    assert_eq!((held, ingests), (Vec::new(), Vec::new()), "left in containerd");
    assert_eq!(behind.containerd.image_id(&image).await, None);
    let served = settled(&behind, layer).await;
    assert!(
        served < LARGE_LAYER as u64 / 2,
        "{served} of {LARGE_LAYER} bytes served"
    );
}

/// Pushes an index of two images, one for this node's architecture and one for another, as
/// `repo:v1`; returns the index's digest and the two images (this node's first).
async fn push_index(env: &TestEnv, repo: &str) -> (String, TinyImage, TinyImage) {
    let here = TinyImage::build_bytes(&pullgate_tests::image::random_bytes(1024 * 1024));
    let there = TinyImage::build_bytes(&pullgate_tests::image::random_bytes(1024 * 1024));
    let digest = pullgate_tests::image::push_index_for_this_node(&env.host(), repo, &here, &there, env.auth())
        .await
        .expect("push the images and their index");
    (digest, here, there)
}

/// A signed multi-platform index: pullgate prefetches the index and the manifest containerd
/// picks for this node, with its config and layer; containerd's pull of the verified index
/// asks the registry for none of them, and no one fetches the other platform's image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_index_finds_the_manifest_containerd_picks_in_containerd() {
    use pullgate_tests::distribution::sha256_digest;
    let env = TestEnv::start().await;
    let repo = "prefetch/multi";
    let (index, here, there) = push_index(&env, repo).await;
    env.signer
        .sign_image(&env.host(), repo, &index, env.auth())
        .await
        .expect("sign");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/prefetch/*", env.host())]))
        .await;

    let tag = env.image_ref(repo, "v1");
    pg.pull(&tag, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));

    for what in [
        format!("manifests/{index}"),
        format!("manifests/{}", here.digest()),
        format!("blobs/{}", sha256_digest(&here.config)),
        format!("blobs/{}", sha256_digest(&here.layer)),
    ] {
        assert_eq!(
            gets(&env, repo, &what, "containerd/"),
            Vec::<u64>::new(),
            "containerd fetched {what}\n{}",
            env.registry.log()
        );
        assert_eq!(
            gets(&env, repo, &what, "pullgate/").len(),
            1,
            "pullgate fetched {what} once"
        );
    }
    for what in [
        format!("manifests/{}", there.digest()),
        format!("blobs/{}", sha256_digest(&there.layer)),
    ] {
        assert_eq!(gets(&env, repo, &what, "").len(), 0, "{what} fetched");
    }
    let (held, ingests) = after_the_lease(&env.containerd, &[index.clone(), here.digest()]).await;
    assert_eq!((held.len(), ingests), (2, Vec::new()));
}

/// An unsigned multi-platform index is denied, and nothing pullgate fetched of it (the index,
/// the manifest for this node, its config and layer) is left once containerd has collected it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_index_leaves_nothing() {
    use pullgate_tests::distribution::sha256_digest;
    let env = TestEnv::start().await;
    let repo = "prefetch/multi-unsigned";
    let (index, here, _there) = push_index(&env, repo).await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/prefetch/*", env.host())]))
        .await;

    let denied = pg
        .pull(&env.image_ref(repo, "v1"), Some("default"))
        .await
        .expect_err("unsigned index denied");
    assert!(denied.message().contains("no signature"), "{}", denied.message());
    let all = [
        index,
        here.digest(),
        sha256_digest(&here.config),
        sha256_digest(&here.layer),
    ];
    let (held, ingests) = collected(&env.containerd, &all).await;
    assert_eq!((held, ingests), (Vec::new(), Vec::new()), "left in containerd");
}

/// The writer the prefetch streams into holds a blob to the size and digest its descriptor
/// names, whatever the registry sends: a body longer than the size (a `Content-Length` that
/// lies, a body that never ends) is refused at the first byte too many, and one of the right
/// size but other bytes is refused by containerd's commit. Neither leaves the blob behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_writer_holds_a_blob_to_its_descriptor() {
    use ::pullgate::containerd::content::{ContentStore, Ingest, LeaseId, Opened, WriteError};
    let containerd = Containerd::start(&[]).await;
    let channel = ::pullgate::cri::Upstream::connect_lazy(&containerd.socket()).own_channel();
    let store = ContentStore::new(channel, "k8s.io").expect("a namespace");
    let lease = LeaseId::for_digest("feed", 1);
    store
        .create_lease(&lease, Duration::from_secs(60))
        .await
        .expect("a lease");
    let blob = pullgate_tests::image::random_bytes(1024);
    let digest = pullgate_tests::distribution::sha256_digest(&blob);
    let ingest = |reference: &str| Ingest {
        reference: reference.to_string(),
        digest: digest.clone(),
        size: blob.len() as u64,
        labels: Default::default(),
    };

    let Opened::Writer(mut writer) = store.open(&lease, ingest("layer-too-long")).await.expect("opened") else {
        panic!("a new blob is written");
    };
    writer.write(blob.clone().into()).await.expect("the blob itself");
    let too_long = writer.write(vec![0u8].into()).await;
    assert!(matches!(too_long, Err(WriteError::TooLong(1024))), "{too_long:?}");
    drop(writer);
    abort_when_closed(&store, "layer-too-long").await;

    let Opened::Writer(mut writer) = store.open(&lease, ingest("layer-other-bytes")).await.expect("opened") else {
        panic!("a new blob is written");
    };
    writer.write(vec![7u8; blob.len()].into()).await.expect("as many bytes");
    let committed = writer.commit().await;
    assert!(matches!(committed, Err(WriteError::Containerd(_))), "{committed:?}");
    abort_when_closed(&store, "layer-other-bytes").await;

    store.delete_lease(&lease, true).await.expect("lease deleted");
    let (held, ingests) = left_in_containerd(&containerd, std::slice::from_ref(&digest));
    assert_eq!((held, ingests), (Vec::new(), Vec::new()));
}

/// Aborts ingest `reference`, again while containerd is still closing the writer the client
/// dropped (its abort then fails: "directory not empty").
async fn abort_when_closed(store: &::pullgate::containerd::content::ContentStore, reference: &str) {
    let started = Instant::now();
    while let Err(status) = store.abort(reference).await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{reference} not aborted: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
