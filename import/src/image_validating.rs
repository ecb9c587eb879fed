//! Kyverno `ImageValidatingPolicy` and `NamespacedImageValidatingPolicy`
//! (policies.kyverno.io/v1alpha1, v1beta1 and v1), where they map.
//!
//! Such a policy names its signers (`attestors`) and attestations, and says in CEL
//! (`validations`) what must hold. Only validations that verify signatures over every image of
//! a list are understood, in these shapes (whitespace aside, any image list, `> 0`, `>= 1` or
//! `!= 0`):
//!
//! ```text
//! images.containers.map(i, verifyImageSignatures(i, [attestors.a, attestors.b])).all(e, e > 0)
//! images.containers.all(i, verifyImageSignatures(i, [attestors.a]) > 0)
//! images.containers.map(i, verifyAttestationSignatures(i, attestations.sbom, [attestors.a])).all(e, e > 0)
//! ```
//!
//! The first two are a `verify` rule whose authorities are the attestors named (any one of them
//! signs); the third requires the attestation. Any other validation has no pullgate form, is
//! reported as dropped, and, as it may deny what the rest allows, leaves a rule that denies
//! unless a signature check was understood. One that calls `verifyImageSignatures` still asks
//! for the image's signature: without an image signature check understood, the rule denies
//! rather than take the attestation checks alone as the proof.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::{
    authority::{self, name_authorities, OwnTrust},
    document::{items, string, strings, Fields, Report},
    draft::{narrow_to, same_signers, short_name, DraftAttestation, DraftAuthority, DraftImage, DraftRule, Narrowed},
    glob::{self, Dialect, Reading},
    kyverno::DIGEST_SETTINGS,
    scope::{self, Home, Scope},
    Imports,
};
use pullgate::policy::{predicate, Mode, Tlog};

/// Translates one `ImageValidatingPolicy` (`home` says where a namespaced one lives).
pub(super) fn policy(doc: &Value, name: &str, home: Home<'_>, imports: &mut Imports, report: &mut Report<'_>) {
    let mut top = Fields::of(doc, "");
    top.skip(&["apiVersion", "kind", "metadata", "status"]);
    let Some(spec) = top.get("spec") else {
        report.dropped("spec", "missing; nothing imported");
        return;
    };
    report.unread(&top, "dropped");
    let mut spec = Fields::of(spec, "spec");
    let origin = format!("{}", report.source);
    let mode = spec
        .get("validationActions")
        .map(|value| validation_actions(value, &spec.path("validationActions"), report))
        .unwrap_or(Mode::Enforce);
    let family = imports.family();
    let mut rule = DraftRule::new(imports.name(name), origin, family, mode);

    rule.images = match spec.get("matchImageReferences") {
        Some(list) => image_references(list, &spec.path("matchImageReferences"), report),
        None => vec![DraftImage {
            glob: "**".to_string(),
            comment: Some("No matchImageReferences: the policy checks every image.".to_string()),
        }],
    };
    let scope = match spec.get("matchConstraints") {
        Some(value) => match_constraints(value, &spec.path("matchConstraints"), report),
        None => Scope::default(),
    };
    rule.namespaces = scope.namespaces;
    rule.exclude_namespaces = scope.exclude;
    rule.widened = scope.widened;
    match home {
        Home::Cluster => {}
        Home::Namespace(namespace) => rule.namespaces = Some(vec![namespace.to_string()]),
        Home::Unknown => rule.widened = true,
    }
    let selects_none = rule.namespaces.as_ref().is_some_and(Vec::is_empty);

    let attestors = spec
        .get("attestors")
        .map(|value| attestors(value, &spec.path("attestors"), report))
        .unwrap_or_default();
    let attestations = spec
        .get("attestations")
        .map(|value| attestations(value, &spec.path("attestations"), report))
        .unwrap_or_default();
    let checks = spec
        .get("validations")
        .map(|value| validations(value, &spec.path("validations"), report))
        .unwrap_or_default();

    if let Some(value) = spec.get("validationConfigurations") {
        let mut config = Fields::of(value, spec.path("validationConfigurations"));
        for (field, why) in DIGEST_SETTINGS {
            if config.get(field).is_some() {
                report.note(&config.path(field), why);
            }
        }
        report.unread(&config, "dropped");
    }
    if spec.get("matchConditions").is_some() {
        report.dropped(
            &spec.path("matchConditions"),
            "cannot be evaluated on the node, so the rule covers every pull it matches (stricter)",
        );
        rule.widened = true;
    }
    if spec.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
        report.note(
            &spec.path("failurePolicy"),
            "Ignore admits pods when Kyverno cannot be reached; pullgate runs on the node and fails closed",
        );
    }
    if let Some(value) = spec.get("evaluation") {
        evaluation(value, &spec.path("evaluation"), report);
    }
    for (field, why) in [
        ("images", "on the node every image pulled for a pod is checked"),
        (
            "credentials",
            "pullgate uses the credentials kubelet sends with each pull",
        ),
        (
            "variables",
            "not carried over; validations that use them are not understood",
        ),
        ("auditAnnotations", "pullgate writes its own audit log"),
    ] {
        if spec.get(field).is_some() {
            report.note(&spec.path(field), why);
        }
    }
    spec.skip(&["webhookConfiguration", "autogen"]);
    report.unread(&spec, "dropped");

    if rule.images.is_empty() {
        report.dropped(
            "spec.matchImageReferences",
            "no image pattern could be carried over; the policy is not imported",
        );
        return;
    }
    if selects_none {
        report.note(
            "spec.matchConstraints",
            "selects no namespace a pod can be in; not imported",
        );
        return;
    }
    assemble(&mut rule, &attestors, &attestations, &checks, report);
    name_authorities(&mut rule.authorities);
    rule.fail_closed(report, "spec.validations");
    imports.rules.push(rule);
}

/// A validation understood as a signature check, or one not understood that checks the
/// image's signature all the same.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Signatures {
        attestors: Vec<String>,
        path: String,
    },
    Attestation {
        attestation: String,
        attestors: Vec<String>,
        path: String,
    },
    /// Calls `verifyImageSignatures` in a shape pullgate cannot read: the image must be signed,
    /// by signers unknown here.
    UnreadSignatures {
        path: String,
    },
}

/// The rule's authorities and attestations from the checks understood: the signers of the
/// signature check (or, without one, of the first attestation check), narrowed to those each
/// attestation check names too (see [`narrow_to`]).
fn assemble(
    rule: &mut DraftRule,
    attestors: &BTreeMap<String, Option<Vec<DraftAuthority>>>,
    attestations: &BTreeMap<String, Option<DraftAttestation>>,
    checks: &[Check],
    report: &mut Report<'_>,
) {
    // The signers a list of attestor names stands for; `None` when one is not defined.
    let signers = |names: &[String], path: &str, report: &mut Report<'_>| -> Option<Vec<DraftAuthority>> {
        let mut all = Vec::new();
        for name in names {
            match attestors.get(name) {
                Some(Some(authorities)) => all.extend(authorities.iter().cloned()),
                // Dropped, and reported where it is defined: one way fewer to pass.
                Some(None) => {}
                None => {
                    report.dropped(
                        path,
                        format!("names the attestor {name:?}, which the policy does not define"),
                    );
                    return None;
                }
            }
        }
        Some(all)
    };
    let mut chosen: Option<Vec<DraftAuthority>> = None;
    let mut poisoned = false;
    for check in checks {
        let Check::Signatures { attestors: names, path } = check else {
            continue;
        };
        let Some(these) = signers(names, path, report) else {
            poisoned = true;
            continue;
        };
        match &chosen {
            Some(first) if !same_signers(first, &these) => {
                report.dropped(
                    path,
                    "a second signature check with other attestors must hold too; pullgate accepts any one \
                     authority of a rule, so the rule denies",
                );
                poisoned = true;
            }
            Some(_) => {}
            None => chosen = Some(these),
        }
    }
    // Kyverno requires every validation: one that checks the image's signature, unread, still
    // asks for a signature, so the attestations alone cannot be the proof.
    let unread_signatures = checks.iter().find_map(|check| match check {
        Check::UnreadSignatures { path } => Some(path),
        _ => None,
    });
    if let (None, Some(path)) = (&chosen, unread_signatures) {
        report.dropped(
            path,
            "checks the image's signature in a form pullgate cannot read, so whose signature it needs is \
             unknown; the rule denies rather than admit images on their attestations alone",
        );
        poisoned = true;
    }
    for check in checks {
        let Check::Attestation {
            attestation,
            attestors: names,
            path,
        } = check
        else {
            continue;
        };
        match attestations.get(attestation) {
            Some(Some(required)) => {
                if !rule.attestations.iter().any(|a| a.name == required.name) {
                    rule.attestations.push(required.clone());
                }
            }
            Some(None) => poisoned = true,
            None => {
                report.dropped(
                    path,
                    format!("names the attestation {attestation:?}, which the policy does not define"),
                );
                poisoned = true;
            }
        }
        let Some(own) = signers(names, path, report) else {
            poisoned = true;
            continue;
        };
        match &mut chosen {
            // The image's signature is required, but by whom is unknown: poisoned above.
            None if unread_signatures.is_some() => {}
            None => {
                report.note(
                    path,
                    "no validation checks the image's signature, only attestations; so does pullgate, with \
                     requireSignature: false",
                );
                rule.require_signature = false;
                chosen = Some(own);
            }
            Some(chosen) => {
                let before = chosen.len();
                if narrow_to(chosen, &own) == Narrowed::Stricter {
                    let message = if !rule.require_signature {
                        "pullgate checks every attestation against the rule's authorities, so it keeps only the \
                         signers all attestation checks name; attestations signed only by the others are refused \
                         (stricter)"
                    } else if chosen.len() < before {
                        "pullgate checks attestations against the rule's authorities, so it keeps only the \
                         image's signers that are among these attestors too; images signed only by the others \
                         are denied (stricter)"
                    } else {
                        "pullgate checks attestations against the rule's authorities (the image's signers), so \
                         attestations signed only by the other attestors are refused (stricter)"
                    };
                    report.dropped(path, message);
                }
            }
        }
    }
    if !poisoned {
        rule.authorities = chosen.unwrap_or_default();
    }
}

fn validation_actions(value: &Value, path: &str, report: &mut Report<'_>) -> Mode {
    let actions = strings(value, path, report);
    if actions.iter().any(|a| a == "Deny") || actions.is_empty() {
        Mode::Enforce
    } else if actions.iter().any(|a| a == "Warn") {
        Mode::Warn
    } else if actions.iter().any(|a| a == "Audit") {
        Mode::Audit
    } else {
        report.dropped(path, "neither Deny, Warn nor Audit; read as Deny");
        Mode::Enforce
    }
}

fn image_references(list: &Value, path: &str, report: &mut Report<'_>) -> Vec<DraftImage> {
    let mut images = Vec::new();
    for (item_path, item) in items(list, path, report) {
        let mut fields = Fields::of(item, item_path.clone());
        if let Some(pattern) = fields.get("glob") {
            if let Some(pattern) = string(pattern, &fields.path("glob"), report) {
                let path = fields.path("glob");
                for image in glob::translate(pattern, Dialect::KyvernoGlob, Reading::Wide, &path, report) {
                    if !images.contains(&image) {
                        images.push(image);
                    }
                }
            }
        }
        if fields.get("expression").is_some() {
            report.dropped(
                &fields.path("expression"),
                "CEL over image references has no pullgate equivalent; dropped, so the images it alone matches are not checked",
            );
        }
        report.unread(&fields, "dropped");
    }
    images
}

fn match_constraints(value: &Value, path: &str, report: &mut Report<'_>) -> Scope {
    let mut fields = Fields::of(value, path);
    let mut scope = match fields.get("namespaceSelector") {
        Some(selector) => scope::namespace_selector(selector, &fields.path("namespaceSelector"), report),
        None => Scope::default(),
    };
    if fields.get("objectSelector").is_some() {
        report.dropped(
            &fields.path("objectSelector"),
            "object labels cannot be seen on the node, so the rule covers every pull (stricter)",
        );
        scope.widened = true;
    }
    fields.skip(&["resourceRules", "excludeResourceRules", "matchPolicy"]);
    report.unread(&fields, "dropped");
    scope
}

fn evaluation(value: &Value, path: &str, report: &mut Report<'_>) {
    let mut fields = Fields::of(value, path);
    if let Some(admission) = fields.get("admission") {
        if admission.get("enabled").and_then(Value::as_bool) == Some(false) {
            report.dropped(
                &format!("{}.enabled", fields.path("admission")),
                "the policy does not act on admission in the cluster; pullgate enforces it on every pull (stricter)",
            );
        }
    }
    if let Some(mode) = fields.get("mode").and_then(Value::as_str) {
        if mode != "Kubernetes" {
            report.dropped(
                &fields.path("mode"),
                format!("{mode} evaluation checks payloads, not pods; pullgate applies the rule to pulls"),
            );
        }
    }
    fields.skip(&["background"]);
    report.unread(&fields, "dropped");
}

/// The policy's attestors by name: their authorities, or `None` when one could not be had.
fn attestors(value: &Value, path: &str, report: &mut Report<'_>) -> BTreeMap<String, Option<Vec<DraftAuthority>>> {
    let mut by_name = BTreeMap::new();
    for (item_path, item) in items(value, path, report) {
        let mut fields = Fields::of(item, item_path.clone());
        let Some(name) = fields.get("name").and_then(Value::as_str).map(str::to_string) else {
            report.dropped(&item_path, "an attestor without a name cannot be referred to; dropped");
            continue;
        };
        let mut authorities = None;
        if let Some(cosign) = fields.get("cosign") {
            authorities = cosign_attestor(cosign, &fields.path("cosign"), &name, report);
        }
        if fields.get("notary").is_some() {
            report.dropped(
                &fields.path("notary"),
                "Notary attestors of an ImageValidatingPolicy are not carried over (write a notation authority by hand, see notation.md); dropped",
            );
            authorities = None;
        }
        if !fields.unread().is_empty() {
            report.unread(&fields, "the attestor is dropped rather than accepted without it");
            authorities = None;
        }
        by_name.insert(name, authorities.filter(|a: &Vec<DraftAuthority>| !a.is_empty()));
    }
    by_name
}

fn cosign_attestor(value: &Value, path: &str, name: &str, report: &mut Report<'_>) -> Option<Vec<DraftAuthority>> {
    let mut fields = Fields::of(value, path);
    let mut usable = true;
    let mut trust = OwnTrust::default();
    let mut tlog = Tlog::Required;
    if let Some(ctlog) = fields.get("ctlog") {
        let mut ct = Fields::of(ctlog, fields.path("ctlog"));
        if ct.get("insecureIgnoreTlog").and_then(Value::as_bool) == Some(true) {
            tlog = Tlog::Ignore;
        }
        if ct.get("insecureIgnoreSCT").and_then(Value::as_bool) == Some(true) {
            report.dropped(
                &ct.path("insecureIgnoreSCT"),
                "pullgate always checks the certificate's SCT, so certificates without one are refused (stricter)",
            );
        }
        if let Some(url) = ct.get("url").and_then(Value::as_str) {
            if !authority::public_rekor(url) && tlog != Tlog::Ignore {
                trust.found(&ct.path("url"), &format!("the transparency log {url}"), report);
            }
        }
        for (field, what) in [
            ("rekorPubKey", "a transparency log key"),
            ("ctLogPubKey", "a CT log key"),
            ("tsaCertChain", "a timestamp authority"),
        ] {
            if ct.get(field).is_some() {
                trust.found(&ct.path(field), what, report);
            }
        }
        trust.unread(&ct, report);
    }
    if fields.get("tuf").is_some() {
        trust.found(&fields.path("tuf"), "a TUF repository", report);
    }
    if fields.get("source").is_some() {
        report.dropped(&fields.path("source"), authority::SIGNATURES_ELSEWHERE);
    }
    if fields.get("annotations").is_some() {
        report.dropped(&fields.path("annotations"), authority::NO_ANNOTATION_CHECKS);
        usable = false;
    }
    if fields.get("certificate").is_some() {
        report.dropped(&fields.path("certificate"), authority::NO_CERTIFICATE_ATTESTORS);
        usable = false;
    }
    let mut authorities = Vec::new();
    let keyless = fields.has("keyless");
    if let Some(key) = fields.get("key") {
        if keyless {
            // Kyverno verifies such an attestor keyless and returns; its key is never tried.
            report.dropped(
                &fields.path("key"),
                "an attestor that is also keyless is checked keyless only by Kyverno, never with this key; dropped",
            );
        } else {
            authorities.extend(cosign_key(key, &fields.path("key"), name, tlog, &mut usable, report));
        }
    }
    if let Some(keyless) = fields.get("keyless") {
        let mut keyless = Fields::of(keyless, fields.path("keyless"));
        if keyless.get("roots").is_some() {
            trust.found(&keyless.path("roots"), "custom Fulcio roots", report);
        }
        if let Some(identities) = keyless.get("identities") {
            let path = keyless.path("identities");
            authorities.extend(authority::keyless_identities(identities, &path, name, tlog, report));
        }
        if !keyless.unread().is_empty() {
            report.unread(&keyless, "the attestor is dropped rather than accepted without it");
            usable = false;
        }
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the attestor is dropped rather than accepted without it");
        usable = false;
    }
    (usable && !trust.is_found()).then_some(authorities)
}

/// `key` of a cosign attestor: its authority, if it has one pullgate can use; `usable` is
/// cleared where the attestor must be dropped.
fn cosign_key(
    value: &Value,
    path: &str,
    name: &str,
    tlog: Tlog,
    usable: &mut bool,
    report: &mut Report<'_>,
) -> Option<DraftAuthority> {
    let mut key = Fields::of(value, path);
    authority::off_node_key(&mut key, "secretRef", report);
    if key.get("expression").is_some() {
        report.dropped(
            &key.path("expression"),
            "a key computed in CEL cannot be read on the node; dropped",
        );
    }
    if !authority::sha256_only(&mut key, "hashAlgorithm", report) {
        *usable = false;
    }
    let mut authority = None;
    if let Some(data) = key.get("data") {
        let data_path = key.path("data");
        if let Some(pem) = string(data, &data_path, report) {
            authority = authority::key(name.to_string(), pem, tlog, &data_path, report);
        }
    }
    if !key.unread().is_empty() {
        report.unread(&key, "the attestor is dropped rather than accepted without it");
        *usable = false;
    }
    authority
}

/// The policy's attestations by name; `None` for one that cannot be checked.
fn attestations(value: &Value, path: &str, report: &mut Report<'_>) -> BTreeMap<String, Option<DraftAttestation>> {
    let mut by_name = BTreeMap::new();
    for (i, (item_path, item)) in items(value, path, report).into_iter().enumerate() {
        let mut fields = Fields::of(item, item_path.clone());
        let Some(name) = fields.get("name").and_then(Value::as_str).map(str::to_string) else {
            report.dropped(
                &item_path,
                "an attestation without a name cannot be referred to; dropped",
            );
            continue;
        };
        let mut attestation = None;
        if let Some(intoto) = fields.get("intoto") {
            let type_path = format!("{}.type", fields.path("intoto"));
            match intoto.get("type").and_then(Value::as_str).map(predicate::resolve) {
                Some(Ok(uri)) => {
                    attestation = Some(DraftAttestation {
                        name: if name.is_empty() {
                            short_name(&uri, i)
                        } else {
                            name.clone()
                        },
                        predicate_type: uri,
                        conditions: Vec::new(),
                    })
                }
                Some(Err(why)) => report.dropped(&type_path, format!("{why}; dropped")),
                None => report.dropped(&type_path, "missing; dropped"),
            }
        }
        if fields.get("referrer").is_some() {
            report.dropped(
                &fields.path("referrer"),
                "OCI referrer artifacts that are not in-toto attestations are not supported by pullgate; dropped",
            );
        }
        report.unread(&fields, "dropped");
        by_name.insert(name, attestation);
    }
    by_name
}

/// The validations understood as signature checks; the others are reported.
fn validations(value: &Value, path: &str, report: &mut Report<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    for (item_path, item) in items(value, path, report) {
        let mut fields = Fields::of(item, item_path.clone());
        let expression = fields.get("expression").and_then(Value::as_str).unwrap_or_default();
        fields.skip(&["message", "messageExpression", "reason"]);
        report.unread(&fields, "dropped");
        match recognize(expression, &fields.path("expression")) {
            Some(check) => checks.push(check),
            None => {
                report.dropped(
                    &fields.path("expression"),
                    format!(
                        "{:?} is not a signature check pullgate can carry over; dropped",
                        shorten(expression)
                    ),
                );
                if expression.contains("verifyImageSignatures") {
                    checks.push(Check::UnreadSignatures {
                        path: fields.path("expression"),
                    });
                }
            }
        }
    }
    checks
}

fn shorten(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 120 {
        let cut: String = flat.chars().take(120).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The signature check an expression is, in one of the shapes the module names.
fn recognize(expression: &str, path: &str) -> Option<Check> {
    let compact: String = expression.chars().filter(|c| !c.is_whitespace()).collect();
    const IDENT: &str = r"[A-Za-z_][A-Za-z0-9_]*";
    const CMP: &str = r"(?:>0|>=1|!=0)";
    let mapped = Regex::new(&format!(
        r"^images\.{IDENT}\.map\(({IDENT}),(verifyImageSignatures|verifyAttestationSignatures)\(({IDENT}),(.*)\)\)\.all\(({IDENT}),({IDENT}){CMP}\)$"
    ))
    .ok()?;
    let direct = Regex::new(&format!(
        r"^images\.{IDENT}\.all\(({IDENT}),(verifyImageSignatures|verifyAttestationSignatures)\(({IDENT}),(.*)\){CMP}\)$"
    ))
    .ok()?;
    let (function, arguments) = if let Some(c) = mapped.captures(&compact) {
        if c[1] != c[3] || c[5] != c[6] {
            return None;
        }
        (c[2].to_string(), c[4].to_string())
    } else if let Some(c) = direct.captures(&compact) {
        if c[1] != c[3] {
            return None;
        }
        (c[2].to_string(), c[4].to_string())
    } else {
        return None;
    };
    let path = path.to_string();
    if function == "verifyImageSignatures" {
        return Some(Check::Signatures {
            attestors: attestor_list(&arguments)?,
            path,
        });
    }
    let (attestation, list) = arguments.split_once(',')?;
    let attestation = member(attestation, "attestations")?;
    Some(Check::Attestation {
        attestation,
        attestors: attestor_list(list)?,
        path,
    })
}

/// `[attestors.a,attestors["b"]]` → `a`, `b`.
fn attestor_list(text: &str) -> Option<Vec<String>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let names: Option<Vec<String>> = inner.split(',').map(|item| member(item, "attestors")).collect();
    names.filter(|n| !n.is_empty())
}

/// `attestors.a` or `attestors["a"]` → `a`.
fn member(text: &str, variable: &str) -> Option<String> {
    let rest = text.strip_prefix(variable)?;
    if let Some(name) = rest.strip_prefix('.') {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return valid.then(|| name.to_string());
    }
    let quoted = rest.strip_prefix('[')?.strip_suffix(']')?;
    let name = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .or_else(|| quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')))?;
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
pub(super) fn recognizes(expression: &str) -> Option<(bool, Vec<String>)> {
    match recognize(expression, "")? {
        Check::Signatures { attestors, .. } => Some((true, attestors)),
        Check::Attestation { attestors, .. } => Some((false, attestors)),
        Check::UnreadSignatures { .. } => None,
    }
}
