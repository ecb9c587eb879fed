//! The OCI distribution API as tests use it to put things into (and tamper with) a registry:
//! blobs and manifests, with optional basic authentication, which a token-auth registry's
//! challenge makes the rig trade for a bearer token (see [`send`]).
//!
//! Registries are named by `host:port`, as in image references. A host speaks plain HTTP unless
//! a [`TlsHost`] registration says it serves TLS under a test CA: then every request of the rig
//! to it ([`base_url`], [`client`]) goes over `https://` trusting that CA. This is the rig's one
//! place that knows which scheme a host speaks.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use reqwest::{
    header::{self, HeaderValue},
    Client, Method, Request, RequestBuilder, Response, StatusCode, Url,
};
use sha2::{Digest as _, Sha256};

/// Credentials (`user`, `password`) for a registry, or none: sent as basic auth, and traded for a
/// bearer token when a token-auth registry asks for one.
pub type Auth<'a> = Option<(&'a str, &'a str)>;

/// Media types the rig reads and writes.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// The empty descriptor's media type (its blob is `{}`), the config of artifact manifests.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
}

/// A bound on one request to the test registry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a manifest GET accepts: every manifest kind the rig may find.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A registry request that failed.
#[derive(Debug)]
pub enum RegistryError {
    /// No HTTP answer (connection refused, timeout).
    Transport {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    /// An HTTP answer other than the one the API promises.
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    /// An answer that breaks the API contract (missing header, wrong digest).
    Protocol { url: String, message: String },
}

// === impl RegistryError ===

impl RegistryError {
    /// The HTTP status, when the registry answered with an unexpected one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Transport { method, url, source } => write!(f, "{method} {url}: {source}"),
            RegistryError::Status {
                method,
                url,
                status,
                body,
            } => write!(f, "{method} {url}: {status}: {body}"),
            RegistryError::Protocol { url, message } => write!(f, "{url}: {message}"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Uploads `bytes` as a blob of `repo` (POST an upload session, then PUT its location with the
/// digest) and returns the blob's digest.
pub async fn push_blob(host: &str, repo: &str, bytes: &[u8], auth: Auth<'_>) -> Result<String, RegistryError> {
    let digest = sha256_digest(bytes);
    let start = api_url(host, &format!("{repo}/blobs/uploads/"));
    let post = request(host, Method::POST, &start, auth);
    let resp = send(post, repo, auth, StatusCode::ACCEPTED).await?;
    let location = header_value(&resp, "location", &start)?;
    let mut upload = Url::parse(&start)
        .and_then(|base| base.join(&location))
        .map_err(|e| protocol(&start, format!("upload location {location:?}: {e}")))?;
    // The location may carry a query of its own (distribution's `_state`); the digest joins it.
    upload.query_pairs_mut().append_pair("digest", &digest);
    let upload = upload.to_string();
    let put = request(host, Method::PUT, &upload, auth)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec());
    let resp = send(put, repo, auth, StatusCode::CREATED).await?;
    check_digest(&resp, &digest, &upload)?;
    Ok(digest)
}

/// The blob `digest` of `repo`.
pub async fn get_blob(host: &str, repo: &str, digest: &str, auth: Auth<'_>) -> Result<Vec<u8>, RegistryError> {
    let url = api_url(host, &format!("{repo}/blobs/{digest}"));
    let resp = send(request(host, Method::GET, &url, auth), repo, auth, StatusCode::OK).await?;
    body_bytes(resp, &url).await
}

/// The manifest `reference` (tag or digest) of `repo`: its exact bytes and its media type.
pub async fn get_manifest(
    host: &str,
    repo: &str,
    reference: &str,
    auth: Auth<'_>,
) -> Result<(Vec<u8>, String), RegistryError> {
    let url = api_url(host, &format!("{repo}/manifests/{reference}"));
    let get = request(host, Method::GET, &url, auth).header(header::ACCEPT, MANIFEST_ACCEPT);
    let resp = send(get, repo, auth, StatusCode::OK).await?;
    let media_type = header_value(&resp, "content-type", &url)?;
    Ok((body_bytes(resp, &url).await?, media_type))
}

/// Stores `bytes` as manifest `reference` (tag or digest) of `repo` with `media_type` and
/// returns its digest, after checking that the registry computed the same one.
pub async fn put_manifest(
    host: &str,
    repo: &str,
    reference: &str,
    bytes: &[u8],
    media_type: &str,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let digest = sha256_digest(bytes);
    let url = api_url(host, &format!("{repo}/manifests/{reference}"));
    let put = request(host, Method::PUT, &url, auth)
        .header(header::CONTENT_TYPE, media_type)
        .body(bytes.to_vec());
    let resp = send(put, repo, auth, StatusCode::CREATED).await?;
    check_digest(&resp, &digest, &url)?;
    Ok(digest)
}

/// The digest a tag (or digest) of `repo` points at now.
pub async fn resolve(host: &str, repo: &str, reference: &str, auth: Auth<'_>) -> Result<String, RegistryError> {
    let url = api_url(host, &format!("{repo}/manifests/{reference}"));
    let head = request(host, Method::HEAD, &url, auth).header(header::ACCEPT, MANIFEST_ACCEPT);
    let resp = send(head, repo, auth, StatusCode::OK).await?;
    header_value(&resp, "docker-content-digest", &url)
}

/// Deletes the manifest `reference` of `repo`. A tag is resolved first, since the registry
/// deletes manifests only by digest; every tag that points at that manifest goes with it.
pub async fn delete_manifest(host: &str, repo: &str, reference: &str, auth: Auth<'_>) -> Result<(), RegistryError> {
    let digest = if reference.contains(':') {
        reference.to_owned()
    } else {
        resolve(host, repo, reference, auth).await?
    };
    let url = api_url(host, &format!("{repo}/manifests/{digest}"));
    let delete = request(host, Method::DELETE, &url, auth);
    send(delete, repo, auth, StatusCode::ACCEPTED).await?;
    Ok(())
}

/// The hosts of this process that serve TLS, with the PEM of the CA that signed their
/// certificates.
static TLS_HOSTS: Mutex<BTreeMap<String, Vec<u8>>> = Mutex::new(BTreeMap::new());

/// While this lives, the rig speaks `https://` to its host, trusting its CA. A TLS registry
/// holds one for its port; dropping it (with the registry) forgets the host, so a later
/// plain-HTTP registry on the same port is reached over plain HTTP again.
#[derive(Debug)]
pub struct TlsHost {
    host: String,
}

// === impl TlsHost ===

impl TlsHost {
    /// Registers `host` (`127.0.0.1:PORT`) as serving TLS with a certificate signed by the CA
    /// in `ca_pem`; `None` if another live registration holds the host (its registry has the
    /// port). Panics if the PEM is not a certificate.
    pub fn register(host: &str, ca_pem: &[u8]) -> Option<TlsHost> {
        reqwest::Certificate::from_pem(ca_pem).unwrap_or_else(|e| panic!("CA for {host}: {e}"));
        let mut hosts = TLS_HOSTS.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.contains_key(host) {
            return None;
        }
        hosts.insert(host.to_owned(), ca_pem.to_vec());
        Some(TlsHost { host: host.to_owned() })
    }
}

impl Drop for TlsHost {
    fn drop(&mut self) {
        TLS_HOSTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.host);
    }
}

/// The PEM of the CA `host` is registered with, if it serves TLS.
fn tls_ca(host: &str) -> Option<Vec<u8>> {
    TLS_HOSTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(host)
        .cloned()
}

/// `https://host` for a registered [`TlsHost`], else `http://host`.
pub fn base_url(host: &str) -> String {
    let scheme = if tls_ca(host).is_some() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// An HTTP client for `host` with a bound of `timeout` per request, trusting the host's CA when
/// it is a registered [`TlsHost`]. Each call builds a fresh client: each `#[tokio::test]` has its
/// own runtime, and pooled connections must not outlive the runtime that made them.
pub fn client(host: &str, timeout: Duration) -> Client {
    let mut builder = reqwest::Client::builder().no_proxy().timeout(timeout);
    if let Some(pem) = tls_ca(host) {
        let ca = reqwest::Certificate::from_pem(&pem).expect("a registered CA parses");
        builder = builder.add_root_certificate(ca);
    }
    builder.build().expect("build an HTTP client")
}

fn api_url(host: &str, path: &str) -> String {
    format!("{}/v2/{path}", base_url(host))
}

/// A request of `host`'s API (see [`client`]), with basic auth if there are credentials.
fn request(host: &str, method: Method, url: &str, auth: Auth<'_>) -> RequestBuilder {
    let req = client(host, REQUEST_TIMEOUT).request(method, url);
    match auth {
        Some((user, pass)) => req.basic_auth(user, Some(pass)),
        None => req,
    }
}

/// Sends `req` and expects `expect`. When a token-auth registry answers 401 with a `Bearer`
/// challenge and there are credentials, a token for `repository:<repo>:pull,push` (and `delete`
/// for a DELETE) is fetched from the challenge's realm with them as basic auth, and the request
/// is sent once more with that token: the rig's one piece of bearer-token handling.
async fn send(req: RequestBuilder, repo: &str, auth: Auth<'_>, expect: StatusCode) -> Result<Response, RegistryError> {
    let (client, request) = req.build_split();
    let request = request.map_err(|e| protocol(&e.url().map(Url::to_string).unwrap_or_default(), e.to_string()))?;
    let (method, url) = (request.method().clone(), request.url().to_string());
    let retry = request.try_clone();
    let mut resp = execute(&client, request).await?;
    if let (StatusCode::UNAUTHORIZED, Some((user, pass)), Some(mut retry)) = (resp.status(), auth, retry) {
        if let Some(challenge) = bearer_challenge(&resp) {
            let actions = if method == Method::DELETE {
                "pull,push,delete"
            } else {
                "pull,push"
            };
            let token = fetch_token(&client, &challenge, &format!("repository:{repo}:{actions}"), user, pass).await?;
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| protocol(&challenge.realm, "the token is not a header value".to_owned()))?;
            retry.headers_mut().insert(header::AUTHORIZATION, bearer);
            resp = execute(&client, retry).await?;
        }
    }
    if resp.status() == expect {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(RegistryError::Status {
        method,
        url,
        status,
        body,
    })
}

async fn execute(client: &Client, request: Request) -> Result<Response, RegistryError> {
    let (method, url) = (request.method().clone(), request.url().to_string());
    client
        .execute(request)
        .await
        .map_err(|source| RegistryError::Transport { method, url, source })
}

/// The parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

fn bearer_challenge(resp: &Response) -> Option<BearerChallenge> {
    let value = resp.headers().get(header::WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_bearer_challenge(value)
}

/// Reads `Bearer key="value",key=value,…`; `None` for another scheme or without a realm.
fn parse_bearer_challenge(value: &str) -> Option<BearerChallenge> {
    let (scheme, mut rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service) = (None, None);
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        // A quoted value may hold commas (`scope="repository:a:pull,push"`).
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"')?,
            None => after.split_once(',').unwrap_or((after, "")),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = remainder;
    }
    Some(BearerChallenge { realm: realm?, service })
}

/// `GET realm?service=…&scope=…` with basic credentials; the `token` (or `access_token`) of the
/// JSON answer.
async fn fetch_token(
    client: &Client,
    challenge: &BearerChallenge,
    scope: &str,
    user: &str,
    pass: &str,
) -> Result<String, RegistryError> {
    let mut url = Url::parse(&challenge.realm).map_err(|e| protocol(&challenge.realm, format!("token realm: {e}")))?;
    if let Some(service) = &challenge.service {
        url.query_pairs_mut().append_pair("service", service);
    }
    url.query_pairs_mut().append_pair("scope", scope);
    let request = client.get(url).basic_auth(user, Some(pass)).build();
    let request = request.map_err(|e| protocol(&challenge.realm, e.to_string()))?;
    let resp = execute(client, request).await?;
    let url = resp.url().to_string();
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(RegistryError::Status {
            method: Method::GET,
            url,
            status,
            body,
        });
    }
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: TokenAnswer = serde_json::from_slice(&body_bytes(resp, &url).await?)
        .map_err(|e| protocol(&url, format!("token answer: {e}")))?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| protocol(&url, "the token answer holds no token".to_owned()))
}

async fn body_bytes(resp: Response, url: &str) -> Result<Vec<u8>, RegistryError> {
    match resp.bytes().await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(source) => Err(RegistryError::Transport {
            method: Method::GET,
            url: url.to_owned(),
            source,
        }),
    }
}

fn header_value(resp: &Response, name: &str, url: &str) -> Result<String, RegistryError> {
    let missing = || protocol(url, format!("the {name} header is missing or not text"));
    let value = resp.headers().get(name).ok_or_else(missing)?;
    Ok(value.to_str().map_err(|_| missing())?.to_owned())
}

fn check_digest(resp: &Response, ours: &str, url: &str) -> Result<(), RegistryError> {
    let theirs = header_value(resp, "docker-content-digest", url)?;
    if theirs != ours {
        return Err(protocol(
            url,
            format!("registry says digest {theirs}, the bytes sent hash to {ours}"),
        ));
    }
    Ok(())
}

fn protocol(url: &str, message: String) -> RegistryError {
    RegistryError::Protocol {
        url: url.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        let challenge = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            challenge,
            Some(BearerChallenge {
                realm: "http://127.0.0.1:1/token".to_owned(),
                service: Some("svc".to_owned()),
            })
        );
        assert_eq!(
            parse_bearer_challenge("bearer realm=http://r/t").map(|c| c.realm),
            Some("http://r/t".to_owned())
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="svc""#), None);
    }
}
