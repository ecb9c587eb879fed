//! Regular expressions of a policy, read as cosign reads them: Go's RE2 syntax, whose Perl
//! classes are ASCII.
//!
//! The `regex` crate's `\d`, `\s`, `\w` and `\b` are Unicode-aware (`\d` matches `٣`, `\s`
//! matches a vertical tab); Go's are `[0-9]`, `[\t\n\f\r ]`, `[0-9A-Za-z_]` and an ASCII word
//! boundary. A policy written for cosign must not match more here, so those classes are
//! rewritten to their RE2 sets before compiling. Everything else stays Unicode, as in Go: `.`
//! matches a character, `(?i)` folds case, literal text may be any UTF-8.

use std::fmt;

use regex_syntax::ast::{self, AssertionKind, Ast, ClassPerl, ClassPerlKind, ClassSetItem};

/// Compiled patterns larger than this are refused; every policy regexp so far is far smaller.
const SIZE_LIMIT: usize = 1 << 20;

/// A regular expression with RE2's ASCII classes, and the text it was written as.
#[derive(Clone, Debug)]
pub struct Re2Regex {
    source: String,
    regex: regex::Regex,
}

/// Why a pattern is refused: its syntax, a construct RE2 does not have, or its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError(String);

// === impl Re2Regex ===

impl Re2Regex {
    pub fn new(source: &str) -> Result<Self, RegexError> {
        let translated = translate(source)?;
        let regex = regex::RegexBuilder::new(&translated)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| RegexError(e.to_string()))?;
        Ok(Self {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

// === impl RegexError ===

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RegexError {}

/// `source` with each Perl class and word boundary replaced by its RE2 meaning. The parser finds
/// them, so an escaped backslash (`\\d`) or a class inside brackets (`[\d.]`) is read right.
fn translate(source: &str) -> Result<String, RegexError> {
    let parsed = ast::parse::Parser::new()
        .parse(source)
        .map_err(|e| RegexError(e.to_string()))?;
    let mut edits = ast::visit(
        &parsed,
        Classes {
            source,
            edits: Vec::new(),
        },
    )?;
    edits.sort_by_key(|(start, _, _)| *start);
    let mut out = String::with_capacity(source.len() + 16 * edits.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.push_str(&source[at..start]);
        out.push_str(replacement);
        at = end;
    }
    out.push_str(&source[at..]);
    Ok(out)
}

/// Collects `(start, end, replacement)` byte spans of the constructs to rewrite.
struct Classes<'a> {
    source: &'a str,
    edits: Vec<(usize, usize, &'static str)>,
}

impl Classes<'_> {
    fn perl(&mut self, class: &ClassPerl) {
        // Bracketed, so each reads the same inside a class (`[\d.]` → `[[0-9].]`) as outside.
        let set = match (class.kind.clone(), class.negated) {
            (ClassPerlKind::Digit, false) => "[0-9]",
            (ClassPerlKind::Digit, true) => "[^0-9]",
            (ClassPerlKind::Space, false) => r"[\t\n\f\r ]",
            (ClassPerlKind::Space, true) => r"[^\t\n\f\r ]",
            (ClassPerlKind::Word, false) => "[0-9A-Za-z_]",
            (ClassPerlKind::Word, true) => "[^0-9A-Za-z_]",
        };
        self.edits.push((class.span.start.offset, class.span.end.offset, set));
    }
}

impl ast::Visitor for Classes<'_> {
    type Output = Vec<(usize, usize, &'static str)>;
    type Err = RegexError;

    fn finish(self) -> Result<Self::Output, RegexError> {
        Ok(self.edits)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), RegexError> {
        match ast {
            Ast::ClassPerl(class) => self.perl(class),
            Ast::Assertion(assertion) => {
                let (start, end) = (assertion.span.start.offset, assertion.span.end.offset);
                match assertion.kind {
                    AssertionKind::WordBoundary => self.edits.push((start, end, r"(?-u:\b)")),
                    AssertionKind::NotWordBoundary => self.edits.push((start, end, r"(?-u:\B)")),
                    AssertionKind::StartLine
                    | AssertionKind::EndLine
                    | AssertionKind::StartText
                    | AssertionKind::EndText => {}
                    // `\b{start}`, `\<` and the like are not RE2: cosign would refuse them.
                    _ => {
                        return Err(RegexError(format!(
                            "{:?} is not RE2 syntax, which cosign's regular expressions use",
                            &self.source[start..end]
                        )))
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), RegexError> {
        if let ClassSetItem::Perl(class) = item {
            self.perl(class);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(pattern: &str) -> Re2Regex {
        Re2Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
    }

    #[test]
    fn perl_classes_are_ascii_as_in_re2() {
        // Arabic-Indic three, full-width one, Devanagari four.
        for digit in ["٣", "１", "४"] {
            assert!(!re(r"^\d$").is_match(digit), "{digit}");
            assert!(re(r"^\D$").is_match(digit), "{digit}");
            assert!(!re(r"^[\d]$").is_match(digit), "{digit}");
        }
        assert!(re(r"^\d+$").is_match("0123456789"));
        // Go's \s is [\t\n\f\r ]: no vertical tab, no Unicode spaces.
        for space in ["\u{0b}", "\u{a0}", "\u{2003}", "\u{85}"] {
            assert!(!re(r"^\s$").is_match(space), "{space:?}");
            assert!(re(r"^\S$").is_match(space), "{space:?}");
        }
        for space in ["\t", "\n", "\u{0c}", "\r", " "] {
            assert!(re(r"^\s$").is_match(space), "{space:?}");
        }
        assert!(!re(r"^\w+$").is_match("café"));
        assert!(re(r"^\w+$").is_match("Build_42"));
        assert!(re(r"^[^\W]+$").is_match("abc"));
        // An ASCII word boundary: é is not a word character to RE2.
        assert!(re(r"caf\b").is_match("café"));
        assert!(!re(r"caf\B").is_match("café"));
    }

    #[test]
    fn the_rest_stays_as_go_reads_it() {
        // Escaped backslashes are literal, not a class.
        assert!(re(r"^a\\d$").is_match(r"a\d"));
        assert!(!re(r"^a\\d$").is_match("a5"));
        // Non-ASCII literal text and `.` over a multi-byte character.
        assert!(re("^https://gitlab.example/équipe/.*$").is_match("https://gitlab.example/équipe/x"));
        assert!(re("^.$").is_match("é"));
        // Case folding is Unicode in RE2 too (K is KELVIN SIGN's fold).
        assert!(re(r"(?i)^\w$").is_match("\u{212a}"));
        assert!(re(r"\pL").is_match("é"));
        assert_eq!(re(r"^\d$").as_str(), r"^\d$");
    }

    #[test]
    fn what_re2_lacks_or_cannot_parse_is_refused() {
        for bad in [r"\b{start}x", r"\<x", "(unclosed", r"\Qa.b\E"] {
            assert!(Re2Regex::new(bad).is_err(), "{bad}");
        }
    }
}
