//! The tests' own Sigstore: public Sigstore is out of reach, so every test that needs keyless
//! signatures gets a Sigstore of its own, generated at test time.
//!
//! | part | what it is |
//! |---|---|
//! | Fulcio | [`FulcioCa`]: an ECDSA P-256 root (and optionally an intermediate) issuing Fulcio-shaped code-signing leaves ([`fulcio`]) |
//! | CT log | [`CtLog`]: an ECDSA P-256 key that signs the SCT every leaf embeds ([`ctlog`]) |
//! | Rekor | [`Rekor`]: an ECDSA P-256 log key, a Merkle tree, SETs and signed checkpoints ([`rekor`]) |
//! | Rekor v2 | [`RekorV2`]: an Ed25519 log key, hashedrekord 0.0.2 entries, C2SP signed-note checkpoints, no SET and no integrated time ([`rekor_v2`]); not in the default trust root, [`RekorV2::trust_in`] adds it |
//! | TSA | [`Tsa`]: an ECDSA P-256 root and time-stamping leaf, RFC 3161 tokens with any genTime ([`tsa`]); not in the default trust root, [`Tsa::trust_in`] adds it |
//! | trust root | [`TestSigstore::trusted_root_json`]: a Sigstore `trusted_root.json` naming the three ([`trusted_root`]); [`TestSigstore::rekorless_trusted_root_json`]: a second instance's, like GitHub's (Fulcio CA and a TSA, no Rekor, no CT log) |
//! | signatures | [`bundle`]: legacy cosign `.sig` material (signature, certificate, chain, SET annotation), bundles v0.1 built from it, and cosign v3 DSSE bundles v0.3 |
//! | registry | [`attach`]: the `.sig` layout with cosign's annotations, and v3 bundle referrers with the OCI referrers tag fallback |
//!
//! Everything verifies offline with `sigstore-verify` against the trusted root (see the tests in
//! `tests/e2e/sigstore_rig.rs`). All times are unix seconds.

pub mod attach;
pub mod bundle;
pub mod ctlog;
pub mod der;
pub mod fulcio;
pub mod rekor;
pub mod rekor_v2;
pub mod trusted_root;
pub mod tsa;

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use sigstore_trust_root::TrustedRoot;
use sigstore_verify::Verifier;

pub use attach::{attach_key_signature, attach_keyless_signature, attach_v3_bundle, read_referrers_tag, referrers_tag};
pub use bundle::{
    cosign_sign_statement, in_toto_statement, make_legacy_attestation, make_v3_dsse_bundle,
    make_v3_dsse_bundle_on_rekor_v2, make_v3_signature_bundle, make_v3_timestamped_dsse_bundle, BundleSigner,
    LegacyAttestation, LegacySigned,
};
pub use ctlog::CtLog;
pub use fulcio::{FulcioCa, Leaf, LeafRequest, SanKind};
pub use rekor::{Rekor, RekorEntry};
pub use rekor_v2::{RekorV2, RekorV2Entry};
pub use tsa::Tsa;

/// When the test Sigstore's CA, logs and trust root entries become valid: 2020-01-01T00:00:00Z,
/// well before any time a test signs at.
pub const CA_EPOCH: i64 = 1_577_836_800;

/// A Fulcio CA, a CT log and a Rekor log, generated together, and the trust root naming them.
#[derive(Debug)]
pub struct TestSigstore {
    pub fulcio: FulcioCa,
    pub ctlog: CtLog,
    pub rekor: Rekor,
}

impl Default for TestSigstore {
    fn default() -> TestSigstore {
        TestSigstore::new()
    }
}

// === impl TestSigstore ===

impl TestSigstore {
    /// A Sigstore whose root CA signs leaves directly.
    pub fn new() -> TestSigstore {
        Self::generate(false)
    }

    /// A Sigstore whose leaves are signed by an intermediate under the root, as Fulcio's are.
    pub fn with_intermediate() -> TestSigstore {
        Self::generate(true)
    }

    pub fn generate(with_intermediate: bool) -> TestSigstore {
        TestSigstore {
            fulcio: FulcioCa::generate(with_intermediate),
            ctlog: CtLog::generate(),
            rekor: Rekor::generate(),
        }
    }

    /// The `trusted_root.json` naming this Sigstore's CA, CT log and Rekor log.
    pub fn trusted_root_json(&self) -> String {
        serde_json::to_string_pretty(&self.trusted_root_value()).expect("serialize a trusted root")
    }

    /// [`TestSigstore::trusted_root_json`] as a JSON value, for tests that edit it.
    pub fn trusted_root_value(&self) -> serde_json::Value {
        trusted_root::trusted_root(&self.fulcio, &self.ctlog, &self.rekor)
    }

    /// The `trusted_root.json` of an instance like GitHub's for private repositories: this
    /// Sigstore's Fulcio CA and `tsa`, no Rekor log and no CT log, so its signatures carry a
    /// timestamp as their only signing time (see [`bundle::make_v3_timestamped_dsse_bundle`]).
    pub fn rekorless_trusted_root_json(&self, tsa: &Tsa) -> String {
        let mut root = self.trusted_root_value();
        root["tlogs"] = serde_json::json!([]);
        root["ctlogs"] = serde_json::json!([]);
        tsa.trust_in(&mut root);
        serde_json::to_string_pretty(&root).expect("serialize a trusted root")
    }

    /// The trusted root as sigstore-trust-root parses it.
    pub fn trusted_root(&self) -> TrustedRoot {
        TrustedRoot::from_json(&self.trusted_root_json()).expect("the test trusted root parses")
    }

    /// A sigstore-verify verifier that trusts this Sigstore only.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(&self.trusted_root()).expect("sigstore-verify accepts the test trusted root")
    }

    /// Writes `trusted_root.json` into `dir`; returns its path.
    pub fn write_trusted_root(&self, dir: &Path) -> PathBuf {
        let path = dir.join("trusted_root.json");
        std::fs::write(&path, self.trusted_root_json()).expect("write trusted_root.json");
        path
    }

    /// A leaf for `identity` from OIDC `issuer`, with `claims` (`(N, value)` for
    /// `1.3.6.1.4.1.57264.1.N`), valid from `not_before` to `not_after`, with an SCT from this
    /// Sigstore's CT log.
    pub fn issue_leaf(
        &self,
        identity: SanKind,
        issuer: &str,
        claims: &[(u64, &str)],
        not_before: i64,
        not_after: i64,
    ) -> Leaf {
        let request = claims
            .iter()
            .fold(LeafRequest::new(identity, issuer), |r, (n, v)| r.claim(*n, v))
            .valid(not_before, not_after);
        self.issue(&request)
    }

    /// A Fulcio-like leaf: valid for 10 minutes from a minute ago.
    pub fn issue_fulcio_leaf(&self, identity: SanKind, issuer: &str) -> Leaf {
        self.issue(&LeafRequest::new(identity, issuer))
    }

    /// A leaf that expired long ago: valid for 10 minutes starting `days_ago` days before now.
    /// It verifies only with a SET whose integrated time lies in that window.
    pub fn issue_expired_leaf(&self, identity: SanKind, issuer: &str, days_ago: i64) -> Leaf {
        let not_before = unix_now() - days_ago * 86_400;
        self.issue(&LeafRequest::new(identity, issuer).valid(not_before, not_before + fulcio::LEAF_LIFETIME_SECS))
    }

    /// A leaf for `request`, with an SCT from this Sigstore's CT log.
    pub fn issue(&self, request: &LeafRequest) -> Leaf {
        self.fulcio.issue(Some(&self.ctlog), request)
    }
}

/// The current time, unix seconds.
pub fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(since.as_secs()).expect("a time before 2^63")
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A PEM block: `-----BEGIN <label>-----`, base64 in 64-column lines, `-----END <label>-----`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Unix second `secs` as RFC 3339 UTC (`2020-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(CA_EPOCH), "2020-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_674_247_893), "2023-01-20T20:51:33Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let text = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert!(text.ends_with('\n'));
    }
}
