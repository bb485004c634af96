//! The local backend: a pool of worker threads taking jobs from one queue (a worker that
//! finishes takes the next job at once), each job in its own process group.
//!
//! Output is read through pipes and written to `<logs>/<id>.out|.err` only once the job prints
//! something, so a quiet job creates no file. A worker stops its own child (SIGTERM to the
//! group, a grace period, then SIGKILL) when the time limit passes or the run is cancelled:
//! only the thread that will reap a child ever signals it, so a recycled pid is never hit.
//!
//! [`SCRIPT`] is how the script a bundle (`plan --out`, `run --detach`) runs a local stage
//! with is written: the same wrapper and task file as an array script, run by `xargs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::syntax::ScriptSyntax;
use super::{Backend, CancelMode, Event, Launch, StageSpec};
use crate::error::Result;
use crate::manifest::{ResultMode, WallTime};
use crate::outcome::{JobRecord, Outcome, ResultValue};
use crate::plan::Command;
use crate::store::{LiveLine, now};

/// The embedded template of a bundle's local script (`run-local.sh`).
pub const TEMPLATE: &str = include_str!("../../templates/local.sh.hbs");

/// How a bundle's local script (`run-local.sh`) is written: indices from 0, every task run
/// in place by `xargs`, so nothing of a scheduler.
pub static SCRIPT: ScriptSyntax = ScriptSyntax {
    name: "local",
    template: TEMPLATE,
    template_file: "local.sh.hbs",
    template_about: "the `run-local.sh` script of a local stage in a bundle (`plan --out`, `run --detach`)",
    first_index: 0,
    array_spec: |tasks, _| format!("0-{}", tasks.saturating_sub(1)),
    format_time: WallTime::hms,
    format_memory: str::to_owned,
};

/// How long a job may take to exit after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long output is still drained after the job's main process exited while something it
/// started keeps the pipes open; then the job's process group is killed.
const LINGER: Duration = Duration::from_secs(1);
/// How often a job's exit is checked while its output is open, where no pidfd tells it.
const EXIT_CHECK: Duration = Duration::from_millis(200);
/// `$POOLPARTY_JOB` above this size goes to a file instead (`$POOLPARTY_JOB_FILE`), since
/// Linux caps one environment string at 128 KiB.
const JOB_ENV_MAX: usize = 64 * 1024;

const RUNNING: u8 = 0;
const STOP: u8 = 1;
const KILL: u8 = 2;

struct Queue {
    items: VecDeque<Launch>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    stop: AtomicU8,
    spec: StageSpec,
    events: Sender<Event>,
    /// What may be a stale `$POOLPARTY_RESULT` (see [`Stale`]).
    stale: Stale,
}

/// The files in the stage's results folder when its workers started (`result = "file"`). A
/// job's `$POOLPARTY_RESULT` left there by an earlier run (or a result too large to read,
/// which stays) must not pass for this attempt's result, so it is removed before the job
/// starts; one `read_dir` here spares every other job that `unlink`. In this run, only a
/// job's own earlier attempts write its file: a retry removes it always.
enum Stale {
    /// Results are not files: nothing to remove.
    None,
    /// The names found (a job id is a file name).
    Listed(HashSet<OsString>),
    /// The folder could not be listed: every job removes its file first.
    Unknown,
}

impl Stale {
    fn list(spec: &StageSpec) -> Self {
        if spec.settings.result != ResultMode::File {
            return Self::None;
        }
        match std::fs::read_dir(&spec.paths.results_dir) {
            Ok(dir) => {
                let mut names = HashSet::new();
                for entry in dir {
                    match entry {
                        Ok(e) => {
                            names.insert(e.file_name());
                        }
                        Err(_) => return Self::Unknown,
                    }
                }
                Self::Listed(names)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Self::Listed(HashSet::new()),
            Err(_) => Self::Unknown,
        }
    }

    /// Whether attempt `attempt` of job `id` must remove its result file before it starts.
    fn must_remove(&self, id: &str, attempt: u32) -> bool {
        match self {
            Self::None => false,
            Self::Listed(names) => attempt > 1 || names.contains(std::ffi::OsStr::new(id)),
            Self::Unknown => true,
        }
    }
}

/// A pool of `spec.workers` threads.
pub struct LocalBackend {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl LocalBackend {
    /// Starts the workers (`spec.workers`, at most [`super::MAX_LOCAL_WORKERS`]). When the
    /// system refuses a thread, the stage runs with the workers it got.
    ///
    /// # Errors
    /// When not even one worker thread can be started.
    pub fn new(spec: StageSpec, events: Sender<Event>) -> Result<Self> {
        let n = spec.workers.clamp(1, super::MAX_LOCAL_WORKERS);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            stop: AtomicU8::new(RUNNING),
            stale: Stale::list(&spec),
            spec,
            events,
        });
        let mut workers = Vec::new();
        for k in 0..n {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new().spawn(move || worker(&s)) {
                Ok(w) => workers.push(w),
                Err(e) if k == 0 => {
                    return Err(crate::error::Error::Backend {
                        backend: "local",
                        message: format!("could not start a worker thread: {e}"),
                        detail: None,
                    });
                }
                Err(_) => break,
            }
        }
        Ok(Self { shared, workers })
    }
}

impl Backend for LocalBackend {
    fn submit(&mut self, launches: Vec<Launch>) -> Result<()> {
        let mut q = self.shared.queue.lock().expect("queue lock");
        q.items.extend(launches);
        drop(q);
        self.shared.ready.notify_all();
        Ok(())
    }

    fn cancel(&mut self, mode: CancelMode) -> Vec<(Launch, Outcome)> {
        let level = match mode {
            CancelMode::Graceful => STOP,
            CancelMode::Kill => KILL,
        };
        self.shared.stop.fetch_max(level, Ordering::SeqCst);
        let mut q = self.shared.queue.lock().expect("queue lock");
        q.closed = true;
        let dropped = q
            .items
            .drain(..)
            .map(|l| {
                (
                    l,
                    Outcome::NotRun {
                        reason: "run interrupted".into(),
                    },
                )
            })
            .collect();
        drop(q);
        self.shared.ready.notify_all();
        dropped
    }

    fn close(&mut self) {
        self.shared.queue.lock().expect("queue lock").closed = true;
        self.shared.ready.notify_all();
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// What a worker keeps from one job to the next, so that a job allocates and opens little.
struct Scratch {
    /// The buffer output is read through.
    buf: Vec<u8>,
    /// `/dev/null`, duplicated as each job's stdin.
    devnull: Option<File>,
    /// Where argv programs were found.
    programs: Programs,
}

/// Where argv programs named without a `/` were found on `PATH`, looked up once per worker:
/// std's `posix_spawnp` walks `PATH` at every spawn, one failed `execve` per folder before the
/// right one. Only absolute `PATH` folders are searched (a relative one would be relative to
/// the job's folder: std looks the program up then), and the program still gets its name as
/// `argv[0]`. A spawn that fails with a path found here is tried again the usual way.
#[derive(Default)]
struct Programs {
    found: HashMap<String, PathBuf>,
}

impl Programs {
    /// At most this many programs are kept (a `run` whose program is a placeholder).
    const MAX: usize = 64;

    fn find(&mut self, name: &str) -> Option<PathBuf> {
        if name.is_empty() || name.contains('/') {
            return None;
        }
        if let Some(p) = self.found.get(name) {
            return Some(p.clone());
        }
        let path = std::env::var_os("PATH")?;
        for dir in std::env::split_paths(&path) {
            if !dir.is_absolute() {
                return None;
            }
            let candidate = dir.join(name);
            if candidate.metadata().is_ok_and(|m| m.is_file())
                && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            {
                if self.found.len() >= Self::MAX {
                    self.found.clear();
                }
                self.found.insert(name.to_owned(), candidate.clone());
                return Some(candidate);
            }
        }
        None
    }
}

impl Scratch {
    fn new() -> Self {
        Self {
            buf: vec![0u8; 64 * 1024],
            devnull: File::open("/dev/null").ok(),
            programs: Programs::default(),
        }
    }

    fn stdin(&self) -> Stdio {
        self.devnull
            .as_ref()
            .and_then(|f| f.try_clone().ok())
            .map_or_else(Stdio::null, Stdio::from)
    }
}

fn worker(shared: &Shared) {
    let mut scratch = Scratch::new();
    loop {
        let launch = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if let Some(l) = q.items.pop_front() {
                    break l;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).expect("queue lock");
            }
        };
        let record = run_one(shared, &launch, &mut scratch);
        if shared
            .events
            .send(Event::Finished {
                stage: shared.spec.stage,
                record,
                staged: None,
            })
            .is_err()
        {
            return;
        }
    }
}

/// A log file created on the first byte written.
struct LazyLog {
    path: PathBuf,
    file: Option<File>,
    error: Option<std::io::Error>,
}

impl LazyLog {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            error: None,
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.file.is_none() {
            match File::create(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Err(e) = self.file.as_mut().expect("opened above").write_all(bytes) {
            self.error = Some(e);
        }
    }
}

fn run_one(shared: &Shared, launch: &Launch, scratch: &mut Scratch) -> JobRecord {
    let spec = &shared.spec;
    let job = &launch.job;
    let id = job.id.as_str();
    let result_path = spec.paths.result(id);
    let start = now();
    let record = |outcome: Outcome, result: Option<ResultValue>| JobRecord {
        index: job.index,
        id: id.to_owned(),
        attempt: launch.attempt,
        outcome,
        start: Some(start),
        end: Some(now()),
        run: spec.run.clone(),
        fp: job.fp.clone(),
        result,
    };
    if shared.stop.load(Ordering::SeqCst) != RUNNING {
        return record(
            Outcome::NotRun {
                reason: "run interrupted".into(),
            },
            None,
        );
    }
    if shared.stale.must_remove(id, launch.attempt) {
        let _ = std::fs::remove_file(&result_path);
    }
    let job_file = if job.json.len() <= JOB_ENV_MAX {
        None
    } else {
        let path = spec.paths.job_file(id);
        if let Err(e) = std::fs::write(&path, &job.json) {
            return record(
                Outcome::ExecFailed {
                    error: format!("cannot write {}: {e}", path.display()),
                },
                None,
            );
        }
        Some(path)
    };
    // `program`: where an argv program was found on `PATH` (see `Programs`).
    let command = |program: Option<&std::path::Path>, stdin: Stdio| {
        let mut cmd = match (&job.command, program) {
            (Command::Shell(s), _) => {
                let mut c = std::process::Command::new("/bin/sh");
                c.arg("-c").arg(s);
                c
            }
            (Command::Argv(a), Some(p)) => {
                let mut c = std::process::Command::new(p);
                c.arg0(&a[0]).args(&a[1..]);
                c
            }
            (Command::Argv(a), None) => {
                let mut c = std::process::Command::new(&a[0]);
                c.args(&a[1..]);
                c
            }
        };
        cmd.current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("POOLPARTY_JOB_ID", id)
            .env("POOLPARTY_JOB_INDEX", job.index.to_string())
            .env("POOLPARTY_ATTEMPT", launch.attempt.to_string())
            .env("POOLPARTY_RESULT", &result_path)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        match &job_file {
            None => cmd.env("POOLPARTY_JOB", &job.json),
            Some(path) => cmd.env("POOLPARTY_JOB_FILE", path),
        };
        cmd
    };
    let program = match &job.command {
        Command::Argv(a) if !spec.env.iter().any(|(k, _)| k == "PATH") => {
            scratch.programs.find(&a[0])
        }
        _ => None,
    };
    // What a killed runner leaves is found from these lines (see `store::LiveGroups`).
    let live = |line: &LiveLine| spec.live.as_ref().map_or(Ok(()), |l| l.append(line));
    let starting = LiveLine::Starting {
        stage: spec.name.clone(),
        index: job.index,
        id: id.to_owned(),
        attempt: launch.attempt,
        result: result_path.display().to_string(),
        at: start,
    };
    if let Err(e) = live(&starting) {
        return record(
            Outcome::ExecFailed {
                error: format!("cannot record that it starts: {e}"),
            },
            None,
        );
    }
    let before = crate::process::boot_clock();
    let mut spawned = command(program.as_deref(), scratch.stdin()).spawn();
    if spawned.is_err() && program.is_some() {
        // What was found earlier may be gone: look it up again, as std does.
        scratch.programs.found.clear();
        spawned = command(None, scratch.stdin()).spawn();
    }
    let after = crate::process::boot_clock();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return record(
                Outcome::ExecFailed {
                    error: e.to_string(),
                },
                None,
            );
        }
    };
    let pgid = child.id();
    let started = LiveLine::Started {
        stage: spec.name.clone(),
        index: job.index,
        id: id.to_owned(),
        attempt: launch.attempt,
        pgid,
        start: crate::process::start_time_between(pgid, before, after).unwrap_or(0),
        at: start,
    };
    if let Err(e) = live(&started) {
        // A group the record does not name must not run on: stop it at once.
        let _ = killpg(
            Pid::from_raw(i32::try_from(pgid).unwrap_or(i32::MAX)),
            Signal::SIGKILL,
        );
        let mut child = child;
        let _ = child.wait();
        return record(
            Outcome::ExecFailed {
                error: format!("cannot record its process group: {e}"),
            },
            None,
        );
    }
    let deadline = spec.settings.time.map(|t| Instant::now() + t.0);
    // At most `result_max_bytes + 1` bytes of stdout are kept in memory: a larger result
    // stays in the stdout log, whatever the job prints.
    let capture_stdout = (spec.settings.result == ResultMode::Stdout)
        .then(|| Capture::new(spec.settings.result_max_bytes));
    let mut out = LazyLog::new(spec.paths.log_out(id));
    let mut err = LazyLog::new(spec.paths.log_err(id));
    let (status, stopped, stdout_buf) = supervise(
        shared,
        child,
        deadline,
        (&mut out, &mut err),
        capture_stdout,
        &mut scratch.buf,
    );
    let outcome = match (stopped, status) {
        (Some(Stop::Cancelled), _) => Outcome::Interrupted,
        (Some(Stop::TimedOut), _) => Outcome::TimedOut,
        (None, Err(e)) => Outcome::ExecFailed {
            error: e.to_string(),
        },
        (None, Ok(st)) => match (st.code(), st.signal()) {
            (Some(0), _) => Outcome::Succeeded,
            (Some(c), _) => Outcome::Failed { code: c },
            (None, Some(s)) => Outcome::Signaled { signal: s },
            (None, None) => Outcome::ExecFailed {
                error: st.to_string(),
            },
        },
    };
    // The job ran: a log that could not be written (a full disk) does not make it "could
    // not start", and what it printed is not a result.
    let lost = out.error.or(err.error);
    let outcome = match (&outcome, &lost) {
        (Outcome::Interrupted | Outcome::TimedOut, _) | (_, None) => outcome,
        (_, Some(e)) => Outcome::OutputLost {
            ran: outcome.describe(),
            error: format!("writing its log failed: {e}"),
        },
    };
    let result = match spec.settings.result {
        _ if lost.is_some() => None,
        ResultMode::None => None,
        ResultMode::Stdout => stdout_buf.map(|c| {
            if c.total > spec.settings.result_max_bytes {
                ResultValue::File {
                    path: out.path.display().to_string(),
                    bytes: c.total,
                }
            } else {
                ResultValue::from_bytes(c.kept)
            }
        }),
        ResultMode::File => crate::store::read_result(
            ResultMode::File,
            &result_path,
            &result_path,
            spec.settings.result_max_bytes,
            true,
        ),
    };
    record(outcome, result)
}

/// A job's stdout as its result: the first bytes, up to one more than the result size limit
/// (enough to know it is over), and how many bytes there were in all.
struct Capture {
    kept: Vec<u8>,
    keep: usize,
    total: u64,
}

impl Capture {
    fn new(max: u64) -> Self {
        Self {
            kept: Vec::new(),
            keep: usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX),
            total: 0,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.keep.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[derive(Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut,
}

type Supervised = (
    std::io::Result<std::process::ExitStatus>,
    Option<Stop>,
    Option<Capture>,
);

/// Copies the child's output to its logs until both pipes close and it exited, stopping it on
/// cancel or deadline, then reaps it. One `poll` waits for output and for the exit (a pidfd,
/// Linux 5.3+; on older kernels the exit is checked every [`EXIT_CHECK`] and once the output
/// closed). The child stays a zombie until the end, so the group id it leads cannot be
/// recycled while this may still signal the group.
fn supervise(
    shared: &Shared,
    mut child: Child,
    deadline: Option<Instant>,
    (out, err): (&mut LazyLog, &mut LazyLog),
    capture_stdout: Option<Capture>,
    buf: &mut [u8],
) -> Supervised {
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut captured = capture_stdout;
    let mut stopped: Option<Stop> = None;
    let mut term_sent: Option<Instant> = None;
    let mut exited: Option<Instant> = None;
    let exit_fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    let mut checked = Instant::now();
    let mut idle = Duration::from_micros(20);
    loop {
        // Decide whether to signal the group: cancel, deadline, or lingering descendants.
        let stop_level = shared.stop.load(Ordering::SeqCst);
        if stopped.is_none() {
            if stop_level != RUNNING {
                stopped = Some(Stop::Cancelled);
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                stopped = Some(Stop::TimedOut);
            }
        }
        if stopped.is_some() {
            let now = Instant::now();
            match term_sent {
                None if stop_level == KILL => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    term_sent = Some(now - GRACE);
                }
                None => {
                    let _ = killpg(pgid, Signal::SIGTERM);
                    term_sent = Some(now);
                }
                Some(t) if now.duration_since(t) >= GRACE || stop_level == KILL => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                Some(_) => {}
            }
        }
        let open = stdout.is_some() || stderr.is_some();
        if exited.is_none() && exit_fd.is_none() && (!open || checked.elapsed() >= EXIT_CHECK) {
            checked = Instant::now();
            match crate::process::has_exited(pgid) {
                Ok(true) => exited = Some(checked),
                Ok(false) => {}
                Err(_) => break,
            }
        }
        if let Some(at) = exited {
            if !open {
                break;
            }
            if at.elapsed() >= LINGER {
                // Descendants still hold the pipes: the job is over, stop them.
                let _ = killpg(pgid, Signal::SIGKILL);
                break;
            }
        } else if !open && exit_fd.is_none() {
            // The job closed its output but runs on: wait for it, still watching for stops.
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(100));
            continue;
        }
        let mut fds = Vec::with_capacity(3);
        if let Some(s) = &stdout {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(s) = &stderr {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let (None, Some(f)) = (exited, &exit_fd) {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        let ready = match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(_) => break,
        };
        if ready == 0 {
            continue;
        }
        let mut flags = [false; 3];
        for (f, r) in flags.iter_mut().zip(&fds) {
            *f = r.revents().is_some_and(|r| !r.is_empty());
        }
        drop(fds);
        let mut i = 0;
        if stdout.is_some() {
            if flags[i] && !pump(&mut stdout, buf, out, captured.as_mut()) {
                stdout = None;
            }
            i += 1;
        }
        if stderr.is_some() {
            if flags[i] && !pump(&mut stderr, buf, err, None) {
                stderr = None;
            }
            i += 1;
        }
        if exited.is_none() && exit_fd.is_some() && flags[i] {
            exited = Some(Instant::now());
        }
    }
    (child.wait(), stopped, captured)
}

/// Reads once from a ready pipe into its log; false at end of file.
fn pump<R: Read>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
    log: &mut LazyLog,
    captured: Option<&mut Capture>,
) -> bool {
    let Some(p) = pipe.as_mut() else { return false };
    match p.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            log.write(&buf[..n]);
            if let Some(c) = captured {
                c.add(&buf[..n]);
            }
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => true,
        Err(_) => false,
    }
}
