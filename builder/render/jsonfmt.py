"""JSON rendering (`--format json`): nodes, edges and loop blocks of each kernel, for other tools.

Schema `kernel-builder.graph/1`:
  {"schema", "kernels": [{"name", "file", "line", "sizes", "dims": {dim: int},
    "nodes":  [{"id", "kind": input|stage|output|placeholder, "name", ...kind-specific fields}],
    "edges":  [{"id", "from", "to", "tensor", "port", "dims", "shape", "dtype", "layout", "crossing"}],
    "blocks": [{"id", "index", "name", "stages", "domain", "axes", "reads", "writes", "scratch",
                "bytes", "flops", "targets"?}]}]}
"targets" (with `--target` only) lists, per GPU, what the block compiled to: registers, spills,
shared memory, warps, programs, tensor-core dots, floor and modelled time (no compile time: the
rendering stays deterministic). A diff adds "against" to each kernel and "status" (added | removed |
changed | null) plus "was" (the old value, changed items only) to every node, edge and block. Key
order is fixed.
"""
from __future__ import annotations

import json
from typing import Optional

from .model import Block, Edge, KernelModel, Node, TypeInfo

SCHEMA = "kernel-builder.graph/1"


def render(models: list[KernelModel]) -> str:
    doc = {"schema": SCHEMA, "kernels": [kernel(m) for m in models]}
    return json.dumps(doc, indent=2) + "\n"


def kernel(m: KernelModel) -> dict:
    out = {"name": m.name, "file": m.file, "line": m.line, "sizes": m.sizes, "dims": m.dims}
    if m.diffing:
        out["against"] = m.against
    out["nodes"] = [_node(n, m.diffing) for n in m.nodes]
    out["edges"] = [_edge(e, m.diffing) for e in m.edges]
    out["blocks"] = [_block(b, m.diffing) for b in m.blocks]
    return out


def _type(t: Optional[TypeInfo]) -> dict:
    if t is None:
        return {}
    return {"dims": list(t.dims), "shape": list(t.values), "dtype": t.dtype, "layout": t.layout}


def _status(d: dict, item, diffing: bool) -> dict:
    if diffing:
        d["status"] = item.status
        if item.was is not None:
            d["was"] = item.was
    return d


def _node(n: Node, diffing: bool) -> dict:
    d: dict = {"id": n.id, "kind": n.kind, "name": n.name}
    if n.kind == "stage":
        d.update(op=n.op, params=n.params, file=n.file, line=n.line, block=n.block,
                 outputs={port: _type(t) for port, t in n.outs})
    elif n.kind == "placeholder":
        d.update(block=n.block)
    else:
        d.update(_type(n.type))
        if n.ref is not None:
            d["tensor"] = n.ref
    return _status(d, n, diffing)


def _edge(e: Edge, diffing: bool) -> dict:
    d = {"id": e.id, "from": e.src, "to": e.dst, "tensor": e.ref, "port": e.port, **_type(e.type),
         "crossing": e.crossing}
    return _status(d, e, diffing)


def _block(b: Block, diffing: bool) -> dict:
    d = {"id": b.id, "index": b.index, "name": b.name, "stages": list(b.stages), "domain": b.domain,
         "axes": [dict(a) for a in b.axes], "reads": list(b.reads), "writes": list(b.writes),
         "scratch": list(b.scratch), "bytes": b.bytes, "flops": b.flops}
    if b.fits:
        d["targets"] = [{"target": f.target, **f.data} for f in b.fits]
    return _status(d, b, diffing)
