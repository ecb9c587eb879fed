//! Which rule decides a pull: the first whose images and namespaces match, else `noMatch`.

use super::{Action, Mode, NoMatch, Policy, Rule};
use crate::reference::Reference;

/// What the policy decides for one pull before any signature is looked at: the rule that
/// matched (none when `noMatch` decided), what to do, and whether the outcome is enforced.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'p> {
    pub rule: Option<&'p Rule>,
    pub action: Action,
    pub mode: Mode,
}

// === impl Policy ===

impl Policy {
    /// Decides a pull of `image` (normalized) into pod namespace `namespace`, which is `""`
    /// for a pull without a sandbox.
    pub fn decide(&self, image: &Reference, namespace: &str) -> Decision<'_> {
        if let Some(rule) = self.rules.iter().find(|rule| rule.matches(image, namespace)) {
            return Decision {
                rule: Some(rule),
                action: rule.action(),
                mode: rule.mode().unwrap_or(self.mode),
            };
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
            decisions.push(Decision {
                rule: Some(rule),
                action: rule.action(),
                mode: rule.mode().unwrap_or(self.mode),
            });
            if rule.covers_every_namespace() {
                return decisions;
            }
        }
        decisions.push(self.no_match_decision());
        decisions
    }

    fn no_match_decision(&self) -> Decision<'_> {
        let (action, mode) = match self.no_match {
            NoMatch::Deny => (Action::Deny, self.mode),
            NoMatch::Allow => (Action::Allow, self.mode),
            // Recorded as a denial, but never blocked.
            NoMatch::Warn => (Action::Deny, Mode::Warn),
        };
        Decision {
            rule: None,
            action,
            mode,
        }
    }
}
