//! A plain-HTTP proxy on 127.0.0.1 in front of the rig's real registry that makes signature
//! lookups slow, so that a test can see what happens to a download running while a verdict is
//! awaited. It forwards every `GET`/`HEAD` to the registry, streaming bodies as they come, and:
//! - holds back for a set delay the answers to signature lookups (`.sig`/`.att` and referrers
//!   tags, `/manifests/sha256-…`, and the referrers API);
//! - counts the body bytes it passed on per request (`METHOD path user-agent` → bytes), a
//!   request cut short by its client included;
//! - optionally sends blob bodies no faster than a set rate (a registry further away than
//!   loopback), and cuts off, after a number of bytes, the blob bodies it sends to clients whose
//!   user agent starts with a given prefix (a registry failing mid-layer for that client only).

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// The most a request head may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How the proxy treats what it passes on.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// How long each signature lookup is held back.
    pub lookup_delay: Duration,
    /// Blob bodies are sent at most this many bytes a second.
    pub blob_rate: Option<u64>,
    /// Blob bodies cut off after `after` bytes for user agents starting with `agent`.
    pub cut_blobs: Option<CutBlobs>,
}

#[derive(Debug, Clone)]
pub struct CutBlobs {
    pub agent: String,
    pub after: u64,
}

/// One request passed on: `METHOD path`, the client's user agent, body bytes sent.
#[derive(Debug, Clone)]
pub struct Served {
    pub request: String,
    pub agent: String,
    pub bytes: u64,
}

/// The running proxy; stops when dropped.
#[derive(Debug)]
pub struct SlowLookups {
    host: String,
    served: Arc<Mutex<Vec<Served>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Proxy {
    client: reqwest::Client,
    upstream: String,
    behaviour: Behaviour,
    served: Arc<Mutex<Vec<Served>>>,
}

// === impl SlowLookups ===

impl SlowLookups {
    /// Starts the proxy in front of the plain-HTTP registry at `upstream` (`host:port`).
    pub async fn start(upstream: &str, behaviour: Behaviour) -> SlowLookups {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let host = listener.local_addr().expect("its address").to_string();
        let served = Arc::new(Mutex::new(Vec::new()));
        let proxy = Arc::new(Proxy {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            upstream: format!("http://{upstream}"),
            behaviour,
            served: served.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let _ = proxy.serve_one(stream).await;
                });
            }
        });
        SlowLookups { host, served, task }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// Every request passed on so far (those still streaming with the bytes sent until now).
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for SlowLookups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Proxy ===

impl Proxy {
    async fn serve_one(&self, mut stream: TcpStream) -> io::Result<()> {
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
        let agent = headers
            .iter()
            .find(|(k, _)| k == "user-agent")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let path = target.split('?').next().unwrap_or("/").to_string();
        if path.contains("/manifests/sha256-") || path.contains("/referrers/") {
            tokio::time::sleep(self.behaviour.lookup_delay).await;
        }
        let index = {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            served.push(Served {
                request: format!("{method} {path}"),
                agent: agent.clone(),
                bytes: 0,
            });
            served.len() - 1
        };
        let request_method = if method == "HEAD" {
            reqwest::Method::HEAD
        } else {
            reqwest::Method::GET
        };
        let mut request = self
            .client
            .request(request_method, format!("{}{target}", self.upstream));
        for (name, value) in &headers {
            if matches!(name.as_str(), "accept" | "authorization" | "range" | "user-agent") {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let Ok(mut response) = request.send().await else {
            return stream
                .write_all(b"HTTP/1.1 502 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        };
        let mut out = format!("HTTP/1.1 {} X\r\n", response.status().as_u16());
        for (name, value) in response.headers() {
            if matches!(
                name.as_str(),
                "content-type"
                    | "docker-content-digest"
                    | "content-length"
                    | "content-range"
                    | "www-authenticate"
                    | "location"
            ) {
                out.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
            }
        }
        out.push_str("connection: close\r\n\r\n");
        stream.write_all(out.as_bytes()).await?;
        if method == "HEAD" {
            return stream.shutdown().await;
        }
        let started = std::time::Instant::now();
        let blob = path.contains("/blobs/");
        let cut_after = self
            .behaviour
            .cut_blobs
            .as_ref()
            .filter(|cut| path.contains("/blobs/") && agent.starts_with(&cut.agent))
            .map(|cut| cut.after);
        let mut sent = 0u64;
        while let Ok(Some(chunk)) = response.chunk().await {
            let chunk = match cut_after {
                Some(after) if sent + chunk.len() as u64 > after => {
                    let keep = usize::try_from(after - sent).unwrap_or(0);
                    stream.write_all(&chunk[..keep]).await?;
                    self.count(index, keep as u64);
                    // Cut off mid-body: the client sees the connection end early.
                    return Ok(());
                }
                _ => chunk,
            };
            stream.write_all(&chunk).await?;
            sent += chunk.len() as u64;
            self.count(index, chunk.len() as u64);
            if let Some(rate) = self.behaviour.blob_rate.filter(|_| blob) {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
        }
        stream.shutdown().await
    }

    fn count(&self, index: usize, bytes: u64) {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served[index].bytes += bytes;
    }
}
