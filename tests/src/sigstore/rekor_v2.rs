//! A test Rekor v2 (rekor-tiles) log: an Ed25519 log key, an RFC 6962 tree of entry bodies, and
//! for each entry what Rekor v2 hands back: the log index and an inclusion proof with a
//! checkpoint in the C2SP signed-note format. Unlike v1 there is no signed entry timestamp and no
//! integrated time: nothing the log returns says when an entry was made.
//!
//! Shapes:
//! - hashedrekord 0.0.2 body: `{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{
//!   "hashedRekordV002":{"data":{"algorithm":"SHA2_256","digest":<b64>},"signature":{"content":
//!   <b64 sig>,"verifier":{"keyDetails":…,"x509Certificate"|"publicKey":{"rawBytes":<b64 DER>}}}}}}`.
//!   A DSSE envelope is logged the same way over the hash of its PAE.
//! - checkpoint: `<origin>\n<tree size>\n<b64 root>\n\n— <origin> <b64 of key ID[..4] ‖ sig>\n`,
//!   where the key ID is SHA-256(`<origin>\n` ‖ 0x01 ‖ raw Ed25519 key) — also the log ID the
//!   trusted root names.

use std::sync::{Mutex, PoisonError};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use serde_json::{json, Value};

use super::{
    b64,
    rekor::{inclusion_path, leaf_hash, tree_hash, InclusionProof},
    sha256,
};

/// The test log's origin, as rekor-tiles names a log: its host.
pub const REKOR_V2_ORIGIN: &str = "rekor-v2.pullgate.test";
/// Where the trusted root says the log is.
pub const REKOR_V2_URL: &str = "https://rekor-v2.pullgate.test";

/// The kind and version of a Rekor v2 hashedrekord entry.
pub const HASHEDREKORD_V2: (&str, &str) = ("hashedrekord", "0.0.2");

/// C2SP signed-note signature type of an Ed25519 key.
const NOTE_ED25519: u8 = 0x01;

/// The test Rekor v2 log.
/// The DER SubjectPublicKeyInfo of an Ed25519 key, before its 32 bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug)]
pub struct RekorV2 {
    key: Ed25519KeyPair,
    spki: Vec<u8>,
    log_id: [u8; 32],
    leaves: Mutex<Vec<[u8; 32]>>,
}

/// One entry of the log as a v2 bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekorV2Entry {
    pub body: Vec<u8>,
    pub log_index: u64,
    pub log_id: [u8; 32],
    pub inclusion_proof: InclusionProof,
}

// === impl RekorV2 ===

impl RekorV2 {
    pub fn generate() -> RekorV2 {
        // sigstore-crypto generates only ECDSA keys; aws-lc-rs makes the Ed25519 one.
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate the Rekor v2 key");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("read the Rekor v2 key");
        let raw = key.public_key().as_ref().to_vec();
        let spki = [&ED25519_SPKI_PREFIX[..], &raw].concat();
        let mut named = format!("{REKOR_V2_ORIGIN}\n").into_bytes();
        named.push(NOTE_ED25519);
        named.extend_from_slice(&raw);
        RekorV2 {
            log_id: sha256(&named),
            key,
            spki,
            leaves: Mutex::new(Vec::new()),
        }
    }

    /// The log's public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// The signed-note key ID, which the trusted root names as the log ID.
    pub fn log_id(&self) -> [u8; 32] {
        self.log_id
    }

    /// The `tlogs[]` item of a trusted root naming this log.
    pub fn trusted_root_entry(&self) -> Value {
        json!({
            "baseUrl": REKOR_V2_URL,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(&self.spki),
                "keyDetails": "PKIX_ED25519",
                "validFor": { "start": super::rfc3339(super::CA_EPOCH) },
            },
            "logId": { "keyId": b64(&self.log_id) },
        })
    }

    /// Adds this log to `root`'s `tlogs`.
    pub fn trust_in(&self, root: &mut Value) {
        root["tlogs"]
            .as_array_mut()
            .expect("a trusted root lists tlogs")
            .push(self.trusted_root_entry());
    }

    /// Appends a hashedrekord 0.0.2 entry for `signature` over data whose SHA-256 is `digest`,
    /// verified by `verifier` (`("x509Certificate" | "publicKey", DER)`).
    pub fn log_hashedrekord(&self, digest: &[u8; 32], signature: &[u8], verifier: (&str, &[u8])) -> RekorV2Entry {
        self.append(hashedrekord_v002_body(digest, signature, verifier))
    }

    /// Appends `body`: the next index and a proof against the tree that ends with it.
    pub fn append(&self, body: Vec<u8>) -> RekorV2Entry {
        let (log_index, tree) = {
            let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
            leaves.push(leaf_hash(&body));
            (leaves.len() as u64 - 1, leaves.clone())
        };
        let root_hash = tree_hash(&tree);
        RekorV2Entry {
            body,
            log_index,
            log_id: self.log_id,
            inclusion_proof: InclusionProof {
                log_index,
                tree_size: tree.len() as u64,
                root_hash,
                hashes: inclusion_path(log_index as usize, &tree),
                checkpoint: self.checkpoint(REKOR_V2_ORIGIN, tree.len() as u64, &root_hash),
            },
        }
    }

    /// A signed note for the tree of `tree_size` leaves with `root_hash`, with `origin` as its
    /// first line, signed by this log's key under the log's own name.
    pub fn checkpoint(&self, origin: &str, tree_size: u64, root_hash: &[u8; 32]) -> String {
        let note = format!("{origin}\n{tree_size}\n{}\n", b64(root_hash));
        let signature = self.key.sign(note.as_bytes());
        let mut hint_and_signature = self.log_id[..4].to_vec();
        hint_and_signature.extend_from_slice(signature.as_ref());
        format!("{note}\n\u{2014} {REKOR_V2_ORIGIN} {}\n", b64(&hint_and_signature))
    }
}

/// The canonicalized body of a hashedrekord 0.0.2 entry (keys sorted, as rekor-tiles writes it).
pub fn hashedrekord_v002_body(digest: &[u8; 32], signature: &[u8], verifier: (&str, &[u8])) -> Vec<u8> {
    let (kind, der) = verifier;
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {
            "hashedRekordV002": {
                "data": { "algorithm": "SHA2_256", "digest": b64(digest) },
                "signature": {
                    "content": b64(signature),
                    "verifier": { "keyDetails": "PKIX_ECDSA_P256_SHA_256", kind: { "rawBytes": b64(der) } },
                },
            },
        },
    }))
    .expect("serialize a Rekor v2 body")
}

// === impl RekorV2Entry ===

impl RekorV2Entry {
    /// A bundle `verificationMaterial.tlogEntries[]` item as cosign v3 writes a Rekor v2 entry:
    /// the inclusion proof and checkpoint, no inclusion promise, no integrated time.
    pub fn tlog_entry(&self) -> Value {
        let proof = &self.inclusion_proof;
        json!({
            "logIndex": self.log_index.to_string(),
            "logId": { "keyId": b64(&self.log_id) },
            "kindVersion": { "kind": HASHEDREKORD_V2.0, "version": HASHEDREKORD_V2.1 },
            "inclusionProof": {
                "logIndex": proof.log_index.to_string(),
                "rootHash": b64(&proof.root_hash),
                "treeSize": proof.tree_size.to_string(),
                "hashes": proof.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                "checkpoint": { "envelope": proof.checkpoint },
            },
            "canonicalizedBody": b64(&self.body),
        })
    }
}
