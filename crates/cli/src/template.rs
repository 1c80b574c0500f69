//! `--format` templates, as docker and podman take them: Go's text/template
//! language over the JSON documents hako prints, in the subset scripts
//! use.
//!
//! Supported: text and `{{ }}` actions (with `{{-`/`-}}` trimming); fields
//! (`.State.Pid`, `$.Name`, `$var`); literals (strings, numbers, `true`,
//! `false`); pipelines (`.Names | upper`); parentheses; `if`/`else if`/
//! `else`, `range` (over arrays and maps, keys sorted; `$k, $v :=`) and
//! `with`, each closed by `end`; the functions `json`, `index`, `join`,
//! `split`, `upper`, `lower`, `title`, `len`, `printf` (%s %d %v %q %%),
//! `println`, `print`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `not`, `and`,
//! `or`, `truncate`. A missing map key prints `<no value>`, as Go does.
//! `\t` and `\n` written as two characters in the template are the tab
//! and newline (docker turns them so too).

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template:?}: {reason}")]
    Parse { template: String, reason: String },
    #[error("template: executing {action:?}: {reason}")]
    Exec { action: String, reason: String },
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        vars: Vec<String>,
        over: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        value: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// `cmd | cmd | …`, the text kept for error messages; `decl` is a
/// `$x :=` the pipeline's value is bound to.
#[derive(Debug, Clone)]
struct Pipeline {
    text: String,
    decl: Option<String>,
    commands: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.`, `.A.B`, `$`, `$x.A`: a variable (`""` is dot) and fields.
    Field {
        var: Option<String>,
        path: Vec<String>,
    },
    Str(String),
    Num(f64),
    Bool(bool),
    Ident(String),
    Sub(Pipeline),
    /// A field path applied to a parenthesised value: `(index . 0).Name`.
    SubField(Pipeline, Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let err = |reason: String| TemplateError::Parse {
            template: text.to_string(),
            reason,
        };
        let text_unescaped = text.replace("\\t", "\t").replace("\\n", "\n");
        let tokens = split_actions(&text_unescaped).map_err(err)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos, 0).map_err(err)?;
        if let Some(e) = end {
            return Err(err(format!("{{{{{e}}}}} without a block to end")));
        }
        Ok(Template { nodes })
    }

    /// The template applied to `data`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut vars = vec![("$".to_string(), data.clone())];
        exec_nodes(&self.nodes, data, &mut vars, &mut out)?;
        Ok(out)
    }
}

/// Text and action pieces of a template, trim markers applied.
#[derive(Debug)]
enum Token {
    Text(String),
    Action(String),
}

fn split_actions(s: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = s;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next_text {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let (trim_before, after) = match after.strip_prefix("- ") {
            Some(a) => (true, a),
            None => (false, after),
        };
        if trim_before {
            text = text.trim_end().to_string();
        }
        if !text.is_empty() {
            tokens.push(Token::Text(text));
        }
        let end = find_action_end(after).ok_or("an action without its closing }}")?;
        let mut body = &after[..end];
        trim_next_text = false;
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            trim_next_text = true;
        }
        let body = body.trim();
        // Comments: {{/* … */}}.
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            tokens.push(Token::Action(body.to_string()));
        }
        rest = &after[end + 2..];
    }
    let mut text = rest.to_string();
    if trim_next_text {
        text = text.trim_start().to_string();
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

/// Where `}}` closes an action, skipping string literals.
fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Nodes up to an `end`/`else` (returned) or the end of input.
fn parse_nodes(
    tokens: &[Token],
    pos: &mut usize,
    depth: usize,
) -> Result<(Vec<Node>, Option<String>), String> {
    if depth > MAX_DEPTH {
        return Err(format!("blocks nest deeper than {MAX_DEPTH}"));
    }
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        *pos += 1;
        let action = match t {
            Token::Text(s) => {
                nodes.push(Node::Text(s.clone()));
                continue;
            }
            Token::Action(a) => a.as_str(),
        };
        let (word, rest) = match action.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (action, ""),
        };
        match word {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => return Ok((nodes, Some(format!("else {rest}").trim().to_string()))),
            "if" => nodes.push(parse_if(rest, tokens, pos, depth + 1)?),
            "range" => {
                let (vars, over) = range_vars(rest)?;
                let over = parse_pipeline(over)?;
                let (body, otherwise) = parse_block("range", tokens, pos, depth + 1)?;
                nodes.push(Node::Range {
                    vars,
                    over,
                    body,
                    otherwise,
                });
            }
            "with" => {
                let value = parse_pipeline(rest)?;
                let (body, otherwise) = parse_block("with", tokens, pos, depth + 1)?;
                nodes.push(Node::With {
                    value,
                    body,
                    otherwise,
                });
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!("{word} is not supported"))
            }
            _ => nodes.push(Node::Action(parse_pipeline(action)?)),
        }
    }
    Ok((nodes, None))
}

/// The body of a `range`/`with` and its `else` part, up to its `end`.
fn parse_block(
    what: &str,
    tokens: &[Token],
    pos: &mut usize,
    depth: usize,
) -> Result<(Vec<Node>, Vec<Node>), String> {
    let (body, end) = parse_nodes(tokens, pos, depth)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => expect_end(tokens, pos, depth)?,
        _ => return Err(format!("{what} without its end")),
    };
    Ok((body, otherwise))
}

fn expect_end(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Vec<Node>, String> {
    match parse_nodes(tokens, pos, depth)? {
        (nodes, Some(e)) if e == "end" => Ok(nodes),
        _ => Err("else without its end".into()),
    }
}

fn parse_if(cond: &str, tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Node, String> {
    let cond = parse_pipeline(cond)?;
    let (then, end) = parse_nodes(tokens, pos, depth)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => expect_end(tokens, pos, depth)?,
        Some(e) if e.starts_with("else if ") => vec![parse_if(&e[8..], tokens, pos, depth + 1)?],
        _ => return Err("if without its end".into()),
    };
    Ok(Node::If {
        cond,
        then,
        otherwise,
    })
}

/// `$k, $v := PIPE` or `$v := PIPE` or `PIPE`.
fn range_vars(s: &str) -> Result<(Vec<String>, &str), String> {
    let Some((lhs, rhs)) = s.split_once(":=") else {
        return Ok((Vec::new(), s));
    };
    let vars: Vec<String> = lhs.split(',').map(|v| v.trim().to_string()).collect();
    if vars.len() > 2 || vars.iter().any(|v| !v.starts_with('$') || v.len() < 2) {
        return Err(format!("bad range variables {lhs:?}"));
    }
    Ok((vars, rhs.trim()))
}

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    let text = s.trim().to_string();
    let (decl, body) = match text.split_once(":=") {
        Some((v, rest)) if v.trim().starts_with('$') && !v.contains('"') => {
            (Some(v.trim().to_string()), rest.trim().to_string())
        }
        _ => (None, text.clone()),
    };
    let tokens = lex(&body)?;
    let mut pos = 0;
    let commands = parse_commands(&tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {:?} in {text:?}", tokens[pos]));
    }
    if commands.is_empty() || commands.iter().any(Vec::is_empty) {
        return Err(format!("empty command in {text:?}"));
    }
    Ok(Pipeline {
        text,
        decl,
        commands,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Lex {
    Word(String),
    Str(String),
    Pipe,
    Open,
    Close,
    /// `.Field` right after a `)`.
    Fields(String),
}

fn lex(s: &str) -> Result<Vec<Lex>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Lex::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Lex::Open);
                i += 1;
            }
            ')' => {
                out.push(Lex::Close);
                i += 1;
                if chars.get(i) == Some(&'.') {
                    let start = i;
                    while i < chars.len() && !chars[i].is_whitespace() && !"|()".contains(chars[i])
                    {
                        i += 1;
                    }
                    out.push(Lex::Fields(chars[start..i].iter().collect()));
                }
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("an unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => v.push('\n'),
                                Some('t') => v.push('\t'),
                                Some(other) => v.push(*other),
                                None => return Err("an unterminated string".into()),
                            }
                        }
                        Some(other) => v.push(*other),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Lex::Str(v));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("an unterminated raw string")?;
                out.push(Lex::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"|()\"".contains(chars[i]) {
                    i += 1;
                }
                out.push(Lex::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

fn parse_commands(tokens: &[Lex], pos: &mut usize, depth: usize) -> Result<Vec<Vec<Arg>>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("parentheses nest deeper than {MAX_DEPTH}"));
    }
    let mut commands = vec![Vec::new()];
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        *pos += 1;
        let arg = match t {
            Lex::Pipe => {
                commands.push(Vec::new());
                continue;
            }
            Lex::Close => {
                *pos -= 1;
                break;
            }
            Lex::Open => {
                let inner = parse_commands(tokens, pos, depth + 1)?;
                if tokens.get(*pos) != Some(&Lex::Close) {
                    return Err("a ( without its )".into());
                }
                *pos += 1;
                let sub = Pipeline {
                    text: "(…)".into(),
                    decl: None,
                    commands: inner,
                };
                match tokens.get(*pos) {
                    Some(Lex::Fields(f)) => {
                        *pos += 1;
                        Arg::SubField(sub, field_path(f)?)
                    }
                    _ => Arg::Sub(sub),
                }
            }
            Lex::Str(s) => Arg::Str(s.clone()),
            Lex::Fields(f) => return Err(format!("unexpected {f:?}")),
            Lex::Word(w) => word_arg(w)?,
        };
        commands.last_mut().expect("one command at least").push(arg);
    }
    Ok(commands)
}

fn field_path(s: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = s
        .strip_prefix('.')
        .unwrap_or(s)
        .split('.')
        .map(str::to_string)
        .collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!("bad field {s:?}"));
    }
    Ok(parts)
}

fn word_arg(w: &str) -> Result<Arg, String> {
    if w == "." {
        return Ok(Arg::Field {
            var: None,
            path: Vec::new(),
        });
    }
    if let Some(f) = w.strip_prefix('.') {
        return Ok(Arg::Field {
            var: None,
            path: field_path(f)?,
        });
    }
    if w.starts_with('$') {
        let (var, rest) = match w.find('.') {
            Some(i) => (&w[..i], &w[i..]),
            None => (w, ""),
        };
        let path = if rest.is_empty() {
            Vec::new()
        } else {
            field_path(rest)?
        };
        return Ok(Arg::Field {
            var: Some(var.to_string()),
            path,
        });
    }
    match w {
        "true" => return Ok(Arg::Bool(true)),
        "false" => return Ok(Arg::Bool(false)),
        _ => {}
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Arg::Num(n));
    }
    if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(Arg::Ident(w.to_string()));
    }
    Err(format!("unexpected {w:?}"))
}

// --- execution ---------------------------------------------------------------

type Vars = Vec<(String, Value)>;

fn exec_nodes(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vars,
    out: &mut String,
) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, vars)?;
                match &p.decl {
                    Some(name) => vars.push((name.clone(), v)),
                    None => out.push_str(&print_value(&v)),
                }
            }
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let v = eval_pipeline(cond, dot, vars)?;
                let depth = vars.len();
                let branch = if truthy(&v) { then } else { otherwise };
                exec_nodes(branch, dot, vars, out)?;
                vars.truncate(depth);
            }
            Node::With {
                value,
                body,
                otherwise,
            } => {
                let v = eval_pipeline(value, dot, vars)?;
                let depth = vars.len();
                if truthy(&v) {
                    exec_nodes(body, &v, vars, out)?;
                } else {
                    exec_nodes(otherwise, dot, vars, out)?;
                }
                vars.truncate(depth);
            }
            Node::Range {
                vars: names,
                over,
                body,
                otherwise,
            } => {
                let v = eval_pipeline(over, dot, vars)?;
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (Value::from(i), e.clone()))
                        .collect(),
                    Value::Object(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::from(k.clone()), m[k].clone()))
                            .collect()
                    }
                    Value::Null => Vec::new(),
                    other => {
                        return Err(TemplateError::Exec {
                            action: over.text.clone(),
                            reason: format!("range can't iterate over {}", print_value(other)),
                        })
                    }
                };
                if items.is_empty() {
                    exec_nodes(otherwise, dot, vars, out)?;
                    continue;
                }
                for (k, e) in items {
                    let depth = vars.len();
                    match names.as_slice() {
                        [v] => vars.push((v.clone(), e.clone())),
                        [kn, vn] => {
                            vars.push((kn.clone(), k));
                            vars.push((vn.clone(), e.clone()));
                        }
                        _ => {}
                    }
                    exec_nodes(body, &e, vars, out)?;
                    vars.truncate(depth);
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, dot: &Value, vars: &Vars) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for cmd in &p.commands {
        prev = Some(eval_command(p, cmd, prev, dot, vars)?);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn exec_err(p: &Pipeline, reason: impl Into<String>) -> TemplateError {
    TemplateError::Exec {
        action: p.text.clone(),
        reason: reason.into(),
    }
}

fn eval_command(
    p: &Pipeline,
    cmd: &[Arg],
    piped: Option<Value>,
    dot: &Value,
    vars: &Vars,
) -> Result<Value, TemplateError> {
    let Arg::Ident(name) = &cmd[0] else {
        if cmd.len() > 1 || piped.is_some() {
            return Err(exec_err(p, "only a function takes arguments"));
        }
        return eval_arg(p, &cmd[0], dot, vars);
    };
    let mut args = cmd[1..]
        .iter()
        .map(|a| eval_arg(p, a, dot, vars))
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    call(p, name, &args)
}

fn eval_arg(p: &Pipeline, a: &Arg, dot: &Value, vars: &Vars) -> Result<Value, TemplateError> {
    Ok(match a {
        Arg::Field { var, path } => {
            let base = match var {
                None => dot.clone(),
                Some(v) => vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == v)
                    .map(|(_, val)| val.clone())
                    .ok_or_else(|| exec_err(p, format!("undefined variable {v}")))?,
            };
            lookup(&base, path)
        }
        Arg::Str(s) => Value::from(s.clone()),
        Arg::Num(n) => number(*n),
        Arg::Bool(b) => Value::from(*b),
        Arg::Ident(name) => call(p, name, &[])?,
        Arg::Sub(sub) => eval_pipeline(sub, dot, vars)?,
        Arg::SubField(sub, path) => lookup(&eval_pipeline(sub, dot, vars)?, path),
    })
}

/// A field path into `v`; a missing key is Go's `<no value>`, kept as a
/// marker that prints so.
fn lookup(v: &Value, path: &[String]) -> Value {
    let mut cur = v;
    for f in path {
        match cur.get(f) {
            Some(next) => cur = next,
            None => return Value::String(NO_VALUE.into()),
        }
    }
    cur.clone()
}

const NO_VALUE: &str = "<no value>";
/// The widest printf field.
const MAX_WIDTH: usize = 1024;
/// How deep blocks and parentheses may nest (deeper: an error, not a
/// stack overflow).
const MAX_DEPTH: usize = 64;

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != NO_VALUE,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// How Go's fmt prints a value: strings bare, `[a b]` for slices,
/// `map[k:v]` for maps, `<nil>` for nothing.
fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(print_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", print_value(&m[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn as_str(v: &Value) -> String {
    print_value(v)
}

fn compare(p: &Pipeline, a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .ok_or_else(|| exec_err(p, "incomparable numbers")),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(exec_err(
            p,
            format!("incompatible types for comparison: {a} and {b}"),
        )),
    }
}

fn call(p: &Pipeline, name: &str, args: &[Value]) -> Result<Value, TemplateError> {
    let n = args.len();
    let want = |k: usize| -> Result<(), TemplateError> {
        if n == k {
            Ok(())
        } else {
            Err(exec_err(
                p,
                format!("{name} takes {k} argument(s), got {n}"),
            ))
        }
    };
    Ok(match name {
        "json" => {
            want(1)?;
            Value::from(serde_json::to_string(&args[0]).unwrap_or_default())
        }
        "upper" => {
            want(1)?;
            Value::from(as_str(&args[0]).to_uppercase())
        }
        "lower" => {
            want(1)?;
            Value::from(as_str(&args[0]).to_lowercase())
        }
        "title" => {
            want(1)?;
            let s = as_str(&args[0]);
            let mut out = String::new();
            let mut start = true;
            for c in s.chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::from(out)
        }
        "len" => {
            want(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.len(),
                other => return Err(exec_err(p, format!("len of {}", print_value(other)))),
            })
        }
        "join" => {
            want(2)?;
            let list = match &args[0] {
                Value::Array(a) => a.iter().map(as_str).collect::<Vec<_>>(),
                other => vec![as_str(other)],
            };
            Value::from(list.join(&as_str(&args[1])))
        }
        "split" => {
            want(2)?;
            let s = as_str(&args[0]);
            let sep = as_str(&args[1]);
            Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
        }
        "truncate" => {
            want(2)?;
            let s = as_str(&args[0]);
            let k = args[1].as_u64().unwrap_or(0) as usize;
            Value::from(s.chars().take(k).collect::<String>())
        }
        "index" => {
            if n < 2 {
                return Err(exec_err(p, "index takes a value and keys"));
            }
            let mut cur = args[0].clone();
            for k in &args[1..] {
                cur = match (&cur, k) {
                    (Value::Object(m), key) => m.get(&as_str(key)).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(i)) => {
                        let i = i.as_u64().unwrap_or(u64::MAX) as usize;
                        a.get(i)
                            .cloned()
                            .ok_or_else(|| exec_err(p, format!("index {i} out of range")))?
                    }
                    (Value::Null, _) => Value::Null,
                    (other, _) => {
                        return Err(exec_err(p, format!("can't index {}", print_value(other))))
                    }
                };
            }
            cur
        }
        "printf" => {
            if n == 0 {
                return Err(exec_err(p, "printf takes a format"));
            }
            Value::from(printf(&as_str(&args[0]), &args[1..]))
        }
        "print" => Value::from(args.iter().map(as_str).collect::<Vec<_>>().join(" ")),
        "println" => Value::from(format!(
            "{}\n",
            args.iter().map(as_str).collect::<Vec<_>>().join(" ")
        )),
        "not" => {
            want(1)?;
            Value::from(!truthy(&args[0]))
        }
        "and" => args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "eq" => {
            if n < 2 {
                return Err(exec_err(p, "eq takes two arguments or more"));
            }
            Value::from(args[1..].iter().any(|b| loose_eq(&args[0], b)))
        }
        "ne" => {
            want(2)?;
            Value::from(!loose_eq(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = compare(p, &args[0], &args[1])?;
            Value::from(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        other => return Err(exec_err(p, format!("function {other:?} not defined"))),
    })
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Go's printf for the verbs scripts use: %s %v %d %q %t %%, with an
/// optional width (`%-10s`).
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d == '-' || d.is_ascii_digit() {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let text = match (verb, args.next()) {
            (_, None) => format!("%!{verb}(MISSING)"),
            ('q', Some(v)) => serde_json::to_string(&as_str(v)).unwrap_or_default(),
            ('d', Some(Value::Number(n))) => {
                n.as_i64().map_or_else(|| n.to_string(), |i| i.to_string())
            }
            (_, Some(v)) => as_str(v),
        };
        let (left, width) = match spec.strip_prefix('-') {
            Some(w) => (true, w.parse::<usize>().unwrap_or(0)),
            None => (false, spec.parse::<usize>().unwrap_or(0)),
        };
        // A width is for columns, not for filling memory.
        let width = width.min(MAX_WIDTH);
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    out
}

/// `--format`: `json`, or a template; with a leading `table ` the rows
/// are aligned under a header made by applying the template to `header`
/// (field names to column titles).
pub enum Format {
    Json,
    Template { table: bool, template: Template },
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, TemplateError> {
        if text.trim() == "json" {
            return Ok(Format::Json);
        }
        match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                Ok(Format::Template {
                    table: true,
                    template: Template::parse(rest.trim_start())?,
                })
            }
            _ => Ok(Format::Template {
                table: false,
                template: Template::parse(text)?,
            }),
        }
    }
}

/// Prints `items` as `--format` says: `json` as `json` gives them
/// (`None`: a JSON array of the items), else a template per item.
pub fn print(
    format: &str,
    header: &Value,
    items: &[Value],
    json: Option<&Value>,
) -> Result<(), TemplateError> {
    match Format::parse(format)? {
        Format::Json => {
            let all = Value::Array(items.to_vec());
            let v = json.unwrap_or(&all);
            crate::stdout::write(format_args!(
                "{}\n",
                serde_json::to_string_pretty(v).unwrap_or_default()
            ));
        }
        Format::Template { table, template } => {
            let text = render_all(&template, table, header, items)?;
            crate::stdout::write(format_args!("{text}"));
        }
    }
    Ok(())
}

/// A template applied to each item of the JSON array `items`; a table's
/// titles are the field names in capitals.
pub fn print_items(format: &str, items: &Value) -> Result<(), TemplateError> {
    let list = items.as_array().cloned().unwrap_or_default();
    let mut header = serde_json::Map::new();
    for item in &list {
        for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
            header.insert(k.clone(), Value::from(k.to_uppercase()));
        }
    }
    print(format, &Value::Object(header), &list, None)
}

/// Renders `items` with `template`, one per line; as a table (cells
/// split at tabs, aligned) under the header when `table`.
pub fn render_all(
    template: &Template,
    table: bool,
    header: &Value,
    items: &[Value],
) -> Result<String, TemplateError> {
    let mut lines = Vec::new();
    if table {
        lines.push(template.render(header)?);
    }
    for i in items {
        lines.push(template.render(i)?);
    }
    if !table {
        let mut out = String::new();
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        return Ok(out);
    }
    let mut t: Option<crate::stdout::Table> = None;
    for l in &lines {
        let cells: Vec<String> = l.split('\t').map(str::to_string).collect();
        match &mut t {
            None => {
                let header: Vec<&str> = cells.iter().map(String::as_str).collect();
                t = Some(crate::stdout::Table::new(&header));
            }
            Some(t) => t.row(cells),
        }
    }
    Ok(t.map(|t| t.render()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t)
            .unwrap_or_else(|e| panic!("{e}"))
            .render(v)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fields_pipelines_and_functions() {
        let v = json!({"State": {"Pid": 42, "Running": true, "Status": "running"},
            "Name": "web", "Args": ["a", "b"], "Config": {"Labels": {"x": "1", "a.b": "2"}}});
        assert_eq!(r("{{.State.Pid}}", &v), "42");
        assert_eq!(
            r("{{ .Name }}-{{.State.Status | upper}}", &v),
            "web-RUNNING"
        );
        assert_eq!(r("{{json .Args}}", &v), r#"["a","b"]"#);
        assert_eq!(r("{{.Args}}", &v), "[a b]");
        assert_eq!(r("{{join .Args \",\"}}", &v), "a,b");
        assert_eq!(r(r#"{{index .Config.Labels "a.b"}}"#, &v), "2");
        assert_eq!(r("{{.Config.Labels}}", &v), "map[a.b:2 x:1]");
        assert_eq!(r("{{.Nope}}", &v), "<no value>");
        assert_eq!(
            r(r#"{{printf "%-5s|%d" .Name .State.Pid}}"#, &v),
            "web  |42"
        );
        assert_eq!(r("{{len .Args}} {{(index .Args 1)}}", &v), "2 b");
        assert_eq!(r("{{$.Name}}", &v), "web");
        assert_eq!(r("a\\tb", &v), "a\tb");
    }

    #[test]
    fn control_flow() {
        let v = json!({"Running": false, "Nets": {"b": {"IP": "10.0.0.2"}, "a": {"IP": "10.0.0.1"}},
            "List": [1, 2, 3], "Empty": []});
        assert_eq!(r("{{if .Running}}up{{else}}down{{end}}", &v), "down");
        assert_eq!(
            r(
                "{{if eq .Running true}}1{{else if not .Running}}2{{else}}3{{end}}",
                &v
            ),
            "2"
        );
        assert_eq!(
            r("{{range .Nets}}{{.IP}} {{end}}", &v),
            "10.0.0.1 10.0.0.2 "
        );
        assert_eq!(
            r("{{range $k, $v := .Nets}}{{$k}}={{$v.IP}};{{end}}", &v),
            "a=10.0.0.1;b=10.0.0.2;"
        );
        assert_eq!(r("{{range .Empty}}x{{else}}none{{end}}", &v), "none");
        assert_eq!(r("{{range .List -}} {{.}} {{- end}}", &v), "123");
        assert_eq!(r("{{with .Nets.a}}{{.IP}}{{end}}", &v), "10.0.0.1");
        assert_eq!(r("{{$x := .List}}{{len $x}}", &v), "3");
        assert_eq!(r("{{/* a comment */}}ok", &v), "ok");
    }

    #[test]
    fn bad_templates_are_errors_not_panics() {
        for bad in [
            "{{.Name",
            "{{if .A}}x",
            "{{end}}",
            "{{range}}{{end}}",
            "{{\"unterminated}}",
            "{{ ( .A }}",
            "{{ .A..B }}",
            "{{ % }}",
            "{{define \"x\"}}{{end}}",
            &format!(
                "{}.A{}",
                "{{".to_string() + &"(".repeat(5000),
                ")".repeat(5000) + "}}"
            ),
            &"{{if .A}}".repeat(5000),
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        let v = json!({"A": 1});
        for bad in [
            "{{nofunc .A}}",
            "{{index .A 1}}",
            "{{lt .A \"x\"}}",
            "{{range .A.B}}{{end}}x{{range 1.5}}{{end}}",
        ] {
            let t = Template::parse(bad).expect("parses");
            let _ = t.render(&v);
        }
        assert!(Template::parse("{{nofunc .A}}")
            .expect("parses")
            .render(&v)
            .is_err());
    }
}
