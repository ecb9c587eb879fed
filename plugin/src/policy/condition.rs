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

use std::{
    collections::HashMap,
    fmt, io,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use cel::{
    common::{
        ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue},
        types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt},
        value::{CowVal, Val},
    },
    context::VariableResolver,
    Context, Env, ExecutionError, FunctionContext, ParseErrors, Value,
};

use super::Re2Regex;

/// A condition longer than this, in characters, is refused.
pub const MAX_CONDITION_CHARS: usize = 4096;

/// An attestation may have at most this many conditions.
pub const MAX_CONDITIONS: usize = 64;

/// A statement larger than this, serialized as JSON, is not evaluated.
pub const MAX_STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// A statement whose arrays and objects nest deeper than this is not evaluated (serde_json
/// refuses to parse deeper than 128 levels anyway).
pub const MAX_STATEMENT_DEPTH: usize = 128;

/// Parentheses, brackets and calls may nest this deep in a condition; the parser's own limit
/// is 96.
const MAX_NESTING: u16 = 32;

/// A compiled condition may be this deep at most, counting every operator, call, selection and
/// comprehension on the way down. Evaluation recurses once per level, using up to 35 KiB of
/// stack a level in a debug build: a 2 MiB stack holds about 60 levels there, and this leaves
/// half of it spare. Real conditions are far shallower: the SPEC's are 4 deep.
pub const MAX_DEPTH: usize = 32;

/// The stack of the thread conditions are compiled on. A debug build of the parser needs about
/// 8 MiB for the worst condition of [`MAX_CONDITION_CHARS`]; only what is used is committed.
const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The work the conditions of one statement may do, in AST nodes evaluated inside
/// comprehensions: about 0.35 s.
pub const MAX_STEPS: u64 = 10_000_000;

/// What `matches()` is charged per byte of the text it scans.
const MATCH_BYTES_PER_STEP: u64 = 32;

/// The variables a condition sees.
const VARIABLES: [&str; 2] = ["predicate", "statement"];

/// Compiled `matches()` calls become calls to this function; `@` names cannot be written in
/// CEL, so no condition can call it, or the next one, itself.
const MATCHES: &str = "@matches";

/// Every comprehension's range is wrapped in a call to this function, which charges the budget.
const BUDGET: &str = "@budget";

/// The right-hand side of every `in` is wrapped in a call to this function, which charges the
/// budget for a list's length (a map is a lookup).
const SCAN: &str = "@scan";

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
        let compile_here = || texts.iter().map(|text| compile_here(text.as_ref())).collect();
        std::thread::scope(|scope| {
            let compiler = std::thread::Builder::new()
                .name("pullgate-cel".to_string())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, compile_here);
            match compiler {
                Ok(compiler) => compiler.join().unwrap_or_else(|_| {
                    let failed = || Err("the CEL parser failed on this expression".to_string());
                    texts.iter().map(|_| failed()).collect()
                }),
                Err(e) => texts
                    .iter()
                    .map(|_| Err(format!("cannot start the CEL compiler: {e}")))
                    .collect(),
            }
        })
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
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(bindings);
        // The standard library cannot declare `@` names, so none of these can conflict.
        ctx.add_function(BUDGET, budget_function(Arc::clone(budget)))
            .and_then(|()| ctx.add_function(SCAN, scan_function(Arc::clone(budget))))
            .and_then(|()| ctx.add_function(MATCHES, matches_function(Arc::clone(&self.program), Arc::clone(budget))))
            .map_err(|e| error(e.to_string()))?;
        let result = catch_unwind(AssertUnwindSafe(|| ctx.resolve(&self.program.expr)))
            .map_err(|_| error("the CEL interpreter panicked".to_string()))?;
        // A spent budget fails the condition even where `||`, `&&` or a comprehension absorbed
        // the error, so the outcome never depends on how much work was cut short.
        if budget.is_spent() {
            return Err(error(format!(
                "evaluation exceeded its budget of {} steps (comprehensions over large or nested lists)",
                budget.limit
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
    let mut counter = ByteCounter { bytes: 0 };
    if serde_json::to_writer(&mut counter, statement).is_err() {
        return Err(ConditionFailure::TooLarge {
            reason: format!("larger than {MAX_STATEMENT_BYTES} bytes serialized"),
        });
    }
    let bindings = Bindings {
        statement: to_val(statement, 0)?,
        empty: CelMap::from(HashMap::new()),
    };
    let budget = Arc::new(Budget {
        limit: steps,
        remaining: AtomicU64::new(steps),
        spent: AtomicBool::new(false),
    });
    conditions
        .iter()
        .try_for_each(|condition| condition.evaluate(&bindings, &budget))
}

/// Compiles one condition on the current thread, which needs a stack of
/// [`COMPILE_STACK_BYTES`].
fn compile_here(text: &str) -> Result<Condition, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    let chars = text.chars().count();
    if chars > MAX_CONDITION_CHARS {
        return Err(format!(
            "{chars} characters long; at most {MAX_CONDITION_CHARS} are allowed"
        ));
    }
    let env = env();
    let parser = env.parser().max_recursion_depth(MAX_NESTING);
    let mut expr = parser
        .parse(text)
        .map_err(|errors| format!("does not parse: {}", describe_parse_errors(text, &errors)))?;
    if let Some(what) = never_bool(&expr.expr) {
        return Err(format!("evaluates to {what}, never to a bool"));
    }
    let mut compiler = Compiler {
        env: &env,
        bound: Vec::new(),
        patterns: Vec::new(),
    };
    compiler.walk(&mut expr)?;
    if depth(&expr) > MAX_DEPTH {
        return Err(format!(
            "nested more than {MAX_DEPTH} levels deep (an operator or a call is a level)"
        ));
    }
    Ok(Condition {
        text: text.to_string(),
        program: Arc::new(Program {
            expr,
            patterns: compiler.patterns,
        }),
    })
}

/// How deep `expr` nests, as evaluating it recurses.
fn depth(expr: &IdedExpr) -> usize {
    let deepest = |exprs: &mut dyn Iterator<Item = &IdedExpr>| exprs.map(depth).max().unwrap_or(0);
    1 + match &expr.expr {
        Expr::Call(call) => deepest(&mut call.target.as_deref().into_iter().chain(&call.args)),
        Expr::Comprehension(c) => {
            deepest(&mut [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result].into_iter())
        }
        Expr::List(list) => deepest(&mut list.elements.iter()),
        Expr::Map(map) => deepest(&mut map.entries.iter().flat_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => vec![&entry.key, &entry.value],
            EntryExpr::StructField(field) => vec![&field.value],
        })),
        Expr::Select(select) => depth(&select.operand),
        Expr::Struct(message) => deepest(&mut message.entries.iter().filter_map(|entry| match &entry.expr {
            EntryExpr::StructField(field) => Some(&field.value),
            EntryExpr::MapEntry(_) => None,
        })),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 0,
    }
}

/// The shared standard environment: conditions are compiled and evaluated against it.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    Arc::clone(ENV.get_or_init(|| Arc::new(Env::stdlib())))
}

/// Whether the standard library declares a function, or member function, called `name`.
///
/// `cel` does not say so directly, but it refuses to add a function to a context under a name
/// its environment declares; the probe function is never called.
fn declared(name: &str) -> bool {
    let mut ctx = Context::with_env(env());
    ctx.add_function(name, |x: i64| x).is_err()
}

/// `line 2, column 5: Syntax error: …` for each of (at most three of) the parser's errors.
fn describe_parse_errors(text: &str, errors: &ParseErrors) -> String {
    const SHOWN: usize = 3;
    const RECURSION: &str = "Recursion limit of ";
    if errors.errors.iter().any(|e| e.msg.contains(RECURSION)) {
        // The errors after it only follow from the parse being cut short.
        return format!("nested more than {MAX_NESTING} levels deep");
    }
    let multiline = text.contains('\n');
    let mut parts: Vec<String> = errors
        .errors
        .iter()
        .take(SHOWN)
        .map(|e| match e.pos {
            (line, column) if line > 0 && column > 0 && multiline => {
                format!("line {line}, column {column}: {}", e.msg)
            }
            (line, column) if line > 0 && column > 0 => format!("column {column}: {}", e.msg),
            _ => e.msg.clone(),
        })
        .collect();
    if errors.errors.len() > SHOWN {
        parts.push(format!("and {} more errors", errors.errors.len() - SHOWN));
    }
    if parts.is_empty() {
        parts.push("syntax error".to_string());
    }
    truncate(parts.join("; "), 2 * MAX_ERROR_CHARS)
}

/// What a top-level expression evaluates to, if it can never be a bool: `1 + 2`, `[true]`,
/// `size(x)`. Other type errors are only found when the condition is evaluated.
fn never_bool(expr: &Expr) -> Option<&'static str> {
    Some(match expr {
        Expr::Literal(LiteralValue::Boolean(_)) => return None,
        Expr::Literal(LiteralValue::Null) => "null",
        Expr::Literal(LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_)) => "a number",
        Expr::Literal(LiteralValue::String(_)) => "a string",
        Expr::Literal(LiteralValue::Bytes(_)) => "bytes",
        Expr::List(_) => "a list",
        Expr::Map(_) => "a map",
        Expr::Call(call) => match call.func_name.as_str() {
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" => "a sum, difference, product or quotient",
            "size" | "int" | "uint" | "double" => "a number",
            "string" => "a string",
            "bytes" => "bytes",
            "type" => "a type",
            _ => return None,
        },
        _ => return None,
    })
}

/// The dotted name `a.b.c` an identifier, or a selection on one, spells.
fn qualified_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(select) if !select.test => {
            qualified_name(&select.operand.expr).map(|prefix| format!("{prefix}.{}", select.field))
        }
        _ => None,
    }
}

/// Truncates `text` to `max` characters, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

// === Compiler ===

/// Checks a parsed condition, and rewrites it for metered evaluation.
struct Compiler<'e> {
    env: &'e Env,
    /// The variables the enclosing comprehensions bind.
    bound: Vec<String>,
    /// The `matches()` patterns, compiled.
    patterns: Vec<(String, Re2Regex)>,
}

impl Compiler<'_> {
    /// Checks and rewrites `node`, returning its weight: the AST nodes one evaluation of it
    /// visits, not counting the iterations of its comprehensions, which charge for themselves.
    fn walk(&mut self, node: &mut IdedExpr) -> Result<u64, String> {
        if let Expr::Call(call) = &node.expr {
            if call.func_name == "matches" {
                return self.matches(node);
            }
        }
        let weight = match &mut node.expr {
            Expr::Unspecified => return Err("is not a complete expression".to_string()),
            Expr::Literal(_) => 1,
            Expr::Ident(name) => {
                self.ident(name)?;
                1
            }
            Expr::Select(select) => 1 + self.walk(&mut select.operand)?,
            Expr::List(list) => {
                let mut weight = 1u64;
                for element in &mut list.elements {
                    weight = weight.saturating_add(self.walk(element)?);
                }
                weight
            }
            Expr::Map(map) => {
                let mut weight = 1u64;
                for entry in &mut map.entries {
                    let EntryExpr::MapEntry(entry) = &mut entry.expr else {
                        return Err("a map literal holds a message field".to_string());
                    };
                    weight = weight
                        .saturating_add(self.walk(&mut entry.key)?)
                        .saturating_add(self.walk(&mut entry.value)?);
                }
                weight
            }
            Expr::Struct(message) => {
                return Err(format!(
                    "message literals ({}{{…}}) are not supported",
                    message.type_name
                ))
            }
            Expr::Call(call) => self.call(call)?,
            Expr::Comprehension(comprehension) => {
                let mut weight = 2u64
                    .saturating_add(self.walk(&mut comprehension.iter_range)?)
                    .saturating_add(self.walk(&mut comprehension.accu_init)?);
                let outer = self.bound.len();
                self.bound.push(comprehension.accu_var.clone());
                self.bound.push(comprehension.iter_var.clone());
                self.bound.extend(comprehension.iter_var2.clone());
                let per_item = self
                    .walk(&mut comprehension.loop_cond)?
                    .saturating_add(self.walk(&mut comprehension.loop_step)?)
                    .max(1);
                weight = weight.saturating_add(self.walk(&mut comprehension.result)?);
                self.bound.truncate(outer);
                let range = std::mem::take(&mut comprehension.iter_range);
                let id = range.id;
                let per_item = LiteralValue::Int(CelInt::from(i64::try_from(per_item).unwrap_or(i64::MAX)));
                comprehension.iter_range = IdedExpr {
                    id,
                    expr: Expr::Call(CallExpr {
                        func_name: BUDGET.to_string(),
                        target: None,
                        args: vec![
                            range,
                            IdedExpr {
                                id,
                                expr: Expr::Literal(per_item),
                            },
                        ],
                    }),
                };
                weight
            }
        };
        Ok(weight)
    }

    fn ident(&self, name: &str) -> Result<(), String> {
        // `@result` and the like are the accumulators macros introduce.
        let known = name.starts_with('@')
            || VARIABLES.contains(&name)
            || self.bound.iter().any(|bound| bound == name)
            || self.env.types().find_type(name).is_some();
        if known {
            Ok(())
        } else {
            Err(format!(
                "unknown variable {name:?}; conditions see only predicate and statement"
            ))
        }
    }

    fn call(&mut self, call: &mut CallExpr) -> Result<u64, String> {
        let mut weight = 1u64;
        // `optional.of(x)` is a call of `optional.of`, not of `of` on a variable `optional`.
        let namespaced = call
            .target
            .as_deref()
            .and_then(|target| qualified_name(&target.expr))
            .is_some_and(|namespace| declared(&format!("{namespace}.{}", call.func_name)));
        if !namespaced {
            // Operators (`_+_`, `!_`, `@in`) are built into the interpreter; named functions
            // must be declared.
            let named = call.func_name.starts_with(|c: char| c.is_ascii_alphabetic());
            if named && !declared(&call.func_name) {
                return Err(format!("unknown function {:?}", call.func_name));
            }
            if let Some(target) = &mut call.target {
                weight = weight.saturating_add(self.walk(target)?);
            }
        }
        for arg in &mut call.args {
            weight = weight.saturating_add(self.walk(arg)?);
        }
        // `x in list` scans the list: meter it like a comprehension over it.
        if call.func_name == "@in" {
            if let Some(haystack) = call.args.get_mut(1) {
                let inner = std::mem::take(haystack);
                *haystack = IdedExpr {
                    id: inner.id,
                    expr: Expr::Call(CallExpr {
                        func_name: SCAN.to_string(),
                        target: None,
                        args: vec![inner],
                    }),
                };
                weight = weight.saturating_add(1);
            }
        }
        Ok(weight)
    }

    /// `text.matches('re')` or `matches(text, 're')`: the pattern must be a literal, so that it
    /// is compiled here, once, and not on every call. The call becomes `@matches(text, 're')`.
    fn matches(&mut self, node: &mut IdedExpr) -> Result<u64, String> {
        let Expr::Call(call) = &mut node.expr else {
            return Err("internal: not a call".to_string());
        };
        let target = call.target.take();
        let args = std::mem::take(&mut call.args);
        let (text, pattern) = match (target, <[IdedExpr; 1]>::try_from(args)) {
            (Some(target), Ok([pattern])) => (*target, pattern),
            (None, Err(args)) => match <[IdedExpr; 2]>::try_from(args) {
                Ok([text, pattern]) => (text, pattern),
                Err(_) => return Err("matches() takes a string and a pattern".to_string()),
            },
            _ => return Err("matches() takes a string and a pattern".to_string()),
        };
        let Expr::Literal(LiteralValue::String(literal)) = &pattern.expr else {
            return Err("the pattern of matches() must be a string literal".to_string());
        };
        let source = literal.inner().to_string();
        if !self.patterns.iter().any(|(known, _)| *known == source) {
            let regex = Re2Regex::new(&source)
                .map_err(|e| format!("matches({source:?}): not a valid regular expression: {e}"))?;
            self.patterns.push((source, regex));
        }
        let mut rewritten = CallExpr {
            func_name: MATCHES.to_string(),
            target: None,
            args: vec![text, pattern],
        };
        let weight = 2 + self.walk(&mut rewritten.args[0])?;
        call.func_name = rewritten.func_name;
        call.args = rewritten.args;
        Ok(weight)
    }
}

// === Evaluation ===

/// The steps left to the conditions of one statement.
struct Budget {
    limit: u64,
    remaining: AtomicU64,
    spent: AtomicBool,
}

impl Budget {
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

    fn is_spent(&self) -> bool {
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

/// Counts the bytes serde_json writes, failing once there are too many.
struct ByteCounter {
    bytes: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes > MAX_STATEMENT_BYTES {
            return Err(io::Error::other("statement too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The statement converted for CEL, borrowing its strings; `predicate` is found in it on each
/// lookup rather than converted twice.
struct Bindings<'a> {
    statement: Box<dyn Val + 'a>,
    /// What `predicate` is when the statement has none.
    empty: CelMap<'static>,
}

impl<'a> Bindings<'a> {
    fn predicate(&self) -> &(dyn Val + 'a) {
        self.statement
            .downcast_ref::<CelMap>()
            .and_then(|statement| statement.inner().get(&CelMapKey::from("predicate")))
            .map_or(&self.empty, |predicate| predicate.as_ref())
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "statement" => Some(CowVal::Borrowed(self.statement.as_ref())),
            "predicate" => Some(CowVal::Borrowed(self.predicate())),
            _ => None,
        }
    }
}

/// Converts JSON to CEL values: integers that fit are `int`, larger ones `uint`, the rest
/// `double`.
fn to_val(value: &serde_json::Value, depth: usize) -> Result<Box<dyn Val + '_>, ConditionFailure> {
    use serde_json::Value as Json;
    let nested = |depth: usize| {
        if depth >= MAX_STATEMENT_DEPTH {
            return Err(ConditionFailure::TooLarge {
                reason: format!("nested deeper than {MAX_STATEMENT_DEPTH} levels"),
            });
        }
        Ok(depth + 1)
    };
    Ok(match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => {
            let depth = nested(depth)?;
            let items = items
                .iter()
                .map(|item| to_val(item, depth))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(CelList::from(items))
        }
        Json::Object(entries) => {
            let depth = nested(depth)?;
            let entries = entries
                .iter()
                .map(|(key, value)| Ok((CelMapKey::from(key.as_str()), to_val(value, depth)?)))
                .collect::<Result<HashMap<_, _>, ConditionFailure>>()?;
            Box::new(CelMap::from(entries))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::{json, Value as Json};

    use super::*;

    fn compile(text: &str) -> Condition {
        Condition::compile(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn refused(text: &str) -> String {
        match Condition::compile(text) {
            Ok(_) => panic!("{text:?} should be refused"),
            Err(e) => e,
        }
    }

    fn check(text: &str, statement: &Json) -> Result<(), ConditionFailure> {
        evaluate(&[compile(text)], statement)
    }

    fn error_of(text: &str, statement: &Json) -> String {
        match check(text, statement) {
            Err(ConditionFailure::Error { condition, error }) => {
                assert_eq!(condition, text);
                error
            }
            other => panic!("{text:?} should fail with an error, got {other:?}"),
        }
    }

    fn statement(predicate_type: &str, predicate: Json) -> Json {
        json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{
                "name": "registry.example.com/team/app",
                "digest": {"sha256": "ab".repeat(32)},
            }],
            "predicateType": predicate_type,
            "predicate": predicate,
        })
    }

    fn cyclonedx(components: Json) -> Json {
        statement(
            "https://cyclonedx.org/bom",
            json!({
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
                "version": 1,
                "metadata": {
                    "timestamp": "2025-03-01T10:00:00Z",
                    "tools": {"components": [{"type": "application", "name": "syft", "version": "1.20.0"}]},
                    "component": {"type": "container", "name": "registry.example.com/team/app"},
                },
                "components": components,
            }),
        )
    }

    fn sbom() -> Json {
        cyclonedx(json!([
            {
                "type": "library",
                "name": "openssl",
                "version": "3.0.15-1~deb12u1",
                "purl": "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64",
                "licenses": [{"license": {"id": "Apache-2.0"}}],
            },
            {
                "type": "library",
                "name": "zlib1g",
                "version": "1:1.2.13.dfsg-1",
                "purl": "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64",
                "licenses": [{"license": {"name": "Zlib"}}],
            },
        ]))
    }

    fn provenance(repository: &str) -> Json {
        statement(
            "https://slsa.dev/provenance/v1",
            json!({
                "buildDefinition": {
                    "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                    "externalParameters": {
                        "workflow": {
                            "ref": "refs/tags/v1.4.2",
                            "repository": repository,
                            "path": ".github/workflows/release.yml",
                        },
                    },
                    "internalParameters": {
                        "github": {"event_name": "push", "repository_id": "706123456", "repository_owner_id": "1234567"},
                    },
                    "resolvedDependencies": [{
                        "uri": format!("git+{repository}@refs/tags/v1.4.2"),
                        "digest": {"gitCommit": "9f2c1e0b7d4a5c3e8f6a1b2d3c4e5f60718293a4"},
                    }],
                },
                "runDetails": {
                    "builder": {"id": "https://github.com/actions/runner/github-hosted"},
                    "metadata": {"invocationId": format!("{repository}/actions/runs/1234/attempts/1")},
                },
            }),
        )
    }

    /// A cosign vulnerability attestation (`cosign attest --type vuln`) wrapping a Trivy report.
    fn vuln(severities: &[&str]) -> Json {
        let vulnerabilities: Vec<Json> = severities
            .iter()
            .enumerate()
            .map(|(i, severity)| {
                json!({
                    "VulnerabilityID": format!("CVE-2024-{:04}", 1000 + i),
                    "PkgName": "openssl",
                    "InstalledVersion": "3.0.11-1~deb12u2",
                    "Severity": severity,
                })
            })
            .collect();
        statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            json!({
                "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
                "scanner": {
                    "uri": "pkg:github/aquasecurity/trivy@v0.58.1",
                    "version": "0.58.1",
                    "db": {"uri": "", "version": ""},
                    "result": {
                        "SchemaVersion": 2,
                        "ArtifactName": "registry.example.com/team/app:v1",
                        "ArtifactType": "container_image",
                        "Results": [
                            {"Target": "app (debian 12.8)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vulnerabilities},
                            {"Target": "app/go.mod", "Class": "lang-pkgs", "Type": "gomod"},
                        ],
                    },
                },
                "metadata": {"scanStartedOn": "2025-03-01T10:00:00Z", "scanFinishedOn": "2025-03-01T10:00:09Z"},
            }),
        )
    }

    const NO_CRITICAL: &str = r#"predicate.scanner.result.Results.all(r, !has(r.Vulnerabilities) || r.Vulnerabilities.all(v, v.Severity != "CRITICAL"))"#;
    const SPEC_SBOM: &str = "size(predicate.components) > 0";
    const SPEC_PROVENANCE: &str =
        r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#;

    #[test]
    fn conditions_are_send_and_sync() {
        fn shareable<T: Send + Sync + Clone + fmt::Debug + Eq>() {}
        shareable::<Condition>();
    }

    #[test]
    fn valid_conditions_compile() {
        for text in [
            SPEC_SBOM,
            SPEC_PROVENANCE,
            NO_CRITICAL,
            "statement.predicateType == 'https://cyclonedx.org/bom'",
            "predicate.components.all(c, has(c.licenses) && c.licenses.exists(l, has(l.license.id)))",
            "predicate.components.map(c, c.name).exists_one(n, n == 'openssl')",
            "size(predicate.components.filter(c, c.type == 'library')) >= 1",
            "predicate.buildDefinition.externalParameters.workflow.ref.matches('^refs/tags/v[0-9]+\\\\.')",
            "matches(predicate.runDetails.builder.id, '^https://github\\\\.com/')",
            "statement.subject.exists(s, s.name.startsWith('registry.example.com/'))",
            "type(predicate.version) == int",
            "optional.of(1).hasValue()",
            "statement.subject.all(predicate, predicate.name != '')",
            "true",
            "predicate.version == 1 ||\n  predicate.version == 2",
        ] {
            let condition = compile(text);
            assert_eq!(condition.text(), text);
            assert_eq!(condition, condition.clone());
        }
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let error = refused("size(predicate.components > 0");
        assert_eq!(error, "does not parse: column 30: Syntax error: missing ')' at '<EOF>'");
        let error = refused("predicate.version == 1 &&\n  predicate.x ==");
        assert!(error.starts_with("does not parse: line 2, column "), "{error}");
        assert_eq!(refused("   "), "must not be empty");
        assert!(refused("predicate.a.all(x)").contains("all"));
    }

    #[test]
    fn undeclared_names_are_refused_when_compiled() {
        assert_eq!(
            refused("predicat.components.size() > 0"),
            "unknown variable \"predicat\"; conditions see only predicate and statement"
        );
        assert_eq!(refused("image == 'x'"), refused("image == 'x'"));
        assert!(refused("image == 'x'").contains("\"image\""));
        // A comprehension's variable is bound only inside it.
        let error = refused("predicate.components.all(c, true) && c.name == ''");
        assert!(error.contains("unknown variable \"c\""), "{error}");
        assert_eq!(refused("sise(predicate.components) > 0"), "unknown function \"sise\"");
        assert_eq!(
            refused("predicate.name.lowerAscii() == 'x'"),
            "unknown function \"lowerAscii\""
        );
    }

    #[test]
    fn matches_needs_a_valid_literal_pattern() {
        assert_eq!(
            refused("predicate.a.matches(predicate.b)"),
            "the pattern of matches() must be a string literal"
        );
        let error = refused("predicate.a.matches('(unclosed')");
        assert!(
            error.starts_with("matches(\"(unclosed\"): not a valid regular expression"),
            "{error}"
        );
        assert!(refused("predicate.a.matches('a', 'b')").contains("takes a string and a pattern"));
        // Too big to compile within the regex size limit (a Unicode class: `\w` is ASCII now).
        assert!(refused(r"predicate.a.matches('\\pL{1000}')").contains("not a valid regular expression"));
    }

    #[test]
    fn expressions_that_are_never_bool_are_refused() {
        assert_eq!(
            refused("size(predicate.components)"),
            "evaluates to a number, never to a bool"
        );
        assert_eq!(
            refused("1 + 2"),
            "evaluates to a sum, difference, product or quotient, never to a bool"
        );
        assert_eq!(refused("'yes'"), "evaluates to a string, never to a bool");
        assert_eq!(refused("[true]"), "evaluates to a list, never to a bool");
    }

    #[test]
    fn deep_conditions_are_refused() {
        let nested = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(refused(&nested), "does not parse: nested more than 32 levels deep");
        let chain = format!("{}predicate.x == 1", "predicate.x + ".repeat(40));
        assert_eq!(
            refused(&chain),
            "nested more than 32 levels deep (an operator or a call is a level)"
        );
        // The longest chain that fits compiles on its own thread, whatever the caller's stack.
        let chain = format!("{}1 == 1", "1 + ".repeat(MAX_CONDITION_CHARS / 4 - 2));
        let refusal = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Condition::compile(&chain).err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            refusal.as_deref(),
            Some("nested more than 32 levels deep (an operator or a call is a level)")
        );
    }

    #[test]
    fn the_deepest_conditions_evaluate_on_a_small_stack() {
        let conditions = [
            format!("{}predicate.x == 1", "predicate.x + ".repeat(MAX_DEPTH - 3)),
            format!("{}true{}", "predicate.l.all(x, ".repeat(9), ")".repeat(9)),
            format!("{}true{}", "!(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1)),
            format!("{}true{}", "[".repeat(MAX_DEPTH - 3), "]".repeat(MAX_DEPTH - 3)) + ".size() == 1",
            "predicate == statement.predicate && has(predicate.d)".to_string(),
        ];
        let mut deep = json!(1);
        for _ in 0..MAX_STATEMENT_DEPTH - 3 {
            deep = json!({ "d": deep });
        }
        let statement = json!({"predicate": {"x": 1, "l": [1, 2], "d": deep}});
        for text in conditions {
            let condition = compile(&text);
            assert!(depth(&condition.program.expr) <= MAX_DEPTH, "{text}");
            let statement = statement.clone();
            // Tokio's blocking threads have 2 MiB stacks.
            let outcome = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || evaluate(&[condition], &statement))
                .unwrap()
                .join()
                .unwrap();
            assert!(
                !matches!(outcome, Err(ConditionFailure::TooLarge { .. })),
                "{text}: {outcome:?}"
            );
        }
    }

    #[test]
    fn long_conditions_are_refused() {
        let text = format!("predicate.x == '{}'", "a".repeat(MAX_CONDITION_CHARS));
        assert_eq!(
            refused(&text),
            format!("{} characters long; at most 4096 are allowed", text.chars().count())
        );
        let text = format!("predicate.x == '{}'", "é".repeat(MAX_CONDITION_CHARS - 20));
        compile(&text);
    }

    #[test]
    fn cyclonedx_components() {
        assert_eq!(check(SPEC_SBOM, &sbom()), Ok(()));
        assert_eq!(
            check(SPEC_SBOM, &cyclonedx(json!([]))),
            Err(ConditionFailure::False {
                condition: SPEC_SBOM.to_string()
            })
        );
        let licensed = "predicate.components.all(c, has(c.licenses) && c.licenses.exists(l, has(l.license.id) || has(l.license.name)))";
        assert_eq!(check(licensed, &sbom()), Ok(()));
        let spdx_only = "predicate.components.all(c, c.licenses.exists(l, has(l.license.id)))";
        assert!(matches!(check(spdx_only, &sbom()), Err(ConditionFailure::False { .. })));
        assert_eq!(
            check(
                "predicate.components.exists(c, c.name == 'openssl' && c.version.startsWith('3.0.15'))",
                &sbom()
            ),
            Ok(())
        );
        assert_eq!(
            check("predicate.version == 1 && predicate.specVersion == '1.5'", &sbom()),
            Ok(())
        );
    }

    #[test]
    fn slsa_provenance_workflow() {
        assert_eq!(
            check(SPEC_PROVENANCE, &provenance("https://github.com/org/repo")),
            Ok(())
        );
        let failure = check(SPEC_PROVENANCE, &provenance("https://github.com/evil/fork")).unwrap_err();
        assert_eq!(
            failure.to_string(),
            r#"condition "predicate.buildDefinition.externalParameters.workflow.repository == \"https://github.com/org/repo\"" is false"#
        );
        let tagged = r"predicate.buildDefinition.externalParameters.workflow.ref.matches('^refs/tags/v[0-9]+\\.[0-9]+\\.[0-9]+$')";
        assert_eq!(check(tagged, &provenance("https://github.com/org/repo")), Ok(()));
        let hosted = "matches(predicate.runDetails.builder.id, '^https://github\\\\.com/actions/runner/')";
        assert_eq!(check(hosted, &provenance("https://github.com/org/repo")), Ok(()));
        let error = error_of(
            "predicate.buildDefinition.matches('x')",
            &provenance("https://github.com/org/repo"),
        );
        assert!(error.contains("matches"), "{error}");
    }

    #[test]
    fn cosign_vuln_predicate() {
        assert_eq!(check(NO_CRITICAL, &vuln(&["LOW", "HIGH"])), Ok(()));
        assert_eq!(check(NO_CRITICAL, &vuln(&[])), Ok(()));
        assert!(matches!(
            check(NO_CRITICAL, &vuln(&["LOW", "CRITICAL"])),
            Err(ConditionFailure::False { .. })
        ));
        let scanner = "predicate.scanner.uri.startsWith('pkg:github/aquasecurity/trivy@')";
        assert_eq!(check(scanner, &vuln(&[])), Ok(()));
        // Without the has() guard, the result with no vulnerabilities is a missing key.
        let unguarded = "predicate.scanner.result.Results.all(r, r.Vulnerabilities.all(v, v.Severity != 'CRITICAL'))";
        let error = error_of(unguarded, &vuln(&["LOW"]));
        assert_eq!(error, "No such key: Vulnerabilities");
        // A summary of counts, as some scanners write it.
        let summary = statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            json!({"scanner": {"result": {"summary": {"CRITICAL": 0, "HIGH": 3}}}}),
        );
        assert_eq!(
            check("predicate.scanner.result.summary.CRITICAL == 0", &summary),
            Ok(())
        );
        assert_eq!(check("predicate.scanner.result.summary.HIGH < 5u", &summary), Ok(()));
        assert_eq!(check("predicate.scanner.result.summary.HIGH <= 3.0", &summary), Ok(()));
    }

    #[test]
    fn statement_fields() {
        let text = "statement.predicateType == 'https://slsa.dev/provenance/v1'";
        assert_eq!(check(text, &provenance("https://github.com/org/repo")), Ok(()));
        assert!(matches!(check(text, &sbom()), Err(ConditionFailure::False { .. })));
        let subject = "statement.subject.exists(s, s.digest.sha256.size() == 64)";
        assert_eq!(check(subject, &sbom()), Ok(()));
        // Without a predicate, `predicate` is an empty map.
        let bare = json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x"});
        assert_eq!(
            check("!has(predicate.components) && size(predicate) == 0", &bare),
            Ok(())
        );
    }

    #[test]
    fn errors_are_failures_not_panics() {
        let sbom = sbom();
        assert_eq!(error_of("predicate.nothing.here == 1", &sbom), "No such key: nothing");
        let error = error_of("predicate.components > 0", &sbom);
        assert!(error.contains("no matching overload"), "{error}");
        let error = error_of("predicate.components[7].name == 'x'", &sbom);
        assert!(error.len() < 400, "{error}");
        let error = error_of("predicate.components.map(c, c.name)", &sbom);
        assert_eq!(error, "evaluated to a list, not a bool");
        let error = error_of("predicate.version / 0 == 1", &sbom);
        assert!(error.contains("zero"), "{error}");
        assert_eq!(
            ConditionFailure::Error {
                condition: "a".into(),
                error: "No such key: a".into()
            }
            .to_string(),
            r#"condition "a" failed: No such key: a"#
        );
    }

    #[test]
    fn matches_reads_perl_classes_as_cel_go_does() {
        // cel-go's RE2: `\d` is [0-9] and `\s` is [\t\n\f\r ], never an Arabic digit or a VT.
        let statement = statement(
            "https://example.com/p",
            json!({"tag": "v\u{0663}", "sep": "\u{0b}", "ok": "v3"}),
        );
        assert!(check(r"predicate.tag.matches('^v\\d$')", &statement).is_err());
        assert_eq!(check(r"predicate.ok.matches('^v\\d$')", &statement), Ok(()));
        assert!(check(r"matches(predicate.sep, '^\\s$')", &statement).is_err());
    }

    #[test]
    fn conditions_are_evaluated_in_order() {
        let conditions = [
            compile(SPEC_SBOM),
            compile("predicate.x == 1"),
            compile("predicate.y == 1"),
        ];
        let failure = evaluate(&conditions, &sbom()).unwrap_err();
        assert_eq!(
            failure,
            ConditionFailure::Error {
                condition: "predicate.x == 1".into(),
                error: "No such key: x".into()
            }
        );
        assert_eq!(evaluate(&[], &json!(null)), Ok(()));
        assert_eq!(evaluate(&conditions[..1], &sbom()), Ok(()));
        assert_eq!(
            failure.to_string(),
            r#"condition "predicate.x == 1" failed: No such key: x"#
        );
    }

    #[test]
    fn oversized_statements_are_refused() {
        let big = cyclonedx(json!([{"name": "x".repeat(MAX_STATEMENT_BYTES)}]));
        let failure = check(SPEC_SBOM, &big).unwrap_err();
        assert!(matches!(failure, ConditionFailure::TooLarge { .. }));
        assert_eq!(
            failure.to_string(),
            "conditions not evaluated: the statement is larger than 4194304 bytes serialized"
        );
        let mut deep = json!(1);
        for _ in 0..MAX_STATEMENT_DEPTH {
            deep = json!([deep]);
        }
        assert!(matches!(
            check("true", &statement("x", deep)),
            Err(ConditionFailure::TooLarge { .. })
        ));
    }

    #[test]
    fn work_is_bounded() {
        let list: Vec<u32> = vec![0; 10_000];
        let big = statement("x", json!({ "list": list }));
        let nested = "predicate.list.all(x, predicate.list.all(y, x == y))";
        let started = Instant::now();
        let error = error_of(nested, &big);
        assert_eq!(
            error,
            "evaluation exceeded its budget of 10000000 steps (comprehensions over large or nested lists)"
        );
        // It stops after MAX_STEPS steps (0.3 s in a release build); unbounded, it takes 24 s.
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
        // A single pass over the list is well within the budget.
        assert_eq!(check("predicate.list.all(x, x == 0)", &big), Ok(()));
    }

    #[test]
    fn every_comprehension_is_metered() {
        const STEPS: u64 = 50_000;
        let spent = |text: &str, statement: &Json| match evaluate_within(&[compile(text)], statement, STEPS) {
            Err(ConditionFailure::Error { error, .. }) => assert!(error.contains("budget of 50000 steps"), "{error}"),
            other => panic!("{text:?} should spend the budget, got {other:?}"),
        };
        let list: Vec<u32> = vec![0; 1_000];
        let big = statement("x", json!({ "list": list }));
        spent("predicate.list.all(x, predicate.list.all(y, x == y))", &big);
        // The error is absorbed by `||`, but the spent budget still fails the condition.
        spent(
            "predicate.list.exists(x, predicate.list.exists(y, x != y)) || true",
            &big,
        );
        spent("predicate.list.all(x, predicate.list.map(y, y + x).size() > 0)", &big);
        spent("predicate.list.all(x, !(x + 1 in predicate.list))", &big);
        // A lookup in a map is not a scan.
        let map: serde_json::Map<String, Json> = (1_000..2_000).map(|i| (i.to_string(), json!(i))).collect();
        let keyed = statement("x", json!({ "list": vec![0; 1_000], "map": map }));
        let lookups = compile("predicate.list.all(x, !(string(x + 1) in predicate.map))");
        assert_eq!(evaluate_within(&[lookups], &keyed, STEPS), Ok(()));
        assert_eq!(
            check("0 in predicate.list && 'openssl' in ['zlib', 'openssl']", &big),
            Ok(())
        );
        spent(
            "predicate.list.filter(x, predicate.list.exists_one(y, y == x)).size() > 0",
            &big,
        );
        // The budget is shared by the conditions of one statement.
        let pass = "predicate.list.all(x, x == 0)";
        let conditions = vec![compile(pass); 10];
        assert_eq!(evaluate_within(&conditions[..1], &big, STEPS), Ok(()));
        assert!(evaluate_within(&conditions, &big, STEPS).is_err());
        // matches() is charged by the text it scans.
        let long = statement("x", json!({ "text": "a".repeat(1 << 20), "list": vec![0; 20] }));
        spent("predicate.list.exists(x, predicate.text.matches('b'))", &long);
        assert_eq!(
            evaluate_within(&[compile("predicate.text.matches('^a+$')")], &long, STEPS),
            Ok(())
        );
    }

    #[test]
    fn numbers_keep_their_json_meaning() {
        let s = statement("x", json!({"i": -3, "u": u64::MAX, "f": 1.5, "z": 0}));
        assert_eq!(check("predicate.i == -3 && predicate.i < 0", &s), Ok(()));
        assert_eq!(check("predicate.u == 18446744073709551615u", &s), Ok(()));
        assert_eq!(check("predicate.f > 1 && predicate.f < 2.0", &s), Ok(()));
        assert_eq!(
            check("predicate.z == 0 && predicate.z == 0u && predicate.z == 0.0", &s),
            Ok(())
        );
    }
}
