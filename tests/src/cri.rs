//! CRI ImageService clients over a unix socket: a typed one for most checks and a raw one that
//! sends and returns protobuf bytes untouched, for byte-for-byte comparisons.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use prost::bytes::{Buf, BufMut};
use pullgate_proto::cri::{
    image_service_client::ImageServiceClient, AuthConfig, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec,
    ImageStatusRequest, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
    Status,
};

/// Full gRPC method paths of the CRI ImageService (`runtime.v1`).
pub mod method {
    pub const LIST_IMAGES: &str = "/runtime.v1.ImageService/ListImages";
    pub const STREAM_IMAGES: &str = "/runtime.v1.ImageService/StreamImages";
    pub const IMAGE_STATUS: &str = "/runtime.v1.ImageService/ImageStatus";
    pub const PULL_IMAGE: &str = "/runtime.v1.ImageService/PullImage";
    pub const REMOVE_IMAGE: &str = "/runtime.v1.ImageService/RemoveImage";
    pub const IMAGE_FS_INFO: &str = "/runtime.v1.ImageService/ImageFsInfo";
}

/// The pod name [`pull_request`] puts in the sandbox config.
pub const TEST_POD: &str = "pullgate-test-pod";

/// A channel to a unix socket. It connects on first use, so a socket that does not answer shows
/// up as an `Unavailable` status of the first call.
pub fn unix_channel(socket: impl AsRef<Path>) -> Channel {
    let socket: PathBuf = socket.as_ref().to_owned();
    // The authority is never resolved: the connector ignores the URI and dials the socket.
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(move |_| {
        let socket = socket.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
    }))
}

/// A typed CRI ImageService client on `socket`.
pub fn cri_client(socket: impl AsRef<Path>) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(unix_channel(socket))
}

/// One unary call with `request` as the already-encoded request message; returns the response
/// message bytes exactly as the server sent them.
pub async fn raw_unary(socket: impl AsRef<Path>, method_path: &str, request: Vec<u8>) -> Result<Vec<u8>, Status> {
    let path = PathAndQuery::try_from(method_path)
        .map_err(|e| Status::invalid_argument(format!("{method_path:?} is not a gRPC method path: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(unix_channel(&socket));
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("{}: {e}", socket.as_ref().display())))?;
    Ok(grpc
        .unary(tonic::Request::new(request), path, RawCodec)
        .await?
        .into_inner())
}

/// `ImageFsInfo` on `socket`: the cheapest call that proves a CRI server answers.
pub async fn image_fs_info(socket: impl AsRef<Path>) -> Result<ImageFsInfoResponse, Status> {
    Ok(cri_client(socket)
        .image_fs_info(ImageFsInfoRequest {})
        .await?
        .into_inner())
}

/// A `PullImageRequest` as kubelet would send it: credentials in `auth` when given, and a pod
/// sandbox config in `namespace` when given (without one, as `crictl pull` sends it).
pub fn pull_request(image: &str, auth: Option<(&str, &str)>, namespace: Option<&str>) -> PullImageRequest {
    PullImageRequest {
        image: Some(image_spec(image)),
        auth: auth.map(|(username, password)| AuthConfig {
            username: username.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        }),
        sandbox_config: namespace.map(|namespace| PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: TEST_POD.to_owned(),
                uid: format!("{TEST_POD}-uid"),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            ..Default::default()
        }),
    }
}

/// An `ImageStatusRequest` for `image` (a tag, digest reference or image id).
pub fn image_status_request(image: &str) -> ImageStatusRequest {
    ImageStatusRequest {
        image: Some(image_spec(image)),
        verbose: false,
    }
}

pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// A codec that passes message bytes through: what is encoded is sent as is, and what is
/// decoded is the whole message as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

// === impl RawCodec ===

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut message = vec![0; src.remaining()];
        src.copy_to_slice(&mut message);
        Ok(Some(message))
    }
}
