//! `poolparty logs [MANIFEST] JOB`: one job's output, during and after a run, on every backend.
//!
//! Every backend writes a job's output to the same two files,
//! `<state>/<stage>/logs/<id>.out|.err`: the local backend creates them when the job first
//! prints, the cluster wrapper (`templates/wrapper.sh`) when the job starts, and removes them
//! again when they stay empty. So this command reads only the store: the stage's
//! `jobs.jsonl` to resolve `JOB`, the log file, and the job's recorded outcome (the ledger and
//! outcome files not collected yet) to tell "printed nothing" from "has not run yet", and to
//! know when `--follow` is done.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::LogsArgs;
use crate::error::{self, EXIT_INTERRUPTED, EXIT_SUCCESS, Error, Result};
use crate::manifest::Manifest;
use crate::outcome::{JobRecord, StagedOutcome};
use crate::store::{self, JobLine, Layout};

/// How often `--follow` looks for new output and for the job's outcome.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// How often `--follow` checks that something is still going to run the job.
const LIVENESS_POLL: Duration = Duration::from_secs(2);

/// The job `logs` is about.
struct Found {
    stage: String,
    index: usize,
    id: String,
}

/// Runs `poolparty logs`; output goes to `out`, notes to stderr.
///
/// # Errors
/// No job given, an unknown stage, an unknown or ambiguous job, unreadable state.
pub(crate) fn run(args: &LogsArgs, g: &crate::cli::GlobalArgs, out: &mut dyn Write) -> Result<u8> {
    let (manifest, job) = match (&args.first, &args.second) {
        (Some(m), Some(j)) => (Some(Path::new(m.as_str())), j.as_str()),
        // A lone manifest is a forgotten JOB (job ids have no `/` and never end in `.toml`).
        (Some(m), None)
            if m.ends_with(".toml") || Path::new(m).join("poolparty.toml").is_file() =>
        {
            return Err(Error::Usage {
                message: format!("which job of `{m}`? `poolparty logs [MANIFEST] JOB`"),
                help: Some("JOB is a job's id, a unique prefix of it, or its index".to_owned()),
            });
        }
        (Some(j), None) => (None, j.as_str()),
        (None, _) => {
            return Err(Error::Usage {
                message: "which job? `poolparty logs [MANIFEST] JOB`".to_owned(),
                help: Some("JOB is a job's id, a unique prefix of it, or its index".to_owned()),
            });
        }
    };
    let (m, _, layout) = super::load(manifest, g)?;
    let found = find(&m, &layout, args.stage.as_deref(), job)?;
    let path = if args.stderr {
        layout.log_err(&found.stage, &found.id)
    } else {
        layout.log_out(&found.stage, &found.id)
    };
    let stream = if args.stderr { "stderr" } else { "stdout" };
    let who = format!(
        "job {} `{}` of stage `{}`",
        found.index, found.id, found.stage
    );
    if args.follow {
        return follow(&m, &layout, &found, &path, &who, stream, out);
    }
    let recorded = latest_record(&layout, &found.stage, &found.id)?;
    match File::open(&path) {
        Ok(mut f) => {
            std::io::copy(&mut f, out).map_err(|e| Error::store("read", &path, e))?;
            if recorded.is_none() {
                note(&format!(
                    "{who} has no recorded outcome yet: its output so far (`--follow` keeps reading)"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => note(&match recorded {
            Some(r) => format!(
                "no output: {who} printed nothing on {stream} (attempt {}: {})",
                r.attempt,
                r.outcome.describe()
            ),
            None => format!(
                "no output yet: {who} has not printed anything on {stream} and has no recorded outcome (it has not started, or is running and silent)"
            ),
        }),
        Err(e) => return Err(Error::store("read", &path, e)),
    }
    Ok(EXIT_SUCCESS)
}

fn note(text: &str) {
    eprintln!("poolparty: {text}");
}

/// Resolves `JOB` in the stage named with `--stage`, or in every stage.
fn find(m: &Manifest, layout: &Layout, stage: Option<&str>, job: &str) -> Result<Found> {
    let stages: Vec<&str> = match stage {
        Some(s) => vec![
            m.stage(s)
                .map(|st| st.name.as_str())
                .ok_or_else(|| Error::Usage {
                    message: format!("the manifest has no stage `{s}`"),
                    help: error::did_you_mean(s, m.stage_names()).or_else(|| {
                        Some(format!(
                            "stages: {}",
                            m.stage_names().collect::<Vec<_>>().join(", ")
                        ))
                    }),
                })?,
        ],
        None => m.stage_names().collect(),
    };
    let mut expanded = Vec::new();
    let mut hits: Vec<(String, Match)> = Vec::new();
    for &name in &stages {
        let Some(jobs) = store::read_jobs(&layout.jobs_file(name))? else {
            continue;
        };
        let hit = resolve(&jobs, job);
        if !matches!(hit, Match::None) {
            hits.push((name.to_owned(), hit));
        }
        expanded.push((name, jobs));
    }
    if expanded.is_empty() {
        let which = match stage {
            Some(s) => format!("stage `{s}` has not"),
            None if stages.len() == 1 => format!("stage `{}` has not", stages[0]),
            None => "no stage has".to_owned(),
        };
        return Err(Error::Usage {
            message: format!("{which} expanded its jobs yet: there are no logs"),
            help: Some("run it first with `poolparty run`".to_owned()),
        });
    }
    match hits.len() {
        0 => Err(unknown(job, &expanded)),
        1 => {
            let (stage, hit) = hits.pop().expect("one hit");
            match hit {
                Match::One(index, id) => Ok(Found { stage, index, id }),
                Match::Ambiguous(what) => Err(Error::Usage {
                    message: format!("`{job}` is ambiguous in stage `{stage}`: {what}"),
                    help: Some("give the whole id, or `#N` for the job with index N".to_owned()),
                }),
                Match::None => unreachable!("filtered above"),
            }
        }
        _ => {
            let names: Vec<String> = hits.iter().map(|(s, _)| format!("`{s}`")).collect();
            Err(Error::Usage {
                message: format!(
                    "`{job}` names a job in several stages: {}",
                    names.join(", ")
                ),
                help: Some(format!("choose one with `--stage {}`", hits[0].0)),
            })
        }
    }
}

/// How `JOB` matched a stage's jobs.
enum Match {
    None,
    /// Index and id of the one job.
    One(usize, String),
    /// Several jobs; the text says which.
    Ambiguous(String),
}

/// Resolves `JOB` among one stage's jobs: an exact id, an index (`7`, or `#7` for an index
/// only), or a unique prefix of an id.
fn resolve(jobs: &[JobLine], job: &str) -> Match {
    let one = |j: &JobLine| Match::One(j.index, j.id.clone());
    if let Some(n) = job.strip_prefix('#') {
        return n
            .parse::<usize>()
            .ok()
            .and_then(|n| jobs.get(n))
            .map_or(Match::None, one);
    }
    let by_id = jobs.iter().find(|j| j.id == job);
    let by_index = job.parse::<usize>().ok().and_then(|n| jobs.get(n));
    match (by_id, by_index) {
        (Some(a), Some(b)) if a.index != b.index => {
            return Match::Ambiguous(format!(
                "the id of job {} and the index of job `{}`",
                a.index, b.id
            ));
        }
        (Some(j), _) | (None, Some(j)) => return one(j),
        (None, None) => {}
    }
    let prefixed: Vec<&JobLine> = jobs.iter().filter(|j| j.id.starts_with(job)).collect();
    match prefixed.as_slice() {
        [] => Match::None,
        [j] => one(j),
        many => {
            let mut ids: Vec<String> = many.iter().take(5).map(|j| format!("`{}`", j.id)).collect();
            if many.len() > 5 {
                ids.push(format!("… ({} in all)", many.len()));
            }
            Match::Ambiguous(format!("a prefix of {}", ids.join(", ")))
        }
    }
}

/// The error for a job no stage has, with the closest ids as suggestions.
fn unknown(job: &str, expanded: &[(&str, Vec<JobLine>)]) -> Error {
    let ids = expanded
        .iter()
        .flat_map(|(_, jobs)| jobs.iter().map(|j| j.id.as_str()));
    let help = error::did_you_mean(job, ids).unwrap_or_else(|| {
        let parts: Vec<String> = expanded
            .iter()
            .map(|(stage, jobs)| {
                let mut sample: Vec<String> =
                    jobs.iter().take(3).map(|j| format!("`{}`", j.id)).collect();
                if jobs.len() > 3 {
                    sample.push("…".to_owned());
                }
                format!(
                    "stage `{stage}` has {} (indexes 0 to {}; ids {})",
                    error::count(jobs.len(), "job"),
                    jobs.len().saturating_sub(1),
                    sample.join(", ")
                )
            })
            .collect();
        parts.join("; ")
    });
    Error::Usage {
        message: format!(
            "no job `{job}`: it is neither the id, an id prefix nor the index of a job"
        ),
        help: Some(help),
    }
}

/// The job's latest recorded attempt: the ledger, then outcome files not collected yet.
fn latest_record(layout: &Layout, stage: &str, id: &str) -> Result<Option<JobRecord>> {
    let mut latest = store::read_ledger(&layout.ledger(stage))?
        .into_iter()
        .filter(|r| r.id == id)
        .max_by_key(|r| r.attempt);
    if let Some(s) = staged(layout, stage, id)
        .into_iter()
        .max_by_key(|s| s.attempt)
        .filter(|s| latest.as_ref().is_none_or(|r| s.attempt > r.attempt))
    {
        latest = Some(s.record("staged".to_owned(), String::new(), None));
    }
    Ok(latest)
}

/// The job's outcome files in the staging folder (`<id>.<attempt>.json`).
fn staged(layout: &Layout, stage: &str, id: &str) -> Vec<StagedOutcome> {
    store::read_staged_of(&layout.staging_dir(stage), id)
}

/// Reads new lines of the ledger from where it last stopped.
struct LedgerTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LedgerTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Records appended since the last call (complete lines only).
    fn read_new(&mut self) -> Vec<JobRecord> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            // Rewritten (state removed and started again): read it all again.
            self.offset = 0;
            self.partial.clear();
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        lines
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }
}

/// Whether something will still run the job: a live runner holds the workflow, or an array
/// submitted for a newer attempt than the last recorded one (a detached run, or a bundle
/// submitted by hand) has not reported yet.
fn something_pending(layout: &Layout, stage: &str, id: &str, last_attempt: u32) -> bool {
    if let Some(h) = store::read_holder(layout) {
        if h.host != store::hostname() || h.is_live_here() {
            return true;
        }
    }
    let Ok(subs) = store::read_lines::<store::Submission>(&layout.submissions(stage)) else {
        return false;
    };
    subs.iter()
        .flat_map(|s| s.tasks.iter().flatten())
        .any(|j| j.id == id && j.attempt > last_attempt)
}

/// `--follow`: prints the log as it grows until the job's next outcome is recorded, nothing
/// will run it any more, or Ctrl-C.
fn follow(
    m: &Manifest,
    layout: &Layout,
    found: &Found,
    path: &Path,
    who: &str,
    stream: &str,
    out: &mut dyn Write,
) -> Result<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::store("watch signals for", path, e))?;
    }
    let before = latest_record(layout, &found.stage, &found.id)?;
    let base_attempt = before.as_ref().map_or(0, |r| r.attempt);
    // A job whose latest outcome was recorded by the run in progress is done for this run.
    let holder_run = store::read_holder(layout).map(|h| h.run);
    let done_already = before.as_ref().is_some_and(|r| {
        Some(&r.run) == holder_run.as_ref()
            || !something_pending(layout, &found.stage, &found.id, r.attempt)
    });
    let mut ledger = LedgerTail::new(layout.ledger(&found.stage));
    ledger.read_new();
    let mut seen_staged: HashSet<u32> = staged(layout, &found.stage, &found.id)
        .into_iter()
        .map(|s| s.attempt)
        .collect();
    let mut offset = 0u64;
    let mut printed_any = false;
    let mut next_liveness = Instant::now() + LIVENESS_POLL;
    let retries = m.stage(&found.stage).map_or(0, |s| s.settings.retries);
    let ended: Option<JobRecord> = loop {
        let recorded = if done_already {
            before.clone()
        } else {
            let mut new = ledger
                .read_new()
                .into_iter()
                .filter(|r| r.id == found.id && r.attempt > base_attempt)
                .max_by_key(|r| r.attempt);
            if new.is_none() {
                new = staged(layout, &found.stage, &found.id)
                    .into_iter()
                    .filter(|s| s.attempt > base_attempt && seen_staged.insert(s.attempt))
                    .max_by_key(|s| s.attempt)
                    .map(|s| s.record("staged".to_owned(), String::new(), None));
            }
            new
        };
        // Print what the job wrote, also after its outcome (the last bytes before it ended).
        if let Ok(mut f) = File::open(path) {
            let len = f.metadata().map_or(0, |md| md.len());
            if len < offset {
                note(&format!(
                    "{who}: its {stream} log started again (a new attempt)"
                ));
                offset = 0;
            }
            if len > offset && f.seek(SeekFrom::Start(offset)).is_ok() {
                let mut chunk = (&mut f).take(len - offset);
                let n =
                    std::io::copy(&mut chunk, out).map_err(|e| Error::store("read", path, e))?;
                offset += n;
                printed_any |= n > 0;
                let _ = out.flush();
            }
        }
        if recorded.is_some() {
            break recorded;
        }
        if stop.load(Ordering::Relaxed) {
            note(&format!("stopped following {who}"));
            return Ok(EXIT_INTERRUPTED);
        }
        if Instant::now() >= next_liveness {
            next_liveness = Instant::now() + LIVENESS_POLL;
            if !something_pending(layout, &found.stage, &found.id, base_attempt) {
                // A last look: the outcome may have landed just before the runner ended.
                let last = latest_record(layout, &found.stage, &found.id)?
                    .filter(|r| r.attempt > base_attempt);
                if last.is_some() {
                    continue;
                }
                note(&format!(
                    "no run is in progress that would run {who}: nothing more to follow"
                ));
                return Ok(EXIT_SUCCESS);
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    };
    if let Some(r) = ended {
        if !printed_any {
            note(&format!("no output: {who} printed nothing on {stream}"));
        }
        let again = if !r.outcome.is_success() && r.outcome.is_retryable() && retries > 0 {
            " (it may be retried: follow it again to see the next attempt)"
        } else {
            ""
        };
        note(&format!(
            "{who} ended: attempt {}: {}{again}",
            r.attempt,
            r.outcome.describe()
        ));
    }
    Ok(EXIT_SUCCESS)
}
