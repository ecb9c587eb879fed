//! RFC 3161 timestamps whose genTime has fractional seconds (`…SS.123Z`), which RFC 3161 §2.4.2
//! allows and sigstore-js and sigstore-go accept, but which `sigstore-tsa` 0.15.1 cannot parse
//! (its `der` GeneralizedTime has no fraction), so that one such stamp refuses a whole bundle.
//!
//! Such a token is checked here the way `sigstore-tsa` checks the others, against each TSA of the
//! trusted root in turn: the message imprint is the hash of the signature; the one signer is the
//! authority's own leaf; its signed attributes say TSTInfo and carry the TSTInfo's digest, and
//! its signature over them verifies with the leaf's key; the leaf chains to the authority's root
//! for time stamping at genTime, which the authority's `validFor` covers. Only the reading of
//! genTime differs.
//!
//! Notary Project countersignatures ([`verify_countersignature`]) are checked by the same steps
//! under the Notary Project's rules: the signer's certificate comes from the token and must chain
//! to one of the authority's TSA roots, RSA TSAs count, and genTime carries its accuracy.

use cms::{
    cert::CertificateChoices,
    content_info::ContentInfo,
    signed_data::{SignedData, SignerIdentifier, SignerInfo},
};
use const_oid::ObjectIdentifier;
use der::{
    asn1::{OctetString, OctetStringRef},
    Any, Decode, Encode, Tag, Tagged,
};
use jiff::Timestamp;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigstore_crypto::{verify_signature, KeyAlgorithm};
use sigstore_types::{
    Bundle, DerCertificate, DerPublicKey, HashAlgorithm, SignatureBytes, SignatureContent, TsaAuthority,
};
use webpki::{anchor_from_trusted_cert, EndEntityCert, KeyUsage};
use x509_cert::{
    attr::Attributes,
    ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier},
    Certificate,
};

use super::TrustMaterial;

const ID_SIGNED_DATA: ObjectIdentifier = const_oid::db::rfc5911::ID_SIGNED_DATA;
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = const_oid::db::rfc6268::ID_MESSAGE_DIGEST;
const ID_KP_TIME_STAMPING: ObjectIdentifier = const_oid::db::rfc5280::ID_KP_TIME_STAMPING;
const ID_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// The baseline time-stamp policy of RFC 3628 §5.2, whose accuracy is one second.
const BASELINE_TIME_STAMP_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.2023.1.1");

/// Whose requirements a TSA is held to: Sigstore's (the cosign path, EC keys only, as
/// `sigstore-tsa`) or the Notary Project's (RSA keys too, as the public TSAs Notation users
/// name have; the leaf's EKU critical and time stamping alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    Sigstore,
    Notary,
}

/// A timestamp token read far enough to be checked: its SignedData, and its TSTInfo as signed.
struct Token {
    signed_data: SignedData,
    tst_info: Vec<u8>,
    gen_time: Vec<u8>,
}

/// Whether `token` (a TimeStampResp or TimeStampToken, DER) is one whose genTime has a
/// fraction. A token that does not parse is not: `sigstore-verify` sees it and refuses it.
pub(super) fn has_fractional_gen_time(token: &[u8]) -> bool {
    Token::parse(token).is_ok_and(|t| t.gen_time.contains(&b'.'))
}

/// Verifies `token` over `signature` with the TSAs of the trusted root; returns its genTime.
pub(super) fn verify(token: &[u8], signature: &[u8], authorities: &[TsaAuthority]) -> Result<Timestamp, String> {
    let token = Token::parse(token)?;
    let time = parse_gen_time(&token.gen_time)?;
    token.check_imprint(signature)?;
    let mut last = "the trusted root names no timestamp authority".to_string();
    for authority in authorities {
        match token.check_signer(authority, time, Rules::Sigstore) {
            Ok(()) => return Ok(time),
            Err(why) => last = why,
        }
    }
    Err(last)
}

/// A verified Notary Project countersignature: genTime, and the bounds its accuracy allows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamped {
    pub at: Timestamp,
    pub earliest: Timestamp,
    pub latest: Timestamp,
}

/// Verifies a Notary Project timestamp countersignature (trust-store-trust-policy, Validate
/// Authentic Timestamp): `token` is over `signature`, and its signer — a certificate the token
/// carries, named by the signed signing-certificate-v2 attribute — chains through the token's
/// other certificates to one of `roots` for time stamping at genTime.
pub(crate) fn verify_countersignature(token: &[u8], signature: &[u8], roots: &[Vec<u8>]) -> Result<Stamped, String> {
    let token = Token::parse(token)?;
    let at = parse_gen_time(&token.gen_time)?;
    token.check_imprint(signature)?;
    let carried: Vec<Certificate> = token
        .signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let [signer] = token.signed_data.signer_infos.0.as_slice() else {
        return Err("the token has not exactly one signer".into());
    };
    let leaf = carried
        .iter()
        .find(|c| names(&signer.sid, c))
        .ok_or("the token does not carry its signer's certificate")?;
    let der = |c: &Certificate| {
        c.to_der()
            .map(DerCertificate::new)
            .map_err(|e| format!("TSA certificate: {e}"))
    };
    let intermediates = carried
        .iter()
        .filter(|c| *c != leaf)
        .map(der)
        .collect::<Result<Vec<_>, _>>()?;
    let mut last = "the authority trusts no TSA".to_string();
    for root in roots {
        let authority = TsaAuthority::new(
            der(leaf)?,
            intermediates.clone(),
            DerCertificate::new(root.clone()),
            None,
        );
        match token.check_signer(&authority, at, Rules::Notary) {
            Ok(()) => {
                let accuracy = accuracy(&token.tst_info)?;
                let bound = |t: Result<Timestamp, jiff::Error>| t.map_err(|e| format!("genTime ± accuracy: {e}"));
                return Ok(Stamped {
                    at,
                    earliest: bound(at.checked_sub(accuracy))?,
                    latest: bound(at.checked_add(accuracy))?,
                });
            }
            Err(why) => last = why,
        }
    }
    Err(last)
}

/// The bundle's timestamps whose genTime has a fraction, verified here, and the bundle without
/// them for `sigstore-verify` to check the rest; `None` when it has none.
pub(super) fn set_aside(trust: &TrustMaterial, bundle: &Bundle) -> Result<Option<(Bundle, Vec<Timestamp>)>, String> {
    let stamps = &bundle
        .verification_material
        .timestamp_verification_data
        .rfc3161_timestamps;
    let (fractional, rest): (Vec<_>, Vec<_>) = stamps
        .iter()
        .cloned()
        .partition(|s| has_fractional_gen_time(s.signed_timestamp.as_bytes()));
    if fractional.is_empty() {
        return Ok(None);
    }
    let signature = match &bundle.content {
        SignatureContent::MessageSignature(m) => m.signature.as_bytes(),
        SignatureContent::DsseEnvelope(e) => e.signature.sig.as_bytes(),
        _ => return Err("a bundle without a signature to timestamp".into()),
    };
    let authorities = trust.root().tsa_authorities();
    let times = fractional
        .iter()
        .map(|s| verify(s.signed_timestamp.as_bytes(), signature, &authorities))
        .collect::<Result<_, _>>()?;
    let mut bundle = bundle.clone();
    bundle
        .verification_material
        .timestamp_verification_data
        .rfc3161_timestamps = rest;
    Ok(Some((bundle, times)))
}

// === impl Token ===

impl Token {
    fn parse(der: &[u8]) -> Result<Token, String> {
        let content_info = content_info(der)?;
        if content_info.content_type != ID_SIGNED_DATA {
            return Err("the token is not SignedData".into());
        }
        let signed_data: SignedData = content_info
            .content
            .decode_as()
            .map_err(|e| format!("SignedData: {e}"))?;
        let encapsulated = &signed_data.encap_content_info;
        if encapsulated.econtent_type != ID_CT_TST_INFO {
            return Err("the token does not hold a TSTInfo".into());
        }
        let tst_info = encapsulated
            .econtent
            .as_ref()
            .ok_or("the token's TSTInfo is absent")?
            .value()
            .to_vec();
        // TSTInfo ::= SEQUENCE { version, policy, messageImprint, serialNumber, genTime, … }
        let fields = Vec::<Any>::from_der(&tst_info).map_err(|e| format!("TSTInfo: {e}"))?;
        let gen_time = match fields.get(4) {
            Some(field) if field.tag() == Tag::GeneralizedTime => field.value().to_vec(),
            _ => return Err("TSTInfo has no genTime".into()),
        };
        if fields[0].value() != [1] {
            return Err("TSTInfo is not version 1".into());
        }
        Ok(Token {
            signed_data,
            tst_info,
            gen_time,
        })
    }

    /// The TSTInfo's message imprint is the hash of `signature`.
    fn check_imprint(&self, signature: &[u8]) -> Result<(), String> {
        let fields = Vec::<Any>::from_der(&self.tst_info).map_err(|e| format!("TSTInfo: {e}"))?;
        let imprint = fields
            .get(2)
            .ok_or("TSTInfo has no message imprint")?
            .decode_as::<Vec<Any>>()
            .map_err(|e| format!("messageImprint: {e}"))?;
        let [algorithm, hashed] = imprint.as_slice() else {
            return Err("messageImprint is not an algorithm and a hash".into());
        };
        let algorithm: x509_cert::spki::AlgorithmIdentifierOwned =
            algorithm.decode_as().map_err(|e| format!("messageImprint: {e}"))?;
        let hashed: OctetString = hashed.decode_as().map_err(|e| format!("messageImprint: {e}"))?;
        if digest(&algorithm.oid, signature)?.as_slice() != hashed.as_bytes() {
            return Err("the timestamp is over another signature".into());
        }
        Ok(())
    }

    /// The token is signed by `authority`'s leaf, which chains to its root for time stamping at
    /// `time`, within the authority's validity.
    fn check_signer(&self, authority: &TsaAuthority, time: Timestamp, rules: Rules) -> Result<(), String> {
        let [signer] = self.signed_data.signer_infos.0.as_slice() else {
            return Err("the token has not exactly one signer".into());
        };
        let leaf = Certificate::from_der(authority.leaf.as_bytes()).map_err(|e| format!("TSA certificate: {e}"))?;
        if !names(&signer.sid, &leaf) {
            return Err("the token is signed by another TSA".into());
        }
        let attributes = signer
            .signed_attrs
            .as_ref()
            .ok_or("the token has no signed attributes")?;
        check_attributes(attributes, signer, &self.tst_info)?;
        if rules == Rules::Notary {
            check_notary_leaf(&leaf)?;
            check_signing_certificate(attributes, authority.leaf.as_bytes())?;
        }
        check_signature(signer, attributes, &leaf, rules)?;
        check_chain(authority, time, rules)?;
        if !authority.valid_for.as_ref().is_none_or(|window| window.contains(time)) {
            return Err(format!("the TSA was not trusted at {time}"));
        }
        Ok(())
    }
}

/// The TimeStampToken of `der`: a TimeStampResp (`{status, token}`) or the token itself.
fn content_info(der: &[u8]) -> Result<ContentInfo, String> {
    let fields = Vec::<Any>::from_der(der).map_err(|e| format!("timestamp: {e}"))?;
    match fields.as_slice() {
        [status, token] if status.tag() == Tag::Sequence => {
            // PKIStatusInfo: granted (0) or grantedWithMods (1).
            let status = status.decode_as::<Vec<Any>>().map_err(|e| format!("status: {e}"))?;
            if !status
                .first()
                .is_some_and(|s| s.tag() == Tag::Integer && matches!(s.value(), [0] | [1]))
            {
                return Err("the timestamp request was not granted".into());
            }
            token.decode_as().map_err(|e| format!("TimeStampToken: {e}"))
        }
        _ => ContentInfo::from_der(der).map_err(|e| format!("TimeStampToken: {e}")),
    }
}

/// Whether the SignerInfo's `sid` names `leaf`.
fn names(sid: &SignerIdentifier, leaf: &Certificate) -> bool {
    let tbs = &leaf.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => id.issuer == tbs.issuer && id.serial_number == tbs.serial_number,
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs.extensions.iter().flatten().any(|ext| {
            ext.extn_id == ID_SUBJECT_KEY_IDENTIFIER
                && SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).is_ok_and(|own| &own == ski)
        }),
    }
}

/// The signed attributes say the content is a TSTInfo and carry its digest.
fn check_attributes(attributes: &Attributes, signer: &SignerInfo, tst_info: &[u8]) -> Result<(), String> {
    let value = |oid: ObjectIdentifier, name: &str| -> Result<Vec<u8>, String> {
        let mut found = attributes.iter().filter(|a| a.oid == oid);
        match (found.next(), found.next()) {
            (Some(attribute), None) if attribute.values.len() == 1 => attribute
                .values
                .iter()
                .next()
                .ok_or(format!("no {name} value"))?
                .to_der()
                .map_err(|e| format!("{name}: {e}")),
            _ => Err(format!("not exactly one {name} attribute with one value")),
        }
    };
    let content_type = ObjectIdentifier::from_der(&value(ID_CONTENT_TYPE, "content-type")?)
        .map_err(|e| format!("content-type: {e}"))?;
    if content_type != ID_CT_TST_INFO {
        return Err("the signed content type is not TSTInfo".into());
    }
    let message_digest = value(ID_MESSAGE_DIGEST, "message-digest")?;
    let message_digest = OctetStringRef::from_der(&message_digest).map_err(|e| format!("message-digest: {e}"))?;
    if digest(&signer.digest_alg.oid, tst_info)?.as_slice() != message_digest.as_bytes() {
        return Err("the TSA signed another TSTInfo".into());
    }
    Ok(())
}

/// The signed signing-certificate-v2 attribute (RFC 5816) names `leaf`: its first ESSCertIDv2
/// carries the hash of the signer's certificate, so that no other certificate can stand in for
/// it. The Notary Project requires it (trust-store-trust-policy, Validate Authentic Timestamp).
fn check_signing_certificate(attributes: &Attributes, leaf: &[u8]) -> Result<(), String> {
    let mut found = attributes.iter().filter(|a| a.oid == ID_SIGNING_CERTIFICATE_V2);
    let (Some(attribute), None) = (found.next(), found.next()) else {
        return Err("not exactly one signing-certificate-v2 attribute".into());
    };
    let malformed = |e: der::Error| format!("signing-certificate-v2: {e}");
    let value = attribute
        .values
        .iter()
        .next()
        .ok_or("signing-certificate-v2 has no value")?;
    // SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies OPTIONAL }
    let fields = value.decode_as::<Vec<Any>>().map_err(malformed)?;
    let certs = fields.first().ok_or("signing-certificate-v2 names no certificate")?;
    let ids = certs.decode_as::<Vec<Any>>().map_err(malformed)?;
    // ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT sha256, certHash OCTET STRING, … }
    let id = ids
        .first()
        .ok_or("signing-certificate-v2 names no certificate")?
        .decode_as::<Vec<Any>>()
        .map_err(malformed)?;
    let (algorithm, hash) = match id.as_slice() {
        [hash, ..] if hash.tag() == Tag::OctetString => (const_oid::db::rfc5912::ID_SHA_256, hash),
        [algorithm, hash, ..] => (
            algorithm
                .decode_as::<x509_cert::spki::AlgorithmIdentifierOwned>()
                .map_err(malformed)?
                .oid,
            hash,
        ),
        _ => return Err("an empty ESSCertIDv2".into()),
    };
    let hash: OctetString = hash.decode_as().map_err(malformed)?;
    if digest(&algorithm, leaf)?.as_slice() != hash.as_bytes() {
        return Err("signing-certificate-v2 names another certificate than the signer's".into());
    }
    Ok(())
}

/// The signature over the DER SET OF the signed attributes verifies with the leaf's EC key.
fn check_signature(
    signer: &SignerInfo,
    attributes: &Attributes,
    leaf: &Certificate,
    rules: Rules,
) -> Result<(), String> {
    let signed = attributes.to_der().map_err(|e| format!("signed attributes: {e}"))?;
    let key = DerPublicKey::new(
        leaf.tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("TSA key: {e}"))?,
    );
    let algorithm = KeyAlgorithm::from_spki(&key).map_err(|e| format!("TSA key: {e}"))?;
    let rsa = rules == Rules::Notary && algorithm == KeyAlgorithm::Rsa;
    if !(rsa || matches!(algorithm, KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384)) {
        return Err("the TSA key is not an EC key (nor, for Notary Project signatures, RSA)".into());
    }
    let scheme = algorithm
        .resolve_signing_scheme(hash_algorithm(&signer.digest_alg.oid)?)
        .map_err(|e| format!("TSA signature: {e}"))?;
    verify_signature(
        &key,
        &signed,
        &SignatureBytes::new(signer.signature.as_bytes().to_vec()),
        scheme,
    )
    .map_err(|_| "the TSA signature does not verify".to_string())
}

/// The authority's leaf chains to its root, through its own intermediates only, for time
/// stamping at `time`.
fn check_chain(authority: &TsaAuthority, time: Timestamp, rules: Rules) -> Result<(), String> {
    let leaf = CertificateDer::from(authority.leaf.as_bytes());
    let leaf = EndEntityCert::try_from(&leaf).map_err(|e| format!("TSA certificate: {e}"))?;
    let root = CertificateDer::from(authority.root.as_bytes());
    let anchor = anchor_from_trusted_cert(&root).map_err(|e| format!("TSA root: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = authority
        .intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes()))
        .collect();
    let at = u64::try_from(time.as_second()).map_err(|_| "genTime before 1970".to_string())?;
    leaf.verify_for_usage(
        sigstore_crypto::WEBPKI_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(at)),
        // webpki holds every certificate of the path to this. Under Notary rules a CA need not
        // name time stamping (real TSA intermediates often have no EKU); the leaf's EKU was
        // checked by check_notary_leaf.
        match rules {
            Rules::Sigstore => KeyUsage::required(ID_KP_TIME_STAMPING.as_bytes()),
            Rules::Notary => KeyUsage::required_if_present(ID_KP_TIME_STAMPING.as_bytes()),
        },
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("TSA certificate chain: {e}"))
}

/// A Notary Project TSA leaf (signature-specification §Certificate Requirements, timestamping
/// certificate): keyUsage present, extendedKeyUsage critical and time stamping alone.
fn check_notary_leaf(leaf: &Certificate) -> Result<(), String> {
    let extensions = || leaf.tbs_certificate.extensions.iter().flatten();
    if !extensions().any(|e| e.extn_id == ID_KEY_USAGE) {
        return Err("the TSA certificate has no keyUsage".into());
    }
    let mut ekus = extensions().filter(|e| e.extn_id == ID_EXTENDED_KEY_USAGE);
    let (Some(eku), None) = (ekus.next(), ekus.next()) else {
        return Err("the TSA certificate has not exactly one extendedKeyUsage".into());
    };
    let purposes = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).map_err(|e| format!("TSA EKU: {e}"))?;
    if !eku.critical || purposes.0 != [ID_KP_TIME_STAMPING] {
        return Err("the TSA certificate's extendedKeyUsage is not critical time stamping alone".into());
    }
    Ok(())
}

/// A TSTInfo's accuracy (RFC 3161 §2.4.2); one second under the baseline policy of RFC 3628
/// when it gives none, else none.
fn accuracy(tst_info: &[u8]) -> Result<jiff::SignedDuration, String> {
    let fields = Vec::<Any>::from_der(tst_info).map_err(|e| format!("TSTInfo: {e}"))?;
    let Some(accuracy) = fields.get(5).filter(|f| f.tag() == Tag::Sequence) else {
        let baseline = fields
            .get(1)
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .is_some_and(|p| p == BASELINE_TIME_STAMP_POLICY);
        return Ok(jiff::SignedDuration::from_secs(i64::from(baseline)));
    };
    let parts = accuracy.decode_as::<Vec<Any>>().map_err(|e| format!("accuracy: {e}"))?;
    let mut nanos: i64 = 0;
    for part in parts {
        // seconds INTEGER, millis [0] INTEGER (1..999), micros [1] INTEGER (1..999)
        let scale = match part.tag() {
            Tag::Integer => 1_000_000_000,
            Tag::ContextSpecific { number, .. } if number.value() == 0 => 1_000_000,
            Tag::ContextSpecific { number, .. } if number.value() == 1 => 1_000,
            _ => return Err("accuracy has an unknown field".into()),
        };
        let value = part
            .value()
            .iter()
            .try_fold(0i64, |n, b| n.checked_mul(256).map(|n| n + i64::from(*b)))
            .filter(|n| *n < 1 << 31)
            .ok_or("accuracy out of range")?;
        nanos = nanos.saturating_add(value.saturating_mul(scale));
    }
    Ok(jiff::SignedDuration::from_nanos(nanos))
}

fn hash_algorithm(oid: &ObjectIdentifier) -> Result<HashAlgorithm, String> {
    match *oid {
        const_oid::db::rfc5912::ID_SHA_256 => Ok(HashAlgorithm::Sha2256),
        const_oid::db::rfc5912::ID_SHA_384 => Ok(HashAlgorithm::Sha2384),
        const_oid::db::rfc5912::ID_SHA_512 => Ok(HashAlgorithm::Sha2512),
        _ => Err(format!("unsupported digest algorithm {oid}")),
    }
}

fn digest(oid: &ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match hash_algorithm(oid)? {
        HashAlgorithm::Sha2256 => sigstore_crypto::sha256(data).as_bytes().to_vec(),
        HashAlgorithm::Sha2384 => sigstore_crypto::sha384(data).as_bytes().to_vec(),
        _ => sigstore_crypto::sha512(data).as_bytes().to_vec(),
    })
}

/// A DER GeneralizedTime (X.690 §11.7): `YYYYMMDDHHMMSS`, then optionally `.` and a fraction
/// without trailing zeros, then `Z`. Digits past nanoseconds are dropped.
fn parse_gen_time(value: &[u8]) -> Result<Timestamp, String> {
    let malformed = || {
        format!(
            "genTime {:?} is not a DER GeneralizedTime",
            String::from_utf8_lossy(value)
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| malformed())?;
    let body = text.strip_suffix('Z').ok_or_else(malformed)?;
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if seconds.len() != 14 || !digits(seconds) || (body.contains('.') && (!digits(fraction) || fraction.ends_with('0')))
    {
        return Err(malformed());
    }
    let number = |range: std::ops::Range<usize>| seconds[range].parse::<i16>().map_err(|_| malformed());
    let nanos: i32 = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse()
        .map_err(|_| malformed())?;
    let year = number(0..4)?;
    let month = i8::try_from(number(4..6)?).map_err(|_| malformed())?;
    let day = i8::try_from(number(6..8)?).map_err(|_| malformed())?;
    let hour = i8::try_from(number(8..10)?).map_err(|_| malformed())?;
    let minute = i8::try_from(number(10..12)?).map_err(|_| malformed())?;
    let second = i8::try_from(number(12..14)?).map_err(|_| malformed())?;
    jiff::civil::DateTime::new(year, month, day, hour, minute, second, nanos)
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|t| t.timestamp())
        .map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::{accuracy, parse_gen_time};

    #[test]
    fn gen_time_is_read_with_and_without_a_fraction() {
        let at = |s: &str| parse_gen_time(s.as_bytes()).map(|t| t.as_nanosecond());
        let second = 1_765_079_640_i128 * 1_000_000_000;
        assert_eq!(at("20251207035400Z"), Ok(second));
        assert_eq!(at("20251207035400.123Z"), Ok(second + 123_000_000));
        assert_eq!(at("20251207035400.46Z"), Ok(second + 460_000_000));
        assert_eq!(at("20251207035400.1234567891Z"), Ok(second + 123_456_789));
        for bad in [
            "20251207035400.120Z",
            "20251207035400.Z",
            "20251207035400,5Z",
            "20251207035400.5",
            "2025120703540Z",
            "20251307035400Z",
            "20251207035400+0100",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accuracy_is_read_or_taken_from_the_baseline_policy() {
        let tst_info = |policy: &[u8], tail: &[u8]| {
            let mut content = vec![0x02, 0x01, 0x01];
            content.extend_from_slice(policy);
            content.extend_from_slice(&[0x30, 0x00, 0x02, 0x01, 0x05, 0x18, 0x0f]);
            content.extend_from_slice(b"20250101000000Z");
            content.extend_from_slice(tail);
            let mut der = vec![0x30, u8::try_from(content.len()).unwrap()];
            der.extend(content);
            der
        };
        let baseline = [0x06, 0x06, 0x04, 0x00, 0x8f, 0x67, 0x01, 0x01];
        let other = [0x06, 0x03, 0x2a, 0x03, 0x04];
        // seconds 2, millis [0] 500, micros [1] 7
        let given = [0x30, 0x0a, 0x02, 0x01, 0x02, 0x80, 0x02, 0x01, 0xf4, 0x81, 0x01, 0x07];
        let nanos = |der: Vec<u8>| accuracy(&der).map(|d| d.as_nanos());
        assert_eq!(nanos(tst_info(&other, &given)), Ok(2_500_007_000));
        assert_eq!(nanos(tst_info(&baseline, &[])), Ok(1_000_000_000));
        assert_eq!(nanos(tst_info(&other, &[])), Ok(0));
        // ordering BOOLEAN, not an accuracy.
        assert_eq!(nanos(tst_info(&other, &[0x01, 0x01, 0x00])), Ok(0));
    }
}
