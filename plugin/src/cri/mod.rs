//! The CRI ImageService endpoint kubelet talks to.
//!
//! Every ImageService call is forwarded to containerd as raw HTTP/2 and gRPC bytes, so fields
//! pullgate does not know survive. Only `PullImage` and `ImageStatus` are read, from a copy, and
//! handed to the gate. No other service is served: the socket shares containerd's, and its
//! RuntimeService or containerd's own API (`ctr images pull`) would be a way around the gate.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tonic::{body::Body, Status};

use crate::metrics::Metrics;

mod authority;
mod counted;
pub mod grpc;
pub mod upstream;

pub use upstream::{UnaryCall, UnaryReply, Upstream};

/// What decides the calls pullgate reads, and hears of refused peers: the gate. The endpoint
/// knows it only through this, so the arrow between them points one way.
pub trait ImageGate: Send + Sync + 'static {
    /// `PullImage`: judged, and pulled as admitted.
    fn pull_image(&self, call: UnaryCall) -> impl Future<Output = Result<UnaryReply, Status>> + Send;
    /// `ImageStatus`: shown only as the policy in force allows.
    fn image_status(&self, call: UnaryCall) -> impl Future<Output = Result<UnaryReply, Status>> + Send;
    /// A connection from `uid`, not in `socket.allowedUids`, was refused.
    fn refuse_peer(&self, uid: Option<u32>) -> impl Future<Output = ()> + Send;
    /// containerd, for the calls that are forwarded as they are.
    fn upstream(&self) -> &Upstream;
    fn metrics(&self) -> &Arc<Metrics>;
}

/// The services pullgate serves: the CRI ImageService, in both versions containerd speaks.
pub const IMAGE_SERVICES: [&str; 2] = ["runtime.v1.ImageService", "runtime.v1alpha2.ImageService"];

// containerd 1.x still serves the older v1alpha2 API, whose messages have the same field numbers:
// both versions go through the gate, or v1alpha2 would be a way around it. containerd 2.x removed
// it; what the gate forwards there gets containerd's own UNIMPLEMENTED.
const PULL_IMAGE: [&str; 2] = [
    "/runtime.v1.ImageService/PullImage",
    "/runtime.v1alpha2.ImageService/PullImage",
];
const IMAGE_STATUS: [&str; 2] = [
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1alpha2.ImageService/ImageStatus",
];

/// How long connections are still served as usual after SIGTERM, before they are told to go
/// away.
const LINGER: Duration = Duration::from_millis(500);

/// How long in-flight calls may take to finish after SIGTERM: with LINGER, well within the
/// unit's `TimeoutStopSec=30s`, so the records of calls cut off are written before systemd
/// would kill pullgate.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a refused peer's connection is served, long enough to read its PERMISSION_DENIED,
/// before it is closed; and how many may be open at once. Past that a refused connection is
/// closed unanswered (it is still recorded), so peers that are not allowed cannot hold the
/// descriptors kubelet's connections and registry requests need.
const REFUSED_LIFETIME: Duration = Duration::from_secs(1);
const MAX_REFUSED_CONNECTIONS: usize = 64;

/// Serves kubelet's connections until `shutdown` resolves, then drains in-flight calls.
pub async fn serve<G: ImageGate>(
    listener: UnixListener,
    gate: Arc<G>,
    allowed_uids: Vec<u32>,
    shutdown: impl std::future::Future,
) {
    let graceful = GracefulShutdown::new();
    let refused = Arc::new(Semaphore::new(MAX_REFUSED_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(stream, gate.clone(), &allowed_uids, &refused, &graceful),
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // A connection accepted just before the signal may not have sent its first request yet;
    // a GOAWAY now would refuse it. Existing connections keep being served for a moment, then
    // are told to go away and drained. New ones wait in the socket's backlog (for the next
    // pullgate, under socket activation).
    tokio::time::sleep(LINGER).await;
    tracing::info!("draining in-flight calls");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "calls still in flight after the drain timeout");
    }
}

/// Serves one kubelet connection on its own task. A peer whose uid is not allowed gets
/// `PERMISSION_DENIED` for every call for [`REFUSED_LIFETIME`], so the refusal is visible to it,
/// in our log and in the audit log (at most one record per uid per second, counting its
/// connections).
fn serve_connection<G: ImageGate>(
    stream: UnixStream,
    gate: Arc<G>,
    allowed_uids: &[u32],
    refused: &Arc<Semaphore>,
    graceful: &GracefulShutdown,
) {
    let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
    let allowed = peer_uid.is_some_and(|uid| allowed_uids.contains(&uid));
    let mut lifetime = None;
    if !allowed {
        // Logged at WARN with its record, which the gate rate-limits; here only at DEBUG.
        tracing::debug!(?peer_uid, "refusing calls from a peer not in socket.allowedUids");
        let recorder = gate.clone();
        tokio::spawn(async move { recorder.refuse_peer(peer_uid).await });
        match refused.clone().try_acquire_owned() {
            Ok(permit) => lifetime = Some(permit),
            // Dropping the stream closes it.
            Err(_) => return,
        }
    }
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            let method = counted::method_label(request.uri().path());
            let response = if allowed {
                route(gate.as_ref(), request).await
            } else {
                let peer = peer_uid.map_or_else(
                    || "a peer whose uid cannot be read".to_string(),
                    |uid| format!("uid {uid}"),
                );
                Status::permission_denied(format!("{peer} is not in pullgate's socket.allowedUids")).into_http()
            };
            Ok::<_, Infallible>(counted::count(response, method, gate.metrics().clone()))
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_frame_size(authority::MAX_FRAME_SIZE)
        .header_table_size(authority::HEADER_TABLE_SIZE)
        .serve_connection(TokioIo::new(authority::AuthorityFix::new(stream)), service);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        let ended = match lifetime {
            None => watched.await,
            Some(_permit) => match tokio::time::timeout(REFUSED_LIFETIME, watched).await {
                Ok(ended) => ended,
                Err(_) => return,
            },
        };
        if let Err(error) = ended {
            tracing::debug!(%error, "connection ended with an error");
        }
    });
}

async fn route<G: ImageGate>(gate: &G, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    match path {
        _ if PULL_IMAGE.contains(&path) => unary(request, "PullImageRequest", |call| gate.pull_image(call)).await,
        _ if IMAGE_STATUS.contains(&path) => unary(request, "ImageStatusRequest", |call| gate.image_status(call)).await,
        _ if image_service(path) && request.uri().query().is_none() => gate.upstream().forward(request).await,
        _ => {
            let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
            Status::unimplemented(format!(
                "unknown service {service}: pullgate serves only the CRI ImageService; the runtime endpoint is containerd's own socket"
            ))
            .into_http()
        }
    }
}

/// Whether `path` names a method of the CRI ImageService, known or not. The method must be a
/// plain name: a path containerd might read as another service's never passes.
fn image_service(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, method)| {
            IMAGE_SERVICES.contains(&service)
                && !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Reads the one message of a unary call and answers with what `handler` makes of it.
async fn unary<F>(request: Request<Incoming>, what: &str, handler: impl FnOnce(UnaryCall) -> F) -> Response<Body>
where
    F: Future<Output = Result<UnaryReply, Status>>,
{
    let (head, body) = request.into_parts();
    if let Some(encoding) = head.headers.get("grpc-encoding").filter(|e| *e != "identity") {
        return Status::unimplemented(format!("{what}: grpc-encoding {encoding:?} is not supported")).into_http();
    }
    let message = match grpc::read_message(body, what).await {
        Ok(m) => m,
        Err(status) => return status.into_http(),
    };
    match handler(UnaryCall { head, message }).await {
        Ok(reply) => reply.into_response(),
        Err(status) => status.into_http(),
    }
}

#[cfg(test)]
mod tests;
