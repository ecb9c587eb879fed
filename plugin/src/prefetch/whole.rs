//! Whether containerd already holds everything its pull of an image would fetch: a repeat pull
//! answered without containerd must leave kubelet an image that containerd can create a
//! container from, as containerd's own pull would have made sure of.

use futures_util::future::try_join_all;
use tonic::Status;

use super::manifest::{Descriptor, Document};
use crate::{containerd::content::ContentStore, registry::MAX_MANIFEST_BYTES};

/// Whether containerd's content store has the manifest `digest` (for an index, the manifest
/// containerd's pull picks for this node too) and every config and layer blob its pull would
/// fetch. Anything unreadable, or not plainly a manifest with a config, is not whole.
pub async fn is_whole(store: &ContentStore, digest: &str) -> Result<bool, Status> {
    let Some(document) = read(store, digest).await? else {
        return Ok(false);
    };
    let manifest = match document.is_index() {
        false => document,
        true => {
            let Some(chosen) = document.for_this_platform() else {
                return Ok(false);
            };
            match read(store, &chosen.digest).await? {
                Some(manifest) if !manifest.is_index() => manifest,
                _ => return Ok(false),
            }
        }
    };
    // An index whose JSON does not say it is one reads as a manifest without a config.
    if manifest.config.is_none() {
        return Ok(false);
    }
    let blobs = manifest.children().into_iter().filter(Descriptor::is_fetched);
    let present = try_join_all(blobs.map(|blob| async move { store.has(&blob.digest).await })).await?;
    Ok(present.into_iter().all(|has| has))
}

/// The manifest or index `digest` as containerd stored it; its media type is the one its JSON
/// names (containerd keeps the served one only in the image record).
async fn read(store: &ContentStore, digest: &str) -> Result<Option<Document>, Status> {
    let Some(bytes) = store.read(digest, MAX_MANIFEST_BYTES).await? else {
        return Ok(None);
    };
    Ok(Document::parse(&bytes, ""))
}
