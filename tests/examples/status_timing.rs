//! Where an `ImageStatus` through pullgate spends its time, measured side by side in one run
//! against a real containerd: pullgate (and, with `PULLGATE_BASELINE_BIN`, a second build)
//! against direct, and the parts pullgate adds on its own — a containerd image lookup per name,
//! one List for all names, and the CRI call made over a bare HTTP/2 connection instead of
//! tonic's buffered channel. Every round runs each kind once, in an order that rotates.
//!
//! `PULLGATE_BIN=target/release/pullgate cargo run --release -p pullgate-tests --example
//! status_timing [ROUNDS]` (needs what the e2e rig needs). `PULLGATE_OTHER_BIN`, a third
//! build, is measured beside them too.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use pullgate::containerd::Containerd;
use pullgate_tests::{cri, process::free_local_port, pullgate as rig, Pullgate, TestEnv};

const KINDS: [&str; 8] = [
    "direct ImageStatus (tonic)",
    "direct ImageStatus (bare h2)",
    "pullgate ImageStatus",
    "baseline ImageStatus",
    "other build ImageStatus",
    "containerd Get, one name",
    "containerd Get x2, in turn",
    "containerd List, 2 names",
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(2000, |r| r.parse().expect("ROUNDS"));
    let baseline_bin = std::env::var_os("PULLGATE_BASELINE_BIN").map(PathBuf::from);
    let other_bin = std::env::var_os("PULLGATE_OTHER_BIN").map(PathBuf::from);
    let env = TestEnv::start().await;
    let host = env.host();
    let policy = env.key_policy(&[&format!("{host}/bench/**")]);
    let image = env.image_ref("bench/signed", "c0");
    let digest = env.push_signed_image("bench/signed", "c0", "status timing").await;
    let pinned = env.image_ref("bench/signed", &digest);

    let start = |binary: PathBuf, name: &'static str| {
        let env = &env;
        let policy = &policy;
        async move {
            let dir = env.dir().join(name);
            let port = free_local_port().expect("a free port");
            let config = rig::with_metrics(&env.pullgate_config(&dir, "10s"), ([127, 0, 0, 1], port).into());
            Pullgate::try_start_binary(&binary, &dir, &config, policy)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let current = start(Pullgate::binary(), "current").await;
    let baseline = match &baseline_bin {
        Some(binary) => Some(start(binary.clone(), "baseline").await),
        None => None,
    };
    let other = match &other_bin {
        Some(binary) => Some(start(binary.clone(), "other").await),
        None => None,
    };
    for pg in [Some(&current), baseline.as_ref(), other.as_ref()]
        .into_iter()
        .flatten()
    {
        pg.pull(&image, None).await.expect("pull through pullgate");
    }
    // Give the event subscription time to come up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One client (one connection) each, as kubelet keeps.
    let direct = env.containerd.client();
    let current_client = current.client();
    let baseline_client = baseline.as_ref().map(Pullgate::client);
    let other_client = other.as_ref().map(Pullgate::client);
    let channel = pullgate::cri::Upstream::connect_lazy(&env.containerd.socket()).own_channel();
    let images = Containerd::new(channel, "k8s.io").expect("namespace");
    let stream = tokio::net::UnixStream::connect(env.containerd.socket())
        .await
        .expect("connect to containerd");
    let (mut bare, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = cri::image_status_request(&image);
    let framed = {
        let message = request.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        Bytes::from(framed)
    };

    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    for round in 0..rounds {
        for i in 0..KINDS.len() {
            let kind = (round + i) % KINDS.len();
            let started = Instant::now();
            match kind {
                0 => {
                    let shown = direct.clone().image_status(request.clone()).await.expect("ImageStatus");
                    assert!(shown.into_inner().image.is_some());
                }
                1 => {
                    let call = http::Request::post("http://containerd.sock/runtime.v1.ImageService/ImageStatus")
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(Full::new(framed.clone()))
                        .expect("a request");
                    let reply = bare.send_request(call).await.expect("ImageStatus over bare h2");
                    let body = reply.into_body().collect().await.expect("the reply").to_bytes();
                    assert!(body.len() > 5);
                }
                2 => {
                    let shown = current_client
                        .clone()
                        .image_status(request.clone())
                        .await
                        .expect("ImageStatus");
                    assert!(shown.into_inner().image.is_some(), "pullgate hid the image");
                }
                3 | 4 => match [&baseline_client, &other_client][kind - 3] {
                    Some(client) => {
                        let shown = client.clone().image_status(request.clone()).await.expect("ImageStatus");
                        assert!(shown.into_inner().image.is_some(), "another build hid the image");
                    }
                    None => continue,
                },
                5 => {
                    images.target_digest(&image).await.expect("Get").expect("found");
                }
                6 => {
                    images.target_digest(&image).await.expect("Get").expect("found");
                    images.target_digest(&pinned).await.expect("Get").expect("found");
                }
                _ => {
                    let found = images.targets(&[&image, &pinned]).await.expect("List");
                    assert_eq!(found.len(), 2);
                }
            }
            samples[kind].push(started.elapsed());
        }
    }

    println!(
        "pullgate followed containerd's image events: {}",
        current.log().contains("following containerd's image events")
    );
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "{rounds} rounds; ms\n{:<30} {:>8} {:>8} {:>8}",
        "kind", "p50", "p90", "p99"
    );
    let mut p50s = Vec::new();
    for (kind, mut times) in KINDS.iter().zip(samples) {
        if times.is_empty() {
            p50s.push(0.0);
            continue;
        }
        times.sort();
        let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e3;
        println!("{kind:<30} {:>8.3} {:>8.3} {:>8.3}", at(50), at(90), at(99));
        p50s.push(at(50));
    }
    println!(
        "\nadded p50 over direct (tonic): pullgate {:+.3} ms ({:.2}x); baseline {:+.3} ms; other {:+.3} ms",
        p50s[2] - p50s[0],
        p50s[2] / p50s[0],
        p50s[3] - p50s[0],
        p50s[4] - p50s[0]
    );
}
