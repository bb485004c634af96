//! The manifest: `poolparty.toml` parsed into [`RawManifest`] (serde, spans kept), then
//! validated once into [`Manifest`], whose types cannot hold an invalid value.
//!
//! Data flows out of here only: `jobs`, `graph`, `plan` and everything after read a
//! [`Manifest`]; once `cmd::load` has applied the command line's overrides to its settings,
//! nothing changes it. Validating compiles every template (`template`), and reads a stage's
//! custom script `template`, so a broken one fails before anything runs; nothing here runs a
//! command. Spans of the fields that later checks point at (stage names,
//! `needs`, templates, job sources) are kept so their errors still land in the manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use miette::{NamedSource, SourceSpan};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result, Source, did_you_mean};

/// The file name looked for when a folder is given.
pub const DEFAULT_MANIFEST: &str = "poolparty.toml";

/// How long a cluster task may be gone from the queue without an outcome before it counts as
/// lost, unless `lost_grace` says otherwise: outcome files may lag on shared file systems, and a
/// restarted controller shows stale states for a few seconds.
pub const LOST_GRACE: Duration = Duration::from_secs(20);
/// Default time limit of a job generator (`generate_time`).
pub const GENERATE_TIME: Duration = Duration::from_secs(600);

/// The longest interval between scheduler status calls unless `status_interval` says
/// otherwise: outcomes arrive as files, so the scheduler is asked only to notice lost or stuck
/// tasks.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// The task length `bundle = "auto"` aims at unless `task_time` says otherwise.
pub const TASK_TIME: Duration = Duration::from_secs(600);

/// The `bundle` setting: jobs per array task, or `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleSize {
    /// This many jobs per task.
    Jobs(u64),
    /// Packed by duration into tasks near `task_time`.
    Auto,
}

impl<'de> Deserialize<'de> for BundleSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BundleSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of jobs per task or \"auto\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<BundleSize, E> {
                Ok(BundleSize::Jobs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<BundleSize, E> {
                u64::try_from(v)
                    .map(BundleSize::Jobs)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<BundleSize, E> {
                if v == "auto" {
                    Ok(BundleSize::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for BundleSize {
    fn schema_name() -> String {
        "BundleSize".to_owned()
    }
    fn json_schema(_: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        serde_json::from_value(serde_json::json!({
            "description": "Jobs per array task (at least 1), or \"auto\" to pack jobs by duration.",
            "anyOf": [
                {"type": "integer", "format": "uint32", "minimum": 1},
                {"type": "string", "enum": ["auto"]}
            ]
        }))
        .expect("a valid schema")
    }
}

/// Where jobs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A pool of worker processes on this machine.
    Local,
    /// Slurm job arrays (`sbatch --array`).
    Slurm,
    /// Sun / Son of Grid Engine array jobs (`qsub -t`).
    Sge,
    /// PBS Pro / OpenPBS array jobs (`qsub -J`).
    Pbs,
    /// IBM Spectrum LSF job arrays (`bsub -J "name[1-N]"`).
    Lsf,
}

impl BackendKind {
    /// Every backend, in the order they are listed to people.
    pub const ALL: [Self; 5] = [Self::Local, Self::Slurm, Self::Sge, Self::Pbs, Self::Lsf];

    /// The name used in manifests and on the command line: the one place names are spelled
    /// (serde's `lowercase` spelling, checked by a test).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Slurm => "slurm",
            Self::Sge => "sge",
            Self::Pbs => "pbs",
            Self::Lsf => "lsf",
        }
    }

    /// Every backend's name, in [`BackendKind::ALL`] order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().map(Self::as_str)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let [rest @ .., last] = Self::ALL.map(|k| format!("`{k}`"));
                format!(
                    "unknown backend `{s}`, expected {} or {last}{}",
                    rest.join(", "),
                    did_you_mean(s, Self::names())
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )
            })
    }
}

/// What a job's result is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultMode {
    /// The file the job writes to `$POOLPARTY_RESULT` (none if it writes nothing).
    #[default]
    File,
    /// The job's whole standard output (still logged as well).
    Stdout,
    /// No result is recorded.
    None,
}

/// What a stage does when a stage it needs had failed jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Do not start; its jobs are reported "not run".
    #[default]
    Stop,
    /// Start anyway; the failed upstream jobs are listed in its context.
    Continue,
}

/// A job's command: a shell string or an argv array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunSpec {
    /// Run by `/bin/sh -c`; interpolated values are shell-quoted.
    Shell(String),
    /// Run without a shell; each element is one argument, interpolated raw.
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for RunSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RunSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string or an array of argument strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RunSpec, E> {
                Ok(RunSpec::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RunSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                if argv.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least the program"));
                }
                Ok(RunSpec::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RunSpec {
    fn schema_name() -> String {
        "RunSpec".to_owned()
    }
    fn json_schema(g: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject, SubschemaValidation};
        let string = g.subschema_for::<String>();
        let array = {
            let mut s = g.subschema_for::<Vec<String>>().into_object();
            s.array().min_items = Some(1);
            Schema::Object(s)
        };
        Schema::Object(SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "A shell command (run by /bin/sh -c, values shell-quoted) or an argv array (no shell)."
                        .to_owned(),
                ),
                ..Metadata::default()
            })),
            instance_type: None::<schemars::schema::SingleOrVec<InstanceType>>,
            subschemas: Some(Box::new(SubschemaValidation {
                any_of: Some(vec![string, array]),
                ..SubschemaValidation::default()
            })),
            ..SchemaObject::default()
        })
    }
}

/// `[workflow]`: the workflow's name and where its state lives.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// The workflow's name, `[A-Za-z0-9_-]+`; its state lives in `<work_dir>/<name>/`.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: Spanned<String>,
    /// Folder of poolparty's state, relative to the manifest (default `.poolparty`).
    #[serde(default)]
    pub work_dir: Option<String>,
}

/// Declares the settings every stage inherits from `[defaults]` and may override, once for
/// both tables, so the two can never drift apart.
macro_rules! with_settings {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Where jobs run: `local`, `slurm`, `sge`, `pbs` or `lsf` (default `local`).
            #[serde(default)]
            #[schemars(with = "Option<BackendKind>")]
            pub backend: Option<Spanned<BackendKind>>,
            /// Jobs of the stage running at once (local: worker count, default the number of CPUs;
            /// clusters: the array throttle).
            #[serde(default)]
            #[schemars(with = "Option<u32>", range(min = 1))]
            pub max_parallel: Option<Spanned<u32>>,
            /// Reruns of a job that exited non-zero (default 0).
            #[serde(default)]
            pub retries: Option<u32>,
            /// Environment variables for the jobs; a stage's table is merged over `[defaults]`.
            #[serde(default)]
            #[schemars(with = "Option<BTreeMap<String, String>>")]
            pub env: Option<BTreeMap<Spanned<String>, String>>,
            /// Wall-time limit of one job, e.g. `"90s"`, `"30m"`, `"2h"`, `"1d12h"` or `"1:30:00"`.
            /// Local jobs are stopped when it is exceeded; on clusters it becomes the time limit.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub time: Option<Spanned<String>>,
            /// Time limit of the stage's job generator (`generate`), in the format of `time`
            /// (default `"10m"`). A generator still running then is stopped and its stage fails.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub generate_time: Option<Spanned<String>>,
            /// Where a job's result comes from: `file` ($POOLPARTY_RESULT, default), `stdout`, `none`.
            #[serde(default)]
            pub result: Option<ResultMode>,
            /// Results larger than this many bytes stay files and are not inlined (default 1 MiB).
            #[serde(default)]
            pub result_max_bytes: Option<u64>,
            /// Cluster: CPUs per job (Slurm `--cpus-per-task`, Grid Engine `-pe <pe> N`).
            #[serde(default)]
            pub cpus: Option<u32>,
            /// Cluster: memory per job, e.g. `"4G"` (Slurm `--mem`, Grid Engine `h_vmem`).
            #[serde(default)]
            pub memory: Option<String>,
            /// Slurm partition.
            #[serde(default)]
            pub partition: Option<String>,
            /// Slurm account.
            #[serde(default)]
            pub account: Option<String>,
            /// Slurm QOS.
            #[serde(default)]
            pub qos: Option<String>,
            /// Grid Engine queue.
            #[serde(default)]
            pub queue: Option<String>,
            /// Grid Engine project.
            #[serde(default)]
            pub project: Option<String>,
            /// Grid Engine parallel environment used with `cpus` (default `smp`).
            #[serde(default)]
            pub pe: Option<String>,
            /// Raw scheduler options added to the script header, e.g. `["--constraint=avx2"]`.
            #[serde(default)]
            pub extra: Option<Vec<String>>,
            /// Path of a handlebars template replacing the embedded sbatch / qsub script.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub template: Option<Spanned<String>>,
            /// Cluster: jobs packed into one array task, run one after another (default 1), or
            /// `"auto"`: packed by duration into tasks near `task_time`, longest first.
            #[serde(default)]
            #[schemars(with = "Option<BundleSize>")]
            pub bundle: Option<Spanned<BundleSize>>,
            /// Cluster, with `bundle = "auto"`: the length an array task aims at (default
            /// `"10m"`).
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub task_time: Option<Spanned<String>>,
            /// Cluster: the most tasks one array may have. Default: asked from the cluster
            /// (Slurm `MaxArraySize`, Grid Engine `max_aj_tasks`); `plan --out` falls back to the
            /// scheduler's documented default (1001, 75000) where it cannot ask. Set, the cluster
            /// is not asked; a value above the cluster's limit makes submissions fail.
            #[serde(default)]
            #[schemars(with = "Option<u32>", range(min = 1))]
            pub max_array_size: Option<Spanned<u32>>,
            /// Cluster: resubmissions of a job that vanished without an outcome (default 3).
            #[serde(default)]
            pub resubmit_lost: Option<u32>,
            /// Cluster: first interval between scheduler polls (default `"2s"`).
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub poll_interval: Option<Spanned<String>>,
            /// Cluster: longest interval between scheduler polls (default `"60s"`).
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub poll_max: Option<Spanned<String>>,
            /// Cluster: longest interval between scheduler status calls (`squeue`/`qstat`,
            /// default `"30s"`). Outcomes arrive as files, harvested every poll; the scheduler
            /// is asked one `poll_interval` after a submission, then at doubling intervals up to
            /// this, only to notice lost or stuck tasks.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub status_interval: Option<Spanned<String>>,
            /// Cluster: how long a task may be gone from the queue without an outcome file
            /// before it counts as lost (default `"20s"`; raise it on slow shared file systems).
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub lost_grace: Option<Spanned<String>>,
        }
    };
}

with_settings! {
    /// `[defaults]`: settings inherited by every stage.
    #[derive(Debug, Default, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawDefaults {}
}

with_settings! {
    /// `[stages.NAME]`: one map stage.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawStage {
        /// A command whose standard output is the jobs: a JSON array or JSON Lines.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub generate: Option<Spanned<String>>,
        /// The jobs, inline: any TOML values (tables, arrays, strings, numbers).
        #[serde(default)]
        #[schemars(with = "Option<Vec<serde_json::Value>>")]
        pub jobs: Option<Spanned<Vec<Spanned<serde_json::Value>>>>,
        /// A table of arrays; the jobs are the cartesian product, as tables.
        #[serde(default)]
        #[schemars(with = "Option<IndexMap<String, Vec<serde_json::Value>>>")]
        pub matrix: Option<Spanned<IndexMap<String, Spanned<Vec<serde_json::Value>>>>>,
        /// A `.json` (array) or `.jsonl` (one job per line) file, relative to the manifest.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub jobs_file: Option<Spanned<String>>,
        /// One job per job of the named stage, each started as soon as its upstream job
        /// succeeded (element-wise stage; implies `needs`).
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub for_each: Option<Spanned<String>>,
        /// The command run for each job (handlebars template).
        #[schemars(with = "RunSpec")]
        pub run: Spanned<RunSpec>,
        /// Stages that must succeed before this one starts.
        #[serde(default)]
        #[schemars(with = "Vec<String>")]
        pub needs: Vec<Spanned<String>>,
        /// `stop` (default) or `continue` when a needed stage had failed jobs.
        #[serde(default)]
        pub on_failure: Option<OnFailure>,
    }
}

/// The manifest as written, before validation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "poolparty manifest")]
pub struct RawManifest {
    /// The workflow's name and state folder.
    pub workflow: RawWorkflow,
    /// Settings every stage inherits.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// The stages, by name (`[A-Za-z0-9_-]+`).
    #[schemars(schema_with = "stages_schema")]
    pub stages: IndexMap<Spanned<String>, RawStage>,
}

/// `stages`: a table of [`RawStage`] whose keys are stage names.
fn stages_schema(g: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
    let mut s = g
        .subschema_for::<IndexMap<String, RawStage>>()
        .into_object();
    let names = schemars::schema::SchemaObject {
        string: Some(Box::new(schemars::schema::StringValidation {
            pattern: Some("^[A-Za-z0-9_-]{1,64}$".to_owned()),
            ..Default::default()
        })),
        ..Default::default()
    };
    s.object().property_names = Some(Box::new(names.into()));
    s.object().min_properties = Some(1);
    schemars::schema::Schema::Object(s)
}

/// A validated stage name: `[A-Za-z0-9_-]+`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageName(String);

impl StageName {
    /// Validates a name.
    ///
    /// # Errors
    /// When the name is empty or has characters outside `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Self, String> {
        if valid_name(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not a valid name: use letters, digits, `_` and `-`"
            ))
        }
    }
    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The most jobs a `matrix` may expand to (the product of its lists' lengths).
pub const MAX_MATRIX_JOBS: usize = 1_000_000;

/// A duration written as `"90s"`, `"30m"`, `"2h"`, `"1d12h"` or `"H:MM:SS"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub Duration);

impl WallTime {
    /// Parses the manifest's duration syntax.
    ///
    /// # Errors
    /// A message saying what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a duration: write e.g. `90s`, `30m`, `2h`, `1d12h` or `1:30:00`"
            )
        };
        // At most 100 years, so adding it to a clock never overflows.
        let too_long = || format!("`{text}` is too long: the longest duration is 100 years");
        let zero = || {
            format!(
                "`{text}` is not a duration longer than zero: zero is not allowed, write at least `1s`"
            )
        };
        let limit = |secs: u64| {
            if secs > 100 * 365 * 86_400 {
                Err(too_long())
            } else {
                Ok(Self(Duration::from_secs(secs)))
            }
        };
        let t = text.trim();
        if t.contains(':') {
            let parts: Vec<&str> = t.split(':').collect();
            if parts.len() > 3 {
                return Err(bad());
            }
            // Minutes and seconds after the first field are below 60: `1:99:00` is a typo,
            // not 2:39:00.
            if parts[1..]
                .iter()
                .any(|p| p.parse::<u64>().is_ok_and(|n| n >= 60))
            {
                return Err(format!(
                    "`{text}` is not a duration: minutes and seconds after a `:` must be below 60"
                ));
            }
            let mut secs = 0u64;
            for p in parts {
                secs = secs
                    .checked_mul(60)
                    .and_then(|s| s.checked_add(p.parse::<u64>().ok()?))
                    .ok_or_else(|| {
                        if p.parse::<u64>().is_ok() {
                            too_long()
                        } else {
                            bad()
                        }
                    })?;
            }
            return if secs == 0 { Err(zero()) } else { limit(secs) };
        }
        let mut total = 0u64;
        let mut num = String::new();
        let mut seen_unit = false;
        // The last unit written: each comes at most once, largest first (`1d12h`, not `1h1h`).
        let mut last_unit = u64::MAX;
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(bad()),
            };
            if unit >= last_unit {
                return Err(format!(
                    "`{text}` is not a duration: write each unit at most once, largest first (`d`, `h`, `m`, `s`), e.g. `1d12h`"
                ));
            }
            last_unit = unit;
            let n: u64 = num.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|x| x.checked_add(total))
                .ok_or_else(too_long)?;
            num.clear();
            seen_unit = true;
        }
        if !num.is_empty() || !seen_unit {
            return Err(bad());
        }
        if total == 0 {
            return Err(zero());
        }
        limit(total)
    }

    /// Slurm's `--time` format: `D-HH:MM:SS`.
    #[must_use]
    pub fn slurm(self) -> String {
        let s = self.0.as_secs();
        format!(
            "{}-{:02}:{:02}:{:02}",
            s / 86400,
            s % 86400 / 3600,
            s % 3600 / 60,
            s % 60
        )
    }

    /// Grid Engine's `h_rt` format: `HH:MM:SS` (hours may exceed 24).
    #[must_use]
    pub fn hms(self) -> String {
        let s = self.0.as_secs();
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    }
}

/// Cluster resources of a stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Resources {
    /// CPUs per job.
    pub cpus: Option<u32>,
    /// Memory per job.
    pub memory: Option<String>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// Slurm account.
    pub account: Option<String>,
    /// Slurm QOS.
    pub qos: Option<String>,
    /// Grid Engine queue.
    pub queue: Option<String>,
    /// Grid Engine project.
    pub project: Option<String>,
    /// Grid Engine parallel environment.
    pub pe: String,
    /// Raw scheduler options.
    pub extra: Vec<String>,
}

/// A stage's resolved settings: `[defaults]` with the stage's own keys over them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where jobs run.
    pub backend: BackendKind,
    /// Jobs at once; `None` means the number of CPUs (local) or unthrottled (clusters).
    pub max_parallel: Option<u32>,
    /// Reruns of a failed job.
    pub retries: u32,
    /// Job environment.
    pub env: BTreeMap<String, String>,
    /// Per-job wall-time limit.
    pub time: Option<WallTime>,
    /// Time limit of the job generator.
    pub generate_time: Duration,
    /// Where results come from.
    pub result: ResultMode,
    /// Results above this stay files.
    pub result_max_bytes: u64,
    /// Cluster resources.
    pub resources: Resources,
    /// A custom scheduler script template, resolved against the manifest folder.
    pub template: Option<(PathBuf, SourceSpan)>,
    /// Jobs per array task (1 with `bundle = "auto"`, for jobs packed one per task).
    pub bundle: u32,
    /// With `bundle = "auto"`: the task length to pack jobs for (`task_time`).
    pub auto_bundle: Option<Duration>,
    /// The most tasks one array may have, when set (otherwise asked from the cluster).
    pub max_array_size: Option<u32>,
    /// Resubmissions of lost jobs.
    pub resubmit_lost: u32,
    /// First poll interval.
    pub poll_interval: Duration,
    /// Longest poll interval.
    pub poll_max: Duration,
    /// Grace period before a vanished task counts as lost.
    pub lost_grace: Duration,
    /// Longest interval between scheduler status calls.
    pub status_interval: Duration,
}

/// Where a stage's jobs come from.
#[derive(Clone, Debug)]
pub enum JobSource {
    /// A command printing JSON or JSON Lines (a template).
    Generate(String),
    /// Inline values.
    Inline(Vec<serde_json::Value>),
    /// The cartesian product of named value lists.
    Matrix(IndexMap<String, Vec<serde_json::Value>>),
    /// A `.json` or `.jsonl` file.
    File(PathBuf),
    /// One job per job of another stage.
    ForEach(StageName),
}

/// A `needs` entry.
#[derive(Clone, Debug)]
pub struct Need {
    /// The needed stage.
    pub stage: StageName,
    /// Where it is named.
    pub span: SourceSpan,
}

/// One validated stage.
#[derive(Clone, Debug)]
pub struct Stage {
    /// Its name.
    pub name: StageName,
    /// The span of its name in `[stages.NAME]`.
    pub span: SourceSpan,
    /// Where its jobs come from.
    pub source: JobSource,
    /// The span of the job source's value.
    pub source_span: SourceSpan,
    /// The span of each inline job (`jobs = [..]`); empty for other sources.
    pub job_spans: Vec<SourceSpan>,
    /// The run command template.
    pub run: RunSpec,
    /// The span of the `run` value.
    pub run_span: SourceSpan,
    /// Stages it waits for (includes the `for_each` stage).
    pub needs: Vec<Need>,
    /// Behaviour when a needed stage failed.
    pub on_failure: OnFailure,
    /// Resolved settings.
    pub settings: Settings,
}

/// A validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Its folder (absolute): `workflow.dir` in templates, jobs' working directory.
    pub dir: PathBuf,
    /// The manifest's text, for diagnostics.
    pub src: Source,
    /// The SHA-256 of the manifest's bytes, hex.
    pub hash: String,
    /// `workflow.name`.
    pub name: String,
    /// The state root (absolute): `<dir>/<work_dir>`.
    pub work_dir: PathBuf,
    /// The stages, in manifest order.
    pub stages: Vec<Stage>,
}

impl Manifest {
    /// Applies the command line's `--backend` and `--max-parallel` to every stage's settings.
    /// Called once, right after loading, so every command sees the settings in effect.
    pub fn apply_overrides(&mut self, backend: Option<BackendKind>, max_parallel: Option<u32>) {
        for stage in &mut self.stages {
            if let Some(b) = backend {
                stage.settings.backend = b;
            }
            if let Some(n) = max_parallel {
                stage.settings.max_parallel = Some(n);
            }
        }
    }

    /// Finds a stage by name.
    #[must_use]
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }

    /// The stage names, in manifest order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// The folder of this workflow's state: `<work_dir>/<name>`.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.work_dir.join(&self.name)
    }

    /// An `InvalidManifest` error at `span`.
    #[must_use]
    pub fn error(
        &self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> Error {
        Error::InvalidManifest {
            message: message.into(),
            src: self.src.clone(),
            span,
            label: label.into(),
            help,
        }
    }
}

/// Resolves the manifest path: a file, or a folder holding `poolparty.toml`.
#[must_use]
pub fn resolve_path(arg: Option<&Path>) -> PathBuf {
    let p = arg.map_or_else(|| PathBuf::from(DEFAULT_MANIFEST), Path::to_path_buf);
    // A folder itself named `poolparty.toml` (with no manifest inside) is kept, so reading it
    // says it is a folder rather than that `poolparty.toml/poolparty.toml` does not exist.
    let named_like_a_manifest =
        p.file_name().is_some_and(|n| n == DEFAULT_MANIFEST) && !p.join(DEFAULT_MANIFEST).exists();
    if p.is_dir() && !named_like_a_manifest {
        p.join(DEFAULT_MANIFEST)
    } else {
        p
    }
}

/// Reads a text file given by the user (the manifest, a jobs file): only a regular file (a
/// FIFO or device could block forever or never end), without a UTF-8 byte order mark, and
/// with the position of the first byte that is not UTF-8 when there is one.
///
/// # Errors
/// The I/O error, or one saying the path is a folder or not a regular file, or where the text
/// stops being UTF-8.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is a folder, not a file",
        ));
    }
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, socket or device): poolparty reads only files",
        ));
    }
    let mut bytes = std::fs::read(path)?;
    let bom = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    bytes.drain(..bom);
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text: invalid byte at line {line}, column {column} (byte offset {})",
                valid.len() + bom
            ),
        )
    })
}

/// Reads, parses and validates a manifest file.
///
/// # Errors
/// Any read, syntax or validation error, as a diagnostic pointing into the file.
pub fn load(path: &Path) -> Result<Manifest> {
    let text = read_text(path).map_err(|source| Error::ReadManifest {
        path: path.to_path_buf(),
        source,
    })?;
    let abs = std::path::absolute(path).map_err(|source| Error::ReadManifest {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&abs, text)
}

/// Parses and validates manifest text that was read from `path`.
///
/// # Errors
/// Syntax or validation errors, as diagnostics pointing into `text`.
pub fn parse(path: &Path, text: String) -> Result<Manifest> {
    let src = NamedSource::new(path.display().to_string(), text.clone()).with_language("toml");
    let raw: RawManifest = toml::from_str(&text).map_err(|e| syntax_error(&e, &src))?;
    validate(path, raw, src, &text)
}

fn syntax_error(e: &toml::de::Error, src: &Source) -> Error {
    let message = e.message().trim().to_owned();
    let help = suggest_from_message(&message);
    Error::ManifestSyntax {
        message,
        src: src.clone(),
        span: e.span().map(SourceSpan::from),
        help,
    }
}

/// Turns toml's "unknown field `x`, expected one of `a`, `b`" into a did-you-mean.
fn suggest_from_message(message: &str) -> Option<String> {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return match field {
            "run" => Some("every stage needs `run`, the command run for each job".to_owned()),
            "stages" => Some(
                "add a [stages.NAME] table with a job source (`generate`, `jobs`, `matrix`, `jobs_file` or `for_each`) and `run`"
                    .to_owned(),
            ),
            "workflow" => Some("add a [workflow] table with `name = \"...\"`".to_owned()),
            "name" => Some("[workflow] needs `name`, the workflow's name".to_owned()),
            _ => None,
        };
    }
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(name, candidates.iter().copied())
}

fn span_of<T>(s: &Spanned<T>) -> SourceSpan {
    s.span().into()
}

fn validate(path: &Path, raw: RawManifest, src: Source, text: &str) -> Result<Manifest> {
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let err = |span: SourceSpan, message: String, label: &str, help: Option<String>| {
        Error::InvalidManifest {
            message,
            src: src.clone(),
            span,
            label: label.to_owned(),
            help,
        }
    };

    let name = raw.workflow.name.get_ref().clone();
    if !valid_name(&name) {
        return Err(err(
            span_of(&raw.workflow.name),
            format!("invalid workflow name `{name}`"),
            "not a valid name",
            Some("use letters, digits, `_` and `-`".to_owned()),
        ));
    }
    let work_dir = dir.join(raw.workflow.work_dir.as_deref().unwrap_or(".poolparty"));
    if raw.stages.is_empty() {
        return Err(err(
            SourceSpan::from(0..0),
            "the manifest has no stages".to_owned(),
            "add a [stages.NAME] table",
            Some(
                "a stage needs a job source (`generate`, `jobs`, `matrix`, `jobs_file`) and `run`"
                    .to_owned(),
            ),
        ));
    }

    let mut stages = Vec::with_capacity(raw.stages.len());
    for (key, rs) in raw.stages {
        let span = span_of(&key);
        let name = StageName::new(key.get_ref())
            .map_err(|m| err(span, m.clone(), "invalid stage name", None))?;
        let stage = validate_stage(name, span, rs, &raw.defaults, &dir, &err)?;
        check_templates(&stage, &src)?;
        check_script_template(&stage, &src)?;
        // `POOLPARTY_NEEDS_<STAGE>_*` upper-cases names and turns `-` into `_`.
        let env_key = |n: &StageName| n.as_str().to_uppercase().replace('-', "_");
        if let Some(other) = stages
            .iter()
            .find(|s: &&Stage| env_key(&s.name) == env_key(&stage.name))
        {
            return Err(err(
                stage.span,
                format!(
                    "stages `{}` and `{}` differ only in case or `-`/`_`",
                    other.name, stage.name
                ),
                "clashes with another stage name",
                Some(
                    "their `POOLPARTY_NEEDS_<STAGE>_*` variables would be the same: rename one"
                        .to_owned(),
                ),
            ));
        }
        stages.push(stage);
    }
    let hash = crate::jobs::sha256_hex(text.as_bytes());
    Ok(Manifest {
        path: path.to_path_buf(),
        dir,
        src,
        hash,
        name,
        work_dir,
        stages,
    })
}

/// Compiles a stage's `run` and `generate` templates, so a syntax error fails every command
/// before anything runs, also in stages whose jobs are only known at run time.
fn check_templates(stage: &Stage, src: &Source) -> Result<()> {
    use crate::plan::template_error;
    use crate::template::{Quoting, Templates};
    let mut t = Templates::new();
    let what = format!("invalid `run` of stage `{}`", stage.name);
    match &stage.run {
        RunSpec::Shell(s) => t
            .add("run", s, Quoting::Shell)
            .map_err(|f| template_error(src, stage.run_span, s, f, &what))?,
        RunSpec::Argv(args) => {
            for a in args {
                t.add("arg", a, Quoting::Raw)
                    .map_err(|f| template_error(src, stage.run_span, a, f, &what))?;
            }
        }
    }
    if let JobSource::Generate(g) = &stage.source {
        let what = format!("invalid `generate` of stage `{}`", stage.name);
        t.add("generate", g, Quoting::Shell)
            .map_err(|f| template_error(src, stage.source_span, g, f, &what))?;
    }
    Ok(())
}

/// Reads and compiles a stage's custom scheduler script `template`, whatever its backend (a
/// local stage may be sent to a cluster with `--backend`), so a missing or broken template
/// fails `validate` instead of the first submission.
fn check_script_template(stage: &Stage, src: &Source) -> Result<()> {
    use crate::template::{Quoting, Templates};
    let Some((path, span)) = &stage.settings.template else {
        return Ok(());
    };
    let text = read_text(path).map_err(|e| Error::InvalidManifest {
        message: format!(
            "cannot read the `template` of stage `{}`, `{}`: {e}",
            stage.name,
            path.display()
        ),
        src: src.clone(),
        span: *span,
        label: "this file".to_owned(),
        help: Some("the path is relative to the manifest's folder".to_owned()),
    })?;
    Templates::new()
        .add("script", &text, Quoting::Shell)
        .map_err(|f| Error::InvalidManifest {
            message: format!(
                "the `template` of stage `{}`, `{}`, does not compile: {}",
                stage.name,
                path.display(),
                f.message
            ),
            src: src.clone(),
            span: *span,
            label: "this template".to_owned(),
            help: None,
        })
}

/// Refuses a stage's custom `template` written for another scheduler than the backend the
/// stage runs on: a Slurm script submitted to Grid Engine (or run as a
/// local bundle) fails every job of the stage on the cluster instead of at `validate`. A
/// template is taken to be written for a scheduler when it reads that scheduler's array task
/// variable (`marks`: `SLURM_ARRAY_TASK_ID`, `SGE_TASK_ID`...), as the ejected templates do. Local stages
/// use their template only in a bundle (`bundle`: `plan --out`, `run --detach`), so a cluster
/// template in `[defaults]` does not stop a local test run.
///
/// # Errors
/// A template that reads another scheduler's task variable; an unreadable template.
pub fn check_template_backends(
    m: &Manifest,
    bundle: bool,
    marks: &[(BackendKind, &str)],
) -> Result<()> {
    for stage in &m.stages {
        let Some((path, span)) = &stage.settings.template else {
            continue;
        };
        let kind = stage.settings.backend;
        if kind == BackendKind::Local && !bundle {
            continue;
        }
        let text = read_text(path).map_err(|e| Error::store("read", path, e))?;
        let Some((other, mark)) = marks
            .iter()
            .find(|(k, mark)| *k != kind && text.contains(mark))
        else {
            continue;
        };
        return Err(Error::InvalidManifest {
            message: format!(
                "the `template` of stage `{}`, `{}`, is written for `{other}` (it reads `{mark}`), but the stage runs on the `{kind}` backend",
                stage.name,
                path.display(),
            ),
            src: m.src.clone(),
            span: *span,
            label: "this template".to_owned(),
            help: Some(format!(
                "eject the `{kind}` template with `poolparty templates eject {kind}` and set it as `template` of the stages that run there"
            )),
        });
    }
    Ok(())
}

type ErrFn<'a> = dyn Fn(SourceSpan, String, &str, Option<String>) -> Error + 'a;

fn validate_stage(
    name: StageName,
    span: SourceSpan,
    rs: RawStage,
    d: &RawDefaults,
    dir: &Path,
    err: &ErrFn<'_>,
) -> Result<Stage> {
    let settings = resolve_settings(&name, &rs, d, dir, err)?;
    let mut sources: Vec<(&str, SourceSpan)> = Vec::new();
    if let Some(g) = &rs.generate {
        sources.push(("generate", span_of(g)));
    }
    if let Some(j) = &rs.jobs {
        sources.push(("jobs", span_of(j)));
    }
    if let Some(m) = &rs.matrix {
        sources.push(("matrix", span_of(m)));
    }
    if let Some(f) = &rs.jobs_file {
        sources.push(("jobs_file", span_of(f)));
    }
    if let Some(f) = &rs.for_each {
        sources.push(("for_each", span_of(f)));
    }
    // In the order they stand in the file, so "second" points at the later one.
    sources.sort_by_key(|(_, span)| span.offset());
    if sources.len() > 1 {
        let (second, s2) = sources[1];
        return Err(err(
            s2,
            format!(
                "stage `{name}` has more than one job source: `{}` and `{second}`",
                sources[0].0
            ),
            "second job source",
            Some(
                "keep exactly one of `generate`, `jobs`, `matrix`, `jobs_file`, `for_each`"
                    .to_owned(),
            ),
        ));
    }
    let Some(&(_, source_span)) = sources.first() else {
        return Err(err(
            span,
            format!("stage `{name}` has no job source"),
            "this stage",
            Some("add one of `generate`, `jobs`, `matrix`, `jobs_file` or `for_each`".to_owned()),
        ));
    };
    let mut needs = Vec::new();
    for n in &rs.needs {
        let stage = StageName::new(n.get_ref())
            .map_err(|m| err(span_of(n), m.clone(), "invalid stage name", None))?;
        if needs.iter().any(|x: &Need| x.stage == stage) {
            return Err(err(
                span_of(n),
                format!("stage `{name}` lists `{stage}` twice in `needs`"),
                "duplicate",
                None,
            ));
        }
        needs.push(Need {
            stage,
            span: span_of(n),
        });
    }
    let mut job_spans = Vec::new();
    let source = if let Some(g) = rs.generate {
        if g.get_ref().trim().is_empty() {
            return Err(err(
                source_span,
                "`generate` is empty".to_owned(),
                "empty command",
                None,
            ));
        }
        JobSource::Generate(g.into_inner())
    } else if let Some(j) = rs.jobs {
        let jobs = j.into_inner();
        job_spans = jobs.iter().map(span_of).collect();
        let mut values = Vec::with_capacity(jobs.len());
        for job in jobs {
            let span = span_of(&job);
            let mut v = job.into_inner();
            from_toml(&mut v).map_err(|e| toml_value_error(err, span, &name, &e))?;
            values.push(v);
        }
        JobSource::Inline(values)
    } else if let Some(m) = rs.matrix {
        let mut m = m.into_inner();
        for list in m.values_mut() {
            let span = span_of(list);
            for v in list.get_mut() {
                from_toml(v).map_err(|e| toml_value_error(err, span, &name, &e))?;
            }
        }
        if let Some((k, v)) = m.iter().find(|(_, v)| v.get_ref().is_empty()) {
            return Err(err(
                span_of(v),
                format!("matrix key `{k}` of stage `{name}` has no values"),
                "empty list",
                Some("every matrix key needs at least one value".to_owned()),
            ));
        }
        // Checked before anything is expanded: the product of a few long lists can exceed
        // any memory, or even `usize`.
        let size = m
            .values()
            .try_fold(1usize, |n, v| n.checked_mul(v.get_ref().len()));
        if size.is_none_or(|n| n > MAX_MATRIX_JOBS) {
            let sizes: Vec<String> = m.values().map(|v| v.get_ref().len().to_string()).collect();
            return Err(err(
                source_span,
                format!(
                    "the matrix of stage `{name}` expands to {} jobs, more than the limit of {MAX_MATRIX_JOBS}",
                    size.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
                ),
                "too many combinations",
                Some(format!(
                    "the matrix is the product of its lists' lengths ({}); split the stage, or use `generate` or `jobs_file` for a list this long",
                    sizes.join(" × ")
                )),
            ));
        }
        JobSource::Matrix(m.into_iter().map(|(k, v)| (k, v.into_inner())).collect())
    } else if let Some(f) = rs.jobs_file {
        JobSource::File(dir.join(f.get_ref()))
    } else if let Some(f) = rs.for_each {
        let up = StageName::new(f.get_ref())
            .map_err(|m| err(source_span, m.clone(), "invalid stage name", None))?;
        if !needs.iter().any(|n| n.stage == up) {
            needs.insert(
                0,
                Need {
                    stage: up.clone(),
                    span: source_span,
                },
            );
        }
        if let Some(other) = needs.iter().find(|n| n.stage != up) {
            return Err(err(
                other.span,
                format!(
                    "stage `{name}` is element-wise over `{up}` and cannot need other stages, such as `{}`",
                    other.stage
                ),
                "not allowed with `for_each`",
                Some("an element-wise stage's job i depends only on job i of its `for_each` stage; put other dependencies on that stage".to_owned()),
            ));
        }
        JobSource::ForEach(up)
    } else {
        unreachable!("one source was found above")
    };

    let run_span = span_of(&rs.run);
    let run = rs.run.into_inner();
    if let RunSpec::Shell(s) = &run {
        if s.trim().is_empty() {
            return Err(err(
                run_span,
                "`run` is empty".to_owned(),
                "empty command",
                None,
            ));
        }
    }

    Ok(Stage {
        name,
        span,
        source,
        source_span,
        job_spans,
        run,
        run_span,
        needs,
        on_failure: rs.on_failure.unwrap_or_default(),
        settings,
    })
}

/// Turns a TOML value read as JSON into the value a job gets: a datetime becomes its RFC 3339
/// text (toml hands it over as `{"$__toml_private_datetime": text}`), and `nan` / `inf`,
/// which JSON cannot write (serde_json reads them as `null`, a value TOML itself never has),
/// are refused.
fn from_toml(v: &mut serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match v {
        Value::Null => Err("`nan` and `inf` have no JSON form".to_owned()),
        Value::Array(items) => items.iter_mut().try_for_each(from_toml),
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(text)) = map.get("$__toml_private_datetime") {
                    *v = Value::String(text.clone());
                    return Ok(());
                }
            }
            map.values_mut().try_for_each(from_toml)
        }
        Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
    }
}

fn toml_value_error(err: &ErrFn<'_>, span: SourceSpan, stage: &StageName, message: &str) -> Error {
    err(
        span,
        format!("a job of stage `{stage}` holds a value that cannot be passed on: {message}"),
        "`nan` or `inf` in here",
        Some(
            "a job's value reaches its command as JSON; write the number as a string (`\"inf\"`), or leave it out"
                .to_owned(),
        ),
    )
}

macro_rules! pick {
    ($s:expr, $d:expr, $f:ident) => {
        $s.$f.as_ref().or($d.$f.as_ref())
    };
}

fn resolve_settings(
    name: &StageName,
    s: &RawStage,
    d: &RawDefaults,
    dir: &Path,
    err: &ErrFn<'_>,
) -> Result<Settings> {
    let positive = |v: Option<&Spanned<u32>>, key: &str| -> Result<Option<u32>> {
        match v {
            Some(x) if *x.get_ref() == 0 => Err(err(
                span_of(x),
                format!("`{key}` of stage `{name}` must be at least 1"),
                "zero",
                None,
            )),
            Some(x) => Ok(Some(*x.get_ref())),
            None => Ok(None),
        }
    };
    let duration = |v: Option<&Spanned<String>>| -> Result<Option<WallTime>> {
        v.map(|t| {
            WallTime::parse(t.get_ref()).map_err(|m| err(span_of(t), m, "invalid duration", None))
        })
        .transpose()
    };
    let mut env = BTreeMap::new();
    for (k, v) in d.env.iter().chain(s.env.iter()).flatten() {
        let key = k.get_ref();
        if key.is_empty() || key.contains('=') || key.contains('\0') || v.contains('\0') {
            return Err(err(
                span_of(k),
                format!("invalid environment variable `{key}` in stage `{name}`"),
                "not a valid variable",
                Some(
                    "names must be non-empty without `=`; names and values without NUL".to_owned(),
                ),
            ));
        }
        env.insert(key.clone(), v.clone());
    }
    let poll_interval =
        duration(pick!(s, d, poll_interval))?.map_or(Duration::from_secs(2), |w| w.0);
    let poll_max = duration(pick!(s, d, poll_max))?.map_or(Duration::from_secs(60), |w| w.0);
    Ok(Settings {
        backend: pick!(s, d, backend).map_or(BackendKind::Local, |b| *b.get_ref()),
        max_parallel: positive(pick!(s, d, max_parallel), "max_parallel")?,
        retries: s.retries.or(d.retries).unwrap_or(0),
        env,
        time: duration(pick!(s, d, time))?,
        generate_time: duration(pick!(s, d, generate_time))?.map_or(GENERATE_TIME, |w| w.0),
        result: s.result.or(d.result).unwrap_or_default(),
        result_max_bytes: s.result_max_bytes.or(d.result_max_bytes).unwrap_or(1 << 20),
        resources: Resources {
            cpus: s.cpus.or(d.cpus),
            memory: pick!(s, d, memory).cloned(),
            partition: pick!(s, d, partition).cloned(),
            account: pick!(s, d, account).cloned(),
            qos: pick!(s, d, qos).cloned(),
            queue: pick!(s, d, queue).cloned(),
            project: pick!(s, d, project).cloned(),
            pe: pick!(s, d, pe).cloned().unwrap_or_else(|| "smp".to_owned()),
            extra: pick!(s, d, extra).cloned().unwrap_or_default(),
        },
        template: pick!(s, d, template).map(|t| (dir.join(t.get_ref()), span_of(t))),
        bundle: match pick!(s, d, bundle) {
            Some(b) => match *b.get_ref() {
                BundleSize::Auto => 1,
                BundleSize::Jobs(n) => {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    positive(Some(&Spanned::new(b.span(), n)), "bundle")?.unwrap_or(1)
                }
            },
            None => 1,
        },
        auto_bundle: match pick!(s, d, bundle).map(Spanned::get_ref) {
            Some(BundleSize::Auto) => {
                Some(duration(pick!(s, d, task_time))?.map_or(TASK_TIME, |w| w.0))
            }
            _ => None,
        },
        max_array_size: positive(pick!(s, d, max_array_size), "max_array_size")?,
        resubmit_lost: s.resubmit_lost.or(d.resubmit_lost).unwrap_or(3),
        poll_interval,
        poll_max: poll_max.max(poll_interval),
        lost_grace: duration(pick!(s, d, lost_grace))?.map_or(LOST_GRACE, |w| w.0),
        status_interval: duration(pick!(s, d, status_interval))?
            .map_or(STATUS_INTERVAL, |w| w.0)
            .max(poll_interval),
    })
}

/// The JSON Schema of the manifest, as checked in at `schemas/poolparty.schema.json`.
#[must_use]
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawManifest);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backend names are spelled once (`as_str`), agree with serde's, parse back, and an
    /// unknown one lists them all with a suggestion.
    #[test]
    fn backend_names_come_from_one_list() {
        for k in BackendKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            assert_eq!(k.as_str().parse::<BackendKind>(), Ok(k));
        }
        assert_eq!(
            "slurrm".parse::<BackendKind>().unwrap_err(),
            "unknown backend `slurrm`, expected `local`, `slurm`, `sge`, `pbs` or `lsf` (did you mean `slurm`?)"
        );
        assert_eq!(
            "condor".parse::<BackendKind>().unwrap_err(),
            "unknown backend `condor`, expected `local`, `slurm`, `sge`, `pbs` or `lsf`"
        );
    }

    fn parse_str(text: &str) -> Result<Manifest> {
        parse(Path::new("/tmp/poolparty.toml"), text.to_owned())
    }

    #[test]
    fn overrides_replace_every_stages_backend_and_max_parallel() {
        let text = "[workflow]\nname='w'\n[defaults]\nmax_parallel=2\n[stages.a]\njobs=[1]\nrun='true'\n[stages.b]\njobs=[1]\nrun='true'\nbackend='sge'\n";
        let mut m = parse_str(text).unwrap();
        m.apply_overrides(None, None);
        assert_eq!(m.stages[1].settings.backend, BackendKind::Sge);
        assert_eq!(m.stages[0].settings.max_parallel, Some(2));
        m.apply_overrides(Some(BackendKind::Slurm), Some(7));
        for s in &m.stages {
            assert_eq!(s.settings.backend, BackendKind::Slurm);
            assert_eq!(s.settings.max_parallel, Some(7));
        }
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse_str("[workflow]\nname='w'\n[stages.a]\njobs=[1,2]\nrun='echo {{job}}'\n")
            .unwrap();
        assert_eq!(m.name, "w");
        assert_eq!(m.work_dir, Path::new("/tmp/.poolparty"));
        let s = &m.stages[0];
        assert_eq!(s.settings.backend, BackendKind::Local);
        assert_eq!(s.settings.retries, 0);
        assert_eq!(s.settings.bundle, 1);
        assert!(matches!(s.source, JobSource::Inline(ref v) if v.len() == 2));
    }

    #[test]
    fn stage_overrides_defaults_and_merges_env() {
        let m = parse_str(
            "[workflow]\nname='w'\n[defaults]\nretries=2\nenv={A='1',B='2'}\n[stages.a]\njobs=[1]\nrun='x'\nretries=0\nenv={B='3'}\n",
        )
        .unwrap();
        let s = &m.stages[0].settings;
        assert_eq!(s.retries, 0);
        assert_eq!(s.env.get("A").unwrap(), "1");
        assert_eq!(s.env.get("B").unwrap(), "3");
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let e = parse_str("[workflow]\nname='w'\n[stages.a]\njobs=[1]\nrun='x'\nretires=1\n")
            .unwrap_err();
        match e {
            Error::ManifestSyntax { help, span, .. } => {
                assert_eq!(help.as_deref(), Some("did you mean `retries`?"));
                assert!(span.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(WallTime::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(
            WallTime::parse("1d12h").unwrap().0,
            Duration::from_secs(129_600)
        );
        assert_eq!(
            WallTime::parse("1:30:00").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(WallTime::parse("1:30:00").unwrap().slurm(), "0-01:30:00");
        assert_eq!(WallTime::parse("25h").unwrap().hms(), "25:00:00");
        for bad in [
            "",
            "10",
            "1x",
            "0s",
            "h",
            "1:2:3:4",
            "999999999999999999d",
            "99999999999999999:0:0",
            "36501d",
            "1h1h",
            "30m1h",
            "1:99:00",
            "1:00:60",
            "0:0:0",
        ] {
            assert!(WallTime::parse(bad).is_err(), "{bad}");
        }
        assert!(
            WallTime::parse("0s")
                .unwrap_err()
                .contains("zero is not allowed")
        );
        assert!(
            WallTime::parse("0:00")
                .unwrap_err()
                .contains("zero is not allowed")
        );
        assert!(
            WallTime::parse("1h1h")
                .unwrap_err()
                .contains("at most once")
        );
        assert!(WallTime::parse("1:99:00").unwrap_err().contains("below 60"));
        assert_eq!(WallTime::parse("100:59:59").unwrap().0.as_secs(), 363_599);
        assert_eq!(WallTime::parse("1d1h1m1s").unwrap().0.as_secs(), 90_061);
    }

    #[test]
    fn two_sources_point_at_second() {
        let text = "[workflow]\nname='w'\n[stages.a]\njobs=[1]\nmatrix={x=[1]}\nrun='x'\n";
        let e = parse_str(text).unwrap_err();
        match e {
            Error::InvalidManifest { span, .. } => {
                assert_eq!(&text[span.offset()..span.offset() + span.len()], "{x=[1]}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
