//! Pulling exactly what was admitted, and giving a verified image kubelet's tag.

use std::time::Duration;

use tonic::Status;

use super::{admitted::ImageKey, Gate};
use crate::{
    admission::Admission,
    cri::{UnaryCall, UnaryReply},
    verify::Verified,
};

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
