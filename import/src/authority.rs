//! Building pullgate authorities from the signers the sources describe, each part checked as
//! pullgate's policy checks it, so that what is written always loads.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    condition::{cel_string, wildcard_regex},
    document::{items, Fields, Report},
    draft::{DraftAuthority, DraftAuthorityKind, DraftIdentity},
    unique_in,
};
use pullgate::policy::{FulcioClaim, PublicKey, Tlog};

/// Transparency logs pullgate's trusted root names by default; a source naming one of them
/// asks for nothing more.
const PUBLIC_REKOR: [&str; 3] = [
    "https://rekor.sigstore.dev",
    "https://rekor.sigstore.dev/",
    "https://log2025-1.rekor.sigstore.dev",
];

/// Why a source's signature location (`repository`, `source`) is dropped.
pub(super) const SIGNATURES_ELSEWHERE: &str =
    "the importer does not carry a signature repository over (pullgate's is one per rule: signatureRepository), so signatures kept elsewhere are not found (stricter)";
/// Why a signer with required signature `annotations` is dropped.
pub(super) const NO_ANNOTATION_CHECKS: &str =
    "pullgate does not check signature annotations; the attestor is dropped rather than accepted without them";
/// Why certificate attestors are dropped.
pub(super) const NO_CERTIFICATE_ATTESTORS: &str =
    "certificate attestors (cert, certChain) are not supported by pullgate; dropped";

/// Reports where a key may come from that the node cannot read: a KMS URI (`kms`) and a
/// Kubernetes secret (`secret_field`). Returns whether the key named either.
pub(super) fn off_node_key(fields: &mut Fields<'_>, secret_field: &str, report: &mut Report<'_>) -> bool {
    let kms = fields.get("kms").is_some();
    if kms {
        report.dropped(&fields.path("kms"), "KMS keys cannot be read offline; dropped");
    }
    let secret = fields.get(secret_field).is_some();
    if secret {
        report.dropped(
            &fields.path(secret_field),
            "keys in Kubernetes secrets cannot be read on the node; dropped",
        );
    }
    kms || secret
}

/// Whether the hash `algorithm_field` names, if any, is SHA-256, the one pullgate verifies key
/// signatures over; another is reported as dropped.
pub(super) fn sha256_only(fields: &mut Fields<'_>, algorithm_field: &str, report: &mut Report<'_>) -> bool {
    match fields.get(algorithm_field).and_then(Value::as_str) {
        Some(algorithm) if !algorithm.eq_ignore_ascii_case("sha256") => {
            report.dropped(
                &fields.path(algorithm_field),
                format!("pullgate verifies key signatures over SHA-256, not {algorithm}; dropped"),
            );
            false
        }
        _ => true,
    }
}

/// The public Fulcio.
const PUBLIC_FULCIO: [&str; 2] = ["https://fulcio.sigstore.dev", "https://fulcio.sigstore.dev/"];

/// A key authority from one PEM block; a key pullgate cannot use is reported and dropped.
pub(super) fn key(name: String, pem: &str, tlog: Tlog, path: &str, report: &mut Report<'_>) -> Option<DraftAuthority> {
    if let Some(why) = reference(pem) {
        report.dropped(path, format!("{why}; dropped"));
        return None;
    }
    if let Err(e) = PublicKey::from_pem(pem) {
        report.dropped(path, format!("{e}; dropped"));
        return None;
    }
    Some(DraftAuthority {
        name,
        kind: DraftAuthorityKind::Key {
            pem: normalize_pem(pem),
        },
        tlog,
        comment: None,
    })
}

/// Why a key field holding a reference rather than PEM cannot be read on the node, if it does.
pub(super) fn reference(text: &str) -> Option<String> {
    let text = text.trim();
    let scheme = text.split_once("://").map(|(scheme, _)| scheme)?;
    Some(match scheme {
        "k8s" => format!("{text:?} names a Kubernetes secret, which cannot be read on the node"),
        "awskms" | "gcpkms" | "azurekms" | "hashivault" => "KMS keys cannot be read offline".to_string(),
        "env" => format!("{text:?} names an environment variable of the admission controller"),
        _ => format!("{text:?} is a reference pullgate cannot read"),
    })
}

/// The PEM blocks of `text`, each a key of its own (Kyverno allows several in one field).
pub(super) fn split_pems(text: &str) -> Vec<String> {
    const END: &str = "-----END PUBLIC KEY-----";
    if !text.contains(END) {
        return vec![text.to_string()];
    }
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(END) {
        blocks.push(rest[..end + END.len()].trim().to_string());
        rest = &rest[end + END.len()..];
    }
    if !rest.trim().is_empty() {
        blocks.push(rest.trim().to_string());
    }
    blocks
}

fn normalize_pem(pem: &str) -> String {
    let mut out = String::new();
    for line in pem.lines().map(str::trim).filter(|line| !line.is_empty()) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A Kyverno `subject` or `issuer`: exact unless it holds `*` or `?`, Kyverno's wildcards,
/// which become an anchored regular expression with everything else escaped.
pub(super) fn wildcard_identity(field: &str, value: &str) -> DraftIdentity {
    if !value.contains(['*', '?']) {
        return DraftIdentity::exact(value);
    }
    let mut identity = DraftIdentity::regexp(wildcard_regex(value, false));
    identity.comment = Some(format!(
        "Kyverno {field} {} (a wildcard: * any characters, ? one).",
        cel_string(value)
    ));
    identity
}

/// An exact-or-regexp pair as the sources write it (`issuer`/`issuerRegExp`), checked: the
/// regular expression must compile as pullgate compiles it. A missing pair is reported.
pub(super) fn identity(
    exact: Option<&str>,
    regexp: Option<&str>,
    path: &str,
    what: &str,
    report: &mut Report<'_>,
) -> Option<DraftIdentity> {
    match (exact.filter(|s| !s.is_empty()), regexp.filter(|s| !s.is_empty())) {
        (Some(exact), None) => Some(DraftIdentity::exact(exact)),
        (None, Some(regexp)) => match pullgate::policy::Re2Regex::new(regexp) {
            Ok(_) => Some(DraftIdentity::regexp(regexp)),
            Err(e) => {
                report.dropped(
                    path,
                    format!("{what} regular expression {regexp:?} does not compile ({e}); the signer is dropped"),
                );
                None
            }
        },
        (Some(_), Some(_)) => {
            report.dropped(
                path,
                format!("both an exact {what} and a {what} regular expression; the signer is dropped"),
            );
            None
        }
        (None, None) => {
            report.dropped(
                path,
                format!("no {what}; the signer is dropped rather than accept any {what}"),
            );
            None
        }
    }
}

/// A Fulcio claim by any name the sources use: pullgate's (`sourceRepositoryURI`), another
/// case of it (cosign's `githubWorkflowSha`), or its OID (`1.3.6.1.4.1.57264.1.5`).
pub(super) fn claim(name: &str) -> Option<FulcioClaim> {
    let name = name.trim();
    FulcioClaim::from_name(name)
        .or_else(|| FulcioClaim::from_name_ignoring_case(name))
        .or_else(|| FulcioClaim::ALL.into_iter().find(|claim| claim.oid() == name))
        .or_else(|| {
            // cosign's names for the deprecated GitHub claims, and `github-workflow-trigger`.
            let folded: String = name.chars().filter(|c| *c != '-' && *c != '_').collect();
            FulcioClaim::from_name_ignoring_case(&folded)
        })
}

/// Maps `extensions` (claim name → value) to pullgate's claim names; `None`, reported, when one
/// of them is a claim pullgate does not know, as the signer must then be dropped.
pub(super) fn extensions(
    given: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    report: &mut Report<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut mapped = BTreeMap::new();
    for (name, value) in given {
        let Some(value) = value.as_str() else {
            report.dropped(&format!("{path}.{name}"), "expected a string; the signer is dropped");
            return None;
        };
        match claim(name) {
            Some(claim) if !value.is_empty() => {
                mapped.insert(claim.name().to_string(), value.to_string());
            }
            _ => {
                report.dropped(
                    &format!("{path}.{name}"),
                    "not a Fulcio claim pullgate can check; the signer is dropped rather than accepted without it",
                );
                return None;
            }
        }
    }
    Some(mapped)
}

/// Whether a transparency-log URL is the public one.
pub(super) fn public_rekor(url: &str) -> bool {
    PUBLIC_REKOR.contains(&url.trim())
}

/// Whether a Fulcio URL is the public one.
pub(super) fn public_fulcio(url: &str) -> bool {
    PUBLIC_FULCIO.contains(&url.trim())
}

/// Whether a signer relies on trust material of its own (Fulcio roots, a TrustRoot, a private
/// Fulcio or transparency log, their keys, a timestamp authority) besides spec.trustedRoot.
///
/// pullgate checks every signature against spec.trustedRoot only. Checked there, such a signer
/// would accept what the public Sigstore certifies or logs for its identities, which the source
/// refuses (a private-CA signer whose identities are `.*` would accept any public keyless
/// signature), so the signer is dropped: this is the one place that decides it.
#[derive(Debug, Default)]
pub(super) struct OwnTrust {
    found: bool,
}

// === impl OwnTrust ===

impl OwnTrust {
    /// Records `what`, at `path`, as trust material of the signer's own, which drops the signer.
    pub fn found(&mut self, path: &str, what: &str, report: &mut Report<'_>) {
        report.dropped(
            path,
            format!(
                "{what}: pullgate checks signatures against spec.trustedRoot only, and checked there this signer \
                 would accept signatures the source refuses; the signer is dropped (add the trust material to the \
                 trusted root and write the signer by hand)"
            ),
        );
        self.found = true;
    }

    /// Records fields of a trust section (`rekor`, `ctlog`) that the importer does not know:
    /// they may be trust material, so they drop the signer too.
    pub fn unread(&mut self, fields: &Fields<'_>, report: &mut Report<'_>) {
        if !fields.unread().is_empty() {
            report.unread(
                fields,
                "it may name trust material of the signer's own, so the signer is dropped",
            );
            self.found = true;
        }
    }

    /// Whether a signer is to be dropped.
    pub fn is_found(&self) -> bool {
        self.found
    }
}

/// Keyless authorities from a list of `identities` (`issuer`/`issuerRegExp` and
/// `subject`/`subjectRegExp` each), as policy-controller and ImageValidatingPolicy write them:
/// one authority per identity, named `name` (or `name-<index>` when there are several). An
/// identity with a field pullgate does not know, or without both parts, is reported and left
/// out rather than accepted without it.
pub(super) fn keyless_identities(
    identities: &Value,
    path: &str,
    name: &str,
    tlog: Tlog,
    report: &mut Report<'_>,
) -> Vec<DraftAuthority> {
    let list = items(identities, path, report);
    let several = list.len() > 1;
    let mut authorities = Vec::new();
    for (j, (identity_path, value)) in list.into_iter().enumerate() {
        let mut id = Fields::of(value, identity_path.clone());
        let mut text = |field: &str| id.get(field).and_then(Value::as_str).map(str::to_string);
        let (issuer, issuer_re) = (text("issuer"), text("issuerRegExp"));
        let (subject, subject_re) = (text("subject"), text("subjectRegExp"));
        if !id.unread().is_empty() {
            report.unread(&id, "the identity is dropped rather than accepted without it");
            continue;
        }
        let issuer = identity(
            issuer.as_deref(),
            issuer_re.as_deref(),
            &identity_path,
            "issuer",
            report,
        );
        let subject = identity(
            subject.as_deref(),
            subject_re.as_deref(),
            &identity_path,
            "subject",
            report,
        );
        if let (Some(issuer), Some(subject)) = (issuer, subject) {
            authorities.push(DraftAuthority {
                name: if several {
                    format!("{name}-{j}")
                } else {
                    name.to_string()
                },
                kind: DraftAuthorityKind::Keyless {
                    issuer,
                    subject,
                    extensions: Default::default(),
                },
                tlog,
                comment: None,
            });
        }
    }
    authorities
}

/// Names authorities after what they are: `key-1`, `keyless-1`, …
pub(super) fn name_authorities(authorities: &mut [DraftAuthority]) {
    let mut used = Vec::new();
    for authority in authorities.iter_mut() {
        if authority.name.is_empty() {
            let base = match authority.kind {
                DraftAuthorityKind::Key { .. } => "key",
                DraftAuthorityKind::Keyless { .. } => "keyless",
                DraftAuthorityKind::Notation { .. } => "notation",
            };
            authority.name = unique_in(&mut used, base, true);
        } else {
            authority.name = unique_in(&mut used, &authority.name.clone(), false);
        }
    }
}
