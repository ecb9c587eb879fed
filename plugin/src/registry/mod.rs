//! The OCI distribution client: resolve tags, fetch manifests and blobs, with kubelet's
//! credentials, plain HTTP only where configured, and a bound on every size.

use std::{collections::HashSet, sync::Arc, time::Duration};

use reqwest::{header, StatusCode};

use crate::{
    cache::Cache,
    config::Config,
    metrics::{Metrics, RegistryOutcome},
    reference::{Digest, Reference},
};

mod auth;
pub mod cosign;
mod docker_config;
pub mod referrers;

pub use auth::{Credentials, Origin};
pub use docker_config::{DockerConfig, DockerConfigError, MAX_DOCKER_CONFIG_BYTES};

/// Manifests and indexes larger than this are refused (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The media types pullgate accepts when it asks for a manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Registry clients for every host, built once from the configuration.
#[derive(Clone)]
pub struct Registries {
    inner: Arc<Inner>,
}

struct Inner {
    /// Hosts reached over plain HTTP; every other host needs TLS.
    insecure: HashSet<String>,
    /// Hosts with their own CA file get their own client.
    with_ca: Vec<(String, reqwest::Client)>,
    default: reqwest::Client,
    /// Where every request's outcome is counted.
    metrics: Arc<Metrics>,
    /// Authorization headers that answered challenges, reused by later sessions.
    answers: auth::Answers,
    /// Tags resolved to digests, remembered for `resolveTTL` and shared while in flight.
    resolved: Cache<ResolveKey, Digest, RegistryError>,
    /// Repositories found to have no referrers API, by (base URL, repository), and until when
    /// that is believed.
    no_referrers_api: std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
}

/// (registry base URL, repository, tag, fingerprint of the credentials): a resolution is only
/// reused for the same tag asked with the same credentials.
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

/// Requests to one repository with one set of credentials. Starts with the header that answered
/// an earlier session's challenge, if any, and keeps the one that answers its own.
pub struct Session<'r> {
    client: &'r reqwest::Client,
    registries: &'r Registries,
    base: String,
    repository: String,
    credentials: Credentials,
    /// Where this session's answers are remembered for later sessions.
    answers_key: auth::AnswerKey,
    /// The header to send; shared by concurrent requests.
    authorization: std::sync::Mutex<Option<String>>,
}

// === impl Registries ===

impl Registries {
    /// Clients for the registries `config` describes, counting their requests in `metrics`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let insecure: HashSet<String> = config
            .registries
            .iter()
            .filter(|r| r.insecure)
            .map(|r| r.host.clone())
            .collect();
        let builder = |extra_ca: Option<reqwest::Certificate>| {
            let insecure = insecure.clone();
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(config.verify_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .user_agent(concat!("pullgate/", env!("CARGO_PKG_VERSION")))
                .redirect(redirect_policy(insecure));
            if let Some(ca) = extra_ca {
                b = b.add_root_certificate(ca);
            }
            b.build().map_err(|e| format!("building the registry client: {e}"))
        };
        let mut with_ca = Vec::new();
        for r in &config.registries {
            if let Some(path) = &r.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("registries[{}].caFile {}: {e}", r.host, path.display()))?;
                let ca = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("registries[{}].caFile {}: {e}", r.host, path.display()))?;
                with_ca.push((r.host.clone(), builder(Some(ca))?));
            }
        }
        let default = builder(None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                insecure,
                with_ca,
                default,
                metrics,
                answers: auth::Answers::default(),
                resolved: Cache::new(config.resolve_ttl, MAX_RESOLVED),
                no_referrers_api: Default::default(),
            }),
        })
    }

    /// A session for `reference`'s repository, authenticating with `credentials`.
    pub fn session(&self, reference: &Reference, credentials: Credentials) -> Session<'_> {
        let host = reference.host();
        let client = self
            .inner
            .with_ca
            .iter()
            .find(|(h, _)| h == host)
            .map_or(&self.inner.default, |(_, c)| c);
        let scheme = if self.is_insecure(host) { "http" } else { "https" };
        // Docker Hub's API lives on a different host from its image names.
        let api_host = if host == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            host
        };
        let base = format!("{scheme}://{api_host}");
        let repository = reference.path().to_string();
        let answers_key = auth::Answers::key(&base, &repository, &credentials);
        let authorization = self.inner.answers.get(&answers_key);
        Session {
            client,
            registries: self,
            base,
            repository,
            credentials,
            answers_key,
            authorization: std::sync::Mutex::new(authorization),
        }
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.inner.insecure.contains(host)
    }

    /// Counts one HTTP request to a registry or a token realm.
    fn count(&self, outcome: RegistryOutcome) {
        self.inner.metrics.registry_request(outcome);
    }
}

/// Follows redirects (registries send blob downloads to storage hosts) but never downgrades to
/// plain HTTP for a host that is not marked insecure.
fn redirect_policy(insecure: HashSet<String>) -> reqwest::redirect::Policy {
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
        if url.scheme() == "https" || (url.scheme() == "http" && insecure.contains(&host)) {
            attempt.follow()
        } else {
            attempt.error(format!(
                "refusing redirect to {url}: plain HTTP to a host not marked insecure"
            ))
        }
    })
}

// === impl Session ===

impl Session<'_> {
    /// Resolves `reference` to the digest of the manifest the registry serves for it.
    ///
    /// The digest is computed over the bytes received, and must agree with the registry's
    /// `Docker-Content-Digest` header and with a digest in the reference, if either is present.
    /// A tag resolved with the same credentials less than `resolveTTL` ago is not asked again,
    /// and concurrent resolutions of one tag share one request: the digest is what gets verified
    /// and pulled, so a tag moved meanwhile can only make the pull the one made a moment earlier.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let target = match (reference.digest(), reference.tag()) {
            (Some(d), _) => return self.fetch_resolution(reference, d.as_str()).await,
            (None, Some(t)) => t,
            (None, None) => return Err(RegistryError::Invalid(format!("{reference}: neither tag nor digest"))),
        };
        let key = (
            self.base.clone(),
            self.repository.clone(),
            target.to_string(),
            self.answers_key.2,
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

    async fn fetch_resolution(&self, reference: &Reference, target: &str) -> Result<Digest, RegistryError> {
        match self.manifest(target).await? {
            Some(m) => Ok(m.digest),
            None => Err(RegistryError::NotFound(format!("manifest {reference} not found"))),
        }
    }

    /// Fetches the manifest `tag_or_digest` of this repository; `None` when the registry
    /// says it does not exist.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<Option<Manifest>, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repository, tag_or_digest);
        let Some(response) = self.get(&url, Some(MANIFEST_ACCEPT)).await? else {
            return Ok(None);
        };
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let advertised = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_bounded(response, MAX_MANIFEST_BYTES, &url).await?;
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
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// Fetches blob `digest`, refusing more than `max` bytes and content that does not hash to
    /// `digest`.
    pub async fn blob(&self, digest: &Digest, max: usize) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, digest);
        let Some(response) = self.get(&url, None).await? else {
            return Err(RegistryError::Invalid(format!("{url}: blob not found")));
        };
        let bytes = read_bounded(response, max, &url).await?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::Invalid(format!(
                "{url}: blob content does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// GET with authentication: answers one challenge, then retries once. `None` on 404.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Option<reqwest::Response>, RegistryError> {
        self.get_unless(url, accept, &[StatusCode::NOT_FOUND]).await
    }

    /// GET, with `None` for any of the `absent` statuses.
    async fn get_unless(
        &self,
        url: &str,
        accept: Option<&str>,
        absent: &[StatusCode],
    ) -> Result<Option<reqwest::Response>, RegistryError> {
        let mut challenged = false;
        loop {
            let mut request = self.client.get(url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let authorization = self.authorization.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
                s if s.is_success() => return Ok(Some(response)),
                s if absent.contains(&s) => return Ok(None),
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let answers = &self.registries.inner.answers;
                    let answer = match auth::answer(self, &challenge).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            answers.forget(&self.answers_key);
                            return Err(e);
                        }
                    };
                    answers.remember(self.answers_key.clone(), &answer);
                    *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer.authorization);
                }
                StatusCode::UNAUTHORIZED => {
                    self.registries.inner.answers.forget(&self.answers_key);
                    let why = self.credentials.origin().refusal();
                    return Err(RegistryError::Unavailable(format!(
                        "{url}: HTTP 401 Unauthorized: {why}"
                    )));
                }
                s => return Err(RegistryError::Unavailable(format!("{url}: HTTP {s}"))),
            }
        }
    }
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
