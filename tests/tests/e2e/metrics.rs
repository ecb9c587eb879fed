//! SPEC §7 end to end: the real pullgate, with `metrics.listen`, in front of a real containerd
//! and registry; `/metrics` counts what the pulls, reloads and trust root did, `/healthz` and
//! `/readyz` say whether it serves and whether containerd answers.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use pullgate_tests::{
    containerd::Containerd,
    process::{free_local_port, Daemon},
    pullgate::{config_yaml, http_get, metric_sample as sample, with_metrics},
    sigstore::TestSigstore,
    Pullgate, TestEnv,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use pullgate_tests::policy::OPEN_POLICY;

/// The expiry series of `spec.trustedRoot`, one of one per root.
const EXPIRY: &str = r#"pullgate_trust_material_expiry_timestamp_seconds{root="default"}"#;

/// Whether `text` has any sample of the expiry gauge, of whatever root.
fn has_expiry(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("pullgate_trust_material_expiry_timestamp_seconds"))
}

/// Scrapes until `series` has `value` (at most 10 s); the last scrape.
async fn wait_for_sample(pg: &Pullgate, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = pg.scrape().await;
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {value}:\n{text}\n{}",
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A keyless policy for `env`'s `apps/**` against the trusted root at `root`.
fn keyless_policy(env: &TestEnv, root: &Path) -> String {
    pullgate_tests::policy::keyless_policy(
        root,
        &format!("{}/apps/**", env.host()),
        "https://token.actions.githubusercontent.com",
        r"^https://github\.com/org/repo/.*$",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_are_counted_by_decision_cache_registry_and_grpc_code() {
    let env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "metrics: signed").await;
    env.push_image("unsigned/app", "v1", "metrics: unsigned").await;
    let pg = env
        .start_pullgate_with_metrics(&env.key_policy(&[&format!("{}/**", env.host())]))
        .await;
    let signed = env.image_ref("signed/app", "v1");

    pg.pull(&signed, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    let denied = pg
        .pull(&env.image_ref("unsigned/app", "v1"), Some("default"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unknown, "{denied:?}");
    pg.pull(&signed, Some("default"))
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));

    let text = pg.scrape().await;
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        value(r#"pullgate_decisions_total{decision="allow",rule="signed",mode="enforce"}"#),
        2.0
    );
    assert_eq!(
        value(r#"pullgate_decisions_total{decision="deny",rule="signed",mode="enforce"}"#),
        1.0
    );
    // The signed image and the unsigned one were verified (a failure is never remembered);
    // the repeat pull was a remembered success.
    assert_eq!(value(r#"pullgate_cache_lookups_total{result="miss"}"#), 2.0);
    assert_eq!(value(r#"pullgate_cache_lookups_total{result="hit"}"#), 1.0);
    assert_eq!(value(r#"pullgate_cache_lookups_total{result="shared"}"#), 0.0);
    // Only verifications are timed: as many as there were misses.
    assert_eq!(value("pullgate_verification_duration_seconds_count"), 2.0);
    assert_eq!(
        value(r#"pullgate_verification_duration_seconds_bucket{le="+Inf"}"#),
        2.0
    );
    assert!(value("pullgate_verification_duration_seconds_sum") > 0.0);
    assert!(
        value(r#"pullgate_registry_requests_total{outcome="ok"}"#) > 0.0,
        "{text}"
    );
    // The .sig tag of the unsigned image, at least, is not there.
    assert!(
        value(r#"pullgate_registry_requests_total{outcome="not_found"}"#) > 0.0,
        "{text}"
    );
    assert_eq!(value(r#"pullgate_registry_requests_total{outcome="unavailable"}"#), 0.0);
    assert_eq!(
        value(r#"pullgate_upstream_requests_total{method="PullImage",code="OK"}"#),
        2.0
    );
    assert_eq!(
        value(r#"pullgate_upstream_requests_total{method="PullImage",code="Unknown"}"#),
        1.0
    );
    // The rig's readiness probe went through pullgate, forwarded to containerd.
    assert!(value(r#"pullgate_upstream_requests_total{method="ImageFsInfo",code="OK"}"#) >= 1.0);
    assert!(!has_expiry(&text), "a key policy without a trustedRoot:\n{text}");

    // The audit log tells the same story.
    let records = pg.audit_records();
    let decisions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["decision"].as_str().unwrap(), r["cache"].as_str().unwrap()))
        .collect();
    assert_eq!(decisions, [("allow", "miss"), ("deny", "miss"), ("allow", "hit")]);

    // A call of a method pullgate does not know is counted as `other`, with containerd's code.
    let unknown = pullgate_tests::cri::raw_unary(pg.socket(), "/runtime.v1.ImageService/Nonsense", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented, "{unknown:?}");
    wait_for_sample(
        &pg,
        r#"pullgate_upstream_requests_total{method="other",code="Unimplemented"}"#,
        1.0,
    )
    .await;

    assert_eq!(pg.metrics_get("/healthz").await, (200, "ok\n".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.metrics_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", pg.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pg.metrics_get("/readyz").await, (200, "ok\n".to_owned()));
    assert_eq!(pg.metrics_get("/nothing-here").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_the_expiry_gauge_follows_the_trusted_root() {
    let env = TestEnv::start().await;
    let sigstore = TestSigstore::with_intermediate();
    let root = sigstore.write_trusted_root(env.dir());
    let pg = env
        .start_pullgate_with_metrics(&env.key_policy(&[&format!("{}/**", env.host())]))
        .await;
    let success = r#"pullgate_policy_reloads_total{result="success"}"#;
    let failure = r#"pullgate_policy_reloads_total{result="failure"}"#;
    let text = pg.scrape().await;
    assert_eq!(sample(&text, success), Some(0.0), "{text}");
    assert_eq!(sample(&text, failure), Some(0.0), "{text}");
    assert!(!has_expiry(&text), "{text}");

    pg.write_policy("apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nspec: [broken\n");
    pg.reload();
    let text = wait_for_sample(&pg, failure, 1.0).await;
    assert_eq!(sample(&text, success), Some(0.0), "{text}");
    assert!(!has_expiry(&text), "{text}");

    // Keyless authorities need the Fulcio CA and the CT and Rekor log keys. The log keys'
    // validFor has no end, nor has the CA's: its certificates' notAfter is when it runs out.
    pg.write_policy(&keyless_policy(&env, &root));
    pg.reload();
    let text = wait_for_sample(&pg, success, 1.0).await;
    let expected = sigstore.fulcio.not_after() as f64;
    assert_eq!(sample(&text, EXPIRY), Some(expected), "{text}");
    assert_eq!(sample(&text, failure), Some(1.0), "{text}");

    // A broken trust root is refused like a broken policy; the gauge keeps describing the root
    // still in force.
    std::fs::write(&root, "{}").unwrap();
    pg.reload();
    let text = wait_for_sample(&pg, failure, 2.0).await;
    assert_eq!(sample(&text, success), Some(1.0), "{text}");
    assert_eq!(sample(&text, EXPIRY), Some(expected), "{text}");

    // Back to a policy without a trusted root: the gauge goes away.
    pg.write_policy(&env.key_policy(&[&format!("{}/**", env.host())]));
    pg.reload();
    let text = wait_for_sample(&pg, success, 2.0).await;
    assert!(!has_expiry(&text), "{text}");
}

/// Starts `pullgate serve` with `config` (plus `metrics.listen` on a free port) and waits
/// until `/healthz` answers; retries on another port when the one picked was taken.
async fn serve_with_metrics(dir: &Path, config: &str) -> (Daemon, SocketAddr) {
    for _ in 0..4 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_local_port().unwrap()).into();
        let path = dir.join("config.yaml");
        std::fs::write(&path, with_metrics(config, addr)).unwrap();
        let mut command = Pullgate::command();
        command.arg("serve").arg("--config").arg(&path);
        let mut daemon = Daemon::spawn("pullgate", command, &dir.join("pullgate.log")).unwrap();
        let healthy = daemon
            .wait_ready("/healthz answers", Duration::from_secs(10), async || {
                http_get(addr, "/healthz").await.is_ok_and(|(s, _)| s == 200)
            })
            .await;
        match healthy {
            Ok(()) => return (daemon, addr),
            Err(e) if e.log_tail.contains("Address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port for metrics.listen after 4 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_containerd_answers() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("containerd.sock");
    std::fs::write(dir.path().join("policy.yaml"), OPEN_POLICY).unwrap();
    let config = config_yaml(
        &dir.path().join("pullgate.sock"),
        &upstream,
        &dir.path().join("policy.yaml"),
        &dir.path().join("audit.jsonl"),
        &[],
        "10s",
    );
    let (mut daemon, addr) = serve_with_metrics(dir.path(), &config).await;

    let (status, body) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(
        body.contains("containerd") && body.contains(&upstream.display().to_string()),
        "{body}"
    );
    // Metrics are served while not ready.
    let (status, text) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE pullgate_decisions_total counter"), "{text}");

    // containerd appears at the configured path: the same pullgate becomes ready.
    let containerd = Containerd::start(&[]).await;
    std::os::unix::fs::symlink(containerd.socket(), &upstream).unwrap();
    daemon
        .wait_ready("/readyz answers 200", Duration::from_secs(15), async || {
            http_get(addr, "/readyz").await.is_ok_and(|(s, _)| s == 200)
        })
        .await
        .unwrap();
    assert_eq!(daemon.stop().and_then(|s| s.code()), Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_bounds_what_a_client_can_make_it_do() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(&[]).await;
    std::fs::write(dir.path().join("policy.yaml"), OPEN_POLICY).unwrap();
    let config = config_yaml(
        &dir.path().join("pullgate.sock"),
        &containerd.socket(),
        &dir.path().join("policy.yaml"),
        &dir.path().join("audit.jsonl"),
        &[],
        "10s",
    );
    let (_daemon, addr) = serve_with_metrics(dir.path(), &config).await;

    // Only GET of the three paths; everything else is 404.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = client
        .post(format!("http://{addr}/metrics"))
        .body("x".repeat(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 404);
    assert_eq!(http_get(addr, "/").await.unwrap().0, 404);

    // A request head larger than the server reads is refused (431, or the connection closed
    // before the client finished writing), not buffered.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // A client that never finishes its request head is cut off.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was still open after 20 s");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // HTTP/1 only: the HTTP/2 preface is not a request.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains(" 200 "), "{answer:?}");

    // And it still serves.
    assert_eq!(http_get(addr, "/healthz").await.unwrap(), (200, "ok\n".to_owned()));
}

/// A `dockerConfig` that no longer parses is a refused reload like a broken policy or
/// `hosts.toml` (SPEC §3: refused, logged, counted), though the policy beside it loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_docker_config_reload_is_counted() {
    let env = TestEnv::start().await;
    let docker_config = env.dir().join("docker-config.json");
    std::fs::write(&docker_config, r#"{"auths": {}}"#).unwrap();
    let port = free_local_port().expect("a free port");
    let extra = format!("dockerConfig: {:?}\n", docker_config.display().to_string());
    let pg = env
        .start_pullgate_with_config(
            &env.key_policy(&[&format!("{}/**", env.host())]),
            &with_metrics(&extra, ([127, 0, 0, 1], port).into()),
        )
        .await;
    let failure = r#"pullgate_policy_reloads_total{result="failure"}"#;
    assert_eq!(sample(&pg.scrape().await, failure), Some(0.0));

    std::fs::write(&docker_config, "{\"auths\": [\n").unwrap();
    pg.reload();
    wait_for_sample(&pg, failure, 1.0).await;
}
