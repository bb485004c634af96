//! Child processes poolparty starts (jobs and generators): each in its own process group,
//! stopped with SIGTERM then SIGKILL after a grace period; and the `/proc` lookups that find
//! what is left of a job's group after its runner died.
//!
//! It knows nothing of the pipeline (it imports only `signals`). [`run_captured`] runs a generator (its
//! leader killed with poolparty through [`own_group`]); the local backend supervises jobs
//! itself and records their groups with [`start_time_between`]; `runner::recover` stops a
//! dead runner's groups with [`stop_groups`].

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::signals::Signals;

/// How long a child may take to exit after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after a child exited while something it started keeps its
/// pipes open; then its process group is killed.
pub const LINGER: Duration = Duration::from_secs(1);
/// How much of a generator's stderr is kept (its end) for the diagnostic.
const STDERR_KEPT: usize = 64 * 1024;

/// Makes `cmd` start in its own process group (so one `killpg` stops it and everything it
/// starts, and a terminal's Ctrl-C reaches only poolparty, which decides), its leader killed
/// with SIGKILL when the thread that starts it dies (`PR_SET_PDEATHSIG`). Used for generators;
/// local jobs skip the death signal, whose `pre_exec` makes every spawn a `fork` (see
/// DESIGN.md), and are stopped by the runner's watchdog instead.
///
/// The death signal fires when the *thread* that forked the child exits, so start children
/// from a thread that outlives them (the one that waits for them).
pub fn own_group(cmd: &mut Command) {
    cmd.process_group(0);
    let parent = std::process::id();
    #[expect(
        unsafe_code,
        reason = "pre_exec runs between fork and exec; the closure only makes two \
                  async-signal-safe system calls (prctl, getppid) and allocates nothing"
    )]
    // SAFETY: see the reason above.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before the death signal was armed.
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::from(ErrorKind::Interrupted));
            }
            Ok(())
        });
    }
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the
/// pid, it names a process uniquely until the machine reboots.
#[must_use]
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// This boot's id: a start time from another boot names no process.
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

struct Stat {
    pgrp: i32,
    start: u64,
    zombie: bool,
}

/// The boot clock (`CLOCK_BOOTTIME`, the clock of `/proc/<pid>/stat` start times) in
/// nanoseconds.
#[must_use]
pub fn boot_clock() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    u64::try_from(t.tv_sec())
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(t.tv_nsec()).ok()?)
}

/// One clock tick of `/proc` start times (`USER_HZ`, 10 ms on Linux) in nanoseconds.
fn tick_ns() -> Option<u64> {
    static TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        let hz = u64::try_from(hz)
            .ok()
            .filter(|&h| h > 0 && 1_000_000_000 % h == 0)?;
        Some(1_000_000_000 / hz)
    })
}

/// Slack on each side of a bracket, against any disagreement between the clock read here
/// and the kernel's reading at fork.
const BRACKET_SLACK_NS: u64 = 50_000;

/// The tick both ends of the `[before, after]` boot-clock bracket (widened by a slack) fall
/// in, if they fall in the same one.
fn tick_between(before: u64, after: u64, tick: u64) -> Option<u64> {
    let first = before.saturating_sub(BRACKET_SLACK_NS) / tick;
    let last = after.saturating_add(BRACKET_SLACK_NS) / tick;
    (first == last && before <= after).then_some(first)
}

/// The start time (as [`start_time`]) of the child `pid`, started between two readings of
/// [`boot_clock`]. The kernel stamps a process's start at fork, between the two readings, and
/// `/proc` shows it in whole ticks: when both readings fall in the same tick (a spawn takes far
/// less than one), that tick is the start time, and `/proc` is not read (it is otherwise, as a
/// tick boundary passed during the spawn).
#[must_use]
pub fn start_time_between(pid: u32, before: Option<u64>, after: Option<u64>) -> Option<u64> {
    if let (Some(b), Some(a), Some(tick)) = (before, after, tick_ns()) {
        if let Some(t) = tick_between(b, a, tick) {
            return Some(t);
        }
    }
    start_time(pid)
}

fn stat(pid: u32) -> Option<Stat> {
    // One `read` takes the whole line (well under 1 KiB): no size query, no growing buffer.
    let mut buf = [0u8; 2048];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let owned;
    let bytes = if n < buf.len() {
        &buf[..n]
    } else {
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).ok()?;
        owned = [&buf[..], &rest].concat();
        &owned[..]
    };
    let text = std::str::from_utf8(bytes).ok()?;
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        zombie: matches!(fields.first(), Some(&"Z" | &"X")),
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// A process group recorded when its leader started: the leader's pid (= the group id) and
/// start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    /// The group id (its leader's pid).
    pub pgid: u32,
    /// The leader's start time ([`start_time`]).
    pub start: u64,
}

/// The live (not zombie) processes of each group, found with one scan of `/proc`. A group
/// counts as the recorded one only if its leader is the recorded process, or, when the leader
/// is gone, if its members started after it (a recycled group id would be younger).
#[must_use]
pub fn members(groups: &[Group]) -> Vec<(Group, Vec<u32>)> {
    let mut out: Vec<(Group, Vec<u32>)> = groups.iter().map(|g| (*g, Vec::new())).collect();
    if groups.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(s) = stat(pid) else { continue };
        if s.zombie {
            continue;
        }
        for (g, pids) in &mut out {
            if i64::from(s.pgrp) == i64::from(g.pgid) && s.start >= g.start {
                pids.push(pid);
            }
        }
    }
    for (g, pids) in &mut out {
        // The leader lives but is another process: the group id was recycled.
        if stat(g.pgid).is_some_and(|s| !s.zombie && s.start != g.start) {
            pids.clear();
        }
    }
    out
}

/// The process groups of the processes whose environment holds all variables of one of
/// `entries` (e.g. `["POOLPARTY_RESULT=/path", "POOLPARTY_ATTEMPT=2"]`), each with the start
/// time of its oldest such process: how a job is found when the runner died before it
/// recorded the job's group. One scan of `/proc`; only processes of the same user can be read.
#[must_use]
pub fn groups_by_env(entries: &[Vec<String>]) -> Vec<Group> {
    let mut found: Vec<Group> = Vec::new();
    if entries.is_empty() {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if !entries
            .iter()
            .any(|set| set.iter().all(|e| vars.contains(&e.as_bytes())))
        {
            continue;
        }
        let Some(s) = stat(pid).filter(|s| !s.zombie) else {
            continue;
        };
        let Ok(pgid) = u32::try_from(s.pgrp) else {
            continue;
        };
        match found.iter_mut().find(|g| g.pgid == pgid) {
            Some(g) => g.start = g.start.min(s.start),
            None => found.push(Group {
                pgid,
                start: stat(pgid)
                    .filter(|l| !l.zombie)
                    .map_or(s.start, |l| l.start),
            }),
        }
    }
    found
}

/// Stops what is left of recorded groups: SIGTERM, `grace` to exit, then SIGKILL, and waits
/// (at most `grace` more) until no member is left. Returns how many groups had members and
/// the pids still alive at the end (normally none).
#[must_use]
pub fn stop_groups(groups: &[Group], grace: Duration) -> (usize, Vec<u32>) {
    let live: Vec<Group> = members(groups)
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(g, _)| g)
        .collect();
    let n = live.len();
    let signal_all = |sig: Signal| {
        for g in &live {
            if let Ok(pgid) = i32::try_from(g.pgid) {
                let _ = killpg(Pid::from_raw(pgid), sig);
            }
        }
    };
    let remaining = || -> Vec<u32> {
        members(&live)
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect::<Vec<_>>()
    };
    if n == 0 {
        return (0, Vec::new());
    }
    signal_all(Signal::SIGTERM);
    let mut left = wait_gone(&remaining, grace);
    if !left.is_empty() {
        signal_all(Signal::SIGKILL);
        left = wait_gone(&remaining, grace);
    }
    (n, left)
}

fn wait_gone(remaining: &dyn Fn() -> Vec<u32>, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = remaining();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why a child was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Its time limit passed.
    TimedOut,
    /// poolparty received SIGINT/SIGTERM.
    Interrupted,
}

/// What [`run_captured`] saw.
#[derive(Debug)]
pub struct Captured {
    /// How the child ended.
    pub status: ExitStatus,
    /// Why poolparty stopped it, if it did.
    pub stopped: Option<Stop>,
    /// All of its stdout.
    pub stdout: Vec<u8>,
    /// The end of its stderr.
    pub stderr: Vec<u8>,
    /// Its output pipes were still held open by something it started after it exited; that
    /// was killed. (Read by the unit tests only: nothing reports it yet.)
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the unit tests only"))]
    pub lingered: bool,
}

/// Runs `cmd` in its own group with its stdout and stderr read through pipes (without
/// blocking on either), stopping the group when `time` passes or a signal arrives (SIGTERM,
/// then SIGKILL after [`GRACE`] or at a second signal). Once the child exited, its pipes are
/// read for [`LINGER`] more; whatever still holds them then is killed.
///
/// # Errors
/// When the child cannot be started or waited for.
pub fn run_captured(
    cmd: &mut Command,
    time: Option<Duration>,
    signals: &Signals,
) -> std::io::Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    own_group(cmd);
    let _watch = signals.watch();
    let mut child = cmd.spawn()?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let deadline = time.map(|t| Instant::now() + t);
    let mut pipes = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut stopped = None;
    let mut term_sent: Option<Instant> = None;
    // When the child exited; it stays unreaped (a zombie) until the end, so its pid, the
    // group id, cannot be recycled while the group is signalled.
    let mut exited: Option<Instant> = None;
    let mut lingered = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let count = signals.count();
        if stopped.is_none() {
            if count > 0 {
                stopped = Some(Stop::Interrupted);
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                stopped = Some(Stop::TimedOut);
            }
        }
        if stopped.is_some() {
            match term_sent {
                None if count < 2 => {
                    let _ = killpg(pgid, Signal::SIGTERM);
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() < GRACE && count < 2 => {}
                _ => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    term_sent = Some(Instant::now() - GRACE);
                }
            }
        }
        if exited.is_none() && has_exited(pgid)? {
            exited = Some(Instant::now());
        }
        if let Some(at) = exited {
            let open = pipes.iter().any(Option::is_some);
            if stopped.is_some() || (open && at.elapsed() >= LINGER) {
                // Stopped, or something it started still holds its pipes after it exited:
                // nothing of the group may outlive it.
                let _ = killpg(pgid, Signal::SIGKILL);
                lingered = open && stopped.is_none();
                break;
            }
            if !open {
                break;
            }
        } else if pipes.iter().all(Option::is_none) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
        let mut which = Vec::with_capacity(2);
        for (i, p) in pipes.iter().enumerate() {
            if let Some(p) = p {
                fds.push(PollFd::new(p.fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let ready = match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        if ready == 0 {
            continue;
        }
        let flags: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &i) in which.iter().enumerate() {
            if !flags[k] {
                continue;
            }
            let Some(p) = pipes[i].as_mut() else { continue };
            match p.read(&mut chunk) {
                Ok(0) => pipes[i] = None,
                Ok(n) => {
                    bufs[i].extend_from_slice(&chunk[..n]);
                    if i == 1 && bufs[1].len() > 2 * STDERR_KEPT {
                        let cut = bufs[1].len() - STDERR_KEPT;
                        bufs[1].drain(..cut);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(_) => pipes[i] = None,
            }
        }
    }
    let status = child.wait()?;
    let [stdout, mut stderr] = bufs;
    if stderr.len() > STDERR_KEPT {
        stderr.drain(..stderr.len() - STDERR_KEPT);
    }
    Ok(Captured {
        status,
        stopped,
        stdout,
        stderr,
        lingered,
    })
}

/// Whether the child `pid` exited, without reaping it (it stays a zombie: its pid, and so its
/// group id, cannot be recycled until it is waited for).
pub fn has_exited(pid: Pid) -> std::io::Result<bool> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A pipe end that can be polled and read.
trait ReadFd: Read {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl<T: Read + AsFd> ReadFd for T {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_job_is_found_by_its_environment() {
        let unique = format!("/tmp/pp-env-test-{}", std::process::id());
        let mut cmd = sh("sleep 30");
        cmd.env("POOLPARTY_RESULT", &unique)
            .env("POOLPARTY_ATTEMPT", "2")
            .process_group(0);
        let mut child = cmd.spawn().unwrap();
        let want = |attempt: u32| {
            vec![vec![
                format!("POOLPARTY_RESULT={unique}"),
                format!("POOLPARTY_ATTEMPT={attempt}"),
            ]]
        };
        // Until the child has exec'd, /proc shows the parent's environment: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = groups_by_env(&want(2));
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pgid, child.id());
        assert_eq!(Some(found[0].start), start_time(child.id()));
        assert!(groups_by_env(&want(3)).is_empty(), "another attempt");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_tick_is_taken_only_when_both_ends_fall_in_it() {
        let tick = 10_000_000;
        assert_eq!(
            tick_between(5 * tick + 100_000, 5 * tick + 200_000, tick),
            Some(5)
        );
        assert_eq!(
            tick_between(6 * tick - 100_000, 6 * tick + 100_000, tick),
            None
        );
        // Within the slack of a boundary: not trusted.
        assert_eq!(
            tick_between(6 * tick + 10_000, 6 * tick + 20_000, tick),
            None
        );
        assert_eq!(
            tick_between(6 * tick - 20_000, 6 * tick - 10_000, tick),
            None
        );
        assert_eq!(
            tick_between(5 * tick + 200_000, 5 * tick + 100_000, tick),
            None
        );
    }

    #[test]
    fn a_start_time_from_the_boot_clock_is_the_one_proc_shows() {
        let mut fast = 0;
        for _ in 0..200 {
            let before = boot_clock();
            let mut child = Command::new("sleep").arg("5").spawn().unwrap();
            let after = boot_clock();
            let computed = start_time_between(child.id(), before, after);
            assert_eq!(computed, start_time(child.id()), "pid {}", child.id());
            if tick_between(before.unwrap(), after.unwrap(), tick_ns().unwrap()).is_some() {
                fast += 1;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // Spawns are far shorter than a tick: nearly all take the fast path.
        assert!(fast > 0, "no bracket fell within one tick");
    }

    #[test]
    fn reads_both_pipes_and_the_exit_status() {
        let c = run_captured(
            &mut sh("echo out; echo err >&2; exit 3"),
            None,
            &Signals::none(),
        )
        .unwrap();
        assert_eq!(c.stdout, b"out\n");
        assert_eq!(c.stderr, b"err\n");
        assert_eq!(c.status.code(), Some(3));
        assert_eq!(c.stopped, None);
    }

    #[test]
    fn time_limit_stops_the_group() {
        let start = Instant::now();
        let c = run_captured(
            &mut sh("echo '[1]'; sleep 30"),
            Some(Duration::from_millis(300)),
            &Signals::none(),
        )
        .unwrap();
        assert_eq!(c.stopped, Some(Stop::TimedOut));
        assert_eq!(c.stdout, b"[1]\n");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_block() {
        let start = Instant::now();
        let c = run_captured(&mut sh("sleep 30 & echo '[1]'"), None, &Signals::none()).unwrap();
        assert!(c.status.success());
        assert!(c.lingered);
        assert_eq!(c.stdout, b"[1]\n");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_signal_stops_it() {
        let s = Signals::none();
        let _w = s.watch();
        s.raise(15);
        let c = run_captured(&mut sh("sleep 30"), None, &s).unwrap();
        assert_eq!(c.stopped, Some(Stop::Interrupted));
    }

    #[test]
    fn groups_are_found_and_stopped_but_not_recycled_ones() {
        let mut cmd = sh("sleep 30 & sleep 30; wait");
        cmd.process_group(0);
        let mut child = cmd.spawn().unwrap();
        let g = Group {
            pgid: child.id(),
            start: start_time(child.id()).unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while members(&[g])[0].1.len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(members(&[g])[0].1.len(), 3, "sh and two sleeps");
        let recycled = Group {
            pgid: g.pgid,
            start: g.start + 1,
        };
        assert!(members(&[recycled])[0].1.is_empty());
        assert_eq!(stop_groups(&[recycled], GRACE), (0, Vec::new()));
        // The leader is this test's child: it stays a zombie (not a member) until reaped.
        let (n, left) = stop_groups(&[g], GRACE);
        assert_eq!((n, left), (1, Vec::new()));
        child.wait().unwrap();
    }
}
