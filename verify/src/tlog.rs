//! What pullgate requires of a bundle's transparency-log entries beyond `sigstore-verify`, which
//! accepts an entry with neither an inclusion proof nor a SET beside a good one, never compares
//! an entry's log index or its proof's tree size with what the checkpoint signs, and takes a
//! checkpoint signed by any trusted log, whatever log its origin names.
//!
//! Every entry must hold on its own: one that does not makes the whole bundle not count, so the
//! log index reported in the audit record is always one the log vouched for.

use sigstore_crypto::VerificationKey;
use sigstore_trust_root::TransparencyLog;
use sigstore_types::{bundle::InclusionProof, Bundle, KindVersion, TransparencyLogEntry};

use super::TrustMaterial;

/// Checks every log entry of `bundle` (which `sigstore-verify` has verified) and returns the
/// log index to report: the first entry's, which its SET or its proof authenticates.
pub(super) fn check_entries(trust: &TrustMaterial, bundle: &Bundle) -> Result<Option<u64>, String> {
    let entries = &bundle.verification_material.tlog_entries;
    for (n, entry) in entries.iter().enumerate() {
        check_entry(trust, entry).map_err(|why| format!("transparency-log entry {n}: {why}"))?;
    }
    Ok(entries.first().map(|e| e.log_index.get()))
}

fn check_entry(trust: &TrustMaterial, entry: &TransparencyLogEntry) -> Result<(), String> {
    let has_set = entry.inclusion_promise.is_some();
    let proof = match (&entry.inclusion_proof, has_set) {
        (None, false) => return Err("neither an inclusion proof nor a signed entry timestamp".into()),
        (None, true) => return Ok(()),
        (Some(proof), _) => proof,
    };
    let log = trust
        .root()
        .tlogs
        .iter()
        .find(|log| log.log_id.key_id == entry.log_id.key_id)
        .ok_or_else(|| format!("no log of the trusted root has ID {}", entry.log_id.key_id))?;
    check_proof(log, entry, proof, has_set)
}

/// The proof's checkpoint is signed by the entry's own log, names that log, and signs the tree
/// the proof is about; the proof is about the entry's index.
fn check_proof(
    log: &TransparencyLog,
    entry: &TransparencyLogEntry,
    proof: &InclusionProof,
    has_set: bool,
) -> Result<(), String> {
    let checkpoint = proof
        .checkpoint
        .checkpoint()
        .ok_or("an inclusion proof without a checkpoint")?;
    let key = VerificationKey::from_spki(&log.public_key.raw_bytes).map_err(|e| format!("log key: {e}"))?;
    // A checkpoint names its signer by the first four bytes of the log's key ID.
    let hint = log
        .log_id
        .key_id
        .as_bytes()
        .get(..4)
        .ok_or("a log ID shorter than a key hint")?;
    let signature = checkpoint
        .signatures()
        .iter()
        .filter(|s| s.key_id.as_bytes()[..] == *hint)
        .find(|s| key.verify(checkpoint.signed_data(), &s.signature).is_ok())
        .ok_or_else(|| format!("the checkpoint is not signed by the entry's log ({})", log.base_url))?;
    let v2 = entry.kind_version == KindVersion::HashedRekordV002;
    if !origin_names_log(checkpoint.origin(), &log.base_url, &signature.name, v2) {
        return Err(format!(
            "the checkpoint's origin {:?} does not name the log {}",
            checkpoint.origin(),
            log.base_url
        ));
    }
    if checkpoint.tree_size() != proof.tree_size {
        return Err(format!(
            "the proof is for a tree of {} entries, the checkpoint signs {}",
            proof.tree_size,
            checkpoint.tree_size()
        ));
    }
    let (index, proved) = (entry.log_index.get(), proof.log_index.get());
    // Rekor v1 numbers entries across its shards while a proof counts within the shard's tree,
    // so the two differ by the shard's offset; only a SET vouches for the entry's own number.
    let consistent = if v2 || !has_set {
        index == proved
    } else {
        proved <= index
    };
    if !consistent {
        return Err(format!("log index {index}, but the proof is for index {proved}"));
    }
    Ok(())
}

/// Whether a checkpoint origin names the log at `base_url`. Rekor v2 writes the log's host.
/// Rekor v1 writes `<name> - <tree ID>`, where the name is the one its signature line gives
/// (`signer`), as a signed-note verifier requires: the public instances use their host, private
/// ones often a pod name (sigstore-go accepts those), so v1 is held to its signer's name.
fn origin_names_log(origin: &str, base_url: &str, signer: &str, v2: bool) -> bool {
    if !v2 {
        return match origin.rsplit_once(" - ") {
            Some((name, tree)) => {
                !name.is_empty() && name == signer && !tree.is_empty() && tree.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        };
    }
    let authority = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    !authority.is_empty() && (origin.eq_ignore_ascii_case(authority) || origin.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::origin_names_log;

    #[test]
    fn origins_as_rekor_writes_them_name_their_log() {
        let v1 = |o, signer| origin_names_log(o, "https://rekor.sigstore.dev", signer, false);
        let v2 = |o, u| origin_names_log(o, u, "", true);
        assert!(v1("rekor.sigstore.dev - 1193050959916656506", "rekor.sigstore.dev"));
        assert!(v1("localhost:8000 - 124190645164477", "localhost:8000"));
        // A private log names itself after its pod, whatever URL it is reached at.
        assert!(v1(
            "rekor-00001-deployment-56bf7777c9-jds5x - 6364419738405537866",
            "rekor-00001-deployment-56bf7777c9-jds5x"
        ));
        assert!(v2(
            "log2025-1.rekor.sigstore.dev",
            "https://log2025-1.rekor.sigstore.dev"
        ));
        assert!(v2("rekor-local", "http://rekor-local"));
        assert!(!v1("rekor.sigstage.dev - 8050909264565447525", "rekor.sigstore.dev"));
        assert!(!v1("rekor.sigstore.dev", "rekor.sigstore.dev"));
        assert!(!v1("rekor.sigstore.dev - 12x", "rekor.sigstore.dev"));
        assert!(!v1(" - 12", ""));
        assert!(!v2("rekor.sigstore.dev - 1", "https://rekor.sigstore.dev"));
        assert!(!v2("evil.example", "https://log2025-1.rekor.sigstore.dev"));
        assert!(!v2("", ""));
    }
}
