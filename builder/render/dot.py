"""Graphviz DOT rendering: one cluster per loop block, every edge labelled with its tensor and type.

Node ids are the graph's own names (`input:q`, `stage:gather`, `output:o_packed`; clusters
`cluster_block:NAME`), prefixed with `KERNEL/` when several kernels share one drawing, so a DOT file
kept in review changes only where the YAML did. Buffers that cross loop blocks are bold blue edges;
a diff colours added items green, removed red (dashed) and changed orange.
"""
from __future__ import annotations

from .model import ADDED, CHANGED, REMOVED, Edge, KernelModel, Node

FONT = "Helvetica"
BUFFER = "#1f5fbf"
DIFF = {ADDED: ("#1a7f37", "#dafbe1"), REMOVED: ("#cf222e", "#ffebe9"), CHANGED: ("#c26100", "#fff1d6")}
FILL = {"input": "#eaf0fa", "output": "#e9f5ec", "stage": "#ffffff", "placeholder": "#ffffff"}
SHAPE = {"input": "invhouse", "output": "house", "stage": "box", "placeholder": "plaintext"}


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def label(*lines: str) -> str:
    """A centred multi-line label; each line is escaped on its own."""
    return quote("\n".join(lines)).replace("\n", "\\n")


def attrs(**kv) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in kv.items() if v is not None) + "]"


def legend(models: list[KernelModel]) -> str:
    text = "bold blue edges: buffers that cross loop-block boundaries"
    if any(m.diffing for m in models):
        text += "; green: added, red: removed, orange: changed"
    return text


def render(models: list[KernelModel]) -> str:
    single = len(models) == 1
    name = models[0].name if single else "kernels"
    out = ["// kernel-builder stage graph: `build --graph --format dot`; ids derive from YAML names",
           f"digraph {quote(name)} {{"]
    title = [models[0].title] + ([f"against {models[0].against}"] if models[0].diffing else []) if single else []
    out.append("  " + "graph " + attrs(label=label(*title, legend(models)), labelloc="t", fontname=quote(FONT),
                                       fontsize=12, rankdir="TB", newrank="true", nodesep="0.35",
                                       ranksep="0.5") + ";")
    out.append(f"  node [fontname={quote(FONT)}, fontsize=10];")
    out.append(f"  edge [fontname={quote(FONT)}, fontsize=9];")
    for m in models:
        if single:
            out += _kernel(m, "", "  ")
        else:
            prefix = f"{m.name}/"
            out.append(f"  subgraph {quote('cluster_kernel:' + m.name)} {{")
            head = [m.title] + ([f"against {m.against}"] if m.diffing else [])
            out.append("    graph " + attrs(label=label(*head), style='"rounded,bold"', color='"#57606a"',
                                            fontsize=12) + ";")
            out += _kernel(m, prefix, "    ")
            out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _kernel(m: KernelModel, prefix: str, ind: str) -> list[str]:
    out: list[str] = []
    nid = lambda node_id: quote(prefix + node_id)  # noqa: E731
    for n in m.nodes:
        if n.kind == "input":
            out.append(f"{ind}{nid(n.id)} {_node_attrs(n)};")
    for b in m.blocks:
        out.append(f"{ind}subgraph {quote('cluster_' + prefix + b.id)} {{")
        lines = [f"loop block {b.index}: {b.name}", b.domain] + ([b.cost] if b.cost else [])
        lines += [x for f in b.fits for x in f.lines]
        if b.status == CHANGED and b.was:
            lines.append(f"was: {b.was}")
        style, color, pen = '"rounded"', '"#8c959f"', None
        if b.status:
            color, pen = quote(DIFF[b.status][0]), 2
            style = '"rounded,dashed"' if b.status == REMOVED else style
        out.append(f"{ind}  graph " + attrs(label=label(*lines), labeljust="l", fontsize=10, style=style,
                                            color=color, fontcolor=color if b.status else None,
                                            penwidth=pen) + ";")
        for n in m.block_nodes(b):
            out.append(f"{ind}  {nid(n.id)} {_node_attrs(n)};")
        out.append(f"{ind}}}")
    outputs = [n for n in m.nodes if n.kind == "output"]
    for n in outputs:
        out.append(f"{ind}{nid(n.id)} {_node_attrs(n)};")
    if outputs:
        out.append(f"{ind}{{ rank=sink; {' '.join(nid(n.id) for n in outputs)} }}")
    for e in m.edges:
        out.append(f"{ind}{nid(e.src)} -> {nid(e.dst)} {_edge_attrs(e)};")
    return out


def _node_attrs(n: Node) -> str:
    if n.kind == "stage":
        lines = [n.name, n.call, n.where]
    elif n.kind == "placeholder":
        lines = ["(removed loop block)", n.was or ""]
    else:
        lines = [n.name, f"kernel {n.kind}"]
    if n.status == CHANGED and n.was:
        lines.append(f"was: {n.was}")
    style = "rounded,filled" if n.kind == "stage" else "filled"
    color, fill = '"#57606a"', quote(FILL[n.kind])
    if n.status:
        color, fill = quote(DIFF[n.status][0]), quote(DIFF[n.status][1])
        style += ",dashed" if n.status == REMOVED else ""
    tooltip = quote(n.type.describe()) if n.type else None
    return attrs(label=label(*lines), shape=SHAPE[n.kind], style=quote(style), color=color, fillcolor=fill,
                 penwidth=2 if n.status else None, tooltip=tooltip)


def _edge_attrs(e: Edge) -> str:
    lines = [e.tensor, e.type.shape, e.type.kind + (", buffer" if e.crossing else "")]
    if e.status == CHANGED and e.was:
        lines.append(f"was: {e.was}")
    color = quote(DIFF[e.status][0]) if e.status else (quote(BUFFER) if e.crossing else None)
    style = "dashed" if e.status == REMOVED else ("bold" if e.crossing else None)
    pen = 2.5 if e.crossing else (1.5 if e.status else None)
    return attrs(label=label(*lines), color=color, fontcolor=color if e.status else None, style=style,
                 penwidth=pen)
