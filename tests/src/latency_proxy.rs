//! A registry in another zone, on loopback: a TCP proxy on 127.0.0.1 in front of the rig's
//! registry that delays every chunk by half a round trip in each direction, so one HTTP request
//! and its response cost one round trip, and counts what passes: connections accepted, and each
//! HTTP/1.1 request's method and path. Every connection has its own pair of pipes, so a slow
//! connection holds up no other; a delayed chunk does not hold up reading the next one, so the
//! delay adds latency, not a bandwidth limit.

use std::{
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};

/// A request head longer than this stops the counting on its connection (the bytes still pass).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Chunks in flight one way on one connection; the reader waits when the writer is this far
/// behind (at a round trip of 20 ms, far more than loopback delivers).
const CHUNKS_IN_FLIGHT: usize = 1024;

/// The running proxy; stops accepting when dropped (open connections finish on their own).
#[derive(Debug)]
pub struct LatencyProxy {
    host: String,
    rtt: Duration,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

/// What passed through the proxy so far.
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicUsize,
    requests: Mutex<Vec<Request>>,
}

/// One HTTP request seen on its way to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path and query as sent.
    pub path: String,
    /// The proxy's number for the connection it came on, from 1.
    pub connection: usize,
}

/// What a registry request is for, as counted per pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ManifestGet,
    ManifestHead,
    BlobGet,
    BlobHead,
    Referrers,
    /// Anything else: `/v2/` pings, token requests, uploads.
    Other,
}

/// Requests of each [`Kind`], and connections opened, between two points in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub manifest_get: usize,
    pub manifest_head: usize,
    pub blob_get: usize,
    pub blob_head: usize,
    pub referrers: usize,
    pub other: usize,
    pub connections: usize,
}

/// A point in the proxy's history, to count what came after it.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    requests: usize,
    connections: usize,
}

// === impl LatencyProxy ===

impl LatencyProxy {
    /// Starts a proxy to `upstream` (`host:port` on loopback) adding `rtt` to every round trip.
    pub async fn start(upstream: &str, rtt: Duration) -> io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let stats = Arc::new(Stats::default());
        let upstream = upstream.to_string();
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let (upstream, stats) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, rtt / 2, number, stats).await;
                    }
                });
            }
        });
        Ok(LatencyProxy { host, rtt, stats, task })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Now, to count what comes after with [`LatencyProxy::since`].
    pub fn mark(&self) -> Mark {
        Mark {
            requests: self.requests_lock().len(),
            connections: self.stats.connections.load(Ordering::Relaxed),
        }
    }

    /// The requests seen after `mark`, in order.
    pub fn requests_since(&self, mark: Mark) -> Vec<Request> {
        self.requests_lock().get(mark.requests..).unwrap_or_default().to_vec()
    }

    /// The requests of each kind, and the connections opened, after `mark`.
    pub fn since(&self, mark: Mark) -> Counts {
        let mut counts = Counts {
            connections: self.stats.connections.load(Ordering::Relaxed) - mark.connections,
            ..Counts::default()
        };
        for request in self.requests_since(mark) {
            match request.kind() {
                Kind::ManifestGet => counts.manifest_get += 1,
                Kind::ManifestHead => counts.manifest_head += 1,
                Kind::BlobGet => counts.blob_get += 1,
                Kind::BlobHead => counts.blob_head += 1,
                Kind::Referrers => counts.referrers += 1,
                Kind::Other => counts.other += 1,
            }
        }
        counts
    }

    fn requests_lock(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.stats.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Request ===

impl Request {
    /// What the request is for, from its method and the last segments of its path
    /// (`/v2/<name>/manifests/<reference>` and so on; a name may hold slashes).
    pub fn kind(&self) -> Kind {
        let path = self.path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.rsplitn(3, '/').collect();
        let what = segments.get(1).copied().unwrap_or_default();
        let head = self.method == "HEAD";
        match (what, self.method.as_str()) {
            ("manifests", "GET") => Kind::ManifestGet,
            ("manifests", _) if head => Kind::ManifestHead,
            ("blobs", "GET") => Kind::BlobGet,
            ("blobs", _) if head => Kind::BlobHead,
            ("referrers", "GET") => Kind::Referrers,
            _ => Kind::Other,
        }
    }
}

// === impl Counts ===

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.manifest_get += other.manifest_get;
        self.manifest_head += other.manifest_head;
        self.blob_get += other.blob_get;
        self.blob_head += other.blob_head;
        self.referrers += other.referrers;
        self.other += other.other;
        self.connections += other.connections;
    }
}

impl Counts {
    /// Every request counted.
    pub fn requests(&self) -> usize {
        self.manifest_get + self.manifest_head + self.blob_get + self.blob_head + self.referrers + self.other
    }
}

/// Copies both ways between `client` and `server`, each chunk delayed by `one_way`; the requests
/// going to the server are recorded.
async fn relay(client: TcpStream, server: TcpStream, one_way: Duration, connection: usize, stats: Arc<Stats>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut heads = HeadParser::new(connection, stats);
    let up = pipe(client_read, server_write, one_way, move |bytes| heads.feed(bytes));
    let down = pipe(server_read, client_write, one_way, |_| {});
    tokio::join!(up, down);
}

/// Reads `from` into timestamped chunks and writes each to `to` once `delay` has passed since it
/// was read; `seen` sees every chunk as it is read. Ends (shutting `to` down) when `from` does.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
    mut seen: impl FnMut(&[u8]),
) {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen(&buf[..n]);
                    if sender.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Finds the request heads in one connection's bytes to the server: a head, then as many body
/// bytes as its `Content-Length` says, then the next head. A chunked body, or a head that will
/// not parse, stops the counting on that connection.
struct HeadParser {
    connection: usize,
    stats: Arc<Stats>,
    head: Vec<u8>,
    /// Body bytes of the current request still to pass.
    body_left: u64,
    lost: bool,
}

impl HeadParser {
    fn new(connection: usize, stats: Arc<Stats>) -> HeadParser {
        HeadParser {
            connection,
            stats,
            head: Vec::new(),
            body_left: 0,
            lost: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.body_left > 0 {
                let skip = bytes.len().min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            // Only the bytes after the end of this head stay for the next round.
            let before = self.head.len();
            self.head.extend_from_slice(bytes);
            let Some(end) = find(&self.head, b"\r\n\r\n") else {
                self.lost = self.head.len() > MAX_HEAD_BYTES;
                return;
            };
            let used = end + 4 - before;
            bytes = &bytes[used..];
            let head = std::mem::take(&mut self.head);
            self.take_head(&head[..end]);
        }
    }

    fn take_head(&mut self, head: &[u8]) {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(path)) = (request_line.next(), request_line.next()) else {
            self.lost = true;
            return;
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                self.body_left = value.parse().unwrap_or(0);
            } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                self.lost = true;
            }
        }
        let request = Request {
            method: method.to_string(),
            path: path.to_string(),
            connection: self.connection,
        };
        self.stats
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: &str, path: &str) -> Kind {
        Request {
            method: method.into(),
            path: path.into(),
            connection: 1,
        }
        .kind()
    }

    #[test]
    fn requests_are_told_apart_by_method_and_the_end_of_their_path() {
        assert_eq!(kind("GET", "/v2/a/b/manifests/v1"), Kind::ManifestGet);
        assert_eq!(kind("HEAD", "/v2/a/manifests/sha256:00?ns=x"), Kind::ManifestHead);
        assert_eq!(kind("GET", "/v2/a/blobs/sha256:00"), Kind::BlobGet);
        assert_eq!(kind("GET", "/v2/a/referrers/sha256:00"), Kind::Referrers);
        assert_eq!(kind("GET", "/v2/"), Kind::Other);
    }

    #[test]
    fn heads_split_across_chunks_and_bodies_are_skipped() {
        let stats = Arc::new(Stats::default());
        let mut parser = HeadParser::new(1, stats.clone());
        parser.feed(b"GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r");
        parser
            .feed(b"\n\r\nPUT /v2/a/blobs/uploads/1 HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET HEAD /x HTTP/1.1\r\n\r\n");
        let seen: Vec<String> = stats
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.method.clone())
            .collect();
        assert_eq!(seen, ["GET", "PUT", "HEAD"]);
    }
}
