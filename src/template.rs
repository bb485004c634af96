//! Templating: handlebars in strict mode, with shell quoting instead of HTML escaping.
//!
//! Every `{{path}}` is rewritten, when the template is compiled, into a call of a typed
//! helper that sees the JSON value itself: strings are inserted as they are, numbers as
//! written, objects and arrays as compact JSON, and in shell templates the result is then
//! single-quoted so no job value can inject shell syntax. `{{{path}}}` inserts the same text
//! unquoted. argv templates (`run = [..]`) are never quoted: each element is one argument.
//!
//! Pure: compiles and renders strings, does no I/O.

use std::borrow::Cow;
use std::collections::HashMap;

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, Path as HbPath, RenderContext, RenderError,
    RenderErrorReason, TemplateErrorReason,
};
use serde_json::Value;

use crate::error::did_you_mean;

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
}

/// A set of compiled templates.
pub struct Templates {
    shell: Handlebars<'static>,
    raw: Handlebars<'static>,
    /// Each template's text, to turn a render error's line and column into an offset.
    texts: HashMap<String, String>,
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
                        };
                    }
                }
            }
            TemplateFailure {
                message: format!("invalid template: {}", e.reason()),
                offset,
                help: None,
            }
        })?;
        rewrite(&mut tpl.elements, quoting);
        self.texts.insert(name.to_owned(), text.to_owned());
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
        };
    }
    TemplateFailure {
        message: e.reason().to_string(),
        offset: None,
        help: None,
    }
}

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

/// Turns `{{path}}` into `{{pp_quote path}}` (or `pp_raw`), and `{{{path}}}` into
/// `{{pp_raw path}}`, recursively through blocks, so the helper sees the typed value.
fn rewrite(elements: &mut [TemplateElement], quoting: Quoting) {
    for el in elements {
        match el {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)
                if ht.params.is_empty() && ht.hash.is_empty() && !ht.block =>
            {
                let helper =
                    if matches!(el, TemplateElement::Expression(_)) && quoting == Quoting::Shell {
                        QUOTE
                    } else {
                        RAW
                    };
                // Re-borrow after the `matches!` above.
                let (TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)) = el
                else {
                    continue;
                };
                let param = match &ht.name {
                    Parameter::Name(n) => match HbPath::parse(n) {
                        Ok(p) => Parameter::Path(p),
                        Err(_) => continue,
                    },
                    Parameter::Path(p) => Parameter::Path(p.clone()),
                    _ => continue,
                };
                ht.name = Parameter::Name(helper.to_owned());
                ht.params.push(param);
            }
            TemplateElement::HelperBlock(ht) => {
                if let Some(t) = ht.template.as_mut() {
                    rewrite(&mut t.elements, quoting);
                }
                if let Some(t) = ht.inverse.as_mut() {
                    rewrite(&mut t.elements, quoting);
                }
            }
            _ => {}
        }
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
    out.write(&shell_quote(&value_text(v)))?;
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

/// Quotes `s` as one POSIX shell word: left bare when it has only safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
#[must_use]
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'@' | b'%' | b'+' | b'='
                )
        })
        && !s.starts_with('=')
        && !s.starts_with('-');
    if safe {
        return Cow::Borrowed(s);
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    Cow::Owned(q)
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
