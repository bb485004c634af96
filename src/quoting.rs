//! Shell quoting contexts: which POSIX `sh` quoting state each placeholder of a shell template
//! stands in, and how a value is written so it is inert and byte-exact there.
//!
//! [`Lexer`] reads a template's literal text character by character, with each placeholder an
//! opaque piece of a word, and tracks what the shell would be inside at that point: a bare
//! word, `"…"`, `'…'`, `$(…)` and backquotes (where the state restarts), `${x:-…}` words,
//! here-documents, comments, arithmetic. [`Site`] is the answer for one placeholder, and
//! [`emit`] writes a value for it; a state where no text can keep a value inert is a
//! [`Refusal`] instead, said when the template is compiled.
//!
//! Why lex rather than escape: an escaping function sees only the value, so it must guess the
//! state, and one guess (single quotes for a bare word) is wrong inside `"…"` or `'…'`. The
//! template's own text decides the state, so it is read once, at compile time, and the
//! states poolparty does not model are refused rather than passed through.
//!
//! Pure: no I/O.

use std::borrow::Cow;

/// Where a placeholder stands, as far as the shell is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Context {
    /// An unquoted word (also inside `$(…)`, backquotes or an unquoted `${x:-…}` word).
    Bare,
    /// The word of an unquoted `${x:-…}` (or pattern of `${x#…}`): always single-quoted, since
    /// a bare value right after the operator could change it (`%` + `%s` is `%%s`).
    ParamWord,
    /// Inside `"…"`.
    DoubleQuoted,
    /// Inside `'…'`.
    SingleQuoted,
    /// In a `#` comment (also `#SBATCH` / `#$` directives of cluster scripts).
    Comment,
    /// Directly inside arithmetic (`$((…))`, `((…))`, `$[…]`): only a decimal integer is
    /// inert there (anything else is evaluated, and bash runs `$(…)` in array subscripts).
    Arithmetic,
    /// In the body of a here-document whose delimiter is quoted (a literal body).
    Heredoc {
        /// The delimiter line.
        delim: String,
        /// `<<-`: leading tabs of each body line are removed.
        strip_tabs: bool,
        /// Inside `$(…)`, where bash also ends the body at a line `DELIM)`.
        in_subst: bool,
        /// The literal text before and after the placeholder on its line, when it is the only
        /// placeholder there.
        line: Option<(String, String)>,
    },
}

/// One placeholder's context: the innermost state, and the backquote substitutions that
/// enclose it (each one removes a level of `\` escapes before its command is parsed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The innermost state.
    pub context: Context,
    /// Enclosing backquote substitutions.
    /// Enclosing backquote substitutions, outermost first: whether each stands inside `"…"`
    /// (where `\"` loses its backslash too).
    pub backquotes: Vec<bool>,
}

impl Site {
    /// A bare word outside any backquotes: the plain `{{value}}` case.
    #[must_use]
    pub fn is_plain(&self) -> bool {
        self.context == Context::Bare && self.backquotes.is_empty()
    }
}

/// A placeholder in a state where no value can be made inert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

fn refusal(message: impl Into<String>, help: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        help: help.into(),
    }
}

/// Writes `value` so that, in `site`, the shell reads exactly `value` and runs none of it.
///
/// # Errors
/// A value that cannot stand in that state (a newline in a comment, a here-document line
/// equal to its delimiter), saying why.
pub fn emit<'a>(site: &Site, value: &'a str) -> Result<Cow<'a, str>, String> {
    let text: Cow<'_, str> = match &site.context {
        Context::Bare => shell_quote(value),
        Context::ParamWord => Cow::Owned(single_quote(value)),
        Context::DoubleQuoted => {
            if value.is_empty() || safe(value) {
                Cow::Borrowed(value)
            } else {
                // Close the double quotes, single-quote the value, reopen: one word.
                Cow::Owned(format!("\"{}\"", single_quote(value)))
            }
        }
        Context::SingleQuoted => Cow::Owned(value.replace('\'', "'\\''")),
        Context::Arithmetic => {
            if !is_decimal_integer(value) {
                return Err(format!(
                    "only a decimal integer can stand in arithmetic, and {} is not one",
                    shorten(value)
                ));
            }
            Cow::Borrowed(value)
        }
        Context::Comment => {
            if value.contains('\n') {
                return Err("it contains a newline, which would end the comment".to_owned());
            }
            shell_quote(value)
        }
        Context::Heredoc {
            delim,
            strip_tabs,
            in_subst,
            line,
        } => {
            heredoc_check(value, delim, *strip_tabs, line.as_ref())?;
            if *in_subst && value.contains('\u{1}') {
                // bash reads \x01 there as its internal escape and drops it before \x01 or \x7f.
                return Err(
                    "inside `$(…)` bash mangles the control character U+0001 in a here-document"
                        .to_owned(),
                );
            }
            if *in_subst && bash_ends_subst_heredoc(value, delim, *strip_tabs, line.as_ref()) {
                return Err(format!(
                    "inside `$(…)` bash would end the here-document at its line (`{delim}` and then a `)`)"
                ));
            }
            Cow::Borrowed(value)
        }
    };
    if site.backquotes.is_empty() {
        return Ok(text);
    }
    let mut text = text.into_owned();
    for &in_dq in site.backquotes.iter().rev() {
        text = escape_backquoted(&text, in_dq);
    }
    Ok(Cow::Owned(text))
}

/// A decimal integer the shell reads back as written: no leading zeros (octal), no `-0`, and
/// within 64 bits (larger ones wrap).
fn is_decimal_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !digits.starts_with('0'))
        && s.parse::<i64>().is_ok()
}

/// A value for a message: quoted, and cut when long.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn heredoc_check(
    value: &str,
    delim: &str,
    strip_tabs: bool,
    line: Option<&(String, String)>,
) -> Result<(), String> {
    if value.contains('\n') {
        return Err(format!(
            "it contains a newline, which could end the here-document (`{delim}`) early"
        ));
    }
    let ends = match line {
        Some((pre, post)) => {
            let full = format!("{pre}{value}{post}");
            let full = if strip_tabs {
                full.trim_start_matches('\t')
            } else {
                &full
            };
            full == delim
        }
        None => delim.contains(value),
    };
    if ends {
        return Err(format!(
            "its line would read `{delim}`, which ends the here-document early"
        ));
    }
    let drops = match line {
        Some((pre, post)) => {
            let full = format!("{pre}{value}{post}");
            let full = if strip_tabs {
                full.trim_start_matches('\t')
            } else {
                &full
            };
            dash_drops_after(full.as_bytes(), delim.as_bytes())
        }
        // The text before the value is unknown: any start of the value may follow a start of
        // the delimiter.
        None => (0..=value.len()).any(|i| {
            value.as_bytes().get(i).is_some_and(|&b| b >= 0x80)
                && (1..=delim.len())
                    .any(|k| delim.as_bytes()[..k].ends_with(&value.as_bytes()[..i]))
        }),
    };
    if drops {
        return Err(
            "`sh` (dash 0.5) drops a non-ASCII byte that follows the start of the delimiter at the start of a here-document line".to_owned(),
        );
    }
    let at_line_start = line.is_none_or(|(pre, _)| pre.trim_start_matches('\t').is_empty());
    if strip_tabs && at_line_start && value.starts_with('\t') {
        return Err("`<<-` would remove its leading tabs".to_owned());
    }
    Ok(())
}

/// Inside `$(…)`, bash ends a here-document early at a line that starts with the delimiter
/// and holds a `)` anywhere after it (bash 5.2: `EOF)`, `EOF x)`, `EOF$(cmd)`).
fn bash_ends_subst_heredoc(
    value: &str,
    delim: &str,
    strip_tabs: bool,
    line: Option<&(String, String)>,
) -> bool {
    let Some((pre, post)) = line else {
        // Refused when the template is compiled (see `Lexer::finish`).
        return true;
    };
    let full = format!("{pre}{value}{post}");
    let full = if strip_tabs {
        full.trim_start_matches('\t')
    } else {
        &full
    };
    ends_subst_heredoc(full, delim)
}

fn ends_subst_heredoc(line: &str, delim: &str) -> bool {
    line.strip_prefix(delim)
        .is_some_and(|rest| rest.contains(')'))
}

/// Whether dash 0.5 loses a byte of this here-document line: one that starts with a prefix of
/// the delimiter followed by a byte of a non-ASCII character.
fn dash_drops_after(line: &[u8], delim: &[u8]) -> bool {
    (1..=delim.len())
        .any(|k| line.starts_with(&delim[..k]) && line.get(k).is_some_and(|&b| b >= 0x80))
}

/// Inside backquotes, `\`, `` ` `` and `$` (and `"` when the backquotes stand in `"…"`) lose
/// one backslash before the command is parsed. Escaping `"` there also keeps bash from
/// misreading an unescaped `"` inside `"`…`"`, which POSIX leaves undefined.
fn escape_backquoted(s: &str, in_dq: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '\\' | '`' | '$') || in_dq && c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn safe(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'@' | b'%' | b'+' | b'='
            )
    })
}

fn single_quote(s: &str) -> String {
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
    q
}

/// Quotes `s` as one POSIX shell word: left bare when it has only safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
#[must_use]
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && safe(s) && !s.starts_with('=') && !s.starts_with('-') {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(single_quote(s))
    }
}

/// A nested state of the shell's reader.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Frame {
    /// Command text: the top level, `$(…)` / `<(…)` / `>(…)` (`paren`), or backquotes.
    Cmd { kind: CmdKind, parens: u32 },
    /// `"…"`.
    Dq,
    /// `'…'`.
    Sq,
    /// `$'…'`, with a pending backslash.
    DollarSq { bs: bool },
    /// `${…}`: inside double quotes or not, and which part.
    Param { quoted: bool, part: ParamPart },
    /// `$((…))`, `((…))` (closed by `))`) or `$[…]` (closed by `]`).
    Arith {
        bracket: bool,
        depth: u32,
        half: bool,
    },
    /// `# …` to the end of the line.
    Comment,
    /// The delimiter word after `<<`.
    HeredocWord {
        strip: bool,
        delim: String,
        quoted: bool,
        quote: Option<char>,
        bs: bool,
    },
    /// A here-document body, up to its delimiter line.
    Heredoc {
        strip: bool,
        delim: String,
        quoted: bool,
        line: String,
        bs: bool,
        /// Placeholders on the current line (indices into the sites).
        holes: Vec<usize>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmdKind {
    Top,
    Paren,
    Backquote { bs: bool, in_dq: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ParamPart {
    /// The name (`#` first: the length).
    Name { len: u32 },
    /// After `:`, before the operator.
    Colon,
    /// The word after `-`, `=`, `?`, `+` or a pattern after `#`, `%`.
    Word,
    /// The rest of `${x/…}`, `${x:1:2}` and other forms that are not POSIX.
    Other,
}

/// One character of lookahead the reader is waiting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    Backslash,
    Dollar,
    DollarParen,
    Lt,
    Gt,
    LtLt,
    LParen,
}

/// A here-document announced by `<<WORD`, waiting for the end of its line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Announced {
    strip: bool,
    delim: String,
    quoted: bool,
    /// How many frames were open when it was announced.
    depth: usize,
}

/// The part of the reader's state that must be the same before and after a block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    frames: Vec<Frame>,
    pending: Pending,
    heredocs: Vec<Announced>,
}

/// Reads a shell template's literal text and gives each placeholder its [`Site`].
#[derive(Clone, Debug)]
pub struct Lexer {
    state: State,
    /// At the start of a word (where `#` starts a comment).
    word_start: bool,
    /// After a block whose body left `word_start` different: unknown.
    word_start_unknown: bool,
    /// The current word, while it may still be `case`.
    word: String,
    /// Set when the reader lost track; every later placeholder is refused with this.
    lost: Option<Refusal>,
    /// The sites found so far (heredoc lines are completed when their line ends).
    sites: Vec<Result<Site, Refusal>>,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new()
    }
}

/// What a block's body did to the reader, compared with the state before it.
#[derive(Debug)]
pub struct Snapshot(State, bool, usize);

impl Lexer {
    /// A reader at the start of a script.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: State {
                frames: vec![Frame::Cmd {
                    kind: CmdKind::Top,
                    parens: 0,
                }],
                pending: Pending::None,
                heredocs: Vec::new(),
            },
            word_start: true,
            word_start_unknown: false,
            word: String::new(),
            lost: None,
            sites: Vec::new(),
        }
    }

    /// Reads literal template text.
    pub fn text(&mut self, s: &str) {
        for c in s.chars() {
            self.feed(c);
        }
    }

    /// A raw `{{{x}}}` piece: the author answers for its text; it continues the word.
    pub fn raw_piece(&mut self) {
        self.resolve_pending_for_word();
        self.state.pending = Pending::None;
        self.word_start = false;
        self.word_start_unknown = false;
        self.word.clear();
        if let Some(Frame::Heredoc { line, .. }) = self.state.frames.last_mut() {
            // Unknown text on this line: it can no longer be compared with the delimiter.
            line.push('\u{0}');
        }
    }

    /// A placeholder: its site, or why it is refused. Sites are numbered in call order.
    pub fn placeholder(&mut self) -> usize {
        let r = self.site();
        self.sites.push(r);
        let index = self.sites.len() - 1;
        self.word_start = false;
        self.word_start_unknown = false;
        self.word.clear();
        if let Some(Frame::Heredoc {
            line,
            holes,
            quoted,
            ..
        }) = self.state.frames.last_mut()
        {
            if *quoted {
                holes.push(index);
                line.push('\u{0}');
            }
        }
        index
    }

    /// The sites, in placeholder order, once the whole template is read.
    #[must_use]
    pub fn finish(mut self) -> Vec<Result<Site, Refusal>> {
        // A here-document line still open at the end: what follows it is nothing.
        self.end_heredoc_line();
        for s in &mut self.sites {
            if let Ok(Site {
                context:
                    Context::Heredoc {
                        in_subst: true,
                        line: None,
                        ..
                    },
                ..
            }) = s
            {
                *s = Err(refusal(
                    "inside `$(…)` bash ends a here-document at any line that starts with its delimiter and holds a `)`; with several placeholders (or a block) on one line that cannot be checked",
                    "put one placeholder per line in a here-document inside `$(…)`, or move the here-document out of `$(…)`",
                ));
            }
        }
        self.sites
    }

    /// The state before a block's body, to compare with [`Lexer::end_body`].
    #[must_use]
    pub fn begin_body(&self) -> Snapshot {
        Snapshot(self.state.clone(), self.word_start, self.sites.len())
    }

    /// Checks that a block's body (read since `before`) left the quoting state as it found
    /// it, so every repetition and the text after the block are read in the same state. The
    /// reader is reset to `before` for the next body.
    ///
    /// # Errors
    /// The body changed the state.
    pub fn end_body(&mut self, before: &Snapshot) -> Result<(), Refusal> {
        let changed = normalized(&self.state) != normalized(&before.0);
        if self.word_start != before.1 {
            self.word_start_unknown = true;
        }
        let now = describe(&self.state);
        self.state = before.0.clone();
        self.word_start = before.1;
        self.word.clear();
        if let Some(Frame::Heredoc { line, .. }) = self.state.frames.last_mut() {
            // A repeated body makes the line's text unknown: values are checked against the
            // delimiter on their own.
            line.push('\u{0}');
            for s in &mut self.sites[before.2..] {
                if let Ok(Site {
                    context: Context::Heredoc { line, .. },
                    ..
                }) = s
                {
                    *line = None;
                }
            }
        }
        if changed {
            return Err(refusal(
                format!(
                    "this block's body leaves the shell in a different quoting state ({now}) than it starts in ({})",
                    describe(&before.0)
                ),
                "close every quote, `$(`, `${` and here-document that the block opens inside the block itself",
            ));
        }
        Ok(())
    }

    fn site(&mut self) -> Result<Site, Refusal> {
        if let Some(r) = &self.lost {
            return Err(r.clone());
        }
        for f in &self.state.frames {
            if let Frame::Cmd {
                kind: CmdKind::Backquote { bs: true, .. },
                ..
            } = f
            {
                return Err(backslash_refusal());
            }
        }
        match self.state.pending {
            Pending::Backslash => return Err(backslash_refusal()),
            Pending::Dollar | Pending::DollarParen => {
                return Err(refusal(
                    "a `$` right before a placeholder would make the value part of an expansion",
                    "put the value in a variable first (`v={{…}}` then `\"$v\"`), or write `'$'{{…}}` for a literal `$`",
                ));
            }
            Pending::LtLt => {
                return Err(refusal(
                    "a placeholder cannot be a here-document delimiter",
                    "write the delimiter literally, e.g. `<<'EOF'`",
                ));
            }
            Pending::Lt | Pending::Gt | Pending::LParen => {
                self.resolve_pending_for_word();
            }
            Pending::None => {}
        }
        let mut backquotes = Vec::new();
        for f in &self.state.frames {
            match f {
                Frame::Cmd {
                    kind: CmdKind::Backquote { in_dq, .. },
                    ..
                } => backquotes.push(*in_dq),
                Frame::Param { quoted: true, .. } => {
                    return Err(refusal(
                        "a placeholder inside `\"${…}\"` cannot be quoted: single quotes are literal there",
                        "assign the value to a variable first (`v={{…}}`) and write `\"${x:-$v}\"`",
                    ));
                }
                Frame::Param {
                    part: ParamPart::Name { .. } | ParamPart::Colon,
                    ..
                } => {
                    return Err(refusal(
                        "a placeholder cannot be (part of) a variable name",
                        "use a fixed variable name; values go after the operator, e.g. `${x:-{{…}}}`",
                    ));
                }
                Frame::Param {
                    part: ParamPart::Other,
                    ..
                } => {
                    return Err(refusal(
                        "a placeholder inside this `${…}` form (not `-`, `=`, `?`, `+`, `#` or `%`) is not supported",
                        "assign the value to a variable first (`v={{…}}`) and use `$v` in the expansion",
                    ));
                }
                Frame::DollarSq { .. } => {
                    return Err(refusal(
                        "a placeholder inside `$'…'` is not supported: backslashes there are escapes, and `sh` may not know `$'…'` at all",
                        "use `'…'` or `\"…\"` around the placeholder",
                    ));
                }
                Frame::HeredocWord { .. } => {
                    return Err(refusal(
                        "a placeholder cannot be a here-document delimiter",
                        "write the delimiter literally, e.g. `<<'EOF'`",
                    ));
                }
                Frame::Heredoc { quoted: false, .. } => {
                    return Err(refusal(
                        "a placeholder in a here-document with an unquoted delimiter would be expanded: `$(…)` and backquotes in the value would run",
                        "quote the delimiter (`<<'EOF'`) to make the body literal, or pass the value as an argument: `printf '%s\\n' {{…}} | command`",
                    ));
                }
                _ => {}
            }
        }
        let in_subst = self.state.frames.iter().any(|f| {
            matches!(
                f,
                Frame::Cmd {
                    kind: CmdKind::Paren,
                    ..
                }
            )
        });
        let context = match self.state.frames.last().expect("a frame") {
            Frame::Cmd { .. } => Context::Bare,
            Frame::Param { .. } => Context::ParamWord,
            Frame::Dq => Context::DoubleQuoted,
            Frame::Sq => Context::SingleQuoted,
            Frame::Comment => Context::Comment,
            Frame::Arith { .. } => Context::Arithmetic,
            Frame::Heredoc {
                strip,
                delim,
                line,
                holes,
                ..
            } => {
                let pre = line.trim_start_matches('\t');
                let known = holes.is_empty() && !line.contains('\u{0}');
                Context::Heredoc {
                    delim: delim.clone(),
                    strip_tabs: *strip,
                    in_subst,
                    line: known.then(|| {
                        (
                            if *strip { pre } else { line.as_str() }.to_owned(),
                            String::new(),
                        )
                    }),
                }
            }
            Frame::DollarSq { .. } | Frame::HeredocWord { .. } => {
                unreachable!("refused above")
            }
        };
        Ok(Site {
            context,
            backquotes,
        })
    }

    /// `<`, `>` or `(` before a word that is not theirs: they were operators.
    fn resolve_pending_for_word(&mut self) {
        match self.state.pending {
            Pending::Lt | Pending::Gt => {
                self.state.pending = Pending::None;
                self.word_start = true;
            }
            Pending::LParen => {
                self.state.pending = Pending::None;
                if let Some(Frame::Cmd { parens, .. }) = self.state.frames.last_mut() {
                    *parens += 1;
                }
                self.word_start = true;
            }
            _ => {}
        }
    }

    fn lose(&mut self, message: &str, help: &str) {
        if self.lost.is_none() {
            self.lost = Some(refusal(message, help));
        }
    }

    /// One character of the template, through the backslash removal of each enclosing
    /// backquote substitution.
    fn feed(&mut self, c: char) {
        let mut chars: Vec<char> = vec![c];
        let mut i = 0;
        while i < self.state.frames.len() {
            let in_dq = match &self.state.frames[i] {
                Frame::Cmd {
                    kind: CmdKind::Backquote { in_dq, .. },
                    ..
                } => Some(*in_dq),
                _ => None,
            };
            if let Some(in_dq) = in_dq {
                let mut out = Vec::with_capacity(2);
                for ch in chars {
                    let Frame::Cmd {
                        kind: CmdKind::Backquote { bs, .. },
                        ..
                    } = &mut self.state.frames[i]
                    else {
                        unreachable!("checked above")
                    };
                    if *bs {
                        *bs = false;
                        if !(matches!(ch, '\\' | '`' | '$') || in_dq && ch == '"') {
                            out.push('\\');
                        }
                        out.push(ch);
                    } else if ch == '\\' {
                        *bs = true;
                    } else if ch == '`' {
                        self.close_to(i);
                        self.word_start = false;
                        self.word.clear();
                        return;
                    } else {
                        out.push(ch);
                    }
                }
                chars = out;
            }
            i += 1;
        }
        for ch in chars {
            self.step(ch);
        }
    }

    /// Closes frame `i` and everything inside it.
    fn close_to(&mut self, i: usize) {
        if self.state.frames.len() > i + 1 {
            match self.state.frames.last() {
                Some(Frame::Cmd { .. } | Frame::Comment) => {}
                _ => self.lose(
                    "a quote or expansion is left open inside a command substitution",
                    "close every quote inside `$(…)` and backquotes",
                ),
            }
        }
        if self.state.heredocs.iter().any(|h| h.depth > i) {
            self.lose(
                "a here-document is announced inside a command substitution that ends on the same line",
                "put the here-document's command on its own lines",
            );
        }
        self.state.frames.truncate(i);
        self.state.pending = Pending::None;
    }

    fn top(&mut self) -> &mut Frame {
        self.state.frames.last_mut().expect("a frame")
    }

    fn push(&mut self, f: Frame) {
        self.state.frames.push(f);
    }

    fn pop(&mut self) {
        if self.state.frames.len() > 1 {
            self.state.frames.pop();
        }
    }

    fn step(&mut self, c: char) {
        // Lookahead decisions first, in the frame that asked for them.
        match self.state.pending {
            Pending::None => {}
            Pending::Backslash => {
                self.state.pending = Pending::None;
                if c != '\n' {
                    self.word_start = false;
                    self.word.push(c);
                }
                return;
            }
            Pending::Dollar => {
                self.state.pending = Pending::None;
                let quoted = matches!(self.top(), Frame::Dq);
                match c {
                    '(' => {
                        self.state.pending = Pending::DollarParen;
                        return;
                    }
                    '{' => {
                        self.push(Frame::Param {
                            quoted: quoted
                                || matches!(
                                    self.state.frames.last(),
                                    Some(Frame::Param { quoted: true, .. })
                                ),
                            part: ParamPart::Name { len: 0 },
                        });
                        return;
                    }
                    '\'' if !quoted => {
                        self.push(Frame::DollarSq { bs: false });
                        return;
                    }
                    '[' => {
                        self.push(Frame::Arith {
                            bracket: true,
                            depth: 0,
                            half: false,
                        });
                        return;
                    }
                    _ => {}
                }
            }
            Pending::DollarParen => {
                self.state.pending = Pending::None;
                if c == '(' {
                    self.push(Frame::Arith {
                        bracket: false,
                        depth: 0,
                        half: false,
                    });
                    return;
                }
                self.push(Frame::Cmd {
                    kind: CmdKind::Paren,
                    parens: 0,
                });
                self.word_start = true;
                self.word.clear();
            }
            Pending::Lt | Pending::Gt => {
                let lt = self.state.pending == Pending::Lt;
                self.state.pending = Pending::None;
                if c == '(' {
                    self.push(Frame::Cmd {
                        kind: CmdKind::Paren,
                        parens: 0,
                    });
                    self.word_start = true;
                    return;
                }
                if lt && c == '<' {
                    self.state.pending = Pending::LtLt;
                    return;
                }
                self.word_start = true;
                if c == '&' || c == '>' || c == '|' {
                    return;
                }
            }
            Pending::LtLt => {
                self.state.pending = Pending::None;
                if c == '<' {
                    // `<<<` here-string: an ordinary word follows.
                    self.word_start = true;
                    return;
                }
                let strip = c == '-';
                self.push(Frame::HeredocWord {
                    strip,
                    delim: String::new(),
                    quoted: false,
                    quote: None,
                    bs: false,
                });
                if strip {
                    return;
                }
            }
            Pending::LParen => {
                self.state.pending = Pending::None;
                if c == '(' {
                    self.push(Frame::Arith {
                        bracket: false,
                        depth: 0,
                        half: false,
                    });
                    return;
                }
                if let Frame::Cmd { parens, .. } = self.top() {
                    *parens += 1;
                }
                self.word_start = true;
            }
        }

        let depth = self.state.frames.len();
        match self.top().clone() {
            Frame::Cmd { kind, parens } => self.step_cmd(c, kind, parens),
            Frame::Dq => match c {
                '"' => {
                    self.pop();
                    self.word_start = false;
                }
                '\\' => self.state.pending = Pending::Backslash,
                '$' => self.state.pending = Pending::Dollar,
                '`' => self.push(Frame::Cmd {
                    kind: CmdKind::Backquote {
                        bs: false,
                        in_dq: true,
                    },
                    parens: 0,
                }),
                _ => {}
            },
            Frame::Sq => {
                if c == '\'' {
                    self.pop();
                    self.word_start = false;
                }
            }
            Frame::DollarSq { bs } => {
                if bs {
                    if c == '\'' {
                        self.lose(
                            "`\\'` inside `$'…'` ends the string in `sh` (dash) but not in bash, so what follows cannot be read safely",
                            "use `'…'` or `\"…\"` instead of `$'…'`",
                        );
                    }
                    *self.top() = Frame::DollarSq { bs: false };
                } else if c == '\\' {
                    *self.top() = Frame::DollarSq { bs: true };
                } else if c == '\'' {
                    self.pop();
                }
            }
            Frame::Param { quoted, part } => self.step_param(c, quoted, part),
            Frame::Arith {
                bracket,
                depth: d,
                half,
            } => {
                if half {
                    if c == ')' {
                        self.pop();
                        self.word_start = false;
                        return;
                    }
                    self.lose(
                        "`$((…)` is closed by a single `)`, which `sh` reads differently from bash",
                        "write `$( (…) )` for a subshell or close arithmetic with `))`",
                    );
                    self.pop();
                    return;
                }
                if matches!(c, '\'' | '"' | '`' | '\\') {
                    self.lose(
                        "quotes and backslashes inside arithmetic are read differently by different shells",
                        "compute the value outside the arithmetic (`n=$(…)`) and use `$((n))`",
                    );
                }
                let next = match (c, bracket) {
                    ('(' | '[', _) => Frame::Arith {
                        bracket,
                        depth: d + 1,
                        half,
                    },
                    (')', false) | (']', true) if d == 0 => {
                        if bracket {
                            self.pop();
                            return;
                        }
                        Frame::Arith {
                            bracket,
                            depth: 0,
                            half: true,
                        }
                    }
                    (')' | ']', _) => Frame::Arith {
                        bracket,
                        depth: d.saturating_sub(1),
                        half,
                    },
                    _ => return,
                };
                *self.top() = next;
            }
            Frame::Comment => {
                if c == '\n' {
                    self.pop();
                    self.step(c);
                }
            }
            Frame::HeredocWord {
                strip,
                mut delim,
                mut quoted,
                mut quote,
                bs,
            } => {
                let mut bs_next = false;
                if bs {
                    delim.push(c);
                } else if let Some(q) = quote {
                    if c == q {
                        quote = None;
                    } else {
                        delim.push(c);
                    }
                } else {
                    match c {
                        ' ' | '\t' if delim.is_empty() && !quoted => return,
                        '\'' | '"' => {
                            quote = Some(c);
                            quoted = true;
                        }
                        '\\' => {
                            bs_next = true;
                            quoted = true;
                        }
                        ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                            self.pop();
                            self.state.heredocs.push(Announced {
                                strip,
                                delim,
                                quoted,
                                depth: depth - 1,
                            });
                            self.word_start = true;
                            self.step(c);
                            return;
                        }
                        _ => delim.push(c),
                    }
                }
                *self.top() = Frame::HeredocWord {
                    strip,
                    delim,
                    quoted,
                    quote,
                    bs: bs_next,
                };
            }
            Frame::Heredoc {
                strip,
                delim,
                quoted,
                mut line,
                bs,
                holes,
            } => {
                if c == '\n' && (quoted || !bs) {
                    let body = if strip {
                        line.trim_start_matches('\t')
                    } else {
                        line.as_str()
                    };
                    if body == delim {
                        self.pop();
                        self.next_heredoc();
                    } else {
                        if ends_subst_heredoc(body, &delim) {
                            self.lose(
                                "bash ends a here-document inside `$(…)` at a line that starts with its delimiter and holds a `)`, other shells do not",
                                "end the here-document with its delimiter alone on a line",
                            );
                        }
                        self.end_heredoc_line();
                    }
                    return;
                }
                let bs_next = !quoted && c == '\\' && !bs;
                if c == '\n' {
                    // A continued line in an unquoted body: the backslash and newline vanish.
                    line.pop();
                } else {
                    line.push(c);
                }
                *self.top() = Frame::Heredoc {
                    strip,
                    delim,
                    quoted,
                    line,
                    bs: bs_next,
                    holes,
                };
            }
        }
    }

    fn step_cmd(&mut self, c: char, kind: CmdKind, parens: u32) {
        let at_word_start = self.word_start;
        let word_end = |me: &mut Self| {
            if me.word == "case"
                && me.state.frames.iter().any(|f| {
                    matches!(
                        f,
                        Frame::Cmd {
                            kind: CmdKind::Paren,
                            ..
                        }
                    )
                })
            {
                me.lose(
                    "a `case` statement inside `$(…)` has patterns ending in `)`, which this reader cannot tell from the end of `$(…)`",
                    "move the `case` statement out of `$(…)` (e.g. into a function) or use backquotes",
                );
            }
            me.word.clear();
            me.word_start = true;
        };
        match c {
            '\\' => {
                self.state.pending = Pending::Backslash;
                self.word_start = false;
            }
            '\'' => {
                self.word.clear();
                self.push(Frame::Sq);
                self.word_start = false;
            }
            '"' => {
                self.word.clear();
                self.push(Frame::Dq);
                self.word_start = false;
            }
            '`' => {
                self.word.clear();
                self.push(Frame::Cmd {
                    kind: CmdKind::Backquote {
                        bs: false,
                        in_dq: false,
                    },
                    parens: 0,
                });
                self.word_start = true;
            }
            '$' => {
                self.word.clear();
                self.state.pending = Pending::Dollar;
                self.word_start = false;
            }
            '#' if at_word_start || self.word_start_unknown => {
                if self.word_start_unknown {
                    self.lose(
                        "after this block it is unknown whether `#` starts a comment",
                        "put a space or nothing consistently before `#` after the block",
                    );
                }
                self.push(Frame::Comment);
            }
            ' ' | '\t' | ';' | '&' | '|' => word_end(self),
            '\n' => {
                word_end(self);
                self.next_heredoc();
            }
            '<' => {
                word_end(self);
                self.state.pending = Pending::Lt;
            }
            '>' => {
                word_end(self);
                self.state.pending = Pending::Gt;
            }
            '(' => {
                word_end(self);
                if at_word_start {
                    self.state.pending = Pending::LParen;
                } else if let Frame::Cmd { parens, .. } = self.top() {
                    *parens += 1;
                }
            }
            ')' => {
                word_end(self);
                if kind == CmdKind::Paren && parens == 0 {
                    let i = self.state.frames.len() - 1;
                    self.close_to(i);
                    self.word_start = false;
                } else if let Frame::Cmd { parens, .. } = self.top() {
                    *parens = parens.saturating_sub(1);
                }
            }
            _ => {
                if self.word.len() < 8 {
                    self.word.push(c);
                }
                self.word_start = false;
            }
        }
        self.word_start_unknown = false;
    }

    fn step_param(&mut self, c: char, quoted: bool, part: ParamPart) {
        let set = |me: &mut Self, part| *me.top() = Frame::Param { quoted, part };
        match part {
            ParamPart::Name { len } => match c {
                '}' => self.pop(),
                '#' if len == 0 => set(self, ParamPart::Name { len: 1 }),
                '#' | '%' | '-' | '=' | '?' | '+' => set(self, ParamPart::Word),
                ':' => set(self, ParamPart::Colon),
                c if c.is_alphanumeric() || matches!(c, '_' | '@' | '*' | '$' | '!') => {
                    set(self, ParamPart::Name { len: len + 1 });
                }
                _ => set(self, ParamPart::Other),
            },
            ParamPart::Colon => {
                if matches!(c, '-' | '=' | '?' | '+') {
                    set(self, ParamPart::Word);
                } else {
                    set(self, ParamPart::Other);
                    self.step_param(c, quoted, ParamPart::Other);
                }
            }
            ParamPart::Word | ParamPart::Other => match c {
                '}' => {
                    self.pop();
                    self.word_start = false;
                }
                '\\' => self.state.pending = Pending::Backslash,
                '$' => self.state.pending = Pending::Dollar,
                '"' => self.push(Frame::Dq),
                '\'' if !quoted => self.push(Frame::Sq),
                '\'' => self.lose(
                    "a `'` inside `\"${…}\"` is literal in bash but a quote in other shells",
                    "assign the value to a variable first and use `\"${x:-$v}\"`",
                ),
                '`' => self.push(Frame::Cmd {
                    kind: CmdKind::Backquote {
                        bs: false,
                        in_dq: quoted,
                    },
                    parens: 0,
                }),
                '{' => self.lose(
                    "a `{` inside `${…}` is read differently by different shells",
                    "assign the word to a variable first",
                ),
                _ => {}
            },
        }
    }

    /// At an unquoted newline: the next announced here-document's body starts.
    fn next_heredoc(&mut self) {
        if self.state.heredocs.is_empty() {
            return;
        }
        let h = self.state.heredocs.remove(0);
        self.push(Frame::Heredoc {
            strip: h.strip,
            delim: h.delim,
            quoted: h.quoted,
            line: String::new(),
            bs: false,
            holes: Vec::new(),
        });
    }

    /// Completes the sites of the placeholders on the here-document line that just ended.
    fn end_heredoc_line(&mut self) {
        let Some(Frame::Heredoc { line, holes, .. }) = self.state.frames.last_mut() else {
            return;
        };
        let text = std::mem::take(line);
        let holes = std::mem::take(holes);
        if let [one] = holes[..] {
            let exact = text.matches('\u{0}').count() == 1;
            let after = text.rsplit('\u{0}').next().unwrap_or("").to_owned();
            if let Some(Ok(Site {
                context: Context::Heredoc { line, .. },
                ..
            })) = self.sites.get_mut(one)
            {
                match line {
                    Some((_, post)) if exact => *post = after,
                    _ => *line = None,
                }
            }
        } else {
            for i in holes {
                if let Some(Ok(Site {
                    context: Context::Heredoc { line, .. },
                    ..
                })) = self.sites.get_mut(i)
                {
                    *line = None;
                }
            }
        }
    }
}

fn backslash_refusal() -> Refusal {
    refusal(
        "a `\\` right before a placeholder would escape the quote that keeps the value inert",
        "remove the backslash, or write a literal backslash in quotes: `'\\'{{…}}`",
    )
}

/// The state without the here-document line being read (a block may add to it).
fn normalized(s: &State) -> State {
    let mut s = s.clone();
    for f in &mut s.frames {
        if let Frame::Heredoc {
            line, holes, bs, ..
        } = f
        {
            line.clear();
            holes.clear();
            *bs = false;
        }
    }
    s
}

/// Names the innermost state, for messages.
fn describe(s: &State) -> &'static str {
    match s.frames.last() {
        Some(Frame::Cmd {
            kind: CmdKind::Top, ..
        }) => {
            if s.heredocs.is_empty() {
                "unquoted"
            } else {
                "a here-document announced"
            }
        }
        Some(Frame::Cmd {
            kind: CmdKind::Paren,
            ..
        }) => "inside `$(…)`",
        Some(Frame::Cmd {
            kind: CmdKind::Backquote { .. },
            ..
        }) => "inside backquotes",
        Some(Frame::Dq) => "inside `\"…\"`",
        Some(Frame::Sq) => "inside `'…'`",
        Some(Frame::DollarSq { .. }) => "inside `$'…'`",
        Some(Frame::Param { .. }) => "inside `${…}`",
        Some(Frame::Arith { .. }) => "inside arithmetic",
        Some(Frame::Comment) => "in a comment",
        Some(Frame::HeredocWord { .. }) => "in a here-document delimiter",
        Some(Frame::Heredoc { .. }) => "in a here-document",
        None => "unknown",
    }
}
