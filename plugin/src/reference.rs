//! Image references, normalized the way containerd normalizes them, and digests.
//!
//! `nginx` becomes `docker.io/library/nginx:latest`; `ghcr.io/org/app@sha256:…` keeps its
//! digest. Policy globs and audit records always see the normalized form.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The registry Docker Hub images live on when a reference names no host.
pub const DOCKER_HUB: &str = "docker.io";

/// Longest reference accepted, as in the distribution reference grammar.
const MAX_REFERENCE_LEN: usize = 4096;

/// A `sha256:<64 lowercase hex>` content digest. Only valid digests can be constructed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// A reference that could not be parsed; the message says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct InvalidReference {
    input: String,
    why: &'static str,
}

/// A normalized image reference: registry host, repository path, and a tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    host: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

// === impl Digest ===

impl Digest {
    /// Parses `sha256:<hex>`. Other algorithms are refused: cosign and the CRI use sha256.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Reference ===

impl Reference {
    /// Parses and normalizes a reference as containerd does.
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        let bad = |why| InvalidReference {
            input: input.to_string(),
            why,
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        if input.len() > MAX_REFERENCE_LEN {
            return Err(bad("too long"));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).ok_or_else(|| bad("digest must be sha256:<64 hex>"))?),
            ),
            None => (input, None),
        };
        // A tag is a ':' after the last '/', so a host port is never taken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
            }
        }

        let (host, path) = match name.split_once('/') {
            // containerd maps the legacy Docker Hub name to docker.io before anything else.
            Some(("index.docker.io", rest)) => (DOCKER_HUB.to_string(), rest.to_string()),
            Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        if !valid_host(&host) {
            return Err(bad("registry host is not a valid host[:port]"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository path must be lowercase [a-z0-9] components joined by '.', '_', '__' or '-'",
            ));
        }
        let path = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        // As containerd does, a digest makes the tag meaningless: `app:v1@sha256:…` is
        // `app@sha256:…`. Keeping the tag would let a tag glob match an arbitrary digest,
        // and would move the tag to whatever digest was named.
        let tag = match (tag, &digest) {
            (_, Some(_)) => None,
            (Some(t), None) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
        };
        Ok(Self {
            host,
            path,
            tag,
            digest,
        })
    }

    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `host/path`, the name policy globs without a tag are matched against.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    /// `host/path@digest`: the reference pullgate pulls after verifying `digest`.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}/{}@{}", self.host, self.path, digest)
    }

    /// `host/path:tag`, when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}/{}:{}", self.host, self.path, t))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component is a host if it has a '.' or ':' or is `localhost`.
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    port_ok && name_ok
}

fn valid_path_component(component: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("bitnami/redis", "docker.io/bitnami/redis:latest"),
            ("127.0.0.1:5000/signed/app", "127.0.0.1:5000/signed/app:latest"),
            ("localhost/app:v1", "localhost/app:v1"),
            ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
        ];
        for (input, want) in cases {
            assert_eq!(Reference::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn keeps_digest_and_drops_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), d);
        assert_eq!(r.repository(), "127.0.0.1:5000/app");
        let both = Reference::parse(&format!("ghcr.io/a/b:v1@{d}")).unwrap();
        assert_eq!(
            both.to_string(),
            format!("ghcr.io/a/b@{d}"),
            "the digest wins, as in containerd"
        );
        assert_eq!(both.tagged(), None);
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.host(), "127.0.0.1:5000");
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "ghcr.io/a//b",
            "ghcr.io/a/b:",
            "ghcr.io/a/b:-x",
            "ghcr.io/a/b@sha256:abc",
            "ghcr.io/a/b@md5:0123",
            "ghcr.io/a-/b",
            "bad host/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn digest_only_parses_sha256_hex() {
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(64))).is_some());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(64))).is_none());
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
