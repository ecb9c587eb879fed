//! Counts each CRI call by method and the gRPC status code its caller got
//! (`pullgate_upstream_requests_total`).
//!
//! The status is in the response headers when pullgate or containerd answered with a status
//! alone, and otherwise in the trailers after the last message, so the count is taken when the
//! body has been sent. A body that ends without a status counts as `Internal` (what gRPC
//! clients report for it), one dropped before its end (the caller went away) as `Canceled`.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Frame, SizeHint};
use tonic::body::Body;

use super::IMAGE_SERVICES;
use crate::metrics::Metrics;

/// The ImageService methods counted by name; any other path is `other`.
const METHODS: [&str; 6] = [
    "ListImages",
    "StreamImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// gRPC status code names as gRPC's Go implementation and Prometheus' gRPC metrics spell them,
/// by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The `method` label of a call to `path` (`/runtime.v1.ImageService/PullImage` is
/// `PullImage`); `other` for anything else, so callers cannot add series.
pub fn method_label(path: &str) -> &'static str {
    let known = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, _)| IMAGE_SERVICES.contains(service))
        .and_then(|(_, method)| METHODS.iter().find(|m| **m == method));
    known.copied().unwrap_or("other")
}

/// `response`, counted in `metrics` under `method` once its gRPC status is known.
pub fn count(response: Response<Body>, method: &'static str, metrics: Arc<Metrics>) -> Response<Body> {
    let tally = Tally { metrics, method };
    if let Some(code) = status_code(response.headers()) {
        tally.record(code);
        return response;
    }
    response.map(|body| {
        Body::new(Counted {
            body,
            tally: Some(tally),
        })
    })
}

/// The name of the code in a `grpc-status` field; codes gRPC does not define are `Unknown`, as
/// clients read them.
fn status_code(fields: &HeaderMap) -> Option<&'static str> {
    let value = fields.get("grpc-status")?;
    let code = value.to_str().ok().and_then(|v| v.parse::<usize>().ok());
    Some(code.and_then(|c| CODE_NAMES.get(c)).copied().unwrap_or("Unknown"))
}

/// Where and under which method one call is counted, once.
struct Tally {
    metrics: Arc<Metrics>,
    method: &'static str,
}

impl Tally {
    fn record(self, code: &str) {
        self.metrics.upstream_request(self.method, code);
    }
}

/// A response body that counts its call when its trailers pass, it ends, or it is dropped.
struct Counted {
    body: Body,
    tally: Option<Tally>,
}

impl Counted {
    fn record(&mut self, code: &str) {
        if let Some(tally) = self.tally.take() {
            tally.record(code);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().map(|t| status_code(t).unwrap_or("Internal")) {
                    self.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.record("Internal"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.record("Canceled");
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::cri::grpc::UnaryBody;

    fn counted_lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("pullgate_upstream_requests_total{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn methods_are_named_only_for_the_image_service() {
        assert_eq!(method_label("/runtime.v1.ImageService/PullImage"), "PullImage");
        assert_eq!(
            method_label("/runtime.v1alpha2.ImageService/ImageStatus"),
            "ImageStatus"
        );
        assert_eq!(method_label("/runtime.v1.ImageService/Nonsense"), "other");
        assert_eq!(method_label("/runtime.v1.RuntimeService/Version"), "other");
        assert_eq!(method_label("/x.ImageService/PullImage"), "other");
        assert_eq!(method_label("PullImage"), "other");
        assert_eq!(method_label("/"), "other");
    }

    #[test]
    fn codes_are_named_as_grpc_go_names_them() {
        let code = |v: &str| {
            let mut fields = HeaderMap::new();
            fields.insert("grpc-status", v.parse().unwrap());
            status_code(&fields)
        };
        assert_eq!(code("0"), Some("OK"));
        assert_eq!(code("2"), Some("Unknown"));
        assert_eq!(code("14"), Some("Unavailable"));
        assert_eq!(code("16"), Some("Unauthenticated"));
        assert_eq!(code("17"), Some("Unknown"));
        assert_eq!(code("x"), Some("Unknown"));
        assert_eq!(status_code(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_status_alone_is_counted_at_once_and_trailers_when_they_pass() {
        let metrics = Arc::new(Metrics::new());
        let denied = tonic::Status::unknown("SignatureValidationFailed: no").into_http();
        drop(count(denied, "PullImage", metrics.clone()));

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = Body::new(UnaryBody::new(Bytes::from_static(b"\0\0\0\0\0"), Some(trailers)));
        let answered = count(Response::new(body), "PullImage", metrics.clone());
        assert_eq!(counted_lines(&metrics).len(), 1, "not before the trailers are sent");
        answered.into_body().collect().await.unwrap();

        let unanswered = Body::new(UnaryBody::new(Bytes::from_static(b"\0\0\0\0\0"), None));
        drop(count(Response::new(unanswered), "ListImages", metrics.clone()));
        let ended = Body::new(UnaryBody::new(Bytes::from_static(b"\0\0\0\0\0"), None));
        count(Response::new(ended), "ImageFsInfo", metrics.clone())
            .into_body()
            .collect()
            .await
            .unwrap();

        assert_eq!(
            counted_lines(&metrics),
            [
                "pullgate_upstream_requests_total{method=\"ImageFsInfo\",code=\"Internal\"} 1",
                "pullgate_upstream_requests_total{method=\"ListImages\",code=\"Canceled\"} 1",
                "pullgate_upstream_requests_total{method=\"PullImage\",code=\"OK\"} 1",
                "pullgate_upstream_requests_total{method=\"PullImage\",code=\"Unknown\"} 1",
            ]
        );
    }
}
