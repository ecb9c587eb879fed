//! Authorities: whose signature satisfies a rule, a public key, a keyless (Fulcio) identity or
//! a Notary Project (Notation) trust store.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::Deserialize;

use crate::{notation::NotationTrust, FulcioClaim, PublicKey, TrustMaterial};

/// A signer a rule trusts. A valid signature from any one authority of a rule satisfies it.
#[derive(Clone, Debug)]
pub struct Authority {
    /// Unique within its rule; denial messages and audit records name it.
    pub name: String,
    pub kind: AuthorityKind,
    pub tlog: Tlog,
}

/// How an authority's signatures are recognized.
#[derive(Clone)]
pub enum AuthorityKind {
    /// Signed with the private half of this public key.
    Key(Arc<PublicKey>),
    /// Signed with a Fulcio certificate issued to this identity.
    Keyless(Keyless),
    /// A Notary Project signature (JWS or COSE envelope among the image's referrers) whose
    /// certificate chain leads to this trust store and names a trusted identity. Sigstore's
    /// trust material and transparency log play no part in it.
    Notation(Arc<NotationTrust>),
}

/// The identity a Fulcio certificate must carry for a keyless signature to count.
#[derive(Clone, Debug)]
pub struct Keyless {
    /// The OIDC issuer that vouched for the identity.
    pub issuer: IdentityMatch,
    /// The certificate's subject alternative name.
    pub subject: IdentityMatch,
    /// Claims that must be present with exactly these values.
    pub extensions: BTreeMap<FulcioClaim, String>,
    /// The Sigstore instance whose Fulcio CAs, CT logs, Rekor logs and TSAs alone vouch for
    /// this authority's signatures (`keyless.trustedRoot`). `None`: the default trust material
    /// verification is given (the policy's `spec.trustedRoot`).
    pub trusted_root: Option<Arc<TrustMaterial>>,
}

/// How an issuer or subject is compared: exactly, or by a regular expression the author
/// anchored (pullgate adds no anchors).
#[derive(Clone, Debug)]
pub enum IdentityMatch {
    Exact(String),
    /// Compiled when the policy loads. Anchored by the author, not by pullgate (SPEC §4).
    RegExp(crate::Re2Regex),
}

/// Whether a signature must be in the transparency log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlog {
    /// A verified log entry is required.
    Required,
    /// A log entry is verified when present, and its absence is not an error.
    Optional,
    /// Log entries are not looked at.
    Ignore,
}

// === impl AuthorityKind ===

impl fmt::Debug for AuthorityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The key type has no Debug of its own; its scheme says what it is.
            Self::Key(key) => f.debug_tuple("Key").field(&key.scheme()).finish(),
            Self::Keyless(keyless) => f.debug_tuple("Keyless").field(keyless).finish(),
            Self::Notation(trust) => f.debug_tuple("Notation").field(&trust.identities).finish(),
        }
    }
}

impl AuthorityKind {
    /// Whether signatures of this kind are Sigstore's (cosign keys or keyless), checked against
    /// a trusted root; Notation's are not.
    pub fn is_sigstore(&self) -> bool {
        !matches!(self, Self::Notation(_))
    }
}

// === impl Keyless ===

impl PartialEq for Keyless {
    fn eq(&self, other: &Self) -> bool {
        // Two roots are the same trust when their files are byte for byte the same.
        let root = |k: &Self| k.trusted_root.as_ref().map(|t| t.version().to_string());
        self.issuer == other.issuer
            && self.subject == other.subject
            && self.extensions == other.extensions
            && root(self) == root(other)
    }
}

impl Eq for Keyless {}

// === impl IdentityMatch ===

impl IdentityMatch {
    /// The string or expression as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact(s) => s,
            Self::RegExp(r) => r.as_str(),
        }
    }

    /// Whether `value` (a certificate's issuer or subject) satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => s == value,
            Self::RegExp(r) => r.is_match(value),
        }
    }
}

impl PartialEq for IdentityMatch {
    fn eq(&self, other: &Self) -> bool {
        let same_kind = matches!(
            (self, other),
            (Self::Exact(_), Self::Exact(_)) | (Self::RegExp(_), Self::RegExp(_))
        );
        same_kind && self.as_str() == other.as_str()
    }
}

impl Eq for IdentityMatch {}

// === impl Tlog ===

impl Tlog {
    /// What an authority gets that does not say (SPEC §4): `required` for keyless, `optional`
    /// for keys.
    pub fn default_for(keyless: bool) -> Self {
        if keyless {
            Self::Required
        } else {
            Self::Optional
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::Ignore => "ignore",
        }
    }
}

impl fmt::Display for Tlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
