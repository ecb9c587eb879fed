//! The tamper-evident audit log (SPEC §6): one JSON line per decision, each carrying the
//! SHA-256 of the line before it, written and synced before kubelet gets its answer.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

mod peer_refusals;
mod record;
#[cfg(test)]
mod tests;

pub use peer_refusals::{Counted, Peer, PeerRefusals, Refused, WINDOW as PEER_REFUSAL_WINDOW};
pub use record::{Attested, Decision, Event, Judged, Outcome, Record, Signature};

/// `prev` of the first record ever written.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Lines longer than this are not audit records; reading stops there instead of growing.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// An append-only, hash-chained audit log. Cloning shares the one writer.
#[derive(Clone)]
pub struct AuditLog {
    chain: Arc<Mutex<Chain>>,
}

struct Chain {
    path: PathBuf,
    file: File,
    /// `seq` of the last record written.
    seq: u64,
    /// `sha256:<hex>` of the last line written, without its newline.
    prev: String,
    /// Set from a failed write until a write, or a probe, succeeds again.
    failing: Option<Failing>,
}

/// What a failed write left to do before the log is whole and writable again.
struct Failing {
    /// Where the file must be cut back to: the length it had before the failed write, which
    /// may have left part of a line (or a whole unsynced one) behind. `None` once cut.
    cut_to: Option<u64>,
    /// The length of the line that could not be written: what a probe must be able to write.
    needed: usize,
}

/// A record could not be made durable; the decision it describes must not take effect.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Where `verify_chain` found the chain broken.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the file.
    pub line: usize,
    pub why: String,
}

/// What an intact chain holds.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first record's `prev` is not the genesis value: the file continues a rotated one.
    pub continues_earlier_file: bool,
}

/// The fields every line starts with, then the record itself.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    prev: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or creates) the log and continues its chain from the last complete line.
    ///
    /// A torn last line — a write that was cut off, so never acknowledged to kubelet — is
    /// truncated away, because appending after it would break the chain for good.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        let (seq, prev, keep_len) = last_record(&mut file).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if keep_len < len {
            tracing::warn!(path = %path.display(), dropped_bytes = len - keep_len, "audit log ended in a torn record; truncating it");
            file.set_len(keep_len).map_err(err)?;
            file.sync_data().map_err(err)?;
        }
        let chain = Chain {
            path: path.to_owned(),
            file,
            seq,
            prev,
            failing: None,
        };
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
        })
    }

    /// Appends `record` and syncs it to disk. Returns the record's `seq`.
    ///
    /// On failure the file is cut back, through the open handle, to the length it had before
    /// the write, and `seq`/`prev` stay where they were: the next record continues the chain.
    /// That holds for a line whose bytes all reached the file but whose sync failed, too: the
    /// caller is told there is no record (an enforced pull is refused), so a line left in the
    /// file would tell of a decision that never took effect; and after a failed sync nobody
    /// knows which of its bytes are on disk, while a cut that syncs is known. The path is never
    /// read here: after a rotation it names another file.
    pub fn append(&self, record: &Record) -> Result<u64, AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        chain.finish_cut()?;
        let seq = chain.seq + 1;
        let line = Line {
            seq,
            time: now_rfc3339(),
            prev: &chain.prev,
            record,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| chain.error(io::Error::other(e)))?;
        let hash = line_hash(&bytes);
        bytes.push(b'\n');
        let before = match chain.file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => {
                chain.failed(None, bytes.len());
                return Err(chain.error(e));
            }
        };
        if let Err(e) = chain.file.write_all(&bytes).and_then(|()| chain.file.sync_data()) {
            chain.failed(Some(before), bytes.len());
            // A cut that fails now is retried before the next write, which waits for it.
            let _ = chain.finish_cut();
            return Err(chain.error(e));
        }
        chain.seq = seq;
        chain.prev = hash;
        chain.failing = None;
        Ok(seq)
    }

    /// Whether a record could be written now. While the log is healthy this touches nothing;
    /// after a failed write it finishes cutting the file back, then checks there is room for a
    /// line as long as the failed one, writing nothing. A success makes the log healthy, so
    /// `/readyz` sees a recovery without waiting for a pull.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(needed) = chain.failing.as_ref().map(|f| f.needed) else {
            return Ok(());
        };
        chain.probe(needed)
    }

    /// Makes room for a line of `needed` bytes now, writing nothing: for a record that can only
    /// be written after what it records has happened (see [`room`]).
    pub fn reserve(&self, needed: usize) -> Result<(), AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        chain.probe(needed)
    }

    /// [`AuditLog::reserve`] without blocking the async runtime.
    pub async fn reserve_async(&self, needed: usize) -> Result<(), AuditError> {
        let log = self.clone();
        let path = self.path();
        tokio::task::spawn_blocking(move || log.reserve(needed))
            .await
            .unwrap_or_else(|join| {
                Err(AuditError {
                    path,
                    source: io::Error::other(join),
                })
            })
    }

    /// Whether the last write failed and no write or probe has succeeded since.
    pub fn failing(&self) -> bool {
        self.chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .failing
            .is_some()
    }

    /// Appends `record` without blocking the async runtime.
    pub async fn append_async(&self, record: Record) -> Result<u64, AuditError> {
        let log = self.clone();
        let path = self.path();
        tokio::task::spawn_blocking(move || log.append(&record))
            .await
            .unwrap_or_else(|join| {
                Err(AuditError {
                    path,
                    source: io::Error::other(join),
                })
            })
    }

    /// [`AuditLog::check_writable`] without blocking the async runtime.
    pub async fn check_writable_async(&self) -> Result<(), AuditError> {
        let log = self.clone();
        let path = self.path();
        tokio::task::spawn_blocking(move || log.check_writable())
            .await
            .unwrap_or_else(|join| {
                Err(AuditError {
                    path,
                    source: io::Error::other(join),
                })
            })
    }

    pub fn path(&self) -> PathBuf {
        self.chain.lock().unwrap_or_else(|p| p.into_inner()).path.clone()
    }

    /// After a rotation (the file moved away from the log's path), starts writing at the path
    /// again. A new empty file continues the chain: its first record's `seq` follows and its
    /// `prev` is the hash of the last record of the moved file. A non-empty file found there is
    /// continued from its own last record, as on start. Returns whether a new file was opened.
    ///
    /// On failure the moved file stays open and records keep going there: nothing is lost.
    pub fn reopen(&self) -> Result<bool, AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let open = chain.file.metadata().map_err(|e| chain.error(e))?;
        match fs::metadata(&chain.path) {
            Ok(there) if there.dev() == open.dev() && there.ino() == open.ino() => return Ok(false),
            _ => {}
        }
        // The moved file is left whole: what a failed write left in it is cut off first.
        chain.finish_cut()?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&chain.path)
            .map_err(|e| chain.error(e))?;
        let (seq, prev, keep_len) = last_record(&mut file).map_err(|e| chain.error(e))?;
        let len = file.metadata().map_err(|e| chain.error(e))?.len();
        if keep_len < len {
            file.set_len(keep_len).map_err(|e| chain.error(e))?;
        }
        if keep_len > 0 {
            (chain.seq, chain.prev) = (seq, prev);
        }
        file.sync_data().map_err(|e| chain.error(e))?;
        // The new file's name must survive a crash too.
        if let Some(dir) = chain.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| chain.error(e))?;
        }
        chain.file = file;
        Ok(true)
    }
}

impl Chain {
    /// Whether a line of `needed` bytes can be written now: the file-size limit allows it and
    /// the filesystem gives its blocks (see [`room`]). Nothing is written, so readers of the
    /// live log, and a file rotated away, never see it change. A success makes the log healthy;
    /// a failure makes it unhealthy until a write or another check succeeds.
    fn probe(&mut self, needed: usize) -> Result<(), AuditError> {
        let needed = needed.min(MAX_LINE_BYTES);
        self.finish_cut()?;
        let checked = self
            .file
            .metadata()
            .and_then(|meta| room(&self.file, meta.len(), needed));
        if let Err(e) = checked {
            if self.failing.is_none() {
                self.failing = Some(Failing { cut_to: None, needed });
            }
            return Err(self.error(e));
        }
        self.failing = None;
        Ok(())
    }

    fn error(&self, source: io::Error) -> AuditError {
        AuditError {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a failed write: the file must go back to `cut_to` before anything else is
    /// written, and the log is not writable until a write of `needed` bytes succeeds.
    fn failed(&mut self, cut_to: Option<u64>, needed: usize) {
        self.failing = Some(Failing { cut_to, needed });
    }

    /// Cuts the file back to where it ended before a failed write, through the open handle,
    /// and syncs the cut. Until that succeeds nothing more is written: a line appended after
    /// a leftover would break the chain for good.
    fn finish_cut(&mut self) -> Result<(), AuditError> {
        let Some(len) = self.failing.as_ref().and_then(|f| f.cut_to) else {
            return Ok(());
        };
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.error(e))?;
        if let Some(failing) = &mut self.failing {
            failing.cut_to = None;
        }
        Ok(())
    }
}

/// `sha256:<hex>` of one line's bytes, without its newline.
pub fn line_hash(line: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(line)))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Finds the last complete line: returns its `seq`, its hash, and the file length that ends
/// right after it (anything beyond is a torn write).
fn last_record(file: &mut File) -> io::Result<(u64, String, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, GENESIS.to_string(), 0));
    }
    // Read the tail; one record is far smaller than this window.
    let window = len.min(2 * MAX_LINE_BYTES as u64);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.take(window).read_to_end(&mut tail)?;

    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        if window == len {
            // No complete line at all: the only line is torn.
            return Ok((0, GENESIS.to_string(), 0));
        }
        return Err(io::Error::other("last line is longer than any audit record"));
    };
    let start = tail[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if start == 0 && window < len {
        return Err(io::Error::other("last line is longer than any audit record"));
    }
    let line = &tail[start..end];
    let seq = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("seq")?.as_u64())
        .ok_or_else(|| io::Error::other("last line is not an audit record with a seq"))?;
    Ok((seq, line_hash(line), len - window + end as u64 + 1))
}

/// Checks the whole chain of the log at `path`: each line parses, `seq` counts up by one, and
/// each `prev` is the hash of the line before. The first break is reported.
pub fn verify_chain(path: &Path) -> io::Result<Result<ChainSummary, ChainBreak>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut summary = ChainSummary {
        records: 0,
        first_seq: None,
        last_seq: None,
        continues_earlier_file: false,
    };
    let mut prev_hash: Option<String> = None;
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(Ok(summary));
        }
        line_no += 1;
        let broken = |why: String| Ok(Err(ChainBreak { line: line_no, why }));
        if buf.last() != Some(&b'\n') {
            return broken(if n > MAX_LINE_BYTES {
                "line too long".into()
            } else {
                "torn line: no newline at the end".into()
            });
        }
        let line = &buf[..buf.len() - 1];
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return broken(format!("not valid JSON: {e}")),
        };
        let (Some(seq), Some(prev)) = (
            value.get("seq").and_then(|s| s.as_u64()),
            value.get("prev").and_then(|p| p.as_str()),
        ) else {
            return broken("missing seq or prev".into());
        };
        match (&prev_hash, summary.last_seq) {
            (Some(expected), Some(last)) => {
                if seq != last + 1 {
                    return broken(format!("seq {seq} follows seq {last}"));
                }
                if prev != expected {
                    return broken(format!(
                        "prev {prev} is not the hash of line {} ({expected})",
                        line_no - 1
                    ));
                }
            }
            _ => {
                summary.first_seq = Some(seq);
                if prev != GENESIS {
                    if seq <= 1 {
                        return broken(format!("first record (seq {seq}) must have prev {GENESIS}"));
                    }
                    summary.continues_earlier_file = true;
                }
            }
        }
        summary.records += 1;
        summary.last_seq = Some(seq);
        prev_hash = Some(line_hash(line));
    }
}

/// Whether `needed` more bytes fit after `len` bytes of `file`: RLIMIT_FSIZE allows the file to
/// grow that far, and the filesystem allocates their blocks now, past the end without changing
/// the size (so a disk that fills while a pull runs cannot take the record's room). A
/// filesystem that cannot preallocate is taken at its word.
fn room(file: &File, len: u64, needed: usize) -> io::Result<()> {
    use nix::{
        errno::Errno,
        fcntl::{fallocate, FallocateFlags},
        sys::resource::{getrlimit, Resource, RLIM_INFINITY},
    };
    let end = len.saturating_add(needed as u64);
    let (soft, _) = getrlimit(Resource::RLIMIT_FSIZE)?;
    if soft != RLIM_INFINITY && end > soft {
        return Err(Errno::EFBIG.into());
    }
    let (offset, length) = match (i64::try_from(len), i64::try_from(needed)) {
        (Ok(offset), Ok(length)) => (offset, length),
        _ => return Err(Errno::EFBIG.into()),
    };
    match fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, length) {
        Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
