//! A policy rule: which images in which namespaces it covers, and what it asks of them.

use std::fmt;

use serde::Deserialize;

use super::{Attestation, Authority, ImageGlob, NamespaceGlob, SignatureRepository};
use crate::reference::Reference;

/// Whether a decision blocks the pull (`enforce`) or is only logged (`warn`) or recorded as
/// what enforce would have done (`audit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
    Audit,
}

/// What happens to an image no rule matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoMatch {
    /// Denied, in the policy's mode.
    #[default]
    Deny,
    Allow,
    /// Denied in `warn` mode: recorded and logged, never blocked.
    Warn,
}

/// What a rule does with the images it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allowed only with a valid signature from one of the rule's authorities.
    #[default]
    Verify,
    Allow,
    Deny,
}

/// A rule of the policy. Only validation builds one, so a `verify` rule always has at least one
/// authority, one that requires no signature at least one attestation, and an `allow` or `deny`
/// rule has none.
#[derive(Debug)]
pub struct Rule {
    pub(super) name: String,
    pub(super) images: Vec<ImageGlob>,
    pub(super) namespaces: Option<Vec<NamespaceGlob>>,
    pub(super) exclude_namespaces: Vec<NamespaceGlob>,
    pub(super) action: Action,
    pub(super) mode: Option<Mode>,
    pub(super) require_signature: bool,
    pub(super) authorities: Vec<Authority>,
    pub(super) attestations: Vec<Attestation>,
    pub(super) signature_repository: Option<SignatureRepository>,
}

// === impl Mode ===

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
            Self::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl NoMatch ===

impl NoMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
            Self::Warn => "warn",
        }
    }
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Action ===

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Rule ===

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn images(&self) -> &[ImageGlob] {
        &self.images
    }

    /// `None` when the rule names no namespaces and so covers all of them.
    pub fn namespaces(&self) -> Option<&[NamespaceGlob]> {
        self.namespaces.as_deref()
    }

    pub fn exclude_namespaces(&self) -> &[NamespaceGlob] {
        &self.exclude_namespaces
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// The rule's own mode, if it overrides the policy's.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Whether the image needs a signature of its own (`requireSignature`, default true). When
    /// not, its attestations, signed by the rule's authorities, are the proof.
    pub fn requires_signature(&self) -> bool {
        self.require_signature
    }

    /// Whose signatures satisfy the rule; a valid signature from any one of them does.
    pub fn authorities(&self) -> &[Authority] {
        &self.authorities
    }

    /// The attestations the rule requires; all of them must hold.
    pub fn attestations(&self) -> &[Attestation] {
        &self.attestations
    }

    /// Where the image's signatures and attestations are looked up when not in its own
    /// repository (`signatureRepository`).
    pub fn signature_repository(&self) -> Option<&SignatureRepository> {
        self.signature_repository.as_ref()
    }

    /// Whether the rule covers a pull of `image` into pod namespace `namespace` (`""` for a
    /// pull without a sandbox).
    pub fn matches(&self, image: &Reference, namespace: &str) -> bool {
        self.matches_image(image) && self.covers_namespace(namespace)
    }

    /// Whether the rule's images cover `image`, in whatever namespace.
    pub fn matches_image(&self, image: &Reference) -> bool {
        self.images.iter().any(|glob| glob.matches(image))
    }

    /// Whether no namespace, `""` included, escapes the rule.
    pub fn covers_every_namespace(&self) -> bool {
        let all_included = match &self.namespaces {
            None => true,
            Some(globs) => globs.iter().any(|glob| glob.as_str() == "*"),
        };
        all_included && self.exclude_namespaces.is_empty()
    }

    fn covers_namespace(&self, namespace: &str) -> bool {
        let included = match &self.namespaces {
            None => true,
            Some(globs) => globs.iter().any(|glob| glob.matches(namespace)),
        };
        included && !self.exclude_namespaces.iter().any(|glob| glob.matches(namespace))
    }
}
