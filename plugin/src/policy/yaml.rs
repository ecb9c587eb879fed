//! A guard put before the YAML parser, by the policy loader and by the importer alike.

/// Flow collections nested deeper than this are refused before the YAML parser sees them: its
/// time grows with the square of the depth (a 200 KB file of brackets took minutes), and no
/// policy needs more than a few levels.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The line where `[`/`{` nesting first passes [`MAX_FLOW_DEPTH`], outside quoted scalars and
/// comments; `None` when it never does.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                // A quote opens a quoted scalar only where a scalar can start; inside a plain
                // scalar (`don't`) it is just a character.
                (None, '"' | '\'') if previous.is_whitespace() || matches!(previous, '[' | '{' | ',' | ':') => {
                    quote = Some(c)
                }
                (None, '#') if previous.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(n + 1);
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                (None, _) => {}
            }
            previous = c;
        }
    }
    None
}
