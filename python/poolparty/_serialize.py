"""How functions, items and results are pickled (dask's rule): plain ``pickle`` when it works
and the bytes do not refer to ``__main__`` (so ``numpy.std`` goes by name in a few bytes),
else ``cloudpickle`` by value (lambdas, closures, functions from ``__main__`` or a notebook)."""

import pickle

PROTOCOL = 5


def dumps(obj):
    """``(bytes, by_value)``: the pickle of ``obj`` and whether cloudpickle made it."""
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL)
        if b"__main__" not in data:
            return data, False
    except Exception:
        pass
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=PROTOCOL), True


def loads(data):
    """Unpickles bytes made by :func:`dumps` (cloudpickle's output is plain pickle data)."""
    return pickle.loads(data)


def versions():
    """This interpreter's Python and cloudpickle versions."""
    import platform

    try:
        import cloudpickle

        cp = cloudpickle.__version__
    except ImportError:
        cp = None
    return {"python": platform.python_version(), "cloudpickle": cp}


def mismatch(caller, node, by_value):
    """A message naming both sides when ``node``'s versions cannot load ``caller``'s pickles,
    else ``None``. The Python minor version must match; cloudpickle's exactly when something
    went by value."""
    py_c = caller["python"].split(".")[:2]
    py_n = node["python"].split(".")[:2]
    bad = py_c != py_n or (by_value and caller["cloudpickle"] != node["cloudpickle"])
    if not bad:
        return None
    return (
        f"the caller has Python {caller['python']} with cloudpickle {caller['cloudpickle']}, "
        f"the node's interpreter has Python {node['python']} with cloudpickle "
        f"{node['cloudpickle']}: use the same environment on both (Pool(python=...))"
    )
