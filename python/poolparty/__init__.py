"""``poolparty.Pool().map(func, jobs)``: a ``multiprocessing.Pool`` whose jobs run through the
``poolparty`` runner on this machine, on Slurm job arrays or on Grid Engine array jobs.

Each ``map`` call writes one poolparty workflow (a manifest, the pickled function, the items in
one file) into ``work_dir`` and runs ``poolparty run`` on it; results come back through
``poolparty results``. The runner is a separate process: ``poolparty status``, ``results`` and
``cancel`` work on the map from a shell, and the same ``map`` called again after the Python
process died re-attaches to it.
"""

from ._errors import JobError, PicklingError, RunnerError, VersionMismatchError
from ._binary import find_poolparty_bin
from ._pool import MapResult, Pool

try:
    from importlib.metadata import version as _version

    __version__ = _version("poolparty")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

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
