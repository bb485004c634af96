//! Automatic bundling (`bundle = "auto"`): jobs of known or estimated durations are packed
//! into array tasks near a target length (`task_time`), longest first, so that thousands of
//! short jobs cost tens of scheduler tasks. Pure: durations come in, task assignments go out.
//!
//! Durations come from the stage's ledger (start and end of each job's latest attempt that
//! ran), or, when none is recorded, from a first wave of [`FIRST_WAVE`] jobs submitted one per
//! task and measured before the rest is packed. A job without a recorded duration is assumed
//! to take the mean of those that have one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::outcome::{JobRecord, Outcome};

/// Jobs of the first wave, run one per task and measured, when no duration is recorded.
pub const FIRST_WAVE: usize = 5;

/// While the first wave is measured, its outcome files are looked for this often (one
/// `read_dir`, no scheduler call), or at `poll_interval` when that is shorter.
pub const WAVE_POLL: Duration = Duration::from_millis(100);

/// Once a first job of the wave is measured, the rest of the stage waits this many times its
/// duration (at least [`WAVE_SETTLE`]) for the wave's other jobs; those still running then are
/// stragglers, counted as at least as long as they have run, and the rest is packed.
pub const WAVE_STRAGGLER: f64 = 2.0;

/// The least time the rest of the stage waits for the wave's other jobs after its first
/// outcome (see [`WAVE_STRAGGLER`]): the wave's tasks do not all start at the same instant.
pub const WAVE_SETTLE: Duration = Duration::from_secs(1);

/// Small work is still spread over this many tasks (or `max_parallel`, when lower), so that
/// packing never serializes what would have run side by side.
pub const AUTO_MIN_TASKS: usize = 10;

/// The fewest tasks automatic bundling spreads a stage's jobs over: [`AUTO_MIN_TASKS`], or
/// `max_parallel` when lower (more tasks than may run at once would gain nothing).
#[must_use]
pub fn min_tasks(max_parallel: Option<u32>) -> usize {
    max_parallel.map_or(AUTO_MIN_TASKS, |p| AUTO_MIN_TASKS.min(p as usize))
}

/// How many tasks jobs totalling `total` seconds need for tasks near `target` seconds: at least
/// `min_tasks` (and 1), at most `jobs`.
#[must_use]
pub fn task_count(total: f64, target: f64, jobs: usize, min_tasks: usize) -> usize {
    let by_time = if target > 0.0 {
        // Saturating float-to-int conversion; the count is clamped to `jobs` below.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (total / target).ceil() as usize;
        n
    } else {
        jobs
    };
    by_time.max(min_tasks).max(1).min(jobs.max(1))
}

/// Longest processing time first: each duration, longest first, goes to the task with the
/// least work so far. Returns, per task, the positions of its durations (longest first);
/// tasks left empty are dropped. The longest task is at most 4/3 of the best possible.
#[must_use]
pub fn lpt(durations: &[f64], tasks: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..durations.len()).collect();
    order.sort_by(|&a, &b| durations[b].total_cmp(&durations[a]).then(a.cmp(&b)));
    let tasks = tasks.clamp(1, durations.len().max(1));
    let mut bins: Vec<Vec<usize>> = vec![Vec::new(); tasks];
    // (load in microseconds, task): the least loaded task, then the lowest numbered.
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..tasks).map(|t| Reverse((0, t))).collect();
    for i in order {
        let Reverse((load, t)) = heap.pop().expect("at least one task");
        bins[t].push(i);
        heap.push(Reverse((load.saturating_add(micros(durations[i])), t)));
    }
    bins.retain(|b| !b.is_empty());
    bins
}

fn micros(seconds: f64) -> u64 {
    // Negative or NaN durations count as zero; huge ones saturate.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = (seconds.max(0.0) * 1e6) as u64;
    m
}

/// The duration (seconds) of each job's latest attempt that ran to an exit, by job id.
#[must_use]
pub fn recorded_durations(records: &[JobRecord]) -> HashMap<String, f64> {
    let mut latest: HashMap<&str, (u32, f64)> = HashMap::new();
    for r in records {
        let ran = matches!(
            r.outcome,
            Outcome::Succeeded | Outcome::Failed { .. } | Outcome::TimedOut
        );
        let (Some(start), Some(end), true) = (r.start, r.end, ran) else {
            continue;
        };
        let e = latest
            .entry(r.id.as_str())
            .or_insert((r.attempt, end - start));
        if r.attempt >= e.0 {
            *e = (r.attempt, end - start);
        }
    }
    latest
        .into_iter()
        .map(|(id, (_, d))| (id.to_owned(), d.max(0.0)))
        .collect()
}

/// Each job's duration: its own when known, else the mean of the known ones. `None` when
/// none of them is known.
#[must_use]
pub fn estimate<'a>(
    ids: impl Iterator<Item = &'a str>,
    known: &HashMap<String, f64>,
) -> Option<Vec<f64>> {
    let own: Vec<Option<f64>> = ids.map(|id| known.get(id).copied()).collect();
    let found: Vec<f64> = own.iter().flatten().copied().collect();
    let mean = if found.is_empty() {
        let all: Vec<f64> = known.values().copied().collect();
        if all.is_empty() {
            return None;
        }
        #[expect(clippy::cast_precision_loss)]
        let n = all.len() as f64;
        all.iter().sum::<f64>() / n
    } else {
        #[expect(clippy::cast_precision_loss)]
        let n = found.len() as f64;
        found.iter().sum::<f64>() / n
    };
    Some(own.into_iter().map(|d| d.unwrap_or(mean)).collect())
}

/// What automatic bundling chose for a stage (shown by `plan`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Packing {
    /// Jobs packed.
    pub jobs: usize,
    /// Array tasks they go in.
    pub tasks: usize,
    /// Most jobs in one task.
    pub max_jobs_per_task: usize,
    /// Estimated length of the longest task, seconds.
    pub longest_task: f64,
    /// Estimated work of all jobs, seconds.
    pub total: f64,
    /// Jobs whose own duration was recorded (the others are assumed to take the mean).
    pub recorded: usize,
}

/// Packs jobs of these durations for tasks near `target` seconds; the tasks' positions into
/// `durations`, and a summary.
#[must_use]
pub fn pack(
    durations: &[f64],
    recorded: usize,
    target: f64,
    min_tasks: usize,
) -> (Vec<Vec<usize>>, Packing) {
    let total: f64 = durations.iter().sum();
    let n = task_count(total, target, durations.len(), min_tasks);
    let bins = lpt(durations, n);
    let load = |b: &Vec<usize>| b.iter().map(|&i| durations[i]).sum::<f64>();
    let summary = Packing {
        jobs: durations.len(),
        tasks: bins.len(),
        max_jobs_per_task: bins.iter().map(Vec::len).max().unwrap_or(0),
        longest_task: bins.iter().map(load).fold(0.0, f64::max),
        total,
        recorded,
    };
    (bins, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn makespan(d: &[f64], bins: &[Vec<usize>]) -> f64 {
        bins.iter()
            .map(|b| b.iter().map(|&i| d[i]).sum::<f64>())
            .fold(0.0, f64::max)
    }

    /// Every job is in exactly one task.
    fn assert_partition(n: usize, bins: &[Vec<usize>]) {
        let mut all: Vec<usize> = bins.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn task_count_aims_at_the_target_within_bounds() {
        // 3,000 jobs of 1 s for tasks of 10 min: 5 tasks by time, raised to the minimum 10.
        assert_eq!(task_count(3000.0, 600.0, 3000, 10), 10);
        // 100 h of work: 600 tasks of 10 min.
        assert_eq!(task_count(360_000.0, 600.0, 3000, 10), 600);
        // Never more tasks than jobs, never fewer than one.
        assert_eq!(task_count(1e9, 1.0, 7, 10), 7);
        assert_eq!(task_count(0.0, 600.0, 3, 0), 1);
    }

    /// The minimum number of tasks, lowered by `max_parallel`.
    #[test]
    fn min_tasks_is_the_minimum_or_max_parallel_when_lower() {
        assert_eq!(min_tasks(None), AUTO_MIN_TASKS);
        assert_eq!(min_tasks(Some(3)), 3);
        assert_eq!(min_tasks(Some(500)), AUTO_MIN_TASKS);
    }

    /// Thousands of short jobs become tens of tasks, each near the others' length.
    #[test]
    fn many_equal_short_jobs_fill_few_even_tasks() {
        let d = vec![0.05; 3000];
        let (bins, p) = pack(&d, 3000, 600.0, AUTO_MIN_TASKS);
        assert_partition(3000, &bins);
        assert_eq!(p.tasks, 10);
        assert_eq!(p.max_jobs_per_task, 300);
        assert!((p.longest_task - 15.0).abs() < 1e-6);
    }

    /// Skewed durations: the makespan stays within LPT's bound, 4/3 of the lower bound
    /// max(total / tasks, longest job).
    #[test]
    fn skewed_durations_stay_within_the_lpt_bound() {
        let mut d: Vec<f64> = (0..200).map(|i| f64::from(i % 7) * 0.5 + 0.1).collect();
        d.extend([300.0, 250.0, 120.0, 90.0, 60.0]);
        for tasks in [1, 2, 3, 8, 20, 64] {
            let bins = lpt(&d, tasks);
            assert_partition(d.len(), &bins);
            let total: f64 = d.iter().sum();
            #[expect(clippy::cast_precision_loss)]
            let lower = (total / tasks as f64).max(300.0);
            let got = makespan(&d, &bins);
            assert!(
                got <= lower * 4.0 / 3.0 + 1e-6,
                "{tasks} tasks: {got} vs {lower}"
            );
        }
        // One very long job gets a task of its own.
        let bins = lpt(&d, 8);
        assert!(bins.iter().any(|b| b == &[200]), "{bins:?}");
    }

    /// The textbook worst case of LPT (2m+1 jobs on m tasks) reaches, and does not pass, the
    /// bound (4/3 - 1/(3m)) of the optimum.
    #[test]
    fn lpt_worst_case_meets_its_bound() {
        let m: u32 = 3;
        let mut d = Vec::new();
        for k in 0..m {
            let v = f64::from(2 * m - 1 - k);
            d.extend([v, v]);
        }
        d.push(f64::from(m));
        let bins = lpt(&d, m as usize);
        let opt = f64::from(3 * m);
        assert!(makespan(&d, &bins) <= opt * (4.0 / 3.0 - 1.0 / (3.0 * f64::from(m))) + 1e-9);
    }

    #[test]
    fn unknown_durations_take_the_mean_of_known_ones() {
        let known: HashMap<String, f64> = [("a".to_owned(), 2.0), ("b".to_owned(), 4.0)].into();
        assert_eq!(
            estimate(["a", "x", "b"].into_iter(), &known),
            Some(vec![2.0, 3.0, 4.0])
        );
        // None of these is known: the mean of every recorded job.
        assert_eq!(estimate(["x"].into_iter(), &known), Some(vec![3.0]));
        assert_eq!(estimate(["x"].into_iter(), &HashMap::new()), None);
    }

    #[test]
    fn recorded_durations_take_each_jobs_latest_attempt_that_ran() {
        let rec = |id: &str, attempt, outcome, start, end| JobRecord {
            index: 0,
            id: id.into(),
            attempt,
            outcome,
            start,
            end,
            run: "r".into(),
            fp: String::new(),
            result: None,
        };
        let d = recorded_durations(&[
            rec("a", 1, Outcome::Succeeded, Some(10.0), Some(12.0)),
            rec("a", 2, Outcome::Succeeded, Some(20.0), Some(25.0)),
            rec("b", 1, Outcome::Failed { code: 1 }, Some(0.0), Some(1.5)),
            rec("c", 1, Outcome::Lost, None, Some(3.0)),
        ]);
        assert_eq!(d.get("a"), Some(&5.0));
        assert_eq!(d.get("b"), Some(&1.5));
        assert_eq!(d.get("c"), None);
    }
}
