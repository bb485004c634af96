"""The job side of ``Pool.map``: ``python -m poolparty._worker MAPDIR`` runs one poolparty job
(a chunk of items ``start..stop``), and ``--check MAPDIR`` loads the function in a fresh
interpreter before anything is submitted.

MAPDIR holds ``header.json``, ``func.pkl``, ``items.bin`` (the items' pickles, one after
another) and ``items.idx`` (their offsets, little-endian u64, one more than items). A job reads
only its own items. It writes one pickle to ``$POOLPARTY_RESULT``: a list of envelopes, one per
item, ``("ok", value_pickle)`` or ``("err", exception_pickle_or_None, type, message,
traceback)``, or ``[("mismatch", message)]``. It exits 1 when an item raised, so poolparty
records the job as failed (and ``retries`` apply)."""

import json
import os
import struct
import sys
import traceback

from . import _serialize


def _load_header(mapdir):
    with open(os.path.join(mapdir, "header.json"), encoding="utf-8") as f:
        header = json.load(f)
    cwd = header.get("cwd")
    paths = [cwd if p == "" else p for p in header.get("sys_path", [])]
    sys.path[:0] = [p for p in paths if p and p not in sys.path]
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    return header


def _check_versions(header):
    return _serialize.mismatch(header["versions"], _serialize.versions(), header["by_value"])


def _load_func(mapdir):
    with open(os.path.join(mapdir, "func.pkl"), "rb") as f:
        return _serialize.loads(f.read())


def _read_items(mapdir, start, stop):
    with open(os.path.join(mapdir, "items.idx"), "rb") as f:
        f.seek(8 * start)
        offsets = struct.unpack(f"<{stop - start + 1}Q", f.read(8 * (stop - start + 1)))
    with open(os.path.join(mapdir, "items.bin"), "rb") as f:
        f.seek(offsets[0])
        blob = f.read(offsets[-1] - offsets[0])
    base = offsets[0]
    return [blob[a - base : b - base] for a, b in zip(offsets, offsets[1:])]


def _error(exc):
    try:
        exc_bytes = _serialize.dumps(exc)[0]
        _serialize.loads(exc_bytes)
    except Exception:
        exc_bytes = None
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind = type(exc)
    return ("err", exc_bytes, f"{kind.__module__}.{kind.__qualname__}", str(exc), tb)


def _call(func, mode, item_bytes):
    try:
        item = _serialize.loads(item_bytes)
        if mode == "starmap":
            value = func(*item)
        elif mode == "apply":
            args, kwds = item
            value = func(*args, **kwds)
        else:
            value = func(item)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure (SystemExit too) is an envelope
        return _error(exc)
    try:
        return ("ok", _serialize.dumps(value)[0])
    except Exception as exc:
        return _error(TypeError(f"cannot pickle the return value ({type(value).__qualname__}): {exc}"))


def _job():
    text = os.environ.get("POOLPARTY_JOB")
    if text is None:
        with open(os.environ["POOLPARTY_JOB_FILE"], encoding="utf-8") as f:
            text = f.read()
    return json.loads(text)


def run(mapdir):
    """Runs this process's job; returns the exit code."""
    header = _load_header(mapdir)
    job = _job()
    out = os.environ["POOLPARTY_RESULT"]
    problem = _check_versions(header)
    if problem:
        envelopes = [("mismatch", problem)]
    else:
        try:
            func = _load_func(mapdir)
        except Exception as exc:
            func, load_error = None, _error(exc)
        items = _read_items(mapdir, job["start"], job["stop"])
        if func is None:
            envelopes = [load_error for _ in items]
        else:
            envelopes = [_call(func, header["mode"], b) for b in items]
    import pickle

    with open(out, "wb") as f:
        pickle.dump(envelopes, f, protocol=_serialize.PROTOCOL)
    return 0 if all(e[0] == "ok" for e in envelopes) else 1


def check(mapdir):
    """Loads the function as a node would; prints a JSON line, exits 1 on a problem."""
    header = _load_header(mapdir)
    problem = _check_versions(header)
    if problem:
        print(json.dumps({"mismatch": problem}))
        return 1
    try:
        _load_func(mapdir)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__qualname__}: {exc}",
                          "traceback": traceback.format_exc()}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


def main(argv):
    if len(argv) == 2 and argv[0] == "--check":
        return check(argv[1])
    if len(argv) == 1:
        return run(argv[0])
    print("usage: python -m poolparty._worker [--check] MAPDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
