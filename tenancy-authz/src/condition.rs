//! The condition language of policy statements.
//!
//! A condition is a boolean expression over attributes of the principal,
//! the resource and the request context:
//!
//! ```text
//! resource.owner == principal.id
//!     && context.ip in cidr("10.0.0.0/8")
//!     && hour(context.time) >= 9 && hour(context.time) < 17
//!     && !(principal.level < 3 || resource.tags contains "frozen")
//! ```
//!
//! - Literals: strings in double quotes (escapes `\"`, `\\`, `\n`, `\t`),
//!   64-bit integers (with an optional `-`), `true`, `false`, lists of
//!   literals `["a", "b"]`.
//! - Attributes: `principal.NAME`, `resource.NAME`, `context.NAME`, where a
//!   name may have dots (`resource.owner.team`). Built in: `principal.id`,
//!   `principal.tenant_id`, `resource.id`, `resource.type`,
//!   `resource.tenant_id`.
//! - Operators, loosest first: `||`, `&&`, `!`, then one comparison
//!   `== != < <= > >= in contains starts_with`; parentheses group.
//! - Functions: `cidr("10.0.0.0/8")`, `ip("10.1.2.3")`,
//!   `time("2030-01-01T09:00:00Z")` build constants; `hour(t)` (0-23) and
//!   `weekday(t)` (1 = Monday … 7 = Sunday) read an instant in UTC;
//!   `has(path)` tells whether an attribute is present.
//!
//! Semantics: `==` and `!=` compare any two values (different types are
//! never equal); `<`-style comparisons take two integers, two times or two
//! strings; `x in list`, `ip in cidr`, `list contains x`, `string contains
//! string`, `string starts_with string`. Anything else, and reading an
//! absent attribute, is an evaluation error. A statement whose condition
//! errs is treated as not matching if it allows, and as matching if it
//! denies (fail closed); [`crate::Authorizer::explain`] reports the error.
//! Use `has(...)` to test optional attributes.
//!
//! The parser reports the line, column and what it expected, never panics,
//! and bounds the input to [`MAX_CONDITION_LEN`] bytes and
//! [`MAX_NESTING`] levels.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::request::{Principal, Resource};
use crate::value::{AttrKey, Attributes, Cidr, Value, valid_attr_name};

/// Longest condition accepted, in bytes.
pub const MAX_CONDITION_LEN: usize = 4096;
/// Deepest nesting of parentheses, negations and lists.
pub const MAX_NESTING: usize = 32;

/// A condition that does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ConditionError {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
    /// What the parser expected, such as "an operand".
    pub expected: String,
    /// What it found, such as "`)`" or "end of input".
    pub found: String,
}

/// A parsed condition, ready to evaluate. Attribute names are validated and
/// hashed ([`AttrKey`]), and constants (networks, times, lists) are built
/// once here.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: Arc<str>,
    pub(crate) expr: Arc<Expr>,
}

impl Condition {
    /// Parses `source`.
    ///
    /// ```
    /// use tenancy_authz::Condition;
    /// let ok = Condition::parse(r#"context.ip in cidr("10.0.0.0/8")"#);
    /// assert!(ok.is_ok());
    /// let err = Condition::parse("resource.owner ==").unwrap_err();
    /// assert_eq!(err.to_string(), "line 1, column 18: expected an operand, found end of input");
    /// ```
    pub fn parse(source: &str) -> Result<Self, ConditionError> {
        if source.len() > MAX_CONDITION_LEN {
            let (line, column) = position(source, MAX_CONDITION_LEN);
            return Err(ConditionError {
                line,
                column,
                expected: format!("a condition of at most {MAX_CONDITION_LEN} bytes"),
                found: "more".to_owned(),
            });
        }
        let mut parser = Parser {
            lexer: Lexer::new(source),
            depth: 0,
            peeked: None,
        };
        let expr = parser.expr()?;
        let next = parser.next()?;
        if next.tok != Tok::End {
            return Err(parser.error_at(&next, "an operator, `&&`, `||` or end of input"));
        }
        let expr = check_bool(expr, source)?;
        Ok(Self {
            source: source.into(),
            expr: Arc::new(expr),
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition.
    pub fn evaluate(
        &self,
        principal: &Principal,
        resource: &Resource,
        context: &Attributes,
    ) -> Result<bool, EvalError> {
        let ctx = EvalCtx {
            principal,
            resource,
            context,
        };
        self.expr.eval_bool(&ctx)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Rejects conditions whose top level is a literal that is not a boolean
/// (a constant `"x"` can never be true or false).
fn check_bool(expr: Expr, source: &str) -> Result<Expr, ConditionError> {
    if let Expr::Lit(value) = &expr
        && !matches!(value, Value::Bool(_))
    {
        let _ = source;
        return Err(ConditionError {
            line: 1,
            column: 1,
            expected: "a boolean expression".to_owned(),
            found: format!("a constant {}", value.type_name()),
        });
    }
    Ok(expr)
}

fn position(source: &str, byte: usize) -> (u32, u32) {
    let mut line = 1u32;
    let mut column = 1u32;
    for (i, c) in source.char_indices() {
        if i >= byte {
            break;
        }
        if c == '\n' {
            line = line.saturating_add(1);
            column = 1;
        } else {
            column = column.saturating_add(1);
        }
    }
    (line, column)
}

/// Where an attribute lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `principal.*`
    Principal,
    /// `resource.*`
    Resource,
    /// `context.*`
    Context,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Principal => "principal",
            Scope::Resource => "resource",
            Scope::Context => "context",
        }
    }
}

/// Attributes every request has, read from its typed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Builtin {
    PrincipalId,
    PrincipalTenant,
    ResourceId,
    ResourceType,
    ResourceTenant,
}

impl Builtin {
    fn path(self) -> &'static str {
        match self {
            Builtin::PrincipalId => "principal.id",
            Builtin::PrincipalTenant => "principal.tenant_id",
            Builtin::ResourceId => "resource.id",
            Builtin::ResourceType => "resource.type",
            Builtin::ResourceTenant => "resource.tenant_id",
        }
    }

    fn lookup(scope: Scope, name: &str) -> Option<Self> {
        match (scope, name) {
            (Scope::Principal, "id") => Some(Builtin::PrincipalId),
            (Scope::Principal, "tenant_id") => Some(Builtin::PrincipalTenant),
            (Scope::Resource, "id") => Some(Builtin::ResourceId),
            (Scope::Resource, "type") => Some(Builtin::ResourceType),
            (Scope::Resource, "tenant_id") => Some(Builtin::ResourceTenant),
            _ => None,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    StartsWith,
}

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "starts_with",
        }
    }
}

/// Functions over a runtime value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Func {
    Hour,
    Weekday,
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Value),
    Attr(Scope, AttrKey),
    Builtin(Builtin),
    Has(Scope, AttrKey),
    HasBuiltin(Builtin),
    Not(Box<Expr>),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
}

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The request lacks an attribute the condition reads.
    #[error("attribute {}.{} is missing", scope.name(), key.name())]
    Missing {
        /// Where.
        scope: Scope,
        /// Which.
        key: AttrKey,
    },
    /// A built-in attribute the request does not have, such as
    /// `resource.id` for a resource without an id.
    #[error("attribute {path} is missing")]
    MissingBuiltin {
        /// The attribute path.
        path: &'static str,
    },
    /// An operator applied to values it does not accept.
    #[error("operator `{op}` cannot take {left} and {right}")]
    Type {
        /// The operator or function.
        op: &'static str,
        /// Type of the left operand.
        left: &'static str,
        /// Type of the right operand (`-` for one-operand operators).
        right: &'static str,
    },
}

pub(crate) struct EvalCtx<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) resource: &'a Resource,
    pub(crate) context: &'a Attributes,
}

/// A value during evaluation: borrowed, so evaluating allocates nothing.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Bool(bool),
    Int(i64),
    Str(&'a str),
    List(&'a [Value]),
    Ip(IpAddr),
    Cidr(Cidr),
    Time(OffsetDateTime),
    Tenant(tenancy_core::TenantId),
}

impl<'a> V<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Bool(b) => V::Bool(*b),
            Value::Int(i) => V::Int(*i),
            Value::Str(s) => V::Str(s),
            Value::List(items) => V::List(items),
            Value::Ip(ip) => V::Ip(*ip),
            Value::Cidr(c) => V::Cidr(*c),
            Value::Time(t) => V::Time(*t),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Str(_) | V::Tenant(_) => "string",
            V::List(_) => "list",
            V::Ip(_) => "ip",
            V::Cidr(_) => "cidr",
            V::Time(_) => "time",
        }
    }

    fn equals(self, other: V<'_>) -> bool {
        match (self, other) {
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Int(a), V::Int(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::Ip(a), V::Ip(b)) => a == b,
            (V::Cidr(a), V::Cidr(b)) => a == b,
            (V::Time(a), V::Time(b)) => a == b,
            (V::Tenant(a), V::Tenant(b)) => a == b,
            (V::Tenant(t), V::Str(s)) | (V::Str(s), V::Tenant(t)) => {
                uuid::Uuid::try_parse(s).is_ok_and(|u| u == t.as_uuid())
            }
            (V::List(a), V::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| V::of(x).equals(V::of(y)))
            }
            _ => false,
        }
    }
}

fn type_error(op: &'static str, left: V<'_>, right: V<'_>) -> EvalError {
    EvalError::Type {
        op,
        left: left.type_name(),
        right: right.type_name(),
    }
}

impl Expr {
    pub(crate) fn eval_bool(&self, ctx: &EvalCtx<'_>) -> Result<bool, EvalError> {
        match self.eval(ctx)? {
            V::Bool(b) => Ok(b),
            other => Err(EvalError::Type {
                op: "condition",
                left: other.type_name(),
                right: "-",
            }),
        }
    }

    fn eval<'a>(&'a self, ctx: &EvalCtx<'a>) -> Result<V<'a>, EvalError> {
        Ok(match self {
            Expr::Lit(value) => V::of(value),
            Expr::Attr(scope, key) => {
                let attrs = match scope {
                    Scope::Principal => &ctx.principal.attributes,
                    Scope::Resource => &ctx.resource.attributes,
                    Scope::Context => ctx.context,
                };
                match attrs.get(key) {
                    Some(value) => V::of(value),
                    None => {
                        return Err(EvalError::Missing {
                            scope: *scope,
                            key: key.clone(),
                        });
                    }
                }
            }
            Expr::Builtin(b) => builtin(*b, ctx)?,
            Expr::Has(scope, key) => {
                let attrs = match scope {
                    Scope::Principal => &ctx.principal.attributes,
                    Scope::Resource => &ctx.resource.attributes,
                    Scope::Context => ctx.context,
                };
                V::Bool(attrs.get(key).is_some())
            }
            Expr::HasBuiltin(b) => V::Bool(builtin(*b, ctx).is_ok()),
            Expr::Not(inner) => match inner.eval(ctx)? {
                V::Bool(b) => V::Bool(!b),
                other => {
                    return Err(EvalError::Type {
                        op: "!",
                        left: other.type_name(),
                        right: "-",
                    });
                }
            },
            Expr::And(items) => {
                for item in items.iter() {
                    match item.eval(ctx)? {
                        V::Bool(true) => {}
                        V::Bool(false) => return Ok(V::Bool(false)),
                        other => {
                            return Err(EvalError::Type {
                                op: "&&",
                                left: other.type_name(),
                                right: "-",
                            });
                        }
                    }
                }
                V::Bool(true)
            }
            Expr::Or(items) => {
                for item in items.iter() {
                    match item.eval(ctx)? {
                        V::Bool(false) => {}
                        V::Bool(true) => return Ok(V::Bool(true)),
                        other => {
                            return Err(EvalError::Type {
                                op: "||",
                                left: other.type_name(),
                                right: "-",
                            });
                        }
                    }
                }
                V::Bool(false)
            }
            Expr::Cmp(op, left, right) => {
                let l = left.eval(ctx)?;
                let r = right.eval(ctx)?;
                V::Bool(compare(*op, l, r)?)
            }
            Expr::Call(func, arg) => match (func, arg.eval(ctx)?) {
                (Func::Hour, V::Time(t)) => {
                    V::Int(i64::from(t.to_offset(time::UtcOffset::UTC).hour()))
                }
                (Func::Weekday, V::Time(t)) => V::Int(i64::from(
                    t.to_offset(time::UtcOffset::UTC)
                        .weekday()
                        .number_from_monday(),
                )),
                (func, other) => {
                    return Err(EvalError::Type {
                        op: match func {
                            Func::Hour => "hour",
                            Func::Weekday => "weekday",
                        },
                        left: other.type_name(),
                        right: "-",
                    });
                }
            },
        })
    }
}

fn builtin<'a>(b: Builtin, ctx: &EvalCtx<'a>) -> Result<V<'a>, EvalError> {
    let missing = EvalError::MissingBuiltin { path: b.path() };
    Ok(match b {
        Builtin::PrincipalId => V::Str(&ctx.principal.id),
        Builtin::PrincipalTenant => V::Tenant(ctx.principal.tenant_id),
        Builtin::ResourceId => V::Str(ctx.resource.id.as_deref().ok_or(missing)?),
        Builtin::ResourceType => V::Str(&ctx.resource.resource_type),
        Builtin::ResourceTenant => V::Tenant(ctx.resource.tenant_id.ok_or(missing)?),
    })
}

fn compare(op: CmpOp, l: V<'_>, r: V<'_>) -> Result<bool, EvalError> {
    use std::cmp::Ordering;
    let ordered = |ord: Ordering| match op {
        CmpOp::Lt => ord.is_lt(),
        CmpOp::Le => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        _ => ord.is_ge(),
    };
    match op {
        CmpOp::Eq => Ok(l.equals(r)),
        CmpOp::Ne => Ok(!l.equals(r)),
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => match (l, r) {
            (V::Int(a), V::Int(b)) => Ok(ordered(a.cmp(&b))),
            (V::Time(a), V::Time(b)) => Ok(ordered(a.cmp(&b))),
            (V::Str(a), V::Str(b)) => Ok(ordered(a.cmp(b))),
            _ => Err(type_error(op.symbol(), l, r)),
        },
        CmpOp::In => match (l, r) {
            (_, V::List(items)) => Ok(items.iter().any(|item| l.equals(V::of(item)))),
            (V::Ip(ip), V::Cidr(net)) => Ok(net.contains(ip)),
            _ => Err(type_error("in", l, r)),
        },
        CmpOp::Contains => match (l, r) {
            (V::List(items), _) => Ok(items.iter().any(|item| r.equals(V::of(item)))),
            (V::Str(a), V::Str(b)) => Ok(a.contains(b)),
            _ => Err(type_error("contains", l, r)),
        },
        CmpOp::StartsWith => match (l, r) {
            (V::Str(a), V::Str(b)) => Ok(a.starts_with(b)),
            _ => Err(type_error("starts_with", l, r)),
        },
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Minus,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: u32,
    column: u32,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(i) => format!("integer {i}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::Minus => "`-`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::NotEq => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::AndAnd => "`&&`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::Bang => "`!`".into(),
            Tok::End => "end of input".into(),
        }
    }
}

struct Lexer<'s> {
    chars: std::iter::Peekable<std::str::Chars<'s>>,
    line: u32,
    column: u32,
}

impl<'s> Lexer<'s> {
    fn new(source: &'s str) -> Self {
        Self {
            chars: source.chars().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.column = 1;
        } else {
            self.column = self.column.saturating_add(1);
        }
        Some(c)
    }

    fn error(&self, line: u32, column: u32, expected: &str, found: String) -> ConditionError {
        ConditionError {
            line,
            column,
            expected: expected.to_owned(),
            found,
        }
    }

    fn next_token(&mut self) -> Result<Token, ConditionError> {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.bump();
        }
        let (line, column) = (self.line, self.column);
        let token = |tok| Token { tok, line, column };
        let Some(c) = self.bump() else {
            return Ok(token(Tok::End));
        };
        let two = |lexer: &mut Self, second: char, yes: Tok, no: Option<Tok>, what: &str| {
            if lexer.chars.peek() == Some(&second) {
                lexer.bump();
                Ok(token(yes))
            } else {
                match no {
                    Some(tok) => Ok(token(tok)),
                    None => {
                        let found = lexer
                            .chars
                            .peek()
                            .map_or("end of input".to_owned(), |c| format!("{c:?}"));
                        Err(lexer.error(lexer.line, lexer.column, what, found))
                    }
                }
            }
        };
        match c {
            '(' => Ok(token(Tok::LParen)),
            ')' => Ok(token(Tok::RParen)),
            '[' => Ok(token(Tok::LBracket)),
            ']' => Ok(token(Tok::RBracket)),
            ',' => Ok(token(Tok::Comma)),
            '.' => Ok(token(Tok::Dot)),
            '-' => Ok(token(Tok::Minus)),
            '=' => two(self, '=', Tok::EqEq, None, "`=` (to make `==`)"),
            '!' => two(self, '=', Tok::NotEq, Some(Tok::Bang), ""),
            '<' => two(self, '=', Tok::Le, Some(Tok::Lt), ""),
            '>' => two(self, '=', Tok::Ge, Some(Tok::Gt), ""),
            '&' => two(self, '&', Tok::AndAnd, None, "`&` (to make `&&`)"),
            '|' => two(self, '|', Tok::OrOr, None, "`|` (to make `||`)"),
            '"' => self.string(line, column),
            c if c.is_ascii_digit() => {
                let mut digits = String::from(c);
                while let Some(&d) = self.chars.peek() {
                    if d.is_ascii_digit() {
                        digits.push(d);
                        self.bump();
                    } else {
                        break;
                    }
                }
                if self
                    .chars
                    .peek()
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    let found = self
                        .chars
                        .peek()
                        .map(|c| format!("{c:?}"))
                        .unwrap_or_default();
                    return Err(self.error(
                        self.line,
                        self.column,
                        "a digit or a separator",
                        found,
                    ));
                }
                match digits.parse::<i64>() {
                    Ok(i) => Ok(token(Tok::Int(i))),
                    Err(_) => Err(self.error(
                        line,
                        column,
                        "an integer between -9223372036854775808 and 9223372036854775807",
                        digits,
                    )),
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::from(c);
                while let Some(&d) = self.chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        name.push(d);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Ok(token(Tok::Ident(name)))
            }
            other => Err(self.error(
                line,
                column,
                "an operand or an operator",
                format!("{other:?}"),
            )),
        }
    }

    fn string(&mut self, line: u32, column: u32) -> Result<Token, ConditionError> {
        let mut text = String::new();
        loop {
            let (l, c) = (self.line, self.column);
            match self.bump() {
                None => {
                    return Err(self.error(l, c, "a closing `\"`", "end of input".to_owned()));
                }
                Some('"') => break,
                Some('\\') => match self.bump() {
                    Some('"') => text.push('"'),
                    Some('\\') => text.push('\\'),
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    other => {
                        return Err(self.error(
                            l,
                            c,
                            "an escape `\\\"`, `\\\\`, `\\n` or `\\t`",
                            other.map_or("end of input".to_owned(), |c| format!("`\\{c}`")),
                        ));
                    }
                },
                Some(ch) if ch.is_control() && ch != '\t' => {
                    return Err(self.error(
                        l,
                        c,
                        "a printable character or a closing `\"`",
                        format!("{ch:?}"),
                    ));
                }
                Some(ch) => text.push(ch),
            }
        }
        Ok(Token {
            tok: Tok::Str(text),
            line,
            column,
        })
    }
}

// ---------------------------------------------------------------- parser

struct Parser<'s> {
    lexer: Lexer<'s>,
    depth: usize,
    peeked: Option<Token>,
}

impl Parser<'_> {
    fn next(&mut self) -> Result<Token, ConditionError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<&Token, ConditionError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        match &self.peeked {
            Some(t) => Ok(t),
            None => Err(self.lexer.error(1, 1, "a token", "nothing".into())),
        }
    }

    fn error_at(&self, token: &Token, expected: &str) -> ConditionError {
        ConditionError {
            line: token.line,
            column: token.column,
            expected: expected.to_owned(),
            found: token.tok.describe(),
        }
    }

    fn enter(&mut self, token: &Token) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ConditionError {
                line: token.line,
                column: token.column,
                expected: format!("at most {MAX_NESTING} levels of nesting"),
                found: "deeper nesting".to_owned(),
            });
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ConditionError> {
        let first = self.and()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::OrOr {
            self.next()?;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Lit(Value::Bool(false)))
        } else {
            Expr::Or(items.into())
        })
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let first = self.unary()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::AndAnd {
            self.next()?;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Lit(Value::Bool(false)))
        } else {
            Expr::And(items.into())
        })
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.peek()?.tok == Tok::Bang {
            let bang = self.next()?;
            self.enter(&bang)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        let left = self.operand()?;
        let op = match &self.peek()?.tok {
            Tok::EqEq => Some(CmpOp::Eq),
            Tok::NotEq => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            Tok::Ident(word) if word == "in" => Some(CmpOp::In),
            Tok::Ident(word) if word == "contains" => Some(CmpOp::Contains),
            Tok::Ident(word) if word == "starts_with" => Some(CmpOp::StartsWith),
            _ => None,
        };
        let Some(op) = op else {
            return Ok(left);
        };
        self.next()?;
        let right = self.operand()?;
        let next = self.peek()?;
        if matches!(
            &next.tok,
            Tok::EqEq | Tok::NotEq | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) || matches!(&next.tok, Tok::Ident(w) if w == "in" || w == "contains" || w == "starts_with")
        {
            let next = next.clone();
            return Err(self.error_at(
                &next,
                "`&&`, `||`, `)` or end of input (comparisons do not chain; use parentheses and `&&`)",
            ));
        }
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn operand(&mut self) -> Result<Expr, ConditionError> {
        let token = self.next()?;
        match token.tok.clone() {
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s.into()))),
            Tok::Int(i) => Ok(Expr::Lit(Value::Int(i))),
            Tok::Minus => {
                let number = self.next()?;
                match number.tok {
                    Tok::Int(i) => Ok(Expr::Lit(Value::Int(-i))),
                    _ => Err(self.error_at(&number, "an integer after `-`")),
                }
            }
            Tok::LParen => {
                self.enter(&token)?;
                let inner = self.expr()?;
                self.depth -= 1;
                let close = self.next()?;
                if close.tok != Tok::RParen {
                    return Err(self.error_at(&close, "`)`, `&&` or `||`"));
                }
                Ok(inner)
            }
            Tok::LBracket => {
                self.enter(&token)?;
                let list = self.list()?;
                self.depth -= 1;
                Ok(Expr::Lit(list))
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "principal" => self.path(Scope::Principal).map(|p| p.into_expr()),
                "resource" => self.path(Scope::Resource).map(|p| p.into_expr()),
                "context" => self.path(Scope::Context).map(|p| p.into_expr()),
                "cidr" | "ip" | "time" | "hour" | "weekday" | "has" => self.call(&token, &word),
                _ => Err(self.error_at(
                    &token,
                    "an operand: a literal, `principal.`, `resource.` or `context.` attribute, or a function",
                )),
            },
            _ => Err(self.error_at(&token, "an operand")),
        }
    }

    /// A list of literals, after `[`.
    fn list(&mut self) -> Result<Value, ConditionError> {
        let mut items = Vec::new();
        if self.peek()?.tok == Tok::RBracket {
            self.next()?;
            return Ok(Value::List(items.into()));
        }
        loop {
            let at = self.peek()?.clone();
            match self.operand()? {
                Expr::Lit(value) => items.push(value),
                _ => return Err(self.error_at(&at, "a literal (lists hold constants only)")),
            }
            let sep = self.next()?;
            match sep.tok {
                Tok::Comma => {
                    if self.peek()?.tok == Tok::RBracket {
                        self.next()?;
                        break;
                    }
                }
                Tok::RBracket => break,
                _ => return Err(self.error_at(&sep, "`,` or `]`")),
            }
        }
        Ok(Value::List(items.into()))
    }

    /// `.name(.name)*` after a scope word.
    fn path(&mut self, scope: Scope) -> Result<Path, ConditionError> {
        let mut name = String::new();
        let start = self.peek()?.clone();
        loop {
            let dot = self.next()?;
            if dot.tok != Tok::Dot {
                return Err(self.error_at(&dot, "`.` and an attribute name"));
            }
            let segment = self.next()?;
            match &segment.tok {
                Tok::Ident(s) if valid_attr_name(s) => {
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(s);
                }
                _ => {
                    return Err(self.error_at(
                        &segment,
                        "an attribute name of a-z, 0-9 and '_' starting with a letter or '_'",
                    ));
                }
            }
            if self.peek()?.tok != Tok::Dot {
                break;
            }
        }
        if let Some(builtin) = Builtin::lookup(scope, &name) {
            return Ok(Path::Builtin(builtin));
        }
        match AttrKey::new(&name) {
            Ok(key) => Ok(Path::Attr(scope, key)),
            Err(e) => Err(ConditionError {
                line: start.line,
                column: start.column,
                expected: "a valid attribute name".to_owned(),
                found: e.to_string(),
            }),
        }
    }

    fn call(&mut self, at: &Token, name: &str) -> Result<Expr, ConditionError> {
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(self.error_at(&open, &format!("`(` after `{name}`")));
        }
        self.enter(&open)?;
        let result = match name {
            "cidr" | "ip" | "time" => {
                let arg = self.next()?;
                let Tok::Str(text) = &arg.tok else {
                    return Err(self.error_at(&arg, &format!("a string literal for `{name}`")));
                };
                let value = match name {
                    "cidr" => text
                        .parse::<Cidr>()
                        .map(Value::Cidr)
                        .map_err(|_| self.error_at(&arg, "a network such as \"10.0.0.0/8\"")),
                    "ip" => text
                        .parse::<IpAddr>()
                        .map(Value::Ip)
                        .map_err(|_| self.error_at(&arg, "an IP address such as \"10.1.2.3\"")),
                    _ => OffsetDateTime::parse(text, &Rfc3339)
                        .map(Value::Time)
                        .map_err(|_| {
                            self.error_at(&arg, "an RFC 3339 time such as \"2030-01-01T09:00:00Z\"")
                        }),
                }?;
                Expr::Lit(value)
            }
            "has" => {
                let scope_token = self.next()?;
                let scope = match &scope_token.tok {
                    Tok::Ident(w) if w == "principal" => Scope::Principal,
                    Tok::Ident(w) if w == "resource" => Scope::Resource,
                    Tok::Ident(w) if w == "context" => Scope::Context,
                    _ => return Err(self.error_at(&scope_token, "an attribute path for `has`")),
                };
                match self.path(scope)? {
                    Path::Attr(scope, key) => Expr::Has(scope, key),
                    Path::Builtin(b) => Expr::HasBuiltin(b),
                }
            }
            _ => {
                let arg = self.expr()?;
                let func = if name == "hour" {
                    Func::Hour
                } else {
                    Func::Weekday
                };
                Expr::Call(func, Box::new(arg))
            }
        };
        self.depth -= 1;
        let close = self.next()?;
        if close.tok != Tok::RParen {
            let _ = at;
            return Err(self.error_at(&close, &format!("`)` to close `{name}(`")));
        }
        Ok(result)
    }
}

enum Path {
    Attr(Scope, AttrKey),
    Builtin(Builtin),
}

impl Path {
    fn into_expr(self) -> Expr {
        match self {
            Path::Attr(scope, key) => Expr::Attr(scope, key),
            Path::Builtin(b) => Expr::Builtin(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_core::{RoleSet, TenantId};

    fn err(source: &str) -> String {
        Condition::parse(source).unwrap_err().to_string()
    }

    fn principal() -> Principal {
        Principal::new(
            crate::request::PrincipalKind::User,
            "u1",
            TenantId::new(),
            RoleSet::parse(["member"]).unwrap(),
        )
        .with_attribute(AttrKey::new("level").unwrap(), 3)
        .with_attribute(AttrKey::new("suspended").unwrap(), false)
    }

    fn eval(source: &str) -> Result<bool, EvalError> {
        let p = principal();
        let r = Resource::new("project")
            .with_id("p1")
            .in_tenant(p.tenant_id)
            .with_attribute(AttrKey::new("owner").unwrap(), "u1")
            .with_attribute(AttrKey::new("tags").unwrap(), vec!["a", "b"]);
        let c = Attributes::new()
            .with(
                AttrKey::new("ip").unwrap(),
                "10.2.3.4".parse::<IpAddr>().unwrap(),
            )
            .with(
                AttrKey::new("time").unwrap(),
                time::macros::datetime!(2030-01-07 10:30 UTC),
            );
        Condition::parse(source).unwrap().evaluate(&p, &r, &c)
    }

    #[test]
    fn evaluates() {
        for (source, expected) in [
            ("resource.owner == principal.id", true),
            ("resource.owner != principal.id", false),
            ("principal.level >= 3 && principal.level < 4", true),
            ("context.ip in cidr(\"10.0.0.0/8\")", true),
            ("context.ip in cidr(\"192.168.0.0/16\")", false),
            ("hour(context.time) >= 9 && hour(context.time) < 17", true),
            ("weekday(context.time) == 1", true),
            ("context.time < time(\"2030-01-08T00:00:00Z\")", true),
            ("resource.tags contains \"b\"", true),
            ("\"c\" in resource.tags", false),
            ("resource.id starts_with \"p\"", true),
            ("resource.type == \"project\"", true),
            ("resource.tenant_id == principal.tenant_id", true),
            ("!principal.suspended", true),
            ("!(principal.suspended || false)", true),
            ("has(principal.missing) && principal.missing == 1", false),
            ("has(resource.id)", true),
            ("principal.level in [1, 2, 3]", true),
            ("-1 < 0", true),
            ("\"abc\" contains \"bc\"", true),
            ("false || true && false", false),
            ("[1, 2] == [1, 2]", true),
            ("1 == \"1\"", false),
        ] {
            assert_eq!(eval(source), Ok(expected), "{source}");
        }
    }

    #[test]
    fn evaluation_errors() {
        assert!(matches!(
            eval("principal.missing == 1"),
            Err(EvalError::Missing { .. })
        ));
        assert_eq!(
            eval("principal.level < \"x\"").unwrap_err().to_string(),
            "operator `<` cannot take int and string"
        );
        assert!(eval("principal.level").is_err());
        assert!(eval("!principal.level").is_err());
        assert!(eval("hour(principal.level) == 1").is_err());
        // Short-circuit: the missing attribute is never read.
        assert_eq!(eval("false && principal.missing == 1"), Ok(false));
        assert_eq!(eval("true || principal.missing == 1"), Ok(true));
    }

    #[test]
    fn parse_errors_name_the_place() {
        assert_eq!(
            err(""),
            "line 1, column 1: expected an operand, found end of input"
        );
        assert_eq!(
            err("principal.x ==\n  == 3"),
            "line 2, column 3: expected an operand, found `==`"
        );
        assert_eq!(
            err("user.x == 1"),
            "line 1, column 1: expected an operand: a literal, `principal.`, `resource.` or `context.` attribute, or a function, found `user`"
        );
        assert_eq!(
            err("context.ip in cidr(\"10.0.0.0/33\")"),
            "line 1, column 20: expected a network such as \"10.0.0.0/8\", found string \"10.0.0.0/33\""
        );
        assert_eq!(
            err("(1 == 1"),
            "line 1, column 8: expected `)`, `&&` or `||`, found end of input"
        );
        assert_eq!(
            err("1 == 1 == 1").split(", found").next(),
            Some(
                "line 1, column 8: expected `&&`, `||`, `)` or end of input (comparisons do not chain; use parentheses and `&&`)"
            )
        );
        assert_eq!(
            err("\"abc"),
            "line 1, column 5: expected a closing `\"`, found end of input"
        );
        assert_eq!(err("a = b").split(':').next(), Some("line 1, column 1"));
        assert_eq!(
            err("1 & 2"),
            "line 1, column 4: expected `&` (to make `&&`), found ' '"
        );
        assert_eq!(
            err("99999999999999999999 == 1"),
            "line 1, column 1: expected an integer between -9223372036854775808 and 9223372036854775807, found 99999999999999999999"
        );
        assert!(err("principal.Name == 1").contains("expected an attribute name"));
        assert!(err("\"x\"").contains("expected a boolean expression"));
        assert!(err(&"(".repeat(40)).contains("levels of nesting"));
        assert!(err(&"!".repeat(40)).contains("levels of nesting"));
        assert!(err(&"a".repeat(5000)).contains("at most 4096 bytes"));
        assert!(err("time(\"yesterday\") < context.time").contains("RFC 3339"));
        assert!(err("[principal.x]").contains("lists hold constants only"));
    }
}
