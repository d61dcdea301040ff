"""Shared helpers for spec/graph/schedule/CLI tests: edit the bundled YAML, locate tokens, collect diagnostics.

Expected locations are always computed from the YAML text a test builds (`position`), never hard-coded,
so that the tests keep working while `kernels.yaml` grows. Every edit must apply (`edit` raises when
its anchor is gone), so a test built on one cannot pass vacuously.
"""
from __future__ import annotations

import ast

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import yaml

import builder
from builder.diagnostics import Diagnostic

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "kernels.yaml"
MAIN_KERNEL = "dsv4_sparse_attn_decode"
SPLIT_KERNEL = "dsv4_sparse_attn_decode_split_half"
MAIN = f"\n  {MAIN_KERNEL}:\n"          # anchor: the start of the main kernel's mapping
SPLIT = f"\n  {SPLIT_KERNEL}:\n"
# The six ops of the decode kernel (issue #1); the kernel may have more stages after them.
SIX_OPS = ("gather_kv", "sparse_attention", "rope_extract", "rope_apply", "rope_interleave", "pack")

Anchors = Union[None, str, Sequence[str]]


def bundled_text() -> str:
    return BUNDLED.read_text()


def _start(text: str, after: Anchors) -> int:
    """Offset just past the chain of anchors `after` (each searched from the end of the previous one)."""
    pos = 0
    for anchor in ([after] if isinstance(after, str) else list(after or ())):
        i = text.find(anchor, pos)
        assert i >= 0, f"anchor {anchor!r} not found in the YAML text (after offset {pos})"
        pos = i + len(anchor)
    return pos


def offset_of(text: str, needle: str, *, after: Anchors = None, nth: int = 1) -> int:
    pos = _start(text, after)
    for _ in range(nth):
        i = text.find(needle, pos)
        assert i >= 0, f"{needle!r} not found (occurrence {nth}, after {after!r})"
        pos = i + 1
    return pos - 1


def position(text: str, needle: str, *, after: Anchors = None, nth: int = 1, offset: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the `nth` occurrence of `needle` after the anchors, plus `offset` chars."""
    i = offset_of(text, needle, after=after, nth=nth) + offset
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def edit(text: str, old: str, new: str, *, after: Anchors = None) -> str:
    """Replace the first occurrence of `old` after the anchors by `new`; the edit must apply."""
    i = offset_of(text, old, after=after)
    return text[:i] + new + text[i + len(old):]


def diagnostics(text: str, file: str = "kernels.yaml", ops=None) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) that loading `text` produces; never raises SpecError."""
    try:
        lib = builder.load(file, text=text, ops=ops)
    except builder.SpecError as exc:
        return list(exc.diagnostics)
    return list(lib.warnings)


def errors(text: str, file: str = "kernels.yaml", ops=None) -> list[Diagnostic]:
    return [d for d in diagnostics(text, file, ops) if d.severity == "error"]


def assert_edit_is_located_error(old: str, new: str, rule: str, at: str, message: str, *, after: Anchors) -> None:
    """Editing the bundled YAML (`old` -> `new` after the anchors) gives a `rule` error saying `message`
    on the line of `at` (searched after the same anchors in the edited text)."""
    text = edit(bundled_text(), old, new, after=after)
    found = errors(text)
    line, _ = position(text, at, after=after)
    assert any(d.rule == rule and message in d.message and d.loc.line == line for d in found), \
        [(d.rule, d.loc.line, d.message) for d in found]


def located(diags: Iterable[Diagnostic]) -> set[tuple[str, int, int]]:
    """{(rule, line, col)}: kernels that extend a broken one repeat its diagnostics at the same place."""
    return {(d.rule, d.loc.line, d.loc.col) for d in diags}


def kernel_lines(text: str, name: str = MAIN_KERNEL) -> range:
    """The 1-based line numbers of kernel `name`'s block in `text` (its key line to the next kernel's)."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.rstrip() == f"  {name}:")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}[^\s#]", lines[i])), len(lines))
    return range(start + 1, end + 1)


def kernel_yaml(text: str, name: str = MAIN_KERNEL) -> dict:
    """The plain data of one kernel of `text` (as written, without `extends:` merging)."""
    return yaml.safe_load(text)["kernels"][name]


def run_build(*args: str, cwd: Optional[Path] = None, env: Optional[dict] = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `build` CLI (`python -m builder`) in a subprocess; text stdout/stderr."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_python(code: str, env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter at the repository root."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


ERROR_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning)\[(?P<rule>[a-z-]+)\]: \S.*$")
HINT_LINE = re.compile(r"^  hint: \S.*$")


def parse_report(stderr: str, severity: str = "error") -> list[tuple[str, str, int, int]]:
    """(file, rule, line, col) of every diagnostic line; asserts each is followed by a `hint:` line."""
    lines = stderr.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = ERROR_LINE.match(line)
        if m and m["sev"] == severity:
            assert i + 1 < len(lines) and HINT_LINE.match(lines[i + 1]), f"no hint after {line!r}:\n{stderr}"
            found.append((m["file"], m["rule"], int(m["line"]), int(m["col"])))
    return found


def assert_no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def unread_names(node: ast.AST) -> set[str]:
    """Names assigned under `node` (a generated function) that nothing under it reads: dead values."""
    assigned = {t.id for n in ast.walk(node) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return assigned - {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def unread_constants(tree: ast.Module) -> set[str]:
    """Module-level constants of a generated file that nothing in it reads."""
    defined = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return defined - {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
