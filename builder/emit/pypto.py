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

import inspect

from ..graph import Stage, TypedGraph
from ..inits import recipe_call
from ..schedule import LoopBlock, Schedule
from ..spec import DType
from ..stage_api import TORCH_NAMES, TensorType
from .common import (BodyCtx, Constants, add_tile_constants, call, dim_code, dim_constants, docstring, header,
                     indent, tile_name, var, wrap_long_lines)

NAME = "pypto"
PL_DTYPE = {DType.bf16: "pl.BF16", DType.fp32: "pl.FP32", DType.int32: "pl.INT32", DType.int8: "pl.INT8"}
NOTE = ("Backend: PyPTO (`pl`). Derived constants (RoPE lane indices) are built inside the program;\n"
        "no selector matrices or other derived tensors are asked of the caller.")


def view_shape(t: TensorType) -> list[str]:
    """The 2-D view of a tensor: leading dims folded into rows; a 1-D tensor becomes one row."""
    texts = [dim_code(d.text) for d in t.shape]
    if len(texts) == 1:
        return ["1", texts[0]]
    return [" * ".join(texts[:-1]), texts[-1]]


class Names:
    """The program's name for each tensor reference (parameter, output parameter or buffer) and for
    its 2-D view; records which views the bodies used so that only those are defined."""

    def __init__(self, tg: TypedGraph):
        self.tg = tg
        self.out_of = {ref: name for name, ref in tg.outputs.items()}
        self.used_views: dict[str, str] = {}  # ref -> view name, in first-use order
        self.reserved = {self.base(r) for r in tg.types} | {f"{self.base(r)}_2d" for r in tg.types}

    def base(self, ref: str) -> str:
        return ref if ref in self.tg.inputs else self.out_of.get(ref) or var(ref)

    def is_buffer(self, ref: str) -> bool:
        return ref not in self.tg.inputs and ref not in self.out_of

    def view(self, ref: str) -> str:
        """The 2-D view: buffers are created 2-D; parameters of another rank get a reshaped view."""
        if self.is_buffer(ref) or len(self.tg.types[ref].shape) == 2:
            return self.base(ref)
        return self.used_views.setdefault(ref, f"{self.base(ref)}_2d")

    def local(self, stage_id: str, name: str) -> str:
        """A stage-local variable name that no tensor of the program uses."""
        candidate = f"{stage_id}_{name}"
        return candidate + "_tile" if candidate in self.reserved else candidate


class PyptoCtx(BodyCtx):
    """PyPTO specifics: 2-D view names, stage-prefixed locals (the `pl` parser's scope is flat),
    and setup code for constants derived once before the block's loops."""

    def __init__(self, stage: Stage, block: LoopBlock, tg: TypedGraph, consts: Constants, names: Names,
                 setup: list[str]):
        super().__init__(stage, block, tg, consts)
        self._names, self._setup = names, setup
        self.prologue: list[str] = []

    def src(self, port: str) -> str:
        return self._names.view(self.stage.inputs[port])

    def dst(self, port: str) -> str:
        return self._names.view(self.stage.ref(port))

    def scalar_src(self, port: str) -> str:
        """The input as declared (N-D), for `pl.read` of scalars."""
        return self._names.base(self.stage.inputs[port])

    def local(self, name: str) -> str:
        return self._names.local(self.stage.id, name)

    def let(self, name: str, code: str, comment: str = "") -> str:
        """A stage-local scalar defined at the top of the stage's body; returns its name."""
        local = self.local(name)
        self.prologue.append(f"{local} = {code}" + (f"  # {comment}" if comment else ""))
        return local

    def setup(self, buffers: list[tuple[str, list[str], DType]], body: list[str]) -> None:
        """Tensors computed once before this block's loops, in their own `pl.at` scope."""
        for name, shape, dtype in buffers:
            self._setup.append(f"{name} = pl.create_tensor([{', '.join(shape)}], dtype={PL_DTYPE[dtype]})")
        self._setup.append(f'with pl.at(level=pl.Level.CORE_GROUP, name_hint="{self.stage.id}_constants"):')
        self._setup += indent(body, 4)

    def cast(self, code: str, port: str) -> str:
        """fp32 tile -> the dtype of output `port`, rounding to nearest even like the golden."""
        dtype = self.stage.out_types[port].dtype
        if dtype is DType.fp32:
            return code
        return f"pl.cast({code}, target_type={PL_DTYPE[dtype]}, mode=\"rint\")"


def _loops(block: LoopBlock) -> list[str]:
    """The orchestration loop nest of a block: `pl.parallel` for parallel axes, `pl.range` otherwise."""
    lines = []
    for depth, axis in enumerate(block.domain):
        loop = "pl.parallel" if axis.parallel else "pl.range"
        trips = dim_code(axis.extent.text)
        if axis.tile != 1:
            trips += f" // {tile_name(block, axis)}"
        lines.append("    " * depth + f"for {axis.var} in {loop}({trips}):")
    return lines


def _block(block: LoopBlock, tg: TypedGraph, consts: Constants, names: Names) -> list[str]:
    ops = ", ".join(f"{s.id} ({s.op.name}, {s.loc.file}:{s.loc.line})" for s in block.stages)
    lines = [f"# Loop block {block.index}: {ops}", f"# {block.describe_domain()}"]
    add_tile_constants(block, consts, "task")
    setup: list[str] = []
    body: list[str] = []
    for stage in block.stages:
        body.append(f"# stage {stage.id} ({stage.op.name})")
        ctx = PyptoCtx(stage, block, tg, consts, names, setup)
        tile_body = stage.op.pypto(ctx)
        body += ctx.prologue + tile_body
    depth = len(block.domain)
    scope = [f'with pl.at(level=pl.Level.CORE_GROUP, name_hint="{block.name}"):'] + indent(body, 4)
    return lines + setup + _loops(block) + indent(scope, 4 * depth)


def _kernel(tg: TypedGraph, sched: Schedule, consts: Constants, names: Names) -> list[str]:
    params = [f"{n}: pl.Tensor[[{', '.join(dim_code(d.text) for d in t.shape)}], {PL_DTYPE[t.dtype]}]"
              for n, t in tg.inputs.items()]
    params += [f"{n}: pl.Out[pl.Tensor[[{', '.join(dim_code(d.text) for d in tg.types[r].shape)}], "
               f"{PL_DTYPE[tg.types[r].dtype]}]]" for n, r in tg.outputs.items()]
    lines = ["@pl.jit", f"def {tg.spec.name}("] + [f"    {p}," for p in params] + ["):"]
    lines.append(f'    """{tg.spec.name}: {len(sched.blocks)} loop blocks; parameters as in the module docstring."""')
    blocks: list[str] = []
    for b in sched.blocks:
        blocks += [""] + _block(b, tg, consts, names)
    body = [f"{view} = pl.reshape({names.base(ref)}, [{', '.join(view_shape(tg.types[ref]))}])"
            for ref, view in names.used_views.items()]
    for b in sched.blocks:
        for ref in b.writes + b.scratch:
            if names.is_buffer(ref):
                t = tg.types[ref]
                body.append(f"{var(ref)} = pl.create_tensor([{', '.join(view_shape(t))}], dtype={PL_DTYPE[t.dtype]})")
    return lines + indent(body + blocks, 4) + ["", f"    return {', '.join(tg.outputs)}"]


def _golden(tg: TypedGraph) -> list[str]:
    fns = []
    for st in tg.stages.values():
        src = inspect.getsource(type(st.op).golden_fn)
        if src not in fns:
            fns.append(src.rstrip())
    lines = [f"def golden_{tg.spec.name}(tensors):",
             '    """Torch golden of the same stage graph: each stage\'s reference, in schedule order. Fills the',
             '    outputs of `tensors` in place."""']
    for st in tg.stages.values():
        args = [f"{port}={_value_of(ref, tg)}" for port, ref in st.inputs.items()]
        args += [f"{k}={v!r}" for k, v in st.op.golden_args(st.params, tg.dims, {**st.in_types, **st.out_types}).items()]
        lines += call(f"{_golden_var(st.id)} = {type(st.op).golden_fn.__name__}", args, indent=4)
    for name, ref in tg.outputs.items():
        lines.append(f'    tensors["{name}"][:] = {_value_of(ref, tg)}')
    return ["\n\n\n".join(fns), "\n".join(lines)]


def _golden_var(stage_id: str) -> str:
    return stage_id if stage_id not in ("tensors", "torch") else stage_id + "_"


def _value_of(ref: str, tg: TypedGraph) -> str:
    if ref in tg.inputs:
        return f'tensors["{ref}"]'
    stage, port = ref.split(".", 1)
    return f'{_golden_var(stage)}["{port}"]'


def _harness(tg: TypedGraph, seed: int) -> list[str]:
    fns, specs = [], []
    for name, t in tg.inputs.items():
        fn, kwargs = recipe_call(tg, name, seed)
        src = inspect.getsource(fn).rstrip()
        if src not in fns:
            fns.append(src)
        dtype = f"torch.{TORCH_NAMES[t.dtype]}"
        args = ", ".join([fn.__name__, dtype] + [f"{k}={v!r}" for k, v in kwargs.items()])
        shape = ", ".join(dim_code(d.text) for d in t.shape)
        specs.append(f'        TensorSpec("{name}", [{shape}], {dtype}, init_value=init({args})),')
    for name, ref in tg.outputs.items():
        t = tg.types[ref]
        shape = ", ".join(dim_code(d.text) for d in t.shape)
        specs.append(f'        TensorSpec("{name}", [{shape}], torch.{TORCH_NAMES[t.dtype]}, is_output=True),')
    build = ["def build_tensor_specs():",
             '    """Inputs in the kernel\'s parameter order, with the YAML\'s deterministic init recipes."""',
             "    import torch",
             "    from golden import TensorSpec", "",
             "    def init(recipe, dtype, /, **args):",
             '        """An initializer: `recipe(**args)` as `dtype` (the YAML recipe\'s function above)."""',
             "        return lambda: recipe(**args).to(dtype)", "",
             "    return ["] + specs + ["    ]"]
    return ["\n\n\n".join(fns), "\n".join(build)]


def _main(tg: TypedGraph) -> list[str]:
    lines = ['if __name__ == "__main__":',
             "    import argparse",
             "",
             "    from golden import ratio_allclose, run_jit",
             "",
             "    parser = argparse.ArgumentParser()",
             '    parser.add_argument("-p", "--platform", type=str, default="a2a3",',
             '                        choices=["a2a3", "a2a3sim", "a5", "a5sim"])',
             '    parser.add_argument("-d", "--device", type=int, default=0)',
             "    args = parser.parse_args()",
             "    result = run_jit(",
             f"        fn={tg.spec.name},",
             "        specs=build_tensor_specs(),",
             f"        golden_fn=golden_{tg.spec.name},",
             "        runtime_cfg=dict(platform=args.platform, device_id=args.device),",
             f"        rtol={tg.spec.tolerance.rtol!r},",
             f"        atol={tg.spec.tolerance.atol!r},",
             "        compare_fn={"]
    for name in tg.outputs:
        tol = tg.spec.outputs[name].tolerance or tg.spec.tolerance
        lines.append(f'            "{name}": ratio_allclose(atol={tol.atol!r}, rtol={tol.rtol!r}, '
                     f"max_error_ratio={tol.max_error_ratio!r}),")
    lines += ["        },",
              "    )",
              "    if not result.passed:",
              "        if result.error:",
              "            print(result.error)",
              "        raise SystemExit(1)"]
    return lines


def emit(tg: TypedGraph, sched: Schedule, seed: int = 0) -> str:
    consts, names = Constants(), Names(tg)
    kernel = "\n".join(_kernel(tg, sched, consts, names))
    tail = _golden(tg) + _harness(tg, seed) + ["\n".join(_main(tg))]
    code = kernel + "\n".join(tail)
    dims = dim_constants(tg, code)
    const_lines = ["# dims (sizes " + tg.dims.size_set + ")"]
    const_lines += [f"{n} = {v}" + (f"  # {c}" if c else "") for n, v, c in dims]
    const_lines += ["", "# tiling and stage constants"]
    const_lines += [f"{n} = {v!r}  # {c}" for n, (v, c) in consts.items.items()]
    derived = [(n, c, v) for n, v, c in dims if c] + [(n, c, v) for n, (v, c) in consts.items.items()]
    head = [header(tg, NAME), docstring(tg, sched, derived, NOTE), "import pypto.language as pl",
            "\n".join(const_lines)]
    return wrap_long_lines("\n\n".join(head) + "\n\n\n" + "\n\n\n".join([kernel] + tail) + "\n")

