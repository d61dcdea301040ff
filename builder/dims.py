"""Resolve a kernel's dims for one size set: free dims from the set, derived dims from their expressions."""
from __future__ import annotations

from typing import Callable

from . import expr
from .diagnostics import DiagnosticSink, Location
from .spec import KernelSpec
from .stage_api import Dims


def resolve_dims(spec: KernelSpec, size_set: str, sink: DiagnosticSink,
                 where: Callable[[tuple, bool], Location]) -> Dims | None:
    values: dict[str, int | float] = dict(spec.sizes[size_set])
    errors = sink.error_count
    for name in sorted(set(values) & set(spec.dims)):
        sink.error("bad-value", f"dim `{name}` is both derived (`{spec.dims[name]}`) and set by size set "
                                f"`{size_set}`", where(("sizes", size_set, name), True),
                   "a derived dim follows from the others; drop it from the size set")
    state: dict[str, str] = {}  # name -> "busy" | "done"
    for name in spec.dims:
        _visit(name, (), spec, size_set, values, state, sink, where)
    return Dims(values, size_set, spec.dims) if sink.error_count == errors else None


def _visit(name: str, stack: tuple[str, ...], spec: KernelSpec, size_set: str, values: dict[str, int | float],
           state: dict[str, str], sink: DiagnosticSink, where: Callable[[tuple, bool], Location]) -> bool:
    """Evaluate derived dim `name` after the dims it uses; False after an error. A module function, not a
    closure of `resolve_dims`: a recursive closure refers to itself, and the cycle would keep `where`, and
    with it the parsed file, alive until the collector runs."""
    if state.get(name) == "done" or (name in values and name not in spec.dims):
        return True
    if state.get(name) == "busy":
        cyc = " -> ".join(stack[stack.index(name):] + (name,))
        sink.error("circular-dim", f"dims are defined in terms of each other: {cyc}",
                   where(("dims", name), False), "one of them must come from the size sets")
        return False
    state[name] = "busy"
    text = spec.dims[name]
    try:
        needed = expr.names(text)
    except expr.ExprError as e:
        sink.error(e.kind, f"dim `{name}`: {e}", where(("dims", name), False))
        return False
    good = True
    for dep in sorted(needed):
        if dep not in spec.dims and dep not in values:
            sink.error("undefined-dim", f"dim `{name} = {text}` uses `{dep}`, which no size set "
                                        f"(`{size_set}`) or derived dim defines",
                       where(("dims", name), False), "add it to every size set or to `dims:`")
            good = False
        elif dep in spec.dims and not _visit(dep, stack + (name,), spec, size_set, values, state, sink, where):
            good = False
    if good:
        try:
            values[name] = expr.evaluate(text, values)
        except expr.ExprError as e:
            sink.error(e.kind, f"dim `{name}`: {e}", where(("dims", name), False))
            good = False
    state[name] = "done"
    return good
