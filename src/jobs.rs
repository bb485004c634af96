//! Job expansion: a stage's job source (inline `jobs`, `matrix`, `jobs_file`, or a generator's
//! output) becomes an ordered list of [`Job`]s with validated, unique [`JobId`]s.
//!
//! Reads a [`Stage`] (and its `jobs_file`); runs the generator command it is given (already
//! rendered by the caller) in its own process group, with both pipes read through `poll(2)` so
//! neither can fill up and deadlock, within `generate_time`, stopped on a signal. Produces
//! [`Jobs`]; never renders a command and touches no state.

use std::fmt;
use std::path::Path;
use std::process::Command;

use miette::{LabeledSpan, NamedSource, SourceSpan};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, Source};
use crate::manifest::{JobSource, Manifest, Stage, StageName};
use crate::process;
use crate::signals::Signals;

/// A job's identity within its stage: its `id` field, or a hash of its canonical JSON.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Validates an explicit id: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes, so it is
    /// safe as a file name and in a shell word.
    ///
    /// # Errors
    /// A message saying what is allowed.
    pub fn new(id: &str) -> Result<Self, String> {
        Self::check(id).map(|()| Self(id.to_owned()))
    }

    /// [`JobId::new`] without making the id.
    ///
    /// # Errors
    /// As [`JobId::new`].
    pub fn check(id: &str) -> Result<(), String> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id.as_bytes()[0].is_ascii_alphanumeric()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            // An id can be megabytes long; the message quotes its start.
            let mut end = id.len().min(60);
            while !id.is_char_boundary(end) {
                end -= 1;
            }
            let shown = if end < id.len() {
                format!("{:?}… ({} bytes)", &id[..end], id.len())
            } else {
                format!("{id:?}")
            };
            Err(format!(
                "`id` {shown} is not valid: use 1 to 128 letters, digits, `.`, `_`, `-`, starting with a letter or digit"
            ))
        }
    }

    /// The id derived from a job's canonical JSON: 16 hex digits of its SHA-256.
    #[must_use]
    pub fn from_canonical(json: &str) -> Self {
        Self(sha256_hex(json.as_bytes())[..16].to_owned())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One job of a stage.
#[derive(Clone, Debug)]
pub struct Job {
    /// Position in the stage's job order (0-based): the slot of its result.
    pub index: usize,
    /// Its identity.
    pub id: JobId,
    /// Its value when kept; `Null` when only [`Job::json`] is (read it with [`Job::value`]).
    pub value: Value,
    /// Its value as canonical compact JSON (keys sorted, numbers as written).
    pub json: String,
}

impl Job {
    /// The value: kept, or parsed again from the canonical JSON when it was dropped.
    #[must_use]
    pub fn value(&self) -> Value {
        if self.value.is_null() && self.json != "null" {
            parse_value(&self.json).unwrap_or(Value::Null)
        } else {
            self.value.clone()
        }
    }
}

/// One job, borrowed: from its stage's [`Jobs`], or from a [`Job`].
#[derive(Clone, Copy, Debug)]
pub struct JobRef<'a> {
    /// Position in the stage's job order (0-based).
    pub index: usize,
    /// Its identity.
    pub id: &'a str,
    /// Its value as canonical compact JSON.
    pub json: &'a str,
    /// Its parsed value, when one is at hand (a [`Job`] that kept it); else [`JobRef::value`]
    /// parses `json`.
    pub parsed: Option<&'a Value>,
}

impl JobRef<'_> {
    /// The value: the one at hand, or parsed from the canonical JSON.
    #[must_use]
    pub fn value(&self) -> Value {
        match self.parsed {
            Some(v) => v.clone(),
            None => parse_value(self.json).unwrap_or(Value::Null),
        }
    }

    /// Its id, owned.
    #[must_use]
    pub fn job_id(&self) -> JobId {
        JobId(self.id.to_owned())
    }
}

impl<'a> From<&'a Job> for JobRef<'a> {
    fn from(job: &'a Job) -> Self {
        Self {
            index: job.index,
            id: job.id.as_str(),
            json: &job.json,
            parsed: (!job.value.is_null()).then_some(&job.value),
        }
    }
}

/// A stage's jobs, in order. Every job's canonical JSON and every id sit in two shared
/// buffers, with two offsets per job: a stage of a million jobs holds its values' text and
/// about 32 bytes a job, never a parsed value per job (see [`JobRef::value`]). Cloning shares
/// the buffers (an element-wise stage has its upstream stage's jobs).
#[derive(Clone, Default)]
pub struct Jobs(std::sync::Arc<JobsData>);

#[derive(Default)]
struct JobsData {
    /// The canonical JSON of every job, one after the other.
    text: String,
    /// Every job's id, one after the other.
    ids: String,
    /// Where each job's JSON ends in `text` and its id in `ids`.
    ends: Vec<(usize, usize)>,
}

impl JobsData {
    fn job(&self, index: usize) -> Option<JobRef<'_>> {
        let &(json_end, id_end) = self.ends.get(index)?;
        let (json_start, id_start) = match index.checked_sub(1) {
            Some(p) => self.ends[p],
            None => (0, 0),
        };
        Some(JobRef {
            index,
            id: &self.ids[id_start..id_end],
            json: &self.text[json_start..json_end],
            parsed: None,
        })
    }
}

impl Jobs {
    /// How many jobs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.ends.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.ends.is_empty()
    }

    /// Job `index`, if there is one.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<JobRef<'_>> {
        self.0.job(index)
    }

    /// Job `index`.
    ///
    /// # Panics
    /// When there is no such job.
    #[must_use]
    pub fn at(&self, index: usize) -> JobRef<'_> {
        self.0.job(index).expect("a job of the stage")
    }

    /// The id of job `index`.
    ///
    /// # Panics
    /// When there is no such job.
    #[must_use]
    pub fn id(&self, index: usize) -> &str {
        self.at(index).id
    }

    /// The canonical JSON of job `index`.
    ///
    /// # Panics
    /// When there is no such job.
    #[must_use]
    pub fn json(&self, index: usize) -> &str {
        self.at(index).json
    }

    /// The jobs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = JobRef<'_>> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }
}

impl<'a> IntoIterator for &'a Jobs {
    type Item = JobRef<'a>;
    type IntoIter = Box<dyn ExactSizeIterator<Item = JobRef<'a>> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds [`Jobs`] one job at a time, finding duplicate ids as it goes (a table of one
/// 4-byte index per job, compared by the ids themselves, so a hash collision never hides or
/// invents a duplicate).
struct JobsBuilder {
    data: JobsData,
    seen: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl JobsBuilder {
    fn new(count: usize, text: usize) -> Self {
        Self {
            data: JobsData {
                text: String::with_capacity(text),
                ids: String::with_capacity(count * 16),
                ends: Vec::with_capacity(count),
            },
            seen: hashbrown::HashTable::with_capacity(count),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Appends a job, or returns the index of an earlier job with the same id.
    fn push(&mut self, id: &str, json: &str) -> Result<JobRef<'_>, usize> {
        let index = self.data.ends.len();
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, id);
        let (data, hasher) = (&self.data, &self.hasher);
        let slot = u32::try_from(index).expect("fewer than 2^32 jobs");
        match self.seen.entry(
            hash,
            |&i| data.job(i as usize).is_some_and(|j| j.id == id),
            |&i| {
                let j = data.job(i as usize).expect("a job pushed before");
                std::hash::BuildHasher::hash_one(hasher, j.id)
            },
        ) {
            hashbrown::hash_table::Entry::Occupied(first) => return Err(*first.get() as usize),
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
        self.push_unchecked(id, json);
        Ok(self.data.job(index).expect("just pushed"))
    }

    fn push_unchecked(&mut self, id: &str, json: &str) {
        self.data.text.push_str(json);
        self.data.ids.push_str(id);
        self.data
            .ends
            .push((self.data.text.len(), self.data.ids.len()));
    }

    fn finish(self) -> Jobs {
        let mut data = self.data;
        data.ends.shrink_to_fit();
        data.ids.shrink_to_fit();
        Jobs(std::sync::Arc::new(data))
    }
}

/// Parses JSON text into a value whose numbers keep the text they were written with.
///
/// serde_json (even with `arbitrary_precision`) rewrites exponents while parsing: `1E2`
/// becomes `1e+2`, `1e400` becomes `1e+400`. Those are the same numbers, but a job's value
/// must reach its command, its environment and `results` as written, so the text is parsed
/// once by serde_json (which validates it and reports errors with positions) and, only when
/// it has an exponent, walked again to put each number's own text back.
///
/// # Errors
/// serde_json's error for text that is not one JSON value.
pub fn parse_value(text: &str) -> serde_json::Result<Value> {
    let value: Value = serde_json::from_str(text)?;
    // Only a digit right before `e`/`E` can start an exponent (most job values have an `e`
    // in some string, and the second walk would double the parse of every job).
    if !has_exponent(text) {
        return Ok(value);
    }
    let mut exact = Exact {
        text: text.as_bytes(),
        at: 0,
    };
    Ok(exact.value())
}

/// Whether JSON text may hold a number with an exponent: a digit right before `e`/`E` (true
/// for every such number, and for some strings too).
fn has_exponent(text: &str) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_digit() && matches!(w[1], b'e' | b'E'))
}

/// A second pass over JSON text serde_json already accepted (see [`parse_value`]).
struct Exact<'a> {
    text: &'a [u8],
    at: usize,
}

impl Exact<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Value {
        self.skip_space();
        match self.text.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut map = serde_json::Map::new();
                loop {
                    self.skip_space();
                    if self.text.get(self.at) == Some(&b'}') {
                        self.at += 1;
                        break Value::Object(map);
                    }
                    if self.text.get(self.at) == Some(&b',') {
                        self.at += 1;
                        continue;
                    }
                    let key = match self.value() {
                        Value::String(k) => k,
                        _ => unreachable!("serde_json accepted the text: keys are strings"),
                    };
                    self.skip_space();
                    self.at += 1; // the `:`
                    let v = self.value();
                    map.insert(key, v);
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.text.get(self.at) {
                        Some(b']') | None => {
                            self.at += 1;
                            break Value::Array(items);
                        }
                        Some(b',') => self.at += 1,
                        Some(_) => items.push(self.value()),
                    }
                }
            }
            Some(b'"') => {
                let start = self.at;
                self.at += 1;
                while let Some(&b) = self.text.get(self.at) {
                    self.at += if b == b'\\' { 2 } else { 1 };
                    if b == b'"' {
                        break;
                    }
                }
                let raw = std::str::from_utf8(&self.text[start..self.at]).unwrap_or("\"\"");
                serde_json::from_str(raw).map_or(Value::Null, Value::String)
            }
            Some(b't') => {
                self.at += 4;
                Value::Bool(true)
            }
            Some(b'f') => {
                self.at += 5;
                Value::Bool(false)
            }
            Some(b'n') | None => {
                self.at += 4;
                Value::Null
            }
            Some(_) => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.at += 1;
                }
                let written = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                // The only way to build a `Number` from its text without serde_json's
                // rewriting; the text was validated as a JSON number by the first pass.
                Value::Number(serde_json::Number::from_string_unchecked(written))
            }
        }
    }
}

/// serde_json's form of canonical JSON (exponents as `e+N`): what hash ids are computed
/// from, so an id does not depend on how a number's exponent was written and stays what
/// earlier versions computed.
fn id_json(json: &str) -> std::borrow::Cow<'_, str> {
    // As in `parse_value`: only a digit right before `e`/`E` can start an exponent (an `e`
    // in a string alone would parse and write every such job again).
    if has_exponent(json) {
        if let Ok(v) = serde_json::from_str::<Value>(json) {
            return std::borrow::Cow::Owned(
                serde_json::to_string(&v).expect("a JSON value serializes"),
            );
        }
    }
    std::borrow::Cow::Borrowed(json)
}

/// Hex SHA-256 of some bytes.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// Where the jobs came from, for diagnostics: the text and where each job is in it.
struct Origin<'a> {
    src: &'a Source,
    spans: Spans,
}

/// Where each job is in an [`Origin`]'s text.
enum Spans {
    /// Known for each job (the last one stands for any later job).
    Each(Vec<SourceSpan>),
    /// JSON Lines: job `i` is the `i`-th line that is not blank, found when a diagnostic
    /// needs it (a span per job would cost 16 bytes a job for errors that rarely happen).
    Lines,
}

impl Origin<'_> {
    fn span(&self, i: usize) -> Option<SourceSpan> {
        match &self.spans {
            Spans::Each(spans) => spans.get(i).or_else(|| spans.last()).copied(),
            Spans::Lines => {
                let text = self.src.inner().as_str();
                let mut last = None;
                for (n, (start, body)) in json_lines(text).enumerate() {
                    last = Some(SourceSpan::from(start..start + body.len()));
                    if n == i {
                        break;
                    }
                }
                last
            }
        }
    }
}

/// The lines of JSON Lines text that are not blank: each one's offset and text (without its
/// line end), with its 1-based line number.
fn json_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    json_lines_numbered(text).map(|(start, body, _)| (start, body))
}

fn json_lines_numbered(text: &str) -> impl Iterator<Item = (usize, &str, usize)> {
    let mut offset = 0;
    text.split_inclusive('\n')
        .enumerate()
        .filter_map(move |(n, line)| {
            let body = line.trim_end_matches(['\n', '\r']);
            let start = offset;
            offset += line.len();
            (!body.trim().is_empty()).then_some((start, body, n + 1))
        })
}

/// A stage's job source, by when its jobs are known: static ones before anything runs, a
/// generator's when it runs, an element-wise stage's as its upstream jobs end.
#[derive(Clone, Copy, Debug)]
pub enum SourceKind<'a> {
    /// Inline, matrix or file: expanded by [`expand_static_with`].
    Static(StaticSource<'a>),
    /// A generator command (a template).
    Generate(&'a str),
    /// One job per job of this stage.
    ForEach(&'a StageName),
}

/// A job source whose jobs are known without running anything.
#[derive(Clone, Copy, Debug)]
pub enum StaticSource<'a> {
    /// Inline values.
    Inline(&'a [Value]),
    /// The cartesian product of named value lists.
    Matrix(&'a indexmap::IndexMap<String, Vec<Value>>),
    /// A `.json` or `.jsonl` file.
    File(&'a Path),
}

impl<'a> SourceKind<'a> {
    /// A stage's source, split by when its jobs are known.
    #[must_use]
    pub fn of(source: &'a JobSource) -> Self {
        match source {
            JobSource::Inline(values) => Self::Static(StaticSource::Inline(values)),
            JobSource::Matrix(m) => Self::Static(StaticSource::Matrix(m)),
            JobSource::File(path) => Self::Static(StaticSource::File(path)),
            JobSource::Generate(cmd) => Self::Generate(cmd),
            JobSource::ForEach(up) => Self::ForEach(up),
        }
    }
}

/// Expands a stage whose jobs are known without running anything (inline, matrix, file).
/// Returns `None` for generator and element-wise stages.
///
/// # Errors
/// A bad job, duplicate id, or unreadable / unparsable jobs file.
pub fn expand_static(manifest: &Manifest, stage: &Stage) -> Option<Result<Jobs>> {
    match SourceKind::of(&stage.source) {
        SourceKind::Static(source) => {
            Some(expand_static_with(manifest, stage, source, &mut |_, _| {
                Ok(())
            }))
        }
        SourceKind::Generate(_) | SourceKind::ForEach(_) => None,
    }
}

/// Sees each job once, with its parsed value, while the jobs are expanded; the value is
/// dropped afterwards, so the values of a large stage never all exist at once.
pub type Visit<'a> = dyn FnMut(JobRef<'_>, Value) -> Result<()> + 'a;

/// [`expand_static`], calling `visit` with each job and its parsed value as it is read.
///
/// # Errors
/// As [`expand_static`], or the first error `visit` returns.
pub fn expand_static_with(
    manifest: &Manifest,
    stage: &Stage,
    source: StaticSource<'_>,
    visit: &mut Visit<'_>,
) -> Result<Jobs> {
    match source {
        StaticSource::Inline(values) => {
            let spans = if stage.job_spans.len() == values.len() {
                stage.job_spans.clone()
            } else {
                vec![stage.source_span]
            };
            let origin = Origin {
                src: &manifest.src,
                spans: Spans::Each(spans),
            };
            assign_ids(
                stage,
                values.iter().cloned().map(Ok),
                values.len(),
                0,
                &origin,
                visit,
            )
        }
        StaticSource::Matrix(m) => {
            let origin = Origin {
                src: &manifest.src,
                spans: Spans::Each(vec![stage.source_span]),
            };
            let n = m.values().map(Vec::len).product();
            assign_ids(stage, cartesian(m, n).map(Ok), n, 0, &origin, visit)
        }
        StaticSource::File(path) => read_jobs_file(manifest, stage, path, visit),
    }
}

/// The `n` combinations of a matrix, the first key varying slowest, made one at a time so
/// only the canonical JSON of each is ever kept.
fn cartesian(
    m: &indexmap::IndexMap<String, Vec<Value>>,
    n: usize,
) -> impl Iterator<Item = Value> + '_ {
    (0..n).map(move |mut k| {
        let mut digits = vec![0; m.len()];
        for (d, values) in digits.iter_mut().zip(m.values()).rev() {
            *d = k % values.len();
            k /= values.len();
        }
        Value::Object(
            m.iter()
                .zip(digits)
                .map(|((key, values), d)| (key.clone(), values[d].clone()))
                .collect(),
        )
    })
}

fn read_jobs_file(
    manifest: &Manifest,
    stage: &Stage,
    path: &Path,
    visit: &mut Visit<'_>,
) -> Result<Jobs> {
    let mut visit_failed = false;
    let mut guarded = |job: JobRef<'_>, value: Value| {
        let r = visit(job, value);
        visit_failed |= r.is_err();
        r
    };
    match stream_json_lines(stage, path, &mut guarded) {
        Some(Ok(jobs)) => return Ok(jobs),
        Some(Err(e)) if visit_failed => return Err(e),
        // A bad job, or not JSON Lines: the whole-text path below finds the same error and
        // reports it with its span in the file.
        Some(Err(_)) | None => {}
    }
    let text = crate::manifest::read_text(path).map_err(|source| Error::JobsFile {
        stage: stage.name.to_string(),
        path: path.to_path_buf(),
        source,
        src: manifest.src.clone(),
        span: stage.source_span,
    })?;
    let what = format!("jobs file `{}`", path.display());
    let src = NamedSource::new(path.display().to_string(), text);
    parse_jobs_with(stage, &src, &what, visit)
}

/// Reads a JSON Lines jobs file line by line, so neither its text nor a span per job is held
/// (a million-job file is ~100 MB). `None` when the file is not plain JSON Lines (a JSON
/// array, not UTF-8, not a regular file) or a line cannot be read; `Some(Err)` for a bad job,
/// which the caller reports again from the whole text, with spans.
fn stream_json_lines(stage: &Stage, path: &Path, visit: &mut Visit<'_>) -> Option<Result<Jobs>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    // Counting lines first (a fast pass over bytes) sizes the job list once: growing it by
    // doubling would hold both copies at the moment it grows.
    let lines = count_lines(&mut file).ok()?;
    std::io::Seek::rewind(&mut file).ok()?;
    let origin_src = NamedSource::new(String::new(), String::new());
    let origin = Origin {
        src: &origin_src,
        spans: Spans::Each(Vec::new()),
    };
    // Canonical JSON is never longer than the line it came from: the file's size bounds the
    // text kept (pages reserved and never written cost no memory).
    let text = usize::try_from(meta.len()).unwrap_or(0);
    // A second thread reads, parses and canonicalizes the lines (about half the work) while
    // this one checks ids and renders; batches keep the hand-over cheap.
    let (jobs, (unreadable, array)) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Prepared, String>>>(8);
        let reader = scope.spawn(move || read_json_lines(file, &tx));
        let values = rx.into_iter().flatten().map(|p| {
            // Errors are reported again, with spans, from the whole text.
            p.map_err(|message| Error::Usage {
                message,
                help: None,
            })
        });
        let jobs = assign_prepared(stage, values, lines, text, &origin, visit);
        (jobs, reader.join().unwrap_or((true, false)))
    });
    if unreadable || array {
        return None;
    }
    Some(jobs)
}

/// Reads JSON Lines from `file` and sends each job [`Prepared`] in batches, stopping at the
/// first line that is not a job or when the receiver is gone. Returns whether a line could
/// not be read, and whether the text is a JSON array rather than JSON Lines.
fn read_json_lines(
    file: std::fs::File,
    tx: &std::sync::mpsc::SyncSender<Vec<Result<Prepared, String>>>,
) -> (bool, bool) {
    use std::io::BufRead;
    const BATCH: usize = 256;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = String::new();
    let mut first = true;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return (true, false),
        }
        let mut body = line.trim_end_matches(['\n', '\r']);
        if first {
            body = body.strip_prefix('\u{feff}').unwrap_or(body);
        }
        if body.trim().is_empty() {
            continue;
        }
        if first && body.trim_start().starts_with('[') {
            return (false, true);
        }
        first = false;
        let job = parse_value(body)
            .map(Prepared::new)
            .map_err(|e| e.to_string());
        let bad = job.is_err();
        batch.push(job);
        if bad || batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).is_err() || bad {
                return (false, false);
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    (false, false)
}

/// The number of lines of a file (a last line without a newline counts).
fn count_lines(file: &mut std::fs::File) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0, b'\n');
    loop {
        let n = std::io::Read::read(file, &mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        last = buf[n - 1];
    }
    Ok(lines + usize::from(last != b'\n'))
}

/// Runs a generator command (already rendered) in `cwd` and parses its stdout, calling
/// `visit` with each job and its parsed value as it is read. The generator runs in its own
/// process group, within the stage's `generate_time`, and is stopped when poolparty receives
/// SIGINT/SIGTERM (see [`crate::process::run_captured`]).
///
/// # Errors
/// `GeneratorFailed` with the tail of its stderr (also when it ran out of time);
/// `Interrupted` after a signal; parse errors pointing at the output line; the first error
/// `visit` returns.
pub fn run_generator_with(
    manifest: &Manifest,
    stage: &Stage,
    command: &str,
    env: &[(String, String)],
    signals: &Signals,
    visit: &mut Visit<'_>,
) -> Result<Jobs> {
    let failed = |status: String, stderr: Option<String>| Error::GeneratorFailed {
        stage: stage.name.to_string(),
        status,
        src: manifest.src.clone(),
        span: stage.source_span,
        stderr,
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&manifest.dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let limit = stage.settings.generate_time;
    let ran = process::run_captured(&mut cmd, Some(limit), signals)
        .map_err(|e| failed(format!("could not run `/bin/sh`: {e}"), None))?;
    // Shown in a diagnostic on the terminal: escape sequences as `^[`, line by line.
    let tail = stderr_tail(&ran.stderr, 20).map(|t| {
        t.lines()
            .map(crate::report::text::clean)
            .collect::<Vec<_>>()
            .join("\n")
    });
    match ran.stopped {
        Some(process::Stop::Interrupted) => {
            return Err(Error::Interrupted {
                signal: signals.last().unwrap_or(2),
                during: format!(
                    "while the job generator of stage `{}` ran; it was stopped",
                    stage.name
                ),
            });
        }
        Some(process::Stop::TimedOut) => {
            let mut help = format!(
                "a generator may run for `generate_time` = {} (default 10m): make it faster or \
                 raise `generate_time` in the stage or in `[defaults]`",
                human(limit)
            );
            if let Some(t) = tail {
                help.push_str("\nits stderr ended with:\n");
                help.push_str(&t);
            }
            return Err(failed(
                format!("it was stopped after running for {}", human(limit)),
                Some(help),
            ));
        }
        None => {}
    }
    if !ran.status.success() {
        return Err(failed(
            describe_status(ran.status),
            tail.map(|t| format!("its stderr ended with:\n{t}")),
        ));
    }
    let text = String::from_utf8(ran.stdout).map_err(|e| {
        failed(
            format!(
                "its output is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
            None,
        )
    })?;
    let src = NamedSource::new(format!("output of `{command}`"), text);
    parse_jobs_with(stage, &src, "the generator's output", visit)
}

/// A duration as the manifest writes it: `10m`, `90s`, `2h`.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The last `n` lines of some bytes, lossily decoded; `None` when empty.
#[must_use]
pub fn stderr_tail(bytes: &[u8], n: usize) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return None;
    }
    Some(lines[lines.len().saturating_sub(n)..].join("\n"))
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// [`parse_jobs_with`] without a visitor.
#[cfg(test)]
fn parse_jobs(stage: &Stage, src: &Source, what: &str) -> Result<Jobs> {
    parse_jobs_with(stage, src, what, &mut |_, _| Ok(()))
}

/// Parses jobs from JSON (one array) or JSON Lines, keeping each job's span; calls `visit`
/// with each job and its value.
fn parse_jobs_with(stage: &Stage, src: &Source, what: &str, visit: &mut Visit<'_>) -> Result<Jobs> {
    let text = src.inner().as_str();
    let trimmed = text.trim_start();
    let parse_err = |message: String, at: usize, len: usize| Error::JobsParse {
        stage: stage.name.to_string(),
        what: what.to_owned(),
        message,
        src: src.clone(),
        span: SourceSpan::from(at..(at + len).min(text.len()).max(at)),
    };
    // Each job's text and span, parsed one at a time by `assign_ids` so the parsed values of
    // a large stage never all exist at once.
    let bad_job = |body: &str, line: Option<usize>, span: SourceSpan, e: &serde_json::Error| {
        // serde_json counts lines within `body`; report the line of the whole text.
        let message = match line {
            Some(n) => format!("{} at line {n} column {}", json_message(e), e.column()),
            None => e.to_string(),
        };
        // A long line is shown as a window (see `summary::render_diagnostic`): point at the
        // error in it, so the window shows the error rather than the line's start.
        if body.len() > crate::summary::MAX_SOURCE_LINE && e.line() == 1 {
            let at = span.offset() + e.column().saturating_sub(1).min(body.len());
            return parse_err(message, at, 1);
        }
        parse_err(message, span.offset(), body.len())
    };
    if trimmed.starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            if e.is_eof() {
                // Point at the last character, not past the end where no label shows.
                let at = text.trim_end().len().saturating_sub(1);
                return parse_err(
                    format!("{} at the end of the text", json_message(&e)),
                    at,
                    1,
                );
            }
            let at = offset_of(text, e.line(), e.column());
            parse_err(e.to_string(), at, 1)
        })?;
        let spans: Vec<SourceSpan> = raws
            .iter()
            .map(|raw| {
                let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                SourceSpan::from(start..start + raw.get().len())
            })
            .collect();
        let values = raws.iter().zip(&spans).map(|(raw, &span)| {
            parse_value(raw.get()).map_err(|e| bad_job(raw.get(), None, span, &e))
        });
        let origin = Origin {
            src,
            spans: Spans::Each(spans.clone()),
        };
        return assign_ids(stage, values, raws.len(), text.len(), &origin, visit);
    }
    let count = json_lines(text).count();
    let values = json_lines_numbered(text).map(|(start, body, line)| {
        parse_value(body).map_err(|e| {
            let span = SourceSpan::from(start..start + body.len());
            bad_job(body, Some(line), span, &e)
        })
    });
    let origin = Origin {
        src,
        spans: Spans::Lines,
    };
    assign_ids(stage, values, count, text.len(), &origin, visit)
}

/// serde_json's message without the position it appends (" at line L column C").
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&position)
        .map_or_else(|| text.clone(), str::to_owned)
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// The id a job without an `id` field gets: 16 hex digits of the SHA-256 of its canonical
/// JSON (in serde_json's form, see [`id_json`]), as [`JobId::from_canonical`] makes it.
fn hash_id(json: &str) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(id_json(json).as_bytes());
    let mut out = [0u8; 16];
    for (i, b) in digest.iter().take(8).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// A job's id as its value gives it, or as its hash makes it.
enum IdText {
    Hash([u8; 16]),
    Given(String),
}

impl IdText {
    fn as_str(&self) -> &str {
        match self {
            Self::Hash(h) => std::str::from_utf8(h).expect("hex digits are ASCII"),
            Self::Given(s) => s,
        }
    }
}

/// A job's parsed value with its canonical JSON and its id (or why its `id` is not one):
/// what can be made of a job before its place in the stage is known.
struct Prepared {
    value: Value,
    json: String,
    id: Result<IdText, String>,
}

impl Prepared {
    fn new(value: Value) -> Self {
        let json = serde_json::to_string(&value).expect("a JSON value serializes");
        let given = |id: String| JobId::check(&id).map(|()| IdText::Given(id));
        let id = match value.get("id") {
            Some(Value::String(s)) => given(s.clone()),
            Some(Value::Number(n)) if n.as_u64().is_some() => given(n.to_string()),
            Some(other) => Err(format!(
                "`id` must be a string or a non-negative integer, not `{other}`"
            )),
            None => Ok(IdText::Hash(hash_id(&json))),
        };
        Self { value, json, id }
    }
}

fn assign_ids(
    stage: &Stage,
    values: impl IntoIterator<Item = Result<Value>>,
    count: usize,
    text: usize,
    origin: &Origin<'_>,
    visit: &mut Visit<'_>,
) -> Result<Jobs> {
    let prepared = values.into_iter().map(|v| v.map(Prepared::new));
    assign_prepared(stage, prepared, count, text, origin, visit)
}

fn assign_prepared(
    stage: &Stage,
    values: impl IntoIterator<Item = Result<Prepared>>,
    count: usize,
    text: usize,
    origin: &Origin<'_>,
    visit: &mut Visit<'_>,
) -> Result<Jobs> {
    let mut jobs = JobsBuilder::new(count, text);
    for (index, job) in values.into_iter().enumerate() {
        let Prepared { value, json, id } = job?;
        let id = id.map_err(|message| Error::InvalidJob {
            stage: stage.name.to_string(),
            index,
            message,
            src: origin.src.clone(),
            span: origin.span(index),
            help: None,
        })?;
        let id = id.as_str();
        // Only the canonical JSON is kept: a parsed value costs ~1 KiB per object, which is
        // most of the memory of a large stage; `JobRef::value` parses it again when needed.
        let job = match jobs.push(id, &json) {
            Ok(job) => job,
            Err(first) => {
                let mut spans = Vec::new();
                if let Some(s) = origin.span(first) {
                    spans.push(LabeledSpan::new_with_span(Some(format!("job {first}")), s));
                }
                if let Some(s) = origin.span(index) {
                    if spans.first().map(LabeledSpan::inner) != Some(&s) {
                        spans.push(LabeledSpan::new_with_span(Some(format!("job {index}")), s));
                    }
                }
                return Err(Error::DuplicateJobId {
                    stage: stage.name.to_string(),
                    id: id.to_owned(),
                    first,
                    second: index,
                    src: origin.src.clone(),
                    spans,
                });
            }
        };
        visit(job, value)?;
    }
    Ok(jobs.finish())
}

#[cfg(test)]
impl Jobs {
    /// Jobs with these ids and `{}` values (for tests).
    pub(crate) fn with_ids(ids: &[&str]) -> Self {
        let mut b = JobsBuilder::new(ids.len(), ids.len() * 2);
        for id in ids {
            b.push(id, "{}").expect("distinct ids");
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    fn manifest(stage_body: &str) -> Manifest {
        parse(
            Path::new("/tmp/poolparty.toml"),
            format!("[workflow]\nname='w'\n[stages.a]\nrun='true'\n{stage_body}\n"),
        )
        .unwrap()
    }

    #[test]
    fn hash_ids_are_stable_and_order_independent() {
        let m1 = manifest("jobs=[[1,2],{b=1,a=2}]");
        let m2 = manifest("jobs=[{a=2,b=1},[1,2]]");
        let j1 = expand_static(&m1, &m1.stages[0]).unwrap().unwrap();
        let j2 = expand_static(&m2, &m2.stages[0]).unwrap().unwrap();
        assert_eq!(j1.at(0).id, j2.at(1).id);
        assert_eq!(j1.at(1).id, j2.at(0).id);
        assert_eq!(j1.at(1).json, r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn explicit_ids_and_duplicates() {
        let m = manifest("jobs=[{id='x'},{id=7},{id='x'}]");
        match expand_static(&m, &m.stages[0]).unwrap().unwrap_err() {
            Error::DuplicateJobId {
                first, second, id, ..
            } => {
                assert_eq!((first, second, id.as_str()), (0, 2, "x"));
            }
            e => panic!("{e:?}"),
        }
        let m = manifest("jobs=[{id='../etc'}]");
        assert!(matches!(
            expand_static(&m, &m.stages[0]).unwrap(),
            Err(Error::InvalidJob { .. })
        ));
    }

    #[test]
    fn matrix_is_cartesian_in_key_order() {
        let m = manifest("matrix={x=[1,2],y=['a','b','c']}");
        let jobs = expand_static(&m, &m.stages[0]).unwrap().unwrap();
        assert_eq!(jobs.len(), 6);
        assert_eq!(jobs.at(1).json, r#"{"x":1,"y":"b"}"#);
        assert_eq!(jobs.at(3).json, r#"{"x":2,"y":"a"}"#);
    }

    #[test]
    fn json_lines_error_points_at_line() {
        let m = manifest("generate='x'");
        let src = NamedSource::new("out", "1\n2\n{bad\n4\n".to_owned());
        match parse_jobs(&m.stages[0], &src, "output").unwrap_err() {
            Error::JobsParse { span, message, .. } => {
                assert_eq!(span.offset(), 4);
                // The line of the whole output, not of the line on its own.
                assert_eq!(message, "key must be a string at line 3 column 2");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn json_array_keeps_exact_numbers() {
        let m = manifest("generate='x'");
        let src = NamedSource::new("out", "[0.1, 12345678901234567890, 1e400]".to_owned());
        let jobs = parse_jobs(&m.stages[0], &src, "output").unwrap();
        let texts: Vec<&str> = jobs.iter().map(|j| j.json).collect();
        assert_eq!(texts, ["0.1", "12345678901234567890", "1e400"]);
    }

    #[test]
    fn numbers_keep_their_text_and_ids_do_not_depend_on_it() {
        let v = parse_value(r#"{"b": [1E2, -2.5e-3, 1e400], "a": "e", "c": {"x": 0.1}}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":"e","b":[1E2,-2.5e-3,1e400],"c":{"x":0.1}}"#
        );
        assert_eq!(v["b"][0].to_string(), "1E2");
        let m = manifest("generate='x'");
        let src = NamedSource::new("out", "{\"x\": 1E2}\n".to_owned());
        let a = parse_jobs(&m.stages[0], &src, "output").unwrap();
        let src = NamedSource::new("out", "{\"x\": 1e+2}\n".to_owned());
        let b = parse_jobs(&m.stages[0], &src, "output").unwrap();
        assert_eq!(a.at(0).json, r#"{"x":1E2}"#);
        assert_eq!(b.at(0).json, r#"{"x":1e+2}"#);
        // Same number, same id; and the id earlier versions computed (from `1e+2`).
        assert_eq!(a.at(0).id, b.at(0).id);
        assert_eq!(a.at(0).id, JobId::from_canonical(r#"{"x":1e+2}"#).as_str());
        assert_eq!(a.at(0).value().to_string(), r#"{"x":1E2}"#);
    }

    /// JSON text with written numbers: (the text with random spacing, its compact form).
    fn json_text() -> impl proptest::strategy::Strategy<Value = (String, String)> {
        use proptest::prelude::*;
        let number = "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?";
        let leaf = prop_oneof![
            number.prop_map(|n| (n.clone(), n)),
            any::<String>().prop_map(|s| {
                let j = serde_json::to_string(&s).unwrap();
                (j.clone(), j)
            }),
            Just(("true".to_owned(), "true".to_owned())),
            Just(("null".to_owned(), "null".to_owned())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                    let spaced: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
                    let compact: Vec<String> = items.iter().map(|i| i.1.clone()).collect();
                    (
                        format!("[ {} ]", spaced.join(" ,\n")),
                        format!("[{}]", compact.join(",")),
                    )
                }),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..4).prop_map(|m| {
                    let key = |k: &String| serde_json::to_string(k).unwrap();
                    let spaced: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{} : {}", key(k), v.0))
                        .collect();
                    let compact: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{}:{}", key(k), v.1))
                        .collect();
                    (
                        format!("{{ {} }}", spaced.join(", ")),
                        format!("{{{}}}", compact.join(",")),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn parse_value_keeps_every_number_as_written((text, compact) in json_text()) {
            let v = parse_value(&text).unwrap();
            proptest::prop_assert_eq!(serde_json::to_string(&v).unwrap(), compact.clone());
            // The id form is serde_json's own.
            let plain: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(
                id_json(&compact).into_owned(),
                serde_json::to_string(&plain).unwrap()
            );
        }

        #[test]
        fn parse_value_never_panics(text in "[\\[\\]{}\",:0-9eE+.\\-a-z \\\\]{0,40}") {
            let _ = parse_value(&text);
        }
    }
}
