//! containerd's content store and leases: blobs written under a lease, never an image record.
//!
//! Content written here is held only by its lease (and, once committed, by the `gc.ref` labels
//! of the manifest that names it). Deleting the lease leaves it to containerd's garbage
//! collector; a lease left behind by a crash expires by its `containerd.io/gc.expire` label.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use containerd_client::services::v1::{
    content_client::ContentClient, leases_client::LeasesClient, AbortRequest, CreateRequest, DeleteRequest,
    InfoRequest, ReadContentRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use tokio::sync::mpsc;
use tonic::{codec::Streaming, metadata::MetadataValue, transport::Channel, Code, Request, Status};

use super::NamespaceError;

/// How much of a blob one write message carries. A writer holds at most one message being
/// filled and one containerd has not yet acknowledged: memory per blob is bounded by twice this,
/// whatever the blob's size.
pub const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// containerd's content store and leases in one namespace.
#[derive(Clone)]
pub struct ContentStore {
    content: ContentClient<Channel>,
    leases: LeasesClient<Channel>,
    namespace: MetadataValue<tonic::metadata::Ascii>,
}

/// A lease held in containerd: what was written under it stays until it is deleted or expires.
/// Chosen by pullgate, so a lease whose creation was cut short can still be deleted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseId(String);

impl LeaseId {
    /// `pullgate-prefetch-<first 12 hex of the digest>-<unique>`: containerd's identifier rules
    /// (letters, digits, `-`), and an operator sees whose it is.
    pub fn for_digest(hex: &str, unique: u64) -> Self {
        let short: String = hex.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
        Self(format!("pullgate-prefetch-{short}-{unique:x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One blob to write: its ingest ref (containerd's own, so a pull of the same blob waits for
/// this write instead of starting its own), expected digest and size, and the labels to commit
/// it with.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub labels: HashMap<String, String>,
}

/// How opening a blob's ingest went.
pub enum Opened {
    /// The blob is not in the store and this writer holds its ingest.
    Writer(Box<BlobWriter>),
    /// containerd already has it (it is now held by the lease too).
    Present,
    /// Another writer (a pull of the same blob) holds the ingest.
    Busy,
}

/// Why a blob was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("containerd: {}", .0.message())]
    Containerd(Status),
    #[error("the blob is longer than the {0} bytes its descriptor says")]
    TooLong(u64),
    #[error("containerd did not acknowledge the write")]
    Unacknowledged,
}

/// An open ingest: bytes go to containerd as they come, then one commit that containerd checks
/// against the expected digest and size.
pub struct BlobWriter {
    ingest: Ingest,
    requests: mpsc::Sender<WriteContentRequest>,
    responses: Streaming<WriteContentResponse>,
    /// Bytes sent and acknowledged so far.
    offset: u64,
    /// Bytes gathered for the next message, at most [`WRITE_CHUNK_BYTES`].
    pending: Vec<u8>,
}

// === impl ContentStore ===

impl ContentStore {
    pub fn new(channel: Channel, namespace: &str) -> Result<Self, NamespaceError> {
        let namespace = MetadataValue::try_from(namespace).map_err(|_| NamespaceError(namespace.to_string()))?;
        Ok(Self {
            content: ContentClient::new(channel.clone()),
            leases: LeasesClient::new(channel),
            namespace,
        })
    }

    /// A new lease that containerd's garbage collector drops by itself after `expires_in`, should
    /// pullgate never delete it (a crash).
    pub async fn create_lease(&self, id: &LeaseId, expires_in: Duration) -> Result<(), Status> {
        // Whole seconds in RFC 3339, as containerd parses the label.
        let seconds = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX);
        let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second().saturating_add(seconds))
            .unwrap_or(jiff::Timestamp::MAX);
        let labels = HashMap::from([
            ("containerd.io/gc.expire".to_string(), expires.to_string()),
            ("dev.pullgate/prefetch".to_string(), "true".to_string()),
        ]);
        let mut leases = self.leases.clone();
        let request = CreateRequest {
            id: id.0.clone(),
            labels,
        };
        leases.create(self.request(request)).await.map(|_| ())
    }

    /// Deletes `lease`; with `collect`, containerd collects what only it held before answering.
    pub async fn delete_lease(&self, lease: &LeaseId, collect: bool) -> Result<(), Status> {
        let mut leases = self.leases.clone();
        let request = DeleteRequest {
            id: lease.0.clone(),
            sync: collect,
        };
        match leases.delete(self.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    }

    /// Whether containerd's content store has `digest`.
    pub async fn has(&self, digest: &str) -> Result<bool, Status> {
        let mut content = self.content.clone();
        let info = content
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        match info {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// The blob `digest`, whole; `None` when containerd does not have it. A blob longer than
    /// `limit` bytes is an error: only manifests and indexes are read, never layers.
    pub async fn read(&self, digest: &str, limit: usize) -> Result<Option<Bytes>, Status> {
        let mut content = self.content.clone();
        let request = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let mut stream = match content.read(self.request(request)).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(status),
        };
        let mut bytes = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(piece)) if bytes.len() + piece.data.len() > limit => {
                    return Err(Status::out_of_range(format!(
                        "{digest} in containerd's content store is longer than {limit} bytes"
                    )))
                }
                Ok(Some(piece)) => bytes.extend_from_slice(&piece.data),
                Ok(None) => return Ok(Some(Bytes::from(bytes))),
                Err(status) if status.code() == Code::NotFound => return Ok(None),
                Err(status) => return Err(status),
            }
        }
    }

    /// Opens `ingest` under `lease`. Nothing is fetched before this says the blob is wanted: a
    /// blob containerd has, or another pull is writing, is left alone.
    pub async fn open(&self, lease: &LeaseId, ingest: Ingest) -> Result<Opened, WriteError> {
        let (requests, receiver) = mpsc::channel(1);
        // The first message opens the ingest: containerd answers with its status, or that the
        // blob exists (AlreadyExists) or that another writer holds the ref (Unavailable).
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: ingest.reference.clone(),
            total: i64::try_from(ingest.size).unwrap_or(i64::MAX),
            expected: ingest.digest.clone(),
            ..Default::default()
        };
        requests.send(stat).await.map_err(|_| WriteError::Unacknowledged)?;
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|message| (message, receiver))
        });
        let mut request = self.request(stream);
        let lease_id = MetadataValue::try_from(lease.0.as_str())
            .map_err(|_| WriteError::Containerd(Status::internal("lease id is not ASCII")))?;
        request.metadata_mut().insert("containerd-lease", lease_id);
        let mut content = self.content.clone();
        let opened = match content.write(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return classify(status),
        };
        let mut writer = BlobWriter {
            ingest,
            requests,
            responses: opened,
            offset: 0,
            pending: Vec::new(),
        };
        match writer.responses.message().await {
            Ok(Some(_status)) => Ok(Opened::Writer(Box::new(writer))),
            Ok(None) => Err(WriteError::Unacknowledged),
            Err(status) => classify(status),
        }
    }

    /// Throws away the ingest `reference` (a blob not fully written), so that a pull of the
    /// blob starts afresh rather than resuming from bytes it did not fetch itself.
    pub async fn abort(&self, reference: &str) -> Result<(), Status> {
        let mut content = self.content.clone();
        let request = AbortRequest {
            r#ref: reference.to_string(),
        };
        match content.abort(self.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }
}

/// What an error opening an ingest means.
fn classify(status: Status) -> Result<Opened, WriteError> {
    match status.code() {
        Code::AlreadyExists => Ok(Opened::Present),
        Code::Unavailable if status.message().contains("locked") => Ok(Opened::Busy),
        _ => Err(WriteError::Containerd(status)),
    }
}

// === impl BlobWriter ===

impl BlobWriter {
    /// The blob's ingest ref.
    pub fn reference(&self) -> &str {
        &self.ingest.reference
    }

    /// Appends `bytes`, sending a message to containerd whenever [`WRITE_CHUNK_BYTES`] are
    /// gathered. More bytes than the blob's size are refused.
    pub async fn write(&mut self, mut bytes: Bytes) -> Result<(), WriteError> {
        let written = self.offset + self.pending.len() as u64 + bytes.len() as u64;
        if written > self.ingest.size {
            return Err(WriteError::TooLong(self.ingest.size));
        }
        while !bytes.is_empty() {
            let room = WRITE_CHUNK_BYTES - self.pending.len();
            let take = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes.split_to(take));
            if self.pending.len() == WRITE_CHUNK_BYTES {
                self.send(WriteAction::Write, HashMap::new()).await?;
            }
        }
        Ok(())
    }

    /// Sends what is left and commits: containerd checks the size and digest and refuses the
    /// blob if either differs.
    pub async fn commit(mut self) -> Result<(), WriteError> {
        let labels = std::mem::take(&mut self.ingest.labels);
        self.send(WriteAction::Commit, labels).await?;
        // Closing the request stream ends containerd's side of the call.
        drop(self.requests);
        Ok(())
    }

    /// Gives the blob up: ends the write and, once containerd has ended its side of the call
    /// (its writer closed), aborts the ingest. An abort sent while containerd's writer is still
    /// open races that writer's close, which can leave the ingest's directory behind, out of
    /// reach of the lease's collection. containerd is waited for at most `wait`.
    pub async fn abandon(mut self, store: &ContentStore, wait: Duration) -> Result<(), Status> {
        drop(self.requests);
        let ended = async { while let Ok(Some(_)) = self.responses.message().await {} };
        if tokio::time::timeout(wait, ended).await.is_err() {
            tracing::debug!(
                reference = self.ingest.reference,
                "containerd did not end the write in time"
            );
        }
        store.abort(&self.ingest.reference).await
    }

    /// Sends the pending bytes with `action` and waits for containerd to acknowledge them: one
    /// message in flight at a time.
    async fn send(&mut self, action: WriteAction, labels: HashMap<String, String>) -> Result<(), WriteError> {
        let data = std::mem::take(&mut self.pending);
        let length = data.len() as u64;
        let message = WriteContentRequest {
            action: action as i32,
            r#ref: self.ingest.reference.clone(),
            total: i64::try_from(self.ingest.size).unwrap_or(i64::MAX),
            expected: self.ingest.digest.clone(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            data,
            labels,
        };
        if self.requests.send(message).await.is_err() {
            return Err(self.failure().await);
        }
        match self.responses.message().await {
            Ok(Some(reply)) if u64::try_from(reply.offset).ok() == Some(self.offset + length) => {
                self.offset += length;
                Ok(())
            }
            Ok(Some(_)) | Ok(None) => Err(WriteError::Unacknowledged),
            Err(status) => Err(WriteError::Containerd(status)),
        }
    }

    /// Why containerd stopped reading: the status it ended the call with.
    async fn failure(&mut self) -> WriteError {
        match self.responses.message().await {
            Err(status) => WriteError::Containerd(status),
            Ok(_) => WriteError::Unacknowledged,
        }
    }
}
