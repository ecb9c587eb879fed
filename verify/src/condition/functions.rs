//! The functions compiled conditions call in place of what they were written with: `@budget`
//! around every comprehension's range, `@scan` around the list of every `in`, and `@matches`
//! with a pattern compiled when the condition was. Each charges the [`Budget`] of one statement.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use cel::{
    common::{
        types::{CelBool, CelInt, CelString},
        value::CowVal,
    },
    Context, DeclarationError, ExecutionError, FunctionContext,
};

use super::Program;

/// Compiled `matches()` calls become calls to this function; `@` names cannot be written in
/// CEL, so no condition can call it, or the next one, itself.
pub(super) const MATCHES: &str = "@matches";

/// Every comprehension's range is wrapped in a call to this function, which charges the budget.
pub(super) const BUDGET: &str = "@budget";

/// The right-hand side of every `in` is wrapped in a call to this function, which charges the
/// budget for a list's length (a map is a lookup).
pub(super) const SCAN: &str = "@scan";

/// What `matches()` is charged per byte of the text it scans.
const MATCH_BYTES_PER_STEP: u64 = 32;

/// Adds the three functions to `ctx`, charging `budget`, with `program`'s patterns for
/// `@matches`.
pub(super) fn add(
    ctx: &mut Context<'_, '_>,
    program: &Arc<Program>,
    budget: &Arc<Budget>,
) -> Result<(), DeclarationError> {
    // The standard library cannot declare `@` names, so none of these can conflict.
    ctx.add_function(BUDGET, budget_function(Arc::clone(budget)))
        .and_then(|()| ctx.add_function(SCAN, scan_function(Arc::clone(budget))))
        .and_then(|()| ctx.add_function(MATCHES, matches_function(Arc::clone(program), Arc::clone(budget))))
}

/// The steps left to the conditions of one statement.
pub(super) struct Budget {
    limit: u64,
    remaining: AtomicU64,
    spent: AtomicBool,
}

impl Budget {
    pub(super) fn new(steps: u64) -> Self {
        Self {
            limit: steps,
            remaining: AtomicU64::new(steps),
            spent: AtomicBool::new(false),
        }
    }

    /// The steps the budget started with.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    fn charge(&self, steps: u64) -> Result<(), ExecutionError> {
        let charged = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(steps));
        if charged.is_err() {
            self.remaining.store(0, Ordering::Relaxed);
            self.spent.store(true, Ordering::Relaxed);
            return Err(ExecutionError::function_error("budget", "evaluation budget spent"));
        }
        Ok(())
    }

    pub(super) fn is_spent(&self) -> bool {
        self.spent.load(Ordering::Relaxed)
    }
}

/// A function added to an evaluation's context, as `cel` stores them.
type NativeFunction =
    Box<dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError> + Send + Sync>;

/// `@budget(range, weight)`: charges `size(range) * weight` and returns `range`.
fn budget_function(budget: Arc<Budget>) -> NativeFunction {
    Box::new(move |ftx| {
        let [range, weight] = <[CowVal<'_, '_>; 2]>::try_from(std::mem::take(&mut ftx.args))
            .map_err(|_| ExecutionError::invalid_argument_count(2, 0))?;
        let weight = weight.downcast_ref::<CelInt>().map_or(1, |w| *w.inner()).max(1) as u64;
        let size = range.as_sizer().map_or(0, |s| *s.size().inner()).max(0) as u64;
        budget.charge(size.saturating_mul(weight))?;
        Ok(range)
    })
}

/// `@scan(haystack)`: charges the length of a list and returns it.
fn scan_function(budget: Arc<Budget>) -> NativeFunction {
    Box::new(move |ftx| {
        let [haystack] = <[CowVal<'_, '_>; 1]>::try_from(std::mem::take(&mut ftx.args))
            .map_err(|_| ExecutionError::invalid_argument_count(1, 0))?;
        if haystack.get_type().name() == "list" {
            let size = haystack.as_sizer().map_or(0, |s| *s.size().inner()).max(0) as u64;
            budget.charge(size)?;
        }
        Ok(haystack)
    })
}

/// `@matches(text, pattern)`, with `pattern` one the condition compiled.
fn matches_function(program: Arc<Program>, budget: Arc<Budget>) -> NativeFunction {
    Box::new(move |ftx| {
        let [text, pattern] = <[CowVal<'_, '_>; 2]>::try_from(std::mem::take(&mut ftx.args))
            .map_err(|_| ExecutionError::invalid_argument_count(2, 0))?;
        let Some(text) = text.downcast_ref::<CelString>() else {
            let got = text.get_type().name().to_owned();
            return Err(ExecutionError::no_such_member_overload(
                "matches",
                vec![got, "string".to_owned()],
            ));
        };
        let pattern = pattern
            .downcast_ref::<CelString>()
            .map(|p| p.inner())
            .unwrap_or_default();
        let Some((_, regex)) = program.patterns.iter().find(|(source, _)| source == pattern) else {
            return Err(ExecutionError::function_error("matches", "pattern was not compiled"));
        };
        budget.charge(1 + text.inner().len() as u64 / MATCH_BYTES_PER_STEP)?;
        Ok(CowVal::owned(CelBool::from(regex.is_match(text.inner()))))
    })
}
