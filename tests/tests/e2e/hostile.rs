//! A hostile registry: a huge manifest, a signature manifest with thousands of layers, and a
//! signature layer claiming to be a gigabyte. Each is refused quickly, with a denial that says
//! why, and pullgate's peak memory stays far below what the registry offered.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use pullgate_tests::{
    distribution::sha256_digest,
    pullgate::{config_yaml_with_registries, RegistryEntry},
    Pullgate, TestEnv,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What a route answers: bytes, or `n` bytes of `[` streamed without being held in memory.
#[derive(Clone)]
enum Body {
    Bytes(Vec<u8>),
    Endless(usize),
}

/// A plain-HTTP registry answering `routes` (path → body), 404 otherwise; every path asked for
/// is appended to the returned log.
async fn hostile_registry(routes: HashMap<String, Body>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .to_string();
                log.lock().unwrap().push(path.clone());
                let head = |status: &str, len: usize| {
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    )
                };
                match routes.get(&path) {
                    Some(Body::Bytes(bytes)) => {
                        let _ = stream.write_all(head("200 OK", bytes.len()).as_bytes()).await;
                        let _ = stream.write_all(bytes).await;
                    }
                    Some(Body::Endless(len)) => {
                        let _ = stream.write_all(head("200 OK", *len).as_bytes()).await;
                        let chunk = vec![b'['; 64 * 1024];
                        let mut left = *len;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            if stream.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                            left -= n;
                        }
                    }
                    None => {
                        let _ = stream.write_all(head("404 Not Found", 2).as_bytes()).await;
                        let _ = stream.write_all(b"{}").await;
                    }
                }
            });
        }
    });
    (host, asked)
}

/// A small valid image manifest, and its digest.
fn image_manifest() -> (Vec<u8>, String) {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "ab".repeat(32)), "size": 2},
        "layers": []
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    (manifest, digest)
}

/// The `.sig` manifest path of `digest` in repository `app`.
fn sig_path(digest: &str) -> String {
    format!("/v2/app/manifests/{}.sig", digest.replacen(':', "-", 1))
}

fn sig_manifest(layers: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "cd".repeat(32)), "size": 2},
        "layers": layers
    }))
    .unwrap()
}

/// Peak resident memory of `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn pullgate_for(env: &TestEnv, host: &str, name: &str) -> Pullgate {
    let dir = env.dir().join(name);
    let config = config_yaml_with_registries(
        &dir.join("pullgate.sock"),
        &env.containerd.socket(),
        &dir.join("policy.yaml"),
        &dir.join("audit.jsonl"),
        &[RegistryEntry::insecure(host)],
        "20s",
    );
    Pullgate::start(&dir, &config, &env.key_policy(&[&format!("{host}/**")])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_overlong_registry_answers_are_refused_without_memory_blow_up() {
    let env = TestEnv::start().await;
    let (manifest, digest) = image_manifest();
    let many_layers: Vec<_> = (0..10_000)
        .map(|i| json!({"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": format!("sha256:{:064x}", i), "size": 200}))
        .collect();
    let gigabyte_layer = vec![json!({
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": format!("sha256:{}", "ef".repeat(32)),
        "size": 1u64 << 30,
        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}
    })];
    let routes = HashMap::from([
        // 256 MiB of '[' as a manifest.
        ("/v2/app/manifests/huge".to_string(), Body::Endless(256 << 20)),
        ("/v2/app/manifests/many".to_string(), Body::Bytes(manifest.clone())),
        ("/v2/app/manifests/gig".to_string(), Body::Bytes(manifest.clone())),
    ]);
    // Two tags of one image: its .sig is answered per test below, so start with `many`.
    let mut many = routes.clone();
    many.insert(sig_path(&digest), Body::Bytes(sig_manifest(many_layers)));
    let (host, _) = hostile_registry(many).await;
    let pg = pullgate_for(&env, &host, "first").await;
    let pid = pg.pid().unwrap();
    let before = peak_rss_kib(pid);

    let message = pg
        .pull(&format!("{host}/app:huge"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(message.starts_with("SignatureValidationFailed: "), "{message}");
    assert!(message.contains("larger than 4194304 bytes"), "{message}");

    let message = pg
        .pull(&format!("{host}/app:many"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(
        message.contains("10000 layers, more than the 64 pullgate reads"),
        "{message}"
    );

    // 256 MiB offered; pullgate read at most its 4 MiB bound.
    let after = peak_rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );

    // A signature layer claiming a gigabyte is not fetched (the registry has no such blob; a
    // fetch would fail differently), and counts as no signature.
    let mut gig = routes;
    gig.insert(sig_path(&digest), Body::Bytes(sig_manifest(gigabyte_layer)));
    let (host2, asked) = hostile_registry(gig).await;
    drop(pg);
    let pg = pullgate_for(&env, &host2, "second").await;
    let message = pg
        .pull(&format!("{host2}/app:gig"), None)
        .await
        .unwrap_err()
        .message()
        .to_string();
    assert!(message.starts_with("SignatureValidationFailed: "), "{message}");
    assert!(message.contains("no signature from authority"), "{message}");
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|p| p.ends_with(".sig")),
        "the .sig manifest was read: {asked:?}"
    );
    assert!(
        !asked.iter().any(|p| p.contains("/blobs/")),
        "no blob was fetched: {asked:?}"
    );
}
