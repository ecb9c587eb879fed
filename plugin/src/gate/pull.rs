//! Pulling exactly what was admitted, and giving a verified image kubelet's tag.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use pullgate_proto::cri::{PullImageRequest, PullImageResponse};
use tonic::Status;

use super::{admitted::ImageKey, Gate};
use crate::{
    admission::Admission,
    cri::{UnaryCall, UnaryReply},
    prefetch,
    verify::Verified,
};

/// The pod annotation through which containerd 1.7 lets a pull choose a runtime handler's
/// snapshotter: such a pull may need an unpack the image does not have yet.
const RUNTIME_HANDLER_ANNOTATION: &str = "io.containerd.cri.runtime-handler";

/// How long tagging a pulled image, and the CRI plugin seeing the tag, may take.
const TAG_TIMEOUT: Duration = Duration::from_secs(5);

// === impl Gate: the pull ===

impl Gate {
    /// Pulls what `admission` allows (the verified digest, or kubelet's request as sent) and
    /// names a verified image with kubelet's tag. A verified pull also returns the
    /// (repository, image id, manifest digest) to admit once it is recorded.
    pub(super) async fn pull(
        &self,
        call: &UnaryCall,
        admission: Admission,
    ) -> Result<(UnaryReply, Option<(ImageKey, String)>), Status> {
        let (reply, image_id) = self.upstream.pull(call, &admission).await?;
        let Admission::Verified(verified) = admission else {
            return Ok((reply, None));
        };
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
        let digest = verified.digest().to_string();
        Ok((reply, Some(((verified.reference().repository(), image_id), digest))))
    }

    /// A repeat pull by tag of what containerd already holds, answered without asking
    /// containerd to pull again: kubelet's tag was just resolved (with this pull's credentials,
    /// or the same ones within `resolveTTL`) to the digest `verified` names, containerd's tag
    /// already points at that manifest, and an earlier pull through pullgate of that manifest
    /// under this very rule and policy went through containerd's CRI pull (it is `admitted`),
    /// and all the content that pull fetched is still there (containerd's CRI unpacks from it
    /// when a snapshot is missing). containerd's pull would make one more request to the
    /// registry, for the digest just resolved, and change nothing. `None` whenever any of that
    /// is not so, or cannot be read: then containerd pulls, as for any other.
    ///
    /// A pull that names a runtime handler is always sent on: containerd may unpack the image
    /// for that handler's snapshotter, which the earlier pull may not have done.
    pub(super) async fn already_pulled(
        &self,
        call: &UnaryCall,
        request: &PullImageRequest,
        verified: &Verified,
        generation: &str,
        rule: &str,
    ) -> Option<(UnaryReply, (ImageKey, String))> {
        let reference = verified.reference();
        let tag = reference.tagged().filter(|_| reference.digest().is_none())?;
        let handler = request.image.as_ref().is_some_and(|i| !i.runtime_handler.is_empty())
            || request
                .sandbox_config
                .as_ref()
                .is_some_and(|s| s.annotations.contains_key(RUNTIME_HANDLER_ANNOTATION));
        if handler {
            return None;
        }
        let digest = verified.digest().to_string();
        let (target, image_id) = tokio::join!(
            self.containerd.target_digest(&tag),
            self.upstream.image_id_of(call, &tag)
        );
        let (Ok(Some(target)), Ok(Some(image_id))) = (target, image_id) else {
            return None;
        };
        let repository = reference.repository();
        if target != digest
            || !self
                .admitted
                .contains(&repository, &image_id, std::slice::from_ref(&digest), generation, rule)
        {
            return None;
        }
        // Content removed since (by hand, `discard_unpacked_layers`, another snapshotter's
        // pull): containerd's pull would fetch it again, so it pulls.
        if !prefetch::is_whole(self.containerd.content(), &digest)
            .await
            .unwrap_or(false)
        {
            return None;
        }
        let message = PullImageResponse {
            image_ref: image_id.clone(),
        }
        .encode_to_vec();
        let reply = UnaryReply::ok(Bytes::from(message));
        Some((reply, ((repository, image_id), digest)))
    }

    /// Gives the pinned image kubelet's tag, then waits until containerd's CRI plugin, which
    /// learns new names from image events, answers for it, so kubelet's next `ImageStatus` by
    /// tag finds the image.
    async fn tag(&self, call: &UnaryCall, verified: &Verified, tag: &str, image_id: &str) -> Result<(), Status> {
        let tag_names_image = async || -> Result<bool, Status> {
            Ok(self.upstream.image_id_of(call, tag).await?.as_deref() == Some(image_id))
        };
        // A repeat pull: the tag already names this manifest. Asked by digest, not by image id:
        // artifacts with the same config share an id, and the tag may name another of them.
        let verified_digest = verified.digest().to_string();
        let tagged = self.containerd.target_digest(tag).await.map_err(|s| {
            Status::unavailable(format!(
                "pulled {} but could not read its tag {tag}: {}",
                verified.pinned(),
                s.message()
            ))
        })?;
        if tagged.as_deref() == Some(verified_digest.as_str()) && tag_names_image().await? {
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
