"""``poolparty.Pool`` on the local backend: results, pickling, failures, lifecycle."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy
import pytest

import poolparty
import ppfuncs

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIAL = [[3, 4, 56, 7], [22, 5, 4, 5, 7], [11, 2, 545, 235, 6, 3], [22, 45, 6, 4]]


def map_dirs(work_dir):
    return sorted(glob.glob(os.path.join(work_dir, "map-*")))


def test_the_tutorial_numpy_std_equals_the_loop(work_dir):
    jobs = [numpy.array(j) for j in TUTORIAL]
    with poolparty.Pool(work_dir=work_dir) as pool:
        results = pool.map(numpy.std, jobs)
    expected = [numpy.std(j) for j in jobs]
    assert results == expected
    assert [repr(r) for r in results] == [repr(e) for e in expected]
    # One workflow, its manifest kept, and `poolparty results` on it gives the same numbers.
    (d,) = map_dirs(work_dir)
    assert os.path.getsize(os.path.join(d, "func.pkl")) < 100, "numpy.std goes by name"
    out = subprocess.run([poolparty.find_poolparty_bin(), "status", d], capture_output=True)
    assert out.returncode == 0, out.stderr


def test_the_telescope_tutorial_returns_its_return_codes(work_dir, tmp_path):
    example = os.path.join(HERE, "..", "..", "examples", "telescope")
    root = str(tmp_path / "tut")
    subprocess.run([sys.executable, os.path.join(example, "init.py"), "--root", root,
                    "--num-runs", "8", "--seed", "42"], check=True)
    lines = subprocess.run([sys.executable, os.path.join(example, "make_jobs.py"), "--root", root],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    jobs = [json.loads(line) for line in lines]
    assert len(jobs) == 8
    with poolparty.Pool(4, work_dir=work_dir) as pool:
        results = pool.map(ppfuncs.telescope_job, jobs)
    assert [rc for rc, _ in results] == [0] * 8, results
    assert [r["id"] for _, r in results] == [j["id"] for j in jobs]
    assert results == [ppfuncs.telescope_job(j) for j in jobs]


def test_lambdas_closures_and_custom_classes(work_dir):
    offset = 10
    with poolparty.Pool(work_dir=work_dir) as pool:
        assert pool.map(lambda x: x * 2, range(7)) == [x * 2 for x in range(7)]
        assert pool.map(lambda x: x + offset, [1, 2]) == [11, 12]
        assert pool.map(ppfuncs.make_point, [1, 2]) == [ppfuncs.Point(1, -1), ppfuncs.Point(2, -2)]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.apply(divmod, (17, 5)) == (3, 2)
        assert pool.apply(int, ("ff",), {"base": 16}) == 255


def test_functions_from_main_work_from_a_script(work_dir, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, poolparty

        class Box:
            def __init__(self, v):
                self.v = v

        def cube(x):
            return Box(x ** 3)

        if __name__ == "__main__":
            with poolparty.Pool(work_dir={work_dir!r}) as pool:
                boxes = pool.map(cube, range(5))
            print(json.dumps([b.v for b in boxes]))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [0, 1, 8, 27, 64]


def test_a_raising_function_raises_job_error_with_the_remote_traceback(work_dir):
    with poolparty.Pool(work_dir=work_dir) as pool:
        with pytest.raises(poolparty.JobError) as info:
            pool.map(ppfuncs.fail_on_three, [1, 3, 5, 3], chunksize=1)
        err = info.value
        assert err.index == 1 and err.item == 3
        assert err.exc_type == "builtins.ValueError"
        assert err.message == "no threes here: 3"
        assert 'raise ValueError(f"no threes here: {x}")' in err.remote_traceback
        assert isinstance(err.__cause__, ValueError)
        assert err.others == 1
        assert "job 1 (item 3) raised builtins.ValueError: no threes here: 3" in str(err)
        assert "1 other item failed too" in str(err)


def test_return_exceptions_puts_the_original_exception_with_the_job_error_as_cause(work_dir):
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def raise_unpicklable(x):
        if x == 2:
            raise Unpicklable("local class")
        return x

    with poolparty.Pool(work_dir=work_dir) as pool:
        got = pool.map(ppfuncs.fail_on_three, [1, 3, 5], chunksize=1, return_exceptions=True)
        assert got[0] == 1 and got[2] == 5
        # As asyncio.gather: the exception the call raised, of its own type.
        assert type(got[1]) is ValueError and str(got[1]) == "no threes here: 3"
        # As multiprocessing chains the remote traceback: the JobError is its cause.
        cause = got[1].__cause__
        assert isinstance(cause, poolparty.JobError) and cause.index == 1 and cause.item == 3
        assert 'raise ValueError(f"no threes here: {x}")' in cause.remote_traceback
        assert cause.__cause__ is None
        # In one chunk, the failing item takes its place and the others keep their values.
        got = pool.map(ppfuncs.fail_on_three, range(6), chunksize=6, return_exceptions=True)
        assert [type(g) for g in got].count(ValueError) == 1 and got[:3] == [0, 1, 2]
        assert got[4:] == [4, 5]
        # An exception that does not pickle: the JobError, with its type and message as text.
        got = pool.map(raise_unpicklable, [1, 2], chunksize=1, return_exceptions=True)
        assert got[0] == 1 and isinstance(got[1], poolparty.JobError)
        assert got[1].exc_type.endswith("Unpicklable") and got[1].message == "local class"
        assert got[1].__cause__ is None
        assert None not in got
        got = pool.starmap(ppfuncs.sleep_then, [(1, 0), (2, "x")], chunksize=1,
                           return_exceptions=True)
        assert got[0] == 1 and type(got[1]) is TypeError
        async_got = pool.map_async(ppfuncs.fail_on_three, [3], return_exceptions=True).get(300)
        assert type(async_got[0]) is ValueError


def test_a_killed_job_raises_with_its_outcome(work_dir):
    with poolparty.Pool(work_dir=work_dir) as pool:
        got = pool.map(ppfuncs.kill_self, [0, 1, 2], chunksize=1, return_exceptions=True)
        assert got[0] == 0 and got[2] == 2
        err = got[1]
        assert isinstance(err, poolparty.JobError)
        assert err.outcome == "signaled" and err.exit_code == 137
        assert "without a result" in str(err)
        # A chunk is one job: a killed chunk fails each of its items, none is a silent None.
        got = pool.map(ppfuncs.kill_self, [0, 1, 2], chunksize=3, return_exceptions=True)
        assert all(isinstance(g, poolparty.JobError) and g.outcome == "signaled" for g in got)
        assert [g.index for g in got] == [0, 1, 2]


def test_a_job_over_its_time_limit_raises_timed_out(work_dir):
    with poolparty.Pool(work_dir=work_dir, time="2s") as pool:
        got = pool.map(ppfuncs.sleep_then_star, [(0, 0.0), (1, 600.0)], chunksize=1,
                       return_exceptions=True)
        assert got[0] == 0
        assert isinstance(got[1], poolparty.JobError) and got[1].outcome == "timed_out", got
        with pytest.raises(poolparty.JobError, match=r"job 1 \(item \(1, 600.0\)\) raised timed_out"):
            pool.map(ppfuncs.sleep_then_star, [(0, 0.0), (1, 600.0)], chunksize=1)


def test_progress_only_when_asked_or_on_a_terminal(work_dir, capfd):
    with poolparty.Pool(work_dir=work_dir) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
    assert capfd.readouterr().err == "", "stderr is not a terminal: nothing printed"
    # progress=True where stderr is no terminal (Jupyter): the runner's lines are copied.
    with poolparty.Pool(work_dir=work_dir, progress=True) as pool:
        assert pool.map(abs, [-3, -4]) == [3, 4]
    err = capfd.readouterr().err
    assert "stage `map`: started, 2 jobs (local)" in err, err
    assert "every job succeeded (2 jobs in 1 stage; exit code 0)" in err, err


def test_the_map_folder_works_with_the_cli(work_dir, tmp_path):
    with poolparty.Pool(2, work_dir=work_dir) as pool:
        assert pool.map(ppfuncs.square, range(16)) == [x * x for x in range(16)]
    (d,) = map_dirs(work_dir)
    binary = poolparty.find_poolparty_bin()
    manifest = os.path.join(d, "poolparty.toml")
    results = subprocess.run([binary, "results", manifest, "--format", "jsonl"],
                             capture_output=True, text=True)
    assert results.returncode == 0, results.stderr
    assert [json.loads(line)["outcome"] for line in results.stdout.splitlines()] == ["succeeded"] * 8
    bundle = str(tmp_path / "bundle")
    plan = subprocess.run([binary, "plan", manifest, "--out", bundle], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert os.path.isdir(os.path.join(bundle, "map"))
    cancel = subprocess.run([binary, "cancel", manifest], capture_output=True, text=True)
    assert cancel.returncode == 0, cancel.stderr


def test_ten_thousand_items_with_chunksize(work_dir):
    n = 10_000
    with poolparty.Pool(2, work_dir=work_dir) as pool:
        assert pool.map(ppfuncs.square, range(n), chunksize=100) == [x * x for x in range(n)]
    (d,) = map_dirs(work_dir)
    with open(os.path.join(d, "jobs.jsonl")) as f:
        assert sum(1 for _ in f) == 100
    # The items went into one file; the state holds O(jobs) files, not O(items).
    files = sum(len(fs) for _, _, fs in os.walk(d))
    assert files < 100, files


def test_imap_yields_in_order_as_results_arrive(work_dir):
    seconds = [3.0, 0.0, 0.0, 0.0]
    with poolparty.Pool(4, work_dir=work_dir, chunksize=1) as pool:
        assert list(pool.imap(ppfuncs.square, range(6))) == [x * x for x in range(6)]
        got = list(pool.imap(ppfuncs.sleep_then_star, zip(range(4), seconds)))
        assert got == [0, 1, 2, 3]
        assert pool.starmap(ppfuncs.sleep_then, zip(range(4), seconds)) == [0, 1, 2, 3]
        # A failed item raises its JobError where it stands, after the items before it.
        it = pool.imap(ppfuncs.fail_on_three, [1, 2, 3, 4])
        assert [next(it), next(it)] == [1, 2]
        with pytest.raises(poolparty.JobError, match=r"job 2 \(item 3\) raised builtins.ValueError"):
            next(it)


def test_imap_unordered_yields_fast_items_first(work_dir):
    with poolparty.Pool(3, work_dir=work_dir, chunksize=1) as pool:
        got = list(pool.imap_unordered(ppfuncs.sleep_then_star, [(0, 4.0), (1, 0.0), (2, 0.0)]))
    assert sorted(got) == [0, 1, 2]
    assert got[-1] == 0


def test_map_async_get_ready_wait(work_dir):
    with poolparty.Pool(work_dir=work_dir) as pool:
        result = pool.map_async(ppfuncs.square, range(4))
        result.wait(120)
        assert result.ready() and result.successful()
        assert result.get(1) == [0, 1, 4, 9]
        slow = pool.map_async(ppfuncs.sleep_then_star, [(1, 3.0)])
        with pytest.raises(TimeoutError):
            slow.get(0.1)
        assert slow.get(120) == [1]
        pool.close()
        pool.join()


def test_empty_map_returns_at_once(work_dir):
    with poolparty.Pool(work_dir=work_dir) as pool:
        assert pool.map(abs, []) == []
        assert list(pool.imap(abs, [])) == []
        assert pool.map_async(abs, []).get(1) == []
    assert not os.path.exists(work_dir)


def test_an_unpicklable_function_is_refused_before_anything_is_submitted(work_dir):
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with poolparty.Pool(work_dir=work_dir) as pool:
        with pytest.raises(poolparty.PicklingError, match="uses_lock.*cannot pickle '_thread.lock'"):
            pool.map(uses_lock, [1, 2])
        with pytest.raises(poolparty.PicklingError, match=r"item 1 \(<unlocked _thread.lock"):
            pool.map(abs, [1, threading.Lock()])
    assert map_dirs(work_dir) == []


def test_a_function_a_fresh_interpreter_cannot_load_is_refused(work_dir):
    import types

    mod = types.ModuleType("made_up_module")
    exec("def f(x):\n    return x\n", mod.__dict__)
    sys.modules["made_up_module"] = mod
    try:
        with poolparty.Pool(work_dir=work_dir) as pool:
            with pytest.raises(poolparty.PicklingError,
                               match="made_up_module.f` pickles here, but a fresh .* cannot load it"):
                pool.map(mod.f, [1])
    finally:
        del sys.modules["made_up_module"]
    (d,) = map_dirs(work_dir)
    assert not os.path.exists(os.path.join(d, "state")), "nothing was run"


def _pythonpath(first):
    return os.pathsep.join(p for p in (str(first), os.environ.get("PYTHONPATH")) if p)


def test_a_version_mismatch_names_both_versions(work_dir, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 99, 0, 'final', 0)\n")
    with poolparty.Pool(work_dir=work_dir, env={"PYTHONPATH": _pythonpath(fake)}) as pool:
        with pytest.raises(poolparty.VersionMismatchError) as info:
            pool.map(lambda x: x, [1])
    text = str(info.value)
    import platform

    assert f"Python {platform.python_version()}" in text and "Python 3.99.0" in text
    assert "the Python version differs" in text
    with poolparty.Pool(work_dir=work_dir, env={"PYTHONPATH": _pythonpath(fake)}) as pool:
        with pytest.raises(poolparty.VersionMismatchError,
                           match=r"the caller has Python 3\.\d+\.\d+, the jobs' interpreter has Python 3\.99\.0;"):
            pool.map(abs, [1])
    assert map_dirs(work_dir) and not glob.glob(os.path.join(work_dir, "map-*", "state")), "nothing ran"


def test_a_cloudpickle_mismatch_names_both_versions_when_something_goes_by_value(work_dir, tmp_path):
    import cloudpickle

    old = tmp_path / "old"
    (old / "cloudpickle").mkdir(parents=True)
    (old / "cloudpickle" / "__init__.py").write_text("__version__ = '0.0.1'\n")
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "cloudpickle.py").write_text("raise ImportError('not installed here')\n")
    with poolparty.Pool(work_dir=work_dir, env={"PYTHONPATH": _pythonpath(old)}) as pool:
        with pytest.raises(poolparty.VersionMismatchError) as info:
            pool.map(lambda x: x, [1])
        text = str(info.value)
        assert "the cloudpickle version differs" in text
        assert f"cloudpickle {cloudpickle.__version__}" in text and "cloudpickle 0.0.1" in text
        # A function that goes by name needs no cloudpickle on the nodes.
        assert pool.map(abs, [-1]) == [1]
    with poolparty.Pool(work_dir=work_dir, env={"PYTHONPATH": _pythonpath(missing)}) as pool:
        with pytest.raises(poolparty.VersionMismatchError, match="has Python .* with no cloudpickle"):
            pool.map(lambda x: x, [2])
        assert pool.map(abs, [-2]) == [2]


def test_a_result_over_result_max_bytes_comes_back_from_its_file(work_dir):
    with poolparty.Pool(work_dir=work_dir, result_max_bytes=1000) as pool:
        got = pool.map(bytes, [5000, 10])
    assert got == [bytes(5000), bytes(10)]


def test_bad_settings_are_a_runner_error(work_dir):
    with poolparty.Pool(work_dir=work_dir, tiem="1h") as pool:
        with pytest.raises(poolparty.RunnerError, match="exited with code 2"):
            pool.map(abs, [1])


def test_terminate_stops_the_running_jobs(work_dir, tmp_path):
    folder = str(tmp_path / "runs")
    pool = poolparty.Pool(2, work_dir=work_dir)
    result = pool.map_async(ppfuncs.record_star, [(x, folder, 600) for x in range(4)], chunksize=1)
    deadline = time.monotonic() + 120
    while len(glob.glob(os.path.join(folder, "*"))) < 2:
        assert time.monotonic() < deadline, "the jobs did not start"
        time.sleep(0.2)
    started = time.monotonic()
    pool.terminate()
    with pytest.raises(poolparty.RunnerError, match="terminated"):
        result.get(120)
    assert time.monotonic() - started < 60
    for path in glob.glob(os.path.join(folder, "*")):
        pid = int(open(path).read())
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(abs, [1])


REATTACH = """
import json, sys
sys.path.insert(0, {here!r})
import poolparty, ppfuncs
with poolparty.Pool(2, work_dir={work_dir!r}, chunksize=1) as pool:
    print(json.dumps(pool.starmap(ppfuncs.record, [(x, {folder!r}, 1.0) for x in range({n})])))
"""


def test_the_same_map_reattaches_after_the_python_process_is_killed(work_dir, tmp_path):
    n = 12
    folder = str(tmp_path / "runs")
    script = tmp_path / "reattach.py"
    script.write_text(REATTACH.format(here=HERE, work_dir=work_dir, folder=folder, n=n))
    first = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(os.listdir(folder) if os.path.isdir(folder) else []) < 3:
        assert time.monotonic() < deadline, "the first map did not start"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == [x * x for x in range(n)]
    runs = sorted(int(name.split("-")[0]) for name in os.listdir(folder))
    assert runs == list(range(n)), "every item ran exactly once"
    assert len(map_dirs(work_dir)) == 1


def test_auto_says_which_backend_it_chose(work_dir, monkeypatch, capsys):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    pool = poolparty.Pool(backend="auto", work_dir=work_dir)
    assert pool.backend == "local"
    assert "backend=auto chose `local`" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown backend 'slrum'"):
        poolparty.Pool(backend="slrum")


def test_auto_tells_pbs_from_grid_engine():
    from poolparty._pool import _auto_backend

    def on_path(*names):
        return lambda n: f"/usr/bin/{n}" if n in names else None

    assert _auto_backend(on_path("sbatch", "qsub", "bsub")) == "slurm"
    assert _auto_backend(on_path("bsub", "bjobs")) == "lsf"
    # Both have qsub and qstat; only PBS has pbsnodes, only Grid Engine qconf.
    assert _auto_backend(on_path("qsub", "qstat", "pbsnodes")) == "pbs"
    assert _auto_backend(on_path("qsub", "qstat", "qconf")) == "sge"
    assert _auto_backend(on_path("qsub", "qstat")) == "sge"
    assert _auto_backend(on_path()) == "local"


def test_env_and_setup_lines_reach_the_jobs(work_dir, tmp_path):
    marker = tmp_path / "setup-ran"
    with poolparty.Pool(work_dir=work_dir, env={"PP_TEST_VALUE": "42 {{x}}"},
                        setup=[f"touch {marker}"]) as pool:
        assert pool.map(ppfuncs.getenv, ["PP_TEST_VALUE"]) == ["42 {{x}}"]
    assert marker.exists()
    (d,) = map_dirs(work_dir)
    with open(os.path.join(d, "poolparty.toml")) as f:
        manifest = f.read()
    assert "[stages.map]" in manifest and "PP_TEST_VALUE" in manifest


def test_default_chunks_multiprocessing_locally_and_auto_bundling_on_clusters(work_dir):
    from poolparty import _pool

    def planned(pool, n, chunksize=None):
        m = _pool._Map(pool, abs, list(range(n)), "map", chunksize)
        with open(m.manifest) as f:
            manifest = f.read()
        with open(os.path.join(m.dir, "jobs.jsonl")) as f:
            jobs = sum(1 for _ in f)
        return jobs, 'bundle = "auto"' in manifest

    # Locally, multiprocessing's rule: about 4 jobs per worker.
    assert planned(poolparty.Pool(2, work_dir=work_dir), 10_000) == (8, False)
    assert planned(poolparty.Pool(2, work_dir=work_dir), 9) == (5, False)
    # On a cluster nothing is submitted here; one job per item, bundled by the runner...
    slurm = poolparty.Pool(backend="slurm", work_dir=work_dir)
    assert planned(slurm, 300) == (300, True)
    # ...unless a chunksize (here 1: one array task per item) or a bundle is asked for.
    assert planned(slurm, 300, chunksize=1) == (300, False)
    assert planned(poolparty.Pool(backend="sge", work_dir=work_dir, chunksize=10), 300) == (30, False)
    assert planned(poolparty.Pool(backend="slurm", work_dir=work_dir, bundle=20), 300) == (300, False)
    assert len(map_dirs(work_dir)) == 6, "each choice is its own map"
