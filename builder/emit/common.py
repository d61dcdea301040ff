"""What every backend's generated file shares: header, docstring, names and constants, line wrapping.

Every identifier that comes from a spec reaches the code through `FileContext` (placeholders resolved
by `naming.NameTable`), and every piece of free text through the quoting helpers of `naming`.
"""
from __future__ import annotations

import builtins
import functools
import os
import re
import textwrap
from typing import Callable, Optional

from ..graph import PRIVATE, TypedGraph
from ..schedule import Schedule
from . import naming
from .naming import NameTable
from .template import Answer, Recorder, view

GENERATOR = "build"
WIDTH = 100


def spec_label(file: str) -> str:
    """How generated files name their spec: relative to the current directory when it lies below it,
    else by its name alone (an author's absolute paths stay out of generated code)."""
    return _label(file, os.getcwd())


@functools.lru_cache(maxsize=64)  # asked once per stage comment: path arithmetic once per file and directory
def _label(file: str, cwd: str) -> str:
    rel = os.path.relpath(os.path.join(cwd, file), cwd)   # `../here/k.yaml` from `here` is `k.yaml`
    return os.path.basename(file) if rel.startswith("..") or os.path.isabs(rel) else rel


def header(tg: TypedGraph, backend: str) -> str:
    loc = tg.spec.loc
    return (f"# @generated from {naming.comment(spec_label(loc.file))}:{loc.line} by `{GENERATOR}` — do not edit.\n"
            f"# kernel {naming.name(tg.spec.name)}, backend {backend}, sizes {naming.name(tg.dims.size_set)}")


def default_var(ref: str) -> str:
    """The preferred identifier of a tensor reference: `attn.o` -> `attn_o`, a stage's private
    `attn.~part_m` -> `attn_part_m` (allocated per file, so these never meet a user name)."""
    return ref.replace(".", "_").replace(PRIVATE, "")


class FileContext:
    """The names of one generated file: its top-level scope (dims and the kernel keep their names;
    constants and block functions are allocated) and the constants it defines, in first-use order."""

    def __init__(self, tg: TypedGraph):
        self.tg = tg
        self.table = NameTable(taken=dir(builtins))
        for n in list(tg.dims) + [tg.spec.name] + list(tg.inputs) + list(tg.outputs):
            self.table.fixed(n)
        self.constants: dict[str, tuple[object, str]] = {}  # placeholder -> (value, comment)
        self._exprs: dict[str, str] = {}
        self._cwd = os.getcwd()  # one directory for the whole file (labels are asked for each stage)

    def label(self, spec_file: str) -> str:
        """`spec_label(spec_file)`."""
        return _label(spec_file, self._cwd)

    def expr(self, text) -> str:
        """Code of a dim expression (dims as placeholders)."""
        text = str(text)
        if text not in self._exprs:
            self._exprs[text] = self.table.expr_code(text)
        return self._exprs[text]

    def kernel(self) -> str:
        return self.table.fixed(self.tg.spec.name)

    def const(self, key: tuple, preferred: str, value: object, comment: str = "") -> str:
        ph = self.table.claim(("const",) + key, preferred)
        if ph in self.constants and self.constants[ph][0] != value:
            raise ValueError(f"constant {preferred} given two values: {self.constants[ph][0]!r} and {value!r}")
        self.constants.setdefault(ph, (value, comment))
        return ph

    def _defined(self, key: tuple, value: object) -> str | None:
        """Constant `key` when `const` defined it as `value` already (asked again by each use: its name and
        comment need not be spelled again)."""
        ph = self.table.claimed(("const",) + key)
        return ph if ph is not None and self.constants[ph][0] == value else None

    def tile(self, block, axis, per: str = "program") -> str:
        """Constant holding the tile size of the block's domain axis."""
        key = ("tile", block.stages[0].id, axis.var)
        if found := self._defined(key, axis.tile):
            return found
        preferred = f"{block.stages[0].id.upper()}_{axis.var.upper()}_TILE"
        default = f", {axis.source.param} default" if axis.source and axis.source.defaulted else ""
        return self.const(key, preferred, axis.tile, f"{axis.extent.text} tile per {per}{default}")

    def tail(self, block, axis) -> str:
        """Constant holding the size of the block's last, partial tile of `axis`."""
        preferred = f"{block.stages[0].id.upper()}_{axis.var.upper()}_TAIL"
        return self.const(("tail", block.stages[0].id, axis.var), preferred, axis.tail,
                          f"{axis.extent.text} % {axis.tile}: the last tile")

    def add_tile_constants(self, block, per: str) -> None:
        for axis in block.domain:
            if axis.tile != 1:
                self.tile(block, axis, per)

    def dim_constants(self) -> list[tuple[str, int | float, str]]:
        """(name, value, expression) of each kernel dim the resolved code uses, free dims first, then derived."""
        used = self.table.used()
        free = [(n, self.tg.dims[n], "") for n in self.tg.spec.sizes[self.tg.dims.size_set] if n in used]
        derived = [(n, self.tg.dims[n], str(self.tg.spec.dims[n])) for n in self.tg.spec.dims if n in used]
        return free + derived

    def constant_lines(self, define) -> tuple[list[str], list[str], list[tuple[str, str, object]]]:
        """Definitions of the dims the resolved code uses and of the constants (`define(name, value)` ->
        code), and the (name, meaning, value) list the docstring shows."""
        dims = self.dim_constants()
        consts = [(self.table.show(ph), v, c) for ph, (v, c) in self.constants.items()]

        def lines(items) -> list[str]:
            return [f"{n} = {define(n, v)}" + (f"  # {naming.comment(c)}" if c else "") for n, v, c in items]

        return lines(dims), lines(consts), [(n, c, v) for n, v, c in dims + consts if c]


def wrap(text: str, width: int = WIDTH, initial_indent: str = "", subsequent_indent: str = "") -> list[str]:
    """`textwrap.wrap`, at a fraction of its cost for plain text (called once or twice per loop block):
    text of printable characters, single spaces and no hyphens is filled greedily word by word, which is
    what textwrap does with it (tests/test_emit_common.py compares the two). Each line ends at the last
    space that lets it fit, found by `rfind` rather than adding words one at a time."""
    if (not text.isprintable() or "-" in text or not text or text[0] == " " or text[-1] == " " or "  " in text
            or len(initial_indent) + len(text) > width  # text that fits on one line is that line
            and max(map(len, text.split(" "))) > width - max(len(initial_indent), len(subsequent_indent))):
        return textwrap.wrap(text, width, initial_indent=initial_indent, subsequent_indent=subsequent_indent)
    lines, start, indent = [], 0, initial_indent
    while len(indent) + len(text) - start > width:
        end = text.rfind(" ", start, start + width - len(indent) + 1)  # found: the next word fits alone
        lines.append(indent + text[start:end])
        start, indent = end + 1, subsequent_indent
    return lines + [indent + text[start:]]


def _item(head: str, text: str) -> list[str]:
    """A docstring list item: `head` then `text`, continuation lines indented under it."""
    return wrap(f"{head} {text}", WIDTH, initial_indent="    ", subsequent_indent="        ")


def docstring(tg: TypedGraph, sched: Schedule, constants: list[tuple[str, str, object]], backend_note: str,
              label: Callable[[str], str] = spec_label) -> str:
    """Module docstring listing every parameter, output, derived constant and loop block (`label`: how
    it names the spec file)."""
    spec = tg.spec
    lines = textwrap.wrap(" ".join(spec.doc.split()), WIDTH - 3) + [""] + backend_note.splitlines()
    lines += ["", "Parameters:"]
    for name, t in tg.inputs.items():
        lines += _item(f"{name} ({t.describe()}):", spec.inputs[name].doc or "(no doc in the YAML)")
    lines += ["", "Returns:"]
    for name, ref in tg.outputs.items():
        lines += _item(f"{name} ({tg.types[ref].describe()}):", spec.outputs[name].doc or f"from `{ref}`")
    lines += ["", "Constants derived from the YAML:"]
    for name, text, value in constants:
        lines += _item(f"{name} = {value}:", text)
    if not constants:
        lines.append("    none")
    lines += ["", "Loop blocks, in schedule order:"]
    described: dict[int, str] = {}  # alike blocks share one domain object (and its text)
    for b in sched.blocks:
        ops = ", ".join(f"{s.id} ({s.op.name}, {label(s.loc.file)}:{s.loc.line})" for s in b.stages)
        if id(b.domain) not in described:
            described[id(b.domain)] = b.describe_domain()
        lines += _item(f"{b.index}. {ops}:", described[id(b.domain)])
    return docstring_literal("\n".join(line.rstrip() for line in lines) + "\n")


def docstring_literal(text: str) -> str:
    """A triple-quoted literal whose value is `text` (escaped by `naming.docstring_text`)."""
    return f'"""{naming.docstring_text(text)}"""'


def tuple_code(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


class BodyCtx:
    """What any backend offers a stage's tile body: its tensors, dims, tiles and constants as code.

    A tile body reads `stage` (a `StageView`: no id, no tensor names), `p`, `dims`, `phase` and these
    methods; `block`, `tg` and `file` are the mechanism's. Every name that depends on which stage asks
    comes from `ask`, so that alike blocks can share their code (builder/emit/template.py).
    Backends subclass it with their own pointer/view naming and casting helpers."""

    def __init__(self, stage, block, tg, file: FileContext, recorder: Optional[Recorder] = None):
        self._stage, self.stage = stage, view(stage)
        self.block, self.tg = block, tg
        self.p, self.dims = stage.params, tg.dims
        self.file, self.names = file, file.table
        self.phase = block.phase.name if block.phase else ""  # for a stage run as several blocks
        self._index = block.stages.index(stage)  # requests name the stage by its place in the block
        self._recorder = recorder

    def ask(self, answer: Answer, *args) -> str:
        """The name `answer(block, file, *args)` gives, recorded when the block's code is to be shared."""
        if self._recorder is None:
            return answer(self.block, self.file, *args)
        return self._recorder.ask(answer, *args)

    def type(self, port: str):
        """Type of input `port`, else of output `port`."""
        return self._stage.in_types.get(port) or self._stage.out_types[port]

    def dim(self, port: str, axis: int) -> str:
        return self.file.expr(self.type(port).shape[axis].text)

    def expr(self, text) -> str:
        return self.file.expr(self.dims.dim(text).text)

    def axis(self, var_name: str):
        return block_axis(self.block, var_name)

    def tile(self, var_name: str) -> str:
        """Constant holding the size of this program's tile of domain axis `var_name` (backends that run
        a partial last tile separately override it there)."""
        return self.stride(var_name)

    def stride(self, var_name: str) -> str:
        """Constant holding the step between tiles of domain axis `var_name` (the full tile size)."""
        return self.ask(axis_tile, var_name)

    def size(self, param: str) -> int:
        """The size chosen for tile param `param` of this stage (explicit or defaulted)."""
        return self._stage.tiles[param].size

    def const(self, suffix: str, value, comment: str = "") -> str:
        return self.ask(stage_const, self._index, suffix, value, comment)

    def show(self, code: str) -> str:
        """`code` with final names (for tools that read tile bodies, such as fault injection: the block's
        code then depends on its names, and is not shared)."""
        self._not_shared()
        return self.file.table.show(code)

    def hide(self, code: str) -> str:
        """Inverse of `show`."""
        self._not_shared()
        return self.file.table.hide(code)

    def _not_shared(self) -> None:
        if self._recorder is not None:
            self._recorder.shareable = False


def block_axis(block, var_name: str):
    return next(a for a in block.domain if a.var == var_name)


def axis_tile(block, file: FileContext, var_name: str, per: str = "program") -> str:
    """Request: the tile-size constant of the block's axis `var_name`."""
    return file.tile(block, block_axis(block, var_name), per)


def stage_const(block, file: FileContext, index: int, suffix: str, value, comment: str) -> str:
    """Request: the constant `suffix` of the block's stage `index` (`<STAGE>_<SUFFIX>`)."""
    stage = block.stages[index]
    return file.const((stage.id, suffix), f"{stage.id.upper()}_{suffix}", value, comment)


def indent(lines: list[str], n: int) -> list[str]:
    pad = " " * n
    return [pad + line if line else line for line in lines]


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` characters outside brackets and strings (a backslash in a string escapes the next
    character). Only the characters that matter are visited, found by one regular expression."""
    if _OPENING.search(text) is None:  # a plain argument list (a launch of a block kernel)
        return text.split(sep)
    parts, depth, quote, start, escaped_at = [], 0, "", 0, -1
    for mark in _marks(sep).finditer(text):
        i = mark.start()
        if i == escaped_at:
            continue
        ch = text[i]
        if quote:
            if ch == "\\":
                escaped_at = i + 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


@functools.lru_cache(maxsize=4)
def _marks(sep: str) -> re.Pattern:
    """What `_split_top` looks at: brackets, quotes, backslashes and `sep`."""
    return re.compile("[" + re.escape("()[]{}\"'\\" + sep) + "]")


_PARENS = re.compile(r"[()]")
_OPENING = re.compile(r"[(\[{\"']")  # what opens a bracket or a string


def _wrap(line: str) -> list[str]:
    """One over-long statement (or `def` line) broken after its last top-level `(`, one argument per line."""
    if len(line) <= WIDTH and "  # " not in line:  # an argument that fits (most of them): kept as it is
        return [line.rstrip()]
    pad = line[: len(line) - len(line.lstrip())]
    code, _, comment = line.strip().partition("  # ")
    lines = [f"{pad}# {comment}"] if comment else []
    comma = code[-1] if code.endswith((",", ":")) else ""  # an argument's `,` or a `def`'s `:`
    code = code[:-1] if comma else code
    if len(pad) + len(code) + len(comma) <= WIDTH or not code.endswith(")"):
        return lines + [pad + code + comma]
    open_at = code.rfind("(")  # the `(` matching the final `)` when no `)` comes between them
    if ")" in code[open_at + 1:-1]:
        depth, open_at = 0, -1
        for paren in _PARENS.finditer(code[::-1]):  # else the matching one, visiting parentheses only
            depth += 1 if paren.group() == ")" else -1
            if depth == 0:
                open_at = len(code) - 1 - paren.start()
                break
    args = [a.strip() for a in _split_top(code[open_at + 1:-1], ",") if a.strip()]
    if open_at <= 0 or len(args) < 2:
        return lines + [pad + code + comma]
    inner = pad + "    "
    body = []
    for a in args:  # an argument that fits (most of them) is kept as it is, without a call
        item = f"{inner}{a},"
        body += [item] if len(item) <= WIDTH and "  # " not in item else _wrap(item)
    return lines + [pad + code[: open_at + 1]] + body + [pad + ")" + comma]


def wrap_long_lines(code: str) -> str:
    """Break statements longer than WIDTH columns (outside docstrings) at their outermost call.
    Only long lines are visited; whether one lies in a docstring is the parity of the triple quotes
    before it."""
    lines = code.split("\n")
    long = [i for i, n in enumerate(map(len, lines)) if n > WIDTH]
    if not long:
        return code
    out, done, quotes = [], 0, 0
    for i in long:
        quotes += "\n".join(lines[done:i]).count('"""')
        line = lines[i]
        out += lines[done:i]
        if quotes % 2 == 0 and line.count('"""') == 0 and not line.lstrip().startswith("#"):
            out += _wrap(line)
        else:
            out.append(line)
        quotes += line.count('"""')
        done = i + 1
    return "\n".join(out + lines[done:])
