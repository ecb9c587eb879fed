//! Kyverno's failure actions (`Enforce`, `Audit`) as the modes of the imported rules, never
//! weaker than a mode Kyverno may apply.
//!
//! Kyverno versions choose a `verifyImages` entry's failure action differently. Recent ones take
//! the entry's own `failureAction`, else the policy's `validationFailureAction` (Audit by
//! default), changed per namespace by `validationFailureActionOverrides` (the first that
//! matches the namespace; one without namespaces or selector matches every namespace). Older
//! ones take the first `failureAction` set anywhere in the policy for all of its rules, and
//! the overrides only when none is set; there an override without namespaces matches none. So
//! an imported entry:
//! - enforces when its own action, else the policy's, is Enforce, and also when any rule of
//!   the policy sets Enforce (reported, as that is stricter for recent versions);
//! - enforces where an override to Enforce applies: in its namespaces, all of them when it
//!   names none, and regardless of a label selector the node cannot see (more namespaces);
//! - audits where an override to Audit applies only when no rule of the policy sets a failure
//!   action, in the namespaces it names exactly (as exclusions are read), and not where an
//!   earlier override to Enforce applies; otherwise that override is reported as not carried
//!   over.
//!
//! Each override that applies in some namespaces is a copy of the rule, before it, limited to
//! them; where pullgate cannot write the meeting of those namespaces with the rule's, the rule
//! takes the stricter mode.

use serde_json::Value;

use super::{
    document::{items, show, Fields, Report},
    draft::DraftRule,
    scope, Imports,
};
use pullgate::policy::{Mode, NamespaceGlob};

/// What decides the modes of a policy's entries.
pub(super) struct Actions {
    /// `spec.validationFailureAction`.
    policy: Mode,
    /// Some rule of the policy sets a failure action of its own; one of them sets Enforce.
    any_set: bool,
    some_enforce: bool,
    overrides: Vec<Override>,
}

/// A `validationFailureActionOverrides` entry.
struct Override {
    path: String,
    /// `None` when it names no action.
    mode: Option<Mode>,
    /// `namespaces`, if given.
    namespaces: Option<Value>,
    selector: bool,
}

/// The failure action a value names; anything but Enforce or Audit is reported and read as
/// Enforce.
pub(super) fn failure_action(value: &Value, path: &str, report: &mut Report<'_>) -> Mode {
    match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("enforce") => Mode::Enforce,
        Some("audit") => Mode::Audit,
        _ => {
            report.dropped(
                path,
                format!("{} is not Enforce or Audit; read as Enforce", show(value)),
            );
            Mode::Enforce
        }
    }
}

// === impl Actions ===

impl Actions {
    /// The failure actions of a policy's `spec` (its fields read from `spec`, its rules seen
    /// in `rules`).
    pub fn read(spec: &mut Fields<'_>, rules: Option<&Value>, report: &mut Report<'_>) -> Self {
        let policy = match spec.get("validationFailureAction") {
            Some(value) => failure_action(value, &spec.path("validationFailureAction"), report),
            // Kyverno's default.
            None => Mode::Audit,
        };
        let mut overrides = Vec::new();
        if let Some(value) = spec.get("validationFailureActionOverrides") {
            for (item_path, item) in items(value, &spec.path("validationFailureActionOverrides"), report) {
                let mut fields = Fields::of(item, item_path.clone());
                let mode = fields
                    .get("action")
                    .map(|action| failure_action(action, &fields.path("action"), report));
                // An empty list names no namespace, as no list does.
                let namespaces = fields
                    .get("namespaces")
                    .filter(|value| !value.as_array().is_some_and(Vec::is_empty))
                    .cloned();
                let selector = fields.get("namespaceSelector").is_some();
                report.unread(&fields, "dropped");
                overrides.push(Override {
                    path: item_path,
                    mode,
                    namespaces,
                    selector,
                });
            }
        }
        // The failure actions set in rules: every verifyImages entry's, and validate's.
        let set: Vec<Mode> = rules
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|rule| {
                let entries = rule.get("verifyImages").and_then(Value::as_array).into_iter().flatten();
                entries
                    .chain(rule.get("validate"))
                    .filter_map(|item| item.get("failureAction"))
                    .map(|action| match action.as_str().map(str::to_ascii_lowercase).as_deref() {
                        Some("audit") => Mode::Audit,
                        _ => Mode::Enforce,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Self {
            policy,
            any_set: !set.is_empty(),
            some_enforce: set.contains(&Mode::Enforce),
            overrides,
        }
    }

    /// Sets the mode of `rule`, the rule of the entry at `path` (`own` its failure action), and
    /// returns the copies of it that carry the overrides, to go before it.
    pub fn apply(
        &self,
        rule: &mut DraftRule,
        own: Option<Mode>,
        base: &str,
        path: &str,
        imports: &mut Imports,
        report: &mut Report<'_>,
    ) -> Vec<DraftRule> {
        rule.mode = own.unwrap_or(self.policy);
        if rule.mode == Mode::Audit && self.some_enforce {
            report.dropped(
                path,
                "a rule of this policy sets failureAction Enforce, which Kyverno versions that apply the first \
                 failureAction set in a policy to all of its rules may apply here; pullgate enforces here too \
                 (stricter where Kyverno reads it per rule)",
            );
            rule.mode = Mode::Enforce;
        }
        let mut copies = Vec::new();
        // Where earlier overrides to Enforce apply (`None`: everywhere): no later one to Audit
        // applies there.
        let mut enforced: Option<Vec<String>> = Some(Vec::new());
        for o in &self.overrides {
            let Some(mode) = o.mode else {
                if rule.mode == Mode::Enforce {
                    report.dropped(
                        &o.path,
                        "no action: Kyverno versions read it as Audit or ignore it; not carried over (stricter)",
                    );
                }
                continue;
            };
            if mode == Mode::Enforce {
                let namespaces = self.stricter(o, rule, path, &mut copies, base, imports, report);
                match (&mut enforced, namespaces) {
                    (Some(all), Some(these)) => all.extend(these),
                    (enforced, None) => *enforced = None,
                    (None, _) => {}
                }
            } else if rule.mode == Mode::Enforce {
                if let Some(copy) = self.weaker(o, rule, enforced.as_deref(), path, base, imports, report) {
                    copies.push(copy);
                }
            }
        }
        copies
    }

    /// An override to Enforce: a copy of `rule` in its namespaces when the rule audits (or the
    /// rule enforces altogether where pullgate cannot limit the copy). Returns the namespaces
    /// it applies in, `None` for every one.
    #[allow(clippy::too_many_arguments)]
    fn stricter(
        &self,
        o: &Override,
        rule: &mut DraftRule,
        path: &str,
        copies: &mut Vec<DraftRule>,
        base: &str,
        imports: &mut Imports,
        report: &mut Report<'_>,
    ) -> Option<Vec<String>> {
        let auditing = rule.mode == Mode::Audit;
        let namespaces = o
            .namespaces
            .as_ref()
            .map(|value| scope::include_globs(value, &format!("{}.namespaces", o.path), report).0);
        if o.selector && auditing {
            let where_ = if namespaces.is_some() {
                "its namespaces"
            } else {
                "every namespace"
            };
            report.dropped(
                &format!("{}.namespaceSelector", o.path),
                format!("label selectors cannot be evaluated on the node; the override applies in {where_} (stricter)"),
            );
        }
        if !auditing {
            return namespaces;
        }
        let Some(globs) = namespaces.clone() else {
            if !o.selector {
                report.note(
                    &o.path,
                    "no namespaces: Enforce in every namespace, as recent Kyverno versions read it",
                );
            }
            rule.mode = Mode::Enforce;
            return None;
        };
        match meet(rule.namespaces.as_deref(), &globs) {
            Some(meeting) if meeting.is_empty() => {}
            Some(meeting) => copies.push(copy(rule, Mode::Enforce, meeting, &[], base, imports)),
            None => {
                report.dropped(
                    &format!("{}.namespaces", o.path),
                    format!(
                        "cannot be combined with the namespaces of {path}; Enforce applies in all of them (stricter)"
                    ),
                );
                rule.mode = Mode::Enforce;
            }
        }
        namespaces
    }

    /// An override to Audit of a rule that enforces: a copy of `rule` in the namespaces it names
    /// exactly, but not those in `enforced` (`None`: every one), where an earlier override
    /// enforces; none where that cannot be said.
    #[allow(clippy::too_many_arguments)]
    fn weaker(
        &self,
        o: &Override,
        rule: &DraftRule,
        enforced: Option<&[String]>,
        path: &str,
        base: &str,
        imports: &mut Imports,
        report: &mut Report<'_>,
    ) -> Option<DraftRule> {
        let enforced = enforced?;
        if self.any_set {
            report.dropped(
                &o.path,
                "a rule of this policy sets a failureAction, and Kyverno versions that apply it to all of the \
                 policy's rules ignore overrides; not carried over (stricter)",
            );
            return None;
        }
        if o.selector {
            report.dropped(
                &format!("{}.namespaceSelector", o.path),
                "label selectors cannot be evaluated on the node; this override is not carried over (stricter)",
            );
            return None;
        }
        let Some(value) = &o.namespaces else {
            report.dropped(
                &o.path,
                "no namespaces: recent Kyverno versions apply it in every namespace, older ones in none; not \
                 carried over (stricter)",
            );
            return None;
        };
        let (globs, _) = scope::exclude_globs(value, &format!("{}.namespaces", o.path), report);
        if globs.is_empty() {
            return None;
        }
        match meet(rule.namespaces.as_deref(), &globs) {
            Some(meeting) if meeting.is_empty() => None,
            Some(meeting) => Some(copy(rule, Mode::Audit, meeting, enforced, base, imports)),
            None => {
                report.dropped(
                    &format!("{}.namespaces", o.path),
                    format!("cannot be combined with the namespaces of {path}; not carried over (stricter)"),
                );
                None
            }
        }
    }
}

/// A copy of `rule` in `mode`, limited to `namespaces` and not `also_excluded`.
fn copy(
    rule: &DraftRule,
    mode: Mode,
    namespaces: Vec<String>,
    also_excluded: &[String],
    base: &str,
    imports: &mut Imports,
) -> DraftRule {
    let mut copy = rule.clone();
    copy.name = imports.name(&format!("{base}-{mode}"));
    copy.namespaces = Some(namespaces);
    for glob in also_excluded {
        if !copy.exclude_namespaces.contains(glob) {
            copy.exclude_namespaces.push(glob.clone());
        }
    }
    copy.mode = mode;
    copy.comments
        .push("validationFailureActionOverrides: this mode in these namespaces.".to_string());
    copy
}

/// The namespaces both `rule` (`None`: every one) and `globs` cover, where pullgate can write
/// them: one side's plain names that the other side's patterns match. `None` when both hold
/// patterns.
fn meet(rule: Option<&[String]>, globs: &[String]) -> Option<Vec<String>> {
    let Some(rule) = rule else {
        return Some(globs.to_vec());
    };
    let plain = |list: &[String]| list.iter().all(|glob| !glob.contains('*'));
    let matched = |names: &[String], patterns: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|name| {
                patterns
                    .iter()
                    .any(|pattern| NamespaceGlob::parse(pattern).is_ok_and(|glob| glob.matches(name)))
            })
            .cloned()
            .collect()
    };
    if plain(globs) {
        Some(matched(globs, rule))
    } else if plain(rule) {
        Some(matched(rule, globs))
    } else {
        None
    }
}
