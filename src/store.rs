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
use crate::jobs::Job;
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
    write().map_err(|e| Error::store("write", path, e))
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
        Ok(Self {
            file,
            path,
            unsynced: false,
        })
    }

    /// Appends one record with a single `write` (so a killed runner leaves whole lines).
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&mut self, record: &JobRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("a record serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| Error::store("append to", &self.path, e))?;
        self.unsynced = true;
        Ok(())
    }

    /// Flushes appended records to stable storage.
    ///
    /// # Errors
    /// When fsync fails.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| Error::store("sync", &self.path, e))?;
            self.unsynced = false;
        }
        Ok(())
    }
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
        f.write_all(buf.as_bytes())?;
        f.sync_data()
    };
    write().map_err(|e| Error::store("append to", path, e))
}

/// Reads a JSON Lines file of `T` (empty when missing; a torn last line is skipped).
///
/// # Errors
/// On I/O failure or a corrupt line before the last.
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (n, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(v) => out.push(v),
            Err(_) if n + 1 == lines.len() => {}
            Err(e) => {
                return Err(Error::CorruptState {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", n + 1),
                });
            }
        }
    }
    Ok(out)
}

/// Reads every record of a ledger (none if it does not exist). A torn last line, left by a
/// machine crash mid-write, is skipped.
///
/// # Errors
/// When the file cannot be read, or a line other than the last is not a record.
pub fn read_ledger(path: &Path) -> Result<Vec<JobRecord>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let mut out = Vec::new();
    let mut lines = BufReader::new(file).lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.map_err(|e| Error::store("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JobRecord>(&line) {
            Ok(r) => out.push(r),
            Err(_) if lines.peek().is_none() => {}
            Err(e) => {
                return Err(Error::CorruptState {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", n + 1),
                });
            }
        }
    }
    Ok(out)
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
pub fn write_jobs(path: &Path, jobs: &[Job]) -> Result<()> {
    let mut buf = Vec::with_capacity(jobs.len() * 64);
    for j in jobs {
        buf.extend_from_slice(b"{\"index\":");
        buf.extend_from_slice(j.index.to_string().as_bytes());
        buf.extend_from_slice(b",\"id\":");
        buf.extend_from_slice(
            serde_json::to_string(j.id.as_str())
                .expect("string")
                .as_bytes(),
        );
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
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| Error::CorruptState {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", n + 1),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
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
