"""The kernel golden: every stage's torch golden run in the schedule's topological order."""
from __future__ import annotations

from typing import Mapping

from .graph import TypedGraph
from .stagefault import in_stage


def stage_types(stage) -> dict:
    return {**stage.in_types, **stage.out_types}


def run_stages(tg: TypedGraph, stages, values: dict) -> dict:
    """Run `stages` on `values` (tensor reference -> tensor), adding each output as `stage.port`."""
    for st in stages:
        ins = {port: values[ref] for port, ref in st.inputs.items()}
        with in_stage(st.id, st.op.name, st.loc, "running its golden"):
            outs = st.op.golden(ins, st.params, tg.dims, stage_types(st))
        for port, tensor in outs.items():
            values[st.ref(port)] = tensor
    return values


def run_golden(tg: TypedGraph, inputs: Mapping, intermediates: bool = False) -> dict:
    """Kernel outputs by name; with `intermediates`, also every stage output keyed `stage.port`."""
    values = run_stages(tg, tg.stages.values(), dict(inputs))
    result = {name: values[ref] for name, ref in tg.outputs.items()}
    if intermediates:
        result.update({ref: v for ref, v in values.items() if ref not in tg.inputs})
    return result
