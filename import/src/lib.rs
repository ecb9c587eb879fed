//! `pullgate policy import`: a pullgate policy from Kyverno, Sigstore policy-controller and
//! Ratify (Notation) policies, and a list of what could not be carried over.
//!
//! The input is one YAML file of one or more documents: Kyverno `ClusterPolicy`/`Policy` with
//! `verifyImages` rules, `ImageValidatingPolicy`, policy-controller `ClusterImagePolicy` and its
//! `config-policy-controller` ConfigMap, Ratify's Notation `Verifier` with the certificate
//! providers it names (`kind: List` documents are opened). Each source rule
//! becomes a pullgate rule, in input order, except that where two rules can match the same
//! pull the stricter is put first (see `order`). The translation never lets through what the
//! source would refuse because something could not be carried over: a signer that cannot be
//! read, or relies on trust material of its own, is dropped (fewer ways to pass), and a rule
//! that keeps no signer denies; a pattern, namespace list or mode is read more widely where it
//! checks images and more narrowly where it lets them through (see `glob`, `scope`,
//! `failure_action`), and a rule that lets images through loses nothing that narrowed it. What is
//! dropped, replaced by something stricter, or carried over in a way worth knowing is a
//! [`Finding`], which the command prints on stderr, one line each, naming the document and the
//! field. Every part of the output is checked with pullgate's own parsers as it is made, so
//! the policy written always loads (given its trusted root).
//!
//! A crate of its own over pullgate's public API (`policy`, `reference::looks_like_host`,
//! `file::read_bounded`): only the `pullgate policy import` command uses it, and nothing in the
//! node's request path depends on it.

#![forbid(unsafe_code)]

mod authority;
mod condition;
mod document;
mod draft;
mod failure_action;
mod glob;
mod image_validating;
mod kyverno;
mod order;
mod overlap;
mod policy_controller;
mod ratify;
mod scope;
mod write;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

pub use self::document::{Finding, FindingKind};
use self::{
    document::{Report, Source},
    draft::DraftRule,
    scope::Home,
};
use pullgate::{
    file::read_bounded,
    policy::{yaml, Action, NoMatch, MAX_CONDITIONS, MAX_POLICY_BYTES},
};

/// Where install.sh puts the Sigstore trusted root; the imported policy names it unless told
/// otherwise.
pub const DEFAULT_TRUSTED_ROOT: &str = "/etc/pullgate/trust/trusted_root.json";

/// At most this many documents are read from one file.
const MAX_DOCUMENTS: usize = 1000;

/// At most this many rules are written, as `policy check` allows.
const MAX_RULES: usize = 1000;

/// At most this many authorities and attestations per rule, as `policy check` allows.
const MAX_AUTHORITIES: usize = 100;
const MAX_ATTESTATIONS: usize = 100;

/// How to import.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `spec.trustedRoot` to write when the policy needs one.
    pub trusted_root: PathBuf,
}

/// An imported policy: its YAML, and what was not carried over as it was.
#[derive(Debug)]
pub struct Imported {
    pub policy: String,
    pub findings: Vec<Finding>,
}

/// Why a file could not be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Unreadable(String),
    #[error("line {0}: flow collections ([ ] and {{ }}) nested too deep")]
    TooDeep(usize),
    #[error("not YAML: {0}")]
    NotYaml(String),
    #[error("more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments,
    #[error("more than {MAX_RULES} rules would be written; split the input")]
    TooManyRules,
    #[error(
        "no Kyverno ClusterPolicy, Policy or ImageValidatingPolicy, policy-controller ClusterImagePolicy, nor Ratify Notation Verifier, in it"
    )]
    NoPolicy,
}

/// What the documents read so far have produced.
#[derive(Default)]
pub(crate) struct Imports {
    rules: Vec<DraftRule>,
    names: BTreeSet<String>,
    families: usize,
    groups: usize,
    /// A policy-controller document was read: its `no-match-policy` applies.
    policy_controller: bool,
    /// `no-match-policy` of `config-policy-controller`, if given.
    no_match: Option<NoMatch>,
    /// Source documents that hold policies, for the header.
    sources: Vec<String>,
    /// Rules made from Kyverno policies.
    kyverno_rules: usize,
    /// A Ratify Notation verifier was read: images no trust policy scopes are refused.
    ratify: bool,
    /// Ratify's certificate providers in the input, by name.
    ratify_stores: ratify::Stores,
}

// === impl Imported ===

impl Imported {
    /// Whether anything was dropped or made stricter: the command's exit status 1.
    pub fn dropped_anything(&self) -> bool {
        self.findings.iter().any(Finding::is_dropped)
    }
}

// === impl Imports ===

impl Imports {
    /// A new family: the rules made from one source rule.
    fn family(&mut self) -> usize {
        self.families += 1;
        self.families
    }

    /// A new group of rules that apply first-match in the source too.
    fn group(&mut self) -> usize {
        self.groups += 1;
        self.groups
    }

    /// A rule name made of `base`, unique in the policy.
    fn name(&mut self, base: &str) -> String {
        let mut used: Vec<String> = self.names.iter().cloned().collect();
        let name = unique_in(&mut used, base, false);
        self.names.insert(name.clone());
        name
    }
}

/// `base` made a valid pullgate name (letters, digits, `-`, `_`, `.`; at most 253), and unique
/// among `used`, which it joins: `base`, `base-2`, … (`base-1`, `base-2`, … when `numbered`).
pub(crate) fn unique_in(used: &mut Vec<String>, base: &str, numbered: bool) -> String {
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    clean.truncate(240);
    let clean = clean.trim_matches('-').to_string();
    let clean = if clean.is_empty() { "rule".to_string() } else { clean };
    let mut n = 1;
    let mut name = if numbered { format!("{clean}-1") } else { clean.clone() };
    while used.contains(&name) {
        n += 1;
        name = format!("{clean}-{n}");
    }
    used.push(name.clone());
    name
}

/// Reads and imports the file at `path`.
pub fn import(path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let bytes = read_bounded(path, MAX_POLICY_BYTES).map_err(|e| ImportError::Unreadable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| ImportError::Unreadable(format!("not UTF-8: {e}")))?;
    import_str(&text, path, options)
}

/// Imports `text` as if read from `file`.
pub fn import_str(text: &str, file: &Path, options: &Options) -> Result<Imported, ImportError> {
    if text.len() as u64 > MAX_POLICY_BYTES {
        return Err(ImportError::Unreadable(format!("larger than {MAX_POLICY_BYTES} bytes")));
    }
    if let Some(line) = yaml::too_deep(text) {
        return Err(ImportError::TooDeep(line));
    }
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        if documents.len() >= MAX_DOCUMENTS {
            return Err(ImportError::TooManyDocuments);
        }
        let value = Value::deserialize(document).map_err(|e| ImportError::NotYaml(e.to_string()))?;
        documents.push(value);
    }

    let mut findings = Vec::new();
    let mut imports = Imports {
        ratify_stores: ratify::stores(&documents),
        ..Imports::default()
    };
    let mut supported = 0;
    for (i, document) in documents.iter().enumerate() {
        supported += dispatch(document, (i + 1).to_string(), &mut imports, &mut findings);
    }
    if supported == 0 {
        return Err(ImportError::NoPolicy);
    }
    if imports.rules.len() > MAX_RULES {
        return Err(ImportError::TooManyRules);
    }

    let (no_match, no_match_comment) = no_match(&imports, &mut findings);
    if imports.policy_controller {
        findings.push(Finding::file(
            FindingKind::Note,
            "policy-controller enforces only in namespaces labelled policy.sigstore.dev/include=true; \
             pullgate applies its rules in every namespace"
                .to_string(),
        ));
    }
    if imports.ratify {
        findings.push(Finding::file(
            FindingKind::Note,
            "Ratify's verdict is enforced by a Gatekeeper constraint, whose namespaces the input does not hold; \
             pullgate applies the Notation rules in every namespace"
                .to_string(),
        ));
    }
    for rule in &mut imports.rules {
        fit(rule, &mut findings);
    }
    let rules = order::order(std::mem::take(&mut imports.rules), &mut findings);
    // Keyless signers and log entries are checked against the trusted root, and so are
    // Sigstore bundles, which cosign v3 writes by default, key-signed ones included.
    let needs_root = rules.iter().any(|r| !r.authorities.is_empty());
    let header = header(&imports.sources, &findings);
    let name = policy_name(file);
    let policy = write::write(&write::Document {
        file,
        name: &name,
        header: &header,
        no_match,
        no_match_comment: &no_match_comment,
        trusted_root: needs_root.then_some(options.trusted_root.as_path()),
        rules: &rules,
    });
    Ok(Imported { policy, findings })
}

/// Makes a rule fit what `policy check` accepts, never wider: attestation names unique (two of
/// one predicate type are both named after it), at most [`MAX_AUTHORITIES`] signers (fewer
/// signers pass fewer images), and a rule asking for more attestations or conditions than a
/// policy may hold denies.
fn fit(rule: &mut DraftRule, findings: &mut Vec<Finding>) {
    let mut used = Vec::new();
    for attestation in &mut rule.attestations {
        attestation.name = unique_in(&mut used, &attestation.name, false);
    }
    if rule.authorities.len() > MAX_AUTHORITIES {
        rule.authorities.truncate(MAX_AUTHORITIES);
        findings.push(Finding::file(
            FindingKind::Dropped,
            format!(
                "rule {:?} ({}): signers beyond the first {MAX_AUTHORITIES} are dropped (stricter)",
                rule.name, rule.origin
            ),
        ));
    }
    let too_many = rule.attestations.len() > MAX_ATTESTATIONS
        || rule.attestations.iter().any(|a| a.conditions.len() > MAX_CONDITIONS);
    if too_many && rule.action == Action::Verify {
        findings.push(Finding::file(
            FindingKind::Dropped,
            format!(
                "rule {:?} ({}): more than {MAX_ATTESTATIONS} attestations or {MAX_CONDITIONS} conditions \
                 in one; the rule denies",
                rule.name, rule.origin
            ),
        ));
        rule.action = Action::Deny;
        rule.authorities.clear();
        rule.attestations.clear();
    }
}

/// Groups whose kinds are image policies, or may be: a kind of theirs the importer does not
/// read is reported as dropped, as what it checks is not carried over.
const POLICY_GROUPS: [&str; 4] = [
    "kyverno.io",
    "policies.kyverno.io",
    "policy.sigstore.dev",
    "config.ratify.deislabs.io",
];

/// Translates one document (the items of any `…List` each); returns how many were policies.
fn dispatch(document: &Value, index: String, imports: &mut Imports, findings: &mut Vec<Finding>) -> usize {
    if document.is_null() {
        return 0;
    }
    let text = |field: &str| document.get(field).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if kind.ends_with("List") {
        if let Some(items) = document.get("items").and_then(Value::as_array) {
            let mut count = 0;
            for (i, item) in items.iter().enumerate() {
                count += dispatch(item, format!("{index} item {}", i + 1), imports, findings);
            }
            return count;
        }
    }
    let metadata = document.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let source = Source {
        index: index.clone(),
        kind: if kind.is_empty() {
            "(no kind)".to_string()
        } else {
            kind.to_string()
        },
        name: name.clone(),
    };
    let mut report = Report::new(source.clone(), findings);
    let group = api_version.split('/').next().unwrap_or_default();
    if group == "policy.sigstore.dev" {
        // Its no-match-policy applies wherever policy-controller runs.
        imports.policy_controller = true;
    }
    // A namespaced policy applies in the namespace it is created in; where the input does not
    // say which, it is applied in every namespace.
    let home = |report: &mut Report<'_>| match namespace.as_deref() {
        Some(namespace) => Home::Namespace(namespace),
        None => {
            report.dropped(
                "metadata.namespace",
                "missing: a namespaced policy applies in the namespace it is created in, which the input does \
                 not say; pullgate applies it in every namespace (stricter)",
            );
            Home::Unknown
        }
    };
    let rules_before = imports.rules.len();
    let supported = match (group, api_version, kind) {
        ("kyverno.io", "kyverno.io/v1" | "kyverno.io/v2beta1", "ClusterPolicy") => {
            kyverno::policy(document, &name, Home::Cluster, imports, &mut report);
            true
        }
        ("kyverno.io", "kyverno.io/v1" | "kyverno.io/v2beta1", "Policy") => {
            let home = home(&mut report);
            kyverno::policy(document, &name, home, imports, &mut report);
            true
        }
        ("policies.kyverno.io", _, "ImageValidatingPolicy") => {
            image_validating::policy(document, &name, Home::Cluster, imports, &mut report);
            true
        }
        ("policies.kyverno.io", _, "NamespacedImageValidatingPolicy") => {
            let home = home(&mut report);
            image_validating::policy(document, &name, home, imports, &mut report);
            true
        }
        (
            "policy.sigstore.dev",
            "policy.sigstore.dev/v1alpha1" | "policy.sigstore.dev/v1beta1",
            "ClusterImagePolicy",
        ) => {
            policy_controller::cluster_image_policy(document, &name, imports, &mut report);
            true
        }
        (_, "v1", "ConfigMap") if name == policy_controller::CONFIG_MAP => {
            policy_controller::config_map(document, imports, &mut report);
            imports
                .sources
                .push(format!("document {index}: {kind}/{name} ({api_version})"));
            false
        }
        ("config.ratify.deislabs.io", _, "Verifier") => ratify::verifier(document, &name, imports, &mut report),
        ("config.ratify.deislabs.io", _, kind) if ratify::is_provider(kind) => {
            report.note(
                "",
                "read for the certificates of the Notation trust stores that name it",
            );
            false
        }
        ("kyverno.io", _, "PolicyException") | ("kyverno.io", _, "ClusterPolicyException") => {
            report.dropped(
                "",
                "policy exceptions exempt resources by what the node cannot see; not imported (stricter)",
            );
            false
        }
        ("policy.sigstore.dev", _, "TrustRoot") => {
            report.note(
                "",
                "trust material is taken from spec.trustedRoot (a Sigstore trusted_root.json, --trusted-root); not imported",
            );
            false
        }
        (group, _, _) if POLICY_GROUPS.contains(&group) => {
            report.dropped(
                "",
                format!(
                    "{kind} ({api_version}) is not a kind the importer reads; not imported, so the images it would \
                     check are left to the other rules and noMatch"
                ),
            );
            false
        }
        _ => {
            report.note("", "not a Kyverno or policy-controller image policy; ignored");
            false
        }
    };
    if supported {
        imports
            .sources
            .push(format!("document {index}: {kind}/{name} ({api_version})"));
        if group != "policy.sigstore.dev" && group != "config.ratify.deislabs.io" {
            imports.kyverno_rules += imports.rules.len() - rules_before;
        }
    }
    usize::from(supported)
}

/// `noMatch` and why: policy-controller's `no-match-policy` when it is in the input (deny by
/// default), else Kyverno's behaviour, which admits what no policy matches.
fn no_match(imports: &Imports, findings: &mut Vec<Finding>) -> (NoMatch, String) {
    if imports.ratify && !imports.policy_controller {
        if imports.kyverno_rules > 0 {
            findings.push(Finding::file(
                FindingKind::Dropped,
                "Ratify refuses images that no Notation trust policy scopes, and so does this policy (noMatch: \
                 deny); in the cluster Kyverno would admit those of them that no Kyverno policy matches"
                    .to_string(),
            ));
        }
        return (
            NoMatch::Deny,
            "Ratify's Notation verifier refuses images that no trust policy scopes.".to_string(),
        );
    }
    if !imports.policy_controller {
        return (
            NoMatch::Allow,
            "Kyverno admits images that no policy matches.".to_string(),
        );
    }
    let (value, from) = match imports.no_match {
        Some(value) => (value, "as ConfigMap config-policy-controller sets it"),
        None => (NoMatch::Deny, "its default"),
    };
    if imports.kyverno_rules > 0 && value != NoMatch::Allow {
        let kind = if value == NoMatch::Deny {
            FindingKind::Dropped
        } else {
            FindingKind::Note
        };
        findings.push(Finding::file(
            kind,
            format!(
                "policy-controller's no-match-policy ({value}) also applies in the cluster to images that only \
                 Kyverno policies match; pullgate lets the Kyverno rules decide them"
            ),
        ));
    }
    (
        value,
        format!("What happens to images no policy matches: policy-controller's no-match-policy, {from}."),
    )
}

/// The header lines after the first: the sources and how their patterns were read.
fn header(sources: &[String], findings: &[Finding]) -> Vec<String> {
    let mut lines = vec![String::new(), "Sources:".to_string()];
    lines.extend(sources.iter().map(|s| format!("  {s}")));
    lines.push(String::new());
    lines.push(
        "Image patterns: Kyverno's `*` matches any characters, `/` included, so it is written `**` in a \
         repository (and `*` in a tag); policy-controller's globs mean what pullgate's do (`*` within one \
         path segment, `**` across), with `index.docker.io` written `docker.io`. A pattern with no tag or \
         digest matches every tag and digest here, and where a source wildcard runs on into the tag or \
         digest, every tag and digest of the repositories it reaches is checked. A rule that allows keeps \
         only patterns read exactly (or more narrowly); stderr lists those dropped."
            .to_string(),
    );
    lines.push(
        "Order: Kyverno and policy-controller require every policy that matches an image; pullgate's first \
         matching rule decides alone, so where two rules overlap the stricter comes first, and the command \
         said on stderr what each overlap costs."
            .to_string(),
    );
    let dropped = findings.iter().filter(|f| f.is_dropped()).count();
    if dropped > 0 {
        lines.push(format!(
            "{dropped} item(s) could not be carried over as they were; they are listed on stderr."
        ));
    }
    lines.push(String::new());
    lines
}

/// `imported-<file stem>`.
fn policy_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    unique_in(&mut Vec::new(), &format!("imported-{stem}"), false)
}
