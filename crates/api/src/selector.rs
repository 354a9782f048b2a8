//! Label and field selectors, parsed and matched exactly as Kubernetes does.
//!
//! Ported from k8s.io/apimachinery `pkg/labels/selector.go` (the
//! `labelSelector` query grammar and `metav1.LabelSelector` conversion) and
//! `pkg/fields/selector.go` (the `fieldSelector` grammar). The API server
//! filters list and watch results with these, and controllers turn
//! `spec.selector` objects into [`LabelSelector`]s. Error texts follow
//! upstream because clients show them verbatim; label keys and values are
//! checked with [`crate::validation`].

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::validation::{go_quote, is_qualified_name, is_valid_label_value};

/// Why a selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement in a label selector string is malformed or invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label selector string is malformed between requirements.
    #[error("{0}")]
    Syntax(String),
    /// A `metav1.LabelSelector` holds an invalid requirement (upstream's
    /// aggregated field errors, e.g. `key: Invalid value: ...`).
    #[error("{0}")]
    InvalidRequirement(String),
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid pod selector operator", go_quote(.0))]
    UnknownOperator(String),
    /// A `metav1.LabelSelector` whose JSON does not have the API's shape.
    #[error("invalid label selector: {0}")]
    MalformedLabelSelector(String),
    /// A field selector term without `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm { selector: String, term: String },
    /// A backslash in a field selector value not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscapeSequence(String),
    /// An unescaped `=` in a field selector value; upstream prints the code point.
    #[error("invalid field selector: unescaped character in value: {0}")]
    UnescapedCharacter(u32),
}

/// A label selector operator (upstream's `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's operator string (`=`, `in`, `exists`, `gt`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::In => "in",
            Self::NotIn => "notin",
            Self::Exists => "exists",
            Self::DoesNotExist => "!",
            Self::GreaterThan => "gt",
            Self::LessThan => "lt",
        }
    }
}

/// One condition on one label key; a selector is the AND of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Upstream's `NewRequirement`: the key must be a qualified name, each
    /// value a label value, and the number of values must fit the operator
    /// (`gt`/`lt` take one integer).
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let requirement = Self {
            key: key.into(),
            operator,
            values,
        };
        match requirement.errors() {
            None => Ok(requirement),
            Some(message) => Err(SelectorError::InvalidRequirement(message)),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The aggregated field errors of `NewRequirement`, with its nil path.
    fn errors(&self) -> Option<String> {
        let mut errs = Vec::new();
        errs.extend(label_key_error(&self.key, "key"));
        let count = self.values.len();
        let list = || render_string_list(&self.values);
        match self.operator {
            Operator::In | Operator::NotIn if count == 0 => errs.push(invalid_text(
                "values",
                &list(),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if count != 1 => errs
                .push(invalid_text(
                    "values",
                    &list(),
                    "exact-match compatibility requires one single value",
                )),
            Operator::Exists | Operator::DoesNotExist if count != 0 => errs.push(invalid_text(
                "values",
                &list(),
                "values set must be empty for exists and does not exist",
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if count != 1 {
                    errs.push(invalid_text(
                        "values",
                        &list(),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, value) in self.values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errs.push(invalid_text(
                            &format!("values[{i}]"),
                            &go_quote(value),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, value) in self.values.iter().enumerate() {
            let msgs = is_valid_label_value(value);
            if !msgs.is_empty() {
                errs.push(invalid_text(
                    &format!("values[{i}][{}]", self.key),
                    &go_quote(value),
                    &msgs.join("; "),
                ));
            }
        }
        aggregate(errs)
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfy this requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = label_value(labels, &self.key);
        let has_value = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| has_value(&v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !has_value(&v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = value.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (operator, parenthesised) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(operator)?;
        if parenthesised {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if parenthesised {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label's value; labels are strings, anything else but null is compared
/// by its JSON text.
fn label_value<'a>(labels: &'a Map<String, Value>, key: &str) -> Option<Cow<'a, str>> {
    match labels.get(key)? {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Null => None,
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// `validateLabelKey`: `<path>: Invalid value: "<key>": <msgs>`.
fn label_key_error(key: &str, path: &str) -> Option<String> {
    let msgs = is_qualified_name(key);
    (!msgs.is_empty()).then(|| invalid_text(path, &go_quote(key), &msgs.join("; ")))
}

fn invalid_text(path: &str, rendered_value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {rendered_value}: {detail}")
}

/// A `[]string` bad value as Go's `json.Marshal` prints it; empty value
/// lists reach `NewRequirement` as nil slices, which print as `null`.
fn render_string_list(values: &[String]) -> String {
    if values.is_empty() {
        return "null".to_string();
    }
    let items: Vec<String> = values.iter().map(|v| go_json_string(v)).collect();
    format!("[{}]", items.join(","))
}

/// Go's JSON string encoding, which also escapes `<`, `>`, `&`, U+2028/9.
fn go_json_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ErrorList.ToAggregate().Error()`: duplicates dropped, several in brackets.
fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut unique: Vec<String> = Vec::with_capacity(errs.len());
    for e in errs {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    match unique.len() {
        0 => None,
        1 => unique.pop(),
        _ => Some(format!("[{}]", unique.join(", "))),
    }
}

/// A label selector: the AND of its requirements, sorted by key.
///
/// The empty selector matches everything; [`LabelSelector::nothing`] (what a
/// null `metav1.LabelSelector` means) matches no object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    matches_nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object.
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            matches_nothing: true,
        }
    }

    /// The AND of `requirements`.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            matches_nothing: false,
        }
    }

    /// Upstream's `SelectorFromSet`: `key=value` for each entry of a plain
    /// map such as a Service's `spec.selector`, without validation.
    pub fn from_set(set: &Map<String, Value>) -> Self {
        let requirements = set
            .keys()
            .map(|key| Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![label_value(set, key).unwrap_or_default().into_owned()],
            })
            .collect();
        Self::from_requirements(requirements)
    }

    /// Parse the `labelSelector` query syntax:
    /// `a=b,c!=d,e in (x,y),f notin (z),g,!h`, plus `==`, `a>1` and `a<1`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut lexer = Lexer { s, pos: 0 };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            items.push(item);
            if item.0 == Token::EndOfString {
                break;
            }
        }
        let mut parser = Parser { items, position: 0 };
        Ok(Self::from_requirements(parser.parse()?))
    }

    /// Upstream's `LabelSelectorAsSelector` on a `metav1.LabelSelector` JSON
    /// object (`matchLabels`, `matchExpressions`). Null matches nothing; an
    /// empty object matches everything.
    pub fn from_label_selector_json(v: &Value) -> Result<Self, SelectorError> {
        let malformed = |what: &str| SelectorError::MalformedLabelSelector(what.to_string());
        let object = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(object) => object,
            _ => return Err(malformed("expected an object")),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let Value::String(value) = value else {
                        return Err(malformed("matchLabels values must be strings"));
                    };
                    requirements.push(Requirement::new(
                        key.as_str(),
                        Operator::Equals,
                        vec![value.clone()],
                    )?);
                }
            }
            Some(_) => return Err(malformed("matchLabels must be an object")),
        }
        let expressions = match object.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(expressions)) => expressions.as_slice(),
            Some(_) => return Err(malformed("matchExpressions must be a list")),
        };
        for expression in expressions {
            let Value::Object(expression) = expression else {
                return Err(malformed("matchExpressions entries must be objects"));
            };
            let text = |field: &str| match expression.get(field) {
                None | Some(Value::Null) => Ok(""),
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(_) => Err(malformed(&format!(
                    "matchExpressions {field} must be a string"
                ))),
            };
            let operator = match text("operator")? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(malformed("matchExpressions values must be strings")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(malformed("matchExpressions values must be a list")),
            };
            requirements.push(Requirement::new(text("key")?, operator, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.matches_nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything (matches everything).
    pub fn is_empty(&self) -> bool {
        !self.matches_nothing && self.requirements.is_empty()
    }

    /// The single value `label` must have, if the selector demands one
    /// (the first requirement on `label` is `=`, `==` or `in` one value).
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == label)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's canonical form: requirements by key, joined with ",";
    /// `nothing()` prints as "".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Upstream's byte lexer, quirks included: a NUL byte reads as end of input
/// (ending the selector at the start of a token, splitting it inside one).
/// Token boundaries are ASCII bytes, so literals are valid `&str` slices.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn read(&mut self) -> u8 {
        match self.s.as_bytes().get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn lex(&mut self) -> (Token, &'a str) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, "");
        }
        self.unread();
        if is_special_symbol(ch) {
            self.scan_special_symbol()
        } else {
            self.scan_id_or_keyword()
        }
    }

    fn scan_id_or_keyword(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let end = loop {
            let before = self.pos;
            let ch = self.read();
            if ch == 0 {
                // Upstream consumes a NUL byte here without unreading it.
                break before;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break self.pos;
            }
        };
        let literal = &self.s[start..end];
        (keyword(literal).unwrap_or(Token::Identifier), literal)
    }

    fn scan_special_symbol(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let mut last: Option<(Token, usize)> = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            if let Some(token) = keyword(&self.s[start..self.pos]) {
                last = Some((token, self.pos));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        match last {
            Some((token, end)) => (token, &self.s[start..end]),
            None => (Token::Error, ""),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    /// `in` and `notin` read as identifiers (`x in (in)`).
    Values,
}

struct Parser<'a> {
    items: Vec<(Token, &'a str)>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        let (token, literal) = self
            .items
            .get(self.position)
            .copied()
            .unwrap_or((Token::EndOfString, ""));
        match token {
            Token::In | Token::NotIn if context == Context::Values => (Token::Identifier, literal),
            _ => (token, literal),
        }
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{literal}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match inferred {
            Some(operator) => (operator, BTreeSet::new()),
            None => {
                let operator = self.parse_operator()?;
                let values = match operator {
                    Operator::In | Operator::NotIn => self.parse_values()?,
                    _ => self.parse_exact_value()?,
                };
                (operator, values)
            }
        };
        let requirement = Requirement {
            key,
            operator,
            values: values.into_iter().map(str::to_string).collect(),
        };
        match requirement.errors() {
            None => Ok(requirement),
            Some(message) => Err(message),
        }
    }

    /// A key, optionally after `!`; `Exists`/`DoesNotExist` when nothing follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        // The parser's field path is nil, which Go prints as "<nil>".
        if let Some(error) = label_key_error(literal, "<nil>") {
            return Err(error);
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal.to_string(), operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{literal}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// `(a,b,...)`; empty entries are the empty value, `()` is `{""}`.
    fn parse_values(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([""]))
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal);
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert("");
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.insert("");
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.insert("");
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(BTreeSet::from([""]));
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(BTreeSet::from([literal]))
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

/// A field selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldRequirement {
    /// Field path such as `metadata.name` or `spec.nodeName`.
    pub field: String,
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(
            f,
            "{}{operator}{}",
            self.field,
            escape_field_value(&self.value)
        )
    }
}

/// A field selector: the AND of its terms. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn from_requirements(requirements: Vec<FieldRequirement>) -> Self {
        Self { requirements }
    }

    /// Parse the `fieldSelector` query syntax: `a=b,c==d,e!=f`, where `\`,
    /// `,` and `=` in values are escaped with a backslash. Terms are kept in
    /// upstream's order (sorted by their text); a term with an empty field
    /// and an empty value is dropped, as upstream does.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(s);
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(term) else {
                return Err(SelectorError::FieldTerm {
                    selector: s.to_string(),
                    term: term.to_string(),
                });
            };
            let value = unescape_field_value(raw_value)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        Ok(Self { requirements })
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether an object matches; `get(field)` returns the object's value
    /// for a field path, and a missing field compares as "".
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => actual == r.value,
                FieldOperator::NotEquals => actual != r.value,
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, if some term demands one (upstream uses
    /// this to turn `metadata.name=x` into a single-object lookup).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.operator == FieldOperator::Equals && r.field == field)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Upstream's `EscapeValue`: backslash-escape `\`, `,` and `=`.
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream's `UnescapeValue`.
fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscapeSequence(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(u32::from(c))),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscapeSequence("\\".to_string()));
    }
    Ok(out)
}

/// Split on commas not escaped by a backslash (escapes stay in the terms).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Split a term at the first operator; the field part has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::Equals),
        ("=", FieldOperator::Equals),
    ];
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        OPERATORS.iter().find_map(|&(text, operator)| {
            rest.strip_prefix(text)
                .map(|value| (&term[..i], operator, value))
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;

    const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn parse_err(s: &str) -> String {
        LabelSelector::parse(s).unwrap_err().to_string()
    }

    fn roundtrip(s: &str) -> String {
        LabelSelector::parse(s).unwrap().to_string()
    }

    #[test]
    fn parses_every_operator() {
        let sel =
            LabelSelector::parse("a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>1,l<2").unwrap();
        let ops: Vec<(&str, Operator, Vec<&str>)> = sel
            .requirements()
            .iter()
            .map(|r| {
                (
                    r.key(),
                    r.operator(),
                    r.values().iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                ("a", Operator::Equals, vec!["b"]),
                ("c", Operator::NotEquals, vec!["d"]),
                ("e", Operator::In, vec!["x", "y"]),
                ("f", Operator::NotIn, vec!["z"]),
                ("g", Operator::Exists, vec![]),
                ("h", Operator::DoesNotExist, vec![]),
                ("i", Operator::DoubleEquals, vec!["j"]),
                ("k", Operator::GreaterThan, vec!["1"]),
                ("l", Operator::LessThan, vec!["2"]),
            ]
        );
        assert_eq!(
            sel.to_string(),
            "a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j,k>1,l<2"
        );
    }

    #[test]
    fn canonical_form_and_whitespace() {
        assert_eq!(roundtrip(""), "");
        assert_eq!(roundtrip("  "), "");
        assert_eq!(roundtrip("z=c,x=a,y=b"), "x=a,y=b,z=c");
        assert_eq!(roundtrip(" x = a , y  in ( b , a ) "), "x=a,y in (a,b)");
        assert_eq!(roundtrip("x=\ta\n"), "x=a");
        assert_eq!(roundtrip("x="), "x=");
        assert_eq!(roundtrip("x= ,z= "), "x=,z=");
        assert_eq!(roundtrip("x in ()"), "x in ()");
        assert_eq!(roundtrip("x in (,)"), "x in ()");
        assert_eq!(roundtrip("x in (a,,b)"), "x in (,a,b)");
        assert_eq!(roundtrip("x in (a,)"), "x in (,a)");
        assert_eq!(roundtrip("x in (a,a)"), "x in (a)");
        assert_eq!(roundtrip("x notin (in,notin)"), "x notin (in,notin)");
        assert_eq!(roundtrip("in in (in)"), "in in (in)");
        assert_eq!(roundtrip("!x"), "!x");
        assert_eq!(roundtrip("example.com/app=web"), "example.com/app=web");
        // A NUL byte ends the input at a token start and splits one inside.
        assert_eq!(roundtrip("x=a \0,garbage("), "x=a");
        assert_eq!(
            parse_err("x=a\0b"),
            "found 'b', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn syntax_errors_match_upstream() {
        assert_eq!(
            parse_err("x==a==b"),
            "found '==', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_err("!x=a"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_err(",x"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(parse_err("x,"), "found '', expected: identifier after ','");
        assert_eq!(
            parse_err("x,=a"),
            "found '=', expected: identifier after ','"
        );
        assert_eq!(
            parse_err("x y"),
            "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_err("x in a"),
            "unable to parse requirement: found 'a' expected: '('"
        );
        assert_eq!(
            parse_err("x in (a"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_err("x in (a b)"),
            "unable to parse requirement: found 'b', expected: ',' or ')'"
        );
        assert_eq!(
            parse_err("x in (("),
            "unable to parse requirement: found '(', expected: ',', ')' or identifier"
        );
        assert_eq!(
            parse_err("x in (a,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier"
        );
        assert_eq!(
            parse_err("x=("),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            parse_err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            parse_err("!!x"),
            "unable to parse requirement: found '!', expected: identifier"
        );
    }

    #[test]
    fn validation_errors_match_upstream() {
        assert_eq!(
            parse_err("x=a||y=b"),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {LABEL_VALUE_MSG}"
            )
        );
        assert_eq!(
            parse_err("-x=a"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-x\": {NAME_PART_MSG}")
        );
        assert_eq!(
            parse_err("x<a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            parse_err("x>"),
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            parse_err(&format!("x={}", "a".repeat(64))),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"{}\": must be no more than 63 characters",
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn matching_each_operator() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5", "bad": "x"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("missing=", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (a)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (a)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("n>4", true),
            ("n>5", false),
            ("n<6", true),
            ("n<5", false),
            ("bad>1", false),
            ("missing<1", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let sel = LabelSelector::parse(selector).unwrap();
            assert_eq!(sel.matches(&l), expected, "{selector}");
        }
        assert!(LabelSelector::everything().matches(&l));
        assert!(LabelSelector::everything().is_empty());
        assert!(!LabelSelector::nothing().matches(&l));
        assert!(!LabelSelector::nothing().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn exact_match_lookup() {
        let sel = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(sel.requires_exact_match("a"), Some("1"));
        assert_eq!(sel.requires_exact_match("b"), Some("2"));
        assert_eq!(sel.requires_exact_match("c"), None);
        assert_eq!(sel.requires_exact_match("d"), None);
        assert_eq!(sel.requires_exact_match("e"), None);
    }

    #[test]
    fn from_label_selector_json() {
        let sel = LabelSelector::from_label_selector_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists", "values": []},
            ]
        }))
        .unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,app,!canary,env notin (prod),tier in (a,b)"
        );
        let l = labels(json!({"app": "web", "tier": "a"}));
        assert!(sel.matches(&l));
        assert!(
            LabelSelector::from_label_selector_json(&json!({}))
                .unwrap()
                .is_empty()
        );
        assert!(
            LabelSelector::from_label_selector_json(&json!({"matchLabels": null}))
                .unwrap()
                .matches(&l)
        );
        let nothing = LabelSelector::from_label_selector_json(&Value::Null).unwrap();
        assert_eq!(nothing, LabelSelector::nothing());
        assert!(!nothing.matches(&l));
    }

    #[test]
    fn from_label_selector_json_errors() {
        let err = |v: Value| {
            LabelSelector::from_label_selector_json(&v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})),
            "\"Foo\" is not a valid pod selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a"}]})),
            "\"\" is not a valid pod selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["<x>"]}]})
            ),
            format!(
                "[values: Invalid value: [\"\\u003cx\\u003e\"]: values set must be empty for exists and does not exist, values[0][a]: Invalid value: \"<x>\": {LABEL_VALUE_MSG}]"
            )
        );
        assert_eq!(
            err(json!({"matchLabels": {"a b": "c"}})),
            format!("key: Invalid value: \"a b\": {NAME_PART_MSG}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": "-"}})),
            format!("values[0][a]: Invalid value: \"-\": {LABEL_VALUE_MSG}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": 1}})),
            "invalid label selector: matchLabels values must be strings"
        );
        assert_eq!(err(json!([])), "invalid label selector: expected an object");
        assert_eq!(
            err(json!({"matchExpressions": {}})),
            "invalid label selector: matchExpressions must be a list"
        );
    }

    #[test]
    fn requirement_new_checks_value_counts() {
        let err = |op, values: &[&str]| {
            Requirement::new("k", op, values.iter().map(|v| v.to_string()).collect())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(Operator::Equals, &["a", "b"]),
            "values: Invalid value: [\"a\",\"b\"]: exact-match compatibility requires one single value"
        );
        assert_eq!(
            err(Operator::GreaterThan, &[]),
            "values: Invalid value: null: for 'Gt', 'Lt' operators, exactly one value is required"
        );
        assert!(Requirement::new("k", Operator::LessThan, vec!["10".into()]).is_ok());
    }

    #[test]
    fn from_set_builds_equality_selector() {
        let set = labels(json!({"b": "2", "a": "1"}));
        let sel = LabelSelector::from_set(&set);
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches(&set));
        assert!(LabelSelector::from_set(&Map::new()).is_empty());
    }

    #[test]
    fn field_selector_parsing() {
        let sel = FieldSelector::parse("metadata.name=web,spec.nodeName==n1,status.phase!=Failed")
            .unwrap();
        assert_eq!(
            sel.requirements(),
            &[
                FieldRequirement {
                    field: "metadata.name".into(),
                    operator: FieldOperator::Equals,
                    value: "web".into()
                },
                FieldRequirement {
                    field: "spec.nodeName".into(),
                    operator: FieldOperator::Equals,
                    value: "n1".into()
                },
                FieldRequirement {
                    field: "status.phase".into(),
                    operator: FieldOperator::NotEquals,
                    value: "Failed".into()
                },
            ]
        );
        assert_eq!(
            sel.to_string(),
            "metadata.name=web,spec.nodeName=n1,status.phase!=Failed"
        );
        assert_eq!(sel.requires_exact_match("metadata.name"), Some("web"));
        assert_eq!(sel.requires_exact_match("status.phase"), None);
        // Terms come out sorted by their text, as upstream sorts them.
        assert_eq!(
            FieldSelector::parse("b=1,a=2").unwrap().to_string(),
            "a=2,b=1"
        );
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        assert!(FieldSelector::parse("=").unwrap().is_empty());
        assert_eq!(
            FieldSelector::parse("=x").unwrap().requirements()[0].field,
            ""
        );
        assert_eq!(
            FieldSelector::parse("a=").unwrap().requirements()[0].value,
            ""
        );
        assert_eq!(
            FieldSelector::parse("a=!b").unwrap().requirements()[0].value,
            "!b"
        );
    }

    #[test]
    fn field_selector_escaping() {
        let sel = FieldSelector::parse(r"a=x\,y\=z\\w").unwrap();
        assert_eq!(sel.requirements()[0].value, r"x,y=z\w");
        assert_eq!(sel.to_string(), r"a=x\,y\=z\\w");
        assert_eq!(escape_field_value(r"\,=!"), r"\\\,\=!");
        let round = FieldSelector::parse(&sel.to_string()).unwrap();
        assert_eq!(round, sel);
    }

    #[test]
    fn field_selector_errors_match_upstream() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(err("a"), "invalid selector: 'a'; can't understand 'a'");
        assert_eq!(
            err("x=1,b"),
            "invalid selector: 'x=1,b'; can't understand 'b'"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err(r"a=\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn field_selector_matching() {
        let fields: HashMap<&str, &str> = [("metadata.name", "web"), ("spec.nodeName", "")].into();
        let get = |f: &str| fields.get(f).map(|v| v.to_string());
        let check = |s: &str| FieldSelector::parse(s).unwrap().matches(get);
        assert!(check("metadata.name=web"));
        assert!(!check("metadata.name!=web"));
        assert!(check("metadata.name=web,spec.nodeName="));
        assert!(check("missing="));
        assert!(!check("missing=x"));
        assert!(check("missing!=x"));
        assert!(check(""));
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("in".to_string()),
            Just("notin".to_string()),
            "[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}/[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?",
            "[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?",
        ]
    }

    fn value_strategy() -> BoxedStrategy<String> {
        prop_oneof![
            Just(String::new()),
            Just("in".to_string()),
            "[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?",
        ]
        .boxed()
    }

    fn operator_strategy() -> impl Strategy<Value = Operator> {
        prop_oneof![
            Just(Operator::Equals),
            Just(Operator::DoubleEquals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            Just(Operator::GreaterThan),
            Just(Operator::LessThan),
        ]
    }

    /// Values as the parser produces them: sorted, without duplicates.
    fn requirement_strategy(
        key: impl Strategy<Value = String>,
        value: impl Strategy<Value = String> + Clone,
    ) -> impl Strategy<Value = (String, Operator, Vec<String>)> {
        (
            key,
            operator_strategy(),
            prop::collection::btree_set(value.clone(), 1..4),
            value,
            "[0-9]{1,6}",
        )
            .prop_map(|(key, op, set, single, number)| {
                let values = match op {
                    Operator::In | Operator::NotIn => set.into_iter().collect(),
                    Operator::Exists | Operator::DoesNotExist => Vec::new(),
                    Operator::GreaterThan | Operator::LessThan => vec![number],
                    _ => vec![single],
                };
                (key, op, values)
            })
    }

    fn build(reqs: &[(String, Operator, Vec<String>)]) -> LabelSelector {
        LabelSelector::from_requirements(
            reqs.iter()
                .map(|(k, op, vals)| Requirement::new(k.as_str(), *op, vals.clone()).unwrap())
                .collect(),
        )
    }

    /// The semantics spelled out directly on a plain map.
    fn reference_matches(
        reqs: &[(String, Operator, Vec<String>)],
        labels: &HashMap<String, String>,
    ) -> bool {
        reqs.iter().all(|(key, op, values)| {
            let actual = labels.get(key);
            let listed = actual.is_some_and(|a| values.contains(a));
            let number = |s: &str| s.parse::<i64>().ok();
            match op {
                Operator::Equals | Operator::DoubleEquals | Operator::In => listed,
                Operator::NotEquals | Operator::NotIn => !listed,
                Operator::Exists => actual.is_some(),
                Operator::DoesNotExist => actual.is_none(),
                Operator::GreaterThan => matches!(
                    (actual.and_then(|a| number(a)), number(&values[0])),
                    (Some(a), Some(b)) if a > b
                ),
                Operator::LessThan => matches!(
                    (actual.and_then(|a| number(a)), number(&values[0])),
                    (Some(a), Some(b)) if a < b
                ),
            }
        })
    }

    const SMALL_KEYS: [&str; 4] = ["app", "tier", "example.com/role", "in"];
    const SMALL_VALUES: [&str; 7] = ["", "a", "web", "1", "10", "-3", "x1"];

    fn small_key() -> impl Strategy<Value = String> {
        prop::sample::select(&SMALL_KEYS[..]).prop_map(str::to_string)
    }

    fn small_value() -> BoxedStrategy<String> {
        // "-3" is not a label value, so requirements use the others.
        prop::sample::select(&["", "a", "web", "1", "10", "x1"][..])
            .prop_map(str::to_string)
            .boxed()
    }

    proptest! {
        #[test]
        fn label_parse_display_roundtrip(
            reqs in prop::collection::vec(requirement_strategy(key_strategy(), value_strategy()), 0..6)
        ) {
            let selector = build(&reqs);
            let text = selector.to_string();
            let parsed = LabelSelector::parse(&text).unwrap();
            prop_assert_eq!(&parsed, &selector, "{}", text);
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn label_matches_agrees_with_reference(
            reqs in prop::collection::vec(requirement_strategy(small_key(), small_value()), 0..4),
            labels in prop::collection::hash_map(
                small_key(),
                prop::sample::select(&SMALL_VALUES[..]).prop_map(str::to_string),
                0..4,
            ),
        ) {
            let object_labels: Map<String, Value> = labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let expected = reference_matches(&reqs, &labels);
            let selector = build(&reqs);
            prop_assert_eq!(selector.matches(&object_labels), expected);
            let reparsed = LabelSelector::parse(&selector.to_string()).unwrap();
            prop_assert_eq!(reparsed.matches(&object_labels), expected);
        }

        #[test]
        fn label_parser_never_panics(s in ".{0,64}") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn label_parser_never_panics_on_selector_like_text(
            s in "[a-z0-9!=(),<> \t\u{0}é/._-]{0,40}|(in|notin|x|=|==|!=|!|\\(|\\)|,| |<|>|\u{0})*"
        ) {
            if let Ok(selector) = LabelSelector::parse(&s) {
                // Whatever parses prints to text that parses to the same thing.
                prop_assert_eq!(LabelSelector::parse(&selector.to_string()).unwrap(), selector);
            }
        }

        #[test]
        fn label_selector_json_never_panics(
            key in ".{0,8}",
            operator in prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist", "Gt", ""][..]),
            values in prop::collection::vec(".{0,6}", 0..3),
            label in ".{0,8}",
        ) {
            let v = json!({
                "matchLabels": {key.clone(): label},
                "matchExpressions": [{"key": key, "operator": operator, "values": values}],
            });
            if let Ok(selector) = LabelSelector::from_label_selector_json(&v) {
                let _ = selector.matches(&Map::new());
                let _ = selector.to_string();
            }
        }

        #[test]
        fn field_parse_display_roundtrip(
            reqs in prop::collection::vec(
                ("[a-zA-Z][a-zA-Z0-9._-]{0,12}", any::<bool>(), ".{0,12}"),
                0..5,
            )
        ) {
            let requirements: Vec<FieldRequirement> = reqs
                .into_iter()
                .map(|(field, not, value)| FieldRequirement {
                    field,
                    operator: if not { FieldOperator::NotEquals } else { FieldOperator::Equals },
                    value,
                })
                .collect();
            let selector = FieldSelector::from_requirements(requirements.clone());
            let parsed = FieldSelector::parse(&selector.to_string()).unwrap();
            let mut got = parsed.requirements().to_vec();
            let mut want = requirements;
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn field_parser_never_panics(s in ".{0,64}|[a=!,\\\\é]{0,24}") {
            if let Ok(selector) = FieldSelector::parse(&s) {
                let _ = selector.matches(|_| None);
                let _ = selector.to_string();
            }
        }

        #[test]
        fn field_matches_agrees_with_reference(
            reqs in prop::collection::vec(
                (prop::sample::select(&["a", "b", "c"][..]), any::<bool>(), prop::sample::select(&["", "x", "y"][..])),
                0..4,
            ),
            object in prop::collection::hash_map(
                prop::sample::select(&["a", "b"][..]),
                prop::sample::select(&["", "x", "y"][..]),
                0..2,
            ),
        ) {
            let text: Vec<String> = reqs
                .iter()
                .map(|(f, not, v)| format!("{f}{}{v}", if *not { "!=" } else { "=" }))
                .collect();
            let selector = FieldSelector::parse(&text.join(",")).unwrap();
            let expected = reqs.iter().all(|(f, not, v)| {
                let actual = object.get(f).copied().unwrap_or("");
                (actual == *v) != *not
            });
            prop_assert_eq!(selector.matches(|f| object.get(f).map(|v| v.to_string())), expected);
        }
    }
}
