"""Stage ops: one module per op. Every module defines `OP`, an instance of a `builder.stage_api.Op` subclass.

Adding an op means adding a module here; the registry discovers it.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache


@lru_cache(maxsize=None)
def registry() -> dict:
    ops = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        op = getattr(module, "OP", None)
        if op is not None:
            ops[op.name] = op
    return ops
