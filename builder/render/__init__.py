"""`build --graph` renderers: one module per format, each `render(models) -> str` (png: bytes).

A renderer draws `model.KernelModel`s (see model.py), built from (TypedGraph, Schedule) pairs by
`models()`, optionally diffed against another kernel. Nothing here imports torch or triton; svg and
png go through Graphviz's `dot` program.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Sequence, Union

from .model import KernelModel, diff, from_view

FORMATS = ("text", "dot", "mermaid", "svg", "png", "json")
_MODULES = {"text": "text", "dot": "dot", "mermaid": "mermaid", "json": "jsonfmt", "svg": "graphviz",
            "png": "graphviz"}
EXTENSIONS = {".txt": "text", ".text": "text", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
              ".mermaid": "mermaid", ".svg": "svg", ".png": "png", ".json": "json"}


class RenderError(Exception):
    """A rendering problem the user can fix (e.g. Graphviz missing); the CLI exits 2 with the message."""


def models(views: Sequence, against: Optional[Sequence] = None) -> list[KernelModel]:
    """`views`: (TypedGraph, Schedule) pairs; `against`: the same length, each a pair or None, to diff.

    A None view with an `against` pair is a kernel that only the other side has (shown as removed).
    """
    if against is None:
        return [from_view(*v) for v in views]
    if len(against) != len(views):
        raise ValueError("`against` must have one entry (or None) per view")
    return [diff(from_view(*v) if v else None, from_view(*a) if a else None) for v, a in zip(views, against)]


def render(views: Sequence, fmt: str = "text", against: Optional[Sequence] = None) -> Union[str, bytes]:
    """`views` is a list of (TypedGraph, Schedule) pairs, one per kernel; see `models` for `against`."""
    return render_models(models(views, against), fmt)


def render_models(kernel_models: list[KernelModel], fmt: str) -> Union[str, bytes]:
    if fmt not in FORMATS:
        raise RenderError(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
    return module.render(kernel_models, fmt) if _MODULES[fmt] == "graphviz" else module.render(kernel_models)


def format_for(path: str) -> Optional[str]:
    """The format an output file's extension asks for, or None."""
    return EXTENSIONS.get(Path(path).suffix.lower())
