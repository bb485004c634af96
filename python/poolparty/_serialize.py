"""How functions, items and results are pickled (dask's rule): plain ``pickle`` when it works
and the bytes do not refer to ``__main__`` (so ``numpy.std`` goes by name in a few bytes),
else ``cloudpickle`` by value (lambdas, closures, functions from ``__main__`` or a notebook).

Jobs import this module first thing, so it imports only the C pickler (``pickle.py`` pulls in
``re``); cloudpickle is imported when something goes by value."""

import sys

try:
    from _pickle import dumps as _dumps, loads as _loads
except ImportError:  # pragma: no cover - an interpreter without the C pickler
    from pickle import dumps as _dumps, loads as _loads

PROTOCOL = 5


def dumps(obj):
    """``(bytes, by_value)``: the pickle of ``obj`` and whether cloudpickle made it."""
    try:
        data = _dumps(obj, protocol=PROTOCOL)
        if b"__main__" not in data:
            return data, False
    except Exception:  # noqa: BLE001 - anything plain pickle refuses goes to cloudpickle
        pass
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=PROTOCOL), True


def plain_dumps(obj):
    """The plain pickle of ``obj`` (for the envelopes, whose values are pickled already)."""
    return _dumps(obj, protocol=PROTOCOL)


def loads(data):
    """Unpickles bytes made by :func:`dumps` (cloudpickle's output is plain pickle data)."""
    return _loads(data)


def python_version():
    """This interpreter's version, ``"3.11.7"``."""
    return "%d.%d.%d" % sys.version_info[:3]


def cloudpickle_version():
    """The installed cloudpickle's version, or ``None`` when it is not installed."""
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle.__version__


def versions(by_value):
    """This interpreter's Python version, and cloudpickle's when something went by value (it
    is imported then anyway; importing it only to read its version costs 30-170 ms)."""
    return {"python": python_version(), "cloudpickle": cloudpickle_version() if by_value else None}


def mismatch(caller, by_value):
    """A message naming both sides when this interpreter cannot load the pickles of ``caller``
    (``versions(by_value)`` there), else ``None``. The Python minor version must match (pickles of
    code and of the standard library's objects follow it); cloudpickle's version exactly when
    something went by value (its pickles are only guaranteed to load with the same version).
    cloudpickle is imported only then."""
    here = versions(by_value)
    same_py = caller["python"].split(".")[:2] == here["python"].split(".")[:2]
    if same_py and here["cloudpickle"] == caller["cloudpickle"]:
        return None
    what = "the Python version" if not same_py else "the cloudpickle version"
    why = "" if not same_py else " (the function or an item went by value, with cloudpickle)"
    return (
        f"{what} differs between the caller and the jobs' interpreter `{sys.executable}`{why}: "
        f"the caller has {_describe(caller, by_value)}, the jobs' interpreter has "
        f"{_describe(here, by_value)}; use the same environment on both (Pool(python=...))"
    )


def _describe(v, by_value):
    if not by_value:
        return f"Python {v['python']}"
    cp = v["cloudpickle"]
    return f"Python {v['python']} with " + (f"cloudpickle {cp}" if cp else "no cloudpickle")
