//! Image patterns of Kyverno and policy-controller, written as pullgate globs.
//!
//! The three dialects match differently, and these facts decide the translation:
//! - Kyverno `verifyImages[].imageReferences` are wildcards (`*` any characters, `/` included;
//!   `?` one character) matched against the whole reference as Kyverno writes it:
//!   `registry/path:tag` or `registry/path@digest`, with `docker.io` (and `library/`) added where
//!   the image names no registry, and `index.docker.io` kept as written. So Kyverno's `*` is
//!   pullgate's `**` in the repository, `*` in a tag.
//! - Kyverno `ImageValidatingPolicy` `matchImageReferences[].glob` are globs without separators:
//!   `*` also matches `/`, and there are `?`, `[…]` and `{a,b}` besides.
//! - policy-controller `images[].glob`: `*` matches within one path segment and `**` across,
//!   against the reference with its registry and the digest it resolved
//!   (`index.docker.io/library/nginx@sha256:…`); a lone `*` and `*/*` stand for
//!   `index.docker.io/library/*` and `index.docker.io/*/*`.
//!
//! In both products a wildcard runs on into the tag or digest: Kyverno's `ghcr.io/org/*-prod`
//! matches `ghcr.io/org/app:v1-prod`, and `ghcr.io/org/*:*` matches digest references too, as
//! its `*` can take in `app@sha256`. A pullgate glob cannot say that.
//!
//! So a pattern is read one of two ways ([`Reading`]). For a rule that verifies, the globs
//! cover every image the source pattern matches, and more where they must (more is checked,
//! which is noted). For a rule that allows, the globs match only images the source pattern
//! matches; a pattern that cannot be written so is dropped and reported, and its images are
//! left to the rules after it.

use super::{document::Report, draft::DraftImage};
use pullgate::{
    policy::ImageGlob,
    reference::{looks_like_host, DOCKER_HUB},
};

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

/// Which way a translation may err where pullgate's globs cannot say what the source does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// The images of a rule that verifies or denies: every image the source pattern matches,
    /// and more where it cannot be said exactly.
    Wide,
    /// The images of a rule that allows: only images the source pattern matches; a pattern that
    /// cannot be said so is dropped.
    Narrow,
}

/// The pullgate globs `pattern` stands for, read as `reading` asks (several when it has
/// `{a,b}`, or reads two ways), each checked with pullgate's own parser. What cannot be
/// carried over is reported at `path`.
pub(super) fn translate(
    pattern: &str,
    dialect: Dialect,
    reading: Reading,
    path: &str,
    report: &mut Report<'_>,
) -> Vec<DraftImage> {
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
        let translated = match one(&alternative, dialect) {
            Ok(translated) => translated,
            Err(why) => {
                report.dropped(path, format!("{shown}: {why}; pattern dropped"));
                continue;
            }
        };
        let (globs, notes) = match reading {
            Reading::Wide => translated.wide(),
            Reading::Narrow => match translated.loose {
                Some(why) => {
                    report.dropped(
                        path,
                        format!(
                            "{shown}: {why}; so read, a rule that allows would let through images {} checks, so \
                             the pattern is dropped and the other rules decide them",
                            dialect.product()
                        ),
                    );
                    continue;
                }
                None => (translated.globs, Vec::new()),
            },
        };
        let (globs, spanning) = host_double_stars(globs, reading);
        if let Some(spanning) = spanning {
            report.dropped(
                path,
                format!(
                    "{shown}: its wildcard in the registry name also reaches across `/` into the repository \
                     ({spanning}); in a rule that allows that reading is dropped, and only the one within the \
                     registry name is kept"
                ),
            );
        }
        let note = join_notes(&notes);
        if let Some(note) = &note {
            report.note(path, format!("{shown}: {note}"));
        }
        for glob in globs {
            if let Err(e) = ImageGlob::parse(&glob) {
                report.dropped(
                    path,
                    format!("{shown} becomes {glob:?}, which pullgate refuses: {e}; pattern dropped"),
                );
                continue;
            }
            let comment = (glob != pattern).then(|| match &note {
                Some(note) => format!("{shown}: {note}"),
                None => format!("{shown}{}", dialect.star_note()),
            });
            let image = DraftImage { glob, comment };
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    images
}

/// One pattern, translated: its globs read as closely as pullgate can, and whether they may
/// match images the source pattern does not.
struct Translated {
    /// Never empty.
    globs: Vec<String>,
    /// Why `globs` may match images the source pattern does not.
    loose: Option<&'static str>,
    /// Worth saying when `globs` stand for a rule that verifies.
    notes: Vec<&'static str>,
}

// === impl Translated ===

impl Translated {
    /// The globs of the wide reading, and what is worth saying about them: where a source
    /// wildcard can run on into the tag or digest, every tag and digest of the repositories it
    /// can reach.
    fn wide(self) -> (Vec<String>, Vec<&'static str>) {
        let mut notes = self.notes;
        let mut globs = Vec::new();
        for glob in self.globs {
            match cover(&glob) {
                Some(cover) => {
                    if !notes.contains(&RUNS_ON) {
                        notes.push(RUNS_ON);
                    }
                    globs.push(cover);
                }
                None => globs.push(glob),
            }
        }
        (globs, notes)
    }

    /// Records that the globs may match more than the source pattern, and why; `noted` when
    /// that is worth saying for a rule that verifies too.
    fn loosen(&mut self, why: &'static str, noted: bool) {
        self.loose.get_or_insert(why);
        if noted && !self.notes.contains(&why) {
            self.notes.push(why);
        }
    }
}

/// Why a translation reads a pattern differently; each is said where it matters.
const ONE_CHARACTER: &str = "`?` and `[…]` (one character) have no pullgate equivalent; each became a wildcard";
const NO_REGISTRY_KYVERNO: &str = "it names no registry, and Kyverno matches against references that name theirs \
     (docker.io by default); here it is read as a Docker Hub repository";
const NO_REGISTRY_POLICY_CONTROLLER: &str = "it names no registry, and policy-controller matches the whole reference \
     (index.docker.io/… for Docker Hub); here it is read as a Docker Hub repository";
const DOCKER_HUB_SPELLINGS: &str = "pullgate reads every spelling of a Docker Hub image (docker.io/…, \
     index.docker.io/…, no registry, with or without library/) as one, which the source tells apart";
const DOCKER_IO_POLICY_CONTROLLER: &str =
    "policy-controller writes Docker Hub references index.docker.io/…, so there it matches no image";
const NO_TAG_KYVERNO: &str = "it names no tag or digest, and Kyverno's references always carry one, so there it \
     matches no image; here it matches every tag and digest of the repository";
const NO_TAG_POLICY_CONTROLLER: &str = "it names no tag or digest, and policy-controller matches the reference with \
     the digest it resolved, so there it matches no image; here it matches every tag and digest of the repository";
const ENDS_IN_TAG: &str = "its wildcard runs on into the tag or digest, so its end is not the end of a \
     repository name; here it would match every tag and digest of the repositories it names";
const TAG_POLICY_CONTROLLER: &str = "policy-controller matches the reference with the digest it resolved \
     (repo@sha256:…), which a tag never matches";
const RUNS_ON: &str = "its wildcard also runs on into the tag or digest, which no pullgate glob can say; here it \
     covers every tag and digest of the repositories it can reach (more images are checked)";
const REGISTRY_SPANS: &str = "a wildcard in the registry name reaches into the repository in a way pullgate's \
     globs cannot say; here it covers every repository of those registries";

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
    let mut translated = Translated {
        globs: Vec::new(),
        loose: None,
        notes: Vec::new(),
    };
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
        translated.loosen(ONE_CHARACTER, true);
    }
    // Runs of stars are one star in a wildcard.
    while text.contains("**") {
        text = text.replace("**", "*");
    }
    for (qualified, why) in qualify(&text, Dialect::KyvernoWildcard) {
        if let Some((why, noted)) = why {
            translated.loosen(why, noted);
        }
        let (name, suffix) = split_tag_or_digest(&qualified);
        let suffix = suffix.unwrap_or_default();
        if suffix.is_empty() && !name.ends_with('*') {
            if last_segment(name).contains('*') {
                translated.loosen(ENDS_IN_TAG, false);
            } else {
                translated.loosen(NO_TAG_KYVERNO, true);
            }
        }
        let glob = format!("{}{suffix}", name.replace('*', "**"));
        let (glob, spans) = repair(&glob);
        if spans {
            translated.loosen(REGISTRY_SPANS, true);
        }
        translated.globs.push(glob);
    }
    Ok(translated)
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
    let mut translated = Translated {
        globs: Vec::new(),
        loose: None,
        notes: Vec::new(),
    };
    for (qualified, why) in qualify(pattern, Dialect::PolicyController) {
        if let Some((why, noted)) = why {
            translated.loosen(why, noted);
        }
        let (name, suffix) = split_tag_or_digest(&qualified);
        match suffix {
            None if !name.ends_with('*') => {
                if last_segment(name).contains('*') {
                    translated.loosen(ENDS_IN_TAG, false);
                } else {
                    translated.loosen(NO_TAG_POLICY_CONTROLLER, true);
                }
            }
            None => {}
            // `@` is no character of a policy-controller glob, and a tag never matches there.
            Some(_) => translated.loosen(TAG_POLICY_CONTROLLER, false),
        }
        // Tags have no `/`, so `**` in one is `*`.
        let suffix = suffix.map(|s| s.replace("**", "*")).unwrap_or_default();
        let (glob, spans) = repair(&format!("{name}{suffix}"));
        if spans {
            translated.loosen(REGISTRY_SPANS, true);
        }
        translated.globs.push(glob);
    }
    Ok(translated)
}

/// Why a reading may match more than the source, and whether to say so for a rule that
/// verifies.
type Loose = Option<(&'static str, bool)>;

/// The pattern with its registry in front, as the product reads it, and Docker Hub written as
/// containerd writes it (`docker.io`); two readings where the product's is ambiguous.
fn qualify(pattern: &str, dialect: Dialect) -> Vec<(String, Loose)> {
    let kyverno = dialect != Dialect::PolicyController;
    // policy-controller writes every Docker Hub reference `index.docker.io/…`, as pullgate
    // reads every spelling of one; Kyverno keeps the spelling the pod used.
    if let Some(rest) = pattern.strip_prefix("index.docker.io/") {
        return hub(rest, dialect, kyverno.then_some((DOCKER_HUB_SPELLINGS, false)));
    }
    if let Some(rest) = pattern.strip_prefix("docker.io/") {
        let why = if kyverno {
            DOCKER_HUB_SPELLINGS
        } else {
            DOCKER_IO_POLICY_CONTROLLER
        };
        return hub(rest, dialect, Some((why, false)));
    }
    let registry = match pattern.split_once('/') {
        Some((first, _)) => looks_like_host(first) || first.contains('*'),
        // No `/`: only a wildcard can reach past the registry, and what comes before it says
        // whether it is one (`registry.example.com*`, `*`) or an image of Docker Hub
        // (`nginx:*`).
        None => {
            let head = pattern.split_once('*').map(|(head, _)| head);
            head.is_some_and(|head| head.is_empty() || host_and_port(head))
        }
    };
    if registry {
        return vec![(pattern.to_string(), None)];
    }
    let why = match dialect {
        Dialect::PolicyController => NO_REGISTRY_POLICY_CONTROLLER,
        _ => NO_REGISTRY_KYVERNO,
    };
    hub(pattern, dialect, Some((why, true)))
}

/// A Docker Hub pattern after its registry: repositories without a namespace are in
/// `library/`. Where a wildcard makes it unclear whether the first segment is a namespace or
/// an image of `library/`, both readings.
fn hub(rest: &str, dialect: Dialect, why: Loose) -> Vec<(String, Loose)> {
    let (name, _) = split_tag_or_digest(rest);
    let in_library = format!("{DOCKER_HUB}/library/{rest}");
    let as_written = format!("{DOCKER_HUB}/{rest}");
    let library_added = why.or(Some((DOCKER_HUB_SPELLINGS, false)));
    if name.contains('/') || name.starts_with('*') {
        vec![(as_written, why)]
    } else if !name.contains('*') {
        vec![(in_library, library_added)]
    } else if dialect == Dialect::PolicyController && !name.contains("**") {
        // policy-controller's `*` stays in the segment, and every Hub reference has two.
        vec![(in_library, library_added)]
    } else {
        vec![(in_library, library_added), (as_written, why)]
    }
}

/// Whether the start of a pattern without `/` reads as a registry host, with a port or the start
/// of one, rather than an image and a tag: `registry.example.com:50`, not `nginx:1`.
fn host_and_port(head: &str) -> bool {
    let (host, port) = match head.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (head, None),
    };
    (host.contains('.') || host.starts_with("localhost")) && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The last path segment of a repository pattern.
fn last_segment(name: &str) -> &str {
    name.rfind('/').map_or(name, |i| &name[i + 1..])
}

/// Rewrites a glob whose repository has no `/` (`registry.example.com**`, `docker.io/org**`),
/// which pullgate refuses, into one it accepts: `registry.example.com*/**`. Exact unless a
/// wildcard follows the first `**`; then wider, which the second value says.
fn repair(glob: &str) -> (String, bool) {
    let (name, suffix) = split_tag_or_digest(glob);
    let suffix = suffix.unwrap_or_default();
    let (head, path) = match name.strip_prefix("docker.io/") {
        Some(path) => ("docker.io/", path),
        None => ("", name),
    };
    if path.contains('/') || path == "**" {
        return (glob.to_string(), false);
    }
    let Some(k) = path.find("**") else {
        return (glob.to_string(), false);
    };
    let (before, after) = (&path[..k], &path[k + 2..]);
    if after.contains('*') {
        (format!("{head}{before}*/**{suffix}"), true)
    } else {
        (format!("{head}{before}*/**{after}{suffix}"), false)
    }
}

/// Globs without `**` in their registry host, which pullgate refuses there. A host `**` that
/// stays within the host is `*`; one that crosses into the path is `*/**` (the first such `**`
/// found in the host). The union is exactly the source glob, which a rule that verifies keeps;
/// a rule that allows keeps only the reading within the host, and the second value says what
/// it left out.
fn host_double_stars(globs: Vec<String>, reading: Reading) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    for glob in globs {
        let Some((host, rest)) = glob.split_once('/') else {
            out.push(glob);
            continue;
        };
        if !host.contains("**") {
            out.push(glob);
            continue;
        }
        let pieces: Vec<&str> = host.split("**").collect();
        out.push(format!("{}/{rest}", pieces.join("*")));
        for crossing in 1..pieces.len() {
            let before = pieces[..crossing].join("*");
            let after = pieces[crossing..].join("**");
            let spanning = format!("{before}*/**{after}/{rest}");
            match reading {
                Reading::Wide => out.push(spanning),
                Reading::Narrow => left_out.push(spanning),
            }
        }
    }
    let left_out = (!left_out.is_empty()).then(|| left_out.join(", "));
    (out, left_out)
}

/// Where a wildcard of the last segment can take in the source reference's tag or digest
/// separator, the glob that covers what it then matches: every tag and digest of the
/// repositories up to that wildcard (`ghcr.io/org/*-prod` → `ghcr.io/org/*`). `None` when
/// `glob` already covers them.
fn cover(glob: &str) -> Option<String> {
    let (name, suffix) = split_tag_or_digest(glob);
    let start = name.rfind('/').map_or(0, |i| i + 1);
    let last = &name[start..];
    let star = last.find('*')?;
    match suffix {
        None => {}
        Some(digest) if digest.starts_with('@') => return None,
        Some(tag) => {
            // `app@sha256:<hex>`: a wildcard takes in `@sha256` (or `@` and what comes before
            // the text after it), and the tag pattern matches the hex.
            let after = &last[last.rfind('*')? + 1..];
            let tag = &tag[1..];
            let hex = tag
                .chars()
                .all(|c| c == '*' || c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !("sha256".ends_with(after) && hex && (tag.contains('*') || tag.len() == 64)) {
                return None;
            }
        }
    }
    let wildcard = if last[star..].contains("**") { "**" } else { "*" };
    let cover = format!("{}{wildcard}", &name[..start + star]);
    let (cover, _) = repair(&cover);
    (cover != glob).then_some(cover)
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

/// The first glob of `pattern` as a rule that verifies reads it (`Err` why it has none).
#[cfg(test)]
pub(super) fn translate_for_test(pattern: &str, dialect: Dialect) -> Result<String, String> {
    let (globs, _) = one(pattern, dialect)?.wide();
    globs.into_iter().next().ok_or_else(|| "no glob".to_string())
}

/// The globs of `pattern` as a rule that allows reads it (`Err` why it has none).
#[cfg(test)]
pub(super) fn narrow_for_test(pattern: &str, dialect: Dialect) -> Result<Vec<String>, String> {
    let translated = one(pattern, dialect)?;
    match translated.loose {
        Some(why) => Err(why.to_string()),
        None => Ok(translated.globs),
    }
}
