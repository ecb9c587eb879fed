//! The policy reference (`docs/policy-reference.md`) documents exactly the fields a policy
//! file may have.
//!
//! The field paths are not listed by hand: they come from serde itself. A derived
//! `Deserialize` for a struct hands the deserializer the list of its field names
//! (`deserialize_struct(name, FIELDS, visitor)`, the same list `deny_unknown_fields` checks
//! against). [`Tracer`] is a deserializer that records that list at each path, then feeds every
//! field a value of the shape its type asks for — `Some` for an `Option`, one element for a
//! `Vec`, the first variant for an enum — so nested structs are reached too. A field added to
//! `schema.rs` therefore appears here without anyone listing it, and the test below fails until
//! the reference's table has a row for it; a row for a field the schema does not have fails it
//! as well.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    rc::Rc,
};

use serde::{
    de::{self, value::StrDeserializer, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

use super::Document;

/// Every field path of the policy document, e.g. `spec.rules[].authorities[].keyless.issuer`:
/// `.` between a struct and its field, `[]` after a list.
fn field_paths() -> BTreeSet<String> {
    let paths = Rc::new(RefCell::new(BTreeSet::new()));
    let tracer = Tracer {
        path: String::new(),
        paths: paths.clone(),
    };
    if let Err(e) = Document::deserialize(tracer) {
        panic!("tracing the policy schema: {e}");
    }
    paths.take()
}

/// The first column of the reference page's field table, without backticks.
fn documented_paths(page: &str) -> BTreeSet<String> {
    let rows = page
        .lines()
        .skip_while(|line| !line.starts_with("| field |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'));
    let mut paths = BTreeSet::new();
    for row in rows {
        let first = row.trim_start_matches('|').split('|').next().unwrap_or_default();
        paths.insert(first.trim().trim_matches('`').to_string());
    }
    paths
}

fn reference_page() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-reference.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

#[test]
fn the_reference_documents_every_field_of_the_schema_and_no_other() {
    let schema = field_paths();
    // The tracer reaches the deepest fields, or it would prove nothing.
    for deep in [
        "apiVersion",
        "spec.rules[].authorities[].keyless.subjectRegExp",
        "spec.rules[].attestations[].conditions",
    ] {
        assert!(schema.contains(deep), "the tracer missed {deep}: {schema:#?}");
    }
    let (page, text) = reference_page();
    let documented = documented_paths(&text);
    let undocumented: Vec<&String> = schema.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&schema).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{}'s table (the one headed `| field |`) is out of step with plugin/src/policy/schema.rs\n\
         fields the schema has and the page lacks: {undocumented:?}\n\
         rows for fields the schema does not have: {unknown:?}",
        page.display()
    );
}

#[test]
fn the_table_reader_finds_rows_and_stops_at_the_table_end() {
    let page = "intro\n\n| field | type |\n|---|---|\n| `a.b` | string |\n| `c[]` | list |\n\n| x | y |\n";
    let found: Vec<String> = documented_paths(page).into_iter().collect();
    assert_eq!(found, ["a.b", "c[]"]);
}

/// A deserializer that records the fields each struct declares, at their paths.
struct Tracer {
    path: String,
    paths: Rc<RefCell<BTreeSet<String>>>,
}

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

// === impl Tracer ===

impl Tracer {
    fn at(&self, path: String) -> Self {
        Self {
            path,
            paths: self.paths.clone(),
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error(format!(
            "{}: a {what} field; teach plugin/src/policy/schema/reference.rs to trace it",
            self.path
        ))
    }
}

impl<'de> Deserializer<'de> for Tracer {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(self.unsupported("self-describing"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let prefix = if self.path.is_empty() {
            String::new()
        } else {
            format!("{}.", self.path)
        };
        let fields: Vec<String> = fields.iter().map(|f| format!("{prefix}{f}")).collect();
        self.paths.borrow_mut().extend(fields.iter().cloned());
        visitor.visit_map(Fields {
            tracer: &self,
            names: fields.iter().map(|path| path[prefix.len()..].to_string()).collect(),
            next: 0,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let element = self.at(format!("{}[]", self.path));
        visitor.visit_seq(One(Some(element)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A map's keys are data (Fulcio claim names), not schema fields.
        visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(&str, &str)>()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first = variants.first().copied().unwrap_or_default();
        let variant: StrDeserializer<'_, Error> = first.into_deserializer();
        variant.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("x")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("x")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(self.unsupported("identifier"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct
    }
}

/// A struct's fields, each with a tracer for its value.
struct Fields<'t> {
    tracer: &'t Tracer,
    names: Vec<String>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.names.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = name.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = &self.names[self.next];
        self.next += 1;
        let path = if self.tracer.path.is_empty() {
            name.clone()
        } else {
            format!("{}.{name}", self.tracer.path)
        };
        seed.deserialize(self.tracer.at(path))
    }
}

/// A list of one element.
struct One(Option<Tracer>);

impl<'de> SeqAccess<'de> for One {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|element| seed.deserialize(element)).transpose()
    }
}
