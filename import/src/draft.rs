//! An imported rule before it is written: each part already checked against what pullgate's
//! policy accepts, with the comments that say where it came from. The types are `Draft…` so that
//! none is mistaken for the policy's own `Rule`, `Authority` or `Condition`, which the written
//! YAML becomes when pullgate loads it.

use std::collections::BTreeMap;

use super::document::Report;
use pullgate::policy::{Action, Mode, Tlog};

/// A pullgate rule made from one source rule (or a part of one).
#[derive(Clone, Debug)]
pub(super) struct DraftRule {
    pub name: String,
    /// `document 1 (ClusterPolicy/verify): spec.rules[0].verifyImages[0]`.
    pub origin: String,
    /// Rules made from one source rule share a family; their relative order is intended
    /// (a skip rule before its rule, a per-namespace mode before the rest), so they are neither
    /// reordered nor reported as overlapping.
    pub family: usize,
    /// Kyverno `applyRules: One`: the policy's rules apply first-match already, as pullgate's
    /// do, so where the earlier of two of them stands for its source exactly, their overlap is
    /// neither reordered nor reported (see `order`).
    pub first_match_group: Option<usize>,
    pub images: Vec<DraftImage>,
    pub namespaces: Option<Vec<String>>,
    pub exclude_namespaces: Vec<String>,
    /// Something that narrowed the source rule's pulls was dropped, so this rule covers pulls
    /// the source rule does not.
    pub widened: bool,
    pub mode: Mode,
    pub action: Action,
    /// `requireSignature`: false when the source passes images on their attestations alone.
    /// Written only for a `verify` rule with attestations, the only one that may carry it.
    pub require_signature: bool,
    pub authorities: Vec<DraftAuthority>,
    pub attestations: Vec<DraftAttestation>,
    /// Comment lines written above the rule, after its origin.
    pub comments: Vec<String>,
}

/// One entry of a rule's `images`, and how it was translated when that is worth saying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DraftImage {
    pub glob: String,
    pub comment: Option<String>,
}

/// Whose signature satisfies a rule.
#[derive(Clone, Debug)]
pub(super) struct DraftAuthority {
    pub name: String,
    pub kind: DraftAuthorityKind,
    pub tlog: Tlog,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum DraftAuthorityKind {
    /// A PEM public key, checked when it was read.
    Key { pem: String },
    Keyless {
        issuer: DraftIdentity,
        subject: DraftIdentity,
        /// Fulcio claims by pullgate's names.
        extensions: BTreeMap<String, String>,
    },
    /// A Notation trust store (PEM certificates, checked when they were read), the identities
    /// it trusts (`*` for any, as Kyverno's Notary verifier does) and TSA roots, if any.
    Notation {
        certificates: String,
        trusted_identities: Vec<String>,
        tsa_certificates: Option<String>,
    },
}

/// An issuer or subject: exact, or a regular expression (compiled when it was made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DraftIdentity {
    pub regexp: bool,
    pub value: String,
    pub comment: Option<String>,
}

/// An attestation a rule requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DraftAttestation {
    pub name: String,
    /// A URI, resolved from cosign's short names.
    pub predicate_type: String,
    pub conditions: Vec<DraftCondition>,
}

/// A CEL condition (compiled when it was made) and the original it was translated from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DraftCondition {
    pub cel: String,
    pub comment: String,
}

// === impl Rule ===

impl DraftRule {
    pub fn new(name: String, origin: String, family: usize, mode: Mode) -> Self {
        Self {
            name,
            origin,
            family,
            first_match_group: None,
            images: Vec::new(),
            namespaces: None,
            exclude_namespaces: Vec::new(),
            widened: false,
            mode,
            action: Action::Verify,
            require_signature: true,
            authorities: Vec::new(),
            attestations: Vec::new(),
            comments: Vec::new(),
        }
    }

    /// Makes a `verify` rule that kept no authority deny everything it matches: an authority
    /// that could not be carried over must never leave a rule that lets images through.
    pub fn fail_closed(&mut self, report: &mut Report<'_>, path: &str) {
        if self.action != Action::Verify || !self.authorities.is_empty() {
            return;
        }
        report.dropped(
            path,
            "no signer of this rule could be carried over; the rule denies every image it matches",
        );
        self.action = Action::Deny;
        self.attestations.clear();
        self.comments
            .push("Denies: none of its signers could be carried over (see stderr); pullgate fails closed.".to_string());
    }

    /// Whether every image this rule lets through would pass `other` too, in a mode at least as
    /// strict: then, where both match, applying only this rule loses nothing. A rule that
    /// allows lets everything through, whatever its mode.
    pub fn implies(&self, other: &DraftRule) -> bool {
        if other.action == Action::Allow {
            return true;
        }
        if blocks(other.mode) && !blocks(self.mode) {
            return false;
        }
        match (self.action, other.action) {
            (_, Action::Allow) | (Action::Deny, _) => true,
            (Action::Allow, _) | (_, Action::Deny) => false,
            // An image this rule admits on attestations alone may carry no signature at all.
            (Action::Verify, Action::Verify) if !self.require_signature && other.require_signature => false,
            (Action::Verify, Action::Verify) => {
                let signers_accepted = self
                    .authorities
                    .iter()
                    .all(|mine| other.authorities.iter().any(|theirs| mine.same_signer(theirs)));
                let attestations_held = other
                    .attestations
                    .iter()
                    .all(|theirs| self.attestations.iter().any(|mine| mine.at_least(theirs)));
                signers_accepted && attestations_held
            }
        }
    }

    /// Whether this rule can refuse a pull: it checks or denies, in enforce mode.
    pub fn can_refuse(&self) -> bool {
        self.action != Action::Allow && blocks(self.mode)
    }
}

/// Whether a mode blocks a failed pull.
fn blocks(mode: Mode) -> bool {
    mode == Mode::Enforce
}

/// Whether narrowing a rule's signers to an attestation's own changed anything.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Narrowed {
    Same,
    Stricter,
}

/// Keeps only the signers that `attestors` (an attestation's own) names too, each with the
/// stricter log requirement of the two. pullgate checks every attestation against the rule's
/// authorities, so keeping a signer the attestation's attestors do not include would accept an
/// attestation the source refuses. Images signed only by a signer left out are denied, and
/// attestations signed only by an attestor the rule lacks are refused: both stricter.
pub(super) fn narrow_to(signers: &mut Vec<DraftAuthority>, attestors: &[DraftAuthority]) -> Narrowed {
    let before = signers.len();
    let mut raised = false;
    signers.retain_mut(|signer| match attestors.iter().find(|a| a.kind.same(&signer.kind)) {
        Some(attestor) => {
            if strictness(attestor.tlog) > strictness(signer.tlog) {
                signer.tlog = attestor.tlog;
                raised = true;
            }
            true
        }
        None => false,
    });
    let all_kept = signers.len() == before && attestors.len() == signers.len();
    if raised || !all_kept {
        Narrowed::Stricter
    } else {
        Narrowed::Same
    }
}

fn strictness(tlog: Tlog) -> u8 {
    match tlog {
        Tlog::Ignore => 0,
        Tlog::Optional => 1,
        Tlog::Required => 2,
    }
}

/// Whether two lists name the same signers, checked the same way.
pub(super) fn same_signers(a: &[DraftAuthority], b: &[DraftAuthority]) -> bool {
    a.iter().all(|x| b.iter().any(|y| x.same_signer(y))) && b.iter().all(|y| a.iter().any(|x| x.same_signer(y)))
}

// === impl Authority ===

impl DraftAuthority {
    /// The same signer, checked the same way, whatever either is called.
    pub fn same_signer(&self, other: &DraftAuthority) -> bool {
        self.tlog == other.tlog && self.kind.same(&other.kind)
    }
}

impl DraftAuthorityKind {
    fn same(&self, other: &DraftAuthorityKind) -> bool {
        match (self, other) {
            (Self::Key { pem: a }, Self::Key { pem: b }) => pem_body(a) == pem_body(b),
            (
                Self::Keyless {
                    issuer: i1,
                    subject: s1,
                    extensions: e1,
                },
                Self::Keyless {
                    issuer: i2,
                    subject: s2,
                    extensions: e2,
                },
            ) => i1.same(i2) && s1.same(s2) && e1 == e2,
            (
                Self::Notation {
                    certificates: a,
                    trusted_identities: ia,
                    tsa_certificates: ta,
                },
                Self::Notation {
                    certificates: b,
                    trusted_identities: ib,
                    tsa_certificates: tb,
                },
            ) => pem_body(a) == pem_body(b) && ia == ib && ta.as_deref().map(pem_body) == tb.as_deref().map(pem_body),
            _ => false,
        }
    }
}

/// The base64 of a PEM block, without line breaks or whitespace.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----"))
        .collect()
}

impl DraftIdentity {
    pub fn exact(value: impl Into<String>) -> Self {
        Self {
            regexp: false,
            value: value.into(),
            comment: None,
        }
    }

    pub fn regexp(value: impl Into<String>) -> Self {
        Self {
            regexp: true,
            value: value.into(),
            comment: None,
        }
    }

    fn same(&self, other: &DraftIdentity) -> bool {
        self.regexp == other.regexp && self.value == other.value
    }
}

// === impl Attestation ===

impl DraftAttestation {
    /// Whether holding this attestation means holding `other`: the same predicate type and at
    /// least its conditions.
    fn at_least(&self, other: &DraftAttestation) -> bool {
        self.predicate_type == other.predicate_type
            && other
                .conditions
                .iter()
                .all(|theirs| self.conditions.iter().any(|mine| mine.cel == theirs.cel))
    }
}

/// An attestation's name from its predicate type: cosign's short name where there is one.
pub(super) fn short_name(predicate_type: &str, i: usize) -> String {
    const SHORT: [(&str, &str); 7] = [
        ("https://cyclonedx.org/bom", "cyclonedx"),
        ("https://spdx.dev/Document", "spdx"),
        ("https://slsa.dev/provenance/v0.2", "slsaprovenance"),
        ("https://slsa.dev/provenance/v1", "slsaprovenance1"),
        ("https://cosign.sigstore.dev/attestation/vuln/v1", "vuln"),
        ("https://openvex.dev/ns", "openvex"),
        ("https://in-toto.io/Link/v1", "link"),
    ];
    SHORT
        .iter()
        .find(|(uri, _)| *uri == predicate_type)
        .map_or_else(|| format!("attestation-{i}"), |(_, short)| short.to_string())
}
