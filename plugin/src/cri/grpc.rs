//! gRPC message framing over HTTP/2, for the two unary calls pullgate reads.
//!
//! A gRPC body is a sequence of messages, each a 1-byte compressed flag, a 4-byte big-endian
//! length and the protobuf bytes. Unary calls carry exactly one.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::Status;

/// The largest unary message pullgate reads, as gRPC's default receive limit.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Reads a unary gRPC body and returns its one message, uncompressed.
pub async fn read_message<B>(body: B, what: &str) -> Result<Bytes, Status>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, MAX_MESSAGE_BYTES + 5);
    let collected = limited
        .collect()
        .await
        .map_err(|e| Status::resource_exhausted(format!("{what}: reading the message: {e}")))?;
    unframe(collected.to_bytes(), what)
}

/// Splits exactly one uncompressed message out of a gRPC body.
pub fn unframe(mut body: Bytes, what: &str) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::invalid_argument(format!(
            "{what}: expected one gRPC message, got {} bytes",
            body.len()
        )));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(format!(
            "{what}: compressed messages are not supported"
        )));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(Status::invalid_argument(format!(
            "{what}: expected one gRPC message of {len} bytes"
        )));
    }
    Ok(body.split_off(5))
}

/// Frames one message for the wire.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// A body of one data frame and then optional trailers: a unary gRPC message as sent.
pub struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl UnaryBody {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: Some(data),
            trailers,
        }
    }
}

impl Body for UnaryBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(framed, "t").unwrap(), Bytes::from_static(b"hello"));
    }

    #[test]
    fn refuses_compressed_truncated_and_trailing() {
        assert_eq!(
            unframe(Bytes::from_static(&[1, 0, 0, 0, 0]), "t").unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), "t").is_err());
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 0, 0]), "t").is_err());
        assert!(unframe(Bytes::from_static(&[0, 0]), "t").is_err());
    }
}
