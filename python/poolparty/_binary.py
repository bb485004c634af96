"""Finds the ``poolparty`` binary installed with this package (maturin ``bindings = "bin"``
puts it in the environment's scripts folder, next to ``python``; the package's ``RECORD``
names the exact file), and refuses a ``poolparty`` of another version found elsewhere.

No ``importlib.metadata`` here: it costs a third of a second to import on a loaded machine,
and the ``.dist-info`` folder next to the package says all that is needed."""

import os
import shutil
import subprocess
import sys
import sysconfig

from ._errors import VersionMismatchError

_HERE = os.path.dirname(os.path.abspath(__file__))
_SITE = os.path.dirname(_HERE)
_checked = {}


def _dist_info():
    """The ``poolparty-VERSION.dist-info`` folder installed with this package, or ``None``
    (a source tree)."""
    try:
        names = os.listdir(_SITE)
    except OSError:
        return None
    for name in sorted(names):
        if name.startswith("poolparty-") and name.endswith(".dist-info"):
            return os.path.join(_SITE, name)
    return None


def package_version():
    """This package's installed version (from its ``METADATA``), or ``None`` in a source tree."""
    info = _dist_info()
    if info is None:
        return None
    try:
        with open(os.path.join(info, "METADATA"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return None


def _recorded():
    """The binary this package was installed with, as its ``RECORD`` lists it."""
    info = _dist_info()
    if info is None:
        return None
    try:
        with open(os.path.join(info, "RECORD"), encoding="utf-8") as f:
            for line in f:
                path = line.split(",", 1)[0]
                if os.path.basename(path) in ("poolparty", "poolparty.exe") and not path.startswith("poolparty/"):
                    return os.path.normpath(os.path.join(_SITE, path))
    except OSError:
        pass
    return None


def _fallbacks():
    yield os.path.join(sysconfig.get_path("scripts"), "poolparty")
    yield os.path.join(os.path.dirname(sys.executable), "poolparty")
    try:
        yield os.path.join(sysconfig.get_path("scripts", f"{os.name}_user"), "poolparty")
    except KeyError:  # pragma: no cover
        pass
    # `pip install --target DIR` / `--prefix`: DIR/bin next to the package's parent folders.
    yield os.path.join(_SITE, "bin", "poolparty")
    found = shutil.which("poolparty")
    if found:
        yield found


def _binary_version(path):
    if path not in _checked:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
            words = out.stdout.split()
            _checked[path] = words[1] if out.returncode == 0 and len(words) == 2 else None
        except (OSError, subprocess.SubprocessError):
            _checked[path] = None
    return _checked[path]


def _same_version(path, how):
    """Raises when the binary at ``path`` is not this package's version."""
    want = package_version()
    if want is None:
        return
    got = _binary_version(path)
    if got != want:
        raise VersionMismatchError(
            f"the `poolparty` binary {how} ({path}) is "
            + (f"version {got}" if got else "not a poolparty binary that answers `--version`")
            + f", but the Python package poolparty is version {want} ({_HERE}): reinstall the "
            "package (`pip install --force-reinstall poolparty`, which brings its own binary) "
            "or point POOLPARTY_BIN at a poolparty " + want
        )


def _usable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_poolparty_bin() -> str:
    """The path of the ``poolparty`` binary: ``$POOLPARTY_BIN``; else the one installed with
    this package (listed in its ``RECORD``); else the environment's scripts folder, the user
    scheme's, ``PATH``. A binary that did not come with the package must have its version:
    ``VersionMismatchError`` names both otherwise. ``FileNotFoundError`` lists every place
    tried when there is none."""
    env = os.environ.get("POOLPARTY_BIN")
    if env:
        if not _usable(env):
            raise FileNotFoundError(f"POOLPARTY_BIN is {env!r}, which is not an executable file")
        _same_version(env, "named by POOLPARTY_BIN")
        return env
    recorded = _recorded()
    if recorded and _usable(recorded):
        return recorded
    tried = [recorded] if recorded else []
    for path in _fallbacks():
        if path in tried:
            continue
        tried.append(path)
        if _usable(path):
            _same_version(path, "found" if recorded is None else
                          f"found instead of the one installed with the package ({recorded})")
            return path
    raise FileNotFoundError(
        "cannot find the `poolparty` binary; tried: "
        + ", ".join(tried)
        + " (install the package with `pip install poolparty`, or set POOLPARTY_BIN)"
    )
