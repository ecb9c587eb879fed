//! Signatures as cosign makes them, and the Sigstore bundles that carry them.
//!
//! - [`LegacySigned`]: a payload (a simple-signing payload for an image) signed with a Fulcio
//!   leaf or a key, with what cosign puts on the `.sig` layer ([`LegacySigned::annotations`]) and
//!   the bundle v0.1 (`messageSignature`, `x509CertificateChain` or `publicKey`, a hashedrekord
//!   tlog entry with its SET) that the same material converts to.
//! - [`make_v3_dsse_bundle`] / [`make_v3_signature_bundle`]: a cosign v3 bundle v0.3 — a DSSE
//!   envelope over an in-toto Statement v1, `certificate` (or `publicKey`), and a dsse 0.0.1 tlog
//!   entry with its SET and inclusion proof + checkpoint (v0.3 requires the proof).
//! - [`make_v3_timestamped_dsse_bundle`]: the same from an instance without Rekor (GitHub's, for
//!   private repositories): no tlog entry, an RFC 3161 timestamp over the signature instead.
//! - [`make_legacy_attestation`]: a `cosign attest` `.att` layer — a DSSE envelope and its
//!   annotations, logged as an intoto 0.0.1 entry.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{b64, pem, rekor_v2::RekorV2, sha256, Leaf, Rekor, RekorEntry, TestSigstore, Tsa};
use crate::{
    cosign::{self, BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, SIGNATURE_ANNOTATION},
    signer::Signer,
};

pub const BUNDLE_V01_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle+json;version=0.1";
pub const BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of a cosign v3 image signature.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Who signs a bundle: a Fulcio leaf (keyless) or a key.
#[derive(Debug, Clone, Copy)]
pub enum BundleSigner<'a> {
    Leaf(&'a Leaf),
    Key(&'a Signer),
}

// === impl BundleSigner ===

impl BundleSigner<'_> {
    /// An ASN.1 DER ECDSA signature over `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self {
            BundleSigner::Leaf(leaf) => leaf.sign(data),
            BundleSigner::Key(signer) => {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signer.sign(data))
                    .expect("the signer's base64")
            }
        }
    }

    /// What Rekor logs as the verifier: the leaf's certificate or the public key, PEM.
    pub fn verifier_pem(&self) -> String {
        match self {
            BundleSigner::Leaf(leaf) => leaf.cert_pem(),
            BundleSigner::Key(signer) => signer.public_key_pem(),
        }
    }

    /// `verificationMaterial` without the tlog entries: `certificate` (v0.3) or `publicKey`.
    /// What a Rekor v2 entry names as the verifier: `("x509Certificate", leaf DER)` or
    /// `("publicKey", SPKI DER)`.
    pub fn verifier_der(&self) -> (&'static str, Vec<u8>) {
        match self {
            BundleSigner::Leaf(leaf) => ("x509Certificate", leaf.cert_der.clone()),
            BundleSigner::Key(signer) => ("publicKey", signer.public_key_der().as_bytes().to_vec()),
        }
    }

    fn material_v03(&self) -> Value {
        match self {
            BundleSigner::Leaf(leaf) => json!({ "certificate": { "rawBytes": b64(&leaf.cert_der) } }),
            BundleSigner::Key(signer) => key_hint(signer.public_key_der().as_bytes()),
        }
    }
}

fn key_hint(spki: &[u8]) -> Value {
    json!({ "publicKey": { "hint": b64(&sha256(spki)) } })
}

/// A payload signed the legacy (`.sig`) way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySigned {
    pub payload: Vec<u8>,
    /// ASN.1 DER ECDSA signature over `payload`.
    pub signature: Vec<u8>,
    /// The signing certificate (keyless), DER; `None` when a key signed.
    pub certificate_der: Option<Vec<u8>>,
    /// The certificates above the leaf (intermediates, then the root), DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The signer's public key, DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
}

// === impl LegacySigned ===

impl LegacySigned {
    /// `payload` signed with `leaf`'s key.
    pub fn keyless(leaf: &Leaf, payload: &[u8]) -> LegacySigned {
        LegacySigned {
            payload: payload.to_vec(),
            signature: leaf.sign(payload),
            certificate_der: Some(leaf.cert_der.clone()),
            chain_der: leaf.chain_der.clone(),
            public_key_der: leaf.public_key_der(),
        }
    }

    /// `payload` signed with `signer`'s key.
    pub fn with_key(signer: &Signer, payload: &[u8]) -> LegacySigned {
        LegacySigned {
            payload: payload.to_vec(),
            signature: BundleSigner::Key(signer).sign(payload),
            certificate_der: None,
            chain_der: Vec::new(),
            public_key_der: signer.public_key_der().as_bytes().to_vec(),
        }
    }

    /// The signature, base64: the `dev.cosignproject.cosign/signature` annotation.
    pub fn signature_b64(&self) -> String {
        b64(&self.signature)
    }

    /// The certificate PEM, if keyless.
    pub fn certificate_pem(&self) -> Option<String> {
        self.certificate_der.as_deref().map(|der| pem("CERTIFICATE", der))
    }

    /// The chain PEM (intermediates, then the root).
    pub fn chain_pem(&self) -> String {
        self.chain_der.iter().map(|der| pem("CERTIFICATE", der)).collect()
    }

    /// What Rekor logs as the verifier: the certificate PEM, or the public key PEM.
    pub fn verifier_pem(&self) -> String {
        self.certificate_pem()
            .unwrap_or_else(|| pem("PUBLIC KEY", &self.public_key_der))
    }

    /// Logs the signature in `rekor` as a hashedrekord 0.0.1 entry integrated at `integrated_time`.
    pub fn log(&self, rekor: &Rekor, integrated_time: i64) -> RekorEntry {
        rekor.log_hashedrekord(&self.payload, &self.signature, &self.verifier_pem(), integrated_time)
    }

    /// The layer annotations cosign writes: the signature; for a keyless signature the
    /// certificate and (when `chain`) the chain; and the SET bundle of `set` when given.
    pub fn annotations(&self, set: Option<&RekorEntry>, chain: bool) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), self.signature_b64())]);
        if let Some(certificate) = self.certificate_pem() {
            annotations.insert(CERTIFICATE_ANNOTATION.to_owned(), certificate);
            if chain {
                annotations.insert(CHAIN_ANNOTATION.to_owned(), self.chain_pem());
            }
        }
        if let Some(entry) = set {
            annotations.insert(BUNDLE_ANNOTATION.to_owned(), entry.cosign_bundle_annotation());
        }
        annotations
    }

    /// The bundle v0.1 the legacy material converts to: `messageSignature` (sha256 digest of the
    /// payload + signature), `x509CertificateChain` (the leaf and its intermediates) or
    /// `publicKey` (hint), and `entry` as a tlog entry with its SET (no inclusion proof, as
    /// the legacy annotation has none).
    pub fn to_v01_bundle(&self, entry: &RekorEntry) -> String {
        let mut material = match &self.certificate_der {
            Some(leaf) => {
                // The leaf and its intermediates; the self-signed root is the trust anchor.
                let intermediates = &self.chain_der[..self.chain_der.len().saturating_sub(1)];
                let certificates: Vec<Value> = std::iter::once(leaf)
                    .chain(intermediates)
                    .map(|der| json!({ "rawBytes": b64(der) }))
                    .collect();
                json!({ "x509CertificateChain": { "certificates": certificates } })
            }
            None => key_hint(&self.public_key_der),
        };
        material["tlogEntries"] = json!([entry.tlog_entry_without_proof()]);
        self.message_signature_bundle(BUNDLE_V01_MEDIA_TYPE, material)
    }

    /// A bundle v0.3 of the same material: `certificate` (or `publicKey`), `entry` with its SET
    /// and inclusion proof + checkpoint, `messageSignature`.
    pub fn to_v03_bundle(&self, entry: &RekorEntry) -> String {
        let mut material = match &self.certificate_der {
            Some(leaf) => json!({ "certificate": { "rawBytes": b64(leaf) } }),
            None => key_hint(&self.public_key_der),
        };
        material["tlogEntries"] = json!([entry.tlog_entry()]);
        self.message_signature_bundle(BUNDLE_V03_MEDIA_TYPE, material)
    }

    fn message_signature_bundle(&self, media_type: &str, material: Value) -> String {
        serde_json::to_string(&json!({
            "mediaType": media_type,
            "verificationMaterial": material,
            "messageSignature": {
                "messageDigest": { "algorithm": "SHA2_256", "digest": b64(&sha256(&self.payload)) },
                "signature": self.signature_b64(),
            },
        }))
        .expect("serialize a bundle")
    }
}

/// An in-toto Statement v1 about the image `name@image_digest` (`sha256:<hex>`):
/// `{"_type":…,"subject":[{"name":…,"digest":{"sha256":<hex>}}],"predicateType":…,"predicate":…}`.
pub fn in_toto_statement(name: &str, image_digest: &str, predicate_type: &str, predicate: Value) -> Vec<u8> {
    let hex = image_digest.strip_prefix("sha256:").expect("a sha256 digest");
    serde_json::to_vec(&json!({
        "_type": STATEMENT_V1,
        "subject": [{ "name": name, "digest": { "sha256": hex } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .expect("serialize a statement")
}

/// The statement a cosign v3 image signature signs: predicate type
/// `https://sigstore.dev/cosign/sign/v1`, empty predicate.
pub fn cosign_sign_statement(name: &str, image_digest: &str) -> Vec<u8> {
    in_toto_statement(name, image_digest, COSIGN_SIGN_PREDICATE, json!({}))
}

/// A bundle v0.3 with a DSSE envelope over `statement` (payload type `application/vnd.in-toto+json`,
/// one signature over the PAE by `signer`), `certificate` or `publicKey`, and a dsse 0.0.1 entry
/// logged in `rekor` at `integrated_time` with its SET, inclusion proof and checkpoint.
pub fn make_v3_dsse_bundle(rekor: &Rekor, signer: BundleSigner<'_>, statement: &[u8], integrated_time: i64) -> String {
    let signature = signer.sign(&sigstore_types::pae(IN_TOTO_PAYLOAD_TYPE, statement));
    let envelope = json!({
        "payload": b64(statement),
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "signatures": [{ "sig": b64(&signature) }],
    });
    let envelope_json = serde_json::to_vec(&envelope).expect("serialize an envelope");
    let entry = rekor.log_dsse(
        &envelope_json,
        statement,
        &signature,
        &signer.verifier_pem(),
        integrated_time,
    );
    let mut material = signer.material_v03();
    material["tlogEntries"] = json!([entry.tlog_entry()]);
    material["timestampVerificationData"] = json!({});
    serde_json::to_string(&json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": envelope,
    }))
    .expect("serialize a bundle")
}

/// A bundle v0.3 as an instance without Rekor makes it (GitHub's, for private repositories):
/// a DSSE envelope over `statement` signed by `signer`, no tlog entry, and a timestamp from
/// `tsa` at `at` over the signature, the only signing time it has.
pub fn make_v3_timestamped_dsse_bundle(tsa: &Tsa, signer: BundleSigner<'_>, statement: &[u8], at: i64) -> String {
    let signature = signer.sign(&sigstore_types::pae(IN_TOTO_PAYLOAD_TYPE, statement));
    let mut material = signer.material_v03();
    material["tlogEntries"] = json!([]);
    material["timestampVerificationData"] =
        json!({ "rfc3161Timestamps": [{ "signedTimestamp": b64(&tsa.stamp(&signature, at, "")) }] });
    serde_json::to_string(&json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{ "sig": b64(&signature) }],
        },
    }))
    .expect("serialize a bundle")
}

/// A bundle v0.3 as cosign v3 makes it against a Rekor v2 log: a DSSE envelope over
/// `statement` signed by `signer`, and a hashedrekord 0.0.2 entry over the hash of its PAE with
/// an inclusion proof and checkpoint — no SET, no integrated time, no timestamp (a test adds
/// one where it wants a signing time).
pub fn make_v3_dsse_bundle_on_rekor_v2(rekor: &RekorV2, signer: BundleSigner<'_>, statement: &[u8]) -> String {
    let pae = sigstore_types::pae(IN_TOTO_PAYLOAD_TYPE, statement);
    let signature = signer.sign(&pae);
    let (kind, der) = signer.verifier_der();
    let entry = rekor.log_hashedrekord(&sha256(&pae), &signature, (kind, &der));
    let mut material = signer.material_v03();
    material["tlogEntries"] = json!([entry.tlog_entry()]);
    material["timestampVerificationData"] = json!({});
    serde_json::to_string(&json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{ "sig": b64(&signature) }],
        },
    }))
    .expect("serialize a bundle")
}

/// What `cosign attest` (without the new bundle format) stores as one `.att` layer: the DSSE
/// envelope as bytes and the layer annotations.
#[derive(Debug, Clone)]
pub struct LegacyAttestation {
    pub envelope_json: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
    /// The intoto 0.0.1 entry it was logged as, if it was.
    pub entry: Option<RekorEntry>,
}

/// Signs `statement` into a DSSE envelope as `cosign attest` does, and, with `rekor`, logs it as
/// an intoto 0.0.1 entry integrated at `integrated_time`. The annotations carry the
/// predicate type, the certificate and chain for a leaf, and the entry's SET.
pub fn make_legacy_attestation(
    rekor: Option<&Rekor>,
    signer: BundleSigner<'_>,
    statement: &[u8],
    integrated_time: i64,
) -> LegacyAttestation {
    let signature = signer.sign(&sigstore_types::pae(IN_TOTO_PAYLOAD_TYPE, statement));
    let envelope_json = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": b64(statement),
        "signatures": [{ "keyid": "", "sig": b64(&signature) }],
    }))
    .expect("serialize an envelope");
    let predicate_type = serde_json::from_slice::<Value>(statement).expect("a statement")["predicateType"]
        .as_str()
        .expect("a predicate type")
        .to_owned();
    let mut annotations = BTreeMap::from([
        (cosign::SIGNATURE_ANNOTATION.to_owned(), String::new()),
        (cosign::PREDICATE_TYPE_ANNOTATION.to_owned(), predicate_type),
    ]);
    if let BundleSigner::Leaf(leaf) = signer {
        annotations.insert(cosign::CERTIFICATE_ANNOTATION.to_owned(), leaf.cert_pem());
        annotations.insert(cosign::CHAIN_ANNOTATION.to_owned(), leaf.chain_pem());
    }
    let entry = rekor.map(|rekor| rekor.log_intoto(&envelope_json, statement, &signer.verifier_pem(), integrated_time));
    if let Some(entry) = &entry {
        annotations.insert(cosign::BUNDLE_ANNOTATION.to_owned(), entry.cosign_bundle_annotation());
    }
    LegacyAttestation {
        envelope_json,
        annotations,
        entry,
    }
}

/// What `cosign sign` (v3) makes for `repo@image_digest` with `leaf`: a bundle v0.3 over
/// [`cosign_sign_statement`], logged in `sigstore`'s Rekor at `integrated_time`.
pub fn make_v3_signature_bundle(
    sigstore: &TestSigstore,
    leaf: &Leaf,
    repo: &str,
    image_digest: &str,
    integrated_time: i64,
) -> String {
    make_v3_dsse_bundle(
        &sigstore.rekor,
        BundleSigner::Leaf(leaf),
        &cosign_sign_statement(repo, image_digest),
        integrated_time,
    )
}
