//! Outcomes: what happened to each job ([`Outcome`], [`JobRecord`]), its result
//! ([`ResultValue`]), per-stage counts ([`Stats`]) and the run's [`Verdict`], from which the
//! exit code is derived in exactly one function ([`Verdict::exit_code`]).
//!
//! Pure data: serializable, no I/O. Everything downstream (store, summary, results) reads these.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{EXIT_INTERRUPTED, EXIT_JOBS_FAILED, EXIT_SUCCESS};

/// How one attempt of a job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0.
    Succeeded,
    /// A non-zero exit code.
    Failed {
        /// The exit code.
        code: i32,
    },
    /// Killed by a signal it did not expect.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The command could not be started.
    ExecFailed {
        /// Why.
        error: String,
    },
    /// It ran past its `time` limit and was stopped.
    TimedOut,
    /// It vanished (from the scheduler's queue) without an outcome.
    Lost,
    /// poolparty was interrupted while it ran; it was stopped.
    Interrupted,
    /// It never started.
    NotRun {
        /// Why.
        reason: String,
    },
    /// It ran (`ran` says how it ended) but poolparty could not store its output or result
    /// (a full disk); the run stops.
    OutputLost {
        /// How the job itself ended, as [`Outcome::describe`] puts it.
        ran: String,
        /// The storage error.
        error: String,
    },
}

impl Outcome {
    /// Whether this is a success.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded)
    }

    /// Whether a retry may help (it ran and failed).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Failed { .. } | Self::Signaled { .. } | Self::TimedOut | Self::Lost
        )
    }

    /// The exit code shown for it: the job's own code, 128+N for a signal.
    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Succeeded => Some(0),
            Self::Failed { code } => Some(*code),
            Self::Signaled { signal } => Some(128 + signal),
            _ => None,
        }
    }

    /// A short human description.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Succeeded => "succeeded".to_owned(),
            Self::Failed { code } => format!("exit code {code}"),
            Self::Signaled { signal } => format!("killed by signal {signal}"),
            Self::ExecFailed { error } => format!("could not start: {error}"),
            Self::TimedOut => "timed out".to_owned(),
            Self::Lost => "lost (vanished without an outcome)".to_owned(),
            Self::Interrupted => "interrupted".to_owned(),
            Self::NotRun { reason } => format!("not run: {reason}"),
            Self::OutputLost { ran, error } => {
                format!("{ran}, but its output could not be stored: {error}")
            }
        }
    }
}

/// The kind of an [`Outcome`] without its details: one byte, for per-job state that must
/// stay small ([`crate::store::JobState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// [`Outcome::Succeeded`].
    Succeeded,
    /// [`Outcome::Failed`].
    Failed,
    /// [`Outcome::Signaled`].
    Signaled,
    /// [`Outcome::ExecFailed`].
    ExecFailed,
    /// [`Outcome::TimedOut`].
    TimedOut,
    /// [`Outcome::Lost`].
    Lost,
    /// [`Outcome::Interrupted`].
    Interrupted,
    /// [`Outcome::NotRun`].
    NotRun,
    /// [`Outcome::OutputLost`].
    OutputLost,
}

impl OutcomeKind {
    /// The kind of an outcome.
    #[must_use]
    pub fn of(o: &Outcome) -> Self {
        match o {
            Outcome::Succeeded => Self::Succeeded,
            Outcome::Failed { .. } => Self::Failed,
            Outcome::Signaled { .. } => Self::Signaled,
            Outcome::ExecFailed { .. } => Self::ExecFailed,
            Outcome::TimedOut => Self::TimedOut,
            Outcome::Lost => Self::Lost,
            Outcome::Interrupted => Self::Interrupted,
            Outcome::NotRun { .. } => Self::NotRun,
            Outcome::OutputLost { .. } => Self::OutputLost,
        }
    }

    /// The `kind` the ledger writes for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Signaled => "signaled",
            Self::ExecFailed => "exec_failed",
            Self::TimedOut => "timed_out",
            Self::Lost => "lost",
            Self::Interrupted => "interrupted",
            Self::NotRun => "not_run",
            Self::OutputLost => "output_lost",
        }
    }
}

/// A job's result, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultValue {
    /// Text that is JSON, kept exactly as written (numbers are not re-formatted).
    Json(Box<RawValue>),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Bytes that are not UTF-8, base64-encoded (standard alphabet, padded).
    Base64(String),
    /// Too large to inline: a file in the state folder.
    File {
        /// Its absolute path.
        path: String,
        /// Its size.
        bytes: u64,
    },
}

impl PartialEq for ResultValue {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl ResultValue {
    /// Classifies result bytes: JSON (whitespace around it ignored), else text, else base64.
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => {
                let trimmed = text.trim();
                if !trimmed.is_empty() {
                    if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(trimmed) {
                        return Self::Json(raw);
                    }
                }
                Self::Text(text)
            }
            Err(e) => {
                use base64::Engine;
                Self::Base64(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
            }
        }
    }

    /// The JSON text `poolparty results` prints for it: JSON as written, text as a JSON
    /// string, bytes as `{"$base64": ".."}`, a large file as `{"$file": "..", "bytes": N}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        match self {
            Self::Json(raw) => raw.get().to_owned(),
            Self::Text(t) => serde_json::to_string(t).expect("a string serializes"),
            Self::Base64(b) => format!("{{\"$base64\":\"{b}\"}}"),
            Self::File { path, bytes } => format!(
                "{{\"$file\":{},\"bytes\":{bytes}}}",
                serde_json::to_string(path).expect("a string serializes")
            ),
        }
    }
}

/// The durable record of one attempt of one job: one line of a stage's ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's index in its stage.
    pub index: usize,
    /// The job's id.
    pub id: String,
    /// 1 for the first run, 2 for the first retry, ...
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Start, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// End, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    /// The run that recorded it.
    pub run: String,
    /// The job's fingerprint (value, command, settings) when it ran.
    pub fp: String,
    /// Its result, if it produced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultValue>,
}

impl JobRecord {
    /// Wall time in seconds, when both ends are known.
    #[must_use]
    pub fn duration(&self) -> Option<f64> {
        Some(self.end? - self.start?)
    }
}

/// An outcome file written by the cluster job wrapper (`templates/wrapper.sh`) into a stage's
/// staging folder as `<id>.<attempt>.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StagedOutcome {
    /// Job index.
    pub index: usize,
    /// Job id.
    pub id: String,
    /// Attempt.
    pub attempt: u32,
    /// The job's exit status as the shell saw it (128+N after signal N).
    pub rc: i32,
    /// Start, Unix seconds.
    pub start: f64,
    /// End, Unix seconds.
    pub end: f64,
}

impl StagedOutcome {
    /// Parses an outcome file; `None` for anything else (a partial or foreign file).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Whether the job succeeded: the one place an outcome file's exit status becomes an
    /// outcome (0 succeeded; anything else failed with that code).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.rc == 0
    }

    /// The record of this attempt.
    #[must_use]
    pub fn record(&self, run: String, fp: String, result: Option<ResultValue>) -> JobRecord {
        JobRecord {
            index: self.index,
            id: self.id.clone(),
            attempt: self.attempt,
            outcome: if self.succeeded() {
                Outcome::Succeeded
            } else {
                Outcome::Failed { code: self.rc }
            },
            start: Some(self.start),
            end: Some(self.end),
            run,
            fp,
            result,
        }
    }
}

/// Counts of a stage's final outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Jobs in the stage.
    pub total: usize,
    /// Succeeded.
    pub succeeded: usize,
    /// Failed, were killed, timed out, or were lost.
    pub failed: usize,
    /// Stopped because poolparty was interrupted.
    pub interrupted: usize,
    /// Never started (or have no outcome yet).
    pub not_run: usize,
}

impl Stats {
    /// Counts one final outcome.
    pub fn add(&mut self, outcome: Option<&Outcome>) {
        self.add_kind(outcome.map(OutcomeKind::of));
    }

    /// Counts one final outcome, by its kind.
    pub fn add_kind(&mut self, kind: Option<OutcomeKind>) {
        self.total += 1;
        match kind {
            Some(OutcomeKind::Succeeded) => self.succeeded += 1,
            Some(OutcomeKind::Interrupted) => self.interrupted += 1,
            Some(OutcomeKind::NotRun) | None => self.not_run += 1,
            Some(
                OutcomeKind::Failed
                | OutcomeKind::Signaled
                | OutcomeKind::ExecFailed
                | OutcomeKind::OutputLost
                | OutcomeKind::TimedOut
                | OutcomeKind::Lost,
            ) => self.failed += 1,
        }
    }

    /// Whether every job succeeded.
    #[must_use]
    pub fn all_succeeded(&self) -> bool {
        self.succeeded == self.total
    }
}

/// The run's overall result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every job of every selected stage succeeded.
    Succeeded,
    /// Some job failed, was lost, or was not run.
    JobsFailed,
    /// poolparty was interrupted.
    Interrupted,
}

impl Verdict {
    /// The verdict over all stages' stats.
    #[must_use]
    pub fn of(stats: &[Stats], interrupted: bool) -> Self {
        if interrupted || stats.iter().any(|s| s.interrupted > 0) {
            Self::Interrupted
        } else if stats.iter().all(Stats::all_succeeded) {
            Self::Succeeded
        } else {
            Self::JobsFailed
        }
    }

    /// The process exit code: the only place it is derived.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Succeeded => EXIT_SUCCESS,
            Self::JobsFailed => EXIT_JOBS_FAILED,
            Self::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_exact_text() {
        for (input, expect) in [
            ("0.1\n", "0.1"),
            ("12345678901234567890", "12345678901234567890"),
            ("1e400", "1e400"),
            (" {\"a\": [1, 2.50]} ", "{\"a\": [1, 2.50]}"),
            ("hello\n", "\"hello\\n\""),
            ("", "\"\""),
        ] {
            assert_eq!(
                ResultValue::from_bytes(input.as_bytes().to_vec()).to_json(),
                expect,
                "{input:?}"
            );
        }
        let bytes = ResultValue::from_bytes(vec![0xff, 0x00, b'a']);
        assert_eq!(bytes.to_json(), "{\"$base64\":\"/wBh\"}");
    }

    #[test]
    fn record_round_trips() {
        let r = JobRecord {
            index: 3,
            id: "abc".into(),
            attempt: 1,
            outcome: Outcome::Failed { code: 2 },
            start: Some(1.0),
            end: Some(2.5),
            run: "r1".into(),
            fp: "f".into(),
            result: Some(ResultValue::from_bytes(b"0.1".to_vec())),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"index":3,"id":"abc","attempt":1,"outcome":{"kind":"failed","code":2},"start":1.0,"end":2.5,"run":"r1","fp":"f","result":{"json":0.1}}"#
        );
        let back: JobRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn verdicts() {
        let mut ok = Stats::default();
        ok.add(Some(&Outcome::Succeeded));
        let mut bad = Stats::default();
        bad.add(Some(&Outcome::Failed { code: 1 }));
        let mut missing = Stats::default();
        missing.add(None);
        assert_eq!(Verdict::of(&[ok], false).exit_code(), 0);
        assert_eq!(Verdict::of(&[ok, bad], false).exit_code(), 1);
        assert_eq!(Verdict::of(&[ok, missing], false).exit_code(), 1);
        assert_eq!(Verdict::of(&[ok], true).exit_code(), 130);
    }
}
