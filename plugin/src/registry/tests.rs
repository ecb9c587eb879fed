//! Resolving by `HEAD`, the requests a verification makes, and connections kept across
//! sessions, against a canned registry that tells `HEAD` from `GET` and keeps connections
//! alive as registries do (Debian's registry 2.8 always names the digest, so its fallback and
//! lies cannot be met end to end).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::RegistryConfig;

/// One canned answer: the `Docker-Content-Digest` to send, if any, and the body (a `HEAD` gets
/// the headers alone); `untyped` leaves out `Content-Type`.
#[derive(Clone, Default)]
struct Canned {
    digest: Option<String>,
    body: Vec<u8>,
    untyped: bool,
}

impl Canned {
    /// `body`, named by its own digest.
    fn honest(body: &[u8]) -> Canned {
        Canned {
            digest: Some(Digest::of(body).to_string()),
            body: body.to_vec(),
            untyped: false,
        }
    }
}

/// What the canned registry saw: `METHOD path` per request, and connections accepted.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

impl Seen {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves `routes` (path → answer, for `GET` and `HEAD` alike) over HTTP/1.1 on loopback with
/// keep-alive; everything else is 404.
async fn serve(routes: HashMap<String, Canned>) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            recorder.connections.fetch_add(1, Ordering::Relaxed);
            let (routes, recorder) = (routes.clone(), recorder.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 8192];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end + 4);
                    let mut words = head.split_whitespace();
                    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
                    let path = target.split('?').next().unwrap_or("/");
                    recorder.requests.lock().unwrap().push(format!("{method} {path}"));
                    let (status, canned) = match routes.get(path) {
                        Some(canned) => ("200 OK", canned.clone()),
                        None => ("404 Not Found", Canned::default()),
                    };
                    let digest = canned
                        .digest
                        .map(|d| format!("Docker-Content-Digest: {d}\r\n"))
                        .unwrap_or_default();
                    let typed = match canned.untyped {
                        true => "",
                        false => "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{typed}{digest}Content-Length: {}\r\n\r\n",
                        canned.body.len()
                    );
                    let mut bytes = answer.into_bytes();
                    if method != "HEAD" {
                        bytes.extend_from_slice(&canned.body);
                    }
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (host, seen)
}

/// Registries reaching `host` over plain HTTP.
fn registries(host: &str) -> Registries {
    let mut config = Config::with_policy("unused".into());
    config.registries.push(RegistryConfig {
        host: host.to_string(),
        insecure: true,
        ca_file: None,
    });
    Registries::new(&config, Default::default()).unwrap()
}

const IMAGE: &[u8] = br#"{"schemaVersion":2,"layers":[]}"#;
const OTHER: &[u8] = br#"{"schemaVersion":2,"layers":[],"annotations":{"x":"y"}}"#;

#[tokio::test]
async fn a_tag_is_resolved_by_head_when_the_answer_names_the_digest() {
    let routes = HashMap::from([("/v2/app/manifests/v1".to_string(), Canned::honest(IMAGE))]);
    let (host, seen) = serve(routes).await;
    let registries = registries(&host);
    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());

    assert_eq!(session.resolve(&reference).await.unwrap(), Digest::of(IMAGE));
    assert_eq!(seen.requests(), ["HEAD /v2/app/manifests/v1"], "no manifest GET");
}

#[tokio::test]
async fn a_head_without_a_digest_falls_back_to_get_and_hashes_the_bytes() {
    let canned = Canned {
        body: IMAGE.to_vec(),
        ..Canned::default()
    };
    let routes = HashMap::from([("/v2/app/manifests/v1".to_string(), canned)]);
    let (host, seen) = serve(routes).await;
    let registries = registries(&host);
    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());

    assert_eq!(session.resolve(&reference).await.unwrap(), Digest::of(IMAGE));
    assert_eq!(
        seen.requests(),
        ["HEAD /v2/app/manifests/v1", "GET /v2/app/manifests/v1"]
    );
}

/// The descriptor a Notation signature is matched against comes from the `HEAD` where it says
/// all of it (`Content-Type`, `Content-Length`); where the media type is missing, from a `GET`
/// (the media type the manifest declares, the size of its bytes).
#[tokio::test]
async fn a_descriptor_is_resolved_by_head_and_by_get_where_head_leaves_the_media_type_out() {
    const DECLARED: &[u8] =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let untyped = Canned {
        untyped: true,
        ..Canned::honest(DECLARED)
    };
    let routes = HashMap::from([
        ("/v2/app/manifests/v1".to_string(), Canned::honest(IMAGE)),
        ("/v2/untyped/manifests/v1".to_string(), untyped),
    ]);
    let (host, seen) = serve(routes).await;
    let registries = registries(&host);

    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    let image = session.resolve_descriptor(&reference).await.unwrap();
    assert_eq!(image.digest, Digest::of(IMAGE));
    assert_eq!(image.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(image.size, IMAGE.len() as u64);
    assert_eq!(seen.requests(), ["HEAD /v2/app/manifests/v1"], "no manifest GET");

    let reference = Reference::parse(&format!("{host}/untyped:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    let image = session.resolve_descriptor(&reference).await.unwrap();
    assert_eq!(image.digest, Digest::of(DECLARED));
    assert_eq!(image.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(image.size, DECLARED.len() as u64);
    assert_eq!(
        seen.requests()[1..],
        ["HEAD /v2/untyped/manifests/v1", "GET /v2/untyped/manifests/v1"]
    );
}

/// The digest a `HEAD` names is what gets verified and pulled; the manifest fetched by it later
/// (by containerd for the pinned pull, or by pullgate) must hash to it, and a registry serving
/// other bytes under it is refused.
#[tokio::test]
async fn a_manifest_that_does_not_hash_to_the_digest_head_named_is_refused() {
    let claimed = Digest::of(IMAGE);
    let lie = Canned {
        digest: Some(claimed.to_string()),
        body: OTHER.to_vec(),
        ..Canned::default()
    };
    let routes = HashMap::from([
        ("/v2/app/manifests/v1".to_string(), Canned::honest(IMAGE)),
        (format!("/v2/app/manifests/{claimed}"), lie),
    ]);
    let (host, _) = serve(routes).await;
    let registries = registries(&host);
    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());

    let digest = session.resolve(&reference).await.unwrap();
    assert_eq!(digest, claimed);
    let err = session.manifest(digest.as_str()).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Invalid(why) if why.contains("hash to")),
        "{err}"
    );
}

#[tokio::test]
async fn a_pinned_digest_is_checked_by_head_and_one_the_registry_names_otherwise_is_refused() {
    let digest = Digest::of(IMAGE);
    let routes = HashMap::from([
        (format!("/v2/app/manifests/{digest}"), Canned::honest(IMAGE)),
        (
            format!("/v2/lying/manifests/{digest}"),
            Canned {
                digest: Some(Digest::of(OTHER).to_string()),
                body: OTHER.to_vec(),
                ..Canned::default()
            },
        ),
    ]);
    let (host, seen) = serve(routes).await;
    let registries = registries(&host);

    let pinned = Reference::parse(&format!("{host}/app@{digest}")).unwrap();
    let session = registries.session(&pinned, Credentials::anonymous());
    assert_eq!(session.resolve(&pinned).await.unwrap(), digest);
    assert_eq!(seen.requests(), [format!("HEAD /v2/app/manifests/{digest}")]);

    let lying = Reference::parse(&format!("{host}/lying@{digest}")).unwrap();
    let session = registries.session(&lying, Credentials::anonymous());
    let err = session.resolve(&lying).await.unwrap_err();
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");

    let missing = Reference::parse(&format!("{host}/missing@{digest}")).unwrap();
    let session = registries.session(&missing, Credentials::anonymous());
    let err = session.resolve(&missing).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err}");
}

/// A registry without the referrers API, and an image without a referrers tag (most images):
/// the tag's absence is learnt by `HEAD`, so the lookup makes no manifest `GET`.
#[tokio::test]
async fn an_absent_referrers_tag_costs_no_manifest_get() {
    let (host, seen) = serve(HashMap::new()).await;
    let registries = registries(&host);
    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    let digest = Digest::of(IMAGE);

    let found = referrers::sigstore_bundles(&session, &digest, &[]).await.unwrap();
    assert!(found.bundles.is_empty());
    let tag = referrers::referrers_tag(&digest);
    assert_eq!(
        seen.requests(),
        [
            format!("GET /v2/app/referrers/{digest}"),
            format!("HEAD /v2/app/manifests/{tag}")
        ]
    );
}

/// One client per host, kept alive: the pulls of a node reuse one connection to a registry
/// rather than paying a TCP (and TLS) handshake each, one round trip or more apiece.
#[tokio::test]
async fn sessions_one_after_another_share_one_connection_to_a_host() {
    let routes = HashMap::from([
        ("/v2/app/manifests/v1".to_string(), Canned::honest(IMAGE)),
        ("/v2/app/manifests/v2".to_string(), Canned::honest(OTHER)),
        (format!("/v2/app/blobs/{}", Digest::of(OTHER)), Canned::honest(OTHER)),
    ]);
    let (host, seen) = serve(routes).await;
    let registries = registries(&host);
    for tag in ["v1", "v2"] {
        let reference = Reference::parse(&format!("{host}/app:{tag}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());
        session.resolve(&reference).await.unwrap();
        session.blob(&Digest::of(OTHER), 1024).await.unwrap();
    }
    assert_eq!(seen.requests().len(), 4);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

/// containerd 1.6 ignores a `hosts.toml` without a `[host]` table, so its `server` is often
/// listed again as one: the same host, asked once for what it does not have.
#[tokio::test]
async fn a_host_listed_twice_is_asked_once_for_what_it_does_not_have() {
    let (host, seen) = serve(HashMap::new()).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    let toml =
        format!("server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    std::fs::write(dir.join("hosts.toml"), toml).unwrap();
    let mut config = Config::with_policy("unused".into());
    config.registry_hosts = Some(root.path().to_owned());
    let registries = Registries::new(&config, Default::default()).unwrap();
    let reference = Reference::parse(&format!("{host}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    let digest = Digest::of(IMAGE);

    let sig = cosign::signature_tag(&digest);
    assert!(session.manifest(&sig).await.unwrap().is_none());
    let found = referrers::sigstore_bundles(&session, &digest, &[]).await.unwrap();
    assert!(found.bundles.is_empty());
    let tag = referrers::referrers_tag(&digest);
    assert_eq!(
        seen.requests(),
        [
            format!("GET /v2/app/manifests/{sig}"),
            format!("GET /v2/app/referrers/{digest}"),
            format!("HEAD /v2/app/manifests/{tag}")
        ]
    );
}
