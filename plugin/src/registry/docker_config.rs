//! A Docker `config.json` (`auths`, as `docker login`, kubelet's `/var/lib/kubelet/config.json`
//! and Kubernetes' `.dockerconfigjson` secrets write it), read once into a keyring and asked for
//! the credentials of one repository.
//!
//! Keys are matched the way kubelet's credential keyring matches them: a key is a host (which may
//! hold `*` globs, one per dot-separated label: `*.example.com`), optionally a port and a path
//! prefix, optionally written as an `http(s)://` URL with Docker's `/v1/` or `/v2/` suffix
//! (`https://index.docker.io/v1/` is Docker Hub). A key matches a repository when the host has as
//! many labels and each matches, the port is the same, and the key's path is a prefix of the
//! repository's path. Of several matching keys the most specific wins: the longest path, then a
//! host without globs. Two deliberate differences from kubelet: a path prefix ends at a `/`
//! (`team` does not cover `teammate`), and one credential is used where kubelet would try each
//! match in turn. Hosts are compared in the canonical form references carry, so every spelling of
//! a registry (`GHCR.io:443`, `index.docker.io`) finds its key. Credential helpers (`credsStore`,
//! `credHelpers`) are not run.

use std::{collections::BTreeMap, fmt, path::Path, path::PathBuf};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

use super::Credentials;
use crate::{
    config::DockerConfigFile,
    file::{read_bounded, ReadError},
};

/// A Docker config larger than this is refused (a config with hundreds of registries is a few
/// tens of KiB).
pub const MAX_DOCKER_CONFIG_BYTES: u64 = 1024 * 1024;

/// More `auths` entries than this are refused.
pub const MAX_ENTRIES: usize = 1000;

/// The credentials of a Docker config, by key, ready to be matched against repositories.
#[derive(Clone, Default)]
pub struct DockerConfig {
    /// Where it was read from, to name in messages (`None` for an empty keyring).
    file: Option<PathBuf>,
    entries: Vec<Entry>,
}

/// One `auths` key, parsed, with its credentials.
#[derive(Clone)]
struct Entry {
    /// The key as written, to name it in messages.
    written: String,
    /// Host labels, lowercase; a label may hold globs.
    labels: Vec<String>,
    port: Option<u16>,
    /// Path segments the repository's path must start with.
    path: Vec<String>,
    credentials: Credentials,
}

/// A Docker config that could not be read or used; names the file, and the line where known.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: ReadError },
    #[error("{}:{line}: not a Docker config.json: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}{}: auths key {key:?}: {why}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Entry {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        why: &'static str,
    },
    #[error("{}: {count} auths entries; at most {MAX_ENTRIES} are read", path.display())]
    TooMany { path: PathBuf, count: usize },
}

#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

// === impl DockerConfig ===

impl DockerConfig {
    /// A keyring holding nothing: every registry is asked anonymously.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads and parses the Docker config at `path`, at most [`MAX_DOCKER_CONFIG_BYTES`].
    pub fn load(path: &Path) -> Result<Self, DockerConfigError> {
        let bytes = read_bounded(path, MAX_DOCKER_CONFIG_BYTES).map_err(|source| DockerConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Reads the Docker config `dockerConfig` names: nothing when it is disabled, kubelet's own
    /// file when it exists by default, and a configured file, which must exist.
    pub fn read(file: &DockerConfigFile) -> Result<Self, DockerConfigError> {
        match file {
            DockerConfigFile::Disabled => Ok(Self::empty()),
            DockerConfigFile::Default(path) => match Self::load(path) {
                Err(DockerConfigError::Read {
                    source: ReadError::Io(e),
                    ..
                }) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
                read => read,
            },
            DockerConfigFile::Path(path) => Self::load(path),
        }
    }

    /// Parses `json` as if read from `path`. Every key must be usable, and every `auth` field
    /// base64 `user:password`: a config that says something pullgate cannot follow is refused
    /// whole rather than half used.
    pub fn parse(json: &[u8], path: &Path) -> Result<Self, DockerConfigError> {
        let document: Document = serde_json::from_slice(json).map_err(|e| DockerConfigError::Parse {
            path: path.to_owned(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if document.auths.len() > MAX_ENTRIES {
            return Err(DockerConfigError::TooMany {
                path: path.to_owned(),
                count: document.auths.len(),
            });
        }
        let text = String::from_utf8_lossy(json);
        let mut entries = Vec::with_capacity(document.auths.len());
        for (key, auth) in document.auths {
            let bad = |why| DockerConfigError::Entry {
                path: path.to_owned(),
                line: line_of_key(&text, &key),
                key: key.clone(),
                why,
            };
            let (labels, port, key_path) = parse_key(&key).ok_or_else(|| bad("not a registry host[:port][/path]"))?;
            let credentials = entry_credentials(auth).ok_or_else(|| bad("`auth` is not base64 of user:password"))?;
            let credentials = credentials.found_in(path, &key);
            entries.push(Entry {
                written: key,
                labels,
                port,
                path: key_path,
                credentials,
            });
        }
        // The most specific key first: the longest path, then a host without globs; the key as
        // written breaks ties, so the choice never depends on the file's order.
        entries.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.has_globs().cmp(&b.has_globs()))
                .then_with(|| b.written.cmp(&a.written))
        });
        Ok(Self {
            file: Some(path.to_owned()),
            entries,
        })
    }

    /// The credentials for repository `path` on registry `host` (canonical `host[:port]`), as the
    /// most specific matching key gives them; anonymous, saying so, when no key matches.
    pub fn credentials_for(&self, host: &str, path: &str) -> Credentials {
        let (name, port) = split_port(host);
        let labels: Vec<&str> = name.split('.').collect();
        let segments: Vec<&str> = path.split('/').collect();
        let found = self.entries.iter().find(|entry| {
            entry.port == port
                && entry.labels.len() == labels.len()
                && entry
                    .labels
                    .iter()
                    .zip(&labels)
                    .all(|(glob, label)| label_matches(glob, label))
                && entry.path.len() <= segments.len()
                && entry.path.iter().zip(&segments).all(|(want, have)| want == have)
        });
        match found {
            Some(entry) => entry.credentials.clone(),
            None => Credentials::not_in_docker_config(self.file.as_deref()),
        }
    }

    /// How many keys the config holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for DockerConfig {
    /// Keys only: never the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("file", &self.file)
            .field("keys", &self.entries.iter().map(|e| &e.written).collect::<Vec<_>>())
            .finish()
    }
}

// === impl Entry ===

impl Entry {
    fn has_globs(&self) -> bool {
        self.labels.iter().any(|l| l.contains(['*', '?', '[']))
    }
}

/// A key's host labels, port and path segments: the scheme dropped, Docker's `/v1/` and `/v2/`
/// API suffixes dropped, the host in canonical form. `None` for a key that names no host.
fn parse_key(key: &str) -> Option<(Vec<String>, Option<u16>, Vec<String>)> {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    // Docker's API suffix `/v1/` or `/v2/` (or the bare `v1`, `v2`) is dropped as kubelet drops
    // it, from the end only: `host/v2/team` is the repositories under `v2/team`, not `team`.
    let api_suffix = path.ends_with('/') || segments.len() == 1;
    if api_suffix && segments.last().is_some_and(|s| s == "v1" || s == "v2") {
        segments.pop();
    }
    let has_globs = host.contains(['*', '?', '[']);
    let host = if has_globs {
        // Globs are no valid host, so only the case and the default port are made canonical.
        let host = host.to_ascii_lowercase();
        host.strip_suffix(":443").map(str::to_string).unwrap_or(host)
    } else {
        crate::reference::canonical_host(host)?
    };
    let (name, port) = split_port(&host);
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return None;
    }
    if host.contains(':') && port.is_none() {
        return None;
    }
    Some((name.split('.').map(str::to_string).collect(), port, segments))
}

/// `name` and the port of a canonical `host[:port]`.
fn split_port(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((name, port)) => (name, port.parse().ok()),
        None => (host, None),
    }
}

/// One host label against one label of a key, which may hold `*` (any run of characters within
/// the label), `?` (one character) and `[...]` classes, as kubelet's `filepath.Match` reads them.
fn label_matches(glob: &str, label: &str) -> bool {
    glob_match(glob.as_bytes(), label.as_bytes())
}

/// Wildcard matching that backtracks only to the last `*`, so no glob takes more than
/// glob × text steps.
fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // Where to resume after the last `*`: the glob after it, and the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if glob.get(g) == Some(&b'*') {
            g += 1;
            star = Some((g, t));
            continue;
        }
        if let Some(taken) = one_character(&glob[g..], text[t]) {
            g += taken;
            t += 1;
            continue;
        }
        match star {
            Some((after, from)) => {
                g = after;
                t = from + 1;
                star = Some((after, from + 1));
            }
            None => return false,
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

/// How many bytes of `glob` its first element (a byte, `?` or a `[...]` class) takes when it
/// matches `c`; `None` when it does not match (or is `*`, or the glob is used up).
fn one_character(glob: &[u8], c: u8) -> Option<usize> {
    match glob.first()? {
        b'*' => None,
        b'?' => Some(1),
        b'[' => {
            let end = glob.iter().position(|&b| b == b']')?;
            let class = &glob[1..end];
            let (negated, class) = match class.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, class),
            };
            let mut inside = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    inside |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    inside |= class[i] == c;
                    i += 1;
                }
            }
            (inside != negated).then_some(end + 1)
        }
        &b => (b == c).then_some(1),
    }
}

/// The credentials one `auths` entry holds; `None` when its `auth` field is not base64
/// `user:password`.
fn entry_credentials(entry: AuthEntry) -> Option<Credentials> {
    let auth = entry.auth.trim();
    if entry.username.is_empty() && !auth.is_empty() {
        let pair = BASE64.decode(auth).ok().and_then(|raw| String::from_utf8(raw).ok())?;
        pair.split_once(':')?;
    }
    Some(Credentials::from_cri(Some(&pullgate_proto::cri::AuthConfig {
        username: entry.username,
        password: entry.password,
        auth: entry.auth,
        identity_token: entry.identitytoken,
        registry_token: entry.registrytoken,
        ..Default::default()
    })))
}

/// The line `key` is written on, as a JSON object key.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let quoted = serde_json::to_string(key).ok()?;
    let at = text.find(&quoted)?;
    Some(text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests;
