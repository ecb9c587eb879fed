//! pullgate's overhead, measured side by side in one run against a real containerd and a real
//! registry on loopback, rotating pullgate and direct so both see the same machine state.
//! Run with `scripts/bench.sh` (a release build); results go in BENCHMARKS.md.
//!
//! (a) cold PullImage of a new signed image through pullgate, against a direct pull of an
//!     equivalent new image; (b) a warm repeat pull, and (b') one whose tag is resolved again;
//!     (c) ImageStatus; (d) 64 concurrent pulls of one new image, with the number of
//!     verifications from the metrics; (e) RSS idle and under (d); (f) time from start to the
//!     socket answering.
//!
//! With `--rtt <ms>ms`, containerd and pullgate reach the registry through latency proxies of
//! their own that add that round trip ([`pullgate_tests::latency_proxy`]): a registry in another
//! zone. The proxies also count the registry requests of each cold pull, by kind, for each
//! route. (a') then adds cold pulls by digest, as kubelet makes for `image: repo@sha256:…`.
//!
//! With `PULLGATE_BASELINE_BIN` set (`scripts/bench.sh --baseline <rev>`), a second pullgate
//! from that binary, with the same configuration and policy, stands in front of the same
//! containerd, and every round measures current, baseline and direct in an order that rotates
//! by round: two versions compared on the same machine state, as the restructure of issue 14
//! needed.

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pullgate_proto::cri::{image_service_client::ImageServiceClient, PullImageRequest};
use pullgate_tests::{
    cri,
    latency_proxy::Counts,
    process::{free_local_port, Daemon},
    pullgate, Pullgate, TestEnv,
};
use tonic::transport::Channel;

const ROUNDS: usize = 40;

type Client = ImageServiceClient<Channel>;

/// One way to containerd: the pullgate under test, the baseline pullgate, or containerd itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Current,
    Baseline,
    Direct,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let rounds = args.rounds;
    let current_bin = Pullgate::binary();
    let baseline_bin = std::env::var_os("PULLGATE_BASELINE_BIN").map(PathBuf::from);
    if let Some(binary) = &baseline_bin {
        assert!(
            binary.is_file(),
            "PULLGATE_BASELINE_BIN={} is not a file",
            binary.display()
        );
    }
    let routes: &[Route] = match baseline_bin {
        Some(_) => &[Route::Current, Route::Baseline, Route::Direct],
        None => &[Route::Current, Route::Direct],
    };

    println!("load average at start: {}", load_average());
    let env = match args.rtt {
        Some(rtt) => TestEnv::start_behind_proxy(rtt).await,
        None => TestEnv::start().await,
    };
    let host = env.host();
    let policy = env.key_policy(&[&format!("{host}/bench/**")]);
    let pg = start_pullgate(&env, &current_bin, "current", &policy, "").await;
    let base = match &baseline_bin {
        // `PULLGATE_BASELINE_CONFIG`: YAML lines only the baseline gets (`prefetch: false`
        // compares a build with itself, one feature off).
        Some(binary) => {
            let extra = std::env::var("PULLGATE_BASELINE_CONFIG").map_or_else(|_| String::new(), |c| format!("{c}\n"));
            Some(start_pullgate(&env, binary, "baseline", &policy, &extra).await)
        }
        None => None,
    };
    let clients = Clients {
        current: pg.client(),
        baseline: base.as_ref().map(Pullgate::client),
        direct: env.containerd.client(),
    };
    println!("pullgate {}", current_bin.display());
    match args.rtt {
        Some(rtt) => println!("registry behind a latency proxy: {} ms round trip", ms(rtt)),
        None => println!("registry on loopback, no proxy"),
    }
    match &baseline_bin {
        None => {
            println!("rounds {rounds}; times in ms; ratio = pullgate median / direct median\n");
            println!(
                "{:<34} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
                "measure", "pg p50", "pg p99", "dir p50", "dir p99", "ratio", "added"
            );
        }
        Some(binary) => {
            println!("baseline {}", binary.display());
            println!(
                "rounds {rounds}; times in ms; the order of current, baseline and direct rotates by round;\n\
                 cur/base = current median / baseline median; added = median - direct median\n"
            );
            println!(
                "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "measure",
                "cur p50",
                "cur p99",
                "base p50",
                "base p99",
                "dir p50",
                "dir p99",
                "cur/base",
                "cur add",
                "base add"
            );
        }
    }

    // (a) Cold pulls: every round pushes a new image of the same size for each route, each with
    // its own content, so no pull finds another's layer already in containerd.
    let mut cold = Samples::default();
    let cold_requests = Requests::default();
    for round in 0..rounds {
        env.push_signed_image("bench/signed", &format!("c{round}"), &format!("cold {round} c"))
            .await;
        if base.is_some() {
            env.push_signed_image("bench/signed", &format!("b{round}"), &format!("cold {round} b"))
                .await;
        }
        env.push_image("bench/plain", &format!("c{round}"), &format!("cold {round} d"))
            .await;
        cold.rotate(routes, round, |route| {
            counted_pull(
                &env,
                &cold_requests,
                route,
                clients.get(route),
                pull_request(&env, route, round),
            )
        })
        .await;
    }
    cold.print("(a) cold PullImage, signed image");
    // (a') Behind the proxy: cold pulls by digest, as kubelet makes for a digest-pinned image.
    let mut pinned = Samples::default();
    let pinned_requests = Requests::default();
    if env.proxied.is_some() {
        for round in 0..rounds {
            let mut digests = Vec::new();
            for &route in routes {
                let (repo, tag) = pinned_image(route, round);
                let content = format!("pinned {round} {tag}");
                let digest = match route {
                    Route::Direct => env.push_image(repo, &tag, &content).await,
                    _ => env.push_signed_image(repo, &tag, &content).await,
                };
                digests.push((route, env.image_ref(repo, &digest)));
            }
            pinned
                .rotate(routes, round, |route| {
                    let image = &digests.iter().find(|(r, _)| *r == route).expect("pushed").1;
                    let request = cri::pull_request(image, None, Some("default"));
                    counted_pull(&env, &pinned_requests, route, clients.get(route), request)
                })
                .await;
        }
        pinned.print("(a') cold PullImage by digest");
    }
    // How much of (a) is the decision (resolve, fetch, verify, audit), from the audit records.
    let decision_p50 = decision_median(&pg);
    let base_decision_p50 = base.as_ref().map(decision_median);

    // (b) Warm: the same tags again (verified, and in containerd).
    let mut warm = Samples::default();
    let warm_requests = Requests::default();
    for round in 0..rounds {
        warm.rotate(routes, round, |route| {
            counted_pull(
                &env,
                &warm_requests,
                route,
                clients.get(route),
                pull_request(&env, route, round),
            )
        })
        .await;
    }
    warm.print("(b) warm repeat PullImage");

    // (b') Warm, with the tag resolved at the registry again (`resolveTTL: 0s`): what a repeat
    // pull costs once the previous resolution has expired.
    let resolving = start_pullgate(&env, &current_bin, "current-resolving", &policy, "resolveTTL: 0s\n").await;
    let base_resolving = match &baseline_bin {
        Some(binary) => Some(start_pullgate(&env, binary, "baseline-resolving", &policy, "resolveTTL: 0s\n").await),
        None => None,
    };
    let resolving_clients = Clients {
        current: resolving.client(),
        baseline: base_resolving.as_ref().map(Pullgate::client),
        direct: env.containerd.client(),
    };
    let mut warm_resolved = Samples::default();
    for round in 0..rounds {
        // The first pull through each of these pullgates verifies (a cache miss); time only the
        // repeat.
        for &route in routes.iter().filter(|&&route| route != Route::Direct) {
            resolving_clients
                .get(route)
                .pull_image(pull_request(&env, route, round))
                .await
                .expect("PullImage");
        }
        warm_resolved
            .rotate(routes, round, |route| {
                timed_pull(resolving_clients.get(route), pull_request(&env, route, round))
            })
            .await;
    }
    warm_resolved.print("(b') warm, tag resolved again");

    // (c) ImageStatus of a present image (one the pullgate asked has admitted itself).
    let mut status = Samples::default();
    for round in 0..rounds * 10 {
        status
            .rotate(routes, round, |route| {
                let mut client = clients.get(route);
                let request = cri::image_status_request(&env.image_ref("bench/signed", first_tag(route)));
                async move {
                    let started = Instant::now();
                    client.image_status(request).await.expect("ImageStatus");
                    started.elapsed()
                }
            })
            .await;
    }
    status.print("(c) ImageStatus, present image");

    // (d) + (e): 64 concurrent pulls of one new image; RSS sampled meanwhile.
    let burst = Burst::run(&env, &pg, "v1", "rollout").await;
    let base_burst = match &base {
        Some(base) => Some(Burst::run(&env, base, "v1-baseline", "rollout baseline").await),
        None => None,
    };

    // (f) Start to ready: spawn, then poll the socket every millisecond until it answers; with a
    // baseline, the two binaries take turns.
    let mut ready = Vec::new();
    let mut base_ready = Vec::new();
    for round in 0..10 {
        let dir = env.dir().join(format!("ready-{round}"));
        ready.push(time_to_ready(&env, &current_bin, &dir).await);
        if let Some(binary) = &baseline_bin {
            let dir = env.dir().join(format!("ready-baseline-{round}"));
            base_ready.push(time_to_ready(&env, binary, &dir).await);
        }
    }

    if env.proxied.is_some() {
        println!();
        cold_requests.print("(a) cold pull by tag", routes, rounds);
        pinned_requests.print("(a') cold pull by digest", routes, rounds);
        warm_requests.print("(b) warm repeat pull", routes, rounds);
    }

    match (base_burst, base_decision_p50) {
        (Some(base_burst), Some(base_decision_p50)) => {
            println!();
            burst.print("current");
            base_burst.print("baseline");
            println!("(a) of which the decision (resolve, fetch, verify, audit record): p50 current {decision_p50:.3} ms, baseline {base_decision_p50:.3} ms");
            print_ready("current", &mut ready);
            print_ready("baseline", &mut base_ready);
        }
        _ => {
            println!(
                "\n(d) 64 concurrent pulls of one new image: {:.1} ms wall, {} failed, {} verification(s)",
                ms(burst.wall),
                burst.failed,
                burst.verifications
            );
            println!(
                "(e) RSS idle {:.1} MiB; peak during (d) {:.1} MiB",
                mib(burst.idle_kib),
                mib(burst.peak_kib)
            );
            println!("(a) of which the decision (resolve, fetch, verify, audit record): p50 {decision_p50:.3} ms");
            ready.sort();
            println!(
                "(f) start to socket answering: p50 {:.1} ms, max {:.1} ms (10 starts)",
                ms(ready[5]),
                ms(ready[9])
            );
        }
    }
    println!("load average at end: {}", load_average());
}

/// The bench's arguments: `[--rtt <n>ms] [ROUNDS]`.
struct Args {
    rounds: usize,
    rtt: Option<Duration>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            rounds: ROUNDS,
            rtt: None,
        };
        let mut given = std::env::args().skip(1);
        while let Some(arg) = given.next() {
            match arg.as_str() {
                "--rtt" => {
                    let value = given.next().unwrap_or_default();
                    let millis = value.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok());
                    let millis = millis.unwrap_or_else(|| panic!("--rtt {value:?}: give milliseconds, as 20ms"));
                    args.rtt = Some(Duration::from_millis(millis));
                }
                n => args.rounds = n.parse().unwrap_or_else(|_| panic!("{n:?} is not a number of rounds")),
            }
        }
        args
    }
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The repository and tag of round `round`'s digest-pinned image for `route`.
fn pinned_image(route: Route, round: usize) -> (&'static str, String) {
    match route {
        Route::Current => ("bench/signed", format!("pc{round}")),
        Route::Baseline => ("bench/signed", format!("pb{round}")),
        Route::Direct => ("bench/plain", format!("pc{round}")),
    }
}

/// A timed pull; behind the proxies, the registry requests it made are added to `requests`.
async fn counted_pull(
    env: &TestEnv,
    requests: &Requests,
    route: Route,
    client: Client,
    request: PullImageRequest,
) -> Duration {
    let Some(proxied) = &env.proxied else {
        return timed_pull(client, request).await;
    };
    let marks = (proxied.containerd.mark(), proxied.pullgate.mark());
    let took = timed_pull(client, request).await;
    requests.add(
        route,
        proxied.containerd.since(marks.0),
        proxied.pullgate.since(marks.1),
    );
    took
}

/// Registry requests of the cold pulls of each route: containerd's and pullgate's apart.
#[derive(Default)]
struct Requests {
    by_route: std::cell::RefCell<Vec<(Route, Counts, Counts)>>,
}

impl Requests {
    fn add(&self, route: Route, containerd: Counts, pullgate: Counts) {
        let mut by_route = self.by_route.borrow_mut();
        match by_route.iter_mut().find(|(r, _, _)| *r == route) {
            Some((_, c, p)) => {
                *c += containerd;
                *p += pullgate;
            }
            None => by_route.push((route, containerd, pullgate)),
        }
    }

    fn print(&self, what: &str, routes: &[Route], rounds: usize) {
        println!("{what}: registry requests per pull (mean of {rounds}), containerd's + pullgate's");
        println!(
            "  {:<9} {:>13} {:>13} {:>11} {:>11} {:>11} {:>7} {:>13}",
            "route", "manifest GET", "manifest HEAD", "blob GET", "referrers", "other", "total", "new conns"
        );
        for &route in routes {
            let by_route = self.by_route.borrow();
            let Some((_, c, p)) = by_route.iter().find(|(r, _, _)| *r == route) else {
                continue;
            };
            let per = |n: usize| n as f64 / rounds as f64;
            let both = |a: usize, b: usize| format!("{:.1}+{:.1}", per(a), per(b));
            println!(
                "  {:<9} {:>13} {:>13} {:>11} {:>11} {:>11} {:>7.1} {:>13}",
                format!("{route:?}").to_lowercase(),
                both(c.manifest_get, p.manifest_get),
                both(c.manifest_head, p.manifest_head),
                both(c.blob_get, p.blob_get),
                both(c.referrers, p.referrers),
                both(c.other + c.blob_head, p.other + p.blob_head),
                per(c.requests() + p.requests()),
                both(c.connections, p.connections),
            );
        }
    }
}

/// Starts `binary` as a pullgate in front of the env's containerd with `policy`, the env's
/// configuration plus `extra_config`, and `/metrics` on a free loopback port (another is tried
/// when the one picked was taken meanwhile).
async fn start_pullgate(env: &TestEnv, binary: &Path, name: &str, policy: &str, extra_config: &str) -> Pullgate {
    let dir = env.dir().join(name);
    let mut attempts = 0;
    loop {
        let port = free_local_port().expect("find a free port");
        let config = format!("{}{extra_config}", env.pullgate_config(&dir, "10s"));
        let config = pullgate::with_metrics(&config, ([127, 0, 0, 1], port).into());
        match Pullgate::try_start_binary(binary, &dir, &config, policy).await {
            Ok(pullgate) => return pullgate,
            Err(e) if attempts < 3 && e.log_tail.contains("Address already in use") => attempts += 1,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The CRI clients of one measure, by route.
struct Clients {
    current: Client,
    baseline: Option<Client>,
    direct: Client,
}

impl Clients {
    fn get(&self, route: Route) -> Client {
        match route {
            Route::Current => self.current.clone(),
            Route::Baseline => self.baseline.clone().expect("a baseline pullgate runs"),
            Route::Direct => self.direct.clone(),
        }
    }
}

/// The tag of round `round`'s image for `route`: signed images through either pullgate (each its
/// own, so neither finds the other's verification or layer), an unsigned twin direct.
fn pull_request(env: &TestEnv, route: Route, round: usize) -> PullImageRequest {
    let (repo, tag) = match route {
        Route::Current => ("bench/signed", format!("c{round}")),
        Route::Baseline => ("bench/signed", format!("b{round}")),
        Route::Direct => ("bench/plain", format!("c{round}")),
    };
    cri::pull_request(&env.image_ref(repo, &tag), None, Some("default"))
}

/// The tag of the first signed image `route` pulled (what ImageStatus asks about).
fn first_tag(route: Route) -> &'static str {
    match route {
        Route::Baseline => "b0",
        Route::Current | Route::Direct => "c0",
    }
}

async fn timed_pull(mut client: Client, request: PullImageRequest) -> Duration {
    let started = Instant::now();
    client.pull_image(request).await.expect("PullImage");
    started.elapsed()
}

/// Latencies of the same kind of call by each route.
#[derive(Default)]
struct Samples {
    current: Vec<Duration>,
    baseline: Vec<Duration>,
    direct: Vec<Duration>,
}

impl Samples {
    /// One call by each of `routes`, starting with a different route each round, so that none
    /// is always first (after an idle moment) or last.
    async fn rotate<F, Fut>(&mut self, routes: &[Route], round: usize, mut call: F)
    where
        F: FnMut(Route) -> Fut,
        Fut: Future<Output = Duration>,
    {
        for i in 0..routes.len() {
            let route = routes[(round + i) % routes.len()];
            let took = call(route).await;
            match route {
                Route::Current => self.current.push(took),
                Route::Baseline => self.baseline.push(took),
                Route::Direct => self.direct.push(took),
            }
        }
    }

    fn print(&mut self, what: &str) {
        self.current.sort();
        self.baseline.sort();
        self.direct.sort();
        let (p50, p99) = (percentile(&self.current, 50), percentile(&self.current, 99));
        let (d50, d99) = (percentile(&self.direct, 50), percentile(&self.direct, 99));
        if self.baseline.is_empty() {
            println!(
                "{what:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7.2}x {:>+9.3}",
                ms(p50),
                ms(p99),
                ms(d50),
                ms(d99),
                p50.as_secs_f64() / d50.as_secs_f64(),
                ms(p50) - ms(d50)
            );
            return;
        }
        let (b50, b99) = (percentile(&self.baseline, 50), percentile(&self.baseline, 99));
        println!(
            "{what:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8.3}x {:>+9.3} {:>+9.3}",
            ms(p50),
            ms(p99),
            ms(b50),
            ms(b99),
            ms(d50),
            ms(d99),
            p50.as_secs_f64() / b50.as_secs_f64(),
            ms(p50) - ms(d50),
            ms(b50) - ms(d50)
        );
    }
}

/// (d) and (e) for one pullgate: 64 concurrent pulls of one new image, RSS sampled meanwhile.
struct Burst {
    wall: Duration,
    failed: usize,
    verifications: u64,
    idle_kib: u64,
    peak_kib: u64,
}

impl Burst {
    async fn run(env: &TestEnv, pg: &Pullgate, tag: &str, content: &str) -> Burst {
        let pid = pg.pid().expect("pullgate runs");
        let idle_kib = rss_kib(pid, "VmRSS");
        let image = env.image_ref("bench/rollout", tag);
        env.push_signed_image("bench/rollout", tag, content).await;
        let verifications_before = verifications_run(pg).await;
        let started = Instant::now();
        let pulls: Vec<_> = (0..64)
            .map(|_| {
                let mut client = pg.client();
                let request = cri::pull_request(&image, None, Some("default"));
                tokio::spawn(async move { client.pull_image(request).await.map(|_| ()) })
            })
            .collect();
        let mut peak_kib = idle_kib;
        let sampler = async {
            while started.elapsed() < Duration::from_secs(30) {
                peak_kib = peak_kib.max(rss_kib(pid, "VmRSS"));
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
        let wall = started.elapsed();
        let verifications = verifications_run(pg).await - verifications_before;
        Burst {
            wall,
            failed,
            verifications,
            idle_kib,
            peak_kib,
        }
    }

    fn print(&self, which: &str) {
        println!(
            "(d) {which:<8} 64 concurrent pulls of one new image: {:.1} ms wall, {} failed, {} verification(s)",
            ms(self.wall),
            self.failed,
            self.verifications
        );
        println!(
            "(e) {which:<8} RSS idle {:.1} MiB; peak during (d) {:.1} MiB",
            mib(self.idle_kib),
            mib(self.peak_kib)
        );
    }
}

fn print_ready(which: &str, ready: &mut [Duration]) {
    ready.sort();
    println!(
        "(f) {which:<8} start to socket answering: p50 {:.1} ms, max {:.1} ms (10 starts)",
        ms(ready[5]),
        ms(ready[9])
    );
}

/// The median decision time of the pulls `pg` has audited so far.
fn decision_median(pg: &Pullgate) -> f64 {
    let mut decided: Vec<f64> = pg
        .audit_records()
        .iter()
        .filter_map(|r| r["durationMs"].as_f64())
        .collect();
    decided.sort_by(f64::total_cmp);
    decided.get(decided.len() / 2).copied().unwrap_or_default()
}

/// How many verifications pullgate has run, from its metrics: the count of the verification
/// duration histogram (cache hits and shared outcomes are not verifications).
async fn verifications_run(pg: &Pullgate) -> u64 {
    let text = pg.scrape().await;
    let count = pullgate::metric_sample(&text, "pullgate_verification_duration_seconds_count")
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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

/// Time from spawning `binary serve` in `dir` until its socket answers ImageFsInfo.
async fn time_to_ready(env: &TestEnv, binary: &Path, dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let config = env.pullgate_config(dir, "10s");
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("policy.yaml"), env.key_policy(&["127.0.0.1:1/none/*"])).unwrap();
    let socket = dir.join("pullgate.sock");
    let mut command = Pullgate::command_of(binary);
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
