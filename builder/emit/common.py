"""What every backend's generated file shares: header, docstring, constants, names, line wrapping."""
from __future__ import annotations

import keyword
import re
import textwrap
from dataclasses import dataclass, field

from ..graph import TypedGraph
from ..schedule import Schedule

GENERATOR = "build"
WIDTH = 100


def header(tg: TypedGraph, backend: str) -> str:
    loc = tg.spec.loc
    return (f"# @generated from {loc.file}:{loc.line} by `{GENERATOR}` — do not edit.\n"
            f"# kernel {tg.spec.name}, backend {backend}, sizes {tg.dims.size_set}")


def var(ref: str) -> str:
    """Python identifier of a tensor reference: `attn.o` -> `attn_o`."""
    name = re.sub(r"\W", "_", ref.replace(".", "_"))
    return name + "_" if keyword.iskeyword(name) else name


def _item(head: str, text: str) -> list[str]:
    """A docstring list item: `head` then `text`, continuation lines indented under it."""
    return textwrap.wrap(f"{head} {text}", WIDTH, initial_indent="    ", subsequent_indent="        ")


def docstring(tg: TypedGraph, sched: Schedule, constants: list[tuple[str, str, object]], backend_note: str) -> str:
    """Module docstring listing every parameter, output, derived constant and loop block."""
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
    for b in sched.blocks:
        ops = ", ".join(f"{s.id} ({s.op.name}, {s.loc.file}:{s.loc.line})" for s in b.stages)
        lines += _item(f"{b.index}. {ops}:", b.describe_domain())
    text = "\n".join(line.rstrip() for line in lines).replace('"""', "'''")
    return f'"""{text}\n"""'


def call(head: str, args: list[str], indent: int = 0, tail: str = "") -> list[str]:
    """`head(arg, ...)tail` on one line when it fits in WIDTH columns, else one argument per line."""
    pad = " " * indent
    one = f"{pad}{head}({', '.join(args)}){tail}"
    if len(one) <= WIDTH:
        return [one]
    return [f"{pad}{head}("] + [f"{pad}    {a}," for a in args] + [f"{pad}){tail}"]


def tuple_code(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def dim_code(text) -> str:
    """Code for a dim expression: a bare name or number stays, anything else is parenthesized."""
    text = str(text)
    return text if text.isidentifier() or text.isdigit() else f"({text})"


@dataclass
class Constants:
    """Module-level constants a generated file defines, in first-use order."""

    items: dict[str, tuple[object, str]] = field(default_factory=dict)  # name -> (value, comment)

    def add(self, name: str, value: object, comment: str = "") -> str:
        if name in self.items and self.items[name][0] != value:
            raise ValueError(f"constant {name} defined twice with different values")
        self.items.setdefault(name, (value, comment))
        return name


class BodyCtx:
    """What any backend offers a stage's tile body: names of its tensors, dims, tiles, constants.

    Backends subclass it with their own pointer/view naming and casting helpers."""

    def __init__(self, stage, block, tg, consts: Constants):
        self.stage, self.block, self.tg = stage, block, tg
        self.p, self.dims = stage.params, tg.dims
        self._consts = consts

    def type(self, port: str):
        """Type of input `port`, else of output `port`."""
        return self.stage.in_types.get(port) or self.stage.out_types[port]

    def dim(self, port: str, axis: int) -> str:
        return dim_code(self.type(port).shape[axis].text)

    def expr(self, text) -> str:
        return dim_code(self.dims.dim(text).text)

    def tile(self, var_name: str) -> str:
        """Constant holding the tile size of the block's domain axis `var_name`."""
        return tile_name(self.block, next(a for a in self.block.domain if a.var == var_name))

    def const(self, suffix: str, value, comment: str = "") -> str:
        return self._consts.add(f"{self.stage.id.upper()}_{suffix}", value, comment)


def tile_name(block, axis) -> str:
    return f"{block.stages[0].id.upper()}_{axis.var.upper()}_TILE"


def add_tile_constants(block, consts: Constants, per: str) -> None:
    """A named constant for each tiled axis of the block's domain (`per`: program, task, ...)."""
    for axis in block.domain:
        if axis.tile != 1:
            consts.add(tile_name(block, axis), axis.tile, f"{axis.extent.text} tile per {per}")


def used_names(code: str) -> set[str]:
    return set(re.findall(r"\b[A-Za-z_]\w*\b", code))


def dim_constants(tg: TypedGraph, code: str) -> list[tuple[str, int, str]]:
    """(name, value, expression) for each kernel dim `code` mentions, free dims first, then derived."""
    used = used_names(code)
    free = [(n, tg.dims[n], "") for n in tg.spec.sizes[tg.dims.size_set] if n in used]
    derived = [(n, tg.dims[n], str(tg.spec.dims[n])) for n in tg.spec.dims if n in used]
    return free + derived


def indent(lines: list[str], n: int) -> list[str]:
    pad = " " * n
    return [pad + line if line else line for line in lines]


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` characters outside brackets and strings."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
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


def _wrap(line: str) -> list[str]:
    """One over-long statement broken after its last top-level call's `(`, one argument per line."""
    pad = line[: len(line) - len(line.lstrip())]
    code, _, comment = line.strip().partition("  # ")
    lines = [f"{pad}# {comment}"] if comment else []
    comma = "," if code.endswith(",") else ""
    code = code[:-1] if comma else code
    if len(pad) + len(code) + len(comma) <= WIDTH or not code.endswith(")"):
        return lines + [pad + code + comma]
    depth, open_at = 0, -1
    for i in range(len(code) - 1, -1, -1):  # find the `(` matching the final `)`
        depth += {")": 1, "(": -1}.get(code[i], 0)
        if depth == 0:
            open_at = i
            break
    args = [a.strip() for a in _split_top(code[open_at + 1:-1], ",") if a.strip()]
    if open_at <= 0 or len(args) < 2:
        return lines + [pad + code + comma]
    inner = pad + "    "
    body = [line for a in args for line in _wrap(f"{inner}{a},")]
    return lines + [pad + code[: open_at + 1]] + body + [pad + ")" + comma]


def wrap_long_lines(code: str) -> str:
    """Break statements longer than WIDTH columns (outside docstrings) at their outermost call."""
    out, in_doc = [], False
    for line in code.split("\n"):
        quotes = line.count('"""')
        if not in_doc and len(line) > WIDTH and quotes == 0 and not line.lstrip().startswith("#"):
            out += _wrap(line)
        else:
            out.append(line)
        in_doc ^= quotes % 2 == 1
    return "\n".join(out)
