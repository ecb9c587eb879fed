//! Files read whole from disk (the configuration, the policy and its keys and trusted root, a
//! Docker config): each refused beyond its limit, never truncated.

use std::{fs::File, io::Read, path::Path};

/// A file that could not be read, or that is larger than allowed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

/// Reads all of `path` if it holds at most `limit` bytes.
///
/// The limit is enforced on what is read, not on the file's metadata: a file can grow between a
/// size check and the read, and pipes and devices report no size at all.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_file_bounded(File::open(path)?, limit)
}

/// As [`read_bounded`], from a file already opened (and checked) by the caller.
pub fn read_file_bounded(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    // One byte past the limit tells a file of exactly `limit` bytes from a longer one.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write, process::Command};

    use super::*;

    #[test]
    fn a_file_at_the_limit_is_read_and_one_past_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, [7u8; 16]).unwrap();
        assert_eq!(read_bounded(&path, 16).unwrap(), [7u8; 16]);
        assert!(matches!(read_bounded(&path, 15), Err(ReadError::TooLarge(15))));
        assert_eq!(read_bounded(&path, 15).unwrap_err().to_string(), "larger than 15 bytes");
        let missing = read_bounded(&dir.path().join("missing"), 16).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read: "), "{missing}");
    }

    /// A FIFO's metadata says 0 bytes whatever comes through it, as a file that grows after it
    /// was measured would: only what is read may count.
    #[test]
    fn a_file_whose_metadata_understates_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let made = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success());
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let writer = {
            let path = path.clone();
            // The reader stops one byte past the limit; the rest fails with EPIPE, which is fine.
            std::thread::spawn(move || {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .write_all(&[b'a'; 4096])
            })
        };
        assert!(matches!(read_bounded(&path, 1024), Err(ReadError::TooLarge(1024))));
        let _ = writer.join().unwrap();
    }
}
