//! A test Certificate Transparency log: an ECDSA P-256 key that issues RFC 6962 §3.2 signed
//! certificate timestamps (SCTs) for precertificates, the way Fulcio embeds one in every leaf.

use sigstore_crypto::KeyPair;

use super::sha256;

/// RFC 6962 `SignatureType.certificate_timestamp`.
const CERTIFICATE_TIMESTAMP: u8 = 0;
/// RFC 6962 `LogEntryType.precert_entry`.
const PRECERT_ENTRY: u16 = 1;
/// RFC 5246 `HashAlgorithm.sha256`, `SignatureAlgorithm.ecdsa`.
const SHA256: u8 = 4;
const ECDSA: u8 = 3;

/// A CT log of the test Sigstore: what `ctlogs` of the trusted root names.
#[derive(Debug)]
pub struct CtLog {
    key: KeyPair,
    spki: Vec<u8>,
}

// === impl CtLog ===

impl CtLog {
    pub fn generate() -> CtLog {
        let key = KeyPair::generate_ecdsa_p256().expect("generate the CT log key");
        let spki = key.public_key_der().expect("encode the CT log key").as_bytes().to_vec();
        CtLog { key, spki }
    }

    /// The log's public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// RFC 6962 log ID: SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn log_id(&self) -> [u8; 32] {
        sha256(&self.spki)
    }

    /// A v1 SCT (the TLS `SignedCertificateTimestamp` structure) for a precertificate entry:
    /// the log's signature over `issuer_key_hash = sha256(issuer_spki)` and `tbs` (the
    /// TBSCertificate without the SCT list extension), at `timestamp_ms`.
    pub fn sign_precert(&self, issuer_spki: &[u8], tbs: &[u8], timestamp_ms: u64) -> Vec<u8> {
        assert!(tbs.len() < 1 << 24, "a TBSCertificate fits a 24-bit length");
        let mut signed = vec![0 /* v1 */, CERTIFICATE_TIMESTAMP];
        signed.extend_from_slice(&timestamp_ms.to_be_bytes());
        signed.extend_from_slice(&PRECERT_ENTRY.to_be_bytes());
        signed.extend_from_slice(&sha256(issuer_spki));
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(tbs);
        signed.extend_from_slice(&0u16.to_be_bytes()); // no CtExtensions
        let signature = self.key.sign(&signed).expect("sign the SCT");
        let signature = signature.as_bytes();

        let mut sct = vec![0 /* v1 */];
        sct.extend_from_slice(&self.log_id());
        sct.extend_from_slice(&timestamp_ms.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes()); // no CtExtensions
        sct.extend_from_slice(&[SHA256, ECDSA]);
        sct.extend_from_slice(&(signature.len() as u16).to_be_bytes());
        sct.extend_from_slice(signature);
        sct
    }
}

/// The content of the SCT list extension (OID 1.3.6.1.4.1.11129.2.4.2): a DER OCTET STRING
/// holding the TLS `SignedCertificateTimestampList` of `scts`.
pub fn sct_list_extension(scts: &[Vec<u8>]) -> Vec<u8> {
    let mut list = Vec::new();
    for sct in scts {
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(sct);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&list);
    super::der::octet_string(&out)
}
