//! Label and field selectors: parsing the query-string forms and matching objects.
//! (Pure: no I/O. Owned by the "pure modules" work; signatures agreed with the server code.)
//!
//! The grammar follows `k8s.io/apimachinery/pkg/labels` and `pkg/fields`:
//! label selectors accept `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists),
//! `!a` (does not exist), `a>1`, `a<1`, joined by commas (AND); field selectors accept
//! `path=value`, `path==value`, `path!=value` joined by commas, where `path` is a dotted path in
//! the object and a missing field compares as the empty string.

use std::collections::BTreeMap;

use serde_json::Value;

/// Operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One label requirement (`key op values`).
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub key: String,
    pub op: LabelOp,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            LabelOp::Equals | LabelOp::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOp::NotEquals | LabelOp::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    /// All requirements must hold (AND); none means "everything".
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Not,
    NotEq,
    Eq,
    DoubleEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Tok::Not);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '!' | '=' | '>' | '<' | '(' | ')' | ',')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Validates a label key (qualified name: optional DNS-subdomain prefix and `/`, then a name).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!(
            "invalid label key {key:?}: prefix part must be a valid DNS subdomain"
        ));
    }
    if !is_name_part(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }
    Ok(())
}

/// Validates a label value (empty, or a name of at most 63 characters).
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: {value:?}: at key: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ))
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            true
        } else {
            false
        };
        let key = match self.next() {
            Some(Tok::Ident(k)) => k,
            other => {
                return Err(format!(
                    "unable to parse requirement: found {}, expected: identifier",
                    describe(other.as_ref())
                ));
            }
        };
        validate_label_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                op: LabelOp::DoesNotExist,
                values: vec![],
            });
        }
        let op = match self.peek() {
            None | Some(Tok::Comma) => {
                return Ok(Requirement {
                    key,
                    op: LabelOp::Exists,
                    values: vec![],
                });
            }
            Some(Tok::Eq) | Some(Tok::DoubleEq) => LabelOp::Equals,
            Some(Tok::NotEq) => LabelOp::NotEquals,
            Some(Tok::Gt) => LabelOp::GreaterThan,
            Some(Tok::Lt) => LabelOp::LessThan,
            Some(Tok::Ident(w)) if w == "in" => LabelOp::In,
            Some(Tok::Ident(w)) if w == "notin" => LabelOp::NotIn,
            other => {
                return Err(format!(
                    "found {}, expected: in, notin, =, ==, !=, gt, lt",
                    describe(other)
                ));
            }
        };
        self.pos += 1;
        let values = match op {
            LabelOp::In | LabelOp::NotIn => {
                if self.next() != Some(Tok::Open) {
                    return Err("found '', expected: '('".to_string());
                }
                let mut vals = Vec::new();
                loop {
                    match self.next() {
                        Some(Tok::Ident(v)) => {
                            vals.push(v);
                            match self.next() {
                                Some(Tok::Comma) => continue,
                                Some(Tok::Close) => break,
                                other => {
                                    return Err(format!(
                                        "found {}, expected: ',' or ')'",
                                        describe(other.as_ref())
                                    ));
                                }
                            }
                        }
                        // `in ()`, `in (a,)`: empty values are allowed by the real parser.
                        Some(Tok::Close) => {
                            vals.push(String::new());
                            break;
                        }
                        Some(Tok::Comma) => vals.push(String::new()),
                        other => {
                            return Err(format!(
                                "found {}, expected: ',', ')' or identifier",
                                describe(other.as_ref())
                            ));
                        }
                    }
                }
                vals
            }
            _ => match self.peek() {
                Some(Tok::Ident(v)) => {
                    let v = v.clone();
                    self.pos += 1;
                    vec![v]
                }
                None | Some(Tok::Comma) => vec![String::new()],
                other => {
                    return Err(format!("found {}, expected: identifier", describe(other)));
                }
            },
        };
        for v in &values {
            validate_label_value(v)?;
        }
        if matches!(op, LabelOp::GreaterThan | LabelOp::LessThan)
            && values.first().and_then(|v| v.parse::<i64>().ok()).is_none()
        {
            return Err(format!(
                "for 'Gt', 'Lt' operators, the value must be an integer: {:?}",
                values.first().cloned().unwrap_or_default()
            ));
        }
        Ok(Requirement { key, op, values })
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "''".to_string(),
        Some(Tok::Ident(s)) => format!("'{s}'"),
        Some(Tok::Not) => "'!'".to_string(),
        Some(Tok::NotEq) => "'!='".to_string(),
        Some(Tok::Eq) => "'='".to_string(),
        Some(Tok::DoubleEq) => "'=='".to_string(),
        Some(Tok::Gt) => "'>'".to_string(),
        Some(Tok::Lt) => "'<'".to_string(),
        Some(Tok::Open) => "'('".to_string(),
        Some(Tok::Close) => "')'".to_string(),
        Some(Tok::Comma) => "','".to_string(),
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = lex(s)?;
        if toks.is_empty() {
            return Ok(Self::default());
        }
        let mut p = Parser { toks, pos: 0 };
        let mut requirements = Vec::new();
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Tok::Comma) => continue,
                other => {
                    return Err(format!(
                        "found {}, expected: ',' or 'end of string'",
                        describe(other.as_ref())
                    ));
                }
            }
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// One field requirement (`path` = / != `value`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRequirement {
    pub path: String,
    pub equals: bool,
    pub value: String,
}

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y,type=Opaque`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on unescaped commas, keeping escapes for the term parser.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    terms.push(cur);
    terms
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => return Err(format!("invalid escape sequence: \\{n}")),
                None => return Err("invalid trailing escape sequence".to_string()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Finds the first unescaped operator in a field term.
fn split_field_term(term: &str) -> Option<(&str, bool, &str)> {
    let b = term.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'!' if b.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]));
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], true, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], true, &term[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// The value at a dotted path, rendered as a field-selector string ("" when missing).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let Some((path, equals, value)) = split_field_term(term) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let path = unescape(path.trim())?;
            if path.is_empty() {
                return Err(format!(
                    "invalid selector: '{s}'; empty field name in '{term}'"
                ));
            }
            requirements.push(FieldRequirement {
                path,
                equals,
                value: unescape(value.trim())?,
            });
        }
        Ok(Self { requirements })
    }

    /// Matches against the whole object (field paths are resolved inside it).
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (field_value(obj, &r.path) == r.value) == r.equals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality() {
        let s = LabelSelector::parse("app=web").unwrap();
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert!(!s.matches(&labels(&[])));
        let s = LabelSelector::parse("app==web").unwrap();
        assert!(s.matches(&labels(&[("app", "web")])));
        let s = LabelSelector::parse("app!=web").unwrap();
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "db")])));
        assert!(s.matches(&labels(&[])), "!= matches a missing label");
    }

    #[test]
    fn set_based_and_existence() {
        let s = LabelSelector::parse(" env in (prod, staging) , tier notin (fe),  owner, !legacy ")
            .unwrap();
        assert_eq!(s.requirements.len(), 4);
        let ok = labels(&[("env", "prod"), ("tier", "be"), ("owner", "x")]);
        assert!(s.matches(&ok));
        assert!(!s.matches(&labels(&[("env", "dev"), ("owner", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("tier", "fe"), ("owner", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod")])), "owner must exist");
        let mut with_legacy = ok.clone();
        with_legacy.insert("legacy".into(), "1".into());
        assert!(!s.matches(&with_legacy));
        assert!(
            LabelSelector::parse("tier notin (fe)")
                .unwrap()
                .matches(&labels(&[]))
        );
    }

    #[test]
    fn prefixed_keys_and_gt_lt() {
        let s = LabelSelector::parse("app.kubernetes.io/managed-by=okms-operator").unwrap();
        assert!(s.matches(&labels(&[(
            "app.kubernetes.io/managed-by",
            "okms-operator"
        )])));
        let s = LabelSelector::parse("n>3,m<10").unwrap();
        assert!(s.matches(&labels(&[("n", "4"), ("m", "9")])));
        assert!(!s.matches(&labels(&[("n", "3"), ("m", "9")])));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn syntax_errors_are_reported() {
        for bad in [
            "a in b", "a in (b", "=b", "a=b=c", "a b", "-a=b", "a=-b", "a,", "a>b", "a/b/c=d",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn field_selectors() {
        let obj = json!({
            "metadata": {"name": "s1", "namespace": "ns"},
            "type": "Opaque",
            "involvedObject": {"name": "pod-1"},
            "spec": {"replicas": 3}
        });
        let s = FieldSelector::parse("metadata.name=s1,metadata.namespace!=other").unwrap();
        assert!(s.matches(&obj));
        assert!(FieldSelector::parse("type==Opaque").unwrap().matches(&obj));
        assert!(
            !FieldSelector::parse("type=kubernetes.io/tls")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("involvedObject.name=pod-1")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("spec.replicas=3")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName!=")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("").unwrap().matches(&obj));
        assert!(FieldSelector::parse("metadata.name").is_err());
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(s.requirements[0].value, "a,b");
    }
}
