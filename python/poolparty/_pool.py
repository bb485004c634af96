"""``Pool``: each map is one poolparty workflow in ``work_dir``, run by the ``poolparty`` binary.

One map writes, in ``work_dir/map-<hash>/``: ``poolparty.toml`` (the generated manifest, kept),
``header.json``, ``func.pkl``, ``items.bin`` + ``items.idx`` (every item once, in one file) and
``jobs.jsonl`` (one job per chunk of ``chunksize`` items). It runs ``poolparty run --wait`` on
it and reads ``poolparty results --format jsonl``. The folder's name is a hash of the function,
the items and the settings, so the same map called again (after the interpreter died) finds
the same workflow and the runner's resume and adoption re-attach to what already ran.
"""

import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from . import _serialize, _toml
from ._binary import find_poolparty_bin
from ._errors import JobError, PicklingError, RunnerError, VersionMismatchError

_BACKENDS = ("local", "slurm", "sge", "pbs", "lsf", "auto")


def _auto_backend(which=shutil.which):
    """The cluster whose commands are on PATH: Slurm (``sbatch``), LSF (``bsub``), PBS
    (``qsub`` with ``pbsnodes``), Grid Engine (``qsub`` without it); else local. PBS and Grid
    Engine both have ``qsub`` and ``qstat``: only PBS has ``pbsnodes``."""
    if which("sbatch"):
        return "slurm"
    if which("bsub"):
        return "lsf"
    if which("qsub"):
        return "pbs" if which("pbsnodes") and not which("qconf") else "sge"
    return "local"
_STAGE = "map"


def _name_of(obj):
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    if name and module:
        return f"{module}.{name}"
    return repr(obj)


def _short(obj, limit=80):
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _Map:
    """One prepared map: its folder, items and chunks, and the runner processes started on it."""

    def __init__(self, pool, func, items, mode, chunksize):
        self.pool = pool
        self.items = items
        self.n = len(items)
        self.mode = mode
        try:
            func_bytes, func_by_value = _serialize.dumps(func)
        except Exception as exc:
            raise PicklingError(
                f"cannot pickle the function `{_name_of(func)}` to send it to the nodes: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        pickles = []
        by_value = func_by_value
        for i, item in enumerate(items):
            try:
                data, bv = _serialize.dumps(item)
            except Exception as exc:
                raise PicklingError(
                    f"cannot pickle item {i} ({_short(item)}) to send it to the nodes: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            by_value = by_value or bv
            pickles.append(data)
        self.func_name = _name_of(func)
        explicit = chunksize or pool.chunksize
        self.chunksize = max(1, int(explicit or pool._default_chunksize(self.n)))
        # A cluster map without a chunksize: one job per item, packed into array tasks by the
        # runner's automatic bundling (`bundle = "auto"`), unless `bundle` is set.
        self.auto_bundle = pool.backend != "local" and not explicit and "bundle" not in pool.settings
        self.chunks = [(s, min(s + self.chunksize, self.n)) for s in range(0, self.n, self.chunksize)]

        digest = hashlib.sha256()
        for part in (func_bytes, mode.encode(), str(self.chunksize).encode(),
                     str(self.auto_bundle).encode(), pool._fingerprint()):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
        for data in pickles:
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        self.name = "map-" + digest.hexdigest()[:16]
        self.dir = os.path.join(pool.work_dir, self.name)
        self.manifest = os.path.join(self.dir, "poolparty.toml")
        self.state = os.path.join(self.dir, "state", self.name)
        self.procs = []
        self.copier = None
        if not os.path.exists(self.manifest):
            self._write(func_bytes, by_value, pickles)

    def _write(self, func_bytes, by_value, pickles):
        os.makedirs(self.pool.work_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{self.name}-", dir=self.pool.work_dir)
        os.chmod(tmp, 0o755)
        header = {
            "versions": _serialize.versions(by_value),
            "by_value": by_value,
            "mode": self.mode,
            "function": self.func_name,
            "items": self.n,
            "chunksize": self.chunksize,
            "sys_path": list(sys.path),
            "cwd": os.getcwd(),
        }
        with open(os.path.join(tmp, "header.json"), "w", encoding="utf-8") as f:
            json.dump(header, f, indent=1)
        # What the jobs read: a pickle loads without importing `json` (and `re`) in every job.
        with open(os.path.join(tmp, "header.pkl"), "wb") as f:
            f.write(_serialize.plain_dumps(header))
        with open(os.path.join(tmp, "func.pkl"), "wb") as f:
            f.write(func_bytes)
        offsets = [0]
        with open(os.path.join(tmp, "items.bin"), "wb") as f:
            for data in pickles:
                f.write(data)
                offsets.append(offsets[-1] + len(data))
        with open(os.path.join(tmp, "items.idx"), "wb") as f:
            f.write(struct.pack(f"<{len(offsets)}Q", *offsets))
        with open(os.path.join(tmp, "jobs.jsonl"), "w", encoding="utf-8") as f:
            for k, (s, e) in enumerate(self.chunks):
                f.write(f'{{"id":{k},"start":{s},"stop":{e}}}\n')
        with open(os.path.join(tmp, "poolparty.toml"), "w", encoding="utf-8") as f:
            f.write(self.pool._manifest(self.name, self.dir, self.auto_bundle))
        try:
            os.rename(tmp, self.dir)
        except OSError:
            # Another process wrote the same map first (same hash, same content).
            shutil.rmtree(tmp, ignore_errors=True)

    def check(self):
        """Loads the function in a fresh interpreter (the nodes' `python`) before submitting."""
        out = subprocess.run(
            [self.pool.python, "-m", "poolparty._worker", "--check", self.dir],
            env=self.pool._job_env(),
            capture_output=True,
            text=True,
        )
        kind, _, detail = out.stdout.partition(": ")
        if out.returncode == 0 and out.stdout.strip() == "ok":
            return
        if out.returncode == 1 and kind == "mismatch":
            raise VersionMismatchError(detail.strip())
        if out.returncode == 1 and kind == "error":
            error = detail.strip().splitlines()[0]
        else:
            error = f"exit code {out.returncode}: {(out.stdout + out.stderr).strip()[-2000:]}"
        raise PicklingError(
            f"the function `{self.func_name}` pickles here, but a fresh `{self.pool.python}` "
            f"cannot load it: {error} (define it in an importable module, or in "
            f"__main__ to send it by value)"
        )

    def start(self):
        """Starts `poolparty run --wait` on this map (a new session: it outlives us)."""
        args = [self.pool.binary, "run", self.manifest, "--wait"]
        progress = self.pool._progress()
        pipe_progress = False
        self.err_path = None
        if progress:
            if sys.stderr.isatty():
                stdout, stderr = subprocess.DEVNULL, None
            else:
                stdout, stderr, pipe_progress = subprocess.DEVNULL, subprocess.PIPE, True
                args += ["--color", "never"]
        else:
            self.err_path = os.path.join(self.dir, f"runner-{os.getpid()}.err")
            stdout = subprocess.DEVNULL
            stderr = open(self.err_path, "wb")
            args += ["--color", "never"]
        proc = subprocess.Popen(
            args,
            stdout=stdout,
            stderr=stderr,
            env=self.pool._job_env(),
            start_new_session=True,
        )
        if stderr not in (None, subprocess.PIPE):
            stderr.close()
        if pipe_progress:
            # Jupyter and other non-terminals: copy the runner's lines to sys.stderr.
            def copy(stream=proc.stderr):
                for line in iter(stream.readline, b""):
                    sys.stderr.write(line.decode("utf-8", "replace"))
                stream.close()

            self.copier = threading.Thread(target=copy, daemon=True)
            self.copier.start()
        self.procs.append(proc)
        self.pool._live.add(proc)
        return proc

    def wait(self, proc, timeout=None):
        try:
            rc = proc.wait(timeout)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            self.pool._live.discard(proc)
            raise
        self.pool._live.discard(proc)
        if self.copier is not None:
            self.copier.join(5)
        return rc

    def runner_failure(self, rc):
        if self.pool._terminated:
            return RunnerError(f"the map was terminated (poolparty exit code {rc}); state: {self.dir}")
        detail = _tail(self.err_path) if self.err_path else "(see the output above)"
        return RunnerError(f"`poolparty run {self.manifest}` exited with code {rc}:\n{detail}")

    def read_results(self):
        """``{job index: (outcome, exit_code, envelopes or None)}`` for every job listed."""
        out = subprocess.run(
            [self.pool.binary, "results", self.manifest, "--stage", _STAGE, "--format", "jsonl",
             "--allow-missing", "--color", "never"],
            capture_output=True,
        )
        rows = {}
        for line in out.stdout.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            rows[row["index"]] = (row["outcome"], row["exit_code"], self._envelopes(row["result"]))
        return rows

    @staticmethod
    def _envelopes(result):
        if not isinstance(result, dict):
            return None
        if "$base64" in result:
            data = base64.b64decode(result["$base64"])
        elif "$file" in result:
            with open(result["$file"], "rb") as f:
                data = f.read()
        else:
            return None
        try:
            return _serialize.loads(data)
        except Exception:  # noqa: BLE001 - a truncated or foreign result counts as none
            return None

    def chunk_values(self, k, row, final):
        """The ``(index, value_or_error)`` pairs of job ``k``, or None while it is pending."""
        outcome, code, envelopes = row if row else ("not_run", None, None)
        start, stop = self.chunks[k]
        if envelopes and envelopes[0][0] == "mismatch":
            raise VersionMismatchError(envelopes[0][1])
        if envelopes is not None and len(envelopes) == stop - start and (
            outcome == "succeeded" or final
        ):
            return [(start + i, self._value(start + i, env, outcome, code)) for i, env in enumerate(envelopes)]
        if not final:
            return None
        log = os.path.join(self.state, _STAGE, "logs", f"{k}.err")
        log = log if os.path.exists(log) else None
        message = f"job {k} of `{self.name}` ended `{outcome}`"
        if code is not None:
            message += f" (exit code {code})"
        message += " without a result"
        if log:
            message += ":\n" + _tail(log, 10)
        return [
            (i, JobError(i, self.items[i], outcome, message, outcome=outcome, exit_code=code,
                         log=log, workflow=self.dir))
            for i in range(start, stop)
        ]

    def _value(self, index, env, outcome, code):
        if env[0] == "ok":
            return _serialize.loads(env[1])
        _, exc_bytes, exc_type, message, tb = env
        err = JobError(index, self.items[index], exc_type, message, tb, outcome=outcome,
                       exit_code=code, workflow=self.dir)
        if exc_bytes is not None:
            try:
                err.__cause__ = _serialize.loads(exc_bytes)
            except Exception:  # noqa: BLE001 - the text is kept either way
                pass
        return err


def _finish(values, return_exceptions):
    errors = [i for i, v in enumerate(values) if isinstance(v, JobError)]
    if errors and not return_exceptions:
        first = values[errors[0]]
        first.others = len(errors) - 1
        first.args = (first._text(),)
        raise first
    for i in errors:
        values[i] = _original(values[i])
    return values


def _original(err):
    """What ``return_exceptions=True`` puts in the list for ``err``: the function's own
    exception when it unpickled here (as ``asyncio.gather`` does), with the ``JobError`` (index,
    item, remote traceback) as its ``__cause__``, as ``multiprocessing`` chains the remote
    traceback; else (the exception does not unpickle, or the job ended without a result) the
    ``JobError`` itself."""
    original = err.__cause__
    if original is None:
        return err
    err.__cause__ = None
    err.__suppress_context__ = True
    original.__cause__ = err
    return original


class MapResult:
    """The result of ``map_async`` / ``apply_async`` (as ``multiprocessing.pool.AsyncResult``)."""

    def __init__(self, target, callback=None, error_callback=None):
        self._event = threading.Event()
        self._value = None
        self._error = None

        def run():
            try:
                self._value = target()
                if callback:
                    callback(self._value)
            except BaseException as exc:  # noqa: BLE001 - handed to get()
                self._error = exc
                if error_callback:
                    error_callback(exc)
            finally:
                self._event.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def ready(self):
        """Whether the map has ended."""
        return self._event.is_set()

    def wait(self, timeout=None):
        """Waits for the map to end, at most ``timeout`` seconds."""
        self._event.wait(timeout)

    def successful(self):
        """Whether the map returned without raising (``ValueError`` if not ready)."""
        if not self.ready():
            raise ValueError("the map has not ended yet")
        return self._error is None

    def get(self, timeout=None):
        """The results; raises the map's error, or ``TimeoutError`` after ``timeout`` seconds."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"the map did not end within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class Pool:
    """A ``multiprocessing.Pool`` whose work runs through poolparty.

    ``processes``: local workers, or the array throttle on a cluster. ``backend``: ``local``,
    ``slurm``, ``sge``, ``pbs``, ``lsf``, or ``auto`` (Slurm if ``sbatch`` is on PATH, else LSF
    if ``bsub`` is, else PBS if ``qsub`` and ``pbsnodes`` are, else Grid Engine if ``qsub`` is,
    else local). ``work_dir``: where each map's workflow is written (default
    ``./.poolparty``; must be visible from the compute nodes). ``chunksize``: items per job
    (one Python process runs them one after another; default: locally ``ceil(n / (4 *
    processes))``, on a cluster 1 with the runner's ``bundle="auto"`` unless ``bundle`` is
    set; an explicit chunksize is one array task per chunk). ``python``: the nodes' interpreter (default ``sys.executable``).
    ``env``: extra job environment. ``setup``: shell lines run before the worker (``module
    load ...``). ``retries``: reruns of a failed job. ``progress``: show the runner's progress
    (default: when stderr is a terminal). ``settings``: the manifest's stage settings (``time``,
    ``memory``, ``cpus``, ``partition``, ``account``, ``qos``, ``queue``, ``pe``, ``extra``,
    ``bundle``, ``poll_interval``, ...), same names and meaning.
    """

    def __init__(self, processes=None, *, backend="local", work_dir=None, chunksize=None,
                 python=None, env=None, setup=(), retries=0, progress=None, **settings):
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(_BACKENDS)}")
        if backend == "auto":
            backend = _auto_backend()
            print(f"poolparty: backend=auto chose `{backend}`", file=sys.stderr)
        if processes is not None and processes < 1:
            raise ValueError("processes must be at least 1")
        if isinstance(setup, str):
            setup = (setup,)
        self.processes = processes
        self.backend = backend
        self.work_dir = os.path.abspath(work_dir or ".poolparty")
        self.chunksize = chunksize
        self.python = python or sys.executable
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.setup = tuple(setup)
        self.retries = int(retries)
        self.progress = progress
        self.settings = settings
        self.binary = find_poolparty_bin()
        self._live = set()
        self._async = []
        self._closed = False
        self._terminated = False

    # ---- manifest -------------------------------------------------------------------------

    def _default_chunksize(self, n):
        """Items per job when neither ``map`` nor ``Pool`` names a chunksize: locally,
        ``multiprocessing``'s rule (about four jobs per worker, so one interpreter start serves
        many items and a slow item delays a quarter of a worker's share); on a cluster 1, and
        the runner's automatic bundling packs the jobs into array tasks (see ``_Map``)."""
        if self.backend != "local":
            return 1
        workers = self.processes or os.cpu_count() or 1
        return max(1, -(-n // (4 * workers)))

    def _fingerprint(self):
        return repr((self.backend, self.processes, self.python, sorted(self.env.items()),
                     self.setup, self.retries, sorted(self.settings.items(), key=str))).encode()

    def _job_env(self):
        env = dict(os.environ)
        env.update(self.env)
        return env

    def _manifest(self, name, mapdir, auto_bundle=False):
        argv = [self.python, "-m", "poolparty._worker", mapdir]
        if self.setup:
            script = "; ".join([*self.setup, "exec " + shlex.join(argv)])
            # `run` is a handlebars template: keep `{{` in setup lines literal.
            run = _toml.value(script.replace("{{", "\\{{"))
        else:
            run = _toml.value(argv)
        lines = [
            "# Written by poolparty's Python Pool for one map; `poolparty status DIR` reads it.",
            "[workflow]",
            f"name = {_toml.value(name)}",
            'work_dir = "state"',
            "",
            f"[stages.{_STAGE}]",
            'jobs_file = "jobs.jsonl"',
            f"run = {run}",
            f"backend = {_toml.value(self.backend)}",
        ]
        if self.processes:
            lines.append(f"max_parallel = {self.processes}")
        if self.retries:
            lines.append(f"retries = {self.retries}")
        if self.env:
            lines.append(f"env = {_toml.value(self.env)}")
        if auto_bundle:
            lines.append('bundle = "auto"')
        for key, val in self.settings.items():
            lines.append(f"{_toml.key(key)} = {_toml.value(val)}")
        return "\n".join(lines) + "\n"

    def _progress(self):
        if self.progress is None:
            return sys.stderr.isatty()
        return bool(self.progress)

    # ---- running ----------------------------------------------------------------------------

    def _check_open(self):
        if self._closed or self._terminated:
            raise ValueError("Pool not running")

    def _prepare(self, func, iterable, mode, chunksize):
        self._check_open()
        items = list(iterable)
        if not items:
            return None
        m = _Map(self, func, items, mode, chunksize)
        m.check()
        return m

    def _run(self, m, return_exceptions):
        proc = m.start()
        rc = m.wait(proc)
        if rc not in (0, 1):
            raise m.runner_failure(rc)
        rows = m.read_results()
        values = [None] * m.n
        for k in range(len(m.chunks)):
            for i, v in m.chunk_values(k, rows.get(k), final=True):
                values[i] = v
        return _finish(values, return_exceptions)

    def _iter(self, m, proc, ordered):
        done = {}
        next_job = 0
        delay = 0.2
        try:
            while True:
                rc = proc.poll()
                final = rc is not None
                if final:
                    self._live.discard(proc)
                    if rc not in (0, 1):
                        raise m.runner_failure(rc)
                rows = m.read_results()
                progressed = False
                for k in range(len(m.chunks)):
                    if k in done:
                        continue
                    got = m.chunk_values(k, rows.get(k), final)
                    if got is not None:
                        done[k] = got
                        progressed = True
                        if not ordered:
                            for _, v in got:
                                if isinstance(v, JobError):
                                    raise v
                                yield v
                if ordered:
                    while next_job in done:
                        for _, v in done[next_job]:
                            if isinstance(v, JobError):
                                raise v
                            yield v
                        next_job += 1
                if len(done) == len(m.chunks):
                    return
                if final:
                    raise RunnerError(f"`poolparty results` lacks jobs of {m.dir}")
                delay = 0.2 if progressed else min(delay * 1.5, 2.0)
                try:
                    proc.wait(delay)
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        finally:
            if proc.poll() is not None:
                self._live.discard(proc)

    # ---- the multiprocessing.Pool API --------------------------------------------------------

    def map(self, func, iterable, chunksize=None, *, return_exceptions=False):
        """``[func(x) for x in iterable]``, computed by poolparty's jobs. A failed item raises
        :class:`JobError` (the lowest index; ``others`` counts the rest) after every job has
        ended. With ``return_exceptions=True`` a failed item's place holds the exception its
        call raised (its ``__cause__`` is the :class:`JobError` with the index, the item and
        the remote traceback), or the ``JobError`` itself when that exception does not unpickle
        here or the job ended without a result (lost, killed, timed out)."""
        m = self._prepare(func, iterable, "map", chunksize)
        return [] if m is None else self._run(m, return_exceptions)

    def starmap(self, func, iterable, chunksize=None, *, return_exceptions=False):
        """``[func(*args) for args in iterable]``."""
        m = self._prepare(func, [tuple(a) for a in iterable], "starmap", chunksize)
        return [] if m is None else self._run(m, return_exceptions)

    def imap(self, func, iterable, chunksize=None):
        """Yields ``func(x)`` in order, each as soon as it and those before it are done."""
        m = self._prepare(func, iterable, "map", chunksize)
        return iter(()) if m is None else self._iter(m, m.start(), ordered=True)

    def imap_unordered(self, func, iterable, chunksize=None):
        """Yields ``func(x)`` in the order the jobs end."""
        m = self._prepare(func, iterable, "map", chunksize)
        return iter(()) if m is None else self._iter(m, m.start(), ordered=False)

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                  return_exceptions=False):
        """Starts a map and returns a :class:`MapResult` at once (its ``get`` gives the list)."""
        m = self._prepare(func, iterable, "map", chunksize)
        target = (lambda: []) if m is None else (lambda: self._run(m, return_exceptions))
        result = MapResult(target, callback, error_callback)
        self._async.append(result)
        return result

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """``starmap`` returning a :class:`MapResult`."""
        m = self._prepare(func, [tuple(a) for a in iterable], "starmap", chunksize)
        target = (lambda: []) if m is None else (lambda: self._run(m, False))
        result = MapResult(target, callback, error_callback)
        self._async.append(result)
        return result

    def apply(self, func, args=(), kwds=None):
        """``func(*args, **kwds)`` as one job."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        """``apply`` returning a :class:`MapResult` whose ``get`` gives the value."""
        m = self._prepare(func, [(tuple(args), dict(kwds or {}))], "apply", 1)
        result = MapResult(lambda: self._run(m, False)[0], callback, error_callback)
        self._async.append(result)
        return result

    def close(self):
        """No more work may be submitted; running maps go on."""
        self._closed = True

    def join(self):
        """Waits for every ``*_async`` map (call ``close`` or ``terminate`` first)."""
        if not (self._closed or self._terminated):
            raise ValueError("Pool is still running: call close() or terminate() first")
        for r in self._async:
            r.wait()

    def terminate(self):
        """Cancels the jobs of every map still running (the runner's ``scancel``/``qdel`` or
        local SIGTERM; their outcomes are recorded as interrupted) and waits for it."""
        self._terminated = True
        for proc in list(self._live):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 120
        for proc in list(self._live):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._live.discard(proc)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __repr__(self):
        return f"<poolparty.Pool backend={self.backend!r} processes={self.processes} work_dir={self.work_dir!r}>"
