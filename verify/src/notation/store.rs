//! Trust stores as a policy writes them: PEM text holding X.509 certificates, read and checked
//! when the policy loads, so a store that could never vouch for a signature is an error there
//! and not a denial of every pull.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use der::Decode;
use rustls_pki_types::CertificateDer;
use webpki::anchor_from_trusted_cert;
use x509_cert::Certificate;

/// At most this many certificates in one store.
pub const MAX_STORE_CERTIFICATES: usize = 100;

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";

/// Why PEM text is not a trust store pullgate can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("holds no PEM certificate")]
    Empty,
    #[error("holds more than {MAX_STORE_CERTIFICATES} certificates")]
    TooMany,
    #[error("PEM block {index} is a {label:?}, not a CERTIFICATE")]
    Label { index: usize, label: String },
    #[error("PEM block {index} is not closed by its -----END line")]
    Unclosed { index: usize },
    #[error("PEM block {index} is not base64: {why}")]
    Base64 { index: usize, why: String },
    #[error("certificate {index} is not an X.509 certificate: {why}")]
    Certificate { index: usize, why: String },
    #[error("certificate {index} cannot be a trust anchor: {why}")]
    Anchor { index: usize, why: String },
}

/// The DER certificates of PEM `text`, in order; every block must be a `CERTIFICATE` that can
/// anchor a chain. Text between blocks (comments, `openssl x509 -text` output) is ignored.
pub fn parse_certificates(text: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut certificates = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let index = certificates.len() + 1;
        if certificates.len() == MAX_STORE_CERTIFICATES {
            return Err(StoreError::TooMany);
        }
        let after = &rest[start + BEGIN.len()..];
        let label_end = after.find("-----").ok_or(StoreError::Unclosed { index })?;
        let label = &after[..label_end];
        if label != "CERTIFICATE" {
            return Err(StoreError::Label {
                index,
                label: label.to_string(),
            });
        }
        let body = &after[label_end + 5..];
        let end = body.find(END).ok_or(StoreError::Unclosed { index })?;
        let base64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = BASE64.decode(base64).map_err(|e| StoreError::Base64 {
            index,
            why: e.to_string(),
        })?;
        Certificate::from_der(&der).map_err(|e| StoreError::Certificate {
            index,
            why: e.to_string(),
        })?;
        anchor_from_trusted_cert(&CertificateDer::from(der.as_slice())).map_err(|e| StoreError::Anchor {
            index,
            why: format!("{e:?}"),
        })?;
        certificates.push(der);
        let closing = &body[end + END.len()..];
        rest = closing.find("-----").map_or("", |i| &closing[i + 5..]);
    }
    if certificates.is_empty() {
        return Err(StoreError::Empty);
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_a_certificate_store_is_refused_with_a_reason() {
        assert_eq!(parse_certificates(""), Err(StoreError::Empty));
        assert_eq!(parse_certificates("just words"), Err(StoreError::Empty));
        let key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            parse_certificates(key),
            Err(StoreError::Label { index: 1, .. })
        ));
        let open = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert_eq!(parse_certificates(open), Err(StoreError::Unclosed { index: 1 }));
        let junk = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_certificates(junk),
            Err(StoreError::Base64 { index: 1, .. })
        ));
        let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_certificates(not_x509),
            Err(StoreError::Certificate { index: 1, .. })
        ));
    }
}
