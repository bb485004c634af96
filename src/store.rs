//! The state store: the only module that touches a workflow's state folder
//! (`<work_dir>/<workflow>/`).
//!
//! Layout (see DESIGN.md):
//! ```text
//! <state>/.lock                  flock'ed while a runner is active; names its holder
//! <state>/.live.jsonl            process groups of local jobs started and not yet recorded
//! <state>/.runs/<run>.json       provenance of each run
//! <state>/summary.json           the last run's summary
//! <state>/<stage>/jobs.jsonl     the expanded jobs, in order: {"index","id","job"}
//! <state>/<stage>/ledger.jsonl   append-only: one JobRecord per finished attempt
//! <state>/<stage>/results.jsonl  ordered results, written when the stage ends
//! <state>/<stage>/logs/<id>.out|.err   a job's output (only when it printed something)
//! <state>/<stage>/results/<id>   $POOLPARTY_RESULT; large results stay here
//! <state>/<stage>/staging/       outcome files written by cluster job wrappers
//! ```
//! Small files that change as a whole go through [`atomic_write`]; outcomes are appended to
//! the ledger, never rewritten.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::outcome::JobRecord;

/// Version of the on-disk formats; readers accept this and older.
pub const FORMAT_VERSION: u32 = 1;

/// Paths inside a workflow's state folder.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root` (`<work_dir>/<workflow>`).
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
    /// The state folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// A stage's folder.
    #[must_use]
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }
    /// A stage's log folder.
    #[must_use]
    pub fn logs_dir(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("logs")
    }
    /// A job's stdout log.
    #[must_use]
    pub fn log_out(&self, stage: &str, id: &str) -> PathBuf {
        self.logs_dir(stage).join(format!("{id}.out"))
    }
    /// A job's stderr log.
    #[must_use]
    pub fn log_err(&self, stage: &str, id: &str) -> PathBuf {
        self.logs_dir(stage).join(format!("{id}.err"))
    }
    /// The folder of result files.
    #[must_use]
    pub fn results_dir(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("results")
    }
    /// `$POOLPARTY_RESULT` of a job.
    #[must_use]
    pub fn result_path(&self, stage: &str, id: &str) -> PathBuf {
        self.results_dir(stage).join(id)
    }
    /// The stage's ledger.
    #[must_use]
    pub fn ledger(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("ledger.jsonl")
    }
    /// The stage's expanded jobs.
    #[must_use]
    pub fn jobs_file(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("jobs.jsonl")
    }
    /// The stage's ordered outcomes, written when the stage ends (what a stage that needs it
    /// reads).
    #[must_use]
    pub fn outcomes_file(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("outcomes.jsonl")
    }
    /// The stage's ordered results.
    #[must_use]
    pub fn results_file(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("results.jsonl")
    }
    /// Where cluster job wrappers drop outcome files.
    #[must_use]
    pub fn staging_dir(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("staging")
    }
    /// Where cluster backends write array scripts.
    #[must_use]
    pub fn scripts_dir(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("scripts")
    }
    /// The durable record of a stage's submitted arrays.
    #[must_use]
    pub fn submissions(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("submissions.jsonl")
    }
    /// The last run's summary.
    #[must_use]
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// Provenance records.
    #[must_use]
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join(".runs")
    }
    /// The lock file.
    #[must_use]
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }
    /// The record of the local jobs' process groups that may be running ([`LiveGroups`]).
    #[must_use]
    pub fn live_file(&self) -> PathBuf {
        self.root.join(".live.jsonl")
    }

    /// Creates a stage's folders.
    ///
    /// # Errors
    /// When a folder cannot be created.
    pub fn create_stage_dirs(&self, stage: &str) -> Result<()> {
        for d in [
            self.logs_dir(stage),
            self.results_dir(stage),
            self.staging_dir(stage),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| Error::store("create", d, e))?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename: readers see the old
/// or the new content, never a mix.
///
/// # Errors
/// Any I/O error, naming the path.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::store("create", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        // A full disk must not also leave the half-written temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        Error::store("write", path, e)
    })
}

/// Who holds the lock.
#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Start, seconds since the epoch.
    pub started: f64,
    /// The run id.
    pub run: String,
}

/// An exclusive hold on a workflow's state folder, released on drop (or when the process
/// dies, even by SIGKILL: it is an `flock`).
#[derive(Debug)]
pub struct Lock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes the workflow lock.
///
/// # Errors
/// `Locked` naming the holder when another live process has it.
pub fn lock(layout: &Layout, run: &str) -> Result<Lock> {
    let path = layout.lock_file();
    std::fs::create_dir_all(layout.root()).map_err(|e| Error::store("create", layout.root(), e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::store("open", &path, e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let holder = Holder {
                pid: std::process::id(),
                host: hostname(),
                started: now(),
                run: run.to_owned(),
            };
            let text = serde_json::to_string(&holder).expect("holder serializes");
            let write = |f: &mut File| -> std::io::Result<()> {
                f.set_len(0)?;
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(0))?;
                f.write_all(text.as_bytes())?;
                f.sync_data()
            };
            write(&mut lock).map_err(|e| Error::store("write", &path, e))?;
            Ok(Lock { _lock: lock })
        }
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Holder>(&t).ok())
                .map_or_else(
                    || "holder unknown".to_owned(),
                    |h| {
                        format!(
                            "pid {} on {}, run {} started {}",
                            h.pid,
                            h.host,
                            h.run,
                            format_time(h.started)
                        )
                    },
                );
            Err(Error::Locked {
                path: layout.root().to_path_buf(),
                holder,
            })
        }
        Err((_, errno)) => Err(Error::store("lock", &path, errno.into())),
    }
}

/// Takes the workflow lock, waiting while another live process holds it.
///
/// # Errors
/// I/O errors.
pub fn lock_wait(layout: &Layout, run: &str) -> Result<Lock> {
    loop {
        match lock(layout, run) {
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(500)),
            other => return other,
        }
    }
}

/// Who holds the lock, as written in the lock file.
#[must_use]
pub fn read_holder(layout: &Layout) -> Option<Holder> {
    let text = std::fs::read_to_string(layout.lock_file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// The host name.
#[must_use]
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
#[must_use]
pub fn format_time(t: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "seconds since 1970 fit in i64"
    )]
    let secs = t as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An open, append-only ledger.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
    unsynced: bool,
    /// Length after the last whole record this handle appended (or found).
    len: u64,
    /// Device and inode of the open file, to notice the path being deleted or replaced.
    identity: (u64, u64),
}

impl Ledger {
    /// Opens (creating) a stage's ledger for appending.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::store("open", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::store("open", &path, e))?;
        Ok(Self {
            file,
            path,
            unsynced: false,
            len: meta.len(),
            identity: identity(&meta),
        })
    }

    /// Appends one record with a single `write` (so a killed runner leaves whole lines).
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&mut self, record: &JobRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("a record serializes");
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // A partial record (a full disk) is cut off again, so the ledger stays readable;
            // the error says which outcome is not recorded.
            let _ = self.file.set_len(self.len);
            let what = std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; job {} `{}` ({}) is not recorded and will run again",
                    record.index,
                    record.id,
                    record.outcome.describe()
                ),
            );
            return Err(Error::store("append to", &self.path, what));
        }
        self.len += line.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Flushes appended records to stable storage.
    ///
    /// # Errors
    /// When fsync fails.
    /// Also checks that the ledger is still where it was opened: records appended to a file
    /// that was deleted (a job that removed the state folder) would be lost.
    pub fn sync(&mut self) -> Result<()> {
        let here = std::fs::metadata(&self.path);
        if here.as_ref().map(identity).ok() != Some(self.identity) {
            let why = match here {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => e,
                _ => std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "it was deleted or replaced during the run (did a job remove the state folder?); its records are lost, the run stops",
                ),
            };
            return Err(Error::store("keep", &self.path, why));
        }
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| Error::store("sync", &self.path, e))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Appends lines to a file and syncs it (small durable logs such as `submissions.jsonl`).
///
/// # Errors
/// On I/O failure.
pub fn append_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        let len = f.metadata()?.len();
        // A partial line (a full disk) is cut off again, so the file stays readable.
        f.write_all(buf.as_bytes())
            .and_then(|()| f.sync_data())
            .inspect_err(|_| {
                let _ = f.set_len(len);
            })
    };
    write().map_err(|e| Error::store("append to", path, e))
}

/// Reads a JSON Lines file of `T` (empty when missing; a torn last line is skipped).
///
/// # Errors
/// On I/O failure or a corrupt line (see [`read_ledger`]).
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    read_records(path)
}

/// Reads every record of a ledger (none if it does not exist).
///
/// Only a torn last line is skipped: the start of a record, cut off by a crash mid-append
/// (no newline after it, no NUL byte in it). Anything else that is not a record (garbage, a
/// line of NUL bytes left by a crashed file system, a complete line that does not parse) is
/// refused with its line number and how to recover, never read as "no record": that would
/// silently run every recorded success again.
///
/// # Errors
/// When the file cannot be read, or holds a line that is not a record.
pub fn read_ledger(path: &Path) -> Result<Vec<JobRecord>> {
    read_records(path)
}

/// The latest record of each job id in a ledger, read one line at a time so that only one
/// record per job is ever held (the ledger of a million jobs is ~250 MB).
///
/// # Errors
/// As [`read_ledger`].
pub fn read_latest(path: &Path) -> Result<HashMap<String, JobRecord>> {
    let mut map: HashMap<String, JobRecord> = HashMap::new();
    for_each_record(path, |r: JobRecord| match map.get_mut(r.id.as_str()) {
        Some(slot) => *slot = r,
        None => {
            map.insert(r.id.clone(), r);
        }
    })?;
    Ok(map)
}

/// [`read_latest`], and the highest attempt of each job whose latest record is not its
/// highest attempt (a job recorded as not run after it ran, for one): attempt numbers of
/// new attempts go above both.
///
/// # Errors
/// As [`read_ledger`].
pub fn read_latest_with_max_attempt(
    path: &Path,
) -> Result<(HashMap<String, JobRecord>, HashMap<String, u32>)> {
    let mut map: HashMap<String, JobRecord> = HashMap::new();
    let mut higher: HashMap<String, u32> = HashMap::new();
    for_each_record(path, |r: JobRecord| match map.get_mut(r.id.as_str()) {
        Some(slot) => {
            let max = slot
                .attempt
                .max(higher.get(r.id.as_str()).copied().unwrap_or(0));
            if max > r.attempt {
                higher.insert(r.id.clone(), max);
            } else {
                higher.remove(r.id.as_str());
            }
            *slot = r;
        }
        None => {
            map.insert(r.id.clone(), r);
        }
    })?;
    Ok((map, higher))
}

fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_record(path, |r| out.push(r))?;
    Ok(out)
}

fn for_each_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T),
) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::store("read", path, e))?;
        if read == 0 {
            break;
        }
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        let nul = buf.contains(&0);
        if !nul && buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if nul {
            return Err(corrupt(path, n, "NUL bytes instead of a record".to_owned()));
        }
        match serde_json::from_slice::<T>(&buf) {
            Ok(r) => f(r),
            Err(_) if !complete => {}
            Err(e) => return Err(corrupt(path, n, e.to_string())),
        }
    }
    Ok(())
}

/// The error for line `n` of a state file that is not a record, with how to recover.
fn corrupt(path: &Path, n: usize, what: String) -> Error {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let help = match file {
        "ledger.jsonl" | "submissions.jsonl" => format!(
            "`poolparty run --force` moves this file aside (to `{file}{CORRUPT_SUFFIX}<time>`) and runs the stage afresh; or repair line {n} by hand"
        ),
        _ => format!(
            "move the file aside (e.g. `mv {0} {0}{CORRUPT_SUFFIX}$(date +%s)`) or repair line {n}; `poolparty run` writes it again",
            path.display()
        ),
    };
    Error::CorruptState {
        path: path.to_path_buf(),
        message: format!("line {n} is not a record: {what}"),
        help,
    }
}

/// What a corrupt state file moved aside by `run --force` is renamed with (plus a time).
pub const CORRUPT_SUFFIX: &str = ".corrupt-";

/// Moves a ledger or `submissions.jsonl` that cannot be read aside (to
/// `<name>.corrupt-<YYYYMMDDTHHMMSS>`), so a forced run starts that stage afresh. Returns where
/// it went, or `None` when the file reads well (or does not exist).
///
/// # Errors
/// When the file cannot be read or renamed.
pub fn set_aside_if_corrupt(path: &Path) -> Result<Option<PathBuf>> {
    match read_records::<serde::de::IgnoredAny>(path) {
        Err(Error::CorruptState { .. }) => {}
        other => return other.map(|_| None),
    }
    let stamp: String = format_time(now())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("state");
    let to = path.with_file_name(format!(
        "{name}{CORRUPT_SUFFIX}{}T{}",
        &stamp[..8],
        &stamp[8..14]
    ));
    std::fs::rename(path, &to).map_err(|e| Error::store("move aside", path, e))?;
    Ok(Some(to))
}

/// The last record of each job id.
#[must_use]
pub fn latest(records: Vec<JobRecord>) -> HashMap<String, JobRecord> {
    let mut map: HashMap<String, JobRecord> = HashMap::with_capacity(records.len());
    for r in records {
        map.insert(r.id.clone(), r);
    }
    map
}

/// One line of `jobs.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobLine {
    /// Index.
    pub index: usize,
    /// Id.
    pub id: String,
    /// Value, exactly as expanded.
    pub job: Box<RawValue>,
}

/// Writes a stage's expanded jobs.
///
/// # Errors
/// On I/O failure.
pub fn write_jobs(path: &Path, jobs: &Jobs) -> Result<()> {
    let mut buf = Vec::with_capacity(jobs.len() * 64);
    for j in jobs {
        buf.extend_from_slice(b"{\"index\":");
        buf.extend_from_slice(j.index.to_string().as_bytes());
        buf.extend_from_slice(b",\"id\":");
        buf.extend_from_slice(serde_json::to_string(j.id).expect("string").as_bytes());
        buf.extend_from_slice(b",\"job\":");
        buf.extend_from_slice(j.json.as_bytes());
        buf.extend_from_slice(b"}\n");
    }
    atomic_write(path, &buf)
}

/// Reads a stage's expanded jobs (`None` when the stage was never expanded).
///
/// # Errors
/// On I/O failure or a corrupt line.
pub fn read_jobs(path: &Path) -> Result<Option<Vec<JobLine>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    // Line by line: the file's text is never held whole next to the parsed lines.
    let mut out = Vec::new();
    for (n, line) in BufReader::with_capacity(1 << 16, file).lines().enumerate() {
        let line = line.map_err(|e| Error::store("read", path, e))?;
        if line.is_empty() {
            continue;
        }
        let job: JobLine =
            serde_json::from_str(&line).map_err(|e| corrupt(path, n + 1, e.to_string()))?;
        out.push(job);
    }
    Ok(Some(out))
}

/// The last `n` lines of a file, if it exists and is not empty.
#[must_use]
pub fn tail(path: &Path, n: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(8192);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    crate::jobs::stderr_tail(&buf, n)
}

/// One line of `.live.jsonl`, the record of the local jobs' process groups: a runner writes
/// a header, a `starting` line before it starts a job, a `started` line with its process group
/// right after, and a `recorded` line once its outcome is in the ledger. Groups started and not recorded
/// when no runner holds the lock were left by a runner that died: the next runner, `status`
/// or `cancel` stops what is left of them and records them as interrupted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveLine {
    /// The runner that writes the lines after it.
    Runner {
        /// Its run id.
        run: String,
        /// Its host.
        host: String,
        /// The boot it ran in (`/proc/sys/kernel/random/boot_id`).
        boot: String,
    },
    /// A job is about to start (written before the spawn: if the runner dies before the
    /// `started` line, the job's processes are found by its `$POOLPARTY_RESULT`).
    Starting {
        /// The stage.
        stage: String,
        /// The job's index.
        index: usize,
        /// The job id.
        id: String,
        /// The attempt.
        attempt: u32,
        /// Its `$POOLPARTY_RESULT`, unique to the job in its environment.
        result: String,
        /// When, seconds since the epoch.
        at: f64,
    },
    /// A job's process group started.
    Started {
        /// The stage.
        stage: String,
        /// The job's index.
        index: usize,
        /// The job id.
        id: String,
        /// The attempt.
        attempt: u32,
        /// The group id (the leader's pid).
        pgid: u32,
        /// The leader's start time in clock ticks since boot (tells a recycled pid apart).
        start: u64,
        /// When, seconds since the epoch.
        at: f64,
    },
    /// The attempt's outcome is in the ledger.
    Recorded {
        /// The stage.
        stage: String,
        /// The job id.
        id: String,
        /// The attempt.
        attempt: u32,
    },
}

/// The open `.live.jsonl` of a running runner, shared by the local backends' workers. Lines
/// are appended with one `write` each (`O_APPEND`) and not synced: they only need to outlive the runner's
/// process, not the machine (a reboot ends every job anyway).
#[derive(Debug)]
pub struct LiveGroups {
    file: std::sync::Mutex<File>,
    path: PathBuf,
}

impl LiveGroups {
    /// Starts a new record (replacing an old one, which must have been recovered).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn create(path: PathBuf, header: &LiveLine) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::store("remove", &path, e));
            }
            _ => {}
        }
        // O_APPEND: each line is one write, never interleaved with the jobs' own lines.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::store("create", &path, e))?;
        let live = Self {
            file: std::sync::Mutex::new(file),
            path,
        };
        live.append(header)
            .map_err(|e| Error::store("write", &live.path, e))?;
        Ok(live)
    }

    /// Appends one line.
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&self, line: &LiveLine) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).expect("a live line serializes");
        bytes.push(b'\n');
        self.file.lock().expect("live file").write_all(&bytes)
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What `.live.jsonl` says: the runner that wrote it and the groups it started whose outcome
/// is not recorded, in start order (`None` when there is no record).
///
/// # Errors
/// When it cannot be read, or a line other than the last is garbage.
pub fn read_live(path: &Path) -> Result<Option<(Option<LiveLine>, Vec<LiveLine>)>> {
    if !path.exists() {
        return Ok(None);
    }
    let lines: Vec<LiveLine> = read_lines(path)?;
    type Key = (String, String, u32);
    let key = |stage: &str, id: &str, attempt: u32| -> Key { (stage.into(), id.into(), attempt) };
    let mut recorded: std::collections::HashSet<Key> = std::collections::HashSet::new();
    let mut started: std::collections::HashSet<Key> = std::collections::HashSet::new();
    for l in &lines {
        match l {
            LiveLine::Recorded { stage, id, attempt } => {
                recorded.insert(key(stage, id, *attempt));
            }
            LiveLine::Started {
                stage, id, attempt, ..
            } => {
                started.insert(key(stage, id, *attempt));
            }
            _ => {}
        }
    }
    let mut header = None;
    let mut open: Vec<LiveLine> = Vec::new();
    for l in lines {
        match &l {
            LiveLine::Runner { .. } => header = Some(l),
            LiveLine::Started {
                stage, id, attempt, ..
            } => {
                if !recorded.contains(&key(stage, id, *attempt)) {
                    open.push(l);
                }
            }
            LiveLine::Starting {
                stage, id, attempt, ..
            } => {
                let k = key(stage, id, *attempt);
                if !recorded.contains(&k) && !started.contains(&k) {
                    open.push(l);
                }
            }
            LiveLine::Recorded { .. } => {}
        }
    }
    Ok(Some((header, open)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn rec(id: &str, attempt: u32, outcome: Outcome) -> JobRecord {
        JobRecord {
            index: 0,
            id: id.into(),
            attempt,
            outcome,
            start: None,
            end: None,
            run: "r".into(),
            fp: "f".into(),
            result: None,
        }
    }

    #[test]
    fn ledger_appends_and_skips_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(path.clone()).unwrap();
        l.append(&rec("a", 1, Outcome::Failed { code: 1 })).unwrap();
        l.append(&rec("a", 2, Outcome::Succeeded)).unwrap();
        l.sync().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"index\":1,\"id")
            .unwrap();
        let recs = read_ledger(&path).unwrap();
        assert_eq!(recs.len(), 2);
        let last = latest(recs);
        assert_eq!(last["a"].attempt, 2);
    }

    #[test]
    fn only_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(path.clone()).unwrap();
        l.append(&rec("a", 1, Outcome::Succeeded)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8], line: &str| {
            std::fs::write(&path, bytes).unwrap();
            match read_ledger(&path).unwrap_err() {
                Error::CorruptState { message, help, .. } => {
                    assert!(message.contains(line), "{message}");
                    assert!(help.contains("run --force"), "{help}");
                }
                e => panic!("{e:?}"),
            }
        };
        // NUL bytes (a crashed file system), with or without a newline.
        refused(&vec![0; good.len()], "line 1");
        refused(&[&good[..], &[0, 0, b'\n']].concat(), "line 2");
        // A complete line that is not a record, even the last one.
        refused(&[&good[..], b"garbage\n"].concat(), "line 2");
        refused(&[b"garbage\n", &good[..]].concat(), "line 1");
        // The start of a record without its newline is a torn append.
        std::fs::write(&path, [&good[..], b"{\"index\":1,\"id"].concat()).unwrap();
        assert_eq!(read_ledger(&path).unwrap().len(), 1);
    }

    #[test]
    fn corrupt_file_is_set_aside_and_a_good_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        assert!(set_aside_if_corrupt(&path).unwrap().is_none());
        let mut l = Ledger::open(path.clone()).unwrap();
        l.append(&rec("a", 1, Outcome::Succeeded)).unwrap();
        assert!(set_aside_if_corrupt(&path).unwrap().is_none());
        assert!(path.exists());
        std::fs::write(&path, b"\0\0\0").unwrap();
        let to = set_aside_if_corrupt(&path).unwrap().unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"\0\0\0");
        assert!(
            to.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ledger.jsonl.corrupt-")
        );
    }

    #[test]
    fn ledger_deleted_under_the_runner_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(path.clone()).unwrap();
        l.append(&rec("a", 1, Outcome::Succeeded)).unwrap();
        l.sync().unwrap();
        std::fs::remove_file(&path).unwrap();
        l.append(&rec("b", 1, Outcome::Succeeded)).unwrap();
        let e = l.sync().unwrap_err();
        assert!(e.to_string().contains("ledger.jsonl"), "{e}");
        // Replaced by another file: noticed too.
        std::fs::write(&path, b"").unwrap();
        assert!(l.sync().is_err());
    }

    #[test]
    fn lock_is_exclusive_and_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("w"));
        let held = lock(&layout, "run1").unwrap();
        // flock is per open file description: a second open in the same process conflicts.
        match lock(&layout, "run2").unwrap_err() {
            Error::Locked { holder, .. } => assert!(holder.contains("run1"), "{holder}"),
            e => panic!("{e:?}"),
        }
        drop(held);
        lock(&layout, "run3").unwrap();
    }

    #[test]
    fn live_record_keeps_groups_whose_outcome_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".live.jsonl");
        let header = LiveLine::Runner {
            run: "r".into(),
            host: "h".into(),
            boot: "b".into(),
        };
        let live = LiveGroups::create(path.clone(), &header).unwrap();
        let started = |id: &str, pgid: u32| {
            for l in [
                LiveLine::Starting {
                    stage: "a\"b".into(),
                    index: 3,
                    id: id.into(),
                    attempt: 2,
                    result: format!("/r/{id}"),
                    at: 1.5,
                },
                LiveLine::Started {
                    stage: "a\"b".into(),
                    index: 3,
                    id: id.into(),
                    attempt: 2,
                    pgid,
                    start: 77,
                    at: 1.5,
                },
            ] {
                live.append(&l).unwrap();
            }
        };
        started("x", 10);
        started("y", 11);
        live.append(&LiveLine::Starting {
            stage: "a\"b".into(),
            index: 4,
            id: "z".into(),
            attempt: 1,
            result: "/r/z".into(),
            at: 2.0,
        })
        .unwrap();
        live.append(&LiveLine::Recorded {
            stage: "a\"b".into(),
            id: "x".into(),
            attempt: 2,
        })
        .unwrap();
        let (h, open) = read_live(&path).unwrap().unwrap();
        assert!(matches!(h, Some(LiveLine::Runner { run, .. }) if run == "r"));
        assert_eq!(open.len(), 2, "{open:?}");
        assert!(matches!(&open[1], LiveLine::Starting { id, .. } if id == "z"));
        match &open[0] {
            LiveLine::Started {
                stage,
                index,
                id,
                attempt,
                pgid,
                start,
                at,
            } => assert_eq!(
                (
                    stage.as_str(),
                    *index,
                    id.as_str(),
                    *attempt,
                    *pgid,
                    *start,
                    *at
                ),
                ("a\"b", 3, "y", 2, 11, 77, 1.5)
            ),
            l => panic!("{l:?}"),
        }
        assert!(read_live(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn time_format() {
        assert_eq!(format_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000.0), "2026-11-18 11:06:40 UTC");
    }
}
