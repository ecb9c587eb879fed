//! Fulcio signing certificates, checked offline at a signing time that is already verified.
//!
//! `sigstore-verify` checks a certificate only at a time it established itself, and it cannot
//! read the Rekor `intoto` v0.0.1 entries of legacy cosign `.att` attestations. Once our own code
//! has verified such an entry's SET, its integrated time is trusted, and this module checks the
//! certificate at that time the way a Sigstore client does: its validity window, its chain to a
//! Fulcio CA of the trusted root valid then (with the code-signing EKU), and an embedded SCT from
//! a CT log the root names. Everything the certificate brings is size-bounded before it is parsed.

use std::time::Duration;

use const_oid::{
    db::{rfc5280::ID_CE_SUBJECT_ALT_NAME, rfc5912::ID_KP_CODE_SIGNING, rfc6962::CT_PRECERT_SCTS},
    ObjectIdentifier,
};
use jiff::Timestamp;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigstore_crypto::{x509::parse_certificate_info, SigningScheme, VerificationKey, WEBPKI_VERIFICATION_ALGS};
use sigstore_trust_root::{CertificateAuthority, TrustedRoot};
use sigstore_types::{DerCertificate, SignatureBytes};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::{
    der::{
        asn1::{OctetString, Utf8StringRef},
        Decode, Encode,
    },
    ext::pkix::{name::GeneralName, SubjectAltName},
    Certificate,
};

/// What a verified certificate says, for matching against a keyless authority.
pub use sigstore_crypto::CertificateInfo;

use super::TrustMaterial;

#[cfg(test)]
mod tests;

/// Fulcio's certificates are about 1 KiB; one this large is not one of them.
const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Fulcio's chains have one intermediate; more would only make path building expensive.
const MAX_INTERMEDIATES: usize = 8;
/// Fulcio embeds one SCT; a list longer than this is refused rather than tried one by one.
const MAX_SCTS: usize = 16;

/// RFC 6962 §3.2 `Version.v1`, `SignatureType.certificate_timestamp`, `LogEntryType.precert_entry`.
const SCT_V1: u8 = 0;
const CERTIFICATE_TIMESTAMP: u8 = 0;
const PRECERT_ENTRY: u16 = 1;
/// RFC 5246 §7.4.1.4.1 `HashAlgorithm` and `SignatureAlgorithm` values an SCT may name.
const SHA256: u8 = 4;
const SHA384: u8 = 5;
const SHA512: u8 = 6;
const RSA: u8 = 1;
const ECDSA: u8 = 3;

/// Checks `leaf` as a Fulcio signing certificate at `at`, a signing time the caller has already
/// verified (a SET's integrated time), against the node's trusted root:
/// - `at` lies within the leaf's validity;
/// - the leaf chains, at `at` and for code signing, to the last certificate of a certificate
///   authority whose `validFor` covers `at`; the authority's other certificates and
///   `intermediates` (from the layer's chain annotation) may complete the path, never end it;
/// - an SCT embedded in the leaf verifies with a CT log key of the trusted root, when the root
///   lists CT logs.
///
/// Returns what the certificate says about its subject, for the caller's identity match.
pub fn verify_signing_certificate(
    trust: &TrustMaterial,
    leaf: &DerCertificate,
    intermediates: &[DerCertificate],
    at: Timestamp,
) -> Result<CertificateInfo, String> {
    check_bounds(leaf, intermediates)?;
    let info = parse_certificate_info(leaf).map_err(|e| format!("signing certificate does not parse: {e}"))?;
    if at < info.not_before || at > info.not_after {
        return Err(format!(
            "signing certificate was not valid at {at}: valid from {} to {}",
            info.not_before, info.not_after
        ));
    }
    let issuer_spki = verify_chain(trust.root(), leaf, intermediates, at)?;
    verify_embedded_sct(trust.root(), leaf, &issuer_spki)?;
    Ok(info)
}

/// Fulcio's username identity: a SubjectAltName otherName `1.3.6.1.4.1.57264.1.7` holding a
/// UTF8String.
const FULCIO_USERNAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

/// The one identity a signing certificate names: its SubjectAltName must hold exactly one
/// name, an email, a URI or Fulcio's username otherName. Fulcio issues one; cosign matches a
/// policy against every SAN, so with several any would do, and with none nothing should. Both
/// are refused rather than read as the first SAN, or as `""` that `subjectRegExp: x*` accepts.
pub fn signing_identity(leaf: &DerCertificate) -> Result<String, String> {
    let cert =
        Certificate::from_der(leaf.as_bytes()).map_err(|e| format!("signing certificate does not parse: {e}"))?;
    let mut sans = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == ID_CE_SUBJECT_ALT_NAME);
    let (Some(extension), None) = (sans.next(), sans.next()) else {
        return Err("signing certificate must have exactly one SubjectAltName extension".into());
    };
    let names = SubjectAltName::from_der(extension.extn_value.as_bytes())
        .map_err(|e| format!("signing certificate's SubjectAltName is malformed: {e}"))?;
    let [name] = names.0.as_slice() else {
        return Err(format!(
            "signing certificate names {} identities in its SubjectAltName; exactly one is required",
            names.0.len()
        ));
    };
    match name {
        GeneralName::Rfc822Name(email) => Ok(email.to_string()),
        GeneralName::UniformResourceIdentifier(uri) => Ok(uri.to_string()),
        GeneralName::OtherName(other) if other.type_id == FULCIO_USERNAME => other
            .value
            .decode_as::<Utf8StringRef<'_>>()
            .map(|name| name.as_str().to_string())
            .map_err(|e| format!("signing certificate's username SAN is malformed: {e}")),
        _ => Err("signing certificate's SubjectAltName is not an email, URI or Fulcio username".into()),
    }
}

/// Refuses certificate material too large to be Fulcio's before anything parses it.
fn check_bounds(leaf: &DerCertificate, intermediates: &[DerCertificate]) -> Result<(), String> {
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(format!(
            "{} intermediate certificates, more than the {MAX_INTERMEDIATES} allowed",
            intermediates.len()
        ));
    }
    let all = std::iter::once(("signing certificate", leaf))
        .chain(intermediates.iter().map(|cert| ("intermediate certificate", cert)));
    for (what, cert) in all {
        let size = cert.as_bytes().len();
        if size > MAX_CERTIFICATE_BYTES {
            return Err(format!(
                "{what} is {size} bytes, more than the {MAX_CERTIFICATE_BYTES} allowed"
            ));
        }
    }
    Ok(())
}

/// Finds a verified path from `leaf` to a certificate authority valid at `at`. Returns the DER
/// SubjectPublicKeyInfo of the certificate that issued the leaf on that path: the SCT names its
/// issuer by the hash of that key, so it must come from the path that was verified.
fn verify_chain(
    root: &TrustedRoot,
    leaf: &DerCertificate,
    intermediates: &[DerCertificate],
    at: Timestamp,
) -> Result<Vec<u8>, String> {
    let seconds = u64::try_from(at.as_second()).map_err(|_| format!("signing time {at} is before 1970"))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(seconds));
    let leaf_der = CertificateDer::from(leaf.as_bytes());
    let end_entity =
        EndEntityCert::try_from(&leaf_der).map_err(|e| format!("signing certificate does not parse: {e}"))?;

    let mut failure = None;
    let authorities = root
        .certificate_authorities
        .iter()
        .filter(|ca| ca.valid_for.is_none_or(|window| window.contains(at)));
    for ca in authorities {
        match issuer_under(ca, &end_entity, intermediates, time) {
            Ok(issuer_spki) => return Ok(issuer_spki),
            Err(e) => failure = Some(e),
        }
    }
    Err(match failure {
        Some(e) => format!("signing certificate does not chain to a certificate authority valid at {at}: {e}"),
        None => format!("the trusted root names no certificate authority valid at {at}"),
    })
}

/// Verifies `end_entity` under one certificate authority: its last certificate is the only
/// anchor, its other certificates and the caller's `intermediates` are candidates for the path.
fn issuer_under(
    ca: &CertificateAuthority,
    end_entity: &EndEntityCert<'_>,
    intermediates: &[DerCertificate],
    time: UnixTime,
) -> Result<Vec<u8>, String> {
    let Some((anchor, ca_intermediates)) = ca.cert_chain.certificates.split_last() else {
        return Err("a certificate authority has an empty chain".into());
    };
    let anchor_der = CertificateDer::from(anchor.raw_bytes.as_bytes());
    let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)
        .map_err(|e| format!("unusable certificate authority certificate: {e}"))?];
    let candidates: Vec<CertificateDer<'_>> = ca_intermediates
        .iter()
        .map(|entry| entry.raw_bytes.as_bytes())
        .chain(intermediates.iter().map(DerCertificate::as_bytes))
        .map(CertificateDer::from)
        .collect();
    let path = end_entity
        .verify_for_usage(
            WEBPKI_VERIFICATION_ALGS,
            &anchors,
            &candidates,
            time,
            KeyUsage::required(ID_KP_CODE_SIGNING.as_bytes()),
            None,
            None,
        )
        .map_err(|e| e.to_string())?;
    // Intermediates run from the leaf up, so the first is the leaf's issuer; with none, the
    // anchor signed the leaf itself.
    Ok(match path.intermediate_certificates().next() {
        Some(issuer) => issuer.subject_public_key_info().as_ref().to_vec(),
        None => webpki::spki_for_anchor(path.anchor()).as_ref().to_vec(),
    })
}

/// Requires an SCT embedded in `leaf` that a CT log of the trusted root signed: Fulcio logs every
/// certificate it issues, and a certificate missing from CT could have been issued in secret.
/// A root that lists no CT log (GitHub's Fulcio, say) asks for none (SPEC §4).
fn verify_embedded_sct(root: &TrustedRoot, leaf: &DerCertificate, issuer_spki: &[u8]) -> Result<(), String> {
    if root.ctlogs.is_empty() {
        return Ok(());
    }
    let cert =
        Certificate::from_der(leaf.as_bytes()).map_err(|e| format!("signing certificate does not parse: {e}"))?;
    let (list, precert_tbs) = split_sct_list(&cert)?;
    let issuer_key_hash = sigstore_crypto::sha256(issuer_spki);
    let mut reasons = Vec::new();
    for entry in sct_list_entries(&list)? {
        let verified = parse_sct(entry)
            .ok_or_else(|| "an SCT is not a v1 SCT".to_string())
            .and_then(|sct| verify_sct(root, &sct, issuer_key_hash.as_bytes(), &precert_tbs));
        match verified {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(e),
        }
    }
    Err(format!(
        "no SCT of the signing certificate verifies: {}",
        reasons.join("; ")
    ))
}

/// The TLS-encoded SCT list `cert` embeds, and its TBSCertificate without that extension: what
/// a CT log signs for a precertificate (RFC 6962 §3.2).
fn split_sct_list(cert: &Certificate) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut tbs = cert.tbs_certificate.clone();
    let (scts, others): (Vec<_>, Vec<_>) = tbs
        .extensions
        .take()
        .unwrap_or_default()
        .into_iter()
        .partition(|extension| extension.extn_id == CT_PRECERT_SCTS);
    let extension = match <[_; 1]>::try_from(scts) {
        Ok([extension]) => extension,
        Err(found) if found.is_empty() => return Err("signing certificate embeds no SCT".into()),
        Err(_) => return Err("signing certificate has more than one SCT list extension".into()),
    };
    // An X.509 Extensions field holds at least one extension; with none left, it is absent.
    tbs.extensions = (!others.is_empty()).then_some(others);
    let precert_tbs = tbs
        .to_der()
        .map_err(|e| format!("cannot re-encode the signing certificate: {e}"))?;
    // The extension's value is itself a DER OCTET STRING around the TLS list.
    let list = OctetString::from_der(extension.extn_value.as_bytes())
        .map_err(|e| format!("signing certificate's SCT list extension is malformed: {e}"))?;
    Ok((list.into_bytes(), precert_tbs))
}

/// The entries of a TLS `SignedCertificateTimestampList`, each one serialized SCT.
fn sct_list_entries(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    const MALFORMED: &str = "signing certificate's SCT list is malformed";
    let mut outer = Tls(bytes);
    let list = outer.vec16().filter(|_| outer.is_empty()).ok_or(MALFORMED)?;
    let mut list = Tls(list);
    let mut entries = Vec::new();
    while !list.is_empty() {
        if entries.len() == MAX_SCTS {
            return Err(format!("signing certificate embeds more than {MAX_SCTS} SCTs"));
        }
        entries.push(list.vec16().ok_or(MALFORMED)?);
    }
    if entries.is_empty() {
        return Err("signing certificate's SCT list is empty".into());
    }
    Ok(entries)
}

/// One v1 `SignedCertificateTimestamp` (RFC 6962 §3.2), borrowed from the certificate.
struct Sct<'a> {
    log_id: &'a [u8],
    timestamp: u64,
    extensions: &'a [u8],
    hash_algorithm: u8,
    signature_algorithm: u8,
    signature: &'a [u8],
}

/// Parses one serialized SCT; `None` unless it is exactly a v1 SCT, since other versions may
/// be laid out differently.
fn parse_sct(bytes: &[u8]) -> Option<Sct<'_>> {
    let mut tls = Tls(bytes);
    if tls.u8()? != SCT_V1 {
        return None;
    }
    let sct = Sct {
        log_id: tls.bytes(32)?,
        timestamp: tls.u64()?,
        extensions: tls.vec16()?,
        hash_algorithm: tls.u8()?,
        signature_algorithm: tls.u8()?,
        signature: tls.vec16()?,
    };
    tls.is_empty().then_some(sct)
}

/// Verifies `sct` over the precertificate with the key of the CT log it names, as that key was
/// trusted when the log issued the SCT.
fn verify_sct(root: &TrustedRoot, sct: &Sct<'_>, issuer_key_hash: &[u8], precert_tbs: &[u8]) -> Result<(), String> {
    let mut logs = root
        .ctlogs
        .iter()
        .filter(|log| log.log_id.key_id.as_bytes() == sct.log_id)
        .peekable();
    if logs.peek().is_none() {
        return Err("an SCT is from a CT log the trusted root does not name".into());
    }
    let issued = i64::try_from(sct.timestamp)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or("an SCT has an out-of-range timestamp")?;
    let log = logs
        .find(|log| log.public_key.valid_for.is_none_or(|window| window.contains(issued)))
        .ok_or_else(|| format!("an SCT is from a CT log whose key was not valid at {issued}"))?;
    let scheme = sct_scheme(sct.hash_algorithm, sct.signature_algorithm)?;
    let key = VerificationKey::from_der(&log.public_key.raw_bytes, scheme)
        .map_err(|e| format!("an SCT's CT log key does not fit its algorithm: {e}"))?;
    let signed = precert_signed_data(sct, issuer_key_hash, precert_tbs)?;
    key.verify(&signed, &SignatureBytes::new(sct.signature.to_vec()))
        .map_err(|_| "an SCT's signature does not verify".to_string())
}

/// The signing scheme an SCT's `SignatureAndHashAlgorithm` names, among those CT logs use.
fn sct_scheme(hash: u8, signature: u8) -> Result<SigningScheme, String> {
    match (hash, signature) {
        (SHA256, ECDSA) => Ok(SigningScheme::EcdsaP256Sha256),
        (SHA384, ECDSA) => Ok(SigningScheme::EcdsaP384Sha384),
        (SHA256, RSA) => Ok(SigningScheme::RsaPkcs1Sha256),
        (SHA384, RSA) => Ok(SigningScheme::RsaPkcs1Sha384),
        (SHA512, RSA) => Ok(SigningScheme::RsaPkcs1Sha512),
        _ => Err(format!(
            "an SCT has unsupported algorithms (hash {hash}, signature {signature})"
        )),
    }
}

/// The bytes a CT log signs for a precertificate SCT (RFC 6962 §3.2 `digitally-signed struct`):
/// version, signature type, timestamp, entry type, the issuer's key hash, the TBSCertificate
/// with a 24-bit length and the SCT's extensions with a 16-bit length.
fn precert_signed_data(sct: &Sct<'_>, issuer_key_hash: &[u8], precert_tbs: &[u8]) -> Result<Vec<u8>, String> {
    let tbs_len = u32::try_from(precert_tbs.len())
        .ok()
        .filter(|len| *len < 1 << 24)
        .ok_or("the precertificate is too large for an SCT")?;
    let [_, tbs_len @ ..] = tbs_len.to_be_bytes();
    let extensions_len = u16::try_from(sct.extensions.len()).map_err(|_| "an SCT's extensions are too large")?;
    let mut data = Vec::with_capacity(48 + precert_tbs.len() + sct.extensions.len());
    data.extend_from_slice(&[SCT_V1, CERTIFICATE_TIMESTAMP]);
    data.extend_from_slice(&sct.timestamp.to_be_bytes());
    data.extend_from_slice(&PRECERT_ENTRY.to_be_bytes());
    data.extend_from_slice(issuer_key_hash);
    data.extend_from_slice(&tbs_len);
    data.extend_from_slice(precert_tbs);
    data.extend_from_slice(&extensions_len.to_be_bytes());
    data.extend_from_slice(sct.extensions);
    Ok(data)
}

/// A cursor over TLS-encoded bytes (RFC 5246 §4) that fails instead of reading past the end.
struct Tls<'a>(&'a [u8]);

// === impl Tls ===

impl<'a> Tls<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }

    /// A `opaque<0..2^16-1>`: a 16-bit length, then that many bytes.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_be_bytes(self.bytes(2)?.try_into().ok()?);
        self.bytes(usize::from(len))
    }
}
