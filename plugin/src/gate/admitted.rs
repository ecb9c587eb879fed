//! The images pulled through the verified path under the policy generation in force, kept for
//! `ImageStatus`, and kept on the node (`stateDir`) so a restart does not forget them.

use std::{
    collections::{btree_map::Entry, BTreeMap, HashMap},
    sync::{
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::state::{AdmittedImage, Snapshot, StateDir, Verification, MAX_ADMITTED};

/// The least time between two writes of the state file: a burst of pulls is written once, and
/// the copy a write takes under the set's lock (up to `MAX_ADMITTED` images) stays rare.
const WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// (repository, image id).
pub(super) type ImageKey = (String, String);

/// Images pulled through the verified path, by (repository, image id), with the manifest
/// digests verified under each rule, all in one policy generation, so `ImageStatus` can tell
/// them from images that reached containerd some other way, or were verified for another rule.
/// The id alone is no identity: OCI artifacts with the same config (the empty one) share it.
pub(super) struct Admitted {
    set: Arc<Mutex<Set>>,
    /// Wakes the writer; `None` without a `stateDir`.
    writer: Option<Writer>,
}

/// The set in memory: one generation's (rule, manifest digest) pairs per image, each with the
/// unix second from which it no longer holds (`None`: while the generation is in force).
#[derive(Default)]
struct Set {
    generation: String,
    images: HashMap<ImageKey, BTreeMap<(String, String), Option<i64>>>,
    /// Counts changes, so the writer knows whether the file is behind.
    changes: u64,
}

/// The background writer's end. Writes are coalesced (a wake-up already pending covers any
/// number of changes) and happen off the request path: a pull's reply does not wait for a
/// disk. A write lost to a crash only means a re-verification, the fail-closed direction.
struct Writer {
    wake: SyncSender<()>,
    store: Arc<Mutex<Store>>,
}

/// The state file and what it holds.
struct Store {
    dir: StateDir,
    /// The [`Set::changes`] the file holds.
    written: u64,
    /// Whether the last write failed: logged once, not on every change.
    failing: bool,
}

// === impl Admitted ===

impl Admitted {
    /// The set for `generation`: what `state` holds for that generation, else empty. With a
    /// state directory, changes are written there in the background from now on.
    pub(super) fn new(generation: &str, state: Option<StateDir>) -> Self {
        let mut set = Set {
            generation: generation.to_string(),
            ..Set::default()
        };
        let Some(dir) = state else {
            return Self {
                set: Arc::new(Mutex::new(set)),
                writer: None,
            };
        };
        let file = dir.file();
        match dir.load() {
            Ok(None) => tracing::info!(state = %file.display(), "no state file: nothing verified yet"),
            Ok(Some(snapshot)) if snapshot.generation == generation => {
                tracing::info!(state = %file.display(), images = snapshot.images.len(), "verified images read back from the state file");
                set.images = snapshot
                    .images
                    .into_iter()
                    .map(|image| {
                        let verified = image
                            .verified
                            .into_iter()
                            .map(|v| ((v.rule, v.digest), v.until))
                            .collect();
                        ((image.repository, image.id), verified)
                    })
                    .collect();
            }
            Ok(Some(snapshot)) => {
                tracing::info!(state = %file.display(), generation = %snapshot.generation, "state file is of another policy generation: its images will be verified again");
                // Rewritten below, so a policy changed back later does not bring them back.
                set.changes = 1;
            }
            Err(error) => {
                tracing::warn!(%error, "state file ignored: every enforced image will be verified again");
                set.changes = 1;
            }
        }
        let set = Arc::new(Mutex::new(set));
        let writer = Writer::spawn(dir, set.clone());
        Self {
            set,
            writer: Some(writer),
        }
    }

    /// Admits `digest` of (repository, image id) under `rule`, verified in `generation`, until
    /// the unix second `until` (a signature's expiry, a required attestation's `maxAge`;
    /// `None`: no end). A verification of a generation no longer in force (the policy was
    /// reloaded meanwhile) is dropped: it could never be used.
    pub(super) fn insert(
        &self,
        (repository, image_id): ImageKey,
        digest: String,
        generation: &str,
        rule: &str,
        until: Option<i64>,
    ) {
        {
            let mut set = lock(&self.set);
            if set.generation != generation {
                return;
            }
            if set.images.len() >= MAX_ADMITTED {
                set.images.clear();
            }
            let verified = set.images.entry((repository, image_id)).or_default();
            let changed = match verified.entry((rule.to_string(), digest)) {
                Entry::Vacant(entry) => {
                    entry.insert(until);
                    true
                }
                Entry::Occupied(mut entry) => {
                    // A new verification (a fresher attestation) may hold longer than the kept one.
                    let longer = match (*entry.get(), until) {
                        (Some(kept), Some(new)) => new > kept,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if longer {
                        entry.insert(until);
                    }
                    longer
                }
            };
            if !changed {
                return;
            }
            set.changes += 1;
        }
        self.wake();
    }

    /// Puts `generation` in force: what was verified under another one is forgotten, in memory
    /// and in the state file.
    pub(super) fn set_generation(&self, generation: &str) {
        {
            let mut set = lock(&self.set);
            if set.generation == generation {
                return;
            }
            set.generation = generation.to_string();
            set.images.clear();
            set.changes += 1;
        }
        self.wake();
    }

    /// Whether each of `digests` (at least one) was verified under `rule` for this id, in
    /// `generation`, by a verification that still holds now.
    pub(super) fn contains(
        &self,
        repository: &str,
        image_id: &str,
        digests: &[String],
        generation: &str,
        rule: &str,
    ) -> bool {
        let now = unix_now();
        let set = lock(&self.set);
        set.generation == generation
            && !digests.is_empty()
            && set
                .images
                .get(&(repository.to_string(), image_id.to_string()))
                .is_some_and(|verified| {
                    digests.iter().all(|d| {
                        verified
                            .get(&(rule.to_string(), d.clone()))
                            .is_some_and(|until| until.is_none_or(|until| now < until))
                    })
                })
    }

    /// Writes what the state file is missing now, on this thread: at shutdown, so a clean stop
    /// loses nothing the writer had not reached.
    pub(super) fn flush(&self) {
        if let Some(writer) = &self.writer {
            write(&writer.store, &self.set);
        }
    }

    fn wake(&self) {
        if let Some(writer) = &self.writer {
            // Full: a write is already due and will take this change along.
            if let Err(TrySendError::Disconnected(())) = writer.wake.try_send(()) {
                tracing::error!("state writer stopped: verifications are no longer kept");
            }
        }
    }
}

// === impl Writer ===

impl Writer {
    fn spawn(dir: StateDir, set: Arc<Mutex<Set>>) -> Writer {
        // One pending wake-up at most: that is the coalescing.
        let (wake, woken) = sync_channel::<()>(1);
        let store = Arc::new(Mutex::new(Store {
            dir,
            written: 0,
            failing: false,
        }));
        let writer = Writer { wake, store };
        let store = writer.store.clone();
        let thread_set = set.clone();
        let spawned = std::thread::Builder::new()
            .name("pullgate-state".into())
            .spawn(move || {
                // Ends when the gate, and with it the sending end, is dropped.
                while woken.recv().is_ok() {
                    write(&store, &thread_set);
                    std::thread::sleep(WRITE_INTERVAL);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "state writer not started: verifications are not kept");
        }
        // A file left from another generation or a bad one is replaced now.
        if lock(&set).changes > 0 {
            let _ = writer.wake.try_send(());
        }
        writer
    }
}

/// Writes the set to the state file if the file is behind it. The set is copied under its
/// lock and written without it, so `ImageStatus` waits for a copy at most, never for the disk.
fn write(store: &Mutex<Store>, set: &Mutex<Set>) {
    let mut store = lock(store);
    let (changes, snapshot) = {
        let set = lock(set);
        if set.changes == store.written {
            return;
        }
        let images = set
            .images
            .iter()
            .map(|((repository, id), verified)| AdmittedImage {
                repository: repository.clone(),
                id: id.clone(),
                verified: verified
                    .iter()
                    .map(|((rule, digest), until)| Verification {
                        rule: rule.clone(),
                        digest: digest.clone(),
                        until: *until,
                    })
                    .collect(),
            })
            .collect();
        (set.changes, Snapshot::new(set.generation.clone(), images))
    };
    match store.dir.store(&snapshot) {
        Ok(()) => {
            if store.failing {
                tracing::info!(state = %store.dir.file().display(), "state file written again");
            }
            store.written = changes;
            store.failing = false;
        }
        Err(error) => {
            if !store.failing {
                tracing::error!(%error, "state file not written: after a restart these images will be verified again");
            }
            store.failing = true;
        }
    }
}

/// Seconds since the epoch; a clock before it reads as past every `until` (fail closed).
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    const REPOSITORY: &str = "127.0.0.1:5000/app";

    fn key() -> ImageKey {
        (REPOSITORY.into(), ID.into())
    }

    fn shown(admitted: &Admitted, generation: &str) -> bool {
        admitted.contains(REPOSITORY, ID, &[DIGEST.into()], generation, "release")
    }

    fn state() -> (tempfile::TempDir, StateDir) {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&root.path().join("state")).unwrap();
        (root, dir)
    }

    /// The writer runs in the background: what it wrote, once it has.
    fn written(dir: &StateDir, images: usize) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(snapshot)) = dir.load() {
                if snapshot.images.len() == images {
                    return snapshot;
                }
            }
            assert!(Instant::now() < deadline, "the writer never wrote {images} images");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn verifications_outlive_the_process_for_the_same_generation_only() {
        let (_root, dir) = state();
        let admitted = Admitted::new("g1", Some(dir.clone()));
        admitted.insert(key(), DIGEST.into(), "g1", "release", None);
        assert!(shown(&admitted, "g1"));
        let snapshot = written(&dir, 1);
        assert_eq!(snapshot.generation, "g1");
        drop(admitted);

        let restarted = Admitted::new("g1", Some(dir.clone()));
        assert!(shown(&restarted, "g1"), "read back at start");
        assert!(!restarted.contains(REPOSITORY, ID, &[DIGEST.into()], "g1", "other-rule"));
        drop(restarted);

        let changed = Admitted::new("g2", Some(dir.clone()));
        assert!(!shown(&changed, "g2"), "another generation's file is not used");
        assert_eq!(written(&dir, 0).generation, "g2", "and is replaced");
        drop(changed);
        assert!(
            !shown(&Admitted::new("g1", Some(dir)), "g1"),
            "the old generation does not come back"
        );
    }

    #[test]
    fn a_reload_to_another_generation_forgets_in_memory_and_on_disk() {
        let (_root, dir) = state();
        let admitted = Admitted::new("g1", Some(dir.clone()));
        admitted.insert(key(), DIGEST.into(), "g1", "release", None);
        written(&dir, 1);
        admitted.set_generation("g2");
        assert!(!shown(&admitted, "g2") && !shown(&admitted, "g1"));
        admitted.flush();
        assert_eq!(dir.load().unwrap().unwrap(), Snapshot::new("g2".into(), vec![]));
        // A pull judged under the old policy that finishes after the reload admits nothing.
        admitted.insert(key(), DIGEST.into(), "g1", "release", None);
        assert!(!shown(&admitted, "g1") && !shown(&admitted, "g2"));
    }

    /// A verification that holds only until a required attestation turns older than its
    /// `maxAge` stops showing the image then, in memory and once read back after a restart;
    /// a later verification (a fresh attestation) extends it.
    #[test]
    fn a_verification_shows_the_image_only_until_its_end() {
        let (_root, dir) = state();
        let admitted = Admitted::new("g1", Some(dir.clone()));
        let now = unix_now();
        admitted.insert(key(), DIGEST.into(), "g1", "release", Some(now - 1));
        assert!(!shown(&admitted, "g1"), "past its end");
        admitted.insert(key(), DIGEST.into(), "g1", "release", Some(now + 3600));
        assert!(shown(&admitted, "g1"), "a fresher verification holds");
        admitted.insert(key(), DIGEST.into(), "g1", "release", Some(now - 1));
        assert!(shown(&admitted, "g1"), "an older one does not cut the kept one short");
        admitted.flush();
        let stored = dir.load().unwrap().unwrap();
        assert_eq!(stored.images[0].verified[0].until, Some(now + 3600));
        drop(admitted);

        // Read back as stored, the end with it.
        let mut stale = stored.clone();
        stale.images[0].verified[0].until = Some(now - 1);
        dir.store(&stale).unwrap();
        assert!(!shown(&Admitted::new("g1", Some(dir.clone())), "g1"));
        dir.store(&stored).unwrap();
        assert!(shown(&Admitted::new("g1", Some(dir)), "g1"));
    }

    #[test]
    fn a_corrupt_file_starts_empty_and_is_replaced() {
        let (_root, dir) = state();
        std::fs::write(dir.file(), b"{\"version\":1,\"generation\":\"g1\",\"ima").unwrap();
        let admitted = Admitted::new("g1", Some(dir.clone()));
        assert!(!shown(&admitted, "g1"));
        assert_eq!(written(&dir, 0).generation, "g1");
    }

    #[test]
    fn without_a_state_dir_nothing_is_written() {
        let admitted = Admitted::new("g1", None);
        admitted.insert(key(), DIGEST.into(), "g1", "release", None);
        admitted.flush();
        assert!(shown(&admitted, "g1"));
    }
}
