//! Kyverno attestation conditions (`any`/`all` blocks of key, operator, value over the
//! predicate, the key a JMESPath in `{{ }}`) written as pullgate CEL conditions.
//!
//! Only what has one reading is translated: a key that is a plain path into the predicate
//! (or `length()` of one), compared with a literal the operator treats as itself. Kyverno
//! compares strings that look like quantities (`1Gi`, `3`), durations (`1h`) or, for the
//! ordering operators, versions specially, and those are left alone; `*` and `?` in a string
//! are wildcards in Kyverno, and become an anchored `matches()`.
//!
//! A block holds when all of its `all` and one of its `any` hold; every block must hold. A
//! condition left out of `all` loses a requirement, and is reported as dropped; an alternative
//! left out of `any` only removes a way to pass, and an `any` left with none (or written
//! empty, which Kyverno never finds true) can never hold.
//!
//! Kyverno compares more loosely than CEL: the `In` family compares the text of numbers and
//! booleans (`"9"` is in `[9]`) and reads a `*` in the key as a wildcard; `Equals` compares a
//! key that reads as a quantity or a duration as one. Where that would make the negated forms
//! hold in CEL but not in Kyverno, the CEL also refuses the text forms; where `Equals` would
//! hold in CEL but not in Kyverno, it refuses quantities.

use serde_json::Value;

use super::{
    document::{items, show, Fields, Report},
    draft::DraftCondition,
};
use pullgate::policy::Condition as Cel;

/// The CEL conditions `conditions` (a Kyverno `conditions` list at `path`) stand for; `None`
/// when they can never hold.
pub(super) fn translate(conditions: &Value, path: &str, report: &mut Report<'_>) -> Option<Vec<DraftCondition>> {
    let mut translated = Vec::new();
    let mut never = false;
    for (block_path, block) in items(conditions, path, report) {
        let mut fields = Fields::of(block, block_path.clone());
        // A bare condition is a block of one.
        if fields.has("key") || fields.has("operator") {
            translated.extend(required(block, &block_path, report));
            continue;
        }
        if let Some(all) = fields.get("all") {
            for (item_path, item) in items(all, &fields.path("all"), report) {
                translated.extend(required(item, &item_path, report));
            }
        }
        if let Some(any) = fields.get("any") {
            match alternatives(any, &fields.path("any"), report) {
                Some(condition) => translated.push(condition),
                None => never = true,
            }
        }
        report.unread(&fields, "dropped");
    }
    (!never).then_some(translated)
}

/// A condition of `all`.
fn required(item: &Value, path: &str, report: &mut Report<'_>) -> Option<DraftCondition> {
    match one(item) {
        Ok((cel, original)) => Some(DraftCondition {
            cel,
            comment: format!("Kyverno {}: {original}", relative(path)),
        }),
        Err((original, why)) => {
            report.dropped(path, format!("{original}: {why}; condition dropped"));
            None
        }
    }
}

/// `any`: one condition, the alternatives joined by `||`; `None`, reported, when no alternative
/// is left, as then it never holds.
fn alternatives(any: &Value, path: &str, report: &mut Report<'_>) -> Option<DraftCondition> {
    let mut cel = Vec::new();
    let mut originals = Vec::new();
    for (item_path, item) in items(any, path, report) {
        match one(item) {
            Ok((expression, original)) => {
                cel.push(format!("({expression})"));
                originals.push(original);
            }
            Err((original, why)) => report.dropped(
                &item_path,
                format!("{original}: {why}; this alternative is dropped, so one of the others must hold"),
            ),
        }
    }
    if cel.is_empty() {
        if any.as_array().is_some_and(|a| !a.is_empty()) {
            report.dropped(
                path,
                "no alternative could be carried over, so none can be shown to hold; the rule denies",
            );
        } else {
            report.note(path, "an empty `any`, which Kyverno never finds true; the rule denies");
        }
        return None;
    }
    let joined = cel.join(" || ");
    if let Err(e) = Cel::compile(&joined) {
        report.dropped(
            path,
            format!("the alternatives do not compile together ({e}), so none can be shown to hold; the rule denies"),
        );
        return None;
    }
    Some(DraftCondition {
        cel: joined,
        comment: format!("Kyverno {}: one of: {}", relative(path), originals.join("; ")),
    })
}

/// `conditions[0].all[1]` from a full path: the comment sits under the attestation already.
fn relative(path: &str) -> &str {
    path.rfind("conditions").map_or(path, |i| &path[i..])
}

/// One condition: its CEL and how the original reads, or how it reads and why it has no CEL.
fn one(item: &Value) -> Result<(String, String), (String, String)> {
    let key = item.get("key").map(show).unwrap_or_default();
    let operator = item.get("operator").and_then(Value::as_str).unwrap_or_default();
    let value = item.get("value");
    let original = format!(
        "{key} {operator} {}",
        value.map(show).unwrap_or_else(|| "(no value)".to_string())
    );
    let fail = |why: &str| Err((original.clone(), why.to_string()));

    let mut fields = Fields::of(item, "");
    let (Some(Value::String(key)), Some(value)) = (fields.get("key"), fields.get("value")) else {
        return fail("needs a string key and a value");
    };
    fields.skip(&["operator", "message"]);
    if let Some(extra) = fields.unread().first() {
        return fail(&format!("{extra:?} is not understood"));
    }
    let path = match key_path(key) {
        Ok(path) => path,
        Err(why) => return fail(&why),
    };
    let cel = match expression(&path, operator, value) {
        Ok(cel) => cel,
        Err(why) => return fail(&why),
    };
    match Cel::compile(&cel) {
        Ok(_) => Ok((cel, original)),
        Err(e) => fail(&format!("its CEL form does not compile ({e})")),
    }
}

/// Names Kyverno puts in the context next to the predicate: a key under them reads the
/// admission request, not the attestation.
const CONTEXT_ROOTS: [&str; 8] = [
    "request",
    "images",
    "element",
    "elementIndex",
    "serviceAccountName",
    "serviceAccountNamespace",
    "target",
    "@",
];

/// `{{ a.b.c }}` → `predicate.a.b.c`; `{{ length(a.b) }}` → `size(predicate.a.b)`.
fn key_path(key: &str) -> Result<String, String> {
    let inner = key
        .trim()
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        .map(str::trim)
        .filter(|inner| !inner.contains("{{"))
        .ok_or_else(|| "the key is not one JMESPath expression in {{ }}".to_string())?;
    if let Some(argument) = inner.strip_prefix("length(").and_then(|rest| rest.strip_suffix(')')) {
        return Ok(format!("size({})", predicate_path(argument.trim())?));
    }
    predicate_path(inner)
}

fn predicate_path(path: &str) -> Result<String, String> {
    let no_cel = || format!("JMESPath {path:?} has no CEL equivalent (only plain paths and length() do)");
    let segments = split_path(path).ok_or_else(no_cel)?;
    if segments.is_empty() {
        return Err(no_cel());
    }
    if CONTEXT_ROOTS.contains(&segments[0].as_str()) {
        return Err(format!(
            "{:?} reads Kyverno's admission context, which does not exist on the node",
            segments[0]
        ));
    }
    let mut cel = "predicate".to_string();
    for segment in segments {
        if is_identifier(&segment) && !RESERVED.contains(&segment.as_str()) {
            cel.push('.');
            cel.push_str(&segment);
        } else {
            cel.push_str(&format!("[{}]", cel_string(&segment)));
        }
    }
    Ok(cel)
}

/// The segments of a dotted path of identifiers and `"quoted"` names; `None` for anything else
/// (projections, filters, pipes, functions).
fn split_path(path: &str) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let (segment, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            let name = &quoted[..end];
            if name.contains('\\') {
                return None;
            }
            (name.to_string(), &quoted[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let name = &rest[..end];
            if !is_identifier(name) {
                return None;
            }
            (name.to_string(), &rest[end..])
        };
        segments.push(segment);
        if after.is_empty() {
            return Some(segments);
        }
        rest = after.strip_prefix('.')?;
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// CEL's reserved words, which cannot follow a `.`.
const RESERVED: [&str; 24] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
    "predicate",
    "statement",
    "type",
];

/// The CEL comparing `path` to `value` as Kyverno's `operator` does.
fn expression(path: &str, operator: &str, value: &Value) -> Result<String, String> {
    let op = operator.to_ascii_lowercase();
    match op.as_str() {
        "equals" | "equal" => equality(path, value, false),
        "notequals" | "notequal" => equality(path, value, true),
        "greaterthan" | "greaterthanorequals" | "lessthan" | "lessthanorequals" => {
            let symbol = match op.as_str() {
                "greaterthan" => ">",
                "greaterthanorequals" => ">=",
                "lessthan" => "<",
                _ => "<=",
            };
            match value {
                Value::Number(n) => Ok(format!("{path} {symbol} {}", number(n))),
                _ => Err(format!(
                    "{operator} with {} compares quantities, durations or versions; no unambiguous CEL form",
                    show(value)
                )),
            }
        }
        "in" | "anyin" | "allin" | "notin" | "anynotin" | "allnotin" => membership(path, &op, operator, value),
        "" => Err("no operator".to_string()),
        _ => Err(format!("operator {operator} has no unambiguous CEL form")),
    }
}

/// `Equals`/`NotEquals`: a plain string, number or bool, or a wildcard string. `NotEquals`
/// refuses what Kyverno may find equal: the text of a bool, a string that reads as a quantity
/// or duration for a number. `Equals` with a wildcard refuses a key that reads as a quantity,
/// which Kyverno compares as one (and finds unequal to a wildcard).
fn equality(path: &str, value: &Value, negated: bool) -> Result<String, String> {
    let quantity = cel_string(QUANTITY);
    let numeric_text = format!(
        "(type({path}) == string && ({path}.matches({quantity}) || {path}.matches({})))",
        cel_string(DURATION)
    );
    match value {
        Value::Bool(b) if negated => Ok(format!("!({path} == {b} || {path} == \"{b}\")")),
        Value::Bool(b) => Ok(format!("{path} == {b}")),
        Value::Number(n) if negated => Ok(format!("!({path} == {} || {numeric_text})", number(n))),
        Value::Number(n) => Ok(format!("{path} == {}", number(n))),
        Value::String(s) => {
            special_string(s)?;
            let wildcard = cel_string(&wildcard_regex(s, true));
            Ok(match (s.contains(['*', '?']), negated, s.as_str()) {
                (true, true, _) => format!("!{path}.matches({wildcard})"),
                (true, false, _) if reads_as_quantity(s) => {
                    format!("!{path}.matches({quantity}) && {path}.matches({wildcard})")
                }
                (true, false, _) => format!("{path}.matches({wildcard})"),
                (false, true, "true" | "false") => format!("!({path} == {} || {path} == {s})", cel_string(s)),
                (false, true, _) => format!("{path} != {}", cel_string(s)),
                (false, false, _) => format!("{path} == {}", cel_string(s)),
            })
        }
        _ => Err(format!("compares with {}; no unambiguous CEL form", show(value))),
    }
}

/// Whether a wildcard may match text that reads as a quantity: its other characters are all
/// ones a quantity can hold (`1*`, `1.*`, not `v1.*`).
fn reads_as_quantity(wildcard: &str) -> bool {
    wildcard.chars().all(|c| {
        matches!(
            c,
            '*' | '?' | '0'
                ..='9' | '.' | '+' | '-' | 'e' | 'E' | 'i' | 'n' | 'u' | 'm' | 'k' | 'K' | 'M' | 'G' | 'T' | 'P'
        )
    })
}

/// What Kubernetes may parse as a quantity (`1500`, `1.5Gi`, `1e3`), with room to spare: a
/// key it matches is never found equal to a wildcard.
const QUANTITY: &str = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)[eEinumkKMGTP]*[-+]?[0-9]*$";

/// What Go may parse as a duration (`1h30m`, `90s`), with room to spare.
const DURATION: &str = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)[a-zµμ]+)+$";

/// The `In` family. The key may be one value or a list: for a list, `AnyIn` asks that one of
/// its elements be in the values, `AllIn` (and the old `In`) that all be; the `NotIn` forms the
/// opposite. The CEL tests which the key is.
fn membership(path: &str, op: &str, operator: &str, value: &Value) -> Result<String, String> {
    let values = match value {
        Value::Array(values) => values.as_slice(),
        single => std::slice::from_ref(single),
    };
    let (quantifier, negated) = match op {
        "anyin" => ("exists", false),
        "in" | "allin" => ("all", false),
        "anynotin" => ("exists", true),
        _ => ("all", true),
    };
    let mut literals = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Value::String(s) if s.contains(['*', '?']) => {
                return Err(format!("{operator} with the wildcard {s:?}; no unambiguous CEL form"))
            }
            Value::String(s) => {
                special_string(s)?;
                literals.push(cel_string(s));
                // Kyverno finds the text of a bool in a list of strings, and the reverse.
                if negated && matches!(s.as_str(), "true" | "false") {
                    literals.push(s.clone());
                }
            }
            Value::Number(n) => {
                literals.push(number(n));
                if negated {
                    literals.push(cel_string(&go_text(n)));
                }
            }
            Value::Bool(b) => {
                literals.push(b.to_string());
                if negated {
                    literals.push(format!("\"{b}\""));
                }
            }
            other => return Err(format!("{operator} with {}; no unambiguous CEL form", show(other))),
        }
    }
    let list = format!("[{}]", literals.join(", "));
    // Kyverno also reads the key as a wildcard over the values: a key with one may be in them.
    let test = |x: &str| {
        if negated {
            format!("!({x} in {list} || (type({x}) == string && {x}.matches(\"[*?]\")))")
        } else {
            format!("{x} in {list}")
        }
    };
    Ok(format!(
        "type({path}) == list ? {path}.{quantifier}(x, {}) : {}",
        test("x"),
        test(path)
    ))
}

/// Refuses strings Kyverno does not compare as text: quantities (`3`, `1Gi`, `1e3`) and
/// durations (`1h30m`).
fn special_string(s: &str) -> Result<(), String> {
    if looks_like_quantity(s) || looks_like_duration(s) {
        return Err(format!(
            "Kyverno compares {s:?} as a quantity or duration; no unambiguous CEL form"
        ));
    }
    if s.contains("{{") {
        return Err(format!("the value {s:?} holds a variable"));
    }
    Ok(())
}

fn looks_like_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let numeric = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    const SUFFIXES: [&str; 15] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    numeric && (SUFFIXES.contains(&suffix) || suffix == "E" || exponent)
}

fn looks_like_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|unit| rest.starts_with(unit) && !rest[unit.len()..].starts_with(char::is_alphabetic));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

/// A JSON number as a CEL literal: integers as `int`, others as `double` (with a point).
fn number(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (None, Some(u), _) => format!("{u}u"),
        (_, _, Some(f)) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        (_, _, Some(f)) => f.to_string(),
        _ => n.to_string(),
    }
}

/// A number as Kyverno writes it to compare it as text: Go's `fmt.Sprint` of the float64 it
/// decoded (`9`, `0.5`, `1e+06`, `1.5e-05`).
fn go_text(n: &serde_json::Number) -> String {
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// A CEL string literal; JSON's escapes are CEL's.
pub(super) fn cel_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Kyverno's wildcard (`*` any run, `?` one character) as an anchored regular expression;
/// `(?s)` lets the wildcards match line breaks too, as Kyverno's do.
pub(super) fn wildcard_regex(pattern: &str, dot_all: bool) -> String {
    let mut regex = String::from(if dot_all { "(?s)^" } else { "^" });
    for c in pattern.chars() {
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '\\' | '.' | '+' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&' | '~' => {
                regex.push('\\');
                regex.push(c);
            }
            c => regex.push(c),
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
pub(super) fn translate_one(item: &Value) -> Result<String, String> {
    one(item).map(|(cel, _)| cel).map_err(|(_, why)| why)
}
