//! Compiling a condition: parsing it, checking it refers only to what exists and can be a bool,
//! compiling its `matches()` patterns, and rewriting its comprehensions, `in` scans and
//! `matches()` calls into calls that charge the evaluation budget.

use std::sync::{Arc, OnceLock};

use cel::{
    common::{
        ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue},
        types::CelInt,
    },
    Context, Env, ParseErrors,
};

use super::{
    functions::{BUDGET, MATCHES, SCAN},
    truncate, Condition, Program, Re2Regex, MAX_CONDITION_CHARS, MAX_DEPTH, MAX_ERROR_CHARS,
};

/// Parentheses, brackets and calls may nest this deep in a condition; the parser's own limit
/// is 96.
const MAX_NESTING: u16 = 32;

/// The stack of the thread conditions are compiled on. A debug build of the parser needs about
/// 8 MiB for the worst condition of [`MAX_CONDITION_CHARS`]; only what is used is committed.
const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The variables a condition sees.
const VARIABLES: [&str; 2] = ["predicate", "statement"];

/// Compiles each of `texts` on a thread of its own, with a stack of [`COMPILE_STACK_BYTES`]
/// (see [`Condition::compile_all`]).
pub(super) fn compile_all<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<Result<Condition, String>> {
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
pub(super) fn depth(expr: &IdedExpr) -> usize {
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
pub(super) fn env() -> Arc<Env> {
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
