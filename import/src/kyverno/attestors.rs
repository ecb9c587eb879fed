//! Who signs: an entry's `attestors` (sets of keys and keyless identities), its legacy signer
//! fields, and the one list of authorities the rule keeps when attestations name their own.

use serde_json::Value;

use super::{
    super::{
        authority::{self, OwnTrust},
        document::{boolean, items, string, Fields, Report},
        draft::{narrow_to, DraftAuthority, DraftAuthorityKind, DraftIdentity, Narrowed},
    },
    Attested,
};
use pullgate::policy::Tlog;

/// The signers an entry names for the image, when it has `attestors`; empty when none could be
/// carried over.
#[derive(Default)]
pub(super) struct Signers {
    pub image: Option<Vec<DraftAuthority>>,
}

/// The rule's authorities: the image's signers, or when there are none, the first
/// attestation's; narrowed to those every attestation with attestors of its own names too
/// (see [`narrow_to`]).
pub(super) fn choose_signers(
    signers: &Signers,
    attestations: &[Attested],
    path: &str,
    report: &mut Report<'_>,
) -> Vec<DraftAuthority> {
    let mut chosen = match &signers.image {
        Some(image) => image.clone(),
        None => match attestations.iter().find_map(|a| a.signers.clone()) {
            Some(first) => {
                report.note(
                    &format!("{path}.attestations"),
                    "Kyverno checks no image signature here, only attestations; so does pullgate, with \
                     requireSignature: false",
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
            let message = if signers.image.is_none() {
                "pullgate checks every attestation against the rule's authorities, so it keeps only the signers \
                 all attestations name; attestations signed only by the others are refused (stricter)"
            } else if chosen.len() < before {
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
pub(super) fn attestor_sets(value: &Value, path: &str, notary: bool, report: &mut Report<'_>) -> Vec<DraftAuthority> {
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
fn attestor(entry: &Value, path: &str, notary: bool, report: &mut Report<'_>) -> (Vec<DraftAuthority>, usize) {
    let mut fields = Fields::of(entry, path);
    let mut authorities = Vec::new();
    let mut count = 1;
    let mut keep = true;
    if notary {
        // A Notary entry is verified with Notation: only its certificates mean anything.
        for signer in ["keys", "keyless"] {
            if fields.get(signer).is_some() {
                report.dropped(
                    &fields.path(signer),
                    "Kyverno verifies a Notary entry with Notation, which uses no keys or keyless identities; dropped",
                );
            }
        }
        if let Some(certificates) = fields.get("certificates") {
            authorities.extend(notation_attestor(certificates, &fields.path("certificates"), report));
        }
    } else if let Some(keys) = fields.get("keys") {
        let (keys, n) = key_attestor(keys, &fields.path("keys"), report);
        count = n.max(1);
        authorities.extend(keys);
    }
    if let Some(keyless) = fields.get("keyless").filter(|_| !notary) {
        authorities.extend(keyless_attestor(keyless, &fields.path("keyless"), report));
    }
    if fields.get("certificates").is_some() && !notary {
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

/// A Notary entry's `certificates` (`cert` and `certChain`, PEM): one Notation authority whose
/// trust store holds both and which trusts any identity that chains to it, as Kyverno's Notary
/// verifier does (its trust policy's `trustedIdentities` is `*`). Certificates pullgate cannot
/// read drop the attestor.
fn notation_attestor(value: &Value, path: &str, report: &mut Report<'_>) -> Option<DraftAuthority> {
    let mut fields = Fields::of(value, path);
    let mut pems = String::new();
    for field in ["cert", "certChain"] {
        if let Some(text) = fields.get(field) {
            let field_path = fields.path(field);
            pems.push_str(string(text, &field_path, report)?);
            pems.push('\n');
        }
    }
    let rekor_like = ["rekor", "ctlog"].into_iter().any(|f| fields.get(f).is_some());
    if rekor_like {
        report.note(
            path,
            "Notation signatures are not logged; rekor and ctlog mean nothing for them",
        );
    }
    if !fields.unread().is_empty() {
        report.unread(&fields, "the attestor is dropped rather than accepted without it");
        return None;
    }
    if let Err(e) = pullgate::verify::notation::parse_certificates(&pems) {
        report.dropped(
            path,
            format!("not certificates pullgate can trust: {e}; the attestor is dropped"),
        );
        return None;
    }
    report.note(
        path,
        "a Notation authority trusting any signing certificate that chains to these certificates \
         (trustedIdentities: [\"*\"]), as Kyverno's Notary verifier does",
    );
    Some(DraftAuthority {
        name: String::new(),
        kind: DraftAuthorityKind::Notation {
            certificates: pems,
            trusted_identities: vec!["*".to_string()],
            tsa_certificates: None,
        },
        tlog: Tlog::Ignore,
        comment: None,
    })
}

/// `keys`: one authority per PEM block.
fn key_attestor(value: &Value, path: &str, report: &mut Report<'_>) -> (Vec<DraftAuthority>, usize) {
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

fn keyless_attestor(value: &Value, path: &str, report: &mut Report<'_>) -> Option<DraftAuthority> {
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
    Some(DraftAuthority {
        name: String::new(),
        kind: DraftAuthorityKind::Keyless {
            issuer: issuer?,
            subject: subject?,
            extensions: extensions?,
        },
        tlog,
        comment: None,
    })
}

/// `issuer` (a wildcard) or `issuerRegExp`, and the same for `subject`.
fn wildcard_or_regexp(fields: &mut Fields<'_>, what: &str, report: &mut Report<'_>) -> Option<DraftIdentity> {
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
pub(super) fn legacy_attestor(
    fields: &mut Fields<'_>,
    report: &mut Report<'_>,
) -> Option<(Vec<DraftAuthority>, String)> {
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
        (Some(issuer), Some(subject), Some(extensions)) if !trust.is_found() => vec![DraftAuthority {
            name: String::new(),
            kind: DraftAuthorityKind::Keyless {
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
