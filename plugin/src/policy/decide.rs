//! Which rule decides a pull: the first whose images and namespaces match, else `noMatch`.

use super::{Action, Mode, NoMatch, Policy, Rule};
use crate::reference::Reference;

/// What the policy decides for one pull before any signature is looked at, and whether the
/// outcome is enforced.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'p> {
    pub verdict: Verdict<'p>,
    pub mode: Mode,
}

/// What to do with the pull. Only a rule can ask for verification; allow and deny come from a
/// rule, or from `noMatch` when none matched.
#[derive(Clone, Copy, Debug)]
pub enum Verdict<'p> {
    Verify(&'p Rule),
    Allow(Option<&'p Rule>),
    Deny(Option<&'p Rule>),
}

// === impl Decision ===

impl<'p> Decision<'p> {
    /// The decision of `rule`, in `mode`.
    fn by(rule: &'p Rule, mode: Mode) -> Self {
        let verdict = match rule.action() {
            Action::Verify => Verdict::Verify(rule),
            Action::Allow => Verdict::Allow(Some(rule)),
            Action::Deny => Verdict::Deny(Some(rule)),
        };
        Self { verdict, mode }
    }

    /// The rule that decided; `None` when `noMatch` did.
    pub fn rule(&self) -> Option<&'p Rule> {
        match self.verdict {
            Verdict::Verify(rule) => Some(rule),
            Verdict::Allow(rule) | Verdict::Deny(rule) => rule,
        }
    }

    pub fn action(&self) -> Action {
        match self.verdict {
            Verdict::Verify(_) => Action::Verify,
            Verdict::Allow(_) => Action::Allow,
            Verdict::Deny(_) => Action::Deny,
        }
    }
}

// === impl Policy ===

impl Policy {
    /// Decides a pull of `image` (normalized) into pod namespace `namespace`, which is `""`
    /// for a pull without a sandbox.
    pub fn decide(&self, image: &Reference, namespace: &str) -> Decision<'_> {
        if let Some(rule) = self.rules.iter().find(|rule| rule.matches(image, namespace)) {
            return Decision::by(rule, rule.mode().unwrap_or(self.mode));
        }
        self.no_match_decision()
    }

    /// Every decision a pull of `image` could get, whatever the pod's namespace: each rule that
    /// matches the image, in order, up to the first that covers every namespace, and the
    /// `noMatch` decision when no such rule exists.
    ///
    /// `ImageStatus` carries no namespace, so an image is only shown when all of these agree.
    pub fn decisions_in_any_namespace(&self, image: &Reference) -> Vec<Decision<'_>> {
        let mut decisions = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches_image(image)) {
            decisions.push(Decision::by(rule, rule.mode().unwrap_or(self.mode)));
            if rule.covers_every_namespace() {
                return decisions;
            }
        }
        decisions.push(self.no_match_decision());
        decisions
    }

    fn no_match_decision(&self) -> Decision<'_> {
        let (verdict, mode) = match self.no_match {
            NoMatch::Deny => (Verdict::Deny(None), self.mode),
            NoMatch::Allow => (Verdict::Allow(None), self.mode),
            // Recorded as a denial, but never blocked.
            NoMatch::Warn => (Verdict::Deny(None), Mode::Warn),
        };
        Decision { verdict, mode }
    }
}
