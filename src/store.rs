//! The state store: the owner of a workflow's state folder (`<work_dir>/<workflow>/`): its
//! paths, the formats of what is recorded there and the rules for writing it. Others write
//! there only at paths and through types from here (DESIGN.md, "who writes what").
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
//! <state>/<stage>/staging/<id>.<attempt>.json   outcome files written by job wrappers
//! <state>/<stage>/submissions.jsonl  arrays submitted (by a runner or a bundle)
//! <state>/<stage>/bundled.jsonl  local bundle scripts that ran; drivers.jsonl: driver jobs
//! ```
//! Small files that change as a whole go through [`atomic_write`]; outcomes are appended to
//! the ledger, never rewritten, and only through [`Ledger`] (during a run) or [`record`]
//! (outside one), which keep its durability rules. Readers get each job's latest state as a
//! small [`JobState`] ([`read_states`]) and fetch a record or result by its offset
//! ([`LedgerReader`]); a job's result is read from its files by [`read_result`] alone. A
//! job's paths are made by [`Layout`] or, once per stage for a backend, [`StagePaths`];
//! outcome files are read by [`read_staged`] and removed by the ledger's sync, [`record`] or
//! [`remove_staged`]. The formats of the other recorded lines are typed here too
//! ([`Submission`], [`Bundled`], [`DriverLine`], [`LiveLine`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::manifest::ResultMode;
use crate::outcome::{JobRecord, Outcome, OutcomeKind, ResultValue, StagedOutcome};

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
        log_out_in(&self.logs_dir(stage), id)
    }
    /// A job's stderr log.
    #[must_use]
    pub fn log_err(&self, stage: &str, id: &str) -> PathBuf {
        log_err_in(&self.logs_dir(stage), id)
    }
    /// The folder of result files.
    #[must_use]
    pub fn results_dir(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("results")
    }
    /// `$POOLPARTY_RESULT` of a job.
    #[must_use]
    pub fn result_path(&self, stage: &str, id: &str) -> PathBuf {
        result_in(&self.results_dir(stage), id)
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
    /// The outcome file a job's wrapper writes for one attempt (`<id>.<attempt>.json`).
    #[must_use]
    pub fn staged_outcome(&self, stage: &str, id: &str, attempt: u32) -> PathBuf {
        staged_in(&self.staging_dir(stage), id, attempt)
    }
    /// The record of a stage's local bundle scripts that `submit.sh` ran.
    #[must_use]
    pub fn bundled(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("bundled.jsonl")
    }
    /// A stage's folders of per-job files, for a backend that makes a job's paths many
    /// times (made once per stage).
    #[must_use]
    pub fn stage_paths(&self, stage: &str) -> StagePaths {
        StagePaths {
            logs_dir: self.logs_dir(stage),
            results_dir: self.results_dir(stage),
            staging_dir: self.staging_dir(stage),
        }
    }
    /// The record of a stage's submitted driver jobs.
    #[must_use]
    pub fn drivers(&self, stage: &str) -> PathBuf {
        self.stage_dir(stage).join("drivers.jsonl")
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
    /// The provenance record of a run (its whole summary once it ended).
    #[must_use]
    pub fn run_record(&self, run: &str) -> PathBuf {
        self.runs_dir().join(format!("{run}.json"))
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

/// A stage's folders of per-job files ([`Layout::stage_paths`]). The names of a job's files
/// are made here and in [`Layout`]'s per-job paths alone, through the same functions (the
/// job wrapper script, `templates/wrapper.sh`, writes the same names).
#[derive(Clone, Debug)]
pub struct StagePaths {
    /// Where logs go: `<logs>/<id>.out|.err`.
    pub logs_dir: PathBuf,
    /// Where results go: `<results>/<id>` (and `<id>.job.json`, a job too long for the
    /// environment).
    pub results_dir: PathBuf,
    /// Where job wrappers drop outcome files: `<staging>/<id>.<attempt>.json`.
    pub staging_dir: PathBuf,
}

impl StagePaths {
    /// A job's stdout log.
    #[must_use]
    pub fn log_out(&self, id: &str) -> PathBuf {
        log_out_in(&self.logs_dir, id)
    }
    /// A job's stderr log.
    #[must_use]
    pub fn log_err(&self, id: &str) -> PathBuf {
        log_err_in(&self.logs_dir, id)
    }
    /// `$POOLPARTY_RESULT` of a job.
    #[must_use]
    pub fn result(&self, id: &str) -> PathBuf {
        result_in(&self.results_dir, id)
    }
    /// `$POOLPARTY_JOB_FILE` of a job whose JSON is too long for the environment.
    #[must_use]
    pub fn job_file(&self, id: &str) -> PathBuf {
        self.results_dir.join(format!("{id}.job.json"))
    }
    /// The outcome file of one attempt of a job.
    #[must_use]
    pub fn staged(&self, id: &str, attempt: u32) -> PathBuf {
        staged_in(&self.staging_dir, id, attempt)
    }
}

fn log_out_in(logs_dir: &Path, id: &str) -> PathBuf {
    logs_dir.join(format!("{id}.out"))
}

fn log_err_in(logs_dir: &Path, id: &str) -> PathBuf {
    logs_dir.join(format!("{id}.err"))
}

fn result_in(results_dir: &Path, id: &str) -> PathBuf {
    results_dir.join(id)
}

fn staged_in(staging_dir: &Path, id: &str, attempt: u32) -> PathBuf {
    staging_dir.join(format!("{id}.{attempt}.json"))
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

/// [`atomic_write`] for content written piece by piece (through a buffer) rather than held
/// whole: `f` writes it to the temporary file.
///
/// # Errors
/// Any I/O error naming the path, or an error from `f` (the temporary file is removed).
pub fn atomic_write_with(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::store("create", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> Result<()> {
        let file = File::create(&tmp).map_err(|e| Error::store("write", path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, file);
        f(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::store("write", path, e.into_error()))?;
        file.sync_data()
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::store("write", path, e))
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// As [`atomic_write_with`], but a file that already holds exactly the bytes `f` writes is
/// left as it is (not written, not renamed, its time unchanged): `f`'s output is compared
/// with the file as it comes, and only from the first difference on does a temporary file
/// get written (the equal prefix copied from the old file first), synced and renamed over
/// it. A resumed run that finds everything done thus writes none of its per-job files again.
/// Returns whether the file was written.
///
/// # Errors
/// As [`atomic_write_with`].
pub fn write_if_changed_with(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<bool> {
    let Ok(old) = File::open(path) else {
        return atomic_write_with(path, f).map(|()| true);
    };
    let mut w = Diverging {
        path,
        old: Some(BufReader::with_capacity(1 << 16, old)),
        matched: 0,
        out: None,
        scratch: Vec::new(),
    };
    let written = f(&mut w).and_then(|()| w.finish());
    if written.is_err() {
        if let Some((tmp, _)) = w.out.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
    written
}

/// The writer of [`write_if_changed_with`]: compares with the old file until the first
/// difference, then writes a temporary file.
struct Diverging<'a> {
    path: &'a Path,
    /// The old file, while everything so far matched it.
    old: Option<BufReader<File>>,
    /// Bytes that matched.
    matched: u64,
    /// The temporary file, once the content differs.
    out: Option<(PathBuf, std::io::BufWriter<File>)>,
    scratch: Vec<u8>,
}

impl Diverging<'_> {
    /// Starts the temporary file with the matched prefix.
    fn diverge(&mut self) -> std::io::Result<&mut std::io::BufWriter<File>> {
        if self.out.is_none() {
            self.old = None;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let tmp = dir.join(format!(
                ".{}.tmp{}",
                self.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("file"),
                std::process::id()
            ));
            let file = File::create(&tmp)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 16, file);
            if self.matched > 0 {
                let mut prefix = File::open(self.path)?.take(self.matched);
                let copied = std::io::copy(&mut prefix, &mut w)?;
                if copied != self.matched {
                    return Err(std::io::Error::other(
                        "the file shrank while being compared",
                    ));
                }
            }
            self.out = Some((tmp, w));
        }
        Ok(&mut self.out.as_mut().expect("set above").1)
    }

    /// Ends the write: nothing when the old file matched to its end, else the temporary
    /// file synced and renamed over it.
    fn finish(&mut self) -> Result<bool> {
        let path = self.path;
        let io = |e| Error::store("write", path, e);
        if let Some(old) = self.old.as_mut() {
            let mut byte = [0u8; 1];
            if matches!(old.read(&mut byte), Ok(0)) {
                return Ok(false);
            }
        }
        self.diverge().map_err(io)?;
        let (tmp, w) = self.out.take().expect("diverged");
        let file = w.into_inner().map_err(|e| io(e.into_error()));
        let done = file.and_then(|file| {
            file.sync_data()
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(io)
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map(|()| true)
    }
}

impl Write for Diverging<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(old) = self.old.as_mut() {
            self.scratch.resize(buf.len(), 0);
            if old.read_exact(&mut self.scratch).is_ok() && self.scratch == buf {
                self.matched += buf.len() as u64;
                return Ok(buf.len());
            }
        }
        self.diverge()?.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some((_, w)) => w.flush(),
            None => Ok(()),
        }
    }
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

impl Holder {
    /// Whether the holder is a live process on this host (one on another host cannot be
    /// checked from here).
    #[must_use]
    pub fn is_live_here(&self) -> bool {
        self.host == hostname() && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
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

/// An open, append-only ledger: the one way records get into a stage's ledger.
///
/// Its durability rules: one `write` per record (a killed writer leaves whole lines), a
/// partial record (a full disk) is cut off again, and the outcome files records were made
/// from ([`Ledger::append_staged`]) are deleted only by the [`Ledger::sync`] that made those
/// records durable. During a run the runner syncs at most every 200 ms and at the end;
/// writers outside a run use [`record`], which syncs once.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
    unsynced: bool,
    /// Length after the last whole record this handle appended (or found).
    len: u64,
    /// Device and inode of the open file, to notice the path being deleted or replaced.
    identity: (u64, u64),
    /// Outcome files whose records are appended but not yet synced.
    consumed: Vec<PathBuf>,
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
            consumed: Vec::new(),
        })
    }

    /// Appends one record with a single `write` (so a killed runner leaves whole lines);
    /// returns the byte offset of its line, where [`LedgerReader::read_at`] finds it again.
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&mut self, record: &JobRecord) -> Result<u64> {
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
        let offset = self.len;
        self.len += line.len() as u64;
        self.unsynced = true;
        Ok(offset)
    }

    /// [`Ledger::append`] for a record made from an outcome file, which the next successful
    /// [`Ledger::sync`] deletes (never before its record is durable).
    ///
    /// # Errors
    /// When the write fails.
    pub fn append_staged(&mut self, record: &JobRecord, staged: Option<PathBuf>) -> Result<u64> {
        let offset = self.append(record)?;
        self.consumed.extend(staged);
        Ok(offset)
    }

    /// Outcome files that wait for the next sync to be deleted.
    #[must_use]
    pub fn has_consumed(&self) -> bool {
        !self.consumed.is_empty()
    }

    /// Flushes appended records to stable storage, then deletes the outcome files they were
    /// made from.
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
        for p in self.consumed.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// Appends records to a stage's ledger outside a run (recovering a dead runner's jobs,
/// `cancel`, collecting outcome files), syncs them once, then deletes the outcome files they
/// were made from. Call it holding the workflow lock.
///
/// # Errors
/// When the stage folder or the ledger cannot be written.
pub fn record(
    layout: &Layout,
    stage: &str,
    records: impl IntoIterator<Item = (JobRecord, Option<PathBuf>)>,
) -> Result<usize> {
    let mut ledger: Option<Ledger> = None;
    let mut n = 0;
    for (record, staged) in records {
        if ledger.is_none() {
            let dir = layout.stage_dir(stage);
            std::fs::create_dir_all(&dir).map_err(|e| Error::store("create", dir, e))?;
            ledger = Some(Ledger::open(layout.ledger(stage))?);
        }
        let l = ledger.as_mut().expect("opened above");
        l.append_staged(&record, staged)?;
        n += 1;
    }
    if let Some(mut l) = ledger {
        l.sync()?;
    }
    Ok(n)
}

/// Reads records back by the offsets [`Ledger::append`] returned and [`JobState::offset`]
/// holds. Reading in ascending offsets (job order, for a ledger written in job order) stays
/// within the read buffer.
#[derive(Debug)]
pub struct LedgerReader {
    reader: Option<BufReader<File>>,
    path: PathBuf,
    /// Offset of the reader's position.
    pos: u64,
    line: Vec<u8>,
}

impl LedgerReader {
    /// A reader of a stage's ledger (one that does not exist yet reads nothing).
    ///
    /// # Errors
    /// When it exists but cannot be opened.
    pub fn open(path: PathBuf) -> Result<Self> {
        let reader = match File::open(&path) {
            Ok(f) => Some(BufReader::with_capacity(1 << 16, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::store("read", &path, e)),
        };
        Ok(Self {
            reader,
            path,
            pos: 0,
            line: Vec::new(),
        })
    }

    /// The record whose line starts at `offset`, parsed as `T` (a part of a record, such as
    /// [`RecordResult`], skips the rest).
    ///
    /// # Errors
    /// When the line cannot be read or is not a record.
    pub fn read_at<T: serde::de::DeserializeOwned>(&mut self, offset: u64) -> Result<T> {
        use std::io::{Seek, SeekFrom};
        let path = &self.path;
        let reader = match self.reader.as_mut() {
            Some(r) => r,
            None => {
                let f = File::open(path).map_err(|e| Error::store("read", path, e))?;
                self.pos = 0;
                self.reader.insert(BufReader::with_capacity(1 << 16, f))
            }
        };
        if offset != self.pos {
            let delta = i64::try_from(offset).unwrap_or(i64::MAX)
                - i64::try_from(self.pos).unwrap_or(i64::MAX);
            // Within the buffer when close ahead (or behind); else a real seek.
            reader
                .seek_relative(delta)
                .or_else(|_| reader.seek(SeekFrom::Start(offset)).map(|_| ()))
                .map_err(|e| Error::store("read", path, e))?;
        }
        self.line.clear();
        let n = reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| Error::store("read", path, e))?;
        self.pos = offset + n as u64;
        serde_json::from_slice(&self.line).map_err(|e| {
            Error::store(
                "read",
                path,
                std::io::Error::other(format!("no record at byte {offset}: {e}")),
            )
        })
    }

    /// The result recorded in the line at `offset`.
    ///
    /// # Errors
    /// As [`LedgerReader::read_at`].
    pub fn result_at(&mut self, offset: u64) -> Result<Option<ResultValue>> {
        Ok(self.read_at::<RecordResult>(offset)?.result)
    }
}

/// The result of a ledger line, without the rest of the record.
#[derive(Debug, Deserialize)]
pub struct RecordResult {
    /// The job's result.
    #[serde(default)]
    pub result: Option<ResultValue>,
}

/// What the ledger says of one job, in a small fixed record (no strings, no result): its
/// latest record's outcome kind, exit code, attempt, times and fingerprint, the highest
/// attempt of any of its records, and where its latest record is, to read the result from
/// when it is needed. A stage of a million jobs keeps a million of these.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobState {
    /// Byte offset of the latest record's line in the ledger.
    pub offset: u64,
    /// The job's index in that record.
    pub index: usize,
    /// Start and end of the latest attempt (NaN when not recorded).
    pub start: f64,
    /// See `start`.
    pub end: f64,
    /// The latest record's outcome.
    pub kind: OutcomeKind,
    /// Its exit code ([`crate::outcome::Outcome::exit_code`]).
    pub exit_code: Option<i32>,
    /// The latest record's attempt.
    pub attempt: u32,
    /// The highest attempt of any record of the job (new attempts are numbered above it).
    pub max_attempt: u32,
    /// The latest record's fingerprint, when it has one of the current form.
    fp: Option<[u8; 16]>,
}

impl JobState {
    /// Whether the latest record succeeded.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.kind == OutcomeKind::Succeeded
    }

    /// Whether the latest record was made with fingerprint `fp`.
    #[must_use]
    pub fn fp_is(&self, fp: &str) -> bool {
        self.fp.is_some_and(|f| f == fp.as_bytes())
    }

    /// The start and end, when both are recorded.
    #[must_use]
    pub fn span(&self) -> Option<(f64, f64)> {
        (!self.start.is_nan() && !self.end.is_nan()).then_some((self.start, self.end))
    }
}

/// The latest state of every job of a ledger, by job id ([`JobState`]): the states in one
/// vector, the ids one after the other in one string, and a table of one 4-byte index per
/// job to find them by id (compared by the ids themselves, so a hash collision never mixes
/// two jobs up). No allocation per job: a million jobs take about 90 bytes each.
#[derive(Default)]
pub struct JobStates {
    states: Vec<JobState>,
    /// Every id, one after the other.
    ids: String,
    /// Where each id ends in `ids`.
    ends: Vec<usize>,
    table: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for JobStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Id `i` of ids stored one after the other in `ids`, each ending at its `ends` entry.
fn id_at<'a>(ids: &'a str, ends: &[usize], i: usize) -> &'a str {
    let start = i.checked_sub(1).map_or(0, |p| ends[p]);
    &ids[start..ends[i]]
}

impl JobStates {
    fn id(&self, i: usize) -> &str {
        id_at(&self.ids, &self.ends, i)
    }

    fn find(&self, id: &str) -> Option<usize> {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, id);
        self.table
            .find(hash, |&i| self.id(i as usize) == id)
            .map(|&i| i as usize)
    }

    /// The latest state of job `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&JobState> {
        self.find(id).map(|i| &self.states[i])
    }

    /// The latest state of job `id`, looked for first in slot `hint` (a job's index: a ledger
    /// written in job order has each job's first record there), then by id. The same answer as
    /// [`JobStates::get`] (an id has one slot), without a random probe for each job.
    #[must_use]
    pub fn get_at(&self, hint: usize, id: &str) -> Option<&JobState> {
        if hint < self.states.len() && self.id(hint) == id {
            return Some(&self.states[hint]);
        }
        self.get(id)
    }

    /// Whether no job has a record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Every job's id and latest state, in the order of their first records.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &JobState)> {
        self.states.iter().enumerate().map(|(i, s)| (self.id(i), s))
    }

    /// Makes room for `n` more jobs with ids of about `id_len` bytes.
    fn reserve(&mut self, n: usize, id_len: usize) {
        self.states.reserve(n);
        self.ends.reserve(n);
        self.ids.reserve(n.saturating_mul(id_len));
        let (ids, ends, hasher) = (&self.ids, &self.ends, &self.hasher);
        self.table.reserve(n, |&i| {
            std::hash::BuildHasher::hash_one(hasher, id_at(ids, ends, i as usize))
        });
    }

    /// Records `state` as job `id`'s latest (keeping the highest attempt seen).
    fn update(&mut self, id: &str, mut state: JobState) {
        if let Some(i) = self.find(id) {
            let slot = &mut self.states[i];
            state.max_attempt = state.max_attempt.max(slot.max_attempt);
            *slot = state;
            return;
        }
        let slot = u32::try_from(self.states.len()).expect("fewer than 2^32 jobs");
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, id);
        self.ids.push_str(id);
        self.ends.push(self.ids.len());
        self.states.push(state);
        let (ids, ends, hasher) = (&self.ids, &self.ends, &self.hasher);
        self.table.insert_unique(hash, slot, |&i| {
            std::hash::BuildHasher::hash_one(hasher, id_at(ids, ends, i as usize))
        });
    }
}

impl std::ops::Index<&str> for JobStates {
    type Output = JobState;

    fn index(&self, id: &str) -> &JobState {
        self.get(id).expect("a job with a record")
    }
}

/// Reads a ledger one record at a time into the [`JobState`] of each job id: the latest
/// record wins, and the highest attempt is kept too.
///
/// # Errors
/// As [`read_ledger`].
pub fn read_states(path: &Path) -> Result<JobStates> {
    read_states_in_blocks(path, STATE_BLOCK)
}

/// A ledger's states read ahead of when they are needed (a run reads them while it expands
/// the jobs), with what the file was when read: they stand only while the file is unchanged.
pub struct StatesAhead {
    states: JobStates,
    stamp: Option<FileStamp>,
}

/// What identifies a file's content for [`StatesAhead`]: an append changes its length, a
/// replacement its inode, a rewrite its modification time.
#[derive(PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let (dev, ino) = identity(&meta);
        Some(Self {
            dev,
            ino,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl StatesAhead {
    /// Reads a ledger's states now; `None` when it cannot be read or changed while it was
    /// (read again when needed, which reports the error then).
    #[must_use]
    pub fn read(path: &Path) -> Option<Self> {
        let stamp = FileStamp::of(path);
        let states = read_states(path).ok()?;
        (FileStamp::of(path) == stamp).then_some(Self { states, stamp })
    }

    /// The states, if the ledger is still the file they were read from (else `None`).
    #[must_use]
    pub fn current(self, path: &Path) -> Option<JobStates> {
        (FileStamp::of(path) == self.stamp).then_some(self.states)
    }
}

/// Bytes of ledger lines parsed as one block by [`read_states`]' threads.
const STATE_BLOCK: usize = 1 << 18;

/// The records of one block of ledger lines, parsed on a worker thread: their ids one after
/// the other, and each record's state with where its id ends.
#[derive(Default)]
struct StatesBlock {
    ids: String,
    states: Vec<(usize, JobState)>,
    /// The length of the block's first record line and of its id (to size the table).
    first: Option<(usize, usize)>,
}

/// [`read_states`] with blocks of `block` bytes (small in tests, to cut lines anywhere).
fn read_states_in_blocks(path: &Path, block: usize) -> Result<JobStates> {
    let mut states = JobStates::default();
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    for_each_line_par(
        path,
        block,
        |b: &mut StatesBlock, line, offset| {
            let r: StateRecord<'_> = serde_json::from_slice(line)?;
            b.first.get_or_insert((line.len(), r.id.len()));
            b.ids.push_str(&r.id);
            b.states.push((
                b.ids.len(),
                JobState {
                    offset,
                    index: r.index,
                    start: r.start.unwrap_or(f64::NAN),
                    end: r.end.unwrap_or(f64::NAN),
                    kind: OutcomeKind::of(&r.outcome),
                    exit_code: r.outcome.exit_code(),
                    attempt: r.attempt,
                    max_attempt: r.attempt,
                    fp: r.fp.as_bytes().try_into().ok(),
                },
            ));
            Ok(())
        },
        |b| {
            if let (true, Some((line, id))) = (states.is_empty(), b.first.take()) {
                // Sized once, for as many records as lines like the first (no record is
                // shorter than 64 bytes), rather than grown a table at a time.
                let lines = size / (line as u64).max(64);
                states.reserve(usize::try_from(lines).unwrap_or(0), id);
            }
            let mut start = 0;
            for (end, state) in b.states.drain(..) {
                states.update(&b.ids[start..end], state);
                start = end;
            }
            b.ids.clear();
            b.first = None;
        },
    )?;
    Ok(states)
}

/// A ledger record as [`read_states`] reads it: the same fields as a [`JobRecord`], checked
/// the same way, but its strings borrowed from the line where they need no unescaping.
#[derive(Deserialize)]
struct StateRecord<'a> {
    index: usize,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    attempt: u32,
    outcome: Outcome,
    #[serde(default)]
    start: Option<f64>,
    #[serde(default)]
    end: Option<f64>,
    #[expect(dead_code, reason = "checked as a record's, not kept")]
    #[serde(borrow)]
    run: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    fp: std::borrow::Cow<'a, str>,
    #[expect(dead_code, reason = "checked as a record's, not kept")]
    #[serde(default, borrow)]
    result: Option<ResultCheck<'a>>,
}

/// A record's result as [`StateRecord`] checks it: the shape of a [`ResultValue`] (same
/// variants, same fields, the same text accepted), borrowed from the line instead of copied.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(dead_code, reason = "checked as a record's, not kept")]
enum ResultCheck<'a> {
    Json(#[serde(borrow)] &'a RawValue),
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Base64(#[serde(borrow)] std::borrow::Cow<'a, str>),
    File {
        #[serde(borrow)]
        path: std::borrow::Cow<'a, str>,
        bytes: u64,
    },
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Reads a job's result as its stage's `result` setting says: the one place a recorded
/// result is read from disk (the local backend's `stdout` results are captured from the pipe
/// instead).
/// - `file`: `$POOLPARTY_RESULT`. With `consume` (its value goes into a record), the file is
///   removed once read; one larger than `max` is never read: it stays, and the result points
///   to it.
/// - `stdout`: the job's stdout log, never removed (it is the job's log too); a job that
///   printed nothing has the empty text as its result.
/// - `none`: no result.
#[must_use]
pub fn read_result(
    mode: ResultMode,
    result_file: &Path,
    stdout_log: &Path,
    max: u64,
    consume: bool,
) -> Option<ResultValue> {
    match mode {
        ResultMode::None => None,
        ResultMode::File => {
            let value = read_result_bytes(result_file, max)?;
            if consume && !matches!(value, ResultValue::File { .. }) {
                let _ = std::fs::remove_file(result_file);
            }
            Some(value)
        }
        ResultMode::Stdout => {
            read_result_bytes(stdout_log, max).or_else(|| Some(ResultValue::Text(String::new())))
        }
    }
}

/// A result file's value, or a pointer to it when it is larger than `max`.
fn read_result_bytes(path: &Path, max: u64) -> Option<ResultValue> {
    use std::io::Read;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len > max {
        return Some(ResultValue::File {
            path: path.display().to_string(),
            bytes: len,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.read_to_end(&mut buf).ok()?;
    Some(ResultValue::from_bytes(buf))
}

/// The outcome files waiting in a stage's staging folder (one `read_dir`), with their paths.
/// Anything that is not a whole outcome file (a temporary file, a foreign file) is skipped.
#[must_use]
pub fn read_staged(staging_dir: &Path) -> Vec<(PathBuf, StagedOutcome)> {
    read_staged_named(staging_dir, |_| true)
}

/// The outcome files of job `id` waiting in a stage's staging folder (one `read_dir`; only
/// files named for the job are read).
#[must_use]
pub fn read_staged_of(staging_dir: &Path, id: &str) -> Vec<StagedOutcome> {
    let prefix = format!("{id}.");
    read_staged_named(staging_dir, |name| name.starts_with(&prefix))
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.id == id)
        .collect()
}

/// Removes outcome files (of attempts already recorded); one that is gone already is no
/// error, nor is one that cannot be removed (a later collection finds it recorded again).
pub fn remove_staged(paths: impl IntoIterator<Item = PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// The outcome files in a staging folder whose names `keep` accepts.
fn read_staged_named(
    staging_dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, StagedOutcome)> {
    let Ok(dir) = std::fs::read_dir(staging_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") || !keep(name) {
            continue;
        }
        let path = entry.path();
        let Some(staged) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| StagedOutcome::parse(&t))
        else {
            continue;
        };
        out.push((path, staged));
    }
    out
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

fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_record(path, |r| out.push(r))?;
    Ok(out)
}

fn for_each_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T),
) -> Result<()> {
    for_each_record_at(path, |r, _| f(r))
}

/// Calls `f` with each record of a JSON Lines state file and the byte offset of its line.
fn for_each_record_at<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T, u64),
) -> Result<()> {
    for_each_line_at(path, |line, at| {
        serde_json::from_slice::<T>(line).map(|r| f(r, at))
    })
}

/// Calls `parse` with each line of a JSON Lines state file that holds something, and the byte
/// offset of the line; a line it cannot parse is corrupt, unless it is a torn last line.
fn for_each_line_at(
    path: &Path,
    mut parse: impl FnMut(&[u8], u64) -> serde_json::Result<()>,
) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut n = 0;
    let mut offset = 0u64;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::store("read", path, e))?;
        if read == 0 {
            break;
        }
        let at = offset;
        offset += read as u64;
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        let nul = buf.contains(&0);
        if !nul && buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if nul {
            return Err(corrupt(path, n, "NUL bytes instead of a record".to_owned()));
        }
        match parse(&buf, at) {
            Ok(()) => {}
            Err(_) if !complete => {}
            Err(e) => return Err(corrupt(path, n, e.to_string())),
        }
    }
    Ok(())
}

/// [`for_each_line_at`] on several threads, for large files: the file is cut into blocks of
/// whole lines (about `block` bytes), each block is parsed on a worker into an accumulator `B`
/// (`parse` gets each line that holds something and its offset), and `merge` gets the blocks'
/// accumulators in file order and leaves them empty (they and the blocks' buffers are used
/// again, so memory stays that of a few blocks). The same lines are skipped and the same error
/// is returned (the first in file order) as by [`for_each_line_at`]; the accumulators of the
/// blocks before it are merged first.
fn for_each_line_par<B: Default + Send>(
    path: &Path,
    block: usize,
    parse: impl Fn(&mut B, &[u8], u64) -> serde_json::Result<()> + Sync,
    mut merge: impl FnMut(&mut B),
) -> Result<()> {
    /// What a worker makes of a block: its accumulator, its number of lines, the first bad
    /// line (its number within the block, and why), and its buffer back.
    type Parsed<B> = (B, usize, Option<(usize, String)>, Vec<u8>);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let block = block.max(1);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    let parse = &parse;
    let parse_block = move |bytes: Vec<u8>, start: u64, mut acc: B| -> Parsed<B> {
        let (mut at, mut n) = (0, 0);
        while at < bytes.len() {
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |e| at + e + 1);
            let line = &bytes[at..end];
            n += 1;
            let complete = line.last() == Some(&b'\n');
            let nul = line.contains(&0);
            if nul {
                let why = "NUL bytes instead of a record".to_owned();
                return (acc, n, Some((n, why)), bytes);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                match parse(&mut acc, line, start + at as u64) {
                    Ok(()) => {}
                    Err(_) if !complete => {}
                    Err(e) => return (acc, n, Some((n, e.to_string())), bytes),
                }
            }
            at = end;
        }
        (acc, n, None, bytes)
    };
    std::thread::scope(|scope| {
        let mut to = Vec::with_capacity(workers);
        let mut from = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, u64, B)>(1);
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Parsed<B>>(1);
            scope.spawn(move || {
                for (bytes, start, acc) in rx {
                    if done_tx.send(parse_block(bytes, start, acc)).is_err() {
                        break;
                    }
                }
            });
            to.push(tx);
            from.push(done_rx);
        }
        let (mut sent, mut merged, mut lines) = (0usize, 0usize, 0usize);
        // Emptied accumulators and buffers, to be used again.
        let (mut accs, mut bufs): (Vec<B>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        // Merges the next block in file order.
        let mut next = |merged: &mut usize, accs: &mut Vec<B>, bufs: &mut Vec<Vec<u8>>| {
            let (mut acc, n, bad, mut buf) = from[*merged % workers]
                .recv()
                .expect("a ledger worker does not panic");
            *merged += 1;
            merge(&mut acc);
            accs.push(acc);
            buf.clear();
            bufs.push(buf);
            if let Some((k, why)) = bad {
                return Err(corrupt(path, lines + k, why));
            }
            lines += n;
            Ok(())
        };
        let (mut carry, mut offset, mut eof) = (Vec::new(), 0u64, false);
        while !eof {
            let mut buf = bufs.pop().unwrap_or_default();
            buf.append(&mut carry);
            let (kept, want) = (buf.len(), block);
            buf.reserve(want);
            let read = Read::by_ref(&mut file)
                .take(want as u64)
                .read_to_end(&mut buf);
            let read = match read {
                Ok(n) => n,
                Err(e) => {
                    // The lines before it first, as a reader line by line finds them.
                    while merged < sent {
                        next(&mut merged, &mut accs, &mut bufs)?;
                    }
                    return Err(Error::store("read", path, e));
                }
            };
            eof = read < want;
            let cut = if eof {
                buf.len()
            } else {
                match buf[kept..].iter().rposition(|&b| b == b'\n') {
                    Some(p) => kept + p + 1,
                    // One line longer than a block: read on.
                    None => {
                        carry = buf;
                        continue;
                    }
                }
            };
            carry.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            if buf.is_empty() {
                continue;
            }
            let start = offset;
            offset += buf.len() as u64;
            if sent - merged == 2 * workers {
                next(&mut merged, &mut accs, &mut bufs)?;
            }
            let acc = accs.pop().unwrap_or_default();
            to[sent % workers]
                .send((buf, start, acc))
                .expect("a ledger worker does not panic");
            sent += 1;
        }
        while merged < sent {
            next(&mut merged, &mut accs, &mut bufs)?;
        }
        Ok(())
    })
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
    // Streamed (never the whole file in memory), and left as it is when unchanged.
    let io = |e| Error::store("write", path, e);
    let mut line = Vec::with_capacity(256);
    write_if_changed_with(path, |w| {
        for j in jobs {
            line.clear();
            line.extend_from_slice(b"{\"index\":");
            line.extend_from_slice(j.index.to_string().as_bytes());
            line.extend_from_slice(b",\"id\":");
            serde_json::to_writer(&mut line, j.id).expect("string");
            line.extend_from_slice(b",\"job\":");
            line.extend_from_slice(j.json.as_bytes());
            line.extend_from_slice(b"}\n");
            w.write_all(&line).map_err(io)?;
        }
        Ok(())
    })
    .map(|_| ())
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

/// Calls `f` with each line of a stage's `jobs.jsonl`, in order, one at a time (nothing of
/// the file is held); `false` when the stage was never expanded.
///
/// # Errors
/// On I/O failure, a corrupt line, or an error from `f`.
pub fn for_each_job(path: &Path, mut f: impl FnMut(JobLine) -> Result<()>) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::store("read", path, e)),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| Error::store("read", path, e))?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let job: JobLine =
            serde_json::from_str(&line).map_err(|e| corrupt(path, n, e.to_string()))?;
        f(job)?;
    }
    Ok(true)
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

/// One submitted array: a line of `submissions.jsonl`, appended by the runner (through the
/// cluster backend's recorder) and by a bundle's `submit.sh` (`pp_record`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submission {
    /// The scheduler's job id.
    pub job_id: String,
    /// The script.
    pub script: PathBuf,
    /// The run that submitted it.
    pub run: String,
    /// The scheduler's name ([`crate::manifest::BackendKind::as_str`]: `slurm`, `sge`, `pbs`
    /// or `lsf`); empty in records written before it was added. Kept as text, so a name this
    /// version does not know fails only the `cancel` that needs it, not every read.
    #[serde(default)]
    pub scheduler: String,
    /// For each array task (index `first_index + position`): the jobs it runs.
    pub tasks: Vec<Vec<SubmittedJob>>,
    /// When it was submitted (Unix seconds): the start of its tasks' queue wait. Absent in
    /// records written before it was added and by bundles' `submit.sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<f64>,
}

/// One job of a submitted array task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmittedJob {
    /// Job index.
    pub index: usize,
    /// Job id.
    pub id: String,
    /// Attempt (unique per job across runs).
    pub attempt: u32,
    /// The job's fingerprint when submitted: an outcome counts as up to date only for it.
    #[serde(default)]
    pub fp: String,
}

/// One line of `bundled.jsonl`, `{"script","tasks"}`: a local script that a bundle's
/// `submit.sh` ran (`pp_record_local`), with the jobs of each of its tasks, as [`Submission`]
/// lists them (only the tasks are read).
#[derive(Clone, Debug, Deserialize)]
pub struct Bundled {
    /// For each task: the jobs it runs.
    pub tasks: Vec<Vec<SubmittedJob>>,
}

/// One line of `drivers.jsonl`: a driver job a bundle's `submit.sh` submitted
/// (`pp_record_driver`: `job_id`, `script`, `scheduler`), or one that ended (`job_id`,
/// `done`: written by the driver itself when its run ends, and by `poolparty cancel`, with
/// `cancelled`, through [`close_drivers`]). Fields are in alphabetical order, the order
/// `cancel` has always written them in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DriverLine {
    /// Cancelled by `poolparty cancel`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// Ended (or cancelled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// The scheduler's job id (empty when the submission printed none).
    #[serde(default)]
    pub job_id: String,
    /// The driver's script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The scheduler's name, as in [`Submission::scheduler`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// The driver jobs of a stage that were submitted and have not ended (or been cancelled):
/// (scheduler, job id), in submission order.
///
/// # Errors
/// When `drivers.jsonl` cannot be read.
pub fn open_drivers(layout: &Layout, stage: &str) -> Result<Vec<(String, String)>> {
    let lines: Vec<DriverLine> = read_lines(&layout.drivers(stage))?;
    let done: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l.done)
        .map(|l| l.job_id.as_str())
        .collect();
    let mut open: Vec<(String, String)> = Vec::new();
    for l in &lines {
        let Some(sched) = &l.scheduler else {
            continue;
        };
        let id = l.job_id.as_str();
        if !id.is_empty() && !done.contains(id) && !open.iter().any(|(_, o)| o == id) {
            open.push((sched.clone(), id.to_owned()));
        }
    }
    Ok(open)
}

/// Marks driver jobs as done (after `poolparty cancel` cancelled them).
///
/// # Errors
/// On I/O failure.
pub fn close_drivers(layout: &Layout, stage: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            let line = DriverLine {
                cancelled: true,
                done: true,
                job_id: id.clone(),
                ..DriverLine::default()
            };
            serde_json::to_string(&line).expect("a driver line serializes")
        })
        .collect();
    append_lines(&layout.drivers(stage), &lines)
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

/// Removes `.live.jsonl` (a runner that ended, or a dead run's record once recovered).
///
/// # Errors
/// When it cannot be removed (or is not there).
pub fn remove_live(layout: &Layout) -> Result<()> {
    let path = layout.live_file();
    std::fs::remove_file(&path).map_err(|e| Error::store("remove", &path, e))
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

    #[test]
    fn drivers_are_open_until_done_and_cancel_writes_its_line_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("w"));
        layout.create_stage_dirs("s").unwrap();
        // As `submit.sh` and the drivers write them.
        std::fs::write(
            layout.drivers("s"),
            concat!(
                "{\"job_id\":\"5\",\"script\":\"/b/s/driver.sh\",\"scheduler\":\"slurm\"}\n",
                "{\"job_id\":\"6\",\"script\":\"/b/t/driver.sh\",\"scheduler\":\"sge\"}\n",
                "{\"job_id\":\"\",\"script\":\"/b/u/driver.sh\",\"scheduler\":\"sge\"}\n",
                "{\"job_id\":\"5\",\"done\":true}\n",
            ),
        )
        .unwrap();
        assert_eq!(
            open_drivers(&layout, "s").unwrap(),
            [("sge".to_owned(), "6".to_owned())]
        );
        close_drivers(&layout, "s", &["6".to_owned()]).unwrap();
        let text = std::fs::read_to_string(layout.drivers("s")).unwrap();
        assert_eq!(
            text.lines().last(),
            Some("{\"cancelled\":true,\"done\":true,\"job_id\":\"6\"}")
        );
        assert!(open_drivers(&layout, "s").unwrap().is_empty());
    }

    #[test]
    fn write_if_changed_writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let write = |chunks: &[&str]| {
            write_if_changed_with(&path, |w| {
                for c in chunks {
                    w.write_all(c.as_bytes()).unwrap();
                }
                Ok(())
            })
            .unwrap()
        };
        // No file yet: written.
        assert!(write(&["ab", "cd\n", "ef\n"]));
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&path);
        // The same bytes, cut differently: left as it is (same inode, no rename).
        assert!(!write(&["a", "bcd\ne", "f\n"]));
        assert_eq!(inode(&path), before);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcd\nef\n");
        // A difference in the middle, a shorter and a longer content: each written whole.
        for (chunks, want) in [
            (&["ab", "Xd\n", "ef\n"][..], "abXd\nef\n"),
            (&["ab", "Xd\n"][..], "abXd\n"),
            (&["ab", "Xd\n", "more\n"][..], "abXd\nmore\n"),
        ] {
            assert!(write(chunks));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
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
        let last = read_states(&path).unwrap();
        assert_eq!(last["a"].attempt, 2);
        assert!(last["a"].succeeded());
        // The latest record is found again by its offset.
        let mut reader = LedgerReader::open(path.clone()).unwrap();
        let r: JobRecord = reader.read_at(last["a"].offset).unwrap();
        assert_eq!((r.id.as_str(), r.attempt), ("a", 2));
    }

    #[test]
    fn lines_read_in_blocks_on_threads_are_the_lines_read_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let files: [&[u8]; 8] = [
            b"{\"a\":1}\n\n  \n{\"b\":[1,2]}\r\n{\"c\":\"x\"}\n",
            b"{\"a\":1}\n{\"b\":2}",
            b"{\"a\":1}\n{\"b\":",
            b"{\"a\":1}\n{bad}\n{\"c\":3}\n",
            b"{\"a\":1}\n{\"b\":\0}\n{\"c\":3}\n",
            b"\n\n{\"a\":1}\n{\"b\":2}\n{bad\n",
            b"",
            b"{\"a\":\"a long line, longer than a block of a few bytes\"}\n{\"b\":2}\n",
        ];
        let seen =
            |r: Result<()>, lines: Vec<(String, u64)>| (r.map_err(|e| format!("{e:?}")), lines);
        for bytes in files {
            std::fs::write(&path, bytes).unwrap();
            let mut one = Vec::new();
            let expected = for_each_line_at(&path, |line, at| {
                serde_json::from_slice::<serde_json::Value>(line)?;
                one.push((String::from_utf8_lossy(line).into_owned(), at));
                Ok(())
            });
            let expected = seen(expected, one);
            for block in [1, 2, 3, 7, 16, 1 << 20] {
                let mut all = Vec::new();
                let got = for_each_line_par(
                    &path,
                    block,
                    |acc: &mut Vec<(String, u64)>, line, at| {
                        serde_json::from_slice::<serde_json::Value>(line)?;
                        acc.push((String::from_utf8_lossy(line).into_owned(), at));
                        Ok(())
                    },
                    |acc| all.append(acc),
                );
                assert_eq!(seen(got, all), expected, "block {block}: {bytes:?}");
            }
        }
        // The same states, whatever the blocks.
        std::fs::remove_file(&path).unwrap();
        let mut l = Ledger::open(path.clone()).unwrap();
        for (id, attempt, o) in [
            ("a", 1, Outcome::Failed { code: 1 }),
            ("b", 1, Outcome::Succeeded),
            ("a", 2, Outcome::Succeeded),
        ] {
            l.append(&rec(id, attempt, o)).unwrap();
        }
        l.sync().unwrap();
        let whole = format!("{:?}", read_states(&path).unwrap());
        for block in [1, 5, 100] {
            let states = read_states_in_blocks(&path, block).unwrap();
            assert_eq!(format!("{states:?}"), whole);
            assert_eq!((states["a"].attempt, states["a"].max_attempt), (2, 2));
        }
    }

    #[test]
    fn states_read_ahead_stand_only_while_the_ledger_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        // No ledger yet: nothing recorded, and still nothing when the stage starts.
        let none = StatesAhead::read(&path).unwrap();
        assert!(none.current(&path).unwrap().is_empty());
        let mut l = Ledger::open(path.clone()).unwrap();
        l.append(&rec("a", 1, Outcome::Succeeded)).unwrap();
        l.sync().unwrap();
        let ahead = StatesAhead::read(&path).unwrap();
        assert_eq!(ahead.current(&path).unwrap()["a"].attempt, 1);
        let ahead = StatesAhead::read(&path).unwrap();
        l.append(&rec("a", 2, Outcome::Succeeded)).unwrap();
        l.sync().unwrap();
        assert!(
            ahead.current(&path).is_none(),
            "an appended ledger is read again"
        );
        std::fs::write(&path, "this is not json\n").unwrap();
        assert!(
            StatesAhead::read(&path).is_none(),
            "errors are left for the stage"
        );
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
    fn results_are_read_as_the_stage_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("result");
        let log = dir.path().join("a.out");
        std::fs::write(&file, "[1, 2]").unwrap();
        std::fs::write(&log, "text\n").unwrap();
        // `none` reads nothing; peeking keeps the file; consuming removes it.
        assert!(read_result(ResultMode::None, &file, &log, 100, true).is_none());
        let peek = read_result(ResultMode::File, &file, &log, 100, false).unwrap();
        assert_eq!(peek.to_json(), "[1, 2]");
        assert!(file.exists());
        read_result(ResultMode::File, &file, &log, 100, true).unwrap();
        assert!(!file.exists());
        // A result larger than the limit stays where it is and is pointed to.
        std::fs::write(&file, "x".repeat(200)).unwrap();
        let large = read_result(ResultMode::File, &file, &log, 100, true).unwrap();
        assert!(matches!(large, ResultValue::File { bytes: 200, .. }));
        assert!(file.exists());
        // `stdout` reads the log and never removes it; no log is the empty text.
        let out = read_result(ResultMode::Stdout, &file, &log, 100, true).unwrap();
        assert_eq!(out.to_json(), "\"text\\n\"");
        assert!(log.exists());
        let none = dir.path().join("b.out");
        let empty = read_result(ResultMode::Stdout, &file, &none, 100, true).unwrap();
        assert_eq!(empty.to_json(), "\"\"");
    }

    #[test]
    fn outcome_files_go_only_with_the_sync_of_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let staged = dir.path().join("a.1.json");
        std::fs::write(&staged, "{}").unwrap();
        let mut l = Ledger::open(path.clone()).unwrap();
        let first = l.append(&rec("x", 1, Outcome::Failed { code: 1 })).unwrap();
        let second = l
            .append_staged(&rec("a", 1, Outcome::Succeeded), Some(staged.clone()))
            .unwrap();
        assert_eq!(first, 0);
        assert!(second > first);
        assert!(staged.exists() && l.has_consumed());
        l.sync().unwrap();
        assert!(!staged.exists() && !l.has_consumed());
        let mut reader = LedgerReader::open(path).unwrap();
        let r: JobRecord = reader.read_at(second).unwrap();
        assert_eq!(r.id, "a");
        let r: JobRecord = reader.read_at(first).unwrap();
        assert_eq!(r.id, "x");
    }

    #[test]
    fn time_format() {
        assert_eq!(format_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000.0), "2026-11-18 11:06:40 UTC");
    }
}
