//! containerd's registry host configuration (its CRI `config_path`, SPEC §3 `registryHosts`):
//! one directory per registry under the root, each with a `hosts.toml` naming the hosts to ask
//! instead of (or before) the registry, in order, with what each may be asked and how to reach
//! it. Read here as containerd reads it (`core/remotes/docker/config/hosts.go`), so pullgate
//! asks the same hosts containerd pulls from.
//!
//! This module only reads and checks the files; `routes.rs` turns them into clients.

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    path::{Path, PathBuf},
};

use toml_edit::{Item, TableLike};

use crate::file::{read_bounded, ReadError};

#[cfg(test)]
mod tests;

/// More registry directories than this under `registryHosts` are refused: a node has a handful.
pub const MAX_NAMESPACES: usize = 256;

/// A `hosts.toml` larger than this is refused (a generous one is a few hundred bytes).
pub const MAX_HOSTS_FILE_BYTES: u64 = 64 * 1024;

/// More `[host."…"]` entries than this in one file are refused: each is tried in turn within
/// one pull's `verifyTimeout`.
pub const MAX_HOSTS: usize = 16;

/// Bounds on one host's `ca` files, `client` pairs and `header` values.
pub const MAX_FILES_PER_HOST: usize = 8;
pub const MAX_HEADERS: usize = 32;

/// Files looked at in a directory without `hosts.toml` (Docker's `*.crt`/`*.cert` layout).
const MAX_DIR_ENTRIES: usize = 256;

/// The fallback directory containerd consults for a registry without one of its own.
pub const DEFAULT_NAMESPACE: &str = "_default";

/// What a host may be asked, as `capabilities` says. A host without `resolve` is never asked to
/// turn a tag into a digest: a public mirror could name any digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(u8);

/// `http://` hosts are plain HTTP; anything else is TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where one host is reached: scheme, `host[:port]`, and the API root (`/v2`, or the path as
/// written with `override_path`), without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUrl {
    pub scheme: Scheme,
    pub host: String,
    pub path: String,
}

/// TLS settings of one host: `ca` files trusted besides the system's roots, `client`
/// certificate and key files (the key `None` when the certificate file holds it), `skip_verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Vec<PathBuf>,
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: Option<bool>,
}

/// One host of a registry, in the order it is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `None`: the registry itself (a `hosts.toml` without `server`), reached as pullgate reaches
    /// it without `hosts.toml` (its `registries` entry, if any).
    pub url: Option<HostUrl>,
    pub capabilities: Capabilities,
    pub tls: Tls,
    /// `header`: sent with every request to this host.
    pub header: Vec<(String, String)>,
}

/// Where a directory's hosts came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    HostsToml(PathBuf),
    /// No (or an empty) `hosts.toml`: the registry itself, with Docker's certificate files.
    CertFiles(PathBuf),
}

/// One directory of `registryHosts`: the hosts it names, the registry's own fallback last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub source: Source,
    pub hosts: Vec<Host>,
}

/// The whole of `registryHosts` as read at start and on each SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsDir {
    root: Option<PathBuf>,
    exists: bool,
    namespaces: BTreeMap<String, Namespace>,
}

/// A `registryHosts` directory or `hosts.toml` that cannot be used; names the file, and the
/// line where there is one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostsError {
    #[error("registryHosts {}: {message}", path.display())]
    Dir { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

// === impl Capabilities ===

impl Capabilities {
    pub const PULL: Self = Self(1);
    pub const RESOLVE: Self = Self(2);
    pub const PUSH: Self = Self(4);
    pub const REFERRERS: Self = Self(8);
    /// What a host without `capabilities` (or with an empty list) may do, as in containerd.
    pub const ALL: Self = Self(15);

    const NAMES: [(&'static str, Self); 4] = [
        ("pull", Self::PULL),
        ("resolve", Self::RESOLVE),
        ("push", Self::PUSH),
        ("referrers", Self::REFERRERS),
    ];

    pub fn has(self, wanted: Self) -> bool {
        self.0 & wanted.0 == wanted.0
    }

    fn parse(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl fmt::Display for Capabilities {
    /// `pull, resolve`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, c)| self.has(*c))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(", "))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{self}]")
    }
}

// === impl HostUrl ===

impl HostUrl {
    /// `scheme://host/path`: what request paths are appended to.
    pub fn root(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// `scheme://host`.
    pub fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host)
    }
}

impl fmt::Display for HostUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.root())
    }
}

// === impl HostsDir ===

impl HostsDir {
    /// No host configuration: every registry is reached directly (`registryHosts: ""`).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Reads every registry directory under `root`. A `root` that does not exist configures
    /// nothing, as for containerd; anything under it that cannot be read or parsed is an error.
    pub fn load(root: &Path) -> Result<Self, HostsError> {
        let dir_error = |message: String| HostsError::Dir {
            path: root.to_owned(),
            message,
        };
        let mut loaded = Self {
            root: Some(root.to_owned()),
            ..Self::default()
        };
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(loaded),
            Err(e) => return Err(dir_error(e.to_string())),
        };
        loaded.exists = true;
        for entry in entries {
            let entry = entry.map_err(|e| dir_error(e.to_string()))?;
            let path = entry.path();
            // Symbolic links are followed, as containerd's stat does.
            if !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if loaded.namespaces.len() == MAX_NAMESPACES {
                return Err(dir_error(format!("more than {MAX_NAMESPACES} registry directories")));
            }
            let namespace = Namespace::load(&path)?;
            loaded.namespaces.insert(name, namespace);
        }
        Ok(loaded)
    }

    /// The directory configured, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Whether the configured directory exists.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Every registry directory read, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Namespace)> {
        self.namespaces.iter().map(|(n, ns)| (n.as_str(), ns))
    }

    /// The directory containerd would use for `registry` (`host[:port]` as the image names it):
    /// `host_port_`, then `host:port`, then `_default`; `None` when there is none.
    pub fn lookup(&self, registry: &str) -> Option<(&str, &Namespace)> {
        let mut candidates = Vec::with_capacity(3);
        // containerd writes `:port` as `_port_` first (for file systems without `:`).
        if let Some((name, port)) = registry.rsplit_once(':').filter(|(n, _)| !n.is_empty()) {
            candidates.push(format!("{name}_{port}_"));
        }
        candidates.push(registry.to_string());
        candidates.push(DEFAULT_NAMESPACE.to_string());
        candidates
            .into_iter()
            .find_map(|c| self.namespaces.get_key_value(&c))
            .map(|(n, ns)| (n.as_str(), ns))
    }
}

// === impl Namespace ===

impl Namespace {
    /// Reads one registry directory: its `hosts.toml`, or without one (or with an empty one)
    /// Docker's certificate files, as containerd does.
    fn load(dir: &Path) -> Result<Self, HostsError> {
        let path = dir.join("hosts.toml");
        let file_error = |message: String| HostsError::File {
            path: path.clone(),
            message,
        };
        let bytes = match read_bounded(&path, MAX_HOSTS_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(file_error(e.to_string())),
        };
        if bytes.is_empty() {
            return Ok(Self {
                source: Source::CertFiles(dir.to_owned()),
                hosts: vec![cert_files(dir)?],
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| file_error("not UTF-8".into()))?;
        let hosts = parse_hosts_toml(dir, &path, &text)?;
        Ok(Self {
            source: Source::HostsToml(path),
            hosts,
        })
    }
}

/// The hosts a `hosts.toml` names, in the order containerd tries them: each `[host."…"]` table
/// in file order, then `server` (or the registry itself) with the file's top-level settings.
pub fn parse_hosts_toml(dir: &Path, path: &Path, text: &str) -> Result<Vec<Host>, HostsError> {
    let at = |span: Option<std::ops::Range<usize>>, message: String| HostsError::Line {
        path: path.to_owned(),
        line: span.map_or(1, |s| line_of(text, s.start)),
        message,
    };
    let document = toml_edit::Document::parse(text.to_string()).map_err(|e| at(e.span(), e.message().to_string()))?;
    let root = document.as_table();
    let mut hosts = Vec::new();
    if let Some(item) = root.get("host") {
        let table = item
            .as_table()
            .ok_or_else(|| at(item.span(), "`host` must be a table of [host.\"URL\"] tables".into()))?;
        // containerd orders hosts by their `[host."…"]` headers; a host given any other way
        // (inline, dotted keys) is not among them, so it is not asked here either.
        let mut ordered: Vec<(&str, &toml_edit::Table)> = table
            .iter()
            .filter_map(|(name, item)| item.as_table().map(|t| (name, t)))
            .filter(|(_, t)| !t.is_dotted() && t.position().is_some())
            .collect();
        ordered.sort_by_key(|(_, t)| t.position());
        if ordered.len() > MAX_HOSTS {
            return Err(at(item.span(), format!("more than {MAX_HOSTS} hosts")));
        }
        for (name, host) in ordered {
            let span = table.key(name).and_then(|k| k.span());
            let url = parse_url(name, bool_field(host, "override_path", &at)?.unwrap_or(false))
                .map_err(|message| at(span.clone(), message))?;
            hosts.push(host_settings(dir, Some(url), host, &at)?);
        }
    }
    let server = match root.get("server") {
        None => None,
        Some(item) => {
            let value = item
                .as_str()
                .ok_or_else(|| at(item.span(), "`server` must be a string".into()))?;
            let override_path = bool_field(root, "override_path", &at)?.unwrap_or(false);
            // An empty server is the registry itself, as containerd reads it.
            (!value.is_empty())
                .then(|| parse_url(value, override_path).map_err(|message| at(item.span(), message)))
                .transpose()?
        }
    };
    hosts.push(host_settings(dir, server, root, &at)?);
    Ok(hosts)
}

/// A host's URL as containerd reads it: `https://` unless written `http`, the API root `/v2`
/// appended unless the path ends in it or `override_path` says the path is the root.
fn parse_url(written: &str, override_path: bool) -> Result<HostUrl, String> {
    let full = if written.starts_with("http") {
        written.to_string()
    } else {
        format!("https://{written}")
    };
    let url = reqwest::Url::parse(&full).map_err(|e| format!("{written:?} is not a URL: {e}"))?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("{written:?}: scheme {other:?} is neither http nor https")),
    };
    let name = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{written:?} names no host"))?;
    let host = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    };
    let mut segments: Vec<&str> = Vec::new();
    for segment in url.path().split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if !override_path && segments.last() != Some(&"v2") {
        segments.push("v2");
    }
    let path = segments.iter().map(|s| format!("/{s}")).collect();
    Ok(HostUrl { scheme, host, path })
}

/// The settings of one host table (or of the file's top level, for `server`).
fn host_settings(
    dir: &Path,
    url: Option<HostUrl>,
    table: &dyn TableLike,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> HostsError,
) -> Result<Host, HostsError> {
    let capabilities = match table.get("capabilities") {
        None => Capabilities::ALL,
        Some(item) => {
            let names =
                strings(item).ok_or_else(|| at(item.span(), "`capabilities` must be a list of strings".into()))?;
            // An empty list is every capability in containerd, not none.
            let mut capabilities = if names.is_empty() {
                Capabilities::ALL
            } else {
                Capabilities(0)
            };
            for name in names {
                let one = Capabilities::parse(name).ok_or_else(|| {
                    at(
                        item.span(),
                        format!("unknown capability {name:?} (pull, resolve, push, referrers)"),
                    )
                })?;
                capabilities = capabilities | one;
            }
            capabilities
        }
    };
    let absolute = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    let mut tls = Tls {
        skip_verify: bool_field(table, "skip_verify", at)?,
        ..Tls::default()
    };
    if let Some(item) = table.get("ca") {
        let files = match item.as_str() {
            Some(one) => vec![one],
            None => strings(item).ok_or_else(|| at(item.span(), "`ca` must be a path or a list of paths".into()))?,
        };
        tls.ca = files.into_iter().map(absolute).collect();
    }
    if let Some(item) = table.get("client") {
        tls.client = client_pairs(item)
            .ok_or_else(|| {
                at(
                    item.span(),
                    "`client` must be a path, a list of paths, or a list of [certificate, key] pairs".into(),
                )
            })?
            .into_iter()
            .map(|(cert, key)| (absolute(cert), key.filter(|k| !k.is_empty()).map(absolute)))
            .collect();
    }
    if tls.ca.len() > MAX_FILES_PER_HOST || tls.client.len() > MAX_FILES_PER_HOST {
        return Err(at(
            table_span(table),
            format!("more than {MAX_FILES_PER_HOST} `ca` or `client` files"),
        ));
    }
    let header = match table.get("header") {
        None => Vec::new(),
        Some(item) => headers(item).map_err(|message| at(item.span(), message))?,
    };
    Ok(Host {
        url,
        capabilities,
        tls,
        header,
    })
}

/// `header`: each key a string or a list of strings; names and values must be valid HTTP.
fn headers(item: &Item) -> Result<Vec<(String, String)>, String> {
    let table = item
        .as_table_like()
        .ok_or("`header` must be a table of strings or lists of strings")?;
    let mut out = Vec::new();
    for (name, value) in table.iter() {
        let values = match value.as_str() {
            Some(one) => vec![one],
            None => strings(value).ok_or_else(|| format!("header {name:?} must be a string or a list of strings"))?,
        };
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header {name:?} is not a valid header name"))?;
        for value in values {
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("header {name:?} has a value that is not a valid header value"))?;
            out.push((name.to_string(), value.to_string()));
        }
    }
    if out.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} header values"));
    }
    Ok(out)
}

/// `client`: one path, a list of paths, or a list of `[certificate, key]` pairs.
fn client_pairs(item: &Item) -> Option<Vec<(&str, Option<&str>)>> {
    if let Some(one) = item.as_str() {
        return Some(vec![(one, None)]);
    }
    item.as_array()?
        .iter()
        .map(|entry| match entry {
            toml_edit::Value::String(s) => Some((s.value().as_str(), None)),
            toml_edit::Value::Array(pair) => {
                let pair: Vec<&str> = pair.iter().map(|v| v.as_str()).collect::<Option<_>>()?;
                match pair[..] {
                    [cert, key] => Some((cert, Some(key))),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// An array of strings.
fn strings(item: &Item) -> Option<Vec<&str>> {
    item.as_array()?.iter().map(|v| v.as_str()).collect()
}

fn bool_field(
    table: &dyn TableLike,
    key: &str,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> HostsError,
) -> Result<Option<bool>, HostsError> {
    match table.get(key) {
        None => Ok(None),
        Some(item) => item
            .as_bool()
            .map(Some)
            .ok_or_else(|| at(item.span(), format!("`{key}` must be true or false"))),
    }
}

/// Where a table starts, for errors about the table as a whole.
fn table_span(table: &dyn TableLike) -> Option<std::ops::Range<usize>> {
    table
        .iter()
        .next()
        .and_then(|(key, _)| table.key(key))
        .and_then(|k| k.span())
}

/// Docker's layout, for a directory without `hosts.toml`: `*.crt` are CAs, `*.cert` client
/// certificates with their `*.key` beside them (or holding the key themselves).
fn cert_files(dir: &Path) -> Result<Host, HostsError> {
    let dir_error = |e: io::Error| HostsError::Dir {
        path: dir.to_owned(),
        message: e.to_string(),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_error)?.take(MAX_DIR_ENTRIES) {
        let entry = entry.map_err(dir_error)?;
        if entry.file_type().is_ok_and(|t| !t.is_dir()) {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    let mut tls = Tls::default();
    for name in &names {
        if name.ends_with(".crt") {
            tls.ca.push(dir.join(name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            let key = names.contains(&key).then(|| dir.join(key));
            tls.client.push((dir.join(name), key));
        }
    }
    tls.ca.truncate(MAX_FILES_PER_HOST);
    tls.client.truncate(MAX_FILES_PER_HOST);
    Ok(Host {
        url: None,
        capabilities: Capabilities::ALL,
        tls,
        header: Vec::new(),
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The hosts in the order they are tried, each with what it may be asked:
/// `http://10.0.0.5:5000/v2 [pull, resolve], the registry itself [pull, resolve, push, referrers]`.
pub fn describe(hosts: &[Host]) -> String {
    let shown: Vec<String> = hosts
        .iter()
        .map(|h| match &h.url {
            Some(url) => format!("{url} [{}]", h.capabilities),
            None => format!("the registry itself [{}]", h.capabilities),
        })
        .collect();
    shown.join(", ")
}
