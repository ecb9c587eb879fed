//! Pulling exactly the verified digest, and giving it kubelet's tag.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use pullgate_proto::cri::{ImageSpec, ImageStatusRequest, ImageStatusResponse, PullImageRequest, PullImageResponse};
use tonic::Status;

use super::{status::ImageKey, Admission, Gate};
use crate::{
    cri::{UnaryCall, UnaryReply},
    verify::Verified,
};

/// How long tagging a pulled image, and the CRI plugin seeing the tag, may take.
const TAG_TIMEOUT: Duration = Duration::from_secs(5);

// === impl Gate: the pull ===

impl Gate {
    /// Pulls the verified digest and names it with kubelet's tag; a waived pull goes as sent.
    /// A verified pull also returns the (repository, image id) to admit once it is recorded.
    pub(super) async fn pull(
        &self,
        call: &UnaryCall,
        admission: Admission,
    ) -> Result<(UnaryReply, Option<ImageKey>), Status> {
        let verified = match admission {
            Admission::Waived(_) => return Ok((self.upstream.unary(call, call.message.clone()).await?, None)),
            Admission::Verified(v) => v,
        };
        let reply = self.upstream.unary(call, pin(&call.message, &verified)).await?;
        let image_id = PullImageResponse::decode(reply.message.clone())
            .map_err(|e| Status::internal(format!("containerd's PullImageResponse: {e}")))?
            .image_ref;
        if let Some(tag) = verified.reference().tagged() {
            let tagging = self.tag(call, &verified, &tag, &image_id);
            match tokio::time::timeout(TAG_TIMEOUT, tagging).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "containerd did not tag {tag} within {TAG_TIMEOUT:?}"
                    )))
                }
            }
        }
        Ok((reply, Some((verified.reference().repository(), image_id))))
    }

    /// Gives the pinned image kubelet's tag, then waits until containerd's CRI plugin, which
    /// learns new names from image events, answers for it, so kubelet's next `ImageStatus` by
    /// tag finds the image.
    async fn tag(&self, call: &UnaryCall, verified: &Verified, tag: &str, image_id: &str) -> Result<(), Status> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: tag.to_string(),
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
        let tag_names_image = async || -> Result<bool, Status> {
            let reply = self.upstream.unary(&status_call, status_call.message.clone()).await?;
            let answer = ImageStatusResponse::decode(reply.message).ok().and_then(|r| r.image);
            Ok(answer.is_some_and(|i| i.id == image_id))
        };
        // A repeat pull: the tag already names this image.
        if tag_names_image().await? {
            return Ok(());
        }
        self.containerd.tag(&verified.pinned(), tag).await.map_err(|s| {
            Status::unavailable(format!(
                "pulled {} but could not tag it {tag}: {}",
                verified.pinned(),
                s.message()
            ))
        })?;
        // The CRI plugin usually sees the new name within a millisecond or two.
        let mut delay = Duration::from_millis(1);
        while !tag_names_image().await? {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The `PullImageRequest` kubelet sent, with its image replaced by the verified digest.
///
/// Protobuf merges a repeated embedded message field into the first, and the last `image`
/// string wins, so appending `image { image: "<repo>@<digest>" }` changes that one string
/// and keeps every other byte kubelet sent, including fields pullgate does not know.
fn pin(message: &Bytes, verified: &Verified) -> Bytes {
    with_image(message, verified.pinned())
}

fn with_image(message: &Bytes, image: String) -> Bytes {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pullgate_proto::cri::{AuthConfig, PodSandboxConfig, PodSandboxMetadata};

    use super::*;

    #[test]
    fn pinning_replaces_only_the_image_string() {
        let original = PullImageRequest {
            image: Some(ImageSpec {
                image: "127.0.0.1:5000/app:v1".into(),
                annotations: HashMap::from([("k".to_string(), "v".to_string())]),
                user_specified_image: "app:v1".into(),
                runtime_handler: "runc".into(),
                image_ref: String::new(),
            }),
            auth: Some(AuthConfig {
                username: "u".into(),
                password: "p".into(),
                ..Default::default()
            }),
            sandbox_config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web-0".into(),
                    namespace: "prod".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let mut bytes = original.encode_to_vec();
        // A field from a CRI version newer than pullgate's: field 77, varint 1.
        bytes.extend_from_slice(&[0xe8, 0x04, 0x01]);
        let bytes = Bytes::from(bytes);
        let pinned_ref = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));

        let pinned = with_image(&bytes, pinned_ref.clone());
        assert!(
            pinned.starts_with(&bytes),
            "every byte kubelet sent is kept, unknown fields included"
        );
        let decoded = PullImageRequest::decode(pinned).unwrap();
        let mut expected = original;
        expected.image.as_mut().unwrap().image = pinned_ref;
        assert_eq!(decoded, expected);
    }
}
