//! Image patterns of Kyverno and policy-controller, written as pullgate globs.
//!
//! The three dialects match differently, and these facts decide the translation:
//! - Kyverno `verifyImages[].imageReferences` are wildcards (`*` any characters, `/` included;
//!   `?` one character) matched against the whole reference as Kyverno writes it:
//!   `registry/path:tag` or `registry/path@digest`, with `docker.io` (and `library/`) added where
//!   the image names no registry. So Kyverno's `*` is pullgate's `**` in the repository, `*` in a
//!   tag.
//! - Kyverno `ImageValidatingPolicy` `matchImageReferences[].glob` are globs without separators:
//!   `*` also matches `/`, and there are `?`, `[…]` and `{a,b}` besides.
//! - policy-controller `images[].glob`: `*` matches within one path segment and `**` across,
//!   as pullgate's do, against the reference with its registry (`index.docker.io` for Docker
//!   Hub); a lone `*` and `*/*` stand for `index.docker.io/library/*` and `index.docker.io/*/*`.
//!
//! A pattern with no tag or digest matches every tag and digest in pullgate. In Kyverno and
//! policy-controller such a pattern without a trailing wildcard matches (next to) no reference,
//! since references always carry a tag or digest there; pullgate's reading covers more images,
//! which for a rule that verifies is the stricter one, and is noted.

use super::{document::Report, rule::Image};
use crate::{policy::ImageGlob, reference::DOCKER_HUB};

/// Which product a pattern comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Kyverno `imageReferences` and `skipImageReferences`.
    KyvernoWildcard,
    /// Kyverno `ImageValidatingPolicy` `matchImageReferences[].glob`.
    KyvernoGlob,
    /// policy-controller `images[].glob`.
    PolicyController,
}

/// The pullgate globs `pattern` stands for (several when it has `{a,b}`), each checked with
/// pullgate's own parser. What cannot be carried over is reported at `path`.
pub(super) fn translate(pattern: &str, dialect: Dialect, path: &str, report: &mut Report<'_>) -> Vec<Image> {
    let shown = format!("{} {pattern:?}", dialect.product());
    let alternatives = match dialect {
        Dialect::KyvernoGlob => match expand_braces(pattern) {
            Ok(alternatives) => alternatives,
            Err(why) => {
                report.dropped(path, format!("{shown}: {why}; pattern dropped"));
                return Vec::new();
            }
        },
        _ => vec![pattern.to_string()],
    };
    let mut images = Vec::new();
    for alternative in alternatives {
        match one(&alternative, dialect) {
            Ok(translated) => {
                if let Some(note) = &translated.note {
                    report.note(path, format!("{shown}: {note}"));
                }
                if let Err(e) = ImageGlob::parse(&translated.glob) {
                    let message = format!(
                        "{shown} becomes {:?}, which pullgate refuses: {e}; pattern dropped",
                        translated.glob
                    );
                    report.dropped(path, message);
                    continue;
                }
                let comment = (translated.glob != pattern).then(|| match &translated.note {
                    Some(note) => format!("{shown}: {note}"),
                    None => format!("{shown}{}", dialect.star_note()),
                });
                let image = Image {
                    glob: translated.glob,
                    comment,
                };
                if !images.contains(&image) {
                    images.push(image);
                }
            }
            Err(why) => report.dropped(path, format!("{shown}: {why}; pattern dropped")),
        }
    }
    images
}

/// One pattern, translated, and what is worth saying about it.
struct Translated {
    glob: String,
    note: Option<String>,
}

// === impl Dialect ===

impl Dialect {
    fn product(self) -> &'static str {
        match self {
            Self::KyvernoWildcard | Self::KyvernoGlob => "Kyverno",
            Self::PolicyController => "policy-controller",
        }
    }

    /// What the translation of a plain pattern did, said once in its comment.
    fn star_note(self) -> &'static str {
        match self {
            Self::KyvernoWildcard | Self::KyvernoGlob => " (its * matches across /)",
            Self::PolicyController => " (Docker Hub written as containerd writes it)",
        }
    }
}

fn one(pattern: &str, dialect: Dialect) -> Result<Translated, String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err("empty pattern".to_string());
    }
    match dialect {
        Dialect::PolicyController => policy_controller(pattern),
        Dialect::KyvernoWildcard | Dialect::KyvernoGlob => kyverno(pattern, dialect),
    }
}

/// Kyverno's wildcards, where `*` spans `/`.
fn kyverno(pattern: &str, dialect: Dialect) -> Result<Translated, String> {
    let mut notes = Vec::new();
    let mut text = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    let mut widened = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => return Err("escaped characters have no pullgate equivalent".to_string()),
            '?' => {
                widened = true;
                text.push('*');
            }
            '[' if dialect == Dialect::KyvernoGlob => {
                // A character class: anything up to its `]` becomes one wildcard.
                if !chars.by_ref().any(|c| c == ']') {
                    return Err("unclosed '['".to_string());
                }
                widened = true;
                text.push('*');
            }
            c => text.push(c),
        }
    }
    if widened {
        notes.push("`?` and `[…]` (one character) have no pullgate equivalent; each became a wildcard");
    }
    // Runs of stars are one star in a wildcard.
    while text.contains("**") {
        text = text.replace("**", "*");
    }
    let (text, registry_note) = qualify(&text, Dialect::KyvernoWildcard);
    notes.extend(registry_note);

    let (name, suffix) = split_tag_or_digest(&text);
    let name = name.replace('*', "**");
    let suffix = suffix.unwrap_or_default();
    if suffix.is_empty() && !name.ends_with('*') {
        notes.push(
            "it names no tag or digest, and Kyverno's references always carry one, so there it matches \
             (next to) no image; here it matches every tag and digest of the repository",
        );
    }
    Ok(Translated {
        glob: format!("{name}{suffix}"),
        note: join_notes(&notes),
    })
}

/// policy-controller's globs, which already mean what pullgate's mean within the repository.
fn policy_controller(pattern: &str) -> Result<Translated, String> {
    let pattern = match pattern {
        "*" => "index.docker.io/library/*",
        "*/*" => "index.docker.io/*/*",
        other => other,
    };
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '/' | '*' | '.' | '@')))
    {
        return Err(format!("{c:?} is not allowed in a policy-controller glob"));
    }
    let mut notes = Vec::new();
    let (text, registry_note) = qualify(pattern, Dialect::PolicyController);
    notes.extend(registry_note);
    let (name, suffix) = split_tag_or_digest(&text);
    // Tags have no `/`, so `**` in one is `*`.
    let suffix = suffix.map(|s| s.replace("**", "*")).unwrap_or_default();
    if suffix.is_empty() && !name.ends_with('*') {
        notes.push(
            "it names no tag or digest, so policy-controller matches it only against references \
             written without one; here it matches every tag and digest of the repository",
        );
    }
    Ok(Translated {
        glob: format!("{name}{suffix}"),
        note: join_notes(&notes),
    })
}

/// Puts the registry in front of a pattern that names none, as the product does for images, and
/// writes Docker Hub as containerd does (`docker.io`).
fn qualify(pattern: &str, dialect: Dialect) -> (String, Option<&'static str>) {
    const HUB_ALIASES: [&str; 2] = ["index.docker.io/", "registry-1.docker.io/"];
    for alias in HUB_ALIASES {
        if let Some(rest) = pattern.strip_prefix(alias) {
            return (format!("{DOCKER_HUB}/{}", library(rest)), None);
        }
    }
    if let Some(rest) = pattern.strip_prefix("docker.io/") {
        return (format!("{DOCKER_HUB}/{}", library(rest)), None);
    }
    let (first, rest) = match pattern.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (pattern, None),
    };
    let host = first.contains(['.', ':']) || first == "localhost";
    let wildcard = first.contains('*');
    match rest {
        Some(_) if host || wildcard => (pattern.to_string(), None),
        // Kyverno's `*` spans `/`, so `*` or `*:v1` alone is any registry and repository.
        None if wildcard && first.starts_with('*') && dialect != Dialect::PolicyController => {
            (pattern.to_string(), None)
        }
        _ => {
            let note = match dialect {
                Dialect::PolicyController => {
                    "it names no registry; policy-controller matches it only against references written \
                     without one, here it is read as a Docker Hub (docker.io) repository"
                }
                _ => {
                    "it names no registry, and Kyverno matches against references that name theirs \
                     (docker.io by default); here it is read as a Docker Hub repository"
                }
            };
            (format!("{DOCKER_HUB}/{}", library(pattern)), Some(note))
        }
    }
}

/// Docker Hub repositories without a namespace are in `library/`.
fn library(rest: &str) -> String {
    let (name, _) = split_tag_or_digest(rest);
    if name.contains('/') || name.starts_with('*') {
        rest.to_string()
    } else {
        format!("library/{rest}")
    }
}

/// Splits `name` from `:tag` or `@digest` (the separator included), as pullgate's globs do: a
/// tag is a `:` after the last `/`.
fn split_tag_or_digest(pattern: &str) -> (&str, Option<&str>) {
    if let Some(at) = pattern.find('@') {
        return (&pattern[..at], Some(&pattern[at..]));
    }
    let last_segment = pattern.rfind('/').map_or(0, |i| i + 1);
    match pattern[last_segment..].find(':') {
        // A host with a port and no path is no tag; `*:v1` is one.
        Some(i) if last_segment == 0 && !pattern[..i].contains('*') => (pattern, None),
        Some(i) => (&pattern[..last_segment + i], Some(&pattern[last_segment + i..])),
        None => (pattern, None),
    }
}

/// `ghcr.io/{a,b}/x` → `ghcr.io/a/x`, `ghcr.io/b/x`; braces do not nest here.
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    const MAX_ALTERNATIVES: usize = 64;
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err("unbalanced '}'".to_string());
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| "unclosed '{'".to_string())?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return Err("nested braces".to_string());
    }
    let mut expanded = Vec::new();
    for choice in inner.split(',') {
        for rest in expand_braces(&pattern[close + 1..])? {
            expanded.push(format!("{}{choice}{rest}", &pattern[..open]));
            if expanded.len() > MAX_ALTERNATIVES {
                return Err(format!("more than {MAX_ALTERNATIVES} alternatives"));
            }
        }
    }
    Ok(expanded)
}

fn join_notes(notes: &[&str]) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("; "))
}

#[cfg(test)]
pub(super) fn translate_for_test(pattern: &str, dialect: Dialect) -> Result<String, String> {
    one(pattern, dialect).map(|t| t.glob)
}
