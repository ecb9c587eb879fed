//! A canned registry for the referrers quirks of registries in production, which cannot run
//! here: a plain-HTTP proxy on 127.0.0.1 in front of the rig's real registry that forwards every
//! `GET`/`HEAD` unchanged (so containerd pulls real content and digests) and lies only about
//! `GET /v2/<name>/referrers/<digest>`, which the real registry (distribution 2.8) lacks:
//! - [`Quirk::EmptyList`]: 200 with an empty index, while the referrers tag holds the bundle;
//! - [`Quirk::RedirectTo404`]: a 307 to another path of this server (ghcr.io), which answers
//!   404, except for images given to [`QuirkyRegistry::list_only_after_redirect`]: for those it
//!   answers the referrers tag's index, and the tag itself is hidden;
//! - [`Quirk::Untyped`]: 200 with the referrers tag's index, `artifactType` taken off each entry
//!   (older registries, ORAS).

use std::{
    collections::HashSet,
    io,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// The most a request head may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// How the canned registry answers the referrers API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    EmptyList,
    RedirectTo404,
    Untyped,
}

/// The running canned registry; stops when dropped.
#[derive(Debug)]
pub struct QuirkyRegistry {
    host: String,
    asked: Arc<Mutex<Vec<String>>>,
    after_redirect: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

// === impl QuirkyRegistry ===

impl QuirkyRegistry {
    /// Starts the proxy in front of the plain-HTTP registry at `upstream` (`host:port`).
    pub async fn start(upstream: &str, quirk: Quirk) -> QuirkyRegistry {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the canned registry");
        let host = listener.local_addr().expect("its address").to_string();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let recorder = asked.clone();
        let after_redirect = Arc::new(Mutex::new(HashSet::new()));
        let listed = after_redirect.clone();
        let upstream = format!("http://{upstream}");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, recorder) = (client.clone(), upstream.clone(), recorder.clone());
                let listed = listed.clone();
                tokio::spawn(async move {
                    let canned = Canned {
                        client: &client,
                        upstream: &upstream,
                        quirk,
                        after_redirect: &listed,
                    };
                    let _ = serve_one(stream, &canned, &recorder).await;
                });
            }
        });
        QuirkyRegistry {
            host,
            asked,
            after_redirect,
            task,
        }
    }

    /// With [`Quirk::RedirectTo404`]: the referrers of image `digest` are listed only where the
    /// redirect leads, not in its referrers tag.
    pub fn list_only_after_redirect(&self, digest: &str) {
        self.after_redirect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string());
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The paths asked for so far, in order, as `METHOD path`.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for QuirkyRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response to write: status line, headers, body (left out for `HEAD`).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What one connection needs to answer.
struct Canned<'a> {
    client: &'a reqwest::Client,
    upstream: &'a str,
    quirk: Quirk,
    after_redirect: &'a Mutex<HashSet<String>>,
}

async fn serve_one(mut stream: TcpStream, canned: &Canned<'_>, asked: &Mutex<Vec<String>>) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD_BYTES {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    asked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {target}"));
    let reply = answer(canned, &method, &target, &headers).await;
    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !reply
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        out.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    out.push_str("connection: close\r\n\r\n");
    stream.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(&reply.body).await?;
    }
    stream.shutdown().await
}

async fn answer(canned: &Canned<'_>, method: &str, target: &str, headers: &[(String, String)]) -> Reply {
    let (client, upstream) = (canned.client, canned.upstream);
    let path = target.split('?').next().unwrap_or("/");
    let listed_after_redirect = |digest: &str| {
        canned
            .after_redirect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    };
    if let Some(rest) = path.strip_prefix("/elsewhere") {
        return match referrers_request(rest) {
            Some((name, digest)) if listed_after_redirect(digest) => {
                tag_index(client, upstream, name, digest, false).await
            }
            _ => index_reply(404, b"{}".to_vec()),
        };
    }
    if let Some((name, digest)) = referrers_request(path) {
        return match canned.quirk {
            Quirk::EmptyList => index_reply(
                200,
                format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX_MEDIA_TYPE}","manifests":[]}}"#).into_bytes(),
            ),
            Quirk::RedirectTo404 => Reply {
                status: 307,
                headers: vec![("location".into(), format!("/elsewhere/v2/{name}/referrers/{digest}"))],
                body: Vec::new(),
            },
            Quirk::Untyped => tag_index(client, upstream, name, digest, true).await,
        };
    }
    let hidden_tag = path
        .rsplit_once("/manifests/sha256-")
        .is_some_and(|(_, hex)| listed_after_redirect(&format!("sha256:{hex}")));
    if hidden_tag {
        return index_reply(404, b"{}".to_vec());
    }
    forward(client, upstream, method, target, headers).await
}

/// `(name, digest)` of `/v2/<name>/referrers/<digest>`.
fn referrers_request(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v2/")?;
    let (name, digest) = rest.rsplit_once("/referrers/")?;
    Some((name, digest))
}

fn index_reply(status: u16, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), INDEX_MEDIA_TYPE.into())],
        body,
    }
}

/// The referrers tag's index, with `artifactType` removed from its entries when `untyped`; an
/// empty index when there is no tag.
async fn tag_index(client: &reqwest::Client, upstream: &str, name: &str, digest: &str, untyped: bool) -> Reply {
    let tag = digest.replacen(':', "-", 1);
    let url = format!("{upstream}/v2/{name}/manifests/{tag}");
    let tagged = match client.get(&url).header("accept", INDEX_MEDIA_TYPE).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
        _ => None,
    };
    let mut index: serde_json::Value = tagged
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}));
    if let Some(entries) = index["manifests"].as_array_mut().filter(|_| untyped) {
        for entry in entries.iter_mut().filter_map(|e| e.as_object_mut()) {
            entry.remove("artifactType");
        }
    }
    index_reply(200, index.to_string().into_bytes())
}

/// The real registry's answer to the same request.
async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
) -> Reply {
    let method = if method == "HEAD" {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let mut request = client.request(method, format!("{upstream}{target}"));
    for (name, value) in headers {
        if matches!(name.as_str(), "accept" | "authorization" | "range") {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let Ok(response) = request.send().await else {
        return Reply {
            status: 502,
            headers: Vec::new(),
            body: Vec::new(),
        };
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(n, _)| {
            matches!(
                n.as_str(),
                "content-type" | "docker-content-digest" | "content-length" | "www-authenticate" | "location"
            )
        })
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Reply { status, headers, body }
}
