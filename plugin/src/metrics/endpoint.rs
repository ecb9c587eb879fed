//! The HTTP endpoint on `metrics.listen`: `GET /metrics`, `/healthz` and `/readyz`, and 404 for
//! anything else.
//!
//! Whoever can reach the port can talk to it, so it is kept small: HTTP/1 only, one request per
//! connection, a bounded request head read within a few seconds, no request body ever read, a
//! bound on each connection's life and on how many are open at once.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::Metrics;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// How long a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may live, request and answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest read buffer hyper allows; it bounds the request head.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// Request header fields allowed.
const MAX_HEADERS: usize = 32;

/// Whether pullgate can serve a pull now, as `/readyz` reports it: set by the readiness checks
/// `pullgate serve` runs (containerd answering, the audit log writable; the policy and trust
/// material were loaded before anything was served).
pub struct Readiness {
    /// `None` while ready; otherwise `/readyz`'s one-line answer.
    not_ready: Mutex<Option<String>>,
}

// === impl Readiness ===

impl Readiness {
    /// Not ready yet, for `reason`.
    pub fn new(reason: String) -> Self {
        Self {
            not_ready: Mutex::new(Some(one_line(reason))),
        }
    }

    /// Ready (`Ok`), or not for the reason given. Returns whether that changed anything.
    pub fn set(&self, state: Result<(), String>) -> bool {
        let new = state.err().map(one_line);
        let mut not_ready = self.not_ready.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = *not_ready != new;
        *not_ready = new;
        changed
    }

    /// `Ok` while ready, else why not.
    pub fn get(&self) -> Result<(), String> {
        match &*self.not_ready.lock().unwrap_or_else(PoisonError::into_inner) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

/// `/readyz` answers with one line, whatever a reason's source put in it.
fn one_line(reason: String) -> String {
    if reason.contains(['\n', '\r']) {
        reason.replace(['\n', '\r'], " ")
    } else {
        reason
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = answer(&request, &metrics, &readiness);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "metrics: connection ended with an error"),
                Err(_) => tracing::debug!("metrics: connection timed out"),
            }
            drop(slot);
        });
    }
}

/// The answer to one request; its body, if any, is never read.
pub(super) fn answer<B>(request: &Request<B>, metrics: &Metrics, readiness: &Readiness) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(super::CONTENT_TYPE),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness.get() {
            Ok(()) => plain(StatusCode::OK, "ok\n".into()),
            Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        _ => plain(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
