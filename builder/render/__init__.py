"""`build --graph` renderers: one module per format, each `render(views) -> str`."""
from __future__ import annotations

import importlib

FORMATS = ("text",)


def render(views, fmt: str) -> str:
    """`views` is a list of (TypedGraph, Schedule) pairs, one per kernel."""
    return importlib.import_module(f"{__name__}.{fmt}").render(views)
