//! Templating: handlebars in strict mode, with shell quoting instead of HTML escaping.
//!
//! Every `{{path}}` is rewritten, when the template is compiled, into a call of a typed
//! helper that sees the JSON value itself: strings are inserted as they are, numbers as
//! written, objects and arrays as compact JSON. In shell templates the compiler first reads
//! the template's literal text with [`crate::quoting::Lexer`] to learn the shell quoting state
//! at each placeholder (bare word, `"…"`, `'…'`, backquotes, comment, here-document), and the
//! helper writes the value so it is inert and byte-exact in that state; placeholders in states
//! that cannot be made safe are refused when the template is compiled. `{{{path}}}` inserts
//! the same text unquoted. argv templates (`run = [..]`) are never quoted: each element is
//! one argument.
//!
//! Pure: compiles and renders strings, does no I/O.

use std::borrow::Cow;
use std::collections::HashMap;

use handlebars::template::{Parameter, Subexpression, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, Path as HbPath, RenderContext, RenderError,
    RenderErrorReason, TemplateErrorReason,
};
use serde_json::Value;

use crate::error::did_you_mean;
use crate::quoting::{Context as ShellContext, Lexer, Refusal, Site};

pub use crate::quoting::shell_quote;

/// How interpolated values are inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// For text run by `/bin/sh`: values are shell-quoted.
    Shell,
    /// For argv elements and file names: values are inserted as they are.
    Raw,
}

const QUOTE: &str = "pp_quote";
const RAW: &str = "pp_raw";

/// A failure to compile or render a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    /// What went wrong.
    pub message: String,
    /// Byte offset in the template text, when known.
    pub offset: Option<usize>,
    /// Did-you-mean for an undefined variable.
    pub help: Option<String>,
    /// The undefined variable's path (`job.result.x`), when that is what failed.
    pub undefined: Option<String>,
}

/// A set of compiled templates.
pub struct Templates {
    shell: Handlebars<'static>,
    raw: Handlebars<'static>,
    /// Each template's text, to turn a render error's line and column into an offset.
    texts: HashMap<String, String>,
    /// The templates that are only text and plain `{{path}}` placeholders, rendered without
    /// handlebars (see [`Direct`]).
    direct: HashMap<String, Direct>,
}

/// A compiled template that is only literal text and placeholders of plain paths
/// (`{{job.x}}`, `{{{job.x}}}`), rendered by looking the paths up and writing each value as
/// its helper does, without handlebars: handlebars costs most of planning a large stage.
/// Whatever it does not render the same way (a path that is missing or goes through an
/// array, a value refused at its site) it leaves to handlebars, which renders it or says
/// why not, so both give the same text and the same errors.
#[derive(Debug)]
struct Direct(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    /// Literal text.
    Text(String),
    /// A value: its path from the context's root, and the shell site it is quoted for
    /// (`None`: inserted as it is).
    Value(Vec<String>, Option<Site>),
}

impl Direct {
    /// The direct form of a compiled (rewritten) template, if it has one.
    fn of(tpl: &Template) -> Option<Self> {
        let mut pieces = Vec::new();
        for el in &tpl.elements {
            match el {
                TemplateElement::RawString(s) => pieces.push(Piece::Text(s.clone())),
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)
                    if !ht.block
                        && ht.template.is_none()
                        && ht.inverse.is_none()
                        && ht.block_param.is_none() =>
                {
                    let Parameter::Name(helper) = &ht.name else {
                        return None;
                    };
                    let [Parameter::Path(HbPath::Relative((segs, _)))] = ht.params.as_slice()
                    else {
                        return None;
                    };
                    let path = segs
                        .iter()
                        .map(|s| match s {
                            handlebars::PathSeg::Named(n) => Some(n.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<String>>>()?;
                    let site = match helper.as_str() {
                        QUOTE => {
                            let literal = |k: &str| match ht.hash.get(k) {
                                Some(Parameter::Literal(v)) => Some(v),
                                _ => None,
                            };
                            if ht
                                .hash
                                .values()
                                .any(|v| !matches!(v, Parameter::Literal(_)))
                            {
                                return None;
                            }
                            Some(site_from(literal))
                        }
                        RAW if ht.hash.is_empty() => None,
                        _ => return None,
                    };
                    pieces.push(Piece::Value(path, site));
                }
                _ => return None,
            }
        }
        Some(Self(pieces))
    }

    /// The rendered text, or `None` to leave it to handlebars.
    fn render(&self, root: &Value) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value(path, site) => {
                    let mut v = root;
                    for seg in path {
                        v = match v {
                            Value::Object(m) => m.get(seg)?,
                            _ => return None,
                        };
                    }
                    let text = value_text(v);
                    match site {
                        None => out.push_str(&text),
                        Some(site) => out.push_str(&crate::quoting::emit(site, &text).ok()?),
                    }
                }
            }
        }
        Some(out)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        let make = |escape: fn(&str) -> String| {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(true);
            hb.set_prevent_indent(true);
            hb.register_escape_fn(escape);
            hb.register_helper(QUOTE, Box::new(quote_helper));
            hb.register_helper(RAW, Box::new(raw_helper));
            hb
        };
        Self {
            shell: make(|s| shell_quote(s).into_owned()),
            raw: make(handlebars::no_escape),
            texts: HashMap::new(),
            direct: HashMap::new(),
        }
    }

    /// Compiles `text` under `name`.
    ///
    /// # Errors
    /// The syntax error with its position.
    pub fn add(&mut self, name: &str, text: &str, quoting: Quoting) -> Result<(), TemplateFailure> {
        let mut tpl = Template::compile(text).map_err(|e| {
            let offset = e.pos().map(|(line, col)| offset_of(text, line, col));
            if let TemplateErrorReason::InvalidSyntax(_) = e.reason() {
                // The parser reports an unclosed block at the end of the text, as a list of
                // grammar rules; name the block and point at where it was opened instead.
                // Likewise for a `{{` whose `}}` is missing.
                if let Some(at) = unclosed_tag(text) {
                    if offset.is_none_or(|o| o >= at) {
                        return TemplateFailure {
                            message: "invalid template: `{{` is not closed by `}}`".to_owned(),
                            offset: Some(at),
                            help: Some("write values as `{{job.field}}`".to_owned()),
                            undefined: None,
                        };
                    }
                }
                if let Some((at, block)) = unclosed_block(text) {
                    if offset.is_none_or(|o| o >= at) {
                        return TemplateFailure {
                            message: format!(
                                "invalid template: `{{{{#{block}}}}}` is never closed"
                            ),
                            offset: Some(at),
                            help: Some(format!("close it with `{{{{/{block}}}}}`")),
                            undefined: None,
                        };
                    }
                }
            }
            TemplateFailure {
                message: format!("invalid template: {}", e.reason()),
                offset,
                help: None,
                undefined: None,
            }
        })?;
        let sites = match quoting {
            Quoting::Shell => Some(shell_sites(&tpl, text)?),
            Quoting::Raw => None,
        };
        rewrite(&mut tpl.elements, quoting, &mut sites.into_iter().flatten());
        self.texts.insert(name.to_owned(), text.to_owned());
        match Direct::of(&tpl) {
            Some(d) => self.direct.insert(name.to_owned(), d),
            None => self.direct.remove(name),
        };
        match quoting {
            Quoting::Shell => self.shell.register_template(name, tpl),
            Quoting::Raw => self.raw.register_template(name, tpl),
        }
        Ok(())
    }

    /// Renders template `name` with `ctx`.
    ///
    /// # Errors
    /// An undefined variable (strict mode) or a helper error, with a did-you-mean when a
    /// nearby name exists in `ctx`.
    pub fn render(
        &self,
        name: &str,
        quoting: Quoting,
        ctx: &Value,
    ) -> Result<String, TemplateFailure> {
        let ctx = Context::wraps(ctx).map_err(|e| render_failure(&e, ctx))?;
        self.render_context(name, quoting, &ctx)
    }

    /// Renders template `name` with a prepared context, which callers rendering many jobs
    /// update in place instead of building a new one for each.
    ///
    /// # Errors
    /// As [`Templates::render`].
    pub fn render_context(
        &self,
        name: &str,
        quoting: Quoting,
        ctx: &Context,
    ) -> Result<String, TemplateFailure> {
        if let Some(text) = self.direct.get(name).and_then(|d| d.render(ctx.data())) {
            return Ok(text);
        }
        self.render_handlebars(name, quoting, ctx)
    }

    /// [`Templates::render_context`] through handlebars, always.
    fn render_handlebars(
        &self,
        name: &str,
        quoting: Quoting,
        ctx: &Context,
    ) -> Result<String, TemplateFailure> {
        let hb = match quoting {
            Quoting::Shell => &self.shell,
            Quoting::Raw => &self.raw,
        };
        hb.render_with_context(name, ctx)
            .map(|mut s| {
                // handlebars reserves 8 KiB per output; a plan keeps one per job.
                s.shrink_to_fit();
                s
            })
            .map_err(|e| {
                let mut f = render_failure(&e, ctx.data());
                if let (Some(line), Some(col), Some(text)) =
                    (e.line_no, e.column_no, self.texts.get(name))
                {
                    f.offset = Some(offset_of(text, line, col));
                }
                f
            })
    }
}

/// Compiles and renders a one-off template.
///
/// # Errors
/// As [`Templates::add`] and [`Templates::render`].
pub fn render_once(text: &str, quoting: Quoting, ctx: &Value) -> Result<String, TemplateFailure> {
    let mut t = Templates::new();
    t.add("t", text, quoting)?;
    t.render("t", quoting, ctx)
}

fn render_failure(e: &RenderError, ctx: &Value) -> TemplateFailure {
    if let RenderErrorReason::MissingVariable(Some(path)) = e.reason() {
        return TemplateFailure {
            message: format!("`{path}` is not defined"),
            offset: None,
            help: suggest_path(ctx, path),
            undefined: Some(path.clone()),
        };
    }
    let message = e.reason().to_string();
    if let Some((message, help)) = message.split_once(HELP_MARK) {
        return TemplateFailure {
            message: message.to_owned(),
            offset: None,
            help: Some(help.to_owned()),
            undefined: None,
        };
    }
    TemplateFailure {
        message,
        offset: None,
        help: None,
        undefined: None,
    }
}

/// Separates a helper's message from its help in a render error (which has one string).
const HELP_MARK: &str = "\u{0}help: ";

/// Names a nearby variable, or lists what exists at that level.
fn suggest_path(ctx: &Value, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split(['.', '/']).collect();
    let (last, parents) = segs.split_last()?;
    let mut v = ctx;
    for s in parents {
        v = v.get(*s)?;
    }
    let keys: Vec<&str> = match v {
        Value::Object(m) => m.keys().map(String::as_str).collect(),
        _ => {
            let parent = parents.join(".");
            return Some(format!("`{parent}` is not an object: it is `{v}`"));
        }
    };
    did_you_mean(last, keys.iter().copied()).or_else(|| {
        let mut listed: Vec<String> = keys.iter().take(12).map(|k| format!("`{k}`")).collect();
        if keys.len() > 12 {
            listed.push("…".to_owned());
        }
        let at = if parents.is_empty() {
            "the context".to_owned()
        } else {
            format!("`{}`", parents.join("."))
        };
        Some(format!("{at} has {}", listed.join(", ")))
    })
}

/// The offset of the first `{{` of `text` with no `}}` before the next `{{` or the end.
fn unclosed_tag(text: &str) -> Option<usize> {
    let mut i = 0;
    while let Some(rel) = text[i..].find("{{") {
        let at = i + rel;
        if at > 0 && text.as_bytes()[at - 1] == b'\\' {
            i = at + 2;
            continue;
        }
        // Skip the braces of `{{{x}}}` and `{{{{raw}}}}`.
        let inner = at + text[at..].bytes().take_while(|&b| b == b'{').count();
        let rest = &text[inner..];
        if rest.starts_with('!') {
            let end = if rest.starts_with("!--") {
                "--}}"
            } else {
                "}}"
            };
            match rest.find(end) {
                Some(e) => {
                    i = inner + e + end.len();
                    continue;
                }
                None => return Some(at),
            }
        }
        match (rest.find("}}"), rest.find("{{")) {
            (Some(close), Some(next)) if close < next => i = inner + close + 2,
            (Some(close), None) => i = inner + close + 2,
            _ => return Some(at),
        }
    }
    None
}

/// The innermost `{{#block}}` of `text` that is never closed: its offset and name.
fn unclosed_block(text: &str) -> Option<(usize, String)> {
    let mut open: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while let Some(rel) = text[i..].find("{{") {
        let at = i + rel;
        let rest = &text[at + 2..];
        if at > 0 && text.as_bytes()[at - 1] == b'\\' {
            i = at + 2;
            continue;
        }
        let tag = rest.trim_start_matches('~').trim_start();
        if let Some(comment) = tag.strip_prefix('!') {
            let end = if comment.starts_with("--") {
                "--}}"
            } else {
                "}}"
            };
            let Some(e) = rest.find(end) else { break };
            i = at + 2 + e + end.len();
            continue;
        }
        let name = |t: &str| -> String {
            t.trim_start_matches(['>', '*'])
                .split(|c: char| c.is_whitespace() || c == '}' || c == '~')
                .next()
                .unwrap_or("")
                .to_owned()
        };
        if let Some(t) = tag.strip_prefix('#') {
            open.push((at, name(t)));
        } else if let Some(t) = tag.strip_prefix('/') {
            if open.last().is_some_and(|(_, n)| *n == name(t)) {
                open.pop();
            } else {
                return None;
            }
        }
        i = at + 2;
    }
    open.pop()
}

/// The byte offset of a 1-based line and column; the parser counts columns in characters.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = text.get(start..).unwrap_or("");
    let within = rest
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(rest.len(), |(i, _)| i);
    (start + within).min(text.len())
}

/// Reads a shell template's literal text and returns the [`Site`] of each escaped placeholder,
/// in the order [`rewrite`] visits them, or the first placeholder (or block) refused.
fn shell_sites(tpl: &Template, text: &str) -> Result<Vec<Site>, TemplateFailure> {
    let mut lexer = Lexer::new();
    let mut offsets = Vec::new();
    let mut refused: Vec<(usize, Refusal)> = Vec::new();
    lex_elements(tpl, text, &mut lexer, &mut offsets, &mut refused);
    let sites = lexer.finish();
    let mut ok = Vec::with_capacity(sites.len());
    for (site, at) in sites.into_iter().zip(offsets) {
        match site {
            Ok(s) => ok.push(s),
            Err(r) => refused.push((at, r)),
        }
    }
    match refused.into_iter().min_by_key(|(at, _)| *at) {
        None => Ok(ok),
        Some((at, r)) => Err(TemplateFailure {
            message: format!("unsafe placeholder in a shell command: {}", r.message),
            offset: Some(at),
            help: Some(r.help),
            undefined: None,
        }),
    }
}

fn lex_elements(
    tpl: &Template,
    text: &str,
    lexer: &mut Lexer,
    offsets: &mut Vec<usize>,
    refused: &mut Vec<(usize, Refusal)>,
) {
    for (i, el) in tpl.elements.iter().enumerate() {
        let at = tpl.mapping.get(i).map_or(0, |m| offset_of(text, m.0, m.1));
        match el {
            TemplateElement::RawString(s) => lexer.text(s),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(_) => {
                lexer.placeholder();
                offsets.push(at);
            }
            TemplateElement::HtmlExpression(_) => lexer.raw_piece(),
            TemplateElement::HelperBlock(ht) => {
                let before = lexer.begin_body();
                for body in [&ht.template, &ht.inverse].into_iter().flatten() {
                    lex_elements(body, text, lexer, offsets, refused);
                    if let Err(r) = lexer.end_body(&before) {
                        refused.push((at, r));
                    }
                }
            }
            // Partials, decorators, and whatever a later handlebars adds.
            _ => refused.push((
                at,
                Refusal {
                    message: "partials and decorators are not supported in shell commands"
                        .to_owned(),
                    help: "write the text in the command itself".to_owned(),
                },
            )),
        }
    }
}

/// The hash arguments that tell the quoting helper a placeholder's site.
fn site_hash(site: &Site) -> HashMap<String, Parameter> {
    let mut h = HashMap::new();
    let lit = |v: Value| Parameter::Literal(v);
    let q = match &site.context {
        ShellContext::Bare => "bare",
        ShellContext::ParamWord => "pw",
        ShellContext::DoubleQuoted => "dq",
        ShellContext::SingleQuoted => "sq",
        ShellContext::Comment => "comment",
        ShellContext::Arithmetic => "arith",
        ShellContext::Heredoc {
            delim,
            strip_tabs,
            in_subst,
            line,
        } => {
            h.insert("delim".to_owned(), lit(Value::from(delim.as_str())));
            h.insert("strip".to_owned(), lit(Value::Bool(*strip_tabs)));
            h.insert("sub".to_owned(), lit(Value::Bool(*in_subst)));
            if let Some((pre, post)) = line {
                h.insert("pre".to_owned(), lit(Value::from(pre.as_str())));
                h.insert("post".to_owned(), lit(Value::from(post.as_str())));
            }
            "heredoc"
        }
    };
    h.insert("q".to_owned(), lit(Value::from(q)));
    if !site.backquotes.is_empty() {
        let levels: String = site
            .backquotes
            .iter()
            .map(|&in_dq| if in_dq { 'd' } else { 'b' })
            .collect();
        h.insert("bq".to_owned(), lit(Value::from(levels)));
    }
    h
}

/// The site a quoting helper call was compiled for (a plain bare word without hash).
fn site_of(h: &Helper<'_>) -> Site {
    site_from(|k| h.hash_get(k).map(|v| v.value()))
}

/// The site that the hash arguments `get` returns describe (see [`site_hash`]).
fn site_from<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> Site {
    let s = |k: &str| get(k).and_then(|v| v.as_str().map(str::to_owned));
    let context = match s("q").as_deref() {
        Some("dq") => ShellContext::DoubleQuoted,
        Some("pw") => ShellContext::ParamWord,
        Some("sq") => ShellContext::SingleQuoted,
        Some("comment") => ShellContext::Comment,
        Some("arith") => ShellContext::Arithmetic,
        Some("heredoc") => ShellContext::Heredoc {
            delim: s("delim").unwrap_or_default(),
            strip_tabs: get("strip").and_then(Value::as_bool).unwrap_or(false),
            in_subst: get("sub").and_then(Value::as_bool).unwrap_or(false),
            line: s("pre").zip(s("post")),
        },
        _ => ShellContext::Bare,
    };
    let backquotes = s("bq")
        .map(|l| l.chars().map(|c| c == 'd').collect())
        .unwrap_or_default();
    Site {
        context,
        backquotes,
    }
}

/// Turns `{{path}}` into `{{pp_quote path}}` (or `pp_raw`), and `{{{path}}}` into
/// `{{pp_raw path}}`, recursively through blocks, so the helper sees the typed value. In shell
/// templates each escaped placeholder takes the next of `sites` as hash arguments (none for a
/// plain bare word, whose output is unchanged), and a helper call outside a bare word is
/// wrapped as `{{pp_quote (helper …) …}}`.
fn rewrite(
    elements: &mut [TemplateElement],
    quoting: Quoting,
    sites: &mut dyn Iterator<Item = Site>,
) {
    for el in elements {
        match el {
            TemplateElement::Expression(ht) if quoting == Quoting::Shell => {
                let site = sites.next().unwrap_or(Site {
                    context: ShellContext::Bare,
                    backquotes: Vec::new(),
                });
                let simple = ht.params.is_empty() && ht.hash.is_empty() && !ht.block;
                if simple {
                    let Some(param) = path_param(&ht.name) else {
                        continue;
                    };
                    ht.name = Parameter::Name(QUOTE.to_owned());
                    ht.params.push(param);
                } else if site.is_plain() {
                    // Rendered through the escape function, as a bare word.
                    continue;
                } else {
                    let call = Subexpression::new(
                        ht.name.clone(),
                        std::mem::take(&mut ht.params),
                        std::mem::take(&mut ht.hash),
                    );
                    ht.name = Parameter::Name(QUOTE.to_owned());
                    ht.params = vec![Parameter::Subexpression(call)];
                }
                if !site.is_plain() {
                    ht.hash = site_hash(&site);
                }
            }
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)
                if ht.params.is_empty() && ht.hash.is_empty() && !ht.block =>
            {
                let Some(param) = path_param(&ht.name) else {
                    continue;
                };
                ht.name = Parameter::Name(RAW.to_owned());
                ht.params.push(param);
            }
            TemplateElement::HelperBlock(ht) => {
                if let Some(t) = ht.template.as_mut() {
                    rewrite(&mut t.elements, quoting, sites);
                }
                if let Some(t) = ht.inverse.as_mut() {
                    rewrite(&mut t.elements, quoting, sites);
                }
            }
            _ => {}
        }
    }
}

fn path_param(name: &Parameter) -> Option<Parameter> {
    match name {
        Parameter::Name(n) => HbPath::parse(n).ok().map(Parameter::Path),
        Parameter::Path(p) => Some(Parameter::Path(p.clone())),
        _ => None,
    }
}

/// The text a JSON value is inserted as: strings as they are, null as `null` (as `jq -r`
/// prints it, so it never looks like an empty string), numbers and
/// booleans as written, arrays and objects as compact JSON.
#[must_use]
pub fn value_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Array(_) | Value::Object(_) => {
            Cow::Owned(serde_json::to_string(v).expect("a JSON value serializes"))
        }
    }
}

fn helper_value<'a>(h: &'a Helper<'_>) -> Result<&'a Value, RenderError> {
    let p = h
        .param(0)
        .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex("value", 0))?;
    if p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p.value())
}

fn quote_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let v = helper_value(h)?;
    let site = site_of(h);
    let value = value_text(v);
    let text = crate::quoting::emit(&site, &value).map_err(|why| {
        let name = h
            .param(0)
            .and_then(|p| p.relative_path().cloned())
            .unwrap_or_else(|| "value".to_owned());
        let help = match site.context {
            ShellContext::Comment => {
                "take the placeholder out of the comment, or the line break out of the value"
            }
            ShellContext::Arithmetic => {
                "give the job an integer here, or use the value outside arithmetic"
            }
            _ => {
                "pass the value as an argument instead of in the here-document, e.g. `printf '%s\\n' {{…}} | command`"
            }
        };
        RenderErrorReason::Other(format!(
            "the value of `{name}` cannot be inserted here: {why}{HELP_MARK}{help}"
        ))
    })?;
    out.write(&text)?;
    Ok(())
}

fn raw_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let v = helper_value(h)?;
    out.write(&value_text(v))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_typed_and_quoted() {
        let ctx = json!({"job": {"s": "a b'c", "n": 0.1, "arr": [1, "x"], "o": {"k": 1}, "plain": "ok.txt"}});
        let out = render_once(
            "x {{job.s}} {{job.n}} {{job.arr}} {{job.o}} {{job.plain}} {{{job.s}}}",
            Quoting::Shell,
            &ctx,
        )
        .unwrap();
        assert_eq!(out, r#"x 'a b'\''c' 0.1 '[1,"x"]' '{"k":1}' ok.txt a b'c"#);
    }

    /// Direct rendering (no handlebars) gives handlebars' text, or leaves the template to it.
    #[test]
    fn direct_rendering_is_handlebars_rendering() {
        let values = [
            r#"{"s": "a b'c", "n": 1E2, "f": -0.5, "t": true, "z": null, "e": "", "nl": "x\ny", "arr": [1, "x y"], "o": {"k": "v w", "n": 2}, "plain": "ok.txt", "id": 7}"#,
            r#"{"s": "$(id) `x` \"q\" \\", "n": 3, "arr": [], "o": {}, "nl": "END", "plain": "-rf", "e": "*"}"#,
        ];
        let templates = [
            (
                "x {{job.s}} {{job.n}} {{job.arr}} {{job.o}} {{job.plain}} {{{job.s}}} {{index}}",
                true,
            ),
            (
                "echo \"in dq {{job.s}} {{job.o.k}}\" '{{job.n}}' {{!a comment}}",
                true,
            ),
            (
                "echo ${X:-{{job.s}}} `echo {{job.s}}` \"`echo {{job.plain}}`\"",
                true,
            ),
            ("cat <<EOF\n{{job.nl}}\nline {{job.s}}\nEOF\n", true),
            ("echo $(( {{job.n}} + 1 )) # {{job.nl}}", true),
            (
                "{{job}} {{job_id}} {{job.t}} {{job.z}} {{job.e}} {{job.f}}",
                true,
            ),
            ("{{job.missing}}", true),
            ("{{job.arr.0}} {{job.s.x}}", true),
            ("{{#if job.t}}{{job.s}}{{/if}}", false),
            ("{{#each job.arr}}[{{this}}]{{/each}}", false),
            ("{{lookup job \"s\"}}", false),
        ];
        let mut compared = 0;
        for quoting in [Quoting::Shell, Quoting::Raw] {
            for (n, (text, direct)) in templates.iter().enumerate() {
                let mut t = Templates::new();
                let name = format!("t{n}");
                if t.add(&name, text, quoting).is_err() {
                    continue;
                }
                assert_eq!(t.direct.contains_key(&name), *direct, "{text:?}");
                for job in values {
                    let mut ctx = serde_json::Map::new();
                    ctx.insert("job".into(), crate::jobs::parse_value(job).unwrap());
                    ctx.insert("job_id".into(), json!("abc"));
                    ctx.insert("index".into(), json!(3));
                    let ctx = Context::wraps(Value::Object(ctx)).unwrap();
                    let slow = t.render_handlebars(&name, quoting, &ctx);
                    if let Some(d) = t.direct.get(&name) {
                        if let Some(fast) = d.render(ctx.data()) {
                            assert_eq!(Ok(fast), slow, "{text:?} with {job}");
                            compared += 1;
                        }
                    }
                    assert_eq!(t.render_context(&name, quoting, &ctx), slow, "{text:?}");
                }
            }
        }
        assert!(compared >= 15, "only {compared} direct renderings compared");
    }

    #[test]
    fn raw_mode_never_quotes() {
        let ctx = json!({"job": {"s": "a b"}});
        assert_eq!(render_once("{{job.s}}", Quoting::Raw, &ctx).unwrap(), "a b");
    }

    #[test]
    fn blocks_are_rewritten_too() {
        let ctx = json!({"job": {"files": ["a b", "c"]}});
        let out = render_once(
            "{{#each job.files}}[{{this}}]{{/each}}",
            Quoting::Shell,
            &ctx,
        )
        .unwrap();
        assert_eq!(out, "['a b'][c]");
    }

    #[test]
    fn missing_variable_suggests() {
        let ctx = json!({"job": {"basename": "x"}});
        let e = render_once("run {{job.basenme}}", Quoting::Shell, &ctx).unwrap_err();
        assert_eq!(e.message, "`job.basenme` is not defined");
        assert_eq!(e.help.as_deref(), Some("did you mean `basename`?"));
    }

    #[test]
    fn syntax_error_has_offset() {
        let e = render_once("ok\n{{#if x}}", Quoting::Shell, &json!({})).unwrap_err();
        assert!(e.offset.is_some(), "{e:?}");
    }

    #[test]
    fn unclosed_tags_and_blocks_point_at_their_start() {
        let e = render_once("a {{#if x}}b", Quoting::Shell, &json!({})).unwrap_err();
        assert_eq!(e.message, "invalid template: `{{#if}}` is never closed");
        assert_eq!(e.offset, Some(2));
        let e = render_once("{{#each x}}{{#if y}}{{/if}}", Quoting::Shell, &json!({})).unwrap_err();
        assert_eq!(e.message, "invalid template: `{{#each}}` is never closed");
        assert_eq!(e.offset, Some(0));
        let e = render_once("a {{x} b {{y}}", Quoting::Shell, &json!({})).unwrap_err();
        assert_eq!(e.message, "invalid template: `{{` is not closed by `}}`");
        assert_eq!(e.offset, Some(2));
    }

    #[test]
    fn render_error_has_offset_of_the_expression() {
        let ctx = json!({"job": {"x": 1}});
        let e = render_once("ok {{job.x}}\n  {{job.y}}", Quoting::Shell, &ctx).unwrap_err();
        assert_eq!(e.offset, Some(15));
    }

    #[test]
    fn quote_edge_cases() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("-rf"), "'-rf'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }
}

#[cfg(test)]
mod shell_context_tests {
    use super::*;
    use serde_json::json;

    const V: &str = "a'b\"c$(x)`y`\\z";

    fn r(t: &str) -> Result<String, TemplateFailure> {
        render_once(
            t,
            Quoting::Shell,
            &json!({"v": V, "s": "ok.txt", "l": ["x y", "z"]}),
        )
    }

    #[test]
    fn each_context_gets_its_own_spelling() {
        let cases = [
            ("echo {{v}}", r#"echo 'a'\''b"c$(x)`y`\z'"#),
            (
                "echo {{s}} \"{{s}}\" '{{s}}'",
                r#"echo ok.txt "ok.txt" 'ok.txt'"#,
            ),
            ("echo \"<{{v}}>\"", r#"echo "<"'a'\''b"c$(x)`y`\z'">""#),
            ("echo '<{{v}}>'", r#"echo '<a'\''b"c$(x)`y`\z>'"#),
            (
                "echo `echo {{v}}`",
                r#"echo `echo 'a'\\''b"c\$(x)\`y\`\\z'`"#,
            ),
            (
                "echo \"`echo {{v}}`\"",
                r#"echo "`echo 'a'\\''b\"c\$(x)\`y\`\\z'`""#,
            ),
            ("echo ${u:-{{s}}}", "echo ${u:-'ok.txt'}"),
            ("cat <<'E'\n{{v}}\nE\n", "cat <<'E'\na'b\"c$(x)`y`\\z\nE\n"),
            ("true # {{v}}", r#"true # 'a'\''b"c$(x)`y`\z'"#),
            (
                "echo {{#each l}}\"{{this}}\" {{/each}}",
                r#"echo ""'x y'"" "z" "#,
            ),
            ("echo {{{s}}}", "echo ok.txt"),
        ];
        for (t, want) in cases {
            assert_eq!(r(t).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn unsafe_states_are_refused_at_the_placeholder() {
        for (t, at) in [
            ("echo \"${x:-{{v}}}\"", 11),
            ("echo $(( $(echo \"{{v}}\") ))", 17),
            ("cat <<EOF\n{{v}}\nEOF\n", 10),
            ("echo ${{v}}", 6),
            ("echo $'{{v}}'", 7),
            ("echo \"\\\\{{v}}\"", 8),
            ("cat <<{{v}}\nx\n", 6),
            ("x=$(case a in a) echo {{v}};; esac)", 22),
            ("{{#each l}}\"{{/each}}", 0),
            ("{{> p}}", 0),
        ] {
            let e = r(t).expect_err(t);
            assert!(e.message.starts_with("unsafe placeholder"), "{t}: {e:?}");
            assert_eq!(e.offset, Some(at), "{t}: {e:?}");
            assert!(e.help.is_some(), "{t}");
        }
    }

    #[test]
    fn whitespace_control_is_applied_before_the_state_is_read() {
        // `{{~` removes the line break, so the placeholder stands in the comment.
        let e = render_once("# c\n {{~v}}", Quoting::Shell, &json!({"v": "a\nb"})).unwrap_err();
        assert!(e.message.contains("would end the comment"), "{e:?}");
    }

    #[test]
    fn values_that_would_escape_their_state_are_refused_when_rendered() {
        let ctx = json!({"v": "a\nrm -rf /", "e": "EOF"});
        for t in [
            "# {{v}}",
            "cat <<'EOF'\n{{v}}\nEOF\n",
            "cat <<'EOF'\n{{e}}\nEOF\n",
        ] {
            let e = render_once(t, Quoting::Shell, &ctx).expect_err(t);
            assert!(e.message.contains("cannot be inserted here"), "{t}: {e:?}");
            assert!(e.help.is_some(), "{t}");
        }
    }
}
