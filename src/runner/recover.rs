//! Recovery after a runner that died (SIGKILL, out of memory, a crash) while local jobs ran,
//! and the watchdog each runner starts so that its jobs die with it.
//!
//! [`recover`] is how `run`, `status` and `cancel` (holding the lock) record a dead runner's
//! jobs as interrupted: through `store::record`, like every writer outside a run; the
//! watchdog stops processes and records nothing.

use std::collections::HashMap;

use crate::error::Result;
use crate::outcome::{JobRecord, Outcome};
use crate::store::{self, Layout};

/// What [`recover`] found: a run whose runner died while local jobs ran.
#[derive(Debug)]
pub struct Recovered {
    /// The dead runner's run id.
    pub run: String,
    /// Jobs whose outcome it never recorded, now recorded as interrupted.
    pub jobs: usize,
    /// Of their process groups, those that still had live processes (stopped now).
    pub stopped: usize,
}

impl Recovered {
    /// A line for the user.
    #[must_use]
    pub fn message(&self) -> String {
        let left = match self.stopped {
            0 => "none of them still ran".to_owned(),
            n if n == self.jobs => "stopped what was left of them".to_owned(),
            n => format!("stopped what was left of {n} of them"),
        };
        format!(
            "run {} ended without recording the outcome of {} (its runner was killed): {left}, \
             and recorded them as interrupted",
            self.run,
            crate::error::count(self.jobs, "local job")
        )
    }
}

/// Cleans up after a runner that died (SIGKILL, out of memory, a crash) while local jobs ran,
/// from its record of their process groups (`.live.jsonl`): stops what is left of them
/// (SIGTERM, a grace period, SIGKILL), waits until it is gone, records those jobs as
/// interrupted, and removes the record. Nothing of that run is left running afterwards, so no
/// job can run twice at once. Call it holding the workflow lock.
///
/// # Errors
/// When the record or a ledger cannot be read or written, the dead runner ran on another host,
/// or a process survives SIGKILL.
pub fn recover(layout: &Layout) -> Result<Option<Recovered>> {
    use crate::error::Error;
    use crate::process;
    use crate::store::LiveLine;
    let path = layout.live_file();
    let Some((header, open)) = store::read_live(&path)? else {
        return Ok(None);
    };
    let (run, host, boot) = match header {
        Some(LiveLine::Runner { run, host, boot }) => (run, host, boot),
        _ => (
            "(unknown)".to_owned(),
            store::hostname(),
            process::boot_id(),
        ),
    };
    if open.is_empty() {
        let _ = store::remove_live(layout);
        return Ok(None);
    }
    if host != store::hostname() {
        return Err(Error::Usage {
            message: format!(
                "run {run} died on host `{host}` while {} ran there; only that host can check \
                 whether they still run",
                crate::error::count(open.len(), "local job")
            ),
            help: Some(format!("run `poolparty status` on `{host}`")),
        });
    }
    let groups = live_groups(&open);
    // After a reboot, nothing of it runs.
    let (stopped, left) = if boot == process::boot_id() {
        process::stop_groups(&groups, process::GRACE)
    } else {
        (0, Vec::new())
    };
    if !left.is_empty() {
        return Err(Error::Backend {
            backend: "local",
            message: format!(
                "processes of jobs of run {run} did not stop after SIGKILL: pids {left:?}"
            ),
            detail: Some(
                "they may be stuck in the kernel (state D); their jobs are not started again \
                 while they live"
                    .to_owned(),
            ),
        });
    }
    let mut by_stage: HashMap<&str, Vec<&LiveLine>> = HashMap::new();
    for l in &open {
        if let LiveLine::Started { stage, .. } | LiveLine::Starting { stage, .. } = l {
            by_stage.entry(stage.as_str()).or_default().push(l);
        }
    }
    let mut jobs = 0;
    for (stage, lines) in by_stage {
        let states = store::read_states(&layout.ledger(stage))?;
        let records = lines.into_iter().filter_map(|l| {
            let (LiveLine::Started {
                index,
                id,
                attempt,
                at,
                ..
            }
            | LiveLine::Starting {
                index,
                id,
                attempt,
                at,
                ..
            }) = l
            else {
                return None;
            };
            // Recorded already (or a later attempt is).
            if states
                .get(id.as_str())
                .is_some_and(|s| s.max_attempt >= *attempt)
            {
                return None;
            }
            let record = JobRecord {
                index: *index,
                id: id.clone(),
                attempt: *attempt,
                outcome: Outcome::Interrupted,
                start: Some(*at),
                end: Some(store::now()),
                run: run.clone(),
                fp: String::new(),
                result: None,
            };
            Some((record, None))
        });
        jobs += store::record(layout, stage, records)?;
    }
    store::remove_live(layout)?;
    Ok(Some(Recovered { run, jobs, stopped }))
}

/// The process groups of a dead runner's unrecorded jobs: those it recorded, and those of
/// jobs it was starting, found by their `$POOLPARTY_RESULT`.
fn live_groups(open: &[store::LiveLine]) -> Vec<crate::process::Group> {
    use crate::process::{self, Group};
    use crate::store::LiveLine;
    let mut groups = Vec::new();
    let mut starting = Vec::new();
    for l in open {
        match l {
            LiveLine::Started { pgid, start, .. } => groups.push(Group {
                pgid: *pgid,
                start: *start,
            }),
            // The attempt too: a later attempt of the same job has the same result path.
            LiveLine::Starting {
                result, attempt, ..
            } => starting.push(vec![
                format!("POOLPARTY_RESULT={result}"),
                format!("POOLPARTY_ATTEMPT={attempt}"),
            ]),
            _ => {}
        }
    }
    groups.extend(process::groups_by_env(&starting));
    groups
}

/// Started by each runner (`poolparty __watchdog`): waits until the runner's end of `stdin`
/// closes (the runner ended, or was killed), then stops the groups of the jobs `.live.jsonl`
/// names without an outcome, so that a killed runner's jobs die with it. It records nothing
/// (the next `run`, `status` or `cancel` does, holding the lock).
pub fn watchdog(live: &std::path::Path) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
            _ => {}
        }
    }
    if let Ok(Some((_, open))) = store::read_live(live) {
        let _ = crate::process::stop_groups(&live_groups(&open), crate::process::GRACE);
    }
}

/// Starts the watchdog of this run; the runner keeps the write end of its `stdin`.
pub(super) fn start_watchdog(
    live: &std::path::Path,
) -> Option<(std::process::Child, std::os::fd::OwnedFd)> {
    use std::os::unix::process::CommandExt;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let exe = std::env::current_exe().ok()?;
    let child = std::process::Command::new(exe)
        .arg("__watchdog")
        .arg(live)
        .stdin(std::process::Stdio::from(read))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    Some((child, write))
}
