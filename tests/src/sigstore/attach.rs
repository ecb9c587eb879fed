//! Putting test Sigstore signatures into a real registry, in the layouts cosign writes:
//!
//! - legacy `.sig`: [`attach_keyless_signature`] / [`attach_key_signature`] append one
//!   simple-signing layer to `sha256-<hex>.sig` (through [`crate::cosign`]) with the annotations
//!   `dev.cosignproject.cosign/signature`, `dev.sigstore.cosign/certificate`,
//!   `dev.sigstore.cosign/chain` and `dev.sigstore.cosign/bundle`;
//! - cosign v3: [`attach_v3_bundle`] pushes an OCI 1.1 referrer manifest
//!   (`artifactType application/vnd.dev.sigstore.bundle.v0.3+json`, empty config, one bundle
//!   layer, `subject` = the image) by digest, and — since the rig's registry (distribution 2.8)
//!   has no referrers API — maintains the referrers tag `sha256-<hex>`, an OCI image index of
//!   every referrer's descriptor with its `artifactType` and `annotations`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{bundle::BUNDLE_V03_MEDIA_TYPE, LegacySigned, RekorEntry};
use crate::{
    cosign,
    distribution::{get_manifest, media_type, push_blob, put_manifest, sha256_digest, Auth, RegistryError},
};

/// The manifest annotation saying what a bundle holds: `dsse-envelope` or `message-signature`.
pub const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// The manifest annotation naming a DSSE bundle's predicate type.
pub const BUNDLE_PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The empty JSON object, the blob of the empty descriptor.
pub const EMPTY_BLOB: &[u8] = b"{}";

/// Appends a keyless signature to the `.sig` image of `repo@image_digest`: `signed`'s signature
/// and certificate, the chain when `chain`, and `set`'s SET annotation when given (a SET of
/// another entry makes a grafted-SET case). Returns the new `.sig` manifest's digest.
pub async fn attach_keyless_signature(
    host: &str,
    repo: &str,
    image_digest: &str,
    signed: &LegacySigned,
    set: Option<&RekorEntry>,
    chain: bool,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    assert!(
        signed.certificate_der.is_some(),
        "a keyless signature has a certificate"
    );
    let annotations = signed.annotations(set, chain);
    cosign::attach_signature_with_annotations(host, repo, image_digest, &signed.payload, annotations, auth).await
}

/// Appends a key-based signature to the `.sig` image of `repo@image_digest`, with `set`'s SET
/// annotation when given (no certificate, no chain). Returns the new `.sig` manifest's digest.
pub async fn attach_key_signature(
    host: &str,
    repo: &str,
    image_digest: &str,
    signed: &LegacySigned,
    set: Option<&RekorEntry>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    assert!(
        signed.certificate_der.is_none(),
        "a key-based signature has no certificate"
    );
    let annotations = signed.annotations(set, false);
    cosign::attach_signature_with_annotations(host, repo, image_digest, &signed.payload, annotations, auth).await
}

/// `sha256-<hex>`: the OCI referrers tag of `image_digest` (`sha256:<hex>`).
pub fn referrers_tag(image_digest: &str) -> String {
    image_digest.replacen(':', "-", 1)
}

/// Attaches `bundle_json` (a bundle v0.3) to `repo@image_digest` as a cosign v3 referrer:
/// pushes the empty config blob and the bundle blob, then the manifest
///
/// ```json
/// {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
///  "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
///  "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136f…", "size": 2},
///  "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest", "size"}],
///  "subject": {"mediaType", "digest", "size"},
///  "annotations": {"dev.sigstore.bundle.content": "dsse-envelope" | "message-signature",
///                  "dev.sigstore.bundle.predicateType": <predicate_type>}}
/// ```
///
/// by digest, and adds its descriptor to the referrers tag's index (created if missing).
/// `predicate_type` is left out of the annotations when `None`. Returns the referrer manifest's
/// digest.
pub async fn attach_v3_bundle(
    host: &str,
    repo: &str,
    image_digest: &str,
    bundle_json: &str,
    predicate_type: Option<&str>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let (image_manifest, image_media_type) = get_manifest(host, repo, image_digest, auth).await?;
    let subject = Subject {
        digest: image_digest,
        media_type: &image_media_type,
        size: image_manifest.len(),
    };
    attach_v3_bundle_to(host, repo, subject, bundle_json, predicate_type, auth).await
}

/// The image a referrer refers to, as its manifest's descriptor says.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub digest: &'a str,
    pub media_type: &'a str,
    pub size: usize,
}

/// As [`attach_v3_bundle`], into `host/repo`, which need not hold the image `subject` (cosign
/// v3 with `COSIGN_REPOSITORY`).
pub async fn attach_v3_bundle_to(
    host: &str,
    repo: &str,
    subject: Subject<'_>,
    bundle_json: &str,
    predicate_type: Option<&str>,
    auth: Auth<'_>,
) -> Result<String, RegistryError> {
    let image_digest = subject.digest;
    let empty_digest = push_blob(host, repo, EMPTY_BLOB, auth).await?;
    let bundle_digest = push_blob(host, repo, bundle_json.as_bytes(), auth).await?;

    let is_dsse = serde_json::from_str::<Value>(bundle_json)
        .map(|b| b.get("dsseEnvelope").is_some())
        .unwrap_or(false);
    let mut annotations = BTreeMap::from([(
        BUNDLE_CONTENT_ANNOTATION.to_owned(),
        if is_dsse { "dsse-envelope" } else { "message-signature" }.to_owned(),
    )]);
    if let Some(predicate_type) = predicate_type {
        annotations.insert(BUNDLE_PREDICATE_TYPE_ANNOTATION.to_owned(), predicate_type.to_owned());
    }

    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": BUNDLE_V03_MEDIA_TYPE,
        "config": { "mediaType": media_type::OCI_EMPTY, "digest": empty_digest, "size": EMPTY_BLOB.len() },
        "layers": [{ "mediaType": BUNDLE_V03_MEDIA_TYPE, "digest": bundle_digest, "size": bundle_json.len() }],
        "subject": { "mediaType": subject.media_type, "digest": image_digest, "size": subject.size },
        "annotations": annotations,
    }))
    .expect("serialize a referrer manifest");
    let digest = sha256_digest(&manifest);
    put_manifest(host, repo, &digest, &manifest, media_type::OCI_MANIFEST, auth).await?;

    let tag = referrers_tag(image_digest);
    let mut manifests = match read_referrers_tag(host, repo, image_digest, auth).await? {
        Some(index) => index["manifests"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    if !manifests.iter().any(|m| m["digest"] == digest.as_str()) {
        manifests.push(json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "artifactType": BUNDLE_V03_MEDIA_TYPE,
            "annotations": annotations,
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("serialize a referrers index");
    put_manifest(host, repo, &tag, &index, media_type::OCI_INDEX, auth).await?;
    Ok(digest)
}

/// The referrers tag's index of `repo@image_digest`, or `None` if the tag does not exist.
pub async fn read_referrers_tag(
    host: &str,
    repo: &str,
    image_digest: &str,
    auth: Auth<'_>,
) -> Result<Option<Value>, RegistryError> {
    let tag = referrers_tag(image_digest);
    match get_manifest(host, repo, &tag, auth).await {
        Ok((bytes, _)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Protocol {
                url: format!("{host}/{repo}:{tag}"),
                message: format!("not an image index: {e}"),
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
