//! Attestation conditions (SPEC §4): CEL expressions over an in-toto statement, bound as
//! `statement`, and its predicate, bound as `predicate`, all of which must be `true`.
//!
//! A condition is compiled once, when the policy loads: it must parse, refer to no variable but
//! `predicate`, `statement` and those its own comprehensions bind, call only functions the CEL
//! standard library declares, give `matches()` a literal pattern, which is compiled then, not be
//! a literal, list, map or arithmetic result that can never be a bool, and be at most
//! [`MAX_CONDITION_CHARS`] long and [`MAX_DEPTH`] deep. Other type errors only show when it is
//! evaluated, as a failure that names the condition. The crate is used without its optional
//! features: `matches()` is implemented here over the `regex` crate, with the patterns compiled
//! once and read as cel-go's RE2 reads them ([`Re2Regex`]), and there are no
//! `timestamp`/`duration` types (they would pull in chrono and chrono-tz).
//!
//! Evaluation is bounded in size and in work. The statement is refused beyond
//! [`MAX_STATEMENT_BYTES`] serialized and [`MAX_STATEMENT_DEPTH`] levels of nesting, before it is
//! converted. CEL has no loops, but its comprehensions (`all`, `exists`, `exists_one`, `map`,
//! `filter`) nest, and the size cap alone bounds nothing then: a 4 MiB statement can hold a
//! list of two million elements, and `l.all(x, l.all(y, x == y))` over just 10,000 of them takes
//! 24 s (release build; about 240 ns per inner iteration). `cel` has no step limit of its own,
//! so compilation adds one: every comprehension's range is wrapped in a call that charges the
//! range's size times the weight (in AST nodes) of the loop body against a budget of
//! [`MAX_STEPS`] per statement, shared by all its conditions, and fails the evaluation once it is
//! spent. `x in list` is charged the list's length, `matches()` the length of the text it scans.
//! A node costs about 35 ns, so the budget is about 0.35 s of comprehension work (measured: the
//! nested `all` above stops with the budget spent after 0.3 s). What the budget does not see are
//! the other built-ins that walk a value (`==` on lists or maps, `+` on lists or strings,
//! `contains`, `startsWith`): each costs at most the value's size, so at most the size cap, times
//! the iterations the budget allows. The caller's timeout remains the last resort; note that it
//! cannot stop the blocking thread, which runs until the evaluation ends.

mod compile;
mod functions;
mod value;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use cel::{common::ast::IdedExpr, Context, Value};

use self::{functions::Budget, value::Bindings};
use crate::Re2Regex;

/// A condition longer than this, in characters, is refused.
pub const MAX_CONDITION_CHARS: usize = 4096;

/// An attestation may have at most this many conditions.
pub const MAX_CONDITIONS: usize = 64;

/// A statement larger than this, serialized as JSON, is not evaluated.
pub const MAX_STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// A statement whose arrays and objects nest deeper than this is not evaluated (serde_json
/// refuses to parse deeper than 128 levels anyway).
pub const MAX_STATEMENT_DEPTH: usize = 128;

/// A compiled condition may be this deep at most, counting every operator, call, selection and
/// comprehension on the way down. Evaluation recurses once per level, using up to 35 KiB of
/// stack a level in a debug build: a 2 MiB stack holds about 60 levels there, and this leaves
/// half of it spare. Real conditions are far shallower: the SPEC's are 4 deep.
pub const MAX_DEPTH: usize = 32;

/// The work the conditions of one statement may do, in AST nodes evaluated inside
/// comprehensions: about 0.35 s.
pub const MAX_STEPS: u64 = 10_000_000;

/// Error messages from the CEL interpreter may print whole values; denials carry at most this
/// many characters of one.
const MAX_ERROR_CHARS: usize = 300;

/// A CEL condition, parsed and checked when the policy loaded.
#[derive(Clone)]
pub struct Condition {
    text: String,
    program: Arc<Program>,
}

/// A compiled condition: the expression with its comprehensions metered and its `matches()`
/// calls rewritten, and the regular expressions those calls use.
struct Program {
    expr: IdedExpr,
    patterns: Vec<(String, Re2Regex)>,
}

/// Why the conditions of an attestation do not hold for a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionFailure {
    /// The condition evaluated to `false`.
    #[error("condition {condition:?} is false")]
    False { condition: String },
    /// The condition could not be evaluated (a missing key, a type mismatch, the budget spent)
    /// or evaluated to something other than a bool.
    #[error("condition {condition:?} failed: {error}")]
    Error { condition: String, error: String },
    /// The statement is too large to evaluate conditions over.
    #[error("conditions not evaluated: the statement is {reason}")]
    TooLarge { reason: String },
}

// === impl Condition ===

impl Condition {
    /// Parses and checks `text`. The error says what is wrong, without repeating `text`.
    pub fn compile(text: &str) -> Result<Self, String> {
        Self::compile_all(&[text])
            .pop()
            .unwrap_or_else(|| Err("not compiled".to_string()))
    }

    /// [`compile`](Self::compile)s each of `texts`, on one thread.
    ///
    /// The CEL parser recurses once per operator of a chain such as `1 + 1 + …`, and in a debug
    /// build it overflows a 4 MiB stack with 32 nested parentheses, which would abort the
    /// process. So it runs on a thread of its own with a stack ample for any condition of
    /// [`MAX_CONDITION_CHARS`]; what it accepts is at most [`MAX_DEPTH`] deep, so that
    /// evaluating it fits on any thread.
    pub fn compile_all<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<Result<Self, String>> {
        compile::compile_all(texts)
    }

    /// The condition as written in the policy.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn evaluate(&self, bindings: &Bindings<'_>, budget: &Arc<Budget>) -> Result<(), ConditionFailure> {
        let error = |error: String| ConditionFailure::Error {
            condition: self.text.clone(),
            error: truncate(error, MAX_ERROR_CHARS),
        };
        let mut ctx = Context::with_env(compile::env());
        ctx.set_variable_resolver(bindings);
        functions::add(&mut ctx, &self.program, budget).map_err(|e| error(e.to_string()))?;
        let result = catch_unwind(AssertUnwindSafe(|| ctx.resolve(&self.program.expr)))
            .map_err(|_| error("the CEL interpreter panicked".to_string()))?;
        // A spent budget fails the condition even where `||`, `&&` or a comprehension absorbed
        // the error, so the outcome never depends on how much work was cut short.
        if budget.is_spent() {
            return Err(error(format!(
                "evaluation exceeded its budget of {} steps (comprehensions over large or nested lists)",
                budget.limit()
            )));
        }
        match result {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(Value::Bool(false)) => Err(ConditionFailure::False {
                condition: self.text.clone(),
            }),
            Ok(other) => Err(error(format!("evaluated to a {}, not a bool", other.type_of()))),
            Err(e) => Err(error(e.to_string())),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.text).finish()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Conditions compile deterministically, so the same text is the same condition.
impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Condition {}

/// Evaluates `conditions`, in order, over `statement` (a whole in-toto statement), with
/// `predicate` bound to its `predicate` field, or to an empty map when it has none. The first
/// condition that is not exactly `true` is the failure.
///
/// This does CPU-bound work, bounded as the module documentation explains: call it from a
/// blocking thread.
pub fn evaluate(conditions: &[Condition], statement: &serde_json::Value) -> Result<(), ConditionFailure> {
    evaluate_within(conditions, statement, MAX_STEPS)
}

/// [`evaluate`] with a budget of `steps`.
fn evaluate_within(
    conditions: &[Condition],
    statement: &serde_json::Value,
    steps: u64,
) -> Result<(), ConditionFailure> {
    if conditions.is_empty() {
        return Ok(());
    }
    let bindings = Bindings::new(statement)?;
    let budget = Arc::new(Budget::new(steps));
    conditions
        .iter()
        .try_for_each(|condition| condition.evaluate(&bindings, &budget))
}

/// Truncates `text` to `max` characters, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
        text.push('…');
    }
    text
}
