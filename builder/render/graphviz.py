"""SVG and PNG through Graphviz's `dot` program, fed the DOT rendering on stdin."""
from __future__ import annotations

import shutil
import subprocess
from typing import Union

from . import RenderError, dot
from .model import KernelModel

INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: `apt-get install graphviz`, Fedora: `dnf install graphviz`, "
                "macOS: `brew install graphviz`, conda: `conda install -c conda-forge graphviz`), "
                "or use --format dot, mermaid, text or json, which need no tool")


def dot_program() -> str:
    path = shutil.which("dot")
    if path is None:
        raise RenderError(f"Graphviz's `dot` program is not on PATH, and it is needed for svg/png output; "
                          f"{INSTALL_HINT}")
    return path


def run_dot(source: str, fmt: str) -> bytes:
    """DOT text -> `fmt` (svg, png, ...) bytes; a RenderError names what went wrong."""
    proc = subprocess.run([dot_program(), f"-T{fmt}"], input=source.encode(), capture_output=True)
    if proc.returncode != 0:
        raise RenderError(f"Graphviz `dot -T{fmt}` failed (exit {proc.returncode}): "
                          f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def render(models: list[KernelModel], fmt: str) -> Union[str, bytes]:
    data = run_dot(dot.render(models), fmt)
    return data.decode() if fmt == "svg" else data
