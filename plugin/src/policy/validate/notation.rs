//! Notation authorities: the trust store of signing CAs, the TSA roots and the trusted
//! identities, each read and checked when the policy loads. The files are part of the policy's
//! generation, as key files and trusted roots are.

use super::{
    super::{schema::NotationDoc, NotationTrust},
    Validator,
};
use crate::{
    file::read_bounded,
    verify::notation::{parse_certificates, TrustedIdentities, VerifyTimestamp},
};

/// A trust store file larger than this is refused: a hundred certificates fit many times over.
pub(in crate::policy) const MAX_STORE_FILE_BYTES: u64 = 1024 * 1024;

impl Validator<'_> {
    /// Compiles `notation`; `None`, with every error recorded, when any part is unusable.
    pub(super) fn notation(&mut self, field: &str, doc: NotationDoc) -> Option<NotationTrust> {
        let trust_store = self.store(&format!("{field}.certificates"), &doc.certificates);
        let tsa_roots = match &doc.tsa_certificates {
            Some(store) => self.store(&format!("{field}.tsaCertificates"), store),
            None => Some(Vec::new()),
        };
        let identities_field = format!("{field}.trustedIdentities");
        let identities = match TrustedIdentities::parse(&doc.trusted_identities) {
            Ok(identities) => Some(identities),
            Err(e) => {
                self.error(&identities_field, e);
                None
            }
        };
        Some(NotationTrust {
            trust_store: trust_store?,
            identities: identities?,
            tsa_roots: tsa_roots?,
            verify_timestamp: VerifyTimestamp::default(),
        })
    }

    /// One store: inline PEM (text holding `-----BEGIN`), else a file, relative to the policy.
    fn store(&mut self, field: &str, value: &str) -> Option<Vec<Vec<u8>>> {
        if value.contains("-----BEGIN") {
            // Inline PEM is part of the policy text, already in the generation's hash.
            return parse_certificates(value).map_err(|e| self.error(field, e)).ok();
        }
        let path = self.path(field, std::path::Path::new(value.trim()))?;
        let shown = path.display();
        let bytes = match read_bounded(&path, MAX_STORE_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(field, format!("{shown}: {e}"));
                return None;
            }
        };
        self.hash_part(&bytes);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.error(field, format!("{shown}: not PEM certificates: not UTF-8 text"));
            return None;
        };
        parse_certificates(text)
            .map_err(|e| self.error(field, format!("{shown}: {e}")))
            .ok()
    }
}
