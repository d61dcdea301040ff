"""Backends: one module per target. Each exposes `emit(kernel_instance, ops) -> str` and `NAME`."""
from __future__ import annotations

import importlib

BACKENDS = ("triton", "pypto")


def backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{name}")
