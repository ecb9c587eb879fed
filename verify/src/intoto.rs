//! cosign's legacy attestations: one DSSE envelope per layer of the `.att` tag, with the signing
//! material in the layer's annotations as for `.sig`.
//!
//! `cosign attest` logs an attestation to Rekor as an `intoto` v0.0.1 entry, a kind
//! `sigstore-verify` does not read. This module checks those entries itself:
//!
//! 1. the SET: the log's signature over `{body, integratedTime, logID, logIndex}` (canonical
//!    JSON), with the trusted root's key for that log ID, valid at the integrated time;
//! 2. that the entry is about this envelope and this signer: `content.hash` is the sha256 of
//!    the layer as stored, `payloadHash` (when present) of the statement, and `publicKey` the
//!    certificate or key that signs;
//! 3. for a certificate, its chain, SCT and validity at the integrated time
//!    ([`super::certificate`]), and the rule's identity;
//! 4. the envelope's signature over PAE.
//!
//! Envelopes with another kind of entry (dsse, intoto v0.0.2), or none, are restated as a
//! bundle and checked by `sigstore-verify`, as legacy signatures are.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::{Deserialize, Serialize};
use sigstore_crypto::{CertificateInfo, VerificationKey};
use sigstore_types::{Artifact, DerCertificate, DerPublicKey, DsseEnvelope, Sha256Hash};

use super::{
    certificate::verify_signing_certificate,
    first_accepting,
    legacy::{self, RekorBundle, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, REKOR_BUNDLE_ANNOTATION},
    sigstore::match_identity,
    verify_bundle, Evidence, Rejection, TrustMaterial,
};
use crate::{Authority, AuthorityKind, Tlog};

/// One layer of the `.att` tag, read: the bytes as stored, and the envelope they hold.
pub struct AttestationLayer<'a> {
    pub bytes: &'a [u8],
    pub annotations: &'a BTreeMap<String, String>,
    pub envelope: DsseEnvelope,
}

/// Authenticates the envelope of `layer` for one of `authorities`. `subject` is the digest the
/// statement names, which a restated bundle is checked against (an intoto v0.0.1 entry binds
/// the envelope itself, so that path does not need it).
pub fn verify_attestation_layer(
    layer: &AttestationLayer<'_>,
    subject: Sha256Hash,
    authorities: &[Authority],
    trust: Option<&TrustMaterial>,
) -> Result<Evidence, Rejection> {
    let keyless = layer.annotations.contains_key(CERTIFICATE_ANNOTATION);
    let entry = layer
        .annotations
        .get(REKOR_BUNDLE_ANNOTATION)
        .map(|text| RekorBundle::parse(text))
        .transpose()
        .map_err(Rejection::Invalid)?;
    let intoto_v001 = entry.as_ref().is_some_and(|e| e.kind_version() == ("intoto", "0.0.1"));
    let verdict = match (trust, entry) {
        // cosign attest's own entries, checked here.
        (Some(trust), Some(entry)) if intoto_v001 => LoggedAt::verify(trust, &entry, layer).and_then(|logged| {
            first_accepting(authorities, keyless, |authority| {
                check_logged(trust, &logged, layer, authority)
            })
        }),
        // Other kinds of entry, or a certificate: restated for sigstore-verify.
        (Some(trust), Some(_)) => restated(trust, layer, subject, keyless, authorities),
        (Some(_), None) if keyless => Err(Rejection::Invalid(
            "a keyless envelope without a transparency-log entry: no verified time to check its certificate at".into(),
        )),
        (None, _) if keyless => Err(Rejection::NoTrustedRoot),
        // A key signature, with no log entry or no trust material to check one.
        (Some(_), None) | (None, _) => return key_only(layer, authorities, |_| true),
    };
    // An authority that ignores the log accepts its key's signature whatever the entry says.
    verdict.or_else(|rejection| {
        key_only(layer, authorities, |authority| authority.tlog == Tlog::Ignore).map_err(|_| rejection)
    })
}

fn restated(
    trust: &TrustMaterial,
    layer: &AttestationLayer<'_>,
    subject: Sha256Hash,
    keyless: bool,
    authorities: &[Authority],
) -> Result<Evidence, Rejection> {
    let bundle = legacy::dsse_to_bundle(layer.annotations, &layer.envelope).map_err(Rejection::Invalid)?;
    first_accepting(authorities, keyless, |authority| {
        verify_bundle(trust, &bundle, Artifact::from_digest(subject), authority)
    })
}

/// The envelope checked with the key of each key authority `which` selects, and nothing else:
/// no log entry, so no signing time; an authority requiring the log refuses it.
fn key_only(
    layer: &AttestationLayer<'_>,
    authorities: &[Authority],
    which: impl Fn(&Authority) -> bool,
) -> Result<Evidence, Rejection> {
    first_accepting(authorities.iter().filter(|a| which(a)), false, |authority| {
        let AuthorityKind::Key(key) = &authority.kind else {
            return Err(Rejection::KeyMismatch);
        };
        verify_envelope(&layer.envelope, key)?;
        if authority.tlog == Tlog::Required {
            return Err(Rejection::TlogRequired {
                authority: authority.name.clone(),
            });
        }
        Ok(Evidence::key_only(authority))
    })
}

/// An `intoto` v0.0.1 entry whose SET verified and which is about this layer: the signer it
/// names and when the log integrated it.
struct LoggedAt {
    /// The certificate or public key the entry names, as DER.
    signer: Vec<u8>,
    integrated_time: i64,
    log_index: u64,
}

impl LoggedAt {
    fn verify(trust: &TrustMaterial, entry: &RekorBundle, layer: &AttestationLayer<'_>) -> Result<Self, Rejection> {
        let invalid = |why: String| Rejection::Invalid(format!("intoto log entry: {why}"));
        verify_set(trust, entry).map_err(invalid)?;
        let body: IntotoBody =
            serde_json::from_slice(&entry.body().map_err(invalid)?).map_err(|e| invalid(format!("body: {e}")))?;
        let content = &body.spec.content;
        let stored = hex::encode(sha256(layer.bytes));
        if content.hash.algorithm != "sha256" || content.hash.value != stored {
            return Err(invalid("logs another envelope (content.hash differs)".into()));
        }
        if let Some(payload_hash) = &content.payload_hash {
            let statement = hex::encode(sha256(layer.envelope.payload.as_bytes()));
            if payload_hash.algorithm != "sha256" || payload_hash.value != statement {
                return Err(invalid("logs another statement (payloadHash differs)".into()));
            }
        }
        let pem = BASE64
            .decode(&body.spec.public_key)
            .map_err(|e| invalid(format!("publicKey: {e}")))?;
        let pem = String::from_utf8(pem).map_err(|e| invalid(format!("publicKey: {e}")))?;
        let signer = DerCertificate::from_pem(&pem)
            .map(DerCertificate::into_bytes)
            .or_else(|_| DerPublicKey::from_pem(&pem).map(DerPublicKey::into_bytes))
            .map_err(|e| invalid(format!("publicKey: {e}")))?;
        Ok(Self {
            signer,
            integrated_time: entry.integrated_time(),
            log_index: entry.log_index(),
        })
    }
}

/// The envelope of a logged layer, for one authority.
fn check_logged(
    trust: &TrustMaterial,
    logged: &LoggedAt,
    layer: &AttestationLayer<'_>,
    authority: &Authority,
) -> Result<Evidence, Rejection> {
    let (subject, issuer, certified_from) = match &authority.kind {
        AuthorityKind::Key(key) => {
            if logged.signer != key.der().as_bytes() {
                return Err(Rejection::KeyMismatch);
            }
            verify_envelope(&layer.envelope, key)?;
            (None, None, None)
        }
        AuthorityKind::Keyless(keyless) => {
            let info = logged_certificate(trust, logged, layer)?;
            // logged_certificate checked that the entry's signer is the layer's leaf.
            let subject = match_identity(keyless, &DerCertificate::from_bytes(&logged.signer), &info)?;
            let key = VerificationKey::from_spki(&info.public_key)
                .map_err(|e| Rejection::Invalid(format!("certificate key: {e}")))?;
            verify_envelope(&layer.envelope, &key)?;
            (Some(subject), info.issuer, Some(info.not_before.as_second()))
        }
        // Never offered one (`roots::each_root` leaves them out): no Sigstore signature counts.
        AuthorityKind::Notation(_) => return Err(Rejection::KeyMismatch),
    };
    Ok(Evidence {
        authority: authority.name.clone(),
        kind: match authority.kind {
            AuthorityKind::Key(_) => "key",
            AuthorityKind::Keyless(_) => "keyless",
            AuthorityKind::Notation(_) => "notation",
        },
        subject,
        issuer,
        tlog_index: Some(logged.log_index),
        time_source: "tlog",
        signed_at: Some(logged.integrated_time),
        certified_from,
        scheme: None,
        valid_until: None,
    })
}

/// The layer's certificate, checked at the time the log integrated it, and the one the log
/// entry names.
fn logged_certificate(
    trust: &TrustMaterial,
    logged: &LoggedAt,
    layer: &AttestationLayer<'_>,
) -> Result<CertificateInfo, Rejection> {
    let mut certificates = legacy::pem_certificates(
        layer.annotations.get(CERTIFICATE_ANNOTATION).map_or("", String::as_str),
        CERTIFICATE_ANNOTATION,
    )
    .map_err(Rejection::Invalid)?;
    certificates.truncate(1);
    let leaf = DerCertificate::new(certificates.remove(0));
    if logged.signer != leaf.as_bytes() {
        return Err(Rejection::Invalid(
            "intoto log entry names another certificate than the layer's".into(),
        ));
    }
    let chain = match layer.annotations.get(CHAIN_ANNOTATION) {
        Some(pem) => legacy::pem_certificates(pem, CHAIN_ANNOTATION).map_err(Rejection::Invalid)?,
        None => Vec::new(),
    };
    let chain: Vec<DerCertificate> = chain.into_iter().map(DerCertificate::new).collect();
    let at = jiff::Timestamp::from_second(logged.integrated_time)
        .map_err(|e| Rejection::Invalid(format!("integrated time: {e}")))?;
    verify_signing_certificate(trust, &leaf, &chain, at).map_err(Rejection::Invalid)
}

/// The envelope's one signature over PAE, with `key`.
fn verify_envelope(envelope: &DsseEnvelope, key: &VerificationKey) -> Result<(), Rejection> {
    key.verify(envelope.pae(), &envelope.signature.sig)
        .map_err(|_| Rejection::KeyMismatch)
}

/// Checks the SET of `entry` with the trusted root's key for its log, valid at its integrated
/// time, which may not be in the future.
fn verify_set(trust: &TrustMaterial, entry: &RekorBundle) -> Result<(), String> {
    let log_id = entry.log_id()?;
    let integrated = entry.integrated_time();
    let at = jiff::Timestamp::from_second(integrated).map_err(|e| format!("integrated time: {e}"))?;
    if at > jiff::Timestamp::now() {
        return Err(format!("integrated time {at} is in the future"));
    }
    let log = trust
        .root()
        .tlogs
        .iter()
        .find(|log| {
            log.log_id.key_id.as_bytes() == log_id.as_slice()
                && log.public_key.valid_for.as_ref().is_none_or(|valid| valid.contains(at))
        })
        .ok_or_else(|| format!("no log of the trusted root has ID {} at {at}", hex::encode(&log_id)))?;
    let key = VerificationKey::from_spki(&log.public_key.raw_bytes).map_err(|e| format!("log key: {e}"))?;
    // The SET payload is Rekor's canonical JSON: keys sorted, no spaces. Base64 and hex need no
    // escaping, so serializing the fields in this order is that form.
    #[derive(Serialize)]
    struct SetPayload<'a> {
        body: &'a str,
        #[serde(rename = "integratedTime")]
        integrated_time: i64,
        #[serde(rename = "logID")]
        log_id: String,
        #[serde(rename = "logIndex")]
        log_index: u64,
    }
    let payload = serde_json::to_vec(&SetPayload {
        body: entry.body_base64(),
        integrated_time: integrated,
        log_id: hex::encode(&log_id),
        log_index: entry.log_index(),
    })
    .map_err(|e| e.to_string())?;
    let signature = entry.signed_entry_timestamp()?;
    key.verify(&payload, &signature)
        .map_err(|_| "the SET does not verify with the log's key".to_string())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// The fields of an `intoto` v0.0.1 entry body that bind it (Rekor keeps the hashes, not the
/// envelope).
#[derive(Deserialize)]
struct IntotoBody {
    spec: IntotoSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntotoSpec {
    content: IntotoContent,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntotoContent {
    hash: Hash,
    #[serde(default)]
    payload_hash: Option<Hash>,
}

#[derive(Deserialize)]
struct Hash {
    algorithm: String,
    value: String,
}
