//! `trustedIdentities` (trust-store-trust-policy §Trusted Identities Constraints): `*`, or
//! `x509.subject:` distinguished names, each matching a signing certificate whose subject has
//! every attribute it lists with the same value, in any order and among any others.

use std::fmt;

use der::{asn1::ObjectIdentifier, Tag, Tagged};
use x509_cert::name::Name;

/// The prefix of a subject identity.
const X509_SUBJECT: &str = "x509.subject:";

/// Attribute types and the names identities use for them (the short names of RFC 4514 and
/// Go's `pkix.Name`, which Notation prints); others are written as dotted OIDs.
const NAMES: [(&str, &str); 9] = [
    ("2.5.4.6", "C"),
    ("2.5.4.8", "ST"),
    ("2.5.4.7", "L"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"),
];

/// Whose signing certificates an authority accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustedIdentities {
    /// `*`: any certificate that chains to the trust store.
    Any,
    /// Any one of these subjects.
    Subjects(Vec<SubjectIdentity>),
}

/// One `x509.subject:` identity: attribute types (upper case, `S` read as `ST`) and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectIdentity {
    text: String,
    attributes: Vec<(String, String)>,
}

/// Why a `trustedIdentities` list is not one pullgate can enforce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("trustedIdentities is empty; give \"*\" or x509.subject identities")]
    Empty,
    #[error("\"*\" must be the only item of trustedIdentities")]
    StarWithOthers,
    #[error("{0:?} does not begin with \"x509.subject:\"")]
    Prefix(String),
    #[error("{identity:?}: {why}")]
    Syntax { identity: String, why: String },
    #[error("{identity:?} lacks {attribute} (C, ST or S, and O are required)")]
    Missing { identity: String, attribute: &'static str },
    #[error("{0:?} and {1:?} overlap: one certificate could match both")]
    Overlap(String, String),
}

/// A certificate subject, as identities see it.
pub(super) struct Subject {
    /// `None` when an attribute type repeats or a value is not a string: no identity matches
    /// a subject it cannot read unambiguously.
    attributes: Option<Vec<(String, String)>>,
    text: String,
}

// === impl TrustedIdentities ===

impl TrustedIdentities {
    /// Reads a trust policy's `trustedIdentities`, refusing what the specification calls an
    /// invalid policy: `*` beside identities, missing C/ST/O, overlapping identities.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, IdentityError> {
        match items {
            [] => Err(IdentityError::Empty),
            [one] if one.as_ref().trim() == "*" => Ok(Self::Any),
            _ if items.iter().any(|i| i.as_ref().trim() == "*") => Err(IdentityError::StarWithOthers),
            _ => {
                let identities = items
                    .iter()
                    .map(|i| SubjectIdentity::parse(i.as_ref()))
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, a) in identities.iter().enumerate() {
                    if let Some(b) = identities[i + 1..].iter().find(|b| a.overlaps(b)) {
                        return Err(IdentityError::Overlap(a.text.clone(), b.text.clone()));
                    }
                }
                Ok(Self::Subjects(identities))
            }
        }
    }

    pub(super) fn admits(&self, subject: &Subject) -> bool {
        match self {
            Self::Any => true,
            Self::Subjects(identities) => subject
                .attributes
                .as_ref()
                .is_some_and(|attributes| identities.iter().any(|i| i.matches(attributes))),
        }
    }
}

// === impl SubjectIdentity ===

impl SubjectIdentity {
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        // Only the start is trimmed: a value may end with an escaped space.
        let dn = text
            .trim_start()
            .strip_prefix(X509_SUBJECT)
            .ok_or_else(|| IdentityError::Prefix(text.to_string()))?;
        let syntax = |why: String| IdentityError::Syntax {
            identity: text.to_string(),
            why,
        };
        let attributes = parse_dn(dn).map_err(syntax)?;
        for (i, (kind, _)) in attributes.iter().enumerate() {
            if attributes[..i].iter().any(|(k, _)| k == kind) {
                return Err(syntax(format!("{kind} appears twice")));
            }
        }
        for required in ["C", "ST", "O"] {
            if !attributes.iter().any(|(k, _)| k == required) {
                return Err(IdentityError::Missing {
                    identity: text.to_string(),
                    attribute: required,
                });
            }
        }
        Ok(Self {
            text: text.trim_start().to_string(),
            attributes,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, subject: &[(String, String)]) -> bool {
        self.attributes.iter().all(|a| subject.contains(a))
    }

    /// Some certificate could match both: no attribute type they share has different values.
    fn overlaps(&self, other: &Self) -> bool {
        self.attributes
            .iter()
            .all(|(k, v)| other.attributes.iter().all(|(ok, ov)| ok != k || ov == v))
    }
}

// === impl Subject ===

impl Subject {
    pub fn of(name: &Name) -> Subject {
        let mut attributes = Some(Vec::new());
        let mut parts = Vec::new();
        for atv in name.0.iter().flat_map(|rdn| rdn.0.iter()) {
            let kind = type_name(&atv.oid);
            let value = string_value(atv.value.tag(), atv.value.value());
            parts.push(format!("{kind}={}", escape(value.as_deref().unwrap_or("#?"))));
            match (&mut attributes, value) {
                (Some(list), Some(value)) if !list.iter().any(|(k, _)| *k == kind) => list.push((kind, value)),
                _ => attributes = None,
            }
        }
        Subject {
            attributes,
            text: parts.join(", "),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn type_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    NAMES
        .iter()
        .find(|(o, _)| *o == dotted)
        .map_or(dotted.clone(), |(_, name)| (*name).to_string())
}

/// A DirectoryString (or IA5String) attribute value as text; `None` for other types.
fn string_value(tag: Tag, bytes: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => String::from_utf8(bytes.to_vec()).ok(),
        Tag::TeletexString if bytes.is_ascii() => String::from_utf8(bytes.to_vec()).ok(),
        Tag::BmpString if bytes.len() % 2 == 0 => {
            let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// Escapes a value the way an identity must write it.
fn escape(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        if matches!(c, ',' | ';' | '\\' | '+' | '"' | '<' | '>' | '=') || (c == ' ' && (i == 0 || i == last)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads `TYPE=value, TYPE=value, …` (RFC 4514 as the specification restricts it): types are
/// names or dotted OIDs; values may escape a special character or write a byte as `\XX`;
/// unescaped spaces around a value are not part of it.
fn parse_dn(dn: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    let mut chars = dn.chars().peekable();
    loop {
        let kind: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let kind = kind.trim().to_ascii_uppercase();
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            return Err(format!("{kind:?} is not an attribute type"));
        }
        let kind = if kind == "S" { "ST".to_string() } else { kind };
        let mut value = Vec::new();
        // The length up to the last character that is escaped or not a space.
        let mut kept = 0;
        let mut ended = true;
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        while let Some(c) = chars.next() {
            match c {
                ',' => {
                    ended = false;
                    break;
                }
                '\\' => {
                    let next = chars.next().ok_or("a value ends with a lone backslash")?;
                    if next.is_ascii_hexdigit() {
                        let low = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("a bad \\XX escape")?;
                        let byte = u8::from_str_radix(&format!("{next}{low}"), 16).map_err(|e| e.to_string())?;
                        value.push(byte);
                    } else {
                        let mut buf = [0; 4];
                        value.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                    }
                    kept = value.len();
                }
                ';' | '+' | '"' => return Err(format!("an unescaped {c:?}")),
                c => {
                    let mut buf = [0; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        kept = value.len();
                    }
                }
            }
        }
        value.truncate(kept);
        let value = String::from_utf8(value).map_err(|_| format!("the value of {kind} is not UTF-8"))?;
        if value.is_empty() {
            return Err(format!("{kind} has no value"));
        }
        attributes.push((kind, value));
        if ended {
            return Ok(attributes);
        }
    }
}
