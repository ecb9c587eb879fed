//! What the JWS and COSE envelopes have in common once read: the signed bytes, the signature,
//! the signed attributes pullgate acts on, and the unsigned certificate chain and timestamp.

use jiff::Timestamp;
use serde::Deserialize;

use super::{Descriptor, NotationRefusal, SigningScheme, PAYLOAD_MEDIA_TYPE};

pub(super) const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
pub(super) const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
pub(super) const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
pub(super) const EXPIRY: &str = "io.cncf.notary.expiry";
pub(super) const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";

/// The most certificates a chain may carry; real chains have two to four.
pub(super) const MAX_CHAIN: usize = 10;

/// A signature envelope read and checked for shape, not yet for trust.
#[derive(Debug)]
pub(super) struct Envelope {
    /// The payload exactly as signed.
    pub payload: Vec<u8>,
    /// The bytes the signature is over: the JWS signing input or the COSE `ToBeSigned`.
    pub signed: Vec<u8>,
    pub signature: Vec<u8>,
    pub algorithm: Algorithm,
    pub scheme: SigningScheme,
    pub authentic_signing_time: Option<Timestamp>,
    pub expiry: Option<Timestamp>,
    /// DER certificates, the signing certificate first.
    pub chain: Vec<Vec<u8>>,
    /// An RFC 3161 TimeStampToken over `signature`.
    pub timestamp: Option<Vec<u8>>,
}

/// The signature algorithms the specification allows (signature-specification §Signature
/// Algorithm Requirements); each belongs to exactly one key type and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

/// The signed attributes of either envelope, before the rules between them are checked.
#[derive(Debug, Default)]
pub(super) struct SignedAttributes {
    pub content_type: Option<String>,
    pub scheme: Option<String>,
    pub signing_time: Option<Timestamp>,
    pub authentic_signing_time: Option<Timestamp>,
    pub expiry: Option<Timestamp>,
    /// The `crit` list, each label as text (COSE integer labels are refused before).
    pub critical: Option<Vec<String>>,
}

/// The parts of the Notary Project payload pullgate compares; other fields are the signer's
/// metadata (annotations, artifactType) and are not acted on.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetArtifact {
    media_type: String,
    digest: String,
    size: u64,
}

// === impl Algorithm ===

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }
}

// === impl SignedAttributes ===

impl SignedAttributes {
    /// Applies the rules of signature-specification §Signed Attributes: the content type is the
    /// Notary payload's; the scheme is known and critical; `crit` names only headers pullgate
    /// understands, and names `expiry` and `authenticSigningTime` when they are present; the
    /// scheme's own time attribute is present.
    pub fn check(self) -> Result<(SigningScheme, Option<Timestamp>, Option<Timestamp>), NotationRefusal> {
        match self.content_type.as_deref() {
            Some(PAYLOAD_MEDIA_TYPE) => {}
            Some(other) => return Err(NotationRefusal::ContentType(other.to_string())),
            None => return Err(NotationRefusal::Malformed("no content type".into())),
        }
        let critical = self
            .critical
            .ok_or_else(|| NotationRefusal::Malformed("no crit header".into()))?;
        // Plugins' headers (verificationPlugin, …) are critical and pullgate runs no plugins.
        if let Some(unknown) = critical
            .iter()
            .find(|c| ![SIGNING_SCHEME, AUTHENTIC_SIGNING_TIME, EXPIRY].contains(&c.as_str()))
        {
            return Err(NotationRefusal::UnknownCritical(unknown.clone()));
        }
        let is_critical = |name: &str| critical.iter().any(|c| c == name);
        let scheme = self
            .scheme
            .ok_or_else(|| NotationRefusal::Malformed(format!("no {SIGNING_SCHEME} header")))?;
        if !is_critical(SIGNING_SCHEME) {
            return Err(NotationRefusal::NotCritical(SIGNING_SCHEME));
        }
        if self.expiry.is_some() && !is_critical(EXPIRY) {
            return Err(NotationRefusal::NotCritical(EXPIRY));
        }
        if self.authentic_signing_time.is_some() && !is_critical(AUTHENTIC_SIGNING_TIME) {
            return Err(NotationRefusal::NotCritical(AUTHENTIC_SIGNING_TIME));
        }
        let scheme = SigningScheme::parse(&scheme)?;
        match scheme {
            SigningScheme::X509 if self.signing_time.is_none() => {
                return Err(NotationRefusal::Malformed(format!(
                    "{SIGNING_TIME} is required by notary.x509"
                )))
            }
            SigningScheme::X509 if self.authentic_signing_time.is_some() => {
                return Err(NotationRefusal::Malformed(format!(
                    "{AUTHENTIC_SIGNING_TIME} is only valid with notary.x509.signingAuthority"
                )))
            }
            SigningScheme::X509SigningAuthority if self.signing_time.is_some() => {
                return Err(NotationRefusal::Malformed(format!(
                    "{SIGNING_TIME} is not allowed with notary.x509.signingAuthority"
                )))
            }
            SigningScheme::X509SigningAuthority if self.authentic_signing_time.is_none() => {
                return Err(NotationRefusal::Malformed(format!(
                    "{AUTHENTIC_SIGNING_TIME} is required by notary.x509.signingAuthority"
                )))
            }
            _ => {}
        }
        Ok((scheme, self.authentic_signing_time, self.expiry))
    }
}

/// The payload's `targetArtifact` is `target`: same media type, digest and size.
pub(super) fn check_target(payload: &[u8], target: &Descriptor) -> Result<(), NotationRefusal> {
    let malformed = |e: serde_json::Error| NotationRefusal::Malformed(format!("payload: {e}"));
    let keys: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).map_err(malformed)?;
    check_spelling(keys.keys(), &["targetArtifact"], "payload")?;
    if let Some(serde_json::Value::Object(artifact)) = keys.get("targetArtifact") {
        check_spelling(artifact.keys(), &["mediaType", "digest", "size"], "targetArtifact")?;
    }
    let payload: Payload = serde_json::from_slice(payload).map_err(malformed)?;
    let signed = payload.target_artifact;
    if signed.digest != target.digest.as_str() || signed.size != target.size || signed.media_type != target.media_type {
        return Err(NotationRefusal::OtherArtifact {
            signed: format!("{} ({}, {} bytes)", signed.digest, signed.media_type, signed.size),
        });
    }
    Ok(())
}

/// Refuses a key that is not one of `names` but that Go's encoding/json, which notation-go
/// reads envelopes with, would take for one: it matches keys to fields case-insensitively,
/// folding `ſ` to `s` and the Kelvin sign to `k`, and the last match wins. Such a key would
/// make notation read another value than pullgate does.
pub(super) fn check_spelling<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    names: &[&str],
    what: &str,
) -> Result<(), NotationRefusal> {
    let fold = |s: &str| -> String {
        s.chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect()
    };
    for key in keys {
        if let Some(name) = names.iter().find(|name| **name != key && fold(name) == fold(key)) {
            return Err(NotationRefusal::Malformed(format!(
                "{what}: {key:?} would be read as {name:?} by other verifiers"
            )));
        }
    }
    Ok(())
}
