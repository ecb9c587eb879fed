//! Sigstore policy-controller `ClusterImagePolicy` (policy.sigstore.dev/v1alpha1 and v1beta1),
//! and its `config-policy-controller` ConfigMap.
//!
//! What policy-controller means, and how it is carried over:
//! - An image passes a ClusterImagePolicy when any one of its `authorities` passes: pullgate's
//!   rule authorities are the same any-of.
//! - An authority with `attestations` passes on its attestations alone, without an image
//!   signature: a rule with `requireSignature: false`, whose attestations are checked against
//!   the authority's signers. pullgate checks attestations against all of a rule's authorities
//!   and cannot offer a signature as an alternative to them, so only one authority with
//!   attestations carries over, and the others are reported (stricter). With `spec.policy` over
//!   all authorities' results (how policy-controller asks for a signature beside attestations),
//!   which pullgate cannot read, the image's signature stays required.
//! - `static` authorities pass (`action: pass`) or fail everything.
//! - Signatures need a transparency-log entry (the public Rekor, or `ctlog.url`): `tlog:
//!   required`.
//! - `mode: enforce|warn`; images no policy matches follow `no-match-policy` (deny by default).

use serde_json::Value;

use super::{
    authority::{self, name_authorities, OwnTrust},
    document::{items, string, Fields, Report},
    draft::{short_name, DraftAttestation, DraftAuthority, DraftRule},
    glob::{self, Dialect, Reading},
    Imports,
};
use pullgate::policy::{predicate, Action, Mode, NoMatch, Tlog};

/// The ConfigMap policy-controller reads its settings from.
pub(super) const CONFIG_MAP: &str = "config-policy-controller";

/// Translates one `ClusterImagePolicy`.
pub(super) fn cluster_image_policy(doc: &Value, name: &str, imports: &mut Imports, report: &mut Report<'_>) {
    imports.policy_controller = true;
    let mut top = Fields::of(doc, "");
    top.skip(&["apiVersion", "kind", "metadata", "status"]);
    let Some(spec) = top.get("spec") else {
        report.dropped("spec", "missing; nothing imported");
        return;
    };
    report.unread(&top, "dropped");
    let mut spec = Fields::of(spec, "spec");
    let origin = format!("{}", report.source);
    let mode = match spec.get("mode").and_then(Value::as_str) {
        None | Some("enforce") => Mode::Enforce,
        Some("warn") => Mode::Warn,
        Some(other) => {
            report.dropped(
                &spec.path("mode"),
                format!("{other:?} is not enforce or warn; read as enforce"),
            );
            Mode::Enforce
        }
    };
    let mut patterns = Vec::new();
    if let Some(images) = spec.get("images") {
        for (image_path, image) in items(images, &spec.path("images"), report) {
            let mut fields = Fields::of(image, image_path.clone());
            if let Some(pattern) = fields.get("glob") {
                if let Some(pattern) = string(pattern, &fields.path("glob"), report) {
                    patterns.push((pattern.to_string(), fields.path("glob")));
                }
            }
            if fields.get("regex").is_some() {
                report.dropped(
                    &fields.path("regex"),
                    "regular expressions over image names have no pullgate equivalent; pattern dropped",
                );
            }
            report.unread(&fields, "dropped");
        }
    }
    let policy = spec.get("policy").is_some();
    let selects = spec.get("match").is_some();
    let authorities = spec.get("authorities");
    report.unread(&spec, "dropped");

    let mut translated = Vec::new();
    if let Some(list) = authorities {
        for (i, (path, value)) in items(list, "spec.authorities", report).into_iter().enumerate() {
            translated.push(authority(value, &path, i, report));
        }
    }
    let passes = translated.iter().any(|a| a.outcome == Outcome::Pass);
    if passes && (policy || selects) {
        // What narrows a policy that lets images through cannot be dropped: it would let them
        // through for every pod.
        let narrowings = [
            (selects, "match", "resource selectors cannot be evaluated on the node"),
            (
                policy,
                "policy",
                "a policy over all authorities' results (CUE or Rego) has no pullgate equivalent",
            ),
        ];
        for (_, field, why) in narrowings.iter().filter(|(present, ..)| *present) {
            report.dropped(
                &spec.path(field),
                format!(
                    "{why}, and this policy lets images through only where it holds; not imported, so the other \
                     rules and no-match-policy decide its images"
                ),
            );
        }
        return;
    }
    if policy {
        report.dropped(
            &spec.path("policy"),
            "a policy over all authorities' results (CUE or Rego) has no pullgate equivalent; dropped",
        );
    }
    if selects {
        report.dropped(
            &spec.path("match"),
            "resource selectors cannot be evaluated on the node, so the rule covers every pull (stricter)",
        );
    }

    let family = imports.family();
    let mut rule = DraftRule::new(imports.name(name), origin, family, mode);
    rule.widened = selects;
    let reading = if passes { Reading::Narrow } else { Reading::Wide };
    for (pattern, path) in &patterns {
        rule.images.extend(glob::translate(
            pattern,
            Dialect::PolicyController,
            reading,
            path,
            report,
        ));
    }
    if rule.images.is_empty() {
        report.dropped(
            "spec.images",
            "no image pattern could be carried over; the policy is not imported",
        );
        return;
    }
    if passes {
        rule.action = Action::Allow;
        rule.comments.push("A static authority passes every image.".to_string());
        imports.rules.push(rule);
        return;
    }
    choose(&mut rule, translated, policy, report);
    name_authorities(&mut rule.authorities);
    rule.fail_closed(report, "spec.authorities");
    imports.rules.push(rule);
}

/// What one authority came to.
struct Translated {
    path: String,
    outcome: Outcome,
    authorities: Vec<DraftAuthority>,
    attestations: Option<Vec<DraftAttestation>>,
    /// An attestation's `policy` (CUE or Rego) was dropped: the attestation alone proves less
    /// than policy-controller asked.
    policy_dropped: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Checks signatures (or attestations).
    Verify,
    /// `static: {action: pass}`.
    Pass,
    /// `static: {action: fail}`, or nothing could be carried over: it never passes.
    Never,
}

/// The rule's authorities and attestations from the translated authorities; `combined` when a
/// policy over all their results (`spec.policy`) decides, which may require a signature too.
fn choose(rule: &mut DraftRule, translated: Vec<Translated>, combined: bool, report: &mut Report<'_>) {
    // policy-controller checks attestations instead of signatures when the list is not empty.
    let attesting = translated
        .iter()
        .position(|t| t.attestations.as_ref().is_some_and(|a| !a.is_empty()) && !t.authorities.is_empty());
    match attesting {
        None => {
            for t in translated {
                rule.authorities.extend(t.authorities);
            }
        }
        Some(chosen) => {
            for (i, t) in translated.into_iter().enumerate() {
                if t.outcome != Outcome::Verify || t.authorities.is_empty() {
                    continue;
                }
                if i == chosen && combined {
                    // spec.policy may need another authority's signature too: attestations
                    // alone must not pass what it refuses.
                    report.dropped(
                        &format!("{}.attestations", t.path),
                        "policy-controller passes this authority on its attestations alone unless spec.policy, \
                         which pullgate cannot read, asks for more, as it does to require a signature beside \
                         them; pullgate also requires an image signature from this authority",
                    );
                    rule.authorities = t.authorities;
                    rule.attestations = t.attestations.unwrap_or_default();
                } else if i == chosen && t.policy_dropped {
                    // Without its policy, an attestation proves only that the authority
                    // attested something of that type (a scanner attests failing images too):
                    // too little to stand in for the image's signature.
                    report.dropped(
                        &format!("{}.attestations", t.path),
                        "policy-controller passes this authority on its attestations alone, judged by their \
                         policies, which pullgate cannot read; pullgate also requires an image signature from \
                         this authority",
                    );
                    rule.authorities = t.authorities;
                    rule.attestations = t.attestations.unwrap_or_default();
                } else if i == chosen {
                    report.note(
                        &format!("{}.attestations", t.path),
                        "policy-controller passes this authority on its attestations alone, without an image \
                         signature; so does pullgate, with requireSignature: false",
                    );
                    rule.authorities = t.authorities;
                    rule.attestations = t.attestations.unwrap_or_default();
                    rule.require_signature = false;
                } else {
                    report.dropped(
                        &t.path,
                        "pullgate cannot accept this authority as an alternative to one that checks \
                         attestations; dropped (stricter)",
                    );
                }
            }
        }
    }
}

fn authority(value: &Value, path: &str, i: usize, report: &mut Report<'_>) -> Translated {
    let mut fields = Fields::of(value, path);
    let name = fields
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("authority-{i}"), str::to_string);
    let mut translated = Translated {
        path: path.to_string(),
        outcome: Outcome::Verify,
        authorities: Vec::new(),
        attestations: None,
        policy_dropped: false,
    };
    let mut trust = OwnTrust::default();
    let tlog = ctlog(&mut fields, &mut trust, report);
    if let Some(key) = fields.get("key") {
        translated
            .authorities
            .extend(key_authority(key, &fields.path("key"), &name, tlog, report));
    }
    if let Some(keyless) = fields.get("keyless") {
        translated.authorities.extend(keyless_authorities(
            keyless,
            &fields.path("keyless"),
            &name,
            tlog,
            &mut trust,
            report,
        ));
    }
    if let Some(value) = fields.get("static") {
        let action = value.get("action").and_then(Value::as_str);
        translated.outcome = match action {
            Some("pass") => Outcome::Pass,
            Some("fail") => Outcome::Never,
            _ => {
                report.dropped(&fields.path("static"), "neither pass nor fail; read as fail");
                Outcome::Never
            }
        };
    }
    let mut unchecked = false;
    if let Some(list) = fields.get("attestations") {
        let mut attestations = Vec::new();
        for (j, (attestation_path, attestation)) in items(list, &fields.path("attestations"), report)
            .into_iter()
            .enumerate()
        {
            translated.policy_dropped |= attestation.get("policy").is_some();
            match self::attestation(attestation, &attestation_path, j, report) {
                Some(attestation) => attestations.push(attestation),
                None => unchecked = true,
            }
        }
        translated.attestations = Some(attestations);
    }
    if fields.get("source").is_some() {
        report.dropped(&fields.path("source"), authority::SIGNATURES_ELSEWHERE);
    }
    if fields.get("rfc3161timestamp").is_some() {
        report.note(
            &fields.path("rfc3161timestamp"),
            "pullgate accepts RFC 3161 timestamps from the authorities of spec.trustedRoot",
        );
    }
    if fields.get("signatureFormat").is_some() {
        report.note(
            &fields.path("signatureFormat"),
            "pullgate reads both cosign's legacy signatures and Sigstore bundles",
        );
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the authority is dropped rather than accepted without it");
        translated.authorities.clear();
    }
    // An attestation that cannot be checked is never found: the authority never passes.
    if trust.is_found() || unchecked {
        translated.authorities.clear();
    }
    if translated.outcome == Outcome::Verify && translated.authorities.is_empty() {
        translated.outcome = Outcome::Never;
    }
    if translated.outcome == Outcome::Never {
        translated.authorities.clear();
    }
    translated
}

/// `ctlog` of an authority: the transparency log its signatures must be in.
fn ctlog(fields: &mut Fields<'_>, trust: &mut OwnTrust, report: &mut Report<'_>) -> Tlog {
    if let Some(value) = fields.get("ctlog") {
        let mut ct = Fields::of(value, fields.path("ctlog"));
        if let Some(url) = ct.get("url").and_then(Value::as_str) {
            if !authority::public_rekor(url) {
                trust.found(&ct.path("url"), &format!("the transparency log {url}"), report);
            }
        }
        if ct.get("trustRootRef").is_some() {
            trust.found(&ct.path("trustRootRef"), "a TrustRoot", report);
        }
        trust.unread(&ct, report);
    }
    Tlog::Required
}

fn key_authority(value: &Value, path: &str, name: &str, tlog: Tlog, report: &mut Report<'_>) -> Option<DraftAuthority> {
    let mut fields = Fields::of(value, path);
    let off_node = authority::off_node_key(&mut fields, "secretRef", report);
    let mut usable = authority::sha256_only(&mut fields, "hashAlgorithm", report) && !off_node;
    let data = fields.get("data");
    if !fields.unread().is_empty() {
        report.unread(&fields, "the authority is dropped rather than accepted without it");
        usable = false;
    }
    let pem = string(data?, &fields.path("data"), report)?;
    let authority = authority::key(name.to_string(), pem, tlog, &fields.path("data"), report)?;
    usable.then_some(authority)
}

fn keyless_authorities(
    value: &Value,
    path: &str,
    name: &str,
    tlog: Tlog,
    trust: &mut OwnTrust,
    report: &mut Report<'_>,
) -> Vec<DraftAuthority> {
    let mut fields = Fields::of(value, path);
    if let Some(url) = fields.get("url").and_then(Value::as_str) {
        if !authority::public_fulcio(url) {
            trust.found(&fields.path("url"), &format!("the Fulcio at {url}"), report);
        }
    }
    for (field, what) in [
        ("caCert", "a custom certificate authority"),
        ("trustRootRef", "a TrustRoot"),
    ] {
        if fields.get(field).is_some() {
            trust.found(&fields.path(field), what, report);
        }
    }
    if fields.get("insecureIgnoreSCT").and_then(Value::as_bool) == Some(true) {
        report.dropped(
            &fields.path("insecureIgnoreSCT"),
            "pullgate always checks the certificate's SCT, so certificates without one are refused (stricter)",
        );
    }
    let mut authorities = Vec::new();
    if let Some(identities) = fields.get("identities") {
        let path = fields.path("identities");
        authorities = authority::keyless_identities(identities, &path, name, tlog, report);
    } else {
        report.dropped(
            path,
            "no identities: the authority is dropped rather than accept any identity",
        );
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the authority is dropped rather than accepted without it");
        authorities.clear();
    }
    authorities
}

/// An attestation of an authority; its `policy` (CUE or Rego) is reported and dropped, the
/// attestation itself still required. `None`, reported, for one that cannot be checked.
fn attestation(value: &Value, path: &str, j: usize, report: &mut Report<'_>) -> Option<DraftAttestation> {
    let mut fields = Fields::of(value, path);
    let name = fields.get("name").and_then(Value::as_str).map(str::to_string);
    let predicate_type = match fields.get("predicateType") {
        Some(Value::String(text)) => match predicate::resolve(text) {
            Ok(uri) => uri,
            Err(why) => {
                report.dropped(
                    &fields.path("predicateType"),
                    format!("{why}; no such attestation can be found, so this authority never passes"),
                );
                report.unread(&fields, "dropped");
                return None;
            }
        },
        _ => {
            report.dropped(
                path,
                "no predicateType; no such attestation can be found, so this authority never passes",
            );
            return None;
        }
    };
    if let Some(policy) = fields.get("policy") {
        let kind = policy.get("type").and_then(Value::as_str).unwrap_or("unknown");
        let language = match kind {
            "cue" => "CUE",
            "rego" => "Rego",
            other => other,
        };
        report.dropped(
            &fields.path("policy"),
            format!(
                "{language} policies have no pullgate equivalent; the policy is dropped, the attestation is still required"
            ),
        );
    }
    report.unread(&fields, "dropped");
    Some(DraftAttestation {
        name: name.unwrap_or_else(|| short_name(&predicate_type, j)),
        predicate_type,
        conditions: Vec::new(),
    })
}

/// `config-policy-controller`: its `no-match-policy` becomes `noMatch`.
pub(super) fn config_map(doc: &Value, imports: &mut Imports, report: &mut Report<'_>) {
    imports.policy_controller = true;
    let mut top = Fields::of(doc, "");
    top.skip(&["apiVersion", "kind", "metadata", "binaryData"]);
    if let Some(data) = top.get("data") {
        let mut data = Fields::of(data, "data");
        if let Some(value) = data.get("no-match-policy") {
            let path = data.path("no-match-policy");
            imports.no_match = match value.as_str() {
                Some("deny") => Some(NoMatch::Deny),
                Some("warn") => Some(NoMatch::Warn),
                Some("allow") => Some(NoMatch::Allow),
                _ => {
                    report.dropped(
                        &path,
                        "not deny, warn or allow; read as deny, policy-controller's default",
                    );
                    Some(NoMatch::Deny)
                }
            };
        }
        for key in data.unread() {
            report.note(
                &data.path(key),
                "a policy-controller setting with no meaning for pullgate; ignored",
            );
        }
    }
    report.unread(&top, "dropped");
}
