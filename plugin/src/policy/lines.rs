//! Where each field of a YAML document is, so that errors found after parsing can name a line.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// The line of every mapping key and sequence item of a YAML document, by field path in the
/// form serde_yaml_ng uses (`spec.rules[1].authorities[0].key`).
#[derive(Debug, Default)]
pub(super) struct LineIndex {
    lines: HashMap<String, usize>,
}

/// Walks the parser's events, keeping the path of the node being read.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

/// A mapping or sequence being read.
struct Frame {
    path: String,
    /// A collection used as a mapping key; none occur in a policy, but the walk must not lose
    /// its place if one does.
    is_key: bool,
    kind: Kind,
}

enum Kind {
    /// `key` is `None` while the next node is a key, and the key's text while it is the value.
    Map {
        key: Option<String>,
    },
    Seq {
        next: usize,
    },
}

// === impl LineIndex ===

impl LineIndex {
    pub(super) fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        // serde_yaml_ng (libyaml) has already accepted the text. Should this parser disagree,
        // the index is partial and errors fall back to the nearest enclosing field's line.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Self { lines: builder.lines }
    }

    /// The 1-based line of `field`, or of the nearest enclosing field the index knows: a field
    /// that is missing, or that came from a YAML alias, is reported where its parent is.
    pub(super) fn line(&self, field: &str) -> Option<usize> {
        let mut path = field;
        loop {
            if let Some(&line) = self.lines.get(path) {
                return Some(line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

// === impl Builder ===

impl Builder {
    /// Whether the node about to start is a mapping key.
    fn at_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                kind: Kind::Map { key: None },
                ..
            })
        )
    }

    /// Records where a node starts and returns its path. A key's path is recorded when the key
    /// is read, so a value that starts on a later line (a block mapping) keeps its key's line.
    fn start(&mut self, mark: Marker, scalar: Option<&str>) -> String {
        let Some(parent) = self.stack.last_mut() else {
            return String::new();
        };
        let path = match &mut parent.kind {
            Kind::Map { key: slot @ None } => {
                let key = scalar.unwrap_or("?");
                *slot = Some(key.to_string());
                join(&parent.path, key)
            }
            Kind::Map { key: Some(key) } => join(&parent.path, key),
            Kind::Seq { next } => format!("{}[{next}]", parent.path),
        };
        self.lines.entry(path.clone()).or_insert(mark.line());
        path
    }

    /// Called when a value has been read completely.
    fn finish_value(&mut self) {
        match self.stack.last_mut().map(|frame| &mut frame.kind) {
            Some(Kind::Map { key }) => *key = None,
            Some(Kind::Seq { next }) => *next += 1,
            None => {}
        }
    }

    fn end(&mut self) {
        // A key's parent still waits for its value; any other collection was a value.
        if let Some(frame) = self.stack.pop() {
            if !frame.is_key {
                self.finish_value();
            }
        }
    }

    fn push(&mut self, mark: Marker, kind: Kind) {
        let is_key = self.at_key();
        let path = self.start(mark, None);
        self.stack.push(Frame { path, is_key, kind });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                let is_key = self.at_key();
                self.start(mark, Some(&value));
                if !is_key {
                    self.finish_value();
                }
            }
            Event::Alias(_) => {
                let is_key = self.at_key();
                self.start(mark, None);
                if !is_key {
                    self.finish_value();
                }
            }
            Event::MappingStart(..) => self.push(mark, Kind::Map { key: None }),
            Event::SequenceStart(..) => self.push(mark, Kind::Seq { next: 0 }),
            Event::MappingEnd | Event::SequenceEnd => self.end(),
            _ => {}
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
