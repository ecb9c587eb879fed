//! What pullgate keeps on the node between runs (`stateDir`): the images it verified under the
//! policy generation in force, so a restart during a registry outage does not block them.
//!
//! The file is a trust anchor like the policy: it lets `ImageStatus` show an image without a
//! verification. It is read only when pullgate's own uid owns it (and its directory) and no
//! group or other user may write them, and only as a whole: a file that does not parse, breaks
//! a bound or holds one malformed entry is ignored, never partly used.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    file::{read_file_bounded, ReadError},
    reference::{Digest, Reference},
};

/// The file in `stateDir` that holds the admitted set.
pub const FILE_NAME: &str = "admitted.json";

/// More admitted images than this and the set starts over (they are verified again on demand);
/// a file with more is not read.
pub const MAX_ADMITTED: usize = 100_000;

/// A state file larger than this is neither written nor read. An entry takes ~250 bytes, so
/// [`MAX_ADMITTED`] images with a few verifications each fit.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// The file's format; another is not read. 2: each verification carries its `until`.
const VERSION: u32 = 2;

/// What pullgate accepts as verified, as an epoch: a release that makes verification stricter
/// (a flaw fixed, a check added) increases it, so images an older pullgate verified are not
/// shown from its file but verified again. An upgrade that changes no check keeps them.
pub const VERIFIER_EPOCH: u32 = 1;

/// Longest repository, image id or rule name a valid entry holds (references are at most
/// 255 + 4096 bytes in practice; rule names are short).
const MAX_FIELD_BYTES: usize = 4096;

/// The admitted set of one policy generation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    /// [`VERIFIER_EPOCH`] of the pullgate that wrote it.
    pub verifier: u32,
    /// `Policy::hash()`: the policy, its key files and trusted roots.
    pub generation: String,
    pub images: Vec<AdmittedImage>,
}

/// One image id in one repository, and what it was verified as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmittedImage {
    /// Canonical `host/path`.
    pub repository: String,
    /// containerd's image id.
    pub id: String,
    pub verified: Vec<Verification>,
}

/// A manifest digest verified under a rule, and until when that verification holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub rule: String,
    pub digest: String,
    /// Unix seconds from which it no longer holds: when a required attestation turns older
    /// than its `maxAge`. `None`: for as long as the generation is in force.
    pub until: Option<i64>,
}

/// The directory `stateDir` names, checked: pullgate's own and writable by nobody else.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Why the state directory or file is not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a {kind}")]
    NotA { path: PathBuf, kind: &'static str },
    /// Someone but pullgate could have written it.
    #[error("{path}: owned by uid {owner}, not pullgate's {uid}")]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path}: mode {mode:o} lets others than its owner write it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path}: larger than {MAX_STATE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {fault}")]
    Invalid { path: PathBuf, fault: Fault },
}

/// What is wrong inside a state file; any one fault and none of it is used.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("format version {0} (this pullgate reads {VERSION})")]
    Version(u32),
    #[error("written by a pullgate whose verification differs (epoch {0}, this one's is {VERIFIER_EPOCH}): its images will be verified again")]
    Verifier(u32),
    #[error("{0} images, more than {MAX_ADMITTED}")]
    TooMany(usize),
    #[error("images[{0}]: repository is not a canonical repository name")]
    Repository(usize),
    #[error("images[{0}]: image id is empty or too long")]
    ImageId(usize),
    #[error("images[{0}]: no verification")]
    NoVerification(usize),
    #[error("images[{0}]: rule name is empty or too long")]
    Rule(usize),
    #[error("images[{0}]: a verified digest is not sha256:<64 hex>")]
    Digest(usize),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

// === impl StateDir ===

impl StateDir {
    /// `dir`, created 0700 if missing. Refused when it is not a directory, not owned by this
    /// process's uid, or writable by group or others: whoever can write there can plant a file.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        Self::existing(dir)
    }

    /// As [`StateDir::open`], creating nothing (for `pullgate doctor`): `dir` must exist.
    pub fn existing(dir: &Path) -> Result<StateDir, StateError> {
        let meta = fs::metadata(dir).map_err(io_error(dir))?;
        if !meta.is_dir() {
            return Err(StateError::NotA {
                path: dir.to_owned(),
                kind: "directory",
            });
        }
        check_owner(dir, &meta)?;
        Ok(StateDir { dir: dir.to_owned() })
    }

    /// The state file's path.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored snapshot, `None` when there is none. A file that is not pullgate's own, is
    /// too large, or does not hold a valid snapshot is an error: the caller starts empty.
    pub fn load(&self) -> Result<Option<Snapshot>, StateError> {
        let path = self.file();
        // Not followed: a link could point at a file pullgate does not own the contents of.
        // Non-blocking: a FIFO without a writer would block the open, before any check below.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        // The open file is checked, not the path: it cannot be swapped in between.
        let meta = file.metadata().map_err(io_error(&path))?;
        if !meta.is_file() {
            return Err(StateError::NotA { path, kind: "file" });
        }
        check_owner(&path, &meta)?;
        let bytes = read_file_bounded(file, MAX_STATE_BYTES).map_err(|e| match e {
            ReadError::Io(source) => StateError::Io {
                path: path.clone(),
                source,
            },
            ReadError::TooLarge(_) => StateError::TooLarge { path: path.clone() },
        })?;
        let invalid = |fault: Fault| StateError::Invalid {
            path: path.clone(),
            fault,
        };
        let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| invalid(e.into()))?;
        snapshot.check().map_err(invalid)?;
        Ok(Some(snapshot))
    }

    /// Replaces the state file with `snapshot`, atomically: a temporary file in the same
    /// directory, synced, renamed over it, and the directory synced, so a crash leaves the old
    /// file or the new one, never a torn one.
    pub fn store(&self, snapshot: &Snapshot) -> Result<(), StateError> {
        let path = self.file();
        let bytes = serde_json::to_vec(snapshot).map_err(|e| StateError::Invalid {
            path: path.clone(),
            fault: e.into(),
        })?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge { path });
        }
        let temporary = self.dir.join(format!("{FILE_NAME}.tmp"));
        // Left by a crash mid-write, or planted: created anew, never opened as found.
        match fs::remove_file(&temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&temporary)(e)),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(&bytes).map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        drop(file);
        fs::rename(&temporary, &path).map_err(io_error(&path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir))
    }
}

/// Refuses `meta` unless this process's uid owns it and only the owner may write it.
fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), StateError> {
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(StateError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

// === impl Snapshot ===

impl Snapshot {
    pub fn new(generation: String, images: Vec<AdmittedImage>) -> Self {
        Self {
            version: VERSION,
            verifier: VERIFIER_EPOCH,
            generation,
            images,
        }
    }

    /// Every bound and every field's form; the first fault found, as the reason the whole file
    /// is ignored.
    fn check(&self) -> Result<(), Fault> {
        if self.version != VERSION {
            return Err(Fault::Version(self.version));
        }
        if self.verifier != VERIFIER_EPOCH {
            return Err(Fault::Verifier(self.verifier));
        }
        if self.images.len() > MAX_ADMITTED {
            return Err(Fault::TooMany(self.images.len()));
        }
        let bounded = |s: &str| !s.is_empty() && s.len() <= MAX_FIELD_BYTES;
        for (i, image) in self.images.iter().enumerate() {
            // Stored as pullgate keys them: the canonical name, as a reference parses it.
            let canonical = Reference::parse(&image.repository).is_ok_and(|r| r.repository() == image.repository);
            if !bounded(&image.repository) || !canonical {
                return Err(Fault::Repository(i));
            }
            if !bounded(&image.id) {
                return Err(Fault::ImageId(i));
            }
            if image.verified.is_empty() {
                return Err(Fault::NoVerification(i));
            }
            for verification in &image.verified {
                if !bounded(&verification.rule) {
                    return Err(Fault::Rule(i));
                }
                if Digest::parse(&verification.digest).is_none() {
                    return Err(Fault::Digest(i));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
