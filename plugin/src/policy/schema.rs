//! The policy document as written (SPEC §4): plain serde types that validation checks and
//! compiles. Unknown fields are errors, so a misspelt field is never silently ignored.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::{
    de::{self, MapAccess, Visitor},
    Deserialize, Deserializer,
};

use super::{Action, Mode, NoMatch, Tlog};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Metadata {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Spec {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub no_match: NoMatch,
    pub trusted_root: Option<PathBuf>,
    /// More roots by name; the paths are resolved and read by validation.
    #[serde(default, deserialize_with = "unique_keys")]
    pub trusted_roots: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RuleDoc {
    pub name: String,
    pub images: Vec<String>,
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    #[serde(default)]
    pub action: Action,
    pub mode: Option<Mode>,
    /// `None` (the default) means true; validation refuses it on rules that verify nothing.
    pub require_signature: Option<bool>,
    #[serde(default)]
    pub authorities: Vec<AuthorityDoc>,
    #[serde(default)]
    pub attestations: Vec<AttestationDoc>,
    pub signature_repository: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AuthorityDoc {
    pub name: String,
    pub key: Option<KeyDoc>,
    pub keyless: Option<KeylessDoc>,
    pub notation: Option<NotationDoc>,
    pub tlog: Option<Tlog>,
}

/// A Notary Project (Notation) authority: its trust stores, each a PEM file or inline PEM.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NotationDoc {
    pub certificates: String,
    #[serde(default)]
    pub trusted_identities: Vec<String>,
    pub tsa_certificates: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct KeyDoc {
    pub public_key: Option<String>,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct KeylessDoc {
    /// A name from `spec.trustedRoots`; `spec.trustedRoot` when absent.
    pub trusted_root: Option<String>,
    pub issuer: Option<String>,
    pub issuer_reg_exp: Option<String>,
    pub subject: Option<String>,
    pub subject_reg_exp: Option<String>,
    /// Claim names are checked by validation, which can name the line of a wrong one.
    #[serde(default, deserialize_with = "unique_keys")]
    pub extensions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AttestationDoc {
    pub name: String,
    pub predicate_type: String,
    /// A humantime duration (`2160h`), parsed by validation.
    pub max_age: Option<String>,
    #[serde(default)]
    pub conditions: Vec<String>,
}

/// Reads a mapping of strings, refusing a key given twice: YAML forbids it, and silently keeping
/// one of the values could pin a claim to a value (or a root to a file) the author did not mean.
fn unique_keys<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct UniqueKeys;

    impl<'de> Visitor<'de> for UniqueKeys {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of names to strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                }
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_map(UniqueKeys)
}

/// docs/policy-reference.md documents exactly these fields: checked against serde's own view of
/// them.
#[cfg(test)]
mod reference;
