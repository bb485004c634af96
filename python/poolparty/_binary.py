"""Finds the ``poolparty`` binary installed with this package (maturin ``bindings = "bin"``
puts it in the environment's scripts folder, next to ``python``)."""

import os
import shutil
import sys
import sysconfig


def _candidates():
    env = os.environ.get("POOLPARTY_BIN")
    if env:
        yield env
    yield os.path.join(sysconfig.get_path("scripts"), "poolparty")
    yield os.path.join(os.path.dirname(sys.executable), "poolparty")
    try:
        yield os.path.join(sysconfig.get_path("scripts", f"{os.name}_user"), "poolparty")
    except KeyError:  # pragma: no cover
        pass
    # `pip install --target DIR` / `--prefix`: DIR/bin next to the package's parent folders.
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(os.path.dirname(here), "bin", "poolparty")
    found = shutil.which("poolparty")
    if found:
        yield found


def find_poolparty_bin() -> str:
    """The path of the ``poolparty`` binary: ``$POOLPARTY_BIN``, else the scripts folder of
    this environment, else the user scheme's, else ``PATH``. Raises ``FileNotFoundError``
    listing every place tried."""
    tried = []
    for path in _candidates():
        if path in tried:
            continue
        tried.append(path)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "cannot find the `poolparty` binary; tried: "
        + ", ".join(tried)
        + " (install the package with `pip install poolparty`, or set POOLPARTY_BIN)"
    )
