//! pullgate's overhead, measured side by side in one run against a real containerd and a real
//! registry on loopback, alternating pullgate and direct so both see the same machine state.
//! Run with `scripts/bench.sh` (a release build); results go in BENCHMARKS.md.
//!
//! (a) cold PullImage of a new signed image through pullgate, against a direct pull of an
//!     equivalent new image; (b) a warm repeat pull, and (b') one whose tag is resolved again;
//!     (c) ImageStatus; (d) 64 concurrent pulls of one new image, with the number of
//!     verifications from the metrics; (e) RSS idle and under (d); (f) time from start to the
//!     socket answering.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use pullgate_tests::{cri, process::Daemon, Pullgate, TestEnv};

const ROUNDS: usize = 40;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(ROUNDS);
    let env = TestEnv::start().await;
    let host = env.host();
    let pg = env
        .start_pullgate_with_metrics(&env.key_policy(&[&format!("{host}/bench/**")]))
        .await;
    let direct = env.containerd.client();
    let through = pg.client();
    println!("pullgate {}", Pullgate::binary().display());
    println!("rounds {rounds}; times in ms; ratio = pullgate median / direct median\n");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "measure", "pg p50", "pg p99", "dir p50", "dir p99", "ratio", "added"
    );

    // (a) Cold pulls: every round pushes two new images of the same size.
    let mut cold = Pair::default();
    for round in 0..rounds {
        env.push_signed_image("bench/signed", &format!("c{round}"), &format!("cold {round}"))
            .await;
        env.push_image("bench/plain", &format!("c{round}"), &format!("cold {round}"))
            .await;
        let (via_pg, via_direct) = round_requests(&env, round);
        cold.alternate(round, &through, via_pg, &direct, via_direct).await;
    }
    cold.print("(a) cold PullImage, signed image");
    // How much of (a) is the decision (resolve, fetch, verify, audit), from the audit records.
    let mut decided: Vec<f64> = pg
        .audit_records()
        .iter()
        .filter_map(|r| r["durationMs"].as_f64())
        .collect();
    decided.sort_by(f64::total_cmp);
    let decision_p50 = decided.get(decided.len() / 2).copied().unwrap_or_default();

    // (b) Warm: the same tags again (verified, and in containerd).
    let mut warm = Pair::default();
    for round in 0..rounds {
        let (via_pg, via_direct) = round_requests(&env, round);
        warm.alternate(round, &through, via_pg, &direct, via_direct).await;
    }
    warm.print("(b) warm repeat PullImage");

    // (b') Warm, with the tag resolved at the registry again (`resolveTTL: 0s`): what a repeat
    // pull costs once the previous resolution has expired.
    let resolving = env
        .start_pullgate_with_config(&env.key_policy(&[&format!("{host}/bench/**")]), "resolveTTL: 0s\n")
        .await;
    let through_resolving = resolving.client();
    let mut warm_resolved = Pair::default();
    for round in 0..rounds {
        let (via_pg, via_direct) = round_requests(&env, round);
        // The first pull through this pullgate verifies (a cache miss); time only the repeat.
        through_resolving
            .clone()
            .pull_image(via_pg.clone())
            .await
            .expect("PullImage");
        warm_resolved
            .alternate(round, &through_resolving, via_pg, &direct, via_direct)
            .await;
    }
    warm_resolved.print("(b') warm, tag resolved again");

    // (c) ImageStatus of a present image.
    let mut status = Pair::default();
    let present = env.image_ref("bench/signed", "c0");
    for round in 0..rounds * 10 {
        let request = cri::image_status_request(&present);
        let timed = |mut client: pullgate_proto::cri::image_service_client::ImageServiceClient<_>| {
            let request = request.clone();
            async move {
                let started = Instant::now();
                client.image_status(request).await.expect("ImageStatus");
                started.elapsed()
            }
        };
        if round % 2 == 0 {
            status.pullgate.push(timed(through.clone()).await);
            status.direct.push(timed(direct.clone()).await);
        } else {
            status.direct.push(timed(direct.clone()).await);
            status.pullgate.push(timed(through.clone()).await);
        }
    }
    status.print("(c) ImageStatus, present image");

    // (d) + (e): 64 concurrent pulls of one new image; RSS sampled meanwhile.
    let pid = pg.pid().expect("pullgate runs");
    let idle = rss_kib(pid, "VmRSS");
    let image = env.image_ref("bench/rollout", "v1");
    env.push_signed_image("bench/rollout", "v1", "rollout").await;
    let verifications_before = verifications_run(&pg).await;
    let started = Instant::now();
    let pulls: Vec<_> = (0..64)
        .map(|_| {
            let mut client = through.clone();
            let request = cri::pull_request(&image, None, Some("default"));
            tokio::spawn(async move { client.pull_image(request).await.map(|_| ()) })
        })
        .collect();
    let mut peak = idle;
    let sampler = async {
        while started.elapsed() < Duration::from_secs(30) {
            peak = peak.max(rss_kib(pid, "VmRSS"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let all = async {
        let mut failed = 0;
        for pull in pulls {
            if !matches!(pull.await, Ok(Ok(()))) {
                failed += 1;
            }
        }
        failed
    };
    let failed = tokio::select! {
        failed = all => failed,
        _ = sampler => panic!("64 pulls did not finish within 30 s"),
    };
    let burst = started.elapsed();
    let verifications = verifications_run(&pg).await - verifications_before;
    println!(
        "\n(d) 64 concurrent pulls of one new image: {:.1} ms wall, {failed} failed, {verifications} verification(s)",
        ms(burst)
    );
    println!(
        "(e) RSS idle {:.1} MiB; peak during (d) {:.1} MiB",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // (f) Start to ready: spawn, then poll the socket every millisecond until it answers.
    let mut ready = Vec::new();
    for round in 0..10 {
        ready.push(time_to_ready(&env, &env.dir().join(format!("ready-{round}"))).await);
    }
    ready.sort();
    println!("(a) of which the decision (resolve, fetch, verify, audit record): p50 {decision_p50:.3} ms");
    println!(
        "(f) start to socket answering: p50 {:.1} ms, max {:.1} ms (10 starts)",
        ms(ready[5]),
        ms(ready[9])
    );
}

/// The pulls of round `round`: its signed image through pullgate, its unsigned twin direct.
fn round_requests(
    env: &TestEnv,
    round: usize,
) -> (
    pullgate_proto::cri::PullImageRequest,
    pullgate_proto::cri::PullImageRequest,
) {
    let pull = |repo: &str| cri::pull_request(&env.image_ref(repo, &format!("c{round}")), None, Some("default"));
    (pull("bench/signed"), pull("bench/plain"))
}

/// Latencies of the same kind of call through pullgate and direct.
#[derive(Default)]
struct Pair {
    pullgate: Vec<Duration>,
    direct: Vec<Duration>,
}

impl Pair {
    /// One PullImage each way, in an order that alternates by round.
    async fn alternate(
        &mut self,
        round: usize,
        through: &pullgate_proto::cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
        via_pg: pullgate_proto::cri::PullImageRequest,
        direct: &pullgate_proto::cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
        via_direct: pullgate_proto::cri::PullImageRequest,
    ) {
        let pull =
            |mut client: pullgate_proto::cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
             request: pullgate_proto::cri::PullImageRequest| async move {
                let started = Instant::now();
                client.pull_image(request).await.expect("PullImage");
                started.elapsed()
            };
        if round % 2 == 0 {
            self.pullgate.push(pull(through.clone(), via_pg).await);
            self.direct.push(pull(direct.clone(), via_direct).await);
        } else {
            self.direct.push(pull(direct.clone(), via_direct).await);
            self.pullgate.push(pull(through.clone(), via_pg).await);
        }
    }

    fn print(&mut self, what: &str) {
        self.pullgate.sort();
        self.direct.sort();
        let (p50, p99) = (percentile(&self.pullgate, 50), percentile(&self.pullgate, 99));
        let (d50, d99) = (percentile(&self.direct, 50), percentile(&self.direct, 99));
        println!(
            "{what:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7.2}x {:>+9.3}",
            ms(p50),
            ms(p99),
            ms(d50),
            ms(d99),
            p50.as_secs_f64() / d50.as_secs_f64(),
            ms(p50) - ms(d50)
        );
    }
}

/// How many verifications pullgate has run, from its metrics: the count of the verification
/// duration histogram (cache hits and shared outcomes are not verifications).
async fn verifications_run(pg: &Pullgate) -> u64 {
    let text = pg.scrape().await;
    let count = pullgate_tests::pullgate::metric_sample(&text, "pullgate_verification_duration_seconds_count")
        .unwrap_or_else(|| panic!("no verification count in /metrics:\n{text}"));
    count as u64
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = ((sorted.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Time from spawning `pullgate serve` in `dir` until its socket answers ImageFsInfo.
async fn time_to_ready(env: &TestEnv, dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let config = env.pullgate_config(dir, "10s");
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("policy.yaml"), env.key_policy(&["127.0.0.1:1/none/*"])).unwrap();
    let socket = dir.join("pullgate.sock");
    let mut command = Pullgate::command();
    command.arg("serve").arg("--config").arg(dir.join("config.yaml"));
    let started = Instant::now();
    let _daemon = Daemon::spawn("pullgate", command, &dir.join("pullgate.log")).unwrap();
    loop {
        if socket.exists() && cri::image_fs_info(&socket).await.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pullgate did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
