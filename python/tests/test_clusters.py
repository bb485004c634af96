"""``poolparty.Pool`` on the real single-node Slurm and Grid Engine clusters."""

import glob
import os
import subprocess
import threading
import time

import numpy
import pytest

import poolparty
import ppfuncs
from conftest import FAST
from test_local import TUTORIAL


@pytest.mark.parametrize("backend", ["slurm", "sge"])
def test_the_tutorial_on_a_cluster_equals_the_loop(backend, request, work_dir):
    request.getfixturevalue(backend)
    jobs = [numpy.array(j) for j in TUTORIAL]
    with poolparty.Pool(backend=backend, work_dir=work_dir, **FAST) as pool:
        results = pool.map(numpy.std, jobs)
        assert [repr(r) for r in results] == [repr(numpy.std(j)) for j in jobs]
        # 30 items: more than the test cluster's MaxArraySize (11), so several arrays.
        assert pool.map(lambda x: -x, range(30)) == [-x for x in range(30)]
        got = pool.map(ppfuncs.fail_on_three, range(5), return_exceptions=True)
        assert type(got[3]) is ValueError and isinstance(got[3].__cause__, poolparty.JobError)
        assert got[3].__cause__.index == 3
        assert [g for i, g in enumerate(got) if i != 3] == [0, 1, 2, 4]
        # No chunksize on a cluster: one job per item, bundled by the runner (`bundle = "auto"`).
        (folder,) = [d for d in glob.glob(os.path.join(work_dir, "map-*"))
                     if "fail_on_three" in open(os.path.join(d, "header.json")).read()]
        assert 'bundle = "auto"' in open(os.path.join(folder, "poolparty.toml")).read()


def _running(prefix):
    """Job ids (``ARRAY_TASK``) of the running Slurm tasks whose name starts with ``prefix``."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%j"], capture_output=True,
                         text=True).stdout
    return [line.split("|")[0] for line in out.splitlines()
            if "|" in line and line.split("|")[1].startswith(prefix)]


def _map_prefix(work_dir, deadline):
    while True:
        names = [n for n in os.listdir(work_dir) if n.startswith("map-")] if os.path.isdir(work_dir) else []
        if names:
            return f"pp-{names[0]}-"
        assert time.monotonic() < deadline, "no map folder"
        time.sleep(0.2)


def test_a_task_cancelled_from_outside_is_a_job_error(slurm, work_dir, tmp_path):
    folder = str(tmp_path / "runs")
    never = str(tmp_path / "never")
    with poolparty.Pool(backend="slurm", work_dir=work_dir, resubmit_lost=0, lost_grace="2s",
                        **FAST) as pool:
        items = [(x, never, folder) for x in range(3)]
        result = pool.map_async(ppfuncs.wait_for_file_star, items, return_exceptions=True)
        deadline = time.monotonic() + 900
        prefix = _map_prefix(work_dir, deadline)
        # Items 0 and 2 return at once; item 1 waits for a file that never comes. Once it is the
        # map's only running task, cancel it from outside.
        while True:
            assert time.monotonic() < deadline, "the waiting task never ran alone"
            started = {name.split("-")[0] for name in os.listdir(folder)} if os.path.isdir(folder) else set()
            running = _running(prefix)
            if started == {"0", "1", "2"} and len(running) == 1:
                subprocess.run(["scancel", *running], check=True)
                break
            time.sleep(0.5)
        got = result.get(300)
    assert got[0] == 0 and got[2] == 2, got
    err = got[1]
    assert isinstance(err, poolparty.JobError), got
    assert err.index == 1
    assert err.outcome in ("lost", "signaled", "failed", "interrupted"), err.outcome
    assert "without a result" in str(err)


def test_terminate_cancels_the_cluster_jobs(slurm, work_dir, tmp_path):
    folder = str(tmp_path / "runs")
    never = str(tmp_path / "never")
    pool = poolparty.Pool(backend="slurm", work_dir=work_dir, **FAST)
    result = pool.map_async(ppfuncs.wait_for_file_star, [(1, never, folder), (1, never, folder + "2")])
    deadline = time.monotonic() + 900
    try:
        prefix = _map_prefix(work_dir, deadline)
        while not glob.glob(os.path.join(folder, "1-*")):
            assert time.monotonic() < deadline, "the task never ran"
            time.sleep(0.5)
    finally:
        pool.terminate()
    with pytest.raises(poolparty.RunnerError, match="terminated"):
        result.get(120)
    # scancel was sent; the tasks leave the queue (give a slow controller time).
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
        left = [n for n in out.split() if n.startswith(prefix)]
        if not left:
            break
        assert time.monotonic() < deadline, f"still queued after terminate: {left}"
        time.sleep(1)


REATTACH = """
import json, sys
sys.path.insert(0, {here!r})
import poolparty, ppfuncs
with poolparty.Pool(backend="slurm", work_dir={work_dir!r}, chunksize=1, poll_interval="1s",
                    poll_max="2s") as pool:
    print(json.dumps(pool.starmap(ppfuncs.record, [(x, {folder!r}, 3.0) for x in range({n})])))
"""


def test_the_same_map_adopts_the_cluster_jobs_after_python_and_runner_are_killed(slurm, work_dir,
                                                                                 tmp_path):
    import json
    import signal
    import sys

    n = 6
    folder = str(tmp_path / "runs")
    script = tmp_path / "reattach.py"
    script.write_text(REATTACH.format(here=os.path.dirname(os.path.abspath(__file__)),
                                      work_dir=work_dir, folder=folder, n=n))
    first = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 900
    while not (os.path.isdir(folder) and os.listdir(folder)):
        if time.monotonic() > deadline:
            first.kill()
            pytest.fail("the first map did not start (is the cluster busy?)")
        time.sleep(0.2)
    # The login node's session dies: the interpreter and the runner, both with SIGKILL.
    (lock,) = glob.glob(os.path.join(work_dir, "map-*", "state", "map-*", ".lock"))
    with open(lock) as f:
        runner = json.load(f)["pid"]
    first.send_signal(signal.SIGKILL)
    os.kill(runner, signal.SIGKILL)
    first.wait()
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == [x * x for x in range(n)]
    runs = sorted(int(name.split("-")[0]) for name in os.listdir(folder))
    assert runs == list(range(n)), "every item ran exactly once"
