//! Which hosts a registry's requests go to, in order, and the HTTP client for each: containerd's
//! host configuration (`hosts.rs`) for the hosts it names, `config.yaml`'s `registries` for the
//! registry itself.
//!
//! How the two combine: a host named in `hosts.toml` (a `[host."…"]` or `server`) is reached
//! exactly as `hosts.toml` says (its scheme, `ca`, `client`, `skip_verify`); a `registries` entry
//! does not change it. The registry itself (no `hosts.toml`, or one without `server`) is
//! reached as its `registries` entry says, with the top-level `ca`/`client`/`skip_verify` of
//! its `hosts.toml` added.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::header::{HeaderName, HeaderValue};

use super::hosts::{Capabilities, Host, HostUrl, HostsDir, HostsError, Scheme, Source, Tls};
use crate::{config::Config, file::read_bounded};

/// A CA or client certificate file larger than this is refused.
const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;

/// Where Docker Hub's registry API is, for images named `docker.io/…`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The hosts and clients for every registry, built from one reading of the configuration and of
/// `registryHosts`; replaced whole on reload.
pub(super) struct Routes {
    hosts: HostsDir,
    /// Hosts reached over plain HTTP by `registries` (`insecure: true`).
    insecure: HashSet<String>,
    /// Hosts pullgate may speak plain HTTP to: those, and every `http://` host of `hosts.toml`
    /// (for redirects and token realms).
    plain_http: HashSet<String>,
    /// A client per `registries` entry with a `caFile`.
    with_ca: HashMap<String, reqwest::Client>,
    /// A client per host with TLS settings of its own, by (directory, index of the host), and
    /// for the registry itself also by the registry whose `caFile` it adds.
    own_tls: HashMap<(String, usize, Option<String>), reqwest::Client>,
    default: reqwest::Client,
}

/// One host to ask for one registry, with everything a request to it needs.
#[derive(Clone)]
pub(super) struct Route {
    pub client: reqwest::Client,
    /// `scheme://host/v2` (or the path `override_path` gives): request paths follow it.
    pub root: String,
    /// `scheme://host`: how messages about the host as a whole name it.
    pub origin: String,
    /// `host[:port]`, as messages name it.
    pub host: String,
    pub capabilities: Capabilities,
    /// The `ns` query parameter: the registry's name, sent to a host that is not the registry.
    pub ns: Option<String>,
    pub header: Vec<(HeaderName, HeaderValue)>,
}

// === impl Route ===

impl Route {
    /// Whether `other` asks the same place the same way: the same root, `ns` and headers. Its
    /// "not there" then answers for both (its TLS settings only decide whether it is reached).
    pub fn same_place(&self, other: &Route) -> bool {
        self.root == other.root && self.ns == other.ns && self.header == other.header
    }
}

/// Settings that could not be turned into clients.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("registries[{host}].caFile {}: {message}", path.display())]
    CaFile {
        host: String,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    Hosts(#[from] HostsError),
    #[error("building the registry client: {0}")]
    Client(String),
}

// === impl Routes ===

impl Routes {
    /// Clients for `config`'s registries and for every host `hosts` names. Every certificate
    /// file is read now, so a bad one fails the start or the reload, not a pull.
    pub fn new(config: &Config, hosts: HostsDir) -> Result<Self, RegistriesError> {
        let insecure: HashSet<String> = config
            .registries
            .iter()
            .filter(|r| r.insecure)
            .map(|r| r.host.clone())
            .collect();
        let mut plain_http = insecure.clone();
        for (_, namespace) in hosts.namespaces() {
            for url in namespace.hosts.iter().filter_map(|h| h.url.as_ref()) {
                if url.scheme == Scheme::Http {
                    plain_http.insert(url.host.clone());
                }
            }
        }
        let build = |tls: Option<(&Path, &str, &Tls)>, extra_ca: Option<&reqwest::Certificate>| {
            client(config.verify_timeout, &plain_http, tls, extra_ca)
        };
        let mut with_ca = HashMap::new();
        let mut registry_ca = HashMap::new();
        for r in &config.registries {
            if let Some(path) = &r.ca_file {
                let ca_error = |message: String| RegistriesError::CaFile {
                    host: r.host.clone(),
                    path: path.clone(),
                    message,
                };
                let pem = read_bounded(path, MAX_CERT_FILE_BYTES).map_err(|e| ca_error(e.to_string()))?;
                let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
                with_ca.insert(r.host.clone(), build(None, Some(&ca))?);
                registry_ca.insert(r.host.clone(), ca);
            }
        }
        let mut own_tls = HashMap::new();
        for (name, namespace) in hosts.namespaces() {
            let file = match &namespace.source {
                Source::HostsToml(path) | Source::CertFiles(path) => path.as_path(),
            };
            for (i, host) in namespace.hosts.iter().enumerate() {
                if host.tls == Tls::default() {
                    continue;
                }
                let shown = host.url.as_ref().map_or_else(|| "server".to_string(), HostUrl::root);
                let tls = Some((file, shown.as_str(), &host.tls));
                own_tls.insert((name.to_string(), i, None), build(tls, None)?);
                // The registry itself keeps its `registries` caFile beside these settings.
                if host.url.is_none() {
                    for (registry, ca) in &registry_ca {
                        own_tls.insert((name.to_string(), i, Some(registry.clone())), build(tls, Some(ca))?);
                    }
                }
            }
        }
        let default = build(None, None)?;
        Ok(Self {
            hosts,
            insecure,
            plain_http,
            with_ca,
            own_tls,
            default,
        })
    }

    /// The host configuration these routes were built from.
    pub fn hosts(&self) -> &HostsDir {
        &self.hosts
    }

    /// The hosts to ask for `registry` (canonical `host[:port]`), in order: those its
    /// `hosts.toml` names, or the registry alone.
    pub fn for_registry(&self, registry: &str) -> Vec<Route> {
        let Some((name, namespace)) = self.hosts.lookup(registry) else {
            return vec![self.itself(registry, None, &[])];
        };
        namespace
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let own = |with: Option<String>| self.own_tls.get(&(name.to_string(), i, with));
                match &host.url {
                    None => {
                        let own = own(Some(registry.to_string())).or_else(|| own(None));
                        Route {
                            capabilities: host.capabilities,
                            ..self.itself(registry, own, &host.header)
                        }
                    }
                    Some(url) => self.mirror(registry, url, host, own(None)),
                }
            })
            .collect()
    }

    /// Whether plain HTTP to `host` (a redirect, a token realm) is allowed.
    pub fn allows_plain_http(&self, host: &str) -> bool {
        self.plain_http.contains(host)
    }

    /// The registry itself, reached as `registries` says.
    fn itself(&self, registry: &str, own: Option<&reqwest::Client>, header: &[(String, String)]) -> Route {
        let scheme = if self.insecure.contains(registry) {
            "http"
        } else {
            "https"
        };
        // Docker Hub's API lives on a different host from its image names.
        let host = if registry == crate::reference::DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let client = own
            .or_else(|| self.with_ca.get(registry))
            .unwrap_or(&self.default)
            .clone();
        Route {
            client,
            root: format!("{scheme}://{host}/v2"),
            origin: format!("{scheme}://{host}"),
            host: host.to_string(),
            capabilities: Capabilities::ALL,
            ns: None,
            header: header_values(header),
        }
    }

    /// A host `hosts.toml` names, reached as it says.
    fn mirror(&self, registry: &str, url: &HostUrl, host: &Host, own: Option<&reqwest::Client>) -> Route {
        // containerd tells a host that is not the registry which registry is meant.
        let itself = url.host == registry || (registry == crate::reference::DOCKER_HUB && url.host == DOCKER_HUB_API);
        Route {
            client: own.unwrap_or(&self.default).clone(),
            root: url.root(),
            origin: url.origin(),
            host: url.host.clone(),
            capabilities: host.capabilities,
            ns: (!itself).then(|| registry.to_string()),
            header: header_values(&host.header),
        }
    }
}

/// Headers were checked when `hosts.toml` was read.
fn header_values(header: &[(String, String)]) -> Vec<(HeaderName, HeaderValue)> {
    header
        .iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

/// A client with pullgate's timeouts and redirect rule; `tls` the settings of a host of
/// `hosts.toml` (the file and the host, for errors), `extra_ca` a `registries` caFile.
fn client(
    timeout: Duration,
    plain_http: &HashSet<String>,
    tls: Option<(&Path, &str, &Tls)>,
    extra_ca: Option<&reqwest::Certificate>,
) -> Result<reqwest::Client, RegistriesError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("pullgate/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect_policy(plain_http.clone()));
    if let Some(ca) = extra_ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    if let Some((file, host, tls)) = tls {
        let error = |message: String| {
            RegistriesError::Hosts(HostsError::File {
                path: file.to_owned(),
                message: format!("host {host}: {message}"),
            })
        };
        let read = |path: &Path| {
            read_bounded(path, MAX_CERT_FILE_BYTES).map_err(|e| error(format!("{}: {e}", path.display())))
        };
        for path in &tls.ca {
            let certificates = reqwest::Certificate::from_pem_bundle(&read(path)?)
                .map_err(|e| error(format!("ca {}: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(error(format!("ca {}: no PEM certificate", path.display())));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        // One TLS identity per client: the first pair, as a server asks for one certificate.
        if let Some((cert, key)) = tls.client.first() {
            let mut pem = read(cert)?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key)?);
            }
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|e| error(format!("client {}: {e}", cert.display())))?;
            builder = builder.identity(identity);
        }
        if tls.skip_verify == Some(true) {
            builder = builder.danger_accept_invalid_certs(true);
        }
    }
    builder.build().map_err(|e| RegistriesError::Client(e.to_string()))
}

/// Follows redirects (registries send blob downloads to storage hosts) but never to plain HTTP
/// on a host not configured for it.
fn redirect_policy(plain_http: HashSet<String>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url().clone();
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return attempt.error("redirect without a host"),
        };
        if url.scheme() == "https" || (url.scheme() == "http" && plain_http.contains(&host)) {
            attempt.follow()
        } else {
            attempt.error(format!(
                "refusing redirect to {url}: plain HTTP to a host not marked insecure"
            ))
        }
    })
}
