//! Whether two imported rules can match the same pull, with an example image when they can.
//!
//! Kyverno and policy-controller apply every policy that matches an image; pullgate applies the
//! first matching rule. Where two rules can both match, the importer orders the stricter first
//! and says so, and this is how it knows they can. Two globs share an image when the product of
//! their automata reaches both accepting states: a breadth-first search over pairs of positions,
//! trying each byte either pattern names, `/`, and one byte neither names (standing for all
//! others). The path found is the example.

use std::collections::{HashMap, VecDeque};

use super::draft::{DraftImage, DraftRule};

/// A glob element, as pullgate's globs have them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Byte(u8),
    /// Any run without `/`.
    Star,
    /// Any run.
    DoubleStar,
}

/// An image glob in parts: a normalized reference has a tag or a digest, never both.
struct Parts {
    repository: Vec<Elem>,
    tag: Option<Vec<Elem>>,
    digest: Option<Vec<Elem>>,
}

/// An image and a namespace that both rules match, if there is one: `registry/repo:tag`
/// (or `@digest`), and the namespace (`None` when either rule covers every namespace).
pub(super) fn shared_pull(a: &DraftRule, b: &DraftRule) -> Option<(String, Option<String>)> {
    let image = a
        .images
        .iter()
        .flat_map(|x| b.images.iter().map(move |y| (x, y)))
        .find_map(|(x, y)| shared_image(x, y))?;
    let namespace = shared_namespace(a, b)?;
    Some((image, namespace))
}

fn shared_image(a: &DraftImage, b: &DraftImage) -> Option<String> {
    let (a, b) = (parts(&a.glob), parts(&b.glob));
    let repository = intersect(&a.repository, &b.repository)?;
    // A pattern without a tag or digest matches any; with one, the reference must have it.
    let suffix = match (&a.tag, &b.tag, &a.digest, &b.digest) {
        (Some(_), _, _, Some(_)) | (_, Some(_), Some(_), _) => return None,
        (Some(x), Some(y), _, _) => format!(":{}", intersect(x, y)?),
        (Some(x), None, _, _) | (None, Some(x), _, _) => format!(":{}", witness_of(x)),
        (None, None, Some(x), Some(y)) => format!("@{}", intersect(x, y)?),
        (None, None, Some(x), None) | (None, None, None, Some(x)) => format!("@{}", witness_of(x)),
        (None, None, None, None) => String::new(),
    };
    Some(format!("{repository}{suffix}"))
}

/// A namespace both rules cover: `Some(None)` when every namespace is (or the search cannot
/// name one), `Some(Some(ns))` for an example, `None` when no namespace is shared.
fn shared_namespace(a: &DraftRule, b: &DraftRule) -> Option<Option<String>> {
    let unrestricted = |rule: &DraftRule| rule.namespaces.is_none() && rule.exclude_namespaces.is_empty();
    if unrestricted(a) && unrestricted(b) {
        return Some(None);
    }
    let excluded = |namespace: &str| {
        a.exclude_namespaces
            .iter()
            .chain(&b.exclude_namespaces)
            .any(|glob| matches(&compile(glob), namespace))
    };
    let included = |rule: &DraftRule, namespace: &str| match &rule.namespaces {
        None => true,
        Some(globs) => globs.iter().any(|glob| matches(&compile(glob), namespace)),
    };
    // Where one side lists plain names, each is a candidate, and the answer is exact.
    for (listed, other) in [(a, b), (b, a)] {
        let Some(names) = &listed.namespaces else {
            continue;
        };
        if names.iter().any(|name| name.contains('*')) {
            continue;
        }
        return names
            .iter()
            .find(|name| included(other, name) && !excluded(name))
            .map(|name| Some(name.clone()));
    }
    let includes = |rule: &DraftRule| -> Vec<Vec<Elem>> {
        match &rule.namespaces {
            None => vec![vec![Elem::Star]],
            Some(globs) => globs.iter().map(|glob| compile(glob)).collect(),
        }
    };
    let mut shared = false;
    for x in includes(a) {
        for y in includes(b) {
            if let Some(namespace) = intersect(&x, &y) {
                if !excluded(&namespace) {
                    return Some(Some(namespace));
                }
                // The shortest shared namespace is excluded; a longer one may not be. Assume it
                // is shared: reporting an overlap that is not there is only noise.
                shared = true;
            }
        }
    }
    shared.then_some(None)
}

fn parts(glob: &str) -> Parts {
    let (name, digest) = match glob.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (glob, None),
    };
    let last_segment = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_segment..].find(':') {
        Some(i) => (&name[..last_segment + i], Some(&name[last_segment + i + 1..])),
        None => (name, None),
    };
    Parts {
        repository: compile(repository),
        tag: tag.map(compile),
        digest: digest.map(compile),
    }
}

fn compile(pattern: &str) -> Vec<Elem> {
    let mut elems = Vec::with_capacity(pattern.len());
    let mut bytes = pattern.bytes().peekable();
    while let Some(b) = bytes.next() {
        elems.push(match b {
            b'*' if bytes.next_if_eq(&b'*').is_some() => Elem::DoubleStar,
            b'*' => Elem::Star,
            b => Elem::Byte(b),
        });
    }
    elems
}

/// Whether `text` matches `pattern`.
fn matches(pattern: &[Elem], text: &str) -> bool {
    let literal: Vec<Elem> = text.bytes().map(Elem::Byte).collect();
    intersect(pattern, &literal).is_some()
}

/// Some text of `pattern`.
fn witness_of(pattern: &[Elem]) -> String {
    intersect(pattern, &[Elem::DoubleStar]).unwrap_or_default()
}

/// For each product state reached, the state it was reached from and the byte read (`None`
/// when a wildcard matched nothing).
type Trail = HashMap<(usize, usize), Option<((usize, usize), Option<u8>)>>;

/// The shortest text both patterns match, if any.
fn intersect(a: &[Elem], b: &[Elem]) -> Option<String> {
    let alphabet = alphabet(a, b);
    let start = (0usize, 0usize);
    let mut previous: Trail = HashMap::new();
    let mut queue = VecDeque::new();
    previous.insert(start, None);
    queue.push_back(start);
    while let Some(state) = queue.pop_front() {
        let (i, j) = state;
        if i == a.len() && j == b.len() {
            return Some(path_to(&previous, state));
        }
        // A wildcard may match nothing: move past it without reading.
        let mut moves: Vec<((usize, usize), Option<u8>)> = Vec::new();
        if matches!(a.get(i), Some(Elem::Star | Elem::DoubleStar)) {
            moves.push(((i + 1, j), None));
        }
        if matches!(b.get(j), Some(Elem::Star | Elem::DoubleStar)) {
            moves.push(((i, j + 1), None));
        }
        for &c in &alphabet {
            if let (Some(next_i), Some(next_j)) = (step(a, i, c), step(b, j, c)) {
                moves.push(((next_i, next_j), Some(c)));
            }
        }
        for (next, read) in moves {
            if let std::collections::hash_map::Entry::Vacant(entry) = previous.entry(next) {
                entry.insert(Some((state, read)));
                queue.push_back(next);
            }
        }
    }
    None
}

/// Where position `i` of `pattern` goes on reading `c`.
fn step(pattern: &[Elem], i: usize, c: u8) -> Option<usize> {
    match pattern.get(i)? {
        Elem::Byte(b) if *b == c => Some(i + 1),
        Elem::Byte(_) => None,
        Elem::Star if c == b'/' => None,
        Elem::Star | Elem::DoubleStar => Some(i),
    }
}

/// Each byte either pattern names, `/`, and one byte neither names.
fn alphabet(a: &[Elem], b: &[Elem]) -> Vec<u8> {
    let mut bytes: Vec<u8> = a
        .iter()
        .chain(b)
        .filter_map(|e| match e {
            Elem::Byte(b) => Some(*b),
            _ => None,
        })
        .collect();
    bytes.push(b'/');
    if let Some(other) = b"xyzqabcdefghijklmnoprstuvw0123456789"
        .iter()
        .find(|c| !bytes.contains(c))
    {
        bytes.push(*other);
    }
    bytes.sort_unstable();
    bytes.dedup();
    bytes
}

fn path_to(previous: &Trail, mut state: (usize, usize)) -> String {
    let mut read = Vec::new();
    while let Some(Some((before, c))) = previous.get(&state) {
        read.extend(c);
        state = *before;
    }
    read.reverse();
    String::from_utf8_lossy(&read).into_owned()
}

#[cfg(test)]
pub(super) fn glob_intersection(a: &str, b: &str) -> Option<String> {
    shared_image(
        &DraftImage {
            glob: a.to_string(),
            comment: None,
        },
        &DraftImage {
            glob: b.to_string(),
            comment: None,
        },
    )
}
