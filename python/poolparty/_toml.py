"""Writes the small TOML subset the generated manifests need (``tomllib`` only reads)."""

import json
import math


def value(v):
    """``v`` as a TOML value (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"cannot write {v} to a manifest")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to a manifest")


def key(k):
    """``k`` as a TOML key (quoted unless bare)."""
    k = str(k)
    if k and all(c.isalnum() and c.isascii() or c in "-_" for c in k):
        return k
    return json.dumps(k, ensure_ascii=False)
