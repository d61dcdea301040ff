"""Plain-text rendering of stage graphs and loop blocks: readable without any tool, within 100 columns.

One section per kernel: its inputs, then each loop block (a `|` gutter marks its extent) with its
iteration domain, speed-of-light figures and stages, then its outputs. Arrows: `<-` a stage reads a
kernel input or a tensor of its own block, `<=` it reads a buffer written by an earlier block, `->`
a tensor that stays inside the block, `=>` a buffer that crosses a loop-block boundary. In a diff
every line starts with `+` (added), `-` (removed), `~` (changed, with the old value) or a space.
"""
from __future__ import annotations

import textwrap
from typing import Optional

from .model import ADDED, CHANGED, MARKS, REMOVED, Block, KernelModel, Node, TypeInfo

WIDTH = 100
LEGEND = ("legend: <- reads   <= reads a buffer   -> block-local tensor   => buffer crossing loop blocks",
          "        + added   - removed   ~ changed (was: the old value)")


class _Lines:
    def __init__(self, diffing: bool):
        self.diffing = diffing
        self.lines: list[str] = []

    def add(self, text: str, status: Optional[str] = None, indent: str = "", hang: int = 4,
            was: Optional[str] = None, right: str = "") -> None:
        prefix = (MARKS[status] + " " if self.diffing else "") + indent
        if right:
            text += " " * max(2, WIDTH - len(prefix) - len(text) - len(right)) + right
        cont = prefix + " " * hang
        lines = textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=cont,
                              break_long_words=True, break_on_hyphens=False) or [prefix.rstrip()]
        if was:  # the old value goes on the same line when it fits, else on a line of its own
            was = f"(was: {was})"
            if len(lines[-1]) + 2 + len(was) <= WIDTH:
                lines[-1] += "  " + was
            else:
                lines += textwrap.wrap(was, WIDTH, initial_indent=cont, subsequent_indent=cont + "  ",
                                       break_long_words=True, break_on_hyphens=False)
        self.lines += lines

    def blank(self) -> None:
        self.lines.append("")


def render(models: list[KernelModel]) -> str:
    diffing = any(m.diffing for m in models)
    out = _Lines(diffing)
    for line in LEGEND[:1 + diffing]:
        out.lines.append(line)
    for m in models:
        out.blank()
        _kernel(out, m)
    return "\n".join(out.lines) + "\n"


def _kernel(out: _Lines, m: KernelModel) -> None:
    stages = [n for n in m.nodes if n.kind == "stage" and n.status != REMOVED]
    blocks = [b for b in m.blocks if b.status != REMOVED]
    out.add(f"{m.title}: {len(stages)} stages in {len(blocks)} loop blocks")
    if m.diffing:
        counts = m.summary()
        changes = "; ".join(f"{what} " + " ".join(f"{MARKS[s]}{n}" for s, n in c.items())
                            for what, c in counts.items() if c) or "no differences"
        out.add(f"against {m.against}: {changes}", indent="  ")

    inputs = [n for n in m.nodes if n.kind == "input"]
    if inputs:
        out.add("inputs")
        width = max(len(n.name) for n in inputs)
        for n in inputs:
            assert n.type is not None  # inputs carry their type
            readers = _readers(m, n.id, n.name, n.status)
            text = f"{n.name:<{width}}  {n.type.describe()}" + (f"  -> {readers}" if readers else "  (unused)")
            out.add(text, n.status, "  ", hang=width + 4, was=n.was)

    for b in m.blocks:
        _block(out, m, b)

    outputs = [e for e in m.edges if e.dst.startswith("output:")]
    if outputs:
        out.add("outputs")
        width = max(len(e.port) for e in outputs)
        for e in outputs:
            arrow = "<=" if e.crossing else "<-"
            out.add(f"{e.port:<{width}}  {arrow} {e.ref} {e.type.describe()}", e.status, "  ", hang=width + 4,
                    was=e.was)


def _block(out: _Lines, m: KernelModel, b: Block) -> None:
    out.add(f"loop block {b.index} `{b.name}`: {b.domain}", b.status, hang=4, was=b.was)
    gutter = "| "
    if b.cost:
        out.add(b.cost, b.status, gutter)
    for line in (line for fit in b.fits for line in fit.lines):
        out.add(line, b.status, gutter)
    for n in m.block_nodes(b):
        if n.kind == "placeholder":
            out.add(f"({n.was})", n.status, gutter)
            continue
        _stage(out, m, b, n, gutter)


def _stage(out: _Lines, m: KernelModel, b: Block, n: Node, gutter: str) -> None:
    out.add(f"{n.name} = {n.call}", n.status, gutter, hang=4, was=n.was, right=n.where)
    ins = [e for e in m.edges if e.dst == n.id]
    width = max([len(e.port) for e in ins] + [len(p) for p, _ in n.outs] + [1])
    for e in ins:
        arrow = "<=" if e.crossing else "<-"
        out.add(f"{arrow} {e.port:<{width}}  {e.ref} {e.type.describe()}", e.status, gutter + "  ",
                hang=width + 5, was=e.was)
    for port, t in n.outs:
        ref = n.out_ref(port)
        edges = [e for e in m.edges if e.src == n.id and e.ref == ref]
        status, was = _tensor_status(n, edges, t)
        live = [e for e in edges if e.status != REMOVED or n.status == REMOVED]
        buffer = ref in b.writes or any(e.crossing for e in live)
        readers = _readers(m, n.id, ref, n.status)
        text = f"{'=>' if buffer else '->'} {port:<{width}}  {ref} {t.describe()}"
        out.add(text + (f"  to {readers}" if readers else "  (unused)"), status, gutter + "  ", hang=width + 5,
                was=was)


def _readers(m: KernelModel, src: str, ref: str, src_status: Optional[str]) -> str:
    """Consumers of `ref`; removed edges only count when the producer itself is removed."""
    names = []
    for e in m.edges:
        if e.src == src and e.ref == ref and (e.status != REMOVED or src_status == REMOVED):
            kind, name = e.dst.split(":", 1)
            names.append(f"{name} (output)" if kind == "output" else name)
    return ", ".join(dict.fromkeys(names))


def _tensor_status(n: Node, edges: list, t: TypeInfo) -> tuple[Optional[str], Optional[str]]:
    """A stage output line is changed when its type changed, added/removed with its stage or edges."""
    if n.status in (ADDED, REMOVED):
        return n.status, None
    changed = [e for e in edges if e.status == CHANGED and e.was]
    if changed:
        return CHANGED, changed[0].was
    if edges and all(e.status == ADDED for e in edges):
        return ADDED, None
    if edges and all(e.status == REMOVED for e in edges):
        return REMOVED, None
    return None, None
