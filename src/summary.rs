//! The summary: how a run looks on the terminal, and how an error is rendered. Below `cmd/`,
//! the only module that prints (besides `signals`' one line when a signal ends the process);
//! commands print their own output and notes.
//!
//! [`Reporter`] receives what the runner decided (stage started, job finished, stage done) and
//! shows live progress: indicatif bars on a terminal, plain lines otherwise. At the end it prints
//! the per-stage table and every failed job with its code, log path and last stderr lines.
//! [`RunReport`] is the same summary for machines (`summary.json`, `--json`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::count;
use crate::manifest::BackendKind;
use crate::outcome::{JobRecord, Outcome, Stats, Verdict};

/// A job that did not succeed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedJob {
    /// Index.
    pub index: usize,
    /// Id.
    pub id: String,
    /// A short form of the job's value (`{i = 7}`), when its id is a hash of the value rather
    /// than an `id` the job names itself: what a person recognises the job by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Final outcome.
    pub outcome: Outcome,
    /// Attempts made.
    pub attempts: u32,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Its stdout log, if it printed anything.
    pub stdout_log: Option<PathBuf>,
    /// Its stderr log, if it printed anything.
    pub stderr_log: Option<PathBuf>,
    /// The last lines of its stderr.
    pub stderr_tail: Option<String>,
}

/// One stage's summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageReport {
    /// Name.
    pub name: String,
    /// Backend used.
    pub backend: BackendKind,
    /// Job count, when known.
    pub jobs: Option<usize>,
    /// Final outcome counts.
    pub stats: Stats,
    /// Jobs whose earlier success was reused (resume).
    pub reused: usize,
    /// Wall time of the stage.
    pub wall_seconds: Option<f64>,
    /// Why it did not start, if it did not.
    pub not_started: Option<String>,
    /// Its ordered results file.
    pub results: Option<PathBuf>,
    /// Its failed jobs.
    pub failed: Vec<FailedJob>,
}

/// A run's summary: printed at the end, written to `summary.json`, printed by `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Format version of this record.
    pub format_version: u32,
    /// Workflow name.
    pub workflow: String,
    /// Run id.
    pub run: String,
    /// Manifest path.
    pub manifest: PathBuf,
    /// Manifest hash.
    pub manifest_sha256: String,
    /// poolparty version.
    pub poolparty_version: String,
    /// Start time (Unix seconds).
    pub started: f64,
    /// End time.
    pub ended: Option<f64>,
    /// Overall verdict.
    pub verdict: Verdict,
    /// The workflow's state folder.
    pub state_dir: PathBuf,
    /// Per stage.
    pub stages: Vec<StageReport>,
}

/// How much to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Only the final summary's failures and errors.
    Quiet,
    /// Progress and the summary.
    Normal,
    /// Also every job as it ends.
    Verbose,
}

/// Live progress and the final summary, on stderr.
pub struct Reporter {
    verbosity: Verbosity,
    color: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<usize, ProgressBar>,
    names: HashMap<usize, String>,
    counts: HashMap<usize, (usize, usize, usize)>,
    last_plain: Instant,
}

impl Reporter {
    /// A reporter; progress bars only when stderr is a terminal and not quiet.
    #[must_use]
    pub fn new(verbosity: Verbosity, color: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = (tty && verbosity == Verbosity::Normal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)));
        Self {
            verbosity,
            color,
            multi,
            bars: HashMap::new(),
            names: HashMap::new(),
            counts: HashMap::new(),
            last_plain: Instant::now(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// A diagnostic that does not stop the run (a stage that could not be planned).
    pub fn diagnostic(&self, e: &crate::error::Error) {
        self.line(&render_diagnostic(e, self.color));
    }

    /// A notice.
    pub fn message(&self, text: &str) {
        if self.verbosity > Verbosity::Quiet {
            self.line(&format!("poolparty: {text}"));
        }
    }

    /// A stage started with `total` jobs.
    pub fn stage_started(&mut self, stage: usize, name: &str, total: usize, backend: BackendKind) {
        self.names.insert(stage, name.to_owned());
        self.counts.insert(stage, (total, 0, 0));
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(500));
            self.bars.insert(stage, bar);
        } else if self.verbosity > Verbosity::Quiet {
            self.line(&format!(
                "stage `{name}`: started, {} ({backend})",
                count(total, "job")
            ));
        }
    }

    /// A stage did not start.
    pub fn stage_skipped(&self, name: &str, reason: &str) {
        if self.verbosity > Verbosity::Quiet {
            self.line(&format!(
                "stage `{name}`: {} ({reason})",
                self.paint("33", "not run")
            ));
        }
    }

    fn bump(&mut self, stage: usize, failed: bool) {
        let e = self.counts.entry(stage).or_insert((0, 0, 0));
        e.1 += 1;
        if failed {
            e.2 += 1;
        }
        let (total, done, nfailed) = *e;
        if let Some(bar) = self.bars.get(&stage) {
            bar.inc(1);
            if nfailed > 0 {
                bar.set_message(format!("{nfailed} failed"));
            }
        } else if self.verbosity == Verbosity::Normal
            && self.last_plain.elapsed() >= Duration::from_secs(10)
        {
            self.last_plain = Instant::now();
            let name = self.names.get(&stage).cloned().unwrap_or_default();
            self.line(&format!(
                "stage `{name}`: {done}/{total} done, {nfailed} failed"
            ));
        }
    }

    /// A job reached its final outcome; `label` is its [`job_label`].
    pub fn job_finished(&mut self, stage: usize, r: &JobRecord, label: Option<&str>) {
        let failed = !r.outcome.is_success();
        let name = self.names.get(&stage).cloned().unwrap_or_default();
        if self.verbosity == Verbosity::Verbose
            || (failed
                && self.verbosity > Verbosity::Quiet
                && !matches!(r.outcome, Outcome::NotRun { .. }))
        {
            let what = if failed {
                self.paint("31", &r.outcome.describe())
            } else {
                r.outcome.describe()
            };
            let label = label.map_or_else(String::new, |l| format!(" {l}"));
            self.line(&format!(
                "stage `{name}`: job {} `{}`{label} {what}",
                r.index, r.id
            ));
        }
        self.bump(stage, failed);
    }

    /// A job's earlier success was reused.
    pub fn job_reused(&mut self, stage: usize) {
        self.bump(stage, false);
    }

    /// A failed attempt will be retried; `label` is the job's [`job_label`].
    pub fn job_retrying(&self, stage: usize, r: &JobRecord, label: Option<&str>) {
        if self.verbosity > Verbosity::Quiet {
            let name = self.names.get(&stage).cloned().unwrap_or_default();
            let label = label.map_or_else(String::new, |l| format!(" {l}"));
            self.line(&format!(
                "stage `{name}`: job {} `{}`{label} {} on attempt {}; retrying",
                r.index,
                r.id,
                r.outcome.describe(),
                r.attempt
            ));
        }
    }

    /// A stage ended.
    pub fn stage_finished(&mut self, stage: usize, s: &StageReport) {
        if let Some(bar) = self.bars.remove(&stage) {
            bar.finish();
        }
        if self.multi.is_none() && self.verbosity > Verbosity::Quiet {
            self.line(&format!(
                "stage `{}`: done: {} succeeded, {} failed, {} not run in {}",
                s.name,
                s.stats.succeeded,
                s.stats.failed + s.stats.interrupted,
                s.stats.not_run,
                s.wall_seconds.map_or_else(String::new, secs)
            ));
        }
    }

    /// Prints the final table and failures.
    pub fn finish(&mut self, report: &RunReport) {
        for (_, bar) in self.bars.drain() {
            bar.abandon();
        }
        if let Some(m) = self.multi.take() {
            let _ = m.clear();
        }
        let text = format_report(report, self.color, self.verbosity);
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0).floor(), (s % 60.0).floor())
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0).floor()
        )
    }
}

/// The longest [`job_label`], in characters (longer values are cut, with `…`).
pub const LABEL_MAX: usize = 48;

/// A short form of a job's value (its canonical JSON) for failure lines: `None` when the job
/// names itself with an `id` field, else tables as `{a = 1, b = "x"}` (values as compact JSON)
/// and anything else as compact JSON, cut to [`LABEL_MAX`] characters.
#[must_use]
pub fn job_label(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = match &value {
        serde_json::Value::Object(map) if map.contains_key("id") => return None,
        serde_json::Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    };
    if text.chars().count() <= LABEL_MAX {
        return Some(text);
    }
    // Keep the closing bracket, so the cut value still reads as a table or an array.
    let close = match text.chars().next() {
        Some('{') => "}",
        Some('[') => "]",
        _ => "",
    };
    let mut cut: String = text.chars().take(LABEL_MAX - 1 - close.len()).collect();
    cut.push('…');
    cut.push_str(close);
    Some(cut)
}

/// Renders a diagnostic the way `main` prints errors.
///
/// A diagnostic stays readable whatever it quotes: source lines longer than
/// [`MAX_SOURCE_LINE`] bytes are cut to a window around their label (a generator may print one
/// 200 MB line), and any rendered line is cut at [`MAX_RENDERED_LINE`] characters.
#[must_use]
pub fn render_diagnostic(e: &dyn miette::Diagnostic, color: bool) -> String {
    let clipped = Clipped::new(e);
    let e: &dyn miette::Diagnostic = match &clipped {
        Some(c) => c,
        None => e,
    };
    let handler = if color {
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode())
    } else {
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
    }
    .with_width(100);
    let mut out = String::new();
    let _ = handler.render_report(&mut out, e);
    if out.lines().all(|l| l.len() <= MAX_RENDERED_LINE) {
        return out;
    }
    let mut short = String::with_capacity(out.len().min(1 << 20));
    for line in out.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if body.chars().count() > MAX_RENDERED_LINE {
            short.extend(body.chars().take(MAX_RENDERED_LINE));
            short.push('…');
            short.push_str(&line[body.len()..]);
        } else {
            short.push_str(line);
        }
    }
    short
}

/// Source lines longer than this (bytes) are shown as a window around their label.
pub const MAX_SOURCE_LINE: usize = 240;
/// Rendered diagnostic lines longer than this (characters) are cut.
pub const MAX_RENDERED_LINE: usize = 1000;
/// How much of a long source line is shown before its label starts.
const WINDOW_BEFORE: usize = 80;

/// A diagnostic whose source has its long lines cut: the same message, help and causes, with
/// the source and labels mapped to the shortened text. Lines are never removed, so line
/// numbers stay right; a column in a cut line counts from the window's start.
struct Clipped<'a> {
    inner: &'a dyn miette::Diagnostic,
    src: miette::NamedSource<String>,
    labels: Vec<miette::LabeledSpan>,
}

impl<'a> Clipped<'a> {
    /// `None` when the diagnostic has no source or no line that needs cutting.
    fn new(inner: &'a dyn miette::Diagnostic) -> Option<Self> {
        let code = inner.source_code()?;
        let all = code
            .read_span(&miette::SourceSpan::from(0..0), 0, usize::MAX)
            .ok()?;
        let text = String::from_utf8_lossy(all.data());
        if text.split(['\n', '\r']).all(|l| l.len() <= MAX_SOURCE_LINE) {
            return None;
        }
        let labels: Vec<miette::LabeledSpan> =
            inner.labels().map(Iterator::collect).unwrap_or_default();
        let mut focus: Vec<usize> = labels.iter().map(miette::LabeledSpan::offset).collect();
        focus.sort_unstable();
        let (short, map) = clip_lines(&text, &focus);
        let labels = labels
            .iter()
            .map(|l| {
                let start = map.map(l.offset(), false);
                let end = map.map(l.offset() + l.len(), true).max(start);
                let span = miette::SourceSpan::from(start..end);
                let label = l.label().map(str::to_owned);
                if l.primary() {
                    miette::LabeledSpan::new_primary_with_span(label, span)
                } else {
                    miette::LabeledSpan::new_with_span(label, span)
                }
            })
            .collect();
        let mut src = miette::NamedSource::new(all.name().unwrap_or_default(), short);
        if let Some(lang) = all.language() {
            src = src.with_language(lang);
        }
        Some(Self { inner, src, labels })
    }
}

impl std::fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.inner, f)
    }
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner, f)
    }
}

impl std::error::Error for Clipped<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl miette::Diagnostic for Clipped<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.help()
    }
    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.url()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        self.inner.related()
    }
    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.inner.diagnostic_source()
    }
}

/// Where the kept pieces of a clipped text came from: `(start, end, new_start)` in order.
struct OffsetMap(Vec<(usize, usize, usize)>);

impl OffsetMap {
    /// An offset of the original text in the clipped one; an offset in a cut piece goes to
    /// the `…` that replaced it (its start for a span start, its end for a span end).
    fn map(&self, offset: usize, is_end: bool) -> usize {
        let i = self.0.partition_point(|p| p.0 <= offset);
        if i == 0 {
            return 0;
        }
        let (start, end, new) = self.0[i - 1];
        if offset <= end {
            new + (offset - start)
        } else if is_end {
            self.0.get(i).map_or(new + (end - start), |p| p.2)
        } else {
            new + (end - start)
        }
    }
}

/// Cuts each line longer than [`MAX_SOURCE_LINE`] to a window starting a little before the
/// first `focus` offset in it (or at its start), marking cuts with `…`.
fn clip_lines(text: &str, focus: &[usize]) -> (String, OffsetMap) {
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut out = String::new();
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let end = text[at..].find(['\n', '\r']).map_or(text.len(), |n| at + n);
        let next = if text[end..].starts_with("\r\n") {
            end + 2
        } else {
            (end + 1).min(text.len())
        };
        if end - at <= MAX_SOURCE_LINE {
            pieces.push((at, next, out.len()));
            out.push_str(&text[at..next]);
        } else {
            let f = focus
                .iter()
                .copied()
                .find(|&f| f >= at && f <= end)
                .unwrap_or(at);
            let a = floor(f.saturating_sub(WINDOW_BEFORE).max(at));
            let b = floor((a + MAX_SOURCE_LINE).min(end));
            if a > at {
                out.push('…');
            }
            pieces.push((a, b, out.len()));
            out.push_str(&text[a..b]);
            if b < end {
                out.push('…');
            }
            pieces.push((end, next, out.len()));
            out.push_str(&text[end..next]);
        }
        at = next;
    }
    (out, OffsetMap(pieces))
}

/// The human summary of a report.
#[must_use]
pub fn format_report(report: &RunReport, color: bool, verbosity: Verbosity) -> String {
    use std::fmt::Write as _;
    let paint = |code: &str, t: &str| {
        if color {
            format!("\x1b[{code}m{t}\x1b[0m")
        } else {
            t.to_owned()
        }
    };
    let mut out = String::new();
    if verbosity > Verbosity::Quiet {
        let _ = writeln!(out, "\nworkflow `{}`, run {}", report.workflow, report.run);
        let width = report
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>7}  {:>9}  {:>6}  {:>7}  {:>7}  {:>8}",
            "stage", "jobs", "succeeded", "failed", "not run", "reused", "time"
        );
        for s in &report.stages {
            let jobs = s.jobs.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let failed = s.stats.failed + s.stats.interrupted;
            let _ = write!(
                out,
                "  {:<width$}  {:>7}  {:>9}  {:>6}  {:>7}  {:>7}  {:>8}",
                s.name,
                jobs,
                s.stats.succeeded,
                failed,
                s.stats.not_run,
                s.reused,
                s.wall_seconds.map_or_else(|| "-".to_owned(), secs)
            );
            if let Some(r) = &s.not_started {
                let _ = write!(out, "  not started: {r}");
            }
            out.push('\n');
        }
    }
    let failed: usize = report.stages.iter().map(|s| s.failed.len()).sum();
    if failed > 0 {
        let _ = writeln!(
            out,
            "\n{}:",
            paint("31;1", &format!("{} did not succeed", count(failed, "job")))
        );
        let mut shown = 0;
        for s in &report.stages {
            for f in &s.failed {
                if shown == 50 {
                    let _ = writeln!(
                        out,
                        "  … and {} more (see `poolparty status --json`)",
                        failed - shown
                    );
                    break;
                }
                shown += 1;
                let attempts = if f.attempts > 1 {
                    format!(" after {} attempts", f.attempts)
                } else {
                    String::new()
                };
                let label = f
                    .label
                    .as_ref()
                    .map_or_else(String::new, |l| format!(" {l}"));
                let _ = writeln!(
                    out,
                    "  {} job {} `{}`{label}: {}{attempts}",
                    s.name,
                    f.index,
                    f.id,
                    paint("31", &f.outcome.describe())
                );
                match (&f.stderr_log, &f.stdout_log) {
                    (Some(e), _) => {
                        let _ = writeln!(out, "    log: {}", e.display());
                    }
                    (None, Some(o)) => {
                        let _ = writeln!(out, "    log: {} (stderr was empty)", o.display());
                    }
                    (None, None) if matches!(f.outcome, Outcome::OutputLost { .. }) => {
                        let _ = writeln!(out, "    log: none (what it printed was not stored)");
                    }
                    (None, None) => {
                        let _ = writeln!(out, "    log: none (the job printed nothing)");
                    }
                }
                if let Some(t) = &f.stderr_tail {
                    for l in t.lines() {
                        let _ = writeln!(out, "    │ {}", crate::report::text::clean(l));
                    }
                }
            }
        }
    }
    // Nothing recorded and nothing expanded: `status` before the first run.
    if report.run == "none" && report.stages.iter().all(|s| s.jobs.is_none()) {
        let _ = writeln!(
            out,
            "\n{} for workflow `{}`: nothing is recorded yet (`poolparty run` starts one; exit code {})",
            paint("33;1", "no run yet"),
            report.workflow,
            report.verdict.exit_code()
        );
        return out;
    }
    let verdict = match report.verdict {
        Verdict::Succeeded => paint("32;1", "every job succeeded"),
        Verdict::JobsFailed => paint("31;1", "some jobs failed or did not run"),
        Verdict::Interrupted => paint("33;1", "interrupted"),
    };
    if verbosity == Verbosity::Quiet && report.verdict == Verdict::Succeeded {
        return out;
    }
    let total: usize = report.stages.iter().map(|s| s.stats.total).sum();
    let _ = writeln!(
        out,
        "\n{verdict} ({} in {}; exit code {})",
        count(total, "job"),
        count(report.stages.len(), "stage"),
        report.verdict.exit_code()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::{LABEL_MAX, job_label};

    #[test]
    fn a_job_with_an_id_needs_no_label() {
        assert_eq!(job_label(r#"{"id":"a","x":1}"#), None);
    }

    #[test]
    fn tables_read_like_toml_and_the_rest_as_json() {
        assert_eq!(job_label(r#"{"i":7}"#).as_deref(), Some("{i = 7}"));
        assert_eq!(
            job_label(r#"{"a":"x","b":[1,2]}"#).as_deref(),
            Some(r#"{a = "x", b = [1,2]}"#)
        );
        assert_eq!(job_label("5").as_deref(), Some("5"));
        assert_eq!(job_label(r#""x""#).as_deref(), Some(r#""x""#));
    }

    #[test]
    fn long_values_are_cut_keeping_the_closing_bracket() {
        let long = format!(r#"{{"name":"{}"}}"#, "é".repeat(100));
        let label = job_label(&long).unwrap();
        assert_eq!(label.chars().count(), LABEL_MAX);
        assert!(label.ends_with("…}"), "{label}");
        let arr = format!("[{}]", vec!["1"; 100].join(","));
        assert!(job_label(&arr).unwrap().ends_with("…]"));
    }
}
