//! What a rule may ask of an image beyond its signature: an attestation of a predicate type,
//! young enough and satisfying the rule's conditions.

use std::time::Duration;

use crate::Condition;

/// Why `maxAge` takes a keyless signature: a log entry or timestamp shows only that a
/// signature existed by then, so an old key-signed attestation logged or stamped again today
/// would pass; a certificate's short validity pins when a keyless one was made.
pub const MAX_AGE_NEEDS_KEYLESS: &str = "maxAge needs a keyless signature: a key signature's log entry or timestamp shows only that it existed by then, and an old attestation logged or stamped again would pass";

/// An in-toto attestation a rule requires: a statement of `predicate_type` about the image,
/// signed by one of the rule's authorities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    pub name: String,
    pub predicate_type: String,
    /// The signing time may be no older than this; only a keyless signature's time counts
    /// (see [`MAX_AGE_NEEDS_KEYLESS`]).
    pub max_age: Option<Duration>,
    /// CEL expressions over `predicate` and `statement`, compiled when the policy loaded; all
    /// must hold (see [`evaluate_conditions`](crate::evaluate_conditions)).
    pub conditions: Vec<Condition>,
}
