//! Globs over image references and pod namespaces.
//!
//! In `images`, `*` matches within one path segment and `**` across `/`. A pattern without a tag
//! or digest names repositories and so matches every tag and digest of them; a pattern with a
//! tag or digest must match those too. Namespace globs know only `*`.
//!
//! The registry host of an image pattern is put in the canonical form references are
//! compared in (`Docker.io`, `registry-1.docker.io` and `docker.io:443` are `docker.io`), so a
//! pattern meets every spelling of what it names. `**` may not stand in the host: there it
//! would reach into the path (`**.corp.example/**` matching `evil.io/x.corp.example/app`).

use std::fmt;

use crate::reference::{canonical_host, looks_like_host, Reference, DOCKER_HUB};

/// Longest glob accepted; no image reference is longer than this.
const MAX_GLOB_LEN: usize = 4096;

/// A pattern in a rule's `images`, such as `registry.example.com/team/**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGlob {
    pattern: String,
    repository: Glob,
    tag: Option<Glob>,
    digest: Option<Glob>,
}

/// A pattern in a rule's `namespaces` or `excludeNamespaces`, such as `team-*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceGlob {
    pattern: String,
    glob: Glob,
}

/// Why a pattern is not a glob pullgate can match.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("empty pattern")]
    Empty,
    #[error("longer than {MAX_GLOB_LEN} characters")]
    TooLong,
    #[error("`{0}` is not supported; the only wildcards are `*` and `**`")]
    UnsupportedWildcard(char),
    #[error("{0:?} cannot appear in an image reference")]
    BadImageChar(char),
    #[error("{0:?} cannot appear in a namespace name (lowercase letters, digits and '-')")]
    BadNamespaceChar(char),
    #[error("`***` is not a wildcard; use `*` within a segment or `**` across segments")]
    TripleStar,
    #[error("namespaces have no '/', so `**` means nothing here; use `*`")]
    DoubleStarInNamespace,
    #[error("empty path segment")]
    EmptySegment,
    #[error("empty tag after ':'")]
    EmptyTag,
    #[error("empty digest after '@'")]
    EmptyDigest,
    #[error("repository paths are lowercase")]
    Uppercase,
    #[error("`**` cannot stand in the registry host, where it would also match across `/` into the repository path; use `*`, which stays within the host")]
    DoubleStarInHost,
    #[error("hosts are compared without the default port 443; write the host without `:443`")]
    DefaultPortWithWildcard,
    #[error("`*` matches within one path segment, so alone it matches no image; use `**` to match every image")]
    LoneStar,
    #[error("names a registry but no repository; write {0}/** to match every image in it")]
    HostOnly(String),
    #[error("not a fully qualified image name (references are normalized before matching); write {0}")]
    NotQualified(String),
}

/// A compiled pattern: literal bytes and the two wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Glob {
    elems: Vec<Elem>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Byte(u8),
    /// Any run of bytes without a '/'.
    Star,
    /// Any run of bytes.
    DoubleStar,
}

// === impl ImageGlob ===

impl ImageGlob {
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        check_length(pattern)?;
        if pattern.contains("***") {
            return Err(GlobError::TripleStar);
        }
        for c in pattern.chars() {
            match c {
                '?' | '[' | ']' | '{' | '}' => return Err(GlobError::UnsupportedWildcard(c)),
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' | '/' | ':' | '@' | '*' => {}
                _ => return Err(GlobError::BadImageChar(c)),
            }
        }

        let (name, digest) = match pattern.split_once('@') {
            Some((_, "")) => return Err(GlobError::EmptyDigest),
            Some((name, digest)) => (name, Some(digest)),
            None => (pattern, None),
        };
        if let Some(c) = digest.and_then(|d| d.chars().find(|c| matches!(c, '@' | '/'))) {
            return Err(GlobError::BadImageChar(c));
        }
        // As in a reference, a tag is a ':' after the last '/', so a host port is never one.
        let last_segment = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_segment..].find(':') {
            Some(i) if i + 1 == name.len() - last_segment => return Err(GlobError::EmptyTag),
            Some(i) => (&name[..last_segment + i], Some(&name[last_segment + i + 1..])),
            None => (name, None),
        };
        if tag.is_some_and(|t| t.contains(':')) {
            return Err(GlobError::BadImageChar(':'));
        }
        // Messages suggest the pattern as it is matched: its host canonical, its tag or digest
        // as written.
        let suffix = &pattern[repository.len()..];
        let repository = canonical_repository(repository)?;
        check_repository(&repository, &format!("{repository}{suffix}"))?;

        Ok(Self {
            pattern: pattern.to_string(),
            repository: Glob::compile(&repository),
            tag: tag.map(Glob::compile),
            digest: digest.map(Glob::compile),
        })
    }

    /// Whether `image` (normalized) is one this pattern names.
    pub fn matches(&self, image: &Reference) -> bool {
        let repository = image.host().bytes().chain([b'/']).chain(image.path().bytes());
        if !self.repository.matches(repository) {
            return false;
        }
        let tag_ok = match &self.tag {
            None => true,
            Some(glob) => image.tag().is_some_and(|tag| glob.matches(tag.bytes())),
        };
        let digest_ok = match &self.digest {
            None => true,
            Some(glob) => image.digest().is_some_and(|d| glob.matches(d.as_str().bytes())),
        };
        tag_ok && digest_ok
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for ImageGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// The repository pattern with its registry host in canonical form, as references have
/// theirs; refuses `**` in the host, and a wildcard host with the default port, which has no
/// canonical form (`*:443` would become `*`, every host on any port).
fn canonical_repository(repository: &str) -> Result<String, GlobError> {
    let Some((host, path)) = repository.split_once('/') else {
        // A lone segment is every image (`**`) or refused by `check_repository`.
        return Ok(repository.to_string());
    };
    if host.contains("**") {
        return Err(GlobError::DoubleStarInHost);
    }
    if !looks_like_host(host) {
        return Ok(repository.to_string());
    }
    let host = if host.contains('*') {
        let default_port = host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()) && port.parse() == Ok(443u32));
        if default_port {
            return Err(GlobError::DefaultPortWithWildcard);
        }
        host.to_ascii_lowercase()
    } else {
        // A host no reference can have matches nothing either way; it is only lowercased.
        canonical_host(host).unwrap_or_else(|| host.to_ascii_lowercase())
    };
    Ok(format!("{host}/{path}"))
}

/// Refuses repository patterns that could never match a normalized reference, naming the
/// pattern the author most likely meant.
fn check_repository(repository: &str, pattern: &str) -> Result<(), GlobError> {
    if repository.is_empty() {
        return Err(GlobError::EmptySegment);
    }
    let Some((first, path)) = repository.split_once('/') else {
        return match repository {
            "**" => Ok(()),
            "*" => Err(GlobError::LoneStar),
            _ if looks_like_host(repository) => Err(GlobError::HostOnly(pattern.to_string())),
            _ => Err(GlobError::NotQualified(format!("{DOCKER_HUB}/library/{pattern}"))),
        };
    };
    if repository.split('/').any(str::is_empty) {
        return Err(GlobError::EmptySegment);
    }
    if !looks_like_host(first) && first != "*" && first != "**" {
        return Err(GlobError::NotQualified(format!("{DOCKER_HUB}/{pattern}")));
    }
    // Docker Hub images without a namespace are normalized into `library/`.
    if first == DOCKER_HUB && !path.contains('/') && path != "**" {
        let rest = &pattern[DOCKER_HUB.len() + 1..];
        return Err(GlobError::NotQualified(format!("{DOCKER_HUB}/library/{rest}")));
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(GlobError::Uppercase);
    }
    Ok(())
}

// === impl NamespaceGlob ===

impl NamespaceGlob {
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        check_length(pattern)?;
        for c in pattern.chars() {
            match c {
                '?' | '[' | ']' | '{' | '}' => return Err(GlobError::UnsupportedWildcard(c)),
                'a'..='z' | '0'..='9' | '-' | '*' => {}
                _ => return Err(GlobError::BadNamespaceChar(c)),
            }
        }
        if pattern.contains("**") {
            return Err(GlobError::DoubleStarInNamespace);
        }
        Ok(Self {
            pattern: pattern.to_string(),
            glob: Glob::compile(pattern),
        })
    }

    /// Whether the pod namespace `namespace` matches; `""` (no sandbox) matches only `*`.
    pub fn matches(&self, namespace: &str) -> bool {
        self.glob.matches(namespace.bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for NamespaceGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

fn check_length(pattern: &str) -> Result<(), GlobError> {
    if pattern.is_empty() {
        return Err(GlobError::Empty);
    }
    if pattern.len() > MAX_GLOB_LEN {
        return Err(GlobError::TooLong);
    }
    Ok(())
}

// === impl Glob ===

impl Glob {
    /// Compiles a pattern whose characters the caller has checked; `**` is one element.
    fn compile(pattern: &str) -> Self {
        let mut elems = Vec::with_capacity(pattern.len());
        let mut bytes = pattern.bytes().peekable();
        while let Some(b) = bytes.next() {
            elems.push(match b {
                b'*' if bytes.next_if_eq(&b'*').is_some() => Elem::DoubleStar,
                b'*' => Elem::Star,
                b => Elem::Byte(b),
            });
        }
        Self { elems }
    }

    /// Runs the pattern as a nondeterministic automaton over `text`: linear in the text for a
    /// given pattern, however many wildcards it has, so no pattern can make matching slow.
    fn matches(&self, text: impl Iterator<Item = u8>) -> bool {
        let n = self.elems.len();
        let mut active = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        active[0] = true;
        self.close(&mut active);
        for c in text {
            next.fill(false);
            for (i, elem) in self.elems.iter().enumerate() {
                if !active[i] {
                    continue;
                }
                match *elem {
                    Elem::Byte(b) if b == c => next[i + 1] = true,
                    Elem::Byte(_) => {}
                    Elem::Star if c == b'/' => {}
                    Elem::Star | Elem::DoubleStar => next[i] = true,
                }
            }
            self.close(&mut next);
            std::mem::swap(&mut active, &mut next);
            if !active.contains(&true) {
                return false;
            }
        }
        active[n]
    }

    /// Adds the states reachable without reading a byte: a wildcard may match nothing.
    fn close(&self, states: &mut [bool]) {
        for (i, elem) in self.elems.iter().enumerate() {
            if states[i] && matches!(elem, Elem::Star | Elem::DoubleStar) {
                states[i + 1] = true;
            }
        }
    }
}
