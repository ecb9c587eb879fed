//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpus:
//! each takes bytes an attacker or a careless operator controls and must return, without
//! panicking and within its bounds, whatever they are. Not an API.

use std::{path::Path, sync::OnceLock};

use crate::{
    policy::{Condition, Policy},
    reference::{Digest, Reference},
    registry::{cosign, referrers},
    verify::{legacy, simple_signing},
};

/// A policy file, as `pullgate policy check` and SIGHUP read one.
pub fn policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::from_str(text, Path::new("fuzz.yaml"));
    }
}

/// An image reference, as kubelet sends one, and a digest.
pub fn reference(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(reference) = Reference::parse(text) {
            let _ = reference.repository();
            let _ = reference.to_string();
        }
        let _ = Digest::parse(text);
    }
}

/// A cosign simple-signing payload from a `.sig` layer.
pub fn simple_signing(data: &[u8]) {
    let _ = simple_signing::parse(data);
}

/// A DSSE envelope from an `.att` layer, its in-toto statement, and a condition evaluated
/// over it (metered, so any statement finishes).
pub fn dsse(data: &[u8]) {
    static CONDITION: OnceLock<Vec<Condition>> = OnceLock::new();
    let conditions = CONDITION.get_or_init(|| {
        Condition::compile("predicate.components.exists(c, c.name == 'x') || size(statement.subject) > 2")
            .into_iter()
            .collect()
    });
    let statement = match serde_json::from_slice::<sigstore_types::DsseEnvelope>(data) {
        Ok(envelope) => serde_json::from_slice::<serde_json::Value>(envelope.payload.as_bytes()),
        Err(_) => serde_json::from_slice::<serde_json::Value>(data),
    };
    if let Ok(statement) = statement {
        let _ = crate::policy::evaluate_conditions(conditions, &statement);
    }
}

/// A Sigstore bundle, and cosign's legacy Rekor bundle annotation restated as one.
pub fn bundle(data: &[u8]) {
    let _ = sigstore_types::Bundle::from_json(&String::from_utf8_lossy(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = legacy::RekorBundle::parse(text);
        let annotations = [(legacy::REKOR_BUNDLE_ANNOTATION.to_string(), text.to_string())].into();
        let _ = legacy::to_bundle(&annotations, b"signature");
    }
}

/// An OCI manifest or index, as `.sig`/`.att` and referrers discovery parse them.
pub fn manifest(data: &[u8]) {
    let _ = cosign::manifest_layer_count(data);
    let _ = referrers::parse_index_and_manifest(data);
}

/// One entry point.
pub type Target = fn(&[u8]);

/// Every target, by the name its directory in `fuzz/corpus/` has.
pub const TARGETS: [(&str, Target); 6] = [
    ("policy", policy),
    ("reference", reference),
    ("simple_signing", simple_signing),
    ("dsse", dsse),
    ("bundle", bundle),
    ("manifest", manifest),
];
