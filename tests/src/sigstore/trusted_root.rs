//! The test Sigstore's `trusted_root.json` (Sigstore TrustedRoot, media type
//! `application/vnd.dev.sigstore.trustedroot+json;version=0.1`):
//!
//! ```json
//! {"mediaType": "…trustedroot+json;version=0.1",
//!  "tlogs": [{"baseUrl", "hashAlgorithm": "SHA2_256",
//!             "publicKey": {"rawBytes": <b64 DER SPKI>, "keyDetails": "PKIX_ECDSA_P256_SHA_256",
//!                           "validFor": {"start"}},
//!             "logId": {"keyId": <b64 sha256 of the DER SPKI>}}],
//!  "certificateAuthorities": [{"subject": {"organization", "commonName"}, "uri",
//!                              "certChain": {"certificates": [{"rawBytes"}, …]}, "validFor": {"start"}}],
//!  "ctlogs": [same shape as tlogs],
//!  "timestampAuthorities": []}
//! ```

use serde_json::{json, Value};

use super::{b64, rfc3339, CtLog, FulcioCa, Rekor, CA_EPOCH};

pub const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";
pub const REKOR_URL: &str = "https://rekor.pullgate.test";
pub const FULCIO_URL: &str = "https://fulcio.pullgate.test";
pub const CTFE_URL: &str = "https://ctfe.pullgate.test/test";
pub const KEY_DETAILS_P256: &str = "PKIX_ECDSA_P256_SHA_256";

/// The trusted root naming `ca`, `ctlog` and `rekor`, all valid since [`CA_EPOCH`].
pub fn trusted_root(ca: &FulcioCa, ctlog: &CtLog, rekor: &Rekor) -> Value {
    let valid_for = json!({ "start": rfc3339(CA_EPOCH) });
    let log = |base_url: &str, spki: &[u8], log_id: [u8; 32]| {
        json!({
            "baseUrl": base_url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(spki),
                "keyDetails": KEY_DETAILS_P256,
                "validFor": valid_for,
            },
            "logId": { "keyId": b64(&log_id) },
        })
    };
    json!({
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "tlogs": [log(REKOR_URL, rekor.public_key_der(), rekor.log_id())],
        "certificateAuthorities": [{
            "subject": { "organization": "pullgate.test", "commonName": "sigstore" },
            "uri": FULCIO_URL,
            "certChain": {
                "certificates": ca.chain_der().iter().map(|der| json!({ "rawBytes": b64(der) })).collect::<Vec<_>>(),
            },
            "validFor": valid_for,
        }],
        "ctlogs": [log(CTFE_URL, ctlog.public_key_der(), ctlog.log_id())],
        "timestampAuthorities": [],
    })
}
