//! The text report: the facts of the HTML report as plain text, for a terminal over SSH.

use std::fmt::Write as _;

use super::{OUTCOME_NAMES, ReportData, StageData, Timeline};
use crate::error::count;
use crate::store::format_time;

/// A duration for people.
fn dur(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!(
            "{:.0} h {:.0} min",
            (s / 3600.0).floor(),
            (s % 3600.0) / 60.0
        )
    }
}

/// Recorded text made safe for a terminal: control characters (escape sequences included)
/// are shown as `^X` / `\u{..}` instead of being sent to it. Everything poolparty prints
/// from a job (its value, its log tails) goes through this on a terminal-bound text output.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from_u32(c as u32 + 0x40).unwrap_or('?'));
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// One line of block characters for a series.
fn spark(vals: &[u32]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = vals.iter().copied().max().unwrap_or(0).max(1);
    vals.iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                BLOCKS[((v as usize * 7).div_ceil(max as usize)).min(7)]
            }
        })
        .collect()
}

/// Sums adjacent values so a series fits in `width` characters (keeping maxima for peaks).
fn squeeze(vals: &[u32], width: usize, take_max: bool) -> Vec<u32> {
    if vals.len() <= width {
        return vals.to_vec();
    }
    let per = vals.len().div_ceil(width);
    vals.chunks(per)
        .map(|c| {
            if take_max {
                c.iter().copied().max().unwrap_or(0)
            } else {
                c.iter().sum()
            }
        })
        .collect()
}

/// The report as text.
#[must_use]
pub fn render(d: &ReportData) -> String {
    let mut s = String::new();
    let verdict = match d.verdict {
        crate::outcome::Verdict::Succeeded => "succeeded",
        crate::outcome::Verdict::JobsFailed => "jobs failed",
        crate::outcome::Verdict::Interrupted => "interrupted",
    };
    let _ = writeln!(
        s,
        "workflow `{}`, run {}: {verdict} (exit code {})",
        d.workflow, d.run, d.exit_code
    );
    if let Some(n) = &d.note {
        let _ = writeln!(s, "  note: {n}");
    }
    let _ = writeln!(
        s,
        "  started {}, {}",
        format_time(d.started),
        d.ended.map_or_else(
            || "no end recorded (in progress or killed)".to_owned(),
            |e| format!("ended {}, wall time {}", format_time(e), dur(e - d.started))
        )
    );
    let _ = writeln!(
        s,
        "  manifest {} (sha256 {}), poolparty {}, {} recorded",
        d.manifest,
        d.manifest_sha256.get(..16).unwrap_or(&d.manifest_sha256),
        d.poolparty_version,
        count(d.runs.len(), "run")
    );
    let _ = writeln!(s);
    let header = [
        "stage",
        "backend",
        "jobs",
        "ok",
        "reused",
        "failed",
        "signaled",
        "timed out",
        "lost",
        "interrupted",
        "not run",
        "attempts",
        "retried",
        "wall",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for st in &d.stages {
        let c = &st.counts;
        rows.push(vec![
            st.name.clone(),
            st.backend.clone(),
            c.total.to_string(),
            c.succeeded.to_string(),
            c.reused.to_string(),
            (c.failed + c.exec_failed).to_string(),
            c.signaled.to_string(),
            c.timed_out.to_string(),
            c.lost.to_string(),
            c.interrupted.to_string(),
            c.not_run.to_string(),
            c.attempts.to_string(),
            c.retried.to_string(),
            wall(st).map_or_else(|| "-".to_owned(), dur),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i < 2 {
                    format!("{v:<w$}", w = widths[i])
                } else {
                    format!("{v:>w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    for (i, st) in d.stages.iter().enumerate() {
        stage(&mut s, d, i, st);
    }
    s
}

fn wall(st: &StageData) -> Option<f64> {
    #[expect(clippy::cast_precision_loss, reason = "milliseconds of a run")]
    Some((st.last_ms? - st.first_ms?) as f64 / 1000.0)
}

fn stage(s: &mut String, d: &ReportData, _i: usize, st: &StageData) {
    let c = &st.counts;
    let _ = writeln!(s);
    let needs: Vec<&str> = st
        .needs
        .iter()
        .map(|&n| d.stages[n].name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "stage `{}` ({} backend{}): {}, {} in this run",
        st.name,
        st.backend,
        if needs.is_empty() {
            String::new()
        } else {
            format!(", needs {}", needs.join(", "))
        },
        count(c.total, "job"),
        count(c.attempts, "attempt")
    );
    if let Some(why) = &st.not_started {
        let _ = writeln!(s, "  not started: {why}");
    }
    if c.attempts == 0 && st.not_started.is_none() {
        let _ = writeln!(
            s,
            "  no attempt in this run ({} reused from earlier runs)",
            count(c.reused, "job")
        );
    }
    if let Some(v) = st.durations {
        let _ = writeln!(
            s,
            "  run time: min {}, median {}, p90 {}, max {}, mean {}",
            dur(v[0]),
            dur(v[1]),
            dur(v[2]),
            dur(v[3]),
            dur(v[4])
        );
    }
    match st.queue_wait {
        Some(v) => {
            let _ = writeln!(
                s,
                "  queue wait (submit to start): min {}, median {}, p90 {}, max {}",
                dur(v[0]),
                dur(v[1]),
                dur(v[2]),
                dur(v[3])
            );
        }
        None if c.attempts > 0 => {
            let _ = writeln!(s, "  queue wait: not recorded");
        }
        None => {}
    }
    if let Some(h) = &st.histogram {
        let all: Vec<u32> = h.ok.iter().zip(&h.bad).map(|(a, b)| a + b).collect();
        #[expect(clippy::cast_precision_loss, reason = "a small count")]
        let top = h.lo + h.width * h.ok.len() as f64;
        let _ = writeln!(
            s,
            "  run time histogram  {} |{}| {}",
            dur(h.lo),
            spark(&squeeze(&all, 40, false)),
            dur(top)
        );
    }
    if let Some(cc) = &st.concurrency {
        #[expect(clippy::cast_precision_loss, reason = "milliseconds of a run")]
        let len = (cc.bin_ms * cc.running.len() as i64) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "  running over time   0 |{}| {}  (peak {})",
            spark(&squeeze(&cc.running, 60, true)),
            dur(len),
            cc.peak
        );
        if !cc.queued.is_empty() {
            let _ = writeln!(
                s,
                "  queued over time    0 |{}| {}  (peak {})",
                spark(&squeeze(&cc.queued, 60, true)),
                dur(len),
                cc.queued.iter().max().unwrap_or(&0)
            );
        }
    }
    if let Timeline::Binned {
        attempts,
        per_bucket,
        bin_ms,
        ..
    } = &st.timeline
    {
        #[expect(clippy::cast_precision_loss, reason = "milliseconds")]
        let bin = dur(*bin_ms as f64 / 1000.0);
        let _ = writeln!(
            s,
            "  timeline: {attempts} attempts aggregated in the HTML report (bands of {per_bucket} jobs × {bin} bins)"
        );
    }
    if st.untimed > 0 {
        let _ = writeln!(
            s,
            "  {} without a recorded start and end",
            count(st.untimed, "attempt")
        );
    }
    if !st.slowest.is_empty() {
        let list: Vec<String> = st
            .slowest
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "{} `{}` #{} {}",
                    r.index,
                    r.id,
                    r.attempt,
                    r.seconds.map_or_else(|| "-".to_owned(), dur)
                )
            })
            .collect();
        let _ = writeln!(s, "  slowest: {}", list.join(", "));
    }
    if c.retried > 0 {
        let _ = writeln!(s, "  retried: {}", count(c.retried, "job"));
        for r in st.retried.iter().take(20) {
            let _ = writeln!(
                s,
                "    job {} `{}`: {}",
                r.index,
                clean(&r.id),
                clean(&r.attempts.join(" -> "))
            );
        }
        if c.retried > 20 {
            let _ = writeln!(s, "    … and {} more", c.retried - 20);
        }
    }
    if c.lost_attempts > 0 {
        let _ = writeln!(s, "  lost attempts: {}", c.lost_attempts);
        for r in st.lost.iter().take(20) {
            let _ = writeln!(s, "    job {} `{}` attempt {}", r.index, r.id, r.attempt);
        }
    }
    if st.failed_total > 0 {
        let _ = writeln!(s, "  failed: {}", count(st.failed_total, "job"));
        for f in st.failed.iter().take(50) {
            let _ = writeln!(
                s,
                "    job {} `{}`: {} after {} ({})",
                f.index,
                clean(&f.id),
                clean(&f.describe),
                count(f.attempts as usize, "attempt"),
                OUTCOME_NAMES[f.outcome as usize]
            );
            if let Some(p) = &f.stderr_log {
                let _ = writeln!(s, "      stderr: {p}");
            }
            if let Some(t) = &f.stderr_tail {
                for l in t.lines() {
                    let _ = writeln!(s, "      | {}", clean(l));
                }
            }
            if let Some(p) = &f.stdout_log {
                let _ = writeln!(s, "      stdout: {p}");
            }
        }
        if st.failed_total > 50 {
            let _ = writeln!(
                s,
                "    … and {} more (`poolparty status` lists them all)",
                st.failed_total - 50
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_do_not_reach_the_terminal() {
        assert_eq!(clean("a\x1b[31mred\tb"), "a^[[31mred\tb");
        assert_eq!(clean("x\u{2028}y\u{9b}"), "x\\u{2028}y\\u{9b}");
    }

    #[test]
    fn sparklines_scale_to_the_peak() {
        assert_eq!(spark(&[0, 1, 2, 4]), " ▃▅█");
        assert_eq!(squeeze(&[1, 2, 3, 4], 2, false), [3, 7]);
        assert_eq!(squeeze(&[1, 2, 3, 4], 2, true), [2, 4]);
    }
}
