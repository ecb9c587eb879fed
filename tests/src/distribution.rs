//! The OCI distribution API as tests use it to put things into (and tamper with) a registry:
//! blobs and manifests over plain HTTP, with optional basic authentication.

use std::{fmt, time::Duration};

use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};

/// Basic-auth credentials (`user`, `password`) for a registry, or none.
pub type Auth<'a> = Option<(&'a str, &'a str)>;

/// Media types the rig reads and writes.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
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
    let resp = send(
        request(Method::POST, &start, auth),
        Method::POST,
        &start,
        StatusCode::ACCEPTED,
    )
    .await?;
    let location = header_value(&resp, "location", &start)?;
    let mut upload = Url::parse(&start)
        .and_then(|base| base.join(&location))
        .map_err(|e| protocol(&start, format!("upload location {location:?}: {e}")))?;
    // The location may carry a query of its own (distribution's `_state`); the digest joins it.
    upload.query_pairs_mut().append_pair("digest", &digest);
    let upload = upload.to_string();
    let put = request(Method::PUT, &upload, auth)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec());
    let resp = send(put, Method::PUT, &upload, StatusCode::CREATED).await?;
    check_digest(&resp, &digest, &upload)?;
    Ok(digest)
}

/// The blob `digest` of `repo`.
pub async fn get_blob(host: &str, repo: &str, digest: &str, auth: Auth<'_>) -> Result<Vec<u8>, RegistryError> {
    let url = api_url(host, &format!("{repo}/blobs/{digest}"));
    let resp = send(request(Method::GET, &url, auth), Method::GET, &url, StatusCode::OK).await?;
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
    let get = request(Method::GET, &url, auth).header(header::ACCEPT, MANIFEST_ACCEPT);
    let resp = send(get, Method::GET, &url, StatusCode::OK).await?;
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
    let put = request(Method::PUT, &url, auth)
        .header(header::CONTENT_TYPE, media_type)
        .body(bytes.to_vec());
    let resp = send(put, Method::PUT, &url, StatusCode::CREATED).await?;
    check_digest(&resp, &digest, &url)?;
    Ok(digest)
}

/// The digest a tag (or digest) of `repo` points at now.
pub async fn resolve(host: &str, repo: &str, reference: &str, auth: Auth<'_>) -> Result<String, RegistryError> {
    let url = api_url(host, &format!("{repo}/manifests/{reference}"));
    let head = request(Method::HEAD, &url, auth).header(header::ACCEPT, MANIFEST_ACCEPT);
    let resp = send(head, Method::HEAD, &url, StatusCode::OK).await?;
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
    send(
        request(Method::DELETE, &url, auth),
        Method::DELETE,
        &url,
        StatusCode::ACCEPTED,
    )
    .await?;
    Ok(())
}

fn api_url(host: &str, path: &str) -> String {
    format!("http://{host}/v2/{path}")
}

/// A fresh client per request: each `#[tokio::test]` has its own runtime, and pooled
/// connections must not outlive the runtime that made them.
fn request(method: Method, url: &str, auth: Auth<'_>) -> RequestBuilder {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build an HTTP client");
    let req = client.request(method, url);
    match auth {
        Some((user, pass)) => req.basic_auth(user, Some(pass)),
        None => req,
    }
}

async fn send(req: RequestBuilder, method: Method, url: &str, expect: StatusCode) -> Result<Response, RegistryError> {
    let resp = req.send().await.map_err(|source| RegistryError::Transport {
        method: method.clone(),
        url: url.to_owned(),
        source,
    })?;
    if resp.status() == expect {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(RegistryError::Status {
        method,
        url: url.to_owned(),
        status,
        body,
    })
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
