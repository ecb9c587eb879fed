//! Which pod namespaces an imported rule covers.
//!
//! On the node a pull knows only its pod's namespace. Narrowing a rule that verifies by what
//! the node cannot see (labels, names, users, kinds, operations) would let pulls escape it, so
//! such conditions are dropped from what a rule matches (it then covers more: stricter) and
//! from what it excludes (the exclusion is not carried over: stricter too), and reported. A
//! rule that covers more than its source says so ([`Scope::widened`]): it must never stand in
//! for another rule on pulls the source would not give it.

use serde_json::Value;

use super::document::{items, string, Fields, Report};
use pullgate::policy::NamespaceGlob;

/// The namespaces a rule covers: `namespaces` (`None` for all) minus `exclude`.
#[derive(Clone, Debug, Default)]
pub(super) struct Scope {
    pub namespaces: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// Something that narrowed the source rule was dropped: this scope covers pulls the
    /// source rule does not.
    pub widened: bool,
}

/// Where a policy lives: a cluster policy, a namespaced one and its namespace, or a namespaced
/// one whose namespace the input does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Home<'a> {
    Cluster,
    Namespace(&'a str),
    /// Covered as if in every namespace (stricter), as dispatch reports.
    Unknown,
}

/// Operations that start a pull: a pod's creation, and an update that changes an image.
const PULLING_OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// Fields the node cannot evaluate.
const UNSEEN: [&str; 9] = [
    "names",
    "name",
    "annotations",
    "selector",
    "namespaceSelector",
    "subjects",
    "roles",
    "clusterRoles",
    "userInfo",
];

/// A Kyverno rule's `match` and `exclude`, and for a namespaced `Policy` its namespace. `None`
/// when the rule can cover no namespace.
pub(super) fn kyverno(rule: &mut Fields<'_>, home: Home<'_>, report: &mut Report<'_>) -> Option<Scope> {
    let mut scope = Scope::default();
    if let Some(value) = rule.get("match") {
        scope.namespaces = kyverno_match(value, &rule.path("match"), &mut scope.widened, report);
    }
    if let Some(value) = rule.get("exclude") {
        scope.exclude = kyverno_exclude(value, &rule.path("exclude"), &mut scope.widened, report);
    }
    match home {
        Home::Cluster => {}
        Home::Namespace(namespace) => {
            if scope.namespaces.is_some() {
                report.note(
                    &rule.path("match"),
                    format!("a namespaced Policy covers only its own namespace, {namespace}; that bounds the rule"),
                );
            }
            scope.namespaces = Some(vec![namespace.to_string()]);
        }
        Home::Unknown => scope.widened = true,
    }
    if scope.namespaces.as_ref().is_some_and(Vec::is_empty) {
        report.note(rule.own_path(), "matches no namespace a pod can be in; not imported");
        return None;
    }
    Some(scope)
}

/// `match`: `any` filters add up, `all` filters narrow (the first with namespaces is kept,
/// which covers more: stricter).
fn kyverno_match(value: &Value, path: &str, widened: &mut bool, report: &mut Report<'_>) -> Option<Vec<String>> {
    let mut fields = Fields::of(value, path);
    let mut namespaces: Option<Vec<String>> = None;
    let mut restricted = false;
    if let Some(any) = fields.get("any") {
        let mut union = Vec::new();
        let mut all = false;
        for (filter_path, filter) in items(any, &fields.path("any"), report) {
            match match_filter(filter, &filter_path, widened, report) {
                Some(globs) => union.extend(globs),
                None => all = true,
            }
        }
        if !all {
            namespaces = Some(union);
            restricted = true;
        }
    }
    if let Some(all) = fields.get("all") {
        let mut kept: Option<Vec<String>> = None;
        for (filter_path, filter) in items(all, &fields.path("all"), report) {
            if let Some(globs) = match_filter(filter, &filter_path, widened, report) {
                if kept.is_some() {
                    report.dropped(
                        &filter_path,
                        "a second namespace list to intersect with; only the first is kept (stricter)",
                    );
                    *widened = true;
                } else {
                    kept = Some(globs);
                }
            }
        }
        if let Some(kept) = kept {
            if !restricted {
                namespaces = Some(kept);
            }
        }
    }
    // The first form: one filter's fields directly under `match`.
    if fields.has("resources") {
        let globs = legacy_filter(&mut fields, widened, report);
        if let Some(globs) = globs {
            namespaces = Some(globs);
        }
    } else {
        *widened |= unseen(&mut fields, report, true);
    }
    report.unread(&fields, "dropped");
    namespaces
}

/// One filter of `match`: its namespaces, `None` for all.
fn match_filter(filter: &Value, path: &str, widened: &mut bool, report: &mut Report<'_>) -> Option<Vec<String>> {
    let mut fields = Fields::of(filter, path);
    let globs = legacy_filter(&mut fields, widened, report);
    report.unread(&fields, "dropped");
    globs
}

/// `resources` (and the user fields beside it) of a match filter. An empty `namespaces` puts
/// no limit on it, as in Kyverno.
fn legacy_filter(fields: &mut Fields<'_>, widened: &mut bool, report: &mut Report<'_>) -> Option<Vec<String>> {
    let mut namespaces = None;
    if let Some(resources) = fields.get("resources") {
        let mut resources = Fields::of(resources, fields.path("resources"));
        *widened |= !every_pod_pull(&mut resources, true, report);
        if let Some(value) = resources.get("namespaces") {
            if !value.as_array().is_some_and(Vec::is_empty) {
                let (globs, wider) = include_globs(value, &resources.path("namespaces"), report);
                *widened |= wider;
                namespaces = Some(globs);
            }
        }
        *widened |= unseen(&mut resources, report, true);
        report.unread(&resources, "dropped");
    }
    *widened |= unseen(fields, report, true);
    namespaces
}

/// Whether a filter's `kinds` and `operations` take in every pull of a pod: its kinds name pods
/// (or every kind), and its operations include each that can start a pull. A pull cannot be
/// told apart by either, so a filter limited by them is reported: for `matching`, the rule
/// covers every pull (stricter); otherwise the exclusion is not carried over (stricter too).
fn every_pod_pull(resources: &mut Fields<'_>, matching: bool, report: &mut Report<'_>) -> bool {
    let why = |what: &str| {
        if matching {
            format!(
                "the rule is limited to {what}, and a pull on the node is a pod's, started by its creation or an \
                 update of its image; the rule covers every pull in its namespaces (stricter)"
            )
        } else {
            format!(
                "the exclusion holds only for {what}, and a pull on the node is a pod's, started by its creation or an \
                 update of its image; this exclusion is not carried over (stricter)"
            )
        }
    };
    let listed = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut every = true;
    if let Some(value) = resources.get("kinds") {
        let kinds = listed(value);
        if !kinds.is_empty() && !kinds.iter().any(|kind| pod_kind(kind)) {
            report.dropped(
                &resources.path("kinds"),
                why(&format!("the kinds {}", kinds.join(", "))),
            );
            every = false;
        }
    }
    if let Some(value) = resources.get("operations") {
        let operations = listed(value);
        let has = |wanted: &str| operations.iter().any(|op| op == "*" || op.eq_ignore_ascii_case(wanted));
        if !operations.is_empty() && !PULLING_OPERATIONS.iter().all(|op| has(op)) {
            report.dropped(
                &resources.path("operations"),
                why(&format!("the operations {}", operations.join(", "))),
            );
            every = false;
        }
    }
    every
}

/// Whether a Kyverno kind (`Pod`, `v1/Pod`, `*/Pod`, `*`) takes in pods themselves; a
/// subresource such as `Pod/ephemeralcontainers` does not.
fn pod_kind(kind: &str) -> bool {
    let mut parts: Vec<&str> = kind.trim().split('/').collect();
    let last = parts.pop().unwrap_or_default();
    matches!(last, "Pod" | "*") && parts.iter().all(|part| matches!(*part, "" | "*" | "v1" | "core"))
}

/// Reports what the node cannot see in a filter; returns whether there was any.
fn unseen(fields: &mut Fields<'_>, report: &mut Report<'_>, matching: bool) -> bool {
    let mut found = false;
    for field in UNSEEN {
        if fields.get(field).is_some() {
            found = true;
            let why = if matching {
                "cannot be evaluated on the node, so the rule covers every pull in its namespaces (stricter)"
            } else {
                "cannot be evaluated on the node, so this exclusion is not carried over (stricter)"
            };
            report.dropped(&fields.path(field), why);
        }
    }
    found
}

/// `exclude`: every filter that names only namespaces excludes them; a filter that also names
/// what the node cannot see is not carried over.
fn kyverno_exclude(value: &Value, path: &str, widened: &mut bool, report: &mut Report<'_>) -> Vec<String> {
    let mut fields = Fields::of(value, path);
    let mut excluded = Vec::new();
    if let Some(any) = fields.get("any") {
        for (filter_path, filter) in items(any, &fields.path("any"), report) {
            let mut filter = Fields::of(filter, filter_path);
            excluded.extend(exclude_filter(&mut filter, widened, report));
            report.unread(&filter, "dropped");
        }
    }
    if let Some(all) = fields.get("all") {
        let filters = items(all, &fields.path("all"), report);
        if let [(path, filter)] = filters.as_slice() {
            let mut filter = Fields::of(filter, path.clone());
            excluded.extend(exclude_filter(&mut filter, widened, report));
            report.unread(&filter, "dropped");
        } else if !filters.is_empty() {
            report.dropped(
                &fields.path("all"),
                "an exclusion that needs several filters to hold at once is not carried over (stricter)",
            );
            *widened = true;
        }
    }
    if fields.has("resources") {
        excluded.extend(exclude_filter(&mut fields, widened, report));
    } else {
        *widened |= unseen(&mut fields, report, false);
    }
    report.unread(&fields, "dropped");
    excluded
}

/// The namespaces one filter of `exclude` excludes: none unless the filter holds for every
/// pod pull in them.
fn exclude_filter(fields: &mut Fields<'_>, widened: &mut bool, report: &mut Report<'_>) -> Vec<String> {
    let mut namespaces = Vec::new();
    let mut narrowed = unseen(fields, report, false);
    if let Some(resources) = fields.get("resources") {
        let mut resources = Fields::of(resources, fields.path("resources"));
        narrowed |= !every_pod_pull(&mut resources, false, report);
        if let Some(value) = resources.get("namespaces") {
            let (globs, dropped) = exclude_globs(value, &resources.path("namespaces"), report);
            *widened |= dropped;
            namespaces = globs;
        }
        narrowed |= unseen(&mut resources, report, false);
        report.unread(&resources, "dropped");
    }
    if narrowed {
        *widened = true;
        return Vec::new();
    }
    namespaces
}

/// Namespace patterns a rule covers: Kyverno's `?` (one character) becomes `*` (covers more:
/// stricter, which the second value says); names no namespace can have are left out.
pub(super) fn include_globs(value: &Value, path: &str, report: &mut Report<'_>) -> (Vec<String>, bool) {
    let mut globs = Vec::new();
    let mut wider = false;
    for (item_path, item) in items(value, path, report) {
        let Some(pattern) = string(item, &item_path, report) else {
            continue;
        };
        let widened = pattern.replace('?', "*");
        if widened != pattern {
            report.note(
                &item_path,
                format!("{pattern:?}: `?` has no pullgate equivalent; read as {widened:?}"),
            );
            wider = true;
        }
        match NamespaceGlob::parse(&widened) {
            Ok(_) => globs.push(widened),
            Err(e) => report.note(
                &item_path,
                format!("{pattern:?} matches no namespace pullgate can see ({e}); left out"),
            ),
        }
    }
    (globs, wider)
}

/// Namespace patterns a rule excludes, or where a weaker mode applies: a pattern pullgate
/// cannot write exactly is not carried over, since a wider one would let pulls escape (the
/// second value says whether one was dropped).
pub(super) fn exclude_globs(value: &Value, path: &str, report: &mut Report<'_>) -> (Vec<String>, bool) {
    let mut globs = Vec::new();
    let mut dropped = false;
    for (item_path, item) in items(value, path, report) {
        let Some(pattern) = string(item, &item_path, report) else {
            continue;
        };
        if pattern.contains('?') {
            report.dropped(
                &item_path,
                format!("{pattern:?}: `?` has no pullgate equivalent; not carried over (stricter)"),
            );
            dropped = true;
            continue;
        }
        match NamespaceGlob::parse(pattern) {
            Ok(_) => globs.push(pattern.to_string()),
            Err(e) => report.note(
                &item_path,
                format!("{pattern:?} matches no namespace pullgate can see ({e}); left out"),
            ),
        }
    }
    (globs, dropped)
}

/// A Kubernetes `namespaceSelector` that only names namespaces by their
/// `kubernetes.io/metadata.name` label: the namespaces it includes (`None` for all) and
/// excludes. Any other selector cannot be seen on the node and is reported.
pub(super) fn namespace_selector(value: &Value, path: &str, report: &mut Report<'_>) -> Scope {
    const NAME_LABEL: &str = "kubernetes.io/metadata.name";
    let mut scope = Scope::default();
    let mut fields = Fields::of(value, path);
    if let Some(labels) = fields.get("matchLabels") {
        let labels_path = fields.path("matchLabels");
        if let Some(map) = labels.as_object() {
            for (label, name) in map {
                match (label.as_str(), name.as_str()) {
                    (NAME_LABEL, Some(name)) => scope.namespaces = Some(vec![name.to_string()]),
                    _ => {
                        report.dropped(
                            &format!("{labels_path}.{label}"),
                            "namespace labels cannot be seen on the node, so the rule covers every namespace here (stricter)",
                        );
                        scope.widened = true;
                    }
                }
            }
        }
    }
    if let Some(expressions) = fields.get("matchExpressions") {
        for (item_path, item) in items(expressions, &fields.path("matchExpressions"), report) {
            let key = item.get("key").and_then(Value::as_str);
            let operator = item.get("operator").and_then(Value::as_str);
            let values: Vec<String> = item
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            match (key, operator) {
                (Some(NAME_LABEL), Some("In")) => {
                    let kept: Vec<String> = values.into_iter().filter(|v| NamespaceGlob::parse(v).is_ok()).collect();
                    scope.namespaces = Some(match scope.namespaces.take() {
                        Some(previous) => previous.into_iter().filter(|n| kept.contains(n)).collect(),
                        None => kept,
                    });
                }
                (Some(NAME_LABEL), Some("NotIn")) => scope
                    .exclude
                    .extend(values.into_iter().filter(|v| NamespaceGlob::parse(v).is_ok())),
                _ => {
                    report.dropped(
                        &item_path,
                        "namespace labels cannot be seen on the node, so the rule covers every namespace here (stricter)",
                    );
                    scope.widened = true;
                }
            }
        }
    }
    report.unread(&fields, "dropped");
    scope
}
