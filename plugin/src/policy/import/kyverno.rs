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
//!   signed only by the attestation's own attestors are refused, which is reported.
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

use serde_json::Value;

use super::{
    authority::{self, OwnTrust},
    condition,
    document::{boolean, index, items, join, string, strings, Fields, Report},
    failure_action::{failure_action, Actions},
    glob::{self, Dialect, Reading},
    rule::{narrow_to, Attestation, Authority, AuthorityKind, Identity, Image, Narrowed, Rule},
    scope::{self, Home, Scope},
    unique_in, Imports,
};
use crate::policy::{predicate, Action, Tlog};

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
fn verify_image(entry: &Value, place: &Place<'_>, report: &mut Report<'_>, imports: &mut Imports) -> Vec<Rule> {
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
    let mut rule = Rule::new(imports.name(base), origin.clone(), family, own_mode.unwrap_or_default());
    rule.namespaces = scope.namespaces.clone();
    rule.exclude_namespaces = scope.exclude.clone();
    rule.widened = scope.widened;

    // Which images.
    let mut patterns = Vec::new();
    if let Some(references) = fields.get("imageReferences") {
        let refs_path = fields.path("imageReferences");
        for (i, pattern) in strings(references, &refs_path, report).into_iter().enumerate() {
            patterns.extend(glob::translate(
                &pattern,
                Dialect::KyvernoWildcard,
                Reading::Wide,
                &index(&refs_path, i),
                report,
            ));
        }
    }
    if let Some(image) = fields.get("image") {
        if let Some(pattern) = string(image, &fields.path("image"), report) {
            patterns.extend(glob::translate(
                pattern,
                Dialect::KyvernoWildcard,
                Reading::Wide,
                &fields.path("image"),
                report,
            ));
        }
    }
    // Skipped images are let through unchecked: only those Kyverno surely skips.
    let skipped = fields.get("skipImageReferences").map(|value| {
        let skip_path = fields.path("skipImageReferences");
        let mut skipped = Vec::new();
        for (i, pattern) in strings(value, &skip_path, report).into_iter().enumerate() {
            skipped.extend(glob::translate(
                &pattern,
                Dialect::KyvernoWildcard,
                Reading::Narrow,
                &index(&skip_path, i),
                report,
            ));
        }
        skipped
    });
    dedup(&mut patterns);
    rule.images = patterns;

    // Who signs.
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Cosign")
        .to_string();
    let notary = kind.eq_ignore_ascii_case("Notary");
    if notary {
        report.dropped(
            &fields.path("type"),
            "Notary signatures are not supported by pullgate; its attestors are dropped",
        );
    }
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
            attestations.push(self::attestation(attestation, &attestation_path, i, notary, report));
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
        let mut skip = Rule::new(imports.name(&format!("{base}-skip")), origin.clone(), family, rule.mode);
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

/// The signers an entry names for the image, when it has `attestors`; empty when none could be
/// carried over.
#[derive(Default)]
struct Signers {
    image: Option<Vec<Authority>>,
}

/// An attestation with the signers of its own `attestors`, if it has any.
struct Attested {
    attestation: Attestation,
    signers: Option<Vec<Authority>>,
    /// Something it requires cannot be carried over: the rule must deny.
    poisoned: bool,
    /// Its conditions can never hold, in Kyverno as here: the rule denies.
    never: bool,
    path: String,
}

/// The rule's authorities: the image's signers, or when there are none, the first
/// attestation's; narrowed to those every attestation with attestors of its own names too
/// (see [`narrow_to`]).
fn choose_signers(signers: &Signers, attestations: &[Attested], path: &str, report: &mut Report<'_>) -> Vec<Authority> {
    let mut chosen = match &signers.image {
        Some(image) => image.clone(),
        None => match attestations.iter().find_map(|a| a.signers.clone()) {
            Some(first) => {
                report.dropped(
                    &format!("{path}.attestations"),
                    "Kyverno checks no image signature here, only attestations; pullgate also requires \
                     the image to be signed by the attestations' signers (stricter)",
                );
                first
            }
            None => {
                report.dropped(
                    &format!("{path}.attestations"),
                    "no attestor is named for the attestations; pullgate needs signers to check them against",
                );
                Vec::new()
            }
        },
    };
    for attested in attestations {
        if attested.poisoned {
            return Vec::new();
        }
        let Some(own) = &attested.signers else {
            continue;
        };
        let before = chosen.len();
        if narrow_to(&mut chosen, own) == Narrowed::Stricter {
            let message = if chosen.len() < before {
                "pullgate checks attestations against the rule's authorities, so it keeps only the image's \
                 signers that are among these attestors too; images signed only by the others are denied (stricter)"
            } else {
                "pullgate checks attestations against the rule's authorities (the image's signers), so \
                 attestations signed only by the other attestors are refused (stricter)"
            };
            report.dropped(&format!("{}.attestors", attested.path), message);
        }
    }
    chosen
}

/// `attestors`: carried over when one set is satisfied by any one entry.
fn attestor_sets(value: &Value, path: &str, notary: bool, report: &mut Report<'_>) -> Vec<Authority> {
    let sets = items(value, path, report);
    let mut translated = Vec::new();
    let mut needs_several = sets.len() > 1;
    for (set_path, set) in &sets {
        let mut fields = Fields::of(set, set_path.clone());
        let count = fields.get("count").and_then(Value::as_u64).filter(|c| *c > 0);
        let mut expanded = 0usize;
        if let Some(entries) = fields.get("entries") {
            for (entry_path, entry) in items(entries, &fields.path("entries"), report) {
                let (authorities, n) = attestor(entry, &entry_path, notary, report);
                expanded += n;
                translated.extend(authorities);
            }
        }
        report.unread(&fields, "dropped");
        let required = count.map_or(expanded, |c| c as usize);
        if required > 1 {
            needs_several = true;
            report.dropped(
                set_path,
                format!(
                    "{required} of its {expanded} attestors must all sign; pullgate accepts any one authority \
                     of a rule, so this requirement is dropped and the rule denies"
                ),
            );
        }
    }
    if needs_several {
        if sets.len() > 1 {
            report.dropped(
                path,
                format!(
                    "{} attestor sets must each be satisfied; pullgate accepts any one authority of a rule, \
                     so this requirement is dropped and the rule denies",
                    sets.len()
                ),
            );
        }
        return Vec::new();
    }
    translated
}

/// One `entries[]` item: its authorities (several for several keys in one `publicKeys`) and how
/// many entries Kyverno counts it as.
fn attestor(entry: &Value, path: &str, notary: bool, report: &mut Report<'_>) -> (Vec<Authority>, usize) {
    let mut fields = Fields::of(entry, path);
    let mut authorities = Vec::new();
    let mut count = 1;
    let mut keep = !notary;
    if let Some(keys) = fields.get("keys") {
        let (keys, n) = key_attestor(keys, &fields.path("keys"), report);
        count = n.max(1);
        authorities.extend(keys);
    }
    if let Some(keyless) = fields.get("keyless") {
        authorities.extend(keyless_attestor(keyless, &fields.path("keyless"), report));
    }
    if fields.get("certificates").is_some() {
        report.dropped(&fields.path("certificates"), authority::NO_CERTIFICATE_ATTESTORS);
    }
    if fields.get("attestor").is_some() {
        report.dropped(
            &fields.path("attestor"),
            "nested attestor sets are not supported by pullgate; dropped",
        );
    }
    if fields.get("annotations").is_some() {
        report.dropped(&fields.path("annotations"), authority::NO_ANNOTATION_CHECKS);
        keep = false;
    }
    if fields.get("repository").is_some() {
        report.dropped(&fields.path("repository"), authority::SIGNATURES_ELSEWHERE);
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the attestor is dropped rather than accepted without it");
        keep = false;
    }
    if !keep {
        authorities.clear();
    }
    (authorities, count)
}

/// `keys`: one authority per PEM block.
fn key_attestor(value: &Value, path: &str, report: &mut Report<'_>) -> (Vec<Authority>, usize) {
    let mut fields = Fields::of(value, path);
    let mut authorities = Vec::new();
    let mut count = 1;
    let mut trust = OwnTrust::default();
    let tlog = rekor(&mut fields, &mut trust, report);
    if fields.get("ctlog").is_some() {
        report.note(
            &fields.path("ctlog"),
            "a key signature has no certificate, so there is no SCT to check",
        );
    }
    let mut usable = authority::sha256_only(&mut fields, "signatureAlgorithm", report);
    // The PEM keys of the entry, if any, still count without the ones the node cannot read.
    authority::off_node_key(&mut fields, "secret", report);
    if let Some(pems) = fields.get("publicKeys") {
        let pems_path = fields.path("publicKeys");
        if let Some(text) = string(pems, &pems_path, report) {
            let blocks = authority::split_pems(text);
            count = blocks.len();
            for block in blocks {
                authorities.extend(authority::key(String::new(), &block, tlog, &pems_path, report));
            }
        }
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the attestor is dropped rather than accepted without it");
        usable = false;
    }
    if !usable || trust.is_found() {
        authorities.clear();
    }
    (authorities, count)
}

/// `rekor` of `keys` or `keyless`: how the transparency log is checked, and whether it is one
/// of the signer's own.
fn rekor(fields: &mut Fields<'_>, trust: &mut OwnTrust, report: &mut Report<'_>) -> Tlog {
    let Some(value) = fields.get("rekor") else {
        return Tlog::Required;
    };
    let mut rekor = Fields::of(value, fields.path("rekor"));
    let ignore = rekor
        .get("ignoreTlog")
        .map(|v| boolean(v, &rekor.path("ignoreTlog"), false, report))
        .unwrap_or(false);
    if let Some(url) = rekor.get("url").and_then(Value::as_str) {
        if !authority::public_rekor(url) && !ignore {
            trust.found(&rekor.path("url"), &format!("the transparency log {url}"), report);
        }
    }
    if rekor.get("pubkey").is_some() && !ignore {
        trust.found(&rekor.path("pubkey"), "a transparency log key", report);
    }
    trust.unread(&rekor, report);
    if ignore {
        Tlog::Ignore
    } else {
        Tlog::Required
    }
}

fn keyless_attestor(value: &Value, path: &str, report: &mut Report<'_>) -> Option<Authority> {
    let mut fields = Fields::of(value, path);
    let mut trust = OwnTrust::default();
    let tlog = rekor(&mut fields, &mut trust, report);
    if let Some(ctlog) = fields.get("ctlog") {
        let mut ct = Fields::of(ctlog, fields.path("ctlog"));
        if ct.get("ignoreSCT").and_then(Value::as_bool) == Some(true) {
            report.dropped(
                &ct.path("ignoreSCT"),
                "pullgate always checks the certificate's SCT, so certificates without one are refused (stricter)",
            );
        }
        if ct.get("pubkey").is_some() {
            trust.found(&ct.path("pubkey"), "a CT log key", report);
        }
        if ct.get("tsaCertChain").is_some() {
            trust.found(&ct.path("tsaCertChain"), "a timestamp authority", report);
        }
        trust.unread(&ct, report);
    }
    if fields.get("roots").is_some() {
        trust.found(&fields.path("roots"), "custom Fulcio roots", report);
    }
    let issuer = wildcard_or_regexp(&mut fields, "issuer", report);
    let subject = wildcard_or_regexp(&mut fields, "subject", report);
    let extensions = match fields.get("additionalExtensions") {
        Some(Value::Object(map)) => authority::extensions(map, &fields.path("additionalExtensions"), report),
        Some(_) => {
            report.dropped(
                &fields.path("additionalExtensions"),
                "expected a mapping; the signer is dropped",
            );
            None
        }
        None => Some(Default::default()),
    };
    if !fields.unread().is_empty() {
        report.unread(&fields, "the signer is dropped rather than accepted without it");
        return None;
    }
    if trust.is_found() {
        return None;
    }
    Some(Authority {
        name: String::new(),
        kind: AuthorityKind::Keyless {
            issuer: issuer?,
            subject: subject?,
            extensions: extensions?,
        },
        tlog,
        comment: None,
    })
}

/// `issuer` (a wildcard) or `issuerRegExp`, and the same for `subject`.
fn wildcard_or_regexp(fields: &mut Fields<'_>, what: &str, report: &mut Report<'_>) -> Option<Identity> {
    let exact = fields.get(what).and_then(Value::as_str).filter(|s| !s.is_empty());
    let regexp = fields.get(&format!("{what}RegExp")).and_then(Value::as_str);
    match (exact, regexp) {
        (Some(pattern), None) => Some(authority::wildcard_identity(what, pattern)),
        _ => authority::identity(exact, regexp, fields.own_path(), what, report),
    }
}

/// The signer of Kyverno's first `verifyImages` form (`key`, or `issuer` with `subject` and
/// `roots`, on the entry itself) and the path of the field that makes it, if the entry has
/// one; its authorities are empty when it cannot be carried over. Kyverno reads `subject` and
/// `roots` only with `issuer`, and neither next to `key`.
fn legacy_attestor(fields: &mut Fields<'_>, report: &mut Report<'_>) -> Option<(Vec<Authority>, String)> {
    let ignored = |fields: &mut Fields<'_>, why: &str, report: &mut Report<'_>| {
        for field in ["subject", "roots", "issuer"] {
            if fields.get(field).is_some() {
                report.note(&fields.path(field), why);
            }
        }
    };
    if let Some(key) = fields.get("key") {
        let path = fields.path("key");
        let authorities = match string(key, &path, report) {
            Some(text) => authority::key(String::new(), text, Tlog::Required, &path, report)
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        ignored(fields, "Kyverno ignores it next to `key`", report);
        return Some((authorities, path));
    }
    if !fields.has("issuer") {
        ignored(fields, "Kyverno ignores it without `issuer`", report);
        return None;
    }
    let path = fields.path("issuer");
    let mut trust = OwnTrust::default();
    if fields.get("roots").is_some() {
        trust.found(&fields.path("roots"), "custom Fulcio roots", report);
    }
    let issuer = wildcard_or_regexp(fields, "issuer", report);
    let subject = wildcard_or_regexp(fields, "subject", report);
    let extensions = match fields.get("additionalExtensions") {
        Some(Value::Object(map)) => authority::extensions(map, &fields.path("additionalExtensions"), report),
        _ => Some(Default::default()),
    };
    let authorities = match (issuer, subject, extensions) {
        (Some(issuer), Some(subject), Some(extensions)) if !trust.is_found() => vec![Authority {
            name: String::new(),
            kind: AuthorityKind::Keyless {
                issuer,
                subject,
                extensions,
            },
            tlog: Tlog::Required,
            comment: None,
        }],
        _ => Vec::new(),
    };
    Some((authorities, path))
}

fn attestation(value: &Value, path: &str, i: usize, notary: bool, report: &mut Report<'_>) -> Attested {
    let mut fields = Fields::of(value, path);
    let given = fields
        .get("predicateType")
        .map(|v| (v, fields.path("predicateType")))
        .or_else(|| fields.get("type").map(|v| (v, fields.path("type"))));
    let name = fields.get("name").and_then(Value::as_str).map(str::to_string);
    let mut poisoned = false;
    let predicate_type = match given {
        Some((Value::String(text), type_path)) => match predicate::resolve(text) {
            Ok(uri) => Some(uri),
            Err(why) => {
                report.dropped(
                    &type_path,
                    format!("{why}; the rule denies, as Kyverno would never find it"),
                );
                poisoned = true;
                None
            }
        },
        _ => {
            report.dropped(path, "no predicateType; the rule denies, as Kyverno refuses it");
            poisoned = true;
            None
        }
    };
    let signers = fields
        .get("attestors")
        .map(|attestors| attestor_sets(attestors, &fields.path("attestors"), notary, report));
    let poisoned = poisoned || signers.as_ref().is_some_and(Vec::is_empty);
    let conditions = fields
        .get("conditions")
        .map(|c| condition::translate(c, &fields.path("conditions"), report))
        .unwrap_or(Some(Vec::new()));
    let never = conditions.is_none();
    let conditions = conditions.unwrap_or_default();
    report.unread(&fields, "dropped");
    let predicate_type = predicate_type.unwrap_or_default();
    let base = name.unwrap_or_else(|| short_name(&predicate_type, i));
    Attested {
        attestation: Attestation {
            name: base,
            predicate_type,
            conditions,
        },
        signers,
        poisoned,
        never,
        path: path.to_string(),
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

/// Names authorities after what they are: `key-1`, `keyless-1`, …
pub(super) fn name_authorities(authorities: &mut [Authority]) {
    let mut used = Vec::new();
    for authority in authorities.iter_mut() {
        if authority.name.is_empty() {
            let base = match authority.kind {
                AuthorityKind::Key { .. } => "key",
                AuthorityKind::Keyless { .. } => "keyless",
            };
            authority.name = unique_in(&mut used, base, true);
        } else {
            authority.name = unique_in(&mut used, &authority.name.clone(), false);
        }
    }
}

fn dedup(images: &mut Vec<Image>) {
    let mut seen = Vec::new();
    images.retain(|image| {
        if seen.contains(&image.glob) {
            return false;
        }
        seen.push(image.glob.clone());
        true
    });
}
