//! The order of the imported rules, and what it costs where they overlap.
//!
//! Kyverno and policy-controller require every policy that matches an image; pullgate applies
//! the first rule that matches. Rules keep the order of the input, except that of two rules
//! that can match the same pull, the stricter goes first when one is stricter (every image it
//! lets through the other would let through too, in a mode at least as strict): then the
//! shared images lose nothing. Where neither is, one that can refuse a pull goes before one
//! that cannot (audit, warn), so the shared pulls are still refused when the source refuses
//! them. Every overlap is reported: as a note when nothing is lost, as dropped when the later
//! rule's requirements go unchecked for the shared images.

use std::collections::BTreeSet;

use super::{
    document::{Finding, FindingKind},
    draft::DraftRule,
    overlap::shared_pull,
};
use pullgate::policy::Action;

/// A pull two rules share: an image and, when it matters, a namespace.
type SharedPull = Option<(String, Option<String>)>;

/// `rules` in the order to write them, and a finding for each pair that overlaps.
pub(super) fn order(rules: Vec<DraftRule>, findings: &mut Vec<Finding>) -> Vec<DraftRule> {
    let n = rules.len();
    // Families with a rule that lets images through unchecked (skipped images): Kyverno does
    // not count a skipped image as one the rule applied to.
    let allowing: BTreeSet<usize> = rules
        .iter()
        .filter(|rule| rule.action == Action::Allow)
        .map(|rule| rule.family)
        .collect();
    let intended = |a: &DraftRule, b: &DraftRule| intended(a, b, &allowing);
    let shared: Vec<Vec<SharedPull>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    (i < j && !intended(&rules[i], &rules[j]))
                        .then(|| shared_pull(&rules[i], &rules[j]))
                        .flatten()
                })
                .collect()
        })
        .collect();
    let overlap = |i: usize, j: usize| if i < j { &shared[i][j] } else { &shared[j][i] };

    // `before[j]` lists the rules that must come before rule j.
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let keep_source_order = i < j && intended(&rules[i], &rules[j]);
            let stricter_first = overlap(i, j).is_some() && goes_first(&rules[i], &rules[j]);
            if keep_source_order || stricter_first {
                before[j].push(i);
            }
        }
    }
    // Stable: of the rules whose predecessors are placed, the earliest in the input goes next;
    // should the constraints form a cycle, the earliest unplaced rule breaks it.
    let mut placed = vec![false; n];
    let mut sequence = Vec::with_capacity(n);
    while sequence.len() < n {
        let ready = (0..n).find(|&j| !placed[j] && before[j].iter().all(|&i| placed[i]));
        let Some(next) = ready.or_else(|| (0..n).find(|&j| !placed[j])) else {
            break;
        };
        placed[next] = true;
        sequence.push(next);
    }

    for (position, &i) in sequence.iter().enumerate() {
        for &j in &sequence[position + 1..] {
            if let Some((image, namespace)) = overlap(i, j) {
                findings.push(describe(&rules[i], &rules[j], image, namespace.as_deref()));
            }
        }
    }
    let mut slots: Vec<Option<DraftRule>> = rules.into_iter().map(Some).collect();
    sequence.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Whether of two overlapping rules `a` must come first: it is stricter, or neither is and
/// only `a` can refuse a pull.
fn goes_first(a: &DraftRule, b: &DraftRule) -> bool {
    match (a.implies(b), b.implies(a)) {
        (true, false) => true,
        (false, false) => a.can_refuse() && !b.can_refuse(),
        _ => false,
    }
}

/// Whether two rules come from one source rule, or `a` comes first among the rules of a Kyverno
/// policy that applies only its first matching rule: their order is the source's and their
/// overlap is meant. That holds only where `a` stands for its source rule exactly on the pulls
/// it covers: it covers no more than its source (nothing that narrowed it was dropped), and its
/// family lets no image through unchecked, as a skipped image is not one Kyverno counts as
/// applied, so the next rule must still check it.
fn intended(a: &DraftRule, b: &DraftRule, allowing: &BTreeSet<usize>) -> bool {
    a.family == b.family
        || (a.first_match_group.is_some()
            && a.first_match_group == b.first_match_group
            && !a.widened
            && !allowing.contains(&a.family))
}

fn describe(first: &DraftRule, later: &DraftRule, image: &str, namespace: Option<&str>) -> Finding {
    let pull = match namespace {
        Some(ns) if !ns.is_empty() => format!("{image} in namespace {ns}"),
        _ => image.to_string(),
    };
    let same_policy = first.first_match_group.is_some() && first.first_match_group == later.first_match_group;
    let requires = if same_policy {
        "and Kyverno applies only the first of them that applies (applyRules: One)"
    } else {
        "and the cluster requires both"
    };
    let head = format!(
        "rules {:?} ({}) and {:?} ({}) both match pulls such as {pull}, {requires}",
        first.name, first.origin, later.name, later.origin
    );
    if first.implies(later) {
        Finding::file(
            FindingKind::Note,
            format!(
                "{head}; pullgate applies only the first, {:?}, which is at least as strict, so nothing is lost",
                first.name
            ),
        )
    } else {
        Finding::file(
            FindingKind::Dropped,
            format!(
                "{head}; pullgate applies only the first, {:?}, so the requirements of {:?} are not checked for them",
                first.name, later.name
            ),
        )
    }
}
