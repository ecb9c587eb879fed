//! Discovery of Sigstore bundles attached to an image as OCI referrers, the way cosign v3 stores
//! signatures and attestations: `GET /v2/<repo>/referrers/<digest>`, and, where the registry
//! has no referrers API (404), the referrers tag `<repo>:sha256-<hex>`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde::Deserialize;

use super::{read_bounded, Endpoint, Need, Registries, RegistryError, Session};
use crate::reference::Digest;
pub use pullgate_verify::attached::{AttachedBundle, Referrers};

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
    let is_wanted = |annotations: &BTreeMap<String, String>| {
        annotations
            .get(PREDICATE_TYPE_ANNOTATION)
            .is_none_or(|t| wanted.contains(&t.as_str()))
    };
    let mut found = Referrers::default();
    let Some(index) = referrers_index(session, image).await? else {
        return Ok(found);
    };
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|t| t.starts_with(BUNDLE_ARTIFACT_TYPE) || t == EMPTY_CONFIG_TYPE)
                && is_wanted(&d.annotations)
        })
        .collect();
    if candidates.len() > MAX_BUNDLES {
        let skipped = candidates.len() - MAX_BUNDLES;
        found.unreadable.push(format!(
            "{skipped} bundle referrers beyond the first {MAX_BUNDLES} were not read"
        ));
    }
    let mut budget = MAX_BUNDLES_TOTAL_BYTES;
    for descriptor in candidates.into_iter().take(MAX_BUNDLES) {
        let Some(digest) = Digest::parse(&descriptor.digest) else {
            found.unreadable.push(format!(
                "referrer digest {:?} is not a sha256 digest",
                descriptor.digest
            ));
            continue;
        };
        match fetch_bundle(session, image, &digest, &is_wanted, budget).await {
            Ok(Some(bundle)) => {
                budget = budget.saturating_sub(bundle.bytes.len() as u64);
                let predicate_type = bundle
                    .predicate_type
                    .or_else(|| descriptor.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned());
                found.bundles.push(AttachedBundle {
                    predicate_type,
                    ..bundle
                });
            }
            Ok(None) => {}
            Err(e) => found.unreadable.push(e.to_string()),
        }
    }
    Ok(found)
}

/// The referrers index of `image`: from the first host that has one, through its referrers
/// API or, where it has none, its referrers tag. A host that says it has neither is passed over
/// like one that cannot be reached; "none" is the answer when one said so and none had it.
async fn referrers_index(session: &Session<'_>, image: &Digest) -> Result<Option<Index>, RegistryError> {
    let mut failures = Vec::new();
    let mut said_absent = false;
    for endpoint in session.endpoints(Need::Referrers) {
        match index_from(session, endpoint, image).await {
            Ok(Some(bytes)) => {
                return serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RegistryError::Invalid(format!("referrers of {image}: not an image index: {e}")))
            }
            Ok(None) => said_absent = true,
            Err(e @ RegistryError::Unavailable(_)) => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    session
        .none_found(Need::Referrers, said_absent, failures)
        .map(|()| None)
}

/// One host's referrers index of `image`: its referrers API's answer, or its referrers tag's
/// index when it has no API. A repository found without the API is not asked again for
/// [`NO_API_REMEMBERED`].
async fn index_from(
    session: &Session<'_>,
    endpoint: &Endpoint,
    image: &Digest,
) -> Result<Option<Vec<u8>>, RegistryError> {
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
    if !session.registries.has_no_referrers_api(&key) {
        let tail = format!("referrers/{image}");
        let accept = Some("application/vnd.oci.image.index.v1+json");
        match session.get_from(endpoint, &tail, accept, &absent).await? {
            Some((response, url)) => return read_bounded(response, MAX_INDEX_BYTES, &url).await.map(Some),
            None => session.registries.found_no_referrers_api(key),
        }
    }
    let manifest = session.manifest_from(endpoint, &referrers_tag(image)).await?;
    Ok(manifest.map(|m| m.bytes))
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

/// Fetches one referrer manifest and its bundle layer, of at most `budget` bytes. A manifest
/// whose subject is another image (a stale or forged index entry), or whose predicate type is
/// not wanted, is skipped.
async fn fetch_bundle(
    session: &Session<'_>,
    image: &Digest,
    manifest_digest: &Digest,
    is_wanted: impl Fn(&BTreeMap<String, String>) -> bool,
    budget: u64,
) -> Result<Option<AttachedBundle>, RegistryError> {
    let Some(manifest) = session.manifest(manifest_digest.as_str()).await? else {
        return Ok(None);
    };
    let parsed: ReferrerManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| RegistryError::Invalid(format!("referrer {manifest_digest}: {e}")))?;
    if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(image.as_str()) || !is_wanted(&parsed.annotations) {
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
    Ok(Some(AttachedBundle {
        manifest: manifest_digest.clone(),
        predicate_type: parsed.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned(),
        bytes,
    }))
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
        assert_eq!(
            paths,
            [
                format!("/v2/app/referrers/{first}"),
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
            paths[3..],
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
}
