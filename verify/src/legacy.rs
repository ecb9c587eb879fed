//! cosign's legacy `.sig` and `.att` annotations, restated as a Sigstore bundle v0.1 so the same
//! verifier checks certificate chains, SCTs and Rekor SETs for old and new signatures alike.
//!
//! The layer carries `dev.sigstore.cosign/certificate` (PEM leaf) for keyless signatures and
//! `dev.sigstore.cosign/bundle` for the Rekor entry:
//! `{"SignedEntryTimestamp": b64, "Payload": {"body": b64, "integratedTime": n, "logIndex": n, "logID": hex}}`.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::Deserialize;
use serde_json::json;
use sigstore_types::{Bundle, DsseEnvelope, SignatureBytes};

/// PEM leaf certificate of a keyless signature.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// PEM intermediates (and root) the leaf was issued under.
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The Rekor entry and its SET.
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// The `dev.sigstore.cosign/bundle` annotation: a Rekor entry and its SET, as cosign stores them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
    #[serde(skip)]
    kind: String,
    #[serde(skip)]
    api_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: u64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryKind {
    kind: String,
    api_version: String,
}

impl RekorBundle {
    /// Parses the annotation and reads the entry's kind and version from its body.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rekor: RekorBundle =
            serde_json::from_str(text).map_err(|e| format!("{REKOR_BUNDLE_ANNOTATION}: {e}"))?;
        let kind: EntryKind =
            serde_json::from_slice(&rekor.body()?).map_err(|e| format!("{REKOR_BUNDLE_ANNOTATION}: body: {e}"))?;
        (rekor.kind, rekor.api_version) = (kind.kind, kind.api_version);
        Ok(rekor)
    }

    /// `(kind, apiVersion)` of the entry, e.g. `("intoto", "0.0.1")`.
    pub fn kind_version(&self) -> (&str, &str) {
        (&self.kind, &self.api_version)
    }

    /// The entry body as the log canonicalized it.
    pub fn body(&self) -> Result<Vec<u8>, String> {
        BASE64
            .decode(&self.payload.body)
            .map_err(|e| format!("{REKOR_BUNDLE_ANNOTATION}: body: {e}"))
    }

    pub fn body_base64(&self) -> &str {
        &self.payload.body
    }

    pub fn integrated_time(&self) -> i64 {
        self.payload.integrated_time
    }

    pub fn log_index(&self) -> u64 {
        self.payload.log_index
    }

    /// The log's ID: the sha256 of its public key.
    pub fn log_id(&self) -> Result<Vec<u8>, String> {
        hex::decode(&self.payload.log_id).map_err(|e| format!("{REKOR_BUNDLE_ANNOTATION}: logID: {e}"))
    }

    pub fn signed_entry_timestamp(&self) -> Result<SignatureBytes, String> {
        SignatureBytes::from_base64(&self.signed_entry_timestamp)
            .map_err(|e| format!("{REKOR_BUNDLE_ANNOTATION}: SignedEntryTimestamp: {e}"))
    }
}

/// Whether the layer says anything a bundle must check: a certificate or a log entry.
pub fn has_sigstore_material(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(CERTIFICATE_ANNOTATION) || annotations.contains_key(REKOR_BUNDLE_ANNOTATION)
}

/// Builds the bundle for a signature `signature` (raw bytes) over the layer's payload, which
/// the caller verifies it against. Without a certificate annotation the bundle names a public
/// key, for key authorities.
pub fn to_bundle(annotations: &BTreeMap<String, String>, signature: &[u8]) -> Result<Bundle, String> {
    // No messageDigest: sigstore-verify would take its algorithm as the signature's hash
    // (SHA-256 for a P-384 key). Without one it uses the key's own scheme, as cosign signs
    // and as the key-only path verifies (ECDSA P-384 with SHA-384).
    let content = json!({"signature": BASE64.encode(signature)});
    restate(annotations, "messageSignature", content)
}

/// Builds the bundle for an attestation layer's DSSE envelope (`cosign attest`).
pub fn dsse_to_bundle(annotations: &BTreeMap<String, String>, envelope: &DsseEnvelope) -> Result<Bundle, String> {
    let content = serde_json::to_value(envelope).map_err(|e| e.to_string())?;
    restate(annotations, "dsseEnvelope", content)
}

/// A bundle v0.1 with `content` under `field`, and the certificate, chain and log entry of the
/// layer's annotations.
fn restate(annotations: &BTreeMap<String, String>, field: &str, content: serde_json::Value) -> Result<Bundle, String> {
    let mut material = match annotations.get(CERTIFICATE_ANNOTATION) {
        Some(pem) => {
            // The leaf, then the intermediates cosign stored beside it: they may complete a path
            // to a CA of the trusted root, never replace one.
            let mut certificates = pem_certificates(pem, CERTIFICATE_ANNOTATION)?;
            certificates.truncate(1);
            if let Some(chain) = annotations.get(CHAIN_ANNOTATION) {
                certificates.extend(pem_certificates(chain, CHAIN_ANNOTATION)?);
            }
            let certificates: Vec<_> = certificates
                .iter()
                .map(|der| json!({"rawBytes": BASE64.encode(der)}))
                .collect();
            json!({"x509CertificateChain": {"certificates": certificates}})
        }
        None => json!({"publicKey": {"hint": ""}}),
    };
    let tlog_entries = match annotations.get(REKOR_BUNDLE_ANNOTATION) {
        Some(text) => vec![tlog_entry(text)?],
        None => Vec::new(),
    };
    material["tlogEntries"] = json!(tlog_entries);
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": material,
        field: content,
    });
    Bundle::from_json(&bundle.to_string()).map_err(|e| format!("cannot restate as a bundle: {e}"))
}

fn tlog_entry(text: &str) -> Result<serde_json::Value, String> {
    let rekor = RekorBundle::parse(text)?;
    let (kind, version) = rekor.kind_version();
    Ok(json!({
        "logIndex": rekor.log_index().to_string(),
        "logId": {"keyId": BASE64.encode(rekor.log_id()?)},
        "kindVersion": {"kind": kind, "version": version},
        "integratedTime": rekor.integrated_time().to_string(),
        "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
        "canonicalizedBody": rekor.payload.body,
    }))
}

/// Every `CERTIFICATE` block of `pem`, as DER; at least one.
pub fn pem_certificates(pem: &str, annotation: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut certificates = Vec::new();
    let mut lines = pem.lines().map(str::trim);
    while lines.any(|l| l.starts_with("-----BEGIN CERTIFICATE-----")) {
        let body: String = lines.by_ref().take_while(|l| !l.starts_with("-----END")).collect();
        certificates.push(BASE64.decode(body).map_err(|e| format!("{annotation}: {e}"))?);
        if certificates.len() > MAX_CHAIN {
            return Err(format!("{annotation}: more than {MAX_CHAIN} certificates"));
        }
    }
    if certificates.is_empty() {
        return Err(format!("{annotation}: no PEM certificate"));
    }
    Ok(certificates)
}

/// A chain longer than this is refused (Fulcio's is two).
const MAX_CHAIN: usize = 8;
