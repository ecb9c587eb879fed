//! `signatureRepository`: where a rule's signatures and attestations live when they are not
//! beside the image (cosign's `COSIGN_REPOSITORY`).

use std::fmt;

use crate::reference::{InvalidReference, Reference};

/// A repository, normalized as image references are (`org/sigs` is `docker.io/org/sigs`), with
/// no tag or digest: cosign's `.sig`/`.att` tags and the image's referrers are looked up there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignatureRepository {
    /// The repository as a reference, which is what a registry session is opened on; its tag
    /// is the normalizer's `latest` and is never asked for.
    reference: Reference,
}

/// Why a `signatureRepository` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRepository {
    #[error("{0}")]
    Reference(#[from] InvalidReference),
    #[error("{0:?} names a tag or digest; a signature repository is a repository alone, like registry.example.com/org/signatures")]
    TagOrDigest(String),
}

// === impl SignatureRepository ===

impl SignatureRepository {
    pub fn parse(text: &str) -> Result<Self, InvalidRepository> {
        // A tag is a `:` after the last `/`; a `:` before it is a host's port.
        let last = text.rsplit('/').next().unwrap_or(text);
        if text.contains('@') || last.contains(':') {
            return Err(InvalidRepository::TagOrDigest(text.to_string()));
        }
        Ok(Self {
            reference: Reference::parse(text)?,
        })
    }

    /// The registry host, canonical.
    pub fn host(&self) -> &str {
        self.reference.host()
    }

    /// The repository path inside the registry.
    pub fn path(&self) -> &str {
        self.reference.path()
    }

    /// The repository as a reference, to open a registry session on.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

impl fmt::Display for SignatureRepository {
    /// `host/path`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.reference.host(), self.reference.path())
    }
}
