//! A small CEL interpreter for `x-kubernetes-validations` rules.
//!
//! Supported: literals (int, uint, double, string, bool, null, lists, maps), `self`, `oldSelf`,
//! field selection `a.b`, indexing `a[0]` / `a['k']`, `has(a.b)`, `size()`, `!`, unary `-`,
//! `&&`/`||` (with CEL's error absorption), `?:`, `== != < <= > >= in`, `+ - * / %`, string
//! methods `matches`, `startsWith`, `endsWith`, `contains`, `lowerAscii`, `upperAscii`, `trim`,
//! conversions `int()`, `uint()`, `double()`, `string()`, and the macros `all`, `exists`,
//! `exists_one`, `map`, `filter` on lists and maps.
//!
//! Anything else (optionals, durations, timestamps, quantities, `type()`, …) makes the rule
//! [`Outcome::Unsupported`], which the validator treats as passing.

use serde_json::{Map, Number, Value};

/// The result of evaluating one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail,
    /// The interpreter cannot parse or evaluate the rule: treated as passing.
    Unsupported,
    /// A CEL runtime error the API server would report (`no such key: x`).
    Error(String),
}

/// Whether the rule mentions `oldSelf` (a transition rule).
pub fn mentions_old_self(rule: &str) -> bool {
    lex(rule).is_ok_and(|toks| toks.iter().any(|t| *t == Tok::Ident("oldSelf".into())))
}

/// Evaluates `rule` with `self` = `value` and `oldSelf` = `old`.
pub fn evaluate(rule: &str, value: &Value, old: Option<&Value>) -> Outcome {
    let Ok(toks) = lex(rule) else {
        return Outcome::Unsupported;
    };
    let mut p = Parser { toks, pos: 0 };
    let Ok(expr) = p.expr() else {
        return Outcome::Unsupported;
    };
    if p.pos != p.toks.len() {
        return Outcome::Unsupported;
    }
    let mut env = vec![("self".to_string(), value.clone())];
    if let Some(o) = old {
        env.push(("oldSelf".to_string(), o.clone()));
    }
    match eval(&expr, &mut env) {
        Ok(Value::Bool(true)) => Outcome::Pass,
        Ok(Value::Bool(false)) => Outcome::Fail,
        Ok(_) | Err(EvalError::Unsupported) => Outcome::Unsupported,
        Err(EvalError::Runtime(e)) => Outcome::Error(e),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

const OPS: [&str; 25] = [
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "?", ":", ".", ",", "(", ")", "[", "]", "{",
    "}", "+", "-", "*", "/", "%", "=",
];

fn lex(s: &str) -> Result<Vec<Tok>, ()> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            let mut is_double = false;
            if c == '0' && matches!(chars.get(i + 1), Some('x') | Some('X')) {
                i += 2;
                let hs = i;
                while i < chars.len() && chars[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let h: String = chars[hs..i].iter().collect();
                out.push(Tok::Int(i64::from_str_radix(&h, 16).map_err(|_| ())?));
                continue;
            }
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                    || matches!(chars[i], 'e' | 'E'))
            {
                if matches!(chars[i], '.' | 'e' | 'E') {
                    is_double = true;
                }
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if is_double {
                out.push(Tok::Double(text.parse().map_err(|_| ())?));
            } else if matches!(chars.get(i), Some('u') | Some('U')) {
                i += 1;
                out.push(Tok::UInt(text.parse().map_err(|_| ())?));
            } else {
                out.push(Tok::Int(text.parse().map_err(|_| ())?));
            }
            continue;
        }
        let raw = matches!(c, 'r' | 'R') && matches!(chars.get(i + 1), Some('\'') | Some('"'));
        if c == '\'' || c == '"' || raw {
            if raw {
                i += 1;
            }
            let q = chars[i];
            let triple = chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q);
            if triple {
                i += 3;
            } else {
                i += 1;
            }
            let mut st = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(());
                };
                if ch == q
                    && (!triple || (chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q)))
                {
                    i += if triple { 3 } else { 1 };
                    break;
                }
                if ch == '\\' && !raw {
                    let Some(&e) = chars.get(i + 1) else {
                        return Err(());
                    };
                    st.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' => '\\',
                        '\'' => '\'',
                        '"' => '"',
                        _ => return Err(()),
                    });
                    i += 2;
                    continue;
                }
                st.push(ch);
                i += 1;
            }
            out.push(Tok::Str(st));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
            return Err(());
        };
        if *op == "=" {
            return Err(());
        }
        out.push(Tok::Op(op));
        i += op.chars().count();
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Var(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

type PResult = Result<Expr, ()>;

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_op(&mut self, op: &str) -> Result<(), ()> {
        if self.eat_op(op) { Ok(()) } else { Err(()) }
    }

    fn expr(&mut self) -> PResult {
        let c = self.or()?;
        if self.eat_op("?") {
            let a = self.expr()?;
            self.expect_op(":")?;
            let b = self.expr()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }
    fn or(&mut self) -> PResult {
        let mut l = self.and()?;
        while self.eat_op("||") {
            let r = self.and()?;
            l = Expr::Bin("||", Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and(&mut self) -> PResult {
        let mut l = self.rel()?;
        while self.eat_op("&&") {
            let r = self.rel()?;
            l = Expr::Bin("&&", Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn rel(&mut self) -> PResult {
        let mut l = self.add()?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op(o)) if ["==", "!=", "<", "<=", ">", ">="].contains(o) => *o,
                Some(Tok::Ident(w)) if w == "in" => "in",
                _ => break,
            };
            self.pos += 1;
            let r = self.add()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn add(&mut self) -> PResult {
        let mut l = self.mul()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                break;
            };
            let r = self.mul()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn mul(&mut self) -> PResult {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                "*"
            } else if self.eat_op("/") {
                "/"
            } else if self.eat_op("%") {
                "%"
            } else {
                break;
            };
            let r = self.unary()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn unary(&mut self) -> PResult {
        if self.eat_op("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.member()
    }
    fn args(&mut self, close: &str) -> Result<Vec<Expr>, ()> {
        let mut args = Vec::new();
        if self.eat_op(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_op(close) {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }
    fn member(&mut self) -> PResult {
        let mut e = self.primary()?;
        loop {
            if self.eat_op(".") {
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return Err(());
                };
                self.pos += 1;
                if self.eat_op("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat_op("[") {
                let idx = self.expr()?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }
    fn primary(&mut self) -> PResult {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return Err(());
        };
        self.pos += 1;
        match t {
            Tok::Int(i) => Ok(Expr::Lit(Value::from(i))),
            Tok::UInt(u) => Ok(Expr::Lit(Value::from(u))),
            Tok::Double(d) => Number::from_f64(d)
                .map(|n| Expr::Lit(Value::Number(n)))
                .ok_or(()),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                _ => {
                    if self.eat_op("(") {
                        let args = self.args(")")?;
                        Ok(Expr::Call(None, id, args))
                    } else {
                        Ok(Expr::Var(id))
                    }
                }
            },
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") => Ok(Expr::List(self.args("]")?)),
            Tok::Op("{") => {
                let mut entries = Vec::new();
                if self.eat_op("}") {
                    return Ok(Expr::Map(entries));
                }
                loop {
                    let k = self.expr()?;
                    self.expect_op(":")?;
                    let v = self.expr()?;
                    entries.push((k, v));
                    if self.eat_op("}") {
                        return Ok(Expr::Map(entries));
                    }
                    self.expect_op(",")?;
                }
            }
            _ => Err(()),
        }
    }
}

#[derive(Debug)]
enum EvalError {
    Unsupported,
    Runtime(String),
}

type EResult = Result<Value, EvalError>;

fn unsupported<T>() -> Result<T, EvalError> {
    Err(EvalError::Unsupported)
}

fn as_bool(v: &Value) -> Result<bool, EvalError> {
    v.as_bool().ok_or(EvalError::Unsupported)
}

enum Num {
    I(i64),
    U(u64),
    D(f64),
}

fn num(v: &Value) -> Option<Num> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        Some(Num::I(i))
    } else if let Some(u) = n.as_u64() {
        Some(Num::U(u))
    } else {
        n.as_f64().map(Num::D)
    }
}

fn to_f64(n: &Num) -> f64 {
    match n {
        Num::I(i) => *i as f64,
        Num::U(u) => *u as f64,
        Num::D(d) => *d,
    }
}

fn cel_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => match (num(a), num(b)) {
            (Some(Num::I(x)), Some(Num::I(y))) => x == y,
            (Some(Num::U(x)), Some(Num::U(y))) => x == y,
            (Some(x), Some(y)) => to_f64(&x) == to_f64(&y),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| cel_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| cel_eq(v, w)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, EvalError> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return unsupported();
            };
            match (&x, &y) {
                (Num::I(p), Num::I(q)) => Ok(p.cmp(q)),
                (Num::U(p), Num::U(q)) => Ok(p.cmp(q)),
                _ => to_f64(&x)
                    .partial_cmp(&to_f64(&y))
                    .ok_or(EvalError::Unsupported),
            }
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => unsupported(),
    }
}

fn lookup(env: &[(String, Value)], name: &str) -> EResult {
    env.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .ok_or(EvalError::Unsupported)
}

fn select(v: &Value, field: &str) -> EResult {
    match v {
        Value::Object(m) => m
            .get(field)
            .cloned()
            .ok_or_else(|| EvalError::Runtime(format!("no such key: {field}"))),
        _ => unsupported(),
    }
}

fn size(v: &Value) -> EResult {
    match v {
        Value::String(s) => Ok(Value::from(s.chars().count() as i64)),
        Value::Array(a) => Ok(Value::from(a.len() as i64)),
        Value::Object(m) => Ok(Value::from(m.len() as i64)),
        _ => unsupported(),
    }
}

fn arith(op: &str, a: &Value, b: &Value) -> EResult {
    match (a, b) {
        (Value::String(x), Value::String(y)) if op == "+" => Ok(Value::String(format!("{x}{y}"))),
        (Value::Array(x), Value::Array(y)) if op == "+" => {
            Ok(Value::Array(x.iter().chain(y).cloned().collect()))
        }
        (Value::Number(_), Value::Number(_)) => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return unsupported();
            };
            match (x, y) {
                (Num::I(p), Num::I(q)) => {
                    if (op == "/" || op == "%") && q == 0 {
                        return Err(EvalError::Runtime("division by zero".into()));
                    }
                    let r = match op {
                        "+" => p.checked_add(q),
                        "-" => p.checked_sub(q),
                        "*" => p.checked_mul(q),
                        "/" => p.checked_div(q),
                        "%" => p.checked_rem(q),
                        _ => None,
                    };
                    r.map(Value::from).ok_or(EvalError::Unsupported)
                }
                (Num::D(p), Num::D(q)) => {
                    let r = match op {
                        "+" => p + q,
                        "-" => p - q,
                        "*" => p * q,
                        "/" => p / q,
                        _ => return unsupported(),
                    };
                    Number::from_f64(r)
                        .map(Value::Number)
                        .ok_or(EvalError::Unsupported)
                }
                _ => unsupported(),
            }
        }
        _ => unsupported(),
    }
}

fn eval(e: &Expr, env: &mut Vec<(String, Value)>) -> EResult {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var(n) => lookup(env, n),
        Expr::Select(t, f) => {
            let tv = eval(t, env)?;
            select(&tv, f)
        }
        Expr::Index(t, i) => {
            let tv = eval(t, env)?;
            let iv = eval(i, env)?;
            match (&tv, &iv) {
                (Value::Array(a), Value::Number(_)) => {
                    let idx = iv.as_i64().ok_or(EvalError::Unsupported)?;
                    usize::try_from(idx)
                        .ok()
                        .and_then(|i| a.get(i))
                        .cloned()
                        .ok_or_else(|| EvalError::Runtime(format!("index out of bounds: {idx}")))
                }
                (Value::Object(_), Value::String(k)) => select(&tv, k),
                _ => unsupported(),
            }
        }
        Expr::Not(x) => Ok(Value::Bool(!as_bool(&eval(x, env)?)?)),
        Expr::Neg(x) => match num(&eval(x, env)?) {
            Some(Num::I(i)) => i
                .checked_neg()
                .map(Value::from)
                .ok_or(EvalError::Unsupported),
            Some(Num::D(d)) => Number::from_f64(-d)
                .map(Value::Number)
                .ok_or(EvalError::Unsupported),
            _ => unsupported(),
        },
        Expr::Cond(c, a, b) => {
            if as_bool(&eval(c, env)?)? {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|x| eval(x, env))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let Value::String(k) = eval(k, env)? else {
                    return unsupported();
                };
                m.insert(k, eval(v, env)?);
            }
            Ok(Value::Object(m))
        }
        Expr::Bin(op, l, r) => match *op {
            "&&" | "||" => {
                let short = *op == "||";
                let lv = eval(l, env).and_then(|v| as_bool(&v));
                if let Ok(b) = lv
                    && b == short
                {
                    return Ok(Value::Bool(short));
                }
                let rv = eval(r, env).and_then(|v| as_bool(&v));
                match (lv, rv) {
                    (_, Ok(b)) if b == short => Ok(Value::Bool(short)),
                    (Ok(_), Ok(_)) => Ok(Value::Bool(!short)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            "==" => Ok(Value::Bool(cel_eq(&eval(l, env)?, &eval(r, env)?))),
            "!=" => Ok(Value::Bool(!cel_eq(&eval(l, env)?, &eval(r, env)?))),
            "<" | "<=" | ">" | ">=" => {
                let o = compare(&eval(l, env)?, &eval(r, env)?)?;
                use std::cmp::Ordering::*;
                Ok(Value::Bool(match *op {
                    "<" => o == Less,
                    "<=" => o != Greater,
                    ">" => o == Greater,
                    _ => o != Less,
                }))
            }
            "in" => {
                let x = eval(l, env)?;
                match eval(r, env)? {
                    Value::Array(a) => Ok(Value::Bool(a.iter().any(|y| cel_eq(&x, y)))),
                    Value::Object(m) => match x {
                        Value::String(k) => Ok(Value::Bool(m.contains_key(&k))),
                        _ => unsupported(),
                    },
                    _ => unsupported(),
                }
            }
            _ => arith(op, &eval(l, env)?, &eval(r, env)?),
        },
        Expr::Call(target, name, args) => call(target.as_deref(), name, args, env),
    }
}

fn str_arg(args: &[Expr], env: &mut Vec<(String, Value)>) -> Result<String, EvalError> {
    match args {
        [a] => match eval(a, env)? {
            Value::String(s) => Ok(s),
            _ => unsupported(),
        },
        _ => unsupported(),
    }
}

fn call(
    target: Option<&Expr>,
    name: &str,
    args: &[Expr],
    env: &mut Vec<(String, Value)>,
) -> EResult {
    match (target, name) {
        (None, "has") => {
            let [Expr::Select(t, f)] = args else {
                return unsupported();
            };
            match eval(t, env)? {
                Value::Object(m) => Ok(Value::Bool(m.contains_key(f))),
                _ => unsupported(),
            }
        }
        (None, "size") => match args {
            [a] => size(&eval(a, env)?),
            _ => unsupported(),
        },
        (Some(t), "size") if args.is_empty() => size(&eval(t, env)?),
        (None, "int") => match args {
            [a] => match eval(a, env)? {
                Value::String(s) => s
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| EvalError::Runtime(format!("cannot convert {s:?} to int"))),
                v @ Value::Number(_) => match num(&v) {
                    Some(Num::I(i)) => Ok(Value::from(i)),
                    Some(Num::U(u)) => i64::try_from(u)
                        .map(Value::from)
                        .map_err(|_| EvalError::Unsupported),
                    Some(Num::D(d)) => Ok(Value::from(d.trunc() as i64)),
                    None => unsupported(),
                },
                _ => unsupported(),
            },
            _ => unsupported(),
        },
        (None, "uint") => match args {
            [a] => match num(&eval(a, env)?) {
                Some(Num::I(i)) if i >= 0 => Ok(Value::from(i as u64)),
                Some(Num::U(u)) => Ok(Value::from(u)),
                _ => unsupported(),
            },
            _ => unsupported(),
        },
        (None, "double") => match args {
            [a] => match num(&eval(a, env)?) {
                Some(n) => Number::from_f64(to_f64(&n))
                    .map(Value::Number)
                    .ok_or(EvalError::Unsupported),
                None => unsupported(),
            },
            _ => unsupported(),
        },
        (None, "string") => match args {
            [a] => match eval(a, env)? {
                Value::String(s) => Ok(Value::String(s)),
                Value::Number(n) => Ok(Value::String(n.to_string())),
                Value::Bool(b) => Ok(Value::String(b.to_string())),
                _ => unsupported(),
            },
            _ => unsupported(),
        },
        (None, "matches") => match args {
            [s, re] => {
                let (Value::String(s), Value::String(re)) = (eval(s, env)?, eval(re, env)?) else {
                    return unsupported();
                };
                matches(&s, &re)
            }
            _ => unsupported(),
        },
        (Some(t), "matches" | "startsWith" | "endsWith" | "contains") => {
            let Value::String(s) = eval(t, env)? else {
                return unsupported();
            };
            let arg = str_arg(args, env)?;
            match name {
                "matches" => matches(&s, &arg),
                "startsWith" => Ok(Value::Bool(s.starts_with(&arg))),
                "endsWith" => Ok(Value::Bool(s.ends_with(&arg))),
                _ => Ok(Value::Bool(s.contains(&arg))),
            }
        }
        (Some(t), "lowerAscii" | "upperAscii" | "trim") if args.is_empty() => {
            let Value::String(s) = eval(t, env)? else {
                return unsupported();
            };
            Ok(Value::String(match name {
                "lowerAscii" => s.to_ascii_lowercase(),
                "upperAscii" => s.to_ascii_uppercase(),
                _ => s.trim().to_string(),
            }))
        }
        (Some(t), "all" | "exists" | "exists_one" | "map" | "filter") => {
            let [Expr::Var(var), body] = args else {
                return unsupported();
            };
            let elems: Vec<Value> = match eval(t, env)? {
                Value::Array(a) => a,
                Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
                _ => return unsupported(),
            };
            let mut results = Vec::with_capacity(elems.len());
            for el in &elems {
                env.push((var.clone(), el.clone()));
                let r = eval(body, env);
                env.pop();
                results.push(r?);
            }
            match name {
                "map" => Ok(Value::Array(results)),
                "filter" => {
                    let mut out = Vec::new();
                    for (el, r) in elems.into_iter().zip(&results) {
                        if as_bool(r)? {
                            out.push(el);
                        }
                    }
                    Ok(Value::Array(out))
                }
                _ => {
                    let bools: Vec<bool> = results.iter().map(as_bool).collect::<Result<_, _>>()?;
                    let n = bools.iter().filter(|b| **b).count();
                    Ok(Value::Bool(match name {
                        "all" => n == bools.len(),
                        "exists" => n > 0,
                        _ => n == 1,
                    }))
                }
            }
        }
        _ => unsupported(),
    }
}

fn matches(s: &str, re: &str) -> EResult {
    match regex::Regex::new(re) {
        Ok(r) => Ok(Value::Bool(r.is_match(s))),
        Err(_) => unsupported(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(rule: &str, v: Value) -> Outcome {
        evaluate(rule, &v, None)
    }

    #[test]
    fn basic_rules() {
        let v = json!({"a": "x", "n": 3, "tags": ["p", "q"], "m": {"k": 1}});
        assert_eq!(ev("self.a == 'x'", v.clone()), Outcome::Pass);
        assert_eq!(ev("self.a == \"y\"", v.clone()), Outcome::Fail);
        assert_eq!(ev("has(self.a) && !has(self.b)", v.clone()), Outcome::Pass);
        assert_eq!(ev("has(self.a) != has(self.n)", v.clone()), Outcome::Fail);
        assert_eq!(
            ev("has(self.b) ? self.b == 'z' : true", v.clone()),
            Outcome::Pass
        );
        assert_eq!(
            ev("size(self.tags) <= 2 && self.tags.size() == 2", v.clone()),
            Outcome::Pass
        );
        assert_eq!(
            ev(
                "self.n > 2 && self.n >= 3 && self.n < 4 && self.n <= 3",
                v.clone()
            ),
            Outcome::Pass
        );
        assert_eq!(
            ev(
                "self.a < 'y' && 'p' in self.tags && 'k' in self.m",
                v.clone()
            ),
            Outcome::Pass
        );
        assert_eq!(ev("self.a.matches('^[a-z]$')", v.clone()), Outcome::Pass);
        assert_eq!(
            ev("self.tags.all(t, t.size() == 1)", v.clone()),
            Outcome::Pass
        );
        assert_eq!(
            ev("self.tags.exists(t, t == 'z')", v.clone()),
            Outcome::Fail
        );
        assert_eq!(
            ev(
                "self.n + 1 == 4 && self.n * 2 == 6 && -self.n == -3",
                v.clone()
            ),
            Outcome::Pass
        );
        assert_eq!(
            ev("!(self.n == 3) || self.a.startsWith('x')", v.clone()),
            Outcome::Pass
        );
        assert_eq!(
            ev("self.tags[1] == 'q' && self.m['k'] == 1", v.clone()),
            Outcome::Pass
        );
        assert_eq!(ev("self.n == 3.0", v.clone()), Outcome::Pass);
    }

    #[test]
    fn errors_and_unsupported() {
        let v = json!({"a": "x"});
        assert_eq!(
            ev("self.b == 'x'", v.clone()),
            Outcome::Error("no such key: b".into())
        );
        // CEL error absorption: the guard makes the missing key harmless.
        assert_eq!(
            ev("!has(self.b) || self.b == 'x'", v.clone()),
            Outcome::Pass
        );
        assert_eq!(ev("self.b == 'x' && false", v.clone()), Outcome::Fail);
        assert_eq!(
            ev("duration(self.a) > duration('1s')", v.clone()),
            Outcome::Unsupported
        );
        assert_eq!(
            ev("self.?a.orValue('') == 'x'", v.clone()),
            Outcome::Unsupported
        );
        assert_eq!(ev("self.a ==", v.clone()), Outcome::Unsupported);
        assert_eq!(ev("self.a", v), Outcome::Unsupported);
    }

    #[test]
    fn transition_rules() {
        assert!(mentions_old_self("self == oldSelf"));
        assert!(!mentions_old_self("self.oldSelfish == 1"));
        let old = json!("a");
        assert_eq!(
            evaluate("self == oldSelf", &json!("a"), Some(&old)),
            Outcome::Pass
        );
        assert_eq!(
            evaluate("self == oldSelf", &json!("b"), Some(&old)),
            Outcome::Fail
        );
        assert_eq!(
            evaluate("self != oldSelf", &json!("b"), Some(&old)),
            Outcome::Pass
        );
    }
}
