//! A small YAML document model that keeps source positions, built from yaml-rust2's event
//! parser, so policy errors can point at the line and column of the offending key or value.
//! serde_yaml-style deserialization would lose positions, and policy authors need them.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this is refused: policies are shallow, and the limit keeps a hostile or
/// broken file from exhausting the stack of the recursive builder and compiler.
const MAX_DEPTH: usize = 64;

/// A 1-based line and column in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

/// A YAML node and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `plain` is false for quoted and block scalars: `"80"` is a string, `80` a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique (duplicates are a parse error).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a scalar in policy files.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub pos: Pos,
}

/// A number written in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Number {
    pub value: f64,
    /// Written without a fraction or exponent.
    pub integer: bool,
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// An unquoted scalar's text (identifiers, keywords, numbers, `$references`).
    pub fn plain(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, plain: true } => Some(text),
            _ => None,
        }
    }

    /// True for `~`, `null` and an empty value (`key:` with nothing after it).
    pub fn is_null(&self) -> bool {
        matches!(self.plain(), Some("" | "~" | "null" | "Null" | "NULL"))
    }

    /// An unquoted finite number.
    pub fn number(&self) -> Option<Number> {
        let text = self.plain()?;
        if let Ok(i) = text.parse::<i64>() {
            return Some(Number {
                value: i as f64,
                integer: true,
            });
        }
        // Rust also parses `inf`/`NaN`; a threshold must be a finite number.
        let value = text.parse::<f64>().ok().filter(|v| v.is_finite())?;
        Some(Number {
            value,
            integer: false,
        })
    }

    /// An unquoted `true` / `false` (YAML 1.2 core spellings).
    pub fn boolean(&self) -> Option<bool> {
        match self.plain()? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    /// A short description of the node's shape for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "an empty value",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax problem (or a construct policy files do not allow) at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl SyntaxError {
    fn at(mark: &Marker, message: impl Into<String>) -> Self {
        SyntaxError {
            pos: Pos::from_marker(mark),
            message: message.into(),
        }
    }
}

/// Parses one YAML document; `Ok(None)` for a file with no document (empty or only comments).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
    };
    let (ev, mark) = b.next()?;
    if ev != Event::StreamStart {
        return Err(SyntaxError::at(
            &mark,
            "expected the start of a YAML stream",
        ));
    }
    let (ev, mark) = b.next()?;
    match ev {
        Event::StreamEnd => return Ok(None),
        Event::DocumentStart => {}
        _ => return Err(SyntaxError::at(&mark, "expected a YAML document")),
    }
    let (ev, mark) = b.next()?;
    let root = b.node(ev, mark, 0)?;
    let (ev, mark) = b.next()?;
    if ev != Event::DocumentEnd {
        return Err(SyntaxError::at(&mark, "expected the end of the document"));
    }
    let (ev, mark) = b.next()?;
    if ev != Event::StreamEnd {
        return Err(SyntaxError::at(
            &mark,
            "a policy file holds one YAML document; remove the second `---`",
        ));
    }
    Ok(Some(root))
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), SyntaxError> {
        self.parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from_marker(e.marker()),
            message: format!("YAML syntax: {}", e.info()),
        })
    }

    fn node(&mut self, ev: Event, mark: Marker, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::at(
                &mark,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let pos = Pos::from_marker(&mark);
        let value = match ev {
            Event::Scalar(text, style, _anchor, tag) => Value::Scalar {
                text,
                // A tag such as `!!str 80` asks for a string, like quotes do.
                plain: style == TScalarStyle::Plain && tag.is_none(),
            },
            Event::SequenceStart(..) => self.sequence(depth)?,
            Event::MappingStart(..) => self.mapping(depth)?,
            Event::Alias(_) => {
                return Err(SyntaxError::at(
                    &mark,
                    "YAML aliases (`*name`) are not supported in policy files; use `settings` and `$name` to share values",
                ))
            }
            _ => return Err(SyntaxError::at(&mark, "unexpected YAML event")),
        };
        Ok(Node { pos, value })
    }

    fn sequence(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        let mut items = Vec::new();
        loop {
            let (ev, mark) = self.next()?;
            if ev == Event::SequenceEnd {
                return Ok(Value::Seq(items));
            }
            items.push(self.node(ev, mark, depth + 1)?);
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        loop {
            let (ev, mark) = self.next()?;
            let name = match ev {
                Event::MappingEnd => return Ok(Value::Map(entries)),
                Event::Scalar(text, ..) => text,
                _ => {
                    return Err(SyntaxError::at(
                        &mark,
                        "mapping keys must be plain names, not lists or mappings",
                    ))
                }
            };
            let key = Key {
                name,
                pos: Pos::from_marker(&mark),
            };
            // YAML forbids duplicate keys but yaml-rust2 keeps the last one silently; a
            // duplicated `when` or `route` would change a rule without anyone noticing.
            if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == key.name) {
                return Err(SyntaxError::at(
                    &mark,
                    format!(
                        "duplicate key `{}` (first at line {})",
                        key.name, first.pos.line
                    ),
                ));
            }
            let (ev, mark) = self.next()?;
            let value = self.node(ev, mark, depth + 1)?;
            entries.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            _ => panic!("expected a mapping"),
        }
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let root = parse("a: 1\nrules:\n  - id: x\n    when: {risk_score: 80}\n")
            .expect("parses")
            .expect("document");
        let entries = map(&root);
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(rules) = &entries[1].1.value else {
            panic!("rules is a list")
        };
        let rule = map(&rules[0]);
        assert_eq!(rule[0].0.pos, Pos { line: 3, col: 5 });
        assert_eq!(rule[0].1.pos, Pos { line: 3, col: 9 });
        let when = map(&rule[1].1);
        assert_eq!(when[0].1.pos, Pos { line: 4, col: 24 });
    }

    #[test]
    fn quoted_scalars_are_not_numbers() {
        let root = parse("a: \"80\"\nb: 80\nc: 0.72\nd: .inf\n")
            .expect("parses")
            .expect("document");
        let entries = map(&root);
        assert_eq!(entries[0].1.number(), None);
        assert_eq!(
            entries[1].1.number(),
            Some(Number {
                value: 80.0,
                integer: true
            })
        );
        assert_eq!(entries[2].1.number().map(|n| n.value), Some(0.72));
        assert_eq!(entries[3].1.number(), None);
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("first at line 1"), "{}", err.message);
    }

    #[test]
    fn aliases_and_syntax_errors_are_errors_not_panics() {
        let err = parse("a: &x 1\nb: *x\n").expect_err("alias");
        assert_eq!(err.pos.line, 2);
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(err.message.starts_with("YAML syntax"), "{}", err.message);
        assert!(parse("").expect("empty is fine").is_none());
        assert!(parse("# only a comment\n").expect("fine").is_none());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let err = parse(&text).expect_err("too deep");
        assert!(err.message.contains("nesting"), "{}", err.message);
    }
}
