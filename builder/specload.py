"""Source (YAML data + locations) -> validated `KernelSpec`s, with `extends:` and named size sets resolved.

Every pydantic error becomes a located diagnostic; all of a file's errors are collected in one pass.
"""
from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .diagnostics import DiagnosticSink, Location, did_you_mean
from .names import NAME_HINT, name_problem
from .spec import FileSpec, KernelSpec
from .yamlsource import Path, Source

MAX_STAGES = 20_000  # per kernel: far beyond any real kernel, and bounded work for a hostile file
_RULE_OF_PYDANTIC = {"extra_forbidden": "unknown-key", "missing": "missing-key", "bad_name": "bad-name"}
# right type, but outside the values the field accepts (ranges, enums such as `dtype:`, literals)
_BAD_VALUE = {"value_error", "greater_than_equal", "less_than_equal", "greater_than", "less_than",
              "enum", "literal_error", "too_short", "too_long", "finite_number"}
_TYPE_HINTS = {"list_type": "write a list, e.g. `[T, H, D]`", "dict_type": "write a mapping, e.g. `{key: value}`",
               "model_type": "write a mapping, e.g. `{key: value}`", "string_type": "write a string",
               "int_type": "write an integer", "int_parsing": "write an integer",
               "int_from_float": "write an integer", "float_type": "write a number",
               "float_parsing": "write a number", "bool_type": "write `true` or `false`",
               "bool_parsing": "write `true` or `false`",
               "dim_type": "write an integer, or an expression over dims such as `H // O_GROUPS`"}


def report_validation(exc: ValidationError, sink: DiagnosticSink, where, model: type[BaseModel]) -> None:
    """Map pydantic errors onto YAML locations. `where(path, key)` resolves a path relative to the model."""
    for err in exc.errors():
        path = tuple(p for p in err["loc"] if p != "__root__")
        is_key = bool(path) and path[-1] == "[key]"  # the error is about a mapping key, not its value
        path = path[:-1] if is_key else path
        kind = err["type"]
        rule = _RULE_OF_PYDANTIC.get(kind, "bad-value" if kind in _BAD_VALUE else "wrong-type")
        if rule == "bad-name":
            sink.error(rule, f"bad name: {err['msg']}", where(path, is_key), NAME_HINT)
        elif is_key:
            sink.error(rule, f"key {path[-1]!r} of `{'.'.join(map(str, path[:-1]))}`: {err['msg']}",
                       where(path, True), _type_hint(err))
        elif rule == "unknown-key":
            known = _field_names(model, path[:-1])
            hint = did_you_mean(str(path[-1]), known) or (f"known keys: {', '.join(sorted(known))}" if known else "")
            sink.error(rule, f"unknown key `{path[-1]}`", where(path, True), hint)
        elif rule == "missing-key":
            sink.error(rule, f"missing required key `{path[-1]}`", where(path[:-1], False),
                       f"add `{path[-1]}:` here")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            sink.error(rule, f"`{'.'.join(map(str, path))}`: {err['msg']}{shown}", where(path, False),
                       _type_hint(err))


def _type_hint(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"expected {ctx['expected']}"
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for key, op in bounds.items():
        if key in ctx:
            return f"use a value {op} {ctx[key]}"
    return _TYPE_HINTS.get(err["type"], "")


def _strip_optional(tp: Any) -> Any:
    import types
    import typing

    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    return tp


def _field_names(model: type[BaseModel], path: tuple) -> set[str]:
    """Field names (by alias) of the sub-model reached by `path`, for did-you-mean hints."""
    import typing

    current: Any = model
    for part in path:
        current = _strip_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = {(fi.alias or n): fi for n, fi in current.model_fields.items()}.get(part)
            current = f.annotation if f else None
        else:  # a container: `part` is a dict key or list index, descend into the value type
            args = typing.get_args(current)
            current = args[-1] if args else None
        if current is None:
            return set()
    current = _strip_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return {fi.alias or n for n, fi in current.model_fields.items() if n != "loc"}
    return set()


class _Merged:
    """A kernel's raw mapping after `extends:` merging, with where each part comes from: `origin` maps a
    relative path to its path in the file, and a path not in it lies where its nearest listed ancestor
    does (a kernel without `extends:` is one entry, `()`)."""

    def __init__(self, data: dict, origin: dict[Path, Path]):
        self.data, self.origin = data, origin

    def source(self, rel: Path) -> Path:
        """The path in the file of the value at `rel` (or of its nearest ancestor that exists)."""
        probe = rel
        while probe not in self.origin:
            probe = probe[:-1]
        return self.origin[probe] + rel[len(probe):]


def _deep_merge(base: _Merged, child: dict, child_path: Path) -> _Merged:
    merged = _Merged(dict(base.data), dict(base.origin))
    origin = merged.origin

    def merge(dst: dict, src: dict, rel: Path) -> None:
        for k, v in src.items():
            here = rel + (k,)
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                for inherited in dst[k]:  # keys the child does not override keep their place in the parent
                    origin.setdefault(here + (inherited,), merged.source(here + (inherited,)))
                dst[k] = dict(dst[k])
                origin[here] = child_path + here
                merge(dst[k], v, here)
            else:
                for p in [p for p in origin if p[:len(here)] == here]:
                    del origin[p]
                dst[k] = v
                origin[here] = child_path + here

    merge(merged.data, child, ())
    return merged


Where = Callable[[Path, bool], Location]


def load_kernels(src: Source, sink: DiagnosticSink) -> list[tuple[KernelSpec, Where]]:
    """Every kernel of the file that validates, with its `where(path, key)` locator."""
    if not isinstance(src.data, dict):
        sink.error("wrong-type", "the file must be a mapping with `version:` and `kernels:`", src.where(()))
        return []
    try:
        top = FileSpec.model_validate(src.data)
    except ValidationError as exc:
        report_validation(exc, sink, lambda p, key: src.where(p, key), FileSpec)
        return []

    merged: dict[str, _Merged | None] = {}
    folded: dict[str, str] = {}
    for name in top.kernels:
        problem = name_problem(name)
        if problem is None and name.casefold() in folded:
            problem = (f"`{name}` differs from kernel `{folded[name.casefold()]}` only in case: their output "
                       "folders would be one folder on a case-insensitive file system")
        if problem:
            sink.error("bad-name", f"kernel name: {problem}", src.where(("kernels", name), True), NAME_HINT)
            merged[name] = None
        folded.setdefault(str(name).casefold(), str(name))

    def resolve(name: str) -> _Merged | None:
        """Merge `name` onto its `extends:` ancestors, walking the chain iteratively (it may be long)."""
        walk: list[str] = []
        current, result = name, None
        while current not in merged:
            raw = top.kernels[current]
            path = ("kernels", current)
            parent_name = raw.get("extends") if isinstance(raw, dict) else None
            if not isinstance(raw, dict):
                sink.error("wrong-type", f"kernel `{current}` must be a mapping", src.where(path))
            elif parent_name is not None and not isinstance(parent_name, str):
                sink.error("wrong-type", f"`extends:` takes one kernel name, not {type(parent_name).__name__}",
                           src.where(path + ("extends",)), "write `extends: <kernel name>`")
            elif parent_name is None:
                merged[current] = _Merged(raw, {(): path})
                break
            elif parent_name == current or parent_name in walk:
                cyc = " -> ".join(walk + [current, parent_name])
                sink.error("cycle", f"`extends:` loops: {cyc}", src.where(path + ("extends",)),
                           "a kernel may not extend itself, directly or through others")
            elif parent_name not in top.kernels:
                sink.error("unknown-kernel", f"`extends: {parent_name}` names no kernel of this file",
                           src.where(path + ("extends",)), did_you_mean(str(parent_name), top.kernels))
            else:
                walk.append(current)
                current = parent_name
                continue
            merged[current] = None
            break
        result = merged[current]
        for child in reversed(walk):
            if result is not None:
                path = ("kernels", child)
                result = _deep_merge(result, top.kernels[child], path)
                result.data.pop("extends", None)
                result.data["extends"] = top.kernels[child]["extends"]
                result.origin[("extends",)] = path + ("extends",)
            merged[child] = result
        return merged[name]

    kernels: list[tuple[KernelSpec, Where]] = []
    for name in top.kernels:
        m = resolve(name)
        if m is None:
            continue
        data = dict(m.data)
        data.setdefault("name", name)
        path = ("kernels", name)

        def where(rel: Path, key: bool, m=m) -> Location:
            return src.where(m.source(tuple(rel)), key)

        stages = data.get("stages")
        if isinstance(stages, dict) and len(stages) > MAX_STAGES:
            sink.error("too-many-stages", f"kernel `{name}` has {len(stages)} stages; at most {MAX_STAGES} are "
                                          "read", where(("stages",), True), "split the kernel")
            continue
        written_sets = list(data["sizes"]) if isinstance(data.get("sizes"), dict) else []
        ok = _resolve_size_refs(data, top.sizes, sink, where)
        data["loc"] = src.where(path, True)
        try:
            spec = KernelSpec.model_validate(data)
        except ValidationError as exc:
            report_validation(exc, sink, where, KernelSpec)
            continue
        ok &= _distinct_names(spec, where, sink)
        if spec.default_sizes not in written_sets:
            sink.error("unknown-ref", f"`default_sizes: {spec.default_sizes}` names no size set of kernel "
                                      f"`{name}`", where(("default_sizes",), False),
                       did_you_mean(spec.default_sizes, written_sets) or f"its size sets: {', '.join(written_sets)}")
            ok = False
        if ok:
            kernels.append((spec, where))
    return kernels


def _distinct_names(spec: KernelSpec, where, sink: DiagnosticSink) -> bool:
    """A kernel's dims, inputs and outputs, and the kernel itself, are all identifiers of the same
    generated code (module constants, parameters): no two may share a name."""
    owners: dict[str, str] = {spec.name: "the kernel's own name"}
    places: list[tuple[str, str, tuple[str, ...]]]
    places = [(n, "dim", ("sizes", set_name, n)) for set_name, sizes in spec.sizes.items() for n in sizes]
    places += [(n, "dim", ("dims", n)) for n in spec.dims]
    places += [(n, "input", ("inputs", n)) for n in spec.inputs]
    places += [(n, "output", ("outputs", n)) for n in spec.outputs]
    ok = True
    for n, kind, path in places:
        owner = owners.setdefault(n, f"{kind} `{n}`")
        if owner != f"{kind} `{n}`":
            sink.error("bad-name", f"{kind} `{n}` has the name of {owner}: they would be one identifier in the "
                                   "generated code", where(path, True), "rename one of them")
            ok = False
    return ok


def _resolve_size_refs(data: dict, shared: dict, sink: DiagnosticSink, where) -> bool:
    """`sizes: {full: dsv4_full}` names a top-level size set; inline mappings stay as they are."""
    sizes = data.get("sizes")
    if not isinstance(sizes, dict):
        return True
    ok = True
    resolved = {}
    for set_name, value in sizes.items():
        if isinstance(value, str):
            if value not in shared:
                sink.error("unknown-ref", f"size set `{value}` is not defined under the top-level `sizes:`",
                           where(("sizes", set_name), False), did_you_mean(value, shared))
                ok = False
                continue
            value = shared[value]
        resolved[set_name] = value
    data["sizes"] = resolved
    return ok
