//! Which rule decides a pull: the first whose images and namespaces match, else `noMatch`.

use super::{Action, Mode, NoMatch, Policy, Rule};
use crate::reference::Reference;

/// What the policy decides for one pull before any signature is looked at: the rule that
/// matched (none when `noMatch` decided), what to do, and whether the outcome is enforced.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'p> {
    pub rule: Option<&'p Rule>,
    pub action: DecisionAction,
    pub mode: Mode,
}

/// A decision asks for what a rule can: verify, allow or deny.
pub type DecisionAction = Action;

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
