//! Ratify's Notation verifier (`Verifier`, config.ratify.deislabs.io) as pullgate rules.
//!
//! A Notation verifier holds a Notation trust policy document (`parameters.trustPolicyDoc`) and
//! names its trust stores' certificates by `KeyManagementProvider` (or older
//! `CertificateStore`) resources (`parameters.verificationCertStores`). Each trust policy
//! becomes one rule over its `registryScopes` (`*` every image; otherwise one repository,
//! matched exactly), with one Notation authority: the `ca`/`signingAuthority` stores as its
//! `certificates`, the `tsa` stores as `tsaCertificates`, `trustedIdentities` as given.
//! Certificates are taken only from inline providers in the same input; a store whose
//! certificates live elsewhere (Azure Key Vault, files in Ratify's pod) is named in a finding
//! for the operator to supply, and a rule left with no trust store denies.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    document::{items, show, string, strings, Fields, Report},
    draft::{DraftAuthority, DraftAuthorityKind, DraftImage, DraftRule},
    Imports,
};
use pullgate::{
    policy::{Action, ImageGlob, Mode, Tlog},
    verify::notation::{parse_certificates, TrustedIdentities},
};

/// The artifact type of Notary Project signatures.
const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";

/// What each certificate provider in the input holds: its PEM text, or why it holds none here.
/// Keyed by name, and by `namespace/name` when the document says its namespace.
#[derive(Default)]
pub(super) struct Stores {
    providers: BTreeMap<String, Result<String, String>>,
}

/// Whether a document is a Ratify certificate provider.
pub(super) fn is_provider(kind: &str) -> bool {
    matches!(
        kind,
        "KeyManagementProvider" | "NamespacedKeyManagementProvider" | "CertificateStore"
    )
}

/// Reads every certificate provider of `documents` (and of their `…List` items), wherever they
/// are in the input, so that a verifier may come before the providers it names.
pub(super) fn stores(documents: &[Value]) -> Stores {
    let mut stores = Stores::default();
    for document in documents {
        stores.read(document);
    }
    stores
}

impl Stores {
    fn read(&mut self, document: &Value) {
        let text = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(str::to_string);
        let kind = text(document, "kind").unwrap_or_default();
        if kind.ends_with("List") {
            for item in document.get("items").and_then(Value::as_array).into_iter().flatten() {
                self.read(item);
            }
            return;
        }
        let group = text(document, "apiVersion").unwrap_or_default();
        if !group.starts_with("config.ratify.deislabs.io/") || !is_provider(&kind) {
            return;
        }
        let metadata = document.get("metadata").cloned().unwrap_or(Value::Null);
        let Some(name) = text(&metadata, "name") else {
            return;
        };
        let spec = document.get("spec").cloned().unwrap_or(Value::Null);
        let parameters = spec.get("parameters").cloned().unwrap_or(Value::Null);
        // KeyManagementProvider says `type`, CertificateStore `provider`.
        let provider = text(&spec, "type")
            .or_else(|| text(&spec, "provider"))
            .unwrap_or_default();
        let content = text(&parameters, "contentType").unwrap_or_else(|| "certificate".to_string());
        let held = match (provider.as_str(), content.as_str(), text(&parameters, "value")) {
            ("inline", "certificate", Some(pem)) => match parse_certificates(&pem) {
                Ok(_) => Ok(pem),
                Err(e) => Err(format!("its inline value is not certificates pullgate can trust: {e}")),
            },
            ("inline", "certificate", None) => Err("it is inline but has no parameters.value".to_string()),
            ("inline", other, _) => Err(format!("it holds contentType {other:?}, not certificates")),
            (other, _, _) => Err(format!(
                "its certificates come from {other:?} at run time, which the input does not hold"
            )),
        };
        if let Some(namespace) = text(&metadata, "namespace") {
            self.providers.insert(format!("{namespace}/{name}"), held.clone());
        }
        self.providers.insert(name, held);
    }
}

/// A Notation trust store: its type and name, as `trustStores` writes them.
struct Store {
    kind: String,
    name: String,
    /// Provider names, as `verificationCertStores` lists them.
    providers: Vec<String>,
}

/// Translates a `Verifier`; returns whether it was a Notation verifier (a policy).
pub(super) fn verifier(doc: &Value, name: &str, imports: &mut Imports, report: &mut Report<'_>) -> bool {
    let mut top = Fields::of(doc, "");
    top.skip(&["apiVersion", "kind", "metadata", "status"]);
    let spec = top.get("spec").unwrap_or(&Value::Null);
    report.unread(&top, "ignored");
    let mut fields = Fields::of(spec, "spec");
    // `type` is the same as `name` for Ratify; read both so neither is reported.
    let (by_name, by_type) = (fields.get("name"), fields.get("type"));
    let verifier_name = by_name.or(by_type).and_then(Value::as_str).unwrap_or_default();
    if !verifier_name.eq_ignore_ascii_case("notation") {
        report.dropped(
            "spec.name",
            format!(
                "verifier {verifier_name:?} is not Notation; only Ratify's Notation verifier is imported, so the \
                 images it would check are left to the other rules and noMatch"
            ),
        );
        return false;
    }
    imports.ratify = true;
    if let Some(types) = fields.get("artifactTypes").or_else(|| fields.get("artifactType")) {
        if !types
            .as_str()
            .is_some_and(|t| t.split(',').any(|t| t.trim() == NOTARY_SIGNATURE))
        {
            report.note(
                "spec.artifactTypes",
                format!(
                    "{}: pullgate's Notation authorities read {NOTARY_SIGNATURE} signatures",
                    show(types)
                ),
            );
        }
    }
    fields.skip(&["address", "version", "source"]);
    let parameters = fields.get("parameters").unwrap_or(&Value::Null);
    report.unread(&fields, "ignored");

    let mut params = Fields::of(parameters, "spec.parameters");
    let stores = cert_stores(&mut params, report);
    if params.get("verificationCerts").is_some() {
        report.dropped(
            &params.path("verificationCerts"),
            "certificate files inside Ratify's pod are not in the input; supply their PEM as the rules' \
             `certificates`",
        );
    }
    let doc_path = params.path("trustPolicyDoc");
    let document = params.get("trustPolicyDoc").unwrap_or(&Value::Null);
    report.unread(&params, "ignored");
    let mut policy_doc = Fields::of(document, doc_path);
    policy_doc.skip(&["version"]);
    let policies_path = policy_doc.path("trustPolicies");
    let policies = policy_doc.get("trustPolicies").unwrap_or(&Value::Null);
    report.unread(&policy_doc, "ignored");

    // Notation applies the policy naming a repository before the `*` one; one family keeps
    // that order in the output.
    let family = imports.family();
    let mut exact = Vec::new();
    let mut wildcard = Vec::new();
    for (path, policy) in items(policies, &policies_path, report) {
        if let Some((rule, is_wildcard)) = trust_policy(policy, &path, name, family, &stores, imports, report) {
            if is_wildcard {
                wildcard.push(rule);
            } else {
                exact.push(rule);
            }
        }
    }
    imports.rules.extend(exact);
    imports.rules.extend(wildcard);
    true
}

/// `verificationCertStores`: `{type: {store: [provider]}}`, or the older `{store: [provider]}`,
/// whose stores are `ca`.
fn cert_stores(params: &mut Fields<'_>, report: &mut Report<'_>) -> Vec<Store> {
    let path = params.path("verificationCertStores");
    let Some(value) = params.get("verificationCertStores") else {
        return Vec::new();
    };
    let Some(map) = value.as_object() else {
        report.dropped(&path, "expected a mapping; dropped");
        return Vec::new();
    };
    let mut stores = Vec::new();
    for (key, inner) in map {
        let key_path = format!("{path}.{key}");
        match inner {
            Value::Object(named) => {
                for (store, list) in named {
                    stores.push(Store {
                        kind: key.clone(),
                        name: store.clone(),
                        providers: strings(list, &format!("{key_path}.{store}"), report),
                    });
                }
            }
            list => stores.push(Store {
                kind: "ca".to_string(),
                name: key.clone(),
                providers: strings(list, &key_path, report),
            }),
        }
    }
    stores
}

/// One trust policy as a rule; `true` beside it when its scope is `*`.
fn trust_policy(
    value: &Value,
    path: &str,
    verifier: &str,
    family: usize,
    stores: &[Store],
    imports: &mut Imports,
    report: &mut Report<'_>,
) -> Option<(DraftRule, bool)> {
    let mut fields = Fields::of(value, path);
    let policy_name = fields
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("trust-policy")
        .to_string();
    let origin = format!("{}: {path} ({policy_name:?})", report.source);
    let rule_name = imports.name(&format!("{verifier}-{policy_name}"));
    let mut rule = DraftRule::new(rule_name, origin, family, Mode::Enforce);

    let scopes_path = fields.path("registryScopes");
    let scopes = fields
        .get("registryScopes")
        .map(|v| strings(v, &scopes_path, report))
        .unwrap_or_default();
    let wildcard = scopes.iter().any(|s| s == "*");
    if wildcard {
        rule.images.push(DraftImage {
            glob: "**".to_string(),
            comment: Some("Notation's `*` scope: every image.".to_string()),
        });
    } else {
        for scope in &scopes {
            if let Some(glob) = repository(scope) {
                rule.images.push(DraftImage { glob, comment: None });
            } else {
                report.dropped(
                    &scopes_path,
                    format!(
                        "{scope:?} is not a repository pullgate can name exactly (registry/repository, no tag, \
                         digest or wildcard); dropped, so the other rules and noMatch decide it"
                    ),
                );
            }
        }
    }
    if rule.images.is_empty() {
        report.dropped(
            &scopes_path,
            "no registry scope could be carried over; the trust policy is dropped",
        );
        fields.skip(&["signatureVerification", "trustStores", "trustedIdentities"]);
        report.unread(&fields, "ignored");
        return None;
    }

    let verification_path = fields.path("signatureVerification");
    let verification = fields.get("signatureVerification").unwrap_or(&Value::Null);
    let skip = level(verification, &verification_path, &mut rule, report);
    let stores_path = fields.path("trustStores");
    let named = fields
        .get("trustStores")
        .map(|v| strings(v, &stores_path, report))
        .unwrap_or_default();
    let identities_path = fields.path("trustedIdentities");
    let identities = fields
        .get("trustedIdentities")
        .map(|v| strings(v, &identities_path, report))
        .unwrap_or_default();
    report.unread(&fields, "ignored");
    if skip {
        rule.action = Action::Allow;
        return Some((rule, wildcard));
    }

    let (certificates, tsa) = trust_material(&imports.ratify_stores, &named, stores, &stores_path, report);
    let identities_ok = match TrustedIdentities::parse(&identities) {
        Ok(_) => true,
        Err(e) => {
            report.dropped(
                &identities_path,
                format!("not trusted identities pullgate accepts: {e}"),
            );
            false
        }
    };
    if let (Some(certificates), true) = (certificates, identities_ok) {
        rule.authorities.push(DraftAuthority {
            name: "notation".to_string(),
            kind: DraftAuthorityKind::Notation {
                certificates,
                trusted_identities: identities,
                tsa_certificates: tsa,
            },
            tlog: Tlog::Ignore,
            comment: None,
        });
        report.note(
            path,
            "pullgate does not check revocation (CRL, OCSP), which Notation's strict level enforces",
        );
    }
    rule.fail_closed(report, path);
    Some((rule, wildcard))
}

/// A Notation scope naming one repository, as a pullgate glob that matches it exactly (every
/// tag and digest of it, as the scope does); `None` for anything else.
fn repository(scope: &str) -> Option<String> {
    let last = scope.rsplit('/').next().unwrap_or_default();
    let plain = !scope.contains(['*', '@']) && !last.contains(':') && scope.contains('/');
    (plain && ImageGlob::parse(scope).is_ok_and(|glob| glob.as_str() == scope)).then(|| scope.to_string())
}

/// `signatureVerification`: sets the rule's mode, reports what differs; `true` for `skip`.
fn level(value: &Value, path: &str, rule: &mut DraftRule, report: &mut Report<'_>) -> bool {
    let mut fields = Fields::of(value, path);
    let level_path = fields.path("level");
    let level = fields
        .get("level")
        .and_then(|v| string(v, &level_path, report))
        .unwrap_or("");
    if let Some(over) = fields.get("override") {
        report.dropped(
            &fields.path("override"),
            format!(
                "{}: pullgate checks integrity, authenticity, timestamp and expiry whatever override says \
                 (stricter), and never revocation",
                show(over)
            ),
        );
    }
    report.unread(&fields, "ignored");
    match level {
        "strict" => {}
        "skip" => {
            report.note(
                &level_path,
                "skip: the rule allows its images without checking a signature",
            );
            return true;
        }
        "permissive" => report.dropped(
            &level_path,
            "permissive only logs an expired signature or a failed timestamp check; pullgate has no such level and \
             enforces them (mode: enforce, stricter). Set the rule's mode to warn or audit to log every failure \
             instead",
        ),
        "audit" => report.dropped(
            &level_path,
            "audit enforces only integrity and logs every other failure; pullgate has no such level and enforces \
             them all (mode: enforce, stricter). Set the rule's mode to audit to log every failure instead",
        ),
        other => report.dropped(
            &level_path,
            format!("{other:?} is not a Notation verification level; read as strict"),
        ),
    }
    rule.mode = Mode::Enforce;
    false
}

/// The PEM of the `ca`/`signingAuthority` stores and of the `tsa` stores that `named` lists,
/// from inline providers; every store or provider that cannot be read is reported. A store read
/// in part trusts fewer signers than Ratify does (stricter).
fn trust_material(
    imported: &Stores,
    named: &[String],
    stores: &[Store],
    path: &str,
    report: &mut Report<'_>,
) -> (Option<String>, Option<String>) {
    let providers = &imported.providers;
    let (mut certificates, mut tsa) = (String::new(), String::new());
    for entry in named {
        let Some((kind, name)) = entry.split_once(':') else {
            report.dropped(path, format!("{entry:?} is not type:name; dropped"));
            continue;
        };
        let target = match kind {
            "ca" | "signingAuthority" => &mut certificates,
            "tsa" => &mut tsa,
            _ => {
                report.dropped(path, format!("{entry:?}: unknown trust store type; dropped"));
                continue;
            }
        };
        let Some(store) = stores.iter().find(|s| s.kind == kind && s.name == name) else {
            report.dropped(
                path,
                format!(
                    "{entry:?} is not in verificationCertStores; supply its PEM certificates in the rule's \
                     authority"
                ),
            );
            continue;
        };
        for provider in &store.providers {
            match providers.get(provider) {
                Some(Ok(pem)) => {
                    target.push_str(pem.trim());
                    target.push('\n');
                }
                Some(Err(why)) => report.dropped(
                    path,
                    format!(
                        "{entry:?}: provider {provider:?}: {why}; supply its PEM certificates in the rule's authority"
                    ),
                ),
                None => report.dropped(
                    path,
                    format!(
                        "{entry:?}: provider {provider:?} is not in the input; supply its PEM certificates in the \
                         rule's authority (or add the KeyManagementProvider document to the input)"
                    ),
                ),
            }
        }
    }
    if named.iter().any(|n| n.starts_with("signingAuthority:")) {
        report.dropped(
            path,
            "a signingAuthority store: pullgate trusts its certificates for both Notation signing schemes, so a \
             notary.x509 signature (without a countersignature) under them counts too, which Notation refuses; \
             review before use",
        );
    }
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    (nonempty(certificates), nonempty(tsa))
}
