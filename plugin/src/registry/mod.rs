//! The OCI distribution client: resolve tags, fetch manifests and blobs, with kubelet's
//! credentials, plain HTTP only where configured, and a bound on every size.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use reqwest::{header, Method, StatusCode};

use crate::{
    cache::Cache,
    config::Config,
    metrics::{Metrics, RegistryOutcome},
    reference::{Digest, Reference},
    verify::notation::Descriptor,
};

mod auth;
mod blob_stream;
pub mod cosign;
mod docker_config;
pub mod hosts;
pub mod referrers;
mod routes;

pub use auth::{Credentials, Origin};
pub use blob_stream::BlobStream;
pub use docker_config::{DockerConfig, DockerConfigError, MAX_DOCKER_CONFIG_BYTES};
pub use hosts::{HostsDir, HostsError};
pub use routes::RegistriesError;
use routes::{Route, Routes};

/// Manifests and indexes larger than this are refused (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The header in which a registry names the digest of the manifest or blob it serves.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// The media types pullgate accepts when it asks for a manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Registry clients for every host, built from the configuration and containerd's host
/// configuration (`registryHosts`), which SIGHUP reads again.
#[derive(Clone)]
pub struct Registries {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the routes are rebuilt from on reload.
    config: Config,
    /// The hosts to ask for each registry, and their clients; replaced whole on reload.
    routes: RwLock<Arc<Routes>>,
    /// Where every request's outcome is counted.
    metrics: Arc<Metrics>,
    /// Authorization headers that answered challenges, reused by later sessions.
    answers: auth::Answers,
    /// Tags resolved to manifests, remembered for `resolveTTL` and shared while in flight.
    resolved: Cache<ResolveKey, Descriptor, RegistryError>,
    /// Repositories found to have no referrers API, by (host root, registry/repository), and
    /// until when that is believed.
    no_referrers_api: Mutex<HashMap<(String, String), Instant>>,
}

/// (the hosts asked, registry/repository, tag, fingerprint of the credentials): a resolution is
/// only reused for the same tag of the same registry's repository asked of the same hosts with
/// the same credentials. The registry counts though the hosts are the same: one mirror serves
/// several registries, told apart only by `?ns=`.
type ResolveKey = (String, String, String, [u8; 32]);

/// How many tag resolutions are remembered.
const MAX_RESOLVED: usize = 4096;

/// Why the registry did not give pullgate what it asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or refused to answer; kubelet sees `RegistryUnavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// The registry answered, but with content that cannot be trusted or used.
    #[error("{0}")]
    Invalid(String),
    /// The image itself does not exist.
    #[error("{0}")]
    NotFound(String),
}

/// A manifest as the registry served it, with the digest pullgate computed over its bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

// === impl Manifest ===

impl Manifest {
    /// What a descriptor of this manifest says: the media type the registry served it as (or,
    /// when it named none, the one the manifest declares), the digest and size of its bytes.
    pub fn descriptor(&self) -> Descriptor {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Declared {
            #[serde(default)]
            media_type: String,
        }
        let media_type = match self.media_type.as_str() {
            "" => serde_json::from_slice::<Declared>(&self.bytes).map_or_else(|_| String::new(), |d| d.media_type),
            served => served.to_string(),
        };
        Descriptor {
            media_type,
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
        }
    }
}

/// Requests to one repository with one set of credentials, sent to the registry's hosts in
/// order (containerd's `hosts.toml`, or the registry alone).
pub struct Session<'r> {
    registries: &'r Registries,
    routes: Arc<Routes>,
    /// The registry as the image names it: the `ns` mirrors are told.
    registry: String,
    repository: String,
    credentials: Credentials,
    endpoints: Vec<Endpoint>,
    /// Hosts that answered, with content or with "not there", in the order they first did.
    answered: Mutex<Vec<String>>,
    /// A bound on each request, body included, in place of the client's (`verifyTimeout`).
    timeout: Option<Duration>,
}

/// One host of a session, with the header that answered its challenge, if any.
struct Endpoint {
    route: Route,
    /// What may be sent to this host of the session's credentials.
    credentials: Credentials,
    /// Where this host's answers are remembered for later sessions.
    answers_key: auth::AnswerKey,
    /// The header to send; shared by concurrent requests.
    authorization: Mutex<Option<String>>,
}

/// What a request is for, which decides the hosts asked (containerd's capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Content by digest: hosts with `pull`.
    Pull,
    /// A manifest by tag: hosts with `pull` and `resolve`.
    Resolve,
    /// The referrers API and referrers tag: hosts with `resolve` or `referrers`. A referrers
    /// list changes as a tag does, so a host trusted with neither is not asked; one trusted to
    /// resolve is, even without containerd 2's `referrers` (which containerd 1.x does not know).
    Referrers,
}

// === impl Registries ===

impl Registries {
    /// Clients for the registries `config` describes, and for the hosts its `registryHosts`
    /// names, counting their requests in `metrics`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, RegistriesError> {
        let routes = Routes::new(config, load_hosts(config)?)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                routes: RwLock::new(Arc::new(routes)),
                metrics,
                answers: auth::Answers::default(),
                resolved: Cache::new(config.resolve_ttl, MAX_RESOLVED),
                no_referrers_api: Default::default(),
            }),
        })
    }

    /// Reads `registryHosts` again (SIGHUP), with every `ca` and `client` file it names: a
    /// rotated certificate is taken up though no `hosts.toml` changed. On any error the hosts in
    /// use stay; `Ok(true)` when the hosts read differ from them.
    pub fn reload_hosts(&self) -> Result<bool, RegistriesError> {
        let hosts = load_hosts(&self.inner.config)?;
        let changed = hosts != *self.routes().hosts();
        let routes = Routes::new(&self.inner.config, hosts)?;
        *self.inner.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
        Ok(changed)
    }

    /// The host configuration in use.
    pub fn hosts(&self) -> HostsDir {
        self.routes().hosts().clone()
    }

    fn routes(&self) -> Arc<Routes> {
        self.inner.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A session for `reference`'s repository, authenticating with `credentials`.
    pub fn session(&self, reference: &Reference, credentials: Credentials) -> Session<'_> {
        let routes = self.routes();
        let registry = reference.host().to_string();
        let repository = reference.path().to_string();
        let endpoints = routes
            .for_registry(&registry)
            .into_iter()
            .map(|route| {
                let credentials = credentials.for_host(&route.host);
                let answers_key = auth::Answers::key(&route.root, &repository, &credentials);
                let authorization = Mutex::new(self.inner.answers.get(&answers_key));
                Endpoint {
                    route,
                    credentials,
                    answers_key,
                    authorization,
                }
            })
            .collect();
        Session {
            registries: self,
            routes,
            registry,
            repository,
            credentials,
            endpoints,
            answered: Mutex::new(Vec::new()),
            timeout: None,
        }
    }

    /// Counts one HTTP request to a registry or a token realm.
    fn count(&self, outcome: RegistryOutcome) {
        self.inner.metrics.registry_request(outcome);
    }
}

/// `registryHosts` as configured: nothing when it is `""`.
fn load_hosts(config: &Config) -> Result<HostsDir, HostsError> {
    match &config.registry_hosts {
        Some(root) => HostsDir::load(root),
        None => Ok(HostsDir::disabled()),
    }
}

// === impl Session ===

impl Session<'_> {
    /// Resolves `reference` to the digest of the manifest the registry serves for it.
    ///
    /// A tag is resolved as containerd resolves it: a `HEAD` whose `Docker-Content-Digest` names
    /// the digest, and a `GET` only where the answer names none, the digest then computed over
    /// the bytes received (and checked against the header, if any). The digest from a header is
    /// a claim, and enough: it is what gets verified and what is pulled, pinned, and containerd
    /// hashes the manifest it fetches by it. A digest in the reference must exist and agree
    /// with the header, if any. A tag is only resolved by hosts with the `resolve` capability. A
    /// tag resolved with the same credentials less than `resolveTTL` ago is not asked again, and
    /// concurrent resolutions of one tag share one request: the digest is what gets verified
    /// and pulled, so a tag moved meanwhile can only make the pull the one made a moment
    /// earlier.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        self.resolve_descriptor(reference).await.map(|d| d.digest)
    }

    /// As [`Session::resolve`], with the manifest's media type (as the registry served it) and
    /// size: the descriptor a Notary Project signature names as its target. From a `HEAD`, they
    /// are its `Content-Type` and `Content-Length`; a `GET` follows where either is missing.
    pub async fn resolve_descriptor(&self, reference: &Reference) -> Result<Descriptor, RegistryError> {
        let target = match (reference.digest(), reference.tag()) {
            (Some(d), _) => return self.fetch_resolution(reference, d.as_str()).await,
            (None, Some(t)) => t,
            (None, None) => return Err(RegistryError::Invalid(format!("{reference}: neither tag nor digest"))),
        };
        let hosts: Vec<&str> = self.endpoints(Need::Resolve).map(|e| e.route.root.as_str()).collect();
        let key = (
            hosts.join(" "),
            format!("{}/{}", self.registry, self.repository),
            target.to_string(),
            self.credentials.fingerprint(),
        );
        let fetch = || self.fetch_resolution(reference, target);
        // With a resolveTTL of 0 nothing is remembered, but concurrent pulls still share.
        self.registries
            .inner
            .resolved
            .get_or_verify(key, fetch, |_| None)
            .await
            .0
    }

    /// `HEAD` for the descriptor of `target` (a tag or a digest): its digest from
    /// `Docker-Content-Digest`, its media type and size from `Content-Type` and `Content-Length`.
    /// A `GET` follows where the answer lacks any of them (the digest then computed over the bytes).
    async fn fetch_resolution(&self, reference: &Reference, target: &str) -> Result<Descriptor, RegistryError> {
        let pinned = Digest::parse(target);
        let need = if pinned.is_some() { Need::Pull } else { Need::Resolve };
        let tail = format!("manifests/{target}");
        let not_found = || RegistryError::NotFound(format!("manifest {reference} not found"));
        let found = self
            .ask(
                Method::HEAD,
                need,
                &tail,
                Some(MANIFEST_ACCEPT),
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        let Some((response, url)) = found else {
            return Err(not_found());
        };
        let headers = response.headers();
        let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
        let advertised = text(DOCKER_CONTENT_DIGEST).and_then(Digest::parse);
        // The digest fixes the bytes: a media type or size that lies can only make a Notation
        // signature fail to match them, never make other bytes pass.
        let media_type = text(header::CONTENT_TYPE.as_str())
            .map(|v| v.split(';').next().unwrap_or("").trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let size = text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
        let digest = match (pinned, advertised) {
            (Some(pinned), Some(advertised)) if advertised != pinned => {
                return Err(RegistryError::Invalid(format!(
                    "{url}: registry says digest {advertised} for manifest {pinned}"
                )))
            }
            (Some(digest), _) | (None, Some(digest)) => Some(digest),
            (None, None) => None,
        };
        match (digest, media_type, size) {
            (Some(digest), Some(media_type), Some(size)) => Ok(Descriptor {
                media_type,
                digest,
                size,
            }),
            _ => match self.manifest(target).await? {
                Some(m) => Ok(m.descriptor()),
                None => Err(not_found()),
            },
        }
    }

    /// Fetches the manifest `tag_or_digest` of this repository from the first host that has it;
    /// `None` when a host said it does not exist and none had it.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<Option<Manifest>, RegistryError> {
        let need = if Digest::parse(tag_or_digest).is_some() {
            Need::Pull
        } else {
            Need::Resolve
        };
        let tail = format!("manifests/{tag_or_digest}");
        let found = self
            .ask(
                Method::GET,
                need,
                &tail,
                Some(MANIFEST_ACCEPT),
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        let Some((response, url)) = found else {
            return Ok(None);
        };
        read_manifest(response, &url, tag_or_digest).await.map(Some)
    }

    /// As [`Session::manifest`], from one host only.
    async fn manifest_from(&self, endpoint: &Endpoint, tag_or_digest: &str) -> Result<Option<Manifest>, RegistryError> {
        let tail = format!("manifests/{tag_or_digest}");
        let found = self
            .get_from(
                Method::GET,
                endpoint,
                &tail,
                Some(MANIFEST_ACCEPT),
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        let Some((response, url)) = found else {
            return Ok(None);
        };
        read_manifest(response, &url, tag_or_digest).await.map(Some)
    }

    /// Fetches blob `digest`, refusing more than `max` bytes and content that does not hash to
    /// `digest`.
    pub async fn blob(&self, digest: &Digest, max: usize) -> Result<Vec<u8>, RegistryError> {
        let tail = format!("blobs/{digest}");
        let Some((response, url)) = self
            .ask(Method::GET, Need::Pull, &tail, None, &[StatusCode::NOT_FOUND])
            .await?
        else {
            return Err(RegistryError::Invalid(format!(
                "{}/{}/{tail}: blob not found",
                self.registry, self.repository
            )));
        };
        let bytes = read_bounded(response, max, &url).await?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::Invalid(format!(
                "{url}: blob content does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// The hosts that answered this session with a mirror among them, for a denial to name
    /// where signatures were looked for; `None` when only the registry itself answered.
    pub fn mirrors_answered(&self) -> Option<String> {
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        let mirrored = self
            .endpoints
            .iter()
            .any(|e| e.route.ns.is_some() && answered.contains(&e.route.host));
        mirrored.then(|| answered.join(", "))
    }

    /// The hosts asked for `need`, in order.
    fn endpoints(&self, need: Need) -> impl Iterator<Item = &Endpoint> {
        use hosts::Capabilities as C;
        self.endpoints.iter().filter(move |e| {
            let can = e.route.capabilities;
            match need {
                Need::Pull => can.has(C::PULL),
                Need::Resolve => can.has(C::PULL | C::RESOLVE),
                Need::Referrers => can.has(C::RESOLVE) || can.has(C::REFERRERS),
            }
        })
    }

    /// GET (or HEAD) `tail` (`manifests/…`, `blobs/…`) of this repository from the hosts for
    /// `need`, in order, until one has it. A host that cannot be reached (or answers an error) is passed
    /// over for the next, as containerd does; so is one that says it has no such thing. The
    /// first that has it answers; `None` when one said "not there" and none had it, even if
    /// others could not be reached (SPEC §3). A host listed twice (containerd 1.6 needs the
    /// `server` repeated as a `[host]` table) is not asked again what it said it does not have.
    async fn ask(
        &self,
        method: Method,
        need: Need,
        tail: &str,
        accept: Option<&str>,
        absent: &[StatusCode],
    ) -> Result<Option<(reqwest::Response, String)>, RegistryError> {
        let mut failures = Vec::new();
        let mut said_absent: Vec<&Route> = Vec::new();
        for endpoint in self.endpoints(need) {
            if said_absent.iter().any(|r| r.same_place(&endpoint.route)) {
                continue;
            }
            match self.get_from(method.clone(), endpoint, tail, accept, absent).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => said_absent.push(&endpoint.route),
                Err(e) => failures.push(e),
            }
        }
        let said_absent = !said_absent.is_empty();
        self.none_found(need, said_absent, failures).map(|()| None)
    }

    /// The outcome when no host had what was asked: "not there" if one said so, else the
    /// failures of all that were asked (or that none may be asked).
    fn none_found(&self, need: Need, said_absent: bool, mut failures: Vec<RegistryError>) -> Result<(), RegistryError> {
        if said_absent {
            return Ok(());
        }
        if failures.len() == 1 {
            return Err(failures.remove(0));
        }
        if failures.is_empty() {
            let why = match need {
                Need::Pull => "no host of its registry host configuration may pull",
                Need::Resolve => "no host of its registry host configuration may resolve tags",
                Need::Referrers => "no host of its registry host configuration may list referrers",
            };
            return Err(RegistryError::Invalid(format!("{}: {why}", self.registry)));
        }
        let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
        Err(RegistryError::Unavailable(all.join("; ")))
    }

    /// GET (or HEAD) `tail` of this repository from one host, with authentication: answers one
    /// challenge, then retries once. `None` for any of the `absent` statuses.
    async fn get_from(
        &self,
        method: Method,
        endpoint: &Endpoint,
        tail: &str,
        accept: Option<&str>,
        absent: &[StatusCode],
    ) -> Result<Option<(reqwest::Response, String)>, RegistryError> {
        let (answer, url) = self.answer_from(method, endpoint, tail, accept, absent).await?;
        match answer {
            Answer::Found(response) => Ok(Some((response, url))),
            Answer::Absent { .. } => Ok(None),
        }
    }

    /// As [`Session::get_from`], also saying whether an `absent` status came after a redirect.
    async fn answer_from(
        &self,
        method: Method,
        endpoint: &Endpoint,
        tail: &str,
        accept: Option<&str>,
        absent: &[StatusCode],
    ) -> Result<(Answer, String), RegistryError> {
        let route = &endpoint.route;
        let mut url = format!("{}/{}/{tail}", route.root, self.repository);
        if let Some(ns) = &route.ns {
            url.push_str(&format!("?ns={}", auth::url_encode(ns)));
        }
        let answer = self.get_unless(method, endpoint, &url, accept, absent).await?;
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if !answered.contains(&route.host) {
            answered.push(route.host.clone());
        }
        Ok((answer, url))
    }

    async fn get_unless(
        &self,
        method: Method,
        endpoint: &Endpoint,
        url: &str,
        accept: Option<&str>,
        absent: &[StatusCode],
    ) -> Result<Answer, RegistryError> {
        let mut challenged = false;
        loop {
            let mut request = endpoint.route.client.request(method.clone(), url);
            if let Some(timeout) = self.timeout {
                request = request.timeout(timeout);
            }
            for (name, value) in &endpoint.route.header {
                request = request.header(name, value);
            }
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let authorization = endpoint.authorization.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    self.registries.count(RegistryOutcome::Unavailable);
                    return Err(unavailable(url, &e));
                }
            };
            self.registries.count(outcome_of(response.status(), absent));
            match response.status() {
                s if s.is_success() => return Ok(Answer::Found(response)),
                s if absent.contains(&s) => {
                    let redirected = response.url().as_str() != url;
                    return Ok(Answer::Absent { redirected });
                }
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let answers = &self.registries.inner.answers;
                    let answer = match auth::answer(self, endpoint, &challenge).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            answers.forget(&endpoint.answers_key);
                            return Err(e);
                        }
                    };
                    answers.remember(endpoint.answers_key.clone(), &answer);
                    *endpoint.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer.authorization);
                }
                StatusCode::UNAUTHORIZED => {
                    self.registries.inner.answers.forget(&endpoint.answers_key);
                    let why = endpoint.credentials.origin().refusal();
                    return Err(RegistryError::Unavailable(format!(
                        "{url}: HTTP 401 Unauthorized: {why}"
                    )));
                }
                s => return Err(RegistryError::Unavailable(format!("{url}: HTTP {s}"))),
            }
        }
    }
}

/// What one host answered a GET or HEAD with.
enum Answer {
    Found(reqwest::Response),
    /// One of the statuses the caller takes for "not there"; `redirected` when it came from the
    /// URL a redirect led to rather than from the host itself.
    Absent {
        redirected: bool,
    },
}

/// Reads a manifest the registry sent for `tag_or_digest`: its digest computed over the bytes,
/// which must agree with the `Docker-Content-Digest` header and with a digest asked for.
async fn read_manifest(response: reqwest::Response, url: &str, tag_or_digest: &str) -> Result<Manifest, RegistryError> {
    let media_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let advertised = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = read_bounded(response, MAX_MANIFEST_BYTES, url).await?;
    let digest = Digest::of(&bytes);
    if let Some(advertised) = advertised {
        if advertised != digest.as_str() {
            return Err(RegistryError::Invalid(format!(
                "{url}: registry says digest {advertised} but the manifest bytes hash to {digest}"
            )));
        }
    }
    if let Some(expected) = Digest::parse(tag_or_digest) {
        if expected != digest {
            return Err(RegistryError::Invalid(format!(
                "{url}: manifest bytes hash to {digest}, not {expected}"
            )));
        }
    }
    Ok(Manifest {
        digest,
        media_type,
        bytes,
    })
}

/// How a registry's answer is counted; `absent` are the statuses the caller takes for "there is
/// no such thing".
fn outcome_of(status: StatusCode, absent: &[StatusCode]) -> RegistryOutcome {
    match status {
        s if s.is_success() => RegistryOutcome::Ok,
        s if s == StatusCode::NOT_FOUND || absent.contains(&s) => RegistryOutcome::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryOutcome::Unauthorized,
        _ => RegistryOutcome::Error,
    }
}

fn unavailable(url: &str, e: &reqwest::Error) -> RegistryError {
    let msg = crate::error_chain(e)
        .replace(url, "")
        .replace(" for  ", " ")
        .replace(" ()", "");
    RegistryError::Unavailable(format!("{url}: {msg}"))
}

/// Reads a response body, refusing more than `max` bytes.
async fn read_bounded(mut response: reqwest::Response, max: usize, url: &str) -> Result<Vec<u8>, RegistryError> {
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(RegistryError::Invalid(format!("{url}: larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(url, &e))? {
        if body.len() + chunk.len() > max {
            return Err(RegistryError::Invalid(format!("{url}: larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
