//! Reading a source document field by field, and the findings it leaves: every field the
//! importer does not read is reported, so nothing in a source policy passes silently.

use std::fmt;

use serde_json::{Map, Value};

/// Where a source document is in the input, as findings name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Source {
    /// `2`, or `2 item 3` for an item of a `List`.
    pub index: String,
    pub kind: String,
    pub name: String,
}

/// Something in the input that the output does not carry over as it was, or a remark about how
/// it was carried over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    source: Option<Source>,
    path: String,
    message: String,
    kind: FindingKind,
}

/// Whether a finding changes what is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A requirement or behaviour of the source that the output does not reproduce: dropped,
    /// or replaced by a stricter one. `policy import` exits 1 when there is one.
    Dropped,
    /// How something was carried over, or why it needs nothing on the node; decisions are the
    /// same.
    Note,
}

/// The findings of one document, each naming it.
pub(super) struct Report<'a> {
    pub source: Source,
    findings: &'a mut Vec<Finding>,
}

/// A mapping being read: which of its keys were used, so that the rest can be reported.
pub(super) struct Fields<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
    read: Vec<&'a str>,
}

// === impl Finding ===

impl Finding {
    /// A finding about the input as a whole, such as two rules that overlap.
    pub(super) fn file(kind: FindingKind, message: String) -> Self {
        Self {
            source: None,
            path: String::new(),
            message,
            kind,
        }
    }

    pub fn kind(&self) -> FindingKind {
        self.kind
    }

    pub fn is_dropped(&self) -> bool {
        self.kind == FindingKind::Dropped
    }
}

impl fmt::Display for Finding {
    /// `document 2 (ClusterPolicy/verify): spec.rules[0].verifyImages[0].attestors[0].entries[1].keys.kms: …`;
    /// the caller puts the file in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

// === impl Source ===

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {} ({}/{})", self.index, self.kind, self.name)
    }
}

// === impl Report ===

impl<'a> Report<'a> {
    pub fn new(source: Source, findings: &'a mut Vec<Finding>) -> Self {
        Self { source, findings }
    }

    /// Records that `path` is not carried over (or only in a stricter form), and why.
    pub fn dropped(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, message.into(), FindingKind::Dropped);
    }

    /// Records how `path` was carried over where decisions do not change.
    pub fn note(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, message.into(), FindingKind::Note);
    }

    fn push(&mut self, path: &str, message: String, kind: FindingKind) {
        let finding = Finding {
            source: Some(self.source.clone()),
            path: path.to_string(),
            message,
            kind,
        };
        // The same field can be reached twice (a rule split per namespace); say it once.
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }

    /// Reports every field of `fields` nobody read, as not understood and dropped; `why` says
    /// what dropping it does.
    pub fn unread(&mut self, fields: &Fields<'_>, why: &str) {
        for key in fields.unread() {
            let path = fields.path(key);
            self.dropped(&path, format!("not a field the importer knows; {why}"));
        }
    }
}

// === impl Fields ===

impl<'a> Fields<'a> {
    /// The fields of `value` at `path`; a value that is not a mapping has none.
    pub fn of(value: &'a Value, path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            map: value.as_object(),
            read: Vec::new(),
        }
    }

    /// The value of `key`, marking it read; `null` counts as absent.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (key, value) = self.map?.get_key_value(key)?;
        self.read.push(key.as_str());
        (!value.is_null()).then_some(value)
    }

    /// Whether `key` is present (and not null), without reading it.
    pub fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|map| map.get(key))
            .is_some_and(|value| !value.is_null())
    }

    /// Marks `keys` read without using them: fields that mean nothing on the node.
    pub fn skip(&mut self, keys: &[&str]) {
        for key in keys {
            self.get(key);
        }
    }

    /// The path of `key` in this mapping.
    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The path of this mapping.
    pub fn own_path(&self) -> &str {
        &self.path
    }

    /// The keys present and not read, in order.
    pub fn unread(&self) -> Vec<&'a str> {
        let Some(map) = self.map else {
            return Vec::new();
        };
        map.iter()
            .filter(|(key, value)| !value.is_null() && !self.read.contains(&key.as_str()))
            .map(|(key, _)| key.as_str())
            .collect()
    }
}

/// `spec.rules` + `name` → `spec.rules.name`; `rules` + `[0]` → `rules[0]`.
pub(super) fn join(path: &str, key: &str) -> String {
    match (path.is_empty(), key.starts_with('[')) {
        (true, _) => key.to_string(),
        (false, true) => format!("{path}{key}"),
        (false, false) => format!("{path}.{key}"),
    }
}

/// `path[i]`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The items of a list, each with its path; a value that is not a list has none, and that is
/// reported.
pub(super) fn items<'a>(value: &'a Value, path: &str, report: &mut Report<'_>) -> Vec<(String, &'a Value)> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (index(path, i), item))
            .collect(),
        _ => {
            report.dropped(path, "expected a list; dropped");
            Vec::new()
        }
    }
}

/// A string value, or a report that it is not one.
pub(super) fn string<'a>(value: &'a Value, path: &str, report: &mut Report<'_>) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        _ => {
            report.dropped(path, "expected a string; dropped");
            None
        }
    }
}

/// A list of strings; items that are not strings are reported and left out.
pub(super) fn strings(value: &Value, path: &str, report: &mut Report<'_>) -> Vec<String> {
    items(value, path, report)
        .into_iter()
        .filter_map(|(path, item)| string(item, &path, report).map(str::to_string))
        .collect()
}

/// A boolean value; anything else is reported and read as `default`.
pub(super) fn boolean(value: &Value, path: &str, default: bool, report: &mut Report<'_>) -> bool {
    match value {
        Value::Bool(b) => *b,
        _ => {
            report.dropped(path, format!("expected true or false; read as {default}"));
            default
        }
    }
}

/// How a YAML value reads in a message: strings quoted, others as JSON.
pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}
