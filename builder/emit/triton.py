"""Triton backend: one module per kernel, one `@triton.jit` kernel per loop block, one launcher.

The mechanism (constants, signatures, grids, buffer allocation, launch order) lives here; each stage
op supplies only its tile body through `Op.triton(ctx)`. Arithmetic runs in fp32 (the CPU interpreter
computes bf16 on raw bits); bf16 results are rounded to nearest even explicitly, so the CPU
interpreter and a GPU produce the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..graph import Stage, TypedGraph
from ..schedule import LoopBlock, Schedule
from .. import dtypes
from ..dtypes import torch_code, triton_code
from ..spec import DType
from ..stage_api import next_pow2
from ..stagefault import in_stage
from . import naming
from .common import (WIDTH, BodyCtx, FileContext, axis_tile, default_var, docstring, header, indent,
                     tuple_code, wrap, wrap_long_lines)
from .naming import NameTable
from .template import Recorder, Template, block_key, written

NAME = "triton"

# Helpers a tile body may ask for by name; only requested ones are emitted.
HELPERS = {
    "round_bf16": '''@triton.jit
def round_bf16(x):
    """fp32 -> bf16, rounding to nearest even on the bits so that every target agrees."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)''',
    "round_half_even": '''@triton.jit
def round_half_even(x):
    """Round fp32 to the nearest integer, ties to even (torch.round semantics)."""
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)''',
}
NOTE = ("Backend: Triton. Verified on the CPU under TRITON_INTERPRET=1; `build --target cuda:sm_90`\n"
        "compiles it for a GPU ahead of time and reports what each block needs there.\n"
        "RoPE lanes are addressed by layout-specific offsets: no selector matrices exist or are needed.")


def ptr(names: NameTable, ref: str) -> str:
    """Kernel argument of a tensor: `attn.o` -> `attn_o_ptr`."""
    key = ("ptr", ref)
    return names.claimed(key) or names.claim(key, default_var(ref) + "_ptr")


class TritonCtx(BodyCtx):
    """Triton specifics: pointer arguments, helper functions, casts with explicit rounding."""

    def __init__(self, stage: Stage, block: LoopBlock, tg: TypedGraph, file: FileContext, helpers: set[str],
                 recorder: Optional[Recorder] = None):
        super().__init__(stage, block, tg, file, recorder)
        self._helpers = helpers
        self._masked: set[str] = set()  # index names that have a `<name>_ok` mask
        self._widths: dict[str, str] = {}  # span name -> its length as code

    def src(self, port: str) -> str:
        """Pointer argument of input `port`."""
        return self.ask(_input_ptr, self._index, port)

    def dst(self, port: str) -> str:
        """Pointer argument of output `port`."""
        return self.ask(_output_ptr, self._index, port)

    def private(self, name: str) -> str:
        """Pointer argument of the stage's private tensor `name` (handed between its phases)."""
        return self.ask(_private_ptr, self._index, name)

    def helper(self, name: str) -> str:
        self._helpers.add(name)
        return name

    # --- masked tiles: extents of any size, cut into power-of-two tiles -------------------------------
    def lanes(self, name: str, var: str) -> list[str]:
        """`name` = the indices along domain axis `var` of this program's tile (with `name_ok` when the
        tile can run past the extent)."""
        axis = self.axis(var)
        tile = self.tile(var)
        lines = [f"{name} = {var} * {tile} + tl.arange(0, {tile})"]
        if axis.tail:
            lines.append(f"{name}_ok = {name} < {self.file.expr(axis.extent.text)}")
            self._masked.add(name)
        return lines

    def span(self, name: str, extent, what: str) -> list[str]:
        """`name` = indices 0 .. extent - 1 of a whole extent (a `Dim`), padded to a power of two and
        masked (`name_ok`) when it is not one. `what` names the padded-width constant."""
        code = self.file.expr(extent.text)
        if extent.value == next_pow2(extent.value):
            self._widths[name] = code
            return [f"{name} = tl.arange(0, {code})"]
        width = self.const(f"{what}_LANES", next_pow2(extent.value), f"{extent.text} padded to a power of two")
        self._masked.add(name)
        self._widths[name] = width
        return [f"{name} = tl.arange(0, {width})", f"{name}_ok = {name} < {code}"]

    def span_width(self, name: str) -> str:
        """The (power-of-two) length of span `name`, for tiles shaped by it."""
        return self._widths[name]

    def mask(self, *index: str) -> Optional[str]:
        """The mask of a tile indexed by `index` (one name per axis), None when every lane is real."""
        parts = []
        for i, name in enumerate(index):
            if name in self._masked:
                where = "" if len(index) == 1 else "[" + ", ".join(":" if j == i else "None"
                                                                   for j in range(len(index))) + "]"
                parts.append(f"{name}_ok{where}")
        return " & ".join(parts) or None

    def load(self, address: str, *index: str, other: str = "0.0", mask: Optional[str] = None) -> str:
        """`tl.load` of a tile indexed by `index`, masked where lanes pass the extents (and by `mask`)."""
        masks = self._masks(index, mask)
        return f"tl.load({address}, mask={masks}, other={other})" if masks else f"tl.load({address})"

    def store(self, address: str, value: str, *index: str, mask: Optional[str] = None) -> str:
        masks = self._masks(index, mask)
        return f"tl.store({address}, {value}, mask={masks})" if masks else f"tl.store({address}, {value})"

    def _masks(self, index: tuple[str, ...], mask: Optional[str]) -> str:
        """The lane masks of a tile indexed by `index` and `mask`, joined by `&`; empty when none applies
        (found without building any text in the usual case, every lane real)."""
        if mask is None and self._masked.isdisjoint(index):
            return ""
        return " & ".join(m for m in (self.mask(*index), mask) if m)

    def cast_for(self, port: str, code: str) -> str:
        """Code converting an fp32 tile to the dtype stored at output `port`."""
        dtype = self._stage.out_types[port].dtype
        if dtype is DType.bf16:
            return f"{self.helper('round_bf16')}({code})"
        return code if dtype is DType.fp32 else f"{code}.to({triton_code(dtype)})"


def block_refs(block: LoopBlock) -> tuple[str, ...]:
    """Tensors a block kernel takes, in argument order (one pointer each)."""
    return block.tensors


# --- requests: the names a block kernel asks for, by what they are to the block (see template.py) ------

def _kernel_name(block: LoopBlock, file: FileContext) -> str:
    key = ("block", block.index)
    return file.table.claimed(key) or file.table.claim(key, f"block{block.index}_{block.name}")


def _argument(block: LoopBlock, file: FileContext, index: int) -> str:
    return ptr(file.table, block_refs(block)[index])


def _input_ptr(block: LoopBlock, file: FileContext, stage: int, port: str) -> str:
    return ptr(file.table, block.stages[stage].inputs[port])


def _output_ptr(block: LoopBlock, file: FileContext, stage: int, port: str) -> str:
    return ptr(file.table, block.stages[stage].ref(port))


def _private_ptr(block: LoopBlock, file: FileContext, stage: int, name: str) -> str:
    return ptr(file.table, block.stages[stage].private_ref(name))


def _kernel_doc(block: LoopBlock, file: FileContext, programs: str) -> str:
    """`programs`: the docstring's lines on the domain (one text for every block of a kind)."""
    ops = ", ".join(f"{s.id} ({s.op.name})" for s in block.stages)
    return file.table.text(f'"""Loop block {block.index}: {ops}.\n\n{programs}\n    """')


def _programs_doc(block: LoopBlock) -> str:
    return "\n".join(wrap(naming.docstring_text(f"One program per point of: {block.describe_domain()}."), WIDTH,
                          initial_indent="    ", subsequent_indent="    "))


def _stage_comment(block: LoopBlock, file: FileContext, stage: int) -> str:
    s = block.stages[stage]
    return file.table.text(f"# stage {s.id} ({s.op.name}), {naming.comment(file.label(s.loc.file))}:{s.loc.line}")


def _block_kernel(block: LoopBlock, tg: TypedGraph, file: FileContext, kinds: dict, key: int) -> tuple[str, frozenset]:
    """A block's kernel, final code, and the helpers it uses: written, or filled in from the code of an
    alike block written before (`kinds`: kind key -> template)."""
    def write(recorder: Recorder) -> str:
        return _write_block_kernel(block, tg, file, recorder)

    return written(kinds, ("kernel", key), block, file, write, renames=True)


def _write_block_kernel(block: LoopBlock, tg: TypedGraph, file: FileContext, recorder: Recorder) -> str:
    ask = recorder.ask
    lines = ["@triton.jit",
             f"def {ask(_kernel_name)}({', '.join(ask(_argument, i) for i in range(len(block_refs(block))))}):",
             "    " + ask(_kernel_doc, _programs_doc(block))]
    for axis in block.domain:
        if axis.tile != 1:
            ask(axis_tile, axis.var)
    lead = len(block.domain) - 2 if len(block.domain) > 3 else 1  # a grid has 3 axes: fold the leading ones
    if lead > 1:
        lines.append(f"    pid = tl.program_id(0)  # {', '.join(a.var for a in block.domain[:lead])}, folded")
        for axis in reversed(block.domain[1:lead]):
            lines += [f"    {axis.var} = pid % {_trips(axis, file)}", f"    pid = pid // {_trips(axis, file)}"]
        lines.append(f"    {block.domain[0].var} = pid")
    else:
        lines.append(f"    {block.domain[0].var} = tl.program_id(0)")
    for i, axis in enumerate(block.domain[lead:], 1):
        lines.append(f"    {axis.var} = tl.program_id({i})")
    for n, stage in enumerate(block.stages):
        if n:
            lines.append("    tl.debug_barrier()  # the next stage reads this program's stores")
        lines.append("    " + ask(_stage_comment, n))
        with in_stage(stage.id, stage.op.name, stage.loc, "writing its Triton tile body"):
            body = stage.op.triton(TritonCtx(stage, block, tg, file, recorder.helpers, recorder))
        lines += indent(body, 4)
    return "\n".join(lines)


def _trips(axis, file: FileContext, tile: Optional[str] = None) -> str:
    """Programs along `axis` as code (`tile`: the constant holding its tile size, for the launcher)."""
    if axis.tile == 1:
        return file.expr(axis.extent.text)
    if tile is None:
        return f"(({file.expr(axis.extent.text)} + {axis.tile} - 1) // {axis.tile})"
    return f"triton.cdiv({file.expr(axis.extent.text)}, {tile})"


def _shape(t, file: FileContext) -> str:
    return tuple_code([file.expr(d.text) for d in t.shape])


# --- the launcher: one function, its lines for each block written once per kind of block ----------------

def _device(block: Optional[LoopBlock], file: FileContext) -> str:
    """The launcher's one local, from the name table too: no local of its own can meet an input's or
    buffer's name, so its final code is a substitution, not a rename pass."""
    return file.table.claim(("local", "device"), "device", "device_")


def _variable(block: LoopBlock, file: FileContext, index: int) -> str:
    """The launcher's variable holding the block's tensor `index`: a kernel input, or a buffer."""
    return _holder(file, block_refs(block)[index])


def _holder(file: FileContext, ref: str) -> str:
    """The launcher's variable holding tensor `ref`: a kernel input, or a buffer."""
    if ref in file.tg.inputs:
        return file.table.fixed(ref)
    return file.table.claimed(("buffer", ref)) or file.table.claim(("buffer", ref), default_var(ref))


def _allocations(block: LoopBlock, file: FileContext, ask) -> str:
    """The buffers of the tensors the block writes (those after the ones it reads)."""
    refs = block_refs(block)
    return "\n".join(f"    {ask(_variable, i)} = torch.empty({_shape(t, file)}, dtype={torch_code(t.dtype)}, "
                     f"device={ask(_device)})"
                     for i in range(len(block.reads), len(refs)) for t in [file.tg.types[refs[i]]])


def _launch(block: LoopBlock, file: FileContext, ask) -> str:
    trips = [_trips(a, file, ask(axis_tile, a.var) if a.tile != 1 else None) for a in block.domain]
    if len(trips) > 3:  # the leading axes share grid axis 0 (the kernel unfolds them)
        trips = [" * ".join(trips[:-2])] + trips[-2:]
    arguments = ", ".join(ask(_variable, i) for i in range(len(block_refs(block))))
    return f"    {ask(_kernel_name)}[{tuple_code(trips)}]({arguments})"


_PARTS = "\0"  # between a block's allocations and its launch, written together (no code holds a NUL)


def _launcher(tg: TypedGraph, sched: Schedule, file: FileContext, kinds: dict, keys: list[int]) -> str:
    """`run`, final code: every name in it comes from the name table. A block's allocations and launch
    are one piece of code per kind of block (they name the same tensors), split apart afterwards; the
    buffers are claimed in block order either way, launches claim nothing."""
    def write(recorder: Recorder) -> str:
        return _allocations(recorder.block, file, recorder.ask) + _PARTS + _launch(recorder.block, file, recorder.ask)

    table = file.table
    device = _device(None, file)  # claimed before any buffer
    allocations, launches = [], []
    for block, key in zip(sched.blocks, keys):
        code, _ = written(kinds, ("launcher", key, len(block.reads)), block, file, write, renames=False)
        allocated, launch = code.split(_PARTS)
        allocations += [allocated] if allocated else []
        launches.append(launch)
    var = {ref: table.name_of(_holder(file, ref)) for ref in tg.inputs}
    var.update((ref, table.name_of(_holder(file, ref))) for b in sched.blocks for ref in b.writes + b.scratch)
    lines = [f"def run({', '.join(['*'] + [var[n] for n in tg.inputs])}):",
        '    """Launch the loop blocks in schedule order on the inputs\' device.',
        "",
        "    Returns the kernel outputs by name, and every buffer the blocks wrote, keyed `stage.port`.",
        '    """',
        "    check_inputs(locals())",
        f"    {table.name_of(device)} = {var[next(iter(tg.inputs))]}.device"]
    lines += allocations + launches
    lines.append("    return {")
    lines += [f"        {naming.string(name)}: {var[ref]}," for name, ref in tg.outputs.items()]
    lines += [f"        {naming.string(ref)}: {var[ref]}," for b in sched.blocks for ref in b.writes + b.scratch]
    lines.append("    }")
    return "\n".join(lines)


def _expected_inputs(tg: TypedGraph, file: FileContext) -> str:
    lines = ["EXPECTED_INPUTS = {"]
    for name, t in tg.inputs.items():
        lines.append(f"    {naming.string(name)}: ({_shape(t, file)}, {torch_code(t.dtype)}),")
    return "\n".join(lines + ["}"])


def _input_check() -> str:
    return "\n".join([
        "def check_inputs(tensors):",
        '    """Fail early, naming the parameter, when a caller passes a tensor of another shape or dtype."""',
        "    for name, (shape, dtype) in EXPECTED_INPUTS.items():",
        "        t = tensors[name]",
        "        want = tuple(int(s) for s in shape)",
        "        if tuple(t.shape) != want or t.dtype != dtype:",
        '            raise ValueError(f"{name}: expected {dtype} {want}, got {t.dtype} {tuple(t.shape)}")'])


@dataclass(frozen=True)
class BlockInterface:
    """A block kernel as emitted: its function name and its pointer arguments (argument, tensor ref)."""

    index: int
    name: str
    args: tuple[tuple[str, str], ...]

    def signature(self, tg: TypedGraph) -> dict[str, str]:
        """Triton's compile signature: pointer argument -> `*bf16`, `*fp32`, `*i32`, `*i8`."""
        return {arg: "*" + dtypes.info(tg.types[ref].dtype).triton_pointee for arg, ref in self.args}


def emit(tg: TypedGraph, sched: Schedule) -> str:
    return _module(tg, sched)[0]


def emit_with_interfaces(tg: TypedGraph, sched: Schedule) -> tuple[str, list[BlockInterface]]:
    """The module's source, and the interface of each of its block kernels (their names, claimed while
    the module was written, read back)."""
    source, file = _module(tg, sched)
    return source, [BlockInterface(b.index, file.table.show(_kernel_name(b, file)),
                                   tuple((file.table.show(ptr(file.table, r)), r) for r in block_refs(b)))
                    for b in sched.blocks]


def _module(tg: TypedGraph, sched: Schedule) -> tuple[str, FileContext]:
    """The module's source, and the names it was written with."""
    file, helpers, kinds = FileContext(tg), set[str](), dict[tuple, Template]()
    numbered: dict[tuple, int] = {}  # block key -> the number of its kind (hashed once per block)
    keys = [numbered.setdefault(block_key(b, block_refs(b)), len(numbered)) for b in sched.blocks]
    kernels = []
    for block, key in zip(sched.blocks, keys):
        code, used = _block_kernel(block, tg, file, kinds, key)
        kernels.append(code)
        helpers |= used
    chunks = [file.table.resolve(_expected_inputs(tg, file)), _input_check(),
              _launcher(tg, sched, file, kinds, keys)]
    body = [HELPERS[h] for h in sorted(helpers)] + kernels + chunks  # resolved first: the dims they use
    dim_lines, const_lines, shown = file.constant_lines(lambda n, v: f"tl.constexpr({naming.literal(v)})")
    head = [header(tg, NAME), docstring(tg, sched, shown, NOTE, file.label),
            "import torch\nimport triton\nimport triton.language as tl", "\n".join(dim_lines + const_lines)]
    # wrapped piece by piece (each a whole statement, its docstrings closed): a large file is never split
    # into lines all at once
    pieces = ["\n\n".join(map(wrap_long_lines, head)), "\n\n\n", "\n\n\n".join(map(wrap_long_lines, body)), "\n"]
    return "".join(pieces), file  # one copy of a large file, not one per `+`
