"""PyPTO backend: one `pl` program per kernel in pypto-lib house style, with its golden and harness.

Layout of the file: header, docstring (every parameter, derived constant and loop block), imports,
UPPER_SNAKE constants, the `@pl.jit` kernel whose body has one top-level loop block per schedule
block (`pl.parallel` orchestration loops around a named `pl.at` scope), then the torch golden (each
stage's `golden_<op>` copied verbatim from `stages/` and called in schedule order), the tensor-spec
harness built from the YAML init recipes, and a `__main__` with the usual `-p/--platform` and
`-d/--device` flags. Stage ops supply only the body inside `pl.at` through `Op.pypto(ctx)`.

Every tensor is addressed through a 2-D view `[rows, last dim]` (1-D tensors as `[1, n]`), because
NPU tiles are 2-D.
"""
from __future__ import annotations

import functools
import inspect
from typing import Optional

from .. import comparators
from ..graph import Stage, TypedGraph
from ..inits import recipe_call
from ..schedule import LoopBlock, Schedule
from ..spec import DType
from ..dtypes import pl_code, torch_code
from ..stage_api import TensorType
from ..stagefault import in_stage
from . import naming
from .common import (BodyCtx, FileContext, default_var, docstring, docstring_literal, header, indent, wrap_long_lines)

NAME = "pypto"
NOTE = ("Backend: PyPTO (`pl`). Derived constants (RoPE lane indices) are built inside the program;\n"
        "no selector matrices or other derived tensors are asked of the caller.")


class Names:
    """The kernel function's name for each tensor reference (parameter, output parameter or buffer), for
    its 2-D view, and for stage locals (the `pl` parser's scope is flat, so these are allocated once
    for the whole function); records which views the bodies used so that only those are defined."""

    def __init__(self, tg: TypedGraph, file: FileContext):
        self.tg, self.file = tg, file
        self.out_of = {ref: name for name, ref in tg.outputs.items()}
        self.table = file.table
        # (ref, 2-D extents) -> (view placeholder, the type it is read as), in first-use order
        self.used_views: dict[tuple, tuple[str, TensorType]] = {}
        for ref in tg.types:  # tensors first, so that they keep their natural names
            self.base(ref)

    def base(self, ref: str) -> str:
        if ref in self.tg.inputs:
            return self.table.fixed(ref)
        if ref in self.out_of:
            return self.table.fixed(self.out_of[ref])
        return self.table.claim(("buffer", ref), default_var(ref))

    def is_buffer(self, ref: str) -> bool:
        return ref not in self.tg.inputs and ref not in self.out_of

    def view(self, ref: str, read_as: Optional[TensorType] = None) -> str:
        """The 2-D view of `ref` (`read_as`: the type a stage reads it with, after `reshape:`). Buffers
        are created 2-D, parameters of another rank get a reshaped view, and a tensor read with other
        2-D extents than its own gets a view of its own."""
        own = self.tg.types[ref]
        t = read_as or own
        extents = _extents(t)
        if extents == _extents(own) and (self.is_buffer(ref) or len(own.shape) == 2):
            return self.base(ref)
        key = (ref, extents)
        if key not in self.used_views:
            name = ref if ref in self.tg.inputs else self.out_of.get(ref, default_var(ref))
            suffix = "_2d" if extents == _extents(own) else "_as_" + "x".join(map(str, extents))
            self.used_views[key] = (self.table.claim(("view",) + key, name + suffix), t)
        return self.used_views[key][0]

    def local(self, stage_id: str, name: str) -> str:
        """A stage-local variable, `<stage>_<name>` unless that is taken."""
        return self.table.claim(("local", stage_id, name), f"{stage_id}_{name}", f"{stage_id}_{name}_tile")

    def view_shape(self, t: TensorType) -> list[str]:
        """The 2-D view of a tensor: leading dims folded into rows; a 1-D tensor becomes one row."""
        texts = [self.file.expr(d.text) for d in t.shape]
        if len(texts) == 1:
            return ["1", texts[0]]
        return [" * ".join(texts[:-1]), texts[-1]]


def _extents(t: TensorType) -> tuple[int, int]:
    """The extents of a tensor's 2-D view: leading dims folded into rows; a 1-D tensor is one row."""
    rows = 1
    for d in t.shape[:-1]:
        rows *= d.value
    return rows, t.shape[-1].value


class PyptoCtx(BodyCtx):
    """PyPTO specifics: 2-D view names, stage-prefixed locals (the `pl` parser's scope is flat),
    and setup code for constants derived once before the block's loops."""

    def __init__(self, stage: Stage, block: LoopBlock, tg: TypedGraph, file: FileContext, names: Names,
                 setup: list[str], sizes: dict[str, str], nest: str = ""):
        super().__init__(stage, block, tg, file)
        self._names, self._setup, self._sizes, self._nest = names, setup, sizes, nest
        self.prologue: list[str] = []
        self.pipe_slots: Optional[int] = None

    def limit_pipe_slots(self, slots: int) -> None:
        """Cap the depth of the cross-core pipe ring of this block's scope: PyPTO reserves `slots`
        cube-to-vector tiles of the vector buffer for it (2 by default), which a stage whose own vector
        tiles are large may need for itself."""
        self.pipe_slots = slots if self.pipe_slots is None else min(self.pipe_slots, slots)

    def tile(self, var_name: str) -> str:
        """This instance's tile size: the full tile, or the last, partial one (run as its own loop)."""
        return self._sizes.get(var_name) or self.stride(var_name)

    def tile_value(self, var_name: str) -> int:
        """The number `tile(var_name)` holds."""
        axis = self.axis(var_name)
        return axis.tail if var_name in self._sizes else axis.tile

    def src(self, port: str) -> str:
        return self._names.view(self._stage.inputs[port], self._stage.in_types[port])

    def dst(self, port: str) -> str:
        return self._names.view(self._stage.ref(port))

    def private(self, name: str) -> str:
        """2-D view of the stage's private tensor `name` (handed between its phases)."""
        return self._names.view(self._stage.private_ref(name))

    def scalar_src(self, port: str) -> str:
        """The input as declared (N-D), for `pl.read` of scalars."""
        if port in self._stage.spec.reshape:
            raise ValueError(f"input `{port}` is reshaped: its scalars are read with the declared shape's indices")
        return self._names.base(self._stage.inputs[port])

    def local(self, name: str) -> str:
        """The stage's local `name`; in a block's later loop nests (partial tiles) suffixed with the nest:
        the `pl` parser's scope is the whole function, and a name keeps one shape there."""
        return self._names.local(self._stage.id, name + self._nest)

    def first_row(self, var: str = "hb", outer: str = "t", port: Optional[str] = None) -> str:
        """Local holding the first view row of this tile of axis `var` (rows `outer * extent + ...`),
        the head-tile prologue of the per-head stages."""
        extent = self.file.expr(self.axis(var).extent.text)
        return self.let("r0", f"{outer} * {extent} + {var} * {self.stride(var)}", "first row of this head tile")

    def part(self, buffer: str, var: str = "hb") -> str:
        """A per-tile constant buffer (made for the full tile in `setup`), cut to this tile's rows."""
        return buffer if self.tile(var) == self.stride(var) else f"{buffer}[0:{self.tile(var)}, :]"

    def let(self, name: str, code: str, comment: str = "") -> str:
        """A stage-local scalar defined at the top of the stage's body; returns its name."""
        local = self.local(name)
        self.prologue.append(f"{local} = {code}" + (f"  # {naming.comment(comment)}" if comment else ""))
        return local

    def setup(self, buffers: list[tuple[str, list[str], DType]], body: list[str]) -> None:
        """Tensors computed once before this block's loops, in their own `pl.at` scope (once per block,
        however many loop nests the block's partial tiles need)."""
        lines = [f"{name} = pl.create_tensor([{', '.join(shape)}], dtype={pl_code(dtype)})"
                 for name, shape, dtype in buffers]
        hint = naming.string(f"{self._stage.id}_constants")
        lines += [f"with pl.at(level=pl.Level.CORE_GROUP, name_hint={hint}):"] + indent(body, 4)
        if not _contains(self._setup, lines):
            self._setup += lines

    def fp32(self, port: str, code: str) -> str:
        """Input `port`'s tile `code` in fp32 for arithmetic: as it is when it already is (PyPTO refuses a
        cast to a tile's own dtype); int8 through fp16, which holds every int8 (a2a3 has no direct int8 ->
        fp32 conversion)."""
        dtype = self.type(port).dtype
        if dtype is DType.fp32:
            return code
        if dtype is DType.int8:
            code = f"pl.cast({code}, target_type=pl.FP16)"
        return f"pl.cast({code}, target_type=pl.FP32)"

    def cast(self, code: str, port: str) -> str:
        """fp32 tile -> the dtype of output `port`, rounding to nearest even like the golden."""
        dtype = self._stage.out_types[port].dtype
        if dtype is DType.fp32:
            return code
        return f"pl.cast({code}, target_type={pl_code(dtype)}, mode=\"rint\")"


def _contains(lines: list[str], part: list[str]) -> bool:
    return any(lines[i:i + len(part)] == part for i in range(len(lines) - len(part) + 1))


def _instances(block: LoopBlock) -> list[dict[str, bool]]:
    """The loop nests a block needs: for each tiled axis, its whole tiles and, when the tile does not
    divide the extent, the last, partial tile as a nest of its own (`pl` tiles have static shapes)."""
    nests: list[dict[str, bool]] = [{}]
    for axis in block.domain:
        if axis.tile == 1:
            continue
        parts = ([False] if axis.trips > 1 or not axis.tail else []) + ([True] if axis.tail else [])
        nests = [{**n, axis.var: last} for n in nests for last in parts]
    return nests


def _loops(block: LoopBlock, file: FileContext, last: dict[str, bool]) -> list[str]:
    """The orchestration loop nest of a block: `pl.parallel` for parallel axes, `pl.range` otherwise."""
    lines = []
    for depth, axis in enumerate(block.domain):
        loop = "pl.parallel" if axis.parallel else "pl.range"
        bounds = file.expr(axis.extent.text)
        if axis.tile != 1:
            whole = f"{bounds} // {file.tile(block, axis)}"
            bounds = f"{whole}, {whole} + 1" if last.get(axis.var) else whole
        lines.append("    " * depth + f"for {axis.var} in {loop}({bounds}):")
    return lines


def _block(block: LoopBlock, tg: TypedGraph, file: FileContext, names: Names) -> list[str]:
    ops = ", ".join(f"{s.id} ({s.op.name}, {naming.comment(file.label(s.loc.file))}:{s.loc.line})"
                    for s in block.stages)
    lines = [f"# Loop block {block.index}: {ops}", f"# {naming.comment(block.describe_domain())}"]
    file.add_tile_constants(block, "task")
    setup: list[str] = []
    nests: list[str] = []
    for index, last in enumerate(_instances(block)):
        sizes = {a.var: file.tail(block, a) for a in block.domain if last.get(a.var)}
        nest = "_last_" + "_".join(sorted(sizes)) if index else ""
        body: list[str] = []
        slots: list[int] = []
        for stage in block.stages:
            body.append(f"# stage {stage.id} ({stage.op.name})")
            ctx = PyptoCtx(stage, block, tg, file, names, setup, sizes, nest)
            with in_stage(stage.id, stage.op.name, stage.loc, "writing its PyPTO tile body"):
                tile_body = stage.op.pypto(ctx)
            body += ctx.prologue + tile_body
            slots += [ctx.pipe_slots] if ctx.pipe_slots is not None else []
        if any(last.values()):
            nests.append("# the last, partial tile of " + ", ".join(v for v, t in last.items() if t))
        options = f", optimizations=[pl.cross_core_slot(slot_num={min(slots)})]" if slots else ""
        scope = [f"with pl.at(level=pl.Level.CORE_GROUP, name_hint={naming.string(block.name)}{options}):"]
        scope += indent(body, 4)
        nests += _loops(block, file, last) + indent(scope, 4 * len(block.domain))
    return lines + setup + nests


def _kernel(tg: TypedGraph, sched: Schedule, file: FileContext, names: Names) -> str:

    def annotation(t: TensorType) -> str:
        return f"pl.Tensor[[{', '.join(file.expr(d.text) for d in t.shape)}], {pl_code(t.dtype)}]"

    params = [f"{names.base(n)}: {annotation(t)}" for n, t in tg.inputs.items()]
    params += [f"{names.base(r)}: pl.Out[{annotation(tg.types[r])}]" for r in tg.outputs.values()]
    lines = ["@pl.jit", f"def {file.kernel()}("] + [f"    {p}," for p in params] + ["):"]
    lines.append(f'    """{tg.spec.name}: {len(sched.blocks)} loop blocks; parameters as in the module docstring."""')
    blocks: list[str] = []
    for b in sched.blocks:
        blocks += [""] + _block(b, tg, file, names)
    views: dict[bool, list[str]] = {False: [], True: []}  # of parameters, then of buffers (once these exist)
    for (ref, _), (view, t) in names.used_views.items():
        shape = ", ".join(names.view_shape(t))
        views[names.is_buffer(ref)].append(f"{view} = pl.reshape({names.base(ref)}, [{shape}])")
    body = views[False]
    for b in sched.blocks:
        for ref in b.writes + b.scratch:
            if names.is_buffer(ref):
                t = tg.types[ref]
                body.append(f"{names.base(ref)} = pl.create_tensor([{', '.join(names.view_shape(t))}], "
                            f"dtype={pl_code(t.dtype)})")
    body += views[True]
    returns = ", ".join(names.base(r) for r in tg.outputs.values())
    return "\n".join(lines + indent(body + blocks, 4) + ["", f"    return {returns}"])


@functools.lru_cache(maxsize=None)
def _source(fn) -> str:
    """A golden's or init function's source, read once per process (not once per stage)."""
    return inspect.getsource(fn)


def _golden(tg: TypedGraph, file: FileContext) -> tuple[str, str]:
    fns = []
    golden_of = {sid: st.op.golden_function(st.params, {**st.in_types, **st.out_types})
                 for sid, st in tg.stages.items()}
    for st in tg.stages.values():
        src = _source(golden_of[st.id]).rstrip()
        if src not in fns:
            fns.append(src)
    lines = [f"def golden_{naming.name(tg.spec.name)}(tensors):",
             '    """Torch golden of the same stage graph: each stage\'s reference, in schedule order. Fills the',
             '    outputs of `tensors` in place."""']
    value_of = _stage_calls(tg, file, tg.stages.values(), {}, lines)
    for name, ref in tg.outputs.items():
        lines.append(f"    tensors[{naming.string(name)}][:] = {value_of(ref)}")
    for name in tg.outputs:
        given = _given(tg, name)
        if given:
            lines += ["", ""] + _given_golden(tg, file, name, given)
    return "\n\n\n".join(fns), "\n".join(lines)


def _given(tg: TypedGraph, name: str) -> list[str]:
    tol = tg.spec.outputs[name].tolerance
    return list(tol.given) if tol else []


def _given_golden(tg: TypedGraph, file: FileContext, name: str, given: list[str]) -> list[str]:
    """`golden_given_<output>(tensors)`: the output's golden recomputed from the kernel's own values of
    the outputs its tolerance names under `given:` (only the stages between them run)."""
    refs = {tg.outputs[g]: g for g in given}
    needed, todo = set(), [tg.outputs[name]]
    while todo:
        sid = tg.producer(ref := todo.pop())
        if ref not in refs and sid is not None and sid not in needed:
            needed.add(sid)
            todo += list(tg.stages[sid].inputs.values())
    shown = ", ".join(f"`{g}`" for g in given)
    lines = [f"def {file.table.claim(('given', name), f'golden_given_{name}')}(tensors):",
             "    " + docstring_literal(f"The golden of `{name}` from the inputs and the kernel's own {shown}.")]
    value_of = _stage_calls(tg, file, [st for sid, st in tg.stages.items() if sid in needed], refs, lines)
    return lines + [f"    return {value_of(tg.outputs[name])}"]


def _stage_calls(tg: TypedGraph, file: FileContext, stages, given: dict[str, str], lines: list[str]):
    """Append one golden call per stage (inputs read with their `reshape:` shapes); returns the code of
    a tensor reference (a kernel input, a `given` output, or a stage result) in `tensors`."""
    result = {st.id: file.table.claim(("golden", st.id), st.id) for st in stages}

    def value_of(ref: str) -> str:
        if ref in tg.inputs or ref in given:
            return f"tensors[{naming.string(given.get(ref, ref))}]"
        stage, port = ref.split(".", 1)
        return f"{result[stage]}[{naming.string(port)}]"

    for st in stages:
        args = []
        for port, ref in st.inputs.items():
            shape = ", ".join(file.expr(d.text) for d in st.in_types[port].shape)
            args.append(f"{port}={value_of(ref)}" + (f".reshape([{shape}])" if port in st.spec.reshape else ""))
        args += [f"{k}={naming.literal(v)}" for k, v in
                 st.op.golden_args(st.params, tg.dims, {**st.in_types, **st.out_types}).items()]
        golden = st.op.golden_function(st.params, {**st.in_types, **st.out_types})
        lines.append(f"    {result[st.id]} = {golden.__name__}({', '.join(args)})")
    return value_of


def _harness(tg: TypedGraph, seed: int, file: FileContext) -> tuple[str, str]:
    fns, specs = [], []
    for name, t in tg.inputs.items():
        fn, kwargs = recipe_call(tg, name, seed)
        src = _source(fn).rstrip()
        if src not in fns:
            fns.append(src)
        dtype = torch_code(t.dtype)
        args = ", ".join([fn.__name__, dtype] + [f"{k}={naming.literal(v)}" for k, v in kwargs.items()])
        shape = ", ".join(file.expr(d.text) for d in t.shape)
        specs.append(f"        TensorSpec({naming.string(name)}, [{shape}], {dtype}, init_value=init({args})),")
    for name, ref in tg.outputs.items():
        t = tg.types[ref]
        shape = ", ".join(file.expr(d.text) for d in t.shape)
        specs.append(f"        TensorSpec({naming.string(name)}, [{shape}], {torch_code(t.dtype)}, "
                     "is_output=True),")
    build = ["def build_tensor_specs():",
             '    """Inputs in the kernel\'s parameter order, with the YAML\'s deterministic init recipes."""',
             "    import torch",
             "    from golden import TensorSpec", "",
             "    def init(recipe, dtype, /, **args):",
             '        """An initializer: `recipe(**args)` as `dtype` (the YAML recipe\'s function above)."""',
             "        return lambda: recipe(**args).to(dtype)", "",
             "    return ["] + specs + ["    ]"]
    return "\n\n\n".join(fns), "\n".join(build)


def _comparator(tg: TypedGraph, file: FileContext, name: str) -> str:
    """pypto-lib's own comparator where it expresses the output's tolerance, else `tolerance_compare`."""
    tol = tg.spec.outputs[name].tolerance or tg.spec.tolerance
    plain = not (tol.positive or tol.given)
    if plain and tol.compare == "allclose":
        return (f"ratio_allclose(atol={naming.literal(tol.atol)}, rtol={naming.literal(tol.rtol)}, "
                f"max_error_ratio={naming.literal(tol.max_error_ratio)})")
    if plain and tol.compare == "reldiff":
        return f"ratio_reldiff(diff_thd={naming.literal(tol.diff)}, pct_thd={naming.literal(tol.max_error_ratio)})"
    args = [f"{k}={naming.literal(v)}" for k, v in tol.model_dump(exclude={"given"}).items()
            if v is not None and k in tol.fields_read() and (k != "positive" or v)
            and (k, v) != ("allowed_bad", "round_half_even")]  # judge's default: pypto-lib's rounding
    if tol.given:
        args.append(f"given={file.table.claim(('given', name), f'golden_given_{name}')}")
    return f"tolerance_compare({', '.join(args)})"


def _comparators(tg: TypedGraph) -> str:
    """The source of builder/comparators.py's functions when an output needs them, else ""."""
    if all(_comparator_kind(tg, n) != "tolerance_compare" for n in tg.outputs):
        return ""
    return "\n\n\n".join(inspect.getsource(fn).rstrip() for fn in (comparators.judge, comparators.tolerance_compare))


def _comparator_kind(tg: TypedGraph, name: str) -> str:
    tol = tg.spec.outputs[name].tolerance or tg.spec.tolerance
    if tol.positive or tol.given or tol.compare == "codes":
        return "tolerance_compare"
    return "ratio_reldiff" if tol.compare == "reldiff" else "ratio_allclose"


def _main(tg: TypedGraph, file: FileContext) -> str:
    imports = sorted({"ratio_allclose", "run_jit"} | {_comparator_kind(tg, n) for n in tg.outputs}
                     - {"tolerance_compare"})
    lines = ['if __name__ == "__main__":',
             "    import argparse",
             "",
             f"    from golden import {', '.join(imports)}",
             "",
             "    parser = argparse.ArgumentParser()",
             '    parser.add_argument("-p", "--platform", type=str, default="a2a3",',
             '                        choices=["a2a3", "a2a3sim", "a5", "a5sim"])',
             '    parser.add_argument("-d", "--device", type=int, default=0)',
             "    args = parser.parse_args()",
             "    result = run_jit(",
             f"        fn={file.kernel()},",
             "        specs=build_tensor_specs(),",
             f"        golden_fn=golden_{naming.name(tg.spec.name)},",
             "        runtime_cfg=dict(platform=args.platform, device_id=args.device),",
             f"        rtol={naming.literal(tg.spec.tolerance.rtol)},",
             f"        atol={naming.literal(tg.spec.tolerance.atol)},",
             "        compare_fn={"]
    for name in tg.outputs:
        lines.append(f"            {naming.string(name)}: {_comparator(tg, file, name)},")
    lines += ["        },",
              "    )",
              "    if not result.passed:",
              "        if result.error:",
              "            print(result.error)",
              "        raise SystemExit(1)"]
    return "\n".join(lines)


def _contexts(tg: TypedGraph) -> tuple[FileContext, Names]:
    """The file's names, tensors first: a buffer's name depends on the graph alone (see `buffer_names`)."""
    file = FileContext(tg)
    return file, Names(tg, file)


def buffer_names(tg: TypedGraph) -> dict[str, str]:
    """Stage output reference -> the kernel function's local holding it (executors read them back)."""
    file, names = _contexts(tg)
    return {ref: file.table.show(names.base(ref)) for ref in tg.types if names.is_buffer(ref)}


def emit(tg: TypedGraph, sched: Schedule, seed: int = 0) -> str:
    file, names = _contexts(tg)
    kernel = _kernel(tg, sched, file, names)
    golden_fns, golden = _golden(tg, file)
    init_fns, harness = _harness(tg, seed, file)
    chunks = [kernel, golden_fns, golden, init_fns, harness] + [c for c in [_comparators(tg)] if c] + [_main(tg, file)]
    body = [file.table.resolve(c) for c in chunks]  # first: dims used
    dim_lines, const_lines, shown = file.constant_lines(lambda n, v: naming.literal(v))
    head = [header(tg, NAME), docstring(tg, sched, shown, NOTE, file.label), "import pypto.language as pl",
            "\n".join([f"# dims (sizes {naming.name(tg.dims.size_set)})"] + dim_lines
                      + ["", "# tiling and stage constants"] + const_lines)]
    return wrap_long_lines("\n\n".join(head) + "\n\n\n" + "\n\n\n".join(body) + "\n")
