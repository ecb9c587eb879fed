//! Bounded file reads: a policy or key file larger than its limit is refused, never truncated.

use std::{fs::File, io::Read, path::Path};

/// A file that could not be read, or that is larger than allowed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

/// Reads all of `path` if it holds at most `limit` bytes.
pub(super) fn bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path)?;
    // Reading one byte past the limit catches files that grew after a metadata check would have
    // run, and devices that never end.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}
