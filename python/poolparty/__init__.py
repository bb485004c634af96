"""``poolparty.Pool().map(func, jobs)``: a ``multiprocessing.Pool`` whose jobs run through the
``poolparty`` runner on this machine, on Slurm job arrays or on Grid Engine array jobs.

Each ``map`` call writes one poolparty workflow (a manifest, the pickled function, the items in
one file) into ``work_dir`` and runs ``poolparty run`` on it; results come back through
``poolparty results``. The runner is a separate process: ``poolparty status``, ``results`` and
``cancel`` work on the map from a shell, and the same ``map`` called again after the Python
process died re-attaches to it.
"""

from ._errors import JobError, PicklingError, RunnerError, VersionMismatchError

# `Pool` and `__version__` load on first use, so the jobs' `python -m poolparty._worker`
# imports only what it needs (its start-up time is paid once per job).
_LAZY = {"Pool": "_pool", "MapResult": "_pool", "find_poolparty_bin": "_binary"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "__version__":
        from ._binary import package_version

        return package_version() or "0.1.0"  # the fallback: running from a source tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Pool",
    "MapResult",
    "JobError",
    "PicklingError",
    "RunnerError",
    "VersionMismatchError",
    "find_poolparty_bin",
    "__version__",
]
