//! Image references, normalized the way containerd normalizes them, and digests.
//!
//! `nginx` becomes `docker.io/library/nginx:latest`; `ghcr.io/org/app@sha256:…` keeps its
//! digest. The registry host is kept in one canonical form ([`canonical_host`]), so every
//! spelling of a registry is one identity: policy globs, caches, registry requests and audit
//! records always see the normalized form.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The registry Docker Hub images live on when a reference names no host.
pub const DOCKER_HUB: &str = "docker.io";

/// Other names of Docker Hub's registry: containerd pulls `registry-1.docker.io/x` and
/// `index.docker.io/x` from the same place as `docker.io/x`.
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// The port a registry host without one is reached on (registries speak HTTPS).
const DEFAULT_PORT: u16 = 443;

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

        let (spelled, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (Some(first), rest),
            _ => (None, name),
        };
        let host = match spelled {
            Some(spelled) => canonical_host(spelled).ok_or_else(|| bad("registry host is not a valid host[:port]"))?,
            None => DOCKER_HUB.to_string(),
        };
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository path must be lowercase [a-z0-9] components joined by '.', '_', '__' or '-'",
            ));
        }
        let path = if host == DOCKER_HUB && !path.contains('/') {
            // containerd puts `library/` only before names written with no host, `docker.io`
            // or `index.docker.io`; under any other spelling it asks Docker Hub for another
            // repository, so no one image can be named here.
            if !matches!(spelled, None | Some("docker.io" | "index.docker.io")) {
                return Err(bad(
                    "a Docker Hub image without a namespace is written docker.io/library/<name> under this host spelling",
                ));
            }
            format!("library/{path}")
        } else {
            path.to_string()
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

    /// The registry host in its canonical form (`docker.io`, `127.0.0.1:5000`), whatever
    /// spelling the reference was written in.
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

/// Docker's rule: the first `/`-separated component of a reference (or of a pattern of one)
/// names a registry host when it has a `.` or `:` or is `localhost`.
pub fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

/// `host[:port]` in the one form all its spellings share: the name lowercased (DNS names are
/// case-insensitive), the port as a plain number and dropped when it is the default 443, and
/// Docker Hub's other names as `docker.io`. `None` when it is no valid `host[:port]`.
pub fn canonical_host(host: &str) -> Option<String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port = match port {
        None => None,
        // Leading zeros are allowed by the reference grammar and by Go's dialer, so containerd
        // reaches `:0443` as 443; the reference length bounds how many there can be.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.trim_start_matches('0').parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(DEFAULT_PORT) => None,
                Ok(port) => Some(port),
            }
        }
        Some(_) => return None,
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !name_ok {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(match port {
        None if DOCKER_HUB_ALIASES.contains(&name.as_str()) => DOCKER_HUB.to_string(),
        None => name,
        Some(port) => format!("{name}:{port}"),
    })
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

    /// Every spelling of a registry host is one identity (SPEC §4), so a rule written for one
    /// meets them all.
    #[test]
    fn host_spellings_share_one_canonical_form() {
        let cases = [
            ("EVIL.example.com/app:v1", "evil.example.com/app:v1"),
            ("Evil.Example.Com/team/app", "evil.example.com/team/app:latest"),
            ("evil.example.com:443/app", "evil.example.com/app:latest"),
            ("evil.example.com:0443/app", "evil.example.com/app:latest"),
            ("EVIL.EXAMPLE.COM:443/app", "evil.example.com/app:latest"),
            ("registry-1.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
            ("registry-1.docker.io/bitnami/redis", "docker.io/bitnami/redis:latest"),
            (
                "Registry-1.Docker.IO:443/library/nginx",
                "docker.io/library/nginx:latest",
            ),
            ("INDEX.docker.io/library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io:443/library/nginx", "docker.io/library/nginx:latest"),
            ("Docker.IO/library/nginx", "docker.io/library/nginx:latest"),
            ("localhost:443/app", "localhost/app:latest"),
            ("127.0.0.1:05000/app", "127.0.0.1:5000/app:latest"),
            ("127.0.0.1:0005000/app", "127.0.0.1:5000/app:latest"),
            ("LOCALHOST:5000/app", "localhost:5000/app:latest"),
            ("docker.io:5000/app", "docker.io:5000/app:latest"),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
        let hub = Reference::parse("nginx").unwrap();
        for spelling in [
            "registry-1.docker.io/library/nginx",
            "index.docker.io/nginx",
            "DOCKER.io/library/nginx",
        ] {
            assert_eq!(Reference::parse(spelling).unwrap(), hub, "{spelling}");
        }
        assert_eq!(canonical_host("Registry-1.docker.io:443").as_deref(), Some("docker.io"));
        assert_eq!(canonical_host("127.0.0.1:5000").as_deref(), Some("127.0.0.1:5000"));
    }

    /// Only the host is case-insensitive; and a Docker Hub name without a namespace means
    /// `library/` only under the spellings containerd gives it that meaning.
    #[test]
    fn refuses_spellings_containerd_reads_as_another_image() {
        for bad in [
            "evil.example.com/App",
            "EVIL.example.com/Team/app",
            "registry-1.docker.io/nginx",
            "Docker.io/nginx",
            "docker.io:443/nginx",
            "INDEX.DOCKER.IO/nginx",
            "evil.example.com:65536/app",
            "evil.example.com:0/app",
            "evil.example.com:/app",
            "evil.example.com:123456/app",
            "evil.example.com:000/app",
            "evil.example.com:+443/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
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
