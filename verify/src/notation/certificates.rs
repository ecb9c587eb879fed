//! The certificate chain of an envelope: the signing key's algorithm, the certificate
//! requirements of signature-specification §Certificate Requirements, validity, and the path
//! to the trust store.

use std::time::Duration;

use aws_lc_rs::signature::{self as aws, UnparsedPublicKey, VerificationAlgorithm};
use const_oid::{db::rfc5280, db::rfc5912, ObjectIdentifier};
use der::{Any, Decode};
use jiff::Timestamp;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{anchor_from_trusted_cert, aws_lc_rs as alg, EndEntityCert, KeyUsage};
use x509_cert::{
    ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage as KeyUsageExt, KeyUsages},
    Certificate,
};

use super::{envelope::Algorithm, identity::Subject, NotationRefusal};

const ECDSA_WITH_SHA_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
const ID_KP_ANY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
const SECP256R1: ObjectIdentifier = rfc5912::SECP_256_R_1;
const SECP384R1: ObjectIdentifier = rfc5912::SECP_384_R_1;
const SECP521R1: ObjectIdentifier = rfc5912::SECP_521_R_1;
/// Key usages a code-signing leaf must not have (signature-specification, leaf key usage).
const FORBIDDEN_LEAF_USAGES: [KeyUsages; 7] = [
    KeyUsages::KeyEncipherment,
    KeyUsages::DataEncipherment,
    KeyUsages::KeyAgreement,
    KeyUsages::KeyCertSign,
    KeyUsages::EncipherOnly,
    KeyUsages::DecipherOnly,
    KeyUsages::CRLSign,
];

/// The signatures a chain's certificates may carry: no SHA-1 (signature-specification §Other
/// requirements), P-521 included since the specification allows P-521 keys.
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    alg::ECDSA_P256_SHA256,
    alg::ECDSA_P256_SHA384,
    alg::ECDSA_P256_SHA512,
    alg::ECDSA_P384_SHA256,
    alg::ECDSA_P384_SHA384,
    alg::ECDSA_P384_SHA512,
    alg::ECDSA_P521_SHA256,
    alg::ECDSA_P521_SHA384,
    alg::ECDSA_P521_SHA512,
    alg::RSA_PKCS1_2048_8192_SHA256,
    alg::RSA_PKCS1_2048_8192_SHA384,
    alg::RSA_PKCS1_2048_8192_SHA512,
    alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// An envelope's certificates, the signing certificate first, each parsed.
pub(super) struct Chain {
    der: Vec<Vec<u8>>,
    certificates: Vec<Certificate>,
}

// === impl Chain ===

impl Chain {
    pub fn parse(der: &[Vec<u8>]) -> Result<Chain, NotationRefusal> {
        let certificates = der
            .iter()
            .map(|c| Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NotationRefusal::Malformed(format!("certificate: {e}")))?;
        if certificates.is_empty() {
            return Err(NotationRefusal::Malformed("no certificate".into()));
        }
        Ok(Chain {
            der: der.to_vec(),
            certificates,
        })
    }

    fn leaf(&self) -> &Certificate {
        &self.certificates[0]
    }

    pub fn leaf_subject(&self) -> Subject {
        Subject::of(&self.leaf().tbs_certificate.subject)
    }

    /// The signature over `signed` verifies with the signing certificate's key, and `claimed`
    /// is the one algorithm the specification assigns that key (no algorithm substitution).
    pub fn verify_signature(&self, claimed: Algorithm, signed: &[u8], signature: &[u8]) -> Result<(), NotationRefusal> {
        let spki = &self.leaf().tbs_certificate.subject_public_key_info;
        let (keyed, _) = key_algorithm(spki)?;
        if keyed != claimed {
            return Err(NotationRefusal::Algorithm(format!(
                "the envelope says {} but the signing key calls for {}",
                claimed.name(),
                keyed.name()
            )));
        }
        let algorithm: &'static dyn VerificationAlgorithm = match keyed {
            Algorithm::Ps256 => &aws::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &aws::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &aws::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 => &aws::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &aws::ECDSA_P384_SHA384_FIXED,
            Algorithm::Es512 => &aws::ECDSA_P521_SHA512_FIXED,
        };
        UnparsedPublicKey::new(algorithm, spki.subject_public_key.raw_bytes())
            .verify(signed, signature)
            .map_err(|_| NotationRefusal::BadSignature)
    }

    /// signature-specification §Certificate Requirements for a code-signing chain: ordered
    /// from the signing certificate to a root; CAs with critical basicConstraints `cA` and
    /// critical keyUsage `keyCertSign`; the leaf with critical keyUsage `digitalSignature` and
    /// no other purpose; no SHA-1 signatures; keys of at least RSA 2048 or P-256.
    ///
    /// pullgate also requires the leaf's extendedKeyUsage to name code signing, which the
    /// specification leaves optional: a certificate issued for no purpose signs no image.
    pub fn check_requirements(&self) -> Result<(), NotationRefusal> {
        let fail = |i: usize, what: &str| Err(NotationRefusal::Certificate(format!("certificate {i}: {what}")));
        for (i, cert) in self.certificates.iter().enumerate() {
            let signature_oid = cert.signature_algorithm.oid;
            if signature_oid == rfc5912::SHA_1_WITH_RSA_ENCRYPTION || signature_oid == ECDSA_WITH_SHA_1 {
                return fail(i, "signed with SHA-1");
            }
            if let Err(why) = key_strength(&cert.tbs_certificate.subject_public_key_info) {
                return fail(i, &why);
            }
            let tbs = &cert.tbs_certificate;
            match self.certificates.get(i + 1) {
                Some(issuer) if issuer.tbs_certificate.subject != tbs.issuer => {
                    return fail(i, "not followed by its issuer")
                }
                None if tbs.issuer != tbs.subject => return fail(i, "the chain does not end with a root"),
                _ => {}
            }
            let usage = match extension::<KeyUsageExt>(cert) {
                Ok(Some((true, usage))) => usage,
                Ok(_) => return fail(i, "keyUsage is absent or not critical"),
                Err(why) => return fail(i, &why),
            };
            let constraints = match extension::<BasicConstraints>(cert) {
                Ok(constraints) => constraints,
                Err(why) => return fail(i, &why),
            };
            if i == 0 {
                if !usage.digital_signature() {
                    return fail(i, "keyUsage lacks digitalSignature");
                }
                if FORBIDDEN_LEAF_USAGES.iter().any(|u| usage.0.contains(*u)) {
                    return fail(i, "keyUsage allows more than signing");
                }
                if constraints.is_some_and(|(_, c)| c.ca) {
                    return fail(i, "the signing certificate is a CA");
                }
                let purposes = match extension::<ExtendedKeyUsage>(cert) {
                    Ok(Some((_, purposes))) => purposes.0,
                    Ok(None) => return fail(i, "no extendedKeyUsage (code signing is required)"),
                    Err(why) => return fail(i, &why),
                };
                if !purposes.contains(&rfc5280::ID_KP_CODE_SIGNING) {
                    return fail(i, "extendedKeyUsage lacks codeSigning");
                }
                let forbidden = [
                    ID_KP_ANY,
                    rfc5280::ID_KP_SERVER_AUTH,
                    rfc5280::ID_KP_CLIENT_AUTH,
                    rfc5280::ID_KP_EMAIL_PROTECTION,
                    rfc5280::ID_KP_TIME_STAMPING,
                    rfc5280::ID_KP_OCSP_SIGNING,
                ];
                if purposes.iter().any(|p| forbidden.contains(p)) {
                    return fail(i, "extendedKeyUsage names a purpose besides code signing");
                }
            } else {
                if !matches!(constraints, Some((true, BasicConstraints { ca: true, .. }))) {
                    return fail(i, "a CA without critical basicConstraints cA");
                }
                if !usage.key_cert_sign() {
                    return fail(i, "a CA without keyUsage keyCertSign");
                }
            }
        }
        Ok(())
    }

    /// Some certificate of the chain is in `trust_store`, byte for byte, as Notation compares.
    pub fn check_in_store(&self, trust_store: &[Vec<u8>]) -> Result<(), NotationRefusal> {
        if !self.der.iter().any(|c| trust_store.contains(c)) {
            return Err(NotationRefusal::Untrusted(
                "no certificate of the chain is in the trust store".into(),
            ));
        }
        Ok(())
    }

    /// The signing certificate chains to a trust store certificate at `at`: signatures, path
    /// length, name constraints, and no CA that excludes code signing.
    pub fn check_path(&self, trust_store: &[Vec<u8>], at: Timestamp) -> Result<(), NotationRefusal> {
        let trusted: Vec<CertificateDer<'_>> = trust_store.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let anchors: Vec<_> = trusted
            .iter()
            .filter_map(|c| anchor_from_trusted_cert(c).ok())
            .collect();
        let leaf = CertificateDer::from(self.der[0].as_slice());
        let leaf = EndEntityCert::try_from(&leaf).map_err(|e| NotationRefusal::Untrusted(e.to_string()))?;
        let intermediates: Vec<_> = self.der[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let seconds =
            u64::try_from(at.as_second()).map_err(|_| NotationRefusal::Untrusted("a time before 1970".into()))?;
        leaf.verify_for_usage(
            CHAIN_ALGORITHMS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
            // webpki applies this to every certificate of the path: a CA that limits its
            // purposes must allow code signing. The leaf's own EKU is checked in
            // check_requirements, where it is required.
            KeyUsage::required_if_present(rfc5280::ID_KP_CODE_SIGNING.as_bytes()),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| NotationRefusal::Untrusted(e.to_string()))
    }

    /// The first moment a certificate of the chain is no longer valid (the second after the
    /// earliest notAfter).
    pub fn expires(&self) -> Timestamp {
        let earliest = self
            .certificates
            .iter()
            .map(|c| c.tbs_certificate.validity.not_after.to_unix_duration().as_secs())
            .min()
            .unwrap_or(0);
        i64::try_from(earliest.saturating_add(1))
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(Timestamp::MAX)
    }

    /// Every certificate of the chain is valid from `from` through `to`; `at` says when, for
    /// the refusal.
    pub fn check_valid(&self, from: Timestamp, to: Timestamp, at: impl Fn() -> String) -> Result<(), NotationRefusal> {
        for (i, cert) in self.certificates.iter().enumerate() {
            let validity = &cert.tbs_certificate.validity;
            let second = |t: x509_cert::time::Time| t.to_unix_duration().as_secs();
            let (not_before, not_after) = (second(validity.not_before), second(validity.not_after));
            let (from, to) = (from.as_second(), to.as_second());
            if from < 0 || (from as u64) < not_before {
                return Err(NotationRefusal::NotValid {
                    at: at(),
                    why: format!("certificate {i} is not valid before {}", display(not_before)),
                });
            }
            if (to as u64) > not_after {
                return Err(NotationRefusal::NotValid {
                    at: at(),
                    why: format!("certificate {i} expired at {}", display(not_after)),
                });
            }
        }
        Ok(())
    }
}

fn display(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| seconds.to_string(), |t| t.to_string())
}

/// The one algorithm the specification assigns the key (signature-specification §Algorithm
/// Selection), with the key's size in bits.
fn key_algorithm(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<(Algorithm, usize), NotationRefusal> {
    let refuse = |what: String| Err(NotationRefusal::Algorithm(what));
    match spki.algorithm.oid {
        rfc5912::RSA_ENCRYPTION => match rsa_bits(spki.subject_public_key.raw_bytes()) {
            Some(2048) => Ok((Algorithm::Ps256, 2048)),
            Some(3072) => Ok((Algorithm::Ps384, 3072)),
            Some(4096) => Ok((Algorithm::Ps512, 4096)),
            Some(bits) => refuse(format!("an RSA key of {bits} bits (2048, 3072 or 4096 are allowed)")),
            None => refuse("an unreadable RSA key".into()),
        },
        rfc5912::ID_EC_PUBLIC_KEY => match curve(spki) {
            Some(SECP256R1) => Ok((Algorithm::Es256, 256)),
            Some(SECP384R1) => Ok((Algorithm::Es384, 384)),
            Some(SECP521R1) => Ok((Algorithm::Es512, 521)),
            _ => refuse("an EC key on a curve other than P-256, P-384 or P-521".into()),
        },
        other => refuse(format!("a key of algorithm {other}")),
    }
}

/// Key length requirements for any certificate of a chain: RSA of 2048 bits or more, EC on
/// P-256, P-384 or P-521.
fn key_strength(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<(), String> {
    match spki.algorithm.oid {
        rfc5912::RSA_ENCRYPTION => match rsa_bits(spki.subject_public_key.raw_bytes()) {
            Some(bits) if bits >= 2048 => Ok(()),
            _ => Err("an RSA key shorter than 2048 bits".into()),
        },
        rfc5912::ID_EC_PUBLIC_KEY if matches!(curve(spki), Some(SECP256R1 | SECP384R1 | SECP521R1)) => Ok(()),
        other => Err(format!("a key of algorithm {other} or an unsupported curve")),
    }
}

fn curve(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Option<ObjectIdentifier> {
    spki.algorithm.parameters.as_ref()?.decode_as().ok()
}

/// The modulus length of an RSAPublicKey (`SEQUENCE { modulus INTEGER, exponent INTEGER }`).
fn rsa_bits(key: &[u8]) -> Option<usize> {
    let fields = Vec::<Any>::from_der(key).ok()?;
    let modulus = fields.first()?.value();
    let modulus = &modulus[modulus.iter().position(|b| *b != 0)?..];
    Some(modulus.len() * 8 - modulus[0].leading_zeros() as usize)
}

/// The one extension of type `E` in `cert`, with its criticality; two are refused (RFC 5280
/// §4.2).
fn extension<E>(cert: &Certificate) -> Result<Option<(bool, E)>, String>
where
    E: const_oid::AssociatedOid + for<'a> Decode<'a>,
{
    let mut found = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == E::OID);
    let Some(ext) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(format!("extension {} appears twice", E::OID));
    }
    let value = E::from_der(ext.extn_value.as_bytes()).map_err(|e| format!("extension {}: {e}", E::OID))?;
    Ok(Some((ext.critical, value)))
}
