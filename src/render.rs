//! Pure data transformations: source Secret → desired OKMS data (canonical JSON object), and an
//! OKMS version's JSON → target Secret data. No I/O; error messages name keys, never values.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::crd::{SourceEncoding, Target, TargetDecoding};
use crate::error::Error;

/// The OKMS limit on a version's serialized data.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// Compact JSON with object keys sorted at every depth: equal data, equal bytes.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut keys_sorted = sorted(value);
    // serde_json keeps insertion order only with `preserve_order`; either way keys are sorted now.
    let text = serde_json::to_string(&keys_sorted).unwrap_or_default();
    keys_sorted.take();
    text
}

/// Checks the 64 KB limit on the canonical serialization and returns it.
pub fn checked_canonical(data: &Map<String, Value>) -> Result<String, Error> {
    let text = canonical_json(&Value::Object(data.clone()));
    if text.len() > MAX_DATA_BYTES {
        return Err(Error::DataTooLarge {
            size: text.len(),
            limit: MAX_DATA_BYTES,
        });
    }
    Ok(text)
}

/// Desired data from a source Secret's `data`: each (selected) key becomes a JSON string.
pub fn desired_from_secret(
    secret_data: &BTreeMap<String, Vec<u8>>,
    keys: Option<&[String]>,
    encoding: SourceEncoding,
    secret_name: &str,
) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    let selected: Vec<&String> = match keys {
        Some(keys) => {
            for k in keys {
                if !secret_data.contains_key(k) {
                    return Err(Error::InvalidSpec(format!(
                        "source Secret {secret_name:?} has no key {k:?} (listed in spec.source.secretRef.keys)"
                    )));
                }
            }
            keys.iter().collect()
        }
        None => secret_data.keys().collect(),
    };
    for k in selected {
        let bytes = &secret_data[k];
        let text = match encoding {
            SourceEncoding::Text => String::from_utf8(bytes.clone()).map_err(|_| {
                Error::InvalidSpec(format!(
                    "source Secret {secret_name:?} key {k:?} is not UTF-8 text; set spec.source.secretRef.encoding: Base64 for binary values"
                ))
            })?,
            SourceEncoding::Base64 => B64.encode(bytes),
        };
        out.insert(k.clone(), Value::String(text));
    }
    Ok(out)
}

/// Limits on `spec.target.template` (README "Template limits"). A tenant controls both the
/// template and, mirror-only, the data, so every render must be bounded in time and memory.
pub mod limits {
    /// A template's source, per key.
    pub const SOURCE_BYTES_PER_KEY: usize = 64 * 1024;
    /// All templates' sources of one object together.
    pub const SOURCE_BYTES_TOTAL: usize = 256 * 1024;
    /// A Secret cannot exceed 1 MiB, so neither can one rendered key, nor all of them together.
    pub const OUTPUT_BYTES_TOTAL: usize = 1024 * 1024;
    /// The largest value a template may build (checked before rendering, from the data's sizes).
    pub const VALUE_BYTES: u64 = 1024 * 1024;
    /// Bytes all the template's operations of one object may build, times the loops around them.
    pub const WORK_BYTES: u64 = 16 * 1024 * 1024;
    /// minijinja instructions per key, and for all keys of one object together.
    pub const FUEL_PER_KEY: u64 = 100_000;
    pub const FUEL_TOTAL: u64 = 400_000;
    /// Renders running at once on the blocking pool: a bomb cannot take every blocking thread.
    pub const CONCURRENT_RENDERS: usize = 2;
}

/// Renders on tokio's blocking pool, at most [`limits::CONCURRENT_RENDERS`] at a time, so a
/// template that is slow within its limits never holds a runtime thread. Without a template the
/// rendering is a copy and stays inline.
pub async fn render_target_off_runtime(
    data: &Map<String, Value>,
    target: &Target,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    static SLOTS: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(limits::CONCURRENT_RENDERS);
    if target.template.as_ref().is_none_or(|t| t.is_empty()) {
        return render_target(data, target);
    }
    // the semaphore is never closed; a closed one would only mean "render inline"
    let _slot = SLOTS.acquire().await.ok();
    let (data, target) = (data.clone(), target.clone());
    tokio::task::spawn_blocking(move || render_target(&data, &target))
        .await
        .unwrap_or_else(|_| {
            Err(Error::InvalidSpec(
                "spec.target.template: rendering stopped unexpectedly".to_string(),
            ))
        })
}

/// Target Secret data rendered from a version's JSON object.
pub fn render_target(
    data: &Map<String, Value>,
    target: &Target,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut out = match &target.template {
        Some(templates) if !templates.is_empty() => render_templates(data, templates)?,
        _ => data
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => canonical_json(other),
                };
                (key.clone(), text.into_bytes())
            })
            .collect(),
    };
    if target.decoding.unwrap_or_default() == TargetDecoding::Base64 {
        for (key, value) in out.iter_mut() {
            let text = std::str::from_utf8(value).map_err(|_| not_base64(key))?;
            *value = B64.decode(text.trim()).map_err(|_| not_base64(key))?;
        }
    }
    for key in out.keys() {
        if !is_valid_secret_key(key) {
            return Err(Error::InvalidSpec(format!(
                "{key:?} is not a valid Secret key (letters, digits, '-', '_', '.')"
            )));
        }
    }
    Ok(out)
}

/// Checks that every template parses and uses only what templates may use, without data
/// (validation before any remote call). Every broken key is reported.
pub fn check_templates(target: &Target) -> Result<(), Error> {
    let templates = match &target.template {
        Some(t) if !t.is_empty() => t,
        _ => return Ok(()),
    };
    let mut broken = Vec::new();
    if let Err(msg) = check_source_sizes(templates) {
        broken.push(msg);
    }
    for (key, source) in templates {
        if source.len() > limits::SOURCE_BYTES_PER_KEY {
            continue; // reported by check_source_sizes
        }
        let result = parse(source).and_then(|ast| {
            let mut work = 0;
            Analyzer::new(None, &mut work).stmt(&ast)
        });
        if let Err(msg) = result {
            broken.push(format!("spec.target.template[{key:?}]: {msg}"));
        }
    }
    into_result(broken)
}

fn into_result(broken: Vec<String>) -> Result<(), Error> {
    if broken.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec(broken.join("; ")))
    }
}

fn check_source_sizes(templates: &BTreeMap<String, String>) -> Result<(), String> {
    let too_long: Vec<String> = templates
        .iter()
        .filter(|(_, s)| s.len() > limits::SOURCE_BYTES_PER_KEY)
        .map(|(k, s)| format!("{k:?} ({} bytes)", s.len()))
        .collect();
    if !too_long.is_empty() {
        return Err(format!(
            "spec.target.template: templates longer than {} bytes: {}",
            limits::SOURCE_BYTES_PER_KEY,
            too_long.join(", ")
        ));
    }
    let total: usize = templates.values().map(String::len).sum();
    if total > limits::SOURCE_BYTES_TOTAL {
        return Err(format!(
            "spec.target.template: the templates hold {total} bytes together; the limit is {}",
            limits::SOURCE_BYTES_TOTAL
        ));
    }
    Ok(())
}

/// Every key, each within the limits; the error lists every broken key, by kind and line only.
fn render_templates(
    data: &Map<String, Value>,
    templates: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    check_source_sizes(templates).map_err(Error::InvalidSpec)?;
    let ctx = minijinja::Value::from_serialize(data);
    let mut env = template_environment();
    let mut out = BTreeMap::new();
    let mut broken = Vec::new();
    let mut fuel_left = limits::FUEL_TOTAL;
    let mut work = 0;
    let mut output_left = limits::OUTPUT_BYTES_TOTAL;
    for (key, source) in templates {
        let fuel = limits::FUEL_PER_KEY.min(fuel_left);
        let result = parse(source)
            .and_then(|ast| Analyzer::new(Some(data), &mut work).stmt(&ast))
            .and_then(|()| render_one(&mut env, source, data, &ctx, fuel, output_left));
        match result {
            Ok((text, used)) => {
                fuel_left -= used.min(fuel_left);
                output_left -= text.len();
                out.insert(key.clone(), text);
            }
            Err(msg) => {
                fuel_left -= fuel;
                broken.push(format!("spec.target.template[{key:?}]: {msg}"));
            }
        }
    }
    into_result(broken)?;
    Ok(out)
}

/// One key: the rendered bytes and the fuel they took, or a message free of data.
fn render_one(
    env: &mut minijinja::Environment<'static>,
    source: &str,
    data: &Map<String, Value>,
    ctx: &minijinja::Value,
    fuel: u64,
    output_left: usize,
) -> Result<(Vec<u8>, u64), String> {
    let shared_fuel_out = || {
        format!(
            "the templates of this object together need more than {} steps",
            limits::FUEL_TOTAL
        )
    };
    if fuel == 0 {
        return Err(shared_fuel_out());
    }
    env.set_fuel(Some(fuel));
    let tmpl = env
        .template_from_str(source)
        .map_err(|e| syntax_error(&e))?;
    let mut sink = BoundedWriter {
        buf: Vec::new(),
        limit: output_left,
        exceeded: false,
    };
    let captured = tmpl.render_captured_to(ctx, &mut sink);
    if sink.exceeded {
        return Err(format!(
            "the rendered Secret would exceed {} bytes",
            limits::OUTPUT_BYTES_TOTAL
        ));
    }
    match captured {
        Ok(captured) => {
            let used = captured
                .state()
                .fuel_levels()
                .map_or(fuel, |(used, _)| used);
            Ok((sink.buf, used))
        }
        Err(e) if e.kind() == ErrorKind::OutOfFuel && fuel < limits::FUEL_PER_KEY => {
            Err(shared_fuel_out())
        }
        Err(e) => Err(runtime_error(&e, &tmpl, data)),
    }
}

/// Collects output and fails the render as soon as it passes `limit`.
struct BoundedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The template environment: strict about undefined keys (a typo is an error, not an empty
/// string), with `b64encode`/`b64decode` filters for Secret formats that embed base64 (docker
/// `auth`), on top of minijinja's built-in filters (`tojson`, `urlencode`, …). Which of them a
/// template may use is decided by [`Analyzer`].
fn template_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_recursion_limit(100);
    env.set_fuel(Some(limits::FUEL_PER_KEY));
    env.add_filter("b64encode", |value: String| B64.encode(value));
    env.add_filter(
        "b64decode",
        |value: String| -> Result<String, minijinja::Error> {
            let bytes = B64
                .decode(value.trim())
                .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, B64_INVALID))?;
            String::from_utf8(bytes)
                .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, B64_NOT_UTF8))
        },
    );
    env
}

use minijinja::ErrorKind;
use minijinja::machinery::{Span, ast};

const B64_INVALID: &str = "b64decode: not valid base64";
const B64_NOT_UTF8: &str = "b64decode: not UTF-8 text";

fn parse(source: &str) -> Result<ast::Stmt<'_>, String> {
    minijinja::machinery::parse(source, "template", Default::default(), Default::default())
        .map_err(|e| syntax_error(&e))
}

/// A parse error: the parser sees only the template source (the spec), never data, so its
/// detail ("expected end of variable block") is safe and useful.
fn syntax_error(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if e.kind() == ErrorKind::SyntaxError
        && let Some(detail) = e.detail()
    {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    with_line(msg, e.line())
}

/// A render error reduced to its kind and line: minijinja's details quote evaluated values
/// (`tried to include non-existing template "<value>"`, the operands of `//`). An undefined
/// variable is named from the template's source, compared with the data's keys.
fn runtime_error(
    e: &minijinja::Error,
    tmpl: &minijinja::Template<'_, '_>,
    data: &Map<String, Value>,
) -> String {
    let msg = match e.kind() {
        ErrorKind::UndefinedError => {
            let missing = missing_variables(tmpl, data);
            if missing.is_empty() {
                "undefined value".to_string()
            } else {
                format!("undefined variable {}", missing.join(", "))
            }
        }
        ErrorKind::OutOfFuel => format!(
            "the template needs more than {} steps",
            limits::FUEL_PER_KEY
        ),
        // our own filters' messages are constants
        kind => match e.detail() {
            Some(d @ (B64_INVALID | B64_NOT_UTF8)) => d.to_string(),
            _ => kind.to_string(),
        },
    };
    with_line(msg, e.line())
}

fn with_line(mut msg: String, line: Option<usize>) -> String {
    if let Some(line) = line {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

/// Names (and dotted paths) the source uses that the data does not have, quoted, sorted.
fn missing_variables(tmpl: &minijinja::Template<'_, '_>, data: &Map<String, Value>) -> Vec<String> {
    let mut missing: Vec<String> = tmpl
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut parts = path.split('.');
            let first = parts.next().unwrap_or_default();
            if GLOBALS.contains(&first) && !data.contains_key(first) {
                return false;
            }
            let mut at = data.get(first);
            for part in parts {
                at = at.and_then(|v| v.get(part));
            }
            at.is_none()
        })
        .map(|path| format!("{path:?}"))
        .collect();
    missing.sort();
    missing
}

/// minijinja's global functions, which `undeclared_variables` lists like any name.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "loop"];

/// Upper bounds of a value, computed before rendering. minijinja bounds instructions (fuel) but
/// not what one instruction allocates: `"x" * 100000000` is one instruction, `{% set a = a ~ a %}`
/// doubles per instruction, `replace`/`indent`/`center`/`format`/`join` multiply. So the
/// template's AST is walked with the real data's sizes, and a template that could build a value
/// over [`limits::VALUE_BYTES`], or do more than [`limits::WORK_BYTES`] of building, is refused.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Size {
    /// rendered bytes (containers: their parts plus one per item)
    bytes: u64,
    /// items when iterated
    items: u64,
    /// bytes of one item
    item: u64,
    /// renders as at most `bytes` (a string or scalar, not a container's repr)
    flat: bool,
    /// each item is flat
    item_flat: bool,
}

/// A container's repr escapes and quotes its strings (`"\u{1}"`): at most this many times its
/// bytes.
const REPR_FACTOR: u64 = 12;
const SCALAR: Size = Size {
    bytes: 32,
    items: 32,
    item: 32,
    flat: true,
    item_flat: true,
};

impl Size {
    fn opaque(bytes: u64) -> Size {
        Size {
            bytes,
            items: bytes,
            item: bytes,
            flat: false,
            item_flat: false,
        }
    }
    fn flat(bytes: u64) -> Size {
        Size {
            bytes,
            items: bytes,
            item: 4,
            flat: true,
            item_flat: true,
        }
    }
    /// bytes when written out or concatenated
    fn rendered(&self) -> u64 {
        if self.flat {
            self.bytes
        } else {
            self.bytes.saturating_mul(REPR_FACTOR).saturating_add(2)
        }
    }
    fn element(&self) -> Size {
        Size {
            bytes: self.item,
            items: self.item,
            item: self.item,
            flat: self.item_flat,
            item_flat: false,
        }
    }
    fn max(self, o: Size) -> Size {
        Size {
            bytes: self.bytes.max(o.bytes),
            items: self.items.max(o.items),
            item: self.item.max(o.item),
            flat: self.flat && o.flat,
            item_flat: self.item_flat && o.item_flat,
        }
    }
}

/// What the analysis knows of a value: a piece of the data itself, or only bounds.
#[derive(Clone, Copy)]
enum Abs<'d> {
    Known(&'d Value),
    Bound(Size),
}

fn json_size(v: &Value) -> Size {
    match v {
        Value::String(s) => Size::flat(s.len() as u64),
        Value::Array(items) => {
            let sizes: Vec<Size> = items.iter().map(json_size).collect();
            Size {
                bytes: sizes.iter().map(|s| s.bytes).sum::<u64>() + sizes.len() as u64,
                items: sizes.len() as u64,
                item: sizes.iter().map(|s| s.bytes).max().unwrap_or(0),
                flat: false,
                item_flat: sizes.iter().all(|s| s.flat),
            }
        }
        Value::Object(map) => Size {
            bytes: map
                .iter()
                .map(|(k, v)| k.len() as u64 + json_size(v).bytes + 1)
                .sum(),
            items: map.len() as u64,
            item: map.keys().map(|k| k.len() as u64).max().unwrap_or(0),
            flat: false,
            item_flat: true,
        },
        _ => SCALAR,
    }
}

fn const_size(v: &minijinja::Value) -> Size {
    match v.as_str() {
        Some(s) => Size::flat(s.len() as u64),
        None if matches!(
            v.kind(),
            minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map
        ) =>
        {
            let len = v.len().unwrap_or(0) as u64;
            let mut s = Size::opaque(v.to_string().len() as u64 + len);
            s.items = len;
            s
        }
        None => SCALAR,
    }
}

struct Analyzer<'d, 'w> {
    /// `None`: validation before the data is known
    data: Option<&'d Map<String, Value>>,
    scopes: Vec<Vec<(String, Abs<'d>)>>,
    /// iterations of the loops around the current node
    repeat: u64,
    in_loop: bool,
    /// shared by all keys of one object
    work: &'w mut u64,
    /// sizes of data values by address, each computed once however often it is used
    memo: std::collections::HashMap<usize, Size>,
}

type Refusal = String;

fn refuse(span: Span, what: impl std::fmt::Display) -> Refusal {
    format!("{what} (line {})", span.start_line)
}

impl<'d, 'w> Analyzer<'d, 'w> {
    fn new(data: Option<&'d Map<String, Value>>, work: &'w mut u64) -> Self {
        Analyzer {
            data,
            scopes: vec![Vec::new()],
            repeat: 1,
            in_loop: false,
            work,
            memo: std::collections::HashMap::new(),
        }
    }

    fn size(&mut self, v: Abs<'d>) -> Size {
        match v {
            Abs::Bound(s) => s,
            Abs::Known(v) => *self
                .memo
                .entry(v as *const Value as usize)
                .or_insert_with(|| json_size(v)),
        }
    }

    /// Checks a value the template builds, and counts building it as work.
    /// Without data every data value counts as empty: the bounds are lower than with data, so
    /// what is refused then is refused with any data (`"x" * 100000000` is found at validation).
    fn built(&mut self, span: Span, size: Size) -> Result<Abs<'d>, Refusal> {
        let bytes = size.bytes;
        if bytes > limits::VALUE_BYTES {
            return Err(refuse(
                span,
                format_args!(
                    "this expression could build a value of {bytes} bytes; the limit is {}",
                    limits::VALUE_BYTES
                ),
            ));
        }
        self.charge(span, bytes)?;
        Ok(Abs::Bound(size))
    }

    fn charge(&mut self, span: Span, bytes: u64) -> Result<(), Refusal> {
        *self.work = self
            .work
            .saturating_add(bytes.max(1).saturating_mul(self.repeat));
        if *self.work > limits::WORK_BYTES {
            return Err(refuse(
                span,
                format_args!(
                    "the templates could build more than {} bytes (loops multiply)",
                    limits::WORK_BYTES
                ),
            ));
        }
        Ok(())
    }

    fn lookup(&mut self, name: &str) -> Abs<'d> {
        for scope in self.scopes.iter().rev() {
            if let Some((_, v)) = scope.iter().rev().find(|(n, _)| n == name) {
                return *v;
            }
        }
        match self.data.and_then(|d| d.get(name)) {
            Some(v) => Abs::Known(v),
            // undefined (a strict error when rendered) or unknown without data
            None => Abs::Bound(Size::default()),
        }
    }

    fn bind(&mut self, target: &ast::Expr<'_>, value: Abs<'d>, what: &str) -> Result<(), Refusal> {
        match target {
            ast::Expr::Var(v) => {
                let scope = self.scopes.last_mut().expect("a scope always exists");
                scope.push((v.id.to_string(), value));
                Ok(())
            }
            ast::Expr::List(l) => {
                // unpacking: each name gets one item of the value
                let size = self.size(value);
                let mut item = Size::opaque(size.bytes);
                item.flat = size.item_flat;
                for name in &l.items {
                    self.bind(name, Abs::Bound(item), what)?;
                }
                Ok(())
            }
            other => Err(refuse(
                expr_span(other),
                format_args!("{what} can assign only to names"),
            )),
        }
    }

    fn body(&mut self, stmts: &[ast::Stmt<'_>]) -> Result<(), Refusal> {
        stmts.iter().try_for_each(|s| self.stmt(s))
    }

    fn stmt(&mut self, stmt: &ast::Stmt<'_>) -> Result<(), Refusal> {
        use ast::Stmt as S;
        match stmt {
            S::Template(t) => self.body(&t.children),
            S::EmitRaw(r) => self.charge(r.span(), r.raw.len() as u64),
            S::EmitExpr(e) => {
                let v = self.expr(&e.expr)?;
                let out = self.size(v).rendered();
                self.charge(e.span(), out)
            }
            S::IfCond(c) => {
                self.expr(&c.expr)?;
                self.body(&c.true_body)?;
                self.body(&c.false_body)
            }
            S::ForLoop(f) => {
                if f.recursive {
                    return Err(refuse(f.span(), "recursive loops are not available"));
                }
                let iter = self.expr(&f.iter)?;
                let size = self.size(iter);
                let element = match iter {
                    Abs::Known(Value::Array(items)) => {
                        items.iter().map(json_size).fold(Size::default(), Size::max)
                    }
                    _ => size.element(),
                };
                self.charge(f.span(), size.items)?;
                let (repeat, in_loop) = (self.repeat, self.in_loop);
                self.repeat = repeat.saturating_mul(size.items.max(1));
                self.in_loop = true;
                self.scopes.push(Vec::new());
                let result = (|| {
                    self.bind(&f.target, Abs::Bound(element), "a for loop")?;
                    self.scopes.last_mut().expect("pushed above").push((
                        "loop".to_string(),
                        Abs::Bound(Size::opaque(size.bytes + 64)),
                    ));
                    if let Some(filter) = &f.filter_expr {
                        self.expr(filter)?;
                    }
                    self.body(&f.body)
                })();
                self.scopes.pop();
                self.repeat = repeat;
                self.in_loop = in_loop;
                result?;
                self.body(&f.else_body)
            }
            S::Set(s) => {
                if self.in_loop {
                    // a loop could feed the value back into itself, doubling it per iteration
                    return Err(refuse(s.span(), "`set` inside a for loop is not available"));
                }
                let v = self.expr(&s.expr)?;
                let v = Abs::Bound(self.size(v));
                self.bind(&s.target, v, "`set`")
            }
            S::WithBlock(w) => {
                let mut bound = Vec::new();
                for (target, value) in &w.assignments {
                    let v = self.expr(value)?;
                    bound.push((target, Abs::Bound(self.size(v))));
                }
                self.scopes.push(Vec::new());
                let result = bound
                    .into_iter()
                    .try_for_each(|(t, v)| self.bind(t, v, "`with`"))
                    .and_then(|()| self.body(&w.body));
                self.scopes.pop();
                result
            }
            S::AutoEscape(a) => {
                self.expr(&a.enabled)?;
                self.body(&a.body)
            }
            S::SetBlock(s) => Err(refuse(
                s.span(),
                "`{% set %}…{% endset %}` blocks are not available",
            )),
            S::FilterBlock(s) => Err(refuse(s.span(), "`{% filter %}` blocks are not available")),
            S::Macro(s) => Err(refuse(s.span(), "macros are not available")),
            S::CallBlock(s) => Err(refuse(s.span(), "macros are not available")),
            S::Do(s) => Err(refuse(s.span(), "`{% do %}` is not available")),
            S::Include(s) => Err(refuse(s.span(), LOADING)),
            S::Import(s) => Err(refuse(s.span(), LOADING)),
            S::FromImport(s) => Err(refuse(s.span(), LOADING)),
            S::Extends(s) => Err(refuse(s.span(), LOADING)),
            S::Block(s) => Err(refuse(s.span(), LOADING)),
            #[allow(unreachable_patterns)]
            _ => Err("a statement that is not available in templates".to_string()),
        }
    }

    fn expr(&mut self, expr: &ast::Expr<'_>) -> Result<Abs<'d>, Refusal> {
        use ast::Expr as E;
        match expr {
            E::Var(v) => Ok(self.lookup(v.id)),
            E::Const(c) => Ok(Abs::Bound(const_size(&c.value))),
            E::GetAttr(g) => {
                let base = self.expr(&g.expr)?;
                Ok(match base {
                    Abs::Known(Value::Object(map)) => match map.get(g.name) {
                        Some(v) => Abs::Known(v),
                        None => Abs::Bound(Size::default()),
                    },
                    Abs::Known(_) => Abs::Bound(Size::default()),
                    Abs::Bound(s) => Abs::Bound(Size::opaque(s.bytes)),
                })
            }
            E::GetItem(g) => self.get_item(g),
            E::Slice(s) => {
                let base = self.expr(&s.expr)?;
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part)?;
                }
                let size = self.size(base);
                self.built(s.span(), size)
            }
            E::UnaryOp(u) => {
                self.expr(&u.expr)?;
                Ok(Abs::Bound(SCALAR))
            }
            E::Compare(c) => {
                self.expr(&c.expr)?;
                for op in &c.ops {
                    self.expr(&op.expr)?;
                }
                Ok(Abs::Bound(SCALAR))
            }
            E::Test(t) => {
                self.expr(&t.expr)?;
                self.args(&t.args)?;
                Ok(Abs::Bound(SCALAR))
            }
            E::IfExpr(i) => {
                self.expr(&i.test_expr)?;
                let a = self.expr(&i.true_expr)?;
                let a = self.size(a);
                let b = match &i.false_expr {
                    Some(e) => {
                        let b = self.expr(e)?;
                        self.size(b)
                    }
                    None => Size::default(),
                };
                Ok(Abs::Bound(a.max(b)))
            }
            E::BinOp(b) => self.bin_op(b),
            E::Filter(f) => self.filter(f),
            E::Call(c) => self.call(c),
            E::List(l) => self.list(l),
            E::Map(m) => self.map(m),
        }
    }

    /// `base[subscript]`: the known value when both are known, else a bound of the base's size.
    fn get_item(&mut self, g: &ast::Spanned<ast::GetItem<'_>>) -> Result<Abs<'d>, Refusal> {
        let base = self.expr(&g.expr)?;
        self.expr(&g.subscript_expr)?;
        let known = match (&base, &g.subscript_expr) {
            (Abs::Known(v), ast::Expr::Const(c)) => {
                if let Some(k) = c.value.as_str() {
                    Some(v.get(k))
                } else {
                    c.value
                        .as_i64()
                        .map(|i| usize::try_from(i).ok().and_then(|i| v.get(i)))
                }
            }
            _ => None,
        };
        Ok(match known {
            Some(Some(v)) => Abs::Known(v),
            _ => {
                let s = self.size(base);
                Abs::Bound(Size::opaque(s.bytes))
            }
        })
    }

    /// A list literal: the sum of its items' sizes.
    fn list(&mut self, l: &ast::Spanned<ast::List<'_>>) -> Result<Abs<'d>, Refusal> {
        let mut total = Size {
            items: l.items.len() as u64,
            item_flat: true,
            ..Size::default()
        };
        for item in &l.items {
            let v = self.expr(item)?;
            let s = self.size(v);
            total.bytes = total.bytes.saturating_add(s.bytes + 1);
            total.item = total.item.max(s.bytes);
            total.item_flat &= s.flat;
        }
        self.built(l.span(), total)
    }

    /// A map literal: the sum of its keys' and values' sizes.
    fn map(&mut self, m: &ast::Spanned<ast::Map<'_>>) -> Result<Abs<'d>, Refusal> {
        let mut bytes = 0u64;
        let mut item = 0u64;
        for (k, v) in m.keys.iter().zip(&m.values) {
            let k = self.expr(k)?;
            let k = self.size(k);
            let v = self.expr(v)?;
            let v = self.size(v);
            bytes = bytes.saturating_add(k.bytes + v.bytes + 1);
            item = item.max(k.bytes);
        }
        let mut size = Size::opaque(bytes);
        (size.items, size.item) = (m.keys.len() as u64, item);
        self.built(m.span(), size)
    }

    fn bin_op(&mut self, b: &ast::Spanned<ast::BinOp<'_>>) -> Result<Abs<'d>, Refusal> {
        use ast::BinOpKind as K;
        let l = self.expr(&b.left)?;
        let l = self.size(l);
        let r = self.expr(&b.right)?;
        let r = self.size(r);
        let size = match b.op {
            K::Concat => Size::flat(l.rendered().saturating_add(r.rendered())),
            K::Add => Size {
                bytes: l.bytes.saturating_add(r.bytes),
                items: l.items.saturating_add(r.items),
                item: l.item.max(r.item),
                flat: l.flat && r.flat,
                item_flat: l.item_flat && r.item_flat,
            },
            K::Mul => {
                // string and list repetition: minijinja allocates up to 100 MB in one step
                let n = match (literal_int(&b.left), literal_int(&b.right)) {
                    (_, Some(n)) => (n, l),
                    (Some(n), None) => (n, r),
                    (None, None) => {
                        return Err(refuse(b.span(), "`*` needs a literal number on one side"));
                    }
                };
                let (n, other) = n;
                Size {
                    bytes: other.bytes.saturating_mul(n).max(SCALAR.bytes),
                    items: other.items.saturating_mul(n),
                    item: other.item,
                    flat: other.flat,
                    item_flat: other.item_flat,
                }
            }
            K::ScAnd | K::ScOr => l.max(r),
            K::Sub | K::Div | K::FloorDiv | K::Rem | K::Pow => SCALAR,
            K::Eq | K::Ne | K::Lt | K::Lte | K::Gt | K::Gte | K::In => {
                return Ok(Abs::Bound(SCALAR));
            }
        };
        self.built(b.span(), size)
    }

    fn args(&mut self, args: &[ast::CallArg<'_>]) -> Result<Vec<Size>, Refusal> {
        let mut sizes = Vec::new();
        for arg in args {
            let e = match arg {
                ast::CallArg::Pos(e) | ast::CallArg::Kwarg(_, e) => e,
                ast::CallArg::PosSplat(e) | ast::CallArg::KwargSplat(e) => {
                    return Err(refuse(
                        expr_span(e),
                        "`*args` and `**kwargs` are not available",
                    ));
                }
            };
            let v = self.expr(e)?;
            sizes.push(self.size(v));
        }
        Ok(sizes)
    }

    fn filter(&mut self, f: &ast::Spanned<ast::Filter<'_>>) -> Result<Abs<'d>, Refusal> {
        let input = match &f.expr {
            Some(e) => self.expr(e)?,
            None => Abs::Bound(Size::default()),
        };
        let x = self.size(input);
        let args = self.args(&f.args)?;
        let arg = |i: usize| args.get(i).copied().unwrap_or_default();
        let r = x.rendered();
        let size = match f.name {
            "safe" => x,
            "trim" | "b64decode" | "string" => Size::flat(r),
            "lower" | "upper" | "title" | "capitalize" => Size::flat(r.saturating_mul(3)),
            "b64encode" => Size::flat(r.saturating_mul(4) / 3 + 4),
            "urlencode" => Size::flat(r.saturating_mul(3)),
            "escape" | "e" => Size::flat(r.saturating_mul(6)),
            "tojson" if args.is_empty() => Size::flat(x.bytes.saturating_mul(8).saturating_add(2)),
            "length" | "count" | "int" | "float" | "abs" | "round" | "bool" => SCALAR,
            "default" | "d" => x.max(arg(0)),
            "first" | "last" => match input {
                Abs::Known(Value::Array(items)) => {
                    items.iter().map(json_size).fold(Size::default(), Size::max)
                }
                _ => x.element(),
            },
            "join" => {
                let items = if x.item_flat {
                    x.bytes
                } else {
                    x.bytes.saturating_mul(REPR_FACTOR)
                };
                Size::flat(items.saturating_add(x.items.saturating_mul(arg(0).rendered())))
            }
            "replace" => {
                Size::flat(r.saturating_add(r.saturating_add(1).saturating_mul(arg(1).rendered())))
            }
            "indent" => {
                let width = match f.args.first() {
                    Some(ast::CallArg::Pos(ast::Expr::Const(c))) => c
                        .value
                        .as_str()
                        .map(|s| s.len() as u64)
                        .or_else(|| c.value.as_i64().and_then(|n| u64::try_from(n).ok())),
                    _ => None,
                };
                let Some(width) = width else {
                    return Err(refuse(f.span(), "`indent` needs a literal width"));
                };
                Size::flat(r.saturating_add(r.saturating_add(1).saturating_mul(width)))
            }
            "items" | "dictsort" => {
                let item = match input {
                    Abs::Known(Value::Object(map)) => map
                        .iter()
                        .map(|(k, v)| k.len() as u64 + json_size(v).bytes + 2)
                        .max()
                        .unwrap_or(0),
                    _ => x.bytes,
                };
                Size {
                    bytes: x.bytes.saturating_add(x.items.saturating_mul(2)),
                    items: x.items,
                    item,
                    flat: false,
                    item_flat: false,
                }
            }
            "list" | "reverse" | "sort" | "unique" => Size {
                bytes: x.bytes.saturating_add(x.items),
                flat: false,
                ..x
            },
            "tojson" => return Err(refuse(f.span(), "`tojson` takes no arguments here")),
            other => {
                return Err(refuse(
                    f.span(),
                    format_args!("filter `{other}` is not available in templates"),
                ));
            }
        };
        self.built(f.span(), size)
    }

    fn call(&mut self, c: &ast::Spanned<ast::Call<'_>>) -> Result<Abs<'d>, Refusal> {
        let is_range = matches!(&c.expr, ast::Expr::Var(v) if v.id == "range");
        if !is_range {
            return Err(refuse(
                c.span(),
                "function and method calls are not available in templates (except `range`)",
            ));
        }
        self.args(&c.args)?;
        let ints: Option<Vec<i64>> = c
            .args
            .iter()
            .map(|a| match a {
                ast::CallArg::Pos(e) => literal_int(e).map(|n| n as i64),
                _ => None,
            })
            .collect();
        // minijinja refuses ranges over 100 000 items
        let count = match ints.as_deref() {
            Some([n]) => (*n).max(0) as u64,
            Some([a, b]) => (b - a).max(0) as u64,
            _ => 100_000,
        }
        .min(100_000);
        let size = Size {
            bytes: count.saturating_mul(8),
            items: count,
            item: 8,
            flat: false,
            item_flat: true,
        };
        self.built(c.span(), size)
    }
}

const LOADING: &str = "templates cannot load other templates (include, import, extends, block)";

fn literal_int(e: &ast::Expr<'_>) -> Option<u64> {
    match e {
        ast::Expr::Const(c) => c.value.as_i64().and_then(|n| u64::try_from(n).ok()),
        _ => None,
    }
}

fn expr_span(e: &ast::Expr<'_>) -> Span {
    use ast::Expr as E;
    match e {
        E::Var(s) => s.span(),
        E::Const(s) => s.span(),
        E::Slice(s) => s.span(),
        E::UnaryOp(s) => s.span(),
        E::BinOp(s) => s.span(),
        E::Compare(s) => s.span(),
        E::IfExpr(s) => s.span(),
        E::Filter(s) => s.span(),
        E::Test(s) => s.span(),
        E::GetAttr(s) => s.span(),
        E::GetItem(s) => s.span(),
        E::Call(s) => s.span(),
        E::List(s) => s.span(),
        E::Map(s) => s.span(),
    }
}

fn not_base64(key: &str) -> Error {
    Error::InvalidSpec(format!(
        "value of key {key:?} is not valid base64 (spec.target.decoding: Base64)"
    ))
}

fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [ {"d": 1, "c": 2} ], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }

    #[test]
    fn data_over_64k_is_refused() {
        let big = obj(json!({"k": "x".repeat(MAX_DATA_BYTES)}));
        assert!(matches!(
            checked_canonical(&big),
            Err(Error::DataTooLarge { .. })
        ));
        let ok = obj(json!({"k": "x".repeat(100)}));
        assert!(checked_canonical(&ok).is_ok());
    }

    #[test]
    fn source_text_and_base64_encodings() {
        let data = BTreeMap::from([
            ("user".to_string(), b"app".to_vec()),
            ("bin".to_string(), vec![0xff, 0x00]),
        ]);
        let err = desired_from_secret(&data, None, SourceEncoding::Text, "src").unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidSpec);
        assert!(!err.to_string().contains('\u{ff}'));
        let only_user = desired_from_secret(
            &data,
            Some(&["user".to_string()]),
            SourceEncoding::Text,
            "src",
        )
        .unwrap();
        assert_eq!(Value::Object(only_user), json!({"user": "app"}));
        let b64 = desired_from_secret(&data, None, SourceEncoding::Base64, "src").unwrap();
        assert_eq!(b64["bin"], json!("/wA="));
        let missing = desired_from_secret(
            &data,
            Some(&["nope".to_string()]),
            SourceEncoding::Text,
            "src",
        );
        assert!(missing.is_err());
    }

    #[test]
    fn renders_keys_without_template() {
        let data = obj(json!({"user": "app", "port": 5432, "opts": {"ssl": true}}));
        let out = render_target(&data, &Target::default()).unwrap();
        assert_eq!(out["user"], b"app");
        assert_eq!(out["port"], b"5432");
        assert_eq!(out["opts"], br#"{"ssl":true}"#);
    }

    #[test]
    fn renders_templates_and_reports_missing_keys_without_values() {
        let data = obj(json!({"user": "app", "password": "s3cr3t-value"}));
        let target = Target {
            template: Some(BTreeMap::from([(
                "url".to_string(),
                "postgres://{{ user }}:{{ password }}@db".to_string(),
            )])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(out["url"], b"postgres://app:s3cr3t-value@db");
        assert_eq!(out.len(), 1);

        let missing = Target {
            template: Some(BTreeMap::from([(
                "url".to_string(),
                "{{ host }}:{{ password }}".to_string(),
            )])),
            ..Default::default()
        };
        let err = render_target(&data, &missing).unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidSpec);
        assert!(!err.to_string().contains("s3cr3t-value"), "{err}");
    }

    #[test]
    fn escaping_filters_for_urls_and_json() {
        let data = obj(json!({"password": "p@ss/w\"rd"}));
        let target = Target {
            template: Some(BTreeMap::from([
                (
                    "url".to_string(),
                    "postgres://app:{{ password | urlencode }}@db".to_string(),
                ),
                (
                    "json".to_string(),
                    "{\"pw\": {{ password | tojson }}}".to_string(),
                ),
            ])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(
            out["url"], b"postgres://app:p%40ss/w%22rd@db",
            "Jinja semantics: / is kept"
        );
        let parsed: Value = serde_json::from_slice(&out["json"]).unwrap();
        assert_eq!(parsed["pw"], "p@ss/w\"rd");
    }

    #[test]
    fn base64_filters_for_embedded_credentials() {
        let data = obj(json!({"user": "robot", "password": "p@ss"}));
        let target = Target {
            template: Some(BTreeMap::from([
                (
                    "auth".to_string(),
                    "{{ (user ~ ':' ~ password) | b64encode }}".to_string(),
                ),
                (
                    "back".to_string(),
                    "{{ 'cm9ib3Q=' | b64decode }}".to_string(),
                ),
            ])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(out["auth"], b"cm9ib3Q6cEBzcw==");
        assert_eq!(out["back"], b"robot");
    }

    #[test]
    fn template_syntax_errors_are_found_before_rendering() {
        let bad = Target {
            template: Some(BTreeMap::from([("k".to_string(), "{{ user ".to_string())])),
            ..Default::default()
        };
        assert_eq!(
            check_templates(&bad).unwrap_err().reason(),
            Reason::InvalidSpec
        );
        assert!(check_templates(&Target::default()).is_ok());
    }

    #[test]
    fn base64_decoding_round_trips_binary() {
        let data = obj(json!({"keystore": "/wA="}));
        let target = Target {
            decoding: Some(TargetDecoding::Base64),
            ..Default::default()
        };
        assert_eq!(
            render_target(&data, &target).unwrap()["keystore"],
            vec![0xff, 0x00]
        );
        let bad = obj(json!({"k": "%%%"}));
        assert!(render_target(&bad, &target).is_err());
    }

    #[test]
    fn invalid_secret_keys_are_refused() {
        let data = obj(json!({"bad key": "v"}));
        assert!(render_target(&data, &Target::default()).is_err());
    }

    const CANARY: &str = "CANARY-7f3a9c";
    const PIN: i64 = 987_654_321;

    fn canary_data() -> Map<String, Value> {
        obj(json!({
            "password": CANARY,
            "pin": PIN,
            "user": "app",
            "db": {"host": "db.local", "secret": CANARY},
            "hosts": ["a.local", "b.local", CANARY],
            "empty": {},
        }))
    }

    fn templated(pairs: &[(&str, &str)]) -> Target {
        Target {
            template: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn render_err(data: &Map<String, Value>, template: &str) -> String {
        match render_target(data, &templated(&[("k", template)])) {
            Ok(_) => panic!("{template} rendered"),
            Err(e) => {
                assert_eq!(e.reason(), Reason::InvalidSpec, "{template}: {e}");
                e.to_string()
            }
        }
    }

    fn assert_clean(msg: &str, context: &str) {
        for canary in [CANARY, &PIN.to_string(), "7f3a9c"] {
            assert!(!msg.contains(canary), "{context}: {msg}");
        }
    }

    /// Each class of bomb: refused before rendering or stopped by fuel/output limits, quickly,
    /// with the key named.
    #[test]
    fn template_bombs_are_refused_quickly() {
        let mut data = canary_data();
        data.insert("big".into(), json!("y".repeat(60_000)));
        data.insert("hundred".into(), json!("z".repeat(100)));
        let doubling = format!(
            "{{% set a = 'xxxxxxxx' %}}{}{{{{ a }}}}",
            "{% set a = a ~ a %}".repeat(40)
        );
        let nested_doubling = format!(
            "{{% for x in [big] %}}{}{{{{ x }}}}{}{{% endfor %}}",
            "{% for x in [x ~ x] %}".repeat(30),
            "{% endfor %}".repeat(30)
        );
        let bombs: Vec<(&str, String)> = vec![
            ("nested range loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}".into()),
            ("string repetition", "{{ \"x\" * 100000000 }}".into()),
            ("repetition by a variable", "{{ \"x\" * pin }}".into()),
            ("list repetition", "{{ ([password] * 100000000) | join }}".into()),
            ("doubling with set", doubling),
            ("doubling with nested loops", nested_doubling),
            ("replace amplification", "{{ big | replace(\"\", big) }}".into()),
            ("indent amplification", "{{ big | indent(100000) }}".into()),
            ("center", "{{ \"x\" | center(100000000) }}".into()),
            ("format width", "{{ \"%100000000s\" | format(\"x\") }}".into()),
            ("wordwrap", "{{ big | wordwrap(1) }}".into()),
            ("join of a big range", "{{ range(100000) | join(big) }}".into()),
            ("concat in a loop", "{% for i in range(100000) %}{{ big ~ big }}{% endfor %}".into()),
            ("output in a loop", "{% for i in range(100000) %}{{ big }}{% endfor %}".into()),
            ("long concat chain", format!("{{{{ big{} }}}}", " ~ big".repeat(40))),
            ("macro recursion", "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f(big) }}".into()),
            ("namespace accumulation", "{% set ns = namespace(s=big) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}".into()),
            ("set block capture", "{% set x %}{{ big }}{{ big }}{% endset %}{{ x }}".into()),
            ("include", "{% include password %}".into()),
            ("recursive loop", "{% for x in hosts recursive %}{{ loop(hosts) }}{% endfor %}".into()),
            ("fuel: many cheap steps", "{% for i in range(100000) %}{% if i %}{% endif %}{% endfor %}".into()),
            ("output limit", "{% for i in range(20000) %}{{ hundred }}{% endfor %}".into()),
        ];
        for (name, template) in bombs {
            let started = std::time::Instant::now();
            let err = render_err(&data, &template);
            let took = started.elapsed();
            assert!(
                took < std::time::Duration::from_secs(2),
                "{name}: took {took:?}"
            );
            assert!(err.contains("spec.target.template[\"k\"]"), "{name}: {err}");
            assert_clean(&err, name);
        }
    }

    #[test]
    fn limits_have_the_documented_messages() {
        let data = obj(json!({"hundred": "z".repeat(100)}));
        let fuel = render_err(
            &data,
            "{% for i in range(100000) %}{% if i %}{% endif %}{% endfor %}",
        );
        assert!(fuel.contains("more than 100000 steps"), "{fuel}");
        let out = render_err(
            &data,
            "{% for i in range(20000) %}{{ hundred }}{% endfor %}",
        );
        assert!(out.contains("exceed 1048576 bytes"), "{out}");
        let value = render_err(&data, "{{ \"x\" * 100000000 }}");
        assert!(value.contains("the limit is 1048576"), "{value}");
        let filter = render_err(&data, "{{ \"x\" | center(10) }}");
        assert!(
            filter.contains("filter `center` is not available"),
            "{filter}"
        );
        let long = "x".repeat(limits::SOURCE_BYTES_PER_KEY + 1);
        assert!(render_err(&data, &long).contains("longer than 65536 bytes"));

        // fuel is shared: five keys of 90 000 steps each exceed the 400 000 of one object
        let step = "{% for i in range(18000) %}{% if i %}{% endif %}{% endfor %}ok";
        let keys: Vec<(String, &str)> = (0..5).map(|i| (format!("k{i}"), step)).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        if let Err(e) = render_target(&data, &templated(&pairs[..1])) {
            panic!("one key: {e}");
        }
        let err = render_target(&data, &templated(&pairs))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("together need more than 400000 steps"),
            "{err}"
        );

        // outputs are bounded together too: two keys of 600 KB
        let data = obj(json!({"big": "y".repeat(60_000)}));
        let ten = "{% for i in range(10) %}{{ big }}{% endfor %}";
        assert!(render_target(&data, &templated(&[("a", ten)])).is_ok());
        let err = render_target(&data, &templated(&[("a", ten), ("b", ten)])).unwrap_err();
        assert!(
            err.to_string()
                .contains("[\"b\"]: the rendered Secret would exceed"),
            "{err}"
        );
    }

    #[test]
    fn ordinary_templates_still_render() {
        let data = obj(json!({
            "user": "app", "password": "p@ss", "host": "db", "port": 5432, "tls": true,
            "hosts": ["a", "b", "c"], "cfg": {"A": "1", "B": "2"},
            "cert": "-----BEGIN-----\nAAAA\n-----END-----",
        }));
        let cases = [
            (
                "postgres://{{ user }}:{{ password | urlencode }}@{{ host }}:{{ port }}/x",
                "postgres://app:p%40ss@db:5432/x",
            ),
            (
                "{% for h in hosts %}{{ h }}{% if not loop.last %},{% endif %}{% endfor %}",
                "a,b,c",
            ),
            ("{{ hosts | join(\",\") }}", "a,b,c"),
            (
                "{% for k, v in cfg | items %}{{ k }}={{ v }};{% endfor %}",
                "A=1;B=2;",
            ),
            (
                "{% for k, v in cfg | dictsort %}{{ k }}={{ v }};{% endfor %}",
                "A=1;B=2;",
            ),
            (
                "key: |\n  {{ cert | indent(2) }}",
                "key: |\n  -----BEGIN-----\n  AAAA\n  -----END-----",
            ),
            (
                "{{ \"-\" * 3 }}{{ port + 1 }}{{ port * 2 }}",
                "---543310864",
            ),
            (
                "{% set url = user ~ \"@\" ~ host %}{{ url | upper }}",
                "APP@DB",
            ),
            (
                "{% if tls %}on{% else %}off{% endif %}{{ hosts | length }}",
                "on3",
            ),
            ("{{ (user ~ ':' ~ password) | b64encode }}", "YXBwOnBAc3M="),
            ("{\"pw\": {{ password | tojson }}}", "{\"pw\": \"p@ss\"}"),
            (
                "{{ hosts[0] }}{{ hosts | first }}{{ hosts | last }}{{ cfg.A }}{{ cfg['B'] }}",
                "aac12",
            ),
            (
                "{% for i in range(3) %}{{ i }}{% endfor %}{{ missing | default('d') }}",
                "012d",
            ),
            (
                "{% with x = user %}{{ x }}{% endwith %}{{ password | replace('@', '%40') }}",
                "appp%40ss",
            ),
        ];
        for (template, want) in cases {
            let out = render_target(&data, &templated(&[("k", template)]))
                .unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(String::from_utf8_lossy(&out["k"]), want, "{template}");
            assert!(
                check_templates(&templated(&[("k", template)])).is_ok(),
                "{template}"
            );
        }
    }

    /// Every minijinja error kind a template can reach: minijinja's own message carries the
    /// canary (so the case is meaningful), ours does not.
    #[test]
    fn no_error_kind_carries_a_value() {
        let data = canary_data();
        let ctx = minijinja::Value::from_serialize(&data);
        let cases = [
            ("{% include password %}", ErrorKind::TemplateNotFound),
            ("{% extends password %}", ErrorKind::TemplateNotFound),
            ("{% import password as m %}", ErrorKind::TemplateNotFound),
            ("{{ pin // 0 }}", ErrorKind::InvalidOperation),
            ("{{ pin % 0 }}", ErrorKind::InvalidOperation),
            ("{{ password - 1 }}", ErrorKind::InvalidOperation),
            ("{{ password * password }}", ErrorKind::InvalidOperation),
            ("{{ password | int }}", ErrorKind::InvalidOperation),
            ("{{ range(password) }}", ErrorKind::InvalidOperation),
            ("{{ db[password] }}", ErrorKind::UndefinedError),
            ("{{ empty[password].x }}", ErrorKind::UndefinedError),
            (
                "{{ password | filter_named_like_nothing }}",
                ErrorKind::UnknownFilter,
            ),
            (
                "{% if password is nothing_like_this %}{% endif %}",
                ErrorKind::UnknownTest,
            ),
            (
                "{{ nothing_like_this(password) }}",
                ErrorKind::UnknownFunction,
            ),
            (
                "{{ password.nothing_like_this(password) }}",
                ErrorKind::UnknownMethod,
            ),
            (
                "{{ password | upper(password) }}",
                ErrorKind::TooManyArguments,
            ),
            ("{{ password | attr }}", ErrorKind::MissingArgument),
            (
                "{% for a, b in [password] %}{% endfor %}",
                ErrorKind::CannotUnpack,
            ),
            ("{{ password | b64decode }}", ErrorKind::InvalidOperation),
            (
                "{% for i in range(100000) %}{{ password }}{% endfor %}",
                ErrorKind::OutOfFuel,
            ),
        ];
        for (template, kind) in cases {
            let mut env = template_environment();
            env.set_fuel(Some(1000));
            let tmpl = env.template_from_str(template).unwrap();
            let e = tmpl.render(&ctx).unwrap_err();
            assert_eq!(e.kind(), kind, "{template}: {e:#}");
            let reduced = runtime_error(&e, &tmpl, &data);
            assert_clean(&reduced, template);
            assert!(
                reduced.contains(&kind.to_string())
                    || kind == ErrorKind::OutOfFuel
                    || kind == ErrorKind::UndefinedError
                    || reduced.starts_with("b64decode"),
                "{template}: {reduced}"
            );
            // through the public entry point too (refused before rendering, or reduced)
            assert_clean(&render_err(&data, template), template);
        }
        // syntax errors: parsed without data, their detail is kept; bad escapes too
        for (template, kind) in [
            ("{{ password ", ErrorKind::SyntaxError),
            ("{{ \"\\u12\" }}", ErrorKind::BadEscape),
        ] {
            let err = render_err(&data, template);
            assert!(err.contains(&kind.to_string()), "{template}: {err}");
            assert_clean(&err, template);
            assert!(check_templates(&templated(&[("k", template)])).is_err());
        }
        // the output limit
        let big = obj(json!({"password": CANARY.repeat(100_000)}));
        let err = render_err(&big, "{{ password }}{{ password }}");
        assert_clean(&err, "output limit");
    }

    #[test]
    fn every_broken_key_is_reported_with_its_missing_variable() {
        let data = canary_data();
        let target = templated(&[
            ("a", "{{ pasword }}"),
            ("b", "{{ db.hots }}:{{ db.host }}"),
            ("c", "{{ user }}"),
            ("d", "x\n{{ pin // 0 }}"),
        ]);
        let err = render_target(&data, &target).unwrap_err().to_string();
        assert!(
            err.contains(r#"spec.target.template["a"]: undefined variable "pasword" (line 1)"#),
            "{err}"
        );
        assert!(
            err.contains(r#"spec.target.template["b"]: undefined variable "db.hots" (line 1)"#),
            "{err}"
        );
        assert!(
            err.contains(r#"spec.target.template["d"]: invalid operation (line 2)"#),
            "{err}"
        );
        assert!(!err.contains("[\"c\"]"), "{err}");
        assert_clean(&err, "broken keys");

        let structural = templated(&[
            ("a", "{% include x %}"),
            ("b", "{{ x | center(3) }}"),
            ("c", "{{ x }}"),
        ]);
        let err = check_templates(&structural).unwrap_err().to_string();
        assert!(
            err.contains("[\"a\"]: templates cannot load")
                && err.contains("[\"b\"]: filter `center`"),
            "{err}"
        );
    }

    /// Arbitrary templates (built from template syntax, data names and bomb fragments) and data
    /// never panic, and each render is bounded in time.
    #[test]
    fn arbitrary_templates_and_data_never_panic() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            " for ",
            " in ",
            " endfor ",
            " if ",
            " else ",
            " endif ",
            " set ",
            " = ",
            " ~ ",
            " + ",
            " * ",
            " // ",
            " % ",
            " ** ",
            "|",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ".",
            ":",
            " and ",
            " or ",
            " not ",
            " is ",
            "range(",
            "100000",
            "0",
            "-1",
            "3",
            "\"x\"",
            "'",
            "\\",
            "\n",
            "password",
            "pin",
            "db",
            "hosts",
            "loop",
            "join",
            "replace",
            "indent",
            "center",
            "format",
            "upper",
            "items",
            "list",
            "b64encode",
            "b64decode",
            "tojson",
            "urlencode",
            "default",
            "first",
            "include",
            "macro",
            "endmacro",
            "namespace",
            "with",
            "endwith",
            "raw",
            "endraw",
            "x",
            "é",
            "\u{0}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            let n = rng.random_range(1..40);
            let template: String = (0..n)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            let mut data = canary_data();
            if i % 3 == 0 {
                data.insert(
                    "hosts".into(),
                    json!(vec![
                        "h".repeat(rng.random_range(0..2000));
                        rng.random_range(0..50)
                    ]),
                );
            }
            let target = templated(&[("k", &template), ("l", "{{ password }}")]);
            let one = std::time::Instant::now();
            let _ = check_templates(&target);
            if let Err(e) = render_target(&data, &target) {
                assert_clean(&e.to_string(), &template);
            }
            assert!(
                one.elapsed() < std::time::Duration::from_secs(2),
                "{template:?}"
            );
        }
        eprintln!("10 000 arbitrary templates in {:?}", started.elapsed());
    }
}
