//! Policy errors, each located by file, line and field, as `pullgate policy check` prints them.

use std::{fmt, path::Path, path::PathBuf, slice};

/// One problem with a policy file: `policy.yaml:14: spec.rules[1].name: duplicate rule name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is with the file as a whole.
    pub line: Option<usize>,
    /// The field's path in the document (`spec.rules[1].authorities[0].key.publicKey`); empty
    /// when the problem is not about one field.
    pub field: String,
    pub message: String,
}

/// Every problem found in a policy file, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(Vec<PolicyError>);

// === impl PolicyError ===

impl PolicyError {
    /// Turns a YAML syntax or type error into one that names the field apart from the message.
    ///
    /// serde_yaml_ng only exposes the line; the field path is the prefix of its message, and the
    /// location is appended to the message as ` at line L column C`.
    pub(super) fn from_yaml(file: &Path, error: &serde_yaml_ng::Error) -> Self {
        let mut text = error.to_string();
        let location = error.location();
        if let Some(at) = &location {
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            if let Some(i) = text.find(&suffix) {
                text.replace_range(i..i + suffix.len(), "");
            }
        }
        let (path, message) = split_path(&text);
        // Name the field that is wrong, not only the mapping it is in.
        let field = match named_field(message) {
            Some(name) if path.is_empty() => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None => path.to_string(),
        };
        Self {
            file: file.to_owned(),
            line: location.map(|at| at.line()),
            field,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Splits serde_yaml_ng's `spec.rules[0]: message` into the path and the message. Paths start
/// with a top-level field and hold no spaces; messages (`invalid type: …`) start with two words.
fn split_path(text: &str) -> (&str, &str) {
    const TOP_LEVEL: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
    match text.split_once(": ") {
        Some((path, message)) if !path.contains(' ') => {
            let head = path.split(['.', '[']).next().unwrap_or_default();
            if TOP_LEVEL.contains(&head) {
                (path, message)
            } else {
                ("", text)
            }
        }
        _ => ("", text),
    }
}

/// The field an ``unknown field `x` `` message (or a missing or duplicate one) is about.
fn named_field(message: &str) -> Option<&str> {
    const PREFIXES: [&str; 4] = [
        "unknown field `",
        "missing field `",
        "duplicate field `",
        "duplicate key `",
    ];
    let rest = PREFIXES.iter().find_map(|prefix| message.strip_prefix(prefix))?;
    rest.split_once('`').map(|(name, _)| name)
}

// === impl PolicyErrors ===

impl PolicyErrors {
    /// `None` when there are no errors.
    pub(super) fn new(errors: Vec<PolicyError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    pub(super) fn one(error: PolicyError) -> Self {
        Self(vec![error])
    }

    /// The first problem in the file.
    pub fn first(&self) -> &PolicyError {
        // Never empty: both constructors guarantee at least one error.
        &self.0[0]
    }

    pub fn iter(&self) -> slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[PolicyError] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<PolicyError> {
        self.0
    }
}

impl fmt::Display for PolicyErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
