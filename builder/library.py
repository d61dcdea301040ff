"""Public API: `load(path) -> Library`, a read-only mapping of kernel name -> `Kernel`.

Validation, graph and schedule never import torch; `make_inputs`, `golden`, `run` and `verify` do.
"""
from __future__ import annotations

import gc
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import networkx as nx

from .diagnostics import Diagnostic, DiagnosticSink, Location, SpecError
from .graph import TypedGraph, build_graph
from .schedule import Schedule, make_schedule
from .spec import KernelSpec
from .specload import load_kernels
from .yamlsource import MAX_FILE_BYTES, Source, parse, read_text


class Kernel:
    """One validated kernel. Size-set-dependent views take `sizes` (None = the kernel's default set)."""

    def __init__(self, spec: KernelSpec, typed: dict[str, tuple[TypedGraph, Schedule]]):
        self.spec, self._typed = spec, typed
        self._code: dict[tuple[str, str], str] = {}  # (backend, size set) -> emitted source

    @property
    def name(self) -> str:
        return self.spec.name

    def size_set(self, sizes: Optional[str]) -> str:
        name = sizes or self.spec.default_sizes
        if name not in self.spec.sizes:
            raise KeyError(f"kernel {self.name} has no size set {name!r}; it has {', '.join(self.spec.sizes)}")
        return name

    def typed(self, sizes: Optional[str] = None) -> tuple[TypedGraph, Schedule]:
        """The typed graph and schedule at a size set (all were checked when the file loaded)."""
        return self._typed[self.size_set(sizes)]

    def dims(self, sizes: Optional[str] = None) -> dict[str, int | float]:
        return dict(self.typed(sizes)[0].dims)

    @property
    def graph(self) -> nx.DiGraph:
        return self.typed()[0].graph

    @property
    def schedule(self) -> Schedule:
        return self.typed()[1]

    # --- running and verifying (torch from here on) ---
    def make_inputs(self, seed: int = 0, sizes: Optional[str] = None) -> dict:
        from .inits import make_inputs

        return make_inputs(self.typed(sizes)[0], seed)

    def golden(self, inputs: Mapping, intermediates: bool = False, sizes: Optional[str] = None) -> dict:
        from .golden import run_golden

        return run_golden(self.typed(sizes)[0], inputs, intermediates)

    def emit(self, backend: str = "triton", sizes: Optional[str] = None) -> str:
        """Generated source; deterministic, so emitted once per backend and size set (`build` writes
        it and `verify` runs the same text)."""
        from .emit import backend as get_backend

        key = (backend, self.size_set(sizes))
        if key not in self._code:
            with gc_paused():
                self._code[key] = get_backend(backend).emit(*self.typed(sizes))
        return self._code[key]

    def run(self, inputs: Mapping, backend: str = "triton", sizes: Optional[str] = None,
            check_values: bool = True) -> dict:
        """Run the emitted code on `inputs` (checked first: builder.inputs.InputError names any input the
        kernel cannot take; `check_values=False` skips the index-range pass)."""
        from .inputs import check
        from .runtime import run_emitted

        tg = self.typed(sizes)[0]
        check(tg, inputs, backend, check_values)
        return run_emitted(self.emit(backend, sizes), backend, tg, inputs)

    def verify(self, backend: str = "triton", sizes: Optional[str] = None, seed: int = 0, progress=None,
               check_values: bool = True, on_block=None, fixtures: Optional[dict] = None):
        """`progress(message)` is told each step, `on_block(index, name)` each loop block as it starts;
        `fixtures`: a dict the caller keeps between backends, to make the inputs and golden once."""
        from .verify import verify

        return verify(self, backend, self.size_set(sizes), seed, progress, check_values, on_block, fixtures)


class Library(Mapping):
    """Read-only mapping of kernel name -> Kernel, in file order, plus the file's warnings."""

    def __init__(self, path: str, kernels: dict[str, Kernel], warnings: list[Diagnostic]):
        self.path, self._kernels, self.warnings = path, kernels, warnings

    def __getitem__(self, name: str) -> Kernel:
        return self._kernels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kernels)

    def __len__(self) -> int:
        return len(self._kernels)


def _type_check(spec: KernelSpec, where: Callable, ops: Mapping, sink: DiagnosticSink, max_bytes: int) -> dict:
    """Graph and schedule at every size set; stops at the first size set with errors."""
    typed = {}
    for size_set in spec.sizes:
        tg = build_graph(spec, size_set, ops, sink, where, max_bytes)
        sched = make_schedule(tg, sink, where) if tg else None
        if sched is None:
            break
        typed[size_set] = (tg, sched)
    return typed


def _kernels(src: Source, sink: DiagnosticSink, ops: Mapping, max_bytes: int) -> dict[str, Kernel]:
    """Every kernel of a parsed file, type-checked and scheduled at every size set."""
    return {spec.name: Kernel(spec, _type_check(spec, where, ops, sink, max_bytes))
            for spec, where in load_kernels(src, sink)}


DEFAULT_MAX_BYTES = 8 * 2**30


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cycle collection while a spec loads or emits: it builds hundreds of thousands of long-lived,
    acyclic objects, and each collection walks all of them again (a third of the time of a library of
    10,000 kernels, growing with its size). Reference counting still frees everything else; the
    collector's previous state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(path: str | Path = "kernels.yaml", text: Optional[str] = None, ops: Optional[Mapping] = None,
         max_bytes: int = DEFAULT_MAX_BYTES) -> Library:
    """Parse, validate, type-check and schedule every kernel at every size set.

    Raises SpecError carrying every error diagnostic of the file. `ops` overrides the stage-op registry
    (tests use it to inject faults). `max_bytes` bounds the tensors any size set may imply (their sum,
    per kernel), so that nothing is allocated or emitted for sizes a machine cannot hold.
    """
    from stages import registry

    ops = registry() if ops is None else ops
    path = str(path)
    if text is None:
        text = read_text(path)
    elif len(text) > MAX_FILE_BYTES:
        raise SpecError([Diagnostic("file-too-large", f"the text is longer than {MAX_FILE_BYTES} characters",
                                    Location(path, 1, 1), "split the library into several files")])
    sink = DiagnosticSink()
    with gc_paused():  # the parsed file's locations die with `_kernels`' frame: the collector never walks them
        kernels = _kernels(parse(text, path), sink, ops, max_bytes)
    unique = {(d.rule, d.loc, d.message): d for d in sink.items}
    errors = [d for d in unique.values() if d.severity == "error"]
    if errors:
        raise SpecError(errors)
    warnings = sorted((d for d in unique.values() if d.severity == "warning"), key=lambda d: (d.loc, d.rule))
    return Library(path, kernels, warnings)
