//! Discovery of Sigstore bundles attached to an image as OCI referrers, the way cosign v3 stores
//! signatures and attestations, and of Notary Project (Notation) signatures, which live the
//! same way: `GET /v2/<repo>/referrers/<digest>`, and, where the registry has no referrers API
//! (404), the referrers tag `<repo>:sha256-<hex>`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{read_bounded, routes::Route, Answer, Endpoint, Need, Registries, RegistryError, Session};
use crate::{
    reference::Digest,
    verify::notation::{COSE_MEDIA_TYPE, JWS_MEDIA_TYPE, MAX_ENVELOPE_BYTES, SIGNATURE_ARTIFACT_TYPE},
};
pub use pullgate_verify::attached::{AttachedBundle, NotationEnvelope, Referrers};

/// `artifactType` of a referrer holding a Sigstore bundle (v0.1–v0.3 share this prefix).
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle";

/// The media type of an empty config (`{}`). go-containerregistry, and so cosign v2's
/// `--new-bundle-format`, lists a referrer in the referrers tag's index with its config's media
/// type as `artifactType`, not the manifest's own: such a referrer is read to see what it is.
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The manifest annotation naming an attestation's predicate type, so bundles can be chosen
/// without downloading them.
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

/// More bundle referrers than this on one image are refused rather than fetched.
pub const MAX_BUNDLES: usize = 64;

/// A bundle larger than this is not fetched: a signature bundle is a few KiB, an attestation
/// carrying an SBOM can be megabytes.
pub const MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// What the bundles of one image may add up to; bundles beyond it are not fetched.
pub const MAX_BUNDLES_TOTAL_BYTES: u64 = 16 * 1024 * 1024;

/// At most this many index entries without an `artifactType` have their manifest fetched to
/// learn whether they are bundles.
pub const MAX_UNTYPED_REFERRERS: usize = 8;

/// The media type of an OCI image manifest, the only kind of referrer that can hold a bundle.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An index listing referrers is refused above this size.
const MAX_INDEX_BYTES: usize = 1024 * 1024;

/// How long a repository that answered without a referrers API is believed to have none, and
/// how many such repositories are remembered. Until then only its referrers tag is read: a
/// repository that gains the API meanwhile can only make pullgate miss bundles, which denies,
/// never allows. It is remembered per repository, not per registry: a registry answers 404 for
/// a repository it does not have, which says nothing about its other repositories.
pub const NO_API_REMEMBERED: Duration = Duration::from_secs(600);
const MAX_NO_API_REPOSITORIES: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Parses `bytes` as a referrers index and as a referrer manifest (for the fuzz targets: the
/// same parsing discovery does); how many descriptors each lists.
pub(crate) fn parse_index_and_manifest(bytes: &[u8]) -> (Option<usize>, Option<usize>) {
    let index = serde_json::from_slice::<Index>(bytes).ok().map(|i| i.manifests.len());
    let manifest = serde_json::from_slice::<ReferrerManifest>(bytes)
        .ok()
        .map(|m| m.layers.len());
    (index, manifest)
}

/// The referrers tag of `image`: where registries without the referrers API keep the index.
pub fn referrers_tag(image: &Digest) -> String {
    format!("sha256-{}", image.hex())
}

/// Fetches the Sigstore bundles that refer to `image`, at most [`MAX_BUNDLES`]: those whose
/// announced predicate type is one of `wanted`, and those that announce none.
pub async fn sigstore_bundles(
    session: &Session<'_>,
    image: &Digest,
    wanted: &[&str],
) -> Result<Referrers, RegistryError> {
    signatures(session, image, wanted, false).await
}

/// What [`sigstore_bundles`] fetches and, when `notation`, the Notary Project signature
/// envelopes among the same referrers, within the same bounds: a signature manifest says what
/// it is by its `artifactType` or, as notation 1.3 writes it, its config's media type
/// `application/vnd.cncf.notary.signature`.
pub async fn signatures(
    session: &Session<'_>,
    image: &Digest,
    wanted: &[&str],
    notation: bool,
) -> Result<Referrers, RegistryError> {
    let is_wanted = |annotations: &BTreeMap<String, String>| {
        annotations
            .get(PREDICATE_TYPE_ANNOTATION)
            .is_none_or(|t| wanted.contains(&t.as_str()))
    };
    let mut found = Referrers::default();
    let look = Look {
        wanted,
        notation,
        is_wanted: &is_wanted,
    };
    let Some(index) = referrers_index(session, image, &look).await? else {
        return Ok(found);
    };
    let candidates: Vec<&Descriptor> = index.manifests.iter().filter(|d| look.may_be_wanted(d)).collect();
    if candidates.len() > MAX_BUNDLES {
        let skipped = candidates.len() - MAX_BUNDLES;
        found.unreadable.push(format!(
            "{skipped} bundle referrers beyond the first {MAX_BUNDLES} were not read"
        ));
    }
    let untyped = candidates.iter().filter(|d| d.artifact_type.is_none()).count();
    if untyped > MAX_UNTYPED_REFERRERS {
        found.unreadable.push(format!(
            "{} referrers without an artifactType beyond the first {MAX_UNTYPED_REFERRERS} were not read",
            untyped - MAX_UNTYPED_REFERRERS
        ));
    }
    let mut untyped_left = MAX_UNTYPED_REFERRERS;
    let mut budget = MAX_BUNDLES_TOTAL_BYTES;
    for descriptor in candidates.into_iter().take(MAX_BUNDLES) {
        if descriptor.artifact_type.is_none() {
            if untyped_left == 0 {
                continue;
            }
            untyped_left -= 1;
        }
        let Some(digest) = Digest::parse(&descriptor.digest) else {
            found.unreadable.push(format!(
                "referrer digest {:?} is not a sha256 digest",
                descriptor.digest
            ));
            continue;
        };
        let index_says_bundle = descriptor.artifact_type.is_some();
        match fetch_referrer(session, image, &digest, index_says_bundle, &look, budget).await {
            Ok(Some(Fetched::Bundle(bundle))) => {
                budget = budget.saturating_sub(bundle.bytes.len() as u64);
                let predicate_type = bundle
                    .predicate_type
                    .or_else(|| descriptor.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned());
                found.bundles.push(AttachedBundle {
                    predicate_type,
                    ..bundle
                });
            }
            Ok(Some(Fetched::Notation(envelope))) => {
                budget = budget.saturating_sub(envelope.bytes.len() as u64);
                found.notation.push(envelope);
            }
            Ok(None) => {}
            Err(e) => found.unreadable.push(e.to_string()),
        }
    }
    Ok(found)
}

/// What one image's referrers are searched for.
struct Look<'a, W> {
    /// Predicate types of the bundles wanted.
    wanted: &'a [&'a str],
    /// Whether Notary Project signatures are wanted too.
    notation: bool,
    /// Whether annotations announce a wanted predicate type, or none.
    is_wanted: &'a W,
}

impl<W: Fn(&BTreeMap<String, String>) -> bool> Look<'_, W> {
    /// Whether an index entry may be a bundle of a wanted predicate type or a wanted Notation
    /// signature: it says it is one, or it says nothing of its type (older registries and ORAS
    /// drop `artifactType` from the index), in which case only its manifest can tell.
    fn may_be_wanted(&self, d: &Descriptor) -> bool {
        let typed_as_wanted = match d.artifact_type.as_deref() {
            // cosign v2's `--new-bundle-format` lists its bundles under their config's type.
            Some(t) => {
                t.starts_with(BUNDLE_ARTIFACT_TYPE)
                    || t == EMPTY_CONFIG_TYPE
                    || (self.notation && t == SIGNATURE_ARTIFACT_TYPE)
            }
            None => d.media_type.is_empty() || d.media_type == OCI_MANIFEST,
        };
        typed_as_wanted && (self.is_wanted)(&d.annotations)
    }

    /// Whether an index lists a candidate, and a bundle announcing each `wanted` predicate
    /// type: then there is nothing the referrers tag needs to add.
    fn lists_all_wanted(&self, index: &Index) -> bool {
        let candidates: Vec<&Descriptor> = index.manifests.iter().filter(|d| self.may_be_wanted(d)).collect();
        !candidates.is_empty()
            && self.wanted.iter().all(|w| {
                candidates
                    .iter()
                    .any(|d| d.annotations.get(PREDICATE_TYPE_ANNOTATION).is_some_and(|t| t == w))
            })
    }
}

/// The referrers index of `image`: from the first host that has one, through its referrers
/// API or, where it has none, its referrers tag. A host that says it has neither is passed over
/// like one that cannot be reached; "none" is the answer when one said so and none had it.
async fn referrers_index<W: Fn(&BTreeMap<String, String>) -> bool>(
    session: &Session<'_>,
    image: &Digest,
    look: &Look<'_, W>,
) -> Result<Option<Index>, RegistryError> {
    let mut failures = Vec::new();
    let mut said_absent: Vec<&Route> = Vec::new();
    for endpoint in session.endpoints(Need::Referrers) {
        // The same host listed twice says the same "none" twice.
        if said_absent.iter().any(|r| r.same_place(&endpoint.route)) {
            continue;
        }
        match index_from(session, endpoint, image, look).await {
            Ok(Some(index)) => return Ok(Some(index)),
            Ok(None) => said_absent.push(&endpoint.route),
            Err(e @ RegistryError::Unavailable(_)) => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    let said_absent = !said_absent.is_empty();
    session
        .none_found(Need::Referrers, said_absent, failures)
        .map(|()| None)
}

/// One host's referrers index of `image`: its referrers API's answer, or its referrers tag's
/// index when it has no API. A repository found without the API is not asked again for
/// [`NO_API_REMEMBERED`].
///
/// Registries seen in production answer the API with an empty or partial list while the tag
/// holds the bundle (cosign falls back to the tag when it pushes to some of them), so when the
/// API lists no candidate bundle, or none announcing one of the `wanted` predicate types, the
/// tag is read too: one request more.
/// A redirect that ends in 404 (ghcr.io) says nothing about the repository: the tag is read
/// but the repository is not remembered as having no API.
async fn index_from<W: Fn(&BTreeMap<String, String>) -> bool>(
    session: &Session<'_>,
    endpoint: &Endpoint,
    image: &Digest,
    look: &Look<'_, W>,
) -> Result<Option<Index>, RegistryError> {
    // Registries without the API answer 404, as the spec asks, or 400 or 405.
    let absent = [
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
        StatusCode::METHOD_NOT_ALLOWED,
    ];
    // A mirror serving several registries (`?ns=`) may have the API for one and not another.
    let key = (
        endpoint.route.root.clone(),
        format!("{}/{}", session.registry, session.repository),
    );
    let mut from_api = None;
    if !session.registries.has_no_referrers_api(&key) {
        let tail = format!("referrers/{image}");
        let accept = Some("application/vnd.oci.image.index.v1+json");
        match session
            .answer_from(Method::GET, endpoint, &tail, accept, &absent)
            .await?
        {
            (Answer::Found(response), url) => {
                let bytes = read_bounded(response, MAX_INDEX_BYTES, &url).await?;
                let index: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| RegistryError::Invalid(format!("referrers of {image}: not an image index: {e}")))?;
                if look.lists_all_wanted(&index) {
                    return Ok(Some(index));
                }
                from_api = Some(index);
            }
            (Answer::Absent { redirected: true }, _) => {}
            (Answer::Absent { redirected: false }, _) => session.registries.found_no_referrers_api(key),
        }
    }
    let Some(tag) = referrers_tag_index(session, endpoint, image).await? else {
        return Ok(from_api);
    };
    let from_tag = serde_json::from_slice::<Index>(&tag.bytes);
    match (from_api, from_tag) {
        (None, tag) => tag
            .map(Some)
            .map_err(|e| RegistryError::Invalid(format!("referrers of {image}: not an image index: {e}"))),
        // The API answered; a tag that is not an index only adds nothing.
        (Some(api), Err(_)) => Ok(Some(api)),
        (Some(mut api), Ok(tag)) => {
            for descriptor in tag.manifests {
                if !api.manifests.iter().any(|d| d.digest == descriptor.digest) {
                    api.manifests.push(descriptor);
                }
            }
            Ok(Some(api))
        }
    }
}

/// The manifest under the referrers tag of `image` at one host, if there is one. Most images
/// have none, so a `HEAD` asks first: a `404` to a `HEAD` costs no manifest `GET` (which
/// registries such as Docker Hub count against a pull limit); the `GET` follows only when the
/// tag exists, or when the host will not answer the `HEAD`.
async fn referrers_tag_index(
    session: &Session<'_>,
    endpoint: &Endpoint,
    image: &Digest,
) -> Result<Option<super::Manifest>, RegistryError> {
    let tag = referrers_tag(image);
    let tail = format!("manifests/{tag}");
    let absent = [StatusCode::NOT_FOUND];
    let head = session
        .answer_from(Method::HEAD, endpoint, &tail, Some(super::MANIFEST_ACCEPT), &absent)
        .await;
    match head {
        Ok((Answer::Absent { .. }, _)) => Ok(None),
        Ok((Answer::Found(_), _)) | Err(_) => session.manifest_from(endpoint, &tag).await,
    }
}

impl Registries {
    /// Whether the repository at a host, `(root, repository)`, was found without a referrers
    /// API not long ago.
    fn has_no_referrers_api(&self, key: &(String, String)) -> bool {
        let known = self.inner.no_referrers_api.lock().unwrap_or_else(|p| p.into_inner());
        known.get(key).is_some_and(|until| *until > Instant::now())
    }

    /// Remembers that the repository at a host has no referrers API. When the memory is full of
    /// live entries nothing more is remembered, which only costs a request.
    fn found_no_referrers_api(&self, key: (String, String)) {
        let now = Instant::now();
        let mut known = self.inner.no_referrers_api.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_NO_API_REPOSITORIES {
            known.retain(|_, until| *until > now);
        }
        if known.len() < MAX_NO_API_REPOSITORIES {
            known.insert(key, now + NO_API_REMEMBERED);
        }
    }
}

/// What one referrer held.
enum Fetched {
    Bundle(AttachedBundle),
    Notation(NotationEnvelope),
}

/// Fetches one referrer manifest and its bundle layer or Notation envelope, of at most `budget`
/// bytes. A manifest whose subject is another image (a stale or forged index entry), or whose
/// predicate type is not wanted, is skipped.
async fn fetch_referrer<W: Fn(&BTreeMap<String, String>) -> bool>(
    session: &Session<'_>,
    image: &Digest,
    manifest_digest: &Digest,
    index_says_bundle: bool,
    look: &Look<'_, W>,
    budget: u64,
) -> Result<Option<Fetched>, RegistryError> {
    let Some(manifest) = session.manifest(manifest_digest.as_str()).await? else {
        return Ok(None);
    };
    let parsed: ReferrerManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| RegistryError::Invalid(format!("referrer {manifest_digest}: {e}")))?;
    if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(image.as_str())
        || !(look.is_wanted)(&parsed.annotations)
    {
        return Ok(None);
    }
    // What the manifest says it is decides, whatever the index said.
    let artifact_type = parsed.artifact_type.as_deref().unwrap_or_default();
    let config_type = parsed.config.as_ref().map_or("", |c| c.media_type.as_str());
    if look.notation && (artifact_type == SIGNATURE_ARTIFACT_TYPE || config_type == SIGNATURE_ARTIFACT_TYPE) {
        return fetch_envelope(session, manifest_digest, &parsed, budget)
            .await
            .map(|e| Some(Fetched::Notation(e)));
    }
    // An entry the index gave no type is a bundle only if its manifest says so.
    let manifest_type = parsed
        .artifact_type
        .as_deref()
        .or(parsed.config.as_ref().map(|c| c.media_type.as_str()))
        .unwrap_or_default();
    if !index_says_bundle && !manifest_type.starts_with(BUNDLE_ARTIFACT_TYPE) {
        return Ok(None);
    }
    let Some(layer) = parsed
        .layers
        .iter()
        .find(|l| l.media_type.starts_with(BUNDLE_ARTIFACT_TYPE))
    else {
        return Ok(None);
    };
    if layer.size > MAX_BUNDLE_BYTES {
        return Err(RegistryError::Invalid(format!(
            "referrer {manifest_digest}: bundle of {} bytes is larger than {MAX_BUNDLE_BYTES}",
            layer.size
        )));
    }
    let Some(layer_digest) = Digest::parse(&layer.digest) else {
        return Ok(None);
    };
    if layer.size > budget {
        return Err(RegistryError::Invalid(format!(
            "referrer {manifest_digest}: bundle of {} bytes would take the image's bundles past {MAX_BUNDLES_TOTAL_BYTES} bytes",
            layer.size
        )));
    }
    let bytes = session
        .blob(&layer_digest, MAX_BUNDLE_BYTES.min(budget) as usize)
        .await?;
    Ok(Some(Fetched::Bundle(AttachedBundle {
        manifest: manifest_digest.clone(),
        predicate_type: parsed.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned(),
        bytes,
    })))
}

/// The envelope of a Notary Project signature manifest: its one layer, JWS or COSE, of at most
/// `budget` bytes.
async fn fetch_envelope(
    session: &Session<'_>,
    manifest_digest: &Digest,
    parsed: &ReferrerManifest,
    budget: u64,
) -> Result<NotationEnvelope, RegistryError> {
    let invalid = |why: String| RegistryError::Invalid(format!("Notation signature {manifest_digest}: {why}"));
    // The signature specification gives the manifest exactly one layer, the envelope.
    let [layer] = parsed.layers.as_slice() else {
        return Err(invalid(format!("{} layers, not one envelope", parsed.layers.len())));
    };
    if layer.media_type != JWS_MEDIA_TYPE && layer.media_type != COSE_MEDIA_TYPE {
        return Err(invalid(format!(
            "envelope media type {:?} is neither {JWS_MEDIA_TYPE} nor {COSE_MEDIA_TYPE}",
            layer.media_type
        )));
    }
    let max = (MAX_ENVELOPE_BYTES as u64).min(budget);
    if layer.size > max {
        return Err(invalid(format!(
            "envelope of {} bytes is larger than {max} (at most {MAX_ENVELOPE_BYTES}, and {MAX_BUNDLES_TOTAL_BYTES} for all of an image's)",
            layer.size
        )));
    }
    let digest = Digest::parse(&layer.digest).ok_or_else(|| invalid(format!("layer digest {:?}", layer.digest)))?;
    let bytes = session.blob(&digest, max as usize).await?;
    Ok(NotationEnvelope {
        manifest: manifest_digest.clone(),
        media_type: layer.media_type.clone(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    //! The referrers API itself (a 200 answer) cannot be met with Debian's registry 2.8, which
    //! only has the tag fallback the end-to-end tests use; a canned HTTP server stands in here.

    use std::collections::HashMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{config::Config, reference::Reference, registry::Credentials};

    /// The paths a canned server was asked for, in order.
    type Asked = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// Serves `routes` (path → body) over plain HTTP/1.1 on loopback; everything else is 404.
    async fn serve(routes: HashMap<String, Vec<u8>>) -> String {
        serve_recording(routes).await.0
    }

    /// [`serve`], also recording the paths asked for.
    async fn serve_recording(routes: HashMap<String, Vec<u8>>) -> (String, Asked) {
        serve_redirecting(routes, HashMap::new()).await
    }

    /// [`serve_recording`], also answering the paths of `redirects` with a 307 to another path.
    async fn serve_redirecting(
        routes: HashMap<String, Vec<u8>>,
        redirects: HashMap<String, String>,
    ) -> (String, Asked) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let asked = Asked::default();
        let recorder = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                let redirects = redirects.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .split('?')
                        .next()
                        .unwrap_or("/");
                    recorder.lock().unwrap().push(path.to_string());
                    if let Some(to) = redirects.get(path) {
                        let head = format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        return;
                    }
                    let (status, body) = match routes.get(path) {
                        Some(body) => ("200 OK", body.clone()),
                        None => ("404 Not Found", b"{}".to_vec()),
                    };
                    let digest = Digest::of(&body);
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        (host, asked)
    }

    /// A registry over `host`, reached over plain HTTP.
    fn registries_for(host: &str) -> crate::registry::Registries {
        let mut config = Config::with_policy("unused".into());
        config.registries.push(crate::config::RegistryConfig {
            host: host.to_string(),
            insecure: true,
            ca_file: None,
        });
        crate::registry::Registries::new(&config, Default::default()).unwrap()
    }

    const SIGN: &str = "https://sigstore.dev/cosign/sign/v1";
    const SPDX: &str = "https://spdx.dev/Document";

    #[tokio::test]
    async fn referrers_api_answers_are_followed_and_foreign_subjects_skipped() {
        let image = Digest::of(b"the image manifest");
        let other = Digest::of(b"another image");
        let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#.to_vec();
        let bundle_digest = Digest::of(&bundle);
        let referrer = |subject: &Digest| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": bundle_digest.to_string(), "size": bundle.len()}],
                "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject.to_string(), "size": 1},
                "annotations": {PREDICATE_TYPE_ANNOTATION: "https://sigstore.dev/cosign/sign/v1"}
            })
            .to_string()
            .into_bytes()
        };
        let good = referrer(&image);
        let foreign = referrer(&other);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(&good).to_string(), "size": good.len(), "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(&foreign).to_string(), "size": foreign.len(), "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(b"sbom").to_string(), "size": 4, "artifactType": "application/spdx+json"},
                // An SPDX attestation bundle whose manifest is unreadable: only read when wanted.
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(b"not json").to_string(), "size": 8, "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                 "annotations": {PREDICATE_TYPE_ANNOTATION: SPDX}}
            ]
        });
        let routes = HashMap::from([
            (format!("/v2/app/referrers/{image}"), index.to_string().into_bytes()),
            (format!("/v2/app/manifests/{}", Digest::of(&good)), good.clone()),
            (format!("/v2/app/manifests/{}", Digest::of(&foreign)), foreign.clone()),
            (format!("/v2/app/blobs/{bundle_digest}"), bundle.clone()),
            (
                format!("/v2/app/manifests/{}", Digest::of(b"not json")),
                b"not json".to_vec(),
            ),
        ]);
        let host = serve(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = sigstore_bundles(&session, &image, &[SIGN]).await.unwrap();
        assert!(found.unreadable.is_empty(), "{:?}", found.unreadable);
        let found = found.bundles;
        assert_eq!(
            found.len(),
            1,
            "the SBOM is not a bundle and the foreign referrer names another image"
        );
        assert_eq!(found[0].manifest, Digest::of(&good));
        assert_eq!(found[0].bytes, bundle);
        assert_eq!(
            found[0].predicate_type.as_deref(),
            Some("https://sigstore.dev/cosign/sign/v1")
        );

        // Asked for SPDX too, the announced SPDX bundle is fetched (and found unreadable).
        let found = sigstore_bundles(&session, &image, &[SIGN, SPDX]).await.unwrap();
        assert_eq!(found.bundles.len(), 1);
        assert_eq!(found.unreadable.len(), 1, "{:?}", found.unreadable);

        // No API and no referrers tag: nothing attached.
        assert!(sigstore_bundles(&session, &other, &[SIGN])
            .await
            .unwrap()
            .bundles
            .is_empty());
    }

    /// A repository without the API (404) is asked for it once; later lookups there, for any
    /// image and any session, go straight to the referrers tag, until the memory runs out.
    #[tokio::test]
    async fn a_repository_without_the_api_is_not_asked_again() {
        let first = Digest::of(b"first image");
        let second = Digest::of(b"second image");
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []})
            .to_string()
            .into_bytes();
        let routes = HashMap::from([(format!("/v2/app/manifests/{}", referrers_tag(&first)), index)]);
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let session = |image: &Digest| {
            let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
            registries.session(&reference, Credentials::anonymous())
        };

        let found = sigstore_bundles(&session(&first), &first, &[SIGN]).await.unwrap();
        assert!(found.bundles.is_empty() && found.unreadable.is_empty());
        sigstore_bundles(&session(&second), &second, &[SIGN]).await.unwrap();
        let paths = asked.lock().unwrap().clone();
        // The referrers tag is asked by HEAD, then read (GET) only where it exists.
        assert_eq!(
            paths,
            [
                format!("/v2/app/referrers/{first}"),
                format!("/v2/app/manifests/{}", referrers_tag(&first)),
                format!("/v2/app/manifests/{}", referrers_tag(&first)),
                format!("/v2/app/manifests/{}", referrers_tag(&second)),
            ]
        );

        // Once the memory has expired the API is asked again.
        registries
            .inner
            .no_referrers_api
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|until| *until = Instant::now());
        sigstore_bundles(&session(&second), &second, &[SIGN]).await.unwrap();
        let paths = asked.lock().unwrap().clone();
        assert_eq!(
            paths[4..],
            [
                format!("/v2/app/referrers/{second}"),
                format!("/v2/app/manifests/{}", referrers_tag(&second))
            ]
        );
    }

    /// One repository's 404 (here: a repository the registry does not have) does not stop
    /// pullgate from asking another repository of the same registry, where the API answers
    /// with a bundle reachable no other way.
    #[tokio::test]
    async fn one_repository_without_the_api_does_not_decide_for_the_others() {
        let image = Digest::of(b"the image manifest");
        let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#.to_vec();
        let bundle_digest = Digest::of(&bundle);
        let referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": bundle_digest.to_string(), "size": bundle.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.to_string(), "size": 1}
        })
        .to_string()
        .into_bytes();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(&referrer).to_string(),
                           "size": referrer.len(), "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]
        });
        let routes = HashMap::from([
            (format!("/v2/app/referrers/{image}"), index.to_string().into_bytes()),
            (format!("/v2/app/manifests/{}", Digest::of(&referrer)), referrer.clone()),
            (format!("/v2/app/blobs/{bundle_digest}"), bundle.clone()),
        ]);
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let session = |repository: &str| {
            let reference = Reference::parse(&format!("{host}/{repository}@{image}")).unwrap();
            registries.session(&reference, Credentials::anonymous())
        };

        let missing = sigstore_bundles(&session("missing"), &image, &[SIGN]).await.unwrap();
        assert!(missing.bundles.is_empty());
        let found = sigstore_bundles(&session("app"), &image, &[SIGN]).await.unwrap();
        assert_eq!(found.bundles.len(), 1, "{:?}", asked.lock().unwrap());
        assert_eq!(found.bundles[0].bytes, bundle);
        assert!(asked.lock().unwrap().contains(&format!("/v2/app/referrers/{image}")));

        // The repository without the API is still remembered as such.
        sigstore_bundles(&session("missing"), &image, &[SIGN]).await.unwrap();
        let asked_missing = asked
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("/v2/missing/referrers/"))
            .count();
        assert_eq!(asked_missing, 1);
    }

    /// A cosign v3 bundle referrer of `image` (typed in its manifest), with its bundle; the
    /// routes serving both in repository `app`.
    fn bundle_referrer(image: &Digest, tag: &str) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
        let bundle =
            format!(r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","n":"{tag}"}}"#).into_bytes();
        let bundle_digest = Digest::of(&bundle);
        let referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": bundle_digest.to_string(), "size": bundle.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.to_string(), "size": 1}
        })
        .to_string()
        .into_bytes();
        let routes = HashMap::from([
            (format!("/v2/app/manifests/{}", Digest::of(&referrer)), referrer.clone()),
            (format!("/v2/app/blobs/{bundle_digest}"), bundle),
        ]);
        (referrer, routes)
    }

    /// An index listing `referrers` as signature bundles, with `artifactType` on each entry or not.
    fn index_of(referrers: &[&Vec<u8>], typed: bool) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = referrers
            .iter()
            .map(|r| {
                let mut d = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(r).to_string(), "size": r.len(),
                                               "annotations": {PREDICATE_TYPE_ANNOTATION: SIGN}});
                if typed {
                    d["artifactType"] = BUNDLE_ARTIFACT_TYPE.to_string().into();
                }
                d
            })
            .collect();
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
            .to_string()
            .into_bytes()
    }

    /// A referrers API that answers 200 with an empty list while the referrers tag holds the
    /// bundle: the tag is read too, once, and the repository still counts as having the API.
    #[tokio::test]
    async fn an_empty_referrers_answer_is_completed_from_the_tag() {
        let image = Digest::of(b"the image manifest");
        let (referrer, mut routes) = bundle_referrer(&image, "tag");
        routes.insert(format!("/v2/app/referrers/{image}"), index_of(&[], true));
        routes.insert(
            format!("/v2/app/manifests/{}", referrers_tag(&image)),
            index_of(&[&referrer], true),
        );
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = sigstore_bundles(&session, &image, &[SIGN]).await.unwrap();
        assert_eq!(
            found.bundles.len(),
            1,
            "{:?} {:?}",
            found.unreadable,
            asked.lock().unwrap()
        );
        assert_eq!(found.bundles[0].manifest, Digest::of(&referrer));
        sigstore_bundles(&session, &image, &[SIGN]).await.unwrap();
        let referrers_asked = asked
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains("/referrers/"))
            .count();
        assert_eq!(referrers_asked, 2, "a 200 answer means the API is there");
    }

    /// A partial list (another image's SBOM only) is completed from the tag; a list holding a
    /// bundle is trusted and the tag not read.
    #[tokio::test]
    async fn the_tag_is_read_only_when_the_api_lists_no_wanted_bundle() {
        let image = Digest::of(b"the image manifest");
        let signed_by_api = Digest::of(b"another image");
        let (in_tag, mut routes) = bundle_referrer(&image, "tag");
        let (in_api, api_routes) = bundle_referrer(&signed_by_api, "api");
        routes.extend(api_routes);
        let sbom = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(b"sbom").to_string(), "size": 4,
                                      "artifactType": "application/spdx+json"});
        routes.insert(
            format!("/v2/app/referrers/{image}"),
            serde_json::json!({"schemaVersion": 2, "manifests": [sbom]})
                .to_string()
                .into_bytes(),
        );
        routes.insert(
            format!("/v2/app/manifests/{}", referrers_tag(&image)),
            index_of(&[&in_tag], true),
        );
        routes.insert(format!("/v2/app/referrers/{signed_by_api}"), index_of(&[&in_api], true));
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let session = |image: &Digest| {
            let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
            registries.session(&reference, Credentials::anonymous())
        };

        let found = sigstore_bundles(&session(&image), &image, &[SIGN]).await.unwrap();
        assert_eq!(found.bundles.len(), 1, "{:?}", found.unreadable);
        assert_eq!(found.bundles[0].manifest, Digest::of(&in_tag));
        let found = sigstore_bundles(&session(&signed_by_api), &signed_by_api, &[SIGN])
            .await
            .unwrap();
        assert_eq!(found.bundles.len(), 1, "{:?}", found.unreadable);
        let tag_of_api = format!("/v2/app/manifests/{}", referrers_tag(&signed_by_api));
        assert!(!asked.lock().unwrap().contains(&tag_of_api));
    }

    /// An API listing the signature bundle but not the attestation the rule also wants: the tag
    /// is read for it.
    #[tokio::test]
    async fn a_wanted_predicate_type_the_api_does_not_list_is_looked_for_in_the_tag() {
        let image = Digest::of(b"the image manifest");
        let (signature, mut routes) = bundle_referrer(&image, "signature");
        let (attestation, attestation_routes) = bundle_referrer(&image, "attestation");
        routes.extend(attestation_routes);
        routes.insert(format!("/v2/app/referrers/{image}"), index_of(&[&signature], true));
        let mut tagged: serde_json::Value = serde_json::from_slice(&index_of(&[&attestation], true)).unwrap();
        tagged["manifests"][0]["annotations"][PREDICATE_TYPE_ANNOTATION] = SPDX.into();
        routes.insert(
            format!("/v2/app/manifests/{}", referrers_tag(&image)),
            tagged.to_string().into_bytes(),
        );
        let host = serve(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = sigstore_bundles(&session, &image, &[SIGN, SPDX]).await.unwrap();
        assert_eq!(found.bundles.len(), 2, "{:?}", found.unreadable);
        assert_eq!(found.bundles[1].manifest, Digest::of(&attestation));
        assert_eq!(found.bundles[1].predicate_type.as_deref(), Some(SPDX));
    }

    /// ghcr.io: the referrers API redirects to a URL that answers 404. The tag is read for this
    /// image, and the repository is not taken for one without the API: another image there,
    /// whose redirect leads to its referrers, is still asked.
    #[tokio::test]
    async fn a_referrers_redirect_ending_in_404_falls_back_to_the_tag_for_that_image_only() {
        let image = Digest::of(b"the image manifest");
        let next = Digest::of(b"the next image");
        let (in_tag, mut routes) = bundle_referrer(&image, "tag");
        let (in_api, api_routes) = bundle_referrer(&next, "api");
        routes.extend(api_routes);
        routes.insert(
            format!("/v2/app/manifests/{}", referrers_tag(&image)),
            index_of(&[&in_tag], true),
        );
        routes.insert(format!("/storage/referrers/{next}"), index_of(&[&in_api], true));
        let redirects = HashMap::from([
            (
                format!("/v2/app/referrers/{image}"),
                format!("/storage/referrers/{image}"),
            ),
            (
                format!("/v2/app/referrers/{next}"),
                format!("/storage/referrers/{next}"),
            ),
        ]);
        let (host, asked) = serve_redirecting(routes, redirects).await;
        let registries = registries_for(&host);
        let session = |image: &Digest| {
            let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
            registries.session(&reference, Credentials::anonymous())
        };

        let found = sigstore_bundles(&session(&image), &image, &[SIGN]).await.unwrap();
        assert_eq!(found.bundles.len(), 1, "{:?}", asked.lock().unwrap());
        assert_eq!(found.bundles[0].manifest, Digest::of(&in_tag));
        let found = sigstore_bundles(&session(&next), &next, &[SIGN]).await.unwrap();
        assert_eq!(found.bundles.len(), 1, "{:?}", asked.lock().unwrap());
        assert_eq!(found.bundles[0].manifest, Digest::of(&in_api));
    }

    /// A referrers index without `artifactType` (older registries, ORAS): each entry's manifest
    /// says whether it is a bundle, and at most [`MAX_UNTYPED_REFERRERS`] manifests are fetched.
    #[tokio::test]
    async fn untyped_index_entries_are_judged_by_their_manifest_within_a_bound() {
        let image = Digest::of(b"the image manifest");
        let (bundle, mut routes) = bundle_referrer(&image, "untyped");
        let sbom = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/spdx+json", "digest": Digest::of(b"s").to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": Digest::of(b"x").to_string(), "size": 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": image.to_string(), "size": 1}
        })
        .to_string()
        .into_bytes();
        routes.insert(format!("/v2/app/manifests/{}", Digest::of(&sbom)), sbom.clone());
        routes.insert(format!("/v2/app/referrers/{image}"), index_of(&[&sbom, &bundle], false));
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = sigstore_bundles(&session, &image, &[SIGN]).await.unwrap();
        assert!(found.unreadable.is_empty(), "{:?}", found.unreadable);
        assert_eq!(found.bundles.len(), 1, "the SBOM's manifest says it is no bundle");
        assert_eq!(found.bundles[0].manifest, Digest::of(&bundle));
        assert!(!asked
            .lock()
            .unwrap()
            .contains(&format!("/v2/app/blobs/{}", Digest::of(b"x"))));

        // Past the bound, entries are reported unread rather than fetched.
        let fillers: Vec<Vec<u8>> = (0..MAX_UNTYPED_REFERRERS + 3)
            .map(|i| format!("filler {i}").into_bytes())
            .collect();
        let listed: Vec<&Vec<u8>> = fillers.iter().collect();
        let other = Digest::of(b"crowded image");
        let routes = HashMap::from([(format!("/v2/app/referrers/{other}"), index_of(&listed, false))]);
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{other}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());
        let found = sigstore_bundles(&session, &other, &[SIGN]).await.unwrap();
        assert!(found.bundles.is_empty());
        assert!(
            found.unreadable.iter().any(|u| u.contains("without an artifactType")),
            "{:?}",
            found.unreadable
        );
        let manifests_asked = asked
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("/v2/app/manifests/sha256:"))
            .count();
        assert_eq!(manifests_asked, MAX_UNTYPED_REFERRERS);
    }

    /// A Notary Project signature manifest of `image` holding `envelope` as a layer of
    /// `media_type`, typed as notation 1.3 types it (config media type only) or by artifactType;
    /// the routes serving it in repository `app`.
    fn notation_referrer(
        image: &Digest,
        envelope: &[u8],
        media_type: &str,
        by_artifact_type: bool,
    ) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
        let mut referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": SIGNATURE_ARTIFACT_TYPE, "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": media_type, "digest": Digest::of(envelope).to_string(), "size": envelope.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": image.to_string(), "size": 1}
        });
        if by_artifact_type {
            referrer["artifactType"] = SIGNATURE_ARTIFACT_TYPE.into();
            referrer["config"]["mediaType"] = EMPTY_CONFIG_TYPE.into();
        }
        let referrer = referrer.to_string().into_bytes();
        let routes = HashMap::from([
            (format!("/v2/app/manifests/{}", Digest::of(&referrer)), referrer.clone()),
            (format!("/v2/app/blobs/{}", Digest::of(envelope)), envelope.to_vec()),
        ]);
        (referrer, routes)
    }

    /// An index of Notation signature manifests, each with the artifactType a registry fills in
    /// from its config, or none.
    fn notation_index(referrers: &[(&Vec<u8>, bool)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = referrers
            .iter()
            .map(|(r, typed)| {
                let mut d = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(r).to_string(), "size": r.len()});
                if *typed {
                    d["artifactType"] = SIGNATURE_ARTIFACT_TYPE.into();
                }
                d
            })
            .collect();
        serde_json::json!({"schemaVersion": 2, "manifests": manifests})
            .to_string()
            .into_bytes()
    }

    /// Notation signatures are found by artifactType or by config media type, in the API's
    /// answer or the tag's index (typed there or not), beside cosign bundles; only when asked for.
    #[tokio::test]
    async fn notation_signatures_are_found_by_artifact_type_or_config_media_type() {
        let image = Digest::of(b"the image manifest");
        let (bundle, mut routes) = bundle_referrer(&image, "cosign");
        let (jws, jws_routes) = notation_referrer(&image, b"a JWS envelope", JWS_MEDIA_TYPE, false);
        let (cose, cose_routes) = notation_referrer(&image, b"a COSE envelope", COSE_MEDIA_TYPE, true);
        let (stray, stray_routes) =
            notation_referrer(&Digest::of(b"another image"), b"another's", JWS_MEDIA_TYPE, true);
        routes.extend(jws_routes);
        routes.extend(cose_routes);
        routes.extend(stray_routes);
        // The API lists the bundle only (not wanted: no predicate type is), so the tag is read:
        // the JWS signature typed from its config, the COSE one untyped, and a stray entry whose
        // manifest names another image.
        routes.insert(format!("/v2/app/referrers/{image}"), index_of(&[&bundle], true));
        let tag = notation_index(&[(&jws, true), (&cose, false), (&stray, true)]);
        routes.insert(format!("/v2/app/manifests/{}", referrers_tag(&image)), tag);
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = signatures(&session, &image, &[], true).await.unwrap();
        assert!(found.unreadable.is_empty(), "{:?}", found.unreadable);
        let envelopes: Vec<(&str, &[u8])> = found
            .notation
            .iter()
            .map(|e| (e.media_type.as_str(), e.bytes.as_slice()))
            .collect();
        assert_eq!(
            envelopes,
            [
                (JWS_MEDIA_TYPE, &b"a JWS envelope"[..]),
                (COSE_MEDIA_TYPE, &b"a COSE envelope"[..])
            ],
            "{:?}",
            asked.lock().unwrap()
        );
        assert_eq!(found.notation[0].manifest, Digest::of(&jws));
        assert!(found.bundles.is_empty(), "no predicate type was wanted");

        // A rule without a Notation authority fetches no envelope.
        let found = signatures(&session, &image, &[SIGN], false).await.unwrap();
        assert!(found.notation.is_empty());
        assert_eq!(found.bundles.len(), 1);
        let envelopes_fetched = asked
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(&Digest::of(b"a JWS envelope").to_string()))
            .count();
        assert_eq!(envelopes_fetched, 1);
    }

    /// A signature manifest with other than one JWS or COSE layer, or one too large, is reported
    /// unreadable, and its blob never fetched.
    #[tokio::test]
    async fn a_notation_manifest_without_one_bounded_envelope_is_unreadable() {
        let image = Digest::of(b"the image manifest");
        let (wrong_type, mut routes) = notation_referrer(&image, b"x", "application/octet-stream", true);
        let huge = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE_ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": JWS_MEDIA_TYPE, "digest": Digest::of(b"huge").to_string(), "size": MAX_ENVELOPE_BYTES + 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": image.to_string(), "size": 1}
        })
        .to_string()
        .into_bytes();
        routes.insert(format!("/v2/app/manifests/{}", Digest::of(&huge)), huge.clone());
        routes.insert(
            format!("/v2/app/referrers/{image}"),
            notation_index(&[(&wrong_type, false), (&huge, true)]),
        );
        let (host, asked) = serve_recording(routes).await;
        let registries = registries_for(&host);
        let reference = Reference::parse(&format!("{host}/app@{image}")).unwrap();
        let session = registries.session(&reference, Credentials::anonymous());

        let found = signatures(&session, &image, &[], true).await.unwrap();
        assert!(found.notation.is_empty());
        assert_eq!(found.unreadable.len(), 2, "{:?}", found.unreadable);
        assert!(
            found.unreadable[0].contains("neither application/jose+json"),
            "{:?}",
            found.unreadable
        );
        assert!(found.unreadable[1].contains("larger than"), "{:?}", found.unreadable);
        assert!(!asked.lock().unwrap().iter().any(|p| p.starts_with("/v2/app/blobs/")));
    }
}
