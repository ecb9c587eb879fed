//! Kyverno `ClusterPolicy` and `Policy` (kyverno.io/v1 and v2beta1): each
//! `spec.rules[].verifyImages[]` entry becomes a pullgate rule.
//!
//! What Kyverno means, and how it is carried over:
//! - `attestors[]` are sets that must all be satisfied; a set is satisfied by `count` of its
//!   `entries` (all of them when `count` is absent; several keys in one `publicKeys` are
//!   several entries). pullgate accepts any one authority of a rule, so only one set satisfied
//!   by any one entry carries over; anything needing several signers is not, and the rule then
//!   denies (fail closed).
//! - `attestations[]` each need a statement of their predicate type signed by their own
//!   `attestors` (or the image's when they have none) that meets their `conditions`. pullgate
//!   checks attestations against the rule's authorities; where those differ, attestations
//!   signed only by the attestation's own attestors are refused, which is reported. An entry
//!   without `attestors` checks no image signature: `requireSignature: false`.
//! - Legacy signer fields on the entry (`key`, or `issuer` with `subject` and `roots`) are one
//!   more attestor set: alone, the entry's signer; next to `attestors`, a second requirement,
//!   which pullgate cannot ask, so the rule denies. `subject` without `issuer` is ignored, as
//!   Kyverno ignores it.
//! - `skipImageReferences` become a rule that allows them, before the entry's rule; patterns
//!   that pullgate would read more widely than Kyverno are dropped from it (see `glob`).
//! - The failure action (`Enforce`/`Audit`, Audit by default) is the rule's mode (see
//!   `failure_action`).
//! - Images no rule matches are admitted by Kyverno: the importer sets `noMatch: allow` unless
//!   policy-controller is in the input too.

mod attestations;
mod attestors;
mod images;

use serde_json::Value;

use self::{
    attestations::Attested,
    attestors::{attestor_sets, choose_signers, legacy_attestor, Signers},
};
use super::{
    authority::{self, name_authorities},
    document::{items, join, Fields, Report},
    draft::DraftRule,
    failure_action::{failure_action, Actions},
    scope::{self, Home, Scope},
    Imports,
};
use pullgate::policy::Action;

/// Kyverno's digest settings, which the node makes moot: it always pulls the digest it verified.
/// `ImageValidatingPolicy`'s `validationConfigurations` has the same three.
pub(super) const DIGEST_SETTINGS: [(&str, &str); 3] = [
    (
        "mutateDigest",
        "implied on the node: pullgate pulls the digest it verified, whatever the pod named",
    ),
    (
        "verifyDigest",
        "meaningless on the node: pullgate resolves a tag once, verifies that digest and pulls it",
    ),
    (
        "required",
        "meaningless on the node: every pull is verified before it happens, so nothing is left to mark",
    ),
];

/// Translates one `ClusterPolicy` or `Policy` (`home` says where the latter lives).
pub(super) fn policy(doc: &Value, name: &str, home: Home<'_>, imports: &mut Imports, report: &mut Report<'_>) {
    let mut top = Fields::of(doc, "");
    top.skip(&["apiVersion", "kind", "metadata", "status"]);
    let Some(spec) = top.get("spec") else {
        report.dropped("spec", "missing; nothing imported");
        return;
    };
    report.unread(&top, "dropped");
    let mut spec = Fields::of(spec, "spec");

    let actions = Actions::read(&mut spec, spec_value(doc, "rules"), report);
    if let Some(policy) = spec.get("failurePolicy") {
        if policy.as_str() == Some("Ignore") {
            report.note(
                &spec.path("failurePolicy"),
                "Ignore admits pods when Kyverno cannot be reached; pullgate runs on the node and fails closed",
            );
        }
    }
    let first_match_group = match spec.get("applyRules").and_then(Value::as_str) {
        Some("One") => Some(imports.group()),
        _ => None,
    };
    spec.skip(&[
        "background",
        "admission",
        "schemaValidation",
        "webhookTimeoutSeconds",
        "webhookConfiguration",
        "emitWarning",
        "useServerSideApply",
        "mutateExistingOnPolicyUpdate",
        "generateExisting",
        "generateExistingOnPolicyUpdate",
    ]);
    let Some(rules) = spec.get("rules") else {
        report.dropped("spec.rules", "missing; nothing imported");
        return;
    };
    let context = PolicyContext {
        name,
        home,
        actions: &actions,
        first_match_group,
    };
    for (rule_path, rule) in items(rules, "spec.rules", report) {
        policy_rule(rule, &rule_path, &context, imports, report);
    }
    report.unread(&spec, "dropped");
}

/// `spec.<field>` of a document, if present.
fn spec_value<'a>(doc: &'a Value, field: &str) -> Option<&'a Value> {
    doc.get("spec").and_then(|spec| spec.get(field))
}

/// What every rule of a policy shares.
struct PolicyContext<'a> {
    name: &'a str,
    home: Home<'a>,
    actions: &'a Actions,
    first_match_group: Option<usize>,
}

fn policy_rule(rule: &Value, path: &str, policy: &PolicyContext<'_>, imports: &mut Imports, report: &mut Report<'_>) {
    let mut fields = Fields::of(rule, path);
    let rule_name = fields.get("name").and_then(Value::as_str).unwrap_or("rule").to_string();
    let Some(verify_images) = fields.get("verifyImages") else {
        report.dropped(path, "not an image verification rule (no verifyImages); not imported");
        fields.skip(&[
            "validate",
            "mutate",
            "generate",
            "match",
            "exclude",
            "context",
            "preconditions",
            "celPreconditions",
            "skipBackgroundRequests",
            "reportProperties",
        ]);
        report.unread(&fields, "dropped");
        return;
    };
    for other in ["validate", "mutate", "generate"] {
        if fields.get(other).is_some() {
            report.dropped(&fields.path(other), "not image verification; not imported");
        }
    }
    let scope = scope::kyverno(&mut fields, policy.home, report);
    if fields.get("context").is_some() {
        report.note(
            &fields.path("context"),
            "context variables do not exist on the node; conditions that read them are dropped",
        );
    }
    let mut preconditions = false;
    for field in ["preconditions", "celPreconditions"] {
        if fields.get(field).is_some() {
            report.dropped(
                &fields.path(field),
                "cannot be evaluated on the node, so the rule covers every pull it matches (stricter)",
            );
            preconditions = true;
        }
    }
    fields.skip(&["skipBackgroundRequests", "reportProperties"]);
    report.unread(&fields, "dropped");
    let Some(mut scope) = scope else {
        return;
    };
    scope.widened |= preconditions;

    let entries = items(verify_images, &join(path, "verifyImages"), report);
    let several = entries.len() > 1;
    for (i, (entry_path, entry)) in entries.into_iter().enumerate() {
        let base = match several {
            true => format!("{}.{rule_name}-{i}", policy.name),
            false => format!("{}.{rule_name}", policy.name),
        };
        let place = Place {
            path: &entry_path,
            base: &base,
            family: imports.family(),
            scope: &scope,
            policy,
        };
        let rules = verify_image(entry, &place, report, imports);
        for mut rule in rules {
            rule.first_match_group = policy.first_match_group;
            imports.rules.push(rule);
        }
    }
}

/// Where a `verifyImages` entry is, and what it takes from its rule and policy.
struct Place<'a> {
    path: &'a str,
    /// The name its rules are made from.
    base: &'a str,
    family: usize,
    scope: &'a Scope,
    policy: &'a PolicyContext<'a>,
}

/// One `verifyImages` entry: the rule, preceded by the rules that carry its skipped images and
/// its per-namespace modes.
fn verify_image(entry: &Value, place: &Place<'_>, report: &mut Report<'_>, imports: &mut Imports) -> Vec<DraftRule> {
    let Place {
        path,
        base,
        family,
        scope,
        policy,
    } = *place;
    let mut fields = Fields::of(entry, path);
    let origin = format!("{} {path}", report.source);
    let own_mode = fields
        .get("failureAction")
        .map(|value| failure_action(value, &fields.path("failureAction"), report));
    let mut rule = DraftRule::new(imports.name(base), origin.clone(), family, own_mode.unwrap_or_default());
    rule.namespaces = scope.namespaces.clone();
    rule.exclude_namespaces = scope.exclude.clone();
    rule.widened = scope.widened;

    let (patterns, skipped) = images::images(&mut fields, report);
    rule.images = patterns;

    // Who signs.
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Cosign")
        .to_string();
    // Notary: its `certificates` attestors become Notation authorities (see attestors.rs).
    let notary = kind.eq_ignore_ascii_case("Notary");
    let mut signers = Signers::default();
    if let Some(attestors) = fields.get("attestors") {
        signers.image = Some(attestor_sets(attestors, &fields.path("attestors"), notary, report));
    }
    if let Some((legacy, legacy_path)) = legacy_attestor(&mut fields, report) {
        if signers.image.is_some() {
            // Kyverno adds it as one more attestor set, which must be satisfied too.
            report.dropped(
                &legacy_path,
                "Kyverno adds this signer as a further attestor set, required as well as `attestors`; pullgate \
                 accepts any one authority of a rule, so this requirement is dropped and the rule denies",
            );
            signers.image = Some(Vec::new());
        } else {
            signers.image = Some(legacy);
        }
    }
    let mut attestations: Vec<Attested> = Vec::new();
    if let Some(list) = fields.get("attestations") {
        for (i, (attestation_path, attestation)) in items(list, &fields.path("attestations"), report)
            .into_iter()
            .enumerate()
        {
            attestations.push(attestations::attestation(
                attestation,
                &attestation_path,
                i,
                notary,
                report,
            ));
        }
    }
    let annotations = fields.get("annotations").is_some();
    let repository = fields.get("repository").is_some();

    // What means nothing on the node.
    for (field, why) in DIGEST_SETTINGS.into_iter().chain([
        ("useCache", "pullgate caches verified digests itself"),
        (
            "imageRegistryCredentials",
            "pullgate uses the credentials kubelet sends with each pull",
        ),
        (
            "cosignOCI11",
            "pullgate looks for signatures in the referrers API and cosign's tags alike",
        ),
    ]) {
        if fields.get(field).is_some() {
            report.note(&fields.path(field), why);
        }
    }
    if fields.get("validate").is_some() {
        report.dropped(
            &fields.path("validate"),
            "checks on the verified image's metadata have no pullgate equivalent; dropped",
        );
    }
    report.unread(&fields, "dropped");

    if rule.images.is_empty() {
        report.dropped(path, "no image pattern could be carried over; the rule is not imported");
        return Vec::new();
    }
    // Kyverno requires nothing of an entry without attestors or attestations.
    if signers.image.is_none() && attestations.is_empty() {
        report.note(
            path,
            "neither attestors nor attestations: Kyverno checks nothing here; not imported",
        );
        return Vec::new();
    }
    let never = attestations.iter().any(|a| a.never);
    let authorities = choose_signers(&signers, &attestations, path, report);
    rule.authorities = authorities;
    // Without attestors of its own, Kyverno verifies the entry's attestations only.
    rule.require_signature = signers.image.is_some();
    rule.attestations = attestations.into_iter().map(|a| a.attestation).collect();
    if annotations {
        report.dropped(
            &format!("{path}.annotations"),
            "pullgate does not check signature annotations; its signers are dropped rather than accepted without them",
        );
        rule.authorities.clear();
    }
    if repository {
        report.dropped(&format!("{path}.repository"), authority::SIGNATURES_ELSEWHERE);
    }
    name_authorities(&mut rule.authorities);
    if never && rule.action == Action::Verify {
        rule.action = Action::Deny;
        rule.authorities.clear();
        rule.attestations.clear();
        rule.comments
            .push("Denies: an attestation's conditions can never hold (see stderr), as in Kyverno.".to_string());
    }
    rule.fail_closed(report, path);

    let mut rules = Vec::new();
    let copies = policy.actions.apply(&mut rule, own_mode, base, path, imports, report);
    if let Some(skipped) = skipped.filter(|s| !s.is_empty()) {
        let mut skip = DraftRule::new(imports.name(&format!("{base}-skip")), origin.clone(), family, rule.mode);
        skip.images = skipped;
        skip.namespaces = rule.namespaces.clone();
        skip.exclude_namespaces = rule.exclude_namespaces.clone();
        skip.action = Action::Allow;
        skip.comments
            .push("skipImageReferences: this rule does not check them, so the next one must not either.".to_string());
        rules.push(skip);
    }
    rules.extend(copies);
    rules.push(rule);
    rules
}
