"""Mermaid flowchart rendering: paste the text into a ```mermaid block of GitHub markdown.

Loop blocks are subgraphs; buffers that cross them are thick links (`==>`). Ids come from names
(`input_q`, `stage_gather`, `output_o_packed`, `block_gather`), prefixed with the kernel name when
several kernels share one chart. A diff colours added items green, removed red, changed orange.
"""
from __future__ import annotations

import re

from .dot import BUFFER, DIFF
from .model import CHANGED, MARKS, KernelModel, Node


def mid(prefix: str, node_id: str) -> str:
    """A Mermaid-safe id: `stage:gather` -> `stage_gather`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", prefix + node_id.replace(":", "_", 1))


def text(*lines: str) -> str:
    body = "<br/>".join(line.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
                        for line in lines)
    return f'"{body}"'


def render(models: list[KernelModel]) -> str:
    single = len(models) == 1
    out = ["flowchart TB"]
    for status, (stroke, fill) in DIFF.items():
        out.append(f"  classDef {status} fill:{fill},stroke:{stroke},stroke-width:2px,color:{stroke}")
    out.append("  classDef input fill:#eaf0fa,stroke:#57606a")
    out.append("  classDef output fill:#e9f5ec,stroke:#57606a")
    links: list[tuple[int, str]] = []  # (link index, style)
    count = 0
    for m in models:
        prefix = "" if single else re.sub(r"\W", "_", m.name) + "__"
        ind = "  "
        out.append(f"  %% {m.title}" + (f", against {m.against}" if m.diffing else ""))
        if not single:
            out.append(f"  subgraph {prefix}kernel[{text(m.title)}]")
            ind = "    "
        for n in m.nodes:
            if n.kind == "input":
                out.append(ind + _node(prefix, n))
        for b in m.blocks:
            lines = [f"{_mark(b.status)}loop block {b.index}: {b.name}", b.domain] + ([b.cost] if b.cost else [])
            lines += [x for f in b.fits for x in f.lines]
            if b.status == CHANGED and b.was:
                lines.append(f"was: {b.was}")
            out.append(f"{ind}subgraph {mid(prefix, b.id)}[{text(*lines)}]")
            for n in m.block_nodes(b):
                out.append(ind + "  " + _node(prefix, n))
            out.append(f"{ind}end")
        for n in m.nodes:
            if n.kind == "output":
                out.append(ind + _node(prefix, n))
        for e in m.edges:
            lines = [e.tensor, e.type.shape, e.type.kind + (", buffer" if e.crossing else "")]
            if e.status == CHANGED and e.was:
                lines.append(f"was: {e.was}")
            lines[0] = _mark(e.status) + lines[0]
            arrow = "==>" if e.crossing else ("-.->" if e.status == "removed" else "-->")
            out.append(f"{ind}{mid(prefix, e.src)} {arrow}|{text(*lines)}| {mid(prefix, e.dst)}")
            if e.status:
                links.append((count, f"stroke:{DIFF[e.status][0]},color:{DIFF[e.status][0]}"))
            elif e.crossing:
                links.append((count, f"stroke:{BUFFER}"))
            count += 1
        if not single:
            out.append("  end")
        for n in m.nodes:
            cls = n.status or (n.kind if n.kind in ("input", "output") else None)
            if cls:
                out.append(f"  class {mid(prefix, n.id)} {cls}")
        for b in m.blocks:
            if b.status:
                stroke, fill = DIFF[b.status]
                out.append(f"  style {mid(prefix, b.id)} fill:{fill},stroke:{stroke},stroke-width:2px")
    for index, style in links:
        out.append(f"  linkStyle {index} {style}")
    return "\n".join(out) + "\n"


def _mark(status) -> str:
    return f"{MARKS[status]} " if status else ""


def _node(prefix: str, n: Node) -> str:
    node_id = mid(prefix, n.id)
    if n.kind == "stage":
        lines = [_mark(n.status) + n.name, n.call, n.where]
    elif n.kind == "placeholder":
        lines = ["- (removed loop block)", n.was or ""]
    else:
        lines = [_mark(n.status) + n.name, f"kernel {n.kind}"]
    if n.status == CHANGED and n.was:
        lines.append(f"was: {n.was}")
    if n.kind == "input":
        return f"{node_id}[/{text(*lines)}/]"
    if n.kind == "output":
        return f"{node_id}[\\{text(*lines)}\\]"
    return f"{node_id}[{text(*lines)}]"
