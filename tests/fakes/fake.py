#!/usr/bin/env python3
"""Fake PBS Pro / OpenPBS and LSF commands for poolparty's tests (neither can be installed here).

`tests/fakes/pbs/{qsub,qstat,qdel,qmgr}` and `tests/fakes/lsf/{bsub,bjobs,bkill,bparams}` run
this file with their own name. Like the real schedulers, a submission returns at once and the
array's tasks run later, in the background: one runner process per array runs the submitted
script once per index (with `PBS_ARRAY_INDEX` / `LSB_JOBINDEX` set), a few at a time (the `%K`
throttle, else FAKE_SLOTS, default 4), and records how each ended. The commands read and write
that state in $FAKE_SCHED_DIR (required), under a lock.

Formats replayed (as documented; nothing here was checked against a live server):
- PBS: OpenPBS man pages `qsub.1B` (`-J X-Y[:Z][%K]`, X < Y as `chk_Jrange` requires; the job
  id `123[].server` on stdout), `qstat.1B` (`-f -F json`: `timestamp`, `pbs_version`,
  `pbs_server`, then `Jobs` by id; `-t` lists subjobs `123[4].server`; `-x` keeps finished
  ones; states B Q R E F X ...; `qstat: Unknown Job Id ID` on stderr for a forgotten job),
  `qdel.1B` (`qdel: Unknown Job Id ID`), `pbs_server_attributes.7B` (`max_array_size`,
  default 10000, bounds the subjob count; the refusal text `Array job exceeds server or queue
  size limit` from `pbs_messages.c`), and `job.h` for `Exit_status` (256+N killed by signal N).
  Job history (`job_history_enable`) is off by default: an array that ended is forgotten,
  which FAKE_PBS_HISTORY=0 replays (default: kept).
- LSF: the IBM Spectrum LSF command reference: `bsub` reads `#BSUB` lines from a script on
  stdin, `-J "name[1-N]%K"`, answers `Job <123> is submitted to default queue <normal>.`, and
  refuses an array over MAX_JOB_ARRAY_SIZE (default 1000) with `Job array index too large. Job
  not submitted.`; `bjobs -o "jobid jobindex stat exit_code exit_reason" -json` prints
  `{"COMMAND":"bjobs","JOBS":N,"RECORDS":[{"JOBID":"123","JOBINDEX":"4","STAT":"RUN",...}]}`
  with string values; states PEND RUN DONE EXIT (and PSUSP USUSP SSUSP ZOMBI UNKWN, not
  produced here); `Job <123> is not found` once cleaned (FAKE_LSF_CLEAN_PERIOD, default an
  hour); `bkill` answers `Job <123> is being terminated`; `bparams -a` lists
  `MAX_JOB_ARRAY_SIZE = N`.

Sources read: github.com/openpbs/openpbs doc/man1/{qsub,qstat,qdel}.1B,
doc/man1/pbs_server_attributes.7B, src/lib/Libcmds/chk_Jrange.c, src/lib/Liblog/pbs_messages.c,
src/include/job.h; the PBS design page "PP-483: Enhance output of qstat" (pbspro.atlassian.net)
for the `-F json` example; IBM Spectrum LSF 10.1 command reference pages bjobs -o and -json
(ibm.com/docs/en/spectrum-lsf/10.1.0 lsf_command_ref/bjobs.json.1, bjobs.o.1) and "Job arrays"
(lsf_admin/job_arrays_lsf); bjobs -json records as quoted in public LSF clients' tests; the
LSBE_BIG_IDX message "Job array index too large" from lsbatch's error table.

Faults, read at submission time from the environment of `qsub`/`bsub`:
- FAKE_LOSE=2,5: array indices that vanish without running (a lost task: PBS shows the subjob
  ended with `Exit_status` 0 and no outcome file appears; LSF forgets the element).
- FAKE_PBS_MAX_ARRAY_SIZE / FAKE_LSF_MAX_JOB_ARRAY_SIZE: the server's limit (enforced by
  `qsub`/`bsub`, reported by `qmgr`/`bparams`); FAKE_LIMIT_UNREADABLE=1 makes `qmgr`/`bparams`
  fail, so a client falls back to the documented default.
- Time limits: a task running longer than its `-l walltime=` (PBS) or `-W` (LSF) is killed
  and ends with `Exit_status` -29 (`JOB_EXEC_KILL_WALLTIME`) or `EXIT` with
  `TERM_RUNLIMIT`; FAKE_LSF_MINUTE sets how many seconds an LSF run-limit minute lasts (60).
- FAKE_CALLS: a file every command appends its name and arguments to.
"""

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

SERVER = "fakepbs"


def state_dir():
    d = os.environ.get("FAKE_SCHED_DIR")
    if not d:
        sys.stderr.write("fake scheduler: FAKE_SCHED_DIR is not set\n")
        sys.exit(97)
    os.makedirs(os.path.join(d, "jobs"), exist_ok=True)
    return d


class Locked:
    """The state folder's lock, held for a read-modify-write of job files."""

    def __init__(self, d):
        self.path = os.path.join(d, "lock")

    def __enter__(self):
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *a):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def job_path(d, seq):
    return os.path.join(d, "jobs", "%d.json" % seq)


def load(d, seq):
    try:
        with open(job_path(d, seq)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(d, job):
    tmp = job_path(d, job["seq"]) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(job, f)
    os.replace(tmp, job_path(d, job["seq"]))


def all_jobs(d):
    out = []
    for name in os.listdir(os.path.join(d, "jobs")):
        if name.endswith(".json"):
            j = load(d, int(name[:-5]))
            if j:
                out.append(j)
    return out


def next_seq(d):
    p = os.path.join(d, "seq")
    n = int(open(p).read()) + 1 if os.path.exists(p) else 100
    with open(p, "w") as f:
        f.write(str(n))
    return n


def log_call(name, args):
    p = os.environ.get("FAKE_CALLS")
    if p:
        with open(p, "a") as f:
            f.write(" ".join([name] + args) + "\n")


def ended(job):
    return all(t["state"] == "ended" for t in job["tasks"].values())


def purge(d, job, keep):
    """Forgets an array that ended more than `keep` seconds ago; returns whether it did."""
    if keep is None or not ended(job) or job.get("ended_at") is None:
        return False
    if time.time() - job["ended_at"] >= keep:
        os.remove(job_path(d, job["seq"]))
        return True
    return False


def history(kind):
    v = os.environ.get("FAKE_PBS_HISTORY" if kind == "pbs" else "FAKE_LSF_CLEAN_PERIOD")
    if v is None:
        return None if kind == "pbs" else 3600.0
    return float(v)


def find(d, seq, kind):
    job = load(d, seq)
    if job is None or job["kind"] != kind or purge(d, job, history(kind)):
        return None
    return job


def parse_lose():
    return [int(x) for x in os.environ.get("FAKE_LOSE", "").split(",") if x.strip()]


def spawn_runner(d, seq):
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--run", d, str(seq)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def new_job(d, kind, name, indices, throttle, script_text, cwd, env, deps, array=True, limit=None):
    with Locked(d):
        seq = next_seq(d)
        script = os.path.join(d, "jobs", "%d.sh" % seq)
        with open(script, "w") as f:
            f.write(script_text)
        lose = parse_lose()
        job = {
            "seq": seq,
            "kind": kind,
            "name": name,
            "throttle": throttle,
            "script": script,
            "cwd": cwd,
            "env": env,
            "deps": deps,
            "array": array,
            "limit": limit,
            "submitted": time.time(),
            "ended_at": None,
            "tasks": {
                str(i): {
                    "state": "queued",
                    "rc": None,
                    "signal": None,
                    "pid": None,
                    "reason": "",
                    "lost": i in lose,
                }
                for i in indices
            },
        }
        save(d, job)
    spawn_runner(d, seq)
    return seq


def update(d, seq, fn):
    with Locked(d):
        job = load(d, seq)
        if job is None:
            return None
        fn(job)
        if ended(job) and job["ended_at"] is None:
            job["ended_at"] = time.time()
        save(d, job)
        return job


# --- the runner: one process per array ---------------------------------------------------------


def deps_state(d, job):
    """'wait', 'go' or 'never' for the array's dependencies."""
    for kind, seq in job["deps"]:
        dep = load(d, seq)
        if dep is None:
            continue  # forgotten: it ended long ago
        if not ended(dep):
            return "wait"
        if kind in ("afterok", "done") and any(
            t["rc"] != 0 or t["lost"] for t in dep["tasks"].values()
        ):
            return "never"
    return "go"


def run_array(d, seq):
    job = load(d, seq)
    while True:
        s = deps_state(d, job)
        if s == "go":
            break
        if s == "never":
            if job["kind"] == "pbs":
                # PBS deletes a job whose afterok dependency cannot be met.
                def deleted(j):
                    for t in j["tasks"].values():
                        t["state"] = "ended"

                update(d, seq, deleted)
                return
            # LSF keeps it pending (the dependency is never satisfied).
            time.sleep(0.5)
            continue
        time.sleep(0.2)
    slots = job["throttle"] or int(os.environ.get("FAKE_SLOTS", "4"))
    running = {}
    started_at = {}
    over = set()
    order = sorted(int(i) for i in job["tasks"])
    while order or running:
        for idx, proc in list(running.items()):
            rc = proc.poll()
            if rc is None:
                if job["limit"] and idx not in over and time.time() - started_at[idx] > job["limit"]:
                    # Over its time limit: killed, as the execution host does.
                    over.add(idx)
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                continue
            del running[idx]

            def finish(j, idx=idx, rc=rc):
                t = j["tasks"][str(idx)]
                t["state"] = "ended"
                if idx in over:
                    t["timed_out"] = True
                    if j["kind"] == "lsf":
                        t["reason"] = "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
                if rc < 0:
                    t["signal"] = -rc
                else:
                    t["rc"] = rc

            update(d, seq, finish)
        while order and len(running) < slots:
            idx = order.pop(0)
            job = load(d, seq)
            if job is None:
                return
            t = job["tasks"][str(idx)]
            if t["state"] != "queued":
                continue
            if t["lost"]:
                def lose(j, idx=idx):
                    j["tasks"][str(idx)]["state"] = "ended"
                    j["tasks"][str(idx)]["rc"] = 0

                update(d, seq, lose)
                continue
            env = dict(job["env"])
            if job["kind"] == "pbs" and not job["array"]:
                env.update(PBS_JOBID="%d.%s" % (seq, SERVER), PBS_JOBNAME=job["name"])
            elif job["kind"] == "pbs":
                env.update(
                    PBS_ARRAY_INDEX=str(idx),
                    PBS_JOBID="%d[%d].%s" % (seq, idx, SERVER),
                    PBS_ARRAY_ID="%d[].%s" % (seq, SERVER),
                    PBS_JOBNAME=job["name"],
                )
            else:
                env.update(
                    LSB_JOBID=str(seq),
                    LSB_JOBINDEX=str(idx),
                    LSB_JOBNAME=("%s[%d]" % (job["name"], idx)) if job["array"] else job["name"],
                )
            log = open(os.path.join(d, "jobs", "%d.%d.log" % (seq, idx)), "w")
            proc = subprocess.Popen(
                ["/bin/bash", job["script"]],
                cwd=job["cwd"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            running[idx] = proc
            started_at[idx] = time.time()

            def started(j, idx=idx, pid=proc.pid):
                t = j["tasks"][str(idx)]
                if t["state"] == "queued":
                    t["state"] = "running"
                    t["pid"] = pid

            update(d, seq, started)
        time.sleep(0.05)


# --- PBS -----------------------------------------------------------------------------------


def chk_jrange(arg):
    """OpenPBS `chk_Jrange`: X-Y[:Z] with X < Y and Z >= 1; returns the indices or None."""
    m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?", arg)
    if not m:
        return None
    start, end, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if start >= end or step < 1:
        return None
    return list(range(start, end + 1, step))


def directives(text, prefix):
    """The option words of a script's `#PBS` / `#BSUB` lines (before its first command)."""
    words = []
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s.startswith(prefix):
            words += shlex.split(s[len(prefix):])
        elif s and not s.startswith("#"):
            break
    return words


def pbs_limit():
    return int(os.environ.get("FAKE_PBS_MAX_ARRAY_SIZE", "10000"))


def qsub(args):
    d = state_dir()
    opts = {}
    script = None
    extra_env = {}
    deps = []

    def take(words, cmdline):
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("-N", "-J", "-S", "-o", "-e", "-l", "-q", "-P", "-A", "-v", "-W", "-j"):
                v = words[i + 1]
                i += 2
                if w == "-v":
                    for kv in v.split(","):
                        k, _, val = kv.partition("=")
                        extra_env[k] = val
                elif w == "-W":
                    if v.startswith("depend="):
                        for part in v[len("depend="):].split(","):
                            kind, *ids = part.split(":")
                            deps.extend((kind, int(re.match(r"\d+", x).group())) for x in ids)
                elif w == "-l":
                    opts.setdefault("-l", []).append(v)
                else:
                    opts[w] = v
            elif cmdline and not w.startswith("-"):
                return words[i:]
            else:
                sys.stderr.write("qsub: invalid option -- '%s'\n" % w.lstrip("-"))
                sys.exit(2)
        return []

    rest = take(args, True)
    if len(rest) != 1:
        sys.stderr.write("usage: qsub [options] script\n")
        sys.exit(2)
    script = rest[0]
    try:
        text = open(script).read()
    except OSError as e:
        sys.stderr.write("qsub: script file:: %s\n" % e)
        sys.exit(1)
    # Command-line options win over the script's directives: apply the directives first.
    cmd_opts, cmd_env, cmd_deps = dict(opts), dict(extra_env), list(deps)
    opts.clear()
    extra_env.clear()
    deps.clear()
    take(directives(text, "#PBS"), False)
    opts.update(cmd_opts)
    extra_env.update(cmd_env)
    deps.extend(cmd_deps)
    spec = opts.get("-J")
    array = spec is not None
    spec, _, throttle = (spec or "0-1:2").partition("%")
    indices = chk_jrange(spec)
    if indices is None or (throttle and not throttle.isdigit()):
        sys.stderr.write("qsub: illegal -J value\n")
        sys.exit(2)
    if len(indices) > pbs_limit():
        sys.stderr.write("qsub: Array job exceeds server or queue size limit\n")
        sys.exit(2)
    for kind, seq in deps:
        if load(d, seq) is None:
            sys.stderr.write("qsub: Unknown Job Id %d.%s\n" % (seq, SERVER))
            sys.exit(2)
    limit = None
    for res in opts.get("-l", []):
        if res.startswith("walltime="):
            h, m, sec = (res.split("=", 1)[1].split(":") + ["0", "0"])[:3]
            limit = int(h) * 3600 + int(m) * 60 + int(sec)
    # PBS passes no submission environment but PBS_O_* (and -v); jobs start in $HOME. The
    # nodes' default PATH has the PBS commands (here: the fakes, whose FAKE_* settings are
    # the server's configuration).
    env = {k: v for k, v in os.environ.items() if k.startswith("FAKE_")}
    env.update({
        "PATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), "pbs") + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/"),
        "PBS_O_WORKDIR": os.getcwd(),
        "PBS_O_HOME": os.environ.get("HOME", "/"),
    })
    env.update(extra_env)
    seq = new_job(
        d,
        "pbs",
        opts.get("-N", os.path.basename(script)),
        indices,
        int(throttle) if throttle else None,
        text,
        os.environ.get("HOME", "/"),
        env,
        deps,
        array,
        limit,
    )
    print(("%d[].%s" if array else "%d.%s") % (seq, SERVER))


def pbs_task_attrs(job, idx, t):
    a = {
        "Job_Name": job["name"],
        "job_state": {"queued": "Q", "running": "R", "ended": "X"}[t["state"]],
        "queue": "workq",
        "server": SERVER,
        "array_index": idx,
    }
    if t["state"] == "ended":
        if t.get("timed_out"):
            a["Exit_status"] = -29  # JOB_EXEC_KILL_WALLTIME
        elif t["signal"] is not None:
            a["Exit_status"] = 256 + t["signal"]
        elif t["rc"] is not None:
            a["Exit_status"] = t["rc"]
    return a


def qstat(args):
    d = state_dir()
    if "-f" not in args or "json" not in args:
        sys.stderr.write("fake qstat: only `qstat -f -F json [-x] [-t] IDS` is supported\n")
        sys.exit(2)
    subjobs = "-t" in args
    ids = [a for a in args if not a.startswith("-") and a != "json"]
    jobs = {}
    failed = False
    with Locked(d):
        for jid in ids:
            m = re.match(r"(\d+)", jid)
            job = find(d, int(m.group(1)), "pbs") if m else None
            if job is None:
                sys.stderr.write("qstat: Unknown Job Id %s\n" % jid)
                failed = True
                continue
            if not job["array"]:
                a = pbs_task_attrs(job, 0, job["tasks"]["0"])
                del a["array_index"]
                if a["job_state"] == "X":
                    a["job_state"] = "F"
                jobs["%d.%s" % (job["seq"], SERVER)] = a
                continue
            states = [t["state"] for t in job["tasks"].values()]
            parent = "F" if ended(job) else ("B" if "queued" not in states or "running" in states else "Q")
            jobs["%d[].%s" % (job["seq"], SERVER)] = {
                "Job_Name": job["name"],
                "job_state": parent,
                "queue": "workq",
                "server": SERVER,
                "array": "True",
                "array_indices_submitted": "%s-%s" % (min(map(int, job["tasks"])), max(map(int, job["tasks"]))),
            }
            if subjobs:
                for i in sorted(job["tasks"], key=int):
                    jobs["%d[%s].%s" % (job["seq"], i, SERVER)] = pbs_task_attrs(job, int(i), job["tasks"][i])
    if jobs:
        doc = {"timestamp": int(time.time()), "pbs_version": "2022.1.0", "pbs_server": SERVER, "Jobs": jobs}
        # qstat.1B's example: 4-space indents, no space after the colon.
        print(json.dumps(doc, indent=4, separators=(",", ":")))
    sys.exit(153 if failed else 0)


def kill_task(t):
    if t["state"] == "running" and t["pid"]:
        try:
            os.killpg(t["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    elif t["state"] == "queued":
        t["state"] = "ended"


def qdel(args):
    d = state_dir()
    rc = 0
    with Locked(d):
        for jid in args:
            m = re.match(r"(\d+)(?:\[(\d*)\])?", jid)
            job = find(d, int(m.group(1)), "pbs") if m else None
            if job is None:
                sys.stderr.write("qdel: Unknown Job Id %s\n" % jid)
                rc = 153
                continue
            if ended(job):
                sys.stderr.write("qdel: Job has finished %s\n" % jid)
                rc = 35
                continue
            keys = [m.group(2)] if m.group(2) else list(job["tasks"])
            for k in keys:
                if k in job["tasks"]:
                    kill_task(job["tasks"][k])
            if ended(job) and job["ended_at"] is None:
                job["ended_at"] = time.time()
            save(d, job)
    sys.exit(rc)


def qmgr(args):
    if os.environ.get("FAKE_LIMIT_UNREADABLE"):
        sys.stderr.write("qmgr: cannot connect to server %s (errno=15010)\n" % SERVER)
        sys.exit(1)
    if args[:2] != ["-c", "list server"] and args[:2] != ["-c", "print server"]:
        sys.stderr.write("fake qmgr: only -c 'list server' is supported\n")
        sys.exit(2)
    print("Server %s" % SERVER)
    print("    server_state = Active")
    print("    default_queue = workq")
    print("    max_array_size = %d" % pbs_limit())


# --- LSF -----------------------------------------------------------------------------------


def lsf_limit():
    return int(os.environ.get("FAKE_LSF_MAX_JOB_ARRAY_SIZE", "1000"))


def lsf_indices(spec):
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+)(?::(\d+))?)?\s*", part)
        if not m:
            return None
        a = int(m.group(1))
        b = int(m.group(2) or a)
        step = int(m.group(3) or 1)
        if a < 1 or b < a:
            return None
        out += range(a, b + 1, step)
    return out


def bsub(args):
    d = state_dir()
    # Every option used here takes a value; a word left over is a command, not supported.
    if len(args) % 2 or any(not a.startswith("-") for a in args[::2]):
        sys.stderr.write("fake bsub: give the script on standard input (bsub < script)\n")
        sys.exit(2)
    text = sys.stdin.read()
    words = directives(text, "#BSUB") + args
    opts = {}
    i = 0
    while i < len(words):
        w = words[i]
        if i + 1 < len(words):
            opts[w] = words[i + 1]
        i += 2
    name = opts.get("-J", "")
    m = re.fullmatch(r"([A-Za-z0-9._-]*)(?:\[([^\]]+)\](?:%(\d+))?)?", name)
    if not m:
        sys.stderr.write("fake bsub: bad job name %s\n" % name)
        sys.exit(2)
    array = m.group(2) is not None
    indices = lsf_indices(m.group(2)) if array else [0]
    if indices is None:
        sys.stderr.write("Bad job array index list. Job not submitted.\n")
        sys.exit(255)
    if array and (len(indices) > lsf_limit() or max(indices) > lsf_limit()):
        sys.stderr.write("Job array index too large. Job not submitted.\n")
        sys.exit(255)
    deps = [(k, int(n)) for k, n in re.findall(r"(done|ended)\((\d+)\)", opts.get("-w", ""))]
    limit = None
    if "-W" in opts:
        hours, _, minutes = opts["-W"].rpartition(":")
        # FAKE_LSF_MINUTE: how many seconds a run-limit minute lasts here (tests: 2).
        limit = (int(hours or 0) * 60 + int(minutes)) * float(os.environ.get("FAKE_LSF_MINUTE", "60"))
    # bsub passes the submission environment on; jobs start in -cwd or where bsub ran.
    seq = new_job(
        d,
        "lsf",
        m.group(1),
        indices,
        int(m.group(3)) if m.group(3) else None,
        text,
        opts.get("-cwd", os.getcwd()),
        dict(os.environ),
        deps,
        array,
        limit,
    )
    print("Job <%d> is submitted to default queue <normal>." % seq)


def lsf_record(job, idx, t):
    if t["state"] == "queued":
        stat, code = "PEND", ""
    elif t["state"] == "running":
        stat, code = "RUN", ""
    elif t["signal"] is not None:
        stat, code = "EXIT", str(128 + t["signal"])
    elif t["rc"]:
        stat, code = "EXIT", str(t["rc"])
    elif t["rc"] == 0:
        stat, code = "DONE", ""
    else:
        stat, code = "EXIT", ""  # killed while pending
    return {
        "JOBID": str(job["seq"]),
        "JOBINDEX": str(idx),
        "JOB_NAME": "%s[%d]" % (job["name"], idx),
        "STAT": stat,
        "EXIT_CODE": code,
        "EXIT_REASON": t["reason"],
    }


def bjobs(args):
    d = state_dir()
    fields = "jobid stat"
    json_out = False
    ids = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            fields = args[i + 1]
            i += 2
            continue
        if a == "-json":
            json_out = True
        elif not a.startswith("-"):
            ids.append(a)
        i += 1
    names = [f.split(":")[0].upper() for f in fields.split()]
    records = []
    failed = False
    with Locked(d):
        for jid in ids:
            m = re.fullmatch(r"(\d+)(?:\[(\d+)\])?", jid)
            job = find(d, int(m.group(1)), "lsf") if m else None
            if job is None:
                sys.stderr.write("Job <%s> is not found\n" % jid)
                failed = True
                continue
            for k in sorted(job["tasks"], key=int):
                t = job["tasks"][k]
                if (m.group(2) and m.group(2) != k) or (t["lost"] and t["state"] == "ended"):
                    continue  # a lost element is forgotten
                r = lsf_record(job, int(k), t)
                records.append({n: r.get(n, "") for n in names})
    if json_out:
        doc = {"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}
        # The reference's example: 2-space indents, no space after the colon.
        print(json.dumps(doc, indent=2, separators=(",", ":")))
    else:
        for r in records:
            print(" ".join(r[n] or "-" for n in names))
    sys.exit(255 if failed else 0)


def bkill(args):
    d = state_dir()
    rc = 0
    with Locked(d):
        for jid in args:
            m = re.fullmatch(r"(\d+)(?:\[([\d,\-]+)\])?", jid)
            job = find(d, int(m.group(1)), "lsf") if m else None
            if job is None:
                sys.stderr.write("Job <%s>: No matching job found\n" % jid)
                rc = 255
                continue
            if ended(job):
                sys.stderr.write("Job <%s>: Job has already finished\n" % jid)
                rc = 255
                continue
            keys = list(job["tasks"])
            if m.group(2):
                keys = [str(i) for i in lsf_indices(m.group(2)) or []]
            for k in keys:
                t = job["tasks"].get(k)
                if t and t["state"] != "ended":
                    t["reason"] = "TERM_OWNER: job killed by owner"
                    kill_task(t)
            if ended(job) and job["ended_at"] is None:
                job["ended_at"] = time.time()
            save(d, job)
            print("Job <%s> is being terminated" % jid)
    sys.exit(rc)


def bparams(args):
    if os.environ.get("FAKE_LIMIT_UNREADABLE"):
        sys.stderr.write("LSF is down. Please wait ...\n")
        sys.exit(255)
    print("Configuration parameters in lsb.params:\n")
    print("    DEFAULT_QUEUE = normal")
    print("    MBD_SLEEP_TIME = 10")
    print("    CLEAN_PERIOD = 3600")
    print("    MAX_JOB_ARRAY_SIZE = %d" % lsf_limit())


COMMANDS = {
    "qsub": qsub,
    "qstat": qstat,
    "qdel": qdel,
    "qmgr": qmgr,
    "bsub": bsub,
    "bjobs": bjobs,
    "bkill": bkill,
    "bparams": bparams,
}


def main():
    if sys.argv[1] == "--run":
        run_array(sys.argv[2], int(sys.argv[3]))
        return
    name, args = sys.argv[1], sys.argv[2:]
    log_call(name, args)
    COMMANDS[name](args)


if __name__ == "__main__":
    main()
