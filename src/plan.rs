//! Planning: a stage and its expanded jobs become a [`StagePlan`]: every job's command
//! rendered (so a bad template or job fails before anything starts), its fingerprint, and the
//! environment the backend gives it.
//!
//! Reads `manifest`, `jobs` and `template`; pure (paths come in as a [`Layout`] value, nothing is
//! written). The same plan feeds `run` and `plan`, so a dry run shows exactly what would run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::SourceSpan;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::jobs::{JobId, JobRef, Jobs};
use crate::manifest::{Manifest, RunSpec, Settings, Stage, StageName};
use crate::store::Layout;
use crate::template::{Quoting, TemplateFailure, Templates};

/// A job's rendered command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// Run directly.
    Argv(Vec<String>),
}

impl Command {
    /// The command as one line a user could paste into a shell.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Shell(s) => s.clone(),
            Self::Argv(a) => a
                .iter()
                .map(|x| crate::template::shell_quote(x).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One job, ready to launch.
#[derive(Clone, Debug)]
pub struct PlannedJob {
    /// Index in the stage.
    pub index: usize,
    /// Id.
    pub id: JobId,
    /// The value as canonical JSON (`$POOLPARTY_JOB`).
    pub json: String,
    /// The rendered command.
    pub command: Command,
    /// Fingerprint: what decides whether a recorded success is still valid.
    pub fp: String,
}

/// What a stage that needs other stages learns about them.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    /// Per needed stage: its folder, ledger, jobs and ordered results files, failed ids.
    pub stages: BTreeMap<String, UpstreamStage>,
}

/// One needed stage, as seen from a stage that needs it.
#[derive(Clone, Debug)]
pub struct UpstreamStage {
    /// Its state folder.
    pub dir: PathBuf,
    /// Its ledger (outcomes).
    pub outcomes: PathBuf,
    /// Its ordered results file.
    pub results: PathBuf,
    /// Its jobs file.
    pub jobs: PathBuf,
    /// Ids of its jobs that did not succeed.
    pub failed: Vec<String>,
}

/// A stage with every job planned.
#[derive(Debug)]
pub struct StagePlan {
    /// Index of the stage in the manifest.
    pub stage: usize,
    /// Its name.
    pub name: StageName,
    /// Its settings.
    pub settings: Settings,
    /// Working directory of its jobs (the manifest's folder).
    pub cwd: PathBuf,
    /// Environment shared by all its jobs (settings `env`, `POOLPARTY_*` stage variables).
    pub env: Vec<(String, String)>,
    /// Each job's fingerprint, in job order (empty for element-wise stages, whose jobs are
    /// planned one at a time as their upstream jobs finish). Commands are not kept: a
    /// stage of a million jobs holds 16 bytes per job here, and [`StagePlan::job`] renders
    /// a job's command again when it is launched or shown.
    pub fps: Vec<Fp>,
    /// The rendered-command template, kept to render a job's command when it is needed.
    pub renderer: Renderer,
}

impl StagePlan {
    /// Plans one job again (render and fingerprint), for launching or showing it.
    ///
    /// # Errors
    /// A template error naming the job (it rendered when the stage was planned, so only a
    /// job that was not part of that plan can fail here).
    pub fn job<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<Arc<PlannedJob>> {
        self.renderer.plan(job).map(Arc::new)
    }

    /// Every job planned again, in order (for writing a bundle).
    ///
    /// # Errors
    /// As [`StagePlan::job`].
    pub fn all_jobs(&self, jobs: &Jobs) -> Result<Vec<Arc<PlannedJob>>> {
        jobs.iter().map(|j| self.job(j)).collect()
    }
}

/// A job's fingerprint in 16 bytes: the first 16 hex digits of a SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp([u8; 16]);

impl Fp {
    /// The fingerprint of a job from its canonical JSON, its rendered command and the
    /// stage settings that change what it does.
    #[must_use]
    pub fn of(json: &str, command: &Command, settings_fp: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(json.as_bytes());
        h.update([0]);
        match command {
            Command::Shell(s) => h.update(s.as_bytes()),
            // The bytes of `command.display()`, without building it.
            Command::Argv(args) => {
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        h.update(b" ");
                    }
                    h.update(crate::template::shell_quote(a).as_bytes());
                }
            }
        }
        h.update([0]);
        h.update(settings_fp.as_bytes());
        let digest = h.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in digest.iter().take(8).enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        Self(out)
    }

    /// The fingerprint as text (16 hex digits), as the ledger records it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Debug for Fp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Fp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Renders one stage's `run` for jobs.
pub struct Renderer {
    templates: Templates,
    /// The context, updated in place for each job (building one per job costs more than
    /// rendering).
    ctx: std::cell::RefCell<handlebars::Context>,
    /// Template names: `run`, or `arg0`, `arg1`, ...
    names: Vec<String>,
    run: RunShape,
    /// The `run` template texts (one for a shell string, one per argv element).
    texts: Vec<String>,
    settings_fp: String,
    /// Bytes of argument space the environment takes before the job's own variables.
    env_bytes: usize,
    src: crate::error::Source,
    span: SourceSpan,
    stage: String,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

enum RunShape {
    Shell,
    Argv(usize),
}

/// The template context shared by a stage's templates, without the job.
#[must_use]
pub fn base_context(
    manifest: &Manifest,
    stage: &Stage,
    layout: &Layout,
    upstream: &Upstream,
) -> Map<String, Value> {
    let mut env: Map<String, Value> = std::env::vars()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    for (k, v) in &stage.settings.env {
        env.insert(k.clone(), Value::String(v.clone()));
    }
    let needs: Map<String, Value> = upstream
        .stages
        .iter()
        .map(|(name, u)| {
            (
                name.clone(),
                json!({
                    "dir": u.dir,
                    "outcomes": u.outcomes,
                    "results": u.results,
                    "jobs": u.jobs,
                    "failed": u.failed,
                }),
            )
        })
        .collect();
    let mut m = Map::new();
    m.insert(
        "stage".into(),
        json!({"name": stage.name.as_str(), "dir": layout.stage_dir(stage.name.as_str())}),
    );
    m.insert(
        "workflow".into(),
        json!({"name": manifest.name, "dir": manifest.dir, "work_dir": manifest.work_dir}),
    );
    m.insert("env".into(), Value::Object(env));
    m.insert("needs".into(), Value::Object(needs));
    m
}

/// The environment variables a stage's jobs (and its generator) get besides their own.
#[must_use]
pub fn stage_env(
    manifest: &Manifest,
    stage: &Stage,
    layout: &Layout,
    upstream: &Upstream,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = stage
        .settings
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let p = |p: &Path| p.display().to_string();
    env.push(("POOLPARTY_WORKFLOW".into(), manifest.name.clone()));
    env.push(("POOLPARTY_WORKFLOW_DIR".into(), p(&manifest.dir)));
    env.push(("POOLPARTY_STAGE".into(), stage.name.to_string()));
    env.push((
        "POOLPARTY_STAGE_DIR".into(),
        p(&layout.stage_dir(stage.name.as_str())),
    ));
    for (name, u) in &upstream.stages {
        let key = name.to_uppercase().replace('-', "_");
        env.push((format!("POOLPARTY_NEEDS_{key}_DIR"), p(&u.dir)));
        env.push((format!("POOLPARTY_NEEDS_{key}_OUTCOMES"), p(&u.outcomes)));
        env.push((format!("POOLPARTY_NEEDS_{key}_RESULTS"), p(&u.results)));
        env.push((format!("POOLPARTY_NEEDS_{key}_JOBS"), p(&u.jobs)));
    }
    env
}

/// Maps a template failure to a diagnostic on the template's span in the manifest.
#[must_use]
pub fn template_error(
    src: &crate::error::Source,
    span: SourceSpan,
    template: &str,
    failure: TemplateFailure,
    context: &str,
) -> Error {
    let text = src.inner().as_str();
    let literal = text
        .get(span.offset()..span.offset() + span.len())
        .unwrap_or("");
    // Point inside the string when the template stands in it verbatim (no escapes): at the
    // whole `{{…}}` tag when the failure is at one, else at one character.
    let span = match (failure.offset, literal.find(template)) {
        (Some(off), Some(at)) if !template.is_empty() => {
            let off = off.min(template.len().saturating_sub(1));
            let tail = template.get(off..).unwrap_or("");
            let close = if tail.starts_with("{{{") { "}}}" } else { "}}" };
            let next = tail
                .get(2..)
                .and_then(|t| t.find("{{"))
                .map_or(usize::MAX, |n| n + 2);
            let len = match tail.find(close) {
                Some(e) if tail.starts_with("{{") && e < next => e + close.len(),
                _ => 1,
            };
            SourceSpan::from((span.offset() + at + off, len))
        }
        _ => span,
    };
    Error::Template {
        message: format!("{context}: {}", failure.message),
        src: src.clone(),
        span,
        label: "in this template".to_owned(),
        help: failure.help,
        undefined: failure.undefined,
    }
}

impl Renderer {
    /// Compiles a stage's `run` template.
    ///
    /// # Errors
    /// A template syntax error pointing into the manifest.
    pub fn new(manifest: &Manifest, stage: &Stage, base: Map<String, Value>) -> Result<Self> {
        let mut templates = Templates::new();
        let what = format!("invalid `run` of stage `{}`", stage.name);
        let run = match &stage.run {
            RunSpec::Shell(s) => {
                templates
                    .add("run", s, Quoting::Shell)
                    .map_err(|f| template_error(&manifest.src, stage.run_span, s, f, &what))?;
                RunShape::Shell
            }
            RunSpec::Argv(args) => {
                for (i, a) in args.iter().enumerate() {
                    templates
                        .add(&format!("arg{i}"), a, Quoting::Raw)
                        .map_err(|f| template_error(&manifest.src, stage.run_span, a, f, &what))?;
                }
                RunShape::Argv(args.len())
            }
        };
        let texts = match &stage.run {
            RunSpec::Shell(s) => vec![s.clone()],
            RunSpec::Argv(args) => args.clone(),
        };
        let s = &stage.settings;
        let settings_fp = format!("{:?}|{:?}|{:?}", s.env, s.time, s.result);
        let env_bytes = env_bytes(&base);
        Ok(Self {
            templates,
            ctx: std::cell::RefCell::new(
                handlebars::Context::wraps(Value::Object(base)).expect("a JSON object wraps"),
            ),
            names: match &stage.run {
                RunSpec::Shell(_) => vec!["run".to_owned()],
                RunSpec::Argv(a) => (0..a.len()).map(|i| format!("arg{i}")).collect(),
            },
            run,
            texts,
            settings_fp,
            env_bytes,
            src: manifest.src.clone(),
            span: stage.run_span,
            stage: stage.name.to_string(),
        })
    }

    /// Plans one job: renders its command with `job`, `job_id` and `index` in the context.
    ///
    /// # Errors
    /// An undefined variable or helper error, naming the job.
    pub fn plan<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<PlannedJob> {
        let job = job.into();
        let (command, fp) = self.render_job(job, job.value())?;
        Ok(PlannedJob {
            index: job.index,
            id: job.job_id(),
            json: job.json.to_owned(),
            command,
            fp: fp.as_str().to_owned(),
        })
    }

    /// Renders one job's command and fingerprints it, keeping nothing.
    ///
    /// # Errors
    /// As [`Renderer::plan`].
    pub fn render_job(&self, job: JobRef<'_>, value: Value) -> Result<(Command, Fp)> {
        if let Value::Object(m) = self.ctx.borrow_mut().data_mut() {
            // The previous job's slots are reused: no new keys, no new id string.
            match m.get_mut("job") {
                Some(slot) => *slot = value,
                None => {
                    m.insert("job".into(), value);
                }
            }
            match m.get_mut("job_id") {
                Some(Value::String(id)) => {
                    id.clear();
                    id.push_str(job.id);
                }
                _ => {
                    m.insert("job_id".into(), Value::String(job.id.to_owned()));
                }
            }
            match m.get_mut("index") {
                Some(slot) => *slot = Value::from(job.index),
                None => {
                    m.insert("index".into(), Value::from(job.index));
                }
            }
        }
        let rendered = self.render();
        let command = rendered.map_err(|(f, text)| {
            template_error(
                &self.src,
                self.span,
                &text,
                f,
                &format!(
                    "cannot render `run` of stage `{}` for job {} (id `{}`)",
                    self.stage, job.index, job.id
                ),
            )
        })?;
        if let Some(why) = unstartable(&command, job, self.env_bytes) {
            return Err(Error::Template {
                message: format!(
                    "job {} (id `{}`) of stage `{}` can never start: {why}",
                    job.index, job.id, self.stage
                ),
                src: self.src.clone(),
                span: self.span,
                label: "this command".to_owned(),
                help: Some(match &why {
                    Unstartable::Nul(_) => "remove the NUL byte from the job's value; no program can receive one in its arguments".to_owned(),
                    _ => "pass large values through a file, or read them from `$POOLPARTY_JOB` in the job, instead of putting them on the command line".to_owned(),
                }),
                undefined: None,
            });
        }
        let fp = Fp::of(job.json, &command, &self.settings_fp);
        Ok((command, fp))
    }

    fn render(&self) -> Result<Command, (TemplateFailure, String)> {
        let ctx = &*self.ctx.borrow();
        match self.run {
            RunShape::Shell => self
                .templates
                .render_context(&self.names[0], Quoting::Shell, ctx)
                .map(Command::Shell)
                .map_err(|f| (f, self.texts[0].clone())),
            RunShape::Argv(n) => (0..n)
                .map(|i| {
                    self.templates
                        .render_context(&self.names[i], Quoting::Raw, ctx)
                        .map_err(|f| (f, self.texts[i].clone()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Command::Argv),
        }
    }
}

/// Linux's limit on one argument or environment string, its NUL included (`MAX_ARG_STRLEN`,
/// 32 pages of 4 KiB).
pub const MAX_ARG_STRLEN: usize = 128 * 1024;

/// `$POOLPARTY_JOB` above this size is passed in a file (as the local backend does).
const JOB_ENV_MAX: usize = 64 * 1024;

/// Why a rendered command can never be started.
#[derive(Debug)]
pub enum Unstartable {
    /// A NUL byte in the command (the field it came from, when found).
    Nul(Option<String>),
    /// One argument over [`MAX_ARG_STRLEN`].
    ArgTooLong(usize),
    /// Arguments and environment together over `ARG_MAX`.
    TooLarge(usize, usize),
}

impl std::fmt::Display for Unstartable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nul(Some(field)) => write!(f, "its command contains a NUL byte (from `{field}`)"),
            Self::Nul(None) => write!(f, "its command contains a NUL byte"),
            Self::ArgTooLong(n) => write!(
                f,
                "its command is {n} bytes, over the system's limit of {} bytes for one argument",
                MAX_ARG_STRLEN - 1
            ),
            Self::TooLarge(n, max) => write!(
                f,
                "its arguments and environment take {n} bytes, over the system's limit (`ARG_MAX`) of {max}"
            ),
        }
    }
}

/// The system's `ARG_MAX`: the space for arguments and environment of a new program.
fn arg_max() -> usize {
    static ARG_MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ARG_MAX.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(2 * 1024 * 1024)
    })
}

/// Argument space taken by `s` as one argument or environment string: its bytes, its NUL and
/// its pointer.
fn arg_cost(len: usize) -> usize {
    len + 1 + std::mem::size_of::<usize>()
}

/// Argument space of the environment a stage's jobs get besides their own variables: the
/// runner's, the stage's `env`, and the `POOLPARTY_*` paths (estimated from the context).
fn env_bytes(base: &Map<String, Value>) -> usize {
    let inherited: usize = std::env::vars_os()
        .map(|(k, v)| arg_cost(k.len() + 1 + v.len()))
        .sum();
    let mut paths = 0;
    let mut walk = vec![base.get("stage"), base.get("workflow"), base.get("needs")];
    while let Some(v) = walk.pop() {
        match v {
            Some(Value::String(s)) => paths += arg_cost(s.len() + 40),
            Some(Value::Object(m)) => walk.extend(m.values().map(Some)),
            Some(Value::Array(a)) => walk.extend(a.iter().map(Some)),
            _ => {}
        }
    }
    // `env` in the context holds the runner's variables and the stage's: count the stage's.
    let stage_env: usize = base.get("env").and_then(Value::as_object).map_or(0, |m| {
        m.iter()
            .filter(|(k, v)| std::env::var(k).ok().as_deref() != v.as_str())
            .map(|(k, v)| arg_cost(k.len() + 1 + crate::template::value_text(v).len()))
            .sum()
    });
    inherited + paths + stage_env
}

/// Why `command` of `job` can never start, if it cannot: a NUL byte, an argument over
/// `MAX_ARG_STRLEN`, or arguments and environment over `ARG_MAX`.
#[must_use]
pub fn unstartable(command: &Command, job: JobRef<'_>, env_bytes: usize) -> Option<Unstartable> {
    let args: Vec<&str> = match command {
        Command::Shell(s) => vec!["/bin/sh", "-c", s],
        Command::Argv(a) => a.iter().map(String::as_str).collect(),
    };
    if args.iter().any(|a| a.contains('\0')) {
        return Some(Unstartable::Nul(nul_field(&job.value(), "job")));
    }
    if let Some(a) = args.iter().find(|a| a.len() + 1 > MAX_ARG_STRLEN) {
        return Some(Unstartable::ArgTooLong(a.len()));
    }
    let job_env = if job.json.len() <= JOB_ENV_MAX {
        job.json.len()
    } else {
        256
    };
    let total = args.iter().map(|a| arg_cost(a.len())).sum::<usize>()
        + env_bytes
        + arg_cost("POOLPARTY_JOB=".len() + job_env)
        + 4 * arg_cost(40 + job.id.len());
    let max = arg_max();
    (total > max).then_some(Unstartable::TooLarge(total, max))
}

/// The path of the first string in `v` holding a NUL byte.
fn nul_field(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then(|| at.to_owned()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_field(x, &format!("{at}.{i}"))),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, x)| nul_field(x, &format!("{at}.{k}"))),
        _ => None,
    }
}

/// Renders a stage's `generate` command.
///
/// # Errors
/// A template error pointing at `generate`.
pub fn render_generator(
    manifest: &Manifest,
    stage: &Stage,
    text: &str,
    base: &Map<String, Value>,
) -> Result<String> {
    let ctx = Value::Object(base.clone());
    let rendered = crate::template::render_once(text, Quoting::Shell, &ctx).map_err(|f| {
        template_error(
            &manifest.src,
            stage.source_span,
            text,
            f,
            &format!("cannot render `generate` of stage `{}`", stage.name),
        )
    })?;
    let why = if rendered.contains('\0') {
        Some(Unstartable::Nul(None))
    } else if rendered.len() + 1 > MAX_ARG_STRLEN {
        Some(Unstartable::ArgTooLong(rendered.len()))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Error::Template {
            message: format!(
                "the generator of stage `{}` can never start: {why}",
                stage.name
            ),
            src: manifest.src.clone(),
            span: stage.source_span,
            label: "this command".to_owned(),
            help: Some("keep the generator's command short and free of NUL bytes; pass large inputs in files".to_owned()),
            undefined: None,
        });
    }
    Ok(rendered)
}

/// Plans a stage whose jobs are known.
///
/// # Errors
/// Template errors for any job (the first one found).
pub fn plan_stage(
    manifest: &Manifest,
    stage_index: usize,
    jobs: &Jobs,
    layout: &Layout,
    upstream: &Upstream,
) -> Result<StagePlan> {
    let (_, plan) = expand_and_plan(manifest, stage_index, layout, upstream, |visit| {
        for j in jobs {
            visit(j, j.value())?;
        }
        Ok(Jobs::default())
    })?;
    Ok(plan)
}

/// Expands and plans a stage in one pass: `expand` produces the jobs and calls the visitor it
/// is given with each job and its parsed value, which is rendered, fingerprinted and dropped
/// at once. Each value is parsed once and no rendered command is kept.
///
/// # Errors
/// The first error of `expand`, or a template error for a job (the first one found).
pub fn expand_and_plan(
    manifest: &Manifest,
    stage_index: usize,
    layout: &Layout,
    upstream: &Upstream,
    expand: impl FnOnce(&mut crate::jobs::Visit<'_>) -> Result<Jobs>,
) -> Result<(Jobs, StagePlan)> {
    let stage = &manifest.stages[stage_index];
    let base = base_context(manifest, stage, layout, upstream);
    let renderer = Renderer::new(manifest, stage, base)?;
    let mut fps = Vec::new();
    let jobs = expand(&mut |job: JobRef<'_>, value: Value| {
        let (_, fp) = renderer.render_job(job, value)?;
        // A jobs file read again after a bad line visits its jobs again from the first.
        fps.truncate(job.index);
        fps.push(fp);
        Ok(())
    })?;
    fps.shrink_to_fit();
    let plan = StagePlan {
        stage: stage_index,
        name: stage.name.clone(),
        settings: stage.settings.clone(),
        cwd: manifest.dir.clone(),
        env: stage_env(manifest, stage, layout, upstream),
        fps,
        renderer,
    };
    Ok((jobs, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::expand_static;
    use crate::manifest::parse;

    #[test]
    fn plans_every_job_and_fingerprints_differ() {
        let m = parse(
            Path::new("/tmp/p.toml"),
            "[workflow]\nname='w'\n[stages.a]\njobs=[{x='a b'},{x='$(id)'}]\nrun='echo {{job.x}} {{index}}'\n".into(),
        )
        .unwrap();
        let jobs = expand_static(&m, &m.stages[0]).unwrap().unwrap();
        let layout = Layout::new("/tmp/.poolparty/w".into());
        let plan = plan_stage(&m, 0, &jobs, &layout, &Upstream::default()).unwrap();
        let planned = plan.all_jobs(&jobs).unwrap();
        assert_eq!(planned[0].command, Command::Shell("echo 'a b' 0".into()));
        assert_eq!(planned[1].command, Command::Shell("echo '$(id)' 1".into()));
        assert_ne!(plan.fps[0], plan.fps[1]);
        assert_eq!(plan.fps[0].as_str(), planned[0].fp);
    }

    #[test]
    fn undefined_variable_names_job_and_points_into_manifest() {
        let text = "[workflow]\nname='w'\n[stages.a]\njobs=[{x=1},{y=2}]\nrun='echo {{job.x}}'\n";
        let m = parse(Path::new("/tmp/p.toml"), text.into()).unwrap();
        let jobs = expand_static(&m, &m.stages[0]).unwrap().unwrap();
        let layout = Layout::new("/tmp/.poolparty/w".into());
        match plan_stage(&m, 0, &jobs, &layout, &Upstream::default()).unwrap_err() {
            Error::Template { message, span, .. } => {
                assert!(message.contains("job 1"), "{message}");
                assert!(message.contains("`job.x` is not defined"), "{message}");
                assert_eq!(
                    &text[span.offset()..span.offset() + span.len()],
                    "{{job.x}}"
                );
            }
            e => panic!("{e:?}"),
        }
    }
}
