//! The download hidden behind the verification.
//!
//! Once a pull's digest is known, its manifest (for an index, the manifest containerd's CRI pull
//! would pick for this node), config and layers are fetched into containerd's content store
//! under a lease of their own while the signatures are fetched and checked. An admitted pull
//! then finds the content there and containerd fetches nothing but the manifest's HEAD. A
//! refused one (or one whose verification failed, timed out or whose caller went away) stops
//! the download and deletes the lease; containerd's garbage collector removes what it held.
//!
//! What this never does: create an image record (content only, which nothing can run), send
//! other credentials than the pull's own, or hold a layer in memory (it streams into
//! containerd's writer, which checks each blob's size and digest at commit). A prefetch that
//! fails changes nothing but the time: containerd's pull fetches what is missing.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{
    containerd::content::{BlobWriter, ContentStore, Ingest, LeaseId, Opened, WriteError},
    reference::{Digest, Reference},
    registry::{Credentials, Registries, RegistryError, Session},
};

mod manifest;
mod whole;

use manifest::{gc_labels, Descriptor, Document};
pub use whole::is_whole;

/// Images prefetched at once; a pull beyond them waits for its verdict as before.
const MAX_PREFETCHES: usize = 4;

/// Blobs of one image fetched at once: containerd's own `max_concurrent_downloads` default.
const CONCURRENT_BLOBS: usize = 3;

/// The most one prefetch writes: an image larger than this is fetched only up to it (whole
/// blobs, in order), the rest by containerd's pull.
pub const MAX_PREFETCH_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// The largest blob prefetched; a larger one is left to containerd's pull.
pub const MAX_BLOB_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The most content not yet judged that prefetches hold in containerd at once, all images
/// together: a registry that serves layers fast and signatures slowly cannot fill the node's
/// disk with images about to be denied. A blob beyond it is left to containerd's pull. Held
/// from the blob's start until its pull's verdict (and pull) are over, in KiB.
pub const MAX_UNJUDGED_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Room in [`MAX_UNJUDGED_BYTES`] taken by one prefetch, given back when both its pull and its
/// task are done with it.
type Reserved = Arc<Mutex<Vec<OwnedSemaphorePermit>>>;

/// How long a prefetch may run, every request and body included.
const PREFETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a blob's body may send nothing before it is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopped prefetch may take to finish the containerd call it is in before it is cut
/// off: a call cut off while containerd opens an ingest leaves a directory the lease's
/// collection does not remove.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a blob given up waits for containerd to close its writer before the ingest is
/// aborted: well within [`STOP_GRACE`].
const ABANDON_WAIT: Duration = Duration::from_secs(2);

/// When containerd drops a lease pullgate did not delete (it crashed): after the longest a
/// prefetch and the pull after it can need it.
const LEASE_EXPIRY: Duration = Duration::from_secs(30 * 60);

/// Starts prefetches: containerd's content store, the registry clients, and room for
/// [`MAX_PREFETCHES`].
#[derive(Clone)]
pub struct Prefetcher {
    store: ContentStore,
    registries: Registries,
    room: Arc<Semaphore>,
    /// [`MAX_UNJUDGED_BYTES`], in KiB.
    unjudged: Arc<Semaphore>,
    /// The downloads running, by image digest: a pull that shares another's verification
    /// waits for that pull's download instead of racing it into containerd.
    running: Arc<Mutex<HashMap<Digest, watch::Receiver<()>>>>,
}

/// One image's content on its way into containerd: this pull's own download and the lease that
/// holds it, or another pull's download of the same image, to wait for. Dropped, an own download
/// stops and its lease is deleted, collecting what only the lease held; kept by
/// [`Prefetch::release`] once the image record holds the content.
pub struct Prefetch {
    download: Download,
    digest: Digest,
}

enum Download {
    Own(Box<Own>),
    /// Ends when the other pull's download does, however it ends.
    Other(watch::Receiver<()>),
}

/// This pull's own download, and the lease that holds what it wrote.
struct Own {
    task: Option<JoinHandle<Result<Fetched, PrefetchError>>>,
    /// Dropped to stop the task: it stops at its next registry read, never inside a containerd
    /// call.
    stop: Option<watch::Sender<()>>,
    store: ContentStore,
    lease: LeaseId,
    /// Whether the content is the image's now (the pull went through): the lease goes without
    /// a collection.
    keep: bool,
    /// Kept until the verdict: what the task wrote stays unjudged until then.
    _reserved: Reserved,
}

/// What one prefetch wrote (or found there already).
#[derive(Debug, Default)]
pub struct Fetched {
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs another writer was writing, or left to containerd by a bound.
    pub skipped: usize,
}

impl Fetched {
    fn add(&mut self, other: Fetched) {
        self.blobs += other.blobs;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
    }
}

/// Why a prefetch stopped; the pull goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("blob {digest}: {source}")]
    Write { digest: String, source: WriteError },
    #[error("containerd: {}", .0.message())]
    Containerd(#[from] tonic::Status),
    #[error("the manifest is not one containerd would pull")]
    NotAManifest,
    #[error("stopped: the pull no longer needs it")]
    Stopped,
}

/// Takes a download out of [`Prefetcher::running`] when its task ends, however it ends; the
/// dropped sender tells the pulls waiting for it.
struct Running {
    running: Arc<Mutex<HashMap<Digest, watch::Receiver<()>>>>,
    digest: Digest,
    _ended: watch::Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.digest);
    }
}

// === impl Prefetcher ===

impl Prefetcher {
    pub fn new(store: ContentStore, registries: Registries) -> Self {
        Self {
            store,
            registries,
            room: Arc::new(Semaphore::new(MAX_PREFETCHES)),
            unjudged: Arc::new(Semaphore::new(kib(MAX_UNJUDGED_BYTES) as usize)),
            running: Arc::default(),
        }
    }

    /// Starts fetching `digest` of `reference`'s repository with the pull's `credentials`;
    /// `None` when [`MAX_PREFETCHES`] are running or this image's download is.
    pub fn start(&self, reference: &Reference, credentials: Credentials, digest: &Digest) -> Option<Prefetch> {
        let running = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(digest) {
                return None;
            }
            let permit = self.room.clone().try_acquire_owned().ok()?;
            let (ended, waiting) = watch::channel(());
            running.insert(digest.clone(), waiting);
            let announce = Running {
                running: self.running.clone(),
                digest: digest.clone(),
                _ended: ended,
            };
            (announce, permit)
        };
        static LEASES: AtomicU64 = AtomicU64::new(0);
        let unique = u64::from(std::process::id()) * 1_000_000 + LEASES.fetch_add(1, Ordering::Relaxed);
        let lease = LeaseId::for_digest(digest.hex(), unique);
        let reserved = Reserved::default();
        let (stop, stopped) = watch::channel(());
        let run = Run {
            stopped,
            unjudged: self.unjudged.clone(),
            reserved: reserved.clone(),
            store: self.store.clone(),
            registries: self.registries.clone(),
            reference: reference.clone(),
            credentials,
            digest: digest.clone(),
            lease: lease.clone(),
        };
        let download = Download::Own(Box::new(Own {
            task: Some(tokio::spawn(run.run(running))),
            stop: Some(stop),
            store: self.store.clone(),
            lease,
            keep: false,
            _reserved: reserved,
        }));
        Some(Prefetch {
            download,
            digest: digest.clone(),
        })
    }

    /// The download of `digest` another pull is running, if one is, to wait for.
    pub fn follow(&self, digest: &Digest) -> Option<Prefetch> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = running.get(digest)?.clone();
        Some(Prefetch {
            download: Download::Other(waiting),
            digest: digest.clone(),
        })
    }
}

// === impl Prefetch ===

impl Prefetch {
    /// Waits for the download to end, however it ends: what is there is what containerd's pull
    /// need not fetch.
    pub async fn finished(&mut self) {
        let started = Instant::now();
        let task = match &mut self.download {
            Download::Own(own) => &mut own.task,
            Download::Other(waiting) => {
                // Err: the sender is gone, the download over.
                while waiting.changed().await.is_ok() {}
                return;
            }
        };
        let Some(handle) = task.as_mut() else { return };
        // Awaited where it is kept: should the caller go away meanwhile, the drop still finds
        // the task and stops it (a JoinHandle dropped lets its task run on).
        let ended = handle.await;
        *task = None;
        match ended {
            Ok(Ok(fetched)) => {
                tracing::debug!(digest = %self.digest, blobs = fetched.blobs, bytes = fetched.bytes, skipped = fetched.skipped, waited = ?started.elapsed(), "prefetched")
            }
            Ok(Err(error)) => {
                tracing::info!(digest = %self.digest, %error, "prefetch stopped; containerd fetches the rest")
            }
            Err(error) => tracing::warn!(digest = %self.digest, %error, "prefetch task failed"),
        }
    }

    /// Lets the lease go without collecting: the pull went through, and the image record now
    /// holds the content.
    pub fn release(mut self) {
        if let Download::Own(own) = &mut self.download {
            own.keep = true;
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let Download::Own(own) = &mut self.download else {
            return;
        };
        let (task, stop) = (own.task.take(), own.stop.take());
        let (store, lease, collect) = (own.store.clone(), own.lease.clone(), !own.keep);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(task) = task {
                task.abort();
            }
            return;
        };
        // Off the request path: a refusal is answered without waiting for the download to stop
        // or for the collection. The lease goes once the task is done with containerd.
        runtime.spawn(async move {
            drop(stop);
            if let Some(mut task) = task {
                if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                    task.abort();
                }
            }
            if let Err(status) = store.delete_lease(&lease, collect).await {
                tracing::warn!(lease = lease.as_str(), error = %status.message(), "prefetch lease not deleted; it expires by itself");
            }
        });
    }
}

/// One prefetch's work, moved into its task.
struct Run {
    /// Ends (its sender dropped) when the pull no longer needs the download.
    stopped: watch::Receiver<()>,
    unjudged: Arc<Semaphore>,
    reserved: Reserved,
    store: ContentStore,
    registries: Registries,
    reference: Reference,
    credentials: Credentials,
    digest: Digest,
    lease: LeaseId,
}

// === impl Run ===

impl Run {
    /// Runs the prefetch, holding its room and its place among the downloads running.
    async fn run(self, _running: (Running, OwnedSemaphorePermit)) -> Result<Fetched, PrefetchError> {
        tokio::time::timeout(PREFETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::Unavailable(format!("prefetch took over {PREFETCH_TIMEOUT:?}")).into())
            })
    }

    /// The manifest, then its config and layers. containerd's calls are the slow part on a
    /// near registry (each commit is synced), so nothing waits for one it does not need: the
    /// lease is made while the manifest is fetched, and a manifest is written while what it
    /// names is fetched. All of it is written under the lease, so the order containerd sees is
    /// immaterial; containerd's pull waits for the whole.
    async fn fetch(&self) -> Result<Fetched, PrefetchError> {
        let mut fetched = Fetched::default();
        let session = self
            .registries
            .session(&self.reference, self.credentials.clone())
            .with_timeout(PREFETCH_TIMEOUT);
        let manifest = async {
            // Already there (pulled before): the pull fetches nothing, and neither does this.
            match self.store.has(self.digest.as_str()).await? {
                true => Ok(None),
                false => self.manifest(&session, &self.digest).await.map(Some),
            }
        };
        let (leased, manifest) = tokio::join!(self.store.create_lease(&self.lease, LEASE_EXPIRY), manifest);
        leased?;
        let Some((mut document, mut bytes)) = manifest? else {
            return Ok(fetched);
        };
        let mut digest = self.digest.clone();
        if document.is_index() {
            let Some(chosen) = document.for_this_platform().cloned() else {
                return self
                    .write_manifest(&digest, &document, bytes, &mut fetched)
                    .await
                    .map(|()| fetched);
            };
            let index = (digest, document, bytes);
            digest = chosen.digest().ok_or(PrefetchError::NotAManifest)?;
            let (written, manifest) = tokio::join!(
                self.write_manifest(&index.0, &index.1, index.2, &mut fetched),
                self.manifest(&session, &digest)
            );
            written?;
            (document, bytes) = manifest?;
            if document.is_index() {
                return Err(PrefetchError::NotAManifest);
            }
        }
        let mut children = Fetched::default();
        let (written, blobs) = tokio::join!(
            self.write_manifest(&digest, &document, bytes, &mut fetched),
            self.blobs(&session, document.children(), &mut children)
        );
        fetched.add(children);
        written.and(blobs).map(|()| fetched)
    }

    /// Fetches manifest (or index) `digest`, bounded and checked against the digest by the
    /// registry client.
    async fn manifest(&self, session: &Session<'_>, digest: &Digest) -> Result<(Document, Bytes), PrefetchError> {
        let manifest = self
            .unless_stopped(async { Ok(session.manifest(digest.as_str()).await?) })
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("manifest {digest} not found")))?;
        let document = Document::parse(&manifest.bytes, &manifest.media_type).ok_or(PrefetchError::NotAManifest)?;
        Ok((document, manifest.bytes.into()))
    }

    /// Writes manifest (or index) `digest` with the labels containerd's pull gives it.
    async fn write_manifest(
        &self,
        digest: &Digest,
        document: &Document,
        bytes: Bytes,
        fetched: &mut Fetched,
    ) -> Result<(), PrefetchError> {
        let descriptor = Descriptor {
            media_type: document.media_type().to_string(),
            digest: digest.to_string(),
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            platform: None,
        };
        let mut labels = gc_labels(&document.children());
        labels.insert(self.source_label(), self.reference.path().to_string());
        let ingest = Ingest {
            reference: descriptor.ingest_ref(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            labels,
        };
        let write = |source| PrefetchError::Write {
            digest: digest.to_string(),
            source,
        };
        self.check_stopped()?;
        if let Opened::Writer(mut writer) = self.store.open(&self.lease, ingest).await.map_err(write)? {
            writer.write(bytes).await.map_err(write)?;
            writer.commit().await.map_err(write)?;
            fetched.blobs += 1;
        }
        Ok(())
    }

    /// Fetches `children` (a manifest's config and layers), [`CONCURRENT_BLOBS`] at a time,
    /// within [`MAX_BLOB_BYTES`] each and [`MAX_PREFETCH_BYTES`] in all.
    async fn blobs(
        &self,
        session: &Session<'_>,
        children: Vec<Descriptor>,
        fetched: &mut Fetched,
    ) -> Result<(), PrefetchError> {
        let mut budget = MAX_PREFETCH_BYTES;
        let mut wanted = Vec::new();
        for child in children.into_iter().filter(Descriptor::is_fetched) {
            match (child.digest(), child.size()) {
                (Some(digest), Some(size))
                    if size <= MAX_BLOB_BYTES && size <= budget && reserve(&self.unjudged, &self.reserved, size) =>
                {
                    budget -= size;
                    wanted.push((child, digest, size));
                }
                _ => fetched.skipped += 1,
            }
        }
        let mut writes = stream::iter(wanted)
            .map(|(child, digest, size)| self.blob(session, child, digest, size))
            .buffer_unordered(CONCURRENT_BLOBS);
        // One blob failing does not stop the others: each is one containerd need not fetch.
        let mut first_error = None;
        while let Some(outcome) = writes.next().await {
            match outcome {
                Ok(Some(size)) => {
                    fetched.blobs += 1;
                    fetched.bytes += size;
                }
                Ok(None) => fetched.skipped += 1,
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Streams one blob from the registry into containerd; `None` when containerd has it or
    /// another writer holds it.
    async fn blob(
        &self,
        session: &Session<'_>,
        child: Descriptor,
        digest: Digest,
        size: u64,
    ) -> Result<Option<u64>, PrefetchError> {
        let write = |source| PrefetchError::Write {
            digest: digest.to_string(),
            source,
        };
        let ingest = Ingest {
            reference: child.ingest_ref(),
            digest: digest.to_string(),
            size,
            labels: [(self.source_label(), self.reference.path().to_string())].into(),
        };
        // The ingest is opened before the registry is asked: no GET for a blob containerd has.
        self.check_stopped()?;
        let Opened::Writer(mut writer) = self.store.open(&self.lease, ingest).await.map_err(write)? else {
            return Ok(None);
        };
        let reference = writer.reference().to_string();
        // On failure containerd's pull fetches the blob whole, as it would have without this.
        let aborted = match self.stream(session, &digest, &mut writer).await {
            Ok(()) => match writer.commit().await {
                Ok(()) => return Ok(Some(size)),
                Err(error) => (write(error), self.store.abort(&reference).await),
            },
            Err(error) => (error, writer.abandon(&self.store, ABANDON_WAIT).await),
        };
        if let (_, Err(status)) = &aborted {
            tracing::debug!(reference, error = %status.message(), "ingest not aborted; the lease's collection removes it");
        }
        Err(aborted.0)
    }

    /// Copies blob `digest` from the registry into `writer`, a piece at a time, and commits it.
    async fn stream(
        &self,
        session: &Session<'_>,
        digest: &Digest,
        writer: &mut BlobWriter,
    ) -> Result<(), PrefetchError> {
        let write = |source| PrefetchError::Write {
            digest: digest.to_string(),
            source,
        };
        let mut body = self
            .unless_stopped(async { Ok(session.blob_stream(digest, IDLE_TIMEOUT).await?) })
            .await?;
        while let Some(chunk) = self.unless_stopped(async { Ok(body.chunk().await?) }).await? {
            writer.write(chunk).await.map_err(write)?;
        }
        Ok(())
    }

    /// `work` (a registry request: containerd's calls are never cut off), or
    /// [`PrefetchError::Stopped`] should the pull stop the download first.
    async fn unless_stopped<T>(
        &self,
        work: impl Future<Output = Result<T, PrefetchError>>,
    ) -> Result<T, PrefetchError> {
        let mut stopped = self.stopped.clone();
        tokio::select! {
            done = work => done,
            // Only ever ends with the sender gone: nothing is sent on it.
            _ = async { while stopped.changed().await.is_ok() {} } => Err(PrefetchError::Stopped),
        }
    }

    /// [`PrefetchError::Stopped`] once the pull has stopped the download: checked before each
    /// containerd call that opens an ingest.
    fn check_stopped(&self) -> Result<(), PrefetchError> {
        match self.stopped.has_changed() {
            Err(_) => Err(PrefetchError::Stopped),
            Ok(_) => Ok(()),
        }
    }

    /// The label containerd's pull puts on content to say where it came from
    /// (`containerd.io/distribution.source.<registry>`), which cross-repository pushes use.
    fn source_label(&self) -> String {
        format!("containerd.io/distribution.source.{}", self.reference.host())
    }
}

/// Takes `size` bytes of `room` (in KiB) into `reserved`, if there is that much room now.
fn reserve(room: &Arc<Semaphore>, reserved: &Reserved, size: u64) -> bool {
    let Ok(kib) = u32::try_from(kib(size)) else {
        return false;
    };
    match room.clone().try_acquire_many_owned(kib) {
        Ok(permit) => {
            reserved.lock().unwrap_or_else(|p| p.into_inner()).push(permit);
            true
        }
        Err(_) => false,
    }
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefetches of images not yet judged share one room: a blob that does not fit is left to
    /// containerd, and the room comes back only when every holder of a prefetch's share is gone.
    #[test]
    fn unjudged_content_shares_one_bounded_room_until_the_verdict() {
        let room = Arc::new(Semaphore::new(kib(10 * 1024 * 1024) as usize));
        let (first, second) = (Reserved::default(), Reserved::default());
        assert!(reserve(&room, &first, 6 * 1024 * 1024));
        assert!(
            !reserve(&room, &second, 5 * 1024 * 1024),
            "beyond the room: left to containerd"
        );
        assert!(reserve(&room, &second, 4 * 1024 * 1024));
        assert!(!reserve(&room, &second, 1), "full");
        let task_share = first.clone();
        drop(first);
        assert!(
            !reserve(&room, &second, 1),
            "the task still holds the first prefetch's share"
        );
        drop(task_share);
        assert!(
            reserve(&room, &second, 6 * 1024 * 1024),
            "given back once its verdict and task are over"
        );
        assert!(!reserve(&room, &second, u64::MAX), "no size overflows the count");
    }

    /// Tells, by being dropped, that the future holding it was dropped (its task aborted).
    struct Stopped(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for Stopped {
        fn drop(&mut self) {
            if let Some(tell) = self.0.take() {
                let _ = tell.send(());
            }
        }
    }

    /// A prefetch whose download runs until it is stopped; the receiver hears when it is (its
    /// sender dropped unsent, should the task be stopped before it began).
    fn endless_download() -> (Prefetch, tokio::sync::oneshot::Receiver<()>) {
        let (tell, told) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _stopped = Stopped(Some(tell));
            std::future::pending::<()>().await;
            Ok(Fetched::default())
        });
        // Nothing listens there: the lease's deletion fails, as it may, and is only logged.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let store = ContentStore::new(channel, "k8s.io").expect("a namespace");
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).expect("a digest");
        let prefetch = Prefetch {
            download: Download::Own(Box::new(Own {
                task: Some(task),
                stop: None,
                store,
                lease: LeaseId::for_digest(digest.hex(), 1),
                keep: false,
                _reserved: Reserved::default(),
            })),
            digest,
        };
        (prefetch, told)
    }

    /// kubelet gives up an admitted pull while it waits for its download: the download stops
    /// with it, rather than running on (and holding a prefetch's room) after its lease is gone.
    #[tokio::test]
    async fn a_caller_gone_while_the_pull_waits_for_its_download_stops_the_download() {
        let (mut prefetch, stopped) = endless_download();
        let waited = tokio::time::timeout(Duration::from_millis(50), prefetch.finished()).await;
        assert!(waited.is_err(), "the download never ends by itself");
        drop(prefetch);
        tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), stopped)
            .await
            .expect("the download stopped with the pull that waited for it")
            .ok();
    }

    /// A refused pull, which never waits for its download, stops it too.
    #[tokio::test]
    async fn a_refused_pull_stops_its_download() {
        let (prefetch, stopped) = endless_download();
        drop(prefetch);
        tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), stopped)
            .await
            .expect("the download stopped with the refused pull")
            .ok();
    }
}
