//! The SCIM filter language (RFC 7644 §3.4.2.2) and the attribute paths of
//! PATCH operations (§3.5.2): a parser with typed errors, a printer whose
//! output parses back to the same tree, and an evaluator over resources.
//!
//! ```
//! use tenancy_scim::filter::Filter;
//!
//! let filter = Filter::parse(r#"userName eq "ada@example.com" and not (active eq false)"#)?;
//! assert_eq!(
//!     filter.to_string(),
//!     r#"userName eq "ada@example.com" and not (active eq false)"#
//! );
//! assert!(Filter::parse("userName zz 1").is_err());
//! # Ok::<(), tenancy_scim::filter::FilterError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

/// The longest filter or path accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// The deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a filter or path was refused (SCIM `invalidFilter`, or `invalidPath`
/// for a PATCH path). Positions are byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Nothing to parse.
    #[error("the filter is empty")]
    Empty,
    /// Longer than [`MAX_FILTER_LEN`].
    #[error("the filter is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("the filter nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Something else was found where `expected` must be.
    #[error("expected {expected} at offset {at}")]
    Expected {
        /// What the grammar needs there.
        expected: &'static str,
        /// Where.
        at: usize,
    },
    /// An operator that is not one of `eq ne co sw ew gt ge lt le pr`.
    #[error("unknown operator `{operator}` at offset {at}")]
    UnknownOperator {
        /// The word found.
        operator: String,
        /// Where.
        at: usize,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string starting at offset {at}")]
    UnterminatedString {
        /// Where it starts.
        at: usize,
    },
    /// A string literal with an invalid escape, or a malformed number.
    #[error("invalid literal at offset {at}")]
    InvalidLiteral {
        /// Where it starts.
        at: usize,
    },
    /// A value path (`emails[...]`) inside another one.
    #[error("value paths cannot nest (offset {at})")]
    NestedValuePath {
        /// Where.
        at: usize,
    },
    /// Text left over after a complete filter.
    #[error("unexpected text at offset {at}")]
    Trailing {
        /// Where it starts.
        at: usize,
    },
}

/// An attribute path: an optional schema URI, an attribute name and an
/// optional sub-attribute (`urn:…:enterprise:2.0:User:manager.value`).
/// Names compare case-insensitively, as SCIM attribute names do.
#[derive(Debug, Clone, Eq)]
pub struct AttrPath {
    /// The schema URI, when the path is qualified.
    pub uri: Option<String>,
    /// The attribute.
    pub name: String,
    /// The sub-attribute.
    pub sub: Option<String>,
}

impl PartialEq for AttrPath {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        same(&self.uri, &other.uri)
            && self.name.eq_ignore_ascii_case(&other.name)
            && same(&self.sub, &other.sub)
    }
}

impl AttrPath {
    /// A path to `name`, unqualified, without sub-attribute.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            uri: None,
            name: name.into(),
            sub: None,
        }
    }

    /// Parses a bare attribute path (as in `attributes`, `sortBy`).
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser::new(text.trim())?;
        let path = parser.attr_path()?;
        parser.end()?;
        Ok(path)
    }

    /// Whether this path names `name` (in any case), ignoring URI and sub-attribute.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains (strings).
    Co,
    /// Starts with (strings).
    Sw,
    /// Ends with (strings).
    Ew,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

impl CompareOp {
    const ALL: [(CompareOp, &'static str); 9] = [
        (CompareOp::Eq, "eq"),
        (CompareOp::Ne, "ne"),
        (CompareOp::Co, "co"),
        (CompareOp::Sw, "sw"),
        (CompareOp::Ew, "ew"),
        (CompareOp::Gt, "gt"),
        (CompareOp::Ge, "ge"),
        (CompareOp::Lt, "lt"),
        (CompareOp::Le, "le"),
    ];

    fn from_word(word: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, name)| word.eq_ignore_ascii_case(name))
            .map(|(op, _)| *op)
    }

    /// The operator's lowercase name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(op, _)| *op == self)
            .map_or("eq", |(_, name)| name)
    }
}

/// A literal a comparison compares with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CompValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number.
    Number(Number),
    /// A JSON string.
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::String(s) => write!(f, "{}", Value::String(s.clone())),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filter {
    /// `path op value`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The literal.
        value: CompValue,
    },
    /// `path pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// `path[filter]`: some value of the multi-valued `path` matches.
    ValuePath {
        /// The multi-valued attribute.
        path: AttrPath,
        /// What one of its values must match.
        filter: Box<Filter>,
    },
}

impl Filter {
    /// Parses a filter (the `filter` query parameter).
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser::new(text)?;
        let filter = parser.filter(0, false)?;
        parser.end()?;
        Ok(filter)
    }

    fn precedence(&self) -> u8 {
        match self {
            Filter::Or(..) => 1,
            Filter::And(..) => 2,
            _ => 3,
        }
    }

    /// Every attribute the filter names, as seen from the resource root
    /// (`emails[type eq "work"]` names `emails` and `emails.type`), so a
    /// service provider can refuse an attribute it does not have.
    pub fn attribute_paths(&self) -> Vec<AttrPath> {
        let mut paths = Vec::new();
        self.collect_paths(None, &mut paths);
        paths
    }

    fn collect_paths(&self, parent: Option<&AttrPath>, paths: &mut Vec<AttrPath>) {
        match self {
            Filter::Compare { path, .. } | Filter::Present(path) => {
                paths.push(qualified(parent, path));
            }
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.collect_paths(parent, paths);
                b.collect_paths(parent, paths);
            }
            Filter::Not(inner) => inner.collect_paths(parent, paths),
            Filter::ValuePath { path, filter } => {
                paths.push(path.clone());
                filter.collect_paths(Some(path), paths);
            }
        }
    }

    /// Whether `resource` matches, comparing strings as `rules` says each
    /// attribute does (case-exact or not). A comparison of mismatched types
    /// does not match.
    pub fn matches(&self, resource: &Value, rules: &dyn CaseRules) -> bool {
        self.matches_under(resource, None, rules)
    }

    fn matches_under(
        &self,
        node: &Value,
        parent: Option<&AttrPath>,
        rules: &dyn CaseRules,
    ) -> bool {
        match self {
            Filter::And(a, b) => {
                a.matches_under(node, parent, rules) && b.matches_under(node, parent, rules)
            }
            Filter::Or(a, b) => {
                a.matches_under(node, parent, rules) || b.matches_under(node, parent, rules)
            }
            Filter::Not(inner) => !inner.matches_under(node, parent, rules),
            Filter::Present(path) => values(node, path, true)
                .iter()
                .any(|v| !matches!(v, Value::Null) && !is_empty(v)),
            Filter::Compare { path, op, value } => {
                let exact = rules.case_exact(&qualified(parent, path));
                let found = values(node, path, true);
                match (op, value) {
                    // `ne null`-style tests on an absent attribute.
                    (CompareOp::Eq, CompValue::Null) => found.iter().all(|v| v.is_null()),
                    (CompareOp::Ne, CompValue::Null) => found.iter().any(|v| !v.is_null()),
                    (CompareOp::Ne, _) => !found
                        .iter()
                        .any(|v| compare(v, CompareOp::Eq, value, exact)),
                    _ => found.iter().any(|v| compare(v, *op, value, exact)),
                }
            }
            Filter::ValuePath { path, filter } => values(node, path, false)
                .into_iter()
                .any(|item| filter.matches_under(item, Some(path), rules)),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, child: &Filter, min: u8| {
            if child.precedence() < min {
                write!(f, "({child})")
            } else {
                write!(f, "{child}")
            }
        };
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) | Filter::Or(a, b) => {
                let p = self.precedence();
                operand(f, a, p)?;
                f.write_str(if p == 1 { " or " } else { " and " })?;
                operand(f, b, p + 1)
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

/// How an attribute's strings compare: the schema's `caseExact`.
pub trait CaseRules {
    /// Whether values of `path` (qualified by its parent in a value path)
    /// compare case-exactly.
    fn case_exact(&self, path: &AttrPath) -> bool;
}

/// `path` as seen from the resource root: a sub-attribute inside
/// `emails[…]` is `emails.<sub>`.
fn qualified(parent: Option<&AttrPath>, path: &AttrPath) -> AttrPath {
    match parent {
        Some(parent) => AttrPath {
            uri: parent.uri.clone(),
            name: parent.name.clone(),
            sub: Some(path.name.clone()),
        },
        None => path.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A key of `object`, matched case-insensitively.
pub(crate) fn get_ci<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The values `path` reaches in `node`, arrays flattened. With
/// `value_default`, a complex value reached without a sub-attribute stands
/// for its `value` sub-attribute (RFC 7644 §3.4.2.2).
fn values<'a>(node: &'a Value, path: &AttrPath, value_default: bool) -> Vec<&'a Value> {
    let base = match &path.uri {
        Some(uri) => match get_ci(node, uri) {
            Some(extension) => extension,
            // The core schema's URI qualifies attributes at the root.
            None => node,
        },
        None => node,
    };
    let Some(top) = get_ci(base, &path.name) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match top {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    match &path.sub {
        Some(sub) => items
            .into_iter()
            .filter_map(|item| get_ci(item, sub))
            .collect(),
        None if value_default => items
            .into_iter()
            .map(|item| {
                if item.is_object() {
                    get_ci(item, "value").unwrap_or(&Value::Null)
                } else {
                    item
                }
            })
            .collect(),
        None => items,
    }
}

fn compare(found: &Value, op: CompareOp, literal: &CompValue, exact: bool) -> bool {
    match (found, literal) {
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        (Value::Number(a), CompValue::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => ordered(a.partial_cmp(&b), op),
            _ => false,
        },
        (Value::String(a), CompValue::String(b)) => {
            if let (Some(x), Some(y)) = (datetime(a), datetime(b)) {
                return match op {
                    CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
                    _ => ordered(Some(x.cmp(&y)), op),
                };
            }
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                _ => ordered(Some(a.cmp(&b)), op),
            }
        }
        _ => false,
    }
}

fn datetime(text: &str) -> Option<time::OffsetDateTime> {
    // Only strings shaped like a timestamp are compared as instants.
    if text.len() < 20
        || text.as_bytes().get(4) != Some(&b'-')
        || text.as_bytes().get(10) != Some(&b'T')
    {
        return None;
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn ordered(ordering: Option<Ordering>, op: CompareOp) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// The target of a PATCH operation: `attrPath`, `attrPath[valFilter]`,
/// or `attrPath[valFilter].subAttr` (RFC 7644 §3.5.2, the `PATH` rule).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with its sub-attribute when no filter is given).
    pub attr: AttrPath,
    /// Which values of a multi-valued attribute.
    pub filter: Option<Filter>,
    /// The sub-attribute of the values the filter selects.
    pub sub: Option<String>,
}

impl PatchPath {
    /// Parses a PATCH `path`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser::new(text)?;
        let attr = parser.attr_path()?;
        let mut path = PatchPath {
            attr,
            filter: None,
            sub: None,
        };
        if parser.eat('[') {
            if path.attr.sub.is_some() {
                return Err(FilterError::Expected {
                    expected: "an attribute without sub-attribute before `[`",
                    at: parser.pos,
                });
            }
            path.filter = Some(parser.filter(1, true)?);
            parser.expect(']')?;
            if parser.eat('.') {
                path.sub = Some(parser.name()?);
            }
        }
        parser.end()?;
        Ok(path)
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                max: MAX_FILTER_LEN,
            });
        }
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        Ok(Self { text, pos: 0 })
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), FilterError> {
        self.skip_spaces();
        if self.eat(c) {
            Ok(())
        } else {
            Err(FilterError::Expected {
                expected: if c == ')' { "`)`" } else { "`]`" },
                at: self.pos,
            })
        }
    }

    fn end(&mut self) -> Result<(), FilterError> {
        self.skip_spaces();
        if self.pos < self.text.len() {
            return Err(FilterError::Trailing { at: self.pos });
        }
        Ok(())
    }

    /// The next word (letters, digits and `-_:.$`), without consuming it.
    fn word(&self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_:.$".contains(c)))
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// Consumes `keyword` (any case) if it is the next whole word.
    fn keyword(&mut self, keyword: &str) -> bool {
        let word = self.word();
        if word.eq_ignore_ascii_case(keyword) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// `FILTER`, with `or` binding loosest, then `and`, then `not`.
    fn filter(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.conjunction(depth, in_value_path)?;
        loop {
            let save = self.pos;
            self.skip_spaces();
            if self.pos > save && self.keyword("or") {
                self.require_space()?;
                let right = self.conjunction(depth, in_value_path)?;
                left = Filter::Or(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn conjunction(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.unary(depth, in_value_path)?;
        loop {
            let save = self.pos;
            self.skip_spaces();
            if self.pos > save && self.keyword("and") {
                self.require_space()?;
                let right = self.unary(depth, in_value_path)?;
                left = Filter::And(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn require_space(&mut self) -> Result<(), FilterError> {
        if self.peek() != Some(' ') {
            return Err(FilterError::Expected {
                expected: "a space",
                at: self.pos,
            });
        }
        self.skip_spaces();
        Ok(())
    }

    fn unary(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError::TooDeep { max: MAX_DEPTH });
        }
        self.skip_spaces();
        let save = self.pos;
        if self.keyword("not") {
            self.skip_spaces();
            if self.eat('(') {
                let inner = self.filter(depth + 1, in_value_path)?;
                self.expect(')')?;
                return Ok(Filter::Not(Box::new(inner)));
            }
            // An attribute named `not`.
            self.pos = save;
        }
        if self.eat('(') {
            let inner = self.filter(depth + 1, in_value_path)?;
            self.expect(')')?;
            return Ok(inner);
        }
        let path = self.attr_path()?;
        if self.peek() == Some('[') {
            if in_value_path {
                return Err(FilterError::NestedValuePath { at: self.pos });
            }
            if path.sub.is_some() {
                return Err(FilterError::Expected {
                    expected: "an attribute without sub-attribute before `[`",
                    at: self.pos,
                });
            }
            self.pos += 1;
            let inner = self.filter(depth + 1, true)?;
            self.expect(']')?;
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        self.require_space()?;
        let at = self.pos;
        let word = self.word();
        if word.eq_ignore_ascii_case("pr") {
            self.pos += word.len();
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::from_word(word).ok_or_else(|| {
            if word.is_empty() {
                FilterError::Expected {
                    expected: "an operator",
                    at,
                }
            } else {
                FilterError::UnknownOperator {
                    operator: word.chars().take(16).collect(),
                    at,
                }
            }
        })?;
        self.pos += word.len();
        self.require_space()?;
        let value = self.value()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn value(&mut self) -> Result<CompValue, FilterError> {
        let at = self.pos;
        if self.peek() == Some('"') {
            return self.string().map(CompValue::String);
        }
        for (word, value) in [
            ("true", CompValue::Bool(true)),
            ("false", CompValue::Bool(false)),
            ("null", CompValue::Null),
        ] {
            if self.keyword(word) {
                return Ok(value);
            }
        }
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(FilterError::Expected {
                expected: "a value (string, number, true, false or null)",
                at,
            });
        }
        let number: Number =
            serde_json::from_str(&rest[..end]).map_err(|_| FilterError::InvalidLiteral { at })?;
        self.pos += end;
        Ok(CompValue::Number(number))
    }

    fn string(&mut self) -> Result<String, FilterError> {
        let at = self.pos;
        let bytes = self.rest().as_bytes();
        let mut i = 1;
        loop {
            match bytes.get(i) {
                None => return Err(FilterError::UnterminatedString { at }),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let literal = self
            .rest()
            .get(..=i)
            .ok_or(FilterError::InvalidLiteral { at })?;
        let text: String =
            serde_json::from_str(literal).map_err(|_| FilterError::InvalidLiteral { at })?;
        self.pos += i + 1;
        Ok(text)
    }

    fn name(&mut self) -> Result<String, FilterError> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '$') {
            return Err(FilterError::Expected {
                expected: "an attribute name",
                at: self.pos,
            });
        }
        self.pos += end;
        Ok(name.to_owned())
    }

    /// `[URI ":"] ATTRNAME *1subAttr`.
    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let at = self.pos;
        let word = self.word();
        let (uri, local) = if word.len() > 4 && word[..4].eq_ignore_ascii_case("urn:") {
            match word.rfind(':') {
                Some(split) if split > 4 => (Some(word[..split].to_owned()), split + 1),
                _ => {
                    return Err(FilterError::Expected {
                        expected: "an attribute after the schema URI",
                        at,
                    });
                }
            }
        } else {
            (None, 0)
        };
        if uri
            .as_deref()
            .is_some_and(|u| u.contains(char::is_whitespace))
        {
            return Err(FilterError::Expected {
                expected: "an attribute path",
                at,
            });
        }
        self.pos += local;
        let name = self.name()?;
        let sub = if self.eat('.') {
            Some(self.name()?)
        } else {
            None
        };
        Ok(AttrPath { uri, name, sub })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    struct Insensitive;
    impl CaseRules for Insensitive {
        fn case_exact(&self, path: &AttrPath) -> bool {
            path.is("id")
        }
    }

    #[test]
    fn parses_the_rfc_examples() {
        for text in [
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#,
            "active EQ true",
        ] {
            let parsed = Filter::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                Filter::parse(&parsed.to_string()).unwrap(),
                parsed,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_malformed_filters_with_a_reason() {
        type Check = fn(&FilterError) -> bool;
        let cases: [(&str, Check); 9] = [
            ("", |e| *e == FilterError::Empty),
            ("userName", |e| matches!(e, FilterError::Expected { .. })),
            (r#"userName zz "x""#, |e| {
                matches!(e, FilterError::UnknownOperator { .. })
            }),
            (r#"userName eq "x"#, |e| {
                matches!(e, FilterError::UnterminatedString { .. })
            }),
            (r#"userName eq "x" junk"#, |e| {
                matches!(e, FilterError::Trailing { .. })
            }),
            (r#"(userName eq "x""#, |e| {
                matches!(e, FilterError::Expected { .. })
            }),
            (r#"emails[value[x eq 1]]"#, |e| {
                matches!(e, FilterError::NestedValuePath { .. })
            }),
            ("age eq 1.2.3", |e| {
                matches!(e, FilterError::InvalidLiteral { .. })
            }),
            (r#"userName eq "\q""#, |e| {
                matches!(e, FilterError::InvalidLiteral { .. })
            }),
        ];
        for (text, check) in cases {
            let error = Filter::parse(text).unwrap_err();
            assert!(check(&error), "{text}: {error:?}");
        }
        let deep = format!("{}a pr{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            Filter::parse(&deep).unwrap_err(),
            FilterError::TooDeep { max: MAX_DEPTH }
        );
        let long = format!("a eq \"{}\"", "x".repeat(MAX_FILTER_LEN));
        assert!(matches!(
            Filter::parse(&long).unwrap_err(),
            FilterError::TooLong { .. }
        ));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let parsed = Filter::parse("a pr or b pr and c pr").unwrap();
        assert!(matches!(parsed, Filter::Or(_, ref right) if matches!(**right, Filter::And(..))));
        let grouped = Filter::parse("(a pr or b pr) and c pr").unwrap();
        assert_eq!(grouped.to_string(), "(a pr or b pr) and c pr");
    }

    #[test]
    fn evaluates_with_case_rules_and_multi_values() {
        let user = json!({
            "id": "AbC",
            "userName": "Ada@Example.com",
            "active": true,
            "emails": [{"value": "ada@work.example", "type": "work"}, {"value": "ada@home.example", "type": "home"}],
            "meta": {"lastModified": "2026-01-02T03:04:05Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42"}
        });
        let yes = [
            r#"userName eq "ada@example.com""#,
            r#"USERNAME sw "ADA""#,
            r#"id eq "AbC""#,
            r#"emails co "home""#,
            r#"emails[type eq "work" and value ew "work.example"]"#,
            r#"emails.type eq "home""#,
            "active eq true",
            r#"meta.lastModified gt "2026-01-01T00:00:00Z""#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName pr"#,
            "title eq null",
            r#"not (userName eq "bob")"#,
        ];
        let no = [
            r#"id eq "abc""#,
            r#"emails[type eq "work" and value ew "home.example"]"#,
            "active eq false",
            "active gt true",
            "title pr",
            r#"userName ne "ADA@example.com""#,
            r#"meta.lastModified lt "2026-01-01T00:00:00Z""#,
        ];
        for text in yes {
            assert!(
                Filter::parse(text).unwrap().matches(&user, &Insensitive),
                "{text}"
            );
        }
        for text in no {
            assert!(
                !Filter::parse(text).unwrap().matches(&user, &Insensitive),
                "{text}"
            );
        }
    }

    #[test]
    fn patch_paths_in_the_forms_identity_providers_send() {
        for (text, filtered, sub) in [
            ("active", false, None),
            ("name.givenName", false, None),
            (r#"emails[type eq "work"].value"#, true, Some("value")),
            (
                r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
                true,
                None,
            ),
            (
                r#"addresses[type eq "work"].streetAddress"#,
                true,
                Some("streetAddress"),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                false,
                None,
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                false,
                None,
            ),
        ] {
            let path = PatchPath::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(path.filter.is_some(), filtered, "{text}");
            assert_eq!(path.sub.as_deref(), sub, "{text}");
            assert_eq!(PatchPath::parse(&path.to_string()).unwrap(), path);
        }
        for bad in [
            "",
            "emails[type eq \"work\"",
            "emails.value[type eq \"x\"]",
            "1abc",
            "a b",
        ] {
            assert!(PatchPath::parse(bad).is_err(), "{bad}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}".prop_filter("not a keyword", |n| {
            !["and", "or", "not", "pr", "true", "false", "null"]
                .iter()
                .any(|k| n.eq_ignore_ascii_case(k))
        })
    }

    fn path() -> impl Strategy<Value = AttrPath> {
        (
            proptest::option::of("urn:[a-z]{1,5}(:[a-zA-Z0-9.]{1,5}){0,3}"),
            name(),
            proptest::option::of(name()),
        )
            .prop_map(|(uri, name, sub)| AttrPath { uri, name, sub })
    }

    fn value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            Just(CompValue::Null),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|n| CompValue::Number(n.into())),
            any::<String>().prop_map(CompValue::String),
        ]
    }

    fn op() -> impl Strategy<Value = CompareOp> {
        proptest::sample::select(CompareOp::ALL.iter().map(|(op, _)| *op).collect::<Vec<_>>())
    }

    fn leaf() -> impl Strategy<Value = Filter> {
        prop_oneof![
            (path(), op(), value()).prop_map(|(path, op, value)| Filter::Compare {
                path,
                op,
                value
            }),
            path().prop_map(Filter::Present),
        ]
    }

    fn tree(value_paths: bool) -> BoxedStrategy<Filter> {
        let inner = leaf().prop_recursive(4, 24, 2, |f| {
            prop_oneof![
                (f.clone(), f.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                (f.clone(), f.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                f.prop_map(|a| Filter::Not(Box::new(a))),
            ]
        });
        if !value_paths {
            return inner.boxed();
        }
        let value_path = (path(), tree(false))
            .prop_map(|(mut path, filter)| {
                path.sub = None;
                Filter::ValuePath {
                    path,
                    filter: Box::new(filter),
                }
            })
            .boxed();
        prop_oneof![
            inner.clone(),
            value_path.clone(),
            (inner, value_path).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b)))
        ]
        .boxed()
    }

    proptest! {
        #[test]
        fn printed_filters_parse_back(filter in tree(true)) {
            let text = filter.to_string();
            prop_assert_eq!(Filter::parse(&text), Ok(filter), "{}", text);
        }

        #[test]
        fn parsing_never_panics(text in any::<String>()) {
            let _ = Filter::parse(&text);
            let _ = PatchPath::parse(&text);
        }

        #[test]
        fn parsing_filter_shaped_noise_never_panics(text in r#"[a-z \(\)\[\]"\.:0-9\\]{0,64}"#) {
            if let Ok(filter) = Filter::parse(&text) {
                prop_assert_eq!(Filter::parse(&filter.to_string()), Ok(filter));
            }
        }
    }
}
