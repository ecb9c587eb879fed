//! The image policy (SPEC §4): which images must carry whose signatures, in which namespaces.
//!
//! A policy file is parsed into plain serde types (`schema`), then checked and compiled
//! (`validate`) into a [`Policy`] whose rules hold compiled globs and parsed keys. Every error
//! names the file, the line and the field, and all the semantic errors of a file are reported
//! together, so an operator can fix them in one pass.

mod decide;
mod error;
mod glob;
mod lines;
pub mod predicate;
mod repository;
mod rule;
mod schema;
mod validate;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

// What validation uses of the verify crate's key parsing, by the module name it had here.
use pullgate_verify::key;

// The value types a policy is built of live in the verify crate, which judges by them; they
// keep their paths here.
pub use pullgate_verify::{
    condition::{
        evaluate as evaluate_conditions, Condition, ConditionFailure, MAX_CONDITIONS, MAX_CONDITION_CHARS, MAX_DEPTH,
        MAX_STATEMENT_BYTES, MAX_STATEMENT_DEPTH, MAX_STEPS,
    },
    notation::NotationTrust,
    Attestation, Authority, AuthorityKind, FulcioClaim, IdentityMatch, Keyless, PublicKey, Re2Regex, RegexError, Tlog,
    MAX_AGE_NEEDS_KEYLESS,
};

use crate::{
    file::{read_bounded, ReadError},
    verify::{TrustMaterial, TrustNeeds},
};

pub use self::{
    decide::{Decision, Verdict},
    error::{PolicyError, PolicyErrors},
    glob::{GlobError, ImageGlob, NamespaceGlob},
    repository::{InvalidRepository, SignatureRepository},
    rule::{Action, Mode, NoMatch, Rule},
};

/// The `apiVersion` every policy file declares.
pub const API_VERSION: &str = "pullgate.dev/v1alpha1";

/// The `kind` every policy file declares.
pub const KIND: &str = "ImagePolicy";

/// A trusted root larger than this is refused (the public-good one is about 10 KiB).
pub const MAX_TRUSTED_ROOT_BYTES: u64 = 4 * 1024 * 1024;

/// At most this many roots in `spec.trustedRoots`: each is read and kept in memory.
pub const MAX_TRUSTED_ROOTS: usize = 32;

/// The name `spec.trustedRoot` goes by beside the roots of `spec.trustedRoots` (in doctor's
/// checks and the expiry metric's `root` label); no root of `spec.trustedRoots` may take it.
pub const DEFAULT_ROOT: &str = "default";

/// Policy files larger than this are refused rather than parsed.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// A validated image policy: an ordered list of rules, the first matching one of which decides
/// a pull, and what to do with images no rule matches.
#[derive(Debug)]
pub struct Policy {
    file: PathBuf,
    name: String,
    mode: Mode,
    no_match: NoMatch,
    /// `spec.trustedRoot` first (as [`DEFAULT_ROOT`]), then `spec.trustedRoots` by name.
    roots: Vec<PolicyRoot>,
    rules: Vec<Rule>,
    hash: String,
}

/// A trusted root of the policy, loaded and checked with it.
#[derive(Debug)]
pub struct PolicyRoot {
    name: String,
    path: PathBuf,
    trust: Arc<TrustMaterial>,
}

// === impl Policy ===

impl Policy {
    /// Reads, parses and validates the policy file at `path`, and the key files it names.
    pub fn load(path: &Path) -> Result<Self, PolicyErrors> {
        let unreadable = |message: String| {
            PolicyErrors::one(PolicyError {
                file: path.to_owned(),
                line: None,
                field: String::new(),
                message,
            })
        };
        let bytes = read_bounded(path, MAX_POLICY_BYTES).map_err(|e| unreadable(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| unreadable(format!("not UTF-8: {e}")))?;
        Self::from_str(&text, path)
    }

    /// Parses and validates policy `text` as if it had been read from `file`: key `path`s and
    /// `trustedRoot` are resolved relative to the directory `file` is in, and errors name `file`.
    pub fn from_str(text: &str, file: &Path) -> Result<Self, PolicyErrors> {
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyErrors::one(PolicyError {
                file: file.to_owned(),
                line: None,
                field: String::new(),
                message: ReadError::TooLarge(MAX_POLICY_BYTES).to_string(),
            }));
        }
        validate::compile(text, file)
    }

    /// The file the policy was read from, as given to [`Policy::load`].
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `spec.mode`: the mode of every rule that does not set its own.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `spec.noMatch`: what happens to images no rule matches.
    pub fn no_match(&self) -> NoMatch {
        self.no_match
    }

    /// `spec.trustedRoot`, resolved against the policy file's directory.
    pub fn trusted_root(&self) -> Option<&Path> {
        self.default_root().map(PolicyRoot::path)
    }

    /// The trust material `spec.trustedRoot` holds, loaded and checked with the policy, so the
    /// two are reloaded together and a broken one keeps the last good pair in force. Key
    /// authorities, and keyless ones that name no root, are checked against it.
    pub fn trust(&self) -> Option<&TrustMaterial> {
        self.default_root().map(PolicyRoot::trust)
    }

    /// Every trusted root: `spec.trustedRoot` first (named [`DEFAULT_ROOT`]), then those of
    /// `spec.trustedRoots` in the order of their names.
    pub fn roots(&self) -> &[PolicyRoot] {
        &self.roots
    }

    fn default_root(&self) -> Option<&PolicyRoot> {
        self.roots.iter().find(|root| root.name == DEFAULT_ROOT)
    }

    /// What the authorities checked against `root` need from it: key authorities and keyless
    /// ones naming no root use `spec.trustedRoot`, the others the root they name.
    pub fn root_needs(&self, root: &PolicyRoot) -> TrustNeeds {
        let default = self.trust();
        TrustNeeds::of(
            self.authorities()
                .filter(|a| a.kind.is_sigstore() && a.trust(default).is_some_and(|t| std::ptr::eq(t, root.trust())))
                .map(|a| (matches!(a.kind, AuthorityKind::Keyless(_)), a.tlog)),
        )
    }

    fn authorities(&self) -> impl Iterator<Item = &Authority> {
        self.rules.iter().flat_map(|rule| rule.authorities())
    }

    /// When the trust material of each root stops being valid for the authorities that use it,
    /// in unix seconds, by root name, as `pullgate_trust_material_expiry_timestamp_seconds`
    /// reports it (see [`crate::verify::expiry::expiry_timestamp`]). Empty when the policy has
    /// no trusted root; `+∞` for a root no authority uses.
    pub fn trust_expiry_timestamps(&self, now: jiff::Timestamp) -> Vec<(String, f64)> {
        self.roots
            .iter()
            .map(|root| {
                (
                    root.name.clone(),
                    root.trust.expiry_timestamp(self.root_needs(root), now),
                )
            })
            .collect()
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// `sha256:<hex>` over the policy file, every key file and every trusted root it read: the generation of the
    /// policy, which changes when any of them does.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

// === impl PolicyRoot ===

impl PolicyRoot {
    /// [`DEFAULT_ROOT`] for `spec.trustedRoot`, else its name in `spec.trustedRoots`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file, resolved against the policy file's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn trust(&self) -> &TrustMaterial {
        &self.trust
    }
}
