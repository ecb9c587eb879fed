//! A blob read as it arrives, for a caller that passes it on (into containerd's content store)
//! without holding it: the one registry read that is not gathered into memory.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::{unavailable, Need, RegistryError, Session};
use crate::reference::Digest;

/// A blob's body on its way from the registry. Its digest is not checked here: the reader's
/// destination checks it (containerd's commit with the expected digest).
pub struct BlobStream {
    response: reqwest::Response,
    url: String,
    /// How long the registry may send nothing before the blob is given up.
    idle: Duration,
}

// === impl Session: streamed blobs ===

impl Session<'_> {
    /// This session with every request, body included, bounded by `timeout` instead of
    /// `verifyTimeout`: a layer may take longer than a signature.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Starts fetching blob `digest` from the hosts that may pull it, in order, as
    /// [`Session::blob`] does, without reading its body.
    pub async fn blob_stream(&self, digest: &Digest, idle: Duration) -> Result<BlobStream, RegistryError> {
        let tail = format!("blobs/{digest}");
        let Some((response, url)) = self
            .ask(Method::GET, Need::Pull, &tail, None, &[StatusCode::NOT_FOUND])
            .await?
        else {
            return Err(RegistryError::NotFound(format!(
                "{}/{}/{tail}: blob not found",
                self.registry, self.repository
            )));
        };
        Ok(BlobStream { response, url, idle })
    }
}

// === impl BlobStream ===

impl BlobStream {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        match tokio::time::timeout(self.idle, self.response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| unavailable(&self.url, &e)),
            Err(_) => Err(RegistryError::Unavailable(format!(
                "{}: nothing received for {:?}",
                self.url, self.idle
            ))),
        }
    }

    /// The length the registry announced, if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.response.content_length()
    }
}
