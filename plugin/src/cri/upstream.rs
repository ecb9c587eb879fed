//! The connection to containerd's CRI socket: raw forwarding of whole calls, and unary calls
//! whose one message pullgate reads or rewrites.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{body::Body, transport::Channel, Status};
use tower::{Service, ServiceExt};

use prost::Message;
use pullgate_proto::cri::{
    runtime_service_client::RuntimeServiceClient, Image, ImageSpec, ImageStatusRequest, ImageStatusResponse,
    PullImageRequest, PullImageResponse, VersionRequest, VersionResponse,
};

use super::grpc;
use crate::admission::Admission;

/// The CRI API version pullgate speaks, as `Version` requests name it.
const CRI_VERSION: &str = "v1";

/// Upstream responses larger than this are not read into memory (ImageStatus answers are tiny).
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// containerd, reached over its unix socket. Reconnects by itself after containerd restarts.
#[derive(Clone)]
pub struct Upstream {
    /// Calls forwarded unchanged, and containerd's own API.
    channel: Channel,
    /// The unary calls pullgate reads.
    unary: Arc<UnaryConnection>,
    path: PathBuf,
}

/// One HTTP/2 connection to containerd for the unary calls pullgate reads, each sent from the
/// caller's own task: tonic's `Channel` hands every request to a buffer task first, one more
/// task hop each way on the path of every `ImageStatus`. Made on first use, and again once it
/// closed (containerd restarted).
struct UnaryConnection {
    path: PathBuf,
    sender: tokio::sync::Mutex<Option<SendRequest<Body>>>,
}

/// A unary call as kubelet sent it: the HTTP/2 request head and the one message.
pub struct UnaryCall {
    pub head: http::request::Parts,
    pub message: Bytes,
}

/// A successful unary reply as containerd sent it.
pub struct UnaryReply {
    pub head: http::response::Parts,
    pub message: Bytes,
    pub trailers: Option<HeaderMap>,
    /// The body as containerd framed it, sent back as it is while `message` is unchanged.
    framed: Option<Bytes>,
}

impl Upstream {
    /// A channel that connects on first use, so pullgate can start before containerd.
    pub fn connect_lazy(path: &Path) -> Self {
        Self {
            channel: lazy_channel(path),
            unary: Arc::new(UnaryConnection {
                path: path.to_path_buf(),
                sender: tokio::sync::Mutex::new(None),
            }),
            path: path.to_path_buf(),
        }
    }

    /// A channel to the same socket on a connection of its own, for containerd's own API and
    /// its event stream. Not the forwarding channel: a caller that leaves a forwarded reply
    /// unread holds up that connection (its HTTP/2 flow-control window fills), and with it
    /// anything else it carries — the image events `ImageStatus` relies on among them.
    pub fn own_channel(&self) -> Channel {
        lazy_channel(&self.path)
    }

    /// Asks containerd's CRI plugin for its version: whether it answers, and what it runs.
    pub async fn version(&self, timeout: std::time::Duration) -> Result<VersionResponse, Status> {
        let mut client = RuntimeServiceClient::new(self.channel.clone());
        let call = client.version(VersionRequest {
            version: CRI_VERSION.to_string(),
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "containerd at {} did not answer Version within {timeout:?}",
                self.path.display()
            ))),
        }
    }

    /// Forwards a call unchanged, streaming both ways, and returns containerd's answer unchanged.
    pub async fn forward<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        match self.send(request.map(Body::new)).await {
            Ok(response) => response,
            Err(status) => status.into_http(),
        }
    }

    /// Sends kubelet's `PullImage` as `admission` allows: a verified image pinned to the digest
    /// that was verified, a waived one as kubelet sent it. Returns containerd's reply and the
    /// id of the image it pulled.
    pub async fn pull(&self, call: &UnaryCall, admission: &Admission) -> Result<(UnaryReply, String), Status> {
        let message = match admission {
            Admission::Verified(verified) => with_image(&call.message, verified.pinned()),
            Admission::Waived(_) => call.message.clone(),
        };
        let reply = self.unary(call, message).await?;
        let image_id = PullImageResponse::decode(reply.message.clone())
            .map_err(|e| Status::internal(format!("containerd's PullImageResponse: {e}")))?
            .image_ref;
        Ok((reply, image_id))
    }

    /// Forwards kubelet's `ImageStatus` as sent; returns containerd's reply and the image it
    /// found, if any.
    pub async fn image_status(&self, call: &UnaryCall) -> Result<(UnaryReply, Option<Image>), Status> {
        let reply = self.unary(call, call.message.clone()).await?;
        let answer = ImageStatusResponse::decode(reply.message.clone())
            .map_err(|e| Status::internal(format!("containerd's ImageStatusResponse: {e}")))?;
        Ok((reply, answer.image))
    }

    /// The id of the image containerd's CRI plugin finds by `name`, asked with the head of
    /// kubelet's `call` (its deadline and metadata).
    pub async fn image_id_of(&self, call: &UnaryCall, name: &str) -> Result<Option<String>, Status> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let mut head = call.head.clone();
        head.uri = http::Uri::from_static("/runtime.v1.ImageService/ImageStatus");
        let status_call = UnaryCall {
            head,
            message: Bytes::from(request.encode_to_vec()),
        };
        let reply = self.unary(&status_call, status_call.message.clone()).await?;
        let answer = ImageStatusResponse::decode(reply.message).ok().and_then(|r| r.image);
        Ok(answer.map(|image| image.id))
    }

    /// Sends `message` with the head of `call` and reads the one-message reply. A gRPC error
    /// from containerd comes back as `Err`, with its code and message.
    async fn unary(&self, call: &UnaryCall, message: Bytes) -> Result<UnaryReply, Status> {
        let mut request = Request::new(Body::new(grpc::UnaryBody::new(grpc::frame(&message), None)));
        *request.method_mut() = call.head.method.clone();
        // The authority is containerd's socket's, whatever kubelet wrote (as tonic's channel does).
        let path = call.head.uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = format!("http://containerd.sock{path}")
            .parse()
            .map_err(|_| Status::invalid_argument(format!("a call to {path:?}")))?;
        *request.headers_mut() = call.head.headers.clone();
        // The body may have changed length; gRPC does not need the header.
        request.headers_mut().remove(http::header::CONTENT_LENGTH);

        let mut sender = self.unary.sender().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unavailable(&e))?
            .map(Body::new);
        if let Some(status) = Status::from_header_map(response.headers()) {
            if status.code() != tonic::Code::Ok {
                return Err(status);
            }
        }
        let (head, body) = response.into_parts();
        let collected = http_body_util::Limited::new(body, MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| Status::unavailable(format!("reading containerd's reply: {e}")))?;
        let trailers = collected.trailers().cloned();
        if let Some(status) = trailers.as_ref().and_then(Status::from_header_map) {
            if status.code() != tonic::Code::Ok {
                return Err(status);
            }
        }
        let framed = collected.to_bytes();
        // A slice of `framed`, not a copy.
        let message = grpc::unframe(framed.clone(), "containerd's reply")?;
        Ok(UnaryReply {
            head,
            message,
            trailers,
            framed: Some(framed),
        })
    }

    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        let mut channel = self.channel.clone();
        channel.ready().await.map_err(|e| self.unavailable(&e))?;
        channel.call(request).await.map_err(|e| self.unavailable(&e))
    }

    fn unavailable(&self, error: &(dyn std::error::Error + 'static)) -> Status {
        unavailable(&self.path, error)
    }
}

// === impl UnaryConnection ===

impl UnaryConnection {
    /// The open connection, or a new one when there is none or it closed.
    async fn sender(&self) -> Result<SendRequest<Body>, Status> {
        let mut current = self.sender.lock().await;
        if let Some(sender) = current.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|e| unavailable(&self.path, &e))?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(&self.path, &e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection to containerd ended");
            }
        });
        *current = Some(sender.clone());
        Ok(sender)
    }
}

/// containerd at `path` could not be reached, and why.
fn unavailable(path: &Path, error: &(dyn std::error::Error + 'static)) -> Status {
    Status::unavailable(format!(
        "containerd at {}: {}",
        path.display(),
        crate::error_chain(error)
    ))
}

/// A channel to containerd's socket that connects on first use and again after a loss.
fn lazy_channel(path: &Path) -> Channel {
    let socket = path.to_path_buf();
    let connector = tower::service_fn(move |_: http::Uri| {
        let socket = socket.clone();
        async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
    });
    // The authority is never resolved: every connection goes to the socket above.
    tonic::transport::Endpoint::from_static("http://containerd.sock").connect_with_connector_lazy(connector)
}

impl UnaryReply {
    /// A successful reply of pullgate's own, with `message`, as containerd would send it.
    pub fn ok(message: Bytes) -> Self {
        let (head, ()) = Response::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Self {
            head,
            message,
            framed: None,
            trailers: Some(trailers),
        }
    }

    /// The reply with its message replaced, everything else as containerd sent it.
    pub fn with_message(self, message: Bytes) -> Self {
        Self {
            message,
            framed: None,
            ..self
        }
    }

    pub fn into_response(mut self) -> Response<Body> {
        self.head.headers.remove(http::header::CONTENT_LENGTH);
        let framed = self.framed.unwrap_or_else(|| grpc::frame(&self.message));
        let body = Body::new(grpc::UnaryBody::new(framed, self.trailers));
        Response::from_parts(self.head, body)
    }
}

/// The `PullImageRequest` kubelet sent, with its image replaced by `image`.
///
/// Protobuf merges a repeated embedded message field into the first, and the last `image`
/// string wins, so appending `image { image: "<repo>@<digest>" }` changes that one string
/// and keeps every other byte kubelet sent, including fields pullgate does not know.
pub(super) fn with_image(message: &Bytes, image: String) -> Bytes {
    let spec = ImageSpec {
        image,
        ..Default::default()
    };
    let patch = PullImageRequest {
        image: Some(spec),
        auth: None,
        sandbox_config: None,
    }
    .encode_to_vec();
    let mut pinned = Vec::with_capacity(message.len() + patch.len());
    pinned.extend_from_slice(message);
    pinned.extend_from_slice(&patch);
    Bytes::from(pinned)
}
