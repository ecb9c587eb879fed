//! Signed JSON that cosign and pullgate must read alike: no object cosign reads may hold a key
//! twice, exactly or in another case.
//!
//! Go's `encoding/json` (cosign) fills a struct field from every key that matches its name
//! case-insensitively, and the last one wins; serde takes the exact name, and the first. A
//! payload with `docker-manifest-digest` and then `Docker-Manifest-Digest` would name one image
//! to pullgate and another to cosign. Such payloads are refused, in the objects cosign reads
//! into structs: the simple-signing payload's `critical`, `identity` and `image`, and an in-toto
//! statement with its subjects and their digest sets.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Which objects of a document are checked: an object's keys (and the members named, below
/// it), or each element of an array.
pub(super) enum Shape {
    Object(&'static [(&'static str, Shape)]),
    Array(&'static Shape),
}

/// cosign's simple-signing payload: `{"critical": {"identity": {…}, "image": {…}, "type": …}}`.
pub(super) const SIMPLE_SIGNING: Shape = Shape::Object(&[(
    "critical",
    Shape::Object(&[("identity", Shape::Object(&[])), ("image", Shape::Object(&[]))]),
)]);

/// An in-toto statement: `_type`, `subject[].name`, `subject[].digest`, `predicateType`, `predicate`.
pub(super) const STATEMENT: Shape = Shape::Object(&[(
    "subject",
    Shape::Array(&Shape::Object(&[("digest", Shape::Object(&[]))])),
)]);

/// Refuses `json` if an object `shape` names holds two keys Go would read as one, and
/// anything this check cannot read whole: a member the caller's parser skips (a number out of
/// range, a lone surrogate) must not switch the check off.
pub(super) fn check(json: &[u8], shape: &Shape) -> Result<(), String> {
    let node = serde_json::from_slice::<Node>(json).map_err(|e| format!("unreadable JSON: {e}"))?;
    check_node(&node, shape, "the document")
}

fn check_node(node: &Node, shape: &Shape, path: &str) -> Result<(), String> {
    match (node, shape) {
        (Node::Object(members), Shape::Object(children)) => {
            let mut seen: Vec<(String, &str)> = Vec::with_capacity(members.len());
            for (key, _) in members {
                let folded = fold(key);
                if let Some((_, first)) = seen.iter().find(|(f, _)| *f == folded) {
                    return Err(format!(
                        "{path} has a duplicate key {key:?} (also {first:?}), which cosign would read as the last"
                    ));
                }
                seen.push((folded, key));
            }
            for (name, child) in *children {
                let folded = fold(name);
                if let Some((key, value)) = members.iter().find(|(key, _)| fold(key) == folded) {
                    check_node(value, child, &format!("{key:?}"))?;
                }
            }
            Ok(())
        }
        (Node::Array(elements), Shape::Array(element)) => elements
            .iter()
            .try_for_each(|node| check_node(node, element, &format!("an element of {path}"))),
        // Not the shape cosign reads: the typed parse after this refuses it.
        _ => Ok(()),
    }
}

/// A key as Go's `encoding/json` compares it to a field name: each character upper-cased after
/// being lower-cased, with Unicode's simple (one-character) mappings, so `ſ` is `S`, `K`
/// (Kelvin) is `K` and `İ` is `I`. Rust's mappings are the full ones; where one gives several
/// characters, the simple mapping is the first (lower case, only `İ`) or none (upper case).
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| {
            let lower = c.to_lowercase().next().unwrap_or(c);
            let mut upper = lower.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => lower,
            }
        })
        .collect()
}

/// A JSON document's objects and arrays, with every key as written and in order.
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Node>()? {
            elements.push(element);
        }
        Ok(Node::Array(elements))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variants_and_duplicates_are_refused_where_cosign_reads() {
        let refused = [
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:aa","Docker-Manifest-Digest":"sha256:bb"}}}"#,
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:aa","docker-manifeſt-digest":"sha256:bb"}}}"#,
            r#"{"critical":{"image":{}},"crİtical":{"image":{}}}"#,
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:aa","doc\u212aer-manifest-digest":"sha256:bb"}}}"#,
            r#"{"critical":{"type":"a","Type":"b"}}"#,
            r#"{"critical":{},"CRITICAL":{}}"#,
            r#"{"Critical":{"image":{},"image":{}}}"#,
        ];
        for payload in refused {
            assert!(check(payload.as_bytes(), &SIMPLE_SIGNING).is_err(), "{payload}");
        }
        let fine = r#"{"critical":{"image":{"docker-manifest-digest":"sha256:aa"}},"optional":{"a":1,"A":2}}"#;
        assert_eq!(check(fine.as_bytes(), &SIMPLE_SIGNING), Ok(()));
    }

    #[test]
    fn statements_are_checked_down_to_their_digest_sets() {
        let refused = [
            r#"{"_type":"x","_TYPE":"y"}"#,
            r#"{"predicateType":"a","predicatetype":"b"}"#,
            r#"{"subject":[{"name":"a","digest":{"sha256":"aa","SHA256":"bb"}}]}"#,
            r#"{"subject":[{"digest":{"sha256":"aa"},"Digest":{"sha256":"bb"}}]}"#,
            r#"{"subject":[],"subject":[]}"#,
        ];
        for statement in refused {
            assert!(check(statement.as_bytes(), &STATEMENT).is_err(), "{statement}");
        }
        let fine = r#"{"_type":"x","subject":[{"digest":{"sha256":"aa","sha512":"bb"}}],"predicate":{"k":1,"K":2}}"#;
        assert_eq!(check(fine.as_bytes(), &STATEMENT), Ok(()));
    }
}
