//! What an entry requires besides signatures: its `attestations`, each with a predicate type,
//! conditions and perhaps attestors of its own.

use serde_json::Value;

use super::{
    super::{
        condition,
        document::{Fields, Report},
        draft::{short_name, DraftAttestation, DraftAuthority},
    },
    attestors::attestor_sets,
};
use pullgate::policy::predicate;

/// An attestation with the signers of its own `attestors`, if it has any.
pub(super) struct Attested {
    pub attestation: DraftAttestation,
    pub signers: Option<Vec<DraftAuthority>>,
    /// Something it requires cannot be carried over: the rule must deny.
    pub poisoned: bool,
    /// Its conditions can never hold, in Kyverno as here: the rule denies.
    pub never: bool,
    pub path: String,
}

/// One `attestations[]` item.
pub(super) fn attestation(value: &Value, path: &str, i: usize, notary: bool, report: &mut Report<'_>) -> Attested {
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
    if notary {
        // Notation-signed attestations: pullgate checks attestations against cosign signers only.
        report.dropped(
            path,
            "attestations signed with Notation are not verified by pullgate; the rule denies",
        );
        poisoned = true;
    }
    let signers = fields
        .get("attestors")
        .filter(|_| !notary)
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
        attestation: DraftAttestation {
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
