//! A test Rekor (v1): an ECDSA P-256 log key, an append-only RFC 6962 Merkle tree of entry bodies,
//! and for each entry what a Rekor v1 answer carries: the log index, the integrated time (chosen
//! by the caller, so tests can place it inside an expired certificate's window), the log ID, the
//! signed entry timestamp (SET) and an inclusion proof with a signed checkpoint.
//!
//! Shapes:
//! - hashedrekord 0.0.1 body: `{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":
//!   {"algorithm":"sha256","value":<hex>}},"signature":{"content":<b64 sig>,"publicKey":{"content":
//!   <b64 of the PEM cert or key>}}}}`
//! - dsse 0.0.1 body: `{"apiVersion":"0.0.1","kind":"dsse","spec":{"envelopeHash":{"algorithm":
//!   "sha256","value":<hex>},"payloadHash":{"algorithm":"sha256","value":<hex>},"signatures":
//!   [{"signature":<b64 sig>,"verifier":<b64 of the PEM cert or key>}]}}`
//! - SET: ECDSA (ASN.1) over the canonical JSON `{"body":<b64 body>,"integratedTime":N,
//!   "logID":"<hex>","logIndex":N}`
//! - checkpoint: `<origin>\n<tree size>\n<b64 root>\n\n— <name> <b64 of key hint ‖ sig>\n`

use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{json, Value};
use sigstore_crypto::KeyPair;

use super::{b64, pem, sha256};

/// The name the test log signs its checkpoints with.
pub const REKOR_NAME: &str = "rekor.pullgate.test";

/// The kind and version of a Rekor entry.
pub const HASHEDREKORD: (&str, &str) = ("hashedrekord", "0.0.1");
pub const DSSE: (&str, &str) = ("dsse", "0.0.1");

/// The test Rekor log.
#[derive(Debug)]
pub struct Rekor {
    key: KeyPair,
    spki: Vec<u8>,
    origin: String,
    /// RFC 6962 leaf hashes, in log order.
    leaves: Mutex<Vec<[u8; 32]>>,
}

/// An inclusion proof of one entry in the tree of its log at the time it was added, with the
/// log's checkpoint for that tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root_hash: [u8; 32],
    pub hashes: Vec<[u8; 32]>,
    /// The signed note (checkpoint) for `tree_size` and `root_hash`.
    pub checkpoint: String,
}

/// One entry of the log, as Rekor v1 returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekorEntry {
    pub kind: String,
    pub version: String,
    /// The canonicalized body.
    pub body: Vec<u8>,
    pub log_index: u64,
    /// Unix seconds.
    pub integrated_time: i64,
    /// SHA-256 of the log key's DER SubjectPublicKeyInfo.
    pub log_id: [u8; 32],
    /// The signed entry timestamp: ASN.1 ECDSA over the canonical SET payload.
    pub signed_entry_timestamp: Vec<u8>,
    pub inclusion_proof: InclusionProof,
}

/// cosign's `dev.sigstore.cosign/bundle` annotation, fields in cosign's order.
#[derive(Serialize)]
struct CosignBundle<'a> {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: CosignPayload<'a>,
}

#[derive(Serialize)]
struct CosignPayload<'a> {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: u64,
    #[serde(rename = "logID")]
    log_id: &'a str,
}

// === impl Rekor ===

impl Rekor {
    pub fn generate() -> Rekor {
        let key = KeyPair::generate_ecdsa_p256().expect("generate the Rekor key");
        let spki = key.public_key_der().expect("encode the Rekor key").as_bytes().to_vec();
        let tree_id = u64::from_be_bytes(sha256(&spki)[..8].try_into().expect("8 bytes")) >> 1;
        Rekor {
            key,
            spki,
            origin: format!("{REKOR_NAME} - {tree_id}"),
            leaves: Mutex::new(Vec::new()),
        }
    }

    /// The log's public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// The log's public key as a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// SHA-256 of the log key's DER SubjectPublicKeyInfo.
    pub fn log_id(&self) -> [u8; 32] {
        sha256(&self.spki)
    }

    /// The checkpoint origin line, `rekor.pullgate.test - <tree id>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends a hashedrekord 0.0.1 entry for `signature` over `payload`, verified by
    /// `verifier_pem` (a certificate or a public key), integrated at `integrated_time`.
    pub fn log_hashedrekord(
        &self,
        payload: &[u8],
        signature: &[u8],
        verifier_pem: &str,
        integrated_time: i64,
    ) -> RekorEntry {
        self.append(
            HASHEDREKORD,
            hashedrekord_body(payload, signature, verifier_pem),
            integrated_time,
        )
    }

    /// Appends a dsse 0.0.1 entry for an envelope (`envelope_json`) whose one signature is
    /// `signature` over the PAE of `payload`, verified by `verifier_pem`.
    pub fn log_dsse(
        &self,
        envelope_json: &[u8],
        payload: &[u8],
        signature: &[u8],
        verifier_pem: &str,
        integrated_time: i64,
    ) -> RekorEntry {
        self.append(
            DSSE,
            dsse_body(envelope_json, payload, signature, verifier_pem),
            integrated_time,
        )
    }

    /// Appends an intoto 0.0.1 entry for an envelope (`envelope_json`) over `payload`, signed
    /// by `verifier_pem`'s key, as `cosign attest` logs attestations.
    pub fn log_intoto(
        &self,
        envelope_json: &[u8],
        payload: &[u8],
        verifier_pem: &str,
        integrated_time: i64,
    ) -> RekorEntry {
        self.append(
            ("intoto", "0.0.1"),
            intoto_v001_body(envelope_json, payload, verifier_pem),
            integrated_time,
        )
    }

    /// Appends `body` as an entry of `kind_version`, integrated at `integrated_time`: the next
    /// log index, its SET, and an inclusion proof against the tree that ends with it.
    pub fn append(&self, kind_version: (&str, &str), body: Vec<u8>, integrated_time: i64) -> RekorEntry {
        let (log_index, tree) = {
            let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
            leaves.push(leaf_hash(&body));
            (leaves.len() as u64 - 1, leaves.clone())
        };
        let root_hash = tree_hash(&tree);
        let inclusion_proof = InclusionProof {
            log_index,
            tree_size: tree.len() as u64,
            root_hash,
            hashes: inclusion_path(log_index as usize, &tree),
            checkpoint: self.checkpoint(tree.len() as u64, &root_hash),
        };
        RekorEntry {
            kind: kind_version.0.to_owned(),
            version: kind_version.1.to_owned(),
            signed_entry_timestamp: self.sign_set(&body, integrated_time, log_index),
            body,
            log_index,
            integrated_time,
            log_id: self.log_id(),
            inclusion_proof,
        }
    }

    /// An inclusion proof of the entry at `log_index` in the whole tree as it is now (later
    /// entries included), with its checkpoint.
    pub fn prove(&self, log_index: u64) -> InclusionProof {
        let tree = self.leaves.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let root_hash = tree_hash(&tree);
        InclusionProof {
            log_index,
            tree_size: tree.len() as u64,
            root_hash,
            hashes: inclusion_path(log_index as usize, &tree),
            checkpoint: self.checkpoint(tree.len() as u64, &root_hash),
        }
    }

    /// The SET of an entry: the log's signature over the canonical JSON
    /// `{"body":…,"integratedTime":…,"logID":…,"logIndex":…}`.
    pub fn sign_set(&self, body: &[u8], integrated_time: i64, log_index: u64) -> Vec<u8> {
        let payload = set_payload(body, integrated_time, &hex::encode(self.log_id()), log_index);
        self.key.sign(&payload).expect("sign the SET").as_bytes().to_vec()
    }

    /// A signed note for the tree of `tree_size` leaves with `root_hash`.
    pub fn checkpoint(&self, tree_size: u64, root_hash: &[u8; 32]) -> String {
        self.checkpoint_with_origin(&self.origin, tree_size, root_hash)
    }

    /// [`Rekor::checkpoint`] with another origin line, signed by this log's key (a checkpoint
    /// that names another log).
    pub fn checkpoint_with_origin(&self, origin: &str, tree_size: u64, root_hash: &[u8; 32]) -> String {
        let note = format!("{origin}\n{tree_size}\n{}\n", b64(root_hash));
        let signature = self.key.sign(note.as_bytes()).expect("sign the checkpoint");
        let mut hint_and_signature = self.log_id()[..4].to_vec();
        hint_and_signature.extend_from_slice(signature.as_bytes());
        format!("{note}\n\u{2014} {REKOR_NAME} {}\n", b64(&hint_and_signature))
    }
}

/// The canonical JSON a SET signs (keys sorted, no whitespace).
pub fn set_payload(body: &[u8], integrated_time: i64, log_id_hex: &str, log_index: u64) -> Vec<u8> {
    format!(
        r#"{{"body":"{}","integratedTime":{integrated_time},"logID":"{log_id_hex}","logIndex":{log_index}}}"#,
        b64(body)
    )
    .into_bytes()
}

/// The canonicalized body of a hashedrekord 0.0.1 entry.
pub fn hashedrekord_body(payload: &[u8], signature: &[u8], verifier_pem: &str) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": hex::encode(sha256(payload)) } },
            "signature": {
                "content": b64(signature),
                "publicKey": { "content": b64(verifier_pem.as_bytes()) },
            },
        },
    }))
}

/// The canonicalized body of a dsse 0.0.1 entry.
pub fn dsse_body(envelope_json: &[u8], payload: &[u8], signature: &[u8], verifier_pem: &str) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": { "algorithm": "sha256", "value": hex::encode(sha256(envelope_json)) },
            "payloadHash": { "algorithm": "sha256", "value": hex::encode(sha256(payload)) },
            "signatures": [{ "signature": b64(signature), "verifier": b64(verifier_pem.as_bytes()) }],
        },
    }))
}

/// The canonicalized body of an intoto 0.0.1 entry, what `cosign attest` logs: Rekor keeps the
/// hash of the envelope as submitted and of its payload, and the signer, not the envelope.
pub fn intoto_v001_body(envelope_json: &[u8], payload: &[u8], verifier_pem: &str) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "intoto",
        "spec": {
            "content": {
                "hash": { "algorithm": "sha256", "value": hex::encode(sha256(envelope_json)) },
                "payloadHash": { "algorithm": "sha256", "value": hex::encode(sha256(payload)) },
            },
            "publicKey": b64(verifier_pem.as_bytes()),
        },
    }))
}

/// `value` as JSON with object keys sorted and no whitespace (serde_json's map is ordered by key).
fn canonical(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize a Rekor body")
}

// === impl RekorEntry ===

impl RekorEntry {
    /// cosign's legacy `dev.sigstore.cosign/bundle` annotation:
    /// `{"SignedEntryTimestamp":<b64>,"Payload":{"body":<b64>,"integratedTime":N,"logIndex":N,"logID":"<hex>"}}`.
    pub fn cosign_bundle_annotation(&self) -> String {
        let log_id = hex::encode(self.log_id);
        serde_json::to_string(&CosignBundle {
            signed_entry_timestamp: b64(&self.signed_entry_timestamp),
            payload: CosignPayload {
                body: b64(&self.body),
                integrated_time: self.integrated_time,
                log_index: self.log_index,
                log_id: &log_id,
            },
        })
        .expect("serialize a cosign bundle annotation")
    }

    /// A Sigstore bundle `verificationMaterial.tlogEntries[]` item with the inclusion promise
    /// (SET) and the inclusion proof with its checkpoint.
    pub fn tlog_entry(&self) -> Value {
        let mut entry = self.tlog_entry_without_proof();
        entry["inclusionProof"] = json!({
            "logIndex": self.inclusion_proof.log_index.to_string(),
            "rootHash": b64(&self.inclusion_proof.root_hash),
            "treeSize": self.inclusion_proof.tree_size.to_string(),
            "hashes": self.inclusion_proof.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
            "checkpoint": { "envelope": self.inclusion_proof.checkpoint },
        });
        entry
    }

    /// As [`RekorEntry::tlog_entry`] with the SET only (what a v0.1 bundle needs at least).
    pub fn tlog_entry_without_proof(&self) -> Value {
        json!({
            "logIndex": self.log_index.to_string(),
            "logId": { "keyId": b64(&self.log_id) },
            "kindVersion": { "kind": self.kind, "version": self.version },
            "integratedTime": self.integrated_time.to_string(),
            "inclusionPromise": { "signedEntryTimestamp": b64(&self.signed_entry_timestamp) },
            "canonicalizedBody": b64(&self.body),
        })
    }

    /// This entry with `other`'s SET grafted on (which must then fail to verify).
    pub fn with_set_of(&self, other: &RekorEntry) -> RekorEntry {
        RekorEntry {
            signed_entry_timestamp: other.signed_entry_timestamp.clone(),
            ..self.clone()
        }
    }
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut input = vec![0u8];
    input.extend_from_slice(data);
    sha256(&input)
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut input = vec![1u8];
    input.extend_from_slice(left);
    input.extend_from_slice(right);
    sha256(&input)
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 §2.1 MTH over leaf hashes (at least one).
pub fn tree_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => panic!("a tree with no leaves"),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 PATH(m, D[n]): the audit path of leaf `m`, leaf side first.
pub fn inclusion_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut path = inclusion_path(m, &leaves[..k]);
        path.push(tree_hash(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_path(m - k, &leaves[k..]);
        path.push(tree_hash(&leaves[..k]));
        path
    }
}
